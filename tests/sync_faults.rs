//! A downstream server's sync when things go wrong: the upstream down, a wrong token, a
//! malformed GetUpdateData answer, `wsus-edge sync` killed (SIGKILL) mid-sync. Each time the
//! previous catalog stays in service, one clear error is logged, and a later sync completes
//! (after the kill without fetching again what was staged).
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use wsus_edge::catalog::{Action, Catalog, Decision};
use wsus_edge::node::Running;
use wsus_edge::soap::Version;
use wsus_edge::soap::wsus::{ErrorCode, Fault, fault_in};
use wsus_edge::state::Store;
use wsus_edge::testkit::generate;
use wsus_edge::wsusss::SERVER_SYNC_NS;

/// A root with `n` generated updates, the first 4 approved for All Computers.
async fn root(dir: &Path, n: usize, extra: &str) -> Running {
    let data = dir.join("root");
    let payloads = dir.join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    let g = generate::generate(n, 3, 4 << 20, &payloads).unwrap();
    wsus_edge::content::import_dir(&data, &payloads).unwrap();
    let mut store = Store::open(&database(&data)).unwrap();
    store.import(&g.documents).unwrap();
    let catalog = store.load().unwrap();
    store
        .decide(
            &catalog,
            Some(&g.deployable[..4]),
            "All Computers",
            Decision::Approve(Action::Install),
            None,
        )
        .unwrap();
    drop(store);
    start(&node_config(&data, None, "", extra)).await
}

async fn replica(dir: &Path, upstream: &str, upstream_extra: &str) -> Running {
    branch_with(
        &dir.join("branch"),
        upstream,
        &format!(
            "sync_interval = \"1h\"\ntimeout = \"5s\"\nconnect_timeout = \"1s\"\n{upstream_extra}"
        ),
        "[cache]\nprefetch = \"none\"\n",
    )
    .await
}

fn catalog(node: &Running) -> Arc<Catalog> {
    node.app.served.catalog()
}

fn failures_logged(mark: usize) -> usize {
    logged_since(mark, &["sync from upstream failed"]).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_leaves_the_previous_catalog_in_service() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let root = root(dir.path(), 20, "").await;
    let upstream = format!("http://{}", root.listening().http);
    let branch = replica(dir.path(), &upstream, "").await;
    replica_until(&branch, |s| s.syncs == 1 && s.failed_syncs == 0).await;
    let before = catalog(&branch);
    assert_eq!(before.len(), catalog(&root).len());

    root.shutdown(Duration::from_secs(1)).await;
    let mark = log_mark();
    branch.app.replica.as_ref().unwrap().sync_now();
    let s = replica_until(&branch, |s| s.failed_syncs == 1).await;
    let error = s.last_error.unwrap();
    assert!(error.contains("GetAuthConfig"), "{error}");
    assert_eq!(failures_logged(mark), 1);
    assert_eq!(s.failures_in_a_row, 1);
    // Still serving what it had.
    assert_eq!(catalog(&branch).version, before.version);
    let soap = wsus_edge::simulate::wua::soap_client();
    let scan = wsus_edge::simulate::wua::scan(
        &soap,
        &format!("http://{}", branch.listening().http),
        &wsus_edge::simulate::wua::Machine::new(1, None),
    )
    .await
    .unwrap();
    assert_eq!(scan.offered.len(), 4);
    branch.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_said_clearly() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("downstream.tokens");
    std::fs::write(&tokens, "right-token\n").unwrap();
    let root = root(
        dir.path(),
        10,
        &format!(
            "[downstream]\ntoken_file = {:?}\n",
            tokens.to_string_lossy()
        ),
    )
    .await;
    let wrong = dir.path().join("upstream.token");
    std::fs::write(&wrong, "wrong-token\n").unwrap();
    let mark = log_mark();
    let branch = replica(
        dir.path(),
        &format!("http://{}", root.listening().http),
        &format!("token_file = {:?}", wrong.to_string_lossy()),
    )
    .await;
    let s = replica_until(&branch, |s| s.failed_syncs == 1).await;
    let error = s.last_error.unwrap();
    assert!(error.contains("refused this server (HTTP 401"), "{error}");
    assert_eq!(failures_logged(mark), 1);
    assert!(catalog(&branch).is_empty());
    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}

