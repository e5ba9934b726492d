//! The floor under every figure of `benches/run.sh` scenario 2: a UDP server that does nothing
//! but turn each query around (the same bytes, QR and RA set, no records), so its CPU per query
//! is what the kernel and one wake-up cost on this machine and nothing a DNS server does.
//!
//! Two shapes of receive loop, to tell the loop's own cost from the kernel's:
//! - `blocking`: one thread blocked in `recv_from`, answering with `send_to` (dnsdist's UDP
//!   frontend has this shape): two system calls per query, one wake-up.
//! - `reactor`: tokio's current-thread runtime and the shape of our listener: `epoll_wait`,
//!   `recvmmsg`, `sendmmsg`, three system calls per wake-up whatever the batch.
//!
//! No server can spend less than `blocking` per query while it is woken once per query, so at a
//! fixed rate the interesting figure of a server is its distance from this floor.
//!
//! A third shape is the floor under a miss (scenario 6): `forward` relays every query, its ID
//! swapped for a slot number, to one TCP connection to `--upstream`, and every answer back to
//! its client. It keeps no cache and reads nothing but the ID and the frame lengths, and writes
//! all the queries of one `recvmmsg` in one `write` and all the answers of one `read` in one
//! `sendmmsg`: what the kernel charges a forwarder over TCP on this machine, with no DNS server
//! around it. `forward-blocking` relays the same way from two threads blocked in their reads,
//! with no reactor (dnsdist's shape), so the floor is the cheaper of the two.
//!
//! It is a `harness = false` bench target so `cargo bench --bench floor --no-run` builds it in
//! release beside the load generator. `cargo bench` runs every bench target with `--bench`:
//! without `--listen` this one prints a note and exits.
//!
//! Run: `cargo bench --bench floor -- --listen 127.0.0.1:5300 --loop blocking`

use std::future::Future;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(about = "Answer every UDP query with itself, QR set: the cost floor of a wake-up")]
struct Args {
    /// Address to answer on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The shape of the receive loop.
    #[arg(long = "loop", value_enum, default_value_t = Loop::Blocking)]
    receive_loop: Loop,
    /// Where `--loop forward` and `forward-blocking` send the queries, over TCP.
    #[arg(long)]
    upstream: Option<SocketAddr>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Loop {
    Blocking,
    Reactor,
    Forward,
    ForwardBlocking,
}

/// Largest datagram read.
const MAX_QUERY: usize = 4096;
/// Datagrams per `recvmmsg`, as in the listener.
const BATCH: usize = 32;

fn main() -> Result<()> {
    let args = Args::parse();
    let Some(listen) = args.listen else {
        println!("floor: a bench server for benches/run.sh; pass --listen ADDR to run it");
        return Ok(());
    };
    let socket = UdpSocket::bind(listen).with_context(|| format!("cannot bind {listen}"))?;
    match (args.receive_loop, args.upstream) {
        (Loop::Blocking, _) => blocking(&socket),
        (Loop::Reactor, _) => reactor(socket),
        (Loop::Forward, Some(upstream)) => forward(socket, upstream),
        (Loop::ForwardBlocking, Some(upstream)) => forward_blocking(socket, upstream),
        (Loop::Forward | Loop::ForwardBlocking, None) => {
            anyhow::bail!("--loop forward needs --upstream")
        }
    }
}

/// Makes the query in `packet` its own answer: QR and RA set, RCODE 0. False when it is too
/// short to be a DNS message.
fn turn_around(packet: &mut [u8]) -> bool {
    if packet.len() < 12 {
        return false;
    }
    packet[2] |= 0x80;
    packet[3] = (packet[3] | 0x80) & 0xF0;
    true
}

fn blocking(socket: &UdpSocket) -> Result<()> {
    let mut buffer = [0u8; MAX_QUERY];
    loop {
        let (len, client) = socket.recv_from(&mut buffer).context("recv_from")?;
        if turn_around(&mut buffer[..len]) {
            // A full send buffer or an unreachable client loses this answer, as it would any
            // UDP server's.
            let _ = socket.send_to(&buffer[..len], client);
        }
    }
}

/// One `recvmmsg` worth of datagrams, in buffers allocated once.
struct Datagrams {
    headers: MultiHeaders<SockaddrStorage>,
    buffers: Box<[[u8; MAX_QUERY]; BATCH]>,
    lengths: [usize; BATCH],
    clients: [Option<SockaddrStorage>; BATCH],
    count: usize,
}

impl Datagrams {
    fn new() -> Datagrams {
        Datagrams {
            headers: MultiHeaders::preallocate(BATCH, None),
            buffers: Box::new([[0u8; MAX_QUERY]; BATCH]),
            lengths: [0; BATCH],
            clients: [None; BATCH],
            count: 0,
        }
    }

