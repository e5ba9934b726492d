//! Node setup in network namespaces the tests create: the local IPs on a link, node-
//! cache's NOTRACK/ACCEPT rules read back with iptables, a deleted rule restored by the next
//! sync, teardown removing only what setup added, the missing-dummy-driver error and its
//! fallback, and queries to the local IP answered inside the namespace from a real dnsmasq.
//!
//! Needs root (`ip netns`); without it each test says so and passes vacuously.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::netns::Netns;
use common::process::Running;
use nodelocal_dns::config::node::NodeConfig;
use nodelocal_dns::node::iptables::{Rule, rules};
use nodelocal_dns::node::{Backend, DivertSpec, ServiceEndpoints, nftables};

const BIN: &str = env!("CARGO_BIN_EXE_nodelocal-dns");
const LOCAL_IP: &str = "169.254.20.10";
const LOCAL_IP6: &str = "fd00:10::10";

fn write_config(dir: &Path, text: &str) -> String {
    write_config_as(dir, "node.yaml", text)
}

fn write_config_as(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

fn node_config(link: &str, extra: &str) -> String {
    format!(
        "listen: [\"{LOCAL_IP}:53\"]\nnode:\n  setup_interface: true\n  setup_iptables: true\n  interface_name: {link}\n  local_ips: [{LOCAL_IP}]\n{extra}zones:\n  - name: .\n    upstreams: [\"127.0.0.1:5353\"]\n"
    )
}

fn expected_rules() -> Vec<Rule> {
    let ip: IpAddr = LOCAL_IP.parse().expect("an IP");
    rules_for(&[ip])
}

/// Our iptables rules for `local_ips` with the default ports: node-cache's 12 per IP, and the
/// fallback jumps of the link-local ones.
fn rules_for(local_ips: &[IpAddr]) -> Vec<Rule> {
    rules(&DivertSpec::from_config(&NodeConfig {
        local_ips: local_ips.to_vec(),
        ..NodeConfig::default()
    }))
}

/// How many lines of `iptables-save` hold our rules for [`LOCAL_IP`].
fn rule_count() -> usize {
    expected_rules().len()
}

/// Without a dummy driver `setup` fails saying what to do; with an existing link named in
/// `interface_name` (the fallback) it succeeds. With the driver, the dummy link is created.
#[test]
fn the_link_is_a_new_dummy_or_an_existing_link_when_there_is_no_dummy_driver() {
    let Some(ns) = Netns::new("dummy") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), &node_config("nodelocaldns", ""));
    let setup = ns.run(&[BIN, "setup", "--config", &config]);
    if ns.dummy_supported() {
        assert!(setup.status.success(), "{setup:?}");
        assert!(
            ns.ok(&["ip", "-d", "link", "show", "nodelocaldns"])
                .contains("dummy")
        );
        assert!(ns.addresses("nodelocaldns").contains(LOCAL_IP));
        return;
    }
    assert!(!setup.status.success(), "no dummy driver: setup fails");
    let stderr = String::from_utf8_lossy(&setup.stderr);
    assert!(stderr.contains("no dummy link type"), "{stderr}");
    assert!(
        stderr.contains("node.interface_name"),
        "names the fallback: {stderr}"
    );

    let config = write_config(dir.path(), &node_config("lo", ""));
    let setup = ns.run(&[BIN, "setup", "--config", &config]);
    assert!(setup.status.success(), "{setup:?}");
    assert!(ns.addresses("lo").contains(LOCAL_IP));
}

