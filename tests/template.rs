//! A zone's templates (src/template, `zones[].templates`) over real sockets, with CoreDNS's
//! `template` semantics, against an upstream that would answer every name with A and AAAA
//! records (so an answer can only pass when a template gave it): the Helm chart's rcode-only
//! AAAA template beside A lookups that still resolve and cache, records rendered from regex
//! groups, fallthrough to the next template and to the upstream versus SERVFAIL, class and type
//! mismatches going on, an NXDOMAIN with a SOA, templates answering before hosts entries, a
//! Corefile's templates translated and served, and config errors naming their field and line.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::{Authority, Forwarder, addresses, query, tcp_query, udp_query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use nodelocal_dns::nodecache::{TranslateOptions, translate};

const UPSTREAM_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const UPSTREAM_AAAA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

/// Every name under the zone has an A and an AAAA record.
const DUAL_STACK_ZONE: &str = r#"
$TTL 300
@       IN SOA ns.example. admin.example. 1 3600 600 86400 5
@       IN NS  ns.example.
ns      IN A   127.0.0.1
*       IN A   192.0.2.7
*       IN AAAA 2001:db8::7
"#;

async fn dual_stack_upstream(zones: &[&str]) -> Authority {
    let zones: Vec<(&str, &str)> = zones.iter().map(|z| (*z, DUAL_STACK_ZONE)).collect();
    Authority::start(&zones).await
}

fn zone_with_templates(upstream: std::net::SocketAddr, templates: &str) -> String {
    format!(
        "zones:\n  - name: example\n    upstreams: [\"{upstream}\"]\n    templates:\n{templates}"
    )
}

fn v6(msg: &Message) -> Vec<Ipv6Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect()
}

