//! The HTTP answer to a `GET`/`HEAD` of `/Content/...`: status and headers from the range plan,
//! and a body that walks the planned ranges slice by slice, from memory, disk or a fill in
//! flight. The body is polled by the connection itself (no task, no channel per request).
//!
//! Integrity at the last byte: a client that receives a whole object must never end up with a
//! complete-looking file of wrong bytes. A response that covers the whole of a not yet verified
//! object withholds its final piece until the object's own check (the commit's hash) has
//! passed, and breaks the connection if it fails. An object streamed through without a disk
//! copy is never checked as a whole, so such a response hashes what it sends instead. A range
//! that ends at the object's end, and with `cache.hold_ranges` any response's last byte, waits
//! for the verdict when all the object's slices are there or on their way.
//!
//! Bytes of large committed objects stay in the page cache: on a plain HTTP/1 connection they
//! leave by `sendfile` (a file piece's stand-in, `http::sendfile`), elsewhere they are read from
//! the file a bounded piece at a time.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use sha1::{Digest as _, Sha1};

use super::path::{ContentPath, PathError};
use super::range::{self, ByteRange, Conditions, Limits, Plan, Validators};
use super::{Handle, SliceData, Store, Tier, blocking, disk};

/// Longest Range header we parse; longer ones are ignored (RFC 9110 allows ignoring Range).
const MAX_RANGE_HEADER: usize = 16 * 1024;
use crate::error::{Error, Kind};
use crate::http::sendfile::{STAND_IN_BYTES, Sink};
use crate::http::{Body, BoxError, empty_body, error_status, text};
use crate::metrics::TierLabels;

/// Everything the access log line says of a content request.
struct Access {
    requester: crate::access::Requester,
    method: Method,
    path: String,
    range: Option<String>,
    status: StatusCode,
    started: Instant,
    /// Every tier a byte of the body came from.
    tiers: Tiers,
    bytes: u64,
}

/// A set of [`Tier`]s.
#[derive(Debug, Clone, Copy, Default)]
struct Tiers {
    memory: bool,
    disk: bool,
    upstream: bool,
}

impl Tiers {
    fn add(&mut self, tier: Tier) {
        match tier {
            Tier::Memory => self.memory = true,
            Tier::Disk => self.disk = true,
            Tier::Upstream => self.upstream = true,
        }
    }
}

impl Access {
    /// `hit-memory` / `hit-disk`: every byte from the cache (a HEAD of a known object too);
    /// `miss`: the object was unknown (`fetched_meta`: its size had to be asked for), or no byte
    /// came from the cache; `partial`: some bytes from the cache, some from upstream.
    fn cache_status(&self, fetched_meta: bool) -> &'static str {
        let t = self.tiers;
        match (t.memory || t.disk, t.upstream) {
            _ if fetched_meta => "miss",
            (true, true) => "partial",
            (false, true) => "miss",
            _ if t.disk => "hit-disk",
            _ => "hit-memory",
        }
    }

    fn log(&self, store: &Store, cache: &'static str, complete: bool) {
        let metrics = store.metrics();
        if self.status.is_success() {
            match cache {
                "hit-memory" => metrics
                    .cache_hits
                    .get_or_create(&TierLabels { tier: "memory" })
                    .inc(),
                "hit-disk" => metrics
                    .cache_hits
                    .get_or_create(&TierLabels { tier: "disk" })
                    .inc(),
                _ => metrics.cache_misses.inc(),
            };
        }
        tracing::info!(
            target: "wsus_edge::access",
            request_id = %self.requester.id,
            client = %self.requester.client(),
            user_agent = self.requester.agent(),
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            range = self.range.as_deref().unwrap_or("-"),
            cache = %cache,
            bytes = self.bytes,
            complete,
            ms = self.started.elapsed().as_millis() as u64,
        );
    }
}