/// Setup adds the address and exactly node-cache's rules; teardown removes exactly those,
/// leaving an unrelated rule, the link and its other addresses alone.
#[test]
fn setup_adds_exactly_the_rules_and_teardown_removes_only_them() {
    let Some(ns) = Netns::new("rules") else {
        return;
    };
    ns.ok(&[
        "ip", "link", "add", "nl0", "type", "veth", "peer", "name", "nl1",
    ]);
    ns.ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", "nl0"]);
    ns.ok(&[
        "iptables", "-w", "5", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT",
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), &node_config("nl0", ""));

    ns.ok(&[BIN, "setup", "--config", &config]);
    let rules = expected_rules();
    assert_eq!(
        rules.len(),
        14,
        "node-cache's 12 and the fallback's 2 jumps"
    );
    for rule in &rules {
        assert!(ns.has_rule(rule), "missing {rule}");
    }
    assert_eq!(ns.our_rule_count(), rule_count(), "exactly our rules, once");
    assert!(ns.addresses("nl0").contains(&format!("{LOCAL_IP}/32")));

    ns.ok(&[BIN, "setup", "--config", &config]);
    assert_eq!(
        ns.our_rule_count(),
        rule_count(),
        "a second setup adds no duplicate"
    );

    ns.ok(&[BIN, "teardown", "--config", &config]);
    assert_eq!(ns.our_rule_count(), 0);
    assert!(!ns.addresses("nl0").contains(LOCAL_IP));
    assert!(
        ns.addresses("nl0").contains("192.0.2.1/24"),
        "other addresses stay"
    );
    let input = ns.ok(&["iptables", "-w", "5", "-S", "INPUT"]);
    assert!(
        input.contains("-p icmp -j ACCEPT"),
        "unrelated rules stay: {input}"
    );
}

/// A client in the namespace (python3) that asks `name` A at `server`:`port`, waits up to
/// 2 s and prints the rcode and the first A address ("-" for none).
fn client(ns: &Netns, server: &str, port: u16, name: &str) -> Command {
    const CLIENT: &str = r#"
import socket, struct, sys
server, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
for label in name.strip(".").split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (server, port))
r = s.recv(4096)
rcode = r[3] & 0x0f
address = "-"
if struct.unpack(">H", r[6:8])[0] > 0 and r[-6:-4] == b"\x00\x04":
    address = socket.inet_ntoa(r[-4:])
print(rcode, address)
"#;
    ns.command(&["python3", "-c", CLIENT, server, &port.to_string(), name])
}

/// Asks `name` A at `server` from inside the namespace and returns the rcode and the first A
/// address, if any; or why there is no answer.
fn ask(ns: &Netns, server: &str, port: u16, name: &str) -> Result<(u8, Option<String>), String> {
    let out = client(ns, server, port, name)
        .output()
        .expect("ip netns exec runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match words.next().map(str::parse) {
        Some(Ok(rcode)) if out.status.success() => {
            let address = words.next().filter(|a| *a != "-").map(String::from);
            Ok((rcode, address))
        }
        _ => Err(format!(
            "the client ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )),
    }
}

/// `run` in the namespace: answers on the local IP from a real dnsmasq upstream, puts back a
/// rule deleted by hand at the next sync, and removes its rules when it exits on SIGTERM.
#[test]
fn run_answers_on_the_local_ip_restores_rules_and_tears_down_on_exit() {
    let Some(ns) = Netns::new("run") else {
        return;
    };
    let _upstream = dnsmasq_upstream(&ns);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), &node_config("nl0", &run_extra("0s")));
    let mut server = instance(&ns, &config);

    let answer = answering(&ns, &mut server, LOCAL_IP);
    assert_eq!(answer, (0, Some("192.0.2.55".to_string())));
    assert!(
        eventually(|| ns.our_rule_count() == rule_count()),
        "rules installed"
    );

    let removed = &expected_rules()[0];
    let mut delete = vec![
        "iptables",
        "-w",
        "5",
        "-t",
        removed.table,
        "-D",
        removed.chain,
    ];
    delete.extend(removed.args.iter().map(String::as_str));
    ns.ok(&delete);
    assert!(!ns.has_rule(removed));
    assert!(
        eventually(|| ns.has_rule(removed)),
        "the next sync restores {removed}"
    );

    stop(&mut server, Duration::from_secs(25));
    assert_eq!(ns.our_rule_count(), 0, "teardown on exit");
    assert!(!ns.addresses("nl0").contains(LOCAL_IP));
}

