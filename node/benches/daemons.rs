//! Two daemons on loopback: message throughput and receipt latency through
//! the whole stack (control API, sealing, router, mesh stream over TCP,
//! Noise and yamux, custody written to RocksDB, opening, inbox, receipt).
//!
//! The baseline, measured in the same run, is libp2p's ping round trip
//! between the same two nodes: the figures are reported as ratios to it, so
//! that they mean something on a shared, noisy machine.
//!
//! `cargo bench -p lifeline-node --bench daemons` runs 2,000 messages; under
//! `cargo test` (no `--bench`) it runs 20, to keep it working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::LocalNode;
use lifeline_node::pb::control as api;

/// Waits until message `id` sent from `node` has its receipt.
async fn wait_delivered(node: &mut LocalNode, id: &str) {
    while !delivered(node, id).await {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn delivered(node: &mut LocalNode, id: &str) -> bool {
    let s = node
        .control
        .message_status(api::MessageStatusRequest { id: id.to_string() })
        .await
        .unwrap()
        .into_inner();
    s.status == "delivered"
}

/// Sends `text` from `from` to `to`, sealed to `to`'s card; the message id.
async fn send(from: &mut LocalNode, to: &LocalNode, text: Vec<u8>) -> String {
    from.control
        .send(api::SendRequest {
            to: to.id.clone(),
            text,
            priority: api::Priority::Normal.into(),
            prekey: to.card.clone(),
            ttl_secs: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let messages = if full { 2_000 } else { 20 };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut b = LocalNode::start(dir_b.path(), Vec::new()).await;
    let mut a = LocalNode::start(dir_a.path(), vec![b.addr.clone()]).await;

    // Wait for the mesh link and a ping round trip.
    let rtt = loop {
        let peers = a
            .control
            .peers(api::PeersRequest {})
            .await
            .unwrap()
            .into_inner();
        if let Some(p) = peers
            .peers
            .iter()
            .find(|p| p.id == b.id && p.mesh && p.rtt_us > 0)
        {
            break Duration::from_micros(p.rtt_us);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Latency: one message at a time, until its receipt is back.
    let mut latencies = Vec::new();
    for i in 0..messages / 4 {
        let started = Instant::now();
        let id = send(&mut a, &b, format!("latency {i}").into_bytes()).await;
        wait_delivered(&mut a, &id).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();

    // Throughput: all at once, until every receipt is back.
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..messages {
        ids.push(send(&mut a, &b, vec![b'x'; 1024 + i % 2]).await);
    }
    let mut pending = ids;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            if !delivered(&mut a, &id).await {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "receipts stopped coming"
        );
    }
    let elapsed = started.elapsed();
    let inbox_count = {
        let mut stream = b
            .control
            .inbox(api::InboxRequest { watch: false })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while stream.message().await.unwrap().is_some() {
            n += 1;
        }
        n
    };
    assert!(
        inbox_count >= messages.min(1_000),
        "the inbox holds {inbox_count}"
    );

    let p50 = percentile(&latencies, 0.5);
    let p99 = percentile(&latencies, 0.99);
    let ratio = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
    println!(
        "daemons on loopback ({} latency samples, {messages} for throughput)",
        latencies.len()
    );
    println!(
        "  baseline: libp2p ping round trip {:.3} ms",
        rtt.as_secs_f64() * 1e3
    );
    println!(
        "  send -> receipt latency: p50 {:.2} ms ({:.1}x ping), p99 {:.2} ms ({:.1}x ping)",
        p50.as_secs_f64() * 1e3,
        ratio(p50),
        p99.as_secs_f64() * 1e3,
        ratio(p99)
    );
    println!(
        "  throughput, 1 KiB messages with receipts: {:.0} messages/s ({:.2} s for {messages})",
        messages as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    a.stop().await;
    b.stop().await;
}
