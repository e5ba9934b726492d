//! Metrics of the traffic to each upstream address: its admission queue, its TCP connection
//! pool, and CoreDNS's `forward` family, so that the dashboards built for CoreDNS read our
//! upstream latency unchanged.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `nodelocaldns_upstream_inflight` | `upstream` | queries holding one of the upstream's slots (UDP and TCP) |
//! | `nodelocaldns_queue_depth` | `upstream` | queries waiting for a slot |
//! | `nodelocaldns_queue_wait_seconds` | `upstream` | how long admitted queries waited for their slot (0 when one was free) |
//! | `nodelocaldns_queue_rejected_total` | `upstream`, `reason` | queries answered SERVFAIL or stale at once: `full` (queue at capacity), `timeout` (waited `queue.timeout` or the query's deadline) or `client_share` (the asking client already had `queue.per_client` queries waiting) |
//! | `nodelocaldns_upstream_inflight_limit` | `upstream` | the slots the upstream gets now: `pool.max_connections × max_inflight`, lowered after its timeouts and raised again as it answers (`pool.adaptive`) |
//! | `nodelocaldns_upstream_waiting_clients` | `upstream` | clients with queries waiting for a slot, served in turn |
//! | `nodelocaldns_pool_connections` | `upstream`, `state` | open TCP connections, `idle` (no query) or `busy` |
//! | `nodelocaldns_pool_connects_total` | `upstream` | TCP connections opened |
//! | `nodelocaldns_pool_connect_errors_total` | `upstream` | TCP connects that failed or timed out |
//! | `nodelocaldns_pool_tls_handshakes_total` | `upstream`, `kind` | TLS handshakes of DNS-over-TLS connections that succeeded: `full`, or `resumed` from an earlier connection's session |
//! | `nodelocaldns_pool_tls_handshake_failures_total` | `upstream` | TLS handshakes that failed: a certificate that does not verify (wrong name, unknown CA) or an upstream that does not speak TLS; counted in `connect_errors` too |
//! | `nodelocaldns_pool_queries_per_connection` | `upstream` | queries a TCP connection carried before it closed |
//! | `nodelocaldns_pool_closed_total` | `upstream`, `reason` | TCP connections closed: `idle`, `max_queries`, `max_age`, `server` (closed or reset by the upstream), `error`, `retired` (its config was replaced, or the server stopped), `unresponsive` (nothing read for a whole query timeout) |
//! | `nodelocaldns_upstream_retries_total` | `upstream` | queries sent again because their connection closed before the answer |
//! | `coredns_forward_requests_total` | `to` | queries sent to the upstream (pre-1.11 CoreDNS name) |
//! | `coredns_forward_responses_total` | `to`, `rcode` | answers received from the upstream |
//! | `coredns_forward_request_duration_seconds` | `to`, `rcode` | time from sending to the answer (pre-1.11 name) |
//! | `coredns_proxy_request_duration_seconds` | `proxy_name`, `to`, `rcode` | the same, under CoreDNS 1.11's name (`proxy_name="forward"`) |
//! | `coredns_forward_max_concurrent_rejects_total` | | queries turned away by a full or expired queue (CoreDNS's `max_concurrent`) |

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, exponential_buckets,
};

use super::labels::{Label, PerValue, label_enum};
use crate::wire::Rcode;

/// The metric families, registered once per server instance.
pub struct UpstreamMetrics {
    inflight: IntGaugeVec,
    queue_depth: IntGaugeVec,
    queue_wait: HistogramVec,
    queue_rejected: IntCounterVec,
    inflight_limit: IntGaugeVec,
    waiting_clients: IntGaugeVec,
    connections: IntGaugeVec,
    connects: IntCounterVec,
    connect_errors: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_failures: IntCounterVec,
    queries_per_connection: HistogramVec,
    closed: IntCounterVec,
    retries: IntCounterVec,
    forward_requests: IntCounterVec,
    forward_responses: IntCounterVec,
    forward_duration: HistogramVec,
    proxy_duration: HistogramVec,
    max_concurrent_rejects: IntCounter,
}

label_enum! {
    /// Why a pooled connection closed (the `reason` label of `nodelocaldns_pool_closed_total`).
    pub enum CloseReason: "reason" {
        Idle => "idle",
        MaxQueries => "max_queries",
        MaxAge => "max_age",
        Server => "server",
        Error => "error",
        /// The pool's config was replaced by a reload (and its last query ended), or the server
        /// stopped.
        Retired => "retired",
        /// A query's whole timeout passed with nothing read on the connection.
        Unresponsive => "unresponsive",
    }
}

