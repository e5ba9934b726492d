//! Every Corefile of the corpus (`tests/data/corefiles/`, its headers read by
//! `tests/common/corpus.rs`) run as its DaemonSet runs it: the binary with the file's
//! node-cache flags and environment, in a node's network namespace with the real kernel,
//! setting up its local IP and rules; the cluster's DNS servers (dnsmasq: kube-dns, stub
//! domains, the node's resolv.conf nameserver) in a namespace of their own behind the node;
//! a pod in a third namespace asking the local IP over its veth. Each `# ask:` of the file must
//! get the answer CoreDNS's semantics give, and a SIGTERM must end the process cleanly.
//!
//! Root only (network namespaces); skipped with a message otherwise.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use common::cluster::veth;
use common::corpus::{Ask, CorpusEntry, Upstream, corpus};
use common::netns::Netns;
use common::process::Running;

const BIN: &str = env!("CARGO_BIN_EXE_nodelocal-dns");

/// The nameserver of the node's `/etc/resolv.conf` (a `# upstream:` of files that forward to it).
const NODE_NAMESERVER: &str = "10.0.0.53";

/// The pod, the node and the cluster behind it, each a network namespace: the pod reaches the
/// node over `vpod` (10.244.0.0/24, fd00:244::/64), the node reaches the cluster's servers
/// over `vclu` (10.244.1.0/24, fd00:244:1::/64), its default route in both families.
struct Network {
    // Fields drop in order: the servers before their namespaces.
    _servers: Vec<Running>,
    pod: Netns,
    node: Netns,
    cluster: Netns,
}

impl Network {
    fn new(tag: &str) -> Option<Network> {
        let node = Netns::new(&format!("{tag}-node"))?;
        let pod = Netns::new(&format!("{tag}-pod"))?;
        let cluster = Netns::new(&format!("{tag}-clu"))?;
        veth(&node, &pod, "vpod", "10.244.0", "5");
        veth(&node, &cluster, "vclu", "10.244.1", "2");
        for (ns, link, address) in [
            (&node, "vpod", "fd00:244::1/64"),
            (&pod, "eth0", "fd00:244::5/64"),
            (&node, "vclu", "fd00:244:1::1/64"),
            (&cluster, "eth0", "fd00:244:1::2/64"),
        ] {
            ns.ok(&["ip", "addr", "add", address, "dev", link, "nodad"]);
        }
        for (ns, family, via) in [
            (&pod, "-6", "fd00:244::1"),
            (&cluster, "-6", "fd00:244:1::1"),
            (&node, "-4", "10.244.1.2"),
            (&node, "-6", "fd00:244:1::2"),
        ] {
            ns.ok(&["ip", family, "route", "add", "default", "via", via]);
        }
        node.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        node.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        node.etc_file("resolv.conf", &format!("nameserver {NODE_NAMESERVER}\n"));
        // node-cache's link: the binary creates it where the kernel has the dummy driver;
        // elsewhere an existing link of that name holds the local IPs (its documented fallback).
        if !node.dummy_supported() {
            node.ok(&[
                "ip",
                "link",
                "add",
                "nodelocaldns",
                "type",
                "veth",
                "peer",
                "name",
                "nodelocalpeer",
            ]);
            node.ok(&["ip", "link", "set", "nodelocaldns", "up"]);
            node.ok(&["ip", "link", "set", "nodelocalpeer", "up"]);
        }
        Some(Network {
            _servers: Vec::new(),
            pod,
            node,
            cluster,
        })
    }

    /// A dnsmasq of the cluster at `upstream.address`:53, answering before this returns.
    fn serve(&mut self, upstream: &Upstream) {
        let address = upstream.address;
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        let on_lo = format!("{address}/{prefix}");
        self.cluster
            .ok(&["ip", "addr", "add", &on_lo, "dev", "lo", "nodad"]);
        let listen = format!("--listen-address={address}");
        let mut args = vec![
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            &listen,
            "--bind-interfaces",
            "--port=53",
            // Answers a cache keeps (dnsmasq's own answers have TTL 0 by default).
            "--local-ttl=60",
            // No /run/dnsmasq.pid: several dnsmasqs run at once.
            "--pid-file=",
        ];
        args.extend(upstream.options.iter().map(String::as_str));
        self._servers
            .push(Running::spawn(self.cluster.command(&args)));
        let server = SocketAddr::new(address, 53);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .node
            .run_inside(|| ask_once(server, ("probe.invalid.", RecordType::A), PROBE_WAIT))
            .is_err()
        {
            assert!(Instant::now() < deadline, "dnsmasq at {server} answers");
        }
    }
}

/// How long a pod waits for an answer; a server that is not up yet is probed more often.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
const PROBE_WAIT: Duration = Duration::from_millis(200);

/// One query over UDP from this thread's namespace; the answer within `wait`, or why there is
/// none.
fn ask_once(
    server: SocketAddr,
    (name, rtype): (&str, RecordType),
    wait: Duration,
) -> Result<Message, String> {
    let query = common::query(name, rtype, None);
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    socket
        .set_read_timeout(Some(wait))
        .map_err(|e| format!("timeout: {e}"))?;
    // Connected, as glibc's and musl's stubs are: an answer from another address than the
    // one asked is not theirs.
    socket
        .connect(server)
        .map_err(|e| format!("connect: {e}"))?;
    let packet = query.to_vec().map_err(|e| format!("encode: {e}"))?;
    socket.send(&packet).map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let len = socket
            .recv(&mut buf)
            .map_err(|e| format!("no answer: {e}"))?;
        let answer = Message::from_vec(&buf[..len]).map_err(|e| format!("parse: {e}"))?;
        if answer.metadata.id == query.metadata.id {
            return Ok(answer);
        }
    }
}

