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

use std::path::Path;
use std::time::{Duration, Instant};

use lifeline_crypto::{KeyBundle, Timestamp};
use lifeline_node::pb::control as api;
use lifeline_node::pb::control::control_client::ControlClient;
use lifeline_node::{Config, Options};
use tokio::sync::oneshot;
use tonic::transport::Channel;

struct Node {
    control: ControlClient<Channel>,
    id: String,
    card: Vec<u8>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path, bootstrap: Vec<String>) -> (Node, String) {
    let keys = KeyBundle::generate(
        Timestamp::from_unix_millis(1_800_000_000_000),
        &mut rand::rng(),
    );
    let card = keys.prekeys.current().to_bytes().to_vec();
    let config = Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        mdns: false,
        metrics: "off".into(),
        ..Config::default()
    };
    let options = Options {
        config,
        data_dir: dir.to_path_buf(),
        keys,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        lifeline_node::run(options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let socket = dir.join("control.sock");
    let mut control = None;
    for _ in 0..200 {
        if let Ok(c) = lifeline_node::client::connect(&socket).await {
            control = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut control = control.expect("control socket");
    let status = loop {
        let s = control
            .status(api::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if !s.listen_addrs.is_empty() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let addr = format!("{}/p2p/{}", status.listen_addrs[0], status.id);
    let node = Node {
        control,
        id: status.id,
        card,
        stop,
        task,
    };
    (node, addr)
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
    let (mut b, b_addr) = start(dir_b.path(), Vec::new()).await;
    let (mut a, _) = start(dir_a.path(), vec![b_addr]).await;

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
        let id = a
            .control
            .send(api::SendRequest {
                to: b.id.clone(),
                text: format!("latency {i}").into_bytes(),
                priority: api::Priority::Normal.into(),
                prekey: b.card.clone(),
                ttl_secs: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        loop {
            let s = a
                .control
                .message_status(api::MessageStatusRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            if s.status == "delivered" {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();

    // Throughput: all at once, until every receipt is back.
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..messages {
        ids.push(
            a.control
                .send(api::SendRequest {
                    to: b.id.clone(),
                    text: vec![b'x'; 1024 + i % 2],
                    priority: api::Priority::Normal.into(),
                    prekey: b.card.clone(),
                    ttl_secs: 0,
                })
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    let mut pending = ids;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let s = a
                .control
                .message_status(api::MessageStatusRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            if s.status != "delivered" {
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

    for node in [a, b] {
        node.stop.send(()).unwrap();
        node.task.await.unwrap();
    }
}
