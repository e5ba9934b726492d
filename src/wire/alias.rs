//! The answer autopath synthesises: `QNAME CNAME FOUND` in front of the answer for `FOUND`,
//! under the client's question (CoreDNS autopath's `cnamer`).
//!
//! Built with hickory-proto's `Message`, not by hand like the rest of `wire`: the found answer's
//! records carry compression pointers into its own question name, which is a different length
//! from the client's, so every owner name and every name inside RDATA (NS, SOA, MX, SRV, ...)
//! has to be decompressed and re-encoded. hickory-proto does that correctly for every type; the
//! message is built only on an autopath cache miss (once per name and TTL, never on a hit), so
//! its cost does not matter.

use hickory_proto::op::{Message, Query as HQuery};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name as HName, RData, Record, RecordType};
use thiserror::Error;

use super::{Name, Question};

/// Why the aliased answer could not be built (the found answer did not decode).
#[derive(Debug, Clone, Error)]
#[error("cannot build the autopath answer: {0}")]
pub struct AliasError(String);

/// Builds the answer to `question` from `found`, the answer for `found_name`: the question is
/// `question`, the answer section starts with `question.name CNAME found_name`, and the rest
/// (rcode, flags, records, authority, additional) is `found`'s. The CNAME's TTL is the smallest
/// TTL of the found answer, or its negative TTL (RFC 2308) when it has no answer records.
pub fn alias_answer(
    found: &[u8],
    question: &Question,
    found_name: &Name,
) -> Result<Vec<u8>, AliasError> {
    let err = |e: &dyn std::fmt::Display| AliasError(e.to_string());
    let mut msg = Message::from_vec(found).map_err(|e| err(&e))?;
    let owner = hickory_name(&question.name).map_err(|e| err(&e))?;
    let target = hickory_name(found_name).map_err(|e| err(&e))?;
    let ttl = msg
        .answers
        .iter()
        .map(|r| r.ttl)
        .min()
        .or_else(|| {
            msg.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
        })
        .unwrap_or(0);
    let mut query = HQuery::query(owner.clone(), RecordType::from(u16::from(question.qtype)));
    query.set_query_class(DNSClass::from(question.qclass));
    msg.queries = vec![query];
    msg.answers.insert(
        0,
        Record::from_rdata(owner, ttl, RData::CNAME(CNAME(target))),
    );
    msg.to_vec().map_err(|e| err(&e))
}

fn hickory_name(name: &Name) -> Result<HName, hickory_proto::ProtoError> {
    HName::from_labels(name.labels())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CLASS_IN;
    use hickory_proto::op::{MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use std::str::FromStr;

    fn question(name: &str, qtype: u16) -> Question {
        Question {
            name: Name::from_dotted(name).unwrap(),
            qtype: crate::wire::RType(qtype),
            qclass: CLASS_IN,
        }
    }

    #[test]
    fn the_alias_leads_the_found_answer_under_the_clients_question() {
        let found_name = "api.example.com.";
        let mut found = Message::new(7, MessageType::Response, OpCode::Query);
        found.add_query(HQuery::query(
            HName::from_str(found_name).unwrap(),
            RecordType::A,
        ));
        found.add_answer(Record::from_rdata(
            HName::from_str(found_name).unwrap(),
            40,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        let bytes = alias_answer(
            &found.to_vec().unwrap(),
            &question("api.example.com.default.svc.cluster.local", 1),
            &Name::from_dotted(found_name).unwrap(),
        )
        .unwrap();
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(msg.metadata.id, 7);
        assert_eq!(
            msg.queries[0].name().to_string(),
            "api.example.com.default.svc.cluster.local."
        );
        assert_eq!(msg.answers.len(), 2);
        assert_eq!(msg.answers[0].ttl, 40);
        assert_eq!(
            msg.answers[0].data,
            RData::CNAME(CNAME(HName::from_str(found_name).unwrap()))
        );
        assert_eq!(msg.answers[1].name.to_string(), found_name);
    }

    #[test]
    fn a_nodata_alias_takes_the_negative_ttl() {
        let found_name = "v4only.example.";
        let mut found = Message::new(7, MessageType::Response, OpCode::Query);
        found.metadata.response_code = ResponseCode::NoError;
        found.add_query(HQuery::query(
            HName::from_str(found_name).unwrap(),
            RecordType::AAAA,
        ));
        let zone = HName::from_str("example.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 2, 3, 4, 5);
        found.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
        let bytes = alias_answer(
            &found.to_vec().unwrap(),
            &question("v4only.example.ns.svc.cluster.local", 28),
            &Name::from_dotted(found_name).unwrap(),
        )
        .unwrap();
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(msg.answers.len(), 1);
        assert_eq!(msg.answers[0].ttl, 5);
        assert_eq!(msg.authorities.len(), 1);
    }
}
