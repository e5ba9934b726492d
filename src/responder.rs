//! The request path: one client packet in, one answer (or a counted drop) out.
//!
//! ```text
//! begin (synchronous, on the listener's task)
//!   parse + validate  -> drop (too short, QR=1) | FORMERR | NOTIMP | BADVERS | REFUSED
//!   route by zone     -> REFUSED when no zone contains the name
//!   templates         -> a zone with `templates`: answered by one, or SERVFAIL, or on (src/template)
//!   hosts entries     -> a zone with `hosts`: answered from them, or SERVFAIL, or on (src/hosts)
//!   view              -> the client pod's namespace view when autopath applies (src/kube)
//!   dns64             -> a zone with `dns64`: whether this AAAA query's answer may be translated
//!   cache lookup      -> fresh hit: answered here, no task, no allocation
//!                        (a popular entry near expiry also asks for a background refresh;
//!                        a translated AAAA is synthesized from the entry's A half)
//!   -> Forward(Pending)
//! finish (async, one task per forwarded query, bounded by the listener)
//!   cache.resolve     -> single flight per key; A and AAAA fetched together; stored if coherent
//!   [autopath]        -> the search-path walk, each expansion through the plain view
//!   [rewrite]         -> a zone with `rewrite`: the question rewritten, its answer reverted (src/rewrite)
//!   upstream group    -> answer patched for the client (ID, case, OPT, TC, TTLs)
//!   on failure        -> stale entry (RFC 8767) if allowed, else SERVFAIL
//!   [dns64]           -> an AAAA answer to translate: synthesized from the A answer fetched
//!                        with it (an uncached zone asks for the A now) (src/dns64)
//! ```
//! Splitting at `begin`/`finish` keeps everything that can be answered without waiting off the
//! async machinery: that is where the fast path lives.
//!
//! DNS64 is decided in `begin` and applied where an AAAA answer is written, from whatever
//! holds it (a cached pair, the answers of a fetch, a stale entry): the A answer beside it is
//! what the synthesized one is made of, so no path asks upstreams more than it already does
//! (src/dns64 says why this differs from CoreDNS's place in front of the cache). A zone
//! without `dns64` checks an empty list per query and writes its answers as before.
//!
//! It stands on `upstream`, `kube`, `cache`, `hosts`, `template`, `dns64`, `rewrite`, `tasks`, `observe` and
//! `wire`; the
//! listeners (`server`) stand on it. Config keys: `server.max_udp_size`, `zones[].autopath`,
//! `zones[].hosts` (its tables are built here, shared by zones with the same section),
//! `zones[].templates` and `zones[].rewrite` (compiled here), `zones[].dns64`, and
//! `cache.capacity` (a reload keeps the cache when it is unchanged); the modules it builds
//! read the rest and list them in their docs. Metrics: CoreDNS's request families (`coredns_dns_*`, [`crate::observe::requests`])
//! and `nodelocaldns_dropped_total{reason}` for `short_header` and `response`,
//! `coredns_dns64_requests_translated_total{server}` (its series handed to each zone's [`Dns64`]),
//! `nodelocaldns_rejected_total{reason}` for `inflight` and `shutdown`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::IntCounter;
use thiserror::Error;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::Proto;
use crate::cache::{Cache, Entry, Fetched, Lookup, PLAIN_VIEW, RefreshSlot, Resolved, Served};
use crate::config::hosts::HostsConfig;
use crate::config::{Config, ZoneConfig};
use crate::dns64::Dns64;
use crate::hosts::{Decision, Hosts};
use crate::kube::autopath::{AutopathError, Plain};
use crate::kube::{Autopath, ClientNamespace, PodIndex};
use crate::observe::Metrics;
use crate::observe::labels;
use crate::observe::requests::{Arrival, RequestMetrics, Response, SharedCollector, Source, Tally};
use crate::rewrite::{RewriteError, Rewrites};
use crate::tasks::{TaskKind, Tasks};
use crate::template::{self, Templates};
use crate::upstream::ZoneRouter;
use crate::upstream::admission::Requester;
use crate::upstream::group::UpstreamError;
use crate::upstream::loop_check::LoopCheck;
use crate::upstream::router::{Route, RouteId};
use crate::wire::answer::Answer;
use crate::wire::query::{self, DropReason, Query, Rejection, UpstreamFlags};
use crate::wire::reply::{self, EchoedQuestion, ReplyLimits, write_answer, write_error};
use crate::wire::{Header, RType, Rcode, rcode, rtype};

/// Why an exchange with a zone's upstreams gave no answer (answered SERVFAIL, or stale).
#[derive(Debug, Error)]
enum FetchError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
}

/// A query's request-metrics series, and when it arrived if it was not answered synchronously.
type Counted<'a> = (&'a Tally, Option<std::time::Instant>);

/// What a zone's own data (templates, hosts entries) made of a query.
enum Local {
    /// Its answer, with this rcode, is in the output buffer.
    Answered(Rcode, Source),
    /// Answer SERVFAIL.
    ServFail,
    /// Not for it: on to the cache and upstreams.
    Next,
}

/// What `begin` did with a packet.
#[derive(Debug)]
pub enum Step {
    /// The answer is in the output buffer.
    Answered,
    /// The answer is in the output buffer, and the entry it came from should be refreshed in
    /// the background: send the answer, then call [`Responder::spawn_refresh`].
    AnsweredRefresh(Refresh),
    /// No answer is owed (counted).
    Dropped(DropReason),
    /// Needs upstreams: call [`Responder::finish`]. Not boxed: the task spawned for it holds
    /// it by value, so a miss does not allocate it separately. The answered steps return only
    /// their tag, so the size of this one costs a hit nothing.
    Forward(Pending),
}

