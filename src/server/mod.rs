//! The running node: listeners (HTTP, HTTPS, HTTP/3, admin), routing, connection settings and
//! graceful shutdown. HTTP/1.1 and HTTP/2 share each TCP port (h2 by prior knowledge or ALPN);
//! with TLS configured, HTTP/3 listens on the HTTPS port over UDP ([`h3`]).
//!
//! Calls `content` (the `/Content` path), `admin` (the admin listener), `upstream` (to build the
//! link), `config`, `metrics`, `tls`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::access::Requester;
use crate::admin;
use crate::config::Config;
use crate::content::response::{self, Body};
use crate::content::{self, Store};
use crate::error::{Error, Kind, Result};
use crate::metrics::Metrics;
use crate::upstream::{self, BoxError, Upstream};
use crate::{soap, wsusss, wusp};

mod h3;

/// What every handler may see of the node.
pub struct App {
    pub name: String,
    pub store: Store,
    /// The client protocol (SOAP), answered from the catalog.
    pub wusp: Arc<wusp::Service>,
    /// The server-server protocol's upstream side, from the same catalog.
    pub wsusss: Arc<wsusss::Service>,
    /// Who may call it (none: anyone who reaches the port).
    pub downstream_tokens: crate::auth::Tokens,
    pub metrics: Arc<Metrics>,
    pub upstream: Option<Arc<Upstream>>,
    /// The syncs and prefetches of a downstream server (none on a root).
    pub replica: Option<Arc<wsusss::replica::Replica>>,
    /// The rollup of client status to the upstream (none on a root).
    pub rollup: Option<Arc<wsusss::rollup_client::Rollup>>,
    /// A connection to the report journal for the admin views.
    pub reports: Arc<std::sync::Mutex<crate::report::Journal>>,
    /// Who may change state through the admin API (and read it from afar).
    pub admin_tokens: crate::auth::Tokens,
    /// Who may read the admin views without a token, besides loopback (SIGHUP may change it).
    pub admin_read_networks: std::sync::RwLock<Vec<crate::config::Network>>,
    /// What SIGHUP re-reads.
    reloadable: std::sync::Mutex<Reloadable>,
    pub started: Instant,
    /// Every listener is up and the node is not stopping.
    pub ready: AtomicBool,
    pub listen: Listening,
}

/// The keys a reload may change, as they are in service.
struct Reloadable {
    admin_token_file: Option<std::path::PathBuf>,
    downstream_token_file: Option<std::path::PathBuf>,
}

/// Whether a node should get traffic, and if not, why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not (empty when ready).
    pub reasons: Vec<String>,
    /// Worth knowing, but no reason to send traffic elsewhere: a branch that cannot reach its
    /// upstream still serves its catalog and cache.
    pub notes: Vec<String>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// What was re-read, e.g. "downstream.token_file (3 tokens)".
    pub applied: Vec<String>,
    /// What could not be applied, with why (the old value stays).
    pub failed: Vec<String>,
}

impl App {
    /// Ready: the listeners are up, the node is not stopping, and a branch that syncs on a
    /// schedule has a catalog to serve (synced once, in this run or a previous one). A branch
    /// that syncs only when asked (its upstream serves content only) needs no catalog.
    pub fn readiness(&self) -> Readiness {
        let mut r = Readiness {
            ready: true,
            reasons: Vec::new(),
            notes: Vec::new(),
        };
        if !self.ready.load(Ordering::Relaxed) {
            r.reasons
                .push("the listeners are not up, or the node is stopping".into());
        }
        if let Some(replica) = self.replica.as_ref().filter(|r| r.syncs_on_schedule()) {
            let status = replica.status().borrow().clone();
            let has_catalog =
                status.last_success.is_some() || !self.wusp.catalog().revisions().is_empty();
            if !has_catalog {
                r.reasons.push(match &status.last_error {
                    Some(e) => format!("no catalog yet: the first sync failed: {e}"),
                    None => "no catalog yet: the first sync from the upstream is under way".into(),
                });
            } else if status.failures_in_a_row > 0 {
                r.notes.push(format!(
                    "the last {} syncs from the upstream failed; the catalog in service is kept",
                    status.failures_in_a_row
                ));
            }
        }
        r.ready = r.reasons.is_empty();
        r
    }

