//! Finality votes, after Casper FFG: an authority's signed link from a
//! justified block (the source) to a descendant of it (the target).
//!
//! A block is *justified* once more than two thirds of the signers entitled
//! to seal it voted for one link into it, and *final* once more than two
//! thirds voted for one link from it to its child. An honest authority votes
//! at most once per target height, with target heights rising and source
//! heights never falling ([`VoteRecord::allows`]). Two conflicting final
//! blocks then need more than a third of the authorities to have broken that
//! rule, and the chain shows who did (docs/chain.md, Finality).

use lifeline_crypto::wire::{DecodeError, decode_bounded, fixed};
use lifeline_crypto::{Identity, NodeId};
use prost::Message;
use thiserror::Error;

use crate::block::{BlockHash, MAX_SIGNERS};
use crate::wire::pb;

/// Domain string of finality-vote signatures.
const VOTE_DOMAIN: &[u8] = b"lifeline/finality/v1";
/// Largest encoded signed vote accepted (a real one is about 210 bytes).
pub const MAX_VOTE_LEN: usize = 512;
/// Most votes in one sync message.
pub const MAX_VOTES_PER_MESSAGE: usize = MAX_SIGNERS;
/// Most vote ids in one sync message.
pub const MAX_VOTE_IDS_PER_MESSAGE: usize = 1024;

/// A block named by height and hash: the two ends of a vote's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    /// Its height.
    pub number: u64,
    /// Its hash.
    pub hash: BlockHash,
}

/// The heights of an authority's latest vote. It must be durable before the
/// vote leaves the node: an authority that forgot it after a crash could
/// vote twice for one height, which is what makes finality conflict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoteRecord {
    /// The source's height.
    pub source: u64,
    /// The target's height.
    pub target: u64,
}

impl VoteRecord {
    /// Whether an authority whose latest vote was `self` may now vote from a
    /// source at height `source` to a target at height `target`: targets
    /// must rise (never two votes for one height) and sources must not fall
    /// (never a vote whose link surrounds an earlier one).
    pub fn allows(&self, source: u64, target: u64) -> bool {
        target > self.target && source >= self.source && target > source
    }
}

/// A signed finality vote, decoded. Its signature is checked by
/// [`FinalityVote::verify`], which the chain calls before it keeps a vote,
/// so that a duplicate costs a lookup rather than a signature check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalityVote {
    /// The chain's genesis hash.
    pub genesis: BlockHash,
    /// The justified block the link starts from.
    pub source: BlockRef,
    /// The block the link leads to, above the source.
    pub target: BlockRef,
    /// The voting authority.
    pub signer: NodeId,
    body: Vec<u8>,
    signature: [u8; 64],
    id: u64,
}

/// Why a vote was not counted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum VoteError {
    /// The signature does not verify against the vote's signer: whoever
    /// passed it on forged or corrupted it.
    #[error("the finality vote's signature does not verify")]
    BadSignature,
    /// The vote is for another chain.
    #[error("the finality vote is for a chain with another genesis")]
    OtherChain,
    /// The signer is not an authority of this chain (at its head).
    #[error("{0} voted on finality but is not a signer")]
    NotASigner(NodeId),
}

impl FinalityVote {
    /// `identity` votes, on the chain with genesis `genesis`, for the link
    /// from `source` to `target`.
    pub fn sign(
        identity: &Identity,
        genesis: BlockHash,
        source: BlockRef,
        target: BlockRef,
    ) -> Self {
        let body = pb::FinalityVoteBody {
            genesis: genesis.0.to_vec(),
            source_number: source.number,
            source_hash: source.hash.0.to_vec(),
            target_number: target.number,
            target_hash: target.hash.0.to_vec(),
            signer: identity.id().as_bytes().to_vec(),
        }
        .encode_to_vec();
        let signature = identity.sign(VOTE_DOMAIN, &body);
        let id = short_id(&body, &signature);
        Self {
            genesis,
            source,
            target,
            signer: *identity.id(),
            body,
            signature,
            id,
        }
    }

    /// The vote's short id, by which neighbours announce and ask for it:
    /// the first 8 bytes of the blake3 hash of its wire bytes. Finding
    /// another vote with a given id takes about 2^64 tries.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Checks the signature.
    pub fn verify(&self) -> Result<(), VoteError> {
        self.signer
            .verify(VOTE_DOMAIN, &self.body, &self.signature)
            .map_err(|_| VoteError::BadSignature)
    }

