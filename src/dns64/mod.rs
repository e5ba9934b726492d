//! DNS64 (RFC 6147): AAAA answers synthesized from A records for IPv6-only clients behind a
//! NAT64, as CoreDNS's `dns64` plugin makes them. A zone's `dns64` section turns it on
//! (`zones[].dns64`, see [`crate::config::dns64`]).
//!
//! What is translated, as in CoreDNS:
//! - only AAAA queries of class IN, and only from IPv6 clients unless `allow_ipv4` (an
//!   IPv4-mapped address is an IPv4 client);
//! - only when the AAAA answer is not a name error (NXDOMAIN without answer records: RFC 6147
//!   5.1.2) and has no AAAA record, or always with `translate_all`; an error rcode (SERVFAIL,
//!   REFUSED) counts as an empty answer (5.1.6);
//! - the answer is then the A answer's: its CNAME chain and other records as they are (5.3.3),
//!   each A record replaced by the AAAA record of its address embedded in the prefix
//!   ([`embed`], RFC 6052 2.2), with the TTL of the A record or of the SOA in the AAAA answer's
//!   authority section, whichever is lower, 600 s standing in for a missing SOA (5.1.7, read as
//!   CoreDNS reads it: the SOA record's TTL); its authority and additional sections as they
//!   are (5.3.2). A name with no A either gets the A answer's empty one (its SOA included).
//!
//! Where it differs from CoreDNS:
//! - the synthesized answer keeps the A answer's rcode; CoreDNS's is always NOERROR, which
//!   turns an A-side SERVFAIL into an empty NOERROR that clients cache as "no address";
//! - it keeps the A answer's RA bit (we recurse for the client); AA and AD are cleared, as in
//!   CoreDNS (synthesized data is neither authoritative nor validated);
//! - prefix lengths 72, 80 and 88, which CoreDNS accepts but RFC 6052 defines no format for,
//!   are refused, and so is a /96 prefix whose u-octet (bits 64 to 71) is not zero;
//! - it does not translate answers of `hosts` or `templates` (a zone may not have both): in
//!   CoreDNS `dns64` runs before them, here it works on the cache's A and AAAA pair.
//!
//! As in CoreDNS, DNSSEC is not considered: a query with DO and CD set is translated too
//! (RFC 6147 5.5 would leave it to the validating client), and PTR queries for synthesized
//! addresses are not answered from the A records' names.
//!
//! Where it sits: the responder asks [`Dns64::intercepts`] in `begin` (and again when it writes
//! a forwarded query's answer, rather than carry the decision), and only for zones with a
//! `dns64` section (zones without one pay an empty-list check). The rest
//! happens when the AAAA answer is written: CoreDNS synthesizes per request from an A query
//! of its own, while our cache keeps the A and AAAA of a name in one coherent entry fetched
//! together, so the A half is at hand on a hit and on a miss alike and no extra upstream
//! query is made. Only an uncached zone asks for the A (after an AAAA answer that is to be
//! replaced). Synthesis is per answer, not stored: the same entry answers IPv4 clients with
//! the real AAAA half, and its TTLs keep counting down.
//!
//! The message is rebuilt with hickory-proto's `Message`, as [`crate::wire::alias`] does and
//! for the same reason: every A record grows by 12 bytes, which moves every compression
//! pointer behind it, so names are decoded and encoded again. That costs some microseconds
//! per translated answer, paid only by the AAAA queries it translates.
//!
//! Metric: `coredns_dns64_requests_translated_total{server}`, counted by the responder for
//! every synthesized answer written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::AAAA;
use hickory_proto::rr::{RData, Record, RecordType};
use prometheus::IntCounter;
use thiserror::Error;

use crate::config::dns64::Dns64Config;
use crate::wire::query::Query;
use crate::wire::{CLASS_IN, HEADER_LEN, Header, name, rcode, read_record, rtype};

/// RFC 6147 5.1.7: the TTL of a synthesized record when the AAAA answer carried no SOA.
const TTL_WITHOUT_SOA: u32 = 600;

/// A zone's DNS64 settings, ready to translate.
#[derive(Debug, Clone)]
pub struct Dns64 {
    prefix: Prefix,
    translate_all: bool,
    allow_ipv4: bool,
    translated: IntCounter,
}