    /// Apply what can change while the node runs: the token files (read again even when their
    /// path did not change), `admin.read_networks`. Everything else of `config` is ignored here;
    /// the caller says what needs a restart.
    pub fn reload(&self, config: &Config) -> Reloaded {
        let mut done = Reloaded::default();
        let mut reloadable = self
            .reloadable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let reloadable = &mut *reloadable;
        let files = [
            (
                "admin.token_file",
                &self.admin_tokens,
                &mut reloadable.admin_token_file,
                &config.admin.token_file,
                "the admin API is read-only",
            ),
            (
                "downstream.token_file",
                &self.downstream_tokens,
                &mut reloadable.downstream_token_file,
                &config.downstream.token_file,
                "downstream servers need no token",
            ),
        ];
        for (key, tokens, in_service, wanted, without) in files {
            if in_service.is_none() && wanted.is_none() {
                continue;
            }
            match tokens.reload(key, wanted.as_deref()) {
                Ok(n) => {
                    *in_service = wanted.clone();
                    done.applied.push(match wanted {
                        Some(_) => format!("{key} ({n} tokens)"),
                        None => format!("{key} (none: {without})"),
                    });
                }
                Err(e) => done.failed.push(e.message().to_owned()),
            }
        }
        let mut networks = self
            .admin_read_networks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *networks != config.admin.read_networks {
            *networks = config.admin.read_networks.clone();
            done.applied
                .push(format!("admin.read_networks ({} networks)", networks.len()));
        }
        done
    }
}