    /// Reads up to [`BATCH`] datagrams from `fd`; how many.
    fn receive(&mut self, fd: RawFd, flags: MsgFlags) -> Result<usize, Errno> {
        let mut count = 0;
        let mut slices = self.buffers.each_mut().map(|b| [IoSliceMut::new(b)]);
        let messages = recvmmsg(fd, &mut self.headers, slices.iter_mut(), flags, None)?;
        for (message, (length, client)) in
            messages.zip(self.lengths.iter_mut().zip(self.clients.iter_mut()))
        {
            *length = message.bytes;
            *client = message.address;
            count += 1;
        }
        self.count = count;
        Ok(count)
    }

    /// The datagrams read last, each with its sender.
    fn each_mut(&mut self) -> impl Iterator<Item = (&mut [u8], Option<SockaddrStorage>)> {
        self.buffers
            .iter_mut()
            .zip(self.lengths.iter().zip(&self.clients))
            .take(self.count)
            .map(|(buffer, (&length, &client))| (&mut buffer[..length], client))
    }

    /// Sends every datagram read last back to its sender, as it is now.
    fn send_back(&self, fd: RawFd, sending: &mut MultiHeaders<SockaddrStorage>) {
        let answers: [[IoSlice; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&self.buffers[i][..self.lengths[i]])]);
        // As in `blocking`: an answer the kernel refuses is lost.
        let _ = sendmmsg(
            fd,
            sending,
            &answers[..self.count],
            &self.clients[..self.count],
            [],
            MsgFlags::MSG_DONTWAIT,
        );
    }
}

/// Runs `serve` on tokio's current-thread runtime, `socket` registered with its reactor for
/// readability only, as the listener registers its sockets: a datagram leaving is no event.
fn on_reactor<Serve, Served>(socket: UdpSocket, serve: Serve) -> Result<()>
where
    Serve: FnOnce(AsyncFd<UdpSocket>) -> Served,
    Served: Future<Output = Result<()>>,
{
    socket.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        // SAFETY: the socket owns its descriptor, and `AsyncFd` owns the socket from here on.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
        serve(socket).await
    })
}

/// The listener's loop without the DNS: readiness from tokio's reactor, `recvmmsg` of up to [`BATCH`], readiness cleared by a short
/// batch rather than a read that finds the socket empty, one `sendmmsg` for the answers. Like
/// the listener it allocates nothing per batch.
fn reactor(socket: UdpSocket) -> Result<()> {
    on_reactor(socket, |socket| async move {
        let fd = socket.get_ref().as_raw_fd();
        let mut datagrams = Datagrams::new();
        let mut sending: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
        loop {
            let mut ready = socket.readable().await?;
            loop {
                let count = match datagrams.receive(fd, MsgFlags::MSG_DONTWAIT) {
                    Ok(count) => count,
                    Err(Errno::EAGAIN) => {
                        ready.clear_ready();
                        break;
                    }
                    Err(err) => return Err(anyhow::Error::from(err).context("recvmmsg")),
                };
                for (query, _) in datagrams.each_mut() {
                    turn_around(query);
                }
                datagrams.send_back(fd, &mut sending);
                if count < BATCH {
                    ready.clear_ready();
                    break;
                }
            }
        }
    })
}