/// A NAT64 prefix of one of RFC 6052's lengths, bits past the length cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    network: [u8; 16],
    /// In bytes: 4, 5, 6, 7, 8 or 12.
    len_bytes: usize,
}

/// Why a synthesized answer could not be built (an answer hickory-proto does not read back).
#[derive(Debug, Clone, Error)]
pub enum Dns64Error {
    #[error("cannot read the {half} answer: {reason}")]
    Read { half: &'static str, reason: String },
    #[error("cannot encode the synthesized answer: {0}")]
    Encode(String),
}

impl Prefix {
    /// The prefix of a config section; a section that was not validated can hold one that
    /// does not read (the reason is returned).
    pub fn of(config: &Dns64Config) -> Result<Prefix, String> {
        let (network, length) = config.network()?;
        Ok(Prefix {
            network: network.octets(),
            len_bytes: usize::from(length / 8),
        })
    }

    /// The IPv4-embedded IPv6 address of `v4` (RFC 6052 2.2): the prefix, then the four
    /// bytes of `v4` around bits 64 to 71 (the u-octet, always zero), then zeros.
    pub fn embed(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let mut v6 = [0u8; 16];
        v6[..self.len_bytes].copy_from_slice(&self.network[..self.len_bytes]);
        let slots = (self.len_bytes..16).filter(|&i| i != 8);
        for (slot, byte) in slots.zip(v4.octets()) {
            v6[slot] = byte;
        }
        Ipv6Addr::from(v6)
    }
}

impl Dns64 {
    /// A zone's DNS64; `translated` is its `coredns_dns64_requests_translated_total` series.
    pub fn new(config: &Dns64Config, translated: IntCounter) -> Result<Dns64, String> {
        Ok(Dns64 {
            prefix: Prefix::of(config)?,
            translate_all: config.translate_all,
            allow_ipv4: config.allow_ipv4,
            translated,
        })
    }

    /// Whether `query` from `client` is one DNS64 may answer (RFC 6147 5.1): AAAA of class
    /// IN, from an IPv6 client unless `allow_ipv4`.
    pub fn intercepts(&self, query: &Query, client: IpAddr) -> bool {
        query.question.qtype == rtype::AAAA
            && query.question.qclass == CLASS_IN
            && (self.allow_ipv4 || !client.to_canonical().is_ipv4())
    }

    /// Whether the AAAA answer `aaaa` (a whole message) is to be replaced by one synthesized
    /// from the A answer. One that does not read is left as it is.
    pub fn replaces(&self, aaaa: &[u8]) -> bool {
        let Some(header) = Header::read(aaaa) else {
            return false;
        };
        // A name error is answered as it is (5.1.2). CoreDNS tells one by an empty answer
        // section: an NXDOMAIN at the end of a CNAME chain is translated like any other.
        if header.rcode() == rcode::NXDOMAIN && header.ancount == 0 {
            return false;
        }
        if self.translate_all {
            return true;
        }
        matches!(has_aaaa_record(aaaa, &header), Ok(false))
    }

