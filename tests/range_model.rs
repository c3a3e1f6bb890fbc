//! Model-based check of every `/Content` response.
//!
//! Thousands of random GET and HEAD requests, with `Range` and `If-Range` headers drawn from a
//! grammar of valid and invalid forms, go to real nodes on 127.0.0.1: a root serving imported
//! objects (sizes chosen at the edges: 0, 1, 2, around 4 KiB, a whole default slice, across
//! slices) and a branch filling cold objects from an in-memory origin in 64 KiB slices. Every
//! answer (status, headers, body, multipart parts) is compared with a reference model written
//! here from RFC 9110 (§13.1.5 If-Range, §13.2.2 precedence, §14.1–§14.6 ranges, Content-Range,
//! 206 and multipart/byteranges) and from the server's documented policy (README, "The content
//! path"):
//!
//! - a syntactically invalid Range, another unit than `bytes` (case-insensitive), or a Range
//!   header over 16 KiB is ignored (200, whole object); OWS is allowed around commas and empty
//!   list elements are skipped, but no whitespace inside a spec nor right after `=` (unless it
//!   is the OWS before a comma, as in `bytes= ,0-5`: RFC 9110 §5.6.1.2); a spec with
//!   `last < first` makes the whole header invalid; numbers have no bound (`1*DIGIT`);
//! - satisfiable specs are clamped, unsatisfiable ones dropped; none left → 416 with
//!   `Content-Range: bytes */LEN`;
//! - the ranges are sorted and overlapping or adjacent ones merged: one left → 206 single part,
//!   more than 16 → 200 whole, else 206 `multipart/byteranges`;
//! - a zero-length object ignores Range;
//! - If-Range: strong comparison with the ETag (`"<sha1 hex>"`; weak never matches) or exact
//!   equality with Last-Modified, else the Range is ignored;
//! - HEAD gets the status and headers of the same GET, without a body.
//!
//! `RANGE_MODEL_SEED=<n>` replays a run; the seed is in every failure message.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http::HeaderMap;
use http_body_util::{BodyExt, Empty};
use wsus_edge::simulate::SplitMix;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// A Range header longer than this is ignored (README).
const MAX_RANGE_HEADER: usize = 16 * 1024;
/// More parts than this after coalescing → the whole object (`cache.max_ranges`).
const MAX_PARTS: usize = 16;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;
const ROOT_REQUESTS: usize = 3_000;
const BRANCH_REQUESTS: usize = 500;
/// Most failures printed in full.
const SHOWN_FAILURES: usize = 8;

// ---------------------------------------------------------------------------------------------
// The reference model (RFC 9110 + the documented policy).
// ---------------------------------------------------------------------------------------------

/// A non-negative decimal of any length (RFC 9110 `1*DIGIT`), kept exact so that comparisons of
/// numbers beyond u64 are right.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Num(String);

