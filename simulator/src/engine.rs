//! The discrete-event engine: the real `Router` state machines on simulated
//! links, one thread, a seeded RNG, a time in microseconds.
//!
//! Links are directed halves of an undirected edge, each FIFO (jitter never
//! reorders packets: the loop-freedom argument of the router needs that),
//! with a latency, a bandwidth and a loss rate. One packet is on a link at a
//! time: the queue of a link is the sending router's scheduler, as it is on
//! a real stream. Per-node adjacency lists: nothing grows with the square of
//! the node count.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use lifeline_crypto::Identity;
use lifeline_routing::routes::link_cost;
use lifeline_routing::wire::{AckOutcome, Body, Frame, Packet};
use lifeline_routing::{
    Address, Class, Config, Delivery, Event, MemoryMessageStore, MessageId, MessageStore, Router,
    StoreBatch,
};
use rand::RngExt;
use rand::rngs::StdRng;

/// What a node does with messages it should forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Takes part in routing, drops every message it should forward.
    Blackhole,
    /// Drops the messages of one class.
    Grayhole(Class),
    /// Forwards normally, and records every message frame it receives to
    /// send again later ([`Engine::replay`]).
    Replayer,
    /// Asks for every message a neighbour's custody summary lists, claims
    /// custody of each that comes (an acknowledgement saying it forwards
    /// it) and drops it; forwards everything else normally. It advertises
    /// no routes, so nobody hands it custody for being closer (issue 23,
    /// item 5: what pulling alone gives an attacker).
    Puller,
}

/// Most message frames a replayer keeps.
const REPLAY_RECORD_MAX: usize = 20_000;

/// One direction of a link.
#[derive(Clone, Debug)]
pub struct Link {
    /// The sending node.
    pub from: usize,
    /// The receiving node.
    pub to: usize,
    /// One-way latency, µs.
    pub latency_us: u64,
    /// Extra latency drawn uniformly per packet, µs.
    pub jitter_us: u64,
    /// Bytes per millisecond.
    pub bytes_per_ms: u64,
    /// Packet loss, 0 to 1.
    pub loss: f64,
    /// Bytes the sender holds below the router, first in first out (the
    /// daemon's writer and the kernel's socket buffer): packets are taken
    /// from the router while less than this waits to go on the wire.
    pub buffer_bytes: usize,
    /// A token bucket in front of the wire, in bytes, like `tc`'s `tbf`
    /// `burst`: after an idle spell the link sends up to this much at
    /// once, then at its rate (0: always at its rate, a plain FIFO).
    pub burst_bytes: usize,
    /// The bucket's tokens (bytes) at `busy_until`.
    bucket: u64,
    busy_until: u64,
    /// A `LinkFree` event is pending for `busy_until`. One is scheduled
    /// only when the sender has more for the link: most links carry one
    /// frame at a time, and an event per packet to find the queue empty
    /// was a fifth of the events of a 10,000-node run.
    free_pending: bool,
    last_arrival: u64,
    side_last_arrival: u64,
    up: bool,
    generation: u64,
}

impl Link {
    /// Microseconds to put `bytes` on this link.
    pub fn transmit_us(&self, bytes: usize) -> u64 {
        (bytes as u64 * 1_000).div_ceil(self.bytes_per_ms.max(1))
    }

    /// Takes a packet of `bytes` handed over at `now`, behind what waits;
    /// returns when it is off the sender.
    fn take(&mut self, now: u64, bytes: usize) -> u64 {
        let start = self.busy_until.max(now);
        if self.burst_bytes == 0 {
            self.busy_until = start + self.transmit_us(bytes).max(1);
            return self.busy_until;
        }
        let earned = (start - self.busy_until).saturating_mul(self.bytes_per_ms) / 1_000;
        let tokens = self
            .bucket
            .saturating_add(earned)
            .min(self.burst_bytes as u64);
        let bytes = bytes as u64;
        if tokens >= bytes {
            self.bucket = tokens - bytes;
            self.busy_until = start;
        } else {
            // It leaves once the bucket holds it, which leaves it empty.
            self.bucket = 0;
            self.busy_until = start + self.transmit_us((bytes - tokens) as usize);
        }
        self.busy_until
    }
}

