//! What a neighbour sends on a `/lifeline/mesh/1` stream: a 4-byte length
//! prefix and a frame, then (once routed to us) an application payload.
//! Decoding arbitrary bytes as any of them never panics, never allocates past
//! the limits, and what decodes encodes back to a frame that decodes the same.
//!
//! The daemon's own codec file is compiled here (`#[path]`), with the same
//! generated protobuf types: the real decoder, without the daemon's libp2p
//! and RocksDB dependencies.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod pb {
    pub mod mesh {
        include!(concat!(env!("OUT_DIR"), "/lifeline.mesh.v1.rs"));
    }
}

#[path = "../../node/src/mesh/codec.rs"]
#[allow(dead_code)]
mod codec;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<4>() {
        if let Ok(len) = codec::frame_len(*prefix) {
            assert!(len <= codec::MAX_FRAME);
        }
    }
    if let Ok(frame) = codec::Frame::decode(data) {
        let again = codec::Frame::decode(&frame.encode()).expect("an encoded frame does not decode");
        assert_eq!(again, frame);
    }
    let _ = codec::decode_payload(data);
});