/// A background refresh, holding one of the cache's refresh slots until it is done.
#[derive(Debug)]
pub struct Refresh {
    pending: Pending,
    slot: RefreshSlot,
}

/// Why a forwarded query is answered SERVFAIL without its upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `server.max_inflight` queries of its listen address were already waiting.
    Inflight,
    /// The server stopped, and its drain time ran out before the answer came.
    Shutdown,
}

impl Rejected {
    /// The `reason` label of `nodelocaldns_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Inflight => "inflight",
            Rejected::Shutdown => "shutdown",
        }
    }
}

/// What a forwarded query is owed when its upstream answer will not come: enough to answer it
/// SERVFAIL and count it. Taken before [`Responder::finish`] consumes the [`Pending`].
#[derive(Debug, Clone, Copy)]
pub struct Owed {
    query: Query,
    tally: Tally,
    arrived: std::time::Instant,
}

/// A validated, routed query waiting for upstreams.
#[derive(Debug)]
pub struct Pending {
    query: Query,
    route: RouteId,
    /// The transport and the client: what upstream exchanges are asked for.
    asker: Asker,
    /// The client's namespace when autopath applies (decided once, in `begin`).
    autopath: Option<Arc<ClientNamespace>>,
    /// The request metrics' series, counted when the answer is written.
    tally: Tally,
    /// When the query arrived, for its duration; for a cached zone also the moment its lookup
    /// found no fresh entry.
    arrived: std::time::Instant,
}

impl Pending {
    /// What this query is owed should its upstream answer not come.
    pub fn owed(&self) -> Owed {
        Owed {
            query: self.query,
            tally: self.tally,
            arrived: self.arrived,
        }
    }
}

/// The responder answering now, shared by the listeners and the admin endpoints; a config
/// reload swaps it without a lock on the query path.
pub type CurrentResponder = Arc<arc_swap::ArcSwap<Responder>>;

/// Who an upstream exchange is for, and over what the client asked (which decides TCP for
/// `prefer_udp` zones).
#[derive(Debug, Clone, Copy)]
struct Asker {
    proto: Proto,
    requester: Requester,
}

/// Turns client packets into answers.
pub struct Responder {
    router: ZoneRouter,
    /// Shared with the responder a reload replaces this one with.
    cache: Arc<Cache>,
    cache_capacity: usize,
    pods: Option<Arc<PodIndex>>,
    metrics: Arc<Metrics>,
    max_udp_size: u16,
    /// `server.nsid`: given to queries that ask for it (RFC 5001).
    nsid: Option<Box<[u8]>>,
    autopath: Option<Autopath>,
    /// The zones with `autopath: true`.
    autopath_routes: Vec<RouteId>,
    /// The zones with `hosts`, and their entries. Empty for most configs: the fast path of a
    /// zone without hosts scans nothing.
    hosts_routes: Vec<(RouteId, Arc<Hosts>)>,
    /// The zones with `templates`, and theirs; empty for most configs, as `hosts_routes`.
    template_routes: Vec<(RouteId, Templates)>,
    /// The zones with `dns64`, and theirs; empty for most configs, as `hosts_routes`.
    dns64_routes: Vec<(RouteId, Dns64)>,
    /// The zones with `rewrite` rules, and theirs; empty for most configs.
    rewrite_routes: Vec<(RouteId, Rewrites)>,
    /// CoreDNS's request metrics.
    requests: Arc<RequestMetrics>,
    /// Each zone's route, by the zone's index in `requests`.
    zone_routes: Vec<RouteId>,
    /// `nodelocaldns_dropped_total` and `nodelocaldns_rejected_total`, by reason, resolved
    /// once: a flood of garbage must not cost a label lookup per packet.
    drops: Drops,
    loops: LoopCheck,
    /// Refreshes, upstream connections and probes; shared with the responders reloads make.
    tasks: Tasks,
}

/// Handles of the drop and reject counters.
struct Drops {
    short_header: IntCounter,
    response: IntCounter,
    inflight: IntCounter,
    shutdown: IntCounter,
}

impl Drops {
    fn new(metrics: &Metrics) -> Drops {
        let dropped = |reason| metrics.dropped.with_label_values(&[reason]);
        let rejected = |reason| metrics.rejected.with_label_values(&[reason]);
        Drops {
            short_header: dropped(DropReason::ShortHeader.as_str()),
            response: dropped(DropReason::Response.as_str()),
            inflight: rejected(Rejected::Inflight.as_str()),
            shutdown: rejected(Rejected::Shutdown.as_str()),
        }
    }
}

impl Responder {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Responder {
        Responder::with_pods(config, metrics, None)
    }

    /// A responder whose `autopath` zones use `pods` (without an index, autopath never
    /// applies).
    pub fn with_pods(
        config: &Config,
        metrics: Arc<Metrics>,
        pods: Option<Arc<PodIndex>>,
    ) -> Responder {
        let tasks = Tasks::new(&metrics);
        Responder::build(config, metrics, pods, None, tasks)
    }

