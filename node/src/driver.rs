//! The driver: one task that owns the swarm, the router and the chain, and
//! feeds them time, network input and the control API's commands.
//!
//! Everything that changes routing or chain state happens on this task, in
//! the order inputs arrive, exactly as the simulator drives the same state
//! machines. Custody and blocks are written to RocksDB by the state machines'
//! stores before anything is acknowledged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, identify, kad, mdns, ping};
use lifeline_consensus::sync::{Sync, SyncMessage};
use lifeline_crypto::envelope::ReplayGuard;
use lifeline_crypto::{KeyBundle, NodeId, Timestamp};
use lifeline_routing::routes::link_cost;
use lifeline_routing::{Address, Event, MessageId, Router, Status};
use lifeline_storage::{Database, Inbox, RocksMessageStore, StorageError};
use prometheus_client::registry::Registry;
use rand::SeedableRng;
use rand::rngs::StdRng;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::config::{Config, peer_of};
use crate::control::Command;
use crate::mesh::{self, Frame, MeshEvent};
use crate::metrics::{self, Heartbeat, Metrics};
use crate::pb::control as api;
use crate::swarm::{self, Behaviour, BehaviourEvent, SwarmError};

mod chain_driver;
mod commands;
mod disk_writer;
mod inbox;
mod requests;

use chain_driver::{ChainDriver, open_chain};

/// Inbox entries kept on disk (the oldest go first).
pub const INBOX_KEEP: usize = 10_000;
/// Transactions an authority keeps waiting for a block.
pub const MAX_POOL: usize = 4_096;
/// Receipts remembered for messages sent from here.
const MAX_RECEIPTS: usize = 10_000;
/// Sync misbehaviour (invalid or unsolicited blocks) before a ban.
const SYNC_BAN_THRESHOLD: u32 = 3;
/// Relays this node keeps a reservation on at once.
const MAX_RELAYS: usize = 2;
/// Most addresses of one peer given to Kademlia from its identify record.
const MAX_KAD_ADDRESSES: usize = 8;
/// How long open control calls may run on at shutdown.
const CONTROL_GRACE: Duration = Duration::from_secs(2);
/// Routing cost assumed for a new neighbour before its first ping.
const DEFAULT_RTT: Duration = Duration::from_millis(50);
/// How often bootstrap peers are dialled again while this node has no peer.
const BOOTSTRAP_ALONE: Duration = Duration::from_secs(10);
/// How often bootstrap peers not connected are dialled again while others are.
const BOOTSTRAP_AGAIN: Duration = Duration::from_secs(20);

/// What the daemon needs to start.
pub struct Options {
    /// Settings.
    pub config: Config,
    /// The data folder (database, control socket, default genesis file).
    pub data_dir: PathBuf,
    /// This node's keys.
    pub keys: KeyBundle,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The database could not be opened.
    #[error("cannot open the database")]
    Database(#[from] StorageError),
    /// The genesis file is unusable.
    #[error("the genesis file {path}: {reason}")]
    Genesis {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The chain could not be opened.
    #[error("cannot open the chain: {0}")]
    Chain(String),
    /// The geocode shapes file is unusable.
    #[error("{0} (fix the file, or remove `geocode_shapes` / --geocode-shapes)")]
    GeocodeShapes(#[source] crate::geocodes::GeocodeShapesError),
    /// The router could not start.
    #[error("cannot start the router: {0}")]
    Router(String),
    /// The thread that writes custody could not start.
    #[error(
        "cannot start the custody writer thread: {0} (is the system out of memory or threads?)"
    )]
    Thread(#[source] std::io::Error),
    /// The network could not be set up.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// A listen address could not be used.
    #[error(
        "cannot listen on {addr}: {reason} (is another lifeline node using it? set `listen` or --listen)"
    )]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The control socket could not be opened.
    #[error("cannot open the control socket {path}: {reason}")]
    ControlSocket {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {reason} (set `metrics` or --metrics, or \"off\")")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The web app cannot start.
    #[error("cannot serve the web app: {0} (set `web` or --web, or \"off\")")]
    Web(crate::web::WebError),
    /// The keys cannot be used as a libp2p identity.
    #[error("the identity key cannot be used for libp2p: {0}")]
    Identity(String),
}

/// The time now, in µs since the UNIX epoch.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The time now, in ms since the UNIX epoch.
fn wall_ms() -> u64 {
    wall_us() / 1000
}

/// A connected peer.
#[derive(Debug, Default)]
struct Peer {
    /// Its lifeline address (ed25519 peers only).
    address: Option<Address>,
    /// Our mesh stream's writer, once open.
    writer: Option<mesh::Writer>,
    /// A writer task is opening a stream.
    opening: bool,
    /// Its recent ping round trips.
    rtts: RecentRtts,
    /// The round trip the router's link cost was set from.
    costed_rtt: Option<Duration>,
    /// Addresses it is connected on.
    addrs: Vec<Multiaddr>,
    /// Established connections.
    connections: u32,
    /// Misbehaviour seen on the mesh stream (garbage, stalled frames,
    /// streams beyond the limit).
    garbage: u64,
    /// Chain sync messages for it from before our stream was open (its
    /// status can come first, and the request it prompts must not be lost).
    early_sync: Vec<Vec<u8>>,
}

/// How many ping round trips a link's cost looks back on (2 minutes at the
/// default 15 s interval).
const RTT_SAMPLES: usize = 8;

/// A neighbour's last [`RTT_SAMPLES`] ping round trips. Its link cost comes
/// from the smallest: the link's own delay, not what its queues add under
/// load (a cost that followed load would move routes away from a busy link
/// and back once it emptied, over and over).
#[derive(Debug, Default)]
struct RecentRtts(std::collections::VecDeque<Duration>);

impl RecentRtts {
    fn push(&mut self, rtt: Duration) {
        if self.0.len() == RTT_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(rtt);
    }

