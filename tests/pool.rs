//! The bounded upstream pool (docs/design.md, failure 1), against an upstream that behaves
//! like dnsmasq over TCP: at most 20 connections, one query at a time per connection, and
//! optionally a close after K queries.

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::serial_tcp::{SerialTcp, SerialTcpOptions};
use common::{
    Authority, Forwarder, Scripted, WILDCARD_ZONE, a_with, addresses, answered_with, ask_all,
    eventually, query, reply, udp_query, upstream_metric,
};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// A [`SerialTcp`] upstream with `options`, answering from a wildcard zone `example.` (the
/// authority behind it, kept alive with it), and a forwarder sending the zone to it over TCP,
/// without a cache, with `pool` (YAML lines under `pool:`) and `extra` zone keys.
async fn behind_serial_tcp(
    options: SerialTcpOptions,
    pool: &str,
    extra: &str,
) -> (SerialTcp, Forwarder, Authority) {
    let authority = Authority::start(&[("example.", WILDCARD_ZONE)]).await;
    let upstream = SerialTcp::start(authority.addr, options).await;
    let pool: String = pool.lines().map(|line| format!("      {line}\n")).collect();
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [\"{}\"]\n    transport: tcp\n    cache:\n      enabled: false\n{extra}    pool:\n{pool}",
        upstream.addr
    ))
    .await;
    (upstream, forwarder, authority)
}

/// 1000 concurrent misses through a pool of 4: never more than 4 connections at the upstream,
/// and every query answered with the upstream's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_queries_use_at_most_max_connections() {
    // What is tested is the bound and that every query is answered, not how fast this
    // machine is: the queue may hold every query for as long as the slowest needs.
    let (upstream, forwarder, _authority) = behind_serial_tcp(
        SerialTcpOptions::default(),
        "max_connections: 4\nmax_inflight: 32\nqueue:\n  timeout: 30s\n",
        "    deadline: 60s\n    timeout: 30s\n",
    )
    .await;

    let answers = ask_all(forwarder.addr, 1000, "miss").await;

    let answered = answered_with(&answers, Ipv4Addr::new(192, 0, 2, 7));
    assert_eq!(answered, 1000, "every query gets the upstream's answer");
    assert!(upstream.peak() >= 1);
    assert!(
        upstream.peak() <= 4,
        "{} connections were open at once; the bound is 4",
        upstream.peak()
    );
    assert_eq!(
        upstream.served(),
        1000,
        "one upstream query per client query"
    );
    let connects = upstream_metric(
        &forwarder,
        "nodelocaldns_pool_connects_total",
        upstream.addr,
        &[],
    );
    assert!((1.0..=4.0).contains(&connects), "{connects} connects");
}

/// One slot and a queue of 2 in front of an upstream that takes 2 s: of 10 queries at once one
/// is sent, two wait (and give up after `queue.timeout`), seven are turned away. The turned
/// away and timed out ones are answered SERVFAIL before the sent one comes back, and every
/// rejection is counted by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_servfail_at_once_and_counts_why() {
    let options = SerialTcpOptions {
        delay: Duration::from_secs(2),
        ..SerialTcpOptions::default()
    };
    let (upstream, forwarder, _authority) = behind_serial_tcp(
        options,
        "max_connections: 1\nmax_inflight: 1\nqueue:\n  capacity: 2\n  timeout: 300ms\n",
        "    timeout: 4s\n    deadline: 5s\n",
    )
    .await;

    let answers = ask_all(forwarder.addr, 10, "slow").await;

    let (sent, rejected): (Vec<_>, Vec<_>) = answers
        .iter()
        .partition(|(m, _)| m.metadata.response_code == ResponseCode::NoError);
    assert_eq!(sent.len(), 1, "one query had the slot");
    assert_eq!(rejected.len(), 9);
    assert!(
        rejected
            .iter()
            .all(|(m, _)| m.metadata.response_code == ResponseCode::ServFail)
    );
    let sent_at = sent[0].1;
    assert!(
        rejected.iter().all(|(_, at)| *at < sent_at),
        "rejections are answered without waiting for the upstream"
    );
    let rejects = |reason| {
        upstream_metric(
            &forwarder,
            "nodelocaldns_queue_rejected_total",
            upstream.addr,
            &[("reason", reason)],
        )
    };
    assert_eq!(rejects("full"), 7.0);
    assert_eq!(rejects("timeout"), 2.0);
    assert_eq!(
        forwarder
            .scrape()
            .value("coredns_forward_max_concurrent_rejects_total", &[]),
        9.0
    );
    assert_eq!(
        forwarder
            .scrape()
            .sum("nodelocaldns_upstream_failures_total", &[]),
        0.0,
        "a busy upstream is not a failing one"
    );
    assert_eq!(
        upstream_metric(&forwarder, "nodelocaldns_queue_depth", upstream.addr, &[]),
        0.0
    );
}

