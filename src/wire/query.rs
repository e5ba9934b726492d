//! Client queries: validation, and the queries we send upstream.
//!
//! [`parse`] decides, from the bytes alone, whether a packet is a query we serve or which
//! answer the RFCs give it: dropped (too short to answer, or a response: answering it would
//! reflect traffic), FORMERR, NOTIMP, BADVERS or REFUSED.

use bytes::BufMut;

use super::name::{self, LetterCase, Name};
use super::{
    CLASS_IN, HEADER_LEN, Header, RType, Rcode, WireError, flag, get_u16, rcode, read_record, rtype,
};

/// What a question asks: the name lowercased, with its type and class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Question {
    pub name: Name,
    pub qtype: RType,
    pub qclass: u16,
}

/// The client's EDNS0 OPT record, as far as the answer depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size (the OPT CLASS field).
    pub udp_size: u16,
    pub version: u8,
    /// The DO bit (RFC 3225): copied into the answer's OPT.
    pub dnssec_ok: bool,
    /// The OPT carries an NSID option (RFC 5001): the answer gets our `server.nsid`, if any.
    pub nsid: bool,
}

/// A validated client query.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub id: u16,
    /// Header flags as received (RD and CD are forwarded).
    pub flags: u16,
    pub question: Question,
    /// The letter case of the question name as the client sent it, echoed in the answer.
    pub case: LetterCase,
    pub edns: Option<Edns>,
}

impl Query {
    pub fn recursion_desired(&self) -> bool {
        self.flags & flag::RD != 0
    }

    pub fn checking_disabled(&self) -> bool {
        self.flags & flag::CD != 0
    }

    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }
}

/// Why a packet gets no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a DNS header: there is no ID to answer to.
    ShortHeader,
    /// QR=1: a response, never answered (that would reflect or loop traffic).
    Response,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::ShortHeader => "short_header",
            DropReason::Response => "response",
        }
    }
}

/// How a packet that is not a servable query is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Drop(DropReason),
    /// Answer with `rcode`; `question_end` is set when the question could be read and is echoed,
    /// `edns` when the client's OPT could be read (the answer then carries an OPT too).
    Answer {
        header: Header,
        rcode: Rcode,
        question_end: Option<usize>,
        edns: Option<Edns>,
    },
}

impl Rejection {
    fn answer(
        header: Header,
        rcode: Rcode,
        question_end: Option<usize>,
        edns: Option<Edns>,
    ) -> Rejection {
        Rejection::Answer {
            header,
            rcode,
            question_end,
            edns,
        }
    }
}

/// Validates a client packet and extracts the query.
pub fn parse(packet: &[u8]) -> Result<Query, Rejection> {
    let header = Header::read(packet).ok_or(Rejection::Drop(DropReason::ShortHeader))?;
    if header.is_response() {
        return Err(Rejection::Drop(DropReason::Response));
    }
    let question = (header.qdcount == 1)
        .then(|| read_question(packet))
        .and_then(Result::ok);
    if header.opcode() != 0 {
        // NOTIFY, UPDATE and the rest are not ours to serve, whatever their content.
        let question_end = question.map(|(_, _, end)| end);
        return Err(Rejection::answer(header, rcode::NOTIMP, question_end, None));
    }
    let Some((name, (qtype, qclass), question_end)) = question else {
        return Err(Rejection::answer(header, rcode::FORMERR, None, None));
    };
    let edns = read_edns(packet, &header, question_end)
        .map_err(|_| Rejection::answer(header, rcode::FORMERR, Some(question_end), None))?;
    let reject = |rcode| Err(Rejection::answer(header, rcode, Some(question_end), edns));
    if edns.is_some_and(|e| e.version > 0) {
        return reject(rcode::BADVERS);
    }
    if qtype == rtype::OPT {
        return reject(rcode::FORMERR);
    }
    if qclass != CLASS_IN || qtype == rtype::AXFR || qtype == rtype::IXFR {
        return reject(rcode::REFUSED);
    }
    let (name, case) = name.split_case();
    Ok(Query {
        id: header.id,
        flags: header.flags,
        question: Question {
            name,
            qtype,
            qclass,
        },
        case,
        edns,
    })
}

