//! A fixed-rate DNS load generator over UDP that reports latency percentiles.
//!
//! dnsperf offers a rate (`-Q`) but reports only the average latency; the target (docs/design.md) is a
//! p99 at 50 000 QPS, so `benches/run.sh` uses this for its latency row. The load is open-loop:
//! query `i` is due at `i / rate` seconds whatever the answers do, so a slow server shows up as
//! latency and lost queries instead of silently lowering the offered rate. If the generator
//! itself falls behind its schedule it says so (`max_lag_us`), which makes its figures suspect.
//!
//! Input is a dnsperf data file (`name [TYPE]` per line, TYPE defaulting to A), cycled as often as
//! the rate and duration need. With `--burst N` every N consecutive lines are due at the same
//! moment and go out back to back on one socket: `--burst 2` over lines `name A` and `name AAAA`
//! is how glibc, musl and Go ask for a host's addresses (both queries at once, from one socket),
//! where dnsperf spaces them `1 / rate` apart. Each of `--sockets` sockets has its own 16-bit ID
//! space; an answer is matched by socket, ID and question bytes, so a late answer to a reused ID
//! is not credited to its successor. Output is one line of `key=value` pairs for scripts.
//!
//! It is a `harness = false` bench target so it shares the crate's compiled dependencies and is
//! built in release by `cargo bench --bench loadgen --no-run`. `cargo bench` runs every bench
//! target with `--bench`: without `--server` this one prints a note and exits.
//!
//! Run: `cargo bench --bench loadgen -- --server 127.0.0.1:5300 --names names.txt --rate 50000`

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};

/// Bits of a send slot that hold the send time (ns since start); the rest hold the name index.
const TIME_BITS: u32 = 40;
const INDEX_BITS: u32 = 64 - TIME_BITS;
/// A slot of 0 means "nothing outstanding", so stored times are offset by one.
const EMPTY: u64 = 0;

#[derive(Parser, Debug)]
#[command(about = "Offer a fixed UDP query rate and report p50/p99/p99.9 latency and lost queries")]
struct Args {
    /// The DNS server under test (keep it on 127.0.0.0/8).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// dnsperf-format data file: `name [TYPE]` per line.
    #[arg(long)]
    names: Option<PathBuf>,
    /// Queries per second offered.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds after which an unanswered query counts as lost.
    #[arg(long, default_value_t = 1.0)]
    timeout: f64,
    /// Client sockets (each has its own ID space and receiver thread).
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// Consecutive lines sent together, back to back on one socket (the rate still counts
    /// queries).
    #[arg(long, default_value_t = 1)]
    burst: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One query's wire form with ID 0, and where its question ends (to match answers).
struct Query {
    wire: Vec<u8>,
}

impl Query {
    fn question(&self) -> &[u8] {
        &self.wire[12..]
    }
}

/// What one receiver thread saw.
#[derive(Default)]
struct Received {
    latencies_ns: Vec<u64>,
    late: u64,
    mismatched: u64,
    rcodes: [u64; 16],
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (Some(server), Some(names)) = (args.server, args.names.as_ref()) else {
        eprintln!("loadgen: nothing to do without --server and --names (see benches/README.md)");
        return Ok(());
    };
    if !server.ip().is_loopback() {
        bail!("--server {server}: benchmarks send traffic to loopback addresses only");
    }
    if args.rate == 0
        || args.duration <= 0.0
        || args.sockets == 0
        || args.timeout <= 0.0
        || args.burst == 0
    {
        bail!("--rate, --duration, --timeout, --sockets and --burst must be positive");
    }
    if args.duration + args.timeout > ((1u64 << TIME_BITS) as f64) / 1e9 {
        bail!("--duration plus --timeout must stay under 1000 s");
    }
    let queries = read_queries(names)?;
    if queries.len() >= 1 << INDEX_BITS {
        bail!(
            "{}: at most {} names",
            names.display(),
            (1u64 << INDEX_BITS) - 1
        );
    }
    let queries = Arc::new(queries);

