//! Config reload through the binary: the config file is a ConfigMap volume (a
//! `..data` symlink swapped atomically); a changed config is applied under a steady stream of
//! queries without one going unanswered, and an invalid one is counted while the running
//! config keeps serving.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Authority, EXAMPLE_ZONE, Exposition, http_get, query, udp_raw};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const BIN: &str = env!("CARGO_BIN_EXE_nodelocal-dns");

const OTHER_ZONE: &str = "$TTL 60\n@ IN SOA ns admin 1 3600 600 86400 5\n@ IN NS ns\nns IN A 127.0.0.1\nhost IN A 198.51.100.7\n";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Publishes `text` as the ConfigMap's next version of `config.yaml`.
fn publish(dir: &Path, version: u32, text: &str) {
    publish_as(dir, "config.yaml", version, text);
}

/// Publishes `text` as the next version of the ConfigMap key `key`: a new directory, then
/// `..data` swapped to it with one rename, as the kubelet does.
fn publish_as(dir: &Path, key: &str, version: u32, text: &str) {
    let data = dir.join(format!("..v{version}"));
    std::fs::create_dir(&data).expect("version dir");
    std::fs::write(data.join(key), text).expect("write the key");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    if version == 1 {
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).expect("key link");
    }
}

/// A steady stream of distinct names under `example.` (cache misses: each is asked upstream),
/// one after another with `pause` between them, until [`MissStream::stop`].
struct MissStream {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Option<ResponseCode>>>,
}

impl MissStream {
    /// Names are `{prefix}{n}.example.`.
    fn start(server: std::net::SocketAddr, prefix: &'static str, pause: Duration) -> MissStream {
        let running = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let running = running.clone();
            async move {
                let mut rcodes = Vec::new();
                while running.load(Ordering::SeqCst) {
                    let name = format!("{prefix}{}.example.", rcodes.len() + 1);
                    rcodes.push(rcode_of(server, &name).await);
                    tokio::time::sleep(pause).await;
                }
                rcodes
            }
        });
        MissStream { running, task }
    }

    /// Ends the stream; the rcode of each query in order (`None`: no answer within 2 s).
    async fn stop(self) -> Vec<Option<ResponseCode>> {
        self.running.store(false, Ordering::SeqCst);
        self.task.await.expect("the stream ends")
    }
}

async fn rcode_of(server: std::net::SocketAddr, name: &str) -> Option<ResponseCode> {
    let packet = query(name, RecordType::A, None).to_vec().expect("encodes");
    let answer = udp_raw(server, &packet, Duration::from_secs(2)).await?;
    Some(Message::from_vec(&answer).ok()?.metadata.response_code)
}

