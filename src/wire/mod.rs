//! DNS wire format (RFC 1035, RFC 6891): the parts the request path needs, read and patched in
//! place on byte slices.
//!
//! Written by hand rather than through hickory-proto's `Message` because it is the hot path: a
//! query is validated and keyed without allocating, and answers are forwarded (and later served
//! from cache) as the bytes the upstream sent, with only the ID, the question's letter case,
//! TTLs and the OPT record rewritten.
//!
//! The ground floor with [`crate::observe`]: it imports nothing of the forwarder. Values with a
//! meaning have a type ([`Rcode`], [`RType`], [`reply::ReplyLimits`]) that costs nothing at run
//! time. Config keys: none (`server.max_udp_size` reaches it as a [`reply::ReplyLimits`]).
//! Metrics: none.

pub mod alias;
pub mod answer;
pub mod framing;
pub mod name;
pub mod query;
pub mod reply;
pub mod text;

pub use name::{LetterCase, Name};
pub use query::{Edns, Query, Question};

use thiserror::Error;

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;

/// A resource record type (a question's QTYPE, a record's TYPE), as on the wire. A newtype
/// over the 16 bits, so that a type cannot be passed where an rcode, a class or a length is
/// meant; it costs nothing at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct RType(pub u16);

impl RType {
    pub fn to_be_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

impl std::fmt::Display for RType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<RType> for u16 {
    fn from(rtype: RType) -> u16 {
        rtype.0
    }
}

/// Resource record types the forwarder treats specially, and those CoreDNS's query metrics
/// name (`crate::observe::requests`).
pub mod rtype {
    use super::RType;

    pub const A: RType = RType(1);
    pub const NS: RType = RType(2);
    pub const CNAME: RType = RType(5);
    pub const SOA: RType = RType(6);
    pub const PTR: RType = RType(12);
    pub const MX: RType = RType(15);
    pub const TXT: RType = RType(16);
    pub const AAAA: RType = RType(28);
    pub const SRV: RType = RType(33);
    pub const OPT: RType = RType(41);
    pub const DS: RType = RType(43);
    pub const RRSIG: RType = RType(46);
    pub const NSEC: RType = RType(47);
    pub const DNSKEY: RType = RType(48);
    pub const NSEC3: RType = RType(50);
    pub const HTTPS: RType = RType(65);
    pub const IXFR: RType = RType(251);
    pub const AXFR: RType = RType(252);
    pub const ANY: RType = RType(255);
}

/// A response code: the header's four bits, widened by the OPT record's extended bits
/// (RFC 6891: BADVERS is 16). A newtype for the same reason as [`RType`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Rcode(pub u16);

impl Rcode {
    /// The names [`Rcode::name`] tells apart, at their [`Rcode::name_index`]; every other code
    /// is `OTHER`.
    pub const NAMES: [&'static str; 8] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "OTHER",
    ];

    /// Where this code's name is in [`Rcode::NAMES`], for tables indexed by name.
    pub fn name_index(self) -> usize {
        match self {
            rcode::NOERROR => 0,
            rcode::FORMERR => 1,
            rcode::SERVFAIL => 2,
            rcode::NXDOMAIN => 3,
            rcode::NOTIMP => 4,
            rcode::REFUSED => 5,
            rcode::BADVERS => 6,
            _ => 7,
        }
    }

    /// The conventional upper-case name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        Self::NAMES[self.name_index()]
    }

    /// The four bits that go in the header.
    pub fn header_bits(self) -> u16 {
        self.0 & flag::RCODE_MASK
    }

    /// The upper eight bits of the twelve, carried in the OPT record.
    pub fn extended_bits(self) -> u8 {
        (self.0 >> 4) as u8
    }
}

impl std::fmt::Debug for Rcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rcode({} {})", self.0, self.name())
    }
}

/// Response codes (the low four bits, and BADVERS which needs the OPT extended bits).
pub mod rcode {
    use super::Rcode;

    pub const NOERROR: Rcode = Rcode(0);
    pub const FORMERR: Rcode = Rcode(1);
    pub const SERVFAIL: Rcode = Rcode(2);
    pub const NXDOMAIN: Rcode = Rcode(3);
    pub const NOTIMP: Rcode = Rcode(4);
    pub const REFUSED: Rcode = Rcode(5);
    pub const BADVERS: Rcode = Rcode(16);
}

pub const CLASS_IN: u16 = 1;

/// Header flag bits (second 16-bit word of the header).
pub mod flag {
    pub const QR: u16 = 0x8000;
    pub const OPCODE_MASK: u16 = 0x7800;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const CD: u16 = 0x0010;
    pub const RCODE_MASK: u16 = 0x000F;
}

/// Why bytes could not be read as DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("message ends inside a field")]
    Truncated,
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    #[error("name longer than 255 bytes")]
    NameTooLong,
    #[error("empty label")]
    EmptyLabel,
    #[error("reserved label type")]
    BadLabelType,
    #[error("compression pointer in a question name")]
    PointerInQuestion,
    #[error("more than one OPT record")]
    DuplicateOpt,
    #[error("OPT record with a non-root owner name")]
    BadOpt,
    #[error("bad escape: want \\DDD (0-255) or \\ and one character")]
    BadEscape,
}

