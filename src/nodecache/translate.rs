//! The last stage: a parsed Corefile's server blocks into one native config, directive by
//! directive (the table in the module documentation of [`super`]). `forward`, `cache`, `hosts`,
//! `template` and `dns64`, the directives with options, have a file each.

mod cache;
mod dns64;
mod forward;
mod hosts;
mod log;
mod rewrite;
mod template;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::import::{self, Source};
use super::parse::{Directive, IMPORT_ALONE, ServerBlock, parse_source};
use super::render::DEFAULT_RESOLV_CONF;
use super::{CorefileError, Token};
use crate::config::dns64::Dns64Config;
use crate::config::hosts::HostsConfig;
use crate::config::pool::PoolConfig;
use crate::config::rewrite::RewriteConfig;
use crate::config::template::TemplateConfig;
use crate::config::zone_log::ZoneLog;
use crate::config::{
    CacheConfig, Config, ConfigError, KubernetesConfig, LogConfig, MetricsConfig, ServerConfig,
    ZoneCacheConfig, ZoneConfig, ZoneName,
};
use crate::wire::Name;
use forward::Forward;

/// A translated Corefile: the native config, the HTTP endpoints it asked for, and what was
/// ignored.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The config served: validated, `resolv.conf` upstreams expanded to this machine's
    /// nameservers.
    pub config: Config,
    /// The same as written, `resolv.conf` upstreams kept: what `translate` prints, so that its
    /// output copied into a ConfigMap reads each node's own resolv.conf.
    pub portable: Config,
    /// `health [ADDR]` (default `:8080`), as written after rendering.
    pub health: Option<String>,
    /// `prometheus [ADDR]` (default `localhost:9153`).
    pub metrics: Option<String>,
    /// `file:line: ...` for every directive or option that was ignored.
    pub warnings: Vec<String>,
    /// Where the translation's parts were written, for errors found in it later.
    pub origins: Origins,
}

/// Where each part of a translation came from in the Corefile, so that an error the native
/// validation finds points at the Corefile, not at a line of YAML its reader never saw.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// The Corefile as named in errors.
    pub file: String,
    /// Each zone's file and line (the server block key that defined it), by zone index.
    pub zones: Vec<(String, usize)>,
}

impl Origins {
    /// `error` from validating the translation, as a Corefile error: a zone's field at the
    /// line of the block that defined the zone; anything else names the field without a line.
    pub fn error(&self, error: ConfigError) -> CorefileError {
        let ConfigError::Invalid { field, message, .. } = error else {
            // Only reading a file fails otherwise, and a translation is not read from one.
            return CorefileError::Input(error.to_string());
        };
        let zone = field.zone_index().and_then(|index| self.zones.get(index));
        match zone {
            Some((file, line)) => CorefileError::Invalid {
                file: file.clone(),
                line: *line,
                message: format!("{field} (translated): {message}"),
            },
            None => CorefileError::Native {
                file: self.file.clone(),
                field,
                message,
            },
        }
    }
}

impl Translation {
    /// The native YAML (portable: `resolv.conf` upstreams kept) with the endpoints and warnings
    /// as comments on top.
    pub fn to_yaml(&self, source: &str) -> String {
        self.yaml_of(&self.portable, source)
    }

    /// The same for the config as served here, `resolv.conf` expanded (`check-config`).
    pub fn to_effective_yaml(&self, source: &str) -> String {
        self.yaml_of(&self.config, source)
    }

    fn yaml_of(&self, config: &Config, source: &str) -> String {
        let mut out = format!("# translated from {source}\n");
        if let Some(health) = &self.health {
            out.push_str(&format!("# health endpoint (GET /health): {health}\n"));
        }
        if let Some(metrics) = &self.metrics {
            out.push_str(&format!("# metrics endpoint (GET /metrics): {metrics}\n"));
        }
        for warning in &self.warnings {
            out.push_str(&format!("# warning: {warning}\n"));
        }
        out.push_str(&config.to_yaml());
        out
    }
}

/// How `translate` reads the Corefile's environment.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// The port of server blocks that name none (CoreDNS `-dns.port`, 53).
    pub default_port: u16,
    /// Where a relative `import` pattern is read from: the Corefile's directory.
    pub import_dir: PathBuf,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            default_port: 53,
            import_dir: PathBuf::from("."),
        }
    }
}

/// A Go listen address as CoreDNS's `health` and `prometheus` take it: `:PORT` is every
/// address of both families (`[::]`, which the HTTP endpoints bind dual-stack),
/// `localhost:PORT` is loopback, otherwise `IP:PORT`.
fn endpoint_addr(text: &str) -> Option<SocketAddr> {
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::from((
            std::net::Ipv6Addr::UNSPECIFIED,
            port.parse().ok()?,
        )));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        return Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)));
    }
    text.parse().ok()
}

/// The HTTP listeners a Corefile asks for: `prometheus` serves every endpoint, `health` gets
/// its own listener (node-cache's liveness probe targets it) unless it is the same address.
fn metrics_config(prometheus: Option<&str>, health: Option<&str>) -> MetricsConfig {
    let defaults = MetricsConfig::default();
    let listen = prometheus.and_then(endpoint_addr);
    let health = health
        .and_then(endpoint_addr)
        .filter(|addr| Some(*addr) != listen);
    MetricsConfig {
        enabled: listen.is_some(),
        listen: listen.unwrap_or(defaults.listen),
        health_listen: health,
        ..defaults
    }
}

