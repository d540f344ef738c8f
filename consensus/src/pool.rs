//! An authority's pool of transactions waiting for a block.
//!
//! Transactions stay in the pool after a block carries them, until room is
//! needed: that block may yet be reorganised away, and then they must go
//! into another.
//!
//! Anyone can send transactions, with as many keys as they like, so the pool
//! bounds what each sender can make it hold: no nonce more than
//! [`MAX_PER_SENDER`] ahead of the sender's next, so at most that many
//! waiting transactions per sender. When the pool is full, what can never go into a
//! block goes first (carried already, or waiting behind a nonce nobody
//! sent), then the oldest of whichever sender holds the most.

use std::collections::{BTreeSet, HashMap, HashSet};

use lifeline_crypto::{NodeId, Timestamp};
use thiserror::Error;

use crate::state::{ChainState, TxRejected};
use crate::tx::{Action, Transaction, TxHash};

/// Most transactions one block carries.
pub const MAX_BLOCK_TXS: usize = 256;

/// How far ahead of its sender's next nonce a transaction may be: so at most
/// this many of one sender's transactions wait for a block.
pub const MAX_PER_SENDER: u64 = 16;

/// Why the pool did not take a transaction.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PoolRefused {
    /// It is held already.
    #[error("the pool holds this transaction already")]
    Duplicate,
    /// The chain carries its nonce already.
    #[error("nonce {got} is used already (the sender's next is {next})")]
    Used {
        /// The transaction's nonce.
        got: u64,
        /// The sender's next nonce.
        next: u64,
    },
    /// Its nonce is too far ahead of the sender's next.
    #[error(
        "nonce {got} is more than {MAX_PER_SENDER} ahead of the sender's next nonce {next}; \
         send the earlier ones first"
    )]
    TooFarAhead {
        /// The transaction's nonce.
        got: u64,
        /// The sender's next nonce.
        next: u64,
    },
}

/// A bounded pool of transactions.
#[derive(Clone, Debug)]
pub struct TxPool {
    /// In arrival order.
    txs: Vec<Transaction>,
    hashes: HashSet<TxHash>,
    /// Each sender's nonces held.
    nonces: HashMap<NodeId, BTreeSet<u64>>,
    capacity: usize,
}

impl TxPool {
    /// An empty pool for at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        Self {
            txs: Vec::new(),
            hashes: HashSet::new(),
            nonces: HashMap::new(),
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

    /// Whether block `number` on `state` could carry something from the
    /// pool: a transaction with its sender's next nonce, and room for it if
    /// it registers an identity. (One that waits for an earlier nonce, or
    /// for a registration window with room, cannot, so it is no reason to
    /// seal.)
    pub fn has_selectable(&self, state: &ChainState, number: u64) -> bool {
        let room = state.registration_room(number);
        self.txs.iter().any(|t| {
            t.nonce == state.next_nonce(&t.sender)
                && (room || !matches!(t.action, Action::RegisterIdentity { .. }))
        })
    }

    /// Adds `tx`, making room if the pool is full (see the module's
    /// documentation for what goes first).
    pub fn insert(&mut self, tx: Transaction, state: &ChainState) -> Result<(), PoolRefused> {
        let hash = tx.hash();
        if self.hashes.contains(&hash) {
            return Err(PoolRefused::Duplicate);
        }
        let next = state.next_nonce(&tx.sender);
        if tx.nonce < next {
            return Err(PoolRefused::Used {
                got: tx.nonce,
                next,
            });
        }
        if tx.nonce - next >= MAX_PER_SENDER {
            return Err(PoolRefused::TooFarAhead {
                got: tx.nonce,
                next,
            });
        }
        if self.txs.len() >= self.capacity {
            self.make_room(state);
        }
        self.hashes.insert(hash);
        self.nonces.entry(tx.sender).or_default().insert(tx.nonce);
        self.txs.push(tx);
        Ok(())
    }