impl Num {
    fn parse(digits: &str) -> Option<Num> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let trimmed = digits.trim_start_matches('0');
        Some(Num(
            if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
        ))
    }

    /// The value, or u64::MAX when it does not fit (every object is shorter than that).
    fn saturating(&self) -> u64 {
        self.0.parse().unwrap_or(u64::MAX)
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Num) -> std::cmp::Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Num) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Debug)]
enum Spec {
    /// `first-pos "-" [ last-pos ]`
    Int { first: Num, last: Option<Num> },
    /// `"-" suffix-length`
    Suffix(Num),
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `ranges-specifier` with the `bytes` unit (RFC 9110 §14.1.1, §14.1.2, §5.6.1 list rules), or
/// None when the header is syntactically invalid for it (and so ignored).
fn parse_range_header(value: &str) -> Option<Vec<Spec>> {
    let (unit, set) = value.split_once('=')?;
    // range-unit is a token, compared case-insensitively; only "bytes" is known.
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // 1#range-spec as recipients must accept it (§5.6.1.2):
    // `[ range-spec ] *( OWS "," OWS [ range-spec ] )` with at least one range-spec. So OWS is
    // allowed around commas and empty elements are skipped; whitespace right after "=" is
    // allowed only as the OWS before a comma (after an empty first element), never before a
    // spec (the policy's "not right after `=`").
    for (i, raw) in set.split(',').enumerate() {
        let element = raw.trim_matches(is_ows);
        if element.is_empty() {
            continue;
        }
        if i == 0 && raw.starts_with(is_ows) {
            return None;
        }
        let spec = if let Some(length) = element.strip_prefix('-') {
            Spec::Suffix(Num::parse(length)?)
        } else {
            let (first, last) = element.split_once('-')?;
            let first = Num::parse(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(Num::parse(last)?)
            };
            // "An int-range is invalid if the last-pos value is present and less than the
            // first-pos."
            if let Some(last) = &last
                && *last < first
            {
                return None;
            }
            Spec::Int { first, last }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// RFC 9110 §13.1.5: an entity-tag matches by strong comparison (a weak tag never does), a date
/// must equal Last-Modified exactly, anything else is false.
fn if_range_holds(value: &str, etag: &str, last_modified: &str) -> bool {
    if value.starts_with('"') || value.starts_with("W/") {
        !value.starts_with("W/") && value == etag
    } else {
        value == last_modified
    }
}

/// What the server must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// 200, the whole object.
    Full,
    /// 206 with one inclusive range.
    Single(u64, u64),
    /// 206 multipart/byteranges, these inclusive ranges in this order.
    Multi(Vec<(u64, u64)>),
    /// 416.
    Unsatisfiable,
}

impl Expect {
    fn status(&self) -> u16 {
        match self {
            Expect::Full => 200,
            Expect::Single(..) | Expect::Multi(_) => 206,
            Expect::Unsatisfiable => 416,
        }
    }
}

fn model(
    len: u64,
    range: Option<&str>,
    if_range: Option<&str>,
    etag: &str,
    last_modified: &str,
) -> Expect {
    let Some(range) = range else {
        // If-Range without Range is ignored.
        return Expect::Full;
    };
    if range.len() > MAX_RANGE_HEADER {
        return Expect::Full;
    }
    let Some(specs) = parse_range_header(range) else {
        return Expect::Full;
    };
    if len == 0 {
        return Expect::Full;
    }
    // §13.2.2 step 5: a false If-Range means the Range is ignored (even an unsatisfiable one).
    if let Some(v) = if_range
        && !if_range_holds(v, etag, last_modified)
    {
        return Expect::Full;
    }
    // §14.1.2: satisfiable specs, clamped.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for spec in specs {
        match spec {
            Spec::Int { first, last } => {
                let first = first.saturating();
                if first >= len {
                    continue;
                }
                let last = last.map_or(len - 1, |l| l.saturating().min(len - 1));
                ranges.push((first, last));
            }
            Spec::Suffix(n) => {
                let n = n.saturating();
                if n == 0 {
                    continue;
                }
                ranges.push((len.saturating_sub(n), len - 1));
            }
        }
    }
    if ranges.is_empty() {
        return Expect::Unsatisfiable;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    match merged.len() {
        1 => Expect::Single(merged[0].0, merged[0].1),
        n if n > MAX_PARTS => Expect::Full,
        _ => Expect::Multi(merged),
    }
}

#[test]
fn the_model_itself() {
    let e = "\"ab\"";
    let lm = "Wed, 02 Sep 2026 08:30:53 GMT";
    let m = |range: &str, len| model(len, Some(range), None, e, lm);
    assert_eq!(m("bytes=0-1,,5-9", 10), Expect::Multi(vec![(0, 1), (5, 9)]));
    assert_eq!(m("BYTES=0-4 ,\t5-9", 10), Expect::Single(0, 9));
    assert_eq!(m("bytes= 0-4", 10), Expect::Full);
    assert_eq!(m("bytes=\t0-4,5-6", 10), Expect::Full);
    assert_eq!(m("bytes= ,0-4", 10), Expect::Single(0, 4));
    assert_eq!(m("bytes=\t, 0-4", 10), Expect::Single(0, 4));
    assert_eq!(m("bytes=0 -4", 10), Expect::Full);
    assert_eq!(m("bytes=5-4", 10), Expect::Full);
    assert_eq!(m("bytes=5-4,0-1", 10), Expect::Full);
    assert_eq!(m("bytes=10-", 10), Expect::Unsatisfiable);
    assert_eq!(m("bytes=-0", 10), Expect::Unsatisfiable);
    assert_eq!(
        m("bytes=-99999999999999999999999", 10),
        Expect::Single(0, 9)
    );
    assert_eq!(
        m("bytes=99999999999999999999999-99999999999999999999998", 10),
        Expect::Full
    );
    assert_eq!(m("bytes=18446744073709551616-", 10), Expect::Unsatisfiable);
    assert_eq!(m("bytes=0005-00009", 10), Expect::Single(5, 9));
    assert_eq!(m("items=0-5", 10), Expect::Full);
    assert_eq!(m("bytes0-5", 10), Expect::Full);
    assert_eq!(m("bytes=,", 10), Expect::Full);
    assert_eq!(m("bytes=,0-1,", 10), Expect::Single(0, 1));
    assert_eq!(m("bytes=-3,0-1", 10), Expect::Multi(vec![(0, 1), (7, 9)]));
    assert_eq!(m("bytes=0-0", 0), Expect::Full);
    let many: Vec<String> = (0..17).map(|i| format!("{}-{}", i * 3, i * 3)).collect();
    assert_eq!(m(&format!("bytes={}", many.join(",")), 100), Expect::Full);
    assert_eq!(
        m(&format!("bytes={}", many[..16].join(",")), 100).status(),
        206
    );
    let ir = |v: &str| model(10, Some("bytes=0-1"), Some(v), e, lm);
    assert_eq!(ir(e), Expect::Single(0, 1));
    assert_eq!(ir("W/\"ab\""), Expect::Full);
    assert_eq!(ir(lm), Expect::Single(0, 1));
    assert_eq!(ir("garbage"), Expect::Full);
    assert_eq!(model(10, Some("bytes=10-"), Some("x"), e, lm), Expect::Full);
}

// ---------------------------------------------------------------------------------------------
// Checking an answer against the model.
// ---------------------------------------------------------------------------------------------

/// One object served by a node, with what the model needs to know about it.
struct Object {
    /// For messages: which node and how big.
    label: String,
    path: String,
    bytes: Bytes,
    etag: String,
    last_modified: String,
    /// The Content-Type of a plain 200 (and so of a single part and of every multipart part).
    content_type: Option<String>,
}

#[derive(Clone, Debug)]
struct Req {
    index: usize,
    object: usize,
    head: bool,
    range: Option<String>,
    if_range: Option<String>,
}

impl Req {
    fn method(&self) -> &'static str {
        if self.head { "HEAD" } else { "GET" }
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        let mut h = Vec::new();
        if let Some(r) = &self.range {
            h.push(("range", r.as_str()));
        }
        if let Some(v) = &self.if_range {
            h.push(("if-range", v.as_str()));
        }
        h
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 240 {
        return format!("{s:?}");
    }
    let mut head = 120;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - 120;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{:?} … {:?} ({} bytes)", &s[..head], &s[tail..], s.len())
}

fn describe_expect(expect: &Expect, obj: &Object) -> String {
    let len = obj.bytes.len();
    match expect {
        Expect::Full => format!("200, Content-Length: {len}, no Content-Range"),
        Expect::Single(a, b) => format!(
            "206, Content-Range: bytes {a}-{b}/{len}, Content-Length: {}",
            b - a + 1
        ),
        Expect::Multi(ranges) => {
            let list: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
            format!(
                "206 multipart/byteranges, parts [{}] of {len}",
                list.join(", ")
            )
        }
        Expect::Unsatisfiable => format!("416, Content-Range: bytes */{len}, Content-Length: 0"),
    }
}

fn describe_headers(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (k, v) in headers {
        let _ = write!(
            out,
            "{k}: {}; ",
            shorten(&String::from_utf8_lossy(v.as_bytes()))
        );
    }
    out
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("<not ASCII>"))
}

fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    if got == want {
        return None;
    }
    Some(
        got.iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len())),
    )
}

fn check_body(got: &[u8], want: &[u8], what: &str) -> Result<(), String> {
    match first_difference(got, want) {
        None => Ok(()),
        Some(at) => Err(format!(
            "{what}: {} bytes received, {} expected, first difference at body offset {at}",
            got.len(),
            want.len()
        )),
    }
}

