//! Decoding arbitrary bytes as a chain sync message (status, block requests
//! and blocks) never panics, and neither does decoding the blocks in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline_consensus::SealedBlock;
use lifeline_consensus::sync::SyncMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(SyncMessage::Blocks(blocks)) = SyncMessage::from_bytes(data) {
        for block in blocks {
            let _ = SealedBlock::from_bytes(&block);
        }
    }
});