/// One upstream's handles, looked up once so the query path does no label hashing. The
/// series of an answer's rcode are looked up on its first answer with that rcode, so
/// `/metrics` lists only the rcodes seen, as CoreDNS's does.
pub struct UpstreamHandles {
    pub inflight: IntGauge,
    pub queue_depth: IntGauge,
    pub queue_wait: Histogram,
    pub rejected_full: IntCounter,
    pub rejected_timeout: IntCounter,
    pub rejected_client: IntCounter,
    pub inflight_limit: IntGauge,
    pub waiting_clients: IntGauge,
    pub idle: IntGauge,
    pub busy: IntGauge,
    pub connects: IntCounter,
    pub connect_errors: IntCounter,
    /// Full and resumed TLS handshakes.
    tls_handshakes: [IntCounter; 2],
    pub tls_failures: IntCounter,
    pub queries_per_connection: Histogram,
    closed: PerValue<CloseReason, IntCounter>,
    pub retries: IntCounter,
    pub max_concurrent_rejects: IntCounter,
    pub forward_requests: IntCounter,
    label: String,
    forward_responses: IntCounterVec,
    forward_duration: HistogramVec,
    proxy_duration: HistogramVec,
    answered: [OnceLock<AnsweredSeries>; Rcode::NAMES.len()],
}

/// The series an answer counts in, for one upstream and one rcode.
struct AnsweredSeries {
    responses: IntCounter,
    duration: Histogram,
    proxy_duration: Histogram,
}

impl UpstreamHandles {
    /// The count of successful TLS handshakes of a kind.
    pub fn tls_handshake(&self, resumed: bool) -> &IntCounter {
        &self.tls_handshakes[usize::from(resumed)]
    }

    pub fn closed(&self, reason: CloseReason) -> &IntCounter {
        self.closed.get(reason)
    }

    /// Counts an answer with `rcode` that took `seconds`.
    pub fn answered(&self, rcode: Rcode, seconds: f64) {
        let series = self.answered[rcode.name_index()].get_or_init(|| {
            let labels = [self.label.as_str(), rcode.name()];
            AnsweredSeries {
                responses: self.forward_responses.with_label_values(&labels),
                duration: self.forward_duration.with_label_values(&labels),
                proxy_duration: self.proxy_duration.with_label_values(&[
                    "forward",
                    self.label.as_str(),
                    rcode.name(),
                ]),
            }
        });
        series.responses.inc();
        series.duration.observe(seconds);
        series.proxy_duration.observe(seconds);
    }
}

impl UpstreamMetrics {
    pub fn register(registry: &Registry) -> UpstreamMetrics {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntGaugeVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are static and valid");
            register(registry, vec)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are static and valid");
            register(registry, vec)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let vec = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("metric names and labels are static and valid");
            register(registry, vec)
        };
        // CoreDNS's forward buckets: 0.25 ms doubling to about 8 s.
        let latency =
            || exponential_buckets(0.00025, 2.0, 16).expect("static bucket parameters are valid");
        let max_concurrent_rejects = register(
            registry,
            IntCounter::new(
                "coredns_forward_max_concurrent_rejects_total",
                "Queries refused because the upstream queue was full or its wait expired.",
            )
            .expect("metric names are static and valid"),
        );
        UpstreamMetrics {
            inflight: gauge(
                "nodelocaldns_upstream_inflight",
                "Queries holding one of the upstream's slots.",
                &["upstream"],
            ),
            queue_depth: gauge(
                "nodelocaldns_queue_depth",
                "Queries waiting for a slot to the upstream.",
                &["upstream"],
            ),
            queue_wait: histogram(
                "nodelocaldns_queue_wait_seconds",
                "Time admitted queries waited for a slot to the upstream.",
                &["upstream"],
                latency(),
            ),
            queue_rejected: counter(
                "nodelocaldns_queue_rejected_total",
                "Queries answered at once because no slot to the upstream was free in time.",
                &["upstream", "reason"],
            ),
            inflight_limit: gauge(
                "nodelocaldns_upstream_inflight_limit",
                "Slots the upstream gets now: lowered after its timeouts, raised as it answers.",
                &["upstream"],
            ),
            waiting_clients: gauge(
                "nodelocaldns_upstream_waiting_clients",
                "Clients with queries waiting for a slot to the upstream, served in turn.",
                &["upstream"],
            ),
            connections: gauge(
                "nodelocaldns_pool_connections",
                "Open TCP connections to the upstream, idle or busy.",
                &["upstream", "state"],
            ),
            connects: counter(
                "nodelocaldns_pool_connects_total",
                "TCP connections opened to the upstream.",
                &["upstream"],
            ),
            connect_errors: counter(
                "nodelocaldns_pool_connect_errors_total",
                "TCP connects to the upstream that failed or timed out.",
                &["upstream"],
            ),
            tls_handshakes: counter(
                "nodelocaldns_pool_tls_handshakes_total",
                "TLS handshakes with the upstream that succeeded, full or resumed.",
                &["upstream", "kind"],
            ),
            tls_failures: counter(
                "nodelocaldns_pool_tls_handshake_failures_total",
                "TLS handshakes with the upstream that failed.",
                &["upstream"],
            ),
            queries_per_connection: histogram(
                "nodelocaldns_pool_queries_per_connection",
                "Queries a TCP connection carried before it closed.",
                &["upstream"],
                exponential_buckets(1.0, 4.0, 10).expect("static bucket parameters are valid"),
            ),
            closed: counter(
                "nodelocaldns_pool_closed_total",
                "TCP connections to the upstream closed, by reason.",
                &["upstream", CloseReason::NAME],
            ),
            retries: counter(
                "nodelocaldns_upstream_retries_total",
                "Queries sent again because their connection closed before the answer.",
                &["upstream"],
            ),
            forward_requests: counter(
                "coredns_forward_requests_total",
                "Counter of requests made per upstream.",
                &["to"],
            ),
            forward_responses: counter(
                "coredns_forward_responses_total",
                "Counter of responses received per upstream.",
                &["to", "rcode"],
            ),
            forward_duration: histogram(
                "coredns_forward_request_duration_seconds",
                "Histogram of the time each request took.",
                &["to", "rcode"],
                latency(),
            ),
            proxy_duration: histogram(
                "coredns_proxy_request_duration_seconds",
                "Histogram of the time each request took.",
                &["proxy_name", "to", "rcode"],
                latency(),
            ),
            max_concurrent_rejects,
        }
    }

    /// The handles of the upstream labelled `upstream`; every series exists from here on, so
    /// dashboards show zeros rather than gaps.
    pub fn handles(&self, upstream: &str) -> UpstreamHandles {
        let one = [upstream];
        UpstreamHandles {
            inflight: self.inflight.with_label_values(&one),
            queue_depth: self.queue_depth.with_label_values(&one),
            queue_wait: self.queue_wait.with_label_values(&one),
            rejected_full: self.queue_rejected.with_label_values(&[upstream, "full"]),
            rejected_timeout: self
                .queue_rejected
                .with_label_values(&[upstream, "timeout"]),
            rejected_client: self
                .queue_rejected
                .with_label_values(&[upstream, "client_share"]),
            inflight_limit: self.inflight_limit.with_label_values(&one),
            waiting_clients: self.waiting_clients.with_label_values(&one),
            idle: self.connections.with_label_values(&[upstream, "idle"]),
            busy: self.connections.with_label_values(&[upstream, "busy"]),
            connects: self.connects.with_label_values(&one),
            connect_errors: self.connect_errors.with_label_values(&one),
            tls_handshakes: ["full", "resumed"]
                .map(|kind| self.tls_handshakes.with_label_values(&[upstream, kind])),
            tls_failures: self.tls_failures.with_label_values(&one),
            queries_per_connection: self.queries_per_connection.with_label_values(&one),
            closed: PerValue::resolve(&self.closed, &[upstream]),
            retries: self.retries.with_label_values(&one),
            max_concurrent_rejects: self.max_concurrent_rejects.clone(),
            forward_requests: self.forward_requests.with_label_values(&one),
            label: upstream.to_string(),
            forward_responses: self.forward_responses.clone(),
            forward_duration: self.forward_duration.clone(),
            proxy_duration: self.proxy_duration.clone(),
            answered: Default::default(),
        }
    }
}

