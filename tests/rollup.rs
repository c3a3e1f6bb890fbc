//! The rollup endpoints of a node (MS-WSUSSS reporting phase, upstream side), called by an
//! independent SOAP stack (zeep from Microsoft's Reporting WSDL) as a downstream server would;
//! then what the node kept, as its admin API shows it: the rolled-up computers under their
//! branch with the states sent, and the branch's summary.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use wsus_edge::node::Running;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_rollups_are_kept_and_shown() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    let stdout = zeep_checks(
        "check_rollup.py",
        vec![
            format!("http://{}", node.listening().http),
            format!("{}/wsdl", shared_protocol()),
        ],
    )
    .await;
    assert!(stdout.matches("ok   ").count() >= 14, "{stdout}");
    let ids: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("COMPUTERS "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .split_whitespace()
        .collect();
    let (c1, c3, u1, u2, branch) = (ids[0], ids[2], ids[4], ids[5], ids[7]);

    let admin = |p: &str| format!("http://{}{p}", node.listening().admin);
    let json = |got: &Got| -> serde_json::Value {
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        serde_json::from_slice(&got.body).unwrap()
    };
    let one = json(&get(&admin(&format!("/api/v1/computers/{c1}")), &[]).await);
    assert_eq!(one["dns_name"], "pc1.rollup.example");
    let states = one["update_states"].as_array().unwrap();
    let state_of = |u: &str| {
        states
            .iter()
            .find(|s| s["update"] == u)
            .map(|s| s["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state_of(u1).as_deref(), Some("installed"));
    assert_eq!(state_of(u2).as_deref(), Some("failed"));
    // A computer sent without details is not kept until they come.
    assert_eq!(
        get(&admin(&format!("/api/v1/computers/{c3}")), &[])
            .await
            .status,
        404
    );
    let failing = json(&get(&admin("/api/v1/computers?state=failed"), &[]).await);
    assert_eq!(failing.as_array().unwrap().len(), 1);
    let servers = json(&get(&admin("/api/v1/downstreams"), &[]).await);
    let rolled = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == branch)
        .unwrap_or_else(|| panic!("{servers}"));
    assert_eq!(rolled["computers"], 2);
    assert_eq!(rolled["with_errors"], 1);
    assert!(rolled["last_rollup"].as_i64().is_some());
    node.shutdown(Duration::from_secs(1)).await;
}

const REPORTING: &str = "/ReportingWebService/ReportingWebService.asmx";
const NS: &str = "http://www.microsoft.com/SoftwareDistribution";
const COOKIE: &str =
    "<cookie><Expiration>9999-12-31T23:59:59.9999999</Expiration><EncryptedData/></cookie>";

/// Rollups share the clients' Reporting path but not their openness: with downstream tokens
/// configured they need one, while clients' reports on the same path do not. Batches over
/// the advertised maxima are refused, and nothing of them is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_are_gated_and_bounded() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("downstream.tokens");
    std::fs::write(&tokens, "rollup-token\n").unwrap();
    let (node, _, _) = catalog_root_with(
        dir.path(),
        &format!(
            "[downstream]\ntoken_file = {:?}\n",
            tokens.to_string_lossy()
        ),
    )
    .await;
    let config = |token| {
        soap_call(
            &node,
            REPORTING,
            NS,
            "GetRollupConfiguration",
            COOKIE,
            token,
        )
    };
    assert_eq!(config(None).await.0, 401);
    assert_eq!(config(Some("wrong")).await.0, 401);
    let (status, _, op) = config(Some("rollup-token")).await;
    assert_eq!(status, 200);
    let result = op.unwrap();
    let result = result.child("GetRollupConfigurationResult").unwrap();
    let max: usize = result
        .child_text("RollupComputerStatusMaxBatchSize")
        .unwrap()
        .parse()
        .unwrap();

    // A client's report on the same path is the client protocol's business (its own fault
    // for a bad cookie), never a 401.
    let (status, challenge, _) = soap_call(
        &node,
        REPORTING,
        NS,
        "ReportEventBatch",
        &format!("{COOKIE}<clientTime>2026-12-01T00:00:00Z</clientTime><eventBatch/>"),
        None,
    )
    .await;
    assert_ne!(status, 401);
    assert_eq!(challenge, None);

    // One computer over the maximum: refused, naming the parameter.
    let one = "<ComputerStatusRollupInfo><InstanceId>a0a08746-4dbe-4a37-9adf-9e7652c0b421\
               </InstanceId><ComputerId>pc</ComputerId><EffectiveLastDetectionTime>\
               2026-12-01T00:00:00Z</EffectiveLastDetectionTime><RollupNumber>1</RollupNumber>\
               <IsFullRollup>true</IsFullRollup></ComputerStatusRollupInfo>";
    let (status, _, fault) = soap_call(
        &node,
        REPORTING,
        NS,
        "RollupComputerStatus",
        &format!(
            "{COOKIE}<clientTime>2026-12-01T00:00:00Z</clientTime>\
             <parentServerId>a0a08746-4dbe-4a37-9adf-9e7652c0b421</parentServerId>\
             <computers>{}</computers>",
            one.repeat(max + 1)
        ),
        Some("rollup-token"),
    )
    .await;
    assert_eq!(status, 500);
    let fault = fault.unwrap();
    let detail = fault.child("detail").unwrap();
    assert_eq!(detail.child_text("ErrorCode"), Some("InvalidParameters"));
    assert!(
        detail
            .child_text("Message")
            .unwrap()
            .starts_with("computers")
    );

    // Request bodies in gzip are read (up to the same limit decompressed); another coding
    // is refused with 415 naming gzip, a broken one with 400, a bomb as too large.
    let configuration = soap_envelope(NS, "GetRollupConfiguration", COOKIE);
    let packed = |text: &[u8]| wsus_edge::http::coding::gzip(text).unwrap();
    let (status, accepts) = post_coded(&node, "gzip", packed(configuration.as_bytes())).await;
    assert_eq!((status, accepts.as_deref()), (200, Some("gzip")));
    let (status, accepts) = post_coded(&node, "br", configuration.clone().into_bytes()).await;
    assert_eq!((status, accepts.as_deref()), (415, Some("gzip")));
    let broken = packed(configuration.as_bytes());
    assert_eq!(
        post_coded(&node, "gzip", broken[..broken.len() / 2].to_vec())
            .await
            .0,
        400
    );
    let bomb = packed(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (status, _) = post_coded(&node, "gzip", bomb).await;
    assert_eq!(status, 500, "refused as over the limit, with a fault");

    // Servers: a parent that is neither this node, one below it, nor one in the request is
    // refused; a summary older than the one kept is ignored (LastRollupTime).
    let now = wsus_edge::clock::unix_now();
    let at = wsus_edge::soap::xsd::format_datetime;
    let server = |id: &str, parent: &str, rolled: i64, computers: u32| {
        format!(
            "<DownstreamServerRollupInfo><ServerId>{id}</ServerId>\
             <FullDomainName>s{computers}.example</FullDomainName>\
             <LastSyncTime>{}</LastSyncTime><ParentServerId>{parent}</ParentServerId>\
             <Version>1</Version><IsReplica>true</IsReplica>\
             <LastRollupTime>{}</LastRollupTime><ServerSummary><UpdateCount>7</UpdateCount>\
             <ComputerTargetCount>{computers}</ComputerTargetCount></ServerSummary>\
             <ClientSummaries/></DownstreamServerRollupInfo>",
            at(rolled),
            at(rolled)
        )
    };
    let roll = |servers: String| {
        let node = &node;
        async move {
            soap_call(
                node,
                REPORTING,
                NS,
                "RollupDownstreamServers",
                &format!(
                    "{COOKIE}<clientTime>{}</clientTime><downstreamServers>{servers}\
                     </downstreamServers>",
                    at(now)
                ),
                Some("rollup-token"),
            )
            .await
            .0
        }
    };
    const NIL: &str = "00000000-0000-0000-0000-000000000000";
    let (branch, child, stranger) = (
        "b0a08746-4dbe-4a37-9adf-9e7652c0b421",
        "c0a08746-4dbe-4a37-9adf-9e7652c0b421",
        "d0a08746-4dbe-4a37-9adf-9e7652c0b421",
    );
    assert_eq!(roll(server(child, stranger, now, 1)).await, 500);
    // A child before its parent, in one request.
    let both = server(child, branch, now - 60, 3) + &server(branch, NIL, now - 60, 5);
    assert_eq!(roll(both).await, 200);
    assert_eq!(roll(server(branch, NIL, now - 3600, 9)).await, 200);
    let listed = get(
        &format!("http://{}/api/v1/downstreams", node.listening().admin),
        &[],
    )
    .await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    let find = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
    };
    let kept = find(branch).unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(kept["computers"], 5, "the older summary is ignored: {kept}");
    assert_eq!(kept["summary"]["UpdateCount"], 7);
    assert_eq!(
        kept["parent"],
        node.app.served.server_id().to_string().as_str()
    );
    assert_eq!(find(child).unwrap()["parent"], branch);
    node.shutdown(Duration::from_secs(1)).await;
}

/// POST a rollup body in a content coding (with the downstream token of
/// `rollups_are_gated_and_bounded`): the status and the Accept-Encoding of the answer.
async fn post_coded(node: &Running, coding: &str, body: Vec<u8>) -> (u16, Option<String>) {
    let request = http::Request::post(url(node, REPORTING))
        .header("content-type", "text/xml; charset=utf-8")
        .header("content-encoding", coding)
        .header("authorization", "Bearer rollup-token")
        .header("soapaction", format!("\"{NS}/GetRollupConfiguration\""))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(request).await.unwrap();
    let accepts = response
        .headers()
        .get("accept-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), accepts)
}

/// How many (computer, update) pairs of `reported` are in `state`.
fn updates_reported(reported: &[&Reported], state: &str) -> i64 {
    reported
        .iter()
        .flat_map(|r| r.states.iter())
        .filter(|(_, s)| *s == state)
        .count() as i64
}

/// What one client reported: its id, its branch, (update, state) of each offered update.
struct Reported {
    client: String,
    branch: &'static str,
    states: Vec<(String, &'static str)>,
}

/// Clients of two branches (one under a regional node) scan, install and report; the rollups
/// carry every computer with exactly its states to the root, the server counts add up, and
/// when the root loses its data (a new RollupResetGuid) a branch sends everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_status_rolls_up_three_tiers() {
    use wsus_edge::simulate::wua;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (root, _, _) = catalog_root(dir.path()).await;
    let regional = downstream(dir.path(), "regional", &root).await;
    replica_until(&regional, |s| s.syncs >= 1 && s.failed_syncs == 0).await;
    let (a, b) = (
        downstream(dir.path(), "branch-a", &regional).await,
        downstream(dir.path(), "branch-b", &root).await,
    );
    for n in [&a, &b] {
        replica_until(n, |s| s.syncs >= 1 && s.failed_syncs == 0).await;
    }

    // Ground truth: what each client reported (every third offered update failed).
    let soap = wua::soap_client();
    let mut truth: Vec<Reported> = Vec::new();
    for (node, branch, clients) in [(&a, "a", 3u64), (&b, "b", 2)] {
        let base = format!("http://{}", node.listening().http);
        for n in 0..clients {
            let machine = wua::Machine::new(100 * clients + n, None);
            let mut scan = wua::scan(&soap, &base, &machine).await.unwrap();
            assert!(!scan.offered.is_empty());
            wua::report(&soap, &base, &machine, &mut scan, 3)
                .await
                .unwrap();
            // The updates sent for evaluation alone are reported needed.
            let needed = scan
                .received
                .iter()
                .filter(|o| o.action == "PreDeploymentCheck")
                .map(|o| (o.update_id.to_string(), "needed"));
            let states = scan
                .offered
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let state = if (i + 1) % 3 == 0 {
                        "failed"
                    } else {
                        "installed"
                    };
                    (o.update_id.to_string(), state)
                })
                .chain(needed)
                .collect();
            truth.push(Reported {
                client: machine.client_id.clone(),
                branch,
                states,
            });
        }
    }

    let first = rolled_up(&a).await;
    assert_eq!((first.computers, first.statuses), (3, 3));
    // The upstream said it reads gzip (RFC 7694): the rollup went compressed (as it is, with
    // its envelopes, it would be more than the operations alone).
    assert!(
        first.sent_bytes * 2 < first.body_bytes,
        "{} bytes sent for {} of SOAP",
        first.sent_bytes,
        first.body_bytes
    );
    let via = rolled_up(&regional).await;
    assert_eq!(
        (via.computers, via.statuses),
        (3, 3),
        "the regional node passes them on"
    );
    let direct = rolled_up(&b).await;
    assert_eq!((direct.computers, direct.statuses), (2, 2));

    let admin = |p: &str| format!("http://{}{p}", root.listening().admin);
    let json = |got: &Got| -> serde_json::Value {
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        serde_json::from_slice(&got.body).unwrap()
    };
    let computers = json(&get(&admin("/api/v1/computers"), &[]).await);
    assert_eq!(
        computers.as_array().unwrap().len(),
        truth.len(),
        "{computers}"
    );
    let server_id = |n: &Running| n.app.served.server_id().to_string();
    for Reported {
        client,
        branch,
        states,
    } in &truth
    {
        let got = json(&get(&admin(&format!("/api/v1/computers/{client}")), &[]).await);
        let parent = if *branch == "a" {
            server_id(&a)
        } else {
            server_id(&b)
        };
        assert_eq!(got["parent_server"], parent.as_str(), "{got}");
        let kept = update_states(&got);
        let mut want: Vec<(String, String)> = states
            .iter()
            .map(|(u, s)| (u.clone(), s.to_string()))
            .collect();
        want.sort();
        assert_eq!(kept, want, "computer {client} of branch {branch}");
    }
    let servers = json(&get(&admin("/api/v1/downstreams"), &[]).await);
    let count = |id: &str| {
        servers
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {servers}"))["computers"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(
        (
            count(&server_id(&a)),
            count(&server_id(&b)),
            count(&server_id(&regional))
        ),
        (3, 2, 0)
    );
    // Each branch's summary: its catalog's updates as the root counts its own (the same
    // catalog, synced), and its computers' updates as the clients reported them.
    let mine = root
        .app
        .served
        .catalog()
        .update_counts(&Default::default(), |_| {
            wsus_edge::catalog::FileState::Present
        });
    for (node, branch) in [(&a, "a"), (&b, "b")] {
        let summary = &servers
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == server_id(node).as_str())
            .unwrap()["summary"];
        let reported: Vec<&Reported> = truth.iter().filter(|r| r.branch == branch).collect();
        let updates = |state: &str| -> std::collections::BTreeSet<&str> {
            reported
                .iter()
                .flat_map(|r| r.states.iter())
                .filter(|(_, s)| *s == state)
                .map(|(u, _)| u.as_str())
                .collect()
        };
        let failed = updates("failed");
        // Outstanding: failed, or needed (what was sent for evaluation alone).
        let outstanding: std::collections::BTreeSet<&str> =
            failed.union(&updates("needed")).copied().collect();
        let done_everywhere = updates("installed").difference(&outstanding).count();
        let with = |states: &[&str]| {
            reported
                .iter()
                .filter(|r| r.states.iter().any(|(_, s)| states.contains(s)))
                .count()
        };
        let (with_errors, needing) = (with(&["failed"]), with(&["failed", "needed"]));
        for (name, want) in [
            ("UpdateCount", mine.updates as usize),
            ("ApprovedUpdateCount", mine.approved as usize),
            ("NotApprovedUpdateCount", mine.not_approved as usize),
            ("DeclinedUpdateCount", 0),
            ("ComputerTargetCount", reported.len()),
            ("ComputerTargetsWithUpdateErrorsCount", with_errors),
            ("ComputerTargetsNeedingUpdatesCount", needing),
            ("ComputersUpToDateCount", reported.len() - needing),
            ("UpdatesWithClientErrorsCount", failed.len()),
            ("UpdatesNeededByComputersCount", outstanding.len()),
            ("UpdatesUpToDateCount", done_everywhere),
        ] {
            assert_eq!(summary[name], want, "{name} of branch {branch}: {summary}");
        }
        assert!(mine.approved > 0 && mine.updates > mine.approved);
        assert_eq!(
            installs(&servers, &server_id(node)),
            (
                reported.len() as i64,
                updates_reported(&reported, "installed"),
                updates_reported(&reported, "failed")
            ),
            "the install events of branch {branch}'s clients, by operating system"
        );
    }

    // By branch, and one update across branches.
    let in_a = json(
        &get(
            &admin(&format!("/api/v1/computers?branch={}", server_id(&a))),
            &[],
        )
        .await,
    );
    assert_eq!(in_a.as_array().unwrap().len(), 3);
    assert_eq!(
        get(&admin("/api/v1/computers?branch=nowhere"), &[])
            .await
            .status,
        404
    );
    let update = &truth[0].states[0].0;
    let offered = truth
        .iter()
        .filter(|r| r.states.iter().any(|(u, _)| u == update))
        .count() as u64;
    let status = json(&get(&admin(&format!("/api/v1/updates/{update}/status")), &[]).await);
    let total: u64 = status["computers"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(total, offered, "{status}");
    assert_eq!(status["branches"].as_object().unwrap().len(), 2, "{status}");

    // Nothing new: the next rollup sends no status again (computers of the last rollup's
    // second may go again: the cursor counts seconds), and no install is counted twice, even
    // through the regional node.
    let quiet = rolled_up(&b).await;
    assert_eq!((quiet.statuses, quiet.reset), (0, false));
    assert!(quiet.computers <= 2);
    rolled_up(&a).await;
    rolled_up(&regional).await;
    let again = json(&get(&admin("/api/v1/downstreams"), &[]).await);
    for node in [&a, &b] {
        assert_eq!(
            installs(&again, &server_id(node)),
            installs(&servers, &server_id(node))
        );
    }

    // The root loses what it had (a restored database): a new reset GUID, and branch B
    // sends everything again.
    wsus_edge::state::Journal::open(&database(&dir.path().join("root")))
        .unwrap()
        .reset_rollup()
        .unwrap();
    let again = rolled_up(&b).await;
    assert!(again.reset);
    assert_eq!((again.computers, again.statuses), (2, 2));

    for n in [a, b, regional, root] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}