    /// The responder for a reloaded `config`: the same pod index, and the same cache when
    /// `cache.capacity` is unchanged (entries keep their own TTLs), so a reload does not
    /// send every client's next query upstream. Its request metrics replace this one's.
    pub fn reloaded(&self, config: &Config) -> Responder {
        let metrics = self.metrics.clone();
        // Unregistered first: the registry takes one collector per metric name.
        let _ = metrics
            .registry
            .unregister(Box::new(SharedCollector(self.requests.clone())));
        let cache = (config.cache.capacity == self.cache_capacity).then(|| self.cache.clone());
        Responder::build(
            config,
            metrics,
            self.pods.clone(),
            cache,
            self.tasks.clone(),
        )
    }

    fn build(
        config: &Config,
        metrics: Arc<Metrics>,
        pods: Option<Arc<PodIndex>>,
        cache: Option<Arc<Cache>>,
        tasks: Tasks,
    ) -> Responder {
        let server = labels::server(config.listen[0]);
        let router = ZoneRouter::new(config, &metrics, &tasks);
        let autopath_routes = config
            .zones
            .iter()
            .filter(|zone| zone.autopath)
            .filter_map(|zone| router.route(&zone.name.0))
            .collect();
        let autopath = pods
            .clone()
            .map(|index| Autopath::new(index, &config.kubernetes.host_search, &metrics));
        let hosts_routes = hosts_routes(config, &router, &tasks);
        let template_routes = zone_routes(config, &router, "templates", |zone| {
            let templates = &zone.templates;
            (!templates.is_empty()).then(|| Templates::new(templates, &zone.name.0))
        });
        // The metric is labelled as the cache's `server`.
        let translated = metrics.dns64_translated.with_label_values(&[&server]);
        let dns64_routes = zone_routes(config, &router, "dns64", |zone| {
            let section = zone.dns64.as_ref()?;
            Some(Dns64::new(section, translated.clone()))
        });
        let rewrite_routes = zone_routes(config, &router, "rewrite rules", |zone| {
            (!zone.rewrite.is_empty()).then(|| Rewrites::new(&zone.rewrite))
        });
        let zone_routes: Vec<RouteId> = config
            .zones
            .iter()
            .filter_map(|zone| router.route(&zone.name.0))
            .collect();
        let requests = Arc::new(RequestMetrics::new(
            config.listen.iter().copied().map(labels::server).collect(),
            zone_routes
                .iter()
                .map(|id| router.get(*id).label.clone())
                .collect(),
        ));
        if let Err(err) = metrics
            .registry
            .register(Box::new(SharedCollector(requests.clone())))
        {
            // Only when a second responder shares one registry (tests): the first one's
            // request metrics are shown.
            debug!(%err, "request metrics not registered");
        }
        Responder {
            router,
            cache: cache.unwrap_or_else(|| {
                Arc::new(Cache::new(config.cache.capacity, &server, metrics.clone()))
            }),
            cache_capacity: config.cache.capacity,
            pods,
            metrics: metrics.clone(),
            drops: Drops::new(&metrics),
            loops: LoopCheck::new(metrics.loop_detected.clone()),
            max_udp_size: config.server.max_udp_size,
            nsid: config.server.nsid.as_deref().map(|n| n.as_bytes().into()),
            autopath,
            autopath_routes,
            hosts_routes,
            template_routes,
            dns64_routes,
            rewrite_routes,
            requests,
            zone_routes,
            tasks,
        }
    }

    /// The owner of the background tasks of this responder and of every responder a reload
    /// made from it: [`Tasks::stop`] ends them all at shutdown.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// The metrics it counts in (the listeners count their sends in the same registry).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The answer cache (for `/debug/cache`).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Sends a loop probe for every zone to `listener` (our own address) and waits up to
    /// `wait`; returns the zones whose upstreams sent it back (now answered REFUSED).
    pub async fn check_loops(&self, listener: SocketAddr, wait: Duration) -> Vec<String> {
        self.loops
            .probe(&self.router.routes(), listener, wait)
            .await
    }

    /// The pool of each upstream address (for `/debug/pool`).
    pub fn pools(&self) -> Vec<Arc<crate::upstream::pool::Pool>> {
        self.router.pools()
    }

    /// Autopath, when the responder has a pod index (for `/debug/autopath`).
    pub fn autopath(&self) -> Option<&Autopath> {
        self.autopath.as_ref()
    }

