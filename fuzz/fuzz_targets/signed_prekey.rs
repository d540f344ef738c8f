//! Decoding and verifying arbitrary bytes as a signed prekey never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lifeline_crypto::PublicPrekey::from_bytes(data);
});