/// The addresses actually bound (ports chosen by the OS when configured as 0).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Listening {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    /// HTTP/3 (UDP), on the HTTPS port.
    pub quic: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// A started node. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    pub fn listening(&self) -> Listening {
        self.app.listen
    }

    pub fn store(&self) -> &Store {
        &self.app.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.app.metrics
    }

    /// Stop accepting, let open connections finish (up to `grace`), then return.
    pub async fn shutdown(mut self, grace: Duration) {
        self.app.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

const H2_STREAM_WINDOW: u32 = 4 << 20;
const H2_CONN_WINDOW: u32 = 16 << 20;

/// Start a node from its configuration: open the store (recovering what a crash left), bind
/// every listener, and serve. Returns once the node is ready.
pub async fn start(config: &Config) -> Result<Running> {
    // Everything lives under data_dir: a place the node cannot make is the operator's to fix.
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Error::internal(
            Kind::Config,
            format!("node.data_dir {}: cannot create", data_dir.display()),
        )
        .with_source(e)
    })?;
    let metrics = Arc::new(Metrics::new());
    metrics.set_node(&config.node.name, config.upstream.is_some());
    metrics.cache_disk_limit.set(gauge(config.cache.disk_bytes));
    metrics
        .cache_min_free_disk
        .set(gauge(config.cache.min_free_disk));
    if let Some(up) = &config.upstream {
        metrics.sync_interval.set(gauge(up.sync_interval.as_secs()));
        metrics
            .rollup_interval
            .set(gauge(config.reports.rollup_interval.as_secs()));
    }
    let admin_tokens = admin::tokens(&config.admin)?;
    let downstream_tokens = crate::auth::Tokens::from_file(
        "downstream.token_file",
        config.downstream.token_file.as_deref(),
    )?;
    let upstream = match &config.upstream {
        Some(up) => {
            let settings = upstream::Settings::from_config(up, &config.wan)?;
            Some(Arc::new(Upstream::new(settings, metrics.clone())?))
        }
        None => None,
    };
    let store = Store::open(
        content::Settings::from_config(config),
        upstream.clone(),
        metrics.clone(),
    )
    .await?;

    // Both protocols serve the same catalog; opening them reads state.db.
    let (wusp, wsusss, reports) = {
        let data_dir = config.node.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let wusp = Arc::new(wusp::Service::open(&data_dir, wusp::Settings::default())?);
            let wsusss = Arc::new(wsusss::Service::open(wusp.clone(), &data_dir)?);
            let reports = admin::open_reports(&data_dir)?;
            Ok::<_, crate::catalog::CatalogError>((wusp, wsusss, reports))
        })
        .await
        .map_err(|e| Error::internal(Kind::Io, format!("opening state.db: {e}")))?
        .map_err(|e| Error::internal(Kind::Io, e.to_string()))?
    };
    let bind = |addr: SocketAddr, key: &'static str| async move {
        TcpListener::bind(addr).await.map_err(|e| {
            Error::internal(Kind::Config, format!("listen.{key} {addr}: cannot bind"))
                .with_source(e)
        })
    };
    let http = bind(config.listen.http, "http").await?;
    let admin_listener = bind(config.listen.admin, "admin").await?;
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| Error::io("reading a bound address", e))
    };
    // HTTP/3 takes the UDP port of the same number as the HTTPS listener's actual port.
    let (https, quic) = match (config.listen.https, &config.tls) {
        (Some(addr), Some(tls)) => {
            let server = crate::tls::server_config(&tls.cert, &tls.key, tls.client_ca.as_deref())?;
            let listener = bind(addr, "https").await?;
            let quic = h3::bind(local(&listener)?, &server)?;
            (
                Some((listener, tokio_rustls::TlsAcceptor::from(Arc::new(server)))),
                Some(quic),
            )
        }
        _ => (None, None),
    };
    let listen = Listening {
        http: local(&http)?,
        https: match &https {
            Some((l, _)) => Some(local(l)?),
            None => None,
        },
        quic: match &quic {
            Some(endpoint) => Some(
                endpoint
                    .local_addr()
                    .map_err(|e| Error::io("reading a bound address", e))?,
            ),
            None => None,
        },
        admin: local(&admin_listener)?,
    };

    let replica = match (&config.upstream, &upstream) {
        (Some(up), Some(link)) => Some(Arc::new(wsusss::replica::Replica::new(
            wsusss::sync::Syncer::new(
                link.clone(),
                config.node.data_dir.clone(),
                &config.node.name,
            ),
            up.sync_interval,
            config.cache.prefetch == crate::config::Prefetch::Approved,
        ))),
        _ => None,
    };
    let rollup = upstream.as_ref().map(|link| {
        Arc::new(wsusss::rollup_client::Rollup::new(
            link.clone(),
            wsusss::rollup_client::Sources {
                wusp: wusp.clone(),
                content: store.clone(),
                replica: replica.clone(),
            },
            config.node.data_dir.clone(),
            wusp.server_id(),
            &config.node.name,
            config.reports.rollup_interval,
        ))
    });
    let app = Arc::new(App {
        name: config.node.name.clone(),
        replica: replica.clone(),
        rollup: rollup.clone(),
        reports,
        store: store.clone(),
        wsusss,
        wusp,
        metrics,
        upstream,
        admin_tokens,
        admin_read_networks: std::sync::RwLock::new(config.admin.read_networks.clone()),
        reloadable: std::sync::Mutex::new(Reloadable {
            admin_token_file: config.admin.token_file.clone(),
            downstream_token_file: config.downstream.token_file.clone(),
        }),
        downstream_tokens,
        started: Instant::now(),
        ready: AtomicBool::new(false),
        listen,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(reload_catalog(
        app.wusp.clone(),
        replica.clone(),
        shutdown_rx.clone(),
    ));
    if let Some(replica) = &replica {
        tasks.spawn(
            replica
                .clone()
                .run_syncs(app.wusp.clone(), shutdown_rx.clone()),
        );
        tasks.spawn(replica.clone().run_prefetches(
            app.wusp.clone(),
            store.clone(),
            shutdown_rx.clone(),
        ));
        // What is approved already and not here yet (a restart, a sync made by the CLI).
        replica.catalog_changed();
    }
    if let Some(rollup) = &rollup {
        tasks.spawn(rollup.clone().run(shutdown_rx.clone()));
    }
    let maintenance = store.spawn_maintenance();
    {
        let mut rx = shutdown_rx.clone();
        tasks.spawn(async move {
            let _ = rx.changed().await;
            maintenance.abort();
        });
    }
    tasks.spawn(accept_loop(
        http,
        None,
        app.clone(),
        Role::Clients,
        shutdown_rx.clone(),
    ));
    if let Some((listener, acceptor)) = https {
        tasks.spawn(accept_loop(
            listener,
            Some(acceptor),
            app.clone(),
            Role::Clients,
            shutdown_rx.clone(),
        ));
    }
    if let Some(endpoint) = quic {
        tasks.spawn(h3::serve(endpoint, app.clone(), shutdown_rx.clone()));
    }
    tasks.spawn(accept_loop(
        admin_listener,
        None,
        app.clone(),
        Role::Admin,
        shutdown_rx,
    ));
    app.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        node = %app.name,
        http = %listen.http,
        https = %listen.https.map_or("-".into(), |a| a.to_string()),
        quic = %listen.quic.map_or("-".into(), |a| a.to_string()),
        admin = %listen.admin,
        upstream = app.upstream.as_ref().map_or("none (root)", |u| u.url()),
        "ready"
    );
    Ok(Running {
        app,
        shutdown,
        tasks,
    })
}

