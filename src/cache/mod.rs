//! The answer cache: coherent A+AAAA pairs, negative caching, single flight, prefetch and
//! serve-stale (docs/design.md, failure 2 and the coherence invariant).
//!
//! Key: (qname lowercased, view, DO and CD bits, and the qtype unless it is A or AAAA). A and
//! AAAA share one key, so one entry holds both halves and a miss for either fetches both, in
//! parallel, over the same upstream path; see [`entry`] for why a half-empty or split entry
//! cannot exist. The class is not part of the key because only class IN reaches the cache
//! (other classes are REFUSED before it).
//!
//! Storage is `quick_cache` (S3-FIFO eviction keeps popular names; ~30 ns per hit where moka
//! measured ~740 ns when the store was chosen), keyed by a hash of the name (a hit allocates nothing, and
//! a cached name costs one allocation, its [`Entry`], and no other: about 250 bytes with the
//! store's share at 1 000 000 names, by `cargo bench --bench cache_memory`).
//! Expired entries stay in the store (until evicted by capacity) so they can be served stale;
//! freshness is decided at lookup.
//!
//! Config keys (defaults in [`crate::config`]): `cache.capacity` (`100000` entries, all zones
//! together, a pair counting once) and per zone `zones[].cache.enabled` (`true`),
//! `success_ttl` (`30s`), `denial_ttl` (`5s`), `min_ttl` (`0s`), `servfail_ttl` (`0s`),
//! `prefetch.min_hits` (`2`), `prefetch.percentage` (`10`), `serve_stale.max_age` (`1h`) and
//! `serve_stale.client_timeout` (`1800ms`), read by [`policy`].
//!
//! Metrics (CoreDNS names, so its dashboards work): `coredns_cache_entries{server,type}`,
//! `coredns_cache_hits_total{server,type}`, `coredns_cache_misses_total{server}`,
//! `coredns_cache_prefetch_total{server}`, `coredns_cache_served_stale_total{server}`,
//! `coredns_cache_evictions_total{server,type}`; `nodelocaldns_cache_split_answers_total{zone}`
//! for A/AAAA answers that disagreed twice (an inconsistent upstream), and
//! `nodelocaldns_cache_prefetch_deferred_total{server}` for refreshes put off while
//! [`MAX_REFRESHING`] ran.

pub mod entry;
#[cfg(test)]
mod fixtures;
pub mod flight;
pub mod policy;

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use quick_cache::sync::Cache as Store;
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::warn;

use crate::observe::Metrics;
use crate::observe::labels::PerValue;
use crate::observe::ratelimit::LogLimiter;
use crate::wire::answer::Answer;
use crate::wire::query::{Query, Question};
use crate::wire::{Name, RType, rtype};
pub use entry::{Entry, Freshness, NotStored, Served};
use flight::SingleFlight;
use policy::{AnswerKind, TtlPolicy};

/// Split-answer warnings logged per minute (the metric counts them all).
static SPLIT_ANSWERS: LogLimiter = LogLimiter::new(10, Duration::from_secs(60));

/// Which clients may share an answer: [`PLAIN_VIEW`] for answers that depend only on the
/// question; autopath gives each namespace its own view.
pub type ViewId = u32;
pub const PLAIN_VIEW: ViewId = 0;

/// The key's qtype for an A+AAAA pair (type 0 is reserved: no question asks it).
const ADDRESS_PAIR: RType = RType(0);

/// What a query is cached under, apart from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyParts {
    qtype: RType,
    view: ViewId,
    bits: u8,
}

impl KeyParts {
    fn of(query: &Query, view: ViewId) -> KeyParts {
        let qtype = match query.question.qtype {
            rtype::A | rtype::AAAA => ADDRESS_PAIR,
            other => other,
        };
        KeyParts {
            qtype,
            view,
            bits: u8::from(query.dnssec_ok()) | (u8::from(query.checking_disabled()) << 1),
        }
    }
}

/// The store's key: a 64-bit hash of the name instead of the name, so a cached name costs no
/// allocation of its own. A hit is confirmed against the stored question
/// ([`Entry::answers_name`]); two names with one hash only ever displace each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StoreKey {
    name_hash: u64,
    parts: KeyParts,
}

/// Counters kept per answer kind.
type ByKind<T> = PerValue<AnswerKind, T>;

/// Counts evictions and keeps the entry gauges right when the store drops an entry.
#[derive(Clone)]
struct EvictionCounter {
    evictions: ByKind<IntCounter>,
    entries: ByKind<IntGauge>,
}

