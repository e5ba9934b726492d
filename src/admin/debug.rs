//! The `/debug/*` endpoints (`metrics.debug: true`, loopback only unless
//! `metrics.debug_remote`): the questions field reports asked, answered by one curl.
//!
//! | endpoint | shows |
//! |---|---|
//! | `/debug/cache?name=N[&type=T]` | the entries cached for N (T defaults to A: the A+AAAA pair) in every view: both halves, rcode, remaining TTL, hits |
//! | `/debug/autopath?ip=A[&name=N]` | the pods of this node behind A, in any phase, and why autopath applies to A or not; with N, the search path walked for it |
//! | `/debug/pool` | each zone's upstreams: healthy or skipped, failures by reason |
//! | `/debug/rules` | the node rules as installed (nft ruleset or iptables commands), the backend, and whether the fallback is armed |
//!
//! Plain text, one fact per line; 400 for a bad parameter, 404 when there is nothing to show.
//! Nothing here counts as a lookup or changes the cache's eviction order.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::time::Instant;

use crate::cache::PLAIN_VIEW;
use crate::config::Config;
use crate::kube::index::PodPhase;
use crate::kube::{ClientMatch, PodIndex};
use crate::node::RulesShown;
use crate::observe::Metrics;
use crate::observe::labels::Label;
use crate::responder::{CurrentResponder, Responder};
use crate::wire::{Name, RType, Rcode};

/// What the debug endpoints read.
pub struct Inspector {
    metrics: Arc<Metrics>,
    /// Each zone's label and its upstreams' labels, as the metrics name them.
    zones: Vec<(String, Vec<String>)>,
    /// The zones with `autopath: true`.
    autopath_zones: Vec<String>,
    /// The responder answering now: after a reload, the reloaded one (holding the startup one
    /// here would keep its upstream pools alive for ever).
    responder: Option<CurrentResponder>,
    pods: Option<Arc<PodIndex>>,
    rules: Option<Arc<RulesShown>>,
}

/// A debug answer: status and text.
type Reply = (StatusCode, String);

