//! The link to the parent server: one small seam ([`Upstream::get`]) through which every byte from
//! upstream arrives, whatever the transport: HTTP/1.1 and HTTP/2 over TCP (hyper's pooled client,
//! TLS via rustls), or HTTP/3 over QUIC (`http3`).
//!
//! `upstream.transport`: `tcp` never uses QUIC; `quic` uses nothing else (the URL's port over
//! UDP); `auto` starts over TCP, learns from the upstream's `Alt-Svc` header that it speaks
//! HTTP/3, then prefers QUIC. If the QUIC handshake gets no answer within [`AUTO_HANDSHAKE`]
//! (UDP blocked on the way), the request goes over TCP at once and QUIC is tried again only
//! after a back-off ([`QUIC_RETRY_FIRST`], doubling up to [`QUIC_RETRY_MAX`]).
//!
//! The link owns what is about the WAN, not about what it carries: the upstream-wide concurrency
//! limit, the shared bandwidth budget (`wan.max_bandwidth`), timeouts, the bearer token, and the
//! classification of failures (unreachable → retry may help; 404 → it does not). It knows nothing
//! of slices, objects or digests. Calls `config`, `error`, `metrics`, `tls`.

mod altsvc;
mod bandwidth;
mod http3;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, RANGE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use bandwidth::Bandwidth;

use crate::config::{self, Transport};
use crate::error::{Error, Kind, Result};
use crate::lock::lock;
use crate::metrics::{Metrics, TransportLabels};

pub use crate::http::BoxError;
/// A response body from any transport.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

const AGENT: &str = concat!("wsus-edge/", env!("CARGO_PKG_VERSION"));

/// In `auto` mode, how long a QUIC handshake may go unanswered before the request goes over
/// TCP instead: short, since a blocked UDP path answers nothing at all.
pub const AUTO_HANDSHAKE: Duration = Duration::from_secs(2);
/// After QUIC failed in `auto` mode, how long until it is tried again (doubling each time).
pub const QUIC_RETRY_FIRST: Duration = Duration::from_secs(30);
pub const QUIC_RETRY_MAX: Duration = Duration::from_secs(15 * 60);

/// A response from upstream whose body is still to be read with [`Upstream::next_chunk`].
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Body,
    /// Holds one place of the upstream-wide concurrency limit until the body is done.
    _permit: OwnedSemaphorePermit,
}

/// Configuration of the link, taken from `[upstream]` and `[wan]`.
pub struct Settings {
    pub url: String,
    pub transport: Transport,
    pub ca: Option<std::path::PathBuf>,
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub token: Option<String>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    pub max_bandwidth: Option<u64>,
}

