//! A zone's rewrite rules (src/rewrite, `zones[].rewrite`) over real sockets, with CoreDNS's
//! `rewrite name` semantics, against an upstream that knows only the rewritten names (it
//! refuses the names clients ask, so an address can only come through a rewrite): each match
//! (exact, prefix, suffix, substring, regex) asked over UDP and TCP for A and AAAA, the answer
//! under the client's question and, with `answer auto`, its owner names and CNAME targets, the
//! cached second answer the same, an NXDOMAIN under the client's question, SERVFAIL for a
//! rewritten name that is not a name, `stop` against `continue`, a Corefile's rules translated and
//! served, and config and Corefile errors naming their field and line.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::{Authority, Forwarder, addresses, mixed_case, query, tcp_query, udp_query, udp_raw};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use nodelocal_dns::nodecache::{TranslateOptions, translate};

const DB_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const DB_AAAA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const OTHER_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);

/// The names the rules rewrite to: `db` with both families, `web` a CNAME to it.
const CLUSTER_ZONE: &str = r#"
$TTL 300
@          IN SOA ns.svc.cluster.local. admin.svc.cluster.local. 1 3600 600 86400 5
@          IN NS  ns.svc.cluster.local.
ns         IN A   127.0.0.1
db.default IN A   192.0.2.10
db.default IN AAAA 2001:db8::10
web.default IN CNAME db.default.svc.cluster.local.
"#;

/// A second zone, for a rule chain that stops half way.
const HALFWAY_ZONE: &str = r#"
$TTL 300
@   IN SOA ns.halfway.test. admin.halfway.test. 1 3600 600 86400 5
@   IN NS  ns.halfway.test.
ns  IN A   127.0.0.1
db  IN A   192.0.2.20
"#;

async fn upstream() -> Authority {
    Authority::start(&[
        ("svc.cluster.local.", CLUSTER_ZONE),
        ("halfway.test.", HALFWAY_ZONE),
    ])
    .await
}

/// The root zone, cached, forwarded to `upstream` with `rules` (YAML list items).
fn zone_with_rules(upstream: std::net::SocketAddr, rules: &str) -> String {
    format!("zones:\n  - name: .\n    upstreams: [\"{upstream}\"]\n    rewrite:\n{rules}")
}

fn question_name(msg: &Message) -> String {
    msg.queries[0].name().to_string()
}

fn owners(msg: &Message) -> Vec<String> {
    msg.answers.iter().map(|r| r.name.to_string()).collect()
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

fn cname_targets(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(cname) => Some(cname.0.to_string()),
            _ => None,
        })
        .collect()
}

/// What a client compares between two answers: rcode, question and records without TTLs
/// (a cached answer counts its TTLs down).
fn shape(msg: &Message) -> (ResponseCode, String, Vec<(String, String)>) {
    let records = msg
        .answers
        .iter()
        .map(|r| (r.name.to_string(), r.data.to_string()))
        .collect();
    (msg.metadata.response_code, question_name(msg), records)
}

fn cache_hits(forwarder: &Forwarder) -> f64 {
    forwarder
        .scrape()
        .sum("coredns_dns_responses_total", &[("plugin", "cache")])
}

