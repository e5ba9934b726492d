//! node-cache's command line, so the stock DaemonSet's args work unchanged:
//! `nodelocal-dns -localip 169.254.20.10,10.96.0.10 -conf /etc/Corefile -upstreamsvc kube-dns-upstream`.
//!
//! Flags follow Go's `flag` package: one or two dashes, `-flag value` or `-flag=value`, boolean
//! flags as `-flag` or `-flag=false`, parsing stops at the first non-flag word (which is then an
//! error, as in node-cache). Defaults are node-cache's:
//!
//! | flag | default | becomes |
//! |---|---|---|
//! | `-localip` | required | `node.local_ips`, `__PILLAR__LOCAL__DNS__` |
//! | `-setupinterface` | `true` | `node.setup_interface` |
//! | `-interfacename` | `nodelocaldns` | `node.interface_name` |
//! | `-setupiptables` | `true` | `node.setup_iptables` |
//! | `-rulesbackend` | `auto` | `node.backend` (`auto`, `iptables`, `nftables`; ours, not node-cache's) |
//! | `-syncinterval` | `60` | `node.sync_interval` (integer seconds, or a duration such as `30s`) |
//! | `-skipteardown` | `false` | `node.skip_teardown` |
//! | `-health-port` | `8080` | `node.health_port` |
//! | `-basecorefile` | `/etc/coredns/Corefile.base` | the template rendered ([`super::render()`]) |
//! | `-corefile`, `-conf` | `/etc/Corefile` | where the rendered Corefile is written (for people who read it) |
//! | `-kubednscm` | `/etc/kube-dns` when it exists | the kube-dns ConfigMap directory |
//! | `-upstreamsvc` | `kube-dns` | `$<SVC>_SERVICE_HOST` is `__PILLAR__CLUSTER__DNS__`; `node.fallback.service` is `kube-system/<SVC>` |
//! | `-metrics-listen-address` | `0.0.0.0:9353` | node-cache's own `/metrics` (setup errors) |
//! | `-prometheus-listen-address` | `:9253` | `__PROMETHEUS__ENDPOINT__` |
//! | `-dns.port`, `-p` | `53` | port of blocks that name none, `node.dns_port` |
//! | `-pidfile` | none | written once the listeners are up, removed on exit |
//! | `-reloadwithsignal`, `-quiet`, `-plugins`, `-version` | | accepted; `-version` prints ours |

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::{self as corefile, CorefileError, KubeDnsConfig, RenderParams, TranslateOptions};
use crate::config::Config;
use crate::config::node::RulesBackend;

/// The kube-dns ConfigMap mount node-cache uses when `-kubednscm` is empty.
const DEFAULT_KUBE_DNS_DIR: &str = "/etc/kube-dns";

/// A node-cache command line that cannot be used.
#[derive(Debug, Error)]
pub enum NodeCacheError {
    /// Go's `flag` wording, so scripts that grep node-cache's messages still match.
    #[error("{0}")]
    Flag(String),
    #[error(transparent)]
    Corefile(#[from] CorefileError),
}

/// node-cache's flags, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCacheArgs {
    pub local_ip: String,
    pub setup_interface: bool,
    pub interface_name: String,
    pub setup_iptables: bool,
    pub rules_backend: RulesBackend,
    pub sync_interval: Duration,
    pub skip_teardown: bool,
    pub health_port: u16,
    pub base_corefile: PathBuf,
    pub corefile: PathBuf,
    pub kube_dns_cm: Option<PathBuf>,
    pub upstream_svc: String,
    pub metrics_listen_address: String,
    pub prometheus_listen_address: String,
    pub dns_port: u16,
    pub pidfile: Option<PathBuf>,
    pub reload_with_signal: bool,
    pub quiet: bool,
    pub version: bool,
}

impl Default for NodeCacheArgs {
    fn default() -> Self {
        NodeCacheArgs {
            local_ip: String::new(),
            setup_interface: true,
            interface_name: "nodelocaldns".into(),
            setup_iptables: true,
            rules_backend: RulesBackend::Auto,
            sync_interval: Duration::from_secs(60),
            skip_teardown: false,
            health_port: 8080,
            base_corefile: PathBuf::from("/etc/coredns/Corefile.base"),
            corefile: PathBuf::from("/etc/Corefile"),
            kube_dns_cm: None,
            upstream_svc: "kube-dns".into(),
            metrics_listen_address: "0.0.0.0:9353".into(),
            prometheus_listen_address: ":9253".into(),
            dns_port: 53,
            pidfile: None,
            reload_with_signal: false,
            quiet: false,
            version: false,
        }
    }
}

