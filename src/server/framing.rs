//! One query over a new TCP connection (RFC 1035 4.2.2 framing: a 16-bit length, then the
//! message). The bounded, pipelined pool replaces this for zones that use TCP heavily.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Answer, ExchangeError};
use crate::wire::query::{Question, UpstreamFlags, build_upstream, message_id};

/// Sends `question` to `server` over a new TCP connection; waits up to `timeout` in all.
pub async fn exchange(
    server: SocketAddr,
    question: &Question,
    flags: UpstreamFlags,
    udp_size: u16,
    timeout: Duration,
    mismatched: &IntCounter,
) -> Result<Answer, ExchangeError> {
    let id = rand::random::<u16>();
    let query = build_upstream(id, question, flags, udp_size);
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&frame(&query)).await?;
        loop {
            let message = read_frame(&mut stream)
                .await?
                .ok_or(ExchangeError::Closed)?;
            if message_id(&message) != Some(id) {
                mismatched.inc();
                continue;
            }
            return Answer::accept(message, id, question).map_err(ExchangeError::Malformed);
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))?
}

/// The message with its 2-byte length prefix.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Reads one length-prefixed message; `None` on a clean end of stream before a new frame.
pub async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    reader.read_exact(&mut message).await?;
    Ok(Some(message))
}
