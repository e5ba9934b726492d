//! The UDP receive loop of one socket. Answers that need no upstream are sent from the loop
//! itself; forwarded queries become tasks, at most `max_inflight` at once per listen address,
//! and beyond that are answered SERVFAIL at once (counted) rather than queued without bound.
//! The answers those tasks finish in one round of the scheduler go out together
//! ([`Gathered`]): a stub's A and AAAA, answered by one fetch, cost one `sendmmsg`.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::batch::{AnswerSource, BATCH, Inbox, ListenSocket, Outbox, Peer};
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
    let source = match socket.get_ref().local_addr() {
        Ok(local) => AnswerSource::of(local),
        // Not seen on a bound socket; answering from the bound address is the old way.
        Err(_) => AnswerSource::Bound,
    };
    let mut batch = Batch {
        listener,
        inbox: Inbox::new(source),
        outbox: Outbox::new(),
        gathered: Arc::new(Gathered::new()),
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
    gathered: Arc<Gathered>,
    socket: Arc<ListenSocket>,
    delivery: Arc<Delivery>,
    inflight: Arc<Semaphore>,
    lifecycle: Lifecycle,
}

impl Batch {
    /// Answers the datagrams in the inbox: those that need no upstream in one `sendmmsg`,
    /// the others from a task each (at most `max_inflight`; SERVFAIL at once beyond that).
    async fn answer(&mut self, responder: &Arc<Responder>) {
        for (packet, peer) in self.inbox.datagrams() {
            // The kernel names the source of every datagram on an IP socket.
            let Some(peer) = peer else { continue };
            let out = self.outbox.next_buffer();
            match responder.begin(self.listener, packet, Proto::Udp, peer.client.ip(), out) {
                Step::Answered => self.outbox.commit(peer),
                Step::AnsweredRefresh(refresh) => {
                    self.outbox.commit(peer);
                    responder.spawn_refresh(refresh);
                }
                Step::Dropped(_) => {}
                Step::Forward(pending) => match self.inflight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let socket = self.socket.clone();
                        let gathered = self.gathered.clone();
                        let responder = responder.clone();
                        let delivery = self.delivery.clone();
                        let abandon = self.lifecycle.abandon.clone();
                        self.lifecycle.inflight.spawn(async move {
                            let mut out = gathered.buffer();
                            super::finish(&abandon, &responder, &pending, &mut out).await;
                            gathered.send(&socket, peer, out, &delivery).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let out = self.outbox.next_buffer();
                        responder.reject(pending.owed(), Rejected::Inflight, out);
                        self.outbox.commit(peer);
                    }
                },
            }
        }
        deliver(&mut self.outbox, &self.socket, &self.delivery).await;
    }
}

/// Sends the answers queued in `outbox`, counts those that could not go, offers them all to
/// the query log, and empties it.
async fn deliver(outbox: &mut Outbox, socket: &ListenSocket, delivery: &Delivery) {
    for _ in 0..outbox.flush(socket).await {
        delivery.send_failed();
    }
    for (client, answer) in outbox.queued() {
        delivery.sent(client, Proto::Udp, answer);
    }
    outbox.clear();
}

/// The answers of one socket's forwarded queries, gathered from their tasks and sent in one
/// `sendmmsg` per round of the scheduler instead of one `sendto` each. The task whose answer
/// finds none waiting sends: it first lets the tasks already queued run (those woken by the
/// same fetch among them), so their answers join its batch. An answer is never left without
/// a sender: one that arrives after the batch was taken starts the next.
///
/// The buffers sent come back as spares for the next forwarded queries to write into, so a
/// forwarded answer costs no allocation of its own once the socket has served a few.
pub(super) struct Gathered {
    queues: Mutex<Queues>,
    /// The sender's buffers; a sender that finds the previous one still sending waits for it.
    sending: tokio::sync::Mutex<Sending>,
}

struct Queues {
    /// Answers waiting for a sender, with their peers.
    waiting: Vec<(Peer, Vec<u8>)>,
    /// Empty buffers, at most [`MAX_SPARE`].
    spare: Vec<Vec<u8>>,
}

struct Sending {
    outbox: Outbox,
    taken: Vec<(Peer, Vec<u8>)>,
}

