//! The `node:` section: what `run`, `setup` and `teardown` do to the node's network (see
//! [`crate::node`]). Off by default, so a lab run never touches the machine.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `node.setup_interface` | `false` | ensure the link `interface_name` (kind dummy) holds `local_ips` |
//! | `node.interface_name` | `nodelocaldns` | the link; an existing link of any kind is used as it is (never deleted) |
//! | `node.local_ips` | `[]` | addresses added to the link (/32, /128) and matched by the rules; IPv4 and IPv6 together (iptables and ip6tables rules per family; node-cache needs a process per family) |
//! | `node.setup_iptables` | `false` | install node-cache's 12 NOTRACK/ACCEPT rules per local IP once the listeners are up |
//! | `node.dns_port` | `53` | the DNS port of the rules |
//! | `node.health_port` | `8080` | the health port of the rules (kubelet's liveness probe) |
//! | `node.sync_interval` | `60s` | how often the link and the rules are checked and restored |
//! | `node.skip_teardown` | `false` | leave the rules and the link in place on exit (two instances on one node) |

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

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
        }
    }
}

impl NodeConfig {
    /// Whether anything is done to the node.
    pub fn enabled(&self) -> bool {
        self.setup_interface || self.setup_iptables
    }

    /// Range and consistency checks. Returns (field under `node.`, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, message: String| Err((format!("node.{key}"), message));
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
        Ok(())
    }
}
