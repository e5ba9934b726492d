//! One client's storm cannot take DNS from the others (docs/design.md, failure 7): an upstream
//! of fixed capacity behind the forwarder, one client asking distinct names at several times
//! that capacity, three quiet clients on other source addresses (any 127/8 address binds on
//! Linux) asking distinct names at 10 QPS each. Real sockets throughout; counts only, no
//! timing asserts.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Forwarder;
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
    task: tokio::task::JoinHandle<()>,
}

impl SlowUpstream {
    async fn start() -> SlowUpstream {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let addr = socket.local_addr().expect("address");
        let dropped = Arc::new(AtomicUsize::new(0));
        let in_hand = Arc::new(AtomicUsize::new(0));
        let counted = dropped.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if len < 12 || in_hand.load(Ordering::Acquire) >= UPSTREAM_CAPACITY {
                    counted.fetch_add(1, Ordering::Relaxed);
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
            task,
        }
    }
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
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

/// The noisy client on 127.0.0.2: distinct names at `rate` per second, not waiting for
/// answers. Returns (sent, SERVFAIL answers).
async fn noisy_client(server: SocketAddr, rate: u32, until: Instant) -> (usize, usize) {
    let socket = Arc::new(UdpSocket::bind("127.0.0.2:0").await.expect("bind"));
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
    let noisy = tokio::spawn(noisy_client(server, 1000, start + Duration::from_secs(9)));
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
    let client_share = forwarder.metric(
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