/// What RollupComputerStatus keeps is what one statement per state, in the order sent, would
/// keep, on either database (on PostgreSQL a call's states are kept in three statements): of a
/// computer listed twice, its full list replaces what came before it; of a state listed twice,
/// the later change wins, and an older one never replaces a newer; an unknown computer is
/// ignored; each computer keeps its last rollup number.
#[test]
fn rolled_states_are_kept_as_sent_in_order() {
    use wsus_edge::catalog::Guid;
    use wsus_edge::report::{
        Computer, RolledComputer, RolledServer, RolledStatus, ServerSummary, UpdateState::*,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut journal = wsus_edge::state::Journal::open(&database(&dir.path().join("root"))).unwrap();
    let (server, now) = (Guid::random(), 1_800_000_000);
    journal
        .roll_servers(
            &[RolledServer {
                id: server,
                name: "branch".into(),
                parent: Guid::NIL,
                is_replica: true,
                version: "test".into(),
                last_sync: Some(now),
                last_rollup: Some(now),
                sent_at: now,
                summary: ServerSummary::default(),
                clients: Vec::new(),
            }],
            now,
        )
        .unwrap();
    let computer = |id: &str| RolledComputer {
        id: id.into(),
        parent: server,
        last_sync: Some(now),
        last_status: Some(now),
        details: Some(Computer {
            client_id: id.into(),
            dns_name: format!("{id}.example"),
            ..Computer::default()
        }),
    };
    journal
        .roll_computers(&[computer("pc1"), computer("pc2")], now)
        .unwrap();
    let mut guids: Vec<Guid> = (0..3).map(|_| Guid::random()).collect();
    guids.sort_by_key(|g| g.to_string());
    let [g1, g2, g3] = [guids[0], guids[1], guids[2]];
    let status = |id: &str, number: i64, full: bool, updates| RolledStatus {
        id: id.into(),
        rollup_number: number,
        full,
        detection: Some(now),
        updates,
    };
    journal
        .roll_status(&[
            status("pc1", 1, false, vec![(g1, Installed, 10)]),
            status("pc1", 2, true, vec![(g2, Failed, 5), (g3, NotInstalled, 5)]),
            status(
                "pc1",
                3,
                false,
                vec![(g2, Installed, 6), (g2, Failed, 6), (g3, Installed, 4)],
            ),
            status("pc2", 4, false, vec![(g1, Installed, 7)]),
            status("ghost", 5, true, vec![(g1, Installed, 7)]),
            status("pc2", 6, false, vec![(g1, Failed, 3)]),
        ])
        .unwrap();
    assert_eq!(
        journal.computer_updates("pc1").unwrap(),
        [(g2, Failed, 6), (g3, NotInstalled, 5)]
    );
    assert_eq!(
        journal.computer_updates("pc2").unwrap(),
        [(g1, Installed, 7)]
    );
    assert!(journal.computer_updates("ghost").unwrap().is_empty());
    assert_eq!(
        journal.rollup_numbers().unwrap(),
        [("pc1".to_string(), 3), ("pc2".to_string(), 6)]
    );
    counted_as_kept(&journal);
    // A later full list replaces everything kept, its older states included.
    journal
        .roll_status(&[status("pc1", 7, true, vec![(g1, Installed, 1)])])
        .unwrap();
    assert_eq!(
        journal.computer_updates("pc1").unwrap(),
        [(g1, Installed, 1)]
    );
    counted_as_kept(&journal);
}

/// The per-state counts the computer lists show (kept by triggers) are those of the states
/// kept, computer by computer.
fn counted_as_kept(journal: &wsus_edge::state::Journal) {
    use wsus_edge::report::ComputerFilter;
    for computer in journal.computers(ComputerFilter::All).unwrap() {
        let mut kept = std::collections::BTreeMap::new();
        for (_, state, _) in journal.computer_updates(&computer.client_id).unwrap() {
            *kept.entry(state.name()).or_insert(0u64) += 1;
        }
        let counted: std::collections::BTreeMap<&str, u64> = computer
            .updates
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (*s, *n))
            .collect();
        assert_eq!(counted, kept, "{}", computer.client_id);
    }
}

