//! Everything we send to one upstream address: the admission bound (slots and queue, for UDP
//! and TCP alike) and a bounded pool of pipelined TCP connections (docs/design.md, failure 1).
//!
//! At most `max_connections` connections, each with up to `max_inflight` queries outstanding
//! under IDs unique on that connection. A query goes to the least loaded connection; a new
//! connection opens only while every open one is busy and the bound allows. A connection is
//! closed when it has been idle for exactly `idle_timeout`, when it has carried
//! `max_queries_per_connection` or reached `max_age` (it drains first), and at once when the
//! server closes or resets it, or leaves it silent for a whole query timeout (see
//! `Overdue::Unresponsive`): its outstanding queries then go once more over another
//! connection if their deadline allows.
//!
//! A `transport: tls` upstream's connections are the same, over TLS (RFC 7858): the handshake
//! is part of the connect (and of `connect_timeout`), and the stream the connection serves is
//! the TLS stream instead of the socket. The zone's one rustls config keeps the sessions the
//! upstream hands out, so a reconnect resumes rather than repeating the full handshake.
//!
//! Each connection is a task owned by the server's [`Tasks`], and the pools of one config end
//! with it: when a reload replaces the config and the old config's last query has ended, its
//! [`Pools`] are dropped, and each of its connections closes (`retired`) once what it still
//! carries is answered, instead of living on until it idles out.
//!
//! The connection list lives under one mutex, touched briefly per query (pick and count); each
//! connection is a task that owns its socket, writes the queries handed to it and matches the
//! answers by ID and question. A query's answer comes back over a reply channel the pool keeps
//! and reuses, so a pooled query allocates nothing of its own. A read that leaves answers due
//! is acknowledged at once (`acknowledge_now`): an upstream with Nagle's algorithm on
//! would otherwise hold the next answer for our delayed ACK, 40 ms.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use prometheus::IntCounter;
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use super::admission::{Admission, Overloaded, Requester, Slot};
use super::{Answer, ExchangeError};
use crate::config::pool::PoolConfig;
use crate::config::tls::TlsConfig;
use crate::config::{Transport, ZoneConfig};
use crate::observe::Metrics;
use crate::observe::labels;
use crate::observe::upstream::{CloseReason, UpstreamHandles};
use crate::tasks::{TaskKind, Tasks};
use crate::wire::answer::AnswerError;
use crate::wire::framing::FrameBuffer;
use crate::wire::query::{Question, UpstreamFlags, append_upstream, message_id};

/// The pools of a server, one per upstream address (and whether it is reached over TLS):
/// zones that forward to the same address (cluster.local, in-addr.arpa and ip6.arpa all go to
/// kube-dns) share its bound. Dropping them (the config they belong to is gone) retires every
/// pool's connections.
pub struct Pools {
    by_addr: HashMap<(SocketAddr, bool), Arc<Pool>>,
    tasks: Tasks,
}

impl Drop for Pools {
    fn drop(&mut self) {
        for pool in self.by_addr.values() {
            pool.retired.cancel();
        }
    }
}

impl Pools {
    /// No pools yet; their connections will run as `tasks`.
    pub fn new(tasks: Tasks) -> Pools {
        Pools {
            by_addr: HashMap::new(),
            tasks,
        }
    }

    /// The pool of `addr` as `zone` reaches it, made with the zone's `pool:` section (and TLS
    /// settings) the first time the address is named. A later zone naming it with a different
    /// `pool:` or `tls:` section shares the first one's (logged).
    pub fn get(&mut self, addr: SocketAddr, zone: &ZoneConfig, metrics: &Metrics) -> Arc<Pool> {
        let config = &zone.pool;
        let over_tls = zone.transport == Transport::Tls;
        // A tls zone's pool is a TLS one even without its section loaded: it then fails its
        // connects rather than sending in the clear.
        let settings = over_tls.then(|| zone.tls.clone().unwrap_or_default());
        let pool = self.by_addr.entry((addr, over_tls)).or_insert_with(|| {
            let tls = settings.clone().map(|settings| Tls {
                connector: settings
                    .client
                    .as_ref()
                    .map(|client| TlsConnector::from(client.config.clone())),
                server_name: settings.server_name(addr.ip()),
                settings,
            });
            Arc::new(Pool::new(addr, config.clone(), tls, metrics, &self.tasks))
        });
        if pool.config != *config || pool.tls.as_ref().map(|tls| &tls.settings) != settings.as_ref()
        {
            tracing::warn!(
                upstream = %addr,
                "zones that forward to this upstream have different pool settings; the first zone's apply to all"
            );
        }
        pool.clone()
    }

