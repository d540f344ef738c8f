//! Node identities: an ed25519 key, named everywhere by its libp2p PeerId.
//!
//! One id names a node on the network (libp2p derives the PeerId of the same
//! key), on the chain and in the CLI. The PeerId of an ed25519 key embeds the
//! key itself, so an id can be turned back into the key that verifies it.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 secret key.
pub const SECRET_KEY_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why an identity key or id was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The bytes are not a usable ed25519 public key.
    #[error("not a valid ed25519 public key")]
    InvalidKey,
    /// The key is of small order, so signatures by it prove nothing.
    #[error("weak ed25519 public key (small order)")]
    WeakKey,
    /// The text is not a libp2p peer id.
    #[error("not a lifeline node id: {0}")]
    NotAPeerId(String),
    /// The text is a peer id, but of a key type that lifeline does not use.
    #[error("peer id is not of an ed25519 key (lifeline ids start with 12D3KooW)")]
    NotEd25519,
}

/// A signature did not verify.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("signature does not verify")]
pub struct BadSignature;

/// The public identity of a node or person: a validated ed25519 public key
/// (32 bytes, cheap to copy and compare), shown as its libp2p PeerId
/// (`12D3KooW...`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; PUBLIC_KEY_LEN]);

impl NodeId {
    /// Validates raw public key bytes: a point on the curve, not of small order.
    pub fn from_public_key_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, IdentityError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| IdentityError::InvalidKey)?;
        Self::from_verifying_key(&key)
    }

    /// Validates an ed25519 verifying key (refuses small-order keys).
    pub fn from_verifying_key(key: &VerifyingKey) -> Result<Self, IdentityError> {
        if key.is_weak() {
            return Err(IdentityError::WeakKey);
        }
        Ok(Self(key.to_bytes()))
    }

    /// The raw ed25519 public key.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The ed25519 key that verifies this identity's signatures (decompressed
    /// on each call: keep it where many signatures are checked).
    pub fn verifying_key(&self) -> Result<VerifyingKey, IdentityError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::InvalidKey)
    }

    /// The libp2p PeerId of this identity.
    pub fn peer_id(&self) -> Result<PeerId, IdentityError> {
        let public = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0)
            .map_err(|_| IdentityError::InvalidKey)?;
        Ok(libp2p_identity::PublicKey::from(public).to_peer_id())
    }

    /// The short human fingerprint, for reading out and comparing by voice.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self)
    }

    /// Checks `signature` over `domain || message` (see [`Identity::sign`]).
    /// Uses strict verification: malleable signatures are refused.
    pub fn verify(
        &self,
        domain: &[u8],
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), BadSignature> {
        let key = self.verifying_key().map_err(|_| BadSignature)?;
        verify_exact(&key, &[domain, message].concat(), signature)
    }
}

/// Checks `signature` over exactly `signed` (the caller already prefixed its
/// domain), strictly.
pub(crate) fn verify_exact(
    key: &VerifyingKey,
    signed: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), BadSignature> {
    key.verify_strict(signed, &Signature::from_bytes(signature))
        .map_err(|_| BadSignature)
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer_id() {
            Ok(peer) => fmt::Display::fmt(&peer, f),
            // Unreachable: construction validated the key.
            Err(_) => f.write_str("<invalid node id>"),
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let peer =
            PeerId::from_str(s.trim()).map_err(|e| IdentityError::NotAPeerId(e.to_string()))?;
        // An ed25519 PeerId is an identity multihash (code 0) of the protobuf
        // encoded public key; other key types are hashed and cannot be used.
        let multihash = peer.as_ref();
        if multihash.code() != 0 {
            return Err(IdentityError::NotEd25519);
        }
        let public = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|_| IdentityError::NotEd25519)?
            .try_into_ed25519()
            .map_err(|_| IdentityError::NotEd25519)?;
        Self::from_public_key_bytes(&public.to_bytes())
    }
}

/// Alphabet of Crockford's base32: no I, L, O or U, so nothing is misheard or
/// misread as a digit.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A short, speakable digest of a [`NodeId`]: 80 bits as four groups of four
/// Crockford base32 characters (`7K3Q-M2XD-9FHA-KQ2P`). Two people compare
/// fingerprints over a radio to be sure they hold each other's real key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 10]);