    /// Handles everything that needs no upstream; writes any answer into `out`. `listener`
    /// is the index in `config.listen` of the address the packet came to (the `server` label
    /// of the request metrics); `client` is the packet's source address (autopath finds the
    /// client's pod by it).
    pub fn begin(
        &self,
        listener: usize,
        packet: &[u8],
        proto: Proto,
        client: IpAddr,
        out: &mut Vec<u8>,
    ) -> Step {
        let arrival = Arrival {
            listener,
            proto,
            client,
            request_len: packet.len(),
        };
        let tally = |zone, qtype, dnssec_ok| self.requests.tally(&arrival, zone, qtype, dnssec_ok);
        let query = match query::parse(packet) {
            Ok(query) => query,
            Err(Rejection::Drop(reason)) => {
                match reason {
                    DropReason::ShortHeader => self.drops.short_header.inc(),
                    DropReason::Response => self.drops.response.inc(),
                }
                return Step::Dropped(reason);
            }
            Err(Rejection::Answer {
                header,
                rcode,
                question_end,
                edns,
            }) => {
                let question =
                    question_end.and_then(|end| EchoedQuestion::from_packet(packet, end));
                write_error(
                    out,
                    header.id,
                    header.flags,
                    question,
                    rcode,
                    edns,
                    self.max_udp_size,
                );
                // Type 0 (reserved) for an answer without a question: counted as `other`.
                let qtype = question.map_or(RType(0), |q| q.qtype);
                let dnssec_ok = edns.is_some_and(|e| e.dnssec_ok);
                let tally = tally(self.requests.dropped_zone(), qtype, dnssec_ok);
                self.record((&tally, None), rcode, Source::Server, out);
                return Step::Answered;
            }
        };
        let (qtype, dnssec_ok) = (query.question.qtype, query.dnssec_ok());
        let Some(route_id) = self.router.route(&query.question.name) else {
            let tally = tally(self.requests.dropped_zone(), qtype, dnssec_ok);
            self.write_query_error(&query, rcode::REFUSED, out);
            self.record((&tally, None), rcode::REFUSED, Source::Server, out);
            return Step::Answered;
        };
        let tally = tally(self.zone_index(route_id), qtype, dnssec_ok);
        let route = self.router.get(route_id);
        self.loops.arrived(&query.question.name, route);
        if route.looped.load(Ordering::Relaxed) {
            self.write_query_error(&query, rcode::REFUSED, out);
            self.record((&tally, None), rcode::REFUSED, Source::Server, out);
            return Step::Answered;
        }
        match self.answer_locally(route_id, &query, client, proto, out) {
            Local::Answered(code, source) => {
                self.add_nsid(&query, self.limits(&query, proto), out);
                self.record((&tally, None), code, source, out);
                return Step::Answered;
            }
            Local::ServFail => {
                self.write_query_error(&query, rcode::SERVFAIL, out);
                self.record((&tally, None), rcode::SERVFAIL, Source::Server, out);
                return Step::Answered;
            }
            Local::Next => {}
        }
        let autopath = match &self.autopath {
            Some(autopath) if self.autopath_routes.contains(&route_id) => {
                autopath.decide(client, &query.question.name)
            }
            _ => None,
        };
        let view = autopath.as_ref().map_or(PLAIN_VIEW, |ns| ns.view);
        let dns64 = self.dns64_for(route_id, &query, client);
        // Built only when the query goes on (or a hit asks for a refresh): a plain hit
        // allocates nothing.
        let asker = Asker {
            proto,
            requester: Requester::Client(client),
        };
        let pending = move |arrived: Instant| Pending {
            query,
            route: route_id,
            asker,
            autopath,
            tally,
            arrived: arrived.into_std(),
        };
        let Some(policy) = &self.router.get(route_id).cache else {
            return Step::Forward(pending(Instant::now()));
        };
        // The one clock read of a hit: freshness, and a forwarded query's arrival.
        let now = Instant::now();
        match self.cache.lookup(&query, view, now, policy.stale_window) {
            Lookup::Fresh(entry) => {
                let limits = self.limits(&query, proto);
                let code =
                    self.write_entry(&entry, &query, (now, Served::Fresh), limits, dns64, out);
                self.add_nsid(&query, limits, out);
                self.record((&tally, None), code, Source::Cache, out);
                let prefetch = &policy.prefetch;
                if entry.hit_wants_refresh(now, prefetch.min_hits, prefetch.percentage)
                    && let Some(slot) = self.cache.refresh_slot(&entry)
                {
                    return Step::AnsweredRefresh(Refresh {
                        pending: pending(now),
                        slot,
                    });
                }
                Step::Answered
            }
            Lookup::Stale(_) | Lookup::Miss => Step::Forward(pending(now)),
        }
    }

    /// Asks the zone's upstreams (through the cache when the zone is cached) and writes the
    /// answer for the client into `out`: the upstream's answer; a stale one when upstreams
    /// failed, or were slower than `serve_stale.client_timeout`, and the zone allows it; or
    /// SERVFAIL.
    ///
    /// `pending` is borrowed, not taken: the caller's task holds the one copy of the query,
    /// and every future below refers to it (a task's future is copied whole when it is
    /// spawned and when it ends).
    pub async fn finish(self: &Arc<Self>, pending: &Pending, out: &mut Vec<u8>) {
        self.answer_pending(pending, out).await;
        let query = &pending.query;
        self.add_nsid(query, self.limits(query, pending.asker.proto), out);
    }

