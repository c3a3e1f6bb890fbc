//! What every HTTP exchange of a node is made of, whichever listener it came by: the body types,
//! short plain-text and typed answers, a request body read whole under a size and a time limit,
//! the content codings of SOAP bodies ([`coding`]), and file bytes sent by `sendfile(2)` on plain
//! HTTP/1 connections ([`sendfile`]). Knows no route and no protocol.
//!
//! May call: `error` (the status a failure maps to), `lock`. Everything that answers HTTP uses it.

pub mod coding;
pub mod sendfile;
pub mod xpress;

use std::sync::Arc;
use std::time::Duration;

use ::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use ::http::{HeaderValue, Response, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::Semaphore;

use crate::error::{Error, Kind};
use coding::Coding;

/// The error a body stream ends with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every answer: bytes from memory, disk or a fill, polled by the connection.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty_body() -> Body {
    full_body(Bytes::new())
}

/// A short plain-text answer (errors).
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full_body(format!("{message}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(message.len() + 1));
    response
}

/// The status a failed lookup maps to.
pub fn error_status(err: &Error) -> StatusCode {
    match err.kind() {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Unavailable => StatusCode::GATEWAY_TIMEOUT,
        Kind::BadUpstream | Kind::Digest => StatusCode::BAD_GATEWAY,
        Kind::DiskFull | Kind::Io | Kind::Config => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `body` with its type, its length and `Cache-Control: no-store` (admin views, API answers).
pub fn with_type(body: String, content_type: &'static str) -> Response<Body> {
    let len = body.len();
    let mut response = Response::new(full_body(body));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A request body as the listeners hand it over (HTTP/1.1, HTTP/2 and HTTP/3 alike).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a request body could not be had.
pub enum BodyError {
    /// Over the limit (declared or sent); reading stopped there.
    TooLarge,
    /// The transport failed mid-body, or a compressed body does not decompress.
    Broken,
    /// Sent in a content coding other than gzip or xpress (RFC 7694: 415).
    UnsupportedCoding,
    /// Not all there by the deadline (`listen.body_timeout`).
    TimedOut,
}

impl BodyError {
    /// The plain answer to a body that could not be had (SOAP answers TooLarge with a fault).
    pub fn response(&self, limit: usize) -> Response<Body> {
        match self {
            BodyError::TooLarge => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body over {limit} bytes"),
            ),
            BodyError::Broken => text(StatusCode::BAD_REQUEST, "request body broken"),
            BodyError::TimedOut => {
                let mut r = text(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                );
                r.headers_mut().insert(
                    ::http::header::CONNECTION,
                    HeaderValue::from_static("close"),
                );
                r
            }
            BodyError::UnsupportedCoding => {
                let mut r = text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "request body in a content coding this server does not read: send gzip or none",
                );
                r.headers_mut().insert(
                    ::http::header::ACCEPT_ENCODING,
                    HeaderValue::from_static("gzip"),
                );
                r
            }
        }
    }

    /// The `reason` it is counted under in `wsus_edge_requests_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::TooLarge => "body_too_large",
            BodyError::Broken | BodyError::UnsupportedCoding => "body_broken",
            BodyError::TimedOut => "body_timeout",
        }
    }
}

/// Read a whole request body of at most `limit` bytes within `timeout` of now; a declared
/// Content-Length over the limit is refused before a byte is read.
pub async fn read_body(
    headers: &::http::HeaderMap,
    mut body: RequestBody,
    limit: usize,
    timeout: Duration,
) -> std::result::Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
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
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

/// A SOAP body as sent, decoded from its content coding (gzip, xpress, or none): at most
/// `limit` bytes decoded.
pub fn decode_body(
    coding: Coding,
    bytes: Vec<u8>,
    limit: usize,
) -> std::result::Result<Vec<u8>, BodyError> {
    coding::decode(coding, bytes, limit).map_err(|e| match e.kind() {
        std::io::ErrorKind::FileTooLarge => BodyError::TooLarge,
        std::io::ErrorKind::Unsupported => BodyError::UnsupportedCoding,
        _ => BodyError::Broken,
    })
}

/// The bound on SOAP calls being answered at once: `calls` answered together, the rest waiting
/// in order of arrival at most `wait` each, and at most `calls × 16` of them waiting; a call
/// past either bound is told ServerBusy at once. Under a load the node cannot keep up with,
/// an answer is late by at most `wait` plus its own work, and the clients told to come back
/// later cost next to nothing: latency does not grow with the backlog.
pub struct Admission {
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    wait: Duration,
}

impl Admission {
    pub fn new(calls: usize, wait: Duration) -> Admission {
        let calls = calls.max(1);
        Admission {
            running: Arc::new(Semaphore::new(calls)),
            waiting: Arc::new(Semaphore::new(calls.saturating_mul(16))),
            wait,
        }
    }

    /// Leave to answer one call, held until it is dropped; `None`: the node is busy.
    pub async fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Some(permit);
        }
        let _waiting = self.waiting.clone().try_acquire_owned().ok()?;
        tokio::time::timeout(self.wait, self.running.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// How long a call waits for a parser before it is told the server is busy, and what it is
/// told to wait before trying again.
const PARSER_WAIT: Duration = Duration::from_secs(5);
pub const RETRY_AFTER_SECONDS: u64 = 10;

/// The bound on large parses: `parallel` at once on the blocking pool, and a queue of
/// `4 × parallel` callers waiting at most `PARSER_WAIT`; the rest are refused at once. What
/// they hold meanwhile is their body as sent (bounded by the service's limit).
pub struct Parsers {
    running: Arc<Semaphore>,
    queue: Arc<Semaphore>,
}

impl Parsers {
    /// Half the cores (at least one): the async workers keep the other half for the content
    /// path while a storm of large calls parses.
    pub fn for_this_machine() -> Parsers {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Parsers::new((cores / 2).max(1))
    }

    pub fn new(parallel: usize) -> Parsers {
        Parsers {
            running: Arc::new(Semaphore::new(parallel)),
            queue: Arc::new(Semaphore::new(parallel * 4)),
        }
    }

    /// `work` on the blocking pool under the bound; `None`: the server is busy.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _queued = self.queue.clone().try_acquire_owned().ok()?;
        let permit = tokio::time::timeout(PARSER_WAIT, self.running.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn admission_bounds_the_calls_the_wait_and_the_waiters() {
        let admission = Arc::new(Admission::new(1, Duration::from_secs(2)));
        let first = admission.admit().await.expect("the one call");
        // A second waits its two seconds, and is told busy.
        let started = tokio::time::Instant::now();
        assert!(admission.admit().await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // Sixteen may wait at once; the seventeenth is told at once.
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let admission = admission.clone();
                tokio::spawn(async move { admission.admit().await.is_some() })
            })
            .collect();
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        assert!(admission.admit().await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The call ends: the waiters are admitted in turn, each ending at once.
        drop(first);
        for waiter in waiters {
            assert!(waiter.await.unwrap());
        }
        assert!(admission.admit().await.is_some());
        // No wait at all: busy at once while the call is taken.
        let at_once = Admission::new(1, Duration::ZERO);
        let _held = at_once.admit().await.unwrap();
        assert!(at_once.admit().await.is_none());
    }
}
