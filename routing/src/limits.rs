//! Bounded duplicate suppression and per-origin rate limits.
//!
//! Both take the time from the caller (milliseconds on the clock messages
//! carry their creation and expiry times in)
//! and hold a bounded number of entries, so a hostile neighbour inventing ids
//! or origins costs memory only up to the bound.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// What a [`SeenCache`] knows of an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// Not seen while its message lived (and now recorded, by `insert`).
    New,
    /// Seen before: held in the cache.
    Seen,
    /// Not held, but created at or before the horizon: it may have been
    /// forgotten for room. Only the durable record can tell (the router asks
    /// its store), and nothing is recorded until it has.
    MaybeForgotten,
}

/// Remembers the ids of messages handled (broadcasts, floods, deliveries)
/// for as long as each message lives, so that a frame recorded and sent
/// again later (a replay) is recognised however late it comes.
///
/// Bounded: at most `capacity` ids. When full, the id seen longest ago is
/// forgotten, and the cache remembers when that id was seen: its
/// *horizon*. A message created at or before the horizon and not in the
/// cache may have been forgotten: [`Sighting::MaybeForgotten`]. The cache
/// is only the fast front of the record the router keeps in its store, so
/// the router asks the store about those; an honest message is never taken
/// for seen because an attacker filled the cache (issue 23, item 8).
#[derive(Debug)]
pub struct SeenCache<K> {
    /// Per id: when it was seen and when its message expires.
    seen: HashMap<K, (u64, u64)>,
    by_seen: BTreeSet<(u64, K)>,
    by_expiry: BTreeSet<(u64, K)>,
    capacity: usize,
    horizon_ms: Option<u64>,
}

impl<K: Clone + Eq + Hash + Ord> SeenCache<K> {
    /// A cache of at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_seen: BTreeSet::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
            horizon_ms: None,
        }
    }

    /// Records `id` of a message created at `created_ms` that expires at
    /// `expires_ms`, seen at `now_ms`, if it is [`Sighting::New`]: not seen
    /// before (while its message lived), and not possibly forgotten
    /// (created after the horizon). A repeated id is not re-recorded.
    pub fn insert(&mut self, id: K, created_ms: u64, expires_ms: u64, now_ms: u64) -> Sighting {
        self.expire(now_ms);
        let sighting = self.check(&id, created_ms);
        if sighting == Sighting::New {
            self.record(id, expires_ms, now_ms);
        }
        sighting
    }

    /// Records `id` whatever the horizon says (the caller knows it is new,
    /// or is loading what it recorded before), forgetting the id seen
    /// longest ago when full.
    pub fn record(&mut self, id: K, expires_ms: u64, now_ms: u64) {
        if expires_ms <= now_ms || self.seen.contains_key(&id) {
            // Nothing to remember: an expired message is refused anyway.
            return;
        }
        while self.seen.len() >= self.capacity {
            let Some((at, old)) = self.by_seen.pop_first() else {
                break;
            };
            if let Some((_, until)) = self.seen.remove(&old) {
                self.by_expiry.remove(&(until, old));
            }
            self.horizon_ms = Some(self.horizon_ms.map_or(at, |h| h.max(at)));
        }
        self.seen.insert(id.clone(), (now_ms, expires_ms));
        self.by_seen.insert((now_ms, id.clone()));
        self.by_expiry.insert((expires_ms, id));
    }

    /// Forgets `id`, as if it was never seen (its message's handling was
    /// undone: a delivery the caller could not keep).
    pub fn forget(&mut self, id: &K) {
        if let Some((at, until)) = self.seen.remove(id) {
            self.by_seen.remove(&(at, id.clone()));
            self.by_expiry.remove(&(until, id.clone()));
        }
    }

    /// What [`SeenCache::insert`] would say of `id` (of a message created
    /// at `created_ms`), without recording it.
    pub fn check(&self, id: &K, created_ms: u64) -> Sighting {
        if self.seen.contains_key(id) {
            Sighting::Seen
        } else if self.horizon_ms.is_some_and(|h| created_ms <= h) {
            Sighting::MaybeForgotten
        } else {
            Sighting::New
        }
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The horizon: messages created at or before it and not held may have
    /// been forgotten. `None` while the cache never had to forget for room.
    pub fn horizon_ms(&self) -> Option<u64> {
        self.horizon_ms
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((until, _)) = self.by_expiry.first() {
            if *until > now_ms {
                break;
            }
            if let Some((_, old)) = self.by_expiry.pop_first()
                && let Some((at, _)) = self.seen.remove(&old)
            {
                self.by_seen.remove(&(at, old));
            }
        }
    }
}

/// Token buckets per origin: each origin may send `burst` at once and then
/// one every `interval_ms`. Tracks at most `max_origins`; when full, the
/// origin idle longest is forgotten (it starts again with a full bucket, so
/// forgetting never blocks anyone wrongly, and a flood of new origins is the
/// per-neighbour budget's job, not this one's).
#[derive(Debug)]
pub struct RateLimiter<O> {
    buckets: HashMap<O, Bucket>,
    burst: u32,
    interval_ms: u64,
    max_origins: usize,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    /// When the bucket last gained a token (or was created).
    refilled_ms: u64,
}