/// Bytes of answers buffered from the upstream connection: room for the largest frame twice.
const STREAM_BUFFER: usize = 2 * (2 + u16::MAX as usize);

/// Who asked the query in flight under one slot: the upstream sees the slot as the ID.
#[derive(Clone, Copy, Default)]
struct Asked {
    client: Option<SockaddrStorage>,
    id: [u8; 2],
}

/// The queries in flight upstream, by slot. The relays hand out slots in turn, so a slot is
/// reused only after 65 536 later queries: long after its answer, at a floor's rates.
struct Slots {
    asked: Vec<Asked>,
    next: u16,
}

impl Slots {
    fn new() -> Slots {
        Slots {
            asked: vec![Asked::default(); usize::from(u16::MAX) + 1],
            next: 0,
        }
    }

    /// Appends each of `datagrams` to `queries` as a TCP frame, its ID swapped for a slot
    /// that remembers who asked. Datagrams too short to be DNS are dropped.
    fn frame(&mut self, datagrams: &mut Datagrams, queries: &mut Vec<u8>) {
        for (query, client) in datagrams.each_mut() {
            if query.len() < 12 {
                continue;
            }
            let slot = self.next;
            self.next = slot.wrapping_add(1);
            self.asked[usize::from(slot)] = Asked {
                client,
                id: [query[0], query[1]],
            };
            query[..2].copy_from_slice(&slot.to_be_bytes());
            let length = u16::try_from(query.len()).unwrap_or(u16::MAX);
            queries.extend_from_slice(&length.to_be_bytes());
            queries.extend_from_slice(query);
        }
    }

    fn get(&self, slot: u16) -> Asked {
        self.asked[usize::from(slot)]
    }
}