/// Where `ask`'s answer differs from what it must be, if it does.
fn check(ask: &Ask, answer: &Message) -> Option<String> {
    let rcode = match ask.rcode.as_str() {
        "NOERROR" => ResponseCode::NoError,
        "NXDOMAIN" => ResponseCode::NXDomain,
        "SERVFAIL" => ResponseCode::ServFail,
        "REFUSED" => ResponseCode::Refused,
        other => panic!("{ask}: unknown rcode {other}"),
    };
    let mut data: Vec<String> = answer
        .answers
        .iter()
        .map(|record| record.data.to_string())
        .collect();
    let mut want = ask.data.clone();
    data.sort();
    want.sort();
    let question = answer.queries.first().map(|q| q.name().to_string());
    // A direct answer (no CNAME on the way) is owned by the name asked, whatever the server
    // did with the name on its way upstream (a rewrite is reverted).
    let owners_wrong = !answer
        .answers
        .iter()
        .any(|r| r.record_type() == RecordType::CNAME)
        && answer
            .answers
            .iter()
            .any(|r| !r.name.to_string().eq_ignore_ascii_case(&ask.name));
    if answer.metadata.response_code != rcode
        || data != want
        || question.as_deref() != Some(&ask.name)
        || owners_wrong
    {
        let owners: Vec<String> = answer.answers.iter().map(|r| r.name.to_string()).collect();
        return Some(format!(
            "{ask}: got {} {data:?} owned by {owners:?} for {question:?}, want {} {want:?}",
            answer.metadata.response_code, ask.rcode
        ));
    }
    None
}

/// Runs `entry` as its DaemonSet does and asks its questions; what went wrong, if anything.
fn run(entry: &CorpusEntry, tag: &str) -> Option<Vec<String>> {
    let mut network = Network::new(tag)?;
    for upstream in &entry.upstreams {
        network.serve(upstream);
    }
    let local_ip = entry.local_ip();
    let flags = &entry.flags;
    if flags.iter().any(|f| f == "-setupinterface=false") {
        // Whoever steers pods' DNS to this pod (Cilium, say) delivers the local IP here.
        let prefix = if local_ip.is_ipv4() { 32 } else { 128 };
        let address = format!("{local_ip}/{prefix}");
        network
            .node
            .ok(&["ip", "addr", "add", &address, "dev", "lo", "nodad"]);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    entry.write_into(dir.path());
    let args = entry.flags_in(dir.path());
    let mut command = network.node.command(&[BIN]);
    command
        .args(&args)
        .envs(entry.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut forwarder = Running::spawn(command);

    let server = SocketAddr::new(local_ip, 53);
    let first = entry.asks.first().expect("at least one # ask:");
    let rtype = |ask: &Ask| -> RecordType { ask.rtype.parse().expect("a record type") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(why) = network
        .pod
        .run_inside(|| ask_once(server, (&first.name, rtype(first)), PROBE_WAIT))
    {
        assert!(
            !forwarder.has_exited() && Instant::now() < deadline,
            "{}: no answer at {server} ({why}): {}",
            entry.name,
            forwarder.report()
        );
    }
    let mut failures = Vec::new();
    for ask in &entry.asks {
        match network
            .pod
            .run_inside(|| ask_once(server, (&ask.name, rtype(ask)), ANSWER_WAIT))
        {
            Ok(answer) => failures.extend(check(ask, &answer)),
            Err(why) => failures.push(format!("{ask}: {why}")),
        }
    }
    forwarder.signal(libc::SIGTERM);
    let status = forwarder.exit_status(Duration::from_secs(15));
    if !status.success() {
        failures.push(format!("SIGTERM: {}", forwarder.report()));
    }
    Some(
        failures
            .into_iter()
            .map(|f| format!("{}: {f}", entry.name))
            .collect(),
    )
}

/// The corpus's Corefiles, launched with their DaemonSets' flags against real DNS servers,
/// answer pods as CoreDNS would.
#[test]
fn every_corefile_of_the_corpus_answers_pods_as_coredns_would() {
    let corpus = corpus();
    assert!(corpus.len() >= 8, "the corpus: {} files", corpus.len());
    for entry in &corpus {
        assert!(!entry.asks.is_empty(), "{}: no # ask:", entry.name);
    }
    // Each in namespaces of its own, all at once: most of a run is waiting (for servers to
    // come up, for the lame-duck period of the SIGTERM).
    let runs: Vec<Option<Vec<String>>> = std::thread::scope(|scope| {
        let runs: Vec<_> = corpus
            .iter()
            .enumerate()
            .map(|(i, entry)| scope.spawn(move || run(entry, &format!("cp{i}"))))
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    if runs.iter().any(Option::is_none) {
        return; // not root: skipped with a message
    }
    let failures: Vec<String> = runs.into_iter().flatten().flatten().collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
