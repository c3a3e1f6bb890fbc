//! Shared harness of the integration tests: a scriptable origin server (counts every request and
//! byte, injects faults), nodes started from TOML on 127.0.0.1:0, and a small HTTP client.
//! Everything listens on loopback only.
#![allow(dead_code)]

pub mod pki;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha1::{Digest as _, Sha1};
use tokio::net::TcpListener;
use tokio::sync::watch;
use wsus_edge::config::Config;
use wsus_edge::content::path::{ContentPath, Digest};
use wsus_edge::node::{self, Running};
use wsus_edge::simulate::SplitMix;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Bytes {
    let mut buf = vec![0u8; len];
    SplitMix(seed).fill(&mut buf);
    Bytes::from(buf)
}

pub fn sha1(bytes: &[u8]) -> Digest {
    Digest(Sha1::digest(bytes).into())
}

/// The WSUS URL path of some bytes.
pub fn content_path(bytes: &[u8], ext: &str) -> String {
    ContentPath {
        digest: sha1(bytes),
        ext: ext.to_owned(),
    }
    .url_path()
}

/// What the origin does wrong for one object.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Break the connection after this many body bytes of a response, for the first `times`
    /// responses.
    ResetAfter { bytes: u64, times: u32 },
    /// Send these bytes instead of the real ones (same length), always.
    WrongBytes,
    /// Promise the full Content-Length but end the body early by `missing` bytes, `times` times.
    Short { missing: u64, times: u32 },
    /// Stop sending (without closing) after this many body bytes, `times` times.
    StallAfter { bytes: u64, times: u32 },
    /// Answer every request with this status.
    Status(u16),
    /// Answer ranges as usual but claim this total size in `Content-Range`.
    ClaimTotal(u64),
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    /// Inclusive range asked for, if any.
    pub range: Option<(u64, u64)>,
    pub status: u16,
}

struct OriginState {
    objects: Mutex<HashMap<String, Bytes>>,
    faults: Mutex<HashMap<String, Fault>>,
    log: Mutex<Vec<Logged>>,
    body_bytes: AtomicU64,
    /// Bytes per second per response; 0 = unthrottled.
    throttle: AtomicU64,
    refusing: AtomicBool,
}

/// An origin with the WSUS content layout, in memory, on 127.0.0.1.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    stop: watch::Sender<bool>,
}

