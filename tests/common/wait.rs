//! Waiting for a condition: the tests' one polling loop. A check is asked at once, then after
//! short pauses (10 ms, doubling up to 100 ms) until it says done or the time is up, and what it
//! saw last goes into the failure. A wait is for readiness or a condition to hold, never a
//! sleep standing in for one.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// The longest pause between two checks.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// When to ask a check again: after the next pause, or never once the deadline has passed (the
/// last pause ends at the deadline, so the last check is made then).
struct Schedule {
    deadline: Instant,
    pause: Duration,
}

impl Schedule {
    fn new(timeout: Duration) -> Schedule {
        Schedule {
            deadline: Instant::now() + timeout,
            pause: Duration::from_millis(10),
        }
    }

    /// The pause before the next check; `None` when the time is up.
    fn next(&mut self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Some(pause)
    }
}

/// Ask `check` until it returns `Ok`, for at most `timeout`: `Ok` with its value, or `Err` with
/// what it observed last once the time is up (for a caller that judges a timeout itself).
pub async fn within<T, O>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, O>,
) -> Result<T, O> {
    let mut schedule = Schedule::new(timeout);
    loop {
        let seen = check().await;
        if seen.is_ok() {
            return seen;
        }
        match schedule.next() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return seen,
        }
    }
}

/// Ask `check` until it returns `Ok`, for at most `timeout`, and return its value; panic naming
/// `what` was awaited and what the check observed last (its `Err`) when the time is up.
pub async fn until<T, O: Display>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> Result<T, O>,
) -> T {
    match within(timeout, check).await {
        Ok(value) => value,
        Err(last) => panic!("waited {timeout:?} for {what}; last seen: {last}"),
    }
}

/// [`until`] for a caller that is not async (the check blocks this thread, as do the pauses).
pub fn until_blocking<T, O: Display>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, O>,
) -> T {
    let mut schedule = Schedule::new(timeout);
    loop {
        let last = match check() {
            Ok(value) => return value,
            Err(last) => last,
        };
        match schedule.next() {
            Some(pause) => std::thread::sleep(pause),
            None => panic!("waited {timeout:?} for {what}; last seen: {last}"),
        }
    }
}