/// A real DNS server inside the namespace on 127.0.0.1:5353 (names under svc.test are
/// 192.0.2.55), answering by the time this returns, and the link nl0 the local IP goes on.
fn dnsmasq_upstream(ns: &Netns) -> Running {
    if Command::new("dnsmasq").arg("--version").output().is_err()
        || Command::new("python3").arg("--version").output().is_err()
    {
        panic!("dnsmasq and python3 are needed (scripts/test.sh installs them)");
    }
    ns.ok(&[
        "ip", "link", "add", "nl0", "type", "veth", "peer", "name", "nl1",
    ]);
    let mut dnsmasq = Running::spawn(ns.command(&[
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--port=5353",
        "--address=/svc.test/192.0.2.55",
        // No /run/dnsmasq.pid: several tests start a dnsmasq at once, and that file is
        // shared by all of them.
        "--pid-file=",
    ]));
    // Otherwise a forwarder's first query can meet a closed port and answer SERVFAIL.
    // Generous: each try starts python3 in the namespace, slow on a loaded 2-core machine
    // (CI once saw no answer within 10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = ask(ns, "127.0.0.1", 5353, "api.svc.test.");
        if matches!(answer, Ok((0, _))) {
            return dnsmasq;
        }
        // CI has seen this dnsmasq never answer: say what it and the client said.
        assert!(
            Instant::now() < deadline && !dnsmasq.has_exited(),
            "dnsmasq does not answer on 127.0.0.1:5353: {answer:?}; dnsmasq {}",
            dnsmasq.report()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The config keys of a `run` in a namespace: a fast sync, no HTTP, no loop probe.
fn run_extra(lameduck: &str) -> String {
    format!(
        "  sync_interval: 1s\nmetrics:\n  enabled: false\nserver:\n  loop_check: false\nshutdown:\n  lameduck: {lameduck}\n"
    )
}

fn instance(ns: &Netns, config: &str) -> Running {
    Running::spawn(ns.command(&[BIN, "run", "--config", config]))
}

/// SIGTERM, then waits up to `bound` for a clean exit.
fn stop(server: &mut Running, bound: Duration) {
    server.signal(libc::SIGTERM);
    let status = server.exit_status(bound);
    assert!(status.success(), "{}", server.report());
}

/// Waits until `instance` answers a svc.test name on `server`.
fn answering(ns: &Netns, instance: &mut Running, server: &str) -> (u8, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask(ns, server, 53, "api.svc.test.");
        if let Ok(answer) = answer {
            return answer;
        }
        assert!(
            Instant::now() < deadline && !instance.has_exited(),
            "no answer on {server}:53: {answer:?}; the forwarder {}",
            instance.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A rolling update on one node: a second instance starts on the same address
/// (SO_REUSEPORT) while the first serves, the first gets SIGTERM under a steady stream of
/// queries, serves its lameduck, drains and exits leaving the rules and the address to the
/// second; not one query of the stream goes unanswered. The second's exit tears down.
#[test]
fn a_rolling_restart_under_load_loses_no_query_and_keeps_the_rules() {
    let Some(ns) = Netns::new("roll") else {
        return;
    };
    let _upstream = dnsmasq_upstream(&ns);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), &node_config("nl0", &run_extra("1s")));
    let mut old = instance(&ns, &config);
    assert_eq!(answering(&ns, &mut old, LOCAL_IP).0, 0);

    // 400 queries, each from a fresh socket (so the kernel spreads them over both
    // instances), one every 10 ms, each allowed 2 s; prints "sent answered".
    const STREAM: &str = r#"
import socket, struct, sys, time
sent = answered = 0
for i in range(400):
    q = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0)
    for label in ("q%d" % i, "svc", "test"):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(q, (sys.argv[1], 53))
    sent += 1
    try:
        if s.recv(4096)[:2] == q[:2]:
            answered += 1
    except socket.timeout:
        pass
    s.close()
    time.sleep(0.01)
print(sent, answered)
"#;
    let stream = ns
        .command(&["python3", "-c", STREAM, LOCAL_IP])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the stream starts");
    std::thread::sleep(Duration::from_millis(500));
    let mut new = instance(&ns, &config);
    std::thread::sleep(Duration::from_millis(700));
    stop(&mut old, Duration::from_secs(15));
    assert_eq!(
        ns.our_rule_count(),
        rule_count(),
        "the exiting instance leaves the rules to the new one"
    );
    assert!(ns.addresses("nl0").contains(LOCAL_IP));

    let out = stream.wait_with_output().expect("the stream ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), "400 400", "sent answered");
    assert_eq!(
        answering(&ns, &mut new, LOCAL_IP).1.as_deref(),
        Some("192.0.2.55")
    );

    stop(&mut new, Duration::from_secs(15));
    assert_eq!(ns.our_rule_count(), 0, "the last instance tears down");
}

/// IPv4 and IPv6 local IPs in one process (node-cache needs one per family): both
/// addresses on the link, node-cache's rules through iptables and ip6tables, and answers on
/// both addresses; the exit removes both families' rules.
#[test]
fn one_process_serves_and_sets_up_both_families() {
    let Some(ns) = Netns::new("dual") else {
        return;
    };
    // Duplicate address detection stays on, as on a node: the IPv6 address goes on a veth
    // whose peer is down, where DAD would keep it tentative (unbindable) for ever unless
    // setup adds it without DAD.
    let _upstream = dnsmasq_upstream(&ns);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = node_config("nl0", &run_extra("0s"))
        .replace(
            &format!("listen: [\"{LOCAL_IP}:53\"]"),
            &format!("listen: [\"{LOCAL_IP}:53\", \"[{LOCAL_IP6}]:53\"]"),
        )
        .replace(
            &format!("local_ips: [{LOCAL_IP}]"),
            &format!("local_ips: [{LOCAL_IP}, \"{LOCAL_IP6}\"]"),
        );
    let config = write_config(dir.path(), &config);
    let mut server = instance(&ns, &config);

    for ip in [LOCAL_IP, LOCAL_IP6] {
        let answer = answering(&ns, &mut server, ip);
        assert_eq!(answer.1.as_deref(), Some("192.0.2.55"), "on {ip}");
    }
    let ips: Vec<IpAddr> = [LOCAL_IP, LOCAL_IP6]
        .iter()
        .map(|ip| ip.parse().expect("an IP"))
        .collect();
    let rules = rules_for(&ips);
    assert_eq!(
        rules.len(),
        26,
        "12 per IP, and the link-local one's fallback jumps"
    );
    assert!(
        eventually(|| rules.iter().all(|r| ns.has_rule(r))),
        "both families' rules"
    );
    assert_eq!(ns.our_rule_count(), rules.len());
    assert!(ns.addresses("nl0").contains(LOCAL_IP6));

    stop(&mut server, Duration::from_secs(25));
    assert_eq!(ns.our_rule_count(), 0);
}

/// An exit while a query still waits on a silent upstream, past `shutdown.drain`: the query's
/// task still holds the socket it came in on, and the check for a successor must not take
/// that for another instance serving the address. Every rule and the address go.
#[test]
fn an_exit_with_a_query_still_upstream_tears_down() {
    let Some(ns) = Netns::new("silent") else {
        return;
    };
    let _upstream = dnsmasq_upstream(&ns);
    // Now silent: its queries vanish, so the forwarder waits out its whole deadline.
    for proto in ["udp", "tcp"] {
        ns.ok(&[
            "iptables", "-w", "5", "-I", "INPUT", "-p", proto, "--dport", "5353", "-j", "DROP",
        ]);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = node_config("nl0", &run_extra("0s"))
        .replace("  lameduck: 0s\n", "  lameduck: 0s\n  drain: 200ms\n")
        .replace(
            "    upstreams:",
            "    timeout: 10s\n    deadline: 20s\n    upstreams:",
        );
    let config = write_config(dir.path(), &config);
    let mut server = instance(&ns, &config);
    assert!(
        eventually(|| ns.our_rule_count() == rule_count()),
        "serving: {}",
        server.report()
    );
    let waiting = Running::spawn(client(&ns, LOCAL_IP, 53, "api.svc.test."));
    // The query reaches the forwarder and goes upstream (python starts in well under this).
    std::thread::sleep(Duration::from_millis(1500));

    stop(&mut server, Duration::from_secs(10));
    assert_eq!(ns.our_rule_count(), 0, "teardown ran: {}", server.report());
    assert!(!ns.addresses("nl0").contains(LOCAL_IP));
    drop(waiting);
}

/// Teardown while the config is being reloaded (node-cache deadlocks there and leaves its
/// NOTRACK rules): the config changes, SIGTERM lands while the 2 s reload checks run, and the
/// process still exits within its bound with every rule removed.
#[test]
fn teardown_is_bounded_while_the_config_reloads() {
    let Some(ns) = Netns::new("reload") else {
        return;
    };
    let _upstream = dnsmasq_upstream(&ns);
    let dir = tempfile::tempdir().expect("temp dir");
    let text = node_config("nl0", &run_extra("0s"));
    let config = write_config(dir.path(), &text);
    let mut server = instance(&ns, &config);
    assert_eq!(answering(&ns, &mut server, LOCAL_IP).0, 0);
    assert!(eventually(|| ns.our_rule_count() == rule_count()));

    for i in 0..20 {
        // A valid change, then an invalid one, again and again: reloads and failed reloads.
        let next = if i % 2 == 0 {
            text.replace(
                "upstreams:",
                &format!("unanswered_ttl: {i}s\n    upstreams:"),
            )
        } else {
            format!("{text}bogus: true\n")
        };
        std::fs::write(&config, next).expect("rewrite config");
        std::thread::sleep(Duration::from_millis(110));
    }
    stop(&mut server, Duration::from_secs(10));
    assert_eq!(ns.our_rule_count(), 0, "teardown ran");
}

/// Polls `condition` for up to 10 s.
fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

/// `run` in the namespace as the namespace's own process from its first instruction
/// ([`Running::exec_in`]).
fn exec_in(ns: &Netns, config: &str) -> Running {
    Running::exec_in(ns, BIN, &["run", "--config", config], None)
}

/// The link the lifecycle tests set up: a dummy the forwarder creates (and must delete), or
/// the namespace's veth where the kernel has no dummy driver.
fn lifecycle_link(ns: &Netns) -> &'static str {
    if ns.dummy_supported() {
        "nldns0"
    } else {
        "nl0"
    }
}

/// Lines of `ip -o addr` (every link) holding the local IP.
fn local_ip_count(ns: &Netns) -> usize {
    ns.ok(&["ip", "-o", "addr", "show"])
        .lines()
        .filter(|l| l.contains(&format!(" {LOCAL_IP}/")))
        .count()
}

fn link_exists(ns: &Netns, link: &str) -> bool {
    ns.run(&["ip", "link", "show", link]).status.success()
}

/// A namespace with a dnsmasq upstream and a config for `run` there: the world of one
/// lifecycle test.
struct LifecycleNode {
    ns: Netns,
    backend: Backend,
    link: &'static str,
    config: String,
    /// The same with `workers: 1`, which runs on tokio's current-thread runtime rather than
    /// the multi-thread one: start-up and stop must be as safe on both.
    single_worker_config: String,
    _upstream: Running,
    _dir: tempfile::TempDir,
}

impl LifecycleNode {
    /// `None` (with a message) when not root.
    fn new(tag: &str, lameduck: &str, backend: Backend) -> Option<LifecycleNode> {
        let ns = Netns::new(&format!("{tag}-{}", &backend.name()[..2]))?;
        if !backend.is_installed() {
            eprintln!("skipped: {} is not installed", backend.name());
            return None;
        }
        let upstream = dnsmasq_upstream(&ns);
        let link = lifecycle_link(&ns);
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = format!("  backend: {}\n{}", backend.name(), run_extra(lameduck));
        let text = node_config(link, &extra);
        let config = write_config(dir.path(), &text);
        let single_worker_config = write_config_as(
            dir.path(),
            "node-one-worker.yaml",
            &format!("workers: 1\n{text}"),
        );
        Some(LifecycleNode {
            ns,
            backend,
            link,
            config,
            single_worker_config,
            _upstream: upstream,
            _dir: dir,
        })
    }

    /// An instance answering on the local IP with all its rules in.
    fn serving(&self) -> Running {
        let mut server = exec_in(&self.ns, &self.config);
        assert_eq!(answering(&self.ns, &mut server, LOCAL_IP).0, 0);
        assert!(eventually(|| self.ns.our_rule_count() == self.rule_count()));
        server
    }

    /// How many rules of ours the backend shows once all are in.
    fn rule_count(&self) -> usize {
        match self.backend {
            Backend::Iptables => rule_count(),
            Backend::Nftables => {
                let ip: IpAddr = LOCAL_IP.parse().expect("an IP");
                let spec = DivertSpec::from_config(&NodeConfig {
                    local_ips: vec![ip],
                    ..NodeConfig::default()
                });
                nftables::render(&spec, &ServiceEndpoints::default())
                    .lines()
                    .filter(|line| line.contains("NodeLocal DNS Cache"))
                    .count()
            }
        }
    }
}

/// Runs a lifecycle test on each backend, each in a namespace of its own.
macro_rules! on_both_backends {
    ($body:ident: $iptables:ident, $nftables:ident) => {
        #[test]
        fn $iptables() {
            $body(Backend::Iptables);
        }

        #[test]
        fn $nftables() {
            $body(Backend::Nftables);
        }
    };
}

/// The node is as the test found it: no rule of ours, no local IP, no link of ours.
fn assert_as_found(ns: &Netns, link: &str, server: &mut Running, moment: &str) {
    assert_eq!(
        ns.our_rule_count(),
        0,
        "{moment}: rules left behind; {}",
        server.report()
    );
    assert_eq!(
        local_ip_count(ns),
        0,
        "{moment}: the local IP left behind; {}",
        server.report()
    );
    if link != "nl0" {
        assert!(
            !link_exists(ns, link),
            "{moment}: the dummy link left behind; {}",
            server.report()
        );
    }
}

/// The moments of start-up a SIGTERM is sent at: fixed delays after exec (config read,
/// netlink, HTTP, binding and the iptables calls each take milliseconds, so they spread over
/// all of them), and three moments seen from outside: the address up, the first rule in, all
/// rules in.
#[derive(Debug, Clone, Copy)]
enum Moment {
    After(Duration),
    AddressUp,
    FirstRule,
    AllRules,
}

on_both_backends!(a_sigterm_at_any_moment_of_start_up_leaves_the_node_as_found: a_sigterm_at_any_moment_of_start_up_leaves_the_node_as_found_iptables, a_sigterm_at_any_moment_of_start_up_leaves_the_node_as_found_nftables);

/// SIGTERM at any moment of start-up (kubelet sends it when a pod is deleted or a rollout
/// moves on while the pod still starts) is a clean stop: the process exits 0 saying it stopped
/// on SIGTERM, and no rule, address or link of ours is left, whether start-up had installed
/// none, some or all of them. (A signal in the first instants after exec, before `run`'s first
/// line, still takes the default action; nothing has been done then.) Before the handlers were taken at the first line of `run`, a
/// signal between the rules and the handler killed the process with every rule in place.
/// Every other moment runs with `workers: 1`, on the current-thread runtime.
fn a_sigterm_at_any_moment_of_start_up_leaves_the_node_as_found(backend: Backend) {
    let Some(node) = LifecycleNode::new("sigterm", "0s", backend) else {
        return;
    };
    let (ns, link) = (&node.ns, node.link);
    let mut moments: Vec<Moment> = [0, 1, 2, 4, 7, 10, 15, 20, 30, 40, 55, 70, 90, 120, 160, 220]
        .into_iter()
        .map(|ms| Moment::After(Duration::from_millis(ms)))
        .collect();
    moments.extend([Moment::AddressUp, Moment::FirstRule, Moment::AllRules]);
    let mut rules_at_signal = Vec::new();
    for (index, moment) in moments.into_iter().enumerate() {
        use std::os::unix::process::ExitStatusExt;
        // Every other moment on one worker: both runtime flavours stop at many moments.
        let (config, workers) = match index % 2 {
            0 => (&node.config, "default workers"),
            _ => (&node.single_worker_config, "workers: 1"),
        };
        let mut server = exec_in(ns, config);
        let reached = match moment {
            Moment::After(delay) => {
                std::thread::sleep(delay);
                true
            }
            Moment::AddressUp => eventually(|| local_ip_count(ns) > 0),
            Moment::FirstRule => eventually(|| ns.our_rule_count() > 0),
            Moment::AllRules => eventually(|| ns.our_rule_count() == node.rule_count()),
        };
        assert!(reached, "{moment:?} never came: {}", server.report());
        server.signal(libc::SIGTERM);
        let rules = ns.our_rule_count();
        rules_at_signal.push((moment, rules));
        let status = server.exit_status(Duration::from_secs(25));
        let what = format!("SIGTERM at {moment:?} ({rules} rules in, {workers})");
        let printed = server.printed();
        let before_main = status.signal() == Some(libc::SIGTERM) && printed.is_empty();
        if before_main {
            // Between exec and the first line of `run` (the dynamic loader, the runtime's
            // set-up) no handler can exist yet; nothing of ours has been done either.
            assert!(
                matches!(moment, Moment::After(_)),
                "{what}: killed though start-up had begun: {}",
                server.report()
            );
        } else {
            assert_eq!(status.code(), Some(0), "{what}: {}", server.report());
            assert!(
                printed.contains("stopped on SIGTERM"),
                "{what}: the log says why it stopped: {}",
                server.report()
            );
        }
        assert_as_found(ns, link, &mut server, &what);
    }
    eprintln!("rules in place when the signal was sent: {rules_at_signal:?}");
    assert!(
        rules_at_signal.iter().any(|&(_, rules)| rules == 0)
            && rules_at_signal.iter().any(|&(_, rules)| rules > 0),
        "the moments span before and after the rules: {rules_at_signal:?}"
    );
}

on_both_backends!(a_second_sigterm_cuts_the_lameduck_short_and_still_tears_down: a_second_sigterm_cuts_the_lameduck_short_and_still_tears_down_iptables, a_second_sigterm_cuts_the_lameduck_short_and_still_tears_down_nftables);

/// A second SIGTERM during a long lameduck ends the wait at once, and still tears down.
fn a_second_sigterm_cuts_the_lameduck_short_and_still_tears_down(backend: Backend) {
    let Some(node) = LifecycleNode::new("twice", "120s", backend) else {
        return;
    };
    let mut server = node.serving();
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!server.has_exited(), "in lameduck: {}", server.report());
    // Far below the 120 s lameduck: only teardown is left to do.
    stop(&mut server, Duration::from_secs(25));
    assert!(server.report().contains("lameduck cut short"));
    assert_as_found(&node.ns, node.link, &mut server, "after the second SIGTERM");
}

on_both_backends!(after_a_sigkill_the_next_start_adopts_the_rules_and_the_address: after_a_sigkill_the_next_start_adopts_the_rules_and_the_address_iptables, after_a_sigkill_the_next_start_adopts_the_rules_and_the_address_nftables);

/// SIGKILL (an OOM kill) leaves everything in place with nobody to remove it. The next start
/// adopts what it finds: exactly one copy of each rule and of the address while it serves, and
/// its SIGTERM removes them all, the killed one's link included.
fn after_a_sigkill_the_next_start_adopts_the_rules_and_the_address(backend: Backend) {
    let Some(node) = LifecycleNode::new("killed", "0s", backend) else {
        return;
    };
    let ns = &node.ns;
    let mut killed = node.serving();
    killed.signal(libc::SIGKILL);
    let status = killed.exit_status(Duration::from_secs(5));
    assert_eq!(status.code(), None, "killed, not exited");
    assert_eq!(
        ns.our_rule_count(),
        node.rule_count(),
        "a killed process removes nothing"
    );
    assert_eq!(local_ip_count(ns), 1);

    let mut next = node.serving();
    // Past the first periodic sync too (sync_interval 1s): still no duplicate.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ns.our_rule_count(),
        node.rule_count(),
        "one copy of each rule"
    );
    if backend == Backend::Iptables {
        for rule in &expected_rules() {
            assert!(ns.has_rule(rule), "missing {rule}");
        }
    }
    assert_eq!(local_ip_count(ns), 1, "one copy of the address");

    stop(&mut next, Duration::from_secs(25));
    assert_as_found(
        ns,
        node.link,
        &mut next,
        "after the adopting instance's exit",
    );
}

