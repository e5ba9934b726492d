//! Fixtures shared by the integration tests: a real authoritative upstream (hickory-server's
//! in-memory zone handler, serving zone-file text), our forwarder started in-process from YAML,
//! and raw DNS clients over real sockets.
//!
//! Every fixture binds port 0 on 127.0.0.1, so tests run in parallel.

#![allow(dead_code)] // each test binary uses a different part of the fixtures

pub mod cluster;
pub mod corpus;
pub mod fake_apiserver;
pub mod netns;
pub mod process;
pub mod prometheus;
pub mod serial_tcp;

pub use prometheus::Exposition;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;
use hickory_server::Server as AuthServer;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use nodelocal_dns::admin::{Endpoints, HttpServer, Inspector, Readiness};
use nodelocal_dns::config::Config;
use nodelocal_dns::kube::{PodIndex, PodWatch};
use nodelocal_dns::observe::Metrics;
use nodelocal_dns::responder::Responder;
use nodelocal_dns::server::Server;

/// How long a test client waits for one answer before calling it lost.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Every name under `example.` has an A record: each test query can be a distinct cache miss.
pub const WILDCARD_ZONE: &str = r#"
$TTL 300
@       IN SOA ns.example. admin.example. 1 3600 600 86400 5
@       IN NS  ns.example.
ns      IN A   127.0.0.1
*       IN A   192.0.2.7
"#;

/// A real authoritative DNS server on 127.0.0.1 (UDP and TCP on one port).
pub struct Authority {
    pub addr: SocketAddr,
    _server: AuthServer<Catalog>,
}

impl Authority {
    /// Serves each `(origin, zone file text)`; the text needs an SOA at the origin.
    pub async fn start(zones: &[(&str, &str)]) -> Authority {
        let mut catalog = Catalog::new();
        for (origin, text) in zones {
            let origin = Name::from_str(origin).expect("valid origin");
            let (origin, records) = Parser::new(*text, None, Some(origin))
                .parse()
                .expect("zone text parses");
            let handler =
                InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::new(
                    origin.clone(),
                    records,
                    ZoneType::Primary,
                    AxfrPolicy::Deny,
                )
                .expect("zone loads");
            catalog.upsert(origin.into(), vec![Arc::new(handler)]);
        }
        let mut server = AuthServer::new(catalog);
        let (udp, tcp) = bind_udp_tcp_pair().await;
        let addr = udp.local_addr().expect("bound");
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        Authority {
            addr,
            _server: server,
        }
    }
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
pub async fn bind_udp_tcp_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..32 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let addr = udp.local_addr().expect("bound");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Our forwarder, running in this process.
pub struct Forwarder {
    pub addr: SocketAddr,
    /// Every listen address, in the config's order (`addr` is the first).
    pub addrs: Vec<SocketAddr>,
    pub metrics: Arc<Metrics>,
    /// The HTTP listener's address, when the config has a `metrics:` section (use port 0).
    pub http: Option<SocketAddr>,
    pub readiness: Arc<Readiness>,
    pub responder: Arc<Responder>,
    server: Option<Server>,
    http_server: Option<HttpServer>,
}

impl Forwarder {
    /// Starts the forwarder from config YAML; its `listen` must use port 0 (it defaults to
    /// 127.0.0.1:0 here when absent).
    pub async fn start(yaml: &str) -> Forwarder {
        // Top-level `listen:` only: `metrics.listen` is indented.
        let yaml = if yaml.lines().any(|line| line.starts_with("listen:")) {
            yaml.to_string()
        } else {
            format!("listen: [\"127.0.0.1:0\"]\n{yaml}")
        };
        let config = Config::from_yaml(&yaml, "test config").expect("test config is valid");
        let metrics = Arc::new(Metrics::new());
        let responder = Arc::new(Responder::new(&config, metrics.clone()));
        let readiness = Readiness::for_config(&config, &metrics, None);
        let inspector = Inspector::new(&config, metrics.clone()).with_responder(responder.clone());
        Forwarder::start_parts(&config, metrics, responder, readiness, inspector).await
    }

