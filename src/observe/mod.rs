//! Observability, the ground floor every other module stands on: the metrics registry and its
//! handles ([`Metrics`]), the label values as types ([`labels`]), CoreDNS's per-query request accounting ([`requests`]), the
//! per-upstream pool and queue metrics ([`upstream`]), the sampled query log ([`querylog`])
//! and rate-limited log lines ([`ratelimit`]).
//!
//! It imports nothing of the forwarder but the wire format (to name rcodes and qtypes) and
//! [`crate::Proto`]; the HTTP endpoints that serve these numbers are in [`crate::admin`], on
//! the top floor.
//!
//! Config keys: `log.query_sample` ([`querylog`]). Metrics: every one; [`metrics`] lists them,
//! and docs/metrics.md is the reference.

pub mod labels;
pub mod metrics;
pub mod querylog;
pub mod ratelimit;
pub mod requests;
pub mod upstream;

pub use metrics::Metrics;
