//! The decoder of an envelope's plaintext never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lifeline_crypto::envelope::decode_sealed_content(data);
});
