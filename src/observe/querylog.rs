//! The sampled query log: one answered query in `log.query_sample`, as one line with the
//! client, the question and the rcode (log target `query`, so a filter can route or silence
//! it). Off by default; when off, the cost per answer is one branch.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::info;

use crate::Proto;
use crate::wire::Rcode;
use crate::wire::name::read_uncompressed;

/// One answered query in `every` logged; `every` changes with a reloaded config.
pub struct QueryLog {
    every: AtomicU64,
    seen: AtomicU64,
}

impl QueryLog {
    /// Logs one answer in `every`; 0 logs none.
    pub fn new(every: u64) -> QueryLog {
        QueryLog {
            every: AtomicU64::new(every),
            seen: AtomicU64::new(0),
        }
    }

    /// Logs one answer in `every` from now on; 0 logs none.
    pub fn set_every(&self, every: u64) {
        self.every.store(every, Ordering::Relaxed);
    }

    /// Logs `answer` (the bytes sent to `client`) when it is the one in `every`.
    #[inline]
    pub fn answered(&self, client: SocketAddr, proto: Proto, answer: &[u8]) {
        let every = self.every.load(Ordering::Relaxed);
        if every == 0
            || !self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every)
        {
            return;
        }
        log(client, proto, answer);
    }
}

#[cold]
fn log(client: SocketAddr, proto: Proto, answer: &[u8]) {
    let proto = match proto {
        Proto::Udp => "udp",
        Proto::Tcp => "tcp",
    };
    // Our own answers: a header, then the question, unless it was an error without one.
    let code = Rcode(answer.get(3).map_or(0, |flags| u16::from(flags & 0x0f)));
    let question = read_uncompressed(answer, 12).ok().and_then(|(name, end)| {
        let qtype = answer.get(end..end + 2)?;
        Some((name.to_dotted(), u16::from_be_bytes([qtype[0], qtype[1]])))
    });
    let (name, qtype) = question.unwrap_or_else(|| ("-".into(), 0));
    info!(
        target: "query",
        %client, proto, %name, qtype, rcode = code.name(), bytes = answer.len(),
        "query"
    );
}
