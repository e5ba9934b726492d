//! Observability: Prometheus metrics, the HTTP endpoints that serve them (`/metrics`,
//! `/health`, `/ready`, `/debug/*`), and readiness.

pub mod debug;
pub mod http;
pub mod metrics;
pub mod querylog;
pub mod ratelimit;
pub mod readiness;
pub mod requests;
pub mod upstream;

pub use http::{Endpoints, HttpServer};
pub use metrics::Metrics;
pub use readiness::Readiness;
