//! Where nodes are: location registrations with landmarks, lookups of a
//! node's home, and scoped forwarding towards them.

use super::{MessageStore, Router};
use crate::routes::Metric;
use crate::wire::{Address, Found, Frame, Location, Lookup, Message};
use crate::{Class, locate};

impl<S: MessageStore> Router<S> {
    /// Where a unicast for `destination` heads from here, and the landmark
    /// it carries as `via` (docs/routing.md, Scoped meshes): the
    /// destination itself if this node has a route to it (or the mesh is
    /// not scoped); otherwise the landmark it already heads for; otherwise
    /// the landmark the destination registered with here, or that this
    /// node learned from a lookup; otherwise nowhere yet while a lookup for
    /// it is under way (an SOS does not wait); otherwise its home, unless
    /// this node is where it was heading (it waits here).
    pub(super) fn heading(&self, m: &Message, destination: Address) -> (Address, Option<Address>) {
        let Some(scope) = &self.scope else {
            return (destination, None);
        };
        if self.table.next_hop(&destination).is_some() {
            return (destination, None);
        }
        if let Some(via) = m
            .via
            .filter(|v| *v != self.me && self.table.next_hop(v).is_some())
        {
            return (via, Some(via));
        }
        if let Some(landmark) = scope
            .registry
            .landmark(&destination)
            .or_else(|| {
                scope
                    .lookups
                    .landmark(&destination, self.now)
                    .filter(|l| self.table.next_hop(l).is_some())
            })
            .filter(|l| *l != self.me)
        {
            return (landmark, Some(landmark));
        }
        if m.via.is_none() && m.body.class != Class::P0 && scope.lookups.pending(&destination) {
            return (destination, None);
        }
        if m.via != Some(self.me)
            && let Some(home) = self.home_of(&destination).filter(|h| *h != self.me)
        {
            return (home, Some(home));
        }
        (destination, None)
    }

    /// The home landmark of `node` among the landmarks this node knows
    /// (itself included, if it is one).
    pub(super) fn home_of(&self, node: &Address) -> Option<Address> {
        let me = self
            .scope
            .as_ref()
            .is_some_and(|s| s.landmark)
            .then_some(&self.me);
        locate::home(node, self.table.unlimited().map(|(l, _)| l).chain(me))
    }

    /// Scoped meshes: keeps this node's reach covering its nearest landmark,
    /// and registers with its home when the nearest landmark or the home
    /// changed, and once a refresh interval.
    pub(super) fn check_location(&mut self, now: u64) {
        let refresh = self.config.refresh_interval_ms;
        let Some(scope) = &mut self.scope else {
            return;
        };
        scope.next_check = now.saturating_add(locate::CHECK_INTERVAL_MS);
        if scope.landmark {
            return;
        }
        let zone = scope.zone;
        let registered = scope.registered;
        let mut landmarks = locate::LandmarkSet::default();
        let mut nearest: Option<(Metric, Address)> = None;
        for (l, metric) in self.table.unlimited() {
            landmarks.add(l);
            if nearest.is_none_or(|n| (metric, *l) < n) {
                nearest = Some((metric, *l));
            }
        }
        let Some((metric, landmark)) = nearest else {
            return;
        };
        let home = match scope.home.filter(|(set, _)| *set == landmarks) {
            Some((_, home)) => home,
            None => {
                let home = self.home_of(&self.me);
                if let Some(scope) = &mut self.scope {
                    scope.home = Some((landmarks, home));
                }
                home
            }
        };
        self.table.set_reach(locate::reach(zone, metric));
        self.drain_control();
        let Some(home) = home else {
            return;
        };
        let due = registered.is_none_or(|(h, l, at)| {
            h != home || l != landmark || now >= at.saturating_add(refresh)
        });
        let Some(hop) = self.table.next_hop(&home).copied().filter(|_| due) else {
            return;
        };
        let location = Location::new(&self.identity, home, landmark, now);
        if self.send_locate(hop, location)
            && let Some(scope) = &mut self.scope
        {
            scope.registered = Some((home, landmark, now));
        }
    }

    /// A registration arrived: kept if it is for this node (and signed by
    /// the node it registers), passed on towards its home otherwise.
    pub(super) fn handle_locate(&mut self, now: u64, from: Address, location: Location) {
        if location.home != self.me {
            let home = location.home;
            self.pass_on(&home, from, Frame::Locate(Box::new(location)));
            return;
        }
        let skew = self.config.max_clock_skew_ms;
        let Some(scope) = &mut self.scope else {
            return;
        };
        // Relays do not check signatures, so a bad one is not held against
        // the neighbour that passed it on.
        if location.issued_ms > now.saturating_add(skew) || !location.verify() {
            self.stats.locations_refused += 1;
            return;
        }
        if !scope.registry.insert(&location, now) {
            return;
        }
        // Messages that waited here for it go on.
        self.forward_waiting(now, &location.node);
    }

