//! The per-neighbour queues: messages and control frames handed to the
//! link scheduler in priority order.

use super::{Event, HeldState, MessageStore, PendingControl, Router};
use crate::Class;
use crate::routes::{RouteMessage, Target};
use crate::schedule::{Pushed, QueuedFrame};
use crate::wire::{Address, Frame, Message};

impl<S: MessageStore> Router<S> {
    /// Queues a message for `to`, one hop further. With `custody`, the
    /// message's state follows the frame (acknowledgement expected).
    pub(super) fn enqueue_message(
        &mut self,
        now: u64,
        to: Address,
        m: &Message,
        upstream: Option<Address>,
        custody: bool,
    ) {
        if m.hops_left == 0 {
            return;
        }
        let mut out = m.clone();
        out.hops_left -= 1;
        out.hops_taken = out.hops_taken.saturating_add(1).min(255);
        let class = m.body.class;
        let frame_no = self.send_frame_from(to, class, upstream, &Frame::Message(Box::new(out)));
        self.stats.message_transmissions += 1;
        if !custody {
            return;
        }
        match frame_no {
            Some(frame) => {
                if let Some(n) = self.neighbours.get_mut(&to) {
                    n.custody_frames.insert(frame, m.id);
                }
                self.set_state(m.id, HeldState::Queued { to });
            }
            None => {
                // The link's queue is full of more important frames.
                let until = now.saturating_add(self.config.ack_timeout_ms);
                self.set_state(m.id, HeldState::Backoff { until });
            }
        }
    }

    pub(super) fn send_frame(&mut self, to: Address, class: Class, frame: &Frame) -> Option<u64> {
        self.send_frame_from(to, class, None, frame)
    }

    /// Queues a frame for a neighbour's link; returns its frame number.
    pub(super) fn send_frame_from(
        &mut self,
        to: Address,
        class: Class,
        upstream: Option<Address>,
        frame: &Frame,
    ) -> Option<u64> {
        if !self.neighbours.contains_key(&to) {
            return None;
        }
        self.queue_bytes(to, class, upstream, frame.encode())
    }

    /// Queues an encoded frame for a neighbour's link; returns its number.
    pub(super) fn queue_bytes(
        &mut self,
        to: Address,
        class: Class,
        upstream: Option<Address>,
        bytes: Vec<u8>,
    ) -> Option<u64> {
        let now = self.now;
        let n = self.neighbours.get_mut(&to)?;
        // Idle for the driver: nothing waits, or only bulk its pace holds
        // back (a timer lets that go; this frame may go at once).
        let was_idle = n.scheduler.is_empty()
            || (class != Class::P3 && !n.scheduler.urgent_waiting() && n.pacer.blocked());
        n.next_frame += 1;
        let id = n.next_frame;
        let pushed = n.scheduler.push(QueuedFrame {
            id,
            class,
            upstream,
            bytes,
        });
        let queued = match pushed {
            Pushed::Queued { evicted } => {
                let mut bumped = Vec::new();
                for gone in evicted {
                    match n.custody_frames.remove(&gone.id) {
                        Some(msg) => bumped.push(msg),
                        // Broadcast copies and control: no custody to fall back on.
                        None => self.stats.link_dropped += 1,
                    }
                }
                for msg in bumped {
                    let until = now.saturating_add(self.config.ack_timeout_ms);
                    if self
                        .held
                        .get(&msg)
                        .is_some_and(|h| h.state == HeldState::Queued { to })
                    {
                        self.set_state(msg, HeldState::Backoff { until });
                    }
                }
                Some(id)
            }
            Pushed::Refused(_) => None,
        };
        if was_idle && queued.is_some() {
            self.events.push_back(Event::LinkReady(to));
        }
        queued
    }

    /// Turns routing table output into control frames, one per neighbour.
    pub(super) fn drain_control(&mut self) {
        let mut any = false;
        while let Some((target, message)) = self.table.poll_transmit() {
            any = true;
            let pending = &mut self.pending_control;
            match (target, &message) {
                // Only the latest state of a route matters: a newer update
                // replaces one not sent yet (Babel tolerates lost updates,
                // so this keeps loop freedom).
                (Target::AllNeighbours, RouteMessage::Update { destination, .. }) => {
                    for (updates, _) in pending.one.values_mut() {
                        updates.remove(destination);
                    }
                    pending.all.insert(*destination, message);
                }
                (Target::Neighbour(n), RouteMessage::Update { destination, .. }) => {
                    let (updates, _) = pending.one.entry(n).or_default();
                    updates.insert(*destination, message);
                }
                // Requests, digests and dump requests go after the updates.
                (Target::AllNeighbours, _) => {
                    for n in self.neighbours.keys() {
                        let (_, others) = pending.one.entry(*n).or_default();
                        others.push(message.clone());
                    }
                }
                (Target::Neighbour(n), _) => {
                    pending.one.entry(n).or_default().1.push(message);
                }
            }
        }
        let asking = self.pending_control.one.values().any(|(_, others)| {
            others.iter().any(|m| {
                matches!(
                    m,
                    RouteMessage::SeqnoRequest { .. } | RouteMessage::DumpRequest
                )
            })
        });
        if any && self.control_due.is_none() {
            self.control_due = Some(self.now.saturating_add(self.config.control_delay_ms));
            if self.config.control_delay_ms == 0 {
                self.send_control();
            }
        }
        if asking && self.control_due.is_some() {
            // Someone waits on a seqno request: do not hold it back.
            self.send_control();
        }
    }

    /// Sends the coalesced control messages, one frame per neighbour (more
    /// if they do not fit in one).
    pub(super) fn send_control(&mut self) {
        fn frames<'a>(messages: impl Iterator<Item = &'a RouteMessage<Address>>) -> Vec<Vec<u8>> {
            let messages: Vec<RouteMessage<Address>> = messages.cloned().collect();
            messages
                .chunks(crate::wire::MAX_CONTROL_ENTRIES)
                .map(|chunk| Frame::Control(chunk.to_vec()).encode())
                .collect()
        }
        self.control_due = None;
        let PendingControl { all, mut one } = std::mem::take(&mut self.pending_control);
        let mut shared: Option<Vec<Vec<u8>>> = None;
        let neighbours: Vec<Address> = self.neighbours.keys().copied().collect();
        for to in neighbours {
            let frames = match one.remove(&to) {
                Some((updates, requests)) => {
                    let mut merged = all.clone();
                    merged.extend(updates);
                    frames(merged.values().chain(&requests))
                }
                None if all.is_empty() => continue,
                None => shared.get_or_insert_with(|| frames(all.values())).clone(),
            };
            for bytes in frames {
                let len = bytes.len() as u64;
                if self.queue_bytes(to, Class::P0, None, bytes).is_some() {
                    self.stats.control_frames += 1;
                    self.stats.control_bytes += len;
                }
            }
        }
    }
}
