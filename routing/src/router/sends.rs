//! What this node sends itself: messages ([`Router::send`]), receipts and
//! SOS acknowledgements, each written before or with the next write, and
//! tracked for its status.

use super::{Event, Router, SendError, SendRequest, Status, Tracked};
use crate::Class;
use crate::Destination;
use crate::store::MessageStore;
use crate::wire::{
    Address, Body, Kind, MAX_HOPS, MAX_NOTE, MAX_PAYLOAD, MAX_TTL_MS, Message, MessageId, Receipt,
};

impl<S: MessageStore> Router<S> {
    /// Sends a message from this node: on `Ok` it is on disk. With deferred
    /// writes and a batch out, the write refuses (and the message is kept
    /// for the next one); use [`Router::send_unwritten`].
    pub fn send(&mut self, now: u64, request: SendRequest) -> Result<MessageId, SendError> {
        let id = self.send_unwritten(now, request)?;
        self.write()?;
        Ok(id)
    }

    /// Sends a message from this node, and writes it with the next write
    /// ([`Router::write`], [`Router::flush`] or [`Router::poll_event`]),
    /// not now: a driver fills its links first, so that the message is on
    /// its way while the disk takes its copy, then writes, and only then
    /// tells anyone it was sent. If that write fails, the message is
    /// forgotten here (it may have left already).
    pub fn send_unwritten(
        &mut self,
        now: u64,
        request: SendRequest,
    ) -> Result<MessageId, SendError> {
        if request.class == Class::P1 && !self.authorities.contains(&self.me) {
            return Err(SendError::NotAuthority);
        }
        if request.class == Class::P0 && !self.sos_limit.allow(&self.me, now) {
            return Err(SendError::RateLimited {
                burst: self.config.sos_burst,
                interval_ms: self.config.sos_interval_ms,
            });
        }
        self.originate(
            now,
            request.class,
            Kind::Data,
            request.destination,
            request.payload,
            request.ttl_ms,
        )
    }

    /// Sends a signed delivery receipt for `message` to its sender `to` (the
    /// application learns the sender when it opens the envelope), and
    /// writes it. With deferred writes and a batch out, the write refuses;
    /// use [`Router::send_receipt_unwritten`].
    pub fn send_receipt(
        &mut self,
        now: u64,
        to: Address,
        message: MessageId,
    ) -> Result<MessageId, SendError> {
        let id = self.send_receipt_unwritten(now, to, message)?;
        self.write()?;
        Ok(id)
    }

    /// [`Router::send_receipt`], written with the next write, as
    /// [`Router::send_unwritten`] is. Lost in a crash before that write,
    /// the receipt only leaves the sender's status short of "delivered".
    pub fn send_receipt_unwritten(
        &mut self,
        now: u64,
        to: Address,
        message: MessageId,
    ) -> Result<MessageId, SendError> {
        self.originate_receipt(now, Class::P2, Kind::Receipt, to, message, String::new())
    }

    /// The receipt of a signed unicast (one with an origin) of `class`
    /// delivered here, to its `origin`: P0 for P0 (the SOS's sender hears
    /// at once), else P2. The router sends it as it delivers the message,
    /// or, with [`crate::Config::receipt_on_delivery`] off, the caller does once
    /// it has kept the message. Written with the next write, as
    /// [`Router::send_receipt_unwritten`] is.
    pub fn send_delivery_receipt(
        &mut self,
        now: u64,
        class: Class,
        origin: Address,
        message: MessageId,
    ) -> Result<MessageId, SendError> {
        let class = if class == Class::P0 {
            Class::P0
        } else {
            Class::P2
        };
        self.originate_receipt(now, class, Kind::Receipt, origin, message, String::new())
    }

    /// Acknowledges an SOS from `origin` as a responder ("help is coming"),
    /// and writes it. With deferred writes and a batch out, the write
    /// refuses; use [`Router::acknowledge_sos_unwritten`].
    pub fn acknowledge_sos(
        &mut self,
        now: u64,
        origin: Address,
        sos: MessageId,
        note: &str,
    ) -> Result<MessageId, SendError> {
        let id = self.acknowledge_sos_unwritten(now, origin, sos, note)?;
        self.write()?;
        Ok(id)
    }