/// Flag names node-cache (and the CoreDNS inside it) define, without dashes.
const BOOL_FLAGS: &[&str] = &[
    "setupinterface",
    "setupiptables",
    "skipteardown",
    "reloadwithsignal",
    "quiet",
    "version",
    "plugins",
];
const VALUE_FLAGS: &[&str] = &[
    "localip",
    "interfacename",
    "rulesbackend",
    "syncinterval",
    "health-port",
    "basecorefile",
    "corefile",
    "conf",
    "kubednscm",
    "upstreamsvc",
    "metrics-listen-address",
    "prometheus-listen-address",
    "dns.port",
    "p",
    "pidfile",
];

/// `-rulesbackend`: `auto`, `iptables` or `nftables`.
fn parse_backend(value: &str) -> Result<RulesBackend, NodeCacheError> {
    match value {
        "auto" => Ok(RulesBackend::Auto),
        "iptables" => Ok(RulesBackend::Iptables),
        "nftables" => Ok(RulesBackend::Nftables),
        _ => Err(NodeCacheError::Flag(format!(
            "invalid value {value:?} for flag -rulesbackend: auto, iptables or nftables"
        ))),
    }
}

/// The flag name of a `-name[=value]` word, if it is a flag at all.
fn flag_name(word: &str) -> Option<&str> {
    let rest = word.strip_prefix("--").or_else(|| word.strip_prefix('-'))?;
    let name = rest.split_once('=').map_or(rest, |(n, _)| n);
    (!name.is_empty() && !name.starts_with('-')).then_some(name)
}

/// Whether a command line is node-cache's rather than ours: its first word is one of
/// node-cache's flags (our own CLI starts with a subcommand, `--help` or `--version`).
pub fn is_node_cache_command_line(args: &[String]) -> bool {
    args.first()
        .and_then(|w| flag_name(w))
        .is_some_and(|name| BOOL_FLAGS.contains(&name) || VALUE_FLAGS.contains(&name))
}

fn parse_bool(name: &str, value: &str) -> Result<bool, NodeCacheError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(NodeCacheError::Flag(format!(
            "invalid boolean value {value:?} for -{name}: parse error"
        ))),
    }
}

fn parse_port(name: &str, value: &str) -> Result<u16, NodeCacheError> {
    value.parse().map_err(|_| {
        NodeCacheError::Flag(format!(
            "invalid value {value:?} for flag -{name}: want a port number"
        ))
    })
}

