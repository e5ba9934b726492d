//! A zone's hosts entries (`zones[].hosts`, [`crate::config::hosts`]): names answered from a
//! hosts file and inline lines before the cache and the upstreams, with the semantics of
//! CoreDNS's `hosts` plugin, which node-local-dns Corefiles use:
//!
//! - A and AAAA for a name the entries hold, PTR for their addresses (unless `no_reverse`),
//!   with the AA bit and the configured TTL; the file's records first, then the inline ones;
//! - a name the entries hold but without an address of the type asked (an AAAA for a name
//!   with only IPv4 entries, an MX): an empty NOERROR answer (NODATA), AA set; with
//!   `fallthrough_unsupported`, a type other than A, AAAA and PTR goes on instead;
//! - a name they do not hold: on to the cache and upstreams where `fallthrough` applies to it,
//!   otherwise SERVFAIL (CoreDNS has no SOA to make an NXDOMAIN with);
//! - a PTR whose address they do not hold, and a name outside `hosts.zones`, always go on.
//!
//! The file is read when the zone is built and then checked every `reload`: when its
//! modification time or size changed it is read again. A file that is missing or cannot be read
//! is logged, and the entries read before keep being served (the inline ones always are).
//!
//! It stands on [`crate::config`] and [`crate::wire`]; the responder asks it first for a zone
//! that has it, and runs [`watch`] as a background task. Metrics: none of its own (its answers
//! count in the request metrics, plugin label `hosts`).

mod table;

use std::path::PathBuf;
use std::sync::{Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tracing::{debug, info, warn};

use crate::config::hosts::{Fallthrough, HostsConfig};
use crate::wire::reply::{ReplyLimits, write_authoritative};
use crate::wire::{Name, Query, RType, rtype};
use table::{Map, Parsed, Rules, Skipped, parse, reverse_addr};

/// The PTR record type.
const PTR: RType = RType(12);

/// Skipped lines logged one by one per read, at most; the rest are counted.
const SKIPPED_LOGGED: usize = 10;

/// What [`Hosts::answer`] did with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The answer (records, or none: NODATA) is in the output buffer; its rcode is NOERROR.
    Answered,
    /// The name is not held and does not fall through: answer SERVFAIL, as CoreDNS does.
    ServFail,
    /// Not for the entries: on to the cache and upstreams.
    Next,
}

/// One zone's entries: the inline ones, the file's as last read, and what decides answers.
pub struct Hosts {
    /// Only names under these are held and answered (PTR excepted).
    zones: Vec<Name>,
    fallthrough: Fallthrough,
    fallthrough_unsupported: bool,
    /// PTR names are kept (no `no_reverse`).
    reverse: bool,
    ttl: u32,
    inline: Map,
    file: Option<HostsFile>,
}

/// The file and its entries as last read.
struct HostsFile {
    path: PathBuf,
    reload: Duration,
    map: ArcSwap<Map>,
    /// Only the refresh (one at a time, from [`watch`]) reads and writes this.
    state: Mutex<FileState>,
}

#[derive(Debug, Default)]
struct FileState {
    /// Modification time and size of the file when it was last read.
    stamp: Option<(SystemTime, u64)>,
    /// The last check could not read it (logged once until it can again).
    failing: bool,
}

impl Hosts {
    /// The entries of `config` for the zone named `zone`: the inline ones parsed, the file read
    /// once (a file that cannot be read is logged and served once it can).
    pub fn new(config: &HostsConfig, zone: &Name) -> Hosts {
        let zones = Hosts::zones_of(config, zone);
        let rules = Rules {
            zones: &zones,
            reverse: !config.no_reverse,
        };
        let what = format!("zone {zone} hosts.entries");
        let inline = parse(config.entries.iter().map(String::as_str), rules);
        report(&what, &inline, &zones);
        let file = config.file.as_ref().map(|path| HostsFile {
            path: path.clone(),
            reload: config.reload,
            map: ArcSwap::from_pointee(Map::default()),
            state: Mutex::new(FileState::default()),
        });
        let hosts = Hosts {
            fallthrough: config.fallthrough.clone(),
            fallthrough_unsupported: config.fallthrough_unsupported,
            reverse: !config.no_reverse,
            ttl: u32::try_from(config.ttl.as_secs()).unwrap_or(u32::MAX),
            inline: inline.map,
            file,
            zones,
        };
        hosts.refresh();
        hosts
    }

