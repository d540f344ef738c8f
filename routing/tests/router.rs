//! The router's behaviour on simulated networks (see `common`): delivery,
//! convergence, priorities, custody, eviction, flooding and receipts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

mod common;

use common::Net;
use lifeline_routing::{
    Class, Config, Destination, Event, Kind, MemoryMessageStore, Router, SendError, SendRequest,
    Status,
};

fn unicast(class: Class, to: lifeline_routing::Address, payload: &[u8]) -> SendRequest {
    SendRequest {
        class,
        destination: Destination::Node(to),
        payload: payload.to_vec(),
        ttl_ms: None,
    }
}

fn statuses(net: &Net, node: usize, id: lifeline_routing::MessageId) -> Vec<Status> {
    net.nodes[node]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Status { id: i, status } if *i == id => Some(*status),
            _ => None,
        })
        .collect()
}

#[test]
fn a_message_crosses_a_ten_hop_line_and_its_receipt_comes_back() {
    let mut net = Net::line(11, 5, Config::default());
    assert!(
        net.run_until(10_000, Net::converged),
        "routes did not converge"
    );
    let id = net.send(0, unicast(Class::P2, net.addr(10), b"hello from 0"));
    assert!(net.run_until(10_000, |n| n.delivered(10, id).is_some()));
    let (_, delivery) = net.delivered(10, id).unwrap();
    assert_eq!(delivery.payload, b"hello from 0");
    assert_eq!(delivery.hops, 10);
    assert_eq!(delivery.origin, None, "P2 keeps its sender sealed");
    // Delivered exactly once, nowhere else.
    for i in 0..10 {
        assert!(net.delivered(i, id).is_none());
    }
    assert_eq!(net.nodes[10].deliveries.len(), 1);
    // The application opened the envelope, learned the sender, and sends the receipt.
    let origin = net.addr(0);
    net.with_router(10, |r, now| r.send_receipt(now, origin, id).unwrap());
    assert!(net.run_until(10_000, |n| n.nodes[0].router().status(&id)
        == Some(Status::Delivered)));
    assert_eq!(
        statuses(&net, 0, id),
        vec![Status::Queued, Status::Forwarded, Status::Delivered]
    );
    // Custody was handed on hop by hop: nobody holds anything now.
    net.run_for(1_000);
    for i in 0..11 {
        assert_eq!(net.nodes[i].router().custody().0, 0, "node {i} still holds");
    }
}

#[test]
fn routes_converge_to_shortest_paths_after_a_link_fails_and_never_loop() {
    // A 5 x 5 grid; link latencies vary so shortest paths are unique-ish.
    let side = 5;
    let mut net = Net::grid(side, 7, |r, c, down| {
        2 + if down {
            (r * 3 + c * 5) % 5
        } else {
            (r * 7 + c * 3) % 5
        } as u64
    });
    let at = |r: usize, c: usize| r * side + c;
    assert!(net.run_until(30_000, Net::converged));
    let destination = at(4, 4);
    let before = net.path(at(0, 0), destination).unwrap();
    // Cut the first link of the current path.
    net.disconnect(before[0], before[1]);
    let mut loops = 0;
    // Nodes that starve for a destination without messages for it ask for
    // a newer seqno at the next refresh (at most 5 minutes and a quarter).
    let converged = net.run_until(400_000, |n| {
        if n.has_loop(destination) {
            loops += 1;
        }
        n.converged()
    });
    assert!(converged, "no convergence after the failure");
    assert_eq!(loops, 0, "a routing loop appeared during reconvergence");
    let after = net.path(at(0, 0), destination).unwrap();
    assert_ne!(after[1], before[1]);
    // Every route is a shortest path (Dijkstra on the same link costs).
    let dist = common::dijkstra_metrics(&net, destination);
    for i in 0..side * side {
        if i == destination {
            continue;
        }
        let metric = net.nodes[i]
            .router()
            .routes()
            .find(|(d, _, _)| **d == net.addr(destination))
            .map(|(_, _, m)| m);
        assert_eq!(
            metric,
            Some(dist[i]),
            "node {i} did not find the shortest path"
        );
    }
    // And a message takes the new path.
    let id = net.send(
        at(0, 0),
        unicast(Class::P2, net.addr(destination), b"around"),
    );
    assert!(net.run_until(10_000, |n| n.delivered(destination, id).is_some()));
}

#[test]
fn a_p0_frame_overtakes_a_queue_full_of_p3() {
    // 0 - 1 - 2 over slow links: 100 bytes per ms, 20 ms latency.
    let mut net = Net::new(3, Config::default(), 3);
    net.connect(0, 1, 20, 100, 0.0);
    net.connect(1, 2, 20, 100, 0.0);
    assert!(net.run_until(10_000, Net::converged));
    // Unloaded latency of a small P0 message, measured first.
    let t0 = net.now;
    let probe = net.send(0, unicast(Class::P0, net.addr(2), b"probe"));
    assert!(net.run_until(10_000, |n| n.delivered(2, probe).is_some()));
    let unloaded = net.delivered(2, probe).unwrap().0 - t0;
    net.run_for(5_000);
    // Two hundred 8 KiB bulk messages: 1.6 MB, 16 s of link time per hop.
    let bulk: Vec<_> = (0..200)
        .map(|i| net.send(0, unicast(Class::P3, net.addr(2), &vec![i as u8; 8192])))
        .collect();
    net.run_for(2_000);
    let sent_at = net.now;
    let sos = net.send(
        0,
        unicast(Class::P0, net.addr(2), b"SOS: trapped under rubble"),
    );
    assert!(net.run_until(60_000, |n| n.delivered(2, sos).is_some()));
    let latency = net.delivered(2, sos).unwrap().0 - sent_at;
    // Per hop it waits for at most the one 4 KiB fragment on the wire (41 ms).
    assert!(
        latency <= unloaded + 2 * 42,
        "SOS took {latency} ms behind the bulk load (unloaded {unloaded} ms)"
    );
    let bulk_done = bulk
        .iter()
        .filter(|id| net.delivered(2, **id).is_some())
        .count();
    assert!(
        bulk_done < 50,
        "the SOS should have overtaken most bulk ({bulk_done} delivered first)"
    );
    // The bulk still arrives, all of it.
    assert!(net.run_until(120_000, |n| {
        bulk.iter().all(|id| n.delivered(2, *id).is_some())
    }));
}

#[test]
fn messages_sent_during_a_partition_arrive_after_it_heals() {
    let mut net = Net::line(4, 5, Config::default());
    assert!(net.run_until(10_000, Net::converged));
    net.disconnect(1, 2);
    net.run_for(5_000);
    let personal = net.send(0, unicast(Class::P2, net.addr(3), b"are you safe?"));
    let sos = net.send(0, unicast(Class::P0, net.addr(3), b"SOS"));
    net.run_for(300_000);
    assert!(net.delivered(3, personal).is_none());
    assert!(net.delivered(3, sos).is_none());
    // Held, not lost: by the origin or a relay on its side.
    let held = |n: &Net, id| (0..2).any(|i| n.nodes[i].router().holds(&id));
    assert!(held(&net, personal) && held(&net, sos));
    net.connect(1, 2, 5, 1_000, 0.0);
    assert!(net.run_until(30_000, |n| n.delivered(3, personal).is_some()
        && n.delivered(3, sos).is_some()));
}

