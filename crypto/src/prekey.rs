//! Signed X25519 prekeys and the ring that rotates them.
//!
//! Senders seal envelopes to a recipient's prekey, not to its identity key. A
//! prekey is replaced on a schedule (default every 24 hours) and the private half
//! of a replaced prekey is deleted after a grace period (default 7 days), so a
//! device captured later cannot open envelopes that relays stored earlier.

use std::time::Duration;

use prost::Message;
use rand_core::CryptoRng;
use thiserror::Error;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use crate::identity::{self, Identity, IdentityError, NodeId, SIGNATURE_LEN};
use crate::time::Timestamp;
use crate::wire::{self, DecodeError, pb};
use ed25519_dalek::VerifyingKey;

/// Domain string of prekey signatures.
const PREKEY_DOMAIN: &[u8] = b"lifeline/prekey/v1";
/// Largest encoded [`PublicPrekey`] (a few fixed fields; generous).
pub const MAX_SIGNED_PREKEY_LEN: usize = 256;
/// Most prekeys a ring keeps (with or without their secret), so the keystore stays bounded.
pub const MAX_RING_LEN: usize = 64;

/// When prekeys rotate and how long replaced ones stay usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrekeyPolicy {
    /// How long a prekey is the current one before a new one replaces it.
    pub rotate_every: Duration,
    /// How long a replaced prekey can still open envelopes; then its secret is deleted.
    pub grace: Duration,
}

impl Default for PrekeyPolicy {
    fn default() -> Self {
        Self {
            rotate_every: Duration::from_secs(24 * 60 * 60),
            grace: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

/// Why a prekey could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrekeyError {
    /// The bytes are not a well-formed signed prekey.
    #[error("malformed prekey: {0}")]
    Malformed(#[from] DecodeError),
    /// The owner's identity key is not valid.
    #[error("prekey owner: {0}")]
    Owner(#[from] IdentityError),
    /// The owner's signature over the prekey does not verify.
    #[error("prekey signature does not verify")]
    BadSignature,
}

/// A prekey's public half with its owner's verified signature: all a sender
/// needs to seal to the owner. Keeps the exact bytes it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicPrekey {
    owner: NodeId,
    key: [u8; 32],
    created_at: Timestamp,
    encoded: Vec<u8>,
}

impl PublicPrekey {
    pub(crate) fn sign(owner: &Identity, key: &X25519Public, created_at: Timestamp) -> Self {
        let body = pb::PrekeyBody {
            identity: owner.id().as_bytes().to_vec(),
            prekey: key.as_bytes().to_vec(),
            created_at_ms: created_at.as_unix_millis(),
        }
        .encode_to_vec();
        let signature = owner.sign(PREKEY_DOMAIN, &body);
        let encoded = pb::SignedPrekey {
            body,
            signature: signature.to_vec(),
        }
        .encode_to_vec();
        Self {
            owner: *owner.id(),
            key: key.to_bytes(),
            created_at,
            encoded,
        }
    }

    /// Decodes a signed prekey and verifies its owner's signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PrekeyError> {
        const WHAT: &str = "SignedPrekey";
        let signed: pb::SignedPrekey = wire::decode_bounded(WHAT, bytes, MAX_SIGNED_PREKEY_LEN)?;
        let signature: [u8; SIGNATURE_LEN] = wire::fixed(WHAT, "signature", &signed.signature)?;
        let body: pb::PrekeyBody =
            wire::decode_bounded("PrekeyBody", &signed.body, MAX_SIGNED_PREKEY_LEN)?;
        // Decompress the owner's key once: it is validated and used to verify.
        let owner_key =
            VerifyingKey::from_bytes(&wire::fixed("PrekeyBody", "identity", &body.identity)?)
                .map_err(|_| PrekeyError::Owner(IdentityError::InvalidKey))?;
        let owner = NodeId::from_verifying_key(&owner_key)?;
        let key = wire::fixed("PrekeyBody", "prekey", &body.prekey)?;
        let signed_bytes = [PREKEY_DOMAIN, signed.body.as_slice()].concat();
        identity::verify_exact(&owner_key, &signed_bytes, &signature)
            .map_err(|_| PrekeyError::BadSignature)?;
        Ok(Self {
            owner,
            key,
            created_at: Timestamp::from_unix_millis(body.created_at_ms),
            encoded: bytes.to_vec(),
        })
    }

    /// The exact signed bytes, as they travel.
    pub fn to_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Whose prekey this is.
    pub fn owner(&self) -> &NodeId {
        &self.owner
    }

    /// The X25519 public key.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// When its owner made it.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }
}

/// What the ring knows of one of its prekeys.
pub struct RingEntry {
    public: PublicPrekey,
    secret: Option<StaticSecret>,
    superseded_at: Option<Timestamp>,
}

impl RingEntry {
    /// The signed public half.
    pub fn public(&self) -> &PublicPrekey {
        &self.public
    }

    /// Whether the private half is still held (envelopes to it can be opened).
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// When a newer prekey replaced it; `None` for the current one.
    pub fn superseded_at(&self) -> Option<Timestamp> {
        self.superseded_at
    }

    /// Whether, under `policy`, this prekey may still open envelopes at `now`.
    fn usable_at(&self, now: Timestamp, policy: &PrekeyPolicy) -> bool {
        self.secret.is_some()
            && self
                .superseded_at
                .is_none_or(|at| now < at.saturating_add(policy.grace))
    }
}

/// Why the ring could not provide the secret for a prekey.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PrekeyLookupError {
    /// The ring never held this prekey (or forgot it long ago).
    #[error("unknown prekey")]
    Unknown,
    /// The prekey was replaced and its grace period is over (its secret is or
    /// will be deleted).
    #[error("prekey expired: it was replaced and its grace period is over")]
    Expired,
}

/// Why stored prekeys could not be restored.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RingError {
    /// A prekey in the ring belongs to another identity.
    #[error("a stored prekey belongs to another identity")]
    ForeignPrekey,
    /// A stored secret does not match its public key.
    #[error("a stored prekey secret does not match its public key")]
    SecretMismatch,
    /// The ring is empty, too long, or its newest prekey is not usable.
    #[error("the prekey ring is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// A stored prekey could not be decoded.
    #[error(transparent)]
    Prekey(#[from] PrekeyError),
}

/// One identity's prekeys: the current one and older ones still remembered.
///
/// The current prekey always holds its secret and is never superseded; the ring
/// holds at most [`MAX_RING_LEN`] prekeys in all.
pub struct PrekeyRing {
    /// Superseded prekeys, oldest first.
    older: Vec<RingEntry>,
    current: RingEntry,
}

impl PrekeyRing {
    /// A ring with one fresh prekey.
    pub fn new<R: CryptoRng + ?Sized>(owner: &Identity, now: Timestamp, rng: &mut R) -> Self {
        Self {
            older: Vec::new(),
            current: new_entry(owner, now, rng),
        }
    }

