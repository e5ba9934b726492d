//! The bound in front of one upstream: at most `limit` queries outstanding at once (UDP and
//! TCP alike), and a bounded queue of queries waiting for a slot, each for at most
//! `queue.timeout` or its own deadline. Beyond that a query is turned away at once, so the
//! caller answers stale or SERVFAIL instead of letting work pile up (docs/design.md, failure 1).
//!
//! **Fair turns (failure 7).** The queue is one FIFO per client (the query's source address;
//! prefetches and health probes are one client of their own), and a freed slot goes to the next client
//! in a round robin of the clients with queries waiting: deficit round robin with every query
//! costing one, so a quiet client's miss waits behind at most one query of each other waiting
//! client, however many the busiest has queued. Beside other waiting clients, a client may have
//! `queue.per_client` queries waiting, and its next miss is turned away at once
//! (`client_share`); alone, it may fill the queue, and when the queue is full a newcomer's
//! query pushes out the newest of the client with the most waiting (`client_share` too), so the
//! heaviest client's overflow is what gets turned away. Cache hits never come here.
//!
//! **Adaptive limit.** The slots start at `max_connections × max_inflight`. A query that times
//! out while the upstream went on answering others was sent with too many outstanding: the
//! limit goes below that number at once, and a tenth lower at most once per
//! [`DECREASE_INTERVAL`] (one burst of timeouts is one signal), never under `min_slots`. A
//! query that times out with no answer from the upstream since it was sent says nothing about
//! capacity (the upstream stalled or died, which its health checks and the pool's connection
//! replacement deal with) and leaves the limit as it is: otherwise the first second after a
//! stall would cut the limit to the handful of queries sent just before it, and the upstream,
//! back, would be asked a fraction of what it answers. While every slot is taken and answers come, it grows by one per
//! [`INCREASE_INTERVAL`] once [`HOLD`] has passed since the last decrease (by an eighth after
//! [`CALM`] without a timeout), back up to the maximum: slowly, since the only sign of too many
//! is a timeout a whole query timeout later, and each step past the upstream's capacity costs
//! the one query sent over it.
//! An upstream that drops what it cannot hold (dnsmasq past `dns-forward-max`) is then asked
//! about as much as it answers, and the fair share is a share of that.
//!
//! Overflow is answered SERVFAIL (or stale where the zone allows), as every other bound here:
//! a stub resolver treats it as this server failing now and tries its next server or retries,
//! and the reason is in `nodelocaldns_queue_rejected_total`. REFUSED would tell some stubs to
//! drop the server for good.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::pool::{PoolConfig, QueueConfig};
use crate::observe::upstream::UpstreamHandles;

/// The shortest time between two proportional decreases of the limit: a saturated upstream
/// times out many queries at once, and that is one signal, not many.
pub const DECREASE_INTERVAL: Duration = Duration::from_millis(500);

/// The shortest time between two increases of the limit.
pub const INCREASE_INTERVAL: Duration = Duration::from_secs(1);

/// After a decrease, the limit holds this long before it grows again: each increase past
/// what the upstream holds costs one query (the one sent over the limit, dropped), so the
/// probing is kept rare.
pub const HOLD: Duration = Duration::from_secs(10);

/// Without a timeout for this long, the limit grows by an eighth per increase, not by one.
pub const CALM: Duration = Duration::from_secs(60);

/// Clients whose rejections are remembered for `/debug/pool`; past that, new ones are not.
const MAX_REMEMBERED_CLIENTS: usize = 256;

/// Who a query to an upstream is for: the client whose miss it is, or the server itself (a
/// prefetch of a popular entry, a health probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requester {
    Client(IpAddr),
    Background,
}

impl std::fmt::Display for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requester::Client(ip) => ip.fmt(f),
            Requester::Background => f.write_str("(background)"),
        }
    }
}

/// Why a query got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Overloaded {
    #[error("upstream queue full ({0} waiting)")]
    Full(usize),
    #[error("no upstream slot within {0:?}")]
    Timeout(Duration),
    #[error("the client already has {0} queries waiting for this upstream")]
    ClientShare(usize),
}

impl Overloaded {
    /// The metric label for this rejection.
    pub fn reason(self) -> &'static str {
        match self {
            Overloaded::Full(_) => "full",
            Overloaded::Timeout(_) => "timeout",
            Overloaded::ClientShare(_) => "client_share",
        }
    }
}

