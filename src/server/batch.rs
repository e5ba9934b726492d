//! Datagrams in batches: one `recvmmsg` reads up to [`BATCH`] queries, and one `sendmmsg`
//! sends the answers the receive loop wrote for them without an upstream (cache hits and
//! errors). Under load the socket holds many queries whenever the loop comes back to it, and
//! the system call, file lookup and readiness bookkeeping are then paid once per batch instead
//! of twice per query; at a low rate a batch is one query and costs what `recvfrom` did.
//!
//! A batch shorter than [`BATCH`] means `recvmmsg` found the socket empty, so the receive loop
//! tells the reactor so itself ([`Inbox::receive`]) instead of paying one more `recvmmsg` that
//! returns `EAGAIN`: at a node's rates, where every query is a wake-up of its own, that is one
//! system call in four.
//!
//! The sockets are registered for readability only. Registered for writability too, the
//! reactor would be told of every datagram that leaves (the kernel reports the freed send
//! buffer as a new write edge), which costs one more `epoll_wait` return per answer. A UDP send
//! buffer is full only while the device queue is backed up, so a send that would block is
//! retried after a pause instead ([`send_patiently`]).
//!
//! A socket bound to a wildcard (`0.0.0.0`, `[::]`) answers from the address each query was
//! sent to ([`Peer::local`]): stubs connect their UDP socket to the server they ask and drop an
//! answer from any other address, and the kernel would otherwise pick the source by route (on
//! a node, the pod-facing interface's address rather than the local IP the pod asked). The
//! socket reports each datagram's destination (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) and a run of
//! answers from one address goes out in one `sendmmsg` carrying it as the source.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
    sendmmsg,
};
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

/// The pause before a send that found the send buffer full is tried again.
const SEND_RETRY: Duration = Duration::from_millis(1);
/// Pauses before such a send gives up (and the answer counts as not sent).
const SEND_RETRIES: u32 = 50;

/// A listening UDP socket, registered with the reactor. `AsyncFd` rather than tokio's
/// `UdpSocket` because only its readiness guard can be cleared without a failing read.
pub(super) type ListenSocket = AsyncFd<std::net::UdpSocket>;

/// The reactor's word that a listening socket is readable.
pub(super) type Readable<'a> = AsyncFdReadyGuard<'a, std::net::UdpSocket>;

/// Registers a bound, non-blocking UDP socket with the reactor, for readability only.
pub(super) fn register(socket: std::net::UdpSocket) -> io::Result<ListenSocket> {
    // SAFETY: the std socket owns its descriptor, and `AsyncFd` owns the socket from here on:
    // nothing else can close or replace the descriptor while it is registered.
    Ok(unsafe { ListenSocket::register_with_interest(socket, Interest::READABLE) }?)
}

/// Runs `send` until it does not report a full send buffer, pausing [`SEND_RETRY`] between
/// tries, at most [`SEND_RETRIES`] times; then its `WouldBlock` is the result.
pub(super) async fn send_patiently<R>(mut send: impl FnMut() -> io::Result<R>) -> io::Result<R> {
    let mut retries = 0;
    loop {
        match send() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock && retries < SEND_RETRIES => {
                retries += 1;
                tokio::time::sleep(SEND_RETRY).await;
            }
            result => return result,
        }
    }
}

/// Datagrams per system call. Past 32 the saving per query is small and a batch's answers
/// wait longer for the last query of the batch to be answered.
pub(super) const BATCH: usize = 32;

/// Largest datagram we read: a query larger than this is not a query we serve, and the kernel
/// cuts it (it then fails to parse and is answered FORMERR).
pub(super) const MAX_QUERY: usize = 4096;

/// The two ends of a query: the client, and on a wildcard socket the address it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peer {
    pub(super) client: SocketAddr,
    /// The address the query was sent to, which the answer must come from; `None` on a socket
    /// bound to one address, whose answers the kernel sends from it.
    pub(super) local: Option<IpAddr>,
}

/// Where a socket's answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AnswerSource {
    /// The address the socket is bound to.
    Bound,
    /// The address each query was sent to, on a wildcard socket of this family.
    Asked(Family),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl AnswerSource {
    /// How the socket bound to `addr` answers: per query when `addr` is a wildcard.
    pub(super) fn of(addr: SocketAddr) -> AnswerSource {
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => AnswerSource::Asked(Family::V4),
            IpAddr::V6(ip) if ip.is_unspecified() => AnswerSource::Asked(Family::V6),
            _ => AnswerSource::Bound,
        }
    }

    /// The `mmsghdr` array for this socket: with room for one packet-info control message per
    /// datagram when it answers per query. The room is exactly one message's, since the kernel
    /// writes the length it used back into the header, where the next `recvmmsg` finds it.
    fn headers(self) -> Headers {
        let control = match self {
            AnswerSource::Bound => None,
            AnswerSource::Asked(Family::V4) => Some(nix::cmsg_space!(libc::in_pktinfo)),
            AnswerSource::Asked(Family::V6) => Some(nix::cmsg_space!(libc::in6_pktinfo)),
        };
        Headers(MultiHeaders::preallocate(BATCH, control))
    }
}

