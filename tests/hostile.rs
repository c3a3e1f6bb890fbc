//! Hostile and malformed requests on the content path, sent as raw bytes (no client library
//! normalises them first): each gets its documented status quickly, nothing outside the store is
//! touched, and the node serves the next request correctly.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send one raw HTTP/1.1 request and return the status code and the whole answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 5 s")
        .unwrap();
    let status = std::str::from_utf8(&answer[..answer.len().min(12)])
        .ok()
        .and_then(|s| s.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn request_line(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_get_their_status_and_nothing_else() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    let bytes = payload(100_000, 31);
    std::fs::write(source.path().join("a.cab"), &bytes).unwrap();
    // A file beside the store that traversal would reach.
    std::fs::write(dir.path().join("secret"), b"do not serve").unwrap();
    wsus_edge::content::import_dir(&dir.path().join("data"), source.path()).unwrap();
    let node = start(&node_config(&dir.path().join("data"), None, "", "")).await;
    let addr = node.listening().http;
    let good = content_path(&bytes, "cab");
    let hex = good
        .rsplit('/')
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();

    let long = format!("/Content/{}/{}{}.cab", &hex[38..], hex, "0".repeat(400));
    let cases: Vec<(String, u16)> = vec![
        ("/Content/../secret".into(), 400),
        ("/Content/../../data/secret".into(), 400),
        (format!("/Content/{}/../../secret", &hex[38..]), 400),
        ("/Content/%2e%2e/secret".into(), 400),
        (format!("/Content/{}%2F{hex}.cab", &hex[38..]), 400),
        (format!("/Content/{}/{hex}.cab%00", &hex[38..]), 400),
        (format!("/Content/{}/{hex}%2ecab", &hex[38..]), 400),
        (format!("/Content/{}\\{hex}.cab", &hex[38..]), 400),
        (long, 400),
        ("/Content/".into(), 404),
        ("/Content/secret".into(), 404),
        (format!("/Content/00/{hex}.cab"), 404),
        (format!("/Content/{}/{}.cab", &hex[38..], &hex[..39]), 404),
        (format!("/Content/{}/{hex}", &hex[38..]), 404),
        ("/content/zz/zzzz.cab".into(), 404),
        ("/etc/passwd".into(), 404),
    ];
    for (target, expected) in &cases {
        let started = Instant::now();
        let (status, answer) = raw(addr, &request_line(target)).await;
        assert_eq!(
            status,
            *expected,
            "{target}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            !answer.windows(12).any(|w| w == b"do not serve"),
            "{target} leaked a file"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{target} was slow"
        );
        // The node still serves a good request right after.
        let got = get(&url(&node, &good), &[("range", "bytes=10-19")]).await;
        assert!(
            got.status == 206 && got.body == bytes.slice(10..20),
            "after {target}"
        );
    }
    // Other methods are refused with the methods that work.
    let (status, answer) = raw(
        addr,
        format!("DELETE {good} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 405);
    assert!(
        String::from_utf8_lossy(&answer)
            .to_ascii_lowercase()
            .contains("allow: get, head")
    );
    // Case does not matter, as on IIS.
    let got = get(&url(&node, &good.to_ascii_lowercase()), &[]).await;
    assert!(got.status == 200 && got.body == bytes);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_ranges_are_bounded() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    let bytes = payload(1 << 20, 32);
    std::fs::write(source.path().join("b.exe"), &bytes).unwrap();
    wsus_edge::content::import_dir(&dir.path().join("data"), source.path()).unwrap();
    let node = start(&node_config(&dir.path().join("data"), None, "", "")).await;
    let u = url(&node, &content_path(&bytes, "exe"));

    // 1,000 overlapping ranges coalesce into one part.
    let overlapping = format!("bytes={}", vec!["0-99"; 1000].join(","));
    let started = Instant::now();
    let got = get(&u, &[("range", &overlapping)]).await;
    assert_eq!(got.status, 206);
    assert_eq!(got.headers["content-range"], "bytes 0-99/1048576");
    assert!(got.body == bytes.slice(0..100));
    // 1,000 disjoint small ranges are more parts than allowed: the whole object, not a
    // multipart of 1,000 parts.
    let disjoint: Vec<String> = (0..1000)
        .map(|i| format!("{}-{}", i * 1000, i * 1000))
        .collect();
    let got = get(&u, &[("range", &format!("bytes={}", disjoint.join(",")))]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
    // A 40 KB Range header (over the 16 KiB a Range may be) is ignored.
    let huge = format!("bytes={}", "1-2,".repeat(10_000));
    let got = get(&u, &[("range", &huge)]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
    // A 100 KB one makes the head larger than listen.max_header_bytes: 431.
    let huge = format!("bytes={}", "1-2,".repeat(25_000));
    let got = get(&u, &[("range", &huge)]).await;
    assert_eq!(got.status, 431);
    // Reversed ranges and garbage are ignored (200); positions past any length (even past
    // u64) are unsatisfiable (416).
    for (range, expected) in [
        ("bytes=99999999999999999999999-", 416),
        ("bytes=99999999999999999999999-1", 200),
        ("bytes=9-5", 200),
        ("bytes=--1", 200),
        ("bytes=abc", 200),
        ("bytes=2000000-", 416),
        ("bytes=-0", 416),
    ] {
        let got = get(&u, &[("range", range)]).await;
        assert_eq!(got.status.as_u16(), expected, "{range}");
        if expected == 416 {
            assert_eq!(got.headers["content-range"], "bytes */1048576");
            assert_eq!(got.headers["content-length"], "0");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let got = get(&u, &[("range", "bytes=-10")]).await;
    assert!(got.status == 206 && got.body == bytes.slice(bytes.len() - 10..));
    node.shutdown(Duration::from_secs(1)).await;
}