/// Slots and the queue of one upstream.
pub struct Admission {
    state: Arc<Mutex<State>>,
    queue: QueueConfig,
}

/// What a waiting query is woken with when a full queue pushed it out for another client's:
/// no slot (a slot always comes with at least one query outstanding, itself).
const PUSHED_OUT: usize = 0;

/// A waiting query: woken with its slot (and the queries outstanding with it), or with
/// [`PUSHED_OUT`].
struct Waiter {
    id: u64,
    wake: oneshot::Sender<usize>,
}

/// Everything behind the lock: short sections, never held across an await.
struct State {
    inflight: usize,
    limit: Limit,
    /// The waiting queries of each client that has any.
    waiting: HashMap<Requester, VecDeque<Waiter>>,
    /// The clients of `waiting`, in turn order: the front one is served next.
    turns: VecDeque<Requester>,
    waiting_total: usize,
    next_id: u64,
    /// Queries turned away per client (`client_share` and `full`), for `/debug/pool`.
    rejected: HashMap<Requester, u64>,
    /// Answers the upstream has given (wrapping): a query that timed out compares it with
    /// what it was when the query was sent.
    answers: u64,
    gauges: Gauges,
}

/// The gauges the state keeps current.
struct Gauges {
    inflight: prometheus::IntGauge,
    limit: prometheus::IntGauge,
    clients: prometheus::IntGauge,
}

/// The adaptive number of slots.
struct Limit {
    current: usize,
    min: usize,
    max: usize,
    adaptive: bool,
    last_decrease: Option<Instant>,
    last_increase: Option<Instant>,
}

impl Limit {
    fn slots(&self) -> usize {
        self.current
    }

    /// An answer while every slot was taken (the caller checks): one slot more per [`INCREASE_INTERVAL`] once
    /// [`HOLD`] has passed since the last decrease, or an eighth more once no timeout has come
    /// for [`CALM`]. Slowly, because the only sign of too many is a timeout, a whole query
    /// timeout later.
    fn answered(&mut self, now: Instant) {
        let due = self
            .last_increase
            .is_none_or(|at| now.duration_since(at) >= INCREASE_INTERVAL);
        let held = self
            .last_decrease
            .is_some_and(|at| now.duration_since(at) < HOLD);
        if !self.adaptive || !due || held || self.current >= self.max {
            return;
        }
        let calm = self
            .last_decrease
            .is_none_or(|at| now.duration_since(at) >= CALM);
        let step = if calm { (self.current / 8).max(1) } else { 1 };
        self.current = (self.current + step).min(self.max);
        self.last_increase = Some(now);
    }

    /// A query sent with `sent_with` queries outstanding (itself included) got no answer while
    /// others were answered: that many was too many, so the limit goes below it at once; and,
    /// at most once per [`DECREASE_INTERVAL`], a tenth lower still, for an upstream that slows
    /// down as a whole.
    fn timed_out(&mut self, sent_with: usize, now: Instant) {
        if !self.adaptive {
            return;
        }
        self.current = self.current.min(sent_with.saturating_sub(1)).max(self.min);
        let recent = self
            .last_decrease
            .is_some_and(|at| now.duration_since(at) < DECREASE_INTERVAL);
        if !recent {
            self.current = (self.current - self.current / 10).max(self.min);
            self.last_decrease = Some(now);
        }
    }
}

/// A held slot; dropping it frees the slot for the next client in turn.
pub struct Slot {
    state: Arc<Mutex<State>>,
    /// Queries outstanding when this one got its slot, itself included.
    sent_with: usize,
    /// The upstream's answers so far when this one got its slot.
    answers_before: u64,
}

impl Slot {
    /// The upstream answered within its timeout: the limit may grow.
    pub fn answered(&self) {
        let mut state = lock(&self.state);
        state.answers = state.answers.wrapping_add(1);
        // Only a limit in full use grows (and only then is the clock read, off most misses).
        if state.inflight >= state.limit.slots() {
            state.limit.answered(Instant::now());
        }
    }

