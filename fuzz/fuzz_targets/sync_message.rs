//! Decoding arbitrary bytes as a chain sync message (status, block requests,
//! blocks and finality votes) never panics, and neither does decoding the
//! blocks in it or checking the votes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline_consensus::SealedBlock;
use lifeline_consensus::sync::SyncMessage;

fuzz_target!(|data: &[u8]| {
    match SyncMessage::from_bytes(data) {
        Ok(SyncMessage::Blocks(blocks)) => {
            for block in blocks {
                let _ = SealedBlock::from_bytes(&block);
            }
        }
        Ok(SyncMessage::Votes(votes)) => {
            for vote in votes {
                let _ = vote.verify();
            }
        }
        _ => {}
    }
});
