//! The `node:` section: what `run`, `setup` and `teardown` do to the node's network (see
//! [`crate::node`]). Off by default, so a lab run never touches the machine.
//!
//! Its keys, their defaults and meanings are in README.md, "Configuration reference" (the
//! one list, checked against this model both ways by `tests/config_docs.rs`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{FieldPath, Invalid, duration};

/// The node network setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub setup_interface: bool,
    pub interface_name: String,
    pub local_ips: Vec<IpAddr>,
    pub setup_iptables: bool,
    pub dns_port: u16,
    pub health_port: u16,
    #[serde(with = "duration")]
    pub sync_interval: Duration,
    pub skip_teardown: bool,
    pub backend: RulesBackend,
    pub fallback: FallbackConfig,
}

/// How a local IP is listened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// A socket bound to the address itself.
    Exact,
    /// A socket bound to `0.0.0.0` or `::` (a Corefile block without `bind`).
    Wildcard,
}

/// How the rules are written into the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RulesBackend {
    /// nftables where kube-proxy's nftables tables are, else iptables where the binary is.
    #[default]
    Auto,
    Iptables,
    Nftables,
}

impl RulesBackend {
    /// The config value (`auto`, `iptables`, `nftables`).
    pub fn name(self) -> &'static str {
        match self {
            RulesBackend::Auto => "auto",
            RulesBackend::Iptables => "iptables",
            RulesBackend::Nftables => "nftables",
        }
    }
}

/// Where queries to the local IPs go while no process of ours listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// The local IPs that get the fallback DNAT; `None` means the link-local ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_ips: Option<Vec<IpAddr>>,
    /// Fixed endpoints, used as they are.
    pub endpoints: Vec<SocketAddr>,
    /// `namespace/name` of the Service whose EndpointSlices are watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl FallbackConfig {
    /// The Service as (namespace, name), when one is set and well formed.
    pub fn service(&self) -> Option<(&str, &str)> {
        let (namespace, name) = self.service.as_deref()?.split_once('/')?;
        Some((namespace, name))
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            setup_interface: false,
            interface_name: "nodelocaldns".into(),
            local_ips: Vec::new(),
            setup_iptables: false,
            dns_port: 53,
            health_port: 8080,
            sync_interval: Duration::from_secs(60),
            skip_teardown: false,
            backend: RulesBackend::Auto,
            fallback: FallbackConfig::default(),
        }
    }
}

impl NodeConfig {
    /// Whether anything is done to the node.
    pub fn enabled(&self) -> bool {
        self.setup_interface || self.setup_iptables
    }

    /// The local IPs whose queries fall back to kube-dns by DNAT while we are gone: those
    /// configured, else the link-local ones (no kube-proxy path exists for them; a ClusterIP
    /// among the local IPs falls back through kube-proxy by itself).
    pub fn fallback_ips(&self) -> Vec<IpAddr> {
        match &self.fallback.local_ips {
            Some(ips) => ips.clone(),
            None => self
                .local_ips
                .iter()
                .copied()
                .filter(is_link_local)
                .collect(),
        }
    }

    /// How `listen` answers the local IP `ip` on `dns_port`: a socket bound to it, a wildcard
    /// socket of its family, or nothing (which the rules could never divert to).
    pub fn listener_of(&self, ip: IpAddr, listen: &[SocketAddr]) -> Option<Listener> {
        let on_port = |addr: &&SocketAddr| addr.port() == self.dns_port;
        if listen.iter().filter(on_port).any(|addr| addr.ip() == ip) {
            return Some(Listener::Exact);
        }
        listen
            .iter()
            .filter(on_port)
            .any(|addr| addr.ip().is_unspecified() && addr.is_ipv6() == ip.is_ipv6())
            .then_some(Listener::Wildcard)
    }

    /// Range and consistency checks of the section at `at`.
    pub fn validate(&self, at: FieldPath) -> Result<(), Invalid> {
        let err = |key: &str, message: String| Err((at.clone().key(key), message));
        if self.enabled() && self.local_ips.is_empty() {
            return err(
                "local_ips",
                "setup_interface or setup_iptables needs at least one local IP".into(),
            );
        }
        let name = &self.interface_name;
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) || name == "." {
            return err(
                "interface_name",
                format!(
                    "{name:?} is not a Linux interface name (1-15 characters, no / : or space)"
                ),
            );
        }
        if self.sync_interval.is_zero() {
            return err("sync_interval", "must be above 0".into());
        }
        if self.dns_port == 0 || self.health_port == 0 {
            return err("dns_port", "ports must be above 0".into());
        }
        if self.backend != RulesBackend::Auto && !self.setup_iptables {
            return err(
                "backend",
                format!(
                    "{} is chosen but node.setup_iptables is false, so no rules are installed: \
                     set setup_iptables: true, or leave backend out",
                    self.backend.name()
                ),
            );
        }
        if let Some(ips) = &self.fallback.local_ips
            && let Some(ip) = ips.iter().find(|ip| !self.local_ips.contains(ip))
        {
            return err(
                "fallback.local_ips",
                format!("{ip} is not one of node.local_ips"),
            );
        }
        if let Some(service) = &self.fallback.service {
            let valid = self.fallback.service().is_some_and(|(namespace, name)| {
                !namespace.is_empty() && !name.is_empty() && !name.contains('/')
            });
            if !valid {
                return err(
                    "fallback.service",
                    format!(
                        "{service:?} is not namespace/name (e.g. kube-system/kube-dns-upstream)"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// 169.254.0.0/16 and fe80::/10: addresses no Service proxy serves.
fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_link_local(),
        IpAddr::V6(ip) => ip.is_unicast_link_local(),
    }
}