    /// Where the pools' connections and the groups' probes run.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Every pool, in address order.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<Arc<Pool>> = self.by_addr.values().cloned().collect();
        pools.sort_by_key(|pool| (pool.addr, pool.tls.is_some()));
        pools
    }
}

/// How a TLS pool's connections are made: the zone's client config, and the name the
/// upstream's certificate must carry.
struct Tls {
    /// What the first zone naming the upstream said, to tell a later one that differs.
    settings: TlsConfig,
    /// None only if the config was not loaded (`Config::from_yaml` builds it): every connect
    /// then fails rather than going out in the clear.
    connector: Option<TlsConnector>,
    server_name: ServerName<'static>,
}

/// One upstream address: its slots, its queue and its TCP connections.
pub struct Pool {
    addr: SocketAddr,
    config: PoolConfig,
    /// Set for a DNS-over-TLS upstream: every connection handshakes first.
    tls: Option<Tls>,
    admission: Admission,
    connections: Mutex<Connections>,
    /// Woken when a connection closes or a full one has room again, for queries that found
    /// every connection full (possible only while retiring connections drain).
    room: Notify,
    pub metrics: UpstreamHandles,
    /// Answers ignored for a wrong ID, question or source address.
    pub mismatched: IntCounter,
    /// Where connection tasks run.
    tasks: Tasks,
    /// Cancelled when the config this pool belongs to is gone: connections drain and close.
    retired: CancellationToken,
    /// `nodelocaldns_upstream_pools`, one of which is this pool while it lives.
    alive: prometheus::IntGauge,
    /// Reply channels of ended exchanges, for the next ones: at most one per slot.
    spare_replies: Mutex<Vec<ReplyReceiver>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.alive.dec();
    }
}

/// Why a query handed to a connection got no answer from it.
#[derive(Debug)]
enum Failure {
    /// The connection closed (or failed to write) before the answer: worth another try.
    Closed,
    Connect(std::io::Error),
    Malformed(AnswerError),
}

/// Where a connection sends a query's outcome. Dropped unsent (the connection went away), its
/// receiver reads an error: the query is retried as if the connection had closed.
type Reply = multishot::Sender<Result<Answer, Failure>>;
/// A reusable reply channel: each exchange takes one from the pool's spares and gives it back.
type ReplyReceiver = multishot::Receiver<Result<Answer, Failure>>;

/// A query on its way to a connection, which writes it (with an ID of its own) straight into
/// its write batch: no message buffer per query.
struct Request {
    question: Question,
    flags: UpstreamFlags,
    udp_size: u16,
    deadline: Instant,
    /// Handed over with most of its time left: its expiry unanswered can tell a silent
    /// connection.
    telling: bool,
    reply: Reply,
}

/// A reply channel taken from a pool's spares for one exchange, given back when it ends.
struct SpareReply<'a> {
    spares: &'a Mutex<Vec<ReplyReceiver>>,
    capacity: usize,
    /// Always there until the drop gives it back (moved out without making a new one, which
    /// would allocate).
    receiver: Option<ReplyReceiver>,
}

