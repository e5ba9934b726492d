//! Autopath end to end (docs/design.md, failures 3 and 5): the real kube client and
//! kube-runtime watcher against a fake API server speaking list/watch over HTTP, our forwarder
//! over real sockets, and clients bound to 127.0.0.0/8 addresses that the API server reports as
//! pod IPs, so the forwarder sees each "pod" as the packet's source.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::net::TcpSocket;

use common::fake_apiserver::{FakeApiServer, FakePod};
use common::{Authority, CLIENT_TIMEOUT, EXAMPLE_COM, Exposition, query, read_frame, write_frame};
use nodelocal_dns::config::Config;
use nodelocal_dns::kube::{PodIndex, PodWatch};
use nodelocal_dns::observe::Metrics;
use nodelocal_dns::responder::Responder;
use nodelocal_dns::server::Server;

const NODE: &str = "node-a";
const ASKED: &str = "api.example.com.default.svc.cluster.local.";

const CLUSTER_ZONE: &str = r#"
$TTL 30
@       IN SOA ns.cluster.local. admin.cluster.local. 1 3600 600 86400 5
@       IN NS  ns.cluster.local.
ns      IN A   127.0.0.1
kubernetes.default.svc IN A 10.96.0.1
"#;

/// The node's own search domain (the tail of every pod's search path).
const CORP_TEST: &str = r#"
$TTL 60
@       IN SOA ns.corp.test. admin.corp.test. 1 3600 600 86400 5
@       IN NS  ns.corp.test.
ns      IN A   127.0.0.1
intranet IN A  192.0.2.20
"#;

/// An authority, a fake API server, and our forwarder watching it for `NODE`.
struct World {
    api: FakeApiServer,
    index: Arc<PodIndex>,
    metrics: Arc<Metrics>,
    dns: std::net::SocketAddr,
    server: Option<Server>,
    _watch: PodWatch,
    _authority: Authority,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(pods: &[FakePod]) -> World {
        let api = FakeApiServer::start().await;
        for pod in pods {
            api.apply(pod.clone());
        }
        let world = World::with_api(api).await;
        world.synced().await;
        world
    }

    /// Starts the forwarder against `api`, running or not.
    async fn with_api(api: FakeApiServer) -> World {
        let authority = Authority::start(&[
            ("cluster.local.", CLUSTER_ZONE),
            ("example.com.", EXAMPLE_COM),
            ("corp.test.", CORP_TEST),
        ])
        .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\nsearch corp.test\n").expect("write");
        let yaml = format!(
            "listen: [\"127.0.0.1:0\"]\nresolv_conf: {}\nkubernetes:\n  enabled: true\n  node_name: {NODE}\n\
             zones:\n  - name: cluster.local\n    upstreams: [\"{auth}\"]\n    autopath: true\n\
             \x20 - name: .\n    upstreams: [\"{auth}\"]\n",
            resolv.display(),
            auth = authority.addr,
        );
        let config = Config::from_yaml(&yaml, "autopath test").expect("valid config");
        let metrics = Arc::new(Metrics::new());
        let index = Arc::new(PodIndex::new(config.kubernetes.cluster_domain.0));
        let watch = PodWatch::start(api.client(), NODE, index.clone(), &metrics);
        let responder = Arc::new(Responder::with_pods(
            &config,
            metrics.clone(),
            Some(index.clone()),
        ));
        let server = Server::start(&config, responder).expect("forwarder binds");
        World {
            api,
            index,
            metrics,
            dns: server.local_addrs()[0],
            server: Some(server),
            _watch: watch,
            _authority: authority,
            _dir: dir,
        }
    }

