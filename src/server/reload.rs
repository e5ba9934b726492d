//! Config reload: the config's source (a native file, or node-cache's Corefile and kube-dns
//! ConfigMap, see [`ConfigSource`]) is read every `interval`, and when what it reads changes
//! it is loaded and validated, and a new responder (new
//! zones, upstreams, cache policies, logging) replaces the old one behind the listeners.
//! Queries in progress finish with the responder they began with, so none is dropped. A
//! config that does not load keeps the running one, logged and counted.
//!
//! Polling rather than inotify: a ConfigMap update replaces a symlink two levels up from the
//! file, which inotify watches on the file miss, and one read every few seconds costs
//! nothing. Listen addresses, worker count, server limits, node setup, HTTP endpoints and
//! the pod watch are fixed at start: a change to them is logged as needing a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Current;
use super::delivery::Delivery;
use crate::config::Config;
use crate::config::source::ConfigSource;
use crate::observe::Metrics;
use crate::observe::labels::ReloadResult;

/// What a reload replaces: the responder behind the listeners, and the sample rate of their
/// query log (`log.query_sample`, which the listeners own).
pub(super) struct Replaced {
    pub(super) current: Current,
    pub(super) delivery: Arc<Delivery>,
}

pub(super) async fn watch(
    source: Arc<dyn ConfigSource>,
    interval: Duration,
    mut running: Config,
    Replaced { current, delivery }: Replaced,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    mut last: Option<Vec<u8>>,
) {
    let reloads = |result| metrics.config_reloads.get(result).inc();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // Unreadable for a moment (the file being replaced by hand): try at the next tick.
        let Some(read) = source.fingerprint() else {
            continue;
        };
        if last.as_deref() == Some(read.as_slice()) {
            continue;
        }
        last = Some(read);
        let path = source.describe();
        match source.load() {
            Ok(config) => {
                let fixed = [
                    ("listen", config.listen != running.listen),
                    ("workers", config.workers != running.workers),
                    ("server", config.server != running.server),
                    ("node", config.node != running.node),
                    ("metrics", config.metrics != running.metrics),
                    ("kubernetes", config.kubernetes != running.kubernetes),
                    ("log.level", config.log.level != running.log.level),
                ];
                let changed: Vec<&str> =
                    fixed.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
                if !changed.is_empty() {
                    warn!(
                        %path, keys = %changed.join(", "),
                        "config reloaded, but these keys take effect only after a restart"
                    );
                }
                let next = current.load().reloaded(&config);
                current.store(Arc::new(next));
                delivery.set_query_log(&config);
                reloads(ReloadResult::Success);
                info!(%path, zones = config.zones.len(), "config reloaded");
                running = config;
            }
            Err(err) => {
                reloads(ReloadResult::Failure);
                error!(%path, "config reload failed; still serving the previous config: {err:#}");
            }
        }
    }
}
