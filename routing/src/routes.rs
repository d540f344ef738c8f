//! Loop-free distance-vector routing, in the spirit of Babel (RFC 8966).
//!
//! Every node announces a route to itself with a sequence number that only it
//! raises. Routes carry (seqno, metric); a node's metric for a route is the
//! neighbour's advertised metric plus the cost of the link to that neighbour.
//!
//! Loop freedom comes from the *feasibility condition*: for each destination
//! a node remembers the best (seqno, metric) it has itself advertised, its
//! feasibility distance. It selects a route only if the neighbour's advertised
//! (seqno, metric) is strictly better than that: a newer seqno, or the same
//! seqno with a smaller metric. Retractions are always accepted. When no
//! feasible route is left, the node retracts the destination and asks it for a
//! new seqno; the destination raises its seqno, and the new announcements
//! are feasible everywhere.
//!
//! Sans-IO: inputs are `handle_link`, `handle_link_down`, `handle_message` and
//! `handle_refresh`; outputs come from `poll_transmit`.

use std::collections::{BTreeSet, HashMap, VecDeque};

use indexmap::IndexMap;
use std::hash::Hash;
use std::time::Duration;

/// A route metric; [`INFINITY`] means unreachable.
pub type Metric = u32;
/// The metric of a retracted route.
pub const INFINITY: Metric = u32::MAX;
/// How far a seqno request travels.
pub const MAX_REQUEST_HOPS: u8 = 32;

/// What a millisecond of round trip costs when a link is slow enough for
/// its delay to outweigh a hop: 64, so a hop weighs as much as 4 ms of round
/// trip (2 ms one way). Radio and LAN links, whose round trips stay under
/// 4 ms, cost what they always did and hops decide, as they should where
/// every transmission takes airtime. Where links differ a lot (long-haul
/// links between cities) the fastest path wins over the one with fewest
/// hops: on GEANT's and Abilene's graphs with latency from distance
/// (`simulator/scenarios/geant.toml`, `abilene.toml`) P0's p99 stretch goes
/// from 1.55 and 1.12 to 1.18 and 1.00 (48 gave 1.33 on GEANT, 32 no change).
pub const RTT_WEIGHT: u32 = 64;

/// The cost of a link from its round-trip time and loss rate (0 to 1):
/// 256 times the expected transmissions for a delivery and its
/// acknowledgement (ETX) plus the round trip in milliseconds, or
/// [`RTT_WEIGHT`] per millisecond of round trip if that is more. At least 1,
/// so every hop costs something (loop freedom needs that). A path of several
/// links never costs less than one link with the same total delay.
///
/// The round trip should be the link's own (its smallest recent sample),
/// not its queues: a cost that follows load moves routes back and forth.
pub fn link_cost(rtt: Duration, loss: f64) -> Metric {
    let delivery = (1.0 - loss.clamp(0.0, 0.99)).powi(2);
    let etx = (256.0 / delivery).min(1_000_000.0);
    let rtt_ms = u32::try_from(rtt.as_millis()).unwrap_or(u32::MAX);
    let delay = u32::try_from(rtt.as_micros() * u128::from(RTT_WEIGHT) / 1000).unwrap_or(u32::MAX);
    // `etx` is between 256 and 1e6, so the conversion is exact enough and in range.
    let etx = etx as u32;
    etx.saturating_add(rtt_ms).max(delay).clamp(1, INFINITY - 1)
}

/// A routing message between neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteMessage<N> {
    /// "I can reach `destination` with this seqno and metric" (or, with
    /// [`INFINITY`], "I no longer can").
    Update {
        /// The destination.
        destination: N,
        /// Its seqno.
        seqno: u32,
        /// The sender's metric to it.
        metric: Metric,
        /// How far the destination wants to be known: a node passes the
        /// route on only while its own metric is at most this (0: no limit).
        reach: Metric,
    },
    /// "Please announce `destination` with a seqno of at least `seqno`."
    SeqnoRequest {
        /// The destination.
        destination: N,
        /// The least seqno wanted.
        seqno: u32,
        /// Hops the request may still travel.
        hops: u8,
    },
    /// "Everything I advertise to you has this digest" (see
    /// [`RoutingTable::handle_refresh`]).
    Digest {
        /// The XOR of [`route_digest`] over this node's own route and
        /// every route it passes on, but the one to the recipient.
        digest: [u8; 16],
    },
    /// "Your digest does not match what I heard from you: send me all your
    /// routes."
    DumpRequest,
}

/// A name a routing table can put in a route digest: the same bytes on
/// every node.
pub trait Name: Clone + Eq + Hash + Ord {
    /// The name's bytes, zero-padded to 32 (an address is its 32 bytes).
    fn digest_name(&self) -> [u8; 32];
}

macro_rules! name_for_integers {
    ($($t:ty),*) => {$(
        impl Name for $t {
            fn digest_name(&self) -> [u8; 32] {
                let bytes = self.to_le_bytes();
                let mut name = [0u8; 32];
                name[..bytes.len()].copy_from_slice(&bytes);
                name
            }
        }
    )*};
}
name_for_integers!(u8, u16, u32, u64);

