//! Decoding and verifying arbitrary bytes as a signed block header never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lifeline_consensus::SealedHeader::from_bytes(data);
});
