//! Cache entries. For addresses an entry is a coherent pair: the A and the AAAA answer of one
//! name, from one resolution, with one rcode and one expiry. The only way to build one is
//! [`Entry::address_pair`], which takes both halves, so an entry with one half missing, or with
//! NXDOMAIN on one side and NOERROR on the other, cannot exist (docs/design.md, failure 2).
//!
//! Halves are kept as the upstream's wire bytes (without OPT) plus the offsets of their TTL
//! fields; answering copies the bytes and patches ID, letter case and TTLs. The entry's fields
//! and those bytes share one reference-counted allocation (a `triomphe::ThinArc`: count, fields,
//! length, bytes), so a cached name costs one allocation of about 56 bytes plus its answers,
//! which is what keeps it within the memory target of docs/design.md (300 bytes per name).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use smallvec::SmallVec;
use tokio::time::Instant;
use triomphe::ThinArc;

use super::policy::{AnswerKind, TtlPolicy};
use crate::wire::answer::Answer;
use crate::wire::query::Query;
use crate::wire::reply::{ReplyLimits, patch_answer};
use crate::wire::{HEADER_LEN, RType, Rcode, flag, get_u16, rcode, rtype, update_u16};

/// TTL of answers served stale (RFC 8767 section 4 suggests 30 seconds).
pub const STALE_TTL: u32 = 30;

/// An entry's bytes up to this size are put together on the stack before they are copied
/// behind its fields (a typical pair is a few hundred bytes).
const ASSEMBLED_ON_STACK: usize = 1024;

/// Why answers were not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The halves disagree: one NXDOMAIN, the other NOERROR. An upstream that does this is
    /// inconsistent (e.g. a kube-dns with autopath); counted.
    Split,
    /// An answer is not cacheable (SERVFAIL, no SOA for a negative answer, TTL 0, truncated).
    Uncacheable,
}

/// A cached answer (or pair of answers) with its lifetime; cloning shares it.
#[derive(Clone)]
pub struct Entry(ThinArc<Fields, u8>);

/// An entry's fixed part. Its bytes are the wires back to back (A then AAAA for a pair), then
/// the TTL field offsets of each, as native-endian u16.
struct Fields {
    expires_at: Instant,
    /// The lifetime given at store time, in milliseconds.
    ttl_ms: u32,
    hits: AtomicU32,
    /// End of the first wire, and of both wires (equal for a single answer). A wire is one
    /// DNS message: at most 65 535 bytes.
    first_end: u16,
    wires_end: u32,
    /// How many TTL offsets belong to the first wire.
    first_offsets: u16,
    /// For a pair, the length of the question the second (AAAA) wire is stored without: it
    /// is the first's with another qtype, and clients get their own anyway. 0: stored whole.
    second_question_len: u16,
    rcode: u8,
    kind: AnswerKind,
    /// A and AAAA of one name, rather than one answer of another type.
    pair: bool,
    refreshing: AtomicBool,
    /// Where in its prefetch window this entry starts its refresh: 0 at the configured
    /// share of the TTL, 255 at half as much again. Random per entry, so that entries stored
    /// in one burst (a warm-up, a cohort of refreshes) do not all refresh in the same instant
    /// ever after. Fits in the header's padding.
    refresh_spread: u8,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = self.fields();
        f.debug_struct("Entry")
            .field("pair", &fields.pair)
            .field("rcode", &fields.rcode)
            .field("kind", &fields.kind)
            .field("ttl_ms", &fields.ttl_ms)
            .field("bytes", &self.0.slice.len())
            .finish()
    }
}

