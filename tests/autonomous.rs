//! An autonomous branch (`upstream.mode = "autonomous"`): its catalog follows the root, its
//! target groups and approvals are its own, its status still rolls up; declines follow the
//! root's only when `upstream.declines = "upstream"`; and a switch back to replica takes the
//! root's approvals in place of the branch's own.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use wsus_edge::catalog::Guid;
use wsus_edge::node::Running;
use wsus_edge::simulate::wua;

const TOKEN: &str = "admin-token";

/// An `[admin]` section whose token file (in `dir`) holds [`TOKEN`].
fn admin_section(dir: &Path) -> String {
    let file = dir.join("admin-token");
    std::fs::write(&file, TOKEN).unwrap();
    format!("[admin]\ntoken_file = {:?}\n", file.to_string_lossy())
}

/// A downstream of `root` in `mode` that syncs at start (and when asked), with an admin token.
async fn branch(dir: &Path, name: &str, root: &Running, upstream: &str) -> Running {
    let node = branch_with(
        &dir.join(name),
        &format!("http://{}", root.listening().http),
        &format!("sync_interval = \"1h\"\nconnect_timeout = \"1s\"\n{upstream}"),
        &admin_section(dir),
    )
    .await;
    replica_until(&node, |s| s.syncs >= 1 && s.failed_syncs == 0).await;
    node
}

/// Sync now and wait for it to succeed.
async fn synced(node: &Running) {
    let replica = node.app.replica.as_ref().unwrap();
    let before = replica.status().borrow().syncs;
    replica.sync_now();
    let status = replica_until(node, |s| s.syncs > before).await;
    assert_eq!(status.last_error, None);
}

/// POST `body` to the admin API `path` of `node` with the token.
async fn change(node: &Running, path: &str, body: &str) -> Got {
    let url = format!("http://{}{path}", node.listening().admin);
    call("POST", &url, Some(TOKEN), body).await
}

fn ids(updates: &[Guid]) -> String {
    serde_json::to_string(&updates.iter().map(Guid::to_string).collect::<Vec<_>>()).unwrap()
}

/// The update ids a new client of `node` is offered to install.
async fn offered(node: &Running, seed: u64) -> BTreeSet<Guid> {
    let soap = wua::soap_client();
    let base = format!("http://{}", node.listening().http);
    let machine = wua::Machine::new(seed, None);
    let scan = wua::scan(&soap, &base, &machine).await.unwrap();
    scan.offered.iter().map(|o| o.update_id).collect()
}

