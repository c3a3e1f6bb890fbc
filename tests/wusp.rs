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
    assert!(again.changed.is_empty());
    let forgetful = wua::Cache {
        cookie: None,
        ..scan.cache.clone()
    };
    let anew = wua::rescan(&soap, &base(&node), &unassigned, &forgetful)
        .await
        .unwrap();
    assert!(anew.received.is_empty(), "{:?}", anew.received);
    assert!(
        anew.changed.len() >= all.len(),
        "{} deployments sent again for {} approved updates",
        anew.changed.len(),
        all.len()
    );

    let ring_machine = wua::Machine::new(2, Some("Ring 1"));
    let ring_scan = wua::scan(&soap, &base(&node), &ring_machine).await.unwrap();
    let want: BTreeSet<Guid> = all.iter().chain(&ringed).copied().collect();
    assert_eq!(updates(&ring_scan), want);
    // Dependencies were delivered for evaluation, never offered: categories, detectoids.
    assert!(ring_scan.received.iter().any(|o| o.action == "Evaluate"));
    // The members of approved bundles arrive as Bundle.
    let catalog = Store::open(&database(&dir.path().join("root")))
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
    let journal = Journal::open(&database(&dir.path().join("root"))).unwrap();
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
    // What it was sent for evaluation alone it reported needed; the rest as installed.
    let evaluated = ring_scan
        .received
        .iter()
        .filter(|o| o.action == "PreDeploymentCheck")
        .count();
    let needed = states.iter().filter(|u| u["state"] == "needed").count();
    assert_eq!((states.len() - needed, needed), (want.len(), evaluated));
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
    let mut store = Store::open(&database(&data)).unwrap();
    store.import(&g.documents).unwrap();
    let service = Served::open(&database(&data)).unwrap();
    assert!(!service.reload_if_changed().unwrap(), "nothing changed");

    let mut journal = Journal::open(&database(&data)).unwrap();
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

/// Sends `body` to the client service with the headers of the captured Windows 11 GetConfig
/// request (`Accept-Encoding: xpress` among them), the SOAPAction of `operation`; without
/// Accept-Encoding when `plain`. Returns the answer's Content-Encoding and body as sent.
async fn as_windows_sends(
    node: &Running,
    operation: &str,
    body: Vec<u8>,
    plain: bool,
) -> (Option<String>, Vec<u8>) {
    let captured = std::fs::read_to_string(format!(
        "{}/samples/native-wua-capture/01-GetConfig.request.headers",
        shared_protocol()
    ))
    .unwrap();
    let mut lines = captured.lines();
    let request_line = lines.next().unwrap();
    let path = request_line.split(' ').nth(1).unwrap();
    let mut request = http::Request::post(format!("{}{path}", base(node)));
    let mut offered_xpress = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(": ").unwrap();
        match name.to_ascii_lowercase().as_str() {
            // The transport's own.
            "host" | "content-length" | "connection" => {}
            "accept-encoding" => {
                offered_xpress = value == "xpress";
                if !plain {
                    request = request.header(name, value);
                }
            }
            "soapaction" => {
                let action = value.replace("GetConfig", operation);
                request = request.header(name, action);
            }
            _ => request = request.header(name, value),
        }
    }
    assert!(offered_xpress, "the capture offers xpress");
    let response =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http()
            .request(
                request
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["vary"], "Accept-Encoding");
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (encoding, body.to_vec())
}

/// An xpress body read block by block with an independent decoder (`rust-lzxpress`, MS-XCA's
/// plain LZ77 = MS-WUSP §2.1.1.1), each block's header checked against what it holds.
fn their_decoding(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let size = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap()) as usize;
        let (original, compressed) = (size(0), size(4));
        assert!(
            original <= 65_535 && compressed <= 65_535,
            "§2.1.1 block bounds"
        );
        let block = &body[8..8 + compressed];
        // That decoder takes no end bit: a last flag word holding only it is left off for it.
        let block = block
            .strip_suffix(&(1u32 << 31).to_le_bytes())
            .unwrap_or(block);
        let decoded = lzxpress::data::decompress(block).unwrap();
        assert_eq!(
            decoded.len(),
            original,
            "a block decodes to its header's size"
        );
        out.extend(decoded);
        body = &body[8 + compressed..];
    }
    out
}

