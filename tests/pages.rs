//! The status pages as a person sees them: headless Chromium (Debian's package, driven over the
//! DevTools protocol by tests/browser/check_pages.py) opens a root's branch list, follows the
//! links to a branch's computers, a computer's updates, an update's computers and the update
//! list (searched from its own form), and a branch not heard from for hours shows as stale.
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
    assert!(stdout.matches("ok   ").count() >= 20, "{stdout}");
    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}

/// An administrator signs in in the browser, filters the updates by classification, approves
/// two of them for a group with a deadline; a computer of that group is offered them at its
/// next scan, and the audit log names who did it (checked by the script in the page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_approves_from_the_browser() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, "browser-token\n").unwrap();
    let extra = format!("[admin]\ntoken_file = {:?}\n", tokens.to_string_lossy());
    let (root, _, _) = catalog_root_with(dir.path(), &extra).await;
    let soap = wua::soap_client();
    let base = format!("http://{}", root.listening().http);
    let machine = wua::Machine::new(41, Some("Ring 1"));
    let before = wua::scan(&soap, &base, &machine).await.unwrap();

    let stdout = python_checks(
        "browser",
        "check_approvals.py",
        vec![
            format!("http://{}", root.listening().admin),
            "browser-token".into(),
            "Security Updates".into(),
            "Ring 1".into(),
            "2027-01-15T18:00".into(),
        ],
    )
    .await;
    let approved: Vec<Guid> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("approved "))
        .map(|id| Guid::parse(id).unwrap())
        .collect();
    assert_eq!(approved.len(), 2, "{stdout}");

    // Served at once: the deployments with their deadline, and offered to the group's
    // computers at their next scan.
    let catalog = root.app.served.catalog();
    let ring = catalog.group_by_name("Ring 1").unwrap().id;
    let deadline = wsus_edge::soap::xsd::parse_datetime("2027-01-15T18:00:00Z");
    for id in &approved {
        let revision = catalog.latest(*id).unwrap().id;
        assert!(
            catalog
                .deployments
                .iter()
                .any(|d| d.revision == revision && d.group == ring && d.deadline == deadline),
            "{id}"
        );
    }
    let after = wua::rescan(&soap, &base, &machine, &before.cache)
        .await
        .unwrap();
    let offered: std::collections::BTreeSet<Guid> = before
        .offered
        .iter()
        .chain(&after.offered)
        .map(|o| o.update_id)
        .chain(
            after
                .changed
                .iter()
                .filter(|(_, action)| action == "Install")
                .filter_map(|(r, _)| catalog.revision(*r).map(|r| r.update_id)),
        )
        .collect();
    for id in &approved {
        assert!(offered.contains(id), "{id} offered to Ring 1: {offered:?}");
    }
    root.shutdown(Duration::from_secs(1)).await;
}
