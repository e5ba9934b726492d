//! The `nodelocal-dns` command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use nodelocal_dns::config::Config;
use nodelocal_dns::config::corefile;
use nodelocal_dns::config::nodecache::{self, NodeCacheArgs};
use nodelocal_dns::kube::{PodIndex, PodWatch};
use nodelocal_dns::node::{NodeSetup, NodeSync};
use nodelocal_dns::observe::debug::Inspector;
use nodelocal_dns::observe::{Endpoints, HttpServer, Metrics, Readiness};
use nodelocal_dns::responder::Responder;
use nodelocal_dns::server::Server;

/// A caching DNS forwarder for Kubernetes nodes, and a drop-in for NodeLocal DNSCache.
///
/// It answers DNS over UDP and TCP on the configured listen addresses and forwards each name
/// to the upstreams of the most specific zone that contains it. Without --config it listens
/// on 127.0.0.1:5300 and forwards everything to the nameservers of /etc/resolv.conf.
///
/// Try it:  nodelocal-dns run   then   dig @127.0.0.1 -p 5300 example.com
///
/// node-cache's command line works too (the stock node-local-dns DaemonSet's args):
///   nodelocal-dns -localip 169.254.20.10,10.96.0.10 -conf /etc/Corefile -upstreamsvc kube-dns-upstream
#[derive(Parser)]
#[command(version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS until SIGTERM or Ctrl-C.
    Run {
        /// YAML config file; the embedded default (127.0.0.1:5300 -> /etc/resolv.conf) when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log filter (e.g. `info`, `nodelocal_dns=debug`); overrides the config's
        /// `log.level`; RUST_LOG overrides both.
        #[arg(long)]
        log_level: Option<String>,
    },
    /// Validate a config file and print it with every default filled in.
    ///
    /// Exits with status 1 and a message naming the file, line and field when the file is
    /// invalid. `resolv.conf` upstreams are shown as the nameservers they stand for.
    CheckConfig {
        /// The YAML config file to check.
        file: PathBuf,
        /// Read FILE as a CoreDNS Corefile (node-cache's, already rendered) and print the
        /// native config it translates to. Implied when the file name starts with `Corefile`.
        #[arg(long)]
        corefile: bool,
    },
    /// Render and translate a node-cache command line without running it: prints the rendered
    /// Corefile and the native config it becomes (e.g. `translate -localip 169.254.20.10
    /// -basecorefile Corefile.base -kubednscm ./kube-dns`).
    Translate {
        /// node-cache's flags, as in the DaemonSet's args.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        flags: Vec<String>,
    },
    /// Create the link-local interface and node-cache's iptables rules (the config's `node:`
    /// section), then exit. Needs CAP_NET_ADMIN.
    Setup {
        /// YAML config file with a `node:` section.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Remove node-cache's iptables rules and the local IPs, and the interface when it is a
    /// dummy link left without addresses.
    Teardown {
        /// YAML config file with a `node:` section.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the embedded default config.
    DefaultConfig,
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if nodecache::is_node_cache_command_line(&args) {
        return exit_code(node_cache(&args));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, log_level } => run(config, log_level.as_deref()),
        Command::CheckConfig { file, corefile } => check_config(&file, corefile),
        Command::Translate { flags } => translate(&flags),
        Command::Setup { config } => node_command(&config, false),
        Command::Teardown { config } => node_command(&config, true),
        Command::DefaultConfig => {
            print!("{}", nodelocal_dns::config::EMBEDDED_DEFAULT);
            Ok(())
        }
    };
    exit_code(result)
}

fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path, corefile: bool) -> anyhow::Result<()> {
    let named_corefile = file
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("Corefile"));
    if corefile || named_corefile {
        let translation = corefile::load(file, &corefile::TranslateOptions::default())?;
        print!("{}", translation.to_yaml(&file.display().to_string()));
        eprintln!(
            "{}: valid ({} warnings)",
            file.display(),
            translation.warnings.len()
        );
        return Ok(());
    }
    let config = Config::load(file)?;
    print!("{}", config.to_yaml());
    eprintln!("{}: valid", file.display());
    Ok(())
}

