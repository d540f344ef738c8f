//! Sealing and opening envelopes against the raw primitives they are built
//! from, measured in the same run.
//!
//! `cargo bench -p lifeline-crypto --bench envelope` prints criterion's figures
//! and then a ratio table: seal+open time over the time of the primitives one
//! seal+open needs (one X25519 key generation and two X25519 agreements, one
//! ed25519 signature and one verification over the content, one AEAD
//! encryption and one decryption of the content). The two are timed in
//! alternating batches and compared by median, so machine noise hits both.
//! Target: ratio at most 1.15.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use criterion::{BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey};
use lifeline_crypto::envelope::{self, OpenPolicy, ReplayGuard};
use lifeline_crypto::{Identity, PrekeyRing, Timestamp};
use rand::SeedableRng;
use rand::rngs::StdRng;
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};

const SIZES: [usize; 3] = [64, 1024, 64 * 1024];

struct Fixture {
    alice: Identity,
    bob: Identity,
    bob_ring: PrekeyRing,
    content: Vec<u8>,
    rng: StdRng,
    // For the primitives.
    signing: SigningKey,
    static_secret: StaticSecret,
    static_public: PublicKey,
    aead: ChaCha20Poly1305,
}

fn now() -> Timestamp {
    Timestamp::from_unix_millis(1_763_700_000_000)
}

impl Fixture {
    fn new(size: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(size as u64);
        let alice = Identity::generate(&mut rng);
        let bob = Identity::generate(&mut rng);
        let bob_ring = PrekeyRing::new(&bob, now(), &mut rng);
        let static_secret = StaticSecret::random_from_rng(&mut rng);
        Self {
            signing: SigningKey::generate(&mut rng),
            static_public: PublicKey::from(&static_secret),
            static_secret,
            aead: ChaCha20Poly1305::new(&Key::from([7u8; 32])),
            alice,
            bob,
            bob_ring,
            content: vec![0xab; size],
            rng,
        }
    }

    fn seal_open(&mut self) {
        let sealed = envelope::seal(
            &self.alice,
            self.bob_ring.current(),
            &self.content,
            now(),
            &mut self.rng,
        )
        .unwrap();
        let opened = envelope::open(
            &sealed.bytes,
            &self.bob,
            &self.bob_ring,
            &mut ReplayGuard::default(),
            now(),
            &OpenPolicy::default(),
        )
        .unwrap();
        black_box(opened);
    }

    /// Exactly the primitive work one seal+open needs, and nothing else.
    fn primitives(&mut self) {
        // Sender: one-time key, agreement with the prekey.
        let ephemeral = EphemeralSecret::random_from_rng(&mut self.rng);
        let ephemeral_public = PublicKey::from(&ephemeral);
        black_box(ephemeral.diffie_hellman(&self.static_public));
        // Recipient: agreement with the one-time key.
        black_box(self.static_secret.diffie_hellman(&ephemeral_public));
        // Signature and verification over the content.
        let signature = self.signing.sign(&self.content);
        self.signing
            .verifying_key()
            .verify_strict(&self.content, &signature)
            .unwrap();
        // AEAD both ways.
        let nonce = Nonce::default();
        let ciphertext = self
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: &self.content,
                    aad: b"",
                },
            )
            .unwrap();
        black_box(
            self.aead
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &ciphertext,
                        aad: b"",
                    },
                )
                .unwrap(),
        );
    }
}

fn criterion_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut fixture = Fixture::new(size);
        group.bench_function(BenchmarkId::new("seal+open", size), |b| {
            b.iter(|| fixture.seal_open())
        });
        group.bench_function(BenchmarkId::new("primitives", size), |b| {
            b.iter(|| fixture.primitives())
        });
    }
    group.finish();
}

/// Median time per call of `f`, batches interleaved with `g`'s by the caller.
fn batch(iterations: u32, f: &mut impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ratio_table(rounds: usize) {
    println!("\nseal+open against its primitives (medians of {rounds} interleaved batches)");
    println!(
        "{:>8}  {:>12}  {:>12}  {:>6}",
        "size", "seal+open", "primitives", "ratio"
    );
    for size in SIZES {
        let mut fixture = Fixture::new(size);
        let iterations = if size >= 65536 { 20 } else { 100 };
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(batch(iterations, &mut || fixture.seal_open()));
            base.push(batch(iterations, &mut || fixture.primitives()));
        }
        let (ours, base) = (median(ours), median(base));
        println!(
            "{:>8}  {:>10.1}us  {:>10.1}us  {:>6.3}",
            size,
            ours.as_secs_f64() * 1e6,
            base.as_secs_f64() * 1e6,
            ours.as_secs_f64() / base.as_secs_f64()
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and then
    // criterion runs each benchmark once, and so does the ratio table.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion);
    criterion.final_summary();
    ratio_table(if benchmarking { 31 } else { 1 });
}
