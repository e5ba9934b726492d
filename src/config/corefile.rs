//! The CoreDNS Corefile that NodeLocal DNSCache (`node-cache`) runs on: rendering its template
//! the way node-cache's `updateCorefile` does, and translating the result into a native
//! [`Config`].
//!
//! A cluster switches to us by changing the image of its `node-local-dns` DaemonSet, so we read
//! what node-cache reads: the template ConfigMap (`-basecorefile`), the `kube-dns` ConfigMap
//! directory (`stubDomains`, `upstreamNameservers`) and the `$<SVC>_SERVICE_HOST` variable of
//! the upstream Service. [`render`] fills the `__PILLAR__` variables, [`parse`] reads the
//! Corefile subset below, and [`translate`] turns it into zones of one native config.
//!
//! | directive | translation |
//! |---|---|
//! | `ZONE[:PORT] [ZONE...] {` | one native zone per name; listen on every `bind` IP at PORT (default `-dns.port`, 53) |
//! | `bind IP...` | `listen` (the union over blocks: every zone is answered on every listen address) |
//! | `forward FROM TO... { ... }` | `zones[].upstreams`; FROM must be `.` or the block's zone; TO is `IP`, `IP:PORT`, `[IPv6]:PORT`, `dns://...` or a resolv.conf path |
//! | `  force_tcp` / `prefer_udp` | `transport: tcp` / `prefer_udp` (else `udp`) |
//! | `  policy random\|round_robin\|sequential` | `policy` |
//! | `  health_check D`, `max_fails N` | `health_check`, `max_fails` (CoreDNS defaults 500ms and 2) |
//! | `  max_concurrent N` | `server.max_inflight` (smallest over blocks; over the limit we answer SERVFAIL where CoreDNS answers REFUSED) |
//! | `  expire D` | `pool.idle_timeout` (closed exactly then, where CoreDNS sweeps every D) |
//! | `cache [TTL]` | `cache.success_ttl` = `cache.denial_ttl` = TTL (CoreDNS: 3600s / 1800s without TTL) |
//! | `cache { success N [TTL [MINTTL]]; denial N [TTL [MINTTL]]; prefetch N [D] [P%]; serve_stale [D [MODE]]; servfail D }` | `success_ttl`, `denial_ttl`, `min_ttl`, `prefetch`, `serve_stale.max_age`, `servfail_ttl`; capacities add up into `cache.capacity` |
//! | no `cache` | `zones[].cache.enabled: false` |
//! | `health [ADDR]` | `metrics.health_listen` (`/health` and `/ready` there; `:PORT` is `0.0.0.0:PORT`) |
//! | `prometheus [ADDR]` | `metrics.listen`; without it `metrics.enabled: false`, as CoreDNS serves no metrics then |
//! | `log` | `log.query_sample: 1` (every query logged, target `query`) |
//! | `loop` | `server.loop_check: true` (the default: a start-up probe per zone) |
//! | `errors`, `reload` | `errors` is implied (errors are always logged); `reload` is ignored with a warning |
//! | anything else | an error naming file and line |
//!
//! Where CoreDNS and our defaults differ, the translation keeps CoreDNS's numbers (2 s per
//! upstream, 5 s per query, SERVFAIL cached 5 s, minimum TTL 5 s) except that prefetch and
//! serve-stale stay on with our defaults unless the Corefile sets them: that is what users
//! asked node-cache for (kubernetes/dns #652), and it only ever answers where CoreDNS fails.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::pool::PoolConfig;
use super::{
    CacheConfig, Config, KubernetesConfig, LogConfig, MetricsConfig, Policy, ServerConfig,
    Transport, UpstreamAddr, ZoneCacheConfig, ZoneConfig, ZoneName,
};
use crate::wire::Name;

/// The `forward` block node-cache swaps for plain UDP when `upstreamNameservers` is set
/// (`cmd/node-cache/app/configmap.go`): custom upstreams are usually cloud resolvers that
/// refuse TCP.
const UPSTREAM_TCP_BLOCK: &str =
    "\n    forward . __PILLAR__UPSTREAM__SERVERS__ {\n            force_tcp\n    }\n";