impl<'a> SpareReply<'a> {
    fn take(pool: &'a Pool) -> SpareReply<'a> {
        let receiver = lock(&pool.spare_replies).pop().unwrap_or_default();
        SpareReply {
            spares: &pool.spare_replies,
            capacity: pool.config.slots(),
            receiver: Some(receiver),
        }
    }

    /// The sending half for the next query of the exchange. A channel whose last sender is
    /// still held (its query expired here, and the connection has not yet dropped it) is
    /// replaced by a new one.
    fn sender(&mut self) -> Reply {
        let receiver = self.receiver.get_or_insert_default();
        if let Some(sender) = receiver.sender() {
            return sender;
        }
        let receiver = self.receiver.insert(ReplyReceiver::new());
        receiver.sender().expect("a new channel has no sender yet")
    }

    /// The outcome of the query last sent with [`SpareReply::sender`]: an error when its
    /// sender was dropped unsent.
    async fn recv(&mut self) -> Result<Result<Answer, Failure>, multishot::RecvError> {
        self.receiver.get_or_insert_default().recv().await
    }
}

impl Drop for SpareReply<'_> {
    fn drop(&mut self) {
        let mut spares = lock(self.spares);
        if spares.len() < self.capacity {
            spares.extend(self.receiver.take());
        }
    }
}

/// Locks one of the pool's mutexes. They guard plain counters and lists; a panic elsewhere
/// cannot leave them half-updated in a way worse than refusing all upstream traffic would be.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Clients `/debug/pool` lists per upstream: those with the most queries waiting, and those
/// turned away the most.
const HEAVIEST_SHOWN: usize = 10;

impl Pool {
    fn new(
        addr: SocketAddr,
        config: PoolConfig,
        tls: Option<Tls>,
        metrics: &Metrics,
        tasks: &Tasks,
    ) -> Pool {
        let label = labels::upstream(addr);
        metrics.upstream_pools.inc();
        let handles = metrics.upstream.handles(&label);
        Pool {
            tasks: tasks.clone(),
            retired: CancellationToken::new(),
            alive: metrics.upstream_pools.clone(),
            addr,
            admission: Admission::new(&config, &handles),
            config,
            tls,
            connections: Mutex::new(Connections::default()),
            room: Notify::new(),
            metrics: handles,
            mismatched: metrics.upstream_mismatched.with_label_values(&[&label]),
            spare_replies: Mutex::new(Vec::new()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the upstream is reached over TLS only (never over UDP).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A slot to send one query (over UDP or TCP) for `requester`, waiting for its turn if
    /// need be.
    pub async fn admit(&self, requester: Requester, deadline: Instant) -> Result<Slot, Overloaded> {
        self.admission
            .enter(requester, deadline, &self.metrics)
            .await
    }

    /// Asks `question` over a pooled connection; the caller holds a slot. A query whose
    /// connection closes before the answer goes once more, over another connection.
    pub async fn exchange_tcp(
        self: &Arc<Self>,
        _slot: &Slot,
        question: &Question,
        flags: UpstreamFlags,
        udp_size: u16,
        timeout: Duration,
    ) -> Result<Answer, ExchangeError> {
        let deadline = Instant::now() + timeout;
        let mut reply = SpareReply::take(self);
        let mut retried = false;
        // A query handed over with most of its time left tells, if it expires unanswered,
        // that its connection went silent (see `Overdue::Unresponsive`); a retry late in its
        // time says little about the connection it lands on.
        let mut telling = true;
        loop {
            if !self
                .submit(question, flags, udp_size, deadline, telling, &mut reply)
                .await
            {
                return Err(ExchangeError::Timeout(timeout));
            }
            let outcome = tokio::time::timeout_at(deadline, reply.recv())
                .await
                .map_err(|_| ExchangeError::Timeout(timeout))?;
            match outcome {
                Ok(Ok(answer)) => return Ok(answer),
                // A dropped reply means the connection went away without a word: also closed.
                Ok(Err(Failure::Closed)) | Err(_) if !retried => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Its connection dropped it for its deadline: asking again is too late.
                    if left.is_zero() {
                        return Err(ExchangeError::Timeout(timeout));
                    }
                    retried = true;
                    telling = left >= timeout / 2;
                    self.metrics.retries.inc();
                }
                Ok(Err(Failure::Closed)) | Err(_) => return Err(ExchangeError::Closed),
                Ok(Err(Failure::Connect(err))) => return Err(ExchangeError::Network(err)),
                Ok(Err(Failure::Malformed(err))) => return Err(ExchangeError::Malformed(err)),
            }
        }
    }

    /// Hands the query to a connection, its outcome to come back over `reply`; false when
    /// none had room before `deadline`.
    async fn submit(
        self: &Arc<Self>,
        question: &Question,
        flags: UpstreamFlags,
        udp_size: u16,
        deadline: Instant,
        telling: bool,
        reply: &mut SpareReply<'_>,
    ) -> bool {
        loop {
            // Registered before looking, so a connection freed in between still wakes us.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let request = Request {
                question: *question,
                flags,
                udp_size,
                deadline,
                telling,
                reply: reply.sender(),
            };
            if self.assign(request) {
                return true;
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return false;
            }
        }
    }

    /// Gives `request` to the least loaded connection, opening one when all are busy and the
    /// bound allows. False when every connection is full and no more may open.
    fn assign(self: &Arc<Self>, request: Request) -> bool {
        let mut connections = self.lock();
        let index = match connections.pick(self.config.max_connections, self.config.max_inflight) {
            Pick::Use(index) => index,
            Pick::Open => {
                let (sender, receiver) = mpsc::unbounded_channel();
                let id = connections.open(sender);
                self.metrics.idle.inc();
                self.tasks.spawn(
                    TaskKind::Connection,
                    run_connection(self.clone(), id, receiver),
                );
                connections.list.len() - 1
            }
            Pick::Wait => return false,
        };
        let connection = &mut connections.list[index];
        if connection.inflight == 0 {
            self.metrics.idle.dec();
            self.metrics.busy.inc();
        }
        connection.inflight += 1;
        connection.assigned += 1;
        let limit = self.config.max_queries_per_connection;
        if limit > 0 && connection.assigned >= limit {
            connection.accepting = false;
        }
        // A connection's task takes its entry out of the list (under this lock) before it
        // stops receiving, so a listed connection takes the request; if it did not, the
        // dropped reply reads as a closed connection and the query goes elsewhere.
        let _ = connection.sender.send(request);
        true
    }

    fn lock(&self) -> MutexGuard<'_, Connections> {
        lock(&self.connections)
    }

