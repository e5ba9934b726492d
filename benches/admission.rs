//! Micro-benchmark of what a miss pays at an upstream's admission (src/upstream/admission.rs):
//! the per-client turns and the adaptive limit, beside a bare tokio semaphore (the FIFO the
//! admission was before them) doing the same work.
//!
//! - `free slot`: a slot taken and given back with nothing waiting (every miss of an upstream
//!   below its bound): one lock, a count, the `answered` update, one lock to release.
//! - `handoff, N clients waiting`: a slot handed to the next waiting query while N clients
//!   have queries queued (an upstream at its bound): queue, wake, release, and the turn order.
//!
//! Run: `cargo bench --bench admission`. The figures are per miss; a miss's whole CPU cost on
//! this VM is tens of microseconds (benches/README.md, scenario 4), so what matters here is
//! the distance to the semaphore, not the absolute nanoseconds.

use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use nodelocal_dns::config::pool::{PoolConfig, QueueConfig};
use nodelocal_dns::observe::Metrics;
use nodelocal_dns::upstream::admission::{Admission, Requester};

fn admission(slots: usize) -> (Admission, nodelocal_dns::observe::upstream::UpstreamHandles) {
    let metrics = Metrics::new().upstream.handles("192.0.2.1:53");
    let config = PoolConfig {
        max_connections: 1,
        max_inflight: slots,
        min_slots: 1,
        queue: QueueConfig {
            capacity: 4096,
            timeout: Duration::from_secs(60),
            per_client: 4096,
        },
        ..PoolConfig::default()
    };
    (Admission::new(&config, &metrics), metrics)
}

fn client(n: u32) -> Requester {
    Requester::Client(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
}

/// Polls `future` once; the benchmarks' futures are ready by then, or pending on purpose.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn free_slot(c: &mut Criterion) {
    let (admission, metrics) = admission(256);
    let deadline = Instant::now() + Duration::from_secs(3600);
    c.bench_function("admission: free slot", |b| {
        b.iter(|| {
            let entered = pin!(admission.enter(client(1), deadline, &metrics));
            let Poll::Ready(Ok(slot)) = poll_once(entered) else {
                panic!("a free slot is taken at once");
            };
            slot.answered();
            drop(slot);
        })
    });
    let semaphore = Arc::new(Semaphore::new(256));
    c.bench_function("semaphore: free slot", |b| {
        b.iter(|| {
            let permit = semaphore
                .clone()
                .try_acquire_owned()
                .expect("a free permit");
            drop(permit);
        })
    });
}

fn handoff(c: &mut Criterion) {
    // A queued query's wait is bounded by a tokio timer: it needs a runtime to register with,
    // though nothing here ever waits on it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _entered = runtime.enter();
    for waiting_clients in [1u32, 8, 64] {
        let (admission, metrics) = admission(1);
        let deadline = Instant::now() + Duration::from_secs(3600);
        // One slot, held by one query, and one query queued per client: each round the slot
        // is given back, the client whose turn it is gets it, and the query that held it asks
        // again at the back of the turns. One queue, one wake and one release per round.
        let mut held = match poll_once(pin!(admission.enter(client(0), deadline, &metrics))) {
            Poll::Ready(Ok(slot)) => Some((0, slot)),
            _ => panic!("the first slot is free"),
        };
        let mut queued = std::collections::VecDeque::new();
        for n in 1..=waiting_clients {
            let mut future = Box::pin(admission.enter(client(n), deadline, &metrics));
            assert!(poll_once(future.as_mut()).is_pending());
            queued.push_back((n, future));
        }
        c.bench_function(
            &format!("admission: handoff, {waiting_clients} clients waiting"),
            |b| {
                b.iter(|| {
                    let (holder, slot) = held.take().expect("one query holds the slot");
                    let mut again = Box::pin(admission.enter(client(holder), deadline, &metrics));
                    assert!(poll_once(again.as_mut()).is_pending());
                    queued.push_back((holder, again));
                    slot.answered();
                    drop(slot);
                    let (next, mut front) = queued.pop_front().expect("a client in turn");
                    let Poll::Ready(Ok(slot)) = poll_once(front.as_mut()) else {
                        panic!("the client in turn got the slot");
                    };
                    held = Some((next, slot));
                })
            },
        );
    }
    let semaphore = Arc::new(Semaphore::new(1));
    let mut held = Some(semaphore.clone().try_acquire_owned().expect("a permit"));
    c.bench_function("semaphore: handoff", |b| {
        b.iter(|| {
            let mut mine = pin!(semaphore.clone().acquire_owned());
            assert!(poll_once(mine.as_mut()).is_pending());
            drop(held.take());
            let Poll::Ready(Ok(permit)) = poll_once(mine.as_mut()) else {
                panic!("the waiter got the permit");
            };
            held = Some(permit);
        })
    });
}

criterion_group!(benches, free_slot, handoff);
criterion_main!(benches);