/// The seed of [`route_digest`] ("lifeline" in ASCII).
const ROUTE_DIGEST_SEED: u64 = u64::from_be_bytes(*b"lifeline");

/// The digest of one advertised route; a table's digest is the XOR of
/// these, so it does not depend on order.
///
/// XXH3-128, not a cryptographic hash: a digest only tells a neighbour
/// whether it missed an update, and nobody gains from a collision (the
/// sender could simply send a wrong digest, or wrong routes). A refresh
/// digests every route of the table once per neighbour, and with BLAKE3
/// that was a tenth of a 10,000-node simulation.
pub fn route_digest<N: Name>(
    destination: &N,
    seqno: u32,
    metric: Metric,
    reach: Metric,
) -> [u8; 16] {
    let mut input = [0u8; 44];
    input[..32].copy_from_slice(&destination.digest_name());
    input[32..36].copy_from_slice(&seqno.to_le_bytes());
    input[36..40].copy_from_slice(&metric.to_le_bytes());
    input[40..44].copy_from_slice(&reach.to_le_bytes());
    xxhash_rust::xxh3::xxh3_128_with_seed(&input, ROUTE_DIGEST_SEED).to_le_bytes()
}

fn xor_into(acc: &mut [u8; 16], digest: [u8; 16]) {
    for (a, d) in acc.iter_mut().zip(digest) {
        *a ^= d;
    }
}

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<N> {
    /// Every neighbour.
    AllNeighbours,
    /// One neighbour.
    Neighbour(N),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Advertised {
    seqno: u32,
    metric: Metric,
    /// The destination's reach (0: no limit).
    reach: Metric,
}

impl Advertised {
    /// Whether a node with this route passes it on.
    fn passes(&self) -> bool {
        self.reach == 0 || self.metric <= self.reach
    }

    fn digest<N: Name>(&self, destination: &N) -> [u8; 16] {
        route_digest(destination, self.seqno, self.metric, self.reach)
    }

    fn update<N>(&self, destination: N) -> RouteMessage<N> {
        RouteMessage::Update {
            destination,
            seqno: self.seqno,
            metric: self.metric,
            reach: self.reach,
        }
    }

    /// The retraction of this route.
    fn retraction<N>(&self, destination: N) -> RouteMessage<N> {
        Advertised {
            metric: INFINITY,
            ..*self
        }
        .update(destination)
    }
}

/// The best (seqno, metric) this node advertised for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Feasibility {
    seqno: u32,
    metric: Metric,
}

impl Feasibility {
    fn admits(&self, a: Advertised) -> bool {
        a.metric == INFINITY
            || a.seqno > self.seqno
            || (a.seqno == self.seqno && a.metric < self.metric)
    }
}

/// A seqno request sent or passed on.
#[derive(Clone, Copy, Debug)]
struct Asked {
    seqno: u32,
    at_ms: u64,
    wait_ms: u64,
}

/// The first wait before the same seqno request goes out again.
const REQUEST_RETRY_MS: u64 = 2_000;
/// The longest such wait.
const REQUEST_RETRY_MAX_MS: u64 = 64_000;

/// The most destinations a table keeps. Route updates are not signed, so a
/// hostile neighbour could otherwise announce destinations until the node
/// runs out of memory; beyond this, updates for new destinations are
/// refused (and counted in [`RoutingTable::refused`]) until a refresh
/// forgets destinations nobody advertises any more. A scoped mesh keeps a
/// few hundred (docs/routing.md); an unscoped one, one per node.
pub const MAX_DESTINATIONS: usize = 1 << 17;

/// The hasher of the table's maps: fast, seeded at random per map (so a
/// peer cannot choose addresses that collide), and never iterated (the
/// tables iterate in insertion order, so that simulations replay).
type Hasher = foldhash::fast::RandomState;

/// A neighbour: its id and the cost of the link to it.
#[derive(Clone, Debug)]
struct Neighbour<N> {
    id: N,
    cost: Metric,
    /// When it was last sent all our routes because it asked (ms).
    dumped_ms: Option<u64>,
    /// The digest of the routes (not retractions) it advertised to us,
    /// kept up to date with each update: recomputing it over the whole
    /// table for each neighbour's refresh digest was most of a refresh.
    heard_digest: [u8; 16],
}

/// How long a neighbour waits between two dumps it asks for: a request is
/// a few bytes and a dump the whole table, so a neighbour must not be able
/// to ask without end.
const DUMP_REQUEST_MIN_MS: u64 = 10_000;

/// What neighbours advertised, one row per destination (in the order of the
/// table's destination map) and one cell per neighbour slot, in one
/// allocation.
///
/// A vector per destination, as before, cost a header, an allocation and
/// up to half again in spare capacity: about 280 of the 430 bytes a route
/// took in a 10,000-node simulation, where the tables were nearly all the
/// memory. A row is as wide as the most neighbours the node had at once
/// (slots are reused).
#[derive(Debug, Default)]
struct HeardRows {
    /// Cells per row: one more than the highest slot ever used.
    stride: usize,
    cells: Vec<Advertised>,
}

