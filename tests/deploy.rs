//! What `deploy/` ships, checked by the tools that read it: the systemd unit by
//! `systemd-analyze`, the metrics of a live node by `promtool check metrics`, the alert rules by
//! `promtool test rules` and the dashboard against the names that node exports, the container,
//! Compose and Kubernetes files by their validators (deploy/check-container.sh). The Debian
//! package is built and installed by `.ci/run` (deploy/check-package.sh needs root).
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run a script of deploy/ with `args`; its output on failure.
fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("deploy").join(name)).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{name}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    text
}

#[test]
fn the_systemd_unit_verifies_and_its_sandbox_holds() {
    let out = script("systemd/verify.sh", &[], &[]);
    assert!(out.contains("verify"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_nodes_metrics_pass_promtool_and_feed_the_alerts_and_the_dashboard() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, _, _) = catalog_root(dir.path()).await;
    let branch = downstream(dir.path(), "branch", &root).await;
    replica_until(&branch, |s| s.syncs > 0 && s.prefetches > 0).await;
    // Clients scan and report at the branch: events wait for the rollup.
    let fleet = wsus_edge::simulate::wua::Fleet {
        server: format!("http://{}", branch.listening().http),
        content_server: None,
        clients: 3,
        concurrency: 3,
        group: None,
        download: true,
        report: true,
        seed: 5,
        rescans: 0,
        fail_every: 0,
        rate: None,
        rescan_rate: None,
        accepts: wsus_edge::http::coding::Coding::Xpress,
        drivers: None,
    };
    let outcome = wsus_edge::simulate::wua::run(&fleet).await;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert!(outcome.events > 0);
    let pending = metric(&branch, "wsus_edge_reports_pending", "").await;
    assert_eq!(pending, outcome.events as f64, "every reported event waits");
    rolled_up(&branch).await;
    assert_eq!(metric(&branch, "wsus_edge_reports_pending", "").await, 0.0);
    assert_eq!(metric(&branch, "wsus_edge_computers", "").await, 3.0);
    assert!(metric(&branch, "wsus_edge_sync_last_success_timestamp_seconds", "").await > 1e9);
    assert!(
        metric(
            &branch,
            "wsus_edge_rollup_last_success_timestamp_seconds",
            ""
        )
        .await
            > 1e9
    );
    assert_eq!(metric(&branch, "wsus_edge_ready", "").await, 1.0);
    assert!(
        metric(
            &branch,
            "wsus_edge_soap_calls_total",
            "operation=\"SyncUpdates\",outcome=\"ok\""
        )
        .await
            >= 3.0
    );
    assert!(metric(&branch, "wsus_edge_prefetch_files_total", "").await > 0.0);

    // Both pass promtool; the branch, which has an upstream, exports every family the alerts and
    // the dashboard name.
    for node in [&root, &branch] {
        let text = get(&format!("http://{}/metrics", node.listening().admin), &[]).await;
        let file = dir.path().join("metrics.txt");
        std::fs::write(&file, &text.body).unwrap();
        let out = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .expect("promtool (apt-get install prometheus)");
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The alert rules' unit tests, and every name in the dashboard and the rules exported.
    script(
        "check-monitoring.sh",
        &[&dir.path().join("metrics.txt").to_string_lossy()],
        &[],
    );
}

#[test]
fn the_container_compose_and_kubernetes_files_validate() {
    let out = script("check-container.sh", &[], &[]);
    assert!(out.contains("every check passed"), "{out}");
}