#[test]
fn a_walker_carries_a_message_across_a_partition_and_survives_a_restart() {
    // Shelter A (0) and shelter C (2) never see each other; a rescuer's
    // phone W (1) walks from C to A and back.
    let mut net = Net::new(3, Config::default(), 5);
    net.connect(1, 2, 5, 1_000, 0.0);
    assert!(net.run_until(10_000, Net::converged));
    net.disconnect(1, 2);
    net.run_for(60_000);
    let id = net.send(
        0,
        unicast(Class::P2, net.addr(2), b"we need insulin at shelter A"),
    );
    net.run_for(1_000);
    assert!(net.nodes[0].router().holds(&id));
    // W meets A: it heard of C a minute ago, A never did, so W pulls the
    // message. A cannot check what W says, so W gets a copy and A keeps
    // custody (a neighbour that pulls and drops takes nothing away).
    net.connect(0, 1, 5, 1_000, 0.0);
    assert!(net.run_until(10_000, |n| n.nodes[1].router().holds(&id)));
    assert!(net.nodes[0].router().holds(&id));
    assert_eq!(statuses(&net, 0, id), vec![Status::Queued]);
    net.disconnect(0, 1);
    // The phone restarts on the way: custody comes back from its store.
    net.restart(1);
    assert!(net.nodes[1].router().holds(&id));
    net.run_for(60_000);
    net.connect(1, 2, 5, 1_000, 0.0);
    assert!(net.run_until(10_000, |n| n.delivered(2, id).is_some()));
    // C's custody acknowledgement releases W's copy.
    assert!(net.run_until(1_000, |n| !n.nodes[1].router().holds(&id)));
}

