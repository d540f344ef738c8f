//! The chain in the simulator: every node runs the real
//! `lifeline_consensus::Chain` (in-memory store) and its neighbour `Sync`
//! over the engine's side stream; the authorities seal blocks on the
//! schedule `Chain::sealing_delay` gives them.
//!
//! It measures what the chain rules promise: how long a block takes to be
//! final at every node, whether any two nodes ever finalize different
//! blocks at one height, how long the network needs to agree on one head
//! after a split heals, and whether nodes notice an authority that seals
//! two blocks at one height.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use lifeline_consensus::sync::{Sync, SyncMessage};
use lifeline_consensus::{
    BlockHash, Chain, ChainConfig, ChainStore, Genesis, Head, MemoryChainStore, SealedBlock,
    Transaction, TxPool, Validation,
};
use lifeline_crypto::{NodeId, Timestamp};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::engine::Engine;
use crate::report::percentile;

/// Most transactions an authority keeps waiting for a block.
const MAX_POOL: usize = 4_096;

/// Something the chain asks to be woken for.
#[derive(Clone, Copy, Debug)]
pub enum Wake {
    /// Authority `node` may seal on `parent` now.
    Seal {
        /// The authority.
        node: usize,
        /// The head it planned to build on (stale if the head moved).
        parent: BlockHash,
    },
    /// Node `node`'s sync request may have timed out.
    Sync(usize),
    /// Authority `node` may vote for its head now.
    Vote(usize),
}

/// What the chain did over a run (deterministic).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainReport {
    /// Authorities at genesis.
    pub authorities: u64,
    /// Block period, seconds.
    pub period_s: f64,
    /// Blocks sealed by authorities (an equivocator's second blocks not counted).
    pub blocks_sealed: u64,
    /// The highest head at the end.
    pub head_max: u64,
    /// The lowest finalized height at the end of a running node in the
    /// authorities' component.
    pub finalized_min: u64,
    /// Time from a block's timestamp until a node saw it final, in block
    /// periods: p50, p99, max over every node and every block it saw
    /// become final.
    pub finality_lag_periods: [f64; 3],
    /// Head changes that left the old head's branch, summed over nodes.
    pub reorgs: u64,
    /// Heights at which two nodes finalized different blocks, or a node's
    /// canonical chain at the end disagrees with a block finalized anywhere.
    /// Must be 0.
    pub finalized_conflicts: u64,
    /// Second blocks sealed at one height by equivocating authorities.
    pub equivocations_sealed: u64,
    /// Nodes that hold proof of an equivocation.
    pub equivocation_detected_nodes: u64,
    /// Nodes that hold proof of a broken voting rule (a double or surround
    /// finality vote).
    pub vote_evidence_nodes: u64,
    /// The signers named in block evidence anywhere, as PeerIds.
    pub block_evidence_signers: Vec<String>,
    /// The signers named in vote evidence anywhere, as PeerIds.
    pub vote_evidence_signers: Vec<String>,
    /// The keys that run on two nodes (`clones`), as PeerIds.
    pub cloned_signers: Vec<String>,
    /// The equivocators' keys, as PeerIds.
    pub equivocator_signers: Vec<String>,
    /// After the last heal: time until every running node of the
    /// authorities' component had the same head,
    /// in block periods (`None` without a heal, or if they never agreed).
    pub heal_agreement_periods: Option<f64>,
    /// Nodes that sent a registration, and those of them registered on the
    /// head of the first authority at the end.
    pub txs_submitted: u64,
    /// See `txs_submitted`.
    pub txs_registered: u64,
    /// Sync messages that did not decode.
    pub bad_messages: u64,
    /// Finality-vote messages sent between neighbours, and their bytes.
    pub vote_messages: u64,
    /// See `vote_messages`.
    pub vote_bytes: u64,
    /// Finality-vote bytes sent per node and simulated second, over the
    /// whole run.
    pub vote_bytes_per_node_s: f64,
    /// Every 10 s: [highest head, lowest head, highest finalized, lowest
    /// finalized] over running nodes.
    pub timeline: Vec<[u64; 4]>,
}