impl Inspector {
    /// An inspector of the upstream metrics; add the responder and the pod index for the
    /// cache and autopath endpoints.
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
        let autopath_zones = config
            .zones
            .iter()
            .filter(|zone| zone.autopath)
            .map(|zone| zone.name.0.to_dotted())
            .collect();
        Inspector {
            metrics,
            zones,
            autopath_zones,
            responder: None,
            pods: None,
            rules: None,
        }
    }

    /// The responder whose cache `/debug/cache` shows.
    pub fn with_responder(self, responder: Arc<Responder>) -> Inspector {
        self.with_current(Arc::new(arc_swap::ArcSwap::new(responder)))
    }

    /// The responder a server answers with now, whichever a reload made it.
    pub fn with_current(mut self, current: CurrentResponder) -> Inspector {
        self.responder = Some(current);
        self
    }

    /// The pod index `/debug/autopath` reads.
    pub fn with_pods(mut self, pods: Option<Arc<PodIndex>>) -> Inspector {
        self.pods = pods;
        self
    }

    /// The node rules `/debug/rules` shows (none when the node is not set up).
    pub fn with_rules(mut self, rules: Option<Arc<RulesShown>>) -> Inspector {
        self.rules = rules;
        self
    }

    /// `/debug/rules`.
    pub fn rules_report(&self) -> Reply {
        match &self.rules {
            Some(rules) => (StatusCode::OK, rules.text()),
            None => (
                StatusCode::NOT_FOUND,
                "node.setup_interface and node.setup_iptables are off: no node rules\n".into(),
            ),
        }
    }

    /// `/debug/cache?name=N[&type=T]`.
    pub fn cache_report(&self, params: &HashMap<String, String>) -> Reply {
        let Some(responder) = self.responder.as_ref().map(|r| r.load_full()) else {
            return (StatusCode::NOT_FOUND, "no cache to inspect\n".into());
        };
        let Some(name) = params.get("name") else {
            return bad_request("name=NAME is required");
        };
        let Ok(parsed) = Name::from_dotted(name) else {
            return bad_request(&format!("{name:?} is not a domain name"));
        };
        let qtype = match params.get("type") {
            None => RecordType::A,
            Some(text) => match RecordType::from_str(&text.to_ascii_uppercase()) {
                Ok(qtype) => qtype,
                Err(_) => match text.parse::<u16>() {
                    Ok(number) => RecordType::from(number),
                    Err(_) => return bad_request(&format!("{text:?} is not a record type")),
                },
            },
        };
        let namespaces = self
            .pods
            .as_ref()
            .map(|pods| pods.namespaces())
            .unwrap_or_default();
        let mut views = vec![PLAIN_VIEW];
        views.extend(namespaces.iter().map(|ns| ns.view));
        let shown = match qtype {
            RecordType::A | RecordType::AAAA => "A+AAAA pair".to_string(),
            other => other.to_string(),
        };
        let found = responder
            .cache()
            .inspect(&parsed, RType(u16::from(qtype)), &views);
        let dotted = parsed.to_dotted();
        if found.is_empty() {
            return (
                StatusCode::NOT_FOUND,
                format!(
                    "{dotted} {shown}: not cached (in any of {} views)\n",
                    views.len()
                ),
            );
        }
        let now = Instant::now();
        let mut out = String::new();
        for inspected in found {
            let entry = &inspected.entry;
            let view = match namespaces.iter().find(|ns| ns.view == inspected.view) {
                Some(ns) => format!("namespace {} (autopath view {})", ns.name, ns.view),
                None => "plain".to_string(),
            };
            let _ = writeln!(
                out,
                "{dotted} {shown}, view {view}, DO={} CD={}",
                u8::from(inspected.dnssec_ok),
                u8::from(inspected.checking_disabled)
            );
            let lifetime = match entry.expires_at().checked_duration_since(now) {
                Some(left) => format!(
                    "fresh, {} s of {} s left",
                    left.as_secs(),
                    entry.ttl().as_secs()
                ),
                None => format!(
                    "expired {} s ago (answered only stale, while upstreams fail)",
                    now.saturating_duration_since(entry.expires_at()).as_secs()
                ),
            };
            let _ = writeln!(
                out,
                "  {} {}, {lifetime}, {} hits",
                entry.kind().value(),
                entry.rcode().name(),
                entry.hits()
            );
            let wires = entry.wires();
            let halves = match wires.len() {
                2 => ["A", "AAAA"].as_slice(),
                _ => [""].as_slice(),
            };
            for (half, wire) in halves.iter().zip(&wires) {
                describe_half(&mut out, half, wire);
            }
        }
        out.push_str("(record TTLs as received from upstream; clients get what is left)\n");
        (StatusCode::OK, out)
    }

    /// `/debug/autopath?ip=A[&name=N]`.
    pub fn autopath_report(&self, params: &HashMap<String, String>) -> Reply {
        let Some(pods) = &self.pods else {
            return (
                StatusCode::NOT_FOUND,
                "kubernetes.enabled is false: no pod index, no autopath\n".into(),
            );
        };
        let Some(ip) = params.get("ip") else {
            return bad_request("ip=ADDRESS is required");
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return bad_request(&format!("{ip:?} is not an IP address"));
        };
        let mut out = String::new();
        let zones = match self.autopath_zones.is_empty() {
            true => "none (set autopath: true on the cluster domain's zone)".to_string(),
            false => self.autopath_zones.join(", "),
        };
        let _ = writeln!(out, "ip {ip}\nautopath zones: {zones}");
        let verdict = pods.lookup(ip);
        let why = match &verdict {
            ClientMatch::Pod(ns) => match &ns.first_search {
                Some(first) => format!(
                    "applies: one Running pod, namespace {}; names below {} are walked",
                    ns.name,
                    first.to_dotted()
                ),
                None => format!(
                    "does not apply: namespace {}'s search domain is not a valid name",
                    ns.name
                ),
            },
            ClientMatch::NotRunning => {
                "does not apply: only pods that are not Running have this IP".into()
            }
            ClientMatch::Ambiguous => {
                "does not apply: two or more Running pods claim this IP".into()
            }
            ClientMatch::NoPod => "does not apply: no pod of this node has this IP \
                                   (hostNetwork pods, the node, other nodes)"
                .into(),
            ClientMatch::Unsynced => "does not apply yet: the first list of pods is not in".into(),
        };
        let _ = writeln!(out, "autopath {why}");
        let found = pods.pods_with_ip(ip);
        if !found.is_empty() {
            out.push_str("pods with this IP:\n");
        }
        for pod in found {
            let role = if pod.host_network {
                "ignored: hostNetwork (its IP is the node's)".to_string()
            } else if pod.phase != PodPhase::Running {
                format!("ignored: {:?}, not Running", pod.phase)
            } else if pod.terminating {
                "claims the IP (Running, terminating)".to_string()
            } else {
                "claims the IP (Running)".to_string()
            };
            let _ = writeln!(out, "  {}/{}: {role}", pod.namespace, pod.name);
        }
        if let Some(name) = params.get("name") {
            let Ok(qname) = Name::from_dotted(name) else {
                return bad_request(&format!("{name:?} is not a domain name"));
            };
            let responder = self.responder.as_ref().map(|r| r.load_full());
            let walk = match (&verdict, responder.as_ref().and_then(|r| r.autopath())) {
                (ClientMatch::Pod(ns), Some(autopath)) => autopath.candidates(ns, &qname).ok(),
                _ => None,
            };
            match walk {
                Some(names) => {
                    let names: Vec<String> = names.iter().map(|n| n.to_dotted()).collect();
                    let _ = writeln!(
                        out,
                        "name {}: walked as {}",
                        qname.to_dotted(),
                        names.join(", ")
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "name {}: forwarded as asked (autopath does not apply to it from this IP)",
                        qname.to_dotted()
                    );
                }
            }
        }
        (StatusCode::OK, out)
    }

    /// `/debug/pool`: per zone, per upstream, whether it is used and how it failed; then per
    /// upstream address, its slots, queue and TCP connections.
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
        if let Some(responder) = &self.responder {
            for pool in responder.load().pools() {
                out.push_str(&pool.describe());
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

/// One stored upstream answer: its rcode and records.
fn describe_half(out: &mut String, half: &str, wire: &[u8]) {
    let label = if half.is_empty() {
        String::new()
    } else {
        format!("{half} ")
    };
    match Message::from_vec(wire) {
        Ok(message) => {
            let _ = writeln!(
                out,
                "  {label}half: {}, {} answers, {} authority",
                Rcode(u16::from(message.metadata.response_code)).name(),
                message.answers.len(),
                message.authorities.len()
            );
            for record in message.answers.iter().chain(&message.authorities) {
                let _ = writeln!(out, "    {record}");
            }
        }
        Err(err) => {
            let _ = writeln!(
                out,
                "  {label}half: {} bytes, cannot decode: {err}",
                wire.len()
            );
        }
    }
}

fn bad_request(message: &str) -> Reply {
    (StatusCode::BAD_REQUEST, format!("{message}\n"))
}

/// The routes of the debug endpoints.
pub(super) fn routes(inspector: Arc<Inspector>) -> Router {
    Router::new()
        .route("/debug/cache", get(cache))
        .route("/debug/autopath", get(autopath))
        .route("/debug/pool", get(pool))
        .route("/debug/rules", get(rules))
        .with_state(inspector)
}

type Params = Query<HashMap<String, String>>;

async fn cache(State(inspector): State<Arc<Inspector>>, Query(params): Params) -> Reply {
    inspector.cache_report(&params)
}

async fn autopath(State(inspector): State<Arc<Inspector>>, Query(params): Params) -> Reply {
    inspector.autopath_report(&params)
}

async fn pool(State(inspector): State<Arc<Inspector>>) -> String {
    inspector.pool_report()
}

async fn rules(State(inspector): State<Arc<Inspector>>) -> Reply {
    inspector.rules_report()
}
