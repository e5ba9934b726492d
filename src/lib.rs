//! nodelocal-dns: a caching DNS forwarder for Kubernetes nodes.
//!
//! The request path (DESIGN.md): `server` (listeners) -> `responder` (validate, route, and later
//! view and cache) -> `upstream` (zone groups, exchanges). `wire` reads and patches DNS bytes;
//! `config` is the validated YAML model; `observe` holds the metrics.

pub mod cache;
pub mod config;
pub mod instance;
pub mod kube;
pub mod node;
pub mod observe;
pub mod responder;
pub mod server;
pub mod tasks;
pub mod upstream;
pub mod wire;

/// The transport a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}