impl Settings {
    /// Reads the token file, the only I/O of building a link.
    pub fn from_config(up: &config::Upstream, wan: &config::Wan) -> Result<Settings> {
        let token = match &up.token_file {
            Some(path) => config::read_tokens("upstream.token_file", path)
                .map_err(|p| Error::internal(Kind::Config, p.to_string()))?
                .into_iter()
                .next(),
            None => None,
        };
        let client_cert = match (&up.client_cert, &up.client_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => None,
        };
        Ok(Settings {
            url: up.url.clone(),
            transport: up.transport,
            ca: up.ca.clone(),
            client_cert,
            token,
            connect_timeout: up.connect_timeout,
            timeout: up.timeout,
            concurrency: up.concurrency,
            max_bandwidth: wan.max_bandwidth,
        })
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// HTTP/3 towards the upstream, and what `auto` knows of it.
struct Quic {
    link: http3::Http3,
    /// The URL's port: the only one in `quic` mode.
    url_port: u16,
    state: Mutex<QuicState>,
}

#[derive(Default)]
struct QuicState {
    /// `auto`: the UDP port of the upstream's advertised `h3` alternative, until when.
    advertised: Option<(u16, Instant)>,
    /// `auto`: QUIC failed; not tried again before this.
    retry_at: Option<Instant>,
    backoff: Option<Duration>,
}

/// What the link says of its transports, for status pages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TransportStatus {
    /// As configured: `auto`, `tcp` or `quic`.
    pub mode: &'static str,
    /// The protocol of the last response: `http1`, `http2`, `http3`, or none yet.
    pub last_used: Option<&'static str>,
    /// `connected`, `idle`, `advertised`, `not advertised`, `unavailable` (back-off running)
    /// or `off`.
    pub quic: &'static str,
}

pub struct Upstream {
    mode: Transport,
    /// HTTP/1.1 and HTTP/2; none in `quic` mode.
    tcp: Option<HttpClient>,
    /// HTTP/3; none in `tcp` mode and for an http:// upstream.
    quic: Option<Quic>,
    /// The protocol of the last response (0 = none yet, else [`PROTOCOLS`] index + 1).
    last_used: AtomicU8,
    /// The upstream said it reads gzip-coded request bodies (RFC 7694 Accept-Encoding in an
    /// answer); a Microsoft WSUS never does, and gets them as they are.
    reads_gzip: AtomicBool,
    /// Scheme and authority plus an optional path prefix, without a trailing slash.
    base: String,
    authorization: Option<HeaderValue>,
    permits: Arc<Semaphore>,
    bandwidth: Option<Bandwidth>,
    connect_timeout: Duration,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// By index: HTTP/1.1, HTTP/2, HTTP/3 (the `transport` label values).
const PROTOCOLS: [&str; 3] = crate::metrics::TRANSPORTS;

impl Upstream {
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Result<Upstream> {
        let base = settings.url.trim_end_matches('/').to_owned();
        let uri = base
            .parse::<Uri>()
            .map_err(|e| Error::internal(Kind::Config, format!("upstream.url {base:?}: {e}")))?;
        let tls = crate::tls::client_config(
            settings.ca.as_deref(),
            settings
                .client_cert
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
        )?;
        let https = uri.scheme_str() == Some("https");
        let quic = match (settings.transport, https, uri.host()) {
            (Transport::Tcp, _, _) | (_, false, _) | (_, _, None) => None,
            (_, true, Some(host)) => Some(Quic {
                link: http3::Http3::new(&tls, host, settings.timeout)?,
                url_port: uri.port_u16().unwrap_or(443),
                state: Mutex::new(QuicState::default()),
            }),
        };
        if settings.transport == Transport::Quic && quic.is_none() {
            return Err(Error::internal(
                Kind::Config,
                "upstream.transport = \"quic\" needs an https:// upstream.url",
            ));
        }
        let tcp = (settings.transport != Transport::Quic).then(|| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_connect_timeout(Some(settings.connect_timeout));
            http.set_nodelay(true);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(settings.concurrency)
                // Slices are megabytes: windows of a few MiB keep an h2 stream from stalling
                // on a long-latency link.
                .http2_initial_stream_window_size(4 << 20)
                .http2_initial_connection_window_size(16 << 20)
                .http2_adaptive_window(true)
                .build(connector)
        });
        let authorization = match settings.token {
            Some(token) => Some(HeaderValue::from_str(&format!("Bearer {token}")).map_err(
                |_| {
                    Error::internal(
                        Kind::Config,
                        "upstream token has characters a header cannot carry",
                    )
                },
            )?),
            None => None,
        };
        Ok(Upstream {
            mode: settings.transport,
            tcp,
            quic,
            last_used: AtomicU8::new(0),
            reads_gzip: AtomicBool::new(false),
            base,
            authorization,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            bandwidth: settings.max_bandwidth.map(Bandwidth::new),
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            metrics,
        })
    }

    /// The upstream's base URL, for status pages and logs.
    /// The node's metrics, which this link counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// What the link says of its transports, for status pages.
    pub fn transport_status(&self) -> TransportStatus {
        let quic = match &self.quic {
            None => "off",
            Some(q) if q.link.is_connected() => "connected",
            Some(q) => {
                let state = lock(&q.state);
                let now = Instant::now();
                if state.retry_at.is_some_and(|t| t > now) {
                    "unavailable"
                } else if self.mode == Transport::Quic {
                    "idle"
                } else if state.advertised.is_some_and(|(_, until)| until > now) {
                    "advertised"
                } else {
                    "not advertised"
                }
            }
        };
        let last = self.last_used.load(Ordering::Relaxed) as usize;
        TransportStatus {
            mode: match self.mode {
                Transport::Auto => "auto",
                Transport::Tcp => "tcp",
                Transport::Quic => "quic",
            },
            last_used: last.checked_sub(1).and_then(|i| PROTOCOLS.get(i)).copied(),
            quic,
        }
    }

