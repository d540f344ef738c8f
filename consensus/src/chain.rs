//! The chain: genesis, importing blocks with full validation, and reopening
//! from storage.
//!
//! Sans-IO: time comes in as an argument, storage through [`ChainStore`].

use std::time::Duration;

use lifeline_crypto::{NodeId, Timestamp};
use prost::Message;
use thiserror::Error;

use crate::block::{BlockHash, HeaderError, MAX_SIGNERS, SealedHeader};
use crate::signers::{SignerChange, SignerError, SignerState, SnapshotError};
use crate::store::{ChainBatch, ChainStore, StoredHead};
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
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImportError {
    /// The header is malformed or its signature is bad.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The block does not build on the head.
    #[error("block {number} builds on {parent:?}, which is not the head")]
    UnknownParent {
        /// The block's number.
        number: u64,
        /// Its parent hash.
        parent: BlockHash,
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

impl<E: std::error::Error + 'static> From<SnapshotError> for ChainError<E> {
    fn from(e: SnapshotError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// The head block's details the next import needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Height.
    pub number: u64,
    /// Hash.
    pub hash: BlockHash,
    /// Timestamp.
    pub timestamp: Timestamp,
}

/// What an import did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The new head.
    pub head: Head,
    /// A change to the signer set, if the block's vote passed.
    pub signer_change: Option<SignerChange>,
}

/// The chain of one node.
pub struct Chain<S: ChainStore> {
    store: S,
    config: ChainConfig,
    head: Head,
    signers: SignerState,
}

impl<S: ChainStore> Chain<S> {
    /// Opens the chain in `store`, creating it from `genesis` if the store is
    /// empty, or else restoring state from the latest snapshot and the blocks
    /// after it.
    pub fn open(mut store: S, genesis: &Genesis) -> Result<Self, ChainError<S::Error>> {
        if genesis.signers.is_empty()
            || genesis.signers.len() > MAX_SIGNERS
            || genesis.config.epoch == 0
        {
            return Err(ChainError::BadGenesis);
        }
        let genesis_hash = genesis.hash();
        let genesis_head = Head {
            number: 0,
            hash: genesis_hash,
            timestamp: genesis.timestamp,
        };
        match store.genesis().map_err(ChainError::Store)? {
            None => {
                let signers = SignerState::genesis(genesis.signers.iter().copied());
                store
                    .commit(ChainBatch {
                        genesis: Some(genesis_hash),
                        canonical: vec![(0, genesis_hash)],
                        head: Some(StoredHead {
                            number: 0,
                            hash: genesis_hash,
                        }),
                        snapshot: Some(signers.to_snapshot(0, &genesis_hash)),
                        ..ChainBatch::default()
                    })
                    .map_err(ChainError::Store)?;
                return Ok(Self {
                    store,
                    config: genesis.config,
                    head: genesis_head,
                    signers,
                });
            }
            Some(found) if found != genesis_hash => {
                return Err(ChainError::WrongGenesis {
                    found,
                    expected: genesis_hash,
                });
            }
            Some(_) => {}
        }
        let stored_head = store
            .head()
            .map_err(ChainError::Store)?
            .ok_or_else(|| ChainError::Corrupt("no head".into()))?;
        let snapshot = store
            .latest_snapshot()
            .map_err(ChainError::Store)?
            .ok_or_else(|| ChainError::Corrupt("no snapshot".into()))?;
        let (mut signers, from, _) = SignerState::from_snapshot(&snapshot)?;
        if from > stored_head.number {
            return Err(ChainError::Corrupt("snapshot is above the head".into()));
        }
        let mut head = genesis_head;
        if from > 0 {
            head = Self::stored_head_at(&store, from)?;
        }
        // Replay the blocks after the snapshot (at most snapshot_interval).
        for number in from + 1..=stored_head.number {
            let sealed = Self::stored_block(&store, number)?;
            let h = sealed.header();
            signers
                .apply(
                    number,
                    &h.signer,
                    h.vote.as_ref(),
                    number.is_multiple_of(genesis.config.epoch),
                )
                .map_err(|e| ChainError::Corrupt(format!("stored block {number}: {e}")))?;
            head = Head {
                number,
                hash: sealed.hash(),
                timestamp: h.timestamp,
            };
        }
        if head.hash != stored_head.hash {
            return Err(ChainError::Corrupt(
                "the canonical index does not reach the head".into(),
            ));
        }
        Ok(Self {
            store,
            config: genesis.config,
            head,
            signers,
        })
    }

    fn stored_block(store: &S, number: u64) -> Result<SealedHeader, ChainError<S::Error>> {
        let hash = store
            .canonical(number)
            .map_err(ChainError::Store)?
            .ok_or_else(|| ChainError::Corrupt(format!("no canonical block {number}")))?;
        let bytes = store
            .block(&hash)
            .map_err(ChainError::Store)?
            .ok_or_else(|| ChainError::Corrupt(format!("block {number} is missing")))?;
        SealedHeader::from_bytes(&bytes)
            .map_err(|e| ChainError::Corrupt(format!("stored block {number}: {e}")))
    }

    fn stored_head_at(store: &S, number: u64) -> Result<Head, ChainError<S::Error>> {
        let sealed = Self::stored_block(store, number)?;
        Ok(Head {
            number,
            hash: sealed.hash(),
            timestamp: sealed.header().timestamp,
        })
    }

    /// The head.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The parameters.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The signer state at the head.
    pub fn signer_state(&self) -> &SignerState {
        &self.signers
    }

    /// Gives the store back (to reopen the chain from it).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Checks `block` against the head without changing anything; returns the
    /// signer state it would lead to.
    pub fn validate(
        &self,
        block: &SealedHeader,
        validation: Validation,
    ) -> Result<(SignerState, Option<SignerChange>), ImportError> {
        let h = block.header();
        if h.parent_hash != self.head.hash {
            return Err(ImportError::UnknownParent {
                number: h.number,
                parent: h.parent_hash,
            });
        }
        if h.number != self.head.number.saturating_add(1) {
            return Err(ImportError::BadNumber {
                got: h.number,
                parent: self.head.number,
            });
        }
        let is_checkpoint = h.number.is_multiple_of(self.config.epoch);
        if is_checkpoint {
            if h.vote.is_some() {
                return Err(ImportError::InvalidVote("checkpoint blocks carry no vote"));
            }
            let listed = h.checkpoint.as_ref().ok_or(ImportError::InvalidCheckpoint(
                "a checkpoint block must list the signers",
            ))?;
            if !listed.iter().eq(self.signers.signers().iter()) {
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
            if h.timestamp < self.head.timestamp.saturating_add(self.config.period) {
                return Err(ImportError::TooEarly);
            }
            let ahead = h.timestamp.saturating_duration_since(now);
            if ahead > self.config.max_clock_skew {
                return Err(ImportError::FromTheFuture(ahead));
            }
            let expected = if self.signers.in_turn(h.number) == Some(h.signer) {
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
        }
        let mut next = self.signers.clone();
        let change = next.apply(h.number, &h.signer, h.vote.as_ref(), is_checkpoint)?;
        Ok((next, change))
    }

    /// Validates `block` and makes it the head: one atomic, durable store
    /// commit before the new head is reported.
    pub fn import(
        &mut self,
        block: &SealedHeader,
        validation: Validation,
    ) -> Result<Imported, ChainError<S::Error>> {
        let (next, signer_change) = self.validate(block, validation)?;
        let h = block.header();
        let head = Head {
            number: h.number,
            hash: block.hash(),
            timestamp: h.timestamp,
        };
        let snapshot = h
            .number
            .is_multiple_of(self.config.snapshot_interval.max(1))
            .then(|| next.to_snapshot(h.number, &head.hash));
        self.store
            .commit(ChainBatch {
                genesis: None,
                blocks: vec![(head.hash, block.to_bytes().to_vec())],
                canonical: vec![(head.number, head.hash)],
                head: Some(StoredHead {
                    number: head.number,
                    hash: head.hash,
                }),
                snapshot,
            })
            .map_err(ChainError::Store)?;
        self.head = head;
        self.signers = next;
        Ok(Imported {
            head,
            signer_change,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Header, Vote};
    use crate::conformance::identity_of;
    use crate::store::MemoryChainStore;
    use lifeline_crypto::Identity;

    const START: u64 = 1_700_000_000_000;

    fn ids(names: &[&str]) -> Vec<Identity> {
        names.iter().map(|n| identity_of(n).unwrap()).collect()
    }

    fn genesis(signers: &[Identity], config: ChainConfig) -> Genesis {
        Genesis {
            config,
            timestamp: Timestamp::from_unix_millis(START),
            signers: signers.iter().map(|s| *s.id()).collect(),
        }
    }

    /// A correctly timed and weighted next block by `by`.
    fn next(chain: &Chain<MemoryChainStore>, by: &Identity, vote: Option<Vote>) -> Header {
        let head = chain.head();
        let number = head.number + 1;
        let in_turn = chain.signer_state().in_turn(number) == Some(*by.id());
        Header {
            parent_hash: head.hash,
            number,
            timestamp: head.timestamp.saturating_add(chain.config().period),
            signer: *by.id(),
            weight: if in_turn { 2 } else { 1 },
            vote,
            checkpoint: number
                .is_multiple_of(chain.config().epoch)
                .then(|| chain.signer_state().signers().iter().copied().collect()),
        }
    }

    fn now_for(h: &Header) -> Validation {
        Validation::Full { now: h.timestamp }
    }

    fn import_error(chain: &mut Chain<MemoryChainStore>, h: &Header, by: &Identity) -> ImportError {
        match chain.import(&h.seal(by).unwrap(), now_for(h)) {
            Err(ChainError::Import(e)) => e,
            other => panic!("expected an import error, got {other:?}"),
        }
    }

    #[test]
    fn full_validation_checks_timing_and_weight() {
        let s = ids(&["A", "B", "C"]);
        let mut chain = Chain::open(
            MemoryChainStore::new(),
            &genesis(&s, ChainConfig::default()),
        )
        .unwrap();
        let in_turn = s
            .iter()
            .find(|i| chain.signer_state().in_turn(1) == Some(*i.id()))
            .unwrap();
        let out_of_turn = s.iter().find(|i| i.id() != in_turn.id()).unwrap();

        let mut h = next(&chain, in_turn, None);
        h.weight = 1;
        assert_eq!(
            import_error(&mut chain, &h, in_turn),
            ImportError::WrongWeight {
                got: 1,
                expected: 2
            }
        );
        let mut h = next(&chain, out_of_turn, None);
        h.weight = 2;
        assert_eq!(
            import_error(&mut chain, &h, out_of_turn),
            ImportError::WrongWeight {
                got: 2,
                expected: 1
            }
        );

        let mut h = next(&chain, in_turn, None);
        h.timestamp = chain
            .head()
            .timestamp
            .saturating_add(chain.config().period / 2);
        assert_eq!(import_error(&mut chain, &h, in_turn), ImportError::TooEarly);

        let h = next(&chain, in_turn, None);
        let early_clock = Validation::Full {
            now: h.timestamp.saturating_sub(Duration::from_secs(60)),
        };
        assert!(matches!(
            chain.import(&h.seal(in_turn).unwrap(), early_clock),
            Err(ChainError::Import(ImportError::FromTheFuture(_)))
        ));

        // Nothing above changed the chain; the right block goes in.
        assert_eq!(chain.head().number, 0);
        let imported = chain
            .import(&h.seal(in_turn).unwrap(), now_for(&h))
            .unwrap();
        assert_eq!(imported.head.number, 1);
    }

    #[test]
    fn blocks_must_build_on_the_head() {
        let s = ids(&["A", "B"]);
        let mut chain = Chain::open(
            MemoryChainStore::new(),
            &genesis(&s, ChainConfig::default()),
        )
        .unwrap();
        let mut h = next(&chain, &s[0], None);
        h.parent_hash = BlockHash([9; 32]);
        assert!(matches!(
            import_error(&mut chain, &h, &s[0]),
            ImportError::UnknownParent { .. }
        ));
        let mut h = next(&chain, &s[0], None);
        h.number = 2;
        assert_eq!(
            import_error(&mut chain, &h, &s[0]),
            ImportError::BadNumber { got: 2, parent: 0 }
        );
    }

    #[test]
    fn reopening_restores_state_from_the_latest_snapshot_and_later_blocks() {
        let s = ids(&["A", "B", "C", "D"]);
        let config = ChainConfig {
            snapshot_interval: 3,
            epoch: 100,
            ..ChainConfig::default()
        };
        let g = genesis(&s, config);
        let mut chain = Chain::open(MemoryChainStore::new(), &g).unwrap();
        let d = *s[3].id();
        // Rotate through the signers so nobody is recent; A, B and C vote D out.
        for i in 0..7usize {
            let by = &s[i % 3];
            let vote = (i < 3).then_some(Vote {
                target: d,
                authorize: false,
            });
            let h = next(&chain, by, vote);
            chain.import(&h.seal(by).unwrap(), now_for(&h)).unwrap();
        }
        assert!(!chain.signer_state().is_signer(&d));
        let (head, state) = (chain.head(), chain.signer_state().clone());
        let reopened = Chain::open(chain.into_store(), &g).unwrap();
        assert_eq!(reopened.head(), head);
        assert_eq!(reopened.signer_state(), &state);
    }

    #[test]
    fn a_store_of_another_chain_is_refused() {
        let s = ids(&["A", "B"]);
        let chain = Chain::open(
            MemoryChainStore::new(),
            &genesis(&s, ChainConfig::default()),
        )
        .unwrap();
        let other = genesis(&ids(&["A", "C"]), ChainConfig::default());
        assert!(matches!(
            Chain::open(chain.into_store(), &other),
            Err(ChainError::WrongGenesis { .. })
        ));
        assert!(matches!(
            Chain::open(
                MemoryChainStore::new(),
                &genesis(&[], ChainConfig::default())
            ),
            Err(ChainError::BadGenesis)
        ));
    }

    #[test]
    fn a_refused_block_changes_nothing_in_the_store() {
        let s = ids(&["A", "B"]);
        let g = genesis(&s, ChainConfig::default());
        let mut chain = Chain::open(MemoryChainStore::new(), &g).unwrap();
        let h = next(&chain, &s[0], None);
        chain.import(&h.seal(&s[0]).unwrap(), now_for(&h)).unwrap();
        let before = chain.head();
        let again = next(&chain, &s[0], None); // A sealed block 1: recent.
        assert!(matches!(
            import_error(&mut chain, &again, &s[0]),
            ImportError::Signer(SignerError::RecentlySigned { .. })
        ));
        let reopened = Chain::open(chain.into_store(), &g).unwrap();
        assert_eq!(reopened.head(), before);
    }
}
