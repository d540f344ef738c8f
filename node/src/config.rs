//! The daemon's settings: a TOML file, overridden by flags and `LIFELINE_*`
//! variables (the CLI applies those). Every field has a default, so a node
//! with no config file at all works on a LAN.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest config file read.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Where the web app is unless the config says otherwise.
pub const DEFAULT_WEB: &str = "127.0.0.1:4180";

/// The daemon's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Addresses to listen on (libp2p multiaddrs).
    pub listen: Vec<String>,
    /// Peers to dial at start and to seed Kademlia with
    /// (`/ip4/192.0.2.1/tcp/4100/p2p/12D3KooW...`).
    pub bootstrap: Vec<String>,
    /// Find neighbours on the LAN by mDNS.
    pub mdns: bool,
    /// Serve as a circuit relay and Kademlia server for others (bootstrap relays).
    pub relay: bool,
    /// The control API's Unix socket (default: `control.sock` in the data folder).
    pub control_socket: Option<PathBuf>,
    /// The control API also on this loopback TCP address (callers show the
    /// token in `control.token` in the data folder). Off unless set.
    pub control_tcp: Option<String>,
    /// Prometheus metrics and `/healthz` over HTTP (`"off"` to disable).
    pub metrics: String,
    /// The web app for people (docs/web.md), at this address, or `"off"`.
    /// On loopback (the default) it opens at once in this machine's
    /// browser. On any other address, such as `0.0.0.0:4180` for a
    /// shelter's Wi-Fi, each browser first pairs with a code from
    /// `lifeline web pair`.
    pub web: String,
    /// Offline map tiles for the web app's map: a PMTiles file of raster
    /// tiles (docs/web.md). None: the map draws on plain coordinates.
    pub web_tiles: Option<PathBuf>,
    /// The chain's genesis file (default: `genesis.toml` in the data folder,
    /// if it exists; without one the node routes messages but keeps no chain).
    pub genesis: Option<PathBuf>,
    /// A GeoJSON file of region shapes keyed by CAP geocode, so that
    /// `alerts --near` can place a point in an alert's area given by code
    /// only (format: docs/operators.md). None: such areas are "known by code
    /// only".
    pub geocode_shapes: Option<PathBuf>,
    /// Most connections in all.
    pub max_connections: u32,
    /// Most connections with one peer.
    pub max_connections_per_peer: u32,
    /// Most inbound connections from one IP address (relayed ones count
    /// against their relay's limits instead). A quarter of
    /// `max_connections` is kept for this node's own dials.
    pub max_connections_per_ip: u32,
    /// Misbehaviour count (from routing and chain sync) at which a peer is
    /// disconnected and banned for `ban_secs`.
    pub ban_threshold: u64,
    /// See `ban_threshold`.
    pub ban_secs: u64,
    /// Most messages held in custody for others.
    pub custody_max_messages: usize,
    /// Most megabytes held in custody for others.
    pub custody_max_mb: usize,
    /// Scoped routing for very large meshes: how far this node's route
    /// travels, in hops of a good link (0: everywhere, the default). Every
    /// node of a mesh should use the same value; see docs/routing.md.
    pub zone_hops: u32,
    /// Scoped routing: one node in this many is a landmark.
    pub landmark_one_in: u32,
    /// This node's position, `[latitude, longitude]` in degrees, for
    /// area-limited broadcasts.
    pub position: Option<[f64; 2]>,
    /// SOS messages one origin may send: a burst, then one every
    /// `sos_interval_secs`. Every relay applies it too, so every node of a
    /// mesh should use the same values; raised only for benchmarks.
    pub sos_burst: u32,
    /// See `sos_burst`.
    pub sos_interval_secs: u64,
    /// Bulk (P3) pacing per neighbour: the queueing delay aimed at on each
    /// hop, in ms, fractions too (docs/protocol.md, Bulk pacing). 0 turns
    /// pacing off.
    pub bulk_pace_target_ms: f64,
    /// Seconds between pings of each neighbour (their round-trip times are
    /// the routing metric's latency part).
    pub ping_interval_secs: u64,
    /// Relay mode: most reservations held for other peers.
    pub relay_max_reservations: usize,
    /// Relay mode: most circuits relayed at once.
    pub relay_max_circuits: usize,
    /// Relay mode: how long one relayed connection may last, in seconds.
    pub relay_circuit_secs: u64,
    /// Relay mode: most megabytes one relayed connection may carry.
    pub relay_circuit_mb: u64,
    /// Addresses others reach this node at (a public IP, a port forward).
    /// A relay advertises itself only with one; others learn them by identify.
    pub external_addresses: Vec<String>,
    /// Only these peers (ids) may connect, either way: a closed mesh of known
    /// devices. Empty: anyone may.
    pub allow_peers: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4100".into(),
                "/ip4/0.0.0.0/udp/4100/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            relay: false,
            control_socket: None,
            control_tcp: None,
            metrics: "127.0.0.1:9184".into(),
            web: DEFAULT_WEB.into(),
            web_tiles: None,
            genesis: None,
            geocode_shapes: None,
            max_connections: 256,
            max_connections_per_peer: 4,
            max_connections_per_ip: 16,
            ban_threshold: 100,
            ban_secs: 600,
            custody_max_messages: 10_000,
            custody_max_mb: 256,
            zone_hops: 0,
            landmark_one_in: 64,
            position: None,
            sos_burst: 3,
            sos_interval_secs: 20,
            bulk_pace_target_ms: lifeline_routing::Config::default().pace_target_us as f64 / 1000.0,
            ping_interval_secs: 15,
            relay_max_reservations: 128,
            relay_max_circuits: 16,
            relay_circuit_secs: 3600,
            relay_circuit_mb: 64,
            external_addresses: Vec::new(),
            allow_peers: Vec::new(),
        }
    }
}

