//! The chain: genesis, importing blocks with full validation, and reopening
//! from storage.
//!
//! Sans-IO: time comes in as an argument, storage through [`ChainStore`].

use std::time::Duration;

use lifeline_crypto::{NodeId, Timestamp};
use prost::Message;
use thiserror::Error;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use lifeline_crypto::Identity;

use crate::alert::DEFAULT_ALERT_LIFETIME;
use crate::block::{
    BlockError, BlockHash, Header, HeaderError, MAX_SIGNERS, SealedBlock, SealedHeader, Vote,
};
use crate::finality::{BlockRef, FinalityVote, VoteError, VoteRecord};
use crate::signers::{SignerChange, SignerError, SignerState};
use crate::state::{BlockTxError, ChainState, RegistrationLimits, SnapshotPoint};
use crate::store::{ChainBatch, ChainStore, StoredHead};
use crate::tx::{Transaction, transactions_root};
use crate::wire::pb;

mod tree;
use tree::{Node, Tree};

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
    /// How fast new identities may join (a consensus rule: the genesis
    /// hash commits to it). `None` on a chain whose genesis predates the
    /// limits: unlimited, and the genesis hash it always had.
    pub registrations: Option<RegistrationLimits>,
    /// How long an alert without `<expires>` stays in force. Only queries
    /// use it (no block is valid or invalid by it), but the genesis hash
    /// commits to it so that every node of a network shows the same
    /// alerts. `None` on a chain whose genesis predates it:
    /// [`DEFAULT_ALERT_LIFETIME`].
    pub alert_lifetime: Option<Duration>,
}

