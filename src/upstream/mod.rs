//! Upstreams: routing a question to its zone, choosing and failing over between the zone's
//! upstream servers, and the exchanges themselves.
//!
//! `router` picks the zone (longest suffix), `group` orders a zone's upstreams by policy and
//! health and fails over within the zone's deadline, `pool` bounds what goes to each upstream
//! address (`admission`: slots and queue) and keeps its TCP connections, `udp` performs one
//! UDP exchange, `health` decides when an upstream is skipped, and `loop_check` finds zones
//! whose upstreams send our queries back to us.

pub mod admission;
pub mod group;
pub mod health;
pub mod loop_check;
pub mod pool;
pub mod router;
pub mod udp;

use std::time::Duration;

use thiserror::Error;

// The exchanges hand back the wire's accepted answer (`super::Answer` in the submodules).
use crate::wire::answer::{Answer, AnswerError};

pub use group::UpstreamGroup;
pub use router::ZoneRouter;

/// Why one exchange with one upstream produced no answer.
#[derive(Debug, Error)]
pub enum ExchangeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("network error: {0}")]
    Network(#[from] std::io::Error),
    #[error("connection closed before the answer")]
    Closed,
    #[error("answer larger than the UDP buffer")]
    Truncated,
    #[error("{0}")]
    Malformed(AnswerError),
}

impl ExchangeError {
    /// The metric label for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            ExchangeError::Timeout(_) => "timeout",
            ExchangeError::Network(_) => "network",
            ExchangeError::Closed => "closed",
            ExchangeError::Truncated => "truncated",
            ExchangeError::Malformed(_) => "malformed",
        }
    }
}
