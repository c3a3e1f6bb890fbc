//! The listeners of a node (HTTP, HTTPS, HTTP/3, admin), routing, connection settings and
//! graceful shutdown. HTTP/1.1 and HTTP/2 share each TCP port (h2 by prior knowledge or ALPN);
//! with TLS configured, HTTP/3 listens on the HTTPS port over UDP ([`h3`]).
//!
//! Calls `content` (the `/Content` path), `calls` (SOAP), `admin` (the admin listener), `app`
//! (what the node is), `http`, `metrics`. Started by the composition root, `node`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access::{Peer, Requester};
use crate::admin;
use crate::app::App;
use crate::content;
use crate::http::sendfile::{SendfileStream, Sink};
use crate::http::{self as response, Body, BoxError, RequestBody};

pub mod calls;
mod connection;
pub mod h3;

pub use connection::raise_descriptor_limit;

const H2_STREAM_WINDOW: u32 = 4 << 20;
const H2_CONN_WINDOW: u32 = 16 << 20;

/// Who a TCP listener answers: Windows clients and downstream servers, or the admin.
#[derive(Clone, Copy)]
pub enum Role {
    Clients,
    Admin,
}

/// Accept on `listener` (with TLS when `tls` is given) and serve each connection until
/// `shutdown`.
pub async fn serve_tcp(
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
        // Body frames are queued as they are, never copied into one buffer: a copy costs a
        // pass over every byte, and file stand-ins (`http::sendfile`) must reach the transport
        // whole.
        .writev(true)
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
        // Content answers on a plain connection send committed files from the page cache.
        let sink = Sink::new();
        let files = (!tls_listener && matches!(role, Role::Clients)).then(|| sink.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let alt_svc = alt_svc.clone();
            let tls = tls_listener;
            let in_flight = requests.request();
            let files = files.clone();
            async move {
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(Peer(peer));
                // HTTP/2 interleaves streams on the connection: its frames are not written in
                // the order the bodies yield them.
                let files = files.filter(|_| {
                    matches!(
                        parts.version,
                        http::Version::HTTP_10 | http::Version::HTTP_11
                    )
                });
                let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
                let listener = if tls { Listener::Tls } else { Listener::Plain };
                let mut response = route(&app, role, listener, &parts, body, files.as_ref()).await;
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
        let watched = activity.clone();
        tokio::spawn(async move {
            let serve = async move {
                match tls {
                    None => {
                        let stream = SendfileStream::new(stream, sink);
                        let stream = connection::Watched::new(stream, watched);
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Some(acceptor) => match acceptor
                        .accept(connection::Watched::new(stream, watched))
                        .await
                    {
                        Ok(stream) => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        // A peer that hangs up mid-handshake (a load generator's last
                        // connections, a port scan) is no problem of the node's.
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            tracing::debug!(%peer, error = %e, "TLS handshake abandoned");
                            Ok(())
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

/// One request, whichever listener and protocol it came by; `files` where its connection sends
/// file stand-ins (plain HTTP/1).
async fn route(
    app: &App,
    role: Role,
    listener: Listener,
    parts: &http::request::Parts,
    body: RequestBody,
    files: Option<&Sink>,
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
            content::response::respond(
                &app.store,
                &parts.method,
                path,
                &parts.headers,
                requester,
                files,
            )
            .await,
        ),
        Role::Clients => match calls::SoapService::from_path(path) {
            Some(service) => (
                "soap",
                calls::soap(app, service, listener, parts, body, &requester).await,
            ),
            None => {
                let (class, response) = if is_self_update_path(path) {
                    ("selfupdate", self_update(&parts.method))
                } else {
                    ("other", response::text(StatusCode::NOT_FOUND, "not found"))
                };
                access_line(
                    &requester,
                    parts,
                    response.status(),
                    started,
                    tracing::Level::INFO,
                );
                (class, response)
            }
        },
    };
    app.metrics
        .request(class, response.status().as_u16(), started.elapsed());
    response.headers_mut().insert(X_REQUEST_ID, id.header());
    response
}

/// The client self-update directory, `/SelfUpdate` (MS-WUSP §2.1), any case as IIS matches it.
fn is_self_update_path(path: &str) -> bool {
    let prefix = "/selfupdate";
    path.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// What this node answers under `/SelfUpdate`: none of its files. They are Microsoft-signed
/// binaries that no server-server operation carries (MS-WSUSSS syncs updates, not them), only
/// Windows 8.1 and earlier ask for them, and Windows 10 and later never do (MS-WUSP §3.1.5.1,
/// notes <48> and <49>). A 404 is what IIS answers for a file missing from the directory, and
/// tells an old client the truth: an unsigned stand-in would stop it as surely.
fn self_update(method: &http::Method) -> Response<Body> {
    if method != http::Method::GET && method != http::Method::HEAD {
        let mut r = response::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the self-update directory takes GET and HEAD",
        );
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    response::text(
        StatusCode::NOT_FOUND,
        "this server carries no client self-update files: Windows 10 and later do not use \
         them (MS-WUSP 3.1.5.1); Windows 8.1 and earlier need a WSUS that has them",
    )
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
