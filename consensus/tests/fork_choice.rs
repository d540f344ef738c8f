//! Fork choice is deterministic: every node that has the same blocks picks the
//! same head, whatever order the blocks arrived in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeline_consensus::block::{BlockHash, SealedBlock};
use lifeline_consensus::chain::{ChainConfig, Genesis, Validation};
use lifeline_consensus::conformance::identity_of;
use lifeline_consensus::{Chain, MemoryChainStore};
use lifeline_crypto::{Identity, Timestamp};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng, rngs::StdRng};

const SIGNERS: usize = 7;
/// With seven signers, finality needs five distinct sealers on a branch: trees
/// this shallow never finalize, so no block is refused for conflicting with
/// finality and every node ends up with the same blocks.
const MAX_DEPTH: u64 = 4;

fn genesis(signers: &[Identity]) -> Genesis {
    Genesis {
        config: ChainConfig::default(),
        timestamp: Timestamp::from_unix_millis(1_763_700_000_000),
        signers: signers.iter().map(|s| *s.id()).collect(),
    }
}

fn random_tree(seed: u64, attempts: usize) -> (Genesis, Vec<SealedBlock>, BlockHash) {
    let signers: Vec<Identity> = (0..SIGNERS)
        .map(|i| identity_of(&format!("S{i}")).unwrap())
        .collect();
    let g = genesis(&signers);
    let mut builder = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut known: Vec<(BlockHash, u64, Timestamp)> = vec![(builder.head().hash, 0, g.timestamp)];
    let mut blocks = Vec::new();
    for _ in 0..attempts {
        let (parent, number, time) = known[rng.random_range(0..known.len())];
        if number >= MAX_DEPTH {
            continue;
        }
        let signer = &signers[rng.random_range(0..SIGNERS)];
        let t = time.saturating_add(
            builder.config().heartbeat + Duration::from_millis(rng.random_range(0..5_000)),
        );
        let Ok(block) = builder.propose_on(&parent, signer, t, None, vec![]) else {
            continue; // that signer sealed too recently on this branch
        };
        if builder
            .import(&block, Validation::Full { now: t })
            .is_ok_and(|imported| imported.new)
        {
            known.push((block.hash(), number + 1, t));
            blocks.push(block);
        }
    }
    assert_eq!(builder.finalized().number, 0, "the tree must not finalize");
    // A signer's surplus blocks on one parent are dropped (and those built
    // on them could not be): which ones depends on the order past
    // MAX_SIBLINGS_PER_SIGNER, so the tree is what the builder kept.
    blocks.retain(|b| builder.contains(&b.hash()).unwrap());
    let head = builder.head().hash;
    (g, blocks, head)
}

/// A random order in which every block comes after its parent.
fn arrival_order(blocks: &[SealedBlock], seed: u64) -> Vec<SealedBlock> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pending: Vec<SealedBlock> = blocks.to_vec();
    let mut arrived: Vec<SealedBlock> = Vec::new();
    let genesis_parent = blocks.first().map(|b| b.header().parent_hash);
    while !pending.is_empty() {
        let ready: Vec<usize> = (0..pending.len())
            .filter(|i| {
                let parent = pending[*i].header().parent_hash;
                Some(parent) == genesis_parent && pending[*i].header().number == 1
                    || arrived.iter().any(|a| a.hash() == parent)
            })
            .collect();
        let pick = ready[rng.random_range(0..ready.len())];
        arrived.push(pending.swap_remove(pick));
    }
    arrived
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_arrival_order_gives_the_same_head(seed in any::<u64>(), attempts in 5usize..60) {
        let (g, blocks, expected) = random_tree(seed, attempts);
        for order_seed in 0..4u64 {
            let mut node = Chain::open(MemoryChainStore::new(), &g).unwrap();
            for block in arrival_order(&blocks, seed ^ order_seed) {
                let now = block.header().timestamp;
                let imported = node.import(&block, Validation::Full { now });
                prop_assert!(imported.is_ok(), "block {:?} refused: {:?}", block.hash(), imported.err());
            }
            prop_assert_eq!(node.head().hash, expected, "{} blocks, order {}", blocks.len(), order_seed);
        }
    }
}
