//! What an administrator finds to approve, on a live root with a generated catalog and a branch
//! below it: `/api/v1/updates` filtered by classification and product (exactly the generated
//! updates of that kind), searched by KB number, cut into pages; `needed=yes` once clients of
//! the root and of the branch (rolled up) reported needing updates; the `/updates/{id}` page
//! listing the branch's computer under "Needed" with links to it and its branch; the computers
//! CSV as RFC 4180 with RFC 3339 times and each computer's branch.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use wsus_edge::catalog::Guid;
use wsus_edge::simulate::wua::{self, request};

const REPORTING: &str = "/ReportingWebService/ReportingWebService.asmx";
const NS: &str = "http://www.microsoft.com/SoftwareDistribution";

/// The generator's number of an update, from its English title ("Contoso Update 12 (KB…)").
fn number(title: &str) -> usize {
    title
        .strip_prefix("Contoso Update ")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{title}"))
}

async fn json(url: &str) -> serde_json::Value {
    let got = get(url, &[]).await;
    assert_eq!(
        got.status,
        200,
        "{url}: {}",
        String::from_utf8_lossy(&got.body)
    );
    serde_json::from_slice(&got.body).unwrap()
}

/// The ids of a list's updates.
fn ids(list: &serde_json::Value) -> Vec<String> {
    list["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A status event (156) saying `machine` needs `updates`, sent to `base` as Windows does.
async fn report_needing(base: &str, machine: &wua::Machine, updates: &[Guid]) {
    let soap = wua::soap_client();
    wua::scan(&soap, base, machine).await.unwrap();
    let cookie = wua::client_cookie(&soap, base, machine).await.unwrap();
    let time = wsus_edge::soap::xsd::format_datetime(wsus_edge::clock::unix_now());
    let needed: Vec<String> = updates
        .iter()
        .map(|u| u.to_string().to_uppercase())
        .collect();
    let event = request::reporting_event(
        &machine.client_id,
        &time,
        &Guid::random().to_string(),
        156,
        (Guid::NIL, 0),
        0,
        &format!("<string>U={}</string>", needed.join(";")),
    );
    let body = format!(
        "{}<clientTime>{time}</clientTime><eventBatch>{event}</eventBatch>",
        request::cookie_xml("cookie", &cookie)
    );
    let answer = soap_call_to(
        &format!("{base}{REPORTING}"),
        NS,
        "ReportEventBatch",
        &body,
        None,
    )
    .await;
    assert_eq!(answer.0, 200);
    assert_eq!(
        answer
            .2
            .as_ref()
            .and_then(|op| op.child_text("ReportEventBatchResult")),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_finds_updates_to_approve() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, _, _) = catalog_root(dir.path()).await;
    let admin = |p: &str| format!("http://{}{p}", root.listening().admin);

    // The catalog the root imported, generated again (the same seed gives the same updates):
    // its deployable updates by their number.
    let again = tempfile::tempdir().unwrap();
    let generated = wsus_edge::testkit::generate::generate(60, 11, 24 << 20, again.path()).unwrap();
    let catalog = root.app.served.catalog();
    let deployable: HashMap<String, usize> = generated
        .deployable
        .iter()
        .map(|id| (id.to_string(), number(catalog.latest(*id).unwrap().title())))
        .collect();
    let id_of = |i: usize| {
        deployable
            .iter()
            .find(|(_, n)| **n == i)
            .map(|(id, _)| id.clone())
            .unwrap()
    };
    let kind = |pick: &dyn Fn(usize) -> bool| -> BTreeSet<String> {
        deployable
            .iter()
            .filter(|(_, i)| pick(**i))
            .map(|(id, _)| id.clone())
            .collect()
    };

    // Everything: each deployable update once, in natural title order.
    let all = json(&admin("/api/v1/updates?limit=500")).await;
    assert_eq!(all["total"], deployable.len());
    let numbers: Vec<usize> = all["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| number(u["title"].as_str().unwrap()))
        .collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(numbers, sorted, "Update 4 before Update 10");
    assert_eq!(
        ids(&all).into_iter().collect::<BTreeSet<_>>(),
        kind(&|_| true)
    );

    // By classification (the generator classifies update i as (i / 3) % 5: 0 is Security
    // Updates) and by product (i % 2), and both.
    let security = json(&admin(
        "/api/v1/updates?classification=security+updates&limit=500",
    ))
    .await;
    assert_eq!(
        ids(&security).into_iter().collect::<BTreeSet<_>>(),
        kind(&|i| (i / 3) % 5 == 0)
    );
    assert!(
        security["updates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["classification"] == "Security Updates")
    );
    let product = json(&admin(
        "/api/v1/updates?product=Contoso%20Product%201&limit=500",
    ))
    .await;
    assert_eq!(
        ids(&product).into_iter().collect::<BTreeSet<_>>(),
        kind(&|i| i % 2 == 1)
    );
    assert_eq!(product["updates"][0]["products"][0], "Contoso Product 1");
    let both = json(&admin(
        "/api/v1/updates?product=Contoso+Product+1&classification=Security+Updates&limit=500",
    ))
    .await;
    assert_eq!(
        ids(&both).into_iter().collect::<BTreeSet<_>>(),
        kind(&|i| i % 2 == 1 && (i / 3) % 5 == 0)
    );

    // By KB number, with or without "KB".
    for q in ["KB5000010", "5000010", "kb5000010"] {
        let found = json(&admin(&format!("/api/v1/updates?q={q}"))).await;
        assert_eq!(ids(&found), [id_of(10)], "{q}");
        assert_eq!(found["updates"][0]["kb"], "5000010");
    }

    // Pages: the same total on each, disjoint, together the whole list in order.
    let mut paged = Vec::new();
    for offset in (0..deployable.len()).step_by(9) {
        let page = json(&admin(&format!("/api/v1/updates?limit=9&offset={offset}"))).await;
        assert_eq!(
            (&page["total"], &page["offset"], &page["limit"]),
            (
                &all["total"],
                &serde_json::json!(offset),
                &serde_json::json!(9)
            )
        );
        paged.extend(ids(&page));
    }
    assert_eq!(paged, ids(&all));

    // A parameter that cannot be used is named.
    for (query, name) in [
        ("classification=Nonsense", "classification"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("needed=lots", "needed"),
        ("group=nobody", "group"),
    ] {
        let got = get(&admin(&format!("/api/v1/updates?{query}")), &[]).await;
        assert_eq!(got.status, 400, "{query}");
        assert!(
            String::from_utf8_lossy(&got.body).starts_with(&format!("{name}: ")),
            "{query}: {}",
            String::from_utf8_lossy(&got.body)
        );
    }

    // Nothing is needed yet. Then a computer of the root and one of a branch (rolled up) say
    // what they need.
    let needed = json(&admin("/api/v1/updates?needed=yes")).await;
    assert_eq!(needed["total"], 0);
    let mut config = node_config(
        &dir.path().join("branch"),
        Some(&format!("http://{}", root.listening().http)),
        "sync_interval = \"1h\"\ntimeout = \"10s\"\nconnect_timeout = \"1s\"",
        "",
    );
    config.node.name = "branch-a".into();
    let branch = start(&config).await;
    replica_until(&branch, |s| s.syncs >= 1 && s.failed_syncs == 0).await;
    let ours = wua::Machine::new(1, None);
    let theirs = wua::Machine::new(2, None);
    let (a, b, c) = (id_of(0), id_of(10), id_of(11));
    let guid = |s: &str| Guid::parse(s).unwrap();
    report_needing(
        &format!("http://{}", root.listening().http),
        &ours,
        &[guid(&a), guid(&b)],
    )
    .await;
    report_needing(
        &format!("http://{}", branch.listening().http),
        &theirs,
        &[guid(&b), guid(&c)],
    )
    .await;
    rolled_up(&branch).await;

    let needed = json(&admin("/api/v1/updates?needed=yes")).await;
    assert_eq!(
        ids(&needed).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([a.clone(), b.clone(), c.clone()])
    );
    let most = json(&admin("/api/v1/updates?sort=needed&limit=1")).await;
    assert_eq!(
        ids(&most),
        std::slice::from_ref(&b),
        "needed by two computers"
    );
    assert_eq!(most["updates"][0]["computers"]["needed"], 2);
    assert_eq!(most["updates"][0]["needing"], 2);
    let not_needed = json(&admin("/api/v1/updates?needed=no&limit=500")).await;
    assert_eq!(not_needed["total"], deployable.len() - 3);

    // The update's page: the branch's computer under "Needed", linked, with its branch.
    let branch_id = branch.app.served.server_id().to_string();
    let page = get(&admin(&format!("/updates/{c}")), &[]).await;
    assert_eq!(page.status, 200);
    let page = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(page.contains("KB5000011"), "{page}");
    let section = page
        .split_once("<h3 id=\"needed\">Needed</h3>")
        .map(|(_, after)| after.split("<h3").next().unwrap())
        .unwrap_or_else(|| panic!("no Needed section: {page}"));
    assert!(
        section.contains(&format!(
            "<a href=\"/computers/{}\">{}</a>",
            theirs.client_id, theirs.dns_name
        )),
        "{section}"
    );
    assert!(
        section.contains(&format!("<a href=\"/branches/{branch_id}\">branch-a</a>")),
        "{section}"
    );
    let shared = String::from_utf8(
        get(&admin(&format!("/updates/{b}")), &[])
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(shared.contains(&ours.dns_name) && shared.contains(&theirs.dns_name));
    assert!(shared.contains("1–2 of 2"), "{shared}");
    assert_eq!(
        get(&admin(&format!("/updates/{}", Guid::random())), &[])
            .await
            .status,
        404
    );

    // The computer's page: its branch and target groups; its branch's page: a page of its
    // computers, by the state of their updates and by name (LIKE's `_` taken literally).
    let computer = get(&admin(&format!("/computers/{}", theirs.client_id)), &[]).await;
    let computer = String::from_utf8(computer.body.to_vec()).unwrap();
    assert!(
        computer.contains(&format!(
            "<tr><th>Branch</th><td><a href=\"/branches/{branch_id}\">branch-a</a></td></tr>"
        )),
        "{computer}"
    );
    assert!(
        computer.contains("<th>Target groups</th><td>Unassigned Computers"),
        "{computer}"
    );
    let local = get(&admin(&format!("/computers/{}", ours.client_id)), &[]).await;
    let local = String::from_utf8(local.body.to_vec()).unwrap();
    assert!(
        local.contains("<a href=\"/branches/local\">test (this node)</a>"),
        "{local}"
    );
    let listed = async |query: &str| {
        let got = get(&admin(&format!("/branches/{branch_id}?{query}")), &[]).await;
        assert_eq!(got.status, 200, "{query}");
        String::from_utf8(got.body.to_vec()).unwrap()
    };
    for (query, found) in [
        ("", true),
        ("state=needed", true),
        ("state=failed", false),
        ("q=PC00002", true),
        ("q=pc0000_", false),
        ("q=nobody&state=needed", false),
    ] {
        let page = listed(query).await;
        let shown = if found { "1–1 of 1" } else { "0 of 0" };
        assert!(page.contains(shown), "{query}: {page}");
        assert_eq!(page.contains(&theirs.dns_name), found, "{query}: {page}");
    }
    assert_eq!(
        get(&admin(&format!("/branches/{branch_id}?state=bogus")), &[])
            .await
            .status,
        400
    );

    // The list page: filtered by the same parameters, paged, the update linked.
    let list = get(&admin("/updates?q=KB5000011"), &[]).await;
    let list = String::from_utf8(list.body.to_vec()).unwrap();
    assert!(
        list.contains(&format!("<a href=\"/updates/{c}\">")),
        "{list}"
    );
    assert!(list.contains("1–1 of 1"), "{list}");
    let first = get(&admin("/updates?limit=20"), &[]).await;
    let first = String::from_utf8(first.body.to_vec()).unwrap();
    assert!(
        first.contains(&format!("1–20 of {}", deployable.len()))
            && first.contains("limit=20&amp;offset=20"),
        "{first}"
    );

    // The CSV: RFC 4180 records (CRLF), RFC 3339 times, the branch of each computer.
    let csv = get(&admin("/api/v1/computers.csv"), &[]).await;
    assert_eq!(csv.status, 200);
    let csv = String::from_utf8(csv.body.to_vec()).unwrap();
    assert!(csv.ends_with("\r\n"));
    assert_eq!(csv.matches('\n').count(), csv.matches("\r\n").count());
    let records: Vec<Vec<&str>> = csv
        .split_terminator("\r\n")
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(records.len(), 3, "{csv}");
    let column = |name: &str| records[0].iter().position(|c| *c == name).unwrap();
    let (branch_column, registered) = (column("branch"), column("registered_at"));
    for (machine, server) in [(&ours, "test"), (&theirs, "branch-a")] {
        let record = records
            .iter()
            .find(|r| r[0].eq_ignore_ascii_case(&machine.client_id))
            .unwrap_or_else(|| panic!("{} in {csv}", machine.client_id));
        assert_eq!(record[branch_column], server);
        let time = record[registered];
        assert!(
            time.len() == 20
                && time.as_bytes()[10] == b'T'
                && time.ends_with('Z')
                && wsus_edge::soap::xsd::parse_datetime(time).is_some(),
            "{time}"
        );
    }

    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}