    /// The answer synthesized from `a`, the A answer, for the AAAA question `aaaa` answered:
    /// a whole message (the A answer's header and ID, the AAAA question, no OPT) for the
    /// responder to patch for its client. Counted as a translation.
    pub fn synthesize(&self, aaaa: &[u8], a: &[u8]) -> Result<Vec<u8>, Dns64Error> {
        let read = |half, wire| {
            Message::from_vec(wire).map_err(|e| Dns64Error::Read {
                half,
                reason: e.to_string(),
            })
        };
        let soa_ttl = read("AAAA", aaaa)?
            .authorities
            .iter()
            .rfind(|r| r.record_type() == RecordType::SOA)
            .map_or(TTL_WITHOUT_SOA, |soa| soa.ttl);
        let mut msg = read("A", a)?;
        for question in &mut msg.queries {
            question.set_query_type(RecordType::AAAA);
        }
        for record in &mut msg.answers {
            if let RData::A(address) = &record.data {
                let mut aaaa = Record::from_rdata(
                    record.name.clone(),
                    record.ttl.min(soa_ttl),
                    RData::AAAA(AAAA(self.prefix.embed(address.0))),
                );
                aaaa.dns_class = record.dns_class;
                *record = aaaa;
            }
        }
        msg.metadata.authoritative = false;
        msg.metadata.authentic_data = false;
        msg.edns = None;
        let wire = msg
            .to_vec()
            .map_err(|e| Dns64Error::Encode(e.to_string()))?;
        self.translated.inc();
        Ok(wire)
    }
}

/// Whether the answer section of `msg` holds an AAAA record (of any owner, as CoreDNS looks).
fn has_aaaa_record(msg: &[u8], header: &Header) -> Result<bool, crate::wire::WireError> {
    let mut pos = name::skip(msg, HEADER_LEN)? + 4;
    for _ in 0..header.ancount {
        let record = read_record(msg, pos)?;
        if record.rtype == rtype::AAAA {
            return Ok(true);
        }
        pos = record.rdata_end;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode, Query as HQuery, ResponseCode};
    use hickory_proto::rr::Name as HName;
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use std::str::FromStr;

    fn prefix(text: &str) -> Prefix {
        Prefix::of(&Dns64Config {
            prefix: text.into(),
            ..Dns64Config::default()
        })
        .unwrap()
    }

    /// RFC 6052 section 2.4's table: 192.0.2.33 under each prefix length.
    #[test]
    fn addresses_are_embedded_as_rfc_6052_shows() {
        let v4 = Ipv4Addr::new(192, 0, 2, 33);
        for (network, embedded) in [
            ("2001:db8::/32", "2001:db8:c000:221::"),
            ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
            ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
            ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
            ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
            ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
            ("64:ff9b::/96", "64:ff9b::192.0.2.33"),
        ] {
            let want: Ipv6Addr = embedded.parse().unwrap();
            assert_eq!(prefix(network).embed(v4), want, "{network}");
        }
    }

    fn dns64(translate_all: bool) -> Dns64 {
        let config = Dns64Config {
            translate_all,
            ..Dns64Config::default()
        };
        Dns64::new(&config, IntCounter::new("t", "t").unwrap()).unwrap()
    }

    fn name(text: &str) -> HName {
        HName::from_str(text).unwrap()
    }

    /// An answer to `qtype` for `www.example.` with `code`, `answers`, and an SOA (TTL 60)
    /// in the authority section when `soa`.
    fn message(qtype: RecordType, code: ResponseCode, answers: Vec<Record>, soa: bool) -> Vec<u8> {
        let mut msg = Message::new(7, MessageType::Response, OpCode::Query);
        msg.metadata.response_code = code;
        msg.metadata.recursion_available = true;
        msg.metadata.authoritative = true;
        msg.queries = vec![HQuery::query(name("www.example."), qtype)];
        msg.answers = answers;
        if soa {
            let soa = SOA::new(name("example."), name("h."), 1, 2, 3, 4, 5);
            msg.authorities = vec![Record::from_rdata(name("example."), 60, RData::SOA(soa))];
        }
        msg.to_vec().unwrap()
    }

    fn a_record(owner: &str, ttl: u32, last: u8) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A::new(192, 0, 2, last)))
    }

    /// RFC 6147 5.1 and CoreDNS's family test: AAAA only, from IPv6 clients only (an
    /// IPv4-mapped address is an IPv4 client, as Go's `To4` sees it) unless `allow_ipv4`.
    #[test]
    fn only_aaaa_queries_of_ipv6_clients_are_intercepted() {
        let parsed = |rtype| {
            let mut msg = Message::query();
            msg.add_query(HQuery::query(name("www.example."), rtype));
            crate::wire::query::parse(&msg.to_vec().unwrap()).expect("a valid query")
        };
        let (aaaa, a) = (parsed(RecordType::AAAA), parsed(RecordType::A));
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let (v6, v4, mapped) = (ip("2001:db8::1"), ip("192.0.2.1"), ip("::ffff:192.0.2.1"));
        let plain = dns64(false);
        assert!(plain.intercepts(&aaaa, v6));
        assert!(!plain.intercepts(&a, v6));
        assert!(!plain.intercepts(&aaaa, v4));
        assert!(!plain.intercepts(&aaaa, mapped));
        let config = Dns64Config {
            allow_ipv4: true,
            ..Dns64Config::default()
        };
        let any_family = Dns64::new(&config, IntCounter::new("t", "t").unwrap()).unwrap();
        assert!(any_family.intercepts(&aaaa, v4));
        assert!(any_family.intercepts(&aaaa, mapped));
        assert!(!any_family.intercepts(&a, v4));
    }

    #[test]
    fn only_answers_without_aaaa_are_replaced_and_never_a_name_error() {
        let nodata = message(RecordType::AAAA, ResponseCode::NoError, vec![], true);
        let nxdomain = message(RecordType::AAAA, ResponseCode::NXDomain, vec![], true);
        let servfail = message(RecordType::AAAA, ResponseCode::ServFail, vec![], false);
        let aaaa = Record::from_rdata(
            name("www.example."),
            30,
            RData::AAAA(AAAA("2001:db8::1".parse().unwrap())),
        );
        let with_aaaa = message(RecordType::AAAA, ResponseCode::NoError, vec![aaaa], false);
        let cname = Record::from_rdata(
            name("www.example."),
            30,
            RData::CNAME(CNAME(name("gone.example."))),
        );
        let chain_to_nxdomain =
            message(RecordType::AAAA, ResponseCode::NXDomain, vec![cname], true);
        let plain = dns64(false);
        assert!(plain.replaces(&nodata));
        assert!(plain.replaces(&servfail));
        assert!(plain.replaces(&chain_to_nxdomain));
        assert!(!plain.replaces(&nxdomain));
        assert!(!plain.replaces(&with_aaaa));
        assert!(!plain.replaces(&[0; 5]), "an unreadable answer stays");
        let all = dns64(true);
        assert!(all.replaces(&with_aaaa));
        assert!(!all.replaces(&nxdomain));
    }

    #[test]
    fn a_records_become_aaaa_with_the_lower_ttl_and_the_rest_stays() {
        let cname = Record::from_rdata(
            name("www.example."),
            300,
            RData::CNAME(CNAME(name("host.example."))),
        );
        let a = message(
            RecordType::A,
            ResponseCode::NoError,
            vec![
                cname.clone(),
                a_record("host.example.", 30, 1),
                a_record("host.example.", 900, 2),
            ],
            false,
        );
        let nodata = message(RecordType::AAAA, ResponseCode::NoError, vec![], true);
        let translator = dns64(false);
        let wire = translator.synthesize(&nodata, &a).unwrap();
        let msg = Message::from_vec(&wire).unwrap();
        assert_eq!(msg.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert!(!msg.metadata.authoritative);
        assert!(msg.metadata.recursion_available);
        assert_eq!(msg.answers[0], cname, "the CNAME chain is kept");
        let synthesized: Vec<(String, u32, RData)> = msg.answers[1..]
            .iter()
            .map(|r| (r.name.to_string(), r.ttl, r.data.clone()))
            .collect();
        let aaaa = |text: &str| RData::AAAA(AAAA(text.parse().unwrap()));
        assert_eq!(
            synthesized,
            [
                ("host.example.".into(), 30, aaaa("64:ff9b::192.0.2.1")),
                // The SOA of the AAAA answer (TTL 60) caps the A record's 900.
                ("host.example.".into(), 60, aaaa("64:ff9b::192.0.2.2")),
            ]
        );
        assert_eq!(translator.translated.get(), 1);
        // Without an SOA in the AAAA answer, 600 s is the cap.
        let servfail = message(RecordType::AAAA, ResponseCode::ServFail, vec![], false);
        let msg = Message::from_vec(&translator.synthesize(&servfail, &a).unwrap()).unwrap();
        assert_eq!(msg.answers[2].ttl, 600);
    }

    #[test]
    fn a_name_without_a_gets_the_empty_a_answer() {
        let a = message(RecordType::A, ResponseCode::NoError, vec![], true);
        let nodata = message(RecordType::AAAA, ResponseCode::NoError, vec![], true);
        let msg = Message::from_vec(&dns64(false).synthesize(&nodata, &a).unwrap()).unwrap();
        assert!(msg.answers.is_empty());
        assert_eq!(msg.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(msg.queries[0].query_type(), RecordType::AAAA);
    }
}
