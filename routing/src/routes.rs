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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

/// A route metric; [`INFINITY`] means unreachable.
pub type Metric = u32;
/// The metric of a retracted route.
pub const INFINITY: Metric = u32::MAX;
/// How far a seqno request travels.
pub const MAX_REQUEST_HOPS: u8 = 32;

/// The cost of a link from its measured round-trip time and loss rate
/// (0 to 1): 256 times the expected transmissions for a delivery and its
/// acknowledgement (ETX), plus the round trip in milliseconds. At least 1, so
/// every hop costs something (loop freedom needs that).
pub fn link_cost(rtt: Duration, loss: f64) -> Metric {
    let delivery = (1.0 - loss.clamp(0.0, 0.99)).powi(2);
    let etx = (256.0 / delivery).min(1_000_000.0);
    let rtt_ms = u32::try_from(rtt.as_millis()).unwrap_or(u32::MAX);
    // `etx` is between 256 and 1e6, so the conversion is exact enough and in range.
    let etx = etx as u32;
    etx.saturating_add(rtt_ms).clamp(1, INFINITY - 1)
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

/// One node's routing table (`N` names nodes; neighbours are nodes too).
#[derive(Debug)]
pub struct RoutingTable<N> {
    me: N,
    seqno: u32,
    /// How far this node wants to be known (0: no limit).
    reach: Metric,
    /// Whether a seqno request that nobody here has a route for is passed
    /// to every neighbour (see [`RoutingTable::set_scoped`]).
    scoped: bool,
    links: HashMap<N, Metric>,
    /// What each neighbour advertised, per destination.
    heard: HashMap<N, HashMap<N, Advertised>>,
    /// Feasibility distances.
    feasibility: HashMap<N, Feasibility>,
    /// The selected next hop and our advertised (seqno, metric) per destination.
    selected: BTreeMap<N, (N, Advertised)>,
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
    requested: HashMap<N, Asked>,
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
}

impl<N: Clone + Eq + Hash + Ord> RoutingTable<N> {
    /// The table of node `me`.
    pub fn new(me: N) -> Self {
        Self {
            me,
            seqno: 0,
            reach: 0,
            scoped: false,
            links: HashMap::new(),
            heard: HashMap::new(),
            feasibility: HashMap::new(),
            selected: BTreeMap::new(),
            outbox: VecDeque::new(),
            lost: Vec::new(),
            requested: HashMap::new(),
            now_ms: 0,
            retries: BTreeSet::new(),
            wanted: BTreeSet::new(),
            sent_messages: 0,
        }
    }

    /// The next hop towards `destination`, if it is reachable.
    pub fn next_hop(&self, destination: &N) -> Option<&N> {
        if *destination == self.me {
            return None;
        }
        self.selected.get(destination).map(|(hop, _)| hop)
    }

    /// The best next hop towards `destination` other than `avoid`, among
    /// neighbours strictly closer to it than this node is (so following it
    /// cannot loop back here): for going around a neighbour that did not
    /// acknowledge. `None` if there is no such neighbour.
    pub fn alternative_hop(&self, destination: &N, avoid: &N) -> Option<&N> {
        let ours = self.selected.get(destination)?.1.metric;
        self.heard
            .iter()
            .filter(|(n, _)| *n != avoid)
            .filter_map(|(n, h)| {
                let a = h.get(destination)?;
                let cost = *self.links.get(n)?;
                (a.metric < ours).then(|| (a.metric.saturating_add(cost), n))
            })
            .min()
            .map(|(_, n)| n)
    }

    /// The metric `neighbour` last advertised for `destination` (0 for
    /// itself; for this node, which it does not announce back to us, the
    /// link's cost), if it has a route.
    pub fn advertised(&self, neighbour: &N, destination: &N) -> Option<Metric> {
        if destination == neighbour {
            return Some(0);
        }
        if *destination == self.me {
            return self.links.get(neighbour).copied();
        }
        let a = self.heard.get(neighbour)?.get(destination)?;
        (a.metric != INFINITY).then_some(a.metric)
    }

    /// Our metric to `destination` (0 for ourselves).
    pub fn metric(&self, destination: &N) -> Option<Metric> {
        if *destination == self.me {
            return Some(0);
        }
        self.selected.get(destination).map(|(_, a)| a.metric)
    }

    /// Destinations we can reach, with next hop and metric.
    pub fn routes(&self) -> impl Iterator<Item = (&N, &N, Metric)> {
        self.selected.iter().map(|(d, (h, a))| (d, h, a.metric))
    }

    /// Destinations known without a limit on their reach (the landmarks of
    /// a scoped mesh, see docs/routing.md), with our metric to each.
    pub fn unlimited(&self) -> impl Iterator<Item = (&N, Metric)> {
        self.selected
            .iter()
            .filter(|(_, (_, a))| a.reach == 0)
            .map(|(d, (_, a))| (d, a.metric))
    }

    /// Whether any neighbour has told us of `destination` (a route, or its
    /// retraction).
    pub fn heard_of(&self, destination: &N) -> bool {
        self.heard.values().any(|h| h.contains_key(destination))
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

    /// A link to `neighbour` came up, or its cost changed.
    pub fn handle_link(&mut self, neighbour: N, cost: Metric) {
        let fresh = self
            .links
            .insert(neighbour.clone(), cost.clamp(1, INFINITY - 1))
            .is_none();
        if fresh {
            // Tell the new neighbour everything we know.
            self.full_dump(Target::Neighbour(neighbour.clone()));
        }
        let destinations: Vec<N> = self
            .heard
            .get(&neighbour)
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default();
        for d in destinations {
            self.reselect(&d);
        }
    }

    /// The link to `neighbour` went down: its routes are gone.
    pub fn handle_link_down(&mut self, neighbour: &N) {
        self.links.remove(neighbour);
        let destinations: Vec<N> = self
            .heard
            .remove(neighbour)
            .map(|h| h.into_keys().collect())
            .unwrap_or_default();
        for d in destinations {
            self.reselect(&d);
        }
    }

    /// A routing message from `from` (a neighbour) arrived.
    pub fn handle_message(&mut self, from: N, message: RouteMessage<N>) {
        if !self.links.contains_key(&from) {
            return; // Not (or no longer) a neighbour.
        }
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
                let heard = self.heard.entry(from).or_default();
                // A neighbour's seqno for a destination never goes down (it
                // only selects feasible routes): an older one is a stale update.
                if heard.get(&destination).is_some_and(|a| seqno < a.seqno) {
                    return;
                }
                heard.insert(
                    destination.clone(),
                    Advertised {
                        seqno,
                        metric,
                        reach,
                    },
                );
                self.reselect(&destination);
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
                if let Some((_, a)) = self
                    .selected
                    .get(&destination)
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
                let via = self
                    .heard
                    .iter()
                    .filter(|(n, h)| {
                        **n != from && h.get(&destination).is_some_and(|a| a.metric != INFINITY)
                    })
                    .min_by_key(|(n, h)| {
                        let a = h.get(&destination).map_or(INFINITY, |a| a.metric);
                        // Ties go to the lowest id, whatever the hash order.
                        (
                            a.saturating_add(self.links.get(*n).copied().unwrap_or(INFINITY)),
                            *n,
                        )
                    })
                    .map(|(n, _)| n.clone());
                // Nobody here heard of a way: ask every other neighbour, so
                // that a request from a node with messages waiting crosses
                // a region where every route was retracted. Each node passes
                // a request on once per seqno (and wait), so this costs at
                // most one message per link.
                let targets: Vec<N> = match via {
                    Some(via) => vec![via],
                    None if self.scoped => Vec::new(),
                    None => self.links.keys().filter(|n| **n != from).cloned().collect(),
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
        }
    }

    /// The slow periodic refresh: announce everything again (covers lost
    /// updates). The caller decides the interval.
    pub fn handle_refresh(&mut self) {
        self.full_dump(Target::AllNeighbours);
        // A request that was lost may be sent again from now on.
        self.requested.clear();
        self.retries.clear();
        // Destinations nobody here needed yet are asked for now, once a
        // refresh, so that every node still ends up with a route to every
        // node of its component.
        // In order (a set), so that a simulation replays exactly.
        let starving: BTreeSet<N> = self
            .heard
            .values()
            .flat_map(|h| h.iter())
            .filter(|(d, a)| {
                a.metric != INFINITY && **d != self.me && !self.selected.contains_key(*d)
            })
            .map(|(d, _)| d.clone())
            .collect();
        for destination in starving {
            let fd = self.feasibility.get(&destination).copied();
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
        if !self.wanted.insert(destination.clone()) || self.selected.contains_key(destination) {
            return;
        }
        if self.scoped && !self.heard_of(destination) {
            return;
        }
        let fd = self.feasibility.get(destination).copied();
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
            let starving =
                self.wanted.contains(&destination) && !self.selected.contains_key(&destination);
            if starving {
                let fd = self.feasibility.get(&destination).copied();
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

    fn own_route(&self) -> RouteMessage<N> {
        RouteMessage::Update {
            destination: self.me.clone(),
            seqno: self.seqno,
            metric: 0,
            reach: self.reach,
        }
    }

    fn announce_self(&mut self) {
        let update = self.own_route();
        self.send(Target::AllNeighbours, update);
    }

    fn full_dump(&mut self, target: Target<N>) {
        let own = self.own_route();
        self.send(target.clone(), own);
        let routes: Vec<RouteMessage<N>> = self
            .selected
            .iter()
            .filter(|(_, (_, a))| a.passes())
            .map(|(d, (_, a))| a.update(d.clone()))
            .collect();
        for update in routes {
            self.send(target.clone(), update);
        }
    }

    /// Chooses the best feasible route to `destination` and announces any change.
    fn reselect(&mut self, destination: &N) {
        let fd = self.feasibility.get(destination).copied();
        let current = self.selected.get(destination).cloned();
        let best = self
            .heard
            .iter()
            .filter_map(|(n, h)| {
                let a = *h.get(destination)?;
                let cost = *self.links.get(n)?;
                (a.metric != INFINITY && fd.is_none_or(|fd| fd.admits(a))).then(|| {
                    (
                        n.clone(),
                        Advertised {
                            seqno: a.seqno,
                            metric: a.metric.saturating_add(cost).min(INFINITY - 1),
                            reach: a.reach,
                        },
                    )
                })
            })
            // Lowest metric; ties go to the current next hop, then the lowest id.
            .min_by(|(n1, a1), (n2, a2)| {
                let stay = |n: &N| current.as_ref().is_none_or(|(h, _)| h != n);
                (a1.metric, stay(n1), n1).cmp(&(a2.metric, stay(n2), n2))
            });
        match best {
            Some((hop, advertised)) => {
                let changed = current.as_ref() != Some(&(hop.clone(), advertised));
                self.selected.insert(destination.clone(), (hop, advertised));
                let fd = self
                    .feasibility
                    .entry(destination.clone())
                    .or_insert(Feasibility {
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
                let passed = current.as_ref().is_some_and(|(_, a)| a.passes());
                if changed && advertised.passes() {
                    let update = advertised.update(destination.clone());
                    self.send(Target::AllNeighbours, update);
                } else if passed && !advertised.passes() {
                    let retraction = advertised.retraction(destination.clone());
                    self.send(Target::AllNeighbours, retraction);
                }
            }
            None => {
                if let Some((_, old)) = self.selected.remove(destination) {
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
                if self.wanted.contains(destination) {
                    self.request(destination, fd);
                }
            }
        }
    }
}
