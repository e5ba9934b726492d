//! Writing answers to clients: error answers built from the query bytes, and forwarded (or
//! cached) answers patched for the client that asked.

use super::name::{LetterCase, Name};
use super::query::{Edns, OPTION_NSID, Query, push_opt};
use super::text::Record;
use super::{
    HEADER_LEN, Header, RType, Rcode, flag, get_u16, name, read_record, rtype, update_u16,
    write_u16,
};

/// The smallest UDP payload every DNS client accepts (RFC 1035 2.3.4).
pub const MIN_UDP_PAYLOAD: u16 = 512;

/// How large a UDP answer may be for this client: 512 without EDNS, else the client's advertised
/// size, never below 512 and never above our configured maximum (default 1232, the DNS flag day
/// 2020 size that avoids IP fragmentation).
pub fn udp_limit(edns: Option<Edns>, max_udp_size: u16) -> usize {
    let size = match edns {
        None => MIN_UDP_PAYLOAD,
        Some(e) => e
            .udp_size
            .clamp(MIN_UDP_PAYLOAD, max_udp_size.max(MIN_UDP_PAYLOAD)),
    };
    size as usize
}

/// How large an answer may be for the client it goes to, and the UDP payload size the OPT
/// record we add advertises (`server.max_udp_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Beyond this many bytes the answer is truncated (TC=1, question only).
    pub max_size: usize,
    /// The payload size of our OPT record.
    pub udp_size: u16,
}

impl ReplyLimits {
    /// An answer that is never truncated and gets no OPT of ours that matters: one built for
    /// ourselves (autopath's expansions) rather than for a client.
    pub const UNTRUNCATED: ReplyLimits = ReplyLimits {
        max_size: u16::MAX as usize,
        udp_size: 0,
    };

    /// A UDP client's: [`udp_limit`] of what it advertised and our maximum.
    pub fn udp(edns: Option<Edns>, max_udp_size: u16) -> ReplyLimits {
        ReplyLimits {
            max_size: udp_limit(edns, max_udp_size),
            udp_size: max_udp_size,
        }
    }

    /// A TCP client's: any DNS message fits the 16-bit length prefix.
    pub fn tcp(max_udp_size: u16) -> ReplyLimits {
        ReplyLimits {
            max_size: u16::MAX as usize,
            udp_size: max_udp_size,
        }
    }
}

/// The question of an error answer, as the client wrote it: `name` with `case` put back.
#[derive(Debug, Clone, Copy)]
pub struct EchoedQuestion<'a> {
    pub name: &'a [u8],
    pub case: LetterCase,
    pub qtype: RType,
    pub qclass: u16,
}

