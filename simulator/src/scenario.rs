//! Scenario files: TOML describing the topology, links, traffic, faults,
//! duration, seed and the assertions a run must meet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Why a scenario could not be used.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is wrong.
    #[error("scenario {path} is not valid: {message}")]
    Invalid {
        /// Which file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// The topology could not be built or loaded.
    #[error("scenario {path}: topology: {message}")]
    Topology {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// A scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name, for the report.
    pub name: String,
    /// What it shows, for the report.
    #[serde(default)]
    pub description: String,
    /// Seed of everything random (overridden by `--seed`).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time after the warm-up, in seconds.
    pub duration_s: u64,
    /// Simulated time before traffic starts (routes converge), in seconds.
    #[serde(default = "default_warmup")]
    pub warmup_s: u64,
    /// Extra time after the last message for deliveries, in seconds.
    #[serde(default = "default_drain")]
    pub drain_s: u64,
    /// The graph.
    pub topology: TopologySpec,
    /// Link properties.
    #[serde(default)]
    pub links: LinkSpec,
    /// Every node's disk.
    #[serde(default)]
    pub disk: DiskSpec,
    /// Router settings.
    #[serde(default)]
    pub router: RouterSpec,
    /// Message sources.
    #[serde(default)]
    pub traffic: Vec<TrafficSpec>,
    /// Bursts: every node in a region sends at once (an SOS wave).
    #[serde(default)]
    pub bursts: Vec<BurstSpec>,
    /// Bulk load on every link, beside the measured traffic.
    #[serde(default)]
    pub background: Option<BackgroundSpec>,
    /// Nodes that walk: links appear and vanish with radio range.
    #[serde(default)]
    pub mobility: Option<MobilitySpec>,
    /// Faults and attacks.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// The PoA chain on every node (absent: no chain).
    #[serde(default)]
    pub chain: Option<ChainSpec>,
    /// What the run must achieve.
    #[serde(default, rename = "assert")]
    pub assertions: Assertions,
}

fn default_seed() -> u64 {
    1
}
fn default_warmup() -> u64 {
    60
}
fn default_drain() -> u64 {
    60
}

/// The graph: a generator or a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TopologySpec {
    /// A line.
    Line {
        /// Nodes.
        nodes: usize,
    },
    /// A grid.
    Grid {
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
    },
    /// Nodes in a square, linked within radio range.
    RandomGeometric {
        /// Nodes.
        nodes: usize,
        /// Side of the square, metres.
        side_m: f64,
        /// Radio range, metres.
        range_m: f64,
    },
    /// Nodes in separate discs (shelters, camps), linked within radio range:
    /// discs farther apart than the range are never connected, except by
    /// nodes that walk (see `[mobility]`).
    Clusters {
        /// The discs.
        clusters: Vec<ClusterSpec>,
        /// Radio range, metres.
        range_m: f64,
    },
    /// Preferential attachment.
    BarabasiAlbert {
        /// Nodes.
        nodes: usize,
        /// Links per new node.
        m: usize,
    },
    /// Small world.
    WattsStrogatz {
        /// Nodes.
        nodes: usize,
        /// Ring neighbours (even).
        k: usize,
        /// Rewiring probability.
        beta: f64,
    },
    /// meshnet-lab JSON.
    MeshnetLab {
        /// The file (relative to the scenario).
        file: PathBuf,
        /// Link types to keep (empty: all).
        #[serde(default)]
        link_types: Vec<String>,
    },
    /// NetJSON NetworkGraph.
    Netjson {
        /// The file (relative to the scenario).
        file: PathBuf,
    },
    /// GraphML (Internet Topology Zoo).
    Graphml {
        /// The file (relative to the scenario).
        file: PathBuf,
    },
    /// One `a b` pair per line.
    EdgeList {
        /// The file (relative to the scenario).
        file: PathBuf,
    },
}

/// What a daemon keeps below its router per link: its writer's 8 KiB
/// (`node::mesh::WRITER_BYTES`) and TCP's 8 KiB of unsent bytes
/// (`node::swarm::TCP_UNSENT_BYTES`).
pub const DAEMON_BUFFER_BYTES: usize = 16 * 1024;