/// Reads the question at the start of a message: name as sent, (type, class), end offset.
fn read_question(packet: &[u8]) -> Result<(Name, (RType, u16), usize), WireError> {
    let (name, after_name) = name::read_uncompressed(packet, HEADER_LEN)?;
    let qtype = RType(get_u16(packet, after_name)?);
    let qclass = get_u16(packet, after_name + 2)?;
    Ok((name, (qtype, qclass), after_name + 4))
}

/// Walks the answer, authority and additional sections after the question and returns the
/// OPT record, if any. More than one OPT, or one not owned by the root, is malformed.
fn read_edns(packet: &[u8], header: &Header, mut pos: usize) -> Result<Option<Edns>, WireError> {
    let records = header.ancount as usize + header.nscount as usize;
    for _ in 0..records {
        pos = read_record(packet, pos)?.rdata_end;
    }
    let mut edns = None;
    for _ in 0..header.arcount {
        let owner = pos;
        let record = read_record(packet, pos)?;
        if record.rtype == rtype::OPT {
            if edns.is_some() {
                return Err(WireError::DuplicateOpt);
            }
            if packet[owner] != 0 {
                return Err(WireError::BadOpt);
            }
            edns = Some(Edns {
                udp_size: record.class,
                version: ((record.ttl >> 16) & 0xFF) as u8,
                dnssec_ok: record.ttl & 0x8000 != 0,
                nsid: has_option(&packet[record.rdata_start..record.rdata_end], OPTION_NSID),
            });
        }
        pos = record.rdata_end;
    }
    Ok(edns)
}

/// The EDNS option code of NSID (RFC 5001).
pub const OPTION_NSID: u16 = 3;

/// Whether the OPT RDATA `options` holds an option of `code`. Other options, and a malformed
/// tail, are ignored (RFC 6891 6.1.2: unknown options are not an error).
fn has_option(mut options: &[u8], code: u16) -> bool {
    while let Some((head, rest)) = options.split_first_chunk::<4>() {
        let [c0, c1, l0, l1] = *head;
        if u16::from_be_bytes([c0, c1]) == code {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        options = rest.get(len..).unwrap_or_default();
    }
    false
}

/// Flags of a query we send upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamFlags {
    pub checking_disabled: bool,
    pub dnssec_ok: bool,
}

/// Builds the query we send upstream: our own random `id`, RD set (we forward to recursive
/// resolvers), the lowercased question, and an OPT advertising `udp_size`. The client's own
/// EDNS options (cookies, client subnet) are deliberately not forwarded.
pub fn build_upstream(
    id: u16,
    question: &Question,
    flags: UpstreamFlags,
    udp_size: u16,
) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER_LEN + question.name.as_wire().len() + 4 + 11);
    append_upstream(&mut msg, id, question, flags, udp_size);
    msg
}

/// [`build_upstream`] appended to `out`, without a buffer of its own: a pooled connection's
/// write batch, or the buffer a UDP exchange then receives its answer into.
pub fn append_upstream(
    out: &mut impl BufMut,
    id: u16,
    question: &Question,
    flags: UpstreamFlags,
    udp_size: u16,
) {
    let mut header_flags = flag::RD;
    if flags.checking_disabled {
        header_flags |= flag::CD;
    }
    out.put_u16(id);
    out.put_u16(header_flags);
    // One question, no answers or authority, one additional (the OPT).
    out.put_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    out.put_slice(question.name.as_wire());
    out.put_u16(question.qtype.0);
    out.put_u16(question.qclass);
    push_opt(out, udp_size, 0, flags.dnssec_ok);
}

/// Appends an OPT record (root owner, no options). `extended_rcode` is the upper 8 bits of a
/// 12-bit rcode (BADVERS is 1 here).
pub(crate) fn push_opt(msg: &mut impl BufMut, udp_size: u16, extended_rcode: u8, dnssec_ok: bool) {
    msg.put_u8(0);
    msg.put_u16(rtype::OPT.0);
    msg.put_u16(udp_size);
    msg.put_u8(extended_rcode);
    msg.put_u8(0); // version 0
    msg.put_u16(if dnssec_ok { 0x8000 } else { 0 });
    msg.put_u16(0);
}