/// `nodelocal-dns translate FLAGS...`: what a node-cache command line amounts to.
fn translate(flags: &[String]) -> anyhow::Result<()> {
    let args = NodeCacheArgs::parse(flags)?;
    let node_cache = args.to_config(false)?;
    println!("# rendered Corefile ({}):", args.corefile.display());
    for line in node_cache.rendered.lines() {
        println!("#   {line}");
    }
    print!(
        "{}",
        node_cache
            .translation
            .to_yaml(&args.base_corefile.display().to_string())
    );
    Ok(())
}

/// `setup` and `teardown`: the node section of a config, once.
fn node_command(config_path: &std::path::Path, teardown: bool) -> anyhow::Result<()> {
    init_logging("info")?;
    let config = Config::load(config_path)?;
    if !config.node.enabled() {
        anyhow::bail!(
            "{}: node.setup_interface and node.setup_iptables are both false: nothing to do",
            config_path.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut node = NodeSetup::new(&config.node, None)?;
        let errors = if teardown {
            node.teardown_detached().await
        } else {
            node.sync(false).await
        };
        match errors.first() {
            None => Ok(()),
            Some(_) => Err(anyhow::anyhow!(
                "{} step(s) failed:\n  {}",
                errors.len(),
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            )),
        }
    })
}

fn init_logging(log_level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(log_level))
        .context("invalid --log-level")?;
    // Colour only on a terminal: container logs keep plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .init();
    Ok(())
}

/// node-cache's command line: render and translate its Corefile, then serve like `run`.
fn node_cache(args: &[String]) -> anyhow::Result<()> {
    let args = NodeCacheArgs::parse(args)?;
    if args.version {
        println!("nodelocal-dns {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    init_logging("info")?;
    tracing::info!(
        "Starting node-cache image: nodelocal-dns {}",
        env!("CARGO_PKG_VERSION")
    );
    let node_cache = args.to_config(true)?;
    let translation = node_cache.translation;
    for warning in &translation.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        health = translation.health.as_deref().unwrap_or("-"),
        metrics = translation.metrics.as_deref().unwrap_or("-"),
        setup_metrics = %args.metrics_listen_address,
        "Corefile translated; HTTP endpoints it asks for"
    );
    // The Corefile is rendered once (node-cache re-renders on restart too).
    serve(translation.config, args.pidfile, None)
}

fn run(config_path: Option<PathBuf>, log_level: Option<&str>) -> anyhow::Result<()> {
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default()?,
    };
    init_logging(log_level.unwrap_or(&config.log.level))?;
    serve(config, None, config_path)
}