/// Link properties (the data's own latency or quality wins where it has one).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSpec {
    /// One-way latency, ms.
    pub latency_ms: f64,
    /// Uniform jitter added to each packet (links stay FIFO), ms.
    pub jitter_ms: f64,
    /// Bandwidth, kbit/s.
    pub bandwidth_kbps: u64,
    /// Packet loss, 0 to 1.
    pub loss: f64,
    /// Whether a link quality in the topology data becomes packet loss
    /// (`false`: every link is lossless, as meshnet-lab emulated them).
    pub data_quality_as_loss: bool,
    /// Bytes a link's sender holds below the router (the daemon's writer
    /// and the kernel's unsent bytes), sent first in first out: an SOS
    /// waits behind whatever is in it.
    pub buffer_bytes: usize,
    /// A token bucket in front of each link's wire, in bytes, like `tc`'s
    /// `tbf` `burst`: after an idle spell a link sends this much at once,
    /// then at its rate (0, the default: always at its rate).
    pub burst_bytes: usize,
}

impl Default for LinkSpec {
    fn default() -> Self {
        Self {
            latency_ms: 5.0,
            jitter_ms: 0.0,
            bandwidth_kbps: 2_000,
            loss: 0.0,
            data_quality_as_loss: true,
            buffer_bytes: DAEMON_BUFFER_BYTES,
            burst_bytes: 0,
        }
    }
}

/// Every node's disk: how long a synced custody write takes. With one,
/// the routers hand their writes out and go on routing meanwhile, as the
/// daemon does (its writer thread).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskSpec {
    /// Milliseconds a synced write takes (0, the default: writes take no
    /// time, within the step that made them). This machine's SSD syncs in
    /// about 0.3 ms at p50; an SD card in tens of ms.
    pub sync_ms: f64,
}

/// Router settings that scenarios change.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSpec {
    /// Largest fragment, bytes.
    pub mtu: usize,
    /// Largest fragment of bulk (P3), bytes.
    pub bulk_mtu: usize,
    /// Full routing refresh, seconds.
    pub refresh_s: u64,
    /// Custody quota, messages.
    pub custody_max_messages: usize,
    /// Hop limit of broadcasts.
    pub broadcast_hops: u32,
    /// Scoped routing: how far a node's route travels, in good hops (0:
    /// everywhere).
    pub zone_hops: u32,
    /// Scoped routing: one node in this many is a landmark.
    pub landmark_one_in: u32,
    /// The fraction of nodes whose identities the chain holds from the
    /// start (every router knows them): their SOS do not share a
    /// neighbour's P0 budget with keys nobody knows. 0 by default.
    pub registered: f64,
    /// Bulk pacing: queueing delay aimed at per hop, ms, fractions too
    /// (0: unpaced).
    pub pace_target_ms: f64,
    /// Bulk pacing: time between hop delay probes while bulk flows, ms.
    pub pace_probe_ms: u64,
    /// SOS per origin: a burst, then one per `sos_interval_ms` (raised only
    /// to take many samples from one origin, as the daemons' bench does).
    pub sos_burst: u32,
    /// See `sos_burst`.
    pub sos_interval_ms: u64,
}

impl Default for RouterSpec {
    fn default() -> Self {
        Self {
            mtu: 1_200,
            bulk_mtu: 384,
            refresh_s: 300,
            custody_max_messages: 10_000,
            broadcast_hops: 16,
            zone_hops: 0,
            landmark_one_in: 64,
            registered: 0.0,
            pace_target_ms: lifeline_routing::router::Config::default().pace_target_us as f64
                / 1000.0,
            pace_probe_ms: lifeline_routing::router::Config::default().pace_probe_ms,
            sos_burst: lifeline_routing::router::Config::default().sos_burst,
            sos_interval_ms: lifeline_routing::router::Config::default().sos_interval_ms,
        }
    }
}

/// A message source: Poisson arrivals over the whole network, from random
/// nodes to random nodes of the same component.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// P0, P1, P2 or P3.
    pub class: String,
    /// Messages per second over the whole network.
    pub rate_per_s: f64,
    /// Content bytes (before sealing).
    #[serde(default = "default_size")]
    pub size: usize,
    /// At most this many messages from this source.
    #[serde(default)]
    pub max_messages: Option<u64>,
    /// Only from this node (its index in the topology); random otherwise.
    #[serde(default)]
    pub from: Option<usize>,
    /// Only to this node (its index); random otherwise.
    #[serde(default)]
    pub to: Option<usize>,
}

/// One disc of a `clusters` topology.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Its centre, metres on the plane.
    pub center_m: [f64; 2],
    /// Its radius, metres.
    pub radius_m: f64,
    /// Nodes placed uniformly in it.
    pub nodes: usize,
}