    /// [`Responder::finish`] without the NSID.
    async fn answer_pending(self: &Arc<Self>, pending: &Pending, out: &mut Vec<u8>) {
        let Pending {
            ref query,
            route: route_id,
            asker,
            ref autopath,
            ref tally,
            arrived,
        } = *pending;
        let proto = asker.proto;
        let missed_at = Instant::from_std(arrived);
        let arrived = Some(arrived);
        let route = self.router.get(route_id);
        // What the answer is written with is worked out after the waits, not held across
        // them: every forwarded query's task holds this function's state, and a few bytes
        // more take it past the size tokio keeps unboxed (tests/allocations.rs).
        let Some(policy) = &route.cache else {
            let answer = self
                .resolve(route_id, query, asker, autopath.as_deref(), missed_at)
                .await;
            let answer = answer.answer_for(query.question.qtype);
            let limits = self.limits(query, proto);
            match (self.dns64_of_pending(pending), answer) {
                (Some(dns64), Some(aaaa)) if dns64.replaces(&aaaa.message) => {
                    // Boxed: a second resolution is state that every other miss's task
                    // would carry (and past the size tokio keeps unboxed).
                    Box::pin(self.translate_uncached(pending, dns64, aaaa, limits, out)).await;
                }
                _ => self.write_upstream_answer(query, (tally, arrived), answer, limits, out),
            }
            return;
        };
        let view = autopath.as_ref().map_or(PLAIN_VIEW, |ns| ns.view);
        let stale = self
            .cache
            .stale(query, view, Instant::now(), policy.stale_window);
        let fetched = match &stale {
            None => {
                self.resolve(route_id, query, asker, autopath.as_deref(), missed_at)
                    .await
            }
            Some(entry) => {
                // The refresh runs as its own task so that it completes, and refreshes the
                // cache, even when the client is answered stale before it is done. It owns its
                // copy of the query, since it may outlive this one.
                let (responder, refreshed, autopath) = (self.clone(), *query, autopath.clone());
                let refresh = self.tasks.spawn(TaskKind::Refresh, async move {
                    let autopath = autopath.as_deref();
                    responder
                        .resolve(route_id, &refreshed, asker, autopath, missed_at)
                        .await
                });
                match tokio::time::timeout(policy.stale_client_timeout, refresh).await {
                    Ok(Ok(Some(fetched))) => fetched,
                    // Slow, failed, or cancelled by a shutdown: the stale answer is better.
                    Ok(Ok(None) | Err(_)) | Err(_) => {
                        let (limits, dns64) =
                            (self.limits(query, proto), self.dns64_of_pending(pending));
                        self.write_stale(entry, query, (tally, arrived), limits, dns64, out);
                        return;
                    }
                }
            }
        };
        let (limits, dns64) = (self.limits(query, proto), self.dns64_of_pending(pending));
        if let Some(entry) = fetched.entry() {
            let served = (Instant::now(), Served::Fresh);
            let code = self.write_entry(entry, query, served, limits, dns64, out);
            self.record((tally, arrived), code, Source::Forward, out);
            return;
        }
        let answer = fetched.answer_for(query.question.qtype);
        let failed =
            answer.is_none_or(|a| matches!(a.info.rcode, rcode::SERVFAIL | rcode::REFUSED));
        match (stale, dns64, answer) {
            (Some(entry), _, _) if failed => {
                self.write_stale(&entry, query, (tally, arrived), limits, dns64, out)
            }
            (_, Some(dns64), Some(aaaa)) if dns64.replaces(&aaaa.message) => {
                // Not stored (uncacheable, or the halves disagreed), but fetched as a pair.
                let a = fetched.answer_for(rtype::A).map(|a| &a.message[..]);
                let code = self.write_synthesized(dns64, query, &aaaa.message, a, limits, out);
                self.record((tally, arrived), code, Source::Forward, out);
            }
            _ => self.write_upstream_answer(query, (tally, arrived), answer, limits, out),
        }
    }

    /// The answer `dns64` synthesizes for `pending` in a zone without a cache, whose AAAA
    /// answer `aaaa` it replaces: nothing fetched the A with the AAAA, so it is asked now, as
    /// CoreDNS asks it.
    async fn translate_uncached(
        &self,
        pending: &Pending,
        dns64: &Dns64,
        aaaa: &Answer,
        limits: ReplyLimits,
        out: &mut Vec<u8>,
    ) {
        let Pending {
            ref query,
            route: route_id,
            asker,
            ref autopath,
            ref tally,
            arrived,
        } = *pending;
        let a_query = address_query(query, rtype::A);
        let missed_at = Instant::from_std(arrived);
        let a = self
            .resolve(route_id, &a_query, asker, autopath.as_deref(), missed_at)
            .await;
        let a = a.answer_for(rtype::A).map(|a| &a.message[..]);
        let code = self.write_synthesized(dns64, query, &aaaa.message, a, limits, out);
        self.record((tally, Some(arrived)), code, Source::Forward, out);
    }

    /// The zone's DNS64 when it translates `query` from `client`. Zones without `dns64` (most
    /// configs have none) check an empty list.
    fn dns64_for(&self, route_id: RouteId, query: &Query, client: IpAddr) -> Option<&Dns64> {
        if self.dns64_routes.is_empty() {
            return None;
        }
        self.dns64_of(route_id)
            .filter(|dns64| dns64.intercepts(query, client))
    }

    /// [`Responder::dns64_for`] a forwarded query and its client (none for a refresh): decided
    /// again rather than carried from `begin`, so that `Pending` stays as small.
    fn dns64_of_pending(&self, pending: &Pending) -> Option<&Dns64> {
        match pending.asker.requester {
            Requester::Client(client) => self.dns64_for(pending.route, &pending.query, client),
            Requester::Background => None,
        }
    }

    /// The zone's DNS64, if it has a `dns64` section.
    fn dns64_of(&self, route_id: RouteId) -> Option<&Dns64> {
        self.dns64_routes
            .iter()
            .find(|(r, _)| *r == route_id)
            .map(|(_, dns64)| dns64)
    }

