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
//!
//! Going by way of the home nearly doubles a path (the home is anywhere in
//! the mesh), so a source first **looks up** the destination: it asks the
//! home ([`crate::wire::Lookup`]), which answers with the destination's own
//! signed registration ([`crate::wire::Found`]), and the source's messages
//! head for the landmark the destination is near instead ([`Lookups`]).
//! See docs/routing.md (Scoped meshes).

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use crate::routes::Metric;
use crate::wire::{Address, Location};

/// The metric of one hop of a good link in a zone's size: a lossless link
/// with a round trip under 4 ms costs 256 plus its round trip in
/// milliseconds (`routes::link_cost`; slower links cost more).
pub const HOP_METRIC: Metric = 300;
/// How often a node checks its nearest landmark and home.
pub const CHECK_INTERVAL_MS: u64 = 10_000;
/// Registrations a landmark keeps (the oldest goes first when full).
pub const MAX_REGISTRATIONS: usize = 65_536;
/// How long a source's messages wait for the answer to its lookup before
/// they head for the destination's home instead. An SOS never waits.
pub const LOOKUP_WAIT_MS: u64 = 2_000;
/// How long a source that got no answer waits before it looks the same
/// node up again.
pub const LOOKUP_RETRY_MS: u64 = 30_000;
/// How long a source uses a location it learned: a node registers again
/// within [`CHECK_INTERVAL_MS`] of its nearest landmark changing.
pub const LEARNED_TTL_MS: u64 = 60_000;
/// Locations a source keeps (the oldest learned goes first when full).
pub const MAX_LEARNED: usize = 4_096;
/// Lookups a source keeps track of, answered or not; when full it looks
/// nothing more up until some time out, and its messages go by way of the
/// homes.
pub const MAX_LOOKUPS: usize = 1_024;

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

/// Values by node, each with a time, at most `MAX` of them: past that the
/// one with the oldest time goes.
#[derive(Debug)]
struct OldestFirst<V, const MAX: usize> {
    by_node: HashMap<Address, (u64, V)>,
    order: BTreeSet<(u64, Address)>,
}

