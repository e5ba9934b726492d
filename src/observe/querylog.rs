//! The query log: one answered query in `log.query_sample` for every zone, and the answers of
//! the classes each zone's `log` names (CoreDNS's `log` in a server block logs that block's
//! zones only; `true` is every answer), as one line with the client, the question and the rcode (log target `query`,
//! so a filter can route or silence it). Off by default; when off, the cost per answer is one
//! branch and one pointer load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use tracing::info;

use crate::Proto;
use crate::config::zone_log::{AnswerClass, ZoneLog};
use crate::wire::name::read_uncompressed;
use crate::wire::{Name, Rcode};

/// Which zones log which answers: an answer is logged when the zone that routes its name (the
/// longest that contains it) logs its class.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedZones {
    /// Every zone with what it logs, longest first: the first that contains a name is the one
    /// that routes it.
    zones: Vec<(Name, ZoneLog)>,
}

impl LoggedZones {
    /// `None` when no zone logs, so that the log costs nothing more then.
    pub fn new(zones: impl IntoIterator<Item = (Name, ZoneLog)>) -> Option<LoggedZones> {
        let mut zones: Vec<(Name, ZoneLog)> = zones.into_iter().collect();
        if zones.iter().all(|(_, log)| log.is_off()) {
            return None;
        }
        zones.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.label_count()));
        Some(LoggedZones { zones })
    }

    /// Whether the zone that routes `name` logs answers of `class`.
    pub fn logs(&self, name: &Name, class: AnswerClass) -> bool {
        self.zones
            .iter()
            .find(|(zone, _)| name.is_subdomain_of(zone))
            .is_some_and(|(_, log)| log.logs(class))
    }
}

/// One answered query in `every` logged, and every one of the logged zones; both change with
/// a reloaded config.
pub struct QueryLog {
    every: AtomicU64,
    seen: AtomicU64,
    zones: ArcSwapOption<LoggedZones>,
}

impl QueryLog {
    /// Logs one answer in `every` (0 none) and every answer of `zones`.
    pub fn new(every: u64, zones: Option<LoggedZones>) -> QueryLog {
        QueryLog {
            every: AtomicU64::new(every),
            seen: AtomicU64::new(0),
            zones: ArcSwapOption::from_pointee(zones),
        }
    }

    /// From now on, logs one answer in `every` and every answer of `zones`.
    pub fn set(&self, every: u64, zones: Option<LoggedZones>) {
        self.every.store(every, Ordering::Relaxed);
        self.zones.store(zones.map(std::sync::Arc::new));
    }

    /// Logs `answer` (the bytes sent to `client`) when it is the one in `every`, or its zone
    /// logs.
    #[inline]
    pub fn answered(&self, client: SocketAddr, proto: Proto, answer: &[u8]) {
        let every = self.every.load(Ordering::Relaxed);
        if every != 0
            && self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every)
        {
            log(client, proto, answer, None);
            return;
        }
        if let Some(zones) = self.zones.load().as_deref() {
            log(client, proto, answer, Some(zones));
        }
    }
}

/// Logs `answer`; with `only`, when the zone of its question logs.
#[cold]
fn log(client: SocketAddr, proto: Proto, answer: &[u8], only: Option<&LoggedZones>) {
    let proto = match proto {
        Proto::Udp => "udp",
        Proto::Tcp => "tcp",
    };
    // Our own answers: a header, then the question, unless it was an error without one.
    let code = Rcode(answer.get(3).map_or(0, |flags| u16::from(flags & 0x0f)));
    let question = read_uncompressed(answer, 12).ok().and_then(|(name, end)| {
        let qtype = answer.get(end..end + 2)?;
        Some((name, u16::from_be_bytes([qtype[0], qtype[1]])))
    });
    if let Some(zones) = only {
        let answers = answer
            .get(6..8)
            .map_or(0, |n| u16::from_be_bytes([n[0], n[1]]));
        let class = AnswerClass::of(code.0, answers);
        if !question
            .as_ref()
            .is_some_and(|(name, _)| zones.logs(name, class))
        {
            return;
        }
    }
    let question = question.map(|(name, qtype)| (name.to_dotted(), qtype));
    let (name, qtype) = question.unwrap_or_else(|| ("-".into(), 0));
    info!(
        target: "query",
        %client, proto, %name, qtype, rcode = code.name(), bytes = answer.len(),
        "query"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_that_routes_a_name_decides_whether_it_is_logged() {
        let name = |text: &str| Name::from_dotted(text).expect("a name");
        let off = ZoneLog::default();
        assert!(LoggedZones::new([(name("."), off), (name("example"), off)]).is_none());
        let errors = ZoneLog::of(&[AnswerClass::Error]);
        let zones = LoggedZones::new([
            (name("."), off),
            (name("example"), ZoneLog::ALL),
            (name("www.example"), off),
            (name("errors.example"), errors),
        ])
        .expect("one zone logs");
        let success = AnswerClass::Success;
        assert!(zones.logs(&name("nope.example"), success));
        assert!(zones.logs(&name("EXAMPLE"), success));
        assert!(
            !zones.logs(&name("a.www.example"), success),
            "the closer zone decides"
        );
        assert!(!zones.logs(&name("other.invalid"), success));
        assert!(zones.logs(&name("a.errors.example"), AnswerClass::Error));
        assert!(!zones.logs(&name("a.errors.example"), AnswerClass::Denial));
    }
}
