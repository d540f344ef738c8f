//! Distance-vector routing on in-process networks: convergence, rerouting,
//! and no routing loop at any moment, whatever the order messages arrive in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use lifeline_routing::routes::{RouteMessage, RoutingTable, Target};
use proptest::prelude::*;

struct Net {
    tables: BTreeMap<u8, RoutingTable<u8>>,
    links: BTreeMap<(u8, u8), u32>,
    in_flight: Vec<(u8, u8, RouteMessage<u8>)>,
    /// Seqno requests sent (per neighbour reached).
    requests: usize,
}

impl Net {
    fn new(nodes: u8) -> Self {
        Self {
            tables: (0..nodes).map(|n| (n, RoutingTable::new(n))).collect(),
            links: BTreeMap::new(),
            in_flight: Vec::new(),
            requests: 0,
        }
    }

    /// A `side` x `side` grid, every link of cost 10.
    fn grid(side: u8) -> Self {
        let mut net = Self::new(side * side);
        for y in 0..side {
            for x in 0..side {
                let v = y * side + x;
                if x + 1 < side {
                    net.link_up(v, v + 1, 10);
                }
                if y + 1 < side {
                    net.link_up(v, v + side, 10);
                }
            }
        }
        net
    }

    fn neighbours(&self, n: u8) -> Vec<u8> {
        self.links
            .keys()
            .filter(|(a, _)| *a == n)
            .map(|(_, b)| *b)
            .collect()
    }

    fn link_up(&mut self, a: u8, b: u8, cost: u32) {
        self.links.insert((a, b), cost);
        self.links.insert((b, a), cost);
        self.tables.get_mut(&a).unwrap().handle_link(b, cost);
        self.tables.get_mut(&b).unwrap().handle_link(a, cost);
        self.collect();
    }

    fn link_down(&mut self, a: u8, b: u8) {
        self.links.remove(&(a, b));
        self.links.remove(&(b, a));
        // Messages on the wire are lost with the link.
        self.in_flight
            .retain(|(f, t, _)| !((*f == a && *t == b) || (*f == b && *t == a)));
        self.tables.get_mut(&a).unwrap().handle_link_down(&b);
        self.tables.get_mut(&b).unwrap().handle_link_down(&a);
        self.collect();
    }

    fn collect(&mut self) {
        let nodes: Vec<u8> = self.tables.keys().copied().collect();
        for n in nodes {
            while let Some((target, m)) = self.tables.get_mut(&n).unwrap().poll_transmit() {
                let to = match target {
                    Target::AllNeighbours => self.neighbours(n),
                    Target::Neighbour(x) if self.links.contains_key(&(n, x)) => vec![x],
                    Target::Neighbour(_) => vec![],
                };
                for t in to {
                    if matches!(m, RouteMessage::SeqnoRequest { .. }) {
                        self.requests += 1;
                    }
                    self.in_flight.push((n, t, m.clone()));
                }
            }
        }
    }

    /// Delivers the oldest message on the link of message `index`: links are
    /// ordered streams (FIFO), but links race each other.
    fn deliver(&mut self, index: usize) {
        let (from, to, _) = self.in_flight[index];
        let oldest = self
            .in_flight
            .iter()
            .position(|(f, t, _)| (*f, *t) == (from, to))
            .unwrap_or(index);
        let (from, to, m) = self.in_flight.remove(oldest);
        self.tables.get_mut(&to).unwrap().handle_message(from, m);
        self.collect();
    }

    /// Delivers everything in order; fails on a loop or if it never ends.
    fn run_to_quiet(&mut self) -> Result<(), String> {
        let mut steps = 0;
        while !self.in_flight.is_empty() {
            self.deliver(0);
            steps += 1;
            if steps % 100 == 0 {
                self.loop_free()?;
            }
            if steps > 50_000 {
                return Err("routing did not quiesce".into());
            }
        }
        Ok(())
    }

    /// Following next hops from `start` towards `dest` never revisits a node.
    fn loop_free(&self) -> Result<(), String> {
        for dest in self.tables.keys() {
            for start in self.tables.keys() {
                let mut seen = BTreeSet::new();
                let mut at = *start;
                while at != *dest {
                    if !seen.insert(at) {
                        return Err(format!("loop towards {dest} through {seen:?}"));
                    }
                    match self.tables[&at].next_hop(dest) {
                        Some(h) => at = *h,
                        None => break,
                    }
                }
            }
        }
        Ok(())
    }

