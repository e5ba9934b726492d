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

/// Resource record types the forwarder treats specially.
pub mod rtype {
    use super::RType;

    pub const A: RType = RType(1);
    pub const NS: RType = RType(2);
    pub const CNAME: RType = RType(5);
    pub const SOA: RType = RType(6);
    pub const AAAA: RType = RType(28);
    pub const OPT: RType = RType(41);
    pub const IXFR: RType = RType(251);
    pub const AXFR: RType = RType(252);
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
        if msg.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            id: read_u16(msg, 0),
            flags: read_u16(msg, 2),
            qdcount: read_u16(msg, 4),
            ancount: read_u16(msg, 6),
            nscount: read_u16(msg, 8),
            arcount: read_u16(msg, 10),
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

pub(crate) fn read_u16(msg: &[u8], pos: usize) -> u16 {
    u16::from_be_bytes([msg[pos], msg[pos + 1]])
}

pub(crate) fn read_u32(msg: &[u8], pos: usize) -> u32 {
    u32::from_be_bytes([msg[pos], msg[pos + 1], msg[pos + 2], msg[pos + 3]])
}

pub(crate) fn write_u16(msg: &mut [u8], pos: usize, value: u16) {
    msg[pos..pos + 2].copy_from_slice(&value.to_be_bytes());
}

/// Reads a big-endian u16 at `pos`, or reports truncation.
pub(crate) fn get_u16(msg: &[u8], pos: usize) -> Result<u16, WireError> {
    if pos + 2 > msg.len() {
        return Err(WireError::Truncated);
    }
    Ok(read_u16(msg, pos))
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
    if after_name + 10 > msg.len() {
        return Err(WireError::Truncated);
    }
    let rdlen = read_u16(msg, after_name + 8) as usize;
    let rdata_start = after_name + 10;
    let rdata_end = rdata_start + rdlen;
    if rdata_end > msg.len() {
        return Err(WireError::Truncated);
    }
    Ok(RecordHead {
        rtype: RType(read_u16(msg, after_name)),
        class: read_u16(msg, after_name + 2),
        ttl_offset: after_name + 4,
        ttl: read_u32(msg, after_name + 4),
        rdata_start,
        rdata_end,
    })
}