/// The delayed ACKs this thread's network namespace has sent (`TcpExt: DelayedACKs`: the
/// kernel's delayed-ACK timer fired and sent an ACK it had held back).
fn delayed_acks_sent() -> u64 {
    let netstat = std::fs::read_to_string("/proc/thread-self/net/netstat").expect("netstat");
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (
        tcp_ext.next().expect("names"),
        tcp_ext.next().expect("values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "DelayedACKs")
        .and_then(|(_, value)| value.parse().ok())
        .expect("TcpExt: DelayedACKs")
}

/// Asks 40 rounds of `ask(forwarder, round)` through a pool of one connection to a
/// [`SerialTcp`] upstream with `options` (which leaves Nagle's algorithm on, as knotd does),
/// everything in a network namespace of its own; returns how many ACKs the kernel held back
/// until its delayed-ACK timer fired, on either side. Each such ACK held an answer back behind
/// Nagle's algorithm for 40 ms or more. A count, not a time, so a loaded machine does not make
/// quick rounds look slow. `None` when not root.
fn delayed_acks_over_one_connection<F, Fut>(
    tag: &str,
    options: SerialTcpOptions,
    ask: F,
) -> Option<u64>
where
    F: Fn(SocketAddr, usize) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = ()>,
{
    let ns = common::netns::Netns::new(tag)?;
    let delayed = ns.run_inside(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (upstream, forwarder, _authority) =
                behind_serial_tcp(options, "max_connections: 1\nmax_inflight: 32\n", "").await;
            let before = delayed_acks_sent();
            for round in 0..40 {
                ask(forwarder.addr, round).await;
            }
            let delayed = delayed_acks_sent() - before;
            assert_eq!(
                upstream.accepted(),
                1,
                "every round went over the one connection"
            );
            forwarder.stop().await;
            delayed
        })
    });
    Some(delayed)
}

/// Four queries at a time on one pooled connection, to an upstream that leaves Nagle's
/// algorithm on: its second answer is written while its first is unacknowledged, and would
/// wait for our delayed ACK unless we acknowledge at once while answers are due. Without that,
/// nearly every round waits for one once the connection's first quick ACKs are spent; a few
/// are allowed for a machine so loaded that a read comes 40 ms late.
#[test]
fn pipelined_answers_do_not_wait_for_a_delayed_ack() {
    let delayed = delayed_acks_over_one_connection(
        "pipelined",
        SerialTcpOptions::default(),
        |server, round| async move {
            let answers = ask_all(server, 4, &format!("pipelined{round}-")).await;
            assert!(
                answers
                    .iter()
                    .all(|(m, _)| m.metadata.response_code == ResponseCode::NoError)
            );
        },
    );
    if let Some(delayed) = delayed {
        assert!(delayed <= 5, "{delayed} delayed ACKs in 40 rounds");
    }
}

/// One query at a time to an upstream that writes an answer's length and its message apart,
/// with Nagle's algorithm on: the message waits until the length is acknowledged, so we
/// acknowledge a read that leaves half a frame at once too.
#[test]
fn an_answer_written_apart_from_its_length_does_not_wait_for_a_delayed_ack() {
    let options = SerialTcpOptions {
        split_writes: true,
        ..SerialTcpOptions::default()
    };
    let delayed = delayed_acks_over_one_connection("split", options, |server, round| async move {
        let name = format!("split{round}.example.");
        let answer = udp_query(server, &query(&name, RecordType::A, None)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&answer), vec![Ipv4Addr::new(192, 0, 2, 7)]);
    });
    if let Some(delayed) = delayed {
        assert!(delayed <= 5, "{delayed} delayed ACKs in 40 queries");
    }
}

