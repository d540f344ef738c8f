//! lifeline's emergency Proof-of-Authority chain, as a sans-IO state machine.
//!
//! Authorities (emergency agencies) are the only block signers. Their set
//! changes by votes riding in block headers, under the rules of EIP-225
//! (Clique): see [`signers`]. The chain takes time as an argument and storage
//! through [`ChainStore`]; it never reads a clock, opens a socket or spawns a
//! task, so the daemon and the simulator drive the same code.

pub mod block;
pub mod chain;
pub mod conformance;
pub mod signers;
pub mod store;
pub mod wire;

pub use block::{BlockHash, Header, SealedHeader, Vote};
pub use chain::{Chain, ChainConfig, ChainError, Genesis, ImportError, Validation};
pub use signers::{SignerChange, SignerError, SignerState};
pub use store::{ChainStore, MemoryChainStore};