impl<'a> EchoedQuestion<'a> {
    /// The question of `packet`, which ends at `question_end` (as [`super::query::parse`] found);
    /// `None` when the packet holds no question there.
    pub fn from_packet(packet: &'a [u8], question_end: usize) -> Option<EchoedQuestion<'a>> {
        let (name, fixed) = packet
            .get(HEADER_LEN..question_end)?
            .split_last_chunk::<4>()?;
        let [t0, t1, c0, c1] = *fixed;
        Some(EchoedQuestion {
            name,
            case: LetterCase::LOWER,
            qtype: RType(u16::from_be_bytes([t0, t1])),
            qclass: u16::from_be_bytes([c0, c1]),
        })
    }

    pub fn of_query(query: &'a Query) -> EchoedQuestion<'a> {
        EchoedQuestion {
            name: query.question.name.as_wire(),
            case: query.case,
            qtype: query.question.qtype,
            qclass: query.question.qclass,
        }
    }
}

/// Writes an answer with `rcode` and no records into `out`, for a query with `id` and header
/// `query_flags`. The question is echoed when known; an OPT is added when the client sent one
/// (BADVERS lives in the OPT's extended-rcode bits).
pub fn write_error(
    out: &mut Vec<u8>,
    id: u16,
    query_flags: u16,
    question: Option<EchoedQuestion<'_>>,
    rcode: Rcode,
    edns: Option<Edns>,
    udp_size: u16,
) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    // An opcode we do not implement gets what BIND and Unbound send: the ID, the opcode and RD
    // copied and nothing else. RA, AD and CD speak of a query served, which this one is not.
    let (copied, available) = if rcode == super::rcode::NOTIMP {
        (flag::OPCODE_MASK | flag::RD, 0)
    } else {
        (flag::OPCODE_MASK | flag::RD | flag::CD, flag::RA)
    };
    let flags = flag::QR | (query_flags & copied) | available | rcode.header_bits();
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    if let Some(question) = question {
        let at = out.len();
        out.extend_from_slice(question.name);
        question.case.apply(&mut out[at..]);
        out.extend_from_slice(&question.qtype.to_be_bytes());
        out.extend_from_slice(&question.qclass.to_be_bytes());
    }
    if let Some(edns) = edns {
        push_opt(out, udp_size, rcode.extended_bits(), edns.dnssec_ok);
    }
}

/// Writes an upstream or cached `answer` for `query` into `out`: the client's ID and CD bit, the
/// client's letter case in the question (and so in every name compressed against it), an OPT
/// when the client used EDNS, and truncation (TC=1, question only) when larger than `limits`
/// allow.
///
/// `answer` must answer `query.question` (checked when it was accepted) and carry no OPT unless
/// `answer_has_opt`. Returns whether the answer was truncated.
pub fn write_answer(
    out: &mut Vec<u8>,
    answer: &[u8],
    answer_has_opt: bool,
    query: &Query,
    limits: ReplyLimits,
) -> bool {
    out.clear();
    out.extend_from_slice(answer);
    patch_answer(out, answer_has_opt, query, limits)
}

/// [`write_answer`] for an answer already copied into `out` (the cache puts a stored answer
/// back together there).
pub fn patch_answer(
    out: &mut Vec<u8>,
    answer_has_opt: bool,
    query: &Query,
    limits: ReplyLimits,
) -> bool {
    let ReplyLimits { max_size, udp_size } = limits;
    write_u16(out, 0, query.id);
    // RFC 4035 3.2.2: CD is the client's, copied from its query, whatever the upstream said.
    update_u16(out, 2, |flags| {
        (flags & !flag::CD) | (query.flags & flag::CD)
    });
    let name = query.question.name.as_wire();
    let echoed = &mut out[HEADER_LEN..HEADER_LEN + name.len()];
    echoed.copy_from_slice(name);
    query.case.apply(echoed);
    let mut fits = true;
    if query.edns.is_some() && !answer_has_opt {
        match get_u16(out, 10)
            .ok()
            .and_then(|arcount| arcount.checked_add(1))
        {
            Some(arcount) => {
                write_u16(out, 10, arcount);
                push_opt(out, udp_size, 0, query.dnssec_ok());
            }
            // No message holds 65535 additional records (each takes 11 bytes or more); only a
            // cut (TC=1) upstream answer claims them. It gets the truncated answer, which has
            // room for the OPT. (Found by fuzz/fuzz_targets/cache_write.rs.)
            None => fits = false,
        }
    }
    if !fits || out.len() > max_size {
        let question_end = HEADER_LEN + name.len() + 4;
        out.truncate(question_end);
        update_u16(out, 2, |flags| flags | flag::TC);
        write_u16(out, 6, 0);
        write_u16(out, 8, 0);
        write_u16(out, 10, u16::from(query.edns.is_some()));
        if query.edns.is_some() {
            push_opt(out, udp_size, 0, query.dnssec_ok());
        }
        return true;
    }
    false
}

/// Writes an answer of our own to `query` into `out`: `rdatas` as records of `rtype` owned by
/// the question's name, each with `ttl`, and the AA bit set. It is what CoreDNS writes for the
/// data it serves itself (`hosts`): the opcode, RD and CD copied, RA not set. No `rdatas` is an
/// empty (NODATA) answer. Then as [`patch_answer`]: the client's letter case, an OPT when the
/// client used EDNS, truncation beyond `limits`. Returns whether it was truncated.
pub fn write_authoritative<R: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    query: &Query,
    rtype: RType,
    ttl: u32,
    rdatas: impl IntoIterator<Item = R>,
    limits: ReplyLimits,
) -> bool {
    start_authoritative(out, query, super::rcode::NOERROR);
    let mut count: u16 = 0;
    for rdata in rdatas {
        // Past 65535 records the message could not say so; it is truncated below long before
        // that for any client.
        let Some(next) = count.checked_add(1) else {
            break;
        };
        if push_record(
            out,
            &query.question.name,
            query,
            rtype,
            super::CLASS_IN,
            ttl,
            rdata.as_ref(),
        ) {
            count = next;
        }
    }
    write_u16(out, 6, count);
    patch_answer(out, false, query, limits)
}

