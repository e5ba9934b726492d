//! What the node cache does to its node: the link holding the local IPs ([`interface`]) and
//! node-cache's NOTRACK/ACCEPT rules ([`rules`]), ensured at start, re-checked every
//! `node.sync_interval`, and removed on exit.
//!
//! Order, as node-cache: the link first (the listeners need the local IPs to bind), the rules
//! only once the listeners are up (they steer traffic to us; a process that failed to bind must
//! not black-hole DNS), teardown rules first and then the link. Teardown removes our rules (all
//! copies, matched by their full spec and comment), the configured local IPs, and the link when
//! it is a dummy left without addresses; a link with other addresses (`lo`, a veth) keeps them
//! and stays.
//!
//! What a killed instance left is adopted, not duplicated: a start finds the rules (checked
//! before each insert) and the address in place and adds no second copy, and its teardown
//! removes them as its own. The local IPs are ours by config, whoever added them, as the
//! `nodelocaldns` link is node-cache's: that is what lets the next instance, or
//! `nodelocal-dns teardown`, clean up after a SIGKILL or an OOM kill.
//!
//! Config keys: [`crate::config::node`]. Metrics: `nodelocaldns_node_rules_restored_total`
//! (anything a periodic sync found missing and put back) and
//! `coredns_nodecache_setup_errors_total{errortype}` with node-cache's labels.

pub mod interface;
pub mod rules;

use std::sync::Arc;

use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::node::NodeConfig;
use crate::observe::Metrics;
use interface::{InterfaceError, Link, Links};
use rules::{Iptables, Rule, RuleError, RuleErrorKind};

/// A node setup step that failed.
#[derive(Debug, Error)]
pub enum NodeError {
    /// Creating the link or adding an address.
    #[error(transparent)]
    InterfaceAdd(InterfaceError),
    /// Looking the link up, or removing it.
    #[error(transparent)]
    InterfaceCheck(InterfaceError),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("node setup task failed: {0}")]
    Task(String),
}

impl NodeError {
    /// The metric label node-cache uses for this failure: one of
    /// [`crate::observe::metrics::SETUP_ERROR_TYPES`].
    pub fn errortype(&self) -> &'static str {
        match self {
            NodeError::InterfaceAdd(_) => "interface_add",
            NodeError::InterfaceCheck(_) | NodeError::Task(_) => "interface_check",
            NodeError::Rule(err) if err.kind == RuleErrorKind::Lock => "iptables_lock",
            NodeError::Rule(_) => "iptables",
        }
    }
}

/// The node's link and rules as this process manages them.
pub struct NodeSetup {
    config: NodeConfig,
    links: Option<Links>,
    rules: Vec<Rule>,
    metrics: Option<Arc<Metrics>>,
}

/// Runs a blocking iptables call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Task(e.to_string()))
}

impl NodeSetup {
    /// Prepares the setup (opens netlink when the interface is managed); changes nothing yet.
    pub fn new(config: &NodeConfig, metrics: Option<Arc<Metrics>>) -> Result<NodeSetup, NodeError> {
        let links = if config.setup_interface {
            Some(Links::connect().map_err(NodeError::InterfaceCheck)?)
        } else {
            None
        };
        Ok(NodeSetup {
            config: config.clone(),
            links,
            rules: rules::node_cache_rules(&config.local_ips, config.dns_port, config.health_port),
            metrics,
        })
    }

    /// The rules this setup installs.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Ensures the link exists and holds every local IP. Returns how many things were missing.
    pub async fn ensure_interface(&mut self) -> Result<usize, NodeError> {
        let Some(links) = &self.links else {
            return Ok(0);
        };
        let name = &self.config.interface_name;
        let mut repaired = 0;
        let link = match links.find(name).await.map_err(NodeError::InterfaceCheck)? {
            Some(link) => link,
            None => {
                let link = links
                    .create_dummy(name)
                    .await
                    .map_err(NodeError::InterfaceAdd)?;
                info!(interface = %name, "Added interface - {name}");
                repaired += 1;
                link
            }
        };
        for &ip in &self.config.local_ips {
            if links
                .add_address(link, name, ip)
                .await
                .map_err(NodeError::InterfaceAdd)?
            {
                info!(interface = %name, %ip, "added local IP");
                repaired += 1;
            }
        }
        Ok(repaired)
    }

