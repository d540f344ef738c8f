//! Block headers: what authorities seal, and how a received one is checked
//! before anything else looks at it.

use std::fmt;

use lifeline_crypto::wire::{DecodeError, decode_bounded, fixed};
use lifeline_crypto::{Identity, IdentityError, NodeId, Timestamp};
use prost::Message;
use thiserror::Error;

use crate::tx::{Transaction, TxError, transactions_root};
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
    /// Commitment to the block's transactions ([`crate::tx::transactions_root`]).
    pub transactions_root: [u8; 32],
    /// The state root after the block ([`crate::state::ChainState::root`]).
    pub state_root: [u8; 32],
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
            transactions_root: self.transactions_root.to_vec(),
            state_root: self.state_root.to_vec(),
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
            transactions_root: fixed("BlockHeader", "transactions_root", &raw.transactions_root)?,
            state_root: fixed("BlockHeader", "state_root", &raw.state_root)?,
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

/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 1024;
/// Largest encoded block accepted.
pub const MAX_BLOCK_LEN: usize = 4 * 1024 * 1024;

/// Why a block could not be decoded.
#[derive(Debug, Error, PartialEq)]
pub enum BlockError {
    /// Not a well-formed block.
    #[error("malformed block: {0}")]
    Malformed(#[from] DecodeError),
    /// Its header is invalid.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// More transactions than a block may carry.
    #[error("block carries {0} transactions, more than the {MAX_BLOCK_TXS} allowed")]
    TooManyTransactions(usize),
    /// One of its transactions is invalid.
    #[error("transaction {index}: {source}")]
    Transaction {
        /// Its position.
        index: usize,
        /// Why.
        source: TxError,
    },
    /// The transactions do not match the header's transactions root.
    #[error("the transactions do not match the header's transactions root")]
    TransactionsRoot,
}

/// A block: a sealed header and its transactions, checked against each other.
#[derive(Clone, Debug, PartialEq)]
pub struct SealedBlock {
    header: SealedHeader,
    transactions: Vec<Transaction>,
}

impl SealedBlock {
    /// Joins a sealed header and its transactions; fails if the header's
    /// transactions root does not match them.
    pub fn new(header: SealedHeader, transactions: Vec<Transaction>) -> Result<Self, BlockError> {
        if transactions.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTransactions(transactions.len()));
        }
        if transactions_root(&transactions) != header.header().transactions_root {
            return Err(BlockError::TransactionsRoot);
        }
        Ok(Self {
            header,
            transactions,
        })
    }

    /// Decodes a block: its header (signature verified), every transaction
    /// (signatures verified) and the transactions root.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlockError> {
        let block: pb::Block = decode_bounded("Block", bytes, MAX_BLOCK_LEN)?;
        if block.transactions.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTransactions(block.transactions.len()));
        }
        let header = SealedHeader::from_bytes(&block.header)?;
        let transactions = block
            .transactions
            .iter()
            .enumerate()
            .map(|(index, t)| {
                Transaction::from_bytes(t)
                    .map_err(|source| BlockError::Transaction { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(header, transactions)
    }

    /// The encoded block.
    pub fn to_bytes(&self) -> Vec<u8> {
        pb::Block {
            header: self.header.to_bytes().to_vec(),
            transactions: self
                .transactions
                .iter()
                .map(|t| t.to_bytes().to_vec())
                .collect(),
        }
        .encode_to_vec()
    }

    /// The sealed header.
    pub fn sealed_header(&self) -> &SealedHeader {
        &self.header
    }

    /// The header's contents.
    pub fn header(&self) -> &Header {
        self.header.header()
    }

    /// The block hash.
    pub fn hash(&self) -> BlockHash {
        self.header.hash()
    }

    /// The transactions, in order.
    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
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
            transactions_root: [4; 32],
            state_root: [5; 32],
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