    /// The names `config` serves in the zone named `zone`: its `zones`, else the zone itself.
    pub fn zones_of(config: &HostsConfig, zone: &Name) -> Vec<Name> {
        if config.zones.is_empty() {
            vec![*zone]
        } else {
            config.zones.iter().map(|z| z.0).collect()
        }
    }

    /// How often [`watch`] should look at the file; `None` when there is nothing to watch.
    pub fn reload_interval(&self) -> Option<Duration> {
        self.file
            .as_ref()
            .map(|f| f.reload)
            .filter(|every| !every.is_zero())
    }

    /// Answers `query` from the entries into `out` (within `limits`), or says what to do
    /// instead. Allocates nothing for A and AAAA.
    pub fn answer(&self, query: &Query, limits: ReplyLimits, out: &mut Vec<u8>) -> Decision {
        let question = &query.question;
        let qname = &question.name;
        let qtype = question.qtype;
        if qtype != PTR && !self.zones.iter().any(|zone| qname.is_subdomain_of(zone)) {
            return Decision::Next;
        }
        let file = self.file.as_ref().map(|f| f.map.load());
        let maps = || file.iter().map(|m| &***m).chain([&self.inline]);
        let wire = qname.as_wire();
        let ttl = self.ttl;
        match qtype {
            PTR => {
                let Some(addr) = reverse_addr(qname) else {
                    return Decision::Next;
                };
                if maps().all(|m| m.names(addr).is_empty()) {
                    return Decision::Next;
                }
                let names = maps().flat_map(|m| m.names(addr));
                write_authoritative(out, query, qtype, ttl, names, limits);
                return Decision::Answered;
            }
            rtype::A if maps().any(|m| !m.v4(wire).is_empty()) => {
                let octets = maps().flat_map(|m| m.v4(wire)).map(|ip| ip.octets());
                write_authoritative(out, query, qtype, ttl, octets, limits);
                return Decision::Answered;
            }
            rtype::AAAA if maps().any(|m| !m.v6(wire).is_empty()) => {
                let octets = maps().flat_map(|m| m.v6(wire)).map(|ip| ip.octets());
                write_authoritative(out, query, qtype, ttl, octets, limits);
                return Decision::Answered;
            }
            rtype::A | rtype::AAAA => {}
            _ if self.fallthrough_unsupported && self.falls_through(qname) => {
                return Decision::Next;
            }
            _ => {}
        }
        // No record of the type asked: NODATA if the name is held at all.
        if maps().any(|m| !m.v4(wire).is_empty() || !m.v6(wire).is_empty()) {
            write_authoritative(out, query, qtype, ttl, std::iter::empty::<&[u8]>(), limits);
            return Decision::Answered;
        }
        if self.falls_through(qname) {
            Decision::Next
        } else {
            Decision::ServFail
        }
    }

    fn falls_through(&self, qname: &Name) -> bool {
        self.fallthrough.covers(qname)
    }

    /// Reads the file again when its modification time or size changed since it was last
    /// read. A file that cannot be read leaves the entries read before in place.
    pub fn refresh(&self) {
        let Some(file) = &self.file else {
            return;
        };
        let mut state = file
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let read = std::fs::metadata(&file.path).and_then(|meta| {
            let stamp = (meta.modified()?, meta.len());
            if state.stamp == Some(stamp) {
                return Ok(None);
            }
            Ok(Some((stamp, std::fs::read(&file.path)?)))
        });
        match read {
            Ok(None) => {}
            Ok(Some((stamp, bytes))) => {
                let text = String::from_utf8_lossy(&bytes);
                let rules = Rules {
                    zones: &self.zones,
                    reverse: self.reverse,
                };
                let parsed = parse(text.lines(), rules);
                let what = file.path.display().to_string();
                report(&what, &parsed, &self.zones);
                if state.failing {
                    info!(file = %what, "hosts file readable again");
                }
                debug!(file = %what, entries = parsed.map.len(), "hosts file read");
                file.map.store(parsed.map.into());
                *state = FileState {
                    stamp: Some(stamp),
                    failing: false,
                };
            }
            Err(err) => {
                if !state.failing {
                    warn!(
                        file = %file.path.display(),
                        %err,
                        "cannot read the hosts file; the entries read before are still served"
                    );
                }
                state.failing = true;
            }
        }
    }
}