/// Why the settings are not usable.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any config.
    #[error("the config file {0} is larger than 1 MiB; is it the right file?")]
    TooLarge(PathBuf),
    /// The TOML is wrong (the message gives line, column and what is wrong).
    #[error("the config file {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the line.
        message: String,
    },
    /// A setting's value is wrong.
    #[error("setting `{setting}`: {reason}")]
    Value {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Reads `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_CONFIG_FILE {
            return Err(ConfigError::TooLarge(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text and checks the values.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that TOML types cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let value = |setting, reason: String| Err(ConfigError::Value { setting, reason });
        for a in &self.listen {
            if let Err(e) = a.parse::<libp2p::Multiaddr>() {
                return value(
                    "listen",
                    format!("{a:?} is not a multiaddr ({e}); for example /ip4/0.0.0.0/tcp/4100"),
                );
            }
        }
        for a in &self.bootstrap {
            match a.parse::<libp2p::Multiaddr>() {
                Err(e) => return value("bootstrap", format!("{a:?} is not a multiaddr ({e})")),
                Ok(m) if peer_of(&m).is_none() => {
                    return value(
                        "bootstrap",
                        format!(
                            "{a:?} does not end in /p2p/PEER_ID; bootstrap peers must be named"
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        if self.metrics != "off" && self.metrics.parse::<SocketAddr>().is_err() {
            return value(
                "metrics",
                format!(
                    "{:?} is not an address such as 127.0.0.1:9184 (or \"off\")",
                    self.metrics
                ),
            );
        }
        if self.web != "off" && self.web.parse::<SocketAddr>().is_err() {
            return value(
                "web",
                format!(
                    "{:?} is not an address such as 127.0.0.1:4180, or 0.0.0.0:4180 to offer \
                     the app on the LAN behind pairing (or \"off\")",
                    self.web
                ),
            );
        }
        if !(0.0..=1000.0).contains(&self.bulk_pace_target_ms) {
            return value(
                "bulk_pace_target_ms",
                format!(
                    "{} is not a delay from 0 to 1000 ms; a few ms or less suits every \
                     link (0 turns bulk pacing off)",
                    self.bulk_pace_target_ms
                ),
            );
        }
        if self.max_connections == 0
            || self.max_connections_per_peer == 0
            || self.max_connections_per_ip == 0
        {
            return value(
                "max_connections",
                "connection limits must be at least 1".into(),
            );
        }
        if let Some([lat, lon]) = self.position
            && !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
        {
            return value(
                "position",
                format!("[{lat}, {lon}] is not [latitude, longitude] in degrees"),
            );
        }
        if self.ping_interval_secs == 0 {
            return value("ping_interval_secs", "must be at least 1".into());
        }
        if let Some(addr) = &self.control_tcp {
            match addr.parse::<SocketAddr>() {
                Err(_) => {
                    return value(
                        "control_tcp",
                        format!("{addr:?} is not an address such as 127.0.0.1:9185"),
                    );
                }
                Ok(a) if !a.ip().is_loopback() => {
                    return value(
                        "control_tcp",
                        format!(
                            "{addr:?} is not a loopback address: the control API controls the \
                             node, so it stays on this machine (use 127.0.0.1 or ::1)"
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        for a in &self.external_addresses {
            if let Err(e) = a.parse::<libp2p::Multiaddr>() {
                return value(
                    "external_addresses",
                    format!(
                        "{a:?} is not a multiaddr ({e}); for example /ip4/203.0.113.7/tcp/4100"
                    ),
                );
            }
        }
        if self.relay_circuit_secs == 0 || self.relay_circuit_mb == 0 {
            return value(
                "relay_circuit_secs",
                "relayed connections need some time and some bytes (at least 1)".into(),
            );
        }
        for id in &self.allow_peers {
            if id.parse::<libp2p::PeerId>().is_err() {
                return value(
                    "allow_peers",
                    format!("{id:?} is not a peer id (ids start with 12D3KooW)"),
                );
            }
        }
        Ok(())
    }

    /// The peers allowed, if the mesh is closed (checked by [`Self::check`]).
    pub fn allowed_peers(&self) -> Option<Vec<libp2p::PeerId>> {
        (!self.allow_peers.is_empty()).then(|| {
            self.allow_peers
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
    }

    /// The loopback TCP control address, if set (checked by [`Self::check`]).
    pub fn control_tcp_addr(&self) -> Option<SocketAddr> {
        self.control_tcp.as_deref().and_then(|a| a.parse().ok())
    }

    /// The web app's address, unless it is off (checked by [`Self::check`]).
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.parse().ok()
    }

    /// The metrics address, unless disabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.parse().ok()
    }
}

/// The peer id at the end of a multiaddr, if any.
pub fn peer_of(addr: &libp2p::Multiaddr) -> Option<libp2p::PeerId> {
    addr.iter().last().and_then(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_line_and_the_setting() {
        let e = Config::from_toml("mdns = true\nrelay = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Config::from_toml("colour = 3\n").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let e = Config::from_toml("bootstrap = [\"/ip4/1.2.3.4/tcp/1\"]\n").unwrap_err();
        assert!(e.to_string().contains("/p2p/"), "{e}");
        let e = Config::from_toml("metrics = \"loopback\"\n").unwrap_err();
        assert!(e.to_string().contains("metrics"), "{e}");
        let e = Config::from_toml("position = [91.0, 0.0]\n").unwrap_err();
        assert!(e.to_string().contains("latitude"), "{e}");
    }

    #[test]
    fn the_pace_target_takes_whole_and_fractional_ms_within_bounds() {
        let whole = Config::from_toml("bulk_pace_target_ms = 2\n").unwrap();
        assert_eq!(whole.bulk_pace_target_ms, 2.0);
        let fraction = Config::from_toml("bulk_pace_target_ms = 0.5\n").unwrap();
        assert_eq!(fraction.bulk_pace_target_ms, 0.5);
        for bad in ["-1", "1e9", "nan"] {
            let e = Config::from_toml(&format!("bulk_pace_target_ms = {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("bulk_pace_target_ms"), "{e}");
        }
    }

    #[test]
    fn a_missing_file_says_which() {
        let e = Config::from_file(Path::new("/nonexistent/lifeline.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/lifeline.toml"), "{e}");
    }
}
