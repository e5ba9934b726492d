//! One running forwarder: its start-up order, its stop order, and nothing else.
//!
//! ```text
//! start (each step checks for a stop signal before the next one begins)
//!   1 node interface   link + local IPs (the listeners need them to bind)
//!   2 pod watch        autopath's index (queries never wait for it)
//!   3 responder        zones, upstream pools, cache; readiness
//!   4 admin HTTP       /health answers during start-up, /ready says what is missing
//!   5 DNS listeners    UDP + TCP on every listen address
//!   6 reload watch, loop check, pidfile
//!   7 node rules       only now: they steer the node's DNS to listeners that are up;
//!                      the watch of the fallback's kube-dns endpoints starts with them
//! serve until a stop signal
//! shutdown (whatever start got to, in reverse)
//!   not ready -> lameduck -> drain the listeners -> stop background tasks
//!   -> successor check -> rules and interface torn down -> pidfile, pod watch, HTTP
//! ```
//!
//! The node is never left with rules that divert to nobody. The rules themselves fail open
//! (`crate::node::rules`): whatever instant this process dies at, SIGKILL included, pods'
//! queries go to kube-dns. And a stop signal at any moment of
//! start-up ends in the same shutdown as one while serving, and tears down whatever start had
//! set up so far (unless another instance serves our address, which then keeps it). Node steps
//! are never cut in half: a signal is taken between steps, so teardown always knows what the
//! step did. A second signal cuts lameduck and drain short, never teardown. A failed start
//! shuts down the same way before it reports its error.
//!
//! Config keys: `shutdown.lameduck`, `shutdown.drain` (see `crate::config`), and everything
//! the parts read. Metrics: those of the parts (`nodelocaldns_tasks` for what runs in the
//! background).

pub mod stop;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::admin::{Endpoints, HttpServer, Inspector, Readiness};
use crate::config::Config;
use crate::config::source::ConfigSource;
use crate::kube::{EndpointWatch, PodIndex, PodWatch};
use crate::node::{NodeSetup, NodeSync};
use crate::observe::Metrics;
use crate::responder::{CurrentResponder, Responder};
use crate::server::{BindError, Server, served_by_another};
use crate::tasks::{TaskKind, Tasks};
pub use stop::{StopRequests, StopSignal};

/// What the command line adds to a config.
#[derive(Default, Clone)]
pub struct Options {
    /// Written with our PID once serving, removed at exit (node-cache's `-pidfile`).
    pub pidfile: Option<PathBuf>,
    /// Where to read the config again when it changes (`run --config`'s file; node-cache's
    /// Corefile and kube-dns ConfigMap).
    pub reload_from: Option<Arc<dyn ConfigSource>>,
}

/// How often the config file is checked for changes (a ConfigMap update itself takes up
/// to a minute to reach the pod).
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// How long the start-up loop probes wait for their answers (a slow upstream is no loop).
const LOOP_PROBE_WAIT: Duration = Duration::from_secs(5);

/// Teardown is bounded: a pod's grace period is 30 s and the rules must go before SIGKILL.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// How long background tasks (refreshes, pooled connections, probes) get to end once
/// cancelled: they are dropped where they wait, so this is only scheduling time.
const TASKS_DEADLINE: Duration = Duration::from_secs(2);

/// Serves `config` until a stop signal, then shuts down. Returns the signal it stopped on; a
/// start-up failure is returned after the same shutdown (so the node is as it was found).
pub async fn run(
    config: Config,
    options: Options,
    stop: &StopRequests,
) -> anyhow::Result<StopSignal> {
    let mut instance = Instance::new(config, options);
    let started = instance.start(stop).await;
    let outcome = match started {
        Ok(Started::Serving) => {
            let signal = stop.first().await;
            info!("{signal}: shutting down");
            Ok(signal)
        }
        Ok(Started::Interrupted(signal)) => {
            info!("{signal} during start-up: undoing what start-up did");
            Ok(signal)
        }
        Err(err) => Err(err),
    };
    instance.shutdown(stop).await;
    if let Ok(signal) = &outcome {
        info!("stopped on {signal}");
    }
    outcome
}

/// How [`Instance::start`] ended when it did not fail.
enum Started {
    Serving,
    /// A stop signal came before start-up was done.
    Interrupted(StopSignal),
}

/// Everything start-up has set up so far; [`Instance::shutdown`] ends exactly that.
struct Instance {
    config: Config,
    options: Options,
    metrics: Arc<Metrics>,
    /// Set before the first node change, so that every change is torn down.
    node: Option<NodeSetup>,
    /// The periodic re-check, which holds the node setup once the rules are in.
    sync: Option<NodeSync>,
    /// The kube-dns endpoints the node rules fall back to (`node.fallback.service`).
    fallback_watch: Option<EndpointWatch>,
    watch: Option<PodWatch>,
    readiness: Option<Arc<Readiness>>,
    tasks: Option<Tasks>,
    http: Option<HttpServer>,
    /// The DNS listeners, once bound (only then does lameduck apply).
    server: Option<Server>,
    pidfile_written: bool,
}

