//! The one error type of a node.
//!
//! Every failure says which side caused it ([`Side`]: the client, the upstream, or this node) and
//! whether the same operation may succeed if retried. Context is added where the error happens,
//! as a short phrase ("reading slice 3 of 2f88…"), so the log line alone tells the story.
//! This module calls nothing else in the crate.

use std::fmt;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request was wrong (bad path, bad header, unsatisfiable).
    Client,
    /// The upstream server failed, refused, or sent something wrong.
    Upstream,
    /// This node failed (disk, configuration, a bug).
    Internal,
}

/// What went wrong, as far as callers need to branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed (maps to 400).
    BadRequest,
    /// Nothing exists under that name here nor upstream (404).
    NotFound,
    /// The upstream could not be reached or did not answer in time (504).
    Unavailable,
    /// The upstream answered with an error or with something unusable (502).
    BadUpstream,
    /// What arrived does not hash to the name it was fetched under.
    Digest,
    /// The disk is full or over its configured limit.
    DiskFull,
    /// Any other I/O failure.
    Io,
    /// Configuration or usage problem.
    Config,
}

/// The error type of the crate.
#[derive(Debug)]
pub struct Error {
    side: Side,
    kind: Kind,
    retryable: bool,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(side: Side, kind: Kind, message: impl Into<String>) -> Self {
        let retryable = matches!(kind, Kind::Unavailable | Kind::BadUpstream | Kind::Digest);
        Error {
            side,
            kind,
            retryable,
            message: message.into(),
            source: None,
        }
    }

    pub fn client(kind: Kind, message: impl Into<String>) -> Self {
        Error::new(Side::Client, kind, message)
    }

    pub fn upstream(kind: Kind, message: impl Into<String>) -> Self {
        Error::new(Side::Upstream, kind, message)
    }

    pub fn internal(kind: Kind, message: impl Into<String>) -> Self {
        Error::new(Side::Internal, kind, message)
    }

    /// An I/O failure of this node, with what it was doing.
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let kind = if is_disk_full(&err) {
            Kind::DiskFull
        } else {
            Kind::Io
        };
        Error::internal(kind, context).with_source(err)
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Prefix the message with what the caller was doing.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An operator's mistake (a port in use, an unreadable file) is theirs to fix: it is named
        // as such, never as an internal failure.
        let side = match (self.kind, self.side) {
            (Kind::Config, _) => "configuration",
            (_, Side::Client) => "client",
            (_, Side::Upstream) => "upstream",
            (_, Side::Internal) => "internal",
        };
        write!(f, "{side} error: {}", self.message)?;
        // The whole chain: the cause that matters (a certificate rejected, a connection
        // refused) often sits several wrappers deep. Wrappers that only repeat their cause
        // are skipped.
        let mut said = String::new();
        let mut next = self
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static));
        while let Some(err) = next {
            let text = err.to_string();
            if !text.is_empty() && !said.contains(&text) {
                write!(f, ": {text}")?;
                said.push_str(&text);
            }
            next = err.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// ENOSPC and EDQUOT: the disk (or the user's quota) is full.
pub fn is_disk_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_side_and_context() {
        let e =
            Error::upstream(Kind::Unavailable, "connection refused").context("fetching slice 3");
        assert_eq!(
            e.to_string(),
            "upstream error: fetching slice 3: connection refused"
        );
        assert!(e.is_retryable());
        assert!(!Error::client(Kind::BadRequest, "x").is_retryable());
    }

    #[test]
    fn an_operator_mistake_is_a_configuration_error() {
        let e = Error::internal(Kind::Config, "listen.http 0.0.0.0:8530: cannot bind");
        assert_eq!(
            e.to_string(),
            "configuration error: listen.http 0.0.0.0:8530: cannot bind"
        );
    }

    #[test]
    fn enospc_is_disk_full() {
        let err = std::io::Error::from_raw_os_error(28);
        assert_eq!(Error::io("writing", err).kind(), Kind::DiskFull);
    }
}
