//! The upstream link over HTTP/3: a root with TLS also serves QUIC on its HTTPS port; a branch
//! fills from it over QUIC only, or in `auto` mode upgrades when the root advertises HTTP/3 and
//! falls back to TCP when UDP is blocked. The WAN between them is the project's emulator
//! (`testkit::wan`), which counts what crosses it and can block UDP or drop everything.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::pki::{Ca, ca, expired_leaf, leaf, tls_root};
use common::*;
use wsus_edge::node::Running;
use wsus_edge::testkit::wan::{Link, Relay};

const MIB: usize = 1 << 20;

/// A root with TLS (and so HTTP/3) holding one object, certified by `authority`.
struct Fixture {
    dir: tempfile::TempDir,
    authority: Ca,
    root: Running,
    bytes: bytes::Bytes,
    path: String,
}

async fn fixture(size: usize, seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca(dir.path(), "estate-ca");
    let (cert, key) = leaf(dir.path(), &authority, "root");
    let bytes = payload(size, seed);
    let root = tls_root(dir.path(), &cert, &key, None, &bytes).await;
    let path = content_path(&bytes, "exe");
    Fixture {
        dir,
        authority,
        root,
        bytes,
        path,
    }
}

impl Fixture {
    /// A branch of the root reached through `wan`.
    async fn branch(&self, wan: &Relay, transport: &str, extra: &str) -> Running {
        branch_with(
            &self.dir.path().join("branch"),
            &format!("https://{}", wan.addr()),
            &upstream_keys(&self.authority, transport, extra),
            "",
        )
        .await
    }

    /// The branch answers the object whole and right.
    async fn fetch_through(&self, branch: &Running) {
        let got = get(&url(branch, &self.path), &[]).await;
        assert_eq!((got.status.as_u16(), got.broken), (200, false));
        assert!(got.body == self.bytes, "bytes match the origin");
    }

    async fn stop(self, branch: Running, wan: Relay) {
        branch.shutdown(Duration::from_secs(1)).await;
        self.root.shutdown(Duration::from_secs(1)).await;
        wan.stop().await;
    }
}

/// The root's HTTPS (and HTTP/3) address.
fn tls_addr(root: &Running) -> SocketAddr {
    root.listening().https.expect("https listener")
}

fn upstream_keys(ca: &Ca, transport: &str, extra: &str) -> String {
    format!(
        "ca = {:?}\ntransport = \"{transport}\"\ntimeout = \"5s\"\n{extra}",
        ca.pem.to_string_lossy()
    )
}

async fn status(node: &Running) -> serde_json::Value {
    let got = get(
        &format!("http://{}/api/v1/status", node.listening().admin),
        &[],
    )
    .await;
    serde_json::from_slice(&got.body).expect("status is JSON")
}