/// Answer one content request. The caller has routed it here because the path is under
/// `/Content` and counts the request by status.
pub async fn respond(
    store: &Store,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    requester: crate::access::Requester,
    files: Option<&Sink>,
) -> Response<Body> {
    let mut access = Access {
        requester,
        method: method.clone(),
        path: path.to_owned(),
        range: headers
            .get(RANGE)
            .map(|v| String::from_utf8_lossy(&v.as_bytes()[..v.len().min(64)]).into_owned()),
        status: StatusCode::OK,
        started: Instant::now(),
        tiers: Tiers::default(),
        bytes: 0,
    };
    let finish = |access: &mut Access, response: Response<Body>, fetched: bool| {
        access.status = response.status();
        let cache = access.cache_status(fetched);
        access.log(store, cache, true);
        response
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return finish(&mut access, response, false);
    }
    let content = match ContentPath::parse(path) {
        Ok(c) => c,
        Err(PathError::Malformed) => {
            return finish(
                &mut access,
                text(StatusCode::BAD_REQUEST, "bad content path"),
                false,
            );
        }
        Err(PathError::NotContent) => {
            return finish(&mut access, text(StatusCode::NOT_FOUND, "not found"), false);
        }
    };
    let range_header = headers.get(RANGE).map(|v| v.as_bytes());
    // A HEAD needs no byte of the object: its size is learned with a probe, no slice fetched.
    let first_wanted = match method {
        &Method::HEAD => None,
        _ => range::first_wanted_byte(range_header.filter(|r| r.len() <= MAX_RANGE_HEADER)),
    };
    let handle = match store.lookup(&content, first_wanted).await {
        Ok(h) => h,
        Err(e) => {
            let status = error_status(&e);
            if status.is_server_error() {
                tracing::warn!(path, error = %e, "content lookup failed");
            }
            let message = match status {
                StatusCode::NOT_FOUND => "not found",
                StatusCode::GATEWAY_TIMEOUT => "upstream unavailable",
                StatusCode::BAD_GATEWAY => "upstream error",
                _ => "internal error",
            };
            return finish(&mut access, text(status, message), true);
        }
    };

    let size = handle.size();
    let etag = format!("\"{}\"", handle.digest().to_hex());
    let last_modified = handle.last_modified();
    let joined: Vec<Option<Vec<u8>>> = [
        IF_RANGE,
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .map(|name| joined_header(headers, name))
    .collect();
    let conditions = Conditions {
        range: range_header,
        if_range: joined[0].as_deref(),
        if_match: joined[1].as_deref(),
        if_none_match: joined[2].as_deref(),
        if_modified_since: joined[3].as_deref(),
        if_unmodified_since: joined[4].as_deref(),
    };
    let plan = range::evaluate(
        &conditions,
        size,
        &Validators {
            etag: &etag,
            last_modified,
        },
        &Limits {
            max_parts: store.settings().max_ranges,
            max_header_bytes: MAX_RANGE_HEADER,
        },
    );

    let mut response = Response::new(empty_body());
    let h = response.headers_mut();
    let modified = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(last_modified),
    );
    // Both values are ASCII by construction (hex digits and an HTTP date).
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&modified) {
        h.insert(LAST_MODIFIED, v);
    }
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let content_type = HeaderValue::from_static(content.content_type());

    let (status, parts, trailer, length) = match plan {
        Plan::NotModified => (StatusCode::NOT_MODIFIED, Vec::new(), None, None),
        Plan::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, Vec::new(), None, Some(0)),
        Plan::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&range::unsatisfied_range(size)) {
                h.insert(CONTENT_RANGE, v);
            }
            (StatusCode::RANGE_NOT_SATISFIABLE, Vec::new(), None, Some(0))
        }
        Plan::Full => {
            h.insert(CONTENT_TYPE, content_type);
            let parts = if size == 0 {
                Vec::new()
            } else {
                vec![(
                    None,
                    ByteRange {
                        start: 0,
                        end: size - 1,
                    },
                )]
            };
            (StatusCode::OK, parts, None, Some(size))
        }
        Plan::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            h.insert(CONTENT_TYPE, content_type);
            if let Ok(v) = HeaderValue::from_str(&range::content_range(r, size)) {
                h.insert(CONTENT_RANGE, v);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                vec![(None, r)],
                None,
                Some(r.len()),
            )
        }
        Plan::Partial(ranges) => {
            let layout = range::multipart(&ranges, size, content.content_type(), &boundary());
            if let Ok(v) = HeaderValue::from_str(&layout.content_type) {
                h.insert(CONTENT_TYPE, v);
            }
            let parts = layout
                .parts
                .into_iter()
                .map(|(head, r)| (Some(Bytes::from(head)), r))
                .collect();
            (
                StatusCode::PARTIAL_CONTENT,
                parts,
                Some(Bytes::from(layout.trailer)),
                Some(layout.body_len),
            )
        }
    };
    *response.status_mut() = status;
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    access.status = status;
    if method == Method::HEAD || (parts.is_empty() && trailer.is_none()) {
        let fetched = handle.fetched_meta();
        return finish(&mut access, response, fetched);
    }

    let whole = parts.len() == 1
        && parts[0].1
            == ByteRange {
                start: 0,
                end: size - 1,
            };
    let hasher = (whole && handle.needs_own_hash()).then(Sha1::new);
    let producer = Producer {
        store: store.clone(),
        handle,
        parts: parts.into(),
        trailer,
        cursor: None,
        ready: VecDeque::new(),
        hasher,
        whole,
        length: length.unwrap_or(0),
        fetched_ahead: BTreeSet::new(),
        access,
        failed: false,
        logged: false,
        files: files.cloned(),
        file: None,
    };
    let stream = futures_util::stream::unfold(producer, |mut p| async move {
        let item = p.next().await?;
        Some((item.map(Frame::data), p))
    });
    let body = http_body_util::StreamBody::new(stream).boxed_unsync();
    response.map(|_| body)
}

