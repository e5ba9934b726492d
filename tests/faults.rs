//! Upstream faults and overload (docs/design.md, "Bounded everything"): a TCP upstream that accepts and never answers, one
//! that resets the connection halfway through an answer, and a flood of misses far beyond what
//! a slow upstream can take. Every client query gets an answer; the bounds hold while the flood
//! lasts, and service comes back by itself when it ends.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    Authority, Forwarder, Programmable, WILDCARD_ZONE, a, addresses, ask_all, query, udp_query,
};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Zone `example.` over TCP to `upstreams` in order, uncached, with `extra` zone keys.
fn tcp_zone(upstreams: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "zones:\n  - name: example\n    upstreams: [{}]\n    policy: sequential\n    transport: tcp\n    cache:\n      enabled: false\n{extra}",
        list.join(", ")
    )
}

/// A TCP upstream that accepts connections and reads queries but never writes a byte; counts
/// the connections it accepted.
async fn silent_tcp_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut sink = [0u8; 512];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

/// A TCP upstream that reads a query, writes the first bytes of an answer frame (a length
/// prefix promising 100 bytes, then 10 of them) and resets the connection (SO_LINGER 0).
async fn resetting_tcp_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                if !matches!(stream.read(&mut buf).await, Ok(n) if n >= 4) {
                    return;
                }
                let mut partial = vec![0u8, 100];
                partial.extend_from_slice(&buf[2..4]); // the query's ID
                partial.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0]);
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &partial).await;
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
            });
        }
    });
    addr
}

/// An upstream that accepts TCP and never answers: the query is answered SERVFAIL once its
/// deadline has passed (the client's own 5 s wait is never what ends it), and the failure is
/// counted as a timeout.
#[tokio::test]
async fn a_tcp_upstream_that_never_answers_gets_servfail_within_the_deadline() {
    let (silent, accepted) = silent_tcp_upstream().await;
    let forwarder = Forwarder::start(&tcp_zone(
        &[silent],
        "    timeout: 300ms\n    deadline: 1s\n",
    ))
    .await;

    let started = tokio::time::Instant::now();
    let answer = udp_query(forwarder.addr, &query("x.example.", RecordType::A, None)).await;
    let waited = started.elapsed();

    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(
        waited < common::CLIENT_TIMEOUT,
        "answered by the forwarder's deadline, not the client's: {waited:?}"
    );
    assert!(
        accepted.load(Ordering::Relaxed) >= 1,
        "the query went to it"
    );
    assert!(
        forwarder.scrape().sum(
            "nodelocaldns_upstream_failures_total",
            &[("reason", "timeout")]
        ) >= 1.0
    );
}

/// An upstream that resets the connection halfway through its answer: the cut answer is never
/// passed on, and the query is answered by the next upstream.
#[tokio::test]
async fn a_tcp_upstream_that_resets_mid_answer_fails_over() {
    let resetting = resetting_tcp_upstream().await;
    let authority = Authority::start(&[("example.", WILDCARD_ZONE)]).await;
    let forwarder = Forwarder::start(&tcp_zone(
        &[resetting, authority.addr],
        "    timeout: 1s\n    deadline: 3s\n",
    ))
    .await;

    let answer = udp_query(forwarder.addr, &query("y.example.", RecordType::A, None)).await;

    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        addresses(&answer),
        vec!["192.0.2.7".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    let reset = resetting.to_string();
    assert!(
        forwarder.scrape().sum(
            "nodelocaldns_upstream_failures_total",
            &[("upstream", reset.as_str())]
        ) >= 1.0,
        "the reset is counted against the upstream that did it"
    );
}

/// An upstream that answers every A with 192.0.2.7 (TTL `ttl` seconds) after 300 ms, and a
/// forwarder for zone `example` in front of it with 4 slots (one connection, 4 queries in
/// flight) and a queue of 16 that waits 200 ms: far less than a flood needs. `cache` is the
/// zone's cache block, if any.
async fn slow_upstream_behind_four_slots(ttl: u32, cache: &str) -> (Programmable, Arc<Forwarder>) {
    let upstream = Programmable::start(
        Duration::from_millis(300),
        Arc::new(move |name: &hickory_proto::rr::Name, _| {
            Some((
                ResponseCode::NoError,
                vec![a(&name.to_string(), ttl)],
                vec![],
            ))
        }),
    )
    .await;
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [\"{}\"]\n{cache}    timeout: 2s\n    deadline: 3s\n    pool:\n      max_connections: 1\n      max_inflight: 4\n      queue:\n        capacity: 16\n        timeout: 200ms\n",
        upstream.addr
    ))
    .await;
    (upstream, Arc::new(forwarder))
}