    fn last(&self) -> Option<Duration> {
        self.0.back().copied()
    }

    fn min(&self) -> Option<Duration> {
        self.0.iter().min().copied()
    }
}

/// Chain sync messages kept for a neighbour until our stream to it opens.
const MAX_EARLY_SYNC: usize = 8;

/// A neighbour's streams to us, and the memory budget they share.
struct Inbound {
    streams: usize,
    budget: mesh::Budget,
}

/// The daemon's state, owned by its one task.
struct Node {
    swarm: Swarm<Behaviour>,
    streams: libp2p_stream::Control,
    mesh_events: mpsc::Sender<MeshEvent>,
    /// Each neighbour's mesh streams to us.
    inbound: HashMap<PeerId, Inbound>,
    /// The memory all neighbours' large frames share.
    large_frames: Arc<tokio::sync::Semaphore>,
    router: Router<RocksMessageStore>,
    /// Writes the router's custody batches ([`Router::defer_writes`]) and
    /// the inbox's entries.
    disk: disk_writer::DiskWriter,
    chain: Option<ChainDriver>,
    keys: KeyBundle,
    replay: ReplayGuard,
    inbox: Inbox,
    inbox_watch: broadcast::Sender<api::InboxMessage>,
    peers: HashMap<PeerId, Peer>,
    by_address: HashMap<Address, PeerId>,
    receipts: HashMap<MessageId, Vec<String>>,
    receipt_order: VecDeque<MessageId>,
    rng: StdRng,
    metrics: Metrics,
    heartbeat: Heartbeat,
    config: Config,
    listen_addrs: Vec<Multiaddr>,
    bans: BTreeMap<u64, Vec<PeerId>>,
    bootstrap: Vec<(PeerId, Multiaddr)>,
    /// What AutoNAT found: whether peers can dial this node.
    reachability: String,
    /// Relays holding a reservation for us, and the listener on each.
    relays: HashMap<PeerId, libp2p::core::transport::ListenerId>,
    started: Instant,
    now: u64,
    /// The router's counters when last copied into the metrics.
    last_stats: lifeline_routing::router::Stats,
}

/// Makes `dir` (created if need be) readable by its owner only; a failure
/// is logged, not fatal (a folder the operator set up otherwise, say).
fn owner_only(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let done = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)));
    if let Err(e) = done {
        warn!(
            "cannot make {} readable by its owner only: {e}; other local users may read messages",
            dir.display()
        );
    }
}

