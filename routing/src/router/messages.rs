//! Messages as they arrive: unicast forwarding decisions, broadcasts and
//! floods, delivery here, acknowledgements, and the SOS watch.

use super::writes::PendingAck;
use super::{
    Delivery, DropReason, Event, HeldState, MessageStore, Router, SOS_WATCH_MAX, Status,
    WIDE_DETOUR_AFTER,
};
use crate::Class;
use crate::limits::{SeenCache, Sighting};
use crate::routes::{INFINITY, Metric};
use crate::store::SeenRecord;
use crate::wire::{AckOutcome, Address, Frame, Kind, Message, MessageId, Receipt};

impl<S: MessageStore> Router<S> {
    pub(super) fn handle_message(&mut self, now: u64, from: Address, m: Message) {
        if m.body.expires_ms <= now {
            // It may have expired on its way; only its origin is to blame.
            self.stats.expired_arrivals += 1;
            if m.body.origin == Some(from) {
                self.misbehaved(now, &from, |c| c.replays += 1);
            }
            return;
        }
        if m.body.created_ms > now.saturating_add(self.config.max_clock_skew_ms) {
            return self.misbehaved(now, &from, |c| c.invalid += 1);
        }
        if m.body.class == Class::P1
            && m.body.kind == Kind::Data
            && !m.body.origin.is_some_and(|o| self.authorities.contains(&o))
        {
            return self.misbehaved(now, &from, |c| c.unauthorized += 1);
        }
        let Some(destination) = m.body.destination else {
            return self.handle_broadcast(now, from, m);
        };
        // Relays act on the origin of P0 (rate limits) and P1 (authority)
        // messages, so they check its signature; a receipt of class P2 or
        // P3 is checked by its destination only (docs/routing.md, Messages).
        let relay_checks = matches!(m.body.class, Class::P0 | Class::P1);
        if (relay_checks || destination == self.me) && m.verify_origin().is_err() {
            if relay_checks {
                return self.misbehaved(now, &from, |c| c.invalid += 1);
            }
            // A forged receipt for us: an honest relay may have carried
            // it, so it is not held against the neighbour; acknowledged so
            // that nobody retries it, and dropped.
            self.stats.forged_dropped += 1;
            self.ack_delivered(from, m.id);
            return;
        }
        if m.flood {
            if !self.first_detour(&m, now) {
                self.stats.duplicates += 1;
                return;
            }
            if !self.p0_allowed(now, from, &m) {
                return;
            }
            if destination == self.me {
                return self.deliver_here(now, m);
            }
            if m.flood_bound != 0 {
                // A detour flood goes on through the nodes between its
                // starter and the destination, without custody: the starter
                // still holds the message.
                let inside = self.detour_metric(&m).is_some_and(|d| d <= m.flood_bound);
                if inside {
                    self.detour_flood(now, &m, Some(from));
                }
                return;
            }
            if self.table.next_hop(&destination).is_some() {
                let mut m = m;
                m.flood = false;
                // From here it is a unicast again: the flood's short hop
                // limit would strand it on a long path.
                m.hops_left = crate::wire::MAX_HOPS.saturating_sub(m.hops_taken);
                // A flooded copy carries no custody to acknowledge.
                self.accept_custody(now, m, Some(from), false, false);
            } else if m.hops_left > 0 {
                self.flood(now, &m, Some(from));
            }
            return;
        }
        if destination == self.me {
            // The previous hop forgets the message on this acknowledgement:
            // it is said once the caller took the delivery (and kept it),
            // and the write after that has its seen record.
            let ack = PendingAck {
                to: from,
                id: m.id,
                delivered: true,
            };
            self.deliver_here(now, m);
            return self.ack_after_delivery(ack);
        }
        if let Some(h) = self.held.get(&m.id) {
            let returned = matches!(h.state, HeldState::Queued { to } | HeldState::InFlight { to, .. } if to == from);
            // A retry after a lost acknowledgement: we have it.
            self.pending_acks.push(PendingAck::custody(from, m.id));
            if returned {
                // It came back from the neighbour we handed it to (routes
                // disagreed on the way, as they may for a moment while a
                // scoped mesh re-heads a message). Our acknowledgement
                // makes that neighbour forget it, so its acknowledgement of
                // our hand-over must not make us forget it too: we keep it,
                // and send it on around that neighbour. If the only way
                // is through it, we wait an acknowledgement timeout first,
                // so that its stale acknowledgement finds the message
                // not handed to it.
                let destination = m.body.destination.unwrap_or(from);
                let (target, _) = self.heading(&m, destination);
                let only_through_it = self.table.next_hop(&target) == Some(&from)
                    && self.table.alternative_hop(&target, &from).is_none();
                // The copy that came back is the message's journey so far
                // (the landmark it now heads for, its hops): keep that one.
                let id = m.id;
                let size = m.encoded_len();
                if let Some(h) = self.held.get_mut(&id) {
                    h.avoid = Some(from);
                    self.held_bytes = self.held_bytes - h.size + size;
                    h.size = size;
                    h.message = m;
                    let record = h.message.encode_held(h.accepted_ms, h.local);
                    self.batch.insert(id, Some(record));
                }
                if only_through_it {
                    let until = now.saturating_add(self.config.ack_timeout_ms);
                    self.set_state(id, HeldState::Backoff { until });
                } else {
                    self.set_state(id, HeldState::Waiting);
                    self.try_forward(now, id);
                }
            }
            return;
        }
        if !self.p0_allowed(now, from, &m) {
            return self.refuse(from, m.id);
        }
        if m.hops_left == 0 {
            self.events.push_back(Event::Dropped {
                id: m.id,
                reason: DropReason::HopLimit,
            });
            return self.refuse(from, m.id);
        }
        let id = m.id;
        if !self.accept_custody(now, m, Some(from), false, true) {
            self.refuse(from, id);
        }
    }