#[test]
fn a_full_custody_store_evicts_bulk_first_then_the_oldest_and_sos_last() {
    let config = Config {
        custody_max_messages: 4,
        ..Config::default()
    };
    let me = common::identity(0);
    let nowhere = lifeline_routing::Address::from(common::identity(99).id());
    let mut router =
        Router::new(me.clone(), config, MemoryMessageStore::new(), [1; 32], 0).unwrap();
    router.set_authorities([lifeline_routing::Address::from(me.id())]);
    let mut now = 0;
    let mut send = |router: &mut Router<MemoryMessageStore>, class| {
        now += 100_000; // keeps under the SOS rate limit
        router.send(now, unicast(class, nowhere, b"x"))
    };
    let p3a = send(&mut router, Class::P3).unwrap();
    let p0 = send(&mut router, Class::P0).unwrap();
    let p2 = send(&mut router, Class::P2).unwrap();
    let p3b = send(&mut router, Class::P3).unwrap();
    // Full. Each new message pushes out the least important, oldest first.
    let p1 = send(&mut router, Class::P1).unwrap();
    let p2b = send(&mut router, Class::P2).unwrap();
    let p0b = send(&mut router, Class::P0).unwrap();
    let p0c = send(&mut router, Class::P0).unwrap();
    let evicted: Vec<_> = std::iter::from_fn(|| router.poll_event())
        .filter_map(|e| match e {
            Event::Evicted { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, vec![p3a, p3b, p2, p2b]);
    assert!([p0, p1, p0b, p0c].iter().all(|id| router.holds(id)));
    assert_eq!(router.status(&p3a), Some(Status::Evicted));
    // Now full of P0 and P1: a P3 message is refused, not silently dropped.
    assert!(matches!(
        send(&mut router, Class::P3),
        Err(SendError::CustodyFull)
    ));
    // Another P0 evicts the P1 before any SOS.
    let p0d = send(&mut router, Class::P0).unwrap();
    assert!(!router.holds(&p1));
    assert!([p0, p0b, p0c, p0d].iter().all(|id| router.holds(id)));
}

#[test]
fn each_broadcast_is_forwarded_at_most_once_per_node() {
    let side = 6;
    let mut net = Net::grid(side, 11, |_, _, _| 3);
    assert!(net.run_until(30_000, Net::converged));
    net.run_for(5_000);
    let before: Vec<u64> = (0..side * side)
        .map(|i| net.nodes[i].router().stats().message_transmissions)
        .collect();
    let id = net.send(
        0,
        SendRequest {
            class: Class::P0,
            destination: Destination::Broadcast {
                hops: Some(20),
                area: None,
            },
            payload: b"SOS: anyone nearby? flooding at the river".to_vec(),
            ttl_ms: None,
        },
    );
    net.run_for(10_000);
    for i in 0..side * side {
        let sent = net.nodes[i].router().stats().message_transmissions - before[i];
        assert!(
            sent as usize <= net.degree(i),
            "node {i} sent the broadcast {sent} times"
        );
        if i != 0 {
            let copies = net.nodes[i]
                .deliveries
                .iter()
                .filter(|(_, d)| d.id == id)
                .count();
            assert_eq!(copies, 1, "node {i} got the broadcast {copies} times");
        }
    }
    // Flooding costs at most one transmission per link direction.
    let total: u64 = (0..side * side)
        .map(|i| net.nodes[i].router().stats().message_transmissions - before[i])
        .sum();
    assert!(total <= 2 * 60);
}

#[test]
fn a_flooding_neighbour_does_not_delay_another_neighbours_message_much() {
    // F (0) and H (1) both reach D (3) through relay R (2), whose link to D is slow.
    let mut net = Net::new(4, Config::default(), 13);
    net.connect(0, 2, 2, 1_000, 0.0);
    net.connect(1, 2, 2, 1_000, 0.0);
    net.connect(2, 3, 10, 50, 0.0);
    assert!(net.run_until(10_000, Net::converged));
    net.run_for(5_000);
    // Unloaded latency of H's message.
    let probe = net.send(1, unicast(Class::P2, net.addr(3), &[7; 1000]));
    let t0 = net.now;
    assert!(net.run_until(10_000, |n| n.delivered(3, probe).is_some()));
    let unloaded = net.delivered(3, probe).unwrap().0 - t0;
    net.run_for(5_000);
    // F floods 300 P2 messages of 4 KiB (24 s of the slow link), then H sends one.
    let flood: Vec<_> = (0..300)
        .map(|i| net.send(0, unicast(Class::P2, net.addr(3), &vec![i as u8; 4000])))
        .collect();
    net.run_for(500);
    let t1 = net.now;
    let honest = net.send(1, unicast(Class::P2, net.addr(3), &[7; 1000]));
    assert!(net.run_until(60_000, |n| n.delivered(3, honest).is_some()));
    let loaded = net.delivered(3, honest).unwrap().0 - t1;
    // Round robin at R: H waits for at most one of F's fragments (82 ms on
    // the slow link) plus the one on the wire.
    assert!(
        loaded <= unloaded + 2 * 82 + 20,
        "H's message took {loaded} ms under the flood (unloaded {unloaded} ms)"
    );
    let flood_done = flood
        .iter()
        .filter(|id| net.delivered(3, **id).is_some())
        .count();
    assert!(flood_done < 100, "{flood_done} of F's messages went first");
}

#[test]
fn an_sos_gets_a_receipt_and_a_responders_acknowledgement() {
    let mut net = Net::line(6, 5, Config::default());
    assert!(net.run_until(10_000, Net::converged));
    let sos = net.send(
        0,
        unicast(Class::P0, net.addr(5), b"SOS: two injured, 5th floor"),
    );
    assert!(net.run_until(10_000, |n| n.nodes[0].router().status(&sos)
        == Some(Status::Delivered)));
    let (_, delivery) = net.delivered(5, sos).unwrap();
    assert_eq!(
        delivery.origin,
        Some(net.addr(0)),
        "an SOS is signed by its origin"
    );
    let origin = delivery.origin.unwrap();
    net.with_router(5, |r, now| {
        r.acknowledge_sos(now, origin, sos, "help is coming")
            .unwrap()
    });
    assert!(net.run_until(10_000, |n| n.nodes[0].router().status(&sos)
        == Some(Status::Acknowledged)));
    let ack = net.nodes[0].events.iter().find_map(|(_, e)| match e {
        Event::Receipt {
            message,
            from,
            kind: Kind::SosAck,
            note,
            hops,
        } if *message == sos => Some((*from, note.clone(), *hops)),
        _ => None,
    });
    // Five hops back along the line, as the SOS went.
    assert_eq!(ack, Some((net.addr(5), "help is coming".to_string(), 5)));
    assert_eq!(
        statuses(&net, 0, sos),
        vec![
            Status::Queued,
            Status::Forwarded,
            Status::Delivered,
            Status::Acknowledged
        ]
    );
}

/// With `receipt_on_delivery` off (a daemon that writes its inbox on a
/// thread of its own), the destination's router sends no receipt as it
/// delivers an SOS: the origin hears "delivered" only once the caller has
/// kept it and sends the receipt, which is P0 like the SOS.
#[test]
fn with_receipts_after_keeping_an_sos_is_reported_delivered_only_once_kept() {
    let config = Config {
        receipt_on_delivery: false,
        ..Config::default()
    };
    let mut net = Net::line(3, 5, config);
    assert!(net.run_until(10_000, Net::converged));
    let sos = net.send(0, unicast(Class::P0, net.addr(2), b"SOS: trapped"));
    assert!(net.run_until(10_000, |n| n.delivered(2, sos).is_some()));
    // Long enough for a receipt to come back twice over.
    net.run_until(2_000, |_| false);
    assert_ne!(
        net.nodes[0].router().status(&sos),
        Some(Status::Delivered),
        "a receipt went before the destination kept the SOS"
    );
    let origin = net.delivered(2, sos).unwrap().1.origin.unwrap();
    net.with_router(2, |r, now| {
        r.send_delivery_receipt(now, Class::P0, origin, sos)
    })
    .unwrap();
    assert!(net.run_until(10_000, |n| n.nodes[0].router().status(&sos)
        == Some(Status::Delivered)));
}

#[test]
fn a_receipt_from_anyone_but_the_recipient_is_ignored() {
    let mut net = Net::line(3, 5, Config::default());
    assert!(net.run_until(10_000, Net::converged));
    let id = net.send(0, unicast(Class::P2, net.addr(2), b"for node 2"));
    assert!(net.run_until(10_000, |n| n.delivered(2, id).is_some()));
    // Node 1 relayed it and knows its id; its receipt must not count.
    let origin = net.addr(0);
    net.with_router(1, |r, now| r.send_receipt(now, origin, id).unwrap());
    net.run_for(5_000);
    assert_ne!(net.nodes[0].router().status(&id), Some(Status::Delivered));
    net.with_router(2, |r, now| r.send_receipt(now, origin, id).unwrap());
    assert!(net.run_until(10_000, |n| n.nodes[0].router().status(&id)
        == Some(Status::Delivered)));
}

#[test]
fn p0_without_a_route_is_flooded_and_still_held() {
    // 0 - 1 - 2, but routing has not run yet when the SOS is sent: the
    // link-up dumps are still in flight.
    let mut net = Net::new(3, Config::default(), 17);
    net.connect(0, 1, 50, 1_000, 0.0);
    net.connect(1, 2, 50, 1_000, 0.0);
    let sos = net.send(0, unicast(Class::P0, net.addr(2), b"SOS"));
    assert!(net.run_until(10_000, |n| n.delivered(2, sos).is_some()));
    assert_eq!(
        net.nodes[2]
            .deliveries
            .iter()
            .filter(|(_, d)| d.id == sos)
            .count(),
        1
    );
}

/// Builds `edges` on `n` nodes (5 ms links), converges, and silences node
/// `silent`: its links stay up and its routes stay known, but it takes in
/// everything and sends nothing (a blackhole, or a node whose software hung).
fn with_a_silent_node(n: usize, edges: &[(usize, usize)], silent: usize, seed: u64) -> Net {
    let mut net = Net::new(n, Config::default(), seed);
    for (a, b) in edges {
        net.connect(*a, *b, 5, 1_000, 0.0);
    }
    assert!(net.run_until(60_000, Net::converged));
    net.nodes[silent].router = None;
    net
}

#[test]
fn an_sos_goes_around_a_silent_neighbour_that_every_route_trusts() {
    // S=0 and A=1 both route to D=2 through X=3 (two hops); the other way,
    // 0 - 1 - 4 - 5 - 2, is four hops and nobody's route. When X swallows
    // messages, S's other neighbour A would pass a copy to X too: only a
    // flood along the way reaches D.
    let edges = [(0, 3), (3, 2), (0, 1), (1, 3), (1, 4), (4, 5), (5, 2)];
    let mut net = with_a_silent_node(6, &edges, 3, 23);
    let sent = net.now;
    let first = net.send(0, unicast(Class::P0, net.addr(2), b"SOS 1"));
    assert!(net.run_until(30_000, |n| n.delivered(2, first).is_some()));
    let (at, delivery) = net.delivered(2, first).unwrap();
    assert!(
        (10_000..12_000).contains(&(at - sent)),
        "after the 10 s acknowledgement timeout: {} ms",
        at - sent
    );
    assert_eq!(delivery.hops, 4, "the detour, not a wider flood");
    // The next SOS does not wait for X again: S knows it is silent.
    let sent = net.now;
    let second = net.send(0, unicast(Class::P0, net.addr(2), b"SOS 2"));
    assert!(net.run_until(30_000, |n| n.delivered(2, second).is_some()));
    let (at, _) = net.delivered(2, second).unwrap();
    assert!(at - sent < 1_000, "waited {} ms for X again", at - sent);
    // Each was delivered once, and S got both receipts (which D sent
    // around X the same way).
    assert!(net.run_until(30_000, |n| {
        [first, second]
            .iter()
            .all(|id| n.nodes[0].router().status(id) == Some(Status::Delivered))
    }));
    for id in [first, second] {
        let copies = net.nodes[2].deliveries.iter().filter(|(_, d)| d.id == id);
        assert_eq!(copies.count(), 1);
    }
}

#[test]
fn an_sos_without_a_receipt_is_flooded_through_the_whole_network_by_its_origin() {
    // S=0 - X=1 - D=2 is the route; the only other way, 0 - 3 - 4 - ... - 10
    // - 2, is nine hops: far outside the detour flood's ellipse, which stops
    // a few hops out. With no receipt after 70 s, S floods the SOS through
    // every node.
    let mut edges = vec![(0, 1), (1, 2), (0, 3)];
    edges.extend((3..10).map(|i| (i, i + 1)));
    edges.push((10, 2));
    let mut net = with_a_silent_node(11, &edges, 1, 29);
    let sent = net.now;
    let sos = net.send(0, unicast(Class::P0, net.addr(2), b"SOS"));
    net.run_for(60_000);
    assert!(
        net.delivered(2, sos).is_none(),
        "the narrow detour flood went the whole way round"
    );
    assert!(net.run_until(30_000, |n| n.delivered(2, sos).is_some()));
    let (at, delivery) = net.delivered(2, sos).unwrap();
    assert!(
        (70_000..75_000).contains(&(at - sent)),
        "not by the origin's network-wide flood: {} ms",
        at - sent
    );
    assert_eq!(delivery.hops, 9);
    // The receipt, stuck behind X too, comes back the same way from D.
    assert!(net.run_until(90_000, |n| n.nodes[0].router().status(&sos)
        == Some(Status::Delivered)));
}

#[test]
fn messages_get_through_a_lossy_link_by_custody_retries() {
    let mut net = Net::new(3, Config::default(), 19);
    net.connect(0, 1, 5, 1_000, 0.0);
    net.connect(1, 2, 5, 1_000, 0.3);
    assert!(net.run_until(120_000, Net::converged));
    let ids: Vec<_> = (0..20)
        .map(|i| {
            net.send(
                0,
                unicast(Class::P2, net.addr(2), format!("message {i}").as_bytes()),
            )
        })
        .collect();
    assert!(net.run_until(600_000, |n| {
        ids.iter().all(|id| n.delivered(2, *id).is_some())
    }));
    assert!(
        net.nodes[1].router().stats().retries > 0,
        "30% loss without a single retry?"
    );
    for id in &ids {
        assert_eq!(
            net.nodes[2]
                .deliveries
                .iter()
                .filter(|(_, d)| d.id == *id)
                .count(),
            1
        );
    }
}

#[test]
fn messages_expire_at_their_ttl_with_an_event() {
    let mut net = Net::line(2, 5, Config::default());
    net.disconnect(0, 1);
    let id = net.send(
        0,
        SendRequest {
            ttl_ms: Some(60_000),
            ..unicast(Class::P2, net.addr(1), b"short-lived")
        },
    );
    net.run_for(61_000);
    assert!(!net.nodes[0].router().holds(&id));
    assert!(net.nodes[0].events.iter().any(|(_, e)| *e
        == Event::Expired {
            id,
            class: Class::P2
        }));
    assert_eq!(
        net.nodes[0].router().status(&id),
        None,
        "forgotten once expired"
    );
    assert!(statuses(&net, 0, id).ends_with(&[Status::Expired]));
}

/// A store that can be told to fail, and that its test can look into.
#[derive(Clone, Default)]
struct SharedStore {
    inner: std::rc::Rc<std::cell::RefCell<MemoryMessageStore>>,
    fail: std::rc::Rc<std::cell::Cell<bool>>,
}

#[derive(Debug, thiserror::Error)]
#[error("disk full")]
struct DiskFull;

impl lifeline_routing::MessageStore for SharedStore {
    type Error = DiskFull;

    fn load(&mut self) -> Result<Vec<(lifeline_routing::MessageId, Vec<u8>)>, DiskFull> {
        Ok(self.inner.borrow_mut().load().unwrap_or_default())
    }

    fn load_seen(&mut self) -> Result<Vec<lifeline_routing::SeenRecord>, DiskFull> {
        Ok(self.inner.borrow_mut().load_seen().unwrap_or_default())
    }

    fn seen_before(
        &mut self,
        id: &lifeline_routing::MessageId,
        expires_ms: u64,
    ) -> Result<Option<bool>, DiskFull> {
        Ok(self
            .inner
            .borrow_mut()
            .seen_before(id, expires_ms)
            .unwrap_or_default())
    }

    fn write(&mut self, batch: &lifeline_routing::StoreBatch) -> Result<(), DiskFull> {
        if self.fail.get() {
            return Err(DiskFull);
        }
        let _ = self.inner.borrow_mut().write(batch);
        Ok(())
    }
}

/// `data` as one packet of one fragment.
fn one_packet(frame: u64, class: Class, data: Vec<u8>) -> Vec<u8> {
    lifeline_routing::wire::Packet {
        frame,
        index: 0,
        count: 1,
        class,
        data,
    }
    .encode()
}

/// Everything `router` has for `to` now, decoded.
fn sent_frames(
    router: &mut Router<SharedStore>,
    now: u64,
    to: &lifeline_routing::Address,
) -> Vec<lifeline_routing::wire::Frame> {
    use lifeline_routing::wire::{Frame, Packet};
    std::iter::from_fn(|| router.poll_link(now, to))
        .map(|p| Frame::decode(&Packet::decode(&p).unwrap().data).unwrap())
        .collect()
}

/// The acknowledgements among what `router` has for `to` now.
fn acks_sent(
    router: &mut Router<SharedStore>,
    now: u64,
    to: &lifeline_routing::Address,
) -> Vec<lifeline_routing::wire::Frame> {
    use lifeline_routing::wire::Frame;
    sent_frames(router, now, to)
        .into_iter()
        .filter(|f| matches!(f, Frame::Ack { .. }))
        .collect()
}

/// An SOS (P0 data) signed by `origin` for `to`, told apart by `nonce`.
fn signed_sos(
    origin: &lifeline_crypto::Identity,
    to: lifeline_routing::Address,
    nonce: u8,
) -> lifeline_routing::wire::Message {
    use lifeline_routing::wire::{Body, Message};
    let body = Body {
        class: Class::P0,
        kind: Kind::Data,
        destination: Some(to),
        origin: Some(lifeline_routing::Address::from(origin.id())),
        created_ms: 0,
        expires_ms: 3_600_000,
        area: None,
        nonce: [nonce; 8],
        payload: b"SOS".to_vec(),
    };
    Message::new(body, Some(origin), 10)
}

/// Brings up the link to `next` and has it announce a route to
/// `destination`; drains what that made the router say or do.
fn route_via(
    router: &mut Router<SharedStore>,
    next: lifeline_routing::Address,
    destination: lifeline_routing::Address,
) {
    use lifeline_routing::routes::RouteMessage;
    use lifeline_routing::wire::Frame;
    router.handle_link_up(0, next, 300);
    let update = Frame::Control(vec![RouteMessage::Update {
        destination,
        seqno: 1,
        metric: 300,
        reach: 0,
    }]);
    router.handle_packet(0, &next, &one_packet(1, Class::P0, update.encode()));
    while router.poll_event().is_some() {}
    while router.poll_link(0, &next).is_some() {}
}

#[test]
fn custody_is_acknowledged_only_once_it_is_in_the_store() {
    use lifeline_routing::wire::{Body, Frame, Message};
    use lifeline_routing::{Address, MessageStore};
    let store = SharedStore::default();
    let relay = common::identity(1);
    let upstream = Address::from(common::identity(0).id());
    let destination = Address::from(common::identity(2).id());
    let mut router = Router::new(relay, Config::default(), store.clone(), [0; 32], 0).unwrap();
    router.handle_link_up(0, upstream, 300);
    while router.poll_link(0, &upstream).is_some() {}
    let body = Body::sealed(
        Class::P2,
        destination,
        0,
        3_600_000,
        [9; 8],
        b"sealed".to_vec(),
    );
    let message = Message::new(body, None, 10);
    let id = message.id;
    let wire = one_packet(1, Class::P2, Frame::Message(Box::new(message)).encode());
    let acks = |router: &mut Router<SharedStore>| -> Vec<Frame> {
        router.flush();
        sent_frames(router, 0, &upstream)
            .into_iter()
            .filter(|f| matches!(f, Frame::Ack { .. }))
            .collect()
    };
    // The disk is full: no acknowledgement, and the relay does not pretend to hold it.
    store.fail.set(true);
    router.handle_packet(10, &upstream, &wire);
    assert!(acks(&mut router).is_empty());
    assert!(!router.holds(&id));
    assert!(std::iter::from_fn(|| router.poll_event()).any(|e| matches!(e, Event::StoreFailed(_))));
    // The upstream retries once the disk has room: stored, then acknowledged.
    store.fail.set(false);
    router.handle_packet(20, &upstream, &wire);
    assert!(
        !store.inner.borrow().contains(&id),
        "written at the next poll, in one batch"
    );
    let got = acks(&mut router);
    assert!(store.inner.borrow().contains(&id));
    // The daemon reports itself unhealthy from the failure to this.
    assert!(std::iter::from_fn(|| router.poll_event()).any(|e| matches!(e, Event::StoreRecovered)));
    assert_eq!(
        got,
        vec![Frame::Ack {
            id,
            outcome: lifeline_routing::wire::AckOutcome::Holding
        }]
    );
    assert_eq!(store.inner.borrow_mut().load().unwrap().len(), 1);
}

/// A relay passes a message on before its own copy is on disk: the write
/// (an fsync in the daemon, a third of a millisecond on an idle disk and
/// several on a busy one) was in the way of every hop of an SOS. Only the
/// custody acknowledgement waits for it; until then the previous hop keeps
/// its copy, so nothing is lost if this node dies before the write.
#[test]
fn a_relay_forwards_before_the_disk_has_its_copy_and_acknowledges_after() {
    use lifeline_routing::wire::Frame;
    use lifeline_routing::{Address, MessageStore};
    let store = SharedStore::default();
    let relay = common::identity(1);
    let upstream = Address::from(common::identity(0).id());
    let next = Address::from(common::identity(2).id());
    let destination = Address::from(common::identity(3).id());
    let mut router = Router::new(relay, Config::default(), store.clone(), [0; 32], 0).unwrap();
    router.handle_link_up(0, upstream, 300);
    route_via(&mut router, next, destination);
    while router.poll_link(0, &upstream).is_some() {}
    let origin = common::identity(4);
    let message = signed_sos(&origin, destination, 9);
    let id = message.id;
    let wire = Frame::Message(Box::new(message)).encode();
    router.handle_packet(10, &upstream, &one_packet(2, Class::P0, wire));
    // On to the next hop at once, before any write.
    let forwarded = sent_frames(&mut router, 10, &next);
    assert!(
        forwarded
            .iter()
            .any(|f| matches!(f, Frame::Message(m) if m.id == id)),
        "not forwarded before the write: {forwarded:?}"
    );
    assert!(
        !store.inner.borrow().contains(&id),
        "written before forwarding"
    );
    let early = sent_frames(&mut router, 10, &upstream);
    assert!(
        !early.iter().any(|f| matches!(f, Frame::Ack { .. })),
        "acknowledged before the write: {early:?}"
    );
    // The write, then the acknowledgement.
    router.flush();
    assert!(store.inner.borrow().contains(&id));
    assert_eq!(store.inner.borrow_mut().load().unwrap().len(), 1);
    let acks: Vec<Frame> = sent_frames(&mut router, 10, &upstream)
        .into_iter()
        .filter(|f| matches!(f, Frame::Ack { .. }))
        .collect();
    assert_eq!(
        acks,
        vec![Frame::Ack {
            id,
            outcome: lifeline_routing::wire::AckOutcome::Forwarding
        }]
    );
}

/// A driver that makes the custody writes itself, on another thread
/// (`defer_writes`), goes on routing while the disk works: the router
/// hands out one batch at a time, forwards what arrives meanwhile, and
/// keeps back what the write must come first for (the custody
/// acknowledgements) until the driver reports the write. A failed write
/// forgets what it would have taken in, as a failed `flush` does.
/// (Deliveries: `a_delivery_is_acknowledged_only_once_kept_and_written`.)
#[test]
fn with_deferred_writes_custody_acknowledgements_wait_for_the_callers_write() {
    use lifeline_routing::wire::{Frame, Message};
    use lifeline_routing::{Address, MessageStore};
    let store = SharedStore::default();
    let relay = common::identity(1);
    let upstream = Address::from(common::identity(0).id());
    let next = Address::from(common::identity(2).id());
    let destination = Address::from(common::identity(3).id());
    let mut router = Router::new(relay, Config::default(), store.clone(), [0; 32], 0).unwrap();
    router.handle_link_up(0, upstream, 300);
    route_via(&mut router, next, destination);
    while router.poll_link(0, &upstream).is_some() {}
    router.defer_writes();
    let origin = common::identity(4);
    let sos = |to: Address, nonce: u8| signed_sos(&origin, to, nonce);
    let arrive = |router: &mut Router<SharedStore>, frame: u64, m: Message, at: u64| {
        let wire = Frame::Message(Box::new(m)).encode();
        router.handle_packet(at, &upstream, &one_packet(frame, Class::P0, wire));
    };
    let acked = |router: &mut Router<SharedStore>, at: u64| -> Vec<lifeline_routing::MessageId> {
        sent_frames(router, at, &upstream)
            .into_iter()
            .filter_map(|f| match f {
                Frame::Ack { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    };
    let forwarded = |router: &mut Router<SharedStore>, at: u64, id| {
        sent_frames(router, at, &next)
            .iter()
            .any(|f| matches!(f, Frame::Message(m) if m.id == id))
    };

    let first = sos(destination, 1);
    let first_id = first.id;
    arrive(&mut router, 2, first, 10);
    assert!(forwarded(&mut router, 10, first_id));
    // Polling events no longer writes.
    while router.poll_event().is_some() {}
    assert!(!store.inner.borrow().contains(&first_id));
    assert!(acked(&mut router, 10).is_empty(), "acknowledged unwritten");
    let batch = router.take_write().expect("a batch to write");
    assert!(batch.puts.iter().any(|(id, _)| *id == first_id));
    assert!(router.write_in_flight());
    assert!(
        router.take_write().is_none(),
        "a second batch while one is out"
    );
    // Nor may a synchronous write overtake it.
    assert!(router.write().is_err());

    // While the disk works, the next SOS goes on at once.
    let second = sos(destination, 2);
    let second_id = second.id;
    arrive(&mut router, 3, second, 20);
    assert!(forwarded(&mut router, 20, second_id));

    // The first write is done: its acknowledgement goes, no other.
    store.inner.borrow_mut().write(&batch).unwrap();
    router.written(Ok(()));
    assert_eq!(acked(&mut router, 30), vec![first_id]);

    // The next one fails: the second SOS is not held, nor acknowledged.
    let batch = router.take_write().expect("the second batch");
    assert!(batch.puts.iter().any(|(id, _)| *id == second_id));
    router.written(Err("disk full".into()));
    let events: Vec<Event> = std::iter::from_fn(|| router.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, Event::StoreFailed(_))));
    assert!(!router.holds(&second_id));
    assert!(router.holds(&first_id));
    assert!(!acked(&mut router, 40).contains(&second_id));
    // Nothing waits: the next take writes what is left (the forgotten
    // message's delete), and a synchronous write works again.
    if let Some(batch) = router.take_write() {
        store.inner.borrow_mut().write(&batch).unwrap();
        router.written(Ok(()));
    }
    assert!(!router.write_in_flight());
    router.write().unwrap();
    assert!(store.inner.borrow().contains(&first_id));
    assert!(!store.inner.borrow().contains(&second_id));
}

/// A destination: its router, with a link up to the previous hop, and an
/// SOS for it, as that hop sends it.
struct AtDestination {
    router: Router<SharedStore>,
    store: SharedStore,
    upstream: lifeline_routing::Address,
    id: lifeline_routing::MessageId,
    wire: Vec<u8>,
}

impl AtDestination {
    /// With the writes made by the router (`defer`: by the caller).
    fn new(defer: bool) -> Self {
        use lifeline_routing::Address;
        use lifeline_routing::wire::Frame;
        let store = SharedStore::default();
        let me = common::identity(1);
        let here = Address::from(me.id());
        let upstream = Address::from(common::identity(0).id());
        let mut router = Router::new(me, Config::default(), store.clone(), [0; 32], 0).unwrap();
        if defer {
            router.defer_writes();
        }
        router.handle_link_up(0, upstream, 300);
        while router.poll_link(0, &upstream).is_some() {}
        let message = signed_sos(&common::identity(4), here, 7);
        Self {
            router,
            store,
            upstream,
            id: message.id,
            wire: Frame::Message(Box::new(message)).encode(),
        }
    }

    /// The SOS arrives (again), in link frame `frame`.
    fn arrive(&mut self, at: u64, frame: u64) {
        let packet = one_packet(frame, Class::P0, self.wire.clone());
        self.router.handle_packet(at, &self.upstream, &packet);
    }

    /// The acknowledgements the router has for the previous hop now.
    fn acks(&mut self, at: u64) -> Vec<lifeline_routing::wire::Frame> {
        acks_sent(&mut self.router, at, &self.upstream)
    }

    /// The acknowledgement that it was delivered.
    fn delivered(&self) -> lifeline_routing::wire::Frame {
        lifeline_routing::wire::Frame::Ack {
            id: self.id,
            outcome: lifeline_routing::wire::AckOutcome::Delivered,
        }
    }

    /// How many times the events polled now deliver it.
    fn deliveries(&mut self) -> usize {
        let id = self.id;
        std::iter::from_fn(|| self.router.poll_event())
            .filter(|e| matches!(e, Event::Delivered(d) if d.id == id))
            .count()
    }

    /// Seen records on disk.
    fn seen_on_disk(&self) -> usize {
        use lifeline_routing::MessageStore;
        self.store.inner.borrow_mut().load_seen().unwrap().len()
    }
}

/// The destination's acknowledgement tells the previous hop to forget the
/// message, and its seen record makes the destination take a copy sent
/// again for a duplicate. Both must wait until the caller kept the
/// delivery (the daemon's synced inbox write), which the delivery does not
/// wait for (an SOS is shown before the router's write). The record used
/// to reach the disk first: a crash before the inbox write, and the
/// previous hop's retry was acknowledged as a duplicate and lost. The
/// acknowledgement once left at once, and then with the write, ahead of a
/// daemon's inbox write.
#[test]
fn a_delivery_is_acknowledged_only_once_kept_and_written() {
    // Synchronous writes (the simulator's).
    let mut d = AtDestination::new(false);
    d.arrive(10, 2);
    assert_eq!(d.acks(10), vec![], "acknowledged at once");
    let Some(Event::Delivered(delivery)) = d.router.poll_event() else {
        panic!("not delivered")
    };
    assert_eq!(
        d.seen_on_disk(),
        0,
        "its seen record was written before it was kept"
    );
    assert_eq!(d.acks(10), vec![], "acknowledged before it was kept");
    // The caller keeps it with this record.
    let seen = delivery.seen.expect("a record to keep with it");
    assert!(seen.id == d.id && seen.delivered);
    assert_eq!(d.deliveries(), 0);
    assert_eq!(d.seen_on_disk(), 1);
    assert_eq!(d.acks(10), vec![d.delivered()]);
    // A retry is a duplicate: acknowledged, not delivered again.
    d.arrive(11, 3);
    assert_eq!(d.deliveries(), 0, "delivered twice");
    assert_eq!(d.acks(11), vec![d.delivered()]);
}

/// The same with the writes on another thread (the daemon's): the
/// delivery comes at once, a batch taken before the caller took it does
/// not have its seen record, and the acknowledgement (a retry's too)
/// waits for the write that has it.
#[test]
fn with_deferred_writes_a_delivery_comes_at_once_and_is_acknowledged_after_its_write() {
    let mut d = AtDestination::new(true);
    let id = d.id;
    let write = |router: &mut Router<SharedStore>| {
        let batch = router.take_write();
        if batch.is_some() {
            router.written(Ok(()));
        }
        batch
    };

    d.arrive(10, 2);
    // The driver hands out a batch before it handles events: it must not
    // have the record yet.
    let early = write(&mut d.router);
    assert!(
        early.is_none_or(|b| !b.seen.iter().any(|r| r.id == id)),
        "the seen record was written before the delivery was kept"
    );
    assert_eq!(d.acks(10), vec![], "acknowledged before it was kept");
    // A retry meanwhile waits for the first copy to be kept too.
    d.arrive(11, 3);
    write(&mut d.router);
    assert_eq!(d.acks(11), vec![]);
    let events: Vec<Event> = std::iter::from_fn(|| d.router.poll_event()).collect();
    let deliveries: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Delivered(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(deliveries.len(), 1, "{events:?}");
    assert_eq!(deliveries[0].received_ms, 10);
    assert_eq!(d.acks(12), vec![], "acknowledged before its write");
    let batch = d
        .router
        .take_write()
        .expect("the batch with the seen record");
    assert!(batch.seen.iter().any(|r| r.id == id && r.delivered));
    assert_eq!(d.acks(12), vec![], "acknowledged before its write");
    d.router.written(Ok(()));
    assert_eq!(d.acks(13), vec![d.delivered(), d.delivered()]);
    // A retry now is acknowledged after the next write.
    d.arrive(14, 4);
    assert_eq!(d.deliveries(), 0, "delivered twice");
    write(&mut d.router);
    assert_eq!(d.acks(14), vec![d.delivered()]);
}

/// A destination that cannot keep a delivery (its inbox write failed) must
/// not make the previous hop forget it. Before, the acknowledgement went
/// anyway and the message was lost. `delivery_not_kept` undoes it as far
/// as the previous hop can tell: no acknowledgement, no seen record, and
/// the copy it sends again is delivered again.
#[test]
fn a_delivery_the_caller_could_not_keep_is_not_acknowledged_and_comes_again() {
    let mut d = AtDestination::new(false);
    d.arrive(10, 2);
    let Some(Event::Delivered(_)) = d.router.poll_event() else {
        panic!("not delivered")
    };
    d.router.delivery_not_kept(d.id);
    assert_eq!(d.deliveries(), 0);
    assert_eq!(d.acks(10), vec![], "acknowledged, not kept");
    assert_eq!(d.seen_on_disk(), 0);

    d.arrive(20, 3);
    assert_eq!(d.deliveries(), 1, "the copy sent again was not delivered");
    assert_eq!(d.acks(20), vec![d.delivered()]);
    assert_eq!(d.seen_on_disk(), 1);
}

/// With a write out on the daemon's writer thread, a synchronous write
/// refuses, so the daemon's receipt for a message it opened (sent with
/// `send_receipt`, which writes) failed with "the custody write before is
/// not finished yet" and was logged as not sent, though it went. It is
/// written with the next batch now (`send_receipt_unwritten`).
#[test]
fn a_receipt_sent_while_a_write_is_out_goes_with_the_next_write() {
    use lifeline_routing::wire::{Frame, Packet};
    let mut d = AtDestination::new(true);
    let upstream = d.upstream;
    // Whoever sent the message the receipt is for, beyond the previous hop.
    let sender = lifeline_routing::Address::from(common::identity(5).id());
    route_via(&mut d.router, upstream, sender);
    let request = SendRequest {
        class: Class::P2,
        destination: Destination::Node(sender),
        payload: b"hello".to_vec(),
        ttl_ms: None,
    };
    d.router.send_unwritten(10, request).unwrap();
    let out = d.router.take_write().expect("a batch to write");
    assert!(!out.puts.is_empty());
    assert!(
        d.router.send_receipt(11, sender, d.id).is_err(),
        "a synchronous write overtook the batch out"
    );
    let receipt = d.router.send_receipt_unwritten(12, sender, d.id).unwrap();
    let frames: Vec<Frame> = std::iter::from_fn(|| d.router.poll_link(12, &upstream))
        .map(|p| Frame::decode(&Packet::decode(&p).unwrap().data).unwrap())
        .collect();
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Message(m) if m.id == receipt)),
        "the receipt did not leave: {frames:?}"
    );
    d.router.written(Ok(()));
    let next = d.router.take_write().expect("the receipt's write");
    assert!(next.puts.iter().any(|(id, _)| *id == receipt));
}

/// The node that sends an SOS hands it to its next hop before its own
/// copy is on disk: the write once came first, and at the sender it took
/// up to 50 ms of an SOS's 4 ms trip (line_latency, 2026-12-07). Whoever
/// sent it is told so only once the write succeeded; if it fails, the
/// router forgets the message (it retries nothing it was not able to
/// keep) and says why.
#[test]
fn an_own_message_leaves_before_the_disk_has_it_and_is_forgotten_if_the_write_fails() {
    use lifeline_routing::wire::Frame;
    use lifeline_routing::{Address, Destination, SendError, SendRequest};
    let store = SharedStore::default();
    let next = Address::from(common::identity(2).id());
    let destination = Address::from(common::identity(3).id());
    let mut router = Router::new(
        common::identity(1),
        Config::default(),
        store.clone(),
        [0; 32],
        0,
    )
    .unwrap();
    route_via(&mut router, next, destination);
    let sos = |text: &[u8]| SendRequest {
        class: Class::P0,
        destination: Destination::Node(destination),
        payload: text.to_vec(),
        ttl_ms: None,
    };
    let carries = |frames: &[Frame], id| {
        frames
            .iter()
            .any(|f| matches!(f, Frame::Message(m) if m.id == id))
    };

    let id = router.send_unwritten(10, sos(b"SOS")).unwrap();
    assert!(
        !store.inner.borrow().contains(&id),
        "written before it left"
    );
    let out = sent_frames(&mut router, 10, &next);
    assert!(
        carries(&out, id),
        "not on its link before the write: {out:?}"
    );
    router.write().unwrap();
    assert!(store.inner.borrow().contains(&id));
    assert!(router.holds(&id), "held until its next hop takes custody");

    // The disk fails: the message may have left, but the router keeps
    // nothing it could not write, and the caller learns why.
    store.fail.set(true);
    let lost = router.send_unwritten(20, sos(b"SOS 2")).unwrap();
    assert!(carries(&sent_frames(&mut router, 20, &next), lost));
    let failed = router.write();
    assert!(
        matches!(failed, Err(SendError::Store(ref e)) if e.contains("disk full")),
        "{failed:?}"
    );
    assert!(!router.holds(&lost));
    assert!(!store.inner.borrow().contains(&lost));
    assert!(router.holds(&id), "what was written stays held");
    // `send` still writes before it returns.
    store.fail.set(false);
    let kept = router.send(30, sos(b"SOS 3")).unwrap();
    assert!(store.inner.borrow().contains(&kept));

    // A responder's "help is coming" is P0 too: it leaves before the
    // responder's disk has it, and is held once written.
    let ack = router
        .acknowledge_sos_unwritten(40, destination, id, "help is coming")
        .unwrap();
    assert!(!store.inner.borrow().contains(&ack));
    assert!(carries(&sent_frames(&mut router, 40, &next), ack));
    router.write().unwrap();
    assert!(store.inner.borrow().contains(&ack));
}

mod no_loops {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Random graphs, random link failures and repairs, random latencies:
        /// after every single event in the network, following next hops
        /// towards any destination never goes round in a circle.
        #[test]
        fn routers_never_form_a_routing_loop(
            edges in proptest::collection::vec((0usize..10, 0usize..10, 1u64..40), 12..30),
            changes in proptest::collection::vec((0usize..30, any::<bool>()), 1..8),
            seed in any::<u64>(),
        ) {
            let mut net = Net::new(10, Config::default(), seed);
            let edges: Vec<_> = edges.into_iter().filter(|(a, b, _)| a != b).collect();
            for (a, b, latency) in &edges {
                net.connect(*a, *b, *latency, 1_000, 0.0);
            }
            let check = |n: &Net| (0..10).all(|d| !n.has_loop(d));
            let mut ok = true;
            net.run_until(20_000, |n| { ok &= check(n); false });
            prop_assert!(ok, "loop while converging");
            for (which, up) in changes {
                let Some((a, b, latency)) = edges.get(which % edges.len().max(1)).copied() else { continue };
                if up { net.connect(a, b, latency * 2, 1_000, 0.0) } else { net.disconnect(a, b) }
                net.run_until(20_000, |n| { ok &= check(n); false });
                prop_assert!(ok, "loop after changing link {a}-{b}");
            }
            // And in the end, after a refresh at the latest, every node
            // reaches every node of its component.
            prop_assert!(net.run_until(400_000, Net::converged));
        }
    }
}

