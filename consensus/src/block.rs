//! Block headers: what authorities seal, and how a received one is checked
//! before anything else looks at it.

use std::fmt;

use lifeline_crypto::wire::{DecodeError, decode_bounded, fixed};
use lifeline_crypto::{Identity, IdentityError, NodeId, Timestamp};
use prost::Message;
use thiserror::Error;

use crate::wire::pb;

/// Domain string of block signatures.
const BLOCK_DOMAIN: &[u8] = b"lifeline/block/v1";
/// Most signers a chain may have (bounds checkpoint blocks and the signer state).
pub const MAX_SIGNERS: usize = 256;
/// Largest encoded signed header accepted: a checkpoint listing
/// [`MAX_SIGNERS`] keys, with room to spare.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// A block's hash: blake3 (keyed for this purpose) of its exact header bytes.
/// The signature is not part of it, so one header has one hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    fn of_header(header_bytes: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("lifeline 2026-11 block hash v1");
        hasher.update(header_bytes);
        Self(*hasher.finalize().as_bytes())
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits tell blocks apart in logs and test failures.
        let short: String = self.0[..4].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "BlockHash({short}..)")
    }
}

/// A vote to add (`authorize`) or drop a signer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vote {
    /// Who is voted on.
    pub target: NodeId,
    /// `true` to add `target` as a signer, `false` to drop it.
    pub authorize: bool,
}

/// A block header's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The parent block's hash.
    pub parent_hash: BlockHash,
    /// Height: the parent's plus one.
    pub number: u64,
    /// When it was sealed.
    pub timestamp: Timestamp,
    /// The authority that sealed it.
    pub signer: NodeId,
    /// 2 when sealed in turn, 1 out of turn: what fork choice adds up.
    pub weight: u32,
    /// A vote riding in this block, if any.
    pub vote: Option<Vote>,
    /// The signer list, present exactly on epoch checkpoint blocks.
    pub checkpoint: Option<Vec<NodeId>>,
}

/// Why a header could not be decoded or sealed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The bytes are not a well-formed signed header.
    #[error("malformed block header: {0}")]
    Malformed(#[from] DecodeError),
    /// A key in the header is not a valid identity key.
    #[error("block header field {field} holds an invalid key: {source}")]
    InvalidKey {
        /// Which field.
        field: &'static str,
        /// Why the key is invalid.
        source: IdentityError,
    },
    /// The checkpoint lists more signers than a chain may have.
    #[error("checkpoint lists {0} signers, more than the {MAX_SIGNERS} allowed")]
    TooManySigners(usize),
    /// The signature does not verify against the header's signer.
    #[error("block signature does not verify")]
    BadSignature,
    /// Asked to seal a header with a key other than its signer's.
    #[error("the header names {named} as signer, but was sealed with {used}'s key")]
    WrongSealer {
        /// The header's signer.
        named: NodeId,
        /// The key used.
        used: NodeId,
    },
}

impl Header {
    fn to_pb(&self) -> pb::BlockHeader {
        pb::BlockHeader {
            parent_hash: self.parent_hash.0.to_vec(),
            number: self.number,
            timestamp_ms: self.timestamp.as_unix_millis(),
            signer: self.signer.as_bytes().to_vec(),
            weight: self.weight,
            vote: self.vote.map(|v| pb::Vote {
                target: v.target.as_bytes().to_vec(),
                authorize: v.authorize,
            }),
            checkpoint: self.checkpoint.as_ref().map(|signers| pb::Checkpoint {
                signers: signers.iter().map(|s| s.as_bytes().to_vec()).collect(),
            }),
        }
    }

    /// Signs the header with `sealer`, which must be its signer.
    pub fn seal(&self, sealer: &Identity) -> Result<SealedHeader, HeaderError> {
        if sealer.id() != &self.signer {
            return Err(HeaderError::WrongSealer {
                named: self.signer,
                used: *sealer.id(),
            });
        }
        let header_bytes = self.to_pb().encode_to_vec();
        let signature = sealer.sign(BLOCK_DOMAIN, &header_bytes);
        let hash = BlockHash::of_header(&header_bytes);
        let bytes = pb::SignedBlockHeader {
            header: header_bytes,
            signature: signature.to_vec(),
        }
        .encode_to_vec();
        Ok(SealedHeader {
            header: self.clone(),
            hash,
            bytes,
        })
    }
}

/// A header with a verified signature, and the exact bytes it came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    header: Header,
    hash: BlockHash,
    bytes: Vec<u8>,
}

