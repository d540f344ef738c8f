//! Bulk (P3) pacing on one link: bulk yields to everything else, below the
//! router too.
//!
//! The router's strict priority puts an SOS ahead of bulk in its own queue,
//! but not ahead of bulk it already handed down: into the daemon's writer,
//! the transport's buffers, the kernel's socket buffer and the qdisc of a
//! loaded radio hop. An SOS waits out whatever bulk sits there. So bulk is
//! paced per neighbour below what the link carries, by a delay-based
//! controller in the spirit of LEDBAT (RFC 6817), with a per-hop target of
//! a few milliseconds instead of LEDBAT's 100: this node owns both ends of
//! the hop and measures its queueing delay directly.
//!
//! - **Measuring.** While bulk flows to a neighbour, the router sends it a
//!   probe every [`PaceConfig::probe_interval_us`] (a timestamp in an otherwise
//!   empty routing control frame, class P0); the neighbour echoes it at
//!   once, also as P0, with the time it received it by its own clock. The
//!   probe crosses every buffer below both routers, so its one-way time
//!   minus the smallest one seen lately (the base, which also cancels the
//!   two clocks' offset) is the queueing delay towards the neighbour, the
//!   direction bulk is paced in, whatever waits the other way. (An echo
//!   without the receive time falls back to the round trip.)
//! - **Control.** Below the target the rate grows: doubling per sample
//!   until the first queue is seen (slow start), then in proportion to how
//!   far below the target the delay is, but by at most 1% per sample above
//!   the capacity last measured (a token bucket in front of a link hides
//!   a pace above its rate until the bucket is spent). Above the target
//!   the rate shrinks in proportion to the excess, at most halving per
//!   sample; once the hop's delivery rate is known, it goes below it
//!   while a queue stands (when that rate is forgotten: see the cruising
//!   below).
//!   Only a queue bulk added to (bulk went since the previous probe)
//!   shrinks it. The rate grows only while bulk actually waited for it, so
//!   a link that carried little does not keep a rate it never tried; it
//!   starts high, so that a short bulk message is not held back.
//! - **Cruising below the link.** Once the hop's capacity is measured
//!   (what it delivered while a queue stood and bulk kept up with the
//!   pace), bulk goes at 90% of it (`CRUISE`): a pace at the capacity
//!   keeps the queue at the target, and every SOS would wait it out on
//!   every hop. The pace grows no higher than a little above what bulk
//!   actually used, so a pace bulk left unused (between messages) does not
//!   drift above the link; and without a capacity measured, a pace that
//!   built a long queue is not gone back to. More is probed for only when
//!   bulk waited for the link at every probe for 5 s (`HELD_PROBE_US`), or
//!   after 30 s without a new measurement (`DELIVERY_FRESH_US`).
//! - **Never starving.** The rate has a floor ([`MIN_RATE`]), and on a
//!   link with nothing else bulk gets about 90% of what the link carries,
//!   probing above it every 5 s.
//! - **Old neighbours.** A neighbour that never echoes (a node from before
//!   this) leaves bulk unpaced, as it was.
//!
//! Time is the router's, in microseconds (a clock its caller gives it, or
//! its milliseconds): a hop's queue on a fast link lasts well under a
//! millisecond, and a clock that reads it as 0 or 1 cannot keep it short.
//! Sans-IO like the rest of it.

use std::collections::VecDeque;

