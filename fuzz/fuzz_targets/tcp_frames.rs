//! TCP framing: the byte stream a TCP client sends is cut into messages by the same
//! `read_frame` the server's TCP listener uses, then each message is parsed as a query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodelocal_dns::server::framing::{frame, read_frame};
use nodelocal_dns::wire::query::parse;

fuzz_target!(|stream: &[u8]| {
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
});
