//! A zone's upstreams: the order they are tried in (policy, then health), failover on
//! timeouts, network errors, SERVFAIL and REFUSED, all within the zone's deadline, and the
//! background probe that brings a skipped upstream back.
//!
//! Every exchange first takes a slot of the upstream's [`Pool`]; an upstream whose queue is
//! full or whose wait expired is passed over for this query (it is busy, not broken: no health
//! failure), and when every upstream is, the query ends at once with [`UpstreamError::Overloaded`]
//! so the responder answers stale or SERVFAIL instead of waiting.
//!
//! One pass tries each upstream once. When no upstream answered at all (timeouts, network
//! errors), the upstreams are asked again in the same order while the deadline allows, at most
//! `ceil(deadline / timeout)` tries in all: a single upstream that dropped one UDP packet gets
//! a second chance instead of a SERVFAIL, and a silent one is not asked forever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use rand::seq::SliceRandom;
use smallvec::{SmallVec, smallvec};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission::{Overloaded, Requester};
use super::health::{Health, Transition};
use super::pool::{Pool, Pools};
use super::{Answer, ExchangeError, udp};
use crate::Proto;
use crate::config::{Policy, Transport, ZoneConfig};
use crate::observe::Metrics;
use crate::observe::labels;
use crate::observe::ratelimit::LogLimiter;
use crate::tasks::{TaskKind, Tasks};
use crate::wire::query::{Question, UpstreamFlags};
use crate::wire::{CLASS_IN, Name, rcode, rtype};

/// A zone's upstreams held inline when ordering them for a query (CoreDNS's forward takes
/// at most 15); more are ordered in an allocated list.
const INLINE_UPSTREAMS: usize = 16;

/// Failures repeat per query when an upstream is down; the counters carry the rate.
static UPSTREAM_ERRORS: LogLimiter = LogLimiter::new(10, std::time::Duration::from_secs(60));

static HEALTH_CHANGES: LogLimiter = LogLimiter::new(10, std::time::Duration::from_secs(60));

/// One upstream server of a zone.
struct Upstream {
    addr: SocketAddr,
    /// `addr` as a metric label.
    label: String,
    pool: Arc<Pool>,
    health: Health,
    healthy: IntGauge,
}

/// Why one upstream gave no answer to one query.
enum Attempt {
    /// It was not asked: no slot free in time.
    Overloaded(Overloaded),
    Failed(ExchangeError),
}

impl Upstream {
    /// One query to this upstream within `timeout` (and the query's `deadline`): a slot, then
    /// UDP, or TCP when `use_tcp` or when the UDP answer was truncated (same slot, same
    /// timeout).
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        requester: Requester,
        question: &Question,
        flags: UpstreamFlags,
        use_tcp: bool,
        udp_size: u16,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Answer, Attempt> {
        let started = Instant::now();
        let until = deadline.min(started + timeout);
        let slot = self
            .pool
            .admit(requester, until)
            .await
            .map_err(Attempt::Overloaded)?;
        // The answer gets the whole timeout from when the query leaves, whatever its wait for
        // a slot (only the query's deadline cuts it): a slot given up early while the upstream
        // still works on its query would let us send it more than it holds.
        let sent = Instant::now();
        let remaining = deadline.min(sent + timeout).saturating_duration_since(sent);
        let result = self
            .ask(&slot, question, flags, use_tcp, udp_size, remaining)
            .await;
        // What the adaptive limit learns from: an answer, or a timeout (not a network error,
        // which says nothing of the upstream's load).
        match &result {
            Ok(_) => slot.answered(),
            Err(ExchangeError::Timeout(_)) => slot.timed_out(),
            Err(_) => {}
        }
        drop(slot);
        if let Ok(answer) = &result {
            let seconds = started.elapsed().as_secs_f64();
            self.pool.metrics.answered(answer.info.rcode, seconds);
        }
        result.map_err(Attempt::Failed)
    }

