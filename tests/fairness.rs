//! One client's storm cannot take DNS from the others (docs/design.md, failure 7): an upstream
//! of fixed capacity behind the forwarder, one client asking distinct names at several times
//! that capacity, three quiet clients on other source addresses (any 127/8 address binds on
//! Linux) asking distinct names at 10 QPS each. Real sockets throughout; counts only, no
//! timing asserts.
//!
//! The same storm in the shape of a node (root only): the binary in a node network namespace,
//! the upstream on the node's 127.0.0.1, one pod storming and a quiet pod whose glibc
//! getaddrinfo asks, each pod its own namespace and source address.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Forwarder;
use common::cluster::clients::{ATTEMPT_TIMEOUT, run_stub};
use common::cluster::{self, LINK_LOCAL};
use common::netns::Netns;
use common::process::Running;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// The upstream answers each query after this long...
const UPSTREAM_LATENCY: Duration = Duration::from_millis(50);
/// ...and holds at most this many at once; more are dropped unanswered, as dnsmasq drops past
/// its `dns-forward-max`.
const UPSTREAM_CAPACITY: usize = 20;

/// A UDP upstream of fixed capacity: every query it takes is answered (NOERROR, no records)
/// after [`UPSTREAM_LATENCY`]; past [`UPSTREAM_CAPACITY`] in hand, it drops.
struct SlowUpstream {
    addr: SocketAddr,
    dropped: Arc<AtomicUsize>,
    /// Of those, the quiet clients' (names under `quiet.test`): each one a query of theirs
    /// lost, whether or not a retry then saved the lookup.
    dropped_quiet: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowUpstream {
    async fn start() -> SlowUpstream {
        SlowUpstream::serve(std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
    }

    /// Serves on `socket`, bound already (in another network namespace, say); needs a tokio
    /// runtime.
    fn serve(socket: std::net::UdpSocket) -> SlowUpstream {
        let socket = Arc::new(tokio_socket(socket));
        let addr = socket.local_addr().expect("address");
        let dropped = Arc::new(AtomicUsize::new(0));
        let in_hand = Arc::new(AtomicUsize::new(0));
        let dropped_quiet = Arc::new(AtomicUsize::new(0));
        let (counted, counted_quiet) = (dropped.clone(), dropped_quiet.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if len < 12 || in_hand.load(Ordering::Acquire) >= UPSTREAM_CAPACITY {
                    counted.fetch_add(1, Ordering::Relaxed);
                    if buf[..len].windows(6).any(|w| w == b"\x05quiet") {
                        counted_quiet.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                in_hand.fetch_add(1, Ordering::AcqRel);
                let mut answer = buf[..len].to_vec();
                answer[2] |= 0x80; // QR
                answer[3] = 0x80; // RA, NOERROR
                let (socket, in_hand) = (socket.clone(), in_hand.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(UPSTREAM_LATENCY).await;
                    in_hand.fetch_sub(1, Ordering::AcqRel);
                    let _ = socket.send_to(&answer, from).await;
                });
            }
        });
        SlowUpstream {
            addr,
            dropped,
            dropped_quiet,
            task,
        }
    }
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A std socket, bound wherever it was, as a tokio one.
fn tokio_socket(socket: std::net::UdpSocket) -> UdpSocket {
    socket
        .set_nonblocking(true)
        .expect("a UDP socket goes non-blocking");
    UdpSocket::from_std(socket).expect("inside a tokio runtime")
}

/// A TXT query for `name` with ID `id` (one upstream query per miss).
fn txt_query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 16, 0, 1]);
    packet
}

/// What one quiet client saw.
#[derive(Debug, Default)]
struct Quiet {
    answered: usize,
    servfail: usize,
    unanswered: usize,
    slowest: Duration,
}

