//! Invariants of the link scheduler under random traffic.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use lifeline_routing::Class;
use lifeline_routing::schedule::{LinkScheduler, Pushed, QueuedFrame};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Push { class: u8, upstream: u8, len: usize },
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..4, 1usize..3000).prop_map(|(class, upstream, len)| Op::Push {
            class,
            upstream,
            len
        }),
        Just(Op::Poll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn nothing_is_lost_bounds_hold_and_priority_is_strict(ops in prop::collection::vec(op(), 1..300), mtu in 1usize..1500) {
        let capacity = 8000;
        let mut s = LinkScheduler::<u8>::new(mtu, capacity);
        // Per frame: its bytes, its class, what has arrived, and how it ended.
        let mut frames: HashMap<u64, (Vec<u8>, Class)> = HashMap::new();
        let mut received: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut ended: HashMap<u64, &'static str> = HashMap::new();
        let mut waiting: HashMap<u64, Class> = HashMap::new();
        let mut next_id = 0u64;
        for op in ops.into_iter().chain(std::iter::repeat_n(Op::Poll, 20_000)) {
            match op {
                Op::Push { class, upstream, len } => {
                    let class = Class::ALL[class as usize];
                    let bytes: Vec<u8> = (0..len).map(|i| (i as u64 ^ next_id) as u8).collect();
                    frames.insert(next_id, (bytes.clone(), class));
                    match s.push(QueuedFrame { id: next_id, class, upstream: Some(upstream), bytes }) {
                        Pushed::Queued { evicted } => {
                            for gone in evicted {
                                prop_assert!(gone.class > class, "a {:?} frame evicted a {:?} one", class, gone.class);
                                prop_assert!(ended.insert(gone.id, "evicted").is_none());
                                waiting.remove(&gone.id);
                            }
                            waiting.insert(next_id, class);
                        }
                        Pushed::Refused(f) => {
                            prop_assert!(ended.insert(f.id, "refused").is_none());
                        }
                    }
                    next_id += 1;
                }
                Op::Poll => {
                    let Some(fragment) = s.poll_fragment() else { continue };
                    prop_assert!(fragment.bytes.len() <= mtu);
                    let highest = waiting.values().min().copied();
                    prop_assert_eq!(Some(fragment.class), highest, "a lower class went first");
                    let got = received.entry(fragment.frame).or_default();
                    got.extend(&fragment.bytes);
                    if fragment.index + 1 == fragment.count {
                        prop_assert_eq!(got, &frames[&fragment.frame].0);
                        prop_assert!(ended.insert(fragment.frame, "delivered").is_none());
                        waiting.remove(&fragment.frame);
                    }
                }
            }
            prop_assert!(s.queued_bytes() <= capacity);
        }
        prop_assert!(s.is_empty());
        prop_assert_eq!(s.queued_bytes(), 0);
        // Every frame ended exactly one way.
        prop_assert_eq!(ended.len() as u64, next_id);
    }
}

#[test]
fn a_flooding_neighbour_delays_another_by_at_most_one_fragment_per_neighbour() {
    let mut s = LinkScheduler::new(200, 1 << 24);
    for id in 0..10_000 {
        s.push(QueuedFrame {
            id,
            class: Class::P2,
            upstream: Some(1u8),
            bytes: vec![0; 1000],
        });
    }
    // Neighbour 2's message arrives behind ten thousand frames of neighbour 1.
    s.push(QueuedFrame {
        id: 99_999,
        class: Class::P2,
        upstream: Some(2),
        bytes: vec![1; 600],
    });
    let mut polls = 0;
    loop {
        polls += 1;
        let f = s.poll_fragment().unwrap();
        if f.frame == 99_999 && f.index + 1 == f.count {
            break;
        }
    }
    // Its 3 fragments alternate with neighbour 1's: done within 6 fragments.
    assert!(
        polls <= 6,
        "{polls} fragments went before neighbour 2's message was through"
    );
}
