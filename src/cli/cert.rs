//! `cert`: the certificates of an estate (a CA, node and branch certificates), made by the
//! crate's `pki`, and where each goes in a configuration.
//! Calls `super` (`Exit`, `report`, `CertCommand`) and the crate's `pki`; no sibling.

use super::{CertCommand, Exit, report};

/// `wsus-edge cert …`.
pub(super) fn cert(command: CertCommand) -> Exit {
    use crate::pki::{Leaf, make_ca, make_leaf};
    let made = match &command {
        CertCommand::Ca { out, name, days } => make_ca(out, name, *days),
        CertCommand::Node {
            ca,
            name,
            san,
            days,
            out,
        } => make_leaf(Leaf::Node, ca, out, name, san, *days),
        CertCommand::Client {
            ca,
            name,
            days,
            out,
        } => make_leaf(Leaf::Client, ca, out, name, &[], *days),
    };
    let made = match made {
        Ok(made) => made,
        Err(e) => return report(Err(e)),
    };
    println!("certificate  {}", made.cert.display());
    println!("private key  {} (mode 0600)", made.key.display());
    match command {
        CertCommand::Ca { .. } => println!(
            "next: wsus-edge cert node --ca DIR --name HOST --out DIR for each node with HTTPS; \
             give ca.pem to the branches (upstream.ca) and to Windows clients (Trusted Root)"
        ),
        CertCommand::Node { .. } => println!(
            "use: [tls] cert = \"{}\", key = \"{}\" (readable by the service's user only)",
            made.cert.display(),
            made.key.display()
        ),
        CertCommand::Client { .. } => println!(
            "use on the branch: [upstream] client_cert = \"{}\", client_key = \"{}\"; the \
             upstream trusts it with tls.client_ca = its ca.pem",
            made.cert.display(),
            made.key.display()
        ),
    }
    Exit::Ok
}