    /// Tells `to` that message `id` reached its destination here.
    pub(super) fn ack_delivered(&mut self, to: Address, id: MessageId) {
        let ack = Frame::Ack {
            id,
            outcome: AckOutcome::Delivered,
        };
        self.send_frame(to, Class::P0, &ack);
    }

    /// Keeps a copy of a P0 message (an SOS, or a receipt or
    /// acknowledgement of one) sent from here, to check on it later (see
    /// [`Router::sos_unanswered`]); the oldest copy goes when there are too
    /// many.
    pub(super) fn watch_sos(&mut self, now: u64, message: Message) {
        let wait = self.config.ack_timeout_ms.saturating_mul(WIDE_DETOUR_AFTER);
        self.sos_watch
            .insert((now.saturating_add(wait), message.id), message);
        while self.sos_watch.len() > SOS_WATCH_MAX {
            self.sos_watch.pop_first();
        }
    }

    /// An SOS sent from here got no receipt in time, or a receipt sent
    /// from here is still held here: whatever held it up (neighbours that
    /// swallow messages all around the way, or a receipt lost the same
    /// way), it goes out once more as a detour flood through the whole
    /// network, which any path of honest nodes carries.
    pub(super) fn sos_unanswered(&mut self, now: u64, mut m: Message) {
        let stuck = match m.body.kind {
            Kind::Data => !self
                .tracked
                .get(&m.id)
                .is_some_and(|t| matches!(t.status, Status::Delivered | Status::Acknowledged)),
            Kind::Receipt | Kind::SosAck => self.held.contains_key(&m.id),
        };
        // Without a route, no flood would find the destination either:
        // custody and summaries carry it when a path comes back.
        let reachable = m
            .body
            .destination
            .is_some_and(|d| self.table.metric(&d).is_some());
        if !stuck || !reachable || m.body.expires_ms <= now {
            return;
        }
        m.flood = true;
        m.flood_bound = INFINITY;
        if self.first_detour(&m, now) {
            self.detour_flood(now, &m, None);
        }
    }

    /// How far off the way from `m`'s origin to its destination this node
    /// is: its metric to the origin plus its metric to the destination (the
    /// way's own length on it). A detour flood spreads through the nodes
    /// where this is at most its bound: an ellipse around the way, whose
    /// width the slack sets, rather than the whole network.
    pub(super) fn detour_metric(&self, m: &Message) -> Option<Metric> {
        let to_destination = self.table.metric(&m.body.destination?)?;
        let to_origin = match m.body.origin {
            Some(origin) => self.table.metric(&origin)?,
            None => 0,
        };
        Some(to_origin.saturating_add(to_destination))
    }

    /// Records flooded message `m` as seen; `true` the first time. The
    /// network-wide detour flood of a message is recorded apart (under an id
    /// derived from the message's), so that it passes nodes the narrow one
    /// reached: each node passes on a message's floods at most twice.
    pub(super) fn first_detour(&mut self, m: &Message, now: u64) -> bool {
        if m.flood_bound != INFINITY {
            return self.first_sight(false, m, now);
        }
        let mut key = Vec::with_capacity(24);
        key.extend_from_slice(b"wide/");
        key.extend_from_slice(&m.id.0);
        let wide = MessageId::of_body(&key);
        self.first_sight_of(false, wide, m, now)
    }

