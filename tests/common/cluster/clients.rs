//! DNS clients that keep asking for the whole of a test, each the way a kind of real client
//! asks, and tally who answered: our forwarder, kube-dns directly, or nobody (after the
//! client's one retry).
//!
//! - [`Client::stub`]: a stub resolver's lookup, a fresh UDP socket for each, the same query
//!   again after 1 s without an answer (`options timeout:1 attempts:2`);
//! - [`Client::connected`]: one connected UDP socket for the whole test, as c-ares (Envoy,
//!   grpc) keeps one: its 5-tuple outlives every change of who answers;
//! - [`Client::getaddrinfo`]: glibc's getaddrinfo (`tests/stubs/lookup.c`) in a process of
//!   the namespace, whose `/etc/resolv.conf` names the address asked.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use super::{BY_KUBE_DNS, BY_US};
use crate::common::netns::Netns;

/// How long one attempt waits for its answer (`options timeout:1`).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts per lookup (`options attempts:2`): the query, and once more.
const ATTEMPTS: usize = 2;

/// Who answered one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Our forwarder: the answer of its own upstream for `svc.test`.
    ByUs,
    /// The kube-dns pod, reached through kube-proxy's DNAT or our fallback.
    ByKubeDns,
    /// No usable answer after every attempt; why.
    Failed(String),
}

impl Outcome {
    /// Reads an answer by its first address.
    fn of(answer: &Message) -> Outcome {
        let code = answer.metadata.response_code;
        if code != ResponseCode::NoError {
            return Outcome::Failed(format!("rcode {code:?}"));
        }
        Outcome::of_address(crate::common::addresses(answer).first().copied())
    }

    fn of_address(address: Option<Ipv4Addr>) -> Outcome {
        match address {
            Some(a) if a == BY_US => Outcome::ByUs,
            Some(a) if a == BY_KUBE_DNS => Outcome::ByKubeDns,
            other => Outcome::Failed(format!("an answer from nobody we know: {other:?}")),
        }
    }
}

