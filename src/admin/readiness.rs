//! What `/ready` answers: whether this instance should receive DNS traffic now.
//!
//! Ready means every condition holds: the DNS listeners are bound (set by whoever starts them),
//! the config is loaded (it is, or nothing would run), the first pod list is in when
//! `kubernetes.wait_for_sync` asks for it, and every zone has at least one upstream that is
//! not skipped after `max_fails` failures. Conditions are closures read at each request, so
//! the state they report is always the live one; nothing here is on the query path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::IntGauge;

use crate::config::Config;
use crate::kube::PodIndex;
use crate::observe::Metrics;
use crate::observe::labels;

type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The readiness conditions of one server instance.
pub struct Readiness {
    listening: AtomicBool,
    conditions: Vec<Check>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Readiness {
    /// Not ready until [`Readiness::set_listening`]; no other condition yet.
    pub fn new() -> Readiness {
        Readiness {
            listening: AtomicBool::new(false),
            conditions: Vec::new(),
        }
    }

    /// The conditions `config` implies: one healthy upstream per zone, read from
    /// `nodelocaldns_upstream_healthy` (call it after the responder, whose upstream groups set
    /// those gauges, is built), and the first list of `pods` when `kubernetes.wait_for_sync`.
    pub fn for_config(
        config: &Config,
        metrics: &Metrics,
        pods: Option<&Arc<PodIndex>>,
    ) -> Readiness {
        let mut readiness = Readiness::new();
        if config.kubernetes.wait_for_sync
            && let Some(pods) = pods
        {
            let pods = pods.clone();
            readiness.require(move || match pods.is_synced() {
                true => Ok(()),
                false => Err("the first list of this node's pods is not in yet \
                              (kubernetes.wait_for_sync)"
                    .into()),
            });
        }
        for zone in &config.zones {
            let name = labels::zone(&zone.name.0);
            let upstreams: Vec<(String, IntGauge)> = zone
                .upstream_addrs()
                .into_iter()
                .map(|addr| {
                    let label = labels::upstream(addr);
                    let gauge = metrics.upstream_healthy.with_label_values(&[&name, &label]);
                    (label, gauge)
                })
                .collect();
            readiness.require(move || {
                if upstreams.iter().any(|(_, healthy)| healthy.get() > 0) {
                    return Ok(());
                }
                let down: Vec<&str> = upstreams.iter().map(|(addr, _)| addr.as_str()).collect();
                Err(format!(
                    "zone {name}: no healthy upstream ({} skipped after max_fails)",
                    down.join(", ")
                ))
            });
        }
        readiness
    }

    /// Adds a condition: `Err(reason)` while it does not hold. Call before sharing.
    pub fn require(&mut self, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        self.conditions.push(Box::new(check));
    }

    /// Whether the DNS listeners are bound and serving.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// `Ok` when ready, else every condition that fails, in words.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut failing = Vec::new();
        if !self.listening.load(Ordering::Acquire) {
            failing.push("DNS listeners are not bound yet".to_string());
        }
        failing.extend(self.conditions.iter().filter_map(|check| check().err()));
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_listening_and_every_zone_has_a_healthy_upstream() {
        let config = Config::from_yaml(
            "zones:\n  - name: .\n    upstreams: [10.0.0.1, 10.0.0.2]\n  - name: cluster.local\n    upstreams: [10.0.0.3]\n",
            "t",
        )
        .unwrap();
        let metrics = Metrics::new();
        let healthy = |zone: &str, upstream: &str| {
            metrics
                .upstream_healthy
                .with_label_values(&[zone, upstream])
        };
        for (zone, upstream) in [
            (".", "10.0.0.1:53"),
            (".", "10.0.0.2:53"),
            ("cluster.local.", "10.0.0.3:53"),
        ] {
            healthy(zone, upstream).set(1);
        }
        let mut readiness = Readiness::for_config(&config, &metrics, None);
        let synced = Arc::new(AtomicBool::new(false));
        let flag = synced.clone();
        readiness.require(move || match flag.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err("pods not synced".into()),
        });

        let failing = readiness.check().unwrap_err();
        assert_eq!(
            failing,
            ["DNS listeners are not bound yet", "pods not synced"]
        );
        readiness.set_listening(true);
        synced.store(true, Ordering::Relaxed);
        assert_eq!(readiness.check(), Ok(()));

        healthy(".", "10.0.0.1:53").set(0);
        assert_eq!(readiness.check(), Ok(()), "one upstream of . is still up");
        healthy("cluster.local.", "10.0.0.3:53").set(0);
        let failing = readiness.check().unwrap_err();
        assert_eq!(
            failing,
            ["zone cluster.local.: no healthy upstream (10.0.0.3:53 skipped after max_fails)"]
        );
    }
}
