//! What became of the answers a listener sends: the sends that failed
//! (`nodelocaldns_dropped_total{reason="send_error"}`), the TCP clients turned away by
//! `server.max_tcp_connections` (`nodelocaldns_rejected_total{reason="tcp_connections"}`), and
//! the query log (`log.query_sample`, `zones[].log`). The listener owns these, not the responder:
//! they are about sockets, and the responder never sees one.

use std::net::SocketAddr;

use prometheus::IntCounter;

use crate::Proto;
use crate::config::Config;
use crate::observe::Metrics;
use crate::observe::querylog::{LoggedZones, QueryLog};

/// The counters and the query log of one server's listeners.
pub(crate) struct Delivery {
    send_error: IntCounter,
    rejected_connection: IntCounter,
    query_log: QueryLog,
}

impl Delivery {
    /// Resolves the counters once (a flood must not cost a label lookup per packet) and logs
    /// as `config` says (`log.query_sample`, `zones[].log`).
    pub(crate) fn new(metrics: &Metrics, config: &Config) -> Delivery {
        Delivery {
            send_error: metrics.dropped.with_label_values(&["send_error"]),
            rejected_connection: metrics.rejected.with_label_values(&["tcp_connections"]),
            query_log: QueryLog::new(config.log.query_sample, logged_zones(config)),
        }
    }

    /// `answer` went out to `client`: offered to the query log.
    #[inline]
    pub(crate) fn sent(&self, client: SocketAddr, proto: Proto, answer: &[u8]) {
        self.query_log.answered(client, proto, answer);
    }

    /// An answer was written but could not be sent.
    pub(crate) fn send_failed(&self) {
        self.send_error.inc();
    }

    /// A TCP client was closed at once: `max_tcp_connections` were open.
    pub(crate) fn connection_rejected(&self) {
        self.rejected_connection.inc();
    }

    /// A reloaded config's `log.query_sample` and `zones[].log`.
    pub(crate) fn set_query_log(&self, config: &Config) {
        self.query_log
            .set(config.log.query_sample, logged_zones(config));
    }
}

fn logged_zones(config: &Config) -> Option<LoggedZones> {
    LoggedZones::new(config.zones.iter().map(|z| (z.name.0, z.log)))
}
