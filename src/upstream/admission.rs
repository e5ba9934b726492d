//! The bound in front of one upstream: at most `slots` queries outstanding at once (UDP and
//! TCP alike), and a bounded FIFO of queries waiting for a slot, each for at most
//! `queue.timeout` or its own deadline. Beyond that a query is turned away at once, so the
//! caller answers stale or SERVFAIL instead of letting work pile up (docs/design.md, failure 1).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::pool::QueueConfig;
use crate::observe::upstream::UpstreamHandles;

/// Why a query got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Overloaded {
    #[error("upstream queue full ({0} waiting)")]
    Full(usize),
    #[error("no upstream slot within {0:?}")]
    Timeout(Duration),
}

impl Overloaded {
    /// The metric label for this rejection.
    pub fn reason(self) -> &'static str {
        match self {
            Overloaded::Full(_) => "full",
            Overloaded::Timeout(_) => "timeout",
        }
    }
}

/// Slots and the queue of one upstream.
pub struct Admission {
    /// Tokio's semaphore hands permits out in the order they were asked for: the FIFO.
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: QueueConfig,
}

/// A held slot; dropping it frees the slot for the next waiting query.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    inflight: prometheus::IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inflight.dec();
    }
}

impl Admission {
    pub fn new(slots: usize, queue: QueueConfig) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS))),
            waiting: AtomicUsize::new(0),
            queue,
        }
    }

    /// A slot now, or after waiting in line until `queue.timeout` or `deadline`, whichever
    /// comes first.
    pub async fn enter(
        &self,
        deadline: Instant,
        metrics: &UpstreamHandles,
    ) -> Result<Slot, Overloaded> {
        let result = self.acquire(deadline, metrics).await;
        match result {
            Ok(permit) => {
                metrics.inflight.inc();
                Ok(Slot {
                    _permit: permit,
                    inflight: metrics.inflight.clone(),
                })
            }
            Err(overloaded) => {
                match overloaded {
                    Overloaded::Full(_) => metrics.rejected_full.inc(),
                    Overloaded::Timeout(_) => metrics.rejected_timeout.inc(),
                }
                metrics.max_concurrent_rejects.inc();
                Err(overloaded)
            }
        }
    }

    async fn acquire(
        &self,
        deadline: Instant,
        metrics: &UpstreamHandles,
    ) -> Result<OwnedSemaphorePermit, Overloaded> {
        // A free slot is taken without queueing; with queries waiting there is none free,
        // because tokio gives released permits to the waiters first.
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            metrics.queue_wait.observe(0.0);
            return Ok(permit);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        if ahead >= self.queue.capacity {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Overloaded::Full(ahead));
        }
        metrics.queue_depth.inc();
        let _in_line = InLine {
            waiting: &self.waiting,
            depth: &metrics.queue_depth,
        };
        let started = Instant::now();
        let until = deadline.min(started + self.queue.timeout);
        match tokio::time::timeout_at(until, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => {
                metrics.queue_wait.observe(started.elapsed().as_secs_f64());
                Ok(permit)
            }
            // The semaphore is never closed; a closed one would mean no slots ever again.
            Ok(Err(_)) | Err(_) => Err(Overloaded::Timeout(until - started)),
        }
    }
}

/// A place in the queue, given up however the wait ends (a slot, a timeout, or the caller
/// dropping the query).
struct InLine<'a> {
    waiting: &'a AtomicUsize,
    depth: &'a prometheus::IntGauge,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.depth.dec();
    }
}