#[test]
fn steady_state_control_traffic_on_the_leipzig_mesh_stays_under_200_bytes_per_node_per_second() {
    let mut net = common::leipzig(1, Config::default());
    let (control, wire) = common::steady_control_bytes(&mut net, 1_800);
    // Counted bytes, not time: deterministic for a given graph and config.
    assert!(
        wire < 200.0,
        "{wire:.0} B/s per node on the wire ({control:.0} B/s of control frames)"
    );
    assert!(control > 0.0, "no refresh at all cannot be right");
}

#[test]
fn an_sos_sent_with_no_neighbours_is_flooded_when_one_appears() {
    let mut net = Net::new(3, Config::default(), 23);
    net.connect(1, 2, 50, 1_000, 0.0);
    let sos = net.send(0, unicast(Class::P0, net.addr(2), b"SOS from a lone phone"));
    net.run_for(1_000);
    assert!(net.nodes[0].router().holds(&sos));
    // A neighbour appears. The flood goes at once: two hops, 100 ms. Waiting
    // for the route (node 1's announcement takes 50 ms to arrive) would add 50.
    let t0 = net.now;
    net.connect(0, 1, 50, 1_000, 0.0);
    assert!(net.run_until(10_000, |n| n.delivered(2, sos).is_some()));
    let latency = net.delivered(2, sos).unwrap().0 - t0;
    assert!(
        latency < 120,
        "the SOS took {latency} ms: it waited for a route"
    );
}