/// Returns from `start` with the signal when one has come.
macro_rules! unless_stopped {
    ($stop:expr) => {
        if let Some(signal) = $stop.requested() {
            return Ok(Started::Interrupted(signal));
        }
    };
}

impl Instance {
    fn new(config: Config, options: Options) -> Instance {
        Instance {
            config,
            options,
            metrics: Arc::new(Metrics::new()),
            node: None,
            sync: None,
            fallback_watch: None,
            watch: None,
            readiness: None,
            tasks: None,
            http: None,
            server: None,
            pidfile_written: false,
        }
    }

    /// The start-up steps, in order; see the module doc.
    async fn start(&mut self, stop: &StopRequests) -> anyhow::Result<Started> {
        unless_stopped!(stop);
        let config = &self.config;
        if config.node.enabled() {
            let node = self.node.insert(NodeSetup::new(
                &config.node,
                &config.listen,
                Some(self.metrics.clone()),
            )?);
            node.ensure_interface()
                .await
                .context("cannot set up the node's interface")?;
        }
        unless_stopped!(stop);

        let pods = match start_pod_watch(config, &self.metrics, stop).await? {
            PodWatchStart::Started(pods, watch) => {
                self.watch = Some(watch);
                Some(pods)
            }
            PodWatchStart::Disabled => None,
            PodWatchStart::Interrupted(signal) => return Ok(Started::Interrupted(signal)),
        };
        unless_stopped!(stop);

        let responder = Arc::new(Responder::with_pods(
            config,
            self.metrics.clone(),
            pods.clone(),
        ));
        self.tasks = Some(responder.tasks().clone());
        let current: CurrentResponder = Arc::new(ArcSwap::new(responder.clone()));
        // After the responder: its upstream groups create the gauges readiness reads.
        let readiness = self.readiness.insert(Arc::new(Readiness::for_config(
            config,
            &self.metrics,
            pods.as_ref(),
        )));
        let endpoints = Endpoints {
            metrics: self.metrics.clone(),
            readiness: readiness.clone(),
            inspector: Some(Arc::new(
                Inspector::new(config, self.metrics.clone())
                    .with_current(current.clone())
                    .with_pods(pods)
                    .with_rules(self.node.as_ref().map(NodeSetup::shown)),
            )),
        };
        let http = HttpServer::start(&config.metrics, endpoints)
            .await
            .map_err(anyhow::Error::new)
            .context("cannot start the HTTP endpoints (metrics.listen, metrics.health_listen)")?;
        self.http = Some(http);
        unless_stopped!(stop);

        let server = self
            .server
            .insert(Server::start_with(config, current.clone()).map_err(bind_hint)?);
        readiness.set_listening(true);
        if let Some(source) = &self.options.reload_from {
            server.watch_config(
                source.clone(),
                RELOAD_INTERVAL,
                config.clone(),
                self.metrics.clone(),
            );
        }
        if config.server.loop_check {
            let listener = server.local_addrs()[0];
            let tasks = responder.tasks().clone();
            tasks.spawn(TaskKind::LoopCheck, async move {
                let looped = responder.check_loops(listener, LOOP_PROBE_WAIT).await;
                if looped.is_empty() {
                    tracing::debug!("no forwarding loop found");
                }
            });
        }
        if let Some(path) = &self.options.pidfile {
            std::fs::write(path, format!("{}\n", std::process::id()))
                .with_context(|| format!("cannot write the pidfile {}", path.display()))?;
            self.pidfile_written = true;
        }
        unless_stopped!(stop);

        if let Some(mut node) = self.node.take() {
            let endpoints = self.start_fallback_watch().await;
            let errors = node.sync(false).await;
            // Back in `self` first, so that the failed start's shutdown removes what was
            // installed: a node never keeps half of the rules.
            self.node = Some(node);
            if let Some(missing) = errors.iter().find(|e| e.is_missing_feature()) {
                anyhow::bail!("cannot install the node rules: {missing}");
            }
            if let Some(node) = self.node.take() {
                self.sync = Some(NodeSync::start(node, endpoints));
            }
        }
        Ok(Started::Serving)
    }

