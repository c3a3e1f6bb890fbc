//! Nothing a client was told is accepted is lost: 1,000 simulated clients report to a branch
//! whose upstream is unreachable (the WAN relay between them stopped), the branch is killed
//! (SIGKILL) during the outage and started again, and once the WAN is back the root holds
//! every computer with exactly the states the branch acknowledged, none twice.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use wsus_edge::report::{ComputerFilter, UpdateState};
use wsus_edge::simulate::wua;
use wsus_edge::state::Journal;
use wsus_edge::testkit::wan::{Link, Relay};

const CLIENTS: usize = 1000;

/// (computers, installed, failed) a journal holds.
fn totals(journal: &Journal) -> (usize, u64, u64) {
    let computers = journal.computers(ComputerFilter::All).unwrap();
    let sum = |state: UpdateState| {
        computers
            .iter()
            .map(|c| c.updates.get(state.name()).copied().unwrap_or(0))
            .sum::<u64>()
    };
    (
        computers.len(),
        sum(UpdateState::Installed),
        sum(UpdateState::Failed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_survive_a_wan_outage_and_a_kill() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, approved, _) = catalog_root(dir.path()).await;
    // The WAN: a relay between the branch and the root; stopped, nothing gets through.
    let wan = Relay::start(
        "127.0.0.1:0".parse().unwrap(),
        root.listening().http,
        Link::default(),
    )
    .await
    .unwrap();
    let wan_addr = wan.addr();
    let config = dir.path().join("branch.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"branch\"\ndata_dir = {:?}\n\
             [listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"http://{wan_addr}\"\nsync_interval = \"1h\"\n\
             timeout = \"2s\"\nconnect_timeout = \"1s\"\n\
             [cache]\nprefetch = \"none\"\n[reports]\nrollup_interval = \"2s\"\n{}",
            dir.path().join("branch").to_string_lossy(),
            state_section(&dir.path().join("branch"))
        ),
    )
    .unwrap();
    let mut branch = spawn(&config).await;
    let admin = format!("http://{}", branch.admin);
    status_until(&admin, "first sync", |s| {
        s["upstream"]["sync"]["syncs"].as_u64() >= Some(1)
            && s["upstream"]["sync"]["failed_syncs"] == 0
    })
    .await;

    // The WAN goes down; clients report to the branch all the same.
    wan.stop().await;
    let fleet = wua::Fleet {
        server: format!("http://{}", branch.http),
        content_server: None,
        clients: CLIENTS,
        concurrency: 32,
        group: None,
        download: false,
        report: true,
        seed: 7,
        rescans: 0,
        fail_every: 4,
        rate: None,
        rescan_rate: None,
        accepts: wsus_edge::http::coding::Coding::Xpress,
        drivers: None,
    };
    let outcome = wua::run(&fleet).await;
    assert!(outcome.failures.is_empty(), "{:?}", &outcome.failures[..1]);
    assert_eq!(outcome.scans, CLIENTS);
    // Each client was offered the approved updates and reported every fourth failed.
    assert_eq!(outcome.offered, CLIENTS * approved.len());

    // Killed during the outage, started again.
    branch.child.kill().unwrap();
    branch.child.wait().unwrap();
    let acknowledged = totals(&Journal::open(&database(&dir.path().join("branch"))).unwrap());
    let per_client = approved.len() as u64;
    assert_eq!(
        acknowledged,
        (
            CLIENTS,
            CLIENTS as u64 * (per_client - per_client / 4),
            CLIENTS as u64 * (per_client / 4)
        )
    );
    // Nothing crossed the WAN while it was down.
    let reports = root.app.reports.clone();
    let at_root = tokio::task::spawn_blocking(move || totals(&reports.lock().unwrap()))
        .await
        .unwrap();
    assert_eq!(at_root, (0, 0, 0));
    let mut branch = spawn(&config).await;
    let wan = Relay::start(wan_addr, root.listening().http, Link::default())
        .await
        .unwrap();

    // The WAN is back: the rollup brings everything, once.
    let reports = root.app.reports.clone();
    let everything = within(Duration::from_secs(120), async || {
        let journal = reports.clone();
        let at_root = tokio::task::spawn_blocking(move || totals(&journal.lock().unwrap()))
            .await
            .unwrap();
        if at_root == acknowledged {
            Ok(())
        } else {
            Err(at_root)
        }
    })
    .await;
    if let Err(at_root) = everything {
        panic!(
            "the root holds {at_root:?} of {acknowledged:?}; the branch said:\n{}",
            std::fs::read_to_string(config.with_extension("log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.contains("wsus_edge::access"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // Per update, the same numbers at both ends.
    let branch_journal = Journal::open(&database(&dir.path().join("branch"))).unwrap();
    let root_journal = Journal::open(&database(&dir.path().join("root"))).unwrap();
    for update in &approved {
        let count = |j: &Journal| {
            let mut c: Vec<(UpdateState, u64)> = j
                .update_counts(*update)
                .unwrap()
                .into_iter()
                .map(|(_, s, n)| (s, n))
                .collect();
            c.sort();
            c
        };
        assert_eq!(
            count(&root_journal),
            count(&branch_journal),
            "update {update}"
        );
    }
    branch.child.kill().unwrap();
    branch.child.wait().unwrap();
    wan.stop().await;
    root.shutdown(Duration::from_secs(1)).await;
}
