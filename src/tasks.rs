//! The owner of every background task: cache refreshes, pooled upstream connections, health
//! probes, the start-up loop check and the hosts files' checks.
//!
//! A query's own task is owned by its listener (`server`), which drains it. Everything else a
//! query or a config sets going runs here, so that one call ends it all: [`Tasks::stop`] cancels
//! every task and waits for them, bounded, at shutdown. Responders built by a reload share their
//! predecessor's `Tasks`, so the shutdown also reaches what an old config left running; an old
//! config's upstream connections end as soon as its last query has (see `upstream::pool`).
//!
//! Metrics: `nodelocaldns_tasks{kind}`, the tasks alive now, by kind (`refresh`, `connection`,
//! `probe`, `loop_check`, `hosts_reload`): after a reload or a burst they return to their steady value.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::observe::Metrics;
use crate::observe::labels::PerValue;
/// Declared in observe, which shows every kind's zero before the first task of it starts.
pub use crate::observe::labels::TaskKind;

/// Background tasks and their owner; clones share the same tasks.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    alive: PerValue<TaskKind, prometheus::IntGauge>,
}

/// Decrements a kind's gauge when its task ends, however it ends (done, cancelled, panicked).
struct Alive(prometheus::IntGauge);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Tasks {
    /// No tasks yet; they are counted in `metrics`' `nodelocaldns_tasks`.
    pub fn new(metrics: &Metrics) -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            alive: metrics.tasks.clone(),
        }
    }

    /// Runs `task` until it ends or [`Tasks::stop`] cancels it (then it is dropped where it
    /// waits). Its result is `None` when cancelled.
    pub fn spawn<F>(&self, kind: TaskKind, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let gauge = self.alive.get(kind).clone();
        gauge.inc();
        let alive = Alive(gauge);
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let _alive = alive;
            tokio::select! {
                output = task => Some(output),
                () = cancel.cancelled() => None,
            }
        })
    }

    /// Cancels every task and waits up to `bound` for them to end; returns how many had not.
    /// No task starts after this (a spawn then is cancelled at once).
    pub async fn stop(&self, bound: Duration) -> usize {
        self.cancel.cancel();
        self.tracker.close();
        match tokio::time::timeout(bound, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}
