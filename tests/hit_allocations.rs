//! "No allocation on the hit path" (docs/design.md, targets and invariants). A cache hit, from the query's bytes to the
//! answer's bytes (parse and validate, route, look up, copy and patch, count in the metrics),
//! allocates nothing once the answer is cached and its metric series exist.
//!
//! Counted by a global allocator that tallies the allocations of the calling thread only, so
//! the runtime's other threads and the upstream server cannot add to the count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use common::{Authority, EXAMPLE_ZONE, Forwarder, mixed_case, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use nodelocal_dns::Proto;
use nodelocal_dns::responder::Step;

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
        // The first hit of a (zone, type, ...) creates its metric series.
        let step = responder.begin(0, &packet, Proto::Udp, CLIENT, &mut out);
        assert!(matches!(step, Step::Answered), "a hit: {step:?}");

        let before = allocations();
        for _ in 0..1000 {
            let step = responder.begin(0, &packet, Proto::Udp, CLIENT, &mut out);
            assert!(matches!(step, Step::Answered), "a hit: {step:?}");
        }
        let allocated = allocations() - before;

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

/// The counter itself works: without it the test above could not fail.
#[test]
fn the_counter_sees_this_threads_allocations() {
    let before = allocations();
    let boxed = std::hint::black_box(Box::new([0u8; 64]));
    assert_eq!(allocations() - before, 1);
    drop(boxed);
}
