//! The client protocol end to end: a node with a generated catalog and approvals for two target
//! groups, simulated Windows Update Agents of both groups scanning it over SOAP, downloading
//! what they were told to install and reporting.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use wsus_edge::catalog::Guid;
use wsus_edge::catalog::store::Store;
use wsus_edge::report::Journal;
use wsus_edge::server::Running;
use wsus_edge::simulate::{self, wua};

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
    assert_eq!(sent, 1 + want.len());
    let journal = Journal::open(&dir.path().join("root")).unwrap();
    assert_eq!(journal.event_count().unwrap(), sent as u64);
    node.shutdown(Duration::from_secs(1)).await;
}

/// The report journal shares state.db with the catalog: its commits must not make a node load
/// the catalog again (a first scan of a large catalog commits dozens of times), while an
/// approval made by another process must.
#[test]
fn only_catalog_changes_reload_the_catalog() {
    use wsus_edge::catalog::{ALL_COMPUTERS, Action, generate};
    use wsus_edge::report::Computer;
    use wsus_edge::wusp::{Service, Settings};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let payloads = dir.path().join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    let g = generate::generate(20, 5, 1 << 20, &payloads).unwrap();
    let mut store = Store::open(&data).unwrap();
    store.import(&g.documents).unwrap();
    let service = Service::open(&data, Settings::default()).unwrap();
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