    /// The prekey senders should use now.
    pub fn current(&self) -> &PublicPrekey {
        &self.current.public
    }

    /// Every prekey held, oldest first; the last is the current one.
    pub fn entries(&self) -> impl Iterator<Item = &RingEntry> {
        self.older.iter().chain(std::iter::once(&self.current))
    }

    /// Whether the current prekey is older than `policy.rotate_every`.
    pub fn rotation_due(&self, now: Timestamp, policy: &PrekeyPolicy) -> bool {
        now.saturating_duration_since(self.current().created_at()) >= policy.rotate_every
    }

    /// Makes a new current prekey; the old one is superseded now and stays
    /// usable for the grace period. Drops what [`Self::prune`] would drop.
    pub fn rotate<R: CryptoRng + ?Sized>(
        &mut self,
        owner: &Identity,
        now: Timestamp,
        policy: &PrekeyPolicy,
        rng: &mut R,
    ) -> &PublicPrekey {
        let mut old = std::mem::replace(&mut self.current, new_entry(owner, now, rng));
        old.superseded_at = Some(now);
        self.older.push(old);
        self.prune(now, policy);
        self.current()
    }

    /// Deletes the secrets of prekeys whose grace period is over and keeps the
    /// ring within [`MAX_RING_LEN`] (forgetting the oldest first). Returns the
    /// public keys whose secrets were deleted.
    pub fn prune(&mut self, now: Timestamp, policy: &PrekeyPolicy) -> Vec<[u8; 32]> {
        let mut deleted = Vec::new();
        for entry in &mut self.older {
            if entry.secret.is_some() && !entry.usable_at(now, policy) {
                entry.secret = None; // StaticSecret zeroizes on drop
                deleted.push(entry.public.key);
            }
        }
        let excess = (self.older.len() + 1).saturating_sub(MAX_RING_LEN);
        for forgotten in self.older.drain(..excess) {
            if forgotten.secret.is_some() {
                deleted.push(forgotten.public.key);
            }
        }
        deleted
    }

