//! Upstream answers: accepted only when they answer the question we asked, and read once for
//! what the forwarder needs (rcode, TTLs, the RFC 2308 negative TTL, where the OPT record is).
//! [`Answer`] is what the upstream exchanges hand to the cache, autopath and the responder.

use bytes::BytesMut;
use smallvec::SmallVec;
use thiserror::Error;

use super::name;
use super::query::Question;
use super::{HEADER_LEN, Header, RType, Rcode, WireError, bytes_at, get_u32, rtype, update_u16};

/// Records whose TTL offsets an [`AnswerInfo`] holds without allocating: an address answer
/// with a CNAME chain, or a negative answer's SOA, fits.
pub const INLINE_RECORDS: usize = 8;

/// What an accepted upstream answer says, read from its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerInfo {
    /// The 4-bit rcode of the header.
    pub rcode: Rcode,
    pub truncated: bool,
    pub answer_count: u16,
    /// The smallest TTL in the answer section.
    pub min_answer_ttl: Option<u32>,
    /// RFC 2308 section 5: min(SOA TTL, SOA MINIMUM) of the SOA in the authority section.
    pub negative_ttl: Option<u32>,
    /// Offsets of the TTL fields of every record but OPT, so a stored copy can count down.
    /// Inline up to [`INLINE_RECORDS`] records: reading a typical answer allocates nothing.
    pub ttl_offsets: SmallVec<[u16; INLINE_RECORDS]>,
    /// Byte range of the OPT record.
    pub opt: Option<(usize, usize)>,
}

/// An accepted upstream answer: the bytes as received (still carrying our upstream ID), with
/// the upstream's OPT removed when it was the last record. Over TCP the bytes are the frame
/// of the connection's read buffer they arrived in, not a copy; over UDP, the buffer they
/// were received into.
#[derive(Debug, Clone)]
pub struct Answer {
    pub message: BytesMut,
    pub info: AnswerInfo,
}

impl Answer {
    /// Checks `message` against the query we sent and reads it.
    pub(crate) fn accept(
        mut message: BytesMut,
        id: u16,
        question: &Question,
    ) -> Result<Answer, AnswerError> {
        let mut info = inspect(&message, id, question)?;
        strip_trailing_opt(&mut message, &mut info);
        Ok(Answer { message, info })
    }

    /// Whether the message still carries an OPT record (one that was not last).
    pub fn has_opt(&self) -> bool {
        self.info.opt.is_some()
    }
}

/// Why an upstream message is not the answer to our query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AnswerError {
    #[error("not a response (QR=0)")]
    NotResponse,
    #[error("ID does not match the query")]
    IdMismatch,
    #[error("question does not match the query")]
    QuestionMismatch,
    #[error("malformed answer: {0}")]
    Malformed(#[from] WireError),
}

impl AnswerError {
    /// True for answers that look like someone else's: a wrong ID or question is what an
    /// off-path spoofing attempt (or a late answer to an earlier query) looks like.
    pub fn is_mismatch(self) -> bool {
        matches!(
            self,
            AnswerError::IdMismatch | AnswerError::QuestionMismatch
        )
    }
}

/// Checks that `msg` answers `question` with ID `id` and reads it.
pub fn inspect(msg: &[u8], id: u16, question: &Question) -> Result<AnswerInfo, AnswerError> {
    let header = Header::read(msg).ok_or(WireError::Truncated)?;
    if !header.is_response() {
        return Err(AnswerError::NotResponse);
    }
    if header.id != id {
        return Err(AnswerError::IdMismatch);
    }
    if header.qdcount != 1 {
        return Err(AnswerError::QuestionMismatch);
    }
    let (name, after_name) = name::read_uncompressed(msg, HEADER_LEN)?;
    let [t0, t1, c0, c1] = *bytes_at::<4>(msg, after_name).ok_or(WireError::Truncated)?;
    if name.to_lowercase() != question.name
        || RType(u16::from_be_bytes([t0, t1])) != question.qtype
        || u16::from_be_bytes([c0, c1]) != question.qclass
    {
        return Err(AnswerError::QuestionMismatch);
    }
    let mut info = AnswerInfo {
        rcode: header.rcode(),
        truncated: header.is_truncated(),
        answer_count: header.ancount,
        ..AnswerInfo::default()
    };
    match read_records(msg, &header, after_name + 4, &mut info) {
        Ok(()) => Ok(info),
        // A truncated answer is only used to decide a retry over TCP: its records may be cut.
        Err(_) if info.truncated => Ok(info),
        Err(err) => Err(err.into()),
    }
}

