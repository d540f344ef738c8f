//! The custody write: what custody changed goes to the [`MessageStore`] in
//! one batch, and the acknowledgements waiting on it go out once it is
//! written (see the module doc of [`super`]). The router writes it itself
//! when events are polled, or hands it to the caller
//! ([`Router::defer_writes`]).

use super::{Event, HeldState, Router, SEEN_PURGE_MS, SendError};
use crate::Class;
use crate::store::{MessageStore, SeenRecord, StoreBatch};
use crate::wire::{AckOutcome, Address, Frame, MessageId};

/// The state of writes the caller makes ([`Router::defer_writes`]).
#[derive(Debug, Default)]
pub(super) struct Deferred {
    /// The batch handed out and not yet reported back.
    in_flight: Option<InFlight>,
    /// Events about messages handled since that batch was taken: they wait
    /// for the next one.
    events: Vec<Event>,
}

/// A custody acknowledgement that waits for the write.
#[derive(Debug)]
pub(super) struct PendingAck {
    pub(super) to: Address,
    pub(super) id: MessageId,
    /// The message was delivered here (else taken into custody, or held
    /// already).
    pub(super) delivered: bool,
}

impl PendingAck {
    pub(super) fn custody(to: Address, id: MessageId) -> Self {
        Self {
            to,
            id,
            delivered: false,
        }
    }
}

/// What waits for the batch being written.
#[derive(Debug)]
struct InFlight {
    acks: Vec<PendingAck>,
    unwritten: Vec<MessageId>,
    events: Vec<Event>,
}

impl<S: MessageStore> Router<S> {
    /// Writes what custody changed to the store, then releases the custody
    /// acknowledgements waiting on it. `poll_event` calls this first, so
    /// everything handled between two polls shares one write.
    pub fn flush(&mut self) {
        // A failure is reported as `Event::StoreFailed`.
        let _ = self.commit();
    }

    /// [`Router::flush`], saying whether the write succeeded: after
    /// [`Router::send_unwritten`], the message is durable once this
    /// returns `Ok`, and forgotten if it returns an error. With deferred
    /// writes, only once the batch taken last was reported
    /// ([`Router::written`]); before that it writes nothing and fails.
    pub fn write(&mut self) -> Result<(), SendError> {
        self.commit().map_err(SendError::Store)
    }

    /// From now on the caller makes the custody writes: `poll_event` no
    /// longer does, [`Router::take_write`] hands out each batch and
    /// [`Router::written`] takes the outcome. One batch is out at a time,
    /// so they reach the store in order.
    pub fn defer_writes(&mut self) {
        self.deferred.get_or_insert_with(Deferred::default);
    }

