//! Where the chain keeps its blocks: the `ChainStore` trait, and the
//! in-memory implementation that tests and the simulator use. The RocksDB
//! implementation lives in lifeline-storage.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use crate::block::BlockHash;
use crate::finality::VoteRecord;

/// The stored head: the tip of the canonical chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredHead {
    /// Its height.
    pub number: u64,
    /// Its hash.
    pub hash: BlockHash,
}

/// Everything one import changes, written at once: a store must apply a batch
/// atomically (all of it or none of it) and durably before `commit` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainBatch {
    /// The genesis hash, written once when the chain is created.
    pub genesis: Option<BlockHash>,
    /// New blocks: hash and exact signed header bytes.
    pub blocks: Vec<(BlockHash, Vec<u8>)>,
    /// Blocks no branch needs any more (forks that finality left behind, or
    /// a signer's surplus siblings): to delete.
    pub forget_blocks: Vec<BlockHash>,
    /// Canonical index entries to set.
    pub canonical: Vec<(u64, BlockHash)>,
    /// Remove canonical index entries above this height (after the head
    /// moved to a shorter branch).
    pub truncate_canonical_above: Option<u64>,
    /// The new head, if it moved.
    pub head: Option<StoredHead>,
    /// The new finalized block, if it moved.
    pub finalized: Option<StoredHead>,
    /// A new latest snapshot of chain state (encoded), if one was taken.
    pub snapshot: Option<Vec<u8>>,
    /// This node's latest finality vote, if it just voted (it must be
    /// durable before the vote is sent).
    pub last_vote: Option<VoteRecord>,
}

/// Storage for the chain.
pub trait ChainStore {
    /// What can go wrong in this store.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The genesis hash the store was created with, if any.
    fn genesis(&self) -> Result<Option<BlockHash>, Self::Error>;
    /// A block's exact signed header bytes.
    fn block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The canonical block at `number`.
    fn canonical(&self, number: u64) -> Result<Option<BlockHash>, Self::Error>;
    /// The head.
    fn head(&self) -> Result<Option<StoredHead>, Self::Error>;
    /// The finalized block.
    fn finalized(&self) -> Result<Option<StoredHead>, Self::Error>;
    /// The latest snapshot of chain state.
    fn latest_snapshot(&self) -> Result<Option<Vec<u8>>, Self::Error>;
    /// This node's latest finality vote, if it ever voted.
    fn last_vote(&self) -> Result<Option<VoteRecord>, Self::Error>;
    /// Applies `batch` atomically and durably.
    fn commit(&mut self, batch: ChainBatch) -> Result<(), Self::Error>;
    /// With `false`, [`ChainStore::commit`] may return before a batch is on
    /// disk, as long as batches reach the disk in order and a batch with
    /// this node's own vote is durable at once. For blocks imported from a
    /// neighbour, which a crash may lose (they are fetched again) but never
    /// out of order. [`ChainStore::flush`] makes everything committed
    /// durable. A store that is always durable (or never, in memory) keeps
    /// the default, which does nothing.
    fn set_synced(&mut self, synced: bool) {
        let _ = synced;
    }
    /// Makes everything committed so far durable.
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A chain store in memory: for tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemoryChainStore {
    genesis: Option<BlockHash>,
    blocks: HashMap<BlockHash, Vec<u8>>,
    canonical: BTreeMap<u64, BlockHash>,
    head: Option<StoredHead>,
    finalized: Option<StoredHead>,
    snapshot: Option<Vec<u8>>,
    last_vote: Option<VoteRecord>,
}

impl MemoryChainStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ChainStore for MemoryChainStore {
    type Error = Infallible;

    fn genesis(&self) -> Result<Option<BlockHash>, Self::Error> {
        Ok(self.genesis)
    }

    fn block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.blocks.get(hash).cloned())
    }

    fn canonical(&self, number: u64) -> Result<Option<BlockHash>, Self::Error> {
        Ok(self.canonical.get(&number).copied())
    }

    fn head(&self) -> Result<Option<StoredHead>, Self::Error> {
        Ok(self.head)
    }

    fn finalized(&self) -> Result<Option<StoredHead>, Self::Error> {
        Ok(self.finalized)
    }

    fn latest_snapshot(&self) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.snapshot.clone())
    }

    fn last_vote(&self) -> Result<Option<VoteRecord>, Self::Error> {
        Ok(self.last_vote)
    }

    fn commit(&mut self, batch: ChainBatch) -> Result<(), Self::Error> {
        if let Some(genesis) = batch.genesis {
            self.genesis = Some(genesis);
        }
        self.blocks.extend(batch.blocks);
        for hash in &batch.forget_blocks {
            self.blocks.remove(hash);
        }
        if let Some(above) = batch.truncate_canonical_above {
            self.canonical.split_off(&above.saturating_add(1));
        }
        self.canonical.extend(batch.canonical);
        if let Some(head) = batch.head {
            self.head = Some(head);
        }
        if let Some(finalized) = batch.finalized {
            self.finalized = Some(finalized);
        }
        if let Some(snapshot) = batch.snapshot {
            self.snapshot = Some(snapshot);
        }
        if let Some(vote) = batch.last_vote {
            self.last_vote = Some(vote);
        }
        Ok(())
    }
}
