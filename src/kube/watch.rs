//! The watch of this node's pods: kube-runtime's `watcher` (list, then watch from the list's
//! resourceVersion; re-list on 410 Gone; reconnect with backoff after timeouts, errors and API
//! server restarts) feeding a [`PodTable`] that this task alone owns, and publishing to the
//! [`PodIndex`] the request path reads.
//!
//! Between `Init` and `InitDone` (a first list, or a re-list after 410) pods are buffered in a
//! fresh table and swapped in whole at `InitDone`: a half-listed node never shows as "no pod".
//! While the API is unreachable the last published index stays in use; queries never wait for
//! the watch.

use std::sync::Arc;
use std::time::Duration;

use ::kube::Client;
use ::kube::api::Api;
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::{WatchStreamExt, watcher as watch_pods};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use prometheus::{Gauge, IntCounter, IntGauge};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::KubeError;
use super::index::{IndexStats, PodIndex, PodPhase, PodRecord, PodTable};
use crate::config::KubernetesConfig;
use crate::observe::Metrics;
use crate::observe::labels::{PerValue, label_enum};

/// Builds the API client: from `kubeconfig` when set, else the in-cluster service account.
pub async fn client(config: &KubernetesConfig) -> Result<Client, KubeError> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = ::kube::config::Kubeconfig::read_from(path).map_err(|error| {
                KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    error,
                }
            })?;
            ::kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|error| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    error,
                })?
        }
        None => ::kube::Config::incluster().map_err(KubeError::InCluster)?,
    };
    Client::try_from(kube_config).map_err(KubeError::Client)
}

/// The running watch; dropping it (or [`PodWatch::stop`]) ends the task.
pub struct PodWatch {
    task: JoinHandle<()>,
}

impl PodWatch {
    /// Starts watching the pods of `node` with `client`, publishing into `index`.
    pub fn start(client: Client, node: &str, index: Arc<PodIndex>, metrics: &Metrics) -> PodWatch {
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let gauges = WatchMetrics::of(metrics);
        let node = node.to_string();
        let task = tokio::spawn(async move {
            info!(%node, "watching this node's pods for autopath");
            let events = watch_pods(api, config).default_backoff();
            run(events, index, gauges).await;
        });
        PodWatch { task }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

label_enum! {
    /// Why the pod watch restarted: the `reason` label of
    /// `nodelocaldns_kube_watch_restarts_total`.
    enum RestartReason: "reason" {
        /// Reconnect with backoff after an error.
        Error => "error",
        /// A full re-list, e.g. after 410 Gone.
        Relist => "relist",
    }
}

struct WatchMetrics {
    pods: IntGauge,
    ambiguous: IntGauge,
    synced: IntGauge,
    restarts: PerValue<RestartReason, IntCounter>,
    since_event: Gauge,
}

impl WatchMetrics {
    fn of(metrics: &Metrics) -> WatchMetrics {
        WatchMetrics {
            pods: metrics.kube_pods_indexed.clone(),
            ambiguous: metrics.kube_ambiguous_ips.clone(),
            synced: metrics.kube_synced.clone(),
            restarts: PerValue::resolve(&metrics.kube_watch_restarts, &[]),
            since_event: metrics.kube_seconds_since_event.clone(),
        }
    }

    fn publish(&self, stats: IndexStats) {
        self.pods.set(stats.pods as i64);
        self.ambiguous.set(stats.ambiguous_ips as i64);
    }
}

async fn run<S>(events: S, index: Arc<PodIndex>, metrics: WatchMetrics)
where
    S: futures::Stream<Item = Result<Event<Pod>, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    let mut table = PodTable::new();
    let mut listing: Option<PodTable> = None;
    let mut lists = 0u64;
    let mut last_event = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tick.tick() => {
                metrics.since_event.set(last_event.elapsed().as_secs_f64());
                continue;
            }
        };
        let Some(event) = event else {
            warn!("pod watch ended");
            return;
        };
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                // The watcher recovers on the next poll (after the backoff): re-watch from the
                // last resourceVersion, or re-list after 410 Gone.
                metrics.restarts.get(RestartReason::Error).inc();
                warn!(%err, "pod watch failed; retrying");
                continue;
            }
        };
        last_event = Instant::now();
        metrics.since_event.set(0.0);
        match event {
            Event::Init => {
                if lists > 0 {
                    metrics.restarts.get(RestartReason::Relist).inc();
                }
                lists += 1;
                listing = Some(PodTable::new());
            }
            Event::InitApply(pod) => {
                if let (Some(listing), Some(record)) = (listing.as_mut(), record_of(&pod)) {
                    listing.apply(record);
                }
            }
            Event::InitDone => {
                if let Some(listed) = listing.take() {
                    table = listed;
                }
                let stats = index.replace(&table);
                metrics.publish(stats);
                metrics.synced.set(1);
                info!(
                    pods = table.len(),
                    indexed = stats.pods,
                    ambiguous_ips = stats.ambiguous_ips,
                    "pod index synced"
                );
            }
            Event::Apply(pod) => {
                let Some(record) = record_of(&pod) else {
                    continue;
                };
                debug!(namespace = %record.namespace, name = %record.name, phase = ?record.phase, "pod changed");
                let touched = table.apply(record);
                metrics.publish(index.update(&table, &touched));
            }
            Event::Delete(pod) => {
                let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name)
                else {
                    continue;
                };
                debug!(%namespace, %name, "pod deleted");
                let touched = table.delete(namespace, name);
                metrics.publish(index.update(&table, &touched));
            }
        }
    }
}

/// What we keep of a pod; `None` for an object without namespace or name (not a real pod).
/// IPs that do not parse are skipped: they come from the API server, not from us.
pub fn record_of(pod: &Pod) -> Option<PodRecord> {
    let namespace = pod.metadata.namespace.clone()?;
    let name = pod.metadata.name.clone()?;
    let status = pod.status.as_ref();
    let mut ips: Vec<std::net::IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|p| p.ip.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    Some(PodRecord {
        namespace,
        name,
        ips,
        phase: PodPhase::parse(status.and_then(|s| s.phase.as_deref())),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}
