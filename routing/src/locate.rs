//! Scoped meshes: zones, landmarks and the location registry.
//!
//! In a mesh of thousands of nodes, a routing table with a route to every
//! node grows with the node count, and every node's refresh with it. In a
//! *scoped* mesh (`Config::zone_hops` above 0) a node's route travels only
//! as far as its **zone** (a metric of `zone_hops` good hops, see
//! [`HOP_METRIC`]), except for **landmarks**: one node in
//! `Config::landmark_one_in`, chosen by a hash of its id, whose routes go
//! everywhere. A node that is not a landmark stretches its zone so that its
//! nearest landmark is inside it, and registers "I am near landmark L" with
//! its **home**: the landmark that a hash of its id and the landmarks' ids
//! picks (rendezvous hashing, so that every node that knows the same
//! landmarks picks the same home, and a landmark coming or going moves only
//! the nodes it is home for).
//!
//! A message for a destination outside every zone on its way heads for the
//! destination's home; the home sends it on towards the landmark the
//! destination registered with, inside whose zone the destination is; the
//! first node on the way with a route to the destination takes it there.
//! See docs/routing.md (Scoped meshes).

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use crate::routes::Metric;
use crate::wire::{Address, Location};

/// The metric of one hop of a good link in a zone's size: a lossless link
/// costs 256 plus its round trip in milliseconds (`routes::link_cost`).
pub const HOP_METRIC: Metric = 300;
/// How often a node checks its nearest landmark and home.
pub const CHECK_INTERVAL_MS: u64 = 10_000;
/// Registrations a landmark keeps (the oldest goes first when full).
pub const MAX_REGISTRATIONS: usize = 65_536;

const LANDMARK_DOMAIN: &[u8] = b"lifeline/landmark/v1";

/// Whether `node` is a landmark when one node in `one_in` is (0 or 1:
/// every node).
pub fn is_landmark(node: &Address, one_in: u32) -> bool {
    if one_in <= 1 {
        return true;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(LANDMARK_DOMAIN);
    hasher.update(&node.0);
    let hash = hasher.finalize();
    let mut first = [0u8; 4];
    first.copy_from_slice(&hash.as_bytes()[..4]);
    u32::from_le_bytes(first) % one_in == 0
}

/// The home of `node` among `landmarks`: the one with the highest
/// rendezvous score (ties, which need a hash collision, go to the lowest id).
pub fn home<'a>(node: &Address, landmarks: impl Iterator<Item = &'a Address>) -> Option<Address> {
    landmarks
        .map(|l| (score(l, node), std::cmp::Reverse(*l)))
        .max()
        .map(|(_, l)| l.0)
}

/// The BLAKE3 key of a home's rendezvous score.
static HOME_KEY: LazyLock<[u8; 32]> =
    LazyLock::new(|| blake3::derive_key("lifeline 2026-11 home score v2", &[]));