/// The key an insert stores under, if the request is an insert. The store reports the entry
/// an insert replaces through the same hook as one evicted for capacity; only the latter is
/// an eviction.
type Inserting = Option<StoreKey>;

impl Lifecycle<StoreKey, Entry> for EvictionCounter {
    type RequestState = Inserting;

    fn on_evict(&self, inserting: &mut Inserting, key: StoreKey, entry: Entry) {
        if *inserting != Some(key) {
            self.evictions.get(entry.kind()).inc();
        }
        self.entries.get(entry.kind()).dec();
    }
}

/// What a resolution hands its caller: one fetch's outcome, shared by every query that waited
/// for it.
pub type Resolved = flight::Shared<Fetched>;

/// What one fetch produced: the answers (shared by every query that waited for it) and the
/// entry stored from them, if they could be stored.
#[derive(Debug)]
pub struct Fetched {
    entry: Option<Entry>,
    answers: Answers,
}

#[derive(Debug)]
enum Answers {
    Pair {
        a: Option<Answer>,
        aaaa: Option<Answer>,
    },
    Single(Option<Answer>),
}

impl Fetched {
    /// The answer of a fetch that bypassed the cache.
    pub fn uncached(qtype: RType, answer: Option<Answer>) -> Fetched {
        let answers = match qtype {
            rtype::A => Answers::Pair {
                a: answer,
                aaaa: None,
            },
            rtype::AAAA => Answers::Pair {
                a: None,
                aaaa: answer,
            },
            _ => Answers::Single(answer),
        };
        Fetched {
            entry: None,
            answers,
        }
    }

    /// An entry another fetch stored, answering for this one.
    fn stored(entry: Entry) -> Fetched {
        Fetched {
            entry: Some(entry),
            answers: Answers::Single(None),
        }
    }

    /// The stored entry: answering from it gives clients the cache's TTLs.
    pub fn entry(&self) -> Option<&Entry> {
        self.entry.as_ref()
    }

    /// The upstream's answer for `qtype`, if one came.
    pub fn answer_for(&self, qtype: RType) -> Option<&Answer> {
        match &self.answers {
            Answers::Pair { a, aaaa } => {
                if qtype == rtype::AAAA {
                    aaaa.as_ref()
                } else {
                    a.as_ref()
                }
            }
            Answers::Single(answer) => answer.as_ref(),
        }
    }
}

/// A stored entry and the key it is stored under, as [`Cache::inspect`] finds it.
pub struct Inspected {
    pub view: ViewId,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
    pub entry: Entry,
}

/// What a lookup found.
pub enum Lookup {
    Fresh(Entry),
    /// Expired within the stale window: usable only if upstreams fail.
    Stale(Entry),
    Miss,
}

/// The answer cache.
pub struct Cache {
    store: Store<StoreKey, Entry, UnitWeighter, DefaultHashBuilder, EvictionCounter>,
    /// Hashes names for [`StoreKey`]; one seed for the cache's lifetime.
    name_hasher: DefaultHashBuilder,
    /// Keyed like the store, by the seeded hash of the name, so a flight costs no copy of the
    /// name beyond its own. It is joined only for the same name: two names whose hashes
    /// collide are fetched apart, never merged.
    flights: SingleFlight<StoreKey, Name, Fetched>,
    hits: ByKind<IntCounter>,
    misses: IntCounter,
    entries: ByKind<IntGauge>,
    prefetches: IntCounter,
    /// Slots for background refreshes, [`MAX_REFRESHING`] of them.
    refreshing: Arc<Semaphore>,
    prefetches_deferred: IntCounter,
    served_stale: IntCounter,
    metrics: Arc<Metrics>,
}

/// Background refreshes running at once, over all zones. Entries cached together (a cold
/// start, a burst of new names) reach their refresh window together: started all at once,
/// thousands of refresh tasks queue in front of the listeners on the same worker threads and
/// delay cache hits by tens of milliseconds (measured with 2 500 at once at 50 000 QPS on one
/// worker: p99 160 ms and 0.3 % lost to a full receive buffer). Capped, they go out a slot at
/// a time, and an entry that finds no slot is refreshed by one of its later hits.
pub const MAX_REFRESHING: usize = 64;

/// A claimed refresh slot, given back when dropped (when the refresh is done).
#[derive(Debug)]
pub struct RefreshSlot {
    _permit: OwnedSemaphorePermit,
}

