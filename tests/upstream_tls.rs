//! The upstream link over TLS: a branch fills from a root's HTTPS listener with HTTP/2 (ALPN),
//! verifies the root's certificate against `[upstream] ca`, and presents a client certificate
//! when the root requires one. Certificates are made at run time.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::pki::{ca, https_url, leaf, tls_root};
use common::*;

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

    // TCP only: this test is about HTTP/2 (the HTTP/3 side has tests/upstream_quic.rs).
    let upstream = format!(
        "ca = {:?}\ntimeout = \"5s\"\ntransport = \"tcp\"",
        trusted.pem.to_string_lossy()
    );
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