/// A cell no neighbour filled. A retraction with seqno 0 and reach
/// [`INFINITY`] reads as this, which is the same for routing: neither is a
/// route, and any update replaces either.
const UNHEARD: Advertised = Advertised {
    seqno: 0,
    metric: INFINITY,
    reach: INFINITY,
};

impl HeardRows {
    fn row(&self, i: usize) -> &[Advertised] {
        self.cells
            .get(i * self.stride..(i + 1) * self.stride)
            .unwrap_or(&[])
    }

    /// Whether any neighbour advertised something in row `i`.
    fn any_in(&self, i: usize) -> bool {
        self.row(i).iter().any(|a| *a != UNHEARD)
    }

    fn cell_mut(&mut self, i: usize, slot: u32) -> Option<&mut Advertised> {
        if slot as usize >= self.stride {
            return None;
        }
        self.cells.get_mut(i * self.stride + slot as usize)
    }

    fn push_row(&mut self) {
        let needed = self.cells.len() + self.stride;
        if needed > self.cells.capacity() {
            self.cells
                .reserve_exact(growth(self.cells.len()).max(self.stride));
        }
        self.cells.resize(needed, UNHEARD);
    }

    /// Makes room for neighbour `slot` in every row.
    fn widen(&mut self, slot: u32) {
        let stride = slot as usize + 1;
        if stride <= self.stride {
            return;
        }
        let rows = self.cells.len().checked_div(self.stride).unwrap_or(0);
        let mut cells = Vec::with_capacity(rows * stride);
        for i in 0..rows {
            cells.extend_from_slice(self.row(i));
            cells.resize((i + 1) * stride, UNHEARD);
        }
        self.stride = stride;
        self.cells = cells;
    }

    /// Empties neighbour `slot`'s cell in every row.
    fn clear_slot(&mut self, slot: u32) {
        if (slot as usize) < self.stride {
            for cell in self
                .cells
                .iter_mut()
                .skip(slot as usize)
                .step_by(self.stride)
            {
                *cell = UNHEARD;
            }
        }
    }

    /// Keeps the rows for which `keep` (given in row order) is true, in
    /// order.
    fn retain(&mut self, keep: &[bool]) {
        let mut kept = 0;
        for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            if kept != i {
                let (from, to) = (i * self.stride, kept * self.stride);
                self.cells.copy_within(from..from + self.stride, to);
            }
            kept += 1;
        }
        self.cells.truncate(kept * self.stride);
    }
}

/// How much a table's storage grows when full, for `len` held: an eighth,
/// at least 16. Doubling left up to half of every table spare, and with
/// thousands of tables in one simulation that was a fifth of its memory;
/// an eighth still copies each entry only about eight times.
fn growth(len: usize) -> usize {
    (len / 8).max(16)
}

/// What neighbour `slot` advertised in a row (a route or its retraction).
fn heard_in(row: &[Advertised], slot: u32) -> Option<&Advertised> {
    row.get(slot as usize).filter(|a| **a != UNHEARD)
}

/// The routes (not retractions) in a row, with their slots.
fn routes_in(row: &[Advertised]) -> impl Iterator<Item = (u32, Advertised)> + '_ {
    (0u32..)
        .zip(row)
        .filter(|(_, a)| a.metric != INFINITY)
        .map(|(slot, a)| (slot, *a))
}

/// Everything else a table knows about one destination.
#[derive(Clone, Debug, Default)]
struct Destination {
    /// The selected next hop (a slot) and our advertised (seqno, metric).
    selected: Option<(u32, Advertised)>,
    /// The feasibility distance.
    feasibility: Option<Feasibility>,
}

/// One node's routing table (`N` names nodes; neighbours are nodes too).
///
/// Laid out for thousands of simulated nodes: each destination is one
/// entry holding the selected route and the feasibility distance, with a
/// row of what every neighbour advertised for it at the same index in
/// `HeardRows`, and neighbours are small slot numbers. Choosing a route
/// is one lookup and a scan of a few cells.
#[derive(Debug)]
pub struct RoutingTable<N> {
    me: N,
    seqno: u32,
    /// How far this node wants to be known (0: no limit).
    reach: Metric,
    /// Whether a seqno request that nobody here has a route for is passed
    /// to every neighbour (see [`RoutingTable::set_scoped`]).
    scoped: bool,
    /// Neighbours by slot; the slot of a link that went down is reused.
    neighbours: Vec<Option<Neighbour<N>>>,
    /// Slots by neighbour id.
    slots: HashMap<N, u32, Hasher>,
    /// Destinations, in the order first heard of.
    destinations: IndexMap<N, Destination, Hasher>,
    /// What each neighbour advertised for each destination.
    heard: HeardRows,
    outbox: VecDeque<(Target<N>, RouteMessage<N>)>,
    /// Destinations that became unreachable since `take_lost`.
    lost: Vec<N>,
    /// The highest seqno this node asked for (or passed a request on for),
    /// per destination: the same request is sent or forwarded again only
    /// after a wait that doubles each time (2 s up to 64 s), and a newer
    /// seqno goes at once. Without this a partition, where every node on
    /// one side starves for every node on the other, turns into a storm of
    /// requests (ten times the usual control traffic on 500 nodes). Without
    /// the retry, a request that died on the way (no route yet, or hop
    /// limit) blocked the same request until the next full refresh, and a
    /// node could stay without a route that its neighbour had.
    requested: HashMap<N, Asked, Hasher>,
    /// The time of the latest input (ms), from the caller.
    now_ms: u64,
    /// Destinations this node starves for (it heard of a route it cannot
    /// take) and when to ask for them again, while they stay unreachable.
    retries: BTreeSet<(u64, N)>,
    /// Destinations the caller has messages waiting for: only these are
    /// asked for at once when they starve; the others at the next refresh.
    wanted: BTreeSet<N>,
    /// Control messages sent so far.
    pub sent_messages: u64,
    /// Digests from neighbours that did not match what they told us (each
    /// asks for a dump).
    pub digest_mismatches: u64,
    /// Updates for new destinations refused because the table was full
    /// ([`MAX_DESTINATIONS`]).
    pub refused: u64,
}

