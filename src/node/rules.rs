//! What the rules do, whichever tool writes them: the traffic they divert to us
//! ([`DivertSpec`]), the kube-dns endpoints they fall back to ([`ServiceEndpoints`]), the
//! backend that writes them ([`Backend`]: [`super::iptables`] or [`super::nftables`]) and how
//! a backend fails ([`RuleError`]).
//!
//! Fail open is the rule every backend keeps: a query for a local IP is taken away from
//! conntrack (and so from kube-proxy's DNAT) only while a socket of ours is bound to that exact
//! address and port (the `socket` match, in prerouting). With no process of ours left (a
//! SIGKILL, an OOM kill, a crash loop, a pod that cannot start), the same query is tracked
//! again: for the kube-dns ClusterIP it takes kube-proxy's path to kube-dns, and for a
//! link-local IP (which no proxy serves) our fallback DNAT sends it to the kube-dns endpoints.
//! While we listen, the fallback never fires: untracked packets skip every NAT chain.
//!
//! What the `socket` match cannot see is the node's own traffic: locally sent packets meet the
//! output hook, where the match finds the sender's socket, not a listener. The output rules are
//! node-cache's (always NOTRACK), so the node's own processes and hostNetwork pods that ask the
//! local IPs lose DNS while no process of ours runs (docs/design.md, "Fail open").

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output, Stdio};

use thiserror::Error;

use crate::config::node::{Listener, NodeConfig, RulesBackend};

/// The traffic our rules divert: DNS (UDP and TCP) and kubelet's health probe on each local IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DivertSpec {
    pub local_ips: Vec<IpAddr>,
    pub dns_port: u16,
    pub health_port: u16,
    /// The local IPs with no kube-proxy path behind them: DNATed to kube-dns while we are gone.
    pub fallback_ips: Vec<IpAddr>,
    /// The local IPs we answer on a wildcard socket (`0.0.0.0:53`, a Corefile block without
    /// `bind`): their rules match any socket on the port, not only one bound to the address.
    pub wildcard_ips: Vec<IpAddr>,
}

impl DivertSpec {
    /// The rules for `config`, answered by sockets bound to each local IP.
    pub fn from_config(config: &NodeConfig) -> DivertSpec {
        DivertSpec {
            local_ips: config.local_ips.clone(),
            dns_port: config.dns_port,
            health_port: config.health_port,
            fallback_ips: config.fallback_ips(),
            wildcard_ips: Vec::new(),
        }
    }

    /// The rules for `config` answered on `listen`: a local IP answered only by a wildcard
    /// socket is matched by any socket on the port.
    pub fn for_listeners(config: &NodeConfig, listen: &[SocketAddr]) -> DivertSpec {
        let wildcard_ips = config
            .local_ips
            .iter()
            .copied()
            .filter(|&ip| config.listener_of(ip, listen) == Some(Listener::Wildcard))
            .collect();
        DivertSpec {
            wildcard_ips,
            ..DivertSpec::from_config(config)
        }
    }

    /// Whether a query to a fallback IP has somewhere to go while we are gone.
    pub fn fallback_armed(&self, endpoints: &ServiceEndpoints) -> bool {
        !self.fallback_ips.is_empty() && !endpoints.is_empty()
    }

    /// Whether `ip`'s rules need a socket bound to the address itself.
    pub fn exact(&self, ip: IpAddr) -> bool {
        !self.wildcard_ips.contains(&ip)
    }
}

/// The DNS endpoints of one Service: ready endpoints' addresses with the Service's UDP and TCP
/// DNS ports. What the fallback DNAT sends queries to while no process of ours listens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
}

impl ServiceEndpoints {
    /// Fixed endpoints (`node.fallback.endpoints`): each serves both transports.
    pub fn fixed(endpoints: &[SocketAddr]) -> ServiceEndpoints {
        ServiceEndpoints {
            udp: endpoints.to_vec(),
            tcp: endpoints.to_vec(),
        }
    }

    /// Both lists empty: the fallback is not armed.
    pub fn is_empty(&self) -> bool {
        self.udp.is_empty() && self.tcp.is_empty()
    }

    /// The endpoints of one transport and address family, for the rules of that family.
    pub fn of(&self, proto: L4, ipv6: bool) -> Vec<SocketAddr> {
        let list = match proto {
            L4::Udp => &self.udp,
            L4::Tcp => &self.tcp,
        };
        list.iter()
            .copied()
            .filter(|e| e.is_ipv6() == ipv6)
            .collect()
    }
}

/// A transport the rules match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub const BOTH: [L4; 2] = [L4::Tcp, L4::Udp];

    pub fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// The tool that writes the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// node-cache's rules through the image's `iptables`/`ip6tables`.
    Iptables,
    /// One table of our own through `nft`, replaced in one transaction.
    Nftables,
}

impl Backend {
    /// The metric label and the config value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }

