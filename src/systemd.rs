//! The service manager's view of a node (sd_notify(3)): `READY=1` once the node serves,
//! `RELOADING=1` … `READY=1` around a SIGHUP, `STOPPING=1` when it stops, `STATUS=` lines that
//! `systemctl status` shows, and `WATCHDOG=1` pings when the unit sets `WatchdogSec=`.
//!
//! Without `NOTIFY_SOCKET` (a node not started by systemd, a test) every call does nothing. The
//! sd-notify crate reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` itself: the protocol defines them as
//! the process's environment. A failed notification is logged and otherwise ignored: a node that
//! serves must not stop because its supervisor's socket went away.
//! Calls nothing else in the crate.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Every listener is bound and the catalog is loaded.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) begins. systemd 253 and later want the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The node stops: no new connections; requests in flight get their grace.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How often to ping the watchdog: half of `WatchdogSec=`, as sd_watchdog_enabled(3) advises;
/// None when the unit has no watchdog.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Ping the watchdog every `period` until the task is dropped. It runs on the node's runtime, so
/// a runtime that stops making progress stops the pings and systemd restarts the node.
pub async fn watchdog(period: Duration) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}
