//! A small Kubernetes node in network namespaces, to watch what happens to pods' DNS when our
//! forwarder dies (root only):
//!
//! ```text
//!  pod ns                 node ns                                    kube-dns ns
//!  10.244.0.5 ─veth─ 10.244.0.1   lo: 169.254.20.10, 10.96.0.10   10.244.1.1 ─veth─ 10.244.1.2
//!                         kube-proxy stand-in: 10.96.0.10:53           dnsmasq: svc.test
//!                           DNAT -> 10.244.1.2:53                        -> 192.0.2.55
//!                         us (exec'd per test), upstream for svc.test:
//!                           dnsmasq 127.0.0.1:5353: svc.test -> 203.0.113.7
//! ```
//!
//! An answer of 203.0.113.7 was served by us, 192.0.2.55 by kube-dns directly (through
//! kube-proxy's DNAT or our fallback DNAT). The kube-proxy stand-in is iptables rules or an
//! nftables table, as kube-proxy's two modes install them, and our `node.backend` matches it.
//! [`Layout::LinkLocalOnly`] is the other node-cache layout: only 169.254.20.10 is ours and
//! pods ask it (no kube-proxy path leads there, only our fallback).

pub mod cgroup;
pub mod clients;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::netns::Netns;
use crate::common::process::Running;
use cgroup::MemoryCgroup;
use clients::Outcome;

pub const BIN: &str = env!("CARGO_BIN_EXE_nodelocal-dns");

/// The answer of our own upstream for every `svc.test` name.
pub const BY_US: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// The answer of kube-dns for every `svc.test` name.
pub const BY_KUBE_DNS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 55);
/// The kube-dns ClusterIP, also a local IP of ours in [`Layout::ClusterIp`].
pub const KUBE_DNS_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const LINK_LOCAL: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);
pub const KUBE_DNS_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
/// Where our HTTP endpoints listen in the node namespace (one node per namespace: no clash).
pub const METRICS: &str = "127.0.0.1:9253";

/// Our `node.backend`, and the kube-proxy mode a test node runs beside it (the same one).
pub use nodelocal_dns::node::Backend;

/// Which addresses are ours, and which one pods ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Ours: 169.254.20.10 and the kube-dns ClusterIP; pods ask the ClusterIP.
    ClusterIp,
    /// Ours: 169.254.20.10 only, which pods ask.
    LinkLocalOnly,
}