/// `multipart/byteranges; boundary=X` → X (RFC 9110 §14.6, RFC 2046 §5.1.1).
fn boundary_of(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/byteranges") {
        return Err(format!(
            "Content-Type {content_type:?} is not multipart/byteranges"
        ));
    }
    for p in params {
        let Some((k, v)) = p.trim().split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
            if v.is_empty() || v.len() > 70 || !v.chars().all(bchar) || v.ends_with(' ') {
                return Err(format!("boundary {v:?} breaks RFC 2046"));
            }
            return Ok(v.to_owned());
        }
    }
    Err(format!("Content-Type {content_type:?} has no boundary"))
}

struct Part {
    content_range: String,
    content_type: Option<String>,
    data: std::ops::Range<usize>,
}

/// Split a multipart/byteranges body: `--B CRLF headers CRLF CRLF data CRLF --B ... --B--`.
/// The data length comes from each part's Content-Range, so payload bytes can never be taken
/// for a delimiter.
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let dash = format!("--{boundary}");
    let dash = dash.as_bytes();
    let mut pos = if body.starts_with(dash) {
        dash.len()
    } else if body.starts_with(b"\r\n") && body[2..].starts_with(dash) {
        2 + dash.len()
    } else {
        return Err(format!(
            "body does not start with the boundary: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        ));
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if let Some(after) = rest.strip_prefix(b"--") {
            if !after.is_empty() && after != b"\r\n" {
                return Err(format!(
                    "{} unexpected bytes after the closing delimiter (part {})",
                    after.len(),
                    parts.len()
                ));
            }
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(format!(
                "no CRLF after the delimiter before part {}",
                parts.len()
            ));
        }
        pos += 2;
        let Some(end) = body[pos..].windows(4).position(|w| w == b"\r\n\r\n") else {
            return Err(format!("part {} has no end of headers", parts.len()));
        };
        let head = std::str::from_utf8(&body[pos..pos + end])
            .map_err(|_| format!("part {} headers are not UTF-8", parts.len()))?;
        pos += end + 4;
        let mut content_range = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                return Err(format!(
                    "part {} has a malformed header line {line:?}",
                    parts.len()
                ));
            };
            if k.eq_ignore_ascii_case("content-range") {
                content_range = Some(v.trim().to_owned());
            } else if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_owned());
            }
        }
        let Some(content_range) = content_range else {
            return Err(format!("part {} has no Content-Range", parts.len()));
        };
        let (a, b) = content_range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(r, _)| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .filter(|(a, b)| a <= b)
            .ok_or_else(|| {
                format!(
                    "part {} has a bad Content-Range {content_range:?}",
                    parts.len()
                )
            })?;
        let n = (b - a + 1) as usize;
        if body.len() < pos + n {
            return Err(format!(
                "part {} ({content_range}) is cut short: {} of {n} bytes",
                parts.len(),
                body.len() - pos
            ));
        }
        parts.push(Part {
            content_range,
            content_type,
            data: pos..pos + n,
        });
        pos += n;
        if !body[pos..].starts_with(b"\r\n") || !body[pos + 2..].starts_with(dash) {
            return Err(format!(
                "part {} is not followed by CRLF and the delimiter",
                parts.len() - 1
            ));
        }
        pos += 2 + dash.len();
        if parts.len() > 1000 {
            return Err("more than 1000 parts".into());
        }
    }
}

/// The response headers that must be there, exact, on a 200 or 206 (and, if present, on a 416).
fn check_validators(obj: &Object, headers: &HeaderMap, required: bool) -> Result<(), String> {
    let want = [
        ("accept-ranges", "bytes"),
        ("etag", obj.etag.as_str()),
        ("last-modified", obj.last_modified.as_str()),
    ];
    for (name, value) in want {
        match header(headers, name) {
            Some(v) if v == value => {}
            None if !required => {}
            other => return Err(format!("{name}: {other:?}, expected {value:?}")),
        }
    }
    Ok(())
}

fn check_content_type(obj: &Object, got: Option<&str>, what: &str) -> Result<(), String> {
    if got == obj.content_type.as_deref() {
        Ok(())
    } else {
        Err(format!(
            "{what} Content-Type {got:?}, expected {:?} (that of a plain 200)",
            obj.content_type
        ))
    }
}

/// Check one answer against the model; for a HEAD the body checks are skipped (the caller
/// compares it with the same GET).
fn check(obj: &Object, expect: &Expect, got: &Got, head: bool) -> Result<(), String> {
    let len = obj.bytes.len() as u64;
    if got.status.as_u16() != expect.status() {
        return Err(format!(
            "status {}, expected {}",
            got.status.as_u16(),
            expect.status()
        ));
    }
    if got.broken {
        return Err(format!("the body broke off after {} bytes", got.body.len()));
    }
    let h = &got.headers;
    let cl: u64 = header(h, "content-length")
        .ok_or("no Content-Length")?
        .parse()
        .map_err(|_| format!("bad Content-Length {:?}", header(h, "content-length")))?;
    if head {
        if !got.body.is_empty() {
            return Err(format!("HEAD answered with {} body bytes", got.body.len()));
        }
    } else if cl != got.body.len() as u64 {
        return Err(format!(
            "Content-Length {cl} but {} body bytes",
            got.body.len()
        ));
    }
    let content_range = header(h, "content-range");
    match expect {
        Expect::Full => {
            check_validators(obj, h, true)?;
            if cl != len {
                return Err(format!("Content-Length {cl}, expected {len}"));
            }
            if content_range.is_some() {
                return Err(format!("Content-Range {content_range:?} on a 200"));
            }
            check_content_type(obj, header(h, "content-type"), "200")?;
            if !head {
                check_body(&got.body, &obj.bytes, "body")?;
            }
        }
        Expect::Single(a, b) => {
            check_validators(obj, h, true)?;
            if cl != b - a + 1 {
                return Err(format!("Content-Length {cl}, expected {}", b - a + 1));
            }
            let want = format!("bytes {a}-{b}/{len}");
            if content_range != Some(want.as_str()) {
                return Err(format!(
                    "Content-Range {content_range:?}, expected {want:?}"
                ));
            }
            check_content_type(obj, header(h, "content-type"), "206")?;
            if !head {
                check_body(&got.body, &obj.bytes[*a as usize..=*b as usize], "body")?;
            }
        }
        Expect::Multi(ranges) => {
            check_validators(obj, h, true)?;
            if content_range.is_some() {
                return Err(format!(
                    "Content-Range {content_range:?} on a multipart 206"
                ));
            }
            let boundary = boundary_of(header(h, "content-type").ok_or("no Content-Type")?)?;
            if !head {
                let parts = parse_multipart(&got.body, &boundary)?;
                let seen: Vec<&str> = parts.iter().map(|p| p.content_range.as_str()).collect();
                let want: Vec<String> = ranges
                    .iter()
                    .map(|(a, b)| format!("bytes {a}-{b}/{len}"))
                    .collect();
                if seen != want {
                    return Err(format!("parts {seen:?}, expected {want:?}"));
                }
                for (i, (part, (a, b))) in parts.iter().zip(ranges).enumerate() {
                    check_content_type(obj, part.content_type.as_deref(), &format!("part {i}"))?;
                    check_body(
                        &got.body[part.data.clone()],
                        &obj.bytes[*a as usize..=*b as usize],
                        &format!("part {i} ({a}-{b}, at body offset {})", part.data.start),
                    )?;
                }
            }
        }
        Expect::Unsatisfiable => {
            check_validators(obj, h, false)?;
            if cl != 0 || (!head && !got.body.is_empty()) {
                return Err(format!(
                    "a 416 with Content-Length {cl} and {} body bytes",
                    got.body.len()
                ));
            }
            let want = format!("bytes */{len}");
            if content_range != Some(want.as_str()) {
                return Err(format!(
                    "Content-Range {content_range:?}, expected {want:?}"
                ));
            }
        }
    }
    Ok(())
}

