//! What reaches this node's inbox: envelopes opened (and not replayed), and
//! SOS calls that came as P0, each on disk before a receipt goes out.

use lifeline_consensus::Transaction;
use lifeline_crypto::Timestamp;
use lifeline_crypto::envelope::{
    self, Envelope, MessageId as EnvelopeId, OpenError, OpenPolicy, OpenedMessage, ReplayGuard,
};
use lifeline_routing::{Address, Class, Delivery, MessageId};
use lifeline_storage::{Inbox, OpenedRecord, StorageError};
use tracing::{debug, error, warn};

use super::{Node, disk_writer, node_id, ts};
use crate::mesh;
use crate::metrics::{self, class_name};
use crate::pb::control as api;
use crate::pb::mesh::{AppPayload, app_payload};

impl Node {
    pub(super) fn on_delivered(&mut self, now: u64, d: Delivery) {
        if d.class == Class::P0 {
            mesh::trace_message("delivered", &d.id, std::time::Duration::ZERO);
        }
        self.metrics.message(d.class, "delivered");
        self.metrics
            .delivery_latency
            .get_or_create(&metrics::ClassLabel {
                class: class_name(d.class).into(),
            })
            .observe(now.saturating_sub(d.created_ms) as f64 / 1000.0);
        // A signed unicast's receipt: once its entry is on disk if it is
        // kept (`Node::kept`), else now.
        let (signed, id, class) = (d.receipt_to(), d.id, d.class);
        if !self.keep_delivery(now, d)
            && let Some(origin) = signed
            && let Err(e) = self.router.send_delivery_receipt(now, class, origin, id)
        {
            warn!(%id, "cannot send the receipt: {e}");
        }
    }

    /// Keeps what `d` brought, if anything: true if an inbox entry was
    /// handed to the disk writer.
    fn keep_delivery(&mut self, now: u64, d: Delivery) -> bool {
        let payload: AppPayload = match mesh::decode_payload(&d.payload) {
            Ok(p) => p,
            Err(e) => {
                debug!(id = %d.id, "a delivered payload did not decode: {e}");
                return false;
            }
        };
        match payload.kind {
            Some(app_payload::Kind::Envelope(bytes)) if !d.broadcast => {
                match self.open_envelope(now, &bytes) {
                    Ok((message, record)) => {
                        let entry = api::InboxMessage {
                            id: d.id.to_string(),
                            from: message.sender.to_string(),
                            text: message.content,
                            kind: "message".into(),
                            received_ms: d.received_ms,
                            sent_ms: message.created_at.as_unix_millis(),
                            hops: d.hops,
                            lat_micro: None,
                            lon_micro: None,
                        };
                        // On disk (with the record that refuses its
                        // replay) before the receipt says it arrived: the
                        // receipt goes once the writer thread reports it.
                        self.keep(entry, &d, Some(record), Some(Address::from(message.sender)));
                        true
                    }
                    Err(e) => {
                        warn!(id = %d.id, "a message for this node did not open: {e}");
                        false
                    }
                }
            }
            // An SOS is one only as P0, under P0's limits: the same payload
            // in another class (a P3 broadcast from a throwaway key, say) is
            // not shown to anyone as an SOS.
            Some(app_payload::Kind::Sos(sos)) if d.class == Class::P0 => {
                let Some(origin) = d.origin.as_ref().and_then(node_id) else {
                    return false;
                };
                let entry = api::InboxMessage {
                    id: d.id.to_string(),
                    from: origin.to_string(),
                    text: sos.text.into_bytes(),
                    kind: "sos".into(),
                    received_ms: d.received_ms,
                    sent_ms: d.created_ms,
                    hops: d.hops,
                    lat_micro: sos.lat_micro,
                    lon_micro: sos.lon_micro,
                };
                warn!(from = %origin, id = %d.id, "SOS received");
                self.keep(entry, &d, None, None);
                true
            }
            Some(app_payload::Kind::Transaction(bytes)) => {
                match Transaction::from_bytes(&bytes) {
                    Ok(tx) => self.pool(tx),
                    Err(e) => debug!("a broadcast transaction is invalid: {e}"),
                }
                false
            }
            Some(app_payload::Kind::Sos(_)) => {
                debug!(id = %d.id, class = ?d.class, "an SOS payload that did not come as P0 is ignored");
                false
            }
            _ => false,
        }
    }

