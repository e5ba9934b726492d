//! Cache entries. For addresses an entry is a coherent pair: the A and the AAAA answer of one
//! name, from one resolution, with one rcode and one expiry. The only way to build one is
//! [`Entry::address_pair`], which takes both halves, so an entry with one half missing, or with
//! NXDOMAIN on one side and NOERROR on the other, cannot exist (DESIGN.md, failure 2).
//!
//! Halves are kept as the upstream's wire bytes (without OPT) plus the offsets of their TTL
//! fields; answering copies the bytes and patches ID, letter case and TTLs.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::policy::{AnswerKind, TtlPolicy};
use crate::upstream::Answer;
use crate::wire::query::Query;
use crate::wire::reply::write_answer;
use crate::wire::{flag, rcode, read_u16, read_u32, rtype, write_u16};

/// TTL of answers served stale (RFC 8767 section 4 suggests 30 seconds).
pub const STALE_TTL: u32 = 30;

/// One answer as the upstream sent it (OPT removed), ready to be patched for a client.
#[derive(Debug)]
struct Half {
    wire: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
}

impl Half {
    fn of(answer: &Answer) -> Half {
        Half {
            wire: answer.message.clone().into_boxed_slice(),
            ttl_offsets: answer.info.ttl_offsets.clone().into_boxed_slice(),
        }
    }

    fn len(&self) -> usize {
        self.wire.len() + self.ttl_offsets.len() * 2
    }
}

#[derive(Debug)]
enum Body {
    /// A and AAAA of one name.
    AddressPair { a: Half, aaaa: Half },
    /// Any other type, cached on its own.
    Single(Half),
}

/// Why answers were not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The halves disagree: one NXDOMAIN, the other NOERROR. An upstream that does this is
    /// inconsistent (e.g. a kube-dns with autopath); counted.
    Split,
    /// An answer is not cacheable (SERVFAIL, no SOA for a negative answer, TTL 0, truncated).
    Uncacheable,
}

/// A cached answer (or pair of answers) with its lifetime.
#[derive(Debug)]
pub struct Entry {
    body: Body,
    rcode: u16,
    kind: AnswerKind,
    stored_at: Instant,
    expires_at: Instant,
    hits: AtomicU32,
    refreshing: AtomicBool,
}

/// Whether an entry may still be served as fresh or stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Expired, but within the stale window.
    Stale,
    Expired,
}

impl Entry {
    /// Builds the coherent entry for a name from its A and AAAA answers: both must be
    /// cacheable and have the same rcode; the entry expires when the shorter of the two does.
    pub fn address_pair(
        a: &Answer,
        aaaa: &Answer,
        policy: &TtlPolicy,
        now: Instant,
    ) -> Result<Entry, NotStored> {
        let (a_code, aaaa_code) = (a.info.rcode, aaaa.info.rcode);
        if a_code != aaaa_code {
            let codes = [a_code, aaaa_code];
            if codes.contains(&rcode::NXDOMAIN) && codes.contains(&rcode::NOERROR) {
                return Err(NotStored::Split);
            }
            return Err(NotStored::Uncacheable);
        }
        let (a_ttl, a_kind) = policy.cacheable(&a.info).ok_or(NotStored::Uncacheable)?;
        let (aaaa_ttl, aaaa_kind) = policy.cacheable(&aaaa.info).ok_or(NotStored::Uncacheable)?;
        let kind = if a_kind == AnswerKind::Success || aaaa_kind == AnswerKind::Success {
            AnswerKind::Success
        } else {
            AnswerKind::Denial
        };
        let body = Body::AddressPair {
            a: Half::of(a),
            aaaa: Half::of(aaaa),
        };
        Ok(Entry::new(body, a_code, kind, a_ttl.min(aaaa_ttl), now))
    }

    /// Builds the entry for an answer of any type but A and AAAA.
    pub fn single(answer: &Answer, policy: &TtlPolicy, now: Instant) -> Result<Entry, NotStored> {
        let (ttl, kind) = policy
            .cacheable(&answer.info)
            .ok_or(NotStored::Uncacheable)?;
        Ok(Entry::new(
            Body::Single(Half::of(answer)),
            answer.info.rcode,
            kind,
            ttl,
            now,
        ))
    }

    fn new(body: Body, rcode: u16, kind: AnswerKind, ttl: Duration, now: Instant) -> Entry {
        Entry {
            body,
            rcode,
            kind,
            stored_at: now,
            expires_at: now + ttl,
            hits: AtomicU32::new(0),
            refreshing: AtomicBool::new(false),
        }
    }

    pub fn rcode(&self) -> u16 {
        self.rcode
    }