impl<N: Name> RoutingTable<N> {
    /// The table of node `me`.
    pub fn new(me: N) -> Self {
        Self {
            me,
            seqno: 0,
            reach: 0,
            scoped: false,
            neighbours: Vec::new(),
            slots: HashMap::default(),
            destinations: IndexMap::default(),
            heard: HeardRows::default(),
            outbox: VecDeque::new(),
            lost: Vec::new(),
            requested: HashMap::default(),
            now_ms: 0,
            retries: BTreeSet::new(),
            wanted: BTreeSet::new(),
            sent_messages: 0,
            digest_mismatches: 0,
            refused: 0,
        }
    }

    fn neighbour(&self, slot: u32) -> Option<&Neighbour<N>> {
        self.neighbours.get(slot as usize)?.as_ref()
    }

    fn neighbour_mut(&mut self, slot: u32) -> Option<&mut Neighbour<N>> {
        self.neighbours.get_mut(slot as usize)?.as_mut()
    }

    fn id(&self, slot: u32) -> Option<&N> {
        self.neighbour(slot).map(|n| &n.id)
    }

    /// The cost through neighbour `slot` of a route it advertised.
    fn through(&self, slot: u32, a: &Advertised) -> Option<Metric> {
        Some(a.metric.saturating_add(self.neighbour(slot)?.cost))
    }

    /// The next hop towards `destination`, if it is reachable.
    pub fn next_hop(&self, destination: &N) -> Option<&N> {
        if *destination == self.me {
            return None;
        }
        let (slot, _) = self.destinations.get(destination)?.selected?;
        self.id(slot)
    }

    /// The best next hop towards `destination` other than `avoid`, among
    /// neighbours strictly closer to it than this node is (so following it
    /// cannot loop back here): for going around a neighbour that did not
    /// acknowledge. `None` if there is no such neighbour.
    pub fn alternative_hop(&self, destination: &N, avoid: &N) -> Option<&N> {
        let (i, _, d) = self.destinations.get_full(destination)?;
        let ours = d.selected?.1.metric;
        routes_in(self.heard.row(i))
            .filter(|(_, a)| a.metric < ours)
            .filter_map(|(slot, a)| {
                let id = self.id(slot).filter(|id| *id != avoid)?;
                Some((self.through(slot, &a)?, id))
            })
            .min()
            .map(|(_, id)| id)
    }

    /// The metric `neighbour` last advertised for `destination` (0 for
    /// itself; for this node, which it does not announce back to us, the
    /// link's cost), if it has a route.
    pub fn advertised(&self, neighbour: &N, destination: &N) -> Option<Metric> {
        if destination == neighbour {
            return Some(0);
        }
        let slot = *self.slots.get(neighbour)?;
        if *destination == self.me {
            return self.neighbour(slot).map(|n| n.cost);
        }
        let i = self.destinations.get_index_of(destination)?;
        let a = heard_in(self.heard.row(i), slot)?;
        (a.metric != INFINITY).then_some(a.metric)
    }

    /// Our metric to `destination` (0 for ourselves).
    pub fn metric(&self, destination: &N) -> Option<Metric> {
        if *destination == self.me {
            return Some(0);
        }
        self.destinations
            .get(destination)?
            .selected
            .map(|(_, a)| a.metric)
    }

    /// Selected routes: destination, our advertised route, next hop.
    fn selected(&self) -> impl Iterator<Item = (&N, Advertised, &N)> {
        self.destinations.iter().filter_map(|(d, e)| {
            let (slot, a) = e.selected?;
            Some((d, a, self.id(slot)?))
        })
    }

    /// Destinations we can reach, with next hop and metric, in the order
    /// first heard of.
    pub fn routes(&self) -> impl Iterator<Item = (&N, &N, Metric)> {
        self.selected().map(|(d, a, hop)| (d, hop, a.metric))
    }