    /// Whether `other` is the same link by the same signer.
    pub fn same_link(&self, other: &Self) -> bool {
        (self.signer, self.source, self.target) == (other.signer, other.source, other.target)
    }

    /// Whether this vote and `other`, by the same signer, break the voting
    /// rule together (Casper FFG's slashing conditions): two different
    /// links to one height, or one link around the other. Honest votes,
    /// made under [`VoteRecord::allows`], never do.
    pub fn conflicts_with(&self, other: &Self) -> bool {
        let surrounds = |outer: &Self, inner: &Self| {
            outer.source.number < inner.source.number && inner.target.number < outer.target.number
        };
        self.signer == other.signer
            && !self.same_link(other)
            && (self.target.number == other.target.number
                || surrounds(self, other)
                || surrounds(other, self))
    }

    /// Decodes a signed vote (bounded; the signature is not checked yet).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_pb(decode_bounded("SignedFinalityVote", bytes, MAX_VOTE_LEN)?)
    }

    /// Encodes for the wire: the exact body bytes that were signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_pb().encode_to_vec()
    }

    pub(crate) fn to_pb(&self) -> pb::SignedFinalityVote {
        pb::SignedFinalityVote {
            body: self.body.clone(),
            signature: self.signature.to_vec(),
        }
    }

    pub(crate) fn from_pb(signed: pb::SignedFinalityVote) -> Result<Self, DecodeError> {
        const WHAT: &str = "FinalityVoteBody";
        if signed.body.len() > MAX_VOTE_LEN {
            return Err(DecodeError::TooLarge {
                what: WHAT,
                len: signed.body.len(),
                max: MAX_VOTE_LEN,
            });
        }
        let signature = fixed::<64>("SignedFinalityVote", "signature", &signed.signature)?;
        let raw: pb::FinalityVoteBody = decode_bounded(WHAT, &signed.body, MAX_VOTE_LEN)?;
        if raw.target_number <= raw.source_number {
            return Err(DecodeError::InvalidField {
                what: WHAT,
                field: "target_number",
                reason: "not above the source",
            });
        }
        let key = fixed::<32>(WHAT, "signer", &raw.signer)?;
        let signer =
            NodeId::from_public_key_bytes(&key).map_err(|_| DecodeError::InvalidField {
                what: WHAT,
                field: "signer",
                reason: "not an ed25519 public key",
            })?;
        Ok(Self {
            genesis: BlockHash(fixed(WHAT, "genesis", &raw.genesis)?),
            source: BlockRef {
                number: raw.source_number,
                hash: BlockHash(fixed(WHAT, "source_hash", &raw.source_hash)?),
            },
            target: BlockRef {
                number: raw.target_number,
                hash: BlockHash(fixed(WHAT, "target_hash", &raw.target_hash)?),
            },
            signer,
            id: short_id(&signed.body, &signature),
            body: signed.body,
            signature,
        })
    }
}