    /// Ends whatever [`Instance::start`] set up, in reverse order; bounded throughout.
    async fn shutdown(mut self, stop: &StopRequests) {
        if let Some(readiness) = &self.readiness {
            // Not ready from now on; still answering for the lameduck period, while a new
            // instance bound to the same addresses (SO_REUSEPORT) takes over.
            readiness.set_listening(false);
        }
        let shutdown = &self.config.shutdown;
        if let Some(server) = self.server.take() {
            let lameduck = shutdown.lameduck;
            if !lameduck.is_zero() {
                info!(?lameduck, "lameduck: answering while not ready");
                tokio::select! {
                    () = tokio::time::sleep(lameduck) => {}
                    () = stop.second() => info!("second stop signal: lameduck cut short"),
                }
            }
            // Stop taking queries, answer the ones taken, and only then remove the rules
            // and addresses their answers leave through.
            let drain = shutdown.drain;
            let unanswered = server.drain(drain, stop.second()).await;
            if unanswered > 0 {
                warn!(
                    unanswered,
                    "queries still waiting on upstreams after {drain:?} (or a second stop \
                     signal): answered SERVFAIL"
                );
            }
        }
        if let Some(tasks) = &self.tasks {
            let left = tasks.stop(TASKS_DEADLINE).await;
            if left > 0 {
                warn!(
                    left,
                    "background tasks still running after {TASKS_DEADLINE:?}"
                );
            }
        }
        let node = match self.sync.take() {
            Some(sync) => match sync.stop().await {
                Ok(node) => Some(node),
                Err(err) => {
                    error!("{err}");
                    None
                }
            },
            None => self.node.take(),
        };
        if let Some(mut node) = node {
            self.tear_down(&mut node).await;
        }
        if self.pidfile_written
            && let Some(path) = &self.options.pidfile
        {
            let _ = std::fs::remove_file(path);
        }
        if let Some(watch) = self.fallback_watch.take() {
            watch.stop();
        }
        if let Some(watch) = self.watch.take() {
            watch.stop();
        }
        if let Some(http) = self.http.take() {
            http.shutdown().await;
        }
    }

    /// Starts the watch of `node.fallback.service`'s endpoints when the rules fall back to it.
    /// Never fatal: without the API the fallback keeps `node.fallback.endpoints` (or is not
    /// armed, which `nodelocaldns_node_fallback_endpoints` shows).
    async fn start_fallback_watch(
        &mut self,
    ) -> Option<tokio::sync::watch::Receiver<crate::node::ServiceEndpoints>> {
        let node = &self.config.node;
        let (namespace, service) = node.fallback.service()?;
        if !node.setup_iptables || node.fallback_ips().is_empty() {
            return None;
        }
        match crate::kube::watch::client(&self.config.kubernetes).await {
            Ok(client) => {
                info!(
                    namespace,
                    service, "watching the fallback's kube-dns endpoints"
                );
                let (watch, endpoints) = EndpointWatch::start(client, namespace, service);
                self.fallback_watch = Some(watch);
                Some(endpoints)
            }
            Err(err) => {
                warn!(
                    "cannot watch {namespace}/{service}'s endpoints ({err}): the fallback uses \
                     node.fallback.endpoints ({} configured)",
                    node.fallback.endpoints.len()
                );
                None
            }
        }
    }

    /// Removes the rules and the interface, unless another instance serves our address (it
    /// keeps them) or the config says to leave them.
    async fn tear_down(&self, node: &mut NodeSetup) {
        if self.config.node.skip_teardown {
            info!("node.skip_teardown: leaving the rules and the interface in place");
            return;
        }
        if let Some(addr) = served_by_another(&self.config.listen).await {
            info!(%addr, "another instance serves our address: leaving the rules and the interface to it");
            return;
        }
        match tokio::time::timeout(TEARDOWN_DEADLINE, node.teardown()).await {
            Ok(errors) => {
                for err in errors {
                    error!("teardown: {err}");
                }
            }
            Err(_) => error!("teardown did not finish in {TEARDOWN_DEADLINE:?}"),
        }
    }
}

/// A bind error with what to do about it.
fn bind_hint(err: BindError) -> anyhow::Error {
    let text = err.to_string();
    let hint = if text.contains("Address already in use") {
        "another process answers DNS there (the previous node-local-dns pod, systemd-resolved, \
         dnsmasq): stop it, or listen elsewhere"
    } else if text.contains("Cannot assign requested address") {
        "the address is not on this node, or is an IPv6 address still in duplicate address \
         detection: turn on node.setup_interface (-setupinterface), or add it to a link \
         (`ip addr add ADDR dev LINK nodad`)"
    } else if text.contains("Permission denied") {
        "ports below 1024 need CAP_NET_BIND_SERVICE (or root)"
    } else {
        return anyhow::Error::new(err);
    };
    anyhow::anyhow!("{text}: {hint}")
}

enum PodWatchStart {
    Started(Arc<PodIndex>, PodWatch),
    Disabled,
    Interrupted(StopSignal),
}

/// Starts the watch of this node's pods when `kubernetes.enabled`. Queries never wait for it:
/// until the first list is in, autopath does not apply. Setting up the client reads files and
/// may wait; a stop signal ends that wait (nothing on the node depends on it).
async fn start_pod_watch(
    config: &Config,
    metrics: &Metrics,
    stop: &StopRequests,
) -> anyhow::Result<PodWatchStart> {
    let kube = &config.kubernetes;
    if !kube.enabled {
        return Ok(PodWatchStart::Disabled);
    }
    let node = kube
        .node()
        .context("kubernetes.node_name is not set and NODE_NAME is empty")?;
    let client = tokio::select! {
        client = crate::kube::watch::client(kube) => {
            client.context("cannot set up the Kubernetes client")?
        }
        signal = stop.first() => return Ok(PodWatchStart::Interrupted(signal)),
    };
    let index = Arc::new(PodIndex::new(kube.cluster_domain.0));
    let watch = PodWatch::start(client, &node, index.clone(), metrics);
    Ok(PodWatchStart::Started(index, watch))
}
