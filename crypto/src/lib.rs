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
//!
//! ```
//! use lifeline_crypto::envelope::{self, OpenError, OpenPolicy, ReplayGuard};
//! use lifeline_crypto::{Identity, PrekeyRing, PublicPrekey, Timestamp};
//!
//! let mut rng = rand::rng();
//! let now = Timestamp::from_unix_millis(1_763_700_000_000);
//! let alice = Identity::generate(&mut rng);
//! let bob = Identity::generate(&mut rng);
//! let bob_prekeys = PrekeyRing::new(&bob, now, &mut rng);
//!
//! // Bob publishes his signed prekey; Alice checks Bob's signature on it.
//! let card = PublicPrekey::from_bytes(bob_prekeys.current().to_bytes())?;
//! let sealed = envelope::seal(&alice, &card, b"water at the school", now, &mut rng)?;
//!
//! let mut seen = ReplayGuard::default();
//! let policy = OpenPolicy::default();
//! let opened = envelope::open(&sealed.bytes, &bob, &bob_prekeys, &mut seen, now, &policy)?;
//! assert_eq!(opened.content, b"water at the school");
//! assert_eq!(&opened.sender, alice.id());
//!
//! // The same envelope a second time is a replay.
//! let again = envelope::open(&sealed.bytes, &bob, &bob_prekeys, &mut seen, now, &policy);
//! assert_eq!(again, Err(OpenError::Replayed(sealed.message_id)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod armor;
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