impl<O: Clone + Eq + Hash> RateLimiter<O> {
    /// `burst` frames at once (at least 1), then one per `interval_ms`.
    pub fn new(burst: u32, interval_ms: u64, max_origins: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            burst: burst.max(1),
            interval_ms: interval_ms.max(1),
            max_origins: max_origins.max(1),
        }
    }

    /// The default for SOS: 3 at once, then one every 20 s per origin.
    pub fn for_sos() -> Self {
        Self::new(3, 20_000, 10_000)
    }

    /// Whether `origin` may send now; takes a token if so.
    pub fn allow(&mut self, origin: &O, now_ms: u64) -> bool {
        if !self.buckets.contains_key(origin) && self.buckets.len() >= self.max_origins {
            let idlest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.refilled_ms)
                .map(|(o, _)| o.clone());
            if let Some(o) = idlest {
                self.buckets.remove(&o);
            }
        }
        let (burst, interval) = (self.burst, self.interval_ms);
        let bucket = self.buckets.entry(origin.clone()).or_insert(Bucket {
            tokens: burst,
            refilled_ms: now_ms,
        });
        let earned = now_ms.saturating_sub(bucket.refilled_ms) / interval;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            bucket.tokens = bucket.tokens.saturating_add(earned).min(burst);
            bucket.refilled_ms = bucket
                .refilled_ms
                .saturating_add(u64::from(earned).saturating_mul(interval));
        }
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_remembered_until_its_message_expires() {
        let mut seen = SeenCache::new(100);
        // Created at 0, lives a day.
        assert_eq!(Sighting::New, seen.insert("a", 0, 86_400_000, 0));
        assert_eq!(Sighting::Seen, seen.insert("a", 0, 86_400_000, 1));
        assert_eq!(
            Sighting::Seen,
            seen.insert("a", 0, 86_400_000, 86_399_999),
            "a replay within the message's life is caught, however late"
        );
        assert_eq!(seen.len(), 1);
        assert_eq!(Sighting::New, seen.insert("b", 100, 200, 150));
        assert_eq!(Sighting::Seen, seen.insert("b", 100, 200, 199));
        // Once the message expired its id is dropped (the router refuses
        // expired messages before it asks).
        assert_eq!(Sighting::New, seen.insert("c", 300, 400, 300));
        assert_eq!(seen.len(), 2, "b is gone at 300");
    }

    #[test]
    fn the_cache_is_bounded_and_says_what_it_may_have_forgotten() {
        let mut seen = SeenCache::new(3);
        for id in 0..10u64 {
            // Created at id, seen at id + 1.
            assert_eq!(Sighting::New, seen.insert(id, id, u64::MAX, id + 1));
        }
        assert_eq!(seen.len(), 3);
        // 0..=6 were forgotten for room; the last of them was seen at 7.
        assert_eq!(seen.horizon_ms(), Some(7));
        assert_eq!(Sighting::Seen, seen.insert(9, 9, u64::MAX, 20), "held");
        assert_eq!(
            Sighting::MaybeForgotten,
            seen.insert(0, 0, u64::MAX, 20),
            "forgotten, but created before the horizon: may be a replay"
        );
        assert_eq!(
            Sighting::MaybeForgotten,
            seen.insert(50, 5, u64::MAX, 20),
            "never seen, but only the store can tell"
        );
        assert_eq!(seen.len(), 3, "neither is recorded until the store told");
        seen.record(50, u64::MAX, 20);
        assert_eq!(Sighting::Seen, seen.check(&50, 5));
        assert_eq!(
            Sighting::New,
            seen.insert(100, 20, u64::MAX, 20),
            "a new message is new"
        );
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn an_expired_message_is_not_remembered() {
        let mut seen = SeenCache::new(3);
        assert_eq!(Sighting::New, seen.insert(1u8, 0, 10, 10));
        assert!(seen.is_empty());
    }

    #[test]
    fn an_origin_gets_its_burst_then_one_per_interval() {
        let mut limit = RateLimiter::new(3, 20_000, 10);
        let allowed: Vec<bool> = (0..5).map(|i| limit.allow(&"sos-origin", i)).collect();
        assert_eq!(allowed, vec![true, true, true, false, false]);
        assert!(!limit.allow(&"sos-origin", 19_999));
        assert!(limit.allow(&"sos-origin", 20_000));
        assert!(!limit.allow(&"sos-origin", 20_001));
        // Another origin is not affected.
        assert!(limit.allow(&"someone-else", 20_001));
    }

    #[test]
    fn a_flooder_at_a_hundred_times_the_rate_gets_through_at_the_rate() {
        let mut limit = RateLimiter::for_sos();
        // 100 times the allowed rate (3 per minute) for ten minutes.
        let sent: u32 = 300 * 10;
        let passed = (0..sent)
            .filter(|i| limit.allow(&"flooder", u64::from(*i) * 200))
            .count();
        // Burst of 3, then one per 20 s over 600 s: about 33.
        assert!((30..=34).contains(&passed), "{passed} got through");
    }

    #[test]
    fn tracked_origins_are_bounded() {
        let mut limit = RateLimiter::new(1, 1_000, 5);
        for origin in 0..1_000u32 {
            assert!(limit.allow(&origin, u64::from(origin)));
        }
        assert!(limit.buckets.len() <= 5);
    }
}