    /// Starts the forwarder from config YAML (with `kubernetes.enabled` and a `node_name`) and
    /// the pod watch its autopath reads, through `client` (a [`fake_apiserver`]'s). Returns
    /// once the first pod list is indexed; the watch runs while the returned handle lives.
    pub async fn with_pods(yaml: &str, client: kube::Client) -> (Forwarder, PodWatch) {
        let config = Config::from_yaml(yaml, "test config").expect("test config is valid");
        let node = config.kubernetes.node().expect("the config names its node");
        let metrics = Arc::new(Metrics::new());
        let index = Arc::new(PodIndex::new(config.kubernetes.cluster_domain.0));
        let watch = PodWatch::start(client, &node, index.clone(), &metrics);
        tokio::time::timeout(Duration::from_secs(10), index.wait_synced())
            .await
            .expect("the pod index syncs");
        let pods = Some(index.clone());
        let responder = Arc::new(Responder::with_pods(&config, metrics.clone(), pods.clone()));
        let readiness = Readiness::for_config(&config, &metrics, Some(&index));
        let inspector = Inspector::new(&config, metrics.clone())
            .with_responder(responder.clone())
            .with_pods(pods);
        let forwarder =
            Forwarder::start_parts(&config, metrics, responder, readiness, inspector).await;
        (forwarder, watch)
    }

    /// Starts the forwarder with one cached zone, `example`, forwarded to `upstream`.
    pub async fn for_example(upstream: SocketAddr) -> Forwarder {
        Forwarder::start(&format!(
            "zones:\n  - name: example\n    upstreams: [\"{upstream}\"]\n"
        ))
        .await
    }

    /// Starts the forwarder from its parts (tests that need a responder with a pod index, or
    /// more readiness conditions); serves HTTP when `config.metrics.listen` has port 0.
    pub async fn start_parts(
        config: &Config,
        metrics: Arc<Metrics>,
        responder: Arc<Responder>,
        readiness: Readiness,
        inspector: Inspector,
    ) -> Forwarder {
        let readiness = Arc::new(readiness);
        let http_server = match config.metrics.listen.port() {
            // Only tests that ask for HTTP get it: the default port would collide.
            0 => {
                let endpoints = Endpoints {
                    metrics: metrics.clone(),
                    readiness: readiness.clone(),
                    inspector: Some(Arc::new(inspector)),
                };
                Some(
                    HttpServer::start(&config.metrics, endpoints)
                        .await
                        .expect("HTTP binds"),
                )
            }
            _ => None,
        };
        let server = Server::start(config, responder.clone()).expect("forwarder binds");
        readiness.set_listening(true);
        Forwarder {
            addr: server.local_addrs()[0],
            addrs: server.local_addrs().to_vec(),
            metrics,
            http: http_server.as_ref().and_then(|h| h.local_addr()),
            readiness,
            responder,
            server: Some(server),
            http_server,
        }
    }

    /// `/metrics` as it reads now, for [`Exposition::value`] and [`Exposition::sum`].
    pub fn scrape(&self) -> Exposition {
        Exposition::parse(&self.metrics.render())
    }

    pub async fn stop(mut self) {
        self.readiness.set_listening(false);
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        if let Some(http) = self.http_server.take() {
            http.shutdown().await;
        }
    }

    /// GETs `path` from the HTTP listener: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(
            self.http.expect("the config has metrics.listen on port 0"),
            path,
        )
        .await
    }
}

/// A plain HTTP/1.1 GET over a new connection: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to HTTP");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    tokio::time::timeout(CLIENT_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("an HTTP answer in time")
        .expect("read the answer");
    let response = String::from_utf8(response).expect("UTF-8 answer");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("headers end with an empty line");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// Decodes a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A query message for `name`/`rtype` with RD set; with EDNS when `edns_size` is given.
pub fn query(name: &str, rtype: RecordType, edns_size: Option<u16>) -> Message {
    let mut msg = Message::query();
    msg.add_query(Query::query(
        Name::from_str(name).expect("valid name"),
        rtype,
    ));
    msg.metadata.recursion_desired = true;
    if let Some(size) = edns_size {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        msg.set_edns(edns);
    }
    msg
}

/// `query`'s bytes with every other byte of its question name raised to upper case, as a
/// client using 0x20 randomisation sends it ("WwW.ExAmPlE."): hickory lowercases names when
/// it encodes, so the case is set in the bytes. Answers must echo it byte for byte.
pub fn mixed_case(query: &Message) -> Vec<u8> {
    let mut packet = query.to_vec().expect("query encodes");
    let name = 12..12
        + packet[12..]
            .iter()
            .position(|&b| b == 0)
            .expect("a root label");
    for (i, byte) in packet[name].iter_mut().enumerate() {
        if i % 2 == 1 {
            *byte = byte.to_ascii_uppercase();
        }
    }
    packet
}

