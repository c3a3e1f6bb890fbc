//! XML Schema lexical forms the protocols use: `xs:dateTime` and `xs:date` (UTC, seconds since
//! the epoch in our values), booleans, version strings, GUIDs and base64. Sans-IO.

use std::fmt;

use base64::Engine as _;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-10-04T13:17:07Z`.
pub fn format_datetime(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `2026-10-04`.
pub fn format_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// An `xs:dateTime` (or a bare `xs:date`) to seconds since the epoch, UTC. Fractions are
/// dropped; a missing zone is UTC (spec-era clients send none); `±hh:mm` is applied.
pub fn parse_datetime(text: &str) -> Option<i64> {
    let t = text.trim();
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, time) = match t.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (t, None),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (
        num(parts.next()?)?,
        num(parts.next()?)?,
        num(parts.next()?)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    let Some(time) = time else {
        return Some(secs);
    };
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']).filter(|&i| i >= 8) {
        let (c, z) = time.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, mi) = z[1..].split_once(':')?;
        (c, sign * (num(h)? * 3600 + num(mi)? * 60))
    } else {
        (time, 0)
    };
    let clock = clock.split('.').next()?;
    let mut hms = clock.splitn(3, ':');
    let (h, mi, s) = (num(hms.next()?)?, num(hms.next()?)?, num(hms.next()?)?);
    if h > 24 || mi > 59 || s > 60 {
        return None;
    }
    secs += h * 3600 + mi * 60 + s - offset;
    Some(secs)
}

/// `xs:boolean`: true, false, 1, 0.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// A two-part version ("2.90", "1.8") as (major, minor), compared numerically.
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A GUID, compared by value (text case varies in real metadata).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub u128);

impl Guid {
    pub const NIL: Guid = Guid(0);

    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, any case, optional braces.
    pub fn parse(text: &str) -> Option<Guid> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(t);
        let bytes = t.as_bytes();
        if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
            return None;
        }
        let hex: String = t.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(&hex, 16).ok().map(Guid)
    }

    /// A random (version 4) GUID.
    pub fn random() -> Guid {
        let mut bytes = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        let mut v = u128::from_be_bytes(bytes);
        v = (v & !(0xf << 76)) | (0x4 << 76);
        v = (v & !(0x3 << 62)) | (0x2 << 62);
        Guid(v)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

/// As text, the way documents and state.db write GUIDs.
impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Guid::parse(&text).ok_or_else(|| serde::de::Error::custom("not a GUID"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `xs:base64Binary`, whitespace anywhere ignored.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_round_trip_and_parse_every_form_seen() {
        let t = 1_791_120_956; // 2026-10-04T13:35:56Z
        assert_eq!(format_datetime(t), "2026-10-04T13:35:56Z");
        assert_eq!(format_date(t), "2026-10-04");
        assert_eq!(parse_datetime("2026-10-04T13:35:56Z"), Some(t));
        assert_eq!(parse_datetime("2026-10-04T13:35:56.9967236Z"), Some(t));
        assert_eq!(parse_datetime("2026-10-04T13:35:56"), Some(t));
        assert_eq!(parse_datetime("2026-10-04T15:35:56+02:00"), Some(t));
        assert_eq!(parse_datetime("2026-10-04T11:35:56.5-02:00"), Some(t));
        assert_eq!(parse_datetime("2026-10-04"), Some(t - t % 86_400));
        assert_eq!(
            parse_datetime("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800)
        );
        assert_eq!(format_datetime(0), "1970-01-01T00:00:00Z");
        for bad in [
            "",
            "2026-13-01",
            "2026-10-04T25:00:00Z",
            "x",
            "2026-10-04Tab:00:00",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_datetime(&format_datetime(secs)), Some(secs));
        }
    }

    #[test]
    fn versions_and_booleans() {
        assert_eq!(parse_version("2.90"), Some((2, 90)));
        assert!(parse_version("1.10") > parse_version("1.8"));
        assert_eq!(parse_version("2"), None);
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }
}
