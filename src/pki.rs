//! Certificates for an estate of nodes (`wsus-edge cert`): a private CA, a server certificate
//! for each node that serves HTTPS and HTTP/3, a client certificate for each branch that
//! authenticates to its upstream with mutual TLS.
//!
//! Made as TLS peers (rustls and webpki here, SChannel on Windows clients) accept them: the CA
//! is a CA (`CA:TRUE`, keyCertSign), a leaf is not (`CA:FALSE`), names every host and address it
//! is reached by as a subjectAltName, and says what it is for (serverAuth or clientAuth). Keys
//! are ECDSA P-256, which every TLS 1.2 and 1.3 stack of the last decade accepts. Private keys
//! are written with mode 0600; no file is ever overwritten.
//! Calls `error`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Kind, Result};

/// The files one certificate was written to.
#[derive(Debug, Clone)]
pub struct Made {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A leaf's purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// A node's HTTPS / HTTP/3 listener (`tls.cert`).
    Node,
    /// A branch towards its upstream (`upstream.client_cert`).
    Client,
}

fn usage(message: impl Into<String>) -> Error {
    Error::internal(Kind::Config, message)
}

fn rcgen_error(what: &str, e: rcgen::Error) -> Error {
    Error::internal(Kind::Config, format!("{what}: {e}"))
}

/// `not_before` a minute ago (clocks drift), `not_after` `days` from now.
fn validity(params: &mut CertificateParams, days: u32) -> Result<()> {
    if days == 0 || days > 36_500 {
        return Err(usage("--days: from 1 to 36500"));
    }
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
    Ok(())
}

/// Write `text` to a new file (never over an existing one) with `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                usage(format!(
                    "{} exists: remove it first (a certificate is never overwritten)",
                    path.display()
                ))
            } else {
                Error::io(format!("writing {}", path.display()), e)
            }
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn prepare(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))
}

/// A new CA: `out/ca.pem` and `out/ca-key.pem`.
pub fn make_ca(out: &Path, name: &str, days: u32) -> Result<Made> {
    prepare(out)?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| rcgen_error("CA parameters", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "wsus-edge");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days)?;
    let key = KeyPair::generate().map_err(|e| rcgen_error("generating the CA key", e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| rcgen_error("signing the CA", e))?;
    let made = Made {
        cert: out.join("ca.pem"),
        key: out.join("ca-key.pem"),
    };
    write_new(&made.key, &key.serialize_pem(), 0o600)?;
    write_new(&made.cert, &cert.pem(), 0o644)?;
    Ok(made)
}

/// A leaf signed by the CA in `ca_dir` (`ca.pem`, `ca-key.pem`): `out/NAME.pem` and
/// `out/NAME-key.pem`. A node's certificate names `name` and every `sans` (host names or IP
/// addresses); a client's names `name`.
pub fn make_leaf(
    kind: Leaf,
    ca_dir: &Path,
    out: &Path,
    name: &str,
    sans: &[String],
    days: u32,
) -> Result<Made> {
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
        return Err(usage(format!(
            "--name {name:?}: a host name (or a branch's name), no '/'"
        )));
    }
    let read = |file: &str| {
        let path = ca_dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| {
            usage(format!(
                "--ca {}: cannot read {file} ({e}); make a CA with: wsus-edge cert ca --out {}",
                ca_dir.display(),
                ca_dir.display()
            ))
        })
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?)
        .map_err(|e| rcgen_error("reading ca-key.pem", e))?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key)
        .map_err(|e| rcgen_error("reading ca.pem", e))?;
    let mut names = vec![name.to_owned()];
    if kind == Leaf::Node {
        names.extend(sans.iter().filter(|s| *s != name).cloned());
    }
    let mut params =
        CertificateParams::new(names).map_err(|e| rcgen_error("certificate names", e))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "wsus-edge");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match kind {
        Leaf::Node => ExtendedKeyUsagePurpose::ServerAuth,
        Leaf::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days)?;
    prepare(out)?;
    let key = KeyPair::generate().map_err(|e| rcgen_error("generating a key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| rcgen_error("signing the certificate", e))?;
    let made = Made {
        cert: out.join(format!("{name}.pem")),
        key: out.join(format!("{name}-key.pem")),
    };
    write_new(&made.key, &key.serialize_pem(), 0o600)?;
    write_new(&made.cert, &cert.pem(), 0o644)?;
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Use, end_entity_problems, load_certs};

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    #[test]
    fn a_ca_signs_leaves_that_pass_the_checks() {
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca(dir.path(), "test CA", 30).unwrap();
        let node = make_leaf(
            Leaf::Node,
            dir.path(),
            dir.path(),
            "central.example.org",
            &["10.0.0.5".into()],
            30,
        )
        .unwrap();
        let client = make_leaf(Leaf::Client, dir.path(), dir.path(), "branch-a", &[], 30).unwrap();
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&p.metadata().unwrap().permissions()) & 0o777
        };
        assert_eq!(mode(&node.key), 0o600);
        assert_eq!(mode(&ca.key), 0o600);
        let leaf = &load_certs(&node.cert).unwrap()[0];
        assert!(end_entity_problems(leaf, Use::Server, now()).is_empty());
        // A node certificate is not a client certificate, and the CA is no leaf.
        assert_eq!(end_entity_problems(leaf, Use::Client, now()).len(), 1);
        let client = &load_certs(&client.cert).unwrap()[0];
        assert!(end_entity_problems(client, Use::Client, now()).is_empty());
        let ca = &load_certs(&ca.cert).unwrap()[0];
        let problems = end_entity_problems(ca, Use::Server, now());
        assert!(problems[0].contains("CA certificate"), "{problems:?}");
        // Nothing is overwritten.
        let again = make_ca(dir.path(), "test CA", 30).unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        // In a year and a day, the leaf has expired.
        let later = end_entity_problems(leaf, Use::Server, now() + 366 * 86_400);
        assert!(later[0].starts_with("expired"), "{later:?}");
    }

    #[test]
    fn a_missing_ca_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = make_leaf(Leaf::Node, dir.path(), dir.path(), "n", &[], 30).unwrap_err();
        assert!(e.to_string().contains("wsus-edge cert ca"), "{e}");
    }
}
