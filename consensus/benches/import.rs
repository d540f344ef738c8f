//! Block import throughput against the raw signature-verification bound,
//! measured in the same run.
//!
//! `cargo bench -p lifeline-consensus --bench import` imports blocks of 100
//! registrations from their encoded bytes (decode, every signature, state,
//! state root, fork choice, store) and, interleaved with that, verifies the
//! same number of ed25519 signatures over messages of the same sizes with
//! nothing else. It prints blocks/s, transactions/s and verifications/s, and
//! the import rate as a fraction of the verification bound. Target: >= 0.80.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use lifeline_consensus::chain::{ChainConfig, Genesis, Validation};
use lifeline_consensus::conformance::{genesis_of, identity_of};
use lifeline_consensus::tx::{Action, Transaction};
use lifeline_consensus::wire::pb;
use lifeline_consensus::{Chain, MemoryChainStore, SealedBlock};
use lifeline_crypto::{Identity, PrekeyRing};
use prost::Message;
use rand::SeedableRng;

const TXS: usize = 100;
const BLOCKS: usize = 20;

fn genesis() -> Genesis {
    // Blocks of 100 registrations, the heaviest import there is: above the
    // default limit of 64 a block, so this chain has none.
    let config = ChainConfig {
        registrations: None,
        ..ChainConfig::default()
    };
    genesis_of(&["A", "B", "C"], config).unwrap()
}

/// One signature to check: key, message, signature.
type Check = (VerifyingKey, Vec<u8>, Signature);

/// Encoded blocks of TXS registrations each, and the checks one block's
/// signatures need (for the baseline).
fn workload() -> (Vec<Vec<u8>>, Vec<Check>) {
    let g = genesis();
    let mut chain = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let signers: Vec<Identity> = ["A", "B", "C"]
        .iter()
        .map(|n| identity_of(n).unwrap())
        .collect();
    let mut blocks = Vec::new();
    for b in 0..BLOCKS {
        let txs: Vec<Transaction> = (0..TXS)
            .map(|i| {
                let person = Identity::generate(&mut rng);
                let ring = PrekeyRing::new(&person, g.timestamp, &mut rng);
                Transaction::sign(
                    &person,
                    0,
                    Action::RegisterIdentity {
                        display_name: format!("Person {b}-{i}"),
                        prekey: ring.current().clone(),
                    },
                )
            })
            .collect();
        let t = chain.head().timestamp.saturating_add(chain.config().period);
        let block = chain.propose(&signers[b % 3], t, None, txs).unwrap();
        chain.import(&block, Validation::Full { now: t }).unwrap();
        blocks.push(block.to_bytes());
    }
    // The baseline signs messages of the sizes the real signatures cover.
    let raw = pb::Block::decode(blocks[0].as_slice()).unwrap();
    let mut sizes = vec![raw.header.len()];
    for tx in &raw.transactions {
        let signed = pb::SignedTransaction::decode(tx.as_slice()).unwrap();
        sizes.push(signed.body.len() + 14);
        let body = pb::Transaction::decode(signed.body.as_slice()).unwrap();
        if let Some(pb::transaction::Action::RegisterIdentity(r)) = body.action {
            sizes.push(r.prekey.len());
        }
    }
    let key = SigningKey::generate(&mut rng);
    let baseline = sizes
        .iter()
        .map(|len| {
            let msg = vec![0x42u8; *len];
            let sig = key.sign(&msg);
            (key.verifying_key(), msg, sig)
        })
        .collect();
    (blocks, baseline)
}

fn import_all(blocks: &[Vec<u8>]) {
    let mut chain = Chain::open(MemoryChainStore::new(), &genesis()).unwrap();
    for bytes in blocks {
        let block = SealedBlock::from_bytes(bytes).unwrap();
        let now = block.header().timestamp;
        black_box(chain.import(&block, Validation::Full { now }).unwrap());
    }
}

/// Verifies, per block, the signatures one block carries, from their keys'
/// bytes (a verifier gets keys as bytes too).
fn verify_all(baseline: &[Check]) {
    for _ in 0..BLOCKS {
        for (key, msg, sig) in baseline {
            let key = VerifyingKey::from_bytes(key.as_bytes()).unwrap();
            key.verify_strict(msg, sig).unwrap();
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let (blocks, baseline) = workload();
    let mut criterion = Criterion::default().configure_from_args().sample_size(10);
    let mut group = criterion.benchmark_group("import");
    group.throughput(Throughput::Elements((BLOCKS * TXS) as u64));
    group.bench_function("20 blocks of 100 registrations", |b| {
        b.iter(|| import_all(&blocks))
    });
    group.bench_function("their signatures, verified alone", |b| {
        b.iter(|| verify_all(&baseline))
    });
    group.finish();
    criterion.final_summary();

    let rounds = if benchmarking { 15 } else { 1 };
    let (mut ours, mut bound) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        import_all(&blocks);
        ours.push(t.elapsed());
        let t = Instant::now();
        verify_all(&baseline);
        bound.push(t.elapsed());
    }
    let (ours, bound) = (median(ours), median(bound));
    let sigs = baseline.len() * BLOCKS;
    let blocks_per_s = BLOCKS as f64 / ours.as_secs_f64();
    println!(
        "\nimport of {BLOCKS} blocks x {TXS} registrations ({} signatures per block), medians of {rounds} interleaved rounds",
        baseline.len()
    );
    println!(
        "  import:        {:>9.1} blocks/s  {:>9.0} transactions/s",
        blocks_per_s,
        blocks_per_s * TXS as f64
    );
    println!(
        "  verification:  {:>9.0} signatures/s alone, a bound of {:.1} blocks/s",
        sigs as f64 / bound.as_secs_f64(),
        BLOCKS as f64 / bound.as_secs_f64()
    );
    println!(
        "  import / bound: {:.3}",
        bound.as_secs_f64() / ours.as_secs_f64()
    );
}
