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
use tracing::warn;

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
/// How often a draining listener checks whether it is idle.
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
    let mut closing_by: Option<Instant> = None;
    loop {
        // After the cancel, the socket is kept and read until no forwarded query holds it:
        // with SO_REUSEPORT the kernel still queues a share of the clients' packets on it
        // (a successor instance serves the rest), and a socket closed with packets queued
        // drops them. Closed as soon as it is idle, at the latest after DRAIN_READING.
        if let Some(by) = closing_by
            && (inflight.available_permits() >= max_inflight || Instant::now() >= by)
        {
            return;
        }
        let received = tokio::select! {
            _ = cancel.cancelled(), if closing_by.is_none() => {
                closing_by = Some(Instant::now() + DRAIN_READING);
                continue;
            }
            _ = tokio::time::sleep(DRAIN_POLL), if closing_by.is_some() => continue,
            received = socket.recv_from(&mut packet) => received,
        };
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

/// Sends one answer, counting a failed send and offering it to the query log.
async fn send(socket: &UdpSocket, answer: &[u8], client: SocketAddr, responder: &Responder) {
    if socket.send_to(answer, client).await.is_err() {
        responder.count_send_error();
    }
    responder.log_answer(client, Proto::Udp, answer);
}