const UPSTREAM_SERVERS: &str = "__PILLAR__UPSTREAM__SERVERS__";
const CLUSTER_DNS: &str = "__PILLAR__CLUSTER__DNS__";
const LOCAL_DNS: &str = "__PILLAR__LOCAL__DNS__";
const DNS_SERVER: &str = "__PILLAR__DNS__SERVER__";
const PROMETHEUS_ENDPOINT: &str = "__PROMETHEUS__ENDPOINT__";
/// What `__PILLAR__UPSTREAM__SERVERS__` becomes without custom upstreams.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// A Corefile (or its inputs) that cannot be used: where and why.
#[derive(Debug, Error)]
pub enum CorefileError {
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    /// An error that is not tied to one line (a missing variable, a bad kube-dns ConfigMap).
    #[error("{0}")]
    Input(String),
    /// The translation is not a valid native config.
    #[error("{file}: the translation is not a valid config: {error}")]
    Native {
        file: String,
        error: super::ConfigError,
    },
}

/// The kube-dns ConfigMap as mounted in a directory (one file per key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeDnsConfig {
    /// `stubDomains`: domain -> nameservers.
    pub stub_domains: BTreeMap<String, Vec<String>>,
    /// `upstreamNameservers`: replaces the node's resolv.conf for `.` (at most 3).
    pub upstream_nameservers: Vec<String>,
}

impl KubeDnsConfig {
    /// Reads `stubDomains` and `upstreamNameservers` from `dir` (absent files are empty) and
    /// validates them as node-cache does: every server must be a usable forward target.
    pub fn read_dir(dir: &Path) -> Result<KubeDnsConfig, CorefileError> {
        let mut config = KubeDnsConfig::default();
        let read = |key: &str| -> Result<Option<(String, String)>, CorefileError> {
            let path = dir.join(key);
            let file = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) if text.trim().is_empty() => Ok(None),
                Ok(text) => Ok(Some((text, file))),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(CorefileError::Read { file, error }),
            }
        };
        // JSON is YAML, so the YAML parser we already carry reads these.
        if let Some((text, file)) = read("stubDomains")? {
            config.stub_domains = serde_yaml_ng::from_str(&text).map_err(|err| {
                CorefileError::Input(format!(
                    "{file}: invalid stubDomains (want JSON like {{\"acme.local\": [\"1.2.3.4\"]}}): {err}"
                ))
            })?;
        }
        if let Some((text, file)) = read("upstreamNameservers")? {
            config.upstream_nameservers = serde_yaml_ng::from_str(&text).map_err(|err| {
                CorefileError::Input(format!(
                    "{file}: invalid upstreamNameservers (want JSON like [\"8.8.8.8\"]): {err}"
                ))
            })?;
        }
        config.validate().map_err(|message| {
            CorefileError::Input(format!(
                "{}: invalid kube-dns config: {message}",
                dir.display()
            ))
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.upstream_nameservers.len() > 3 {
            return Err(format!(
                "upstreamNameservers has {} entries; at most 3 are allowed",
                self.upstream_nameservers.len()
            ));
        }
        for server in &self.upstream_nameservers {
            parse_forward_target(server).map_err(|m| format!("upstreamNameservers: {m}"))?;
        }
        for (domain, servers) in &self.stub_domains {
            Name::from_dotted(domain)
                .map_err(|err| format!("stubDomains: invalid domain {domain:?}: {err}"))?;
            if servers.is_empty() {
                return Err(format!("stubDomains: {domain} has no nameserver"));
            }
            for server in servers {
                parse_forward_target(server).map_err(|m| format!("stubDomains[{domain}]: {m}"))?;
            }
        }
        Ok(())
    }
}

/// What [`render`] fills in.
#[derive(Debug, Clone)]
pub struct RenderParams {
    /// `-localip`: `__PILLAR__LOCAL__DNS__`, and the `bind` of stub domain blocks.
    pub local_ips: Vec<IpAddr>,
    /// The upstream Service's ClusterIP (`$<SVC>_SERVICE_HOST`); `None` when unset.
    pub cluster_dns: Option<IpAddr>,
    /// The variable `cluster_dns` came from, for the error when the template needs it.
    pub cluster_dns_env: String,
    /// `__PROMETHEUS__ENDPOINT__`.
    pub prometheus_endpoint: String,
    /// The port of stub domain blocks (`-dns.port`).
    pub dns_port: u16,
    pub kube_dns: KubeDnsConfig,
}

