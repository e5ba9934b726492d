//! The UDP receive loop of one socket. Answers that need no upstream are sent from the loop
//! itself; forwarded queries become tasks, at most `max_inflight` at once per listen address,
//! and beyond that are answered SERVFAIL at once (counted) rather than queued without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::Current;
use crate::Proto;
use crate::observe::ratelimit::LogLimiter;
use crate::responder::{Responder, Step};

/// Receive errors logged per minute, over all sockets.
static RECV_ERRORS: LogLimiter = LogLimiter::new(10, Duration::from_secs(60));

/// Largest datagram we read: a query larger than this is not a query we serve, and the kernel
/// cuts it (it then fails to parse and is answered FORMERR).
const MAX_QUERY: usize = 4096;

/// How long a cancelled listener keeps reading while its forwarded queries finish.
const DRAIN_READING: Duration = Duration::from_secs(2);
/// How long a draining socket must have read nothing, with no forwarded query left, before it
/// closes: packets the kernel steered to it just before it left the group may still arrive.
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// How often a draining listener checks whether it is done.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Serves one socket of the listen address with index `listener` in the config.
pub(super) async fn serve(
    listener: usize,
    socket: Arc<UdpSocket>,
    current: Current,
    inflight: Arc<Semaphore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut packet = vec![0u8; MAX_QUERY];
    let mut out = Vec::with_capacity(1232);
    let max_inflight = inflight.available_permits();
    let mut draining: Option<Drain> = None;
    loop {
        // After the cancel the socket leaves the SO_REUSEPORT group (new queries go to a
        // successor instance, if there is one) but is kept and read until the queries already
        // queued on it are answered: a socket closed with packets queued drops them.
        if let Some(drain) = &draining {
            let idle = inflight.available_permits() >= max_inflight;
            let now = Instant::now();
            if (idle && now >= drain.last_packet + DRAIN_QUIET) || now >= drain.by {
                return;
            }
        }
        let received = tokio::select! {
            _ = cancel.cancelled(), if draining.is_none() => {
                leave_reuseport_group(&socket).await;
                let now = Instant::now();
                draining = Some(Drain { by: now + DRAIN_READING, last_packet: now });
                continue;
            }
            _ = tokio::time::sleep(DRAIN_POLL), if draining.is_some() => continue,
            received = socket.recv_from(&mut packet) => received,
        };
        if let Some(drain) = &mut draining {
            drain.last_packet = Instant::now();
        }
        let (len, client) = match received {
            Ok(received) => received,
            Err(err) => {
                // Unconnected UDP sockets see no ICMP errors; anything here is transient.
                if let Some(suppressed) = RECV_ERRORS.allow() {
                    warn!(%err, suppressed, "UDP receive failed");
                }
                continue;
            }
        };
        // Per packet: a reload swaps it between two packets, never during one.
        let responder = current.load_full();
        match responder.begin(listener, &packet[..len], Proto::Udp, client.ip(), &mut out) {
            Step::Answered => send(&socket, &out, client, &responder).await,
            Step::AnsweredRefresh(pending) => {
                send(&socket, &out, client, &responder).await;
                responder.spawn_refresh(pending);
            }
            Step::Dropped(_) => {}
            Step::Forward(pending) => match inflight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let socket = socket.clone();
                    let responder = responder.clone();
                    tracker.spawn(async move {
                        let mut out = Vec::new();
                        responder.finish(pending, &mut out).await;
                        send(&socket, &out, client, &responder).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    responder.reject_overloaded(&pending, &mut out);
                    send(&socket, &out, client, &responder).await;
                }
            },
        }
    }
}

/// A cancelled listener's remaining time.
struct Drain {
    /// When it closes even with queries unanswered.
    by: Instant,
    last_packet: Instant,
}

/// Takes the socket out of the kernel's SO_REUSEPORT selection without closing it: Linux never
/// picks a connected UDP socket for another peer's packets, so once it is connected to its own
/// address (a peer that never sends) the kernel steers new queries to the rest of the group,
/// while the datagrams already queued here stay readable and answers still go out with send_to.
/// Where that fails the socket stays in the group, and the drain ends at its deadline.
async fn leave_reuseport_group(socket: &UdpSocket) {
    let left = match socket.local_addr() {
        Ok(local) => socket.connect(local).await,
        Err(err) => Err(err),
    };
    if let Err(err) = left {
        debug!(%err, "a draining UDP socket stays in the SO_REUSEPORT group");
    }
}

/// Sends one answer, counting a failed send and offering it to the query log.
async fn send(socket: &UdpSocket, answer: &[u8], client: SocketAddr, responder: &Responder) {
    if socket.send_to(answer, client).await.is_err() {
        responder.count_send_error();
    }
    responder.log_answer(client, Proto::Udp, answer);
}