impl Cache {
    /// A cache of at most `capacity` entries; `server` labels its metrics as CoreDNS does
    /// (`dns://ADDRESS`).
    pub fn new(capacity: usize, server: &str, metrics: Arc<Metrics>) -> Cache {
        let by_kind = |vec: &prometheus::IntCounterVec| ByKind::resolve(vec, &[server]);
        let entries = ByKind::resolve(&metrics.cache_entries, &[server]);
        let lifecycle = EvictionCounter {
            evictions: by_kind(&metrics.cache_evictions),
            entries: entries.clone(),
        };
        let store = Store::with(
            capacity,
            capacity as u64,
            UnitWeighter,
            DefaultHashBuilder::default(),
            lifecycle,
        );
        Cache {
            store,
            name_hasher: DefaultHashBuilder::default(),
            flights: SingleFlight::new(),
            hits: by_kind(&metrics.cache_hits),
            misses: metrics.cache_misses.with_label_values(&[server]),
            entries,
            prefetches: metrics.cache_prefetch.with_label_values(&[server]),
            refreshing: Arc::new(Semaphore::new(MAX_REFRESHING)),
            prefetches_deferred: metrics.cache_prefetch_deferred.with_label_values(&[server]),
            served_stale: metrics.cache_served_stale.with_label_values(&[server]),
            metrics,
        }
    }

    fn store_key(&self, query: &Query, view: ViewId) -> StoreKey {
        StoreKey {
            name_hash: self.name_hasher.hash_one(query.question.name.as_wire()),
            parts: KeyParts::of(query, view),
        }
    }

    /// The entry stored for `query` in `view`, confirmed to be for its name.
    fn get(&self, query: &Query, view: ViewId) -> Option<Entry> {
        let entry = self.store.get(&self.store_key(query, view))?;
        entry
            .answers_name(query.question.name.as_wire())
            .then_some(entry)
    }

    /// Looks `query` up in `view`; counts a hit or a miss.
    pub fn lookup(
        &self,
        query: &Query,
        view: ViewId,
        now: Instant,
        stale_window: Duration,
    ) -> Lookup {
        let found = self.get(query, view);
        match found {
            Some(entry) => match entry.freshness(now, stale_window) {
                Freshness::Fresh => {
                    self.hits.get(entry.kind()).inc();
                    Lookup::Fresh(entry)
                }
                Freshness::Stale => {
                    self.misses.inc();
                    Lookup::Stale(entry)
                }
                Freshness::Expired => {
                    self.misses.inc();
                    Lookup::Miss
                }
            },
            None => {
                self.misses.inc();
                Lookup::Miss
            }
        }
    }

    /// Fetches the answer(s) for `query` through `exchange`, once for all concurrent callers
    /// with the same key, and stores what may be stored. A and AAAA are fetched together.
    /// `exchange`'s error is the caller's (an upstream failure, or a failed autopath walk):
    /// the cache only needs to know there is no answer.
    ///
    /// `missed_at` is when the caller's lookup found no fresh entry. An entry stored since
    /// then answers instead of a fetch: a stub's AAAA looked up while the fetch its A started
    /// was still out, and reached here just after that fetch ended. A refresh passes the time
    /// of the hit that asked for it, so the entry it renews is older and is fetched again.
    pub async fn resolve<F, Fut, E>(
        &self,
        query: &Query,
        view: ViewId,
        missed_at: Instant,
        policy: &TtlPolicy,
        zone: &str,
        exchange: F,
    ) -> Resolved
    where
        F: Fn(Question) -> Fut,
        Fut: Future<Output = Result<Answer, E>>,
    {
        let key = self.store_key(query, view);
        let fetch = || async {
            if let Some(entry) = self.stored_since(key, &query.question.name, missed_at) {
                return Fetched::stored(entry);
            }
            if key.parts.qtype == ADDRESS_PAIR {
                return self
                    .fetch_pair(key, &query.question, policy, zone, &exchange)
                    .await;
            }
            let answer = exchange(query.question).await.ok();
            let entry = answer
                .as_ref()
                .and_then(|a| Entry::single(a, policy, Instant::now()).ok())
                .map(|entry| self.insert(key, entry));
            Fetched {
                entry,
                answers: Answers::Single(answer),
            }
        };
        self.flights.run(key, query.question.name, fetch).await
    }