/// A byte count or a number of seconds as a gauge's value (an i64).
fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[derive(Clone, Copy)]
enum Role {
    Clients,
    Admin,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
    role: Role,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    // The TLS listener tells clients that the same port speaks HTTP/3 over UDP.
    let alt_svc = match (&tls, app.listen.quic) {
        (Some(_), Some(quic)) => {
            HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", quic.port())).ok()
        }
        _ => None,
    };
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let alt_svc = alt_svc.clone();
        let tls_listener = tls.is_some();
        let service = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let alt_svc = alt_svc.clone();
            let tls = tls_listener;
            async move {
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(Peer(peer));
                let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
                let listener = if tls { Listener::Tls } else { Listener::Plain };
                let mut response = route(&app, role, listener, &parts, body).await;
                if let Some(v) = alt_svc {
                    response.headers_mut().insert(http::header::ALT_SVC, v);
                }
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// How a request reached the node: content URLs handed to clients always point at the plain
/// HTTP listener (as WSUS does: content is integrity-checked by digest, not by TLS).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    Plain,
    /// HTTPS or HTTP/3.
    Tls,
}

/// A request body from any transport.
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// One request, whichever listener and protocol it came by.
async fn route(
    app: &App,
    role: Role,
    listener: Listener,
    parts: &http::request::Parts,
    body: RequestBody,
) -> Response<Body> {
    let started = Instant::now();
    let path = parts.uri.path();
    let requester = Requester::new(parts.extensions.get::<Peer>().map(|p| p.0), &parts.headers);
    let id = requester.id;
    let (class, mut response) = match role {
        Role::Admin => {
            let response = admin::respond(app, parts, body).await;
            // Probes, scrapes and page views are many and say little; changes are few.
            let reading = parts.method == http::Method::GET || parts.method == http::Method::HEAD;
            let level = if reading {
                tracing::Level::DEBUG
            } else {
                tracing::Level::INFO
            };
            access_line(&requester, parts, response.status(), started, level);
            ("admin", response)
        }
        Role::Clients if content::path::is_content_path(path) => (
            "content",
            response::respond(&app.store, &parts.method, path, &parts.headers, requester).await,
        ),
        Role::Clients => {
            let service = wusp::Endpoint::from_path(path)
                .map(SoapService::Client)
                .or_else(|| wsusss::Endpoint::from_path(path).map(SoapService::Server));
            match service {
                Some(service) => (
                    "soap",
                    soap(app, service, listener, parts, body, &requester).await,
                ),
                None => {
                    let response = response::text(StatusCode::NOT_FOUND, "not found");
                    access_line(
                        &requester,
                        parts,
                        response.status(),
                        started,
                        tracing::Level::INFO,
                    );
                    ("other", response)
                }
            }
        }
    };
    app.metrics
        .request(class, response.status().as_u16(), started.elapsed());
    response.headers_mut().insert(X_REQUEST_ID, id.header());
    response
}

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The access line of a request that is neither content nor SOAP (those write their own, with
/// what only they know).
fn access_line(
    requester: &Requester,
    parts: &http::request::Parts,
    status: StatusCode,
    started: Instant,
    level: tracing::Level,
) {
    let ms = started.elapsed().as_millis() as u64;
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "wsus_edge::access",
                $level,
                request_id = %requester.id,
                client = %requester.client(),
                user_agent = requester.agent(),
                method = %parts.method,
                path = %parts.uri.path(),
                status = status.as_u16(),
                ms,
            )
        };
    }
    // The level of an event is part of its static description: one call site per level.
    if level == tracing::Level::DEBUG {
        line!(tracing::Level::DEBUG);
    } else {
        line!(tracing::Level::INFO);
    }
}