    /// Hands an inbox entry to the disk writer, synced, with the router's
    /// record that `d` was delivered (the router writes that record, and
    /// acknowledges the delivery, only after this entry is reported). Once
    /// it is on disk, watchers are told, and the signer of a signed
    /// unicast and `receipt_to` (a sealed message's sender) get receipts
    /// ([`Node::kept`]); if it cannot be written, the delivery is taken
    /// back ([`Node::not_kept`]). With more entries out than the disk keeps
    /// up with, waits for them first.
    fn keep(
        &mut self,
        entry: api::InboxMessage,
        d: &Delivery,
        opened: Option<OpenedRecord>,
        receipt_to: Option<Address>,
    ) {
        if self.disk.keeping() >= disk_writer::KEEPING_MAX {
            self.settle_write();
        }
        let mut key = entry.received_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&d.id.0);
        let keep = disk_writer::Keep {
            key,
            entry,
            id: d.id,
            opened,
            seen: d.seen,
            receipt_to,
            signed_by: d.receipt_to().map(|o| (d.class, o)),
        };
        let envelope = keep.opened.map(|o| o.id);
        if !self.disk.keep(keep) {
            self.not_kept(d.id, envelope, "the disk writer thread stopped".into());
        }
    }

    /// An inbox entry is on disk: watchers see it, and a signed unicast's
    /// signer and a sealed message's sender get their receipts (written
    /// with the router's next batch).
    pub(super) fn kept(&mut self, keep: disk_writer::Keep) {
        self.heartbeat.write_succeeded();
        let now = self.clock();
        if let Some((class, origin)) = keep.signed_by
            && let Err(e) = self
                .router
                .send_delivery_receipt(now, class, origin, keep.id)
        {
            warn!(id = %keep.id, "cannot send the receipt: {e}");
        }
        if let Some(to) = keep.receipt_to
            && let Err(e) = self.router.send_receipt_unwritten(now, to, keep.id)
        {
            warn!(id = %keep.id, "cannot send the receipt: {e}");
        }
        let _ = self.inbox_watch.send(keep.entry);
    }

    /// An inbox entry could not be written: the router neither
    /// acknowledges the delivery nor remembers it, and its envelope opens
    /// again, so the previous hop, which keeps the message, sends it again
    /// and that copy is kept.
    pub(super) fn not_kept(&mut self, id: MessageId, envelope: Option<[u8; 16]>, error: String) {
        error!(%id, "cannot write the inbox; the previous hop keeps the message and sends it again: {error}");
        self.router.delivery_not_kept(id);
        if let Some(envelope) = envelope {
            self.replay.forget(EnvelopeId(envelope));
        }
        self.heartbeat.write_failed(error);
    }

    /// Opens an envelope for this node, refusing replays: those the memory
    /// guard remembers, and below its floor (it forgets the oldest when
    /// full) or after a restart, those the database recorded. An envelope
    /// older than any message may live is refused too, so that the record
    /// can forget it.
    fn open_envelope(
        &mut self,
        now: u64,
        bytes: &[u8],
    ) -> Result<(OpenedMessage, OpenedRecord), OpenError> {
        let open = |replay: &mut ReplayGuard| {
            envelope::open(
                bytes,
                &self.keys.identity,
                &self.keys.prekeys,
                replay,
                ts(now),
                &OpenPolicy::default(),
            )
        };
        let message = match open(&mut self.replay) {
            Err(OpenError::BeyondReplayWindow(id)) => match self.inbox.was_opened(&id.0) {
                Ok(true) => return Err(OpenError::Replayed(id)),
                // Below the window, not a replay: opened on its own (a
                // store error counts as "not opened": a duplicate in the
                // inbox is better than a lost message).
                Ok(false) | Err(_) => open(&mut ReplayGuard::with_capacity(1))?,
            },
            other => other?,
        };
        if message.created_at.as_unix_millis() < now.saturating_sub(OPENED_KEEP_MS) {
            return Err(OpenError::BeyondReplayWindow(message.message_id));
        }
        let prekey = Envelope::from_bytes(bytes)?.header().prekey;
        self.replay
            .remember(message.message_id, prekey, message.created_at);
        let record = OpenedRecord {
            id: message.message_id.0,
            created_ms: message.created_at.as_unix_millis(),
            prekey,
        };
        Ok((message, record))
    }
}

/// How long an opened envelope is remembered: as long as any message may
/// live in the mesh, and the clock skew allowed. An envelope created
/// earlier is refused, so a replay of one forgotten gets nowhere.
const OPENED_KEEP_MS: u64 = lifeline_routing::wire::MAX_TTL_MS + 10 * 60 * 1000;

/// The memory guard of replays, from the envelopes the database recorded
/// (oldest first: when it is full, the oldest are forgotten first, and
/// the database still knows them).
pub(super) fn load_opened(inbox: &Inbox, now: u64) -> Result<ReplayGuard, StorageError> {
    forget_old_envelopes(inbox, now);
    let mut records = inbox.opened()?;
    records.sort_by_key(|r| r.created_ms);
    let mut replay = ReplayGuard::with_capacity(REPLAY_CAPACITY);
    for r in &records {
        replay.remember(
            EnvelopeId(r.id),
            r.prekey,
            Timestamp::from_unix_millis(r.created_ms),
        );
    }
    Ok(replay)
}

/// Ids of opened envelopes kept in memory (the database keeps the rest).
const REPLAY_CAPACITY: usize = 100_000;

/// Deletes the records of envelopes too old to be opened again.
pub(super) fn forget_old_envelopes(inbox: &Inbox, now: u64) {
    let cutoff = now.saturating_sub(OPENED_KEEP_MS);
    match inbox.opened() {
        Ok(records) => {
            let old: Vec<[u8; 16]> = records
                .iter()
                .filter(|r| r.created_ms < cutoff)
                .map(|r| r.id)
                .collect();
            if let Err(e) = inbox.forget_opened(&old) {
                warn!("cannot forget old envelope records: {e}");
            }
        }
        Err(e) => warn!("cannot read the envelope records: {e}"),
    }
}