    let sockets = (0..args.sockets)
        .map(|_| client_socket(server))
        .collect::<Result<Vec<_>>>()?;
    // One slot per (socket, ID): send time and name index of the query in flight there.
    let slots: Arc<Vec<AtomicU64>> = Arc::new(
        (0..args.sockets << 16)
            .map(|_| AtomicU64::new(EMPTY))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let timeout_ns = (args.timeout * 1e9) as u64;
    let start = Instant::now();

    let receivers = sockets
        .iter()
        .enumerate()
        .map(|(n, socket)| {
            let socket = socket.try_clone().context("cloning a client socket")?;
            let (slots, queries, stop) = (slots.clone(), queries.clone(), stop.clone());
            Ok(thread::spawn(move || {
                receive(n, &socket, &slots, &queries, &stop, start, timeout_ns)
            }))
        })
        .collect::<Result<Vec<_>>>()?;

    let total = (args.rate as f64 * args.duration) as u64;
    let (sent, send_errors, max_lag) = send(&args, &sockets, &queries, &slots, start, total);
    let send_elapsed = start.elapsed();
    thread::sleep(Duration::from_nanos(timeout_ns));
    stop.store(true, Ordering::Relaxed);

    let mut all = Received::default();
    for handle in receivers {
        let r = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a receiver thread panicked"))??;
        all.latencies_ns.extend_from_slice(&r.latencies_ns);
        all.late += r.late;
        all.mismatched += r.mismatched;
        for (total, n) in all.rcodes.iter_mut().zip(r.rcodes) {
            *total += n;
        }
    }
    all.latencies_ns.sort_unstable();
    let answered = all.latencies_ns.len() as u64;
    let pct = |p: f64| -> f64 {
        match all.latencies_ns.len() {
            0 => f64::NAN,
            n => all.latencies_ns[((n as f64 * p) as usize).min(n - 1)] as f64 / 1e3,
        }
    };
    let avg = if answered == 0 {
        f64::NAN
    } else {
        all.latencies_ns.iter().sum::<u64>() as f64 / answered as f64 / 1e3
    };
    let other: u64 = all.rcodes.iter().sum::<u64>() - all.rcodes[0] - all.rcodes[2] - all.rcodes[3];
    println!(
        "offered_qps={} sent={sent} send_errors={send_errors} answered={answered} lost={} late={} mismatched={} \
         achieved_qps={:.0} avg_us={avg:.1} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} max_lag_us={:.0} \
         noerror={} nxdomain={} servfail={} other_rcode={other}",
        args.rate,
        (sent + send_errors).saturating_sub(answered),
        all.late,
        all.mismatched,
        sent as f64 / send_elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        pct(1.0),
        max_lag.as_secs_f64() * 1e6,
        all.rcodes[0],
        all.rcodes[3],
        all.rcodes[2],
    );
    Ok(())
}

/// Reads a dnsperf data file into queries with RD set and ID 0.
fn read_queries(path: &PathBuf) -> Result<Vec<Query>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut queries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let name = fields.next().unwrap_or_default();
        let qtype = match fields.next().unwrap_or("A").to_ascii_uppercase().as_str() {
            "A" => 1u16,
            "NS" => 2,
            "CNAME" => 5,
            "SOA" => 6,
            "PTR" => 12,
            "MX" => 15,
            "TXT" => 16,
            "AAAA" => 28,
            "SRV" => 33,
            other => bail!("{}:{}: unknown query type {other}", path.display(), n + 1),
        };
        let wire =
            encode_query(name, qtype).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        queries.push(Query { wire });
    }
    if queries.is_empty() {
        bail!("{}: no names", path.display());
    }
    Ok(queries)
}

/// The wire form of a standard query (RD, no EDNS, like dnsperf without `-e`).
fn encode_query(name: &str, qtype: u16) -> Result<Vec<u8>> {
    let mut wire = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            bail!("label longer than 63 bytes in {name}");
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    if wire.len() - 12 > 255 {
        bail!("name longer than 255 bytes: {name}");
    }
    wire.extend_from_slice(&qtype.to_be_bytes());
    wire.extend_from_slice(&1u16.to_be_bytes());
    Ok(wire)
}

/// A connected client socket with buffers large enough for bursts at the offered rate.
fn client_socket(server: SocketAddr) -> Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .context("creating a UDP socket")?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    socket
        .bind(&local.into())
        .context("binding a client socket")?;
    socket
        .connect(&server.into())
        .with_context(|| format!("connecting to {server}"))?;
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .context("setting a read timeout")?;
    Ok(socket)
}

