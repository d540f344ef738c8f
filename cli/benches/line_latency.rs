//! P0 latency across five real daemons in network namespaces, A-B-C-D-E,
//! with every link limited like a radio hop (tbf: 20 Mbit/s each way; these
//! kernels have no netem, so no added delay), first on idle links, then while
//! A sends P3 bulk data to E at 80% of the links' capacity.
//!
//! Latency is one way, A to E, as the nodes themselves record it: E's inbox
//! entry holds when A sealed the message and when E received it (one clock:
//! one machine). The baseline, measured in the same run, is the same P0
//! traffic on idle links; the figure that matters is loaded against idle.
//!
//! P0 is rate-limited per origin (a burst of 3, then one per 20 s), so
//! samples are few and slow: `cargo bench -p lifeline --bench line_latency`
//! takes 6 idle and 6 loaded (about 4 minutes); under `cargo test` (no
//! `--bench`) one of each, to keep it working. Needs root (network namespaces);
//! `LIFELINE_SKIP_NETNS=1` skips it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, Line, lifeline, ok};

const NODES: usize = 5;
const RATE_MBIT: u32 = 20;
/// Bulk message size; at 80% of 20 Mbit/s, one every 66 ms (each is one
/// `lifeline send` process, which takes some milliseconds to start).
const BULK_BYTES: usize = 128 * 1024;
const LOAD: f64 = 0.8;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The one-way latency of the message `text` in E's inbox, once it is there.
/// (The inbox lists the newest 1,000 entries, and bulk data arrives there
/// too, so each sample is read soon after it is sent.)
fn arrival(e: &Daemon, text: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ok(
            lifeline(&e.dir).args(["--json", "inbox"]).output().unwrap(),
            "inbox",
        );
        let found = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|m| m["text"] == text);
        if let Some(m) = found {
            return m["received_ms"]
                .as_u64()
                .unwrap()
                .saturating_sub(m["sent_ms"].as_u64().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} did not arrive within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `count` P0 messages A to E, the first `ready` of them at once (what
/// the origin's rate limit holds), the others 21 s after the one before (it
/// refills one every 20 s); returns their one-way latencies in ms, sorted.
fn p0_samples(
    a: &Daemon,
    e: &Daemon,
    card: &std::path::Path,
    tag: &str,
    count: usize,
    ready: usize,
) -> Vec<u64> {
    let mut latencies = Vec::new();
    let mut last = Instant::now();
    for i in 0..count {
        if i >= ready {
            let next = last + Duration::from_secs(21);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let text = format!("{tag} P0 sample {i}");
        last = Instant::now();
        let mut send = a.send_to(e, card, &["--priority", "urgent", &text]);
        ok(send.output().unwrap(), "send P0");
        latencies.push(arrival(e, &text));
    }
    latencies.sort_unstable();
    latencies
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let samples = if bench { 6 } else { 1 };
    let Some(line) = Line::for_test("lb", NODES) else {
        return;
    };
    line.shape(RATE_MBIT).unwrap();
    let root = tempfile::tempdir().unwrap();
    let nodes = line.start_daemons(root.path());
    let (a, e) = (&nodes[0], &nodes[NODES - 1]);
    a.wait_for_route(e, Duration::from_secs(90));
    let card = e.card_file(root.path());

    let idle = p0_samples(a, e, &card, "idle", samples, 3);

    // P3 load: one bulk message every interval, from another thread.
    let interval =
        Duration::from_secs_f64((BULK_BYTES * 8) as f64 / (f64::from(RATE_MBIT) * 1e6 * LOAD));
    let bulk = root.path().join("bulk.txt");
    std::fs::write(&bulk, "x".repeat(BULK_BYTES)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let loader = {
        let (stop, sent, dir, to, card, bulk) = (
            stop.clone(),
            sent.clone(),
            a.dir.clone(),
            e.id.clone(),
            card.clone(),
            bulk.clone(),
        );
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let mut send = lifeline(&dir);
                send.args(["send", "--priority", "bulk", "--to", &to, "--card"])
                    .arg(&card)
                    .arg("--file")
                    .arg(&bulk);
                if send.output().is_ok_and(|o| o.status.success()) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                next += interval;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    // Let the load build queues along the line, then measure under it. The
    // P0 limit also needs its 20 s since the idle burst.
    std::thread::sleep(Duration::from_secs(21));
    let started = Instant::now();
    let loaded = p0_samples(a, e, &card, "loaded", samples, 1);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();

    let offered = sent.load(Ordering::Relaxed);
    let load_secs = elapsed.as_secs_f64() + 21.0;
    let fraction =
        (offered as f64 * (BULK_BYTES * 8) as f64) / (load_secs * f64::from(RATE_MBIT) * 1e6);
    println!(
        "line_latency: {NODES} daemons in a line, links limited to {RATE_MBIT} Mbit/s, A to E \
         (4 hops)"
    );
    println!(
        "  P0 idle:   p50 {} ms, p99 {} ms ({} samples)",
        percentile(&idle, 0.5),
        percentile(&idle, 0.99),
        idle.len()
    );
    println!(
        "  P0 loaded: p50 {} ms, p99 {} ms ({} samples) while A offered P3 at {:.0}% of link \
         capacity (aimed at {:.0}%: {offered} bulk messages of {} KiB in {load_secs:.1}s)",
        percentile(&loaded, 0.5),
        percentile(&loaded, 0.99),
        loaded.len(),
        fraction * 100.0,
        LOAD * 100.0,
        BULK_BYTES / 1024,
    );
    println!(
        "  loaded / idle: p50 {:.2}x, p99 {:.2}x",
        percentile(&loaded, 0.5) as f64 / percentile(&idle, 0.5).max(1) as f64,
        percentile(&loaded, 0.99) as f64 / percentile(&idle, 0.99).max(1) as f64
    );
    drop(nodes);
    drop(line);
}
