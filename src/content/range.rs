//! RFC 9110 range and precondition evaluation for /Content responses, sans-IO: header bytes and
//! the object's length and validators in, a plan out. Reads no clock and does no I/O.
//!
//! [`evaluate`] is the whole decision for a GET or HEAD: the preconditions of §13.1 in the order
//! of §13.2.2, then `If-Range` (§13.1.5) and `Range` (§14.2). The caller turns the [`Plan`] into a
//! status line and headers ([`content_range`], [`unsatisfied_range`], [`multipart`]) and streams
//! the data itself.
//!
//! Everything here takes untrusted header bytes. No input makes it panic or overflow (positions
//! go up to `u64::MAX`), and the work is linear in the header length apart from sorting range-specs
//! that arrive out of order (O(n log n) in their number, which the header limit bounds).
//!
//! Two places where this module has to choose because the RFC leaves a gap or needs a clock:
//! - An rfc850-date's two-digit year is read in the window 1970–2069. §5.6.7 wants it relative
//!   to the current year, which a sans-IO module does not know; this window is the one the
//!   `httpdate` crate (used elsewhere in the project) applies, so both agree on every date.
//! - A `Last-Modified` date is treated as a strong validator for `If-Range`: objects under
//!   /Content are addressed by their digest and never change, so a date cannot name two
//!   different representations.

use std::fmt::Write as _;

/// An inclusive byte range of the representation; invariant: start <= end < len.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Never zero for a range that keeps the invariant (a range always holds at least one byte,
    /// which is why there is no `is_empty`). Saturates instead of panicking for one that does not.
    #[allow(
        clippy::len_without_is_empty,
        reason = "an inclusive range always holds at least one byte"
    )]
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }
}

/// One range-spec of a Range header as written (RFC 9110 §14.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-pos "-" last-pos`; [`parse_range`] only produces it with first <= last.
    FromTo(u64, u64),
    /// `first-pos "-"`
    From(u64),
    /// `"-" suffix-length`
    Suffix(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// More parts than this after coalescing: serve the whole representation (200) instead of
    /// multipart.
    pub max_parts: usize,
    /// A Range header longer than this (bytes) is ignored as if absent (200).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_parts: 16,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// The request headers that matter (raw header values; None when absent). When a header occurs
/// several times the caller passes the values joined with ", " (as HTTP list semantics allow).
///
/// RFC 9110 §14.2 defines range handling for GET only; a caller that wants the strict reading
/// for HEAD passes `range: None` there (a HEAD then gets the headers of the 200).
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
}

/// The object's validators. `etag` is the full strong entity-tag including quotes, e.g.
/// `"\"2f88df42...\""`. `last_modified` is seconds since the Unix epoch (HTTP dates have
/// one-second resolution).
///
/// An `etag` that is not a well-formed entity-tag matches no listed tag (only `*`); a weak one
/// matches only under weak comparison.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    pub etag: &'a str,
    pub last_modified: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// 200 with the whole representation.
    Full,
    /// 206 (Partial Content). One range → a single-part response; several →
    /// multipart/byteranges.
    /// Ranges are sorted, disjoint and not adjacent (coalesced), each within [0, len).
    Partial(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// 304 (only for GET/HEAD, which are the only methods this serves).
    NotModified,
    /// 412.
    PreconditionFailed,
}

/// The Range header is not a syntactically valid `bytes` range-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidRange;

/// Parse a Range header value. Err(InvalidRange) when it is not a syntactically valid bytes
/// range-set (other units count as invalid here: the caller ignores the header either way).
///
/// Specs come back in header order, unresolved; `last-pos < first-pos` anywhere invalidates the
/// whole header (§14.1.1), as does a position that does not fit in a `u64`.
pub fn parse_range(value: &[u8]) -> Result<Vec<RangeSpec>, InvalidRange> {
    let mut specs = Vec::new();
    for_each_spec(value, |spec| specs.push(spec))?;
    Ok(specs)
}

/// Resolve parsed specs against a length: None if unsatisfiable, else coalesced sorted ranges.
///
/// A `FromTo(a, b)` with `b < a` (which [`parse_range`] never yields) is dropped as
/// unsatisfiable. With `len == 0` nothing is satisfiable: an empty representation has no byte
/// positions to name.
pub fn resolve(specs: &[RangeSpec], len: u64) -> Option<Vec<ByteRange>> {
    let mut ranges: Vec<ByteRange> = specs.iter().filter_map(|&s| clamp(s, len)).collect();
    if ranges.is_empty() {
        return None;
    }
    // Clients nearly always list ranges in order; checking first keeps that case linear.
    if !ranges.is_sorted_by_key(|r| r.start) {
        ranges.sort_unstable_by_key(|r| r.start);
    }
    // Sorted by start, so each range can only merge into the last one kept. `prev.end + 1`
    // cannot overflow because `end < len <= u64::MAX`; saturating keeps that local.
    ranges.dedup_by(|next, prev| {
        if next.start <= prev.end.saturating_add(1) {
            prev.end = prev.end.max(next.end);
            true
        } else {
            false
        }
    });
    Some(ranges)
}

/// The whole decision for a GET or HEAD of an object of `len` bytes.
///
/// Preconditions first, in the order of §13.2.2; only a request that would otherwise get a 200
/// looks at Range. A zero-length object always gets [`Plan::Full`] when it has a Range: no
/// `Content-Range` can describe a part of it, and even `bytes=-5`, which §14.1.1 calls
/// satisfiable there, selects the whole (empty) representation.
pub fn evaluate(c: &Conditions<'_>, len: u64, v: &Validators<'_>, limits: &Limits) -> Plan {
    let own = own_tag(v.etag);

    if let Some(value) = c.if_match {
        let holds = is_star(value)
            || tags_match(value, |tag| own.is_some_and(|own| strong_eq(tag, own))) == Some(true);
        if !holds {
            return Plan::PreconditionFailed;
        }
    } else if let Some(date) = c.if_unmodified_since.and_then(parse_http_date)
        && i128::from(v.last_modified) > i128::from(date)
    {
        return Plan::PreconditionFailed;
    }

    if let Some(value) = c.if_none_match {
        let matched = is_star(value)
            || tags_match(value, |tag| own.is_some_and(|own| weak_eq(tag, own))) == Some(true);
        if matched {
            return Plan::NotModified;
        }
    } else if let Some(date) = c.if_modified_since.and_then(parse_http_date)
        && i128::from(v.last_modified) <= i128::from(date)
    {
        return Plan::NotModified;
    }

    let Some(range) = c.range else {
        return Plan::Full;
    };
    if len == 0 || range.len() > limits.max_header_bytes {
        return Plan::Full;
    }
    let Ok(specs) = parse_range(range) else {
        return Plan::Full;
    };
    if let Some(value) = c.if_range
        && !if_range_holds(value, own, v.last_modified)
    {
        return Plan::Full;
    }
    match resolve(&specs, len) {
        None => Plan::Unsatisfiable,
        Some(ranges) if ranges.len() > limits.max_parts => Plan::Full,
        Some(ranges) => Plan::Partial(ranges),
    }
}

/// `bytes a-b/len`
pub fn content_range(r: ByteRange, len: u64) -> String {
    format!("bytes {}-{}/{}", r.start, r.end, len)
}

/// `bytes */len`
pub fn unsatisfied_range(len: u64) -> String {
    format!("bytes */{len}")
}

