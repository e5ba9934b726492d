//! The built `nodelocal-dns` binary: `check-config` errors name file, line and
//! field; the effective config it prints is itself valid; `--version` and `--help`; `run`
//! serves a config over UDP and TCP and exits cleanly on SIGTERM.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::{Authority, EXAMPLE_ZONE, addresses, query, udp_raw};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const BIN: &str = env!("CARGO_BIN_EXE_nodelocal-dns");

fn nodelocal_dns(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write config");
    path.display().to_string()
}

#[test]
fn check_config_names_the_file_line_and_field_of_each_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "transport.yaml",
            "listen: [\"127.0.0.1:5300\"]\nzones:\n  - name: example\n    upstreams: [\"127.0.0.1:53\"]\n    transport: pigeon\n",
            5,
            "zones[0].transport",
        ),
        (
            "unknown_key.yaml",
            "zones:\n  - name: example\n    upstreams: [\"127.0.0.1:53\"]\n    cache:\n      enabled: true\n      sucess_ttl: 5s\n",
            6,
            "zones[0].cache.sucess_ttl",
        ),
        (
            "duration.yaml",
            "server:\n  tcp_idle_timeout: 3 fortnights\nzones: []\n",
            2,
            "server.tcp_idle_timeout",
        ),
        (
            "listen.yaml",
            "listen:\n  - 127.0.0.1:5300\n  - not-an-address\nzones: []\n",
            3,
            "listen",
        ),
    ];
    for (file, content, line, field) in cases {
        let path = write(dir.path(), file, content);
        let out = nodelocal_dns(&["check-config", &path]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{file}: rejected");
        assert!(
            stderr.contains(&format!("{path}:{line}: {field}")),
            "{file}: stderr names file, line and field: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{file}: no config printed");
    }
    let out = nodelocal_dns(&[
        "check-config",
        &dir.path().join("missing.yaml").display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("missing.yaml"));
}

/// The printed config has every default filled in, and reading it back gives the same
/// config (so it can be used as a starting point).
#[test]
fn check_config_prints_the_effective_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "good.yaml",
        "zones:\n  - name: Cluster.Local\n    upstreams: [\"10.96.0.10\"]\n    transport: tcp\n",
    );
    let out = nodelocal_dns(&["check-config", &path]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    for expected in [
        "127.0.0.1:5300",
        "max_udp_size: 1232",
        "tcp_idle_timeout: 10s",
        "max_tcp_connections: 1024",
        "name: cluster.local.",
        "10.96.0.10:53",
        "transport: tcp",
        "policy: random",
        "timeout: 2s",
        "max_fails: 3",
    ] {
        assert!(printed.contains(expected), "{expected:?} in:\n{printed}");
    }
    let again = write(dir.path(), "printed.yaml", &printed);
    let out = nodelocal_dns(&["check-config", &again]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        printed,
        "the printed config reads back as itself"
    );
}

