//! The first stage after the command line: node-cache's Corefile template, with its
//! `__PILLAR__` variables filled from the `kube-dns` ConfigMap directory, `-localip` and the
//! upstream Service's address, as node-cache's `updateCorefile` does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use super::CorefileError;
use super::target::{ForwardTarget, parse_forward_target};
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
            plain_nameserver(server).map_err(|m| format!("upstreamNameservers: {m}"))?;
        }
        for (domain, servers) in &self.stub_domains {
            Name::from_dotted(domain)
                .map_err(|err| format!("stubDomains: invalid domain {domain:?}: {err}"))?;
            if servers.is_empty() {
                return Err(format!("stubDomains: {domain} has no nameserver"));
            }
            for server in servers {
                plain_nameserver(server).map_err(|m| format!("stubDomains[{domain}]: {m}"))?;
            }
        }
        Ok(())
    }
}

/// A kube-dns ConfigMap nameserver: plain DNS only, as node-cache's own check allows (a
/// `tls://` word is a Corefile `forward` form, not a kube-dns one).
fn plain_nameserver(server: &str) -> Result<(), String> {
    match parse_forward_target(server)? {
        ForwardTarget::Tls { .. } => Err(format!("{server}: not a plain DNS nameserver")),
        ForwardTarget::Addr(_) | ForwardTarget::ResolvConf(_) => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A kube-dns ConfigMap names plain nameservers; `tls://` is refused there as node-cache
    /// refuses it, though a Corefile's `forward` takes it.
    #[test]
    fn kube_dns_nameservers_are_plain_dns() {
        let config = |server: &str| KubeDnsConfig {
            stub_domains: BTreeMap::from([("acme.local".to_string(), vec![server.to_string()])]),
            upstream_nameservers: vec![],
        };
        assert_eq!(config("10.0.0.1:5353").validate(), Ok(()));
        let err = config("tls://10.0.0.1").validate().unwrap_err();
        assert!(
            err.starts_with("stubDomains[acme.local]: tls://10.0.0.1: not a plain"),
            "{err}"
        );
    }
}