    /// A query on connection `id` ended (answered, failed or expired).
    fn finished(&self, id: u64) {
        let mut connections = self.lock();
        let Some(connection) = connections.get_mut(id) else {
            return;
        };
        let was_full = connection.inflight >= self.config.max_inflight;
        connection.inflight = connection.inflight.saturating_sub(1);
        if connection.inflight == 0 {
            self.metrics.busy.dec();
            self.metrics.idle.inc();
        }
        drop(connections);
        if was_full {
            self.room.notify_waiters();
        }
    }

    /// Closes connection `id` to new queries if nothing is in flight or on its way to it.
    /// It stays in the pool, counted against `max_connections`, until its task has closed the
    /// socket and removes it: a replacement never opens beside a socket still open.
    fn close_if_idle(&self, id: u64) -> bool {
        let mut connections = self.lock();
        match connections.get_mut(id) {
            Some(connection) if connection.inflight > 0 => false,
            Some(connection) => {
                connection.accepting = false;
                true
            }
            None => true,
        }
    }

    /// Connection `id` takes no more queries (it drains, then closes).
    fn stop_accepting(&self, id: u64) {
        if let Some(connection) = self.lock().get_mut(id) {
            connection.accepting = false;
        }
    }

    fn remove(&self, id: u64) {
        let mut connections = self.lock();
        self.remove_locked(&mut connections, id);
    }

    fn remove_locked(&self, connections: &mut Connections, id: u64) {
        if let Some(index) = connections.list.iter().position(|c| c.id == id) {
            let connection = connections.list.swap_remove(index);
            if connection.inflight == 0 {
                self.metrics.idle.dec();
            } else {
                self.metrics.busy.dec();
            }
            self.room.notify_waiters();
        }
    }

