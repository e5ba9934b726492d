//! Hostile TCP clients (docs/design.md, "Bounded everything"): byte streams that break the framing, a client that trickles
//! one byte at a time, and ten thousand connections opened at once. The packet rows of the
//! same table (bad headers, names, pointers, OPT records) are in tests/bad_input.rs. After
//! each row the forwarder still answers a normal query.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Authority, CLIENT_TIMEOUT, EXAMPLE_ZONE, Forwarder, frame, query, read_frame, tcp_query,
    udp_query,
};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The forwarder routes `example.` to a real authority; `server` is its `server:` section.
async fn forwarder(server: &str) -> (Authority, Forwarder) {
    let authority = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "server:\n{server}zones:\n  - name: example\n    upstreams: [\"{}\"]\n",
        authority.addr
    ))
    .await;
    (authority, forwarder)
}

fn good_query() -> Vec<u8> {
    query("www.example.", RecordType::A, None)
        .to_vec()
        .expect("query encodes")
}

/// The forwarder answers a normal query over UDP and over a new TCP connection.
async fn still_serves(server: SocketAddr, after: &str) {
    let msg = query("www.example.", RecordType::A, None);
    let answer = udp_query(server, &msg).await;
    assert_eq!(answer.answers.len(), 1, "after {after}: UDP answered");
    let answer = tcp_query(server, &msg).await;
    assert_eq!(answer.answers.len(), 1, "after {after}: TCP answered");
}

/// One byte stream a client sends before closing its side, and how many answers it gets
/// before the server closes the connection.
struct Stream {
    what: &'static str,
    bytes: Vec<u8>,
    answers: usize,
}

fn streams() -> Vec<Stream> {
    let good = frame(&good_query());
    let cut = |mut framed: Vec<u8>, keep: usize| {
        framed.truncate(keep);
        framed
    };
    vec![
        Stream {
            what: "a length prefix larger than the data",
            bytes: cut(good.clone(), 20),
            answers: 0,
        },
        Stream {
            what: "a length prefix of 65535 and ten bytes",
            bytes: [vec![0xFF, 0xFF], vec![0; 10]].concat(),
            answers: 0,
        },
        Stream {
            what: "half a length prefix",
            bytes: vec![0x00],
            answers: 0,
        },
        Stream {
            what: "a query, then a frame cut short",
            bytes: [good.clone(), cut(good.clone(), 9)].concat(),
            answers: 1,
        },
        Stream {
            // An empty message is shorter than a header: dropped, and the next frame read.
            what: "an empty frame, then a query",
            bytes: [vec![0, 0], good.clone()].concat(),
            answers: 1,
        },
        Stream {
            what: "a frame of 12 zero bytes (a query with no question), then a query",
            bytes: [frame(&[0; 12]), good.clone()].concat(),
            answers: 2,
        },
    ]
}

/// Each stream gets its answers, then the server closes the connection (it neither waits
/// for the missing bytes of a cut frame nor answers it), and the forwarder serves on.
#[tokio::test]
async fn broken_tcp_framing_ends_only_that_connection() {
    let (_authority, forwarder) = forwarder("  tcp_idle_timeout: 30s\n").await;
    for row in streams() {
        let mut stream = TcpStream::connect(forwarder.addr).await.expect("connect");
        stream.write_all(&row.bytes).await.expect("write");
        // Our side is done: the server sees the end of the stream in the middle of a frame.
        stream.shutdown().await.expect("half-close");
        let mut answers = 0;
        loop {
            let read = tokio::time::timeout(CLIENT_TIMEOUT, read_frame(&mut stream))
                .await
                .unwrap_or_else(|_| panic!("{}: the server closes, not waits", row.what));
            let Some(answer) = read else { break };
            Message::from_vec(&answer)
                .unwrap_or_else(|err| panic!("{}: answer decodes: {err}", row.what));
            answers += 1;
        }
        assert_eq!(answers, row.answers, "{}", row.what);
        still_serves(forwarder.addr, row.what).await;
    }
    forwarder.stop().await;
}

