//! Downstream servers sync from their upstream with MS-WSUSSS, in three tiers on loopback
//! (root → regional → branch): the catalog, groups and approvals arrive with the same ids,
//! approved content is prefetched before any client asks, later syncs carry only the changes,
//! and taken-back approvals and declines stop the offers.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::pki::{ca, leaf};
use common::*;
use wsus_edge::catalog::{Action, Catalog, Decision, Guid};
use wsus_edge::node::Running;
use wsus_edge::simulate::{self, wua};
use wsus_edge::state::Store;
use wsus_edge::testkit::generate::{self, Generated};
use wsus_edge::wsusss::replica::ReplicaStatus;
use wsus_edge::wsusss::sync::approved_files;

/// A root with a generated catalog and its payloads: the first 4 deployable updates approved
/// for All Computers, the next 6 for "Ring 1".
async fn root(dir: &Path, extra: &str) -> (Running, Generated) {
    root_with(dir, extra, false).await
}

/// [`root`], with an HTTPS (and HTTP/3) listener when `https`.
async fn root_with(dir: &Path, extra: &str, https: bool) -> (Running, Generated) {
    let data = dir.join("root");
    let payloads = dir.join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    let g = generate::generate(40, 7, 16 << 20, &payloads).unwrap();
    wsus_edge::content::import_dir(&data, &payloads).unwrap();
    let mut store = Store::open(&database(&data)).unwrap();
    store.import(&g.documents).unwrap();
    store.add_group("Ring 1", None).unwrap();
    let catalog = store.load().unwrap();
    let install = Decision::Approve(Action::Install);
    store
        .decide(
            &catalog,
            Some(&g.deployable[..4]),
            "All Computers",
            install,
            None,
        )
        .unwrap();
    store
        .decide(
            &catalog,
            Some(&g.deployable[4..10]),
            "Ring 1",
            install,
            None,
        )
        .unwrap();
    drop(store);
    let mut config = node_config(&data, None, "", extra);
    if https {
        config.listen.https = Some("127.0.0.1:0".parse().unwrap());
    }
    (start(&config).await, g)
}

/// A replica of `upstream` that syncs at start (and hourly).
async fn replica(dir: &Path, name: &str, upstream: &Running, extra: &str) -> Running {
    branch_with(
        &dir.join(name),
        &format!("http://{}", upstream.listening().http),
        "sync_interval = \"1h\"\ntimeout = \"10s\"\nconnect_timeout = \"1s\"",
        extra,
    )
    .await
}

/// Synced `n` times with success, and the approved content all present after that.
async fn synced(node: &Running, n: u64) -> ReplicaStatus {
    replica_until(node, |s| {
        s.syncs - s.failed_syncs >= n
            && s.last_prefetch
                .as_ref()
                .is_some_and(|p| p.failed == 0 && p.present + p.fetched == p.files)
            && s.last_prefetch.as_ref().map(|p| p.files)
                == Some(approved_files(&catalog_of(node)).len())
    })
    .await
}

fn catalog_of(node: &Running) -> std::sync::Arc<Catalog> {
    node.app.served.catalog()
}

fn identities(c: &Catalog) -> BTreeSet<(Guid, u32)> {
    c.revisions()
        .iter()
        .map(|r| (r.update_id, r.revision_number))
        .collect()
}

/// Every approval as servers share it: GUID, update, revision, group, action.
fn approvals(c: &Catalog) -> BTreeSet<(Guid, Guid, u32, Guid, &'static str)> {
    c.deployments
        .iter()
        .map(|d| {
            let r = c.revision(d.revision).unwrap();
            (
                d.guid,
                r.update_id,
                r.revision_number,
                d.group,
                d.action.as_str(),
            )
        })
        .collect()
}

fn offered(scan: &wua::Scan) -> BTreeSet<Guid> {
    scan.offered.iter().map(|o| o.update_id).collect()
}

