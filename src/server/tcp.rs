//! TCP clients (RFC 7766): many queries pipelined on one connection, answered as each completes
//! (out of order), at most `max_tcp_pipelined` in progress per connection (reading pauses
//! beyond that), closed after `tcp_idle_timeout` without a complete query, and at most
//! `max_tcp_connections` connections at once (further ones are closed at once and counted).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::delivery::Delivery;
use super::framing::{frame, read_frame};
use super::{Current, Lifecycle, Limits};
use crate::Proto;
use crate::observe::ratelimit::LogLimiter;
use crate::responder::Step;

/// Serves the TCP listener of the listen address with index `index` in the config.
/// Accept errors logged per minute, over all listeners.
static ACCEPT_ERRORS: LogLimiter = LogLimiter::new(10, Duration::from_secs(60));

pub(super) async fn serve(
    index: usize,
    listener: TcpListener,
    current: Current,
    delivery: Arc<Delivery>,
    limits: Limits,
    lifecycle: Lifecycle,
) {
    let connections = Arc::new(Semaphore::new(limits.max_tcp_connections));
    loop {
        let accepted = tokio::select! {
            _ = lifecycle.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off briefly instead of spinning.
                if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                    warn!(%err, suppressed, "TCP accept failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Answers are written whole; waiting for more bytes would only add latency.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            delivery.connection_rejected();
            drop(stream);
            continue;
        };
        let current = current.clone();
        let delivery = delivery.clone();
        let limits = limits.clone();
        let connection_lifecycle = lifecycle.clone();
        lifecycle.inflight.spawn(async move {
            let lifecycle = connection_lifecycle;
            connection(index, stream, client, current, delivery, limits, lifecycle).await;
            drop(permit);
        });
    }
}

async fn connection(
    listener: usize,
    stream: TcpStream,
    client: SocketAddr,
    current: Current,
    delivery: Arc<Delivery>,
    limits: Limits,
    lifecycle: Lifecycle,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (answers, mut to_write) = mpsc::channel::<Vec<u8>>(limits.max_tcp_pipelined);
    let log = delivery.clone();
    let writing = async move {
        while let Some(answer) = to_write.recv().await {
            if writer.write_all(&frame(&answer)).await.is_err() {
                return;
            }
            log.sent(client, Proto::Tcp, &answer);
        }
        let _ = writer.shutdown().await;
    };
    let pipelined = Arc::new(Semaphore::new(limits.max_tcp_pipelined));
    let reading = async move {
        let mut out = Vec::new();
        loop {
            let Ok(permit) = pipelined.clone().acquire_owned().await else {
                return;
            };
            let read = tokio::select! {
                _ = lifecycle.cancel.cancelled() => return,
                read = tokio::time::timeout(limits.tcp_idle_timeout, read_frame(&mut reader)) => read,
            };
            let packet = match read {
                Ok(Ok(Some(packet))) => packet,
                Ok(Ok(None)) => return,
                Ok(Err(err)) => {
                    debug!(%client, %err, "TCP client read failed");
                    return;
                }
                Err(_) => {
                    debug!(%client, "TCP client idle; closing");
                    return;
                }
            };
            // Per query: a long-lived client connection follows a reload too.
            let responder = current.load_full();
            match responder.begin(listener, &packet, Proto::Tcp, client.ip(), &mut out) {
                Step::Answered => {
                    if answers.send(std::mem::take(&mut out)).await.is_err() {
                        return;
                    }
                }
                Step::AnsweredRefresh(pending) => {
                    responder.spawn_refresh(pending);
                    if answers.send(std::mem::take(&mut out)).await.is_err() {
                        return;
                    }
                }
                Step::Dropped(_) => {}
                Step::Forward(pending) => {
                    let answers = answers.clone();
                    let responder = responder.clone();
                    let delivery = delivery.clone();
                    let abandon = lifecycle.abandon.clone();
                    lifecycle.inflight.spawn(async move {
                        let mut out = Vec::new();
                        super::finish(&abandon, &responder, &pending, &mut out).await;
                        // The client may have gone; its answer then has nowhere to go, and
                        // is counted as a send error.
                        if answers.send(out).await.is_err() {
                            delivery.send_failed();
                        }
                        drop(permit);
                    });
                }
            }
        }
    };
    // The writer ends once the reader and every query task have dropped their senders.
    tokio::join!(reading, writing);
}