    /// Records message `m` as delivered here or as a broadcast or flood
    /// handled; `true` the first time (see [`SeenCache::insert`]: ids live
    /// as long as their message). New ids go to the store with the next
    /// write.
    /// The ids of messages delivered here (`true`), or of broadcasts and
    /// floods handled here (`false`).
    pub(super) fn seen_cache(&mut self, delivered: bool) -> &mut SeenCache<MessageId> {
        if delivered {
            &mut self.delivered
        } else {
            &mut self.seen
        }
    }

    pub(super) fn first_sight(&mut self, delivered: bool, m: &Message, now: u64) -> bool {
        self.first_sight_of(delivered, m.id, m, now)
    }

    pub(super) fn first_sight_of(
        &mut self,
        delivered: bool,
        id: MessageId,
        m: &Message,
        now: u64,
    ) -> bool {
        let (created_ms, expires_ms) = (m.body.created_ms, m.body.expires_ms);
        let new = match self
            .seen_cache(delivered)
            .insert(id, created_ms, expires_ms, now)
        {
            Sighting::New => true,
            Sighting::Seen => false,
            Sighting::MaybeForgotten => {
                let new = !self.stored_sighting(delivered, id, expires_ms);
                if new {
                    self.seen_cache(delivered).record(id, expires_ms, now);
                }
                new
            }
        };
        if new && expires_ms > now {
            self.seen_unsaved.push(SeenRecord {
                expires_ms,
                id,
                delivered,
                created_ms,
            });
        }
        new
    }

    /// Whether the durable record (written, or waiting for the next write)
    /// holds `id`: asked when the bounded cache may have forgotten it. A
    /// store that cannot answer counts as "not seen": a message delivered
    /// twice is better than one lost.
    fn stored_sighting(&mut self, delivered: bool, id: MessageId, expires_ms: u64) -> bool {
        self.stats.seen_lookups += 1;
        let unsaved = self
            .seen_unsaved
            .iter()
            .any(|r| r.id == id && (r.delivered || !delivered));
        if unsaved {
            return true;
        }
        match self.store.seen_before(&id, expires_ms) {
            // A delivered record also stands for the broadcast or flood
            // that brought it (one record per id in RocksDB).
            Ok(Some(was_delivered)) => was_delivered || !delivered,
            Ok(None) => false,
            Err(e) => {
                self.events.push_back(Event::StoreFailed(e.to_string()));
                false
            }
        }
    }

    pub(super) fn refuse(&mut self, to: Address, id: MessageId) {
        self.send_frame(
            to,
            Class::P0,
            &Frame::Ack {
                id,
                outcome: AckOutcome::Refused,
            },
        );
        self.stats.custody_frames += 1;
    }

    pub(super) fn handle_broadcast(&mut self, now: u64, from: Address, m: Message) {
        // A copy seen already is dropped before its signature is checked
        // (each node hears a broadcast from most of its neighbours); a new
        // one is checked before it is recorded as seen, so a forged copy
        // cannot shut out the real one.
        if self.seen.check(&m.id, m.body.created_ms) == Sighting::Seen {
            self.stats.duplicates += 1;
            return;
        }
        if m.verify_origin().is_err() {
            return self.misbehaved(now, &from, |c| c.invalid += 1);
        }
        if !self.first_sight(false, &m, now) {
            self.stats.duplicates += 1;
            return;
        }
        if !self.p0_allowed(now, from, &m) || !self.broadcast_allowed(now, from, &m) {
            return;
        }
        // Unsigned, nobody can be held to it: it may come from a neighbour,
        // no farther. (This node signs every broadcast it sends.)
        if m.body.origin.is_none() && m.hops_taken > 1 {
            self.stats.unsigned_dropped += 1;
            return;
        }
        let mut m = m;
        if m.body.origin.is_none() {
            m.hops_left = 0;
        }
        // This node's hop limit, whatever the sender asked for.
        m.hops_left = m.hops_left.min(self.config.broadcast_hops);
        let inside = match (m.body.area, self.config.position) {
            (Some(area), Some((lat, lon))) => area.contains(lat, lon),
            _ => true,
        };
        self.remember_broadcast(&m);
        if m.hops_left > 0 && inside {
            let neighbours: Vec<Address> = self
                .neighbours
                .keys()
                .filter(|n| **n != from)
                .copied()
                .collect();
            for n in neighbours {
                self.enqueue_message(now, n, &m, Some(from), false);
            }
        }
        if inside {
            self.deliver_here(now, m);
        }
    }

