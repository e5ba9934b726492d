//! The HTTP endpoints over real sockets: `/health`, `/ready` as its conditions change,
//! `/metrics` (strictly parsed as Prometheus text format, counters checked against a scripted
//! set of queries) and the `/debug/*` endpoints.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

use common::{Exposition, Forwarder, query, udp_query};
use hickory_proto::rr::RecordType;

/// Generous bound for state changes driven by timers (health probes every 100 ms here).
const SETTLE: Duration = Duration::from_secs(10);

/// A UDP upstream that answers (an empty NOERROR echo of the question) only while switched
/// on, and ignores queries otherwise: an upstream that goes down and comes back on one port.
struct Switchable {
    addr: SocketAddr,
    answering: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Switchable {
    async fn start(answering: bool) -> Switchable {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = socket.local_addr().expect("bound");
        let flag = Arc::new(AtomicBool::new(answering));
        let on = flag.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if !on.load(Ordering::SeqCst) || len < 12 {
                    continue;
                }
                let mut answer = buf[..len].to_vec();
                answer[2] |= 0x80; // QR
                answer[3] = 0x80; // RA, NOERROR
                let _ = socket.send_to(&answer, from).await;
            }
        });
        Switchable {
            addr,
            answering: flag,
            task,
        }
    }

    fn set(&self, answering: bool) {
        self.answering.store(answering, Ordering::SeqCst);
    }
}

