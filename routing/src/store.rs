//! Where messages in custody are kept: the [`MessageStore`] trait and its
//! in-memory implementation (RocksDB's is in `lifeline-storage`).
//!
//! The router hands the store one [`StoreBatch`] at a time and acknowledges
//! custody to the previous hop only after `write` returned `Ok`, so a store
//! must make a batch that puts messages durable (and atomic) before
//! returning ([`StoreBatch::needs_sync`]). A batch of only deletes and seen
//! ids takes nothing into custody: a store may leave it to be made durable
//! with the next batch that puts, as long as it keeps the order (RocksDB's
//! write-ahead log does). The destination's acknowledgement of a delivery
//! may follow such a batch: the caller kept the delivery itself, with its
//! seen record ([`crate::Delivery::seen`]).
//!
//! The store also keeps the ids the router must go on refusing after a
//! restart ([`SeenRecord`]): broadcasts and floods it handled and messages
//! delivered to it, each until its message expires. Without them, a node
//! that restarted would deliver a replayed message a second time.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use crate::wire::MessageId;

/// A message id the router has seen, kept until its message expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenRecord {
    /// When the message expires (ms since the Unix epoch): the record is
    /// useless after, since an expired message is refused anyway.
    pub expires_ms: u64,
    /// The id (for a network-wide detour flood, the id derived from it).
    pub id: MessageId,
    /// Delivered to this node (`true`), or a broadcast or flood it handled.
    pub delivered: bool,
    /// When the message was created.
    pub created_ms: u64,
}

/// Changes to apply atomically: messages taken into custody (encoded with
/// [`Message::encode_held`](crate::wire::Message::encode_held)), messages
/// handed on, delivered, expired or evicted, and ids seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreBatch {
    /// Messages to keep.
    pub puts: Vec<(MessageId, Vec<u8>)>,
    /// Messages to forget.
    pub deletes: Vec<MessageId>,
    /// Ids seen since the last batch.
    pub seen: Vec<SeenRecord>,
    /// Forget every seen id whose message expired before this time.
    pub forget_seen_before_ms: Option<u64>,
}

impl StoreBatch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty()
            && self.deletes.is_empty()
            && self.seen.is_empty()
            && self.forget_seen_before_ms.is_none()
    }

    /// Whether writing it must wait for the disk (a sync): it takes
    /// messages into custody (or changes ones held), which must be on disk
    /// before the router acknowledges them. A batch of only forgotten
    /// messages and seen ids need not: lost in a power cut, a message
    /// handed on comes back and is sent again (the next hop drops the
    /// duplicate), and a few ids seen last are refused only until the
    /// restart. Under bulk load that is half of a relay's writes.
    pub fn needs_sync(&self) -> bool {
        !self.puts.is_empty()
    }
}

/// Durable custody storage.
pub trait MessageStore {
    /// Why the store failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every message kept, as encoded.
    fn load(&mut self) -> Result<Vec<(MessageId, Vec<u8>)>, Self::Error>;

    /// Every seen id kept (expired ones may be among them).
    fn load_seen(&mut self) -> Result<Vec<SeenRecord>, Self::Error>;

    /// Whether a seen id with this expiry is kept, and if so whether it was
    /// delivered here (`Some(true)`) or only passed on (`Some(false)`; a
    /// store that keeps one record per id keeps the delivered one). The
    /// router asks when its bounded cache may have forgotten an id.
    fn seen_before(&mut self, id: &MessageId, expires_ms: u64)
    -> Result<Option<bool>, Self::Error>;

    /// Applies `batch` atomically, and durably if it puts anything (see the
    /// module's doc): puts first, then deletes (a message both put and
    /// deleted in one batch is gone).
    fn write(&mut self, batch: &StoreBatch) -> Result<(), Self::Error>;
}

/// A store in memory, for tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemoryMessageStore {
    messages: BTreeMap<MessageId, Vec<u8>>,
    seen: BTreeSet<SeenRecord>,
    /// Batches written so far.
    pub writes: u64,
}

impl MemoryMessageStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Whether it holds `id`.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.messages.contains_key(id)
    }

    /// How many seen ids it keeps.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }
}

impl MessageStore for MemoryMessageStore {
    type Error = Infallible;

    fn load(&mut self) -> Result<Vec<(MessageId, Vec<u8>)>, Infallible> {
        Ok(self
            .messages
            .iter()
            .map(|(id, bytes)| (*id, bytes.clone()))
            .collect())
    }

    fn load_seen(&mut self) -> Result<Vec<SeenRecord>, Infallible> {
        Ok(self.seen.iter().copied().collect())
    }

    fn seen_before(&mut self, id: &MessageId, expires_ms: u64) -> Result<Option<bool>, Infallible> {
        let from = SeenRecord {
            expires_ms,
            id: *id,
            delivered: false,
            created_ms: 0,
        };
        let mut kept = None;
        for r in self.seen.range(from..) {
            if (r.expires_ms, r.id) != (expires_ms, *id) {
                break;
            }
            kept = Some(kept.unwrap_or(false) || r.delivered);
        }
        Ok(kept)
    }

    fn write(&mut self, batch: &StoreBatch) -> Result<(), Infallible> {
        self.seen.extend(batch.seen.iter().copied());
        if let Some(before) = batch.forget_seen_before_ms {
            // Ordered by expiry first: keep what expires at `before` or later.
            self.seen = self.seen.split_off(&SeenRecord {
                expires_ms: before,
                id: MessageId([0; 16]),
                delivered: false,
                created_ms: 0,
            });
        }
        for (id, bytes) in &batch.puts {
            self.messages.insert(*id, bytes.clone());
        }
        for id in &batch.deletes {
            self.messages.remove(id);
        }
        self.writes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn seen_ids_are_kept_until_their_message_expired_and_then_forgotten() {
        let record = |expires_ms, byte| SeenRecord {
            expires_ms,
            id: MessageId([byte; 16]),
            delivered: false,
            created_ms: 0,
        };
        let mut store = MemoryMessageStore::new();
        let batch = StoreBatch {
            seen: vec![record(10, 1), record(20, 2), record(30, 3)],
            ..StoreBatch::default()
        };
        assert!(!batch.is_empty());
        store.write(&batch).unwrap();
        let purge = StoreBatch {
            forget_seen_before_ms: Some(20),
            ..StoreBatch::default()
        };
        assert!(!purge.is_empty());
        store.write(&purge).unwrap();
        assert_eq!(
            store.load_seen().unwrap(),
            vec![record(20, 2), record(30, 3)]
        );
    }
}
