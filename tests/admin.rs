//! The admin listener of a live node: probes, the metrics DESIGN.md §5 names, the status JSON
//! and page.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_and_status_answer() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(1 << 20, 9);
    let path = origin.add(bytes.clone(), "cab");
    let dir = tempfile::tempdir().unwrap();
    let node = branch(dir.path(), &origin.url(), "").await;
    let admin = |p: &str| format!("http://{}{p}", node.listening().admin);
    assert_eq!(get(&admin("/livez"), &[]).await.status, 200);
    assert_eq!(get(&admin("/readyz"), &[]).await.status, 200);
    assert_eq!(get(&url(&node, &path), &[]).await.body, bytes);

    let metrics = String::from_utf8(get(&admin("/metrics"), &[]).await.body.to_vec()).unwrap();
    for name in [
        "wsus_edge_requests_total{path=\"content\",status=\"200\"} 1",
        "wsus_edge_cache_misses_total 1",
        "wsus_edge_upstream_requests_total{transport=\"http1\"}",
        &format!("wsus_edge_upstream_bytes_total {}", bytes.len()),
        &format!("wsus_edge_served_bytes_total {}", bytes.len()),
        "wsus_edge_cache_bytes{tier=\"disk\"}",
        "wsus_edge_cache_evictions_total 0",
        "wsus_edge_reports_pending 0",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    let hit = get(&url(&node, &path), &[]).await;
    assert_eq!(hit.status, 200);
    assert!(
        metric(&node, "wsus_edge_cache_hits_total", "tier=\"memory\"").await == 1.0,
        "a second GET is a memory hit"
    );

    let status: serde_json::Value =
        serde_json::from_slice(&get(&admin("/api/v1/status"), &[]).await.body).unwrap();
    assert_eq!(status["name"], "test");
    assert_eq!(status["role"], "downstream");
    assert_eq!(status["upstream"]["url"], origin.url());
    assert_eq!(status["cache"]["objects"], 1);
    let page = String::from_utf8(get(&admin("/"), &[]).await.body.to_vec()).unwrap();
    assert!(page.contains("wsus-edge: test") && page.contains(&origin.url()));
    node.shutdown(Duration::from_secs(1)).await;
}
