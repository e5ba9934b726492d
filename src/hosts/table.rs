//! Hosts-file text into lookup maps, as CoreDNS's `hosts` plugin reads it (hosts(5)): `IP NAME
//! [NAME...]` per line, `#` starts a comment anywhere, IPv4 and IPv6 (an IPv6 zone such as
//! `%eth0` is dropped, an IPv4-mapped IPv6 address is IPv4), names lowercased, a leading `*`
//! label a wildcard for exactly one label more. Lines that cannot be used are skipped and
//! reported; names outside the served zones are left out and counted.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::Name;

/// A name in wire form, lowercased: the maps' key, looked up with a query's name bytes.
type Key = Box<[u8]>;

/// The entries of one source (the file, or the inline lines), ready to answer.
#[derive(Debug, Default)]
pub(super) struct Map {
    v4: HashMap<Key, Vec<Ipv4Addr>>,
    v6: HashMap<Key, Vec<Ipv6Addr>>,
    /// Wildcards (`*.example.com`), keyed by the name below the `*` (`example.com`).
    wild_v4: HashMap<Key, Vec<Ipv4Addr>>,
    wild_v6: HashMap<Key, Vec<Ipv6Addr>>,
    /// Address to names, for PTR; empty with `no_reverse`. Wildcards have none.
    reverse: HashMap<IpAddr, Vec<Key>>,
}

impl Map {
    /// The IPv4 addresses of `name` (wire form, lowercased): its own entries, else those of a
    /// wildcard one label up.
    pub(super) fn v4(&self, name: &[u8]) -> &[Ipv4Addr] {
        lookup(&self.v4, &self.wild_v4, name)
    }

    /// The IPv6 addresses of `name`, as [`Map::v4`].
    pub(super) fn v6(&self, name: &[u8]) -> &[Ipv6Addr] {
        lookup(&self.v6, &self.wild_v6, name)
    }

    /// The names (wire form) whose entries hold `addr`.
    pub(super) fn names(&self, addr: IpAddr) -> &[Key] {
        self.reverse.get(&addr).map_or(&[], Vec::as_slice)
    }

    /// Addresses and reverse names held: the size the logs report.
    pub(super) fn len(&self) -> usize {
        let values = |m: &HashMap<Key, Vec<Ipv4Addr>>| m.values().map(Vec::len).sum::<usize>();
        let values6 = |m: &HashMap<Key, Vec<Ipv6Addr>>| m.values().map(Vec::len).sum::<usize>();
        values(&self.v4)
            + values6(&self.v6)
            + values(&self.wild_v4)
            + values6(&self.wild_v6)
            + self.reverse.values().map(Vec::len).sum::<usize>()
    }
}

fn lookup<'a, T>(
    exact: &'a HashMap<Key, Vec<T>>,
    wild: &'a HashMap<Key, Vec<T>>,
    name: &[u8],
) -> &'a [T] {
    if let Some(found) = exact.get(name) {
        return found;
    }
    // One label up, never the root: `*.` matches nothing, as in CoreDNS.
    let parent = name
        .first()
        .and_then(|&len| name.get(1 + len as usize..))
        .filter(|parent| parent.len() > 1);
    parent
        .and_then(|parent| wild.get(parent))
        .map_or(&[], Vec::as_slice)
}

/// What decides which entries are kept.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules<'a> {
    /// Names outside these are left out.
    pub zones: &'a [Name],
    /// Whether addresses get their names for PTR.
    pub reverse: bool,
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Skipped {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// A parsed source: its map, the lines skipped, and how many names fell outside the zones.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub map: Map,
    pub skipped: Vec<Skipped>,
    pub outside: usize,
}

/// Reads hosts-file `lines` (one entry each, numbered from 1).
pub(super) fn parse<'t>(lines: impl IntoIterator<Item = &'t str>, rules: Rules) -> Parsed {
    let mut parsed = Parsed::default();
    for (at, line) in lines.into_iter().enumerate() {
        let line_no = at + 1;
        let text = line.split_once('#').map_or(line, |(before, _)| before);
        let mut fields = text.split_whitespace();
        let Some(addr_text) = fields.next() else {
            continue;
        };
        let skip = |reason: String| Skipped {
            line: line_no,
            reason,
        };
        let Some(addr) = parse_addr(addr_text) else {
            parsed
                .skipped
                .push(skip(format!("{addr_text:?} is not an IP address")));
            continue;
        };
        let mut names = fields.peekable();
        if names.peek().is_none() {
            parsed
                .skipped
                .push(skip(format!("{addr_text} has no name after it")));
            continue;
        }
        for text in names {
            let name = match Name::from_dotted(text) {
                Ok(name) => name,
                Err(err) => {
                    parsed
                        .skipped
                        .push(skip(format!("{text:?} is not a domain name: {err}")));
                    continue;
                }
            };
            if !rules.zones.iter().any(|zone| name.is_subdomain_of(zone)) {
                parsed.outside += 1;
                continue;
            }
            parsed.map.insert(&name, addr, rules.reverse);
        }
    }
    parsed
}

impl Map {
    fn insert(&mut self, name: &Name, addr: IpAddr, reverse: bool) {
        let wire = name.as_wire();
        if let Some(below) = wire.strip_prefix(b"\x01*") {
            match addr {
                IpAddr::V4(ip) => self.wild_v4.entry(below.into()).or_default().push(ip),
                IpAddr::V6(ip) => self.wild_v6.entry(below.into()).or_default().push(ip),
            }
            return;
        }
        match addr {
            IpAddr::V4(ip) => self.v4.entry(wire.into()).or_default().push(ip),
            IpAddr::V6(ip) => self.v6.entry(wire.into()).or_default().push(ip),
        }
        if reverse {
            self.reverse.entry(addr).or_default().push(wire.into());
        }
    }
}

