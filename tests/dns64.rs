//! DNS64 (src/dns64, `zones[].dns64`) over real sockets, with CoreDNS's `dns64` semantics: a
//! server listening on 127.0.0.1 and ::1, an in-process upstream whose names have only an A,
//! both, or neither (NXDOMAIN, NODATA), and clients of both families. AAAA answers without
//! AAAA records are synthesized from the A answer fetched with them (RFC 6147), each address
//! embedded as RFC 6052 shows, with the TTL capped by the AAAA denial's SOA; `allow_ipv4` and
//! `translate_all`; a cached answer like the first, and a stale one; the Corefile directive
//! and its errors.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Forwarder, Programmable, a_with, aaaa, cname, name, query, soa, udp_query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use nodelocal_dns::config::dns64::Dns64Config;
use nodelocal_dns::nodecache::{TranslateOptions, translate};

/// The A of `v4only.` and `alias.` names (RFC 6052's example address).
const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 33);
/// TTLs the upstream gives: the A records', and the SOA's of a negative answer (lower).
const A_TTL: u32 = 40;
const SOA_TTL: u32 = 15;

/// What the upstream answers, by the first label of the name (under any zone):
/// `v4only` an A only (its AAAA is NODATA with an SOA); `both` an A and an AAAA; `alias` a
/// CNAME to `v4only` of its zone; `nodata` neither (NODATA); `missing` NXDOMAIN; `nosoa` an A
/// with TTL 900 and an AAAA answer that is empty without an SOA.
fn behaviour(owner: &Name, rtype: RecordType) -> Option<(ResponseCode, Vec<Record>, Vec<Record>)> {
    let text = owner.to_string().to_lowercase();
    let (label, zone) = text.split_once('.').expect("a name under a zone");
    let denial = vec![soa(zone, SOA_TTL, SOA_TTL)];
    let a = |owner: &str, ttl| a_with(owner, ttl, V4);
    let answer = match (label, rtype) {
        ("v4only", RecordType::A) => (ResponseCode::NoError, vec![a(&text, A_TTL)], vec![]),
        ("v4only", _) => (ResponseCode::NoError, vec![], denial),
        ("both", RecordType::A) => (ResponseCode::NoError, vec![a(&text, A_TTL)], vec![]),
        ("both", _) => (ResponseCode::NoError, vec![aaaa(&text, A_TTL)], vec![]),
        ("alias", rtype) => {
            let target = format!("v4only.{zone}");
            let mut records = vec![cname(&text, &target, 50)];
            let authority = if rtype == RecordType::A {
                records.push(a(&target, A_TTL));
                vec![]
            } else {
                denial
            };
            (ResponseCode::NoError, records, authority)
        }
        ("nodata", _) => (ResponseCode::NoError, vec![], denial),
        ("missing", _) => (ResponseCode::NXDomain, vec![], denial),
        ("nosoa", RecordType::A) => (ResponseCode::NoError, vec![a(&text, 900)], vec![]),
        ("nosoa", _) => (ResponseCode::NoError, vec![], vec![]),
        _ => return None,
    };
    Some(answer)
}

async fn upstream() -> Programmable {
    Programmable::start(Duration::ZERO, Arc::new(behaviour)).await
}

/// A forwarder on 127.0.0.1 and ::1 with one zone, `example`, forwarded to `upstream`, with
/// the zone settings `zone` (YAML lines at the zone's indentation).
async fn forwarder(upstream: SocketAddr, zone: &str) -> Forwarder {
    Forwarder::start(&format!(
        "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\nzones:\n  - name: example\n    upstreams: [\"{upstream}\"]\n{zone}"
    ))
    .await
}

/// Cached with TTL caps above the upstream's, so the cache does not lower the TTLs compared.
const CACHED: &str = "    cache:\n      success_ttl: 300s\n      denial_ttl: 300s\n";

/// The forwarder's listen address of the family of `client`.
fn listener_for(forwarder: &Forwarder, client: &str) -> SocketAddr {
    let v6 = client.contains(':');
    *forwarder
        .addrs
        .iter()
        .find(|a| a.is_ipv6() == v6)
        .expect("a listener of each family")
}

/// Asks `name`/`rtype` over UDP from a socket bound to `client` (`127.0.0.1` or `::1`).
async fn ask_from(forwarder: &Forwarder, client: &str, name: &str, rtype: RecordType) -> Message {
    let msg = query(name, rtype, Some(1232));
    common::udp_query_from(client, listener_for(forwarder, client), &msg).await
}

