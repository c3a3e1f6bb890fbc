//! Who asked: what an access line says of a request's sender (its address, its user agent, an
//! id for the request), taken once by the listener and handed to whichever path answers.
//!
//! The id is also sent back as `X-Request-Id`, so a client's complaint can be matched with the
//! node's line. It is 16 hex digits: a random prefix per process, then a counter, so ids do not
//! repeat across restarts.
//! Calls nothing else in the crate.

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use http::HeaderValue;

/// The address a request came from, put in its extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// One request's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    pub fn next() -> RequestId {
        static PREFIX: OnceLock<u32> = OnceLock::new();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            let mut bytes = [0u8; 4];
            // Without randomness the ids are still unique within the process.
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
            u32::from_be_bytes(bytes)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        RequestId((u64::from(prefix) << 32) | u64::from(n))
    }

    pub fn header(self) -> HeaderValue {
        // 16 hex digits are always a valid header value.
        HeaderValue::from_str(&self.to_string()).unwrap_or(HeaderValue::from_static("-"))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What the access line says of who sent a request.
#[derive(Debug, Clone)]
pub struct Requester {
    pub id: RequestId,
    pub peer: Option<SocketAddr>,
    /// As sent (a header value is shared, not copied).
    pub user_agent: Option<HeaderValue>,
}

impl Requester {
    pub fn new(peer: Option<SocketAddr>, headers: &http::HeaderMap) -> Requester {
        Requester {
            id: RequestId::next(),
            peer,
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
        }
    }

    /// The peer's address, or "-".
    pub fn client(&self) -> String {
        self.peer.map_or_else(|| "-".to_owned(), |p| p.to_string())
    }

    /// The user agent as text (at most 200 characters; not UTF-8 → "?"), or "-".
    pub fn agent(&self) -> &str {
        match &self.user_agent {
            None => "-",
            Some(v) => {
                let text = v.to_str().unwrap_or("?");
                let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
                &text[..end]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_hex() {
        let (a, b) = (RequestId::next(), RequestId::next());
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 16);
        assert!(a.to_string().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn agent_is_bounded() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_str(&"x".repeat(1000)).unwrap(),
        );
        let r = Requester::new(None, &headers);
        assert_eq!(r.agent().len(), 200);
        assert_eq!(r.client(), "-");
        assert_eq!(Requester::new(None, &http::HeaderMap::new()).agent(), "-");
    }
}