    /// GET `path` (absolute, starting with '/'), optionally an inclusive byte range. Waits for a
    /// place under the concurrency limit, then for the response head (bounded by the stall
    /// timeout). Any status is returned as is; only transport failures are errors.
    pub async fn get(&self, path: &str, range: Option<(u64, u64)>) -> Result<Fetched> {
        let mut headers = HeaderMap::new();
        if let Some((first, last)) = range {
            let value = HeaderValue::from_str(&format!("bytes={first}-{last}"))
                .map_err(|e| Error::internal(Kind::Io, format!("range header: {e}")))?;
            headers.insert(RANGE, value);
        }
        self.request(Method::GET, path, headers, Bytes::new()).await
    }

    /// POST `body` of `content_type` (with the other `headers` given) to `path`, as [`get`]
    /// does a GET: the server-server protocol's SOAP calls.
    ///
    /// [`get`]: Upstream::get
    /// Whether the upstream said it reads gzip-coded request bodies.
    pub fn reads_gzip(&self) -> bool {
        self.reads_gzip.load(Ordering::Relaxed)
    }

    /// Learn from an answer's headers which request codings the upstream reads (RFC 7694): it
    /// says so in every answer, so a changed upstream is followed.
    pub fn learn_codings(&self, answer: &HeaderMap) {
        let gzip = crate::http::coding::lists_gzip(answer);
        self.reads_gzip.store(gzip, Ordering::Relaxed);
    }

    /// One exchange, counted: its time to the response head by transport, or why it failed.
    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Fetched> {
        let started = Instant::now();
        let result = self.exchange(method, path, headers, body, started).await;
        match &result {
            Ok(fetched) if fetched.status.is_server_error() => {
                self.metrics.upstream_error("status");
            }
            Ok(_) => {}
            Err(e) => self.metrics.upstream_error(error_reason(e)),
        }
        result.map_err(|e| match crate::tls::refused_certificate_hint(&e) {
            Some(hint) => e.context(hint),
            None => e,
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        body: Bytes,
        started: Instant,
    ) -> Result<Fetched> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal(Kind::Io, "upstream link closed"))?;
        let uri: Uri = format!("{}{}", self.base, path)
            .parse()
            .map_err(|e| Error::internal(Kind::Config, format!("upstream URL for {path}: {e}")))?;
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        if let Some(auth) = &self.authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if let Some((quic, port)) = self.quic_route() {
            let handshake = match self.mode {
                Transport::Quic => self.connect_timeout,
                _ => AUTO_HANDSHAKE.min(self.connect_timeout),
            };
            let mut request = Request::builder()
                .method(method.clone())
                .uri(uri.clone())
                .body(())
                .map_err(|e| Error::internal(Kind::Io, format!("building request: {e}")))?;
            *request.headers_mut() = headers.clone();
            let exchange = quic.link.request(port, request, body.clone(), handshake);
            match tokio::time::timeout(self.timeout, exchange).await {
                Err(_) => return Err(no_response(self.timeout)),
                Ok(Ok((head, body))) => {
                    quic_succeeded(quic);
                    let (parts, ()) = head.into_parts();
                    return Ok(self.fetched(
                        parts.status,
                        parts.headers,
                        Version::HTTP_3,
                        body,
                        (permit, started),
                    ));
                }
                // Unreachable over UDP: in `auto`, say so once per back-off and use TCP.
                Ok(Err(e)) if self.mode == Transport::Auto && !e.is_retryable() => {
                    let retry_in = quic_failed(quic);
                    tracing::warn!(upstream = %self.base, error = %e, ?retry_in,
                        "HTTP/3 unavailable, using TCP");
                }
                Ok(Err(e)) => return Err(e),
            }
        }
        let Some(client) = &self.tcp else {
            return Err(Error::internal(
                Kind::Config,
                "no transport to the upstream",
            ));
        };
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| Error::internal(Kind::Io, format!("building request: {e}")))?;
        *request.headers_mut() = headers;
        let response = match tokio::time::timeout(self.timeout, client.request(request)).await {
            Err(_) => return Err(no_response(self.timeout)),
            // A refused or timed-out connection means the upstream is down: say so at once
            // (clients get a quick 504). Anything else broke an existing exchange and is worth
            // another try.
            Ok(Err(e)) if e.is_connect() => {
                return Err(Error::upstream(Kind::Unavailable, "cannot connect")
                    .with_source(e)
                    .retryable(false));
            }
            // With TLS 1.3 a server refuses a client certificate (or its absence) only after
            // the client thinks the handshake is done: that is no reason to try again.
            Ok(Err(e)) if tls_refusal(&e) => {
                return Err(Error::upstream(Kind::Unavailable, "TLS refused")
                    .with_source(e)
                    .retryable(false));
            }
            Ok(Err(e)) => {
                return Err(Error::upstream(Kind::BadUpstream, "request failed")
                    .with_source(e)
                    .retryable(true));
            }
            Ok(Ok(response)) => response,
        };
        let version = response.version();
        let (parts, body) = response.into_parts();
        if let Some(quic) = &self.quic
            && self.mode == Transport::Auto
        {
            learn_alt_svc(quic, &parts.headers);
        }
        let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
        Ok(self.fetched(
            parts.status,
            parts.headers,
            version,
            body,
            (permit, started),
        ))
    }

