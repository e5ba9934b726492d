//! Memory per cached name (the target of docs/design.md: at most 300 bytes at 1 000 000 names), measured in-process
//! and in seconds rather than through `run.sh`'s scenario 5 (knotd + dnsperf, minutes): fills
//! a [`Cache`] through its real insert path (`Cache::resolve`, single flight, coherent A+AAAA
//! pairs) with upstream answers shaped as real upstreams send them, then reports
//!
//! - RSS growth per entry (`/proc/self/statm`, what `run.sh` measures of the whole server), and
//! - heap per entry by a counting allocator: bytes asked for, and glibc chunks (the request
//!   plus its 8-byte header, rounded to 16, at least 32), which is what RSS pays for.
//!
//! Then it times cache hits (`Cache::lookup` + `Entry::write_for`, what the hit path does with
//! the cache) over the filled cache, median of several rounds; pin it (`taskset -c 1`).
//!
//! ```sh
//! cargo bench --bench cache_memory -- [--entries N] [--shape mixed|bench] [--rounds R]
//! ```
//!
//! Shapes: `bench` is `run.sh`'s fill (`fN.mem.test`: one A, TTL 3600; AAAA NODATA with the
//! `test.` SOA, as knotd answers); `mixed` is cluster-like (`svc-N.ns-M.svc.cluster.local`):
//! 80 % one A and one AAAA, 10 % one A and NODATA, 10 % NXDOMAIN, each negative with the SOA.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use nodelocal_dns::cache::policy::TtlPolicy;
use nodelocal_dns::cache::{Cache, Lookup, PLAIN_VIEW, Served};
use nodelocal_dns::config::ZoneCacheConfig;
use nodelocal_dns::observe::Metrics;
use nodelocal_dns::wire::answer::Answer;
use nodelocal_dns::wire::answer::inspect;
use nodelocal_dns::wire::query::{Question, UpstreamFlags, build_upstream, parse};
use nodelocal_dns::wire::reply::ReplyLimits;
use nodelocal_dns::wire::{CLASS_IN, Name, rtype};

/// The system allocator, counting live bytes and glibc chunk bytes.
struct Counting;

static REQUESTED: AtomicI64 = AtomicI64::new(0);
static CHUNKS: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicI64 = AtomicI64::new(0);

