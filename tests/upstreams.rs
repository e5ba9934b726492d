//! The upstream exchange: failover past a dead upstream and past SERVFAIL/REFUSED
//! answers, skipping an upstream after `max_fails`, and forged answers being ignored.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{
    Authority, EXAMPLE_ZONE, Forwarder, Scripted, a_with, addresses, eventually, query, reply,
    tcp_query, udp_query,
};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

/// A zone `example` over `upstreams`, tried in order, without a cache (every query goes
/// upstream).
fn sequential(upstreams: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "zones:\n  - name: example\n    upstreams: [{}]\n    policy: sequential\n    cache:\n      enabled: false\n{extra}",
        list.join(", ")
    )
}

/// An upstream that answers every query with `code` and nothing else.
async fn answering(code: ResponseCode) -> Scripted {
    Scripted::start(Arc::new(move |request: &Message, _| {
        vec![(Duration::ZERO, reply(request, code, vec![]))]
    }))
    .await
}

/// The first upstream is bound but never answers: queries time out on it and are answered by
/// the second; after `max_fails` timeouts it is skipped (gauge 0) and no longer asked, so its
/// failure count stops growing.
#[tokio::test]
async fn a_dead_upstream_fails_over_and_is_skipped_after_max_fails() {
    let dead = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("bound");
    let live = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&sequential(
        &[dead_addr, live.addr],
        "    timeout: 200ms\n    deadline: 2s\n    max_fails: 2\n    health_check: 100ms\n",
    ))
    .await;
    let dead_label = dead_addr.to_string();
    let failures = || {
        forwarder.scrape().sum(
            "nodelocaldns_upstream_failures_total",
            &[("upstream", &dead_label)],
        )
    };
    let healthy = |upstream: &str| {
        forwarder
            .scrape()
            .value("nodelocaldns_upstream_healthy", &[("upstream", upstream)])
    };
    assert_eq!(healthy(&dead_label), 1.0, "upstreams start healthy");

    for (round, client_tcp) in [(1, false), (2, true)] {
        let msg = query("www.example.", RecordType::A, None);
        let answer = if client_tcp {
            tcp_query(forwarder.addr, &msg).await
        } else {
            udp_query(forwarder.addr, &msg).await
        };
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(
            failures(),
            f64::from(round),
            "each query timed out on the dead one"
        );
    }
    assert_eq!(
        forwarder.scrape().value(
            "nodelocaldns_upstream_failures_total",
            &[("upstream", &dead_label), ("reason", "timeout")]
        ),
        1.0,
        "the UDP try timed out (the TCP one is refused by the closed port)"
    );
    assert_eq!(healthy(&dead_label), 0.0, "skipped after max_fails");
    assert_eq!(healthy(&live.addr.to_string()), 1.0);

    // Skipped: the dead upstream is not asked, though its probe keeps failing meanwhile.
    for _ in 0..5 {
        let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
        assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)]);
    }
    assert_eq!(failures(), 2.0, "a skipped upstream gathers no failures");
    assert_eq!(
        healthy(&dead_label),
        0.0,
        "a silent probe does not bring it back"
    );
    drop(dead);
    forwarder.stop().await;
}

/// SERVFAIL and REFUSED answers move on to the next upstream, each counted; when every
/// upstream answers that way, the client gets the last such answer.
#[tokio::test]
async fn servfail_and_refused_fail_over_to_the_next_upstream() {
    let servfail = answering(ResponseCode::ServFail).await;
    let refused = answering(ResponseCode::Refused).await;
    let live = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder =
        Forwarder::start(&sequential(&[servfail.addr, refused.addr, live.addr], "")).await;

    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)]);
    assert_eq!(
        (servfail.count(RecordType::A), refused.count(RecordType::A)),
        (1, 1)
    );
    let counted = |upstream: &Scripted, rcode| {
        forwarder.scrape().value(
            "nodelocaldns_upstream_servfail_total",
            &[("upstream", &upstream.addr.to_string()), ("rcode", rcode)],
        )
    };
    assert_eq!(counted(&servfail, "SERVFAIL"), 1.0);
    assert_eq!(counted(&refused, "REFUSED"), 1.0);
    assert_eq!(
        forwarder.scrape().sum("nodelocaldns_upstream_healthy", &[]),
        3.0,
        "an upstream that answers, even SERVFAIL, is healthy"
    );
    forwarder.stop().await;

    let forwarder = Forwarder::start(&sequential(&[refused.addr, servfail.addr], "")).await;
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::ServFail,
        "the last upstream's answer"
    );
    assert_eq!(
        (servfail.count(RecordType::A), refused.count(RecordType::A)),
        (2, 2)
    );
    forwarder.stop().await;
}