/// One simulated node.
pub struct Node {
    /// Its identity.
    pub identity: Identity,
    /// Its address.
    pub address: Address,
    /// Its router; `None` while crashed (the store is kept in `stored`).
    pub router: Option<Router<MemoryMessageStore>>,
    stored: Option<MemoryMessageStore>,
    /// What it does with traffic.
    pub behaviour: Behaviour,
    /// Crashes so far: a write that was out when it crashed never lands.
    life: u64,
    /// Deliveries on their way to its disk (its inbox): no custody write
    /// starts until they are kept, as in the daemon.
    keeping: usize,
    /// When its disk is done with what it was given (µs).
    disk_free_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Arrive {
        link: usize,
        generation: u64,
        bytes: Vec<u8>,
        /// Sent again by a replayer: not counted as traffic.
        replayed: bool,
    },
    LinkFree {
        link: usize,
    },
    Side {
        link: usize,
        generation: u64,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
    },
    Action(usize),
    /// Node `node`'s synced custody write is done, unless it crashed since
    /// (`life`).
    Written {
        node: usize,
        life: u64,
        batch: StoreBatch,
    },
    /// Node `node` has a delivery on disk, in its inbox, unless it crashed
    /// since; the delivery's signer, if any, gets its receipt now.
    Kept {
        node: usize,
        life: u64,
        id: MessageId,
        class: Class,
        receipt_to: Option<Address>,
    },
}

/// What the engine reports to its driver as it runs.
pub trait Observer {
    /// Node `node` emitted `event` at `now_us`.
    fn event(&mut self, engine: &Engine, node: usize, now_us: u64, event: &Event);
    /// A message frame crossed a link (counted when it arrives).
    fn message_frame(&mut self, body: &Body, from: usize, to: usize);
    /// Scheduled action `index` is due (traffic, faults).
    fn action(&mut self, engine: &mut Engine, index: usize);
    /// Bytes sent with [`Engine::send_side`] arrived over link `link`.
    fn side(&mut self, engine: &mut Engine, link: usize, bytes: Vec<u8>) {
        let _ = (engine, link, bytes);
    }
}

/// The engine.
pub struct Engine {
    now_us: u64,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The directed links.
    pub links: Vec<Link>,
    out: Vec<Vec<usize>>,
    index: HashMap<Address, usize>,
    /// Pending events by (time, sequence), each naming its slot in
    /// `pending`: the heap moves 24-byte keys rather than the events (a
    /// tenth of a 10,000-node warm-up went to sifting 64-byte entries).
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    pending: Vec<Option<Ev>>,
    /// Slots of `pending` free for reuse.
    free: Vec<usize>,
    seq: u64,
    rng: StdRng,
    timer_at: Vec<Option<u64>>,
    config: Config,
    /// Nodes that run with another router config (hostile ones).
    overrides: HashMap<usize, Config>,
    /// Events handled so far.
    pub events: u64,
    /// Reassembly of multi-fragment frames per directed link, so that the
    /// engine sees every message frame (to count it, and to let hostile
    /// nodes drop it).
    reassembly: HashMap<usize, lifeline_routing::link::Reassembler>,
    /// Packets put on links, and their bytes.
    pub packets: u64,
    /// See `packets`.
    pub bytes: u64,
    /// Message frames each replayer recorded (class, whole frame).
    recorded: HashMap<usize, Vec<(Class, Vec<u8>)>>,
    /// Frames replayers sent again.
    pub replayed: u64,
    replay_seq: u64,
    /// What each puller asked for and has not had yet.
    pulled: HashMap<usize, HashSet<MessageId>>,
    /// Messages pullers asked for, and of those, the ones they got and
    /// dropped.
    pub pull_asked: u64,
    /// See `pull_asked`.
    pub pull_dropped: u64,
    /// The buffer of links added from now on ([`Link::buffer_bytes`]).
    buffer_bytes: usize,
    /// The bucket of links added from now on ([`Link::burst_bytes`]).
    burst_bytes: usize,
    /// How long a synced custody write takes, µs (0: the routers write
    /// at once, within the step that changed custody).
    disk_sync_us: u64,
}

fn ms(us: u64) -> u64 {
    us / 1_000
}

impl Engine {
    /// Nodes with these identities, no links yet.
    pub fn new(identities: Vec<Identity>, config: Config, rng: StdRng, start_us: u64) -> Engine {
        let n = identities.len();
        let mut engine = Engine {
            now_us: start_us,
            nodes: Vec::with_capacity(n),
            links: Vec::new(),
            out: vec![Vec::new(); n],
            index: HashMap::with_capacity(n),
            queue: BinaryHeap::new(),
            pending: Vec::new(),
            free: Vec::new(),
            seq: 0,
            rng,
            timer_at: vec![None; n],
            config,
            overrides: HashMap::new(),
            buffer_bytes: 0,
            burst_bytes: 0,
            disk_sync_us: 0,
            events: 0,
            reassembly: HashMap::new(),
            packets: 0,
            bytes: 0,
            recorded: HashMap::new(),
            replayed: 0,
            replay_seq: 0,
            pulled: HashMap::new(),
            pull_asked: 0,
            pull_dropped: 0,
        };
        for (i, identity) in identities.into_iter().enumerate() {
            let address = Address::from(identity.id());
            engine.index.insert(address, i);
            let router = engine.start_router(i, &identity, MemoryMessageStore::new());
            engine.nodes.push(Node {
                identity,
                address,
                router: Some(router),
                stored: None,
                behaviour: Behaviour::Honest,
                life: 0,
                keeping: 0,
                disk_free_us: 0,
            });
        }
        engine
    }