/// Sends `total` queries on schedule; returns (sent, send errors, worst lag behind schedule).
fn send(
    args: &Args,
    sockets: &[UdpSocket],
    queries: &[Query],
    slots: &[AtomicU64],
    start: Instant,
    total: u64,
) -> (u64, u64, Duration) {
    let mut packets: Vec<Vec<u8>> = queries.iter().map(|q| q.wire.clone()).collect();
    let (mut sent, mut errors, mut max_lag) = (0u64, 0u64, Duration::ZERO);
    let ns_per_query = 1e9 / args.rate as f64;
    let (burst, count) = (args.burst, sockets.len() as u64);
    let mut i = 0u64;
    while i < total {
        let now = start.elapsed();
        // Whole bursts: a burst is due when its first query is.
        let due_queries = (now.as_nanos() as f64 / ns_per_query) as u64 + 1;
        let due = due_queries.div_ceil(burst).saturating_mul(burst).min(total);
        if i < due {
            let scheduled = Duration::from_nanos((i as f64 * ns_per_query) as u64);
            max_lag = max_lag.max(now.saturating_sub(scheduled));
        }
        while i < due {
            // A burst goes to one socket, its queries numbered on from that socket's last.
            let (nth_burst, in_burst) = (i / burst, i % burst);
            let socket = (nth_burst % count) as usize;
            let id = (((nth_burst / count) * burst + in_burst) & 0xffff) as u16;
            let index = (i % queries.len() as u64) as usize;
            let packet = &mut packets[index];
            packet[..2].copy_from_slice(&id.to_be_bytes());
            let at = start.elapsed().as_nanos() as u64 + 1;
            // An older query still in this slot has outlived the timeout many times over (the ID
            // space of a socket lasts 65536 * sockets / rate seconds): it is lost either way.
            slots[(socket << 16) | id as usize]
                .store((at << INDEX_BITS) | index as u64, Ordering::Release);
            match sockets[socket].send(packet) {
                Ok(_) => sent += 1,
                Err(_) => {
                    slots[(socket << 16) | id as usize].store(EMPTY, Ordering::Release);
                    errors += 1;
                }
            }
            i += 1;
        }
        if i < total {
            let next = Duration::from_nanos((i as f64 * ns_per_query) as u64);
            let wait = next.saturating_sub(start.elapsed());
            // Sleeping costs ~60 µs of timer slack; spin-yield for shorter gaps.
            if wait > Duration::from_micros(200) {
                thread::sleep(wait - Duration::from_micros(100));
            } else {
                thread::yield_now();
            }
        }
    }
    (sent, errors, max_lag)
}

/// Receives answers on one socket until `stop`, matching them to their send slots.
fn receive(
    n: usize,
    socket: &UdpSocket,
    slots: &[AtomicU64],
    queries: &[Query],
    stop: &AtomicBool,
    start: Instant,
    timeout_ns: u64,
) -> Result<Received> {
    let mut out = Received {
        latencies_ns: Vec::with_capacity(1 << 20),
        ..Received::default()
    };
    let mut buf = [0u8; 65535];
    while !stop.load(Ordering::Relaxed) {
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // ICMP port unreachable while the server restarts: the queries count as lost.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e).context("receiving answers"),
        };
        let now = start.elapsed().as_nanos() as u64 + 1;
        if len < 12 {
            out.mismatched += 1;
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
        let slot = slots[(n << 16) | id].swap(EMPTY, Ordering::AcqRel);
        if slot == EMPTY {
            out.mismatched += 1;
            continue;
        }
        let index = (slot & ((1 << INDEX_BITS) - 1)) as usize;
        let question = queries[index].question();
        if len < 12 + question.len() || !buf[12..12 + question.len()].eq_ignore_ascii_case(question)
        {
            // Someone else's answer (a late one for an ID reused since): put the slot back.
            slots[(n << 16) | id].store(slot, Ordering::Release);
            out.mismatched += 1;
            continue;
        }
        let latency = now.saturating_sub(slot >> INDEX_BITS);
        if latency > timeout_ns {
            out.late += 1;
            continue;
        }
        out.latencies_ns.push(latency);
        out.rcodes[(buf[3] & 0x0f) as usize] += 1;
    }
    Ok(out)
}
