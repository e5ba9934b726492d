//! Protocol conformance, one table row per rule, each naming the RFC section it follows: header
//! flags of NOTIMP, EDNS options, flags and versions, DO and CD, EDNS over TCP, a client without
//! EDNS, DNS cookies and NSID. The forwarder serves `example.` from an upstream that records
//! every query it gets, so a row can also say what went upstream.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Forwarder, Scripted, Via, a, name, read_frame, reply, udp_raw, write_frame};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::TcpStream;

const QR: u16 = 0x8000;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const AD: u16 = 0x0020;
const CD: u16 = 0x0010;
const TC: u16 = 0x0200;
const OPT_DO: u16 = 0x8000;
const COOKIE: u16 = 10;
const NSID: u16 = 3;

/// The client's OPT record.
struct Opt {
    udp_size: u16,
    version: u8,
    flags: u16,
    options: Vec<(u16, Vec<u8>)>,
}

impl Opt {
    fn v0() -> Opt {
        Opt {
            udp_size: 1232,
            version: 0,
            flags: 0,
            options: vec![],
        }
    }

    fn flags(mut self, flags: u16) -> Opt {
        self.flags = flags;
        self
    }

    fn version(mut self, version: u8) -> Opt {
        self.version = version;
        self
    }

    fn option(mut self, code: u16, data: &[u8]) -> Opt {
        self.options.push((code, data.to_vec()));
        self
    }
}

/// A query in wire form, written byte by byte so that any flag and OPT field can be set.
fn packet(id: u16, flags: u16, qname: &str, qtype: u16, opt: Option<Opt>) -> Vec<u8> {
    let mut bytes = id.to_be_bytes().to_vec();
    bytes.extend_from_slice(&flags.to_be_bytes());
    for count in [1, 0, 0, u16::from(opt.is_some())] {
        bytes.extend_from_slice(&count.to_be_bytes());
    }
    for label in qname.trim_end_matches('.').split('.') {
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label.as_bytes());
    }
    bytes.push(0);
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&1u16.to_be_bytes());
    if let Some(opt) = opt {
        let rdata: Vec<u8> = opt
            .options
            .iter()
            .flat_map(|(code, data)| {
                let mut option = code.to_be_bytes().to_vec();
                option.extend_from_slice(&(data.len() as u16).to_be_bytes());
                option.extend_from_slice(data);
                option
            })
            .collect();
        bytes.push(0);
        bytes.extend_from_slice(&41u16.to_be_bytes());
        bytes.extend_from_slice(&opt.udp_size.to_be_bytes());
        bytes.extend_from_slice(&[0, opt.version]);
        bytes.extend_from_slice(&opt.flags.to_be_bytes());
        bytes.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&rdata);
    }
    bytes
}

/// The answer's OPT record as raw fields: (extended rcode, version, flags, option codes).
fn answer_opt(answer: &Message) -> Option<(u8, u8, u16, Vec<u16>)> {
    answer.edns.as_ref().map(|edns| {
        let flags = edns.flags();
        let bits = (if flags.dnssec_ok { OPT_DO } else { 0 }) | flags.z;
        let codes = edns
            .options()
            .options
            .iter()
            .map(|(code, _)| u16::from(*code))
            .collect();
        (edns.rcode_high(), edns.version(), bits, codes)
    })
}

/// What one row's query led to: the answer's bytes and decoded form, and the query the
/// upstream got for the row's name (none when it was not asked).
struct Outcome {
    bytes: Vec<u8>,
    answer: Message,
    upstream: Option<Message>,
}

impl Outcome {
    fn flags(&self) -> u16 {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]])
    }

    fn rcode(&self) -> u16 {
        let high = answer_opt(&self.answer).map_or(0, |(high, ..)| u16::from(high));
        (high << 4) | (self.flags() & 0x000F)
    }

    fn upstream_opt(&self) -> Option<(u8, u8, u16, Vec<u16>)> {
        self.upstream.as_ref().and_then(answer_opt)
    }
}

type Check = fn(&Outcome) -> Result<(), String>;

struct Row {
    rule: &'static str,
    via: Via,
    /// The row's own name, so that no row's answer comes from another row's cache entry.
    qname: String,
    qtype: u16,
    flags: u16,
    opt: Option<Opt>,
    check: Check,
}

fn expect(holds: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if holds { Ok(()) } else { Err(what()) }
}