/// The client got `real` alone, and `forged` answers were counted as mismatched.
async fn only_genuine_used(
    forwarder: Forwarder,
    answer: &Message,
    real: Ipv4Addr,
    upstream: SocketAddr,
    forged: f64,
) {
    assert_eq!(addresses(answer), [real], "only the genuine answer is used");
    let label = upstream.to_string();
    assert_eq!(
        forwarder.scrape().value(
            "nodelocaldns_upstream_mismatched_total",
            &[("upstream", &label)]
        ),
        forged
    );
    forwarder.stop().await;
}

/// Three forged answers at once (wrong ID, wrong question, not a response), then the genuine
/// one 500 ms later.
fn forgeries_then_genuine(request: &Message, real: Ipv4Addr) -> Vec<(Duration, Message)> {
    let forged = Ipv4Addr::new(203, 0, 113, 66);
    let qname = request.queries[0].name().to_ascii();
    let mut wrong_id = reply(
        request,
        ResponseCode::NoError,
        vec![a_with(&qname, 60, forged)],
    );
    wrong_id.metadata.id = request.metadata.id.wrapping_add(1);
    let mut wrong_question = reply(
        request,
        ResponseCode::NoError,
        vec![a_with("evil.example.", 60, forged)],
    );
    wrong_question.queries[0].set_name(common::name("evil.example."));
    let mut not_response = reply(request, ResponseCode::NoError, vec![]);
    not_response.metadata.message_type = MessageType::Query;
    let genuine = reply(
        request,
        ResponseCode::NoError,
        vec![a_with(&qname, 60, real)],
    );
    vec![
        (Duration::ZERO, wrong_id),
        (Duration::ZERO, wrong_question),
        (Duration::ZERO, not_response),
        (Duration::from_millis(500), genuine),
    ]
}

/// Over TCP a connection carries many queries: an answer with an ID nobody waits for, one
/// with a waiting ID but another question, and a non-response are ignored and counted, and
/// the connection keeps serving the genuine answer.
#[tokio::test]
async fn forged_answers_on_a_tcp_connection_are_ignored_and_counted() {
    let real = Ipv4Addr::new(192, 0, 2, 1);
    let upstream = Scripted::start(Arc::new(move |request: &Message, _| {
        forgeries_then_genuine(request, real)
    }))
    .await;
    let forwarder = Forwarder::start(&sequential(
        &[upstream.addr],
        "    timeout: 3s
    transport: tcp
",
    ))
    .await;

    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;

    only_genuine_used(forwarder, &answer, real, upstream.addr, 3.0).await;
}