/// Sends raw bytes over UDP and returns the answer bytes, or `None` when nothing came back
/// within `wait`.
pub async fn udp_raw(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    udp_raw_from("127.0.0.1", server, packet, wait).await
}

/// [`udp_raw`] from a socket bound to the source address `from` (a pod IP, `::1`).
pub async fn udp_raw_from(
    from: &str,
    server: SocketAddr,
    packet: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((from, 0)).await.expect("bind client");
    socket.send_to(packet, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .expect("receive");
    buf.truncate(len);
    Some(buf)
}

/// Sends a query over UDP and decodes the answer; panics when none comes.
pub async fn udp_query(server: SocketAddr, msg: &Message) -> Message {
    udp_query_from("127.0.0.1", server, msg).await
}

/// [`udp_query`] from a socket bound to the source address `from` (a pod IP, `::1`).
pub async fn udp_query_from(from: &str, server: SocketAddr, msg: &Message) -> Message {
    let bytes = msg.to_vec().expect("query encodes");
    let answer = udp_raw_from(from, server, &bytes, CLIENT_TIMEOUT)
        .await
        .expect("an answer over UDP");
    Message::from_vec(&answer).expect("answer decodes")
}

/// Sends one query over a new TCP connection and decodes the answer.
/// Asks `count` distinct names (`{prefix}{i}.example.`, type A) at once over UDP; returns
/// each answer, in the order asked, with when it came.
pub async fn ask_all(
    server: SocketAddr,
    count: usize,
    prefix: &str,
) -> Vec<(Message, tokio::time::Instant)> {
    let asks = (0..count).map(|i| {
        let name = format!("{prefix}{i}.example.");
        tokio::spawn(async move {
            let answer = udp_query(server, &query(&name, RecordType::A, None)).await;
            (answer, tokio::time::Instant::now())
        })
    });
    let mut answers = Vec::with_capacity(count);
    for ask in asks.collect::<Vec<_>>() {
        answers.push(ask.await.expect("client task"));
    }
    answers
}

pub async fn tcp_query(server: SocketAddr, msg: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    write_frame(&mut stream, &msg.to_vec().expect("query encodes")).await;
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream))
        .await
        .expect("an answer over TCP in time")
        .expect("an answer frame");
    Message::from_vec(&answer).expect("answer decodes")
}

/// One DNS message with its TCP length prefix.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    framed
}

/// Writes one length-prefixed DNS message.
pub async fn write_frame(stream: &mut TcpStream, message: &[u8]) {
    stream
        .write_all(&frame(message))
        .await
        .expect("write frame");
}

/// Reads one length-prefixed DNS message; `None` at end of stream.
pub async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut message).await.ok()?;
    Some(message)
}

/// Zone-file text for `origin` (with its final dot): `$TTL ttl`, the SOA (MINIMUM 5, for
/// negative answers) and NS every zone has, then `records`.
pub fn zone(origin: &str, ttl: u32, records: &str) -> String {
    format!(
        "$TTL {ttl}\n@ IN SOA ns.{origin} admin.{origin} 1 3600 600 86400 5\n\
         @ IN NS ns.{origin}\nns IN A 127.0.0.1\n{records}"
    )
}

/// `example.com.`, where pods look up `api.example.com` (A and AAAA) through their search path.
pub const EXAMPLE_COM: &str = r#"
$TTL 60
@       IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 5
@       IN NS  ns.example.com.
ns      IN A   127.0.0.1
api     IN A   192.0.2.10
api     IN AAAA 2001:db8::10
"#;

/// A small zone with the record shapes the tests need: A, AAAA, a CNAME chain, a name with
/// only A, a large TXT RRset, and an SOA with MINIMUM 5 for negative answers.
pub const EXAMPLE_ZONE: &str = r#"
$TTL 300
@       IN SOA ns.example. admin.example. 1 3600 600 86400 5
@       IN NS  ns.example.
ns      IN A   127.0.0.1
www     IN A   192.0.2.1
www     IN AAAA 2001:db8::1
alias   IN CNAME www
v4only  IN A   192.0.2.2
"#;

