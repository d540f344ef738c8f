//! A deterministic in-process harness: routers on simulated links with a
//! fake clock. Links are FIFO with a latency, a bandwidth and a loss rate;
//! one packet is on a link at a time, so a link's queue lives in the sending
//! router's scheduler, as it would on a real stream.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use lifeline_crypto::Identity;
use lifeline_routing::routes::link_cost;
use lifeline_routing::{
    Address, Config, Delivery, Event, MemoryMessageStore, MessageId, Router, SendRequest,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// A simulated link, one direction.
#[derive(Clone, Debug)]
pub struct Link {
    pub latency_ms: u64,
    /// Bytes per millisecond.
    pub bytes_per_ms: u64,
    pub loss: f64,
    busy_until: u64,
    /// Arrival time of the latest packet: links are FIFO, even when their
    /// latency changes.
    last_arrival: u64,
    /// Bumped when the link goes down, so packets in flight are lost.
    generation: u64,
    up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive {
        to: usize,
        from: usize,
        generation: u64,
        bytes: Vec<u8>,
    },
    LinkFree {
        from: usize,
        to: usize,
    },
    Timer {
        node: usize,
    },
}

pub struct Node {
    pub identity: Identity,
    pub address: Address,
    pub router: Option<Router<MemoryMessageStore>>,
    pub deliveries: Vec<(u64, Delivery)>,
    pub events: Vec<(u64, Event)>,
    /// Packets this node put on links.
    pub packets_sent: u64,
    pub bytes_sent: u64,
}

impl Node {
    pub fn router(&self) -> &Router<MemoryMessageStore> {
        self.router.as_ref().unwrap()
    }

    pub fn router_mut(&mut self) -> &mut Router<MemoryMessageStore> {
        self.router.as_mut().unwrap()
    }
}

pub struct Net {
    pub now: u64,
    pub nodes: Vec<Node>,
    pub config: Config,
    links: BTreeMap<(usize, usize), Link>,
    adjacency: Vec<Vec<usize>>,
    index: HashMap<Address, usize>,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    rng: StdRng,
    timers: Vec<Option<u64>>,
    /// Called after every event: checks that must hold at all times.
    pub processed: u64,
}

pub fn identity(i: usize) -> Identity {
    let seed = blake3::hash(format!("harness node {i}").as_bytes());
    Identity::from_secret_bytes(seed.as_bytes()).unwrap()
}

impl Net {
    pub fn new(n: usize, config: Config, seed: u64) -> Net {
        let mut net = Net {
            now: 1_000_000,
            nodes: Vec::new(),
            config,
            links: BTreeMap::new(),
            adjacency: vec![Vec::new(); n],
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            timers: vec![None; n],
            processed: 0,
        };
        for i in 0..n {
            let identity = identity(i);
            let address = Address::from(identity.id());
            let router = Router::new(
                identity.clone(),
                net.config.clone(),
                MemoryMessageStore::new(),
                *blake3::hash(&i.to_le_bytes()).as_bytes(),
                net.now,
            )
            .unwrap();
            net.index.insert(address, i);
            net.nodes.push(Node {
                identity,
                address,
                router: Some(router),
                deliveries: Vec::new(),
                events: Vec::new(),
                packets_sent: 0,
                bytes_sent: 0,
            });
        }
        for i in 0..n {
            net.pump(i);
        }
        net
    }

    /// A line 0 - 1 - ... - n-1.
    pub fn line(n: usize, latency_ms: u64, config: Config) -> Net {
        let mut net = Net::new(n, config, 1);
        for i in 1..n {
            net.connect(i - 1, i, latency_ms, 1_000, 0.0);
        }
        net
    }

    /// A `side` x `side` grid; `latency(row, column, down)` gives the
    /// latency of the link right of (or, with `down`, below) a node.
    pub fn grid(side: usize, seed: u64, latency: impl Fn(usize, usize, bool) -> u64) -> Net {
        let mut net = Net::new(side * side, Config::default(), seed);
        for r in 0..side {
            for c in 0..side {
                let here = r * side + c;
                if c + 1 < side {
                    net.connect(here, here + 1, latency(r, c, false), 1_000, 0.0);
                }
                if r + 1 < side {
                    net.connect(here, here + side, latency(r, c, true), 1_000, 0.0);
                }
            }
        }
        net
    }

    pub fn addr(&self, i: usize) -> Address {
        self.nodes[i].address
    }

    pub fn degree(&self, i: usize) -> usize {
        self.adjacency[i].len()
    }

    pub fn neighbours(&self, i: usize) -> &[usize] {
        &self.adjacency[i]
    }

    /// Links `a` and `b` both ways. `bytes_per_ms` 1000 is 8 Mbit/s.
    pub fn connect(&mut self, a: usize, b: usize, latency_ms: u64, bytes_per_ms: u64, loss: f64) {
        for (x, y) in [(a, b), (b, a)] {
            let link = self.links.entry((x, y)).or_insert(Link {
                latency_ms,
                bytes_per_ms,
                loss,
                busy_until: 0,
                last_arrival: 0,
                generation: 0,
                up: false,
            });
            link.latency_ms = latency_ms;
            link.bytes_per_ms = bytes_per_ms.max(1);
            link.loss = loss;
            link.up = true;
            link.busy_until = link.busy_until.max(self.now);
            if !self.adjacency[x].contains(&y) {
                self.adjacency[x].push(y);
            }
        }
        let cost = link_cost(std::time::Duration::from_millis(2 * latency_ms), loss);
        for (x, y) in [(a, b), (b, a)] {
            let now = self.now;
            let addr = self.addr(y);
            if let Some(r) = self.nodes[x].router.as_mut() {
                r.handle_link_up(now, addr, cost);
            }
        }
        self.pump(a);
        self.pump(b);
    }

    pub fn disconnect(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(link) = self.links.get_mut(&(x, y)) {
                link.up = false;
                link.generation += 1;
            }
            self.adjacency[x].retain(|n| *n != y);
            let now = self.now;
            let addr = self.addr(y);
            if let Some(r) = self.nodes[x].router.as_mut() {
                r.handle_link_down(now, &addr);
            }
        }
        self.pump(a);
        self.pump(b);
    }

    /// Stops node `i` (its links go down, its store is kept), then starts it
    /// again from its store and brings its links back.
    pub fn restart(&mut self, i: usize) {
        let neighbours = self.adjacency[i].clone();
        let saved: Vec<(usize, Link)> = neighbours
            .iter()
            .map(|n| (*n, self.links[&(i, *n)].clone()))
            .collect();
        for n in &neighbours {
            self.disconnect(i, *n);
        }
        let store = self.nodes[i].router.take().unwrap().into_store();
        let router = Router::new(
            self.nodes[i].identity.clone(),
            self.config.clone(),
            store,
            *blake3::hash(&(i + 1_000_000).to_le_bytes()).as_bytes(),
            self.now,
        )
        .unwrap();
        self.nodes[i].router = Some(router);
        for (n, link) in saved {
            self.connect(i, n, link.latency_ms, link.bytes_per_ms, link.loss);
        }
    }

    pub fn send(&mut self, from: usize, request: SendRequest) -> MessageId {
        let now = self.now;
        let id = self.nodes[from].router_mut().send(now, request).unwrap();
        self.pump(from);
        id
    }

    pub fn with_router<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Router<MemoryMessageStore>, u64) -> T,
    ) -> T {
        let now = self.now;
        let out = f(self.nodes[i].router_mut(), now);
        self.pump(i);
        out
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Drains a node's events and fills its idle links.
    fn pump(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        let Some(router) = node.router.as_mut() else {
            return;
        };
        while let Some(event) = router.poll_event() {
            if let Event::Delivered(d) = &event {
                node.deliveries.push((now, d.clone()));
            }
            if !matches!(event, Event::LinkReady(_)) {
                node.events.push((now, event));
            }
        }
        for j in self.adjacency[i].clone() {
            self.fill_link(i, j);
        }
        let router = self.nodes[i].router.as_ref().unwrap();
        if let Some(t) = router.poll_timeout()
            && self.timers[i].is_none_or(|s| t < s)
        {
            self.timers[i] = Some(t);
            self.push(t.max(now), Ev::Timer { node: i });
        }
    }

    fn fill_link(&mut self, i: usize, j: usize) {
        let now = self.now;
        let Some(link) = self.links.get(&(i, j)) else {
            return;
        };
        if !link.up || link.busy_until > now {
            return;
        }
        let addr = self.addr(j);
        let Some(bytes) = self.nodes[i].router_mut().poll_link(now, &addr) else {
            return;
        };
        self.nodes[i].packets_sent += 1;
        self.nodes[i].bytes_sent += bytes.len() as u64;
        let link = self.links.get_mut(&(i, j)).unwrap();
        let transmit = (bytes.len() as u64).div_ceil(link.bytes_per_ms).max(1);
        link.busy_until = now + transmit;
        let arrive = (now + transmit + link.latency_ms).max(link.last_arrival);
        link.last_arrival = arrive;
        let generation = link.generation;
        let lost = link.loss > 0.0 && self.rng.random_range(0.0..1.0) < link.loss;
        self.push(now + transmit, Ev::LinkFree { from: i, to: j });
        if !lost {
            self.push(
                arrive,
                Ev::Arrive {
                    to: j,
                    from: i,
                    generation,
                    bytes,
                },
            );
        }
    }

    /// Runs one event; false if none is left before `until`.
    pub fn step(&mut self, until: u64) -> bool {
        let Some(Reverse((at, _, _))) = self.queue.peek() else {
            return false;
        };
        if *at > until {
            return false;
        }
        let Reverse((at, _, ev)) = self.queue.pop().unwrap();
        self.now = self.now.max(at);
        self.processed += 1;
        let now = self.now;
        match ev {
            Ev::Arrive {
                to,
                from,
                generation,
                bytes,
            } => {
                let link = &self.links[&(from, to)];
                if link.up && link.generation == generation {
                    let addr = self.addr(from);
                    if let Some(r) = self.nodes[to].router.as_mut() {
                        r.handle_packet(now, &addr, &bytes);
                    }
                    self.pump(to);
                }
            }
            Ev::LinkFree { from, to } => {
                self.fill_link(from, to);
                self.pump(from);
            }
            Ev::Timer { node } => {
                if self.timers[node] == Some(at) {
                    self.timers[node] = None;
                }
                let due = self.nodes[node]
                    .router
                    .as_ref()
                    .and_then(|r| r.poll_timeout())
                    .is_some_and(|t| t <= now);
                if due {
                    self.nodes[node].router_mut().handle_timeout(now);
                }
                self.pump(node);
            }
        }
        true
    }

    /// Runs for `ms` of simulated time.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        while self.step(until) {}
        self.now = until;
    }

    /// Runs until `done` holds (checked after every event) or `ms` pass;
    /// returns whether it held.
    pub fn run_until(&mut self, ms: u64, mut done: impl FnMut(&Net) -> bool) -> bool {
        let until = self.now + ms;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(until) {
                self.now = until;
                return done(self);
            }
        }
    }

    pub fn delivered(&self, at: usize, id: MessageId) -> Option<(u64, &Delivery)> {
        self.nodes[at]
            .deliveries
            .iter()
            .find(|(_, d)| d.id == id)
            .map(|(t, d)| (*t, d))
    }

    /// Whether every node has a route to every other node of its component.
    pub fn converged(&self) -> bool {
        let n = self.nodes.len();
        let components = self.components();
        (0..n).all(|i| {
            (0..n).all(|j| {
                i == j
                    || components[i] != components[j]
                    || self.nodes[i].router().next_hop(&self.addr(j)).is_some()
            })
        })
    }

    pub fn components(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let mut comp = vec![usize::MAX; n];
        for start in 0..n {
            if comp[start] != usize::MAX {
                continue;
            }
            let mut stack = vec![start];
            comp[start] = start;
            while let Some(x) = stack.pop() {
                for &y in &self.adjacency[x] {
                    if comp[y] == usize::MAX {
                        comp[y] = start;
                        stack.push(y);
                    }
                }
            }
        }
        comp
    }

    /// Follows next hops from `from` to `to`: the path, or `None` if it
    /// loops or breaks.
    pub fn path(&self, from: usize, to: usize) -> Option<Vec<usize>> {
        let target = self.addr(to);
        let mut at = from;
        let mut path = vec![from];
        while at != to {
            let hop = self.nodes[at].router().next_hop(&target)?;
            at = self.index[&hop];
            if path.contains(&at) {
                return None;
            }
            path.push(at);
        }
        Some(path)
    }

    /// Whether the next hops towards `to` form a loop anywhere.
    pub fn has_loop(&self, to: usize) -> bool {
        let target = self.addr(to);
        (0..self.nodes.len()).any(|start| {
            let mut at = start;
            let mut steps = 0;
            while at != to {
                let Some(hop) = self.nodes[at].router().next_hop(&target) else {
                    return false;
                };
                at = self.index[&hop];
                steps += 1;
                if steps > self.nodes.len() {
                    return true;
                }
            }
            false
        })
    }

    pub fn index_of(&self, a: &Address) -> usize {
        self.index[a]
    }

    pub fn link_up(&self, a: usize, b: usize) -> bool {
        self.links.get(&(a, b)).is_some_and(|l| l.up)
    }
}