    /// Writes the answer to `query` from `entry`, its TTLs as `served` at the given moment,
    /// into `out`; returns its rcode. With `dns64` (an AAAA query it translates) and an AAAA
    /// half it replaces, the answer is synthesized from the entry's A half, written with the
    /// same TTL countdown.
    fn write_entry(
        &self,
        entry: &Entry,
        query: &Query,
        (now, served): (Instant, Served),
        limits: ReplyLimits,
        dns64: Option<&Dns64>,
        out: &mut Vec<u8>,
    ) -> Rcode {
        let Some(dns64) = dns64 else {
            entry.write_for(query, now, served, limits, out);
            return entry.rcode();
        };
        // Each half as a whole message, never truncated and without an OPT of ours: what the
        // synthesis reads. The client's limits apply to what it makes.
        let half = |qtype| {
            let mut wire = Vec::new();
            let internal = Query {
                edns: None,
                ..address_query(query, qtype)
            };
            entry.write_for(&internal, now, served, ReplyLimits::UNTRUNCATED, &mut wire);
            wire
        };
        let aaaa = half(rtype::AAAA);
        if !dns64.replaces(&aaaa) {
            entry.write_for(query, now, served, limits, out);
            return entry.rcode();
        }
        self.write_synthesized(dns64, query, &aaaa, Some(&half(rtype::A)), limits, out)
    }

    /// Writes the answer `dns64` synthesizes from the A answer `a` for the AAAA answer `aaaa`
    /// into `out`; returns its rcode. No A answer (its upstreams failed), or answers that do
    /// not read, make a SERVFAIL.
    fn write_synthesized(
        &self,
        dns64: &Dns64,
        query: &Query,
        aaaa: &[u8],
        a: Option<&[u8]>,
        limits: ReplyLimits,
        out: &mut Vec<u8>,
    ) -> Rcode {
        match a.map(|a| dns64.synthesize(aaaa, a)) {
            Some(Ok(wire)) => {
                write_answer(out, &wire, false, query, limits);
                Header::read(out).map_or(rcode::SERVFAIL, |h| h.rcode())
            }
            Some(Err(err)) => {
                debug!(name = %query.question.name, %err, "dns64 synthesis failed");
                self.write_query_error(query, rcode::SERVFAIL, out);
                rcode::SERVFAIL
            }
            None => {
                self.write_query_error(query, rcode::SERVFAIL, out);
                rcode::SERVFAIL
            }
        }
    }

    /// What the zone's own data makes of `query`: its templates first, then its hosts entries,
    /// as CoreDNS's plugin order has it. Zones without either scan two empty lists.
    fn answer_locally(
        &self,
        route_id: RouteId,
        query: &Query,
        client: IpAddr,
        proto: Proto,
        out: &mut Vec<u8>,
    ) -> Local {
        if let Some((_, templates)) = self.template_routes.iter().find(|(r, _)| *r == route_id) {
            match templates.answer(query, client, self.limits(query, proto), out) {
                template::Decision::Answered(code) => {
                    return Local::Answered(code, Source::Template);
                }
                template::Decision::ServFail => return Local::ServFail,
                template::Decision::Next => {}
            }
        }
        if let Some((_, hosts)) = self.hosts_routes.iter().find(|(r, _)| *r == route_id) {
            match hosts.answer(query, self.limits(query, proto), out) {
                Decision::Answered => return Local::Answered(rcode::NOERROR, Source::Hosts),
                Decision::ServFail => return Local::ServFail,
                Decision::Next => {}
            }
        }
        Local::Next
    }

    /// Refreshes the entry a hit found close to expiry, in the background.
    pub fn spawn_refresh(self: &Arc<Self>, refresh: Refresh) {
        let responder = self.clone();
        let Refresh { pending, slot } = refresh;
        self.tasks.spawn(TaskKind::Refresh, async move {
            let _slot = slot;
            let Pending {
                query,
                route,
                asker,
                autopath,
                tally: _,
                arrived,
            } = pending;
            responder.cache.count_prefetch();
            let missed_at = Instant::from_std(arrived);
            // A prefetch is the server's, not the client's whose hit started it.
            let asker = Asker {
                requester: Requester::Background,
                ..asker
            };
            responder
                .resolve(route, &query, asker, autopath.as_deref(), missed_at)
                .await;
        });
    }

    /// Fetches `query` for a client: through autopath in the namespace's view when it applies,
    /// else through the plain view. `missed_at` is when the caller's lookup found no fresh
    /// entry (see [`Cache::resolve`]).
    async fn resolve(
        &self,
        route_id: RouteId,
        query: &Query,
        asker: Asker,
        autopath: Option<&ClientNamespace>,
        missed_at: Instant,
    ) -> Resolved {
        match (&self.autopath, autopath) {
            // Boxed: the walk nests a plain resolve inside the namespace's, several kilobytes
            // of state that every plain miss's task would otherwise carry and copy on spawn.
            (Some(autopath), Some(namespace)) => {
                let walk =
                    self.resolve_autopath(autopath, namespace, route_id, query, asker, missed_at);
                Box::pin(walk).await
            }
            _ => self.resolve_plain(route_id, query, asker, missed_at).await,
        }
    }

    /// The search-path walk for `query`, its answer (`qname CNAME found` + found answer)
    /// cached in the namespace's view. One walk serves both halves of an address pair.
    async fn resolve_autopath(
        &self,
        autopath: &Autopath,
        namespace: &ClientNamespace,
        route_id: RouteId,
        query: &Query,
        asker: Asker,
        missed_at: Instant,
    ) -> Resolved {
        let walk = || autopath.walk(namespace, query, |q| self.plain_step(q, asker));
        let route = self.router.get(route_id);
        let Some(policy) = &route.cache else {
            let answer = match walk().await {
                Ok(walk) => autopath.answer(&walk, query, query.question),
                Err(err) => Err(err),
            };
            if let Err(err) = &answer {
                debug!(name = %query.question.name, %err, "autopath failed");
            }
            return Resolved::ready(Fetched::uncached(query.question.qtype, answer.ok()));
        };
        let walked: tokio::sync::OnceCell<Result<_, AutopathError>> = tokio::sync::OnceCell::new();
        let (walked, walk) = (&walked, &walk);
        self.cache
            .resolve(
                query,
                namespace.view,
                missed_at,
                &policy.ttl,
                &route.label,
                |question| async move {
                    let walk = walked.get_or_init(walk).await.as_ref().map_err(|err| {
                        debug!(name = %query.question.name, %err, "autopath failed");
                        err.clone()
                    })?;
                    autopath.answer(walk, query, question)
                },
            )
            .await
    }