/// Renders node-cache's Corefile template as its `updateCorefile` does, except that a
/// template that needs `__PILLAR__CLUSTER__DNS__` without the upstream Service's variable is an
/// error instead of the literal `<nil>` CoreDNS cannot parse. Stub domain blocks are appended
/// in name order (node-cache's order is Go's random map order).
pub fn render(template: &str, params: &RenderParams) -> Result<String, CorefileError> {
    let mut text = template.to_string();
    let upstreams = &params.kube_dns.upstream_nameservers;
    if upstreams.is_empty() {
        text = text.replace(UPSTREAM_SERVERS, DEFAULT_RESOLV_CONF);
    } else {
        let servers = upstreams.join(" ");
        text = text.replace(UPSTREAM_TCP_BLOCK, &format!("\n    forward . {servers}\n"));
        if text.contains(UPSTREAM_SERVERS) {
            tracing::warn!(
                "the Corefile template's forward block for {UPSTREAM_SERVERS} is not the stock \
                 force_tcp block; substituting the upstream servers in place"
            );
            text = text.replace(UPSTREAM_SERVERS, &servers);
        }
    }
    if text.contains(CLUSTER_DNS) {
        let Some(ip) = params.cluster_dns else {
            return Err(CorefileError::Input(format!(
                "the Corefile template forwards to {CLUSTER_DNS} but ${} is not set: create the \
                 upstream Service (kube-dns-upstream in the stock manifest) before the pods start, \
                 keep enableServiceLinks on, or pass -upstreamsvc with the right Service name",
                params.cluster_dns_env
            )));
        };
        text = text.replace(CLUSTER_DNS, &ip.to_string());
    }
    let local = join_ips(&params.local_ips);
    text = text.replace(LOCAL_DNS, &local);
    text = text.replace(DNS_SERVER, "");
    text = text.replace(PROMETHEUS_ENDPOINT, &params.prometheus_endpoint);
    for (domain, servers) in &params.kube_dns.stub_domains {
        text.push_str(&format!(
            "{domain}:{port} {{\n    errors\n    cache 30\n    bind {local}\n    forward . {servers}\n}}\n",
            port = params.dns_port,
            servers = servers.join(" "),
        ));
    }
    Ok(text)
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The upstream Service's environment variable: `kube-dns-upstream` ->
/// `KUBE_DNS_UPSTREAM_SERVICE_HOST`.
pub fn service_host_env(service: &str) -> String {
    format!("{}_SERVICE_HOST", service.to_uppercase().replace('-', "_"))
}

/// One word of a Corefile and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub line: usize,
    /// Quoted tokens are never braces.
    quoted: bool,
}

impl Token {
    fn is(&self, text: &str) -> bool {
        !self.quoted && self.text == text
    }
}

/// A directive: its name, the words after it on its line, and the lines of its `{ }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: Token,
    pub args: Vec<Token>,
    pub block: Vec<Vec<Token>>,
}

/// `ZONE[:PORT]... { directives }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBlock {
    pub keys: Vec<Token>,
    pub directives: Vec<Directive>,
}

/// Splits Corefile text into words: whitespace separates, `#` starts a comment, `"..."`
/// quotes, and `{$VAR}` is replaced by the environment variable as CoreDNS does.
fn tokenize(text: &str, file: &str) -> Result<Vec<Token>, CorefileError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            line += 1;
            chars.next();
        } else if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            while chars.peek().is_some_and(|&c| c != '\n') {
                chars.next();
            }
        } else if c == '"' {
            let start = line;
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    None => {
                        return Err(CorefileError::Invalid {
                            file: file.to_string(),
                            line: start,
                            message: "unterminated quoted string".into(),
                        });
                    }
                    Some('"') => break,
                    Some('\\') if chars.peek() == Some(&'"') => {
                        chars.next();
                        word.push('"');
                    }
                    Some(c) => {
                        if c == '\n' {
                            line += 1;
                        }
                        word.push(c);
                    }
                }
            }
            tokens.push(Token {
                text: expand_env(&word),
                line: start,
                quoted: true,
            });
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(Token {
                text: expand_env(&word),
                line,
                quoted: false,
            });
        }
    }
    Ok(tokens)
}