/// Logs the lines `parsed` skipped (the first [`SKIPPED_LOGGED`]) and the names it left out.
fn report(what: &str, parsed: &Parsed, zones: &[Name]) {
    for Skipped { line, reason } in parsed.skipped.iter().take(SKIPPED_LOGGED) {
        warn!("{what}:{line}: hosts line skipped: {reason}");
    }
    if let Some(more) = parsed.skipped.len().checked_sub(SKIPPED_LOGGED)
        && more > 0
    {
        warn!("{what}: {more} more hosts lines skipped");
    }
    if parsed.outside > 0 {
        let zones: Vec<String> = zones.iter().map(Name::to_dotted).collect();
        info!(
            "{what}: {} names outside {} left out (hosts.zones)",
            parsed.outside,
            zones.join(" ")
        );
    }
}

/// Checks `hosts`' file every [`Hosts::reload_interval`] until `hosts` is gone (its
/// responder was replaced by a reload and its last query answered). Run by the responder as
/// a background task.
pub async fn watch(hosts: Weak<Hosts>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: the file was read when the entries were built.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(hosts) = hosts.upgrade() else {
            return;
        };
        // Reading and parsing a large file must not hold a runtime thread.
        if let Err(err) = tokio::task::spawn_blocking(move || hosts.refresh()).await {
            warn!(%err, "hosts file refresh failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ZoneName;
    use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery, ResponseCode};
    use hickory_proto::rr::{Name as HName, RecordType};
    use std::str::FromStr;

    fn name(text: &str) -> Name {
        Name::from_dotted(text).unwrap()
    }

    fn hosts(yaml: &str, zone: &str) -> Hosts {
        let config: HostsConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Hosts::new(&config, &name(zone))
    }

    /// The decision for `qname`/`qtype`, and the answer when there is one.
    fn ask(hosts: &Hosts, qname: &str, qtype: RecordType) -> (Decision, Option<Message>) {
        let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(HQuery::query(HName::from_str(qname).unwrap(), qtype));
        let mut packet = msg.to_vec().unwrap();
        // The client's letter case, which hickory's encoder does not keep: a capital first.
        packet[crate::wire::HEADER_LEN + 1].make_ascii_uppercase();
        let query = crate::wire::query::parse(&packet).unwrap();
        let mut out = Vec::new();
        let decision = hosts.answer(&query, ReplyLimits::tcp(1232), &mut out);
        let answer = (decision == Decision::Answered).then(|| Message::from_vec(&out).unwrap());
        (decision, answer)
    }

    fn rdatas(msg: &Message) -> Vec<String> {
        msg.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn held_names_are_answered_authoritatively_with_the_ttl() {
        let hosts = hosts(
            "entries: [\"10.0.0.5 db.internal\", \"fd00::5 db.internal\", \"10.0.0.6 DB.internal\"]\nttl: 60s\n",
            ".",
        );
        let (decision, answer) = ask(&hosts, "db.internal.", RecordType::A);
        assert_eq!(decision, Decision::Answered);
        let answer = answer.unwrap();
        assert!(answer.metadata.authoritative);
        assert!(answer.metadata.recursion_desired);
        assert!(!answer.metadata.recursion_available);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(rdatas(&answer), ["10.0.0.5", "10.0.0.6"]);
        assert!(answer.answers.iter().all(|r| r.ttl == 60));
        assert_eq!(answer.answers[0].name.to_string(), "Db.internal.");
        let (_, answer) = ask(&hosts, "db.internal.", RecordType::AAAA);
        assert_eq!(rdatas(&answer.unwrap()), ["fd00::5"]);
    }

    #[test]
    fn a_held_name_without_the_type_asked_is_nodata() {
        let hosts = hosts("entries: [\"10.0.0.5 v4only.internal\"]\n", ".");
        for qtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let (decision, answer) = ask(&hosts, "v4only.internal.", qtype);
            assert_eq!(decision, Decision::Answered, "{qtype}");
            let answer = answer.unwrap();
            assert!(answer.answers.is_empty());
            assert!(answer.metadata.authoritative);
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        }
    }

    /// Asserts the decision for each `(qname, qtype, decision)`.
    fn decides(hosts: &Hosts, cases: &[(&str, RecordType, Decision)]) {
        for &(qname, qtype, want) in cases {
            assert_eq!(ask(hosts, qname, qtype).0, want, "{qname} {qtype}");
        }
    }

    #[test]
    fn unsupported_types_fall_through_only_when_asked_to() {
        let hosts = hosts(
            "entries: [\"10.0.0.5 v4only.internal\"]\nfallthrough: true\nfallthrough_unsupported: true\n",
            ".",
        );
        decides(
            &hosts,
            &[
                ("v4only.internal.", RecordType::TXT, Decision::Next),
                ("v4only.internal.", RecordType::AAAA, Decision::Answered),
            ],
        );
    }

    #[test]
    fn an_unknown_name_is_servfail_unless_it_falls_through() {
        let entries = "entries: [\"10.0.0.5 db.internal\"]\n";
        let other = "other.internal.";
        let off = hosts(entries, ".");
        decides(
            &off,
            &[
                (other, RecordType::A, Decision::ServFail),
                (other, RecordType::MX, Decision::ServFail),
            ],
        );
        let all = hosts(&format!("{entries}fallthrough: true\n"), ".");
        decides(&all, &[(other, RecordType::A, Decision::Next)]);
        let some = hosts(&format!("{entries}fallthrough: [example.org]\n"), ".");
        decides(
            &some,
            &[
                ("a.example.org.", RecordType::A, Decision::Next),
                (other, RecordType::A, Decision::ServFail),
            ],
        );
    }

    #[test]
    fn names_outside_the_zones_go_on_whatever_fallthrough_says() {
        let hosts = hosts(
            "entries: [\"10.0.0.5 db.internal\", \"10.0.0.7 a.cluster.local\"]\nzones: [cluster.local]\n",
            ".",
        );
        decides(
            &hosts,
            &[
                ("db.internal.", RecordType::A, Decision::Next),
                ("b.cluster.local.", RecordType::A, Decision::ServFail),
                ("a.cluster.local.", RecordType::A, Decision::Answered),
            ],
        );
    }

    #[test]
    fn ptr_answers_the_names_of_an_address_and_goes_on_for_others() {
        let hosts = hosts(
            "entries: [\"10.0.0.5 db.internal db2.internal\", \"fd00::1 v6.internal\"]\nzones: [internal]\n",
            "internal",
        );
        let (decision, answer) = ask(&hosts, "5.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(decision, Decision::Answered);
        assert_eq!(rdatas(&answer.unwrap()), ["db.internal.", "db2.internal."]);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        let (_, answer) = ask(&hosts, v6, RecordType::PTR);
        assert_eq!(rdatas(&answer.unwrap()), ["v6.internal."]);
        // Unknown addresses and names that are no address go on, even without fallthrough.
        decides(
            &hosts,
            &[
                ("6.0.0.10.in-addr.arpa.", RecordType::PTR, Decision::Next),
                ("x.internal.", RecordType::PTR, Decision::Next),
            ],
        );
        let quiet = super::tests::hosts(
            "entries: [\"10.0.0.5 db.internal\"]\nno_reverse: true\n",
            ".",
        );
        decides(
            &quiet,
            &[("5.0.0.10.in-addr.arpa.", RecordType::PTR, Decision::Next)],
        );
    }

    #[test]
    fn the_file_is_read_again_when_it_changes_and_kept_when_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "10.0.0.1 a.internal\n").unwrap();
        let config = HostsConfig {
            file: Some(path.clone()),
            entries: vec!["10.0.0.9 inline.internal".into()],
            zones: vec![ZoneName(Name::root())],
            ..HostsConfig::default()
        };
        let hosts = Hosts::new(&config, &Name::root());
        let a = |hosts: &Hosts, qname| rdatas(&ask(hosts, qname, RecordType::A).1.unwrap());
        assert_eq!(a(&hosts, "a.internal."), ["10.0.0.1"]);
        std::fs::write(&path, "10.0.0.2 b.internal\n10.0.0.3 a.internal\n").unwrap();
        hosts.refresh();
        assert_eq!(a(&hosts, "a.internal."), ["10.0.0.3"]);
        assert_eq!(a(&hosts, "b.internal."), ["10.0.0.2"]);
        std::fs::remove_file(&path).unwrap();
        hosts.refresh();
        assert_eq!(
            a(&hosts, "b.internal."),
            ["10.0.0.2"],
            "the old entries stay"
        );
        assert_eq!(a(&hosts, "inline.internal."), ["10.0.0.9"]);
    }
}