/// NOERROR with the upstream's A record.
fn answered(outcome: &Outcome) -> Result<(), String> {
    expect(outcome.rcode() == 0, || {
        format!("rcode {} instead of NOERROR", outcome.rcode())
    })?;
    expect(
        outcome
            .answer
            .answers
            .iter()
            .any(|r| matches!(r.data, RData::A(_))),
        || "no A record".into(),
    )
}

/// Answered, with an OPT of version 0 that carries no flags and no options.
fn answered_with_a_bare_opt(outcome: &Outcome) -> Result<(), String> {
    answered(outcome)?;
    let opt = answer_opt(&outcome.answer);
    expect(opt == Some((0, 0, 0, vec![])), || {
        format!("answer OPT {opt:?}")
    })
}

fn rows() -> Vec<Row> {
    let row = |rule, qname: &str, flags, opt, check| Row {
        rule,
        via: Via::Udp,
        qname: qname.to_string(),
        qtype: 1,
        flags,
        opt,
        check,
    };
    vec![
        row(
            "RFC 1035 §4.1.1, RFC 6895 §2: an unknown opcode is NOTIMP with only the ID, the \
             opcode and RD copied (RA, AD, CD, AA, Z clear), as BIND and Unbound answer",
            "opcode3.example.",
            (3 << 11) | RD | AD | CD,
            None,
            |o| {
                expect(o.flags() == QR | (3 << 11) | RD | 4, || {
                    format!("flags {:#06x}", o.flags())
                })?;
                expect(o.upstream.is_none(), || "asked upstream".into())
            },
        ),
        row(
            "RFC 1035 §4.1.1, RFC 2136 §2.2: UPDATE, not ours to serve, is NOTIMP the same way",
            "update.example.",
            (5 << 11) | CD,
            Some(Opt::v0()),
            |o| {
                expect(o.flags() == QR | (5 << 11) | 4, || {
                    format!("flags {:#06x}", o.flags())
                })
            },
        ),
        row(
            "RFC 6891 §6.1.2: an unknown EDNS option is ignored, and not echoed",
            "unknown-option.example.",
            RD,
            Some(Opt::v0().option(65001, b"whatever")),
            answered_with_a_bare_opt,
        ),
        row(
            "RFC 6891 §6.1.4: unknown EDNS flags (the Z bits) are ignored and answered clear",
            "z-bits.example.",
            RD,
            Some(Opt::v0().flags(0x7FFF)),
            answered_with_a_bare_opt,
        ),
        row(
            "RFC 6891 §6.1.3: EDNS version 1 is BADVERS, in an OPT of our version 0, and not \
             forwarded",
            "edns1.example.",
            RD,
            Some(Opt::v0().version(1)),
            |o| {
                expect(o.rcode() == 16, || format!("rcode {}", o.rcode()))?;
                let opt = answer_opt(&o.answer);
                expect(opt.as_ref().is_some_and(|(_, v, ..)| *v == 0), || {
                    format!("answer OPT {opt:?}")
                })?;
                expect(o.upstream.is_none(), || "asked upstream".into())
            },
        ),
        row(
            "RFC 3225 §3: DO=1 goes upstream and comes back in the answer's OPT",
            "do-bit.example.",
            RD,
            Some(Opt::v0().flags(OPT_DO)),
            |o| {
                answered(o)?;
                let up = o.upstream_opt();
                expect(
                    up.as_ref().is_some_and(|(_, _, f, _)| f & OPT_DO != 0),
                    || format!("upstream OPT {up:?}"),
                )?;
                let opt = answer_opt(&o.answer);
                expect(opt == Some((0, 0, OPT_DO, vec![])), || {
                    format!("answer OPT {opt:?}")
                })
            },
        ),
        row(
            "RFC 4035 §3.2.2: CD=1 goes upstream and is copied into the answer",
            "cd-bit.example.",
            RD | CD,
            Some(Opt::v0()),
            |o| {
                answered(o)?;
                let up_cd = o.upstream.as_ref().map(|m| m.metadata.checking_disabled);
                expect(up_cd == Some(true), || format!("upstream CD {up_cd:?}"))?;
                expect(o.flags() & CD != 0, || format!("flags {:#06x}", o.flags()))
            },
        ),
        row(
            "RFC 4035 §3.2.2: CD=0 is forwarded as CD=0",
            "no-cd-bit.example.",
            RD,
            None,
            |o| {
                answered(o)?;
                let up_cd = o.upstream.as_ref().map(|m| m.metadata.checking_disabled);
                expect(up_cd == Some(false), || format!("upstream CD {up_cd:?}"))?;
                expect(o.flags() & CD == 0, || format!("flags {:#06x}", o.flags()))
            },
        ),
        Row {
            via: Via::Tcp,
            qtype: 16,
            ..row(
                "RFC 6891 §6.2.3 and §7: EDNS over TCP is answered with an OPT, and an \
                 answer over the client's UDP size comes whole, without TC",
                "big-tcp.example.",
                RD,
                Some(Opt {
                    udp_size: 512,
                    ..Opt::v0()
                }),
                |o| {
                    expect(o.flags() & TC == 0, || "truncated".into())?;
                    expect(o.answer.answers.len() == BIG_RRSET, || {
                        format!("{} records", o.answer.answers.len())
                    })?;
                    let opt = answer_opt(&o.answer);
                    expect(opt == Some((0, 0, 0, vec![])), || {
                        format!("answer OPT {opt:?}")
                    })
                },
            )
        },
        Row {
            qtype: 16,
            ..row(
                "RFC 1035 §4.2.1, RFC 2181 §9, RFC 6891 §7: a client without EDNS gets at most \
                 512 bytes, TC=1, and no OPT",
                "big-udp.example.",
                RD,
                None,
                |o| {
                    expect(o.bytes.len() <= 512, || format!("{} bytes", o.bytes.len()))?;
                    expect(o.flags() & TC != 0, || "not truncated".into())?;
                    expect(o.answer.edns.is_none(), || "an OPT in the answer".into())?;
                    expect(o.flags() & RA != 0, || "RA clear".into())
                },
            )
        },
        row(
            "RFC 7873 §5.2.3 with RFC 6891 §6.1.2: a client cookie alone is ignored (answered, \
             never FORMERR, no made-up server cookie) and not forwarded",
            "cookie.example.",
            RD,
            Some(Opt::v0().option(COOKIE, &[1, 2, 3, 4, 5, 6, 7, 8])),
            |o| {
                answered_with_a_bare_opt(o)?;
                let up = o.upstream_opt();
                expect(
                    up.as_ref()
                        .is_some_and(|(.., codes)| !codes.contains(&COOKIE)),
                    || format!("upstream OPT {up:?}"),
                )
            },
        ),
        row(
            "RFC 7873 §5.2.4 with RFC 6891 §6.1.2: a client cookie with a server cookie we \
             never made is ignored, never FORMERR or BADCOOKIE",
            "cookie2.example.",
            RD,
            Some(Opt::v0().option(COOKIE, &[7; 24])),
            answered_with_a_bare_opt,
        ),
        row(
            "RFC 5001 §2.2: an NSID request gets no NSID while none is configured",
            "nsid.example.",
            RD,
            Some(Opt::v0().option(NSID, &[])),
            |o| {
                answered_with_a_bare_opt(o)?;
                let opt = answer_opt(&o.answer);
                expect(
                    !opt.is_some_and(|(.., codes)| codes.contains(&NSID)),
                    || "an NSID".into(),
                )
            },
        ),
    ]
}