    /// One expansion of an autopath walk: a fresh plain entry, or a fetch through the plain
    /// view (`None` when no zone routes the name).
    ///
    /// An entry inside its prefetch window is fetched again rather than used: an autopath
    /// answer lives no longer than the entries it was built from, so building it (on a
    /// prefetch of the namespace's entry, typically) from nearly expired ones would refresh
    /// nothing.
    async fn plain_step(&self, query: Query, asker: Asker) -> Option<Plain> {
        let route_id = self.router.route(&query.question.name)?;
        let now = Instant::now();
        if let Some(policy) = &self.router.get(route_id).cache
            && let Lookup::Fresh(entry) =
                self.cache
                    .lookup(&query, PLAIN_VIEW, now, policy.stale_window)
            && !entry.refresh_due(now, policy.prefetch.percentage)
        {
            return Some(Plain::Entry(entry));
        }
        Some(Plain::Fetched(
            self.resolve_plain(route_id, &query, asker, now).await,
        ))
    }

    /// Fetches through the cache (single flight, coherent pairs) from the route's upstreams.
    async fn resolve_plain(
        &self,
        route_id: RouteId,
        query: &Query,
        asker: Asker,
        missed_at: Instant,
    ) -> Resolved {
        let route = self.router.get(route_id);
        let Some(policy) = &route.cache else {
            // Callers check the zone is cached; an uncached zone has nothing to share. Boxed:
            // the exchange is kilobytes of state a cached zone's miss need not carry.
            let answer = Box::pin(self.exchange(route, query, asker, query.question))
                .await
                .ok();
            return Resolved::ready(Fetched::uncached(query.question.qtype, answer));
        };
        self.cache
            .resolve(
                query,
                PLAIN_VIEW,
                missed_at,
                &policy.ttl,
                &route.label,
                |question| self.exchange(route, query, asker, question),
            )
            .await
    }

    fn write_stale(
        &self,
        entry: &Entry,
        query: &Query,
        tally: Counted,
        limits: ReplyLimits,
        dns64: Option<&Dns64>,
        out: &mut Vec<u8>,
    ) {
        let served = (Instant::now(), Served::Stale);
        let code = self.write_entry(entry, query, served, limits, dns64, out);
        self.cache.count_served_stale();
        self.record(tally, code, Source::Cache, out);
    }

    /// Answers a forwarded query SERVFAIL without its upstream answer (counted by `why`).
    pub fn reject(&self, owed: Owed, why: Rejected, out: &mut Vec<u8>) {
        match why {
            Rejected::Inflight => self.drops.inflight.inc(),
            Rejected::Shutdown => self.drops.shutdown.inc(),
        }
        self.write_query_error(&owed.query, rcode::SERVFAIL, out);
        let counted = (&owed.tally, Some(owed.arrived));
        self.record(counted, rcode::SERVFAIL, Source::Server, out);
    }

    /// One question to the route's upstreams, with the client's CD and DO bits; in a zone with
    /// rewrite rules, the question as they rewrite it and its answer reverted to `question`.
    async fn exchange(
        &self,
        route: &Route,
        query: &Query,
        asker: Asker,
        question: query::Question,
    ) -> Result<Answer, FetchError> {
        match self.rewrites_of(route) {
            None => Ok(self.ask_upstreams(route, query, asker, &question).await?),
            // Boxed: a rewrite's state (two questions, the answer rules) stays out of the
            // exchange of every zone without rules.
            Some(rewrites) => {
                let rewritten = self.exchange_rewritten(route, rewrites, query, asker, &question);
                Box::pin(rewritten).await
            }
        }
    }

    /// The rewrite rules of `route`'s zone, if it has some. Found by the route rather than by
    /// its id: [`Responder::exchange`] taking the id grew every miss's task by the 8 bytes that
    /// put it over the size above which tokio boxes a task (tests/allocations.rs).
    fn rewrites_of(&self, route: &Route) -> Option<&Rewrites> {
        self.rewrite_routes
            .iter()
            .find(|(id, _)| std::ptr::eq(self.router.get(*id), route))
            .map(|(_, rewrites)| rewrites)
    }

    /// [`Responder::exchange`] in a zone with rewrite rules.
    async fn exchange_rewritten(
        &self,
        route: &Route,
        rewrites: &Rewrites,
        query: &Query,
        asker: Asker,
        question: &query::Question,
    ) -> Result<Answer, FetchError> {
        let rewritten = rewrites.apply(question).map_err(|err| {
            warn!(zone = %route.label, %err, "rewrite failed; answered SERVFAIL");
            err
        })?;
        let Some(rewritten) = rewritten else {
            return Ok(self.ask_upstreams(route, query, asker, question).await?);
        };
        let answer = self
            .ask_upstreams(route, query, asker, &rewritten.question)
            .await?;
        Ok(rewritten.revert(&answer, question)?)
    }

