//! The chain: genesis, importing blocks with full validation, and reopening
//! from storage.
//!
//! Sans-IO: time comes in as an argument, storage through [`ChainStore`].

use std::time::Duration;

use lifeline_crypto::{NodeId, Timestamp};
use prost::Message;
use thiserror::Error;

use std::collections::{BTreeSet, HashMap, VecDeque};

use lifeline_crypto::Identity;

use crate::block::{
    BlockError, BlockHash, Header, HeaderError, MAX_SIGNERS, SealedBlock, SealedHeader, Vote,
};
use crate::signers::{SignerChange, SignerError, SignerState};
use crate::state::{BlockTxError, ChainState, SnapshotPoint};
use crate::store::{ChainBatch, ChainStore, StoredHead};
use crate::tx::{Transaction, transactions_root};
use crate::wire::pb;

/// Chain parameters, fixed at genesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainConfig {
    /// Blocks between epoch checkpoints (which reset votes and carry the signer list).
    pub epoch: u64,
    /// Least time between a block and its parent.
    pub period: Duration,
    /// Longest time without a block: an empty "heartbeat" block keeps finality moving.
    pub heartbeat: Duration,
    /// How far in the future a block's timestamp may be.
    pub max_clock_skew: Duration,
    /// Blocks between snapshots of chain state (a restart replays at most this many).
    pub snapshot_interval: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            epoch: 30_000,
            period: Duration::from_secs(5),
            heartbeat: Duration::from_secs(60),
            max_clock_skew: Duration::from_secs(15),
            snapshot_interval: 1024,
        }
    }
}

/// What a chain starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    /// Parameters.
    pub config: ChainConfig,
    /// The genesis time.
    pub timestamp: Timestamp,
    /// The first authorities.
    pub signers: Vec<NodeId>,
}

