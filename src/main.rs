//! The `nodelocal-dns` command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use nodelocal_dns::config::Config;
use nodelocal_dns::kube::{PodIndex, PodWatch};
use nodelocal_dns::observe::Metrics;
use nodelocal_dns::responder::Responder;
use nodelocal_dns::server::Server;

/// A caching DNS forwarder for Kubernetes nodes, and a drop-in for NodeLocal DNSCache.
///
/// It answers DNS over UDP and TCP on the configured listen addresses and forwards each name
/// to the upstreams of the most specific zone that contains it. Without --config it listens
/// on 127.0.0.1:5300 and forwards everything to the nameservers of /etc/resolv.conf.
///
/// Try it:  nodelocal-dns run   then   dig @127.0.0.1 -p 5300 example.com
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
        /// Log filter (e.g. `info`, `nodelocal_dns=debug`); RUST_LOG overrides it.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Validate a config file and print it with every default filled in.
    ///
    /// Exits with status 1 and a message naming the file, line and field when the file is
    /// invalid. `resolv.conf` upstreams are shown as the nameservers they stand for.
    CheckConfig {
        /// The YAML config file to check.
        file: PathBuf,
    },
    /// Print the embedded default config.
    DefaultConfig,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, log_level } => run(config, &log_level),
        Command::CheckConfig { file } => check_config(&file),
        Command::DefaultConfig => {
            print!("{}", nodelocal_dns::config::EMBEDDED_DEFAULT);
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    print!("{}", config.to_yaml());
    eprintln!("{}: valid", file.display());
    Ok(())
}

fn run(config_path: Option<PathBuf>, log_level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(log_level))
        .context("invalid --log-level")?;
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_count())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::new());
        let (pods, watch) = start_pod_watch(&config, &metrics).await?;
        // Readiness hook: when `kubernetes.wait_for_sync`, a `/ready` endpoint should report
        // "pods synced" from `PodIndex::is_synced` / `wait_synced` (no /ready exists yet).
        let responder = Arc::new(Responder::with_pods(&config, metrics, pods));
        let server = Server::start(&config, responder)?;
        shutdown_signal().await?;
        tracing::info!("shutting down");
        server.shutdown().await;
        if let Some(watch) = watch {
            watch.stop();
        }
        Ok(())
    })
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
