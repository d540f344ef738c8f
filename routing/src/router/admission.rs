//! Admission: what a neighbour may make this node take, and what it is
//! blamed for. The P0 and broadcast limits, the identities the chain
//! vouches for (their SOS have a budget of their own), and the
//! misbehaviour counts that report a neighbour.

use super::{Event, Misbehaviour, Router};
use crate::Class;
use crate::store::MessageStore;
use crate::wire::{Address, Kind, Message};

impl<S: MessageStore> Router<S> {
    /// The identities registered on the chain and not revoked. Their SOS
    /// (and the authorities') pass each neighbour's P0 limit in a budget of
    /// their own, so that a flood of SOS signed by fresh keys, which shares
    /// the other one, cannot hold them back. The chain bounds how fast
    /// identities register, so an attacker cannot mint these.
    pub fn set_registered(&mut self, registered: impl IntoIterator<Item = Address>) {
        self.registered = registered.into_iter().collect();
    }

    /// Whether the chain vouches for `m`'s origin: a registered identity or
    /// an authority. Only for P0 and P1, whose origin signature every relay
    /// checks; a P2 or P3 origin could be anyone's claim.
    pub(super) fn vouched_for(&self, m: &Message) -> bool {
        matches!(m.body.class, Class::P0 | Class::P1)
            && m.body
                .origin
                .is_some_and(|o| self.registered.contains(&o) || self.authorities.contains(&o))
    }

    /// One identity more (`true`) or less (`false`) in the set of
    /// [`Router::set_registered`].
    pub fn note_registered(&mut self, id: Address, registered: bool) {
        if registered {
            self.registered.insert(id);
        } else {
            self.registered.remove(&id);
        }
    }

    /// Counts what `from` is to blame for (never what it only relayed),
    /// halving older counts every `misbehaviour_half_life_ms`.
    pub(super) fn misbehaved(
        &mut self,
        now: u64,
        from: &Address,
        count: impl FnOnce(&mut Misbehaviour),
    ) {
        let threshold = self.config.misbehaviour_threshold;
        let half_life = self.config.misbehaviour_half_life_ms.max(1);
        if let Some(n) = self.neighbours.get_mut(from) {
            let halvings = now.saturating_sub(n.counted_ms) / half_life;
            if halvings > 0 {
                let shift = u32::try_from(halvings.min(63)).unwrap_or(63);
                let c = &mut n.counts;
                for v in [
                    &mut c.invalid,
                    &mut c.rate_limited,
                    &mut c.replays,
                    &mut c.unauthorized,
                ] {
                    *v >>= shift;
                }
                n.counted_ms = n
                    .counted_ms
                    .saturating_add(halvings.saturating_mul(half_life));
                if n.counts.total() < threshold {
                    n.reported = false;
                }
            }
            count(&mut n.counts);
            if !n.reported && n.counts.total() >= threshold {
                n.reported = true;
                self.events.push_back(Event::Misbehaving {
                    neighbour: *from,
                    counts: n.counts,
                });
            }
        }
    }

    /// Checks the P0 limits (per origin for SOS data, per neighbour for all).
    pub(super) fn p0_allowed(&mut self, now: u64, from: Address, m: &Message) -> bool {
        if m.body.class != Class::P0 {
            return true;
        }
        let origin_ok = match (m.body.kind, m.body.origin) {
            (Kind::Data, Some(origin)) => self.sos_limit.allow(&origin, now),
            _ => true,
        };
        let neighbour = if self.vouched_for(m) {
            &mut self.neighbour_p0_vouched
        } else {
            &mut self.neighbour_p0
        };
        let allowed = origin_ok && neighbour.allow(&from, now);
        if !allowed {
            self.over_limit(now, from, m);
        }
        allowed
    }

    /// Checks the broadcast limits of classes P1 to P3 (per origin, and per
    /// neighbour for all origins together). An unsigned broadcast counts
    /// against the neighbour that sent it, as its origin.
    pub(super) fn broadcast_allowed(&mut self, now: u64, from: Address, m: &Message) -> bool {
        if m.body.class == Class::P0 {
            return true;
        }
        let origin = m.body.origin.unwrap_or(from);
        let allowed =
            self.broadcast_origin.allow(&origin, now) && self.neighbour_broadcast.allow(&from, now);
        if !allowed {
            self.over_limit(now, from, m);
        }
        allowed
    }

    /// A message over a rate limit: dropped, and counted against the
    /// neighbour only if it is the message's origin (a relay cannot stop
    /// what others send through it).
    pub(super) fn over_limit(&mut self, now: u64, from: Address, m: &Message) {
        self.stats.rate_limited += 1;
        if m.body.origin == Some(from) {
            self.misbehaved(now, &from, |c| c.rate_limited += 1);
        }
    }
}