/// The fixed header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    /// Decodes the header; `None` when the message is shorter than 12 bytes.
    pub fn read(msg: &[u8]) -> Option<Header> {
        let [i0, i1, f0, f1, q0, q1, a0, a1, n0, n1, r0, r1] = *msg.first_chunk::<HEADER_LEN>()?;
        Some(Header {
            id: u16::from_be_bytes([i0, i1]),
            flags: u16::from_be_bytes([f0, f1]),
            qdcount: u16::from_be_bytes([q0, q1]),
            ancount: u16::from_be_bytes([a0, a1]),
            nscount: u16::from_be_bytes([n0, n1]),
            arcount: u16::from_be_bytes([r0, r1]),
        })
    }

    pub fn is_response(&self) -> bool {
        self.flags & flag::QR != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags & flag::OPCODE_MASK) >> 11) as u8
    }

    /// The header's four rcode bits (an OPT record may extend them).
    pub fn rcode(&self) -> Rcode {
        Rcode(self.flags & flag::RCODE_MASK)
    }

    pub fn is_truncated(&self) -> bool {
        self.flags & flag::TC != 0
    }
}

/// The `N` bytes of `msg` from `pos`, or `None` when the message ends first. Fields are read
/// through this (or from the fixed-size array it gives), never by indexing: a position
/// derived from a message cannot then read past its end.
pub(crate) fn bytes_at<const N: usize>(msg: &[u8], pos: usize) -> Option<&[u8; N]> {
    msg.get(pos..)?.first_chunk()
}

/// Reads a big-endian u16 at `pos`, or reports truncation.
pub(crate) fn get_u16(msg: &[u8], pos: usize) -> Result<u16, WireError> {
    bytes_at(msg, pos)
        .map(|field| u16::from_be_bytes(*field))
        .ok_or(WireError::Truncated)
}

/// Reads a big-endian u32 at `pos`, or reports truncation.
pub(crate) fn get_u32(msg: &[u8], pos: usize) -> Result<u32, WireError> {
    bytes_at(msg, pos)
        .map(|field| u32::from_be_bytes(*field))
        .ok_or(WireError::Truncated)
}

/// Replaces the big-endian u16 at `pos` with `update` of it; a message too short to hold it
/// is left as it is.
pub(crate) fn update_u16(msg: &mut [u8], pos: usize, update: impl FnOnce(u16) -> u16) {
    if let Some(field) = msg.get_mut(pos..).and_then(|m| m.first_chunk_mut::<2>()) {
        *field = update(u16::from_be_bytes(*field)).to_be_bytes();
    }
}

pub(crate) fn write_u16(msg: &mut [u8], pos: usize, value: u16) {
    msg[pos..pos + 2].copy_from_slice(&value.to_be_bytes());
}

/// The fixed part of a resource record after its owner name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    pub rtype: RType,
    pub class: u16,
    /// Offset of the 32-bit TTL field in the message.
    pub ttl_offset: usize,
    pub ttl: u32,
    /// Range of the RDATA in the message.
    pub rdata_start: usize,
    pub rdata_end: usize,
}

/// Reads the record whose owner name starts at `pos`; returns its head and the record start.
pub(crate) fn read_record(msg: &[u8], pos: usize) -> Result<RecordHead, WireError> {
    let after_name = name::skip(msg, pos)?;
    let [t0, t1, c0, c1, l0, l1, l2, l3, r0, r1] =
        *bytes_at::<10>(msg, after_name).ok_or(WireError::Truncated)?;
    let rdata_start = after_name + 10;
    let rdata_end = rdata_start + usize::from(u16::from_be_bytes([r0, r1]));
    if rdata_end > msg.len() {
        return Err(WireError::Truncated);
    }
    Ok(RecordHead {
        rtype: RType(u16::from_be_bytes([t0, t1])),
        class: u16::from_be_bytes([c0, c1]),
        ttl_offset: after_name + 4,
        ttl: u32::from_be_bytes([l0, l1, l2, l3]),
        rdata_start,
        rdata_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_past_the_end_of_a_message_are_reported_not_read() {
        let msg = [0x12, 0x34, 0x56, 0x78, 0x9a];
        assert_eq!(get_u16(&msg, 3), Ok(0x789a));
        assert_eq!(get_u16(&msg, 4), Err(WireError::Truncated));
        assert_eq!(get_u16(&msg, usize::MAX), Err(WireError::Truncated));
        assert_eq!(get_u32(&msg, 1), Ok(0x3456_789a));
        assert_eq!(get_u32(&msg, 2), Err(WireError::Truncated));
        assert_eq!(Header::read(&[0; HEADER_LEN - 1]), None);
        // A question end that is not in the packet, or leaves no room for type and class.
        let packet = [0; HEADER_LEN + 5];
        assert!(reply::EchoedQuestion::from_packet(&packet, HEADER_LEN + 6).is_none());
        assert!(reply::EchoedQuestion::from_packet(&packet, HEADER_LEN + 3).is_none());
        assert!(reply::EchoedQuestion::from_packet(&packet, 4).is_none());
        let question = reply::EchoedQuestion::from_packet(&packet, HEADER_LEN + 5);
        assert_eq!(question.map(|q| q.name.len()), Some(1));
    }

    #[test]
    fn an_update_past_the_end_of_a_message_changes_nothing() {
        let mut msg = [0x00, 0x01, 0x02];
        update_u16(&mut msg, 1, |v| v + 1);
        assert_eq!(msg, [0x00, 0x01, 0x03]);
        update_u16(&mut msg, 2, |_| 0xffff);
        assert_eq!(msg, [0x00, 0x01, 0x03]);
    }
}
