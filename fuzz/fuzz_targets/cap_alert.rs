//! Reading arbitrary text as a CAP 1.2 alert never panics, and whatever it
//! accepts writes back out as CAP that reads to the same alert.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline_consensus::cap::{from_cap_xml, to_cap_xml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(import) = from_cap_xml(text) {
        let xml = to_cap_xml(&import.alert, &|_| None);
        let again = from_cap_xml(&xml).expect("an alert lifeline wrote does not read back");
        let mut expected = import.alert;
        // CAP readers trim texts; a text that ends in spaces loses them once.
        expected.headline = expected.headline.trim().to_owned();
        assert_eq!(again.alert.identifier, expected.identifier);
        assert_eq!(again.alert.area, expected.area);
        assert_eq!(again.alert.expires, expected.expires);
    }
});