/// The `mmsghdr` array of one socket's batches.
struct Headers(MultiHeaders<SockaddrStorage>);

// SAFETY: `MultiHeaders` is not `Send` only because its `mmsghdr`s hold raw pointers. They
// point into heap memory the value owns (the boxed address array, which does not move with
// it) and at the I/O buffers, which every `recvmmsg`/`sendmmsg` call sets afresh from
// borrows it holds for the call. Nothing is shared, and nothing is tied to a thread.
unsafe impl Send for Headers {}

impl Headers {
    fn plain() -> Headers {
        AnswerSource::Bound.headers()
    }
}

/// Where one `recvmmsg` puts its datagrams.
pub(super) struct Inbox {
    source: AnswerSource,
    headers: Headers,
    buffers: Box<[[u8; MAX_QUERY]; BATCH]>,
    /// Length, source and (on a wildcard socket) destination of each datagram of the last
    /// batch.
    received: [(usize, Option<SocketAddr>, Option<IpAddr>); BATCH],
    count: usize,
}

impl Inbox {
    /// The inbox of a socket whose answers come from `source`.
    pub(super) fn new(source: AnswerSource) -> Inbox {
        let buffers = vec![[0u8; MAX_QUERY]; BATCH]
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("the vector has BATCH elements"));
        Inbox {
            source,
            headers: source.headers(),
            buffers,
            received: [(0, None, None); BATCH],
            count: 0,
        }
    }

    /// Reads the datagrams queued on the socket `ready` was given for, at most [`BATCH`],
    /// without waiting: `WouldBlock` when there are none. Either way, and after a batch short
    /// of [`BATCH`] (the kernel stopped because the queue was empty), the readiness is cleared,
    /// so the next [`AsyncFd::readable`] waits for a datagram that arrives after this read. One
    /// that arrived in between was either read here or made a readiness event of its own,
    /// which clearing leaves in place (tokio clears only the event `ready` came from).
    pub(super) fn receive(&mut self, ready: &mut Readable<'_>) -> io::Result<usize> {
        let fd = ready.get_inner().as_raw_fd();
        self.count = 0;
        let count = match ready.try_io(|_| self.receive_from(fd)) {
            Ok(received) => received?,
            Err(_would_block) => return Err(io::ErrorKind::WouldBlock.into()),
        };
        if count < BATCH {
            ready.clear_ready();
        }
        self.count = count;
        Ok(count)
    }

    /// Whether the last batch filled the inbox, so the socket may hold more.
    pub(super) fn was_full(&self) -> bool {
        self.count == BATCH
    }

    fn receive_from(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut slices = self.buffers.each_mut().map(|b| [IoSliceMut::new(b)]);
        let results = recvmmsg(
            fd,
            &mut self.headers.0,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        let mut count = 0;
        let mut lost_destination = false;
        for (slot, message) in self.received.iter_mut().zip(results) {
            let from = message.address.as_ref().and_then(std_addr);
            let to = match self.source {
                AnswerSource::Bound => None,
                AnswerSource::Asked(_) => {
                    let to = message
                        .cmsgs()
                        .ok()
                        .and_then(|mut c| c.find_map(destination));
                    lost_destination |= to.is_none();
                    to
                }
            };
            *slot = (message.bytes, from, to);
            count += 1;
        }
        if lost_destination {
            // The header's control length is what the kernel last wrote there; should it ever
            // have shrunk, fresh headers give every later datagram its room again.
            self.headers = self.source.headers();
        }
        Ok(count)
    }

    /// The datagrams of the last batch: bytes, and their peer unless the kernel named no
    /// source.
    pub(super) fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<Peer>)> {
        self.received[..self.count]
            .iter()
            .zip(self.buffers.iter())
            .map(|(&(len, from, local), buffer)| {
                let peer = from.map(|client| Peer { client, local });
                (&buffer[..len.min(MAX_QUERY)], peer)
            })
    }
}

