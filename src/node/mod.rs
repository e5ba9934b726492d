//! What the node cache does to its node: the link holding the local IPs ([`interface`]) and
//! the rules that divert DNS for them to us ([`rules`], written by [`iptables`] or
//! [`nftables`]), ensured at start, re-checked every `node.sync_interval`, and removed on exit.
//!
//! The rules fail open: they divert only while a socket of ours is bound to the local IP, and
//! a link-local IP falls back to the kube-dns endpoints by DNAT meanwhile, so a process of ours
//! that dies at any moment (SIGKILL, OOM kill, crash loop) leaves pods resolving through
//! kube-dns, not black-holed ([`rules`] says how, and what the node's own traffic gets).
//!
//! Order, as node-cache: the link first (the listeners need the local IPs to bind), the rules
//! only once the listeners are up, teardown rules first and then the link. Teardown removes our
//! rules (all copies, matched by their full spec and comment, or our nftables table), the
//! configured local IPs, and the link when it is a dummy left without addresses; a link with
//! other addresses (`lo`, a veth) keeps them and stays.
//!
//! What a killed instance left is adopted, not duplicated: a start finds the rules (checked
//! before each insert, or the table replaced whole) and the address in place and adds no second
//! copy, and its teardown removes them as its own. A start also removes what the other backend
//! left (a config that changed backend) and node-cache's unconditional NOTRACK rules. The local
//! IPs are ours by config, whoever added them, as the `nodelocaldns` link is node-cache's: that
//! is what lets the next instance, or `nodelocal-dns teardown`, clean up after a SIGKILL.
//!
//! The fallback's endpoints are `node.fallback.endpoints` until the watch of
//! `node.fallback.service` (in `crate::kube`, started by `crate::instance`) delivers some; an
//! empty delivery keeps the last known ones (a DNAT to a moved pod is no worse than none).
//!
//! Config keys: [`crate::config::node`]. Metrics: `nodelocaldns_node_rules_restored_total`
//! (anything a periodic sync found missing and put back), `nodelocaldns_node_rules_backend`
//! (`backend`: 1 for the one in use), `nodelocaldns_node_fallback_endpoints` (the endpoints the
//! fallback DNATs to; 0: not armed), and `coredns_nodecache_setup_errors_total{errortype}` with
//! node-cache's labels.

pub mod interface;
pub mod iptables;
pub mod nftables;
pub mod rules;

use std::sync::{Arc, RwLock};

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::node::NodeConfig;
use crate::observe::Metrics;
use crate::observe::labels::{Label, SetupErrorType};
use interface::{InterfaceError, Link, Links};
pub use rules::{Backend, DivertSpec, RuleError, RuleErrorKind, ServiceEndpoints};

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
    /// The metric label node-cache uses for this failure.
    pub fn errortype(&self) -> SetupErrorType {
        match self {
            NodeError::InterfaceAdd(_) => SetupErrorType::InterfaceAdd,
            NodeError::InterfaceCheck(_) | NodeError::Task(_) => SetupErrorType::InterfaceCheck,
            NodeError::Rule(err) if err.kind == RuleErrorKind::Lock => SetupErrorType::IptablesLock,
            NodeError::Rule(_) => SetupErrorType::Iptables,
        }
    }

    /// A kernel feature or a tool the rules need is missing: a start fails on it rather than
    /// serve with rules that cannot fail open.
    pub fn is_missing_feature(&self) -> bool {
        matches!(self, NodeError::Rule(err) if err.kind == RuleErrorKind::Missing)
    }
}

/// The rules as installed, for `/debug/rules`: shared between the setup and the inspector.
#[derive(Debug, Default)]
pub struct RulesShown(RwLock<String>);

impl RulesShown {
    pub fn text(&self) -> String {
        self.0.read().map(|t| t.clone()).unwrap_or_default()
    }

    fn set(&self, text: String) {
        if let Ok(mut shown) = self.0.write() {
            *shown = text;
        }
    }
}

/// The node's link and rules as this process manages them.
pub struct NodeSetup {
    config: NodeConfig,
    links: Option<Links>,
    spec: DivertSpec,
    /// `None` when `setup_iptables` is off.
    backend: Option<Backend>,
    /// Where the fallback DNATs to now.
    endpoints: ServiceEndpoints,
    /// nftables: our table as the kernel listed it after our last write; a sync that lists
    /// something else (or nothing) writes it again.
    table_written: Option<String>,
    /// Whether this process installed the rules once (the first install also clears what the
    /// other backend and node-cache left).
    installed_once: bool,
    shown: Arc<RulesShown>,
    metrics: Option<Arc<Metrics>>,
}

/// Runs a blocking iptables or nft call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Task(e.to_string()))
}

