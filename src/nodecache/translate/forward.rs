//! `forward FROM TO... { options }`: a zone's upstreams and how they are used.

use std::path::PathBuf;
use std::time::Duration;

use super::{CorefileError, Directive, FORWARD_HEALTH_CHECK, FORWARD_MAX_FAILS, Token, Translator};
use crate::config::tls::TlsConfig;
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
    /// With `tls://` upstreams: `tls_servername`, `tls` and the upstreams' `%NAME`.
    pub(super) tls: Option<TlsConfig>,
}

/// What a `forward`'s TO words say beyond their addresses.
#[derive(Default)]
struct Targets {
    tls: usize,
    plain: usize,
    /// The `%NAME`s of `tls://` targets, with their lines.
    server_names: Vec<(String, usize)>,
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
        let mut kinds = Targets::default();
        for target in targets {
            let upstream = self.upstream(target, &mut kinds)?;
            if !upstreams.contains(&upstream) {
                upstreams.push(upstream);
            }
        }
        if kinds.tls > 0 && kinds.plain > 0 {
            return Err(self.err(
                line,
                "forward mixes tls:// and plain upstreams: one forward (one zone) reaches all \
                 its upstreams the same way",
            ));
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
            tls: None,
        };
        let mut tls = TlsOptions::default();
        for option in &d.block {
            self.forward_option(&mut forward, &mut tls, option)?;
        }
        if kinds.tls > 0 {
            forward.transport = Transport::Tls;
            forward.tls = Some(self.tls_config(line, tls, &kinds.server_names)?);
        } else if let Some(line) = tls.line {
            self.warn(line, "tls and tls_servername ignored: no tls:// upstream");
        }
        Ok(forward)
    }

    /// The zone's `tls:` section from the block's `tls`, `tls_servername` and `%NAME`s.
    fn tls_config(
        &self,
        forward_line: usize,
        options: TlsOptions,
        server_names: &[(String, usize)],
    ) -> Result<TlsConfig, CorefileError> {
        if let (Some((_, line)), Some((_, name_line))) =
            (&options.server_name, server_names.first())
        {
            // CoreDNS refuses both levels at once as well.
            return Err(self.err(
                *name_line,
                format!("forward: tls_servername on line {line} and a tls://IP%NAME server name are both set"),
            ));
        }
        let mut server_name = options.server_name;
        for (name, name_line) in server_names {
            match &server_name {
                Some((known, line)) if known != name => {
                    return Err(self.err(
                        *name_line,
                        format!(
                            "forward: server name {name} differs from {known} on line {line}: \
                             one forward's TLS upstreams share one server name"
                        ),
                    ));
                }
                _ => server_name = Some((name.clone(), *name_line)),
            }
        }
        let [cert_file, key_file, ca_file] = options.files;
        let config = TlsConfig {
            server_name: server_name.map(|(name, _)| name),
            ca_file,
            cert_file,
            key_file,
            client: None,
        };
        // Read here too, so that an unreadable file or a bad name is reported at the Corefile
        // line that names it rather than at the native config's; the config built from the
        // translation reads them again.
        config.clone().load().map_err(|(_, message)| {
            self.err(
                options.line.unwrap_or(forward_line),
                format!("forward tls: {message}"),
            )
        })?;
        Ok(config)
    }

    /// One TO word: an address, or the one resolv.conf file the config may name.
    fn upstream(
        &mut self,
        target: &Token,
        kinds: &mut Targets,
    ) -> Result<UpstreamAddr, CorefileError> {
        let upstream = match parse_forward_target(&target.text)
            .map_err(|m| self.err(target.line, format!("forward: {m}")))?
        {
            ForwardTarget::Addr(addr) => {
                kinds.plain += 1;
                UpstreamAddr::Addr(addr)
            }
            ForwardTarget::Tls { addr, server_name } => {
                kinds.tls += 1;
                kinds
                    .server_names
                    .extend(server_name.map(|name| (name, target.line)));
                UpstreamAddr::Addr(addr)
            }
            ForwardTarget::ResolvConf(path) => {
                kinds.plain += 1;
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
        tls: &mut TlsOptions,
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
            ("tls_servername", [server_name]) => {
                tls.server_name = Some((server_name.text.clone(), name.line));
                tls.line = Some(name.line);
            }
            // CoreDNS's plugin/pkg/tls: CA; CERT KEY; or CERT KEY CA (none: system roots).
            ("tls", files) if files.len() <= 3 => {
                let path = |token: &Token| Some(PathBuf::from(&token.text));
                tls.files = match files {
                    [ca] => [None, None, path(ca)],
                    [cert, key] => [path(cert), path(key), None],
                    [cert, key, ca] => [path(cert), path(key), path(ca)],
                    _ => [None, None, None],
                };
                tls.line.get_or_insert(name.line);
            }
            (other, _) => {
                return Err(self.err(
                    name.line,
                    format!(
                        "unsupported forward option `{}` (supported: force_tcp, prefer_udp, \
                         policy P, max_fails N, health_check D, max_concurrent N, expire D, \
                         tls [CERT KEY] [CA], tls_servername NAME)",
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

/// A `forward` block's `tls` and `tls_servername` lines.
#[derive(Default)]
struct TlsOptions {
    /// `tls_servername` and its line.
    server_name: Option<(String, usize)>,
    /// `tls`'s client certificate, its key, and CA file.
    files: [Option<PathBuf>; 3],
    /// The first of those lines, for the warning when no upstream is `tls://`.
    line: Option<usize>,
}
