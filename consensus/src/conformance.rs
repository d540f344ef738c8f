//! Vote-replay conformance: runs the cases of `shared/conformance/VOTE-REPLAY.md`
//! through the real header sealing, validation, signer state and storage code.

use std::collections::HashMap;

use lifeline_crypto::{Identity, IdentityError, NodeId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::block::{Header, SealedBlock, Vote};
use crate::chain::{Chain, ChainConfig, ChainError, Genesis, ImportError, Validation};
use crate::signers::SignerError;
use crate::state::ChainState;
use crate::store::MemoryChainStore;
use crate::tx::transactions_root;

/// One case of a vote-replay file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case is about.
    pub name: String,
    /// Blocks between checkpoints; `None` for the chain's default.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Genesis signers, by name.
    pub signers: Vec<String>,
    /// Blocks 1, 2, ... in order.
    pub blocks: Vec<BlockSpec>,
    /// The expected outcome, for `--check`.
    #[serde(default)]
    pub expect: Option<Outcome>,
}

/// One block of a case.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    /// Who seals it.
    pub signer: String,
    /// Its vote, if any.
    #[serde(default)]
    pub vote: Option<VoteSpec>,
    /// The signer list it carries (checkpoint blocks).
    #[serde(default)]
    pub checkpoint: Option<Vec<String>>,
    /// Reopen the chain from storage before importing this block.
    #[serde(default)]
    pub reload: bool,
}

/// A vote of a case.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VoteSpec {
    /// Who is voted on.
    pub target: String,
    /// Add (`true`) or drop.
    pub authorize: bool,
}

/// The outcome of a case.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged, deny_unknown_fields)]
pub enum Outcome {
    /// The signers after the last block, sorted by name.
    Signers {
        /// Their names.
        signers: Vec<String>,
    },
    /// The first refused block's reason.
    Error {
        /// `unauthorized_signer`, `recently_signed`, `invalid_vote` or
        /// `invalid_checkpoint` (or another name for failures that replays do
        /// not expect).
        error: String,
    },
}

/// The secret key a name stands for.
pub fn identity_of(name: &str) -> Result<Identity, IdentityError> {
    Identity::from_secret_bytes(&blake3::derive_key(
        "lifeline conformance signer v1",
        name.as_bytes(),
    ))
}

/// The genesis time of [`genesis_of`] (2025-11-21, in milliseconds).
pub const FIXTURE_GENESIS_MS: u64 = 1_763_700_000_000;

/// A genesis whose authorities are the identities these names stand for (see
/// [`identity_of`]), at [`FIXTURE_GENESIS_MS`], with `config`: the one chain
/// fixture that tests, benchmarks and examples share.
pub fn genesis_of(names: &[&str], config: ChainConfig) -> Result<Genesis, IdentityError> {
    Ok(Genesis {
        config,
        timestamp: Timestamp::from_unix_millis(FIXTURE_GENESIS_MS),
        signers: names
            .iter()
            .map(|n| identity_of(n).map(|i| *i.id()))
            .collect::<Result<_, _>>()?,
    })
}

/// The conformance name of an import failure.
pub fn error_name(error: &ImportError) -> &'static str {
    match error {
        ImportError::Signer(SignerError::Unauthorized(_)) => "unauthorized_signer",
        ImportError::Signer(SignerError::RecentlySigned { .. }) => "recently_signed",
        ImportError::InvalidVote(_) => "invalid_vote",
        ImportError::InvalidCheckpoint(_) => "invalid_checkpoint",
        ImportError::Header(_) | ImportError::Block(_) => "invalid_block",
        ImportError::UnknownParent { .. } => "unknown_parent",
        ImportError::BelowFinality { .. } => "below_finality",
        ImportError::BadNumber { .. } => "bad_number",
        ImportError::TooEarly => "too_early",
        ImportError::EmptyBlock => "empty_block",
        ImportError::FromTheFuture(_) => "from_the_future",
        ImportError::WrongWeight { .. } => "wrong_weight",
        ImportError::Transaction(_) => "invalid_transaction",
        ImportError::StateRoot => "bad_state_root",
        ImportError::TooManySiblings { .. } => "too_many_siblings",
    }
}

struct Names {
    identities: HashMap<String, Identity>,
    names: HashMap<NodeId, String>,
}

