//! Reading arbitrary text as a CAP 1.2 alert never panics, and whatever it
//! accepts writes back out as CAP that reads to the same alert, field by
//! field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline_consensus::cap::{cap_fields, from_cap_xml, to_cap_xml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(import) = from_cap_xml(text) {
        let xml = to_cap_xml(&import.alert, &|_| None);
        let again = from_cap_xml(&xml).expect("an alert lifeline wrote does not read back");
        assert_eq!(again.alert, import.alert);
        let rewritten = to_cap_xml(&again.alert, &|_| None);
        assert_eq!(
            cap_fields(&rewritten).expect("lifeline wrote bad XML"),
            cap_fields(&xml).expect("lifeline wrote bad XML")
        );
    }
});