/// Layout of a multipart/byteranges body (RFC 9110 §14.6): everything but the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// The value for the Content-Type header: `multipart/byteranges; boundary=<boundary>`.
    pub content_type: String,
    /// One entry per range, in order: the bytes to send before that range's data
    /// (`"\r\n--<boundary>\r\nContent-Type: <part type>\r\nContent-Range: bytes a-b/len\r\n\r\n"`;
    /// the first part starts with `"--<boundary>"` without the leading CRLF), and the range.
    pub parts: Vec<(Vec<u8>, ByteRange)>,
    /// `"\r\n--<boundary>--\r\n"`
    pub trailer: Vec<u8>,
    /// Exact total body length (sum of part headers + data + trailer), for Content-Length.
    pub body_len: u64,
}

/// The caller owns the inputs' validity: `boundary` must be a token of 1–70 boundary characters
/// (RFC 2046 §5.1.1) that does not occur in the data, and `part_content_type` must hold no CR or
/// LF. Meant for two or more ranges; a single range is sent as a plain 206 (§14.6).
pub fn multipart(
    ranges: &[ByteRange],
    len: u64,
    part_content_type: &str,
    boundary: &str,
) -> Multipart {
    let trailer = format!("\r\n--{boundary}--\r\n").into_bytes();
    let mut body_len = byte_count(trailer.len());
    let mut parts = Vec::with_capacity(ranges.len());
    for (i, &r) in ranges.iter().enumerate() {
        let mut head = String::with_capacity(boundary.len() + part_content_type.len() + 80);
        if i > 0 {
            head.push_str("\r\n");
        }
        // Writing to a String cannot fail.
        let _ = write!(
            head,
            "--{boundary}\r\nContent-Type: {part_content_type}\r\nContent-Range: {}\r\n\r\n",
            content_range(r, len)
        );
        body_len = body_len
            .saturating_add(byte_count(head.len()))
            .saturating_add(r.len());
        parts.push((head.into_bytes(), r));
    }
    Multipart {
        content_type: format!("multipart/byteranges; boundary={boundary}"),
        parts,
        trailer,
        body_len,
    }
}

/// Which byte a GET wants first, before the object's length is known: the start of the first
/// range-spec if the Range header is valid and that spec is FromTo/From; 0 when the whole object
/// is wanted (no Range, or one that is ignored); None for a suffix range, whose position depends
/// on the length. Used to decide which slice to fetch first.
///
/// "First" is header order, not the sorted order of the eventual response. The header length
/// limit of [`Limits`] is not applied here; a caller that enforces one checks it first.
pub fn first_wanted_byte(range: Option<&[u8]>) -> Option<u64> {
    let Some(range) = range else {
        return Some(0);
    };
    let mut first: Option<Option<u64>> = None;
    let valid = for_each_spec(range, |spec| {
        first.get_or_insert(match spec {
            RangeSpec::FromTo(a, _) | RangeSpec::From(a) => Some(a),
            RangeSpec::Suffix(_) => None,
        });
    });
    match (valid, first) {
        (Ok(()), Some(first)) => first,
        _ => Some(0),
    }
}

// ---------------------------------------------------------------------------------------------
// Range header syntax

/// Calls `f` with each range-spec in header order, then reports whether the whole value was a
/// valid `bytes` ranges-specifier; `f` may have seen specs of a value that turns out invalid.
fn for_each_spec(value: &[u8], mut f: impl FnMut(RangeSpec)) -> Result<(), InvalidRange> {
    let value = trim_ows(value);
    let eq = value.iter().position(|&b| b == b'=').ok_or(InvalidRange)?;
    let (unit, set) = value.split_at(eq);
    let set = set.strip_prefix(b"=").ok_or(InvalidRange)?;
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return Err(InvalidRange);
    }
    // `1#range-spec` expands to `[ range-spec ] *( OWS "," OWS [ range-spec ] )`: OWS may only
    // touch a comma, so the first element must start right after "=". Its trailing OWS is
    // either before a comma or was trimmed with the field value.
    let mut any = false;
    for (i, element) in set.split(|&b| b == b',').enumerate() {
        let spec = trim_ows(element);
        if spec.is_empty() {
            continue;
        }
        if i == 0 && spec.len() != element.len() && element.first().is_some_and(|&b| is_ows(b)) {
            return Err(InvalidRange);
        }
        f(parse_spec(spec)?);
        any = true;
    }
    if any { Ok(()) } else { Err(InvalidRange) }
}

fn parse_spec(spec: &[u8]) -> Result<RangeSpec, InvalidRange> {
    let dash = spec.iter().position(|&b| b == b'-').ok_or(InvalidRange)?;
    let (first, last) = spec.split_at(dash);
    let last = last.strip_prefix(b"-").ok_or(InvalidRange)?;
    if first.is_empty() {
        return Ok(RangeSpec::Suffix(parse_pos(last)?));
    }
    let first_pos = parse_pos(first)?;
    if last.is_empty() {
        return Ok(RangeSpec::From(first_pos));
    }
    let last_pos = parse_pos(last)?;
    // Compared as written, not as saturated: 10^30-1 before 10^30 is still a valid spec.
    if cmp_digits(last, first) == std::cmp::Ordering::Less {
        return Err(InvalidRange);
    }
    Ok(RangeSpec::FromTo(first_pos, last_pos))
}

/// `1*DIGIT`; no sign, no whitespace, leading zeros allowed. The grammar puts no bound on the
/// digits, so a value past u64::MAX saturates: no representation is that long, so a saturated
/// first-pos is unsatisfiable, a saturated last-pos means "to the end", and a saturated
/// suffix-length means "all of it" (§14.1.2) — exactly what the true value would give.
fn parse_pos(digits: &[u8]) -> Result<u64, InvalidRange> {
    if digits.is_empty() {
        return Err(InvalidRange);
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(InvalidRange);
        }
        Ok(acc.saturating_mul(10).saturating_add(u64::from(b - b'0')))
    })
}

