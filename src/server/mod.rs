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
use crate::upstream::{self, Upstream};

mod h3;

/// What every handler may see of the node.
pub struct App {
    pub name: String,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub upstream: Option<Arc<Upstream>>,
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

    let app = Arc::new(App {
        name: config.node.name.clone(),
        store: store.clone(),
        metrics,
        upstream,
        started: Instant::now(),
        ready: AtomicBool::new(false),
        listen,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
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
        let service = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let alt_svc = alt_svc.clone();
            async move {
                let (parts, _body) = req.into_parts();
                let mut response = route(&app, role, &parts).await;
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

/// One request, whichever listener and protocol it came by.
async fn route(app: &App, role: Role, parts: &http::request::Parts) -> Response<Body> {
    let path = parts.uri.path();
    let (class, response) = match role {
        Role::Admin => ("admin", admin::respond(app, &parts.method, path).await),
        Role::Clients if content::path::is_content_path(path) => (
            "content",
            response::respond(&app.store, &parts.method, path, &parts.headers).await,
        ),
        Role::Clients => ("other", response::text(StatusCode::NOT_FOUND, "not found")),
    };
    app.metrics.request(class, response.status().as_u16());
    response
}
