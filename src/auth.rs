//! Bearer tokens: the admin API's writers and the downstream servers a node serves. Tokens are
//! read from a file (one per line) and kept as SHA-256 digests, compared as such, so neither
//! memory nor comparison time tells anything of a token. Calls `config` (reading the file).

use std::path::Path;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::content::response::{Body, text};
use crate::error::{Error, Kind, Result};

/// The tokens a node accepts for one purpose.
pub struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    /// The tokens of the file `key` names; `None`: no file, no token.
    pub fn from_file(key: &str, path: Option<&Path>) -> Result<Tokens> {
        let Some(path) = path else {
            return Ok(Tokens(Vec::new()));
        };
        let tokens = crate::config::read_tokens(key, path)
            .map_err(|p| Error::internal(Kind::Config, p.to_string()))?;
        Ok(Tokens(
            tokens.iter().map(|t| sha256(t.as_bytes())).collect(),
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `headers` carry `Authorization: Bearer <an accepted token>`.
    pub fn accepts(&self, headers: &http::HeaderMap) -> bool {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| sha256(t.trim().as_bytes()));
        presented.is_some_and(|p| self.0.contains(&p))
    }
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
