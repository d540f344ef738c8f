//! Custody: what this node holds for others, summaries and pulls between
//! neighbours, and forwarding of what waits for a route.

use super::writes::PendingAck;
use super::{
    DETOUR_SLACK_HOPS, Event, Held, HeldState, MAX_PULLED_COPIES, MessageStore, Router, Status,
    eviction_key,
};
use crate::Class;
use crate::routes::INFINITY;
use crate::wire::{
    Address, Frame, Kind, MAX_HOPS, MAX_SUMMARY_ENTRIES, Message, MessageId, SummaryEntry,
};

impl<S: MessageStore> Router<S> {
    pub(super) fn handle_summary(&mut self, now: u64, from: Address, entries: Vec<SummaryEntry>) {
        let mut wanted = Vec::new();
        for e in entries {
            if self.held.contains_key(&e.id) {
                continue;
            }
            let closer = if e.destination == self.me {
                true
            } else {
                match self.table.metric(&e.destination) {
                    Some(mine) => {
                        mine < e.metric && self.table.next_hop(&e.destination) != Some(&from)
                    }
                    None => {
                        let mine = self.last_route_age(now, &e.destination);
                        mine < e.last_route_age_ms
                    }
                }
            };
            if closer {
                wanted.push(e.id);
            }
        }
        if !wanted.is_empty() {
            self.send_frame(from, Class::P0, &Frame::Pull(wanted));
            self.stats.custody_frames += 1;
        }
    }

    /// A neighbour asks for messages it saw in this node's summary. Custody
    /// goes to it only if it is closer to the destination by this node's
    /// own routing table; otherwise it gets a copy (once) and custody stays
    /// here, so that a neighbour that pulls and drops takes nothing away.
    pub(super) fn handle_pull(&mut self, now: u64, from: Address, ids: Vec<MessageId>) {
        for id in ids {
            let Some(h) = self.held.get(&id) else {
                continue;
            };
            if !matches!(h.state, HeldState::Waiting | HeldState::Backoff { .. }) {
                continue;
            }
            let message = h.message.clone();
            let upstream = h.from;
            if self.known_closer(&from, &message) {
                self.remove_from_waiting(id);
                self.enqueue_message(now, from, &message, upstream, true);
                continue;
            }
            let Some(h) = self.held.get_mut(&id) else {
                continue;
            };
            if h.copied_to.contains(&from) || h.copied_to.len() >= MAX_PULLED_COPIES {
                continue;
            }
            h.copied_to.push(from);
            self.enqueue_message(now, from, &message, upstream, false);
        }
    }

