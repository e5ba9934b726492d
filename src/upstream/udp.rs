//! One query over UDP, as failure 4 of docs/design.md asks: a fresh socket per query, so a fresh
//! source port (Linux picks ephemeral UDP ports at random) and our random ID (RFC 5452), and
//! never a long-lived `connect`ed socket whose conntrack entry can go stale. An answer counts
//! only when it comes from the address we asked, with our ID and our question; anything else
//! is counted and ignored while we keep waiting.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use prometheus::IntCounter;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::{Answer, ExchangeError};
use crate::wire::answer::AnswerError;
use crate::wire::query::{Question, UpstreamFlags, append_upstream};

/// Largest UDP answer we read; a larger datagram is cut by the kernel, fails to parse and is
/// treated like a truncated answer (retried over TCP by the caller).
const RECV_BUFFER: usize = 4096;

/// A non-blocking UDP socket of `server`'s family, not bound: the first `sendto` binds it to
/// a random ephemeral port (Linux picks UDP autobind ports at random, as it does for an
/// explicit bind to port 0), which saves the `bind` call of every query.
///
/// It is registered with the reactor for readability only: registered for writability, the
/// datagram leaving would be reported as one more event, an `epoll_wait` return per query
/// for a send that never waits (a fresh socket's send buffer is empty).
fn unbound_socket(server: SocketAddr) -> io::Result<AsyncFd<Socket>> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    // SAFETY: the socket owns its descriptor, and `AsyncFd` owns the socket from here on:
    // nothing else can close or replace the descriptor while it is registered.
    Ok(unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?)
}

/// Waits for the next datagram on `socket` and appends it to the empty `buf` (its capacity is
/// the most read; nothing is zeroed first). Returns its length and source.
async fn receive(socket: &AsyncFd<Socket>, buf: &mut BytesMut) -> io::Result<(usize, SockAddr)> {
    loop {
        let mut ready = socket.readable().await?;
        let received = ready.try_io(|socket| socket.get_ref().recv_from(buf.spare_capacity_mut()));
        if let Ok(result) = received {
            let (len, from) = result?;
            // SAFETY: the kernel wrote `len` bytes at the start of the spare capacity.
            unsafe { buf.set_len(len) };
            return Ok((len, from));
        }
    }
}

/// Sends `question` to `server` over UDP and waits up to `timeout` for its answer.
pub async fn exchange(
    server: SocketAddr,
    question: &Question,
    flags: UpstreamFlags,
    udp_size: u16,
    timeout: Duration,
    mismatched: &IntCounter,
) -> Result<Answer, ExchangeError> {
    let deadline = Instant::now() + timeout;
    let id = rand::random::<u16>();
    let socket = unbound_socket(server)?;
    // One buffer for the query and then its answer, which the answer keeps. Capacity, not
    // length: the kernel writes the datagram into it, nothing is zeroed first.
    let mut buf = BytesMut::with_capacity(RECV_BUFFER);
    append_upstream(&mut buf, id, question, flags, udp_size);
    socket.get_ref().send_to(&buf, &server.into())?;
    buf.clear();
    loop {
        let received = tokio::time::timeout_at(deadline, receive(&socket, &mut buf)).await;
        let (len, from) = received.map_err(|_| ExchangeError::Timeout(timeout))??;
        if from.as_socket() != Some(server) {
            mismatched.inc();
            buf.clear();
            continue;
        }
        match Answer::accept(buf, id, question) {
            Ok(answer) => return Ok(answer),
            Err(err) if err.is_mismatch() || err == AnswerError::NotResponse => {
                mismatched.inc();
                buf = BytesMut::with_capacity(RECV_BUFFER);
            }
            // A datagram cut at our buffer size: ask again over TCP.
            Err(AnswerError::Malformed(_)) if len == RECV_BUFFER => {
                return Err(ExchangeError::Truncated);
            }
            Err(err) => return Err(ExchangeError::Malformed(err)),
        }
    }
}
