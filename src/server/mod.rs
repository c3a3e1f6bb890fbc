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
    /// Who may read the admin views without a token, besides loopback.
    pub admin_read_networks: Vec<crate::config::Network>,
    pub started: Instant,
    pub ready: AtomicBool,
    pub listen: Listening,
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
    let metrics = Arc::new(Metrics::new());
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
        admin_read_networks: config.admin.read_networks.clone(),
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
        https = ?listen.https,
        quic = ?listen.quic,
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
    let path = parts.uri.path();
    let (class, response) = match role {
        Role::Admin => ("admin", admin::respond(app, parts, body).await),
        Role::Clients if content::path::is_content_path(path) => (
            "content",
            response::respond(&app.store, &parts.method, path, &parts.headers).await,
        ),
        Role::Clients => {
            let service = wusp::Endpoint::from_path(path)
                .map(SoapService::Client)
                .or_else(|| wsusss::Endpoint::from_path(path).map(SoapService::Server));
            match service {
                Some(service) => ("soap", soap(app, service, listener, parts, body).await),
                None => ("other", response::text(StatusCode::NOT_FOUND, "not found")),
            }
        }
    };
    app.metrics.request(class, response.status().as_u16());
    response
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

/// A SOAP call: the body read under the service's limit, the answer as the service gives it.
/// Downstream servers show an accepted bearer token first when `downstream.token_file` is set.
async fn soap(
    app: &App,
    service: SoapService,
    listener: Listener,
    parts: &http::request::Parts,
    body: RequestBody,
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
    tracing::debug!(target: "wsus_edge::soap", operation = %reply.operation,
        status = reply.status, fault = ?reply.fault.map(|f| f.as_str()));
    // gzip when the client offers it (Windows offers only xpress: see README).
    let body = soap::coding::lists_gzip(parts.headers.get_all(http::header::ACCEPT_ENCODING))
        .then(|| soap::coding::gzip(reply.body.as_bytes()).ok())
        .flatten();
    let compressed = body.is_some();
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