impl Origin {
    pub async fn start() -> Origin {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Start on a given address (to come back on the same port after [`Origin::stop`]).
    pub async fn start_on(addr: SocketAddr) -> Origin {
        let state = Arc::new(OriginState {
            objects: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            body_bytes: AtomicU64::new(0),
            throttle: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
        });
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let (stop, mut stop_rx) = watch::channel(false);
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stop_rx.changed() => return,
                };
                let st = st.clone();
                let mut conn_stop = stop_rx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(serve(&st, req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.changed() => {}
                    }
                });
            }
        });
        Origin { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve `bytes` under their content name; returns the URL path.
    pub fn add(&self, bytes: Bytes, ext: &str) -> String {
        let path = content_path(&bytes, ext);
        self.state
            .objects
            .lock()
            .unwrap()
            .insert(path.clone(), bytes);
        path
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .faults
            .lock()
            .unwrap()
            .insert(path.to_owned(), fault);
    }

    pub fn heal(&self, path: &str) {
        self.state.faults.lock().unwrap().remove(path);
    }

    pub fn throttle(&self, bytes_per_second: u64) {
        self.state
            .throttle
            .store(bytes_per_second, Ordering::Relaxed);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn requests_for(&self, path: &str) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.path == path).collect()
    }

    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::Relaxed)
    }

    /// Stop listening and drop every open connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return Some((len.saturating_sub(n), len - 1));
    }
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len - 1
    } else {
        b.parse::<u64>().ok()?.min(len - 1)
    };
    Some((a, b))
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn serve(state: &Arc<OriginState>, req: Request<Incoming>) -> Response<OriginBody> {
    let path = req.uri().path().to_owned();
    let object = state.objects.lock().unwrap().get(&path).cloned();
    let fault = state.faults.lock().unwrap().get(&path).cloned();
    let claimed = match &fault {
        Some(Fault::ClaimTotal(total)) => Some(*total),
        _ => None,
    };
    let range_header = req
        .headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let log = |range, status: StatusCode| {
        state.log.lock().unwrap().push(Logged {
            path: path.clone(),
            range,
            status: status.as_u16(),
        });
    };
    let plain = |status: StatusCode| {
        let mut r = Response::new(
            http_body_util::Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed(),
        );
        *r.status_mut() = status;
        r
    };
    let Some(object) = object else {
        log(None, StatusCode::NOT_FOUND);
        return plain(StatusCode::NOT_FOUND);
    };
    if let Some(Fault::Status(code)) = fault {
        let status = StatusCode::from_u16(code).unwrap();
        log(None, status);
        return plain(status);
    }
    let len = object.len() as u64;
    let range = range_header.as_deref().and_then(|v| parse_range(v, len));
    let (status, first, last) = match range {
        Some((a, _)) if a >= len => {
            log(range, StatusCode::RANGE_NOT_SATISFIABLE);
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers_mut()
                .insert(CONTENT_RANGE, format!("bytes */{len}").parse().unwrap());
            return r;
        }
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        None => (StatusCode::OK, 0, len - 1),
    };
    log(range, status);
    let mut body = object.slice(first as usize..=last as usize);
    // Per-fault behaviour; counters of "times" are consumed here.
    let mut cut: Option<(u64, bool)> = None; // (after bytes, stall instead of reset)
    if let Some(f) = fault {
        let mut faults = state.faults.lock().unwrap();
        let consume = |faults: &mut HashMap<String, Fault>, f: Fault| match f {
            Fault::ResetAfter { bytes, times } if times > 0 => {
                faults.insert(
                    path.clone(),
                    Fault::ResetAfter {
                        bytes,
                        times: times - 1,
                    },
                );
                Some((bytes, false))
            }
            Fault::StallAfter { bytes, times } if times > 0 => {
                faults.insert(
                    path.clone(),
                    Fault::StallAfter {
                        bytes,
                        times: times - 1,
                    },
                );
                Some((bytes, true))
            }
            Fault::Short { missing, times } if times > 0 => {
                faults.insert(
                    path.clone(),
                    Fault::Short {
                        missing,
                        times: times - 1,
                    },
                );
                Some(((last - first + 1).saturating_sub(missing), false))
            }
            _ => None,
        };
        if matches!(f, Fault::WrongBytes) {
            let mut wrong = body.to_vec();
            for b in wrong.iter_mut().step_by(4096) {
                *b ^= 0x5a;
            }
            body = Bytes::from(wrong);
        } else {
            cut = consume(&mut faults, f);
        }
    }
    let throttle = state.throttle.load(Ordering::Relaxed);
    let counter = state.clone();
    let stream = futures_util::stream::unfold(
        (body, 0u64, cut, throttle, Instant::now(), counter),
        |(body, sent, cut, throttle, started, counter)| async move {
            if sent as usize >= body.len() {
                return None;
            }
            if let Some((after, stall)) = cut
                && sent >= after
            {
                if stall {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let err: BoxError = "injected fault".into();
                return Some((
                    Err(err),
                    (Bytes::new(), u64::MAX, None, 0, started, counter),
                ));
            }
            let mut n = (body.len() - sent as usize).min(64 << 10);
            if let Some((after, _)) = cut {
                n = n
                    .min((after - sent) as usize)
                    .max(if after > sent { 1 } else { 0 });
            }
            if throttle > 0 {
                let due = Duration::from_secs_f64((sent + n as u64) as f64 / throttle as f64);
                let elapsed = started.elapsed();
                if due > elapsed {
                    tokio::time::sleep(due - elapsed).await;
                }
            }
            let chunk = body.slice(sent as usize..sent as usize + n);
            counter.body_bytes.fetch_add(n as u64, Ordering::Relaxed);
            Some((
                Ok(Frame::data(chunk)),
                (body, sent + n as u64, cut, throttle, started, counter),
            ))
        },
    );
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, (last - first + 1).into());
    h.insert(
        LAST_MODIFIED,
        "Wed, 02 Sep 2026 08:30:53 GMT".parse().unwrap(),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let total = claimed.unwrap_or(len);
        h.insert(
            CONTENT_RANGE,
            format!("bytes {first}-{last}/{total}").parse().unwrap(),
        );
    }
    r
}

/// A node's configuration: a loopback root or branch with `extra` TOML appended (sections
/// given in `extra` must not repeat [node], [listen] or [upstream]).
pub fn node_config(
    data_dir: &Path,
    upstream: Option<&str>,
    upstream_extra: &str,
    extra: &str,
) -> Config {
    let mut text = format!(
        "[node]\nname = \"test\"\ndata_dir = {:?}\n[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
        data_dir.to_string_lossy()
    );
    if let Some(url) = upstream {
        text.push_str(&format!("[upstream]\nurl = {url:?}\n{upstream_extra}\n"));
        // Most tests' upstreams serve content only: no metadata sync unless a test asks.
        if !upstream_extra.contains("sync_interval") {
            text.push_str("sync_interval = \"0s\"\n");
        }
    }
    text.push_str(extra);
    // Nodes here serve their downstreams without credentials unless a test names them: the
    // tests of authentication say [downstream] themselves.
    if !extra.contains("[downstream]") {
        text.push_str("\n[downstream]\nallow_anonymous = true\n");
    }
    // Nor a rollup of client status.
    if upstream.is_some() && !extra.contains("rollup_interval") {
        text.push_str("\n[reports]\nrollup_interval = \"0s\"\n");
    }
    Config::parse(&text, "test", &[]).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub async fn start(config: &Config) -> Running {
    node::start(config).await.expect("node starts")
}

/// A branch of `origin`. The stall timeout is generous: under load tests the test's own
/// clients compete with the node for the same two cores.
pub async fn branch(data_dir: &Path, origin: &str, extra: &str) -> Running {
    branch_with(
        data_dir,
        origin,
        "timeout = \"10s\"\nconnect_timeout = \"1s\"",
        extra,
    )
    .await
}

/// A branch with its own `[upstream]` keys (besides url).
pub async fn branch_with(data_dir: &Path, origin: &str, upstream: &str, extra: &str) -> Running {
    start(&node_config(data_dir, Some(origin), upstream, extra)).await
}

pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(HttpConnector::new())
}

pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body ended with an error (connection closed before Content-Length).
    pub broken: bool,
}

/// One request, the whole body collected (or what arrived before the connection broke).
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client()
        .request(builder.body(Empty::new()).unwrap())
        .await
        .expect("request");
    let (parts, mut body) = response.into_parts();
    let mut collected = Vec::new();
    let mut broken = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    collected.extend_from_slice(&d);
                }
            }
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    Got {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(collected),
        broken,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    request("GET", url, headers).await
}

/// Read one metric (sum over label sets that contain `labels`) from a node's /metrics.
pub async fn metric(node: &Running, name: &str, labels: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", node.listening().admin), &[]).await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match key.split_once('{') {
                Some((m, r)) => (m, r),
                None => (key, ""),
            };
            (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub fn url(node: &Running, path: &str) -> String {
    format!("http://{}{}", node.listening().http, path)
}

/// Route the nodes' logs to the test output (shown for failing tests) and keep them for
/// [`logged`]; RUST_LOG filters (default: warnings, and the access lines).
pub fn logs() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,wsus_edge::access=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(|| Tee(tracing_subscriber::fmt::TestWriter::new()))
        .try_init();
}

static LOGGED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Writes to the test output and to [`LOGGED`].
struct Tee(tracing_subscriber::fmt::TestWriter);

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGGED.lock().unwrap().extend_from_slice(buf);
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A root whose catalog was generated (60 updates) with approvals: the first four deployable
/// updates for All Computers, the next six for "Ring 1". Returns the node and the update ids
/// each approval set holds.
pub async fn catalog_root(
    dir: &Path,
) -> (
    Running,
    Vec<wsus_edge::catalog::Guid>,
    Vec<wsus_edge::catalog::Guid>,
) {
    catalog_root_with(dir, "").await
}

/// [`catalog_root`] with `extra` configuration.
pub async fn catalog_root_with(
    dir: &Path,
    extra: &str,
) -> (
    Running,
    Vec<wsus_edge::catalog::Guid>,
    Vec<wsus_edge::catalog::Guid>,
) {
    let data = dir.join("root");
    let payloads = dir.join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    use wsus_edge::catalog::{ALL_COMPUTERS, Action, Guid};
    use wsus_edge::state::Store;
    use wsus_edge::testkit::generate;
    let g = generate::generate(60, 11, 24 << 20, &payloads).unwrap();
    wsus_edge::content::import_dir(&data, &payloads).unwrap();
    let mut store = Store::open(&data).unwrap();
    store.import(&g.documents).unwrap();
    let ring = store.add_group("Ring 1", None).unwrap();
    let latest = |store: &Store, id: &Guid| *store.revisions_of(*id).unwrap().last().unwrap();
    let (all, ringed) = (g.deployable[..4].to_vec(), g.deployable[4..10].to_vec());
    let revs: Vec<u32> = all.iter().map(|id| latest(&store, id)).collect();
    store
        .approve(&revs, ALL_COMPUTERS, Action::Install, None, 1_000)
        .unwrap();
    let revs: Vec<u32> = ringed.iter().map(|id| latest(&store, id)).collect();
    store
        .approve(&revs, ring, Action::Install, None, 2_000)
        .unwrap();
    drop(store);
    let node = start(&node_config(&data, None, "", extra)).await;
    (node, all, ringed)
}

/// How many log lines there are so far: with [`logged_since`], what came after.
pub fn log_mark() -> usize {
    String::from_utf8_lossy(&LOGGED.lock().unwrap())
        .lines()
        .count()
}

/// The log lines (of every test of this binary so far) that contain every one of `words`.
pub fn logged(words: &[&str]) -> Vec<String> {
    logged_since(0, words)
}

/// The log lines after the first `mark` that contain every one of `words`.
pub fn logged_since(mark: usize, words: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(&LOGGED.lock().unwrap()).into_owned();
    text.lines()
        .skip(mark)
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}

