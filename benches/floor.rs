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
//! It is a `harness = false` bench target so `cargo bench --bench floor --no-run` builds it in
//! release beside the load generator. `cargo bench` runs every bench target with `--bench`:
//! without `--listen` this one prints a note and exits.
//!
//! Run: `cargo bench --bench floor -- --listen 127.0.0.1:5300 --loop blocking`

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

#[derive(Parser, Debug)]
#[command(about = "Answer every UDP query with itself, QR set: the cost floor of a wake-up")]
struct Args {
    /// Address to answer on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The shape of the receive loop.
    #[arg(long = "loop", value_enum, default_value_t = Loop::Blocking)]
    receive_loop: Loop,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Loop {
    Blocking,
    Reactor,
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
    match args.receive_loop {
        Loop::Blocking => blocking(&socket),
        Loop::Reactor => reactor(socket),
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

/// The listener's loop without the DNS: readiness from tokio's reactor (readability only, so a
/// datagram leaving is no event), `recvmmsg` of up to [`BATCH`], readiness cleared by a short
/// batch rather than a read that finds the socket empty, one `sendmmsg` for the answers. Like
/// the listener it allocates nothing per batch.
fn reactor(socket: UdpSocket) -> Result<()> {
    socket.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        // SAFETY: the socket owns its descriptor, and `AsyncFd` owns the socket from here on.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
        let fd = socket.get_ref().as_raw_fd();
        let mut received: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
        let mut sending: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
        let mut buffers = Box::new([[0u8; MAX_QUERY]; BATCH]);
        let mut lengths = [0usize; BATCH];
        let mut clients: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
        loop {
            let mut ready = socket.readable().await?;
            loop {
                let mut count = 0;
                let read = {
                    let mut slices = buffers.each_mut().map(|b| [IoSliceMut::new(b)]);
                    recvmmsg(
                        fd,
                        &mut received,
                        slices.iter_mut(),
                        MsgFlags::MSG_DONTWAIT,
                        None,
                    )
                    .map(|messages| {
                        for (message, (length, client)) in
                            messages.zip(lengths.iter_mut().zip(clients.iter_mut()))
                        {
                            *length = message.bytes;
                            *client = message.address;
                            count += 1;
                        }
                    })
                };
                match read {
                    Ok(()) => {}
                    Err(Errno::EAGAIN) => {
                        ready.clear_ready();
                        break;
                    }
                    Err(err) => return Err(anyhow::Error::from(err).context("recvmmsg")),
                }
                for (buffer, &length) in buffers.iter_mut().zip(&lengths[..count]) {
                    turn_around(&mut buffer[..length]);
                }
                let answers: [[IoSlice; 1]; BATCH] =
                    std::array::from_fn(|i| [IoSlice::new(&buffers[i][..lengths[i]])]);
                // As in `blocking`: an answer the kernel refuses is lost.
                let _ = sendmmsg(
                    fd,
                    &mut sending,
                    &answers[..count],
                    &clients[..count],
                    [],
                    MsgFlags::MSG_DONTWAIT,
                );
                if count < BATCH {
                    ready.clear_ready();
                    break;
                }
            }
        }
    })
}