/// The same zone with `count` TXT records of `len` bytes under `big`: an answer larger than
/// any UDP limit we honour.
pub fn zone_with_big_rrset(count: usize, len: usize) -> String {
    let mut zone = EXAMPLE_ZONE.to_string();
    for i in 0..count {
        zone.push_str(&format!("big IN TXT \"{i:03}{}\"\n", "x".repeat(len)));
    }
    zone
}

/// The transport a scripted upstream received a query on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Udp,
    Tcp,
}

/// What a scripted upstream sends for one query: each message after its delay (counted from
/// the query's arrival). An empty list says nothing at all.
pub type Script = dyn Fn(&Message, Via) -> Vec<(Duration, Message)> + Send + Sync;

/// One query a scripted upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: u16,
    pub name: Name,
    pub rtype: RecordType,
    pub via: Via,
    /// The querier's address: where a forged answer would be aimed.
    pub from: SocketAddr,
}

/// A DNS upstream on 127.0.0.1 (UDP and TCP on one port) whose answers come from a closure:
/// it can delay, stay silent, truncate, fail, or send answers that must be ignored. TCP
/// connections are served pipelined, each answer written when its delay ends.
pub struct Scripted {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub async fn start(script: Arc<Script>) -> Scripted {
        let (udp, tcp) = bind_udp_tcp_pair().await;
        let addr = udp.local_addr().expect("bound");
        let seen = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(serve_scripted_udp(
            Arc::new(udp),
            script.clone(),
            seen.clone(),
        ));
        tokio::spawn(serve_scripted_tcp(tcp, script, seen.clone()));
        Scripted { addr, seen }
    }

    /// Every query received so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }

    /// How many queries of `rtype` arrived (over either transport).
    pub fn count(&self, rtype: RecordType) -> usize {
        self.seen().iter().filter(|s| s.rtype == rtype).count()
    }
}

/// Decodes a query and records it; `None` for anything without a question.
fn note_query(
    bytes: &[u8],
    via: Via,
    from: SocketAddr,
    seen: &Mutex<Vec<Seen>>,
) -> Option<Message> {
    let request = Message::from_vec(bytes).ok()?;
    let question = request.queries.first()?;
    seen.lock().expect("not poisoned").push(Seen {
        id: request.metadata.id,
        name: question.name().clone(),
        rtype: question.query_type(),
        via,
        from,
    });
    Some(request)
}

async fn serve_scripted_udp(
    socket: Arc<UdpSocket>,
    script: Arc<Script>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Some(request) = note_query(&buf[..len], Via::Udp, from, &seen) else {
            continue;
        };
        for (delay, response) in script(&request, Via::Udp) {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let bytes = response.to_vec().expect("response encodes");
                let _ = socket.send_to(&bytes, from).await;
            });
        }
    }
}

async fn serve_scripted_tcp(
    listener: TcpListener,
    script: Arc<Script>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            return;
        };
        let (script, seen) = (script.clone(), seen.clone());
        tokio::spawn(async move {
            let (mut reader, writer) = stream.into_split();
            let writer = Arc::new(tokio::sync::Mutex::new(writer));
            loop {
                let mut len = [0u8; 2];
                if reader.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut bytes = vec![0u8; u16::from_be_bytes(len) as usize];
                if reader.read_exact(&mut bytes).await.is_err() {
                    return;
                }
                let Some(request) = note_query(&bytes, Via::Tcp, peer, &seen) else {
                    continue;
                };
                for (delay, response) in script(&request, Via::Tcp) {
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let bytes = response.to_vec().expect("response encodes");
                        let _ = writer.lock().await.write_all(&frame(&bytes)).await;
                    });
                }
            }
        });
    }
}

/// The response to `request` with `code`, its question echoed, and `answers`.
pub fn reply(request: &Message, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.response_code = code;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    response.add_answers(answers);
    response
}

/// What a [`Programmable`] upstream answers for one question: `None` says nothing; otherwise
/// the rcode, answer section and authority section.
pub type Behaviour =
    dyn Fn(&Name, RecordType) -> Option<(ResponseCode, Vec<Record>, Vec<Record>)> + Send + Sync;

/// A scripted upstream that answers by question alone, every answer after the same delay.
pub struct Programmable {
    pub addr: SocketAddr,
    pub delay: Duration,
    upstream: Scripted,
}