    /// QUIC and the UDP port to use for the next request, if QUIC is to be tried.
    fn quic_route(&self) -> Option<(&Quic, u16)> {
        let quic = self.quic.as_ref()?;
        if self.mode == Transport::Quic {
            return Some((quic, quic.url_port));
        }
        let state = lock(&quic.state);
        let now = Instant::now();
        if state.retry_at.is_some_and(|t| t > now) {
            return None;
        }
        match state.advertised {
            Some((port, until)) if until > now => Some((quic, port)),
            _ => None,
        }
    }

    fn fetched(
        &self,
        status: StatusCode,
        headers: HeaderMap,
        version: Version,
        body: Body,
        (permit, started): (OwnedSemaphorePermit, Instant),
    ) -> Fetched {
        let index = match version {
            Version::HTTP_3 => 2,
            Version::HTTP_2 => 1,
            _ => 0,
        };
        self.last_used.store(index as u8 + 1, Ordering::Relaxed);
        let transport = TransportLabels {
            transport: PROTOCOLS[index],
        };
        self.metrics
            .upstream_requests
            .get_or_create(&transport)
            .inc();
        self.metrics
            .upstream_duration
            .get_or_create(&transport)
            .observe(started.elapsed().as_secs_f64());
        Fetched {
            status,
            headers,
            body,
            _permit: permit,
        }
    }

