//! Observability: Prometheus metrics (and, later, the HTTP endpoints that serve them).

pub mod metrics;

pub use metrics::Metrics;
