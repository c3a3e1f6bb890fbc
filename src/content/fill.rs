//! One slice in flight from upstream, shared by every client that wants it (single-flight).
//!
//! A [`SliceFill`] is the only fetch of its slice: the fetch task appends what arrives, readers
//! follow along and are handed each piece as soon as it is there. A failed fetch wakes every
//! reader with the error; the slot goes back to absent so that a later request tries again.
//! The task itself ([`fetch`]) talks to the upstream link and resumes by range after resets,
//! stalls and short bodies, within a bounded number of attempts.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use crate::error::{Error, Kind, Result};
use crate::upstream::{Fetched, Upstream};

#[derive(Clone, Debug)]
enum Status {
    Running,
    Done,
    Failed(Kind, String),
}

struct Buf {
    chunks: Vec<Bytes>,
    /// Offset within the slice of each chunk; parallel to `chunks`.
    offsets: Vec<u64>,
    received: u64,
    status: Status,
}

pub struct SliceFill {
    pub index: u64,
    buf: Mutex<Buf>,
    /// Bumped on every change so that readers wake; the value itself is unused.
    changed: watch::Sender<()>,
}

impl SliceFill {
    pub fn new(index: u64) -> SliceFill {
        SliceFill {
            index,
            buf: Mutex::new(Buf {
                chunks: Vec::new(),
                offsets: Vec::new(),
                received: 0,
                status: Status::Running,
            }),
            changed: watch::channel(()).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buf> {
        crate::lock::lock(&self.buf)
    }

    pub fn received(&self) -> u64 {
        self.lock().received
    }

    fn push(&self, data: Bytes) {
        let mut buf = self.lock();
        let at = buf.received;
        buf.received += data.len() as u64;
        buf.offsets.push(at);
        buf.chunks.push(data);
        drop(buf);
        self.changed.send_replace(());
    }

    fn set_status(&self, status: Status) {
        self.lock().status = status;
        self.changed.send_replace(());
    }

    pub fn fail(&self, err: &Error) {
        self.set_status(Status::Failed(err.kind(), err.message().to_owned()));
    }

    /// The whole slice as one buffer, once done (one copy: it becomes the memory-tier entry
    /// and the disk write, so later readers share it).
    fn concat(&self) -> Bytes {
        let buf = self.lock();
        let mut out = BytesMut::with_capacity(buf.received as usize);
        for chunk in &buf.chunks {
            out.extend_from_slice(chunk);
        }
        out.freeze()
    }

    /// The bytes of `[pos, end)` (offsets within the slice) that are there now, waiting until
    /// at least one is. Empty when the slice ended before `pos` (it is shorter than asked).
    pub async fn read(&self, pos: u64, end: u64) -> Result<Vec<Bytes>> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let buf = self.lock();
                if buf.received > pos {
                    return Ok(pieces(&buf, pos, end));
                }
                match &buf.status {
                    Status::Running => {}
                    Status::Done => return Ok(Vec::new()),
                    Status::Failed(kind, message) => {
                        return Err(Error::upstream(*kind, message.clone()));
                    }
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::internal(Kind::Io, "slice fill abandoned"));
            }
        }
    }
}

/// Slices of the received chunks covering `[pos, min(end, received))`; no copies.
fn pieces(buf: &Buf, pos: u64, end: u64) -> Vec<Bytes> {
    let end = end.min(buf.received);
    let first = match buf.offsets.binary_search(&pos) {
        Ok(i) => i,
        Err(i) => i.saturating_sub(1),
    };
    let mut out = Vec::new();
    for (chunk, &at) in buf.chunks[first..].iter().zip(&buf.offsets[first..]) {
        if at >= end {
            break;
        }
        let from = pos.saturating_sub(at) as usize;
        let to = ((end - at) as usize).min(chunk.len());
        if from < to {
            out.push(chunk.slice(from..to));
        }
    }
    out
}

/// What the first upstream answer says of the whole object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learned {
    pub size: u64,
    /// Seconds since the epoch, from upstream's Last-Modified (now when it sends none).
    pub last_modified: u64,
}

/// Told by [`fetch`] what upstream says about the object; returns the size to hold the slice to
/// (the object's known size) or an error if upstream contradicts it.
pub trait Sizing {
    fn learn(&self, learned: Learned) -> impl std::future::Future<Output = Result<u64>> + Send;
}

pub struct FetchSpec<'a> {
    pub upstream: &'a Upstream,
    /// URL path of the object at the upstream.
    pub path: &'a str,
    pub slicing: super::Slicing,
    /// The object's size if known; else the first answer teaches it through `sizing`.
    pub size: Option<u64>,
    pub retries: u32,
    /// The most the whole fetch may take, every resumption included.
    pub deadline: Duration,
    pub now_secs: u64,
}