fn read_records(
    msg: &[u8],
    header: &Header,
    mut pos: usize,
    info: &mut AnswerInfo,
) -> Result<(), WireError> {
    let sections = [header.ancount, header.nscount, header.arcount];
    for (section, &count) in sections.iter().enumerate() {
        for _ in 0..count {
            let start = pos;
            let record = super::read_record(msg, pos)?;
            pos = record.rdata_end;
            if record.rtype == rtype::OPT {
                // RFC 6891 6.1.1: one OPT, owned by the root, in the additional section. One
                // elsewhere would be stripped as if it were there, leaving a section count
                // that claims a record no longer present (found by fuzzing).
                if msg[start] != 0 || info.opt.is_some() || section != 2 {
                    return Err(WireError::BadOpt);
                }
                info.opt = Some((start, record.rdata_end));
                continue;
            }
            // Offsets fit in u16: a DNS message is at most 65535 bytes.
            info.ttl_offsets.push(record.ttl_offset as u16);
            match section {
                0 => {
                    let ttl = info
                        .min_answer_ttl
                        .map_or(record.ttl, |t| t.min(record.ttl));
                    info.min_answer_ttl = Some(ttl);
                }
                1 if record.rtype == rtype::SOA && info.negative_ttl.is_none() => {
                    // MINIMUM is the last 32-bit field of the SOA RDATA; reading it from the
                    // end avoids decoding the two (possibly compressed) names before it.
                    if record.rdata_end - record.rdata_start < 22 {
                        return Err(WireError::Truncated);
                    }
                    let minimum = get_u32(msg, record.rdata_end - 4)?;
                    info.negative_ttl = Some(record.ttl.min(minimum));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A message's bytes that can be cut short: a `Vec`, or the `BytesMut` a TCP frame comes in.
pub trait MessageBuffer: std::ops::DerefMut<Target = [u8]> {
    fn truncate(&mut self, len: usize);
}

impl MessageBuffer for Vec<u8> {
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
}

impl MessageBuffer for BytesMut {
    fn truncate(&mut self, len: usize) {
        BytesMut::truncate(self, len);
    }
}

/// Removes the upstream's OPT record when it is the last record (where servers put it), so
/// the answer can be re-used for clients with and without EDNS. Returns whether the message
/// is now free of OPT. An OPT in the middle of the additional section is left in place:
/// removing it would shift the targets of later compression pointers.
pub fn strip_trailing_opt(msg: &mut impl MessageBuffer, info: &mut AnswerInfo) -> bool {
    let Some((start, end)) = info.opt else {
        return true;
    };
    if end != msg.len() {
        return false;
    }
    msg.truncate(start);
    update_u16(msg, 10, |arcount| arcount.saturating_sub(1));
    info.opt = None;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::query::{UpstreamFlags, build_upstream};
    use crate::wire::{CLASS_IN, Name, write_u16};

    fn question() -> Question {
        Question {
            name: Name::from_dotted("nx.example").unwrap(),
            qtype: rtype::A,
            qclass: CLASS_IN,
        }
    }

    /// An NXDOMAIN answer with an SOA (TTL 60, MINIMUM 5) and a trailing OPT.
    fn nxdomain(id: u16) -> Vec<u8> {
        let mut msg = build_upstream(id, &question(), UpstreamFlags::default(), 1232);
        msg.truncate(msg.len() - 11);
        msg[2] |= 0x80;
        msg[3] = 0x83;
        write_u16(&mut msg, 8, 1);
        // SOA owner: pointer to "example" inside the question name.
        msg.extend_from_slice(&[0xC0, 15, 0, 6, 0, 1, 0, 0, 0, 60, 0, 22]);
        msg.extend_from_slice(&[0, 0]); // MNAME ., RNAME .
        msg.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
        write_u16(&mut msg, 10, 1);
        crate::wire::query::push_opt(&mut msg, 1232, 0, false);
        msg
    }

    #[test]
    fn reads_rcode_and_negative_ttl_from_soa() {
        let info = inspect(&nxdomain(9), 9, &question()).unwrap();
        assert_eq!(info.rcode, super::super::rcode::NXDOMAIN);
        assert_eq!(info.negative_ttl, Some(5));
        assert_eq!(info.min_answer_ttl, None);
        assert_eq!(info.ttl_offsets.len(), 1);
        assert!(info.opt.is_some());
    }

    #[test]
    fn rejects_answers_to_other_queries() {
        let msg = nxdomain(9);
        assert_eq!(inspect(&msg, 10, &question()), Err(AnswerError::IdMismatch));
        let other = Question {
            qtype: rtype::AAAA,
            ..question()
        };
        assert_eq!(inspect(&msg, 9, &other), Err(AnswerError::QuestionMismatch));
        let mut query = msg.clone();
        query[2] &= 0x7F;
        assert_eq!(
            inspect(&query, 9, &question()),
            Err(AnswerError::NotResponse)
        );
        assert!(inspect(&msg[..msg.len() - 13], 9, &question()).is_err());
    }

    /// Fuzzing regression: an OPT as the last record of the authority section was taken for
    /// the answer's OPT and stripped, leaving NSCOUNT 1 with no record behind it.
    #[test]
    fn rejects_an_opt_outside_the_additional_section() {
        let mut msg = nxdomain(9);
        // The SOA goes: the OPT is now the only record, counted in the authority section.
        let question_end = HEADER_LEN + question().name.wire_len() + 4;
        msg.drain(question_end..msg.len() - 11);
        write_u16(&mut msg, 10, 0);
        assert_eq!(
            inspect(&msg, 9, &question()),
            Err(AnswerError::Malformed(WireError::BadOpt))
        );
        write_u16(&mut msg, 8, 0);
        write_u16(&mut msg, 6, 1);
        assert_eq!(
            inspect(&msg, 9, &question()),
            Err(AnswerError::Malformed(WireError::BadOpt)),
            "nor in the answer section"
        );
        write_u16(&mut msg, 6, 0);
        write_u16(&mut msg, 10, 1);
        assert!(inspect(&msg, 9, &question()).unwrap().opt.is_some());
    }

    #[test]
    fn strips_a_trailing_opt() {
        let mut msg = nxdomain(9);
        let mut info = inspect(&msg, 9, &question()).unwrap();
        assert!(strip_trailing_opt(&mut msg, &mut info));
        let again = inspect(&msg, 9, &question()).unwrap();
        assert_eq!(again.opt, None);
        assert_eq!(again.negative_ttl, Some(5));
    }
}