#[tokio::test]
async fn the_upstream_only_knows_the_rewritten_names() {
    let upstream = upstream().await;
    let direct = udp_query(
        upstream.addr,
        &query("db.corp.example.", RecordType::A, None),
    )
    .await;
    assert!(addresses(&direct).is_empty(), "{direct:?}");
    let rewritten = udp_query(
        upstream.addr,
        &query("db.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    assert_eq!(addresses(&rewritten), [DB_A]);
}

#[tokio::test]
async fn a_suffix_rule_with_answer_auto_answers_a_and_aaaa_under_the_clients_names() {
    let upstream = upstream().await;
    let forwarder = Forwarder::start(&zone_with_rules(
        upstream.addr,
        concat!(
            "      - match: suffix\n",
            "        from: .corp.example.\n",
            "        to: .default.svc.cluster.local.\n",
            "        answer: [{type: auto}]\n",
        ),
    ))
    .await;
    let name = "db.corp.example.";
    let mut first = Vec::new();
    for round in 0..2 {
        let a = udp_query(forwarder.addr, &query(name, RecordType::A, None)).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{a:?}");
        assert_eq!(addresses(&a), [DB_A]);
        assert_eq!(question_name(&a), name);
        assert_eq!(owners(&a), [name]);
        let aaaa = tcp_query(forwarder.addr, &query(name, RecordType::AAAA, None)).await;
        assert_eq!(v6(&aaaa), [DB_AAAA]);
        assert_eq!(question_name(&aaaa), name);
        assert_eq!(owners(&aaaa), [name]);
        if round == 0 {
            first = vec![shape(&a), shape(&aaaa)];
        } else {
            assert_eq!(vec![shape(&a), shape(&aaaa)], first, "the cached answers");
        }
    }
    // The A fetch took AAAA along (a coherent pair): the three later answers are hits.
    assert_eq!(cache_hits(&forwarder), 3.0);

    // A CNAME's owner and target are reverted; so is the target's own record.
    let web = udp_query(
        forwarder.addr,
        &query("web.corp.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(question_name(&web), "web.corp.example.");
    assert_eq!(owners(&web), ["web.corp.example.", "db.corp.example."]);
    assert_eq!(cname_targets(&web), ["db.corp.example."]);
    assert_eq!(addresses(&web), [DB_A]);

    // A name the upstream does not have: its NXDOMAIN (with the zone's SOA) is the client's too.
    let missing = udp_query(
        forwarder.addr,
        &query("nope.corp.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(question_name(&missing), "nope.corp.example.");
    assert_eq!(
        missing.authorities[0].name.to_string(),
        "svc.cluster.local."
    );

    // A client's 0x20 letter case comes back in the question, byte for byte.
    let asked = mixed_case(&query(name, RecordType::A, None));
    let answer = udp_raw(forwarder.addr, &asked, common::CLIENT_TIMEOUT)
        .await
        .expect("an answer");
    let question_end = 12 + name.len() + 1 + 4;
    assert_eq!(answer[12..question_end], asked[12..question_end]);
    forwarder.stop().await;
}

#[tokio::test]
async fn exact_rules_always_revert_and_regex_rules_fill_in_their_groups() {
    let upstream = upstream().await;
    let forwarder = Forwarder::start(&zone_with_rules(
        upstream.addr,
        concat!(
            "      - match: exact\n",
            "        from: foo.example.com\n",
            "        to: db.default.svc.cluster.local\n",
            "      - match: regex\n",
            "        from: '^(.*)\\.alias\\.example\\.$'\n",
            "        to: '{1}.default.svc.cluster.local.'\n",
            "        answer: [{type: auto}]\n",
        ),
    ))
    .await;
    for (name, proto_tcp) in [("foo.example.com.", false), ("web.alias.example.", true)] {
        let ask = query(name, RecordType::A, None);
        let answer = if proto_tcp {
            tcp_query(forwarder.addr, &ask).await
        } else {
            udp_query(forwarder.addr, &ask).await
        };
        assert_eq!(addresses(&answer), [DB_A], "{name}");
        assert_eq!(question_name(&answer), name);
        assert_eq!(owners(&answer)[0], name);
    }
    let aaaa = udp_query(
        forwarder.addr,
        &query("foo.example.com.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(v6(&aaaa), [DB_AAAA]);
    assert_eq!(owners(&aaaa), ["foo.example.com."]);
    // Exact means the whole name: a name below it is not rewritten.
    let below = udp_query(
        forwarder.addr,
        &query("x.foo.example.com.", RecordType::A, None),
    )
    .await;
    assert!(addresses(&below).is_empty(), "{below:?}");
    forwarder.stop().await;
}

#[tokio::test]
async fn prefix_and_substring_rules_restore_the_question_and_revert_only_with_answer_auto() {
    let upstream = upstream().await;
    let forwarder = Forwarder::start(&zone_with_rules(
        upstream.addr,
        concat!(
            "      - match: prefix\n",
            "        from: old\n",
            "        to: db\n",
            "        answer: [{type: auto}]\n",
            "      - match: substring\n",
            "        from: corp.example\n",
            "        to: default.svc.cluster.local\n",
        ),
    ))
    .await;
    let prefixed = udp_query(
        forwarder.addr,
        &query("old.default.svc.cluster.local.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(v6(&prefixed), [DB_AAAA]);
    assert_eq!(question_name(&prefixed), "old.default.svc.cluster.local.");
    assert_eq!(owners(&prefixed), ["old.default.svc.cluster.local."]);

    // Without `answer`, CoreDNS restores the question only: the records keep the upstream's
    // names.
    let substring = tcp_query(
        forwarder.addr,
        &query("db.corp.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(addresses(&substring), [DB_A]);
    assert_eq!(question_name(&substring), "db.corp.example.");
    assert_eq!(owners(&substring), ["db.default.svc.cluster.local."]);
    forwarder.stop().await;
}

#[tokio::test]
async fn a_rewritten_name_that_is_not_a_valid_name_is_servfail() {
    let upstream = upstream().await;
    let forwarder = Forwarder::start(&zone_with_rules(
        upstream.addr,
        "      - match: regex\n        from: '^(.*)$'\n        to: '{1}{1}{1}{1}'\n",
    ))
    .await;
    // Four times a 70-byte name: over the 255 bytes a name may take.
    let name = format!("{}.example.", "a".repeat(60));
    let answer = udp_query(forwarder.addr, &query(&name, RecordType::A, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(question_name(&answer), name);
    forwarder.stop().await;
}

#[tokio::test]
async fn stop_ends_the_rules_and_continue_rewrites_the_rewritten_name_again() {
    let upstream = upstream().await;
    let rules = |mode: &str| {
        format!(
            "      - match: suffix\n        from: .a.example.\n        to: .halfway.test.\n        mode: {mode}\n        answer: [{{type: auto}}]\n\
             \x20     - match: suffix\n        from: .halfway.test.\n        to: .default.svc.cluster.local.\n        answer: [{{type: auto}}]\n"
        )
    };
    let stop = Forwarder::start(&zone_with_rules(upstream.addr, &rules("stop"))).await;
    let answer = udp_query(stop.addr, &query("db.a.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [OTHER_A], "the first rule's name only");
    assert_eq!(owners(&answer), ["db.a.example."]);
    stop.stop().await;

    let chained = Forwarder::start(&zone_with_rules(upstream.addr, &rules("continue"))).await;
    let answer = udp_query(chained.addr, &query("db.a.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [DB_A], "both rules");
    // Reverted by the second rule, then the first: the client's name again.
    assert_eq!(question_name(&answer), "db.a.example.");
    assert_eq!(owners(&answer), ["db.a.example."]);
    chained.stop().await;
}

#[tokio::test]
async fn a_corefile_with_rewrite_lines_and_a_block_is_translated_and_served() {
    let upstream = upstream().await;
    let corefile = format!(
        ".:53 {{\n    errors\n    cache 30\n    \
         rewrite name suffix .corp.example. .default.svc.cluster.local. answer auto\n    \
         rewrite stop {{\n        name regex (.*)\\.alias\\.example\\. {{1}}.default.svc.cluster.local.\n        \
         answer name (.*)\\.default\\.svc\\.cluster\\.local\\. {{1}}.alias.example.\n        \
         answer value (.*)\\.default\\.svc\\.cluster\\.local\\. {{1}}.alias.example.\n    }}\n    \
         forward . {up}\n}}\n",
        up = upstream.addr
    );
    let translation =
        translate(&corefile, "Corefile", &TranslateOptions::default()).expect("translates");
    let mut config = translation.config;
    config.listen = vec!["127.0.0.1:0".parse().expect("address")];
    let forwarder = Forwarder::start(&config.to_yaml()).await;
    let suffixed = udp_query(
        forwarder.addr,
        &query("db.corp.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(v6(&suffixed), [DB_AAAA]);
    assert_eq!(owners(&suffixed), ["db.corp.example."]);
    let aliased = tcp_query(
        forwarder.addr,
        &query("web.alias.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(question_name(&aliased), "web.alias.example.");
    assert_eq!(
        owners(&aliased),
        ["web.alias.example.", "db.alias.example."]
    );
    assert_eq!(cname_targets(&aliased), ["db.alias.example."]);
    assert_eq!(addresses(&aliased), [DB_A]);
    forwarder.stop().await;
}

#[test]
fn config_errors_name_the_field_and_line() {
    let cases = [
        (
            "      - match: regex\n        from: '('\n        to: x\n",
            "test.yaml:7: zones[0].rewrite[0].from: bad regular expression",
        ),
        (
            "      - match: regex\n        from: '(a)'\n        to: '{1}{2}'\n",
            "test.yaml:8: zones[0].rewrite[0].to: the replacement",
        ),
        (
            "      - match: exact\n        from: a\n        to: b\n      - match: fuzzy\n        from: a\n        to: b\n",
            "test.yaml:9: zones[0].rewrite[1].match: unknown variant `fuzzy`",
        ),
        (
            "      - match: exact\n        from: a\n        to: b\n        answer: [{type: auto}, {type: name, from: x, to: y}]\n",
            "test.yaml:9: zones[0].rewrite[0].answer: auto cannot be combined",
        ),
    ];
    common::assert_refused(&cases, |rules| {
        common::zone_config_error(".", &format!("    rewrite:\n{rules}"))
    });

    let cases = [
        (
            "    rewrite name regex ( x.\n",
            "Corefile:3: rewrite: from: bad regular expression",
        ),
        (
            "    rewrite stop {\n        name regex (.*)\\.a\\. {1}.b.\n        answer name [ x.\n    }\n",
            "Corefile:5: rewrite: answer[0].from: bad regular expression",
        ),
        (
            "    rewrite continue type A AAAA\n",
            "Corefile:3: rewrite type is not supported",
        ),
        (
            "    rewrite stop {\n        naem exact a. b.\n    }\n",
            "Corefile:4: rewrite: unknown field `naem`",
        ),
        (
            "    rewrite name fuzzy a. b.\n",
            "Corefile:3: rewrite name: unknown match `fuzzy`",
        ),
        (
            "    rewrite name suffix .a. .b. auto\n",
            "Corefile:3: rewrite name: `auto` after FROM TO",
        ),
        (
            "    rewrite name suffix .a. .b. answer name x\n",
            "Corefile:3: rewrite: answer name needs FROM and TO",
        ),
    ];
    common::assert_refused(&cases, common::corefile_block_error);
}