/// Fetch one slice into `fill`, resuming by range after failures. Returns the slice's bytes.
/// The caller marks the fill done or failed (it first persists the bytes).
pub async fn fetch(spec: FetchSpec<'_>, fill: &SliceFill, sizing: &impl Sizing) -> Result<Bytes> {
    let deadline = spec.deadline;
    let index = fill.index;
    match tokio::time::timeout(deadline, resume(spec, fill, sizing)).await {
        Ok(done) => done,
        Err(_) => Err(Error::upstream(
            Kind::Unavailable,
            format!(
                "slice {index} not complete within upstream.fill_timeout ({}s)",
                deadline.as_secs()
            ),
        )
        .retryable(false)),
    }
}

/// [`fetch`] without its deadline.
async fn resume(spec: FetchSpec<'_>, fill: &SliceFill, sizing: &impl Sizing) -> Result<Bytes> {
    let start = spec.slicing.start(fill.index);
    let mut size = spec.size;
    let mut failures = 0u32;
    // Every attempt must deliver something or count as a failure; progress forgives failures
    // but a hard cap keeps a trickling, resetting upstream from holding a slice forever.
    let mut attempts = 0u32;
    let max_attempts = spec.retries.saturating_add(1).saturating_mul(8);
    loop {
        let slice_end = spec.slicing.end(fill.index, size);
        let pos = start + fill.received();
        if pos >= slice_end {
            return Ok(fill.concat());
        }
        attempts += 1;
        let before = fill.received();
        let outcome = attempt(&spec, fill, pos, slice_end - 1, &mut size, sizing).await;
        let progressed = fill.received() > before;
        match outcome {
            Ok(()) => {
                failures = 0;
                continue;
            }
            // Before the first answer the client is still waiting for its headers: an
            // upstream that does not answer at all gets no second wait of `timeout`.
            Err(e) if size.is_none() && e.kind() == Kind::Unavailable => {
                return Err(e.context(format!("slice {}", fill.index)));
            }
            Err(e) if e.is_retryable() && attempts < max_attempts => {
                if progressed {
                    failures = 0;
                } else {
                    failures += 1;
                }
                if failures > spec.retries {
                    return Err(
                        e.context(format!("slice {} after {failures} attempts", fill.index))
                    );
                }
                tracing::debug!(slice = fill.index, error = %e, "resuming slice");
                let backoff = Duration::from_millis(50u64 << failures.min(6));
                tokio::time::sleep(backoff).await;
            }
            Err(e) => return Err(e.context(format!("slice {}", fill.index))),
        }
    }
}

/// What an upstream answer to a range request says, once its status and headers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 206: the bytes `first..=last` of an object of `total` bytes follow.
    Partial { first: u64, last: u64, total: u64 },
    /// 200: the upstream ignores ranges; the whole object of `total` bytes follows.
    Whole { total: u64 },
    /// 416: nothing at the range asked for; the object has `total` bytes.
    Unsatisfiable { total: u64 },
}

/// Read the head of an answer to a request for `first..=last`: what follows, and what it
/// teaches of the object. Statuses other than 206/200/416 are errors of their kind. Sans-IO.
pub fn read_head(
    status: StatusCode,
    headers: &HeaderMap,
    first: u64,
    last: u64,
    now_secs: u64,
) -> Result<(Answer, Learned)> {
    let last_modified = headers
        .get(LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(super::disk::unix_secs)
        .unwrap_or(now_secs);
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let answer = match status {
        StatusCode::PARTIAL_CONTENT => {
            let (got_first, got_last, total) = header(CONTENT_RANGE)
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    Error::upstream(Kind::BadUpstream, "206 without a usable Content-Range")
                        .retryable(false)
                })?;
            if got_first != first || got_last > last || got_last >= total {
                return Err(Error::upstream(
                    Kind::BadUpstream,
                    format!("asked bytes {first}-{last}, got {got_first}-{got_last}/{total}"),
                )
                .retryable(false));
            }
            Answer::Partial {
                first: got_first,
                last: got_last,
                total,
            }
        }
        StatusCode::OK => Answer::Whole {
            total: header(CONTENT_LENGTH)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::upstream(Kind::BadUpstream, "200 without Content-Length")
                        .retryable(false)
                })?,
        },
        StatusCode::RANGE_NOT_SATISFIABLE => Answer::Unsatisfiable {
            total: header(CONTENT_RANGE)
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::upstream(Kind::BadUpstream, "416 without Content-Range").retryable(false)
                })?,
        },
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            return Err(Error::upstream(Kind::NotFound, "not found upstream").retryable(false));
        }
        StatusCode::GATEWAY_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            return Err(Error::upstream(
                Kind::Unavailable,
                format!("upstream answered {status}"),
            ));
        }
        status if status.is_server_error() => {
            return Err(Error::upstream(
                Kind::BadUpstream,
                format!("upstream answered {status}"),
            ));
        }
        status => {
            return Err(
                Error::upstream(Kind::BadUpstream, format!("upstream answered {status}"))
                    .retryable(false),
            );
        }
    };
    let size = match answer {
        Answer::Partial { total, .. }
        | Answer::Whole { total }
        | Answer::Unsatisfiable { total } => total,
    };
    Ok((
        answer,
        Learned {
            size,
            last_modified,
        },
    ))
}

