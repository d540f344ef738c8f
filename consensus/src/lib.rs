//! lifeline's emergency Proof-of-Authority chain, as a sans-IO state machine.
//!
//! Authorities (emergency agencies) are the only block signers. Their set
//! changes by votes riding in block headers, under the rules of EIP-225
//! (Clique): see [`signers`]. The chain takes time as an argument and storage
//! through [`ChainStore`]; it never reads a clock, opens a socket or spawns a
//! task, so the daemon and the simulator drive the same code.

pub mod alert;
pub mod block;
pub mod cap;
pub mod chain;
pub mod conformance;
pub mod finality;
pub mod genesis;
pub mod pool;
pub mod signers;
pub mod state;
pub mod store;
pub mod sync;
pub mod tx;
pub mod wire;

pub use block::{BlockHash, Header, SealedBlock, SealedHeader, Vote};
pub use chain::{Chain, ChainConfig, ChainError, Genesis, Head, ImportError, Imported, Validation};
pub use finality::{BlockRef, FinalityVote, VoteError, VoteRecord};
pub use pool::{MAX_PER_SENDER, PoolRefused, TxPool};
pub use signers::{SignerChange, SignerError, SignerState};
pub use state::ChainState;
pub use store::{ChainStore, MemoryChainStore};
pub use sync::KeyInUse;
pub use tx::{Action, Transaction};
