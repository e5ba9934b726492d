//! An upstream's answer to a rewritten question, made the answer to the client's question: the
//! question replaced, and the records' names rewritten by the answer rules.
//!
//! Rebuilt with hickory-proto's `Message`, as [`crate::wire::alias`] is: the new question name
//! has another length, so every compression pointer into the old one moves, and names inside
//! record data must be decoded and encoded again. It runs once per upstream fetch of a
//! rewritten name; cache hits serve the stored, reverted bytes.

use bytes::BytesMut;
use hickory_proto::op::{Message, Query as HQuery};
use hickory_proto::rr::{DNSClass, Name as HName, RData, Record, RecordType};
use thiserror::Error;

use crate::config::rewrite::{AnswerRule, StringRewrite};
use crate::wire::answer::Answer;
use crate::wire::name::{Name, read_uncompressed};
use crate::wire::{HEADER_LEN, Question};

/// Why an answer could not be reverted.
#[derive(Debug, Clone, Error)]
pub enum RevertError {
    #[error("the upstream answer does not decode: {0}")]
    Decode(String),
    #[error("a reverted name is not a valid domain name: {0:?}")]
    Name(String),
    #[error("the reverted answer does not encode: {0}")]
    Encode(String),
    #[error("the reverted answer does not read back: {0}")]
    Accept(String),
}

/// `answer` to `original`, its records rewritten by `rules` (the first matched rule's first;
/// they are applied last to first, as CoreDNS undoes them).
pub fn revert(
    answer: &Answer,
    original: &Question,
    rules: &[AnswerRule],
) -> Result<Answer, RevertError> {
    let id = u16::from_be_bytes([answer.message[0], answer.message[1]]);
    let bytes = if answer.info.truncated {
        // Records may be cut: the client retries over TCP, with the header and question only.
        truncated(&answer.message, original)
    } else {
        rebuilt(&answer.message, original, rules)?
    };
    Answer::accept(BytesMut::from(&bytes[..]), id, original)
        .map_err(|e| RevertError::Accept(e.to_string()))
}

/// The header of `message` (counts set to the one question) and `original`.
fn truncated(message: &[u8], original: &Question) -> Vec<u8> {
    let mut out = message[..HEADER_LEN].to_vec();
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(original.name.as_wire());
    out.extend_from_slice(&original.qtype.to_be_bytes());
    out.extend_from_slice(&original.qclass.to_be_bytes());
    out
}

fn rebuilt(
    message: &[u8],
    original: &Question,
    rules: &[AnswerRule],
) -> Result<Vec<u8>, RevertError> {
    let mut msg = Message::from_vec(message).map_err(|e| RevertError::Decode(e.to_string()))?;
    let name =
        HName::from_labels(original.name.labels()).map_err(|e| RevertError::Name(e.to_string()))?;
    let mut query = HQuery::query(name, RecordType::from(u16::from(original.qtype)));
    query.set_query_class(DNSClass::from(original.qclass));
    msg.queries = vec![query];
    if !rules.is_empty() {
        let sections = [&mut msg.authorities, &mut msg.answers, &mut msg.additionals];
        for record in sections.into_iter().flatten() {
            for rule in rules.iter().rev() {
                apply(rule, record)?;
            }
        }
    }
    msg.to_vec().map_err(|e| RevertError::Encode(e.to_string()))
}

/// One answer rule on one record.
fn apply(rule: &AnswerRule, record: &mut Record) -> Result<(), RevertError> {
    match rule {
        AnswerRule::Name(rewrite) => rename(rewrite, &mut record.name),
        AnswerRule::Value(rewrite) => match value_name(&mut record.data) {
            Some(name) => rename(rewrite, name),
            None => Ok(()),
        },
    }
}

