//! Where messages in custody are kept: the [`MessageStore`] trait and its
//! in-memory implementation (RocksDB's is in `lifeline-storage`).
//!
//! The router hands the store one [`StoreBatch`] at a time and acknowledges
//! custody to the previous hop only after `write` returned `Ok`, so a store
//! must make a batch durable (and atomic) before returning.

use std::collections::BTreeMap;
use std::convert::Infallible;

use crate::wire::MessageId;

/// Changes to apply atomically: messages taken into custody (encoded with
/// [`Message::encode_held`](crate::wire::Message::encode_held)) and messages
/// handed on, delivered, expired or evicted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreBatch {
    /// Messages to keep.
    pub puts: Vec<(MessageId, Vec<u8>)>,
    /// Messages to forget.
    pub deletes: Vec<MessageId>,
}

impl StoreBatch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// Durable custody storage.
pub trait MessageStore {
    /// Why the store failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every message kept, as encoded.
    fn load(&mut self) -> Result<Vec<(MessageId, Vec<u8>)>, Self::Error>;

    /// Applies `batch` atomically and durably: puts first, then deletes (a
    /// message both put and deleted in one batch is gone).
    fn write(&mut self, batch: &StoreBatch) -> Result<(), Self::Error>;
}

/// A store in memory, for tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemoryMessageStore {
    messages: BTreeMap<MessageId, Vec<u8>>,
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

    fn write(&mut self, batch: &StoreBatch) -> Result<(), Infallible> {
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
