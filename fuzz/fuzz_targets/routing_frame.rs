//! Decoding arbitrary bytes as a link packet, a router frame (a location
//! registration too), a message frame's body (peeked at) or a receipt never
//! panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline_routing::wire::{Frame, Packet, Receipt};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(data) {
        assert_eq!(packet.encode(), data);
    }
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.encode(), data);
    }
    // What the router decodes, with signatures checked later.
    if let Ok(Frame::Message(m)) = Frame::decode_deferred(data) {
        let _ = m.verify_origin();
        // What the simulator peeks at agrees with what the router decodes.
        assert_eq!(Frame::peek_body(data).as_ref(), Some(&m.body));
    }
    let _ = Frame::peek_body(data);
    let _ = Receipt::decode(data);
});
