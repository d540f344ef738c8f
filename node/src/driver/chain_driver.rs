//! The chain in the daemon: opening it, sealing, voting, announcing and
//! answering the control API's chain status, on the driver's task.

use std::collections::VecDeque;
use std::path::Path;

use libp2p::PeerId;
use lifeline_consensus::genesis::GenesisFile;
use lifeline_consensus::sync::Sync;
use lifeline_consensus::{
    BlockHash, Chain, ChainError, KeyInUse, SealedBlock, Transaction, TxPool, Validation, Vote,
};
use lifeline_crypto::{Identity, NodeId};
use lifeline_routing::Address;
use lifeline_storage::{Database, RocksChainStore};
use tracing::{debug, error, info, warn};

use super::{MAX_POOL, Node, NodeError, requests, ts, wall_ms};
use crate::control::CommandError;
use crate::geocodes::GeocodeShapes;
use crate::mesh::Frame;
use crate::pb::control as api;

/// The chain and what drives it.
pub(super) struct ChainDriver {
    pub(super) chain: Chain<RocksChainStore>,
    pub(super) sync: Sync<PeerId>,
    pub(super) pool: TxPool,
    /// When to seal, on which parent.
    pub(super) seal: Option<(u64, BlockHash)>,
    /// The head on which a proposal was last refused.
    pub(super) refused_on: Option<BlockHash>,
    /// The head and the highest justified block last announced.
    pub(super) announced: (BlockHash, BlockHash),
    pub(super) heartbeat_ms: u64,
    /// A vote this authority puts in its next block.
    pub(super) vote: Option<Vote>,
    /// When this authority may cast its finality vote for the head.
    pub(super) vote_at: Option<u64>,
    /// Transactions this node signed that no block carries yet.
    pub(super) own_pending: VecDeque<requests::OwnTx>,
    /// Until when (ms) an authority only listens after it starts: it seals
    /// and votes only if no other node has used its key meanwhile.
    pub(super) listen_until: u64,
    /// Why this authority stopped sealing and voting: another node uses
    /// its key (docs/chain.md, Clones). It stays stopped until restarted.
    pub(super) halted: Option<String>,
    /// How many identities and revocations the router's set of registered
    /// identities was last built from.
    pub(super) registered_from: (usize, usize),
    /// Shapes of region codes, for alerts whose areas are given by code.
    pub(super) geocodes: GeocodeShapes,
}

/// How many block periods an authority listens after it starts before it
/// seals or votes: long enough to hear a block or vote of another node
/// running its key, if one is active.
const LISTEN_PERIODS: u32 = 3;

/// How long after a refused proposal the next try on the same head waits.
const RETRY_MS: u64 = 250;

/// Blocks of a sync answer imported between two turns of the driver's
/// other work: each is a signature check and a synced write (about 1 to
/// 5 ms), so an SOS waits for a few of them at most, not for 256.
const IMPORT_STEP: usize = 4;

