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

use prometheus::IntGaugeVec;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::observe::Metrics;

/// What a background task does: the `kind` label of `nodelocaldns_tasks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// A cache entry fetched again: a prefetch, or the refresh behind a stale answer.
    Refresh,
    /// One pooled TCP connection to an upstream.
    Connection,
    /// The health probe of an upstream skipped after `max_fails`.
    Probe,
    /// The start-up forwarding-loop check.
    LoopCheck,
    /// The periodic check of a zone's hosts file (`zones[].hosts.reload`).
    HostsReload,
}

impl TaskKind {
    /// Every kind, for showing zeros before the first task of a kind.
    pub const ALL: [TaskKind; 5] = [
        TaskKind::Refresh,
        TaskKind::Connection,
        TaskKind::Probe,
        TaskKind::LoopCheck,
        TaskKind::HostsReload,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TaskKind::Refresh => "refresh",
            TaskKind::Connection => "connection",
            TaskKind::Probe => "probe",
            TaskKind::LoopCheck => "loop_check",
            TaskKind::HostsReload => "hosts_reload",
        }
    }
}

/// Background tasks and their owner; clones share the same tasks.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    alive: IntGaugeVec,
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
        let gauge = self.alive.with_label_values(&[kind.label()]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_kind_is_shown_from_the_start() {
        let labels = TaskKind::ALL.map(TaskKind::label);
        assert_eq!(labels, crate::observe::metrics::TASK_KINDS);
    }
}