fn base(node: &Running) -> String {
    format!("http://{}", node.listening().http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tiers_replicate_the_catalog_and_prefetch_approved_content() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, g) = root(dir.path(), "").await;
    let regional = replica(dir.path(), "regional", &root, "").await;
    let first = synced(&regional, 1).await;
    let branch = replica(dir.path(), "branch", &regional, "").await;
    let status = synced(&branch, 1).await;

    // The same revisions, groups and approvals (GUIDs included) at every tier.
    let (r, m, b) = (
        catalog_of(&root),
        catalog_of(&regional),
        catalog_of(&branch),
    );
    assert_eq!(identities(&m), identities(&r));
    assert_eq!(identities(&b), identities(&r));
    assert_eq!(approvals(&b), approvals(&r));
    assert_eq!(approvals(&r).len(), 10);
    let groups = |c: &Catalog| -> BTreeSet<(Guid, String)> {
        c.groups.iter().map(|g| (g.id, g.name.clone())).collect()
    };
    assert_eq!(groups(&b), groups(&r));
    let sync = status.last_sync.unwrap();
    assert_eq!(sync.fetched, r.len(), "{sync:?}");
    assert_eq!(sync.applied.new_revisions, r.len());
    assert_eq!(sync.applied.deployments, 10);
    assert!(first.last_sync.unwrap().calls >= 8);

    // Approved content is at the branch before any client asked; it crossed each tier once.
    let files = approved_files(&b);
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    assert!(files.len() >= 4 && total > 0);
    for (path, _) in &files {
        let info = branch.store().describe(&path.digest).expect("prefetched");
        assert_eq!(info.state, "committed", "{}", path.url_path());
    }
    let from_upstream = |n: &Running| n.metrics().upstream_bytes.get();
    assert!(from_upstream(&branch) >= total);
    assert!(
        from_upstream(&branch) < total + total / 10 + (1 << 20),
        "{} bytes for {total}",
        from_upstream(&branch)
    );
    assert!(from_upstream(&regional) >= total);
    assert!(
        root.metrics().served_bytes.get() >= total,
        "the root served it once"
    );

    // Clients of the branch are offered what the root approved and download it from the
    // branch's cache, without another byte from upstream.
    let before = from_upstream(&branch);
    let soap = wua::soap_client();
    let http = simulate::http_client();
    let mut scan = wua::scan(&soap, &base(&branch), &wua::Machine::new(1, None))
        .await
        .unwrap();
    assert_eq!(offered(&scan), g.deployable[..4].iter().copied().collect());
    let ring_machine = wua::Machine::new(2, Some("Ring 1"));
    let ring = wua::scan(&soap, &base(&branch), &ring_machine)
        .await
        .unwrap();
    let at_root = wua::scan(&soap, &base(&root), &ring_machine).await.unwrap();
    assert_eq!(offered(&ring), offered(&at_root));
    assert!(offered(&ring).len() > 4);
    // The same revision numbers as the root, under the branch's own revision ids.
    for o in &scan.offered {
        assert!(r.by_identity(o.update_id, o.revision_number).is_some());
    }
    wua::download(&http, &mut scan, 1, None).await.unwrap();
    assert_eq!(scan.downloads_verified, scan.files.len());
    assert!(!scan.files.is_empty());
    assert_eq!(
        from_upstream(&branch),
        before,
        "served from the prefetched cache"
    );

    // Each upstream recorded its downstream server and its sync.
    let seen = root.app.wsusss.downstreams().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].last_sync.is_some());
    assert_eq!(regional.app.wsusss.downstreams().unwrap().len(), 1);

    for n in [branch, regional, root] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_syncs_carry_only_changes_and_revocations_stop_offers() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, g) = root(dir.path(), "").await;
    let branch = replica(
        dir.path(),
        "branch",
        &root,
        "[cache]\nprefetch = \"none\"\n",
    )
    .await;
    replica_until(&branch, |s| s.syncs >= 1).await;
    let scan = |n: u64| {
        let base = base(&branch);
        async move {
            let soap = wua::soap_client();
            offered(
                &wua::scan(&soap, &base, &wua::Machine::new(n, None))
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(scan(1).await, g.deployable[..4].iter().copied().collect());

    // One more approval at the root: the next sync fetches no document, one deployment.
    let extra = g.deployable[12];
    root.app
        .served
        .change(|s, c| {
            s.decide(
                c,
                Some(&[extra]),
                "All Computers",
                Decision::Approve(Action::Install),
                None,
            )
        })
        .unwrap();
    branch.app.replica.as_ref().unwrap().sync_now();
    let s = replica_until(&branch, |s| s.syncs >= 2).await;
    let sync = s.last_sync.unwrap();
    assert_eq!(s.failed_syncs, 0, "{:?}", s.last_error);
    assert_eq!(
        (sync.updates_listed, sync.fetched, sync.deployments_received),
        (0, 0, 1),
        "{sync:?}"
    );
    assert_eq!(sync.applied.deployments, 1);
    let mut want: BTreeSet<Guid> = g.deployable[..4].iter().copied().collect();
    want.insert(extra);
    assert_eq!(scan(2).await, want);

    // An approval that goes live tomorrow (GoLiveTime): passed down now, not offered yet.
    let tomorrow = g.deployable[13];
    let now = wsus_edge::clock::unix_now();
    let go_live = now + 86_400;
    let approved = root
        .app
        .served
        .change(|s, c| {
            let revisions = c.approvable(Some(&[tomorrow]))?;
            s.approve_from(
                &revisions,
                wsus_edge::catalog::ALL_COMPUTERS,
                Action::Install,
                None,
                now,
                go_live,
            )
        })
        .unwrap();
    assert_eq!(approved, 1);
    branch.app.replica.as_ref().unwrap().sync_now();
    let s = replica_until(&branch, |s| s.syncs >= 3).await;
    assert_eq!(s.last_sync.unwrap().deployments_received, 1);
    let kept = catalog_of(&branch);
    assert!(
        kept.deployments.iter().any(|d| d.go_live == go_live),
        "the branch holds it, with its go-live time"
    );
    assert_eq!(scan(4).await, want, "not offered before it goes live");

    // An approval taken back and an update declined at the root: the branch stops offering
    // both, and knows the decline.
    let (revoked, declined) = (g.deployable[0], g.deployable[1]);
    root.app
        .served
        .change(|s, c| {
            s.decide(
                c,
                Some(&[revoked]),
                "All Computers",
                Decision::NotApproved,
                None,
            )?;
            s.decline(c, &[declined], true)
        })
        .unwrap();
    branch.app.replica.as_ref().unwrap().sync_now();
    let s = replica_until(&branch, |s| s.syncs >= 4).await;
    let sync = s.last_sync.unwrap();
    assert_eq!(sync.dead_received, 2, "{sync:?}");
    assert_eq!(sync.applied.removed_deployments, 2);
    assert_eq!(sync.applied.hidden, 1);
    want.remove(&revoked);
    want.remove(&declined);
    assert_eq!(scan(3).await, want);
    let store = Store::open(&database(&dir.path().join("branch"))).unwrap();
    assert_eq!(
        store.deployment_set(None, i64::MAX).unwrap().hidden,
        vec![declined]
    );
    // The branch serves its own downstream servers what it was given (GUIDs unchanged).
    assert_eq!(
        approvals(&catalog_of(&branch)),
        approvals(&catalog_of(&root))
    );

    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}

/// The keys of encrypted files (a feature update's) are held at the root and reach a client of
/// the branch two tiers down: each downstream asks its upstream with GetUpdateDecryptionData
/// for the files marked encrypted whose keys it lacks, before it applies the documents, and
/// asks again on later syncs until it has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_client_gets_the_decryption_keys_the_root_holds() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, g) = root(dir.path(), "").await;
    assert!(g.encrypted.len() >= 2 && g.keys.len() == g.encrypted.len());
    // The root holds the key of the first encrypted update only, at first; both are approved.
    root.app
        .served
        .change(|s, c| {
            s.set_keys(&g.keys[..1])?;
            s.decide(
                c,
                Some(&g.encrypted),
                "All Computers",
                Decision::Approve(Action::Install),
                None,
            )
        })
        .unwrap();
    let regional = replica(dir.path(), "regional", &root, "").await;
    synced(&regional, 1).await;
    let branch = replica(dir.path(), "branch", &regional, "").await;
    let status = synced(&branch, 1).await;
    let sync = status.last_sync.unwrap();
    let encrypted_revisions = |c: &Catalog| {
        c.revisions()
            .iter()
            .filter(|r| r.files.iter().any(|f| f.encrypted))
            .count()
    };
    let revisions = encrypted_revisions(&catalog_of(&root));
    assert!(revisions >= g.encrypted.len());
    assert_eq!(encrypted_revisions(&catalog_of(&branch)), revisions);
    assert_eq!(
        (sync.keys_asked, sync.keys_received),
        (revisions, 1),
        "{sync:?}"
    );

    // A client of the branch asks GetExtendedUpdateInfo2 for the encrypted updates it is
    // offered, as Windows does before it installs them.
    let soap = wua::soap_client();
    let machine = wua::Machine::new(5, None);
    let scan = wua::scan(&soap, &base(&branch), &machine).await.unwrap();
    let asked: Vec<(Guid, u32)> = scan
        .offered
        .iter()
        .filter(|o| g.encrypted.contains(&o.update_id))
        .map(|o| (o.update_id, o.revision_number))
        .collect();
    assert_eq!(
        asked.len(),
        g.encrypted.len(),
        "both encrypted updates are offered"
    );
    let keys_at = |node: &Running| {
        let base = base(node);
        let asked = asked.clone();
        let machine = machine.clone();
        async move {
            let soap = wua::soap_client();
            let cookie = wua::client_cookie(&soap, &base, &machine).await.unwrap();
            let identities: String = asked
                .iter()
                .map(|(id, n)| {
                    format!(
                        "<UpdateIdentity><UpdateID>{id}</UpdateID>\
                         <RevisionNumber>{n}</RevisionNumber></UpdateIdentity>"
                    )
                })
                .collect();
            let inner = format!(
                "{}<updateIDs>{identities}</updateIDs><infoTypes>\
                 <XmlUpdateFragmentType>FileUrl</XmlUpdateFragmentType>\
                 <XmlUpdateFragmentType>FileDecryption</XmlUpdateFragmentType></infoTypes>\
                 <locales><string>en-US</string></locales>",
                wua::request::cookie_xml("cookie", &cookie)
            );
            let (status, _, op) = soap_call_to(
                &format!("{base}/ClientWebService/client.asmx"),
                wsus_edge::wusp::CLIENT_NS,
                "GetExtendedUpdateInfo2",
                &inner,
                None,
            )
            .await;
            assert_eq!(status, 200);
            let op = op.unwrap();
            let result = op.child("GetExtendedUpdateInfo2Result").unwrap();
            let read = |list: &str, item: &str| -> BTreeSet<(Vec<u8>, Vec<u8>)> {
                let Some(list) = result.child(list) else {
                    return BTreeSet::new();
                };
                list.children_named(item)
                    .map(|f| {
                        let b64 = |name: &str| {
                            wsus_edge::catalog::base64_decode(f.child_text(name).unwrap()).unwrap()
                        };
                        let key = b64("DecryptionKey");
                        let security = f.child("SecurityData").unwrap();
                        let security: Vec<_> = security.children_named("base64Binary").collect();
                        assert_eq!(security.len(), 1, "SecurityData holds the key once");
                        assert_eq!(
                            wsus_edge::catalog::base64_decode(security[0].text()).unwrap(),
                            key
                        );
                        (b64("FileDigest"), key)
                    })
                    .collect()
            };
            let keys = read("FileDecryptionData", "FileDecryption");
            assert_eq!(keys, read("FileDecryptionData2", "FileDecryption2"));
            keys
        }
    };
    let held = |n: usize| -> BTreeSet<(Vec<u8>, Vec<u8>)> {
        g.keys[..n]
            .iter()
            .map(|(sha1, key)| (sha1.to_vec(), key.clone()))
            .collect()
    };
    assert_eq!(keys_at(&branch).await, held(1));
    assert_eq!(keys_at(&root).await, held(1));

    // The root gets the second key: the next syncs carry it down, and ask for nothing once
    // every key is held.
    root.app.served.change(|s, _| s.set_keys(&g.keys)).unwrap();
    for (node, n) in [(&regional, 2), (&branch, 2), (&regional, 3), (&branch, 3)] {
        node.app.replica.as_ref().unwrap().sync_now();
        let s = replica_until(node, |s| s.syncs >= n).await;
        assert_eq!(s.failed_syncs, 0, "{:?}", s.last_error);
        let sync = s.last_sync.unwrap();
        let expected = if n == 2 { (revisions - 1, 1) } else { (0, 0) };
        // The first encrypted update may have two revisions: the ones still lacking a key.
        assert_eq!(
            (sync.keys_asked > 0, sync.keys_received),
            (expected.0 > 0, expected.1),
            "{sync:?}"
        );
    }
    assert_eq!(keys_at(&branch).await, held(2));

    for n in [branch, regional, root] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}

/// Driver updates travel down like software (MS-WSUSSS lists them in the second revision
/// pass), with their approvals: a branch client's driver pass gets what the root's would, and
/// a driver approved at the root later reaches the branch with the next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_approvals_reach_the_branch_by_sync() {
    use wsus_edge::testkit::drivers::{Metadata, document, windows_11_laptop};
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = root(dir.path(), "").await;
    let display = Guid(0xd15b_1a70);
    let fingerprint = Guid(0x00f1_f6e4);
    // As good a feature score as the installed driver's (F6), and newer.
    let mut gpu = Metadata::new(
        "PCI\\VEN_8086&DEV_46A8",
        "2024-01-12",
        "31.0.101.5186",
        "Intel",
    );
    gpu.feature_scores = vec![("AMD64.10.0".into(), 0xF6)];
    let drivers = [
        document(
            display,
            100,
            "Intel - Display - 31.0.101.5186",
            &[],
            &[gpu],
            None,
        ),
        document(
            fingerprint,
            100,
            "Goodix - Biometric - 3.12.804.1",
            &[],
            &[Metadata::new(
                "USB\\VID_27C6&PID_63AC",
                "2022-01-01",
                "3.12.804.1",
                "Goodix",
            )],
            None,
        ),
    ];
    let approve = |update: Guid| {
        move |s: &mut Store, c: &Catalog| {
            s.decide(
                c,
                Some(&[update]),
                "All Computers",
                Decision::Approve(Action::Install),
                None,
            )
        }
    };
    root.app.served.change(|s, _| s.import(&drivers)).unwrap();
    root.app.served.change(approve(display)).unwrap();
    let branch = replica(dir.path(), "branch", &root, "").await;
    synced(&branch, 1).await;
    let machine = wua::Machine::new(9, None);
    let (spec, rest) = windows_11_laptop().parameters();
    let drivers_at = |node: &Running| {
        let base = base(node);
        let (spec, rest, machine) = (spec.clone(), rest.clone(), machine.clone());
        let catalog = catalog_of(node);
        async move {
            let soap = wua::soap_client();
            wua::scan(&soap, &base, &machine).await.unwrap();
            let cookie = wua::client_cookie(&soap, &base, &machine).await.unwrap();
            let inner = format!(
                "{}<parameters><ExpressQuery>false</ExpressQuery>{spec}\
                 <SkipSoftwareSync>true</SkipSoftwareSync>{rest}</parameters>",
                wua::request::cookie_xml("cookie", &cookie)
            );
            let (status, _, op) = soap_call_to(
                &format!("{base}/ClientWebService/client.asmx"),
                wsus_edge::wusp::CLIENT_NS,
                "SyncUpdates",
                &inner,
                None,
            )
            .await;
            assert_eq!(status, 200);
            let op = op.unwrap();
            op.child("SyncUpdatesResult")
                .unwrap()
                .child("NewUpdates")
                .into_iter()
                .flat_map(|n| n.children_named("UpdateInfo"))
                .map(|u| {
                    let id: u32 = u.child_text("ID").unwrap().parse().unwrap();
                    catalog.revision(id).unwrap().update_id
                })
                .collect::<BTreeSet<Guid>>()
        }
    };
    assert_eq!(drivers_at(&branch).await, BTreeSet::from([display]));
    assert_eq!(drivers_at(&branch).await, drivers_at(&root).await);

    root.app.served.change(approve(fingerprint)).unwrap();
    branch.app.replica.as_ref().unwrap().sync_now();
    let s = replica_until(&branch, |s| s.syncs >= 2).await;
    assert_eq!(s.failed_syncs, 0, "{:?}", s.last_error);
    assert_eq!(s.last_sync.unwrap().deployments_received, 1);
    assert_eq!(
        drivers_at(&branch).await,
        BTreeSet::from([display, fingerprint])
    );
    for n in [branch, root] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}