    fn component(&self, from: u8) -> BTreeSet<u8> {
        let mut seen = BTreeSet::from([from]);
        let mut queue = VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            for m in self.neighbours(n) {
                if seen.insert(m) {
                    queue.push_back(m);
                }
            }
        }
        seen
    }

    fn reachable(&self, from: u8) -> BTreeSet<u8> {
        let table = &self.tables[&from];
        self.tables
            .keys()
            .copied()
            .filter(|d| *d == from || table.next_hop(d).is_some())
            .collect()
    }

    fn converged(&mut self) -> Result<(), String> {
        self.run_to_quiet()?;
        for n in self.tables.keys().copied().collect::<Vec<_>>() {
            self.tables.get_mut(&n).unwrap().handle_refresh();
        }
        self.collect();
        self.run_to_quiet()?;
        for n in self.tables.keys() {
            if self.reachable(*n) != self.component(*n) {
                return Err(format!(
                    "node {n} reaches {:?}, its component is {:?}",
                    self.reachable(*n),
                    self.component(*n)
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn a_ten_hop_line_converges_with_summed_metrics() {
    let mut net = Net::new(11);
    for i in 0..10 {
        net.link_up(i, i + 1, 100);
    }
    net.converged().unwrap();
    assert_eq!(net.tables[&0].next_hop(&10), Some(&1));
    assert_eq!(net.tables[&0].metric(&10), Some(1000));
    assert_eq!(net.tables[&10].metric(&0), Some(1000));
}

#[test]
fn a_ring_reroutes_around_a_failed_link() {
    let mut net = Net::new(6);
    for i in 0..6 {
        net.link_up(i, (i + 1) % 6, 10);
    }
    net.converged().unwrap();
    assert_eq!(net.tables[&0].next_hop(&1), Some(&1));
    net.link_down(0, 1);
    net.converged().unwrap();
    assert_eq!(net.tables[&0].next_hop(&1), Some(&5));
    assert_eq!(net.tables[&0].metric(&1), Some(50));
    net.loop_free().unwrap();
}

#[test]
fn a_partition_makes_the_other_side_unreachable_and_healing_restores_it() {
    let mut net = Net::new(4);
    net.link_up(0, 1, 5);
    net.link_up(1, 2, 5);
    net.link_up(2, 3, 5);
    net.converged().unwrap();
    net.link_down(1, 2);
    net.converged().unwrap();
    assert_eq!(net.tables[&0].next_hop(&3), None);
    net.link_up(1, 2, 5);
    net.converged().unwrap();
    assert_eq!(net.tables[&0].next_hop(&3), Some(&1));
}

#[test]
fn a_starving_node_asks_at_once_only_for_destinations_it_has_messages_for() {
    let mut net = Net::new(6);
    for i in 0..6 {
        net.link_up(i, (i + 1) % 6, 10);
    }
    net.converged().unwrap();
    net.requests = 0;
    // Node 0 loses its direct link to 1. The way round (via 5, metric 50)
    // is longer than what it announced (10): not feasible without a newer
    // seqno from 1. Nobody has messages for 1, so nobody asks yet.
    net.link_down(0, 1);
    net.run_to_quiet().unwrap();
    assert_eq!(net.requests, 0, "asked without a message waiting");
    assert_eq!(net.tables[&0].next_hop(&1), None);
    // A message for 1 waits at node 0: it asks, and gets the way round.
    net.tables.get_mut(&0).unwrap().set_wanted(&1, true);
    net.collect();
    net.run_to_quiet().unwrap();
    assert!(net.requests > 0);
    assert_eq!(net.tables[&0].next_hop(&1), Some(&5));
    assert_eq!(net.tables[&0].metric(&1), Some(50));
    // Everyone else is served at the next refresh at the latest.
    net.converged().unwrap();
    net.loop_free().unwrap();
}

#[test]
fn a_request_for_a_destination_nobody_here_heard_of_goes_to_every_other_neighbour() {
    // Node 1 knows no way to 9: it passes the request to all its other
    // neighbours, once, so that it can cross a region where every route
    // was retracted.
    let mut t = RoutingTable::new(1u8);
    for n in [0, 2, 3] {
        t.handle_link(n, 10);
    }
    while t.poll_transmit().is_some() {}
    let request = RouteMessage::SeqnoRequest {
        destination: 9,
        seqno: 4,
        hops: 8,
    };
    t.handle_message(0, request.clone());
    let mut sent: Vec<u8> = std::iter::from_fn(|| t.poll_transmit())
        .map(|(target, m)| {
            assert!(matches!(
                m,
                RouteMessage::SeqnoRequest {
                    destination: 9,
                    seqno: 4,
                    hops: 7
                }
            ));
            match target {
                Target::Neighbour(n) => n,
                Target::AllNeighbours => panic!("not back to the asker"),
            }
        })
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, vec![2, 3]);
    // The same request again (from another neighbour) is not passed on.
    t.handle_message(2, request);
    assert!(t.poll_transmit().is_none());
}

#[test]
fn a_partition_asks_for_each_lost_destination_once_per_node() {
    // A 6 x 6 grid cut between its third and fourth columns: every node
    // starves for the 18 nodes on the other side at once.
    let mut net = Net::grid(6);
    net.converged().unwrap();
    net.requests = 0;
    for y in 0..6u8 {
        net.link_down(y * 6 + 2, y * 6 + 3);
    }
    net.run_to_quiet().unwrap();
    // Each node sends or passes on one request per lost destination, to at
    // most its 4 neighbours.
    let bound = 36 * 18 * 4;
    assert!(
        net.requests <= bound,
        "{} seqno requests after the cut (at most {bound})",
        net.requests
    );
    assert_eq!(net.tables[&0].next_hop(&5), None);
    net.loop_free().unwrap();
}

/// A route update without a limit on its reach.
fn update<N>(destination: N, seqno: u32, metric: u32) -> RouteMessage<N> {
    RouteMessage::Update {
        destination,
        seqno,
        metric,
        reach: 0,
    }
}

#[test]
fn a_neighbour_announcing_endless_destinations_fills_the_table_only_to_its_limit() {
    use lifeline_routing::routes::MAX_DESTINATIONS;
    // Route updates are not signed: a hostile neighbour (1) can make up
    // destinations. The table stops at its limit, keeps serving the
    // destinations it knows, and forgets the made-up ones once their only
    // source is gone.
    let mut t = RoutingTable::new(0u32);
    t.handle_link(1, 10);
    t.handle_link(2, 10);
    t.handle_message(2, update(7, 1, 100));
    let fakes = u32::try_from(MAX_DESTINATIONS).unwrap() + 10;
    for d in 1_000..1_000 + fakes {
        t.handle_message(1, update(d, 1, 100));
    }
    assert_eq!(t.destinations(), MAX_DESTINATIONS);
    assert_eq!(t.refused, 11, "the made-up destinations past the limit");
    // A known destination still takes updates.
    t.handle_message(2, update(7, 2, 50));
    assert_eq!(t.metric(&7), Some(60));
    assert_eq!(t.next_hop(&7), Some(&2));
    // The hostile link goes down: its destinations are unreachable, and
    // the next refresh forgets them, which makes room again.
    t.handle_link_down(&1);
    assert_eq!(t.destinations(), MAX_DESTINATIONS);
    t.handle_refresh();
    assert_eq!(t.destinations(), 1);
    t.handle_message(2, update(8, 1, 100));
    assert_eq!(t.next_hop(&8), Some(&2));
    assert_eq!(t.refused, 11);
}

#[test]
fn a_link_slot_freed_by_one_neighbour_serves_the_next_without_mixing_their_routes() {
    // Neighbours are kept by slot; a slot freed when a link goes down is
    // given to the next neighbour. Nothing heard from the old one may
    // count as heard from the new one.
    let mut t = RoutingTable::new(0u8);
    t.handle_link(1, 10);
    t.handle_link(2, 10);
    t.handle_message(1, update(9, 1, 20));
    t.handle_message(2, update(9, 1, 40));
    assert_eq!(t.next_hop(&9), Some(&1));
    t.handle_link_down(&1);
    // 2's route is longer than the one we advertised: not feasible until
    // 9 raises its seqno.
    assert_eq!(t.next_hop(&9), None);
    t.handle_message(2, update(9, 2, 40));
    assert_eq!(t.next_hop(&9), Some(&2));
    assert_eq!(t.metric(&9), Some(50));
    t.handle_link(3, 10);
    assert_eq!(t.advertised(&3, &9), None, "3 said nothing of 9");
    assert_eq!(t.next_hop(&9), Some(&2));
    assert_eq!(t.advertised(&1, &9), None, "1 is gone");
    t.handle_message(3, update(9, 2, 5));
    assert_eq!(t.next_hop(&9), Some(&3));
    assert_eq!(t.metric(&9), Some(15));
}

#[test]
fn forgetting_destinations_keeps_what_each_neighbour_said_of_the_others() {
    // The table keeps what neighbours advertised in rows that follow the
    // destinations' order; forgetting some destinations moves the rows of
    // the others, and a neighbour that comes later widens every row.
    let mut t = RoutingTable::new(0u8);
    t.handle_link(1, 10);
    for d in [20, 21, 22, 23, 24] {
        t.handle_message(1, update(d, 1, u32::from(d)));
    }
    t.handle_link(2, 10);
    t.handle_link(3, 10);
    t.handle_message(3, update(22, 1, 5));
    t.handle_message(2, update(24, 1, 100));
    // 1 goes: 20, 21 and 23 were only its, and a refresh forgets them.
    t.handle_link_down(&1);
    t.handle_refresh();
    assert_eq!(t.destinations(), 2);
    assert_eq!(t.advertised(&3, &22), Some(5));
    assert_eq!(t.advertised(&2, &22), None, "2 said nothing of 22");
    assert_eq!(t.advertised(&2, &24), Some(100));
    assert_eq!(t.advertised(&3, &24), None, "3 said nothing of 24");
    for gone in [20, 21, 23] {
        assert!(!t.heard_of(&gone));
        assert_eq!(t.metric(&gone), None);
    }
    // The rows still take updates for the right neighbour.
    t.handle_message(3, update(24, 2, 1));
    assert_eq!(t.next_hop(&24), Some(&3));
    assert_eq!(t.metric(&24), Some(11));
    assert_eq!(t.advertised(&2, &24), Some(100));
}
#[test]
fn a_refresh_sends_digests_and_a_lost_update_is_repaired_by_a_dump() {
    // A 3 x 3 grid: once converged, a refresh costs one digest per
    // neighbour and nothing else. An update lost on the way shows as a
    // digest that does not match; the neighbour then asks for, and gets,
    // every route.
    let mut net = Net::grid(3);
    net.converged().unwrap();
    let refresh = |net: &mut Net| {
        for t in net.tables.values_mut() {
            t.handle_refresh();
        }
        net.collect();
    };
    refresh(&mut net);
    let digests = net
        .in_flight
        .iter()
        .filter(|(_, _, m)| matches!(m, RouteMessage::Digest { .. }))
        .count();
    assert_eq!(digests, 24, "one per neighbour: 12 links, both ways");
    assert_eq!(net.in_flight.len(), 24, "nothing but digests");
    net.run_to_quiet().unwrap();
    assert!(net.tables.values().all(|t| t.digest_mismatches == 0));

    // Node 8 moves off to a new link: its new seqno reaches 5, but the
    // update from 5 to 4 is lost.
    net.tables.get_mut(&8).unwrap().handle_message(
        5,
        RouteMessage::SeqnoRequest {
            destination: 8,
            seqno: 7,
            hops: 1,
        },
    );
    net.collect();
    let mut lost = false;
    while !net.in_flight.is_empty() {
        let (from, to, m) = &net.in_flight[0];
        let drop = !lost
            && (*from, *to) == (5, 4)
            && matches!(m, RouteMessage::Update { destination: 8, .. });
        if drop {
            net.in_flight.remove(0);
            lost = true;
        } else {
            net.deliver(0);
        }
    }
    assert!(lost);
    // 4 still believes 5's older route to 8.
    refresh(&mut net);
    net.run_to_quiet().unwrap();
    assert_eq!(net.tables[&4].digest_mismatches, 1, "4 noticed, once");
    let others: u64 = net
        .tables
        .iter()
        .filter(|(n, _)| **n != 4)
        .map(|(_, t)| t.digest_mismatches)
        .sum();
    assert_eq!(others, 0);
    // The dump repaired it: the next refresh matches everywhere.
    refresh(&mut net);
    net.run_to_quiet().unwrap();
    assert_eq!(net.tables[&4].digest_mismatches, 1);
    net.converged().unwrap();
}

#[test]
fn a_neighbour_asking_for_dumps_without_end_gets_one_per_ten_seconds() {
    let mut t = RoutingTable::new(0u8);
    t.handle_link(1, 10);
    t.handle_link(2, 10);
    t.handle_message(2, update(9, 1, 5));
    while t.poll_transmit().is_some() {}
    let dumps = |t: &mut RoutingTable<u8>| {
        std::iter::from_fn(|| t.poll_transmit())
            .filter(|(target, _)| *target == Target::Neighbour(1))
            .count()
    };
    t.set_time(1_000);
    t.handle_message(1, RouteMessage::DumpRequest);
    assert_eq!(dumps(&mut t), 2, "its own route and the one to 9");
    t.set_time(5_000);
    t.handle_message(1, RouteMessage::DumpRequest);
    assert_eq!(dumps(&mut t), 0, "too soon");
    t.set_time(11_000);
    t.handle_message(1, RouteMessage::DumpRequest);
    assert_eq!(dumps(&mut t), 2);
}

#[test]
fn link_cost_reflects_loss_and_delay() {
    use lifeline_routing::routes::link_cost;
    use std::time::Duration;
    let clean = link_cost(Duration::from_millis(3), 0.0);
    assert_eq!(clean, 259);
    assert!(link_cost(Duration::from_millis(3), 0.5) > 3 * clean);
    assert!(link_cost(Duration::from_millis(500), 0.0) > clean);
    assert!(link_cost(Duration::ZERO, 1.0) < u32::MAX);
    assert!(link_cost(Duration::from_secs(u64::MAX), 1.0) < u32::MAX);
}

#[test]
fn where_links_differ_a_lot_the_fastest_path_costs_least() {
    use lifeline_routing::routes::link_cost;
    use std::time::Duration;
    let ms = Duration::from_millis;
    // Radio and LAN hops: hops decide, as before.
    assert_eq!(link_cost(ms(2), 0.0), 258);
    assert!(2 * link_cost(ms(1), 0.0) > link_cost(ms(3), 0.0));
    // A long-haul link of 20 ms one way against three links of 6 ms: the
    // detour arrives sooner (18 ms), so it must cost less.
    assert!(3 * link_cost(ms(12), 0.0) < link_cost(ms(40), 0.0));
    // Two links never cost less than one with their total delay.
    assert!(2 * link_cost(ms(20), 0.0) >= link_cost(ms(40), 0.0));
    assert!(2 * link_cost(ms(3), 0.0) >= link_cost(ms(6), 0.0));
}

#[derive(Clone, Debug)]
enum Event {
    Deliver(prop::sample::Index),
    Down(prop::sample::Index),
    Up(u8, u8, u32),
}

fn event(nodes: u8) -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => any::<prop::sample::Index>().prop_map(Event::Deliver),
        1 => any::<prop::sample::Index>().prop_map(Event::Down),
        1 => (0..nodes, 0..nodes, 1u32..500).prop_map(|(a, b, c)| Event::Up(a, b, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_routing_loop_ever_and_convergence_after(
        edges in prop::collection::vec((0u8..10, 0u8..10, 1u32..500), 5..30),
        events in prop::collection::vec(event(10), 0..400),
    ) {
        let mut net = Net::new(10);
        for (a, b, c) in edges {
            if a != b {
                net.link_up(a, b, c);
            }
        }
        for e in events {
            match e {
                Event::Deliver(i) if !net.in_flight.is_empty() => {
                    let i = i.index(net.in_flight.len());
                    net.deliver(i);
                }
                Event::Deliver(_) => {}
                Event::Down(i) => {
                    let links: Vec<(u8, u8)> = net.links.keys().copied().filter(|(a, b)| a < b).collect();
                    if !links.is_empty() {
                        let (a, b) = links[i.index(links.len())];
                        net.link_down(a, b);
                    }
                }
                Event::Up(a, b, c) if a != b => net.link_up(a, b, c),
                Event::Up(..) => {}
            }
            let check = net.loop_free();
            prop_assert!(check.is_ok(), "{}", check.unwrap_err());
        }
        let converged = net.converged();
        prop_assert!(converged.is_ok(), "{}", converged.unwrap_err());
        let check = net.loop_free();
        prop_assert!(check.is_ok(), "{}", check.unwrap_err());
    }
}

/// The route digest is what docs/protocol.md says: XXH3-128 of the
/// destination and the three numbers (4 bytes little-endian each), seeded
/// with "lifeline", little-endian. Every node must compute it alike.
#[test]
fn a_route_digest_is_the_documented_hash_of_the_route() {
    use lifeline_routing::Address;
    use lifeline_routing::routes::route_digest;
    let destination = Address([0xab; 32]);
    let mut input = vec![0xab; 32];
    for n in [7u32, 300, 1_800] {
        input.extend_from_slice(&n.to_le_bytes());
    }
    let seed = u64::from_be_bytes(*b"lifeline");
    let expected = xxhash_rust::xxh3::xxh3_128_with_seed(&input, seed).to_le_bytes();
    assert_eq!(route_digest(&destination, 7, 300, 1_800), expected);
    // Each field counts.
    assert_ne!(route_digest(&destination, 8, 300, 1_800), expected);
    assert_ne!(route_digest(&destination, 7, 301, 1_800), expected);
    assert_ne!(route_digest(&destination, 7, 300, 0), expected);
    assert_ne!(route_digest(&Address([0xac; 32]), 7, 300, 1_800), expected);
}
