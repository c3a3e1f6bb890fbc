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
use crate::{wsusss, wusp};

pub mod calls;
mod connection;
mod h3;

pub(crate) use calls::{BodyError, read_body};

/// What every handler may see of the node.
pub struct App {
    pub name: String,
    pub store: Store,
    /// The client protocol (SOAP), answered from the catalog.
    pub wusp: Arc<wusp::Service>,
    /// The server-server protocol's upstream side, from the same catalog.
    pub wsusss: Arc<wsusss::Service>,
    /// The tokens downstream servers may show.
    pub downstream_tokens: crate::auth::Tokens,
    /// A client certificate verified by the TLS listener (`tls.client_ca`) makes a downstream.
    downstream_certificates: bool,
    /// `downstream.allow_anonymous`: the server-server services are open to anyone.
    downstream_open: bool,
    /// Large SOAP bodies parse here, a bounded number at once.
    parsers: calls::Parsers,
    /// What each connection may hold and for how long.
    pub limits: crate::config::ConnectionLimits,
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
    /// The names the admin listener answers to (lower case), besides IP literals and localhost.
    pub admin_names: Vec<String>,
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
        let mut reloadable = crate::lock::lock(&self.reloadable);
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
        let mut networks = crate::lock::write(&self.admin_read_networks);
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
    if let Some(limit) = connection::raise_descriptor_limit() {
        metrics.descriptors_limit.set(gauge(limit));
    }
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
        admin_names: admin_names(config),
        admin_read_networks: std::sync::RwLock::new(config.admin.read_networks.clone()),
        reloadable: std::sync::Mutex::new(Reloadable {
            admin_token_file: config.admin.token_file.clone(),
            downstream_token_file: config.downstream.token_file.clone(),
        }),
        downstream_tokens,
        downstream_certificates: config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        downstream_open: config.downstream.allow_anonymous,
        parsers: calls::Parsers::for_this_machine(),
        limits: config.listen.limits,
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
    for advisory in advisories(config) {
        tracing::warn!(key = %advisory.key, "{}", advisory.message);
    }
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

/// This machine's host name (as the kernel has it), the node's name and `admin.server_names`,
/// in lower case.
fn admin_names(config: &Config) -> Vec<String> {
    let mut names = config.admin.server_names.clone();
    names.push(config.node.name.to_ascii_lowercase());
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // fails.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        if let Ok(host) = std::str::from_utf8(&buf[..end]) {
            names.push(host.to_ascii_lowercase());
        }
    }
    names.retain(|n| !n.is_empty());
    names
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
    let limits = app.limits;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Later requests' heads; the first one's is the watchdog's (it covers the bytes
        // hyper-util reads to tell HTTP/1 from HTTP/2, and the TLS handshake).
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    // The TLS listener tells clients that the same port speaks HTTP/3 over UDP.
    let alt_svc = match (&tls, app.listen.quic) {
        (Some(_), Some(quic)) => {
            HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", quic.port())).ok()
        }
        _ => None,
    };
    let name = match (role, tls.is_some()) {
        (Role::Admin, _) => "admin",
        (Role::Clients, true) => "https",
        (Role::Clients, false) => "http",
    };
    let open = app
        .metrics
        .connections_open
        .get_or_create(&crate::metrics::ListenerLabels { listener: name })
        .clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
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
        // Over the limit: closed at once, which frees the descriptor and tells the client,
        // where leaving it in the backlog would let it wait for nothing.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            app.metrics.connection_closed("limit");
            tracing::debug!(%peer, listener = name, "connection refused: listen.max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = connection::Activity::new();
        let metrics = app.metrics.clone();
        let app = app.clone();
        let alt_svc = alt_svc.clone();
        let tls_listener = tls.is_some();
        let requests = activity.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let alt_svc = alt_svc.clone();
            let tls = tls_listener;
            let in_flight = requests.request();
            async move {
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(Peer(peer));
                let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
                let listener = if tls { Listener::Tls } else { Listener::Plain };
                let mut response = route(&app, role, listener, &parts, body).await;
                drop(in_flight);
                if let Some(v) = alt_svc {
                    response.headers_mut().insert(http::header::ALT_SVC, v);
                }
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let open = open.clone();
        open.inc();
        tokio::spawn(async move {
            let stream = connection::Watched::new(stream, activity.clone());
            let serve = async move {
                match tls {
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
                            Ok(())
                        }
                    },
                }
            };
            tokio::select! {
                result = serve => {
                    if let Err(e) = result {
                        // hyper's own header timer (a later request's head) ends it so.
                        if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                            metrics.connection_closed("header_timeout");
                        }
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                reason = activity.expired(&limits) => {
                    metrics.connection_closed(reason);
                    tracing::debug!(%peer, reason, "connection closed");
                }
            }
            open.dec();
            drop(slot);
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
    if let Some(refusal) = host_refusal(parts) {
        app.metrics.refused("host");
        access_line(
            &requester,
            parts,
            StatusCode::BAD_REQUEST,
            started,
            tracing::Level::INFO,
        );
        let mut response = response::text(StatusCode::BAD_REQUEST, refusal);
        response.headers_mut().insert(X_REQUEST_ID, id.header());
        return response;
    }
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
        Role::Clients => match calls::SoapService::from_path(path) {
            Some(service) => (
                "soap",
                calls::soap(app, service, listener, parts, body, &requester).await,
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
        },
    };
    app.metrics
        .request(class, response.status().as_u16(), started.elapsed());
    response.headers_mut().insert(X_REQUEST_ID, id.header());
    response
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host header, and a server answers
/// 400 to one without or with more. HTTP/1.0, HTTP/2 and HTTP/3 may go without (the latter two
/// name the authority in the request), never with two.
fn host_refusal(parts: &http::request::Parts) -> Option<&'static str> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Some("a request carries one Host header, not more (RFC 9112 §3.2)"),
        (None, None) if parts.version == http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request carries a Host header (RFC 9112 §3.2)")
        }
        _ => None,
    }
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

/// The address a request came from, in its extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

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

/// What in `config` works but may not be what the operator meant: `check-config` prints these
/// as warnings and `serve` logs them. The filesystem is looked at (the cache's room).
pub fn advisories(config: &Config) -> Vec<crate::config::Problem> {
    use crate::config::units::format_bytes;
    let mut out = Vec::new();
    let mut warn = |key: &str, message: String| {
        out.push(crate::config::Problem {
            key: key.to_owned(),
            message,
        })
    };
    if config.downstream.allow_anonymous {
        warn(
            "downstream.allow_anonymous",
            format!(
                "the server-server services (sync, content, rollup) are open to anyone who \
                 reaches {}: anyone may read the catalog and add computers to the reports",
                config.listen.http
            ),
        );
    }
    let cache = &config.cache;
    if let Ok(fs) = rustix::fs::statvfs(&config.node.data_dir) {
        let size = fs.f_blocks.saturating_mul(fs.f_frsize);
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        if size <= cache.min_free_disk {
            warn(
                "cache.min_free_disk",
                format!(
                    "{} is at least the whole filesystem of node.data_dir ({}): nothing will be \
                     cached, every download goes to the upstream",
                    format_bytes(cache.min_free_disk),
                    format_bytes(size)
                ),
            );
        } else if free <= cache.min_free_disk {
            warn(
                "cache.min_free_disk",
                format!(
                    "node.data_dir's filesystem has {} free, no more than the {} the cache \
                     leaves free: nothing new will be cached until space is freed",
                    format_bytes(free),
                    format_bytes(cache.min_free_disk)
                ),
            );
        }
    }
    out
}

/// Who may use the server-server services, in words (for `check-config` and the start line).
pub fn downstream_access(config: &Config) -> &'static str {
    let tokens = config.downstream.token_file.is_some();
    let certificates = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    match (config.downstream.allow_anonymous, tokens, certificates) {
        (true, _, _) => "anyone (downstream.allow_anonymous)",
        (false, true, true) => "downstream servers with a token or a client certificate",
        (false, true, false) => "downstream servers with a token",
        (false, false, true) => "downstream servers with a client certificate (HTTPS only)",
        (false, false, false) => {
            "nobody (no downstream.token_file or tls.client_ca: this node takes no downstream \
             servers)"
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
            now: crate::clock::unix_now(),
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
