//! HTTP/3 to the upstream (quinn + h3): one QUIC connection carries every concurrent request as
//! its own stream; a lost connection is noticed by its idle timeout (or a failed request) and
//! made again on the next request. Retrying what was cut off is the caller's business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::Mutex;

use super::{Body, BoxError};
use crate::error::{Error, Kind, Result};

/// Per-stream receive window: a slice fetch streams at up to window / RTT (2 MiB at 40 ms is
/// ~400 Mbit/s), while what an upstream may have in flight for a stream that dies stays small.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

#[derive(Clone)]
struct Conn {
    quic: quinn::Connection,
    send: SendRequest,
    port: u16,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    /// One endpoint (UDP socket) per address family, made on first use.
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
    /// When the last attempt to connect failed, and why: requests that were waiting for that
    /// attempt share its verdict instead of trying (and waiting) again one after another.
    failed: Option<(Instant, String)>,
}

pub(crate) struct Http3 {
    host: String,
    config: quinn::ClientConfig,
    state: Mutex<State>,
}

impl Http3 {
    /// `idle_timeout`: a connection from which nothing arrives for this long is dead.
    pub(crate) fn new(
        tls: &rustls::ClientConfig,
        host: &str,
        idle_timeout: Duration,
    ) -> Result<Http3> {
        let crypto = crate::tls::quic_client_config(tls)?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window(STREAM_WINDOW.into())
            .receive_window(CONNECTION_WINDOW.into())
            .max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok());
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        Ok(Http3 {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            config,
            state: Mutex::new(State::default()),
        })
    }

    /// True while a connection is up (for status pages; never waits).
    pub(crate) fn is_connected(&self) -> bool {
        self.state.try_lock().is_ok_and(|s| {
            s.conn
                .as_ref()
                .is_some_and(|c| c.quic.close_reason().is_none())
        })
    }

    /// The live connection to `port`, or a new one (the handshake bounded by `handshake`).
    async fn connection(&self, port: u16, handshake: Duration) -> Result<Conn> {
        let asked = Instant::now();
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            if conn.port == port && conn.quic.close_reason().is_none() {
                return Ok(conn.clone());
            }
            state.conn = None;
        }
        if let Some((at, why)) = &state.failed
            && *at >= asked
        {
            return Err(Error::upstream(Kind::Unavailable, why.clone()).retryable(false));
        }
        let result = self.connect(&mut state, port, handshake).await;
        state.failed = match &result {
            Ok(_) => None,
            Err(e) => Some((Instant::now(), e.to_string())),
        };
        result
    }

    async fn connect(&self, state: &mut State, port: u16, handshake: Duration) -> Result<Conn> {
        let addr = tokio::net::lookup_host((self.host.as_str(), port))
            .await
            .map_err(|e| {
                Error::upstream(Kind::Unavailable, format!("resolving {}", self.host))
                    .with_source(e)
                    .retryable(false)
            })?
            .next()
            .ok_or_else(|| {
                Error::upstream(Kind::Unavailable, format!("{} has no address", self.host))
                    .retryable(false)
            })?;
        let endpoint = endpoint_for(state, addr)?;
        let connecting = endpoint
            .connect_with(self.config.clone(), addr, &self.host)
            .map_err(|e| {
                Error::upstream(Kind::Unavailable, format!("QUIC to {addr}: {e}")).retryable(false)
            })?;
        let quic = match tokio::time::timeout(handshake, connecting).await {
            Err(_) => {
                return Err(Error::upstream(
                    Kind::Unavailable,
                    format!("QUIC handshake with {addr}: no answer within {handshake:?}"),
                )
                .retryable(false));
            }
            Ok(Err(e)) => {
                return Err(Error::upstream(
                    Kind::Unavailable,
                    format!("QUIC handshake with {addr}"),
                )
                .with_source(e)
                .retryable(false));
            }
            Ok(Ok(quic)) => quic,
        };
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .map_err(|e| {
                Error::upstream(Kind::BadUpstream, format!("HTTP/3 with {addr}"))
                    .with_source(e)
                    .retryable(false)
            })?;
        tokio::spawn(async move {
            let closed = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
            tracing::debug!(%addr, reason = %closed, "HTTP/3 connection to upstream closed");
        });
        tracing::debug!(%addr, "HTTP/3 connection to upstream established");
        let conn = Conn { quic, send, port };
        state.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Send a request (with `body` when not empty) to `port` and wait for the response head. A failure to reach
    /// the upstream at all is not retryable (the caller falls back or answers 504); a failure
    /// of an established exchange is.
    pub(crate) async fn request(
        &self,
        port: u16,
        request: Request<()>,
        body: Bytes,
        handshake: Duration,
    ) -> Result<(Response<()>, Body)> {
        let conn = self.connection(port, handshake).await?;
        let mut send = conn.send.clone();
        let exchange = async {
            let mut stream = send.send_request(request).await?;
            if !body.is_empty() {
                stream.send_data(body).await?;
            }
            stream.finish().await?;
            let head = stream.recv_response().await?;
            Ok::<_, h3::error::StreamError>((head, stream))
        };
        let (head, stream) = match exchange.await {
            Ok(answer) => answer,
            Err(e) => {
                // A connection the upstream closed with a TLS alert (our certificate refused
                // after the handshake, as TLS 1.3 allows) is no reason to try again.
                if let Some(closed) = conn.quic.close_reason()
                    && super::tls_refusal(&closed)
                {
                    return Err(Error::upstream(Kind::Unavailable, "TLS refused")
                        .with_source(closed)
                        .retryable(false));
                }
                return Err(Error::upstream(Kind::BadUpstream, "HTTP/3 request failed")
                    .with_source(e)
                    .retryable(true));
            }
        };
        let frames = futures_util::stream::unfold(stream, |mut stream| async move {
            match stream.recv_data().await {
                Ok(Some(mut buf)) => {
                    let data = buf.copy_to_bytes(buf.remaining());
                    Some((Ok(Frame::data(data)), stream))
                }
                Ok(None) => None,
                Err(e) => Some((Err(Box::new(e) as BoxError), stream)),
            }
        });
        Ok((head, StreamBody::new(frames).boxed_unsync()))
    }
}

fn endpoint_for(state: &mut State, addr: SocketAddr) -> Result<quinn::Endpoint> {
    let (slot, bind): (&mut Option<quinn::Endpoint>, SocketAddr) = if addr.is_ipv4() {
        (&mut state.v4, SocketAddr::from(([0, 0, 0, 0], 0)))
    } else {
        (&mut state.v6, SocketAddr::from(([0u16; 8], 0)))
    };
    if let Some(endpoint) = slot {
        return Ok(endpoint.clone());
    }
    let endpoint =
        quinn::Endpoint::client(bind).map_err(|e| Error::io("binding a UDP socket for QUIC", e))?;
    *slot = Some(endpoint.clone());
    Ok(endpoint)
}
