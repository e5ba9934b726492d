//! The client-facing listeners (issue 2): RFC 7766 TCP (pipelining answered out of order, idle
//! timeout, a bound on connections) and EDNS0 truncation, over real sockets.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use common::{
    Authority, CLIENT_TIMEOUT, Forwarder, Scripted, Via, a_with, addresses, frame, query,
    read_frame, reply, tcp_query, udp_query, write_frame, zone_with_big_rrset,
};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn zone_config(zone: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        "zones:\n  - name: {zone}\n    upstreams: [\"{upstream}\"]\n    cache:\n      enabled: false\n"
    )
}

/// Three queries written in one segment on one connection; the upstream holds the first one
/// back, so the other two must come back before it: answers are written as they complete.
#[tokio::test]
async fn pipelined_tcp_queries_are_answered_out_of_order() {
    let upstream = Scripted::start(Arc::new(|request: &Message, _| {
        let qname = request.queries[0].name().to_ascii();
        let delay = if qname.starts_with("slow.") {
            Duration::from_millis(600)
        } else {
            Duration::ZERO
        };
        let answer = a_with(&qname, 60, Ipv4Addr::new(192, 0, 2, 9));
        vec![(delay, reply(request, ResponseCode::NoError, vec![answer]))]
    }))
    .await;
    let forwarder = Forwarder::start(&zone_config("example", upstream.addr)).await;

    let names = ["slow.example.", "fast1.example.", "fast2.example."];
    let mut batch = Vec::new();
    for (i, qname) in names.iter().enumerate() {
        let mut msg = query(qname, RecordType::A, None);
        msg.metadata.id = 100 + i as u16;
        let bytes = msg.to_vec().expect("query encodes");
        batch.extend_from_slice(&frame(&bytes));
    }
    let mut stream = TcpStream::connect(forwarder.addr).await.expect("connect");
    stream.write_all(&batch).await.expect("write batch");

    let mut order = Vec::new();
    for _ in 0..names.len() {
        let frame = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream))
            .await
            .expect("answers in time")
            .expect("an answer frame");
        let answer = Message::from_vec(&frame).expect("answer decodes");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        let qname = answer.queries[0].name().to_ascii();
        assert_eq!(
            qname,
            names[(answer.metadata.id - 100) as usize],
            "the answer carries its own query's ID"
        );
        order.push(qname);
    }
    assert_eq!(
        order.last().map(String::as_str),
        Some("slow.example."),
        "the held-back query is answered last: {order:?}"
    );
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["fast1.example.", "fast2.example.", "slow.example."]
    );
    forwarder.stop().await;
}

/// A 2 KB TXT RRset: too big for 512 bytes without EDNS and for the client's EDNS size, so
/// the UDP answer is cut and flagged TC; the same question over TCP gets it whole.
#[tokio::test]
async fn large_udp_answers_are_truncated_and_whole_over_tcp() {
    const RECORDS: usize = 20;
    let zone = zone_with_big_rrset(RECORDS, 100);
    let authority = Authority::start(&[("example.", &zone)]).await;
    let forwarder = Forwarder::start(&zone_config("example", authority.addr)).await;

    let cases = [(None, 512usize), (Some(1232), 1232), (Some(800), 800)];
    for (edns, limit) in cases {
        let msg = query("big.example.", RecordType::TXT, edns);
        let bytes = msg.to_vec().expect("query encodes");
        let raw = common::udp_raw(forwarder.addr, &bytes, CLIENT_TIMEOUT)
            .await
            .expect("an answer over UDP");
        assert!(
            raw.len() <= limit,
            "EDNS {edns:?}: {} bytes over the limit {limit}",
            raw.len()
        );
        let answer = Message::from_vec(&raw).expect("answer decodes");
        assert!(answer.metadata.truncation, "EDNS {edns:?}: TC is set");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(answer.answers.len() < RECORDS);
        assert_eq!(answer.edns.is_some(), edns.is_some(), "OPT only when asked");
    }

    // A client advertising more than server.max_udp_size (1232 by default) gets at most that.
    let msg = query("big.example.", RecordType::TXT, Some(4096));
    let raw = common::udp_raw(
        forwarder.addr,
        &msg.to_vec().expect("query encodes"),
        CLIENT_TIMEOUT,
    )
    .await
    .expect("an answer over UDP");
    assert!(raw.len() <= 1232, "{} bytes over max_udp_size", raw.len());
    assert!(
        Message::from_vec(&raw)
            .expect("decodes")
            .metadata
            .truncation
    );

    let answer = tcp_query(
        forwarder.addr,
        &query("big.example.", RecordType::TXT, Some(1232)),
    )
    .await;
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), RECORDS);

    // A small answer is not truncated.
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 1);
    forwarder.stop().await;
}

