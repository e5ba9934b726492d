//! The operator's side of the process, on the top floor: the HTTP listener (`/metrics`,
//! `/health`, `/ready`, `/debug/*`), what `/ready` answers, and the debug reports that read
//! the responder's cache, pools and the pod index.
//!
//! It sits above everything it shows: it imports the responder, the cache, `kube` and the
//! metrics registry of [`crate::observe`], and nothing below imports it. The metrics
//! themselves are counted on the ground floor ([`crate::observe`]), by the modules that own
//! the events.
//!
//! Config keys ([`crate::config::MetricsConfig`]):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `metrics.enabled` | `true` | serve `metrics.listen` at all |
//! | `metrics.listen` | `127.0.0.1:9253` | `/metrics`, `/health`, `/ready` (and `/debug/*`) |
//! | `metrics.health_listen` | none | a second listener with `/health` and `/ready` only |
//! | `metrics.debug` | `false` | the `/debug/*` endpoints of [`debug`] |
//! | `metrics.debug_remote` | `false` | allow `debug` on a non-loopback `listen` |
//! | `kubernetes.wait_for_sync` | see [`crate::kube`] | `/ready` also waits for the first pod list |
//!
//! Metrics: none of its own. `/metrics` renders [`crate::observe::Metrics`]; `/ready` reads
//! `nodelocaldns_upstream_healthy` (see [`readiness`]).

pub mod debug;
pub mod http;
pub mod readiness;

pub use debug::Inspector;
pub use http::{Endpoints, HttpServer};
pub use readiness::Readiness;
