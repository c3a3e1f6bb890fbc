//! The gzip content coding of SOAP bodies, both ways: answers to clients that offer it, and
//! requests between nodes (RFC 7694: a node says `Accept-Encoding: gzip` in its answers, and
//! a downstream that saw it compresses what it posts); which coding a request body came in.
//! Sans-IO: bytes in, bytes out, the decoded size bounded before it is reached.

use std::io::{Read as _, Write as _};

/// `bytes` gzip-compressed (fast level: SOAP text compresses ~8x at it, and the CPU goes to
/// serving). Writing into memory does not fail; on the impossible error the caller sends the
/// bytes as they are.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Decompress a gzip body of at most `limit` bytes decompressed: over it, an error of kind
/// `FileTooLarge` (found without decompressing more than `limit` + 1 bytes); not gzip, or
/// cut short, `InvalidData`.
pub fn gunzip(bytes: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(8).min(limit));
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if out.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("over {limit} bytes decompressed"),
        ));
    }
    Ok(out)
}

/// Whether a header listing codings (Accept-Encoding) names gzip without refusing it (q=0).
pub fn lists_gzip(values: http::header::GetAll<'_, http::HeaderValue>) -> bool {
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut it = coding.split(';');
            let name = it.next().unwrap_or("").trim();
            let refused = it.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// The Content-Encoding of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Other,
}

impl Coding {
    pub fn of(headers: &http::HeaderMap) -> Coding {
        let Some(coding) = headers.get(http::header::CONTENT_ENCODING) else {
            return Coding::Identity;
        };
        let coding = coding.to_str().unwrap_or("?").trim();
        if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
            Coding::Identity
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            Coding::Gzip
        } else {
            Coding::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let text = "<ComputerStatusRollupUpdateStatus/>".repeat(10_000);
        let packed = gzip(text.as_bytes()).unwrap();
        assert!(packed.len() * 20 < text.len());
        assert_eq!(gunzip(&packed, text.len()).unwrap(), text.as_bytes());
        let over = gunzip(&packed, text.len() - 1).unwrap_err();
        assert_eq!(over.kind(), std::io::ErrorKind::FileTooLarge);
        let cut = gunzip(&packed[..packed.len() / 2], text.len()).unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(
            gunzip(b"not gzip", 100).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn gzip_is_listed_unless_refused() {
        let listed = |value: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_str(value).unwrap(),
            );
            lists_gzip(h.get_all(http::header::ACCEPT_ENCODING))
        };
        assert!(listed("gzip"));
        assert!(listed("xpress, GZIP;q=0.5"));
        assert!(!listed("gzip;q=0"));
        assert!(!listed("xpress"));
    }
}