/// The name in a record's data that `value` rules rewrite (CoreDNS's list, less DNAME).
fn value_name(data: &mut RData) -> Option<&mut HName> {
    Some(match data {
        RData::CNAME(cname) => &mut cname.0,
        RData::NS(ns) => &mut ns.0,
        RData::PTR(ptr) => &mut ptr.0,
        RData::MX(mx) => &mut mx.exchange,
        RData::SRV(srv) => &mut srv.target,
        RData::SOA(soa) => &mut soa.mname,
        RData::NAPTR(naptr) => &mut naptr.replacement,
        _ => return None,
    })
}

/// `name` rewritten in place when `rewrite` changes it.
fn rename(rewrite: &StringRewrite, name: &mut HName) -> Result<(), RevertError> {
    let dotted = our_name(name)?.to_dotted();
    let Some(new) = rewrite.apply(&dotted) else {
        return Ok(());
    };
    let parsed = Name::from_dotted(&new).map_err(|_| RevertError::Name(new.clone()))?;
    *name = HName::from_labels(parsed.labels()).map_err(|_| RevertError::Name(new))?;
    Ok(())
}

/// A hickory name as ours (letter case kept), through its wire form.
fn our_name(name: &HName) -> Result<Name, RevertError> {
    let mut wire = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        // A label is at most 63 bytes: hickory checked it when it read it.
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    read_uncompressed(&wire, 0)
        .map(|(name, _)| name)
        .map_err(|e| RevertError::Name(format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{CLASS_IN, rtype};
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, CNAME};
    use std::str::FromStr;

    fn hname(text: &str) -> HName {
        HName::from_str(text).unwrap()
    }

    fn question(name: &str) -> Question {
        Question {
            name: Name::from_dotted(name).unwrap(),
            qtype: rtype::A,
            qclass: CLASS_IN,
        }
    }

    /// The upstream's answer for `asked`: `asked CNAME target`, `target A`.
    fn upstream_answer(asked: &str, target: &str) -> Answer {
        let mut msg = Message::new(7, MessageType::Response, OpCode::Query);
        msg.add_query(HQuery::query(hname(asked), RecordType::A));
        let cname = RData::CNAME(CNAME(hname(target)));
        msg.add_answer(Record::from_rdata(hname(asked), 30, cname));
        let a = RData::A(A::new(192, 0, 2, 1));
        msg.add_answer(Record::from_rdata(hname(target), 30, a));
        let bytes = msg.to_vec().unwrap();
        Answer::accept(BytesMut::from(&bytes[..]), 7, &question(asked)).unwrap()
    }

    #[test]
    fn the_question_is_restored_and_names_reverted() {
        let answer = upstream_answer("db.svc.local.", "db-1.svc.local.");
        let undo = || StringRewrite::Suffix {
            from: ".svc.local.".into(),
            to: ".corp.example.".into(),
        };
        let rules = [AnswerRule::Name(undo()), AnswerRule::Value(undo())];
        let original = question("db.corp.example.");
        let reverted = revert(&answer, &original, &rules).unwrap();
        let msg = Message::from_vec(&reverted.message).unwrap();
        assert_eq!(msg.metadata.id, 7);
        assert_eq!(msg.queries[0].name(), &hname("db.corp.example."));
        assert_eq!(msg.answers[0].name, hname("db.corp.example."));
        assert_eq!(
            msg.answers[0].data,
            RData::CNAME(CNAME(hname("db-1.corp.example.")))
        );
        assert_eq!(msg.answers[1].name, hname("db-1.corp.example."));
        assert_eq!(reverted.info.answer_count, 2);
    }

    #[test]
    fn without_rules_only_the_question_changes() {
        let answer = upstream_answer("db.svc.local.", "db-1.svc.local.");
        let reverted = revert(&answer, &question("alias.example."), &[]).unwrap();
        let msg = Message::from_vec(&reverted.message).unwrap();
        assert_eq!(msg.queries[0].name(), &hname("alias.example."));
        assert_eq!(msg.answers[0].name, hname("db.svc.local."));
    }
}