/// Runs the daemon until `shutdown` completes, then stops accepting, lets
/// the router write what it holds, and closes the database.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let Options {
        config,
        data_dir,
        keys,
    } = options;
    // The inbox holds decrypted messages: no other local user may read it.
    owner_only(&data_dir);
    let db = Database::open(&data_dir.join("db"))?;
    owner_only(&data_dir.join("db"));
    let now = wall_ms();

    // The chain, if this node has a genesis.
    let genesis_path = config
        .genesis
        .clone()
        .or_else(|| Some(data_dir.join("genesis.toml")).filter(|p| p.exists()));
    let mut chain = match &genesis_path {
        Some(path) => Some(open_chain(
            path,
            &db,
            &keys.identity,
            config.geocode_shapes.as_deref(),
        )?),
        None => {
            warn!(
                "no genesis file (genesis.toml in the data folder, or `genesis` in the config): \
                 this node routes messages but keeps no chain"
            );
            None
        }
    };

    let mut router_config = lifeline_routing::Config {
        custody_max_messages: config.custody_max_messages,
        custody_max_bytes: config.custody_max_mb.saturating_mul(1 << 20),
        misbehaviour_threshold: config.ban_threshold,
        zone_hops: config.zone_hops,
        landmark_one_in: config.landmark_one_in,
        sos_burst: config.sos_burst.max(1),
        sos_interval_ms: config.sos_interval_secs.saturating_mul(1000),
        // Checked to be 0 to 1000 ms (Config::check).
        pace_target_us: (config.bulk_pace_target_ms * 1000.0).round() as u64,
        bulk_mtu: mesh::BULK_FRAGMENT,
        // A signed message's receipt goes once its inbox entry is on disk
        // (`driver/inbox.rs`), which the disk writer thread reports later.
        receipt_on_delivery: false,
        ..lifeline_routing::Config::default()
    };
    if let Some([lat, lon]) = config.position {
        router_config.position = Some((degrees_to_micro(lat), degrees_to_micro(lon)));
    }
    let mut router = Router::new(
        keys.identity.clone(),
        router_config,
        db.message_store(),
        rand::random(),
        now,
    )
    .map_err(|e| NodeError::Router(e.to_string()))?;
    // Custody and the inbox are written on a thread of their own, so that
    // the driver goes on routing (an SOS too) while the disk syncs.
    router.defer_writes();
    let disk = disk_writer::DiskWriter::start(db.message_store(), db.inbox())
        .map_err(NodeError::Thread)?;
    if let Some(c) = &mut chain {
        router.set_authorities(c.chain.signer_state().signers().iter().map(Address::from));
        c.share_registered(&mut router);
    }
    let (held, held_bytes) = router.custody();
    if held > 0 {
        info!(
            messages = held,
            bytes = held_bytes,
            "custody restored from the database"
        );
    }

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
    let keypair = keys
        .identity
        .to_libp2p_keypair()
        .map_err(|e| NodeError::Identity(e.to_string()))?;
    let mut swarm = swarm::build(keypair, &config, &mut registry)?;
    // Listeners fail asynchronously (a port in use shows as a closed
    // listener): the loop below turns such a failure at start into an error.
    let mut starting_listeners = HashMap::new();
    for addr in &config.listen {
        let parsed: Multiaddr = addr.parse().map_err(|e| NodeError::Listen {
            addr: addr.clone(),
            reason: format!("not a multiaddr: {e}"),
        })?;
        // libp2p binds with SO_REUSEPORT, so a port that another node holds
        // would be shared silently: a plain bind first tells.
        probe_port(&parsed).map_err(|e| NodeError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        let id = swarm.listen_on(parsed).map_err(|e| NodeError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        starting_listeners.insert(id, addr.clone());
    }
    let mut bootstrap = Vec::new();
    for addr in &config.bootstrap {
        if let Ok(m) = addr.parse::<Multiaddr>()
            && let Some(peer) = peer_of(&m)
        {
            swarm.behaviour_mut().kad.add_address(&peer, m.clone());
            bootstrap.push((peer, m));
        }
    }

    // The control API.
    let socket = config
        .control_socket
        .clone()
        .unwrap_or_else(|| crate::control::default_socket(&data_dir));
    let (commands_tx, mut commands) = mpsc::channel::<Command>(256);
    let tcp = match config.control_tcp_addr() {
        None => None,
        Some(addr) => {
            let path = crate::control::token_path(&data_dir);
            let token = crate::control::load_or_create_token(&path).map_err(|reason| {
                NodeError::ControlSocket {
                    path: path.clone(),
                    reason,
                }
            })?;
            info!(%addr, token = %path.display(), "control API also on loopback TCP");
            Some(crate::control::TcpEndpoint { addr, token })
        }
    };
    let (web_stop, web_stopped) = oneshot::channel::<()>();
    let web = start_web(&config, &data_dir, commands_tx.clone(), web_stopped).await?;
    let control_server = crate::control::serve(&socket, tcp, commands_tx, web)
        .await
        .map_err(|reason| NodeError::ControlSocket {
            path: socket.clone(),
            reason,
        })?;
    let (control_stop, control_stopped) = oneshot::channel::<()>();
    let control_task = tokio::spawn(control_server(control_stopped));

    let heartbeat = Heartbeat::default();
    heartbeat.beat();
    let metrics_task = match config.metrics_addr() {
        Some(addr) => {
            let server = metrics::serve(addr, registry, heartbeat.clone())
                .await
                .map_err(|e| NodeError::Metrics {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
            info!(%addr, "metrics on http://{addr}/metrics, health on /healthz");
            Some(tokio::spawn(server))
        }
        None => None,
    };

    let mut streams = swarm.behaviour().stream.new_control();
    let mut incoming = streams
        .accept(mesh::PROTOCOL)
        .map_err(|e| NodeError::Swarm(SwarmError::Transport(e.to_string())))?;
    let (mesh_events, mut mesh_rx) = mpsc::channel::<MeshEvent>(1024);

    let (inbox_watch, _) = broadcast::channel(256);
    let mut node = Node {
        swarm,
        streams,
        mesh_events,
        inbound: HashMap::new(),
        large_frames: mesh::Budget::shared_large(),
        router,
        disk,
        chain,
        keys,
        replay: inbox::load_opened(&db.inbox(), now)?,
        inbox: db.inbox(),
        inbox_watch,
        peers: HashMap::new(),
        by_address: HashMap::new(),
        receipts: HashMap::new(),
        receipt_order: VecDeque::new(),
        rng: StdRng::from_seed(rand::random()),
        metrics,
        heartbeat,
        config,
        listen_addrs: Vec::new(),
        bans: BTreeMap::new(),
        bootstrap,
        reachability: "unknown".into(),
        relays: HashMap::new(),
        started: Instant::now(),
        now,
        last_stats: Default::default(),
    };
    info!(id = %node.keys.identity.id(), socket = %socket.display(), "lifeline node started");
    node.dial_bootstrap();
    node.plan_seal();

    tokio::pin!(shutdown);
    let written = node.disk.done();
    let mut last_bootstrap = Instant::now();
    let mut failure = None;
    loop {
        node.heartbeat.beat();
        let wake_in = node.next_wake().saturating_sub(node.clock()).min(1_000);
        let sleep = tokio::time::sleep(Duration::from_millis(wake_in));
        tokio::select! {
            () = &mut shutdown => break,
            event = node.swarm.select_next_some() => {
                libp2p_metrics_record(&libp2p_metrics, &event);
                match &event {
                    SwarmEvent::NewListenAddr { listener_id, .. } => {
                        starting_listeners.remove(listener_id);
                    }
                    SwarmEvent::ListenerClosed { listener_id, reason: Err(e), .. } => {
                        if let Some(addr) = starting_listeners.remove(listener_id) {
                            failure = Some(NodeError::Listen { addr, reason: e.to_string() });
                            break;
                        }
                    }
                    _ => {}
                }
                node.on_swarm(event);
            }
            Some(event) = mesh_rx.recv() => node.on_mesh(event),
            Some(command) = commands.recv() => node.on_command(command),
            Some((peer, stream)) = incoming.next() => node.accept_stream(peer, stream),
            () = sleep => node.on_timer(),
            () = written.notified() => node.on_written(),
            // Blocks of a sync answer, a few at a time, taking turns with
            // everything above (select picks at random among what is ready).
            () = std::future::ready(()), if node.importing() => node.continue_import(),
        }
        node.after_input();
        // Bootstrap peers not connected are dialled again now and then: often
        // with no peer at all, less often while others are there (a shelter
        // server that was down at our start, or a first dial that lost a race).
        let redial = if node.peers.is_empty() {
            BOOTSTRAP_ALONE
        } else {
            BOOTSTRAP_AGAIN
        };
        if last_bootstrap.elapsed() > redial {
            last_bootstrap = Instant::now();
            node.dial_bootstrap();
        }
    }

    if failure.is_none() {
        info!("shutting down: closing the control socket, writing custody, closing the database");
    }
    let _ = control_stop.send(());
    // The server waits for open calls to end; a watcher (`lifeline inbox
    // --watch`) never ends its own, so it gets a short grace, then is cut.
    let mut control_task = control_task;
    if tokio::time::timeout(CONTROL_GRACE, &mut control_task)
        .await
        .is_err()
    {
        control_task.abort();
    }
    let _ = web_stop.send(());
    if let Some(task) = metrics_task {
        task.abort();
    }
    node.settle_write();
    node.router.flush();
    let _ = std::fs::remove_file(&socket);
    drop(node);
    drop(db);
    match failure {
        Some(e) => Err(e),
        None => {
            info!("stopped");
            Ok(())
        }
    }
}

fn libp2p_metrics_record(metrics: &libp2p::metrics::Metrics, event: &SwarmEvent<BehaviourEvent>) {
    use libp2p::metrics::Recorder;
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => metrics.record(e),
        SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => metrics.record(e),
        SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => metrics.record(e),
        SwarmEvent::Behaviour(BehaviourEvent::RelayServer(e)) => metrics.record(e),
        SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => metrics.record(e),
        other => metrics.record(other),
    }
}

/// Binds a listen address's port once, without port reuse, and lets it go.
/// Starts the web app if the config asks for it. A default address that
/// something else holds only turns the app off, with a warning (the node's
/// work matters more than its page); an address the operator chose must be
/// free.
async fn start_web(
    config: &Config,
    data_dir: &std::path::Path,
    commands: mpsc::Sender<Command>,
    stop: oneshot::Receiver<()>,
) -> Result<Option<std::sync::Arc<crate::web::WebHandle>>, NodeError> {
    let Some(addr) = config.web_addr() else {
        return Ok(None);
    };
    let options = crate::web::WebOptions {
        addr,
        sessions_file: Some(data_dir.join("web-sessions.json")),
        tiles: config.web_tiles.clone(),
    };
    match crate::web::serve(options, commands, stop).await {
        Ok((handle, server)) => {
            tokio::spawn(server);
            if handle.pairing_required {
                let code = handle
                    .pairing
                    .new_code(crate::web::pairing::START_CODE_LIFETIME);
                info!(
                    "web app on {} for the LAN: pair a browser with code {code} (valid for an hour, once; more with `lifeline web pair`)",
                    handle.url
                );
            } else {
                info!("web app on {}", handle.url);
            }
            Ok(Some(handle))
        }
        Err(e @ crate::web::WebError::Bind { .. }) if config.web == crate::config::DEFAULT_WEB => {
            warn!("the web app is off: {e}; set `web` or --web to another address");
            Ok(None)
        }
        Err(e) => Err(NodeError::Web(e)),
    }
}

/// The address a connection to `peer` is shown and kept under. A circuit
/// the peer opened to us through our relay reservation reports only
/// `/p2p/PEER` as its remote end; it is kept as the way it came instead,
/// `RELAY-ADDR/p2p-circuit/p2p/PEER`, the same form a dialled circuit has,
/// so that `lifeline peers` says the link is relayed whichever end dialled.
fn connection_addr(peer: PeerId, endpoint: &libp2p::core::ConnectedPoint) -> Multiaddr {
    match endpoint {
        libp2p::core::ConnectedPoint::Listener { local_addr, .. }
            if local_addr.iter().any(|p| p == Protocol::P2pCircuit) =>
        {
            local_addr.clone().with(Protocol::P2p(peer))
        }
        _ => endpoint.get_remote_address().clone(),
    }
}

fn probe_port(addr: &Multiaddr) -> std::io::Result<()> {
    use libp2p::multiaddr::Protocol;
    use std::net::IpAddr;
    let (mut ip, mut tcp, mut udp) = (None, None, None);
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(IpAddr::V6(a)),
            Protocol::Tcp(port) => tcp = Some(port),
            Protocol::Udp(port) => udp = Some(port),
            _ => {}
        }
    }
    match (ip, tcp, udp) {
        (Some(ip), Some(port), _) if port != 0 => std::net::TcpListener::bind((ip, port)).map(drop),
        (Some(ip), None, Some(port)) if port != 0 => {
            std::net::UdpSocket::bind((ip, port)).map(drop)
        }
        _ => Ok(()),
    }
}

