//! The server-server protocol's upstream side over HTTP: a downstream server authorizes
//! (GetAuthConfig, DssAuth GetAuthorizationCookie, GetCookie) and reads the configuration
//! (GetConfigData); every fault of those operations; bearer tokens for downstream servers.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use wsus_edge::catalog::Guid;
use wsus_edge::node::Running;
use wsus_edge::soap::{self, Element};
use wsus_edge::wsusss::{DSS_AUTH_NS, MONITORABLE_NS, SERVER_SYNC_NS};

const SYNC: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";
const AUTH: &str = "/DssAuthWebService/DssAuthWebService.asmx";

fn error_code(fault: &Element) -> String {
    fault
        .child("detail")
        .and_then(|d| d.child_text("ErrorCode"))
        .unwrap_or("(none)")
        .to_owned()
}

fn result<'a>(op: &'a Element, name: &str) -> &'a Element {
    op.child(name)
        .unwrap_or_else(|| panic!("{name} missing in {op:?}"))
}

/// DssAuth then GetCookie: the session cookie's (Expiration, EncryptedData).
async fn authorize(node: &Running, token: Option<&str>) -> (String, String) {
    let id = Guid::random();
    let (status, _, op) = soap_call(
        node,
        AUTH,
        DSS_AUTH_NS,
        "GetAuthorizationCookie",
        &format!("<accountName>branch1.example.org</accountName><accountGuid>{id}</accountGuid>"),
        token,
    )
    .await;
    assert_eq!(status, 200);
    let op = op.unwrap();
    let auth = result(&op, "GetAuthorizationCookieResult");
    assert_eq!(auth.child_text("PlugInId"), Some("DssTargeting"));
    let data = auth.child_text("CookieData").unwrap().to_owned();
    let (status, _, op) = soap_call(
        node,
        SYNC,
        SERVER_SYNC_NS,
        "GetCookie",
        &format!(
            "<authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId>\
             <CookieData>{data}</CookieData></AuthorizationCookie></authCookies>\
             <protocolVersion>1.20</protocolVersion>"
        ),
        token,
    )
    .await;
    assert_eq!(status, 200);
    let op = op.unwrap();
    let cookie = result(&op, "GetCookieResult");
    (
        cookie.child_text("Expiration").unwrap().to_owned(),
        cookie.child_text("EncryptedData").unwrap().to_owned(),
    )
}