/// The node, its pod and kube-dns; everything in it ends on drop.
pub struct Cluster {
    // Fields drop in order: the servers before their namespaces.
    _kube_dns_server: Running,
    _our_upstream: Running,
    pub pod: Arc<Netns>,
    pub node: Arc<Netns>,
    _kube_dns: Netns,
    pub backend: Backend,
    pub layout: Layout,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Cluster {
    /// `None` (with a message) when not root, or when this machine lacks what `backend`
    /// needs (`nft`, the socket match).
    pub fn new(tag: &str, backend: Backend, layout: Layout) -> Option<Cluster> {
        let node = Netns::new(&format!("{tag}-node"))?;
        if !backend.is_installed() {
            eprintln!("skipped: {} is not installed", backend.name());
            return None;
        }
        for tool in ["dnsmasq", "iptables"] {
            assert!(
                Command::new(tool).arg("--version").output().is_ok(),
                "{tool} is needed (scripts/test.sh installs it)"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        if let Err(why) = socket_match_works(&node, backend, &dir) {
            eprintln!("skipped: the {} socket match: {why}", backend.name());
            return None;
        }
        let pod = Netns::new(&format!("{tag}-pod"))?;
        let kube_dns = Netns::new(&format!("{tag}-kdns"))?;
        wire(&node, &pod, "vpod", "10.244.0");
        wire(&node, &kube_dns, "vkdns", "10.244.1");
        node.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for ip in [LINK_LOCAL, KUBE_DNS_SERVICE] {
            node.ok(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        }
        install_kube_proxy(&node, backend, &dir);

        let kube_dns_server = dnsmasq(&kube_dns, KUBE_DNS_POD, 53, BY_KUBE_DNS);
        let our_upstream = dnsmasq(&node, Ipv4Addr::LOCALHOST, 5353, BY_US);
        let pod = Arc::new(pod);
        let node = Arc::new(node);
        answering(&node, "127.0.0.1:5353", Outcome::ByUs);
        answering(&pod, &format!("{KUBE_DNS_POD}:53"), Outcome::ByKubeDns);
        // Before anything of ours: kube-proxy's path works.
        if layout == Layout::ClusterIp {
            answering(&pod, &format!("{KUBE_DNS_SERVICE}:53"), Outcome::ByKubeDns);
        }

        let config = dir.path().join("nodelocaldns.yaml");
        let cluster = Cluster {
            _kube_dns_server: kube_dns_server,
            _our_upstream: our_upstream,
            pod,
            node,
            _kube_dns: kube_dns,
            backend,
            layout,
            dir,
            config,
        };
        cluster.write_config(&cluster.config_text());
        Some(cluster)
    }

    /// The address pods ask.
    pub fn served(&self) -> Ipv4Addr {
        match self.layout {
            Layout::ClusterIp => KUBE_DNS_SERVICE,
            Layout::LinkLocalOnly => LINK_LOCAL,
        }
    }

    /// Our config for this node: the rules on, fail-open fallback to the kube-dns pod, our
    /// own upstream for `svc.test`, the kube-dns pod for the rest, no lameduck.
    pub fn config_text(&self) -> String {
        let ours: &[Ipv4Addr] = match self.layout {
            Layout::ClusterIp => &[LINK_LOCAL, KUBE_DNS_SERVICE],
            Layout::LinkLocalOnly => &[LINK_LOCAL],
        };
        let listen: Vec<String> = ours.iter().map(|ip| format!("\"{ip}:53\"")).collect();
        let ips: Vec<String> = ours.iter().map(Ipv4Addr::to_string).collect();
        format!(
            "listen: [{listen}]
server:
  loop_check: false
metrics:
  listen: \"{METRICS}\"
shutdown:
  lameduck: 0s
  drain: 200ms
node:
  setup_interface: false
  setup_iptables: true
  backend: {backend}
  local_ips: [{ips}]
  sync_interval: 1s
  fallback:
    endpoints: [\"{KUBE_DNS_POD}:53\"]
zones:
  - name: svc.test
    upstreams: [\"127.0.0.1:5353\"]
  - name: .
    upstreams: [\"{KUBE_DNS_POD}:53\"]
",
            listen = listen.join(", "),
            ips = ips.join(", "),
            backend = self.backend.name(),
        )
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write the config");
    }

    pub fn config_path(&self) -> &str {
        self.config.to_str().expect("a UTF-8 path")
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `run --config` in the node namespace (ours from its first instruction).
    pub fn start(&self) -> Running {
        Running::exec_in(
            &self.node,
            BIN,
            &["run", "--config", self.config_path()],
            None,
        )
    }

    /// [`Cluster::start`] inside a memory cgroup.
    pub fn start_in(&self, cgroup: &MemoryCgroup) -> Running {
        let args = ["run", "--config", self.config_path()];
        Running::exec_in(&self.node, BIN, &args, Some(cgroup.procs()))
    }

    /// A stub lookup from the pod of the address pods ask.
    pub fn ask_from_pod(&self) -> Outcome {
        let server = SocketAddr::from((self.served(), 53));
        self.pod.run_inside(|| clients::lookup(server))
    }

    /// Waits (bounded) until the pod's lookups are served by `forwarder`; panics, saying
    /// what it printed and which rules are in, when they are not.
    pub fn wait_served_by_us(&self, forwarder: &mut Running) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let outcome = self.ask_from_pod();
            if outcome == Outcome::ByUs {
                return;
            }
            assert!(
                Instant::now() < deadline && !forwarder.has_exited(),
                "the pod's lookups are not served by us: last {outcome:?}; the forwarder {}\nrules:\n{}",
                forwarder.report(),
                self.ruleset()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Answers counted by the forwarder now running (`coredns_dns_responses_total`); `None`
    /// when its HTTP endpoint does not answer.
    pub fn our_responses(&self) -> Option<f64> {
        let body = self.node.run_inside(|| http_get(METRICS, "/metrics"))?;
        Some(crate::common::Exposition::parse(&body).sum("coredns_dns_responses_total", &[]))
    }

    /// Lines of `iptables-save` that are ours (node-cache's comment, our fallback chain).
    pub fn our_iptables_rules(&self) -> Vec<String> {
        self.node
            .ok(&["iptables-save"])
            .lines()
            .filter(|l| l.contains("NodeLocal DNS") || l.contains("NODELOCALDNS"))
            .map(String::from)
            .collect()
    }

    /// Our nftables table, listed; `None` when there is none (or no `nft`).
    pub fn our_nft_table(&self) -> Option<String> {
        let out = self
            .node
            .run(&["nft", "list", "table", "inet", "nodelocaldns"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether the kube-proxy stand-in's DNAT is still all there.
    pub fn kube_proxy_intact(&self) -> bool {
        let dnat = format!("{KUBE_DNS_POD}:53");
        match self.backend {
            Backend::Iptables => {
                let nat = self.node.ok(&["iptables-save", "-t", "nat"]);
                nat.lines()
                    .filter(|l| l.contains("10.96.0.10/32") && l.contains(&dnat))
                    .count()
                    == 4
            }
            Backend::Nftables => self
                .node
                .run(&["nft", "list", "table", "ip", "kube-proxy"])
                .status
                .success(),
        }
    }

    /// Conntrack entries our own answers opened (original direction from a local IP's port
    /// 53), for failure messages: an answer that left before the reply-side NOTRACK was in
    /// opens one, and while it lives the pod's flow it names is taken for a reply, never
    /// DNAT'd to kube-dns when we are gone (a connected socket then meets ICMP errors).
    pub fn entries_opened_by_our_answers(&self) -> String {
        let out = self
            .node
            .run(&["conntrack", "-L", "-p", "udp", "--orig-port-src", "53"]);
        if !out.status.success() {
            return format!(
                "(conntrack: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let ours = [
            format!("src={LINK_LOCAL}"),
            format!("src={KUBE_DNS_SERVICE}"),
        ];
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| {
                let src = line.split_whitespace().find(|w| w.starts_with("src="));
                src.is_some_and(|src| ours.iter().any(|o| o == src))
            })
            .map(String::from)
            .collect();
        lines.join("\n")
    }

    /// Every rule of the node, for failure messages.
    pub fn ruleset(&self) -> String {
        let mut text = self.node.ok(&["iptables-save"]);
        if self.backend == Backend::Nftables {
            text.push_str(&self.node.ok(&["nft", "list", "ruleset"]));
        }
        text
    }
}

/// A veth pair from `node` (`link`, `NET.1/24`) to `other` (`eth0`, `NET.2` or `NET.5`, its
/// default route via the node).
fn wire(node: &Netns, other: &Netns, link: &str, net: &str) {
    let host = if link == "vpod" { "5" } else { "2" };
    veth(node, other, link, net, host);
}

/// A veth pair from `node` (`link`, `NET.1/24`) to `other` (`eth0`, `NET.HOST/24`, its
/// default route via the node).
pub fn veth(node: &Netns, other: &Netns, link: &str, net: &str, host: &str) {
    node.ok(&[
        "ip",
        "link",
        "add",
        link,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        other.name(),
    ]);
    node.ok(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", link]);
    node.ok(&["ip", "link", "set", link, "up"]);
    other.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{net}.{host}/24"),
        "dev",
        "eth0",
    ]);
    other.ok(&["ip", "link", "set", "eth0", "up"]);
    other.ok(&["ip", "route", "add", "default", "via", &format!("{net}.1")]);
}

/// kube-proxy's DNAT of the kube-dns ClusterIP to its pod, for packets from pods
/// (PREROUTING) and from the node (OUTPUT), as its iptables or nftables mode writes it.
fn install_kube_proxy(node: &Netns, backend: Backend, dir: &tempfile::TempDir) {
    let to = format!("{KUBE_DNS_POD}:53");
    match backend {
        Backend::Iptables => {
            for chain in ["PREROUTING", "OUTPUT"] {
                for proto in ["udp", "tcp"] {
                    node.ok(&[
                        "iptables",
                        "-w",
                        "5",
                        "-t",
                        "nat",
                        "-A",
                        chain,
                        "-d",
                        "10.96.0.10/32",
                        "-p",
                        proto,
                        "--dport",
                        "53",
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &to,
                    ]);
                }
            }
        }
        Backend::Nftables => {
            let dnat = format!(
                "ip daddr {KUBE_DNS_SERVICE} udp dport 53 dnat to {KUBE_DNS_POD}; \
                 ip daddr {KUBE_DNS_SERVICE} tcp dport 53 dnat to {KUBE_DNS_POD};"
            );
            nft_file(
                node,
                dir,
                &format!(
                    "table ip kube-proxy {{\n\
                     chain nat-prerouting {{ type nat hook prerouting priority dstnat; {dnat} }}\n\
                     chain nat-output {{ type nat hook output priority -100; {dnat} }}\n}}\n"
                ),
            )
            .unwrap_or_else(|e| panic!("the kube-proxy stand-in: {e}"));
        }
    }
}

/// Loads an nftables ruleset file.
fn nft_file(node: &Netns, dir: &tempfile::TempDir, ruleset: &str) -> Result<(), String> {
    let path = dir.path().join("ruleset.nft");
    std::fs::write(&path, ruleset).expect("write a ruleset");
    let out = node.run(&["nft", "-f", path.to_str().expect("a UTF-8 path")]);
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Whether the kernel and the tools take the rule our fail-open NOTRACK needs: added and
/// removed again in the (still empty) node namespace.
fn socket_match_works(
    node: &Netns,
    backend: Backend,
    dir: &tempfile::TempDir,
) -> Result<(), String> {
    match backend {
        Backend::Iptables => {
            let rule = [
                "PREROUTING",
                "-p",
                "udp",
                "-m",
                "socket",
                "--nowildcard",
                "-j",
                "NOTRACK",
            ];
            let iptables = |op| [&["iptables", "-w", "5", "-t", "raw", op][..], &rule].concat();
            let added = node.run(&iptables("-A"));
            if !added.status.success() {
                return Err(String::from_utf8_lossy(&added.stderr).into_owned());
            }
            node.ok(&iptables("-D"));
            Ok(())
        }
        Backend::Nftables => {
            nft_file(
                node,
                dir,
                "table inet probe {\n\
                 chain c {\n\
                 type filter hook prerouting priority raw;\n\
                 udp dport 53 socket wildcard 0 notrack\n\
                 }\n\
                 }\n",
            )?;
            node.ok(&["nft", "delete", "table", "inet", "probe"]);
            Ok(())
        }
    }
}

/// A dnsmasq on `address`:`port` in `ns` answering every `svc.test` name with `answer`, an
/// AAAA record too (so that our cache keeps the pair), and NODATA for other types.
fn dnsmasq(ns: &Netns, address: Ipv4Addr, port: u16, answer: Ipv4Addr) -> Running {
    Running::spawn(ns.command(&[
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        &format!("--listen-address={address}"),
        "--bind-interfaces",
        &format!("--port={port}"),
        &format!("--address=/svc.test/{answer}"),
        &format!("--address=/svc.test/2001:db8::{}", answer.octets()[3]),
        "--local=/svc.test/",
        // Answers a cache keeps (dnsmasq's own answers have TTL 0 by default).
        "--local-ttl=60",
        // No /run/dnsmasq.pid: tests start several dnsmasqs at once.
        "--pid-file=",
    ]))
}

/// Waits (bounded) until `server` answers `expected` from `ns`.
fn answering(ns: &Netns, server: &str, expected: Outcome) {
    let server: SocketAddr = server.parse().expect("a socket address");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = ns.run_inside(|| clients::lookup(server));
        if outcome == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{server} does not answer in {}: {outcome:?}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A GET over HTTP/1.0 from this thread's namespace; the body, or `None` when there is no
/// answer within a second or two.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}