/// The records of an answer of our own, by section.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sections<'a> {
    pub answer: &'a [Record],
    pub authority: &'a [Record],
    pub additional: &'a [Record],
}

/// [`write_authoritative`] for records of any owner, type and class in all three sections, and
/// any header `rcode` (CoreDNS's `template` answers).
pub fn write_records(
    out: &mut Vec<u8>,
    query: &Query,
    rcode: Rcode,
    sections: Sections<'_>,
    limits: ReplyLimits,
) -> bool {
    start_authoritative(out, query, rcode);
    let counts = [
        (6, sections.answer),
        (8, sections.authority),
        (10, sections.additional),
    ];
    for (at, records) in counts {
        let mut count: u16 = 0;
        for r in records {
            let Some(next) = count.checked_add(1) else {
                break;
            };
            if push_record(out, &r.owner, query, r.rtype, r.class, r.ttl, &r.rdata) {
                count = next;
            }
        }
        write_u16(out, at, count);
    }
    patch_answer(out, false, query, limits)
}

/// The header and question of an answer of our own: the query's ID, QR and AA, its opcode, RD
/// and CD copied, RA not set, `rcode`; no records yet.
fn start_authoritative(out: &mut Vec<u8>, query: &Query, rcode: Rcode) {
    out.clear();
    let flags = flag::QR
        | flag::AA
        | (query.flags & (flag::OPCODE_MASK | flag::RD | flag::CD))
        | rcode.header_bits();
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    // One question; the record counts are written once the records are.
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(query.question.name.as_wire());
    out.extend_from_slice(&query.question.qtype.to_be_bytes());
    out.extend_from_slice(&query.question.qclass.to_be_bytes());
}

/// Appends one record; an owner that is the question's name is a pointer to it (offset 12), so
/// it takes the client's letter case with the question. Returns false, appending nothing, for
/// RDATA too long for its length field.
fn push_record(
    out: &mut Vec<u8>,
    owner: &Name,
    query: &Query,
    rtype: RType,
    class: u16,
    ttl: u32,
    rdata: &[u8],
) -> bool {
    let Ok(rdlen) = u16::try_from(rdata.len()) else {
        return false;
    };
    if *owner == query.question.name {
        out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
    } else {
        out.extend_from_slice(owner.as_wire());
    }
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&rdlen.to_be_bytes());
    out.extend_from_slice(rdata);
    true
}

/// Adds our name server identifier (RFC 5001 2.2) to the answer in `out`, whose last record
/// must be its OPT (the one written for the client), when the answer still fits in
/// `max_size`; otherwise leaves the answer as it is: the identifier is a courtesy, the answer
/// is not. Returns whether it was added.
pub fn add_nsid(out: &mut Vec<u8>, nsid: &[u8], max_size: usize) -> bool {
    let added = 4 + nsid.len();
    let Some(opt) = last_record(out) else {
        return false;
    };
    let Ok(record) = read_record(out, opt) else {
        return false;
    };
    let rdlen = record.rdata_end - record.rdata_start;
    let fits = out.len() + added <= max_size && rdlen + added <= u16::MAX as usize;
    if out[opt] != 0 || record.rtype != rtype::OPT || !fits {
        return false;
    }
    write_u16(out, record.rdata_start - 2, (rdlen + added) as u16);
    out.extend_from_slice(&OPTION_NSID.to_be_bytes());
    out.extend_from_slice(&(nsid.len() as u16).to_be_bytes());
    out.extend_from_slice(nsid);
    true
}

