//! A zone's upstreams: the order they are tried in (policy, then health), failover on
//! timeouts, network errors, SERVFAIL and REFUSED, all within the zone's deadline, and the
//! background probe that brings a skipped upstream back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use rand::seq::SliceRandom;
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::health::{Health, Transition};
use super::{Answer, ExchangeError, tcp, udp};
use crate::Proto;
use crate::config::{Policy, Transport, ZoneConfig};
use crate::observe::Metrics;
use crate::wire::query::{Question, UpstreamFlags};
use crate::wire::{CLASS_IN, Name, rcode, rtype};

/// One upstream server of a zone.
struct Upstream {
    addr: SocketAddr,
    /// `addr` as a metric label.
    label: String,
    health: Health,
    mismatched: IntCounter,
    healthy: IntGauge,
}

/// Why a zone's upstreams gave no usable answer.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("{upstream}: {error}")]
    Failed {
        upstream: SocketAddr,
        error: ExchangeError,
    },
    #[error("deadline of {0:?} passed before any upstream was tried")]
    Deadline(Duration),
}

/// The upstreams of one zone and how to use them.
pub struct UpstreamGroup {
    zone: String,
    upstreams: Vec<Arc<Upstream>>,
    policy: Policy,
    transport: Transport,
    try_timeout: Duration,
    deadline: Duration,
    max_fails: u32,
    health_check: Duration,
    udp_size: u16,
    next: AtomicUsize,
    metrics: Arc<Metrics>,
    /// Ends the health probes when the group is dropped.
    probes: CancellationToken,
}

impl Drop for UpstreamGroup {
    fn drop(&mut self) {
        self.probes.cancel();
    }
}

impl UpstreamGroup {
    /// `udp_size` is the EDNS payload size we advertise upstream.
    pub fn new(zone: &ZoneConfig, udp_size: u16, metrics: Arc<Metrics>) -> UpstreamGroup {
        let zone_name = zone.name.0.to_dotted();
        let upstreams = zone
            .upstream_addrs()
            .into_iter()
            .map(|addr| {
                let label = addr.to_string();
                let healthy = metrics
                    .upstream_healthy
                    .with_label_values(&[zone_name.as_str(), label.as_str()]);
                healthy.set(1);
                Arc::new(Upstream {
                    addr,
                    label: label.clone(),
                    health: Health::default(),
                    mismatched: metrics.upstream_mismatched.with_label_values(&[&label]),
                    healthy,
                })
            })
            .collect();
        UpstreamGroup {
            zone: zone_name,
            upstreams,
            policy: zone.policy,
            transport: zone.transport,
            try_timeout: zone.timeout,
            deadline: zone.deadline,
            max_fails: zone.max_fails,
            health_check: zone.health_check,
            udp_size,
            next: AtomicUsize::new(0),
            metrics,
            probes: CancellationToken::new(),
        }
    }