fn v6_addresses(msg: &Message) -> Vec<Ipv6Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect()
}

fn well_known(v4: Ipv4Addr) -> Ipv6Addr {
    let [a, b, c, d] = v4.octets();
    Ipv6Addr::new(
        0x64,
        0xff9b,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    )
}

fn translated(forwarder: &Forwarder) -> f64 {
    forwarder
        .scrape()
        .sum("coredns_dns64_requests_translated_total", &[])
}

#[tokio::test]
async fn ipv6_clients_get_aaaa_made_from_the_a_and_ipv4_clients_the_real_answer() {
    let upstream = upstream().await;
    let forwarder = forwarder(upstream.addr, &format!("{CACHED}    dns64: {{}}\n")).await;

    let answer = ask_from(&forwarder, "::1", "v4only.example.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(v6_addresses(&answer), [well_known(V4)]);
    assert!(!answer.metadata.authoritative);
    assert!(
        answer.answers.iter().all(|r| r.ttl <= SOA_TTL),
        "{answer:?}"
    );

    // A name with an AAAA keeps it; the CNAME chain of an alias stays in front of the
    // synthesized record of its target.
    let answer = ask_from(&forwarder, "::1", "both.example.", RecordType::AAAA).await;
    assert_eq!(
        v6_addresses(&answer),
        ["2001:db8::7".parse::<Ipv6Addr>().expect("address")]
    );
    let answer = ask_from(&forwarder, "::1", "alias.example.", RecordType::AAAA).await;
    assert_eq!(answer.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(answer.answers[1].name, name("v4only.example."));
    assert_eq!(v6_addresses(&answer), [well_known(V4)]);

    // Neither: the A answer's empty one, with its SOA. A name error stays one.
    let answer = ask_from(&forwarder, "::1", "nodata.example.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());
    assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
    let answer = ask_from(&forwarder, "::1", "missing.example.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(translated(&forwarder), 3.0, "v4only, alias, nodata");

    // An IPv4 client gets the upstream's answer; A queries are never touched.
    let answer = ask_from(&forwarder, "127.0.0.1", "v4only.example.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty(), "{answer:?}");
    let answer = ask_from(&forwarder, "::1", "v4only.example.", RecordType::A).await;
    assert_eq!(common::addresses(&answer), [V4]);
    assert_eq!(translated(&forwarder), 3.0);

    // Each name was fetched once, as the cache's A and AAAA pair: no A asked on the side.
    assert_eq!(upstream.count(RecordType::A), 5);
    assert_eq!(upstream.count(RecordType::AAAA), 5);
    forwarder.stop().await;
}

#[tokio::test]
async fn allow_ipv4_translates_for_ipv4_clients_too() {
    let upstream = upstream().await;
    let forwarder = forwarder(
        upstream.addr,
        &format!("{CACHED}    dns64:\n      allow_ipv4: true\n"),
    )
    .await;
    for client in ["127.0.0.1", "::1"] {
        let answer = ask_from(&forwarder, client, "v4only.example.", RecordType::AAAA).await;
        assert_eq!(v6_addresses(&answer), [well_known(V4)], "from {client}");
    }
    assert_eq!(translated(&forwarder), 2.0);
    forwarder.stop().await;
}

/// RFC 6052 section 2.4's table: 192.0.2.33 embedded under each prefix length, one zone each.
#[tokio::test]
async fn every_prefix_length_embeds_the_address_as_rfc_6052_shows() {
    let upstream = upstream().await;
    let examples = [
        ("p32", "2001:db8::/32", "2001:db8:c000:221::"),
        ("p40", "2001:db8:100::/40", "2001:db8:1c0:2:21::"),
        ("p48", "2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
        ("p56", "2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
        (
            "p64",
            "2001:db8:122:344::/64",
            "2001:db8:122:344:c0:2:2100:0",
        ),
        (
            "p96",
            "2001:db8:122:344::/96",
            "2001:db8:122:344::192.0.2.33",
        ),
    ];
    let zones: String = examples
        .iter()
        .map(|(zone, prefix, _)| {
            format!(
                "  - name: {zone}\n    upstreams: [\"{}\"]\n    dns64:\n      prefix: \"{prefix}\"\n",
                upstream.addr
            )
        })
        .collect();
    let forwarder = Forwarder::start(&format!(
        "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\nzones:\n{zones}"
    ))
    .await;
    for (zone, prefix, embedded) in examples {
        let answer = ask_from(
            &forwarder,
            "::1",
            &format!("v4only.{zone}."),
            RecordType::AAAA,
        )
        .await;
        let want: Ipv6Addr = embedded.parse().expect("address");
        assert_eq!(v6_addresses(&answer), [want], "{prefix}");
    }
    forwarder.stop().await;
}

#[tokio::test]
async fn a_cached_answer_is_the_first_apart_from_ttls() {
    let upstream = upstream().await;
    let forwarder = forwarder(upstream.addr, &format!("{CACHED}    dns64: {{}}\n")).await;
    for name in ["v4only.example.", "alias.example.", "nodata.example."] {
        let first = ask_from(&forwarder, "::1", name, RecordType::AAAA).await;
        let second = ask_from(&forwarder, "::1", name, RecordType::AAAA).await;
        let comparable = |msg: &Message| {
            let mut msg = msg.clone();
            msg.metadata.id = 0;
            for record in msg.answers.iter_mut().chain(msg.authorities.iter_mut()) {
                record.ttl = 0;
            }
            msg
        };
        assert_eq!(comparable(&second), comparable(&first), "{name}");
    }
    assert_eq!(translated(&forwarder), 6.0);
    // The second answers came from the cache: each pair was fetched once.
    assert_eq!(upstream.count(RecordType::A), 3);
    assert_eq!(upstream.count(RecordType::AAAA), 3);
    forwarder.stop().await;
}

#[tokio::test]
async fn translate_all_replaces_aaaa_records_but_not_a_name_error() {
    let upstream = upstream().await;
    let forwarder = forwarder(
        upstream.addr,
        &format!("{CACHED}    dns64:\n      translate_all: true\n"),
    )
    .await;
    let answer = ask_from(&forwarder, "::1", "both.example.", RecordType::AAAA).await;
    assert_eq!(v6_addresses(&answer), [well_known(V4)]);
    let answer = ask_from(&forwarder, "::1", "missing.example.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(translated(&forwarder), 1.0);
    forwarder.stop().await;
}

/// Without a cache nothing fetched the A with the AAAA: it is asked when the AAAA answer is
/// to be replaced, and only then. The TTLs are the upstream's, so they show RFC 6147 5.1.7
/// exactly: the lower of the A's and the AAAA denial's SOA, 600 s without an SOA.
#[tokio::test]
async fn an_uncached_zone_asks_for_the_a_and_caps_ttls_by_the_soa() {
    let upstream = upstream().await;
    let forwarder = forwarder(
        upstream.addr,
        "    cache:\n      enabled: false\n    dns64: {}\n",
    )
    .await;
    let answer = ask_from(&forwarder, "::1", "v4only.example.", RecordType::AAAA).await;
    assert_eq!(v6_addresses(&answer), [well_known(V4)]);
    assert_eq!(answer.answers[0].ttl, A_TTL.min(SOA_TTL));
    assert_eq!(upstream.count(RecordType::A), 1);
    let answer = ask_from(&forwarder, "::1", "nosoa.example.", RecordType::AAAA).await;
    assert_eq!(answer.answers[0].ttl, 600);
    assert_eq!(upstream.count(RecordType::A), 2);
    let answer = ask_from(&forwarder, "::1", "both.example.", RecordType::AAAA).await;
    assert_eq!(v6_addresses(&answer).len(), 1);
    let answer = ask_from(&forwarder, "::1", "missing.example.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.count(RecordType::A), 2, "no A for kept answers");
    forwarder.stop().await;
}

#[tokio::test]
async fn a_corefile_dns64_is_translated_and_served() {
    let upstream = upstream().await;
    let corefile = format!(
        ".:53 {{\n    errors\n    cache 30\n    dns64 {{\n        prefix 2001:db8:122:344::/64\n        allow_ipv4\n    }}\n    forward . {}\n}}\n",
        upstream.addr
    );
    let translation =
        translate(&corefile, "Corefile", &TranslateOptions::default()).expect("translates");
    assert_eq!(
        translation.config.zones[0].dns64,
        Some(Dns64Config {
            prefix: "2001:db8:122:344::/64".into(),
            translate_all: false,
            allow_ipv4: true,
        })
    );
    let mut config = translation.config;
    config.listen = vec!["127.0.0.1:0".parse().expect("address")];
    let forwarder = Forwarder::start(&config.to_yaml()).await;
    let answer = udp_query(
        forwarder.addr,
        &query("v4only.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(
        v6_addresses(&answer),
        ["2001:db8:122:344:c0:2:2100:0"
            .parse::<Ipv6Addr>()
            .expect("address")]
    );
    forwarder.stop().await;
}

#[test]
fn corefile_and_config_errors_name_the_line() {
    let cases = [
        (
            "    dns64 10.0.0.0/96\n",
            "Corefile:3: dns64: \"10.0.0.0/96\": \"10.0.0.0\" is not an IPv6 address",
        ),
        (
            "    dns64 64:ff9b::/72\n",
            "Corefile:3: dns64: \"64:ff9b::/72\": prefix length 72 is not one RFC 6052 defines",
        ),
        (
            "    dns64 64:ff9b::/96 64:ff9b::/96\n",
            "Corefile:3: dns64 takes at most one PREFIX",
        ),
        (
            "    dns64 {\n        translate_al\n    }\n",
            "Corefile:4: dns64: unknown property `translate_al`",
        ),
        (
            "    dns64 {\n        prefix\n    }\n",
            "Corefile:4: dns64: prefix needs one PREFIX",
        ),
        (
            "    dns64 {\n        allow_ipv4 yes\n    }\n",
            "Corefile:4: dns64: allow_ipv4 takes no arguments",
        ),
        (
            "    dns64 64:ff9b::/96 {\n        prefix 2001:db8::/32\n    }\n",
            "Corefile:4: dns64: a second prefix (the first is on line 3)",
        ),
        (
            "    dns64\n    dns64\n",
            "Corefile:4: a second dns64 in one server block",
        ),
        (
            "    hosts {\n        10.0.0.1 db.example\n    }\n    dns64\n",
            "Corefile:6: dns64 with hosts or template in one server block is not supported",
        ),
    ];
    common::assert_refused(&cases, common::corefile_block_error);

    let cases = [
        (
            "    dns64:\n      prefix: 64:ff9b::/100\n",
            "test.yaml:6: zones[0].dns64.prefix: \"64:ff9b::/100\": prefix length 100",
        ),
        (
            "    dns64:\n      prefix: 192.0.2.0/24\n",
            "test.yaml:6: zones[0].dns64.prefix: \"192.0.2.0/24\": \"192.0.2.0\" is not an IPv6 address",
        ),
        (
            "    dns64:\n      translate: true\n",
            "test.yaml:6: zones[0].dns64.translate: unknown field `translate`",
        ),
        (
            "    dns64: {}\n    hosts:\n      entries: [\"10.0.0.1 db.example\"]\n",
            "test.yaml:5: zones[0].dns64: cannot be combined with hosts or templates",
        ),
    ];
    common::assert_refused(&cases, |section| {
        common::zone_config_error("example", section)
    });
}

/// An expired pair served stale (RFC 8767) because the upstream went silent is translated too:
/// the synthesized record from the stale A half, with the stale TTL.
#[tokio::test]
async fn a_stale_entry_is_translated_from_its_a_half() {
    let up = Arc::new(AtomicBool::new(true));
    let state = up.clone();
    let upstream = Programmable::start(
        Duration::ZERO,
        Arc::new(move |owner: &Name, rtype| {
            if !state.load(Ordering::SeqCst) {
                return None;
            }
            let owner = owner.to_string();
            Some(match rtype {
                RecordType::A => (ResponseCode::NoError, vec![a_with(&owner, 1, V4)], vec![]),
                _ => (ResponseCode::NoError, vec![], vec![soa("example.", 1, 1)]),
            })
        }),
    )
    .await;
    let forwarder = forwarder(upstream.addr, "    dns64: {}\n").await;
    let fresh = ask_from(&forwarder, "::1", "v4only.example.", RecordType::AAAA).await;
    assert_eq!(v6_addresses(&fresh), [well_known(V4)]);
    up.store(false, Ordering::SeqCst);
    // Past the entry's one second, inside its serve-stale window.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let stale = ask_from(&forwarder, "::1", "v4only.example.", RecordType::AAAA).await;
    assert_eq!(stale.metadata.response_code, ResponseCode::NoError);
    assert_eq!(v6_addresses(&stale), [well_known(V4)]);
    assert_eq!(stale.answers[0].ttl, 30, "stale answers carry TTL 30");
    assert_eq!(
        forwarder
            .scrape()
            .sum("coredns_cache_served_stale_total", &[]),
        1.0
    );
    assert_eq!(translated(&forwarder), 2.0);
    forwarder.stop().await;
}