/// A node picks its home again when the landmarks it knows change (it
/// scores them only then, not at every check) and registers there.
#[test]
fn a_node_that_loses_its_home_registers_with_the_landmark_that_becomes_home() {
    use lifeline_routing::locate;
    let config = Config {
        zone_hops: 1,
        landmark_one_in: 2,
        ..Config::default()
    };
    let probe = Net::new(12, config.clone(), 29);
    let landmarks: Vec<usize> = (0..12)
        .filter(|&i| locate::is_landmark(&probe.addr(i), 2))
        .collect();
    let node = (0..12)
        .find(|&i| !landmarks.contains(&i))
        .expect("a node that is not a landmark");
    let (l1, l2) = (landmarks[0], landmarks[1]);
    let mut net = Net::new(12, config, 29);
    net.connect(node, l1, 5, 1_000, 0.0);
    net.connect(node, l2, 5, 1_000, 0.0);
    net.run_for(30_000);
    let home_of = |net: &Net, candidates: &[usize]| {
        let addrs: Vec<_> = candidates.iter().map(|&i| net.addr(i)).collect();
        net.index_of(&locate::home(&net.addr(node), addrs.iter()).unwrap())
    };
    let home = home_of(&net, &[l1, l2]);
    let other = if home == l1 { l2 } else { l1 };
    let me = net.addr(node);
    assert!(net.nodes[home].router().registered(&me).is_some());
    assert_eq!(net.nodes[other].router().registered(&me), None);
    // The home goes out of reach: the other landmark is the only one left.
    net.disconnect(node, home);
    net.run_for(30_000);
    assert_eq!(home_of(&net, &[other]), other);
    assert_eq!(
        net.nodes[other].router().registered(&me),
        Some(net.addr(other)),
        "the node did not register with its new home"
    );
}

