//! The YAML configuration: one serde tree with its defaults, validated in one place.
//!
//! The rest of the program receives a [`Config`] whose values are typed and checked: socket
//! addresses, durations, zone names in wire form, and upstream lists with `resolv.conf`
//! already replaced by the nameservers it names. Every error names the file, the line and the
//! field (`config.yaml:7: zones[0].transport: unknown variant ...`).
//!
//! Every key, its default and its meaning are listed once, in the README's "Configuration
//! reference": the list users read. `tests/config_docs.rs` checks it against this model (every
//! key it names is a key here, every default it states is the default here). The section
//! modules ([`node`], [`pool`], [`hosts`], [`tls`], [`template`], [`dns64`], [`rewrite`]) say what their sections do.
//!
//! A node-cache command line and Corefile are translated into this model by
//! [`crate::nodecache`], which stands on this module.

pub mod dns64;
pub mod duration;
pub mod env;
pub mod hosts;
pub mod node;
pub mod path;
pub mod pool;
pub mod resolv;
pub mod rewrite;
pub mod source;
pub mod template;
pub mod tls;
pub mod zone_log;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::wire::Name;
pub use path::{FieldPath, Invalid};
use resolv::ResolvConf;

/// The configuration compiled into the binary: used by `run` without `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.yaml");

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: PathBuf,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    #[serde(default)]
    pub node: node::NodeConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    pub zones: Vec<ZoneConfig>,
}

/// What SIGTERM does, in order: `lameduck` of serving while `/ready` says not ready (a new
/// instance on the same addresses takes over meanwhile), then up to `drain` for the queries
/// already taken, then the node teardown (skipped while another instance serves our
/// addresses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    #[serde(with = "duration")]
    pub lameduck: Duration,
    #[serde(with = "duration")]
    pub drain: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            lameduck: Duration::from_secs(5),
            drain: Duration::from_secs(5),
        }
    }
}

/// Logging: the level filter (RUST_LOG and `--log-level` override it) and the sampled query
/// log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `warn`, `nodelocal_dns=debug`, ...
    pub level: String,
    /// Log one answered query in this many (client, name, type, rcode; target `query`);
    /// 0 logs none.
    pub query_sample: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            query_sample: 0,
        }
    }
}

/// The HTTP endpoints: `/metrics`, `/health`, `/ready`, and the opt-in `/debug/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether `listen` is served at all (`health_listen` is independent of it).
    pub enabled: bool,
    /// The listener of every endpoint; `null` in YAML means the default.
    #[serde(deserialize_with = "null_is_default_metrics_listen")]
    pub listen: SocketAddr,
    /// A listener with only `/health` and `/ready`, for probes on another address (node-cache
    /// serves `health` on the node-local IP, port 8080, and kubelet probes it there).
    pub health_listen: Option<SocketAddr>,
    /// Serve `/debug/*` on `listen`.
    pub debug: bool,
    /// Allow `debug` on a `listen` address that is not loopback.
    pub debug_remote: bool,
}

/// The default `metrics.listen`: loopback, so a lab run exposes nothing. Deployments set
/// `0.0.0.0:9253` (node-cache's Corefile does it with `prometheus :9253`).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9253);

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN,
            health_listen: None,
            debug: false,
            debug_remote: false,
        }
    }
}

impl MetricsConfig {
    /// Range and consistency checks.
    fn validate(&self) -> Result<(), Invalid> {
        if self.debug && !self.debug_remote && !self.listen.ip().is_loopback() {
            return Err((
                FieldPath::top("metrics.debug"),
                format!(
                    "the debug endpoints show cached names and pod names; {} is not a loopback \
                     address: listen on 127.0.0.1, or set metrics.debug_remote: true",
                    self.listen
                ),
            ));
        }
        if self.enabled && self.health_listen == Some(self.listen) {
            return Err((
                FieldPath::top("metrics.health_listen"),
                "is metrics.listen, which serves /health and /ready already: leave it out".into(),
            ));
        }
        Ok(())
    }
}

fn null_is_default_metrics_listen<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    Ok(Option::<SocketAddr>::deserialize(deserializer)?.unwrap_or(DEFAULT_METRICS_LISTEN))
}

/// The watch of this node's pods, for autopath.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    pub enabled: bool,
    /// The node whose pods are watched; the `NODE_NAME` env var (downward API) when absent.
    pub node_name: Option<String>,
    /// A kubeconfig file; the in-cluster service account when absent.
    pub kubeconfig: Option<PathBuf>,
    pub cluster_domain: ZoneName,
    /// Whether `/ready` waits for the first full list of pods.
    pub wait_for_sync: bool,
    /// The `search` domains of `resolv_conf`: the tail of every pod's search path. Read when
    /// the config is loaded and a zone has autopath.
    #[serde(skip)]
    pub host_search: Vec<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            node_name: None,
            kubeconfig: None,
            cluster_domain: ZoneName(
                Name::from_dotted("cluster.local").expect("a valid constant name"),
            ),
            wait_for_sync: false,
            host_search: Vec::new(),
        }
    }
}

impl KubernetesConfig {
    /// `node_name`, else the `NODE_NAME` environment variable.
    pub fn node(&self) -> Option<String> {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .filter(|n| !n.is_empty())
    }
}

