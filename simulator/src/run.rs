//! Running a scenario: builds the network, schedules traffic and faults,
//! drives the engine, and measures.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use lifeline_crypto::envelope::{self, OpenPolicy, ReplayGuard};
use lifeline_crypto::{Identity, PrekeyRing, Timestamp};
use lifeline_routing::wire::{Body, Kind};
use lifeline_routing::{Class, Config, Destination, Event, MessageId, SendRequest};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::chain::{ChainNet, Wake};
use crate::engine::{Behaviour, Engine, Observer};
use crate::html::MapData;
use crate::mobility::{Mobility, NewLink};
use crate::report::{
    BackgroundReport, ClassReport, EngineReport, FloodReport, HostReport, MobilityReport,
    ReplayReport, Report, SybilReport, percentile,
};
use crate::scenario::{FaultSpec, Scenario, ScenarioError, TopologySpec};
use crate::topology::{Position, Topology};
use crate::{class_name, class_of};

mod collector;
mod faults;
mod sybil;

use collector::{BACKGROUND_MARK, Background, Collector, Flood, Outcome, Planned};

use faults::{
    authorities_west_to_east, cut_between, hops_from, nearest, partition, pick,
    split_by_authorities,
};
use lifeline_consensus::{Action as ChainAction, Transaction};

/// The simulated clock starts here (ms since the Unix epoch), so that the
/// real crypto sees plausible times.
pub const EPOCH_MS: u64 = 1_763_700_000_000;

/// What happens at a scheduled time.
#[derive(Clone, Debug)]
enum Action {
    Send(usize),
    Links {
        links: Vec<usize>,
        up: bool,
        heal: bool,
    },
    Chain(Wake),
    Crash(Vec<usize>),
    Restart(Vec<usize>),
    Sample,
    /// A flooder sends one more SOS.
    Flood(usize),
    /// A replayer sends what it recorded again.
    Replay(usize),
    /// A Sybil attacker sends one more broadcast (or, `to_nowhere`, a
    /// unicast to an address no route reaches) from a fresh key.
    Sybil {
        node: usize,
        class: Class,
        hops: u32,
        to_nowhere: bool,
    },
    /// One more bulk message over this directed link (then the next is
    /// scheduled).
    Background(usize),
    /// Walkers take a step (then the next is scheduled).
    Move,
}

fn build_topology(scenario: &Scenario, rng: &mut StdRng) -> Result<Topology, ScenarioError> {
    let read = |file: &std::path::Path| {
        std::fs::read_to_string(file).map_err(|e| ScenarioError::Topology {
            path: file.to_path_buf(),
            message: format!("cannot read {}: {e}", file.display()),
        })
    };
    let loaded = |r: Result<Topology, crate::topology::TopologyError>, file: &std::path::Path| {
        r.map_err(|e| ScenarioError::Topology {
            path: file.to_path_buf(),
            message: e.to_string(),
        })
    };
    Ok(match &scenario.topology {
        TopologySpec::Line { nodes } => Topology::line(*nodes),
        TopologySpec::Grid { width, height } => Topology::grid(*width, *height),
        TopologySpec::RandomGeometric {
            nodes,
            side_m,
            range_m,
        } => Topology::random_geometric(*nodes, *side_m, *range_m, rng),
        TopologySpec::Clusters { clusters, range_m } => {
            let discs: Vec<([f64; 2], f64, usize)> = clusters
                .iter()
                .map(|c| (c.center_m, c.radius_m, c.nodes))
                .collect();
            Topology::clusters(&discs, *range_m, rng)
        }
        TopologySpec::BarabasiAlbert { nodes, m } => Topology::barabasi_albert(*nodes, *m, rng),
        TopologySpec::WattsStrogatz { nodes, k, beta } => {
            Topology::watts_strogatz(*nodes, *k, *beta, rng)
        }
        TopologySpec::MeshnetLab { file, link_types } => {
            loaded(Topology::from_meshnet_lab(&read(file)?, link_types), file)?
        }
        TopologySpec::Netjson { file } => loaded(Topology::from_netjson(&read(file)?), file)?,
        TopologySpec::Graphml { file } => loaded(Topology::from_graphml(&read(file)?), file)?,
        TopologySpec::EdgeList { file } => loaded(Topology::from_edge_list(&read(file)?), file)?,
    })
}

/// A progress callback for [`run`] that prints to stderr, after `prefix`,
/// each tenth of the simulated time as it is reached and the wall time
/// taken so far.
pub fn progress_to_stderr(prefix: &'static str) -> Box<dyn FnMut(f64)> {
    let started = Instant::now();
    let mut last = -1i64;
    Box::new(move |done: f64| {
        let tenth = (done * 10.0).floor() as i64;
        if tenth > last && tenth <= 10 {
            last = tenth;
            eprintln!(
                "{prefix}{:>3}% simulated after {:.1} s",
                tenth * 10,
                started.elapsed().as_secs_f64()
            );
        }
    })
}