    /// The upstream gave no answer within the timeout: the limit shrinks if it answered
    /// others meanwhile.
    pub fn timed_out(&self) {
        let mut state = lock(&self.state);
        if state.answers != self.answers_before {
            state.limit.timed_out(self.sent_with, Instant::now());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.inflight -= 1;
        state.dispatch();
    }
}

/// The state's lock. A panic while it was held cannot leave the counts half-updated (every
/// section finishes its arithmetic before anything that could panic), so a poisoned lock is
/// used as it is rather than taking the upstream down with it.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    /// Hands free slots to waiting queries, one per client in turn.
    fn dispatch(&mut self) {
        while self.inflight < self.limit.slots() {
            let Some(requester) = self.turns.pop_front() else {
                break;
            };
            let Some(queue) = self.waiting.get_mut(&requester) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&requester);
            } else {
                self.turns.push_back(requester);
            }
            if let Some(waiter) = next {
                self.waiting_total -= 1;
                // A waiter that gave up removed itself first, under this lock; a send can only
                // fail for a receiver dropped without its guard, and then the slot stays free.
                if waiter.wake.send(self.inflight + 1).is_ok() {
                    self.inflight += 1;
                }
            }
        }
        self.gauges.inflight.set(self.inflight as i64);
        self.gauges.limit.set(self.limit.slots() as i64);
        self.gauges.clients.set(self.waiting.len() as i64);
    }

    /// Takes the waiter `id` of `requester` out of the queue. `false` when it is not there:
    /// it was given a slot.
    fn withdraw(&mut self, requester: Requester, id: u64) -> bool {
        let Some(queue) = self.waiting.get_mut(&requester) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.id == id) else {
            return false;
        };
        queue.remove(at);
        self.waiting_total -= 1;
        if queue.is_empty() {
            self.waiting.remove(&requester);
            self.turns.retain(|r| *r != requester);
        }
        self.gauges.clients.set(self.waiting.len() as i64);
        true
    }

    /// Makes room in a full queue for a client with `mine` waiting: the newest query of the
    /// client with the most waiting goes, when that client has more than `mine + 1`. Returns
    /// whether there is room now.
    fn push_out_heaviest(&mut self, mine: usize) -> bool {
        let heaviest = self
            .waiting
            .iter()
            .max_by_key(|(_, queue)| queue.len())
            .map(|(requester, queue)| (*requester, queue.len()));
        let Some((victim, most)) = heaviest else {
            return false;
        };
        if most <= mine + 1 {
            return false;
        }
        let Some(queue) = self.waiting.get_mut(&victim) else {
            return false;
        };
        if let Some(pushed_out) = queue.pop_back() {
            // Woken with no slot: its wait ends as this client's overflow.
            let _ = pushed_out.wake.send(PUSHED_OUT);
            self.waiting_total -= 1;
        }
        self.count_rejection(victim);
        true
    }

    fn count_rejection(&mut self, requester: Requester) {
        if let Some(count) = self.rejected.get_mut(&requester) {
            *count += 1;
        } else if self.rejected.len() < MAX_REMEMBERED_CLIENTS {
            self.rejected.insert(requester, 1);
        }
    }
}

/// What `/debug/pool` shows of one upstream's admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionReport {
    pub inflight: usize,
    pub limit: usize,
    /// Clients with queries waiting, most first.
    pub waiting: Vec<(Requester, usize)>,
    /// Clients turned away the most (remembered since start, for the first 256 clients).
    pub rejected: Vec<(Requester, u64)>,
}

impl Admission {
    pub fn new(config: &PoolConfig, metrics: &UpstreamHandles) -> Admission {
        let max = config.slots().max(1);
        let limit = Limit {
            current: max,
            min: config.min_slots.clamp(1, max),
            max,
            adaptive: config.adaptive,
            last_decrease: None,
            last_increase: None,
        };
        metrics.inflight_limit.set(limit.slots() as i64);
        Admission {
            state: Arc::new(Mutex::new(State {
                inflight: 0,
                limit,
                waiting: HashMap::new(),
                turns: VecDeque::new(),
                waiting_total: 0,
                next_id: 0,
                rejected: HashMap::new(),
                answers: 0,
                gauges: Gauges {
                    inflight: metrics.inflight.clone(),
                    limit: metrics.inflight_limit.clone(),
                    clients: metrics.waiting_clients.clone(),
                },
            })),
            queue: config.queue.clone(),
        }
    }

