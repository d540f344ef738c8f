//! What reaches this node's inbox: envelopes opened (and not replayed), and
//! SOS calls that came as P0, each on disk before a receipt goes out.

use lifeline_consensus::Transaction;
use lifeline_crypto::envelope::{self, OpenPolicy};
use lifeline_routing::{Address, Class, Delivery, MessageId};
use prost::Message as _;
use rand::RngExt;
use tracing::{debug, error, warn};

use super::{INBOX_KEEP, Node, node_id, ts};
use crate::mesh;
use crate::metrics::{self, class_name};
use crate::pb::control as api;
use crate::pb::mesh::{AppPayload, app_payload};

impl Node {
    pub(super) fn on_delivered(&mut self, now: u64, d: Delivery) {
        self.metrics.message(d.class, "delivered");
        self.metrics
            .delivery_latency
            .get_or_create(&metrics::ClassLabel {
                class: class_name(d.class).into(),
            })
            .observe(now.saturating_sub(d.created_ms) as f64 / 1000.0);
        let payload: AppPayload = match mesh::decode_payload(&d.payload) {
            Ok(p) => p,
            Err(e) => {
                debug!(id = %d.id, "a delivered payload did not decode: {e}");
                return;
            }
        };
        match payload.kind {
            Some(app_payload::Kind::Envelope(bytes)) if !d.broadcast => {
                let opened = envelope::open(
                    &bytes,
                    &self.keys.identity,
                    &self.keys.prekeys,
                    &mut self.replay,
                    ts(now),
                    &OpenPolicy::default(),
                );
                match opened {
                    Ok(message) => {
                        let entry = api::InboxMessage {
                            id: d.id.to_string(),
                            from: message.sender.to_string(),
                            text: message.content,
                            kind: "message".into(),
                            received_ms: now,
                            sent_ms: message.created_at.as_unix_millis(),
                            hops: d.hops,
                            lat_micro: None,
                            lon_micro: None,
                        };
                        // On disk before the receipt says it arrived.
                        if self.keep(&entry, &d.id)
                            && let Err(e) =
                                self.router
                                    .send_receipt(now, Address::from(message.sender), d.id)
                        {
                            warn!(id = %d.id, "cannot send the receipt: {e}");
                        }
                    }
                    Err(e) => warn!(id = %d.id, "a message for this node did not open: {e}"),
                }
            }
            // An SOS is one only as P0, under P0's limits: the same payload
            // in another class (a P3 broadcast from a throwaway key, say) is
            // not shown to anyone as an SOS.
            Some(app_payload::Kind::Sos(sos)) if d.class == Class::P0 => {
                let Some(origin) = d.origin.as_ref().and_then(node_id) else {
                    return;
                };
                let entry = api::InboxMessage {
                    id: d.id.to_string(),
                    from: origin.to_string(),
                    text: sos.text.into_bytes(),
                    kind: "sos".into(),
                    received_ms: now,
                    sent_ms: d.created_ms,
                    hops: d.hops,
                    lat_micro: sos.lat_micro,
                    lon_micro: sos.lon_micro,
                };
                warn!(from = %origin, id = %d.id, "SOS received");
                self.keep(&entry, &d.id);
            }
            Some(app_payload::Kind::Transaction(bytes)) => match Transaction::from_bytes(&bytes) {
                Ok(tx) => self.pool(tx),
                Err(e) => debug!("a broadcast transaction is invalid: {e}"),
            },
            Some(app_payload::Kind::Sos(_)) => {
                debug!(id = %d.id, class = ?d.class, "an SOS payload that did not come as P0 is ignored");
            }
            _ => {}
        }
    }

    /// Writes an inbox entry (synced) and tells watchers; false if it could
    /// not be written.
    fn keep(&mut self, entry: &api::InboxMessage, id: &MessageId) -> bool {
        let mut key = entry.received_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&id.0);
        if let Err(e) = self.inbox.put(&key, &entry.encode_to_vec()) {
            error!("cannot write the inbox: {e}");
            self.heartbeat.write_failed(e.to_string());
            return false;
        }
        self.heartbeat.write_succeeded();
        let _ = self.inbox_watch.send(entry.clone());
        if self.rng.random_ratio(1, 256) {
            let _ = self.inbox.trim(INBOX_KEEP);
        }
        true
    }
}
