//! DNS over TLS upstreams (`transport: tls`) against a real DoT server: unbound, with a test CA
//! and a server certificate made for each run by the `openssl` CLI, serving a local zone
//! (no recursion). Answers come back over TLS, a certificate for another name is refused, a
//! reconnect resumes the TLS session, one connection carries many queries at once, and an
//! upstream that goes away mid-connection is failed over.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    Forwarder, addresses, answered_with, ask_all, eventually, query, udp_query, upstream_metric,
};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// The name the test server's certificate carries.
const SERVER_NAME: &str = "dns.test";

/// A test CA and a certificate it signed for [`SERVER_NAME`], in a directory of their own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ext = dir.path().join("ext");
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=DNS:{SERVER_NAME}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write extensions");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            dir.path(),
            &["req", "-x509"],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=test-ca",
            ],
        );
        openssl(
            dir.path(),
            &["req"],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                &format!("/CN={SERVER_NAME}"),
            ],
        );
        openssl(
            dir.path(),
            &["x509", "-req"],
            &[],
            &[
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        );
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

fn openssl(dir: &Path, command: &[&str], key: &[&str], rest: &[&str]) {
    let output = Command::new("openssl")
        .args(command)
        .args(key)
        .args(rest)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "openssl {command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// unbound answering DNS over TLS on 127.0.0.1 from a local zone: every name under
/// `example.` is `answer`.
struct Unbound {
    addr: SocketAddr,
    child: Child,
    _config: tempfile::TempDir,
}

impl Unbound {
    fn start(pki: &Pki, answer: Ipv4Addr) -> Unbound {
        // A free port, released for unbound to take (it binds its own sockets).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Unbound::start_on(pki, answer, port)
    }

    fn start_on(pki: &Pki, answer: Ipv4Addr, port: u16) -> Unbound {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("unbound.conf");
        std::fs::write(
            &config,
            format!(
                "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  tls-port: {port}\n\
                 \x20 tls-service-key: {key}\n  tls-service-pem: {pem}\n  do-daemonize: no\n\
                 \x20 use-syslog: no\n  logfile: \"\"\n  username: \"\"\n  chroot: \"\"\n\
                 \x20 directory: {dir}\n  pidfile: \"\"\n  do-ip6: no\n  do-udp: no\n\
                 \x20 access-control: 127.0.0.0/8 allow\n  num-threads: 1\n\
                 \x20 incoming-num-tcp: 100\n\
                 \x20 local-zone: \"example.\" redirect\n  local-data: \"example. 300 IN A {answer}\"\n\
                 remote-control:\n  control-enable: no\n",
                key = pki.path("server.key").display(),
                pem = pki.path("server.pem").display(),
                dir = dir.path().display(),
            ),
        )
        .expect("write unbound.conf");
        let child = Command::new("unbound")
            .args(["-d", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unbound is installed (scripts/test.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listening = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(listening, "unbound listens on {addr}");
        Unbound {
            addr,
            child,
            _config: dir,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A forwarder sending `example.` over TLS to `upstreams`, without a cache, checking the
/// certificate against the test CA and `server_name`; `pool` lines go under `pool:`.
async fn forwarder(
    pki: &Pki,
    upstreams: &[SocketAddr],
    server_name: &str,
    pool: &str,
) -> Forwarder {
    let upstreams: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    let pool: String = pool.lines().map(|line| format!("      {line}\n")).collect();
    Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [{}]\n    transport: tls\n    policy: sequential\n    max_fails: 0\n    cache:\n      enabled: false\n    tls:\n      server_name: {server_name}\n      ca_file: {}\n    pool:\n{pool}",
        upstreams.join(", "),
        pki.path("ca.pem").display(),
    ))
    .await
}

/// The TLS connections opened to `upstream`.
fn connects(forwarder: &Forwarder, upstream: SocketAddr) -> f64 {
    upstream_metric(forwarder, "nodelocaldns_pool_connects_total", upstream, &[])
}

async fn ask(forwarder: &Forwarder, name: &str) -> (ResponseCode, Vec<Ipv4Addr>) {
    let answer = udp_query(forwarder.addr, &query(name, RecordType::A, None)).await;
    (answer.metadata.response_code, addresses(&answer))
}

const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// A client's UDP question goes out over TLS and comes back; after the connection idles out,
/// the next one resumes the session the first handshake left (a shorter handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_over_tls_and_a_reconnect_resumes() {
    let pki = Pki::new();
    let unbound = Unbound::start(&pki, ANSWER);
    let forwarder = forwarder(&pki, &[unbound.addr], SERVER_NAME, "idle_timeout: 100ms\n").await;

    assert_eq!(
        ask(&forwarder, "www.example.").await,
        (ResponseCode::NoError, vec![ANSWER])
    );
    let handshakes = |kind| {
        upstream_metric(
            &forwarder,
            "nodelocaldns_pool_tls_handshakes_total",
            unbound.addr,
            &[("kind", kind)],
        )
    };
    assert_eq!((handshakes("full"), handshakes("resumed")), (1.0, 0.0));

    let idle = [("reason", "idle")];
    assert!(
        eventually(|| upstream_metric(
            &forwarder,
            "nodelocaldns_pool_closed_total",
            unbound.addr,
            &idle
        ) >= 1.0)
        .await,
        "the connection closes once idle"
    );
    assert_eq!(
        ask(&forwarder, "again.example.").await,
        (ResponseCode::NoError, vec![ANSWER])
    );
    assert_eq!(
        (handshakes("full"), handshakes("resumed")),
        (1.0, 1.0),
        "the second connection resumed the first one's session"
    );
    assert_eq!(connects(&forwarder, unbound.addr), 2.0);
}

/// A certificate that does not carry the configured name is refused: no answer from that
/// upstream (SERVFAIL to the client), and the failed handshake counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused() {
    let pki = Pki::new();
    let unbound = Unbound::start(&pki, ANSWER);
    let forwarder = forwarder(&pki, &[unbound.addr], "other.test", "").await;

    assert_eq!(
        ask(&forwarder, "www.example.").await,
        (ResponseCode::ServFail, vec![])
    );
    let failures = upstream_metric(
        &forwarder,
        "nodelocaldns_pool_tls_handshake_failures_total",
        unbound.addr,
        &[],
    );
    assert!(failures >= 1.0, "{failures} failed handshakes counted");
    let done = upstream_metric(
        &forwarder,
        "nodelocaldns_pool_tls_handshakes_total",
        unbound.addr,
        &[("kind", "full")],
    );
    assert_eq!(done, 0.0, "no handshake succeeded");
}

/// 200 questions at once over a pool of one connection: all answered, over that one
/// connection (pipelined, matched by ID).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_many_queries_at_once() {
    let pki = Pki::new();
    let unbound = Unbound::start(&pki, ANSWER);
    let forwarder = forwarder(
        &pki,
        &[unbound.addr],
        SERVER_NAME,
        "max_connections: 1\nmax_inflight: 256\n",
    )
    .await;

    let answers = ask_all(forwarder.addr, 200, "many").await;

    let answered = answered_with(&answers, ANSWER);
    assert_eq!(answered, 200, "every query answered over TLS");
    assert_eq!(connects(&forwarder, unbound.addr), 1.0);
}

/// The first upstream goes away with a connection open: the next question finds the
/// connection closed, cannot reconnect, and is answered by the second upstream; once the
/// first is back, the pool connects to it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_goes_away_is_failed_over_and_reconnected() {
    let pki = Pki::new();
    let mut first = Unbound::start(&pki, ANSWER);
    let backup = Ipv4Addr::new(192, 0, 2, 8);
    let second = Unbound::start(&pki, backup);
    let forwarder = forwarder(
        &pki,
        &[first.addr, second.addr],
        SERVER_NAME,
        "idle_timeout: 60s\n",
    )
    .await;

    assert_eq!(
        ask(&forwarder, "www.example.").await,
        (ResponseCode::NoError, vec![ANSWER])
    );
    first.stop();
    assert_eq!(
        ask(&forwarder, "next.example.").await,
        (ResponseCode::NoError, vec![backup]),
        "the second upstream answers while the first is gone"
    );

    let port = first.addr.port();
    let _first = Unbound::start_on(&pki, ANSWER, port);
    assert_eq!(
        ask(&forwarder, "back.example.").await,
        (ResponseCode::NoError, vec![ANSWER])
    );
    assert!(connects(&forwarder, first.addr) >= 2.0);
}

/// CoreDNS's DoT forms in a Corefile (`tls://IP%NAME:PORT` and `tls CA`) translate to a zone
/// that asks over TLS and gets the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corefile_forward_to_tls_is_answered_over_tls() {
    use nodelocal_dns::nodecache::translate::{TranslateOptions, translate};

    let pki = Pki::new();
    let unbound = Unbound::start(&pki, ANSWER);
    let corefile = format!(
        "example:53 {{\n  bind 127.0.0.1\n  forward . tls://127.0.0.1%{SERVER_NAME}:{port} {{\n    tls {ca}\n  }}\n}}\n",
        port = unbound.addr.port(),
        ca = pki.path("ca.pem").display(),
    );
    let translation =
        translate(&corefile, "Corefile", &TranslateOptions::default()).expect("translates");
    // Served on a port of its own rather than the Corefile's 53.
    let yaml = translation
        .config
        .to_yaml()
        .replace("127.0.0.1:53", "127.0.0.1:0");
    let forwarder = Forwarder::start(&yaml).await;

    assert_eq!(
        ask(&forwarder, "www.example.").await,
        (ResponseCode::NoError, vec![ANSWER])
    );
    let full = [("kind", "full")];
    let handshakes = upstream_metric(
        &forwarder,
        "nodelocaldns_pool_tls_handshakes_total",
        unbound.addr,
        &full,
    );
    assert_eq!(handshakes, 1.0);
}
