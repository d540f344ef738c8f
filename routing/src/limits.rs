//! Bounded duplicate suppression and per-origin rate limits.
//!
//! Both take the time from the caller (milliseconds on any monotonic clock)
//! and hold a bounded number of entries, so a hostile neighbour inventing ids
//! or origins costs memory only up to the bound.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Remembers recently seen ids (frames, broadcasts, message ids) so each is
/// handled once. Bounded: at most `capacity` ids, each for at most `ttl_ms`;
/// when full, the oldest is forgotten first.
#[derive(Debug)]
pub struct SeenCache<K> {
    seen: HashMap<K, u64>,
    order: VecDeque<(u64, K)>,
    capacity: usize,
    ttl_ms: u64,
}

impl<K: Clone + Eq + Hash> SeenCache<K> {
    /// A cache of at most `capacity` ids (at least 1), each kept `ttl_ms`.
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl_ms,
        }
    }

    /// Records `id` at `now_ms`; `true` if it was not seen (within the ttl and
    /// the bound) before. A repeated id is not re-recorded.
    pub fn insert(&mut self, id: K, now_ms: u64) -> bool {
        self.expire(now_ms);
        if self.seen.contains_key(&id) {
            return false;
        }
        while self.seen.len() >= self.capacity {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.seen.remove(&old);
                }
                None => break,
            }
        }
        self.seen.insert(id.clone(), now_ms);
        self.order.push_back((now_ms, id));
        true
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) < self.ttl_ms {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
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
    fn duplicates_are_caught_until_they_expire() {
        let mut seen = SeenCache::new(100, 1_000);
        assert!(seen.insert("a", 0));
        assert!(!seen.insert("a", 999));
        assert!(seen.insert("a", 1_000), "expired ids are new again");
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let mut seen = SeenCache::new(3, u64::MAX);
        for id in 0..10u32 {
            assert!(seen.insert(id, u64::from(id)));
        }
        assert_eq!(seen.len(), 3);
        assert!(!seen.insert(9, 10));
        assert!(seen.insert(0, 10), "the oldest was forgotten");
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