    /// The pool's state for `/debug/pool`: slots in use, queue, and one line per connection.
    pub fn describe(&self) -> String {
        let admission = self.admission.report(HEAVIEST_SHOWN);
        let mut out = format!(
            "upstream {}{}: {} of {} slots in use (limit now {}), {} waiting (queue capacity {}, \
             {} per client)\n",
            self.addr,
            if self.is_tls() { " over TLS" } else { "" },
            admission.inflight,
            self.config.slots(),
            admission.limit,
            self.metrics.queue_depth.get(),
            self.config.queue.capacity,
            self.config.queue.per_client,
        );
        for (client, waiting) in &admission.waiting {
            out.push_str(&format!("  client {client}: {waiting} waiting\n"));
        }
        for (client, rejected) in &admission.rejected {
            out.push_str(&format!(
                "  client {client}: {rejected} turned away since start\n"
            ));
        }
        for c in &self.lock().list {
            out.push_str(&format!(
                "  connection {}: {} in flight, {} queries{}\n",
                c.id,
                c.inflight,
                c.assigned,
                if c.accepting { "" } else { ", draining" }
            ));
        }
        out
    }
}

/// The open connections of one upstream as the pool sees them.
#[derive(Default)]
struct Connections {
    list: Vec<Connection>,
    next_id: u64,
}

struct Connection {
    id: u64,
    /// Queries handed to the connection and not yet ended (including ones still in its
    /// channel): the connection is idle only at 0.
    inflight: usize,
    assigned: u64,
    accepting: bool,
    sender: mpsc::UnboundedSender<Request>,
}

enum Pick {
    Use(usize),
    Open,
    Wait,
}

impl Connections {
    fn pick(&self, max_connections: usize, max_inflight: usize) -> Pick {
        let least_loaded = self
            .list
            .iter()
            .enumerate()
            .filter(|(_, c)| c.accepting && c.inflight < max_inflight)
            .min_by_key(|(_, c)| c.inflight);
        match least_loaded {
            Some((index, c)) if c.inflight == 0 => Pick::Use(index),
            // Spread over more connections before pipelining deeper: dnsmasq and CoreDNS
            // (miekg/dns reads the next query only after serving the last) answer one query
            // at a time per connection, so a query pipelined behind another waits for it.
            _ if self.list.len() < max_connections => Pick::Open,
            Some((index, _)) => Pick::Use(index),
            None => Pick::Wait,
        }
    }

    fn open(&mut self, sender: mpsc::UnboundedSender<Request>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.list.push(Connection {
            id,
            inflight: 0,
            assigned: 0,
            accepting: true,
            sender,
        });
        id
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Connection> {
        self.list.iter_mut().find(|c| c.id == id)
    }
}

/// A query written on a connection and not yet answered.
struct Outstanding {
    question: Question,
    deadline: Instant,
    reply: Reply,
    /// The connection's count of reads when the query was written, if the query came with
    /// most of its time left: still the same at its deadline means the connection said
    /// nothing in all that time.
    reads_when_written: Option<u64>,
}

/// What dropping the queries past their deadline found, the gravest last.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Overdue {
    None,
    Expired,
    /// A query reached its deadline with nothing read on the connection since it was written,
    /// and nothing waiting to be read. The connection is presumed dead: typically a backend
    /// that went away behind a Service IP without a reset, whose established connection stays
    /// pinned to it by conntrack while new ones reach live backends. Kept, it would take its
    /// share of queries into the void until `max_age`; CoreDNS's forward closes a connection
    /// on any read timeout for the same reason.
    Unresponsive,
}

/// A connection's byte stream: the socket itself, or TLS over it. Answers are read and
/// queries written through it; the socket underneath is asked for the TCP-level tricks
/// ([`acknowledge_now`], [`has_unread`]).
trait PoolStream: AsyncRead + AsyncWrite + Unpin {
    fn socket(&self) -> &TcpStream;
}