impl NodeCacheArgs {
    /// Parses the words after the program name the way Go's `flag` package does.
    pub fn parse(args: &[String]) -> Result<NodeCacheArgs, NodeCacheError> {
        let mut parsed = NodeCacheArgs::default();
        let mut i = 0;
        while i < args.len() {
            let word = &args[i];
            i += 1;
            if word == "--" {
                break;
            }
            let Some(name) = flag_name(word) else {
                i -= 1;
                break;
            };
            let inline = word.split_once('=').map(|(_, v)| v.to_string());
            if BOOL_FLAGS.contains(&name) {
                let value = match &inline {
                    Some(v) => parse_bool(name, v)?,
                    None => true,
                };
                match name {
                    "setupinterface" => parsed.setup_interface = value,
                    "setupiptables" => parsed.setup_iptables = value,
                    "skipteardown" => parsed.skip_teardown = value,
                    "reloadwithsignal" => parsed.reload_with_signal = value,
                    "quiet" => parsed.quiet = value,
                    "version" => parsed.version = value,
                    _ => {} // -plugins: CoreDNS lists its plugins; nothing to list here
                }
                continue;
            }
            if !VALUE_FLAGS.contains(&name) {
                return Err(NodeCacheError::Flag(format!(
                    "flag provided but not defined: -{name}"
                )));
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = args.get(i).ok_or_else(|| {
                        NodeCacheError::Flag(format!("flag needs an argument: -{name}"))
                    })?;
                    i += 1;
                    v.clone()
                }
            };
            match name {
                "localip" => parsed.local_ip = value,
                "interfacename" => parsed.interface_name = value,
                "rulesbackend" => parsed.rules_backend = parse_backend(&value)?,
                "syncinterval" => parsed.sync_interval = parse_sync_interval(&value)?,
                "health-port" => parsed.health_port = parse_port(name, &value)?,
                "basecorefile" => parsed.base_corefile = value.into(),
                "corefile" | "conf" => parsed.corefile = value.into(),
                "kubednscm" => {
                    parsed.kube_dns_cm =
                        Some(value.into()).filter(|p: &PathBuf| !p.as_os_str().is_empty())
                }
                "upstreamsvc" => parsed.upstream_svc = value,
                "metrics-listen-address" => parsed.metrics_listen_address = value,
                "prometheus-listen-address" => parsed.prometheus_listen_address = value,
                "dns.port" | "p" => parsed.dns_port = parse_port("dns.port", &value)?,
                "pidfile" => parsed.pidfile = Some(value.into()),
                _ => unreachable!("every VALUE_FLAGS name is matched above"),
            }
        }
        if i < args.len() {
            return Err(NodeCacheError::Flag(format!(
                "extra command line arguments: {:?}",
                &args[i..]
            )));
        }
        Ok(parsed)
    }

    /// `-localip`: every IP must parse. Unlike node-cache, IPv4 and IPv6 may be mixed: one
    /// process serves both families.
    pub fn local_ips(&self) -> Result<Vec<IpAddr>, NodeCacheError> {
        if self.local_ip.is_empty() {
            return Err(NodeCacheError::Flag(format!(
                "invalid localip specified - {:?}",
                self.local_ip
            )));
        }
        let mut ips = Vec::new();
        for word in self.local_ip.split(',') {
            let ip: IpAddr = word.trim().parse().map_err(|_| {
                NodeCacheError::Flag(format!("invalid localip specified - {word:?}"))
            })?;
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        Ok(ips)
    }

    /// The kube-dns ConfigMap directory: `-kubednscm`, else `/etc/kube-dns` when it exists.
    pub fn kube_dns_dir(&self) -> Option<PathBuf> {
        self.kube_dns_cm.clone().or_else(|| {
            let default = Path::new(DEFAULT_KUBE_DNS_DIR);
            default.is_dir().then(|| default.to_path_buf())
        })
    }

    /// Renders the template, writes the rendered Corefile to `-conf` (best effort, as node-cache
    /// does, for people who read it there), and translates it into a native config with the
    /// `node:` section from the flags. Without a template file, `-conf` is the Corefile, as
    /// written (the layout kubespray and RKE1 launch with).
    /// `write_rendered: false` only prints (for `nodelocal-dns translate`).
    pub fn to_config(&self, write_rendered: bool) -> Result<NodeCacheConfig, NodeCacheError> {
        let local_ips = self.local_ips()?;
        let mut warnings = Vec::new();
        let kube_dns = match self.kube_dns_dir() {
            None => KubeDnsConfig::default(),
            // node-cache keeps going without stub domains when the ConfigMap is bad.
            Some(dir) => KubeDnsConfig::read_dir(&dir).unwrap_or_else(|err| {
                warnings.push(format!("{err}; stub domains and upstream servers ignored"));
                KubeDnsConfig::default()
            }),
        };
        let env = corefile::service_host_env(&self.upstream_svc);
        let cluster_dns = std::env::var(&env)
            .ok()
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        let (rendered, source) = match std::fs::read_to_string(&self.base_corefile) {
            Ok(template) => {
                let rendered = corefile::render(
                    &template,
                    &RenderParams {
                        local_ips: local_ips.clone(),
                        cluster_dns,
                        cluster_dns_env: env,
                        prometheus_endpoint: self.prometheus_listen_address.clone(),
                        dns_port: self.dns_port,
                        kube_dns,
                    },
                )?;
                if write_rendered && let Err(err) = std::fs::write(&self.corefile, &rendered) {
                    warnings.push(format!(
                        "cannot write the rendered Corefile to {}: {err} (it is only written for \
                         reading)",
                        self.corefile.display()
                    ));
                }
                let source = format!(
                    "{} (rendered from {})",
                    self.corefile.display(),
                    self.base_corefile.display()
                );
                (rendered, source)
            }
            // kubespray's default layout and RKE1's: the installer renders the Corefile itself
            // and mounts it at `-conf`, with no template. node-cache logs the missing base and
            // CoreDNS serves `-conf` as written; so do we.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let file = self.corefile.display().to_string();
                let written = std::fs::read_to_string(&self.corefile).map_err(|error| {
                    CorefileError::Read {
                        file: file.clone(),
                        error,
                    }
                })?;
                warnings.push(format!(
                    "{} is missing: serving {file} as written (the installer rendered it), as \
                     node-cache does",
                    self.base_corefile.display()
                ));
                (written, file)
            }
            Err(error) => {
                let file = self.base_corefile.display().to_string();
                return Err(CorefileError::Read { file, error }.into());
            }
        };
        let mut translation = corefile::translate(
            &rendered,
            &source,
            &TranslateOptions {
                default_port: self.dns_port,
                // CoreDNS reads `-conf`, and a relative import from beside it.
                import_dir: self
                    .corefile
                    .parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            },
        )?;
        let node = &mut translation.portable.node;
        node.setup_interface = self.setup_interface;
        node.setup_iptables = self.setup_iptables;
        node.interface_name = self.interface_name.clone();
        node.local_ips = local_ips;
        node.dns_port = self.dns_port;
        node.health_port = self.health_port;
        node.sync_interval = self.sync_interval;
        node.skip_teardown = self.skip_teardown;
        node.backend = self.rules_backend;
        // The Service whose endpoints node-cache forwards cluster.local to is kube-dns's: the
        // place to send queries while no process of ours runs.
        node.fallback.service = Some(format!("kube-system/{}", self.upstream_svc));
        // The same checks a native file gets, now with the node section filled in.
        let config = Config::from_yaml(&translation.portable.to_yaml(), &source)
            .map_err(|error| translation.origins.error(error))?;
        translation.config = config;
        translation.warnings.extend(warnings);
        Ok(NodeCacheConfig {
            translation,
            rendered,
        })
    }
}