/// `{$NAME}` -> the variable's value (empty when unset), as CoreDNS's Corefile loader does.
fn expand_env(word: &str) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(start) = rest.find("{$") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + len];
        out.push_str(&std::env::var(name).unwrap_or_default());
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Parses Corefile text into server blocks; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<ServerBlock>, CorefileError> {
    let err = |line: usize, message: String| CorefileError::Invalid {
        file: file.to_string(),
        line,
        message,
    };
    let tokens = tokenize(text, file)?;
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let mut keys = Vec::new();
        while i < tokens.len() && !tokens[i].is("{") {
            if tokens[i].is("}") {
                return Err(err(tokens[i].line, "unexpected `}`".into()));
            }
            if tokens[i].text.starts_with('(') || tokens[i].text == "import" {
                return Err(err(
                    tokens[i].line,
                    format!(
                        "`{}`: snippets and import are not supported; write the blocks out",
                        tokens[i].text
                    ),
                ));
            }
            // `a.local, b.local` is allowed like CoreDNS.
            for part in tokens[i].text.split(',').filter(|p| !p.is_empty()) {
                keys.push(Token {
                    text: part.to_string(),
                    ..tokens[i].clone()
                });
            }
            i += 1;
        }
        let Some(open) = tokens.get(i) else {
            let line = keys.first().map_or(1, |k| k.line);
            return Err(err(
                line,
                "server block without `{`: write `ZONE:PORT { ... }` around its directives".into(),
            ));
        };
        if keys.is_empty() {
            return Err(err(open.line, "`{` without a zone before it".into()));
        }
        let open_line = open.line;
        i += 1;
        let mut directives = Vec::new();
        loop {
            let Some(token) = tokens.get(i) else {
                return Err(err(open_line, "server block is not closed with `}`".into()));
            };
            if token.is("}") {
                i += 1;
                break;
            }
            if token.is("{") {
                return Err(err(token.line, "unexpected `{`".into()));
            }
            let name = token.clone();
            i += 1;
            let mut args = Vec::new();
            while let Some(t) = tokens.get(i) {
                if t.line != name.line || t.is("{") || t.is("}") {
                    break;
                }
                args.push(t.clone());
                i += 1;
            }
            let mut block = Vec::new();
            if let Some(t) = tokens.get(i)
                && t.is("{")
                && t.line == name.line
            {
                i += 1;
                let mut current: Vec<Token> = Vec::new();
                loop {
                    let Some(t) = tokens.get(i) else {
                        return Err(err(
                            name.line,
                            format!("the block of `{}` is not closed with `}}`", name.text),
                        ));
                    };
                    i += 1;
                    if t.is("}") {
                        break;
                    }
                    if t.is("{") {
                        return Err(err(t.line, "nested blocks are not supported".into()));
                    }
                    if current.first().is_some_and(|first| first.line != t.line) {
                        block.push(std::mem::take(&mut current));
                    }
                    current.push(t.clone());
                }
                if !current.is_empty() {
                    block.push(current);
                }
            }
            directives.push(Directive { name, args, block });
        }
        blocks.push(ServerBlock { keys, directives });
    }
    Ok(blocks)
}

/// A translated Corefile: the native config, the HTTP endpoints it asked for, and what was
/// ignored.
#[derive(Debug, Clone)]
pub struct Translation {
    pub config: Config,
    /// `health [ADDR]` (default `:8080`), as written after rendering.
    pub health: Option<String>,
    /// `prometheus [ADDR]` (default `localhost:9153`).
    pub metrics: Option<String>,
    /// `file:line: ...` for every directive or option that was ignored.
    pub warnings: Vec<String>,
}

impl Translation {
    /// The native YAML with the endpoints and warnings as comments on top.
    pub fn to_yaml(&self, source: &str) -> String {
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
        out.push_str(&self.config.to_yaml());
        out
    }
}

/// How `translate` reads the Corefile's environment.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// The port of server blocks that name none (CoreDNS `-dns.port`, 53).
    pub default_port: u16,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions { default_port: 53 }
    }
}