impl PoolStream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl PoolStream for TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A connected connection, in the clear or over TLS.
enum Connected {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to the pool's upstream, and handshakes if it is a TLS one.
async fn connect(pool: &Pool) -> std::io::Result<Connected> {
    let stream = TcpStream::connect(pool.addr).await?;
    // Queries are small and latency matters more than packing segments.
    let _ = stream.set_nodelay(true);
    let Some(tls) = &pool.tls else {
        return Ok(Connected::Tcp(stream));
    };
    let Some(connector) = &tls.connector else {
        return Err(std::io::Error::other(
            "the zone's TLS settings were not loaded",
        ));
    };
    match connector.connect(tls.server_name.clone(), stream).await {
        Ok(stream) => {
            let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
            pool.metrics.tls_handshake(resumed).inc();
            Ok(Connected::Tls(Box::new(stream)))
        }
        Err(err) => {
            // A certificate that does not verify (wrong name, unknown CA), or an upstream
            // that does not speak TLS: the error says which, in the exchange's log line.
            pool.metrics.tls_failures.inc();
            Err(err)
        }
    }
}

/// The task of one connection: connect, then serve until a close condition.
async fn run_connection(pool: Arc<Pool>, id: u64, mut requests: mpsc::UnboundedReceiver<Request>) {
    let connected = tokio::time::timeout(pool.config.connect_timeout, connect(&pool))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {:?}", pool.config.connect_timeout),
            ))
        });
    let connected = match connected {
        Ok(connected) => connected,
        Err(err) => {
            pool.metrics.connect_errors.inc();
            pool.remove(id);
            requests.close();
            while let Ok(request) = requests.try_recv() {
                let copy = std::io::Error::new(err.kind(), err.to_string());
                request.reply.send(Err(Failure::Connect(copy)));
            }
            return;
        }
    };
    pool.metrics.connects.inc();
    match connected {
        Connected::Tcp(stream) => serve_connection(&pool, id, stream, requests).await,
        Connected::Tls(stream) => serve_connection(&pool, id, *stream, requests).await,
    }
}

/// Serves a connected connection until a close condition, then hands back what it carried.
async fn serve_connection(
    pool: &Pool,
    id: u64,
    stream: impl PoolStream,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let mut connection = Live {
        pool,
        id,
        outstanding: HashMap::default(),
        expiries: BinaryHeap::new(),
        queries: 0,
        reads: 0,
    };
    let reason = connection.serve(stream, &mut requests).await;
    pool.remove(id);
    pool.metrics.closed(reason).inc();
    pool.metrics
        .queries_per_connection
        .observe(connection.queries as f64);
    for (_, outstanding) in connection.outstanding.drain() {
        outstanding.reply.send(Err(Failure::Closed));
    }
    requests.close();
    while let Ok(request) = requests.try_recv() {
        request.reply.send(Err(Failure::Closed));
    }
}

/// Acknowledges at once what the connection has received, instead of after the kernel's
/// delayed-ACK timer (40 ms and more on Linux).
///
/// Asked after each read that leaves answers due on the connection. A server that leaves
/// Nagle's algorithm on (knotd does) holds a small segment while an earlier one is not yet
/// acknowledged: every answer after the first of a pipelined batch, or a message written
/// apart from its length. We would acknowledge only with our next query on that connection,
/// and a pool that spreads its queries can leave a connection without one for longer than the
/// timer, so the answer waited 40 ms. TCP_QUICKACK is not sticky (the kernel goes back to
/// delayed ACKs by itself), so it is asked for after every such read. A failure only leaves
/// the delay in place.
fn acknowledge_now(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// Whether the connection has bytes (or its end) waiting to be read: an answer that came
/// just as the timer fired, which the select had not yet taken.
fn has_unread(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::uninit()];
    socket2::SockRef::from(stream).peek(&mut byte).is_ok()
}