    /// Frees at least one place: what can never be carried, else the oldest
    /// transaction of the sender holding the most.
    fn make_room(&mut self, state: &ChainState) {
        // Carried already, or behind a gap no transaction in the pool fills.
        let reachable: HashMap<NodeId, u64> = self
            .nonces
            .iter()
            .map(|(sender, nonces)| {
                let mut next = state.next_nonce(sender);
                while nonces.contains(&next) {
                    next += 1;
                }
                (*sender, next)
            })
            .collect();
        let next_nonce = |t: &Transaction| state.next_nonce(&t.sender);
        self.remove_where(|t| {
            t.nonce < next_nonce(t) || reachable.get(&t.sender).is_some_and(|&r| t.nonce > r)
        });
        if self.txs.len() < self.capacity {
            return;
        }
        // The sender holding the most; among equals, the one that came first.
        let most = self.nonces.values().map(BTreeSet::len).max().unwrap_or(0);
        let Some(busiest) = self
            .txs
            .iter()
            .map(|t| t.sender)
            .find(|s| self.nonces.get(s).is_some_and(|n| n.len() == most))
        else {
            return;
        };
        // Its highest nonce: the lower ones stay selectable.
        let highest = self.nonces.get(&busiest).and_then(|n| n.last().copied());
        self.remove_where(|t| t.sender == busiest && Some(t.nonce) == highest);
    }

    fn remove_where(&mut self, mut drop: impl FnMut(&Transaction) -> bool) {
        let (hashes, nonces) = (&mut self.hashes, &mut self.nonces);
        self.txs.retain(|t| {
            if !drop(t) {
                return true;
            }
            hashes.remove(&t.hash());
            if let Some(n) = nonces.get_mut(&t.sender) {
                n.remove(&t.nonce);
                if n.is_empty() {
                    nonces.remove(&t.sender);
                }
            }
            false
        });
    }

    /// What the next block on `state`, at `number` and `timestamp`, carries:
    /// each transaction that applies there, in arrival order (a sender's in
    /// nonce order), at most [`MAX_BLOCK_TXS`]. A transaction that can never
    /// apply as it stands (a certification by someone who is not an
    /// authority, say) is dropped from the pool, so that it cannot hold back
    /// every block after it.
    pub fn select(
        &mut self,
        state: &ChainState,
        number: u64,
        timestamp: Timestamp,
    ) -> Vec<Transaction> {
        // Arrival order, but each sender's transactions in nonce order: its
        // k-th arrival takes the place of its k-th lowest nonce.
        let mut by_sender: HashMap<NodeId, Vec<usize>> = HashMap::new();
        for (i, tx) in self.txs.iter().enumerate() {
            by_sender.entry(tx.sender).or_default().push(i);
        }
        let mut order = vec![0; self.txs.len()];
        for places in by_sender.values() {
            let mut sorted = places.clone();
            sorted.sort_by_key(|&i| self.txs[i].nonce);
            for (&place, &i) in places.iter().zip(&sorted) {
                order[place] = i;
            }
        }
        let mut working = state.clone();
        let mut chosen = Vec::new();
        let mut refused = HashSet::new();
        for i in order {
            if chosen.len() >= MAX_BLOCK_TXS {
                break;
            }
            let tx = &self.txs[i];
            if working.next_nonce(&tx.sender) != tx.nonce {
                // Already carried, or waiting for an earlier one.
                continue;
            }
            match working.preview(tx, number, timestamp) {
                Ok(()) => chosen.push(tx.clone()),
                // Waits: for an earlier nonce, or for a block with room.
                Err(TxRejected::BadNonce { .. } | TxRejected::RegistrationLimit { .. }) => {}
                Err(_) => {
                    refused.insert(tx.hash());
                }
            }
        }
        if !refused.is_empty() {
            self.remove_where(|t| refused.contains(&t.hash()));
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
    use lifeline_crypto::{Identity, PrekeyRing};

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
        assert!(pool.insert(tx(&a, 0), &s).is_ok());
        assert_eq!(pool.insert(tx(&a, 0), &s), Err(PoolRefused::Duplicate));
        assert!(pool.insert(tx(&a, 1), &s).is_ok());
        assert!(pool.insert(tx(&b, 0), &s).is_ok());
        let selected = pool.select(&s, 1, Timestamp::from_unix_millis(1));
        // a's two revocations: the second no longer applies once the first
        // has, so it is dropped; b's goes in.
        assert_eq!(selected.len(), 2);
        assert!(selected.iter().all(|t| t.nonce == 0));
        // The block is not imported yet: what it carries stays selectable.
        assert!(pool.has_selectable(&s, 1));
    }

    #[test]
    fn a_full_pool_drops_the_oldest() {
        let mut rng = rand::rng();
        let ids: Vec<Identity> = (0..4).map(|_| Identity::generate(&mut rng)).collect();
        let mut pool = TxPool::new(3);
        let s = state();
        for id in &ids {
            pool.insert(tx(id, 0), &s).unwrap();
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
        assert!(pool.insert(bad, &s).is_ok());
        assert!(pool.insert(tx(&b, 0), &s).is_ok());
        let at = Timestamp::from_unix_millis(1);
        let selected = pool.select(&s, 1, at);
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].sender, *b.id());
        assert_eq!(pool.len(), 1, "the certification that cannot apply is gone");
        // Several nonces of one sender go into one block, in order.
        assert!(pool.insert(tx(&a, 0), &s).is_ok());
        let selected = pool.select(&s, 1, at);
        assert_eq!(selected.len(), 2);
    }

