//! Nothing lost: a process importing blocks into RocksDB is killed (SIGKILL)
//! at random moments, many times. After every kill the database opens, its
//! head is a fully imported block of the expected chain (same hash, same state
//! root), and no block the process had reported as imported is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeline_consensus::Chain;
use lifeline_storage::Database;
use lifeline_tests::{scripted_blocks, scripted_genesis};
use rand::{RngExt, SeedableRng};

const BLOCKS: u64 = 600;
const KILLS: usize = 15;

fn helper(dir: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_chain-import-helper"))
        .arg(dir)
        .arg(BLOCKS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the helper")
}

/// Waits for the helper to start importing, lets it run for `run`, kills it
/// (SIGKILL) and returns the highest block it reported as imported.
fn kill_after(child: &mut std::process::Child, run: Duration) -> u64 {
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut last = 0;
    for line in lines.by_ref() {
        if line == "ready" {
            break;
        }
    }
    std::thread::sleep(run);
    child.kill().unwrap();
    child.wait().unwrap();
    for line in lines {
        if let Some(n) = line.strip_prefix("imported ").and_then(|n| n.parse().ok()) {
            last = n;
        }
    }
    last
}

#[test]
fn killed_imports_lose_nothing_and_leave_nothing_half_written() {
    let expected = scripted_blocks(BLOCKS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut acknowledged = 0;
    let mut heads = Vec::new();
    for _ in 0..KILLS {
        let mut child = helper(dir.path());
        // A synced block takes one to a few milliseconds here: each kill lands
        // some blocks further on, and all of them mid-import.
        let run = Duration::from_millis(rng.random_range(0..40));
        acknowledged = acknowledged.max(kill_after(&mut child, run));

        let db = Database::open(dir.path()).unwrap();
        let chain = Chain::open(db.chain_store(), &scripted_genesis().unwrap()).unwrap();
        let head = chain.head();
        assert!(
            head.number >= acknowledged,
            "block {acknowledged} was reported imported but the head is {}",
            head.number
        );
        if head.number > 0 {
            let (block, root) = &expected[usize::try_from(head.number - 1).unwrap()];
            assert_eq!(
                head.hash,
                block.hash(),
                "head {} is not the expected block",
                head.number
            );
            assert_eq!(
                chain.state().root(),
                *root,
                "state at head {} differs",
                head.number
            );
        }
        heads.push(head.number);
    }
    // Let it finish.
    let mut child = helper(dir.path());
    assert!(child.wait().unwrap().success());
    let db = Database::open(dir.path()).unwrap();
    let chain = Chain::open(db.chain_store(), &scripted_genesis().unwrap()).unwrap();
    assert_eq!(chain.head().number, BLOCKS);
    assert_eq!(chain.state().root(), expected.last().unwrap().1);
    eprintln!("heads after each kill: {heads:?}");
    // The kills landed at different points of the work.
    heads.dedup();
    assert!(
        heads.len() >= 3,
        "kills did not interrupt the import at varied points: {heads:?}"
    );
}