/// Lowest pace, in bytes per millisecond (8 kbit/s): bulk always moves.
pub const MIN_RATE: f64 = 1.0;
/// Highest pace, in bytes per millisecond (8 Gbit/s).
pub const MAX_RATE: f64 = 1_000_000.0;
/// The pace bulk starts at, in bytes per millisecond (8 Mbit/s): high, so
/// that a short bulk message on a link that rarely carries any is not held
/// back; the first queue measured brings it down to what the link carries.
const START_RATE: f64 = 1000.0;
/// How long each minimum of the base delay history covers, in µs.
const BASE_SLOT_US: u64 = 30_000_000;
/// Minima kept: the base is the smallest round trip of the last 2 minutes.
const BASE_SLOTS: usize = 4;
/// Probes in flight at most: no more is sent until one is echoed or given
/// up (links are FIFO, so a probe older than one echoed was lost).
const MAX_OUTSTANDING: usize = 16;
/// A probe out this long (µs) is given up as lost.
const PROBE_LOST_US: u64 = 10_000_000;
/// Bulk that may go at once, in ms at the pace: a driver woken a few ms
/// late (a busy daemon) still keeps the link busy.
const BURST_MS: f64 = 4.0;
/// Delivery samples kept for the capacity estimate.
const DELIVERY_SAMPLES: usize = 8;
/// The share of the capacity measured that bulk is paced at: a pace at
/// the capacity keeps a queue standing at the target, and every SOS waits
/// it out on every hop; just below it, the queue drains and bulk still
/// gets nearly all of the link.
const CRUISE: f64 = 0.9;
/// Above [`START_RATE`], the pace grows to at most this many times what
/// bulk actually sent since the previous sample: a pace that bulk did not
/// use (between messages, or behind a slower hop) shows nothing of the
/// link, and a pace grown there far above the link's rate sends the next
/// message into a queue. Up to [`START_RATE`] it grows as before: a link
/// that carries a short bulk message now and then would otherwise keep a
/// pace cut once for good (`ci-1000.toml`: bulk p99 4.6 s instead of 2.2).
const USED_HEADROOM: f64 = 1.1;
/// Bulk that went out at this share of the pace or more, between two
/// probes, kept up with the pace: only then does what the link delivered
/// measure the link and not the sender.
const KEPT_UP: f64 = 0.8;
/// A capacity estimate without a new sample for this long (µs) is
/// forgotten: one taken while the link was slower would otherwise hold the
/// pace under what the link carries for good, since cruising below it
/// shows no queue and so takes no new sample.
const DELIVERY_FRESH_US: u64 = 30_000_000;
/// Bulk waiting for the link at every probe for this long (µs) wants more
/// of it: the capacity is forgotten sooner, and the pace probes above it.
/// While the pace carries all the bulk there is (a load the link carries,
/// with breaks), more is not probed for, and no queue is built to find it.
const HELD_PROBE_US: u64 = 5_000_000;
/// Growth per sample, at most, of a pace above the capacity last measured.
const ABOVE_SEEN_GAIN: f64 = 0.01;
/// A pace this many times the capacity last measured, reached without a
/// queue, shows the link carries more: that capacity is forgotten.
const ABOVE_SEEN: f64 = 1.5;
/// Bulk sent within this long (µs) keeps the probes going.
const ACTIVE_US: u64 = 1_000_000;

/// The pacing settings (the router's [`Config`](crate::router::Config)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaceConfig {
    /// Queueing delay aimed at per hop, in µs; 0 turns pacing off.
    pub target_us: u64,
    /// Time between probes while bulk flows, in µs.
    pub probe_interval_us: u64,
    /// Bytes of bulk that may go out at once.
    pub burst_bytes: usize,
}

