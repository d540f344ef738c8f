//! lifeline's cryptography: node identities, signed prekeys, sealed end-to-end
//! envelopes and the encrypted keystore.
//!
//! - An identity is an ed25519 key; its id is the libp2p PeerId of that key
//!   ([`NodeId`]), with a short [`Fingerprint`] for reading out by voice.
//! - Each identity publishes a signed X25519 prekey ([`PublicPrekey`]) that
//!   rotates; old prekey secrets are deleted after a grace period
//!   ([`PrekeyRing`]), so later theft of a device does not open old traffic.
//! - [`envelope::seal`] and [`envelope::open`] protect a message end to end,
//!   hiding the sender from the relays that carry it.
//! - [`keystore`] keeps the secrets in one passphrase-encrypted file.
//!
//! Nothing here reads a clock or the OS's randomness: time and a
//! cryptographic RNG come from the caller, so the simulator runs this code
//! deterministically. Every decoder bounds its input and returns typed errors.

pub mod envelope;
pub mod identity;
pub mod keystore;
pub mod prekey;
mod time;
pub mod wire;

pub use envelope::{
    MessageId, OpenError, OpenPolicy, OpenedMessage, ReplayGuard, SealError, SealedEnvelope,
};
pub use identity::{Fingerprint, Identity, IdentityError, NodeId};
pub use keystore::{KdfParams, KeyBundle, Keystore, KeystoreError};
pub use prekey::{PrekeyPolicy, PrekeyRing, PublicPrekey};
pub use time::Timestamp;

/// A seeded RNG for tests.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(seed)
}