/// Runs `scenario` with `seed`; `progress` hears the fraction done now and then.
pub fn run(
    scenario: &Scenario,
    seed: u64,
    progress: Option<Box<dyn FnMut(f64)>>,
) -> Result<(Report, HostReport), ScenarioError> {
    let wall = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let topology = build_topology(scenario, &mut rng)?;
    let n = topology.nodes.len();
    let components = topology.components();
    let mut component_of = vec![0usize; n];
    for (c, nodes) in components.iter().enumerate() {
        for &v in nodes {
            component_of[v] = c;
        }
    }

    let identities: Vec<Identity> = (0..n)
        .map(|i| {
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&seed.to_le_bytes());
            secret[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            let hashed = blake3::hash(&secret);
            Identity::from_secret_bytes(hashed.as_bytes())
                .unwrap_or_else(|_| Identity::generate(&mut rng))
        })
        .collect();
    let config = Config {
        mtu: scenario.router.mtu,
        bulk_mtu: scenario.router.bulk_mtu,
        pace_target_us: (scenario.router.pace_target_ms.max(0.0) * 1000.0).round() as u64,
        pace_probe_ms: scenario.router.pace_probe_ms,
        sos_burst: scenario.router.sos_burst.max(1),
        sos_interval_ms: scenario.router.sos_interval_ms.max(1),
        refresh_interval_ms: scenario.router.refresh_s * 1_000,
        custody_max_messages: scenario.router.custody_max_messages,
        broadcast_hops: scenario.router.broadcast_hops,
        zone_hops: scenario.router.zone_hops,
        landmark_one_in: scenario.router.landmark_one_in,
        // With a disk, a delivery's receipt waits for its inbox write, as
        // in the daemon (`Engine::set_disk_sync_us`).
        receipt_on_delivery: scenario.disk.sync_ms <= 0.0,
        ..Config::default()
    };
    let start_us = EPOCH_MS * 1_000;
    let mut engine = Engine::new(
        identities,
        config,
        StdRng::seed_from_u64(seed ^ 0x5eed),
        start_us,
    );

    // Authorities: spread over the index range (7 unless the chain says).
    let want = scenario.chain.as_ref().map_or(7, |c| c.authorities.max(1));
    let authorities: Vec<usize> = (0..n.min(want)).map(|k| k * n / n.clamp(1, want)).collect();
    let authority_addresses: Vec<_> = authorities
        .iter()
        .map(|&a| engine.nodes[a].address)
        .collect();
    for i in 0..n {
        engine.with_router(i, |r, _| {
            r.set_authorities(authority_addresses.iter().copied())
        });
    }

    // Links.
    let links = &scenario.links;
    engine.set_buffer_bytes(links.buffer_bytes);
    engine.set_burst_bytes(links.burst_bytes);
    engine.set_disk_sync_us((scenario.disk.sync_ms.max(0.0) * 1_000.0).round() as u64);
    let bytes_per_ms = (links.bandwidth_kbps / 8).max(1);
    let mut edge_links = Vec::with_capacity(topology.edges.len());
    for e in &topology.edges {
        let latency_ms = e.latency_ms.unwrap_or(links.latency_ms).max(0.001);
        let loss = match e.quality {
            Some(q) if links.data_quality_as_loss => (1.0 - q).clamp(0.0, 0.9).max(links.loss),
            _ => links.loss,
        };
        let (l, _) = engine.add_link(
            e.a,
            e.b,
            (latency_ms * 1_000.0) as u64,
            (links.jitter_ms * 1_000.0) as u64,
            bytes_per_ms,
            loss,
        );
        edge_links.push(l);
    }

    let warmup_us = start_us + scenario.warmup_s * 1_000_000;
    let traffic_end_us = warmup_us + scenario.duration_s * 1_000_000;
    let end_us = traffic_end_us + scenario.drain_s * 1_000_000;

    // Traffic plan.
    let mut planned = Vec::new();
    for t in &scenario.traffic {
        if let Some(v) = t.from.into_iter().chain(t.to).find(|&v| v >= n) {
            return Err(ScenarioError::Invalid {
                path: scenario.name.clone().into(),
                message: format!(
                    "traffic names node {v}, but the topology has {n} nodes (0 to {})",
                    n.saturating_sub(1)
                ),
            });
        }
        let Some(class) = class_of(&t.class) else {
            continue;
        };
        if t.rate_per_s <= 0.0 {
            continue;
        }
        let mut at = warmup_us as f64;
        let mut count = 0u64;
        loop {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            at += -u.ln() / t.rate_per_s * 1_000_000.0;
            if at >= traffic_end_us as f64 || t.max_messages.is_some_and(|m| count >= m) {
                break;
            }
            count += 1;
            let (from, to) = if class == Class::P1 {
                (
                    authorities[rng.random_range(0..authorities.len().max(1))],
                    None,
                )
            } else {
                let from = t.from.unwrap_or_else(|| rng.random_range(0..n));
                let to = match t.to {
                    Some(to) => Some(to),
                    None => other_in(&components[component_of[from]], from, &mut rng),
                };
                let Some(to) = to.filter(|&to| to != from) else {
                    continue;
                };
                (from, Some(to))
            };
            planned.push(Planned {
                at_us: at as u64,
                from,
                to,
                class,
                size: t.size,
                register: false,
            });
        }
    }
    // Registrations: each from a node not registered yet, to an authority
    // of its component.
    if let Some(spec) = scenario.chain.as_ref().filter(|c| c.tx_rate_per_s > 0.0) {
        let mut unregistered: Vec<usize> = (0..n).filter(|v| !authorities.contains(v)).collect();
        let mut at = warmup_us as f64;
        loop {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            at += -u.ln() / spec.tx_rate_per_s * 1_000_000.0;
            if at >= traffic_end_us as f64 || unregistered.is_empty() {
                break;
            }
            let from = unregistered.swap_remove(rng.random_range(0..unregistered.len()));
            let reachable: Vec<usize> = authorities
                .iter()
                .copied()
                .filter(|a| component_of[*a] == component_of[from])
                .collect();
            if reachable.is_empty() {
                continue;
            }
            planned.push(Planned {
                at_us: at as u64,
                from,
                to: Some(reachable[rng.random_range(0..reachable.len())]),
                class: Class::P2,
                size: 0,
                register: true,
            });
        }
    }
    // Bursts: every node in the circle sends one message.
    let nearest_authority = nearest(&topology, &authorities);
    for b in &scenario.bursts {
        let class = class_of(&b.class).unwrap_or(Class::P0);
        let in_circle = |[cx, cy]: [f64; 2], radius_m: f64| {
            let inside: Vec<usize> = (0..n)
                .filter(|&v| match topology.nodes[v].position {
                    Some(Position::Plane { x, y }) => (x - cx).hypot(y - cy) <= radius_m,
                    _ => false,
                })
                .collect();
            if inside.is_empty() {
                return Err(ScenarioError::Topology {
                    path: scenario.name.clone().into(),
                    message: format!(
                        "no node lies within {radius_m} m of ({cx}, {cy}) for a burst (bursts \
                         need a topology with positions on a plane, such as random_geometric)"
                    ),
                });
            }
            Ok(inside)
        };
        let senders = in_circle(b.center_m, b.radius_m)?;
        let targets = match (b.to_center_m, b.to_radius_m) {
            (Some(center), Some(radius)) => in_circle(center, radius)?,
            _ => Vec::new(),
        };
        let start = warmup_us as f64 + b.at_s * 1e6;
        for from in senders {
            let to = match b.to.as_str() {
                "authorities" => nearest_authority[from].map(|k| authorities[k]),
                "circle" => other_in(&targets, from, &mut rng),
                _ => other_in(&components[component_of[from]], from, &mut rng),
            };
            let Some(to) = to.filter(|&to| to != from) else {
                continue;
            };
            let at = start + rng.random_range(0.0..=b.spread_s.max(0.0)) * 1e6;
            planned.push(Planned {
                at_us: at as u64,
                from,
                to: Some(to),
                class,
                size: b.size,
                register: false,
            });
        }
    }
    planned.sort_by_key(|p| p.at_us);

    let mut actions: Vec<Action> = Vec::new();
    let mut schedule: Vec<(u64, usize)> = Vec::new();
    let mut flooders: Vec<usize> = Vec::new();
    let mut replayers: Vec<usize> = Vec::new();
    let mut sybils: Vec<usize> = Vec::new();
    for (k, p) in planned.iter().enumerate() {
        schedule.push((p.at_us, actions.len()));
        actions.push(Action::Send(k));
    }
    // Faults.
    let s = |secs: u64| warmup_us + secs * 1_000_000;
    for fault in &scenario.faults {
        match fault {
            FaultSpec::Partition {
                at_s,
                heal_s,
                x_below_m,
                nodes,
            } => {
                let side: Vec<bool> = (0..n)
                    .map(|v| match (x_below_m, nodes) {
                        (_, Some(list)) => list.contains(&v),
                        (Some(x), None) => matches!(topology.nodes[v].position, Some(Position::Plane { x: px, .. }) if px < *x),
                        (None, None) => v < n / 2,
                    })
                    .collect();
                let cut = cut_between(&topology, &edge_links, &side);
                partition(&mut schedule, &mut actions, cut, s(*at_s), heal_s.map(s));
            }
            FaultSpec::AuthorityShuffle {
                at_s,
                every_s,
                heal_s,
                sides,
            } => {
                // Each split cuts what crosses it and mends what crossed
                // only the one before.
                let order = authorities_west_to_east(&topology, &authorities);
                let mut cut: Vec<usize> = Vec::new();
                for (k, first) in sides.iter().enumerate() {
                    let side: Vec<bool> = nearest(&topology, &order)
                        .into_iter()
                        .map(|k| k.is_some_and(|k| first.contains(&k)))
                        .collect();
                    let next = cut_between(&topology, &edge_links, &side);
                    let at = s(at_s + every_s * k as u64);
                    let mended: Vec<usize> =
                        cut.iter().copied().filter(|l| !next.contains(l)).collect();
                    let cuts: Vec<usize> =
                        next.iter().copied().filter(|l| !cut.contains(l)).collect();
                    for (links, up) in [(mended, true), (cuts, false)] {
                        schedule.push((at, actions.len()));
                        actions.push(Action::Links {
                            links,
                            up,
                            heal: false,
                        });
                    }
                    cut = next;
                }
                if let Some(heal) = heal_s {
                    schedule.push((s(*heal), actions.len()));
                    actions.push(Action::Links {
                        links: cut,
                        up: true,
                        heal: true,
                    });
                }
            }
            FaultSpec::AuthoritySplit { at_s, heal_s, side } => {
                let side = split_by_authorities(&topology, &authorities, *side);
                let cut = cut_between(&topology, &edge_links, &side);
                partition(&mut schedule, &mut actions, cut, s(*at_s), heal_s.map(s));
            }
            FaultSpec::LinkFlaps { count, down_s } => {
                for _ in 0..*count {
                    if edge_links.is_empty() {
                        break;
                    }
                    let l = edge_links[rng.random_range(0..edge_links.len())];
                    let at = rng.random_range(warmup_us..traffic_end_us.max(warmup_us + 1));
                    schedule.push((at, actions.len()));
                    actions.push(Action::Links {
                        links: vec![l],
                        up: false,
                        heal: false,
                    });
                    schedule.push((at + down_s * 1_000_000, actions.len()));
                    actions.push(Action::Links {
                        links: vec![l],
                        up: true,
                        heal: false,
                    });
                }
            }
            FaultSpec::Crash {
                fraction,
                authorities: hit_authorities,
                at_s,
                down_s,
            } => {
                let victims = if *hit_authorities {
                    let spare: Vec<usize> = (0..n).filter(|v| !authorities.contains(v)).collect();
                    let want = ((authorities.len() as f64) * fraction.clamp(0.0, 1.0)).round();
                    pick(&mut rng, n, want / n.max(1) as f64, &spare)
                } else {
                    pick(&mut rng, n, *fraction, &authorities)
                };
                schedule.push((s(*at_s), actions.len()));
                actions.push(Action::Crash(victims.clone()));
                schedule.push((s(at_s + down_s), actions.len()));
                actions.push(Action::Restart(victims));
            }
            FaultSpec::Blackhole { fraction } => {
                for v in pick(&mut rng, n, *fraction, &authorities) {
                    engine.nodes[v].behaviour = Behaviour::Blackhole;
                }
            }
            FaultSpec::Flooder { fraction, multiple } => {
                let base = engine.config().clone();
                // The allowed rate, and the flooders' own limit lifted.
                let interval_us = (base.sos_interval_ms * 1_000
                    / u64::from(base.sos_burst.max(1))
                    / u64::from((*multiple).max(1)))
                .max(1);
                let lifted = Config {
                    sos_burst: u32::MAX,
                    sos_interval_ms: 1,
                    ..base
                };
                for v in pick(&mut rng, n, *fraction, &authorities) {
                    engine.set_config(v, lifted.clone());
                    flooders.push(v);
                    let mut t = warmup_us;
                    while t < traffic_end_us {
                        schedule.push((t, actions.len()));
                        actions.push(Action::Flood(v));
                        t += interval_us;
                    }
                }
            }
            FaultSpec::Replayer { fraction, at_s } => {
                for v in pick(&mut rng, n, *fraction, &authorities) {
                    engine.nodes[v].behaviour = Behaviour::Replayer;
                    replayers.push(v);
                    for &at in at_s {
                        schedule.push((s(at), actions.len()));
                        actions.push(Action::Replay(v));
                    }
                }
            }
            FaultSpec::Sybil {
                fraction,
                rate_per_s,
                class,
                hops,
                to_nowhere,
            } => {
                let class = class_of(class).unwrap_or(Class::P0);
                let every_us = (1e6 / rate_per_s.max(1e-3)) as u64;
                for v in pick(&mut rng, n, *fraction, &authorities) {
                    sybils.push(v);
                    let mut t = warmup_us;
                    while t < traffic_end_us {
                        schedule.push((t, actions.len()));
                        actions.push(Action::Sybil {
                            node: v,
                            class,
                            hops: *hops,
                            to_nowhere: *to_nowhere,
                        });
                        t += every_us.max(1);
                    }
                }
            }
            FaultSpec::Puller { fraction } => {
                for v in pick(&mut rng, n, *fraction, &authorities) {
                    engine.nodes[v].behaviour = Behaviour::Puller;
                }
            }
            FaultSpec::Grayhole { fraction, class } => {
                let class = class_of(class).unwrap_or(Class::P2);
                for v in pick(&mut rng, n, *fraction, &authorities) {
                    engine.nodes[v].behaviour = Behaviour::Grayhole(class);
                }
            }
        }
    }
    // Identities on the chain before the run: every router knows them, as
    // a daemon learns them from its chain (their SOS get a neighbour budget
    // that fresh keys cannot use up). Own generator: other draws unchanged.
    if scenario.router.registered > 0.0 {
        let mut pick_rng = StdRng::seed_from_u64(seed ^ 0x7e61_57e2);
        let registered: Vec<_> = faults::pick(&mut pick_rng, n, scenario.router.registered, &[])
            .into_iter()
            .map(|v| engine.nodes[v].address)
            .collect();
        for i in 0..n {
            engine.with_router(i, |r, _| r.set_registered(registered.iter().copied()));
        }
    }
    // Background bulk load: one-hop P3 messages over every directed link,
    // spaced so their bytes fill `load` of its capacity.
    let mut background = Background {
        until_us: traffic_end_us,
        ..Background::default()
    };
    if let Some(spec) = &scenario.background
        && spec.load > 0.0
    {
        let size = spec.size.max(BACKGROUND_MARK.len());
        let mtu = engine
            .config()
            .bulk_mtu
            .clamp(1, engine.config().mtu.max(1));
        // Content, message header and signature-free body, fragment headers.
        let wire = size + 100 + size.div_ceil(mtu) * 16;
        background.size = size;
        for l in 0..engine.links.len() {
            let bytes_per_us = engine.links[l].bytes_per_ms as f64 / 1_000.0 * spec.load;
            let interval = (wire as f64 / bytes_per_us).max(1.0) as u64;
            background.interval_us.push(interval);
            schedule.push((warmup_us + rng.random_range(0..interval), actions.len()));
            actions.push(Action::Background(l));
        }
    }
    // Walkers.
    let mobility = match &scenario.mobility {
        Some(spec) => {
            let range = scenario.mobility_range_m();
            let positions: Option<Vec<(f64, f64)>> = topology
                .nodes
                .iter()
                .map(|v| match v.position {
                    Some(Position::Plane { x, y }) => Some((x, y)),
                    _ => None,
                })
                .collect();
            let (Some(range), Some(positions)) = (range, positions) else {
                return Err(ScenarioError::Topology {
                    path: scenario.name.clone().into(),
                    message: "mobility needs every node on a plane (random_geometric or grid)"
                        .into(),
                });
            };
            let walkers = pick(&mut rng, n, spec.fraction, &authorities);
            let pairs = topology
                .edges
                .iter()
                .zip(&edge_links)
                .map(|(e, &l)| (e.a, e.b, l));
            let new_link = NewLink {
                latency_us: (links.latency_ms * 1_000.0) as u64,
                jitter_us: (links.jitter_ms * 1_000.0) as u64,
                bytes_per_ms,
                loss: links.loss,
            };
            schedule.push((warmup_us, actions.len()));
            actions.push(Action::Move);
            Some(Mobility::new(
                spec,
                range,
                positions,
                &walkers,
                pairs,
                new_link,
                &mut engine,
            ))
        }
        None => None,
    };
    // Samples every 10 simulated seconds.
    let mut t = start_us;
    while t < end_us {
        schedule.push((t, actions.len()));
        actions.push(Action::Sample);
        t += 10_000_000;
    }
    for (at, index) in schedule {
        engine.schedule(at, index);
    }
    let chain = scenario.chain.as_ref().map(|spec| {
        let period = std::time::Duration::from_secs_f64(spec.period_s.max(0.001));
        let heartbeat = spec
            .heartbeat_s
            .map_or(period, std::time::Duration::from_secs_f64);
        let equivocators: Vec<usize> = authorities
            .iter()
            .copied()
            .take(spec.equivocators)
            .collect();
        let home = authorities.first().map_or(0, |&a| component_of[a]);
        let counted = (0..n).map(|v| component_of[v] == home).collect();
        // Each clone runs on the node furthest from its authority.
        let adjacency = topology.adjacency();
        let clones: Vec<(usize, usize)> = authorities
            .iter()
            .take(spec.clones)
            .filter_map(|&a| {
                let hops = hops_from(&adjacency, a);
                (0..n)
                    .filter(|v| !authorities.contains(v) && hops[*v].is_some())
                    .max_by_key(|v| (hops[*v], std::cmp::Reverse(*v)))
                    .map(|clone| (clone, a))
            })
            .collect();
        ChainNet::new(
            &engine,
            counted,
            authorities.clone(),
            &equivocators,
            &clones,
            period,
            heartbeat,
            seed,
        )
    });

    let outcomes = vec![Outcome::default(); planned.len()];
    let mut collector = Collector {
        actions,
        planned,
        outcomes,
        by_id: HashMap::new(),
        rings: HashMap::new(),
        replay: HashMap::new(),
        crypto_rng: StdRng::seed_from_u64(seed ^ 0xc0ffee),
        duplicates: 0,
        restarts: 0,
        open_failures: 0,
        unicast_frames: [0; 4],
        broadcast_frames: [0; 4],
        evicted: 0,
        expired: 0,
        custody_peak: 0,
        timeline: Vec::new(),
        bucket_us: 10_000_000,
        start_us: warmup_us,
        progress,
        sim_start_us: start_us,
        end_us,
        chain,
        flood: Flood {
            flooders,
            ..Flood::default()
        },
        reached: HashSet::new(),
        replayers,
        sybils: sybil::Sybils::new(sybils),
        honest_reported: 0,
        background,
        mobility,
    };
    collector.chain_wakes(&mut engine);
    // Prekeys of every destination exist before traffic (as published keys would).
    let destinations: Vec<usize> = collector.planned.iter().filter_map(|p| p.to).collect();
    for d in destinations {
        collector.ring(&engine, d);
    }

    engine.run_until(warmup_us, &mut collector);
    let control_at_warmup = control_bytes(&engine);
    let bytes_at_warmup = engine.bytes;
    engine.run_until(traffic_end_us, &mut collector);
    let traffic_bytes = engine.bytes - bytes_at_warmup;
    engine.run_until(end_us, &mut collector);
    let control = control_bytes(&engine).saturating_sub(control_at_warmup);
    let routes = per_router(&engine, |r| r.routes().count() as u64);
    let measured_s = (end_us - warmup_us) as f64 / 1e6;

    // Shortest paths for a sample of unicast messages.
    let graph = Graph::new(&engine);
    let honest = HonestRelays::new(&engine, &topology);
    let mut per_class: Vec<ClassReport> = Vec::new();
    for class in Class::ALL {
        let ks: Vec<usize> = (0..collector.planned.len())
            .filter(|k| collector.planned[*k].class == class)
            .collect();
        if ks.is_empty() {
            continue;
        }
        let sent = ks
            .iter()
            .filter(|k| !collector.outcomes[**k].refused)
            .count() as u64;
        let refused = ks.len() as u64 - sent;
        let broadcast = collector.planned[ks[0]].to.is_none();
        let mut report = ClassReport {
            class: class_name(class).to_string(),
            broadcast,
            sent,
            refused_at_source: refused,
            ..ClassReport::default()
        };
        if broadcast {
            let reach: Vec<f64> = ks
                .iter()
                .filter(|k| !collector.outcomes[**k].refused)
                .map(|k| {
                    let from = collector.planned[*k].from;
                    let size = components[component_of[from]]
                        .len()
                        .saturating_sub(1)
                        .max(1);
                    collector.outcomes[*k].reached as f64 / size as f64
                })
                .collect();
            report.delivered = reach.iter().filter(|r| **r >= 0.999).count() as u64;
            report.deliverable = sent;
            report.delivery_ratio = if reach.is_empty() {
                1.0
            } else {
                reach.iter().sum::<f64>() / reach.len() as f64
            };
            report.deliverable_ratio = report.delivery_ratio;
            report.transmissions_per_message =
                collector.broadcast_frames[class as usize] as f64 / sent.max(1) as f64;
            let edges: usize = engine.links.len();
            report.flooding_transmissions_per_message = edges as f64;
        } else {
            let delivered: Vec<usize> = ks
                .iter()
                .copied()
                .filter(|k| collector.outcomes[*k].delivered_at_us.is_some())
                .collect();
            report.delivered = delivered.len() as u64;
            report.delivery_ratio = report.delivered as f64 / sent.max(1) as f64;
            let possible: Vec<usize> = ks
                .iter()
                .copied()
                .filter(|k| !collector.outcomes[*k].refused)
                .filter(|k| {
                    let p = &collector.planned[*k];
                    // A flooder's own messages share its origin's allowance
                    // with its flood: they are a hostile origin's, not owed.
                    // A puller advertises no routes: messages to it are
                    // not owed either.
                    p.to.is_some_and(|to| {
                        honest.joined(p.from, to) && engine.nodes[to].behaviour != Behaviour::Puller
                    }) && !collector.flood.flooders.contains(&p.from)
                })
                .collect();
            report.deliverable = possible.len() as u64;
            report.deliverable_ratio = possible
                .iter()
                .filter(|k| collector.outcomes[**k].delivered_at_us.is_some())
                .count() as f64
                / possible.len().max(1) as f64;
            let mut latencies: Vec<f64> = delivered
                .iter()
                .map(|k| {
                    (collector.outcomes[*k].delivered_at_us.unwrap_or(0)
                        - collector.planned[*k].at_us) as f64
                        / 1_000.0
                })
                .collect();
            latencies.sort_by(f64::total_cmp);
            report.latency_ms = [
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.9),
                percentile(&latencies, 0.99),
            ];
            report.latency_histogram_ms = crate::report::histogram(&latencies);
            let mut receipts: Vec<f64> = ks
                .iter()
                .filter_map(|k| {
                    let at = collector.outcomes[*k].receipt_at_us?;
                    Some(at.saturating_sub(collector.planned[*k].at_us) as f64 / 1_000.0)
                })
                .collect();
            receipts.sort_by(f64::total_cmp);
            report.receipts = receipts.len() as u64;
            report.receipt_ms = [0.5, 0.9, 0.99].map(|p| percentile(&receipts, p));
            let hops: Vec<f64> = delivered
                .iter()
                .map(|k| f64::from(collector.outcomes[*k].hops))
                .collect();
            report.hops_mean = hops.iter().sum::<f64>() / hops.len().max(1) as f64;
            report.transmissions_per_message =
                collector.unicast_frames[class as usize] as f64 / report.delivered.max(1) as f64;
            report.opened = delivered
                .iter()
                .filter(|k| collector.outcomes[**k].opened)
                .count() as u64;
            for k in &ks {
                let o = &collector.outcomes[*k];
                if o.delivered_at_us.is_some() || o.refused {
                    continue;
                }
                let held = o.id.is_some_and(|id| {
                    engine
                        .nodes
                        .iter()
                        .filter_map(|v| v.router.as_ref())
                        .any(|r| r.holds(&id))
                });
                if held {
                    report.held_at_end += 1;
                } else {
                    report.lost += 1;
                }
            }
            // Stretch and shortest hop counts on a sample (Dijkstra per source).
            let mut stretch = Vec::new();
            let mut shortest_hops = Vec::new();
            for k in delivered.iter().take(300) {
                let p = &collector.planned[*k];
                let Some(to) = p.to else { continue };
                let (lat, hop) = graph.shortest(p.from, to, collector.outcomes[*k].wire_bytes);
                let took = (collector.outcomes[*k].delivered_at_us.unwrap_or(0) - p.at_us) as f64;
                if lat > 0.0 {
                    stretch.push(took / lat);
                }
                shortest_hops.push(hop as f64);
            }
            stretch.sort_by(f64::total_cmp);
            report.stretch = [percentile(&stretch, 0.5), percentile(&stretch, 0.99)];
            report.shortest_hops_mean =
                shortest_hops.iter().sum::<f64>() / shortest_hops.len().max(1) as f64;
            report.flooding_transmissions_per_message = engine.links.len() as f64;
        }
        per_class.push(report);
    }

    let mut report = Report {
        scenario: scenario.name.clone(),
        seed,
        nodes: n as u64,
        edges: topology.edges.len() as u64,
        components: components.iter().map(|c| c.len() as u64).collect(),
        classes: per_class,
        control_bytes_per_node_s: control as f64 / n.max(1) as f64 / measured_s.max(1e-9),
        warmup_control_bytes_per_node: control_at_warmup as f64 / n.max(1) as f64,
        routes_per_node: routes as f64 / n.max(1) as f64,
        lookups_sent: per_router(&engine, |r| r.stats().lookups_sent),
        lookups_answered: per_router(&engine, |r| r.stats().lookups_answered),
        custody_peak: collector.custody_peak as u64,
        custody_evictions: collector.evicted,
        custody_expired: collector.expired,
        duplicates_delivered: collector.duplicates,
        restarts: collector.restarts,
        open_failures: collector.open_failures,
        timeline: collector.timeline.clone(),
        chain: collector
            .chain
            .take()
            .map(|c| c.finish(engine.now_us().saturating_sub(EPOCH_MS * 1_000) as f64 / 1e6)),
        flood: (!collector.flood.flooders.is_empty()).then(|| {
            let config = engine.config();
            let f = &collector.flood;
            let flooders = f.flooders.len() as u64;
            let honest = (n as u64).saturating_sub(flooders);
            // What the per-origin limit lets each honest node receive from each flooder.
            let per_origin = u64::from(config.sos_burst)
                + scenario.duration_s * 1_000 / config.sos_interval_ms.max(1);
            let allowed = per_origin * flooders * honest;
            FloodReport {
                flooders,
                sent: f.sent,
                delivered_to_honest: f.delivered_to_honest,
                allowed_to_honest: allowed,
                admitted_ratio: f.delivered_to_honest as f64 / allowed.max(1) as f64,
            }
        }),
        sybil: (!collector.sybils.nodes.is_empty()).then(|| {
            let y = &collector.sybils;
            let honest = (n as u64).saturating_sub(y.nodes.len() as u64).max(1);
            SybilReport {
                sybils: y.nodes.len() as u64,
                sent: y.sent,
                delivered_to_honest: y.delivered_to_honest,
                per_honest_node: y.delivered_to_honest as f64 / honest as f64,
            }
        }),
        honest_reported: collector.honest_reported,
        pull: scenario
            .faults
            .iter()
            .any(|f| matches!(f, FaultSpec::Puller { .. }))
            .then_some([engine.pull_asked, engine.pull_dropped]),
        replay: (!collector.replayers.is_empty()).then_some(ReplayReport {
            replayers: collector.replayers.len() as u64,
            frames_replayed: engine.replayed,
        }),
        background: scenario.background.as_ref().map(|spec| {
            let b = &collector.background;
            let capacity: f64 = engine
                .links
                .iter()
                .map(|l| l.bytes_per_ms as f64 * 1_000.0)
                .sum::<f64>()
                * scenario.duration_s as f64;
            BackgroundReport {
                load: spec.load,
                sent: b.sent,
                refused: b.refused,
                delivered: b.delivered,
                link_utilisation: traffic_bytes as f64 / capacity.max(1.0),
            }
        }),
        mobility: collector.mobility.as_ref().map(|m| MobilityReport {
            walkers: m.walkers() as u64,
            links_made: m.links_made,
            links_up: m.links_up,
            links_down: m.links_down,
        }),
        engine: EngineReport {
            events: engine.events,
            packets: engine.packets,
            bytes: engine.bytes,
            simulated_s: (end_us - start_us) as f64 / 1e6,
        },
        failures: Vec::new(),
        map: map_data(&topology, &collector),
    };
    report.failures = report.check(&scenario.assertions);
    let wall_s = wall.elapsed().as_secs_f64();
    let host = HostReport {
        wall_s,
        events_per_s: engine.events as f64 / wall_s.max(1e-9),
        peak_memory_mib: peak_memory_mib(),
    };
    Ok((report, host))
}