/// Every node within a circle sends one message within a short window:
/// the SOS wave after an earthquake or a flood in one district.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    /// The class (P0 by default).
    #[serde(default = "default_burst_class")]
    pub class: String,
    /// When it starts, seconds after the warm-up.
    pub at_s: f64,
    /// Senders start uniformly within this many seconds.
    #[serde(default)]
    pub spread_s: f64,
    /// Centre of the region, metres on the plane.
    pub center_m: [f64; 2],
    /// Radius of the region, metres.
    pub radius_m: f64,
    /// Whom they write to: `"authorities"` (the responders; each sender its
    /// nearest in hops), `"any"` node of the sender's component, or
    /// `"circle"`: a node within `to_center_m` and `to_radius_m`, in any
    /// component (so walkers may have to carry it).
    #[serde(default = "default_burst_to")]
    pub to: String,
    /// With `to = "circle"`: its centre, metres on the plane.
    #[serde(default)]
    pub to_center_m: Option<[f64; 2]>,
    /// With `to = "circle"`: its radius, metres.
    #[serde(default)]
    pub to_radius_m: Option<f64>,
    /// Content bytes.
    #[serde(default = "default_size")]
    pub size: usize,
}

fn default_burst_class() -> String {
    "P0".into()
}

fn default_burst_to() -> String {
    "authorities".into()
}

/// Bulk (P3) messages from each node to each neighbour, one hop, filling
/// `load` of every link's capacity in each direction while traffic runs.
/// Counted apart from the scenario's classes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundSpec {
    /// Fraction of each link's capacity, 0 to 1.
    pub load: f64,
    /// Content bytes per message (fragmented at the MTU).
    #[serde(default = "default_background_size")]
    pub size: usize,
}

/// Random waypoint: each walker picks a point in the area (the box around
/// all nodes), walks to it at a speed drawn from `speed_mps`, pauses for a
/// time drawn from `pause_s`, and picks the next. Every `step_s` its links
/// follow its position: up within `range_m` of a node, down beyond.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobilitySpec {
    /// Fraction of nodes that walk (authorities stay put).
    pub fraction: f64,
    /// Walking speed, least and most, m/s.
    #[serde(default = "default_speed")]
    pub speed_mps: [f64; 2],
    /// Pause at each waypoint, least and most, seconds.
    #[serde(default = "default_pause")]
    pub pause_s: [f64; 2],
    /// Radio range, metres (default: the random geometric graph's).
    pub range_m: Option<f64>,
    /// How often positions and links are updated, seconds.
    #[serde(default = "default_step")]
    pub step_s: f64,
}

fn default_speed() -> [f64; 2] {
    [0.5, 1.5]
}

fn default_pause() -> [f64; 2] {
    [0.0, 60.0]
}

fn default_step() -> f64 {
    1.0
}

fn default_background_size() -> usize {
    4_000
}

fn default_flood_multiple() -> u32 {
    100
}

fn default_sybil_hops() -> u32 {
    255
}

fn default_size() -> usize {
    200
}

/// The chain: authorities seal blocks, every node syncs with its neighbours.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainSpec {
    /// Authorities (block signers) at genesis, spread over the nodes.
    pub authorities: usize,
    /// Block period, seconds.
    pub period_s: f64,
    /// Longest time without a block (an empty block comes no sooner);
    /// the period if absent, so that finality moves every period.
    pub heartbeat_s: Option<f64>,
    /// Registrations submitted per second over the whole network, each from
    /// a node not yet registered, routed as a P2 message to an authority.
    pub tx_rate_per_s: f64,
    /// Authorities that seal two blocks at each of their heights and show
    /// each to half of their neighbours (they vote as well).
    pub equivocators: usize,
    /// Authorities whose key also runs on a second node, with a store of
    /// its own (the node furthest from them in hops): two operators
    /// restored one backup, or a clone set up on purpose.
    pub clones: usize,
}

impl Default for ChainSpec {
    fn default() -> Self {
        Self {
            authorities: 7,
            period_s: 5.0,
            heartbeat_s: None,
            tx_rate_per_s: 0.0,
            equivocators: 0,
            clones: 0,
        }
    }
}

