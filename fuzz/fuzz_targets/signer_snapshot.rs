//! Decoding arbitrary bytes as a stored signer snapshot never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lifeline_consensus::SignerState::from_snapshot(data);
});