/// One request for `[first, last]`; appends what arrives to `fill`.
async fn attempt(
    spec: &FetchSpec<'_>,
    fill: &SliceFill,
    first: u64,
    last: u64,
    size: &mut Option<u64>,
    sizing: &impl Sizing,
) -> Result<()> {
    let mut response = spec.upstream.get(spec.path, Some((first, last))).await?;
    let (answer, learned) = read_head(
        response.status,
        &response.headers,
        first,
        last,
        spec.now_secs,
    )?;
    let known = sizing.learn(learned).await?;
    *size = Some(known);
    match answer {
        Answer::Partial {
            first: got_first,
            last: got_last,
            ..
        } => {
            stream_into(
                spec.upstream,
                &mut response,
                fill,
                0,
                got_last - got_first + 1,
            )
            .await
        }
        Answer::Whole { total } => {
            if first >= total {
                return Ok(());
            }
            tracing::warn!(
                path = spec.path,
                "upstream ignores Range; reading past {first} bytes"
            );
            stream_into(
                spec.upstream,
                &mut response,
                fill,
                first,
                last.min(total - 1) - first + 1,
            )
            .await
        }
        Answer::Unsatisfiable { .. } if first < known => Err(Error::upstream(
            Kind::BadUpstream,
            format!("416 for bytes {first}-{last} of a {known}-byte object"),
        )
        .retryable(false)),
        Answer::Unsatisfiable { .. } => Ok(()),
    }
}

/// Learn an object's size and Last-Modified without fetching a slice (for a HEAD, or a suffix
/// range whose slices depend on the size): ask for its first byte. Transient failures are
/// tried again like a slice's; an upstream that does not answer at all is not.
pub async fn probe(
    upstream: &Upstream,
    path: &str,
    retries: u32,
    now_secs: u64,
    sizing: &impl Sizing,
) -> Result<()> {
    let mut failures = 0u32;
    loop {
        let outcome = async {
            let response = upstream.get(path, Some((0, 0))).await?;
            let (_, learned) = read_head(response.status, &response.headers, 0, 0, now_secs)?;
            // The body (one byte, or a whole object from an upstream that ignores ranges) is
            // dropped unread.
            sizing.learn(learned).await.map(|_| ())
        }
        .await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && e.kind() != Kind::Unavailable && failures < retries => {
                failures += 1;
                tracing::debug!(path, error = %e, "probing the size again");
                tokio::time::sleep(Duration::from_millis(50u64 << failures.min(6))).await;
            }
            Err(e) => return Err(e.context("learning the size")),
        }
    }
}

/// Skip `skip` bytes of the body, then append exactly `want` bytes to `fill`. A body that ends
/// early or breaks is a retryable failure (the caller resumes from what arrived); a body that
/// runs longer than promised is cut off, since what it promised is all we asked for.
async fn stream_into(
    upstream: &Upstream,
    response: &mut Fetched,
    fill: &SliceFill,
    mut skip: u64,
    want: u64,
) -> Result<()> {
    let mut got = 0u64;
    while got < want {
        let Some(mut chunk) = upstream.next_chunk(response).await? else {
            return Err(Error::upstream(
                Kind::BadUpstream,
                format!("body ended after {got} of {want} bytes"),
            ));
        };
        if skip > 0 {
            let n = skip.min(chunk.len() as u64);
            skip -= n;
            chunk = chunk.slice(n as usize..);
        }
        let room = (want - got) as usize;
        if chunk.len() > room {
            chunk.truncate(room);
        }
        if !chunk.is_empty() {
            got += chunk.len() as u64;
            fill.push(chunk);
        }
    }
    Ok(())
}

/// `bytes first-last/total` (total must be known).
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, total) = (
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (first <= last).then_some((first, last, total))
}

impl SliceFill {
    pub fn finish(&self) {
        self.set_status(Status::Done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("bytes 0-9/*"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
    }

    #[tokio::test]
    async fn readers_follow_the_fill() {
        let fill = Arc::new(SliceFill::new(0));
        let reader = {
            let fill = fill.clone();
            tokio::spawn(async move {
                let mut pos = 3;
                let mut got = Vec::new();
                while pos < 10 {
                    let pieces = fill.read(pos, 10).await.unwrap();
                    if pieces.is_empty() {
                        break;
                    }
                    for p in pieces {
                        pos += p.len() as u64;
                        got.extend_from_slice(&p);
                    }
                }
                got
            })
        };
        for part in [&b"0123"[..], b"45", b"6789"] {
            tokio::task::yield_now().await;
            fill.push(Bytes::copy_from_slice(part));
        }
        fill.finish();
        assert_eq!(reader.await.unwrap(), b"3456789");
        assert_eq!(&fill.concat()[..], b"0123456789");
    }

    #[tokio::test]
    async fn failure_reaches_waiting_readers() {
        let fill = Arc::new(SliceFill::new(0));
        let reader = {
            let fill = fill.clone();
            tokio::spawn(async move { fill.read(0, 10).await })
        };
        tokio::task::yield_now().await;
        fill.fail(&Error::upstream(Kind::Unavailable, "gone"));
        assert!(reader.await.unwrap().is_err());
    }
}