    /// Whether `neighbour` is closer to `m`'s destination than this node,
    /// by what it advertised to this node.
    fn known_closer(&self, neighbour: &Address, m: &Message) -> bool {
        let Some(destination) = m.body.destination else {
            return false;
        };
        let theirs = self.table.advertised(neighbour, &destination);
        match (theirs, self.table.metric(&destination)) {
            (Some(theirs), Some(mine)) => theirs < mine,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    pub(super) fn last_route_age(&self, now: u64, destination: &Address) -> u64 {
        if self.table.next_hop(destination).is_some() {
            return 0;
        }
        self.last_route
            .get(destination)
            .map_or(u64::MAX, |at| now.saturating_sub(*at))
    }

    pub(super) fn send_summary(&mut self, now: u64, to: Address) {
        let mut waiting: Vec<&Held> = self
            .held
            .values()
            .filter(|h| matches!(h.state, HeldState::Waiting | HeldState::Backoff { .. }))
            .collect();
        if waiting.is_empty() {
            return;
        }
        waiting.sort_by_key(|h| (h.message.body.class, h.accepted_ms, h.message.id));
        let entries: Vec<SummaryEntry> = waiting
            .iter()
            .take(MAX_SUMMARY_ENTRIES)
            .filter_map(|h| {
                let destination = h.message.body.destination?;
                Some(SummaryEntry {
                    id: h.message.id,
                    destination,
                    class: h.message.body.class,
                    metric: self.table.metric(&destination).unwrap_or(INFINITY),
                    last_route_age_ms: self.last_route_age(now, &destination),
                })
            })
            .collect();
        self.send_frame(to, Class::P0, &Frame::Summary(entries));
        self.stats.custody_frames += 1;
    }

    /// Takes `m` into custody (durable at the next flush). `ack_from`: the
    /// neighbour to acknowledge once it is durable. Returns false if custody
    /// is full of more important messages.
    pub(super) fn accept_custody(
        &mut self,
        now: u64,
        m: Message,
        from: Option<Address>,
        local: bool,
        ack: bool,
    ) -> bool {
        let size = m.encoded_len();
        let class = m.body.class;
        // This node's own sends count as vouched for here.
        let vouched = local || self.vouched_for(&m);
        if class == Class::P0 && !vouched {
            // SOS from keys nobody knows hold at most a quarter of the
            // quota: past that, a new one takes the place of one of its
            // kind, so they never crowd out people's messages.
            let (rank, _, _) = eviction_key(class, now, m.id);
            let held: usize = self
                .shares
                .range((rank, false, None)..)
                .take_while(|((r, v, _), _)| *r == rank && !*v)
                .map(|(_, held)| held.len())
                .sum();
            if held >= self.config.custody_max_messages / 4
                && let Some(victim) = self.eviction_victim(class, false, from)
            {
                self.evict(victim, class);
            }
        }
        while self.held.len() + 1 > self.config.custody_max_messages
            || self.held_bytes + size > self.config.custody_max_bytes
        {
            let Some(victim) = self.eviction_victim(class, vouched, from) else {
                break; // Everything held matters more, or it is its own.
            };
            self.evict(victim, class);
        }
        if self.held.len() + 1 > self.config.custody_max_messages
            || self.held_bytes + size > self.config.custody_max_bytes
        {
            return false;
        }
        let id = m.id;
        self.batch.insert(id, Some(m.encode_held(now, local)));
        self.insert_held(m, from, local, now);
        if let Some(from) = from.filter(|_| ack) {
            // Acknowledged once the next flush made it durable.
            self.pending_acks.push(PendingAck::custody(from, id));
        }
        self.try_forward(now, id);
        true
    }

    /// The message a new one of `class` from `from` takes the place of in
    /// a full custody, if any; `vouched`: whether the chain vouches for its
    /// origin.
    ///
    /// Never a more important class. An SOS from an origin the chain does
    /// not vouch for (anyone can sign one with a fresh key) displaces only
    /// bulk (P3) and SOS of its own kind, never a person's message (P2) or
    /// a registered person's SOS. A neighbour that holds its fair share of
    /// custody or more (the quota over the number of neighbours holding
    /// any, this node's own sends counted as one) only displaces its own
    /// messages, oldest first: a crowder's flood cannot evict what others
    /// handed over. Otherwise the least important group held gives way
    /// (by class, then origins not vouched for first), and in it the
    /// neighbour that handed over the most (its oldest): one neighbour's
    /// flood evicts its own messages, not everyone else's.
    fn eviction_victim(
        &self,
        class: Class,
        vouched: bool,
        from: Option<Address>,
    ) -> Option<MessageId> {
        let own_rank = 3 - class as u8;
        let may_displace = |rank: u8, its_vouched: bool| {
            rank <= own_rank
                && (vouched
                    || class != Class::P0
                    || rank == 0
                    || (rank == own_rank && !its_vouched))
        };
        if from.is_some() && self.over_fair_share(from) {
            return self
                .shares
                .iter()
                .filter(|((r, v, f), held)| *f == from && may_displace(*r, *v) && !held.is_empty())
                .min_by_key(|((r, v, _), held)| (*r, *v, held.first().copied()))
                .and_then(|(_, held)| held.first().map(|&(_, id)| id));
        }
        let (rank, its_vouched) = self
            .shares
            .keys()
            .map(|&(r, v, _)| (r, v))
            .find(|&(r, v)| may_displace(r, v))?;
        self.shares
            .range((rank, its_vouched, None)..)
            .take_while(|((r, v, _), _)| *r == rank && *v == its_vouched)
            .max_by(|a, b| {
                a.1.len()
                    .cmp(&b.1.len())
                    .then(b.1.first().cmp(&a.1.first()))
            })
            .and_then(|(_, held)| held.first().map(|&(_, id)| id))
    }

    /// Evicts `victim` from custody (`class`: the evicting message's, if
    /// the victim's is unknown).
    fn evict(&mut self, victim: MessageId, class: Class) {
        let victim_class = self
            .held
            .get(&victim)
            .map_or(class, |h| h.message.body.class);
        self.remove_held(victim);
        self.stats.evicted += 1;
        self.events.push_back(Event::Evicted {
            id: victim,
            class: victim_class,
        });
        self.set_status(victim, Status::Evicted);
    }

    /// Whether `from` holds at least its fair share of the custody quota.
    fn over_fair_share(&self, from: Option<Address>) -> bool {
        let mut sources = std::collections::HashSet::new();
        let mut mine = 0;
        for ((_, _, f), held) in &self.shares {
            sources.insert(*f);
            if *f == from {
                mine += held.len();
            }
        }
        sources.insert(from);
        mine * sources.len() >= self.config.custody_max_messages
    }

    pub(super) fn insert_held(
        &mut self,
        message: Message,
        from: Option<Address>,
        local: bool,
        accepted_ms: u64,
    ) {
        let id = message.id;
        let size = message.encoded_len();
        let key = eviction_key(message.body.class, accepted_ms, id);
        self.eviction.insert(key);
        let share = (key.0, self.vouched_for(&message), from);
        self.shares
            .entry(share)
            .or_default()
            .insert((accepted_ms, id));
        self.expiries.insert((message.body.expires_ms, id));
        self.held_bytes += size;
        self.held.insert(
            id,
            Held {
                message,
                from,
                local,
                accepted_ms,
                size,
                state: HeldState::Waiting,
                retries: 0,
                flooded: false,
                avoid: None,
                copied_to: Vec::new(),
                share,
            },
        );
    }

    pub(super) fn remove_held(&mut self, id: MessageId) {
        self.remove_from_waiting(id);
        if let Some(h) = self.held.remove(&id) {
            self.held_bytes -= h.size;
            let key = eviction_key(h.message.body.class, h.accepted_ms, id);
            self.eviction.remove(&key);
            if let Some(held) = self.shares.get_mut(&h.share) {
                held.remove(&(h.accepted_ms, id));
                if held.is_empty() {
                    self.shares.remove(&h.share);
                }
            }
            self.expiries.remove(&(h.message.body.expires_ms, id));
            self.batch.insert(id, None);
        }
    }

    pub(super) fn remove_from_waiting(&mut self, id: MessageId) {
        let Some(h) = self.held.get(&id) else {
            return;
        };
        if let Some(d) = h.message.body.destination
            && let Some(set) = self.waiting.get_mut(&d)
        {
            set.remove(&id);
            if set.is_empty() {
                self.waiting.remove(&d);
                self.table.set_wanted(&d, false);
            }
        }
    }

    pub(super) fn set_state(&mut self, id: MessageId, state: HeldState) {
        self.remove_from_waiting(id);
        let Some(h) = self.held.get_mut(&id) else {
            return;
        };
        h.state = state;
        match state {
            HeldState::Waiting => {
                if let Some(d) = h.message.body.destination {
                    let set = self.waiting.entry(d).or_default();
                    let first = set.is_empty();
                    set.insert(id);
                    if first {
                        // Starving for it? Ask now, not at the next refresh.
                        self.table.set_wanted(&d, true);
                        self.drain_control();
                    }
                }
            }
            HeldState::InFlight { deadline: at, .. } | HeldState::Backoff { until: at } => {
                self.timers.insert((at, id));
            }
            HeldState::Queued { .. } => {}
        }
    }

    /// Forwards a waiting message if there is a route; otherwise it waits
    /// (and a P0 message is flooded once from here).
    pub(super) fn try_forward(&mut self, now: u64, id: MessageId) {
        let Some(h) = self.held.get(&id) else {
            return;
        };
        if !matches!(h.state, HeldState::Waiting) {
            return;
        }
        let Some(destination) = h.message.body.destination else {
            return;
        };
        if h.local && h.message.via.is_none() {
            self.look_up(now, destination);
        }
        let Some(h) = self.held.get(&id) else {
            return;
        };
        let avoid = h.avoid;
        let (target, via) = self.heading(&h.message, destination);
        let hop = self.table.next_hop(&target).copied().map(|hop| {
            if Some(hop) == avoid {
                self.table
                    .alternative_hop(&target, &hop)
                    .copied()
                    .unwrap_or(hop)
            } else {
                hop
            }
        });
        match hop {
            Some(hop) => {
                let mut message = h.message.clone();
                // A home re-heads a message for the landmark its
                // destination is near: a new leg, with a fresh hop budget.
                // In a mesh hundreds of hops across, the way to the home
                // may have used most of it (at 50,000 simulated nodes, one
                // SOS in ten stopped at the hop limit). Each message has
                // one home, and every leg follows loop-free routes.
                if via.is_some() && via != message.via && self.registered(&destination) == via {
                    message.hops_left = MAX_HOPS;
                }
                message.via = via;
                let upstream = h.from;
                // A P0 message (an SOS, or its receipt) whose next hop did
                // not acknowledge it, or has not acknowledged anything
                // since an earlier timeout, also goes out once as a detour
                // flood through the nodes near its way: around neighbours
                // that swallow messages. The destination drops duplicates.
                let silent = self.neighbours.get(&hop).is_some_and(|n| n.silent);
                let bound =
                    (message.body.class == Class::P0 && (avoid.is_some() || silent) && !h.flooded)
                        .then(|| self.detour_metric(&message))
                        .flatten()
                        .map(|d| {
                            let hop_cost = self.table.link_cost(&hop).unwrap_or(256).max(256);
                            d.saturating_add(DETOUR_SLACK_HOPS.saturating_mul(hop_cost))
                                .min(INFINITY - 1)
                        });
                self.enqueue_message(now, hop, &message, upstream, true);
                if let Some(bound) = bound {
                    let mut copy = message;
                    copy.flood = true;
                    copy.flood_bound = bound;
                    self.first_detour(&copy, now);
                    self.detour_flood(now, &copy, Some(hop));
                    if let Some(h) = self.held.get_mut(&id) {
                        h.flooded = true;
                    }
                }
            }
            None => {
                let flood = h.message.body.class == Class::P0
                    && h.message.body.kind == Kind::Data
                    && !h.flooded
                    && !self.neighbours.is_empty();
                let from = h.from;
                let copy = flood.then(|| h.message.clone());
                self.set_state(id, HeldState::Waiting);
                if let Some(mut copy) = copy {
                    copy.flood = true;
                    copy.hops_left = copy.hops_left.min(self.config.flood_hops);
                    self.first_sight(false, &copy, now);
                    self.flood(now, &copy, from);
                    if let Some(h) = self.held.get_mut(&id) {
                        h.flooded = true;
                    }
                }
            }
        }
    }

    /// Tries again to forward the messages waiting for `destination`.
    pub(super) fn forward_waiting(&mut self, now: u64, destination: &Address) {
        let ids: Vec<MessageId> = self
            .waiting
            .get(destination)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.try_forward(now, id);
        }
    }
}