/// A unique name under `svc.test` per query (no answer comes from a cache of a former one).
pub fn fresh_name(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{label}-{}.svc.test.", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The query for `name` A with a fresh ID: (ID, bytes).
fn encode(name: &str) -> (u16, Vec<u8>) {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let mut query = crate::common::query(name, RecordType::A, None);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    query.metadata.id = id;
    (id, query.to_vec().expect("a query encodes"))
}

/// Waits for the answer to `id` from `server` on `socket`, as a stub does: anything else that
/// comes is ignored (a late answer to an earlier attempt, a stray packet).
fn receive(socket: &UdpSocket, id: u16, server: SocketAddr) -> Result<Message, String> {
    let deadline = Instant::now() + ATTEMPT_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {ATTEMPT_TIMEOUT:?}"));
        }
        socket
            .set_read_timeout(Some(left))
            .expect("a read timeout above zero");
        match socket.recv_from(&mut buf) {
            Ok((len, from)) if from == server => match Message::from_vec(&buf[..len]) {
                Ok(answer) if answer.metadata.id == id => return Ok(answer),
                _ => continue,
            },
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // A connected socket learns of an ICMP port unreachable here.
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// One lookup on `socket` (connected or not): the query, and once more after an attempt
/// that got no answer.
fn ask_on(socket: &UdpSocket, server: SocketAddr, name: &str) -> Outcome {
    let (id, query) = encode(name);
    let mut why = String::new();
    for _ in 0..ATTEMPTS {
        let sent = match socket.peer_addr() {
            Ok(_) => socket.send(&query),
            Err(_) => socket.send_to(&query, server),
        };
        if let Err(e) = sent {
            why = format!("send: {e}");
            continue;
        }
        match receive(socket, id, server) {
            Ok(answer) => return Outcome::of(&answer),
            Err(e) => why = e,
        }
    }
    Outcome::Failed(why)
}

/// A stub resolver's lookup of a fresh name at `server` from this thread's namespace.
pub fn lookup(server: SocketAddr) -> Outcome {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind a client socket");
    ask_on(&socket, server, &fresh_name("probe"))
}

/// The counts of one client.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub by_us: usize,
    pub by_kube_dns: usize,
    pub failed: usize,
    /// The first failures: when (since the client started) and why.
    pub failures: Vec<(Duration, String)>,
}

impl Tally {
    fn record(&mut self, outcome: Outcome, at: Duration) {
        match outcome {
            Outcome::ByUs => self.by_us += 1,
            Outcome::ByKubeDns => self.by_kube_dns += 1,
            Outcome::Failed(why) => {
                self.failed += 1;
                if self.failures.len() < 10 {
                    self.failures.push((at, why));
                }
            }
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by us, {} by kube-dns, {} failed",
            self.by_us, self.by_kube_dns, self.failed
        )?;
        if !self.failures.is_empty() {
            write!(f, " (first failures: {:?})", self.failures)?;
        }
        Ok(())
    }
}

/// What a client's loop records into, and asks whether to go on.
pub struct Recorder {
    tally: Mutex<Tally>,
    stop: AtomicBool,
    started: Instant,
}

impl Recorder {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn record(&self, outcome: Outcome) {
        let at = self.started.elapsed();
        self.tally.lock().expect("not poisoned").record(outcome, at);
    }
}

/// A client asking on a thread of its own until it is stopped (or dropped).
pub struct Client {
    pub label: String,
    recorder: Arc<Recorder>,
    thread: Option<JoinHandle<()>>,
}

/// The pause between two lookups of one client.
const PACE: Duration = Duration::from_millis(50);

impl Client {
    /// Runs `body` on a new thread, inside `ns` when given.
    fn start(
        label: String,
        ns: Option<Arc<Netns>>,
        body: impl FnOnce(&Recorder) + Send + 'static,
    ) -> Client {
        let recorder = Arc::new(Recorder {
            tally: Mutex::default(),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        let inside = recorder.clone();
        let thread = std::thread::spawn(move || match ns {
            Some(ns) => ns.run_inside(|| body(&inside)),
            None => body(&inside),
        });
        Client {
            label,
            recorder,
            thread: Some(thread),
        }
    }

    /// Stub lookups from `ns`, a fresh socket each, one every 50 ms.
    pub fn stub(label: &str, ns: Arc<Netns>, server: Ipv4Addr) -> Client {
        let name = label.to_string();
        Client::start(
            format!("{label} (a socket per lookup)"),
            Some(ns),
            move |r| {
                let server = SocketAddr::from((server, 53));
                while r.running() {
                    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind a client socket");
                    r.record(ask_on(&socket, server, &fresh_name(&name)));
                    std::thread::sleep(PACE);
                }
            },
        )
    }

    /// Lookups from `ns` over one connected socket for the client's whole life.
    pub fn connected(label: &str, ns: Arc<Netns>, server: Ipv4Addr) -> Client {
        let name = label.to_string();
        Client::start(
            format!("{label} (one connected socket)"),
            Some(ns),
            move |r| {
                let server = SocketAddr::from((server, 53));
                let socket = UdpSocket::bind("0.0.0.0:0").expect("bind a client socket");
                socket.connect(server).expect("connect the client socket");
                while r.running() {
                    r.record(ask_on(&socket, server, &fresh_name(&name)));
                    std::thread::sleep(PACE);
                }
            },
        )
    }

    /// glibc's getaddrinfo in processes of `ns`, three names each, whose resolv.conf names
    /// `server` (`options timeout:1 attempts:2`); `None` (said) without a C compiler.
    pub fn getaddrinfo(ns: Arc<Netns>, server: Ipv4Addr) -> Option<Client> {
        let program = glibc_stub()?.to_str().expect("a UTF-8 path").to_string();
        ns.etc_file(
            "resolv.conf",
            &format!("nameserver {server}\noptions timeout:1 attempts:2\n"),
        );
        Some(Client::start(
            "getaddrinfo (glibc)".into(),
            None,
            move |r| {
                while r.running() {
                    let names: Vec<String> = (0..3).map(|_| fresh_name("gai")).collect();
                    let (lookups, unreported) = run_stub(&ns, &program, &names, PACE);
                    for lookup in &lookups {
                        r.record(match lookup.addresses() {
                            Some(mut addresses) => Outcome::of_address(
                                addresses.find_map(|a| a.parse::<Ipv4Addr>().ok()),
                            ),
                            None => Outcome::Failed(format!("getaddrinfo: {}", lookup.line)),
                        });
                    }
                    for _ in lookups.len()..names.len() {
                        r.record(Outcome::Failed(format!("the lookup program {unreported}")));
                    }
                }
            },
        ))
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        self.recorder.tally.lock().expect("not poisoned").clone()
    }

    /// Ends the loop (after the lookup in progress) and returns the final counts.
    pub fn stop(mut self) -> Tally {
        self.halt();
        self.tally()
    }

    fn halt(&mut self) {
        self.recorder.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A client that panicked has nothing more to count; its panic message is printed.
            let _ = thread.join();
        }
    }

    /// Waits (up to `bound`) until `condition` holds of the counts; true when it did.
    pub fn wait_for(&self, bound: Duration, condition: impl Fn(&Tally) -> bool) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if condition(&self.tally()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        condition(&self.tally())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One lookup as `tests/stubs/lookup.c` reports it, a line
/// `NAME<TAB>ok|fail<TAB>MILLISECONDS<TAB>ADDRESSES|REASON`.
pub struct StubLookup {
    pub line: String,
}

impl StubLookup {
    fn fields(&self) -> Vec<&str> {
        self.line.splitn(4, '\t').collect()
    }

    /// The comma-separated addresses of a lookup that succeeded; `None` for any other line.
    pub fn addresses(&self) -> Option<impl Iterator<Item = &str>> {
        match self.fields()[..] {
            [_, "ok", _, addresses] => Some(addresses.split(',')),
            _ => None,
        }
    }

    /// Why a lookup failed (`gai_strerror`, in the C locale); `None` for any other line.
    pub fn failure(&self) -> Option<&str> {
        match self.fields()[..] {
            [_, "fail", _, why] => Some(why),
            _ => None,
        }
    }

    /// How long the lookup took, in milliseconds.
    pub fn millis(&self) -> Option<f64> {
        self.fields().get(2).and_then(|ms| ms.parse().ok())
    }
}

/// Runs the lookup program `program` in `ns` for `names`, `interval` apart, in the C locale.
/// Returns the lookups it reported, in order, and what it said (exit status, stderr) for
/// names it did not report.
pub fn run_stub(
    ns: &Netns,
    program: &str,
    names: &[String],
    interval: Duration,
) -> (Vec<StubLookup>, String) {
    let mut args = vec![program];
    args.extend(names.iter().map(String::as_str));
    let out = ns
        .command(&args)
        .env("LOOKUP_INTERVAL_MS", interval.as_millis().to_string())
        .env("LC_ALL", "C")
        .output()
        .expect("ip netns exec runs");
    let lookups = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| StubLookup {
            line: line.to_string(),
        })
        .collect();
    let unreported = format!(
        "({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    (lookups, unreported)
}

/// `tests/stubs/lookup.c` built with cc once per test binary; `None` (said) without cc.
pub fn glibc_stub() -> Option<&'static Path> {
    static STUB: OnceLock<Option<PathBuf>> = OnceLock::new();
    STUB.get_or_init(|| {
        if Command::new("cc").arg("--version").output().is_err() {
            eprintln!("skipped: the getaddrinfo client: `cc` is not installed");
            return None;
        }
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stubs/lookup.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fail-open");
        std::fs::create_dir_all(&out).expect("create the stub's build directory");
        let program = out.join("lookup-glibc");
        let built = Command::new("cc")
            .args(["-O1", "-Wall", "-o"])
            .arg(&program)
            .arg(&source)
            .output()
            .expect("cc runs");
        assert!(
            built.status.success(),
            "cc {}: {}",
            source.display(),
            String::from_utf8_lossy(&built.stderr)
        );
        Some(program)
    })
    .as_deref()
}