/// Positions, links, and per node the unicast messages meant for it and
/// delivered, for the HTML report's map.
fn map_data(topology: &Topology, collector: &Collector) -> MapData {
    let n = topology.nodes.len();
    let mut map = MapData {
        positions: topology
            .nodes
            .iter()
            .map(|v| match v.position {
                Some(Position::Plane { x, y }) => Some((x, y)),
                Some(Position::Geo { lat, lon }) => Some((lon, lat)),
                None => None,
            })
            .collect(),
        edges: topology.edges.iter().map(|e| (e.a, e.b)).collect(),
        expected: vec![0; n],
        delivered: vec![0; n],
    };
    for (p, o) in collector.planned.iter().zip(&collector.outcomes) {
        if let Some(to) = p.to
            && !o.refused
        {
            map.expected[to] += 1;
            if o.delivered_at_us.is_some() {
                map.delivered[to] += 1;
            }
        }
    }
    map
}

/// A random node of `component` other than `from`; `None` if it has no other.
fn other_in(component: &[usize], from: usize, rng: &mut StdRng) -> Option<usize> {
    if component.iter().all(|&v| v == from) {
        return None;
    }
    loop {
        let to = component[rng.random_range(0..component.len())];
        if to != from {
            return Some(to);
        }
    }
}