fn register<C>(registry: &Registry, metric: C) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rcode;

    /// The samples of `family` in the text exposition of `registry`, one line each, sorted.
    fn samples(registry: &Registry, family: &str) -> Vec<String> {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("the registry's metrics encode");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|line| line.starts_with(&format!("{family}{{")))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn answers_count_under_their_rcode_and_only_seen_rcodes_have_series() {
        let registry = Registry::new();
        let handles = UpstreamMetrics::register(&registry).handles("10.0.0.10:53");
        handles.answered(rcode::NOERROR, 0.001);
        handles.answered(rcode::NOERROR, 0.002);
        handles.answered(rcode::NXDOMAIN, 0.001);
        // Codes without a name of their own count together, as OTHER.
        handles.answered(Rcode(23), 0.001);
        handles.answered(Rcode(3841), 0.001);

        assert_eq!(
            samples(&registry, "coredns_forward_responses_total"),
            [
                r#"coredns_forward_responses_total{rcode="NOERROR",to="10.0.0.10:53"} 2"#,
                r#"coredns_forward_responses_total{rcode="NXDOMAIN",to="10.0.0.10:53"} 1"#,
                r#"coredns_forward_responses_total{rcode="OTHER",to="10.0.0.10:53"} 2"#,
            ]
        );
        assert_eq!(
            samples(&registry, "coredns_forward_request_duration_seconds_count"),
            [
                r#"coredns_forward_request_duration_seconds_count{rcode="NOERROR",to="10.0.0.10:53"} 2"#,
                r#"coredns_forward_request_duration_seconds_count{rcode="NXDOMAIN",to="10.0.0.10:53"} 1"#,
                r#"coredns_forward_request_duration_seconds_count{rcode="OTHER",to="10.0.0.10:53"} 2"#,
            ]
        );
        assert_eq!(
            samples(&registry, "coredns_proxy_request_duration_seconds_count"),
            [
                r#"coredns_proxy_request_duration_seconds_count{proxy_name="forward",rcode="NOERROR",to="10.0.0.10:53"} 2"#,
                r#"coredns_proxy_request_duration_seconds_count{proxy_name="forward",rcode="NXDOMAIN",to="10.0.0.10:53"} 1"#,
                r#"coredns_proxy_request_duration_seconds_count{proxy_name="forward",rcode="OTHER",to="10.0.0.10:53"} 2"#,
            ]
        );
    }
}
