//! Every counter the forwarder keeps, in one Prometheus registry per server instance (so tests
//! can run several servers in one process and read each one's numbers). The per-query request
//! metrics (`coredns_dns_*`) are in [`super::requests`], the per-upstream pool, queue and
//! `coredns_forward_*` ones in [`super::upstream`]; docs/metrics.md lists them all.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `nodelocaldns_dropped_total` | `reason` | packets not answered: `short_header`, `response` (QR=1), `send_error` |
//! | `nodelocaldns_rejected_total` | `reason` | queries refused by a bound: `inflight` (SERVFAIL), `shutdown` (SERVFAIL: `shutdown.drain` ran out at exit), `tcp_connections` (connection closed) |
//! | `nodelocaldns_upstream_failures_total` | `zone`, `upstream`, `reason` | failed exchanges: `timeout`, `network`, `closed`, `malformed` |
//! | `nodelocaldns_upstream_mismatched_total` | `upstream` | answers ignored for a wrong ID, question or source address (spoofing or late) |
//! | `nodelocaldns_upstream_servfail_total` | `zone`, `upstream`, `rcode` | SERVFAIL/REFUSED answers that caused a failover |
//! | `nodelocaldns_upstream_healthy` | `zone`, `upstream` | 1 while the upstream is used, 0 while skipped after `max_fails` |
//! | `nodelocaldns_unanswered_cached_total` | `zone` | queries not sent upstream because the same question timed out on every upstream less than `unanswered_ttl` ago |
//! | `nodelocaldns_config_reloads_total` | `result` | config file changes applied (`success`) or rejected (`failure`: the previous config keeps serving) |
//! | `nodelocaldns_loop_detected` | `zone` | 1 when a loop probe came back through the zone's upstreams (the zone is answered REFUSED) |
//! | `coredns_cache_entries` | `server`, `type` | entries held, `success` or `denial` (fresh or kept for serve-stale) |
//! | `coredns_cache_hits_total` | `server`, `type` | queries answered from a fresh entry |
//! | `coredns_cache_misses_total` | `server` | queries that needed upstreams (including stale-only lookups) |
//! | `coredns_cache_prefetch_total` | `server` | background refreshes of popular entries |
//! | `nodelocaldns_cache_prefetch_deferred_total` | `server` | refreshes not started because `MAX_REFRESHING` were running; a later hit on the entry tries again |
//! | `coredns_cache_served_stale_total` | `server` | answers from expired entries because upstreams failed |
//! | `coredns_cache_evictions_total` | `server`, `type` | entries dropped for capacity |
//! | `nodelocaldns_cache_split_answers_total` | `zone` | names whose A and AAAA disagreed (NXDOMAIN vs NOERROR) twice: not cached |
//! | `coredns_dns64_requests_translated_total` | `server` | AAAA queries answered with records synthesized from A records (`zones[].dns64`) |
//! | `nodelocaldns_autopath_applied_total` | | queries answered through autopath (cache hits included) |
//! | `nodelocaldns_autopath_skipped_total` | `reason` | queries in an autopath zone forwarded as asked: `no_pod`, `not_running`, `ambiguous`, `no_match` (qname not under the pod's `NS.svc.DOMAIN`), `unsynced` (no pod list yet) |
//! | `nodelocaldns_kube_pods_indexed` | | Running, non-hostNetwork pods of this node whose IPs autopath matches |
//! | `nodelocaldns_kube_ambiguous_ips` | | IPs claimed by two or more Running pods (no autopath for them) |
//! | `nodelocaldns_kube_synced` | | 1 once the first full list of pods is in the index |
//! | `nodelocaldns_kube_watch_restarts_total` | `reason` | pod watch restarts: `error` (reconnect with backoff), `relist` (full re-list, e.g. after 410 Gone) |
//! | `nodelocaldns_kube_seconds_since_last_event` | | seconds since the pod watch last delivered an event (updated every second) |
//! | `nodelocaldns_tasks` | `kind` | background tasks alive now: `refresh`, `connection` (pooled upstream TCP), `probe`, `loop_check` (see `crate::tasks`) |
//! | `nodelocaldns_upstream_pools` | | upstream pools alive now: one per upstream address of the running config, plus an old config's until its last query ends |
//! | `nodelocaldns_node_rules_restored_total` | | node rules, addresses or links found missing by a periodic sync and put back |
//! | `nodelocaldns_node_rules_backend` | `backend` | 1 for the backend writing the node rules: `iptables` or `nftables` |
//! | `nodelocaldns_node_fallback_endpoints` | | kube-dns endpoints the link-local IPs fall back to while no process of ours listens (0: the fallback is not armed) |
//! | `coredns_nodecache_setup_errors_total` | `errortype` | node setup failures, node-cache's labels: `iptables`, `iptables_lock`, `interface_add`, `interface_check`, `configmap` |

