//! The libp2p swarm: transports, discovery, NAT traversal, limits, and the
//! stream behaviour that carries lifeline's mesh protocol.

use std::time::Duration;

use libp2p::{
    StreamProtocol, Swarm, allow_block_list, autonat, connection_limits, dcutr, identify, kad,
    mdns, noise, ping, relay, tcp,
};
use prometheus_client::registry::Registry;
use thiserror::Error;

use crate::config::Config;

/// lifeline's Kademlia protocol: its own DHT, not the public IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/lifeline/kad/1.0.0");
/// What identify announces.
pub const PROTOCOL_VERSION: &str = "/lifeline/1.0.0";

pub use behaviour::{Behaviour, BehaviourEvent};

mod behaviour {
    // The derive makes an event enum (`BehaviourEvent`) with one variant per
    // field, which it does not document.
    #![allow(missing_docs)]

    use libp2p::swarm::NetworkBehaviour;
    use libp2p::swarm::behaviour::toggle::Toggle;
    use libp2p::{
        allow_block_list, autonat, connection_limits, dcutr, identify, kad, mdns, ping, relay,
    };

    /// Everything the node's swarm does.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Peers banned for misbehaviour.
        pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
        /// A closed mesh: only these peers (`allow_peers`).
        pub allowed: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
        /// Inbound connections per IP address.
        pub ip_limit: crate::ip_limit::Behaviour,
        /// Connection limits.
        pub limits: connection_limits::Behaviour,
        /// Reaching and being reached through relays.
        pub relay_client: relay::client::Behaviour,
        /// Relay mode: relaying for others.
        pub relay_server: Toggle<relay::Behaviour>,
        /// Who a peer is and which addresses it sees.
        pub identify: identify::Behaviour,
        /// Liveness and round-trip times (the routing metric's latency).
        pub ping: ping::Behaviour,
        /// Neighbours on the LAN.
        pub mdns: Toggle<mdns::tokio::Behaviour>,
        /// Peers beyond the LAN.
        pub kad: kad::Behaviour<kad::store::MemoryStore>,
        /// Hole punching through relays.
        pub dcutr: dcutr::Behaviour,
        /// Whether we are reachable from outside.
        pub autonat: autonat::Behaviour,
        /// lifeline's mesh protocol streams.
        pub stream: libp2p_stream::Behaviour,
    }
}

/// Most inbound connections: `max_connections` less a quarter kept for
/// this node's own dials (at least one inbound).
pub fn max_inbound(max_connections: u32) -> u32 {
    max_connections.saturating_sub(max_connections / 4).max(1)
}

/// Why the swarm could not be built.
#[derive(Debug, Error)]
pub enum SwarmError {
    /// A transport or the relay client could not be set up.
    #[error("cannot set up the network transports: {0}")]
    Transport(String),
    /// mDNS could not start (no multicast socket).
    #[error(
        "cannot start mDNS ({0}); set `mdns = false` in the config (or --no-mdns) and give bootstrap peers"
    )]
    Mdns(std::io::Error),
}

/// Bytes a TCP connection may hold that it has not sent yet
/// (`TCP_NOTSENT_LOWAT`). The kernel otherwise lets a socket buffer grow to
/// megabytes, and an SOS written behind them waits until they are sent: at
/// 20 Mbit/s, 4 MiB is 1.7 s. The router keeps bulk instead, in priority
/// order (docs/protocol.md, Buffers below the router).
pub const TCP_UNSENT_BYTES: u32 = 8 * 1024;

/// Holds a new TCP connection's unsent backlog to [`TCP_UNSENT_BYTES`].
/// Where the kernel refuses, the connection works as before, with a
/// longer wait for an SOS behind bulk.
fn hold_back_unsent(stream: &tcp::tokio::TcpStream) {
    if let Err(e) = socket2::SockRef::from(&stream.0).set_tcp_notsent_lowat(TCP_UNSENT_BYTES) {
        tracing::debug!("cannot limit a TCP connection's unsent bytes: {e}");
    }
}

