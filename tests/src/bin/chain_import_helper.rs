//! Imports the scripted chain into a RocksDB database, resuming from its head,
//! and prints `imported N` after each block's import has returned (that is,
//! after it is durable), after a `ready` line once it starts importing. The
//! crash test kills this process at random moments.
//!
//! Usage: chain-import-helper DB_DIR BLOCKS

use std::process::ExitCode;

use lifeline_consensus::Chain;
use lifeline_consensus::chain::Validation;
use lifeline_storage::Database;
use lifeline_tests::{scripted_blocks, scripted_genesis};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chain-import-helper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(count)) = (args.get(1), args.get(2)) else {
        return Err("usage: chain-import-helper DB_DIR BLOCKS".into());
    };
    let count: u64 = count.parse().map_err(|e| format!("BLOCKS: {e}"))?;
    let blocks = scripted_blocks(count)?;
    let db = Database::open(std::path::Path::new(dir)).map_err(|e| e.to_string())?;
    let mut chain =
        Chain::open(db.chain_store(), &scripted_genesis()?).map_err(|e| e.to_string())?;
    let start = usize::try_from(chain.head().number).map_err(|e| e.to_string())?;
    println!("ready");
    for (block, _) in blocks.iter().skip(start) {
        let now = block.header().timestamp;
        let imported = chain
            .import(block, Validation::Full { now })
            .map_err(|e| e.to_string())?;
        println!("imported {}", imported.head.number);
    }
    Ok(())
}