/// The ID of a message, for matching answers to queries.
pub fn message_id(msg: &[u8]) -> Option<u16> {
    msg.first_chunk().map(|id| u16::from_be_bytes(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(name: &[u8], qtype: u16, qclass: u16) -> Vec<u8> {
        let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(name);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&qclass.to_be_bytes());
        msg
    }

    fn with_opt(mut msg: Vec<u8>, version: u8) -> Vec<u8> {
        msg[11] += 1;
        msg.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, version, 0x80, 0, 0, 0]);
        msg
    }

    #[test]
    fn parses_a_plain_query_and_lowercases_the_key() {
        let q = parse(&query_bytes(b"\x03WwW\x07example\x00", 1, 1)).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.recursion_desired());
        assert_eq!(q.question.name.as_wire(), b"\x03www\x07example\x00");
        assert_eq!(
            q.question.name.with_case(&q.case).as_wire(),
            b"\x03WwW\x07example\x00"
        );
        assert_eq!(q.edns, None);
    }

    #[test]
    fn reads_edns_size_version_and_do_bit() {
        let q = parse(&with_opt(query_bytes(b"\x01a\x00", 1, 1), 0)).unwrap();
        assert_eq!(
            q.edns,
            Some(Edns {
                udp_size: 1232,
                version: 0,
                dnssec_ok: true,
                nsid: false,
            })
        );
    }

    #[test]
    fn an_nsid_option_is_found_among_others() {
        let with_options = |options: &[u8]| {
            let mut msg = with_opt(query_bytes(b"\x01a\x00", 1, 1), 0);
            let len = msg.len();
            msg[len - 2..].copy_from_slice(&(options.len() as u16).to_be_bytes());
            msg.extend_from_slice(options);
            parse(&msg).unwrap().edns.unwrap().nsid
        };
        assert!(!with_options(&[]));
        assert!(with_options(&[0, 3, 0, 0]));
        // After a cookie; and not fooled by a cookie whose bytes look like an NSID option.
        assert!(with_options(&[
            0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 3, 0, 0
        ]));
        assert!(!with_options(&[0, 10, 0, 4, 0, 3, 0, 0]));
        // A cut option list is no NSID, and no error.
        assert!(!with_options(&[0, 10, 0, 9, 1]));
    }

    #[test]
    fn rejections_follow_the_rfcs() {
        let short = parse(&[0; 11]).unwrap_err();
        assert_eq!(short, Rejection::Drop(DropReason::ShortHeader));

        let mut response = query_bytes(b"\x01a\x00", 1, 1);
        response[2] |= 0x80;
        assert_eq!(
            parse(&response).unwrap_err(),
            Rejection::Drop(DropReason::Response)
        );

        let rcode_of = |packet: Vec<u8>| match parse(&packet) {
            Err(Rejection::Answer { rcode, .. }) => rcode,
            other => panic!("expected an answer rejection, got {other:?}"),
        };
        let mut notify = query_bytes(b"\x01a\x00", 1, 1);
        notify[2] |= 4 << 3;
        assert_eq!(rcode_of(notify), rcode::NOTIMP);
        assert_eq!(rcode_of(query_bytes(b"\x01a\x00", 1, 3)), rcode::REFUSED);
        assert_eq!(rcode_of(query_bytes(b"\x01a\x00", 252, 1)), rcode::REFUSED);
        assert_eq!(
            rcode_of(with_opt(query_bytes(b"\x01a\x00", 1, 1), 1)),
            rcode::BADVERS
        );
        assert_eq!(rcode_of(query_bytes(b"\xC0\x0C", 1, 1)), rcode::FORMERR);
        let mut two_questions = query_bytes(b"\x01a\x00", 1, 1);
        two_questions[5] = 2;
        assert_eq!(rcode_of(two_questions), rcode::FORMERR);
        let two_opts = with_opt(with_opt(query_bytes(b"\x01a\x00", 1, 1), 0), 0);
        assert_eq!(rcode_of(two_opts), rcode::FORMERR);
    }

    #[test]
    fn upstream_query_round_trips_through_parse() {
        let question = Question {
            name: Name::from_dotted("example.com").unwrap(),
            qtype: rtype::AAAA,
            qclass: CLASS_IN,
        };
        let flags = UpstreamFlags {
            checking_disabled: true,
            dnssec_ok: true,
        };
        let msg = build_upstream(7, &question, flags, 1232);
        let q = parse(&msg).unwrap();
        assert_eq!(q.id, 7);
        assert_eq!(q.question, question);
        assert!(q.checking_disabled() && q.dnssec_ok() && q.recursion_desired());
    }
}