/// 1000 distinct misses at once at an upstream that takes 300 ms per answer, through 4 slots
/// and a queue of 16: every query is answered (almost all SERVFAIL, at once), the queue and
/// the slots never hold more than their bounds while the flood lasts, and once it is over a
/// new query is answered from the upstream again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_misses_is_answered_fast_bounded_and_recovers() {
    let (upstream, forwarder) =
        slow_upstream_behind_four_slots(60, "    cache:\n      enabled: false\n").await;
    let label = upstream.addr.to_string();

    // Samples the bounded gauges while the flood lasts.
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (forwarder, flooding, label) = (forwarder.clone(), flooding.clone(), label.clone());
        tokio::spawn(async move {
            let (mut queue_peak, mut inflight_peak) = (0.0f64, 0.0f64);
            while flooding.load(Ordering::Relaxed) {
                let labels = [("upstream", label.as_str())];
                queue_peak = queue_peak.max(
                    forwarder
                        .scrape()
                        .value("nodelocaldns_queue_depth", &labels),
                );
                inflight_peak = inflight_peak.max(
                    forwarder
                        .scrape()
                        .value("nodelocaldns_upstream_inflight", &labels),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (queue_peak, inflight_peak)
        })
    };

    let addr = forwarder.addr;
    let answers: Vec<Message> = ask_all(addr, 1000, "f")
        .await
        .into_iter()
        .map(|(answer, _)| answer)
        .collect();
    flooding.store(false, Ordering::Relaxed);
    let (queue_peak, inflight_peak) = sampler.await.expect("sampler");

    let servfail = answers
        .iter()
        .filter(|m| m.metadata.response_code == ResponseCode::ServFail)
        .count();
    let answered = answers
        .iter()
        .filter(|m| m.metadata.response_code == ResponseCode::NoError)
        .count();
    assert_eq!(
        servfail + answered,
        1000,
        "only SERVFAIL or the upstream's answer"
    );
    assert!(servfail > 900, "the excess is shed: {servfail} SERVFAIL");
    assert!(answered >= 4, "the slots kept serving: {answered} answered");
    assert!(
        queue_peak > 0.0 && inflight_peak > 0.0,
        "the sampler saw the flood: queue {queue_peak}, in flight {inflight_peak}"
    );
    assert!(queue_peak <= 16.0, "queue depth peaked at {queue_peak}");
    assert!(inflight_peak <= 4.0, "in flight peaked at {inflight_peak}");
    let labels = [("upstream", label.as_str())];
    let shed = forwarder
        .scrape()
        .sum("nodelocaldns_queue_rejected_total", &labels)
        + forwarder
            .scrape()
            .value("nodelocaldns_rejected_total", &[("reason", "inflight")]);
    assert!(
        shed >= servfail as f64,
        "every SERVFAIL has a counted reason: {shed} counted, {servfail} SERVFAIL"
    );

    // The flood is over: the next query waits for no one.
    let after = udp_query(addr, &query("after.example.", RecordType::A, None)).await;
    assert_eq!(after.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        forwarder
            .scrape()
            .value("nodelocaldns_queue_depth", &labels),
        0.0,
        "the queue drains"
    );
}

/// Under the same overload, names the cache holds expired are answered from the stale entry
/// (RFC 8767 section 4), not SERVFAIL: the refresh finds every slot and the queue full and
/// fails at once, and the client gets the last good answer, counted as served stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_an_expired_name_is_answered_stale_not_servfail() {
    let (_upstream, forwarder) = slow_upstream_behind_four_slots(1, "").await;
    let addr = forwarder.addr;
    const STALE: usize = 4;
    // One at a time: a name takes two of the four slots (its A and AAAA are fetched together).
    for i in 0..STALE {
        let answer = udp_query(addr, &query(&format!("s{i}.example."), RecordType::A, None)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    }
    // Past the 1 s TTL: every one of them is expired now, kept for serve-stale.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let flood = tokio::spawn(async move { ask_all(addr, 1000, "f").await });
    // The flood has filled the slots and the queue by then.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stale = ask_all(addr, STALE, "s").await;
    let flood = flood.await.expect("the flood ends");

    for (i, (answer, _)) in stale.iter().enumerate() {
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "s{i}.example. is answered, not SERVFAIL"
        );
        assert_eq!(
            addresses(answer),
            vec![std::net::Ipv4Addr::new(192, 0, 2, 7)],
            "s{i}: the cached address"
        );
    }
    let servfail = flood
        .iter()
        .filter(|(m, _)| m.metadata.response_code == ResponseCode::ServFail)
        .count();
    assert!(servfail > 900, "the flood of new names is shed: {servfail}");
    let served_stale = forwarder
        .scrape()
        .sum("coredns_cache_served_stale_total", &[]);
    assert!(
        served_stale >= STALE as f64,
        "each stale answer is counted: {served_stale}"
    );
}