    pub fn kind(&self) -> AnswerKind {
        self.kind
    }

    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// The whole lifetime given at store time.
    pub fn ttl(&self) -> Duration {
        self.expires_at - self.stored_at
    }

    /// Approximate heap bytes held, for sizing.
    pub fn size(&self) -> usize {
        std::mem::size_of::<Entry>()
            + match &self.body {
                Body::AddressPair { a, aaaa } => a.len() + aaaa.len(),
                Body::Single(half) => half.len(),
            }
    }

    pub fn freshness(&self, now: Instant, stale_window: Duration) -> Freshness {
        if now < self.expires_at {
            Freshness::Fresh
        } else if now < self.expires_at + stale_window {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// Counts a hit and says whether this hit should start a background refresh: the entry is
    /// popular (`min_hits` hits so far) and less than `percentage` of its TTL remains. Only one
    /// refresh per entry is started.
    pub fn hit_wants_refresh(&self, now: Instant, min_hits: u32, percentage: u8) -> bool {
        let hits = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        if min_hits == 0 || hits < min_hits {
            return false;
        }
        let remaining = self.expires_at.saturating_duration_since(now);
        let threshold = self.ttl() * u32::from(percentage) / 100;
        remaining < threshold && !self.refreshing.swap(true, Ordering::Relaxed)
    }

    /// Writes the answer to `query` (an A or AAAA query for a pair) into `out`, TTLs counted
    /// down to what remains of the entry, or [`STALE_TTL`] when `stale`.
    pub fn write_for(
        &self,
        query: &Query,
        now: Instant,
        stale: bool,
        max_size: usize,
        udp_size: u16,
        out: &mut Vec<u8>,
    ) {
        let half = match &self.body {
            Body::AddressPair { a, aaaa } => {
                if query.question.qtype == rtype::AAAA {
                    aaaa
                } else {
                    a
                }
            }
            Body::Single(half) => half,
        };
        let truncated = write_answer(out, &half.wire, false, query, max_size, udp_size);
        // A cached answer is not authoritative, whatever the upstream said.
        let flags = read_u16(out, 2) & !flag::AA;
        write_u16(out, 2, flags);
        if truncated {
            return;
        }
        let elapsed = now.saturating_duration_since(self.stored_at).as_secs();
        let remaining = self.expires_at.saturating_duration_since(now).as_secs();
        for &offset in half.ttl_offsets.iter() {
            let offset = offset as usize;
            let ttl = if stale {
                STALE_TTL
            } else {
                let original = u64::from(read_u32(&half.wire, offset));
                original.saturating_sub(elapsed).min(remaining) as u32
            };
            out[offset..offset + 4].copy_from_slice(&ttl.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ZoneCacheConfig;
    use crate::wire::query::Question;
    use crate::wire::{CLASS_IN, Header, Name};
    use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use hickory_proto::rr::{Name as HName, RData, Record};
    use std::str::FromStr;

    const NAME: &str = "api.twilio.com.default.svc.cluster.local.";

    fn question(qtype: u16) -> Question {
        Question {
            name: Name::from_dotted(NAME).unwrap(),
            qtype,
            qclass: CLASS_IN,
        }
    }

    /// An upstream answer for `qtype` with `code`, the given answer records and, for negative
    /// answers, an SOA with TTL 60 and MINIMUM 5.
    fn answer(qtype: u16, code: ResponseCode, records: Vec<Record>) -> Answer {
        let mut msg = Message::new(99, MessageType::Response, OpCode::Query);
        msg.metadata.response_code = code;
        let rtype = hickory_proto::rr::RecordType::from(qtype);
        msg.add_query(hickory_proto::op::Query::query(
            HName::from_str(NAME).unwrap(),
            rtype,
        ));
        let negative = records.is_empty();
        msg.add_answers(records);
        if negative {
            let zone = HName::from_str("cluster.local.").unwrap();
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 2, 3, 4, 5);
            msg.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
        }
        Answer::accept(msg.to_vec().unwrap(), 99, &question(qtype)).unwrap()
    }

    fn a_record(ttl: u32) -> Record {
        Record::from_rdata(
            HName::from_str(NAME).unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        )
    }

    fn cname_record(ttl: u32) -> Record {
        let target = HName::from_str("api.twilio.com.").unwrap();
        Record::from_rdata(
            HName::from_str(NAME).unwrap(),
            ttl,
            RData::CNAME(CNAME(target)),
        )
    }

    fn policy() -> TtlPolicy {
        TtlPolicy::new(&ZoneCacheConfig::default())
    }

    fn client_query(qtype: u16) -> Query {
        let msg = crate::wire::query::build_upstream(7, &question(qtype), Default::default(), 1232);
        crate::wire::query::parse(&msg).unwrap()
    }

    #[test]
    fn pair_expires_when_the_shorter_half_does() {
        let now = Instant::now();
        let a = answer(
            rtype::A,
            ResponseCode::NoError,
            vec![cname_record(7), a_record(7)],
        );
        let aaaa = answer(rtype::AAAA, ResponseCode::NoError, vec![cname_record(20)]);
        let entry = Entry::address_pair(&a, &aaaa, &policy(), now).unwrap();
        // The reported case: A 7 s, AAAA a CNAME (to a name without AAAA) 20 s: one expiry, 7 s.
        assert_eq!(entry.ttl(), Duration::from_secs(7));
        assert_eq!(entry.rcode(), rcode::NOERROR);
        let aaaa_with_address = answer(
            rtype::AAAA,
            ResponseCode::NoError,
            vec![Record::from_rdata(
                HName::from_str(NAME).unwrap(),
                3,
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            )],
        );
        let entry = Entry::address_pair(&a, &aaaa_with_address, &policy(), now).unwrap();
        assert_eq!(entry.ttl(), Duration::from_secs(3));
    }

    #[test]
    fn nxdomain_covers_both_halves() {
        let now = Instant::now();
        let a = answer(rtype::A, ResponseCode::NXDomain, vec![]);
        let aaaa = answer(rtype::AAAA, ResponseCode::NXDomain, vec![]);
        let entry = Entry::address_pair(&a, &aaaa, &policy(), now).unwrap();
        for qtype in [rtype::A, rtype::AAAA] {
            let mut out = Vec::new();
            entry.write_for(&client_query(qtype), now, false, 1232, 1232, &mut out);
            let header = Header::read(&out).unwrap();
            assert_eq!(header.rcode(), rcode::NXDOMAIN);
            let msg = Message::from_vec(&out).unwrap();
            assert_eq!(u16::from(msg.queries[0].query_type()), qtype);
        }
    }

    #[test]
    fn halves_that_disagree_are_never_stored_together() {
        let now = Instant::now();
        let a = answer(rtype::A, ResponseCode::NXDomain, vec![]);
        let aaaa = answer(rtype::AAAA, ResponseCode::NoError, vec![cname_record(20)]);
        assert_eq!(
            Entry::address_pair(&a, &aaaa, &policy(), now).unwrap_err(),
            NotStored::Split
        );
        let servfail = answer(rtype::AAAA, ResponseCode::ServFail, vec![]);
        let a_ok = answer(rtype::A, ResponseCode::NoError, vec![a_record(30)]);
        assert_eq!(
            Entry::address_pair(&a_ok, &servfail, &policy(), now).unwrap_err(),
            NotStored::Uncacheable
        );
    }

    #[test]
    fn ttls_count_down_and_never_exceed_the_entry() {
        let now = Instant::now();
        let a = answer(rtype::A, ResponseCode::NoError, vec![a_record(300)]);
        let entry = Entry::single(&a, &policy(), now).unwrap();
        assert_eq!(entry.ttl(), Duration::from_secs(30));
        let ttl_after = |elapsed: u64, stale: bool| {
            let mut out = Vec::new();
            let at = now + Duration::from_secs(elapsed);
            entry.write_for(&client_query(rtype::A), at, stale, 1232, 1232, &mut out);
            Message::from_vec(&out).unwrap().answers[0].ttl
        };
        assert_eq!(ttl_after(0, false), 30);
        assert_eq!(ttl_after(10, false), 20);
        assert_eq!(ttl_after(29, false), 1);
        assert_eq!(ttl_after(100, true), STALE_TTL);
        assert_eq!(
            entry.freshness(now + Duration::from_secs(31), Duration::ZERO),
            Freshness::Expired
        );
        assert_eq!(
            entry.freshness(now + Duration::from_secs(31), Duration::from_secs(60)),
            Freshness::Stale
        );
    }

    #[test]
    fn only_popular_entries_near_expiry_ask_for_one_refresh() {
        let now = Instant::now();
        let a = answer(rtype::A, ResponseCode::NoError, vec![a_record(30)]);
        let entry = Entry::single(&a, &policy(), now).unwrap();
        let late = now + Duration::from_secs(28);
        assert!(
            !entry.hit_wants_refresh(now, 2, 10),
            "one hit is not popular"
        );
        assert!(
            !entry.hit_wants_refresh(now, 2, 10),
            "popular, but far from expiry"
        );
        assert!(entry.hit_wants_refresh(late, 2, 10));
        assert!(
            !entry.hit_wants_refresh(late, 2, 10),
            "one refresh at a time"
        );
    }
}
