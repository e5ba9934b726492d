//! Resource records in RFC 1035 presentation form (`NAME [TTL] [CLASS] TYPE RDATA`, a zone
//! file's line) read into wire form, and the names of classes, types and rcodes: what a
//! template's `answer` renders (see `crate::template`).
//!
//! Only the record types answers are made of in practice are read: A, AAAA, CNAME, PTR, NS,
//! MX, SRV, TXT and SOA. As Go's `dns.NewRR`, which CoreDNS's `template` uses: a missing TTL
//! is 3600, a missing class IN, a name without a trailing dot is taken as absolute, `;` starts
//! a comment and parentheses only join lines.

use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::{CLASS_IN, Name, RType, Rcode, WireError, rtype};

/// `dns.NewRR`'s TTL for a record written without one.
pub const DEFAULT_TTL: u32 = 3600;

/// The class ANY (also QCLASS `*`).
pub const CLASS_ANY: u16 = 255;

/// The type ANY (QTYPE `*`).
pub const TYPE_ANY: RType = RType(255);

const CLASSES: [(&str, u16); 6] = [
    ("IN", CLASS_IN),
    ("CS", 2),
    ("CH", 3),
    ("HS", 4),
    ("NONE", 254),
    ("ANY", CLASS_ANY),
];

const TYPES: [(&str, u16); 28] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("NULL", 10),
    ("PTR", 12),
    ("HINFO", 13),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("LOC", 29),
    ("SRV", 33),
    ("NAPTR", 35),
    ("DNAME", 39),
    ("OPT", 41),
    ("DS", 43),
    ("SSHFP", 44),
    ("RRSIG", 46),
    ("NSEC", 47),
    ("DNSKEY", 48),
    ("NSEC3", 50),
    ("TLSA", 52),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("IXFR", 251),
    ("AXFR", 252),
    ("ANY", 255),
    ("CAA", 257),
];

/// The rcodes a header can carry (`dns.StringToRcode`'s four-bit ones).
const RCODES: [(&str, u16); 11] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
];

/// A class by its mnemonic (`IN`, `CH`, `ANY`...) or `CLASSnnn` (RFC 3597).
pub fn class_from_str(text: &str) -> Option<u16> {
    lookup(&CLASSES, text).or_else(|| generic(text, "CLASS"))
}

/// The mnemonic of a class, `CLASSnnn` for one without.
pub fn class_name(class: u16) -> String {
    name_of(&CLASSES, class).map_or_else(|| format!("CLASS{class}"), str::to_string)
}

/// A type by its mnemonic (`A`, `AAAA`, `ANY`...) or `TYPEnnn` (RFC 3597).
pub fn rtype_from_str(text: &str) -> Option<RType> {
    lookup(&TYPES, text)
        .or_else(|| generic(text, "TYPE"))
        .map(RType)
}

/// The mnemonic of a type, `TYPEnnn` for one without.
pub fn rtype_name(rtype: RType) -> String {
    name_of(&TYPES, rtype.0).map_or_else(|| format!("TYPE{}", rtype.0), str::to_string)
}

/// A header rcode by its name (`NOERROR`, `NXDOMAIN`...).
pub fn rcode_from_str(text: &str) -> Option<Rcode> {
    lookup(&RCODES, text).map(Rcode)
}

fn lookup(table: &[(&str, u16)], text: &str) -> Option<u16> {
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, value)| value)
}

