//! The disk tier's limits: least recently used objects go when `cache.disk_bytes` would be
//! crossed, never one that is being read; with no room at all the node streams through without
//! caching.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use wsus_edge::content::ContentPath;
use wsus_edge::simulate::SplitMix;

const MIB: usize = 1 << 20;

/// Bytes of the files under `data_dir`'s content and partial folders.
fn disk_use(data_dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![data_dir.join("content"), data_dir.join("partial")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_set_three_times_the_disk_stays_within_it() {
    logs();
    let origin = Origin::start().await;
    // 24 objects of 1.5–4.5 MiB (~72 MiB) against a 24 MiB disk tier.
    let objects: Vec<_> = (0..24u64)
        .map(|i| {
            let bytes = payload(3 * MIB / 2 + (i as usize % 3) * 1_500_000, 100 + i);
            (origin.add(bytes.clone(), "cab"), bytes)
        })
        .collect();
    let total: usize = objects.iter().map(|(_, b)| b.len()).sum();
    let dir = tempfile::tempdir().unwrap();
    let limit = 24 * MIB as u64;
    let node = branch(
        dir.path(),
        &origin.url(),
        "[cache]\ndisk_bytes = \"24MiB\"\nmin_free_disk = \"1MiB\"\nmemory_bytes = \"8MiB\"\n",
    )
    .await;
    assert!(
        total as u64 > 3 * limit - 3 * MIB as u64,
        "working set {total}"
    );
    let largest = objects.iter().map(|(_, b)| b.len() as u64).max().unwrap();

    let mut rng = SplitMix(5);
    for round in 0..3 {
        let mut order: Vec<usize> = (0..objects.len()).collect();
        rng.shuffle(&mut order);
        for i in order {
            let (path, bytes) = &objects[i];
            let got = get(&url(&node, path), &[]).await;
            assert_eq!(
                (got.status.as_u16(), got.broken),
                (200, false),
                "round {round} object {i}"
            );
            assert!(got.body == *bytes, "round {round} object {i}: wrong bytes");
            // One object in flight at a time here: the limit plus that one.
            let used = disk_use(dir.path());
            assert!(
                used <= limit + largest,
                "disk use {used} > {limit} + {largest}"
            );
        }
    }
    assert!(metric(&node, "wsus_edge_cache_evictions_total", "").await > 0.0);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_being_read_is_not_evicted() {
    logs();
    let origin = Origin::start().await;
    let held = payload(12 * MIB, 200);
    let held_path = origin.add(held.clone(), "exe");
    let others: Vec<_> = (0..6u64)
        .map(|i| {
            let b = payload(4 * MIB, 201 + i);
            (origin.add(b.clone(), "cab"), b)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // A small memory tier, so the held object's later slices come from its file.
    let node = branch(
        dir.path(),
        &origin.url(),
        "[cache]\ndisk_bytes = \"16MiB\"\nmin_free_disk = \"1MiB\"\nmemory_bytes = \"4MiB\"\n",
    )
    .await;
    // Cache the held object, then open a response on it and read only its first piece.
    assert!(get(&url(&node, &held_path), &[]).await.body == held);
    let response = client()
        .request(
            http::Request::get(url(&node, &held_path))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut received = Vec::new();
    while received.is_empty() {
        if let Some(Ok(frame)) = body.frame().await
            && let Ok(data) = frame.into_data()
        {
            received.extend_from_slice(&data);
        }
    }
    // Now push 24 MiB of other objects through a 16 MiB disk tier.
    for (path, bytes) in &others {
        assert!(get(&url(&node, path), &[]).await.body == *bytes);
    }
    assert!(metric(&node, "wsus_edge_cache_evictions_total", "").await > 0.0);
    // The open stream finishes byte-exact.
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("the held stream is not cut").into_data() {
            received.extend_from_slice(&data);
        }
    }
    assert!(received == held, "the held object's stream is byte-exact");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_room_on_disk_streams_through_without_caching() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(6 * MIB + 1, 300);
    let path = origin.add(bytes.clone(), "exe");
    let dir = tempfile::tempdir().unwrap();
    // A free-space floor no disk can meet: every reservation fails, as on a full disk.
    let node = branch(
        dir.path(),
        &origin.url(),
        "[cache]\nmin_free_disk = \"1000TB\"\ndisk_bytes = \"2000TB\"\nmemory_bytes = \"0\"\n",
    )
    .await;
    for _ in 0..2 {
        let got = get(&url(&node, &path), &[]).await;
        assert_eq!((got.status.as_u16(), got.broken), (200, false));
        assert!(got.body == bytes, "streamed through byte-exact");
        let got = get(&url(&node, &path), &[("range", "bytes=5000000-5000999")]).await;
        assert!(got.status == 206 && got.body == bytes.slice(5_000_000..5_001_000));
    }
    assert_eq!(disk_use(dir.path()), 0, "nothing cached");
    assert!(metric(&node, "wsus_edge_fill_errors_total", "reason=\"disk_full\"").await >= 1.0);
    // Not cached, so every request went upstream again.
    assert!(origin.requests_for(&path).len() >= 4);
    node.shutdown(Duration::from_secs(1)).await;
}

/// A range or a HEAD on a cold object starts a partial object that reserves its whole size; if
/// nobody finishes it, it must give way like any idle object, or the cache would end up
/// streaming everything through uncached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_partial_objects_are_evicted_too() {
    logs();
    let origin = Origin::start().await;
    let objects: Vec<_> = (0..10u64)
        .map(|i| {
            let bytes = payload(8 * MIB, 200 + i);
            (origin.add(bytes.clone(), "cab"), bytes)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let limit = 24 * MIB as u64;
    let node = branch(
        dir.path(),
        &origin.url(),
        "[cache]\ndisk_bytes = \"24MiB\"\nmin_free_disk = \"1MiB\"\nmemory_bytes = \"8MiB\"\n",
    )
    .await;
    for (path, bytes) in &objects {
        let head = request("HEAD", &url(&node, path), &[]).await;
        assert_eq!(head.status, 200);
        let got = get(&url(&node, path), &[("range", "bytes=4194304-5242879")]).await;
        assert_eq!(got.status, 206);
        assert!(got.body == bytes.slice(4 * MIB..5 * MIB));
        let used = disk_use(dir.path());
        assert!(used <= limit + 8 * MIB as u64, "disk use {used}");
        // Abandoned: the response is gone and no slice is on its way (a look-ahead fetch may
        // outlive the response on a busy machine), so nothing but the cache holds it.
        let digest = ContentPath::parse(path).unwrap().digest;
        until(
            "the object left idle",
            Duration::from_secs(10),
            async || match node.store().describe(&digest) {
                Some(i) if i.readers == 0 && i.slices_fetching == 0 => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
    // Every object after the third needed room that only partial objects held.
    assert!(metric(&node, "wsus_edge_cache_evictions_total", "").await >= 7.0);
    assert_eq!(
        metric(&node, "wsus_edge_fill_errors_total", "disk_full").await,
        0.0,
        "nothing was streamed through for lack of room"
    );
    // A whole object still gets cached.
    let (path, bytes) = &objects[0];
    let got = get(&url(&node, path), &[]).await;
    assert!(got.status == 200 && !got.broken && got.body == *bytes);
    let digest = &path[12..52].to_lowercase();
    assert!(
        dir.path()
            .join("content")
            .join(&digest[38..])
            .join(digest)
            .exists(),
        "committed"
    );
    node.shutdown(Duration::from_secs(1)).await;
}