/// Unapproved updates are sent to clients for evaluation (PreDeploymentCheck): a client
/// reports one as needed, its branch and (after the rollup) the root count it, and once the
/// root approves it the client's next scan is told to install it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_updates_are_evaluated_counted_and_then_approved() {
    use wsus_edge::simulate::wua;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-token");
    std::fs::write(&tokens, "token").unwrap();
    let extra = format!("[admin]\ntoken_file = {:?}\n", tokens.to_string_lossy());
    let (root, all, ringed) = catalog_root_with(dir.path(), &extra).await;
    let branch = downstream(dir.path(), "branch", &root).await;
    replica_until(&branch, |s| s.syncs >= 1 && s.failed_syncs == 0).await;
    let catalog = root.app.served.catalog();
    let unapproved: Vec<_> = catalog
        .approvable(None)
        .unwrap()
        .iter()
        .filter_map(|&r| catalog.revision(r).map(|r| r.update_id))
        .filter(|id| !all.contains(id))
        .collect();
    // Those approved for Ring 1 only are not deployed to a computer outside it either.
    assert!(ringed.iter().all(|id| unapproved.contains(id)));

    let soap = wua::soap_client();
    let base = format!("http://{}", branch.listening().http);
    let machine = wua::Machine::new(31, None);
    let mut scan = wua::scan(&soap, &base, &machine).await.unwrap();
    // Updates not approved for the client (those whose prerequisites it meets) are sent for
    // evaluation, none of them offered; the approved are offered as before.
    let evaluated: Vec<_> = scan
        .received
        .iter()
        .filter(|o| o.action == "PreDeploymentCheck")
        .map(|o| o.update_id)
        .collect();
    assert!(!evaluated.is_empty());
    assert!(
        evaluated.iter().all(|id| unapproved.contains(id)),
        "{evaluated:?}"
    );
    let update = evaluated[0];
    let offered: std::collections::BTreeSet<_> = scan.offered.iter().map(|o| o.update_id).collect();
    assert_eq!(offered, all.iter().copied().collect());
    wua::report(&soap, &base, &machine, &mut scan, 0)
        .await
        .unwrap();

    let needed = |node: &Running| {
        let url = format!(
            "http://{}/api/v1/updates/{update}/status",
            node.listening().admin
        );
        async move {
            let got = get(&url, &[]).await;
            assert_eq!(got.status, 200);
            json(&got)["computers"]["needed"].as_u64().unwrap_or(0)
        }
    };
    assert_eq!(needed(&branch).await, 1, "the branch counts it");
    assert_eq!(needed(&root).await, 0, "not rolled up yet");
    rolled_up(&branch).await;
    assert_eq!(
        needed(&root).await,
        1,
        "the root counts it after the rollup"
    );

    // Approved at the root: the client's next scan is told to install it.
    let approvals = format!("http://{}/api/v1/approvals", root.listening().admin);
    let body = format!(r#"{{"group": "All Computers", "updates": ["{update}"]}}"#);
    assert_eq!(
        call("POST", &approvals, Some("token"), &body).await.status,
        200
    );
    let replica = branch.app.replica.as_ref().unwrap();
    let before = replica.status().borrow().syncs;
    replica.sync_now();
    replica_until(&branch, |s| s.syncs > before && s.last_error.is_none()).await;
    // The client holds it: its deployment comes as a change.
    let revision = branch.app.served.catalog().latest(update).unwrap().id;
    let changed = |scan: &wua::Scan| {
        scan.changed
            .iter()
            .find(|(r, _)| *r == revision)
            .map(|(_, a)| a.clone())
    };
    let again = wua::rescan(&soap, &base, &machine, &scan.cache)
        .await
        .unwrap();
    assert_eq!(
        changed(&again).as_deref(),
        Some("Install"),
        "{:?}",
        again.changed
    );
    // And when the approval is taken back, the next scan hears of that too.
    let body = format!(
        r#"{{"group": "All Computers", "updates": ["{update}"], "action": "notapproved"}}"#
    );
    assert_eq!(
        call("POST", &approvals, Some("token"), &body).await.status,
        200
    );
    let before = replica.status().borrow().syncs;
    replica.sync_now();
    replica_until(&branch, |s| s.syncs > before && s.last_error.is_none()).await;
    let last = wua::rescan(&soap, &base, &machine, &again.cache)
        .await
        .unwrap();
    assert_eq!(
        changed(&last).as_deref(),
        Some("PreDeploymentCheck"),
        "{:?}",
        last.changed
    );
}
