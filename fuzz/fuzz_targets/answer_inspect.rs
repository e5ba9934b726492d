//! Upstream answers: `wire::answer::inspect` and `strip_trailing_opt` (together what
//! `wire::answer::Answer::accept` does), checked against the question the message itself carries
//! so that the fuzzer gets past the question match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodelocal_dns::wire::answer::{inspect, strip_trailing_opt};
use nodelocal_dns::wire::name::read_uncompressed;
use nodelocal_dns::wire::{HEADER_LEN, Header, Question, RType};

fuzz_target!(|msg: &[u8]| {
    let Some(header) = Header::read(msg) else {
        return;
    };
    let Ok((name, end)) = read_uncompressed(msg, HEADER_LEN) else {
        return;
    };
    if end + 4 > msg.len() {
        return;
    }
    let question = Question {
        name: name.to_lowercase(),
        qtype: RType(u16::from_be_bytes([msg[end], msg[end + 1]])),
        qclass: u16::from_be_bytes([msg[end + 2], msg[end + 3]]),
    };
    let Ok(mut info) = inspect(msg, header.id, &question) else {
        return;
    };
    let mut message = msg.to_vec();
    let stripped = strip_trailing_opt(&mut message, &mut info);
    assert_eq!(stripped, info.opt.is_none());
    // The cache patches TTLs at these offsets and copies the question over the start.
    for &offset in &info.ttl_offsets {
        assert!(
            usize::from(offset) + 4 <= message.len(),
            "TTL offset {offset} out of range"
        );
    }
    if let Some((start, stop)) = info.opt {
        assert!(start < stop && stop <= message.len());
    }
    assert!(message.len() >= end + 4);
    let after = Header::read(&message).expect("still has a header");
    if stripped && msg.len() != message.len() {
        assert_eq!(after.arcount + 1, header.arcount);
    }
});