fn degrees_to_micro(degrees: f64) -> i32 {
    // Checked to lie within ±180° by the config, so this is in range.
    (degrees * 1e6).round() as i32
}

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Queued => "queued",
        Status::Forwarded => "forwarded",
        Status::InCustody => "in-custody",
        Status::Delivered => "delivered",
        Status::Acknowledged => "acknowledged",
        Status::Expired => "expired",
        Status::Evicted => "evicted",
    }
}

fn node_id(address: &Address) -> Option<NodeId> {
    NodeId::from_public_key_bytes(&address.0).ok()
}

impl Node {
    /// The time for the state machines: wall-clock ms, never going back.
    /// The time in ms, never going back; the router also gets it in µs,
    /// for bulk pacing.
    fn clock(&mut self) -> u64 {
        let us = wall_us();
        self.router.set_clock_us(us);
        self.now = self.now.max(us / 1000);
        self.now
    }

    fn next_wake(&self) -> u64 {
        let mut wake = self.router.poll_timeout().unwrap_or(u64::MAX);
        if let Some(c) = &self.chain {
            if let Some(t) = c.sync.poll_timeout() {
                wake = wake.min(t.as_unix_millis());
            }
            if let Some((at, _)) = c.seal {
                wake = wake.min(at);
            }
            if let Some(at) = c.vote_at {
                wake = wake.min(at);
            }
        }
        if let Some((&at, _)) = self.bans.first_key_value() {
            wake = wake.min(at);
        }
        wake
    }

