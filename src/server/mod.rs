//! The client-facing listeners: UDP and TCP on every listen address, and the task tree that
//! owns them.
//!
//! Each listen address gets `workers` UDP sockets bound with SO_REUSEPORT (the kernel spreads
//! clients across them, one receive loop each) and one TCP listener on the same port. The
//! [`Server`] owns every task it starts; [`Server::shutdown`] ends them. The listeners count
//! and log what they send themselves (`delivery.rs`); what a query is answered is the
//! responder's ([`crate::responder`], the floor below).
//!
//! Config keys (defaults in [`crate::config`]):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `listen` | `["127.0.0.1:5300"]` | addresses answered on, UDP and TCP on each |
//! | `workers` | `0` (one per core) | UDP sockets per listen address (SO_REUSEPORT) |
//! | `server.max_udp_size` | `1232` | largest UDP answer, whatever the client advertises |
//! | `server.tcp_idle_timeout` | `10s` | a TCP client connection idle this long is closed |
//! | `server.max_tcp_connections` | `1024` | TCP client connections at once, per listen address |
//! | `server.max_tcp_pipelined` | `64` | queries in progress per TCP client connection |
//! | `server.max_inflight` | `8192` | queries waiting on upstreams at once, per listen address |
//! | `log.query_sample` | `0` | one answer in N logged (target `query`); a reload changes it |
//!
//! A changed config file is reloaded (`reload.rs`); `listen`, `workers` and `server.*` take
//! effect only after a restart.
//!
//! Metrics it counts: `nodelocaldns_dropped_total{reason="send_error"}` (an answer that could
//! not be sent), `nodelocaldns_rejected_total{reason="tcp_connections"}` (a client closed at
//! once) and `nodelocaldns_config_reloads_total{result}`. A query turned away by its other
//! bounds (`inflight`, `shutdown`) is still owed a SERVFAIL, so the responder's `reject`
//! answers and counts it.

mod batch;
mod bind;
mod delivery;
pub mod framing;
mod reload;
mod tcp;
mod udp;

use std::io;

use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, ServerConfig};
use crate::responder::{CurrentResponder, Pending, Rejected, Responder};
use bind::bind_pair;
pub use bind::{BindError, bind_tcp, bind_tcp_endpoint};
use delivery::Delivery;

/// The responder the listeners use, replaceable while they run.
pub(crate) type Current = CurrentResponder;

/// How long the queries abandoned at the end of a drain get to send their SERVFAIL and end.
const ABANDON_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The stages of a shutdown, as every listener task sees them.
#[derive(Clone)]
struct Lifecycle {
    /// Stop taking new queries and connections.
    cancel: CancellationToken,
    /// Forwarded queries and TCP client connections, waited for by the drain.
    inflight: TaskTracker,
    /// The drain is over: answer the queries still waiting SERVFAIL, and end.
    abandon: CancellationToken,
}

/// Answers `pending` from upstreams; once the drain is over (`abandon`), SERVFAIL instead.
/// Either way the client gets an answer and the task ends, and with it its hold on the socket
/// the query came in on, so no socket of ours outlives [`Server::drain`]. A forwarded query's
/// task holds only the `abandon` token of its [`Lifecycle`]: the task is as large as what it
/// holds, and one past 2 KiB is boxed by tokio in debug builds (an allocation per query that
/// `tests/allocations.rs` counts).
async fn finish(
    abandon: &CancellationToken,
    responder: &Arc<Responder>,
    pending: &Pending,
    out: &mut Vec<u8>,
) {
    tokio::select! {
        () = responder.finish(pending, out) => {}
        () = abandon.cancelled() => {
            responder.reject(pending.owed(), Rejected::Shutdown, out)
        }
    }
}

/// The running listeners.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    /// What every listener answers with; [`Server::replace`] swaps it on reload.
    responder: Current,
    /// The listeners' send counters and query log.
    delivery: Arc<Delivery>,
    tasks: JoinSet<()>,
    lifecycle: Lifecycle,
}

impl Server {
    /// Binds every listen address and starts serving with `responder`.
    pub fn start(config: &Config, responder: Arc<Responder>) -> Result<Server, BindError> {
        Server::start_with(config, Arc::new(ArcSwap::new(responder)))
    }

