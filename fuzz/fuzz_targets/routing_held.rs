//! Decoding arbitrary bytes as a message kept in custody never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lifeline_routing::wire::Message::decode_held(data);
});
