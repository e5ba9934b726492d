//! Writing upstream and cached answers for a client: `wire::reply::write_answer` (forwarded
//! answers) and `cache::Entry::write_for` (the cache-hit patcher: ID, letter case, TTLs,
//! OPT, truncation). The input is a client query and the body of an upstream answer to it;
//! the answer's question is spliced in so that it is accepted as the answer to that query.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nodelocal_dns::cache::{Entry, Served};
use nodelocal_dns::cache::policy::TtlPolicy;
use nodelocal_dns::wire::answer::Answer;
use nodelocal_dns::wire::answer::{inspect, strip_trailing_opt};
use nodelocal_dns::wire::query::{Query, Question, parse};
use nodelocal_dns::wire::reply::{ReplyLimits, write_answer};
use nodelocal_dns::wire::{HEADER_LEN, Header, rtype};
use tokio::time::Instant;

const UPSTREAM_ID: u16 = 0x4242;

/// The upstream answer to `question`: the fuzzed header (as a response with our ID and one
/// question), our question, then the fuzzed records.
fn answer(question: &Question, body: &[u8]) -> Option<Answer> {
    let mut header = [0u8; HEADER_LEN];
    let n = body.len().min(HEADER_LEN);
    header[..n].copy_from_slice(&body[..n]);
    header[0..2].copy_from_slice(&UPSTREAM_ID.to_be_bytes());
    header[2] |= 0x80;
    header[4..6].copy_from_slice(&1u16.to_be_bytes());
    let mut message = header.to_vec();
    message.extend_from_slice(question.name.as_wire());
    message.extend_from_slice(&question.qtype.to_be_bytes());
    message.extend_from_slice(&question.qclass.to_be_bytes());
    message.extend_from_slice(&body[n..]);
    let mut info = inspect(&message, UPSTREAM_ID, question).ok()?;
    strip_trailing_opt(&mut message, &mut info);
    Some(Answer {
        message: message.as_slice().into(),
        info,
    })
}

/// What every answer written for `query` must look like.
fn check(out: &[u8], query: &Query, max_size: usize) {
    let header = Header::read(out).expect("a header");
    assert!(header.is_response());
    assert_eq!(header.id, query.id);
    assert_eq!(header.qdcount, 1);
    let sent = query.question.name.with_case(&query.case);
    let name = sent.as_wire();
    assert_eq!(
        &out[HEADER_LEN..HEADER_LEN + name.len()],
        name,
        "client's case echoed"
    );
    if header.is_truncated() && out.len() > max_size {
        // Only the question and an OPT remain: within every limit a client may set.
        assert!(out.len() <= HEADER_LEN + name.len() + 4 + 11);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let control = data[0];
    let query_len = usize::from(data[1]).min(data.len() - 2);
    let (packet, body) = data[2..].split_at(query_len);
    let Ok(query) = parse(packet) else {
        return;
    };
    let max_size = match control & 3 {
        0 => 512,
        1 => 1232,
        2 => 100,
        _ => 65535,
    };
    let Some(first) = answer(&query.question, body) else {
        return;
    };
    let mut out = Vec::new();
    let limits = ReplyLimits {
        max_size,
        udp_size: 1232,
    };

    // A forwarded answer.
    write_answer(&mut out, &first.message, first.has_opt(), &query, limits);
    check(&out, &query, max_size);

    // A cache hit, some seconds after the store, fresh or stale.
    let policy = TtlPolicy {
        success_max: Duration::from_secs(3600),
        denial_max: Duration::from_secs(1800),
        min: Duration::ZERO,
        servfail: Duration::from_secs(5),
    };
    let stored = Instant::now();
    let entry = match query.question.qtype {
        rtype::A | rtype::AAAA => {
            let other = Question {
                qtype: if query.question.qtype == rtype::A {
                    rtype::AAAA
                } else {
                    rtype::A
                },
                ..query.question
            };
            let Some(second) = answer(&other, body) else {
                return;
            };
            if query.question.qtype == rtype::A {
                Entry::address_pair(&first, &second, &policy, stored)
            } else {
                Entry::address_pair(&second, &first, &policy, stored)
            }
        }
        _ => Entry::single(&first, &policy, stored),
    };
    let Ok(entry) = entry else {
        return;
    };
    let later = stored + Duration::from_secs(u64::from(control >> 3) * 97);
    let served = if control & 4 != 0 {
        Served::Stale
    } else {
        Served::Fresh
    };
    entry.write_for(&query, later, served, limits, &mut out);
    check(&out, &query, max_size);
});
