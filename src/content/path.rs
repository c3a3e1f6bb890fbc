//! The allow-list of `/Content` paths, sans-IO.
//!
//! WSUS names every payload file by its SHA-1: `/Content/<XX>/<SHA1HEX>.<ext>`, where `XX` is the
//! last byte of the digest in hex (see `../shared/protocol/samples/native-wua-capture/06-*`).
//! Anything that is not exactly that shape never reaches the disk: a path that is merely not a
//! content name is 404, a path that tries to be clever (traversal, encoded separators, NUL,
//! overlong) is 400. Matching is case-insensitive, as IIS is.

use std::fmt;

/// The longest request path we look at; WSUS content paths are ~60 bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// Longest accepted file extension (WSUS uses cab, exe, msu, psf, esd, msi, msix, appx, …).
const MAX_EXT_BYTES: usize = 16;

/// A SHA-1 digest: the identity of a content object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 20]);

impl Digest {
    /// Parse 40 hex digits, either case.
    pub fn from_hex(hex_digits: &str) -> Option<Digest> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(hex_digits, &mut out).ok()?;
        Some(Digest(out))
    }

    /// Lower-case hex, the form used for file names on disk.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Upper-case hex, the form WSUS uses in URLs.
    pub fn to_hex_upper(&self) -> String {
        hex::encode_upper(self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

/// A valid content path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPath {
    pub digest: Digest,
    /// The extension as the client wrote it (without the dot); it only selects the Content-Type.
    pub ext: String,
}

/// Why a path under `/Content` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Hostile or malformed: traversal, encoded separators or NUL, backslashes, overlong. → 400
    Malformed,
    /// Well-formed but not a content name (wrong shape, non-hex digest, directory mismatch). → 404
    NotContent,
}

impl ContentPath {
    /// Parse a request path (without the query string). The caller has already decided that the
    /// path starts with `/Content/` case-insensitively.
    pub fn parse(path: &str) -> Result<ContentPath, PathError> {
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::Malformed);
        }
        let bytes = path.as_bytes();
        if bytes
            .iter()
            .any(|&b| b == 0 || b == b'\\' || b < 0x20 || b == 0x7f)
        {
            return Err(PathError::Malformed);
        }
        // Percent-encoding has no place in a digest name; encoded separators, dots and NUL are
        // the usual traversal tricks, so any escape at all is refused outright.
        if path.contains('%') {
            return Err(PathError::Malformed);
        }
        if path.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(PathError::Malformed);
        }
        let rest = strip_prefix_ignore_case(path, "/content/").ok_or(PathError::NotContent)?;
        let (dir, file) = rest.split_once('/').ok_or(PathError::NotContent)?;
        if file.contains('/') || dir.len() != 2 {
            return Err(PathError::NotContent);
        }
        let (name, ext) = file.split_once('.').ok_or(PathError::NotContent)?;
        if name.len() != 40
            || ext.is_empty()
            || ext.len() > MAX_EXT_BYTES
            || !ext.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(PathError::NotContent);
        }
        let digest = Digest::from_hex(name).ok_or(PathError::NotContent)?;
        // WSUS shards by the last byte of the digest.
        if !name[38..].eq_ignore_ascii_case(dir) {
            return Err(PathError::NotContent);
        }
        Ok(ContentPath {
            digest,
            ext: ext.to_owned(),
        })
    }

    /// The canonical URL path, as WSUS writes it (upper-case hex).
    pub fn url_path(&self) -> String {
        let hex = self.digest.to_hex_upper();
        format!("/Content/{}/{}.{}", &hex[38..], hex, self.ext)
    }

    /// The Content-Type IIS sends for this extension.
    pub fn content_type(&self) -> &'static str {
        content_type_for(&self.ext)
    }
}

/// IIS's MIME map for the extensions Windows Update uses; everything else is opaque bytes.
pub fn content_type_for(ext: &str) -> &'static str {
    match ext.to_ascii_lowercase().as_str() {
        "cab" => "application/vnd.ms-cab-compressed",
        "xml" => "text/xml",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// True when `path` is under `/Content/` in any case: such requests are ours, valid or not.
pub fn is_content_path(path: &str) -> bool {
    strip_prefix_ignore_case(path, "/content/").is_some() || path.eq_ignore_ascii_case("/content")
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "/Content/AB/2F88DF42DA48AA980FB748D13BAA2DE49CD154AB.exe";

    #[test]
    fn real_capture_path_parses() {
        let p = ContentPath::parse(REAL).unwrap();
        assert_eq!(
            p.digest.to_hex(),
            "2f88df42da48aa980fb748d13baa2de49cd154ab"
        );
        assert_eq!(p.ext, "exe");
        assert_eq!(p.url_path(), REAL);
    }

    #[test]
    fn case_insensitive() {
        let lower = REAL.to_ascii_lowercase();
        assert_eq!(
            ContentPath::parse(&lower).unwrap().digest,
            ContentPath::parse(REAL).unwrap().digest
        );
        assert!(
            ContentPath::parse("/CONTENT/ab/2F88DF42DA48AA980FB748D13BAA2DE49CD154AB.CAB").is_ok()
        );
    }

    #[test]
    fn not_content_is_404() {
        for p in [
            "/Content/",
            "/Content/AB",
            "/Content/AB/",
            "/Content/foo",
            "/Content/AC/2F88DF42DA48AA980FB748D13BAA2DE49CD154AB.exe", // wrong shard
            "/Content/AB/2F88DF42DA48AA980FB748D13BAA2DE49CD154AB",     // no ext
            "/Content/AB/ZF88DF42DA48AA980FB748D13BAA2DE49CD154AB.exe", // not hex
            "/Content/AB/2F88DF42DA48AA980FB748D13BAA2DE49CD154.exe",   // short
            "/Content/AB/2F88DF42DA48AA980FB748D13BAA2DE49CD154AB.e-e",
            "/Content/AB/x/2F88DF42DA48AA980FB748D13BAA2DE49CD154AB.exe",
        ] {
            assert_eq!(ContentPath::parse(p), Err(PathError::NotContent), "{p}");
        }
    }

    #[test]
    fn hostile_is_400() {
        let long = format!("/Content/AB/{}.exe", "A".repeat(300));
        for p in [
            "/Content/../etc/passwd",
            "/Content/AB/../../x",
            "/Content/./AB",
            "/Content/AB%2F2F88DF42DA48AA980FB748D13BAA2DE49CD154AB.exe",
            "/Content/AB/2F88DF42DA48AA980FB748D13BAA2DE49CD154AB.exe%00",
            "/Content/AB\\2F88DF42DA48AA980FB748D13BAA2DE49CD154AB.exe",
            "/Content/%2e%2e/x",
            "/Content/AB/\u{0}x",
            long.as_str(),
        ] {
            assert_eq!(ContentPath::parse(p), Err(PathError::Malformed), "{p}");
        }
    }

    #[test]
    fn prefix_detection() {
        assert!(is_content_path("/content/x"));
        assert!(is_content_path("/Content"));
        assert!(!is_content_path("/Contentx/"));
        assert!(!is_content_path("/ClientWebService/client.asmx"));
    }
}
