//! Sealed end-to-end envelopes that untrusted relays store and forward.
//!
//! Sealing: a one-time X25519 key agrees a secret with the recipient's current
//! prekey; blake3's key derivation turns it (bound to both public keys and the
//! recipient) into a ChaCha20-Poly1305 key used for this envelope only. The
//! cleartext header (recipient, prekey, one-time key, message id) is the AEAD's
//! associated data. Inside the ciphertext travel the sender's identity, the
//! creation time and the content, signed by the sender over the header and all
//! of that, so the recipient knows who wrote it and relays do not (sealed
//! sender). See `docs/protocol.md` for the byte layout.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use prost::Message;
use rand_core::CryptoRng;
use thiserror::Error;
use x25519_dalek::{EphemeralSecret, PublicKey as X25519Public, SharedSecret};
use zeroize::Zeroizing;

use crate::identity::{self, Identity, IdentityError, NodeId, SIGNATURE_LEN};
use crate::prekey::{PrekeyLookupError, PrekeyPolicy, PrekeyRing, PublicPrekey};
use crate::time::Timestamp;
use crate::wire::{self, DecodeError, pb};
use ed25519_dalek::VerifyingKey;

/// The envelope format this crate writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;
/// Largest content one envelope carries. The router cuts envelopes into
/// fragments for the links; this bounds what one recipient must buffer.
pub const MAX_CONTENT_LEN: usize = 1 << 20;
/// Room for everything in an envelope but the content (header, sender, time,
/// signature, tag, protobuf framing), with margin.
const ENVELOPE_OVERHEAD: usize = 512;
/// Largest encoded envelope accepted.
pub const MAX_ENVELOPE_LEN: usize = MAX_CONTENT_LEN + ENVELOPE_OVERHEAD;
const MAX_HEADER_LEN: usize = 256;
const SIGN_DOMAIN: &[u8] = b"lifeline/envelope/v1";
const KDF_CONTEXT: &str = "lifeline 2026-11 envelope v1 aead key";

/// A message's 16-byte random id: what relays deduplicate on, receipts refer
/// to, and the recipient's replay guard remembers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Why a message could not be sealed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    /// The content is larger than one envelope may carry.
    #[error("message is {len} bytes, more than the {max} an envelope carries")]
    ContentTooLarge {
        /// The content's length.
        len: usize,
        /// [`MAX_CONTENT_LEN`].
        max: usize,
    },
    /// The recipient's prekey is a low-order point: sealing to it would give a
    /// key anyone can compute.
    #[error("the recipient's prekey is invalid (low order); ask them for a fresh one")]
    WeakPrekey,
}

/// Why an envelope was not opened. Each case is its own variant so that
/// callers (and the router's misbehaviour counters) can tell them apart.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OpenError {
    /// The bytes are not a well-formed envelope.
    #[error("malformed envelope: {0}")]
    Malformed(#[from] DecodeError),
    /// The envelope is of a format version this node does not know.
    #[error("envelope version {0} is not supported (this node reads version 1)")]
    UnsupportedVersion(u32),
    /// The envelope is addressed to somebody else.
    #[error("envelope is addressed to {0}, not to this identity")]
    WrongRecipient(NodeId),
    /// The envelope names a prekey this identity never had (or forgot).
    #[error("envelope uses a prekey this identity does not know")]
    UnknownPrekey,
    /// The envelope uses a prekey whose grace period is over.
    #[error("envelope uses an expired prekey; the sender needs this identity's current prekey")]
    ExpiredPrekey,
    /// The one-time key is a low-order point.
    #[error("envelope's one-time key is invalid (low order)")]
    WeakEphemeral,
    /// Decryption failed: the header or ciphertext was changed, or the
    /// envelope was not made for this prekey.
    #[error("envelope was tampered with (authentication failed)")]
    Tampered,
    /// The sender's identity key inside is invalid.
    #[error("envelope's sender key is invalid: {0}")]
    BadSender(IdentityError),
    /// The sender's signature does not verify.
    #[error("envelope's sender signature does not verify")]
    BadSignature,
    /// The envelope says it was made further in the future than clocks may drift.
    #[error("envelope was created {ahead:?} in the future, beyond the allowed clock skew")]
    FromTheFuture {
        /// How far ahead of the local clock it claims to be.
        ahead: Duration,
    },
    /// An envelope with this message id was already opened.
    #[error("message {0} was already received (replay)")]
    Replayed(MessageId),
    /// The envelope is older than anything the replay guard still remembers,
    /// so it cannot be told apart from a replay.
    #[error("message {0} is older than the replay window; it cannot be told from a replay")]
    BeyondReplayWindow(MessageId),
}