/// Reads, parses and translates a Corefile file.
pub fn load(path: &Path, options: &TranslateOptions) -> Result<Translation, CorefileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| CorefileError::Read {
        file: file.clone(),
        error,
    })?;
    translate(&text, &file, options)
}

/// A Go listen address as CoreDNS's `health` and `prometheus` take it: `:PORT` is every
/// address (0.0.0.0 here), `localhost:PORT` is loopback, otherwise `IP:PORT`.
fn endpoint_addr(text: &str) -> Option<SocketAddr> {
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?)));
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
/// CoreDNS `cache` defaults (plugin/cache).
const CACHE_CAPACITY: usize = 9984;
const CACHE_SUCCESS_TTL: Duration = Duration::from_secs(3600);
const CACHE_DENIAL_TTL: Duration = Duration::from_secs(1800);
const CACHE_MIN_TTL: Duration = Duration::from_secs(5);
const CACHE_SERVFAIL_TTL: Duration = Duration::from_secs(5);

/// Parses and translates Corefile `text` into a validated native config.
pub fn translate(
    text: &str,
    file: &str,
    options: &TranslateOptions,
) -> Result<Translation, CorefileError> {
    let blocks = parse(text, file)?;
    let mut t = Translator {
        file,
        listen: Vec::new(),
        zones: Vec::new(),
        zone_lines: Vec::new(),
        capacity: 0,
        max_inflight: None,
        resolv_conf: None,
        health: None,
        metrics: None,
        query_log: false,
        warnings: Vec::new(),
    };
    for block in &blocks {
        t.block(block, options)?;
    }
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
            query_sample: u64::from(t.query_log),
            ..LogConfig::default()
        },
        shutdown: Default::default(),
        zones: t.zones,
    };
    // Through the YAML once: the same validation and resolv.conf expansion as a native file.
    let config =
        Config::from_yaml(&config.to_yaml(), file).map_err(|error| CorefileError::Native {
            file: file.into(),
            error,
        })?;
    Ok(Translation {
        config,
        health: t.health,
        metrics: t.metrics,
        warnings: t.warnings,
    })
}

struct Translator<'a> {
    file: &'a str,
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
    /// A block had `log`: CoreDNS logs every query there.
    query_log: bool,
    warnings: Vec<String>,
}

/// What one server block's directives say.
struct BlockSettings {
    bind: Vec<IpAddr>,
    forward: Option<Forward>,
    cache: Option<ZoneCacheConfig>,
}

struct Forward {
    line: usize,
    from: String,
    upstreams: Vec<UpstreamAddr>,
    transport: Transport,
    policy: Policy,
    max_fails: u32,
    health_check: Duration,
    /// `expire`: how long an idle upstream connection is kept.
    idle_timeout: Option<Duration>,
}

