//! Upstream answers and client queries for the cache's unit tests, built with hickory-proto
//! so that they are what a real server would send.

use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name as HName, RData, Record};

use super::policy::TtlPolicy;
use crate::config::ZoneCacheConfig;
use crate::wire::answer::Answer;
use crate::wire::query::{Query, Question};
use crate::wire::{CLASS_IN, Name, RType};

pub fn question(name: &str, qtype: RType) -> Question {
    Question {
        name: Name::from_dotted(name).unwrap(),
        qtype,
        qclass: CLASS_IN,
    }
}

/// An upstream answer to `name` `qtype` with `code`, the given answer records and, for
/// negative answers, an SOA of cluster.local with TTL 60 and MINIMUM 5.
pub fn answer(name: &str, qtype: RType, code: ResponseCode, records: Vec<Record>) -> Answer {
    let mut msg = Message::new(99, MessageType::Response, OpCode::Query);
    msg.metadata.response_code = code;
    let rtype = hickory_proto::rr::RecordType::from(u16::from(qtype));
    msg.add_query(hickory_proto::op::Query::query(
        HName::from_str(name).unwrap(),
        rtype,
    ));
    let negative = records.is_empty();
    msg.add_answers(records);
    if negative {
        let zone = HName::from_str("cluster.local.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 2, 3, 4, 5);
        msg.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
    }
    Answer::accept(
        msg.to_vec().unwrap().as_slice().into(),
        99,
        &question(name, qtype),
    )
    .unwrap()
}

pub fn a_record(name: &str, ttl: u32) -> Record {
    Record::from_rdata(
        HName::from_str(name).unwrap(),
        ttl,
        RData::A(A::new(192, 0, 2, 1)),
    )
}

/// A client's query for `name` `qtype`, as parsed off the wire.
pub fn client_query(name: &str, qtype: RType) -> Query {
    let question = question(name, qtype);
    let msg = crate::wire::query::build_upstream(7, &question, Default::default(), 1232);
    crate::wire::query::parse(&msg).unwrap()
}

pub fn policy() -> TtlPolicy {
    TtlPolicy::new(&ZoneCacheConfig::default())
}
