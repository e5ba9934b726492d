//! The `/debug/*` endpoints (`metrics.debug: true`, loopback only unless
//! `metrics.debug_remote`): the questions field reports asked, answered by one curl.
//!
//! | endpoint | shows |
//! |---|---|
//! | `/debug/pool` | each zone's upstreams: healthy or skipped, failures by reason |

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::Metrics;
use crate::config::Config;

/// What the debug endpoints read.
pub struct Inspector {
    metrics: Arc<Metrics>,
    /// Each zone's label and its upstreams' labels, as the metrics name them.
    zones: Vec<(String, Vec<String>)>,
}

impl Inspector {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Inspector {
        let zones = config
            .zones
            .iter()
            .map(|zone| {
                let upstreams = zone
                    .upstream_addrs()
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                (zone.name.0.to_dotted(), upstreams)
            })
            .collect();
        Inspector { metrics, zones }
    }

    /// `/debug/pool`: per zone, per upstream, whether it is used and how it failed. Upstream
    /// connection pools and queues will report here too: extend this function.
    pub fn pool_report(&self) -> String {
        // Read from a scrape: asking the vectors for absent label values would create them.
        let families = self.metrics.registry.gather();
        let mut out = String::new();
        for (zone, upstreams) in &self.zones {
            let _ = writeln!(out, "zone {zone}");
            for upstream in upstreams {
                let labels = [zone.as_str(), upstream.as_str()];
                let healthy = self
                    .metrics
                    .upstream_healthy
                    .with_label_values(&labels)
                    .get();
                let state = if healthy > 0 {
                    "healthy"
                } else {
                    "skipped (down)"
                };
                let _ = write!(out, "  upstream {upstream}: {state}");
                let failures = series(
                    &families,
                    "nodelocaldns_upstream_failures_total",
                    &[("zone", zone), ("upstream", upstream)],
                    "reason",
                );
                for (reason, count) in failures {
                    let _ = write!(out, ", {reason} failures {count}");
                }
                out.push('\n');
            }
        }
        out
    }
}

/// The samples of counter `name` whose labels include `matching`, by the value of `by`.
fn series(
    families: &[prometheus::proto::MetricFamily],
    name: &str,
    matching: &[(&str, &str)],
    by: &str,
) -> Vec<(String, u64)> {
    let Some(family) = families.iter().find(|f| f.name() == name) else {
        return Vec::new();
    };
    family
        .get_metric()
        .iter()
        .filter_map(|metric| {
            let labels = metric.get_label();
            let value = |key: &str| labels.iter().find(|l| l.name() == key).map(|l| l.value());
            let matches = matching.iter().all(|(k, v)| value(k) == Some(*v));
            let count = metric.get_counter().get_value() as u64;
            (matches && count > 0).then(|| (value(by).unwrap_or("").to_string(), count))
        })
        .collect()
}

/// The routes of the debug endpoints.
pub(super) fn routes(inspector: Arc<Inspector>) -> Router {
    Router::new()
        .route("/debug/pool", get(pool))
        .with_state(inspector)
}

async fn pool(State(inspector): State<Arc<Inspector>>) -> String {
    inspector.pool_report()
}
