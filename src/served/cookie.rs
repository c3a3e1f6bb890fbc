//! The cookies of the client protocol: the authorization cookie SimpleAuth hands out and the
//! client cookie GetCookie issues. Both are one fixed, small struct sealed with an AEAD
//! (ChaCha20-Poly1305, key in `data_dir/cookie.key`), so the server keeps no per-client session
//! state and never decodes anything but this struct, and only after the tag verified: a
//! tampered cookie, or one sealed by another server (another key), does not open at all.
//!
//! Layout (before sealing, little-endian): version u8, kind u8, key id u8, server id u128,
//! issued i64, expires i64, config change i64, anchor i64, flags u8, group count u8 + u128 each,
//! client id (u8 length + bytes), protocol version (u8 length + bytes). Sealed: 12-byte random
//! nonce, then ciphertext and tag; base64 on the wire.

use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::catalog::Guid;

const VERSION: u8 = 1;
/// Which key sealed a cookie (for rotation; there is one key today).
const KEY_ID: u8 = 1;
pub const MAX_GROUPS: usize = 16;
const MAX_TEXT: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SimpleAuth's AuthorizationCookie.CookieData.
    Authorization = 1,
    /// The client cookie's EncryptedData.
    Client = 2,
    /// DssAuth's AuthorizationCookie.CookieData, held by a downstream server (MS-WSUSSS).
    DownstreamAuthorization = 3,
    /// The server-server Cookie's EncryptedData.
    Downstream = 4,
    /// An administrator's browser session on the admin listener: `client_id` the name given
    /// at sign-in, `groups[0]` the first 16 bytes of the SHA-256 of the token signed in with.
    AdminSession = 5,
}

/// What a cookie says of its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub kind: Kind,
    pub server_id: Guid,
    /// Seconds since the epoch.
    pub issued: i64,
    pub expires: i64,
    /// The configuration's LastChange when the client last had it.
    pub config_change: i64,
    /// The highest deployment change time the client has been sent.
    pub anchor: i64,
    pub groups: Vec<Guid>,
    /// The client's own id (SusClientId).
    pub client_id: String,
    /// The client protocol version it announced in GetCookie ("2.90").
    pub protocol: String,
}

/// Why a cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not base64, not ours, tampered, or of the wrong kind.
    Invalid,
}

pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    /// Read the key from `data_dir/cookie.key`, creating it (32 random bytes, mode 0600) the
    /// first time.
    pub fn open(data_dir: &Path) -> std::io::Result<Sealer> {
        let path = data_dir.join("cookie.key");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| std::io::Error::other("no randomness for the cookie key"))?;
                let tmp = data_dir.join("cookie.key.tmp");
                {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)?;
                    f.write_all(&key)?;
                    f.sync_all()?;
                }
                std::fs::rename(&tmp, &path)?;
                key.to_vec()
            }
            Err(e) => return Err(e),
        };
        Sealer::from_key(&bytes)
            .ok_or_else(|| std::io::Error::other(format!("{}: not a 32-byte key", path.display())))
    }

    pub fn from_key(bytes: &[u8]) -> Option<Sealer> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
        Some(Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    pub fn seal(&self, claims: &Claims) -> Vec<u8> {
        let mut plain = Vec::with_capacity(128);
        plain.extend_from_slice(&[VERSION, claims.kind as u8, KEY_ID]);
        plain.extend_from_slice(&claims.server_id.0.to_le_bytes());
        for v in [
            claims.issued,
            claims.expires,
            claims.config_change,
            claims.anchor,
        ] {
            plain.extend_from_slice(&v.to_le_bytes());
        }
        plain.push(0);
        let groups = &claims.groups[..claims.groups.len().min(MAX_GROUPS)];
        plain.push(groups.len() as u8);
        for g in groups {
            plain.extend_from_slice(&g.0.to_le_bytes());
        }
        for text in [&claims.client_id, &claims.protocol] {
            let t = &text.as_bytes()[..text.len().min(MAX_TEXT)];
            plain.push(t.len() as u8);
            plain.extend_from_slice(t);
        }
        let mut nonce = [0u8; NONCE_LEN];
        // A failing system RNG leaves a zero nonce; the cookie still seals, only uniqueness
        // suffers, and the OS RNG does not fail on Linux after boot.
        let _ = self.rng.fill(&mut nonce);
        let mut sealed = plain;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&[KEY_ID]),
                &mut sealed,
            )
            .map(|t| t.as_ref().to_vec())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out.extend_from_slice(&tag);
        out
    }

    /// Open a cookie of `kind`. Expiry is the caller's to judge (GetCookie renews expired
    /// cookies; every other operation refuses them).
    pub fn open_cookie(&self, sealed: &[u8], kind: Kind) -> Result<Claims, Refused> {
        if sealed.len() < NONCE_LEN + 16 || sealed.len() > 2048 {
            return Err(Refused::Invalid);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Refused::Invalid)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(&[KEY_ID]), &mut buf)
            .map_err(|_| Refused::Invalid)?;
        let claims = decode(plain).ok_or(Refused::Invalid)?;
        if claims.kind != kind {
            return Err(Refused::Invalid);
        }
        Ok(claims)
    }
}