/// Why a request body could not be had.
pub(crate) enum BodyError {
    /// Over the limit (declared or sent); reading stopped there.
    TooLarge,
    /// The transport failed mid-body, or a compressed body does not decompress.
    Broken,
    /// Sent in a content coding other than gzip (RFC 7694: 415).
    UnsupportedCoding,
}

/// A SOAP body as sent, decoded from its content coding (gzip, or none): at most `limit`
/// bytes decoded.
fn decode_body(
    headers: &http::HeaderMap,
    bytes: Vec<u8>,
    limit: usize,
) -> std::result::Result<Vec<u8>, BodyError> {
    let Some(coding) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(bytes);
    };
    let coding = coding.to_str().unwrap_or("?").trim();
    if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
        Ok(bytes)
    } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
        soap::coding::gunzip(&bytes, limit).map_err(|e| match e.kind() {
            std::io::ErrorKind::FileTooLarge => BodyError::TooLarge,
            _ => BodyError::Broken,
        })
    } else {
        Err(BodyError::UnsupportedCoding)
    }
}

/// Read a whole request body of at most `limit` bytes; a declared Content-Length over the
/// limit is refused before a byte is read.
pub(crate) async fn read_body(
    headers: &http::HeaderMap,
    mut body: RequestBody,
    limit: usize,
) -> std::result::Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// A SOAP body from this size on (bytes) is parsed into a tree of up to millions of small
/// allocations; typical calls are a few KiB.
const RELEASE_AFTER_BYTES: usize = 1 << 20;

/// Hand the pages the allocator holds free back to the system. glibc returns only the top of
/// each arena on free; the millions of small nodes of a large parse, freed below live ones,
/// otherwise stay resident (60 MiB after a refused 2-million-element rollup).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The address a request came from, in its extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

/// The web service a SOAP call was posted to.
#[derive(Debug, Clone, Copy)]
enum SoapService {
    /// The client protocol (Windows Update Agents).
    Client(wusp::Endpoint),
    /// The server-server protocol (downstream servers).
    Server(wsusss::Endpoint),
}

/// What the access line says of a SOAP call besides who sent it.
#[derive(Default)]
struct Call {
    operation: Option<String>,
    fault: Option<&'static str>,
    /// The body as read (decoded), in bytes.
    bytes_in: usize,
    bytes_out: usize,
}

