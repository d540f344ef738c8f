//! Who may seal blocks: the signer set, recent sealers and pending votes, with
//! the rules of EIP-225 (Clique).
//!
//! - The in-turn signer of block `n` is `signers[n % N]` in the sorted list.
//! - A signer may seal at most one of any `floor(N/2) + 1` consecutive blocks.
//! - A vote to add or drop a signer rides in a block header. A signer's new vote
//!   on a target replaces its old one. Votes that make no sense (adding a
//!   signer, dropping a non-signer) are ignored.
//! - A proposal passes when strictly more than half of the signers hold a vote
//!   for it. Only the target changes (no cascading); its pending votes go; if a
//!   signer is dropped, so are the votes it cast.
//! - Epoch checkpoints reset all votes; recency survives them.
//!
//! Tallies are not stored: they are counted from the pending votes, so the two
//! can never disagree.

use std::collections::{BTreeMap, BTreeSet};

use lifeline_crypto::NodeId;
use lifeline_crypto::wire::{DecodeError, decode_bounded, fixed};
use prost::Message;
use thiserror::Error;

use crate::block::{BlockHash, MAX_SIGNERS, Vote};
use crate::wire::pb;

/// Why a block's signer may not seal it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignerError {
    /// The signer is not in the signer set.
    #[error("{0} is not an authorized signer")]
    Unauthorized(NodeId),
    /// The signer sealed one of the last `floor(N/2)` blocks.
    #[error("{signer} sealed block {last} and may not seal again before block {next_allowed}")]
    RecentlySigned {
        /// The signer.
        signer: NodeId,
        /// The block it sealed last.
        last: u64,
        /// The first block it may seal again.
        next_allowed: u64,
    },
}

/// A pending vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CastVote {
    /// Who voted.
    pub signer: NodeId,
    /// On whom.
    pub target: NodeId,
    /// To add (`true`) or to drop.
    pub authorize: bool,
}

/// What applying a block changed in the signer set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignerChange {
    /// `0` became a signer.
    Added(NodeId),
    /// `0` stopped being a signer.
    Dropped(NodeId),
}

/// The signer set with its recency record and pending votes, as of one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerState {
    signers: BTreeSet<NodeId>,
    /// Block number to the signer that sealed it, for the recent blocks only.
    recents: BTreeMap<u64, NodeId>,
    votes: Vec<CastVote>,
}