/// The answer cache shared by all zones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Entries at most; an A+AAAA pair is one entry.
    pub capacity: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { capacity: 100_000 }
    }
}

/// How one zone's answers are cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneCacheConfig {
    pub enabled: bool,
    /// Cap on the TTL of positive answers.
    #[serde(with = "duration")]
    pub success_ttl: Duration,
    /// Cap on the TTL of NXDOMAIN and NODATA answers (whose TTL comes from the SOA).
    #[serde(with = "duration")]
    pub denial_ttl: Duration,
    /// TTLs below this are raised to it.
    #[serde(with = "duration")]
    pub min_ttl: Duration,
    /// How long an upstream SERVFAIL is cached; 0 never.
    #[serde(with = "duration")]
    pub servfail_ttl: Duration,
    pub prefetch: PrefetchConfig,
    pub serve_stale: ServeStaleConfig,
}

impl Default for ZoneCacheConfig {
    fn default() -> Self {
        ZoneCacheConfig {
            enabled: true,
            success_ttl: Duration::from_secs(30),
            denial_ttl: Duration::from_secs(5),
            min_ttl: Duration::ZERO,
            servfail_ttl: Duration::ZERO,
            prefetch: PrefetchConfig::default(),
            serve_stale: ServeStaleConfig::default(),
        }
    }
}

/// Refreshing popular entries before they expire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefetchConfig {
    /// Hits during an entry's lifetime that make it popular; 0 turns prefetch off.
    pub min_hits: u32,
    /// Refresh when less than this share of the TTL (in percent) remains.
    pub percentage: u8,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            min_hits: 2,
            percentage: 10,
        }
    }
}

/// Answering from expired entries when upstreams fail (RFC 8767).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeStaleConfig {
    /// How long past its expiry an entry may still be served; 0 turns it off.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// How long a client with a stale entry waits for upstreams before it gets the stale
    /// answer (RFC 8767's client response timer); the refresh goes on in the background.
    #[serde(with = "duration")]
    pub client_timeout: Duration,
}

impl Default for ServeStaleConfig {
    fn default() -> Self {
        ServeStaleConfig {
            max_age: Duration::from_secs(3600),
            client_timeout: Duration::from_millis(1800),
        }
    }
}

/// The longest `server.nsid`: a Kubernetes node name (a DNS subdomain) fits.
pub const MAX_NSID_LEN: usize = 253;

/// Limits of the client-facing listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub max_udp_size: u16,
    #[serde(with = "duration")]
    pub tcp_idle_timeout: Duration,
    pub max_tcp_connections: usize,
    pub max_tcp_pipelined: usize,
    pub max_inflight: usize,
    /// Probe each zone for a forwarding loop at start ([`crate::upstream::loop_check`]).
    pub loop_check: bool,
    /// The name server identifier (RFC 5001) given to queries that ask for one, so that an
    /// answer tells which node's cache gave it (e.g. `${NODE_NAME}`); none by default.
    pub nsid: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_udp_size: 1232,
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 1024,
            max_tcp_pipelined: 64,
            max_inflight: 8192,
            loop_check: true,
            nsid: None,
        }
    }
}

/// One routed zone and the upstreams that serve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: ZoneName,
    pub upstreams: Vec<UpstreamAddr>,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_deadline", with = "duration")]
    pub deadline: Duration,
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    #[serde(default = "default_health_check", with = "duration")]
    pub health_check: Duration,
    /// How long a question whose upstreams all timed out is answered without asking again.
    #[serde(default = "default_unanswered_ttl", with = "duration")]
    pub unanswered_ttl: Duration,
    #[serde(default)]
    pub cache: ZoneCacheConfig,
    /// Answer pods' search-path walk server-side (CoreDNS `autopath @kubernetes`).
    #[serde(default)]
    pub autopath: bool,
    #[serde(default)]
    pub pool: pool::PoolConfig,
    /// Names answered from hosts-file entries (CoreDNS `hosts`); none by default.
    #[serde(default)]
    pub hosts: Option<hosts::HostsConfig>,
    /// Which answered queries of this zone are logged (CoreDNS `log` in the zone's block):
    /// `true`, `false` or classes.
    #[serde(default, skip_serializing_if = "zone_log::ZoneLog::is_off")]
    pub log: zone_log::ZoneLog,
    /// With `transport: tls`: how the upstreams' certificates are checked (the system's roots
    /// and the upstream's IP when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<tls::TlsConfig>,
    /// Answers made from the query name (CoreDNS `template`), tried in order; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<template::TemplateConfig>,
    /// AAAA answers synthesized from A records for IPv6-only clients (CoreDNS `dns64`); off
    /// by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns64: Option<dns64::Dns64Config>,
    /// Question names rewritten before they go upstream, and answers back (CoreDNS
    /// `rewrite name`), tried in order; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrite: Vec<rewrite::RewriteConfig>,
}

/// How queries reach a zone's upstreams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// UDP, except that a client that asked over TCP is forwarded over TCP (CoreDNS's default:
    /// the same protocol as the client). A truncated UDP answer is retried over TCP.
    #[default]
    Udp,
    /// Always TCP (CoreDNS `force_tcp`).
    Tcp,
    /// Always UDP first, whatever the client used; truncated answers are retried over TCP
    /// (CoreDNS `prefer_udp`).
    PreferUdp,
    /// DNS over TLS (RFC 7858; CoreDNS `tls://`), always, over the pooled connections:
    /// upstream port 853 unless named.
    Tls,
}