/// Reads the fixed layout front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn guid(&mut self) -> Option<Guid> {
        Some(Guid(u128::from_le_bytes(self.take(16)?.try_into().ok()?)))
    }

    fn text(&mut self) -> Option<String> {
        let n = usize::from(self.byte()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// The fixed layout back into claims; `None` on any inconsistency (the tag verified, so this
/// only guards against our own older formats).
fn decode(bytes: &[u8]) -> Option<Claims> {
    let mut c = Cursor(bytes);
    let (version, kind, key_id) = (c.byte()?, c.byte()?, c.byte()?);
    if version != VERSION || key_id != KEY_ID {
        return None;
    }
    let kind = match kind {
        1 => Kind::Authorization,
        2 => Kind::Client,
        3 => Kind::DownstreamAuthorization,
        4 => Kind::Downstream,
        5 => Kind::AdminSession,
        _ => return None,
    };
    let server_id = c.guid()?;
    let (issued, expires, config_change, anchor) = (c.i64()?, c.i64()?, c.i64()?, c.i64()?);
    let _flags = c.byte()?;
    let count = usize::from(c.byte()?);
    if count > MAX_GROUPS {
        return None;
    }
    let groups = (0..count).map(|_| c.guid()).collect::<Option<Vec<_>>>()?;
    let client_id = c.text()?;
    let protocol = c.text()?;
    c.0.is_empty().then_some(Claims {
        kind,
        server_id,
        issued,
        expires,
        config_change,
        anchor,
        groups,
        client_id,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            kind: Kind::Client,
            server_id: Guid(7),
            issued: 1_800_000_000,
            expires: 1_800_003_600,
            config_change: 1_799_000_000,
            anchor: 1_799_500_000,
            groups: vec![crate::catalog::ALL_COMPUTERS, Guid(42)],
            client_id: "e1da06a3-5601-43c9-bac3-52d5db701494".into(),
            protocol: "2.90".into(),
        }
    }

    #[test]
    fn a_cookie_opens_only_with_its_key_kind_and_bytes() {
        let sealer = Sealer::from_key(&[3u8; 32]).unwrap();
        let sealed = sealer.seal(&claims());
        assert_eq!(sealer.open_cookie(&sealed, Kind::Client), Ok(claims()));
        assert_eq!(
            sealer.open_cookie(&sealed, Kind::Authorization),
            Err(Refused::Invalid)
        );
        let other = Sealer::from_key(&[4u8; 32]).unwrap();
        assert_eq!(
            other.open_cookie(&sealed, Kind::Client),
            Err(Refused::Invalid)
        );
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert_eq!(
                sealer.open_cookie(&tampered, Kind::Client),
                Err(Refused::Invalid),
                "byte {i}"
            );
        }
        assert_eq!(
            sealer.open_cookie(b"short", Kind::Client),
            Err(Refused::Invalid)
        );
        // Two seals of the same claims differ (fresh nonce).
        assert_ne!(sealer.seal(&claims()), sealed);
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::open(dir.path()).unwrap();
        let sealed = a.seal(&claims());
        let b = Sealer::open(dir.path()).unwrap();
        assert_eq!(b.open_cookie(&sealed, Kind::Client), Ok(claims()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("cookie.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
