//! One query over UDP, the way DESIGN.md failure 4 asks: a fresh socket per query, so a fresh
//! source port (Linux picks ephemeral UDP ports at random) and our random ID (RFC 5452), and
//! never a long-lived `connect`ed socket whose conntrack entry can go stale. An answer counts
//! only when it comes from the address we asked, with our ID and our question; anything else
//! is counted and ignored while we keep waiting.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::{Answer, ExchangeError};
use crate::wire::answer::AnswerError;
use crate::wire::query::{Question, UpstreamFlags, build_upstream};

/// Largest UDP answer we read; a larger datagram is cut by the kernel, fails to parse and is
/// treated like a truncated answer (retried over TCP by the caller).
const RECV_BUFFER: usize = 4096;

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
    let query = build_upstream(id, question, flags, udp_size);
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.send_to(&query, server).await?;
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let (len, from) = received.map_err(|_| ExchangeError::Timeout(timeout))??;
        if from != server {
            mismatched.inc();
            continue;
        }
        buf.truncate(len);
        match Answer::accept(buf, id, question) {
            Ok(answer) => return Ok(answer),
            Err(err) if err.is_mismatch() || err == AnswerError::NotResponse => {
                mismatched.inc();
                buf = vec![0u8; RECV_BUFFER];
            }
            // A datagram cut at our buffer size: ask again over TCP.
            Err(AnswerError::Malformed(_)) if len == RECV_BUFFER => {
                return Err(ExchangeError::Truncated);
            }
            Err(err) => return Err(ExchangeError::Malformed(err)),
        }
    }
}