    /// Whether a batch taken with [`Router::take_write`] is not yet reported.
    pub fn write_in_flight(&self) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|d| d.in_flight.is_some())
    }

    /// The next batch to write, with deferred writes, once the one before
    /// was reported; `None` while one is out, or with nothing to write
    /// (then what waited is released at once).
    pub fn take_write(&mut self) -> Option<StoreBatch> {
        if self.deferred.as_ref()?.in_flight.is_some() {
            return None;
        }
        let batch = self.take_batch();
        let acks = std::mem::take(&mut self.pending_acks);
        let unwritten = std::mem::take(&mut self.unwritten);
        let deferred = self.deferred.as_mut()?;
        let events = std::mem::take(&mut deferred.events);
        match batch {
            Some(batch) => {
                deferred.in_flight = Some(InFlight {
                    acks,
                    unwritten,
                    events,
                });
                Some(batch)
            }
            None => {
                self.send_acks(acks);
                self.events.extend(events);
                None
            }
        }
    }

    /// How the batch taken last went (`Err` with why it failed): on
    /// success the acknowledgements waiting on it go out; on failure what
    /// it would have taken into custody is forgotten, as with
    /// [`Router::flush`]. Either way the events waiting on it follow.
    pub fn written(&mut self, result: Result<(), String>) {
        let Some(done) = self.deferred.as_mut().and_then(|d| d.in_flight.take()) else {
            return;
        };
        match result {
            Ok(()) => self.write_succeeded(done.acks),
            // Later changes stay in the next batch: the forgotten
            // messages' deletes there are no harm.
            Err(e) => self.write_failed(e, done.acks, done.unwritten),
        }
        self.events.extend(done.events);
    }

    /// An event about a message, which says it was handled: with deferred
    /// writes, it waits for the write of what handling it changed.
    pub(super) fn emit_after_write(&mut self, event: Event) {
        match &mut self.deferred {
            Some(deferred) => deferred.events.push(event),
            None => self.events.push_back(event),
        }
    }

    /// Writes the batch; on success releases the acknowledgements waiting on
    /// it, on failure forgets what it could not write.
    fn commit(&mut self) -> Result<(), String> {
        if self.write_in_flight() {
            return Err("the custody write before is not finished yet".into());
        }
        // Everything so far goes in this write, also what waited for the
        // next deferred one.
        if let Some(deferred) = &mut self.deferred {
            let events = std::mem::take(&mut deferred.events);
            self.events.extend(events);
        }
        let acks = std::mem::take(&mut self.pending_acks);
        let Some(batch) = self.take_batch() else {
            self.send_acks(acks);
            self.unwritten.clear();
            return Ok(());
        };
        match self.store.write(&batch) {
            Ok(()) => {
                self.write_succeeded(acks);
                self.unwritten.clear();
                Ok(())
            }
            Err(e) => {
                let e = e.to_string();
                let unwritten = std::mem::take(&mut self.unwritten);
                self.write_failed(e.clone(), acks, unwritten);
                // Nothing of it reached the disk: nothing to delete there.
                self.batch.clear();
                Err(e)
            }
        }
    }

    /// What custody changed since the last batch, if anything.
    fn take_batch(&mut self) -> Option<StoreBatch> {
        if self.batch.is_empty() && self.seen_unsaved.is_empty() {
            return None;
        }
        let mut batch = StoreBatch {
            seen: std::mem::take(&mut self.seen_unsaved),
            ..StoreBatch::default()
        };
        if !batch.seen.is_empty() && self.now >= self.seen_purged_ms.saturating_add(SEEN_PURGE_MS) {
            batch.forget_seen_before_ms = Some(self.now);
            self.seen_purged_ms = self.now;
        }
        for (id, change) in std::mem::take(&mut self.batch) {
            match change {
                Some(bytes) => batch.puts.push((id, bytes)),
                None => batch.deletes.push(id),
            }
        }
        Some(batch)
    }

    fn write_succeeded(&mut self, acks: Vec<PendingAck>) {
        if std::mem::take(&mut self.store_failing) {
            self.events.push_back(Event::StoreRecovered);
        }
        self.send_acks(acks);
    }

    /// Not durable: take nothing into custody that was not written. The
    /// previous hops still hold those messages and will retry.
    fn write_failed(&mut self, e: String, acks: Vec<PendingAck>, unwritten: Vec<MessageId>) {
        self.store_failing = true;
        self.events.push_back(Event::StoreFailed(e));
        // A delivery goes unacknowledged: the previous hop sends it again,
        // and that copy is acknowledged once a write works.
        for ack in acks {
            if self.held.get(&ack.id).is_some_and(|h| !h.local) {
                self.remove_held(ack.id);
            }
        }
        // This node's own: whoever sent them is told it failed.
        for id in unwritten {
            self.remove_held(id);
            self.tracked.remove(&id);
            self.sos_watch.retain(|(_, watched), _| *watched != id);
        }
        // Seen ids not written only weaken replay protection after a
        // restart; they stay refused while this process runs.
    }

    fn send_acks(&mut self, acks: Vec<PendingAck>) {
        for ack in acks {
            self.send_ack(ack);
        }
    }

    /// The acknowledgement of a message delivered here: it waits for the
    /// caller to take the delivery if that is still to come (a retry too,
    /// while the first copy waits), else for the next write.
    pub(super) fn ack_after_delivery(&mut self, ack: PendingAck) {
        let waiting = self
            .events
            .iter()
            .any(|e| matches!(e, Event::Delivered(d) if d.id == ack.id));
        if waiting {
            self.delivery_acks.push(ack);
        } else {
            self.pending_acks.push(ack);
        }
    }

    /// The caller took delivery `id` (and keeps it, with `seen`): the record
    /// goes into the next write, and the acknowledgements after it. Before,
    /// the record could reach the disk before the caller had kept the
    /// message, and the acknowledgement leave before the inbox write of a
    /// daemon that fills its links before it handles events.
    pub(super) fn delivery_taken(&mut self, id: MessageId, seen: Option<SeenRecord>) {
        self.seen_unsaved.extend(seen);
        if !self.delivery_acks.iter().any(|a| a.id == id) {
            return;
        }
        let (taken, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delivery_acks)
            .into_iter()
            .partition(|a| a.id == id);
        self.delivery_acks = keep;
        self.pending_acks.extend(taken);
    }

    /// The caller took delivery `id` but could not keep it (its inbox
    /// write failed): as far as the previous hop can tell, it never
    /// arrived. It is not acknowledged and not recorded as seen, so the
    /// previous hop, which still holds it, sends it again, and that copy
    /// is delivered again. Call it as the delivery is handled, before the
    /// next write (once its record is on disk, a copy sent again is a
    /// duplicate).
    pub fn delivery_not_kept(&mut self, id: MessageId) {
        let for_it = |a: &PendingAck| a.delivered && a.id == id;
        self.pending_acks.retain(|a| !for_it(a));
        self.delivery_acks.retain(|a| !for_it(a));
        if let Some(in_flight) = self.deferred.as_mut().and_then(|d| d.in_flight.as_mut()) {
            in_flight.acks.retain(|a| !for_it(a));
        }
        self.seen_unsaved.retain(|r| !(r.delivered && r.id == id));
        self.delivered.forget(&id);
    }

    fn send_ack(&mut self, PendingAck { to, id, delivered }: PendingAck) {
        let outcome = match self.held.get(&id).map(|h| h.state) {
            _ if delivered => AckOutcome::Delivered,
            Some(HeldState::Waiting | HeldState::Backoff { .. }) => AckOutcome::Holding,
            Some(_) | None => AckOutcome::Forwarding,
        };
        self.send_frame(to, Class::P0, &Frame::Ack { id, outcome });
        self.stats.custody_frames += 1;
    }
}
