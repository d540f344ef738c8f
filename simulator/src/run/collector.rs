//! What a run measures: the collector that watches every router event and
//! each message's outcome.

use super::*;
/// Marks the payload of background bulk messages.
pub(super) const BACKGROUND_MARK: &[u8] = b"bulk background load";

/// Bulk load on every link, counted apart from the scenario's traffic.
#[derive(Default)]
pub(super) struct Background {
    pub(super) size: usize,
    /// Time between messages per directed link, µs.
    pub(super) interval_us: Vec<u64>,
    pub(super) until_us: u64,
    pub(super) sent: u64,
    pub(super) refused: u64,
    pub(super) delivered: u64,
    pub(super) frames: u64,
}

/// One message the scenario sends.
#[derive(Clone, Debug)]
pub(super) struct Planned {
    pub(super) at_us: u64,
    pub(super) from: usize,
    /// `None` for a broadcast.
    pub(super) to: Option<usize>,
    pub(super) class: Class,
    pub(super) size: usize,
    /// A chain registration for an authority, not a sealed envelope.
    pub(super) register: bool,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Outcome {
    pub(super) id: Option<MessageId>,
    pub(super) refused: bool,
    pub(super) delivered_at_us: Option<u64>,
    /// When its origin heard it delivered (the destination's receipt).
    pub(super) receipt_at_us: Option<u64>,
    pub(super) hops: u32,
    pub(super) reached: u64,
    pub(super) opened: bool,
    /// Bytes of the message frame on a link (for the shortest-path latency).
    pub(super) wire_bytes: usize,
}

pub(super) struct Collector {
    pub(super) actions: Vec<Action>,
    pub(super) planned: Vec<Planned>,
    pub(super) outcomes: Vec<Outcome>,
    pub(super) by_id: HashMap<MessageId, usize>,
    pub(super) rings: HashMap<usize, PrekeyRing>,
    pub(super) replay: HashMap<usize, ReplayGuard>,
    pub(super) crypto_rng: StdRng,
    pub(super) duplicates: u64,
    pub(super) restarts: u64,
    pub(super) open_failures: u64,
    pub(super) unicast_frames: [u64; 4],
    pub(super) broadcast_frames: [u64; 4],
    pub(super) evicted: u64,
    pub(super) expired: u64,
    pub(super) custody_peak: usize,
    pub(super) timeline: Vec<[u64; 2]>,
    pub(super) bucket_us: u64,
    pub(super) start_us: u64,
    pub(super) progress: Option<Box<dyn FnMut(f64)>>,
    pub(super) sim_start_us: u64,
    pub(super) end_us: u64,
    pub(super) chain: Option<ChainNet>,
    pub(super) flood: Flood,
    pub(super) sybils: sybil::Sybils,
    /// Times an honest node reported an honest neighbour as misbehaving.
    pub(super) honest_reported: u64,
    /// (message, node) pairs a broadcast reached, to catch second deliveries.
    pub(super) reached: HashSet<(usize, usize)>,
    pub(super) replayers: Vec<usize>,
    pub(super) background: Background,
    pub(super) mobility: Option<Mobility>,
}

/// The flooders' SOS spam, counted apart from the scenario's traffic.
#[derive(Default)]
pub(super) struct Flood {
    pub(super) flooders: Vec<usize>,
    pub(super) ids: HashSet<MessageId>,
    pub(super) sent: u64,
    pub(super) delivered_to_honest: u64,
}

impl Collector {
    pub(super) fn ring(&mut self, engine: &Engine, node: usize) -> &PrekeyRing {
        let identity = &engine.nodes[node].identity;
        let rng = &mut self.crypto_rng;
        self.rings.entry(node).or_insert_with(|| {
            PrekeyRing::new(identity, Timestamp::from_unix_millis(EPOCH_MS), rng)
        })
    }

    pub(super) fn bucket(&mut self, at_us: u64, which: usize) {
        let b = (at_us.saturating_sub(self.start_us) / self.bucket_us.max(1)) as usize;
        if self.timeline.len() <= b {
            self.timeline.resize(b + 1, [0, 0]);
        }
        self.timeline[b][which] += 1;
    }

    /// Schedules what the chain asked to be woken for.
    pub(super) fn chain_wakes(&mut self, engine: &mut Engine) {
        let Some(chain) = self.chain.as_mut() else {
            return;
        };
        for (at, wake) in chain.take_wakes() {
            engine.schedule(at, self.actions.len());
            self.actions.push(Action::Chain(wake));
        }
    }

