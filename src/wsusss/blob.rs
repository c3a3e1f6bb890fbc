//! `XmlUpdateBlobCompressed` (MS-WSUSSS §3.1.4.6.3.6): how Microsoft WSUS sends an update
//! document of more than 5,120 bytes (<36>): base64 of a cabinet (MS-CAB) holding one file
//! whose folder is LZX-compressed with a 2 MB window. Sans-IO: the element's text in, the
//! document out, or why not.
//!
//! The cabinet and LZX decoders are the `cab` and `lzxd` crates; this module bounds what they
//! may produce and turns the bytes into text (UTF-8, or UTF-16 with its byte-order mark, as
//! `soap::utf8_document` reads them).

use std::io::{Cursor, Read as _};

/// What one compressed document may decompress to: as large as an update document may be.
const MAX_DOCUMENT: u64 = crate::catalog::update::DOCUMENT_LIMITS.max_bytes as u64;

/// The document an `XmlUpdateBlobCompressed` holds.
pub fn decompress(base64_text: &str) -> Result<String, String> {
    let cabinet = crate::catalog::base64_decode(base64_text).ok_or("not base64")?;
    document_of_cabinet(&cabinet)
}

/// The text of a cabinet's one document.
pub fn document_of_cabinet(cabinet: &[u8]) -> Result<String, String> {
    // A malformed archive is the upstream's fault, never a reason to stop this server: the
    // decoders are third-party code fed what the upstream sent.
    let bytes = std::panic::catch_unwind(|| extract(cabinet))
        .map_err(|_| "the cabinet decoder failed on it".to_owned())??;
    text(bytes)
}

/// The bytes of the cabinet's one file, at most [`MAX_DOCUMENT`].
fn extract(cabinet: &[u8]) -> Result<Vec<u8>, String> {
    let mut archive =
        cab::Cabinet::new(Cursor::new(cabinet)).map_err(|e| format!("not a cabinet: {e}"))?;
    let (name, size) = archive
        .folder_entries()
        .flat_map(|folder| folder.file_entries())
        .map(|file| (file.name().to_owned(), file.uncompressed_size()))
        .next()
        .ok_or("an empty cabinet")?;
    if u64::from(size) > MAX_DOCUMENT {
        return Err(format!(
            "a document of {size} bytes (at most {MAX_DOCUMENT})"
        ));
    }
    let mut out = Vec::with_capacity(size as usize);
    archive
        .read_file(&name)
        .map_err(|e| format!("cabinet file {name:?}: {e}"))?
        .take(MAX_DOCUMENT)
        .read_to_end(&mut out)
        .map_err(|e| format!("cabinet file {name:?}: {e}"))?;
    Ok(out)
}

/// A document's bytes as text: UTF-16 when it starts with its byte-order mark, else UTF-8
/// (a UTF-8 byte-order mark dropped).
fn text(bytes: Vec<u8>) -> Result<String, String> {
    let utf8 = crate::soap::utf8_document(bytes).map_err(|e| e.to_string())?;
    String::from_utf8(utf8).map_err(|_| "invalid UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::cabinet::lzx_cabinet;

    fn encoded(document: &[u8]) -> String {
        crate::catalog::base64_encode(&lzx_cabinet("blob", document))
    }

    #[test]
    fn documents_come_out_as_they_went_in() {
        // Over two 32 KiB LZX frames, with text outside ASCII.
        let document = format!(
            "<upd:Update>{}</upd:Update>",
            "<Title>Mise à jour 更新プログラム</Title>".repeat(2_000)
        );
        assert!(document.len() > 2 * 32_768);
        assert_eq!(decompress(&encoded(document.as_bytes())).unwrap(), document);
        // As WSUS may wrap it, and in UTF-16 with its mark.
        let wrapped: String = encoded(document.as_bytes())
            .as_bytes()
            .chunks(76)
            .map(|l| format!("{}\r\n", std::str::from_utf8(l).unwrap()))
            .collect();
        assert_eq!(decompress(&wrapped).unwrap(), document);
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend(document.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(decompress(&encoded(&utf16)).unwrap(), document);
        // An odd length (the LZX block's padding byte).
        assert_eq!(decompress(&encoded(b"<a/>x")).unwrap(), "<a/>x");
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let good = lzx_cabinet("blob", "<upd:Update/>".repeat(5_000).as_bytes());
        assert!(decompress("not base64 at all!").is_err());
        assert!(decompress(&crate::catalog::base64_encode(b"MSCF")).is_err());
        for cut in [10, 40, 70, good.len() / 2, good.len() - 1] {
            let text = crate::catalog::base64_encode(&good[..cut]);
            assert!(decompress(&text).is_err(), "cut at {cut}");
        }
        // Every byte of the headers and the first block flipped in turn: an error or a
        // document, never a panic or an unbounded allocation.
        for i in 0..120.min(good.len()) {
            let mut bad = good.clone();
            bad[i] ^= 0x5A;
            let _ = decompress(&crate::catalog::base64_encode(&bad));
        }
    }
}
