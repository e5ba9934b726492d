//! Packets that are not queries we serve: each gets the answer the RFCs give it, or
//! none, and is counted; nothing a client sends stops the forwarder from serving.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Authority, CLIENT_TIMEOUT, EXAMPLE_ZONE, Forwarder, query, read_frame, write_frame};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpStream, UdpSocket};

/// The forwarder routes only `example.`, to a real authority.
async fn forwarder() -> (Authority, Forwarder) {
    let authority = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::for_example(authority.addr).await;
    (authority, forwarder)
}

/// A DNS header.
fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        bytes.extend_from_slice(&count.to_be_bytes());
    }
    bytes
}

/// `www.example.` type `qtype` class `qclass`, in wire form.
fn question(qtype: u16, qclass: u16) -> Vec<u8> {
    let mut bytes = b"\x03www\x07example\x00".to_vec();
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&qclass.to_be_bytes());
    bytes
}

/// An OPT record for the additional section: UDP size 1232, EDNS `version`.
fn opt(version: u8) -> Vec<u8> {
    let mut bytes = vec![0u8]; // root owner
    bytes.extend_from_slice(&41u16.to_be_bytes());
    bytes.extend_from_slice(&1232u16.to_be_bytes());
    bytes.extend_from_slice(&[0, version, 0, 0]); // extended rcode, version, flags
    bytes.extend_from_slice(&0u16.to_be_bytes()); // no options
    bytes
}

const RD: u16 = 0x0100;

/// One packet and what must come of it.
struct Case {
    what: &'static str,
    packet: Vec<u8>,
    /// `None`: dropped, never answered.
    rcode: Option<ResponseCode>,
    /// Whether the answer echoes the question.
    echoes_question: bool,
}