    async fn ask_upstreams(
        &self,
        route: &Route,
        query: &Query,
        asker: Asker,
        question: &query::Question,
    ) -> Result<Answer, UpstreamError> {
        let flags = UpstreamFlags {
            checking_disabled: query.checking_disabled(),
            dnssec_ok: query.dnssec_ok(),
        };
        let result = route
            .upstreams
            .exchange(question, flags, asker.proto, asker.requester)
            .await;
        if let Err(err) = &result {
            debug!(zone = %route.label, name = %question.name, %err, "no upstream answer");
        }
        result
    }

    fn write_upstream_answer(
        &self,
        query: &Query,
        tally: Counted,
        answer: Option<&Answer>,
        limits: ReplyLimits,
        out: &mut Vec<u8>,
    ) {
        match answer {
            Some(answer) => {
                write_answer(out, &answer.message, answer.has_opt(), query, limits);
                self.record(tally, answer.info.rcode, Source::Forward, out);
            }
            None => {
                self.write_query_error(query, rcode::SERVFAIL, out);
                self.record(tally, rcode::SERVFAIL, Source::Server, out);
            }
        }
    }

    /// How large the answer to `query` may be, and what our OPT advertises.
    fn limits(&self, query: &Query, proto: Proto) -> ReplyLimits {
        match proto {
            Proto::Udp => ReplyLimits::udp(query.edns, self.max_udp_size),
            Proto::Tcp => ReplyLimits::tcp(self.max_udp_size),
        }
    }

    /// Our `server.nsid` in the answer in `out` (RFC 5001), when the query asked for it and the
    /// answer stays within `limits` with it. Answers were counted without it.
    fn add_nsid(&self, query: &Query, limits: ReplyLimits, out: &mut Vec<u8>) {
        if let Some(nsid) = &self.nsid
            && query.edns.is_some_and(|e| e.nsid)
        {
            reply::add_nsid(out, nsid, limits.max_size);
        }
    }

    /// An error answer to a parsed query.
    fn write_query_error(&self, query: &Query, rcode: Rcode, out: &mut Vec<u8>) {
        let question = Some(EchoedQuestion::of_query(query));
        write_error(
            out,
            query.id,
            query.flags,
            question,
            rcode,
            query.edns,
            self.max_udp_size,
        );
    }

    /// Counts an answer written into `out` in the request metrics.
    fn record(&self, (tally, arrived): Counted, rcode: Rcode, source: Source, out: &[u8]) {
        let response = Response {
            rcode,
            source,
            len: out.len(),
            arrived,
        };
        self.requests.record(tally, response);
    }

    /// The request metrics' index of a route's zone.
    fn zone_index(&self, route: RouteId) -> usize {
        // A handful of zones: a scan of small integers beats hashing.
        self.zone_routes
            .iter()
            .position(|r| *r == route)
            .unwrap_or(self.zone_routes.len())
    }
}

/// The hosts entries of each zone that has a `hosts` section, with their file checks running
/// on `tasks` (so a responder whose zones reload a hosts file is built inside the runtime, as
/// every responder of `instance` is). Zones whose sections name the same entries for the same
/// zones (a Corefile block's zones) share one table, so a file is read and checked once.
fn hosts_routes(config: &Config, router: &ZoneRouter, tasks: &Tasks) -> Vec<(RouteId, Arc<Hosts>)> {
    let mut built: Vec<(HostsConfig, Arc<Hosts>)> = Vec::new();
    let mut routes = Vec::new();
    for zone in &config.zones {
        let (Some(section), Some(route)) = (&zone.hosts, router.route(&zone.name.0)) else {
            continue;
        };
        let key = HostsConfig {
            zones: Hosts::zones_of(section, &zone.name.0)
                .into_iter()
                .map(crate::config::ZoneName)
                .collect(),
            ..section.clone()
        };
        let hosts = match built.iter().find(|(k, _)| *k == key) {
            Some((_, hosts)) => hosts.clone(),
            None => {
                let hosts = Arc::new(Hosts::new(section, &zone.name.0));
                if let Some(every) = hosts.reload_interval() {
                    let watched = Arc::downgrade(&hosts);
                    tasks.spawn(TaskKind::HostsReload, crate::hosts::watch(watched, every));
                }
                built.push((key, hosts.clone()));
                hosts
            }
        };
        routes.push((route, hosts));
    }
    routes
}

/// What `build` makes of each zone's section, by the zone's route: `build` gives `None` for a
/// zone without the section. A config that was not validated can hold a section that does not
/// build (a template or rule that does not compile, a prefix that does not read): that zone is
/// left without it, logged as `what` left out.
fn zone_routes<T, E: std::fmt::Display>(
    config: &Config,
    router: &ZoneRouter,
    what: &str,
    build: impl Fn(&ZoneConfig) -> Option<Result<T, E>>,
) -> Vec<(RouteId, T)> {
    let mut routes = Vec::new();
    for zone in &config.zones {
        let (Some(built), Some(route)) = (build(zone), router.route(&zone.name.0)) else {
            continue;
        };
        match built {
            Ok(built) => routes.push((route, built)),
            Err(err) => error!(zone = %zone.name.0, %err, "{what} left out"),
        }
    }
    routes
}

/// `query` asking for `qtype` of the same name instead (the A beside an AAAA).
fn address_query(query: &Query, qtype: RType) -> Query {
    Query {
        question: query::Question {
            qtype,
            ..query.question
        },
        ..*query
    }
}