/// What a node-cache command line amounts to.
#[derive(Debug, Clone)]
pub struct NodeCacheConfig {
    pub translation: corefile::Translation,
    /// The rendered Corefile text.
    pub rendered: String,
}

/// node-cache's `-syncinterval` is a Go duration multiplied by a second, so in practice an
/// integer; we take that, and also a duration with a unit (`30s`), which node-cache meant.
fn parse_sync_interval(value: &str) -> Result<Duration, NodeCacheError> {
    let parsed = match value.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(value).map_err(|_| ()),
    };
    parsed.ok().filter(|d| !d.is_zero()).ok_or_else(|| {
        NodeCacheError::Flag(format!(
            "invalid value {value:?} for flag -syncinterval: want seconds, like 60"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn stock_daemonset_args_parse() {
        let parsed = NodeCacheArgs::parse(&args(&[
            "-localip",
            "169.254.20.10,10.96.0.10",
            "-conf",
            "/etc/Corefile",
            "-upstreamsvc",
            "kube-dns-upstream",
            "-pidfile",
            "/tmp/node-cache.pid",
        ]))
        .unwrap();
        assert_eq!(parsed.local_ip, "169.254.20.10,10.96.0.10");
        assert_eq!(parsed.upstream_svc, "kube-dns-upstream");
        assert_eq!(parsed.pidfile, Some(PathBuf::from("/tmp/node-cache.pid")));
        assert!(parsed.setup_interface && parsed.setup_iptables && !parsed.skip_teardown);
        assert_eq!(parsed.local_ips().unwrap().len(), 2);
    }

    #[test]
    fn go_flag_syntax() {
        let parsed = NodeCacheArgs::parse(&args(&[
            "--setupiptables=false",
            "-skipteardown",
            "-dns.port=5353",
            "-syncinterval",
            "30",
            "-health-port=8081",
        ]))
        .unwrap();
        assert!(!parsed.setup_iptables);
        assert!(parsed.skip_teardown);
        assert_eq!(parsed.dns_port, 5353);
        assert_eq!(parsed.sync_interval, Duration::from_secs(30));
        assert_eq!(parsed.health_port, 8081);

        let err = |w: &[&str]| NodeCacheArgs::parse(&args(w)).unwrap_err().to_string();
        assert_eq!(err(&["-bogus"]), "flag provided but not defined: -bogus");
        assert_eq!(err(&["-localip"]), "flag needs an argument: -localip");
        assert!(err(&["-setupiptables", "false"]).starts_with("extra command line arguments"));
        assert!(err(&["-dns.port", "dns"]).contains("-dns.port"));
    }

    #[test]
    fn rulesbackend_chooses_how_the_rules_are_written() {
        let parsed = NodeCacheArgs::parse(&args(&["-rulesbackend=nftables"])).unwrap();
        assert_eq!(parsed.rules_backend, RulesBackend::Nftables);
        assert_eq!(
            NodeCacheArgs::parse(&args(&[])).unwrap().rules_backend,
            RulesBackend::Auto
        );
        let err = NodeCacheArgs::parse(&args(&["-rulesbackend", "ipchains"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("auto, iptables or nftables"), "{err}");
    }

    #[test]
    fn localip_is_validated_and_may_mix_families() {
        let local = |v: &str| {
            NodeCacheArgs {
                local_ip: v.into(),
                ..NodeCacheArgs::default()
            }
            .local_ips()
            .map_err(|e| e.to_string())
        };
        assert_eq!(local("").unwrap_err(), "invalid localip specified - \"\"");
        assert_eq!(
            local("1.2.3").unwrap_err(),
            "invalid localip specified - \"1.2.3\""
        );
        // node-cache refuses a mix of families; one process of ours serves both.
        assert_eq!(local("169.254.20.10,fd00::10").unwrap().len(), 2);
        assert_eq!(local("fe80:169:254::1,fd00:1:2:3::5").unwrap().len(), 2);
    }

    #[test]
    fn node_cache_command_lines_are_recognised() {
        assert!(is_node_cache_command_line(&args(&["-localip", "1.2.3.4"])));
        assert!(is_node_cache_command_line(&args(&["--conf=/etc/Corefile"])));
        assert!(!is_node_cache_command_line(&args(&["run"])));
        assert!(!is_node_cache_command_line(&args(&["--help"])));
        assert!(!is_node_cache_command_line(&args(&["-V"])));
    }
}
