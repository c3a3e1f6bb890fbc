//! Bearer tokens: the admin API's writers and the downstream servers a node serves. Tokens are
//! read from a file (one per line) and kept as SHA-256 digests, compared as such, so neither
//! memory nor comparison time tells anything of a token. Calls `config` (reading the file).

use std::path::Path;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::error::{Error, Kind, Result};
use crate::http::{Body, text};

/// The tokens a node accepts for one purpose. They can be replaced while the node runs
/// (SIGHUP re-reads the file).
pub struct Tokens(std::sync::RwLock<Vec<[u8; 32]>>);

impl Tokens {
    /// The tokens of the file `key` names; `None`: no file, no token.
    pub fn from_file(key: &str, path: Option<&Path>) -> Result<Tokens> {
        Ok(Tokens(std::sync::RwLock::new(read(key, path)?)))
    }

    /// Replace the tokens with those of the file `key` names now; on error the old ones stay.
    /// Returns how many are accepted after.
    pub fn reload(&self, key: &str, path: Option<&Path>) -> Result<usize> {
        let tokens = read(key, path)?;
        let count = tokens.len();
        *crate::lock::write(&self.0) = tokens;
        Ok(count)
    }

    fn digests(&self) -> std::sync::RwLockReadGuard<'_, Vec<[u8; 32]>> {
        crate::lock::read(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.digests().is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests().len()
    }

    /// Whether `headers` carry `Authorization: Bearer <an accepted token>`.
    pub fn accepts(&self, headers: &http::HeaderMap) -> bool {
        self.presented(headers).is_some()
    }

    /// The digest of the accepted token `headers` carry as `Authorization: Bearer`, if any.
    pub fn presented(&self, headers: &http::HeaderMap) -> Option<[u8; 32]> {
        headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| self.accepted(t))
    }

    /// The digest of `token` when it is accepted.
    pub fn accepted(&self, token: &str) -> Option<[u8; 32]> {
        let digest = sha256(token.trim().as_bytes());
        self.digests().contains(&digest).then_some(digest)
    }

    /// Whether a token whose digest begins with `prefix` is still accepted (a browser session
    /// keeps that much of its token's digest).
    pub fn holds(&self, prefix: &[u8]) -> bool {
        !prefix.is_empty() && self.digests().iter().any(|d| d.starts_with(prefix))
    }
}

/// How a token is named where it must be told apart from others (the audit log): the first 8
/// hex digits of its SHA-256, which say nothing of the token.
pub fn fingerprint(digest: &[u8]) -> String {
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn read(key: &str, path: Option<&Path>) -> Result<Vec<[u8; 32]>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let tokens = crate::config::read_tokens(key, path)
        .map_err(|p| Error::internal(Kind::Config, p.to_string()))?;
    Ok(tokens.iter().map(|t| sha256(t.as_bytes())).collect())
}

/// 401 with the challenge of `realm`.
pub fn unauthorized(realm: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(realm));
    r
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}
