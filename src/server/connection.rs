//! What one accepted connection may hold and for how long, like nginx's
//! `client_header_timeout`, `keepalive_timeout` and `send_timeout`: each connection's bytes are
//! watched ([`Watched`]), and a watchdog ([`Activity::expired`]) ends a connection whose first
//! request head is not complete within `listen.header_timeout` of accept (a silent socket, a
//! slow TLS handshake, a slowloris head) or on which nothing moved for `listen.idle_timeout`
//! while no request was being answered (an idle keep-alive connection, a client that stopped
//! reading). hyper's own header timer bounds the heads of later requests. Also: the process's
//! descriptor limit, raised at start.
//!
//! Calls nothing of the node: the router counts requests in and out with [`InFlight`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::ConnectionLimits;

/// What the watchdog knows of one connection. Times are milliseconds since `opened`.
pub(crate) struct Activity {
    opened: Instant,
    /// The last byte read or written.
    last: AtomicU64,
    /// Requests whose response head is not ready yet: the node, not the peer, is the one
    /// working.
    in_flight: AtomicUsize,
    /// A whole request head has arrived.
    started: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// A request head has arrived: counted until the guard drops with its response head.
    pub(crate) fn request(self: &Arc<Activity>) -> InFlight {
        self.started.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Resolves with the reason once the connection has outlived its limits; never before.
    pub(crate) async fn expired(&self, limits: &ConnectionLimits) -> &'static str {
        let header = limits.header_timeout.as_millis() as u64;
        let idle = limits.idle_timeout.as_millis() as u64;
        loop {
            let now = self.now();
            if !self.started.load(Ordering::Relaxed) && now >= header {
                return "header_timeout";
            }
            let last = self.last.load(Ordering::Relaxed);
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && now >= last + idle {
                return "idle_timeout";
            }
            // Sleep until the nearest deadline that could pass; a busy connection is looked at
            // again an idle period later.
            let mut next = if busy { now + idle } else { last + idle };
            if !self.started.load(Ordering::Relaxed) {
                next = next.min(header);
            }
            let wait = next.saturating_sub(now).max(10);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// One request being answered, until its response head is ready (or it is dropped).
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A transport whose reads and writes are noted in its [`Activity`].
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Below this many descriptors a node with its default limits can run out under load.
const FEW_DESCRIPTORS: u64 = 4096;

/// Raise this process's soft limit on open descriptors to its hard limit (each connection,
/// partial object and cached file holds one; the common default of 1,024 is a few hundred
/// clients). Returns the soft limit in effect after; warns when that is low.
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, prlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let mut soft = current;
    if current < maximum {
        let wanted = Rlimit {
            current: maximum,
            maximum,
        };
        match prlimit(None, Resource::Nofile, wanted) {
            Ok(_) => soft = maximum,
            Err(e) => tracing::warn!(error = %e, "raising the descriptor limit failed"),
        }
    }
    if let Some(n) = soft.filter(|n| *n < FEW_DESCRIPTORS) {
        tracing::warn!(
            limit = n,
            "few file descriptors: each connection and open cache file takes one; raise the \
             hard limit (LimitNOFILE= in the systemd unit, --ulimit nofile= for a container)"
        );
    }
    // None: unlimited.
    Some(soft.unwrap_or(u64::MAX))
}