    fn dial_bootstrap(&mut self) {
        for (peer, addr) in self.bootstrap.clone() {
            if !self.swarm.is_connected(&peer)
                && let Err(e) = self.swarm.dial(addr.clone())
            {
                debug!(%peer, %addr, "cannot dial bootstrap peer: {e}");
            }
        }
        // The DHT walk is for a node with no one to ask: not every redial.
        if !self.bootstrap.is_empty() && self.peers.is_empty() {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    // ----- inputs -----

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                if address.iter().any(|p| p == Protocol::P2pCircuit) {
                    info!("reachable through a relay at {address}");
                } else {
                    info!("listening on {address}/p2p/{}", self.swarm.local_peer_id());
                }
                self.listen_addrs.push(address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self
                    .relays
                    .iter()
                    .find_map(|(peer, id)| (*id == listener_id).then_some(*peer))
                {
                    self.relays.remove(&relay);
                    info!(%relay, "the relay reservation ended: {reason:?}");
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let addr = connection_addr(peer_id, &endpoint);
                debug!(peer = %peer_id, %addr, "connected");
                let peer = self.peers.entry(peer_id).or_default();
                peer.connections += 1;
                if !peer.addrs.contains(&addr) {
                    peer.addrs.push(addr);
                }
                if peer.address.is_none() {
                    peer.address = peer_id
                        .to_string()
                        .parse::<NodeId>()
                        .ok()
                        .map(Address::from);
                }
                self.open_mesh(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                if let Some(peer) = self.peers.get_mut(&peer_id) {
                    peer.connections = peer.connections.saturating_sub(1);
                    let addr = connection_addr(peer_id, &endpoint);
                    peer.addrs.retain(|a| a != &addr);
                }
                if num_established == 0 {
                    debug!(peer = %peer_id, "disconnected");
                    if let Some(listener) = self.relays.remove(&peer_id) {
                        let _ = self.swarm.remove_listener(listener);
                    }
                    self.peer_gone(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, "cannot connect: {error}");
            }
            SwarmEvent::ListenerError { error, .. } => warn!("a listener failed: {error}"),
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    /// Asks a relay to listen for us (a reservation), so that peers that
    /// cannot reach this node directly can through it, and DCUtR can try to
    /// punch a direct connection from there. At most [`MAX_RELAYS`].
    fn reserve_on_relay(&mut self, relay: PeerId, listen_addrs: &[Multiaddr]) {
        if self.config.relay || self.relays.contains_key(&relay) || self.relays.len() >= MAX_RELAYS
        {
            return;
        }
        // The relay's address on the network we reach it by: the listen
        // address with the IP our connection to it has.
        fn connected_ip(a: &Multiaddr) -> Option<std::net::IpAddr> {
            a.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(ip.into()),
                Protocol::Ip6(ip) => Some(ip.into()),
                _ => None,
            })
        }
        let ours: Vec<_> = self
            .peers
            .get(&relay)
            .map(|p| p.addrs.iter().filter_map(connected_ip).collect())
            .unwrap_or_default();
        let direct = |a: &&Multiaddr| !a.iter().any(|p| p == Protocol::P2pCircuit);
        let Some(addr) = listen_addrs
            .iter()
            .filter(direct)
            .find(|a| connected_ip(a).is_some_and(|ip| ours.contains(&ip)))
            .or_else(|| listen_addrs.iter().find(direct))
        else {
            return;
        };
        let circuit = addr
            .clone()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                debug!(%relay, %circuit, "asking the relay for a reservation");
                self.relays.insert(relay, id);
            }
            Err(e) => debug!(%relay, "cannot listen through the relay: {e}"),
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        debug!(%peer, %addr, "found on the LAN");
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME) {
                    self.reserve_on_relay(peer_id, &info.listen_addrs);
                }
                if info.protocols.contains(&swarm::KAD_PROTOCOL) {
                    // The peer's latest record replaces what it said before,
                    // and only its first few addresses count: Kademlia keeps
                    // every address it is given, so a peer pushing record
                    // after record of new addresses grew the list without
                    // bound (issue 23, item 10).
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    kad.remove_peer(&peer_id);
                    for addr in info.listen_addrs.into_iter().take(MAX_KAD_ADDRESSES) {
                        kad.add_address(&peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.rtts.push(rtt);
                }
                self.update_cost(peer);
                // A stream that failed to open is retried at each ping.
                self.open_mesh(peer);
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => info!(peer = %remote_peer_id, "hole punch succeeded: a direct connection"),
                Err(e) => debug!(peer = %remote_peer_id, "hole punch failed: {e}"),
            },
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                let public = matches!(new, autonat::NatStatus::Public(_));
                self.reachability = match &new {
                    autonat::NatStatus::Public(addr) => format!("public at {addr}"),
                    autonat::NatStatus::Private => "private (reached through relays)".into(),
                    autonat::NatStatus::Unknown => "unknown".into(),
                };
                if !self.config.relay {
                    let mode = if public {
                        kad::Mode::Server
                    } else {
                        kad::Mode::Client
                    };
                    self.swarm.behaviour_mut().kad.set_mode(Some(mode));
                }
                info!(?new, "reachability changed");
            }
            _ => {}
        }
    }

