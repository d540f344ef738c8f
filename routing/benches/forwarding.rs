//! The router's forwarding path and its control traffic.
//!
//! `cargo bench -p lifeline-routing --bench forwarding` prints:
//!
//! - **Forwarding**: one relay handling a P2 message from its upstream
//!   neighbour end to end: reassembly, decoding and checking the frame
//!   (including the BLAKE3 message id), taking custody (in-memory store,
//!   one batch per message), queueing it on the next hop's link, polling it
//!   out as a packet, and handling the next hop's custody acknowledgement.
//!   No signatures (P2 carries none). Reported as frames per second and as a
//!   ratio against a baseline measured in the same run, interleaved: what
//!   any relay must do at the least, decoding the packet and frame and
//!   encoding them again.
//! - **Control traffic**: bytes per node per second in steady state on the
//!   Freifunk Leipzig mesh (210 nodes, 413 links, 1 ms links as in
//!   meshnet-lab), counted, so not subject to machine noise. Target: under 200.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use lifeline_routing::routes::RouteMessage;
use lifeline_routing::wire::{AckOutcome, Body, Frame, Message, Packet};
use lifeline_routing::{Address, Class, Config, MemoryMessageStore, MessageId, Router};

const PAYLOAD: usize = 1024;

struct Relay {
    router: Router<MemoryMessageStore>,
    upstream: Address,
    next_hop: Address,
    destination: Address,
    frame: u64,
}

impl Relay {
    fn new() -> Relay {
        let me = common::identity(1);
        let upstream = Address::from(common::identity(0).id());
        let next_hop = Address::from(common::identity(2).id());
        let destination = Address::from(common::identity(3).id());
        let config = Config {
            custody_max_messages: 1_000_000,
            ..Config::default()
        };
        let mut router = Router::new(me, config, MemoryMessageStore::new(), [0; 32], 0).unwrap();
        router.handle_link_up(0, upstream, 300);
        router.handle_link_up(0, next_hop, 300);
        let route = Frame::Control(vec![RouteMessage::Update {
            destination,
            seqno: 1,
            metric: 300,
            reach: 0,
        }]);
        router.handle_packet(0, &next_hop, &packet(1, route.encode()));
        while router.poll_link(0, &next_hop).is_some() {}
        while router.poll_link(0, &upstream).is_some() {}
        while router.poll_event().is_some() {}
        Relay {
            router,
            upstream,
            next_hop,
            destination,
            frame: 10,
        }
    }

    fn message(&self, n: u64) -> (MessageId, Vec<u8>) {
        make_message(self.destination, n)
    }

    /// One message through the relay, custody acknowledgements included.
    fn forward(&mut self, id: MessageId, frame: &[u8]) {
        self.frame += 1;
        let r = &mut self.router;
        r.handle_packet(1, &self.upstream, &packet(self.frame, frame.to_vec()));
        let out = r.poll_link(1, &self.next_hop).expect("forwarded");
        black_box(out);
        let ack = Frame::Ack {
            id,
            outcome: AckOutcome::Forwarding,
        };
        r.handle_packet(1, &self.next_hop, &packet(self.frame, ack.encode()));
        // Writes custody, which queues the acknowledgement upstream.
        r.flush();
        black_box(r.poll_link(1, &self.upstream).expect("acknowledged"));
        while r.poll_event().is_some() {}
    }
}

fn make_message(destination: Address, n: u64) -> (MessageId, Vec<u8>) {
    let body = Body::sealed(
        Class::P2,
        destination,
        0,
        3_600_000,
        n.to_le_bytes(),
        vec![0xab; PAYLOAD],
    );
    let m = Message::new(body, None, 32);
    (m.id, Frame::Message(Box::new(m)).encode())
}

fn packet(frame: u64, data: Vec<u8>) -> Vec<u8> {
    Packet {
        frame,
        index: 0,
        count: 1,
        class: Class::P2,
        data,
    }
    .encode()
}

/// The baseline: decode the packet and the frame, encode them again.
fn codec_only(wire: &[u8]) -> Vec<u8> {
    let p = Packet::decode(wire).unwrap();
    let f = Frame::decode(&p.data).unwrap();
    packet(p.frame, f.encode())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ratio(rounds: usize, batch: u64) {
    let mut relay = Relay::new();
    let messages: Vec<(MessageId, Vec<u8>)> = (0..batch).map(|n| relay.message(n)).collect();
    let wires: Vec<Vec<u8>> = messages.iter().map(|(_, f)| packet(1, f.clone())).collect();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Fresh messages each round (a relay forwards each message once).
        let fresh: Vec<(MessageId, Vec<u8>)> = (0..batch)
            .map(|n| relay.message(n + (round as u64 + 1) * batch))
            .collect();
        let t = Instant::now();
        for (id, frame) in &fresh {
            relay.forward(*id, frame);
        }
        ours.push(t.elapsed());
        let t = Instant::now();
        for w in &wires {
            black_box(codec_only(w));
        }
        base.push(t.elapsed());
    }
    let (ours, base) = (median(ours), median(base));
    let per = |d: Duration| d.as_secs_f64() / batch as f64;
    println!("\nforwarding a {PAYLOAD}-byte P2 message through a relay, custody included");
    println!(
        "  relay path: {:>9.0} frames/s   codec only: {:>9.0} frames/s   ratio {:.2}",
        1.0 / per(ours),
        1.0 / per(base),
        per(ours) / per(base)
    );
}

fn control_traffic(seconds: u64) {
    let mut net = common::leipzig(1, Config::default());
    let started = Instant::now();
    let (control, wire) = common::steady_control_bytes(&mut net, seconds);
    println!(
        "\ncontrol traffic on the Leipzig mesh (210 nodes), {seconds} s of steady state:\n  \
         {control:.1} B/s per node in routing frames, {wire:.1} B/s per node on the wire \
         (target < 200; Babel measured 470-620, Yggdrasil 170-215)   [simulated in {:.1} s]",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and then
    // each part runs once, briefly, as a smoke test.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    let mut relay = Relay::new();
    let destination = relay.destination;
    let mut n = 0;
    let mut group = criterion.benchmark_group("forwarding");
    group.throughput(Throughput::Elements(1));
    group.bench_function("relay_p2_1KiB", |b| {
        b.iter_batched(
            || {
                n += 1;
                make_message(destination, n)
            },
            |(id, frame)| relay.forward(id, &frame),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    criterion.final_summary();
    if benchmarking {
        ratio(31, 2_000);
        control_traffic(3_600);
    } else {
        ratio(3, 50);
        control_traffic(300);
    }
}