/// A quiet client on `source`: one query at a time, 10 per second, each waiting up to 1 s.
async fn quiet_client(source: Ipv4Addr, server: SocketAddr, until: Instant) -> Quiet {
    let socket = UdpSocket::bind((source, 0))
        .await
        .expect("bind a 127/8 source");
    let mut seen = Quiet::default();
    let mut buf = [0u8; 1500];
    let mut n: u16 = 0;
    while Instant::now() < until {
        n = n.wrapping_add(1);
        let name = format!("q{n}.{}.quiet.test.", source.octets()[3]);
        let asked = Instant::now();
        socket
            .send_to(&txt_query(n, &name), server)
            .await
            .expect("send");
        match tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) if len >= 4 && buf[3] & 0x0f == 2 => seen.servfail += 1,
            Ok(Ok(_)) => seen.answered += 1,
            _ => seen.unanswered += 1,
        }
        seen.slowest = seen.slowest.max(asked.elapsed());
        tokio::time::sleep_until(asked + Duration::from_millis(100)).await;
    }
    seen
}

/// The noisy client on `socket`: distinct names at `rate` per second, not waiting for
/// answers. Returns (sent, SERVFAIL answers).
async fn noisy_client(
    socket: UdpSocket,
    server: SocketAddr,
    rate: u32,
    until: Instant,
) -> (usize, usize) {
    let socket = Arc::new(socket);
    let servfails = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (socket, servfails) = (socket.clone(), servfails.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, _)) = socket.recv_from(&mut buf).await {
                if len >= 4 && buf[3] & 0x0f == 2 {
                    servfails.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut sent = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        let name = format!("n{sent}.noisy.test.");
        let _ = socket.send_to(&txt_query(sent as u16, &name), server).await;
        sent += 1;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reader.abort();
    (sent, servfails.load(Ordering::Relaxed))
}

/// The storm and the quiet clients against a forwarder with `pool` settings; returns the
/// quiet clients' tallies, the noisy client's (sent, SERVFAIL), and the forwarder's
/// `client_share` rejections.
async fn storm(pool: &str) -> (Vec<Quiet>, (usize, usize), f64, usize) {
    let upstream = SlowUpstream::start().await;
    let forwarder = Forwarder::start(&format!(
        "workers: 1\nserver:\n  loop_check: false\nzones:\n  - name: .\n    upstreams: [\"{}\"]\n    timeout: 1s\n    deadline: 2s\n    unanswered_ttl: 0s\n    cache:\n      enabled: false\n    pool:\n{pool}",
        upstream.addr
    ))
    .await;
    let server = forwarder.addr;
    let start = Instant::now();
    // The storm runs alone for 3 s (the adaptive limit learns the upstream's capacity from
    // its first timeouts), then the quiet clients ask for 6 s.
    let socket = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
    let noisy = tokio::spawn(noisy_client(
        socket,
        server,
        1000,
        start + Duration::from_secs(9),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = Instant::now() + Duration::from_secs(6);
    let quiet: Vec<_> = [3u8, 4, 5]
        .into_iter()
        .map(|last| tokio::spawn(quiet_client(Ipv4Addr::new(127, 0, 0, last), server, until)))
        .collect();
    let mut tallies = Vec::new();
    for client in quiet {
        tallies.push(client.await.expect("quiet client"));
    }
    let noisy = noisy.await.expect("noisy client");
    let label = upstream.addr.to_string();
    let client_share = forwarder.scrape().value(
        "nodelocaldns_queue_rejected_total",
        &[("upstream", &label), ("reason", "client_share")],
    );
    let dropped = upstream.dropped.load(Ordering::Relaxed);
    forwarder.stop().await;
    (tallies, noisy, client_share, dropped)
}

/// With the default fair turns and adaptive limit, the quiet clients lose nothing while the
/// storm's overflow is what gets turned away; with both off (a FIFO and a fixed bound above
/// what the upstream holds, as before them), the upstream drops the quiet clients' queries with
/// the storm's. The second run is the comparison, printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_misses_from_one_client_leaves_the_quiet_clients_answered() {
    let (quiet, (sent, servfail), client_share, dropped) = storm("      adaptive: true\n").await;
    eprintln!(
        "fair: quiet {quiet:?}; noisy sent {sent}, {servfail} SERVFAIL; client_share \
         rejections {client_share}; upstream dropped {dropped}"
    );
    let failed: usize = quiet.iter().map(|q| q.servfail + q.unanswered).sum();
    let answered: usize = quiet.iter().map(|q| q.answered).sum();
    assert!(answered > 100, "the quiet clients asked: {quiet:?}");
    assert_eq!(failed, 0, "no quiet lookup fails: {quiet:?}");
    assert!(
        client_share > 0.0 && servfail > 0,
        "the storm's overflow is turned away: {client_share} rejections, {servfail} SERVFAIL"
    );

    let (before, (sent, servfail), _, dropped) =
        storm("      adaptive: false\n      queue:\n        per_client: 2048\n").await;
    eprintln!(
        "FIFO, fixed bound: quiet {before:?}; noisy sent {sent}, {servfail} SERVFAIL; upstream \
         dropped {dropped}"
    );
}

/// What the quiet pod's getaddrinfo calls got.
#[derive(Debug, Default)]
struct Lookups {
    /// An answer: addresses, or EAI_NONAME / EAI_NODATA (the upstream's NOERROR without
    /// records).
    resolved: usize,
    /// Anything else: EAI_AGAIN (SERVFAIL, or no answer to either attempt), or a lookup the
    /// program never reported.
    failed: usize,
    /// Lookups that took an attempt's timeout (1 s) or more: a query of theirs went
    /// unanswered and glibc asked again. The lookup may still count as resolved (glibc
    /// returns EAI_NODATA when the A half is answered and the AAAA half never is). Printed;
    /// what is asserted is the upstream's count of the quiet pod's queries it dropped.
    retried: usize,
    slowest_ms: f64,
    first_failures: Vec<String>,
}

impl Lookups {
    fn failure(&mut self, why: String) {
        self.failed += 1;
        if self.first_failures.len() < 10 {
            self.first_failures.push(why);
        }
    }
}

/// What getaddrinfo says (`gai_strerror`, C locale) when the answer had no address.
const ANSWERED_WITHOUT_ADDRESS: [&str; 2] = [
    "Name or service not known",
    "No address associated with hostname",
];

/// glibc's getaddrinfo (`program`, tests/stubs/lookup.c) in processes of `pod` until
/// `until`: five distinct names each, 100 ms apart, through the pod's `/etc/resolv.conf`.
fn glibc_lookups(pod: &Netns, program: &Path, until: std::time::Instant) -> Lookups {
    let program = program.to_str().expect("a UTF-8 path");
    let mut seen = Lookups::default();
    let mut n = 0;
    while std::time::Instant::now() < until {
        let names: Vec<String> = (0..5)
            .map(|_| {
                n += 1;
                format!("q{n}.quiet.test.")
            })
            .collect();
        let (lookups, unreported) = run_stub(pod, program, &names, Duration::from_millis(100));
        for lookup in &lookups {
            if let Some(took) = lookup.millis() {
                seen.slowest_ms = seen.slowest_ms.max(took);
                if took >= ATTEMPT_TIMEOUT.as_secs_f64() * 1000.0 {
                    seen.retried += 1;
                }
            }
            let answered_without_address = lookup
                .failure()
                .is_some_and(|why| ANSWERED_WITHOUT_ADDRESS.contains(&why));
            if lookup.addresses().is_some() || answered_without_address {
                seen.resolved += 1;
            } else {
                seen.failure(lookup.line.clone());
            }
        }
        for name in &names[lookups.len().min(names.len())..] {
            seen.failure(format!(
                "{name}: not reported by the lookup program {unreported}"
            ));
        }
    }
    seen
}

/// A UDP socket bound to `addr` inside `ns`, for this test's runtime (a socket stays in the
/// namespace it was made in, whichever thread uses it).
fn socket_in(ns: &Netns, addr: &str) -> UdpSocket {
    let socket = ns
        .run_inside(|| std::net::UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
    tokio_socket(socket)
}

/// Waits (bounded) until a query from `pod` to `server` is answered at all.
async fn wait_answered(pod: &Netns, server: SocketAddr, forwarder: &mut Running) {
    let socket = socket_in(pod, "0.0.0.0:0");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    for n in 0u16.. {
        let query = txt_query(n, &format!("ready{n}.{}.test.", pod.name()));
        socket.send_to(&query, server).await.expect("send");
        let wait = tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf));
        if let Ok(Ok(_)) = wait.await {
            return;
        }
        assert!(
            Instant::now() < deadline && !forwarder.has_exited(),
            "{server} does not answer {}: the forwarder {}",
            pod.name(),
            forwarder.report()
        );
    }
}

/// The pod-shaped storm: the forwarder binary in a node namespace on 169.254.20.10:53 (the
/// node's `lo`), a [`SlowUpstream`] on the node's 127.0.0.1, a storming pod (10.244.0.5)
/// asking distinct names at 1000 per second, and a quiet pod (10.244.2.5) whose glibc
/// getaddrinfo asks distinct names (`options timeout:1 attempts:2`). After 3 s of storm alone
/// (the adaptive limit learns what the upstream holds), every one of the quiet pod's lookups
/// in the next 6 s gets its answer (no EAI_AGAIN) at the first attempt, and the storm's
/// overflow is what gets turned away (`client_share`). Without fair turns and the adaptive
/// limit (`adaptive: false`, `per_client: 2048`), the upstream drops the quiet pod's queries
/// with the storm's: its lookups wait out glibc's retries (up to 4 s), some in vain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glibc_resolvers_in_a_quiet_pod_resolve_while_another_pod_storms() {
    let Some(node) = Netns::new("fair-node") else {
        return;
    };
    let Some(program) = cluster::clients::glibc_stub() else {
        return;
    };
    let storming = Netns::new("fair-storm").expect("root, as for the node");
    let quiet = Arc::new(Netns::new("fair-quiet").expect("root, as for the node"));
    cluster::veth(&node, &storming, "vstorm", "10.244.0", "5");
    cluster::veth(&node, &quiet, "vquiet", "10.244.2", "5");
    node.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{LINK_LOCAL}/32"),
        "dev",
        "lo",
    ]);
    let server = SocketAddr::from((LINK_LOCAL, 53));
    quiet.etc_file(
        "resolv.conf",
        &format!("nameserver {LINK_LOCAL}\noptions timeout:1 attempts:2\n"),
    );

    let upstream = SlowUpstream::serve(
        node.run_inside(|| std::net::UdpSocket::bind("127.0.0.1:0"))
            .expect("bind the upstream in the node"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("nodelocaldns.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"{server}\"]\nserver:\n  loop_check: false\nmetrics:\n  listen: \"{}\"\nzones:\n  - name: .\n    upstreams: [\"{}\"]\n    timeout: 1s\n    deadline: 2s\n    unanswered_ttl: 0s\n    cache:\n      enabled: false\n",
            cluster::METRICS,
            upstream.addr
        ),
    )
    .expect("write the config");
    let config = config.to_str().expect("a UTF-8 path");
    // Declared after the namespaces: killed before they go.
    let mut forwarder = Running::exec_in(&node, cluster::BIN, &["run", "--config", config], None);
    wait_answered(&storming, server, &mut forwarder).await;
    wait_answered(&quiet, server, &mut forwarder).await;

    let storm_until = Instant::now() + Duration::from_secs(3 + 6 + 1);
    let storm = tokio::spawn(noisy_client(
        socket_in(&storming, "0.0.0.0:0"),
        server,
        1000,
        storm_until,
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = (Instant::now() + Duration::from_secs(6)).into_std();
    let lookups = {
        let quiet = quiet.clone();
        tokio::task::spawn_blocking(move || glibc_lookups(&quiet, program, until))
            .await
            .expect("the quiet pod's lookups")
    };
    let (sent, servfail) = storm.await.expect("the storming pod");
    let metrics = node
        .run_inside(|| cluster::http_get(cluster::METRICS, "/metrics"))
        .unwrap_or_else(|| panic!("no metrics: the forwarder {}", forwarder.report()));
    let client_share = common::Exposition::parse(&metrics).sum(
        "nodelocaldns_queue_rejected_total",
        &[("reason", "client_share")],
    );
    let dropped = upstream.dropped.load(Ordering::Relaxed);
    eprintln!(
        "pods: quiet (glibc) {lookups:?}; storm sent {sent}, {servfail} SERVFAIL; client_share \
         rejections {client_share}; upstream dropped {dropped}"
    );
    assert!(lookups.resolved > 20, "the quiet pod asked: {lookups:?}");
    assert_eq!(lookups.failed, 0, "no quiet lookup fails: {lookups:?}");
    let lost = upstream.dropped_quiet.load(Ordering::Relaxed);
    assert_eq!(
        lost, 0,
        "the upstream dropped none of the quiet pod's queries"
    );
    assert!(
        client_share > 0.0,
        "the storm's overflow is turned away: {client_share} client_share rejections"
    );
}