/// Starts the binary with `args` and waits until it answers on `addr`.
async fn start_answering(args: &[&str], addr: std::net::SocketAddr) -> Running {
    let server = Running(
        Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts"),
    );
    assert!(
        common::eventually_async(|| async {
            rcode_of(addr, "www.example.").await == Some(ResponseCode::NoError)
        })
        .await,
        "the server answers"
    );
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_is_applied_under_load_and_a_broken_one_is_refused() {
    let example = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let other = Authority::start(&[("other.test.", OTHER_ZONE)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = {
        let (udp, _tcp) = common::bind_udp_tcp_pair().await;
        udp.local_addr().expect("bound")
    };
    let http = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("bound")
    };
    let base = format!(
        "listen: [\"{addr}\"]\nworkers: 1\nserver:\n  loop_check: false\nmetrics:\n  listen: {http}\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n",
        example.addr
    );
    publish(dir.path(), 1, &base);
    let config = dir.path().join("config.yaml").display().to_string();
    let _server = start_answering(&["run", "--config", &config], addr).await;
    assert_eq!(
        rcode_of(addr, "host.other.test.").await,
        Some(ResponseCode::Refused)
    );

    // A steady stream of distinct names (cache misses) for the whole test.
    let stream = MissStream::start(addr, "n", Duration::from_millis(2));

    let with_other = format!(
        "{base}  - name: other.test\n    upstreams: [\"{}\"]\n",
        other.addr
    );
    publish(dir.path(), 2, &with_other);
    assert!(
        common::eventually_async(|| async {
            rcode_of(addr, "host.other.test.").await == Some(ResponseCode::NoError)
        })
        .await,
        "the new zone is served after the reload"
    );

    publish(
        dir.path(),
        3,
        &format!("{with_other}  - name: broken\n    upstreamz: []\n"),
    );
    let failures = || async {
        let (_, text) = http_get(http, "/metrics").await;
        Exposition::parse(&text).value(
            "nodelocaldns_config_reloads_total",
            &[("result", "failure")],
        )
    };
    assert!(
        common::eventually_async(|| async { failures().await == 1.0 }).await,
        "the broken config is counted"
    );
    assert_eq!(
        rcode_of(addr, "host.other.test.").await,
        Some(ResponseCode::NoError),
        "the previous config keeps serving"
    );
    let (_, text) = http_get(http, "/metrics").await;
    assert_eq!(
        Exposition::parse(&text).value(
            "nodelocaldns_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );

    let rcodes = stream.stop().await;
    assert!(rcodes.len() > 50, "the stream ran through both reloads");
    assert_eq!(
        rcodes.iter().filter(|rcode| rcode.is_none()).count(),
        0,
        "no query lost to a reload"
    );
}

/// A reload replaces the responder, and with it the upstream pools: the old config's pools
/// and their connection tasks end as soon as its last query has, rather than living on until
/// they idle out (here never: `idle_timeout` is a minute). 50 reloads under a steady stream
/// of misses over pooled TCP: every query is answered, and afterwards one pool is left, with
/// no more connection tasks than it may hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_leave_one_pool_and_lose_no_query() {
    use nodelocal_dns::config::Config;
    use nodelocal_dns::observe::Metrics;
    use nodelocal_dns::responder::Responder;
    use nodelocal_dns::server::Server;

    let upstream = Authority::start(&[("example.", common::WILDCARD_ZONE)]).await;
    let yaml = |version: u32| {
        format!(
            "listen: [\"127.0.0.1:0\"]\nworkers: 1\nserver:\n  loop_check: false\nzones:\n  - name: example\n    transport: tcp\n    unanswered_ttl: {version}s\n    pool:\n      max_connections: 2\n      idle_timeout: 60s\n    upstreams: [\"{}\"]\n",
            upstream.addr
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    // Whole files only: the watcher must never read half of one.
    let write = |version: u32| {
        let tmp = dir.path().join("config.tmp");
        std::fs::write(&tmp, yaml(version)).expect("write config");
        std::fs::rename(&tmp, &path).expect("replace config");
    };
    write(0);
    let config = Config::load(&path).expect("valid config");
    let metrics = Arc::new(Metrics::new());
    let responder = Arc::new(Responder::new(&config, metrics.clone()));
    let mut server = Server::start(&config, responder).expect("binds");
    server.watch_config(
        Arc::new(nodelocal_dns::config::source::ConfigFile(path.clone())),
        Duration::from_millis(20),
        config.clone(),
        metrics.clone(),
    );
    let addr = server.local_addrs()[0];
    let gauge = |name: &str, labels: &[(&str, &str)]| {
        Exposition::parse(&metrics.render()).value(name, labels)
    };

    // A new name each time: a miss, asked upstream over the pool.
    let stream = MissStream::start(addr, "q", Duration::from_millis(5));
    let reloads = || {
        gauge(
            "nodelocaldns_config_reloads_total",
            &[("result", "success")],
        )
    };
    for version in 1..=50 {
        write(version);
        assert!(
            common::eventually_async(|| async { reloads() >= f64::from(version) }).await,
            "reload {version} applied"
        );
    }
    let rcodes = stream.stop().await;
    let (sent, answered) = (
        rcodes.len(),
        rcodes
            .iter()
            .filter(|rcode| **rcode == Some(ResponseCode::NoError))
            .count(),
    );
    assert!(sent > 50, "a steady stream: {sent} queries");
    assert_eq!(answered, sent, "every query answered NOERROR");
    assert_eq!(
        gauge(
            "nodelocaldns_config_reloads_total",
            &[("result", "failure")]
        ),
        0.0
    );

    let settled = common::eventually_async(|| async {
        gauge("nodelocaldns_upstream_pools", &[]) == 1.0
            && gauge("nodelocaldns_tasks", &[("kind", "connection")]) <= 2.0
    })
    .await;
    assert!(
        settled,
        "one pool and at most its 2 connections are left: {} pools, {} connection tasks, {} closed as retired",
        gauge("nodelocaldns_upstream_pools", &[]),
        gauge("nodelocaldns_tasks", &[("kind", "connection")]),
        gauge("nodelocaldns_pool_closed_total", &[("reason", "retired")]),
    );
    assert!(
        gauge("nodelocaldns_pool_closed_total", &[("reason", "retired")]) >= 1.0,
        "the old configs' connections closed as retired"
    );
    server.shutdown().await;
}

/// node-cache's launch: the Corefile template and the kube-dns ConfigMap are ConfigMap
/// volumes. A stub domain added to the kube-dns ConfigMap, then a template edited, are served
/// without a restart and without a query lost; a template that does not translate is counted
/// and the running config keeps serving, as CoreDNS's `reload` keeps its previous config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cache_applies_a_changed_corefile_and_kube_dns_configmap_without_a_restart() {
    let example = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let other = Authority::start(&[("other.test.", OTHER_ZONE)]).await;
    let (coredns, kube_dns) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let port = {
        let (udp, _tcp) = common::bind_udp_tcp_pair().await;
        udp.local_addr().expect("bound").port()
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let http = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("bound")
    };
    let template = |extra: &str| {
        format!(
            ".:{port} {{\n    errors\n    cache 30\n    reload\n    bind __PILLAR__LOCAL__DNS__\n    forward . {}\n    prometheus {http}\n{extra}}}\n",
            example.addr
        )
    };
    publish_as(coredns.path(), "Corefile.base", 1, &template(""));
    let base = coredns.path().join("Corefile.base").display().to_string();
    let rendered = coredns.path().join("Corefile").display().to_string();
    let kube_dns_dir = kube_dns.path().display().to_string();
    let _server = start_answering(
        &[
            "-localip",
            "127.0.0.1",
            "-setupinterface=false",
            "-setupiptables=false",
            "-basecorefile",
            &base,
            "-conf",
            &rendered,
            "-kubednscm",
            &kube_dns_dir,
            "-dns.port",
            &port.to_string(),
        ],
        addr,
    )
    .await;
    assert_ne!(
        rcode_of(addr, "host.other.test.").await,
        Some(ResponseCode::NoError),
        "other.test. goes to the example upstream, which does not serve it"
    );
    let stream = MissStream::start(addr, "n", Duration::from_millis(2));

    // The kube-dns ConfigMap gains a stub domain.
    publish_as(
        kube_dns.path(),
        "stubDomains",
        1,
        &format!("{{\"other.test\": [\"{}\"]}}", other.addr),
    );
    assert!(
        common::eventually_async(|| async {
            rcode_of(addr, "host.other.test.").await == Some(ResponseCode::NoError)
        })
        .await,
        "the stub domain is served after the ConfigMap changed"
    );

    // The template gains a block of its own.
    publish_as(
        coredns.path(),
        "Corefile.base",
        2,
        &format!(
            "{}blocked.test:{port} {{\n    bind __PILLAR__LOCAL__DNS__\n    forward . 127.0.0.1:9\n    loop\n}}\n",
            template("")
        ),
    );
    let reloads = |result: &'static str| async move {
        let (_, text) = http_get(http, "/metrics").await;
        Exposition::parse(&text).value("nodelocaldns_config_reloads_total", &[("result", result)])
    };
    assert!(
        common::eventually_async(|| async { reloads("success").await == 2.0 }).await,
        "the edited template is applied"
    );
    let rendered_now = std::fs::read_to_string(&rendered).expect("the rendered Corefile");
    assert!(
        rendered_now.contains("blocked.test") && rendered_now.contains("other.test"),
        "the Corefile is rendered again for those who read it: {rendered_now}"
    );

    // A template that does not translate: counted, and the running config keeps serving.
    publish_as(
        coredns.path(),
        "Corefile.base",
        3,
        &template("    frobnicate\n"),
    );
    assert!(
        common::eventually_async(|| async { reloads("failure").await == 1.0 }).await,
        "the broken template is counted"
    );
    assert_eq!(
        rcode_of(addr, "host.other.test.").await,
        Some(ResponseCode::NoError),
        "the previous config keeps serving"
    );
    let rcodes = stream.stop().await;
    assert!(rcodes.len() > 50, "the stream ran through the reloads");
    assert_eq!(
        rcodes.iter().filter(|rcode| rcode.is_none()).count(),
        0,
        "no query lost to a reload"
    );
}