    async fn synced(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.index.wait_synced())
            .await
            .expect("the pod index syncs");
    }

    fn scrape(&self) -> Exposition {
        Exposition::parse(&self.metrics.render())
    }

    /// Asks `name` over UDP from the source address `from`.
    async fn ask(&self, from: &str, name: &str, rtype: RecordType) -> Message {
        let msg = query(name, rtype, Some(1232));
        common::udp_query_from(from, self.dns, &msg).await
    }

    /// Asks `name` over a TCP connection from the source address `from`.
    async fn ask_tcp(&self, from: &str, name: &str, rtype: RecordType) -> Message {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{from}:0").parse().expect("a valid address"))
            .expect("bind a pod IP");
        let mut stream = socket.connect(self.dns).await.expect("connect");
        let bytes = query(name, rtype, None).to_vec().expect("encodes");
        write_frame(&mut stream, &bytes).await;
        let answer = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream))
            .await
            .expect("an answer in time")
            .expect("an answer frame");
        Message::from_vec(&answer).expect("answer decodes")
    }

    /// Polls until `check` holds for the answer to `name` from `from`; returns how long it took.
    async fn until(
        &self,
        from: &str,
        name: &str,
        wait: Duration,
        check: impl Fn(&Message) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let answer = self.ask(from, name, RecordType::A).await;
            if check(&answer) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < wait,
                "no change within {wait:?}; last answer: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// The answer autopath gives for `qname`: `qname CNAME target.` first, then `target`'s records.
fn is_autopath(answer: &Message, target: &str) -> bool {
    answer.metadata.response_code == ResponseCode::NoError
        && answer
            .answers
            .first()
            .is_some_and(|r| matches!(&r.data, RData::CNAME(c) if c.0.to_string() == target))
}

fn is_plain_nxdomain(answer: &Message) -> bool {
    answer.metadata.response_code == ResponseCode::NXDomain && answer.answers.is_empty()
}

#[tokio::test]
async fn a_completed_pod_with_the_same_ip_never_steals_autopath() {
    // The reported case (coredns#2842): a Completed Argo pod once had the IP of a Running pod
    // in `default`. Every A and AAAA query from that IP is autopathed as `default`.
    let world = World::start(&[
        FakePod::running("argo-events", "sensor-job-1", NODE, "127.0.0.23").phase("Succeeded"),
        FakePod::running("default", "web", NODE, "127.0.0.23"),
    ])
    .await;
    for _ in 0..10 {
        let a = world.ask("127.0.0.23", ASKED, RecordType::A).await;
        assert!(is_autopath(&a, "api.example.com."), "{a:?}");
        assert_eq!(a.queries[0].name().to_string(), ASKED);
        assert!(
            a.answers
                .iter()
                .any(|r| matches!(r.data, RData::A(a) if a.0.octets() == [192, 0, 2, 10]))
        );
        let aaaa = world.ask("127.0.0.23", ASKED, RecordType::AAAA).await;
        assert!(is_autopath(&aaaa, "api.example.com."), "{aaaa:?}");
        assert!(
            aaaa.answers
                .iter()
                .any(|r| matches!(r.data, RData::AAAA(_)))
        );
    }
    // Over TCP the source address is the pod's too.
    for rtype in [RecordType::A, RecordType::AAAA] {
        let answer = world.ask_tcp("127.0.0.23", ASKED, rtype).await;
        assert!(is_autopath(&answer, "api.example.com."), "{answer:?}");
    }
    assert_eq!(
        world
            .scrape()
            .value("nodelocaldns_autopath_applied_total", &[]),
        22.0
    );
    assert_eq!(
        world
            .scrape()
            .sum("nodelocaldns_autopath_skipped_total", &[]),
        0.0
    );
    assert_eq!(
        world.scrape().value("nodelocaldns_kube_pods_indexed", &[]),
        1.0
    );
    world.stop().await;
}

#[tokio::test]
async fn the_walk_reaches_the_nodes_search_domains_and_misses_are_one_nxdomain() {
    let world = World::start(&[FakePod::running("default", "web", NODE, "127.0.0.30")]).await;
    let found = world
        .ask(
            "127.0.0.30",
            "intranet.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
    assert!(is_autopath(&found, "intranet.corp.test."), "{found:?}");
    // A name that exists under the first search domain is answered as is.
    let own = world
        .ask(
            "127.0.0.30",
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
    assert_eq!(own.metadata.response_code, ResponseCode::NoError);
    assert_eq!(own.answers.len(), 1);
    assert!(matches!(own.answers[0].data, RData::A(_)));
    let missing = world
        .ask(
            "127.0.0.30",
            "nothing.example.com.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
    assert!(is_plain_nxdomain(&missing), "{missing:?}");
    world.stop().await;
}

#[tokio::test]
async fn a_pod_that_stops_running_stops_matching_and_a_new_pod_takes_its_ip() {
    let world = World::start(&[FakePod::running("default", "job", NODE, "127.0.0.24")]).await;
    let ip = "127.0.0.24";
    assert!(is_autopath(
        &world.ask(ip, ASKED, RecordType::A).await,
        "api.example.com."
    ));
    world.api.bookmark();

    world
        .api
        .apply(FakePod::running("default", "job", NODE, ip).phase("Succeeded"));
    let took = world
        .until(ip, ASKED, Duration::from_secs(5), is_plain_nxdomain)
        .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The namespace's cached autopath answer is never served to it again.
    for _ in 0..5 {
        assert!(is_plain_nxdomain(
            &world.ask(ip, ASKED, RecordType::A).await
        ));
    }
    assert!(
        world.scrape().value(
            "nodelocaldns_autopath_skipped_total",
            &[("reason", "not_running")]
        ) >= 5.0
    );

    // The IP is reused by a pod of another namespace.
    world.api.apply(FakePod::running("team-b", "api", NODE, ip));
    let team_b = "api.example.com.team-b.svc.cluster.local.";
    let took = world
        .until(ip, team_b, Duration::from_secs(5), |a| {
            is_autopath(a, "api.example.com.")
        })
        .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // ... and the old namespace's search path no longer applies to it.
    assert!(is_plain_nxdomain(
        &world.ask(ip, ASKED, RecordType::A).await
    ));
    world.stop().await;
}

#[tokio::test]
async fn host_network_pods_and_ambiguous_ips_never_match() {
    let world = World::start(&[
        FakePod::running("kube-system", "proxy", NODE, "127.0.0.25").host_network(),
        FakePod::running("default", "one", NODE, "127.0.0.26"),
        FakePod::running("team-b", "two", NODE, "127.0.0.26"),
        // A pod of another node is not listed at all.
        FakePod::running("default", "elsewhere", "node-b", "127.0.0.31"),
    ])
    .await;
    for ip in ["127.0.0.25", "127.0.0.26", "127.0.0.31"] {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let answer = world.ask(ip, ASKED, rtype).await;
            assert!(is_plain_nxdomain(&answer), "{ip}: {answer:?}");
        }
    }
    assert_eq!(
        world
            .scrape()
            .value("nodelocaldns_autopath_applied_total", &[]),
        0.0
    );
    assert_eq!(
        world.scrape().value(
            "nodelocaldns_autopath_skipped_total",
            &[("reason", "ambiguous")]
        ),
        2.0
    );
    assert_eq!(
        world.scrape().value(
            "nodelocaldns_autopath_skipped_total",
            &[("reason", "no_pod")]
        ),
        4.0
    );
    assert_eq!(
        world.scrape().value("nodelocaldns_kube_ambiguous_ips", &[]),
        1.0
    );

    // Once one of the two is gone, the other owns the IP.
    world.api.delete("team-b", "two");
    world
        .until("127.0.0.26", ASKED, Duration::from_secs(5), |a| {
            is_autopath(a, "api.example.com.")
        })
        .await;
    world.stop().await;
}

#[tokio::test]
async fn another_namespace_asking_the_same_name_gets_the_plain_answer() {
    let world = World::start(&[
        FakePod::running("default", "web", NODE, "127.0.0.27"),
        FakePod::running("team-b", "api", NODE, "127.0.0.28"),
    ])
    .await;
    for rtype in [RecordType::A, RecordType::AAAA] {
        let answer = world.ask("127.0.0.27", ASKED, rtype).await;
        assert!(is_autopath(&answer, "api.example.com."), "{answer:?}");
    }
    // Same qname, now cached in `default`'s view: other clients never see that answer.
    for from in ["127.0.0.28", "127.0.0.1"] {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let answer = world.ask(from, ASKED, rtype).await;
            assert!(is_plain_nxdomain(&answer), "{from}: {answer:?}");
        }
    }
    // And the plain NXDOMAIN now cached does not leak into `default`'s answers either.
    let again = world.ask("127.0.0.27", ASKED, RecordType::A).await;
    assert!(is_autopath(&again, "api.example.com."), "{again:?}");
    assert_eq!(
        world.scrape().value(
            "nodelocaldns_autopath_skipped_total",
            &[("reason", "no_match")]
        ),
        2.0
    );
    world.stop().await;
}

#[tokio::test]
async fn api_server_down_at_start_and_restarted_mid_run() {
    let api = FakeApiServer::not_started().await;
    api.apply(FakePod::running("default", "web", NODE, "127.0.0.29"));
    let mut world = World::with_api(api).await;
    let ip = "127.0.0.29";

    // No index yet: queries are answered at once, without autopath.
    let start = Instant::now();
    let answer = world.ask(ip, ASKED, RecordType::A).await;
    assert!(is_plain_nxdomain(&answer), "{answer:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(
        world.scrape().value(
            "nodelocaldns_autopath_skipped_total",
            &[("reason", "unsynced")]
        ) >= 1.0
    );

    world.api.start_on().await;
    world.synced().await;
    world
        .until(ip, ASKED, Duration::from_secs(5), |a| {
            is_autopath(a, "api.example.com.")
        })
        .await;

    // A watch that ends (timeoutSeconds) is resumed without a re-list.
    let (lists, _) = world.api.requests();
    world.api.end_watches();
    tokio::time::sleep(Duration::from_millis(300)).await;
    world
        .api
        .apply(FakePod::running("default", "other", NODE, "127.0.0.32"));
    world
        .until("127.0.0.32", ASKED, Duration::from_secs(5), |a| {
            is_autopath(a, "api.example.com.")
        })
        .await;
    assert_eq!(world.api.requests().0, lists, "resumed, not re-listed");

    // The API server crashes; the last index keeps serving.
    world.api.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(is_autopath(
        &world.ask(ip, ASKED, RecordType::A).await,
        "api.example.com."
    ));
    // While it is down the pod completes and its history is compacted: the resumed watch
    // gets 410 Gone, and the re-list brings the change.
    world
        .api
        .apply_unseen_and_compact(FakePod::running("default", "web", NODE, ip).phase("Succeeded"));
    world.api.start_on().await;
    world
        .until(ip, ASKED, Duration::from_secs(15), is_plain_nxdomain)
        .await;
    assert!(
        world.scrape().value(
            "nodelocaldns_kube_watch_restarts_total",
            &[("reason", "relist")]
        ) >= 1.0
    );
    assert!(
        world.scrape().value(
            "nodelocaldns_kube_watch_restarts_total",
            &[("reason", "error")]
        ) >= 1.0
    );
    world.stop().await;
}