fn cases() -> Vec<Case> {
    let valid = [header(0x1111, RD, [1, 0, 0, 0]), question(1, 1)].concat();
    let mut response = valid.clone();
    response[2] |= 0x80; // QR=1
    let with = |id: u16, flags: u16, counts: [u16; 4], rest: &[Vec<u8>]| {
        [vec![header(id, flags, counts)], rest.to_vec()]
            .concat()
            .concat()
    };
    vec![
        Case {
            what: "shorter than a header",
            packet: vec![0x12, 0x34, 0x01, 0x00, 0x00],
            rcode: None,
            echoes_question: false,
        },
        Case {
            what: "a response (QR=1)",
            packet: response,
            rcode: None,
            echoes_question: false,
        },
        Case {
            what: "question name cut short",
            packet: with(0x2001, RD, [1, 0, 0, 0], &[b"\x03www\x07exa".to_vec()]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            what: "no question",
            packet: header(0x2002, RD, [0, 0, 0, 0]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            what: "two questions",
            packet: with(0x2003, RD, [2, 0, 0, 0], &[question(1, 1), question(28, 1)]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            what: "an additional record counted but missing",
            packet: with(0x2004, RD, [1, 0, 0, 1], &[question(1, 1)]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: true,
        },
        Case {
            what: "two OPT records",
            packet: with(0x2005, RD, [1, 0, 0, 2], &[question(1, 1), opt(0), opt(0)]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: true,
        },
        Case {
            what: "opcode NOTIFY",
            packet: with(0x3001, 4 << 11, [1, 0, 0, 0], &[question(6, 1)]),
            rcode: Some(ResponseCode::NotImp),
            echoes_question: true,
        },
        Case {
            what: "opcode UPDATE",
            packet: with(0x3002, 5 << 11, [1, 0, 0, 0], &[question(6, 1)]),
            rcode: Some(ResponseCode::NotImp),
            echoes_question: true,
        },
        Case {
            what: "class CH",
            packet: with(0x4001, RD, [1, 0, 0, 0], &[question(16, 3)]),
            rcode: Some(ResponseCode::Refused),
            echoes_question: true,
        },
        Case {
            what: "a zone transfer",
            packet: with(0x4002, RD, [1, 0, 0, 0], &[question(252, 1)]),
            rcode: Some(ResponseCode::Refused),
            echoes_question: true,
        },
        Case {
            what: "EDNS version 1",
            packet: with(0x5001, RD, [1, 0, 0, 1], &[question(1, 1), opt(1)]),
            rcode: Some(ResponseCode::BADVERS),
            echoes_question: true,
        },
        // The rest of the hostile-input table.
        Case {
            what: "a NOTIFY response (QR=1 whatever the opcode)",
            packet: with(0x6001, 0x8000 | 4 << 11, [1, 0, 0, 0], &[question(6, 1)]),
            rcode: None,
            echoes_question: false,
        },
        Case {
            what: "a header alone, counting one question",
            packet: header(0x6002, RD, [1, 0, 0, 0]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            what: "two questions counted, one present",
            packet: with(0x6003, RD, [2, 0, 0, 0], &[question(1, 1)]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            // 64 is 0b01000000: the length byte of a 64-byte label is an (obsolete)
            // extended label type, not a length.
            what: "a label of 64 bytes",
            packet: with(0x6004, RD, [1, 0, 0, 0], &[name_of(&[64]), class_in_a()]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            what: "a name of 257 bytes",
            packet: with(
                0x6005,
                RD,
                [1, 0, 0, 0],
                &[name_of(&[63, 63, 63, 63]), class_in_a()],
            ),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            // The longest legal name is read, echoed and refused (no zone routes it).
            what: "a name of exactly 255 bytes",
            packet: with(
                0x6006,
                RD,
                [1, 0, 0, 0],
                &[name_of(&[63, 63, 63, 61]), class_in_a()],
            ),
            rcode: Some(ResponseCode::Refused),
            echoes_question: true,
        },
        Case {
            what: "a question name that is a pointer to itself",
            packet: with(0x6007, RD, [1, 0, 0, 0], &[vec![0xC0, 12], class_in_a()]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            what: "a question name ending in a forward pointer",
            packet: with(
                0x6008,
                RD,
                [1, 0, 0, 0],
                &[
                    b"\x03www\xC0\x16".to_vec(),
                    class_in_a(),
                    b"\x07example\x00".to_vec(),
                ],
            ),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: false,
        },
        Case {
            // Record owner names are skipped, never followed: the loop costs nothing, and an
            // OPT must be owned by the root.
            what: "an OPT owned by a pointer to itself",
            packet: with(
                0x6009,
                RD,
                [1, 0, 0, 1],
                &[question(1, 1), opt_owned_by_pointer()],
            ),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: true,
        },
        Case {
            what: "an OPT whose RDATA runs past the end",
            packet: with(0x600A, RD, [1, 0, 0, 1], &[question(1, 1), opt_cut_short()]),
            rcode: Some(ResponseCode::FormErr),
            echoes_question: true,
        },
        Case {
            what: "an unknown class (42)",
            packet: with(0x600B, RD, [1, 0, 0, 0], &[question(1, 42)]),
            rcode: Some(ResponseCode::Refused),
            echoes_question: true,
        },
        Case {
            what: "class ANY",
            packet: with(0x600C, RD, [1, 0, 0, 0], &[question(1, 255)]),
            rcode: Some(ResponseCode::Refused),
            echoes_question: true,
        },
        Case {
            what: "opcode STATUS",
            packet: with(0x600D, 2 << 11, [1, 0, 0, 0], &[question(1, 1)]),
            rcode: Some(ResponseCode::NotImp),
            echoes_question: true,
        },
        Case {
            what: "an unassigned opcode (15) without a question",
            packet: header(0x600E, 15 << 11, [0, 0, 0, 0]),
            rcode: Some(ResponseCode::NotImp),
            echoes_question: false,
        },
        Case {
            what: "EDNS version 255 with the DO bit",
            packet: with(
                0x600F,
                RD,
                [1, 0, 0, 1],
                &[question(1, 1), opt_with(255, 0x8000)],
            ),
            rcode: Some(ResponseCode::BADVERS),
            echoes_question: true,
        },
    ]
}

/// A name of labels with the given lengths (each label `a`s, length byte as given).
fn name_of(lengths: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for &len in lengths {
        bytes.push(len);
        bytes.extend(std::iter::repeat_n(b'a', usize::from(len)));
    }
    bytes.push(0);
    bytes
}

/// Type A, class IN: the rest of a question after its name.
fn class_in_a() -> Vec<u8> {
    vec![0, 1, 0, 1]
}

/// An OPT record with `version` and the 16 flag bits `flags`.
fn opt_with(version: u8, flags: u16) -> Vec<u8> {
    let mut bytes = opt(version);
    bytes[7..9].copy_from_slice(&flags.to_be_bytes());
    bytes
}

/// An OPT record whose owner is a compression pointer to itself: right after the header and
/// `www.example.` A IN (12 + 13 + 4 bytes), at offset 29.
fn opt_owned_by_pointer() -> Vec<u8> {
    let mut bytes = vec![0xC0, 29];
    bytes.extend_from_slice(&opt(0)[1..]);
    bytes
}

/// An OPT record announcing 100 bytes of RDATA and carrying none.
fn opt_cut_short() -> Vec<u8> {
    let mut bytes = opt(0);
    let len = bytes.len();
    bytes[len - 2..].copy_from_slice(&100u16.to_be_bytes());
    bytes
}

/// How many cases expect `rcode` (`None`: dropped).
fn expected(rcode: Option<ResponseCode>) -> f64 {
    let key = rcode.map(u16::from);
    cases()
        .iter()
        .filter(|case| case.rcode.map(u16::from) == key)
        .count() as f64
}

/// Sends `packet`, then a query answered without upstreams (class CH: REFUSED) from the
/// same socket; returns the answer to `packet`, or `None` when the next datagram back is the
/// sentinel's. The server reads one socket's datagrams in order, so a packet it would answer
/// is answered before the sentinel.
async fn send_with_sentinel(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    const SENTINEL: u16 = 0xFEED;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.send_to(packet, server).await.expect("send");
    let sentinel = [header(SENTINEL, 0, [1, 0, 0, 0]), question(16, 3)].concat();
    socket.send_to(&sentinel, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(CLIENT_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .expect("receive");
    buf.truncate(len);
    if buf[..2] == SENTINEL.to_be_bytes() {
        return None;
    }
    // The sentinel still comes: the server keeps serving this client.
    let mut rest = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(CLIENT_TIMEOUT, socket.recv_from(&mut rest))
        .await
        .expect("the sentinel's answer in time")
        .expect("receive");
    assert_eq!(
        rest[..2],
        SENTINEL.to_be_bytes(),
        "only one answer per packet"
    );
    assert!(len >= 12);
    Some(buf)
}

#[tokio::test]
async fn each_bad_packet_gets_its_rfc_answer_or_none_over_udp() {
    let (_authority, forwarder) = forwarder().await;
    for case in cases() {
        let answer = send_with_sentinel(forwarder.addr, &case.packet).await;
        let Some(expected) = case.rcode else {
            assert!(answer.is_none(), "{}: dropped, never answered", case.what);
            continue;
        };
        let answer = answer.unwrap_or_else(|| panic!("{}: answered", case.what));
        let msg = Message::from_vec(&answer)
            .unwrap_or_else(|err| panic!("{}: answer decodes: {err}", case.what));
        // By number: hickory decodes 16 as BADSIG, which shares it with BADVERS.
        assert_eq!(
            u16::from(msg.metadata.response_code),
            u16::from(expected),
            "{}",
            case.what
        );
        assert_eq!(
            msg.metadata.id,
            u16::from_be_bytes([case.packet[0], case.packet[1]])
        );
        assert_eq!(
            msg.metadata.message_type,
            hickory_proto::op::MessageType::Response
        );
        assert_eq!(
            msg.queries.len(),
            usize::from(case.echoes_question),
            "{}: question echoed",
            case.what
        );
        if u16::from(expected) == u16::from(ResponseCode::BADVERS) {
            assert!(msg.edns.is_some(), "BADVERS travels in an OPT");
        }
    }

    let drops = |reason| {
        forwarder
            .scrape()
            .value("nodelocaldns_dropped_total", &[("reason", reason)])
    };
    assert_eq!(drops("short_header"), 1.0);
    assert_eq!(drops("response"), expected(None) - 1.0);
    let answered = |rcode| {
        forwarder
            .scrape()
            .sum("coredns_dns_responses_total", &[("rcode", rcode)])
    };
    assert_eq!(answered("FORMERR"), expected(Some(ResponseCode::FormErr)));
    assert_eq!(answered("NOTIMP"), expected(Some(ResponseCode::NotImp)));
    // The cases plus one sentinel per case.
    assert_eq!(
        answered("REFUSED"),
        expected(Some(ResponseCode::Refused)) + cases().len() as f64
    );
    assert_eq!(answered("BADVERS"), expected(Some(ResponseCode::BADVERS)));
    forwarder.stop().await;
}

/// A datagram longer than the 4096 bytes the UDP listener reads of one (a valid query whose
/// OPT record carries 4 900 bytes of zero padding) is cut by the kernel: the cut query is
/// answered FORMERR with its ID, not dropped, and the listener serves on.
#[tokio::test]
async fn a_datagram_longer_than_we_read_is_answered_formerr() {
    let (_authority, forwarder) = forwarder().await;
    let padding = 4900u16;
    let mut opt = opt(0);
    opt[9..11].copy_from_slice(&padding.to_be_bytes()); // RDLENGTH
    opt.extend(std::iter::repeat_n(0u8, usize::from(padding)));
    let packet = [header(0x7001, RD, [1, 0, 0, 1]), question(1, 1), opt].concat();
    assert!(packet.len() > 4096);

    let answer = send_with_sentinel(forwarder.addr, &packet)
        .await
        .expect("answered");
    let msg = Message::from_vec(&answer).expect("the answer decodes");
    assert_eq!(msg.metadata.id, 0x7001);
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
    forwarder.stop().await;
}

/// A name outside every routed zone (no `.` zone here) is refused without asking anyone.
#[tokio::test]
async fn names_in_no_routed_zone_are_refused() {
    let (_authority, forwarder) = forwarder().await;
    let answer = common::udp_query(
        forwarder.addr,
        &query("www.example.org.", RecordType::A, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    assert_eq!(answer.queries.len(), 1);
    let answer = common::tcp_query(forwarder.addr, &query("example.", RecordType::SOA, None)).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::NoError,
        "the zone apex is routed"
    );
    assert_eq!(
        forwarder
            .scrape()
            .sum("coredns_dns_responses_total", &[("rcode", "REFUSED")]),
        1.0
    );
    forwarder.stop().await;
}

/// Over TCP the same rules hold per message, and the connection keeps serving after a bad
/// one: a response is skipped, malformed and NOTIMP queries are answered in order.
#[tokio::test]
async fn bad_messages_over_tcp_do_not_end_the_connection() {
    let (_authority, forwarder) = forwarder().await;
    let mut stream = TcpStream::connect(forwarder.addr).await.expect("connect");
    for case in cases() {
        write_frame(&mut stream, &case.packet).await;
        if case.rcode.is_none() {
            continue;
        }
        let answer = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("{}: answered in time", case.what))
            .unwrap_or_else(|| panic!("{}: connection still open", case.what));
        let msg = Message::from_vec(&answer).expect("answer decodes");
        assert_eq!(
            u16::from(msg.metadata.response_code),
            u16::from(case.rcode.expect("checked")),
            "{}",
            case.what
        );
    }
    let msg = query("www.example.", RecordType::A, None);
    write_frame(&mut stream, &msg.to_vec().expect("query encodes")).await;
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream))
        .await
        .expect("answered in time")
        .expect("an answer frame");
    assert_eq!(
        Message::from_vec(&answer).expect("decodes").answers.len(),
        1
    );
    assert_eq!(
        forwarder.scrape().sum("nodelocaldns_dropped_total", &[]),
        expected(None),
        "the short and the QR=1 messages"
    );
    forwarder.stop().await;
}

/// Thousands of random and mutated packets (a fixed seed, so failures reproduce): the
/// forwarder never panics and still answers a good query afterwards on the same worker.
#[tokio::test]
async fn random_garbage_never_stops_the_forwarder() {
    let authority = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "workers: 1\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n    timeout: 200ms\n    deadline: 400ms\n",
        authority.addr
    ))
    .await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    let valid = [header(0x1111, RD, [1, 0, 0, 1]), question(1, 1), opt(0)].concat();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for i in 0..3000 {
        let packet = if i % 2 == 0 {
            let len = rng.random_range(0..80);
            (0..len).map(|_| rng.random()).collect::<Vec<u8>>()
        } else {
            let mut packet = valid.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..packet.len());
                packet[at] = rng.random();
            }
            packet.truncate(rng.random_range(1..=packet.len()));
            packet
        };
        socket.send_to(&packet, forwarder.addr).await.expect("send");
        if i % 100 == 0 {
            // Let the forwarder keep up rather than overflow the socket buffer.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut good = query("www.example.", RecordType::A, None);
    good.metadata.id = 0xBEEF;
    let good = good.to_vec().expect("query encodes");
    let mut buf = vec![0u8; 65535];
    let mut answered = false;
    // Answers to the garbage arrive too; retry the good query in case it was lost among them.
    'outer: for _ in 0..3 {
        socket.send_to(&good, forwarder.addr).await.expect("send");
        let until = tokio::time::Instant::now() + CLIENT_TIMEOUT;
        while let Ok(Ok((len, _))) =
            tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await
        {
            if len >= 12 && buf[..2] == [0xBE, 0xEF] && buf[2] & 0x80 != 0 {
                let msg = Message::from_vec(&buf[..len]).expect("answer decodes");
                if msg.answers.len() == 1 {
                    answered = true;
                    break 'outer;
                }
            }
        }
    }
    assert!(answered, "the forwarder still serves after the garbage");
    assert!(forwarder.scrape().sum("nodelocaldns_dropped_total", &[]) > 0.0);
    forwarder.stop().await;
}
