//! nodelocal-dns: a caching DNS forwarder for Kubernetes nodes.
//!
//! The request path (docs/design.md): `server` (listeners) -> `responder` (validate, route,
//! view, cache) -> `upstream` (zone groups, exchanges). `wire` reads and patches DNS bytes;
//! `config` is the validated YAML model; `observe` holds the metrics and logs every module
//! counts in; `admin` serves them over HTTP with readiness and the debug reports; `instance`
//! starts and stops the parts in order; `tasks` owns the background tasks.
//!
//! Floors, each importing only from the ones below (docs/design.md, "Where things live"):
//! `instance` > `admin` > `server` > `responder` > `upstream`, `kube` > `cache`, `node`,
//! `hosts`, `template`, `dns64`, `rewrite`, `tasks` > `config` > `wire`, `observe`.

pub mod admin;
pub mod cache;
pub mod config;
pub mod dns64;
pub mod hosts;
pub mod instance;
pub mod kube;
pub mod node;
pub mod nodecache;
pub mod observe;
pub mod responder;
pub mod rewrite;
pub mod server;
pub mod tasks;
pub mod template;
pub mod upstream;
pub mod wire;

/// The transport a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}