/// An upstream whose UDP answer has TC=1 is asked again over TCP, and the client (over UDP)
/// gets the full answer from there.
#[tokio::test]
async fn truncated_upstream_answers_are_retried_over_tcp() {
    let upstream = Scripted::start(Arc::new(|request: &Message, via| {
        let qname = request.queries[0].name().to_ascii();
        let response = match via {
            Via::Udp => {
                let mut cut = reply(request, ResponseCode::NoError, vec![]);
                cut.metadata.truncation = true;
                cut
            }
            Via::Tcp => reply(
                request,
                ResponseCode::NoError,
                vec![a_with(&qname, 60, Ipv4Addr::new(192, 0, 2, 44))],
            ),
        };
        vec![(Duration::ZERO, response)]
    }))
    .await;
    let forwarder = Forwarder::start(&zone_config("example", upstream.addr)).await;

    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(!answer.metadata.truncation);
    assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 44)]);
    let vias: Vec<Via> = upstream.seen().iter().map(|s| s.via).collect();
    assert_eq!(vias, [Via::Udp, Via::Tcp]);
    forwarder.stop().await;
}

/// A connection that stays quiet for `tcp_idle_timeout` is closed by the server; before that
/// it serves queries.
#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let authority = Authority::start(&[("example.", common::EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "server:\n  tcp_idle_timeout: 300ms\n{}",
        zone_config("example", authority.addr)
    ))
    .await;
    let mut stream = TcpStream::connect(forwarder.addr).await.expect("connect");
    let msg = query("www.example.", RecordType::A, None);
    write_frame(&mut stream, &msg.to_vec().expect("query encodes")).await;
    let frame = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream))
        .await
        .expect("an answer in time")
        .expect("an answer frame");
    assert_eq!(Message::from_vec(&frame).expect("decodes").answers.len(), 1);

    // Now idle: the next read sees the server's FIN (0 bytes), well within the bound.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(CLIENT_TIMEOUT, stream.read(&mut byte))
        .await
        .expect("the server closes an idle connection");
    assert_eq!(read.expect("a clean close"), 0);
    forwarder.stop().await;
}

/// With `max_tcp_connections: 2`, a third connection is closed at once and counted; when one
/// of the two ends, a new connection is served again.
#[tokio::test]
async fn tcp_connections_beyond_the_bound_are_closed() {
    let authority = Authority::start(&[("example.", common::EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "server:\n  max_tcp_connections: 2\n{}",
        zone_config("example", authority.addr)
    ))
    .await;
    let msg = query("www.example.", RecordType::A, None);
    let bytes = msg.to_vec().expect("query encodes");

    // Two connections, each proven accepted (and holding its slot) by an answered query.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(forwarder.addr).await.expect("connect");
        write_frame(&mut stream, &bytes).await;
        let answer = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream))
            .await
            .expect("an answer in time");
        assert!(answer.is_some(), "connections within the bound are served");
        held.push(stream);
    }

    let mut extra = TcpStream::connect(forwarder.addr)
        .await
        .expect("the kernel accepts");
    // The write may fail if the close already arrived; either way no answer comes.
    let _ = extra.write_all(&frame(&bytes)).await;
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut extra))
        .await
        .expect("the extra connection is closed, not left hanging");
    assert!(answer.is_none(), "the extra connection got no answer");
    assert_eq!(
        forwarder.metric(
            "nodelocaldns_rejected_total",
            &[("reason", "tcp_connections")]
        ),
        1.0
    );

    // Free a slot: a new connection is served once the server has seen the close.
    drop(held.pop());
    let mut served = false;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(forwarder.addr).await.expect("connect");
        let _ = stream.write_all(&frame(&bytes)).await;
        if let Ok(Some(_)) = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream)).await {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a freed slot is used again");
    forwarder.stop().await;
}

/// An IPv6 listen address answers over UDP and TCP (IPv6 clients, IPv4 upstream).
#[tokio::test]
async fn ipv6_listeners_answer_over_udp_and_tcp() {
    let authority = Authority::start(&[("example.", common::EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "listen: [\"[::1]:0\"]\n{}",
        zone_config("example", authority.addr)
    ))
    .await;
    assert!(forwarder.addr.is_ipv6());
    let msg = query("www.example.", RecordType::A, None);
    let bytes = msg.to_vec().expect("encodes");

    let socket = tokio::net::UdpSocket::bind("[::1]:0")
        .await
        .expect("bind ::1");
    socket.send_to(&bytes, forwarder.addr).await.expect("send");
    let mut buf = vec![0u8; 2048];
    let len = tokio::time::timeout(CLIENT_TIMEOUT, socket.recv(&mut buf))
        .await
        .expect("an answer over UDP")
        .expect("receive");
    let answer = Message::from_vec(&buf[..len]).expect("decodes");
    assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)]);

    let answer = tcp_query(forwarder.addr, &msg).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)]);
    assert_eq!(
        forwarder.metric("coredns_dns_requests_total", &[("family", "2")]),
        2.0,
        "counted as IPv6"
    );
    forwarder.stop().await;
}