impl Fingerprint {
    fn of(id: &NodeId) -> Self {
        let digest = blake3::derive_key("lifeline 2026-11 identity fingerprint v1", id.as_bytes());
        let mut bytes = [0u8; 10];
        bytes.copy_from_slice(&digest[..10]);
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self
            .0
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
        for i in 0..16 {
            if i > 0 && i % 4 == 0 {
                f.write_str("-")?;
            }
            let shift = 75 - 5 * i;
            let index = usize::try_from((bits >> shift) & 0x1f).unwrap_or(0);
            write!(f, "{}", char::from(CROCKFORD[index]))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A node's secret identity: the ed25519 signing key. `Debug` shows only the id.
pub struct Identity {
    signing: SigningKey,
    id: NodeId,
}

impl Identity {
    /// Makes a new identity from a cryptographically secure RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        // A freshly generated key is never weak; loop rather than unwrap so
        // that even an impossible failure cannot panic.
        loop {
            let signing = SigningKey::generate(rng);
            if let Ok(identity) = Self::from_signing_key(signing) {
                return identity;
            }
        }
    }

    /// Restores an identity from its 32-byte secret.
    pub fn from_secret_bytes(secret: &[u8; SECRET_KEY_LEN]) -> Result<Self, IdentityError> {
        Self::from_signing_key(SigningKey::from_bytes(secret))
    }

    fn from_signing_key(signing: SigningKey) -> Result<Self, IdentityError> {
        let id = NodeId::from_verifying_key(&signing.verifying_key())?;
        Ok(Self { signing, id })
    }

    /// The 32-byte secret, wiped from memory when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// This identity's public id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Signs `domain || message`. Every kind of signed object has its own
    /// domain string, so a signature made for one can never pass for another.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let signed = [domain, message].concat();
        self.sign_exact(&signed)
    }

    /// Signs exactly `signed` (the caller already prefixed its domain).
    pub(crate) fn sign_exact(&self, signed: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(signed).to_bytes()
    }

    /// The same key as a libp2p keypair, so the node's PeerId is this identity's id.
    pub fn to_libp2p_keypair(&self) -> Result<libp2p_identity::Keypair, IdentityError> {
        // libp2p copies and zeroizes the bytes it is given.
        let mut secret = self.secret_bytes();
        libp2p_identity::Keypair::ed25519_from_bytes(secret.as_mut())
            .map_err(|_| IdentityError::InvalidKey)
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            signing: self.signing.clone(),
            id: self.id,
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    #[test]
    fn id_is_the_libp2p_peer_id_of_the_same_key() {
        let identity = Identity::generate(&mut test_rng(1));
        let from_libp2p = identity.to_libp2p_keypair().unwrap().public().to_peer_id();
        assert_eq!(identity.id().peer_id().unwrap(), from_libp2p);
        assert_eq!(identity.id().to_string(), from_libp2p.to_string());
        assert!(identity.id().to_string().starts_with("12D3KooW"));
    }

    #[test]
    fn id_round_trips_through_text() {
        let identity = Identity::generate(&mut test_rng(2));
        let text = identity.id().to_string();
        let parsed: NodeId = text.parse().unwrap();
        assert_eq!(&parsed, identity.id());
        assert_eq!(parsed.as_bytes(), identity.id().as_bytes());
    }

    #[test]
    fn non_ed25519_and_garbage_ids_are_refused() {
        // A PeerId of a hashed (sha256) key: valid PeerId, not usable here.
        let rsa_like = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
        assert_eq!(rsa_like.parse::<NodeId>(), Err(IdentityError::NotEd25519));
        assert!(matches!(
            "not-an-id".parse::<NodeId>(),
            Err(IdentityError::NotAPeerId(_))
        ));
        assert!(matches!(
            "".parse::<NodeId>(),
            Err(IdentityError::NotAPeerId(_))
        ));
    }

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point, encoded: small order.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            NodeId::from_public_key_bytes(&identity_point),
            Err(IdentityError::WeakKey)
        );
    }

    #[test]
    fn secret_round_trip_gives_the_same_id() {
        let identity = Identity::generate(&mut test_rng(3));
        let restored = Identity::from_secret_bytes(&identity.secret_bytes()).unwrap();
        assert_eq!(restored.id(), identity.id());
    }

    #[test]
    fn signatures_are_domain_separated() {
        let identity = Identity::generate(&mut test_rng(4));
        let sig = identity.sign(b"domain-a/", b"hello");
        assert_eq!(identity.id().verify(b"domain-a/", b"hello", &sig), Ok(()));
        assert_eq!(
            identity.id().verify(b"domain-b/", b"hello", &sig),
            Err(BadSignature)
        );
        assert_eq!(
            identity.id().verify(b"domain-a/", b"hellp", &sig),
            Err(BadSignature)
        );
    }

    #[test]
    fn fingerprint_is_four_groups_of_unambiguous_characters() {
        let identity = Identity::generate(&mut test_rng(5));
        let fp = identity.id().fingerprint().to_string();
        assert_eq!(fp.len(), 19);
        let groups: Vec<&str> = fp.split('-').collect();
        assert_eq!(groups.len(), 4);
        for group in groups {
            assert_eq!(group.len(), 4);
            assert!(group.bytes().all(|c| CROCKFORD.contains(&c)), "{fp}");
        }
        let other = Identity::generate(&mut test_rng(6));
        assert_ne!(fp, other.id().fingerprint().to_string());
    }

    #[test]
    fn fingerprint_uses_every_bit() {
        // All-ones must give the last symbol everywhere, all-zeros the first.
        assert_eq!(Fingerprint([0xff; 10]).to_string(), "ZZZZ-ZZZZ-ZZZZ-ZZZZ");
        assert_eq!(Fingerprint([0; 10]).to_string(), "0000-0000-0000-0000");
        let mut low = [0u8; 10];
        low[9] = 1;
        assert_eq!(Fingerprint(low).to_string(), "0000-0000-0000-0001");
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let identity = Identity::generate(&mut test_rng(7));
        let debug = format!("{identity:?}");
        let secret_hex: String = identity
            .secret_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!debug.contains(&secret_hex[..16]));
        assert!(debug.contains(&identity.id().to_string()));
    }
}