impl SignerState {
    /// The state of a genesis block with these signers.
    pub fn genesis(signers: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            signers: signers.into_iter().collect(),
            recents: BTreeMap::new(),
            votes: Vec::new(),
        }
    }

    /// The signers, sorted.
    pub fn signers(&self) -> &BTreeSet<NodeId> {
        &self.signers
    }

    /// Whether `id` is a signer.
    pub fn is_signer(&self, id: &NodeId) -> bool {
        self.signers.contains(id)
    }

    /// Pending votes, oldest first.
    pub fn votes(&self) -> &[CastVote] {
        &self.votes
    }

    /// How many pending votes `target` has.
    pub fn tally(&self, target: &NodeId) -> usize {
        self.votes.iter().filter(|v| &v.target == target).count()
    }

    /// The signer whose turn block `number` is, if there are signers.
    pub fn in_turn(&self, number: u64) -> Option<NodeId> {
        let n = u64::try_from(self.signers.len()).ok().filter(|n| *n > 0)?;
        let index = usize::try_from(number % n).ok()?;
        self.signers.iter().nth(index).copied()
    }

    /// How many consecutive blocks one signer may seal at most one of.
    fn recency_limit(&self) -> u64 {
        u64::try_from(self.signers.len() / 2 + 1).unwrap_or(u64::MAX)
    }

    /// The first block number still inside the recency window at `number`.
    fn recent_from(&self, number: u64) -> u64 {
        let limit = self.recency_limit();
        if number >= limit {
            number - limit + 1
        } else {
            0
        }
    }

    /// Checks whether `signer` may seal block `number` on top of this state,
    /// without changing anything.
    pub fn check_signer(&self, number: u64, signer: &NodeId) -> Result<(), SignerError> {
        if !self.signers.contains(signer) {
            return Err(SignerError::Unauthorized(*signer));
        }
        let last = self
            .recents
            .range(self.recent_from(number)..)
            .rev()
            .find(|(_, s)| *s == signer)
            .map(|(n, _)| *n);
        match last {
            Some(last) => Err(SignerError::RecentlySigned {
                signer: *signer,
                last,
                next_allowed: last.saturating_add(self.recency_limit()),
            }),
            None => Ok(()),
        }
    }

    /// Applies block `number`, sealed by `signer` and carrying `vote`, on top
    /// of this state. `checkpoint` says whether `number` is an epoch
    /// checkpoint (its votes reset first). On error nothing changes.
    pub fn apply(
        &mut self,
        number: u64,
        signer: &NodeId,
        vote: Option<&Vote>,
        checkpoint: bool,
    ) -> Result<Option<SignerChange>, SignerError> {
        self.check_signer(number, signer)?;
        if checkpoint {
            self.votes.clear();
        }
        self.recents = self.recents.split_off(&self.recent_from(number));
        self.recents.insert(number, *signer);

        let Some(vote) = vote else {
            return Ok(None);
        };
        let target = vote.target;
        // A signer's new vote on a target replaces its old one.
        self.votes
            .retain(|v| !(v.signer == *signer && v.target == target));
        // The only vote that makes sense: add a non-signer, drop a signer.
        // Others are ignored (but still "touch" the target, below).
        let authorize = !self.signers.contains(&target);
        if vote.authorize == authorize {
            self.votes.push(CastVote {
                signer: *signer,
                target,
                authorize,
            });
        }
        // Every block that touches a target re-counts its tally: a tally can be
        // past half already if the signer set shrank since it was cast.
        if self.tally(&target) <= self.signers.len() / 2 {
            return Ok(None);
        }
        let change = if authorize {
            if self.signers.len() >= MAX_SIGNERS {
                // The set is full: the votes stay pending rather than grow it.
                return Ok(None);
            }
            self.signers.insert(target);
            SignerChange::Added(target)
        } else {
            // The recency window narrows with the set: check_signer derives it
            // from the current signer count.
            self.signers.remove(&target);
            // The dropped signer's own votes go.
            self.votes.retain(|v| v.signer != target);
            SignerChange::Dropped(target)
        };
        // Votes about the target are settled; nothing else changes (no cascading).
        self.votes.retain(|v| v.target != target);
        Ok(Some(change))
    }

    /// Encodes the state after block `number` (hash `hash`) as a snapshot.
    pub fn to_snapshot(&self, number: u64, hash: &BlockHash) -> Vec<u8> {
        pb::SignerSnapshot {
            number,
            hash: hash.0.to_vec(),
            signers: self.signers.iter().map(|s| s.as_bytes().to_vec()).collect(),
            recents: self
                .recents
                .iter()
                .map(|(n, s)| pb::RecentSigner {
                    number: *n,
                    signer: s.as_bytes().to_vec(),
                })
                .collect(),
            votes: self
                .votes
                .iter()
                .map(|v| pb::CastVote {
                    signer: v.signer.as_bytes().to_vec(),
                    target: v.target.as_bytes().to_vec(),
                    authorize: v.authorize,
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Decodes a snapshot: the state, and the number and hash of its block.
    pub fn from_snapshot(bytes: &[u8]) -> Result<(Self, u64, BlockHash), SnapshotError> {
        const WHAT: &str = "SignerSnapshot";
        // Signers, recents and votes are each bounded by MAX_SIGNERS-ish counts.
        let max = 64 * 1024 + MAX_SIGNERS * MAX_SIGNERS * 72;
        let raw: pb::SignerSnapshot = decode_bounded(WHAT, bytes, max)?;
        let id = |field: &'static str, b: &[u8]| -> Result<NodeId, SnapshotError> {
            NodeId::from_public_key_bytes(&fixed(WHAT, field, b)?)
                .map_err(|_| SnapshotError::Invalid("a key is not a valid identity key"))
        };
        if raw.signers.len() > MAX_SIGNERS || raw.recents.len() > MAX_SIGNERS {
            return Err(SnapshotError::Invalid("too many signers or recents"));
        }
        let signers = raw
            .signers
            .iter()
            .map(|s| id("signers", s))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let recents = raw
            .recents
            .iter()
            .map(|r| Ok((r.number, id("recents.signer", &r.signer)?)))
            .collect::<Result<BTreeMap<_, _>, SnapshotError>>()?;
        let votes = raw
            .votes
            .iter()
            .map(|v| {
                Ok(CastVote {
                    signer: id("votes.signer", &v.signer)?,
                    target: id("votes.target", &v.target)?,
                    authorize: v.authorize,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let hash = BlockHash(fixed(WHAT, "hash", &raw.hash)?);
        Ok((
            Self {
                signers,
                recents,
                votes,
            },
            raw.number,
            hash,
        ))
    }
}

/// Why a stored snapshot could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a well-formed snapshot.
    #[error("malformed snapshot: {0}")]
    Malformed(#[from] DecodeError),
    /// Well-formed but inconsistent.
    #[error("invalid snapshot: {0}")]
    Invalid(&'static str),
}
