//! A relay taking custody of messages into RocksDB: it is handed messages
//! from a fake upstream neighbour (ten at a time, so they share one synced
//! write), and prints `acked ID` for every custody acknowledgement it sends
//! and `delivered ID` for every acknowledgement of a message delivered to it,
//! after a `ready` line. The crash test kills this process at random moments.
//!
//! Usage: custody-helper DB_DIR FIRST COUNT

use std::io::Write;
use std::process::ExitCode;

use lifeline_routing::wire::{AckOutcome, Frame, Packet};
use lifeline_routing::{Config, Router};
use lifeline_storage::Database;
use lifeline_tests::custody::{relay_identity, upstream, wire_message};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custody-helper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(first), Some(count)) = (args.get(1), args.get(2), args.get(3)) else {
        return Err("usage: custody-helper DB_DIR FIRST COUNT".into());
    };
    let first: u64 = first.parse().map_err(|e| format!("FIRST: {e}"))?;
    let count: u64 = count.parse().map_err(|e| format!("COUNT: {e}"))?;
    let db = Database::open(std::path::Path::new(dir)).map_err(|e| e.to_string())?;
    let mut router = Router::new(
        relay_identity(),
        Config::default(),
        db.message_store(),
        [0; 32],
        0,
    )
    .map_err(|e| e.to_string())?;
    let up = upstream();
    router.handle_link_up(0, up, 300);
    while router.poll_link(0, &up).is_some() {}
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    for batch in (first..first + count).collect::<Vec<_>>().chunks(10) {
        for n in batch {
            router.handle_packet(1, &up, &wire_message(*n));
        }
        // Writes the batch (synced), then releases the acknowledgements.
        router.flush();
        // Takes the deliveries, as a daemon does before it keeps each in
        // its inbox: their seen records are written with the last poll,
        // and their acknowledgements queued after that write.
        while router.poll_event().is_some() {}
        while let Some(packet) = router.poll_link(1, &up) {
            let packet = Packet::decode(&packet).map_err(|e| e.to_string())?;
            match Frame::decode(&packet.data) {
                Ok(Frame::Ack {
                    id,
                    outcome: AckOutcome::Delivered,
                }) => writeln!(out, "delivered {id}").map_err(|e| e.to_string())?,
                Ok(Frame::Ack { id, outcome }) if outcome != AckOutcome::Refused => {
                    writeln!(out, "acked {id}").map_err(|e| e.to_string())?;
                }
                _ => {}
            }
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}
