//! Rate-limited logging for per-event errors: a failure that repeats per packet (a receive
//! error, an upstream timing out under load) must not turn the log into the outage. Each call
//! site owns a [`LogLimiter`]: at most `burst` lines per `interval`, and the next line that
//! gets through says how many were suppressed in between.
//!
//! ```ignore
//! static RECV_ERRORS: LogLimiter = LogLimiter::new(10, Duration::from_secs(60));
//! if let Some(suppressed) = RECV_ERRORS.allow() {
//!     warn!(%err, suppressed, "UDP receive failed");
//! }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket for one log call site. Only the error path touches it.
pub struct LogLimiter {
    burst: u32,
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    /// Start of the current interval; `None` before the first line.
    since: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most `burst` lines per `interval`.
    pub const fn new(burst: u32, interval: Duration) -> LogLimiter {
        LogLimiter {
            burst,
            interval,
            state: Mutex::new(State {
                since: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(lines suppressed since the last one logged)` when this line may be logged.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = state
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= self.interval);
        if expired {
            state.since = Some(now);
            state.logged = 0;
        }
        if state.logged >= self.burst {
            state.suppressed += 1;
            return None;
        }
        state.logged += 1;
        Some(std::mem::take(&mut state.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_interval_then_the_count_of_what_was_suppressed() {
        let limiter = LogLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow_at(t0), Some(0));
        assert_eq!(limiter.allow_at(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.allow_at(t0 + Duration::from_secs(9)), None);
        }
        assert_eq!(limiter.allow_at(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(limiter.allow_at(t0 + Duration::from_secs(11)), Some(0));
        assert_eq!(limiter.allow_at(t0 + Duration::from_secs(12)), None);
    }
}