/// The address a datagram was sent to, from its packet-info control message.
fn destination(message: ControlMessageOwned) -> Option<IpAddr> {
    match message {
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(IpAddr::V4(Ipv4Addr::from(
            u32::from_be(info.ipi_spec_dst.s_addr),
        ))),
        ControlMessageOwned::Ipv6PacketInfo(info) => {
            Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Answers collected for one `sendmmsg`.
pub(super) struct Outbox {
    /// Headers without control messages, for answers the kernel sends from the bound address.
    headers: Headers,
    /// Headers with room for one packet-info message of each family, for answers from the
    /// address asked; made at the first such answer (sockets bound to one address never
    /// need them).
    sourced: (Option<Headers>, Option<Headers>),
    answers: Vec<Vec<u8>>,
    /// Valid up to `len`.
    peers: [Peer; BATCH],
    /// The clients as the kernel takes them, converted once per answer.
    destinations: [Option<SockaddrStorage>; BATCH],
    len: usize,
}

impl Outbox {
    pub(super) fn new() -> Outbox {
        let nobody = Peer {
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: None,
        };
        Outbox {
            headers: Headers::plain(),
            sourced: (None, None),
            answers: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            peers: [nobody; BATCH],
            destinations: [None; BATCH],
            len: 0,
        }
    }

    /// The buffer the next answer is written into; it is sent only after [`Outbox::commit`].
    /// An outbox holds as many answers as an inbox holds queries, so there is always one.
    pub(super) fn next_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.answers[self.len.min(BATCH - 1)]
    }

    /// Queues the answer in [`Outbox::next_buffer`] for `peer`.
    pub(super) fn commit(&mut self, peer: Peer) {
        if self.len < BATCH {
            self.peers[self.len] = peer;
            self.destinations[self.len] = Some(SockaddrStorage::from(peer.client));
            self.len += 1;
        }
    }

    /// The answers queued, with their clients.
    pub(super) fn queued(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.peers[..self.len]
            .iter()
            .zip(&self.answers)
            .map(|(peer, answer)| (peer.client, answer.as_slice()))
    }

    /// Sends every queued answer, waiting a while when the socket's send buffer is full, and
    /// returns how many could not be sent (an answer the kernel refuses is skipped, not
    /// retried).
    pub(super) async fn flush(&mut self, socket: &ListenSocket) -> usize {
        let fd = socket.as_raw_fd();
        let (mut sent, mut failed) = (0, 0);
        while sent < self.len {
            match send_patiently(|| self.send_from(fd, sent)).await {
                Ok(count) => sent += count.max(1),
                Err(_) => {
                    // sendmmsg reports an error only for the first message it tried.
                    failed += 1;
                    sent += 1;
                }
            }
        }
        failed
    }

    /// Forgets the queued answers, once sent and logged.
    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    /// Sends the queued answers from `first` on that come from one address: all of them on a
    /// socket bound to one address.
    fn send_from(&mut self, fd: RawFd, first: usize) -> io::Result<usize> {
        let local = self.peers[first].local;
        let count = self.peers[first..self.len]
            .iter()
            .take_while(|peer| peer.local == local)
            .count();
        // An array, not a vector: nothing is allocated per batch.
        let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
            [IoSlice::new(
                self.answers.get(first + i).map_or(&[][..], Vec::as_slice),
            )]
        });
        let (slices, destinations) = (&slices[..count], &self.destinations[first..first + count]);
        let flags = MsgFlags::MSG_DONTWAIT;
        let sent = match local {
            None => sendmmsg(fd, &mut self.headers.0, slices, destinations, [], flags)?.count(),
            Some(IpAddr::V4(ip)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let headers = sourced_headers(&mut self.sourced, Family::V4);
                let source = [ControlMessage::Ipv4PacketInfo(&info)];
                sendmmsg(fd, headers, slices, destinations, source, flags)?.count()
            }
            Some(IpAddr::V6(ip)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                let headers = sourced_headers(&mut self.sourced, Family::V6);
                let source = [ControlMessage::Ipv6PacketInfo(&info)];
                sendmmsg(fd, headers, slices, destinations, source, flags)?.count()
            }
        };
        Ok(sent)
    }
}

/// The headers for answers from an address of `family` (of an outbox's pair), whose control
/// length is exactly that family's packet-info message: the kernel reads every byte of it as
/// messages.
fn sourced_headers(
    sourced: &mut (Option<Headers>, Option<Headers>),
    family: Family,
) -> &mut MultiHeaders<SockaddrStorage> {
    let slot = match family {
        Family::V4 => &mut sourced.0,
        Family::V6 => &mut sourced.1,
    };
    &mut slot
        .get_or_insert_with(|| AnswerSource::Asked(family).headers())
        .0
}

fn std_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn would_block() -> io::Error {
        io::ErrorKind::WouldBlock.into()
    }

    #[tokio::test]
    async fn a_send_that_finds_the_buffer_full_is_tried_again_until_it_goes() {
        let mut calls = 0;
        let sent = send_patiently(|| {
            calls += 1;
            if calls <= 3 {
                Err(would_block())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(sent.unwrap(), 7);
        assert_eq!(calls, 4);
    }

    #[tokio::test]
    async fn a_send_that_stays_blocked_gives_up_with_would_block() {
        let mut calls = 0;
        let sent: io::Result<()> = send_patiently(|| {
            calls += 1;
            Err(would_block())
        })
        .await;
        assert_eq!(sent.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(calls, SEND_RETRIES + 1);
    }

    #[tokio::test]
    async fn any_other_send_error_is_the_result_at_once() {
        let mut calls = 0;
        let sent: io::Result<()> = send_patiently(|| {
            calls += 1;
            Err(io::ErrorKind::ConnectionRefused.into())
        })
        .await;
        assert_eq!(sent.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(calls, 1);
    }
}