/// A keyed hash of the two ids (64 bytes, one BLAKE3 compression): every
/// node scores every landmark each time it picks a home.
fn score(landmark: &Address, node: &Address) -> u64 {
    let mut input = [0u8; 64];
    input[..32].copy_from_slice(&landmark.0);
    input[32..].copy_from_slice(&node.0);
    let hash = blake3::keyed_hash(&HOME_KEY, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// A fingerprint of a set of landmarks: how many, and the XOR of their
/// ids. A node picks its home again only when the fingerprint of the
/// landmarks it knows changed: scoring every landmark every
/// [`CHECK_INTERVAL_MS`] was a twentieth of a 10,000-node simulation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LandmarkSet {
    count: usize,
    xor: [u8; 32],
}

impl LandmarkSet {
    /// Adds `landmark` (each landmark once).
    pub fn add(&mut self, landmark: &Address) {
        self.count += 1;
        for (x, b) in self.xor.iter_mut().zip(landmark.0) {
            *x ^= b;
        }
    }
}

/// How far a node that is not a landmark wants to be known: its zone, or
/// the metric to its nearest landmark and one hop more if that is more (so
/// that the landmark has a route back), rounded up to whole pairs of hops
/// so that small changes in the metric do not change it.
pub fn reach(zone: Metric, nearest_landmark: Metric) -> Metric {
    let step = 2 * HOP_METRIC;
    let needed = nearest_landmark
        .saturating_add(HOP_METRIC)
        .div_ceil(step)
        .saturating_mul(step);
    zone.max(needed).clamp(1, Metric::MAX - 1)
}

/// The registrations a landmark holds: node → (landmark, issued).
#[derive(Debug, Default)]
pub struct Registry {
    by_node: HashMap<Address, (Address, u64)>,
    /// By issue time, to drop the oldest when full.
    order: BTreeSet<(u64, Address)>,
}

impl Registry {
    /// Keeps `location` (already verified) if it is newer than what is
    /// held for its node. Returns whether it was kept.
    pub fn insert(&mut self, location: &Location) -> bool {
        if let Some((_, issued)) = self.by_node.get(&location.node) {
            if *issued >= location.issued_ms {
                return false;
            }
            self.order.remove(&(*issued, location.node));
        }
        self.by_node
            .insert(location.node, (location.landmark, location.issued_ms));
        self.order.insert((location.issued_ms, location.node));
        while self.by_node.len() > MAX_REGISTRATIONS {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_node.remove(&oldest);
        }
        true
    }

    /// The landmark `node` last registered with.
    pub fn landmark(&self, node: &Address) -> Option<Address> {
        self.by_node.get(node).map(|(l, _)| *l)
    }

    /// How many nodes are registered.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeline_crypto::Identity;

    fn addr(i: u8) -> Address {
        Address([i; 32])
    }

    #[test]
    fn about_one_node_in_n_is_a_landmark() {
        let count = (0..10_000u32)
            .filter(|i| {
                let mut a = [0u8; 32];
                a[..4].copy_from_slice(&i.to_le_bytes());
                is_landmark(&Address(a), 64)
            })
            .count();
        // 156 expected; a binomial with sd about 12.
        assert!((100..220).contains(&count), "{count} landmarks");
        assert!(is_landmark(&addr(1), 1));
    }

    #[test]
    fn a_new_landmark_moves_only_the_nodes_it_becomes_home_for() {
        let landmarks: Vec<Address> = (0..20).map(addr).collect();
        let nodes: Vec<Address> = (100..=250).map(addr).collect();
        let before: Vec<_> = nodes.iter().map(|n| home(n, landmarks.iter())).collect();
        let mut more = landmarks.clone();
        more.push(addr(50));
        for (n, b) in nodes.iter().zip(&before) {
            let after = home(n, more.iter());
            assert!(
                after == *b || after == Some(addr(50)),
                "{n:?} moved elsewhere"
            );
        }
        // The order landmarks are listed in does not matter.
        let reversed: Vec<Address> = landmarks.iter().rev().copied().collect();
        for n in &nodes {
            assert_eq!(home(n, landmarks.iter()), home(n, reversed.iter()));
        }
        assert_eq!(home(&addr(1), std::iter::empty()), None);
    }

    #[test]
    fn reach_covers_the_nearest_landmark_and_moves_in_steps() {
        // A zone of 6 hops covers a landmark 5 hops away.
        assert_eq!(reach(1_800, 1_300), 1_800);
        // A landmark 8 hops away: one hop more, in steps of two hops.
        assert_eq!(reach(1_800, 2_100), 2_400);
        assert_eq!(reach(1_800, 2_050), 2_400);
        assert_eq!(reach(1_800, 2_301), 3_000);
        assert_eq!(reach(0, u32::MAX - 1), u32::MAX - 1);
    }

    #[test]
    fn a_registry_keeps_the_newest_and_is_bounded() {
        let node = Identity::from_secret_bytes(&[7; 32]).expect("any 32 bytes are a key");
        let mut registry = Registry::default();
        let newer = Location::new(&node, addr(1), addr(2), 2_000);
        let older = Location::new(&node, addr(1), addr(3), 1_000);
        assert!(registry.insert(&newer));
        assert!(!registry.insert(&older));
        assert_eq!(registry.landmark(&newer.node), Some(addr(2)));
        assert!(newer.verify());
        let mut forged = newer.clone();
        forged.landmark = addr(9);
        assert!(
            !forged.verify(),
            "a changed landmark must break the signature"
        );
        for i in 0..MAX_REGISTRATIONS as u64 + 10 {
            let mut l = newer.clone();
            let mut a = [0u8; 32];
            a[..8].copy_from_slice(&i.to_le_bytes());
            l.node = Address(a);
            l.issued_ms = 10_000 + i;
            registry.insert(&l);
        }
        assert_eq!(registry.len(), MAX_REGISTRATIONS);
        assert_eq!(
            registry.landmark(&newer.node),
            None,
            "the oldest went first"
        );
    }
}
