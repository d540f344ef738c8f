//! SOS and message latency across a node while it imports a long chain
//! from a neighbour, against the same node idle (issue 23, item 12).
//!
//! Node B is behind; node A holds `blocks` blocks. A sender S, B's other
//! neighbour, sends SOS calls and messages to B: first while B is idle
//! (the baseline, measured in the same run), then while B imports A's chain
//! (each block a signature check and a synced RocksDB write). The figures
//! are one-way latencies, from S's creation time to B's inbox, and their
//! ratio to the idle ones.
//!
//! `cargo bench -p lifeline-node --bench block_flood` imports 20,000 blocks;
//! under `cargo test` (no `--bench`) 200, to keep it working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::LocalNode;
use lifeline_consensus::Chain;
use lifeline_consensus::chain::Validation;
use lifeline_consensus::conformance::identity_of;
use lifeline_consensus::genesis::GenesisFile;
use lifeline_node::pb::control as api;
use tokio::sync::mpsc;

/// Writes a genesis whose three authorities (the conformance identities
/// A, B, C) sealed `blocks` blocks, one a second, ending a minute ago, into
/// `dir`'s database; returns the genesis file.
fn chain_of(dir: &Path, blocks: u64) -> PathBuf {
    let names = ["A", "B", "C"];
    let ids: Vec<_> = names
        .iter()
        .map(|n| *identity_of(n).unwrap().id())
        .collect();
    let start = SystemTime::now() - Duration::from_secs(blocks + 60);
    let mut file = GenesisFile::new(&ids, start);
    file.period_secs = 1;
    file.heartbeat_secs = 1;
    let genesis = file.to_genesis().unwrap();
    let path = dir.join("genesis.toml");
    std::fs::write(&path, file.to_toml().unwrap()).unwrap();
    // Where the node keeps its database (node/src/driver.rs).
    let db = lifeline_storage::Database::open(&dir.join("db")).unwrap();
    let mut chain = Chain::open(db.chain_store(), &genesis).unwrap();
    chain.set_synced_writes(false);
    for i in 0..blocks {
        let by = identity_of(names[(i % 3) as usize]).unwrap();
        let t = chain
            .head()
            .timestamp
            .saturating_add(Duration::from_secs(1));
        let block = chain.propose(&by, t, None, vec![]).unwrap();
        chain.import(&block, Validation::Full { now: t }).unwrap();
    }
    chain.flush().unwrap();
    path
}