fn short_id(body: &[u8], signature: &[u8; 64]) -> u64 {
    let signed = pb::SignedFinalityVote {
        body: body.to_vec(),
        signature: signature.to_vec(),
    };
    let hash = blake3::hash(&signed.encode_to_vec());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::conformance::identity_of;

    fn link() -> (BlockRef, BlockRef) {
        (
            BlockRef {
                number: 6,
                hash: BlockHash([6; 32]),
            },
            BlockRef {
                number: 7,
                hash: BlockHash([7; 32]),
            },
        )
    }

    fn vote_by(name: &str) -> FinalityVote {
        let (source, target) = link();
        FinalityVote::sign(
            &identity_of(name).unwrap(),
            BlockHash([1; 32]),
            source,
            target,
        )
    }

    #[test]
    fn a_vote_survives_the_wire_and_verifies() {
        let vote = vote_by("A");
        let back = FinalityVote::from_bytes(&vote.to_bytes()).unwrap();
        assert_eq!(back, vote);
        assert_eq!(back.verify(), Ok(()));
        assert_eq!((back.source, back.target), link());
        assert!(vote.to_bytes().len() < MAX_VOTE_LEN);
        // The id is the wire bytes' hash, the same after a round trip.
        let hash = blake3::hash(&vote.to_bytes());
        let first: [u8; 8] = hash.as_bytes()[..8].try_into().unwrap();
        assert_eq!(
            (back.id(), vote.id()),
            (u64::from_le_bytes(first), back.id())
        );
        assert_ne!(vote.id(), vote_by("B").id());
    }

    #[test]
    fn a_vote_with_another_signer_or_altered_body_does_not_verify() {
        let (vote, b) = (vote_by("A"), identity_of("B").unwrap());
        // Claim B signed it.
        let mut body = pb::FinalityVoteBody::decode(vote.body.as_slice()).unwrap();
        body.signer = b.id().as_bytes().to_vec();
        let forged = pb::SignedFinalityVote {
            body: body.encode_to_vec(),
            signature: vote.signature.to_vec(),
        };
        let forged = FinalityVote::from_bytes(&forged.encode_to_vec()).unwrap();
        assert_eq!(forged.verify(), Err(VoteError::BadSignature));
        // A flipped signature bit.
        let mut bytes = vote.to_pb();
        bytes.signature[0] ^= 1;
        let flipped = FinalityVote::from_bytes(&bytes.encode_to_vec()).unwrap();
        assert_eq!(flipped.verify(), Err(VoteError::BadSignature));
    }

    #[test]
    fn short_fields_backward_links_and_oversized_votes_are_refused() {
        let vote = vote_by("A");
        let mut short = vote.to_pb();
        short.signature.pop();
        assert!(matches!(
            FinalityVote::from_bytes(&short.encode_to_vec()),
            Err(DecodeError::FieldLength { .. })
        ));
        let reencode = |edit: &dyn Fn(&mut pb::FinalityVoteBody)| {
            let mut body = pb::FinalityVoteBody::decode(vote.body.as_slice()).unwrap();
            edit(&mut body);
            let signed = pb::SignedFinalityVote {
                body: body.encode_to_vec(),
                signature: vote.signature.to_vec(),
            };
            FinalityVote::from_bytes(&signed.encode_to_vec())
        };
        assert!(matches!(
            reencode(&|b| b.target_hash = vec![0; 31]),
            Err(DecodeError::FieldLength { .. })
        ));
        assert!(matches!(
            reencode(&|b| b.target_number = b.source_number),
            Err(DecodeError::InvalidField {
                field: "target_number",
                ..
            })
        ));
        assert!(matches!(
            FinalityVote::from_bytes(&vec![0; MAX_VOTE_LEN + 1]),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_voting_rule_forbids_double_and_surround_votes() {
        let last = VoteRecord {
            source: 5,
            target: 9,
        };
        assert!(last.allows(5, 10));
        assert!(last.allows(9, 12));
        assert!(!last.allows(5, 9), "a second vote for height 9");
        assert!(!last.allows(7, 8), "a lower target");
        assert!(!last.allows(4, 12), "surrounds 5 -> 9");
        assert!(!last.allows(12, 12), "not a link upwards");
        assert!(VoteRecord::default().allows(0, 1));
    }

    #[test]
    fn votes_conflict_when_they_break_the_voting_rule_together() {
        let a = identity_of("A").unwrap();
        let vote = |s: u64, t: u64| {
            let at = |n: u64| BlockRef {
                number: n,
                hash: BlockHash([u8::try_from(n).unwrap(); 32]),
            };
            FinalityVote::sign(&a, BlockHash([1; 32]), at(s), at(t))
        };
        let first = vote(5, 9);
        let record = VoteRecord {
            source: 5,
            target: 9,
        };
        for (s, t, conflicts, why) in [
            (5, 10, false, "the next vote"),
            (9, 12, false, "from its target on"),
            (2, 4, false, "below it, not around it"),
            (4, 9, true, "another link to height 9"),
            (4, 12, true, "around it"),
            (6, 8, true, "inside it"),
        ] {
            let second = vote(s, t);
            assert_eq!(
                first.conflicts_with(&second),
                conflicts,
                "{s} -> {t}: {why}"
            );
            assert_eq!(
                second.conflicts_with(&first),
                conflicts,
                "{s} -> {t}, reversed"
            );
            // What the rule lets an honest authority vote next never conflicts.
            if record.allows(s, t) {
                assert!(!conflicts, "{s} -> {t}");
            }
        }
        assert!(!first.conflicts_with(&vote(5, 9)), "the same link");
        let other = FinalityVote::sign(
            &identity_of("B").unwrap(),
            BlockHash([1; 32]),
            first.source,
            BlockRef {
                number: 9,
                hash: BlockHash([7; 32]),
            },
        );
        assert!(!first.conflicts_with(&other), "another signer");
    }
}