/// A SOAP call, answered by [`answer_soap`], with its access line and its metrics.
async fn soap(
    app: &App,
    service: SoapService,
    listener: Listener,
    parts: &http::request::Parts,
    body: RequestBody,
    requester: &Requester,
) -> Response<Body> {
    let started = Instant::now();
    let mut call = Call::default();
    let response = answer_soap(app, service, listener, parts, body, &mut call).await;
    let elapsed = started.elapsed();
    let operation = call.operation.as_deref().unwrap_or("-");
    if call.operation.is_some() {
        app.metrics.soap_call(operation, call.fault, elapsed);
    }
    tracing::info!(
        target: "wsus_edge::access",
        request_id = %requester.id,
        client = %requester.client(),
        user_agent = requester.agent(),
        method = %parts.method,
        path = %parts.uri.path(),
        operation = %operation,
        status = response.status().as_u16(),
        fault = %call.fault.unwrap_or("-"),
        bytes_in = call.bytes_in,
        bytes = call.bytes_out,
        ms = elapsed.as_millis() as u64,
    );
    response
}

/// A SOAP call: the body read under the service's limit, the answer as the service gives it.
/// Downstream servers show an accepted bearer token first when `downstream.token_file` is set.
async fn answer_soap(
    app: &App,
    service: SoapService,
    listener: Listener,
    parts: &http::request::Parts,
    body: RequestBody,
    call: &mut Call,
) -> Response<Body> {
    if parts.method != http::Method::POST {
        let mut r = response::text(StatusCode::METHOD_NOT_ALLOWED, "SOAP services take POST");
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let refused = |service: SoapService| {
        matches!(service, SoapService::Server(_))
            && !app.downstream_tokens.is_empty()
            && !app.downstream_tokens.accepts(&parts.headers)
    };
    let refusal = || {
        tracing::warn!(path = %parts.uri.path(), "downstream server refused: no accepted bearer token");
        crate::auth::unauthorized("Bearer realm=\"wsus-edge downstream\"")
    };
    if refused(service) {
        return refusal();
    }
    // Downstream servers roll up on the clients' Reporting path: a larger body, their own
    // service and gate, told apart by the operation.
    let reporting = matches!(service, SoapService::Client(wusp::Endpoint::Reporting));
    let limit = if reporting {
        wsusss::rollup::LIMITS.max_bytes
    } else {
        app.wusp.max_body()
    };
    let mut read = read_body(&parts.headers, body, limit)
        .await
        .and_then(|bytes| decode_body(&parts.headers, bytes, limit));
    let mut service = service;
    if let Ok(bytes) = &read {
        call.bytes_in = bytes.len();
        let operation = reporting.then(|| soap::operation_name(bytes)).flatten();
        if operation.is_some_and(|op| wsusss::rollup::OPERATIONS.contains(&op.as_str())) {
            service = SoapService::Server(wsusss::Endpoint::Reporting);
            if refused(service) {
                return refusal();
            }
        } else if reporting && bytes.len() > app.wusp.max_body() {
            read = Err(BodyError::TooLarge);
        }
    }
    // Bodies past this size (or refused for their size) leave their parse's freed memory
    // behind in the allocator; it is handed back once the call is answered.
    let large = read
        .as_ref()
        .map_or(true, |b| b.len() >= RELEASE_AFTER_BYTES);
    let reply = match (read, service) {
        (Err(BodyError::TooLarge), SoapService::Client(endpoint)) => {
            wusp::oversized(endpoint, limit)
        }
        (Err(BodyError::TooLarge), SoapService::Server(endpoint)) => wusp::fault_in(
            soap::Version::Soap11,
            endpoint.namespace(),
            "(unparsed)",
            &wusp::Fault::invalid(format!("request body over {limit} bytes")),
        ),
        (Err(BodyError::Broken), _) => {
            return response::text(StatusCode::BAD_REQUEST, "request body broken");
        }
        (Err(BodyError::UnsupportedCoding), _) => {
            let mut r = response::text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request body in a content coding this server does not read: send gzip or none",
            );
            r.headers_mut().insert(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
            return r;
        }
        (Ok(bytes), SoapService::Server(endpoint)) => {
            let peer = parts.extensions.get::<Peer>().map(|p| p.0);
            app.wsusss
                .call(endpoint, &bytes, peer, crate::catalog::store::unix_now())
                .await
        }
        (Ok(bytes), SoapService::Client(endpoint)) => {
            let content_base = content_base(app, listener, parts);
            let action = parts
                .headers
                .get("soapaction")
                .and_then(|v| v.to_str().ok());
            app.wusp
                .call(wusp::Call {
                    endpoint,
                    action,
                    body: &bytes,
                    content_base: &content_base,
                    now: crate::catalog::store::unix_now(),
                })
                .await
        }
    };
    if large {
        // On the blocking pool: trimming a large heap takes milliseconds that the other requests
        // on this worker (the content path) should not wait for. The answer waits, so the memory
        // is back before the caller sees it.
        let _ = tokio::task::spawn_blocking(release_freed_memory).await;
    }
    call.fault = reply.fault.map(|f| f.as_str());
    call.operation = Some(reply.operation.clone());
    // gzip when the client offers it (Windows offers only xpress: see README).
    let body = soap::coding::lists_gzip(parts.headers.get_all(http::header::ACCEPT_ENCODING))
        .then(|| soap::coding::gzip(reply.body.as_bytes()).ok())
        .flatten();
    let compressed = body.is_some();
    call.bytes_out = body.as_ref().map_or(reply.body.len(), Vec::len);
    let mut r = Response::new(match body {
        Some(b) => response::full_body(b),
        None => response::full_body(reply.body),
    });
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    h.insert(
        http::header::VARY,
        HeaderValue::from_static("Accept-Encoding"),
    );
    // What this node reads in requests (RFC 7694): downstream servers compress their posts.
    h.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip"),
    );
    if compressed {
        h.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("private"),
    );
    r
}