impl ChainConfig {
    /// How long an alert without `<expires>` stays in force.
    pub fn alert_lifetime(&self) -> Duration {
        self.alert_lifetime.unwrap_or(DEFAULT_ALERT_LIFETIME)
    }
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            epoch: 30_000,
            period: Duration::from_secs(5),
            heartbeat: Duration::from_secs(60),
            max_clock_skew: Duration::from_secs(15),
            snapshot_interval: 1024,
            registrations: Some(RegistrationLimits::default()),
            alert_lifetime: Some(DEFAULT_ALERT_LIFETIME),
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
        // Only when set, so that a genesis from before the limits keeps
        // its hash (and its databases keep opening).
        if let Some(r) = self.config.registrations {
            hasher.update(b"registrations");
            for value in [
                u64::from(r.per_block),
                u64::from(r.per_window),
                r.window_blocks,
            ] {
                hasher.update(&value.to_le_bytes());
            }
        }
        if let Some(lifetime) = self.config.alert_lifetime {
            hasher.update(b"alert lifetime");
            hasher.update(&duration_ms(lifetime).to_le_bytes());
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
    /// Its signer sealed other blocks on the same parent, and fork choice
    /// prefers those: the signer equivocated (not whoever passed it on).
    #[error(
        "block {number}'s signer sealed {kept} other blocks on the same parent, which are kept \
         instead (equivocation)"
    )]
    TooManySiblings {
        /// The block's number.
        number: u64,
        /// How many of the signer's blocks on that parent are kept.
        kept: usize,
    },
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
    /// A finality vote was refused.
    #[error(transparent)]
    Vote(#[from] VoteError),
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

/// A kept vote's place: its target height, then its link.
type VoteKey = (u64, BlockRef, BlockRef);

fn vote_key(vote: &FinalityVote) -> VoteKey {
    (vote.target.number, vote.source, vote.target)
}

/// Whether `count` voters are more than two thirds of `voters`.
fn supermajority_of(count: usize, voters: usize) -> bool {
    count * 3 > voters * 2
}

/// Adds `item` to a queue of at most [`MAX_EVIDENCE`], the oldest going first.
fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() >= MAX_EVIDENCE {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// How many blocks one signer may have on one parent in the tree. An honest
/// signer seals one; two are an equivocation (recorded as evidence). Each
/// more only costs every node memory and disk (a block may be 8 MiB), so
/// beyond four the least preferred that nothing was built on goes. Which
/// four a node keeps depends only on the blocks it saw, not their order,
/// as long as nothing is built on a fifth.
pub const MAX_SIBLINGS_PER_SIGNER: usize = 4;

/// What keeping a signer's siblings bounded takes, for one import.
enum Evict {
    /// Nothing: there is room.
    Nothing,
    /// The block being imported: the others are preferred.
    This,
    /// The branch from this block.
    Other(BlockHash),
}

/// How many equivocation proofs are kept for the node to publish.
const MAX_EVIDENCE: usize = 64;

/// How many finality votes are kept per signer (the highest targets): an
/// honest signer has one per block above the finalized one, so this covers
/// finality stalling for 64 blocks; a dishonest one can only crowd out its
/// own votes.
pub const MAX_VOTES_PER_SIGNER: usize = 64;

/// The chain of one node: a tree of not-yet-final blocks above the finalized
/// block, the head chosen by fork choice, and the store.
pub struct Chain<S: ChainStore> {
    store: S,
    config: ChainConfig,
    genesis_hash: BlockHash,
    /// The finalized block: the root of the tree.
    root: Node,
    /// The blocks above the finalized block, on every branch.
    tree: Tree,
    head: BlockHash,
    /// The highest justified block this node knows (the finalized block if
    /// none above it is): the head always descends from it.
    justified: BlockHash,
    evidence: VecDeque<(SealedHeader, SealedHeader)>,
    /// Each signer's finality votes for targets above the finalized block,
    /// by target height and link (at most [`MAX_VOTES_PER_SIGNER`] each).
    /// A signer that broke the voting rule has more than one at a height,
    /// or one around another: all of them are kept and counted, so that
    /// every node that heard the same votes counts the same (keeping only
    /// the first would let nodes disagree for good on what is justified,
    /// and the honest authorities' votes split; the simulator's clones
    /// found this).
    votes: BTreeMap<NodeId, BTreeMap<VoteKey, FinalityVote>>,
    /// This node's own latest finality vote, as stored.
    last_vote: VoteRecord,
    /// Pairs of votes by one signer that break the voting rule, not yet taken.
    vote_evidence: VecDeque<(FinalityVote, FinalityVote)>,
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
                )
                .with_registration_limits(genesis.config.registrations);
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
            Some(_) => {
                let last_vote = store.last_vote().map_err(ChainError::Store)?;
                let mut chain = Self::restore(store, genesis.config, genesis_hash)?;
                chain.last_vote = last_vote.unwrap_or_default();
                Ok(chain)
            }
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
            last_in_turn: None,
            block: None,
            state,
        };
        Self {
            store,
            config,
            genesis_hash,
            root,
            tree: Tree::default(),
            head: point.hash,
            justified: point.hash,
            evidence: VecDeque::new(),
            votes: BTreeMap::new(),
            last_vote: VoteRecord::default(),
            vote_evidence: VecDeque::new(),
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
        let (state, point) = ChainState::from_snapshot(&snapshot, &genesis_hash)
            .map_err(|e| corrupt(e.to_string()))?;
        let state = state.with_registration_limits(config.registrations);
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
        }
        if chain.head().hash != stored_head.hash {
            return Err(corrupt(
                "the canonical index does not reach the head".into(),
            ));
        }
        // Finality comes from votes, which are not in the blocks: the store
        // has it. (Seals never make a block final, not even on restart.)
        if let Some(f) = chain.store.finalized().map_err(ChainError::Store)?
            && f.number > chain.finalized().number
        {
            if chain.store.canonical(f.number).map_err(ChainError::Store)? != Some(f.hash)
                || !chain.tree.contains_key(&f.hash)
            {
                return Err(corrupt(format!(
                    "the finalized block {} is not on the canonical chain",
                    f.number
                )));
            }
            chain.finalize(f.hash);
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

    /// See [`ChainStore::set_synced`]: whether imports wait for the disk.
    pub fn set_synced_writes(&mut self, synced: bool) {
        self.store.set_synced(synced);
    }

    /// Makes everything imported so far durable ([`ChainStore::flush`]).
    pub fn flush(&mut self) -> Result<(), ChainError<S::Error>> {
        self.store.flush().map_err(ChainError::Store)
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
            last_in_turn,
            block: Some(block.clone()),
            state,
        };
        Ok((node, change))
    }

    /// Validates `block` and adds it to the chain. If fork choice prefers it,
    /// it becomes the head; finality advances when votes make it. Everything
    /// that changes is committed to the store in one atomic batch before this
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
        let (node, signer_change) = match self.validate(block, validation) {
            Ok(validated) => validated,
            Err(e @ ImportError::BelowFinality { .. }) => {
                // A block that can no longer be imported may still prove
                // that its signer sealed two blocks on one parent.
                if let Some(proof) = self.find_final_equivocation(block.sealed_header())? {
                    push_bounded(&mut self.evidence, proof);
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let equivocation = self.find_equivocation(block.sealed_header());
        // A signer's blocks on one parent, beyond the first, are
        // equivocation: at most MAX_SIBLINGS_PER_SIGNER are kept, the ones
        // fork choice prefers most among those nothing was built on.
        let evicted = match self.sibling_to_evict(&node) {
            Evict::Nothing => Vec::new(),
            Evict::This => {
                if let Some(proof) = equivocation {
                    push_bounded(&mut self.evidence, proof);
                }
                return Err(ImportError::TooManySiblings {
                    number: block.header().number,
                    kept: MAX_SIBLINGS_PER_SIGNER,
                }
                .into());
            }
            Evict::Other(other) => vec![other],
        };
        let old_head = self.head;
        // Fork choice: the head descends from the highest justified block,
        // and EIP-3436 decides among those blocks.
        let becomes_head =
            prefer(&node, self.head_node()) && self.descends_from(&node.parent, &self.justified);
        let block_head = node.head;

        // Work out everything in memory first, commit, and only then change
        // what the node sees: a failed commit leaves the chain as it was.
        let mut batch = ChainBatch {
            blocks: vec![(hash, block.to_bytes())],
            forget_blocks: evicted.clone(),
            ..ChainBatch::default()
        };
        self.tree.insert(hash, node);
        if becomes_head {
            self.head_batch(&hash, &mut batch)
                .map_err(ChainError::Store)?;
        }
        if let Err(e) = self.store.commit(batch) {
            // Nothing was stored: forget the block again.
            self.tree.remove_subtree(&hash);
            return Err(ChainError::Store(e));
        }
        if let Some(first) = evicted.first() {
            self.tree.remove_subtree(first);
        }
        if becomes_head {
            self.head = hash;
        }
        // Votes that came before this block may count now.
        self.settle()?;
        if let Some(proof) = &equivocation {
            push_bounded(&mut self.evidence, proof.clone());
        }
        let reorg = self.head != old_head && !self.descends_from(&self.head, &old_head);
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

    /// Another block by the same signer on the same parent, if the tree has
    /// one. Two blocks at one height on different parents are not reported:
    /// an honest authority that moved to another branch seals again at a
    /// height it sealed on the one it left (the simulator's reshuffled
    /// splits named honest movers that way).
    fn find_equivocation(&self, header: &SealedHeader) -> Option<(SealedHeader, SealedHeader)> {
        let h = header.header();
        self.tree
            .children(&h.parent_hash)
            .iter()
            .filter_map(|c| self.tree.get(c)?.block.as_ref())
            .find(|b| b.header().signer == h.signer && b.hash() != header.hash())
            .map(|other| (other.sealed_header().clone(), header.clone()))
    }

    /// What importing `node` (not in the tree yet) must drop to keep at most
    /// [`MAX_SIBLINGS_PER_SIGNER`] blocks of its signer on its parent: the
    /// one fork choice likes least among `node` and those of them that
    /// nothing was built on yet (and that are not the head).
    fn sibling_to_evict(&self, node: &Node) -> Evict {
        let Some(signer) = node.block.as_ref().map(|b| b.header().signer) else {
            return Evict::Nothing;
        };
        let rivals: Vec<BlockHash> = self
            .tree
            .children(&node.parent)
            .iter()
            .filter(|c| {
                self.tree
                    .get(c)
                    .and_then(|n| n.block.as_ref())
                    .is_some_and(|b| b.header().signer == signer)
            })
            .copied()
            .collect();
        if rivals.len() < MAX_SIBLINGS_PER_SIGNER {
            return Evict::Nothing;
        }
        let mut worst: (Option<BlockHash>, &Node) = (None, node);
        for rival in rivals {
            // A block someone built on may be the branch the network
            // follows: never dropped for a newcomer.
            if rival == self.head
                || rival == self.justified
                || !self.tree.children(&rival).is_empty()
            {
                continue;
            }
            if let Some(n) = self.tree.get(&rival)
                && prefer(worst.1, n)
            {
                worst = (Some(rival), n);
            }
        }
        match worst.0 {
            Some(rival) => Evict::Other(rival),
            None => Evict::This,
        }
    }

    /// The canonical block at `header`'s height, if its signer sealed it on
    /// the same parent: `header` is then a second block by that signer on
    /// a branch that finality dropped (or that never got in).
    fn find_final_equivocation(
        &self,
        header: &SealedHeader,
    ) -> Result<Option<(SealedHeader, SealedHeader)>, ChainError<S::Error>> {
        let h = header.header();
        let Some(hash) = self.store.canonical(h.number).map_err(ChainError::Store)? else {
            return Ok(None);
        };
        if hash == header.hash() {
            return Ok(None);
        }
        let Some(bytes) = self.store.block(&hash).map_err(ChainError::Store)? else {
            return Ok(None);
        };
        let Ok(canonical) = SealedBlock::from_bytes(&bytes) else {
            return Ok(None);
        };
        let c = canonical.header();
        Ok((c.signer == h.signer && c.parent_hash == h.parent_hash)
            .then(|| (canonical.sealed_header().clone(), header.clone())))
    }

    fn descends_from(&self, hash: &BlockHash, ancestor: &BlockHash) -> bool {
        if *ancestor == self.root.head.hash {
            // The tree holds only blocks above the finalized block.
            return self.get(hash).is_some();
        }
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

    /// Adds the finalized block `f` (and a snapshot, if finality crosses a
    /// multiple of the snapshot interval) to `batch`.
    fn finality_batch(&self, f: &BlockHash, old_finalized: u64, batch: &mut ChainBatch) {
        batch.forget_blocks.extend(self.tree.forks_left_by(f));
        let Some(f) = self.get(f) else { return };
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

    /// Moves the head to `head` in `batch`: the canonical index follows the
    /// new head's branch back to where it meets the stored one.
    fn head_batch(&self, head: &BlockHash, batch: &mut ChainBatch) -> Result<(), S::Error> {
        let Some(top) = self.get(head) else {
            return Ok(());
        };
        let mut cursor = *head;
        while let Some(n) = self.get(&cursor) {
            if self.store.canonical(n.head.number)? == Some(cursor) {
                break;
            }
            batch.canonical.push((n.head.number, cursor));
            if n.block.is_none() {
                break;
            }
            cursor = n.parent;
        }
        // Only a head lower than the stored one leaves index entries above
        // it. (A range delete per block made every later read of the index
        // sort them all: importing 2,000 blocks took 16 s, most of it there.)
        if self.head_node().head.number > top.head.number {
            batch.truncate_canonical_above = Some(top.head.number);
        }
        batch.head = Some(StoredHead {
            number: top.head.number,
            hash: *head,
        });
        Ok(())
    }

    /// This node's latest finality vote, as stored.
    pub fn last_vote(&self) -> VoteRecord {
        self.last_vote
    }

    /// When an authority may vote for the head, if that is later than
    /// `now`. An authority waits half a period before it votes for a block
    /// sealed out of turn: the in-turn block for that height is heavier, was
    /// sealed earlier and is usually on its way, and a vote cast for the
    /// out-of-turn block could not be cast again for the in-turn one (one
    /// vote per height). Split votes at one height delay finality by two
    /// periods; the wait delays it by half a period, and only where no
    /// in-turn block comes. `None` if there is nothing to wait for.
    pub fn vote_wait(&self, now: Timestamp) -> Option<Timestamp> {
        let head = self.head_node();
        let out_of_turn = head.block.as_ref().is_some_and(|b| b.header().weight < 2);
        if !out_of_turn || head.head.number <= self.last_vote.target {
            return None;
        }
        let at = head.head.timestamp.saturating_add(self.config.period / 2);
        (at > now).then_some(at)
    }

    /// The finality vote `identity` (an authority) should send now, if any:
    /// a link from the highest justified block below the head to the head.
    /// `None` if it is not a signer, if it should wait ([`Chain::vote_wait`]),
    /// or if the voting rule forbids the vote ([`VoteRecord::allows`]: it
    /// already voted for this height or higher, or from a higher source).
    /// The vote is recorded in the store before it is returned, so that no
    /// restart can make the node vote twice for one height.
    pub fn vote(
        &mut self,
        identity: &Identity,
        now: Timestamp,
    ) -> Result<Option<FinalityVote>, ChainError<S::Error>> {
        if !self.voters().contains(identity.id()) || self.vote_wait(now).is_some() {
            return Ok(None);
        }
        let head = self.head();
        if head.number <= self.last_vote.target {
            // Voted at this height already (the cheap check first).
            return Ok(None);
        }
        let source = self.justified_below(&head.hash);
        if !self.last_vote.allows(source.number, head.number) {
            return Ok(None);
        }
        let record = VoteRecord {
            source: source.number,
            target: head.number,
        };
        self.store
            .commit(ChainBatch {
                last_vote: Some(record),
                ..ChainBatch::default()
            })
            .map_err(ChainError::Store)?;
        self.last_vote = record;
        Ok(Some(FinalityVote::sign(
            identity,
            self.genesis_hash,
            source,
            BlockRef {
                number: head.number,
                hash: head.hash,
            },
        )))
    }

    /// Counts a finality vote: `Ok(true)` if it is new and others need it
    /// (it should be passed on), `Ok(false)` if the chain has it already, if
    /// it is for a block at or below the finalized one (it can change
    /// nothing), or if its link already had more than two thirds of the
    /// signers here (it is kept, but nobody needs it: a quarter less vote
    /// traffic with 7 authorities). Votes for blocks the chain does not have
    /// yet are kept until they come. If the vote makes a block final or
    /// justified, that (and the head it leads to) is committed to the store
    /// before this returns.
    ///
    /// A vote that breaks the voting rule together with a kept vote of the
    /// same signer (a second one for a height, or one around or inside
    /// another) is kept, counted and passed on like any other, and the pair
    /// is evidence ([`Chain::take_vote_evidence`]): every node then counts
    /// the same votes, as Casper FFG's safety and liveness arguments assume.
    pub fn add_vote(&mut self, vote: &FinalityVote) -> Result<bool, ChainError<S::Error>> {
        if vote.genesis != self.genesis_hash {
            return Err(VoteError::OtherChain.into());
        }
        if !self.voters().contains(&vote.signer) {
            return Err(VoteError::NotASigner(vote.signer).into());
        }
        if vote.target.number <= self.finalized().number {
            return Ok(false);
        }
        let key = vote_key(vote);
        let kept = self.votes.get(&vote.signer);
        if kept.is_some_and(|v| v.contains_key(&key)) {
            return Ok(false);
        }
        let conflict = kept
            .and_then(|v| v.values().find(|k| k.conflicts_with(vote)))
            .cloned();
        vote.verify()?;
        // A rule-breaker's second vote travels everywhere, as evidence.
        let needed =
            conflict.is_some() || !self.supermajority(&vote.target.hash, self.link_count(vote));
        self.votes
            .entry(vote.signer)
            .or_default()
            .insert(key, vote.clone());
        if let Err(e) = self.settle() {
            // What it would have changed was not stored: the vote is not
            // counted, so that it counts when it comes again.
            if let Some(mine) = self.votes.get_mut(&vote.signer) {
                mine.remove(&key);
            }
            return Err(e);
        }
        if let Some(mine) = self.votes.get_mut(&vote.signer)
            && mine.len() > MAX_VOTES_PER_SIGNER
        {
            mine.pop_first();
        }
        if let Some(kept) = conflict {
            push_bounded(&mut self.vote_evidence, (kept, vote.clone()));
        }
        Ok(needed)
    }

    /// Takes the pairs of finality votes by one signer that break the voting
    /// rule (at most 64 are kept): two for one height, or one whose link
    /// surrounds the other's; the vote that came first is first.
    pub fn take_vote_evidence(&mut self) -> Vec<(FinalityVote, FinalityVote)> {
        self.vote_evidence.drain(..).collect()
    }

    /// Every finality vote the chain keeps: what a new neighbour is sent.
    pub fn votes(&self) -> Vec<FinalityVote> {
        self.votes
            .values()
            .flat_map(|v| v.values())
            .cloned()
            .collect()
    }

    /// The signers whose finality votes count: the signer set of the
    /// finalized block. Every branch above it counts votes against this one
    /// set, so the two thirds on one branch and the two thirds on another
    /// overlap in more than a third of the same keys; a signer-set change
    /// enters the count only once the block that enacts it is final.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        self.root.state.signers().signers()
    }

    /// The highest justified block this node knows (the finalized block if
    /// none above it is). The head descends from it; neighbours announce it
    /// so that a node fetches a lighter branch that carries it.
    pub fn justified(&self) -> Head {
        self.get(&self.justified).map_or(self.root.head, |n| n.head)
    }

    /// How many voters voted for each link whose target the tree has and
    /// whose source is an ancestor of the target.
    fn links(&self) -> HashMap<(BlockRef, BlockRef), usize> {
        let mut links = HashMap::new();
        for (signer, votes) in &self.votes {
            for vote in votes.values() {
                if self.counts(signer, vote) {
                    *links.entry((vote.source, vote.target)).or_default() += 1;
                }
            }
        }
        links
    }

    /// How many voters voted for `vote`'s link: its entry in
    /// [`Chain::links`], without counting every other link.
    fn link_count(&self, vote: &FinalityVote) -> usize {
        let key = vote_key(vote);
        self.votes
            .iter()
            .filter_map(|(signer, votes)| Some((signer, votes.get(&key)?)))
            .filter(|(signer, v)| self.counts(signer, v))
            .count()
    }

    /// Whether `signer`'s `vote` counts for its link: the tree has its
    /// target, the signer is a voter ([`Chain::voters`]), and the source is
    /// an ancestor of the target.
    fn counts(&self, signer: &NodeId, vote: &FinalityVote) -> bool {
        let Some(target) = self.tree.get(&vote.target.hash) else {
            return false;
        };
        self.voters().contains(signer)
            && target.head.number == vote.target.number
            && self.is_ancestor(&vote.source, &vote.target.hash)
    }

    /// Whether `ancestor` is `hash` or below it on its branch (down to the
    /// finalized block, and below that on the canonical chain).
    fn is_ancestor(&self, ancestor: &BlockRef, hash: &BlockHash) -> bool {
        if ancestor.number <= self.root.head.number {
            return self.store.canonical(ancestor.number).ok().flatten() == Some(ancestor.hash);
        }
        self.descends_from(hash, &ancestor.hash)
    }

    /// The blocks of the tree that are justified here: more than two thirds
    /// of the voters voted for one link into each.
    fn justified_blocks(
        links: &HashMap<(BlockRef, BlockRef), usize>,
        voters: usize,
    ) -> BTreeSet<BlockRef> {
        links
            .iter()
            .filter(|(_, count)| supermajority_of(**count, voters))
            .map(|((_, target), _)| *target)
            .collect()
    }

    /// The highest block strictly below `hash` on its branch that is
    /// justified here. The finalized block counts as justified.
    ///
    /// A node need not have seen the source of that link justified: honest
    /// authorities only vote from sources they saw justified, and more than
    /// two thirds of the signers include at least one honest one, as long
    /// as fewer than a third break the voting rule (docs/chain.md).
    fn justified_below(&self, hash: &BlockHash) -> BlockRef {
        let justified: BTreeSet<BlockHash> =
            Self::justified_blocks(&self.links(), self.voters().len())
                .into_iter()
                .map(|b| b.hash)
                .collect();
        let mut cursor = self.tree.get(hash).map(|n| n.parent);
        while let Some(c) = cursor {
            let Some(n) = self.tree.get(&c) else { break };
            if justified.contains(&c) {
                return BlockRef {
                    number: n.head.number,
                    hash: c,
                };
            }
            cursor = Some(n.parent);
        }
        BlockRef {
            number: self.root.head.number,
            hash: self.root.head.hash,
        }
    }

    /// Whether `count` voters are more than two thirds of them, for a
    /// target the tree has.
    fn supermajority(&self, hash: &BlockHash, count: usize) -> bool {
        self.tree.contains_key(hash) && supermajority_of(count, self.voters().len())
    }

    /// The highest block that votes make final: the source of a link to its
    /// own child that more than two thirds of the voters voted for. `None`
    /// if that is not above the finalized block.
    fn vote_finality_candidate(
        &self,
        links: &HashMap<(BlockRef, BlockRef), usize>,
    ) -> Option<BlockHash> {
        let voters = self.voters().len();
        links
            .iter()
            .filter(|((source, target), count)| {
                target.number == source.number + 1
                    && source.number > self.root.head.number
                    && supermajority_of(**count, voters)
            })
            .map(|((source, _), _)| *source)
            .max()
            .map(|source| source.hash)
    }

    /// Brings finality, the justified block and the head up to date with
    /// the votes and blocks the chain has: what votes make final becomes
    /// final, the highest justified block above it becomes the anchor, and
    /// the head moves to the best block above the anchor if it is not there
    /// already. Committed to the store before anything changes here.
    fn settle(&mut self) -> Result<(), ChainError<S::Error>> {
        let links = self.links();
        let finality = self.vote_finality_candidate(&links);
        let base = finality.unwrap_or(self.root.head.hash);
        let justified = Self::justified_blocks(&links, self.voters().len())
            .into_iter()
            .filter(|b| b.hash != base && self.descends_from(&b.hash, &base))
            .filter_map(|b| self.tree.get(&b.hash).map(|n| (b.hash, n)))
            .fold(None::<(BlockHash, &Node)>, |best, (h, n)| match best {
                // The highest; EIP-3436 between two at one height (which
                // takes more than a third of the signers voting twice).
                Some((_, b))
                    if n.head.number < b.head.number
                        || (n.head.number == b.head.number && !prefer(n, b)) =>
                {
                    best
                }
                _ => Some((h, n)),
            })
            .map_or(base, |(h, _)| h);
        if finality.is_none() && justified == self.justified {
            return Ok(());
        }
        let head = if self.descends_from(&justified, &self.justified)
            && self.descends_from(&self.head, &justified)
        {
            // The anchor rose along the head's branch: the head, the best
            // block above the old anchor, is the best above the new one.
            self.head
        } else {
            self.best_above(&justified)
        };
        let mut batch = ChainBatch::default();
        if let Some(f) = &finality {
            self.finality_batch(f, self.finalized().number, &mut batch);
        }
        if head != self.head {
            self.head_batch(&head, &mut batch)
                .map_err(ChainError::Store)?;
        }
        if batch != ChainBatch::default() {
            self.store.commit(batch).map_err(ChainError::Store)?;
        }
        self.head = head;
        self.justified = justified;
        if let Some(f) = finality {
            self.finalize(f);
            let voters = self.voters().clone();
            self.votes.retain(|s, _| voters.contains(s));
        }
        Ok(())
    }

    /// The block EIP-3436 prefers among `anchor` and the blocks above it.
    fn best_above(&self, anchor: &BlockHash) -> BlockHash {
        self.best_in(&self.tree.subtree(anchor)).unwrap_or(*anchor)
    }

    /// The block EIP-3436 prefers among `hashes`.
    fn best_in(&self, hashes: &[BlockHash]) -> Option<BlockHash> {
        hashes
            .iter()
            .filter_map(|h| Some((h, self.tree.get(h)?)))
            .fold(None::<(&BlockHash, &Node)>, |best, (h, n)| match best {
                Some((_, b)) if !prefer(n, b) => best,
                _ => Some((h, n)),
            })
            .map(|(h, _)| *h)
    }

    /// Makes `f` the finalized block: it becomes the root, and every block
    /// that does not descend from it is dropped.
    fn finalize(&mut self, f: BlockHash) {
        let Some((mut new_root, _)) = self.tree.reroot(&f) else {
            return;
        };
        // Its own block and parent are history now.
        new_root.block = None;
        self.root = new_root;
        let number = self.root.head.number;
        for votes in self.votes.values_mut() {
            votes.retain(|(target, _, _), _| *target > number);
        }
        self.votes.retain(|_, v| !v.is_empty());
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