/// Scoped settings for a line of `n` nodes (zones of one hop, one
/// landmark in 4), the line's landmarks, and each node's home among them.
fn scoped_line(n: usize) -> (Config, Vec<usize>, Vec<usize>) {
    use lifeline_routing::locate;
    let config = Config {
        zone_hops: 1,
        landmark_one_in: 4,
        ..Config::default()
    };
    let probe = Net::new(n, config.clone(), 1);
    let landmarks: Vec<usize> = (0..n)
        .filter(|&i| locate::is_landmark(&probe.addr(i), 4))
        .collect();
    let addrs: Vec<_> = landmarks.iter().map(|&i| probe.addr(i)).collect();
    let homes = (0..n)
        .map(|d| probe.index_of(&locate::home(&probe.addr(d), addrs.iter()).unwrap()))
        .collect();
    (config, landmarks, homes)
}

/// In a scoped mesh a source looks up a far destination at its home and
/// sends its message straight for the landmark the destination is near,
/// instead of by way of the home (docs/routing.md, Scoped meshes). On a
/// line, the pair is chosen so that the home lies far off the way.
#[test]
fn a_source_looks_up_a_far_destination_and_skips_the_detour_by_its_home() {
    let n = 40;
    let (config, landmarks, homes) = scoped_line(n);
    let home = |d: usize| homes[d];
    // Source and destination at least 12 hops apart (outside each other's
    // zones), with the destination's home at least 6 hops behind the
    // source: the way by the home doubles back.
    let (s, d) = (0..n)
        .flat_map(|s| (0..n).map(move |d| (s, d)))
        .filter(|&(s, d)| !landmarks.contains(&s) && !landmarks.contains(&d))
        .find(|&(s, d)| {
            let h = home(d);
            s.abs_diff(d) >= 12
                && h.abs_diff(s) >= 6
                && h.abs_diff(d) == h.abs_diff(s) + s.abs_diff(d)
        })
        .expect("the landmarks of this line leave such a pair");
    let mut net = Net::line(n, 5, config);
    net.run_for(60_000);
    assert_eq!(
        net.nodes[s].router().next_hop(&net.addr(d)),
        None,
        "d is out of s's zone"
    );
    let to = net.addr(d);
    let id = net.send(s, unicast(Class::P2, to, b"water at the school"));
    net.run_for(10_000);
    let (_, delivery) = net.delivered(d, id).expect("delivered");
    assert!(
        delivery.hops <= s.abs_diff(d) as u32 + 2,
        "{} hops for a {}-hop way (by the home: {})",
        delivery.hops,
        s.abs_diff(d),
        s.abs_diff(home(d)) + home(d).abs_diff(d)
    );
    let stats = net.nodes[s].router().stats();
    assert_eq!((stats.lookups_sent, stats.lookups_answered), (1, 1));
    // A second message needs no second lookup.
    let id = net.send(s, unicast(Class::P2, to, b"and blankets"));
    net.run_for(10_000);
    assert!(net.delivered(d, id).is_some());
    assert_eq!(net.nodes[s].router().stats().lookups_sent, 1);
}