    fn open_mesh(&mut self, peer_id: PeerId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if peer.address.is_none() || peer.writer.is_some() || peer.opening {
            return;
        }
        peer.opening = true;
        tokio::spawn(mesh::run_writer(
            self.streams.clone(),
            peer_id,
            self.mesh_events.clone(),
        ));
    }

    fn peer_gone(&mut self, peer_id: PeerId) {
        let Some(peer) = self.peers.remove(&peer_id) else {
            return;
        };
        if let Some(address) = peer.address
            && peer.writer.is_some()
        {
            let now = self.clock();
            self.router.handle_link_down(now, &address);
            self.by_address.remove(&address);
        }
        if let Some(c) = &mut self.chain {
            c.sync.handle_peer_gone(&peer_id);
        }
    }

    fn update_cost(&mut self, peer_id: PeerId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let (Some(address), Some(rtt), Some(_)) = (peer.address, peer.rtts.min(), &peer.writer)
        else {
            return;
        };
        // Only a real change moves routes: a quarter more or less.
        let changed = peer.costed_rtt.is_none_or(|old| {
            let (a, b) = (old.as_micros(), rtt.as_micros());
            a.abs_diff(b) * 4 > a.max(1)
        });
        if changed {
            peer.costed_rtt = Some(rtt);
            let now = self.clock();
            self.router
                .handle_link_up(now, address, link_cost(rtt, 0.0));
        }
    }

