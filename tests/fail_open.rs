//! Fail open: pods' DNS is diverted to us only while a socket of ours is bound. Our NOTRACK
//! rules match only packets for a bound socket (`-m socket --nowildcard`, nftables' `socket
//! wildcard 0`), so when we are dead a query to the kube-dns ClusterIP goes through
//! kube-proxy's own DNAT to kube-dns, and one to the link-local IP through our fallback DNAT
//! to the kube-dns endpoints. Node-cache instead leaves its NOTRACK rules behind a SIGKILL or
//! an OOM kill and every pod on the node loses DNS until it is back.
//!
//! Each test builds a node in network namespaces ([`common::cluster`]), with kube-proxy's
//! iptables or nftables mode and our matching `node.backend`, and runs clients in the pod as
//! real ones ask (a stub's fresh socket per lookup, one connected socket for the whole test,
//! glibc's getaddrinfo), each retrying once after 1 s as `options timeout:1 attempts:2` does.
//! Their lookups must all be answered, by us (203.0.113.7) or by kube-dns (192.0.2.55),
//! through every kill and restart. Counts only: nothing here asserts a duration.
//!
//! Needs root; without it (or without `nft`, or the socket match) a test says so and passes
//! vacuously.

mod common;

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::cluster::cgroup::MemoryCgroup;
use common::cluster::clients::{Client, Outcome, fresh_name};
use common::cluster::{Backend, Cluster, KUBE_DNS_SERVICE, Layout};
use common::process::Running;

/// How long the node stays without us after a kill: longer than a stub's retry (1 s), so a
/// query lost with the killed process is asked again while nothing of ours is bound.
const DEAD_GAP: Duration = Duration::from_millis(1500);

/// How long a client gets to show a change of who answers it.
const CLIENT_BOUND: Duration = Duration::from_secs(10);

const BACKENDS: [Backend; 2] = [Backend::Iptables, Backend::Nftables];

/// The pod's clients, each the way one kind of real client asks the address pods ask.
struct PodClients {
    stub: Client,
    connected: Client,
    getaddrinfo: Option<Client>,
}

impl PodClients {
    fn start(cluster: &Cluster) -> PodClients {
        let served = cluster.served();
        PodClients {
            stub: Client::stub("stub", cluster.pod.clone(), served),
            connected: Client::connected("connected", cluster.pod.clone(), served),
            getaddrinfo: Client::getaddrinfo(cluster.pod.clone(), served),
        }
    }

    /// Stops every client, prints their counts, and fails the test on any failed lookup.
    fn finish(self, what: &str, cluster: &Cluster) {
        let mut tallies = vec![
            (self.stub.label.clone(), self.stub.stop()),
            (self.connected.label.clone(), self.connected.stop()),
        ];
        if let Some(client) = self.getaddrinfo {
            tallies.push((client.label.clone(), client.stop()));
        }
        for (label, tally) in &tallies {
            eprintln!("{what}: pod, {label}: {tally}");
        }
        for (label, tally) in &tallies {
            assert_eq!(
                tally.failed,
                0,
                "{what}: pod, {label}: {tally}; conntrack entries our answers opened:\n{}",
                cluster.entries_opened_by_our_answers()
            );
            assert!(
                tally.by_us + tally.by_kube_dns > 0,
                "{what}: pod, {label} asked nothing"
            );
        }
    }
}

/// SIGTERM, then a clean exit.
fn stop_cleanly(forwarder: &mut Running) {
    forwarder.signal(libc::SIGTERM);
    let status = forwarder.exit_status(Duration::from_secs(25));
    assert!(status.success(), "{}", forwarder.report());
}

/// After a kill: once the gap has passed, the pod's lookups go to kube-dns.
fn assert_failed_open(cluster: &Cluster, what: &str) {
    std::thread::sleep(DEAD_GAP);
    let outcome = cluster.ask_from_pod();
    assert_eq!(
        outcome,
        Outcome::ByKubeDns,
        "{what}: the pod's lookup after {DEAD_GAP:?}; rules:\n{}",
        cluster.ruleset()
    );
}

