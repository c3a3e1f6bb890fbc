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

/// One admin request with a JSON body (or none) and an optional bearer token.
async fn call(method: &str, url: &str, token: Option<&str>, json: &str) -> Got {
    use http_body_util::{BodyExt as _, Full};
    let mut builder = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(t) = token {
        builder = builder.header("authorization", format!("Bearer {t}"));
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = client
        .request(
            builder
                .body(Full::new(bytes::Bytes::from(json.to_owned())))
                .unwrap(),
        )
        .await
        .expect("request");
    let (parts, body) = response.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        broken: false,
    }
}

fn json(got: &Got) -> serde_json::Value {
    serde_json::from_slice(&got.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&got.body)))
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