/// A client sending one byte every 500 ms keeps no connection past `tcp_idle_timeout`: the
/// timeout covers the whole message, not the gap between two bytes (slowloris).
#[tokio::test]
async fn a_client_trickling_bytes_is_cut_at_the_idle_timeout() {
    let (_authority, forwarder) = forwarder("  tcp_idle_timeout: 2s\n").await;
    let framed = frame(&good_query());
    let stream = TcpStream::connect(forwarder.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let mut closed = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        reader.read(&mut byte).await
    });
    let mut sent = 0;
    let read = loop {
        if sent < framed.len() && writer.write_all(&framed[sent..=sent]).await.is_ok() {
            sent += 1;
        }
        tokio::select! {
            read = &mut closed => break read.expect("reader task"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        // The frame would be complete after ~17 s; the server must not wait that long.
        assert!(sent < framed.len(), "the whole frame went through: not cut");
    };
    // A reset instead of a FIN is a close too.
    let read = read.unwrap_or(0);
    assert_eq!(read, 0, "closed without an answer");
    assert!(
        sent >= 2,
        "the trickle had started ({sent} bytes) before the cut"
    );
    still_serves(forwarder.addr, "a trickling client").await;
    forwarder.stop().await;
}

/// Raises this process's open-file limit to at least `need`: the test holds 10 000 client
/// sockets, and the in-process server one for each connection it holds. The hard limit is
/// raised too when it is lower, which only root may do.
fn raise_fd_limit(need: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let raised = unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur >= need || {
            limit.rlim_cur = need;
            limit.rlim_max = limit.rlim_max.max(need);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    assert!(
        raised,
        "cannot raise the open-file limit to the {need} this test needs (ulimit -n)"
    );
}

/// 10 000 TCP connections opened at once, each sending a query: at most
/// `max_tcp_connections` are served (they stay open), every other one is closed and counted,
/// and UDP clients are answered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tcp_connections_are_bounded_and_udp_keeps_serving() {
    const CLIENTS: usize = 10_000;
    const BOUND: usize = 100;
    raise_fd_limit((CLIENTS + BOUND + 1000) as u64);
    let (_authority, forwarder) = forwarder(&format!(
        "  max_tcp_connections: {BOUND}\n  tcp_idle_timeout: 120s\n"
    ))
    .await;
    let server = forwarder.addr;

    // UDP clients query all along.
    let stop = tokio_util::sync::CancellationToken::new();
    let udp = tokio::spawn({
        let stop = stop.clone();
        async move {
            let msg = query("www.example.", RecordType::A, None);
            let mut answered = 0;
            while !stop.is_cancelled() {
                let answer = udp_query(server, &msg).await;
                assert_eq!(answer.answers.len(), 1);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered
        }
    });

    // Every client connects, sends a query and reports the answer or the close, then holds
    // its connection (so a served one keeps its slot) until all have reported.
    let framed = frame(&good_query());
    let release = tokio_util::sync::CancellationToken::new();
    let (report, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let framed = framed.clone();
        let release = release.clone();
        let report = report.clone();
        clients.spawn(async move {
            let connect = tokio::time::timeout(Duration::from_secs(60), TcpStream::connect(server));
            let Ok(Ok(mut stream)) = connect.await else {
                let _ = report.send(Outcome::ConnectFailed);
                return;
            };
            // A write may fail when the close already arrived; the read tells.
            let _ = stream.write_all(&framed).await;
            let read = tokio::time::timeout(Duration::from_secs(60), read_frame(&mut stream)).await;
            let _ = report.send(match read {
                Ok(Some(_)) => Outcome::Answered,
                Ok(None) => Outcome::Closed,
                Err(_) => Outcome::Hung,
            });
            release.cancelled().await;
            drop(stream);
        });
    }
    drop(report);
    let mut count = std::collections::HashMap::<Outcome, usize>::new();
    for _ in 0..CLIENTS {
        let outcome = outcomes.recv().await.expect("every client reports");
        *count.entry(outcome).or_default() += 1;
    }
    release.cancel();
    while let Some(result) = clients.join_next().await {
        result.expect("client task");
    }
    stop.cancel();
    let udp_answered = udp.await.expect("UDP client");

    let of = |outcome| count.get(&outcome).copied().unwrap_or(0);
    eprintln!("outcomes: {count:?}, UDP answers meanwhile: {udp_answered}");
    assert_eq!(of(Outcome::Hung), 0, "no connection is left hanging");
    assert_eq!(
        of(Outcome::ConnectFailed),
        0,
        "the listener keeps accepting"
    );
    assert!(
        of(Outcome::Answered) <= BOUND,
        "at most {BOUND} connections served at once: {count:?}"
    );
    assert!(
        of(Outcome::Answered) > 0,
        "connections within the bound are served"
    );
    assert!(
        of(Outcome::Closed) > 0,
        "connections beyond the bound are closed"
    );
    assert_eq!(
        forwarder.scrape().value(
            "nodelocaldns_rejected_total",
            &[("reason", "tcp_connections")]
        ),
        of(Outcome::Closed) as f64,
        "every closed connection is counted"
    );
    assert!(udp_answered > 0);
    still_serves(server, "10 000 TCP connections").await;
    forwarder.stop().await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    ConnectFailed,
    Answered,
    Closed,
    Hung,
}
