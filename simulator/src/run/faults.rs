//! Where faults strike: the links a split cuts, the sides authorities take,
//! hop distances, and the nodes a fault picks.

use rand::RngExt;
use rand::rngs::StdRng;

use super::Action;
use crate::topology::{Position, Topology};

/// The links (as `edge_links` names them) between the two sides `side` draws.
pub(super) fn cut_between(topology: &Topology, edge_links: &[usize], side: &[bool]) -> Vec<usize> {
    topology
        .edges
        .iter()
        .zip(edge_links)
        .filter(|(e, _)| side[e.a] != side[e.b])
        .map(|(_, l)| *l)
        .collect()
}

/// Cuts `cut` at `at_us`, and heals it at `heal_us`.
pub(super) fn partition(
    schedule: &mut Vec<(u64, usize)>,
    actions: &mut Vec<Action>,
    cut: Vec<usize>,
    at_us: u64,
    heal_us: Option<u64>,
) {
    schedule.push((at_us, actions.len()));
    actions.push(Action::Links {
        links: cut.clone(),
        up: false,
        heal: false,
    });
    if let Some(heal) = heal_us {
        schedule.push((heal, actions.len()));
        actions.push(Action::Links {
            links: cut,
            up: true,
            heal: true,
        });
    }
}

/// Two sides, `side` authorities on the first: the first side takes the
/// authorities furthest west (or the first by index without positions),
/// and every node joins the side of its nearest authority in hops.
pub(super) fn split_by_authorities(
    topology: &Topology,
    authorities: &[usize],
    side: usize,
) -> Vec<bool> {
    let order = authorities_west_to_east(topology, authorities);
    nearest(topology, &order)
        .into_iter()
        .map(|k| k.is_some_and(|k| k < side))
        .collect()
}

/// The authorities from west to east (by index without positions).
pub(super) fn authorities_west_to_east(topology: &Topology, authorities: &[usize]) -> Vec<usize> {
    let x = |v: usize| match topology.nodes[v].position {
        Some(Position::Plane { x, .. }) => x,
        _ => v as f64,
    };
    let mut order = authorities.to_vec();
    order.sort_by(|a, b| x(*a).total_cmp(&x(*b)).then(a.cmp(b)));
    order
}

/// For each node, which of `sources` (its index there) is nearest in hops
/// (ties go to the earlier source); `None` where none is reachable.
pub(super) fn nearest(topology: &Topology, sources: &[usize]) -> Vec<Option<usize>> {
    let adjacency = topology.adjacency();
    let mut first = vec![None; topology.nodes.len()];
    let mut queue = std::collections::VecDeque::new();
    for (k, &a) in sources.iter().enumerate() {
        if first[a].is_none() {
            first[a] = Some(k);
            queue.push_back(a);
        }
    }
    while let Some(v) = queue.pop_front() {
        for &w in &adjacency[v] {
            if first[w].is_none() {
                first[w] = first[v];
                queue.push_back(w);
            }
        }
    }
    first
}

/// Hops from `from` to every node (`None` where it cannot reach).
pub(super) fn hops_from(adjacency: &[Vec<usize>], from: usize) -> Vec<Option<usize>> {
    let mut hops = vec![None; adjacency.len()];
    hops[from] = Some(0);
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        let next = hops[v].map(|h| h + 1);
        for &w in &adjacency[v] {
            if hops[w].is_none() {
                hops[w] = next;
                queue.push_back(w);
            }
        }
    }
    hops
}

pub(super) fn pick(rng: &mut StdRng, n: usize, fraction: f64, spare: &[usize]) -> Vec<usize> {
    let want = ((n as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    let mut chosen = std::collections::BTreeSet::new();
    let mut tries = 0;
    while chosen.len() < want && tries < want * 20 + 100 {
        tries += 1;
        let v = rng.random_range(0..n);
        if !spare.contains(&v) {
            chosen.insert(v);
        }
    }
    chosen.into_iter().collect()
}
