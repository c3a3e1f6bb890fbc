//! The HTTP/3 listener: QUIC on the UDP port of the HTTPS listener, with the same certificate
//! (and client-certificate requirement) and the same routes as over TCP. The TCP listener
//! advertises it with `Alt-Svc`.
//!
//! A response body that fails midway resets its stream (`H3_INTERNAL_ERROR`), the HTTP/3 form
//! of closing the connection early: the client never sees a complete-looking short body.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Listener, Role, route};
use crate::access::Peer;
use crate::app::App;
use crate::error::{Error, Kind, Result};

type RequestStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Bind the QUIC endpoint at `addr` (the HTTPS listener's address, actual port).
pub fn bind(addr: SocketAddr, tls: &rustls::ServerConfig) -> Result<quinn::Endpoint> {
    let crypto = crate::tls::quic_server_config(tls)?;
    let mut transport = quinn::TransportConfig::default();
    // The upstream side sends the bulk data, so its congestion controller decides how a lossy
    // WAN is used: BBR paces at the measured bottleneck rate instead of halving the window on
    // every random loss, as loss-based controllers (Cubic, NewReno) do.
    transport.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    quinn::Endpoint::server(config, addr).map_err(|e| {
        Error::internal(
            Kind::Config,
            format!("listen.https {addr}: cannot bind UDP for HTTP/3"),
        )
        .with_source(e)
    })
}

/// Accept connections until shutdown; then stop accepting, let every connection finish the
/// requests it has, and close.
pub async fn serve(endpoint: quinn::Endpoint, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let peer = incoming.remote_address();
            match incoming.await {
                Ok(conn) => connection(conn, app, shutdown).await,
                Err(e) => tracing::warn!(%peer, error = %e, "QUIC handshake refused"),
            }
        });
    }
    while connections.join_next().await.is_some() {}
    endpoint.close(0u32.into(), b"shutting down");
    endpoint.wait_idle().await;
}

async fn connection(conn: quinn::Connection, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let peer = conn.remote_address();
    let mut h3 =
        match h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await {
            Ok(h3) => h3,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection setup failed");
                return;
            }
        };
    let mut requests = JoinSet::new();
    loop {
        let resolver = tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => resolver,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                    break;
                }
            },
            _ = shutdown.changed() => break,
        };
        let app = app.clone();
        requests.spawn(async move {
            match resolver.resolve_request().await {
                Ok((request, stream)) => respond(&app, request, stream, peer).await,
                Err(e) => tracing::debug!(%peer, error = %e, "HTTP/3 request unreadable"),
            }
        });
    }
    while requests.join_next().await.is_some() {}
}

async fn respond(
    app: &App,
    request: http::Request<()>,
    stream: RequestStream,
    peer: std::net::SocketAddr,
) {
    let (mut parts, ()) = request.into_parts();
    parts.extensions.insert(Peer(peer));
    let (mut stream, recv) = stream.split();
    let frames = futures_util::stream::unfold(recv, |mut recv| async move {
        match recv.recv_data().await {
            Ok(Some(mut buf)) => {
                let n = bytes::Buf::remaining(&buf);
                let data = bytes::Buf::copy_to_bytes(&mut buf, n);
                Some((Ok(http_body::Frame::data(data)), recv))
            }
            Ok(None) => None,
            Err(e) => Some((Err(Box::new(e) as crate::http::BoxError), recv)),
        }
    });
    let body = http_body_util::StreamBody::new(frames).boxed_unsync();
    let response = route(app, Role::Clients, Listener::Tls, &parts, body, None).await;
    let (head, mut body) = response.into_parts();
    if stream
        .send_response(http::Response::from_parts(head, ()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data()
                    && stream.send_data(data).await.is_err()
                {
                    return;
                }
            }
            Err(_) => {
                stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        }
    }
    let _ = stream.finish().await;
}