/// Serves `config` until SIGTERM/SIGINT, with the node setup around the listeners: the
/// interface before binding, the rules once bound, teardown before the listeners stop.
fn serve(
    config: Config,
    pidfile: Option<PathBuf>,
    reload_from: Option<PathBuf>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_count())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::new());
        let mut node = match config.node.enabled() {
            true => Some(NodeSetup::new(&config.node, Some(metrics.clone()))?),
            false => None,
        };
        if let Some(node) = &mut node {
            node.ensure_interface()
                .await
                .context("cannot set up the node's interface")?;
        }
        let (pods, watch) = start_pod_watch(&config, &metrics).await?;
        let responder = Arc::new(Responder::with_pods(&config, metrics.clone(), pods.clone()));
        // After the responder: its upstream groups create the gauges readiness reads.
        let readiness = Arc::new(Readiness::for_config(&config, &metrics, pods.as_ref()));
        let endpoints = Endpoints {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            inspector: Some(Arc::new(
                Inspector::new(&config, metrics.clone())
                    .with_responder(responder.clone())
                    .with_pods(pods),
            )),
        };
        // Before the DNS listeners: /health answers during startup, /ready says what is missing.
        let http = match HttpServer::start(&config.metrics, endpoints).await {
            Ok(http) => http,
            Err(err) => {
                abandon_node(&mut node, &config).await;
                return Err(anyhow::Error::new(err).context(
                    "cannot start the HTTP endpoints (metrics.listen, metrics.health_listen)",
                ));
            }
        };
        let mut server = match Server::start(&config, responder.clone()) {
            Ok(server) => server,
            Err(err) => {
                abandon_node(&mut node, &config).await;
                return Err(bind_hint(err));
            }
        };
        readiness.set_listening(true);
        if let Some(path) = reload_from {
            server.watch_config(path, RELOAD_INTERVAL, config.clone(), metrics.clone());
        }
        if config.server.loop_check {
            let (responder, listener) = (responder.clone(), server.local_addrs()[0]);
            tokio::spawn(async move {
                let looped = responder.check_loops(listener, LOOP_PROBE_WAIT).await;
                if looped.is_empty() {
                    tracing::debug!("no forwarding loop found");
                }
            });
        }
        if let Some(path) = &pidfile {
            std::fs::write(path, format!("{}\n", std::process::id()))
                .with_context(|| format!("cannot write the pidfile {}", path.display()))?;
        }
        // Rules only now: they steer the node's DNS to listeners that are up.
        let sync = match node {
            Some(mut node) => {
                node.sync(false).await;
                Some(NodeSync::start(node))
            }
            None => None,
        };
        shutdown_signal().await?;
        tracing::info!("shutting down");
        // Not ready from now on; still answering for the lameduck period, while a new
        // instance bound to the same addresses (SO_REUSEPORT) takes over.
        readiness.set_listening(false);
        let lameduck = config.shutdown.lameduck;
        if !lameduck.is_zero() {
            tracing::info!(?lameduck, "lameduck: answering while not ready");
            tokio::time::sleep(lameduck).await;
        }
        // Stop taking queries, answer the ones taken, and only then remove the rules and
        // addresses their answers leave through.
        let drain = config.shutdown.drain;
        let unanswered = server.drain(drain).await;
        if unanswered > 0 {
            tracing::warn!(
                unanswered,
                "queries still waiting on upstreams after {drain:?}; exiting"
            );
        }
        let successor = nodelocal_dns::server::served_by_another(&config.listen).await;
        if let Some(addr) = successor {
            tracing::info!(%addr, "another instance serves our address: leaving the rules and the interface to it");
        }
        if let Some(sync) = sync {
            match sync.stop().await {
                Ok(mut node) if !config.node.skip_teardown && successor.is_none() => {
                    let teardown = tokio::time::timeout(TEARDOWN_DEADLINE, node.teardown()).await;
                    if teardown.is_err() {
                        tracing::error!("teardown did not finish in {TEARDOWN_DEADLINE:?}");
                    }
                }
                Ok(_) => tracing::info!("leaving the rules and the interface in place"),
                Err(err) => tracing::error!("{err}"),
            }
        }
        if let Some(path) = &pidfile {
            let _ = std::fs::remove_file(path);
        }
        if let Some(watch) = watch {
            watch.stop();
        }
        http.shutdown().await;
        Ok(())
    })
}

/// Undoes the interface setup when startup fails before serving (unless `skip_teardown`).
async fn abandon_node(node: &mut Option<NodeSetup>, config: &Config) {
    if let Some(node) = node
        && !config.node.skip_teardown
    {
        node.teardown().await;
    }
}

/// How often the config file is checked for changes (a ConfigMap update itself takes up
/// to a minute to reach the pod).
const RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the start-up loop probes wait for their answers (a slow upstream is no loop).
const LOOP_PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Teardown is bounded: a pod's grace period is 30 s and the rules must go before SIGKILL.
const TEARDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// A bind error with what to do about it.
fn bind_hint(err: nodelocal_dns::server::BindError) -> anyhow::Error {
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

/// Starts the watch of this node's pods when `kubernetes.enabled`. Queries never wait for it:
/// until the first list is in, autopath does not apply.
async fn start_pod_watch(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<(Option<Arc<PodIndex>>, Option<PodWatch>)> {
    let kube = &config.kubernetes;
    if !kube.enabled {
        return Ok((None, None));
    }
    let node = kube
        .node()
        .context("kubernetes.node_name is not set and NODE_NAME is empty")?;
    let client = nodelocal_dns::kube::watch::client(kube)
        .await
        .context("cannot set up the Kubernetes client")?;
    let index = Arc::new(PodIndex::new(kube.cluster_domain.0));
    let watch = PodWatch::start(client, &node, index.clone(), metrics);
    Ok((Some(index), Some(watch)))
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("cannot watch SIGINT")?,
    }
    Ok(())
}