/// A fault or an attack.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultSpec {
    /// Cut every link between two node sets, and heal later.
    Partition {
        /// When, seconds after the warm-up.
        at_s: u64,
        /// When it heals (seconds after the warm-up); never if absent.
        heal_s: Option<u64>,
        /// One side: nodes with a plane x below this (metres)...
        x_below_m: Option<f64>,
        /// ...or these node indices.
        nodes: Option<Vec<usize>>,
    },
    /// Random links go down for a while.
    LinkFlaps {
        /// How many flaps over the run.
        count: usize,
        /// How long each lasts, seconds.
        down_s: u64,
    },
    /// Nodes crash and come back from their stores.
    Crash {
        /// Fraction of nodes.
        fraction: f64,
        /// The fraction is of the authorities, and only they crash (by
        /// default authorities are spared): each comes back with its vote
        /// record from its store.
        #[serde(default)]
        authorities: bool,
        /// When, seconds after the warm-up.
        at_s: u64,
        /// How long they stay down, seconds.
        down_s: u64,
    },
    /// Nodes that drop every message they should forward.
    Blackhole {
        /// Fraction of nodes.
        fraction: f64,
    },
    /// Splits the network in two several times over, with other
    /// authorities on each side each time: authorities (and the nodes near
    /// them) move between the halves while the split lasts, and then it
    /// heals. `sides[k]` names the authorities on the first side from
    /// `at_s + k * every_s` on, by their index from west to east (as
    /// `authority_split` orders them); each node joins the side of its
    /// nearest authority in hops.
    AuthorityShuffle {
        /// When the first split starts, seconds after the warm-up.
        at_s: u64,
        /// Seconds between one split and the next.
        every_s: u64,
        /// When it heals (seconds after the warm-up); never if absent.
        heal_s: Option<u64>,
        /// The authorities on the first side of each split.
        sides: Vec<Vec<usize>>,
    },
    /// Splits the network in two, with `side` of the authorities on one
    /// side (each node joins the side of its nearest authority in hops),
    /// and heals later.
    AuthoritySplit {
        /// When, seconds after the warm-up.
        at_s: u64,
        /// When it heals (seconds after the warm-up); never if absent.
        heal_s: Option<u64>,
        /// Authorities on the first side.
        side: usize,
    },
    /// Hostile nodes that send SOS broadcasts at `multiple` times the rate
    /// an origin is allowed (their own router's limit is lifted; honest
    /// nodes keep theirs). They forward others' traffic normally.
    Flooder {
        /// Fraction of nodes.
        fraction: f64,
        /// How many times the allowed SOS rate each sends.
        #[serde(default = "default_flood_multiple")]
        multiple: u32,
    },
    /// Nodes that forward normally, record every message frame they
    /// receive, and send all of them again to every neighbour at each of
    /// `at_s`.
    Replayer {
        /// Fraction of nodes.
        fraction: f64,
        /// When to replay, seconds after the warm-up.
        at_s: Vec<u64>,
    },
    /// Nodes that forward normally and send broadcasts of `class`, each
    /// signed by a fresh key (Sybil origins, so per-origin limits never
    /// bite), with an SOS payload, asking for `hops` hops, at `rate_per_s`
    /// each.
    Sybil {
        /// Fraction of nodes.
        fraction: f64,
        /// Broadcasts per second, per attacker.
        rate_per_s: f64,
        /// Their class: `P0` (SOS from many keys) or `P3` (an SOS payload
        /// as bulk).
        class: String,
        /// The hop limit they ask for.
        #[serde(default = "default_sybil_hops")]
        hops: u32,
        /// Crowders: unicasts to fresh addresses that no route reaches,
        /// instead of broadcasts, so that every node they reach holds them
        /// in custody (issue 23, item 7).
        #[serde(default)]
        to_nowhere: bool,
    },
    /// Nodes that ask for every message their neighbours' custody
    /// summaries list, claim custody of each that comes, and drop it
    /// (they forward everything else).
    Puller {
        /// Fraction of nodes.
        fraction: f64,
    },
    /// Nodes that drop the messages of one class.
    Grayhole {
        /// Fraction of nodes.
        fraction: f64,
        /// The class dropped.
        class: String,
    },
}