    async fn ask(
        &self,
        slot: &super::admission::Slot,
        question: &Question,
        flags: UpstreamFlags,
        use_tcp: bool,
        udp_size: u16,
        timeout: Duration,
    ) -> Result<Answer, ExchangeError> {
        if timeout.is_zero() {
            return Err(ExchangeError::Timeout(timeout));
        }
        let started = Instant::now();
        // A TLS upstream is never asked in the clear, whatever the caller chose.
        if !use_tcp && !self.pool.is_tls() {
            self.pool.metrics.forward_requests.inc();
            let result = udp::exchange(
                self.addr,
                question,
                flags,
                udp_size,
                timeout,
                &self.pool.mismatched,
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
        self.pool
            .exchange_tcp(slot, question, flags, udp_size, remaining)
            .await
    }
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
    #[error("every upstream is at its bound: {0}")]
    Overloaded(Overloaded),
    #[error("every upstream timed out on this question less than {0:?} ago")]
    RecentlyUnanswered(Duration),
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
    /// Where the probes run (so that shutdown ends them too).
    tasks: Tasks,
    /// Questions every upstream timed out on, until when they are not asked again.
    unanswered: Option<Unanswered>,
}

/// Questions that got no answer at all, remembered for `unanswered_ttl`: a name that
/// black-holes upstream is not re-sent for every client retry (and every search-path
/// expansion) while its deadline runs out each time.
struct Unanswered {
    ttl: Duration,
    until: quick_cache::sync::Cache<Question, Instant>,
    skipped: IntCounter,
}

impl Unanswered {
    /// Bounded: a flood of distinct black-holed names evicts old ones, never grows memory.
    const CAPACITY: usize = 4096;

    fn recent(&self, question: &Question) -> bool {
        match self.until.get(question) {
            Some(until) if Instant::now() < until => {
                self.skipped.inc();
                true
            }
            Some(_) => {
                self.until.remove(question);
                false
            }
            None => false,
        }
    }

    fn remember(&self, question: &Question) {
        self.until.insert(*question, Instant::now() + self.ttl);
    }
}

impl Drop for UpstreamGroup {
    fn drop(&mut self) {
        self.probes.cancel();
    }
}

impl UpstreamGroup {
    /// `udp_size` is the EDNS payload size we advertise upstream; `pools` holds (and gets)
    /// the pool of each upstream address.
    pub fn new(
        zone: &ZoneConfig,
        udp_size: u16,
        metrics: Arc<Metrics>,
        pools: &mut Pools,
    ) -> UpstreamGroup {
        let zone_name = labels::zone(&zone.name.0);
        let upstreams = zone
            .upstream_addrs()
            .into_iter()
            .map(|addr| {
                let label = labels::upstream(addr);
                let healthy = metrics
                    .upstream_healthy
                    .with_label_values(&[zone_name.as_str(), label.as_str()]);
                healthy.set(1);
                Arc::new(Upstream {
                    addr,
                    label,
                    pool: pools.get(addr, zone, &metrics),
                    health: Health::default(),
                    healthy,
                })
            })
            .collect();
        let unanswered = (!zone.unanswered_ttl.is_zero()).then(|| Unanswered {
            ttl: zone.unanswered_ttl,
            until: quick_cache::sync::Cache::new(Unanswered::CAPACITY),
            skipped: metrics
                .unanswered_cached
                .with_label_values(&[zone_name.as_str()]),
        });
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
            unanswered,
            metrics,
            probes: CancellationToken::new(),
            tasks: pools.tasks().clone(),
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
        requester: Requester,
    ) -> Result<Answer, UpstreamError> {
        if let Some(unanswered) = &self.unanswered
            && unanswered.recent(question)
        {
            return Err(UpstreamError::RecentlyUnanswered(unanswered.ttl));
        }
        let deadline = Instant::now() + self.deadline;
        let use_tcp = self.uses_tcp(client_proto);
        let order = self.order();
        let mut passed_over: SmallVec<[bool; INLINE_UPSTREAMS]> = smallvec![false; order.len()];
        let mut last_answer = None;
        let mut last_error = None;
        let mut overloaded = None;
        let tries = order.len().max(self.tries_within_deadline());
        for (n, index) in (0..order.len()).cycle().take(tries).enumerate() {
            // Asking again is for upstreams that did not answer at all.
            if n >= order.len() && last_answer.is_some() {
                break;
            }
            if passed_over[index] {
                continue;
            }
            let upstream = &self.upstreams[order[index]];
            if deadline <= Instant::now() {
                break;
            }
            let result = upstream
                .exchange(
                    requester,
                    question,
                    flags,
                    use_tcp,
                    self.udp_size,
                    self.try_timeout,
                    deadline,
                )
                .await;
            match result {
                Err(Attempt::Overloaded(reason)) => {
                    debug!(zone = %self.zone, upstream = %upstream.addr, %reason, "upstream at its bound");
                    passed_over[index] = true;
                    overloaded = Some(reason);
                }
                Ok(answer) => {
                    self.note(upstream, upstream.health.record_success());
                    let code = answer.info.rcode;
                    if code != rcode::SERVFAIL && code != rcode::REFUSED {
                        return Ok(answer);
                    }
                    self.metrics
                        .upstream_servfail
                        .with_label_values(&[&self.zone, &upstream.label, code.name()])
                        .inc();
                    last_answer = Some(answer);
                }
                Err(Attempt::Failed(error)) => {
                    self.metrics
                        .upstream_failures
                        .with_label_values(&[&self.zone, &upstream.label, error.reason()])
                        .inc();
                    if let Some(suppressed) = UPSTREAM_ERRORS.allow() {
                        warn!(zone = %self.zone, upstream = %upstream.addr, %error, suppressed, "upstream exchange failed");
                    }
                    let transition = upstream.health.record_failure(self.max_fails);
                    self.note(upstream, transition);
                    last_error = Some((upstream.addr, error));
                }
            }
        }
        if let Some(answer) = last_answer {
            return Ok(answer);
        }
        if let (Some((_, ExchangeError::Timeout(_))), Some(unanswered)) =
            (&last_error, &self.unanswered)
        {
            unanswered.remember(question);
        }
        Err(match (last_error, overloaded) {
            (Some((upstream, error)), _) => UpstreamError::Failed { upstream, error },
            (None, Some(reason)) => UpstreamError::Overloaded(reason),
            (None, None) => UpstreamError::Deadline(self.deadline),
        })
    }

    /// The upstream addresses, for logs.
    pub fn describe(&self) -> String {
        let addrs: Vec<String> = self.upstreams.iter().map(|u| u.label.clone()).collect();
        addrs.join(", ")
    }

    /// How many tries fit in the deadline at the per-try timeout (rounded up: the last try
    /// gets what is left).
    fn tries_within_deadline(&self) -> usize {
        let per_try = self.try_timeout.as_nanos().max(1);
        self.deadline.as_nanos().div_ceil(per_try).min(16) as usize
    }

    /// Whether this zone asks over TCP, given the protocol the client asked over.
    fn uses_tcp(&self, client_proto: Proto) -> bool {
        match self.transport {
            Transport::Tcp | Transport::Tls => true,
            Transport::Udp => client_proto == Proto::Tcp,
            Transport::PreferUdp => false,
        }
    }

    /// The upstreams in the order to try them (indices into `upstreams`): policy order,
    /// healthy ones only; all of them when none is healthy (trying beats answering SERVFAIL
    /// without asking). Held inline for up to [`INLINE_UPSTREAMS`]: no allocation per query.
    fn order(&self) -> SmallVec<[usize; INLINE_UPSTREAMS]> {
        let mut order: SmallVec<[usize; INLINE_UPSTREAMS]> = (0..self.upstreams.len()).collect();
        match self.policy {
            Policy::Random => order.shuffle(&mut rand::rng()),
            Policy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % order.len().max(1);
                order.rotate_left(start);
            }
            Policy::Sequential => {}
        }
        let is_up = |index: &usize| self.upstreams[*index].health.is_up();
        if order.iter().any(is_up) {
            order.retain(|index| is_up(index));
        }
        order
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
                // An overloaded single upstream flaps; the gauge carries every transition.
                if let Some(suppressed) = HEALTH_CHANGES.allow() {
                    warn!(
                        zone = %self.zone, upstream = %upstream.addr, max_fails = self.max_fails,
                        suppressed, "upstream skipped after consecutive failures; probing it"
                    );
                }
                self.tasks.spawn(
                    TaskKind::Probe,
                    probe(
                        upstream.clone(),
                        self.zone.clone(),
                        self.transport,
                        self.health_check,
                        self.try_timeout,
                        self.udp_size,
                        self.probes.child_token(),
                    ),
                );
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
        let use_tcp = matches!(transport, Transport::Tcp | Transport::Tls);
        let deadline = Instant::now() + timeout;
        let result = upstream
            .exchange(
                Requester::Background,
                &question,
                flags,
                use_tcp,
                udp_size,
                timeout,
                deadline,
            )
            .await;
        if result.is_ok() && upstream.health.record_success() == Transition::CameUp {
            upstream.healthy.set(1);
            info!(%zone, upstream = %upstream.addr, "upstream answers the health probe again");
        }
    }
}