/// MS-WUSP §2.1: a Windows client's request with `Accept-Encoding: xpress` is answered
/// xpress-coded, and the coded answer decodes to the very bytes of the uncompressed one; a
/// fleet asking xpress gets the same offers for a fraction of the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_requests_offering_xpress_get_xpress_answers_of_the_same_bytes() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, all, _) = catalog_root(dir.path()).await;

    let captured_body = std::fs::read(format!(
        "{}/samples/native-wua-capture/01-GetConfig.request.body.xml",
        shared_protocol()
    ))
    .unwrap();
    let (coding, coded) = as_windows_sends(&node, "GetConfig", captured_body.clone(), false).await;
    let (none, plain) = as_windows_sends(&node, "GetConfig", captured_body, true).await;
    assert_eq!((coding.as_deref(), none), (Some("xpress"), None));
    assert_eq!(their_decoding(&coded), plain);
    assert_eq!(
        wsus_edge::http::xpress::decompress(&coded, plain.len()).unwrap(),
        plain
    );

    // A large answer: the extended information of as much as a client may ask at once.
    let soap = wua::soap_client();
    let machine = wua::Machine::new(1, None);
    let scan = wua::scan(&soap, &base(&node), &machine).await.unwrap();
    assert_eq!(updates(&scan), all.iter().copied().collect());
    let cookie = wua::client_cookie(&soap, &base(&node), &machine)
        .await
        .unwrap();
    let revisions: Vec<u32> = scan
        .cache
        .other
        .iter()
        .chain(&scan.cache.installed)
        .copied()
        .take(wsus_edge::wusp::Settings::default().max_extended)
        .collect();
    let geui = wsus_edge::soap_client::envelope(
        wsus_edge::soap_client::Caller::WindowsClient,
        wsus_edge::wusp::CLIENT_NS,
        "GetExtendedUpdateInfo",
        &wua::request::extended_update_info(&cookie, &revisions),
    );
    let (coding, coded) = as_windows_sends(
        &node,
        "GetExtendedUpdateInfo",
        geui.clone().into_bytes(),
        false,
    )
    .await;
    let (_, plain) =
        as_windows_sends(&node, "GetExtendedUpdateInfo", geui.into_bytes(), true).await;
    assert_eq!(coding.as_deref(), Some("xpress"));
    assert!(
        String::from_utf8_lossy(&plain).contains("<Xml>"),
        "fragments were sent"
    );
    assert!(
        coded.len() * 3 < plain.len(),
        "{} bytes coded of {}",
        coded.len(),
        plain.len()
    );
    assert_eq!(their_decoding(&coded), plain);

    // The simulated clients ask xpress as Windows does; asking nothing, they get the same
    // offers in more bytes.
    let plain_soap = wua::soap_client_accepting(wsus_edge::http::coding::Coding::Identity);
    let uncoded = wua::scan(&plain_soap, &base(&node), &machine)
        .await
        .unwrap();
    assert_eq!(updates(&uncoded), updates(&scan));
    assert!(
        scan.answer_bytes * 2 < uncoded.answer_bytes,
        "a scan's answers: {} bytes xpress-coded, {} not",
        scan.answer_bytes,
        uncoded.answer_bytes
    );
    node.shutdown(Duration::from_secs(1)).await;
}