impl Translator<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> CorefileError {
        CorefileError::Invalid {
            file: self.file.to_string(),
            line,
            message: message.into(),
        }
    }

    fn warn(&mut self, line: usize, message: impl AsRef<str>) {
        self.warnings
            .push(format!("{}:{line}: {}", self.file, message.as_ref()));
    }

    fn block(
        &mut self,
        block: &ServerBlock,
        options: &TranslateOptions,
    ) -> Result<(), CorefileError> {
        let mut names = Vec::new();
        let mut port = None;
        for key in &block.keys {
            let (name, key_port) = self.zone_key(key, options.default_port)?;
            if port.is_some_and(|p| p != key_port) {
                return Err(self.err(
                    key.line,
                    "zones of one server block on different ports are not supported",
                ));
            }
            port = Some(key_port);
            names.push((name, key.line));
        }
        let port = port.unwrap_or(options.default_port);
        let settings = self.directives(block)?;
        let line = block.keys[0].line;
        let binds = if settings.bind.is_empty() {
            vec![IpAddr::from([0, 0, 0, 0])]
        } else {
            settings.bind
        };
        for ip in binds {
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
        let Some(forward) = settings.forward else {
            return Err(self.err(
                line,
                "server block without `forward`: every zone needs upstreams",
            ));
        };
        for (name, name_line) in names {
            if forward.from != "." && normalize_zone(&forward.from) != normalize_zone(&name) {
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
            self.zones.push(ZoneConfig {
                name: zone,
                upstreams: forward.upstreams.clone(),
                transport: forward.transport,
                policy: forward.policy,
                timeout: FORWARD_TIMEOUT,
                deadline: FORWARD_DEADLINE,
                max_fails: forward.max_fails,
                health_check: forward.health_check,
                unanswered_ttl: super::default_unanswered_ttl(),
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
            });
            self.zone_lines.push(name_line);
        }
        Ok(())
    }

    /// `[dns://]zone[:port]`.
    fn zone_key(&self, key: &Token, default_port: u16) -> Result<(String, u16), CorefileError> {
        let mut text = key.text.as_str();
        if let Some((scheme, rest)) = text.split_once("://") {
            if scheme != "dns" {
                return Err(self.err(
                    key.line,
                    format!("{scheme}:// server blocks are not supported; only plain DNS"),
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

    fn directives(&mut self, block: &ServerBlock) -> Result<BlockSettings, CorefileError> {
        let mut settings = BlockSettings {
            bind: Vec::new(),
            forward: None,
            cache: None,
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
                // Every query, as CoreDNS's `log` does (for all zones: one query log).
                "log" => self.query_log = true,
                "reload" => self.warn(
                    line,
                    "`reload` ignored: the config is read at start (restart the pod to apply changes)",
                ),
                // server.loop_check is on by default.
                "loop" => {}
                other => {
                    return Err(self.err(
                        line,
                        format!(
                            "unsupported directive `{other}` (supported: bind, cache, forward, \
                             health, prometheus, errors, log, reload, loop)"
                        ),
                    ));
                }
            }
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

    fn forward(&mut self, d: &Directive) -> Result<Forward, CorefileError> {
        let line = d.name.line;
        let [from, targets @ ..] = d.args.as_slice() else {
            return Err(self.err(line, "forward needs FROM and at least one TO address"));
        };
        if targets.is_empty() {
            return Err(self.err(line, "forward needs at least one TO address"));
        }
        let mut upstreams = Vec::new();
        for target in targets {
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
        }
        Ok(forward)
    }

    fn cache(&mut self, d: &Directive) -> Result<ZoneCacheConfig, CorefileError> {
        let line = d.name.line;
        let mut cache = ZoneCacheConfig {
            enabled: true,
            success_ttl: CACHE_SUCCESS_TTL,
            denial_ttl: CACHE_DENIAL_TTL,
            min_ttl: CACHE_MIN_TTL,
            servfail_ttl: CACHE_SERVFAIL_TTL,
            ..ZoneCacheConfig::default()
        };
        match d.args.as_slice() {
            [] => {}
            [ttl] => {
                let ttl = self.seconds(ttl)?;
                cache.success_ttl = ttl;
                cache.denial_ttl = ttl;
            }
            [_, zone, ..] => {
                return Err(self.err(
                    zone.line,
                    "cache limited to some zones is not supported; cache applies to the block's zones",
                ));
            }
        }
        let (mut success_cap, mut denial_cap) = (CACHE_CAPACITY, CACHE_CAPACITY);
        let (mut success_min, mut denial_min) = (CACHE_MIN_TTL, CACHE_MIN_TTL);
        for option in &d.block {
            let name = &option[0];
            let args = &option[1..];
            match name.text.as_str() {
                kind @ ("success" | "denial") => {
                    let [cap, rest @ ..] = args else {
                        return Err(self.err(name.line, format!("{kind} needs a CAPACITY")));
                    };
                    let cap = self.count(cap)?;
                    let ttl = rest.first().map(|t| self.seconds(t)).transpose()?;
                    let min = rest.get(1).map(|t| self.seconds(t)).transpose()?;
                    if let Some(extra) = rest.get(2) {
                        return Err(self.err(extra.line, format!("{kind}: too many arguments")));
                    }
                    if kind == "success" {
                        success_cap = cap;
                        cache.success_ttl = ttl.unwrap_or(cache.success_ttl);
                        success_min = min.unwrap_or(success_min);
                    } else {
                        denial_cap = cap;
                        cache.denial_ttl = ttl.unwrap_or(cache.denial_ttl);
                        denial_min = min.unwrap_or(denial_min);
                    }
                }
                "prefetch" => {
                    let [amount, rest @ ..] = args else {
                        return Err(self.err(name.line, "prefetch needs an AMOUNT"));
                    };
                    cache.prefetch.min_hits = self.count(amount)?.try_into().unwrap_or(u32::MAX);
                    for arg in rest {
                        if let Some(pct) = arg.text.strip_suffix('%') {
                            cache.prefetch.percentage = pct
                                .parse()
                                .ok()
                                .filter(|p| (1..=100).contains(p))
                                .ok_or_else(|| {
                                    self.err(arg.line, format!("prefetch percentage {pct:?}"))
                                })?;
                        } else {
                            self.duration(arg)?;
                            self.warn(
                                arg.line,
                                "prefetch DURATION ignored: popularity counts over an entry's lifetime",
                            );
                        }
                    }
                }
                "serve_stale" => {
                    cache.serve_stale.max_age = match args.first() {
                        Some(d) => self.duration(d)?,
                        None => Duration::from_secs(3600),
                    };
                    match args.get(1).map(|t| t.text.as_str()) {
                        None | Some("immediate") | Some("verify") => {}
                        Some(other) => {
                            return Err(self.err(
                                name.line,
                                format!("serve_stale mode {other:?}: want immediate or verify"),
                            ));
                        }
                    }
                }
                "servfail" => {
                    let [dur] = args else {
                        return Err(self.err(name.line, "servfail needs one DURATION"));
                    };
                    cache.servfail_ttl = self.duration(dur)?;
                }
                other => {
                    return Err(self.err(
                        name.line,
                        format!(
                            "unsupported cache option `{other}` (supported: success, denial, \
                             prefetch, serve_stale, servfail)"
                        ),
                    ));
                }
            }
        }
        // One minimum for both kinds here, and never above a cap (our validation's rule).
        cache.min_ttl = success_min
            .min(denial_min)
            .min(cache.success_ttl)
            .min(cache.denial_ttl);
        if cache.min_ttl != success_min.min(denial_min) {
            self.warn(line, "cache: minimum TTL lowered to the TTL cap");
        }
        self.capacity = self.capacity.saturating_add(success_cap + denial_cap);
        Ok(cache)
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

/// A `forward` TO word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardTarget {
    Addr(SocketAddr),
    ResolvConf(PathBuf),
}

/// `IP`, `IP:PORT`, `[IPv6]:PORT`, `dns://` of those, or a resolv.conf path.
pub fn parse_forward_target(text: &str) -> Result<ForwardTarget, String> {
    if text.starts_with('/') {
        return Ok(ForwardTarget::ResolvConf(PathBuf::from(text)));
    }
    let plain = match text.split_once("://") {
        Some(("dns", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{text}: {scheme}:// upstreams are not supported; only plain DNS"
            ));
        }
        None => text,
    };
    if let Ok(addr) = plain.parse::<SocketAddr>() {
        return Ok(ForwardTarget::Addr(addr));
    }
    if let Ok(ip) = plain
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(ForwardTarget::Addr(SocketAddr::new(ip, 53)));
    }
    Err(format!(
        "{text:?} is not an upstream: want IP, IP:PORT, [IPv6]:PORT or a resolv.conf path"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let tokens = tokenize("a \"b c\" # x\n{ }\n", "f").unwrap();
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
        let err = translate_text(".:53 {\n  forward . 1.1.1.1\n  rewrite name a b\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:3: unsupported directive `rewrite`"),
            "{err}"
        );
        let err = translate_text(".:53 {\n  forward . 1.1.1.1 {\n    tls_servername x\n  }\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:3: unsupported forward option"),
            "{err}"
        );
        let err = translate_text(".:53 {\n  forward . tls://1.1.1.1\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Corefile:2: forward: tls://1.1.1.1"),
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
    fn health_and_prometheus_become_the_http_listeners() {
        let t = translate_text(
            ".:53 {\n    bind 169.254.20.10\n    forward . 10.0.0.10\n    health 169.254.20.10:8080\n    prometheus :9253\n}\n",
        )
        .unwrap();
        let metrics = &t.config.metrics;
        assert!(metrics.enabled);
        assert_eq!(metrics.listen, "0.0.0.0:9253".parse().unwrap());
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
