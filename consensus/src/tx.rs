//! Transactions: what people and authorities put on the chain.
//!
//! Each is signed by its sender and carries the sender's next nonce, so a
//! transaction cannot be replayed or applied twice.

use lifeline_crypto::wire::{DecodeError, decode_bounded, fixed};
use lifeline_crypto::{Identity, IdentityError, NodeId, PublicPrekey, Timestamp};
use prost::Message;
use thiserror::Error;

use crate::alert::{Alert, AlertError};
use crate::block::{HeaderError, SealedHeader};
use crate::finality::FinalityVote;
use crate::wire::pb;

/// Domain string of transaction signatures.
const TX_DOMAIN: &[u8] = b"lifeline/tx/v1";
/// Largest encoded signed transaction (an alert with long texts, or two
/// headers of equivocation evidence).
pub const MAX_TX_LEN: usize = 40 * 1024;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest role name, in characters.
pub const MAX_ROLE_CHARS: usize = 64;
/// Longest revocation reason, in characters.
pub const MAX_REASON_CHARS: usize = 256;

/// A transaction's hash: blake3 (keyed for this purpose) of its exact signed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxHash(pub [u8; 32]);

impl std::fmt::Display for TxHash {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Text that is not a transaction hash (64 hex digits).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0:?} is not a transaction hash (64 hex digits)")]
pub struct TxHashParseError(pub String);

impl std::str::FromStr for TxHash {
    type Err = TxHashParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || TxHashParseError(text.to_owned());
        let digits = text.trim();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = digits.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The sender registers itself.
    RegisterIdentity {
        /// How others find it (not unique).
        display_name: String,
        /// Its signed prekey, owned by the sender.
        prekey: PublicPrekey,
    },
    /// The sender publishes a newer prekey.
    RotatePrekey {
        /// The new signed prekey, owned by the sender.
        prekey: PublicPrekey,
    },
    /// An authority vouches that `subject` holds `role` until `expires_at`.
    CertifyRole {
        /// Who.
        subject: NodeId,
        /// What, e.g. "medic" or "shelter coordinator".
        role: String,
        /// Until when.
        expires_at: Timestamp,
    },
    /// A key's owner, or an authority, revokes it.
    RevokeIdentity {
        /// The key revoked.
        subject: NodeId,
        /// Why.
        reason: String,
    },
    /// An authority publishes an official alert.
    PublishAlert(Box<Alert>),
    /// Evidence that one signer sealed two different blocks at one height.
    RecordEquivocation {
        /// One header.
        a: Box<SealedHeader>,
        /// The other.
        b: Box<SealedHeader>,
    },
    /// Evidence that one signer broke the finality voting rule: two votes
    /// for one height, or one whose link surrounds the other's
    /// (`Chain::take_vote_evidence` gives such pairs).
    RecordVoteEquivocation {
        /// One vote.
        a: Box<FinalityVote>,
        /// The other.
        b: Box<FinalityVote>,
    },
}

/// A decoded transaction with a verified signature and its exact bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Transaction {
    /// Who sent it.
    pub sender: NodeId,
    /// The sender's nonce.
    pub nonce: u64,
    /// What it does.
    pub action: Action,
    hash: TxHash,
    bytes: Vec<u8>,
}