    pub(super) fn send(&mut self, engine: &mut Engine, k: usize) {
        let p = self.planned[k].clone();
        let now_ms = engine.now_us() / 1_000;
        let payload = match (p.class, p.to) {
            _ if p.register => {
                let prekey = self.ring(engine, p.from).current().clone();
                let sender = &engine.nodes[p.from].identity;
                let action = ChainAction::RegisterIdentity {
                    display_name: format!("node {}", p.from),
                    prekey,
                };
                if let Some(chain) = self.chain.as_mut() {
                    chain.submitted(*sender.id());
                }
                Transaction::sign(sender, 0, action).to_bytes().to_vec()
            }
            (Class::P2 | Class::P3, Some(to)) => {
                let prekey = self.ring(engine, to).current().clone();
                let content = vec![0x5a; p.size];
                let sender = engine.nodes[p.from].identity.clone();
                match envelope::seal(
                    &sender,
                    &prekey,
                    &content,
                    Timestamp::from_unix_millis(now_ms),
                    &mut self.crypto_rng,
                ) {
                    Ok(sealed) => sealed.bytes,
                    Err(_) => content,
                }
            }
            _ => vec![0x50; p.size],
        };
        let destination = match p.to {
            Some(to) => Destination::Node(engine.nodes[to].address),
            None => Destination::Broadcast {
                hops: None,
                area: None,
            },
        };
        let payload_len = payload.len();
        let request = SendRequest {
            class: p.class,
            destination,
            payload,
            ttl_ms: None,
        };
        let result = engine.with_router(p.from, |r, now| r.send(now, request));
        match result {
            Some(Ok(id)) => {
                self.outcomes[k].id = Some(id);
                // Frame overhead: ids, times, nonce, hops; 100 more when signed.
                let signed = matches!(p.class, Class::P0 | Class::P1);
                self.outcomes[k].wire_bytes = payload_len + if signed { 200 } else { 100 };
                self.by_id.insert(id, k);
                self.bucket(engine.now_us(), 0);
            }
            _ => self.outcomes[k].refused = true,
        }
    }
}

impl Observer for Collector {
    fn event(&mut self, engine: &Engine, node: usize, now_us: u64, event: &Event) {
        match event {
            Event::Delivered(d) => {
                if d.payload.starts_with(BACKGROUND_MARK) {
                    self.background.delivered += 1;
                    return;
                }
                if self.flood.ids.contains(&d.id) {
                    if !self.flood.flooders.contains(&node) {
                        self.flood.delivered_to_honest += 1;
                    }
                    return;
                }
                if self.sybils.ids.contains(&d.id) {
                    if !self.sybils.nodes.contains(&node) {
                        self.sybils.delivered_to_honest += 1;
                    }
                    return;
                }
                let Some(&k) = self.by_id.get(&d.id) else {
                    return;
                };
                let to = self.planned[k].to;
                if to.is_none() {
                    if self.reached.insert((k, node)) {
                        self.outcomes[k].reached += 1;
                    } else {
                        self.duplicates += 1;
                    }
                    return;
                }
                if to != Some(node) {
                    return;
                }
                if self.outcomes[k].delivered_at_us.is_some() {
                    self.duplicates += 1;
                    return;
                }
                self.outcomes[k].delivered_at_us = Some(now_us);
                self.outcomes[k].hops = d.hops;
                self.bucket(now_us, 1);
                if self.planned[k].register {
                    self.outcomes[k].opened = true;
                    if let Some(chain) = self.chain.as_mut() {
                        chain.submit(node, &d.payload);
                    }
                } else if matches!(d.class, Class::P2 | Class::P3) {
                    let identity: Identity = engine.nodes[node].identity.clone();
                    let ring = self.rings.get(&node);
                    let replay = self.replay.entry(node).or_default();
                    let opened = ring.is_some_and(|ring| {
                        envelope::open(
                            &d.payload,
                            &identity,
                            ring,
                            replay,
                            Timestamp::from_unix_millis(now_us / 1_000),
                            &OpenPolicy::default(),
                        )
                        .is_ok()
                    });
                    self.outcomes[k].opened = opened;
                    if !opened {
                        self.open_failures += 1;
                    }
                } else {
                    self.outcomes[k].opened = true;
                }
            }
            Event::Status {
                id,
                status: lifeline_routing::Status::Delivered,
            } => {
                if let Some(&k) = self.by_id.get(id)
                    && self.planned[k].from == node
                {
                    self.outcomes[k].receipt_at_us.get_or_insert(now_us);
                }
            }
            Event::Misbehaving { neighbour, .. } => {
                let hostile = |v: usize| {
                    self.flood.flooders.contains(&v)
                        || self.replayers.contains(&v)
                        || self.sybils.nodes.contains(&v)
                        || !matches!(engine.nodes[v].behaviour, Behaviour::Honest)
                };
                if let Some(n) = engine.node_of(neighbour)
                    && !hostile(node)
                    && !hostile(n)
                {
                    self.honest_reported += 1;
                }
            }
            Event::Evicted { .. } => self.evicted += 1,
            Event::Expired { .. } => self.expired += 1,
            _ => {}
        }
    }