/// A HEAD must carry what the same GET carries. For multipart answers the boundary may differ
/// between two responses; the HEAD's Content-Length must then be the GET's body length with the
/// HEAD's boundary in place of the GET's.
fn compare_head_with_get(head: &Got, get: &Got, expect: &Expect) -> Result<(), String> {
    if head.status != get.status {
        return Err(format!(
            "HEAD status {}, GET status {}",
            head.status, get.status
        ));
    }
    for name in ["content-range", "accept-ranges", "etag", "last-modified"] {
        let (a, b) = (header(&head.headers, name), header(&get.headers, name));
        if a != b {
            return Err(format!("HEAD {name}: {a:?}, GET {name}: {b:?}"));
        }
    }
    let head_cl: i64 = header(&head.headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let mut want_cl = get.body.len() as i64;
    if let Expect::Multi(ranges) = expect {
        let hb = boundary_of(header(&head.headers, "content-type").unwrap_or(""))?;
        let gb = boundary_of(header(&get.headers, "content-type").unwrap_or(""))?;
        // One delimiter per part plus the closing one.
        want_cl += (ranges.len() as i64 + 1) * (hb.len() as i64 - gb.len() as i64);
    } else {
        let (a, b) = (
            header(&head.headers, "content-type"),
            header(&get.headers, "content-type"),
        );
        if a != b {
            return Err(format!("HEAD content-type: {a:?}, GET content-type: {b:?}"));
        }
    }
    if head_cl != want_cl {
        return Err(format!(
            "HEAD Content-Length {head_cl}, but the GET sends {want_cl} bytes"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The request grammar.
// ---------------------------------------------------------------------------------------------

struct Rng(SplitMix);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.0.next_u64() % n }
    }

    fn below128(&mut self, n: u128) -> u128 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.0.next_u64()) << 64) | u128::from(self.0.next_u64())) % n
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len() as u64) as usize]
    }
}

const HUGE: &str = "123456789012345678901234567890123456789012345678901234567890";

/// A number as the client writes it: sometimes with leading zeros.
fn render(rng: &mut Rng, n: u128) -> String {
    if rng.chance(8) {
        format!("{}{n}", "0".repeat(1 + rng.below(4) as usize))
    } else {
        n.to_string()
    }
}

/// A position, around the edges of the object and of its slices, or beyond, or beyond u64.
fn position(rng: &mut Rng, len: u64) -> u128 {
    let len128 = u128::from(len);
    match rng.below(40) {
        0 | 1 => 0,
        2 | 3 => 1,
        4 | 5 => len128.saturating_sub(1),
        6 | 7 => len128,
        8 => len128 + 1,
        9 | 10 => len128.saturating_sub(2),
        11..=24 => u128::from(rng.below(len + 1)),
        25..=29 => {
            let slice = if rng.chance(50) { 4 * MIB } else { 64 * KIB };
            let k = rng.below(len / slice + 2);
            (u128::from(k * slice) + u128::from(rng.below(3))).saturating_sub(1)
        }
        30..=34 => u128::from(rng.below(100)),
        35 => u128::from(u64::MAX),
        36 => u128::from(u64::MAX) + 1,
        37 => 10u128.pow(30) - 1,
        _ => len128 + u128::from(rng.below(1000)),
    }
}

fn suffix_length(rng: &mut Rng, len: u64) -> u128 {
    let len128 = u128::from(len);
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => len128,
        3 => len128.saturating_sub(1),
        4 => len128 + 1,
        5..=7 => u128::from(rng.below(len + 1)),
        8 => u128::from(rng.below(100)),
        9 => u128::from(u64::MAX) + 1,
        10 => 10u128.pow(30) - 1,
        _ => u128::from(rng.below(200_000)),
    }
}

const GARBAGE_SPECS: &[&str] = &[
    "-",
    "a-b",
    "1-2-3",
    "--5",
    "5--6",
    "0x1-0x2",
    "+1-2",
    "1 -2",
    "1- 2",
    "1-2 3",
    "1.5-2",
    "abc",
    "-1-",
    "1~2",
    "1_0-2",
    "\u{661}-\u{662}",
    "\u{e9}",
    "1-\u{e9}",
    "0-1;q=1",
    "\"0-1\"",
    "0 - 1",
    "*",
    "0-9a",
    "1e3-2e3",
    "-+5",
    "- 5",
    "0-1/10",
    "=1-2",
    "bytes=1-2",
    "\t0-1\tx",
];

/// A range-spec: valid most of the time, else any of many invalid forms.
fn spec(rng: &mut Rng, len: u64) -> String {
    if rng.chance(70) {
        valid_spec(rng, len)
    } else {
        any_spec(rng, len)
    }
}

fn valid_spec(rng: &mut Rng, len: u64) -> String {
    match rng.below(10) {
        0..=4 => int_range(rng, len),
        5 | 6 => {
            let a = position(rng, len);
            format!("{}-", render(rng, a))
        }
        _ => {
            let n = suffix_length(rng, len);
            format!("-{}", render(rng, n))
        }
    }
}