/// The cleartext header of an envelope: what a relay can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Who the envelope is for: the raw public key, not yet validated (relays
    /// route on it without decompressing a curve point). See
    /// [`EnvelopeHeader::recipient_id`].
    pub recipient: [u8; 32],
    /// The recipient's prekey it was sealed to.
    pub prekey: [u8; 32],
    /// The sender's one-time public key.
    pub ephemeral: [u8; 32],
    /// The message id.
    pub message_id: MessageId,
}

impl EnvelopeHeader {
    /// The recipient as a validated id.
    pub fn recipient_id(&self) -> Result<NodeId, IdentityError> {
        NodeId::from_public_key_bytes(&self.recipient)
    }
}

/// A decoded (not yet opened) envelope. Keeps the exact header bytes that the
/// AEAD and the sender's signature cover.
#[derive(Clone, Debug)]
pub struct Envelope {
    header: EnvelopeHeader,
    header_bytes: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl Envelope {
    /// Decodes an envelope. Checks sizes and the header; does not decrypt.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OpenError> {
        let outer: pb::Envelope = wire::decode_bounded("Envelope", bytes, MAX_ENVELOPE_LEN)?;
        const WHAT: &str = "EnvelopeHeader";
        let header: pb::EnvelopeHeader = wire::decode_bounded(WHAT, &outer.header, MAX_HEADER_LEN)?;
        if header.version != ENVELOPE_VERSION {
            return Err(OpenError::UnsupportedVersion(header.version));
        }
        Ok(Self {
            header: EnvelopeHeader {
                recipient: wire::fixed(WHAT, "recipient", &header.recipient)?,
                prekey: wire::fixed(WHAT, "prekey", &header.prekey)?,
                ephemeral: wire::fixed(WHAT, "ephemeral", &header.ephemeral)?,
                message_id: MessageId(wire::fixed(WHAT, "message_id", &header.message_id)?),
            },
            header_bytes: outer.header,
            ciphertext: outer.ciphertext,
        })
    }

    /// The cleartext header.
    pub fn header(&self) -> &EnvelopeHeader {
        &self.header
    }
}

/// A sealed envelope, ready to hand to the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedEnvelope {
    /// The message id (also inside `bytes`).
    pub message_id: MessageId,
    /// The encoded envelope.
    pub bytes: Vec<u8>,
}

/// A successfully opened envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedMessage {
    /// The message id.
    pub message_id: MessageId,
    /// Who sealed it (verified by signature).
    pub sender: NodeId,
    /// When the sender says it sealed it.
    pub created_at: Timestamp,
    /// What it says.
    pub content: Vec<u8>,
}

/// Seals `content` from `sender` to the owner of `to`.
///
/// `rng` supplies the one-time key and the message id; `now` is the creation
/// time recorded inside.
pub fn seal<R: CryptoRng + ?Sized>(
    sender: &Identity,
    to: &PublicPrekey,
    content: &[u8],
    now: Timestamp,
    rng: &mut R,
) -> Result<SealedEnvelope, SealError> {
    if content.len() > MAX_CONTENT_LEN {
        return Err(SealError::ContentTooLarge {
            len: content.len(),
            max: MAX_CONTENT_LEN,
        });
    }
    let ephemeral = EphemeralSecret::random_from_rng(rng);
    let ephemeral_public = X25519Public::from(&ephemeral);
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let message_id = MessageId(id);

    let shared = ephemeral.diffie_hellman(&X25519Public::from(*to.key()));
    if !shared.was_contributory() {
        return Err(SealError::WeakPrekey);
    }
    let key = envelope_key(&shared, ephemeral_public.as_bytes(), to.key(), to.owner());

    let header = pb::EnvelopeHeader {
        version: ENVELOPE_VERSION,
        recipient: to.owner().as_bytes().to_vec(),
        prekey: to.key().to_vec(),
        ephemeral: ephemeral_public.as_bytes().to_vec(),
        message_id: id.to_vec(),
    }
    .encode_to_vec();
    let body = pb::SealedBody {
        sender: sender.id().as_bytes().to_vec(),
        created_at_ms: now.as_unix_millis(),
        content: content.to_vec(),
    }
    .encode_to_vec();
    let signature = sender.sign_exact(&transcript(&header, &body));
    let plaintext = Zeroizing::new(
        pb::SealedContent {
            body,
            signature: signature.to_vec(),
        }
        .encode_to_vec(),
    );
    let ciphertext = ChaCha20Poly1305::new(&key)
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: &plaintext,
                aad: &header,
            },
        )
        // Encryption fails only for inputs beyond 256 GiB; content is bounded far below.
        .map_err(|_| SealError::ContentTooLarge {
            len: content.len(),
            max: MAX_CONTENT_LEN,
        })?;
    let bytes = pb::Envelope { header, ciphertext }.encode_to_vec();
    Ok(SealedEnvelope { message_id, bytes })
}

