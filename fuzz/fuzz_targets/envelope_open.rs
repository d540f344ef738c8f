//! Decoding and opening arbitrary bytes as an envelope never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lifeline_crypto::envelope::{self, Envelope, OpenPolicy, ReplayGuard};
use lifeline_crypto::{Identity, PrekeyRing, Timestamp};
use rand::SeedableRng;

struct Recipient {
    identity: Identity,
    ring: PrekeyRing,
}

fn recipient() -> &'static Recipient {
    static RECIPIENT: OnceLock<Recipient> = OnceLock::new();
    RECIPIENT.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let identity = Identity::generate(&mut rng);
        let ring = PrekeyRing::new(&identity, Timestamp::from_unix_millis(0), &mut rng);
        Recipient { identity, ring }
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = Envelope::from_bytes(data);
    let r = recipient();
    let _ = envelope::open(
        data,
        &r.identity,
        &r.ring,
        &mut ReplayGuard::with_capacity(4),
        Timestamp::from_unix_millis(1_000),
        &OpenPolicy::default(),
    );
});