fn txt_with(owner: &str, text: String) -> Record {
    Record::from_rdata(name(owner), 60, RData::TXT(TXT::new(vec![text])))
}

fn txt(owner: &str) -> Record {
    txt_with(owner, "shared".into())
}

/// TXT records under `big-*` that together exceed 512 bytes (and stay under 1232).
const BIG_RRSET: usize = 6;

#[tokio::test]
async fn each_protocol_rule_holds_as_its_rfc_says() {
    let asked: Arc<Mutex<Vec<Message>>> = Arc::default();
    let seen = asked.clone();
    let upstream = Scripted::start(Arc::new(move |request: &Message, _| {
        seen.lock().expect("not poisoned").push(request.clone());
        let question = &request.queries[0];
        let owner = question.name().to_string();
        let answers = if question.query_type() == RecordType::TXT {
            (0..BIG_RRSET)
                .map(|i| txt_with(&owner, format!("{i}{}", "x".repeat(100))))
                .collect()
        } else {
            vec![a(&owner, 60)]
        };
        vec![(
            Duration::ZERO,
            reply(request, ResponseCode::NoError, answers),
        )]
    }))
    .await;
    let forwarder = Forwarder::for_example(upstream.addr).await;

    let mut failures = Vec::new();
    for (i, row) in rows().into_iter().enumerate() {
        let id = 0x7000 + i as u16;
        let query = packet(id, row.flags, &row.qname, row.qtype, row.opt);
        let bytes = match row.via {
            Via::Udp => udp_raw(forwarder.addr, &query, common::CLIENT_TIMEOUT).await,
            Via::Tcp => {
                let mut stream = TcpStream::connect(forwarder.addr).await.expect("connect");
                write_frame(&mut stream, &query).await;
                tokio::time::timeout(common::CLIENT_TIMEOUT, read_frame(&mut stream))
                    .await
                    .ok()
                    .flatten()
            }
        };
        let Some(bytes) = bytes else {
            failures.push(format!("{}: no answer", row.rule));
            continue;
        };
        let answer = Message::from_vec(&bytes).expect("the answer decodes");
        assert_eq!(answer.metadata.id, id, "{}: the ID", row.rule);
        let upstream = asked
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|m| m.queries[0].name() == &name(&row.qname))
            .cloned();
        let outcome = Outcome {
            bytes,
            answer,
            upstream,
        };
        match (row.check)(&outcome) {
            Ok(()) => println!("ok    {}", row.rule),
            Err(why) => failures.push(format!("{}: {why}", row.rule)),
        }
    }
    assert!(
        failures.is_empty(),
        "rules broken:\n{}",
        failures.join("\n")
    );
    forwarder.stop().await;
}