    /// The secret of the prekey with public key `key`, if it may be used at `now`.
    pub fn secret_for(
        &self,
        key: &[u8; 32],
        now: Timestamp,
        policy: &PrekeyPolicy,
    ) -> Result<&StaticSecret, PrekeyLookupError> {
        let entry = self
            .entries()
            .find(|e| &e.public.key == key)
            .ok_or(PrekeyLookupError::Unknown)?;
        match &entry.secret {
            Some(secret) if entry.usable_at(now, policy) => Ok(secret),
            _ => Err(PrekeyLookupError::Expired),
        }
    }

    pub(crate) fn to_stored(&self) -> Vec<pb::StoredPrekey> {
        self.entries()
            .map(|e| pb::StoredPrekey {
                signed: e.public.encoded.clone(),
                secret: e
                    .secret
                    .as_ref()
                    .map(|s| s.to_bytes().to_vec())
                    .unwrap_or_default(),
                superseded_at_ms: e.superseded_at.map_or(0, Timestamp::as_unix_millis),
            })
            .collect()
    }

    pub(crate) fn from_stored(
        owner: &NodeId,
        stored: &[pb::StoredPrekey],
    ) -> Result<Self, RingError> {
        if stored.len() > MAX_RING_LEN {
            return Err(RingError::Inconsistent("it holds more than 64 prekeys"));
        }
        let mut older = Vec::with_capacity(stored.len());
        for s in stored {
            older.push(restore_entry(owner, s)?);
        }
        let current = older
            .pop()
            .ok_or(RingError::Inconsistent("it holds no prekey"))?;
        if current.secret.is_none() || current.superseded_at.is_some() {
            return Err(RingError::Inconsistent(
                "the newest prekey must be current and hold its secret",
            ));
        }
        if older.iter().any(|e| e.superseded_at.is_none()) {
            return Err(RingError::Inconsistent(
                "only the newest prekey may be current",
            ));
        }
        Ok(Self { older, current })
    }
}

fn restore_entry(owner: &NodeId, stored: &pb::StoredPrekey) -> Result<RingEntry, RingError> {
    let public = PublicPrekey::from_bytes(&stored.signed)?;
    if public.owner() != owner {
        return Err(RingError::ForeignPrekey);
    }
    let secret = if stored.secret.is_empty() {
        None
    } else {
        let bytes: [u8; 32] =
            wire::fixed("StoredPrekey", "secret", &stored.secret).map_err(PrekeyError::from)?;
        let secret = StaticSecret::from(bytes);
        if X25519Public::from(&secret).as_bytes() != public.key() {
            return Err(RingError::SecretMismatch);
        }
        Some(secret)
    };
    let superseded_at = (stored.superseded_at_ms != 0)
        .then(|| Timestamp::from_unix_millis(stored.superseded_at_ms));
    Ok(RingEntry {
        public,
        secret,
        superseded_at,
    })
}

fn new_entry<R: CryptoRng + ?Sized>(owner: &Identity, now: Timestamp, rng: &mut R) -> RingEntry {
    let secret = StaticSecret::random_from_rng(rng);
    let public = PublicPrekey::sign(owner, &X25519Public::from(&secret), now);
    RingEntry {
        public,
        secret: Some(secret),
        superseded_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    const HOUR: Duration = Duration::from_secs(3600);

    fn t(hours: u64) -> Timestamp {
        Timestamp::from_unix_millis(1_700_000_000_000 + hours * 3_600_000)
    }

    #[test]
    fn signed_prekey_round_trips_and_verifies() {
        let mut rng = test_rng(10);
        let owner = Identity::generate(&mut rng);
        let ring = PrekeyRing::new(&owner, t(0), &mut rng);
        let decoded = PublicPrekey::from_bytes(ring.current().to_bytes()).unwrap();
        assert_eq!(&decoded, ring.current());
        assert_eq!(decoded.owner(), owner.id());
        assert_eq!(decoded.created_at(), t(0));
    }

    #[test]
    fn a_prekey_signed_by_someone_else_is_refused() {
        let mut rng = test_rng(11);
        let owner = Identity::generate(&mut rng);
        let forger = Identity::generate(&mut rng);
        let ring = PrekeyRing::new(&owner, t(0), &mut rng);
        let signed = pb::SignedPrekey::decode(ring.current().to_bytes()).unwrap();
        let forged = pb::SignedPrekey {
            signature: forger.sign(PREKEY_DOMAIN, &signed.body).to_vec(),
            body: signed.body,
        }
        .encode_to_vec();
        assert_eq!(
            PublicPrekey::from_bytes(&forged),
            Err(PrekeyError::BadSignature)
        );
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period_only() {
        let mut rng = test_rng(12);
        let owner = Identity::generate(&mut rng);
        let policy = PrekeyPolicy::default();
        let mut ring = PrekeyRing::new(&owner, t(0), &mut rng);
        let first = *ring.current().key();
        assert!(!ring.rotation_due(t(23), &policy));
        assert!(ring.rotation_due(t(24), &policy));

        ring.rotate(&owner, t(24), &policy, &mut rng);
        assert_ne!(ring.current().key(), &first);
        // Still usable just before the grace period ends...
        assert!(ring.secret_for(&first, t(24 + 7 * 24 - 1), &policy).is_ok());
        // ...and expired from its end on, even before prune runs.
        assert_eq!(
            ring.secret_for(&first, t(24 + 7 * 24), &policy).err(),
            Some(PrekeyLookupError::Expired)
        );
        let deleted = ring.prune(t(24 + 7 * 24), &policy);
        assert_eq!(deleted, vec![first]);
        assert!(!ring.entries().next().unwrap().has_secret());
        assert_eq!(
            ring.secret_for(&first, t(24 + 7 * 24), &policy).err(),
            Some(PrekeyLookupError::Expired)
        );
        assert_eq!(
            ring.secret_for(&[7; 32], t(0), &policy).err(),
            Some(PrekeyLookupError::Unknown)
        );
    }

    #[test]
    fn the_current_prekey_never_expires_however_old() {
        let mut rng = test_rng(13);
        let owner = Identity::generate(&mut rng);
        let policy = PrekeyPolicy::default();
        let ring = PrekeyRing::new(&owner, t(0), &mut rng);
        let key = *ring.current().key();
        // A device that was off for a month can still open what waited for it.
        assert!(ring.secret_for(&key, t(24 * 30), &policy).is_ok());
    }

    #[test]
    fn the_ring_stays_bounded_and_consistent() {
        let mut rng = test_rng(14);
        let owner = Identity::generate(&mut rng);
        let policy = PrekeyPolicy {
            rotate_every: HOUR,
            grace: HOUR * 1000,
        };
        let mut ring = PrekeyRing::new(&owner, t(0), &mut rng);
        for hour in 1..=100 {
            ring.rotate(&owner, t(hour), &policy, &mut rng);
        }
        assert_eq!(ring.entries().count(), MAX_RING_LEN);
        let restored = PrekeyRing::from_stored(owner.id(), &ring.to_stored()).unwrap();
        assert_eq!(restored.current(), ring.current());
        assert_eq!(restored.entries().count(), MAX_RING_LEN);
    }

    #[test]
    fn stored_rings_are_checked() {
        let mut rng = test_rng(15);
        let owner = Identity::generate(&mut rng);
        let other = Identity::generate(&mut rng);
        let ring = PrekeyRing::new(&owner, t(0), &mut rng);
        let mut stored = ring.to_stored();

        assert_eq!(
            PrekeyRing::from_stored(other.id(), &stored).err(),
            Some(RingError::ForeignPrekey)
        );
        assert!(matches!(
            PrekeyRing::from_stored(owner.id(), &[]),
            Err(RingError::Inconsistent(_))
        ));
        // Not byte 0: X25519 clamping ignores its low three bits.
        stored[0].secret[5] ^= 1;
        assert_eq!(
            PrekeyRing::from_stored(owner.id(), &stored).err(),
            Some(RingError::SecretMismatch)
        );
        stored[0].secret = Vec::new();
        assert!(matches!(
            PrekeyRing::from_stored(owner.id(), &stored),
            Err(RingError::Inconsistent(_))
        ));
    }
}