/// A home that re-heads a message gives it a fresh hop budget: on a line
/// of 300 nodes, an SOS (which does not wait for a lookup) whose way by
/// the destination's home is longer than the 255-hop limit still arrives.
#[test]
fn an_sos_whose_way_by_the_home_is_longer_than_the_hop_limit_arrives() {
    let n = 300;
    let (config, landmarks, homes) = scoped_line(n);
    let home = |d: usize| homes[d];
    let mut net = Net::line(n, 2, config);
    net.run_for(60_000);
    // A pair out of each other's zones, less than 60 hops apart, with the
    // destination's home behind the source: the way by the home is longer
    // than 280 hops, and each of its legs shorter than 255.
    let (s, d) = (0..n)
        .flat_map(|s| (0..n).map(move |d| (s, d)))
        .filter(|&(s, d)| !landmarks.contains(&s) && !landmarks.contains(&d))
        .find(|&(s, d)| {
            let h = home(d);
            (12..60).contains(&s.abs_diff(d))
                && h.abs_diff(d) == h.abs_diff(s) + s.abs_diff(d)
                && s.abs_diff(h) + h.abs_diff(d) > 280
                && h.abs_diff(d) < 240
                && net.nodes[s].router().next_hop(&net.addr(d)).is_none()
        })
        .expect("the landmarks of this line leave such a pair");
    let to = net.addr(d);
    let id = net.send(s, unicast(Class::P0, to, b"SOS: trapped, second floor"));
    net.run_for(20_000);
    let (_, delivery) = net.delivered(d, id).expect("the SOS arrived");
    // The count of hops taken stops at 255 on the wire.
    assert_eq!(delivery.hops, 255);
}