    /// Destinations known without a limit on their reach (the landmarks of
    /// a scoped mesh, see docs/routing.md), with our metric to each.
    pub fn unlimited(&self) -> impl Iterator<Item = (&N, Metric)> {
        self.selected()
            .filter(|(_, a, _)| a.reach == 0)
            .map(|(d, a, _)| (d, a.metric))
    }

    /// Whether any neighbour has told us of `destination` (a route, or its
    /// retraction).
    pub fn heard_of(&self, destination: &N) -> bool {
        self.destinations
            .get_index_of(destination)
            .is_some_and(|i| self.heard.any_in(i))
    }

    /// How many destinations the table keeps (see [`MAX_DESTINATIONS`]).
    pub fn destinations(&self) -> usize {
        self.destinations.len()
    }

    /// Sets how far this node wants to be known: nodes whose metric to it
    /// is more than `reach` do not pass its route on (0: no limit).
    /// Announces the change.
    pub fn set_reach(&mut self, reach: Metric) {
        if reach != self.reach {
            self.reach = reach;
            self.announce_self();
        }
    }

    /// In a scoped mesh (`true`), where far destinations are reached
    /// through landmarks, a seqno request for a destination nobody here has
    /// heard of dies here instead of going to every neighbour, and a
    /// destination never heard of is not asked for.
    pub fn set_scoped(&mut self, scoped: bool) {
        self.scoped = scoped;
    }

    /// Destinations (by index) that neighbour `slot` advertised.
    fn heard_via(&self, slot: u32) -> Vec<usize> {
        (0..self.destinations.len())
            .filter(|i| heard_in(self.heard.row(*i), slot).is_some())
            .collect()
    }

    /// The cost of the link to `neighbour`, if it is one.
    pub fn link_cost(&self, neighbour: &N) -> Option<Metric> {
        self.neighbour(*self.slots.get(neighbour)?).map(|n| n.cost)
    }

    /// A link to `neighbour` came up, or its cost changed.
    pub fn handle_link(&mut self, neighbour: N, cost: Metric) {
        let cost = cost.clamp(1, INFINITY - 1);
        if let Some(&slot) = self.slots.get(&neighbour) {
            let Some(n) = self.neighbour_mut(slot) else {
                return;
            };
            if n.cost == cost {
                return;
            }
            n.cost = cost;
            for i in self.heard_via(slot) {
                self.reselect(i);
            }
            return;
        }
        let Ok(slot) = u32::try_from(
            self.neighbours
                .iter()
                .position(Option::is_none)
                .unwrap_or(self.neighbours.len()),
        ) else {
            return; // Four billion neighbours: not a mesh we can serve.
        };
        let entry = Some(Neighbour {
            id: neighbour.clone(),
            cost,
            dumped_ms: None,
            heard_digest: [0; 16],
        });
        match self.neighbours.get_mut(slot as usize) {
            Some(free) => *free = entry,
            None => self.neighbours.push(entry),
        }
        self.slots.insert(neighbour.clone(), slot);
        self.heard.widen(slot);
        // Tell the new neighbour everything we know.
        self.full_dump(Target::Neighbour(neighbour));
    }

    /// The link to `neighbour` went down: its routes are gone.
    pub fn handle_link_down(&mut self, neighbour: &N) {
        let Some(slot) = self.slots.remove(neighbour) else {
            return;
        };
        let affected = self.heard_via(slot);
        self.heard.clear_slot(slot);
        // Free the slot only now: routes through it still name it until
        // they are reselected, and nothing reselects before this.
        if let Some(n) = self.neighbours.get_mut(slot as usize) {
            *n = None;
        }
        for i in affected {
            self.reselect(i);
        }
    }

    /// The index of `destination`'s entry, made if new and there is room.
    fn entry(&mut self, destination: N) -> Option<usize> {
        if let Some(i) = self.destinations.get_index_of(&destination) {
            return Some(i);
        }
        if self.destinations.len() >= MAX_DESTINATIONS {
            self.refused += 1;
            return None;
        }
        if self.destinations.len() == self.destinations.capacity() {
            self.destinations
                .reserve_exact(growth(self.destinations.len()));
        }
        self.heard.push_row();
        Some(
            self.destinations
                .insert_full(destination, Destination::default())
                .0,
        )
    }