/// What an opener checks envelopes against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenPolicy {
    /// Prekey rotation and grace.
    pub prekeys: PrekeyPolicy,
    /// How far in the future an envelope's creation time may be. Clocks in a
    /// disaster area drift (no network time), so this is generous.
    pub max_clock_skew: Duration,
}

impl Default for OpenPolicy {
    fn default() -> Self {
        Self {
            prekeys: PrekeyPolicy::default(),
            max_clock_skew: Duration::from_secs(10 * 60),
        }
    }
}

/// Opens envelope `bytes` addressed to `identity`, checking everything: size
/// and format, recipient, prekey, authenticity of header and ciphertext, the
/// sender's signature, the creation time, and replays. Records the message id
/// in `replay` only when every check passed.
pub fn open(
    bytes: &[u8],
    identity: &Identity,
    prekeys: &PrekeyRing,
    replay: &mut ReplayGuard,
    now: Timestamp,
    policy: &OpenPolicy,
) -> Result<OpenedMessage, OpenError> {
    let envelope = Envelope::from_bytes(bytes)?;
    let header = envelope.header();
    if &header.recipient != identity.id().as_bytes() {
        let recipient = header
            .recipient_id()
            .map_err(|_| DecodeError::InvalidField {
                what: "EnvelopeHeader",
                field: "recipient",
                reason: "not a valid ed25519 key",
            })?;
        return Err(OpenError::WrongRecipient(recipient));
    }
    let prekey_secret = prekeys
        .secret_for(&header.prekey, now, &policy.prekeys)
        .map_err(|e| match e {
            PrekeyLookupError::Unknown => OpenError::UnknownPrekey,
            PrekeyLookupError::Expired => OpenError::ExpiredPrekey,
        })?;
    let shared = prekey_secret.diffie_hellman(&X25519Public::from(header.ephemeral));
    if !shared.was_contributory() {
        return Err(OpenError::WeakEphemeral);
    }
    let key = envelope_key(&shared, &header.ephemeral, &header.prekey, identity.id());
    let plaintext = Zeroizing::new(
        ChaCha20Poly1305::new(&key)
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: &envelope.ciphertext,
                    aad: &envelope.header_bytes,
                },
            )
            .map_err(|_| OpenError::Tampered)?,
    );
    let (body_bytes, body, signature) = decode_sealed_content(&plaintext)?;
    // Decompress the sender's key once: it is validated and used to verify.
    let sender_key = VerifyingKey::from_bytes(&wire::fixed("SealedBody", "sender", &body.sender)?)
        .map_err(|_| OpenError::BadSender(IdentityError::InvalidKey))?;
    let sender = NodeId::from_verifying_key(&sender_key).map_err(OpenError::BadSender)?;
    identity::verify_exact(
        &sender_key,
        &transcript(&envelope.header_bytes, &body_bytes),
        &signature,
    )
    .map_err(|_| OpenError::BadSignature)?;

    let created_at = Timestamp::from_unix_millis(body.created_at_ms);
    let ahead = created_at.saturating_duration_since(now);
    if ahead > policy.max_clock_skew {
        return Err(OpenError::FromTheFuture { ahead });
    }
    replay.check(header.message_id, created_at)?;
    replay.record(header.message_id, header.prekey, created_at);
    Ok(OpenedMessage {
        message_id: header.message_id,
        sender,
        created_at,
        content: body.content,
    })
}