/// Run a check script of tests/zeep (python3 with zeep, which `.ci/run` installs) with `args`;
/// asserts it passed with no failure and returns its output, one line per check.
pub async fn zeep_checks(script: &str, args: Vec<String>) -> String {
    python_checks("zeep", script, args).await
}

/// Run `tests/{dir}/{script}` (a Python check printing one line per check and "0 failures");
/// its output.
pub async fn python_checks(dir: &str, script: &str, args: Vec<String>) -> String {
    let path = format!("{}/tests/{dir}/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(path)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (.ci/run installs it with zeep, websocket-client and chromium)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("\n0 failures"), "{stdout}");
    stdout
}

/// `../shared/protocol` beside the checkout.
pub fn shared_protocol() -> String {
    format!("{}/../shared/protocol", env!("CARGO_MANIFEST_DIR"))
}

/// Wait (at most a minute) until a downstream node's sync status satisfies `done`.
pub async fn replica_until(
    node: &Running,
    done: impl Fn(&wsus_edge::wsusss::replica::ReplicaStatus) -> bool,
) -> wsus_edge::wsusss::replica::ReplicaStatus {
    let replica = node.app.replica.as_ref().expect("a replica");
    let mut rx = replica.status();
    let got = tokio::time::timeout(Duration::from_secs(60), async {
        rx.wait_for(|s| done(s)).await.map(|s| s.clone())
    })
    .await;
    match got {
        Ok(status) => status.expect("status channel"),
        Err(_) => panic!("timed out; status {:#?}", replica.status().borrow().clone()),
    }
}

/// A SOAP 1.1 envelope around one operation element.
pub fn soap_envelope(ns: &str, operation: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope \
         xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
         <{operation} xmlns=\"{ns}\">{inner}</{operation}></soap:Body></soap:Envelope>"
    )
}

/// POST a SOAP 1.1 call; (status, WWW-Authenticate, the answer's operation element or fault
/// detail, as a tree when it is SOAP).
pub async fn soap_call(
    node: &Running,
    path: &str,
    ns: &str,
    operation: &str,
    inner: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Option<wsus_edge::soap::Element>) {
    soap_call_to(&url(node, path), ns, operation, inner, token).await
}

/// [`soap_call`] to a URL (a node that is a process of its own).
pub async fn soap_call_to(
    url: &str,
    ns: &str,
    operation: &str,
    inner: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Option<wsus_edge::soap::Element>) {
    let mut builder = http::Request::post(url)
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", format!("\"{ns}/{operation}\""));
    if let Some(t) = token {
        builder = builder.header("authorization", format!("Bearer {t}"));
    }
    let request = builder
        .body(http_body_util::Full::new(bytes::Bytes::from(
            soap_envelope(ns, operation, inner),
        )))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let tree = wsus_edge::soap::parse(&body, &wsus_edge::soap::Limits::default())
        .ok()
        .map(|e| e.operation);
    (status, challenge, tree)
}

/// A downstream of `upstream` that syncs at start and rolls up when asked.
pub async fn downstream(dir: &std::path::Path, name: &str, upstream: &Running) -> Running {
    branch_with(
        &dir.join(name),
        &format!("http://{}", upstream.listening().http),
        "sync_interval = \"1h\"\ntimeout = \"10s\"\nconnect_timeout = \"1s\"",
        "",
    )
    .await
}

/// Roll up now and wait (bounded) for it to succeed.
pub async fn rolled_up(node: &Running) -> wsus_edge::wsusss::rollup_client::RollupReport {
    let rollup = node.app.rollup.as_ref().expect("a downstream");
    let before = rollup.status().borrow().rollups;
    rollup.rollup_now();
    let mut rx = rollup.status();
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        rx.wait_for(|s| s.rollups > before).await.map(|s| s.clone())
    })
    .await
    .expect("rollup within a minute")
    .unwrap();
    assert_eq!(status.last_error, None);
    status.last.unwrap()
}

/// A port free on loopback now (for a node that is a process of its own and must be told
/// its ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node as a process of its own (to kill it, to measure its memory), started from
/// `config`; its log goes beside `config`.
pub fn spawn(config: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_wsus-edge"))
        .args(["--config", &config.to_string_lossy(), "serve"])
        .env("WSUS_EDGE_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the binary runs")
}

/// Poll `admin`'s status (bounded) until `done` says so.
pub async fn status_until(admin: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Not listening yet is no failure: the process is starting.
        let asked = client()
            .request(
                http::Request::get(format!("{admin}/api/v1/status"))
                    .body(http_body_util::Empty::new())
                    .unwrap(),
            )
            .await;
        if let Ok(response) = asked {
            let body = response.into_body().collect().await.unwrap().to_bytes();
            if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&body)
                && done(&status)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what}: not within a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