    /// A routing message from `from` (a neighbour) arrived.
    pub fn handle_message(&mut self, from: N, message: RouteMessage<N>) {
        let Some(&slot) = self.slots.get(&from) else {
            return; // Not (or no longer) a neighbour.
        };
        match message {
            RouteMessage::Update {
                destination,
                seqno,
                metric,
                reach,
            } => {
                if destination == self.me {
                    return;
                }
                let Some(i) = self.entry(destination) else {
                    return;
                };
                let Some(destination) = self.destinations.get_index(i).map(|(n, _)| n) else {
                    return;
                };
                let route = Advertised {
                    seqno,
                    metric,
                    reach,
                };
                let Some(cell) = self.heard.cell_mut(i, slot) else {
                    return;
                };
                // A neighbour's seqno for a destination never goes down (it
                // only selects feasible routes): an older one is a stale
                // update.
                if seqno < cell.seqno {
                    return;
                }
                let old = std::mem::replace(cell, route);
                if old != route {
                    let mut change = [0u8; 16];
                    for a in [&old, &route] {
                        if a.metric != INFINITY {
                            xor_into(&mut change, a.digest(destination));
                        }
                    }
                    if let Some(n) = self.neighbour_mut(slot) {
                        xor_into(&mut n.heard_digest, change);
                    }
                }
                // An update from a neighbour other than the selected next
                // hop, no better than the selected route, cannot change the
                // selection: the selected route stays feasible (its
                // neighbour advertised less than our feasibility distance).
                // That is most updates while a mesh forms.
                let selected = self.destinations.get_index(i).and_then(|(_, d)| d.selected);
                if let Some((next, ours)) = selected
                    && next != slot
                    && self.through(slot, &route).is_none_or(|m| m >= ours.metric)
                {
                    debug_assert_eq!(self.best(i), selected);
                    return;
                }
                self.reselect(i);
            }
            RouteMessage::SeqnoRequest {
                destination,
                seqno,
                hops,
            } => {
                if destination == self.me {
                    if seqno > self.seqno {
                        self.seqno = seqno;
                        self.announce_self();
                    }
                    return;
                }
                let entry = self.destinations.get_full(&destination);
                if let Some((_, a)) = entry
                    .and_then(|(_, _, d)| d.selected)
                    .filter(|(_, a)| a.seqno >= seqno)
                {
                    // We already have it: tell the asker (if we pass it on
                    // at all).
                    if a.passes() {
                        let update = a.update(destination);
                        self.send(Target::Neighbour(from), update);
                    }
                    return;
                }
                // Forward towards the destination over any route we heard, but
                // never back to the asker.
                let Some(hops) = hops.checked_sub(1).filter(|h| *h > 0) else {
                    return;
                };
                let via = entry.and_then(|(i, _, _)| {
                    routes_in(self.heard.row(i))
                        .filter(|(s, _)| *s != slot)
                        .filter_map(|(s, a)| Some((self.through(s, &a)?, self.id(s)?)))
                        // Ties go to the lowest id.
                        .min()
                        .map(|(_, id)| id.clone())
                });
                // Nobody here heard of a way: ask every other neighbour, so
                // that a request from a node with messages waiting crosses
                // a region where every route was retracted. Each node passes
                // a request on once per seqno (and wait), so this costs at
                // most one message per link.
                let targets: Vec<N> = match via {
                    Some(via) => vec![via],
                    None if self.scoped => Vec::new(),
                    None => self
                        .neighbours
                        .iter()
                        .flatten()
                        .filter(|n| n.id != from)
                        .map(|n| n.id.clone())
                        .collect(),
                };
                if !targets.is_empty() && self.first_request(&destination, seqno) {
                    for n in targets {
                        self.send(
                            Target::Neighbour(n),
                            RouteMessage::SeqnoRequest {
                                destination: destination.clone(),
                                seqno,
                                hops,
                            },
                        );
                    }
                }
            }
            RouteMessage::Digest { digest } => {
                let heard = self.neighbour(slot).map(|n| n.heard_digest);
                debug_assert_eq!(heard, Some(self.heard_digest(slot)));
                if heard != Some(digest) {
                    self.digest_mismatches += 1;
                    self.send(Target::Neighbour(from), RouteMessage::DumpRequest);
                }
            }
            RouteMessage::DumpRequest => {
                let now = self.now_ms;
                let Some(n) = self.neighbour_mut(slot) else {
                    return;
                };
                if n.dumped_ms
                    .is_some_and(|at| now < at.saturating_add(DUMP_REQUEST_MIN_MS))
                {
                    return;
                }
                n.dumped_ms = Some(now);
                self.full_dump(Target::Neighbour(from));
            }
        }
    }

    /// The digest of the routes (not retractions) neighbour `slot`
    /// advertised to us: equal to the digest it sends us at a refresh when
    /// we heard everything it said. Kept up to date in the neighbour's
    /// entry; computed from scratch here to check that (debug builds).
    fn heard_digest(&self, slot: u32) -> [u8; 16] {
        let mut digest = [0u8; 16];
        for (i, destination) in self.destinations.keys().enumerate() {
            if let Some(a) = heard_in(self.heard.row(i), slot).filter(|a| a.metric != INFINITY) {
                xor_into(&mut digest, a.digest(destination));
            }
        }
        digest
    }

