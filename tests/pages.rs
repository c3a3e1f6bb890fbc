//! The status pages as a person sees them: headless Chromium (Debian's package, driven over the
//! DevTools protocol by tests/browser/check_pages.py) opens a root's branch list, follows the
//! links to a branch's computers, a computer's updates and the update compliance view, and a
//! branch not heard from for hours shows as stale.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use wsus_edge::catalog::Guid;
use wsus_edge::simulate::wua;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_browses_branches_computers_and_updates() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, _, _) = catalog_root(dir.path()).await;
    let branch = downstream(dir.path(), "branch", &root).await;
    replica_until(&branch, |s| s.syncs >= 1 && s.failed_syncs == 0).await;
    let soap = wua::soap_client();
    let base = format!("http://{}", branch.listening().http);
    let machine = wua::Machine::new(7, None);
    let mut scan = wua::scan(&soap, &base, &machine).await.unwrap();
    // Every third update fails: the computer has installed and failed updates.
    wua::report(&soap, &base, &machine, &mut scan, 3)
        .await
        .unwrap();
    rolled_up(&branch).await;
    let offered = scan.offered.len();
    let approved = root
        .app
        .served
        .catalog()
        .update_counts(&Default::default(), |_| {
            wsus_edge::catalog::FileState::Present
        })
        .approved;

    // A branch last heard of long ago.
    wsus_edge::state::Journal::open(&database(&dir.path().join("root")))
        .unwrap()
        .downstream_seen(
            &Guid::random().to_string(),
            "10.9.9.9",
            &wsus_edge::report::DownstreamSeen::Authorized {
                name: "old-branch.example".into(),
            },
            1000,
        )
        .unwrap();

    let stdout = python_checks(
        "browser",
        "check_pages.py",
        vec![
            format!("http://{}", root.listening().admin),
            branch.app.served.server_id().to_string(),
            machine.dns_name.clone(),
            "old-branch.example".into(),
            approved.to_string(),
            (offered - offered / 3).to_string(),
            (offered / 3).to_string(),
        ],
    )
    .await;
    assert!(stdout.matches("ok   ").count() >= 12, "{stdout}");
    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}
