//! The link to the parent server: one small seam ([`Upstream::get`]) through which every byte from
//! upstream arrives, whatever the transport. Today HTTP/1.1 and HTTP/2 (hyper's pooled client,
//! TLS via rustls); HTTP/3 joins behind the same seam later.
//!
//! The link owns what is about the WAN, not about what it carries: the upstream-wide concurrency
//! limit, the shared bandwidth budget (`wan.max_bandwidth`), timeouts, the bearer token, and the
//! classification of failures (unreachable → retry may help; 404 → it does not). It knows nothing
//! of slices, objects or digests. Calls `config`, `error`, `metrics`, `tls`.

mod bandwidth;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, RANGE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use bandwidth::Bandwidth;

use crate::config;
use crate::error::{Error, Kind, Result};
use crate::metrics::{Metrics, TransportLabels};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body from any transport.
pub type Body = BoxBody<Bytes, BoxError>;

const AGENT: &str = concat!("wsus-edge/", env!("CARGO_PKG_VERSION"));

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
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::internal(
                        Kind::Config,
                        format!("upstream.token_file {}: {e}", path.display()),
                    )
                })?;
                let token = text.lines().next().unwrap_or("").trim().to_owned();
                if token.is_empty() {
                    return Err(Error::internal(
                        Kind::Config,
                        format!("upstream.token_file {} is empty", path.display()),
                    ));
                }
                Some(token)
            }
            None => None,
        };
        let client_cert = match (&up.client_cert, &up.client_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => None,
        };
        Ok(Settings {
            url: up.url.clone(),
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

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The transports behind the seam.
enum Transport {
    Http(HttpClient),
}

pub struct Upstream {
    transport: Transport,
    /// Scheme and authority plus an optional path prefix, without a trailing slash.
    base: String,
    authorization: Option<HeaderValue>,
    permits: Arc<Semaphore>,
    bandwidth: Option<Bandwidth>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Result<Upstream> {
        let base = settings.url.trim_end_matches('/').to_owned();
        base.parse::<Uri>()
            .map_err(|e| Error::internal(Kind::Config, format!("upstream.url {base:?}: {e}")))?;
        let tls = crate::tls::client_config(
            settings.ca.as_deref(),
            settings
                .client_cert
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
        )?;
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
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(settings.concurrency)
            // Slices are megabytes: windows of a few MiB keep an h2 stream from stalling on a
            // long-latency link.
            .http2_initial_stream_window_size(4 << 20)
            .http2_initial_connection_window_size(16 << 20)
            .http2_adaptive_window(true)
            .build(connector);
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
            transport: Transport::Http(client),
            base,
            authorization,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            bandwidth: settings.max_bandwidth.map(Bandwidth::new),
            timeout: settings.timeout,
            metrics,
        })
    }

    /// The upstream's base URL, for status pages and logs.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// GET `path` (absolute, starting with '/'), optionally an inclusive byte range. Waits for a
    /// place under the concurrency limit, then for the response head (bounded by the stall
    /// timeout). Any status is returned as is; only transport failures are errors.
    pub async fn get(&self, path: &str, range: Option<(u64, u64)>) -> Result<Fetched> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal(Kind::Io, "upstream link closed"))?;
        let uri: Uri = format!("{}{}", self.base, path)
            .parse()
            .map_err(|e| Error::internal(Kind::Config, format!("upstream URL for {path}: {e}")))?;
        let mut request = Request::get(uri)
            .header(USER_AGENT, AGENT)
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::internal(Kind::Io, format!("building request: {e}")))?;
        if let Some((first, last)) = range {
            let value = HeaderValue::from_str(&format!("bytes={first}-{last}"))
                .map_err(|e| Error::internal(Kind::Io, format!("range header: {e}")))?;
            request.headers_mut().insert(RANGE, value);
        }
        if let Some(auth) = &self.authorization {
            request.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let Transport::Http(client) = &self.transport;
        let response = match tokio::time::timeout(self.timeout, client.request(request)).await {
            Err(_) => {
                return Err(Error::upstream(
                    Kind::Unavailable,
                    format!("no response within {:?}", self.timeout),
                ));
            }
            // A refused or timed-out connection means the upstream is down: say so at once
            // (clients get a quick 504). Anything else broke an existing exchange and is worth
            // another try.
            Ok(Err(e)) if e.is_connect() => {
                return Err(Error::upstream(Kind::Unavailable, "cannot connect")
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
        let transport = match response.version() {
            Version::HTTP_2 => "http2",
            _ => "http1",
        };
        self.metrics
            .upstream_requests
            .get_or_create(&TransportLabels { transport })
            .inc();
        let (parts, body) = response.into_parts();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body: body.map_err(|e| Box::new(e) as BoxError).boxed(),
            _permit: permit,
        })
    }

    /// The next piece of a body, or None at its end. A piece that does not arrive within the
    /// stall timeout is an error (the caller resumes by range). Received bytes are counted and
    /// charged to the WAN budget before they are handed out.
    pub async fn next_chunk(&self, fetched: &mut Fetched) -> Result<Option<Bytes>> {
        loop {
            let frame = match tokio::time::timeout(self.timeout, fetched.body.frame()).await {
                Err(_) => {
                    return Err(Error::upstream(
                        Kind::Unavailable,
                        format!("body stalled for {:?}", self.timeout),
                    ));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
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
