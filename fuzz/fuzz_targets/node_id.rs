//! Parsing arbitrary text as a node id never panics, and what parses prints
//! back to the same id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline_crypto::NodeId;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = text.parse::<NodeId>() {
            let again: NodeId = id.to_string().parse().expect("a printed id parses");
            assert_eq!(again, id);
        }
    }
});