    /// The next piece of a body, or None at its end. A piece that does not arrive within the
    /// stall timeout is an error (the caller resumes by range). Received bytes are counted and
    /// charged to the WAN budget before they are handed out.
    pub async fn next_chunk(&self, fetched: &mut Fetched) -> Result<Option<Bytes>> {
        loop {
            let frame = match tokio::time::timeout(self.timeout, fetched.body.frame()).await {
                Err(_) => {
                    self.metrics.upstream_error("timeout");
                    return Err(Error::upstream(
                        Kind::Unavailable,
                        format!("body stalled for {:?}", self.timeout),
                    ));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    self.metrics.upstream_error("body");
                    return Err(Error::upstream(Kind::BadUpstream, format!("body: {e}")));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing we use.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.metrics.upstream_bytes.inc_by(data.len() as u64);
            if let Some(bandwidth) = &self.bandwidth {
                bandwidth.consume(data.len() as u64).await;
            }
            return Ok(Some(data));
        }
    }
}

/// Why an exchange got no response, as `wsus_edge_upstream_errors_total` names it.
fn error_reason(e: &Error) -> &'static str {
    if tls_refusal(e) {
        "tls"
    } else if e.message().starts_with(NO_RESPONSE) {
        "timeout"
    } else if e.kind() == Kind::Unavailable {
        "connect"
    } else {
        "request"
    }
}

const NO_RESPONSE: &str = "no response within";

fn no_response(timeout: Duration) -> Error {
    Error::upstream(Kind::Unavailable, format!("{NO_RESPONSE} {timeout:?}"))
}

fn quic_succeeded(quic: &Quic) {
    let mut state = lock(&quic.state);
    state.retry_at = None;
    state.backoff = None;
}

/// Start (or lengthen) the back-off after QUIC could not be reached; returns its length.
fn quic_failed(quic: &Quic) -> Duration {
    let mut state = lock(&quic.state);
    let backoff = state
        .backoff
        .map_or(QUIC_RETRY_FIRST, |b| (b * 2).min(QUIC_RETRY_MAX));
    state.backoff = Some(backoff);
    state.retry_at = Some(Instant::now() + backoff);
    backoff
}

/// Remember (or forget) the upstream's HTTP/3 alternative from a TCP response's `Alt-Svc`.
fn learn_alt_svc(quic: &Quic, headers: &HeaderMap) {
    let mut verdict = None;
    for value in headers.get_all(http::header::ALT_SVC) {
        if let Ok(text) = value.to_str() {
            verdict = Some(altsvc::h3_alternative(text));
        }
    }
    let Some(verdict) = verdict else {
        return;
    };
    let mut state = lock(&quic.state);
    state.advertised = match verdict {
        altsvc::Alternative::H3 { port, max_age } => Some((
            port,
            Instant::now() + max_age.min(Duration::from_secs(30 * 86400)),
        )),
        altsvc::Alternative::Clear => None,
        altsvc::Alternative::None => state.advertised,
    };
}

/// Whether a failure is a TLS peer refusing the handshake (a certificate rejected or missing),
/// anywhere in its chain: over TCP a rustls error or a received fatal alert (inside an
/// `io::Error`), over QUIC a connection closed with a TLS alert (QUIC error codes
/// 0x100..=0x1ff, RFC 9001 §4.8).
pub(crate) fn tls_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // tokio-rustls hands a received alert over as an `io::Error` (InvalidData) whose
        // payload is the rustls error or only its text.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && (inner.downcast_ref::<rustls::Error>().is_some()
                || inner.to_string().starts_with("received fatal alert"))
        {
            return true;
        }
        if let Some(quinn::ConnectionError::ConnectionClosed(close)) =
            e.downcast_ref::<quinn::ConnectionError>()
            && (0x100..0x200).contains(&u64::from(close.error_code))
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// SOAP calls to the upstream (the sync, the rollup) go over the link like every other request:
/// its transport, retries of the connection, TLS and bandwidth share.
impl crate::soap_client::Transport for Upstream {
    async fn post(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
        limit: usize,
    ) -> Result<crate::soap_client::Posted> {
        let mut fetched = self.request(Method::POST, path, headers, body).await?;
        self.learn_codings(&fetched.headers);
        let mut answer = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut fetched).await? {
            if answer.len() + chunk.len() > limit {
                return Err(Error::upstream(
                    Kind::BadUpstream,
                    format!("answer over {limit} bytes"),
                ));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok(crate::soap_client::Posted {
            status: fetched.status,
            headers: fetched.headers,
            body: answer,
        })
    }

    /// A server: a wsus-edge upstream compresses its answers (mostly update XML: ~8x
    /// smaller); a Microsoft one offers only xpress and answers this uncompressed.
    fn caller(&self) -> crate::soap_client::Caller {
        crate::soap_client::Caller::Server
    }

    fn reads_gzip(&self) -> bool {
        Upstream::reads_gzip(self)
    }
}