/// Builds the swarm for `keypair` with `config`, registering libp2p's
/// metrics in `registry`.
pub fn build(
    keypair: libp2p::identity::Keypair,
    config: &Config,
    registry: &mut Registry,
) -> Result<Swarm<Behaviour>, SwarmError> {
    let transport = |e: &dyn std::fmt::Display| SwarmError::Transport(e.to_string());
    let mdns_error = std::cell::RefCell::new(None);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                use libp2p::core::Transport as _;
                Ok(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .map(|stream, _| {
                            hold_back_unsent(&stream);
                            stream
                        })
                        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(crate::muxer::Yamux::default()),
                )
            },
        )
        .map_err(|e| transport(&e))?
        .with_relay_client(noise::Config::new, crate::muxer::Yamux::default)
        .map_err(|e| transport(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| {
            let id = key.public().to_peer_id();
            let mdns = if config.mdns {
                // Ask again every 30 s, so a neighbour whose link came back is found soon.
                let mdns_config = mdns::Config {
                    query_interval: Duration::from_secs(30),
                    ..mdns::Config::default()
                };
                match mdns::tokio::Behaviour::new(mdns_config, id) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        *mdns_error.borrow_mut() = Some(e);
                        None
                    }
                }
            } else {
                None
            };
            let relay_server = config.relay.then(|| {
                relay::Behaviour::new(
                    id,
                    relay::Config {
                        max_reservations: config.relay_max_reservations,
                        max_circuits: config.relay_max_circuits,
                        // libp2p's defaults (2 minutes, 128 KiB) suit a hole punch;
                        // a lifeline relay carries mesh links for as long as needed.
                        max_circuit_duration: Duration::from_secs(config.relay_circuit_secs),
                        max_circuit_bytes: config.relay_circuit_mb.saturating_mul(1 << 20),
                        ..relay::Config::default()
                    },
                )
            });
            let mut kad = kad::Behaviour::with_config(
                id,
                kad::store::MemoryStore::new(id),
                kad::Config::new(KAD_PROTOCOL),
            );
            // Relays serve the DHT; other nodes decide by AutoNAT's verdict.
            if config.relay {
                kad.set_mode(Some(kad::Mode::Server));
            }
            let allowed = config.allowed_peers().map(|peers| {
                let mut list = allow_block_list::Behaviour::default();
                for p in peers {
                    list.allow_peer(p);
                }
                list
            });
            Behaviour {
                blocked: allow_block_list::Behaviour::default(),
                allowed: allowed.into(),
                ip_limit: crate::ip_limit::Behaviour::new(config.max_connections_per_ip),
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(config.max_connections))
                        // A quarter stays free for this node's own dials,
                        // however many peers dial it.
                        .with_max_established_incoming(Some(max_inbound(config.max_connections)))
                        .with_max_established_per_peer(Some(config.max_connections_per_peer))
                        .with_max_pending_incoming(Some(64)),
                ),
                relay_client,
                relay_server: relay_server.into(),
                identify: identify::Behaviour::new(
                    identify::Config::new(PROTOCOL_VERSION.into(), key.public())
                        .with_agent_version(format!("lifeline/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(Duration::from_secs(config.ping_interval_secs)),
                ),
                mdns: mdns.into(),
                kad,
                dcutr: dcutr::Behaviour::new(id),
                autonat: autonat::Behaviour::new(
                    id,
                    autonat::Config {
                        // A disaster mesh is often private addresses only (a
                        // shelter LAN, 10/8 community meshes): reachable there
                        // is reachable. libp2p's default counts public IPs only.
                        only_global_ips: false,
                        boot_delay: Duration::from_secs(5),
                        ..autonat::Config::default()
                    },
                ),
                stream: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    if let Some(e) = mdns_error.into_inner() {
        return Err(SwarmError::Mdns(e));
    }
    let mut swarm = swarm;
    // Addresses the operator vouches for count as confirmed: a relay starts
    // advertising itself at once, instead of waiting for AutoNAT.
    for a in &config.external_addresses {
        if let Ok(addr) = a.parse() {
            swarm.add_external_address(addr);
        }
    }
    Ok(swarm)
}
