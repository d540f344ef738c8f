//! Decoding arbitrary bytes as a keystore's plaintext never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lifeline_crypto::KeyBundle::from_bytes(data);
});
