//! A zone's `pool:` section: how many connections and queries each of its upstreams may have,
//! and how long a query may wait for room (see [`crate::upstream::pool`]).
//!
//! Its keys, their defaults and meanings are in README.md, "Configuration reference" (the
//! one list, checked against this model both ways by `tests/config_docs.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Bounds on one zone's traffic to each of its upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub max_connections: usize,
    pub max_inflight: usize,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// 0 means unlimited.
    pub max_queries_per_connection: u64,
    /// 0 means connections are never retired for age.
    #[serde(with = "duration")]
    pub max_age: Duration,
    pub queue: QueueConfig,
    pub adaptive: bool,
    pub min_slots: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 8,
            max_inflight: 32,
            idle_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_queries_per_connection: 0,
            max_age: Duration::from_secs(60),
            queue: QueueConfig::default(),
            adaptive: true,
            min_slots: 16,
        }
    }
}

/// The FIFO in front of an upstream's slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// 0 answers at once whenever every slot is taken.
    pub capacity: usize,
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Queries one client may have waiting; its turn comes once per round of waiting clients.
    pub per_client: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 2048,
            timeout: Duration::from_secs(1),
            per_client: 64,
        }
    }
}

/// IDs are 16 bits: a connection cannot tell more queries apart than that.
const MAX_INFLIGHT_PER_CONNECTION: usize = 65_535;

impl PoolConfig {
    /// Queries one upstream may have outstanding at once, over all its connections (and over
    /// UDP, where the same bound applies without connections).
    pub fn slots(&self) -> usize {
        self.max_connections.saturating_mul(self.max_inflight)
    }

    /// Range checks; returns (key under `pool.`, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if self.max_inflight == 0 || self.max_inflight > MAX_INFLIGHT_PER_CONNECTION {
            return Err((
                "max_inflight",
                format!("must be between 1 and {MAX_INFLIGHT_PER_CONNECTION} (16-bit message IDs)"),
            ));
        }
        if self.queue.per_client == 0 {
            return Err(("queue.per_client", "must be at least 1".into()));
        }
        if self.min_slots == 0 {
            return Err(("min_slots", "must be at least 1".into()));
        }
        let durations = [
            ("idle_timeout", self.idle_timeout),
            ("connect_timeout", self.connect_timeout),
            ("queue.timeout", self.queue.timeout),
        ];
        for (key, value) in durations {
            if value.is_zero() {
                return Err((key, "must be above 0".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounded() {
        let pool = PoolConfig::default();
        assert_eq!(pool.validate(), Ok(()));
        assert_eq!(pool.slots(), 256);
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        type Change = fn(&mut PoolConfig);
        let cases: [(Change, &str); 6] = [
            (|p| p.queue.per_client = 0, "queue.per_client"),
            (|p| p.min_slots = 0, "min_slots"),
            (|p| p.max_connections = 0, "max_connections"),
            (|p| p.max_inflight = 70_000, "max_inflight"),
            (|p| p.idle_timeout = Duration::ZERO, "idle_timeout"),
            (|p| p.queue.timeout = Duration::ZERO, "queue.timeout"),
        ];
        for (change, key) in cases {
            let mut pool = PoolConfig::default();
            change(&mut pool);
            assert_eq!(pool.validate().map_err(|(k, _)| k), Err(key));
        }
    }
}