on_both_backends!(a_sigkill_at_any_moment_of_start_up_is_adopted_by_the_next_start: a_sigkill_at_any_moment_of_start_up_is_adopted_by_the_next_start_iptables, a_sigkill_at_any_moment_of_start_up_is_adopted_by_the_next_start_nftables);

/// A SIGKILL at any moment of start-up (an OOM kill, a node drain's force) leaves whatever
/// part of the setup was done, with nobody to remove it. The next start adopts that part,
/// whatever it is: it serves with exactly one copy of each rule and of the address, and its
/// exit leaves the node as it was before either ran.
fn a_sigkill_at_any_moment_of_start_up_is_adopted_by_the_next_start(backend: Backend) {
    let Some(node) = LifecycleNode::new("killstart", "0s", backend) else {
        return;
    };
    let ns = &node.ns;
    let mut left_behind = Vec::new();
    // The moments are after exec; how far start-up has come by then depends on the machine's
    // load. The last kill (`None`) waits until every rule is in, so that one kill at least
    // leaves the whole setup to adopt however slow the machine is.
    for moment in [3, 8, 15, 25, 40, 60, 90, 150, 250]
        .map(Some)
        .into_iter()
        .chain([None])
    {
        let mut killed = exec_in(ns, &node.config);
        match moment {
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
            None => assert!(eventually(|| ns.our_rule_count() == node.rule_count())),
        }
        let ms = moment.map_or_else(|| "all rules in".to_string(), |ms| format!("{ms} ms"));
        killed.signal(libc::SIGKILL);
        killed.exit_status(Duration::from_secs(5));
        left_behind.push((ms.clone(), ns.our_rule_count(), local_ip_count(ns)));

        let mut next = node.serving();
        assert_eq!(
            ns.our_rule_count(),
            node.rule_count(),
            "after a SIGKILL at {ms}: one copy of each rule"
        );
        assert_eq!(
            local_ip_count(ns),
            1,
            "after a SIGKILL at {ms}: one address"
        );
        stop(&mut next, Duration::from_secs(25));
        assert_as_found(
            ns,
            node.link,
            &mut next,
            &format!("after a SIGKILL at {ms}"),
        );
    }
    eprintln!("(moment, rules, addresses) a SIGKILL left: {left_behind:?}");
    assert!(
        left_behind.iter().any(|&(_, rules, _)| rules > 0),
        "some SIGKILL left rules behind to adopt: {left_behind:?}"
    );
}
