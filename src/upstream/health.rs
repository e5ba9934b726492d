//! When an upstream is skipped: after `max_fails` consecutive failed exchanges (timeouts and
//! network errors; an answer of any rcode proves the server is alive), until a background
//! probe gets an answer again.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The health of one upstream.
#[derive(Debug, Default)]
pub struct Health {
    consecutive_failures: AtomicU32,
    down: AtomicBool,
}

/// What a recorded outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    CameUp,
}

impl Health {
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// An answer arrived: the upstream is alive.
    pub fn record_success(&self) -> Transition {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.down.swap(false, Ordering::Relaxed) {
            Transition::CameUp
        } else {
            Transition::None
        }
    }

    /// An exchange failed; with `max_fails` 0 an upstream is never skipped.
    pub fn record_failure(&self, max_fails: u32) -> Transition {
        if max_fails == 0 {
            return Transition::None;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= max_fails && !self.down.swap(true, Ordering::Relaxed) {
            Transition::WentDown
        } else {
            Transition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_max_fails_in_a_row_and_up_on_success() {
        let health = Health::default();
        assert_eq!(health.record_failure(2), Transition::None);
        assert_eq!(health.record_success(), Transition::None);
        assert_eq!(health.record_failure(2), Transition::None);
        assert_eq!(health.record_failure(2), Transition::WentDown);
        assert!(!health.is_up());
        assert_eq!(health.record_failure(2), Transition::None);
        assert_eq!(health.record_success(), Transition::CameUp);
        assert!(health.is_up());
    }

    #[test]
    fn max_fails_zero_never_skips() {
        let health = Health::default();
        for _ in 0..10 {
            assert_eq!(health.record_failure(0), Transition::None);
        }
        assert!(health.is_up());
    }
}