/// A connected connection's state, owned by its task.
struct Live<'a> {
    pool: &'a Pool,
    id: u64,
    /// By the ID the query went out with. The IDs are ours and random, so the map needs no
    /// flood-resistant hash: foldhash rather than SipHash, which an answer's three lookups
    /// paid for.
    outstanding: HashMap<u16, Outstanding, foldhash::fast::RandomState>,
    /// Deadlines of outstanding queries, earliest first (entries already answered linger
    /// until popped and are skipped then).
    expiries: BinaryHeap<Reverse<(Instant, u16)>>,
    queries: u64,
    /// Reads that returned bytes, to tell a connection that answers slowly from one that
    /// answers nothing.
    reads: u64,
}

impl Live<'_> {
    async fn serve(
        &mut self,
        mut stream: impl PoolStream,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> CloseReason {
        let config = &self.pool.config;
        let mut frames = FrameBuffer::default();
        let opened = Instant::now();
        let never = opened + Duration::from_secs(365 * 24 * 3600);
        let retire_at = (!config.max_age.is_zero()).then(|| opened + config.max_age);
        let mut retiring: Option<CloseReason> = None;
        let mut idle_at: Option<Instant> = None;
        let mut batch = Vec::new();
        // One timer for every deadline of the connection (the earliest query expiry, the idle
        // close, max_age), armed lazily: moved earlier when a sooner deadline appears, never
        // later. When it fires early (the deadline it was set for has moved on, as the
        // earliest expiry does with every answer) it is simply set again, so a busy connection
        // re-arms it about once per query timeout rather than up to three timers per frame.
        let timer = tokio::time::sleep_until(never);
        tokio::pin!(timer);
        let mut armed = never;
        loop {
            let next_expiry = self.expiries.peek().map(|Reverse((at, _))| *at);
            let retire = retire_at.filter(|_| retiring.is_none());
            let wake = [next_expiry, idle_at, retire]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(never);
            if wake < armed {
                timer.as_mut().reset(wake);
                armed = wake;
            }
            tokio::select! {
                request = requests.recv() => {
                    // Every sender gone means the pool itself is gone.
                    let Some(request) = request else { return CloseReason::Error };
                    batch.clear();
                    self.write_into(request, &mut batch);
                    while let Ok(request) = requests.try_recv() {
                        self.write_into(request, &mut batch);
                    }
                    // The flush sends what TLS still holds of the batch (a no-op on a socket).
                    if stream.write_all(&batch).await.is_err() || stream.flush().await.is_err() {
                        return CloseReason::Server;
                    }
                    idle_at = None;
                    let limit = config.max_queries_per_connection;
                    if limit > 0 && self.queries >= limit {
                        retiring = Some(CloseReason::MaxQueries);
                    }
                }
                // Cancel-safe: a read the select abandons has read nothing, and a frame read
                // in part stays in the buffer for the next read. A frame taken keeps sharing
                // the buffer's allocation: the answer is not copied.
                read = stream.read_buf(frames.buffer_for_read()) => match read {
                    // End of stream, a half-close or a reset: nothing more will come.
                    Ok(0) | Err(_) => return CloseReason::Server,
                    Ok(_) => {
                        self.reads += 1;
                        let mut ended = false;
                        while let Some(frame) = frames.next_frame() {
                            ended |= self.answer(frame);
                        }
                        if !self.outstanding.is_empty() {
                            acknowledge_now(stream.socket());
                        }
                        if !ended {
                            continue;
                        }
                    }
                },
                () = &mut timer, if armed < never => {
                    armed = never;
                    let now = Instant::now();
                    if retire.is_some_and(|at| at <= now) {
                        self.pool.stop_accepting(self.id);
                        retiring = Some(CloseReason::MaxAge);
                    }
                    let overdue = match next_expiry {
                        Some(at) if at <= now => self.expire(now, stream.socket()),
                        _ => Overdue::None,
                    };
                    if overdue == Overdue::Unresponsive {
                        return CloseReason::Unresponsive;
                    }
                    let expired = overdue == Overdue::Expired;
                    if idle_at.is_some_and(|at| at <= now) {
                        if self.pool.close_if_idle(self.id) {
                            return CloseReason::Idle;
                        }
                        // A query is on its way in the channel: the next answer restarts it.
                        idle_at = None;
                        continue;
                    }
                    if !expired && retiring.is_none() {
                        continue;
                    }
                }
                () = self.pool.retired.cancelled(), if retiring.is_none() => {
                    self.pool.stop_accepting(self.id);
                    retiring = Some(CloseReason::Retired);
                }
            }
            // Something ended or changed: close a drained retiring connection, or start the
            // idle clock.
            if self.outstanding.is_empty() {
                if let Some(reason) = retiring {
                    if self.pool.close_if_idle(self.id) {
                        return reason;
                    }
                } else if idle_at.is_none() {
                    idle_at = Some(Instant::now() + config.idle_timeout);
                }
            }
        }
    }

    /// Gives the request an ID free on this connection and appends its frame to `batch`.
    fn write_into(&mut self, request: Request, batch: &mut Vec<u8>) {
        let mut id = rand::random::<u16>();
        while self.outstanding.contains_key(&id) {
            id = rand::random::<u16>();
        }
        let Request {
            question,
            flags,
            udp_size,
            deadline,
            telling,
            reply,
        } = request;
        let length_at = batch.len();
        batch.extend_from_slice(&[0, 0]);
        append_upstream(batch, id, &question, flags, udp_size);
        // A question is at most 255 + 4 bytes: the frame always fits its u16 length.
        let length = (batch.len() - length_at - 2) as u16;
        batch[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
        self.queries += 1;
        self.pool.metrics.forward_requests.inc();
        self.expiries.push(Reverse((deadline, id)));
        self.outstanding.insert(
            id,
            Outstanding {
                question,
                deadline,
                reply,
                reads_when_written: telling.then_some(self.reads),
            },
        );
    }

    /// Matches one answer; true when it ended an outstanding query.
    fn answer(&mut self, message: BytesMut) -> bool {
        let outstanding =
            message_id(&message).and_then(|id| Some((id, self.outstanding.get(&id)?)));
        let Some((id, outstanding)) = outstanding else {
            // Not ours, or late for a query that already expired.
            self.pool.mismatched.inc();
            return false;
        };
        let result = match Answer::accept(message, id, &outstanding.question) {
            Ok(answer) => Ok(answer),
            Err(err) if err.is_mismatch() || err == AnswerError::NotResponse => {
                self.pool.mismatched.inc();
                return false;
            }
            Err(err) => Err(Failure::Malformed(err)),
        };
        if let Some(outstanding) = self.outstanding.remove(&id) {
            outstanding.reply.send(result);
        }
        self.pool.finished(self.id);
        self.forget_answered();
        true
    }

    /// Pops deadlines of answered queries off the top of the heap, so the expiry timer is
    /// set for a query still waiting rather than waking once per query answered.
    fn forget_answered(&mut self) {
        while let Some(Reverse((at, id))) = self.expiries.peek().copied() {
            if self.still_waiting(id, at) {
                break;
            }
            self.expiries.pop();
        }
    }

    /// Whether the query the deadline `at` was set for, under `id`, is still unanswered (the
    /// ID may carry a later query by now, with a deadline of its own).
    fn still_waiting(&self, id: u16, at: Instant) -> bool {
        self.outstanding.get(&id).is_some_and(|o| o.deadline == at)
    }

    /// Drops queries whose deadline has passed (their askers have given up), and tells
    /// whether the connection has gone silent on them.
    fn expire(&mut self, now: Instant, stream: &TcpStream) -> Overdue {
        let mut overdue = Overdue::None;
        while let Some(Reverse((at, id))) = self.expiries.peek().copied() {
            if at > now {
                break;
            }
            self.expiries.pop();
            if !self.still_waiting(id, at) {
                continue;
            }
            let Some(expired) = self.outstanding.remove(&id) else {
                continue;
            };
            self.pool.finished(self.id);
            let silent = expired.reads_when_written == Some(self.reads) && !has_unread(stream);
            overdue = overdue.max(if silent {
                Overdue::Unresponsive
            } else {
                Overdue::Expired
            });
        }
        overdue
    }
}