    /// Ensures every rule is in place. Returns the rules inserted and the failures (one rule
    /// failing does not stop the others).
    pub async fn ensure_rules(&mut self) -> (Vec<Rule>, Vec<NodeError>) {
        if !self.config.setup_iptables {
            return (Vec::new(), Vec::new());
        }
        let rules = self.rules.clone();
        let result = blocking(move || {
            let mut inserted = Vec::new();
            let mut errors = Vec::new();
            for rule in rules {
                match Iptables::for_rule(&rule).ensure(&rule) {
                    Ok(true) => inserted.push(rule),
                    Ok(false) => {}
                    Err(err) => errors.push(NodeError::Rule(err)),
                }
            }
            (inserted, errors)
        })
        .await;
        result.unwrap_or_else(|err| (Vec::new(), vec![err]))
    }

    /// One pass of ensure (link, then rules), logged and counted. `periodic` passes count what
    /// they had to put back in `nodelocaldns_node_rules_restored_total`.
    pub async fn sync(&mut self, periodic: bool) -> Vec<NodeError> {
        let mut errors = Vec::new();
        let mut restored = 0;
        match self.ensure_interface().await {
            Ok(n) => restored += n,
            Err(err) => errors.push(err),
        }
        let (inserted, rule_errors) = self.ensure_rules().await;
        for rule in &inserted {
            if periodic {
                info!("Added back nodelocaldns rule - {rule}");
            }
        }
        restored += inserted.len();
        errors.extend(rule_errors);
        if let Some(metrics) = &self.metrics {
            if periodic {
                metrics.node_rules_restored.inc_by(restored as u64);
            }
            for err in &errors {
                metrics
                    .setup_errors
                    .with_label_values(&[err.errortype()])
                    .inc();
            }
        }
        for err in &errors {
            warn!(errortype = err.errortype(), "node setup: {err}");
        }
        errors
    }

    /// Removes the rules, then the local IPs, then the link when it is a dummy left with no
    /// address: what this process set up, and what a killed one before it left (adopted).
    /// The same for `nodelocal-dns teardown`, which set up nothing itself.
    pub async fn teardown(&mut self) -> Vec<NodeError> {
        info!("Tearing down");
        let mut errors = self.remove_rules().await;
        if let Some(links) = &self.links {
            let name = &self.config.interface_name;
            match links.find(name).await {
                Ok(Some(link)) => {
                    errors.extend(self.remove_ips(links, link).await);
                    match links.addresses(link, name).await {
                        Ok(left) if left.is_empty() && link.is_dummy => {
                            if let Err(err) = links.delete(link, name).await {
                                errors.push(NodeError::InterfaceCheck(err));
                            }
                        }
                        Ok(_) => {}
                        Err(err) => errors.push(NodeError::InterfaceCheck(err)),
                    }
                }
                Ok(None) => {}
                Err(err) => errors.push(NodeError::InterfaceCheck(err)),
            }
        }
        errors
    }

    async fn remove_ips(&self, links: &Links, link: Link) -> Vec<NodeError> {
        let mut errors = Vec::new();
        for &ip in &self.config.local_ips {
            if let Err(err) = links
                .remove_address(link, &self.config.interface_name, ip)
                .await
            {
                errors.push(NodeError::InterfaceCheck(err));
            }
        }
        errors
    }

    async fn remove_rules(&self) -> Vec<NodeError> {
        if !self.config.setup_iptables {
            return Vec::new();
        }
        let rules = self.rules.clone();
        blocking(move || {
            rules
                .iter()
                .filter_map(|rule| {
                    let iptables = Iptables::for_rule(rule);
                    iptables.delete_all(rule).err().map(NodeError::Rule)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|err| vec![err])
    }
}

/// The periodic re-check, owned by whoever started it.
pub struct NodeSync {
    task: JoinHandle<NodeSetup>,
    cancel: CancellationToken,
}

impl NodeSync {
    /// Re-checks the link and the rules every `node.sync_interval`.
    pub fn start(mut setup: NodeSetup) -> NodeSync {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let interval = setup.config.sync_interval;
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {
                        setup.sync(true).await;
                    }
                }
            }
            info!("Exiting iptables/interface check goroutine");
            setup
        });
        NodeSync { task, cancel }
    }

    /// Stops the re-check and hands the setup back (for teardown).
    pub async fn stop(self) -> Result<NodeSetup, NodeError> {
        self.cancel.cancel();
        self.task.await.map_err(|e| NodeError::Task(e.to_string()))
    }
}