    fn start_router(
        &self,
        i: usize,
        identity: &Identity,
        store: MemoryMessageStore,
    ) -> Router<MemoryMessageStore> {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        seed[8..16].copy_from_slice(&self.now_us.to_le_bytes());
        let mut router = match Router::new(
            identity.clone(),
            self.overrides.get(&i).unwrap_or(&self.config).clone(),
            store,
            seed,
            ms(self.now_us),
        ) {
            Ok(r) => r,
            // The memory store cannot fail to load.
            Err(e) => unreachable!("a memory store failed to load: {e}"),
        };
        if self.disk_sync_us > 0 {
            router.defer_writes();
        }
        router
    }

    /// The time, µs.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// The node with this address.
    pub fn node_of(&self, address: &Address) -> Option<usize> {
        self.index.get(address).copied()
    }

    /// The simulation's RNG.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Links leaving node `i`.
    pub fn out_links(&self, i: usize) -> &[usize] {
        &self.out[i]
    }

    /// Every node's synced custody write takes `us` from now on, as on a
    /// disk (0, the default: none). The routers then hand their writes out
    /// ([`Router::defer_writes`]), as the daemon does to its writer thread:
    /// they go on routing while a write is out, and what must wait for it
    /// (custody acknowledgements) waits. A batch that needs no sync
    /// ([`StoreBatch::needs_sync`]) is written at once, as the daemon does.
    /// A unicast delivered to a node goes to its inbox on the same disk,
    /// one synced write each, in order with the custody writes: no custody
    /// write starts while one is out, and with
    /// [`Config::receipt_on_delivery`] off the signer's receipt goes once
    /// it is kept, again as the daemon does. A node that crashes with a
    /// write out loses it.
    pub fn set_disk_sync_us(&mut self, us: u64) {
        self.disk_sync_us = us;
        if us > 0 {
            for node in &mut self.nodes {
                if let Some(r) = node.router.as_mut() {
                    r.defer_writes();
                }
            }
        }
    }

    /// Links added from now on hold `bytes` below the router
    /// ([`Link::buffer_bytes`]; 0, the default: none).
    pub fn set_buffer_bytes(&mut self, bytes: usize) {
        self.buffer_bytes = bytes;
    }

    /// Links added from now on send through a token bucket of `bytes`
    /// ([`Link::burst_bytes`]; 0, the default: none).
    pub fn set_burst_bytes(&mut self, bytes: usize) {
        self.burst_bytes = bytes;
    }

    /// Adds a link both ways and brings it up; returns the two halves.
    pub fn add_link(
        &mut self,
        a: usize,
        b: usize,
        latency_us: u64,
        jitter_us: u64,
        bytes_per_ms: u64,
        loss: f64,
    ) -> (usize, usize) {
        let mut ids = [0; 2];
        for (k, (x, y)) in [(a, b), (b, a)].into_iter().enumerate() {
            ids[k] = self.links.len();
            self.links.push(Link {
                from: x,
                to: y,
                latency_us,
                jitter_us,
                bytes_per_ms: bytes_per_ms.max(1),
                loss,
                buffer_bytes: self.buffer_bytes,
                burst_bytes: self.burst_bytes,
                bucket: self.burst_bytes as u64,
                busy_until: 0,
                free_pending: false,
                last_arrival: 0,
                side_last_arrival: 0,
                up: false,
                generation: 0,
            });
            self.out[x].push(ids[k]);
        }
        self.set_link(ids[0], true);
        (ids[0], ids[1])
    }

    /// The other half of link `l`.
    pub fn reverse(&self, l: usize) -> usize {
        l ^ 1
    }

    /// Whether link `l` is up.
    pub fn link_up(&self, l: usize) -> bool {
        self.links[l].up
    }