/// The chain of every node.
pub struct ChainNet {
    genesis: Genesis,
    period_ms: u64,
    heartbeat_ms: u64,
    chains: Vec<Option<Chain<MemoryChainStore>>>,
    stored: Vec<Option<MemoryChainStore>>,
    syncs: Vec<Sync<usize>>,
    /// The authorities' node indices (clones included).
    pub authorities: Vec<usize>,
    /// The key each of `authorities` seals and votes with.
    authority_ids: Vec<NodeId>,
    /// The node whose identity a node seals and votes with: itself, or for
    /// a clone the authority it copies.
    signs_as: Vec<usize>,
    equivocating: Vec<bool>,
    /// An equivocator's canonical block → the other block it sealed at that height.
    alternates: HashMap<BlockHash, Vec<u8>>,
    pools: HashMap<usize, TxPool>,
    sync_timer: Vec<Option<u64>>,
    /// When each authority's vote wait ends (one wake-up per wait).
    vote_timer: Vec<Option<u64>>,
    last_head: Vec<Head>,
    /// The highest justified block each node last announced.
    last_justified: Vec<BlockHash>,
    last_finalized: Vec<Head>,
    head_count: HashMap<BlockHash, usize>,
    running: usize,
    counted: Vec<bool>,
    healed_at_us: Option<u64>,
    agreed_at_us: Option<u64>,
    finalized_at: BTreeMap<u64, BlockHash>,
    lags_ms: Vec<u64>,
    /// Each sealed block's timestamp, to time its finality.
    sealed_ms: HashMap<BlockHash, u64>,
    detected: HashSet<usize>,
    vote_detected: HashSet<usize>,
    block_evidence_signers: std::collections::BTreeSet<NodeId>,
    vote_evidence_signers: std::collections::BTreeSet<NodeId>,
    submitted: Vec<NodeId>,
    rng: StdRng,
    wakes: Vec<(u64, Wake)>,
    report: ChainReport,
}

fn ms(us: u64) -> u64 {
    us / 1_000
}

fn ts(us: u64) -> Timestamp {
    Timestamp::from_unix_millis(ms(us))
}