/// `http://host:port` of the plain HTTP listener, as the client reaches this node.
fn content_base(app: &App, listener: Listener, parts: &http::request::Parts) -> String {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| !h.is_empty() && h.len() < 256 && !h.contains(['/', ' ', '@']));
    let http_port = app.listen.http.port();
    match (host, listener) {
        (Some(host), Listener::Plain) => format!("http://{host}"),
        (Some(host), Listener::Tls) => {
            let name = match host.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => host,
            };
            format!("http://{name}:{http_port}")
        }
        (None, _) => format!("http://{}", app.listen.http),
    }
}

/// Take a new catalog into service when state.db changed (an import, an approval, a sync).
async fn reload_catalog(
    wusp: Arc<wusp::Service>,
    replica: Option<Arc<wsusss::replica::Replica>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let service = wusp.clone();
        match tokio::task::spawn_blocking(move || service.reload_if_changed()).await {
            Ok(Ok(true)) => {
                tracing::info!("catalog reloaded");
                if let Some(replica) = &replica {
                    replica.catalog_changed();
                }
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "reloading the catalog failed"),
            Err(e) => tracing::warn!(error = %e, "reloading the catalog failed"),
        }
    }
}

/// Every problem of `config` that the files it names reveal: they exist and can be read
/// ([`Config::check_files`]), certificates and keys parse, each key fits its certificate, a
/// node's or a branch's own certificate is one a peer accepts (not a CA, not expired, the right
/// usage), token files hold tokens. `serve` refuses to start on any of them, and `check-config`
/// lists the same.
pub fn preflight(config: &Config) -> Vec<crate::config::Problem> {
    use crate::tls::{self, Use};
    let mut c = Preflight::new(config.check_files());
    if let Some(t) = &config.tls {
        let fine = c.certificate("tls.cert", Some(&t.cert), Some(Use::Server))
            & c.key("tls.key", Some(&t.key))
            & c.certificate("tls.client_ca", t.client_ca.as_deref(), None);
        if fine && let Err(e) = tls::server_config(&t.cert, &t.key, None) {
            c.add("tls.key", format!("does not fit tls.cert: {}", e.message()));
        }
    }
    if let Some(up) = &config.upstream {
        c.certificate("upstream.ca", up.ca.as_deref(), None);
        let fine = c.certificate(
            "upstream.client_cert",
            up.client_cert.as_deref(),
            Some(Use::Client),
        ) & c.key("upstream.client_key", up.client_key.as_deref());
        if fine
            && let (Some(cert), Some(key)) = (&up.client_cert, &up.client_key)
            && let Err(e) = tls::client_config(None, Some((cert, key)))
        {
            c.add(
                "upstream.client_key",
                format!("does not fit upstream.client_cert: {}", e.message()),
            );
        }
        c.tokens("upstream.token_file", up.token_file.as_deref());
    }
    c.tokens(
        "downstream.token_file",
        config.downstream.token_file.as_deref(),
    );
    c.tokens("admin.token_file", config.admin.token_file.as_deref());
    c.problems
}

