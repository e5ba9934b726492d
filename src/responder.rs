//! The request path: one client packet in, one answer (or a counted drop) out.
//!
//! ```text
//! begin (synchronous, on the listener's task)
//!   parse + validate  -> drop (too short, QR=1) | FORMERR | NOTIMP | BADVERS | REFUSED
//!   route by zone     -> REFUSED when no zone contains the name
//!   [view, cache hit  -> answered here without a task: later issues]
//!   -> Forward(Pending)
//! finish (async, one task per forwarded query, bounded by the listener)
//!   upstream group    -> answer patched for the client (ID, case, OPT, TC) | SERVFAIL
//! ```
//! Splitting at `begin`/`finish` keeps everything that can be answered from the packet alone
//! off the async machinery: that is where the fast path lives.

use std::sync::Arc;

use tracing::debug;

use crate::Proto;
use crate::config::Config;
use crate::observe::Metrics;
use crate::upstream::ZoneRouter;
use crate::upstream::router::RouteId;
use crate::wire::query::{self, DropReason, Query, Rejection, UpstreamFlags};
use crate::wire::rcode;
use crate::wire::reply::{self, EchoedQuestion, write_answer, write_error};

/// What `begin` did with a packet.
#[derive(Debug)]
pub enum Step {
    /// The answer is in the output buffer.
    Answered,
    /// No answer is owed (counted).
    Dropped(DropReason),
    /// Needs upstreams: call [`Responder::finish`]. Boxed: a task is spawned for it anyway, and
    /// the answered steps stay small.
    Forward(Box<Pending>),
}

/// A validated, routed query waiting for upstreams.
#[derive(Debug)]
pub struct Pending {
    query: Query,
    route: RouteId,
    proto: Proto,
}

/// Turns client packets into answers.
pub struct Responder {
    router: ZoneRouter,
    metrics: Arc<Metrics>,
    max_udp_size: u16,
}

impl Responder {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Responder {
        Responder {
            router: ZoneRouter::new(config, &metrics),
            metrics,
            max_udp_size: config.server.max_udp_size,
        }
    }

    /// Handles everything that needs no upstream; writes any answer into `out`.
    pub fn begin(&self, packet: &[u8], proto: Proto, out: &mut Vec<u8>) -> Step {
        let query = match query::parse(packet) {
            Ok(query) => query,
            Err(Rejection::Drop(reason)) => {
                self.metrics
                    .dropped
                    .with_label_values(&[reason.as_str()])
                    .inc();
                return Step::Dropped(reason);
            }
            Err(Rejection::Answer {
                header,
                rcode,
                question_end,
                edns,
            }) => {
                let question = question_end.map(|end| EchoedQuestion::from_packet(packet, end));
                write_error(
                    out,
                    header.id,
                    header.flags,
                    question,
                    rcode,
                    edns,
                    self.max_udp_size,
                );
                self.count_answer(rcode);
                return Step::Answered;
            }
        };
        let Some(route) = self.router.route(&query.question.name) else {
            self.write_query_error(&query, rcode::REFUSED, out);
            return Step::Answered;
        };
        Step::Forward(Box::new(Pending {
            query,
            route,
            proto,
        }))
    }

    /// Asks the zone's upstreams and writes the answer for the client into `out`: the upstream's
    /// answer, or SERVFAIL when none came.
    pub async fn finish(&self, pending: Box<Pending>, out: &mut Vec<u8>) {
        let Pending {
            query,
            route,
            proto,
        } = *pending;
        let flags = UpstreamFlags {
            checking_disabled: query.checking_disabled(),
            dnssec_ok: query.dnssec_ok(),
        };
        let route = self.router.get(route);
        match route
            .upstreams
            .exchange(&query.question, flags, proto)
            .await
        {
            Ok(answer) => {
                let max_size = self.max_size(&query, proto);
                write_answer(
                    out,
                    &answer.message,
                    answer.has_opt(),
                    &query,
                    max_size,
                    self.max_udp_size,
                );
                self.count_answer(answer.info.rcode);
            }
            Err(err) => {
                debug!(zone = %route.name, name = %query.question.name, %err, "no upstream answer");
                self.write_query_error(&query, rcode::SERVFAIL, out);
            }
        }
    }

    /// Answers a forwarded query SERVFAIL at once because a bound on waiting queries was hit.
    pub fn reject_overloaded(&self, pending: &Pending, out: &mut Vec<u8>) {
        self.count_rejected("inflight");
        self.write_query_error(&pending.query, rcode::SERVFAIL, out);
    }

    /// Counts a client turned away by a limit (`inflight`, `tcp_connections`).
    pub fn count_rejected(&self, reason: &'static str) {
        self.metrics.rejected.with_label_values(&[reason]).inc();
    }

    /// Counts a packet that was answered but whose answer could not be sent.
    pub fn count_send_error(&self) {
        self.metrics
            .dropped
            .with_label_values(&["send_error"])
            .inc();
    }

    fn max_size(&self, query: &Query, proto: Proto) -> usize {
        match proto {
            Proto::Udp => reply::udp_limit(query.edns, self.max_udp_size),
            Proto::Tcp => u16::MAX as usize,
        }
    }

    /// An error answer to a parsed query.
    fn write_query_error(&self, query: &Query, rcode: u16, out: &mut Vec<u8>) {
        let question = Some(EchoedQuestion::of_query(query));
        write_error(
            out,
            query.id,
            query.flags,
            question,
            rcode,
            query.edns,
            self.max_udp_size,
        );
        self.count_answer(rcode);
    }

    fn count_answer(&self, rcode: u16) {
        self.metrics
            .responses
            .with_label_values(&[rcode::name(rcode)])
            .inc();
    }
}