    fn on_mesh(&mut self, event: MeshEvent) {
        match event {
            MeshEvent::Opened { peer, writer } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return; // Gone meanwhile: dropping `writer` ends the writer task.
                };
                p.opening = false;
                p.writer = Some(writer);
                let Some(address) = p.address else { return };
                let rtt = p.rtts.min().unwrap_or(DEFAULT_RTT);
                p.costed_rtt = Some(rtt);
                self.by_address.insert(address, peer);
                let now = self.clock();
                self.router
                    .handle_link_up(now, address, link_cost(rtt, 0.0));
                info!(%peer, "neighbour up");
                if let Some(c) = &self.chain {
                    let status = Sync::<PeerId>::status(&c.chain).to_bytes();
                    self.send_frame(peer, Frame::Sync(status));
                }
                let early = self
                    .peers
                    .get_mut(&peer)
                    .map(|p| std::mem::take(&mut p.early_sync))
                    .unwrap_or_default();
                for bytes in early {
                    self.send_frame(peer, Frame::Sync(bytes));
                }
            }
            MeshEvent::OpenFailed { peer, reason } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.opening = false;
                }
                debug!(%peer, "no mesh stream: {reason}");
            }
            MeshEvent::Frame { peer, frame, held } => {
                self.on_frame(peer, frame);
                // Its memory goes back to the budget only now.
                drop(held);
            }
            MeshEvent::Drained(peer) => self.pump(peer),
            MeshEvent::Closed {
                peer,
                outbound,
                error,
            } => {
                debug!(%peer, outbound, ?error, "mesh stream closed");
                if !outbound {
                    self.stream_ended(peer);
                }
                if outbound && let Some(p) = self.peers.get_mut(&peer) {
                    p.writer = None;
                    p.costed_rtt = None;
                    if let Some(address) = p.address {
                        let now = self.clock();
                        self.router.handle_link_down(now, &address);
                        self.by_address.remove(&address);
                    }
                }
            }
            MeshEvent::Garbage { peer, error } => {
                warn!(%peer, "closed a mesh stream that carried garbage: {error}");
                self.stream_ended(peer);
                self.mesh_abuse(peer, "sent garbage on the mesh protocol");
            }
        }
    }

    /// Reads a neighbour's new mesh stream, unless it has too many open.
    fn accept_stream(&mut self, peer: PeerId, stream: libp2p::Stream) {
        let large = &self.large_frames;
        let inbound = self.inbound.entry(peer).or_insert_with(|| Inbound {
            streams: 0,
            budget: mesh::Budget::for_peer(large),
        });
        if inbound.streams >= mesh::MAX_INBOUND_STREAMS {
            drop(stream);
            warn!(%peer, "refused a mesh stream: {} are open already", inbound.streams);
            self.mesh_abuse(peer, "opened more mesh streams than allowed");
            return;
        }
        inbound.streams += 1;
        let reader = mesh::run_reader(
            stream,
            peer,
            inbound.budget.clone(),
            self.mesh_events.clone(),
        );
        tokio::spawn(reader);
    }

    fn stream_ended(&mut self, peer: PeerId) {
        if let Some(inbound) = self.inbound.get_mut(&peer) {
            inbound.streams = inbound.streams.saturating_sub(1);
            if inbound.streams == 0 {
                self.inbound.remove(&peer);
            }
        }
    }

    /// Counts misbehaviour on the mesh protocol; the third time, a ban.
    fn mesh_abuse(&mut self, peer: PeerId, why: &str) {
        self.metrics.misbehaviour.inc();
        let count = self.peers.get_mut(&peer).map(|p| {
            p.garbage += 1;
            p.garbage
        });
        if count.is_some_and(|g| g >= 3) {
            self.ban(peer, why);
        }
    }

    fn on_frame(&mut self, peer: PeerId, frame: Frame) {
        let now = self.clock();
        match frame {
            Frame::Packet(bytes) => {
                let address = self.peers.get(&peer).and_then(|p| p.address);
                if let Some(address) = address {
                    self.router.handle_packet(now, &address, &bytes);
                }
            }
            Frame::Sync(bytes) => {
                let Some(c) = &mut self.chain else { return };
                let message = match SyncMessage::from_bytes(&bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        self.metrics.misbehaviour.inc();
                        debug!(%peer, "a sync message did not decode: {e}");
                        return;
                    }
                };
                let blocks = matches!(message, SyncMessage::Blocks(_));
                if blocks {
                    c.chain.set_synced_writes(false);
                }
                if let Err(e) = c.sync.handle_message(peer, message, &mut c.chain, ts(now)) {
                    error!("the chain store failed during sync: {e}");
                }
                if blocks {
                    c.imported();
                }
                self.sync_bans();
            }
        }
    }

    /// Bans the neighbours chain sync counted too much against.
    fn sync_bans(&mut self) {
        let Some(c) = &self.chain else { return };
        let banned: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|peer| {
                let counts = c.sync.misbehaviour(peer);
                counts.invalid_blocks + counts.unsolicited + counts.forged_votes
                    >= SYNC_BAN_THRESHOLD
            })
            .copied()
            .collect();
        for peer in banned {
            self.ban(peer, "served invalid or unsolicited blocks or forged votes");
        }
    }

    /// Whether blocks of a sync answer wait to be imported.
    fn importing(&self) -> bool {
        self.chain.as_ref().is_some_and(|c| c.sync.importing())
    }

    /// Imports the next few blocks of a sync answer (issue 23, item 12: an
    /// answer of 256 blocks, each checked and written synced, held up every
    /// other frame, SOS included, while it was imported at once).
    fn continue_import(&mut self) {
        let now = self.clock();
        let Some(c) = &mut self.chain else { return };
        c.chain.set_synced_writes(false);
        if let Err(e) = c.sync.continue_import(&mut c.chain, ts(now)) {
            error!("the chain store failed during sync: {e}");
        }
        c.imported();
        self.sync_bans();
    }

    fn on_timer(&mut self) {
        let now = self.clock();
        self.router.handle_timeout(now);
        if let Some(c) = &mut self.chain {
            if c.sync
                .poll_timeout()
                .is_some_and(|t| t.as_unix_millis() <= now)
            {
                c.sync.handle_timeout(&c.chain, ts(now));
            }
            if let Some((at, parent)) = c.seal
                && at <= now
            {
                c.seal = None;
                self.seal(parent);
            }
        }
        if self
            .chain
            .as_ref()
            .is_some_and(|c| c.vote_at.is_some_and(|at| at <= now))
        {
            self.after_chain();
        }
        while let Some(entry) = self.bans.first_entry() {
            if *entry.key() > now {
                break;
            }
            for peer in entry.remove() {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                info!(%peer, "ban over");
            }
        }
    }

    // ----- after every input -----

    fn after_input(&mut self) {
        // Forward first, then write: what arrived goes on to the next hop
        // while this node's copy waits for the disk (often the slowest step
        // of a hop). Only the custody acknowledgements wait for the write,
        // in the router. A delivery does not: it is kept in the inbox here,
        // with its seen record, and the router writes that record (and
        // then acknowledges the delivery) only in a batch taken after it.
        self.pump_ready();
        self.start_write();
        self.handle_events();
        self.after_chain();
        // What handling them changed (a delivery's record, a receipt).
        self.start_write();
        self.handle_events();
        self.pump_ready();
        self.update_gauges();
    }

    fn handle_events(&mut self) {
        let now = self.clock();
        while let Some(event) = self.router.poll_event() {
            self.on_router_event(now, event);
        }
    }

    /// Hands the router's next custody batch to the writer, if there is
    /// one, none is out and no inbox entry is (the batch may hold their
    /// seen records: see `disk_writer`); with nothing to write, what waited
    /// for the write before is released now, and so it is after a batch
    /// written at once.
    fn start_write(&mut self) {
        if self.disk.keeping() > 0 {
            return;
        }
        if let Some(batch) = self.router.take_write()
            && let Some(result) = self.disk.write(batch)
        {
            self.router.written(result);
        }
    }

    /// The writer thread finished jobs: what waited for them goes on
    /// (`after_input` follows, and hands out the next batch).
    fn on_written(&mut self) {
        while let Some(done) = self.disk.finished() {
            self.on_disk_done(done);
        }
    }

    /// Waits for everything the writer thread has, before a write that
    /// must not overtake it.
    fn settle_write(&mut self) {
        while let Some(done) = self.disk.wait() {
            self.on_disk_done(done);
        }
    }

    fn on_disk_done(&mut self, done: disk_writer::Done) {
        match done {
            disk_writer::Done::Batch(result) => self.router.written(result),
            disk_writer::Done::Kept(keep) => self.kept(*keep),
            disk_writer::Done::NotKept {
                id,
                envelope,
                error,
            } => self.not_kept(id, envelope, error),
        }
    }

    /// Fills the writers of every neighbour the router has something for.
    fn pump_ready(&mut self) {
        let ready: Vec<PeerId> = self
            .router
            .ready_links()
            .filter_map(|a| self.by_address.get(a).copied())
            .collect();
        for peer in ready {
            self.pump(peer);
        }
    }

    fn on_router_event(&mut self, now: u64, event: Event) {
        match event {
            Event::Delivered(delivery) => self.on_delivered(now, delivery),
            Event::Status { id, status } => {
                debug!(%id, status = status_name(status), "message status");
            }
            Event::Receipt {
                message,
                from,
                kind,
                note,
                hops,
            } => {
                // Anyone can acknowledge: say who it is by the chain, so
                // that an uncertified "help is coming" looks different.
                let who = node_id(&from).map_or_else(|| "?".into(), |id| self.who_is(&id, now));
                let away = format!("{hops} hop{} away", if hops == 1 { "" } else { "s" });
                let text = if note.is_empty() {
                    format!("{kind:?} from {who}, {away}")
                } else {
                    format!("{kind:?} from {who}, {away}: {note}")
                };
                info!(%message, "{text}");
                self.remember_receipt(message, text);
            }
            Event::Evicted { class, .. } => self.metrics.message(class, "evicted"),
            Event::Expired { class, .. } => self.metrics.message(class, "expired"),
            Event::Dropped { id, reason } => debug!(%id, ?reason, "dropped"),
            Event::Misbehaving { neighbour, counts } => {
                self.metrics.misbehaviour.inc_by(counts.total());
                if let Some(&peer) = self.by_address.get(&neighbour) {
                    self.ban(peer, &format!("routing misbehaviour {counts:?}"));
                }
            }
            Event::LinkReady(address) => {
                if let Some(&peer) = self.by_address.get(&address) {
                    self.pump(peer);
                }
            }
            Event::StoreFailed(e) => {
                error!("the message store failed; custody was not acknowledged: {e}");
                self.heartbeat.write_failed(e);
            }
            Event::StoreRecovered => {
                info!("the message store writes again");
                self.heartbeat.write_succeeded();
            }
            Event::CorruptRecords(n) => {
                warn!("{n} records in the message store could not be read and were skipped");
            }
        }
    }

    fn remember_receipt(&mut self, message: MessageId, text: String) {
        if !self.receipts.contains_key(&message) {
            self.receipt_order.push_back(message);
            if self.receipt_order.len() > MAX_RECEIPTS
                && let Some(old) = self.receipt_order.pop_front()
            {
                self.receipts.remove(&old);
            }
        }
        self.receipts.entry(message).or_default().push(text);
    }

    fn send_frame(&mut self, peer: PeerId, frame: Frame) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(writer) = p.writer.as_ref() else {
            // Connected, our stream not open yet: kept for when it is (the
            // oldest goes first; sync asks again after its timeout anyway).
            if let Frame::Sync(bytes) = frame {
                if p.early_sync.len() >= MAX_EARLY_SYNC {
                    p.early_sync.remove(0);
                }
                p.early_sync.push(bytes);
            }
            return;
        };
        // Sync recovers from a lost message (requests time out, heads are
        // announced again), so a full queue drops it rather than waiting.
        if !writer.try_send(frame.encode()) {
            debug!(%peer, "the mesh queue is full; a sync message was dropped");
        }
    }

    fn pump(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let (Some(writer), Some(address)) = (p.writer.clone(), p.address) else {
            return;
        };
        let now = self.clock();
        let router = &mut self.router;
        writer.fill(|| {
            let packet = router.poll_link(now, &address)?;
            mesh::trace_hop("queued", &peer, &packet);
            Some(Frame::Packet(packet).encode())
        });
    }

    fn ban(&mut self, peer: PeerId, why: &str) {
        warn!(%peer, "banning for {} s: {why}", self.config.ban_secs);
        self.metrics.bans.inc();
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        let until = self
            .clock()
            .saturating_add(self.config.ban_secs.saturating_mul(1000));
        self.bans.entry(until).or_default().push(peer);
        self.peer_gone(peer);
    }

    // ----- metrics -----

    fn update_gauges(&mut self) {
        let (held, bytes) = self.router.custody();
        let m = &self.metrics;
        m.custody_messages
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        m.custody_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.peers
            .set(i64::try_from(self.peers.len()).unwrap_or(i64::MAX));
        m.neighbours
            .set(i64::try_from(self.by_address.len()).unwrap_or(i64::MAX));
        let stats = self.router.stats();
        let last = std::mem::replace(&mut self.last_stats, stats);
        for (counter, now, before) in [
            (&m.control_bytes, stats.control_bytes, last.control_bytes),
            (&m.routes_refused, stats.routes_refused, last.routes_refused),
            (&m.lookups_sent, stats.lookups_sent, last.lookups_sent),
            (
                &m.lookups_answered,
                stats.lookups_answered,
                last.lookups_answered,
            ),
        ] {
            counter.inc_by(now.saturating_sub(before));
        }
        let queued: usize = self
            .by_address
            .keys()
            .map(|a| self.router.queued_bytes(a))
            .sum();
        m.queued_bytes
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        if let Some(c) = &self.chain {
            m.chain_head
                .set(i64::try_from(c.chain.head().number).unwrap_or(i64::MAX));
            m.chain_finalized
                .set(i64::try_from(c.chain.finalized().number).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RTT_SAMPLES, RecentRtts};
    use std::time::Duration;

    #[test]
    fn a_link_costs_its_own_delay_not_what_its_queues_add() {
        let ms = Duration::from_millis;
        let mut rtts = RecentRtts::default();
        assert_eq!(rtts.min(), None);
        rtts.push(ms(12));
        rtts.push(ms(90)); // A ping behind a full queue.
        assert_eq!(rtts.min(), Some(ms(12)));
        assert_eq!(rtts.last(), Some(ms(90)), "shown as it was measured");
        // The link itself got slower (a longer path): after a window of
        // samples its cost follows.
        for _ in 0..RTT_SAMPLES {
            rtts.push(ms(40));
        }
        assert_eq!(rtts.min(), Some(ms(40)));
    }
}