fn control_bytes(engine: &Engine) -> u64 {
    per_router(engine, |r| r.stats().control_bytes)
}

/// The sum of `f` over the routers running.
fn per_router(
    engine: &Engine,
    f: impl Fn(&lifeline_routing::Router<lifeline_routing::store::MemoryMessageStore>) -> u64,
) -> u64 {
    engine
        .nodes
        .iter()
        .filter_map(|n| n.router.as_ref())
        .map(f)
        .sum()
}

/// Which node pairs a path of honest relays joins: components of the graph
/// of honest nodes, and for each node the components it touches.
struct HonestRelays {
    touches: Vec<Vec<usize>>,
    adjacency: Vec<Vec<usize>>,
}

impl HonestRelays {
    fn new(engine: &Engine, topology: &Topology) -> HonestRelays {
        let n = topology.nodes.len();
        let honest: Vec<bool> = engine
            .nodes
            .iter()
            .map(|v| v.behaviour == Behaviour::Honest)
            .collect();
        let adjacency = topology.adjacency();
        let mut component = vec![usize::MAX; n];
        for (c, nodes) in topology.components_among(|v| honest[v]).iter().enumerate() {
            for &v in nodes {
                component[v] = c;
            }
        }
        let touches = (0..n)
            .map(|v| {
                let mut c: Vec<usize> = std::iter::once(v)
                    .chain(adjacency[v].iter().copied())
                    .filter(|&w| honest[w])
                    .map(|w| component[w])
                    .collect();
                c.sort_unstable();
                c.dedup();
                c
            })
            .collect();
        HonestRelays { touches, adjacency }
    }