impl Transport {
    /// The upstream port when none is written.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 853,
            Transport::Udp | Transport::Tcp | Transport::PreferUdp => 53,
        }
    }
}

/// The order in which a zone's upstreams are tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    Random,
    RoundRobin,
    Sequential,
}

/// A zone name, lowercased, in wire form. Written as `cluster.local` or `.` in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneName(pub Name);

impl Serialize for ZoneName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_dotted())
    }
}

impl<'de> Deserialize<'de> for ZoneName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Name::from_dotted(&text)
            .map(ZoneName)
            .map_err(|err| serde::de::Error::custom(format!("invalid zone name {text:?}: {err}")))
    }
}

/// One entry of `upstreams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAddr {
    Addr(SocketAddr),
    /// The nameservers of the `resolv_conf` file, resolved when the config is loaded.
    ResolvConf,
}

impl UpstreamAddr {
    const RESOLV_CONF: &'static str = "resolv.conf";

    fn parse(text: &str) -> Option<UpstreamAddr> {
        if text == Self::RESOLV_CONF {
            return Some(UpstreamAddr::ResolvConf);
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(UpstreamAddr::Addr(addr));
        }
        let ip: IpAddr = text.parse().ok()?;
        // The port follows the zone's transport (53, or 853 for TLS): set by
        // `Config::default_ports` once the zone is read. No upstream listens on port 0.
        Some(UpstreamAddr::Addr(SocketAddr::new(ip, 0)))
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Addr(addr) => write!(f, "{addr}"),
            UpstreamAddr::ResolvConf => f.write_str(Self::RESOLV_CONF),
        }
    }
}

impl Serialize for UpstreamAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpstreamAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        UpstreamAddr::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid upstream {text:?}: expected IP, IP:PORT, [IPv6]:PORT or resolv.conf"
            ))
        })
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 5300))]
}

fn default_resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_deadline() -> Duration {
    Duration::from_secs(5)
}

fn default_max_fails() -> u32 {
    3
}

fn default_health_check() -> Duration {
    Duration::from_millis(500)
}