impl Genesis {
    /// The genesis block's hash: it commits to the parameters, time and signers.
    pub fn hash(&self) -> BlockHash {
        let mut signers: Vec<&NodeId> = self.signers.iter().collect();
        signers.sort();
        let header = pb::BlockHeader {
            parent_hash: vec![0; 32],
            number: 0,
            timestamp_ms: self.timestamp.as_unix_millis(),
            signer: Vec::new(),
            weight: 0,
            vote: None,
            checkpoint: Some(pb::Checkpoint {
                signers: signers.iter().map(|s| s.as_bytes().to_vec()).collect(),
            }),
            transactions_root: Vec::new(),
            state_root: Vec::new(),
        };
        let mut hasher = blake3::Hasher::new_derive_key("lifeline 2026-11 genesis v1");
        hasher.update(&header.encode_to_vec());
        for value in [
            self.config.epoch,
            duration_ms(self.config.period),
            duration_ms(self.config.heartbeat),
            duration_ms(self.config.max_clock_skew),
        ] {
            hasher.update(&value.to_le_bytes());
        }
        BlockHash(*hasher.finalize().as_bytes())
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How much of a block to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Everything, with `now` as the local time.
    Full {
        /// The local time.
        now: Timestamp,
    },
    /// Everything but timestamps, the block period and in-turn weight: for
    /// vote-replay conformance files, which do not describe them.
    IgnoreTiming,
}

/// Why a block was not imported. Nothing was changed.
#[derive(Debug, Error, PartialEq)]
pub enum ImportError {
    /// The header is malformed or its signature is bad.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The block is malformed.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The parent is not known (yet): sync should fetch it first.
    #[error("block {number} builds on {parent:?}, which this node does not have")]
    UnknownParent {
        /// The block's number.
        number: u64,
        /// Its parent hash.
        parent: BlockHash,
    },
    /// The block is at or below the finalized height, on another branch.
    #[error("block {number} conflicts with finalized block {finalized}")]
    BelowFinality {
        /// The block's number.
        number: u64,
        /// The finalized height.
        finalized: u64,
    },
    /// The number is not the parent's plus one.
    #[error("block number {got} does not follow its parent's {parent}")]
    BadNumber {
        /// The block's number.
        got: u64,
        /// The parent's number.
        parent: u64,
    },
    /// The signer may not seal this block.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// A vote where none may be.
    #[error("invalid vote: {0}")]
    InvalidVote(&'static str),
    /// The checkpoint signer list is missing, misplaced or wrong.
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(&'static str),
    /// The timestamp is too close to the parent's.
    #[error("block timestamp is less than one period after its parent's")]
    TooEarly,
    /// An empty block before the heartbeat interval.
    #[error("an empty block may only come a heartbeat interval after its parent")]
    EmptyBlock,
    /// The timestamp is further in the future than clocks may drift.
    #[error("block timestamp is {0:?} in the future")]
    FromTheFuture(Duration),
    /// The weight does not match whether the signer was in turn.
    #[error("block weight {got} is wrong: expected {expected}")]
    WrongWeight {
        /// The block's weight.
        got: u32,
        /// The weight it should have.
        expected: u32,
    },
    /// A transaction does not apply.
    #[error(transparent)]
    Transaction(#[from] BlockTxError),
    /// The header's state root is not the state the block leads to.
    #[error("the header's state root does not match the state after the block")]
    StateRoot,
}

/// Why a chain could not be opened or a block stored.
#[derive(Debug, Error)]
pub enum ChainError<E: std::error::Error + 'static> {
    /// The store failed.
    #[error("chain storage: {0}")]
    Store(#[source] E),
    /// The store holds another chain.
    #[error("the database holds a chain with another genesis ({found}); expected {expected}")]
    WrongGenesis {
        /// The genesis in the store.
        found: BlockHash,
        /// The genesis asked for.
        expected: BlockHash,
    },
    /// The store's contents are inconsistent.
    #[error("the chain database is inconsistent: {0}")]
    Corrupt(String),
    /// The genesis lists no signers or too many, or has an epoch of 0.
    #[error("genesis must list 1 to {MAX_SIGNERS} signers and have an epoch of at least 1 block")]
    BadGenesis,
    /// A block was refused.
    #[error(transparent)]
    Import(#[from] ImportError),
}

/// A block in the chain as the rest of the node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Height.
    pub number: u64,
    /// Hash.
    pub hash: BlockHash,
    /// Timestamp.
    pub timestamp: Timestamp,
    /// Total weight of the chain up to and including it.
    pub total_weight: u64,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// The imported block (or the known block, if it was known already).
    pub block: Head,
    /// Whether the block was new.
    pub new: bool,
    /// The head after the import.
    pub head: Head,
    /// Whether the head moved to another branch (a reorganisation).
    pub reorg: bool,
    /// The finalized block after the import.
    pub finalized: Head,
    /// A change to the signer set, if the block's vote passed.
    pub signer_change: Option<SignerChange>,
    /// Evidence, if the block's signer sealed another block at this height.
    pub equivocation: Option<(SealedHeader, SealedHeader)>,
}

/// One block of the tree of blocks that are not final yet (and the finalized block).
#[derive(Clone)]
struct Node {
    head: Head,
    parent: BlockHash,
    signer: Option<NodeId>,
    /// The most recent block number at or before this one where its signer was
    /// in turn (EIP-3436's third tie-break); `None` for the genesis/snapshot root.
    last_in_turn: Option<u64>,
    /// The signer set entitled to seal this block (its parent's).
    entitled: usize,
    block: Option<SealedBlock>,
    state: ChainState,
}

/// How many equivocation proofs are kept for the node to publish.
const MAX_EVIDENCE: usize = 64;

/// The chain of one node: a tree of not-yet-final blocks above the finalized
/// block, the head chosen by fork choice, and the store.
pub struct Chain<S: ChainStore> {
    store: S,
    config: ChainConfig,
    genesis_hash: BlockHash,
    /// The finalized block: the root of the tree.
    root: Node,
    /// The blocks above the finalized block, on every branch.
    tree: HashMap<BlockHash, Node>,
    head: BlockHash,
    evidence: VecDeque<(SealedHeader, SealedHeader)>,
}

impl<S: ChainStore> Chain<S> {
    /// Opens the chain in `store`, creating it from `genesis` if the store is
    /// empty, or else restoring state from the latest snapshot and replaying
    /// the canonical blocks after it.
    pub fn open(mut store: S, genesis: &Genesis) -> Result<Self, ChainError<S::Error>> {
        if genesis.signers.is_empty()
            || genesis.signers.len() > MAX_SIGNERS
            || genesis.config.epoch == 0
        {
            return Err(ChainError::BadGenesis);
        }
        let genesis_hash = genesis.hash();
        match store.genesis().map_err(ChainError::Store)? {
            None => {
                let state = ChainState::genesis(
                    SignerState::genesis(genesis.signers.iter().copied()),
                    &genesis_hash,
                );
                let point = SnapshotPoint {
                    number: 0,
                    hash: genesis_hash,
                    timestamp: genesis.timestamp,
                    total_weight: 0,
                };
                let stored = StoredHead {
                    number: 0,
                    hash: genesis_hash,
                };
                store
                    .commit(ChainBatch {
                        genesis: Some(genesis_hash),
                        canonical: vec![(0, genesis_hash)],
                        head: Some(stored),
                        finalized: Some(stored),
                        snapshot: Some(state.to_snapshot(&point)),
                        ..ChainBatch::default()
                    })
                    .map_err(ChainError::Store)?;
                Ok(Self::with_root(
                    store,
                    genesis.config,
                    genesis_hash,
                    point,
                    state,
                ))
            }
            Some(found) if found != genesis_hash => Err(ChainError::WrongGenesis {
                found,
                expected: genesis_hash,
            }),
            Some(_) => Self::restore(store, genesis.config, genesis_hash),
        }
    }

    fn with_root(
        store: S,
        config: ChainConfig,
        genesis_hash: BlockHash,
        point: SnapshotPoint,
        state: ChainState,
    ) -> Self {
        let root = Node {
            head: Head {
                number: point.number,
                hash: point.hash,
                timestamp: point.timestamp,
                total_weight: point.total_weight,
            },
            parent: BlockHash::default(),
            signer: None,
            last_in_turn: None,
            entitled: state.signers().signers().len(),
            block: None,
            state,
        };
        Self {
            store,
            config,
            genesis_hash,
            root,
            tree: HashMap::new(),
            head: point.hash,
            evidence: VecDeque::new(),
        }
    }

    fn restore(
        store: S,
        config: ChainConfig,
        genesis_hash: BlockHash,
    ) -> Result<Self, ChainError<S::Error>> {
        let corrupt = |what: String| ChainError::Corrupt(what);
        let stored_head = store
            .head()
            .map_err(ChainError::Store)?
            .ok_or_else(|| corrupt("no head".into()))?;
        let snapshot = store
            .latest_snapshot()
            .map_err(ChainError::Store)?
            .ok_or_else(|| corrupt("no snapshot".into()))?;
        let (state, point) =
            ChainState::from_snapshot(&snapshot).map_err(|e| corrupt(e.to_string()))?;
        if point.number > stored_head.number {
            return Err(corrupt("the snapshot is above the head".into()));
        }
        let mut chain = Self::with_root(store, config, genesis_hash, point, state);
        for number in point.number + 1..=stored_head.number {
            let hash = chain
                .store
                .canonical(number)
                .map_err(ChainError::Store)?
                .ok_or_else(|| corrupt(format!("no canonical block {number}")))?;
            let bytes = chain
                .store
                .block(&hash)
                .map_err(ChainError::Store)?
                .ok_or_else(|| corrupt(format!("block {number} is missing")))?;
            let block = SealedBlock::from_bytes(&bytes)
                .map_err(|e| corrupt(format!("stored block {number}: {e}")))?;
            // Already validated when first imported; its timing is history now.
            let node = chain
                .validate(&block, Validation::IgnoreTiming)
                .map_err(|e| corrupt(format!("stored block {number} no longer validates: {e}")))?
                .0;
            chain.tree.insert(hash, node);
            chain.head = hash;
            if let Some(f) = chain.finality_candidate() {
                chain.finalize(f);
            }
        }
        if chain.head().hash != stored_head.hash {
            return Err(corrupt(
                "the canonical index does not reach the head".into(),
            ));
        }
        Ok(chain)
    }

    /// The head: the tip of the branch fork choice prefers.
    pub fn head(&self) -> Head {
        self.head_node().head
    }

    /// The finalized block: the chain never reorganises below it.
    pub fn finalized(&self) -> Head {
        self.root.head
    }

    /// A block of the tree (the finalized block or one above it).
    fn get(&self, hash: &BlockHash) -> Option<&Node> {
        if *hash == self.root.head.hash {
            Some(&self.root)
        } else {
            self.tree.get(hash)
        }
    }

    /// The parameters.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The genesis hash.
    pub fn genesis_hash(&self) -> BlockHash {
        self.genesis_hash
    }

    /// The state at the head.
    pub fn state(&self) -> &ChainState {
        &self.head_node().state
    }

    fn head_node(&self) -> &Node {
        self.get(&self.head).unwrap_or(&self.root)
    }

    /// The signer state at the head.
    pub fn signer_state(&self) -> &SignerState {
        self.state().signers()
    }

    /// Gives the store back (to reopen the chain from it).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Equivocation proofs seen so far (and not yet taken), oldest first.
    pub fn take_evidence(&mut self) -> Vec<(SealedHeader, SealedHeader)> {
        self.evidence.drain(..).collect()
    }

    /// Whether the chain has this block (in the tree, or as a canonical block).
    pub fn contains(&self, hash: &BlockHash) -> Result<bool, ChainError<S::Error>> {
        if self.get(hash).is_some() {
            return Ok(true);
        }
        Ok(self.store.block(hash).map_err(ChainError::Store)?.is_some())
    }

    /// The canonical block at `number` (the head's branch), encoded.
    pub fn canonical_block(&self, number: u64) -> Result<Option<Vec<u8>>, ChainError<S::Error>> {
        if number > self.head().number {
            return Ok(None);
        }
        // Above the finalized block, walk the head's branch (the store's index
        // agrees with it; this avoids a read).
        let Some(hash) = self.store.canonical(number).map_err(ChainError::Store)? else {
            return Ok(None);
        };
        self.store.block(&hash).map_err(ChainError::Store)
    }

    /// When `signer` should seal the next block, counted from the head's
    /// time: one period for the in-turn signer; for others a period plus a
    /// random wait of up to half a second per signer past half the set (as
    /// Clique), so the in-turn block usually arrives first and competing
    /// out-of-turn blocks rarely collide. `None` if `signer` may not seal the
    /// next block (not a signer, or sealed too recently).
    pub fn sealing_delay<R: rand_core::Rng + ?Sized>(
        &self,
        signer: &NodeId,
        rng: &mut R,
    ) -> Option<Duration> {
        let signers = self.signer_state();
        let number = self.head().number.saturating_add(1);
        signers.check_signer(number, signer).ok()?;
        if signers.in_turn(number) == Some(*signer) {
            return Some(self.config.period);
        }
        let slots = u64::try_from(signers.signers().len() / 2 + 1).unwrap_or(1);
        let wiggle_ms = slots.saturating_mul(500);
        Some(self.config.period + Duration::from_millis(rng.next_u64() % wiggle_ms.max(1)))
    }

    /// Builds and seals the next block on the head, by `signer`, at
    /// `timestamp`, with `vote` (ignored on checkpoint blocks) and `txs`.
    /// Validates it as an import would.
    pub fn propose(
        &self,
        signer: &Identity,
        timestamp: Timestamp,
        vote: Option<Vote>,
        txs: Vec<Transaction>,
    ) -> Result<SealedBlock, ImportError> {
        self.propose_on(&self.head, signer, timestamp, vote, txs)
    }

    /// Like [`Self::propose`], on a block other than the head (any block of
    /// the tree of not-yet-final blocks).
    pub fn propose_on(
        &self,
        parent: &BlockHash,
        signer: &Identity,
        timestamp: Timestamp,
        vote: Option<Vote>,
        txs: Vec<Transaction>,
    ) -> Result<SealedBlock, ImportError> {
        let finalized = self.finalized().number;
        let parent = self.get(parent).ok_or(ImportError::UnknownParent {
            number: finalized.saturating_add(1),
            parent: *parent,
        })?;
        let number = parent.head.number + 1;
        let is_checkpoint = number.is_multiple_of(self.config.epoch);
        let signers = parent.state.signers();
        let mut next = parent.state.clone();
        next.signers_mut().apply(
            number,
            signer.id(),
            vote.as_ref().filter(|_| !is_checkpoint),
            is_checkpoint,
        )?;
        // A checkpoint lists the signers as of its parent (votes cannot ride in it).
        let checkpoint = is_checkpoint.then(|| signers.signers().iter().copied().collect());
        let mut header = Header {
            parent_hash: parent.head.hash,
            number,
            timestamp,
            signer: *signer.id(),
            weight: if signers.in_turn(number) == Some(*signer.id()) {
                2
            } else {
                1
            },
            vote: vote.filter(|_| !is_checkpoint),
            checkpoint,
            transactions_root: transactions_root(&txs),
            state_root: [0; 32],
        };
        next.apply_block(&header, &txs)?;
        header.state_root = next.root();
        let sealed = header.seal(signer)?;
        Ok(SealedBlock::new(sealed, txs)?)
    }

    /// Checks `block` against its parent in the tree and returns the node it
    /// would become. Changes nothing.
    fn validate(
        &self,
        block: &SealedBlock,
        validation: Validation,
    ) -> Result<(Node, Option<SignerChange>), ImportError> {
        let h = block.header();
        let parent = match self.get(&h.parent_hash) {
            Some(parent) => parent,
            None => {
                let finalized = self.finalized().number;
                return Err(if h.number <= finalized {
                    ImportError::BelowFinality {
                        number: h.number,
                        finalized,
                    }
                } else {
                    ImportError::UnknownParent {
                        number: h.number,
                        parent: h.parent_hash,
                    }
                });
            }
        };
        if h.number != parent.head.number.saturating_add(1) {
            return Err(ImportError::BadNumber {
                got: h.number,
                parent: parent.head.number,
            });
        }
        let signers = parent.state.signers();
        let is_checkpoint = h.number.is_multiple_of(self.config.epoch);
        if is_checkpoint {
            if h.vote.is_some() {
                return Err(ImportError::InvalidVote("checkpoint blocks carry no vote"));
            }
            let listed = h.checkpoint.as_ref().ok_or(ImportError::InvalidCheckpoint(
                "a checkpoint block must list the signers",
            ))?;
            if !listed.iter().eq(signers.signers().iter()) {
                return Err(ImportError::InvalidCheckpoint(
                    "the listed signers are not the current signers in order",
                ));
            }
        } else if h.checkpoint.is_some() {
            return Err(ImportError::InvalidCheckpoint(
                "only epoch checkpoint blocks list signers",
            ));
        }
        if let Validation::Full { now } = validation {
            if h.timestamp < parent.head.timestamp.saturating_add(self.config.period) {
                return Err(ImportError::TooEarly);
            }
            if block.transactions().is_empty()
                && h.vote.is_none()
                && h.timestamp < parent.head.timestamp.saturating_add(self.config.heartbeat)
            {
                return Err(ImportError::EmptyBlock);
            }
            let ahead = h.timestamp.saturating_duration_since(now);
            if ahead > self.config.max_clock_skew {
                return Err(ImportError::FromTheFuture(ahead));
            }
            let expected = if signers.in_turn(h.number) == Some(h.signer) {
                2
            } else {
                1
            };
            if h.weight != expected {
                return Err(ImportError::WrongWeight {
                    got: h.weight,
                    expected,
                });
            }
        } else if h.weight == 0 || h.weight > 2 {
            return Err(ImportError::WrongWeight {
                got: h.weight,
                expected: 1,
            });
        }
        let last_in_turn = last_in_turn_slot(signers, &h.signer, h.number);
        let entitled = signers.signers().len();
        let mut state = parent.state.clone();
        let change =
            state
                .signers_mut()
                .apply(h.number, &h.signer, h.vote.as_ref(), is_checkpoint)?;
        state.apply_block(h, block.transactions())?;
        if state.root() != h.state_root {
            return Err(ImportError::StateRoot);
        }
        let node = Node {
            head: Head {
                number: h.number,
                hash: block.hash(),
                timestamp: h.timestamp,
                total_weight: parent.head.total_weight.saturating_add(u64::from(h.weight)),
            },
            parent: h.parent_hash,
            signer: Some(h.signer),
            last_in_turn,
            entitled,
            block: Some(block.clone()),
            state,
        };
        Ok((node, change))
    }

    /// Validates `block` and adds it to the chain. If fork choice prefers it,
    /// it becomes the head; finality advances when it can. Everything that
    /// changes is committed to the store in one atomic batch before this
    /// returns. A block the chain already has is reported with `new: false`.
    pub fn import(
        &mut self,
        block: &SealedBlock,
        validation: Validation,
    ) -> Result<Imported, ChainError<S::Error>> {
        let hash = block.hash();
        if let Some(known) = self.get(&hash) {
            return Ok(self.outcome(known.head, false, false, None, None));
        }
        let (node, signer_change) = self.validate(block, validation)?;
        let equivocation = self.find_equivocation(block.sealed_header());
        let old_head = self.head;
        let old_finalized = self.finalized().number;
        let becomes_head = prefer(&node, self.head_node());
        let block_head = node.head;

        // Work out everything in memory first, commit, and only then change
        // what the node sees: a failed commit leaves the chain as it was.
        let mut batch = ChainBatch {
            blocks: vec![(hash, block.to_bytes())],
            ..ChainBatch::default()
        };
        self.tree.insert(hash, node);
        let mut reorg = false;
        let mut finality = None;
        if becomes_head {
            reorg = !self.descends_from(&hash, &old_head);
            // The canonical index follows the new head's branch back to where
            // it meets the old one.
            let mut entries = Vec::new();
            let mut cursor = hash;
            while let Some(n) = self.get(&cursor) {
                let on_index = self
                    .store
                    .canonical(n.head.number)
                    .map_err(ChainError::Store)?
                    == Some(cursor);
                if on_index {
                    break;
                }
                entries.push((n.head.number, cursor));
                if n.block.is_none() {
                    break;
                }
                cursor = n.parent;
            }
            batch.canonical = entries;
            batch.truncate_canonical_above = Some(block_head.number);
            batch.head = Some(StoredHead {
                number: block_head.number,
                hash,
            });
            self.head = hash;
            finality = self.finality_candidate();
            self.head = old_head;
        }
        if let Some(f) = finality.and_then(|f| self.get(&f)) {
            batch.finalized = Some(StoredHead {
                number: f.head.number,
                hash: f.head.hash,
            });
            let interval = self.config.snapshot_interval.max(1);
            if f.head.number / interval > old_finalized / interval {
                batch.snapshot = Some(f.state.to_snapshot(&SnapshotPoint {
                    number: f.head.number,
                    hash: f.head.hash,
                    timestamp: f.head.timestamp,
                    total_weight: f.head.total_weight,
                }));
            }
        }
        if let Err(e) = self.store.commit(batch) {
            // Nothing was stored: forget the block again.
            self.tree.remove(&hash);
            return Err(ChainError::Store(e));
        }
        if becomes_head {
            self.head = hash;
        }
        if let Some(f) = finality {
            self.finalize(f);
        }
        if let Some(proof) = &equivocation {
            if self.evidence.len() >= MAX_EVIDENCE {
                self.evidence.pop_front();
            }
            self.evidence.push_back(proof.clone());
        }
        Ok(self.outcome(block_head, true, reorg, signer_change, equivocation))
    }

    fn outcome(
        &self,
        block: Head,
        new: bool,
        reorg: bool,
        signer_change: Option<SignerChange>,
        equivocation: Option<(SealedHeader, SealedHeader)>,
    ) -> Imported {
        Imported {
            block,
            new,
            head: self.head(),
            reorg,
            finalized: self.finalized(),
            signer_change,
            equivocation,
        }
    }

    /// Another block by the same signer at the same height, if the tree has one.
    fn find_equivocation(&self, header: &SealedHeader) -> Option<(SealedHeader, SealedHeader)> {
        let h = header.header();
        self.tree
            .values()
            .filter_map(|n| n.block.as_ref())
            .find(|b| {
                b.header().signer == h.signer
                    && b.header().number == h.number
                    && b.hash() != header.hash()
            })
            .map(|other| (other.sealed_header().clone(), header.clone()))
    }

    fn descends_from(&self, hash: &BlockHash, ancestor: &BlockHash) -> bool {
        let mut cursor = *hash;
        loop {
            if cursor == *ancestor {
                return true;
            }
            match self.get(&cursor) {
                Some(n) if n.block.is_some() => cursor = n.parent,
                _ => return false,
            }
        }
    }

    /// The block that would be final given the head: the highest block on
    /// the head's branch that signers making up more than two thirds of the
    /// set entitled to seal it have sealed, it or its descendants. `None` if
    /// that is still the finalized block.
    fn finality_candidate(&self) -> Option<BlockHash> {
        let mut sealers = BTreeSet::new();
        let mut cursor = self.head;
        while let Some(n) = self.tree.get(&cursor) {
            if let Some(signer) = n.signer {
                sealers.insert(signer);
            }
            if sealers.len() * 3 > n.entitled * 2 {
                return Some(cursor);
            }
            cursor = n.parent;
        }
        None
    }

    /// Makes `f` the finalized block: it becomes the root, and every block
    /// that does not descend from it is dropped.
    fn finalize(&mut self, f: BlockHash) {
        let Some(mut new_root) = self.tree.remove(&f) else {
            return;
        };
        // Its own block and parent are history now.
        new_root.block = None;
        self.root = new_root;
        let keep: Vec<BlockHash> = self
            .tree
            .keys()
            .copied()
            .filter(|h| self.descends_from(h, &f))
            .collect();
        self.tree.retain(|h, _| keep.contains(h));
    }
}

/// The most recent block number `<= number` at which `signer` was in turn,
/// for the signer list `signers` (EIP-3436).
fn last_in_turn_slot(signers: &SignerState, signer: &NodeId, number: u64) -> Option<u64> {
    let n = u64::try_from(signers.signers().len())
        .ok()
        .filter(|n| *n > 0)?;
    let index = u64::try_from(signers.signers().iter().position(|s| s == signer)?).ok()?;
    let offset = (number % n + n - index) % n;
    number.checked_sub(offset)
}

/// EIP-3436 fork choice: whether `a` is preferred to `b`.
fn prefer(a: &Node, b: &Node) -> bool {
    if a.head.total_weight != b.head.total_weight {
        return a.head.total_weight > b.head.total_weight;
    }
    if a.head.number != b.head.number {
        return a.head.number < b.head.number;
    }
    if a.last_in_turn != b.last_in_turn {
        // Least recent in-turn slot wins; "never in turn" counts as least recent.
        return match (a.last_in_turn, b.last_in_turn) {
            (None, _) => true,
            (_, None) => false,
            (Some(x), Some(y)) => x < y,
        };
    }
    a.head.hash < b.head.hash
}