    /// A source in a scoped mesh with a message for `destination` and no
    /// route to it asks the destination's home where it is, once (see
    /// [`locate::Lookups`]). The answer comes back by way of the landmark
    /// this node registered with (or this node, if it is a landmark).
    pub(super) fn look_up(&mut self, now: u64, destination: Address) {
        let Some(scope) = &self.scope else {
            return;
        };
        // Cheap checks first: finding the home scores every landmark.
        if self.table.next_hop(&destination).is_some()
            || scope.registry.landmark(&destination).is_some()
            || !scope.lookups.may_start(&destination, now)
        {
            return;
        }
        let asker_landmark = if scope.landmark {
            Some(self.me)
        } else {
            scope.registered.map(|(_, landmark, _)| landmark)
        };
        let Some(asker_landmark) = asker_landmark else {
            return; // Not registered yet: an answer could not find us.
        };
        let Some(home) = self.home_of(&destination).filter(|h| *h != self.me) else {
            return;
        };
        let Some(hop) = self.table.next_hop(&home).copied() else {
            return;
        };
        let Some(scope) = &mut self.scope else {
            return;
        };
        if !scope.lookups.start(&destination, now) {
            return;
        }
        let lookup = Lookup {
            home,
            node: destination,
            asker: self.me,
            asker_landmark,
        };
        if self.send_scoped(hop, Frame::Lookup(Box::new(lookup))) {
            self.stats.lookups_sent += 1;
        }
    }

    /// A lookup arrived: answered with the registration if it is for this
    /// node (as a home), passed on towards its home otherwise.
    pub(super) fn handle_lookup(&mut self, from: Address, lookup: Lookup) {
        if lookup.home != self.me {
            let home = lookup.home;
            self.pass_on(&home, from, Frame::Lookup(Box::new(lookup)));
            return;
        }
        let Some(location) = self
            .scope
            .as_ref()
            .and_then(|s| s.registry.get(&lookup.node))
            .cloned()
        else {
            return; // Not registered here (yet): the asker times out.
        };
        let found = Found {
            asker: lookup.asker,
            asker_landmark: lookup.asker_landmark,
            location,
        };
        self.pass_found(None, found);
    }

    /// Sends an answer on towards its asker, by way of the asker's
    /// landmark until a route to the asker is known; never back to the
    /// neighbour it came `from` (it starts at the home, which answers
    /// whichever way the lookup came).
    pub(super) fn pass_found(&mut self, from: Option<Address>, found: Found) {
        let hop = self.table.next_hop(&found.asker).or_else(|| {
            (found.asker_landmark != self.me)
                .then(|| self.table.next_hop(&found.asker_landmark))
                .flatten()
        });
        if let Some(hop) = hop.copied().filter(|h| Some(*h) != from) {
            self.send_scoped(hop, Frame::Found(Box::new(found)));
        }
    }

    /// An answer arrived: learned if it is for this node and signed by the
    /// node it locates, passed on otherwise. Messages that waited for it go.
    pub(super) fn handle_found(&mut self, now: u64, from: Address, found: Found) {
        if found.asker != self.me {
            self.pass_found(Some(from), found);
            return;
        }
        let skew = self.config.max_clock_skew_ms;
        let location = found.location;
        if location.issued_ms > now.saturating_add(skew) || !location.verify() {
            self.stats.locations_refused += 1;
            return;
        }
        let Some(scope) = &mut self.scope else {
            return;
        };
        if scope.lookups.answer(&location, now) {
            self.stats.lookups_answered += 1;
            self.forward_waiting(now, &location.node);
        }
    }

    /// Queues a registration for a neighbour (class P2, counted as
    /// control traffic). Returns whether it was queued.
    pub(super) fn send_locate(&mut self, to: Address, location: Location) -> bool {
        self.send_scoped(to, Frame::Locate(Box::new(location)))
    }

    /// Passes a registration or lookup on towards `to`, never back to the
    /// neighbour it came `from`.
    pub(super) fn pass_on(&mut self, to: &Address, from: Address, frame: Frame) {
        if let Some(hop) = self.table.next_hop(to).copied().filter(|h| *h != from) {
            self.send_scoped(hop, frame);
        }
    }

    /// Queues a scoped mesh's frame (registration, lookup, answer) for a
    /// neighbour (class P2, counted as control traffic). Returns whether it
    /// was queued.
    pub(super) fn send_scoped(&mut self, to: Address, frame: Frame) -> bool {
        let bytes = frame.encode();
        let len = bytes.len() as u64;
        let queued = self.queue_bytes(to, Class::P2, None, bytes).is_some();
        if queued {
            self.stats.control_frames += 1;
            self.stats.control_bytes += len;
        }
        queued
    }
}