    /// The backend a config asks for. `auto` follows the node: nftables when kube-proxy runs in
    /// nftables mode (its `kube-proxy` tables exist), else iptables where the binary is, else
    /// nftables. A backend whose tool is not installed is an error saying what to use instead.
    pub fn choose(config: RulesBackend) -> Result<Backend, RuleError> {
        let has_iptables = Backend::Iptables.is_installed();
        let has_nft = Backend::Nftables.is_installed();
        let missing = |tool: &'static str, instead: &str| RuleError {
            kind: RuleErrorKind::Missing,
            tool,
            action: "start",
            target: "node.backend".into(),
            message: format!("{tool} is not installed: {instead}"),
        };
        match config {
            RulesBackend::Iptables if has_iptables => Ok(Backend::Iptables),
            RulesBackend::Iptables => Err(missing(
                "iptables",
                "use the project's image (it ships iptables and nft), or node.backend: nftables",
            )),
            RulesBackend::Nftables if has_nft => Ok(Backend::Nftables),
            RulesBackend::Nftables => Err(missing(
                "nft",
                "use the project's image (it ships iptables and nft), or node.backend: iptables",
            )),
            RulesBackend::Auto if has_nft && kube_proxy_uses_nftables() => Ok(Backend::Nftables),
            RulesBackend::Auto if has_iptables => Ok(Backend::Iptables),
            RulesBackend::Auto if has_nft => Ok(Backend::Nftables),
            RulesBackend::Auto => Err(missing(
                "iptables",
                "nor is nft: use the project's image, which ships both",
            )),
        }
    }

    /// Whether this backend's tool is installed.
    pub fn is_installed(self) -> bool {
        installed(self.tool())
    }

    fn tool(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nft",
        }
    }

    /// The other backend, whose leftovers a start removes (a config that changed backend).
    pub fn other(self) -> Backend {
        match self {
            Backend::Iptables => Backend::Nftables,
            Backend::Nftables => Backend::Iptables,
        }
    }
}

/// Whether `tool` runs at all (on PATH and executable).
fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `command` with `input`, if any, on its stdin, and its stdout and stderr captured. A tool
/// that exits before reading all of it answers with its exit status, not a broken pipe.
pub(super) fn run_with_input(
    command: &mut Command,
    input: Option<&str>,
) -> std::io::Result<Output> {
    let stdin = match input {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    };
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        match stdin.write_all(input.as_bytes()) {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err);
            }
            _ => {}
        }
        // Dropped here: the tool reads its end of input.
    }
    child.wait_with_output()
}

/// kube-proxy's nftables mode keeps its rules in tables named `kube-proxy`.
fn kube_proxy_uses_nftables() -> bool {
    Command::new("nft")
        .args(["list", "tables"])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.trim().ends_with(" kube-proxy"))
        })
}

/// Why a backend command failed; the kind decides the `errortype` of the setup error metric and
/// whether a start may go on without the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleErrorKind {
    /// Another program held the xtables lock longer than 5 s (`iptables_lock`).
    Lock,
    /// The tool, or a kernel feature the rules need, is not there: retrying cannot help, and
    /// a start fails with what to use instead.
    Missing,
    /// Anything else (`iptables`).
    Other,
}

/// A backend command that failed: the tool, what it did, to what, and what to do.
#[derive(Debug, Clone, Error)]
#[error("{tool} {action} {target}: {message}")]
pub struct RuleError {
    pub kind: RuleErrorKind,
    pub tool: &'static str,
    pub action: &'static str,
    pub target: String,
    pub message: String,
}

/// A rule or a command shown to a person: words joined by spaces, quoted where they hold one.
pub fn shell_words<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(|word| {
            if word.contains([' ', '"', '\'']) {
                format!("\"{}\"", word.replace('"', "\\\""))
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_ips_default_to_the_link_local_local_ips() {
        let config = NodeConfig {
            local_ips: vec![
                "169.254.20.10".parse().unwrap(),
                "10.96.0.10".parse().unwrap(),
                "fe80::10".parse().unwrap(),
            ],
            ..NodeConfig::default()
        };
        let spec = DivertSpec::from_config(&config);
        assert_eq!(
            spec.fallback_ips,
            vec![
                "169.254.20.10".parse::<IpAddr>().unwrap(),
                "fe80::10".parse().unwrap()
            ]
        );
    }

    #[test]
    fn endpoints_are_split_by_transport_and_family() {
        let endpoints = ServiceEndpoints {
            udp: vec![
                "10.244.1.2:53".parse().unwrap(),
                "[fd00::2]:53".parse().unwrap(),
            ],
            tcp: vec!["10.244.1.3:5353".parse().unwrap()],
        };
        assert_eq!(
            endpoints.of(L4::Udp, false),
            vec!["10.244.1.2:53".parse().unwrap()]
        );
        assert_eq!(
            endpoints.of(L4::Udp, true),
            vec!["[fd00::2]:53".parse().unwrap()]
        );
        assert!(endpoints.of(L4::Tcp, true).is_empty());
    }

    #[test]
    fn shell_words_quote_what_holds_a_space() {
        assert_eq!(
            shell_words(["-m", "comment", "--comment", "a b"]),
            "-m comment --comment \"a b\""
        );
    }
}