    /// Both halves at once; halves that disagree (NXDOMAIN vs NOERROR) are asked again once.
    async fn fetch_pair<F, Fut, E>(
        &self,
        key: StoreKey,
        question: &Question,
        policy: &TtlPolicy,
        zone: &str,
        exchange: &F,
    ) -> Fetched
    where
        F: Fn(Question) -> Fut,
        Fut: Future<Output = Result<Answer, E>>,
    {
        let a_question = Question {
            qtype: rtype::A,
            ..*question
        };
        let aaaa_question = Question {
            qtype: rtype::AAAA,
            ..*question
        };
        let mut asked_again = false;
        loop {
            let (a, aaaa) = tokio::join!(exchange(a_question), exchange(aaaa_question));
            let (a, aaaa) = (a.ok(), aaaa.ok());
            let stored = match (&a, &aaaa) {
                (Some(a), Some(aaaa)) => Some(Entry::address_pair(a, aaaa, policy, Instant::now())),
                _ => None,
            };
            let entry = match stored {
                Some(Ok(entry)) => Some(self.insert(key, entry)),
                Some(Err(NotStored::Split)) if !asked_again => {
                    asked_again = true;
                    continue;
                }
                Some(Err(NotStored::Split)) => {
                    self.metrics.cache_split.with_label_values(&[zone]).inc();
                    if let Some(suppressed) = SPLIT_ANSWERS.allow() {
                        warn!(%zone, name = %question.name, suppressed, "upstream answered A and AAAA with NXDOMAIN on one side and NOERROR on the other, twice; not cached");
                    }
                    None
                }
                Some(Err(NotStored::Uncacheable)) | None => None,
            };
            return Fetched {
                entry,
                answers: Answers::Pair { a, aaaa },
            };
        }
    }

    /// The entry under `key` if it answers `name`, without counting a lookup or moving it in
    /// the eviction order.
    fn peek(&self, key: &StoreKey, name: &Name) -> Option<Entry> {
        let entry = self.store.peek(key)?;
        entry.answers_name(name.as_wire()).then_some(entry)
    }

    /// A fresh entry for `name` under `key` stored after `since`, without counting a lookup.
    fn stored_since(&self, key: StoreKey, name: &Name, since: Instant) -> Option<Entry> {
        let entry = self.peek(&key, name)?;
        let usable = entry.stored_at() > since
            && entry.freshness(Instant::now(), Duration::ZERO) == Freshness::Fresh;
        usable.then_some(entry)
    }

    fn insert(&self, key: StoreKey, entry: Entry) -> Entry {
        self.entries.get(entry.kind()).inc();
        // The entry this one replaces, if any, leaves through the lifecycle, which tells it
        // from an eviction by the key.
        let mut inserting = Some(key);
        self.store
            .insert_with_lifecycle(key, entry.clone(), &mut inserting);
        entry
    }

    /// An entry of `query`'s key that is expired but within `stale_window`, without counting
    /// a lookup: the fallback when upstreams failed.
    pub fn stale(
        &self,
        query: &Query,
        view: ViewId,
        now: Instant,
        stale_window: Duration,
    ) -> Option<Entry> {
        let entry = self.peek(&self.store_key(query, view), &query.question.name)?;
        (entry.freshness(now, stale_window) == Freshness::Stale).then_some(entry)
    }

    /// Every entry stored for `name` asked as `qtype` (A and AAAA find the same pair) in any
    /// of `views`, under any DO/CD bits, for inspection: counts no lookup and leaves the
    /// eviction order alone.
    pub fn inspect(&self, name: &Name, qtype: RType, views: &[ViewId]) -> Vec<Inspected> {
        let qtype = match qtype {
            rtype::A | rtype::AAAA => ADDRESS_PAIR,
            other => other,
        };
        let name_hash = self.name_hasher.hash_one(name.as_wire());
        let mut found = Vec::new();
        for &view in views {
            for bits in 0..4u8 {
                let key = StoreKey {
                    name_hash,
                    parts: KeyParts { qtype, view, bits },
                };
                if let Some(entry) = self.peek(&key, name) {
                    found.push(Inspected {
                        view,
                        dnssec_ok: bits & 1 != 0,
                        checking_disabled: bits & 2 != 0,
                        entry,
                    });
                }
            }
        }
        found
    }

    pub fn count_prefetch(&self) {
        self.prefetches.inc();
    }

    /// A slot for the refresh `entry`'s hit asked for, or `None` (counted, and the entry made
    /// refreshable by its next hit again) when [`MAX_REFRESHING`] are running.
    pub fn refresh_slot(&self, entry: &Entry) -> Option<RefreshSlot> {
        match self.refreshing.clone().try_acquire_owned() {
            Ok(permit) => Some(RefreshSlot { _permit: permit }),
            Err(_) => {
                entry.refresh_declined();
                self.prefetches_deferred.inc();
                None
            }
        }
    }