/// Before the real answer (held back 500 ms), the querying socket receives: an answer with
/// the wrong ID, one with our ID but another question, our query echoed without QR, and a
/// perfect copy of the real answer with another address sent from another port. All four are
/// ignored and counted; the client gets the real answer.
#[tokio::test]
async fn forged_upstream_answers_are_ignored_and_counted() {
    let real = Ipv4Addr::new(192, 0, 2, 1);
    let forged = Ipv4Addr::new(203, 0, 113, 66);
    let upstream = Scripted::start(Arc::new(move |request: &Message, _| {
        forgeries_then_genuine(request, real)
    }))
    .await;
    let forwarder = Forwarder::start(&sequential(&[upstream.addr], "    timeout: 3s\n")).await;

    // An off-path attacker who guessed the port and the ID: right bytes, wrong source.
    let spoofer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let client = tokio::spawn({
        let addr = forwarder.addr;
        async move { udp_query(addr, &query("www.example.", RecordType::A, None)).await }
    });
    assert!(
        eventually(|| !upstream.seen().is_empty()).await,
        "the query arrives"
    );
    let seen = upstream.seen()[0].clone();
    let mut copy = Message::query();
    copy.add_query(hickory_proto::op::Query::query(
        seen.name.clone(),
        seen.rtype,
    ));
    let mut copy = reply(
        &copy,
        ResponseCode::NoError,
        vec![a_with("www.example.", 60, forged)],
    );
    copy.metadata.id = seen.id;
    spoofer
        .send_to(&copy.to_vec().expect("encodes"), seen.from)
        .await
        .expect("send");

    let answer = client.await.expect("client ran");
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    only_genuine_used(forwarder, &answer, real, upstream.addr, 4.0).await;
}

/// A question every try of which timed out is not sent again for `unanswered_ttl`: the
/// next client asking it gets SERVFAIL without another round of timeouts, counted; other
/// questions are still asked.
#[tokio::test]
async fn a_question_that_timed_out_everywhere_is_not_asked_again_at_once() {
    let silent = Scripted::start(Arc::new(|_: &Message, _| vec![])).await;
    let forwarder = Forwarder::start(&sequential(
        &[silent.addr],
        "    timeout: 200ms\n    deadline: 400ms\n    unanswered_ttl: 1m\n",
    ))
    .await;

    let first = udp_query(forwarder.addr, &query("gone.example.", RecordType::A, None)).await;
    assert_eq!(first.metadata.response_code, ResponseCode::ServFail);
    let tries = silent.count(RecordType::A);
    assert_eq!(tries, 2, "two tries fit in the deadline");

    let again = udp_query(forwarder.addr, &query("gone.example.", RecordType::A, None)).await;
    assert_eq!(again.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(silent.count(RecordType::A), tries, "not sent again");
    assert_eq!(
        forwarder.scrape().value(
            "nodelocaldns_unanswered_cached_total",
            &[("zone", "example.")]
        ),
        1.0
    );

    udp_query(
        forwarder.addr,
        &query("other.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(
        silent.count(RecordType::A),
        tries + 2,
        "another question is asked"
    );
    forwarder.stop().await;
}

/// Every UDP query goes out from a socket of its own, on a port the kernel picks at random
/// (RFC 5452 section 9.2): an off-path attacker must guess the port as well as the ID, and no
/// long-lived source port can meet a stale conntrack entry. 64 misses leave from ports that
/// neither repeat nor follow one another. Random ports may meet by chance (64 draws from the
/// ~28 000 ephemeral ports repeat one about 7 % of the time), so the bound is what chance
/// never reaches: a reused socket would show 1 distinct port, a counter 63 successors.
#[tokio::test]
async fn each_udp_query_leaves_from_a_fresh_random_port() {
    let upstream = answering(ResponseCode::NoError).await;
    let forwarder = Forwarder::start(&sequential(&[upstream.addr], "")).await;
    for i in 0..64 {
        let name = format!("port{i}.example.");
        let answer = udp_query(forwarder.addr, &query(&name, RecordType::A, None)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    }
    let mut ports: Vec<u16> = upstream
        .seen()
        .iter()
        .filter(|seen| seen.via == common::Via::Udp)
        .map(|seen| seen.from.port())
        .collect();
    assert_eq!(ports.len(), 64, "one UDP query per miss");
    let in_order = ports
        .windows(2)
        .filter(|w| w[1] == w[0].wrapping_add(1))
        .count();
    ports.sort_unstable();
    ports.dedup();
    assert!(
        ports.len() >= 60,
        "a port of its own for every query: only {} distinct in 64",
        ports.len()
    );
    assert!(
        in_order < 8,
        "ports follow one another {in_order} times in 63"
    );
}