/// Decodes the plaintext found inside an envelope's ciphertext into the exact
/// signed body bytes, the decoded body and the signature. Public so that fuzz
/// targets reach this decoder directly (normally only authentic plaintext,
/// which a hostile sender still controls, gets here).
pub fn decode_sealed_content(
    plaintext: &[u8],
) -> Result<(Vec<u8>, pb::SealedBody, [u8; SIGNATURE_LEN]), DecodeError> {
    let content: pb::SealedContent =
        wire::decode_bounded("SealedContent", plaintext, MAX_ENVELOPE_LEN)?;
    let signature = wire::fixed("SealedContent", "signature", &content.signature)?;
    let body: pb::SealedBody = wire::decode_bounded("SealedBody", &content.body, MAX_ENVELOPE_LEN)?;
    if body.content.len() > MAX_CONTENT_LEN {
        return Err(DecodeError::FieldLength {
            what: "SealedBody",
            field: "content",
            len: body.content.len(),
            expected: "at most 1 MiB",
        });
    }
    Ok((content.body, body, signature))
}

/// What the sender signs: the domain, the exact header bytes (length-prefixed,
/// so header and body cannot be re-split) and the exact body bytes.
fn transcript(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(SIGN_DOMAIN.len() + 4 + header.len() + body.len());
    signed.extend_from_slice(SIGN_DOMAIN);
    // Headers are bounded by MAX_HEADER_LEN, far below u32::MAX.
    signed.extend_from_slice(
        &u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    signed.extend_from_slice(header);
    signed.extend_from_slice(body);
    signed
}

/// The per-envelope AEAD key. Every envelope has a fresh one-time key, so every
/// envelope has a fresh AEAD key, which is why a constant nonce is safe.
fn envelope_key(
    shared: &SharedSecret,
    ephemeral: &[u8; 32],
    prekey: &[u8; 32],
    recipient: &NodeId,
) -> Key {
    let mut kdf = blake3::Hasher::new_derive_key(KDF_CONTEXT);
    kdf.update(shared.as_bytes());
    kdf.update(ephemeral);
    kdf.update(prekey);
    kdf.update(recipient.as_bytes());
    let derived = Zeroizing::new(*kdf.finalize().as_bytes());
    Key::from(*derived)
}

/// Default number of message ids a [`ReplayGuard`] remembers.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Remembers the ids of opened messages so that a replayed envelope is refused.
///
/// Bounded: an id is remembered while the prekey it was sealed to can still
/// open envelopes (call [`ReplayGuard::forget_prekeys`] with what
/// [`PrekeyRing::prune`] deleted), and at most `capacity` ids in all. When full,
/// the oldest (by creation time) is forgotten and the guard's floor rises to its
/// creation time: anything created at or before the floor is refused as
/// [`OpenError::BeyondReplayWindow`], so forgetting never lets a replay through.
///
/// The guard lives in memory. A node that must refuse replays across
/// restarts, or below the floor, keeps its own record of opened envelopes:
/// it loads them with [`ReplayGuard::remember`], and on
/// [`OpenError::BeyondReplayWindow`] looks the id up there, and opens with a
/// fresh guard if it was never opened (the daemon does, in its database).
#[derive(Clone, Debug)]
pub struct ReplayGuard {
    seen: HashMap<MessageId, ([u8; 32], Timestamp)>,
    by_age: BTreeSet<(Timestamp, MessageId)>,
    floor: Option<Timestamp>,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    /// A guard that remembers at most `capacity` ids (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_age: BTreeSet::new(),
            floor: None,
            capacity: capacity.max(1),
        }
    }

    /// How many ids it remembers now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it remembers nothing.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn check(&self, id: MessageId, created_at: Timestamp) -> Result<(), OpenError> {
        if self.seen.contains_key(&id) {
            return Err(OpenError::Replayed(id));
        }
        if self.floor.is_some_and(|floor| created_at <= floor) {
            return Err(OpenError::BeyondReplayWindow(id));
        }
        Ok(())
    }

    fn record(&mut self, id: MessageId, prekey: [u8; 32], created_at: Timestamp) {
        while self.seen.len() >= self.capacity {
            let Some((oldest_at, oldest_id)) = self.by_age.pop_first() else {
                break;
            };
            self.seen.remove(&oldest_id);
            self.floor = Some(self.floor.map_or(oldest_at, |f| f.max(oldest_at)));
        }
        self.seen.insert(id, (prekey, created_at));
        self.by_age.insert((created_at, id));
    }

    /// Remembers an envelope opened before (one a node recorded itself),
    /// as a successful [`open`] does.
    pub fn remember(&mut self, id: MessageId, prekey: [u8; 32], created_at: Timestamp) {
        if !self.seen.contains_key(&id) {
            self.record(id, prekey, created_at);
        }
    }

    /// Forgets envelope `id`, opened but not kept (the caller could not
    /// record it): a copy sent again opens again.
    pub fn forget(&mut self, id: MessageId) {
        if let Some((_, created_at)) = self.seen.remove(&id) {
            self.by_age.remove(&(created_at, id));
        }
    }

    /// Forgets the ids of messages sealed to these prekeys: their secrets are
    /// gone, so those envelopes can no longer be opened anyway.
    pub fn forget_prekeys(&mut self, deleted: &[[u8; 32]]) {
        let by_age = &mut self.by_age;
        self.seen.retain(|id, (prekey, created_at)| {
            let keep = !deleted.contains(prekey);
            if !keep {
                by_age.remove(&(*created_at, *id));
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> Timestamp {
        Timestamp::from_unix_millis(1_763_700_000_000)
    }

    struct Party {
        identity: Identity,
        ring: PrekeyRing,
        replay: ReplayGuard,
    }

    impl Party {
        fn new(rng: &mut rand::rngs::StdRng) -> Self {
            let identity = Identity::generate(rng);
            let ring = PrekeyRing::new(&identity, now(), rng);
            Self {
                identity,
                ring,
                replay: ReplayGuard::default(),
            }
        }

        fn open_at(&mut self, bytes: &[u8], at: Timestamp) -> Result<OpenedMessage, OpenError> {
            open(
                bytes,
                &self.identity,
                &self.ring,
                &mut self.replay,
                at,
                &OpenPolicy::default(),
            )
        }

        fn open(&mut self, bytes: &[u8]) -> Result<OpenedMessage, OpenError> {
            self.open_at(bytes, now())
        }
    }

    /// Builds an authentic (decryptable) envelope whose inner parts the test
    /// chooses, to reach the checks that come after decryption.
    fn forge(
        to: &PublicPrekey,
        header_recipient: &NodeId,
        body: &pb::SealedBody,
        sign: impl FnOnce(&[u8]) -> Vec<u8>,
        rng: &mut rand::rngs::StdRng,
    ) -> Vec<u8> {
        let ephemeral = EphemeralSecret::random_from_rng(rng);
        let ephemeral_public = X25519Public::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&X25519Public::from(*to.key()));
        let key = envelope_key(
            &shared,
            ephemeral_public.as_bytes(),
            to.key(),
            header_recipient,
        );
        let header = pb::EnvelopeHeader {
            version: ENVELOPE_VERSION,
            recipient: header_recipient.as_bytes().to_vec(),
            prekey: to.key().to_vec(),
            ephemeral: ephemeral_public.as_bytes().to_vec(),
            message_id: vec![9; 16],
        }
        .encode_to_vec();
        let body = body.encode_to_vec();
        let signature = sign(&transcript(&header, &body));
        let plaintext = pb::SealedContent { body, signature }.encode_to_vec();
        let ciphertext = ChaCha20Poly1305::new(&key)
            .encrypt(
                &Nonce::default(),
                Payload {
                    msg: &plaintext,
                    aad: &header,
                },
            )
            .unwrap();
        pb::Envelope { header, ciphertext }.encode_to_vec()
    }

    fn body_from(sender: &Identity, at: Timestamp, content: &[u8]) -> pb::SealedBody {
        pb::SealedBody {
            sender: sender.id().as_bytes().to_vec(),
            created_at_ms: at.as_unix_millis(),
            content: content.to_vec(),
        }
    }

    #[test]
    fn sealed_message_opens_with_sender_and_content() {
        let mut rng = test_rng(30);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let sealed = seal(
            &alice.identity,
            bob.ring.current(),
            b"water at the school",
            now(),
            &mut rng,
        )
        .unwrap();
        let opened = bob.open(&sealed.bytes).unwrap();
        assert_eq!(opened.content, b"water at the school");
        assert_eq!(&opened.sender, alice.identity.id());
        assert_eq!(opened.created_at, now());
        assert_eq!(opened.message_id, sealed.message_id);
    }

    #[test]
    fn relays_see_neither_sender_nor_content() {
        let mut rng = test_rng(31);
        let alice = Party::new(&mut rng);
        let bob = Party::new(&mut rng);
        let content = b"meet at the north gate";
        let sealed = seal(
            &alice.identity,
            bob.ring.current(),
            content,
            now(),
            &mut rng,
        )
        .unwrap();
        let contains = |needle: &[u8]| sealed.bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(alice.identity.id().as_bytes()));
        assert!(!contains(content));
        let envelope = Envelope::from_bytes(&sealed.bytes).unwrap();
        assert_eq!(
            &envelope.header().recipient_id().unwrap(),
            bob.identity.id()
        );
    }

    #[test]
    fn wrong_recipient_is_refused() {
        let mut rng = test_rng(32);
        let alice = Party::new(&mut rng);
        let bob = Party::new(&mut rng);
        let mut carol = Party::new(&mut rng);
        let sealed = seal(&alice.identity, bob.ring.current(), b"x", now(), &mut rng).unwrap();
        assert_eq!(
            carol.open(&sealed.bytes),
            Err(OpenError::WrongRecipient(*bob.identity.id()))
        );
    }

    #[test]
    fn unknown_prekey_is_refused() {
        let mut rng = test_rng(33);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let sealed = seal(&alice.identity, bob.ring.current(), b"x", now(), &mut rng).unwrap();
        // Bob lost his ring (e.g. restored an older backup) and has a new one.
        bob.ring = PrekeyRing::new(&bob.identity, now(), &mut rng);
        assert_eq!(bob.open(&sealed.bytes), Err(OpenError::UnknownPrekey));
    }

    #[test]
    fn expired_prekey_is_refused_and_live_old_prekey_works() {
        let mut rng = test_rng(34);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let policy = PrekeyPolicy::default();
        let old = seal(&alice.identity, bob.ring.current(), b"old", now(), &mut rng).unwrap();
        let late = seal(
            &alice.identity,
            bob.ring.current(),
            b"late",
            now(),
            &mut rng,
        )
        .unwrap();
        let rotated_at = now().saturating_add(24 * HOUR);
        bob.ring
            .rotate(&bob.identity, rotated_at, &policy, &mut rng);
        // Within the grace period the replaced prekey still opens.
        assert!(
            bob.open_at(&old.bytes, rotated_at.saturating_add(HOUR))
                .is_ok()
        );
        let after_grace = rotated_at.saturating_add(policy.grace);
        assert_eq!(
            bob.open_at(&late.bytes, after_grace),
            Err(OpenError::ExpiredPrekey)
        );
        let deleted = bob.ring.prune(after_grace, &policy);
        bob.replay.forget_prekeys(&deleted);
        assert!(bob.replay.is_empty());
        assert_eq!(
            bob.open_at(&late.bytes, after_grace),
            Err(OpenError::ExpiredPrekey)
        );
    }

    #[test]
    fn signature_by_another_key_is_refused() {
        let mut rng = test_rng(35);
        let alice = Party::new(&mut rng);
        let mallory = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        // Mallory claims to be Alice but can only sign as herself.
        let bytes = forge(
            bob.ring.current(),
            bob.identity.id(),
            &body_from(&alice.identity, now(), b"evacuate now"),
            |t| mallory.identity.sign_exact(t).to_vec(),
            &mut rng,
        );
        assert_eq!(bob.open(&bytes), Err(OpenError::BadSignature));
    }

    #[test]
    fn signed_content_cannot_be_rewrapped_for_someone_else() {
        let mut rng = test_rng(36);
        let alice = Party::new(&mut rng);
        let bob = Party::new(&mut rng);
        let mut carol = Party::new(&mut rng);
        let sealed = seal(
            &alice.identity,
            bob.ring.current(),
            b"for bob",
            now(),
            &mut rng,
        )
        .unwrap();
        // Bob decrypts Alice's signed inner content and re-seals it to Carol.
        let envelope = Envelope::from_bytes(&sealed.bytes).unwrap();
        let secret = bob
            .ring
            .secret_for(&envelope.header().prekey, now(), &PrekeyPolicy::default())
            .unwrap();
        let shared = secret.diffie_hellman(&X25519Public::from(envelope.header().ephemeral));
        let key = envelope_key(
            &shared,
            &envelope.header().ephemeral,
            &envelope.header().prekey,
            bob.identity.id(),
        );
        let plaintext = ChaCha20Poly1305::new(&key)
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: &envelope.ciphertext,
                    aad: &envelope.header_bytes,
                },
            )
            .unwrap();
        let inner = pb::SealedContent::decode(plaintext.as_slice()).unwrap();
        let body = pb::SealedBody::decode(inner.body.as_slice()).unwrap();
        let rewrapped = forge(
            carol.ring.current(),
            carol.identity.id(),
            &body,
            |_| inner.signature.clone(),
            &mut rng,
        );
        assert_eq!(carol.open(&rewrapped), Err(OpenError::BadSignature));
    }

    #[test]
    fn tampered_ciphertext_and_header_are_refused() {
        let mut rng = test_rng(37);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let sealed = seal(&alice.identity, bob.ring.current(), b"x", now(), &mut rng).unwrap();
        let mut outer = pb::Envelope::decode(sealed.bytes.as_slice()).unwrap();
        outer.ciphertext[3] ^= 0x80;
        assert_eq!(bob.open(&outer.encode_to_vec()), Err(OpenError::Tampered));

        let mut outer = pb::Envelope::decode(sealed.bytes.as_slice()).unwrap();
        let mut header = pb::EnvelopeHeader::decode(outer.header.as_slice()).unwrap();
        header.message_id = vec![0; 16]; // a relay renames the message
        outer.header = header.encode_to_vec();
        assert_eq!(bob.open(&outer.encode_to_vec()), Err(OpenError::Tampered));
    }

    #[test]
    fn replay_is_refused() {
        let mut rng = test_rng(38);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let sealed = seal(&alice.identity, bob.ring.current(), b"x", now(), &mut rng).unwrap();
        assert!(bob.open(&sealed.bytes).is_ok());
        assert_eq!(
            bob.open(&sealed.bytes),
            Err(OpenError::Replayed(sealed.message_id))
        );
    }

    #[test]
    fn an_envelope_forgotten_opens_again_and_only_that_one() {
        let mut rng = test_rng(40);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let one = seal(&alice.identity, bob.ring.current(), b"x", now(), &mut rng).unwrap();
        let two = seal(&alice.identity, bob.ring.current(), b"y", now(), &mut rng).unwrap();
        assert!(bob.open(&one.bytes).is_ok());
        assert!(bob.open(&two.bytes).is_ok());
        bob.replay.forget(one.message_id);
        assert!(bob.open(&one.bytes).is_ok());
        assert_eq!(
            bob.open(&one.bytes),
            Err(OpenError::Replayed(one.message_id))
        );
        assert_eq!(
            bob.open(&two.bytes),
            Err(OpenError::Replayed(two.message_id))
        );
    }

    #[test]
    fn a_failed_open_does_not_burn_the_message_id() {
        let mut rng = test_rng(39);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let sealed = seal(&alice.identity, bob.ring.current(), b"x", now(), &mut rng).unwrap();
        let before = now().saturating_sub(HOUR);
        assert!(matches!(
            bob.open_at(&sealed.bytes, before),
            Err(OpenError::FromTheFuture { .. })
        ));
        assert!(bob.open(&sealed.bytes).is_ok());
    }

    #[test]
    fn message_from_the_future_beyond_skew_is_refused() {
        let mut rng = test_rng(40);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let skew = OpenPolicy::default().max_clock_skew;
        let within = seal(
            &alice.identity,
            bob.ring.current(),
            b"x",
            now().saturating_add(skew),
            &mut rng,
        )
        .unwrap();
        assert!(bob.open(&within.bytes).is_ok());
        let beyond = now().saturating_add(skew + Duration::from_millis(1));
        let sealed = seal(&alice.identity, bob.ring.current(), b"x", beyond, &mut rng).unwrap();
        assert_eq!(
            bob.open(&sealed.bytes),
            Err(OpenError::FromTheFuture {
                ahead: skew + Duration::from_millis(1)
            })
        );
    }

    #[test]
    fn replay_guard_stays_bounded_without_letting_replays_through() {
        let mut rng = test_rng(41);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        bob.replay = ReplayGuard::with_capacity(3);
        let sealed: Vec<_> = (0..5u64)
            .map(|i| {
                let at = now()
                    .saturating_sub(HOUR)
                    .saturating_add(Duration::from_secs(i));
                seal(&alice.identity, bob.ring.current(), b"x", at, &mut rng).unwrap()
            })
            .collect();
        for s in &sealed {
            assert!(bob.open(&s.bytes).is_ok());
        }
        assert_eq!(bob.replay.len(), 3);
        // The two oldest were forgotten, but the floor refuses them.
        assert_eq!(
            bob.open(&sealed[0].bytes),
            Err(OpenError::BeyondReplayWindow(sealed[0].message_id))
        );
        assert_eq!(
            bob.open(&sealed[1].bytes),
            Err(OpenError::BeyondReplayWindow(sealed[1].message_id))
        );
        assert_eq!(
            bob.open(&sealed[4].bytes),
            Err(OpenError::Replayed(sealed[4].message_id))
        );
    }

    #[test]
    fn low_order_keys_are_refused_on_both_sides() {
        let mut rng = test_rng(42);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        // A prekey of all zeros (a low-order point), correctly signed by Bob.
        let weak = PublicPrekey::sign(&bob.identity, &X25519Public::from([0u8; 32]), now());
        assert_eq!(
            seal(&alice.identity, &weak, b"x", now(), &mut rng),
            Err(SealError::WeakPrekey)
        );

        let sealed = seal(&alice.identity, bob.ring.current(), b"x", now(), &mut rng).unwrap();
        let mut outer = pb::Envelope::decode(sealed.bytes.as_slice()).unwrap();
        let mut header = pb::EnvelopeHeader::decode(outer.header.as_slice()).unwrap();
        header.ephemeral = vec![0; 32];
        outer.header = header.encode_to_vec();
        assert_eq!(
            bob.open(&outer.encode_to_vec()),
            Err(OpenError::WeakEphemeral)
        );
    }

    #[test]
    fn unknown_version_and_garbage_are_typed_errors() {
        let mut rng = test_rng(43);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let sealed = seal(&alice.identity, bob.ring.current(), b"x", now(), &mut rng).unwrap();
        let mut outer = pb::Envelope::decode(sealed.bytes.as_slice()).unwrap();
        let mut header = pb::EnvelopeHeader::decode(outer.header.as_slice()).unwrap();
        header.version = 2;
        outer.header = header.encode_to_vec();
        assert_eq!(
            bob.open(&outer.encode_to_vec()),
            Err(OpenError::UnsupportedVersion(2))
        );
        assert!(matches!(
            bob.open(b"\xff\xff\xff"),
            Err(OpenError::Malformed(_))
        ));
        assert!(matches!(
            bob.open(&[]),
            Err(OpenError::UnsupportedVersion(0))
        ));
        let huge = vec![0u8; MAX_ENVELOPE_LEN + 1];
        assert!(matches!(
            bob.open(&huge),
            Err(OpenError::Malformed(DecodeError::TooLarge { .. }))
        ));
    }

    #[test]
    fn oversized_content_is_refused_at_seal_and_at_open() {
        let mut rng = test_rng(44);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let too_big = vec![0u8; MAX_CONTENT_LEN + 1];
        assert!(matches!(
            seal(
                &alice.identity,
                bob.ring.current(),
                &too_big,
                now(),
                &mut rng
            ),
            Err(SealError::ContentTooLarge { .. })
        ));
        let exactly = vec![7u8; MAX_CONTENT_LEN];
        let sealed = seal(
            &alice.identity,
            bob.ring.current(),
            &exactly,
            now(),
            &mut rng,
        )
        .unwrap();
        assert!(sealed.bytes.len() <= MAX_ENVELOPE_LEN);
        assert_eq!(
            bob.open(&sealed.bytes).unwrap().content.len(),
            MAX_CONTENT_LEN
        );
    }

    #[test]
    fn invalid_sender_key_inside_is_refused() {
        let mut rng = test_rng(45);
        let alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let mut body = body_from(&alice.identity, now(), b"x");
        let mut small_order = vec![0u8; 32];
        small_order[0] = 1;
        body.sender = small_order;
        let bytes = forge(
            bob.ring.current(),
            bob.identity.id(),
            &body,
            |t| alice.identity.sign_exact(t).to_vec(),
            &mut rng,
        );
        assert_eq!(
            bob.open(&bytes),
            Err(OpenError::BadSender(IdentityError::WeakKey))
        );
    }
}