    /// [`Router::acknowledge_sos`], written with the next write, as
    /// [`Router::send_unwritten`] is: the acknowledgement is P0 too, and
    /// the person who sent the SOS need not wait for the responder's disk
    /// to learn that help is coming.
    pub fn acknowledge_sos_unwritten(
        &mut self,
        now: u64,
        origin: Address,
        sos: MessageId,
        note: &str,
    ) -> Result<MessageId, SendError> {
        let mut note = note.to_string();
        while note.len() > MAX_NOTE {
            note.pop();
        }
        self.originate_receipt(now, Class::P0, Kind::SosAck, origin, sos, note)
    }

    /// A receipt (`Kind::Receipt`) or an SOS acknowledgement
    /// (`Kind::SosAck`) for `message`, from here to `to`.
    pub(super) fn originate_receipt(
        &mut self,
        now: u64,
        class: Class,
        kind: Kind,
        to: Address,
        message: MessageId,
        note: String,
    ) -> Result<MessageId, SendError> {
        let payload = Receipt { message, note }.encode();
        self.originate(now, class, kind, Destination::Node(to), payload, None)
    }

    pub(super) fn originate(
        &mut self,
        now: u64,
        class: Class,
        kind: Kind,
        destination: Destination,
        payload: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<MessageId, SendError> {
        self.now = self.now.max(now);
        self.table.set_time(self.now);
        if payload.len() > MAX_PAYLOAD {
            return Err(SendError::TooLarge(payload.len()));
        }
        let ttl = ttl_ms.unwrap_or(self.config.default_ttl_ms);
        if ttl == 0 || ttl > MAX_TTL_MS {
            return Err(SendError::BadTtl);
        }
        // Unicast data of P2 and P3 goes unsigned, so relays do not learn
        // who writes to whom. Everything else is signed: relays act on its
        // origin (rate limits, authority), and broadcasts are public anyway.
        let signed = matches!(class, Class::P0 | Class::P1)
            || kind != Kind::Data
            || matches!(destination, Destination::Broadcast { .. });
        let (dest, hops, area) = match destination {
            Destination::Node(d) if d == self.me => return Err(SendError::ToSelf),
            Destination::Node(d) => (Some(d), MAX_HOPS, None),
            Destination::Broadcast { hops, area } => {
                (None, hops.unwrap_or(self.config.broadcast_hops), area)
            }
        };
        let body = Body {
            class,
            kind,
            destination: dest,
            origin: signed.then_some(self.me),
            created_ms: now,
            expires_ms: now.saturating_add(ttl),
            area,
            nonce: self.next_nonce(),
            payload,
        };
        let message = Message::new(body, signed.then_some(&self.identity), hops);
        let id = message.id;
        if dest.is_none() {
            self.first_sight(false, &message, now);
            self.remember_broadcast(&message);
            let neighbours: Vec<Address> = self.neighbours.keys().copied().collect();
            for n in &neighbours {
                self.enqueue_message(now, *n, &message, None, false);
            }
            self.track(
                &message,
                if neighbours.is_empty() {
                    Status::Queued
                } else {
                    Status::Forwarded
                },
                now,
            );
            return Ok(id);
        }
        if !self.accept_custody(now, message.clone(), None, true, false) {
            return Err(SendError::CustodyFull);
        }
        self.track(&message, Status::Queued, now);
        // Durable before we say so: the caller writes.
        self.unwritten.push(id);
        if class == Class::P0 {
            self.watch_sos(now, message);
        }
        Ok(id)
    }

    pub(super) fn track(&mut self, message: &Message, status: Status, now: u64) {
        let id = message.id;
        if self.tracked.contains_key(&id) {
            return;
        }
        self.tracked.insert(
            id,
            Tracked {
                destination: message.body.destination,
                class: message.body.class,
                status,
            },
        );
        self.tracked_order
            .insert((message.body.expires_ms.max(now), id));
        while self.tracked.len() > self.config.tracked_messages {
            match self.tracked_order.pop_first() {
                Some((_, old)) => {
                    self.tracked.remove(&old);
                }
                None => break,
            }
        }
        self.emit_after_write(Event::Status { id, status });
    }
}