/// CoreDNS `forward` defaults (plugin/forward, v1.13).
const FORWARD_MAX_FAILS: u32 = 2;
const FORWARD_HEALTH_CHECK: Duration = Duration::from_millis(500);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
const FORWARD_DEADLINE: Duration = Duration::from_secs(5);
/// Parses and translates Corefile `text` into a validated native config.
pub fn translate(
    text: &str,
    file: &str,
    options: &TranslateOptions,
) -> Result<Translation, CorefileError> {
    let (text, source, warnings) = import::expand(text, file, &options.import_dir)?;
    let blocks = parse_source(&text, &source)?;
    let mut t = Translator {
        source: &source,
        listen: Vec::new(),
        zones: Vec::new(),
        zone_lines: Vec::new(),
        capacity: 0,
        max_inflight: None,
        resolv_conf: None,
        health: None,
        metrics: None,
        warnings,
    };
    for block in &blocks {
        t.block(block, options)?;
    }
    t.warn_forwards_to_own_binds();
    if t.zones.is_empty() {
        return Err(CorefileError::Invalid {
            file: file.into(),
            line: 1,
            message: "no server block".into(),
        });
    }
    let mut server = ServerConfig::default();
    if let Some(n) = t.max_inflight {
        server.max_inflight = n;
    }
    let config = Config {
        listen: t.listen,
        workers: 0,
        resolv_conf: t
            .resolv_conf
            .map_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF), |(p, _)| p),
        server,
        cache: CacheConfig {
            capacity: t.capacity.max(1),
        },
        kubernetes: KubernetesConfig::default(),
        node: Default::default(),
        metrics: metrics_config(t.metrics.as_deref(), t.health.as_deref()),
        log: LogConfig {
            ..LogConfig::default()
        },
        shutdown: Default::default(),
        zones: t.zones,
    };
    // Through the YAML once: the same validation and resolv.conf expansion as a native file.
    let portable = config;
    let origins = Origins {
        file: file.to_string(),
        zones: t
            .zone_lines
            .iter()
            .map(|&line| source.locate(line))
            .map(|(f, l)| (f.to_string(), l))
            .collect(),
    };
    let config =
        Config::from_yaml(&portable.to_yaml(), file).map_err(|error| origins.error(error))?;
    Ok(Translation {
        config,
        portable,
        origins,
        health: t.health,
        metrics: t.metrics,
        warnings: t.warnings,
    })
}

struct Translator<'a> {
    source: &'a Source,
    listen: Vec<SocketAddr>,
    zones: Vec<ZoneConfig>,
    /// The line each zone was defined on, for duplicate errors.
    zone_lines: Vec<usize>,
    capacity: usize,
    max_inflight: Option<usize>,
    /// The resolv.conf path forward reads, and the line that named it.
    resolv_conf: Option<(PathBuf, usize)>,
    health: Option<String>,
    metrics: Option<String>,
    warnings: Vec<String>,
}

/// A server block's zone names, each with its line.
type ZoneNames = Vec<(String, usize)>;

/// What one server block's directives say.
struct BlockSettings {
    bind: Vec<IpAddr>,
    forward: Option<Forward>,
    cache: Option<ZoneCacheConfig>,
    /// `hosts`, its ZONES those of the whole block.
    hosts: Option<HostsConfig>,
    /// `log`: which answers of the block's zones are logged.
    log: ZoneLog,
    /// The `template`s in order, their ZONES those of the whole block.
    templates: Vec<TemplateConfig>,
    /// `dns64`, and its line.
    dns64: Option<(Dns64Config, usize)>,
    /// The `rewrite` rules in order, each directive one rule.
    rewrites: Vec<RewriteConfig>,
}