    /// Brings the edge of link `l` (both halves) up or down.
    pub fn set_link(&mut self, l: usize, up: bool) {
        let pair = [l & !1, l | 1];
        if self.links[pair[0]].up == up {
            return;
        }
        for h in pair {
            let link = &mut self.links[h];
            link.up = up;
            link.generation += 1;
            link.busy_until = link.busy_until.max(self.now_us);
            link.bucket = link.burst_bytes as u64;
        }
        let (a, b) = (self.links[pair[0]].from, self.links[pair[0]].to);
        let now = ms(self.now_us);
        for h in pair {
            let (x, y) = (self.links[h].from, self.links[h].to);
            let address = self.nodes[y].address;
            if up && self.nodes[y].router.is_some() {
                self.tell_link_up(h);
            } else if let Some(r) = self.nodes[x].router.as_mut() {
                r.handle_link_down(now, &address);
            }
        }
        self.pump(a);
        self.pump(b);
    }

    /// Crashes node `i`: its links go down for its neighbours, its router
    /// stops; its store is kept.
    pub fn crash(&mut self, i: usize) {
        let Some(router) = self.nodes[i].router.take() else {
            return;
        };
        self.nodes[i].life += 1;
        self.nodes[i].keeping = 0;
        self.nodes[i].disk_free_us = 0;
        self.nodes[i].stored = Some(router.into_store());
        let now = ms(self.now_us);
        for &l in &self.out[i].clone() {
            let link = &mut self.links[l];
            link.generation += 1;
            let reverse = &mut self.links[l ^ 1];
            reverse.generation += 1;
            let to = self.links[l].to;
            let me = self.nodes[i].address;
            if self.links[l].up
                && let Some(r) = self.nodes[to].router.as_mut()
            {
                r.handle_link_down(now, &me);
            }
            self.pump(to);
        }
    }

    /// The routers' config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs node `i` with `config` from now on (its router restarts from
    /// its store, as after a crash).
    pub fn set_config(&mut self, i: usize, config: Config) {
        self.overrides.insert(i, config);
        self.crash(i);
        self.restart(i);
    }