/// Numeric order of two digit strings of any length.
fn cmp_digits(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let strip = |d: &[u8]| -> usize { d.iter().take_while(|&&c| c == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The part of the representation a spec selects, or None when it selects nothing.
fn clamp(spec: RangeSpec, len: u64) -> Option<ByteRange> {
    let last = len.checked_sub(1)?;
    match spec {
        RangeSpec::FromTo(a, b) if a <= last && a <= b => Some(ByteRange {
            start: a,
            end: b.min(last),
        }),
        RangeSpec::From(a) if a <= last => Some(ByteRange {
            start: a,
            end: last,
        }),
        // n >= 1 and len >= 1, so start <= last.
        RangeSpec::Suffix(n) if n > 0 => Some(ByteRange {
            start: len - n.min(len),
            end: last,
        }),
        _ => None,
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && is_ows(*first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && is_ows(*last)
    {
        s = rest;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Entity-tags (§8.8.3)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    /// The characters between the quotes.
    opaque: &'a [u8],
}

fn strong_eq(a: EntityTag<'_>, b: EntityTag<'_>) -> bool {
    !a.weak && !b.weak && a.opaque == b.opaque
}

fn weak_eq(a: EntityTag<'_>, b: EntityTag<'_>) -> bool {
    a.opaque == b.opaque
}

fn own_tag(etag: &str) -> Option<EntityTag<'_>> {
    match parse_etag(etag.as_bytes().trim_ascii()) {
        Some((tag, [])) => Some(tag),
        _ => None,
    }
}

fn is_star(value: &[u8]) -> bool {
    trim_ows(value) == b"*"
}

/// `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE` at the start of `s`; returns the rest.
fn parse_etag(s: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, s) = match s.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let body = s.strip_prefix(b"\"")?;
    let close = body.iter().position(|&b| b == b'"')?;
    let (opaque, rest) = body.split_at(close);
    let rest = rest.strip_prefix(b"\"")?;
    // etagc = %x21 / %x23-7E / obs-text; the closing quote already excludes %x22.
    if !opaque.iter().all(|&b| b >= 0x21 && b != 0x7F) {
        return None;
    }
    Some((EntityTag { weak, opaque }, rest))
}

/// Whether any tag of a `#entity-tag` list satisfies `pred`; None when the list is malformed
/// (every element is checked even after a match, so a malformed list never matches).
fn tags_match(value: &[u8], mut pred: impl FnMut(EntityTag<'_>) -> bool) -> Option<bool> {
    let mut rest = value;
    let mut matched = false;
    let mut after_tag = false;
    loop {
        while let [first, tail @ ..] = rest
            && is_ows(*first)
        {
            rest = tail;
        }
        match rest {
            [] => return Some(matched),
            [b',', tail @ ..] => {
                rest = tail;
                after_tag = false;
            }
            // Two tags need a comma between them.
            _ if after_tag => return None,
            _ => {
                let (tag, tail) = parse_etag(rest)?;
                matched |= pred(tag);
                rest = tail;
                after_tag = true;
            }
        }
    }
}

/// §13.1.5: an entity-tag must match strongly; a date must equal Last-Modified exactly; anything
/// else (a list, garbage) is a condition that does not hold.
fn if_range_holds(value: &[u8], own: Option<EntityTag<'_>>, last_modified: u64) -> bool {
    let value = trim_ows(value);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        match (parse_etag(value), own) {
            (Some((tag, [])), Some(own)) => strong_eq(tag, own),
            _ => false,
        }
    } else {
        parse_http_date(value).is_some_and(|date| i128::from(date) == i128::from(last_modified))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP-date (§5.6.7)

const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const DAYS_LONG: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Seconds since the Unix epoch (negative before 1970) of an IMF-fixdate, rfc850-date or
/// asctime-date. Case-sensitive, as §5.6.7 says. A date whose day-name disagrees with its
/// calendar date, or that names no real day or time, is not a valid HTTP-date.
fn parse_http_date(value: &[u8]) -> Option<i64> {
    let s = trim_ows(value);
    let fields = imf_fixdate(s)
        .or_else(|| rfc850_date(s))
        .or_else(|| asctime_date(s))?;
    fields.to_unix()
}

struct DateFields {
    weekday: usize,
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl DateFields {
    fn to_unix(&self) -> Option<i64> {
        let leap = self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0);
        let month_days = match self.month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        // §5.6.7 allows second 60 (a leap second); it counts as the next minute's first.
        if !(1..=month_days).contains(&self.day)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        // 1970-01-01 was a Thursday, index 3 in DAYS.
        if usize::try_from((days + 3).rem_euclid(7)).ok()? != self.weekday {
            return None;
        }
        Some(
            days * 86_400
                + i64::from(self.hour) * 3_600
                + i64::from(self.minute) * 60
                + i64::from(self.second),
        )
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
/// Callers pass years 0..=9999 and months 1..=12, far from any overflow.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// A cursor over fixed-layout date text; every step fails on a mismatch.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(lit)?;
        Some(())
    }

    fn digits(&mut self, n: usize) -> Option<u32> {
        let (head, rest) = self.0.split_at_checked(n)?;
        let v = head.iter().try_fold(0u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })?;
        self.0 = rest;
        Some(v)
    }

    fn one_of(&mut self, names: &[&[u8]]) -> Option<usize> {
        let i = names.iter().position(|name| self.0.starts_with(name))?;
        self.lit(names.get(i)?)?;
        Some(i)
    }

    fn month(&mut self) -> Option<u32> {
        u32::try_from(self.one_of(&MONTHS)? + 1).ok()
    }

    fn time(&mut self) -> Option<(u32, u32, u32)> {
        let hour = self.digits(2)?;
        self.lit(b":")?;
        let minute = self.digits(2)?;
        self.lit(b":")?;
        Some((hour, minute, self.digits(2)?))
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(s: &[u8]) -> Option<DateFields> {
    let mut c = Cursor(s);
    let weekday = c.one_of(&DAYS)?;
    c.lit(b", ")?;
    let day = c.digits(2)?;
    c.lit(b" ")?;
    let month = c.month()?;
    c.lit(b" ")?;
    let year = i64::from(c.digits(4)?);
    c.lit(b" ")?;
    let (hour, minute, second) = c.time()?;
    c.lit(b" GMT")?;
    c.end()?;
    Some(DateFields {
        weekday,
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850_date(s: &[u8]) -> Option<DateFields> {
    let mut c = Cursor(s);
    let weekday = c.one_of(&DAYS_LONG)?;
    c.lit(b", ")?;
    let day = c.digits(2)?;
    c.lit(b"-")?;
    let month = c.month()?;
    c.lit(b"-")?;
    let yy = i64::from(c.digits(2)?);
    let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
    c.lit(b" ")?;
    let (hour, minute, second) = c.time()?;
    c.lit(b" GMT")?;
    c.end()?;
    Some(DateFields {
        weekday,
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// `Sun Nov  6 08:49:37 1994`: the day is two digits, or a space and one digit.
fn asctime_date(s: &[u8]) -> Option<DateFields> {
    let mut c = Cursor(s);
    let weekday = c.one_of(&DAYS)?;
    c.lit(b" ")?;
    let month = c.month()?;
    c.lit(b" ")?;
    let day = if c.lit(b" ").is_some() {
        c.digits(1)?
    } else {
        c.digits(2)?
    };
    c.lit(b" ")?;
    let (hour, minute, second) = c.time()?;
    c.lit(b" ")?;
    let year = i64::from(c.digits(4)?);
    c.end()?;
    Some(DateFields {
        weekday,
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

// ---------------------------------------------------------------------------------------------

/// usize → u64 without a lossy cast on any target.
fn byte_count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"2f88df42aa\"";
    /// Sun, 06 Nov 1994 08:49:37 GMT
    const T: u64 = 784_111_777;
    const V: Validators<'static> = Validators {
        etag: ETAG,
        last_modified: T,
    };

    fn br(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn parse(s: &str) -> Result<Vec<RangeSpec>, InvalidRange> {
        parse_range(s.as_bytes())
    }

    fn eval(c: Conditions<'_>, len: u64) -> Plan {
        evaluate(&c, len, &V, &Limits::default())
    }

    fn ranged(range: &str) -> Conditions<'_> {
        Conditions {
            range: Some(range.as_bytes()),
            ..Conditions::default()
        }
    }

    fn date(s: &str) -> Option<i64> {
        parse_http_date(s.as_bytes())
    }

    // --- parse_range ---------------------------------------------------------------------

    #[test]
    fn parses_the_three_forms() {
        use RangeSpec::*;
        assert_eq!(parse("bytes=0-0"), Ok(vec![FromTo(0, 0)]));
        assert_eq!(parse("bytes=-1"), Ok(vec![Suffix(1)]));
        assert_eq!(parse("bytes=5-"), Ok(vec![From(5)]));
        assert_eq!(
            parse("bytes=0-4,10-,-3"),
            Ok(vec![FromTo(0, 4), From(10), Suffix(3)])
        );
    }

    #[test]
    fn unit_is_case_insensitive_and_only_bytes() {
        assert!(parse("Bytes=0-1").is_ok());
        assert!(parse("BYTES=0-1").is_ok());
        assert!(parse("bYtEs=0-1").is_ok());
        assert_eq!(parse("items=0-1"), Err(InvalidRange));
        assert_eq!(parse("byte=0-1"), Err(InvalidRange));
        assert_eq!(parse("0-1"), Err(InvalidRange));
        assert_eq!(parse("=0-1"), Err(InvalidRange));
        assert_eq!(parse(""), Err(InvalidRange));
    }

    #[test]
    fn list_syntax_allows_ows_around_commas_and_empty_elements() {
        use RangeSpec::*;
        let want = Ok(vec![FromTo(0, 1), FromTo(2, 3)]);
        assert_eq!(parse("bytes=0-1, 2-3"), want);
        assert_eq!(parse("bytes=0-1 ,2-3"), want);
        assert_eq!(parse("bytes=0-1 \t,\t 2-3"), want);
        assert_eq!(parse("bytes=0-1,,2-3"), want);
        assert_eq!(parse("bytes=,0-1,2-3"), want);
        assert_eq!(parse("bytes=0-1,2-3,"), want);
        assert_eq!(parse("bytes=0-1, ,  , 2-3"), want);
        // The first element may be empty with OWS before its comma.
        assert_eq!(parse("bytes= ,0-1,2-3"), want);
        // Field values are trimmed.
        assert_eq!(parse(" \tbytes=0-1,2-3 \t"), want);
        assert_eq!(parse("bytes=0-1,2-3, "), want);
    }

    #[test]
    fn list_needs_a_non_empty_element() {
        assert_eq!(parse("bytes="), Err(InvalidRange));
        assert_eq!(parse("bytes=,"), Err(InvalidRange));
        assert_eq!(parse("bytes= , ,"), Err(InvalidRange));
    }

    #[test]
    fn whitespace_only_next_to_commas() {
        assert_eq!(parse("bytes =0-5"), Err(InvalidRange));
        assert_eq!(parse("bytes= 0-5"), Err(InvalidRange));
        assert_eq!(parse("bytes=0 -5"), Err(InvalidRange));
        assert_eq!(parse("bytes=0- 5"), Err(InvalidRange));
        assert_eq!(parse("bytes=- 5"), Err(InvalidRange));
        assert_eq!(parse("bytes=0-1,2 -3"), Err(InvalidRange));
        // Only SP and HTAB are OWS.
        assert_eq!(parse("bytes=0-1,\r\n2-3"), Err(InvalidRange));
        assert_eq!(parse("bytes=0-1\n"), Err(InvalidRange));
    }

    #[test]
    fn positions_are_plain_digits() {
        use RangeSpec::*;
        assert_eq!(parse("bytes=007-0010"), Ok(vec![FromTo(7, 10)]));
        assert_eq!(parse("bytes=-0005"), Ok(vec![Suffix(5)]));
        for bad in [
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=--1",
            "bytes=-",
            "bytes=1-2-3",
            "bytes=1",
            "bytes=a-b",
            "bytes=0x10-",
            "bytes=1.5-2",
            "bytes=١-٢",
        ] {
            assert_eq!(parse(bad), Err(InvalidRange), "{bad}");
        }
    }

    #[test]
    fn one_bad_element_invalidates_the_header() {
        assert_eq!(parse("bytes=0-1,x,2-3"), Err(InvalidRange));
        assert_eq!(parse("bytes=0-1,5-4"), Err(InvalidRange));
    }

    #[test]
    fn last_before_first_is_invalid() {
        assert_eq!(parse("bytes=9-5"), Err(InvalidRange));
        assert_eq!(parse("bytes=5-5"), Ok(vec![RangeSpec::FromTo(5, 5)]));
    }

    #[test]
    fn positions_beyond_u64_saturate() {
        let max = u64::MAX;
        assert_eq!(
            parse(&format!("bytes={max}-")),
            Ok(vec![RangeSpec::From(max)])
        );
        assert_eq!(
            parse(&format!("bytes=-{max}")),
            Ok(vec![RangeSpec::Suffix(max)])
        );
        assert_eq!(
            parse("bytes=18446744073709551616-"),
            Ok(vec![RangeSpec::From(max)])
        );
        assert_eq!(
            parse("bytes=0-18446744073709551616"),
            Ok(vec![RangeSpec::FromTo(0, max)])
        );
        assert_eq!(
            parse("bytes=-99999999999999999999999999"),
            Ok(vec![RangeSpec::Suffix(max)])
        );
        // Order is decided on the digits as written.
        assert_eq!(parse("bytes=99999999999999999999-1"), Err(InvalidRange));
        assert_eq!(
            parse("bytes=99999999999999999999-99999999999999999998"),
            Err(InvalidRange)
        );
        assert_eq!(
            parse("bytes=99999999999999999998-099999999999999999999"),
            Ok(vec![RangeSpec::FromTo(max, max)])
        );
        assert_eq!(
            parse(&format!("bytes=00000000000000000000000{max}-")),
            Ok(vec![RangeSpec::From(max)])
        );
        // What they select: the rest, nothing, or all.
        assert_eq!(
            res("bytes=5-99999999999999999999999999999", 1000),
            Some(vec![ByteRange { start: 5, end: 999 }])
        );
        assert_eq!(res("bytes=18446744073709551616-", 1000), None);
        assert_eq!(
            res("bytes=-18446744073709551616", 1000),
            Some(vec![ByteRange { start: 0, end: 999 }])
        );
    }

    // --- resolve -------------------------------------------------------------------------

    fn res(s: &str, len: u64) -> Option<Vec<ByteRange>> {
        resolve(&parse(s).unwrap(), len)
    }

    #[test]
    fn resolves_single_ranges() {
        assert_eq!(res("bytes=0-0", 10), Some(vec![br(0, 0)]));
        assert_eq!(res("bytes=-1", 10), Some(vec![br(9, 9)]));
        assert_eq!(res("bytes=3-", 10), Some(vec![br(3, 9)]));
        assert_eq!(res("bytes=4-", 5), Some(vec![br(4, 4)]));
        assert_eq!(res("bytes=2-100", 10), Some(vec![br(2, 9)]));
        assert_eq!(res("bytes=-100", 10), Some(vec![br(0, 9)]));
        assert_eq!(res("bytes=-10", 10), Some(vec![br(0, 9)]));
    }

    #[test]
    fn unsatisfiable_specs() {
        assert_eq!(res("bytes=5-", 5), None);
        assert_eq!(res("bytes=5-9", 5), None);
        assert_eq!(res("bytes=-0", 5), None);
        assert_eq!(res("bytes=0-0", 0), None);
        assert_eq!(res("bytes=-5", 0), None);
        // Unsatisfiable specs are dropped when others remain.
        assert_eq!(res("bytes=-0,7-,1-2", 5), Some(vec![br(1, 2)]));
    }

    #[test]
    fn coalesces_overlapping_and_adjacent() {
        assert_eq!(res("bytes=0-4,5-9", 10), Some(vec![br(0, 9)]));
        assert_eq!(res("bytes=0-4,6-9", 10), Some(vec![br(0, 4), br(6, 9)]));
        assert_eq!(res("bytes=0-5,3-7", 10), Some(vec![br(0, 7)]));
        assert_eq!(res("bytes=2-3,0-9", 10), Some(vec![br(0, 9)]));
        assert_eq!(res("bytes=-2,0-1", 10), Some(vec![br(0, 1), br(8, 9)]));
        assert_eq!(res("bytes=-2,0-7", 10), Some(vec![br(0, 9)]));
        assert_eq!(
            res("bytes=8-9,0-1,4-5", 10),
            Some(vec![br(0, 1), br(4, 5), br(8, 9)])
        );
        let many = format!("bytes={}", vec!["0-9"; 1000].join(","));
        assert_eq!(res(&many, 100), Some(vec![br(0, 9)]));
    }

    #[test]
    fn resolve_at_u64_limits() {
        use RangeSpec::*;
        let max = u64::MAX;
        assert_eq!(
            resolve(&[From(max - 1)], max),
            Some(vec![br(max - 1, max - 1)])
        );
        assert_eq!(resolve(&[FromTo(0, max)], max), Some(vec![br(0, max - 1)]));
        assert_eq!(resolve(&[Suffix(max)], max), Some(vec![br(0, max - 1)]));
        assert_eq!(resolve(&[From(max)], max), None);
        assert_eq!(
            resolve(&[FromTo(0, 5), FromTo(6, max), Suffix(1)], max),
            Some(vec![br(0, max - 1)])
        );
    }

    #[test]
    fn resolve_drops_backwards_specs_from_direct_callers() {
        assert_eq!(resolve(&[RangeSpec::FromTo(5, 3)], 10), None);
        assert_eq!(resolve(&[], 10), None);
    }

    #[test]
    fn byte_range_len() {
        assert_eq!(br(0, 0).len(), 1);
        assert_eq!(br(3, 9).len(), 7);
        assert_eq!(br(0, u64::MAX - 1).len(), u64::MAX);
        // Outside the invariant: no panic.
        assert_eq!(br(0, u64::MAX).len(), u64::MAX);
        assert_eq!(br(9, 3).len(), 1);
    }

    // --- evaluate: Range -----------------------------------------------------------------

    #[test]
    fn no_range_is_full() {
        assert_eq!(eval(Conditions::default(), 10), Plan::Full);
    }

    #[test]
    fn simple_partial() {
        assert_eq!(eval(ranged("bytes=0-0"), 10), Plan::Partial(vec![br(0, 0)]));
        assert_eq!(eval(ranged("bytes=-1"), 10), Plan::Partial(vec![br(9, 9)]));
        assert_eq!(
            eval(ranged("bytes=102760448-103809023"), 204_745_168),
            Plan::Partial(vec![br(102_760_448, 103_809_023)])
        );
    }

    #[test]
    fn unsatisfiable_is_416() {
        assert_eq!(eval(ranged("bytes=5-"), 5), Plan::Unsatisfiable);
        assert_eq!(eval(ranged("bytes=-0"), 5), Plan::Unsatisfiable);
        assert_eq!(eval(ranged("bytes=10-20,30-"), 5), Plan::Unsatisfiable);
        assert_eq!(
            eval(ranged("bytes=18446744073709551616-"), 10),
            Plan::Unsatisfiable
        );
    }

    #[test]
    fn invalid_range_is_ignored() {
        assert_eq!(eval(ranged("bytes=9-5"), 10), Plan::Full);
        assert_eq!(eval(ranged("items=0-5"), 10), Plan::Full);
        assert_eq!(eval(ranged("bytes=99999999999999999999-1"), 10), Plan::Full);
        assert_eq!(eval(ranged(""), 10), Plan::Full);
    }

    #[test]
    fn empty_object_ignores_range() {
        assert_eq!(eval(ranged("bytes=0-0"), 0), Plan::Full);
        assert_eq!(eval(ranged("bytes=-5"), 0), Plan::Full);
        assert_eq!(eval(ranged("bytes=-0"), 0), Plan::Full);
    }

    #[test]
    fn coalesced_multipart_and_part_limit() {
        assert_eq!(
            eval(ranged("bytes=0-4,5-9"), 100),
            Plan::Partial(vec![br(0, 9)])
        );
        let specs = |n: u64| {
            (0..n)
                .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
                .collect::<Vec<_>>()
                .join(",")
        };
        let h16 = format!("bytes={}", specs(16));
        let Plan::Partial(r) = eval(ranged(&h16), 1000) else {
            panic!("16 ranges should be served")
        };
        assert_eq!(r.len(), 16);
        let h17 = format!("bytes={}", specs(17));
        assert_eq!(eval(ranged(&h17), 1000), Plan::Full);
        // The limit counts parts after coalescing.
        let h17_adjacent = format!("bytes={},2-9", specs(17));
        let Plan::Partial(r) = eval(ranged(&h17_adjacent), 1000) else {
            panic!("17 specs coalescing to 16 parts should be served")
        };
        assert_eq!((r.len(), r[0]), (16, br(0, 11)));
        let zero = Limits {
            max_parts: 0,
            ..Limits::default()
        };
        assert_eq!(evaluate(&ranged("bytes=0-1"), 10, &V, &zero), Plan::Full);
    }

    #[test]
    fn thousand_overlapping_specs_make_one_range() {
        let h = format!("bytes={}", vec!["0-9"; 1000].join(","));
        assert_eq!(eval(ranged(&h), 100), Plan::Partial(vec![br(0, 9)]));
    }

    #[test]
    fn oversized_header_is_ignored_quickly() {
        let h = format!("bytes={}", vec!["0-9"; 25_000].join(","));
        assert!(h.len() > 100_000);
        let start = std::time::Instant::now();
        assert_eq!(eval(ranged(&h), 100), Plan::Full);
        assert!(start.elapsed() < std::time::Duration::from_millis(50));
        // Right at the limit it is still honoured.
        let exact = format!("bytes=0-1{}", " ".repeat(16 * 1024 - 9));
        assert_eq!(exact.len(), 16 * 1024);
        assert_eq!(eval(ranged(&exact), 10), Plan::Partial(vec![br(0, 1)]));
        let over = format!("{exact} ");
        assert_eq!(eval(ranged(&over), 10), Plan::Full);
        // Without the limit a 100 KB header is still parsed in linear time.
        let huge = Limits {
            max_header_bytes: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(
            evaluate(&ranged(&h), 100, &V, &huge),
            Plan::Partial(vec![br(0, 9)])
        );
    }

    // --- evaluate: If-Range --------------------------------------------------------------

    fn if_range(value: &str) -> Plan {
        let c = Conditions {
            if_range: Some(value.as_bytes()),
            ..ranged("bytes=0-1")
        };
        eval(c, 10)
    }

    #[test]
    fn if_range_etag_needs_a_strong_match() {
        assert_eq!(if_range(ETAG), Plan::Partial(vec![br(0, 1)]));
        assert_eq!(
            if_range(&format!(" {ETAG} ")),
            Plan::Partial(vec![br(0, 1)])
        );
        assert_eq!(if_range(&format!("W/{ETAG}")), Plan::Full);
        assert_eq!(if_range("\"other\""), Plan::Full);
        assert_eq!(if_range(&format!("{ETAG}, {ETAG}")), Plan::Full);
        assert_eq!(if_range("\"2f88df42aa"), Plan::Full);
    }

    #[test]
    fn if_range_date_must_equal_last_modified() {
        assert_eq!(
            if_range("Sun, 06 Nov 1994 08:49:37 GMT"),
            Plan::Partial(vec![br(0, 1)])
        );
        assert_eq!(
            if_range("Sunday, 06-Nov-94 08:49:37 GMT"),
            Plan::Partial(vec![br(0, 1)])
        );
        assert_eq!(
            if_range("Sun Nov  6 08:49:37 1994"),
            Plan::Partial(vec![br(0, 1)])
        );
        assert_eq!(if_range("Sun, 06 Nov 1994 08:49:38 GMT"), Plan::Full);
        assert_eq!(if_range("Sun, 06 Nov 1994 08:49:36 GMT"), Plan::Full);
    }

    #[test]
    fn if_range_garbage_never_holds() {
        assert_eq!(if_range(""), Plan::Full);
        assert_eq!(if_range("*"), Plan::Full);
        assert_eq!(if_range("yesterday"), Plan::Full);
    }

    #[test]
    fn failed_if_range_beats_unsatisfiable_and_invalid() {
        let c = Conditions {
            if_range: Some(b"\"other\""),
            ..ranged("bytes=50-")
        };
        assert_eq!(eval(c, 10), Plan::Full);
        let c = Conditions {
            if_range: Some(ETAG.as_bytes()),
            ..ranged("bytes=50-")
        };
        assert_eq!(eval(c, 10), Plan::Unsatisfiable);
    }

    #[test]
    fn if_range_without_range_is_ignored() {
        let c = Conditions {
            if_range: Some(b"\"other\""),
            ..Conditions::default()
        };
        assert_eq!(eval(c, 10), Plan::Full);
    }

    // --- evaluate: preconditions ---------------------------------------------------------

    fn with(f: impl FnOnce(&mut Conditions<'static>)) -> Plan {
        let mut c = ranged("bytes=0-1");
        f(&mut c);
        eval(c, 10)
    }

    const PARTIAL: fn() -> Plan = || Plan::Partial(vec![br(0, 1)]);

    #[test]
    fn if_match() {
        assert_eq!(with(|c| c.if_match = Some(b"*")), PARTIAL());
        assert_eq!(with(|c| c.if_match = Some(ETAG.as_bytes())), PARTIAL());
        assert_eq!(
            with(|c| c.if_match = Some(b"\"a\", \"2f88df42aa\"")),
            PARTIAL()
        );
        assert_eq!(
            with(|c| c.if_match = Some(b"\"a\",,\"2f88df42aa\" ,")),
            PARTIAL()
        );
        assert_eq!(
            with(|c| c.if_match = Some(b"\"a\"")),
            Plan::PreconditionFailed
        );
        // Weak tags never match strongly.
        assert_eq!(
            with(|c| c.if_match = Some(b"W/\"2f88df42aa\"")),
            Plan::PreconditionFailed
        );
        // Malformed lists match nothing, even when a good tag is in them.
        assert_eq!(
            with(|c| c.if_match = Some(b"\"2f88df42aa\" \"a\"")),
            Plan::PreconditionFailed
        );
        assert_eq!(
            with(|c| c.if_match = Some(b"\"2f88df42aa\", a")),
            Plan::PreconditionFailed
        );
        assert_eq!(
            with(|c| c.if_match = Some(b"*, \"2f88df42aa\"")),
            Plan::PreconditionFailed
        );
        assert_eq!(
            with(|c| c.if_match = Some(b"2f88df42aa")),
            Plan::PreconditionFailed
        );
        assert_eq!(
            with(|c| c.if_match = Some(b"w/\"2f88df42aa\"")),
            Plan::PreconditionFailed
        );
        // An empty list names no tag.
        assert_eq!(with(|c| c.if_match = Some(b"")), Plan::PreconditionFailed);
    }

    #[test]
    fn if_match_present_skips_if_unmodified_since() {
        assert_eq!(
            with(|c| {
                c.if_match = Some(b"*");
                c.if_unmodified_since = Some(b"Thu, 01 Jan 1970 00:00:00 GMT");
            }),
            PARTIAL()
        );
    }

    #[test]
    fn if_unmodified_since() {
        let ius = |d: &'static str| with(|c| c.if_unmodified_since = Some(d.as_bytes()));
        assert_eq!(ius("Sun, 06 Nov 1994 08:49:37 GMT"), PARTIAL());
        assert_eq!(ius("Sun, 06 Nov 1994 08:49:38 GMT"), PARTIAL());
        assert_eq!(
            ius("Sun, 06 Nov 1994 08:49:36 GMT"),
            Plan::PreconditionFailed
        );
        assert_eq!(
            ius("Mon, 01 Jan 1900 00:00:00 GMT"),
            Plan::PreconditionFailed
        );
        // Invalid dates, lists of dates included, are ignored.
        assert_eq!(ius("Mon, 01 Jan 1900 00:00:00"), PARTIAL());
        assert_eq!(
            ius("Sun, 06 Nov 1994 08:49:36 GMT, Sun, 06 Nov 1994 08:49:36 GMT"),
            PARTIAL()
        );
    }

    #[test]
    fn if_none_match() {
        assert_eq!(with(|c| c.if_none_match = Some(b"*")), Plan::NotModified);
        assert_eq!(
            with(|c| c.if_none_match = Some(ETAG.as_bytes())),
            Plan::NotModified
        );
        // Weak comparison: W/ is ignored on either side.
        assert_eq!(
            with(|c| c.if_none_match = Some(b"W/\"2f88df42aa\"")),
            Plan::NotModified
        );
        assert_eq!(
            with(|c| c.if_none_match = Some(b"\"x\", W/\"2f88df42aa\"")),
            Plan::NotModified
        );
        assert_eq!(with(|c| c.if_none_match = Some(b"\"x\"")), PARTIAL());
        assert_eq!(
            with(|c| c.if_none_match = Some(b"\"x\" W/\"2f88df42aa\"")),
            PARTIAL()
        );
        assert_eq!(with(|c| c.if_none_match = Some(b"\"2f88df42aa")), PARTIAL());
    }

    #[test]
    fn weak_own_etag() {
        let v = Validators {
            etag: "W/\"abc\"",
            last_modified: T,
        };
        let c = Conditions {
            if_match: Some(b"\"abc\""),
            ..Conditions::default()
        };
        assert_eq!(
            evaluate(&c, 10, &v, &Limits::default()),
            Plan::PreconditionFailed
        );
        let c = Conditions {
            if_none_match: Some(b"\"abc\""),
            ..Conditions::default()
        };
        assert_eq!(evaluate(&c, 10, &v, &Limits::default()), Plan::NotModified);
        let bad = Validators {
            etag: "abc",
            last_modified: T,
        };
        let c = Conditions {
            if_match: Some(b"\"abc\""),
            ..Conditions::default()
        };
        assert_eq!(
            evaluate(&c, 10, &bad, &Limits::default()),
            Plan::PreconditionFailed
        );
        let c = Conditions {
            if_match: Some(b"*"),
            ..Conditions::default()
        };
        assert_eq!(evaluate(&c, 10, &bad, &Limits::default()), Plan::Full);
    }

    #[test]
    fn if_none_match_present_skips_if_modified_since() {
        assert_eq!(
            with(|c| {
                c.if_none_match = Some(b"\"x\"");
                c.if_modified_since = Some(b"Sun, 06 Nov 1994 08:49:37 GMT");
            }),
            PARTIAL()
        );
    }

    #[test]
    fn if_modified_since() {
        let ims = |d: &'static str| with(|c| c.if_modified_since = Some(d.as_bytes()));
        assert_eq!(ims("Sun, 06 Nov 1994 08:49:37 GMT"), Plan::NotModified);
        assert_eq!(ims("Sun, 06 Nov 1994 08:49:38 GMT"), Plan::NotModified);
        assert_eq!(ims("Sun, 06 Nov 1994 08:49:36 GMT"), PARTIAL());
        assert_eq!(ims("Sun, 06 Nov 1994 08:49:37 UTC"), PARTIAL());
        assert_eq!(
            ims("Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT"),
            PARTIAL()
        );
    }

    #[test]
    fn precondition_order() {
        // 412 beats 304.
        assert_eq!(
            with(|c| {
                c.if_match = Some(b"\"x\"");
                c.if_none_match = Some(b"*");
            }),
            Plan::PreconditionFailed
        );
        assert_eq!(
            with(|c| {
                c.if_unmodified_since = Some(b"Thu, 01 Jan 1970 00:00:00 GMT");
                c.if_modified_since = Some(b"Sun, 06 Nov 1994 08:49:37 GMT");
            }),
            Plan::PreconditionFailed
        );
        // Passing If-Match still lets If-None-Match answer 304.
        assert_eq!(
            with(|c| {
                c.if_match = Some(ETAG.as_bytes());
                c.if_none_match = Some(ETAG.as_bytes());
            }),
            Plan::NotModified
        );
        // Preconditions come before Range, even an unsatisfiable or empty one.
        let c = Conditions {
            if_none_match: Some(b"*"),
            ..ranged("bytes=50-")
        };
        assert_eq!(eval(c, 10), Plan::NotModified);
        let c = Conditions {
            if_match: Some(b"\"x\""),
            ..ranged("bytes=50-")
        };
        assert_eq!(eval(c, 10), Plan::PreconditionFailed);
        let c = Conditions {
            if_none_match: Some(b"*"),
            ..ranged("bytes=0-1")
        };
        assert_eq!(eval(c, 0), Plan::NotModified);
    }

    // --- HTTP-date -----------------------------------------------------------------------

    #[test]
    fn the_three_date_formats() {
        let t = Some(i64::try_from(T).unwrap());
        assert_eq!(date("Sun, 06 Nov 1994 08:49:37 GMT"), t);
        assert_eq!(date("Sunday, 06-Nov-94 08:49:37 GMT"), t);
        assert_eq!(date("Sun Nov  6 08:49:37 1994"), t);
        assert_eq!(date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(date("Thursday, 01-Jan-70 00:00:00 GMT"), Some(0));
        assert_eq!(date("Thu Jan  1 00:00:00 1970"), Some(0));
        assert_eq!(date("Wed Dec 31 23:59:59 1969"), Some(-1));
        assert_eq!(date("Fri, 13 Feb 2009 23:31:30 GMT"), Some(1_234_567_890));
        assert_eq!(date("Fri Feb 13 23:31:30 2009"), Some(1_234_567_890));
        assert_eq!(date("Fri, 31 Dec 9999 23:59:59 GMT"), Some(253_402_300_799));
        assert_eq!(date("Sat, 01 Jan 0000 00:00:00 GMT"), Some(-62_167_219_200));
    }

    #[test]
    fn rfc850_two_digit_year_window() {
        assert_eq!(date("Tuesday, 31-Dec-69 23:59:59 GMT"), Some(3_155_759_999));
        assert_eq!(date("Thursday, 01-Jan-70 00:00:00 GMT"), Some(0));
        assert_eq!(date("Saturday, 01-Jan-00 00:00:00 GMT"), Some(946_684_800));
    }

    #[test]
    fn calendar_validation() {
        assert!(date("Thu, 29 Feb 1996 00:00:00 GMT").is_some());
        assert!(date("Tue, 29 Feb 2000 00:00:00 GMT").is_some());
        assert!(date("Thu, 29 Feb 1900 00:00:00 GMT").is_none());
        assert!(date("Sun, 30 Feb 1997 00:00:00 GMT").is_none());
        assert!(date("Thu, 31 Apr 1997 00:00:00 GMT").is_none());
        assert!(date("Sun, 00 Nov 1994 08:49:37 GMT").is_none());
        assert!(date("Sun, 06 Nov 1994 24:00:00 GMT").is_none());
        assert!(date("Sun, 06 Nov 1994 08:60:00 GMT").is_none());
        assert!(date("Sun, 06 Nov 1994 08:49:61 GMT").is_none());
        // Leap second per the time-of-day grammar.
        assert_eq!(date("Sun, 06 Nov 1994 08:49:60 GMT"), Some(784_111_800));
        // Day-name must agree with the date.
        assert!(date("Mon, 06 Nov 1994 08:49:37 GMT").is_none());
        assert!(date("Monday, 06-Nov-94 08:49:37 GMT").is_none());
        assert!(date("Mon Nov  6 08:49:37 1994").is_none());
    }

    #[test]
    fn date_syntax_is_strict() {
        for bad in [
            "",
            "sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 06 Nov 1994 08:49:37 GMTx",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sun Nov   6 08:49:37 1994",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT\0",
            "Sun, 06 Nov 1994 08:49:37 GMT\r\n",
        ] {
            assert_eq!(date(bad), None, "{bad:?}");
        }
        assert_eq!(date("Wed Nov 16 08:49:37 1994"), Some(784_975_777));
        // date3 = month SP ( 2DIGIT / ( SP DIGIT ) ): a zero-padded day is also asctime.
        assert_eq!(date("Sun Nov 06 08:49:37 1994"), Some(784_111_777));
        assert_eq!(date(" \tSun, 06 Nov 1994 08:49:37 GMT "), Some(784_111_777));
    }

    #[test]
    fn days_from_civil_known_points() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
    }

    // --- headers and multipart -----------------------------------------------------------

    #[test]
    fn header_values() {
        assert_eq!(content_range(br(0, 0), 1), "bytes 0-0/1");
        assert_eq!(
            content_range(br(102_760_448, 103_809_023), 204_745_168),
            "bytes 102760448-103809023/204745168"
        );
        assert_eq!(unsatisfied_range(5), "bytes */5");
        assert_eq!(unsatisfied_range(0), "bytes */0");
    }

    fn assemble(m: &Multipart, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (head, r) in &m.parts {
            body.extend_from_slice(head);
            body.extend_from_slice(&data[r.start as usize..=r.end as usize]);
        }
        body.extend_from_slice(&m.trailer);
        body
    }

    #[test]
    fn multipart_layout() {
        let data: Vec<u8> = (0..=99).collect();
        let m = multipart(
            &[br(0, 1), br(10, 12)],
            100,
            "application/octet-stream",
            "SEP",
        );
        assert_eq!(m.content_type, "multipart/byteranges; boundary=SEP");
        let body = assemble(&m, &data);
        let mut want = Vec::new();
        want.extend_from_slice(
            b"--SEP\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-1/100\r\n\r\n",
        );
        want.extend_from_slice(&[0, 1]);
        want.extend_from_slice(
            b"\r\n--SEP\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 10-12/100\r\n\r\n",
        );
        want.extend_from_slice(&[10, 11, 12]);
        want.extend_from_slice(b"\r\n--SEP--\r\n");
        assert_eq!(body, want);
        assert_eq!(m.body_len, body.len() as u64);
        assert_eq!(m.trailer, b"\r\n--SEP--\r\n");
    }

    #[test]
    fn multipart_body_len_matches_for_many_parts() {
        let data = vec![7u8; 10_000];
        let ranges: Vec<ByteRange> = (0..16).map(|i| br(i * 600, i * 600 + 99 + i)).collect();
        let m = multipart(
            &ranges,
            10_000,
            "application/vnd.ms-cab-compressed",
            "3d6b6a416f9b5",
        );
        assert_eq!(m.parts.len(), 16);
        assert_eq!(m.body_len, assemble(&m, &data).len() as u64);
    }

    #[test]
    fn multipart_huge_len_does_not_overflow() {
        let m = multipart(
            &[br(0, u64::MAX - 1), br(0, u64::MAX - 1)],
            u64::MAX,
            "x",
            "b",
        );
        assert_eq!(m.body_len, u64::MAX);
    }

    // --- first_wanted_byte ---------------------------------------------------------------

    #[test]
    fn first_wanted_byte_cases() {
        let f = |s: &str| first_wanted_byte(Some(s.as_bytes()));
        assert_eq!(first_wanted_byte(None), Some(0));
        assert_eq!(f("bytes=102760448-103809023"), Some(102_760_448));
        assert_eq!(f("bytes=5-"), Some(5));
        assert_eq!(f("bytes=500-600,0-10"), Some(500));
        assert_eq!(f("bytes=,7-9"), Some(7));
        assert_eq!(f("bytes=-5"), None);
        assert_eq!(f("bytes=-5,0-1"), None);
        // Invalid or of another unit: ignored, so the whole object from its first byte.
        assert_eq!(f("bytes=5-,9-1"), Some(0));
        assert_eq!(f("bytes=5-,x"), Some(0));
        assert_eq!(f("items=5-"), Some(0));
    }

    // --- randomized ----------------------------------------------------------------------

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn position() -> impl Strategy<Value = u64> {
            prop_oneof![0u64..64, any::<u64>(), (0u64..4).prop_map(|d| u64::MAX - d),]
        }

        fn spec() -> impl Strategy<Value = RangeSpec> {
            prop_oneof![
                (position(), position()).prop_map(|(a, b)| RangeSpec::FromTo(a.min(b), a.max(b))),
                position().prop_map(RangeSpec::From),
                position().prop_map(RangeSpec::Suffix),
            ]
        }

        fn small_spec() -> impl Strategy<Value = RangeSpec> {
            prop_oneof![
                (0u64..80, 0u64..80).prop_map(|(a, b)| RangeSpec::FromTo(a.min(b), a.max(b))),
                (0u64..80).prop_map(RangeSpec::From),
                (0u64..80).prop_map(RangeSpec::Suffix),
            ]
        }

        fn write_spec(s: RangeSpec) -> String {
            match s {
                RangeSpec::FromTo(a, b) => format!("{a}-{b}"),
                RangeSpec::From(a) => format!("{a}-"),
                RangeSpec::Suffix(n) => format!("-{n}"),
            }
        }

        fn check_shape(ranges: &[ByteRange], len: u64) {
            for r in ranges {
                assert!(r.start <= r.end && r.end < len, "{r:?} outside {len}");
            }
            for w in ranges.windows(2) {
                assert!(
                    w[0].end.saturating_add(1) < w[1].start,
                    "{w:?} not coalesced"
                );
            }
        }

        proptest! {
            #[test]
            fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse_range(&bytes);
                let _ = first_wanted_byte(Some(&bytes));
                let _ = parse_http_date(&bytes);
                let _ = tags_match(&bytes, |_| true);
            }

            #[test]
            fn parse_never_panics_on_near_valid(s in "[bByYtTeEsS= \t,0-9\\-]{0,40}") {
                if let Ok(specs) = parse_range(s.as_bytes()) {
                    prop_assert!(!specs.is_empty());
                    for spec in specs {
                        if let RangeSpec::FromTo(a, b) = spec {
                            prop_assert!(a <= b);
                        }
                    }
                }
            }

            #[test]
            fn evaluate_never_panics(
                fields in proptest::collection::vec(
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 6),
                len in position(),
                last_modified in any::<u64>(),
                etag in "\\PC{0,12}",
                max_parts in 0usize..20,
            ) {
                let c = Conditions {
                    range: fields[0].as_deref(),
                    if_range: fields[1].as_deref(),
                    if_match: fields[2].as_deref(),
                    if_none_match: fields[3].as_deref(),
                    if_modified_since: fields[4].as_deref(),
                    if_unmodified_since: fields[5].as_deref(),
                };
                let v = Validators { etag: &etag, last_modified };
                let limits = Limits { max_parts, ..Limits::default() };
                if let Plan::Partial(r) = evaluate(&c, len, &v, &limits) {
                    prop_assert!(!r.is_empty() && r.len() <= max_parts);
                    check_shape(&r, len);
                }
            }

            #[test]
            fn written_specs_parse_back(
                specs in proptest::collection::vec(spec(), 1..10),
                unit in "[bB][yY][tT][eE][sS]",
                seps in proptest::collection::vec("[ \t]{0,2},[ \t]{0,2}(,[ \t]?)?", 10),
            ) {
                let mut h = format!("{unit}=");
                for (i, s) in specs.iter().enumerate() {
                    if i > 0 {
                        h.push_str(&seps[i]);
                    }
                    h.push_str(&write_spec(*s));
                }
                prop_assert_eq!(parse_range(h.as_bytes()), Ok(specs.clone()));
                let first = match specs[0] {
                    RangeSpec::FromTo(a, _) | RangeSpec::From(a) => Some(a),
                    RangeSpec::Suffix(_) => None,
                };
                prop_assert_eq!(first_wanted_byte(Some(h.as_bytes())), first);
            }

            #[test]
            fn resolve_matches_a_byte_map(
                specs in proptest::collection::vec(small_spec(), 0..12),
                len in 0u64..64,
            ) {
                let mut want = vec![false; len as usize];
                for s in &specs {
                    let (a, b) = match *s {
                        RangeSpec::FromTo(a, b) => (a, b),
                        RangeSpec::From(a) => (a, u64::MAX),
                        RangeSpec::Suffix(0) => continue,
                        RangeSpec::Suffix(n) => (len.saturating_sub(n), u64::MAX),
                    };
                    for i in a..=b.min(len.saturating_sub(1)) {
                        if i < len {
                            want[i as usize] = true;
                        }
                    }
                }
                match resolve(&specs, len) {
                    None => prop_assert!(want.iter().all(|&x| !x)),
                    Some(ranges) => {
                        check_shape(&ranges, len);
                        let mut got = vec![false; len as usize];
                        for r in &ranges {
                            for i in r.start..=r.end {
                                got[i as usize] = true;
                            }
                        }
                        prop_assert_eq!(got, want);
                    }
                }
            }

            #[test]
            fn resolve_covers_exactly_at_any_scale(
                specs in proptest::collection::vec(spec(), 0..12),
                len in position(),
            ) {
                let clamped: Vec<ByteRange> =
                    specs.iter().filter_map(|&s| clamp(s, len)).collect();
                match resolve(&specs, len) {
                    None => prop_assert!(clamped.is_empty()),
                    Some(ranges) => {
                        check_shape(&ranges, len);
                        // Every selected interval lies inside one output range...
                        for c in &clamped {
                            prop_assert!(ranges.iter().any(|r| r.start <= c.start && c.end <= r.end));
                        }
                        // ...and every output range is covered by selected intervals without gaps.
                        for r in &ranges {
                            let mut inside: Vec<ByteRange> = clamped
                                .iter()
                                .copied()
                                .filter(|c| r.start <= c.start && c.end <= r.end)
                                .collect();
                            inside.sort_by_key(|c| c.start);
                            let mut next = r.start;
                            for c in inside {
                                prop_assert!(c.start <= next);
                                next = next.max(c.end.saturating_add(1));
                            }
                            prop_assert_eq!(next, r.end + 1);
                        }
                    }
                }
            }

            #[test]
            fn dates_round_trip(secs in -62_167_219_200i64..253_402_300_800) {
                let (imf, asc) = format_dates(secs);
                prop_assert_eq!(parse_http_date(imf.as_bytes()), Some(secs));
                prop_assert_eq!(parse_http_date(asc.as_bytes()), Some(secs));
            }

            #[test]
            fn multipart_length_is_exact(
                specs in proptest::collection::vec(small_spec(), 1..10),
                boundary in "[0-9A-Za-z'()+_,./:=?-]{1,70}",
            ) {
                let data: Vec<u8> = (0..80u8).collect();
                if let Some(ranges) = resolve(&specs, 80) {
                    let m = multipart(&ranges, 80, "application/octet-stream", &boundary);
                    prop_assert_eq!(m.body_len, assemble(&m, &data).len() as u64);
                }
            }
        }

        /// IMF-fixdate and asctime-date of a timestamp, via Hinnant's `civil_from_days`.
        fn format_dates(secs: i64) -> (String, String) {
            let days = secs.div_euclid(86_400);
            let tod = secs.rem_euclid(86_400);
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z.rem_euclid(146_097);
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            let wd = std::str::from_utf8(DAYS[(days + 3).rem_euclid(7) as usize]).unwrap();
            let mon = std::str::from_utf8(MONTHS[(m - 1) as usize]).unwrap();
            let (hh, mm, ss) = (tod / 3600, tod / 60 % 60, tod % 60);
            (
                format!("{wd}, {d:02} {mon} {y:04} {hh:02}:{mm:02}:{ss:02} GMT"),
                format!("{wd} {mon} {d:>2} {hh:02}:{mm:02}:{ss:02} {y:04}"),
            )
        }
    }
}
