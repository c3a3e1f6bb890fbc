//! The fill under load: single flight per slice, streaming to every waiter, Delivery
//! Optimization's range storms. Real nodes and a counting origin on 127.0.0.1.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

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
    // Every client was streamed bytes while the fill ran, not after it.
    let last_first = *first_bytes.iter().max().unwrap();
    let first_done = *done.iter().min().unwrap();
    assert!(
        last_first * 2 < first_done,
        "latest first byte {last_first:?} vs first completion {first_done:?}"
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

/// A HEAD needs no byte of the object and a suffix range only the slices at its end: the size
/// is learned with a one-byte probe, not by fetching the first slice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_suffix_ranges_fetch_only_what_they_need() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(10 * MIB as usize + 3, 4);
    let path = origin.add(bytes.clone(), "cab");
    let dir = tempfile::tempdir().unwrap();
    let node = branch(dir.path(), &origin.url(), "").await;

    let head = request("HEAD", &url(&node, &path), &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], bytes.len().to_string());
    let asked: Vec<_> = origin.requests_for(&path).iter().map(|l| l.range).collect();
    assert_eq!(asked, vec![Some((0, 0))], "one probe, no slice");

    let other = payload(10 * MIB as usize + 5, 5);
    let path = origin.add(other.clone(), "cab");
    let got = get(&url(&node, &path), &[("range", "bytes=-1000")]).await;
    assert_eq!(got.status, 206);
    assert!(got.body == other.slice(other.len() - 1000..));
    let last_slice = (8 * MIB, other.len() as u64 - 1);
    let asked: Vec<_> = origin.requests_for(&path).iter().map(|l| l.range).collect();
    assert_eq!(asked, vec![Some((0, 0)), Some(last_slice)]);
    node.shutdown(Duration::from_secs(1)).await;
}

/// The access log line's cache status says where the bytes of each request came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_tells_hits_misses_and_partial_fills_apart() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(12 * MIB as usize, 6);
    let path = origin.add(bytes.clone(), "cab");
    let dir = tempfile::tempdir().unwrap();
    let node = branch(dir.path(), &origin.url(), "").await;
    // The line is written when the response ends, which may be just after the client has
    // its last byte: wait for it.
    let status_of = |mark: usize| {
        let path = path.clone();
        async move {
            let (Ok(lines) | Err(lines)) = within(Duration::from_secs(10), async || {
                let lines = logged_since(mark, &["wsus_edge::access", &path]);
                if lines.is_empty() {
                    Err(lines)
                } else {
                    Ok(lines)
                }
            })
            .await;
            assert_eq!(lines.len(), 1, "one access line per request: {lines:#?}");
            assert!(lines[0].contains("complete=true"), "{}", lines[0]);
            lines[0]
                .split_whitespace()
                .find_map(|f| f.strip_prefix("cache="))
                .map(|c| c.trim_matches('"').to_owned())
                .unwrap_or_default()
        }
    };
    let steps: [(&[(&str, &str)], &str); 3] = [
        (&[("range", "bytes=0-99")], "miss"),
        (&[], "partial"),
        // An object of 1 MiB or more is read back from its file (the page cache), not held in
        // the memory tier.
        (&[], "hit-disk"),
    ];
    let digest = path[12..52].to_owned();
    for (headers, want) in steps {
        let mark = log_mark();
        let got = get(&url(&node, &path), headers).await;
        assert!(got.status.is_success() && !got.broken);
        assert_eq!(status_of(mark).await, want, "{headers:?}");
        // The first slice is fetched whole though 100 bytes were asked: let it land, so that
        // the next request finds it in the cache.
        let info = format!("http://{}/api/v1/content/{digest}", node.listening().admin);
        if want == "miss" {
            until(
                "the first slice to land",
                Duration::from_secs(10),
                async || {
                    let body = String::from_utf8_lossy(&get(&info, &[]).await.body).into_owned();
                    if body.contains("\"slices_present\": 1") {
                        Ok(())
                    } else {
                        Err(body)
                    }
                },
            )
            .await;
        }
    }
    node.shutdown(Duration::from_secs(1)).await;

    // Without a memory tier, a committed object is read from disk.
    let dir = tempfile::tempdir().unwrap();
    let node = branch(dir.path(), &origin.url(), "[cache]\nmemory_bytes = 0\n").await;
    for want in ["miss", "hit-disk"] {
        let mark = log_mark();
        let got = get(&url(&node, &path), &[]).await;
        assert!(got.status == 200 && got.body == bytes);
        assert_eq!(status_of(mark).await, want);
    }
    node.shutdown(Duration::from_secs(1)).await;
}

/// `wan.max_bandwidth` caps what the branch takes from its upstream (a lower bound on the time,
/// which no slow machine can break).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wan_budget_caps_the_fill_rate() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(12 * MIB as usize, 7);
    let path = origin.add(bytes.clone(), "cab");
    let dir = tempfile::tempdir().unwrap();
    let node = branch(
        dir.path(),
        &origin.url(),
        "[wan]\nmax_bandwidth = \"32Mbit/s\"\n",
    )
    .await;
    let started = Instant::now();
    let got = get(&url(&node, &path), &[]).await;
    let took = started.elapsed();
    assert!(got.status == 200 && got.body == bytes);
    // 12 MiB at 4 MB/s is 3.1 s; the bucket may lend 0.1 s of credit.
    assert!(took >= Duration::from_millis(2900), "12 MiB in {took:?}");
    node.shutdown(Duration::from_secs(1)).await;
}
