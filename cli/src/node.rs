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
    /// An address others reach this node at (a public IP; repeat for several).
    /// A relay advertises itself only with one
    #[arg(
        long = "external-address",
        env = "LIFELINE_EXTERNAL_ADDRESSES",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    external_addresses: Vec<String>,
    /// Do not look for neighbours on the LAN (mDNS)
    #[arg(long, env = "LIFELINE_NO_MDNS")]
    no_mdns: bool,
    /// Relay mode: relay circuits and serve the DHT for others
    #[arg(long, env = "LIFELINE_RELAY")]
    relay: bool,
    /// Serve metrics and /healthz on ADDR ("off" to disable) [default: 127.0.0.1:9184]
    #[arg(long, env = "LIFELINE_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// Serve the web app on ADDR ("off" to disable) [default: 127.0.0.1:4180].
    /// Any address but loopback, such as 0.0.0.0:4180 for a shelter's
    /// Wi-Fi, asks each browser to pair first (`lifeline web pair`)
    #[arg(long, env = "LIFELINE_WEB", value_name = "ADDR")]
    web: Option<String>,
    /// Offline map tiles for the web app's map: a PMTiles file of raster tiles
    #[arg(long, env = "LIFELINE_WEB_TILES", value_name = "FILE")]
    web_tiles: Option<PathBuf>,
    /// The chain's genesis file [default: genesis.toml in the data folder]
    #[arg(long, env = "LIFELINE_GENESIS", value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// Shapes of region codes for alerts given by code only (GeoJSON; see
    /// docs/operators.md)
    #[arg(long, env = "LIFELINE_GEOCODE_SHAPES", value_name = "FILE")]
    geocode_shapes: Option<PathBuf>,
    /// Log format
    #[arg(long, env = "LIFELINE_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(flatten)]
    tuning: Tuning,
}

/// The remaining settings: limits, bans, custody, position.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Limits and tuning (defaults in docs/operators.md)")]
pub struct Tuning {
    /// Most connections in all
    #[arg(long, env = "LIFELINE_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<u32>,
    /// Most connections with one peer
    #[arg(long, env = "LIFELINE_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    max_connections_per_peer: Option<u32>,
    /// Most inbound connections from one IP address
    #[arg(long, env = "LIFELINE_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<u32>,
    /// Misbehaviour count at which a peer is disconnected and banned
    #[arg(long, env = "LIFELINE_BAN_THRESHOLD", value_name = "N")]
    ban_threshold: Option<u64>,
    /// How long a ban lasts, in seconds
    #[arg(long, env = "LIFELINE_BAN_SECS", value_name = "SECS")]
    ban_secs: Option<u64>,
    /// Most messages held in custody for others
    #[arg(long, env = "LIFELINE_CUSTODY_MAX_MESSAGES", value_name = "N")]
    custody_max_messages: Option<usize>,
    /// Most megabytes held in custody for others
    #[arg(long, env = "LIFELINE_CUSTODY_MAX_MB", value_name = "MB")]
    custody_max_mb: Option<usize>,
    /// This node's position, for area-limited broadcasts
    #[arg(
        long,
        env = "LIFELINE_POSITION",
        value_name = "LAT,LON",
        allow_hyphen_values = true
    )]
    position: Option<String>,
    /// SOS messages one origin may send at once (every node of a mesh
    /// should use the same; raised only for benchmarks)
    #[arg(long, env = "LIFELINE_SOS_BURST", value_name = "N")]
    sos_burst: Option<u32>,
    /// Then one SOS per origin every this many seconds
    #[arg(long, env = "LIFELINE_SOS_INTERVAL_SECS", value_name = "SECS")]
    sos_interval_secs: Option<u64>,
    /// Queueing delay bulk may build on each hop, in ms, fractions too (0:
    /// bulk unpaced)
    #[arg(long, env = "LIFELINE_BULK_PACE_TARGET_MS", value_name = "MS")]
    bulk_pace_target_ms: Option<f64>,
    /// Seconds between pings of each neighbour
    #[arg(long, env = "LIFELINE_PING_INTERVAL_SECS", value_name = "SECS")]
    ping_interval_secs: Option<u64>,
    /// Relay mode: most reservations held for other peers
    #[arg(long, env = "LIFELINE_RELAY_MAX_RESERVATIONS", value_name = "N")]
    relay_max_reservations: Option<usize>,
    /// Relay mode: most circuits relayed at once
    #[arg(long, env = "LIFELINE_RELAY_MAX_CIRCUITS", value_name = "N")]
    relay_max_circuits: Option<usize>,
    /// Relay mode: how long one relayed connection may last, in seconds
    #[arg(long, env = "LIFELINE_RELAY_CIRCUIT_SECS", value_name = "SECS")]
    relay_circuit_secs: Option<u64>,
    /// Relay mode: most megabytes one relayed connection may carry
    #[arg(long, env = "LIFELINE_RELAY_CIRCUIT_MB", value_name = "MB")]
    relay_circuit_mb: Option<u64>,
}

