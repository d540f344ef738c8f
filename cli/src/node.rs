//! `lifeline node`: the daemon.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use lifeline_crypto::keystore::KdfParams;
use lifeline_crypto::{KeyBundle, Keystore};
use lifeline_node::{Config, Options};

use crate::passphrase::{self, Use};
use crate::{Context as Ctx, keys};

/// How logs look.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Arguments of `lifeline node`. Each overrides the config file.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    lifeline node                                   # on a LAN: finds neighbours by mDNS\n  \
    lifeline node --bootstrap /ip4/192.0.2.7/tcp/4100/p2p/12D3KooW...\n  \
    lifeline node --relay --listen /ip4/0.0.0.0/tcp/4100   # a bootstrap relay\n\n\
    Settings come from --config (default $XDG_CONFIG_HOME/lifeline/config.toml, if it exists), \
    then LIFELINE_* variables and flags. Stop with Ctrl-C or SIGTERM.")]
pub struct NodeArgs {
    /// The config file
    #[arg(long, env = "LIFELINE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on ADDR (a multiaddr; repeat for several) [default: TCP and QUIC on port 4100]
    #[arg(
        long,
        env = "LIFELINE_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    listen: Vec<String>,
    /// Dial ADDR at start (a multiaddr ending in /p2p/ID; repeat for several)
    #[arg(
        long,
        env = "LIFELINE_BOOTSTRAP",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    bootstrap: Vec<String>,
    /// Only this peer may connect (repeat for several): a closed mesh
    #[arg(
        long = "allow-peer",
        env = "LIFELINE_ALLOW_PEERS",
        value_delimiter = ',',
        value_name = "ID"
    )]
    allow_peers: Vec<String>,
    /// Do not look for neighbours on the LAN (mDNS)
    #[arg(long, env = "LIFELINE_NO_MDNS")]
    no_mdns: bool,
    /// Relay mode: relay circuits and serve the DHT for others
    #[arg(long, env = "LIFELINE_RELAY")]
    relay: bool,
    /// Serve metrics and /healthz on ADDR ("off" to disable) [default: 127.0.0.1:9184]
    #[arg(long, env = "LIFELINE_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// The chain's genesis file [default: genesis.toml in the data folder]
    #[arg(long, env = "LIFELINE_GENESIS", value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// Log format
    #[arg(long, env = "LIFELINE_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
}

/// The default config file, if it exists.
fn default_config() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("lifeline/config.toml")).filter(|p| p.exists())
}

fn settings(ctx: &Ctx, args: &NodeArgs) -> Result<Config> {
    let mut config = match args.config.clone().or_else(default_config) {
        Some(path) => Config::from_file(&path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listen.clone_from(&args.listen);
    }
    config.bootstrap.extend(args.bootstrap.iter().cloned());
    config.allow_peers.extend(args.allow_peers.iter().cloned());
    if args.no_mdns {
        config.mdns = false;
    }
    if args.relay {
        config.relay = true;
    }
    if let Some(m) = &args.metrics {
        config.metrics.clone_from(m);
    }
    if let Some(g) = &args.genesis {
        config.genesis = Some(g.clone());
    }
    if let Some(s) = &ctx.control_socket {
        config.control_socket = Some(s.clone());
    }
    config.check()?;
    Ok(config)
}

/// Loads the keystore, or makes one on the first start.
fn keys_for_node(ctx: &Ctx) -> Result<KeyBundle> {
    let store: Keystore = keys::keystore_of(ctx);
    if store.exists() {
        return Ok(keys::load(ctx)?.1);
    }
    std::fs::create_dir_all(&ctx.data_dir)
        .with_context(|| format!("cannot create the data folder {}", ctx.data_dir.display()))?;
    let pass = passphrase::read(
        ctx.passphrase_file.as_deref(),
        Use::New,
        "this node's new keystore",
    )?;
    let mut rng = rand::rng();
    let bundle = KeyBundle::generate(keys::now(), &mut rng);
    store
        .create(&bundle, pass.as_bytes(), KdfParams::DEFAULT, &mut rng)
        .with_context(|| format!("cannot write {}", keys::keystore_label(&store)))?;
    eprintln!(
        "Created this node's identity {} in {}; back it up with `lifeline key export FILE`.",
        bundle.identity.id(),
        store.path().display()
    );
    Ok(bundle)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFELINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `lifeline node`.
pub fn run(ctx: &Ctx, args: NodeArgs) -> Result<()> {
    let config = settings(ctx, &args)?;
    init_logging(args.log_format);
    let keys = keys_for_node(ctx)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = Options {
        config,
        data_dir: ctx.data_dir.clone(),
        keys,
    };
    runtime.block_on(lifeline_node::run(options, shutdown_signal()))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
}

/// The control socket of the node with data folder `data_dir`.
pub fn socket(data_dir: &Path, flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(
        || lifeline_node::control::default_socket(data_dir),
        Path::to_path_buf,
    )
}