/// A client's EDNS options and flags never change which cached answer another client gets: a
/// cookie-bearing query and a plain one share one upstream fetch (RFC 7873 §5.2: cookies are
/// per client, not part of the question).
#[tokio::test]
async fn cookies_and_unknown_options_do_not_split_the_cache() {
    let asked: Arc<Mutex<usize>> = Arc::default();
    let count = asked.clone();
    let upstream = Scripted::start(Arc::new(move |request: &Message, _| {
        *count.lock().expect("not poisoned") += 1;
        let owner = request.queries[0].name().to_string();
        vec![(
            Duration::ZERO,
            reply(request, ResponseCode::NoError, vec![txt(&owner)]),
        )]
    }))
    .await;
    let forwarder = Forwarder::for_example(upstream.addr).await;
    let queries = [
        packet(1, RD, "shared.example.", 16, Some(Opt::v0())),
        packet(
            2,
            RD,
            "shared.example.",
            16,
            Some(Opt::v0().option(COOKIE, &[9; 8])),
        ),
        packet(
            3,
            RD,
            "shared.example.",
            16,
            Some(Opt::v0().option(65001, b"x")),
        ),
        packet(4, RD, "shared.example.", 16, Some(Opt::v0().flags(0x0001))),
    ];
    for query in queries {
        let answer = udp_raw(forwarder.addr, &query, common::CLIENT_TIMEOUT)
            .await
            .expect("an answer");
        let answer = Message::from_vec(&answer).expect("decodes");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    }
    assert_eq!(
        *asked.lock().expect("not poisoned"),
        1,
        "one upstream fetch"
    );
    forwarder.stop().await;
}

/// RFC 5001 §2.2: with `server.nsid`, a query carrying an NSID option gets our identifier in
/// the answer's OPT, forwarded or from the cache alike; a query that does not ask gets none.
#[tokio::test]
async fn a_configured_nsid_is_given_to_queries_that_ask_for_it() {
    let upstream = Scripted::start(Arc::new(|request: &Message, _| {
        let owner = request.queries[0].name().to_string();
        vec![(
            Duration::ZERO,
            reply(request, ResponseCode::NoError, vec![txt(&owner)]),
        )]
    }))
    .await;
    let forwarder = Forwarder::start(&format!(
        "server:\n  nsid: node-a\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n",
        upstream.addr
    ))
    .await;
    let asks = || Some(Opt::v0().option(NSID, &[]));
    let cases = [
        ("forwarded", asks(), true),
        ("from the cache", asks(), true),
        ("not asked", Some(Opt::v0()), false),
        ("no EDNS", None, false),
    ];
    for (i, (what, opt, given)) in cases.into_iter().enumerate() {
        let edns = opt.is_some();
        let query = packet(i as u16, RD, "nsid.example.", 16, opt);
        let bytes = udp_raw(forwarder.addr, &query, common::CLIENT_TIMEOUT)
            .await
            .expect("an answer");
        let answer = Message::from_vec(&bytes).expect("decodes");
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{what}"
        );
        assert_eq!(answer.answers.len(), 1, "{what}");
        assert_eq!(answer.edns.is_some(), edns, "{what}: an OPT");
        assert_eq!(
            bytes.ends_with(b"\x00\x03\x00\x06node-a"),
            given,
            "{what}: the NSID"
        );
    }
    forwarder.stop().await;
}
