//! The keystore file's outer decoder never panics. (Decryption is not fuzzed:
//! argon2 at even the smallest accepted cost would make each run too slow.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lifeline_crypto::keystore::decode_keystore_file(data);
});