    pub(super) fn flood(&mut self, now: u64, m: &Message, except: Option<Address>) {
        let neighbours: Vec<Address> = self
            .neighbours
            .keys()
            .filter(|n| Some(**n) != except)
            .copied()
            .collect();
        for n in neighbours {
            self.enqueue_message(now, n, m, except, false);
        }
    }

    /// Passes a detour flood on to the neighbours inside its ellipse, by
    /// what they advertised (see [`Router::detour_metric`]).
    pub(super) fn detour_flood(&mut self, now: u64, m: &Message, except: Option<Address>) {
        let (Some(destination), bound) = (m.body.destination, m.flood_bound) else {
            return;
        };
        let inside: Vec<Address> = self
            .neighbours
            .keys()
            .filter(|n| Some(**n) != except)
            .filter(|n| {
                let to_origin = match &m.body.origin {
                    Some(origin) => self.table.advertised(n, origin),
                    None => Some(0),
                };
                let to_destination = self.table.advertised(n, &destination);
                to_origin
                    .zip(to_destination)
                    .is_some_and(|(o, d)| o.saturating_add(d) <= bound)
            })
            .copied()
            .collect();
        for n in inside {
            self.enqueue_message(now, n, m, except, false);
        }
    }

    pub(super) fn deliver_here(&mut self, now: u64, m: Message) {
        if !self.first_sight(true, &m, now) {
            self.stats.duplicates += 1;
            return;
        }
        match m.body.kind {
            Kind::Data => {
                self.stats.delivered += 1;
                let id = m.id;
                // Its seen record waits for the caller to take it.
                let seen = self.seen_unsaved.pop_if(|r| r.id == id);
                let delivery = Delivery {
                    id,
                    class: m.body.class,
                    origin: m.body.origin,
                    broadcast: m.body.destination.is_none(),
                    payload: m.body.payload,
                    hops: m.hops_taken,
                    created_ms: m.body.created_ms,
                    received_ms: now,
                    seen,
                };
                let (receipt_to, class) = (delivery.receipt_to(), delivery.class);
                self.events.push_back(Event::Delivered(delivery));
                // Signed unicasts (P0, P1) get a receipt at once, unless the
                // caller sends it once it has kept them; for sealed messages
                // the application sends it once it knows the sender.
                if let Some(origin) = receipt_to
                    && self.config.receipt_on_delivery
                {
                    // A full custody store only loses the receipt, which the
                    // origin's status shows; nothing else to do here.
                    let _ = self.send_delivery_receipt(now, class, origin, id);
                }
            }
            Kind::Receipt | Kind::SosAck => {
                let (Ok(receipt), Some(from)) = (Receipt::decode(&m.body.payload), m.body.origin)
                else {
                    return;
                };
                let Some(t) = self.tracked.get(&receipt.message) else {
                    return;
                };
                let status = if m.body.kind == Kind::Receipt {
                    // Only the destination can say it received the message.
                    if t.destination.is_some_and(|d| d != from) {
                        return;
                    }
                    Status::Delivered
                } else {
                    if t.class != Class::P0 {
                        return;
                    }
                    Status::Acknowledged
                };
                self.emit_after_write(Event::Receipt {
                    message: receipt.message,
                    from,
                    kind: m.body.kind,
                    note: receipt.note,
                    hops: m.hops_taken,
                });
                if let Some(t) = self.tracked.get_mut(&receipt.message)
                    && t.status == Status::Delivered
                    && status == Status::Acknowledged
                {
                    t.status = Status::Acknowledged;
                    self.emit_after_write(Event::Status {
                        id: receipt.message,
                        status,
                    });
                    return;
                }
                self.set_status(receipt.message, status);
            }
        }
    }

    pub(super) fn handle_ack(
        &mut self,
        now: u64,
        from: Address,
        id: MessageId,
        outcome: AckOutcome,
    ) {
        if let Some(n) = self.neighbours.get_mut(&from) {
            n.silent = false;
        }
        let Some(h) = self.held.get(&id) else {
            return;
        };
        let addressed = matches!(h.state, HeldState::Queued { to } | HeldState::InFlight { to, .. } if to == from);
        if !addressed {
            return;
        }
        let retries = h.retries;
        if outcome == AckOutcome::Refused {
            let backoff = 1u64 << retries.min(4);
            let until = now.saturating_add(self.config.ack_timeout_ms.saturating_mul(backoff));
            self.set_state(id, HeldState::Backoff { until });
            return;
        }
        let local = self.held.get(&id).is_some_and(|h| h.local);
        self.remove_held(id);
        if local {
            let status = match outcome {
                AckOutcome::Holding => Status::InCustody,
                _ => Status::Forwarded,
            };
            self.set_status(id, status);
        }
    }
}