/// The pool's only connection goes silent (a backend gone behind the Service IP, no reset):
/// when a query's whole timeout passes with nothing read on it, the connection is closed and
/// counted, and the query is asked again over a new connection within its deadline. Kept, the
/// connection would take every query until `max_age` and each would end SERVFAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_silent_for_a_whole_timeout_is_replaced() {
    let options = SerialTcpOptions {
        silent_connections: 1,
        ..SerialTcpOptions::default()
    };
    let (upstream, forwarder, _authority) = behind_serial_tcp(
        options,
        "max_connections: 1\nmax_inflight: 32\n",
        "    timeout: 300ms\n    deadline: 3s\n",
    )
    .await;

    for i in 0..5 {
        let name = format!("silent{i}.example.");
        let answer = udp_query(forwarder.addr, &query(&name, RecordType::A, None)).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(addresses(&answer), vec![Ipv4Addr::new(192, 0, 2, 7)]);
    }

    assert_eq!(
        upstream.accepted(),
        2,
        "the silent connection and its replacement"
    );
    let unresponsive = [("reason", "unresponsive")];
    let closed = "nodelocaldns_pool_closed_total";
    assert_eq!(
        upstream_metric(&forwarder, closed, upstream.addr, &unresponsive),
        1.0
    );
    assert_eq!(
        forwarder.scrape().sum(
            "nodelocaldns_upstream_failures_total",
            &[("reason", "timeout")]
        ),
        1.0,
        "only the first try went into the silent connection"
    );
}

/// The upstream closes each connection after 3 queries and drops what was pipelined behind
/// them: those queries go again over a new connection and every client gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_on_a_connection_the_server_closes_are_retried() {
    let options = SerialTcpOptions {
        close_after: Some(3),
        ..SerialTcpOptions::default()
    };
    let (upstream, forwarder, _authority) =
        behind_serial_tcp(options, "max_connections: 1\nmax_inflight: 2\n", "").await;

    let answers = ask_all(forwarder.addr, 30, "closing").await;

    assert!(
        answers
            .iter()
            .all(|(m, _)| addresses(m) == vec![Ipv4Addr::new(192, 0, 2, 7)]),
        "every query is answered"
    );
    assert!(upstream.accepted() >= 10, "30 queries, 3 per connection");
    assert!(
        upstream_metric(
            &forwarder,
            "nodelocaldns_upstream_retries_total",
            upstream.addr,
            &[]
        ) >= 1.0
    );
    assert!(
        upstream_metric(
            &forwarder,
            "nodelocaldns_pool_closed_total",
            upstream.addr,
            &[("reason", "server")]
        ) >= 9.0
    );
    assert_eq!(
        forwarder
            .scrape()
            .sum("nodelocaldns_upstream_failures_total", &[]),
        0.0,
        "no query failed over to a second pass"
    );
}

/// A connection is reused while it is in use, closed when it has been idle for
/// `idle_timeout`, and the next query opens a new one.
#[tokio::test]
async fn idle_connections_are_reused_then_closed() {
    let (upstream, forwarder, _authority) =
        behind_serial_tcp(SerialTcpOptions::default(), "idle_timeout: 1s\n", "").await;
    let connects = || {
        upstream_metric(
            &forwarder,
            "nodelocaldns_pool_connects_total",
            upstream.addr,
            &[],
        )
    };
    // Open connections, idle and busy alike.
    let upstream_label = upstream.addr.to_string();
    let open = || {
        forwarder.scrape().sum(
            "nodelocaldns_pool_connections",
            &[("upstream", upstream_label.as_str())],
        )
    };

    for i in 0..5 {
        let name = format!("reuse{i}.example.");
        udp_query(forwarder.addr, &query(&name, RecordType::A, None)).await;
    }
    assert_eq!(connects(), 1.0, "back-to-back queries share one connection");
    assert_eq!(open(), 1.0);

    assert!(
        eventually(|| upstream.open() == 0).await,
        "the idle connection is closed"
    );
    assert_eq!(open(), 0.0);
    assert_eq!(
        upstream_metric(
            &forwarder,
            "nodelocaldns_pool_closed_total",
            upstream.addr,
            &[("reason", "idle")]
        ),
        1.0
    );

    udp_query(
        forwarder.addr,
        &query("after.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(
        connects(),
        2.0,
        "a query after the idle close opens a new connection"
    );
}

/// `max_queries_per_connection` retires a connection after that many queries, and `max_age`
/// retires one that old (so connections spread over the backends behind a Service IP).
#[tokio::test]
async fn connections_are_recycled_by_query_count_and_age() {
    let (upstream, forwarder, _authority) = behind_serial_tcp(
        SerialTcpOptions::default(),
        "max_queries_per_connection: 3\nmax_age: 500ms\nidle_timeout: 10s\n",
        "",
    )
    .await;
    let closed = |reason| {
        upstream_metric(
            &forwarder,
            "nodelocaldns_pool_closed_total",
            upstream.addr,
            &[("reason", reason)],
        )
    };

    for i in 0..9 {
        let name = format!("count{i}.example.");
        udp_query(forwarder.addr, &query(&name, RecordType::A, None)).await;
    }
    assert!(
        eventually(|| closed("max_queries") == 3.0).await,
        "9 queries, 3 per connection"
    );
    assert_eq!(upstream.accepted(), 3);

    udp_query(
        forwarder.addr,
        &query("young.example.", RecordType::A, None),
    )
    .await;
    assert!(
        eventually(|| closed("max_age") == 1.0).await,
        "retired at max_age although not idle long"
    );
    udp_query(forwarder.addr, &query("new.example.", RecordType::A, None)).await;
    assert_eq!(upstream.accepted(), 5);
}

/// UDP upstreams get the same bound: one slot and no queue means a second query at once is
/// answered SERVFAIL while the first is still with the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_upstreams_share_the_same_bound() {
    let slow = Scripted::start(Arc::new(|request: &Message, _| {
        let answer = a_with("x.example.", 60, Ipv4Addr::new(192, 0, 2, 9));
        vec![(
            Duration::from_millis(500),
            reply(request, ResponseCode::NoError, vec![answer]),
        )]
    }))
    .await;
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [\"{}\"]\n    cache:\n      enabled: false\n    pool:\n      max_connections: 1\n      max_inflight: 1\n      queue:\n        capacity: 0\n",
        slow.addr
    ))
    .await;

    let answers = ask_all(forwarder.addr, 2, "x").await;

    let codes: Vec<ResponseCode> = answers
        .iter()
        .map(|(m, _)| m.metadata.response_code)
        .collect();
    assert!(codes.contains(&ResponseCode::NoError), "{codes:?}");
    assert!(codes.contains(&ResponseCode::ServFail), "{codes:?}");
    assert_eq!(
        slow.count(RecordType::A),
        1,
        "the rejected query never reached the upstream"
    );
    assert_eq!(
        upstream_metric(
            &forwarder,
            "nodelocaldns_queue_rejected_total",
            slow.addr,
            &[("reason", "full")]
        ),
        1.0
    );
}

