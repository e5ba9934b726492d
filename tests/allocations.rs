//! What the query path allocates (docs/design.md, targets and invariants).
//!
//! - A cache hit, from the query's bytes to the answer's bytes (parse and validate, route,
//!   look up, copy and patch, count in the metrics), allocates nothing once the answer is
//!   cached and its metric series exist.
//! - An AAAA answered by an rcode-only template (the Helm chart's `template IN AAAA`, on every
//!   block) allocates nothing either.
//! - A miss allocates only what it must hold past the moment it was read: its task, the
//!   flight other askers join, each upstream query's reply, the answers, the cache entry.
//!   Counted over real sockets, from the listener's read to its send.
//!
//! Counted by a global allocator that tallies the allocations of the calling thread only, so
//! the runtime's other threads, the test's client and the upstream server cannot add to the
//! count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use common::{Authority, EXAMPLE_ZONE, Forwarder, mixed_case, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use nodelocal_dns::Proto;
use nodelocal_dns::responder::{Responder, Step};

struct CountingAllocator;

thread_local! {
    // `const` and without a destructor: reading it never allocates, so the allocator may.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

/// A query as clients send it: EDNS, RD, and the name in mixed case (the answer must echo it).
fn packet(rtype: RecordType) -> Vec<u8> {
    mixed_case(&query("www.example.", rtype, Some(1232)))
}

/// The allocations of 1000 answers to `packet` that `begin` writes itself (no task), counted
/// after a first one that creates the metric series of its (zone, type, ...).
fn allocations_in_answers(responder: &Responder, packet: &[u8], out: &mut Vec<u8>) -> u64 {
    let step = responder.begin(0, packet, Proto::Udp, CLIENT, out);
    assert!(
        matches!(step, Step::Answered),
        "answered in begin: {step:?}"
    );
    let before = allocations();
    for _ in 0..1000 {
        let step = responder.begin(0, packet, Proto::Udp, CLIENT, out);
        assert!(
            matches!(step, Step::Answered),
            "answered in begin: {step:?}"
        );
    }
    allocations() - before
}

#[tokio::test(flavor = "current_thread")]
async fn a_cache_hit_allocates_nothing() {
    // `www` has both address types, so its A/AAAA pair is cached as one entry.
    let upstream = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::for_example(upstream.addr).await;
    let responder = &forwarder.responder;
    let mut out = Vec::with_capacity(1232);
    // The miss that fills the entry (A and AAAA together).
    match responder.begin(0, &packet(RecordType::A), Proto::Udp, CLIENT, &mut out) {
        Step::Forward(pending) => responder.finish(&pending, &mut out).await,
        other => panic!("the first query misses: {other:?}"),
    }
    let first = Message::from_vec(&out).expect("the answer parses");
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    for rtype in [RecordType::A, RecordType::AAAA] {
        let packet = packet(rtype);
        let allocated = allocations_in_answers(responder, &packet, &mut out);

        // The answer is the real one, not an empty buffer: the counter has something to count.
        let answer = Message::from_vec(&out).expect("the answer parses");
        assert_eq!(answer.queries[0].name().to_string(), "WwW.ExAmPlE.");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        if rtype == RecordType::A {
            assert_eq!(common::addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)]);
        }
        assert_eq!(allocated, 0, "allocations in 1000 {rtype} hits");
    }
    forwarder.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_aaaa_answered_by_an_rcode_only_template_allocates_nothing() {
    // The upstream is never asked: the template answers before the cache.
    let forwarder = Forwarder::start(
        "zones:\n  - name: example\n    upstreams: [\"127.0.0.1:9\"]\n    templates:\n      - type: AAAA\n        rcode: NOERROR\n",
    )
    .await;
    let responder = &forwarder.responder;
    let mut out = Vec::with_capacity(1232);
    let packet = packet(RecordType::AAAA);
    let allocated = allocations_in_answers(responder, &packet, &mut out);

    let answer = Message::from_vec(&out).expect("the answer parses");
    assert_eq!(answer.queries[0].name().to_string(), "WwW.ExAmPlE.");
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative && answer.answers.is_empty());
    assert_eq!(allocated, 0, "allocations in 1000 template answers");
    forwarder.stop().await;
}