/// Bounds a run must meet; a miss fails the run with a clear message.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertions {
    /// Least delivery ratio per class (0 to 1).
    #[serde(default)]
    pub delivery_min: BTreeMap<String, f64>,
    /// Largest p99 latency per class, ms.
    #[serde(default)]
    pub p99_latency_max_ms: BTreeMap<String, f64>,
    /// Largest p99 stretch (latency over shortest-path latency) per class.
    #[serde(default)]
    pub p99_stretch_max: BTreeMap<String, f64>,
    /// Largest unicast transmissions per delivered message, as a multiple
    /// of the mean shortest-path hop count, per class.
    #[serde(default)]
    pub transmissions_max: BTreeMap<String, f64>,
    /// Largest control traffic, bytes per node per second.
    pub control_bytes_per_node_s_max: Option<f64>,
    /// Largest p99 finality lag, block periods.
    pub finality_lag_p99_max_periods: Option<f64>,
    /// Least finalized height every running node reaches by the end.
    pub finalized_min: Option<u64>,
    /// Largest time for all nodes to agree on the head after the last heal,
    /// block periods.
    pub heal_agreement_max_periods: Option<f64>,
    /// Least number of nodes that must catch an equivocating authority.
    pub equivocation_detected_min_nodes: Option<u64>,
    /// Least fraction of registrations on chain at the end.
    pub txs_registered_min: Option<f64>,
    /// Largest share of the flood honest nodes may receive, against what
    /// the per-origin SOS limit lets through (1.0: exactly the limit).
    pub flood_admitted_max: Option<f64>,
    /// Most messages delivered twice to one node (replays let through).
    pub duplicates_max: Option<u64>,
    /// Most times an honest node may report an honest neighbour as
    /// misbehaving (a report leads to a ban in the daemon).
    pub honest_reported_max: Option<u64>,
    /// Most unicast messages neither delivered nor held in custody at the
    /// end (lost).
    pub lost_max: Option<u64>,
}

impl Scenario {
    /// The walkers' radio range: the mobility section's, or the random
    /// geometric graph's. `None` without mobility or a range.
    pub fn mobility_range_m(&self) -> Option<f64> {
        let m = self.mobility.as_ref()?;
        m.range_m.or(match self.topology {
            TopologySpec::RandomGeometric { range_m, .. }
            | TopologySpec::Clusters { range_m, .. } => Some(range_m),
            _ => None,
        })
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Parses scenario text (`path` names it in errors and anchors files).
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let TopologySpec::MeshnetLab { file, .. }
        | TopologySpec::Netjson { file }
        | TopologySpec::Graphml { file }
        | TopologySpec::EdgeList { file } = &mut scenario.topology
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        for b in &scenario.bursts {
            if crate::class_of(&b.class).is_none_or(|c| c == lifeline_routing::Class::P1) {
                return Err(invalid(format!(
                    "burst class {:?} is not P0, P2 or P3 (bursts are unicast)",
                    b.class
                )));
            }
            if !["authorities", "any", "circle"].contains(&b.to.as_str()) {
                return Err(invalid(format!(
                    "burst `to = {:?}` is not \"authorities\", \"any\" or \"circle\"",
                    b.to
                )));
            }
            let circle = b.to_center_m.is_some() && b.to_radius_m.is_some();
            if circle != (b.to == "circle")
                || (b.to != "circle" && (b.to_center_m.is_some() || b.to_radius_m.is_some()))
            {
                return Err(invalid(
                    "a burst to a circle needs `to = \"circle\"` with both `to_center_m` and \
                     `to_radius_m`, and only then"
                        .into(),
                ));
            }
        }
        if let Some(b) = &scenario.background
            && !(0.0..1.0).contains(&b.load)
        {
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "background load {} is not a fraction of link capacity (0 to below 1)",
                    b.load
                ),
            });
        }
        if !(scenario.disk.sync_ms.is_finite() && (0.0..=60_000.0).contains(&scenario.disk.sync_ms))
        {
            return Err(invalid(format!(
                "disk `sync_ms = {}` is not a time from 0 to 60000 ms",
                scenario.disk.sync_ms
            )));
        }
        if let Some(m) = &scenario.mobility {
            let problem = if scenario.mobility_range_m().is_none() {
                Some("mobility needs `range_m` (or a random_geometric topology to take it from)")
            } else if m.step_s.is_nan() || m.step_s <= 0.0 {
                Some("mobility `step_s` must be above 0")
            } else if !m.speed_mps.iter().all(|v| v.is_finite())
                || m.speed_mps[0] <= 0.0
                || m.speed_mps[0] > m.speed_mps[1]
            {
                Some("mobility `speed_mps` must be [least, most] with 0 < least <= most")
            } else if !m.pause_s.iter().all(|v| v.is_finite())
                || m.pause_s[0] < 0.0
                || m.pause_s[0] > m.pause_s[1]
            {
                Some("mobility `pause_s` must be [least, most] with 0 <= least <= most")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ScenarioError::Invalid {
                    path: path.to_path_buf(),
                    message: problem.into(),
                });
            }
        }
        for t in &scenario.traffic {
            if crate::class_of(&t.class).is_none() {
                return Err(ScenarioError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("traffic class {:?} is not P0, P1, P2 or P3", t.class),
                });
            }
        }
        Ok(scenario)
    }
}
