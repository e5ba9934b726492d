//! Stop requests: SIGTERM and SIGINT, taken from the first line of `run`.
//!
//! Handlers are installed before the config is read and before the async runtime exists, so
//! that no moment of start-up is left to the default action (die at once, with whatever rules
//! are already in place). A plain thread reads the signals and counts them into a watch
//! channel: start-up checks it between steps, the serving instance waits on it, and the
//! shutdown waits on the second one (which cuts lameduck and drain short, never teardown).

use std::fmt;
use std::io;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use tokio::sync::watch;

/// A signal that asks us to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Int,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
        })
    }
}

/// The stop signals received so far.
#[derive(Debug, Clone, Copy, Default)]
struct Received {
    count: u32,
    first: Option<StopSignal>,
}

/// The process's stop requests. Dropping it restores nothing: the process is ending.
pub struct StopRequests {
    received: watch::Receiver<Received>,
    handle: Handle,
}

impl StopRequests {
    /// Takes SIGTERM and SIGINT from now on. Needs no runtime.
    pub fn install() -> io::Result<StopRequests> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let handle = signals.handle();
        let (sender, received) = watch::channel(Received::default());
        std::thread::Builder::new()
            .name("stop-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let signal = if signal == SIGINT {
                        StopSignal::Int
                    } else {
                        StopSignal::Term
                    };
                    sender.send_modify(|received| {
                        received.count += 1;
                        received.first.get_or_insert(signal);
                    });
                }
            })?;
        Ok(StopRequests { received, handle })
    }

    /// The first stop signal, if one has come.
    pub fn requested(&self) -> Option<StopSignal> {
        self.received.borrow().first
    }

    /// Waits for the first stop signal.
    pub async fn first(&self) -> StopSignal {
        self.wait_for(1).await;
        self.requested().unwrap_or(StopSignal::Term)
    }

    /// Waits for a second stop signal: the operator (or kubelet) insists.
    pub async fn second(&self) {
        self.wait_for(2).await;
    }

    async fn wait_for(&self, count: u32) {
        let mut received = self.received.clone();
        if received.wait_for(|r| r.count >= count).await.is_err() {
            // The reading thread is gone (it never ends while the handle lives): no more signals.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for StopRequests {
    fn drop(&mut self) {
        self.handle.close();
    }
}