    /// Binds every listen address and starts serving with whatever `responder` holds; a
    /// reload ([`Server::watch_config`]) swaps it there, for every holder of it.
    pub fn start_with(config: &Config, responder: Current) -> Result<Server, BindError> {
        let delivery = Arc::new(Delivery::new(responder.load().metrics(), config));
        let workers = config.worker_count();
        let lifecycle = Lifecycle {
            cancel: CancellationToken::new(),
            inflight: TaskTracker::new(),
            abandon: CancellationToken::new(),
        };
        let mut tasks = JoinSet::new();
        let mut local_addrs = Vec::new();
        for (listener, &addr) in config.listen.iter().enumerate() {
            let (udp_sockets, tcp_listener) = match bind_pair(addr, workers) {
                Err(err) if err.is_ipv6_wildcard_without_ipv6() && config.listen.len() > 1 => {
                    // A Corefile block without `bind` listens on both families; a node booted
                    // with IPv6 off serves the IPv4 one.
                    warn!(%err, "IPv6 is off on this node: not listening there");
                    continue;
                }
                bound => bound?,
            };
            let local = tcp_listener.local_addr().map_err(|error| BindError {
                addr,
                proto: "tcp",
                error,
            })?;
            let limits = Arc::new(config.server.clone());
            // One bound on queries waiting for upstreams per listen address, shared by its
            // UDP workers: the memory of a flood of misses stays capped.
            let inflight = Arc::new(Semaphore::new(config.server.max_inflight));
            for socket in udp_sockets {
                tasks.spawn(udp::serve(
                    listener,
                    Arc::new(socket),
                    responder.clone(),
                    delivery.clone(),
                    inflight.clone(),
                    lifecycle.clone(),
                ));
            }
            tasks.spawn(tcp::serve(
                listener,
                tcp_listener,
                responder.clone(),
                delivery.clone(),
                limits,
                lifecycle.clone(),
            ));
            info!(%local, udp_workers = workers, "listening");
            local_addrs.push(local);
        }
        Ok(Server {
            local_addrs,
            responder,
            delivery,
            tasks,
            lifecycle,
        })
    }

    /// Answers every query from now on with `responder` (a reloaded config). Queries already
    /// begun finish with the one they started with; nothing is dropped.
    pub fn replace(&self, responder: Arc<Responder>) {
        self.responder.store(responder);
    }

    /// Reloads the config from `path` when it changes (checked every `interval`), replacing
    /// the responder; `running` is the config the server started with. Ends at shutdown.
    pub fn watch_config(
        &mut self,
        source: Arc<dyn crate::config::source::ConfigSource>,
        interval: std::time::Duration,
        running: Config,
        metrics: Arc<crate::observe::Metrics>,
    ) {
        // The baseline a change is seen against, read now rather than when the task first
        // runs: a change written in between would otherwise become the baseline, unapplied.
        let baseline = source.fingerprint();
        self.tasks.spawn(reload::watch(
            source,
            interval,
            running,
            reload::Replaced {
                current: self.responder.clone(),
                delivery: self.delivery.clone(),
            },
            metrics,
            self.lifecycle.cancel.clone(),
            baseline,
        ));
    }

    /// The responder answering now.
    pub fn responder(&self) -> Arc<Responder> {
        self.responder.load_full()
    }

    /// The bound addresses (UDP and TCP share each port), in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Stops listening and waits for the listener tasks to end.
    pub async fn shutdown(self) {
        self.drain(std::time::Duration::ZERO, std::future::pending())
            .await;
    }

    /// Stops accepting queries and connections, then gives the queries already taken up to
    /// `deadline` to be answered (their answers go out on the sockets they came in on);
    /// returns how many were still unanswered then. Those are answered SERVFAIL (counted as
    /// rejected, `shutdown`), so that when this returns no task of ours still holds a
    /// listening socket: [`served_by_another`] would take one for a successor's. `hurry`
    /// (a second stop signal) ends the wait before `deadline`.
    pub async fn drain(
        mut self,
        deadline: std::time::Duration,
        hurry: impl std::future::Future<Output = ()>,
    ) -> usize {
        let Lifecycle {
            cancel,
            inflight,
            abandon,
        } = &self.lifecycle;
        cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        inflight.close();
        let answered = tokio::select! {
            waited = tokio::time::timeout(deadline, inflight.wait()) => waited.is_ok(),
            () = hurry => inflight.is_empty(),
        };
        if answered {
            return 0;
        }
        let unanswered = inflight.len();
        abandon.cancel();
        // Bounded: a TCP client that reads nothing can hold its connection's writer.
        let _ = tokio::time::timeout(ABANDON_WAIT, inflight.wait()).await;
        unanswered
    }
}

/// The first of `listen` that another process still serves, once ours are closed: a bind
/// without SO_REUSEPORT fails there. Node rules and addresses are shared by every instance on
/// the node (a rolling update runs two for a moment), so the one that exits leaves them to
/// the one that serves; the kernel's view of who holds the port is the only record needed,
/// and it is gone with a killed process too.
///
/// Call it after [`Server::drain`], which ends every task holding a socket of ours: a query
/// still waiting on upstreams once kept its socket open past the drain, and an exiting
/// instance with no successor took that for another instance and left every rule behind.
/// The address must also stay taken over a few tries (half a second), so that a socket
/// released a moment late is not taken for a successor's either: this is the one check that
/// skips the teardown.
pub async fn served_by_another(listen: &[SocketAddr]) -> Option<SocketAddr> {
    const TRIES: u32 = 5;
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
    let taken = |addr: &SocketAddr| {
        addr.port() != 0
            && matches!(
                std::net::UdpSocket::bind(addr),
                Err(err) if err.kind() == io::ErrorKind::AddrInUse
            )
    };
    let mut candidates: Vec<SocketAddr> = listen.iter().copied().filter(taken).collect();
    for _ in 1..TRIES {
        if candidates.is_empty() {
            return None;
        }
        tokio::time::sleep(PAUSE).await;
        candidates.retain(taken);
    }
    candidates.first().copied()
}

/// Limits a TCP connection task needs.
type Limits = Arc<ServerConfig>;