use super::labels::{Label, PerValue, ReloadResult, SetupErrorType, TaskKind};
use super::upstream::UpstreamMetrics;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The forwarder's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub dropped: IntCounterVec,
    pub rejected: IntCounterVec,
    pub upstream_failures: IntCounterVec,
    pub upstream_mismatched: IntCounterVec,
    pub upstream_servfail: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub cache_entries: IntGaugeVec,
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub cache_prefetch: IntCounterVec,
    pub cache_prefetch_deferred: IntCounterVec,
    pub cache_served_stale: IntCounterVec,
    pub cache_evictions: IntCounterVec,
    pub cache_split: IntCounterVec,
    pub dns64_translated: IntCounterVec,
    pub autopath_applied: IntCounter,
    pub autopath_skipped: IntCounterVec,
    pub kube_pods_indexed: IntGauge,
    pub kube_ambiguous_ips: IntGauge,
    pub kube_synced: IntGauge,
    pub kube_watch_restarts: IntCounterVec,
    pub kube_seconds_since_event: Gauge,
    pub node_rules_restored: IntCounter,
    pub node_rules_backend: IntGaugeVec,
    pub node_fallback_endpoints: IntGauge,
    pub setup_errors: PerValue<SetupErrorType, IntCounter>,
    pub upstream: UpstreamMetrics,
    pub loop_detected: IntGaugeVec,
    pub unanswered_cached: IntCounterVec,
    pub config_reloads: PerValue<ReloadResult, IntCounter>,
    pub tasks: PerValue<TaskKind, IntGauge>,
    pub upstream_pools: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are static and valid");
            registry
                .register(Box::new(vec.clone()))
                .expect("each metric is registered once");
            vec
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let dropped = counter(
            "nodelocaldns_dropped_total",
            "Packets that got no answer, by reason.",
            &["reason"],
        );
        let rejected = counter(
            "nodelocaldns_rejected_total",
            "Queries refused because a limit was reached, by limit.",
            &["reason"],
        );
        let upstream_failures = counter(
            "nodelocaldns_upstream_failures_total",
            "Upstream exchanges that failed, by reason.",
            &["zone", "upstream", "reason"],
        );
        let upstream_mismatched = counter(
            "nodelocaldns_upstream_mismatched_total",
            "Upstream answers ignored for a wrong ID, question or source address.",
            &["upstream"],
        );
        let upstream_servfail = counter(
            "nodelocaldns_upstream_servfail_total",
            "SERVFAIL or REFUSED upstream answers that caused a failover.",
            &["zone", "upstream", "rcode"],
        );
        let upstream_healthy = gauge_vec(
            "nodelocaldns_upstream_healthy",
            "1 while the upstream is used, 0 while it is skipped after max_fails failures.",
            &["zone", "upstream"],
        );
        let cache_entries = gauge_vec(
            "coredns_cache_entries",
            "Entries in the cache, by answer type.",
            &["server", "type"],
        );
        let cache_hits = counter(
            "coredns_cache_hits_total",
            "Queries answered from a fresh cache entry.",
            &["server", "type"],
        );
        let cache_misses = counter(
            "coredns_cache_misses_total",
            "Queries the cache could not answer fresh.",
            &["server"],
        );
        let cache_prefetch = counter(
            "coredns_cache_prefetch_total",
            "Background refreshes of popular entries before expiry.",
            &["server"],
        );
        let cache_prefetch_deferred = counter(
            "nodelocaldns_cache_prefetch_deferred_total",
            "Refreshes not started because the most allowed at once were running.",
            &["server"],
        );
        let cache_served_stale = counter(
            "coredns_cache_served_stale_total",
            "Answers served from expired entries because upstreams failed.",
            &["server"],
        );
        let cache_evictions = counter(
            "coredns_cache_evictions_total",
            "Entries evicted for capacity, by answer type.",
            &["server", "type"],
        );
        let cache_split = counter(
            "nodelocaldns_cache_split_answers_total",
            "Names whose A and AAAA answers disagreed (NXDOMAIN vs NOERROR) twice in a row.",
            &["zone"],
        );
        let dns64_translated = counter(
            "coredns_dns64_requests_translated_total",
            "Counter of DNS requests translated by dns64.",
            &["server"],
        );
        let autopath_applied = registered(
            &registry,
            IntCounter::new(
                "nodelocaldns_autopath_applied_total",
                "Queries answered through autopath.",
            ),
        );
        let autopath_skipped = counter(
            "nodelocaldns_autopath_skipped_total",
            "Queries in an autopath zone forwarded without autopath, by reason.",
            &["reason"],
        );
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help));
        let kube_pods_indexed = gauge(
            "nodelocaldns_kube_pods_indexed",
            "Running, non-hostNetwork pods of this node in the autopath index.",
        );
        let kube_ambiguous_ips = gauge(
            "nodelocaldns_kube_ambiguous_ips",
            "IPs claimed by two or more Running pods.",
        );
        let kube_synced = gauge(
            "nodelocaldns_kube_synced",
            "1 once the first full list of this node's pods is indexed.",
        );
        let kube_watch_restarts = counter(
            "nodelocaldns_kube_watch_restarts_total",
            "Pod watch restarts, by reason (error, relist).",
            &["reason"],
        );
        let kube_seconds_since_event = registered(
            &registry,
            Gauge::new(
                "nodelocaldns_kube_seconds_since_last_event",
                "Seconds since the pod watch last delivered an event.",
            ),
        );
        let node_rules_restored = registered(
            &registry,
            IntCounter::new(
                "nodelocaldns_node_rules_restored_total",
                "Node rules, addresses or links a periodic sync found missing and put back.",
            ),
        );
        let node_rules_backend = gauge_vec(
            "nodelocaldns_node_rules_backend",
            "1 for the backend writing the node rules (iptables or nftables).",
            &["backend"],
        );
        let node_fallback_endpoints = registered(
            &registry,
            IntGauge::new(
                "nodelocaldns_node_fallback_endpoints",
                "kube-dns endpoints the link-local IPs fall back to while no process of ours \
                 listens (0: not armed).",
            ),
        );
        let setup_errors = counter(
            "coredns_nodecache_setup_errors_total",
            "The number of errors during periodic network setup for node-cache",
            &[SetupErrorType::NAME],
        );
        // node-cache shows every label from the start, so dashboards see zeros, not gaps: so
        // does every `PerValue`.
        let setup_errors = PerValue::resolve(&setup_errors, &[]);
        let upstream = UpstreamMetrics::register(&registry);
        let config_reloads = counter(
            "nodelocaldns_config_reloads_total",
            "Config file changes seen, by result (success, failure: the previous config keeps serving).",
            &[ReloadResult::NAME],
        );
        let config_reloads = PerValue::resolve(&config_reloads, &[]);
        let unanswered_cached = counter(
            "nodelocaldns_unanswered_cached_total",
            "Queries answered without asking upstreams because the same question timed out on every upstream within unanswered_ttl.",
            &["zone"],
        );
        let loop_detected = gauge_vec(
            "nodelocaldns_loop_detected",
            "1 when the zone's upstreams sent our loop probe back to us (zone answered REFUSED).",
            &["zone"],
        );
        let tasks = gauge_vec(
            "nodelocaldns_tasks",
            "Background tasks alive now, by kind (refresh, connection, probe, loop_check).",
            &[TaskKind::NAME],
        );
        let tasks = PerValue::resolve(&tasks, &[]);
        let upstream_pools = registered(
            &registry,
            IntGauge::new(
                "nodelocaldns_upstream_pools",
                "Upstream pools alive now (an old config's live on until its last query ends).",
            ),
        );
        Metrics {
            registry,
            dropped,
            rejected,
            upstream_failures,
            upstream_mismatched,
            upstream_servfail,
            upstream_healthy,
            cache_entries,
            cache_hits,
            cache_misses,
            cache_prefetch,
            cache_prefetch_deferred,
            cache_served_stale,
            cache_evictions,
            cache_split,
            dns64_translated,
            autopath_applied,
            autopath_skipped,
            kube_pods_indexed,
            kube_ambiguous_ips,
            kube_synced,
            kube_watch_restarts,
            kube_seconds_since_event,
            node_rules_restored,
            node_rules_backend,
            node_fallback_endpoints,
            setup_errors,
            upstream,
            loop_detected,
            unanswered_cached,
            config_reloads,
            tasks,
            upstream_pools,
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|err| format!("# encoding failed: {err}\n"))
    }
}

/// Registers a metric built from static names (which cannot fail) in `registry`.
fn registered<C>(registry: &Registry, metric: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("metric names are static and valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
