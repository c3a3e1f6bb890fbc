//! The client protocol end to end: a node with a generated catalog and approvals for two target
//! groups, simulated Windows Update Agents of both groups scanning it over SOAP, downloading
//! what they were told to install and reporting.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use wsus_edge::catalog::Guid;
use wsus_edge::node::Running;
use wsus_edge::report::UpdateState;
use wsus_edge::simulate::{self, wua};
use wsus_edge::state::Journal;
use wsus_edge::state::Store;

fn base(node: &Running) -> String {
    format!("http://{}", node.listening().http)
}

fn updates(scan: &wua::Scan) -> BTreeSet<Guid> {
    scan.offered.iter().map(|o| o.update_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_is_offered_its_approvals_and_downloads_them_byte_exact() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, all, ringed) = catalog_root(dir.path()).await;
    let soap = wua::soap_client();
    let http = simulate::http_client();

    let unassigned = wua::Machine::new(1, None);
    let mut scan = wua::scan(&soap, &base(&node), &unassigned).await.unwrap();
    assert_eq!(updates(&scan), all.iter().copied().collect());
    assert!(
        scan.pages >= 3,
        "the prerequisite walk took {} pages",
        scan.pages
    );
    assert!(scan.faults.is_empty(), "{:?}", scan.faults);
    // Every offered update's files came with a URL that downloads byte-exact.
    assert!(!scan.files.is_empty());
    let outcomes = wua::download(&http, &mut scan, 1, None).await.unwrap();
    assert_eq!(outcomes.len(), scan.files.len());
    assert_eq!(
        scan.downloads_verified,
        scan.files.len(),
        "every file hashes to its name"
    );

    // The next scan, from what the client now holds: one page, nothing sent again, nothing
    // out of scope (the cache stays whole).
    let again = wua::rescan(&soap, &base(&node), &unassigned, &scan.cache)
        .await
        .unwrap();
    assert_eq!(again.pages, 1);
    assert!(again.received.is_empty(), "{:?}", again.received);
    assert_eq!(again.cache.installed, scan.cache.installed);
    assert_eq!(again.cache.other, scan.cache.other);
    assert!(!scan.cache.installed.is_empty() && !scan.cache.other.is_empty());
    // Its cookie, renewed by GetCookie as the oldCookie, kept the anchor: no deployment is
    // sent again. A client without one hears of every deployment it holds.
    assert_eq!(again.changed, 0);
    let forgetful = wua::Cache {
        cookie: None,
        ..scan.cache.clone()
    };
    let anew = wua::rescan(&soap, &base(&node), &unassigned, &forgetful)
        .await
        .unwrap();
    assert!(anew.received.is_empty(), "{:?}", anew.received);
    assert!(
        anew.changed >= all.len(),
        "{} deployments sent again for {} approved updates",
        anew.changed,
        all.len()
    );

    let ring_machine = wua::Machine::new(2, Some("Ring 1"));
    let ring_scan = wua::scan(&soap, &base(&node), &ring_machine).await.unwrap();
    let want: BTreeSet<Guid> = all.iter().chain(&ringed).copied().collect();
    assert_eq!(updates(&ring_scan), want);
    // Dependencies were delivered for evaluation, never offered: categories, detectoids.
    assert!(ring_scan.received.iter().any(|o| o.action == "Evaluate"));
    // The members of approved bundles arrive as Bundle.
    let catalog = Store::open(&dir.path().join("root"))
        .unwrap()
        .load()
        .unwrap();
    let mut members = 0;
    for id in &want {
        for m in &catalog.latest(*id).unwrap().bundled {
            let got = ring_scan.received.iter().find(|o| o.revision == *m);
            assert_eq!(got.map(|o| o.action.as_str()), Some("Bundle"));
            members += 1;
        }
    }
    assert!(members > 0, "the approvals include a bundle");

    // Reports are kept before the client hears "true".
    let mut ring_scan = ring_scan;
    let sent = wua::report(&soap, &base(&node), &ring_machine, &mut ring_scan, 3)
        .await
        .unwrap();
    assert_eq!(sent, 2 + want.len());
    let journal = Journal::open(&dir.path().join("root")).unwrap();
    assert_eq!(journal.event_count().unwrap(), sent as u64);
    // Its install events and its status event set each update's state (every third failed).
    let states = journal.computer_updates(&ring_machine.client_id).unwrap();
    let count = |state| states.iter().filter(|(_, s, _)| *s == state).count();
    let failed = want.len() / 3;
    assert_eq!(count(UpdateState::Failed), failed);
    assert_eq!(count(UpdateState::Installed), want.len() - failed);

    // The admin views say the same.
    let admin = |p: &str| format!("http://{}{p}", node.listening().admin);
    let json = |got: &Got| -> serde_json::Value {
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        serde_json::from_slice(&got.body).unwrap()
    };
    let all = json(&get(&admin("/api/v1/computers"), &[]).await);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let failing = json(&get(&admin("/api/v1/computers?state=failed"), &[]).await);
    let failing = failing.as_array().unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0]["client_id"], ring_machine.client_id.as_str());
    assert_eq!(failing[0]["updates"]["failed"], failed);
    assert_eq!(failing[0]["updates"]["installed"], want.len() - failed);
    assert_eq!(failing[0]["up_to_date"], false);
    assert!(failing[0]["last_status"].as_i64().is_some());
    let one = json(
        &get(
            &admin(&format!("/api/v1/computers/{}", ring_machine.client_id)),
            &[],
        )
        .await,
    );
    let states = one["update_states"].as_array().unwrap();
    assert_eq!(states.len(), want.len());
    let failed_update = states.iter().find(|u| u["state"] == "failed").unwrap();
    let update = json(
        &get(
            &admin(&format!(
                "/api/v1/updates/{}/status",
                failed_update["update"].as_str().unwrap()
            )),
            &[],
        )
        .await,
    );
    assert_eq!(update["computers"]["failed"], 1);
    let csv = get(&admin("/api/v1/computers.csv"), &[]).await;
    let csv = String::from_utf8_lossy(&csv.body).into_owned();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("client_id,dns_name,"));
    assert!(csv.contains(&ring_machine.dns_name));
    assert_eq!(
        get(&admin("/api/v1/computers?state=bogus"), &[])
            .await
            .status,
        400
    );
    assert_eq!(
        get(&admin("/api/v1/computers/nobody"), &[]).await.status,
        404
    );
    node.shutdown(Duration::from_secs(1)).await;
}