impl Tuning {
    fn apply(&self, config: &mut Config) -> Result<()> {
        fn set<T: Clone>(from: &Option<T>, to: &mut T) {
            if let Some(v) = from {
                *to = v.clone();
            }
        }
        set(&self.max_connections, &mut config.max_connections);
        set(
            &self.max_connections_per_peer,
            &mut config.max_connections_per_peer,
        );
        set(
            &self.max_connections_per_ip,
            &mut config.max_connections_per_ip,
        );
        set(&self.ban_threshold, &mut config.ban_threshold);
        set(&self.ban_secs, &mut config.ban_secs);
        set(&self.custody_max_messages, &mut config.custody_max_messages);
        set(&self.custody_max_mb, &mut config.custody_max_mb);
        set(&self.sos_burst, &mut config.sos_burst);
        set(&self.sos_interval_secs, &mut config.sos_interval_secs);
        set(&self.bulk_pace_target_ms, &mut config.bulk_pace_target_ms);
        set(&self.ping_interval_secs, &mut config.ping_interval_secs);
        set(
            &self.relay_max_reservations,
            &mut config.relay_max_reservations,
        );
        set(&self.relay_max_circuits, &mut config.relay_max_circuits);
        set(&self.relay_circuit_secs, &mut config.relay_circuit_secs);
        set(&self.relay_circuit_mb, &mut config.relay_circuit_mb);
        if let Some(text) = &self.position {
            let bad = || {
                anyhow::anyhow!("--position {text:?} is not LAT,LON in degrees (e.g. 51.34,12.37)")
            };
            let (lat, lon) = text.split_once(',').ok_or_else(bad)?;
            let lat: f64 = lat.trim().parse().map_err(|_| bad())?;
            let lon: f64 = lon.trim().parse().map_err(|_| bad())?;
            config.position = Some([lat, lon]);
        }
        Ok(())
    }
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
    config
        .external_addresses
        .extend(args.external_addresses.iter().cloned());
    if args.no_mdns {
        config.mdns = false;
    }
    if args.relay {
        config.relay = true;
    }
    if let Some(m) = &args.metrics {
        config.metrics.clone_from(m);
    }
    if let Some(w) = &args.web {
        config.web.clone_from(w);
    }
    if let Some(t) = &args.web_tiles {
        config.web_tiles = Some(t.clone());
    }
    // The global --control-tcp: where this node serves, as others connect.
    if let Some(a) = &ctx.control_tcp {
        config.control_tcp = Some(a.clone());
    }
    if let Some(g) = &args.geocode_shapes {
        config.geocode_shapes = Some(g.clone());
    }
    if let Some(g) = &args.genesis {
        config.genesis = Some(g.clone());
    }
    if let Some(s) = &ctx.control_socket {
        config.control_socket = Some(s.clone());
    }
    args.tuning.apply(&mut config)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        node: NodeArgs,
    }

    #[test]
    fn every_setting_has_a_flag() {
        let args = Wrap::try_parse_from([
            "node",
            "--max-connections",
            "7",
            "--max-connections-per-peer",
            "3",
            "--max-connections-per-ip",
            "2",
            "--ban-threshold",
            "5",
            "--ban-secs",
            "60",
            "--custody-max-messages",
            "99",
            "--custody-max-mb",
            "12",
            "--position",
            "-33.9,18.4",
            "--ping-interval-secs",
            "4",
            "--relay-max-reservations",
            "8",
            "--relay-max-circuits",
            "2",
            "--relay-circuit-secs",
            "600",
            "--relay-circuit-mb",
            "8",
            "--allow-peer",
            "12D3KooWRHnwM4qsWBPp4r7vFGsNuTTEEuKCjXALEhQLPPNZ5wJ4",
        ])
        .unwrap()
        .node;
        let mut config = Config::default();
        args.tuning.apply(&mut config).unwrap();
        assert_eq!(
            (
                config.max_connections,
                config.max_connections_per_peer,
                config.max_connections_per_ip
            ),
            (7, 3, 2)
        );
        assert_eq!((config.ban_threshold, config.ban_secs), (5, 60));
        assert_eq!(
            (config.custody_max_messages, config.custody_max_mb),
            (99, 12)
        );
        assert_eq!(config.position, Some([-33.9, 18.4]));
        assert_eq!(config.ping_interval_secs, 4);
        assert_eq!(
            (config.relay_max_reservations, config.relay_max_circuits),
            (8, 2)
        );
        assert_eq!(args.allow_peers.len(), 1);
        let bad = Wrap::try_parse_from(["node", "--position", "north"])
            .unwrap()
            .node;
        let e = bad
            .tuning
            .apply(&mut Config::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("LAT,LON"), "{e}");
    }
}
