//! Client packets: `wire::query::parse`, then whatever the server writes back for them (the
//! error answer of a rejection, the upstream query of an accepted one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodelocal_dns::wire::query::{Rejection, UpstreamFlags, build_upstream, parse};
use nodelocal_dns::wire::reply::{EchoedQuestion, write_error};
use nodelocal_dns::wire::{HEADER_LEN, Header};

fuzz_target!(|packet: &[u8]| {
    let mut out = Vec::new();
    match parse(packet) {
        Ok(query) => {
            assert_eq!(query.question.name, query.question.name.to_lowercase());
            // The client's letter case, put back, is the name it sent.
            let sent = query.question.name.with_case(&query.case);
            assert_eq!(sent.as_wire(), &packet[HEADER_LEN..HEADER_LEN + sent.wire_len()]);
            // What we send upstream reads back as the same question.
            let flags = UpstreamFlags {
                checking_disabled: query.checking_disabled(),
                dnssec_ok: query.dnssec_ok(),
            };
            let upstream = build_upstream(7, &query.question, flags, 1232);
            let again = parse(&upstream).expect("our upstream query parses");
            assert_eq!(again.question, query.question);
            assert_eq!(again.dnssec_ok(), query.dnssec_ok());
        }
        Err(Rejection::Drop(_)) => {
            assert!(packet.len() < HEADER_LEN || packet[2] & 0x80 != 0);
        }
        Err(Rejection::Answer {
            header,
            rcode,
            question_end,
            edns,
        }) => {
            let question = question_end.and_then(|end| EchoedQuestion::from_packet(packet, end));
            write_error(
                &mut out,
                header.id,
                header.flags,
                question,
                rcode,
                edns,
                1232,
            );
            let answer = Header::read(&out).expect("an error answer has a header");
            assert!(answer.is_response());
            assert_eq!(answer.id, header.id);
            assert_eq!(answer.qdcount, u16::from(question_end.is_some()));
        }
    }
});