impl<V, const MAX: usize> Default for OldestFirst<V, MAX> {
    fn default() -> Self {
        Self {
            by_node: HashMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<V, const MAX: usize> OldestFirst<V, MAX> {
    fn get(&self, node: &Address) -> Option<&(u64, V)> {
        self.by_node.get(node)
    }

    /// Keeps `value` for `node` at time `at`, replacing what was held.
    fn insert(&mut self, node: Address, at: u64, value: V) {
        if let Some((held, _)) = self.by_node.insert(node, (at, value)) {
            self.order.remove(&(held, node));
        }
        self.order.insert((at, node));
        while self.by_node.len() > MAX {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_node.remove(&oldest);
        }
    }

    fn len(&self) -> usize {
        self.by_node.len()
    }
}

/// The registrations a landmark holds, signatures included (it answers
/// lookups with them).
#[derive(Debug, Default)]
pub struct Registry {
    /// By when this landmark took each in, to drop the oldest when full.
    /// (By issue time, which the signer chooses, a flood of registrations
    /// issued a little ahead outlived every honest one: issue 23, item 13.)
    by_node: OldestFirst<Location, MAX_REGISTRATIONS>,
}

impl Registry {
    /// Keeps `location` (already verified), taken in at `now_ms`, if it is
    /// newer than what is held for its node. Returns whether it was kept.
    pub fn insert(&mut self, location: &Location, now_ms: u64) -> bool {
        if self
            .by_node
            .get(&location.node)
            .is_some_and(|(_, held)| held.issued_ms >= location.issued_ms)
        {
            return false;
        }
        self.by_node.insert(location.node, now_ms, location.clone());
        true
    }

    /// The landmark `node` last registered with.
    pub fn landmark(&self, node: &Address) -> Option<Address> {
        self.get(node).map(|l| l.landmark)
    }

    /// `node`'s registration.
    pub fn get(&self, node: &Address) -> Option<&Location> {
        self.by_node.get(node).map(|(_, l)| l)
    }

    /// How many nodes are registered.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_node.len() == 0
    }
}

/// A source's lookups: what it asked its destinations' homes, and the
/// locations it learned from their answers. Bounded: [`MAX_LOOKUPS`] and
/// [`MAX_LEARNED`].
#[derive(Debug, Default)]
pub struct Lookups {
    asked: HashMap<Address, Asked>,
    /// When each entry of `asked` times out.
    deadlines: BTreeSet<(u64, Address)>,
    /// node → landmark, by when learned (the oldest goes when full).
    learned: OldestFirst<Address, MAX_LEARNED>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// Asked, and messages wait for the answer until then.
    Pending { until: u64 },
    /// Not answered in time: no new lookup until then.
    Unanswered { until: u64 },
}

impl Asked {
    fn until(self) -> u64 {
        match self {
            Asked::Pending { until } | Asked::Unanswered { until } => until,
        }
    }
}

impl Lookups {
    /// The landmark `node` is near, if learned less than
    /// [`LEARNED_TTL_MS`] ago.
    pub fn landmark(&self, node: &Address, now: u64) -> Option<Address> {
        self.learned
            .get(node)
            .filter(|(at, _)| now < at.saturating_add(LEARNED_TTL_MS))
            .map(|(_, l)| *l)
    }

    /// Whether messages for `node` wait for an answer.
    pub fn pending(&self, node: &Address) -> bool {
        matches!(self.asked.get(node), Some(Asked::Pending { .. }))
    }

    /// Whether `node` may be looked up now: nothing is learned of it, no
    /// lookup for it is under way or went unanswered lately, and there is
    /// room.
    pub fn may_start(&self, node: &Address, now: u64) -> bool {
        self.landmark(node, now).is_none()
            && !self.asked.contains_key(node)
            && self.asked.len() < MAX_LOOKUPS
    }

    /// Whether to look `node` up now ([`Self::may_start`]); if so, notes
    /// the lookup as sent.
    pub fn start(&mut self, node: &Address, now: u64) -> bool {
        if !self.may_start(node, now) {
            return false;
        }
        let until = now.saturating_add(LOOKUP_WAIT_MS);
        self.asked.insert(*node, Asked::Pending { until });
        self.deadlines.insert((until, *node));
        true
    }

    /// An answer arrived (its signature already checked): learned if this
    /// node asked for it, pending or not. Returns whether it was learned.
    pub fn answer(&mut self, location: &Location, now: u64) -> bool {
        let node = location.node;
        let Some(asked) = self.asked.remove(&node) else {
            return false;
        };
        self.deadlines.remove(&(asked.until(), node));
        self.learned.insert(node, now, location.landmark);
        true
    }

    /// When [`Self::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Times out lookups due by `now`. Returns the nodes whose messages
    /// waited for an answer and now head for the home.
    pub fn expire(&mut self, now: u64) -> Vec<Address> {
        let mut unanswered = Vec::new();
        while let Some(&(at, node)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match self.asked.get(&node) {
                Some(Asked::Pending { until }) if *until == at => {
                    let until = at.saturating_add(LOOKUP_RETRY_MS);
                    self.asked.insert(node, Asked::Unanswered { until });
                    self.deadlines.insert((until, node));
                    unanswered.push(node);
                }
                Some(Asked::Unanswered { until }) if *until == at => {
                    self.asked.remove(&node);
                }
                _ => {}
            }
        }
        unanswered
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
        assert!(registry.insert(&newer, 1));
        assert!(!registry.insert(&older, 2));
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
            registry.insert(&l, 10 + i);
        }
        assert_eq!(registry.len(), MAX_REGISTRATIONS);
        assert_eq!(
            registry.landmark(&newer.node),
            None,
            "the oldest went first"
        );
    }

    #[test]
    fn a_registry_forgets_by_arrival_not_by_the_time_a_signer_claims() {
        let mut registry = Registry::default();
        let someone = Identity::from_secret_bytes(&[8; 32]).expect("any 32 bytes are a key");
        let registration = |node: Address, issued_ms: u64| {
            let mut l = Location::new(&someone, addr(1), addr(2), issued_ms);
            l.node = node;
            l
        };
        let sybil = |i: u64| {
            let mut a = [0u8; 32];
            a[..8].copy_from_slice(&i.to_le_bytes());
            a[31] = 0xaa;
            Address(a)
        };
        // A flood of registrations claiming to be issued ahead of time...
        let full = MAX_REGISTRATIONS as u64;
        for i in 0..full - 1 {
            registry.insert(&registration(sybil(i), 1_000_000), 100);
        }
        // ...then an honest one, issued now...
        let honest = addr(77);
        assert!(registry.insert(&registration(honest, 200), 200));
        // ...then more of the flood: the flood's oldest go, not the honest one.
        for i in full..full + 10 {
            registry.insert(&registration(sybil(i), 1_000_000), 300);
        }
        assert_eq!(registry.len(), MAX_REGISTRATIONS);
        assert_eq!(registry.landmark(&honest), Some(addr(2)));
    }

    #[test]
    fn a_lookup_waits_then_gives_up_and_learned_locations_age_out() {
        let node = Identity::from_secret_bytes(&[8; 32]).expect("any 32 bytes are a key");
        let location = Location::new(&node, addr(1), addr(2), 5);
        let d = location.node;
        let mut lookups = Lookups::default();
        // An answer nobody asked for teaches nothing.
        assert!(!lookups.answer(&location, 0));
        assert_eq!(lookups.landmark(&d, 0), None);
        // Asked: messages wait, and the same lookup is not sent twice.
        assert!(lookups.start(&d, 1_000));
        assert!(lookups.pending(&d));
        assert!(!lookups.start(&d, 1_001));
        assert_eq!(lookups.next_deadline(), Some(1_000 + LOOKUP_WAIT_MS));
        // No answer in time: the messages go, and no new lookup for a while.
        assert!(lookups.expire(1_000 + LOOKUP_WAIT_MS - 1).is_empty());
        assert_eq!(lookups.expire(1_000 + LOOKUP_WAIT_MS), vec![d]);
        assert!(!lookups.pending(&d));
        assert!(!lookups.start(&d, 2_000 + LOOKUP_WAIT_MS));
        // A late answer is still learned.
        assert!(lookups.answer(&location, 4_000));
        assert_eq!(lookups.landmark(&d, 4_000), Some(addr(2)));
        assert_eq!(lookups.next_deadline(), None, "nothing left to time out");
        assert!(!lookups.start(&d, 5_000), "known: nothing to ask");
        // Learned locations age out, and the node can be asked for again.
        assert_eq!(lookups.landmark(&d, 4_000 + LEARNED_TTL_MS), None);
        assert!(lookups.start(&d, 4_000 + LEARNED_TTL_MS));
    }

    #[test]
    fn lookups_and_learned_locations_are_bounded() {
        let node = Identity::from_secret_bytes(&[9; 32]).expect("any 32 bytes are a key");
        let mut lookups = Lookups::default();
        let nth = |i: usize| {
            let mut a = [0u8; 32];
            a[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Address(a)
        };
        for i in 0..MAX_LOOKUPS {
            assert!(lookups.start(&nth(i), 0));
        }
        assert!(!lookups.start(&nth(MAX_LOOKUPS), 0), "full");
        // Timed-out lookups leave once their retry wait is over.
        assert_eq!(lookups.expire(LOOKUP_WAIT_MS).len(), MAX_LOOKUPS);
        assert!(!lookups.start(&nth(MAX_LOOKUPS), LOOKUP_WAIT_MS));
        assert!(lookups.expire(LOOKUP_WAIT_MS + LOOKUP_RETRY_MS).is_empty());
        // Learned locations: the oldest learned goes first.
        let mut location = Location::new(&node, addr(1), addr(2), 5);
        for i in 0..MAX_LEARNED + 1 {
            location.node = nth(i);
            let now = 100_000 + i as u64;
            assert!(lookups.start(&location.node, now));
            assert!(lookups.answer(&location, now));
        }
        assert_eq!(lookups.landmark(&nth(0), 110_000), None);
        assert_eq!(lookups.landmark(&nth(1), 110_000), Some(addr(2)));
        assert_eq!(lookups.landmark(&nth(MAX_LEARNED), 110_000), Some(addr(2)));
    }
}