    /// Asks the zone's upstreams until one answers, or the deadline passes. A SERVFAIL or
    /// REFUSED answer moves on to the next upstream; if every upstream answers that way, the
    /// last such answer is returned.
    pub async fn exchange(
        &self,
        question: &Question,
        flags: UpstreamFlags,
        client_proto: Proto,
    ) -> Result<Answer, UpstreamError> {
        let deadline = Instant::now() + self.deadline;
        let mut last_answer = None;
        let mut last_error = None;
        for upstream in self.order() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let timeout = self.try_timeout.min(remaining);
            match self
                .exchange_one(&upstream, question, flags, client_proto, timeout)
                .await
            {
                Ok(answer) => {
                    self.note(&upstream, upstream.health.record_success());
                    let code = answer.info.rcode;
                    if code != rcode::SERVFAIL && code != rcode::REFUSED {
                        return Ok(answer);
                    }
                    self.metrics
                        .upstream_servfail
                        .with_label_values(&[&self.zone, &upstream.label, rcode::name(code)])
                        .inc();
                    last_answer = Some(answer);
                }
                Err(error) => {
                    self.metrics
                        .upstream_failures
                        .with_label_values(&[&self.zone, &upstream.label, error.reason()])
                        .inc();
                    warn!(zone = %self.zone, upstream = %upstream.addr, %error, "upstream exchange failed");
                    let transition = upstream.health.record_failure(self.max_fails);
                    self.note(&upstream, transition);
                    last_error = Some((upstream.addr, error));
                }
            }
        }
        if let Some(answer) = last_answer {
            return Ok(answer);
        }
        Err(match last_error {
            Some((upstream, error)) => UpstreamError::Failed { upstream, error },
            None => UpstreamError::Deadline(self.deadline),
        })
    }

    /// The upstreams in the order to try them: policy order, healthy ones only; all of them
    /// when none is healthy (trying beats answering SERVFAIL without asking).
    fn order(&self) -> Vec<Arc<Upstream>> {
        let mut order: Vec<Arc<Upstream>> = self.upstreams.clone();
        match self.policy {
            Policy::Random => order.shuffle(&mut rand::rng()),
            Policy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % order.len().max(1);
                order.rotate_left(start);
            }
            Policy::Sequential => {}
        }
        if order.iter().any(|u| u.health.is_up()) {
            order.retain(|u| u.health.is_up());
        }
        order
    }

    /// One upstream, over the protocol the zone's transport and the client's protocol choose;
    /// a truncated UDP answer is asked again over TCP within the same timeout.
    async fn exchange_one(
        &self,
        upstream: &Upstream,
        question: &Question,
        flags: UpstreamFlags,
        client_proto: Proto,
        timeout: Duration,
    ) -> Result<Answer, ExchangeError> {
        let use_tcp = match self.transport {
            Transport::Tcp => true,
            Transport::Udp => client_proto == Proto::Tcp,
            Transport::PreferUdp => false,
        };
        let started = Instant::now();
        if !use_tcp {
            let result = udp::exchange(
                upstream.addr,
                question,
                flags,
                self.udp_size,
                timeout,
                &upstream.mismatched,
            )
            .await;
            match result {
                Ok(answer) if !answer.info.truncated => return Ok(answer),
                Ok(_) | Err(ExchangeError::Truncated) => {}
                Err(err) => return Err(err),
            }
        }
        let remaining = timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(ExchangeError::Timeout(timeout));
        }
        tcp::exchange(
            upstream.addr,
            question,
            flags,
            self.udp_size,
            remaining,
            &upstream.mismatched,
        )
        .await
    }

    /// Records a health transition; a newly skipped upstream gets a probe.
    fn note(&self, upstream: &Arc<Upstream>, transition: Transition) {
        match transition {
            Transition::None => {}
            Transition::CameUp => {
                upstream.healthy.set(1);
                info!(zone = %self.zone, upstream = %upstream.addr, "upstream answers again");
            }
            Transition::WentDown => {
                upstream.healthy.set(0);
                warn!(
                    zone = %self.zone, upstream = %upstream.addr, max_fails = self.max_fails,
                    "upstream skipped after consecutive failures; probing it"
                );
                tokio::spawn(probe(
                    upstream.clone(),
                    self.zone.clone(),
                    self.transport,
                    self.health_check,
                    self.try_timeout,
                    self.udp_size,
                    self.probes.child_token(),
                ));
            }
        }
    }
}

/// Asks a skipped upstream `. NS` every `interval` until it answers (any rcode), then marks
/// it usable again. Ends early when the group is dropped.
async fn probe(
    upstream: Arc<Upstream>,
    zone: String,
    transport: Transport,
    interval: Duration,
    timeout: Duration,
    udp_size: u16,
    cancel: CancellationToken,
) {
    let question = Question {
        name: Name::root(),
        qtype: rtype::NS,
        qclass: CLASS_IN,
    };
    let flags = UpstreamFlags::default();
    while !upstream.health.is_up() {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let result = if transport == Transport::Tcp {
            tcp::exchange(
                upstream.addr,
                &question,
                flags,
                udp_size,
                timeout,
                &upstream.mismatched,
            )
            .await
        } else {
            udp::exchange(
                upstream.addr,
                &question,
                flags,
                udp_size,
                timeout,
                &upstream.mismatched,
            )
            .await
        };
        if result.is_ok() && upstream.health.record_success() == Transition::CameUp {
            upstream.healthy.set(1);
            info!(%zone, upstream = %upstream.addr, "upstream answers the health probe again");
        }
    }
}