    /// Whether `a` reaches `b` directly or through honest relays only.
    fn joined(&self, a: usize, b: usize) -> bool {
        self.adjacency[a].contains(&b)
            || self.touches[a]
                .iter()
                .any(|c| self.touches[b].binary_search(c).is_ok())
    }
}

/// The simulated links as a weighted graph, for shortest paths.
struct Graph {
    /// (to, latency µs, bytes per ms) per node.
    adj: Vec<Vec<(usize, u64, u64)>>,
}

impl Graph {
    fn new(engine: &Engine) -> Graph {
        let mut adj = vec![Vec::new(); engine.nodes.len()];
        for l in &engine.links {
            adj[l.from].push((l.to, l.latency_us, l.bytes_per_ms));
        }
        Graph { adj }
    }

    /// Shortest latency (µs, for a packet of `bytes`) and its hop count.
    fn shortest(&self, from: usize, to: usize, bytes: usize) -> (f64, usize) {
        let n = self.adj.len();
        let mut dist = vec![u64::MAX; n];
        let mut hops = vec![0usize; n];
        let mut heap = std::collections::BinaryHeap::new();
        dist[from] = 0;
        heap.push(std::cmp::Reverse((0u64, from)));
        while let Some(std::cmp::Reverse((d, x))) = heap.pop() {
            if x == to {
                return (d as f64, hops[x]);
            }
            if d > dist[x] {
                continue;
            }
            for &(y, lat, bpm) in &self.adj[x] {
                let w = lat + (bytes as u64 * 1_000).div_ceil(bpm.max(1));
                if d + w < dist[y] {
                    dist[y] = d + w;
                    hops[y] = hops[x] + 1;
                    heap.push(std::cmp::Reverse((d + w, y)));
                }
            }
        }
        (0.0, 0)
    }
}

fn peak_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