/// Spare answer buffers kept per socket: about as many as forwarded queries finish at once
/// under load. Beyond that, a task's buffer is allocated (and freed after its send).
const MAX_SPARE: usize = 256;
/// A new buffer's capacity: an EDNS answer at the default UDP size fits without growing.
const ANSWER_CAPACITY: usize = 1232;
/// A buffer that grew past this (a large answer) is freed rather than kept.
const MAX_SPARE_CAPACITY: usize = 4096;

impl Gathered {
    pub(super) fn new() -> Gathered {
        Gathered {
            queues: Mutex::new(Queues {
                waiting: Vec::new(),
                spare: Vec::new(),
            }),
            sending: tokio::sync::Mutex::new(Sending {
                outbox: Outbox::new(),
                taken: Vec::new(),
            }),
        }
    }

    /// An empty buffer for a forwarded query's answer: a spare one when there is one.
    pub(super) fn buffer(&self) -> Vec<u8> {
        self.queues()
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(ANSWER_CAPACITY))
    }

    /// Sends `answer` to `peer`, with the answers gathered meanwhile or as one of theirs.
    /// Returns how many answers this call sent: 0 when another task's batch took this one.
    pub(super) async fn send(
        &self,
        socket: &ListenSocket,
        peer: Peer,
        answer: Vec<u8>,
        delivery: &Delivery,
    ) -> usize {
        let leads = {
            let mut queues = self.queues();
            queues.waiting.push((peer, answer));
            queues.waiting.len() == 1
        };
        if !leads {
            return 0;
        }
        run_queued_tasks_first().await;
        let mut sending = self.sending.lock().await;
        let Sending { outbox, taken } = &mut *sending;
        std::mem::swap(&mut self.queues().waiting, taken);
        let count = taken.len();
        for chunk in taken.chunks_mut(BATCH) {
            for (peer, answer) in chunk {
                // The task's buffer goes out as it is: no copy. The outbox's buffer it
                // replaces comes back here, to be kept as a spare.
                std::mem::swap(outbox.next_buffer(), answer);
                outbox.commit(*peer);
            }
            deliver(outbox, socket, delivery).await;
        }
        let mut queues = self.queues();
        for (_, mut buffer) in taken.drain(..) {
            if queues.spare.len() < MAX_SPARE && buffer.capacity() <= MAX_SPARE_CAPACITY {
                buffer.clear();
                queues.spare.push(buffer);
            }
        }
        count
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        // Lists of owned buffers: a panic while they were held cannot leave them inconsistent.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns after the tasks already queued on this worker have run. Waking itself puts the task
/// at the back of the run queue. (`tokio::task::yield_now` resumes only after the reactor has
/// been polled, which on an otherwise idle worker costs one more `epoll_wait`.)
async fn run_queued_tasks_first() {
    let mut woken = false;
    std::future::poll_fn(|cx| {
        if woken {
            return Poll::Ready(());
        }
        woken = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Metrics;

    /// Two forwarded queries answered in the same round (a stub's A and AAAA, one fetch): the
    /// first task to finish sends both in one batch, the second sends none; an answer that
    /// comes later starts a batch of its own. Every answer reaches its client.
    #[tokio::test]
    async fn answers_finished_in_one_round_go_out_in_one_batch() {
        let socket = Arc::new(
            super::super::batch::register(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                .unwrap(),
        );
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = Peer {
            client: client.local_addr().unwrap(),
            local: None,
        };
        let gathered = Arc::new(Gathered::new());
        let config = crate::config::Config::embedded_default().expect("the embedded config");
        let delivery = Arc::new(Delivery::new(&Metrics::new(), &config));

        let tasks: Vec<_> = [b"first".to_vec(), b"second".to_vec()]
            .into_iter()
            .map(|answer| {
                let (socket, gathered, delivery) =
                    (socket.clone(), gathered.clone(), delivery.clone());
                tokio::spawn(async move { gathered.send(&socket, to, answer, &delivery).await })
            })
            .collect();
        let mut sent = Vec::new();
        for task in tasks {
            sent.push(task.await.unwrap());
        }
        assert_eq!(sent, [2, 0], "the first task sent both answers");
        let later = gathered
            .send(&socket, to, b"later".to_vec(), &delivery)
            .await;
        assert_eq!(later, 1);

        let mut received = Vec::new();
        let mut buffer = [0u8; 64];
        for _ in 0..3 {
            let (len, _) = client.recv_from(&mut buffer).unwrap();
            received.push(buffer[..len].to_vec());
        }
        assert_eq!(
            received,
            [b"first".to_vec(), b"second".to_vec(), b"later".to_vec()]
        );
    }
}
