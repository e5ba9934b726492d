//! A TCP upstream that behaves like dnsmasq (the kube-dns of failure 1 in docs/design.md): it accepts
//! at most `max_connections` connections at a time (more wait in the listen backlog), serves
//! each connection one query at a time, and may close a connection after `close_after`
//! queries, dropping whatever was pipelined behind them. The answers come from a real
//! authoritative server, asked over UDP, as dnsmasq asks its own upstream.
//!
//! Like knotd, it leaves Nagle's algorithm on (no TCP_NODELAY): an answer written while the
//! one before it is not yet acknowledged waits in its kernel for our ACK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::{frame, read_frame};

pub struct SerialTcpOptions {
    pub max_connections: usize,
    /// Queries served per connection before the server closes it.
    pub close_after: Option<usize>,
    /// Time spent on each query before it is forwarded (a slow or loaded server).
    pub delay: Duration,
    /// Writes each answer's two-byte length and its message apart, in two writes.
    pub split_writes: bool,
    /// The first this many connections read queries and never answer, nor close: a backend
    /// that went away behind a Service IP, whose connection conntrack keeps pinned to it.
    pub silent_connections: usize,
}

impl Default for SerialTcpOptions {
    fn default() -> Self {
        SerialTcpOptions {
            max_connections: 20,
            close_after: None,
            delay: Duration::ZERO,
            split_writes: false,
            silent_connections: 0,
        }
    }
}

/// What the server saw, for assertions.
#[derive(Default)]
pub struct Counts {
    open: AtomicUsize,
    peak: AtomicUsize,
    accepted: AtomicUsize,
    served: AtomicUsize,
}

pub struct SerialTcp {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
}

impl SerialTcp {
    /// Serves on a free 127.0.0.1 port, answering from `authority` (a UDP DNS server).
    pub async fn start(authority: SocketAddr, options: SerialTcpOptions) -> SerialTcp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind TCP");
        let addr = listener.local_addr().expect("bound");
        let counts = Arc::new(Counts::default());
        tokio::spawn(accept_loop(listener, authority, options, counts.clone()));
        SerialTcp { addr, counts }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }

    /// Connections accepted in all.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Queries answered in all.
    pub fn served(&self) -> usize {
        self.counts.served.load(Ordering::SeqCst)
    }
}

async fn accept_loop(
    listener: TcpListener,
    authority: SocketAddr,
    options: SerialTcpOptions,
    counts: Arc<Counts>,
) {
    let options = Arc::new(options);
    let limit = Arc::new(Semaphore::new(options.max_connections));
    loop {
        // Like dnsmasq at its limit: stop accepting until a connection ends.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let index = counts.accepted.fetch_add(1, Ordering::SeqCst);
        let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
        counts.peak.fetch_max(open, Ordering::SeqCst);
        let (options, counts) = (options.clone(), counts.clone());
        tokio::spawn(async move {
            if index < options.silent_connections {
                swallow(stream).await;
            } else {
                serve(stream, authority, &options, &counts).await;
            }
            counts.open.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
    }
}

async fn serve(
    mut stream: TcpStream,
    authority: SocketAddr,
    options: &SerialTcpOptions,
    counts: &Counts,
) {
    let mut served = 0;
    while let Some(query) = read_frame(&mut stream).await {
        tokio::time::sleep(options.delay).await;
        let Some(answer) = ask(authority, &query).await else {
            return;
        };
        let framed = frame(&answer);
        let written = if options.split_writes {
            let (length, message) = framed.split_at(2);
            match stream.write_all(length).await {
                Ok(()) => stream.write_all(message).await,
                Err(err) => Err(err),
            }
        } else {
            stream.write_all(&framed).await
        };
        if written.is_err() {
            return;
        }
        counts.served.fetch_add(1, Ordering::SeqCst);
        served += 1;
        if options.close_after == Some(served) {
            return;
        }
    }
}

/// Reads queries until the client goes away, and answers none.
async fn swallow(mut stream: TcpStream) {
    while read_frame(&mut stream).await.is_some() {}
}

async fn ask(authority: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    socket.send_to(query, authority).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let received = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await;
    let len = received.ok()?.ok()?;
    buf.truncate(len);
    Some(buf)
}