/// The floor under a miss: every query relayed to one TCP connection to `upstream` (opened on
/// the first query and again after the upstream closes it; what was in flight then is lost),
/// every answer relayed back. One task waits on both sockets, as one worker thread does.
fn forward(socket: UdpSocket, upstream: SocketAddr) -> Result<()> {
    on_reactor(socket, |socket| async move {
        let fd = socket.get_ref().as_raw_fd();
        let mut stream: Option<TcpStream> = None;
        let mut slots = Slots::new();
        let mut datagrams = Datagrams::new();
        let mut sending: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
        let mut queries = Vec::with_capacity(BATCH * (MAX_QUERY + 2));
        let mut answers = vec![0u8; STREAM_BUFFER];
        let mut filled = 0;
        loop {
            tokio::select! {
                ready = socket.readable() => {
                    let mut ready = ready?;
                    match datagrams.receive(fd, MsgFlags::MSG_DONTWAIT) {
                        Ok(count) if count < BATCH => ready.clear_ready(),
                        Ok(_) => {}
                        Err(Errno::EAGAIN) => {
                            ready.clear_ready();
                            continue;
                        }
                        Err(err) => return Err(anyhow::Error::from(err).context("recvmmsg")),
                    }
                    queries.clear();
                    slots.frame(&mut datagrams, &mut queries);
                    if queries.is_empty() {
                        continue;
                    }
                    if stream.is_none() {
                        let connected = TcpStream::connect(upstream)
                            .await
                            .with_context(|| format!("cannot connect to {upstream}"))?;
                        connected.set_nodelay(true)?;
                        stream = Some(connected);
                        filled = 0;
                    }
                    if let Some(connected) = &mut stream
                        && connected.write_all(&queries).await.is_err()
                    {
                        stream = None;
                    }
                }
                read = stream_readable(stream.as_ref()) => {
                    read?;
                    let Some(connected) = &stream else { continue };
                    match connected.try_read(&mut answers[filled..]) {
                        Ok(0) => stream = None,
                        Ok(read) => {
                            filled += read;
                            let sent =
                                send_answers(fd, &mut sending, &mut answers[..filled], |s| slots.get(s));
                            answers.copy_within(sent..filled, 0);
                            filled -= sent;
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => stream = None,
                    }
                }
            }
        }
    })
}

/// `forward` in dnsdist's shape: no reactor, two threads blocked in their reads. One waits in
/// `recvmmsg` for queries and writes them to the connection, the other waits in `read` on the
/// connection and sends the answers; no `epoll_wait`, but a thread wake-up on each side. The
/// connection is opened once: when the upstream closes it, the relay ends.
fn forward_blocking(socket: UdpSocket, upstream: SocketAddr) -> Result<()> {
    let stream = std::net::TcpStream::connect(upstream)
        .with_context(|| format!("cannot connect to {upstream}"))?;
    stream.set_nodelay(true)?;
    let slots = Mutex::new(Slots::new());
    std::thread::scope(|scope| {
        let answering = scope.spawn(|| -> Result<()> {
            let mut stream = &stream;
            let fd = socket.as_raw_fd();
            let mut sending: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
            let mut answers = vec![0u8; STREAM_BUFFER];
            let mut filled = 0;
            loop {
                let read = stream.read(&mut answers[filled..]).context("read")?;
                if read == 0 {
                    anyhow::bail!("the upstream closed the connection");
                }
                filled += read;
                // A panic on the other side leaves the table as it was: read it regardless.
                let sent = send_answers(fd, &mut sending, &mut answers[..filled], |slot| {
                    slots
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(slot)
                });
                answers.copy_within(sent..filled, 0);
                filled -= sent;
            }
        });
        let fd = socket.as_raw_fd();
        let mut stream = &stream;
        let mut datagrams = Datagrams::new();
        let mut queries = Vec::with_capacity(BATCH * (MAX_QUERY + 2));
        loop {
            if answering.is_finished() {
                return answering
                    .join()
                    .map_err(|_| anyhow::anyhow!("the answering thread panicked"))?;
            }
            // Blocks for the first datagram, then takes what else is there.
            datagrams
                .receive(fd, MsgFlags::MSG_WAITFORONE)
                .context("recvmmsg")?;
            queries.clear();
            slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .frame(&mut datagrams, &mut queries);
            stream.write_all(&queries).context("write")?;
        }
    })
}

/// Resolves when `stream` is readable; never when there is none.
async fn stream_readable(stream: Option<&TcpStream>) -> std::io::Result<()> {
    match stream {
        Some(stream) => stream.readable().await,
        None => std::future::pending().await,
    }
}

/// Sends every whole frame at the front of `stream` to the client that asked it (`asked`
/// tells who, by slot), its own ID back in place, [`BATCH`] to a `sendmmsg`. Returns the bytes
/// of the frames it took.
fn send_answers(
    fd: RawFd,
    sending: &mut MultiHeaders<SockaddrStorage>,
    stream: &mut [u8],
    mut asked: impl FnMut(u16) -> Asked,
) -> usize {
    let mut taken = 0;
    loop {
        let mut frames = [(0usize, 0usize); BATCH];
        let mut clients: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
        let mut count = 0;
        let mut at = taken;
        while count < BATCH && stream.len() - at >= 2 {
            let length = usize::from(u16::from_be_bytes([stream[at], stream[at + 1]]));
            if stream.len() - at - 2 < length {
                break;
            }
            let answer = &mut stream[at + 2..at + 2 + length];
            at += 2 + length;
            if answer.len() < 12 {
                continue;
            }
            let slot = asked(u16::from_be_bytes([answer[0], answer[1]]));
            answer[..2].copy_from_slice(&slot.id);
            frames[count] = (at - length, length);
            clients[count] = slot.client;
            count += 1;
        }
        if at == taken {
            return taken;
        }
        taken = at;
        let slices: [[IoSlice; 1]; BATCH] = std::array::from_fn(|i| {
            let (start, length) = frames[i];
            [IoSlice::new(&stream[start..start + length])]
        });
        // As in `blocking`: an answer the kernel refuses is lost.
        let _ = sendmmsg(
            fd,
            sending,
            &slices[..count],
            &clients[..count],
            [],
            MsgFlags::MSG_DONTWAIT,
        );
    }
}