impl Names {
    fn new() -> Self {
        Self {
            identities: HashMap::new(),
            names: HashMap::new(),
        }
    }

    fn identity(&mut self, name: &str) -> Result<&Identity, String> {
        if !self.identities.contains_key(name) {
            let identity = identity_of(name).map_err(|e| format!("name {name:?}: {e}"))?;
            self.names.insert(*identity.id(), name.to_string());
            self.identities.insert(name.to_string(), identity);
        }
        self.identities
            .get(name)
            .ok_or_else(|| format!("name {name:?} vanished"))
    }

    fn id(&mut self, name: &str) -> Result<NodeId, String> {
        Ok(*self.identity(name)?.id())
    }

    fn name(&self, id: &NodeId) -> String {
        self.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

/// Runs one case and reports its outcome.
pub fn run(case: &Case) -> Outcome {
    match try_run(case) {
        Ok(outcome) => outcome,
        Err(error) => Outcome::Error { error },
    }
}

fn try_run(case: &Case) -> Result<Outcome, String> {
    let mut names = Names::new();
    let config = ChainConfig {
        epoch: case.epoch.unwrap_or(ChainConfig::default().epoch).max(1),
        ..ChainConfig::default()
    };
    let genesis = Genesis {
        config,
        timestamp: Timestamp::from_unix_millis(1_700_000_000_000),
        signers: case
            .signers
            .iter()
            .map(|n| names.id(n))
            .collect::<Result<_, _>>()?,
    };
    let mut chain =
        Chain::open(MemoryChainStore::new(), &genesis).map_err(|e| format!("genesis: {e}"))?;
    for spec in &case.blocks {
        if spec.reload {
            chain =
                Chain::open(chain.into_store(), &genesis).map_err(|e| format!("reload: {e}"))?;
        }
        let head = chain.head();
        let number = head.number + 1;
        let signer = names.id(&spec.signer)?;
        let vote = match &spec.vote {
            Some(v) => Some(Vote {
                target: names.id(&v.target)?,
                authorize: v.authorize,
            }),
            None => None,
        };
        let checkpoint = match &spec.checkpoint {
            Some(list) => {
                let mut ids = list
                    .iter()
                    .map(|n| names.id(n))
                    .collect::<Result<Vec<_>, _>>()?;
                ids.sort();
                Some(ids)
            }
            None => None,
        };
        let in_turn = chain.signer_state().in_turn(number) == Some(signer);
        let mut header = Header {
            parent_hash: head.hash,
            number,
            timestamp: head.timestamp.saturating_add(config.period),
            signer,
            weight: if in_turn { 2 } else { 1 },
            vote,
            checkpoint,
            transactions_root: transactions_root(&[]),
            state_root: [0; 32],
        };
        header.state_root = expected_state_root(chain.state(), &header, config.epoch);
        let sealed = header
            .seal(names.identity(&spec.signer)?)
            .map_err(|e| format!("seal: {e}"))?;
        let block = SealedBlock::new(sealed, Vec::new()).map_err(|e| format!("block: {e}"))?;
        match chain.import(&block, Validation::IgnoreTiming) {
            Ok(_) => {}
            Err(ChainError::Import(e)) => {
                return Ok(Outcome::Error {
                    error: error_name(&e).to_string(),
                });
            }
            Err(e) => return Err(format!("storage: {e}")),
        }
    }
    let mut signers: Vec<String> = chain
        .signer_state()
        .signers()
        .iter()
        .map(|id| names.name(id))
        .collect();
    signers.sort();
    Ok(Outcome::Signers { signers })
}

/// The state root a block should carry: that of the state it leads to. A block
/// whose signer may not seal gets a zero root; the chain refuses it for its
/// signer before it looks at the root.
fn expected_state_root(state: &ChainState, header: &Header, epoch: u64) -> [u8; 32] {
    let mut next = state.clone();
    let checkpoint = header.number.is_multiple_of(epoch);
    if next
        .signers_mut()
        .apply(
            header.number,
            &header.signer,
            header.vote.as_ref(),
            checkpoint,
        )
        .is_err()
    {
        return [0; 32];
    }
    match next.apply_block(header, &[]) {
        Ok(()) => next.root(),
        Err(_) => [0; 32],
    }
}

/// One line of `lifeline chain replay` output.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    /// The case's name.
    pub name: String,
    /// Its outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
}