pub(crate) fn default_unanswered_ttl() -> Duration {
    Duration::from_secs(2)
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}{}: {field}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        line: Option<usize>,
        field: FieldPath,
        message: String,
    },
    #[error("{file}:{line}: ${{{name}}}: environment variable is not set")]
    Unset {
        file: String,
        line: usize,
        name: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: file.clone(),
            error,
        })?;
        let text = env::expand(&text, |name| std::env::var(name).ok()).map_err(|unset| {
            ConfigError::Unset {
                file: file.clone(),
                line: unset.line,
                name: unset.name,
            }
        })?;
        Config::from_yaml(&text, &file)
    }

    /// The embedded default configuration (`config/default.yaml`).
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_yaml(EMBEDDED_DEFAULT, "<embedded default>")
    }

    /// Parses and validates YAML `text`; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let field = FieldPath::from_serde(err.path());
            let inner = err.into_inner();
            let message = strip_location(&inner.to_string());
            // serde_yaml prefixes nested errors with (part of) the path itself.
            let message = match message.split_once(": ") {
                Some((prefix, rest)) if field.to_string().starts_with(prefix) => rest.to_string(),
                _ => message,
            };
            ConfigError::Invalid {
                file: file.to_string(),
                line: inner.location().map(|l| l.line()),
                field,
                message,
            }
        })?;
        config.default_ports();
        let invalid = |field: FieldPath, message: String| ConfigError::Invalid {
            file: file.to_string(),
            line: field.line_in(text),
            field,
            message,
        };
        config.validate().map_err(|(f, m)| invalid(f, m))?;
        config.load_tls().map_err(|(f, m)| invalid(f, m))?;
        config
            .expand_resolv_conf()
            .map_err(|(f, m)| invalid(f, m))?;
        config.read_host_search().map_err(|(f, m)| invalid(f, m))?;
        Ok(config)
    }

    /// Cross-field and range checks that serde cannot express.
    fn validate(&self) -> Result<(), Invalid> {
        self.validate_server()?;
        if self.zones.is_empty() {
            return Err((
                FieldPath::top("zones"),
                "at least one zone is needed (name `.` routes everything)".into(),
            ));
        }
        for i in 0..self.zones.len() {
            self.validate_zone(i)?;
        }
        self.node.validate(FieldPath::top("node"))?;
        if self.node.setup_iptables
            && let Some(ip) = self
                .node
                .local_ips
                .iter()
                .find(|&&ip| self.node.listener_of(ip, &self.listen).is_none())
        {
            let addr = SocketAddr::new(*ip, self.node.dns_port);
            return Err((
                FieldPath::top("node.local_ips"),
                format!(
                    "nothing in listen answers {addr}: the rules divert DNS for a local IP only \
                     while a socket of ours is bound to it, so add {addr} to listen"
                ),
            ));
        }
        self.metrics.validate()?;
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err((
                FieldPath::top("log.level"),
                format!("not a log filter: {err}"),
            ));
        }
        let kube = &self.kubernetes;
        if kube.enabled && kube.node().is_none() {
            return Err((
                FieldPath::top("kubernetes.node_name"),
                "not set, and NODE_NAME is not set either".into(),
            ));
        }
        Ok(())
    }

    /// The listeners' and the shared cache's bounds.
    fn validate_server(&self) -> Result<(), Invalid> {
        let server = |key: &str| FieldPath::top("server").key(key);
        if self.listen.is_empty() {
            return Err((
                FieldPath::top("listen"),
                "at least one listen address is needed".into(),
            ));
        }
        if self.server.max_udp_size < 512 {
            return Err((
                server("max_udp_size"),
                "must be at least 512 (RFC 1035)".into(),
            ));
        }
        let limits = [
            ("max_tcp_connections", self.server.max_tcp_connections),
            ("max_tcp_pipelined", self.server.max_tcp_pipelined),
            ("max_inflight", self.server.max_inflight),
        ];
        for (key, value) in limits {
            if value == 0 {
                return Err((server(key), "must be at least 1".into()));
            }
        }
        if let Some(nsid) = &self.server.nsid
            && !(1..=MAX_NSID_LEN).contains(&nsid.len())
        {
            return Err((
                server("nsid"),
                format!(
                    "must be 1 to {MAX_NSID_LEN} bytes (it rides in every answer asking for it)"
                ),
            ));
        }
        if self.server.tcp_idle_timeout.is_zero() {
            return Err((server("tcp_idle_timeout"), "must be above 0".into()));
        }
        if self.cache.capacity == 0 {
            return Err((
                FieldPath::top("cache.capacity"),
                "must be at least 1 (turn caching off per zone with cache.enabled: false)".into(),
            ));
        }
        Ok(())
    }

    /// The checks of `zones[i]`.
    fn validate_zone(&self, i: usize) -> Result<(), Invalid> {
        let zone = &self.zones[i];
        let field = |key: &str| FieldPath::zone(i).key(key);
        if let Some(j) = self.zones[..i].iter().position(|z| z.name == zone.name) {
            return Err((
                field("name"),
                format!("zone {} is also zones[{j}]", zone.name.0),
            ));
        }
        if zone.upstreams.is_empty() {
            return Err((field("upstreams"), "at least one upstream is needed".into()));
        }
        // On loopback nothing can take the query elsewhere. On another address, something in
        // front of our socket may (IPVS owns a ClusterIP we also bind; a Corefile that forwards
        // to it is accepted by CoreDNS): the start-up loop probe decides there, and without it
        // the config is refused.
        if let Some(addr) = zone
            .upstream_addrs()
            .into_iter()
            .find(|a| self.listens_on(*a) && (a.ip().is_loopback() || !self.server.loop_check))
        {
            return Err((
                field("upstreams"),
                format!("{addr} is where this server listens: forwarding there is a loop"),
            ));
        }
        if zone.timeout.is_zero() {
            return Err((field("timeout"), "must be above 0".into()));
        }
        if zone.deadline < zone.timeout {
            return Err((
                field("deadline"),
                format!(
                    "{} is shorter than timeout {}",
                    humantime::format_duration(zone.deadline),
                    humantime::format_duration(zone.timeout)
                ),
            ));
        }
        if zone.health_check.is_zero() {
            return Err((field("health_check"), "must be above 0".into()));
        }
        let cache = &zone.cache;
        if cache.min_ttl > cache.success_ttl || cache.min_ttl > cache.denial_ttl {
            return Err((
                field("cache.min_ttl"),
                "must not exceed cache.success_ttl or cache.denial_ttl".into(),
            ));
        }
        if cache.prefetch.percentage == 0 || cache.prefetch.percentage > 100 {
            return Err((
                field("cache.prefetch.percentage"),
                "must be between 1 and 100".into(),
            ));
        }
        zone.pool
            .validate()
            .map_err(|(key, message)| (field("pool").key(key), message))?;
        if let Some(hosts) = &zone.hosts {
            hosts.validate(field("hosts"))?;
        }
        if let Some(dns64) = &zone.dns64 {
            dns64.validate(field("dns64"))?;
            // CoreDNS's dns64 runs before hosts and template, so it would synthesize from their
            // answers too; here it sits on the cache's A and AAAA pair, which their answers
            // never enter.
            if zone.hosts.is_some() || !zone.templates.is_empty() {
                return Err((
                    field("dns64"),
                    "cannot be combined with hosts or templates in one zone (their answers are \
                     not translated)"
                        .into(),
                ));
            }
        }
        for (j, template) in zone.templates.iter().enumerate() {
            template
                .compile(&zone.name.0)
                .map_err(|e| (field("templates").item(j).join(&e.field), e.message))?;
        }
        for (j, rule) in zone.rewrite.iter().enumerate() {
            rule.compile()
                .map_err(|e| (field("rewrite").item(j).join(&e.field), e.message))?;
        }
        if zone.autopath {
            self.validate_autopath(i)
                .map_err(|message| (field("autopath"), message))?;
        }
        Ok(())
    }

    /// An autopath zone needs the pod watch and must be the zone that `NS.svc.CLUSTER_DOMAIN`
    /// names are routed to, or its pods' first search domain would never reach it.
    fn validate_autopath(&self, i: usize) -> Result<(), String> {
        let zone = &self.zones[i].name.0;
        let domain = &self.kubernetes.cluster_domain.0;
        if !self.kubernetes.enabled {
            return Err("needs kubernetes.enabled: true (autopath finds clients' pods)".into());
        }
        if !domain.is_subdomain_of(zone) {
            return Err(format!(
                "zone {zone} does not contain kubernetes.cluster_domain {domain}"
            ));
        }
        let closer = self.zones.iter().find(|z| {
            z.name.0 != *zone && domain.is_subdomain_of(&z.name.0) && z.name.0.is_subdomain_of(zone)
        });
        match closer {
            Some(z) => Err(format!(
                "zone {} is more specific for {domain}: put autopath there",
                z.name.0
            )),
            None => Ok(()),
        }
    }

    /// Builds the TLS client of each `transport: tls` zone, reading its files; a `tls:`
    /// section elsewhere would be silently unused, so it is an error.
    fn load_tls(&mut self) -> Result<(), Invalid> {
        for (i, zone) in self.zones.iter_mut().enumerate() {
            let tls = FieldPath::zone(i).key("tls");
            if zone.transport != Transport::Tls {
                if zone.tls.is_some() {
                    return Err((tls, "only read with transport: tls".into()));
                }
                continue;
            }
            zone.tls
                .get_or_insert_default()
                .load()
                .map_err(|(key, message)| (tls.key(key), message))?;
        }
        Ok(())
    }

    /// Gives upstreams written without a port their transport's: 853 for DNS over TLS
    /// (RFC 7858), else 53.
    fn default_ports(&mut self) {
        for zone in &mut self.zones {
            let port = zone.transport.default_port();
            for upstream in &mut zone.upstreams {
                if let UpstreamAddr::Addr(addr) = upstream
                    && addr.port() == 0
                {
                    addr.set_port(port);
                }
            }
        }
    }

    /// Reads the search domains of `resolv_conf` when a zone has autopath.
    fn read_host_search(&mut self) -> Result<(), Invalid> {
        if !self.zones.iter().any(|z| z.autopath) {
            return Ok(());
        }
        let path = &self.resolv_conf;
        let conf = ResolvConf::read(path).map_err(|err| {
            (
                FieldPath::top("resolv_conf"),
                format!(
                    "cannot read {} for autopath's search domains: {err}",
                    path.display()
                ),
            )
        })?;
        self.kubernetes.host_search = conf.search;
        Ok(())
    }

    /// Whether a query sent to `addr` would reach one of our own listeners (loops that go
    /// through another server are found at run time by [`crate::upstream::loop_check`]).
    fn listens_on(&self, addr: SocketAddr) -> bool {
        self.listen.iter().any(|listen| {
            *listen == addr
                || (listen.ip().is_unspecified()
                    && listen.port() == addr.port()
                    && addr.ip().is_loopback())
        })
    }

    /// Replaces every `resolv.conf` upstream by the nameservers of `resolv_conf` (port 53).
    fn expand_resolv_conf(&mut self) -> Result<(), Invalid> {
        let wanted = self
            .zones
            .iter()
            .position(|z| z.upstreams.contains(&UpstreamAddr::ResolvConf));
        let Some(first) = wanted else {
            return Ok(());
        };
        let path = &self.resolv_conf;
        let field = FieldPath::zone(first).key("upstreams");
        let conf = ResolvConf::read(path).map_err(|err| {
            (
                field.clone(),
                format!("cannot read {}: {err}", path.display()),
            )
        })?;
        if conf.nameservers.is_empty() {
            return Err((field, format!("{} names no nameserver", path.display())));
        }
        for zone in &mut self.zones {
            let port = zone.transport.default_port();
            let mut expanded = Vec::with_capacity(zone.upstreams.len());
            for upstream in zone.upstreams.drain(..) {
                match upstream {
                    UpstreamAddr::ResolvConf => expanded.extend(
                        conf.nameservers
                            .iter()
                            .map(|ip| UpstreamAddr::Addr(SocketAddr::new(*ip, port))),
                    ),
                    addr => expanded.push(addr),
                }
            }
            expanded.dedup();
            zone.upstreams = expanded;
        }
        Ok(())
    }

    /// The effective configuration as YAML, defaults filled in.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|err| format!("# cannot print: {err}\n"))
    }
}