/// The deployment GUIDs of a node's catalog in service.
fn deployments(node: &Running) -> BTreeSet<Guid> {
    let catalog = node.app.served.catalog();
    catalog.deployments.iter().map(|d| d.guid).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autonomous_branch_approves_for_itself_and_still_follows_and_reports_to_the_root() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, all, ringed) = catalog_root_with(dir.path(), &admin_section(dir.path())).await;
    let approved_at_root: BTreeSet<Guid> = all.iter().chain(&ringed).copied().collect();
    let node = branch(dir.path(), "branch", &root, "mode = \"autonomous\"").await;

    // The catalog is the root's; its groups and approvals are not.
    let root_catalog = root.app.served.catalog();
    assert_eq!(node.app.served.catalog().len(), root_catalog.len());
    assert!(deployments(&node).is_empty());
    assert!(node.app.served.catalog().group_by_name("Ring 1").is_none());
    assert!(offered(&node, 1).await.is_empty());

    // Two updates the root did not approve, approved here for a group made here.
    let candidates: Vec<Guid> = root_catalog
        .approvable(None)
        .unwrap()
        .iter()
        .filter_map(|&r| root_catalog.revision(r).map(|r| r.update_id))
        .filter(|id| !approved_at_root.contains(id))
        .collect();
    let (x, y, z) = (candidates[0], candidates[1], candidates[2]);
    let made = change(&node, "/api/v1/groups", r#"{"name": "Branch Ring"}"#).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    for group in ["All Computers", "Branch Ring"] {
        let body = format!(r#"{{"group": "{group}", "updates": {}}}"#, ids(&[x, y]));
        let got = change(&node, "/api/v1/approvals", &body).await;
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(json(&got)["approved"], 2);
    }
    let own = deployments(&node);
    assert_eq!(own.len(), 4);
    assert_eq!(offered(&node, 2).await, BTreeSet::from([x, y]));
    // A rule of its own: whatever new the syncs bring, for its own group.
    let rule = r#"{"name": "New to the branch ring", "group": "Branch Ring"}"#;
    let made = change(&node, "/api/v1/rules", rule).await;
    assert_eq!(
        (made.status.as_u16(), json(&made)["approved"].as_i64()),
        (200, Some(0))
    );

    // The root changes: a new update, an approval and a decline. The branch takes the update
    // and keeps its own approvals and declines.
    let extra = dir.path().join("more-payloads");
    std::fs::create_dir_all(&extra).unwrap();
    let more = wsus_edge::testkit::generate::generate(2, 77, 1 << 20, &extra).unwrap();
    let mut store = wsus_edge::state::Store::open(&database(&dir.path().join("root"))).unwrap();
    store.import(&more.documents).unwrap();
    drop(store);
    let new_update = more.deployable[0];
    until(
        "the root serves its new update",
        Duration::from_secs(10),
        async || {
            root.app
                .served
                .catalog()
                .latest(new_update)
                .map(|_| ())
                .ok_or("not yet")
        },
    )
    .await;
    let body = format!(r#"{{"group": "All Computers", "updates": {}}}"#, ids(&[z]));
    assert_eq!(change(&root, "/api/v1/approvals", &body).await.status, 200);
    let body = format!(r#"{{"updates": {}}}"#, ids(&[x]));
    assert_eq!(change(&root, "/api/v1/declines", &body).await.status, 200);
    synced(&node).await;
    let catalog = node.app.served.catalog();
    let new_revisions: BTreeSet<u32> = more
        .deployable
        .iter()
        .map(|id| catalog.latest(*id).expect("the root's new updates").id)
        .collect();
    // The branch's rule approved what the sync brought, for its group.
    let ruled: BTreeSet<Guid> = catalog
        .deployments
        .iter()
        .filter(|d| new_revisions.contains(&d.revision))
        .map(|d| d.guid)
        .collect();
    assert_eq!(ruled.len(), new_revisions.len());
    assert_eq!(
        deployments(&node)
            .difference(&ruled)
            .copied()
            .collect::<BTreeSet<_>>(),
        own,
        "the root's approvals are not taken"
    );
    assert_eq!(offered(&node, 3).await, BTreeSet::from([x, y]));

    // Declines are the branch's own: refused at the root's, made here.
    let body = format!(r#"{{"updates": {}}}"#, ids(&[y]));
    let declined = change(&node, "/api/v1/declines", &body).await;
    assert_eq!(declined.status, 200, "{:?}", declined.body);
    assert_eq!(offered(&node, 4).await, BTreeSet::from([x]));

    // Its status reaches the root, which knows it as autonomous.
    let reported = wua::Machine::new(5, None);
    let soap = wua::soap_client();
    let base = format!("http://{}", node.listening().http);
    let mut scan = wua::scan(&soap, &base, &reported).await.unwrap();
    wua::report(&soap, &base, &reported, &mut scan, 0)
        .await
        .unwrap();
    let rolled = rolled_up(&node).await;
    assert!(rolled.computers >= 1, "{rolled:?}");
    let admin = |p: &str| format!("http://{}{p}", root.listening().admin);
    let servers = json(&get(&admin("/api/v1/downstreams"), &[]).await);
    let ours = node.app.served.server_id().to_string();
    let server = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == ours.as_str())
        .unwrap_or_else(|| panic!("{ours} in {servers}"));
    assert_eq!(server["is_replica"], false, "{server}");
    let computer = json(
        &get(
            &admin(&format!("/api/v1/computers/{}", reported.client_id)),
            &[],
        )
        .await,
    );
    let states: BTreeSet<String> = update_states(&computer)
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert!(states.contains(&x.to_string()), "{computer}");

    // Back to replica on the same state: the root's groups, approvals and declines replace
    // the branch's own.
    node.shutdown(Duration::from_secs(1)).await;
    let node = branch(dir.path(), "branch", &root, "").await;
    assert_eq!(deployments(&node), deployments(&root));
    assert!(
        node.app
            .served
            .catalog()
            .group_by_name("Branch Ring")
            .is_none()
    );
    assert!(node.app.served.catalog().group_by_name("Ring 1").is_some());
    let mut want: BTreeSet<Guid> = all.iter().copied().collect();
    want.insert(z);
    assert_eq!(offered(&node, 6).await, want);
    let refused = change(
        &node,
        "/api/v1/approvals",
        &format!(r#"{{"group": "All Computers", "updates": {}}}"#, ids(&[y])),
    )
    .await;
    assert_eq!(refused.status, 409);
    assert!(String::from_utf8_lossy(&refused.body).contains("replica"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autonomous_branch_can_follow_the_roots_declines() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, all, ringed) = catalog_root_with(dir.path(), &admin_section(dir.path())).await;
    let approved_at_root: BTreeSet<Guid> = all.iter().chain(&ringed).copied().collect();
    let catalog = root.app.served.catalog();
    let candidates: Vec<Guid> = catalog
        .approvable(None)
        .unwrap()
        .iter()
        .filter_map(|&r| catalog.revision(r).map(|r| r.update_id))
        .filter(|id| !approved_at_root.contains(id))
        .collect();
    let (x, y) = (candidates[0], candidates[1]);
    let node = branch(
        dir.path(),
        "branch",
        &root,
        "mode = \"autonomous\"\ndeclines = \"upstream\"",
    )
    .await;
    let body = format!(
        r#"{{"group": "All Computers", "updates": {}}}"#,
        ids(&[x, y])
    );
    assert_eq!(change(&node, "/api/v1/approvals", &body).await.status, 200);
    assert_eq!(offered(&node, 1).await, BTreeSet::from([x, y]));

    // The root declines x: the branch's approval of it is no longer offered, the other stays.
    let body = format!(r#"{{"updates": {}}}"#, ids(&[x]));
    assert_eq!(change(&root, "/api/v1/declines", &body).await.status, 200);
    synced(&node).await;
    assert_eq!(offered(&node, 2).await, BTreeSet::from([y]));
    assert!(node.app.served.catalog().group_by_name("Ring 1").is_none());

    // Its own declines are refused, naming the key that would allow them.
    let body = format!(r#"{{"updates": {}}}"#, ids(&[y]));
    let refused = change(&node, "/api/v1/declines", &body).await;
    assert_eq!(refused.status, 409);
    assert!(String::from_utf8_lossy(&refused.body).contains("upstream.declines"));
}