    fn message_frame(&mut self, body: &Body, _from: usize, _to: usize) {
        if body.kind == Kind::Data {
            if body.payload.starts_with(BACKGROUND_MARK) {
                self.background.frames += 1;
                return;
            }
            let c = body.class as usize;
            if body.destination.is_some() {
                self.unicast_frames[c] += 1;
            } else {
                self.broadcast_frames[c] += 1;
            }
        }
    }

    fn side(&mut self, engine: &mut Engine, link: usize, bytes: Vec<u8>) {
        if let Some(chain) = self.chain.as_mut() {
            chain.receive(engine, link, &bytes);
        }
        self.chain_wakes(engine);
    }

    fn action(&mut self, engine: &mut Engine, index: usize) {
        self.act(engine, index);
        self.chain_wakes(engine);
    }
}

impl Collector {
    pub(super) fn act(&mut self, engine: &mut Engine, index: usize) {
        match self.actions[index].clone() {
            Action::Send(k) => {
                let from = self.planned[k].from;
                self.send(engine, k);
                engine.flush(from, self);
            }
            Action::Links { links, up, heal } => {
                for &l in &links {
                    engine.set_link(l, up);
                }
                if let Some(chain) = self.chain.as_mut() {
                    if up {
                        chain.links_up(engine, &links, heal);
                    } else {
                        chain.links_down(engine, &links);
                    }
                }
            }
            Action::Crash(nodes) => {
                for n in nodes {
                    engine.crash(n);
                    if let Some(chain) = self.chain.as_mut() {
                        chain.crash(engine, n);
                    }
                }
            }
            Action::Restart(nodes) => {
                for n in nodes {
                    self.restarts += 1;
                    engine.restart(n);
                    if let Some(chain) = self.chain.as_mut() {
                        chain.restart(engine, n);
                    }
                }
            }
            Action::Chain(wake) => {
                if let Some(chain) = self.chain.as_mut() {
                    chain.wake(engine, wake);
                }
            }
            Action::Flood(v) => {
                let request = SendRequest {
                    class: Class::P0,
                    destination: Destination::Broadcast {
                        hops: None,
                        area: None,
                    },
                    payload: b"SOS SOS SOS (flood)".to_vec(),
                    ttl_ms: None,
                };
                if let Some(Ok(id)) = engine.with_router(v, |r, now| r.send(now, request)) {
                    self.flood.ids.insert(id);
                    self.flood.sent += 1;
                }
                engine.flush(v, self);
            }
            Action::Replay(v) => {
                engine.replay(v);
            }
            Action::Sybil {
                node,
                class,
                hops,
                to_nowhere,
            } => {
                let frame = self
                    .sybils
                    .message(class, hops, to_nowhere, engine.now_us() / 1_000);
                engine.inject(node, &[frame]);
            }
            Action::Move => {
                let Some(mobility) = self.mobility.as_mut() else {
                    return;
                };
                let (up, down) = mobility.step(engine);
                let next = engine.now_us() + mobility.step_us;
                if let Some(chain) = self.chain.as_mut() {
                    chain.links_down(engine, &down);
                    chain.links_up(engine, &up, false);
                }
                if next < self.end_us {
                    engine.schedule(next, index);
                }
            }
            Action::Background(l) => {
                let link = &engine.links[l];
                let (from, to) = (link.from, link.to);
                if engine.link_up(l) {
                    let mut payload = vec![0x33; self.background.size.max(BACKGROUND_MARK.len())];
                    payload[..BACKGROUND_MARK.len()].copy_from_slice(BACKGROUND_MARK);
                    let request = SendRequest {
                        class: Class::P3,
                        destination: Destination::Node(engine.nodes[to].address),
                        payload,
                        ttl_ms: Some(60_000),
                    };
                    match engine.with_router(from, |r, now| r.send(now, request)) {
                        Some(Ok(_)) => self.background.sent += 1,
                        _ => self.background.refused += 1,
                    }
                    engine.flush(from, self);
                }
                let next = engine.now_us() + self.background.interval_us[l];
                if next < self.background.until_us {
                    engine.schedule(next, index);
                }
            }
            Action::Sample => {
                if let Some(chain) = self.chain.as_mut() {
                    chain.sample();
                }
                let held: usize = engine
                    .nodes
                    .iter()
                    .filter_map(|n| n.router.as_ref())
                    .map(|r| r.custody().0)
                    .max()
                    .unwrap_or(0);
                self.custody_peak = self.custody_peak.max(held);
                if let Some(progress) = self.progress.as_mut() {
                    let span = self.end_us.saturating_sub(self.sim_start_us).max(1);
                    progress(
                        engine.now_us().saturating_sub(self.sim_start_us) as f64 / span as f64,
                    );
                }
            }
        }
    }
}
