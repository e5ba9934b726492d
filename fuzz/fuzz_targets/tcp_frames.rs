//! TCP framing: the byte stream a TCP client sends is cut into messages by the same
//! `read_frame` the server's TCP listener uses, then each message is parsed as a query. The
//! same stream, arriving in reads of any sizes, is cut into the same messages by the
//! `FrameBuffer` the upstream pool reads answers through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodelocal_dns::server::framing::{frame, read_frame};
use nodelocal_dns::wire::framing::FrameBuffer;
use nodelocal_dns::wire::query::parse;

fuzz_target!(|stream: &[u8]| {
    let mut read_whole = Vec::new();
    futures::executor::block_on(async {
        let mut reader = stream;
        let mut consumed = 0;
        loop {
            match read_frame(&mut reader).await {
                Ok(Some(message)) => {
                    // Every frame is exactly the prefix-announced slice of the stream.
                    let framed = frame(&message);
                    assert_eq!(&stream[consumed..consumed + framed.len()], &framed[..]);
                    consumed += framed.len();
                    let _ = parse(&message);
                    read_whole.push(message);
                }
                // A clean end, or a frame cut short (a length prefix larger than the data).
                Ok(None) => {
                    assert!(stream.len() - consumed < 2);
                    break;
                }
                Err(err) => {
                    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
                    break;
                }
            }
        }
    });

    // Reads as long as the stream's own bytes say (1 to 256), so the cuts fall anywhere.
    let mut buffered = FrameBuffer::default();
    let mut taken = Vec::new();
    let mut rest = stream;
    let mut sizes = stream.iter().cycle();
    while !rest.is_empty() {
        let size = (usize::from(*sizes.next().unwrap_or(&0)) + 1).min(rest.len());
        let (read, after) = rest.split_at(size);
        buffered.buffer_for_read().extend_from_slice(read);
        rest = after;
        while let Some(message) = buffered.next_frame() {
            taken.push(message.to_vec());
        }
    }
    assert_eq!(taken, read_whole, "both framers cut the stream alike");
    let whole: usize = taken.iter().map(|message| 2 + message.len()).sum();
    assert_eq!(buffered.partial(), stream.len() - whole);
});
