//! The content codings of SOAP bodies, both ways: answers in the coding their caller offers
//! (xpress for Windows clients, gzip for nodes), requests between nodes (RFC 7694: a node says
//! `Accept-Encoding: gzip` in its answers, and a downstream that saw it compresses what it
//! posts); which coding a body came in. Sans-IO: bytes in, bytes out, the decoded size bounded
//! before it is reached. Calls `http::xpress`.

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

/// Whether Accept-Encoding names gzip without refusing it (q=0).
pub fn lists_gzip(headers: &http::HeaderMap) -> bool {
    lists(headers, "gzip")
}

/// Whether Accept-Encoding names `name` without refusing it (q=0).
fn lists(headers: &http::HeaderMap, name: &str) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut it = coding.split(';');
            let listed = it.next().unwrap_or("").trim();
            let refused = it.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            listed.eq_ignore_ascii_case(name) && !refused
        })
}

/// A content coding of a SOAP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    /// MS-WUSP §2.1.1: what Windows clients ask answers in.
    Xpress,
    Other,
}

impl Coding {
    /// The Content-Encoding of a body.
    pub fn of(headers: &http::HeaderMap) -> Coding {
        let Some(coding) = headers.get(http::header::CONTENT_ENCODING) else {
            return Coding::Identity;
        };
        let coding = coding.to_str().unwrap_or("?").trim();
        if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
            Coding::Identity
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            Coding::Gzip
        } else if coding.eq_ignore_ascii_case("xpress") {
            Coding::Xpress
        } else {
            Coding::Other
        }
    }

    /// The coding to answer in, from the caller's Accept-Encoding: xpress when it is offered
    /// (Windows clients offer only it, and MS-WUSP §2.1 says the server SHOULD use it), else
    /// gzip (what nodes offer), else none.
    pub fn offered(headers: &http::HeaderMap) -> Coding {
        if lists(headers, "xpress") {
            Coding::Xpress
        } else if lists(headers, "gzip") {
            Coding::Gzip
        } else {
            Coding::Identity
        }
    }

    /// Its name in Content-Encoding; `None` for none (and for one this node does not write).
    pub fn header(self) -> Option<http::HeaderValue> {
        match self {
            Coding::Gzip => Some(http::HeaderValue::from_static("gzip")),
            Coding::Xpress => Some(http::HeaderValue::from_static("xpress")),
            Coding::Identity | Coding::Other => None,
        }
    }
}

/// `bytes` in `coding`; `None` when it is none (or one this node does not write), or on the
/// impossible error of writing into memory: the caller sends the bytes as they are.
pub fn encode(coding: Coding, bytes: &[u8]) -> Option<Vec<u8>> {
    match coding {
        Coding::Gzip => gzip(bytes).ok(),
        Coding::Xpress => Some(super::xpress::compress(bytes)),
        Coding::Identity | Coding::Other => None,
    }
}

/// A body in `coding` decoded: at most `limit` bytes, past that an error of kind
/// `FileTooLarge`; not in that coding, `InvalidData`; a coding this node does not read,
/// `Unsupported`.
pub fn decode(coding: Coding, bytes: Vec<u8>, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    match coding {
        Coding::Identity => Ok(bytes),
        Coding::Gzip => gunzip(&bytes, limit),
        Coding::Xpress => super::xpress::decompress(&bytes, limit).map_err(|e| {
            let kind = match e {
                super::xpress::XpressError::TooLarge => ErrorKind::FileTooLarge,
                _ => ErrorKind::InvalidData,
            };
            Error::new(kind, e)
        }),
        Coding::Other => Err(Error::new(
            ErrorKind::Unsupported,
            "a content coding other than gzip, xpress or none",
        )),
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
            lists_gzip(&h)
        };
        assert!(listed("gzip"));
        assert!(listed("xpress, GZIP;q=0.5"));
        assert!(!listed("gzip;q=0"));
        assert!(!listed("xpress"));
    }

    #[test]
    fn answers_go_in_the_coding_offered_and_decode_back() {
        let offered = |value: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_str(value).unwrap(),
            );
            Coding::offered(&h)
        };
        assert_eq!(offered("xpress"), Coding::Xpress);
        assert_eq!(offered("gzip, XPRESS"), Coding::Xpress);
        assert_eq!(offered("xpress;q=0, gzip"), Coding::Gzip);
        assert_eq!(offered("br, deflate"), Coding::Identity);
        assert_eq!(Coding::offered(&http::HeaderMap::new()), Coding::Identity);

        let text = "<UpdateInfo><ID>1</ID></UpdateInfo>".repeat(1_000);
        for coding in [Coding::Gzip, Coding::Xpress] {
            let coded = encode(coding, text.as_bytes()).unwrap();
            assert!(coded.len() * 10 < text.len(), "{coding:?}");
            assert_eq!(
                decode(coding, coded.clone(), text.len()).unwrap(),
                text.as_bytes()
            );
            let over = decode(coding, coded, text.len() - 1).unwrap_err();
            assert_eq!(over.kind(), std::io::ErrorKind::FileTooLarge, "{coding:?}");
            let broken = decode(coding, b"not coded at all".to_vec(), 100).unwrap_err();
            assert_eq!(broken.kind(), std::io::ErrorKind::InvalidData, "{coding:?}");
        }
        assert_eq!(encode(Coding::Identity, b"x"), None);
        assert_eq!(
            decode(Coding::Other, b"x".to_vec(), 10).unwrap_err().kind(),
            std::io::ErrorKind::Unsupported
        );
    }
}