impl Drop for Switchable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `/ready` until it returns `status`, or panics after [`SETTLE`].
async fn wait_ready_status(forwarder: &Forwarder, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (got, body) = forwarder.get("/ready").await;
        if got == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready stayed {got} ({body:?}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_is_ok_and_ready_follows_upstream_health() {
    let upstream = Switchable::start(false).await;
    let forwarder = Forwarder::start(&format!(
        "metrics:\n  listen: 127.0.0.1:0\nzones:\n  - name: .\n    upstreams: [\"{}\"]\n    timeout: 200ms\n    deadline: 300ms\n    max_fails: 1\n    health_check: 100ms\n    cache:\n      enabled: false\n",
        upstream.addr
    ))
    .await;
    assert_eq!(forwarder.get("/health").await, (200, "OK".to_string()));
    // Upstreams count as healthy until they fail.
    assert_eq!(forwarder.get("/ready").await.0, 200);

    // A query that times out takes the only upstream down (max_fails 1).
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(
        answer.metadata.response_code,
        hickory_proto::op::ResponseCode::ServFail
    );
    let body = wait_ready_status(&forwarder, 503).await;
    assert!(
        body.contains(&format!(
            "zone .: no healthy upstream ({} skipped after max_fails)",
            upstream.addr
        )),
        "{body}"
    );
    assert_eq!(
        forwarder.get("/health").await.0,
        200,
        "liveness does not depend on upstreams"
    );

    // It answers again: the health probe brings it back, and with it readiness.
    upstream.set(true);
    assert_eq!(wait_ready_status(&forwarder, 200).await, "OK\n");

    let (status, _) = forwarder.get("/nonexistent").await;
    assert_eq!(status, 404);
    forwarder.stop().await;
}

#[tokio::test]
async fn ready_waits_for_every_condition() {
    let upstream = Switchable::start(true).await;
    let config = nodelocal_dns::config::Config::from_yaml(
        &format!(
            "listen: [\"127.0.0.1:0\"]\nmetrics:\n  listen: 127.0.0.1:0\nzones:\n  - name: .\n    upstreams: [\"{}\"]\n",
            upstream.addr
        ),
        "test",
    )
    .expect("valid");
    let metrics = Arc::new(nodelocal_dns::observe::Metrics::new());
    let responder = Arc::new(nodelocal_dns::responder::Responder::new(
        &config,
        metrics.clone(),
    ));
    let mut readiness = nodelocal_dns::admin::Readiness::for_config(&config, &metrics, None);
    let synced = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    readiness.require(move || match flag.load(Ordering::SeqCst) {
        true => Ok(()),
        false => Err("pods not synced".into()),
    });
    let inspector = nodelocal_dns::admin::Inspector::new(&config, metrics.clone());
    let forwarder = Forwarder::start_parts(&config, metrics, responder, readiness, inspector).await;

    let (status, body) = forwarder.get("/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready:\n- pods not synced\n")
    );
    synced.store(true, Ordering::SeqCst);
    assert_eq!(forwarder.get("/ready").await, (200, "OK\n".to_string()));
    forwarder.readiness.set_listening(false);
    let (status, body) = forwarder.get("/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("DNS listeners are not bound yet"), "{body}");
    forwarder.stop().await;
}

/// Three series of one counter: two in zone `a.`, and one whose `errortype` label ends in
/// another label's name.
const READER_SAMPLE: &str = "# HELP x_total X.\n# TYPE x_total counter\n\
    x_total{zone=\"a.\",type=\"timeout\"} 2\n\
    x_total{zone=\"a.\",type=\"closed\"} 3\n\
    x_total{zone=\"b.\",errortype=\"timeout\"} 5\n";

#[test]
fn the_metric_reader_matches_label_values_whole_and_sums_only_when_asked() {
    let metrics = Exposition::parse(READER_SAMPLE);
    assert_eq!(
        metrics.value("x_total", &[("zone", "a."), ("type", "timeout")]),
        2.0
    );
    assert_eq!(
        metrics.value("x_total", &[("type", "timeout")]),
        2.0,
        "errortype is not type"
    );
    assert_eq!(metrics.value("x_total", &[("zone", "a")]), 0.0);
    assert_eq!(metrics.value("x_total", &[("zone", "b.")]), 5.0);
    assert_eq!(metrics.sum("x_total", &[("zone", "a.")]), 5.0);
    assert_eq!(metrics.sum("x_total", &[]), 10.0);
    assert_eq!(metrics.value("y_total", &[]), 0.0);
}

#[test]
#[should_panic(expected = "matches 2 series")]
fn the_metric_reader_does_not_pick_one_of_several_series() {
    Exposition::parse(READER_SAMPLE).value("x_total", &[("zone", "a.")]);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let upstream = Switchable::start(true).await;
    let forwarder = Forwarder::start(&format!(
        "metrics:\n  listen: 127.0.0.1:0\nzones:\n  - name: .\n    upstreams: [\"{}\"]\n",
        upstream.addr
    ))
    .await;
    let (status, text) = forwarder.get("/metrics").await;
    assert_eq!(status, 200);
    let samples = Exposition::parse(&text);
    let healthy = format!("{}", upstream.addr);
    assert_eq!(
        samples.value(
            "nodelocaldns_upstream_healthy",
            &[("zone", "."), ("upstream", &healthy)]
        ),
        1.0
    );
    forwarder.stop().await;
}

/// `[::]` (what CoreDNS's `prometheus :9253` translates to) serves both families, as Go's
/// `:9253` does: an IPv6-only cluster's Prometheus and an IPv4 one both scrape it.
#[tokio::test]
async fn metrics_on_the_ipv6_wildcard_answer_both_families() {
    let upstream = Switchable::start(true).await;
    let forwarder = Forwarder::start(&format!(
        "metrics:\n  listen: \"[::]:0\"\nzones:\n  - name: .\n    upstreams: [\"{}\"]\n",
        upstream.addr
    ))
    .await;
    let port = forwarder.http.expect("HTTP is served").port();
    for client in ["127.0.0.1", "::1"] {
        let addr = SocketAddr::new(client.parse().expect("an IP"), port);
        let (status, text) = common::http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "over {client}");
        assert!(
            text.contains("nodelocaldns_upstream_healthy"),
            "over {client}"
        );
    }
    forwarder.stop().await;
}

#[tokio::test]
async fn scripted_queries_move_the_request_counters() {
    let authority = common::Authority::start(&[("example.", common::EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "metrics:\n  listen: 127.0.0.1:0\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n",
        authority.addr
    ))
    .await;
    use hickory_proto::op::ResponseCode;
    let www = query("www.example.", RecordType::A, Some(1232));
    let miss = udp_query(forwarder.addr, &www).await;
    assert_eq!(miss.metadata.response_code, ResponseCode::NoError);
    let hit = udp_query(forwarder.addr, &www).await;
    assert_eq!(hit.answers.len(), 1);
    // The other half of the pair, over TCP: a hit too.
    let aaaa = common::tcp_query(
        forwarder.addr,
        &query("www.example.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(aaaa.answers.len(), 1);
    let nx = udp_query(forwarder.addr, &query("nope.example.", RecordType::A, None)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let refused = udp_query(forwarder.addr, &query("other.test.", RecordType::MX, None)).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

    let (status, text) = forwarder.get("/metrics").await;
    assert_eq!(status, 200);
    let samples = Exposition::parse(&text);
    // The configured listen address labels the server (port 0 here, as configured).
    let server = ("server", "dns://127.0.0.1:0");
    let zone = ("zone", "example.");
    let requests = |labels: &[(&str, &str)]| {
        let mut all = vec![server];
        all.extend_from_slice(labels);
        samples.value("coredns_dns_requests_total", &all)
    };
    let udp_v4 = [("proto", "udp"), ("family", "1")];
    assert_eq!(
        requests(&[zone, udp_v4[0], udp_v4[1], ("type", "A")]),
        3.0,
        "miss, hit, NXDOMAIN"
    );
    assert_eq!(
        requests(&[zone, ("proto", "tcp"), ("family", "1"), ("type", "AAAA")]),
        1.0
    );
    assert_eq!(
        requests(&[("zone", "dropped"), udp_v4[0], udp_v4[1], ("type", "MX")]),
        1.0,
        "a name no zone serves counts under zone=dropped"
    );
    let responses = |zone: (&'static str, &'static str), rcode: &str, plugin: &str| {
        samples.value(
            "coredns_dns_responses_total",
            &[server, zone, ("rcode", rcode), ("plugin", plugin)],
        )
    };
    assert_eq!(responses(zone, "NOERROR", "forward"), 1.0, "the miss");
    assert_eq!(responses(zone, "NOERROR", "cache"), 2.0, "the two hits");
    assert_eq!(responses(zone, "NXDOMAIN", "forward"), 1.0);
    assert_eq!(responses(("zone", "dropped"), "REFUSED", ""), 1.0);
    assert_eq!(
        samples.value("coredns_dns_do_requests_total", &[server, zone]),
        0.0
    );
    assert_eq!(
        samples.value(
            "coredns_dns_request_duration_seconds_count",
            &[server, zone, ("type", "A")]
        ),
        3.0
    );
    assert_eq!(
        samples.value(
            "coredns_dns_request_size_bytes_count",
            &[server, zone, ("proto", "udp")]
        ),
        3.0
    );
    // The hits' answers are no larger than the miss's, and every answer is counted.
    let response_bytes = samples.value(
        "coredns_dns_response_size_bytes_sum",
        &[server, zone, ("proto", "udp")],
    );
    assert!(response_bytes > 3.0 * 12.0, "{response_bytes}");
    assert_eq!(
        samples.value("coredns_cache_hits_total", &[server, ("type", "success")]),
        2.0
    );
    assert_eq!(
        samples.value("coredns_cache_misses_total", &[server]),
        2.0,
        "www and nope"
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn a_queue_rejection_is_counted_and_answered_servfail() {
    let silent = Switchable::start(false).await;
    let forwarder = Forwarder::start(&format!(
        "workers: 1\nmetrics:\n  listen: 127.0.0.1:0\nserver:\n  max_inflight: 1\nzones:\n  - name: .\n    upstreams: [\"{}\"]\n    timeout: 3s\n",
        silent.addr
    ))
    .await;
    // One client socket, so both queries reach the same receive loop, in order: the first
    // holds the only in-flight slot while its upstream stays silent.
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    for name in ["first.example.", "second.example."] {
        let packet = query(name, RecordType::A, None).to_vec().expect("encodes");
        client.send_to(&packet, forwarder.addr).await.expect("send");
    }
    let mut buf = vec![0u8; 2048];
    let (len, _) = tokio::time::timeout(common::CLIENT_TIMEOUT, client.recv_from(&mut buf))
        .await
        .expect("the rejected query is answered at once")
        .expect("receive");
    let answer = hickory_proto::op::Message::from_vec(&buf[..len]).expect("decodes");
    assert_eq!(
        answer.metadata.response_code,
        hickory_proto::op::ResponseCode::ServFail
    );
    assert_eq!(answer.queries[0].name().to_string(), "second.example.");

    let samples = Exposition::parse(&forwarder.get("/metrics").await.1);
    assert_eq!(
        samples.value("nodelocaldns_rejected_total", &[("reason", "inflight")]),
        1.0
    );
    assert_eq!(
        samples.value(
            "coredns_dns_responses_total",
            &[
                ("server", "dns://127.0.0.1:0"),
                ("zone", "."),
                ("rcode", "SERVFAIL"),
                ("plugin", "")
            ]
        ),
        1.0
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn debug_cache_shows_both_halves_and_their_lifetime() {
    let authority = common::Authority::start(&[("example.", common::EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "metrics:\n  listen: 127.0.0.1:0\n  debug: true\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n    cache:\n      success_ttl: 1h\n",
        authority.addr
    ))
    .await;
    let (status, body) = forwarder.get("/debug/cache?name=www.example").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("www.example. A+AAAA pair: not cached"),
        "{body}"
    );

    udp_query(
        forwarder.addr,
        &query("WWW.example.", RecordType::AAAA, None),
    )
    .await;
    udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    let (status, body) = forwarder.get("/debug/cache?name=www.example.").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("www.example. A+AAAA pair, view plain, DO=0 CD=0\n"),
        "{body}"
    );
    // The zone's records have TTL 300: the entry lives 300 s, counted down.
    let lifetime = body
        .lines()
        .find(|l| l.contains("success NOERROR, fresh"))
        .unwrap_or_else(|| panic!("a lifetime line in {body}"));
    assert!(lifetime.contains("s of 300 s left, 1 hits"), "{lifetime}");
    assert!(body.contains("  A half: NOERROR, 1 answers"), "{body}");
    assert!(body.contains("192.0.2.1"), "{body}");
    assert!(body.contains("  AAAA half: NOERROR, 1 answers"), "{body}");
    assert!(body.contains("2001:db8::1"), "{body}");

    // A negative answer shows its SOA; other types are asked for by name.
    udp_query(
        forwarder.addr,
        &query("nope.example.", RecordType::TXT, None),
    )
    .await;
    let (status, body) = forwarder
        .get("/debug/cache?name=nope.example&type=txt")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nope.example. TXT, view plain"), "{body}");
    assert!(body.contains("denial NXDOMAIN"), "{body}");
    assert!(body.contains("SOA"), "{body}");

    assert_eq!(forwarder.get("/debug/cache").await.0, 400);
    assert_eq!(forwarder.get("/debug/cache?name=a..b").await.0, 400);
    let (status, body) = forwarder.get("/debug/pool").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(
            "zone example.\n  upstream {0}: healthy\nupstream {0}: 0 of 256 slots in use (limit now 256), 0 waiting (queue capacity 2048, 64 per client)\n",
            authority.addr
        )
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn debug_endpoints_are_absent_unless_asked_for() {
    let upstream = Switchable::start(true).await;
    let forwarder = Forwarder::start(&format!(
        "metrics:\n  listen: 127.0.0.1:0\nzones:\n  - name: .\n    upstreams: [\"{}\"]\n",
        upstream.addr
    ))
    .await;
    for path in [
        "/debug/cache?name=a",
        "/debug/autopath?ip=127.0.0.1",
        "/debug/pool",
    ] {
        assert_eq!(forwarder.get(path).await.0, 404, "{path}");
    }
    forwarder.stop().await;
}

/// A Running pod and a Completed one with the same IP, behind a fake API server that starts
/// later: readiness waits for the pod list (`wait_for_sync`), and `/debug/autopath` explains
/// the match.
#[tokio::test]
async fn ready_waits_for_pod_sync_and_debug_autopath_explains_the_match() {
    use common::fake_apiserver::{FakeApiServer, FakePod};
    use nodelocal_dns::admin::{Inspector, Readiness};
    use nodelocal_dns::kube::{PodIndex, PodWatch};
    use nodelocal_dns::observe::Metrics;
    use nodelocal_dns::responder::Responder;

    const CLUSTER_ZONE: &str = "$TTL 30\n@ IN SOA ns.cluster.local. admin.cluster.local. 1 3600 600 86400 5\n@ IN NS ns.cluster.local.\nns IN A 127.0.0.1\nweb.default.svc IN A 10.96.0.7\n";
    let authority = common::Authority::start(&[("cluster.local.", CLUSTER_ZONE)]).await;
    let mut api = FakeApiServer::not_started().await;
    api.apply(FakePod::running("batch", "job-1", "node-a", "127.0.0.41").phase("Succeeded"));
    api.apply(FakePod::running(
        "default",
        "client",
        "node-a",
        "127.0.0.41",
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\nsearch corp.test\n").expect("write");
    let config = nodelocal_dns::config::Config::from_yaml(
        &format!(
            "listen: [\"127.0.0.1:0\"]\nresolv_conf: {}\nmetrics:\n  listen: 127.0.0.1:0\n  debug: true\n\
             kubernetes:\n  enabled: true\n  node_name: node-a\n  wait_for_sync: true\n\
             zones:\n  - name: cluster.local\n    upstreams: [\"{}\"]\n    autopath: true\n",
            resolv.display(),
            authority.addr
        ),
        "test",
    )
    .expect("valid");
    let metrics = Arc::new(Metrics::new());
    let index = Arc::new(PodIndex::new(config.kubernetes.cluster_domain.0));
    let _watch = PodWatch::start(api.client(), "node-a", index.clone(), &metrics);
    let responder = Arc::new(Responder::with_pods(
        &config,
        metrics.clone(),
        Some(index.clone()),
    ));
    let readiness = Readiness::for_config(&config, &metrics, Some(&index));
    let inspector = Inspector::new(&config, metrics.clone())
        .with_responder(responder.clone())
        .with_pods(Some(index.clone()));
    let forwarder = Forwarder::start_parts(&config, metrics, responder, readiness, inspector).await;

    let (status, body) = forwarder.get("/ready").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("the first list of this node's pods is not in yet"),
        "{body}"
    );
    let (_, body) = forwarder.get("/debug/autopath?ip=127.0.0.41").await;
    assert!(body.contains("autopath does not apply yet"), "{body}");

    api.start_on().await;
    assert_eq!(wait_ready_status(&forwarder, 200).await, "OK\n");

    let (status, body) = forwarder
        .get("/debug/autopath?ip=127.0.0.41&name=web.default.svc.cluster.local")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("autopath zones: cluster.local."), "{body}");
    assert!(
        body.contains("autopath applies: one Running pod, namespace default; names below default.svc.cluster.local. are walked"),
        "{body}"
    );
    assert!(
        body.contains("  batch/job-1: ignored: Succeeded, not Running\n"),
        "{body}"
    );
    assert!(
        body.contains("  default/client: claims the IP (Running)\n"),
        "{body}"
    );
    assert!(
        body.contains("name web.default.svc.cluster.local.: walked as web.default.svc.cluster.local., web.svc.cluster.local., web.cluster.local., web.corp.test., web."),
        "{body}"
    );
    let (_, body) = forwarder.get("/debug/autopath?ip=127.0.0.99").await;
    assert!(body.contains("no pod of this node has this IP"), "{body}");
    assert_eq!(forwarder.get("/debug/autopath?ip=nonsense").await.0, 400);

    // An autopath hit: a pod's first search-path expansion, from the pod's address.
    let socket = UdpSocket::bind("127.0.0.41:0")
        .await
        .expect("bind the pod IP");
    let packet = query("web.default.svc.cluster.local.", RecordType::A, None)
        .to_vec()
        .expect("encodes");
    socket.send_to(&packet, forwarder.addr).await.expect("send");
    let mut buf = vec![0u8; 2048];
    tokio::time::timeout(common::CLIENT_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("answered")
        .expect("receive");
    let samples = Exposition::parse(&forwarder.get("/metrics").await.1);
    assert_eq!(
        samples.value("nodelocaldns_autopath_applied_total", &[]),
        1.0
    );
    assert_eq!(samples.value("nodelocaldns_kube_synced", &[]), 1.0);
    // The answer is cached in the namespace's view, which /debug/cache finds.
    let (status, body) = forwarder
        .get("/debug/cache?name=web.default.svc.cluster.local")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("view namespace default (autopath view"),
        "{body}"
    );
    forwarder.stop().await;
}

/// docs/metrics.md documents every metric the server exports, and the shipped alerts and
/// dashboard only use documented metrics.
#[tokio::test]
async fn metrics_docs_rules_and_dashboard_agree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
    };
    let docs = read("docs/metrics.md");
    let documented = |name: &str| docs.contains(&format!("`{name}`"));

    let authority = common::Authority::start(&[("example.", common::EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "metrics:\n  listen: 127.0.0.1:0\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n",
        authority.addr
    ))
    .await;
    udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    let text = forwarder.get("/metrics").await.1;
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    assert!(exported.len() > 15, "{exported:?}");
    for name in &exported {
        assert!(documented(name), "{name} is not in docs/metrics.md");
    }
    forwarder.stop().await;

    for path in [
        "deploy/prometheus-rules.yaml",
        "deploy/grafana-dashboard.json",
    ] {
        let text = read(path);
        let mut used = 0;
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !(word.starts_with("coredns_") || word.starts_with("nodelocaldns_")) {
                continue;
            }
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            assert!(
                documented(name),
                "{path} uses {name}, not in docs/metrics.md"
            );
            used += 1;
        }
        assert!(used > 10, "{path} uses {used} metrics");
    }
}