async fn head(node: &LocalNode) -> u64 {
    node.control
        .clone()
        .chain_status(api::ChainStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .head_number
}

/// Sends one SOS and `messages` messages from `s` to `b`, 20 ms apart;
/// returns their ids, SOS first.
async fn send_round(
    s: &mut LocalNode,
    b: &LocalNode,
    round: usize,
    messages: usize,
) -> Vec<String> {
    let mut ids = vec![
        s.control
            .sos(api::SosRequest {
                text: format!("round {round}"),
                lat_micro: None,
                lon_micro: None,
            })
            .await
            .unwrap()
            .into_inner()
            .id,
    ];
    for i in 0..messages {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reply = s
            .control
            .send(api::SendRequest {
                to: b.id.clone(),
                text: format!("round {round} message {i}").into_bytes(),
                priority: api::Priority::Normal.into(),
                prekey: b.card.clone(),
                ttl_secs: 0,
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(reply.id);
    }
    ids
}

/// Waits for `ids` in b's inbox; one-way latencies (ms) of SOS calls and of
/// messages.
async fn latencies(
    inbox: &mut mpsc::UnboundedReceiver<api::InboxMessage>,
    ids: &[String],
) -> (Vec<u64>, Vec<u64>) {
    let (mut sos, mut messages) = (Vec::new(), Vec::new());
    let mut left: Vec<&String> = ids.iter().collect();
    while !left.is_empty() {
        let m = tokio::time::timeout(Duration::from_secs(60), inbox.recv())
            .await
            .expect("everything sent arrives")
            .unwrap();
        if let Some(i) = left.iter().position(|id| **id == m.id) {
            left.swap_remove(i);
            let latency = m.received_ms.saturating_sub(m.sent_ms);
            if m.kind == "sos" {
                sos.push(latency);
            } else {
                messages.push(latency);
            }
        }
    }
    (sos, messages)
}

fn median(v: &mut [u64]) -> f64 {
    v.sort_unstable();
    v[v.len() / 2] as f64
}

// Three nodes share this runtime; each is its own process in real life, so
// enough threads that one node's synced writes do not stall the others.
#[tokio::main(flavor = "multi_thread", worker_threads = 6)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let blocks = if full { 20_000 } else { 200 };
    let (dir_a, dir_b, dir_s) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let genesis = chain_of(dir_a.path(), blocks);
    for dir in [&dir_b, &dir_s] {
        std::fs::copy(&genesis, dir.path().join("genesis.toml")).unwrap();
    }
    let with_genesis = |dir: &Path| {
        let path = dir.join("genesis.toml");
        move |c: &mut lifeline_node::Config| c.genesis = Some(path)
    };
    let b = LocalNode::start_with(dir_b.path(), Vec::new(), with_genesis(dir_b.path())).await;
    let mut s = LocalNode::start_with(
        dir_s.path(),
        vec![b.addr.clone()],
        with_genesis(dir_s.path()),
    )
    .await;
    let (linked, _) = b.wait_for_peer(&s.id, true, Duration::from_secs(20)).await;
    assert!(linked, "no mesh link to the sender");
    let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
    let mut watch = b
        .control
        .clone()
        .inbox(api::InboxRequest { watch: true })
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(m)) = watch.message().await {
            if inbox_tx.send(m).is_err() {
                return;
            }
        }
    });

    // Idle: one round (SOS calls are limited to 3 per origin at once, so
    // three rounds in all).
    let per_round = 10;
    let (mut idle_sos, mut idle_msg) = (Vec::new(), Vec::new());
    for round in 0..1 {
        let ids = send_round(&mut s, &b, round, per_round).await;
        let (sos, msg) = latencies(&mut inbox, &ids).await;
        idle_sos.extend(sos);
        idle_msg.extend(msg);
    }

    // Under the flood: A comes, and B imports its chain.
    let started = std::time::Instant::now();
    let a = LocalNode::start_with(
        dir_a.path(),
        vec![b.addr.clone()],
        with_genesis(dir_a.path()),
    )
    .await;
    assert_eq!(head(&a).await, blocks, "A does not hold the chain");
    let (mut flood_sos, mut flood_msg) = (Vec::new(), Vec::new());
    let mut during = 0;
    for round in 1..3 {
        if head(&b).await >= blocks {
            break;
        }
        let ids = send_round(&mut s, &b, round, per_round).await;
        let importing = head(&b).await < blocks;
        let (sos, msg) = latencies(&mut inbox, &ids).await;
        if importing {
            during += 1;
            flood_sos.extend(sos);
            flood_msg.extend(msg);
        }
    }
    for _ in 0..1_200 {
        if head(&b).await >= blocks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(head(&b).await, blocks, "B did not catch up");
    let catch_up = started.elapsed();

    println!(
        "SOS and messages across a node importing {blocks} blocks (one-way, ms); it caught up in {:.1} s",
        catch_up.as_secs_f64()
    );
    println!(
        "  idle:   SOS median {:.0} ms, messages median {:.0} ms ({} samples)",
        median(&mut idle_sos),
        median(&mut idle_msg),
        idle_sos.len() + idle_msg.len()
    );
    if during == 0 {
        println!("  the import ended before a round could be sent: no flood figures");
    } else {
        let (fs, fm) = (median(&mut flood_sos), median(&mut flood_msg));
        println!(
            "  import: SOS median {fs:.0} ms (max {}), messages median {fm:.0} ms (max {}), {} samples",
            flood_sos.iter().max().unwrap(),
            flood_msg.iter().max().unwrap(),
            flood_sos.len() + flood_msg.len()
        );
        let base = median(&mut idle_msg).max(1.0);
        println!(
            "  ratio to idle (messages, idle median floored at 1 ms): median {:.1}x, max {:.1}x",
            fm / base,
            *flood_msg.iter().max().unwrap() as f64 / base
        );
    }
    a.stop().await;
    s.stop().await;
    b.stop().await;
}
