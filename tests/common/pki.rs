//! Certificates made at run time for the TLS tests (rcgen), and a root node serving HTTPS (and
//! with it HTTP/3) from them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::{node_config, start};

pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: PathBuf,
}

pub fn ca(dir: &Path, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, issuer.pem()).unwrap();
    Ca { issuer, pem }
}

/// A leaf certificate for 127.0.0.1, 127.0.0.2 and localhost signed by `ca`; returns
/// (cert.pem, key.pem).
pub fn leaf(dir: &Path, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    leaf_with(dir, ca, name, |_| {})
}

/// A leaf certificate that expired yesterday.
pub fn expired_leaf(dir: &Path, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    leaf_with(dir, ca, name, |params| {
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(30 * 86_400)).into();
        params.not_after = (now - std::time::Duration::from_secs(86_400)).into();
    })
}

fn leaf_with(
    dir: &Path,
    ca: &Ca,
    name: &str,
    adjust: impl FnOnce(&mut CertificateParams),
) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "127.0.0.2".to_owned(),
        "localhost".to_owned(),
    ])
    .unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    adjust(&mut params);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// A root node holding `bytes`, with an HTTPS listener (and mutual TLS with `client_ca`).
pub async fn tls_root(
    dir: &Path,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    bytes: &[u8],
) -> wsus_edge::node::Running {
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("payload.exe"), bytes).unwrap();
    wsus_edge::content::import_dir(&dir.join("root"), &source).unwrap();
    let mut extra = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.to_string_lossy(),
        key.to_string_lossy()
    );
    if let Some(ca) = client_ca {
        extra.push_str(&format!("client_ca = {:?}\n", ca.to_string_lossy()));
    }
    let mut config = node_config(&dir.join("root"), None, "", &extra);
    config.listen.https = Some("127.0.0.1:0".parse().unwrap());
    start(&config).await
}

pub fn https_url(node: &wsus_edge::node::Running) -> String {
    format!("https://{}", node.listening().https.unwrap())
}
