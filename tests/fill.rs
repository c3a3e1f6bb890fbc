//! The fill under load: single flight per slice, streaming to every waiter, Delivery
//! Optimization's range storms. Real nodes and a counting origin on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt;
use sha1::{Digest as _, Sha1};
use wsus_edge::simulate::{self, Download};

const MIB: u64 = 1 << 20;

/// Every slice the origin served, with how often.
fn slice_fetches(origin: &Origin, path: &str) -> HashMap<(u64, u64), usize> {
    let mut counts = HashMap::new();
    for l in origin.requests_for(path) {
        *counts
            .entry(l.range.expect("the branch always asks for a range"))
            .or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_cold_gets_fetch_each_slice_once_and_stream_early() {
    logs();
    let origin = Origin::start().await;
    // 50 MB/s: the object takes ~1.3 s upstream, so "first byte long before the end" is visible.
    origin.throttle(50_000_000);
    let bytes = payload(64 << 20, 2);
    let path = origin.add(bytes.clone(), "exe");
    let dir = tempfile::tempdir().unwrap();
    let node = branch(dir.path(), &origin.url(), "").await;
    let url = url(&node, &path);
    let digest = sha1(&bytes);

    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let url = url.clone();
        clients.spawn(async move {
            let response = client()
                .request(
                    http::Request::get(url)
                        .body(http_body_util::Empty::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let mut hasher = Sha1::new();
            let mut first_byte = None;
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("body completes").into_data() {
                    first_byte.get_or_insert_with(|| started.elapsed());
                    hasher.update(&data);
                    len += data.len() as u64;
                }
            }
            (
                first_byte.unwrap(),
                started.elapsed(),
                len,
                hasher.finalize(),
            )
        });
    }
    let mut first_bytes = Vec::new();
    let mut done = Vec::new();
    while let Some(r) = clients.join_next().await {
        let (first, end, len, hash) = r.unwrap();
        assert_eq!(len, 64 << 20);
        assert_eq!(hash.as_slice(), digest.0, "body hashes to the name");
        first_bytes.push(first);
        done.push(end);
    }
    // Each 4 MiB slice crossed "the WAN" exactly once.
    let fetches = slice_fetches(&origin, &path);
    assert_eq!(fetches.len(), 16, "{fetches:?}");
    for s in 0..16u64 {
        assert_eq!(
            fetches.get(&(s * 4 * MIB, (s + 1) * 4 * MIB - 1)),
            Some(&1),
            "slice {s}: {fetches:?}"
        );
    }
    assert_eq!(origin.body_bytes(), 64 << 20);
    // Clients were streamed bytes while the fill ran, not after it.
    first_bytes.sort();
    let p99_first = first_bytes[98];
    let first_done = *done.iter().min().unwrap();
    assert!(
        p99_first * 4 < first_done,
        "first bytes p99 {p99_first:?} vs first completion {first_done:?}"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_optimization_storm_costs_one_object_upstream() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(64 << 20, 3);
    let path = origin.add(bytes.clone(), "psf");
    let dir = tempfile::tempdir().unwrap();
    let node = branch(dir.path(), &origin.url(), "").await;
    let file = Download {
        url: url(&node, &path),
        size: bytes.len() as u64,
        sha1: sha1(&bytes),
    };
    let http = simulate::http_client();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..20u64 {
        let (http, file) = (http.clone(), file.clone());
        clients.spawn(async move {
            let options = simulate::Options {
                seed: c + 1,
                ..simulate::Options::default()
            };
            simulate::delivery_optimization(&http, &file, options).await
        });
    }
    while let Some(r) = clients.join_next().await {
        let outcome = r
            .unwrap()
            .expect("every range answered 206 with its exact bytes");
        assert!(outcome.verified, "assembled file hashes to its name");
        assert_eq!(outcome.requests, 64);
    }
    let upstream = origin.body_bytes();
    assert!(
        upstream <= (64 << 20) + 4 * MIB,
        "upstream bytes {upstream} exceed the object plus one slice"
    );
    assert_eq!(
        metric(&node, "wsus_edge_upstream_bytes_total", "").await as u64,
        upstream
    );
    node.shutdown(Duration::from_secs(1)).await;
}
