//! The client-facing listeners: RFC 7766 TCP (pipelining answered out of order, idle
//! timeout, a bound on connections) and EDNS0 truncation, over real sockets.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use common::{
    Authority, CLIENT_TIMEOUT, Forwarder, Scripted, Via, WILDCARD_ZONE, a_with, addresses, frame,
    query, read_frame, reply, tcp_query, udp_query, write_frame, zone_with_big_rrset,
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
        forwarder.scrape().value(
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
        forwarder
            .scrape()
            .sum("coredns_dns_requests_total", &[("family", "2")]),
        2.0,
        "counted as IPv6"
    );
    forwarder.stop().await;
}

/// A listener on a wildcard address answers each query from the address it was sent to, as
/// connected stubs (glibc's, musl's) require: asked at 127.0.0.2, the answer must come from
/// 127.0.0.2, not from the address the kernel would pick for the client (127.0.0.1). Both a
/// forwarded answer and a cache hit, and the same over IPv6's wildcard.
#[tokio::test]
async fn a_wildcard_listener_answers_from_the_address_it_was_asked_at() {
    let authority = Authority::start(&[("example.", common::EXAMPLE_ZONE)]).await;
    for (listen, asked, client) in [
        ("0.0.0.0:0", "127.0.0.2", "127.0.0.5:0"),
        ("[::]:0", "::1", "[::1]:0"),
    ] {
        let forwarder = Forwarder::start(&format!(
            "listen: [\"{listen}\"]\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n",
            authority.addr
        ))
        .await;
        let server = std::net::SocketAddr::new(asked.parse().unwrap(), forwarder.addr.port());
        let socket = tokio::net::UdpSocket::bind(client).await.expect("bind");
        // Connected: the kernel delivers only datagrams from `server`.
        socket.connect(server).await.expect("connect");
        for round in ["forwarded", "cached"] {
            let msg = query("www.example.", RecordType::A, None);
            socket
                .send(&msg.to_vec().expect("encodes"))
                .await
                .expect("send");
            let mut buf = vec![0u8; 2048];
            let len = tokio::time::timeout(CLIENT_TIMEOUT, socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{listen}, {round}: an answer from {server}"))
                .expect("receive");
            let answer = Message::from_vec(&buf[..len]).expect("decodes");
            assert_eq!(answer.metadata.id, msg.metadata.id);
            assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)], "{round}");
        }
        let hits = forwarder.scrape().sum("coredns_cache_hits_total", &[]);
        assert_eq!(hits, 1.0, "{listen}: the second answer was a cache hit");
        forwarder.stop().await;
    }
}

/// A query in wire form: `id`, `flags`, one question `name` (dotted, no trailing dot)
/// `qtype` `qclass`.
fn raw_query(id: u16, flags: u16, name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut bytes = [id, flags, 1, 0, 0, 0]
        .iter()
        .flat_map(|field| field.to_be_bytes())
        .collect::<Vec<u8>>();
    for label in name.split('.') {
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label.as_bytes());
    }
    bytes.push(0);
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&qclass.to_be_bytes());
    bytes
}

/// Eight clients each send 40 packets back to back, so the listener reads them many to a
/// batch: cache hits, misses that go upstream, malformed queries, class CH, and responses
/// (QR=1, never answered) mixed in every batch. Each client gets exactly one answer per
/// query it sent, with its own ID and the rcode that query calls for, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_many_clients_is_answered_each_to_its_own_asker() {
    const CLIENTS: u16 = 8;
    const PER_CLIENT: u16 = 40;
    let authority = Authority::start(&[("example.", WILDCARD_ZONE)]).await;
    let forwarder = Forwarder::for_example(authority.addr).await;
    let warm = udp_query(forwarder.addr, &query("hot.example.", RecordType::A, None)).await;
    assert_eq!(warm.metadata.response_code, ResponseCode::NoError);

    // What each packet of a client is, by its index; `None`: no answer is owed.
    let expected = |i: u16| match i % 5 {
        0 | 4 => Some(ResponseCode::NoError), // a cache hit; a miss answered by the upstream
        1 => None,                            // QR=1
        2 => Some(ResponseCode::FormErr),     // the question is cut short
        _ => Some(ResponseCode::Refused),     // class CH
    };
    let packet = |client: u16, i: u16| {
        let id = client * 1000 + i;
        match i % 5 {
            0 => raw_query(id, 0x0100, "hot.example", 1, 1),
            1 => raw_query(id, 0x8180, "hot.example", 1, 1),
            2 => {
                let mut cut = raw_query(id, 0x0100, "cut.example", 1, 1);
                cut.truncate(cut.len() - 7);
                cut
            }
            3 => raw_query(id, 0x0100, "hot.example", 16, 3),
            _ => raw_query(id, 0x0100, &format!("m{client}x{i}.example"), 1, 1),
        }
    };

    let mut sockets = Vec::new();
    for _ in 0..CLIENTS {
        sockets.push(Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        ));
    }
    let sends: Vec<_> = sockets
        .iter()
        .enumerate()
        .map(|(client, socket)| {
            let (socket, addr) = (socket.clone(), forwarder.addr);
            let packets: Vec<Vec<u8>> = (0..PER_CLIENT).map(|i| packet(client as u16, i)).collect();
            tokio::spawn(async move {
                for packet in packets {
                    socket.send_to(&packet, addr).await.expect("send");
                }
            })
        })
        .collect();
    for send in sends {
        send.await.expect("sent");
    }

    for (client, socket) in sockets.iter().enumerate() {
        let client = client as u16;
        let owed = (0..PER_CLIENT).filter(|&i| expected(i).is_some()).count();
        let mut answered = std::collections::HashSet::new();
        let mut buf = [0u8; 1232];
        // Every owed answer, then a quiet spell in which nothing else arrives.
        while let Ok(received) = tokio::time::timeout(
            if answered.len() < owed {
                CLIENT_TIMEOUT
            } else {
                Duration::from_millis(300)
            },
            socket.recv_from(&mut buf),
        )
        .await
        {
            let (len, _) = received.expect("receive");
            let answer = Message::from_vec(&buf[..len]).expect("an answer parses");
            let id = answer.metadata.id;
            assert_eq!(id / 1000, client, "answer {id} reached client {client}");
            let i = id % 1000;
            assert_eq!(
                Some(answer.metadata.response_code),
                expected(i),
                "client {client}, packet {i}"
            );
            if matches!(i % 5, 0 | 4) {
                assert_eq!(addresses(&answer), vec![Ipv4Addr::new(192, 0, 2, 7)]);
            }
            assert!(
                answered.insert(i),
                "client {client}: packet {i} answered twice"
            );
        }
        assert_eq!(answered.len(), owed, "client {client}: every owed answer");
    }
}