impl Translator<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> CorefileError {
        self.source.invalid(line, message)
    }

    /// A block that forwards to an address it binds (not loopback) is accepted, as CoreDNS
    /// accepts it: IPVS, which owns the ClusterIPs on a node, takes such a query to the
    /// kube-dns pods before our socket sees it. Without a redirect it comes back to us, which
    /// the start-up loop probe finds (the zone is then answered REFUSED); said once here.
    fn warn_forwards_to_own_binds(&mut self) {
        let own: Vec<(usize, SocketAddr)> = self
            .zones
            .iter()
            .zip(&self.zone_lines)
            .flat_map(|(zone, &line)| zone.upstream_addrs().into_iter().map(move |a| (line, a)))
            .filter(|(_, addr)| self.listen.contains(addr) && !addr.ip().is_loopback())
            .collect();
        for (line, addr) in own {
            self.warn(
                line,
                format!(
                    "forwards to {addr}, which this server also binds: only a redirect in front \
                     of the socket (IPVS) takes it elsewhere; the start-up loop probe checks"
                ),
            );
        }
    }

    fn warn(&mut self, line: usize, message: impl AsRef<str>) {
        let at = self.source.at(line);
        self.warnings.push(format!("{at}: {}", message.as_ref()));
    }

    /// One server block: its zones, each with the block's forward and cache settings, and
    /// its `bind` addresses added to the listen addresses.
    fn block(
        &mut self,
        block: &ServerBlock,
        options: &TranslateOptions,
    ) -> Result<(), CorefileError> {
        let (names, ports) = self.zone_names(block, options)?;
        let settings = self.directives(block, &names)?;
        let line = block.keys[0].line;
        for port in ports {
            self.listen_on(&settings.bind, port, line);
        }
        let Some(forward) = &settings.forward else {
            return Err(self.err(
                line,
                "server block without `forward`: every zone needs upstreams",
            ));
        };
        for (name, name_line) in names {
            self.add_zone(&name, name_line, forward, &settings)?;
        }
        Ok(())
    }

    /// The block's zone names with their lines, and the ports they are on. Zones on several
    /// ports (`example.com example.io:1053`) make a listener per port, as CoreDNS makes a
    /// server per port; every zone is answered on every listener here (see `listen_on`).
    fn zone_names(
        &self,
        block: &ServerBlock,
        options: &TranslateOptions,
    ) -> Result<(ZoneNames, Vec<u16>), CorefileError> {
        let mut names = Vec::new();
        let mut ports = Vec::new();
        for key in &block.keys {
            let (name, port) = self.zone_key(key, options.default_port)?;
            if !ports.contains(&port) {
                ports.push(port);
            }
            names.push((name, key.line));
        }
        Ok((names, ports))
    }

    /// Listens on every `bind` address at `port`; without one, on every address of both
    /// families, as CoreDNS does (`0.0.0.0` and `[::]`; a node without IPv6 skips the second
    /// at start, see `server::Server`).
    fn listen_on(&mut self, bind: &[IpAddr], port: u16, line: usize) {
        let every = [
            IpAddr::from([0, 0, 0, 0]),
            IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
        ];
        let binds = if bind.is_empty() { &every[..] } else { bind };
        for &ip in binds {
            let addr = SocketAddr::new(ip, port);
            if !self.listen.contains(&addr) {
                if !self.listen.is_empty() && !self.zones.is_empty() {
                    self.warn(
                        line,
                        format!(
                            "{addr}: every zone is answered on every listen address, not only \
                             this block's"
                        ),
                    );
                }
                self.listen.push(addr);
            }
        }
    }

    /// The native zone `name` (on `name_line`), forwarded, cached and with hosts entries as
    /// its block says.
    fn add_zone(
        &mut self,
        name: &str,
        name_line: usize,
        forward: &Forward,
        settings: &BlockSettings,
    ) -> Result<(), CorefileError> {
        if forward.from != "." && normalize_zone(&forward.from) != normalize_zone(name) {
            return Err(self.err(
                forward.line,
                format!(
                    "forward FROM {} differs from the block's zone {name}: write a server \
                     block for {} instead",
                    forward.from, forward.from
                ),
            ));
        }
        let zone = ZoneName(
            Name::from_dotted(&name.to_lowercase())
                .map_err(|e| self.err(name_line, format!("invalid zone {name:?}: {e}")))?,
        );
        if let Some(j) = self.zones.iter().position(|z| z.name == zone) {
            return Err(self.err(
                name_line,
                format!(
                    "zone {name} is also defined on line {}; one zone is routed one way",
                    self.zone_lines[j]
                ),
            ));
        }
        // Zones that are only this one are the section's default: left out of the YAML.
        let hosts = settings.hosts.clone().map(|mut hosts| {
            if hosts.zones == [zone] {
                hosts.zones.clear();
            }
            hosts
        });
        let templates = settings
            .templates
            .iter()
            .cloned()
            .map(|mut template| {
                if template.zones == [zone] {
                    template.zones.clear();
                }
                template
            })
            .collect();
        self.zones.push(ZoneConfig {
            name: zone,
            upstreams: forward.upstreams.clone(),
            transport: forward.transport,
            policy: forward.policy,
            timeout: FORWARD_TIMEOUT,
            deadline: FORWARD_DEADLINE,
            max_fails: forward.max_fails,
            health_check: forward.health_check,
            unanswered_ttl: crate::config::default_unanswered_ttl(),
            cache: settings.cache.clone().unwrap_or(ZoneCacheConfig {
                enabled: false,
                ..ZoneCacheConfig::default()
            }),
            autopath: false,
            pool: PoolConfig {
                idle_timeout: forward
                    .idle_timeout
                    .unwrap_or(PoolConfig::default().idle_timeout),
                ..PoolConfig::default()
            },
            hosts,
            log: settings.log,
            tls: forward.tls.clone(),
            templates,
            dns64: settings.dns64.as_ref().map(|(dns64, _)| dns64.clone()),
            rewrite: settings.rewrites.clone(),
        });
        self.zone_lines.push(name_line);
        Ok(())
    }

    /// `[dns://]zone[:port]`.
    fn zone_key(&self, key: &Token, default_port: u16) -> Result<(String, u16), CorefileError> {
        let mut text = key.text.as_str();
        if let Some((scheme, rest)) = text.split_once("://") {
            if scheme != "dns" {
                return Err(self.err(
                    key.line,
                    format!(
                        "{scheme}:// server blocks (DNS over {}) are not served: pods ask the \
                         node's cache in plain DNS; drop the block, or serve {scheme}:// from a \
                         CoreDNS or dnsdist beside us that forwards here",
                        match scheme {
                            "https" | "https3" => "HTTPS",
                            "tls" => "TLS",
                            "quic" => "QUIC",
                            "grpc" => "gRPC",
                            _ => "another transport",
                        }
                    ),
                ));
            }
            text = rest;
        }
        let (zone, port) = match text.rsplit_once(':') {
            Some((zone, port)) => {
                let port = port.parse::<u16>().map_err(|_| {
                    self.err(key.line, format!("invalid port {port:?} in {:?}", key.text))
                })?;
                (zone, port)
            }
            None => (text, default_port),
        };
        if zone.is_empty() {
            return Err(self.err(key.line, format!("no zone in {:?}", key.text)));
        }
        if zone.contains('/') {
            return Err(self.err(
                key.line,
                format!("{zone}: CIDR zones are not supported; write the in-addr.arpa zone"),
            ));
        }
        Ok((zone.to_string(), port))
    }

    /// The block's directives; `names` are its zones (with their lines).
    fn directives(
        &mut self,
        block: &ServerBlock,
        names: &[(String, usize)],
    ) -> Result<BlockSettings, CorefileError> {
        let mut settings = BlockSettings {
            bind: Vec::new(),
            forward: None,
            cache: None,
            hosts: None,
            log: ZoneLog::default(),
            templates: Vec::new(),
            dns64: None,
            rewrites: Vec::new(),
        };
        for d in &block.directives {
            let line = d.name.line;
            match d.name.text.as_str() {
                "bind" => {
                    if !d.block.is_empty() {
                        return Err(self.err(line, "bind { except ... } is not supported"));
                    }
                    if d.args.is_empty() {
                        return Err(self.err(line, "bind needs at least one address"));
                    }
                    for arg in &d.args {
                        let ip: IpAddr = arg.text.parse().map_err(|_| {
                            self.err(
                                arg.line,
                                format!(
                                    "bind {}: not an IP address (interface names are not \
                                     supported; write the interface's addresses)",
                                    arg.text
                                ),
                            )
                        })?;
                        if !settings.bind.contains(&ip) {
                            settings.bind.push(ip);
                        }
                    }
                }
                "forward" => {
                    if settings.forward.is_some() {
                        return Err(self.err(line, "a second forward in one server block"));
                    }
                    settings.forward = Some(self.forward(d)?);
                }
                "cache" => {
                    if settings.cache.is_some() {
                        return Err(self.err(line, "a second cache in one server block"));
                    }
                    settings.cache = Some(self.cache(d)?);
                }
                "hosts" => {
                    if settings.hosts.is_some() {
                        return Err(self.err(line, "a second hosts in one server block"));
                    }
                    settings.hosts = Some(self.hosts(d, names)?);
                }
                "template" => {
                    let template = self.template(d, names)?;
                    settings.templates.push(template);
                }
                "dns64" => {
                    if settings.dns64.is_some() {
                        return Err(self.err(line, "a second dns64 in one server block"));
                    }
                    settings.dns64 = Some((self.dns64(d)?, line));
                }
                "rewrite" => settings.rewrites.push(self.rewrite(d)?),
                "health" => {
                    self.no_block(d)?;
                    let addr = self.optional_addr(d, ":8080")?;
                    self.listen_addr(line, "health", &addr)?;
                    self.endpoint(line, "health", addr, |t| &mut t.health);
                }
                "prometheus" => {
                    self.no_block(d)?;
                    let addr = self.optional_addr(d, "localhost:9153")?;
                    self.listen_addr(line, "prometheus", &addr)?;
                    self.endpoint(line, "prometheus", addr, |t| &mut t.metrics);
                }
                "errors" => {}
                // An `import` on a line of its own was spliced in before parsing.
                "import" => return Err(self.err(line, IMPORT_ALONE)),
                "log" => {
                    let log = self.log(d, names)?;
                    settings.log = settings.log.with(log);
                }
                // Always on: node-cache's inputs are read again every 2 s and a changed
                // translation applied (`nodecache::source`); a native config file likewise.
                // CoreDNS's interval and jitter only pace its polling.
                "reload" => {}
                // server.loop_check is on by default.
                "loop" => {}
                other => {
                    return Err(self.err(
                        line,
                        format!(
                            "unsupported directive `{other}` (supported: bind, cache, forward, \
                             hosts, template, dns64, rewrite, health, prometheus, errors, log, reload, \
                             loop, import)"
                        ),
                    ));
                }
            }
        }
        if let Some((_, line)) = settings.dns64
            && (settings.hosts.is_some() || !settings.templates.is_empty())
        {
            return Err(self.err(
                line,
                "dns64 with hosts or template in one server block is not supported: their \
                 answers would not be translated, as CoreDNS translates them",
            ));
        }
        Ok(settings)
    }

    fn no_block(&self, d: &Directive) -> Result<(), CorefileError> {
        match d.block.first() {
            // `health { lameduck D }`: accepted and ignored below would hide a drain the user
            // expects; say so instead.
            Some(line) => Err(self.err(
                line[0].line,
                format!(
                    "{} {{ {} ... }}: options are not supported",
                    d.name.text, line[0].text
                ),
            )),
            None => Ok(()),
        }
    }

    fn optional_addr(&self, d: &Directive, default: &str) -> Result<String, CorefileError> {
        match d.args.as_slice() {
            [] => Ok(default.to_string()),
            [addr] => Ok(addr.text.clone()),
            [_, extra, ..] => Err(self.err(
                extra.line,
                format!("{} takes at most one address", d.name.text),
            )),
        }
    }

    /// Checks that an endpoint address is one we can listen on.
    fn listen_addr(&self, line: usize, what: &str, addr: &str) -> Result<(), CorefileError> {
        match endpoint_addr(addr) {
            Some(_) => Ok(()),
            None => Err(self.err(
                line,
                format!("{what} {addr}: expected IP:PORT, :PORT or localhost:PORT"),
            )),
        }
    }

    fn endpoint(
        &mut self,
        line: usize,
        what: &str,
        addr: String,
        slot: fn(&mut Self) -> &mut Option<String>,
    ) {
        match slot(self).clone() {
            Some(previous) if previous != addr => self.warn(
                line,
                format!("{what} {addr} differs from the first one ({previous}); using the first"),
            ),
            Some(_) => {}
            None => *slot(self) = Some(addr),
        }
    }

    fn seconds(&self, t: &Token) -> Result<Duration, CorefileError> {
        t.text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| self.err(t.line, format!("{:?}: want a TTL in seconds", t.text)))
    }

    fn count(&self, t: &Token) -> Result<usize, CorefileError> {
        t.text
            .parse::<usize>()
            .map_err(|_| self.err(t.line, format!("{:?}: want a number", t.text)))
    }

    /// Go durations (`10s`, `500ms`, `1m30s`).
    fn duration(&self, t: &Token) -> Result<Duration, CorefileError> {
        humantime::parse_duration(&t.text)
            .map_err(|e| self.err(t.line, format!("{:?}: invalid duration ({e})", t.text)))
    }
}

