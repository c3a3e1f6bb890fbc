//! The upstream link over TLS: a branch fills from a root's HTTPS listener with HTTP/2 (ALPN),
//! verifies the root's certificate against `[upstream] ca`, and presents a client certificate
//! when the root requires one. Certificates are made at run time.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, issuer.pem()).unwrap();
    Ca { issuer, pem }
}

/// A leaf certificate for 127.0.0.1 signed by `ca`; returns (cert.pem, key.pem).
fn leaf(dir: &Path, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
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
async fn tls_root(
    dir: &Path,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    bytes: &[u8],
) -> wsus_edge::server::Running {
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

fn https_url(node: &wsus_edge::server::Running) -> String {
    format!("https://{}", node.listening().https.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_fills_over_https_with_http2_and_verifies_the_upstream() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let trusted = ca(dir.path(), "trusted-ca");
    let stranger = ca(dir.path(), "stranger-ca");
    let (cert, key) = leaf(dir.path(), &trusted, "root");
    let bytes = payload(9 << 20, 41);
    let root = tls_root(dir.path(), &cert, &key, None, &bytes).await;
    let path = content_path(&bytes, "exe");

    let upstream = format!("ca = {:?}\ntimeout = \"5s\"", trusted.pem.to_string_lossy());
    let node = branch_with(&dir.path().join("branch"), &https_url(&root), &upstream, "").await;
    let got = get(&url(&node, &path), &[]).await;
    assert_eq!((got.status.as_u16(), got.broken), (200, false));
    assert!(got.body == bytes);
    let h2 = metric(
        &node,
        "wsus_edge_upstream_requests_total",
        "transport=\"http2\"",
    )
    .await;
    assert!(h2 >= 3.0, "HTTP/2 over TLS was used for every slice ({h2})");

    // A branch that trusts another CA refuses the upstream: no bytes, a gateway error.
    let upstream = format!(
        "ca = {:?}\ntimeout = \"5s\"",
        stranger.pem.to_string_lossy()
    );
    let wary = branch_with(&dir.path().join("wary"), &https_url(&root), &upstream, "").await;
    let got = get(&url(&wary, &path), &[]).await;
    assert!(got.status.is_server_error(), "status {}", got.status);
    assert_eq!(
        metric(&wary, "wsus_edge_upstream_bytes_total", "").await,
        0.0
    );
    for n in [node, wary, root] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_the_branch_certificate() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let authority = ca(dir.path(), "estate-ca");
    let (cert, key) = leaf(dir.path(), &authority, "root");
    let (branch_cert, branch_key) = leaf(dir.path(), &authority, "branch-a");
    let bytes = payload(1 << 20, 42);
    let root = tls_root(dir.path(), &cert, &key, Some(&authority.pem), &bytes).await;
    let path = content_path(&bytes, "exe");

    let anonymous = format!(
        "ca = {:?}\ntimeout = \"5s\"",
        authority.pem.to_string_lossy()
    );
    let node = branch_with(&dir.path().join("anon"), &https_url(&root), &anonymous, "").await;
    let got = get(&url(&node, &path), &[]).await;
    assert!(
        got.status.is_server_error(),
        "without a client certificate: {}",
        got.status
    );

    let identified = format!(
        "{anonymous}\nclient_cert = {:?}\nclient_key = {:?}",
        branch_cert.to_string_lossy(),
        branch_key.to_string_lossy()
    );
    let node2 = branch_with(
        &dir.path().join("named"),
        &https_url(&root),
        &identified,
        "",
    )
    .await;
    let got = get(&url(&node2, &path), &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
    for n in [node, node2, root] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}