    /// Restarts node `i` from its store; its up links come back.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].router.is_some() {
            return;
        }
        let store = self.nodes[i].stored.take().unwrap_or_default();
        let identity = self.nodes[i].identity.clone();
        self.nodes[i].router = Some(self.start_router(i, &identity, store));
        for &l in &self.out[i].clone() {
            if !self.links[l].up {
                continue;
            }
            let to = self.links[l].to;
            if self.nodes[to].router.is_none() {
                continue;
            }
            self.tell_link_up(l);
            self.tell_link_up(l ^ 1);
            self.pump(to);
        }
        self.pump(i);
    }

    /// Tells the sender of link `h` that it leads to its receiver, at the
    /// link's cost (from its round trip and loss).
    fn tell_link_up(&mut self, h: usize) {
        let link = &self.links[h];
        let rtt = std::time::Duration::from_micros(2 * link.latency_us);
        let cost = link_cost(rtt, link.loss);
        let (x, address) = (link.from, self.nodes[link.to].address);
        let now = ms(self.now_us);
        if let Some(r) = self.nodes[x].router.as_mut() {
            r.set_clock_us(self.now_us);
            r.handle_link_up(now, address, cost);
        }
    }

    /// The link from `a` to `b`, if they are neighbours.
    pub fn link_between(&self, a: usize, b: usize) -> Option<usize> {
        self.out[a].iter().copied().find(|&l| self.links[l].to == b)
    }

    /// Sends `bytes` over link `l` on a second, reliable stream beside the
    /// router's (the chain's sync protocol): it takes the link's latency and
    /// transmission time, stays in order, is never lost, and is dropped if
    /// the link goes down or either end crashes before it arrives. It does
    /// not queue behind the router's packets (a stream multiplexer shares
    /// the link; chain messages are small and rare).
    pub fn send_side(&mut self, l: usize, bytes: Vec<u8>) {
        let link = &self.links[l];
        if !link.up
            || self.nodes[link.from].router.is_none()
            || self.nodes[link.to].router.is_none()
        {
            return;
        }
        let arrive = (self.now_us + link.transmit_us(bytes.len()).max(1) + link.latency_us)
            .max(link.side_last_arrival);
        let generation = link.generation;
        self.links[l].side_last_arrival = arrive;
        self.packets += 1;
        self.bytes += bytes.len() as u64;
        self.push(
            arrive,
            Ev::Side {
                link: l,
                generation,
                bytes,
            },
        );
    }

    /// Replayer `v` sends every message frame it recorded again, to each
    /// neighbour, as a packet of its own at once (it ignores its own
    /// router's queues: a hostile node need not be fair). Returns the
    /// frames sent.
    pub fn replay(&mut self, v: usize) -> u64 {
        let Some(frames) = self.recorded.get(&v).cloned() else {
            return 0;
        };
        let sent = self.inject(v, &frames);
        self.replayed += sent;
        sent
    }

    /// Hostile node `v` sends these message frames (already encoded, of
    /// their class) to each neighbour, as packets of its own at once: a
    /// hostile node need not be fair, nor use its own router. Returns the
    /// frames sent.
    pub fn inject(&mut self, v: usize, frames: &[(Class, Vec<u8>)]) -> u64 {
        let mut sent = 0;
        for l in self.out[v].clone() {
            let link = &self.links[l];
            if !link.up || self.nodes[link.to].router.is_none() || self.nodes[v].router.is_none() {
                continue;
            }
            let mut at = self.now_us;
            for (class, frame) in frames {
                self.replay_seq += 1;
                let packet = Packet {
                    frame: (1 << 40) + self.replay_seq,
                    index: 0,
                    count: 1,
                    class: *class,
                    data: frame.clone(),
                }
                .encode();
                let link = &self.links[l];
                at += link.transmit_us(packet.len()).max(1);
                let arrive = at + link.latency_us;
                let generation = link.generation;
                self.packets += 1;
                self.bytes += packet.len() as u64;
                sent += 1;
                self.push(
                    arrive,
                    Ev::Arrive {
                        link: l,
                        generation,
                        bytes: packet,
                        replayed: true,
                    },
                );
            }
        }
        sent
    }

    /// Schedules driver action `index` at `at_us`.
    pub fn schedule(&mut self, at_us: u64, index: usize) {
        self.push(at_us, Ev::Action(index));
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.pending[slot] = Some(ev);
                slot
            }
            None => {
                self.pending.push(Some(ev));
                self.pending.len() - 1
            }
        };
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// Lets node `i` act through its router, then drains its outputs.
    pub fn with_router<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Router<MemoryMessageStore>, u64) -> T,
    ) -> Option<T> {
        let (now_us, now) = (self.now_us, ms(self.now_us));
        self.nodes[i].router.as_mut().map(|r| {
            r.set_clock_us(now_us);
            f(r, now)
        })
    }

    /// Drains node `i`'s events into `observer` and fills the links its
    /// router said have something to send ([`Event::LinkReady`]; a busy
    /// link is filled again when it frees up). Polling every link of the
    /// node after every event instead was a fifth of a 10,000-node run.
    pub fn flush(&mut self, i: usize, observer: &mut dyn Observer) {
        let now = self.now_us;
        let mut ready: Vec<usize> = Vec::new();
        loop {
            // With a disk, handling events can make a write to hand out (a
            // delivery's seen record), and a write released events.
            self.start_write(i);
            let mut handled = 0;
            while let Some(event) = self.nodes[i].router.as_mut().and_then(|r| r.poll_event()) {
                handled += 1;
                match event {
                    Event::LinkReady(to) => {
                        let out = &self.out[i];
                        if let Some(k) = out
                            .iter()
                            .position(|&l| self.nodes[self.links[l].to].address == to)
                        {
                            ready.push(k);
                        }
                    }
                    event => {
                        observer.event(self, i, now, &event);
                        if let Event::Delivered(d) = event {
                            self.keep(i, &d);
                        }
                    }
                }
            }
            if ready.is_empty() && (handled == 0 || self.disk_sync_us == 0) {
                break;
            }
            // In link order, as polling every link did. Sending can make
            // more to send (a batch written releases acknowledgements).
            ready.sort_unstable();
            ready.dedup();
            for k in std::mem::take(&mut ready) {
                self.fill(self.out[i][k]);
            }
        }
        debug_assert_eq!(
            self.stalled_links(i),
            0,
            "node {i} has bytes waiting on an idle link"
        );
        self.arm_timer(i);
    }

    /// Hands node `i`'s next custody write to its disk, if it has a disk
    /// and no write is out: a synced one lands `disk_sync_us` later
    /// (`Ev::Written`), another at once.
    fn start_write(&mut self, i: usize) {
        if self.disk_sync_us == 0 || self.nodes[i].keeping > 0 {
            return;
        }
        let Some(router) = self.nodes[i].router.as_mut() else {
            return;
        };
        let Some(batch) = router.take_write() else {
            return;
        };
        if batch.needs_sync() {
            let life = self.nodes[i].life;
            let at = self.disk_time(i);
            self.push(
                at,
                Ev::Written {
                    node: i,
                    life,
                    batch,
                },
            );
        } else {
            let Ok(()) = router.store_mut().write(&batch);
            router.written(Ok(()));
        }
    }

    /// When a synced write node `i` hands its disk now is done: after
    /// what the disk already has.
    fn disk_time(&mut self, i: usize) -> u64 {
        let node = &mut self.nodes[i];
        node.disk_free_us = node.disk_free_us.max(self.now_us) + self.disk_sync_us;
        node.disk_free_us
    }

    /// With a disk, hands a unicast delivered to node `i` to it, for its
    /// inbox (`Ev::Kept`); a broadcast is not kept (the daemon pools a
    /// transaction, and shows no other).
    fn keep(&mut self, i: usize, d: &Delivery) {
        if self.disk_sync_us == 0 || d.broadcast {
            return;
        }
        let receipts = self
            .overrides
            .get(&i)
            .unwrap_or(&self.config)
            .receipt_on_delivery;
        let at = self.disk_time(i);
        let node = &mut self.nodes[i];
        node.keeping += 1;
        let ev = Ev::Kept {
            node: i,
            life: node.life,
            id: d.id,
            class: d.class,
            receipt_to: d.receipt_to().filter(|_| !receipts),
        };
        self.push(at, ev);
    }

    /// Links of node `i` that are up and idle, with no `LinkFree` pending,
    /// while its router has bytes waiting for them: bytes nobody would
    /// send. Always 0 (checked after every flush in debug builds).
    fn stalled_links(&self, i: usize) -> usize {
        let Some(router) = self.nodes[i].router.as_ref() else {
            return 0;
        };
        self.out[i]
            .iter()
            .map(|&l| &self.links[l])
            .filter(|link| {
                let to = &self.nodes[link.to].address;
                link.up
                    && !link.free_pending
                    && link.busy_until <= self.now_us
                    && self.nodes[link.to].router.is_some()
                    && router.queued_bytes(to) > 0
                    && !router.only_paced_bulk_waits(to)
            })
            .count()
    }

    /// Fills every idle link of node `i` (after links or the node itself
    /// came up or went down) and sets its timer.
    fn pump(&mut self, i: usize) {
        if self.nodes[i].router.is_none() {
            return;
        }
        for k in 0..self.out[i].len() {
            let l = self.out[i][k];
            self.fill(l);
        }
        self.arm_timer(i);
    }

    /// Schedules node `i`'s next timer, if it is earlier than the one set.
    fn arm_timer(&mut self, i: usize) {
        if let Some(t) = self.nodes[i].router.as_ref().and_then(|r| r.poll_timeout()) {
            let t = t.saturating_mul(1_000).max(self.now_us);
            if self.timer_at[i].is_none_or(|s| t < s) {
                self.timer_at[i] = Some(t);
                self.push(t, Ev::Timer { node: i });
            }
        }
    }

    /// Schedules a `LinkFree` event for when link `l` is free again,
    /// unless one is pending.
    fn free_later(&mut self, l: usize) {
        let at = self.room_at(l);
        let link = &mut self.links[l];
        if !link.free_pending {
            link.free_pending = true;
            self.push(at, Ev::LinkFree { link: l });
        }
    }

    /// Takes packets from the sender's router for link `l` while its
    /// buffer has room (one at a time when it has none).
    fn fill(&mut self, l: usize) {
        while self.fill_one(l) {}
    }

    /// When link `l`'s buffer has room for another packet (with no
    /// buffer: when the link is idle).
    fn room_at(&self, l: usize) -> u64 {
        let link = &self.links[l];
        link.busy_until
            .saturating_sub(link.transmit_us(link.buffer_bytes))
    }

    /// Takes one packet for link `l` if its buffer has room; whether it
    /// took one and has room for more.
    fn fill_one(&mut self, l: usize) -> bool {
        let now = self.now_us;
        let room_at = self.room_at(l);
        let link = &mut self.links[l];
        if !link.up {
            return false;
        }
        if room_at > now || (link.buffer_bytes == 0 && link.busy_until > now) {
            // Sent when the buffer has room again.
            self.free_later(l);
            return false;
        }
        let (from, to) = (link.from, link.to);
        if self.nodes[to].router.is_none() {
            return false;
        }
        let address = self.nodes[to].address;
        let Some(router) = self.nodes[from].router.as_mut() else {
            return false;
        };
        router.set_clock_us(now);
        let Some(bytes) = router.poll_link(ms(now), &address) else {
            return false;
        };
        let more = router.queued_bytes(&address) > 0;
        self.packets += 1;
        self.bytes += bytes.len() as u64;
        let jitter = if self.links[l].jitter_us > 0 {
            self.rng.random_range(0..=self.links[l].jitter_us)
        } else {
            0
        };
        let lost = self.links[l].loss > 0.0 && self.rng.random_range(0.0..1.0) < self.links[l].loss;
        let link = &mut self.links[l];
        // Behind what waits in the buffer.
        let sent = link.take(now, bytes.len());
        let arrive = (sent + link.latency_us + jitter).max(link.last_arrival);
        link.last_arrival = arrive;
        let generation = link.generation;
        let room = link.buffer_bytes > 0 && self.room_at(l) <= now;
        if more && !room {
            self.free_later(l);
        }
        if !lost {
            self.push(
                arrive,
                Ev::Arrive {
                    link: l,
                    generation,
                    bytes,
                    replayed: false,
                },
            );
        }
        more && room
    }

    /// Runs events up to `until_us`; the time is then `until_us`.
    pub fn run_until(&mut self, until_us: u64, observer: &mut dyn Observer) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until_us {
                break;
            }
            let Some(Reverse((at, _, slot))) = self.queue.pop() else {
                break;
            };
            self.free.push(slot);
            let Some(ev) = self.pending.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            self.now_us = self.now_us.max(at);
            self.events += 1;
            self.handle(ev, at, observer);
        }
        self.now_us = self.now_us.max(until_us);
    }

    fn handle(&mut self, ev: Ev, at: u64, observer: &mut dyn Observer) {
        let now = ms(self.now_us);
        match ev {
            Ev::Arrive {
                link,
                generation,
                bytes,
                replayed,
            } => {
                let l = &self.links[link];
                if !l.up || l.generation != generation {
                    return;
                }
                let (from, to) = (l.from, l.to);
                if !replayed && self.intercept(link, from, to, &bytes, observer) {
                    return;
                }
                let address = self.nodes[from].address;
                if let Some(r) = self.nodes[to].router.as_mut() {
                    r.set_clock_us(self.now_us);
                    r.handle_packet(now, &address, &bytes);
                }
                self.flush(to, observer);
            }
            Ev::LinkFree { link } => {
                self.links[link].free_pending = false;
                self.fill(link);
                let from = self.links[link].from;
                self.flush(from, observer);
            }
            Ev::Timer { node } => {
                if self.timer_at[node] == Some(at) {
                    self.timer_at[node] = None;
                }
                let due = self.nodes[node]
                    .router
                    .as_ref()
                    .and_then(|r| r.poll_timeout())
                    .is_some_and(|t| t <= now);
                if due && let Some(r) = self.nodes[node].router.as_mut() {
                    r.set_clock_us(self.now_us);
                    r.handle_timeout(now);
                }
                self.flush(node, observer);
            }
            Ev::Action(index) => observer.action(self, index),
            Ev::Written { node, life, batch } => {
                if self.nodes[node].life != life {
                    return;
                }
                if let Some(r) = self.nodes[node].router.as_mut() {
                    r.set_clock_us(self.now_us);
                    let Ok(()) = r.store_mut().write(&batch);
                    r.written(Ok(()));
                }
                self.flush(node, observer);
            }
            Ev::Kept {
                node,
                life,
                id,
                class,
                receipt_to,
            } => {
                if self.nodes[node].life != life {
                    return;
                }
                self.nodes[node].keeping -= 1;
                if let (Some(r), Some(origin)) = (self.nodes[node].router.as_mut(), receipt_to) {
                    r.set_clock_us(self.now_us);
                    // A full custody store only loses the receipt, as in
                    // the router.
                    let _ = r.send_delivery_receipt(ms(self.now_us), class, origin, id);
                }
                self.flush(node, observer);
            }
            Ev::Side {
                link,
                generation,
                bytes,
            } => {
                let l = &self.links[link];
                if l.up && l.generation == generation && self.nodes[l.to].router.is_some() {
                    observer.side(self, link, bytes);
                }
            }
        }
    }

    /// A frame on its way into puller `to`: a summary is answered with a
    /// pull of everything it lists, and a message it pulled is
    /// acknowledged as taken and dropped. True if the router must not see
    /// it.
    fn pull(&mut self, link: usize, to: usize, packet: Packet) -> bool {
        let whole = if packet.count == 1 {
            packet.data
        } else {
            let r = self
                .reassembly
                .entry(link)
                .or_insert_with(|| lifeline_routing::link::Reassembler::new(64, 1 << 20));
            match r.push(packet) {
                Ok(Some((_, whole))) => whole,
                _ => return false,
            }
        };
        match Frame::decode(&whole) {
            Ok(Frame::Summary(entries)) => {
                let ids: Vec<MessageId> = entries.iter().map(|e| e.id).collect();
                self.pull_asked += ids.len() as u64;
                let pulled = self.pulled.entry(to).or_default();
                if pulled.len() < REPLAY_RECORD_MAX {
                    pulled.extend(ids.iter().copied());
                }
                self.inject(to, &[(Class::P0, Frame::Pull(ids).encode())]);
                true
            }
            Ok(Frame::Message(m))
                if m.body.destination != Some(self.nodes[to].address)
                    && self.pulled.get_mut(&to).is_some_and(|p| p.remove(&m.id)) =>
            {
                self.pull_dropped += 1;
                let ack = Frame::Ack {
                    id: m.id,
                    outcome: AckOutcome::Forwarding,
                };
                self.inject(to, &[(Class::P0, ack.encode())]);
                true
            }
            _ => false,
        }
    }

    /// Looks at a message frame on its way into `to`: counts it, and lets a
    /// hostile `to` drop it (for a frame in several fragments, the last one,
    /// which makes the router drop the whole frame). True if dropped.
    fn intercept(
        &mut self,
        link: usize,
        from: usize,
        to: usize,
        bytes: &[u8],
        observer: &mut dyn Observer,
    ) -> bool {
        let Ok(packet) = Packet::decode(bytes) else {
            return false;
        };
        if self.nodes[to].behaviour == Behaviour::Puller {
            return self.pull(link, to, packet);
        }
        // A puller advertises no routes (its routing frames, field 1, are
        // lost on the way), so no holder takes it for closer: what it gets
        // is only what pulling gives.
        if self.nodes[from].behaviour == Behaviour::Puller
            && packet.index == 0
            && packet.data.first() == Some(&0x0a)
        {
            return true;
        }
        // A message frame starts with field 2 (tag 0x12); control frames,
        // acknowledgements and summaries are skipped without decoding.
        if packet.index == 0 && packet.data.first() != Some(&0x12) {
            return false;
        }
        let whole = if packet.count == 1 {
            packet.data
        } else {
            let r = self
                .reassembly
                .entry(link)
                .or_insert_with(|| lifeline_routing::link::Reassembler::new(64, 1 << 20));
            match r.push(packet) {
                Ok(Some((_, whole))) => whole,
                _ => return false,
            }
        };
        // Only looked at: checking the frame (its id, its encoding, the
        // origin's signature) is the receiving router's job; doing it here
        // too cost a tenth of a 2,000-node run.
        let Some(body) = Frame::peek_body(&whole) else {
            return false;
        };
        observer.message_frame(&body, from, to);
        if self.nodes[to].behaviour == Behaviour::Replayer {
            let recorded = self.recorded.entry(to).or_default();
            if recorded.len() < REPLAY_RECORD_MAX {
                recorded.push((body.class, whole.clone()));
            }
        }
        let for_me = body.destination == Some(self.nodes[to].address);
        match self.nodes[to].behaviour {
            Behaviour::Honest | Behaviour::Replayer | Behaviour::Puller => false,
            Behaviour::Blackhole => !for_me,
            Behaviour::Grayhole(class) => !for_me && body.class == class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(burst_bytes: usize) -> Link {
        Link {
            from: 0,
            to: 1,
            latency_us: 0,
            jitter_us: 0,
            bytes_per_ms: 2_500, // 20 Mbit/s
            loss: 0.0,
            buffer_bytes: 16 * 1024,
            burst_bytes,
            bucket: burst_bytes as u64,
            busy_until: 0,
            free_pending: false,
            last_arrival: 0,
            side_last_arrival: 0,
            up: true,
            generation: 0,
        }
    }

    /// Like `tc`'s `tbf`: after an idle spell the bucket's bytes go at
    /// once, then the link's rate holds, and an idle spell fills it again
    /// (never past its size).
    #[test]
    fn a_token_bucket_lets_a_burst_go_at_once_then_the_rate_holds() {
        let mut l = link(32 * 1024);
        for k in 0..8 {
            assert_eq!(l.take(1_000, 4096), 1_000, "fragment {k} waits");
        }
        // The bucket is empty: the next 4 KiB go at 2.5 bytes a µs.
        assert_eq!(l.take(1_000, 4096), 1_000 + 1_639);
        assert_eq!(l.take(1_000, 4096), 1_000 + 2 * 1_639);
        // An hour idle fills it to 32 KiB again, not more.
        let later = 3_600_000_000;
        for _ in 0..8 {
            assert_eq!(l.take(later, 4096), later);
        }
        assert!(l.take(later, 4096) > later);
        // Without a bucket every packet takes its time on the wire.
        let mut l = link(0);
        assert_eq!(l.take(1_000, 4096), 1_000 + 1_639);
        assert_eq!(l.take(1_000, 4096), 1_000 + 2 * 1_639);
    }
}