/// Where the last record of `msg` starts, when `msg` is records to its very end.
fn last_record(msg: &[u8]) -> Option<usize> {
    let header = Header::read(msg)?;
    let mut pos = HEADER_LEN;
    for _ in 0..header.qdcount {
        pos = name::skip(msg, pos).ok()? + 4;
    }
    let records = header.ancount as usize + header.nscount as usize + header.arcount as usize;
    let mut last = None;
    for _ in 0..records {
        last = Some(pos);
        pos = read_record(msg, pos).ok()?.rdata_end;
    }
    last.filter(|_| pos == msg.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::query::{UpstreamFlags, build_upstream, parse};
    use crate::wire::{Header, Name, Question, rcode};

    fn client_query(edns: bool) -> Vec<u8> {
        let question = Question {
            name: Name::from_dotted("a.example").unwrap(),
            qtype: crate::wire::rtype::A,
            qclass: 1,
        };
        let mut msg = build_upstream(0x4242, &question, UpstreamFlags::default(), 1232);
        msg[HEADER_LEN + 1] = b'A';
        if !edns {
            msg.truncate(msg.len() - 11);
            write_u16(&mut msg, 10, 0);
        }
        msg
    }

    #[test]
    fn error_answer_echoes_question_and_opt() {
        let packet = client_query(true);
        let query = parse(&packet).unwrap();
        let mut out = Vec::new();
        let question = Some(EchoedQuestion::of_query(&query));
        write_error(
            &mut out,
            query.id,
            query.flags,
            question,
            rcode::BADVERS,
            query.edns,
            1232,
        );
        let header = Header::read(&out).unwrap();
        assert!(header.is_response());
        assert_eq!(header.id, 0x4242);
        assert_eq!(header.rcode(), rcode::NOERROR);
        assert_eq!((header.qdcount, header.arcount), (1, 1));
        // Extended rcode byte of the OPT: BADVERS = 16 = 1 << 4.
        assert_eq!(out[out.len() - 6], 1);
        // The question as the client wrote it, its upper-case letter too.
        let name_len = query.question.name.wire_len();
        assert_eq!(
            &out[HEADER_LEN..HEADER_LEN + name_len],
            b"\x01A\x07example\x00"
        );
    }

    #[test]
    fn notimp_copies_only_the_id_the_opcode_and_rd() {
        let asked = flag::RD | flag::CD | 0x0020 | (5 << 11); // RD, CD, AD, opcode UPDATE
        let mut out = Vec::new();
        write_error(&mut out, 7, asked, None, rcode::NOTIMP, None, 1232);
        let header = Header::read(&out).unwrap();
        assert_eq!(
            header.flags,
            flag::QR | (5 << 11) | flag::RD | rcode::NOTIMP.header_bits()
        );

        // Other errors answer a query we served: RA set, CD copied.
        write_error(
            &mut out,
            7,
            flag::RD | flag::CD,
            None,
            rcode::FORMERR,
            None,
            1232,
        );
        let flags = Header::read(&out).unwrap().flags;
        assert_eq!(
            flags,
            flag::QR | flag::RD | flag::RA | flag::CD | rcode::FORMERR.header_bits()
        );
    }

    #[test]
    fn answers_carry_the_clients_cd_bit_not_the_upstreams() {
        for client_cd in [false, true] {
            let mut packet = client_query(true);
            if client_cd {
                write_u16(&mut packet, 2, flag::RD | flag::CD);
            }
            let query = parse(&packet).unwrap();
            let mut answer = packet[..packet.len() - 11].to_vec();
            write_u16(&mut answer, 10, 0);
            let upstream_cd = if client_cd { 0 } else { flag::CD };
            write_u16(&mut answer, 2, flag::QR | flag::RD | flag::RA | upstream_cd);
            let mut out = Vec::new();
            write_answer(&mut out, &answer, false, &query, ReplyLimits::tcp(1232));
            let flags = Header::read(&out).unwrap().flags;
            assert_eq!(flags & flag::CD != 0, client_cd);
        }
    }

    #[test]
    fn nsid_goes_into_the_answers_opt_when_it_fits() {
        let packet = client_query(true);
        let query = parse(&packet).unwrap();
        let mut out = Vec::new();
        write_error(
            &mut out,
            1,
            query.flags,
            None,
            rcode::NXDOMAIN,
            query.edns,
            1232,
        );
        let without = out.clone();
        assert!(
            !add_nsid(&mut out, b"node-a", without.len() + 9),
            "one byte short"
        );
        assert_eq!(out, without);
        assert!(add_nsid(&mut out, b"node-a", without.len() + 10));
        assert_eq!(
            &out[without.len() - 2..without.len()],
            &[0, 10],
            "OPT RDLEN"
        );
        assert_eq!(&out[without.len()..], b"\x00\x03\x00\x06node-a");

        // No OPT last (a client without EDNS): nothing is added.
        write_error(&mut out, 1, query.flags, None, rcode::NXDOMAIN, None, 1232);
        let plain = out.clone();
        assert!(!add_nsid(&mut out, b"node-a", 65535));
        assert_eq!(out, plain);
    }

    #[test]
    fn answer_is_truncated_to_the_client_limit() {
        let packet = client_query(false);
        let query = parse(&packet).unwrap();
        let mut answer = packet.clone();
        answer[2] |= 0x80;
        write_u16(&mut answer, 0, 999);
        answer[HEADER_LEN + 1] = b'a';
        write_u16(&mut answer, 6, 1);
        answer.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 2, 0]);
        answer.extend_from_slice(&[b'x'; 512]);
        let mut out = Vec::new();
        let limits = |max_size| ReplyLimits {
            max_size,
            udp_size: 1232,
        };
        write_answer(&mut out, &answer, false, &query, limits(512));
        let header = Header::read(&out).unwrap();
        assert!(header.is_truncated());
        assert_eq!(header.id, 0x4242);
        assert_eq!((header.ancount, header.arcount), (0, 0));
        assert_eq!(out[HEADER_LEN + 1], b'A', "client's letter case is echoed");

        write_answer(&mut out, &answer, false, &query, limits(65535));
        assert_eq!(out.len(), answer.len());
        assert!(!Header::read(&out).unwrap().is_truncated());
    }

    /// Fuzzing regression: a TC=1 upstream answer claiming 65535 additional records overflowed
    /// the ARCOUNT when the client's OPT was added (a panic with overflow checks, a wrong
    /// ARCOUNT without). It is answered truncated, with the question and the OPT.
    #[test]
    fn answer_claiming_65535_additional_records_is_truncated_not_overflowed() {
        let packet = client_query(true);
        let query = parse(&packet).unwrap();
        let question_end = packet.len() - 11;
        let mut answer = packet[..question_end].to_vec();
        write_u16(&mut answer, 2, flag::QR | flag::TC | flag::RD);
        write_u16(&mut answer, 10, u16::MAX);
        let mut out = Vec::new();
        let limits = ReplyLimits::tcp(1232);
        assert!(write_answer(&mut out, &answer, false, &query, limits));
        let header = Header::read(&out).unwrap();
        assert!(header.is_truncated());
        assert_eq!((header.qdcount, header.ancount, header.arcount), (1, 0, 1));
        assert_eq!(out.len(), question_end + 11, "question and OPT only");
    }

    #[test]
    fn udp_limit_honours_client_size_within_bounds() {
        let edns = |udp_size| {
            Some(Edns {
                udp_size,
                version: 0,
                dnssec_ok: false,
                nsid: false,
            })
        };
        assert_eq!(udp_limit(None, 1232), 512);
        assert_eq!(udp_limit(edns(100), 1232), 512);
        assert_eq!(udp_limit(edns(4096), 1232), 1232);
        assert_eq!(udp_limit(edns(800), 1232), 800);
    }
}
