//! A misbehaving upstream: resets, wrong bytes, short bodies, stalls, errors, absence. Clients
//! get correct bytes or a closed connection, never a complete wrong file; nothing wrong is
//! committed; the next request succeeds once upstream is healthy.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

/// A branch whose upstream gives up quickly (tests of failure want failures fast).
async fn impatient_branch(dir: &Path, origin: &Origin) -> wsus_edge::node::Running {
    branch_with(
        dir,
        &origin.url(),
        "timeout = \"1s\"\nconnect_timeout = \"1s\"\nretries = 3\nmismatch_backoff = \"1s\"",
        "",
    )
    .await
}

/// GET `path` once upstream.mismatch_backoff (1 s here) has passed: 502 until then.
async fn after_backoff(node: &wsus_edge::node::Running, path: &str) -> Got {
    let (Ok(got) | Err(got)) = within(Duration::from_secs(10), async || {
        let got = get(&url(node, path), &[]).await;
        if got.status != 502 { Ok(got) } else { Err(got) }
    })
    .await;
    got
}

fn committed_file(dir: &Path, path: &str) -> std::path::PathBuf {
    let hex = path
        .rsplit('/')
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_ascii_lowercase();
    dir.join("content").join(&hex[38..]).join(hex)
}

/// Resume requests are the ones that do not start on a slice boundary.
fn resumes(origin: &Origin, path: &str) -> usize {
    origin
        .requests_for(path)
        .iter()
        .filter(|l| l.range.is_some_and(|(a, _)| a % (4 * MIB as u64) != 0))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_mid_slice_are_resumed_by_range() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(10 * MIB + 5, 11);
    let path = origin.add(bytes.clone(), "exe");
    origin.fault(
        &path,
        Fault::ResetAfter {
            bytes: 1_000_000,
            times: 3,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let node = impatient_branch(dir.path(), &origin).await;
    let got = get(&url(&node, &path), &[]).await;
    assert_eq!(got.status, 200);
    assert!(!got.broken);
    assert!(got.body == bytes, "body differs from the origin's bytes");
    assert!(
        resumes(&origin, &path) >= 3,
        "{:?}",
        origin.requests_for(&path)
    );
    // Resumed, not refetched: the origin sent the object plus only what the resets cut off.
    assert!(origin.body_bytes() <= bytes.len() as u64 + 3 * 1_000_000);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_bodies_and_stalls_are_resumed() {
    logs();
    let origin = Origin::start().await;
    let short = payload(6 * MIB, 12);
    let stall = payload(6 * MIB, 13);
    let short_path = origin.add(short.clone(), "cab");
    let stall_path = origin.add(stall.clone(), "cab");
    origin.fault(
        &short_path,
        Fault::Short {
            missing: 1000,
            times: 2,
        },
    );
    origin.fault(
        &stall_path,
        Fault::StallAfter {
            bytes: 300_000,
            times: 1,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let node = impatient_branch(dir.path(), &origin).await;

    let got = get(&url(&node, &short_path), &[]).await;
    assert_eq!((got.status.as_u16(), got.broken), (200, false));
    assert!(got.body == short);
    assert!(resumes(&origin, &short_path) >= 2);

    let started = Instant::now();
    let got = get(&url(&node, &stall_path), &[]).await;
    assert_eq!((got.status.as_u16(), got.broken), (200, false));
    assert!(got.body == stall);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the stall timeout was waited"
    );
    assert!(resumes(&origin, &stall_path) >= 1);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_never_make_a_complete_file_nor_a_cache_entry() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(9 * MIB, 14);
    let path = origin.add(bytes.clone(), "exe");
    origin.fault(&path, Fault::WrongBytes);
    let dir = tempfile::tempdir().unwrap();
    let node = impatient_branch(dir.path(), &origin).await;

    let got = get(&url(&node, &path), &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.broken, "the connection must close before the end");
    assert!(
        got.body.len() < bytes.len(),
        "{} bytes received",
        got.body.len()
    );
    // The whole-file range of Delivery Optimization's capture 07 is a whole file too.
    let whole_range = format!("bytes=0-{}", bytes.len() - 1);
    let got = get(&url(&node, &path), &[("range", &whole_range)]).await;
    // Cut before its end, or refused while the name's failure is fresh (mismatch_backoff).
    assert!(
        (got.broken && got.body.len() < bytes.len()) || got.status == 502,
        "status {} broken {} with {} bytes",
        got.status,
        got.broken,
        got.body.len()
    );
    assert!(metric(&node, "wsus_edge_fill_errors_total", "reason=\"digest\"").await >= 1.0);
    assert!(
        !committed_file(dir.path(), &path).exists(),
        "wrong bytes committed"
    );

    origin.heal(&path);
    let got = after_backoff(&node, &path).await;
    assert_eq!((got.status.as_u16(), got.broken), (200, false));
    assert!(
        got.body == bytes,
        "the next request after healing is correct"
    );
    // The final piece was held back until the commit's check passed, and the commit renames
    // the file into place before it announces the verdict.
    assert!(
        committed_file(dir.path(), &path).exists(),
        "healthy object committed by the time its last byte arrived"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resetting_upstream_fails_cleanly_then_recovers() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(5 * MIB, 15);
    let path = origin.add(bytes.clone(), "exe");
    origin.fault(
        &path,
        Fault::ResetAfter {
            bytes: 0,
            times: 1000,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let node = impatient_branch(dir.path(), &origin).await;
    let got = get(&url(&node, &path), &[]).await;
    assert!(
        got.status.is_server_error() || got.broken,
        "status {} broken {}",
        got.status,
        got.broken
    );
    assert!(got.body.len() < bytes.len());
    let requests = origin.requests_for(&path).len();
    assert!(requests <= 10, "bounded retries, saw {requests}");
    origin.heal(&path);
    let got = after_backoff(&node, &path).await;
    assert_eq!((got.status.as_u16(), got.broken), (200, false));
    assert!(got.body == bytes);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_statuses_map_to_client_statuses() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = impatient_branch(dir.path(), &origin).await;
    let missing = content_path(b"never stored", "cab");
    assert_eq!(get(&url(&node, &missing), &[]).await.status, 404);

    let broken = origin.add(payload(1000, 16), "cab");
    origin.fault(&broken, Fault::Status(500));
    let got = get(&url(&node, &broken), &[]).await;
    assert_eq!(got.status, 502);
    assert!(!got.body.is_empty() && got.body.len() < 100, "a short body");

    origin.fault(&broken, Fault::Status(503));
    assert_eq!(get(&url(&node, &broken), &[]).await.status, 504);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_quick_504_and_cached_objects_keep_serving() {
    logs();
    let origin = Origin::start().await;
    let cached = payload(3 * MIB, 17);
    let cached_path = origin.add(cached.clone(), "exe");
    let absent_path = origin.add(payload(3 * MIB, 18), "exe");
    let dir = tempfile::tempdir().unwrap();
    let node = impatient_branch(dir.path(), &origin).await;
    assert!(get(&url(&node, &cached_path), &[]).await.body == cached);
    origin.stop();

    let started = Instant::now();
    let got = get(&url(&node, &absent_path), &[]).await;
    assert_eq!(got.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let got = get(&url(&node, &cached_path), &[("range", "bytes=100-199")]).await;
    assert_eq!(got.status, 206);
    assert!(got.body == cached.slice(100..200));
    let got = get(&url(&node, &cached_path), &[]).await;
    assert!(got.status == 200 && got.body == cached);
    node.shutdown(Duration::from_secs(1)).await;
}

/// An upstream that accepts connections and never answers costs a waiting client one
/// `upstream.timeout`, not one per retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_one_timeout_then_504() {
    logs();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let node = branch_with(
        dir.path(),
        &format!("http://{addr}"),
        "timeout = \"1s\"\nretries = 4",
        "",
    )
    .await;
    let started = Instant::now();
    let got = get(&url(&node, &content_path(b"x", "cab")), &[]).await;
    assert_eq!(got.status, 504);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    node.shutdown(Duration::from_secs(1)).await;
    held.abort();
}