    #[test]
    fn a_future_nonce_is_held_but_is_no_reason_to_seal() {
        let mut rng = rand::rng();
        let a = Identity::generate(&mut rng);
        let mut pool = TxPool::new(10);
        let s = state();
        // Nonce 5 while the chain expects 0: it waits, and sealing for it
        // would propose an empty block again and again (issue 23, item 6).
        assert!(pool.insert(tx(&a, 5), &s).is_ok());
        assert!(!pool.has_selectable(&s, 1));
        assert!(
            pool.select(&s, 1, Timestamp::from_unix_millis(1))
                .is_empty()
        );
        // Too far ahead is refused outright.
        assert!(matches!(
            pool.insert(tx(&a, MAX_PER_SENDER), &s),
            Err(PoolRefused::TooFarAhead { .. })
        ));
        // Once the gap is filled, everything goes into one block in order,
        // whatever order it arrived in.
        for nonce in (0..5).rev() {
            pool.insert(tx(&a, nonce), &s).unwrap();
        }
        assert!(pool.has_selectable(&s, 1));
        let nonces: Vec<u64> = pool
            .select(&s, 1, Timestamp::from_unix_millis(1))
            .iter()
            .map(|t| t.nonce)
            .collect();
        // Revocations of one's own key: the first applies, the second no
        // longer does and is dropped; the rest wait behind it.
        assert_eq!(nonces, vec![0]);
    }

    fn register(sender: &Identity, nonce: u64) -> Transaction {
        let ring = PrekeyRing::new(sender, Timestamp::from_unix_millis(1), &mut rand::rng());
        Transaction::sign(
            sender,
            nonce,
            Action::RegisterIdentity {
                display_name: format!("n{nonce}"),
                prekey: ring.current().clone(),
            },
        )
    }

    #[test]
    fn one_sender_holds_a_bounded_share_and_junk_goes_before_real_work() {
        let mut rng = rand::rng();
        let junk = Identity::generate(&mut rng);
        let mut pool = TxPool::new(64);
        let s = state();
        // One sender cannot hold more than its share, however it tries.
        for nonce in 1..MAX_PER_SENDER {
            pool.insert(tx(&junk, nonce), &s).unwrap();
        }
        assert!(matches!(
            pool.insert(tx(&junk, MAX_PER_SENDER), &s),
            Err(PoolRefused::TooFarAhead { .. })
        ));
        // Many throwaway senders, each with a transaction behind a gap:
        // none can ever be carried.
        let throwaway: Vec<Identity> = (0..49).map(|_| Identity::generate(&mut rng)).collect();
        for id in &throwaway {
            pool.insert(tx(id, 3), &s).unwrap();
        }
        assert_eq!(pool.len(), 64);
        // Real work still gets in, and all of it is carried.
        let real: Vec<Identity> = (0..20).map(|_| Identity::generate(&mut rng)).collect();
        for id in &real {
            pool.insert(register(id, 0), &s).unwrap();
        }
        let carried: HashSet<NodeId> = pool
            .select(&s, 1, Timestamp::from_unix_millis(1))
            .iter()
            .map(|t| t.sender)
            .collect();
        assert!(real.iter().all(|id| carried.contains(id.id())));
        assert!(pool.len() <= 64);
        // With no junk left, the sender holding the most gives way first.
        let mut full = TxPool::new(MAX_PER_SENDER as usize + 1);
        for nonce in 0..MAX_PER_SENDER {
            full.insert(register(&junk, nonce), &s).unwrap();
        }
        full.insert(register(&real[0], 0), &s).unwrap();
        full.insert(register(&real[1], 0), &s).unwrap();
        assert!(full.has_selectable(&s, 1));
        let senders: HashSet<NodeId> = full
            .select(&s, 1, Timestamp::from_unix_millis(1))
            .iter()
            .map(|t| t.sender)
            .collect();
        assert!(senders.contains(real[0].id()) && senders.contains(real[1].id()));
    }
}