/// GetExtendedUpdateInfo2 (MS-WUSP 2.2.2.2.10) asks by update identity: the fragments asked,
/// file locations when FileUrl is asked, and per update whether its files are encrypted
/// (`File/@IsEncrypted`, read at import); identities unknown here are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_info_by_identity_says_which_updates_have_encrypted_files() {
    use wsus_edge::catalog::{ALL_COMPUTERS, Action};
    use wsus_edge::testkit::generate;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("root");
    let payloads = dir.path().join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    let g = generate::generate(40, 3, 8 << 20, &payloads).unwrap();
    // Its file is marked encrypted, as a feature update's are.
    let encrypted = g.encrypted[0];
    let plain = *g.deployable.iter().find(|id| **id != encrypted).unwrap();
    wsus_edge::content::import_dir(&data, &payloads).unwrap();
    let mut store = Store::open(&database(&data)).unwrap();
    store.import(&g.documents).unwrap();
    let catalog = store.load().unwrap();
    let latest = |id: &Guid| catalog.latest(*id).unwrap();
    let revisions: Vec<u32> = g.deployable.iter().map(|id| latest(id).id).collect();
    store
        .approve(&revisions, ALL_COMPUTERS, Action::Install, None, 1_000)
        .unwrap();
    let identity = |id: Guid| (id, latest(&id).revision_number);
    drop(store);
    let node = start(&node_config(&data, None, "", "")).await;
    let soap = wua::soap_client();
    let machine = wua::Machine::new(3, None);
    wua::scan(&soap, &base(&node), &machine).await.unwrap();
    let cookie = wua::client_cookie(&soap, &base(&node), &machine)
        .await
        .unwrap();

    let ask = |types: &[&str], ids: &[(Guid, u32)]| {
        let identities: String = ids
            .iter()
            .map(|(id, revision)| {
                format!(
                    "<UpdateIdentity><UpdateID>{id}</UpdateID>\
                     <RevisionNumber>{revision}</RevisionNumber></UpdateIdentity>"
                )
            })
            .collect();
        let types: String = types
            .iter()
            .map(|t| format!("<XmlUpdateFragmentType>{t}</XmlUpdateFragmentType>"))
            .collect();
        wsus_edge::soap_client::envelope(
            wsus_edge::soap_client::Caller::WindowsClient,
            wsus_edge::wusp::CLIENT_NS,
            "GetExtendedUpdateInfo2",
            &format!(
                "{}<updateIDs>{identities}</updateIDs><infoTypes>{types}</infoTypes>\
                 <locales><string>en-US</string></locales>",
                wua::request::cookie_xml("cookie", &cookie)
            ),
        )
    };
    let unknown = (
        Guid::parse("00000000-0000-4000-8000-000000000001").unwrap(),
        1,
    );
    let asked = [identity(encrypted), identity(plain), unknown];
    let body = ask(&["Extended", "FileUrl", "FileDecryption"], &asked);
    let post = |body: String| {
        let url = url(&node, "/ClientWebService/client.asmx");
        async move {
            let request = http::Request::post(url)
                .header("content-type", "text/xml; charset=utf-8")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let response =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http()
                    .request(request)
                    .await
                    .unwrap();
            assert_eq!(response.status(), 200);
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            let limits = wsus_edge::soap::Limits {
                max_bytes: 64 << 20,
                ..wsus_edge::soap::Limits::default()
            };
            wsus_edge::soap::parse(&body, &limits).unwrap().operation
        }
    };
    let op = post(body).await;
    let result = op.child("GetExtendedUpdateInfo2Result").unwrap();
    let details: Vec<(String, bool)> = result
        .child("UpdateEncryptionDetails")
        .unwrap()
        .children_named("UpdateEncryptionDetail")
        .map(|d| {
            let id = d
                .child("UpdateIdentity")
                .unwrap()
                .child_text("UpdateID")
                .unwrap();
            (
                id.to_owned(),
                d.child_text("HasEncryptedFiles") == Some("true"),
            )
        })
        .collect();
    assert_eq!(
        details,
        [(encrypted.to_string(), true), (plain.to_string(), false)],
        "the unknown identity is left out"
    );
    let fragments = result
        .child("Updates")
        .unwrap()
        .children_named("Update")
        .count();
    assert_eq!(fragments, 2, "one Extended fragment per known update");
    let locations = result
        .child("FileLocations")
        .unwrap()
        .children_named("FileLocation")
        .count();
    assert!(locations >= 2, "{locations} file locations");
    assert!(
        result.child("FileDecryptionData").is_none(),
        "no key is held here (tests/sync.rs gives keys)"
    );

    // Without FileUrl, no file locations.
    let op = post(ask(&["Extended"], &asked)).await;
    let result = op.child("GetExtendedUpdateInfo2Result").unwrap();
    assert!(result.child("FileLocations").is_none());
    assert!(result.child("Updates").is_some());
    node.shutdown(Duration::from_secs(1)).await;
}

