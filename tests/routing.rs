//! Zone routing: each query goes to the upstreams of the longest zone that contains
//! its name, `.` catching the rest; a zone's transport picks UDP or TCP towards it.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use common::{
    Authority, Forwarder, Scripted, Via, a_with, addresses, query, reply, tcp_query, udp_query,
};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// A zone at `origin` that holds `names` (absolute), each with the A record `address`.
fn zone(names: &[&str], address: &str) -> String {
    let mut text =
        "$TTL 300\n@ IN SOA ns.invalid. admin.invalid. 1 3600 600 86400 5\n@ IN NS ns.invalid.\n"
            .to_string();
    for name in names {
        text.push_str(&format!("{name} IN A {address}\n"));
    }
    text
}

/// Three authorities that all hold the same names, each with its own address: the address
/// in an answer says which zone route was taken.
#[tokio::test]
async fn the_longest_matching_zone_wins() {
    let names = [
        "www.other.",
        "www.example.org.",
        "www.sub.example.org.",
        "deep.www.sub.example.org.",
        "www.notexample.org.",
        "www.sub.example.org.evil.",
    ];
    let root = Authority::start(&[(".", &zone(&names, "192.0.2.1"))]).await;
    let org = Authority::start(&[("example.org.", &zone(&names[1..4], "192.0.2.2"))]).await;
    let sub = Authority::start(&[("sub.example.org.", &zone(&names[2..4], "192.0.2.3"))]).await;
    // Zones listed shortest-first so that order in the file cannot be what decides.
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: .\n    upstreams: [\"{}\"]\n  - name: example.org\n    upstreams: [\"{}\"]\n  - name: Sub.Example.Org.\n    upstreams: [\"{}\"]\n",
        root.addr, org.addr, sub.addr
    ))
    .await;

    let cases = [
        ("www.other.", 1),
        ("www.example.org.", 2),
        ("www.sub.example.org.", 3),
        ("deep.www.sub.example.org.", 3),
        ("WWW.SUB.example.ORG.", 3),
        // Suffixes match whole labels: notexample.org is not under example.org.
        ("www.notexample.org.", 1),
        ("www.sub.example.org.evil.", 1),
    ];
    for (qname, zone) in cases {
        let answer = udp_query(forwarder.addr, &query(qname, RecordType::A, None)).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{qname}"
        );
        assert_eq!(
            addresses(&answer),
            [Ipv4Addr::new(192, 0, 2, zone)],
            "{qname} goes to zone route {zone}"
        );
    }
    // The zone apex belongs to its own zone, not the parent.
    let answer = tcp_query(
        forwarder.addr,
        &query("sub.example.org.", RecordType::SOA, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(answer.answers[0].name.to_ascii(), "sub.example.org.");
    forwarder.stop().await;
}

/// `cluster.local` over TCP and `.` over UDP (the set-up of a node: kube-dns over TCP, the node's resolvers over UDP): each
/// upstream sees the transport its zone asks for, whatever the client used; a UDP zone is
/// still asked over TCP for a TCP client.
#[tokio::test]
async fn each_zone_uses_its_transport() {
    let script = || {
        Arc::new(|request: &Message, _| {
            let qname = request.queries[0].name().to_ascii();
            let answer = a_with(&qname, 60, Ipv4Addr::new(192, 0, 2, 5));
            vec![(
                Duration::ZERO,
                reply(request, ResponseCode::NoError, vec![answer]),
            )]
        })
    };
    let cluster = Scripted::start(script()).await;
    let world = Scripted::start(script()).await;
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: cluster.local\n    upstreams: [\"{}\"]\n    transport: tcp\n  - name: .\n    upstreams: [\"{}\"]\n",
        cluster.addr, world.addr
    ))
    .await;

    let names = [
        "a.svc.cluster.local.",
        "b.svc.cluster.local.",
        "a.example.",
        "b.example.",
    ];
    udp_query(forwarder.addr, &query(names[0], RecordType::A, None)).await;
    tcp_query(forwarder.addr, &query(names[1], RecordType::A, None)).await;
    udp_query(forwarder.addr, &query(names[2], RecordType::A, None)).await;
    let answer = tcp_query(forwarder.addr, &query(names[3], RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 5)]);

    // The cache asks for AAAA alongside A (one entry per name); the A queries tell enough.
    let log = |upstream: &Scripted| -> Vec<(String, Via)> {
        upstream
            .seen()
            .iter()
            .filter(|s| s.rtype == RecordType::A)
            .map(|s| (s.name.to_ascii(), s.via))
            .collect()
    };
    assert_eq!(
        log(&cluster),
        [
            (names[0].to_string(), Via::Tcp),
            (names[1].to_string(), Via::Tcp)
        ]
    );
    assert_eq!(
        log(&world),
        [
            (names[2].to_string(), Via::Udp),
            (names[3].to_string(), Via::Tcp)
        ]
    );
    forwarder.stop().await;
}
