//! An authority's pool of transactions waiting for a block.
//!
//! Transactions stay in the pool after a block carries them, until the pool
//! is full: that block may yet be reorganised away, and then they must go
//! into another. When the pool is full, transactions the head already
//! carries go first, then the oldest.

use std::collections::HashSet;

use lifeline_crypto::Timestamp;

use crate::state::{ChainState, TxRejected};
use crate::tx::{Transaction, TxHash};

/// Most transactions one block carries.
pub const MAX_BLOCK_TXS: usize = 256;

/// A bounded pool of transactions.
#[derive(Clone, Debug)]
pub struct TxPool {
    txs: Vec<Transaction>,
    hashes: HashSet<TxHash>,
    capacity: usize,
}

impl TxPool {
    /// An empty pool for at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        Self {
            txs: Vec::new(),
            hashes: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Whether the pool holds the transaction with this hash.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.hashes.contains(hash)
    }

    /// Whether any transaction still applies on `state` (a block would carry it).
    pub fn has_pending(&self, state: &ChainState) -> bool {
        self.txs
            .iter()
            .any(|t| state.next_nonce(&t.sender) <= t.nonce)
    }

    /// Adds `tx` unless it is already held; when full, first drops what
    /// `state` already carries, then the oldest. Returns whether it was added.
    pub fn insert(&mut self, tx: Transaction, state: &ChainState) -> bool {
        let hash = tx.hash();
        if self.hashes.contains(&hash) {
            return false;
        }
        if self.txs.len() >= self.capacity {
            let hashes = &mut self.hashes;
            self.txs.retain(|t| {
                let keep = state.next_nonce(&t.sender) <= t.nonce;
                if !keep {
                    hashes.remove(&t.hash());
                }
                keep
            });
            if self.txs.len() >= self.capacity {
                let oldest = self.txs.remove(0);
                self.hashes.remove(&oldest.hash());
            }
        }
        self.hashes.insert(hash);
        self.txs.push(tx);
        true
    }

    /// What the next block on `state`, at `number` and `timestamp`, carries:
    /// each transaction that applies there, in arrival order, at most
    /// [`MAX_BLOCK_TXS`]. A transaction that can never apply as it stands
    /// (a certification by someone who is not an authority, say) is dropped
    /// from the pool, so that it cannot hold back every block after it.
    pub fn select(
        &mut self,
        state: &ChainState,
        number: u64,
        timestamp: Timestamp,
    ) -> Vec<Transaction> {
        let mut working = state.clone();
        let mut chosen = Vec::new();
        let mut refused = Vec::new();
        for tx in &self.txs {
            if chosen.len() >= MAX_BLOCK_TXS {
                break;
            }
            if working.next_nonce(&tx.sender) != tx.nonce {
                // Already carried, or waiting for an earlier one.
                continue;
            }
            match working.preview(tx, number, timestamp) {
                Ok(()) => chosen.push(tx.clone()),
                Err(TxRejected::BadNonce { .. }) => {}
                Err(_) => refused.push(tx.hash()),
            }
        }
        if !refused.is_empty() {
            self.txs.retain(|t| !refused.contains(&t.hash()));
            for hash in &refused {
                self.hashes.remove(hash);
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::block::BlockHash;
    use crate::signers::SignerState;
    use crate::tx::Action;
    use lifeline_crypto::Identity;

    fn tx(sender: &Identity, nonce: u64) -> Transaction {
        Transaction::sign(
            sender,
            nonce,
            Action::RevokeIdentity {
                subject: *sender.id(),
                reason: format!("test {nonce}"),
            },
        )
    }

    fn state() -> ChainState {
        ChainState::genesis(SignerState::genesis([]), &BlockHash([0; 32]))
    }

    #[test]
    fn duplicates_are_refused_and_one_nonce_per_sender_is_selected() {
        let mut rng = rand::rng();
        let (a, b) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
        let mut pool = TxPool::new(10);
        let s = state();
        assert!(pool.insert(tx(&a, 0), &s));
        assert!(!pool.insert(tx(&a, 0), &s));
        assert!(pool.insert(tx(&a, 1), &s));
        assert!(pool.insert(tx(&b, 0), &s));
        let selected = pool.select(&s, 1, Timestamp::from_unix_millis(1));
        // a's two revocations: the second no longer applies once the first
        // has, so it is dropped; b's goes in.
        assert_eq!(selected.len(), 2);
        assert!(selected.iter().all(|t| t.nonce == 0));
        assert!(pool.has_pending(&s));
    }

    #[test]
    fn a_full_pool_drops_the_oldest() {
        let mut rng = rand::rng();
        let ids: Vec<Identity> = (0..4).map(|_| Identity::generate(&mut rng)).collect();
        let mut pool = TxPool::new(3);
        let s = state();
        for id in &ids {
            pool.insert(tx(id, 0), &s);
        }
        assert_eq!(pool.len(), 3);
        let senders: Vec<_> = pool
            .select(&s, 1, Timestamp::from_unix_millis(1))
            .iter()
            .map(|t| t.sender)
            .collect();
        assert!(!senders.contains(ids[0].id()));
        assert!(senders.contains(ids[3].id()));
    }

    #[test]
    fn a_transaction_that_cannot_apply_is_dropped_and_holds_back_nothing() {
        let mut rng = rand::rng();
        let (a, b) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
        let mut pool = TxPool::new(10);
        let s = state();
        // a is no authority: its certification can never go into a block.
        let bad = Transaction::sign(
            &a,
            0,
            Action::CertifyRole {
                subject: *b.id(),
                role: "medic".into(),
                expires_at: Timestamp::from_unix_millis(u64::MAX / 2),
            },
        );
        assert!(pool.insert(bad, &s));
        assert!(pool.insert(tx(&b, 0), &s));
        let at = Timestamp::from_unix_millis(1);
        let selected = pool.select(&s, 1, at);
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].sender, *b.id());
        assert_eq!(pool.len(), 1, "the certification that cannot apply is gone");
        // Several nonces of one sender go into one block, in order.
        assert!(pool.insert(tx(&a, 0), &s));
        let selected = pool.select(&s, 1, at);
        assert_eq!(selected.len(), 2);
    }
}
