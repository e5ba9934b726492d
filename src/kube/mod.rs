//! Kubernetes: a watch of this node's pods, the IP -> Running pod index built from it, and
//! autopath on top of that index (docs/design.md, failures 3 and 5).
//!
//! ```text
//! watch (kube-runtime watcher, spec.nodeName=NODE) -> PodTable (every pod, owned by the task)
//!        -> PodIndex (IP -> exactly one Running pod | not running | ambiguous; read per query)
//! responder.begin: Autopath::decide(client IP, qname) -> namespace view, or the plain view
//! responder.finish: Autopath::walk (each expansion through the plain cache) -> CNAME answer
//! ```
//!
//! Nothing here can block or fail a query: before the first list, or while the API server is
//! unreachable, queries are answered without autopath (first) or with the last index (after).
//!
//! Config (see [`crate::config`]): `kubernetes.{enabled, node_name, kubeconfig,
//! cluster_domain, wait_for_sync}` and `zones[].autopath`. RBAC: `list` and `watch` on pods,
//! cluster-wide (the field selector limits it to this node).
//!
//! Fallback ([`endpoints`], failure 6): [`EndpointWatch`] publishes the upstream Service's ready
//! kube-dns endpoints. RBAC: `list`, `watch` on `discovery.k8s.io` `endpointslices` in its namespace.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `nodelocaldns_autopath_applied_total` | | queries answered through autopath |
//! | `nodelocaldns_autopath_skipped_total` | `reason` | `no_pod`, `not_running`, `ambiguous`, `no_match`, `unsynced` |
//! | `nodelocaldns_kube_pods_indexed` | | Running, non-hostNetwork pods in the index |
//! | `nodelocaldns_kube_ambiguous_ips` | | IPs claimed by two or more Running pods |
//! | `nodelocaldns_kube_synced` | | 1 once the first list is indexed |
//! | `nodelocaldns_kube_watch_restarts_total` | `reason` | `error`, `relist` |
//! | `nodelocaldns_kube_seconds_since_last_event` | | staleness of the watch |

pub mod autopath;
pub mod endpoints;
pub mod index;
pub mod watch;

use thiserror::Error;

pub use autopath::Autopath;
pub use endpoints::{EndpointWatch, ServiceEndpoints};
pub use index::{ClientMatch, ClientNamespace, PodIndex};
pub use watch::PodWatch;

/// Why the pod watch could not be set up.
#[derive(Debug, Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {error}")]
    Kubeconfig {
        path: String,
        error: ::kube::config::KubeconfigError,
    },
    #[error("in-cluster config (service account): {0}")]
    InCluster(::kube::config::InClusterError),
    #[error("kubernetes client: {0}")]
    Client(::kube::Error),
}