impl ChainNet {
    /// Every node at genesis; `authorities` seal, `equivocators` (a subset)
    /// seal two blocks at each of their heights, and each `(clone, of)` in
    /// `clones` runs authority `of`'s key a second time on node `clone`,
    /// with a store of its own. Agreement and the lowest finalized height
    /// are measured over the nodes `counted` marks (the component the
    /// authorities are in: an isolated node cannot sync).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: &Engine,
        counted: Vec<bool>,
        mut authorities: Vec<usize>,
        equivocators: &[usize],
        clones: &[(usize, usize)],
        period: Duration,
        heartbeat: Duration,
        seed: u64,
    ) -> ChainNet {
        let n = engine.nodes.len();
        let mut signs_as: Vec<usize> = (0..n).collect();
        let signers: Vec<NodeId> = authorities
            .iter()
            .map(|&a| *engine.nodes[a].identity.id())
            .collect();
        let mut report = ChainReport::default();
        for &(clone, of) in clones {
            signs_as[clone] = of;
            authorities.push(clone);
            report
                .cloned_signers
                .push(engine.nodes[of].identity.id().to_string());
        }
        let authority_ids: Vec<NodeId> = authorities
            .iter()
            .map(|&a| *engine.nodes[signs_as[a]].identity.id())
            .collect();
        let genesis = Genesis {
            config: ChainConfig {
                period,
                heartbeat: heartbeat.max(period),
                ..ChainConfig::default()
            },
            timestamp: ts(engine.now_us()),
            signers,
        };
        let mut chains = Vec::with_capacity(n);
        for _ in 0..n {
            chains.push(Chain::open(MemoryChainStore::new(), &genesis).ok());
        }
        let genesis_head = chains.first().and_then(Option::as_ref).map(Chain::head);
        let mut equivocating = vec![false; n];
        for &e in equivocators {
            equivocating[e] = true;
            report
                .equivocator_signers
                .push(engine.nodes[e].identity.id().to_string());
        }
        let mut net = ChainNet {
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1),
            heartbeat_ms: u64::try_from(heartbeat.max(period).as_millis()).unwrap_or(u64::MAX),
            genesis,
            chains,
            stored: (0..n).map(|_| None).collect(),
            syncs: (0..n).map(|_| Sync::new()).collect(),
            authorities,
            authority_ids,
            signs_as,
            equivocating,
            alternates: HashMap::new(),
            pools: HashMap::new(),
            sync_timer: vec![None; n],
            vote_timer: vec![None; n],
            last_head: Vec::new(),
            last_justified: Vec::new(),
            last_finalized: Vec::new(),
            head_count: HashMap::new(),
            running: counted.iter().filter(|c| **c).count(),
            counted,
            healed_at_us: None,
            agreed_at_us: None,
            finalized_at: BTreeMap::new(),
            lags_ms: Vec::new(),
            sealed_ms: HashMap::new(),
            detected: HashSet::new(),
            vote_detected: HashSet::new(),
            block_evidence_signers: Default::default(),
            vote_evidence_signers: Default::default(),
            submitted: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ 0xc4a1),
            wakes: Vec::new(),
            report,
        };
        if let Some(head) = genesis_head {
            net.last_head = vec![head; n];
            net.last_justified = vec![head.hash; n];
            net.last_finalized = vec![head; n];
            net.head_count.insert(head.hash, net.running);
        }
        for k in 0..net.authorities.len() {
            let a = net.authorities[k];
            net.plan_seal(a, engine.now_us());
        }
        net
    }

    /// Wake-ups asked for since the last call.
    pub fn take_wakes(&mut self) -> Vec<(u64, Wake)> {
        std::mem::take(&mut self.wakes)
    }

    /// A registration reached authority `node` (the payload of a routed message).
    pub fn submit(&mut self, node: usize, payload: &[u8]) {
        let Ok(tx) = Transaction::from_bytes(payload) else {
            self.report.bad_messages += 1;
            return;
        };
        let Some(chain) = self.chains[node].as_ref() else {
            return;
        };
        // A refusal (a duplicate, a nonce used or too far ahead) is the
        // pool's business: the sender learns nothing either way.
        let _ = self
            .pools
            .entry(node)
            .or_insert_with(|| TxPool::new(MAX_POOL))
            .insert(tx, chain.state());
    }

    /// Someone sent a registration (counted whether or not it arrives).
    pub fn submitted(&mut self, sender: NodeId) {
        self.submitted.push(sender);
    }

    /// A wake-up is due.
    pub fn wake(&mut self, engine: &mut Engine, wake: Wake) {
        let now_us = engine.now_us();
        match wake {
            Wake::Seal { node, parent } => self.seal(engine, node, parent),
            Wake::Vote(node) => self.after(engine, node),
            Wake::Sync(node) => {
                if self.sync_timer[node].is_some_and(|t| t <= now_us) {
                    self.sync_timer[node] = None;
                }
                if let Some(chain) = self.chains[node].as_ref() {
                    self.syncs[node].handle_timeout(chain, ts(now_us));
                }
                self.after(engine, node);
            }
        }
    }

    fn plan_seal(&mut self, node: usize, now_us: u64) {
        let Some(chain) = self.chains[node].as_ref() else {
            return;
        };
        let id = engine_id(&self.authority_ids, &self.authorities, node);
        let Some(id) = id else { return };
        let Some(delay) = chain.sealing_delay(&id, &mut self.rng) else {
            return;
        };
        let head = chain.head();
        let base = head.timestamp.as_unix_millis();
        let mut at_ms = base.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        if !self
            .pools
            .get(&node)
            .is_some_and(|p| p.has_selectable(chain.state(), head.number + 1))
        {
            at_ms = at_ms.max(base.saturating_add(self.heartbeat_ms));
        }
        let at_us = at_ms.saturating_mul(1_000).max(now_us);
        self.wakes.push((
            at_us,
            Wake::Seal {
                node,
                parent: head.hash,
            },
        ));
    }

    fn seal(&mut self, engine: &mut Engine, node: usize, parent: BlockHash) {
        let now_us = engine.now_us();
        let Some(chain) = self.chains[node].as_mut() else {
            return;
        };
        if chain.head().hash != parent {
            return;
        }
        let number = chain.head().number + 1;
        let txs = self
            .pools
            .get_mut(&node)
            .map(|p| p.select(chain.state(), number, ts(now_us)))
            .unwrap_or_default();
        let identity = engine.nodes[self.signs_as[node]].identity.clone();
        let Ok(block) = chain.propose(&identity, ts(now_us), None, txs) else {
            // Not allowed yet (sealed too recently, or too early for an empty
            // block): the next head change plans again.
            return;
        };
        if chain
            .import(&block, Validation::Full { now: ts(now_us) })
            .is_err()
        {
            return;
        }
        self.report.blocks_sealed += 1;
        self.sealed_ms
            .insert(block.hash(), block.header().timestamp.as_unix_millis());
        if self.equivocating[node] {
            let later = Timestamp::from_unix_millis(ms(now_us) + 1);
            if let Ok(other) = chain.propose_on(&parent, &identity, later, None, Vec::new()) {
                self.alternates.insert(block.hash(), other.to_bytes());
                self.report.equivocations_sealed += 1;
            }
        }
        self.after(engine, node);
    }

    /// A sync message arrived over link `link`.
    pub fn receive(&mut self, engine: &mut Engine, link: usize, bytes: &[u8]) {
        let (from, to) = (engine.links[link].from, engine.links[link].to);
        let Ok(message) = SyncMessage::from_bytes(bytes) else {
            self.report.bad_messages += 1;
            return;
        };
        let Some(chain) = self.chains[to].as_mut() else {
            return;
        };
        // The memory store cannot fail; import errors are counted by Sync.
        let _ = self.syncs[to].handle_message(from, message, chain, ts(engine.now_us()));
        self.after(engine, to);
    }

    /// After node `node` changed: announce a new head, plan sealing, send
    /// what sync wants sent, measure finality.
    fn after(&mut self, engine: &mut Engine, node: usize) {
        let now_us = engine.now_us();
        let Some(chain) = self.chains[node].as_mut() else {
            return;
        };
        for (a, _) in chain.take_evidence() {
            self.detected.insert(node);
            self.block_evidence_signers.insert(a.header().signer);
        }
        for (a, _) in chain.take_vote_evidence() {
            self.vote_detected.insert(node);
            self.vote_evidence_signers.insert(a.signer);
        }
        if self.authorities.contains(&node) {
            // An authority votes for its head when it may (counted here
            // first, so its own finality below already includes it).
            // Equivocators vote too.
            let now = ts(now_us);
            let identity = &engine.nodes[self.signs_as[node]].identity;
            // The memory store cannot fail.
            let _ = self.syncs[node].cast_vote(identity, chain, now);
            if let Some(at) = chain.vote_wait(now) {
                let at_us = at.as_unix_millis().saturating_mul(1_000);
                if self.vote_timer[node] != Some(at_us) {
                    self.vote_timer[node] = Some(at_us);
                    self.wakes.push((at_us, Wake::Vote(node)));
                }
            }
        }
        let head = chain.head();
        let finalized = chain.finalized();
        let status = Sync::<usize>::status(chain).to_bytes();
        let old = self.last_head[node];
        let moved = head.hash != old.hash;
        if moved {
            // A reorganisation: the old head is no longer on the canonical chain.
            if chain.store().canonical(old.number).ok().flatten() != Some(old.hash) {
                self.report.reorgs += 1;
            }
        }
        let mut conflict = false;
        if finalized.hash != self.last_finalized[node].hash {
            // Every block that became final now, each from its own time:
            // one step may finalize many blocks (after a heal, say).
            let from = self.last_finalized[node].number.saturating_add(1);
            for number in from.min(finalized.number)..=finalized.number {
                let stamp = chain
                    .store()
                    .canonical(number)
                    .ok()
                    .flatten()
                    .and_then(|h| self.sealed_ms.get(&h).copied())
                    .unwrap_or(finalized.timestamp.as_unix_millis());
                self.lags_ms.push(ms(now_us).saturating_sub(stamp));
            }
            match self.finalized_at.get(&finalized.number) {
                Some(h) if *h != finalized.hash => conflict = true,
                Some(_) => {}
                None => {
                    self.finalized_at.insert(finalized.number, finalized.hash);
                }
            }
            self.last_finalized[node] = finalized;
        }
        if conflict {
            self.report.finalized_conflicts += 1;
        }
        // A new justified block is announced too: a neighbour on a heavier
        // branch below it fetches this one.
        let justified = chain.justified().hash;
        let announce = moved || justified != self.last_justified[node];
        self.last_justified[node] = justified;
        if moved {
            self.set_head(node, head, now_us);
        }
        if announce {
            for &l in engine.out_links(node).to_vec().iter() {
                if engine.link_up(l) {
                    engine.send_side(l, status.clone());
                }
            }
        }
        if moved && self.authorities.contains(&node) {
            self.plan_seal(node, now_us);
        }
        while let Some((peer, message)) = self.syncs[node].poll_transmit() {
            let Some(l) = engine.link_between(node, peer) else {
                continue;
            };
            let bytes = match message {
                SyncMessage::Blocks(blocks) if self.equivocating[node] && peer % 2 == 1 => {
                    // The equivocator shows half its neighbours its other blocks.
                    let blocks = blocks
                        .into_iter()
                        .map(|b| {
                            SealedBlock::from_bytes(&b)
                                .ok()
                                .and_then(|block| self.alternates.get(&block.hash()).cloned())
                                .unwrap_or(b)
                        })
                        .collect();
                    SyncMessage::Blocks(blocks).to_bytes()
                }
                other => {
                    let bytes = other.to_bytes();
                    if matches!(
                        other,
                        SyncMessage::Votes(_)
                            | SyncMessage::HaveVotes(_)
                            | SyncMessage::GetVotes(_)
                    ) {
                        self.report.vote_messages += 1;
                        self.report.vote_bytes += bytes.len() as u64;
                    }
                    bytes
                }
            };
            engine.send_side(l, bytes);
        }
        if let Some(t) = self.syncs[node].poll_timeout() {
            let at_us = t.as_unix_millis().saturating_mul(1_000).max(now_us);
            if self.sync_timer[node].is_none_or(|s| at_us < s) {
                self.sync_timer[node] = Some(at_us);
                self.wakes.push((at_us, Wake::Sync(node)));
            }
        }
    }

    fn set_head(&mut self, node: usize, head: Head, now_us: u64) {
        let old = self.last_head[node];
        self.last_head[node] = head;
        if !self.counted[node] {
            return;
        }
        self.uncount_head(&old.hash);
        *self.head_count.entry(head.hash).or_default() += 1;
        self.check_agreement(now_us);
    }

    /// One node fewer is on head `hash`.
    fn uncount_head(&mut self, hash: &BlockHash) {
        if let Some(c) = self.head_count.get_mut(hash) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.head_count.remove(hash);
            }
        }
    }

    fn check_agreement(&mut self, now_us: u64) {
        if self.healed_at_us.is_some()
            && self.agreed_at_us.is_none()
            && self.head_count.len() == 1
            && self.head_count.values().all(|c| *c == self.running)
        {
            self.agreed_at_us = Some(now_us);
        }
    }

    /// The links `links` went down.
    pub fn links_down(&mut self, engine: &Engine, links: &[usize]) {
        for &l in links {
            let (a, b) = (engine.links[l].from, engine.links[l].to);
            self.syncs[a].handle_peer_gone(&b);
            self.syncs[b].handle_peer_gone(&a);
        }
    }

    /// The links `links` came up: both ends announce their chains. `heal`
    /// marks the end of a partition (agreement is timed from here).
    pub fn links_up(&mut self, engine: &mut Engine, links: &[usize], heal: bool) {
        if heal {
            self.healed_at_us = Some(engine.now_us());
            self.agreed_at_us = None;
            self.check_agreement(engine.now_us());
        }
        for &l in links {
            for half in [l, engine.reverse(l)] {
                let from = engine.links[half].from;
                if let Some(chain) = self.chains[from].as_ref() {
                    engine.send_side(half, Sync::<usize>::status(chain).to_bytes());
                }
            }
        }
    }

    /// Node `node` crashed: its chain's store is kept.
    pub fn crash(&mut self, engine: &Engine, node: usize) {
        let Some(chain) = self.chains[node].take() else {
            return;
        };
        self.stored[node] = Some(chain.into_store());
        self.syncs[node] = Sync::new();
        for &l in engine.out_links(node) {
            let peer = engine.links[l].to;
            self.syncs[peer].handle_peer_gone(&node);
        }
        if !self.counted[node] {
            return;
        }
        let head = self.last_head[node];
        self.uncount_head(&head.hash);
        self.running = self.running.saturating_sub(1);
    }

    /// Node `node` restarts from its store.
    pub fn restart(&mut self, engine: &mut Engine, node: usize) {
        let Some(store) = self.stored[node].take() else {
            return;
        };
        let Ok(chain) = Chain::open(store, &self.genesis) else {
            return;
        };
        let head = chain.head();
        self.chains[node] = Some(chain);
        self.last_head[node] = head;
        if self.counted[node] {
            self.running += 1;
            *self.head_count.entry(head.hash).or_default() += 1;
        }
        let links: Vec<usize> = engine
            .out_links(node)
            .iter()
            .copied()
            .filter(|&l| engine.link_up(l))
            .collect();
        self.links_up(engine, &links, false);
        if self.authorities.contains(&node) {
            self.plan_seal(node, engine.now_us());
        }
    }

    /// Records heads and finality for the timeline.
    pub fn sample(&mut self) {
        let live = self.chains.iter().flatten();
        let mut row = [0, u64::MAX, 0, u64::MAX];
        for chain in live {
            let (h, f) = (chain.head().number, chain.finalized().number);
            row = [row[0].max(h), row[1].min(h), row[2].max(f), row[3].min(f)];
        }
        if row[1] == u64::MAX {
            row = [0; 4];
        }
        self.report.timeline.push(row);
    }

    /// The report, after checking every running node's canonical chain
    /// against every block finalized anywhere.
    pub fn finish(mut self, simulated_s: f64) -> ChainReport {
        let period = self.period_ms as f64;
        let mut lags: Vec<f64> = self.lags_ms.iter().map(|l| *l as f64 / period).collect();
        lags.sort_by(f64::total_cmp);
        let mut report = std::mem::take(&mut self.report);
        report.authorities = self.authorities.len() as u64;
        report.vote_bytes_per_node_s =
            report.vote_bytes as f64 / self.chains.len().max(1) as f64 / simulated_s.max(1e-9);
        report.period_s = period / 1_000.0;
        report.finality_lag_periods = [
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            lags.last().copied().unwrap_or(0.0),
        ];
        report.finalized_min = u64::MAX;
        for (node, chain) in self.chains.iter().enumerate() {
            let Some(chain) = chain else { continue };
            report.head_max = report.head_max.max(chain.head().number);
            let finalized = chain.finalized().number;
            if self.counted[node] {
                report.finalized_min = report.finalized_min.min(finalized);
            }
            for (&h, hash) in self.finalized_at.range(..=finalized) {
                if chain.store().canonical(h).ok().flatten() != Some(*hash) {
                    report.finalized_conflicts += 1;
                }
            }
        }
        if report.finalized_min == u64::MAX {
            report.finalized_min = 0;
        }
        report.equivocation_detected_nodes = self.detected.len() as u64;
        report.vote_evidence_nodes = self.vote_detected.len() as u64;
        let names = |ids: &std::collections::BTreeSet<NodeId>| -> Vec<String> {
            ids.iter().map(ToString::to_string).collect()
        };
        report.block_evidence_signers = names(&self.block_evidence_signers);
        report.vote_evidence_signers = names(&self.vote_evidence_signers);
        report.heal_agreement_periods = match (self.healed_at_us, self.agreed_at_us) {
            (Some(h), Some(a)) => Some(ms(a.saturating_sub(h)) as f64 / period),
            _ => None,
        };
        let first = self
            .authorities
            .first()
            .and_then(|&a| self.chains[a].as_ref());
        let unique: HashSet<&NodeId> = self.submitted.iter().collect();
        report.txs_submitted = unique.len() as u64;
        report.txs_registered = first.map_or(0, |chain| {
            unique
                .iter()
                .filter(|id| chain.state().identity(id).is_some())
                .count() as u64
        });
        report
    }
}

fn engine_id(ids: &[NodeId], authorities: &[usize], node: usize) -> Option<NodeId> {
    authorities
        .iter()
        .position(|&a| a == node)
        .and_then(|k| ids.get(k).copied())
}
