//! The admin listener of a live node: probes, the metrics DESIGN.md §5 names, the status JSON
//! and page.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use wsus_edge::catalog::Guid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_and_status_answer() {
    logs();
    let origin = Origin::start().await;
    // Under 1 MiB: held in the memory tier (larger objects are sent from the page cache).
    let bytes = payload(512 << 10, 9);
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

fn offered(scan: &wsus_edge::simulate::wua::Scan) -> BTreeSet<Guid> {
    scan.offered.iter().map(|o| o.update_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_approvals_change_through_the_api_with_a_token() {
    use wsus_edge::simulate::wua;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, "\n  first-token \nsecond-token\n").unwrap();
    let extra = format!("[admin]\ntoken_file = {:?}\n", tokens.to_string_lossy());
    let (node, all, ringed) = catalog_root_with(dir.path(), &extra).await;
    let admin = |p: &str| format!("http://{}{p}", node.listening().admin);
    let groups = admin("/api/v1/groups");
    let approvals = admin("/api/v1/approvals");

    // Without an accepted token nothing changes.
    let ring2 = r#"{"name": "Ring 2"}"#;
    let refused = call("POST", &groups, None, ring2).await;
    assert_eq!(refused.status, 401);
    assert!(refused.headers.contains_key("www-authenticate"));
    assert_eq!(
        call("POST", &groups, Some("first-token-not"), ring2)
            .await
            .status,
        401
    );
    assert_eq!(json(&get(&groups, &[]).await).as_array().unwrap().len(), 3);

    // Groups: created once, under All Computers unless a parent is named.
    let created = call("POST", &groups, Some("first-token"), ring2).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(json(&created)["name"], "Ring 2");
    let again = call(
        "POST",
        &groups,
        Some("second-token"),
        r#"{"name": "ring 2"}"#,
    )
    .await;
    assert_eq!(again.status, 409, "names are case-insensitive");
    for (body, status) in [
        (r#"{"name": "Pilot", "parent": "No Such Group"}"#, 404),
        (r#"{"name": "   "}"#, 422),
        (r#"{"name": "Pilot", "colour": "red"}"#, 400),
        ("not json", 400),
    ] {
        let got = call("POST", &groups, Some("first-token"), body).await;
        assert_eq!(got.status, status, "{body}: {:?}", got.body);
    }
    let listed = json(&get(&groups, &[]).await);
    let ring = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Ring 2")
        .expect("Ring 2 listed");
    assert_eq!(ring["parent"], "All Computers");
    assert_eq!(ring["builtin"], false);

    // An approval is served to the next scan, without waiting for a reload.
    let soap = wua::soap_client();
    let base = format!("http://{}", node.listening().http);
    let machine = wua::Machine::new(7, Some("Ring 2"));
    let before = wua::scan(&soap, &base, &machine).await.unwrap();
    assert_eq!(offered(&before), all.iter().copied().collect());
    let catalog = wsus_edge::state::Store::open(&database(&dir.path().join("root")))
        .unwrap()
        .load()
        .unwrap();
    let approvable = catalog.approvable(None).unwrap();
    let extra_update = approvable
        .iter()
        .map(|r| catalog.revision(*r).unwrap().update_id)
        .find(|id| !all.contains(id) && !ringed.contains(id))
        .expect("an update approved for no group");
    let body = format!(r#"{{"group": "Ring 2", "updates": ["{extra_update}"]}}"#);
    let approved = call("POST", &approvals, Some("second-token"), &body).await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    assert_eq!(json(&approved)["approved"], 1);
    assert_eq!(json(&approved)["action"], "Install");
    let after = wua::scan(&soap, &base, &machine).await.unwrap();
    let want: BTreeSet<Guid> = all.iter().copied().chain([extra_update]).collect();
    assert_eq!(offered(&after), want);
    let listed = json(&get(&approvals, &[]).await);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["update"] == extra_update.to_string().as_str())
        .expect("the approval is listed");
    assert_eq!(entry["group"], "Ring 2");
    assert_eq!(entry["action"], "Install");

    // Bad approvals say what is wrong and change nothing.
    let count = listed.as_array().unwrap().len();
    for (body, status) in [
        (r#"{"group": "Ring 2"}"#.to_owned(), 422),
        (
            format!(r#"{{"group": "Ring 2", "all": true, "updates": ["{extra_update}"]}}"#),
            422,
        ),
        (
            r#"{"group": "Ring 2", "updates": ["nope"]}"#.to_owned(),
            422,
        ),
        (
            r#"{"group": "Ring 2", "all": true, "action": "sometimes"}"#.to_owned(),
            422,
        ),
        (
            r#"{"group": "Ring 2", "all": true, "deadline": "soon"}"#.to_owned(),
            422,
        ),
        (
            r#"{"group": "Ring 2", "all": true, "why": 1}"#.to_owned(),
            400,
        ),
        (r#"{"group": "No Such Group", "all": true}"#.to_owned(), 404),
        (
            format!(
                r#"{{"group": "Ring 2", "updates": ["{}"]}}"#,
                Guid::random()
            ),
            404,
        ),
    ] {
        let got = call("POST", &approvals, Some("first-token"), &body).await;
        assert_eq!(got.status, status, "{body}: {:?}", got.body);
    }
    assert_eq!(
        call("PUT", &approvals, Some("first-token"), "{}")
            .await
            .status,
        405
    );
    assert_eq!(
        json(&get(&approvals, &[]).await).as_array().unwrap().len(),
        count
    );

    // Everything, optional, with a deadline; the whole approval survives a restart.
    let all_optional = r#"{"group": "Ring 2", "all": true, "action": "optional", "deadline": "2026-12-24T18:00:00Z"}"#;
    let got = call("POST", &approvals, Some("first-token"), all_optional).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(json(&got)["approved"], approvable.len());
    node.shutdown(Duration::from_secs(1)).await;
    let node = start(&node_config(&dir.path().join("root"), None, "", &extra)).await;
    let listed = json(
        &get(
            &format!("http://{}/api/v1/approvals", node.listening().admin),
            &[],
        )
        .await,
    );
    let ring2: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["group"] == "Ring 2")
        .collect();
    assert_eq!(ring2.len(), approvable.len());
    assert!(
        ring2
            .iter()
            .all(|a| a["action"] == "OptionalInstall" && a["deadline"] == "2026-12-24T18:00:00Z")
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_the_admin_api_is_read_only() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&node_config(dir.path(), None, "", "")).await;
    let groups = format!("http://{}/api/v1/groups", node.listening().admin);
    let got = call("POST", &groups, Some("anything"), r#"{"name": "Ring 2"}"#).await;
    assert_eq!(got.status, 403);
    assert!(String::from_utf8_lossy(&got.body).contains("admin.token_file"));
    let names: Vec<String> = json(&get(&groups, &[]).await)
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A token file without a token is a configuration error naming the key.
    let empty = dir.path().join("empty-tokens");
    std::fs::write(&empty, "\n \n").unwrap();
    let config = node_config(
        &dir.path().join("other"),
        None,
        "",
        &format!("[admin]\ntoken_file = {:?}\n", empty.to_string_lossy()),
    );
    let refused = wsus_edge::node::start(&config)
        .await
        .err()
        .expect("refused");
    assert!(
        refused.to_string().contains("admin.token_file"),
        "{refused}"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

/// The `Set-Cookie` of an answer.
fn set_cookie(got: &Got) -> String {
    got.headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The value of `name="csrf"` in a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_changes_with_its_csrf_token_and_the_audit_log_says_who() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, "first-token\nsecond-token\n").unwrap();
    let extra = format!("[admin]\ntoken_file = {:?}\n", tokens.to_string_lossy());
    let (node, all, _) = catalog_root_with(dir.path(), &extra).await;
    let admin = |p: &str| format!("http://{}{p}", node.listening().admin);
    let form = [("content-type", "application/x-www-form-urlencoded")];

    // A wrong token gets the form again, and no cookie.
    let refused = send("POST", &admin("/signin"), &form, "name=Mallory&token=guess").await;
    assert_eq!(refused.status, 401);
    assert!(set_cookie(&refused).is_empty());
    assert!(String::from_utf8_lossy(&refused.body).contains("not an admin token"));

    // Signing in: a cookie only this listener's pages can use, and back where the form said.
    let signed = send(
        "POST",
        &admin("/signin"),
        &form,
        "name=Alice+Admin&token=second-token&next=%2Fupdates%3Fq%3DKB",
    )
    .await;
    assert_eq!(signed.status, 303);
    assert_eq!(signed.headers["location"], "/updates?q=KB");
    let cookie = set_cookie(&signed);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(flag), "{flag}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let behind_tls = send(
        "POST",
        &admin("/signin"),
        &[form[0], ("x-forwarded-proto", "https")],
        "name=Alice&token=second-token",
    )
    .await;
    assert!(set_cookie(&behind_tls).contains("; Secure"));
    // A form may only send the browser back to this listener.
    let elsewhere = send(
        "POST",
        &admin("/signin"),
        &form,
        "name=Alice&token=second-token&next=%2F%2Fevil.example%2F",
    )
    .await;
    assert_eq!(elsewhere.headers["location"], "/");
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = get(&admin("/signin"), &[("cookie", &session)]).await;
    let page = String::from_utf8_lossy(&page.body).into_owned();
    assert!(page.contains("Alice Admin"), "{page}");
    let csrf = csrf_of(&page);

    // A change needs the session and its CSRF token.
    let update = all[0].to_string();
    let change = format!("decision=decline&update={update}&next=%2Fupdates");
    let anonymous = send("POST", &admin("/changes"), &form, &change).await;
    assert_eq!(anonymous.status, 303);
    assert!(
        anonymous.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/signin")
    );
    let forged = send(
        "POST",
        &admin("/changes"),
        &[form[0], ("cookie", &session)],
        &format!("{change}&csrf=not-the-token"),
    )
    .await;
    assert_eq!(forged.status, 403);
    let tampered = format!("{}x", session);
    let with_tampered = send(
        "POST",
        &admin("/changes"),
        &[form[0], ("cookie", &tampered)],
        &format!("{change}&csrf={csrf}"),
    )
    .await;
    assert_eq!(with_tampered.status, 303, "a tampered cookie is no session");
    assert!(node.app.served.catalog().deployments.len() > 4);
    let done = send(
        "POST",
        &admin("/changes"),
        &[form[0], ("cookie", &session)],
        &format!("{change}&csrf={csrf}"),
    )
    .await;
    assert_eq!(done.status, 303, "{:?}", done.body);
    assert_eq!(done.headers["location"], "/updates");
    assert!(node.app.served.catalog().is_declined(all[0]));
    // A change that cannot be made says why, and changes nothing.
    let unknown = send(
        "POST",
        &admin("/changes"),
        &[form[0], ("cookie", &session)],
        &format!(
            "decision=approve&update={}&group=No+Such+Group&csrf={csrf}",
            all[1]
        ),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert!(String::from_utf8_lossy(&unknown.body).contains("No Such Group"));

    // The API's changes are recorded too, by the token's fingerprint.
    let body = format!(r#"{{"group": "All Computers", "updates": ["{}"]}}"#, all[1]);
    let api = call(
        "POST",
        &admin("/api/v1/approvals"),
        Some("first-token"),
        &body,
    )
    .await;
    assert_eq!(api.status, 200);
    let log = json(&get(&admin("/api/v1/audit"), &[]).await);
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["via"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("approve", "api"),
            ("decline", "browser"),
            ("sign-in", "browser"),
            ("sign-in", "browser"),
            ("sign-in", "browser"),
        ],
        "{log}"
    );
    assert!(
        entries[1]["who"]
            .as_str()
            .unwrap()
            .starts_with("Alice Admin (token ")
    );
    assert!(entries[1]["detail"].as_str().unwrap().contains(&update));
    assert!(entries[0]["who"].as_str().unwrap().starts_with("token "));
    // Two tokens, two fingerprints.
    let by_token = entries[0]["who"].as_str().unwrap();
    assert!(!entries[1]["who"].as_str().unwrap().contains(by_token));
    let audit_page = get(&admin("/audit"), &[]).await;
    assert!(String::from_utf8_lossy(&audit_page.body).contains("Alice Admin"));

    // Taking the token out of the file ends the sessions made with it.
    std::fs::write(&tokens, "first-token\n").unwrap();
    node.app
        .admin_tokens
        .reload("admin.token_file", Some(&tokens))
        .unwrap();
    let ended = send(
        "POST",
        &admin("/changes"),
        &[form[0], ("cookie", &session)],
        &format!("{change}&csrf={csrf}"),
    )
    .await;
    assert_eq!(ended.status, 303);
    assert!(
        ended.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/signin")
    );
    node.shutdown(Duration::from_secs(1)).await;
}

/// `doc` (a generated update document) as another update (`to`), or as its next revision.
fn renamed(doc: &str, from: Guid, to: Guid) -> String {
    doc.replace(&from.to_string(), &to.to_string())
}

fn next_revision(doc: &str, id: Guid) -> String {
    let own = format!("UpdateID=\"{id}\" RevisionNumber=\"");
    let at = doc.find(&own).unwrap() + own.len();
    let end = at + doc[at..].find('"').unwrap();
    let n: u32 = doc[at..end].parse().unwrap();
    format!("{}{}{}", &doc[..at], n + 1, &doc[end..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_approve_what_an_import_brings_and_new_revisions_follow_their_approvals() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, "rule-token\n").unwrap();
    let extra = format!("[admin]\ntoken_file = {:?}\n", tokens.to_string_lossy());
    let (node, all, _) = catalog_root_with(dir.path(), &extra).await;
    let admin = |p: &str| format!("http://{}{p}", node.listening().admin);
    let rule = r#"{"name": "Security to Ring 1", "classifications": ["Security Updates"],
                   "group": "Ring 1", "deadline_days": 7}"#;
    let made = call("POST", &admin("/api/v1/rules"), Some("rule-token"), rule).await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    assert_eq!(json(&made)["approved"], 0, "not applied to what is held");
    for (bad, says) in [
        (
            r#"{"name": "x", "classifications": ["Nonsense"], "group": "Ring 1"}"#,
            "Nonsense",
        ),
        (
            r#"{"name": "x", "group": "No Such Group"}"#,
            "No Such Group",
        ),
        (
            r#"{"name": "x", "group": "Ring 1", "action": "block"}"#,
            "install or optional",
        ),
    ] {
        let refused = call("POST", &admin("/api/v1/rules"), Some("rule-token"), bad).await;
        assert!(refused.status.is_client_error(), "{bad}");
        assert!(
            String::from_utf8_lossy(&refused.body).contains(says),
            "{bad}"
        );
    }

    // What the import brings: a Security update new to the catalog (a held one's document
    // under a new id), a non-Security one, and a new revision of an update approved for All
    // Computers.
    let again = dir.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let g = wsus_edge::testkit::generate::generate(60, 11, 24 << 20, &again).unwrap();
    let catalog = node.app.served.catalog();
    let security =
        wsus_edge::catalog::listing::categories(&catalog, "Security Updates", true).unwrap();
    let is_security = |id: &Guid| {
        wsus_edge::catalog::listing::in_categories(
            &catalog,
            catalog.latest(*id).unwrap(),
            &security,
        )
    };
    let doc_of = |id: &Guid| {
        g.documents
            .iter()
            .find(|d| d.contains(&format!("UpdateID=\"{id}\" RevisionNumber")))
            .unwrap()
            .clone()
    };
    let held_security = *g.deployable.iter().find(|id| is_security(id)).unwrap();
    let held_other = *g.deployable.iter().find(|id| !is_security(id)).unwrap();
    let (new_security, new_other) = (Guid::random(), Guid::random());
    let revised = all[0];
    let documents = vec![
        renamed(&doc_of(&held_security), held_security, new_security),
        renamed(&doc_of(&held_other), held_other, new_other),
        next_revision(&doc_of(&revised), revised),
    ];
    let mut store = wsus_edge::state::Store::open(&database(&dir.path().join("root"))).unwrap();
    store.import(&documents).unwrap();
    drop(store);
    until(
        "the root serves the import",
        Duration::from_secs(10),
        async || {
            node.app
                .served
                .catalog()
                .latest(new_other)
                .map(|_| ())
                .ok_or("not yet")
        },
    )
    .await;

    let catalog = node.app.served.catalog();
    let ring = catalog.group_by_name("Ring 1").unwrap().id;
    let deployed = |id: Guid, group| {
        let r = catalog.latest(id).unwrap().id;
        catalog
            .deployments
            .iter()
            .find(|d| d.revision == r && d.group == group)
            .cloned()
    };
    let approved = deployed(new_security, ring).expect("the rule approved the Security update");
    let days = approved.deadline.unwrap() - approved.last_change;
    assert!((7 * 86_400 - 5..=7 * 86_400 + 5).contains(&days), "{days}");
    assert!(deployed(new_other, ring).is_none(), "not Security");
    let follow = deployed(revised, wsus_edge::catalog::ALL_COMPUTERS)
        .expect("the new revision of an approved update is approved as it was");
    assert_eq!(follow.action, wsus_edge::catalog::Action::Install);

    // Shown with what they approved: the rule's count and the audit log.
    let rules = json(&get(&admin("/api/v1/rules"), &[]).await);
    assert_eq!(rules[0]["name"], "Security to Ring 1");
    // The revised update too when it is a Security update: its new revision is new to the rule.
    assert_eq!(rules[0]["approved"], 1 + i64::from(is_security(&revised)));
    assert_eq!(rules[0]["classifications"][0], "Security Updates");
    let log = json(&get(&admin("/api/v1/audit"), &[]).await);
    let by_rule: Vec<&serde_json::Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["via"] == "rule")
        .collect();
    assert_eq!(by_rule.len(), 2, "{log}");
    assert!(by_rule.iter().any(|e| {
        e["who"] == "rule \"Security to Ring 1\""
            && e["detail"]
                .as_str()
                .unwrap()
                .contains(&new_security.to_string())
    }));
    node.shutdown(Duration::from_secs(1)).await;
}