/// The pacer of one link. Every time it takes or gives is in µs.
#[derive(Clone, Debug)]
pub struct Pacer {
    config: PaceConfig,
    /// Bytes per ms.
    rate: f64,
    /// Bytes that may go now (negative: owed).
    tokens: f64,
    refilled_us: u64,
    /// Slow start: until the first queue is seen.
    starting: bool,
    /// Smallest round trip per slot, newest last, with the slot's start.
    base: Vec<(u64, i64)>,
    /// Smallest one-way time (the neighbour's receive time minus our send
    /// time: the clocks' offset included) per slot, likewise.
    base_fwd: Vec<(u64, i64)>,
    /// Probes in flight: when each was sent and the bulk bytes sent by
    /// then, oldest first.
    outstanding: VecDeque<(u64, u64)>,
    /// Bulk bytes sent on the link so far.
    sent_total: u64,
    /// When the pace was last adjusted, and `sent_total` then.
    adjusted: (u64, u64),
    /// Since when bulk has been waiting for the link at every probe.
    held_since: Option<u64>,
    /// The lowest pace at which a long queue stood lately, without a
    /// capacity measured and outside slow start (a queue that came and
    /// went between two probes, as a burst from the hop before leaves
    /// it), and when: the pace grows to no more than [`CRUISE`] times it
    /// for [`DELIVERY_FRESH_US`].
    queued_at: Option<(f64, u64)>,
    /// The latest echo: when it came, the bulk bytes sent before its probe,
    /// the delay it measured, and when its probe was sent.
    last_echo: Option<(u64, u64, u64, u64)>,
    /// What the link delivered while a queue stood (bytes per ms), the
    /// newest samples: see [`Pacer::capacity`].
    delivered: VecDeque<f64>,
    /// When the newest of them was taken.
    delivered_us: u64,
    /// The capacity last measured, kept past [`DELIVERY_FRESH_US`]: the
    /// pace grows above it only slowly.
    seen_capacity: Option<f64>,
    next_probe_us: u64,
    /// The latest echo's delay, or the lateness of a probe the rate shrank
    /// for since.
    late_us: u64,
    /// Whether the neighbour ever echoed: pacing applies only then.
    echoing: bool,
    last_bulk_us: Option<u64>,
    /// Bulk waited for tokens since the last sample.
    limited: bool,
    /// Bulk was refused and waits for [`Pacer::wake_at`].
    blocked: bool,
    /// The latest queueing delay measured.
    delay_us: Option<u64>,
}

impl Pacer {
    /// A pacer for a link that came up at `now`.
    pub fn new(config: PaceConfig, now: u64) -> Self {
        Self {
            config,
            rate: START_RATE,
            tokens: config.burst_bytes as f64,
            refilled_us: now,
            starting: true,
            base: Vec::new(),
            base_fwd: Vec::new(),
            outstanding: VecDeque::new(),
            sent_total: 0,
            adjusted: (now, 0),
            held_since: None,
            queued_at: None,
            last_echo: None,
            delivered: VecDeque::new(),
            delivered_us: 0,
            seen_capacity: None,
            next_probe_us: now,
            late_us: 0,
            echoing: false,
            last_bulk_us: None,
            limited: false,
            blocked: false,
            delay_us: None,
        }
    }

    fn enabled(&self) -> bool {
        self.config.target_us > 0
    }

    /// Whether bulk is held to the pace (the neighbour echoes probes).
    pub fn pacing(&self) -> bool {
        self.enabled() && self.echoing
    }

    /// The pace, in bytes per second.
    pub fn rate_bytes_per_s(&self) -> u64 {
        (self.rate * 1000.0) as u64
    }

