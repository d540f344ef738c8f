//! Arbitrary bytes as a chain's CAP alert (`CapAlert`, as a transaction
//! carries it): counting its parts off the wire and validating it never
//! panic; the counts agree with what decoding finds; and any alert the
//! chain accepts is written out as CAP XML that reads back to the same
//! alert (what `alert show --cap` promises).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline_consensus::alert::{Alert, MAX_INFOS};
use lifeline_consensus::cap::{from_cap_xml, to_cap_xml};
use lifeline_consensus::wire::pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if data.len() > 40 * 1024 {
        return;
    }
    let Ok(cap) = pb::CapAlert::decode(data) else {
        return;
    };
    let infos = cap.infos.len();
    if let Ok(alert) = Alert::from_cap_pb(cap) {
        assert!(infos <= MAX_INFOS);
        let again = Alert::from_cap_pb(alert.to_cap_pb()).expect("its own wire form");
        assert_eq!(again, alert);
        let xml = to_cap_xml(&alert, &|_| None);
        let read = from_cap_xml(&xml)
            .unwrap_or_else(|e| panic!("the chain took an alert CAP XML cannot carry: {e}\n{xml}"));
        assert_eq!(read.alert, alert, "\n{xml}");
    }
});