    /// A slot now, or after waiting for `requester`'s turn until `queue.timeout` or
    /// `deadline`, whichever comes first.
    pub async fn enter(
        &self,
        requester: Requester,
        deadline: Instant,
        metrics: &UpstreamHandles,
    ) -> Result<Slot, Overloaded> {
        let result = self.acquire(requester, deadline, metrics).await;
        if let Err(overloaded) = result {
            match overloaded {
                Overloaded::Full(_) => metrics.rejected_full.inc(),
                Overloaded::Timeout(_) => metrics.rejected_timeout.inc(),
                Overloaded::ClientShare(_) => metrics.rejected_client.inc(),
            }
            metrics.max_concurrent_rejects.inc();
        }
        result
    }

    async fn acquire(
        &self,
        requester: Requester,
        deadline: Instant,
        metrics: &UpstreamHandles,
    ) -> Result<Slot, Overloaded> {
        let (id, woken) = {
            let mut state = lock(&self.state);
            // A free slot is taken without queueing; with queries waiting there is none free,
            // because a freed slot goes to them first.
            if state.waiting_total == 0 && state.inflight < state.limit.slots() {
                state.inflight += 1;
                state.gauges.inflight.set(state.inflight as i64);
                metrics.queue_wait.observe(0.0);
                return Ok(self.slot(state.inflight, state.answers));
            }
            let mine = state.waiting.get(&requester).map_or(0, VecDeque::len);
            // A client alone in the queue may fill it; beside others it keeps to its share.
            let others = state.waiting.len() - usize::from(mine > 0);
            if mine >= self.queue.per_client && others > 0 {
                state.count_rejection(requester);
                return Err(Overloaded::ClientShare(mine));
            }
            if state.waiting_total >= self.queue.capacity && !state.push_out_heaviest(mine) {
                state.count_rejection(requester);
                return Err(Overloaded::Full(state.waiting_total));
            }
            let id = state.next_id;
            state.next_id += 1;
            let (wake, woken) = oneshot::channel();
            if mine == 0 {
                state.turns.push_back(requester);
            }
            state
                .waiting
                .entry(requester)
                .or_default()
                .push_back(Waiter { id, wake });
            state.waiting_total += 1;
            state.gauges.clients.set(state.waiting.len() as i64);
            (id, woken)
        };
        metrics.queue_depth.inc();
        let mut in_line = InLine {
            admission: self,
            requester,
            id,
            depth: &metrics.queue_depth,
            woken,
            served: false,
        };
        let started = Instant::now();
        let until = deadline.min(started + self.queue.timeout);
        match tokio::time::timeout_at(until, &mut in_line.woken).await {
            Ok(Ok(PUSHED_OUT)) => {
                // Already out of the queue, and no slot taken.
                in_line.served = true;
                Err(Overloaded::ClientShare(self.queue.per_client))
            }
            Ok(Ok(sent_with)) => {
                in_line.served = true;
                metrics.queue_wait.observe(started.elapsed().as_secs_f64());
                let answers_before = lock(&self.state).answers;
                Ok(self.slot(sent_with, answers_before))
            }
            // The sender is dropped only with the admission itself.
            Ok(Err(_)) | Err(_) => Err(Overloaded::Timeout(until - started)),
        }
    }

    fn slot(&self, sent_with: usize, answers_before: u64) -> Slot {
        Slot {
            state: self.state.clone(),
            sent_with,
            answers_before,
        }
    }

    /// The slots, the clients waiting and the clients turned away most, for `/debug/pool`.
    pub fn report(&self, most: usize) -> AdmissionReport {
        let state = lock(&self.state);
        let mut waiting: Vec<(Requester, usize)> =
            state.waiting.iter().map(|(r, q)| (*r, q.len())).collect();
        waiting.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        waiting.truncate(most);
        let mut rejected: Vec<(Requester, u64)> =
            state.rejected.iter().map(|(r, n)| (*r, *n)).collect();
        rejected.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        rejected.truncate(most);
        AdmissionReport {
            inflight: state.inflight,
            limit: state.limit.slots(),
            waiting,
            rejected,
        }
    }
}