/// The driver pass of SyncUpdates (MS-WUSP 3.1.5.7) with a Windows 11 laptop's devices: of
/// the approved drivers, the best for each device that beats what is installed, with the
/// hardware ids it was chosen for; nothing unapproved, nothing whose prerequisites are not
/// installed, nothing for a device with a better driver; what the client caches is not sent
/// again, and a driver whose approval is taken back is out of scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_pass_sends_the_best_approved_driver_for_each_device() {
    use wsus_edge::catalog::{ALL_COMPUTERS, Action, Decision};
    use wsus_edge::testkit::drivers::{Metadata, document, windows_11_laptop};
    use wsus_edge::testkit::generate;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("root");
    let payloads = dir.path().join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    let g = generate::generate(20, 5, 2 << 20, &payloads).unwrap();
    let gpu = "PCI\\VEN_8086&DEV_46A8";
    let display = |date: &str, version: &str| {
        let mut m = Metadata::new(gpu, date, version, "Intel Corporation");
        m.class = "Display".into();
        m.feature_scores = vec![("AMD64.10.0".into(), 0xF6)];
        m
    };
    let finger = Metadata::new(
        "USB\\VID_27C6&PID_63AC",
        "2022-01-01",
        "3.12.804.1",
        "Goodix",
    );
    let touchpad = Metadata::new("ACPI\\SYNA2BA6", "2021-04-01", "19.5.35.1", "Synaptics");
    let unknown = Guid::parse("00000000-0000-4000-8000-00000000d7d7").unwrap();
    let mut printer = Metadata::new(
        "HPLaserJetM404_Series",
        "2023-10-01",
        "61.290.1.25111",
        "HP",
    );
    printer.class = "Printers".into();
    let id = |n: u128| Guid(0xd71e_0000 + n);
    // (update, prerequisites, metadata, approved)
    let drivers: Vec<(Guid, Vec<Guid>, Vec<Metadata>, bool)> = vec![
        (
            id(1),
            vec![],
            vec![display("2024-01-12", "31.0.101.5186")],
            true,
        ),
        // Older than the one installed on the laptop.
        (
            id(2),
            vec![],
            vec![display("2023-02-01", "31.0.101.4255")],
            true,
        ),
        // Newer than both, but not approved.
        (
            id(3),
            vec![],
            vec![display("2024-06-01", "31.0.101.5522")],
            false,
        ),
        (id(4), vec![], vec![finger.clone()], true),
        // A touchpad driver whose prerequisite the client does not have.
        (id(5), vec![unknown], vec![touchpad], true),
        // For hardware the laptop does not have.
        (
            id(6),
            vec![],
            vec![Metadata::new(
                "PCI\\VEN_10DE&DEV_2520",
                "2024-01-01",
                "31.0.15.5222",
                "NVIDIA",
            )],
            true,
        ),
        // A printer driver: not for the laptop's print queue (another manufacturer), but in
        // the Add Printer Wizard's catalog.
        (id(7), vec![], vec![printer.clone()], true),
    ];
    let mut documents = g.documents.clone();
    documents.extend(drivers.iter().map(|(update, pre, metadata, _)| {
        document(
            *update,
            100,
            &format!("Driver {update}"),
            pre,
            metadata,
            None,
        )
    }));
    wsus_edge::content::import_dir(&data, &payloads).unwrap();
    let mut store = Store::open(&database(&data)).unwrap();
    store.import(&documents).unwrap();
    let catalog = store.load().unwrap();
    let approved: Vec<u32> = drivers
        .iter()
        .filter(|d| d.3)
        .map(|d| catalog.latest(d.0).unwrap().id)
        .collect();
    store
        .approve(&approved, ALL_COMPUTERS, Action::Install, None, 1_000)
        .unwrap();
    drop(store);
    let node = start(&node_config(&data, None, "", "")).await;
    let soap = wua::soap_client();
    let machine = wua::Machine::new(7, None);
    wua::scan(&soap, &base(&node), &machine).await.unwrap();
    let cookie = wua::client_cookie(&soap, &base(&node), &machine)
        .await
        .unwrap();
    let (spec, rest) = windows_11_laptop().parameters();
    let pass = |cached: Vec<u32>| {
        let cookie = cookie.clone();
        let (spec, rest) = (spec.clone(), rest.clone());
        let url = url(&node, "/ClientWebService/client.asmx");
        async move {
            let cached: String = cached.iter().map(|c| format!("<int>{c}</int>")).collect();
            let inner = format!(
                "{}<parameters><ExpressQuery>false</ExpressQuery>{spec}\
                 <CachedDriverIDs>{cached}</CachedDriverIDs><SkipSoftwareSync>true</SkipSoftwareSync>\
                 <NeedTwoGroupOutOfScopeUpdates>true</NeedTwoGroupOutOfScopeUpdates>{rest}</parameters>",
                wua::request::cookie_xml("cookie", &cookie)
            );
            let (status, _, op) = soap_call_to(
                &url,
                wsus_edge::wusp::CLIENT_NS,
                "SyncUpdates",
                &inner,
                None,
            )
            .await;
            assert_eq!(status, 200, "{op:?}");
            op.unwrap()
        }
    };
    let op = pass(Vec::new()).await;
    let result = op.child("SyncUpdatesResult").unwrap();
    assert_eq!(result.child_text("DriverSyncNotNeeded"), Some("false"));
    let catalog = node.app.served.catalog();
    let sent: Vec<(Guid, String, Vec<String>)> = result
        .child("NewUpdates")
        .unwrap()
        .children_named("UpdateInfo")
        .map(|u| {
            let revision: u32 = u.child_text("ID").unwrap().parse().unwrap();
            let deployment = u.child("Deployment").unwrap();
            let ids = deployment
                .child("HardwareIds")
                .unwrap()
                .children_named("string")
                .map(|s| s.text().to_owned())
                .collect();
            (
                catalog.revision(revision).unwrap().update_id,
                deployment.child_text("Action").unwrap().to_owned(),
                ids,
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            (id(1), "Install".to_owned(), vec![gpu.to_owned()]),
            (
                id(4),
                "Install".to_owned(),
                vec![finger.hardware_id.clone()]
            ),
        ]
    );
    let revisions: Vec<u32> = [id(1), id(4)]
        .iter()
        .map(|u| catalog.latest(*u).unwrap().id)
        .collect();
    // The node keeps the device ids the pass listed, in lower case, once each: what it asks
    // its upstream for when it syncs drivers on demand.
    let listed: BTreeSet<String> = windows_11_laptop()
        .devices
        .iter()
        .flat_map(|d| d.hardware_ids.iter().chain(&d.compatible_ids))
        .map(|i| i.to_lowercase())
        .collect();
    let kept = until("the device ids kept", Duration::from_secs(10), async || {
        let kept: BTreeSet<String> = Journal::open(&database(&data))
            .unwrap()
            .device_ids()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if kept.len() == listed.len() {
            Ok(kept)
        } else {
            Err(format!("{} of {} kept", kept.len(), listed.len()))
        }
    })
    .await;
    assert_eq!(kept, listed);

    // Cached: nothing new, nothing out of scope. Then the display driver's approval is taken
    // back: it is out of scope.
    let op = pass(revisions.clone()).await;
    let result = op.child("SyncUpdatesResult").unwrap();
    assert!(result.child("NewUpdates").is_none());
    assert!(result.child("OutOfScopeRevisionIDs").is_none());
    node.app
        .served
        .change(|s, c| {
            s.decide(
                c,
                Some(&[id(1)]),
                "All Computers",
                Decision::NotApproved,
                None,
            )
        })
        .unwrap();
    let cookie = wua::client_cookie(&soap, &base(&node), &machine)
        .await
        .unwrap();
    let (spec, rest) = (spec.clone(), rest.clone());
    let inner = format!(
        "{}<parameters><ExpressQuery>false</ExpressQuery>{spec}<CachedDriverIDs>{}</CachedDriverIDs>\
         <SkipSoftwareSync>true</SkipSoftwareSync>{rest}</parameters>",
        wua::request::cookie_xml("cookie", &cookie),
        revisions
            .iter()
            .map(|r| format!("<int>{r}</int>"))
            .collect::<String>()
    );
    let (status, _, op) = soap_call(
        &node,
        "/ClientWebService/client.asmx",
        wsus_edge::wusp::CLIENT_NS,
        "SyncUpdates",
        &inner,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let op = op.unwrap();
    let result = op.child("SyncUpdatesResult").unwrap();
    let gone: Vec<u32> = result
        .child("OutOfScopeRevisionIDs")
        .unwrap()
        .children_named("int")
        .map(|i| i.text().parse().unwrap())
        .collect();
    assert_eq!(gone, revisions[..1]);

    // The Add Printer Wizard's catalog: the printer driver, then nothing new once cached, and
    // a cached printer driver this node does not have is out of scope.
    let printers = |cached: &[u32]| {
        let inner = format!(
            "{}<installedNonLeafUpdateIDs/><printerUpdateIDs>{}</printerUpdateIDs>",
            wua::request::cookie_xml("cookie", &cookie),
            cached
                .iter()
                .map(|r| format!("<int>{r}</int>"))
                .collect::<String>()
        );
        let node = &node;
        async move {
            let (status, _, op) = soap_call(
                node,
                "/ClientWebService/client.asmx",
                wsus_edge::wusp::CLIENT_NS,
                "SyncPrinterCatalog",
                &inner,
                None,
            )
            .await;
            assert_eq!(status, 200, "{op:?}");
            op.unwrap()
        }
    };
    let printer_revision = catalog.latest(id(7)).unwrap().id;
    let op = printers(&[]).await;
    let result = op.child("SyncPrinterCatalogResult").unwrap();
    let sent: Vec<(u32, Vec<String>)> = result
        .child("NewUpdates")
        .unwrap()
        .children_named("UpdateInfo")
        .map(|u| {
            (
                u.child_text("ID").unwrap().parse().unwrap(),
                u.child("Deployment")
                    .unwrap()
                    .child("HardwareIds")
                    .unwrap()
                    .children_named("string")
                    .map(|s| s.text().to_owned())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [(printer_revision, vec![printer.hardware_id.clone()])]
    );
    let op = printers(&[printer_revision, 987_654]).await;
    let result = op.child("SyncPrinterCatalogResult").unwrap();
    assert!(result.child("NewUpdates").is_none());
    let gone: Vec<&str> = result
        .child("OutOfScopeRevisionIDs")
        .unwrap()
        .children_named("int")
        .map(|i| i.text())
        .collect();
    assert_eq!(gone, ["987654"]);

    // Microsoft's example SyncUpdates requests (MS-WUSP 4, a Windows XP client's software
    // passes with a nil SystemSpec and nil CachedDriverIDs), with this node's cookie: answered,
    // and never with a driver. The first, made a driver pass with the laptop's devices, gets
    // the approved driver for its fingerprint reader.
    let examples = format!("{}/samples/spec-examples", shared_protocol());
    let with_cookie = |text: &str| {
        let (start, end) = (
            text.find("<cookie>").unwrap(),
            text.find("</cookie>").unwrap(),
        );
        format!(
            "{}{}{}",
            &text[..start],
            wua::request::cookie_xml("cookie", &cookie),
            &text[end + "</cookie>".len()..]
        )
    };
    let post_example = |body: String| {
        let url = url(&node, "/ClientWebService/client.asmx");
        async move {
            let request = http::Request::post(url)
                .header("content-type", "text/xml; charset=utf-8")
                .header(
                    "soapaction",
                    "\"http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService/SyncUpdates\"",
                )
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let response =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http()
                    .request(request)
                    .await
                    .unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            wsus_edge::soap::parse(&body, &wsus_edge::soap::Limits::default())
                .unwrap()
                .operation
        }
    };
    let mut first = None;
    for name in [
        "wusp-15-AUTHORIZATION-PHASE-SyncUpdates-Request-Very-First-from-WinXP.xml",
        "wusp-16-AUTHORIZATION-PHASE-SyncUpdates-Request-Second-Request-from-WinXP-after-R.xml",
        "wusp-17-AUTHORIZATION-PHASE-SyncUpdates-Request-Third-Request-from-WinXP-after-R.xml",
        "wusp-18-AUTHORIZATION-PHASE-SyncUpdates-Request-Fourth-Request-from-WinXP-after-R.xml",
    ] {
        let text = std::fs::read_to_string(format!("{examples}/{name}")).unwrap();
        let op = post_example(with_cookie(&text)).await;
        let result = op.child("SyncUpdatesResult").expect(name);
        let sent_drivers = result
            .child("NewUpdates")
            .into_iter()
            .flat_map(|n| n.children_named("UpdateInfo"))
            .filter(|u| {
                u.child_text("Xml")
                    .unwrap_or("")
                    .contains("d.WindowsDriverMetaData")
            })
            .count();
        assert_eq!(sent_drivers, 0, "{name}: a software pass sends no driver");
        first.get_or_insert(text);
    }
    let driver_pass = with_cookie(first.as_deref().unwrap())
        .replace("<SystemSpec xsi:nil=\"1\" />", &spec)
        .replace(
            "<SkipSoftwareSync>false</SkipSoftwareSync>",
            &format!("<SkipSoftwareSync>true</SkipSoftwareSync>{rest}"),
        );
    let op = post_example(driver_pass).await;
    let drivers: Vec<Guid> = op
        .child("SyncUpdatesResult")
        .unwrap()
        .child("NewUpdates")
        .unwrap()
        .children_named("UpdateInfo")
        .map(|u| {
            let revision: u32 = u.child_text("ID").unwrap().parse().unwrap();
            catalog.revision(revision).unwrap().update_id
        })
        .collect();
    assert_eq!(drivers, [id(4)]);

    // A SystemSpec in the software pass is refused, as WSUS does.
    let inner = format!(
        "{}<parameters><ExpressQuery>false</ExpressQuery>{spec}\
         <SkipSoftwareSync>false</SkipSoftwareSync></parameters>",
        wua::request::cookie_xml("cookie", &cookie)
    );
    let (status, _, fault) = soap_call(
        &node,
        "/ClientWebService/client.asmx",
        wsus_edge::wusp::CLIENT_NS,
        "SyncUpdates",
        &inner,
        None,
    )
    .await;
    assert_eq!(status, 500);
    assert!(
        format!("{fault:?}").contains("InvalidParameters"),
        "{fault:?}"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

/// A generated driver catalog (every driver approved) and a generated fleet of PCs, each with
/// its own computer model and devices: every simulated client's driver pass gets exactly the
/// best driver for each of its devices as an independent reading of MS-WUSP 3.1.5.7 picks it
/// (pairwise "better", below), and none for a device whose installed driver is better.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_fleet_gets_the_best_driver_for_each_device() {
    use std::collections::{BTreeMap, HashSet};
    use wsus_edge::catalog::{ALL_COMPUTERS, Action};
    use wsus_edge::testkit::drivers::{
        Device, DriverCatalog, GeneratedDriver, Pc, generate_drivers,
    };
    logs();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("root");
    let drivers = generate_drivers(400, 17);
    let mut store = Store::open(&database(&data)).unwrap();
    store.import(&drivers.documents).unwrap();
    let catalog = store.load().unwrap();
    let revisions: Vec<u32> = catalog.revisions().iter().map(|r| r.id).collect();
    store
        .approve(&revisions, ALL_COMPUTERS, Action::Install, None, 1_000)
        .unwrap();
    drop(store);
    let node = start(&node_config(&data, None, "", "")).await;

    // The oracle: a driver's standing for a device, compared field by field as the spec's
    // rules list them; None when it does not apply to this device on this computer.
    type Standing = (u32, u32, u32, i64, u64, u32);
    let packed = |v: &str| {
        v.split('.')
            .map(|p| p.parse::<u64>().unwrap())
            .fold(0, |a, p| a << 16 | p)
    };
    let day = |d: &str| wsus_edge::soap::xsd::parse_datetime(d).unwrap() / 86_400;
    let ids = |d: &Device| -> Vec<String> {
        d.hardware_ids
            .iter()
            .chain(&d.compatible_ids)
            .map(|s| s.to_lowercase())
            .collect()
    };
    let standing = |pc: &Pc, d: &Device, g: &GeneratedDriver| -> Option<Standing> {
        let m = &g.metadata;
        let position = ids(d)
            .iter()
            .position(|i| *i == m.hardware_id.to_lowercase())? as u32;
        let computer = if m.computers.is_empty() {
            u32::MAX
        } else {
            pc.computer.iter().position(|c| m.computers.contains(c))? as u32
        };
        let score = m
            .feature_scores
            .iter()
            .find(|(os, _)| os.eq_ignore_ascii_case(&pc.feature_key))
            .map_or(255, |(_, s)| u32::from(*s));
        Some((
            computer,
            score,
            position,
            day(&m.date),
            packed(&m.version),
            m.whql_id,
        ))
    };
    // a is better than b.
    let better = |a: &Standing, b: &Standing| {
        if a.0 != b.0 {
            return a.0 < b.0;
        }
        if a.1 != b.1 {
            return a.1 < b.1;
        }
        if a.2 != b.2 {
            return a.2 < b.2;
        }
        if a.3 != b.3 {
            return a.3 > b.3;
        }
        if a.4 != b.4 {
            return a.4 > b.4;
        }
        a.5 > b.5
    };
    let mut beaten_by_installed = 0;
    let mut expected_for = |c: &DriverCatalog, pc: &Pc| -> BTreeMap<Guid, Vec<String>> {
        let mut out: BTreeMap<Guid, Vec<String>> = BTreeMap::new();
        for d in &pc.devices {
            let mut best: Option<(Standing, &GeneratedDriver)> = None;
            for g in &c.drivers {
                if let Some(s) = standing(pc, d, g)
                    && best.as_ref().is_none_or(|(b, _)| better(&s, b))
                {
                    best = Some((s, g));
                }
            }
            let Some((s, g)) = best else { continue };
            if let Some(i) = &d.installed {
                let mine = (
                    u32::MAX,
                    ((i.rank >> 16) & 0xff) as u32,
                    ids(d)
                        .iter()
                        .position(|x| *x == i.matching_id.to_lowercase())
                        .unwrap() as u32,
                    day(&i.date),
                    packed(&i.version),
                    0,
                );
                if !better(&(s.0, s.1, s.2, s.3, s.4, 0), &mine) {
                    beaten_by_installed += 1;
                    continue;
                }
            }
            let chosen = out.entry(g.update_id).or_default();
            if !chosen.contains(&g.metadata.hardware_id) {
                chosen.push(g.metadata.hardware_id.clone());
            }
        }
        out
    };

    let soap = wua::soap_client();
    let mut sent = 0;
    let mut targeted = HashSet::new();
    for n in 0..24 {
        let pc = drivers.pc(n);
        let want = expected_for(&drivers, &pc);
        let machine = wua::Machine::new(n, None).with_pc(pc);
        let scan = wua::scan(&soap, &base(&node), &machine).await.unwrap();
        let got: BTreeMap<Guid, Vec<String>> = scan
            .drivers
            .iter()
            .map(|(o, ids)| (o.update_id, ids.clone()))
            .collect();
        let same_updates = got.keys().eq(want.keys());
        assert!(same_updates, "pc {n}: got {got:?}, want {want:?}");
        for (id, ids) in &want {
            let mut a = ids.clone();
            let mut b = got[id].clone();
            a.sort();
            b.sort();
            assert_eq!(a, b, "pc {n}: the hardware ids of {id}");
        }
        assert!(scan.drivers.iter().all(|(o, _)| o.action == "Install"));
        sent += got.len();
        targeted.extend(
            drivers
                .drivers
                .iter()
                .filter(|g| got.contains_key(&g.update_id) && !g.metadata.computers.is_empty())
                .map(|g| g.update_id),
        );
    }
    assert!(sent >= 24, "{sent} drivers sent to 24 PCs");
    assert!(
        beaten_by_installed > 0,
        "some devices have a better driver installed"
    );
    assert!(
        !targeted.is_empty(),
        "some computer-targeted drivers were chosen"
    );
    node.shutdown(Duration::from_secs(1)).await;
}