/// Our side's sockets to `upstream` that are ESTABLISHED now, by inode, as `ss` shows them
/// to an operator (not the pool's own count).
fn established_to(upstream: SocketAddr) -> HashSet<u64> {
    let out = std::process::Command::new("ss")
        .args(["-Htne", "state", "established", "dst"])
        .arg(upstream.to_string())
        .output()
        .expect("ss runs (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("ino:")?.parse().ok())
        .collect()
}

/// How many sockets to `upstream` were established at once, as far as listings can tell. A
/// listing is not a snapshot: the kernel walks its socket table bucket by bucket while other
/// CPUs close and open sockets, so a socket closed and its replacement opened during one walk
/// can both be listed. A count above `bound` is therefore taken only for the sockets the next
/// listing still shows: a socket really kept open beside its replacement is in both.
fn established_at_once(upstream: SocketAddr, bound: usize) -> usize {
    let listed = established_to(upstream);
    if listed.len() <= bound {
        return listed.len();
    }
    listed.intersection(&established_to(upstream)).count()
}

/// Under churn (every connection retired after two queries, and the upstream closing some
/// itself), a replacement connection never opens while the socket it replaces is still open:
/// sampled from the kernel's table, never more than `max_connections` established at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_connection_counts_until_its_socket_is_closed() {
    let (upstream, forwarder, _authority) = behind_serial_tcp(
        SerialTcpOptions {
            close_after: Some(3),
            ..SerialTcpOptions::default()
        },
        "max_connections: 4\nmax_inflight: 8\nmax_queries_per_connection: 2\n",
        "",
    )
    .await;
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, addr) = (sampling.clone(), upstream.addr);
        std::thread::spawn(move || {
            let mut peak = 0;
            let mut samples = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(established_at_once(addr, 4));
                samples += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            (peak, samples)
        })
    };
    for round in 0..15 {
        let answers = ask_all(forwarder.addr, 200, &format!("churn{round}")).await;
        assert!(answers.len() >= 190, "round {round}: {}", answers.len());
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (peak, samples) = sampler.join().expect("sampler");
    let closed = upstream_metric(
        &forwarder,
        "nodelocaldns_pool_closed_total",
        upstream.addr,
        &[("reason", "max_queries")],
    );
    eprintln!("{closed} connections retired, {samples} samples, peak {peak}");
    assert!(closed > 100.0, "churn: {closed} connections retired");
    assert!(samples > 20, "{samples} samples");
    assert!(
        (1..=4).contains(&peak),
        "{peak} sockets established at once; the bound is 4"
    );
}
