//! DNS over TCP framing (RFC 1035 4.2.2): each message preceded by its 16-bit length.
//!
//! [`FrameBuffer`] cuts what has been read from a connection into messages without copying
//! them; the upstream pool reads its answers through it. The TCP listener reads one query at a
//! time with `server::framing::read_frame`; the `tcp_frames` fuzz target holds the two to the
//! same frames for any stream cut anywhere.

use bytes::{Buf, BytesMut};

/// What has been read from a connection and not yet taken as a message. A message taken
/// keeps sharing the buffer's allocation, which the buffer takes back for later reads once
/// the messages holding it are gone.
pub struct FrameBuffer {
    buffer: BytesMut,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        FrameBuffer {
            buffer: BytesMut::with_capacity(8 * 1024),
        }
    }
}

impl FrameBuffer {
    /// The buffer to read into, with room for at least one byte (a read into no room returns
    /// 0, which would read as the end of the stream).
    pub fn buffer_for_read(&mut self) -> &mut BytesMut {
        self.buffer.reserve(1);
        &mut self.buffer
    }

    /// The next whole message read, if there is one.
    pub fn next_frame(&mut self) -> Option<BytesMut> {
        let &[high, low, ..] = &self.buffer[..] else {
            return None;
        };
        let framed = 2 + usize::from(u16::from_be_bytes([high, low]));
        if self.buffer.len() < framed {
            // Room for the rest of it, so that it is read in as few reads as it arrives in.
            self.buffer.reserve(framed - self.buffer.len());
            return None;
        }
        self.buffer.advance(2);
        Some(self.buffer.split_to(framed - 2))
    }

    /// Bytes read and not yet taken as a message: the start of one still arriving.
    pub fn partial(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `bytes` into `frames` as one read would.
    fn read(frames: &mut FrameBuffer, bytes: &[u8]) {
        frames.buffer_for_read().extend_from_slice(bytes);
    }

    fn all_frames(frames: &mut FrameBuffer) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| frames.next_frame().map(|frame| frame.to_vec())).collect()
    }

    #[test]
    fn a_frame_split_anywhere_is_taken_whole_once_its_last_byte_is_read() {
        let stream = [0, 3, b'a', b'b', b'c', 0, 1, b'd'];
        for cut in 0..=stream.len() {
            let mut frames = FrameBuffer::default();
            read(&mut frames, &stream[..cut]);
            let mut taken = all_frames(&mut frames);
            read(&mut frames, &stream[cut..]);
            taken.extend(all_frames(&mut frames));
            assert_eq!(taken, vec![b"abc".to_vec(), b"d".to_vec()], "cut at {cut}");
            assert_eq!(frames.partial(), 0);
        }
    }

    #[test]
    fn an_empty_frame_is_taken_and_does_not_stop_the_stream() {
        let mut frames = FrameBuffer::default();
        read(&mut frames, &[0, 0, 0, 1, b'x']);
        assert_eq!(all_frames(&mut frames), vec![Vec::new(), b"x".to_vec()]);
    }

    #[test]
    fn a_largest_frame_is_read_into_room_made_for_it() {
        let mut frames = FrameBuffer::default();
        read(&mut frames, &[0xff, 0xff, 1]);
        assert!(frames.next_frame().is_none());
        assert!(frames.buffer.capacity() >= 2 + 0xffff);
        read(&mut frames, &[1; 0xfffe]);
        assert_eq!(frames.next_frame().map(|frame| frame.len()), Some(0xffff));
        assert_eq!(frames.partial(), 0);
    }
}