/// The counter itself works: without it the test above could not fail.
#[test]
fn the_counter_sees_this_threads_allocations() {
    let before = allocations();
    let boxed = std::hint::black_box(Box::new([0u8; 64]));
    assert_eq!(allocations() - before, 1);
    drop(boxed);
}

/// The allocations a stub's miss may make, per name asked A and AAAA together (both halves
/// fetched in one resolution), apart from the upstream transport's own:
/// - a task per forwarded query, which holds its pending state (1 each): the query outlives
///   the listener's read buffer. The task is small enough that tokio does not box it again,
///   as it does with futures over 2 KiB in a debug build;
/// - the flight the AAAA joins, which is also the outcome both get, and the fetch its leader
///   runs (boxed, so that the askers' tasks stay small) (1 each);
/// - the cache entry, fields and bytes in one allocation (1).
///
/// Not here: the answer buffers, which come back from the send as spares.
const PER_PAIR: u64 = 2 + 2 + 1;
/// Per upstream query over a pooled TCP connection: nothing. The reply channel is one of the
/// pool's, reused, and the answer stays in the connection's read buffer, as a frame of it.
const PER_TCP_QUERY: u64 = 0;
/// Per upstream query over UDP: the buffer its query goes out from and its answer comes into,
/// and the fresh socket's registration with the reactor (tokio allocates one, and may
/// allocate the list it is released through: between none and one per socket, by how many
/// sockets one turn of the reactor releases; the budget counts one).
const PER_UDP_QUERY: u64 = 3;

/// Names asked before counting, so that metric series, pool connections, spare buffers and
/// the flight table exist and the cache is full (as a node's is after its first minutes: its
/// tables have stopped growing, and each new entry takes an evicted one's place); then names
/// counted.
const WARM: usize = 400;
const COUNTED: usize = 200;
/// Entries the cache holds: far fewer than the names warmed, so that its tables (the store
/// also remembers keys it evicted recently) have reached their size before the count.
const CAPACITY: usize = 64;

/// Held by each test that counts a miss stream: they take turns, because one's threads slow
/// the other's, and timing moves what a count sees (see [`TIMING_ALLOWANCE`]).
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "current_thread")]
async fn a_miss_over_a_pooled_tcp_connection_allocates_only_what_it_holds() {
    let _turn = COUNTING.lock().await;
    let allocated = count_pair_misses("transport: tcp").await;
    assert_within_budget(allocated, PER_PAIR + 2 * PER_TCP_QUERY, "TCP");
}

#[tokio::test(flavor = "current_thread")]
async fn a_miss_over_udp_allocates_only_what_it_holds() {
    let _turn = COUNTING.lock().await;
    let allocated = count_pair_misses("transport: udp").await;
    assert_within_budget(allocated, PER_PAIR + 2 * PER_UDP_QUERY, "UDP");
}

/// What timing may add to a count, per name on average, above the budget: tables that grow now
/// and then (the runtime's, the store's), and an AAAA that arrives just after its pair was
/// stored and leads a flight that takes the entry instead of fetching (a flight and its boxed
/// fetch, with no upstream query). On a loaded machine the UDP count was seen
/// up to 0.53 above its budget. Below one allocation per query (two per name), so one more
/// allocation per query still fails the test.
const TIMING_ALLOWANCE: f64 = 1.0;

fn assert_within_budget(allocated: u64, per_name: u64, upstream: &str) {
    let average = allocated as f64 / COUNTED as f64;
    // Shown with --nocapture: the figures docs/performance.md quotes.
    println!("{average:.2} allocations per name over {upstream} upstreams, budgeted {per_name}");
    assert!(
        average <= per_name as f64 + TIMING_ALLOWANCE,
        "{allocated} allocations for {COUNTED} names asked A and AAAA over {upstream} upstreams: \
         {average:.2} per name, budgeted {per_name}"
    );
}