/// What runs without a config listens on loopback only, for DNS and for HTTP, and
/// so does a config that names no `listen`: an open resolver needs an address written out.
#[test]
fn the_defaults_listen_on_loopback_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = nodelocal_dns(&["default-config"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let embedded = write(dir.path(), "default.yaml", &text(&out.stdout));
    let bare = write(
        dir.path(),
        "bare.yaml",
        "zones:\n  - name: .\n    upstreams: [\"127.0.0.1:53\"]\n",
    );
    for path in [embedded, bare] {
        let out = nodelocal_dns(&["check-config", &path]);
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        let printed: serde_yaml_ng::Value =
            serde_yaml_ng::from_slice(&out.stdout).expect("the printed config is YAML");
        let listen = printed["listen"].as_sequence().expect("a listen list");
        let metrics = &printed["metrics"]["listen"];
        assert!(!listen.is_empty());
        for address in listen.iter().chain([metrics]) {
            let address: SocketAddr = address
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{path}: {address:?} is an address"));
            assert_eq!(address.ip(), Ipv4Addr::LOCALHOST, "{path}: {address}");
        }
    }
}

#[test]
fn version_and_help() {
    let out = nodelocal_dns(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("nodelocal-dns {}", env!("CARGO_PKG_VERSION"))
    );
    let out = nodelocal_dns(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in ["run", "check-config", "default-config"] {
        assert!(help.contains(command), "--help lists {command}:\n{help}");
    }
    let out = nodelocal_dns(&["run", "--help"]);
    assert!(text(&out.stdout).contains("--config"));
    let out = nodelocal_dns(&["no-such-command"]);
    assert!(!out.status.success());
}

/// Sends SIGTERM (the shell's builtin kill: no signal crate, no procps) and waits up to
/// `bound` for the exit.
async fn sigterm(running: &mut Running, bound: Duration) -> std::process::ExitStatus {
    let pid = running.0.id().to_string();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("sh runs");
    assert!(killed.success());
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(exited) = running.0.try_wait().expect("child status") {
            return exited;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "exits within {bound:?} of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the child on drop, so a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `run --config` on a free port of 127.0.0.1 and waits until it answers `probe`;
/// retries on another port if the one picked was taken meanwhile. The config logs warnings
/// and every answered query (`log.query_sample: 1`) to `dir/output.log`; at SIGTERM it has no
/// lameduck and drains for `drain`.
async fn start_run(dir: &Path, zones: &str, drain: &str, probe: &[u8]) -> (Running, SocketAddr) {
    start_run_sampling(dir, zones, drain, probe, 1).await
}

/// [`start_run`] with `log.query_sample: sample`.
async fn start_run_sampling(
    dir: &Path,
    zones: &str,
    drain: &str,
    probe: &[u8],
    sample: u64,
) -> (Running, SocketAddr) {
    for _ in 0..5 {
        let addr = {
            let (udp, _tcp) = common::bind_udp_tcp_pair().await;
            udp.local_addr().expect("bound")
        };
        let config = write(
            dir,
            "run.yaml",
            &format!(
                "listen: [\"{addr}\"]\nworkers: 1\nshutdown:\n  lameduck: 0s\n  drain: {drain}\nlog:\n  level: warn,query=info\n  query_sample: {sample}\n{zones}"
            ),
        );
        let log = std::fs::File::create(dir.join("output.log")).expect("log file");
        let child = Command::new(BIN)
            .args(["run", "--config", &config])
            .env_remove("RUST_LOG")
            // tracing's formatter writes to stdout.
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("the binary starts");
        let mut running = Running(child);
        for _ in 0..100 {
            if let Some(status) = running.0.try_wait().expect("child status") {
                eprintln!("run exited early ({status}); retrying on another port");
                break;
            }
            if udp_raw(addr, probe, Duration::from_millis(100))
                .await
                .is_some()
            {
                return (running, addr);
            }
        }
    }
    panic!("`run` never answered");
}

/// A node's set-up: `cluster.local` over TCP, `.` over UDP, asked over
/// UDP and TCP; then SIGTERM ends it with status 0.
#[tokio::test]
async fn run_serves_a_config_and_exits_cleanly_on_sigterm() {
    const CLUSTER_ZONE: &str = "$TTL 30\n@ IN SOA ns admin 1 3600 600 86400 5\n@ IN NS ns\nns IN A 127.0.0.1\nkube-dns.kube-system.svc IN A 10.96.0.10\n";
    let cluster = Authority::start(&[("cluster.local.", CLUSTER_ZONE)]).await;
    let world = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let zones = format!(
        "zones:\n  - name: cluster.local\n    upstreams: [\"{}\"]\n    transport: tcp\n  - name: .\n    upstreams: [\"{}\"]\n",
        cluster.addr, world.addr
    );
    let probe = query("www.example.", RecordType::A, None)
        .to_vec()
        .expect("encodes");
    let (mut running, addr) = start_run(dir.path(), &zones, "5s", &probe).await;

    let cases = [
        (
            "kube-dns.kube-system.svc.cluster.local.",
            Ipv4Addr::new(10, 96, 0, 10),
        ),
        ("www.example.", Ipv4Addr::new(192, 0, 2, 1)),
    ];
    for (qname, address) in cases {
        let msg = query(qname, RecordType::A, Some(1232));
        for answer in [
            common::udp_query(addr, &msg).await,
            common::tcp_query(addr, &msg).await,
        ] {
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NoError,
                "{qname}"
            );
            assert_eq!(addresses(&answer), [address], "{qname}");
        }
    }
    let nx = common::udp_query(addr, &query("nope.example.", RecordType::A, None)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities.len(), 1, "the SOA comes along");

    let status = sigterm(&mut running, Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status}");

    // The query log (log.query_sample: 1) has a line per answer, and the level filter of
    // the config (warn, query=info) keeps the start-up info lines out.
    let log = std::fs::read_to_string(dir.path().join("output.log")).expect("log written");
    let logged = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert!(logged("name=www.example.") >= 2, "{log}");
    assert_eq!(logged("name=nope.example."), 1, "{log}");
    assert!(
        log.contains("rcode=\"NXDOMAIN\"") || log.contains("rcode=NXDOMAIN"),
        "{log}"
    );
    assert!(
        log.contains("proto=\"tcp\"") || log.contains("proto=tcp"),
        "{log}"
    );
    assert!(
        !log.contains("shutting down"),
        "info lines are filtered out: {log}"
    );
}

/// `zones[].log` (CoreDNS's `log` in one block) logs every answer of that zone and none of
/// another's, whichever zone routes the name (the longest that contains it).
#[tokio::test]
async fn a_zone_with_log_logs_its_answers_only() {
    let world = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let zones = format!(
        "zones:\n  - name: example\n    upstreams: [\"{0}\"]\n    log: true\n  - name: www.example\n    upstreams: [\"{0}\"]\n  - name: .\n    upstreams: [\"{0}\"]\n",
        world.addr
    );
    let probe = query("probe.invalid.", RecordType::A, None)
        .to_vec()
        .expect("encodes");
    let (mut running, addr) = start_run_sampling(dir.path(), &zones, "1s", &probe, 0).await;
    for qname in ["nope.example.", "www.example.", "other.invalid."] {
        common::udp_query(addr, &query(qname, RecordType::A, None)).await;
    }
    let status = sigterm(&mut running, Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(dir.path().join("output.log")).expect("log written");
    let logged = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        logged("name=nope.example."),
        1,
        "the logged zone's answer: {log}"
    );
    assert_eq!(
        logged("name=www.example."),
        0,
        "a closer zone without log: {log}"
    );
    assert_eq!(logged("name=other.invalid."), 0, "another zone: {log}");
    assert_eq!(logged("name=probe.invalid."), 0, "{log}");
}

/// `zones[].log` with classes (CoreDNS's `log { class denial }`) logs only answers of those
/// classes: an NXDOMAIN and a NODATA of the zone, not its NOERROR with records.
#[tokio::test]
async fn a_zone_logging_denials_logs_nxdomain_and_nodata_only() {
    let world = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let zones = format!(
        "zones:\n  - name: example\n    upstreams: [\"{}\"]\n    log: [denial]\n",
        world.addr
    );
    let probe = query("probe.invalid.", RecordType::A, None)
        .to_vec()
        .expect("encodes");
    let (mut running, addr) = start_run_sampling(dir.path(), &zones, "1s", &probe, 0).await;
    for (qname, rtype) in [
        ("nope.example.", RecordType::A),
        ("v4only.example.", RecordType::AAAA),
        ("v4only.example.", RecordType::A),
    ] {
        common::udp_query(addr, &query(qname, rtype, None)).await;
    }
    let status = sigterm(&mut running, Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(dir.path().join("output.log")).expect("log written");
    // The start-up loop probe's own NXDOMAIN is a denial of the zone too: left out here.
    let asked = ["name=nope.example.", "name=v4only.example."];
    let logged: Vec<&str> = log
        .lines()
        .filter(|l| asked.iter().any(|name| l.contains(name)))
        .collect();
    assert_eq!(logged.len(), 2, "the NXDOMAIN and the NODATA: {log}");
    assert!(logged[0].contains("name=nope.example.") && logged[0].contains("rcode=\"NXDOMAIN\""));
    assert!(logged[1].contains("name=v4only.example.") && logged[1].contains("qtype=28"));
}

/// SIGTERM while queries wait on a slow upstream: the listeners stop, the queries already
/// taken are still answered (UDP and TCP), then the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_queries_in_flight_before_exiting() {
    let (udp, tcp) = sigterm_while_upstream_is_slow(Duration::from_millis(1500), "5s").await;
    assert_eq!(addresses(&udp), [Ipv4Addr::new(192, 0, 2, 77)]);
    assert_eq!(addresses(&tcp), [Ipv4Addr::new(192, 0, 2, 77)]);
}

/// SIGTERM while queries wait on an upstream slower than `shutdown.drain`: when the drain
/// runs out they are answered SERVFAIL (UDP and TCP), not left to time out, and the process
/// exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_servfail_to_queries_still_waiting_when_the_drain_ends() {
    let (udp, tcp) = sigterm_while_upstream_is_slow(Duration::from_secs(30), "300ms").await;
    assert_eq!(udp.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(tcp.metadata.response_code, ResponseCode::ServFail);
}

/// Starts `run` (drain `drain`) with an upstream that answers `slow*` names after
/// `slow_delay`, asks one such name over UDP and one over TCP, sends SIGTERM once both are
/// upstream, and returns their answers after checking that the process exited 0 and no longer
/// answers.
async fn sigterm_while_upstream_is_slow(slow_delay: Duration, drain: &str) -> (Message, Message) {
    let upstream = common::Scripted::start(std::sync::Arc::new(move |request: &Message, _| {
        let name = request.queries[0].name().to_ascii();
        let delay = if name.starts_with("slow") {
            slow_delay
        } else {
            Duration::ZERO
        };
        let answer = common::a_with(&name, 60, Ipv4Addr::new(192, 0, 2, 77));
        vec![(
            delay,
            common::reply(request, ResponseCode::NoError, vec![answer]),
        )]
    }))
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let zones = format!(
        "server:\n  loop_check: false\nzones:\n  - name: example\n    upstreams: [\"{}\"]\n    timeout: 60s\n    deadline: 60s\n    cache:\n      enabled: false\n",
        upstream.addr
    );
    let probe = query("fast.example.", RecordType::A, None)
        .to_vec()
        .expect("encodes");
    let (mut running, addr) = start_run(dir.path(), &zones, drain, &probe).await;

    let udp = tokio::spawn(async move {
        let msg = query("slow-udp.example.", RecordType::A, None);
        udp_raw(
            addr,
            &msg.to_vec().expect("encodes"),
            Duration::from_secs(10),
        )
        .await
    });
    let tcp = tokio::spawn(async move {
        common::tcp_query(addr, &query("slow-tcp.example.", RecordType::A, None)).await
    });
    assert!(
        common::eventually(|| upstream.seen().len() >= 3).await,
        "both slow queries reached the upstream"
    );
    let exited = tokio::spawn(async move {
        let status = sigterm(&mut running, Duration::from_secs(10)).await;
        (running, status)
    });

    let udp = udp.await.expect("task").expect("the UDP query is answered");
    let udp = Message::from_vec(&udp).expect("decodes");
    let tcp = tcp.await.expect("task");
    let (_running, status) = exited.await.expect("task");
    assert!(status.success(), "exits 0 after draining: {status}");
    assert!(
        udp_raw(addr, &probe, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing answers once it has exited"
    );
    (udp, tcp)
}

/// `rules` prints what a config or a node-cache command line would install, in the backend's
/// own language, and says whether the link-local fallback is armed; it installs nothing (it
/// runs as any user, in any namespace).
#[test]
fn rules_prints_the_rules_a_config_would_install() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = |backend: &str, fallback: &str| {
        format!(
            "listen: [\"169.254.20.10:53\", \"10.96.0.10:53\"]\nnode:\n  setup_iptables: true\n  local_ips: [169.254.20.10, 10.96.0.10]\n  backend: {backend}\n{fallback}zones:\n  - name: .\n    upstreams: [\"127.0.0.1:5353\"]\n"
        )
    };
    let fallback = "  fallback:\n    endpoints: [\"10.244.1.2:53\", \"10.244.1.3:53\"]\n";
    let tool_installed = |tool: &str| Command::new(tool).arg("--version").output().is_ok();

    if tool_installed("nft") {
        let config = write(dir.path(), "nft.yaml", &yaml("nftables", fallback));
        let out = nodelocal_dns(&["rules", "--config", &config]);
        assert!(out.status.success(), "{out:?}");
        let printed = text(&out.stdout);
        assert!(
            printed.starts_with("# backend: nftables;") && printed.contains("armed, 2 UDP"),
            "{printed}"
        );
        assert!(printed.contains("ip daddr 10.96.0.10 udp dport 53 socket wildcard 0 notrack"));
        assert!(printed.contains(
            "dnat ip addr . port to numgen random mod 2 map { 0 : 10.244.1.2 . 53, 1 : 10.244.1.3 . 53 }"
        ));
    }
    if tool_installed("iptables") {
        let config = write(dir.path(), "ipt.yaml", &yaml("iptables", ""));
        let out = nodelocal_dns(&["rules", "--config", &config]);
        assert!(out.status.success(), "{out:?}");
        let printed = text(&out.stdout);
        assert!(printed.contains("NOT ARMED"), "no endpoint: {printed}");
        assert!(printed.contains(
            "iptables -w 5 -t raw -I PREROUTING -p udp -d 169.254.20.10 --dport 53 -m socket \
             --nowildcard -j NOTRACK -m comment --comment \"NodeLocal DNS Cache: skip conntrack\""
        ));
        assert!(printed.contains("-j NODELOCALDNS-FALLBACK"));

        // node-cache's command line: -upstreamsvc names the Service the fallback follows.
        let base = write(
            dir.path(),
            "Corefile.base",
            ".:53 {\n    bind 169.254.20.10\n    forward . 127.0.0.1:5353\n}\n",
        );
        let corefile = dir.path().join("Corefile").display().to_string();
        let out = nodelocal_dns(&[
            "rules",
            "-localip",
            "169.254.20.10",
            "-basecorefile",
            &base,
            "-conf",
            &corefile,
            "-upstreamsvc",
            "kube-dns-upstream",
            "-rulesbackend",
            "iptables",
        ]);
        assert!(out.status.success(), "{out:?}");
        let printed = text(&out.stdout);
        assert!(
            printed.contains("Service kube-system/kube-dns-upstream"),
            "{printed}"
        );
    }
    let out = nodelocal_dns(&["rules"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--config FILE or node-cache's flags"));
}