/// The problems found so far; a file that could not be read is not looked into (one problem
/// per file, not three).
struct Preflight {
    problems: Vec<crate::config::Problem>,
    unreadable: Vec<String>,
    now: i64,
}

impl Preflight {
    fn new(problems: Vec<crate::config::Problem>) -> Preflight {
        Preflight {
            unreadable: problems.iter().map(|p| p.key.clone()).collect(),
            problems,
            now: crate::catalog::store::unix_now(),
        }
    }

    fn add(&mut self, key: &str, message: String) {
        self.problems.push(crate::config::Problem {
            key: key.to_owned(),
            message,
        });
    }

    /// The path a key names, when it names one that could be read.
    fn readable<'p>(
        &self,
        key: &str,
        path: Option<&'p std::path::Path>,
    ) -> Option<&'p std::path::Path> {
        path.filter(|_| !self.unreadable.iter().any(|k| k == key))
    }

    /// A PEM certificate file parses, and its first certificate, when it is this node's own
    /// (`usage`), is one a peer accepts. True when nothing is wrong (or nothing was named).
    fn certificate(
        &mut self,
        key: &str,
        path: Option<&std::path::Path>,
        usage: Option<crate::tls::Use>,
    ) -> bool {
        let Some(path) = self.readable(key, path) else {
            return path.is_none();
        };
        let problems = match crate::tls::load_certs(path) {
            Ok(certs) => match usage {
                Some(usage) => crate::tls::end_entity_problems(&certs[0], usage, self.now)
                    .into_iter()
                    .map(|p| format!("{}: {p}", path.display()))
                    .collect(),
                None => Vec::new(),
            },
            Err(e) => vec![e.message().to_owned()],
        };
        let fine = problems.is_empty();
        for p in problems {
            self.add(key, p);
        }
        fine
    }

    /// A PEM private key parses.
    fn key(&mut self, key: &str, path: Option<&std::path::Path>) -> bool {
        let Some(path) = self.readable(key, path) else {
            return path.is_none();
        };
        match crate::tls::load_key(path) {
            Ok(_) => true,
            Err(e) => {
                self.add(key, e.message().to_owned());
                false
            }
        }
    }

    /// A token file holds at least one token.
    fn tokens(&mut self, key: &str, path: Option<&std::path::Path>) {
        if let Some(path) = self.readable(key, path)
            && let Err(p) = crate::config::read_tokens(key, path)
        {
            self.add(&p.key, p.message);
        }
    }
}