/// Shortest-path metrics to `to` over the links' routing costs.
pub fn dijkstra_metrics(net: &Net, to: usize) -> Vec<u32> {
    let n = net.nodes.len();
    let mut dist = vec![u32::MAX; n];
    dist[to] = 0;
    let mut heap = BinaryHeap::new();
    heap.push(Reverse((0u32, to)));
    while let Some(Reverse((d, x))) = heap.pop() {
        if d > dist[x] {
            continue;
        }
        for &y in &net.adjacency[x] {
            let link = &net.links[&(y, x)];
            let cost = link_cost(
                std::time::Duration::from_millis(2 * link.latency_ms),
                link.loss,
            );
            let nd = d.saturating_add(cost);
            if nd < dist[y] {
                dist[y] = nd;
                heap.push(Reverse((nd, y)));
            }
        }
    }
    dist
}

/// The Freifunk Leipzig community mesh (`../shared/topologies`), all 413
/// links at `latency_ms`, as meshnet-lab emulated it.
pub fn leipzig(latency_ms: u64, config: Config) -> Net {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/topologies/freifunk-leipzig.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): the shared topologies belong beside the repository",
            path.display()
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nodes = json["nodes"].as_array().unwrap().len();
    let mut net = Net::new(nodes, config, 210);
    for link in json["links"].as_array().unwrap() {
        let a = link["source"].as_u64().unwrap() as usize;
        let b = link["target"].as_u64().unwrap() as usize;
        if a != b && !net.link_up(a, b) {
            net.connect(a, b, latency_ms, 1_000, 0.0);
        }
    }
    net
}

/// Control bytes per node per second over `seconds` (best a multiple of
/// the refresh interval) of steady state
/// (after convergence): (router-counted control frame bytes, all bytes the
/// nodes put on links).
pub fn steady_control_bytes(net: &mut Net, seconds: u64) -> (f64, f64) {
    // Let the start-up dumps and the first refreshes pass.
    net.run_for(750_000);
    assert!(net.converged(), "no convergence");
    let count = |n: &Net| -> (u64, u64) {
        n.nodes.iter().fold((0, 0), |(c, w), node| {
            (c + node.router().stats().control_bytes, w + node.bytes_sent)
        })
    };
    let (c0, w0) = count(net);
    net.run_for(seconds * 1_000);
    let (c1, w1) = count(net);
    let per = (net.nodes.len() as u64 * seconds) as f64;
    ((c1 - c0) as f64 / per, (w1 - w0) as f64 / per)
}