    /// The slow periodic refresh (the caller decides the interval): covers
    /// lost updates. Each neighbour is sent a digest of what this node
    /// advertises to it; a neighbour whose record of that differs asks for
    /// a dump of the whole table ([`RouteMessage::DumpRequest`]).
    pub fn handle_refresh(&mut self) {
        // Destinations nobody advertises any more (their links went down)
        // and that we have no route to are forgotten, so that the table
        // does not grow with every node ever heard of.
        let keep: Vec<bool> = self
            .destinations
            .iter()
            .enumerate()
            .map(|(i, (destination, d))| {
                self.heard.any_in(i) || d.selected.is_some() || self.wanted.contains(destination)
            })
            .collect();
        if keep.contains(&false) {
            let mut kept = keep.iter();
            self.destinations
                .retain(|_, _| kept.next().copied().unwrap_or(true));
            self.heard.retain(&keep);
        }
        // Each neighbour gets the digest of what we advertise to it, and
        // asks for everything only if it does not match what it heard: a
        // full dump to every neighbour each refresh was most of the
        // control traffic of a quiet mesh (a quarter of a 10,000-node
        // simulation's time went to the first one).
        // What we advertise, then per neighbour without its own route
        // (which it does not keep).
        let mut all = self.own().digest(&self.me);
        for (destination, a, _) in self.selected() {
            if a.passes() {
                xor_into(&mut all, a.digest(destination));
            }
        }
        let digests: Vec<(N, [u8; 16])> = self
            .neighbours
            .iter()
            .flatten()
            .map(|n| {
                let mut digest = all;
                let route = self.destinations.get(&n.id).and_then(|d| d.selected);
                if let Some((_, a)) = route.filter(|(_, a)| a.passes()) {
                    xor_into(&mut digest, a.digest(&n.id));
                }
                (n.id.clone(), digest)
            })
            .collect();
        for (neighbour, digest) in digests {
            self.send(
                Target::Neighbour(neighbour),
                RouteMessage::Digest { digest },
            );
        }
        // A request that was lost may be sent again from now on.
        self.requested.clear();
        self.retries.clear();
        // Destinations nobody here needed yet are asked for now, once a
        // refresh, so that every node still ends up with a route to every
        // node of its component.
        let starving: Vec<(N, Option<Feasibility>)> = self
            .destinations
            .iter()
            .enumerate()
            .filter(|(i, (_, d))| {
                d.selected.is_none() && routes_in(self.heard.row(*i)).next().is_some()
            })
            .map(|(_, (destination, d))| (destination.clone(), d.feasibility))
            .collect();
        for (destination, fd) in starving {
            self.request(&destination, fd);
        }
    }

    /// The caller has messages waiting for `destination` (`true`), or no
    /// longer has (`false`). A node that starves for a destination (it
    /// heard of routes it cannot take) asks the destination for a newer
    /// seqno at once only if it has messages for it; otherwise at the next
    /// refresh. Each request makes the destination raise its seqno, and each
    /// new seqno is announced by every node of the component: asking for
    /// every lost route at once made 73% of the routing tables' sends with
    /// walkers (`simulator/scenarios/walkers.toml`).
    pub fn set_wanted(&mut self, destination: &N, wanted: bool) {
        if !wanted {
            self.wanted.remove(destination);
            return;
        }
        if !self.wanted.insert(destination.clone()) {
            return;
        }
        let entry = self.destinations.get(destination);
        if entry.is_some_and(|d| d.selected.is_some()) {
            return;
        }
        if self.scoped && !self.heard_of(destination) {
            return;
        }
        let fd = entry.and_then(|d| d.feasibility);
        self.request(destination, fd);
    }

    /// Asks every neighbour for a newer seqno of `destination` (if the
    /// last ask was long enough ago), and plans to ask again.
    fn request(&mut self, destination: &N, fd: Option<Feasibility>) {
        let wanted = fd.map_or(0, |fd| fd.seqno.saturating_add(1));
        if self.first_request(destination, wanted) {
            let request = RouteMessage::SeqnoRequest {
                destination: destination.clone(),
                seqno: wanted,
                hops: MAX_REQUEST_HOPS,
            };
            self.send(Target::AllNeighbours, request);
        }
        if let Some(asked) = self.requested.get(destination) {
            let at = asked.at_ms.saturating_add(asked.wait_ms);
            self.retries.insert((at, destination.clone()));
        }
    }

    /// When [`Self::handle_retry`] wants to be called next.
    pub fn poll_retry(&self) -> Option<u64> {
        self.retries.first().map(|(at, _)| *at)
    }

    /// Asks again for destinations still unreachable whose wait is over: a
    /// request may die on the way (no route there yet, the hop limit), and
    /// nothing else would ask again before the next full refresh.
    pub fn handle_retry(&mut self, now_ms: u64) {
        self.set_time(now_ms);
        while let Some((at, _)) = self.retries.first() {
            if *at > self.now_ms {
                break;
            }
            let Some((_, destination)) = self.retries.pop_first() else {
                break;
            };
            let entry = self.destinations.get(&destination);
            let starving =
                self.wanted.contains(&destination) && entry.is_none_or(|d| d.selected.is_none());
            if starving {
                let fd = entry.and_then(|d| d.feasibility);
                self.request(&destination, fd);
            }
        }
    }