/// `first-last` with last >= first (possibly beyond the end, or beyond u64).
fn int_range(rng: &mut Rng, len: u64) -> String {
    let a = position(rng, len);
    let delta = match rng.below(12) {
        0 | 1 => 0,
        2 | 3 => 1,
        4..=6 => u128::from(rng.below(100)),
        7 | 8 => u128::from(rng.below(len + 1)),
        9 | 10 => u128::from(len),
        _ => u128::from(u64::MAX),
    };
    let b = a.saturating_add(delta);
    format!("{}-{}", render(rng, a), render(rng, b))
}

fn any_spec(rng: &mut Rng, len: u64) -> String {
    match rng.below(100) {
        0..=29 => int_range(rng, len),
        // last < first: the whole header is invalid.
        30..=41 => {
            let a = position(rng, len).max(1);
            let b = rng.below128(a);
            format!("{}-{}", render(rng, a), render(rng, b))
        }
        42 => format!("{HUGE}-{}", &HUGE[..HUGE.len() - 1]),
        43 => format!("0-{HUGE}"),
        44 => format!("{HUGE}-"),
        45 => format!("-{HUGE}"),
        46..=52 => {
            let a = position(rng, len);
            format!("{}-", render(rng, a))
        }
        53..=62 => {
            let n = suffix_length(rng, len);
            format!("-{}", render(rng, n))
        }
        63..=72 => {
            let (a, b) = (position(rng, len), position(rng, len));
            format!("{}-{}", render(rng, a), render(rng, b))
        }
        _ => rng.pick(GARBAGE_SPECS).to_owned(),
    }
}

/// 14 to 20 disjoint ranges (sometimes two made adjacent, or one repeated), in random order:
/// around the 16-part limit.
fn many_parts(rng: &mut Rng, len: u64) -> Vec<String> {
    let k = 14 + rng.below(7);
    let step = len / k;
    if step < 3 {
        return (0..k).map(|_| spec(rng, len)).collect();
    }
    let mut ranges: Vec<(u64, u64)> = (0..k)
        .map(|i| {
            let a = i * step + rng.below(step / 3);
            (a, a + rng.below(step / 3))
        })
        .collect();
    for i in 0..ranges.len() - 1 {
        if rng.chance(5) {
            ranges[i].1 = ranges[i + 1].0 - 1;
        }
    }
    let mut specs = Vec::new();
    for (i, &(a, b)) in ranges.iter().enumerate() {
        specs.push(if i == ranges.len() - 1 && rng.chance(20) {
            format!("-{}", len - a)
        } else {
            format!("{a}-{b}")
        });
        if rng.chance(5) {
            specs.push(format!("{a}-{b}"));
        }
    }
    rng.0.shuffle(&mut specs);
    specs
}

/// Several overlapping, adjacent or nested ranges around one point.
fn cluster(rng: &mut Rng, len: u64) -> Vec<String> {
    let centre = rng.below(len + 1);
    let n = 2 + rng.below(5);
    (0..n)
        .map(|_| {
            let a = (centre + rng.below(40)).saturating_sub(20);
            match rng.below(6) {
                0 => format!("{a}-"),
                1 => format!("-{}", len.saturating_sub(a)),
                _ => format!("{a}-{}", a + rng.below(30)),
            }
        })
        .collect()
}

const SEPARATORS: &[&str] = &[
    ", ", " ,", " , ", ",\t", "\t,\t", ",,", ", ,", ",,,", " ,, ",
];

fn range_header(rng: &mut Rng, len: u64) -> String {
    let unit = match rng.below(100) {
        0..=79 => "bytes",
        80..=83 => "BYTES",
        84..=86 => "Bytes",
        87 => "bYtEs",
        88 | 89 => "items",
        90 => "byte",
        91 => "bytes ",
        92 => "",
        93 => "bytes\t",
        94 => "x-bytes",
        95 => "bytesbytes",
        _ => "bytes",
    };
    let eq = match rng.below(100) {
        0 => "",
        1 => " ",
        2 => ":",
        3 => "==",
        4 => "= ",
        5 => "=\t",
        6 => "= ,",
        7 => "=\t,",
        _ => "=",
    };
    // Several specs: valid ones, and now and then one of any form.
    let several = |rng: &mut Rng, least: u64, spread: u64| -> Vec<String> {
        let n = least + rng.below(spread);
        let mut specs: Vec<String> = (0..n).map(|_| valid_spec(rng, len)).collect();
        if rng.chance(30) {
            let at = rng.below(n) as usize;
            specs[at] = any_spec(rng, len);
        }
        specs
    };
    let specs = match rng.below(100) {
        0..=44 => vec![spec(rng, len)],
        45..=69 => several(rng, 2, 3),
        70..=79 => several(rng, 4, 8),
        80..=89 => many_parts(rng, len),
        90..=96 => cluster(rng, len),
        _ => Vec::new(),
    };
    let mut value = format!("{unit}{eq}");
    if rng.chance(3) {
        value.push(',');
    }
    for (i, s) in specs.iter().enumerate() {
        if i > 0 {
            value.push_str(if rng.chance(70) {
                ","
            } else {
                rng.pick(SEPARATORS)
            });
        }
        value.push_str(s);
    }
    if rng.chance(3) {
        value.push(',');
    }
    if rng.chance(1) {
        // Around the 16 KiB limit: pad with empty list elements or leading zeros.
        let target = match rng.below(6) {
            0 => MAX_RANGE_HEADER - 1,
            1 => MAX_RANGE_HEADER,
            2 => MAX_RANGE_HEADER + 1,
            3 => MAX_RANGE_HEADER + 2,
            4 => MAX_RANGE_HEADER + 1 + rng.below(4000) as usize,
            _ => MAX_RANGE_HEADER - rng.below(4000) as usize,
        };
        if value.len() < target {
            let pad = target - value.len();
            let at = value.find('=').map(|i| i + 1);
            match at {
                Some(at)
                    if rng.chance(50) && value[at..].starts_with(|c: char| c.is_ascii_digit()) =>
                {
                    value.insert_str(at, &"0".repeat(pad))
                }
                _ => value.push_str(&",".repeat(pad)),
            }
        }
    }
    // A field value has no trailing whitespace on the wire (RFC 9110 §5.5).
    value.trim_end_matches(is_ows).to_owned()
}