fn joined_header(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = first.as_bytes().to_vec();
    for v in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v.as_bytes());
    }
    Some(out)
}

/// A multipart boundary that cannot be predicted from outside (so no payload can be crafted
/// to contain it).
fn boundary() -> String {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 12];
    if ring::rand::SystemRandom::new().fill(&mut raw).is_err() {
        // The OS generator does not fail on Linux; the clock is a last resort.
        let nanos = disk_time_nanos();
        raw[..8].copy_from_slice(&nanos.to_le_bytes());
    }
    format!("wsus-edge-{}", hex::encode(raw))
}

fn disk_time_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The position within one planned range.
struct Cursor {
    /// Next byte to send (absolute offset in the object).
    pos: u64,
    /// One past the last byte of the range.
    end: u64,
}

enum Piece {
    /// Multipart framing.
    Frame(Bytes),
    /// Object bytes; `last` when it holds the object's final byte (or the response's, when
    /// ranges are held).
    Data { bytes: Bytes, last: bool },
    /// Object bytes to be sent from the committed file (at most [`STAND_IN_BYTES`]); `last` as
    /// for `Data`.
    File { offset: u64, len: usize, last: bool },
}

struct Producer {
    store: Store,
    handle: Handle,
    parts: VecDeque<(Option<Bytes>, ByteRange)>,
    trailer: Option<Bytes>,
    cursor: Option<Cursor>,
    ready: VecDeque<Piece>,
    /// Running SHA-1 of a whole-object response of an object nothing else will check.
    hasher: Option<Sha1>,
    /// The response carries every byte of the object.
    whole: bool,
    /// The body's Content-Length: all of it sent is a complete response.
    length: u64,
    /// Slices whose bytes were coming from upstream when this response looked ahead to them.
    fetched_ahead: BTreeSet<u64>,
    access: Access,
    failed: bool,
    /// The access is counted and logged: at the last byte, or when the body is dropped short.
    logged: bool,
    /// The connection sends files in place of stand-ins (plain HTTP/1).
    files: Option<Sink>,
    /// The committed file, once a slice is to be had from it.
    file: Option<Arc<std::fs::File>>,
}

/// The most bytes of a [`SliceData::Checked`] slice read into memory at once, where they cannot
/// be sent by `sendfile`: what a response holds is bounded by this, not by the slice size.
const FILE_READ_BYTES: u64 = 512 << 10;