fn name_of(table: &[(&'static str, u16)], value: u16) -> Option<&'static str> {
    table.iter().find(|&&(_, v)| v == value).map(|&(n, _)| n)
}

fn generic(text: &str, prefix: &str) -> Option<u16> {
    let digits = text.get(..prefix.len())?.eq_ignore_ascii_case(prefix);
    digits.then(|| text[prefix.len()..].parse().ok()).flatten()
}

/// One record in wire form, its owner and RDATA uncompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub owner: Name,
    pub rtype: RType,
    pub class: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

/// Why a record's text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordTextError {
    #[error("empty record")]
    Empty,
    #[error("unterminated quoted string")]
    Unterminated,
    #[error("no record type after the name")]
    NoType,
    #[error("unknown record type `{0}`")]
    UnknownType(String),
    #[error("{0} records are not supported (A, AAAA, CNAME, PTR, NS, MX, SRV, TXT, SOA are)")]
    Unsupported(String),
    #[error("bad name `{text}`: {source}")]
    Name { text: String, source: WireError },
    #[error("bad {rtype} data: {reason}")]
    Rdata { rtype: String, reason: String },
}

/// Reads one record from its presentation form.
pub fn parse_record(text: &str) -> Result<Record, RecordTextError> {
    let words = words(text)?;
    let mut words = words.iter().map(String::as_str);
    let owner = name(words.next().ok_or(RecordTextError::Empty)?)?;
    let (mut ttl, mut class) = (None, None);
    let rtype = loop {
        let word = words.next().ok_or(RecordTextError::NoType)?;
        if ttl.is_none()
            && word.bytes().all(|b| b.is_ascii_digit())
            && let Ok(value) = word.parse::<u32>()
        {
            ttl = Some(value);
        } else if class.is_none()
            && let Some(value) = class_from_str(word)
        {
            class = Some(value);
        } else {
            break rtype_from_str(word)
                .ok_or_else(|| RecordTextError::UnknownType(word.to_string()))?;
        }
    };
    let rdata: Vec<&str> = words.collect();
    let rdata = encode_rdata(rtype, &rdata).map_err(|reason| match reason {
        Bad::Unsupported => RecordTextError::Unsupported(rtype_name(rtype)),
        Bad::Name(e) => e,
        Bad::Reason(reason) => RecordTextError::Rdata {
            rtype: rtype_name(rtype),
            reason,
        },
    })?;
    Ok(Record {
        owner,
        rtype,
        class: class.unwrap_or(CLASS_IN),
        ttl: ttl.unwrap_or(DEFAULT_TTL),
        rdata,
    })
}

fn name(text: &str) -> Result<Name, RecordTextError> {
    // `@` is the origin, which `dns.NewRR` takes as the root.
    let dotted = if text == "@" { "." } else { text };
    Name::from_dotted(dotted).map_err(|source| RecordTextError::Name {
        text: text.to_string(),
        source,
    })
}

enum Bad {
    Unsupported,
    Name(RecordTextError),
    Reason(String),
}

fn encode_rdata(rtype: RType, words: &[&str]) -> Result<Vec<u8>, Bad> {
    let count = |n: usize| {
        if words.len() == n {
            Ok(())
        } else {
            Err(Bad::Reason(format!(
                "want {n} fields, have {}",
                words.len()
            )))
        }
    };
    let number = |word: &str| -> Result<u32, Bad> {
        word.parse()
            .map_err(|_| Bad::Reason(format!("`{word}` is not a number")))
    };
    let short = |word: &str| -> Result<[u8; 2], Bad> {
        word.parse::<u16>()
            .map(u16::to_be_bytes)
            .map_err(|_| Bad::Reason(format!("`{word}` is not a number from 0 to 65535")))
    };
    let target = |word: &str| name(word).map(|n| n.as_wire().to_vec()).map_err(Bad::Name);
    let mut out = Vec::new();
    match rtype {
        rtype::A => {
            count(1)?;
            let ip: Ipv4Addr = words[0]
                .parse()
                .map_err(|_| Bad::Reason(format!("`{}` is not an IPv4 address", words[0])))?;
            out.extend_from_slice(&ip.octets());
        }
        rtype::AAAA => {
            count(1)?;
            let ip: Ipv6Addr = words[0]
                .parse()
                .map_err(|_| Bad::Reason(format!("`{}` is not an IPv6 address", words[0])))?;
            out.extend_from_slice(&ip.octets());
        }
        rtype::NS | rtype::CNAME | PTR => {
            count(1)?;
            out = target(words[0])?;
        }
        MX => {
            count(2)?;
            out.extend_from_slice(&short(words[0])?);
            out.extend_from_slice(&target(words[1])?);
        }
        SRV => {
            count(4)?;
            for word in &words[..3] {
                out.extend_from_slice(&short(word)?);
            }
            out.extend_from_slice(&target(words[3])?);
        }
        rtype::SOA => {
            count(7)?;
            out.extend_from_slice(&target(words[0])?);
            out.extend_from_slice(&target(words[1])?);
            for word in &words[2..] {
                out.extend_from_slice(&number(word)?.to_be_bytes());
            }
        }
        TXT => {
            if words.is_empty() {
                return Err(Bad::Reason("no strings".into()));
            }
            for word in words {
                let len = u8::try_from(word.len()).map_err(|_| {
                    Bad::Reason("a string longer than 255 bytes (split it in quoted parts)".into())
                })?;
                out.push(len);
                out.extend_from_slice(word.as_bytes());
            }
        }
        _ => return Err(Bad::Unsupported),
    }
    Ok(out)
}

const PTR: RType = RType(12);
const MX: RType = RType(15);
const TXT: RType = RType(16);
const SRV: RType = RType(33);

/// The record's words: whitespace separates, `"..."` quotes (with `\"` and `\\`), `;` starts a
/// comment, parentheses are dropped.
fn words(text: &str) -> Result<Vec<String>, RecordTextError> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            _ if c.is_whitespace() || c == '(' || c == ')' => {
                chars.next();
            }
            ';' => break,
            '"' => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err(RecordTextError::Unterminated),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped) => word.push(escaped),
                            None => return Err(RecordTextError::Unterminated),
                        },
                        Some(other) => word.push(other),
                    }
                }
                words.push(word);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | ';' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                words.push(word);
            }
        }
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rcode;

    fn rdata(text: &str) -> Vec<u8> {
        parse_record(text).expect(text).rdata
    }

    #[test]
    fn records_read_as_dns_new_rr_reads_them() {
        let a = parse_record("ip-10-0-0-1.example.internal. 60 IN A 10.0.0.1").unwrap();
        assert_eq!(
            a.owner,
            Name::from_dotted("ip-10-0-0-1.example.internal").unwrap()
        );
        assert_eq!((a.rtype, a.class, a.ttl), (rtype::A, CLASS_IN, 60));
        assert_eq!(a.rdata, [10, 0, 0, 1]);
        let defaults = parse_record("x AAAA ::1").unwrap();
        assert_eq!((defaults.ttl, defaults.class), (DEFAULT_TTL, CLASS_IN));
        assert_eq!(defaults.rdata[15], 1);
        assert_eq!(parse_record("x CH 5 TXT a").unwrap().class, 3);
        assert_eq!(rdata("x TXT \"a b\" c"), b"\x03a b\x01c");
        assert_eq!(rdata("x CNAME y.z."), b"\x01y\x01z\x00");
        assert_eq!(rdata("x MX 10 m."), b"\x00\x0a\x01m\x00");
        assert_eq!(
            rdata("x SRV 1 2 53 t"),
            b"\x00\x01\x00\x02\x00\x35\x01t\x00"
        );
        assert_eq!(
            rdata("invalid. 60 IN SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60) ; x").len(),
            12 + 20 + 20
        );
    }

    #[test]
    fn bad_records_say_why() {
        let err = |text: &str| parse_record(text).unwrap_err().to_string();
        assert_eq!(err(""), "empty record");
        assert_eq!(err("x 60 IN"), "no record type after the name");
        assert_eq!(err("x IN FOO 1"), "unknown record type `FOO`");
        assert!(err("x IN CAA 0 issue x").starts_with("CAA records are not supported"));
        assert_eq!(
            err("x A 300.1.1.1"),
            "bad A data: `300.1.1.1` is not an IPv4 address"
        );
        assert_eq!(err("x A <no value>"), "bad A data: want 1 fields, have 2");
        assert_eq!(err("x TXT \"a"), "unterminated quoted string");
    }

    #[test]
    fn names_of_classes_types_and_rcodes() {
        assert_eq!(class_from_str("any"), Some(CLASS_ANY));
        assert_eq!(class_from_str("CLASS7"), Some(7));
        assert_eq!(class_name(1), "IN");
        assert_eq!(rtype_from_str("AAAA"), Some(rtype::AAAA));
        assert_eq!(rtype_from_str("TYPE65"), Some(RType(65)));
        assert_eq!(rtype_from_str("TYPEx"), None);
        assert_eq!(rtype_name(RType(99)), "TYPE99");
        assert_eq!(rcode_from_str("NXDOMAIN"), Some(rcode::NXDOMAIN));
        assert_eq!(rcode_from_str("BADVERS"), None);
    }
}
