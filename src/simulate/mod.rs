//! Simulated Windows clients, for the demo, the tests and load. They are clients only: they
//! speak HTTP to a node and never call its handlers.
//!
//! [`delivery_optimization`] downloads one file the way Delivery Optimization does against a
//! WSUS content URL (`../shared/protocol/samples/native-wua-capture/06-*`): the size is known
//! from the update metadata, the file is cut into 1 MiB ranges, the ranges are fetched in a
//! shuffled order over a few keep-alive connections, every answer must be a 206 with the exact
//! Content-Range, and the assembled file must hash to the SHA-1 in its name.
//! Calls `content::path` (names), `error` and `testkit` (the random source).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_RANGE, RANGE, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha1::{Digest as _, Sha1};
use tokio::sync::Mutex;

use crate::content::path::Digest;
use crate::error::{Error, Kind, Result};

pub mod wua;

pub use crate::testkit::random::SplitMix;

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

const DO_AGENT: &str = "Microsoft-Delivery-Optimization/10.1";

/// A keep-alive HTTP/1.1 client like the ones Windows uses for content.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(connector)
}

/// One file to fetch: its URL, its size (from the update metadata) and the SHA-1 it must have.
#[derive(Debug, Clone)]
pub struct Download {
    pub url: String,
    pub size: u64,
    pub sha1: Digest,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub range_bytes: u64,
    pub connections: usize,
    pub seed: u64,
    /// Limit on one response, so a stuck server fails the download instead of hanging.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            range_bytes: 1 << 20,
            connections: 4,
            seed: 1,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What one download saw.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub requests: u64,
    pub body_bytes: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// The assembled file hashed to the name.
    pub verified: bool,
    /// Time to the first body byte of the first range answered.
    pub first_byte: Duration,
    pub elapsed: Duration,
}

/// Download `file` as Delivery Optimization does. Errors are transport failures and protocol
/// violations (a status other than 206, a wrong Content-Range, a short body); a digest mismatch
/// is reported as `verified: false`.
pub async fn delivery_optimization(
    client: &HttpClient,
    file: &Download,
    options: Options,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut ranges: Vec<(u64, u64)> = (0..file.size.div_ceil(options.range_bytes))
        .map(|i| {
            let start = i * options.range_bytes;
            (start, (start + options.range_bytes).min(file.size) - 1)
        })
        .collect();
    SplitMix(options.seed).shuffle(&mut ranges);
    let queue = Arc::new(Mutex::new(ranges));
    let assembled = Arc::new(std::sync::Mutex::new(vec![0u8; file.size as usize]));
    let first_byte_ns = Arc::new(AtomicU64::new(u64::MAX));
    let uri: Uri = file
        .url
        .parse()
        .map_err(|e| Error::client(Kind::BadRequest, format!("url {}: {e}", file.url)))?;

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.connections.max(1) {
        let (queue, assembled, first_byte_ns) =
            (queue.clone(), assembled.clone(), first_byte_ns.clone());
        let (client, uri) = (client.clone(), uri.clone());
        workers.spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let Some((first, last)) = queue.lock().await.pop() else {
                    return Ok::<_, Error>(outcome);
                };
                let body = tokio::time::timeout(
                    options.timeout,
                    fetch_range(&client, &uri, first, last, started, &first_byte_ns),
                )
                .await
                .map_err(|_| {
                    Error::upstream(Kind::Unavailable, format!("range {first}-{last} timed out"))
                })??;
                outcome.requests += 1;
                *outcome.statuses.entry(206).or_default() += 1;
                outcome.body_bytes += body.len() as u64;
                let mut file = crate::lock::lock(&assembled);
                file[first as usize..=last as usize].copy_from_slice(&body);
            }
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = workers.join_next().await {
        let outcome =
            joined.map_err(|e| Error::internal(Kind::Io, format!("download worker: {e}")))??;
        total.requests += outcome.requests;
        total.body_bytes += outcome.body_bytes;
        for (status, n) in outcome.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
    }
    let digest = {
        let file = crate::lock::lock(&assembled);
        Digest(Sha1::digest(&file[..]).into())
    };
    total.verified = digest == file.sha1;
    total.first_byte =
        Duration::from_nanos(first_byte_ns.load(Ordering::Relaxed).min(u64::MAX - 1));
    total.elapsed = started.elapsed();
    Ok(total)
}

async fn fetch_range(
    client: &HttpClient,
    uri: &Uri,
    first: u64,
    last: u64,
    started: Instant,
    first_byte_ns: &AtomicU64,
) -> Result<Bytes> {
    let request = Request::get(uri.clone())
        .header(RANGE, format!("bytes={first}-{last}"))
        .header(USER_AGENT, DO_AGENT)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::internal(Kind::Io, format!("request: {e}")))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| Error::upstream(Kind::Unavailable, "request failed").with_source(e))?;
    let status = response.status();
    if status != StatusCode::PARTIAL_CONTENT {
        return Err(Error::upstream(
            Kind::BadUpstream,
            format!("range {first}-{last}: status {status}"),
        ));
    }
    let expected = format!("bytes {first}-{last}/");
    let content_range = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_range.starts_with(&expected) {
        return Err(Error::upstream(
            Kind::BadUpstream,
            format!("range {first}-{last}: Content-Range {content_range:?}"),
        ));
    }
    let mut body = response.into_body();
    let mut out = Vec::with_capacity((last - first + 1) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Error::upstream(
                Kind::BadUpstream,
                format!("range {first}-{last}: body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if out.is_empty() && !data.is_empty() {
                first_byte_ns.fetch_min(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            out.extend_from_slice(&data);
        }
    }
    if out.len() as u64 != last - first + 1 {
        return Err(Error::upstream(
            Kind::BadUpstream,
            format!("range {first}-{last}: {} bytes", out.len()),
        ));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_reproducible() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        SplitMix(7).shuffle(&mut a);
        SplitMix(7).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..100).collect::<Vec<_>>());
    }
}