/// Asks `WARM` then `COUNTED` distinct names, each A and AAAA sent back to back as glibc,
/// musl and Go send them, through a forwarder on this thread whose zone has `transport`;
/// returns the allocations this thread made while the counted names were answered.
async fn count_pair_misses(transport: &str) -> u64 {
    let upstream = UpstreamThread::start();
    let forwarder = Forwarder::start(&format!(
        "cache:\n  capacity: {CAPACITY}\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n    \
         {transport}\n",
        upstream.addr
    ))
    .await;
    let server = forwarder.addr;
    let warm = tokio::task::spawn_blocking(move || ask_pairs(server, "warm", WARM));
    assert_eq!(warm.await.expect("the client runs"), WARM);

    let before = allocations();
    let counted = tokio::task::spawn_blocking(move || ask_pairs(server, "counted", COUNTED));
    // While this thread waits here, it runs the forwarder: the listener, the miss's tasks,
    // the pool's connection tasks.
    let answered = counted.await.expect("the client runs");
    let allocated = allocations() - before;

    // Every name was a miss answered from upstream: the count has something to count.
    assert_eq!(answered, COUNTED, "names answered with an address");
    // The A of every name misses; its AAAA may find the pair in flight or already stored.
    let misses = forwarder.scrape().sum("coredns_cache_misses_total", &[]);
    assert!(
        misses >= (WARM + COUNTED) as f64,
        "every name missed the cache: {misses}"
    );
    let evictions = forwarder.scrape().sum("coredns_cache_evictions_total", &[]);
    assert!(
        evictions >= (WARM + COUNTED - CAPACITY) as f64 - 1.0,
        "the cache was full: {evictions} evictions"
    );
    let forwarded = forwarder
        .scrape()
        .sum("coredns_forward_requests_total", &[]);
    assert_eq!(
        forwarded,
        (2 * (WARM + COUNTED)) as f64,
        "two upstream queries per name, A and AAAA fetched together"
    );
    forwarder.stop().await;
    allocated
}

/// Asks `count` names `<prefix>-<i>.example.` for A and AAAA, both sent before either answer
/// is read; returns how many names got both answers, each with its record.
fn ask_pairs(server: SocketAddr, prefix: &str, count: usize) -> usize {
    let client = UdpSocket::bind("127.0.0.1:0").expect("client binds");
    client
        .set_read_timeout(Some(common::CLIENT_TIMEOUT))
        .expect("timeout set");
    let mut buffer = [0u8; 1500];
    let mut answered = 0;
    for i in 0..count {
        let name = format!("{prefix}-{i}.example.");
        for rtype in [RecordType::A, RecordType::AAAA] {
            let msg = query(&name, rtype, Some(1232));
            client
                .send_to(&msg.to_vec().expect("query encodes"), server)
                .expect("query sent");
        }
        let mut complete = 0;
        for _ in 0..2 {
            let Ok((len, _)) = client.recv_from(&mut buffer) else {
                break;
            };
            let answer = Message::from_vec(&buffer[..len]).expect("the answer parses");
            let asked = answer.queries.first().map(|q| q.query_type());
            let ok = answer.metadata.response_code == ResponseCode::NoError
                && match asked {
                    Some(RecordType::A) => !common::addresses(&answer).is_empty(),
                    Some(RecordType::AAAA) => !answer.answers.is_empty(),
                    _ => false,
                };
            complete += usize::from(ok);
        }
        answered += usize::from(complete == 2);
    }
    answered
}

/// Records under `example.` by which every name has an A and an AAAA record: each name is a
/// distinct miss whose pair is stored.
const PAIRS: &str = "* IN A 192.0.2.7\n* IN AAAA 2001:db8::7\n";

/// The upstream on a thread and runtime of its own, so its allocations are not counted.
struct UpstreamThread {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UpstreamThread {
    fn start() -> UpstreamThread {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("upstream runtime");
            runtime.block_on(async move {
                let zone = common::zone("example.", 300, PAIRS);
                let authority = Authority::start(&[("example.", &zone)]).await;
                addr_tx
                    .send(authority.addr)
                    .expect("test waits for the address");
                let _ = stopped.await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the upstream starts");
        UpstreamThread {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for UpstreamThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