fn txt(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(txt.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_rcode_only_aaaa_template_empties_aaaa_while_a_resolves_and_caches_upstream() {
    let upstream = dual_stack_upstream(&["example."]).await;
    // The upstream would answer AAAA: an empty answer below can only be the template's.
    let direct = udp_query(
        upstream.addr,
        &query("www.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(v6(&direct), [UPSTREAM_AAAA]);
    let forwarder = Forwarder::start(&zone_with_templates(
        upstream.addr,
        "      - type: AAAA\n        rcode: NOERROR\n",
    ))
    .await;

    let aaaa = udp_query(
        forwarder.addr,
        &query("www.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.metadata.authoritative, "template answers carry AA");
    assert!(aaaa.answers.is_empty(), "{aaaa:?}");

    // A goes on to the upstream (whose fetch takes AAAA along into the cache entry), and is
    // then served from the cache; AAAA stays the template's either way.
    for _ in 0..2 {
        let a = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&a), [UPSTREAM_A]);
        let aaaa = tcp_query(
            forwarder.addr,
            &query("www.example.", RecordType::AAAA, None),
        )
        .await;
        assert!(aaaa.answers.is_empty(), "{aaaa:?}");
    }
    let scrape = forwarder.scrape();
    assert_eq!(
        scrape.sum(
            "coredns_dns_responses_total",
            &[("plugin", "template"), ("rcode", "NOERROR")]
        ),
        3.0
    );
    assert_eq!(
        scrape.sum("coredns_dns_responses_total", &[("plugin", "cache")]),
        1.0,
        "the second A is a cache hit"
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn records_are_rendered_from_regex_groups_and_other_names_fall_through() {
    let upstream = dual_stack_upstream(&["example."]).await;
    let forwarder = Forwarder::start(&zone_with_templates(
        upstream.addr,
        concat!(
            "      - type: A\n",
            "        match: ['^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)-(?P<c>[0-9]+)-(?P<d>[0-9]+)[.]example[.]$']\n",
            "        answer: ['{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}']\n",
            "        additional: ['info.{{ .Zone }} 30 {{ .Class }} TXT \"{{ .Type }} {{ index .Match 4 }} from {{ .Remote }}\"']\n",
            "        fallthrough: true\n",
        ),
    ))
    .await;

    let answer = udp_query(
        forwarder.addr,
        &query("IP-10-1-2-3.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(addresses(&answer), [Ipv4Addr::new(10, 1, 2, 3)]);
    assert_eq!(answer.answers[0].ttl, 60);
    assert_eq!(answer.answers[0].name.to_string(), "ip-10-1-2-3.example.");
    assert_eq!(txt(&answer.additionals), ["A 3 from 127.0.0.1"]);
    assert_eq!(answer.additionals[0].name.to_string(), "info.example.");

    // Not matched, with fallthrough: the upstream's answer.
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [UPSTREAM_A]);
    assert_eq!(
        forwarder.scrape().sum(
            "coredns_dns_responses_total",
            &[("plugin", "template"), ("rcode", "NOERROR")]
        ),
        1.0
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn without_fallthrough_an_unmatched_name_is_servfail_and_with_it_the_next_template_answers() {
    let upstream = dual_stack_upstream(&["example."]).await;
    let forwarder = Forwarder::start(&zone_with_templates(
        upstream.addr,
        concat!(
            // Only db.example., and falls through for names under tried.example.
            "      - type: A\n",
            "        match: ['^db[.]']\n",
            "        answer: ['{{ .Name }} 60 A 10.0.0.1']\n",
            "        fallthrough: [tried.example]\n",
            // The next template takes what falls through, and nothing else falls further.
            "      - type: A\n",
            "        match: ['^a[.]']\n",
            "        answer: ['{{ .Name }} 60 A 10.0.0.2']\n",
            // A rendered record that does not read: SERVFAIL.
            "      - type: TXT\n",
            "        match: ['^(?P<word>[a-z]+)[.]']\n",
            "        answer: ['{{ .Name }} 60 A {{ .Group.word }}']\n",
        ),
    ))
    .await;
    let ask = |name: &'static str, rtype| async move {
        udp_query(forwarder.addr, &query(name, rtype, None)).await
    };

    assert_eq!(
        addresses(&ask("db.example.", RecordType::A).await),
        [Ipv4Addr::new(10, 0, 0, 1)]
    );
    let answer = ask("www.example.", RecordType::A).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::ServFail,
        "no match, no fallthrough for this name: {answer:?}"
    );
    assert_eq!(
        addresses(&ask("a.tried.example.", RecordType::A).await),
        [Ipv4Addr::new(10, 0, 0, 2)],
        "fell through to the next template"
    );
    let answer = ask("b.tried.example.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    let answer = ask("www.example.", RecordType::TXT).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::ServFail,
        "`www` is no IPv4 address"
    );
    // No template is for AAAA: on to the upstream.
    assert_eq!(
        v6(&ask("www.example.", RecordType::AAAA).await),
        [UPSTREAM_AAAA]
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn class_and_type_mismatches_go_on_and_an_nxdomain_carries_its_soa() {
    let upstream = dual_stack_upstream(&["example."]).await;
    let forwarder = Forwarder::start(&zone_with_templates(
        upstream.addr,
        concat!(
            // Neither is for an IN A query, and neither falls through: were they tried, the
            // answer would be SERVFAIL.
            "      - class: CH\n        type: A\n        match: ['^nothing$']\n",
            "      - type: MX\n        match: ['^nothing$']\n",
            "      - class: ANY\n        type: ANY\n        zones: [invalid.example]\n",
            "        rcode: NXDOMAIN\n",
            "        authority: ['{{ .Zone }} 60 {{ .Class }} SOA ns.{{ .Zone }} hostmaster.{{ .Zone }} (1 60 60 60 60)']\n",
        ),
    ))
    .await;

    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [UPSTREAM_A]);
    let answer = udp_query(
        forwarder.addr,
        &query("x.invalid.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(answer.metadata.authoritative);
    assert!(answer.answers.is_empty());
    let soa: Vec<(String, u32)> = answer
        .authorities
        .iter()
        .filter_map(|r| match &r.data {
            RData::SOA(soa) => Some((soa.mname.to_string(), soa.minimum)),
            _ => None,
        })
        .collect();
    assert_eq!(soa, [("ns.invalid.example.".to_string(), 60)]);
    assert_eq!(answer.authorities[0].name.to_string(), "invalid.example.");
    assert_eq!(
        forwarder.scrape().sum(
            "coredns_dns_responses_total",
            &[("plugin", "template"), ("rcode", "NXDOMAIN")]
        ),
        1.0
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn a_corefile_with_the_charts_aaaa_template_on_every_block_is_translated_and_served() {
    let upstream = dual_stack_upstream(&["cluster.local.", "example."]).await;
    let aaaa = "    template IN AAAA {\n        rcode NOERROR\n    }\n";
    let corefile = format!(
        "cluster.local:53 {{\n    errors\n    cache 30\n{aaaa}    forward . {up}\n}}\n\
         .:53 {{\n    errors\n    cache 30\n{aaaa}    template IN A example.internal {{\n        match \"^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)-(?P<c>[0-9]+)-(?P<d>[0-9]+)[.]example[.]internal[.]$\"\n        answer \"{{{{ .Name }}}} 60 IN A {{{{ .Group.a }}}}.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}\"\n        fallthrough\n    }}\n    forward . {up}\n}}\n",
        up = upstream.addr
    );
    let translation =
        translate(&corefile, "Corefile", &TranslateOptions::default()).expect("translates");
    let mut config = translation.config;
    config.listen = vec!["127.0.0.1:0".parse().expect("address")];
    let forwarder = Forwarder::start(&config.to_yaml()).await;

    for name in ["kube-dns.kube-system.svc.cluster.local.", "www.example."] {
        let aaaa = udp_query(forwarder.addr, &query(name, RecordType::AAAA, None)).await;
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(aaaa.answers.is_empty(), "{name}: {aaaa:?}");
        let a = udp_query(forwarder.addr, &query(name, RecordType::A, None)).await;
        assert_eq!(addresses(&a), [UPSTREAM_A], "{name}");
    }
    let a = udp_query(
        forwarder.addr,
        &query("ip-10-0-0-9.example.internal.", RecordType::A, None),
    )
    .await;
    assert_eq!(addresses(&a), [Ipv4Addr::new(10, 0, 0, 9)]);
    forwarder.stop().await;
}

#[test]
fn config_errors_name_the_field_and_line() {
    let cases = [
        (
            "      - type: A\n        match: ['(']\n",
            "test.yaml:7: zones[0].templates[0].match[0]: bad regular expression",
        ),
        (
            "      - type: A\n        answer:\n          - 'x A 10.0.0.1'\n          - '{{ .Name }} A {{ .Message }}'\n",
            "test.yaml:9: zones[0].templates[0].answer[1]: unsupported template expression `{{ .Message }}`",
        ),
        (
            "      - type: A\n      - type: AAA\n",
            "test.yaml:7: zones[0].templates[1].type: unknown type `AAA`",
        ),
        (
            "      - type: A\n        rcode: NOPE\n",
            "test.yaml:7: zones[0].templates[0].rcode: unknown rcode `NOPE`",
        ),
        (
            "      - type: A\n        authority: ['x 60 IN CAA 0 issue ca.example']\n",
            "test.yaml:7: zones[0].templates[0].authority[0]: CAA records are not supported",
        ),
    ];
    common::assert_refused(&cases, |templates| {
        common::zone_config_error("example", &format!("    templates:\n{templates}"))
    });

    let cases = [
        (
            "        rcode NOERROR\n        match \"(\"\n",
            "Corefile:5: template: match[0]: bad regular expression",
        ),
        (
            "        answer \"{{ .Name }} A {{ .Meta \\\"x\\\" }}\"\n",
            "Corefile:4: template: answer[0]: unsupported template expression",
        ),
        (
            "        ederror 21\n",
            "Corefile:4: template: `ederror` is not supported",
        ),
        (
            "        rcode\n",
            "Corefile:4: template: rcode needs one CODE",
        ),
    ];
    common::assert_refused(&cases, |options| {
        common::corefile_block_error(&format!("    template IN A {{\n{options}    }}\n"))
    });
}

#[tokio::test]
async fn templates_answer_before_hosts_entries_as_in_coredns_plugin_order() {
    let upstream = dual_stack_upstream(&["example."]).await;
    let forwarder = Forwarder::start(&format!(
        "{}    hosts:\n      entries: [\"10.0.0.5 db.example web.example\"]\n      fallthrough: true\n",
        zone_with_templates(
            upstream.addr,
            "      - type: A\n        match: ['^db[.]']\n        answer: ['{{ .Name }} 60 A 10.0.0.1']\n        fallthrough: true\n",
        )
    ))
    .await;
    let ask = |name: &'static str| async move {
        addresses(&udp_query(forwarder.addr, &query(name, RecordType::A, None)).await)
    };
    assert_eq!(
        ask("db.example.").await,
        [Ipv4Addr::new(10, 0, 0, 1)],
        "the template's"
    );
    assert_eq!(
        ask("web.example.").await,
        [Ipv4Addr::new(10, 0, 0, 5)],
        "the hosts entry"
    );
    assert_eq!(ask("www.example.").await, [UPSTREAM_A], "the upstream's");
    forwarder.stop().await;
}