impl NodeSetup {
    /// Prepares the setup (opens netlink when the interface is managed, chooses the rules'
    /// backend when they are); changes nothing yet.
    pub fn new(
        config: &NodeConfig,
        listen: &[std::net::SocketAddr],
        metrics: Option<Arc<Metrics>>,
    ) -> Result<NodeSetup, NodeError> {
        let links = if config.setup_interface {
            Some(Links::connect().map_err(NodeError::InterfaceCheck)?)
        } else {
            None
        };
        let backend = if config.setup_iptables {
            Some(Backend::choose(config.backend)?)
        } else {
            None
        };
        let setup = NodeSetup {
            config: config.clone(),
            links,
            spec: DivertSpec::for_listeners(config, listen),
            backend,
            endpoints: ServiceEndpoints::fixed(&config.fallback.endpoints),
            table_written: None,
            installed_once: false,
            shown: Arc::default(),
            metrics,
        };
        setup.shown.set(setup.render());
        Ok(setup)
    }

    /// The rules as `/debug/rules` shows them, kept current.
    pub fn shown(&self) -> Arc<RulesShown> {
        self.shown.clone()
    }

    /// What an install writes now (see [`describe`]).
    pub fn render(&self) -> String {
        match self.backend {
            Some(backend) => describe(backend, &self.spec, &self.endpoints),
            None => "# node.setup_iptables is false: no rules\n".into(),
        }
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

    /// Ensures every rule is in place. Returns how many were missing and the failures (one
    /// rule failing does not stop the others).
    pub async fn ensure_rules(&mut self) -> (usize, Vec<NodeError>) {
        let Some(backend) = self.backend else {
            return (0, Vec::new());
        };
        let mut errors = Vec::new();
        if !self.installed_once {
            // What the other backend left must not divert beside ours; a failure to look is
            // logged, not a reason to hold our own rules back.
            let leftovers = self.remove_backend(backend.other()).await;
            self.count(&leftovers, None);
        }
        let (spec, endpoints) = (self.spec.clone(), self.endpoints.clone());
        let restored = match backend {
            Backend::Iptables => {
                let (inserted, failures) = blocking(move || iptables::install(&spec, &endpoints))
                    .await
                    .unwrap_or_else(|err| (0, vec![rule_task_error(err)]));
                errors.extend(failures.into_iter().map(NodeError::Rule));
                inserted
            }
            Backend::Nftables => {
                let written = self.table_written.clone();
                let outcome = blocking(move || -> Result<(usize, String), RuleError> {
                    let now = nftables::listing()?;
                    if now.is_some() && now == written {
                        return Ok((0, written.unwrap_or_default()));
                    }
                    nftables::apply(&nftables::render(&spec, &endpoints))?;
                    Ok((1, nftables::listing()?.unwrap_or_default()))
                })
                .await;
                match outcome {
                    Ok(Ok((restored, listing))) => {
                        self.table_written = Some(listing);
                        restored
                    }
                    Ok(Err(err)) => {
                        errors.push(NodeError::Rule(err));
                        0
                    }
                    Err(err) => {
                        errors.push(err);
                        0
                    }
                }
            }
        };
        if errors.is_empty() && !self.installed_once {
            self.installed_once = true;
            info!(
                backend = backend.name(),
                fallback_armed = self.fallback_armed(),
                fallback_endpoints = self.endpoints.udp.len(),
                "node rules installed: DNS for {:?} is diverted to us only while we listen",
                self.spec.local_ips
            );
        }
        self.publish();
        (restored, errors)
    }

    /// Points the fallback at new endpoints, at once. An empty list keeps the last known ones.
    pub async fn set_endpoints(&mut self, endpoints: ServiceEndpoints) -> Vec<NodeError> {
        if endpoints.is_empty() || endpoints == self.endpoints {
            return Vec::new();
        }
        info!(
            udp = ?endpoints.udp,
            tcp = ?endpoints.tcp,
            "fallback endpoints changed"
        );
        self.endpoints = endpoints;
        let Some(backend) = self.backend else {
            return Vec::new();
        };
        if backend == Backend::Nftables {
            // The table is written whole: forget it, and the ensure writes the new one.
            self.table_written = None;
            return self.ensure_rules().await.1;
        }
        let (spec, endpoints) = (self.spec.clone(), self.endpoints.clone());
        let errors = blocking(move || iptables::update_fallback(&spec, &endpoints))
            .await
            .unwrap_or_else(|err| vec![rule_task_error(err)]);
        self.publish();
        errors.into_iter().map(NodeError::Rule).collect()
    }

    fn fallback_armed(&self) -> bool {
        self.spec.fallback_armed(&self.endpoints)
    }

    /// The rules text for `/debug/rules` and the gauges of the backend and the fallback.
    fn publish(&self) {
        self.shown.set(self.render());
        if let (Some(metrics), Some(backend)) = (&self.metrics, self.backend) {
            metrics
                .node_rules_backend
                .with_label_values(&[backend.name()])
                .set(1);
            let armed = if self.fallback_armed() {
                self.endpoints.udp.len().max(self.endpoints.tcp.len())
            } else {
                0
            };
            metrics.node_fallback_endpoints.set(armed as i64);
        }
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
        if periodic && inserted > 0 {
            info!(inserted, "Added back nodelocaldns rules");
        }
        restored += inserted;
        errors.extend(rule_errors);
        self.count(&errors, periodic.then_some(restored));
        errors
    }

    /// Counts and logs failures (and what a periodic sync restored).
    fn count(&self, errors: &[NodeError], restored: Option<usize>) {
        if let Some(metrics) = &self.metrics {
            if let Some(restored) = restored {
                metrics.node_rules_restored.inc_by(restored as u64);
            }
            for err in errors {
                metrics.setup_errors.get(err.errortype()).inc();
            }
        }
        for err in errors {
            warn!(errortype = err.errortype().value(), "node setup: {err}");
        }
    }

    /// Removes the rules, then the local IPs, then the link when it is a dummy left with no
    /// address: what this process set up, and what a killed one before it left (adopted).
    /// The same for `nodelocal-dns teardown`, which set up nothing itself.
    pub async fn teardown(&mut self) -> Vec<NodeError> {
        info!("Tearing down");
        let mut errors = match self.backend {
            Some(backend) => self.remove_backend(backend).await,
            None => Vec::new(),
        };
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

    /// Removes what `backend` installs. For the backend not in use, only when its tool is
    /// there at all: a node without nft has no table of ours to remove.
    async fn remove_backend(&self, backend: Backend) -> Vec<NodeError> {
        let in_use = Some(backend) == self.backend;
        let spec = self.spec.clone();
        let errors = blocking(move || {
            if !in_use && !backend.is_installed() {
                return Vec::new();
            }
            match backend {
                Backend::Iptables if !in_use && !iptables::any_installed(&spec) => Vec::new(),
                Backend::Iptables => iptables::remove(&spec),
                Backend::Nftables => nftables::remove().err().into_iter().collect(),
            }
        })
        .await
        .unwrap_or_else(|err| vec![rule_task_error(err)]);
        errors.into_iter().map(NodeError::Rule).collect()
    }
}

/// What `backend` writes for `spec` and `endpoints`, in the backend's own language (the `nft`
/// ruleset, or the `iptables` commands), after a line that says whether the fallback is armed.
pub fn describe(backend: Backend, spec: &DivertSpec, endpoints: &ServiceEndpoints) -> String {
    let fallback = if spec.fallback_ips.is_empty() {
        "none (no link-local IP; a ClusterIP falls back through kube-proxy)".to_string()
    } else if !spec.fallback_armed(endpoints) {
        "NOT ARMED: no kube-dns endpoint known".to_string()
    } else {
        format!(
            "armed, {} UDP and {} TCP endpoint(s)",
            endpoints.udp.len(),
            endpoints.tcp.len()
        )
    };
    let ips = |ips: &[std::net::IpAddr]| {
        ips.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = match backend {
        Backend::Iptables => iptables::render(spec, endpoints),
        Backend::Nftables => nftables::render(spec, endpoints),
    };
    format!(
        "# backend: {}; diverted while we listen: {}; fallback for [{}]: {fallback}\n{body}",
        backend.name(),
        ips(&spec.local_ips),
        ips(&spec.fallback_ips),
    )
}

/// A blocking task that died, as a rule error (it ran a rule command).
fn rule_task_error(err: NodeError) -> RuleError {
    RuleError {
        kind: RuleErrorKind::Other,
        tool: "node setup",
        action: "run",
        target: "rules".into(),
        message: err.to_string(),
    }
}

/// The periodic re-check, owned by whoever started it.
pub struct NodeSync {
    task: JoinHandle<NodeSetup>,
    cancel: CancellationToken,
}

impl NodeSync {
    /// Re-checks the link and the rules every `node.sync_interval`, and points the fallback at
    /// each new set of endpoints `endpoints` delivers.
    pub fn start(
        mut setup: NodeSetup,
        mut endpoints: Option<watch::Receiver<ServiceEndpoints>>,
    ) -> NodeSync {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let interval = setup.config.sync_interval;
        let task = tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + interval;
            loop {
                let changed = async {
                    match endpoints.as_mut() {
                        Some(rx) => match rx.changed().await {
                            Ok(()) => Some(rx.borrow_and_update().clone()),
                            Err(_) => None,
                        },
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(next) => {
                        setup.sync(true).await;
                        next = tokio::time::Instant::now() + interval;
                    }
                    update = changed => match update {
                        Some(update) => {
                            let errors = setup.set_endpoints(update).await;
                            setup.count(&errors, None);
                        }
                        // The watch ended: the fallback keeps the endpoints it has.
                        None => endpoints = None,
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