/// How an answer from an entry is written: TTLs counted down to what remains, or, for an
/// expired entry served because upstreams failed (RFC 8767), [`STALE_TTL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Fresh,
    Stale,
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
        Ok(Entry::new(
            &[a, aaaa],
            a_code,
            kind,
            a_ttl.min(aaaa_ttl),
            now,
        ))
    }

    /// Builds the entry for an answer of any type but A and AAAA.
    pub fn single(answer: &Answer, policy: &TtlPolicy, now: Instant) -> Result<Entry, NotStored> {
        let (ttl, kind) = policy
            .cacheable(&answer.info)
            .ok_or(NotStored::Uncacheable)?;
        Ok(Entry::new(&[answer], answer.info.rcode, kind, ttl, now))
    }

    /// Packs `answers` (one, or A and AAAA) with their TTL offsets behind the fields.
    fn new(
        answers: &[&Answer],
        rcode: Rcode,
        kind: AnswerKind,
        ttl: Duration,
        now: Instant,
    ) -> Entry {
        let wires: usize = answers.iter().map(|a| a.message.len()).sum();
        let offsets: usize = answers.iter().map(|a| a.info.ttl_offsets.len()).sum();
        // Both questions name the same name (each answer was matched to its question); the
        // second is put back together as the first's with the AAAA qtype, so only then is it
        // left out.
        let second_question_len = match answers {
            [first, second] => {
                let len = question_len(&second.message);
                let qtype_at = HEADER_LEN + len.saturating_sub(4);
                let aaaa = len > 0
                    && get_u16(&second.message, qtype_at).is_ok_and(|t| RType(t) == rtype::AAAA);
                if aaaa && question_len(&first.message) == len {
                    len
                } else {
                    0
                }
            }
            _ => 0,
        };
        // Assembled on the stack when it fits: the entry's one allocation is the ThinArc.
        let mut bytes: SmallVec<[u8; ASSEMBLED_ON_STACK]> =
            SmallVec::with_capacity(wires + 2 * offsets);
        bytes.extend_from_slice(&answers[0].message);
        if let [_, second] = answers {
            bytes.extend_from_slice(&second.message[..HEADER_LEN]);
            bytes.extend_from_slice(&second.message[HEADER_LEN + second_question_len..]);
        }
        for answer in answers {
            for offset in &answer.info.ttl_offsets {
                bytes.extend_from_slice(&offset.to_ne_bytes());
            }
        }
        let first = answers[0];
        // Cached rcodes are NOERROR, NXDOMAIN or SERVFAIL: 4 bits. TTLs are capped by config
        // durations far below 49 days. A message (from a 16-bit TCP length) fits in u16, and
        // so does the count of its TTL fields (each takes 11 bytes or more).
        let ttl_ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX);
        let fields = Fields {
            expires_at: now + Duration::from_millis(ttl_ms.into()),
            ttl_ms,
            hits: AtomicU32::new(0),
            first_end: first.message.len() as u16,
            wires_end: (wires - second_question_len) as u32,
            first_offsets: first.info.ttl_offsets.len() as u16,
            second_question_len: second_question_len as u16,
            rcode: rcode.header_bits() as u8,
            kind,
            pair: answers.len() == 2,
            refreshing: AtomicBool::new(false),
            refresh_spread: rand::random(),
        };
        Entry(ThinArc::from_header_and_slice(fields, &bytes))
    }

    fn fields(&self) -> &Fields {
        &self.0.header.header
    }

    /// The wire of the first (`second == false`) or second answer, and its TTL offsets.
    fn half(&self, second: bool) -> (&[u8], impl Iterator<Item = usize> + '_) {
        let fields = self.fields();
        let bytes = &self.0.slice;
        let (first_end, wires_end) = (fields.first_end as usize, fields.wires_end as usize);
        let split = wires_end + 2 * fields.first_offsets as usize;
        let (wire, offsets) = if second {
            (&bytes[first_end..wires_end], &bytes[split..])
        } else {
            (&bytes[..first_end], &bytes[wires_end..split])
        };
        let offsets = offsets
            .chunks_exact(2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]) as usize);
        (wire, offsets)
    }

    pub fn rcode(&self) -> Rcode {
        Rcode(self.fields().rcode.into())
    }

    pub fn kind(&self) -> AnswerKind {
        self.fields().kind
    }

    pub fn expires_at(&self) -> Instant {
        self.fields().expires_at
    }

    /// The whole lifetime given at store time.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.fields().ttl_ms.into())
    }

    /// Hits counted so far (fresh lookups that answered from this entry).
    pub fn hits(&self) -> u32 {
        self.fields().hits.load(Ordering::Relaxed)
    }

    /// The stored upstream answers (without OPT, TTLs as received): A then AAAA for a pair.
    /// For inspection (`/debug/cache`); answering goes through [`Entry::write_for`].
    pub fn wires(&self) -> Vec<Vec<u8>> {
        let mut wires = vec![self.half(false).0.to_vec()];
        if self.fields().pair {
            let mut second = Vec::new();
            self.assemble_second(&mut second);
            wires.push(second);
        }
        wires
    }

    /// Puts the second wire back together in `out`: its header, the first wire's question
    /// with the AAAA qtype, and the rest.
    fn assemble_second(&self, out: &mut Vec<u8>) {
        let (first, _) = self.half(false);
        let (second, _) = self.half(true);
        let question_len = self.fields().second_question_len as usize;
        out.clear();
        out.extend_from_slice(&second[..HEADER_LEN]);
        if question_len > 0 {
            let question = &first[HEADER_LEN..HEADER_LEN + question_len];
            out.extend_from_slice(&question[..question_len - 4]);
            out.extend_from_slice(&rtype::AAAA.to_be_bytes());
            out.extend_from_slice(&question[question_len - 2..]);
        }
        out.extend_from_slice(&second[HEADER_LEN..]);
    }

    /// When the entry was stored.
    pub fn stored_at(&self) -> Instant {
        self.expires_at() - self.ttl()
    }

    /// Whether this entry answers `name` (lowercased wire form): the store is keyed by a hash
    /// of the name, so a hit is confirmed against the question the upstream answered.
    pub fn answers_name(&self, name: &[u8]) -> bool {
        let (wire, _) = self.half(false);
        wire.get(HEADER_LEN..HEADER_LEN + name.len())
            .is_some_and(|stored| stored.eq_ignore_ascii_case(name))
    }

    pub fn freshness(&self, now: Instant, stale_window: Duration) -> Freshness {
        let expires_at = self.expires_at();
        if now < expires_at {
            Freshness::Fresh
        } else if now < expires_at + stale_window {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// Counts a hit and says whether this hit should start a background refresh: the entry is
    /// popular (`min_hits` hits so far) and [`Entry::refresh_due`]. Only one refresh per entry
    /// is started.
    pub fn hit_wants_refresh(&self, now: Instant, min_hits: u32, percentage: u8) -> bool {
        let fields = self.fields();
        let hits = fields.hits.fetch_add(1, Ordering::Relaxed) + 1;
        if min_hits == 0 || hits < min_hits {
            return false;
        }
        self.refresh_due(now, percentage) && !fields.refreshing.swap(true, Ordering::Relaxed)
    }

    /// Whether at `now` this entry is inside its prefetch window: less than its refresh point
    /// remains of its TTL, `percentage` of the TTL up to half as much again (see
    /// `refresh_spread`). The one answer to "is this entry nearly expired" for everything
    /// that asks (a hit deciding on a refresh, an autopath walk deciding whether an entry is
    /// worth building on), so that they never disagree about an entry.
    pub fn refresh_due(&self, now: Instant, percentage: u8) -> bool {
        self.expires_at().saturating_duration_since(now) < self.refresh_point(percentage)
    }

    /// How much of the TTL remains when this entry wants its refresh.
    fn refresh_point(&self, percentage: u8) -> Duration {
        const SCALE: u32 = 2 * u8::MAX as u32;
        let share = u32::from(percentage) * (SCALE + u32::from(self.fields().refresh_spread));
        self.ttl() * share / (100 * SCALE)
    }

    /// The refresh a hit asked for was not started: a later hit may ask again.
    pub fn refresh_declined(&self) {
        self.fields().refreshing.store(false, Ordering::Relaxed);
    }

    /// Writes the answer to `query` (an A or AAAA query for a pair) into `out`, TTLs counted
    /// down to what remains of the entry, or [`STALE_TTL`] when served stale.
    pub fn write_for(
        &self,
        query: &Query,
        now: Instant,
        served: Served,
        limits: ReplyLimits,
        out: &mut Vec<u8>,
    ) {
        let second = self.fields().pair && query.question.qtype == rtype::AAAA;
        let (wire, offsets) = self.half(second);
        if second {
            self.assemble_second(out);
        } else {
            out.clear();
            out.extend_from_slice(wire);
        }
        let truncated = patch_answer(out, false, query, limits);
        // A cached answer is not authoritative, whatever the upstream said.
        update_u16(out, 2, |flags| flags & !flag::AA);
        if truncated {
            return;
        }
        let elapsed = now.saturating_duration_since(self.stored_at()).as_secs();
        let remaining = self.expires_at().saturating_duration_since(now).as_secs();
        for offset in offsets {
            // Offsets were found in this very wire when it was stored; one that is not in it
            // is left alone rather than trusted.
            let Some(field) = out.get_mut(offset..).and_then(|f| f.first_chunk_mut::<4>()) else {
                continue;
            };
            let ttl = match served {
                Served::Stale => STALE_TTL,
                Served::Fresh => {
                    // Still as stored: patching touched the header, question and OPT only.
                    let original = u64::from(u32::from_be_bytes(*field));
                    original.saturating_sub(elapsed).min(remaining) as u32
                }
            };
            *field = ttl.to_be_bytes();
        }
    }
}

/// The length of the question section of an accepted answer (one question, its name written
/// out), or 0 when it cannot be read so: the wire is then stored whole.
fn question_len(message: &[u8]) -> usize {
    match crate::wire::name::read_uncompressed(message, HEADER_LEN) {
        Ok((_, name_end)) if name_end + 4 <= message.len() => name_end + 4 - HEADER_LEN,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fixtures::{self, policy};
    use crate::wire::{Header, Name};
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::{AAAA, CNAME};
    use hickory_proto::rr::{Name as HName, RData, Record};
    use std::str::FromStr;

    const NAME: &str = "api.twilio.com.default.svc.cluster.local.";
    /// A UDP client that advertised 1232 bytes, with our default maximum.
    const LIMITS: ReplyLimits = ReplyLimits {
        max_size: 1232,
        udp_size: 1232,
    };

    /// An upstream answer for `qtype` with `code`, the given answer records and, for negative
    /// answers, an SOA with TTL 60 and MINIMUM 5.
    fn answer(qtype: RType, code: ResponseCode, records: Vec<Record>) -> Answer {
        fixtures::answer(NAME, qtype, code, records)
    }

    fn a_record(ttl: u32) -> Record {
        fixtures::a_record(NAME, ttl)
    }

    fn cname_record(ttl: u32) -> Record {
        let target = HName::from_str("api.twilio.com.").unwrap();
        Record::from_rdata(
            HName::from_str(NAME).unwrap(),
            ttl,
            RData::CNAME(CNAME(target)),
        )
    }

    fn client_query(qtype: RType) -> Query {
        fixtures::client_query(NAME, qtype)
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
            entry.write_for(&client_query(qtype), now, Served::Fresh, LIMITS, &mut out);
            let header = Header::read(&out).unwrap();
            assert_eq!(header.rcode(), rcode::NXDOMAIN);
            let msg = Message::from_vec(&out).unwrap();
            assert_eq!(u16::from(msg.queries[0].query_type()), u16::from(qtype));
        }
    }

    /// The AAAA half is stored without its question (the A half's, but for the qtype): each
    /// half still goes out exactly as the upstream sent it (the client's ID and letter case
    /// aside, AA cleared), counts its TTLs down, and reads back whole for /debug/cache.
    #[test]
    fn each_half_is_served_as_the_upstream_sent_it() {
        let now = Instant::now();
        let a = answer(rtype::A, ResponseCode::NoError, vec![a_record(30)]);
        let aaaa = answer(
            rtype::AAAA,
            ResponseCode::NoError,
            vec![
                cname_record(30),
                Record::from_rdata(
                    HName::from_str("api.twilio.com.").unwrap(),
                    30,
                    RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                ),
            ],
        );
        let entry = Entry::address_pair(&a, &aaaa, &policy(), now).unwrap();
        assert_eq!(entry.wires(), vec![a.message.clone(), aaaa.message.clone()]);
        for (qtype, upstream) in [(rtype::A, &a), (rtype::AAAA, &aaaa)] {
            let query = client_query(qtype);
            let mut expected = Vec::new();
            crate::wire::reply::write_answer(
                &mut expected,
                &upstream.message,
                false,
                &query,
                LIMITS,
            );
            update_u16(&mut expected, 2, |flags| flags & !flag::AA);
            let mut out = Vec::new();
            entry.write_for(&query, now, Served::Fresh, LIMITS, &mut out);
            assert_eq!(out, expected, "qtype {qtype}");
            entry.write_for(
                &query,
                now + Duration::from_secs(10),
                Served::Fresh,
                LIMITS,
                &mut out,
            );
            let msg = Message::from_vec(&out).unwrap();
            assert!(msg.answers.iter().all(|r| r.ttl == 20), "qtype {qtype}");
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
        let ttl_after = |elapsed: u64, served: Served| {
            let mut out = Vec::new();
            let at = now + Duration::from_secs(elapsed);
            entry.write_for(&client_query(rtype::A), at, served, LIMITS, &mut out);
            Message::from_vec(&out).unwrap().answers[0].ttl
        };
        assert_eq!(ttl_after(0, Served::Fresh), 30);
        assert_eq!(ttl_after(10, Served::Fresh), 20);
        assert_eq!(ttl_after(29, Served::Fresh), 1);
        assert_eq!(ttl_after(100, Served::Stale), STALE_TTL);
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
    fn a_hit_is_confirmed_against_the_stored_name() {
        let a = answer(rtype::A, ResponseCode::NoError, vec![a_record(30)]);
        let entry = Entry::single(&a, &policy(), Instant::now()).unwrap();
        let same = Name::from_dotted(&NAME.to_uppercase())
            .unwrap()
            .to_lowercase();
        assert!(entry.answers_name(same.as_wire()));
        let other = Name::from_dotted("api.twilio.com.other.svc.cluster.local").unwrap();
        assert!(
            !entry.answers_name(other.as_wire()),
            "a hash collision must not answer"
        );
        let longer = Name::from_dotted(&format!("x.{NAME}")).unwrap();
        assert!(!entry.answers_name(longer.as_wire()));
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

    #[test]
    fn a_hit_and_the_entry_agree_on_when_a_refresh_is_due() {
        let stored = Instant::now();
        let a = answer(rtype::A, ResponseCode::NoError, vec![a_record(30)]);
        // Several entries: each draws its own spread, and the window must be the entry's.
        for _ in 0..20 {
            let entry = Entry::single(&a, &policy(), stored).unwrap();
            let expires = stored + Duration::from_secs(30);
            let (mut due, mut not_due) = (0, 0);
            for percentage in [1, 10, 50, 100] {
                // Every remaining TTL from all of it down to none, 10 ms apart.
                for remaining_ms in (0..=30_000).rev().step_by(10) {
                    let now = expires - Duration::from_millis(remaining_ms);
                    let entry_says = entry.refresh_due(now, percentage);
                    let hit_says = entry.hit_wants_refresh(now, 1, percentage);
                    assert_eq!(
                        hit_says, entry_says,
                        "{remaining_ms} ms left at {percentage} %: the hit and the entry disagree"
                    );
                    if hit_says {
                        entry.refresh_declined();
                        due += 1;
                    } else {
                        not_due += 1;
                    }
                }
            }
            assert!(due > 0 && not_due > 0, "both answers were compared");
        }
    }

    #[test]
    fn the_refresh_spread_costs_no_memory() {
        // Instant (16) + 4 + 4 + 4 + 2 + 2 + 2 + 5 one-byte fields, padded to 8.
        assert_eq!(std::mem::size_of::<Fields>(), 40);
    }

    #[test]
    fn entries_stored_together_spread_their_refreshes_over_half_the_window_again() {
        let now = Instant::now();
        let a = answer(rtype::A, ResponseCode::NoError, vec![a_record(30)]);
        let entries: Vec<Entry> = (0..200)
            .map(|_| Entry::single(&a, &policy(), now).unwrap())
            .collect();
        // 10 % of 30 s is 3 s; the spread takes that up to 4.5 s before expiry.
        let points: Vec<Duration> = entries.iter().map(|e| e.refresh_point(10)).collect();
        let earliest = *points.iter().max().unwrap();
        let latest = *points.iter().min().unwrap();
        assert!(latest >= Duration::from_secs(3), "{latest:?}");
        assert!(earliest <= Duration::from_millis(4500), "{earliest:?}");
        assert!(
            earliest - latest >= Duration::from_secs(1),
            "200 entries stored at once refresh within {:?} of each other",
            earliest - latest
        );
        // And the hit path uses that point: a popular entry past it asks, one before it not.
        let entry = &entries[0];
        let point = entry.refresh_point(10);
        let expires = now + Duration::from_secs(30);
        entry.hit_wants_refresh(now, 1, 10);
        assert!(!entry.hit_wants_refresh(expires - point - Duration::from_millis(10), 1, 10));
        assert!(entry.hit_wants_refresh(expires - point + Duration::from_millis(10), 1, 10));
    }
}