fn shifted_date(date: &str, seconds: i64) -> String {
    let t = httpdate::parse_http_date(date).expect("Last-Modified is an HTTP-date");
    let t = if seconds >= 0 {
        t + Duration::from_secs(seconds as u64)
    } else {
        t - Duration::from_secs((-seconds) as u64)
    };
    httpdate::fmt_http_date(t)
}

fn if_range_header(rng: &mut Rng, obj: &Object) -> String {
    let etag = &obj.etag;
    let lm = &obj.last_modified;
    match rng.below(16) {
        0..=2 => etag.clone(),
        3 => "\"0000000000000000000000000000000000000000\"".into(),
        4 => format!("W/{etag}"),
        5 => etag.to_uppercase(),
        6 => etag.trim_matches('"').to_owned(),
        7..=9 => lm.clone(),
        10 => shifted_date(lm, 1),
        11 => shifted_date(lm, -86_400),
        12 => format!("{etag}, \"x\""),
        13 => lm.to_lowercase(),
        14 => rng
            .pick(&["yesterday", "", "*", "\"\"", "W/", "0"])
            .to_owned(),
        _ => format!("\"{}\"", &etag[2..etag.len() - 1]),
    }
}

fn requests(rng: &mut Rng, objects: &[Object], count: usize) -> Vec<Req> {
    (0..count)
        .map(|index| {
            let object = rng.below(objects.len() as u64) as usize;
            let obj = &objects[object];
            let head = rng.chance(20);
            let range = (!rng.chance(8)).then(|| range_header(rng, obj.bytes.len() as u64));
            let if_range_percent = if range.is_some() { 30 } else { 10 };
            let if_range = rng
                .chance(if_range_percent)
                .then(|| if_range_header(rng, obj));
            Req {
                index,
                object,
                head,
                range,
                if_range,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running requests.
// ---------------------------------------------------------------------------------------------

/// One request, the body collected; transport errors are returned, not panicked on.
async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Got, String> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Empty::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let exchange = async {
        let response = client()
            .request(request)
            .await
            .map_err(|e| format!("request failed: {e:?}"))?;
        let (parts, mut body) = response.into_parts();
        let mut collected = Vec::new();
        let mut broken = false;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        collected.extend_from_slice(&d);
                    }
                }
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        Ok(Got {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(collected),
            broken,
        })
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no complete answer within 30 s".to_owned())?
}

/// Run one request (and, for a HEAD, the same GET) and check it; Ok(outcome) for the tally.
async fn execute(seed: u64, base: &str, obj: &Object, req: &Req) -> Result<String, String> {
    let url = format!("{base}{}", obj.path);
    let expect = model(
        obj.bytes.len() as u64,
        req.range.as_deref(),
        req.if_range.as_deref(),
        &obj.etag,
        &obj.last_modified,
    );
    let context = |got: Option<&Got>, problem: String| {
        let mut m = String::new();
        let _ = writeln!(
            m,
            "seed {seed} (RANGE_MODEL_SEED={seed}), request #{}: {} {url}",
            req.index,
            req.method()
        );
        let _ = writeln!(
            m,
            "  Range: {}\n  If-Range: {}",
            req.range.as_deref().map_or("(none)".into(), shorten),
            req.if_range.as_deref().map_or("(none)".into(), shorten)
        );
        let _ = writeln!(
            m,
            "  object: {} ({} bytes, ETag {})",
            obj.label,
            obj.bytes.len(),
            obj.etag
        );
        let _ = writeln!(m, "  expected: {}", describe_expect(&expect, obj));
        if let Some(got) = got {
            let _ = writeln!(
                m,
                "  actual: {} ({} body bytes) {}",
                got.status.as_u16(),
                got.body.len(),
                describe_headers(&got.headers)
            );
        }
        let _ = write!(m, "  problem: {problem}");
        m
    };
    let headers = req.headers();
    let got = send(req.method(), &url, &headers)
        .await
        .map_err(|e| context(None, e))?;
    check(obj, &expect, &got, req.head).map_err(|e| context(Some(&got), e))?;
    if req.head {
        let same = send("GET", &url, &headers)
            .await
            .map_err(|e| context(None, format!("the GET twin: {e}")))?;
        check(obj, &expect, &same, false)
            .map_err(|e| context(Some(&same), format!("the GET twin of this HEAD: {e}")))?;
        compare_head_with_get(&got, &same, &expect).map_err(|e| context(Some(&got), e))?;
    }
    Ok(match &expect {
        Expect::Full if req.range.is_some() => "200 (Range ignored)".into(),
        Expect::Full => "200 (no Range)".into(),
        Expect::Single(..) => "206 single".into(),
        Expect::Multi(r) => format!(
            "206 multipart ({} parts)",
            if r.len() <= 3 { "2-3" } else { "4-16" }
        ),
        Expect::Unsatisfiable => "416".into(),
    })
}

struct Outcome {
    failures: Vec<String>,
    tally: BTreeMap<String, usize>,
}

async fn run_all(seed: u64, base: String, objects: Arc<Vec<Object>>, reqs: Vec<Req>) -> Outcome {
    let reqs = Arc::new(reqs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (reqs, next, objects, base) =
            (reqs.clone(), next.clone(), objects.clone(), base.clone());
        workers.spawn(async move {
            let mut failures = Vec::new();
            let mut tally: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = reqs.get(i) else { break };
                match execute(seed, &base, &objects[req.object], req).await {
                    Ok(outcome) => *tally.entry(outcome).or_default() += 1,
                    Err(failure) => failures.push((req.index, failure)),
                }
            }
            (failures, tally)
        });
    }
    let mut failures = Vec::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = workers.join_next().await {
        let (f, t) = done.expect("a worker panicked");
        failures.extend(f);
        for (k, v) in t {
            *tally.entry(k).or_default() += v;
        }
    }
    failures.sort_by_key(|(i, _)| *i);
    Outcome {
        failures: failures.into_iter().map(|(_, f)| f).collect(),
        tally,
    }
}

fn report(
    name: &str,
    seed: u64,
    total: usize,
    outcome: &Outcome,
    elapsed: Duration,
) -> Option<String> {
    println!(
        "{name}: seed {seed}, {total} requests in {elapsed:.1?}: {:?}",
        outcome.tally
    );
    if outcome.failures.is_empty() {
        return None;
    }
    let mut m = format!(
        "{name}: {} of {total} requests disagree with the model (seed {seed}); the first {}:\n\n",
        outcome.failures.len(),
        outcome.failures.len().min(SHOWN_FAILURES)
    );
    for f in outcome.failures.iter().take(SHOWN_FAILURES) {
        m.push_str(f);
        m.push_str("\n\n");
    }
    Some(m)
}

fn seed() -> u64 {
    match std::env::var("RANGE_MODEL_SEED") {
        Ok(s) => s.trim().parse().expect("RANGE_MODEL_SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(sha1(bytes).0))
}

/// Learn what the server chooses (Last-Modified, Content-Type) from a plain request, checking
/// what is fixed (status, ETag, Accept-Ranges, length, body for a GET).
async fn learn(base: &str, label: String, path: String, bytes: Bytes, method: &str) -> Object {
    let got = send(method, &format!("{base}{path}"), &[]).await.unwrap();
    assert_eq!(
        got.status,
        200,
        "plain {method} of {label}: {}",
        describe_headers(&got.headers)
    );
    if method == "GET" {
        assert!(got.body == bytes, "plain GET of {label}: body differs");
    }
    let etag = etag_of(&bytes);
    assert_eq!(
        header(&got.headers, "etag"),
        Some(etag.as_str()),
        "ETag of {label}"
    );
    assert_eq!(
        header(&got.headers, "accept-ranges"),
        Some("bytes"),
        "Accept-Ranges of {label}"
    );
    assert_eq!(
        header(&got.headers, "content-length"),
        Some(bytes.len().to_string().as_str()),
        "Content-Length of {label}"
    );
    let last_modified = header(&got.headers, "last-modified")
        .unwrap_or_else(|| panic!("{label} has no Last-Modified"))
        .to_owned();
    httpdate::parse_http_date(&last_modified).expect("Last-Modified is an HTTP-date");
    Object {
        label,
        path,
        bytes,
        etag,
        last_modified,
        content_type: header(&got.headers, "content-type").map(str::to_owned),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

const ROOT_SIZES: &[u64] = &[
    1,
    2,
    17,
    4095,
    4096,
    4097,
    65536,
    1_000_003,
    4 * MIB,
    4 * MIB + 1,
    9 * MIB + 7,
];
/// Sizes at the edges of the branch's 64 KiB slices; the branch holds each twice and then some
/// of other sizes, so that every object gets only a dozen requests and many of them are cold.
const BRANCH_SIZES: &[u64] = &[
    1,
    100,
    65535,
    65536,
    65537,
    3 * 65536 + 5,
    200_003,
    MIB + 3,
    2 * MIB + 65537,
];
const BRANCH_OBJECTS: usize = 40;

/// A root holding `sizes` (and, if the store takes it, a zero-length object).
async fn root_with(
    dir: &std::path::Path,
    sizes: &[u64],
    seed_base: u64,
) -> (wsus_edge::node::Running, Vec<Bytes>) {
    let data = dir.join("data");
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    let mut all = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let bytes = payload(size as usize, seed_base + i as u64);
        std::fs::write(source.join(format!("object-{size}.cab")), &bytes).unwrap();
        all.push(bytes);
    }
    wsus_edge::content::import_dir(&data, &source).expect("import");
    let empty_source = dir.join("empty");
    std::fs::create_dir_all(&empty_source).unwrap();
    std::fs::write(empty_source.join("empty.cab"), b"").unwrap();
    let empty_imported = wsus_edge::content::import_dir(&data, &empty_source).is_ok();
    let node = start(&node_config(&data, None, "", "")).await;
    if empty_imported {
        let got = send("GET", &url(&node, &content_path(b"", "cab")), &[])
            .await
            .unwrap();
        if got.status == 200 {
            all.push(Bytes::new());
        } else {
            println!(
                "the zero-length object was imported but is answered {}",
                got.status
            );
        }
    } else {
        println!("the store refused a zero-length object");
    }
    (node, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_content_response_matches_the_rfc_9110_model() {
    logs();
    let seed = seed();
    println!("range model seed {seed} (replay with RANGE_MODEL_SEED={seed})");
    let mut rng = Rng(SplitMix(seed));

    // The root: imported objects, served from disk and memory.
    let root_dir = tempfile::tempdir().unwrap();
    let (root, root_bytes) = root_with(root_dir.path(), ROOT_SIZES, 1000).await;
    let root_base = format!("http://{}", root.listening().http);
    let mut root_objects = Vec::new();
    for bytes in root_bytes {
        let label = format!("root object of {} bytes", bytes.len());
        let path = content_path(&bytes, "cab");
        root_objects.push(learn(&root_base, label, path, bytes, "GET").await);
    }
    let sizes: Vec<usize> = root_objects.iter().map(|o| o.bytes.len()).collect();
    println!("root objects: {sizes:?} bytes");
    let root_objects = Arc::new(root_objects);

    // The branch: cold fills from the origin in 64 KiB slices. A plain HEAD tells the object's
    // Last-Modified without filling it.
    let origin = Origin::start().await;
    let branch_dir = tempfile::tempdir().unwrap();
    let node = branch(
        branch_dir.path(),
        &origin.url(),
        "[cache]\nslice_bytes = \"64KiB\"\n",
    )
    .await;
    let branch_base = format!("http://{}", node.listening().http);
    let mut branch_objects = Vec::new();
    for i in 0..BRANCH_OBJECTS {
        let size = BRANCH_SIZES
            .get(i % (BRANCH_SIZES.len() + 2))
            .copied()
            .unwrap_or(1 + (i as u64 * 7919 * 131) % (3 * MIB / 2));
        let bytes = payload(size as usize, 2000 + i as u64);
        let path = origin.add(bytes.clone(), "cab");
        let label = format!("branch object of {size} bytes");
        branch_objects.push(learn(&branch_base, label, path, bytes, "HEAD").await);
    }
    let branch_objects = Arc::new(branch_objects);

    let root_reqs = requests(&mut rng, &root_objects, ROOT_REQUESTS);
    let branch_reqs = requests(&mut rng, &branch_objects, BRANCH_REQUESTS);

    let fetched_before = origin.log().len();
    let started = Instant::now();
    let (root_outcome, branch_outcome) = tokio::join!(
        run_all(seed, root_base, root_objects.clone(), root_reqs),
        run_all(seed, branch_base, branch_objects.clone(), branch_reqs),
    );
    let elapsed = started.elapsed();
    println!(
        "branch: {} upstream range requests during the run (64 KiB slices, cold at first)",
        origin.log().len() - fetched_before
    );
    let mut failures = String::new();
    if let Some(m) = report("root", seed, ROOT_REQUESTS, &root_outcome, elapsed) {
        failures.push_str(&m);
    }
    if let Some(m) = report("branch", seed, BRANCH_REQUESTS, &branch_outcome, elapsed) {
        failures.push_str(&m);
    }
    root.shutdown(Duration::from_secs(1)).await;
    node.shutdown(Duration::from_secs(1)).await;
    assert!(failures.is_empty(), "{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_storms_are_answered_quickly() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, all) = root_with(dir.path(), &[MIB], 77).await;
    let bytes = all[0].clone();
    let base = format!("http://{}", node.listening().http);
    let obj = learn(
        &base,
        "root object of 1 MiB".into(),
        content_path(&bytes, "cab"),
        bytes.clone(),
        "GET",
    )
    .await;
    let url = format!("{base}{}", obj.path);

    // 1,000 copies of one range: coalesced into one part.
    let storm = format!("bytes={}", vec!["0-99"; 1000].join(","));
    let started = Instant::now();
    let got = send("GET", &url, &[("range", &storm)]).await.unwrap();
    let took = started.elapsed();
    check(&obj, &Expect::Single(0, 99), &got, false)
        .unwrap_or_else(|e| panic!("1,000 × 0-99: {e}"));
    assert!(took < Duration::from_secs(2), "1,000 × 0-99 took {took:?}");

    // A 40 KB Range header: over the 16 KiB limit, ignored (a 100 KB one would make the head
    // larger than listen.max_header_bytes: 431).
    let mut big = String::from("bytes=0-0");
    let mut i = 2u64;
    while big.len() < 40_000 {
        let _ = write!(big, ",{i}-{i}");
        i += 2;
    }
    let started = Instant::now();
    let got = send("GET", &url, &[("range", &big)]).await.unwrap();
    let took = started.elapsed();
    check(&obj, &Expect::Full, &got, false).unwrap_or_else(|e| panic!("40 KB Range header: {e}"));
    assert!(
        took < Duration::from_secs(2),
        "the 40 KB Range header took {took:?}"
    );

    // Still serving.
    let got = send("GET", &url, &[("range", "bytes=10-19,30-39")])
        .await
        .unwrap();
    check(&obj, &Expect::Multi(vec![(10, 19), (30, 39)]), &got, false)
        .unwrap_or_else(|e| panic!("after: {e}"));
    let got = send("GET", &url, &[]).await.unwrap();
    check(&obj, &Expect::Full, &got, false).unwrap_or_else(|e| panic!("after: {e}"));
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_range_header_limit_is_16_kib() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, all) = root_with(dir.path(), &[100_000], 78).await;
    let bytes = all[0].clone();
    let base = format!("http://{}", node.listening().http);
    let obj = learn(
        &base,
        "root object of 100000 bytes".into(),
        content_path(&bytes, "cab"),
        bytes.clone(),
        "GET",
    )
    .await;
    let url = format!("{base}{}", obj.path);
    for len in [MAX_RANGE_HEADER - 1, MAX_RANGE_HEADER, MAX_RANGE_HEADER + 1] {
        // Padded with empty list elements, and with leading zeros.
        let commas = format!("bytes=5-9{}", ",".repeat(len - "bytes=5-9".len()));
        let zeros = format!("bytes={}5-9", "0".repeat(len - "bytes=5-9".len()));
        for value in [commas, zeros] {
            assert_eq!(value.len(), len);
            let expect = model(
                bytes.len() as u64,
                Some(&value),
                None,
                &obj.etag,
                &obj.last_modified,
            );
            let got = send("GET", &url, &[("range", &value)]).await.unwrap();
            check(&obj, &expect, &got, false).unwrap_or_else(|e| {
                panic!("a Range header of {len} bytes ({}): {e}", shorten(&value))
            });
        }
    }
    node.shutdown(Duration::from_secs(1)).await;
}

/// Server bug found by the model (reproduction). RFC 9110 §14.1.1 gives positions and suffix
/// lengths as `1*DIGIT`, without a bound, and §14.1.2 says a last-pos "greater than or equal to
/// the current length" means the remainder, a first-pos at or past the length is
/// unsatisfiable, and a suffix longer than the representation means all of it. These headers are
/// therefore valid, and the README ignores only *syntactically invalid* ones (a regression test:
/// the server once ignored every Range holding a number beyond u64::MAX).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_numbers_beyond_u64_are_not_a_syntax_error() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, all) = root_with(dir.path(), &[1000], 79).await;
    let bytes = all[0].clone();
    let base = format!("http://{}", node.listening().http);
    let obj = learn(
        &base,
        "root object of 1000 bytes".into(),
        content_path(&bytes, "cab"),
        bytes,
        "GET",
    )
    .await;
    let url = format!("{base}{}", obj.path);
    let cases = [
        ("bytes=0-18446744073709551616", Expect::Single(0, 999)),
        (
            "bytes=5-99999999999999999999999999999",
            Expect::Single(5, 999),
        ),
        ("bytes=-18446744073709551616", Expect::Single(0, 999)),
        ("bytes=18446744073709551616-", Expect::Unsatisfiable),
        (
            "bytes=18446744073709551615-18446744073709551616",
            Expect::Unsatisfiable,
        ),
        ("bytes=0-1,18446744073709551616-", Expect::Single(0, 1)),
        (
            "bytes=0-1,5-18446744073709551616",
            Expect::Multi(vec![(0, 1), (5, 999)]),
        ),
    ];
    let mut failures = String::new();
    for (range, want) in cases {
        let expect = model(1000, Some(range), None, &obj.etag, &obj.last_modified);
        assert_eq!(expect, want, "the model on {range}");
        let got = send("GET", &url, &[("range", range)]).await.unwrap();
        if let Err(e) = check(&obj, &expect, &got, false) {
            let _ = writeln!(
                failures,
                "GET Range: {range}: expected {}; {e}",
                describe_expect(&expect, &obj)
            );
        }
    }
    node.shutdown(Duration::from_secs(1)).await;
    assert!(failures.is_empty(), "{failures}");
}