    pub fn count_served_stale(&self) {
        self.served_stale.inc();
    }

    /// Entries held (fresh or not).
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hickory_proto::op::ResponseCode;

    use super::fixtures::{a_record, answer, client_query, policy};
    use super::*;

    /// A cache of `capacity` entries, and the metrics it counts in.
    fn cache(capacity: usize) -> (Cache, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (Cache::new(capacity, "dns://test", metrics.clone()), metrics)
    }

    /// Resolves `query` through an exchange that counts the upstream questions in `asked` and
    /// answers A with one record and AAAA with NODATA.
    async fn fetch(
        cache: &Cache,
        query: &Query,
        missed_at: Instant,
        asked: &AtomicUsize,
    ) -> Resolved {
        let name = query.question.name.to_string();
        cache
            .resolve(
                query,
                PLAIN_VIEW,
                missed_at,
                &policy(),
                "test",
                |question| {
                    asked.fetch_add(1, Ordering::SeqCst);
                    let records = match question.qtype {
                        rtype::A => vec![a_record(&name, 300)],
                        _ => Vec::new(),
                    };
                    let answer = answer(&name, question.qtype, ResponseCode::NoError, records);
                    async move { Ok::<_, ()>(answer) }
                },
            )
            .await
    }

    fn gauge(metrics: &Metrics, kind: &str) -> i64 {
        metrics
            .cache_entries
            .with_label_values(&["dns://test", kind])
            .get()
    }

    fn evictions(metrics: &Metrics) -> u64 {
        metrics
            .cache_evictions
            .with_label_values(&["dns://test", "success"])
            .get()
    }

    /// A stub asks A and AAAA back to back: the AAAA's lookup misses while the A's fetch is
    /// out, and its own fetch starts only after that one stored the pair. It is answered from
    /// the pair, not asked upstream again; a refresh of that pair (its hit came later) is.
    #[tokio::test]
    async fn a_pair_stored_after_the_miss_answers_it_without_a_second_fetch() {
        let (cache, _) = cache(1000);
        let asked = AtomicUsize::new(0);
        let name = "web.default.svc.cluster.local.";
        let (a, aaaa) = (
            client_query(name, rtype::A),
            client_query(name, rtype::AAAA),
        );

        let missed_at = Instant::now();
        assert!(matches!(
            cache.lookup(&aaaa, PLAIN_VIEW, missed_at, Duration::ZERO),
            Lookup::Miss
        ));
        let first = fetch(&cache, &a, missed_at, &asked).await;
        assert!(first.entry().is_some());
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "one fetch asks both halves"
        );

        let second = fetch(&cache, &aaaa, missed_at, &asked).await;
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "the stored pair answered the AAAA"
        );
        let entry = second.entry().expect("answered from the stored pair");
        assert_eq!(entry.stored_at(), first.entry().unwrap().stored_at());

        let refresh = fetch(&cache, &a, Instant::now(), &asked).await;
        assert_eq!(asked.load(Ordering::SeqCst), 4, "a refresh fetches again");
        assert!(refresh.entry().unwrap().stored_at() > entry.stored_at());
    }

    /// The store reports an entry an insert replaces as it reports one evicted for capacity:
    /// only the second counts as an eviction, and the gauge counts each held entry once.
    #[tokio::test]
    async fn a_replaced_entry_is_not_an_eviction_and_the_gauge_counts_what_is_held() {
        let (cache, metrics) = cache(64);
        let asked = AtomicUsize::new(0);
        let query = client_query("web.default.svc.cluster.local.", rtype::A);
        for _ in 0..5 {
            fetch(&cache, &query, Instant::now(), &asked).await;
        }
        assert_eq!(asked.load(Ordering::SeqCst), 10);
        assert_eq!(gauge(&metrics, "success"), 1);
        assert_eq!(evictions(&metrics), 0);

        for i in 0..500 {
            let query = client_query(&format!("n{i}.default.svc.cluster.local."), rtype::A);
            fetch(&cache, &query, Instant::now(), &asked).await;
        }
        let held = cache.len() as u64;
        assert!(held < 501, "the capacity bound evicted: {held} held");
        assert_eq!(gauge(&metrics, "success") as u64, held);
        assert_eq!(evictions(&metrics), 501 - held);
    }
}
