//! The cache's rules (docs/design.md, "Coherence"), over real sockets, against an upstream the test changes while
//! it runs.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Forwarder, Programmable, a, aaaa, ask_all, cname, dual_stack, query, soa, udp_query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::time::Instant;

fn forwarder_config(upstream: SocketAddr, zone: &str, cache: &str) -> String {
    format!(
        "zones:\n  - name: {zone}\n    upstreams: [\"{upstream}\"]\n    timeout: 300ms\n    deadline: 600ms\n    cache:\n{cache}"
    )
}

fn ttls(msg: &Message) -> Vec<u32> {
    msg.answers
        .iter()
        .chain(msg.authorities.iter())
        .map(|r| r.ttl)
        .collect()
}

const REPORTED: &str = "api.twilio.com.default.svc.cluster.local.";

/// Failure 2 of docs/design.md, as reported: A through a CNAME with TTL 7, AAAA a CNAME (TTL 20) to a
/// name without AAAA; the upstream flips between "exists" and NXDOMAIN while clients ask both
/// types at once. Every pair answered from the cache agrees in rcode, and its two halves show
/// the same remaining TTL: one entry, one expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_a_and_aaaa_never_disagree_while_the_upstream_flips() {
    let exists = Arc::new(AtomicBool::new(true));
    let state = exists.clone();
    let upstream = Programmable::start(
        Duration::ZERO,
        Arc::new(move |_: &Name, rtype| {
            let negative = vec![soa("cluster.local.", 60, 5)];
            if !state.load(Ordering::SeqCst) {
                return Some((ResponseCode::NXDomain, vec![], negative));
            }
            Some(match rtype {
                RecordType::A => (
                    ResponseCode::NoError,
                    vec![
                        cname(REPORTED, "api.twilio.com.", 7),
                        a("api.twilio.com.", 7),
                    ],
                    vec![],
                ),
                _ => (
                    ResponseCode::NoError,
                    vec![cname(REPORTED, "api.twilio.com.", 20)],
                    negative,
                ),
            })
        }),
    )
    .await;
    // success_ttl 6 s: a cached answer never shows a TTL above 6, a raw upstream one always
    // does (7, 20 or the SOA's 60), so the test can tell them apart.
    let forwarder = Forwarder::start(&forwarder_config(
        upstream.addr,
        "cluster.local",
        "      success_ttl: 6s\n      denial_ttl: 5s\n",
    ))
    .await;

    let flipper = tokio::spawn(async move {
        for _ in 0..16 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            exists.fetch_xor(true, Ordering::SeqCst);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(4);
    let (mut cached_pairs, mut seen_nxdomain, mut seen_noerror) = (0, false, false);
    let (query_a, query_aaaa) = (
        query(REPORTED, RecordType::A, None),
        query(REPORTED, RecordType::AAAA, None),
    );
    while Instant::now() < deadline {
        let (ans_a, ans_aaaa) = tokio::join!(
            udp_query(forwarder.addr, &query_a),
            udp_query(forwarder.addr, &query_aaaa),
        );
        let (ttl_a, ttl_aaaa) = (ttls(&ans_a), ttls(&ans_aaaa));
        let cached = |t: &[u32]| !t.is_empty() && t.iter().all(|&ttl| (1..=6).contains(&ttl));
        if cached(&ttl_a) && cached(&ttl_aaaa) {
            cached_pairs += 1;
            let (code_a, code_aaaa) = (
                ans_a.metadata.response_code,
                ans_aaaa.metadata.response_code,
            );
            assert_eq!(
                code_a, code_aaaa,
                "cached halves disagree: A {ttl_a:?}, AAAA {ttl_aaaa:?}"
            );
            let all: Vec<u32> = ttl_a.iter().chain(ttl_aaaa.iter()).copied().collect();
            assert!(
                all.iter().max().unwrap() - all.iter().min().unwrap() <= 1,
                "halves of one entry expire together: A {ttl_a:?}, AAAA {ttl_aaaa:?}"
            );
            seen_nxdomain |= code_a == ResponseCode::NXDomain;
            seen_noerror |= code_a == ResponseCode::NoError;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flipper.await.expect("flipper ran");
    assert!(
        cached_pairs > 20,
        "too few cached pairs observed: {cached_pairs}"
    );
    assert!(seen_noerror, "the NOERROR state was cached at some point");
    // NXDOMAIN entries live 5 s, NOERROR ones 6 s, flips every 250 ms: which states the cache
    // held depends on timing, so only NOERROR (the first) is certain.
    let _ = seen_nxdomain;
    forwarder.stop().await;
}

/// RFC 2308: a negative answer is cached for min(SOA TTL, SOA MINIMUM) at most, and positive
/// TTLs are capped at success_ttl.
#[tokio::test]
async fn negative_ttl_comes_from_the_soa_minimum_and_success_ttl_caps_positives() {
    let upstream = Programmable::start(
        Duration::ZERO,
        Arc::new(|owner: &Name, rtype| {
            if owner.to_ascii().starts_with("nx.") {
                return Some((
                    ResponseCode::NXDomain,
                    vec![],
                    vec![soa("example.", 300, 2)],
                ));
            }
            dual_stack("www.example.", rtype, 300)
        }),
    )
    .await;
    let forwarder = Forwarder::start(&forwarder_config(
        upstream.addr,
        "example",
        "      success_ttl: 30s\n      denial_ttl: 1h\n",
    ))
    .await;

    let nx = udp_query(forwarder.addr, &query("nx.example.", RecordType::A, None)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        ttls(&nx).iter().all(|&t| t <= 2),
        "negative TTL capped by SOA MINIMUM: {:?}",
        ttls(&nx)
    );
    let again = udp_query(
        forwarder.addr,
        &query("nx.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(again.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        upstream.count(RecordType::A),
        1,
        "the NXDOMAIN pair was cached"
    );
    assert_eq!(
        upstream.count(RecordType::AAAA),
        1,
        "AAAA came with the A fetch"
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    udp_query(forwarder.addr, &query("nx.example.", RecordType::A, None)).await;
    assert_eq!(
        upstream.count(RecordType::A),
        2,
        "expired after the SOA MINIMUM"
    );

    let www = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(www.answers.len(), 1);
    assert!(
        www.answers[0].ttl <= 30,
        "TTL 300 is served as at most 30: {}",
        www.answers[0].ttl
    );
    forwarder.stop().await;
}

/// Single flight: 500 identical misses at once cause one A and one AAAA upstream query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_share_one_upstream_fetch() {
    // Slow enough that all 500 queries arrive while the fetch is out, well within the 300 ms
    // try timeout.
    let upstream = Programmable::start(
        Duration::from_millis(150),
        Arc::new(|_: &Name, rtype| dual_stack("same.example.", rtype, 60)),
    )
    .await;
    let forwarder = Forwarder::start(&forwarder_config(
        upstream.addr,
        "example",
        "      enabled: true\n",
    ))
    .await;
    let mut clients = Vec::new();
    for i in 0..500 {
        let addr = forwarder.addr;
        let rtype = if i % 2 == 0 {
            RecordType::A
        } else {
            RecordType::AAAA
        };
        clients.push(tokio::spawn(async move {
            udp_query(addr, &query("same.example.", rtype, None)).await
        }));
    }
    for client in clients {
        let answer = client.await.expect("client ran");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 1);
    }
    assert_eq!(upstream.count(RecordType::A), 1);
    assert_eq!(upstream.count(RecordType::AAAA), 1);
    assert!(upstream.delay > Duration::ZERO);
    forwarder.stop().await;
}

/// Prefetch: a popular entry is refreshed before it expires; clients never see a miss after
/// the first query. A refresh replaces the entry: the gauge still counts one, and nothing was
/// evicted.
#[tokio::test]
async fn popular_entries_are_refreshed_before_they_expire() {
    let upstream = Programmable::start(
        Duration::ZERO,
        Arc::new(|_: &Name, rtype| dual_stack("hot.example.", rtype, 2)),
    )
    .await;
    let forwarder = Forwarder::start(&forwarder_config(
        upstream.addr,
        "example",
        "      prefetch:\n        min_hits: 2\n        percentage: 50\n",
    ))
    .await;
    for _ in 0..50 {
        let answer = udp_query(forwarder.addr, &query("hot.example.", RecordType::A, None)).await;
        assert_eq!(answer.answers.len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        upstream.count(RecordType::A) >= 3,
        "refreshed in the background"
    );
    assert_eq!(
        forwarder.scrape().sum("coredns_cache_misses_total", &[]),
        1.0,
        "only the first query missed"
    );
    assert!(forwarder.scrape().sum("coredns_cache_prefetch_total", &[]) >= 2.0);
    let success = [("type", "success")];
    assert_eq!(
        forwarder.scrape().value("coredns_cache_entries", &success),
        1.0
    );
    assert_eq!(
        forwarder.scrape().sum("coredns_cache_evictions_total", &[]),
        0.0
    );
    forwarder.stop().await;
}

/// Serve stale (RFC 8767): with the upstream gone, an expired entry is answered with TTL 30;
/// with serve_stale.max_age 0 the client gets SERVFAIL.
#[tokio::test]
async fn expired_entries_are_served_stale_when_the_upstream_is_down() {
    let up = Arc::new(AtomicBool::new(true));
    let state = up.clone();
    let upstream = Programmable::start(
        Duration::ZERO,
        Arc::new(move |_: &Name, rtype| {
            if !state.load(Ordering::SeqCst) {
                return None;
            }
            dual_stack("s.example.", rtype, 1)
        }),
    )
    .await;
    let with_stale = Forwarder::start(&forwarder_config(
        upstream.addr,
        "example",
        "      min_ttl: 1s\n",
    ))
    .await;
    let without_stale = Forwarder::start(&forwarder_config(
        upstream.addr,
        "example",
        "      serve_stale:\n        max_age: 0s\n",
    ))
    .await;
    for forwarder in [&with_stale, &without_stale] {
        let fresh = udp_query(forwarder.addr, &query("s.example.", RecordType::A, None)).await;
        assert_eq!(fresh.answers.len(), 1);
    }
    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let stale = udp_query(with_stale.addr, &query("s.example.", RecordType::A, None)).await;
    assert_eq!(stale.metadata.response_code, ResponseCode::NoError);
    assert_eq!(stale.answers.len(), 1);
    assert_eq!(stale.answers[0].ttl, 30, "stale answers carry TTL 30");
    assert_eq!(
        with_stale
            .scrape()
            .sum("coredns_cache_served_stale_total", &[]),
        1.0
    );

    let none = udp_query(
        without_stale.addr,
        &query("s.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(none.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        without_stale
            .scrape()
            .sum("coredns_cache_served_stale_total", &[]),
        0.0
    );
    with_stale.stop().await;
    without_stale.stop().await;
}

/// An upstream that answers A NXDOMAIN and AAAA NOERROR for one name: asked again once, then
/// answered as received, not cached, and counted.
#[tokio::test]
async fn split_answers_are_answered_but_not_cached_and_counted() {
    let upstream = Programmable::start(
        Duration::ZERO,
        Arc::new(|_: &Name, rtype| {
            Some(if rtype == RecordType::A {
                (ResponseCode::NXDomain, vec![], vec![soa("example.", 60, 5)])
            } else {
                (
                    ResponseCode::NoError,
                    vec![aaaa("split.example.", 60)],
                    vec![],
                )
            })
        }),
    )
    .await;
    let forwarder = Forwarder::start(&forwarder_config(
        upstream.addr,
        "example",
        "      enabled: true\n",
    ))
    .await;
    let first = udp_query(
        forwarder.addr,
        &query("split.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(first.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        upstream.count(RecordType::A),
        2,
        "the split pair was asked again once"
    );
    assert_eq!(
        forwarder.scrape().value(
            "nodelocaldns_cache_split_answers_total",
            &[("zone", "example.")]
        ),
        1.0
    );
    let second = udp_query(
        forwarder.addr,
        &query("split.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(second.metadata.response_code, ResponseCode::NoError);
    assert_eq!(upstream.count(RecordType::AAAA), 4, "nothing was cached");
    forwarder.stop().await;
}

/// A zone with `cache.enabled: false` forwards every query and passes the rcode through.
#[tokio::test]
async fn uncached_zones_forward_every_query_as_answered() {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let upstream = Programmable::start(
        Duration::ZERO,
        Arc::new(move |_: &Name, _| {
            seen.fetch_add(1, Ordering::SeqCst);
            Some((ResponseCode::Refused, vec![], vec![]))
        }),
    )
    .await;
    let forwarder = Forwarder::start(&forwarder_config(
        upstream.addr,
        "example",
        "      enabled: false\n",
    ))
    .await;
    let answer = udp_query(forwarder.addr, &query("x.example.", RecordType::TXT, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    udp_query(forwarder.addr, &query("x.example.", RecordType::TXT, None)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2, "nothing was cached");
    assert_eq!(upstream.count(RecordType::TXT), 2);
    forwarder.stop().await;
}

/// A cohort of entries cached together reaches its refresh window together. The refreshes go
/// out at most `MAX_REFRESHING` (64) at a time, so that thousands of them cannot queue in front
/// of the listeners; an entry that found no slot is refreshed by a later hit, before it
/// expires. Every hit is answered from the cache throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_of_refreshes_goes_out_a_bounded_number_at_a_time() {
    const NAMES: usize = 150;
    const SLOTS: f64 = 64.0;
    // Long enough that an entry refreshed in this test does not reach its next refresh point
    // (50 % of the TTL, up to 75 % with the per-entry spread) before the test ends.
    const TTL: u32 = 10;
    let delay = Duration::from_millis(600);
    let upstream = Programmable::start(
        delay,
        Arc::new(|name: &Name, rtype| {
            let owner = name.to_string();
            dual_stack(&owner, rtype, TTL)
        }),
    )
    .await;
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [\"{}\"]\n    timeout: 2s\n    deadline: 3s\n    cache:\n      prefetch:\n        min_hits: 1\n        percentage: 50\n",
        upstream.addr
    ))
    .await;
    let addr = forwarder.addr;
    let ask_every_name = || async move {
        for (answer, _) in ask_all(addr, NAMES, "c").await {
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            assert_eq!(answer.answers.len(), 1);
        }
    };

    ask_every_name().await; // the fill: 150 misses, stored with TTL 10
    // Into every entry's refresh window (less than 50 % of the TTL left), all at once.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    ask_every_name().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = forwarder.scrape().sum("coredns_cache_prefetch_total", &[]);
    let deferred = forwarder
        .scrape()
        .sum("nodelocaldns_cache_prefetch_deferred_total", &[]);
    assert_eq!(started, SLOTS, "at most the slots at once");
    assert_eq!(deferred, NAMES as f64 - SLOTS, "the rest put off, counted");

    // Later hits, each after the running refreshes are back, start the ones put off.
    for _ in 0..3 {
        tokio::time::sleep(delay + Duration::from_millis(100)).await;
        ask_every_name().await;
    }
    assert_eq!(
        forwarder.scrape().sum("coredns_cache_prefetch_total", &[]),
        NAMES as f64,
        "every entry refreshed once"
    );
    assert_eq!(
        forwarder.scrape().sum("coredns_cache_misses_total", &[]),
        NAMES as f64,
        "no hit ever missed: the refreshes came back before expiry"
    );
    assert_eq!(upstream.count(RecordType::A), 2 * NAMES);
}
