//! What a hostile or broken peer must not do to a node: crash it, make it allocate by what it
//! claims, hold its descriptors, or get wrong bytes accepted. Each reproduction against a real
//! node and a misbehaving origin.

mod common;

use common::*;

/// This process's resident memory, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_claiming_a_huge_size_gets_a_502_and_no_allocation() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = branch(dir.path(), &origin.url(), "").await;
    let before = resident();
    let mut refused = 0;
    for (i, claim) in [u64::MAX, (1 << 63) - 1, 1 << 46, 64 << 30]
        .into_iter()
        .enumerate()
    {
        let path = origin.add(payload(1 << 20, 40 + i as u64), "cab");
        origin.fault(&path, Fault::ClaimTotal(claim));
        for method in ["GET", "HEAD"] {
            let got = request(method, &url(&node, &path), &[]).await;
            assert_eq!(got.status, 502, "{method} of a {claim}-byte claim");
            refused += 1;
        }
        // Ranges anywhere in it too.
        let got = get(&url(&node, &path), &[("range", "bytes=1000-1999")]).await;
        assert_eq!(got.status, 502);
        refused += 1;
    }
    let grown = resident().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
    assert!(
        metric(&node, "wsus_edge_fill_errors_total", "reason=\"too_large\"").await
            >= f64::from(refused),
    );
    // The node serves on: an honest object of the same origin, byte-exact.
    let bytes = payload(3 << 20, 9);
    let path = origin.add(bytes.clone(), "cab");
    assert_eq!(get(&url(&node, &path), &[]).await.body, bytes);
    assert_eq!(
        get(&format!("http://{}/livez", node.listening().admin), &[])
            .await
            .status,
        200
    );
    assert!(!logged(&["the upstream claims"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_configured_limit_is_refused() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = branch(
        dir.path(),
        &origin.url(),
        "[cache]\nslice_bytes = \"1MiB\"\nmax_object_bytes = \"2MiB\"\n",
    )
    .await;
    let small = payload(1 << 20, 1);
    let large = payload(3 << 20, 2);
    let (small_path, large_path) = (origin.add(small.clone(), "cab"), origin.add(large, "cab"));
    assert_eq!(get(&url(&node, &large_path), &[]).await.status, 502);
    assert_eq!(get(&url(&node, &small_path), &[]).await.body, small);
}