/// The report journal shares state.db with the catalog: its commits must not make a node load
/// the catalog again (a first scan of a large catalog commits dozens of times), while an
/// approval made by another process must.
#[test]
fn only_catalog_changes_reload_the_catalog() {
    use wsus_edge::catalog::{ALL_COMPUTERS, Action};
    use wsus_edge::report::Computer;
    use wsus_edge::served::Served;
    use wsus_edge::testkit::generate;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let payloads = dir.path().join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    let g = generate::generate(20, 5, 1 << 20, &payloads).unwrap();
    let mut store = Store::open(&data).unwrap();
    store.import(&g.documents).unwrap();
    let service = Served::open(&data).unwrap();
    assert!(!service.reload_if_changed().unwrap(), "nothing changed");

    let mut journal = Journal::open(&data).unwrap();
    let computer = Computer {
        client_id: "c1".into(),
        ..Computer::default()
    };
    journal.register(&computer, 1).unwrap();
    journal.touch_sync("c1", 2).unwrap();
    assert!(
        !service.reload_if_changed().unwrap(),
        "journal commits only"
    );
    assert!(service.catalog().deployments.is_empty());

    let revision = *store.revisions_of(g.deployable[0]).unwrap().last().unwrap();
    store
        .approve(&[revision], ALL_COMPUTERS, Action::Install, None, 3)
        .unwrap();
    assert!(service.reload_if_changed().unwrap(), "an approval");
    assert_eq!(service.catalog().deployments.len(), 1);
    assert!(!service.reload_if_changed().unwrap(), "once");
    let group = store.add_group("Ring 9", None).unwrap();
    assert!(service.reload_if_changed().unwrap(), "a new group");
    assert!(service.catalog().group(group).is_some());
}
