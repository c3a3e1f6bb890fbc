//! The shared WAN budget: one token bucket for every fetch of a node, so `wan.max_bandwidth`
//! caps the sum of all upstream transfers, not each one.
//!
//! Bytes are charged after they arrive and the fetch then sleeps off any debt; since the fetch
//! does not read the socket while it sleeps, TCP (or QUIC) flow control slows the sender down to
//! the budget. The bucket holds at most `BURST` of credit so an idle link cannot save up a
//! large burst.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds of credit an idle link may accumulate.
const BURST: f64 = 0.1;

pub struct Bandwidth {
    /// Bytes per second; invariant > 0.
    rate: f64,
    state: Mutex<State>,
}

struct State {
    /// Available bytes; negative = debt the next caller must wait off.
    tokens: f64,
    last: Instant,
}

impl Bandwidth {
    pub fn new(bytes_per_second: u64) -> Bandwidth {
        let rate = bytes_per_second.max(1) as f64;
        Bandwidth {
            rate,
            state: Mutex::new(State {
                tokens: rate * BURST,
                last: Instant::now(),
            }),
        }
    }

    /// Charge `bytes` and wait until the budget covers them.
    pub async fn consume(&self, bytes: u64) {
        let wait = self.charge(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Sans-IO core: charge at `now`, return how long the caller must wait.
    fn charge(&self, bytes: u64, now: Instant) -> Duration {
        let mut state = crate::lock::lock(&self.state);
        let elapsed = now.saturating_duration_since(state.last).as_secs_f64();
        state.last = now;
        state.tokens = (state.tokens + elapsed * self.rate).min(self.rate * BURST);
        state.tokens -= bytes as f64;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_waited_off_at_the_rate() {
        let b = Bandwidth::new(1_000_000);
        let t0 = Instant::now();
        // The initial burst (100 kB) is free.
        assert_eq!(b.charge(100_000, t0), Duration::ZERO);
        // 1 MB more at 1 MB/s = 1 s of debt.
        let wait = b.charge(1_000_000, t0);
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        // After that second has passed, the debt is paid and more bytes cost their own time.
        let wait = b.charge(500_000, t0 + Duration::from_secs(1));
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn idle_credit_is_capped() {
        let b = Bandwidth::new(1_000_000);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3600);
        // An hour idle still gives only the burst.
        assert!(b.charge(200_000, later) > Duration::ZERO);
    }
}