impl Config {
    /// `workers`, with 0 meaning one per available core.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl ZoneConfig {
    /// The upstream socket addresses (after `resolv.conf` expansion).
    pub fn upstream_addrs(&self) -> Vec<SocketAddr> {
        self.upstreams
            .iter()
            .filter_map(|u| match u {
                UpstreamAddr::Addr(addr) => Some(*addr),
                UpstreamAddr::ResolvConf => None,
            })
            .collect()
    }
}

/// serde_yaml appends " at line L column C"; the line is reported separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(pos) => message[..pos].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_zones_default_to_port_853_and_check_their_files() {
        let zone = "listen: [\"127.0.0.1:53\"]\nzones:\n  - name: .\n    upstreams: [\"9.9.9.9\", \"9.9.9.10:8853\"]\n    transport: tls\n";
        let tls = |extra: &str| Config::from_yaml(&format!("{zone}{extra}"), "test.yaml");
        let config = tls(
            "    tls:\n      server_name: dns.quad9.net\n      ca_file: /etc/ssl/certs/ca-certificates.crt\n",
        );
        // The system store may be absent where this runs; the CA file then names it.
        if let Ok(config) = config {
            let addrs: Vec<String> = config.zones[0]
                .upstream_addrs()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(addrs, ["9.9.9.9:853", "9.9.9.10:8853"]);
            assert!(
                config.zones[0]
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.client.is_some())
            );
        }
        let errors = [
            (
                "    tls:\n      ca_file: /nonexistent/ca.pem\n",
                "test.yaml:7: zones[0].tls.ca_file: /nonexistent/ca.pem",
            ),
            (
                "    tls:\n      cert_file: /nonexistent/c.pem\n",
                "test.yaml:7: zones[0].tls.cert_file: needs key_file too",
            ),
            (
                "    tls:\n      server_name: \"not a name\"\n",
                "test.yaml:7: zones[0].tls.server_name",
            ),
        ];
        for (extra, want) in errors {
            let err = tls(extra).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let plain = "listen: [\"127.0.0.1:53\"]\nzones:\n  - name: .\n    upstreams: [\"9.9.9.9\"]\n    tls:\n      server_name: dns.quad9.net\n";
        let err = Config::from_yaml(plain, "test.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "test.yaml:5: zones[0].tls: only read with transport: tls"
        );
        let plain = Config::from_yaml(
            &plain.replace("    tls:\n      server_name: dns.quad9.net\n", ""),
            "t",
        )
        .unwrap();
        assert_eq!(
            plain.zones[0].upstream_addrs(),
            ["9.9.9.9:53".parse().unwrap()]
        );
    }

    fn error_of(yaml: &str) -> String {
        Config::from_yaml(yaml, "test.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_are_filled_in() {
        let config = Config::from_yaml(
            "zones:\n  - name: example\n    upstreams: [10.0.0.1]\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.listen, default_listen());
        let zone = &config.zones[0];
        assert_eq!(zone.name.0, Name::from_dotted("example.").unwrap());
        assert_eq!(zone.upstream_addrs(), vec!["10.0.0.1:53".parse().unwrap()]);
        assert_eq!(zone.transport, Transport::Udp);
        assert_eq!(zone.timeout, Duration::from_secs(2));
        assert_eq!(zone.deadline, Duration::from_secs(5));
    }

    #[test]
    fn nsid_is_one_to_253_bytes() {
        let zones = "zones:\n  - name: example\n    upstreams: [10.0.0.1]\n";
        let with = |nsid: &str| format!("server:\n  nsid: \"{nsid}\"\n{zones}");
        let config = Config::from_yaml(&with("node-a"), "t").unwrap();
        assert_eq!(config.server.nsid.as_deref(), Some("node-a"));
        assert_eq!(Config::from_yaml(zones, "t").unwrap().server.nsid, None);
        assert!(Config::from_yaml(&with(&"n".repeat(253)), "t").is_ok());
        for bad in [String::new(), "n".repeat(254)] {
            let err = error_of(&with(&bad));
            assert!(err.contains("server.nsid: must be 1 to 253 bytes"), "{err}");
        }
    }

    #[test]
    fn parse_errors_name_file_line_and_field() {
        let yaml = "listen: [\"127.0.0.1:53\"]\nzones:\n  - name: .\n    upstreams: [\"1.1.1.1\"]\n    transport: tcpx\n";
        let err = error_of(yaml);
        assert!(
            err.starts_with("test.yaml:5: zones[0].transport: unknown variant `tcpx`"),
            "{err}"
        );

        let err = error_of("zones: []\nbogus: 1\n");
        assert!(err.contains("unknown field `bogus`"), "{err}");
        assert!(err.starts_with("test.yaml:2:"), "{err}");

        let err = error_of("zones:\n  - name: .\n    upstreams: [\"nonsense\"]\n");
        assert!(
            err.starts_with("test.yaml:3: zones[0].upstreams[0]: invalid upstream"),
            "{err}"
        );

        let err =
            error_of("zones:\n  - name: .\n    upstreams: [1.1.1.1]\n    timeout: 2 parsecs\n");
        assert!(err.contains("zones[0].timeout: invalid duration"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_line_of_the_field() {
        let yaml = "zones:\n  - name: a\n    upstreams: [1.1.1.1]\n  - name: b\n    upstreams: [1.1.1.1]\n    timeout: 3s\n    deadline: 1s\n";
        assert_eq!(
            error_of(yaml),
            "test.yaml:7: zones[1].deadline: 1s is shorter than timeout 3s"
        );
        let yaml =
            "zones:\n- name: a\n  upstreams: [1.1.1.1]\n- name: A.\n  upstreams: [1.1.1.1]\n";
        assert_eq!(
            error_of(yaml),
            "test.yaml:4: zones[1].name: zone a. is also zones[0]"
        );
        assert!(error_of("zones: []\n").starts_with("test.yaml:1: zones: at least one zone"));
    }

    #[test]
    fn an_upstream_that_is_our_own_listener_is_a_loop() {
        let yaml = "listen: [\"127.0.0.1:5300\"]\nzones:\n  - name: .\n    upstreams: [\"127.0.0.1:5300\"]\n";
        assert_eq!(
            error_of(yaml),
            "test.yaml:4: zones[0].upstreams: 127.0.0.1:5300 is where this server listens: forwarding there is a loop"
        );
        let yaml =
            "listen: [\"0.0.0.0:53\"]\nzones:\n  - name: .\n    upstreams: [\"127.0.0.53\"]\n";
        assert!(error_of(yaml).contains("is where this server listens"));
        let yaml =
            "listen: [\"0.0.0.0:5300\"]\nzones:\n  - name: .\n    upstreams: [\"127.0.0.53\"]\n";
        assert!(
            Config::from_yaml(yaml, "test.yaml").is_ok(),
            "another port is no loop"
        );
        let own =
            "listen: [\"10.96.0.10:53\"]\nzones:\n  - name: .\n    upstreams: [\"10.96.0.10\"]\n";
        assert!(
            Config::from_yaml(own, "test.yaml").is_ok(),
            "a redirect in front may take it elsewhere: the loop probe decides"
        );
        let unprobed = format!("{own}server:\n  loop_check: false\n");
        assert!(error_of(&unprobed).contains("is where this server listens"));
    }

    #[test]
    fn pool_errors_name_the_nested_key_and_its_line() {
        let yaml = "zones:\n  - name: a\n    upstreams: [1.1.1.1]\n    pool:\n      max_inflight: 8\n      queue:\n        timeout: 0s\n";
        assert_eq!(
            error_of(yaml),
            "test.yaml:7: zones[0].pool.queue.timeout: must be above 0"
        );
        let yaml = "zones:\n  - name: a\n    upstreams: [1.1.1.1]\n    pool:\n      max_conns: 8\n";
        assert!(
            error_of(yaml).starts_with("test.yaml:5: zones[0].pool.max_conns: unknown field"),
            "{}",
            error_of(yaml)
        );
    }

    #[test]
    fn resolv_conf_upstreams_are_expanded() {
        let dir = std::env::temp_dir().join(format!("nldns-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.1.2.3\nnameserver ::1\n").unwrap();
        let yaml = format!(
            "resolv_conf: {}\nzones:\n  - name: .\n    upstreams: [resolv.conf, \"127.0.0.1:5353\"]\n",
            resolv.display()
        );
        let config = Config::from_yaml(&yaml, "t").unwrap();
        let addrs: Vec<String> = config.zones[0]
            .upstream_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(addrs, ["10.1.2.3:53", "[::1]:53", "127.0.0.1:5353"]);

        std::fs::write(&resolv, "search example\n").unwrap();
        let err = Config::from_yaml(&yaml, "t").unwrap_err().to_string();
        assert!(err.contains("names no nameserver"), "{err}");
    }

    #[test]
    fn node_rules_name_the_field_and_line_of_what_cannot_fail_open() {
        let zones = "zones:\n  - name: .\n    upstreams: [10.0.0.1]\n";
        let node = |listen: &str, extra: &str| {
            format!(
                "listen: [{listen}]\nnode:\n  setup_iptables: true\n  local_ips: [169.254.20.10, 10.96.0.10]\n{extra}{zones}"
            )
        };
        let err = error_of(&node("\"169.254.20.10:53\"", ""));
        assert!(
            err.starts_with("test.yaml:4: node.local_ips: nothing in listen answers 10.96.0.10:53"),
            "{err}"
        );
        let wildcard = node("\"0.0.0.0:53\"", "");
        Config::from_yaml(&wildcard, "test.yaml").expect("a wildcard listener answers them all");

        let both = "\"169.254.20.10:53\", \"10.96.0.10:53\"";
        let err = error_of(&node(both, "  fallback:\n    local_ips: [10.96.0.11]\n"));
        assert!(
            err.starts_with("test.yaml:6: node.fallback.local_ips: 10.96.0.11 is not one of"),
            "{err}"
        );
        let err = error_of(&node(both, "  fallback:\n    service: kube-dns-upstream\n"));
        assert!(
            err.starts_with(
                "test.yaml:6: node.fallback.service: \"kube-dns-upstream\" is not namespace/name"
            ),
            "{err}"
        );
        let err = error_of(&format!(
            "node:\n  local_ips: [169.254.20.10]\n  backend: nftables\n{zones}"
        ));
        assert!(
            err.starts_with(
                "test.yaml:3: node.backend: nftables is chosen but node.setup_iptables is false"
            ),
            "{err}"
        );
        let err = error_of(&node(both, "  backend: ipchains\n"));
        assert!(err.contains("node.backend"), "{err}");
    }

    #[test]
    fn autopath_needs_the_pod_watch_and_the_zone_of_the_cluster_domain() {
        let zone =
            "zones:\n  - name: cluster.local\n    upstreams: [10.0.0.1]\n    autopath: true\n";
        let err = error_of(zone);
        assert!(
            err.starts_with("test.yaml:4: zones[0].autopath: needs kubernetes.enabled"),
            "{err}"
        );
        let kube = "kubernetes:\n  enabled: true\n  node_name: node-a\n";
        let err = error_of(&format!(
            "{kube}zones:\n  - name: example\n    upstreams: [10.0.0.1]\n    autopath: true\n"
        ));
        assert!(
            err.contains("does not contain kubernetes.cluster_domain"),
            "{err}"
        );
        let err = error_of(&format!(
            "{kube}zones:\n  - name: .\n    upstreams: [10.0.0.1]\n    autopath: true\n  - name: cluster.local\n    upstreams: [10.0.0.2]\n"
        ));
        assert!(
            err.contains("zone cluster.local. is more specific"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 10.0.0.2\nsearch corp.example ec2.internal\n",
        )
        .unwrap();
        let config = Config::from_yaml(
            &format!("resolv_conf: {}\n{kube}{zone}", resolv.display()),
            "t",
        )
        .unwrap();
        assert_eq!(
            config.kubernetes.host_search,
            ["corp.example", "ec2.internal"]
        );
        assert_eq!(
            config.kubernetes.cluster_domain.0,
            Name::from_dotted("cluster.local").unwrap()
        );
        let again = Config::from_yaml(&config.to_yaml(), "printed").unwrap();
        assert_eq!(config, again);
    }

    #[test]
    fn metrics_listener_defaults_null_and_debug_guard() {
        let zone = "zones:\n  - name: .\n    upstreams: [10.0.0.1]\n";
        let config = Config::from_yaml(zone, "t").unwrap();
        assert_eq!(config.metrics, MetricsConfig::default());
        assert_eq!(config.metrics.listen, DEFAULT_METRICS_LISTEN);
        let config = Config::from_yaml(&format!("metrics:\n  listen: null\n{zone}"), "t").unwrap();
        assert_eq!(config.metrics.listen, DEFAULT_METRICS_LISTEN);
        let config = Config::from_yaml(
            &format!("metrics:\n  listen: \"[::1]:9000\"\n  debug: true\n{zone}"),
            "t",
        )
        .unwrap();
        assert!(config.metrics.debug);

        let err = error_of(&format!(
            "metrics:\n  listen: 0.0.0.0:9253\n  debug: true\n{zone}"
        ));
        assert!(
            err.starts_with("test.yaml:3: metrics.debug: the debug endpoints"),
            "{err}"
        );
        let forced = format!(
            "metrics:\n  listen: 0.0.0.0:9253\n  debug: true\n  debug_remote: true\n{zone}"
        );
        let config = Config::from_yaml(&forced, "t").unwrap();
        assert_eq!(
            Config::from_yaml(&config.to_yaml(), "printed").unwrap(),
            config
        );

        let err = error_of(&format!(
            "metrics:\n  health_listen: 127.0.0.1:9253\n{zone}"
        ));
        assert!(
            err.contains("metrics.health_listen: is metrics.listen"),
            "{err}"
        );
        let err = error_of(&format!("metrics:\n  port: 1\n{zone}"));
        assert!(err.contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn hosts_sections_default_like_coredns_and_errors_name_their_line() {
        let zone = "zones:\n  - name: .\n    upstreams: [10.0.0.1]\n    hosts:\n";
        let config = Config::from_yaml(
            &format!("{zone}      entries: [\"10.0.0.5 db.internal\"]\n      fallthrough: [example.org, in-addr.arpa]\n"),
            "t",
        )
        .unwrap();
        let hosts = config.zones[0].hosts.as_ref().unwrap();
        assert_eq!(hosts.ttl, Duration::from_secs(3600));
        assert_eq!(hosts.reload, Duration::from_secs(5));
        assert!(!hosts.no_reverse);
        assert_eq!(hosts.file, None);
        assert_eq!(
            hosts.fallthrough,
            hosts::Fallthrough::Zones(vec![
                ZoneName(Name::from_dotted("example.org").unwrap()),
                ZoneName(Name::from_dotted("in-addr.arpa").unwrap()),
            ])
        );
        assert_eq!(
            Config::from_yaml(&config.to_yaml(), "printed").unwrap(),
            config
        );
        let on = Config::from_yaml(
            &format!("{zone}      file: /etc/hosts\n      fallthrough: true\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            on.zones[0].hosts.as_ref().unwrap().fallthrough,
            hosts::Fallthrough::All
        );
        assert_eq!(Config::from_yaml(&on.to_yaml(), "printed").unwrap(), on);

        let err = error_of(&format!("{zone}      ttl: 60s\n"));
        assert_eq!(
            err,
            "test.yaml:4: zones[0].hosts: needs a file, entries, or both"
        );
        let err = error_of(&format!("{zone}      file: /etc/hosts\n      ttl: 0s\n"));
        assert!(
            err.starts_with("test.yaml:6: zones[0].hosts.ttl: must be whole seconds"),
            "{err}"
        );
        let err = error_of(&format!(
            "{zone}      file: /etc/hosts\n      fallthrough_unsupported: true\n"
        ));
        assert!(
            err.starts_with(
                "test.yaml:6: zones[0].hosts.fallthrough_unsupported: needs fallthrough"
            ),
            "{err}"
        );
        let err = error_of(&format!(
            "{zone}      file: /etc/hosts\n      fallthrough: yes\n"
        ));
        assert!(
            err.contains("zones[0].hosts.fallthrough: invalid type"),
            "{err}"
        );
        let err = error_of(&format!(
            "{zone}      file: /etc/hosts\n      fallthrough: []\n"
        ));
        assert!(err.contains("an empty list falls through nowhere"), "{err}");
        let err = error_of(&format!("{zone}      files: /etc/hosts\n"));
        assert!(
            err.contains("zones[0].hosts.files: unknown field `files`"),
            "{err}"
        );
    }

    #[test]
    fn effective_config_round_trips() {
        let config = Config::from_yaml(
            "zones:\n  - name: cluster.local\n    upstreams: [\"10.96.0.10:53\"]\n    transport: tcp\n",
            "t",
        )
        .unwrap();
        let again = Config::from_yaml(&config.to_yaml(), "printed").unwrap();
        assert_eq!(config, again);
    }
}
