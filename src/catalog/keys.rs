//! Decryption keys of encrypted payload files (Windows feature updates): what a client gets in
//! GetExtendedUpdateInfo2's FileDecryptionData, what an upstream gives a downstream server in
//! GetUpdateDecryptionData, and the text file an administrator imports them from. Keys are
//! opaque bytes to a server: it passes them on, it never decrypts.
//!
//! Sans-IO. May call: `soap::xsd` (base64).

use std::collections::HashMap;
use std::sync::Arc;

use super::{CatalogError, base64_decode, base64_encode};

/// The file a catalog folder may hold beside `updates/`: one key per line, `#` comments.
pub const KEY_FILE: &str = "decryption-keys.txt";

/// The longest key taken from a file or an upstream, in bytes. Keys are AES keys (16 or 32
/// bytes) in practice; the bound keeps what an upstream can make a node hold small.
pub const MAX_KEY_BYTES: usize = 1024;

/// A revision (UpdateID, RevisionNumber) and the SHA-1s of its files whose keys a node lacks.
pub type KeysWanted = ((super::Guid, u32), Vec<[u8; 20]>);

/// A file's SHA-1 and its key, as imported or synced.
pub type FileKey = ([u8; 20], Vec<u8>);

/// File SHA-1 → the key of that file.
pub type Keys = HashMap<[u8; 20], Arc<[u8]>>;

/// The files of a revision that need a key: those marked `IsEncrypted`, or, when none is
/// marked but the revision says its keys come by GetUpdateDecryptionData (`secured`), all of
/// them. `files` are (SHA-1, marked encrypted).
pub fn needing_keys(secured: bool, files: &[([u8; 20], bool)]) -> Vec<[u8; 20]> {
    let marked = files.iter().any(|(_, encrypted)| *encrypted);
    files
        .iter()
        .filter(|(_, encrypted)| *encrypted || (secured && !marked))
        .map(|(sha1, _)| *sha1)
        .collect()
}

/// A key as it arrives (base64), or `None` when it is empty, not base64 or too long.
pub fn decode_key(text: &str) -> Option<Vec<u8>> {
    base64_decode(text.trim()).filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES)
}

/// A file's SHA-1 as 40 hex digits (the content store's names) or base64 (the protocol's).
fn decode_digest(text: &str) -> Option<[u8; 20]> {
    let text = text.trim();
    let bytes = if text.len() == 40 {
        hex::decode(text).ok()
    } else {
        base64_decode(text)
    };
    bytes.and_then(|b| <[u8; 20]>::try_from(b).ok())
}

/// Read a key file: lines of `<file SHA-1> <key>`, the digest in hex or base64 and the key in
/// base64, separated by white space; blank lines and lines starting with `#` are skipped. A
/// bad line is an error naming it, and nothing of the file is taken.
pub fn parse_key_file(text: &str) -> Result<Vec<FileKey>, CatalogError> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| CatalogError::Invalid(format!("{KEY_FILE} line {}: {what}", n + 1));
        let mut fields = line.split_whitespace();
        let (Some(digest), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected two fields: the file's SHA-1 and its key"));
        };
        let digest = decode_digest(digest)
            .ok_or_else(|| bad("the file's SHA-1 is neither 40 hex digits nor base64"))?;
        let key = decode_key(key).ok_or_else(|| {
            bad(&format!(
                "the key is not base64 of 1 to {MAX_KEY_BYTES} bytes"
            ))
        })?;
        keys.push((digest, key));
    }
    Ok(keys)
}

/// The text [`parse_key_file`] reads.
pub fn format_key_file(keys: &[FileKey]) -> String {
    let mut out = String::from("# file SHA-1 (hex)   decryption key (base64)\n");
    for (digest, key) in keys {
        out.push_str(&hex::encode(digest));
        out.push(' ');
        out.push_str(&base64_encode(key));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_read_back_and_bad_lines_are_named() {
        let keys = vec![([7u8; 20], vec![1u8; 32]), ([9u8; 20], vec![2u8; 16])];
        let text = format_key_file(&keys);
        assert_eq!(parse_key_file(&text).unwrap(), keys);
        // Base64 digests, blank lines and comments.
        let text = format!(
            "\n# comment\n{} {}\n",
            base64_encode(&[7u8; 20]),
            base64_encode(&[1u8; 32])
        );
        assert_eq!(parse_key_file(&text).unwrap(), keys[..1]);
        for (text, line, what) in [
            ("00 AAAA\n", "line 1", "SHA-1"),
            (
                &format!("# x\n{} !!\n", hex::encode([1u8; 20])),
                "line 2",
                "key",
            ),
            (
                &format!("{}\n", hex::encode([1u8; 20])),
                "line 1",
                "two fields",
            ),
            (
                &format!(
                    "{} {}\n",
                    hex::encode([1u8; 20]),
                    base64_encode(&[0u8; 1025])
                ),
                "line 1",
                "key",
            ),
        ] {
            let e = parse_key_file(text).unwrap_err().to_string();
            assert!(e.contains(line) && e.contains(what), "{e}");
        }
        assert_eq!(decode_key(""), None);
    }

    #[test]
    fn the_files_that_need_keys() {
        let (a, b) = ([1u8; 20], [2u8; 20]);
        assert_eq!(needing_keys(false, &[(a, false), (b, true)]), [b]);
        assert_eq!(needing_keys(true, &[(a, false), (b, true)]), [b]);
        assert_eq!(needing_keys(true, &[(a, false), (b, false)]), [a, b]);
        assert!(needing_keys(false, &[(a, false)]).is_empty());
    }
}
