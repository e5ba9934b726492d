//! The `nodelocal-dns` command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use nodelocal_dns::config::Config;
use nodelocal_dns::config::source::{ConfigFile, ConfigSource};
use nodelocal_dns::instance::{self, Options, StopRequests};
use nodelocal_dns::node::{Backend, DivertSpec, NodeSetup, ServiceEndpoints};
use nodelocal_dns::nodecache;
use nodelocal_dns::nodecache::{self as corefile, NodeCacheArgs, NodeCacheSource};

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
    /// Print the rules `run` would install on this node (the config's `node:` section, or a
    /// node-cache command line), without installing them: the `nft` table or the `iptables`
    /// commands, and whether the link-local fallback is armed.
    ///
    /// `nodelocal-dns rules --config node.yaml` or `nodelocal-dns rules -localip 169.254.20.10`.
    Rules {
        /// YAML config file with a `node:` section.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// node-cache's flags instead of a config file, as in the DaemonSet's args.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        flags: Vec<String>,
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
        Command::Rules { config, flags } => print_rules(config.as_deref(), &flags),
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
        print!(
            "{}",
            translation.to_effective_yaml(&file.display().to_string())
        );
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
        let mut node = NodeSetup::new(&config.node, &config.listen, None)?;
        let errors = if teardown {
            node.teardown().await
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

/// `rules`: what the node rules of a config or a node-cache command line are, installed nowhere.
fn print_rules(config_path: Option<&std::path::Path>, flags: &[String]) -> anyhow::Result<()> {
    let config = match (config_path, flags.is_empty()) {
        (Some(path), true) => Config::load(path)?,
        (None, false) => {
            NodeCacheArgs::parse(flags)?
                .to_config(false)?
                .translation
                .config
        }
        _ => anyhow::bail!("give either --config FILE or node-cache's flags (-localip ...)"),
    };
    let node = &config.node;
    if !node.setup_iptables {
        println!("# node.setup_iptables is false (-setupiptables=false): no rules");
        return Ok(());
    }
    let backend = Backend::choose(node.backend)?;
    let endpoints = ServiceEndpoints::fixed(&node.fallback.endpoints);
    print!(
        "{}",
        nodelocal_dns::node::describe(
            backend,
            &DivertSpec::for_listeners(node, &config.listen),
            &endpoints
        )
    );
    if let Some(service) = &node.fallback.service {
        println!(
            "# while running, the fallback follows the ready endpoints of Service {service} \
             (its EndpointSlices)"
        );
    }
    Ok(())
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
    // First, as in `run`: no moment of start-up is left to SIGTERM's default action.
    let stop = StopRequests::install().context("cannot take SIGTERM and SIGINT")?;
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
    // A changed Corefile or kube-dns ConfigMap is applied as node-cache and CoreDNS's `reload`
    // apply it, without a restart.
    let options = Options {
        pidfile: args.pidfile.clone(),
        reload_from: Some(Arc::new(NodeCacheSource(args))),
    };
    serve(translation.config, options, &stop)
}

fn run(config_path: Option<PathBuf>, log_level: Option<&str>) -> anyhow::Result<()> {
    // First: a stop signal from here on is a clean stop, at any moment of start-up.
    let stop = StopRequests::install().context("cannot take SIGTERM and SIGINT")?;
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default()?,
    };
    init_logging(log_level.unwrap_or(&config.log.level))?;
    let options = Options {
        pidfile: None,
        reload_from: config_path.map(|path| Arc::new(ConfigFile(path)) as Arc<dyn ConfigSource>),
    };
    serve(config, options, &stop)
}

/// Serves `config` on a runtime sized by it, until a stop signal (see `instance`). One worker
/// is tokio's current-thread runtime: the multi-thread one would run the same tasks on one
/// worker thread with its work-stealing bookkeeping around every wake-up, and the instance's
/// own future on the main thread beside it; on the miss stream that cost about 3 % of our CPU
/// (docs/performance.md, "The runtime of one worker").
fn serve(config: Config, options: Options, stop: &StopRequests) -> anyhow::Result<()> {
    let workers = config.worker_count();
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(instance::run(config, options, stop))?;
    Ok(())
}