/// A branch that syncs drivers on demand holds only the drivers for devices its clients
/// listed: none before any client scanned, then after the next sync exactly the root's
/// drivers for those devices (MS-WSUSSS GetDriverIdList), so its clients get what the root's
/// would; software is synced whole all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_syncs_only_the_drivers_its_clients_need() {
    use wsus_edge::catalog::UpdateType;
    use wsus_edge::testkit::drivers::generate_drivers;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = root(dir.path(), "").await;
    let drivers = generate_drivers(240, 29);
    root.app
        .served
        .change(|s, _| s.import(&drivers.documents))
        .unwrap();
    let ids: Vec<Guid> = drivers.drivers.iter().map(|d| d.update_id).collect();
    root.app
        .served
        .change(|s, c| {
            s.decide(
                c,
                Some(&ids),
                "All Computers",
                Decision::Approve(Action::Install),
                None,
            )
        })
        .unwrap();
    let branch = branch_with(
        &dir.path().join("branch"),
        &base(&root),
        "sync_interval = \"1h\"\ntimeout = \"10s\"\nconnect_timeout = \"1s\"\n\
         drivers = \"on-demand\"",
        "[cache]\nprefetch = \"none\"\n",
    )
    .await;
    let first = replica_until(&branch, |s| s.syncs >= 1).await;
    assert_eq!(first.failed_syncs, 0, "{:?}", first.last_error);
    let of_type = |c: &Catalog, t: UpdateType| -> BTreeSet<(Guid, u32)> {
        c.revisions()
            .iter()
            .filter(|r| r.update_type == t)
            .map(|r| (r.update_id, r.revision_number))
            .collect()
    };
    let (r, b) = (catalog_of(&root), catalog_of(&branch));
    assert_eq!(
        of_type(&b, UpdateType::Software),
        of_type(&r, UpdateType::Software)
    );
    assert_eq!(of_type(&r, UpdateType::Driver).len(), 240);
    assert!(
        of_type(&b, UpdateType::Driver).is_empty(),
        "no client listed a device yet"
    );

    // A client scans: no driver yet, but the branch notes its devices; the next sync brings
    // the root's drivers for them, and the client gets what it would get at the root.
    let pc = drivers.pc(4);
    let machine = wua::Machine::new(4, None).with_pc(pc.clone());
    let soap = wua::soap_client();
    let drivers_at = |node: &Running| {
        let (base, machine, soap) = (base(node), machine.clone(), soap.clone());
        async move {
            let scan = wua::scan(&soap, &base, &machine).await.unwrap();
            scan.drivers
                .iter()
                .map(|(o, _)| o.update_id)
                .collect::<BTreeSet<Guid>>()
        }
    };
    assert!(drivers_at(&branch).await.is_empty());
    let device_ids: BTreeSet<String> = pc
        .devices
        .iter()
        .flat_map(|d| d.hardware_ids.iter().chain(&d.compatible_ids))
        .map(|i| i.to_lowercase())
        .collect();
    let needed: BTreeSet<Guid> = drivers
        .drivers
        .iter()
        .filter(|d| device_ids.contains(&d.metadata.hardware_id.to_lowercase()))
        .map(|d| d.update_id)
        .collect();
    assert!(!needed.is_empty());
    until("the device ids kept", Duration::from_secs(10), async || {
        let kept = wsus_edge::state::Journal::open(&database(&dir.path().join("branch")))
            .unwrap()
            .device_ids()
            .unwrap()
            .len();
        if kept == device_ids.len() {
            Ok(())
        } else {
            Err(format!("{kept} of {}", device_ids.len()))
        }
    })
    .await;
    branch.app.replica.as_ref().unwrap().sync_now();
    let s = replica_until(&branch, |s| s.syncs >= 2).await;
    assert_eq!(s.failed_syncs, 0, "{:?}", s.last_error);
    let sync = s.last_sync.unwrap();
    assert_eq!(sync.device_ids_asked, device_ids.len(), "{sync:?}");
    assert_eq!(sync.drivers_listed, needed.len(), "{sync:?}");
    let held: BTreeSet<Guid> = of_type(&catalog_of(&branch), UpdateType::Driver)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(held, needed);
    let at_branch = drivers_at(&branch).await;
    assert!(!at_branch.is_empty());
    assert_eq!(at_branch, drivers_at(&root).await);

    // Nothing changed: the next sync lists no driver and fetches nothing.
    branch.app.replica.as_ref().unwrap().sync_now();
    let s = replica_until(&branch, |s| s.syncs >= 3).await;
    let sync = s.last_sync.unwrap();
    assert_eq!((sync.drivers_listed, sync.fetched), (0, 0), "{sync:?}");

    // `wsus-edge sync` follows the same key: a fresh node's sync fetches no driver.
    let fresh = dir.path().join("fresh");
    let config = dir.path().join("fresh.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"fresh\"\ndata_dir = {:?}\n[upstream]\nurl = {:?}\n\
             drivers = \"on-demand\"\n{}",
            fresh.to_string_lossy(),
            base(&root),
            state_section(&fresh)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsus-edge"))
        .args(["--config", &config.to_string_lossy(), "sync"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let catalog = Store::open(&database(&fresh)).unwrap().load().unwrap();
    assert!(of_type(&catalog, UpdateType::Driver).is_empty());
    assert_eq!(
        of_type(&catalog, UpdateType::Software),
        of_type(&r, UpdateType::Software)
    );
    for n in [branch, root] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}

/// Between wsus-edge nodes the sync and the prefetch travel over HTTP/3 as well, and a root
/// with mutual TLS refuses a branch without a certificate of its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_over_http3_with_mutual_tls() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let authority = ca(dir.path(), "estate-ca");
    let (cert, key) = leaf(dir.path(), &authority, "root");
    let (branch_cert, branch_key) = leaf(dir.path(), &authority, "branch");
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
        cert.to_string_lossy(),
        key.to_string_lossy(),
        authority.pem.to_string_lossy()
    );
    let (root, _) = root_with(dir.path(), &tls, true).await;
    let upstream = format!("https://{}", root.listening().https.unwrap());
    let keys = |with_cert: bool| {
        let mut k = format!(
            "sync_interval = \"1h\"\ntimeout = \"5s\"\nconnect_timeout = \"2s\"\n\
             transport = \"quic\"\nca = {:?}\n",
            authority.pem.to_string_lossy()
        );
        if with_cert {
            k.push_str(&format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                branch_cert.to_string_lossy(),
                branch_key.to_string_lossy()
            ));
        }
        k
    };

    let stranger = branch_with(&dir.path().join("stranger"), &upstream, &keys(false), "").await;
    let s = replica_until(&stranger, |s| s.failed_syncs == 1).await;
    assert!(s.last_error.unwrap().contains("GetAuthConfig"));
    assert!(catalog_of(&stranger).is_empty());
    stranger.shutdown(Duration::from_secs(1)).await;

    let branch = branch_with(&dir.path().join("branch"), &upstream, &keys(true), "").await;
    synced(&branch, 1).await;
    assert_eq!(
        identities(&catalog_of(&branch)),
        identities(&catalog_of(&root))
    );
    assert_eq!(
        approvals(&catalog_of(&branch)),
        approvals(&catalog_of(&root))
    );
    let link = branch.app.upstream.as_ref().unwrap().transport_status();
    assert_eq!(link.last_used, Some("http3"));
    for (path, _) in approved_files(&catalog_of(&branch)) {
        assert_eq!(
            branch.store().describe(&path.digest).unwrap().state,
            "committed"
        );
    }
    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}
