//! `forward FROM TO... { options }`: a zone's upstreams and how they are used.

use std::time::Duration;

use super::{CorefileError, Directive, FORWARD_HEALTH_CHECK, FORWARD_MAX_FAILS, Token, Translator};
use crate::config::{Policy, Transport, UpstreamAddr};
use crate::nodecache::target::{ForwardTarget, parse_forward_target};

/// What a block's `forward` says.
pub(super) struct Forward {
    pub(super) line: usize,
    pub(super) from: String,
    pub(super) upstreams: Vec<UpstreamAddr>,
    pub(super) transport: Transport,
    pub(super) policy: Policy,
    pub(super) max_fails: u32,
    pub(super) health_check: Duration,
    /// `expire`: how long an idle upstream connection is kept.
    pub(super) idle_timeout: Option<Duration>,
}

impl Translator<'_> {
    pub(super) fn forward(&mut self, d: &Directive) -> Result<Forward, CorefileError> {
        let line = d.name.line;
        let [from, targets @ ..] = d.args.as_slice() else {
            return Err(self.err(line, "forward needs FROM and at least one TO address"));
        };
        if targets.is_empty() {
            return Err(self.err(line, "forward needs at least one TO address"));
        }
        let mut upstreams = Vec::new();
        for target in targets {
            let upstream = self.upstream(target)?;
            if !upstreams.contains(&upstream) {
                upstreams.push(upstream);
            }
        }
        let mut forward = Forward {
            line,
            from: from.text.clone(),
            upstreams,
            transport: Transport::Udp,
            policy: Policy::Random,
            max_fails: FORWARD_MAX_FAILS,
            health_check: FORWARD_HEALTH_CHECK,
            idle_timeout: None,
        };
        for option in &d.block {
            self.forward_option(&mut forward, option)?;
        }
        Ok(forward)
    }

    /// One TO word: an address, or the one resolv.conf file the config may name.
    fn upstream(&mut self, target: &Token) -> Result<UpstreamAddr, CorefileError> {
        let upstream = match parse_forward_target(&target.text)
            .map_err(|m| self.err(target.line, format!("forward: {m}")))?
        {
            ForwardTarget::Addr(addr) => UpstreamAddr::Addr(addr),
            ForwardTarget::ResolvConf(path) => {
                match &self.resolv_conf {
                    Some((known, known_line)) if *known != path => {
                        return Err(self.err(
                            target.line,
                            format!(
                                "forward to {}: only one resolv.conf file is supported, and \
                                 line {known_line} names {}",
                                path.display(),
                                known.display()
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => self.resolv_conf = Some((path, target.line)),
                }
                UpstreamAddr::ResolvConf
            }
        };
        Ok(upstream)
    }

    /// One line of the `forward` block.
    fn forward_option(
        &mut self,
        forward: &mut Forward,
        option: &[Token],
    ) -> Result<(), CorefileError> {
        let name = &option[0];
        let args = &option[1..];
        match (name.text.as_str(), args) {
            ("force_tcp", []) => forward.transport = Transport::Tcp,
            ("prefer_udp", []) => forward.transport = Transport::PreferUdp,
            ("policy", [p]) => {
                forward.policy = match p.text.as_str() {
                    "random" => Policy::Random,
                    "round_robin" => Policy::RoundRobin,
                    "sequential" => Policy::Sequential,
                    other => {
                        return Err(self.err(
                            p.line,
                            format!(
                                "forward policy {other:?}: want random, round_robin or \
                                 sequential"
                            ),
                        ));
                    }
                }
            }
            ("max_fails", [n]) => {
                forward.max_fails = n.text.parse().map_err(|_| {
                    self.err(n.line, format!("max_fails {:?}: not a number", n.text))
                })?
            }
            ("health_check", [dur, rest @ ..]) => {
                forward.health_check = self.duration(dur)?;
                if !rest.is_empty() {
                    self.warn(
                        dur.line,
                        "health_check options (no_rec, domain) ignored: upstreams are \
                         probed with a query for `.`",
                    );
                }
            }
            ("max_concurrent", [n]) => {
                let n: usize = n.text.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    self.err(n.line, format!("max_concurrent {:?}: not a count", n.text))
                })?;
                self.max_inflight = Some(self.max_inflight.map_or(n, |m| m.min(n)));
                self.warn(
                    name.line,
                    format!(
                        "max_concurrent {n} becomes server.max_inflight (per listen \
                         address; over it clients get SERVFAIL, not REFUSED)"
                    ),
                );
            }
            ("expire", [dur]) => forward.idle_timeout = Some(self.duration(dur)?),
            (other, _) => {
                return Err(self.err(
                    name.line,
                    format!(
                        "unsupported forward option `{}` (supported: force_tcp, prefer_udp, \
                         policy P, max_fails N, health_check D, max_concurrent N, expire D)",
                        std::iter::once(other)
                            .chain(args.iter().map(|a| a.text.as_str()))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