/// The bytes glibc malloc takes for a request of `size` (64-bit: 8-byte chunk header, 16-byte
/// alignment, 32-byte minimum chunk).
fn chunk(size: usize) -> i64 {
    ((size + 8).div_ceil(16) * 16).max(32) as i64
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        REQUESTED.fetch_add(layout.size() as i64, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        REQUESTED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REQUESTED.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Parser)]
struct Args {
    /// Names to cache.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Answer shapes: `bench` (run.sh's scenario 5) or `mixed` (cluster-like).
    #[arg(long, default_value = "bench")]
    shape: String,
    /// Timed rounds of hits over the filled cache (0: none).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy)]
enum Shape {
    /// One A and one AAAA.
    Both,
    /// One A; AAAA NODATA.
    AOnly,
    NxDomain,
}

struct Sample {
    rss: i64,
    requested: i64,
    chunks: i64,
    allocations: i64,
}

fn sample() -> Sample {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm resident field");
    Sample {
        rss: pages * 4096,
        requested: REQUESTED.load(Ordering::Relaxed),
        chunks: CHUNKS.load(Ordering::Relaxed),
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
    }
}

fn name_of(i: usize, bench_shape: bool) -> String {
    if bench_shape {
        format!("f{}.mem.test", i + 1)
    } else {
        format!("svc-{i}.ns-{}.svc.cluster.local", i % 1000)
    }
}

fn shape_of(i: usize, bench_shape: bool) -> Shape {
    match (bench_shape, i % 10) {
        (true, _) => Shape::AOnly,
        (false, 0) => Shape::NxDomain,
        (false, 1) => Shape::AOnly,
        _ => Shape::Both,
    }
}

fn push_u16(msg: &mut Vec<u8>, v: u16) {
    msg.extend_from_slice(&v.to_be_bytes());
}

fn push_u32(msg: &mut Vec<u8>, v: u32) {
    msg.extend_from_slice(&v.to_be_bytes());
}

/// An upstream's answer to `question` as a compressing server writes it (owner names as
/// pointers into the question), with a trailing OPT as EDNS upstreams add.
fn upstream_answer(id: u16, question: &Question, shape: Shape, zone_labels: usize) -> Answer {
    let name = question.name.as_wire();
    let record = match (shape, question.qtype) {
        (Shape::NxDomain, _) => None,
        (Shape::AOnly, rtype::AAAA) => None,
        (_, qtype) => Some(qtype),
    };
    let rcode = if matches!(shape, Shape::NxDomain) {
        3
    } else {
        0
    };
    let mut msg = Vec::with_capacity(512);
    push_u16(&mut msg, id);
    push_u16(&mut msg, 0x8180 | rcode);
    push_u16(&mut msg, 1);
    push_u16(&mut msg, u16::from(record.is_some()));
    push_u16(&mut msg, u16::from(record.is_none()));
    push_u16(&mut msg, 1);
    msg.extend_from_slice(name);
    push_u16(&mut msg, question.qtype.0);
    push_u16(&mut msg, CLASS_IN);
    match record {
        Some(qtype) => {
            push_u16(&mut msg, 0xC00C);
            push_u16(&mut msg, qtype.0);
            push_u16(&mut msg, CLASS_IN);
            push_u32(&mut msg, 3600);
            if qtype == rtype::A {
                push_u16(&mut msg, 4);
                msg.extend_from_slice(&[192, 0, 2, 7]);
            } else {
                push_u16(&mut msg, 16);
                msg.extend_from_slice(&[
                    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
                ]);
            }
        }
        None => {
            // SOA of the zone (the question's last `zone_labels` labels): owner a pointer to
            // them, MNAME `ns.` and RNAME `hostmaster.` in front of the same pointer.
            let mut at = 0;
            let labels = question.name.label_count();
            for _ in 0..labels - zone_labels {
                at += 1 + name[at] as usize;
            }
            let zone = 0xC000 | (12 + at) as u16;
            push_u16(&mut msg, zone);
            push_u16(&mut msg, rtype::SOA.0);
            push_u16(&mut msg, CLASS_IN);
            push_u32(&mut msg, 300);
            let rdata_len = (1 + 2 + 2) + (1 + 10 + 2) + 20;
            push_u16(&mut msg, rdata_len);
            msg.extend_from_slice(b"\x02ns");
            push_u16(&mut msg, zone);
            msg.extend_from_slice(b"\x0ahostmaster");
            push_u16(&mut msg, zone);
            for v in [1, 3600, 600, 86400, 60] {
                push_u32(&mut msg, v);
            }
        }
    }
    // OPT: root owner, UDP size 1232, no options.
    msg.push(0);
    push_u16(&mut msg, rtype::OPT.0);
    push_u16(&mut msg, 1232);
    push_u32(&mut msg, 0);
    push_u16(&mut msg, 0);
    let mut info = inspect(&msg, id, question).expect("a well-formed answer");
    nodelocal_dns::wire::answer::strip_trailing_opt(&mut msg, &mut info);
    Answer {
        message: msg.as_slice().into(),
        info,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let bench_shape = match args.shape.as_str() {
        "bench" => true,
        "mixed" => false,
        other => {
            eprintln!("--shape: `bench` or `mixed`, not `{other}`");
            std::process::exit(2);
        }
    };
    let n = args.entries;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let config = ZoneCacheConfig {
        success_ttl: Duration::from_secs(3600),
        denial_ttl: Duration::from_secs(3600),
        ..ZoneCacheConfig::default()
    };
    let policy = TtlPolicy::new(&config);
    let zone_labels = if bench_shape { 1 } else { 2 };

    // The client queries, built before the baseline so they are not counted.
    let queries: Vec<_> = (0..n)
        .map(|i| {
            let question = Question {
                name: Name::from_dotted(&name_of(i, bench_shape)).expect("valid name"),
                qtype: if i % 2 == 0 { rtype::A } else { rtype::AAAA },
                qclass: CLASS_IN,
            };
            parse(&build_upstream(
                i as u16,
                &question,
                UpstreamFlags::default(),
                1232,
            ))
            .expect("valid query")
        })
        .collect();

    let before = sample();
    let cache = Cache::new(n, "dns://bench", Arc::new(Metrics::new()));
    let empty = sample();
    runtime.block_on(async {
        for (i, query) in queries.iter().enumerate() {
            let shape = shape_of(i, bench_shape);
            cache
                .resolve(
                    query,
                    PLAIN_VIEW,
                    tokio::time::Instant::now(),
                    &policy,
                    "bench",
                    |q| async move { Ok::<_, ()>(upstream_answer(7, &q, shape, zone_labels)) },
                )
                .await;
        }
    });
    let after = sample();
    // quick_cache sizes its shards for `n` and starts evicting slightly before: count what is
    // held, as run.sh divides by what was answered (its caches are sized the same way).
    let held = cache.len();
    let per = |a: i64, b: i64| (a - b) as f64 / held as f64;
    println!(
        "names={n} held={held} shape={} rss_per_entry={:.1} chunk_bytes_per_entry={:.1} requested_per_entry={:.1} allocations_per_entry={:.2} empty_cache_rss={:.1}MB empty_cache_chunks={:.1}MB",
        args.shape,
        per(after.rss, before.rss),
        per(after.chunks, before.chunks),
        per(after.requested, before.requested),
        per(after.allocations, before.allocations),
        (empty.rss - before.rss) as f64 / 1e6,
        (empty.chunks - before.chunks) as f64 / 1e6,
    );

    if args.rounds == 0 {
        return;
    }
    // Hits: the cache's part of the hit path, in a fixed pseudo-random order over all entries
    // (cache misses in the CPU's caches, as a big cache has), and over a hot 4096.
    let mut out = Vec::with_capacity(1232);
    let stale_window = Duration::from_secs(0);
    // A UDP client that advertised 1232 bytes, our default maximum.
    let limits = ReplyLimits {
        max_size: 1232,
        udp_size: 1232,
    };
    let mut time_hits = |indices: &mut dyn Iterator<Item = usize>, count: usize| {
        let start = Instant::now();
        let now = tokio::time::Instant::now();
        for i in indices {
            let query = &queries[i];
            match cache.lookup(query, PLAIN_VIEW, now, stale_window) {
                Lookup::Fresh(entry) => {
                    entry.write_for(query, now, Served::Fresh, limits, &mut out);
                    black_box(out.len())
                }
                // Evicted while filling (a few in a thousand): a miss costs less than a hit,
                // so these only flatter the figure by that share.
                _ => black_box(i),
            };
        }
        start.elapsed().as_nanos() as f64 / count as f64
    };
    let spread = |round: usize| (0..n).map(move |k| (k.wrapping_mul(2_654_435_761) + round) % n);
    let hot = 4096.min(n);
    let mut all_rounds = Vec::new();
    let mut hot_rounds = Vec::new();
    for round in 0..args.rounds {
        all_rounds.push(time_hits(&mut spread(round), n));
        let reps = 200;
        hot_rounds.push(time_hits(
            &mut (0..hot * reps).map(|k| (k % hot) * (n / hot)),
            hot * reps,
        ));
    }
    println!(
        "hit_ns_all={:.1} hit_ns_hot={:.1} (medians of {} rounds; all: {:?}; hot: {:?})",
        median(all_rounds.clone()),
        median(hot_rounds.clone()),
        args.rounds,
        all_rounds
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>(),
        hot_rounds
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>(),
    );
}
