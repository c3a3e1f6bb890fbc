//! Test bytes and their names: deterministic payloads, their SHA-1 and the WSUS content path
//! that names them.

use bytes::Bytes;
use sha1::{Digest as _, Sha1};
use wsus_edge::content::path::{ContentPath, Digest};
use wsus_edge::simulate::SplitMix;

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Bytes {
    let mut buf = vec![0u8; len];
    SplitMix(seed).fill(&mut buf);
    Bytes::from(buf)
}

pub fn sha1(bytes: &[u8]) -> Digest {
    Digest(Sha1::digest(bytes).into())
}

/// The WSUS URL path of some bytes.
pub fn content_path(bytes: &[u8], ext: &str) -> String {
    ContentPath {
        digest: sha1(bytes),
        ext: ext.to_owned(),
    }
    .url_path()
}
