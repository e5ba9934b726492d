//! The UDP receive loop of one socket. Answers that need no upstream are sent from the loop
//! itself; forwarded queries become tasks, at most `max_inflight` at once per listen address,
//! and beyond that are answered SERVFAIL at once (counted) rather than queued without bound.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::batch::{Inbox, ListenSocket, Outbox, send_patiently};
use super::delivery::Delivery;
use super::{Current, Lifecycle};
use crate::Proto;
use crate::observe::ratelimit::LogLimiter;
use crate::responder::{Rejected, Responder, Step};

/// Receive errors logged per minute, over all sockets.
static RECV_ERRORS: LogLimiter = LogLimiter::new(10, Duration::from_secs(60));

/// How long a cancelled listener keeps reading while its forwarded queries finish.
const DRAIN_READING: Duration = Duration::from_secs(2);
/// How long a draining socket must have read nothing, with no forwarded query left, before it
/// closes: packets the kernel steered to it just before it left the group may still arrive.
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// How often a draining listener checks whether it is done.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Batches read per wake-up before the loop looks at cancellation again (and, through the
/// readiness future's budget, lets other tasks run).
const BATCHES_PER_WAKE: usize = 8;

/// Serves one socket of the listen address with index `listener` in the config.
pub(super) async fn serve(
    listener: usize,
    socket: Arc<ListenSocket>,
    current: Current,
    delivery: Arc<Delivery>,
    inflight: Arc<Semaphore>,
    lifecycle: Lifecycle,
) {
    let cancel = lifecycle.cancel.clone();
    let mut batch = Batch {
        listener,
        inbox: Inbox::new(),
        outbox: Outbox::new(),
        socket: socket.clone(),
        delivery,
        inflight,
        lifecycle,
    };
    let max_inflight = batch.inflight.available_permits();
    let mut draining: Option<Drain> = None;
    loop {
        // After the cancel the socket leaves the SO_REUSEPORT group (new queries go to a
        // successor instance, if there is one) but is kept and read until the queries already
        // queued on it are answered: a socket closed with packets queued drops them.
        if let Some(drain) = &draining {
            let idle = batch.inflight.available_permits() >= max_inflight;
            let now = Instant::now();
            if (idle && now >= drain.last_packet + DRAIN_QUIET) || now >= drain.by {
                return;
            }
        }
        let ready = tokio::select! {
            _ = cancel.cancelled(), if draining.is_none() => {
                leave_reuseport_group(&batch.socket).await;
                let now = Instant::now();
                draining = Some(Drain { by: now + DRAIN_READING, last_packet: now });
                continue;
            }
            _ = tokio::time::sleep(DRAIN_POLL), if draining.is_some() => continue,
            ready = socket.readable() => ready,
        };
        let mut ready = match ready {
            Ok(ready) => ready,
            Err(err) => {
                receive_failed(&err);
                continue;
            }
        };
        // Read until the socket is empty (which also clears its readiness), a bounded number
        // of batches at a time.
        for _ in 0..BATCHES_PER_WAKE {
            match batch.inbox.receive(&mut ready) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    receive_failed(&err);
                    break;
                }
            }
            if let Some(drain) = &mut draining {
                drain.last_packet = Instant::now();
            }
            // Per batch: a reload swaps it between two batches, never during one.
            batch.answer(&current.load_full()).await;
            if !batch.inbox.was_full() {
                break;
            }
        }
    }
}

/// One socket's batch buffers, and what answering a batch needs.
struct Batch {
    listener: usize,
    inbox: Inbox,
    outbox: Outbox,
    socket: Arc<ListenSocket>,
    delivery: Arc<Delivery>,
    inflight: Arc<Semaphore>,
    lifecycle: Lifecycle,
}

impl Batch {
    /// Answers the datagrams in the inbox: those that need no upstream in one `sendmmsg`,
    /// the others from a task each (at most `max_inflight`; SERVFAIL at once beyond that).
    async fn answer(&mut self, responder: &Arc<Responder>) {
        for (packet, client) in self.inbox.datagrams() {
            // The kernel names the source of every datagram on an IP socket.
            let Some(client) = client else { continue };
            let out = self.outbox.next_buffer();
            match responder.begin(self.listener, packet, Proto::Udp, client.ip(), out) {
                Step::Answered => self.outbox.commit(client),
                Step::AnsweredRefresh(refresh) => {
                    self.outbox.commit(client);
                    responder.spawn_refresh(refresh);
                }
                Step::Dropped(_) => {}
                Step::Forward(pending) => match self.inflight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let socket = self.socket.clone();
                        let responder = responder.clone();
                        let delivery = self.delivery.clone();
                        let lifecycle = self.lifecycle.clone();
                        self.lifecycle.inflight.spawn(async move {
                            let mut out = Vec::new();
                            lifecycle.finish(&responder, pending, &mut out).await;
                            send(&socket, &out, client, &delivery).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let out = self.outbox.next_buffer();
                        responder.reject(pending.owed(), Rejected::Inflight, out);
                        self.outbox.commit(client);
                    }
                },
            }
        }
        for _ in 0..self.outbox.flush(&self.socket).await {
            self.delivery.send_failed();
        }
        for (client, answer) in self.outbox.queued() {
            self.delivery.sent(client, Proto::Udp, answer);
        }
        self.outbox.clear();
    }
}

/// Logs a failed receive, rate-limited.
fn receive_failed(err: &io::Error) {
    // Unconnected UDP sockets see no ICMP errors; anything here is transient.
    if let Some(suppressed) = RECV_ERRORS.allow() {
        warn!(%err, suppressed, "UDP receive failed");
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
async fn leave_reuseport_group(socket: &ListenSocket) {
    let socket = socket.get_ref();
    // A UDP connect only sets the peer: it never waits.
    let left = socket.local_addr().and_then(|local| socket.connect(local));
    if let Err(err) = left {
        debug!(%err, "a draining UDP socket stays in the SO_REUSEPORT group");
    }
}

/// Sends one answer, counting a failed send and offering it to the query log.
async fn send(socket: &ListenSocket, answer: &[u8], client: SocketAddr, delivery: &Delivery) {
    if send_patiently(|| socket.get_ref().send_to(answer, client))
        .await
        .is_err()
    {
        delivery.send_failed();
    }
    delivery.sent(client, Proto::Udp, answer);
}