fn node_id(field: &'static str, bytes: &[u8]) -> Result<NodeId, HeaderError> {
    let key = fixed::<32>("BlockHeader", field, bytes)?;
    NodeId::from_public_key_bytes(&key).map_err(|source| HeaderError::InvalidKey { field, source })
}

impl SealedHeader {
    /// Decodes a signed header and verifies its signature. Checks only what
    /// the header says about itself; the chain checks it against its parent.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeaderError> {
        let signed: pb::SignedBlockHeader =
            decode_bounded("SignedBlockHeader", bytes, MAX_HEADER_LEN)?;
        let signature = fixed::<64>("SignedBlockHeader", "signature", &signed.signature)?;
        let raw: pb::BlockHeader = decode_bounded("BlockHeader", &signed.header, MAX_HEADER_LEN)?;
        let signer = node_id("signer", &raw.signer)?;
        signer
            .verify(BLOCK_DOMAIN, &signed.header, &signature)
            .map_err(|_| HeaderError::BadSignature)?;
        let vote = match raw.vote {
            Some(v) => Some(Vote {
                target: node_id("vote.target", &v.target)?,
                authorize: v.authorize,
            }),
            None => None,
        };
        let checkpoint = match raw.checkpoint {
            Some(c) if c.signers.len() > MAX_SIGNERS => {
                return Err(HeaderError::TooManySigners(c.signers.len()));
            }
            Some(c) => Some(
                c.signers
                    .iter()
                    .map(|s| node_id("checkpoint.signers", s))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let header = Header {
            parent_hash: BlockHash(fixed("BlockHeader", "parent_hash", &raw.parent_hash)?),
            number: raw.number,
            timestamp: Timestamp::from_unix_millis(raw.timestamp_ms),
            signer,
            weight: raw.weight,
            vote,
            checkpoint,
        };
        Ok(Self {
            header,
            hash: BlockHash::of_header(&signed.header),
            bytes: bytes.to_vec(),
        })
    }

    /// The header's contents.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The block hash.
    pub fn hash(&self) -> BlockHash {
        self.hash
    }

    /// The exact signed bytes.
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn identity(seed: u64) -> Identity {
        Identity::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
    }

    fn header(signer: &Identity) -> Header {
        Header {
            parent_hash: BlockHash([1; 32]),
            number: 7,
            timestamp: Timestamp::from_unix_millis(1_000),
            signer: *signer.id(),
            weight: 2,
            vote: Some(Vote {
                target: *identity(99).id(),
                authorize: true,
            }),
            checkpoint: Some(vec![*signer.id()]),
        }
    }

    #[test]
    fn sealed_header_round_trips_and_hash_ignores_the_signature_bytes() {
        let a = identity(1);
        let sealed = header(&a).seal(&a).unwrap();
        let decoded = SealedHeader::from_bytes(sealed.to_bytes()).unwrap();
        assert_eq!(decoded, sealed);
        assert_eq!(decoded.header(), &header(&a));
        let mut other = header(&a);
        other.number = 8;
        assert_ne!(other.seal(&a).unwrap().hash(), sealed.hash());
    }

    #[test]
    fn sealing_with_another_key_is_refused() {
        let a = identity(1);
        let b = identity(2);
        assert!(matches!(
            header(&a).seal(&b),
            Err(HeaderError::WrongSealer { .. })
        ));
    }

    #[test]
    fn tampered_header_fails_its_signature() {
        let a = identity(1);
        let sealed = header(&a).seal(&a).unwrap();
        let mut signed = pb::SignedBlockHeader::decode(sealed.to_bytes()).unwrap();
        let mut raw = pb::BlockHeader::decode(signed.header.as_slice()).unwrap();
        raw.weight = 1;
        signed.header = raw.encode_to_vec();
        assert_eq!(
            SealedHeader::from_bytes(&signed.encode_to_vec()),
            Err(HeaderError::BadSignature)
        );
    }

    #[test]
    fn oversized_checkpoint_is_refused() {
        let a = identity(1);
        let mut h = header(&a);
        h.checkpoint = Some(vec![*a.id(); MAX_SIGNERS + 1]);
        let sealed = h.seal(&a).unwrap();
        assert_eq!(
            SealedHeader::from_bytes(sealed.to_bytes()),
            Err(HeaderError::TooManySigners(MAX_SIGNERS + 1))
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(
            SealedHeader::from_bytes(b"\x0a\xff"),
            Err(HeaderError::Malformed(_))
        ));
        assert!(matches!(
            SealedHeader::from_bytes(&vec![0; MAX_HEADER_LEN + 1]),
            Err(HeaderError::Malformed(DecodeError::TooLarge { .. }))
        ));
    }
}