/// A place in the queue, given up however the wait ends (a slot, a timeout, or the caller
/// dropping the query). A slot handed over in the same instant the wait gave up is handed
/// back, to the next client in turn.
struct InLine<'a> {
    admission: &'a Admission,
    requester: Requester,
    id: u64,
    depth: &'a prometheus::IntGauge,
    woken: oneshot::Receiver<usize>,
    /// The wake-up was taken: a slot now held, or a push-out.
    served: bool,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.depth.dec();
        if self.served {
            return;
        }
        let mut state = lock(&self.admission.state);
        if state.withdraw(self.requester, self.id) {
            return;
        }
        // Out of the queue already: what it was woken with was sent under the lock we hold.
        match self.woken.try_recv() {
            Ok(PUSHED_OUT) | Err(_) => {}
            Ok(_) => {
                // A slot nobody will use.
                state.inflight -= 1;
                state.dispatch();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Metrics;

    fn admission(slots: usize, per_client: usize) -> (Admission, UpstreamHandles) {
        let metrics = Metrics::new().upstream.handles("192.0.2.1:53");
        let config = PoolConfig {
            max_connections: 1,
            max_inflight: slots,
            min_slots: 1,
            queue: QueueConfig {
                capacity: 100,
                timeout: Duration::from_secs(5),
                per_client,
            },
            ..PoolConfig::default()
        };
        (Admission::new(&config, &metrics), metrics)
    }

    fn client(last: u8) -> Requester {
        Requester::Client(IpAddr::from([10, 0, 0, last]))
    }

    /// A free slot for `client(who)`, taken at once.
    async fn slot_for(admission: &Admission, metrics: &UpstreamHandles, who: u8) -> Slot {
        let deadline = Instant::now() + Duration::from_secs(10);
        admission
            .enter(client(who), deadline, metrics)
            .await
            .expect("a free slot")
    }

    /// With one slot busy, a heavy client queues five queries, then a quiet one asks: the
    /// quiet query is served second, after one of the heavy client's, not sixth.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_client_waits_one_turn_not_behind_the_heavy_clients_queue() {
        let (admission, metrics) = admission(1, 64);
        let admission = Arc::new(admission);
        let metrics = Arc::new(metrics);
        let deadline = Instant::now() + Duration::from_secs(10);
        let busy = slot_for(&admission, &metrics, 9).await;
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        let asks = [1, 1, 1, 1, 1, 2];
        for (n, who) in asks.into_iter().enumerate() {
            let (admission, metrics, order) =
                (admission.clone(), metrics.clone(), order_tx.clone());
            tasks.push(tokio::spawn(async move {
                let slot = admission
                    .enter(client(who), deadline, &metrics)
                    .await
                    .unwrap();
                order.send((n, who)).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(slot);
            }));
            // In order of arrival.
            tokio::task::yield_now().await;
        }
        assert_eq!(admission.report(10).waiting.len(), 2, "two clients waiting");
        drop(busy);
        for task in tasks {
            task.await.unwrap();
        }
        let mut order = Vec::new();
        while let Ok((_, who)) = order_rx.try_recv() {
            order.push(who);
        }
        assert_eq!(order, vec![1, 2, 1, 1, 1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_past_its_share_is_turned_away_while_others_still_queue() {
        let (admission, metrics) = admission(1, 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        let _busy = slot_for(&admission, &metrics, 9).await;
        let heavy = client(1);
        let first = admission.enter(heavy, deadline, &metrics);
        let second = admission.enter(heavy, deadline, &metrics);
        let quiet = admission.enter(client(2), deadline, &metrics);
        tokio::pin!(first, second, quiet);
        // Three in line, none served: the slot stays busy.
        assert!(futures::poll!(first.as_mut()).is_pending());
        assert!(futures::poll!(second.as_mut()).is_pending());
        assert!(futures::poll!(quiet.as_mut()).is_pending());
        let third = admission.enter(heavy, deadline, &metrics).await;
        assert_eq!(third.err(), Some(Overloaded::ClientShare(2)));
        assert_eq!(metrics.rejected_client.get(), 1);
        let report = admission.report(10);
        assert_eq!(report.rejected, vec![(heavy, 1)]);
        assert_eq!(report.waiting.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_pushes_out_the_heaviest_clients_newest_query() {
        let (admission, metrics) = admission(1, 64);
        let admission = Admission {
            queue: QueueConfig {
                capacity: 3,
                ..admission.queue.clone()
            },
            ..admission
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let _busy = slot_for(&admission, &metrics, 9).await;
        let heavy = client(1);
        let first = admission.enter(heavy, deadline, &metrics);
        let second = admission.enter(heavy, deadline, &metrics);
        let third = admission.enter(heavy, deadline, &metrics);
        tokio::pin!(first, second, third);
        assert!(futures::poll!(first.as_mut()).is_pending());
        assert!(futures::poll!(second.as_mut()).is_pending());
        assert!(
            futures::poll!(third.as_mut()).is_pending(),
            "alone, it may fill the queue"
        );
        let quiet = admission.enter(client(2), deadline, &metrics);
        tokio::pin!(quiet);
        assert!(futures::poll!(quiet.as_mut()).is_pending(), "room was made");
        assert_eq!(
            third.await.err(),
            Some(Overloaded::ClientShare(64)),
            "the newest of the heaviest went"
        );
        assert!(futures::poll!(second.as_mut()).is_pending());
        let report = admission.report(10);
        assert_eq!(report.waiting.len(), 2);
        assert_eq!(report.rejected, vec![(heavy, 1)]);
        assert_eq!(report.inflight, 1, "pushing out takes no slot");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_given_up_leaves_no_slot_taken_and_no_place_in_line() {
        let (admission, metrics) = admission(1, 64);
        let deadline = Instant::now() + Duration::from_millis(100);
        let busy = slot_for(&admission, &metrics, 9).await;
        let waited = admission.enter(client(1), deadline, &metrics).await;
        assert!(matches!(waited, Err(Overloaded::Timeout(_))));
        assert_eq!(admission.report(10).waiting, vec![]);
        drop(busy);
        let report = admission.report(10);
        assert_eq!((report.inflight, metrics.queue_depth.get()), (0, 0));
        let later = Instant::now() + Duration::from_secs(1);
        assert!(admission.enter(client(1), later, &metrics).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_while_others_are_answered_lowers_the_limit_below_what_it_was_sent_with_and_answers_raise_it_slowly()
     {
        let (admission, metrics) = admission(64, 64);
        let mut held = slots_for(&admission, &metrics, 30).await;
        held[29].answered();
        // The 21st was one too many: below 20, then a tenth off.
        held[20].timed_out();
        assert_eq!(admission.report(1).limit, 18);
        held[29].timed_out();
        assert_eq!(
            admission.report(1).limit,
            18,
            "one burst, one proportional step"
        );
        tokio::time::advance(DECREASE_INTERVAL).await;
        held[5].timed_out();
        assert_eq!(admission.report(1).limit, 5, "below the 6 it was sent with");
        held.truncate(5);
        held[0].answered();
        assert_eq!(admission.report(1).limit, 5, "held after a decrease");
        tokio::time::advance(HOLD).await;
        for _ in 0..10 {
            held[0].answered();
        }
        assert_eq!(
            admission.report(1).limit,
            6,
            "saturated: one slot per interval"
        );
        tokio::time::advance(INCREASE_INTERVAL).await;
        held[0].answered();
        assert_eq!(
            admission.report(1).limit,
            6,
            "6 slots, 5 taken: not saturated"
        );
        held.push(slot_for(&admission, &metrics, 1).await);
        held[0].answered();
        assert_eq!(admission.report(1).limit, 7);
        tokio::time::advance(CALM).await;
        held.push(slot_for(&admission, &metrics, 1).await);
        held[0].answered();
        assert_eq!(
            admission.report(1).limit,
            8,
            "calm: an eighth, at least one"
        );
        drop(held);
        assert_eq!(metrics.inflight_limit.get(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_with_no_answer_since_it_was_sent_leaves_the_limit() {
        let (admission, metrics) = admission(64, 64);
        let stalled: Vec<Slot> = slots_for(&admission, &metrics, 30).await;
        for slot in &stalled {
            slot.timed_out();
        }
        assert_eq!(
            admission.report(1).limit,
            64,
            "a stall says nothing about capacity"
        );
        let answered = slot_for(&admission, &metrics, 2).await;
        answered.answered();
        stalled[20].timed_out();
        assert_eq!(
            admission.report(1).limit,
            18,
            "answered meanwhile: too many outstanding"
        );
    }

    async fn slots_for(admission: &Admission, metrics: &UpstreamHandles, n: usize) -> Vec<Slot> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(slot_for(admission, metrics, 1).await);
        }
        held
    }
}