impl Producer {
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        if self.failed {
            return None;
        }
        match self.advance().await {
            Ok(Some(bytes)) => {
                self.access.bytes += bytes.len() as u64;
                self.store.metrics().served_bytes.inc_by(bytes.len() as u64);
                // Counted before the last bytes go out, so a client that has read the whole body
                // finds it in the metrics; the body itself may be dropped only later.
                if self.access.bytes == self.length {
                    self.log(true);
                }
                Some(Ok(bytes))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                tracing::warn!(path = %self.access.path, error = %e,
                    "aborting response: the connection is closed before the end");
                Some(Err(Box::new(e)))
            }
        }
    }

    /// Count and log the access once: `complete` when every byte of the body was produced.
    fn log(&mut self, complete: bool) {
        if !std::mem::replace(&mut self.logged, true) {
            let cache = self.access.cache_status(self.handle.fetched_meta());
            self.access.log(&self.store, cache, complete);
        }
    }

    async fn advance(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return self.release(piece).await.map(Some);
            }
            if let Some(cursor) = &self.cursor {
                if cursor.pos < cursor.end {
                    self.load().await?;
                    continue;
                }
                self.cursor = None;
            }
            if let Some((head, r)) = self.parts.pop_front() {
                if let Some(head) = head {
                    self.ready.push_back(Piece::Frame(head));
                }
                self.cursor = Some(Cursor {
                    pos: r.start,
                    end: r.end + 1,
                });
                continue;
            }
            return Ok(self.trailer.take());
        }
    }

    /// Queue the next available bytes of the current range.
    async fn load(&mut self) -> Result<(), Error> {
        let Some(cursor) = &mut self.cursor else {
            return Ok(());
        };
        let size = self.handle.size();
        let slicing = self.handle.slicing();
        let index = slicing.index_of(cursor.pos);
        let slice_start = slicing.start(index);
        // On a connection that sends files, a slice the fill already wrote leaves from the
        // page cache, like a committed one.
        let written = match (&self.files, &self.hasher) {
            (Some(_), None) => self.handle.written_slice(index).await?,
            _ => None,
        };
        let (data, tier) = match written {
            Some(found) => found,
            None => self.handle.slice(index).await?,
        };
        // A slice this response's look-ahead sent for may have landed before it is read; its
        // bytes came from upstream all the same.
        let tier = if self.fetched_ahead.remove(&index) {
            Tier::Upstream
        } else {
            tier
        };
        self.access.tiers.add(tier);
        // Look ahead within what this response needs (plus configured read-ahead), so the
        // next slices are on their way while this one streams.
        let settings = self.store.settings();
        let last_needed = slicing.index_of(cursor.end - 1) + u64::from(settings.read_ahead);
        let last_slice = slicing.count(size).saturating_sub(1);
        let ahead = settings
            .per_object
            .saturating_sub(1)
            .max(u64::from(settings.read_ahead) as usize) as u64;
        for next in index + 1..=(index + ahead).min(last_needed).min(last_slice) {
            if self.handle.prefetch(next) {
                self.fetched_ahead.insert(next);
            }
        }
        let within_end = (cursor.end - slice_start).min(slicing.slice_bytes());
        // A piece is `last` when it ends the object, or (when the store holds ranges) the
        // response: a client that pieces an object together from ranges gets no complete wrong
        // file either.
        let hold = self.store.settings().hold_ranges && self.parts.is_empty();
        let range_end = cursor.end;
        let ends = |pos: u64| pos == size || (hold && pos == range_end);
        let pieces = match data {
            SliceData::Checked | SliceData::Written(_) => {
                let file = match (&self.file, data) {
                    (Some(file), _) => file.clone(),
                    (None, SliceData::Written(file)) => self.file.insert(file).clone(),
                    (None, _) => self
                        .file
                        .insert(self.handle.committed_file().await?)
                        .clone(),
                };
                let end = slice_start + within_end;
                if self.files.is_some() && self.hasher.is_none() {
                    while cursor.pos < end {
                        let len = (end - cursor.pos).min(STAND_IN_BYTES as u64);
                        let offset = cursor.pos;
                        cursor.pos += len;
                        self.ready.push_back(Piece::File {
                            offset,
                            len: len as usize,
                            last: ends(cursor.pos),
                        });
                    }
                    return Ok(());
                }
                let (offset, len) = (cursor.pos, (end - cursor.pos).min(FILE_READ_BYTES));
                vec![blocking(move || disk::read_at(&file, offset, len as usize)).await?]
            }
            SliceData::Ready(bytes) => {
                let from = (cursor.pos - slice_start) as usize;
                let to = (within_end as usize).min(bytes.len());
                if from >= to {
                    return Err(Error::internal(Kind::Io, "slice shorter than the object"));
                }
                vec![bytes.slice(from..to)]
            }
            SliceData::Filling(fill) => {
                let pieces = fill.read(cursor.pos - slice_start, within_end).await?;
                if pieces.is_empty() {
                    return Err(Error::upstream(Kind::BadUpstream, "slice ended early"));
                }
                pieces
            }
        };
        for bytes in pieces {
            cursor.pos += bytes.len() as u64;
            self.ready.push_back(Piece::Data {
                bytes,
                last: ends(cursor.pos),
            });
        }
        Ok(())
    }

    /// Checks before a piece leaves: the integrity rules at the object's last byte.
    async fn release(&mut self, piece: Piece) -> Result<Bytes, Error> {
        let (bytes, last) = match piece {
            Piece::Frame(bytes) => return Ok(bytes),
            Piece::Data { bytes, last } => (bytes, last),
            // Queued only with a sink and a file, and only when nothing hashes what is sent.
            Piece::File { offset, len, last } => {
                if last {
                    self.handle.await_verdict(self.whole).await?;
                }
                return match (&self.files, &self.file) {
                    (Some(sink), Some(file)) => {
                        self.store.metrics().sendfile_bytes.inc_by(len as u64);
                        Ok(sink.stand_in(file.clone(), offset, len))
                    }
                    _ => Err(Error::internal(Kind::Io, "a file piece without its file")),
                };
            }
        };
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&bytes);
            if last {
                let got = std::mem::take(hasher).finalize();
                if got.as_slice() != self.handle.digest().0 {
                    self.handle.condemn().await;
                    return Err(Error::upstream(
                        Kind::Digest,
                        "the bytes do not match the name; refusing the final piece",
                    ));
                }
            }
        } else if last {
            self.handle.await_verdict(self.whole).await?;
        }
        Ok(bytes)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // A body dropped before its last byte: the client went away, or the send failed.
        self.log(false);
    }
}