    /// The latest queueing delay measured on the hop, in µs.
    pub fn delay_us(&self) -> Option<u64> {
        self.delay_us
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.refilled_us);
        self.refilled_us = self.refilled_us.max(now);
        let burst = (self.config.burst_bytes as f64).max(self.rate * BURST_MS);
        self.tokens = (self.tokens + self.rate * elapsed as f64 / 1000.0).min(burst);
    }

    /// Whether a bulk fragment may go at `now`. A refusal counts as bulk
    /// having waited (the rate may then grow).
    pub fn allow_bulk(&mut self, now: u64) -> bool {
        if !self.pacing() {
            return true;
        }
        self.refill(now);
        if self.tokens > 0.0 {
            return true;
        }
        self.limited = true;
        self.blocked = true;
        false
    }

    /// A bulk fragment of `bytes` went out at `now`.
    pub fn sent_bulk(&mut self, now: u64, bytes: usize) {
        self.last_bulk_us = Some(now);
        self.sent_total = self.sent_total.saturating_add(bytes as u64);
        if self.pacing() {
            self.refill(now);
            self.tokens -= bytes as f64;
        }
    }

    /// When bulk that is waiting may go next (`None`: now, or unpaced).
    pub fn bulk_ready_at(&self) -> Option<u64> {
        if !self.pacing() || self.tokens > 0.0 {
            return None;
        }
        let wait = (-self.tokens * 1000.0 / self.rate).ceil().max(1.0) as u64;
        Some(self.refilled_us.saturating_add(wait))
    }

    /// When bulk refused by the pace may go: the time to wake the
    /// driver for it (`None`: nothing was refused).
    pub fn wake_at(&self) -> Option<u64> {
        if !self.blocked {
            return None;
        }
        Some(self.bulk_ready_at().unwrap_or(self.refilled_us))
    }

    /// Whether bulk refused by the pace may go by `now`; then the driver
    /// is to be told once (and not again until bulk is refused again).
    pub fn take_wake(&mut self, now: u64) -> bool {
        if self.wake_at().is_some_and(|t| t <= now) {
            self.blocked = false;
            return true;
        }
        false
    }

    /// Whether bulk was refused and waits for [`Pacer::wake_at`].
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    fn active(&self, now: u64, bulk_waiting: bool) -> bool {
        self.enabled()
            && (bulk_waiting
                || self
                    .last_bulk_us
                    .is_some_and(|t| now.saturating_sub(t) < ACTIVE_US))
    }

    /// When the next probe is due, if bulk flows.
    pub fn probe_due(&self, now: u64, bulk_waiting: bool) -> Option<u64> {
        self.active(now, bulk_waiting).then_some(self.next_probe_us)
    }

    fn base_us(&self) -> Option<u64> {
        let min = self.base.iter().map(|(_, m)| *m).min()?;
        u64::try_from(min).ok()
    }

    /// A probe to send at `now`, if one is due: its timestamp. A probe
    /// still out by then, long after the base round trip, is a sample too:
    /// the queue is at least that long, and the rate shrinks without
    /// waiting for an echo stuck behind it.
    pub fn poll_probe(&mut self, now: u64, bulk_waiting: bool) -> Option<u64> {
        if self.probe_due(now, bulk_waiting)? > now {
            return None;
        }
        while self
            .outstanding
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > PROBE_LOST_US)
        {
            self.outstanding.pop_front();
        }
        if let (Some(&(oldest, before)), Some(base)) = (self.outstanding.front(), self.base_us())
            && self.sent_total > before
        {
            // Late by more than twice the last delay seen or lateness acted
            // on: the queue keeps growing, so the pace is still too high.
            let late = now.saturating_sub(oldest).saturating_sub(base);
            if self.pacing() && late > 2 * self.config.target_us && late > 2 * self.late_us {
                self.late_us = late;
                self.delay_us = Some(late);
                self.starting = false;
                self.rate = (self.rate * 0.5).max(MIN_RATE);
            }
        }
        self.next_probe_us = now.saturating_add(self.config.probe_interval_us.max(1));
        if bulk_waiting {
            self.held_since.get_or_insert(now);
        } else {
            self.held_since = None;
        }
        if self.outstanding.len() >= MAX_OUTSTANDING {
            return None;
        }
        self.outstanding.push_back((now, self.sent_total));
        Some(now)
    }

    /// The echo of the probe sent at `sent` came back at `now`, with the
    /// time the neighbour received it by its clock (µs). An echo of a
    /// probe not in flight (given up, or made up) is ignored.
    pub fn handle_echo(&mut self, now: u64, sent: u64, received: Option<u64>) {
        let Some(at) = self.outstanding.iter().position(|(t, _)| *t == sent) else {
            return;
        };
        if now < sent {
            return;
        }
        let bytes = self.outstanding[at].1;
        // Links are FIFO: the ones sent before it were lost.
        self.outstanding.drain(..=at);
        self.echoing = true;
        let rtt = i64::try_from(now - sent).unwrap_or(i64::MAX);
        let round_trip_delay = Self::note_base(&mut self.base, now, rtt);
        let delay = match received {
            Some(at) => {
                let one_way = (at as i64).wrapping_sub(sent as i64);
                Self::note_base(&mut self.base_fwd, now, one_way)
            }
            None => round_trip_delay,
        };
        // With a queue standing at both echoes, the link was busy between
        // them: the bulk sent between the two probes crossed it in the
        // time between the echoes. Unless the echoes came much closer
        // together than their probes left: then something held both (a
        // neighbour, or a driver at either end that fell behind and
        // handled them at once), and their gap says nothing of the link.
        // And only if bulk kept up with the pace between the probes:
        // otherwise the sender, not the link, set what was delivered.
        if let Some((then, before, was, then_sent)) = self.last_echo
            && self.queued(was)
            && self.queued(delay)
            && now > then
            && bytes > before
            && (now - then).saturating_mul(4) >= sent.saturating_sub(then_sent)
            && self.kept_up(bytes - before, sent.saturating_sub(then_sent))
        {
            let delivered = ((bytes - before) as f64 * 1000.0 / (now - then) as f64).min(MAX_RATE);
            // Bulk paced below the link sends at its pace, and a delay
            // read as a short queue (jitter) would then measure the pace:
            // each such sample would bring the pace lower still. Only a
            // queue over the target shows a link slower than believed.
            let long = was > self.config.target_us && delay > self.config.target_us;
            if long || self.capacity().is_none_or(|c| delivered >= c) {
                if self.delivered.len() >= DELIVERY_SAMPLES {
                    self.delivered.pop_front();
                }
                self.delivered.push_back(delivered);
                self.delivered_us = now;
                // Kept past `DELIVERY_FRESH_US`: the pace grows above it
                // only slowly.
                self.seen_capacity = self.capacity();
            }
        }
        let held = self
            .held_since
            .is_some_and(|t| now.saturating_sub(t.max(self.delivered_us)) > HELD_PROBE_US);
        if held || now.saturating_sub(self.delivered_us) > DELIVERY_FRESH_US {
            self.delivered.clear();
        }
        if held
            || self
                .queued_at
                .is_some_and(|(_, t)| now.saturating_sub(t) > DELIVERY_FRESH_US)
        {
            self.queued_at = None;
        }
        // Whether bulk went between the previous probe and this one: only
        // then is a queue partly bulk's doing. A queue of other classes
        // (or of the other direction) is no reason to hold bulk back
        // further, and on a link that carries bulk only now and then,
        // shrinking for it left the next bulk message a trickle.
        let ours = bytes > self.last_echo.map_or(0, |(_, before, _, _)| before);
        self.last_echo = Some((now, bytes, delay, sent));
        self.late_us = delay;
        self.delay_us = Some(delay);
        if ours || delay <= self.config.target_us {
            self.adjust(now, delay);
        }
    }

    /// Whether `bytes` of bulk sent over `us` kept up with the pace.
    fn kept_up(&self, bytes: u64, us: u64) -> bool {
        us > 0 && bytes as f64 * 1000.0 >= KEPT_UP * self.rate * us as f64
    }

    /// Whether a delay shows a queue standing, not a clock's or a busy
    /// daemon's jitter: half the target or more.
    fn queued(&self, delay: u64) -> bool {
        delay.saturating_mul(2) >= self.config.target_us
    }

    /// What the link carries, as far as the latest samples tell (bytes
    /// per ms): the more of the two newest deliveries while a queue stood
    /// (a link that slows down shows it in the next sample).
    fn capacity(&self) -> Option<f64> {
        self.delivered
            .iter()
            .rev()
            .take(2)
            .copied()
            .reduce(f64::max)
    }

    /// Notes `value` in a base history; returns how far above the
    /// history's minimum it is.
    fn note_base(base: &mut Vec<(u64, i64)>, now: u64, value: i64) -> u64 {
        match base.last_mut() {
            Some((start, min)) if now.saturating_sub(*start) < BASE_SLOT_US => {
                *min = (*min).min(value);
            }
            _ => {
                base.push((now, value));
                if base.len() > BASE_SLOTS {
                    base.remove(0);
                }
            }
        }
        let min = base.iter().map(|(_, m)| *m).min().unwrap_or(value);
        u64::try_from(value.saturating_sub(min)).unwrap_or(0)
    }

    fn adjust(&mut self, now: u64, delay: u64) {
        let (then, sent_then) = self.adjusted;
        let used = self.sent_total.saturating_sub(sent_then);
        let took = now.saturating_sub(then);
        self.adjusted = (now, self.sent_total);
        let target = self.config.target_us as f64;
        let off = (target - delay as f64) / target;
        if off > 0.0 {
            if self.limited {
                // Past slow start, one probe interval at the new rate may
                // add at most the target to the queue.
                let step = target / self.config.probe_interval_us.max(1) as f64;
                let gain = if self.starting {
                    1.0
                } else {
                    (0.25 * off).min(step)
                };
                // Above what the link was last seen to carry, slowly: a
                // link behind a token bucket (a traffic shaper, `tc`'s
                // tbf) shows no queue for a while at a pace above its
                // rate, and the queue it then shows is the longer the
                // faster the pace grew meanwhile. Half again above it
                // without a queue, the link carries more: forget it.
                let gain = match self.seen_capacity {
                    Some(seen) if self.rate >= ABOVE_SEEN * seen => {
                        self.seen_capacity = None;
                        gain
                    }
                    Some(seen) if self.rate * (1.0 + gain) > seen => {
                        gain.min(ABOVE_SEEN_GAIN).max(seen / self.rate - 1.0)
                    }
                    _ => gain,
                };
                let before = self.rate;
                self.rate *= 1.0 + gain;
                if !self.starting {
                    // Above the pace a quiet link starts at, no higher
                    // than bulk could use.
                    let used = used as f64 * 1000.0 / took.max(1) as f64;
                    let most = before.max(used * USED_HEADROOM).max(START_RATE);
                    self.rate = self.rate.min(most);
                }
                // Not back up to a pace that built a long queue lately.
                if let Some((at, _)) = self.queued_at {
                    self.rate = self.rate.min(before.max(at * CRUISE));
                }
                // Far below what the link was seen to carry (after a long
                // queue drained): back to half of it at once.
                if let Some(capacity) = self.capacity() {
                    self.rate = self.rate.max(capacity * 0.5);
                }
            }
        } else {
            if !self.starting && self.capacity().is_none() && delay > 2 * self.config.target_us {
                let at = self
                    .queued_at
                    .map_or(self.rate, |(at, _)| at.min(self.rate));
                self.queued_at = Some((at, now));
            }
            self.starting = false;
            // Known capacity: below it, by more while a long queue drains
            // (it drains at the difference; the cruise cap below keeps it
            // under the capacity otherwise). Unknown: halve at most.
            self.rate = match self.capacity() {
                Some(capacity) if delay > 8 * self.config.target_us => {
                    self.rate.min(capacity * 0.5)
                }
                Some(capacity) if delay > 2 * self.config.target_us => {
                    self.rate.min(capacity * 0.8)
                }
                _ => self.rate * (1.0 + 0.25 * off).max(0.5),
            };
        }
        if self.queued(delay) {
            self.starting = false;
        }
        // Below what the link carries, so that no queue stands.
        if let Some(capacity) = self.capacity() {
            self.rate = self.rate.min(capacity * CRUISE);
        }
        // Never far below what the link was seen to carry.
        let floor = self.capacity().map_or(MIN_RATE, |c| c * 0.25);
        self.rate = self.rate.max(floor).clamp(MIN_RATE, MAX_RATE);
        self.limited = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: PaceConfig = PaceConfig {
        target_us: 2_000,
        probe_interval_us: 50_000,
        burst_bytes: 768,
    };
    /// A millisecond, in the pacer's µs.
    const MS: u64 = 1000;

    /// A bottleneck of `capacity` bytes per ms behind the pacer: a FIFO
    /// the probes cross too. Runs `ms` milliseconds of a sender that always
    /// has bulk, a step per ms; returns the bytes delivered and the
    /// largest queue (ms).
    fn run(p: &mut Pacer, capacity: f64, start: u64, ms: u64) -> (f64, f64) {
        run_in_steps(p, capacity, start, ms, MS)
    }

    /// [`run`] in steps of `step` µs: a driver woken that often, with a
    /// clock that fine.
    fn run_in_steps(p: &mut Pacer, capacity: f64, start: u64, ms: u64, step: u64) -> (f64, f64) {
        let mut queue = 0.0f64; // bytes in the bottleneck
        let mut probes: Vec<(u64, f64)> = Vec::new(); // (sent, bytes ahead)
        let (mut delivered, mut worst) = (0.0, 0.0f64);
        let per_step = capacity * step as f64 / MS as f64;
        for now in (start * MS..(start + ms) * MS).step_by(step as usize) {
            // Unpaced (before the first echo), as fast as the sender can.
            let mut sent = 0.0;
            while sent < 4.0 * per_step && p.allow_bulk(now) {
                p.sent_bulk(now, 384);
                queue += 384.0;
                sent += 384.0;
            }
            if let Some(t) = p.poll_probe(now, true) {
                probes.push((t, queue));
            }
            let out = queue.min(per_step);
            queue -= out;
            delivered += out;
            for probe in &mut probes {
                probe.1 -= per_step;
            }
            // An echo returns 1 ms after its probe leaves the queue.
            let (done, wait): (Vec<_>, Vec<_>) =
                probes.iter().partition(|(_, ahead)| *ahead <= 0.0);
            probes = wait;
            for (sent, _) in done {
                p.handle_echo(now + MS, sent, None);
            }
            worst = worst.max(queue / capacity);
        }
        (delivered, worst)
    }

    /// Two echoes that come together (a neighbour that holds them, or a
    /// driver at either end that fell behind and handles both at once)
    /// once read as a link that delivered all the bulk between their
    /// probes within a microsecond: a "capacity" so large that the pace's
    /// floor passed its ceiling, and the clamp between them panicked. A
    /// relay died of it under load (line_latency, 2026-12-07). Such a pair
    /// measures nothing of the link: the pace stays what it was.
    #[test]
    fn echoes_that_come_together_neither_panic_nor_read_as_capacity() {
        let mut p = Pacer::new(CONFIG, 0);
        let capacity = 2500.0; // 20 Mbit/s
        let _ = run(&mut p, capacity, 0, 3_000);
        let before = p.rate_bytes_per_s();
        assert!(before > 0 && before < 3_000_000, "{before}");
        // Probes 50 ms apart with 125 KB of bulk between them; both
        // echoes, each showing a long queue, arrive 1 µs apart.
        let mut now = 3_000 * MS;
        let first = p.poll_probe(now, true).expect("a probe is due");
        for _ in 0..325 {
            p.sent_bulk(now, 384);
        }
        now += 50 * MS;
        let second = p.poll_probe(now, true).expect("a probe is due");
        now += 200 * MS;
        p.handle_echo(now, first, None);
        p.handle_echo(now + 1, second, None);
        let after = p.rate_bytes_per_s();
        assert!(after <= before, "{before} B/s before, {after} after");
    }

    /// With a clock in µs the target may be a fraction of a millisecond:
    /// the queue stays that short, and bulk still fills the link.
    #[test]
    fn a_target_under_a_millisecond_keeps_the_queue_that_short() {
        let config = PaceConfig {
            target_us: 500,
            ..CONFIG
        };
        let mut p = Pacer::new(config, 0);
        let capacity = 2500.0; // 20 Mbit/s
        let _ = run_in_steps(&mut p, capacity, 0, 3_000, 100);
        let (delivered, worst) = run_in_steps(&mut p, capacity, 3_000, 10_000, 100);
        let share = delivered / (capacity * 10_000.0);
        assert!(share > 0.8, "bulk got {share:.2} of the link");
        assert!(worst < 2.0, "a queue of {worst:.2} ms built up");
    }

    #[test]
    fn bulk_settles_near_the_link_rate_with_a_short_queue() {
        let mut p = Pacer::new(CONFIG, 0);
        // The neighbour answers: pacing starts with its first echo.
        assert!(p.allow_bulk(0));
        let capacity = 2500.0; // 20 Mbit/s
        let _ = run(&mut p, capacity, 0, 3_000);
        let (delivered, worst) = run(&mut p, capacity, 3_000, 10_000);
        let share = delivered / (capacity * 10_000.0);
        assert!(share > 0.8, "bulk got {share:.2} of the link");
        assert!(worst < 8.0, "a queue of {worst:.1} ms built up");
    }

    /// The radio falls back to a tenth of its rate, then comes back: what
    /// the link carried while slow is not held against it.
    #[test]
    fn the_pace_follows_a_link_that_slows_down_and_speeds_up_again() {
        let mut p = Pacer::new(CONFIG, 0);
        let _ = run(&mut p, 2500.0, 0, 3_000);
        let mut start = 3_000;
        for (capacity, settle, longest) in [(250.0, 3_000, 20.0), (2500.0, 10_000, 8.0)] {
            let _ = run(&mut p, capacity, start, settle);
            let (delivered, worst) = run(&mut p, capacity, start + settle, 10_000);
            start += settle + 10_000;
            let share = delivered / (capacity * 10_000.0);
            assert!(
                share > 0.7,
                "at {capacity} B/ms bulk got {share:.2} of the link"
            );
            assert!(
                worst < longest,
                "at {capacity} B/ms a queue of {worst:.1} ms built up"
            );
        }
    }

    #[test]
    fn a_neighbour_that_never_echoes_leaves_bulk_unpaced() {
        let mut p = Pacer::new(CONFIG, 0);
        for now in 0..100 {
            assert!(p.allow_bulk(now * MS));
            p.sent_bulk(now * MS, 100_000);
        }
        assert_eq!(p.bulk_ready_at(), None);
        // Probes keep going while bulk flows, one at a time.
        assert_eq!(p.poll_probe(0, true), Some(0));
        assert_eq!(p.poll_probe(10 * MS, true), None);
        assert_eq!(p.probe_due(10 * MS, true), Some(50 * MS));
        assert_eq!(p.poll_probe(50 * MS, true), Some(50 * MS));
        // An echo of a probe never sent is ignored.
        p.handle_echo(101 * MS, 7 * MS, None);
        assert!(!p.pacing());
    }

    /// A queue that bulk did not add to (other classes, the other
    /// direction) does not shrink the pace: on a link that carries bulk
    /// now and then, that left the next bulk message a trickle
    /// (`ci-1000.toml`: bulk p50 2 s instead of 0.17).
    #[test]
    fn a_queue_bulk_did_not_add_to_leaves_the_pace_alone() {
        let mut p = Pacer::new(CONFIG, 0);
        p.sent_bulk(0, 384);
        let sent = p.poll_probe(0, true).unwrap();
        p.handle_echo(MS, sent, None);
        let rate = p.rate_bytes_per_s();
        // Others fill the link: every probe comes back 20 ms late, and no
        // bulk went meanwhile.
        for k in 1..20 {
            let at = k * 50 * MS;
            let sent = p.poll_probe(at, true).unwrap();
            p.handle_echo(at + 21 * MS, sent, None);
        }
        assert_eq!(p.rate_bytes_per_s(), rate);
        // With bulk sent between the probes, the same delay shrinks it.
        p.sent_bulk(1_000 * MS, 384);
        let sent = p.poll_probe(1_000 * MS, true).unwrap();
        p.handle_echo(1_021 * MS, sent, None);
        assert!(p.rate_bytes_per_s() < rate);
    }

    #[test]
    fn no_probes_while_no_bulk_flows() {
        let mut p = Pacer::new(CONFIG, 0);
        assert_eq!(p.probe_due(0, false), None);
        p.sent_bulk(10 * MS, 384);
        assert_eq!(p.probe_due(20 * MS, false), Some(0));
        assert_eq!(p.probe_due(10 * MS + ACTIVE_US, false), None);
        let off = Pacer::new(
            PaceConfig {
                target_us: 0,
                ..CONFIG
            },
            0,
        );
        assert_eq!(off.probe_due(0, true), None);
    }
}
