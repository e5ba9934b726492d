//! Upstreams: routing a question to its zone, choosing and failing over between the zone's
//! upstream servers, and the exchanges themselves.
//!
//! `router` picks the zone (longest suffix), `group` orders a zone's upstreams by policy and
//! health and fails over within the zone's deadline, `pool` bounds what goes to each upstream
//! address (`admission`: slots and queue) and keeps its TCP connections, `udp` performs one
//! UDP exchange, `health` decides when an upstream is skipped, and `loop_check` finds zones
//! whose upstreams send our queries back to us. The bounds are failure 1 of docs/design.md;
//! the UDP exchange's fresh port and ID per query are failure 4's.
//!
//! It stands on [`crate::cache`] (a route carries its zone's cache policy), [`crate::tasks`]
//! (pooled connections and health probes are owned tasks), [`crate::config`],
//! [`crate::observe`] and [`crate::wire`] (its exchanges hand back a
//! [`wire::answer::Answer`](crate::wire::answer::Answer)).
//!
//! Config keys (defaults in [`crate::config`] and [`crate::config::pool`]):
//!
//! | key | default | read by |
//! |---|---|---|
//! | `zones[].name` | required | [`router`]: longest suffix wins, `.` is the default route |
//! | `zones[].upstreams` | required | [`group`]: `IP`, `IP:PORT`, `[IPv6]:PORT`, or `resolv.conf` (with `resolv_conf`) |
//! | `zones[].transport` | `udp` | [`group`]: `udp`, `tcp`, `prefer_udp` or `tls` (over [`pool`]'s connections) |
//! | `zones[].tls.*` | see [`crate::config::tls`] | [`pool`]: the TLS client of a `tls` zone's connections |
//! | `zones[].policy` | `random` | [`group`]: `random`, `round_robin` or `sequential` |
//! | `zones[].timeout`, `zones[].deadline` | `2s`, `5s` | [`group`]: one upstream's wait, the whole query's |
//! | `zones[].max_fails`, `zones[].health_check` | `3`, `500ms` | [`health`]: when an upstream is skipped, how often it is probed then |
//! | `zones[].unanswered_ttl` | `2s` | [`group`]: a question that timed out everywhere is not asked again for this long |
//! | `zones[].pool.*` | see [`crate::config::pool`] | [`pool`] and [`admission`]: connections, in-flight queries, queue capacity and timeout |
//! | `server.loop_check` | `true` | [`loop_check`]: the start-up probe per zone |
//!
//! Metrics: `nodelocaldns_upstream_failures_total{zone,upstream,reason}`,
//! `nodelocaldns_upstream_mismatched_total{upstream}`,
//! `nodelocaldns_upstream_servfail_total{zone,upstream,rcode}`,
//! `nodelocaldns_upstream_healthy{zone,upstream}`, `nodelocaldns_unanswered_cached_total{zone}`,
//! `nodelocaldns_loop_detected{zone}`, `nodelocaldns_upstream_pools`; per upstream address the
//! queue, pool and `coredns_forward_*` families of [`crate::observe::upstream`]
//! (`nodelocaldns_upstream_inflight`, `nodelocaldns_queue_*`, `nodelocaldns_pool_*`,
//! `nodelocaldns_upstream_retries_total`, `coredns_forward_*`, `coredns_proxy_*`).

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