    /// The time now, in ms on the caller's clock (requests are retried by it).
    pub fn set_time(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Whether a request for `destination` at `seqno` may go out now: no
    /// request for it or a newer seqno went out, or the last one did longer
    /// ago than its wait (which then doubles). Notes that one does.
    fn first_request(&mut self, destination: &N, seqno: u32) -> bool {
        let now = self.now_ms;
        let fresh = Asked {
            seqno,
            at_ms: now,
            wait_ms: REQUEST_RETRY_MS,
        };
        match self.requested.get_mut(destination) {
            Some(asked) if asked.seqno < seqno => {
                *asked = fresh;
                true
            }
            Some(asked) if now >= asked.at_ms.saturating_add(asked.wait_ms) => {
                asked.at_ms = now;
                asked.wait_ms = (asked.wait_ms * 2).min(REQUEST_RETRY_MAX_MS);
                true
            }
            Some(_) => false,
            None => {
                self.requested.insert(destination.clone(), fresh);
                true
            }
        }
    }

    /// Destinations that became unreachable since the last call.
    pub fn take_lost(&mut self) -> Vec<N> {
        std::mem::take(&mut self.lost)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(Target<N>, RouteMessage<N>)> {
        self.outbox.pop_front()
    }

    fn send(&mut self, target: Target<N>, message: RouteMessage<N>) {
        self.sent_messages += 1;
        self.outbox.push_back((target, message));
    }

    fn own(&self) -> Advertised {
        Advertised {
            seqno: self.seqno,
            metric: 0,
            reach: self.reach,
        }
    }

    fn own_route(&self) -> RouteMessage<N> {
        self.own().update(self.me.clone())
    }

    fn announce_self(&mut self) {
        let update = self.own_route();
        self.send(Target::AllNeighbours, update);
    }

    fn full_dump(&mut self, target: Target<N>) {
        let own = self.own_route();
        self.send(target.clone(), own);
        let routes: Vec<RouteMessage<N>> = self
            .selected()
            .filter(|(_, a, _)| a.passes())
            .map(|(d, a, _)| a.update(d.clone()))
            .collect();
        for update in routes {
            self.send(target.clone(), update);
        }
    }

    /// The best feasible route to the destination at `index`: its next hop
    /// (a slot) and the route we would advertise.
    fn best(&self, index: usize) -> Option<(u32, Advertised)> {
        let d = self.destinations.get_index(index)?.1;
        let fd = d.feasibility;
        let current = d.selected;
        let stay = |slot: u32| current.is_none_or(|(s, _)| s != slot);
        routes_in(self.heard.row(index))
            .filter(|(_, a)| fd.is_none_or(|fd| fd.admits(*a)))
            .filter_map(|(slot, a)| {
                let id = self.id(slot)?;
                let metric = self.through(slot, &a)?.min(INFINITY - 1);
                Some((slot, id, Advertised { metric, ..a }))
            })
            // Lowest metric; ties go to the current next hop, then the lowest id.
            .min_by(|(s1, n1, a1), (s2, n2, a2)| {
                (a1.metric, stay(*s1), n1).cmp(&(a2.metric, stay(*s2), n2))
            })
            .map(|(slot, _, a)| (slot, a))
    }

    /// Chooses the best feasible route to the destination at `index` and
    /// announces any change.
    fn reselect(&mut self, index: usize) {
        let Some((destination, d)) = self.destinations.get_index(index) else {
            return;
        };
        let fd = d.feasibility;
        let current = d.selected;
        let best = self.best(index);
        let destination = destination.clone();
        let Some((_, d)) = self.destinations.get_index_mut(index) else {
            return;
        };
        match best {
            Some((slot, advertised)) => {
                let changed = current != Some((slot, advertised));
                d.selected = Some((slot, advertised));
                let fd = d.feasibility.get_or_insert(Feasibility {
                    seqno: advertised.seqno,
                    metric: advertised.metric,
                });
                if advertised.seqno > fd.seqno {
                    *fd = Feasibility {
                        seqno: advertised.seqno,
                        metric: advertised.metric,
                    };
                } else if advertised.seqno == fd.seqno && advertised.metric < fd.metric {
                    fd.metric = advertised.metric;
                }
                // Beyond the destination's reach the route is kept but not
                // passed on; a route that stops passing is retracted.
                let passed = current.is_some_and(|(_, a)| a.passes());
                if changed && advertised.passes() {
                    let update = advertised.update(destination);
                    self.send(Target::AllNeighbours, update);
                } else if passed && !advertised.passes() {
                    let retraction = advertised.retraction(destination);
                    self.send(Target::AllNeighbours, retraction);
                }
            }
            None => {
                if let Some((_, old)) = d.selected.take() {
                    // Bounded for callers that never drain it.
                    if self.lost.len() < 65_536 {
                        self.lost.push(destination.clone());
                    }
                    // Unreachable now: retract (if we passed it on), and
                    // ask for a newer seqno.
                    if old.passes() {
                        let retraction = old.retraction(destination.clone());
                        self.send(Target::AllNeighbours, retraction);
                    }
                }
                if self.wanted.contains(&destination) {
                    self.request(&destination, fd);
                }
            }
        }
    }
}