impl Programmable {
    pub async fn start(delay: Duration, behaviour: Arc<Behaviour>) -> Programmable {
        let upstream = Scripted::start(Arc::new(move |request: &Message, _| {
            let Some(question) = request.queries.first() else {
                return vec![];
            };
            let Some((code, answers, authority)) =
                behaviour(question.name(), question.query_type())
            else {
                return vec![];
            };
            let mut response = reply(request, code, answers);
            response.add_authorities(authority);
            vec![(delay, response)]
        }))
        .await;
        Programmable {
            addr: upstream.addr,
            delay,
            upstream,
        }
    }

    pub fn count(&self, rtype: RecordType) -> usize {
        self.upstream.count(rtype)
    }
}

pub fn name(text: &str) -> Name {
    Name::from_str(text).expect("valid name")
}

pub fn a(owner: &str, ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A::new(192, 0, 2, 7)))
}

/// An A record with a chosen address: tests tell answers apart by it.
pub fn a_with(owner: &str, ttl: u32, address: Ipv4Addr) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(address)))
}

pub fn aaaa(owner: &str, ttl: u32) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    )
}

/// What a [`Programmable`] upstream answers for a name with both an A and an AAAA record:
/// the A record when asked for A, the AAAA record otherwise.
pub fn dual_stack(
    owner: &str,
    rtype: RecordType,
    ttl: u32,
) -> Option<(ResponseCode, Vec<Record>, Vec<Record>)> {
    let record = if rtype == RecordType::A {
        a(owner, ttl)
    } else {
        aaaa(owner, ttl)
    };
    Some((ResponseCode::NoError, vec![record], vec![]))
}

pub fn cname(owner: &str, target: &str, ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

/// An SOA for negative answers: RFC 2308 takes min(`ttl`, `minimum`).
pub fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let soa = SOA::new(
        name(&format!("ns.{zone}")),
        name(&format!("admin.{zone}")),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    Record::from_rdata(name(zone), ttl, RData::SOA(soa))
}

/// The IPv4 addresses in an answer section, in order.
/// The value of an upstream metric `name` of `forwarder`, for `upstream` and `extra` labels.
pub fn upstream_metric(
    forwarder: &Forwarder,
    name: &str,
    upstream: SocketAddr,
    extra: &[(&str, &str)],
) -> f64 {
    let label = upstream.to_string();
    let mut labels = vec![("upstream", label.as_str())];
    labels.extend_from_slice(extra);
    forwarder.scrape().value(name, &labels)
}

/// How many of `answers` are NOERROR with exactly the address `answer`.
pub fn answered_with(answers: &[(Message, tokio::time::Instant)], answer: Ipv4Addr) -> usize {
    answers
        .iter()
        .filter(|(m, _)| {
            m.metadata.response_code == ResponseCode::NoError && addresses(m) == vec![answer]
        })
        .count()
}

pub fn addresses(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// Waits until `condition` holds, polling, for at most `CLIENT_TIMEOUT`; true when it did.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + CLIENT_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Waits until the async `condition` holds, polling every 50 ms for at most 15 s (a config
/// reload is checked every 2 s); true when it did.
pub async fn eventually_async<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition().await
}

/// The error a config is refused with, as a user reads it (the file is `test.yaml`), when its
/// one zone `zone` (upstream 10.0.0.1) has the lines `section`, indented as in the zone.
pub fn zone_config_error(zone: &str, section: &str) -> String {
    let yaml = format!(
        "listen: [\"127.0.0.1:53\"]\nzones:\n  - name: {zone}\n    upstreams: [10.0.0.1]\n{section}"
    );
    Config::from_yaml(&yaml, "test.yaml")
        .expect_err("refused")
        .to_string()
}

/// The error a Corefile is refused with (the file is `Corefile`) when its one block,
/// `.:53 { forward . 10.0.0.10 ... }`, has the lines `lines` after the forward.
pub fn corefile_block_error(lines: &str) -> String {
    let corefile = format!(".:53 {{\n    forward . 10.0.0.10\n{lines}}}\n");
    let options = nodelocal_dns::nodecache::TranslateOptions::default();
    nodelocal_dns::nodecache::translate(&corefile, "Corefile", &options)
        .expect_err("refused")
        .to_string()
}

/// Each input of `cases` is refused by `error_of` with an error that starts as its pair says.
pub fn assert_refused(cases: &[(&str, &str)], error_of: impl Fn(&str) -> String) {
    for (input, want) in cases {
        let err = error_of(input);
        assert!(err.starts_with(want), "{input:?}: {err}");
    }
}
