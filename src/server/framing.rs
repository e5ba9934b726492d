//! DNS over TCP framing (RFC 1035 4.2.2: a 16-bit length, then the message), as our
//! TCP listeners read and write it: one query read at a time, since reading pauses while a
//! connection has `max_tcp_pipelined` in progress. Upstream connections read many answers per
//! read through [`crate::wire::framing::FrameBuffer`].

use tokio::io::AsyncReadExt;

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
