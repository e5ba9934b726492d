//! A zone's hosts entries (src/hosts, `zones[].hosts`) over real sockets, with CoreDNS's `hosts`
//! semantics: inline and file entries answered with AA and the configured TTL before the
//! upstream (a real authority whose wildcard would answer every name otherwise), a file changed
//! on disk read again, unknown names falling through to the upstream or answered SERVFAIL,
//! PTR for the entries' addresses, NODATA for a held name without the type asked, and a
//! Corefile's `hosts` translated and served.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use common::{Authority, Forwarder, WILDCARD_ZONE, addresses, query, tcp_query, udp_query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use nodelocal_dns::nodecache::{TranslateOptions, translate};

/// The upstream's answer for every name under `example.` (WILDCARD_ZONE).
const UPSTREAM_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

fn zone_with_hosts(upstream: std::net::SocketAddr, hosts: &str) -> String {
    format!("zones:\n  - name: example\n    upstreams: [\"{upstream}\"]\n    hosts:\n{hosts}")
}

fn ptr_names(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(ptr) => Some(ptr.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn inline_entries_are_answered_and_other_names_fall_through_to_the_upstream() {
    let upstream = Authority::start(&[("example.", WILDCARD_ZONE)]).await;
    let forwarder = Forwarder::start(&zone_with_hosts(
        upstream.addr,
        "      entries:\n        - \"10.0.0.5 db.example  # the database\"\n        - \"10.0.0.6 db.example web.example\"\n      ttl: 60s\n      fallthrough: true\n",
    ))
    .await;

    let answer = udp_query(forwarder.addr, &query("DB.example.", RecordType::A, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative, "hosts answers carry AA");
    assert_eq!(
        addresses(&answer),
        [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)]
    );
    assert!(answer.answers.iter().all(|r| r.ttl == 60));
    let answer = tcp_query(forwarder.addr, &query("web.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(10, 0, 0, 6)]);

    // A held name with only IPv4 entries: NODATA from the entries, not the upstream's AAAA.
    let answer = udp_query(
        forwarder.addr,
        &query("db.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert!(answer.answers.is_empty(), "{answer:?}");

    // Names the entries do not hold go on to the upstream.
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [UPSTREAM_A]);

    assert_eq!(
        forwarder.scrape().sum(
            "coredns_dns_responses_total",
            &[("plugin", "hosts"), ("rcode", "NOERROR")]
        ),
        3.0
    );
    assert_eq!(
        forwarder
            .scrape()
            .sum("coredns_dns_requests_total", &[("zone", "example.")]),
        4.0
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn without_fallthrough_an_unknown_name_is_servfail_and_ptr_is_answered() {
    let upstream = Authority::start(&[("example.", WILDCARD_ZONE)]).await;
    // One section for both zones, as a Corefile block of two zones gives: PTR names come from
    // the entries of the other zone.
    let hosts = "    hosts:\n      entries: [\"10.0.0.5 db.example\", \"fd00::5 db.example\"]\n      zones: [example, in-addr.arpa]\n";
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [\"{up}\"]\n{hosts}  - name: in-addr.arpa\n    upstreams: [\"{up}\"]\n{hosts}",
        up = upstream.addr
    ))
    .await;

    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::ServFail,
        "CoreDNS's answer without fallthrough: {answer:?}"
    );
    let answer = udp_query(
        forwarder.addr,
        &query("db.example.", RecordType::AAAA, None),
    )
    .await;
    let v6: Vec<Ipv6Addr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect();
    assert_eq!(v6, ["fd00::5".parse::<Ipv6Addr>().unwrap()]);

    let answer = udp_query(
        forwarder.addr,
        &query("5.0.0.10.in-addr.arpa.", RecordType::PTR, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(ptr_names(&answer), ["db.example."]);
    assert_eq!(answer.answers[0].ttl, 3600, "the default TTL");
    forwarder.stop().await;
}

#[tokio::test]
async fn file_entries_are_answered_and_read_again_when_the_file_changes() {
    let upstream = Authority::start(&[("example.", WILDCARD_ZONE)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("hosts");
    std::fs::write(&file, "# pinned\n10.0.0.1 one.example\nbad line\n").expect("write hosts");
    let forwarder = Forwarder::start(&zone_with_hosts(
        upstream.addr,
        &format!(
            "      file: {}\n      entries: [\"10.0.0.9 inline.example\"]\n      reload: 50ms\n      fallthrough: true\n",
            file.display()
        ),
    ))
    .await;

    let ask = |name: &'static str| async move {
        addresses(&udp_query(forwarder.addr, &query(name, RecordType::A, None)).await)
    };
    assert_eq!(ask("one.example.").await, [Ipv4Addr::new(10, 0, 0, 1)]);
    assert_eq!(ask("two.example.").await, [UPSTREAM_A], "not held yet");

    replace(&file, "10.0.0.2 two.example\n10.0.0.3 one.example\n");
    let reread = common::eventually_async(|| async {
        ask("two.example.").await == [Ipv4Addr::new(10, 0, 0, 2)]
    })
    .await;
    assert!(reread, "the changed file is read again");
    assert_eq!(ask("one.example.").await, [Ipv4Addr::new(10, 0, 0, 3)]);

    // A removed file leaves the entries read before; the inline ones are always there.
    std::fs::remove_file(&file).expect("remove hosts");
    let checks = forwarder
        .scrape()
        .value("nodelocaldns_tasks", &[("kind", "hosts_reload")]);
    assert_eq!(checks, 1.0, "one task checks the file");
    assert_eq!(ask("two.example.").await, [Ipv4Addr::new(10, 0, 0, 2)]);
    assert_eq!(ask("inline.example.").await, [Ipv4Addr::new(10, 0, 0, 9)]);
    forwarder.stop().await;
}

/// Writes `text` to `path` through a rename, as editors and ConfigMap updates do.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write the new hosts file");
    std::fs::rename(&next, path).expect("rename over the hosts file");
}

#[tokio::test]
async fn a_corefile_with_hosts_is_translated_and_served() {
    let upstream = Authority::start(&[("example.", WILDCARD_ZONE)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("customhosts");
    std::fs::write(&file, "10.0.0.7 custom.test\n").expect("write hosts");
    let corefile = format!(
        "example:53 {{\n    hosts {{\n        10.0.0.5 db.example\n        fallthrough\n    }}\n    forward . {up}\n}}\n.:53 {{\n    hosts {file} {{\n        ttl 60\n        reload 10s\n        fallthrough\n    }}\n    forward . {up}\n}}\n",
        up = upstream.addr,
        file = file.display()
    );
    let translation =
        translate(&corefile, "Corefile", &TranslateOptions::default()).expect("translates");
    let mut config = translation.config;
    config.listen = vec!["127.0.0.1:0".parse().expect("address")];
    let forwarder = Forwarder::start(&config.to_yaml()).await;

    let answer = udp_query(forwarder.addr, &query("db.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(10, 0, 0, 5)]);
    assert_eq!(answer.answers[0].ttl, 3600);
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [UPSTREAM_A], "fallthrough");
    let answer = udp_query(forwarder.addr, &query("custom.test.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(10, 0, 0, 7)]);
    assert_eq!(answer.answers[0].ttl, 60);
    forwarder.stop().await;
}