/// When a SIGKILL comes, counted from the exec.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// A fixed delay: config read, HTTP, the listeners, the rules each take milliseconds.
    After(Duration),
    /// As soon as the pod's lookups are served by us.
    Serving,
    /// Serving, and past the first periodic re-check of the rules (`sync_interval: 1s`).
    AfterASync,
    /// Serving, the instant a config reload lands (the new responder just swapped in, the
    /// old one's tasks still ending).
    ReloadLands,
}

const MOMENTS: [Moment; 9] = [
    Moment::After(Duration::ZERO),
    Moment::After(Duration::from_millis(5)),
    Moment::After(Duration::from_millis(15)),
    Moment::After(Duration::from_millis(40)),
    Moment::After(Duration::from_millis(100)),
    Moment::After(Duration::from_millis(250)),
    Moment::Serving,
    Moment::AfterASync,
    Moment::ReloadLands,
];

/// Brings `forwarder` to `moment`.
fn reach(cluster: &Cluster, forwarder: &mut Running, moment: Moment) {
    match moment {
        Moment::After(delay) => std::thread::sleep(delay),
        Moment::Serving => cluster.wait_served_by_us(forwarder),
        Moment::AfterASync => {
            cluster.wait_served_by_us(forwarder);
            std::thread::sleep(Duration::from_millis(1200));
        }
        Moment::ReloadLands => {
            cluster.wait_served_by_us(forwarder);
            let changed = cluster
                .config_text()
                .replace("  - name: .\n", "  - name: .\n    unanswered_ttl: 3s\n");
            cluster.write_config(&changed);
            // The file is checked every 2 s.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !forwarder.printed().contains("config reloaded") {
                assert!(
                    Instant::now() < deadline && !forwarder.has_exited(),
                    "no reload: {}",
                    forwarder.report()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// SIGKILL at any moment, from the first instant after exec through start-up, serving, a
/// periodic re-check and a config reload: a second after each kill the pod's lookups to the
/// ClusterIP are kube-dns's (through kube-proxy), the next start serves them again, and not
/// one lookup of the pod's clients fails after its retry, on either kube-proxy mode. The
/// node's own lookups are only counted: they keep node-cache's unconditional OUTPUT NOTRACK,
/// so they fail while we are dead.
#[test]
fn pods_resolve_through_kube_dns_after_sigkill_at_any_moment() {
    for backend in BACKENDS {
        let tag = format!("kill-{}", &backend.name()[..3]);
        let Some(cluster) = Cluster::new(&tag, backend, Layout::ClusterIp) else {
            continue;
        };
        let what = format!("SIGKILLs, {}", backend.name());
        let pods = PodClients::start(&cluster);
        let node = Client::stub("node", cluster.node.clone(), cluster.served());
        for moment in MOMENTS {
            let mut forwarder = cluster.start();
            reach(&cluster, &mut forwarder, moment);
            forwarder.kill();
            cluster.write_config(&cluster.config_text());
            assert_failed_open(&cluster, &format!("{what}: at {moment:?}"));
        }

        let mut forwarder = cluster.start();
        cluster.wait_served_by_us(&mut forwarder);
        match cluster.our_responses() {
            Some(answers) => assert!(answers > 0.0, "{what}: our metrics count no answer"),
            None => eprintln!("{what}: no metrics from the restarted forwarder"),
        }
        let node = node.stop();
        eprintln!("{what}: the node's own lookups (not asserted): {node}");
        pods.finish(&what, &cluster);
        stop_cleanly(&mut forwarder);
    }
}

/// Only 169.254.20.10 is ours and pods ask it: alive, we answer; SIGKILLed, the fallback DNAT
/// sends the same lookups to the kube-dns endpoint (`fallback.endpoints`); restarted, we
/// answer again. The connected socket sees all three phases on one 5-tuple. Both backends.
#[test]
fn the_link_local_address_falls_back_to_kube_dns_endpoints() {
    for backend in BACKENDS {
        let tag = format!("ll-{}", &backend.name()[..3]);
        let Some(cluster) = Cluster::new(&tag, backend, Layout::LinkLocalOnly) else {
            continue;
        };
        let what = format!("link-local, {}", backend.name());
        // Nothing answers 169.254.20.10 before our first start: the clients start after it.
        let mut forwarder = cluster.start();
        cluster.wait_served_by_us(&mut forwarder);
        let pods = PodClients::start(&cluster);
        let connected = &pods.connected;
        assert!(
            connected.wait_for(CLIENT_BOUND, |t| t.by_us > 0),
            "{what}: alive: the connected client: {}",
            connected.tally()
        );

        forwarder.kill();
        assert_failed_open(&cluster, &format!("{what}: after SIGKILL"));
        let seen = connected.tally();
        assert!(
            connected.wait_for(CLIENT_BOUND, |t| t.by_kube_dns > seen.by_kube_dns),
            "{what}: dead: the connected client: {}",
            connected.tally()
        );

        let mut forwarder = cluster.start();
        cluster.wait_served_by_us(&mut forwarder);
        let seen = connected.tally();
        assert!(
            connected.wait_for(CLIENT_BOUND, |t| t.by_us > seen.by_us),
            "{what}: restarted: the connected client: {}",
            connected.tally()
        );
        pods.finish(&what, &cluster);
        stop_cleanly(&mut forwarder);
    }
}

/// Asks `count` fresh names of ~200 bytes at the served address from the node, 128 in flight
/// at most, until `forwarder` exits or `bound` passes: every name is a new cache entry.
/// Returns how many were sent.
fn flood(cluster: &Cluster, forwarder: &mut Running, bound: Duration) -> usize {
    let server = std::net::SocketAddr::from((cluster.served(), 53));
    let pad = "m".repeat(60);
    cluster.node.run_inside(|| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind the flood's socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("a read timeout");
        let deadline = Instant::now() + bound;
        let mut sent = 0;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !forwarder.has_exited() {
            for _ in 0..128 {
                let name = fresh_name(&format!("{pad}.{pad}.flood"));
                let query = common::query(&name, hickory_proto::rr::RecordType::A, None);
                let bytes = query.to_vec().expect("a query encodes");
                if socket.send_to(&bytes, server).is_ok() {
                    sent += 1;
                }
            }
            for _ in 0..128 {
                if socket.recv_from(&mut buf).is_err() {
                    break;
                }
            }
        }
        sent
    })
}

/// A real OOM kill: our forwarder in a memory cgroup, its limit set a few MiB above what it
/// uses, its cache filled with fresh names until the kernel kills it. The exit is SIGKILL,
/// the cgroup counts the OOM kill, and the pod's lookups never fail: kube-dns answers them
/// until the next start serves them again.
#[test]
fn an_oom_kill_fails_open() {
    let Some(cluster) = Cluster::new("oom", Backend::Iptables, Layout::ClusterIp) else {
        return;
    };
    let Some(cgroup) = MemoryCgroup::new("oom") else {
        return;
    };
    let what = "an OOM kill";
    // A cache that grows until the limit, not until its capacity.
    let config = cluster
        .config_text()
        .replace("server:\n", "cache:\n  capacity: 10000000\nserver:\n");
    cluster.write_config(&config);
    let mut forwarder = cluster.start_in(&cgroup);
    cluster.wait_served_by_us(&mut forwarder);
    let pods = PodClients::start(&cluster);

    let mut limited = None;
    for margin_mib in [8u64, 16, 32, 64] {
        let limit = cgroup.usage() + margin_mib * 1024 * 1024;
        if cgroup.set_limit(limit).is_ok() {
            limited = Some(limit);
            break;
        }
    }
    let limit = limited.expect("a memory limit above the forwarder's usage");
    let sent = flood(&cluster, &mut forwarder, Duration::from_secs(60));
    assert!(
        forwarder.has_exited(),
        "{what}: still alive after {sent} fresh names with a limit of {limit} bytes (usage {}): {}",
        cgroup.usage(),
        forwarder.report()
    );
    let status = forwarder.exit_status(Duration::from_secs(1));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what}: {}",
        forwarder.report()
    );
    assert!(
        cgroup.oom_kills() >= 1,
        "{what}: the cgroup counts no OOM kill"
    );
    eprintln!("{what}: killed after {sent} fresh names (limit {limit} bytes)");
    assert_failed_open(&cluster, what);

    let mut forwarder = cluster.start();
    cluster.wait_served_by_us(&mut forwarder);
    pods.finish(what, &cluster);
    stop_cleanly(&mut forwarder);
}

/// Another process holds TCP on the ClusterIP's port 53 (no SO_REUSEPORT): a listener of ours
/// cannot bind. Held from this thread, inside the node.
fn squat_on_the_cluster_ip(cluster: &Cluster) -> TcpListener {
    cluster.node.run_inside(|| {
        TcpListener::bind((KUBE_DNS_SERVICE, 53)).expect("bind TCP 10.96.0.10:53 in the node")
    })
}

/// A start whose listener cannot bind exits with an error, and pods resolve through kube-dns
/// all along: on a node we never served, and after a SIGKILLed instance left its rules in
/// place (a crash loop). Once the port is free, the next start serves them again.
#[test]
fn a_failed_start_leaves_pods_resolving() {
    let Some(cluster) = Cluster::new("badstart", Backend::Iptables, Layout::ClusterIp) else {
        return;
    };
    let what = "a failed start";
    let pods = PodClients::start(&cluster);
    let fails = |case: &str| {
        let squatter = squat_on_the_cluster_ip(&cluster);
        let mut failing = cluster.start();
        let status = failing.exit_status(Duration::from_secs(25));
        assert!(
            !status.success() && status.code().is_some(),
            "{what}, {case}: exits with an error: {}",
            failing.report()
        );
        let printed = failing.printed();
        eprintln!("{what}, {case}: {}", printed.lines().last().unwrap_or(""));
        assert_failed_open(&cluster, &format!("{what}, {case}"));
        drop(squatter);
    };
    fails("never served");

    let mut killed = cluster.start();
    cluster.wait_served_by_us(&mut killed);
    killed.kill();
    fails("after a SIGKILL");

    let mut forwarder = cluster.start();
    cluster.wait_served_by_us(&mut forwarder);
    pods.finish(what, &cluster);
    stop_cleanly(&mut forwarder);
}

/// SIGTERM still removes everything of ours, on both backends: no rule with node-cache's
/// comment or our fallback chain in iptables, no `inet nodelocaldns` table; kube-proxy's
/// rules stay, and pods resolve through them.
#[test]
fn a_clean_exit_tears_down_every_rule_on_both_backends() {
    for backend in BACKENDS {
        let tag = format!("term-{}", &backend.name()[..3]);
        let Some(cluster) = Cluster::new(&tag, backend, Layout::ClusterIp) else {
            continue;
        };
        let what = format!("SIGTERM, {}", backend.name());
        let mut forwarder = cluster.start();
        cluster.wait_served_by_us(&mut forwarder);
        match backend {
            Backend::Iptables => {
                let rules = cluster.our_iptables_rules();
                assert!(
                    rules.iter().any(|r| r.contains("NodeLocal DNS"))
                        && rules.iter().any(|r| r.contains("NODELOCALDNS-FALLBACK")),
                    "{what}: serving: {rules:?}"
                );
            }
            Backend::Nftables => {
                let table = cluster.our_nft_table();
                assert!(
                    table.as_deref().is_some_and(|t| t.contains("dnat")),
                    "{what}: serving: {table:?}"
                );
            }
        }

        stop_cleanly(&mut forwarder);
        assert_eq!(
            cluster.our_iptables_rules(),
            Vec::<String>::new(),
            "{what}: left in iptables"
        );
        assert_eq!(cluster.our_nft_table(), None, "{what}: left in nftables");
        assert!(
            cluster.kube_proxy_intact(),
            "{what}: kube-proxy's rules: {}",
            cluster.ruleset()
        );
        assert_eq!(cluster.ask_from_pod(), Outcome::ByKubeDns, "{what}");
    }
}
