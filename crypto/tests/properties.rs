#![allow(clippy::unwrap_used)]

//! Property tests of lifeline-crypto's public API.

use lifeline_crypto::envelope::{self, Envelope, OpenPolicy, ReplayGuard};
use lifeline_crypto::keystore::{KdfParams, KeyBundle, Purpose, decode_keystore_file};
use lifeline_crypto::{Identity, KeystoreError, NodeId, PrekeyRing, PublicPrekey, Timestamp};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn now() -> Timestamp {
    Timestamp::from_unix_millis(1_763_700_000_000)
}

struct Pair {
    alice: Identity,
    bob: Identity,
    bob_ring: PrekeyRing,
    rng: StdRng,
}

fn pair(seed: u64) -> Pair {
    let mut rng = StdRng::seed_from_u64(seed);
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let bob_ring = PrekeyRing::new(&bob, now(), &mut rng);
    Pair {
        alice,
        bob,
        bob_ring,
        rng,
    }
}

fn open_fresh(p: &Pair, bytes: &[u8]) -> Result<envelope::OpenedMessage, envelope::OpenError> {
    envelope::open(
        bytes,
        &p.bob,
        &p.bob_ring,
        &mut ReplayGuard::default(),
        now(),
        &OpenPolicy::default(),
    )
}

/// Flips every bit of a sealed envelope, one at a time, and checks that each
/// changed envelope is refused while the original still opens.
fn assert_every_bit_flip_rejected(content_len: usize, seed: u64) {
    let mut p = pair(seed);
    let content: Vec<u8> = (0..content_len).map(|i| (i * 31 % 251) as u8).collect();
    let sealed =
        envelope::seal(&p.alice, p.bob_ring.current(), &content, now(), &mut p.rng).unwrap();
    let mut bytes = sealed.bytes.clone();
    for bit in 0..bytes.len() * 8 {
        bytes[bit / 8] ^= 1 << (bit % 8);
        assert!(
            open_fresh(&p, &bytes).is_err(),
            "flipping bit {bit} of a {}-byte envelope went unnoticed",
            bytes.len()
        );
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
    assert_eq!(open_fresh(&p, &bytes).unwrap().content, content);
}

#[test]
fn every_single_bit_flip_is_rejected_empty_content() {
    assert_every_bit_flip_rejected(0, 1);
}

#[test]
fn every_single_bit_flip_is_rejected_short_content() {
    assert_every_bit_flip_rejected(64, 2);
}

#[test]
fn every_single_bit_flip_is_rejected_multi_byte_length_prefixes() {
    // 300 bytes: the protobuf length prefixes take two bytes here.
    assert_every_bit_flip_rejected(300, 3);
}

#[test]
fn every_single_bit_flip_is_rejected_1kib() {
    assert_every_bit_flip_rejected(1024, 4);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn seal_open_round_trips_any_content(content in prop::collection::vec(any::<u8>(), 0..4096), seed in any::<u64>()) {
        let mut p = pair(seed);
        let sealed = envelope::seal(&p.alice, p.bob_ring.current(), &content, now(), &mut p.rng).unwrap();
        let opened = open_fresh(&p, &sealed.bytes).unwrap();
        prop_assert_eq!(opened.content, content);
        prop_assert_eq!(&opened.sender, p.alice.id());
        prop_assert_eq!(opened.message_id, sealed.message_id);
    }

    #[test]
    fn seal_open_round_trips_large_content(len in 4096usize..262_144, byte in any::<u8>(), seed in any::<u64>()) {
        let mut p = pair(seed);
        let content = vec![byte; len];
        let sealed = envelope::seal(&p.alice, p.bob_ring.current(), &content, now(), &mut p.rng).unwrap();
        prop_assert_eq!(open_fresh(&p, &sealed.bytes).unwrap().content, content);
    }

    #[test]
    fn random_bit_flips_in_large_envelopes_are_rejected(len in 1024usize..65_536, flips in prop::collection::vec(any::<prop::sample::Index>(), 1..8), seed in any::<u64>()) {
        let mut p = pair(seed);
        let content = vec![0x5a; len];
        let sealed = envelope::seal(&p.alice, p.bob_ring.current(), &content, now(), &mut p.rng).unwrap();
        for flip in flips {
            let mut bytes = sealed.bytes.clone();
            let bit = flip.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open_fresh(&p, &bytes).is_err(), "bit {} accepted", bit);
        }
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Envelope::from_bytes(&bytes);
        let _ = PublicPrekey::from_bytes(&bytes);
        let _ = envelope::decode_sealed_content(&bytes);
        let _ = decode_keystore_file(&bytes);
        let _ = KeyBundle::from_bytes(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = text.parse::<NodeId>();
        }
        let p = pair(7);
        let _ = open_fresh(&p, &bytes);
    }

    #[test]
    fn keystore_round_trips_and_refuses_other_passphrases(
        passphrase in prop::collection::vec(any::<u8>(), 1..64),
        other in prop::collection::vec(any::<u8>(), 1..64),
        rotations in 0usize..5,
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut bundle = KeyBundle::generate(now(), &mut rng);
        for i in 0..rotations {
            let at = now().saturating_add(std::time::Duration::from_secs(3600 * (i as u64 + 1)));
            bundle.prekeys.rotate(&bundle.identity, at, &Default::default(), &mut rng);
        }
        let file = bundle.encrypt(&passphrase, Purpose::Keystore, KdfParams::INSECURE_FOR_TESTS, &mut rng).unwrap();
        let (restored, _) = KeyBundle::decrypt(&file, &passphrase).unwrap();
        prop_assert_eq!(&*restored.to_bytes(), &*bundle.to_bytes());
        prop_assert_eq!(restored.prekeys.current(), bundle.prekeys.current());
        if other != passphrase {
            prop_assert!(matches!(KeyBundle::decrypt(&file, &other), Err(KeystoreError::WrongPassphrase)));
        }
    }
}