/// What the proxy does to GetUpdateData calls.
const PASS: u8 = 0;
const CORRUPT: u8 = 1;
/// The first [`STALL_AFTER`] go through; the others never get an answer.
const STALL: u8 = 2;
const STALL_AFTER: usize = 4;
/// Documents go as Microsoft WSUS sends large ones: XmlUpdateBlobCompressed (CAB, LZX).
const COMPRESS: u8 = 3;

/// What the proxy does, shared with the test.
#[derive(Default)]
struct Tamper {
    mode: AtomicU8,
    update_data_calls: AtomicUsize,
    stalled: Notify,
    /// Answer the next call of this operation with this fault instead of passing it on.
    fault_once: std::sync::Mutex<Option<(&'static str, ErrorCode)>>,
    /// In [`COMPRESS`] mode: each cabinet sent, with the document it holds.
    cabinets: std::sync::Mutex<Vec<(Vec<u8>, String)>>,
}

/// A proxy in front of the root that can spoil answers.
struct Proxy {
    addr: SocketAddr,
    tamper: Arc<Tamper>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tamper = Arc::new(Tamper::default());
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let shared = tamper.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (t, client) = (shared.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<Incoming>| {
                            let (t, client) = (t.clone(), client.clone());
                            async move { Ok::<_, Infallible>(relay(&t, &client, target, req).await) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy { addr, tamper }
    }
}

async fn relay(
    t: &Tamper,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    target: SocketAddr,
    req: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    // The downstream compresses what it posts once the upstream said it reads gzip.
    let text = match parts.headers.get(http::header::CONTENT_ENCODING) {
        Some(coding) if coding == "gzip" => {
            wsus_edge::http::coding::gunzip(&body, 64 << 20).unwrap()
        }
        _ => body.to_vec(),
    };
    let calls = |op: &str| {
        let tag = format!("<{op} ");
        text.windows(tag.len()).any(|w| w == tag.as_bytes())
    };
    let planted = {
        let mut slot = t.fault_once.lock().unwrap();
        match *slot {
            Some((op, code)) if calls(op) => slot.take().map(|_| (op, code)),
            _ => None,
        }
    };
    if let Some((op, code)) = planted {
        let reply = fault_in(
            Version::Soap11,
            SERVER_SYNC_NS,
            op,
            &Fault::new(code, "planted"),
        );
        return http::Response::builder()
            .status(reply.status)
            .header(http::header::CONTENT_TYPE, reply.content_type)
            .body(Full::new(Bytes::from(reply.body)))
            .unwrap();
    }
    let is_update_data = calls("GetUpdateData");
    let n = if is_update_data {
        t.update_data_calls.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };
    let mode = t.mode.load(Ordering::SeqCst);
    if is_update_data && mode == STALL && n > STALL_AFTER {
        t.stalled.notify_one();
        std::future::pending::<()>().await;
    }
    let mut forward = http::Request::builder()
        .method(parts.method)
        .uri(format!("http://{target}{}", parts.uri.path()));
    // Uncompressed answers, so that they can be spoilt.
    for (k, v) in &parts.headers {
        if k != http::header::ACCEPT_ENCODING {
            forward = forward.header(k, v);
        }
    }
    let answer = client
        .request(forward.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = answer.into_parts();
    let mut body = body.collect().await.unwrap().to_bytes();
    if is_update_data && mode == CORRUPT {
        let text = String::from_utf8_lossy(&body).replacen("&lt;upd:Update", "&lt;upd:Broken", 1);
        body = Bytes::from(text);
    }
    if is_update_data && mode == COMPRESS {
        body = Bytes::from(compress_documents(t, &String::from_utf8_lossy(&body)));
    }
    let mut out = http::Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        if k != http::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    out.body(Full::new(body)).unwrap()
}

/// Every `<XmlUpdateBlob>` of a GetUpdateData answer as `<XmlUpdateBlobCompressed>`: base64
/// of a cabinet holding the document (kept in `t.cabinets`).
fn compress_documents(t: &Tamper, answer: &str) -> String {
    const OPEN: &str = "<XmlUpdateBlob>";
    const CLOSE: &str = "</XmlUpdateBlob>";
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(start) = rest.find(OPEN) {
        let end = rest[start..].find(CLOSE).unwrap() + start;
        let escaped = &rest[start + OPEN.len()..end];
        let document = wsus_edge::soap::parse_tree(
            format!("<x>{escaped}</x>").as_bytes(),
            &wsus_edge::soap::Limits::default(),
        )
        .unwrap()
        .text()
        .to_owned();
        let cabinet = wsus_edge::testkit::cabinet::lzx_cabinet("blob", document.as_bytes());
        out.push_str(&rest[..start]);
        out.push_str("<XmlUpdateBlobCompressed>");
        out.push_str(&wsus_edge::catalog::base64_encode(&cabinet));
        out.push_str("</XmlUpdateBlobCompressed>");
        t.cabinets.lock().unwrap().push((cabinet, document));
        rest = &rest[end + CLOSE.len()..];
    }
    out.push_str(rest);
    out
}

/// An upstream that sends every document as Microsoft WSUS sends those over 5,120 bytes
/// (XmlUpdateBlobCompressed: a cabinet, LZX): the branch ends with the root's catalog,
/// document for document. The cabinets are what an independent reader (cabextract, of
/// libmspack) extracts to the same documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_compressed_as_wsus_sends_them_are_read() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let root = root(dir.path(), 30, "").await;
    let proxy = Proxy::start(root.listening().http).await;
    proxy.tamper.mode.store(COMPRESS, Ordering::SeqCst);
    let branch = replica(dir.path(), &format!("http://{}", proxy.addr), "").await;
    let s = replica_until(&branch, |s| s.syncs == 1).await;
    assert_eq!(s.failed_syncs, 0, "{:?}", s.last_error);
    let (upstream, downstream) = (catalog(&root), catalog(&branch));
    assert_eq!(
        proxy.tamper.cabinets.lock().unwrap().len(),
        upstream.len(),
        "every document went compressed"
    );
    assert_eq!(downstream.len(), upstream.len());
    for r in upstream.revisions() {
        let mine = downstream
            .by_identity(r.update_id, r.revision_number)
            .unwrap_or_else(|| panic!("{} {}", r.update_id, r.revision_number));
        assert_eq!(mine.fragments, r.fragments, "{}", r.update_id);
        assert_eq!(mine.files, r.files);
    }

    let (cabinet, document) = proxy.tamper.cabinets.lock().unwrap()[0].clone();
    let path = dir.path().join("update.cab");
    std::fs::write(&path, &cabinet).unwrap();
    let extracted = std::process::Command::new("cabextract")
        .arg("--pipe")
        .arg(&path)
        .output()
        .expect("cabextract (apt package cabextract) runs");
    assert!(extracted.status.success(), "{extracted:?}");
    assert_eq!(String::from_utf8(extracted.stdout).unwrap(), document);
    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}

/// InvalidCookie mid-sync: authorize again and go on. ServerChanged: start over with full
/// lists, and take the upstream's approvals as the whole set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_cookies_and_a_changed_server_are_recovered_within_the_sync() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let root = root(dir.path(), 20, "").await;
    let proxy = Proxy::start(root.listening().http).await;
    *proxy.tamper.fault_once.lock().unwrap() =
        Some(("GetRevisionIdList", ErrorCode::InvalidCookie));
    let branch = replica(dir.path(), &format!("http://{}", proxy.addr), "").await;
    let s = replica_until(&branch, |s| s.syncs == 1).await;
    assert_eq!(s.failed_syncs, 0, "{:?}", s.last_error);
    let first = s.last_sync.unwrap();
    // GetAuthConfig, GetAuthorizationCookie, GetCookie twice; 1 GetConfigData, 3 revision
    // lists (one refused), 1 GetUpdateData, 1 GetUpdateDecryptionData (one update of the
    // catalog has an encrypted file), 1 GetDeployments.
    assert_eq!(first.calls, 13, "{first:?}");
    assert_eq!(catalog(&branch).len(), catalog(&root).len());

    *proxy.tamper.fault_once.lock().unwrap() = Some(("GetDeployments", ErrorCode::ServerChanged));
    branch.app.replica.as_ref().unwrap().sync_now();
    let s = replica_until(&branch, |s| s.syncs == 2).await;
    assert_eq!(s.failed_syncs, 0, "{:?}", s.last_error);
    let again = s.last_sync.unwrap();
    assert!(again.server_changed);
    // Full lists again, but nothing held is fetched again; the approvals arrive whole.
    assert_eq!(again.updates_listed, first.updates_listed);
    assert_eq!(again.fetched, 0);
    assert_eq!(again.deployments_received, 4);
    assert_eq!(catalog(&branch).deployments.len(), 4);
    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_or_a_stop_mid_sync_is_recovered_from() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    // Enough updates for several rounds of GetUpdateData batches.
    let root = root(dir.path(), 520, "").await;
    let total = catalog(&root).len();
    assert!(total > 500);
    let proxy = Proxy::start(root.listening().http).await;
    let upstream = format!("http://{}", proxy.addr);

    // A document spoilt on the way: nothing applied, the update named, one error logged.
    proxy.tamper.mode.store(CORRUPT, Ordering::SeqCst);
    let mark = log_mark();
    let branch = replica(dir.path(), &upstream, "").await;
    let s = replica_until(&branch, |s| s.failed_syncs == 1).await;
    let error = s.last_error.unwrap();
    assert!(error.contains("upd:Update"), "{error}");
    assert_eq!(failures_logged(mark), 1);
    assert!(catalog(&branch).is_empty());

    // `wsus-edge sync` killed (SIGKILL) mid-sync, its GetUpdateData calls hanging: what
    // arrived is staged, clients still see the previous (empty) catalog.
    branch.shutdown(Duration::from_secs(1)).await;
    proxy.tamper.mode.store(STALL, Ordering::SeqCst);
    proxy.tamper.update_data_calls.store(0, Ordering::SeqCst);
    let config = dir.path().join("branch.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"branch\"\ndata_dir = {:?}\n[upstream]\nurl = {upstream:?}\n\
             timeout = \"60s\"\n{}",
            dir.path().join("branch").to_string_lossy(),
            state_section(&dir.path().join("branch"))
        ),
    )
    .unwrap();
    let stalled = proxy.tamper.stalled.notified();
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_wsus-edge"))
        .args(["--config", &config.to_string_lossy(), "sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), stalled)
        .await
        .expect("the sync reached the stalled call");
    cli.kill().unwrap();
    let killed = cli.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed),
        Some(9)
    );
    let store = Store::open(&database(&dir.path().join("branch"))).unwrap();
    let staged = store.identities(true).unwrap().len();
    assert!(staged >= 100, "{staged} staged");
    assert!(staged < total);
    assert!(store.load().unwrap().is_empty());
    drop(store);

    // Started again: the sync completes and fetches only what was not staged.
    proxy.tamper.mode.store(PASS, Ordering::SeqCst);
    let branch = replica(dir.path(), &upstream, "").await;
    let s = replica_until(&branch, |s| s.syncs == 1).await;
    assert_eq!(s.failed_syncs, 0, "{:?}", s.last_error);
    let sync = s.last_sync.unwrap();
    assert_eq!(sync.fetched, total - staged, "{sync:?}");
    assert_eq!(sync.applied.new_revisions, total);
    assert_eq!(catalog(&branch).len(), total);
    assert_eq!(catalog(&branch).deployments.len(), 4);
    branch.shutdown(Duration::from_secs(1)).await;
    root.shutdown(Duration::from_secs(1)).await;
}