fn normalize_zone(zone: &str) -> String {
    let zone = zone.to_lowercase();
    let zone = zone.trim_end_matches('.');
    if zone.is_empty() {
        ".".into()
    } else {
        zone.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::cache::CACHE_CAPACITY;
    use super::*;
    use crate::nodecache::lex::tokenize;
    use crate::nodecache::parse;
    use crate::nodecache::{
        ForwardTarget, KubeDnsConfig, RenderParams, parse_forward_target, render, service_host_env,
    };

    fn translate_text(text: &str) -> Result<Translation, CorefileError> {
        translate(text, "Corefile", &TranslateOptions::default())
    }

    /// Fuzzing regression (corefile target): a zone name with a control byte translated into
    /// a config that did not read back (its escape was read as four bytes).
    #[test]
    fn a_zone_name_with_a_control_byte_reads_back() {
        let translation = translate_text("a\u{1}b:53 {\n  forward . 1.1.1.1\n}\n").unwrap();
        let yaml = translation.config.to_yaml();
        assert!(yaml.contains("a\\001b."), "{yaml}");
        let again = Config::from_yaml(&yaml, "again").unwrap();
        assert_eq!(again, translation.config);
    }

    #[test]
    fn tokens_know_their_lines_and_quotes() {
        let tokens = tokenize("a \"b c\" # x\n{ }\n", &Source::single("f")).unwrap();
        let words: Vec<(&str, usize)> = tokens.iter().map(|t| (t.text.as_str(), t.line)).collect();
        assert_eq!(words, [("a", 1), ("b c", 1), ("{", 2), ("}", 2)]);
    }

    #[test]
    fn directives_with_blocks_parse() {
        let blocks = parse(
            ".:53 example:53 {\n  forward . 1.1.1.1 {\n    force_tcp\n    policy sequential\n  }\n  errors\n}\n",
            "f",
        )
        .unwrap();
        assert_eq!(blocks.len(), 1);
        let block = &blocks[0];
        assert_eq!(block.keys.len(), 2);
        assert_eq!(block.directives.len(), 2);
        assert_eq!(block.directives[0].block.len(), 2);
        assert_eq!(block.directives[1].name.line, 6);
    }

    #[test]
    fn unsupported_directive_names_file_and_line() {
        let err = translate_text(".:53 {\n  forward . 1.1.1.1\n  dnssec\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:3: unsupported directive `dnssec`"),
            "{err}"
        );
        let err = translate_text(".:53 {\n  forward . 1.1.1.1 {\n    tls_servername x y\n  }\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:3: unsupported forward option"),
            "{err}"
        );
        let err = translate_text(".:53 {\n  forward . https://1.1.1.1\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:2: forward: https://1.1.1.1"),
            "{err}"
        );
        let err = translate_text(".:53 {\n  forward . 1.1.1.1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:1: server block is not closed"),
            "{err}"
        );
    }

    /// CoreDNS's DoT forms: tls:// upstreams (port 853 by default), the server name from
    /// tls_servername or the upstreams' %NAME, and tls's CA file; errors at their lines.
    #[test]
    fn tls_upstreams_translate_to_a_tls_zone() {
        let ca = "/etc/ssl/certs/ca-certificates.crt";
        let t = translate_text(&format!(
            ".:53 {{\n  forward . tls://9.9.9.9 tls://149.112.112.112:8853 {{\n    tls {ca}\n    tls_servername dns.quad9.net\n  }}\n}}\n"
        ))
        .unwrap();
        let zone = &t.config.zones[0];
        assert_eq!(zone.transport, crate::config::Transport::Tls);
        let addrs: Vec<String> = zone
            .upstream_addrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addrs, ["9.9.9.9:853", "149.112.112.112:8853"]);
        let tls = zone.tls.as_ref().unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("dns.quad9.net"));
        assert_eq!(tls.ca_file.as_deref(), Some(std::path::Path::new(ca)));
        assert!(tls.client.is_some(), "the files were read");

        let t = translate_text(&format!(
            ".:53 {{\n  forward . tls://9.9.9.9%dns.quad9.net {{\n    tls {ca}\n  }}\n}}\n"
        ))
        .unwrap();
        let tls = t.config.zones[0].tls.as_ref().unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("dns.quad9.net"));

        let errors = [
            (
                ".:53 {\n  forward . tls://9.9.9.9 1.1.1.1\n}\n",
                "Corefile:2: forward mixes tls:// and plain",
            ),
            (
                ".:53 {\n  forward . tls://9.9.9.9%a.test tls://9.9.9.10%b.test\n}\n",
                "Corefile:2: forward: server name b.test differs from a.test",
            ),
            (
                ".:53 {\n  forward . tls://9.9.9.9%a.test {\n    tls_servername b.test\n  }\n}\n",
                "Corefile:2: forward: tls_servername on line 3",
            ),
            (
                ".:53 {\n  forward . tls://9.9.9.9 {\n    tls /nonexistent/ca.pem\n  }\n}\n",
                "Corefile:3: forward tls: /nonexistent/ca.pem: ",
            ),
        ];
        for (text, want) in errors {
            let err = translate_text(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let t =
            translate_text(".:53 {\n  forward . 1.1.1.1 {\n    tls_servername x.test\n  }\n}\n")
                .unwrap();
        assert!(
            t.warnings.iter().any(|w| w.contains("no tls:// upstream")),
            "{:?}",
            t.warnings
        );
        assert_eq!(t.config.zones[0].tls, None);
    }

    #[test]
    fn serve_stale_modes_wait_for_upstreams_or_not_as_coredns_does() {
        let stale = |options: &str| {
            let t = translate_text(&format!(
                ".:53 {{\n    forward . 10.0.0.10\n    cache 30 {{\n        serve_stale {options}\n    }}\n}}\n"
            ))
            .unwrap();
            t.config.zones[0].cache.serve_stale.clone()
        };
        let immediate = stale("");
        assert_eq!(immediate.max_age, Duration::from_secs(3600));
        assert_eq!(immediate.client_timeout, Duration::ZERO, "stale at once");
        assert_eq!(stale("10m immediate").client_timeout, Duration::ZERO);
        let verify = stale("10m verify");
        assert_eq!(verify.max_age, Duration::from_secs(600));
        assert_eq!(verify.client_timeout, FORWARD_DEADLINE, "upstreams first");
    }

    #[test]
    fn plain_cache_caps_both_ttls_like_coredns() {
        let t = translate_text(".:5353 {\n  bind 127.0.0.1\n  cache 30\n  forward . 10.0.0.1\n}\n")
            .unwrap();
        let zone = &t.config.zones[0];
        assert_eq!(zone.cache.success_ttl, Duration::from_secs(30));
        assert_eq!(zone.cache.denial_ttl, Duration::from_secs(30));
        assert_eq!(zone.cache.min_ttl, Duration::from_secs(5));
        assert_eq!(zone.cache.servfail_ttl, Duration::from_secs(5));
        assert_eq!(t.config.listen, ["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(t.config.cache.capacity, 2 * CACHE_CAPACITY);
    }

    #[test]
    fn a_zero_cache_ttl_is_refused_at_its_line_as_coredns_refuses_it() {
        let block =
            |cache: &str| format!(".:53 {{\n  bind 127.0.0.1\n{cache}  forward . 10.0.0.1\n}}\n");
        let err = translate_text(&block("  cache 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:3: cache TTL can not be zero"),
            "{err}"
        );
        let err = translate_text(&block("  cache {\n    success 9984 0\n  }\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:4: cache TTL can not be zero"),
            "{err}"
        );
        assert!(translate_text(&block("  cache 1\n")).is_ok());
    }

    #[test]
    fn no_cache_directive_turns_the_zone_cache_off() {
        let t = translate_text(".:53 {\n  bind 127.0.0.1\n  forward . 10.0.0.1\n}\n").unwrap();
        assert!(!t.config.zones[0].cache.enabled);
    }

    #[test]
    fn render_fails_clearly_without_the_upstream_service_variable() {
        let params = RenderParams {
            local_ips: vec!["169.254.20.10".parse().unwrap()],
            cluster_dns: None,
            cluster_dns_env: service_host_env("kube-dns-upstream"),
            prometheus_endpoint: ":9253".into(),
            dns_port: 53,
            kube_dns: KubeDnsConfig::default(),
        };
        let err = render(
            "cluster.local:53 {\n forward . __PILLAR__CLUSTER__DNS__\n}\n",
            &params,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("$KUBE_DNS_UPSTREAM_SERVICE_HOST is not set"),
            "{err}"
        );
        // A template without the placeholder (IPVS mode) does not need it.
        assert!(render(".:53 {\n forward . 1.1.1.1\n}\n", &params).is_ok());
    }

    #[test]
    fn zones_of_one_block_on_several_ports_listen_on_each() {
        let t = translate_text(
            "example.com example.io:1053 {\n    bind 169.254.20.10\n    forward . 10.0.0.10\n}\n",
        )
        .unwrap();
        let listen: Vec<String> = t.config.listen.iter().map(|a| a.to_string()).collect();
        assert_eq!(listen, ["169.254.20.10:53", "169.254.20.10:1053"]);
        assert_eq!(t.config.zones.len(), 2);
    }

    #[test]
    fn a_block_without_bind_listens_on_both_families() {
        let t = translate_text("example.com {\n    forward . 10.0.0.10\n}\n").unwrap();
        let listen: Vec<String> = t.config.listen.iter().map(|a| a.to_string()).collect();
        assert_eq!(listen, ["0.0.0.0:53", "[::]:53"]);
    }

    #[test]
    fn log_classes_names_and_format_are_read_as_coredns_reads_them() {
        use crate::config::zone_log::{AnswerClass, ZoneLog};
        let log_of = |directive: &str| {
            translate_text(&format!(
                "cluster.local {{\n    {directive}\n    forward . 10.0.0.10\n}}\n"
            ))
            .map(|t| (t.config.zones[0].log, t.warnings))
        };
        assert_eq!(log_of("log").unwrap().0, ZoneLog::ALL);
        assert_eq!(log_of("log .").unwrap().0, ZoneLog::ALL);
        let (log, _) = log_of("log . {\n        class denial error\n    }").unwrap();
        assert!(log.logs(AnswerClass::Denial) && log.logs(AnswerClass::Error));
        assert!(!log.logs(AnswerClass::Success));
        let (log, warnings) = log_of("log . \"{remote} {name}\"").unwrap();
        assert_eq!(log, ZoneLog::ALL);
        assert!(
            warnings.iter().any(|w| w.contains("FORMAT")),
            "{warnings:?}"
        );
        let err = log_of("log svc.cluster.local").unwrap_err().to_string();
        assert!(
            err.starts_with("Corefile:2: log: the block's zone cluster.local."),
            "{err}"
        );
        let err = log_of("log {\n        class loud\n    }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Corefile:3: log: unknown class `loud`"),
            "{err}"
        );
    }

    #[test]
    fn a_doh_block_is_refused_with_what_to_do_instead() {
        let err = translate_text("https://.:443 {\n    forward . 10.0.0.10\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:1: https:// server blocks (DNS over HTTPS) are not served"),
            "{err}"
        );
        assert!(err.contains("drop the block"), "{err}");
    }

    #[test]
    fn health_and_prometheus_become_the_http_listeners() {
        let t = translate_text(
            ".:53 {\n    bind 169.254.20.10\n    forward . 10.0.0.10\n    health 169.254.20.10:8080\n    prometheus :9253\n}\n",
        )
        .unwrap();
        let metrics = &t.config.metrics;
        assert!(metrics.enabled);
        assert_eq!(
            metrics.listen,
            "[::]:9253".parse().unwrap(),
            "both families, as Go's :9253"
        );
        assert_eq!(
            metrics.health_listen,
            Some("169.254.20.10:8080".parse().unwrap())
        );
        assert!(!metrics.debug);

        let t = translate_text(".:53 {\n    forward . 10.0.0.10\n    prometheus\n}\n").unwrap();
        assert_eq!(t.config.metrics.listen, "127.0.0.1:9153".parse().unwrap());
        assert_eq!(t.config.metrics.health_listen, None);
        let t = translate_text(".:53 {\n    forward . 10.0.0.10\n}\n").unwrap();
        assert!(!t.config.metrics.enabled);

        let err = translate_text(".:53 {\n    forward . 10.0.0.10\n    health node-a:8080\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":3: health node-a:8080: expected IP:PORT"),
            "{err}"
        );
    }

    #[test]
    fn hosts_translates_inline_and_file_forms_with_every_option() {
        use crate::config::hosts::Fallthrough;
        let t = translate_text(
            "cluster.local:53 in-addr.arpa:53 {\n    hosts {\n        10.0.0.5 db.cluster.local\n        fallthrough\n    }\n    forward . 10.0.0.10\n}\n.:53 {\n    hosts /etc/coredns/customhosts example.org {\n        ttl 60\n        reload 10s\n        no_reverse\n        fallthrough in-addr.arpa\n        fallthrough_unsupported\n    }\n    forward . 10.0.0.10\n}\n",
        )
        .unwrap();
        let zone = |name: &str| {
            let name = Name::from_dotted(name).unwrap();
            let zone = t.config.zones.iter().find(|z| z.name.0 == name).unwrap();
            zone.hosts.clone().unwrap()
        };
        let names =
            |zones: &[ZoneName]| -> Vec<String> { zones.iter().map(|z| z.0.to_dotted()).collect() };
        let cluster = zone("cluster.local");
        assert_eq!(cluster.file, Some(PathBuf::from("/etc/hosts")));
        assert_eq!(cluster.entries, ["10.0.0.5 db.cluster.local"]);
        assert_eq!(names(&cluster.zones), ["cluster.local.", "in-addr.arpa."]);
        assert_eq!(cluster.fallthrough, Fallthrough::All);
        assert_eq!(cluster.ttl, Duration::from_secs(3600));
        assert_eq!(zone("in-addr.arpa"), cluster, "one block, one section");
        let root = zone(".");
        assert_eq!(root.file, Some(PathBuf::from("/etc/coredns/customhosts")));
        assert_eq!(names(&root.zones), ["example.org."]);
        assert_eq!(root.ttl, Duration::from_secs(60));
        assert_eq!(root.reload, Duration::from_secs(10));
        assert!(root.no_reverse && root.fallthrough_unsupported);
        assert_eq!(
            root.fallthrough,
            Fallthrough::Zones(vec![ZoneName(Name::from_dotted("in-addr.arpa").unwrap())])
        );
        // A block of one zone leaves `zones` to its default.
        let t = translate_text(".:53 {\n    hosts\n    forward . 10.0.0.10\n}\n").unwrap();
        let hosts = t.config.zones[0].hosts.clone().unwrap();
        assert!(hosts.zones.is_empty());
        assert_eq!(hosts.fallthrough, Fallthrough::Off);
        let t = translate_text(
            ".:53 {\n    hosts f {\n        reload 0\n    }\n    forward . 10.0.0.10\n}\n",
        )
        .unwrap();
        assert_eq!(
            t.config.zones[0].hosts.as_ref().unwrap().reload,
            Duration::ZERO
        );
    }

    #[test]
    fn rewrite_rules_translate_in_order_as_coredns_reads_their_words() {
        use crate::config::rewrite::{AnswerConfig, AnswerKind, Mode, NameMatch, RewriteConfig};
        let t = translate_text(
            ".:53 {\n    rewrite continue name A.example. b.example.\n    rewrite name suffix .x. .y. answer value (.*)\\.y\\. {1}.x. name (.*)\\.y\\. {1}.x.\n    rewrite stop {\n        name regex (.*)\\.z\\. {1}.y.\n        answer auto\n    }\n    forward . 10.0.0.10\n}\n",
        )
        .unwrap();
        let rule = |kind, from: &str, to: &str, mode, answer| RewriteConfig {
            kind,
            from: from.into(),
            to: to.into(),
            mode,
            answer,
        };
        let back = |kind| AnswerConfig::new(kind, Some(("(.*)\\.y\\.", "{1}.x.")));
        assert_eq!(
            t.config.zones[0].rewrite,
            [
                // Two words after `name`: an exact rule, compared lowercased when compiled.
                rule(
                    NameMatch::Exact,
                    "A.example.",
                    "b.example.",
                    Mode::Continue,
                    vec![]
                ),
                // `answer` is left out before the second answer rule.
                rule(
                    NameMatch::Suffix,
                    ".x.",
                    ".y.",
                    Mode::Stop,
                    vec![back(AnswerKind::Value), back(AnswerKind::Name)],
                ),
                rule(
                    NameMatch::Regex,
                    "(.*)\\.z\\.",
                    "{1}.y.",
                    Mode::Stop,
                    vec![AnswerConfig::new(AnswerKind::Auto, None)],
                ),
            ]
        );
        let err = translate_text(".:53 {\n    rewrite stop name exact a. b. {\n        x\n    }\n    forward . 10.0.0.10\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:3: rewrite: a rule written on its line takes no block"),
            "{err}"
        );
    }

    #[test]
    fn templates_translate_in_order_with_the_blocks_zones() {
        use crate::config::hosts::Fallthrough;
        let t = translate_text(
            "cluster.local:53 in-addr.arpa:53 {\n    template IN AAAA {\n        rcode NOERROR\n    }\n    template ANY ANY invalid.cluster.local {\n        match ^a[.] \"^b[.]\"\n        match ^c[.]\n        answer \"{{ .Name }} 60 IN A 10.0.0.1\" \"{{ .Name }} 60 IN A 10.0.0.2\"\n        authority \"{{ .Zone }} 60 IN SOA ns. host. 1 60 60 60 60\"\n        additional \"x. 60 IN TXT y\"\n        rcode NXDOMAIN\n        fallthrough in-addr.arpa\n        upstream\n    }\n    forward . 10.0.0.10\n}\n.:53 {\n    template IN AAAA {\n        rcode NOERROR\n    }\n    forward . 10.0.0.10\n}\n",
        )
        .unwrap();
        let zone = |name: &str| {
            let name = Name::from_dotted(name).unwrap();
            let zone = t.config.zones.iter().find(|z| z.name.0 == name).unwrap();
            zone.templates.clone()
        };
        let names =
            |zones: &[ZoneName]| -> Vec<String> { zones.iter().map(|z| z.0.to_dotted()).collect() };
        let cluster = zone("cluster.local");
        assert_eq!(cluster.len(), 2, "in the order written");
        assert_eq!(
            (cluster[0].class.as_str(), cluster[0].qtype.as_str()),
            ("IN", "AAAA")
        );
        assert_eq!(
            names(&cluster[0].zones),
            ["cluster.local.", "in-addr.arpa."]
        );
        assert_eq!(cluster[0].rcode, "NOERROR");
        assert_eq!(cluster[0].fallthrough, Fallthrough::Off);
        let synth = &cluster[1];
        assert_eq!((synth.class.as_str(), synth.qtype.as_str()), ("ANY", "ANY"));
        assert_eq!(names(&synth.zones), ["invalid.cluster.local."]);
        assert_eq!(synth.matches, ["^a[.]", "^b[.]", "^c[.]"]);
        assert_eq!(synth.answer.len(), 2);
        assert_eq!(synth.authority.len(), 1);
        assert_eq!(synth.additional, ["x. 60 IN TXT y"]);
        assert_eq!(synth.rcode, "NXDOMAIN");
        assert_eq!(
            synth.fallthrough,
            Fallthrough::Zones(vec![ZoneName(Name::from_dotted("in-addr.arpa").unwrap())])
        );
        assert_eq!(zone("in-addr.arpa"), cluster, "one block, one list");
        // A block of one zone leaves `zones` to its default.
        assert!(zone(".")[0].zones.is_empty());
    }

    #[test]
    fn hosts_errors_name_file_and_line() {
        let block = |hosts: &str| format!(".:53 {{\n    forward . 10.0.0.10\n{hosts}}}\n");
        let err_of = |hosts: &str| translate_text(&block(hosts)).unwrap_err().to_string();
        let cases = [
            (
                "    hosts {\n        fallthrough\n        10.0.0.5 late\n    }\n",
                "Corefile:5: hosts: unknown property `10.0.0.5`",
            ),
            (
                "    hosts {\n        ttl 0\n    }\n",
                "Corefile:4: hosts: ttl 0 is invalid",
            ),
            (
                "    hosts {\n        ttl 65536\n    }\n",
                "Corefile:4: hosts: ttl 65536 is invalid",
            ),
            (
                "    hosts {\n        ttl x\n    }\n",
                "Corefile:4: hosts: ttl needs a number",
            ),
            (
                "    hosts {\n        reload\n    }\n",
                "Corefile:4: hosts: reload needs a duration",
            ),
            (
                "    hosts {\n        reload soon\n    }\n",
                "Corefile:4: \"soon\": invalid duration",
            ),
            (
                "    hosts {\n        no_reverse x\n    }\n",
                "Corefile:4: hosts: no_reverse takes no arguments",
            ),
            (
                "    hosts {\n        fallthrough_unsupported\n    }\n",
                "Corefile:3: fallthrough_unsupported requires fallthrough",
            ),
            (
                "    hosts\n    hosts\n",
                "Corefile:4: a second hosts in one server block",
            ),
            (
                "    hosts f 10.0.0.0/8\n",
                "Corefile:3: 10.0.0.0/8: CIDR zones are not supported",
            ),
        ];
        for (hosts, want) in cases {
            let err = err_of(hosts);
            assert!(err.starts_with(want), "{hosts:?}: {err}");
        }
    }

    #[test]
    fn forward_targets() {
        assert_eq!(
            parse_forward_target("[2001:db8::2]:10053"),
            Ok(ForwardTarget::Addr("[2001:db8::2]:10053".parse().unwrap()))
        );
        assert_eq!(
            parse_forward_target("dns://8.8.8.8"),
            Ok(ForwardTarget::Addr("8.8.8.8:53".parse().unwrap()))
        );
        assert!(parse_forward_target("dns.google").is_err());
    }
}
