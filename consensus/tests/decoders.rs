//! Nothing a peer sends may panic a node: the consensus decoders on arbitrary
//! bytes, and on valid encodings with bits flipped.
#![allow(clippy::unwrap_used)]

use lifeline_consensus::block::{BlockHash, Header, Vote};
use lifeline_consensus::conformance::identity_of;
use lifeline_consensus::{SealedHeader, SignerState};
use lifeline_crypto::Timestamp;
use proptest::prelude::*;

fn sample() -> SealedHeader {
    let a = identity_of("A").unwrap();
    Header {
        parent_hash: BlockHash([3; 32]),
        number: 42,
        timestamp: Timestamp::from_unix_millis(1_700_000_000_000),
        signer: *a.id(),
        weight: 1,
        vote: Some(Vote {
            target: *identity_of("B").unwrap().id(),
            authorize: true,
        }),
        checkpoint: Some(vec![*a.id()]),
        transactions_root: [6; 32],
        state_root: [7; 32],
    }
    .seal(&a)
    .unwrap()
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = SealedHeader::from_bytes(&bytes);
        let _ = SignerState::from_snapshot(&bytes);
        let _ = lifeline_consensus::SealedBlock::from_bytes(&bytes);
        let _ = lifeline_consensus::Transaction::from_bytes(&bytes);
        let _ = lifeline_consensus::ChainState::from_snapshot(&bytes, &lifeline_consensus::BlockHash([0; 32]));
        let _ = lifeline_consensus::sync::SyncMessage::from_bytes(&bytes);
        if let Ok(vote) = lifeline_consensus::FinalityVote::from_bytes(&bytes) {
            let _ = vote.verify();
        }
    }

    #[test]
    fn any_bit_flip_in_a_finality_vote_is_refused_or_fails_to_verify(
        bit in any::<prop::sample::Index>(),
    ) {
        let vote = sample_vote();
        let mut bytes = vote.to_bytes();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let accepted = lifeline_consensus::FinalityVote::from_bytes(&bytes)
            .ok()
            .filter(|v| v.verify().is_ok());
        prop_assert!(accepted.is_none(), "bit {} accepted", bit);
    }

    #[test]
    fn any_bit_flip_in_a_sealed_header_is_refused(bit in any::<prop::sample::Index>()) {
        let sealed = sample();
        let mut bytes = sealed.to_bytes().to_vec();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(SealedHeader::from_bytes(&bytes).is_err(), "bit {} accepted", bit);
    }
}

#[test]
fn snapshot_round_trips() {
    let ids: Vec<_> = ["A", "B", "C"]
        .iter()
        .map(|n| *identity_of(n).unwrap().id())
        .collect();
    let mut state = SignerState::genesis(ids.clone());
    let vote = Vote {
        target: *identity_of("D").unwrap().id(),
        authorize: true,
    };
    state.apply(1, &ids[0], Some(&vote), false).unwrap();
    let bytes = state.to_snapshot(1, &BlockHash([5; 32]));
    let (restored, number, hash) = SignerState::from_snapshot(&bytes).unwrap();
    assert_eq!((restored, number, hash), (state, 1, BlockHash([5; 32])));
}

#[test]
fn a_sync_message_with_more_votes_than_signers_is_refused() {
    use lifeline_consensus::finality::MAX_VOTES_PER_MESSAGE;
    use lifeline_consensus::sync::SyncMessage;
    let vote = sample_vote();
    let most = SyncMessage::Votes(vec![vote.clone(); MAX_VOTES_PER_MESSAGE]);
    assert_eq!(SyncMessage::from_bytes(&most.to_bytes()).unwrap(), most);
    let too_many = SyncMessage::Votes(vec![vote; MAX_VOTES_PER_MESSAGE + 1]);
    assert!(SyncMessage::from_bytes(&too_many.to_bytes()).is_err());
}

#[test]
fn a_sync_message_with_more_than_1024_vote_ids_is_refused() {
    use lifeline_consensus::finality::MAX_VOTE_IDS_PER_MESSAGE;
    use lifeline_consensus::sync::SyncMessage;
    for make in [SyncMessage::HaveVotes, SyncMessage::GetVotes] {
        let most = make((0..MAX_VOTE_IDS_PER_MESSAGE as u64).collect());
        assert_eq!(SyncMessage::from_bytes(&most.to_bytes()).unwrap(), most);
        let too_many = make((0..=MAX_VOTE_IDS_PER_MESSAGE as u64).collect());
        assert!(SyncMessage::from_bytes(&too_many.to_bytes()).is_err());
    }
}

/// A's vote for the link from block 8 to block 9 of a made-up chain.
fn sample_vote() -> lifeline_consensus::FinalityVote {
    let block = |number: u64, byte: u8| lifeline_consensus::BlockRef {
        number,
        hash: BlockHash([byte; 32]),
    };
    lifeline_consensus::FinalityVote::sign(
        &identity_of("A").unwrap(),
        BlockHash([5; 32]),
        block(8, 3),
        block(9, 4),
    )
}