pub(super) fn open_chain(
    path: &Path,
    db: &Database,
    me: &Identity,
    geocode_shapes: Option<&Path>,
) -> Result<ChainDriver, NodeError> {
    let geocodes = match geocode_shapes {
        Some(file) => {
            let shapes = GeocodeShapes::load(file).map_err(NodeError::GeocodeShapes)?;
            info!(codes = shapes.len(), file = %file.display(), "geocode shapes loaded");
            shapes
        }
        None => GeocodeShapes::default(),
    };
    let bad = |reason: String| NodeError::Genesis {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let genesis = GenesisFile::from_toml(&text)
        .and_then(|g| g.to_genesis())
        .map_err(|e| bad(e.to_string()))?;
    let heartbeat_ms = u64::try_from(genesis.config.heartbeat.as_millis()).unwrap_or(u64::MAX);
    let chain = Chain::open(db.chain_store(), &genesis).map_err(|e| match e {
        ChainError::Store(e) => NodeError::Chain(e.to_string()),
        other => NodeError::Chain(format!(
            "{other} (was this database made with another genesis file? use an empty --data-dir)"
        )),
    })?;
    let head = chain.head();
    info!(
        head = head.number,
        finalized = chain.finalized().number,
        "chain opened"
    );
    let mut sync = Sync::new();
    sync.set_import_step(IMPORT_STEP);
    sync.watch_key(*me.id(), ts(wall_ms()));
    let listen = genesis.config.period * LISTEN_PERIODS;
    let listen_until = wall_ms().saturating_add(u64::try_from(listen.as_millis()).unwrap_or(0));
    if chain.signer_state().is_signer(me.id()) {
        info!(
            "this node is an authority: it listens for {} s before it seals or votes, in case another node uses its key",
            listen.as_secs()
        );
    }
    Ok(ChainDriver {
        announced: (head.hash, chain.justified().hash),
        chain,
        sync,
        pool: TxPool::new(MAX_POOL),
        seal: None,
        heartbeat_ms,
        vote: None,
        vote_at: None,
        own_pending: VecDeque::new(),
        listen_until,
        halted: None,
        refused_on: None,
        registered_from: (usize::MAX, usize::MAX),
        geocodes,
    })
}

impl ChainDriver {
    /// Gives `router` the identities registered and not revoked on the
    /// head's branch (their SOS get a neighbour budget of their own), if
    /// they changed since the last time: the chain bounds how often.
    pub(super) fn share_registered<S: lifeline_routing::MessageStore>(
        &mut self,
        router: &mut lifeline_routing::Router<S>,
    ) {
        let state = self.chain.state();
        let counts = (state.identity_count(), state.revocation_count());
        if counts == self.registered_from {
            return;
        }
        self.registered_from = counts;
        router.set_registered(
            state
                .identities()
                .filter(|r| !state.is_revoked(&r.id))
                .map(|r| Address::from(&r.id)),
        );
    }

    /// After a step of importing a neighbour's blocks: writes wait for the
    /// disk again, and once the whole answer is in, one sync makes it
    /// durable, before the new head is announced (blocks from a neighbour
    /// go to the log unsynced meanwhile: a crash can lose only a tail of
    /// them, fetched again).
    pub(super) fn imported(&mut self) {
        self.chain.set_synced_writes(true);
        if !self.sync.importing()
            && let Err(e) = self.chain.flush()
        {
            error!("the chain store failed to write imported blocks: {e}");
        }
    }
}

impl Node {
    pub(super) fn pool(&mut self, tx: Transaction) {
        let Some(c) = &mut self.chain else { return };
        if !c.chain.signer_state().is_signer(self.keys.identity.id()) {
            return;
        }
        let hash = tx.hash();
        match c.pool.insert(tx, c.chain.state()) {
            Ok(()) => {
                debug!(%hash, "pooled a transaction");
                // A transaction waits a period, not a heartbeat.
                self.plan_seal();
            }
            Err(e) => debug!("a transaction was not pooled: {e}"),
        }
    }

    /// Announces a new head, plans sealing, and sends what sync wants sent.
    pub(super) fn after_chain(&mut self) {
        let Some(c) = &mut self.chain else { return };
        for (a, b) in c.chain.take_evidence() {
            warn!(
                signer = %a.header().signer,
                number = a.header().number,
                "an authority sealed two blocks at one height ({} and {})",
                a.hash(),
                b.hash()
            );
        }
        for (first, second) in c.chain.take_vote_evidence() {
            warn!(
                signer = %first.signer,
                "an authority broke the finality voting rule: it voted for {} -> {} and for {} -> {} (two votes for one height, or one link around another)",
                first.source.number,
                first.target.number,
                second.source.number,
                second.target.number,
            );
        }
        if c.halted.is_none()
            && let Some((peer, what)) = c.sync.key_in_use()
        {
            let seen = match what {
                KeyInUse::Block { number, hash } => format!("block {number} ({hash})"),
                KeyInUse::Vote { source, target } => {
                    format!("a finality vote from height {source} to {target}")
                }
            };
            let why = format!(
                "another node is using this authority's key: {peer} sent {seen}, which this node did not make. \
                 Two nodes acting with one key can make the chain finalize two branches, so this node \
                 no longer seals or votes. Stop every other node that runs this key (a copy of this \
                 data folder or of its key file), then restart this one; if this data folder was \
                 restored from a backup, keep it stopped until the node that ran the key since has \
                 been stopped for good."
            );
            error!("{why}");
            c.halted = Some(why);
            c.seal = None;
        }
        // An authority votes for its head when it may (docs/chain.md,
        // Finality); the vote is on disk before it is sent. Not while it
        // listens after starting, and never once another node used its key.
        let now = ts(self.now);
        if c.halted.is_none() && self.now >= c.listen_until {
            if let Err(e) = c.sync.cast_vote(&self.keys.identity, &mut c.chain, now) {
                error!("the chain store failed while casting our finality vote: {e}");
            }
            c.vote_at = c.chain.vote_wait(now).map(|t| t.as_unix_millis());
        } else if c.halted.is_none() {
            c.vote_at = Some(c.listen_until);
        } else {
            c.vote_at = None;
        }
        let head = c.chain.head();
        let mut moved = false;
        // A new justified block is announced too: a neighbour on a heavier
        // branch below it fetches this one.
        let announce = (head.hash, c.chain.justified().hash);
        // Not in the middle of an answer being imported (a few blocks at a
        // time): neighbours hear of the head it ends at.
        if announce != c.announced && !c.sync.importing() {
            c.announced = announce;
            moved = true;
        }
        let mut out: Vec<(PeerId, Vec<u8>)> = Vec::new();
        if moved {
            debug!(number = head.number, hash = %head.hash, "new head");
            let status = Sync::<PeerId>::status(&c.chain).to_bytes();
            for (peer, p) in &self.peers {
                if p.writer.is_some() {
                    out.push((*peer, status.clone()));
                }
            }
            self.router
                .set_authorities(c.chain.signer_state().signers().iter().map(Address::from));
            c.share_registered(&mut self.router);
        }
        while let Some((peer, message)) = c.sync.poll_transmit() {
            out.push((peer, message.to_bytes()));
        }
        for (peer, bytes) in out {
            self.send_frame(peer, Frame::Sync(bytes));
        }
        if moved {
            self.plan_seal();
        }
    }

    pub(super) fn plan_seal(&mut self) {
        let now = self.clock();
        let Some(c) = &mut self.chain else { return };
        c.seal = None;
        if c.halted.is_some() {
            return;
        }
        let id = *self.keys.identity.id();
        let Some(delay) = c.chain.sealing_delay(&id, &mut self.rng) else {
            return;
        };
        let head = c.chain.head();
        let base = head.timestamp.as_unix_millis();
        let mut at = base.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        if !c.pool.has_selectable(c.chain.state(), head.number + 1) && c.vote.is_none() {
            at = at.max(base.saturating_add(c.heartbeat_ms));
        }
        // A proposal on this head failed already: what made it fail (sealed
        // too recently, nothing to carry yet) does not pass at once, and
        // trying again at once would spin.
        if c.refused_on == Some(head.hash) {
            at = at.max(now.saturating_add(RETRY_MS));
        }
        // Not while it listens after starting (the head may move meanwhile:
        // then this is planned again).
        at = at.max(c.listen_until);
        c.seal = Some((at, head.hash));
    }

    pub(super) fn seal(&mut self, parent: BlockHash) {
        let now = self.clock();
        let Some(c) = &mut self.chain else { return };
        if c.chain.head().hash != parent {
            return self.plan_seal();
        }
        // What the block carries stays pooled: a reorganisation may drop it.
        let number = c.chain.head().number + 1;
        let txs = c.pool.select(c.chain.state(), number, ts(now));
        let block = match c.chain.propose(&self.keys.identity, ts(now), c.vote, txs) {
            Ok(b) => b,
            Err(e) => {
                debug!("not sealing now: {e}");
                c.refused_on = Some(parent);
                return self.plan_seal();
            }
        };
        match c.chain.import(&block, Validation::Full { now: ts(now) }) {
            Ok(_) => {
                info!(
                    number = block.header().number,
                    txs = block.transactions().len(),
                    "sealed a block"
                );
                if let Some(v) = c.vote
                    && block.header().vote == Some(v)
                {
                    c.vote = None;
                }
            }
            Err(e) => {
                error!("a block sealed here did not import: {e}");
                c.refused_on = Some(parent);
            }
        }
        self.plan_seal();
    }

    /// Who `id` is by the chain, for a person deciding whether to trust what
    /// it says ("help is coming"): its registered name, whether it is an
    /// authority, its certified roles, a revoked key; or that the chain
    /// knows nothing of it.
    pub(super) fn who_is(&self, id: &NodeId, now: u64) -> String {
        let Some(c) = &self.chain else {
            return id.to_string();
        };
        let state = c.chain.state();
        if state.is_revoked(id) {
            return format!("{id} (its key is REVOKED on the chain: do not trust it)");
        }
        let name = state.identity(id).map(|r| r.display_name.clone());
        let mut what: Vec<String> = Vec::new();
        if state.is_authority(id) {
            what.push("authority".into());
        }
        what.extend(
            state
                .roles_of(id, ts(now))
                .iter()
                .map(|g| format!("certified {}", g.role)),
        );
        match (name, what.is_empty()) {
            (None, true) => {
                format!("{id} (not on the chain: no registered name, no certified role)")
            }
            (Some(name), true) => format!("{name} ({id}; registered, no certified role)"),
            (Some(name), false) => format!("{name} ({id}; {})", what.join(", ")),
            (None, false) => format!("{id} ({})", what.join(", ")),
        }
    }

    pub(super) fn chain_status(&self) -> api::ChainStatusReply {
        let Some(c) = &self.chain else {
            return api::ChainStatusReply::default();
        };
        let head = c.chain.head();
        let finalized = c.chain.finalized();
        let signers = c.chain.signer_state().signers();
        api::ChainStatusReply {
            enabled: true,
            head_number: head.number,
            head_hash: head.hash.to_string(),
            finalized_number: finalized.number,
            finalized_hash: finalized.hash.to_string(),
            authorities: signers.iter().map(ToString::to_string).collect(),
            is_authority: signers.contains(self.keys.identity.id()),
            genesis_hash: c.chain.genesis_hash().to_string(),
            identities: c.chain.state().identity_count() as u64,
            head_time_ms: head.timestamp.as_unix_millis(),
            justified_number: c.chain.justified().number,
            halted: c.halted.clone().unwrap_or_default(),
        }
    }

    pub(super) fn block(&self, number: u64) -> Result<api::BlockReply, CommandError> {
        let c = self.chain.as_ref().ok_or(CommandError::NoChain)?;
        let bytes = c
            .chain
            .canonical_block(number)
            .map_err(|e| CommandError::Internal(e.to_string()))?;
        let Some(bytes) = bytes else {
            return Ok(api::BlockReply::default());
        };
        let block = SealedBlock::from_bytes(&bytes)
            .map_err(|e| CommandError::Internal(format!("a stored block is unreadable: {e}")))?;
        let h = block.header();
        Ok(api::BlockReply {
            found: true,
            number: h.number,
            hash: block.hash().to_string(),
            signer: h.signer.to_string(),
            timestamp_ms: h.timestamp.as_unix_millis(),
            transactions: u32::try_from(block.transactions().len()).unwrap_or(u32::MAX),
            encoded: bytes,
            vote_target: h.vote.map(|v| v.target.to_string()).unwrap_or_default(),
            vote_authorize: h.vote.is_some_and(|v| v.authorize),
            transaction_hashes: block
                .transactions()
                .iter()
                .map(|t| t.hash().to_string())
                .collect(),
            finalized: h.number <= c.chain.finalized().number,
        })
    }
}
