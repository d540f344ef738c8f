//! The custody write: what custody changed goes to the [`MessageStore`] in
//! one batch, and the acknowledgements waiting on it go out once it is
//! written (see the module doc of [`super`]).

use super::{Event, HeldState, Router, SEEN_PURGE_MS, SendError};
use crate::Class;
use crate::store::{MessageStore, StoreBatch};
use crate::wire::{AckOutcome, Frame};

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
    /// returns `Ok`, and forgotten if it returns an error.
    pub fn write(&mut self) -> Result<(), SendError> {
        self.commit().map_err(SendError::Store)
    }

    /// Writes the batch; on success releases the acknowledgements waiting on
    /// it, on failure forgets what it could not write.
    pub(super) fn commit(&mut self) -> Result<(), String> {
        if self.batch.is_empty() && self.seen_unsaved.is_empty() {
            self.release_acks();
            self.unwritten.clear();
            return Ok(());
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
        match self.store.write(&batch) {
            Ok(()) => {
                if std::mem::take(&mut self.store_failing) {
                    self.events.push_back(Event::StoreRecovered);
                }
                self.release_acks();
                self.unwritten.clear();
                Ok(())
            }
            Err(e) => {
                // Not durable: take nothing into custody that was not written.
                // The previous hops still hold those messages and will retry.
                let e = e.to_string();
                self.store_failing = true;
                self.events.push_back(Event::StoreFailed(e.clone()));
                for (_, id) in std::mem::take(&mut self.pending_acks) {
                    if self.held.get(&id).is_some_and(|h| !h.local) {
                        self.remove_held(id);
                    }
                }
                // This node's own: whoever sent them is told it failed.
                for id in std::mem::take(&mut self.unwritten) {
                    self.remove_held(id);
                    self.tracked.remove(&id);
                    self.sos_watch.retain(|(_, watched), _| *watched != id);
                }
                self.batch.clear();
                // Seen ids not written only weaken replay protection after
                // a restart; they stay refused while this process runs.
                Err(e)
            }
        }
    }

    pub(super) fn release_acks(&mut self) {
        for (to, id) in std::mem::take(&mut self.pending_acks) {
            let outcome = match self.held.get(&id).map(|h| h.state) {
                Some(HeldState::Waiting | HeldState::Backoff { .. }) => AckOutcome::Holding,
                Some(_) | None => AckOutcome::Forwarding,
            };
            self.send_frame(to, Class::P0, &Frame::Ack { id, outcome });
            self.stats.custody_frames += 1;
        }
    }
}
