//! Random vote sequences against a small, independently written model of the
//! EIP-225 tally rules: both must accept and refuse the same blocks and agree
//! on the signer set after every block.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};

use lifeline_consensus::block::Vote;
use lifeline_consensus::conformance::identity_of;
use lifeline_consensus::{SignerError, SignerState};
use lifeline_crypto::NodeId;
use proptest::prelude::*;

/// The model: votes kept per (voter, target) including senseless ones, a
/// "last sealed" map instead of a recency window.
#[derive(Default)]
struct Model {
    signers: BTreeSet<u8>,
    votes: HashMap<(u8, u8), bool>,
    last_sealed: HashMap<u8, u64>,
}

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Unauthorized,
    Recent,
}

impl Model {
    fn seal(
        &mut self,
        number: u64,
        signer: u8,
        vote: Option<(u8, bool)>,
        checkpoint: bool,
    ) -> Result<(), Refusal> {
        if !self.signers.contains(&signer) {
            return Err(Refusal::Unauthorized);
        }
        let limit = self.signers.len() as u64 / 2 + 1;
        if self
            .last_sealed
            .get(&signer)
            .is_some_and(|last| number - last < limit)
        {
            return Err(Refusal::Recent);
        }
        self.last_sealed.insert(signer, number);
        if checkpoint {
            self.votes.clear();
        }
        let Some((target, authorize)) = vote else {
            return Ok(());
        };
        self.votes.insert((signer, target), authorize);
        let is_signer = self.signers.contains(&target);
        let tally = self
            .votes
            .iter()
            .filter(|((_, t), a)| *t == target && **a != is_signer)
            .count();
        if tally > self.signers.len() / 2 {
            if is_signer {
                self.signers.remove(&target);
                self.votes.retain(|(voter, _), _| *voter != target);
            } else {
                self.signers.insert(target);
            }
            self.votes.retain(|(_, t), _| *t != target);
        }
        Ok(())
    }
}

fn key(i: u8) -> NodeId {
    *identity_of(&format!("S{i}")).unwrap().id()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn signer_state_matches_the_model(
        initial in 1u8..6,
        epoch in 2u64..12,
        blocks in prop::collection::vec((0u8..7, prop::option::of((0u8..7, any::<bool>()))), 1..80),
    ) {
        let keys: Vec<NodeId> = (0..7).map(key).collect();
        let mut model = Model { signers: (0..initial).collect(), ..Model::default() };
        let mut state = SignerState::genesis((0..initial).map(|i| keys[i as usize]));
        let mut number = 0u64;
        for (signer, vote) in blocks {
            let next = number + 1;
            let checkpoint = next.is_multiple_of(epoch);
            let vote = if checkpoint { None } else { vote };
            let expected = model.seal(next, signer, vote, checkpoint);
            let real_vote = vote.map(|(t, a)| Vote { target: keys[t as usize], authorize: a });
            let got = state
                .apply(next, &keys[signer as usize], real_vote.as_ref(), checkpoint)
                .map(|_| ())
                .map_err(|e| match e {
                    SignerError::Unauthorized(_) => Refusal::Unauthorized,
                    SignerError::RecentlySigned { .. } => Refusal::Recent,
                });
            prop_assert_eq!(&got, &expected, "block {} by S{}", next, signer);
            if got.is_ok() {
                number = next;
            }
            let model_set: BTreeSet<NodeId> = model.signers.iter().map(|i| keys[*i as usize]).collect();
            prop_assert_eq!(state.signers(), &model_set);
        }
    }
}