fn cookie_xml((expiration, data): &(String, String)) -> String {
    format!(
        "<cookie><Expiration>{expiration}</Expiration><EncryptedData>{data}</EncryptedData></cookie>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_server_authorizes_and_reads_the_configuration() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;

    let (status, _, op) = soap_call(&node, SYNC, SERVER_SYNC_NS, "GetAuthConfig", "", None).await;
    assert_eq!(status, 200);
    let op = op.unwrap();
    let config = result(&op, "GetAuthConfigResult");
    let plug_in = config
        .child("AuthInfo")
        .and_then(|a| a.child("AuthPlugInInfo"))
        .unwrap();
    assert_eq!(plug_in.child_text("PlugInID"), Some("DssTargeting"));
    assert_eq!(
        plug_in.child_text("ServiceUrl"),
        Some("DssAuthWebService/DssAuthWebService.asmx")
    );

    let cookie = authorize(&node, None).await;
    let expires = soap::xsd::parse_datetime(&cookie.0).unwrap();
    let now = wsus_edge::clock::unix_now();
    assert!(
        expires > now + 3 * 3600 && expires <= now + 4 * 3600 + 5,
        "{}",
        cookie.0
    );

    let (status, _, op) = soap_call(
        &node,
        SYNC,
        SERVER_SYNC_NS,
        "GetConfigData",
        &cookie_xml(&cookie),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let op = op.unwrap();
    let data = result(&op, "GetConfigDataResult");
    assert_eq!(data.child_text("MaxNumberOfUpdatesPerRequest"), Some("100"));
    assert_eq!(data.child_text("ProtocolVersion"), Some("1.20"));
    assert_eq!(data.child_text("LazySync"), Some("true"));
    let languages = |d: &Element| {
        d.child("LanguageUpdateList")
            .map(|l| l.children_named("ServerSyncLanguageData").count())
    };
    assert_eq!(languages(data), Some(1), "the one entry \"all\"");
    let anchor = data.child_text("NewConfigAnchor").unwrap().to_owned();
    // With the current anchor: nothing changed, an empty list.
    let (status, _, op) = soap_call(
        &node,
        SYNC,
        SERVER_SYNC_NS,
        "GetConfigData",
        &format!(
            "{}<configAnchor>{anchor}</configAnchor>",
            cookie_xml(&cookie)
        ),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let op = op.unwrap();
    let data = result(&op, "GetConfigDataResult");
    assert_eq!(languages(data), Some(0));
    assert_eq!(data.child_text("NewConfigAnchor"), Some(anchor.as_str()));

    // Ping at both services; paths in any case, with the doubled slash WSUS downstreams send.
    for path in [SYNC, "//dssauthwebservice/DSSAUTHWEBSERVICE.asmx"] {
        let (status, _, op) = soap_call(
            &node,
            path,
            MONITORABLE_NS,
            "Ping",
            "<pingLevel>0</pingLevel>",
            None,
        )
        .await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(op.unwrap().name, "PingResponse");
    }
    node.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_of_authorization_and_configuration() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    let fault = |got: (u16, Option<String>, Option<Element>)| {
        assert_eq!(got.0, 500);
        let op = got.2.expect("a SOAP fault");
        assert_eq!(op.name, "Fault");
        (
            error_code(&op),
            op.child("detail")
                .and_then(|d| d.child_text("Message"))
                .unwrap_or("")
                .to_owned(),
        )
    };

    for name in ["", "bad name!", &"a".repeat(300)] {
        let got = soap_call(
            &node,
            AUTH,
            DSS_AUTH_NS,
            "GetAuthorizationCookie",
            &format!(
                "<accountName>{name}</accountName><accountGuid>{}</accountGuid>",
                Guid::random()
            ),
            None,
        )
        .await;
        assert_eq!(
            fault(got),
            ("InvalidParameters".into(), "accountName".into())
        );
    }
    let got = soap_call(
        &node,
        AUTH,
        DSS_AUTH_NS,
        "GetAuthorizationCookie",
        "<accountName>b.example</accountName><accountGuid>not-a-guid</accountGuid>",
        None,
    )
    .await;
    assert_eq!(
        fault(got),
        ("InvalidParameters".into(), "accountGuid".into())
    );

    let (status, _, op) = soap_call(
        &node,
        AUTH,
        DSS_AUTH_NS,
        "GetAuthorizationCookie",
        &format!(
            "<accountName>b.example</accountName><accountGuid>{}</accountGuid>",
            Guid::random()
        ),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let data = result(&op.unwrap(), "GetAuthorizationCookieResult")
        .child_text("CookieData")
        .unwrap()
        .to_owned();
    let get_cookie = |cookies: Vec<String>, version: &str| {
        let cookies: String = cookies
            .iter()
            .map(|d| {
                format!(
                    "<AuthorizationCookie><PlugInId>DssTargeting</PlugInId>\
                     <CookieData>{d}</CookieData></AuthorizationCookie>"
                )
            })
            .collect();
        format!("<authCookies>{cookies}</authCookies><protocolVersion>{version}</protocolVersion>")
    };
    // One flipped character of the sealed data: the tag no longer verifies.
    let mut tampered = data.clone().into_bytes();
    tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases = [
        (
            get_cookie(vec![tampered], "1.20"),
            "InvalidAuthorizationCookie",
        ),
        (
            get_cookie(vec!["%%%".into()], "1.20"),
            "InvalidAuthorizationCookie",
        ),
        (
            get_cookie(vec![data.clone()], "2.0"),
            "IncompatibleProtocolVersion",
        ),
        (get_cookie(vec![data.clone()], "x"), "InvalidParameters"),
        (
            get_cookie(vec![data.clone(), data.clone()], "1.20"),
            "InvalidParameters",
        ),
        (get_cookie(vec![], "1.20"), "InvalidParameters"),
    ];
    for (inner, want) in cases {
        let got = soap_call(&node, SYNC, SERVER_SYNC_NS, "GetCookie", &inner, None).await;
        assert_eq!(fault(got).0, want, "{inner}");
    }

    // GetConfigData without a cookie, with the authorization cookie in its place (another
    // kind), with garbage: InvalidCookie.
    let now = soap::xsd::format_datetime(wsus_edge::clock::unix_now() + 3600);
    for inner in [
        String::new(),
        cookie_xml(&(now.clone(), data.clone())),
        cookie_xml(&(now.clone(), "AAAA".into())),
    ] {
        let got = soap_call(&node, SYNC, SERVER_SYNC_NS, "GetConfigData", &inner, None).await;
        assert_eq!(fault(got).0, "InvalidCookie", "{inner}");
    }
    // An operation of the other service.
    let got = soap_call(
        &node,
        SYNC,
        DSS_AUTH_NS,
        "GetAuthorizationCookie",
        "<accountName>b.example</accountName>",
        None,
    )
    .await;
    assert_eq!(fault(got).0, "InvalidParameters");
    node.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_servers_need_an_accepted_token_when_tokens_are_configured() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("downstream.tokens");
    std::fs::write(&tokens, "branch-one-secret\n\nbranch-two-secret\n").unwrap();
    let extra = format!(
        "[downstream]\ntoken_file = {:?}\n",
        tokens.to_string_lossy()
    );
    let (node, _, _) = catalog_root_with(dir.path(), &extra).await;
    let mark = log_mark();
    for token in [None, Some("wrong")] {
        let (status, challenge, _) =
            soap_call(&node, SYNC, SERVER_SYNC_NS, "GetAuthConfig", "", token).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(challenge.unwrap().starts_with("Bearer"));
        let (status, _, _) = soap_call(
            &node,
            AUTH,
            DSS_AUTH_NS,
            "GetAuthorizationCookie",
            "",
            token,
        )
        .await;
        assert_eq!(status, 401);
    }
    assert!(!logged_since(mark, &["downstream server refused"]).is_empty());
    let (status, _, _) = soap_call(
        &node,
        SYNC,
        SERVER_SYNC_NS,
        "GetAuthConfig",
        "",
        Some("branch-two-secret"),
    )
    .await;
    assert_eq!(status, 200);
    let cookie = authorize(&node, Some("branch-one-secret")).await;
    let (status, _, _) = soap_call(
        &node,
        SYNC,
        SERVER_SYNC_NS,
        "GetConfigData",
        &cookie_xml(&cookie),
        Some("branch-one-secret"),
    )
    .await;
    assert_eq!(status, 200);
    // Windows clients are not asked for a token.
    let (status, _, _) = soap_call(
        &node,
        "/ClientWebService/client.asmx",
        wsus_edge::wusp::CLIENT_NS,
        "GetConfig",
        "<protocolVersion>2.90</protocolVersion>",
        None,
    )
    .await;
    assert_eq!(status, 200);
    node.shutdown(std::time::Duration::from_secs(1)).await;
}

fn identities(op: &Element) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = result(op, "GetRevisionIdListResult")
        .child("NewRevisions")
        .map(|n| {
            n.children_named("UpdateIdentity")
                .map(|i| {
                    (
                        i.child_text("UpdateID").unwrap().to_owned(),
                        i.child_text("RevisionNumber").unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn filter(anchor: Option<&str>, config: bool, lists: &str) -> String {
    let anchor = anchor.map_or(String::new(), |a| format!("<Anchor>{a}</Anchor>"));
    format!(
        "<filter>{anchor}<GetConfig>{config}</GetConfig><Get63LanguageOnly>false\
         </Get63LanguageOnly>{lists}</filter>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_lists_and_update_data_feed_an_incremental_sync() {
    use wsus_edge::catalog::UpdateType;
    use wsus_edge::state::Store;
    use wsus_edge::testkit::generate;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    let data = dir.path().join("root");
    let catalog = Store::open(&database(&data)).unwrap().load().unwrap();
    let expect = |config: bool, catalog: &wsus_edge::catalog::Catalog| {
        let mut ids: Vec<(String, String)> = catalog
            .revisions()
            .iter()
            .filter(|r| {
                matches!(r.update_type, UpdateType::Category | UpdateType::Detectoid) == config
            })
            .map(|r| (r.update_id.to_string(), r.revision_number.to_string()))
            .collect();
        ids.sort();
        ids
    };
    let cookie = authorize(&node, None).await;
    let list = |anchor: Option<String>, config: bool, lists: String| {
        let inner = format!(
            "{}{}",
            cookie_xml(&cookie),
            filter(anchor.as_deref(), config, &lists)
        );
        let node = &node;
        async move {
            let (status, _, op) = soap_call(
                node,
                SYNC,
                SERVER_SYNC_NS,
                "GetRevisionIdList",
                &inner,
                None,
            )
            .await;
            let op = op.unwrap();
            assert_eq!(status, 200, "{op:?}");
            let anchor = result(&op, "GetRevisionIdListResult")
                .child_text("Anchor")
                .unwrap()
                .to_owned();
            (identities(&op), anchor)
        }
    };

    // The configuration pass, then the updates pass: everything, each once.
    let (config, _) = list(None, true, String::new()).await;
    assert_eq!(config, expect(true, &catalog));
    let (software, anchor) = list(None, false, String::new()).await;
    assert_eq!(software, expect(false, &catalog));
    assert!(!software.is_empty());
    let (again, _) = list(Some(anchor.clone()), false, String::new()).await;
    assert!(
        again.is_empty(),
        "nothing changed since the anchor: {again:?}"
    );

    // The root knows who synced: name, address, protocol, when.
    let got = get(
        &format!("http://{}/api/v1/downstreams", node.listening().admin),
        &[],
    )
    .await;
    assert_eq!(got.status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let d = &listed[0];
    assert_eq!(d["name"], "branch1.example.org");
    assert_eq!(d["address"], "127.0.0.1");
    assert_eq!(d["protocol"], "1.20");
    assert!(d["last_sync"].as_i64().unwrap() >= d["first_seen"].as_i64().unwrap());

    // A product and a classification narrow the list to updates in both; one alone, to none.
    let leaf = catalog
        .revisions()
        .iter()
        .find(|r| {
            r.update_type == UpdateType::Software
                && r.prerequisites.iter().filter(|c| c.is_category).count() >= 2
        })
        .expect("a software update with a product and a classification");
    let named: Vec<Guid> = leaf
        .prerequisites
        .iter()
        .filter(|c| c.is_category)
        .flat_map(|c| c.ids.clone())
        .collect();
    let (product, classification) = (named[0], named[named.len() - 1]);
    let id_and_delta = |name: &str, id: Guid, delta: bool| {
        format!("<{name}><IdAndDelta><Id>{id}</Id><Delta>{delta}</Delta></IdAndDelta></{name}>")
    };
    let both = format!(
        "{}{}",
        id_and_delta("Categories", product, true),
        id_and_delta("Classifications", classification, true)
    );
    let (narrowed, _) = list(None, false, both.clone()).await;
    assert!(narrowed.contains(&(leaf.update_id.to_string(), leaf.revision_number.to_string())));
    for (id, number) in &narrowed {
        let r = catalog
            .by_identity(Guid::parse(id).unwrap(), number.parse().unwrap())
            .unwrap();
        let cats: Vec<Guid> = r
            .prerequisites
            .iter()
            .filter(|c| c.is_category)
            .flat_map(|c| c.ids.clone())
            .collect();
        assert!(cats.contains(&product) && cats.contains(&classification));
    }
    let (alone, _) = list(None, false, id_and_delta("Categories", product, true)).await;
    assert!(alone.is_empty());
    // With the anchor, Delta=true lists nothing; Delta=false lists them all again.
    let (delta, _) = list(Some(anchor.clone()), false, both).await;
    assert!(delta.is_empty());
    let full = format!(
        "{}{}",
        id_and_delta("Categories", product, false),
        id_and_delta("Classifications", classification, true)
    );
    let (refetched, _) = list(Some(anchor.clone()), false, full).await;
    assert_eq!(refetched, narrowed);

    // The documents, as imported, with their files' digests.
    let pick: Vec<(String, String)> = software.iter().take(5).cloned().collect();
    let ids: String = pick
        .iter()
        .map(|(u, r)| {
            format!(
                "<UpdateIdentity><UpdateID>{u}</UpdateID><RevisionNumber>{r}</RevisionNumber>\
                 </UpdateIdentity>"
            )
        })
        .collect();
    let (status, _, op) = soap_call(
        &node,
        SYNC,
        SERVER_SYNC_NS,
        "GetUpdateData",
        &format!("{}<updateIds>{ids}</updateIds>", cookie_xml(&cookie)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let op = op.unwrap();
    let got = result(&op, "GetUpdateDataResult");
    let updates: Vec<&Element> = got
        .child("updates")
        .unwrap()
        .children_named("ServerSyncUpdateData")
        .collect();
    assert_eq!(updates.len(), pick.len());
    let store = Store::open(&database(&data)).unwrap();
    let mut digests = std::collections::BTreeSet::new();
    for u in updates {
        let id = u.child("Id").unwrap();
        let r = catalog
            .by_identity(
                Guid::parse(id.child_text("UpdateID").unwrap()).unwrap(),
                id.child_text("RevisionNumber").unwrap().parse().unwrap(),
            )
            .unwrap();
        let stored = store.documents(&[r.id]).unwrap().remove(0).1;
        assert_eq!(u.child_text("XmlUpdateBlob"), Some(stored.as_str()));
        let listed: Vec<String> = u
            .child("FileDigestList")
            .map(|l| {
                l.children_named("base64Binary")
                    .map(|b| b.text().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let files: Vec<String> = r
            .files
            .iter()
            .map(|f| wsus_edge::catalog::base64_encode(&f.sha1))
            .collect();
        assert_eq!(listed, files);
        digests.extend(files);
    }
    let urls: std::collections::BTreeSet<String> = got
        .child("fileUrls")
        .unwrap()
        .children_named("ServerSyncUrlData")
        .map(|d| d.child_text("FileDigest").unwrap().to_owned())
        .collect();
    assert_eq!(urls, digests);

    // Too many ids, a bad anchor: InvalidParameters naming them.
    let many: String = (0..101)
        .map(|_| {
            format!(
                "<UpdateIdentity><UpdateID>{}</UpdateID><RevisionNumber>1</RevisionNumber>\
                 </UpdateIdentity>",
                Guid::random()
            )
        })
        .collect();
    for (operation, inner, parameter) in [
        (
            "GetUpdateData",
            format!("{}<updateIds>{many}</updateIds>", cookie_xml(&cookie)),
            "updateIds",
        ),
        (
            "GetRevisionIdList",
            format!(
                "{}{}",
                cookie_xml(&cookie),
                filter(Some("garbage"), false, "")
            ),
            "filter",
        ),
    ] {
        let (status, _, op) = soap_call(&node, SYNC, SERVER_SYNC_NS, operation, &inner, None).await;
        assert_eq!(status, 500);
        let op = op.unwrap();
        assert_eq!(error_code(&op), "InvalidParameters");
        assert_eq!(
            op.child("detail").and_then(|d| d.child_text("Message")),
            Some(parameter)
        );
    }

    // An import at the root: the next updates pass from the anchor lists exactly what it added.
    let payloads = dir.path().join("more");
    std::fs::create_dir_all(&payloads).unwrap();
    let more = generate::generate(4, 99, 1 << 20, &payloads).unwrap();
    Store::open(&database(&data))
        .unwrap()
        .import(&more.documents)
        .unwrap();
    let fresh = Store::open(&database(&data)).unwrap().load().unwrap();
    let mut added: Vec<(String, String)> = expect(false, &fresh)
        .into_iter()
        .filter(|i| !software.contains(i))
        .collect();
    added.sort();
    assert!(!added.is_empty());
    // The node takes the import into service within a second or so.
    let listed = until(
        "the import to be served",
        std::time::Duration::from_secs(10),
        async || {
            let (listed, _) = list(Some(anchor.clone()), false, String::new()).await;
            if listed.is_empty() {
                Err("nothing listed")
            } else {
                Ok(listed)
            }
        },
    )
    .await;
    assert_eq!(listed, added);
    node.shutdown(std::time::Duration::from_secs(1)).await;
}

/// GetDriverIdList (MS-WSUSSS 3.1.4.7), what a downstream that syncs only the drivers its
/// clients need asks: the revisions of drivers for the device ids named, those changed since
/// the anchor only where an id is listed with Delta true; too many ids is InvalidParameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_revisions_are_listed_by_device_hardware_id() {
    use wsus_edge::testkit::drivers::generate_drivers;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    let drivers = generate_drivers(80, 3);
    node.app
        .served
        .change(|s, _| s.import(&drivers.documents))
        .unwrap();
    let cookie = cookie_xml(&authorize(&node, None).await);
    let ask = |anchor: Option<&str>, ids: &[(&str, bool)]| {
        let anchor = anchor.map_or(String::new(), |a| format!("<Anchor>{a}</Anchor>"));
        let ids: String = ids
            .iter()
            .map(|(id, delta)| {
                format!(
                    "<HardwareIdAndDelta><Id>{}</Id><Delta>{delta}</Delta></HardwareIdAndDelta>",
                    wsus_edge::soap::escape_text(id)
                )
            })
            .collect();
        let inner = format!(
            "{cookie}<filter><DssProtocolVersion>1.20</DssProtocolVersion>{anchor}<Categories/>\
             <ComputerIds/><PnpHardwareIds>{ids}</PnpHardwareIds></filter>"
        );
        let node = &node;
        async move {
            let (status, _, op) =
                soap_call(node, SYNC, SERVER_SYNC_NS, "GetDriverIdList", &inner, None).await;
            (status, op.unwrap())
        }
    };
    let listed = |op: &Element| -> Vec<String> {
        let mut ids: Vec<String> = result(op, "GetDriverIdListResult")
            .child("NewRevisions")
            .unwrap()
            .children_named("UpdateIdentity")
            .map(|i| i.child_text("UpdateID").unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    // The drivers of the first device model, on any of its ids, in any case.
    let model = &drivers.models[0];
    let want: Vec<String> = {
        let mut w: Vec<String> = drivers
            .drivers
            .iter()
            .filter(|g| g.model == 0)
            .map(|g| g.update_id.to_string())
            .collect();
        w.sort();
        w
    };
    let ids: Vec<String> = model
        .hardware_ids
        .iter()
        .chain(&model.compatible_ids)
        .map(|i| i.to_lowercase())
        .collect();
    let named: Vec<(&str, bool)> = ids.iter().map(|i| (i.as_str(), true)).collect();
    let (status, op) = ask(None, &named).await;
    assert_eq!(status, 200);
    assert!(!want.is_empty());
    assert_eq!(listed(&op), want);
    let anchor = result(&op, "GetDriverIdListResult")
        .child_text("Anchor")
        .unwrap()
        .to_owned();
    // From the anchor: nothing changed, unless the id is listed with Delta false.
    let (_, op) = ask(Some(&anchor), &named).await;
    assert!(listed(&op).is_empty());
    let all: Vec<(&str, bool)> = ids.iter().map(|i| (i.as_str(), false)).collect();
    let (_, op) = ask(Some(&anchor), &all).await;
    assert_eq!(listed(&op), want);
    // An id no driver names lists nothing; too many ids are refused.
    let (_, op) = ask(None, &[("PCI\\VEN_FFFF&DEV_0000", true)]).await;
    assert!(listed(&op).is_empty());
    let many: Vec<(&str, bool)> = (0..5_001).map(|_| ("PCI\\VEN_FFFF", true)).collect();
    let (status, fault) = ask(None, &many).await;
    assert_eq!(status, 500);
    assert_eq!(error_code(&fault), "InvalidParameters");
    node.shutdown(std::time::Duration::from_secs(1)).await;
}