/// Why a transaction could not be decoded or made.
#[derive(Debug, Error, PartialEq)]
pub enum TxError {
    /// Not a well-formed transaction.
    #[error("malformed transaction: {0}")]
    Malformed(#[from] DecodeError),
    /// A key in it is invalid.
    #[error("transaction field {field} holds an invalid key: {source}")]
    InvalidKey {
        /// Which field.
        field: &'static str,
        /// Why.
        source: IdentityError,
    },
    /// The signature does not verify.
    #[error("transaction signature does not verify")]
    BadSignature,
    /// It has no action.
    #[error("transaction has no action")]
    NoAction,
    /// A text field is empty, too long or has control characters.
    #[error("transaction field {field} is invalid: {reason}")]
    InvalidText {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The prekey inside is invalid.
    #[error("transaction prekey is invalid: {0}")]
    InvalidPrekey(String),
    /// The alert inside is invalid.
    #[error("invalid alert: {0}")]
    InvalidAlert(#[from] AlertError),
    /// A header of equivocation evidence is invalid.
    #[error("equivocation evidence: {0}")]
    InvalidEvidence(#[from] HeaderError),
}

fn node_id(field: &'static str, bytes: &[u8]) -> Result<NodeId, TxError> {
    NodeId::from_public_key_bytes(&fixed::<32>("Transaction", field, bytes)?)
        .map_err(|source| TxError::InvalidKey { field, source })
}

/// Checks a short human text: non-empty, at most `max` characters, no control characters.
pub(crate) fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), TxError> {
    if text.trim().is_empty() {
        return Err(TxError::InvalidText {
            field,
            reason: "empty",
        });
    }
    if text.chars().count() > max {
        return Err(TxError::InvalidText {
            field,
            reason: "too long",
        });
    }
    if text.chars().any(char::is_control) {
        return Err(TxError::InvalidText {
            field,
            reason: "contains control characters",
        });
    }
    Ok(())
}

fn prekey(bytes: &[u8]) -> Result<PublicPrekey, TxError> {
    PublicPrekey::from_bytes(bytes).map_err(|e| TxError::InvalidPrekey(e.to_string()))
}

impl Action {
    fn to_pb(&self) -> pb::transaction::Action {
        use pb::transaction::Action as A;
        match self {
            Self::RegisterIdentity {
                display_name,
                prekey,
            } => A::RegisterIdentity(pb::RegisterIdentity {
                display_name: display_name.clone(),
                prekey: prekey.to_bytes().to_vec(),
            }),
            Self::RotatePrekey { prekey } => A::RotatePrekey(pb::RotatePrekey {
                prekey: prekey.to_bytes().to_vec(),
            }),
            Self::CertifyRole {
                subject,
                role,
                expires_at,
            } => A::CertifyRole(pb::CertifyRole {
                subject: subject.as_bytes().to_vec(),
                role: role.clone(),
                expires_at_ms: expires_at.as_unix_millis(),
            }),
            Self::RevokeIdentity { subject, reason } => A::RevokeIdentity(pb::RevokeIdentity {
                subject: subject.as_bytes().to_vec(),
                reason: reason.clone(),
            }),
            Self::PublishAlert(alert) => match alert.to_first_form() {
                Some(first) => A::PublishAlert(pb::PublishAlert { alert: Some(first) }),
                None => A::PublishCapAlert(pb::PublishCapAlert {
                    alert: Some(alert.to_cap_pb()),
                }),
            },
            Self::RecordEquivocation { a, b } => A::RecordEquivocation(pb::RecordEquivocation {
                header_a: a.to_bytes().to_vec(),
                header_b: b.to_bytes().to_vec(),
            }),
            Self::RecordVoteEquivocation { a, b } => {
                A::RecordVoteEquivocation(pb::RecordVoteEquivocation {
                    vote_a: a.to_bytes(),
                    vote_b: b.to_bytes(),
                })
            }
        }
    }

    fn from_pb(action: pb::transaction::Action) -> Result<Self, TxError> {
        use pb::transaction::Action as A;
        Ok(match action {
            A::RegisterIdentity(r) => {
                check_text("display_name", &r.display_name, MAX_NAME_CHARS)?;
                Self::RegisterIdentity {
                    display_name: r.display_name,
                    prekey: prekey(&r.prekey)?,
                }
            }
            A::RotatePrekey(r) => Self::RotatePrekey {
                prekey: prekey(&r.prekey)?,
            },
            A::CertifyRole(c) => {
                check_text("role", &c.role, MAX_ROLE_CHARS)?;
                Self::CertifyRole {
                    subject: node_id("subject", &c.subject)?,
                    role: c.role,
                    expires_at: Timestamp::from_unix_millis(c.expires_at_ms),
                }
            }
            A::RevokeIdentity(r) => {
                check_text("reason", &r.reason, MAX_REASON_CHARS)?;
                Self::RevokeIdentity {
                    subject: node_id("subject", &r.subject)?,
                    reason: r.reason,
                }
            }
            A::PublishAlert(p) => {
                let alert = p
                    .alert
                    .ok_or(TxError::InvalidAlert(AlertError::Missing("alert")))?;
                Self::PublishAlert(Box::new(Alert::from_pb(alert)?))
            }
            A::PublishCapAlert(p) => {
                let alert = p
                    .alert
                    .ok_or(TxError::InvalidAlert(AlertError::Missing("alert")))?;
                Self::PublishAlert(Box::new(Alert::from_cap_pb(alert)?))
            }
            A::RecordEquivocation(r) => Self::RecordEquivocation {
                a: Box::new(SealedHeader::from_bytes(&r.header_a)?),
                b: Box::new(SealedHeader::from_bytes(&r.header_b)?),
            },
            A::RecordVoteEquivocation(r) => Self::RecordVoteEquivocation {
                a: Box::new(FinalityVote::from_bytes(&r.vote_a)?),
                b: Box::new(FinalityVote::from_bytes(&r.vote_b)?),
            },
        })
    }
}

impl Transaction {
    /// Makes and signs a transaction.
    pub fn sign(sender: &Identity, nonce: u64, action: Action) -> Self {
        let body = pb::Transaction {
            sender: sender.id().as_bytes().to_vec(),
            nonce,
            action: Some(action.to_pb()),
        }
        .encode_to_vec();
        let signature = sender.sign(TX_DOMAIN, &body);
        let bytes = pb::SignedTransaction {
            body,
            signature: signature.to_vec(),
        }
        .encode_to_vec();
        Self {
            sender: *sender.id(),
            nonce,
            action,
            hash: tx_hash(&bytes),
            bytes,
        }
    }

    /// Decodes a signed transaction and verifies its signature and contents.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TxError> {
        let signed: pb::SignedTransaction = decode_bounded("SignedTransaction", bytes, MAX_TX_LEN)?;
        let signature = fixed::<64>("SignedTransaction", "signature", &signed.signature)?;
        // Bound what decoding the body allocates before it is decoded.
        crate::alert::precheck_transaction(&signed.body)?;
        let body: pb::Transaction = decode_bounded("Transaction", &signed.body, MAX_TX_LEN)?;
        let sender = node_id("sender", &body.sender)?;
        sender
            .verify(TX_DOMAIN, &signed.body, &signature)
            .map_err(|_| TxError::BadSignature)?;
        let action = Action::from_pb(body.action.ok_or(TxError::NoAction)?)?;
        Ok(Self {
            sender,
            nonce: body.nonce,
            action,
            hash: tx_hash(bytes),
            bytes: bytes.to_vec(),
        })
    }

    /// The exact signed bytes.
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The transaction hash.
    pub fn hash(&self) -> TxHash {
        self.hash
    }
}

fn tx_hash(bytes: &[u8]) -> TxHash {
    let mut hasher = blake3::Hasher::new_derive_key("lifeline 2026-11 transaction hash v1");
    hasher.update(bytes);
    TxHash(*hasher.finalize().as_bytes())
}

/// The transactions root of a block: blake3 (keyed) over the count and the
/// hashes of its transactions in order.
pub fn transactions_root(txs: &[Transaction]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("lifeline 2026-11 transactions root v1");
    hasher.update(&u64::try_from(txs.len()).unwrap_or(u64::MAX).to_le_bytes());
    for tx in txs {
        hasher.update(&tx.hash().0);
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_hash_reads_back_from_its_text_and_other_text_is_refused() {
        let hash = TxHash([0xab; 32]);
        let text = hash.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<TxHash>().unwrap(), hash);
        assert_eq!(format!(" {text}\n").parse::<TxHash>().unwrap(), hash);
        for bad in [
            "",
            "ab",
            &text[..63],
            &format!("{}zz", &text[..62]),
            "é".repeat(32).as_str(),
        ] {
            assert!(bad.parse::<TxHash>().is_err(), "{bad:?} was read as a hash");
        }
    }
}