async fn quic_state(node: &Running) -> String {
    status(node).await["upstream"]["transport"]["quic"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_only_branch_fills_over_http3_and_no_tcp_crosses_the_wan() {
    logs();
    let f = fixture(9 * MIB + 77, 51).await;
    let link = Link {
        delay: Duration::from_millis(5),
        ..Link::default()
    };
    let wan = Relay::start("127.0.0.1:0".parse().unwrap(), tls_addr(&f.root), link)
        .await
        .unwrap();
    let branch = f.branch(&wan, "quic", "").await;
    f.fetch_through(&branch).await;

    assert_eq!(wan.stats().tcp_connections(), 0, "no TCP crossed the WAN");
    assert!(wan.stats().packets() > 100, "QUIC carried the object");
    let h3 = metric(&branch, "wsus_edge_upstream_requests_total", "http3").await;
    let tcp = metric(&branch, "wsus_edge_upstream_requests_total", "http1").await
        + metric(&branch, "wsus_edge_upstream_requests_total", "http2").await;
    assert!(h3 >= 3.0 && tcp == 0.0, "http3 {h3}, tcp {tcp}");
    let s = status(&branch).await;
    assert_eq!(s["upstream"]["transport"]["mode"], "quic");
    assert_eq!(s["upstream"]["transport"]["last_used"], "http3");
    // The root announces its HTTP/3 listener on the same port.
    assert_eq!(
        f.root.listening().quic.map(|a| a.port()),
        Some(tls_addr(&f.root).port())
    );
    f.stop(branch, wan).await;
}

/// A relay on 127.0.0.2 at the root's own port number, so that the root's `Alt-Svc`
/// (`h3=":PORT"`, same host) leads the branch's QUIC through the relay too.
async fn relay_at_the_roots_port(root: &Running, link: Link) -> Relay {
    let port = tls_addr(root).port();
    Relay::start(
        SocketAddr::from(([127, 0, 0, 2], port)),
        tls_addr(root),
        link,
    )
    .await
    .expect("127.0.0.2 at the root's port is free")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_upgrades_to_http3_once_the_upstream_advertises_it() {
    logs();
    let f = fixture(17 * MIB, 52).await;
    let wan = relay_at_the_roots_port(&f.root, Link::default()).await;
    let branch = f.branch(&wan, "auto", "").await;
    assert_eq!(quic_state(&branch).await, "not advertised");
    f.fetch_through(&branch).await;
    // The first answer (over TCP) carried Alt-Svc; the slices after it went over QUIC.
    assert!(wan.stats().tcp_connections() >= 1);
    let h3 = metric(&branch, "wsus_edge_upstream_requests_total", "http3").await;
    assert!(h3 >= 1.0, "upgraded to HTTP/3 ({h3} requests)");
    assert!(wan.stats().packets() > 0);
    assert_eq!(quic_state(&branch).await, "connected");
    f.stop(branch, wan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_tcp_quickly_when_udp_is_blocked() {
    logs();
    let f = fixture(17 * MIB, 53).await;
    let link = Link {
        delay: Duration::from_millis(10),
        block_udp: true,
        ..Link::default()
    };
    let wan = relay_at_the_roots_port(&f.root, link).await;
    let branch = f.branch(&wan, "auto", "").await;
    let started = Instant::now();
    f.fetch_through(&branch).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "complete over TCP in {took:?}"
    );
    // QUIC was tried (its packets died at the relay) and given up for TCP.
    assert!(wan.stats().dropped() > 0);
    assert_eq!(
        metric(&branch, "wsus_edge_upstream_requests_total", "http3").await,
        0.0
    );
    assert_eq!(quic_state(&branch).await, "unavailable");
    assert!(
        !logged(&["HTTP/3 unavailable, using TCP", &wan.addr().to_string()]).is_empty(),
        "the fallback is logged"
    );
    f.stop(branch, wan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_quic_connection_resumes_every_slice_by_range() {
    logs();
    let size = 32 * MIB + 5;
    let f = fixture(size, 54).await;
    // 12 MiB/s with 10 ms each way: the object takes a few seconds, long enough to cut it.
    // A 20 ms router buffer keeps what is lost in flight at the cut small and predictable.
    let link = Link {
        delay: Duration::from_millis(10),
        rate: Some(12 << 20),
        queue: Duration::from_millis(20),
        ..Link::default()
    };
    let wan = Relay::start("127.0.0.1:0".parse().unwrap(), tls_addr(&f.root), link)
        .await
        .unwrap();
    let at = wan.addr();
    // `timeout` (5 s here) is also the QUIC idle timeout: how soon a dead connection is seen.
    let branch = f.branch(&wan, "quic", "connect_timeout = \"5s\"").await;
    let branch_url = url(&branch, &f.path);
    let download = tokio::spawn(async move { get(&branch_url, &[]).await });

    until(
        "a quarter of the object to cross",
        Duration::from_secs(30),
        async || {
            let down = wan.stats().bytes_down();
            if down >= (size / 4) as u64 {
                Ok(())
            } else {
                Err(down)
            }
        },
    )
    .await;
    let before_the_cut = wan.stats().bytes_down();
    wan.stop().await;
    until(
        "the branch to notice the connection is gone",
        Duration::from_secs(30),
        async || match quic_state(&branch).await.as_str() {
            "connected" => Err("connected"),
            _ => Ok(()),
        },
    )
    .await;
    let wan = Relay::start(at, tls_addr(&f.root), link).await.unwrap();

    let got = download.await.unwrap();
    assert_eq!((got.status.as_u16(), got.broken), (200, false));
    assert!(
        got.body == f.bytes,
        "every slice completed with the right bytes"
    );
    // What the root put on the WAN, QUIC framing and retransmissions included: the slices cut
    // off resumed where they stopped instead of starting again.
    let on_the_wan = before_the_cut + wan.stats().bytes_down();
    assert!(
        on_the_wan <= (size + 4 * MIB) as u64,
        "{on_the_wan} bytes crossed the WAN for a {size}-byte object"
    );
    let h3 = metric(&branch, "wsus_edge_upstream_requests_total", "http3").await;
    assert!(h3 > 9.0, "cut slices were asked for again ({h3} requests)");
    assert_eq!(wan.stats().tcp_connections(), 0);
    f.stop(branch, wan).await;
}

/// Wrong CA, expired certificate, missing client certificate: refused over both transports,
/// with a log line that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_over_both_transports() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let authority = ca(dir.path(), "estate-ca");
    let stranger = ca(dir.path(), "stranger-ca");
    let (cert, key) = leaf(dir.path(), &authority, "root");
    let (old_cert, old_key) = expired_leaf(dir.path(), &authority, "old-root");
    let bytes = payload(MIB, 55);
    let path = content_path(&bytes, "exe");
    let good = tls_root(&dir.path().join("good"), &cert, &key, None, &bytes).await;
    let expired = tls_root(
        &dir.path().join("expired"),
        &old_cert,
        &old_key,
        None,
        &bytes,
    )
    .await;
    let strict = tls_root(
        &dir.path().join("strict"),
        &cert,
        &key,
        Some(&authority.pem),
        &bytes,
    )
    .await;

    // (case, root, the CA the branch trusts, what its log says over TCP, over QUIC)
    let cases: [(&str, &Running, &Ca, &str, &str); 3] = [
        (
            "wrong-ca",
            &good,
            &stranger,
            "UnknownIssuer",
            "UnknownIssuer",
        ),
        (
            "expired",
            &expired,
            &authority,
            "certificate expired",
            "certificate expired",
        ),
        (
            "no-client-cert",
            &strict,
            &authority,
            "CertificateRequired",
            "peer sent no certificates",
        ),
    ];
    for transport in ["tcp", "quic"] {
        for (case, root, trust, why_tcp, why_quic) in cases {
            let why = if transport == "tcp" {
                why_tcp
            } else {
                why_quic
            };
            let name = format!("{case}-{transport}");
            let mark = log_mark();
            let branch = branch_with(
                &dir.path().join(&name),
                &format!("https://{}", tls_addr(root)),
                &upstream_keys(trust, transport, "connect_timeout = \"3s\""),
                "",
            )
            .await;
            let got = get(&url(&branch, &path), &[]).await;
            assert!(
                got.status.is_server_error(),
                "{name}: refused, got {}",
                got.status
            );
            assert_eq!(
                metric(&branch, "wsus_edge_upstream_bytes_total", "").await,
                0.0,
                "{name}: no byte accepted"
            );
            let digest = &path[12..52];
            let lines = logged_since(mark, &[&digest.to_lowercase(), "fill failed"]);
            assert!(
                lines.iter().any(|l| l.contains(why)),
                "{name}: a log line says why ({why:?}) in {lines:#?}"
            );
            assert!(
                lines.iter().all(|l| !l.contains("attempts")),
                "{name}: a refusal is not retried: {lines:#?}"
            );
            branch.shutdown(Duration::from_secs(1)).await;
        }
    }
    // The root that demands a client certificate says so in its own log, for each transport.
    assert!(!logged(&["TLS handshake refused"]).is_empty());
    assert!(!logged(&["QUIC handshake refused"]).is_empty());

    // With its certificate, the branch is let in over either transport.
    let (branch_cert, branch_key) = leaf(dir.path(), &authority, "branch-a");
    for transport in ["tcp", "quic"] {
        let identity = format!(
            "connect_timeout = \"3s\"\nclient_cert = {:?}\nclient_key = {:?}",
            branch_cert.to_string_lossy(),
            branch_key.to_string_lossy()
        );
        let branch = branch_with(
            &dir.path().join(format!("named-{transport}")),
            &format!("https://{}", tls_addr(&strict)),
            &upstream_keys(&authority, transport, &identity),
            "",
        )
        .await;
        let got = get(&url(&branch, &path), &[]).await;
        assert!(got.status == 200 && got.body == bytes, "{transport}");
        let used = if transport == "tcp" { "http2" } else { "http3" };
        assert!(metric(&branch, "wsus_edge_upstream_requests_total", used).await >= 1.0);
        branch.shutdown(Duration::from_secs(1)).await;
    }
    for n in [good, expired, strict] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}