/// An address as a hosts file writes it: any IPv6 zone (`%eth0`) dropped, an IPv4-mapped IPv6
/// address taken as the IPv4 address it maps.
fn parse_addr(text: &str) -> Option<IpAddr> {
    let text = text.split_once('%').map_or(text, |(addr, _zone)| addr);
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, 32 nibbles then `ip6.arpa`) stands for;
/// `None` for any other name.
pub(super) fn reverse_addr(name: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name.labels().collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if *in_addr == b"in-addr" && *arpa == b"arpa" => {
            // Through the text form: it refuses leading zeros and values above 255, as Go's
            // parser behind CoreDNS does.
            let text = [a, b, c, d]
                .map(|label| std::str::from_utf8(label).unwrap_or("-"))
                .join(".");
            text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        }
        [nibbles @ .., ip6, arpa] if nibbles.len() == 32 && *ip6 == b"ip6" && *arpa == b"arpa" => {
            let mut bits: u128 = 0;
            for label in nibbles.iter().rev() {
                let [digit] = label else { return None };
                let value = char::from(*digit).to_digit(16)?;
                bits = (bits << 4) | u128::from(value);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bits)).to_canonical())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_dotted(text).unwrap()
    }

    fn parse_text(text: &str, zones: &[Name]) -> Parsed {
        parse(
            text.lines(),
            Rules {
                zones,
                reverse: true,
            },
        )
    }

    #[test]
    fn lines_hold_comments_several_names_and_both_families() {
        let root = [Name::root()];
        let parsed = parse_text(
            "# a comment\n\
             10.0.0.1   db.internal  DB2.internal # trailing\n\
             \n\
             fd00::1%eth0 db.internal\n\
             ::ffff:10.0.0.2 mapped.internal\n\
             10.0.0.3\tdb.internal\r\n",
            &root,
        );
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let map = &parsed.map;
        let db = name("db.internal");
        assert_eq!(
            map.v4(db.as_wire()),
            [
                "10.0.0.1".parse::<Ipv4Addr>().unwrap(),
                "10.0.0.3".parse().unwrap()
            ]
        );
        assert_eq!(
            map.v6(db.as_wire()),
            ["fd00::1".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(map.v4(name("db2.internal").as_wire()).len(), 1);
        assert_eq!(
            map.v4(name("mapped.internal").as_wire()),
            ["10.0.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(map.v6(name("mapped.internal").as_wire()).is_empty());
        let names = map.names("10.0.0.1".parse().unwrap());
        assert_eq!(
            names,
            [
                name("db.internal").as_wire().into(),
                name("db2.internal").as_wire().into()
            ]
        );
    }

    #[test]
    fn bad_lines_are_skipped_with_their_line_and_others_kept() {
        let root = [Name::root()];
        let parsed = parse_text(
            "10.0.0.1 good\n300.1.1.1 bad\n10.0.0.2\nnot-an-ip name\n10.0.0.4 a..b ok\n",
            &root,
        );
        let lines: Vec<usize> = parsed.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert!(parsed.skipped[0].reason.contains("not an IP address"));
        assert!(parsed.skipped[1].reason.contains("has no name"));
        assert_eq!(parsed.map.v4(name("good").as_wire()).len(), 1);
        assert_eq!(parsed.map.v4(name("ok").as_wire()).len(), 1);
    }

    #[test]
    fn names_outside_the_zones_are_left_out() {
        let zones = [name("cluster.local")];
        let parsed = parse_text(
            "10.0.0.1 db.internal a.cluster.local\n10.0.0.2 cluster.local\n",
            &zones,
        );
        assert_eq!(parsed.outside, 1);
        assert!(parsed.map.v4(name("db.internal").as_wire()).is_empty());
        assert_eq!(parsed.map.v4(name("a.cluster.local").as_wire()).len(), 1);
        assert_eq!(parsed.map.v4(name("cluster.local").as_wire()).len(), 1);
        let names = parsed.map.names("10.0.0.1".parse().unwrap());
        assert_eq!(names.len(), 1, "no PTR for a name left out");
    }

    #[test]
    fn a_wildcard_matches_one_label_more_and_has_no_ptr() {
        let root = [Name::root()];
        let parsed = parse_text("10.0.0.9 *.example.com\n10.0.0.8 www.example.com\n", &root);
        let map = &parsed.map;
        let v4 = |text: &str| map.v4(name(text).as_wire()).to_vec();
        assert_eq!(
            v4("apps.example.com"),
            ["10.0.0.9".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            v4("www.example.com"),
            ["10.0.0.8".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(v4("example.com").is_empty());
        assert!(v4("deep.apps.example.com").is_empty());
        assert!(map.names("10.0.0.9".parse().unwrap()).is_empty());
    }

    #[test]
    fn reverse_names_give_their_addresses() {
        let addr = |text: &str| reverse_addr(&name(text));
        assert_eq!(
            addr("5.0.0.10.in-addr.arpa"),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(addr("05.0.0.10.in-addr.arpa"), None);
        assert_eq!(addr("0.0.10.in-addr.arpa"), None);
        assert_eq!(addr("256.0.0.10.in-addr.arpa"), None);
        assert_eq!(addr("db.internal"), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(addr(v6), Some("fd00::1".parse().unwrap()));
        let mapped = "5.0.0.0.0.0.a.0.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa";
        assert_eq!(addr(mapped), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(addr("1.0.ip6.arpa"), None);
    }
}
