//! The running node: listeners (HTTP, HTTPS, admin), routing, connection settings and graceful
//! shutdown. HTTP/1.1 and HTTP/2 share each port (h2 by prior knowledge or ALPN).
//!
//! Calls `content` (the `/Content` path), `admin` (the admin listener), `upstream` (to build the
//! link), `config`, `metrics`, `tls`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
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

/// What every handler may see of the node.
pub struct App {
    pub name: String,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub upstream_url: Option<String>,
    pub started: Instant,
    pub ready: AtomicBool,
    pub listen: Listening,
}

/// The addresses actually bound (ports chosen by the OS when configured as 0).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Listening {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
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
    let upstream_url = upstream.as_ref().map(|u| u.url().to_owned());
    let store = Store::open(
        content::Settings::from_config(config),
        upstream,
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
    let https = match (config.listen.https, &config.tls) {
        (Some(addr), Some(tls)) => {
            let server = crate::tls::server_config(&tls.cert, &tls.key, tls.client_ca.as_deref())?;
            Some((
                bind(addr, "https").await?,
                tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            ))
        }
        _ => None,
    };
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| Error::io("reading a bound address", e))
    };
    let listen = Listening {
        http: local(&http)?,
        https: match &https {
            Some((l, _)) => Some(local(l)?),
            None => None,
        },
        admin: local(&admin_listener)?,
    };

    let app = Arc::new(App {
        name: config.node.name.clone(),
        store: store.clone(),
        metrics,
        upstream_url,
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
        admin = %listen.admin,
        upstream = app.upstream_url.as_deref().unwrap_or("none (root)"),
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
        let service = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(route(&app, role, req).await) }
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

async fn route(app: &App, role: Role, req: Request<Incoming>) -> Response<Body> {
    let (parts, _body) = req.into_parts();
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
