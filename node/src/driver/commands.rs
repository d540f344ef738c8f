//! The control API's commands: what `lifeline` asks of the daemon (status,
//! peers and routes, sending messages, SOS and acknowledgements, chain
//! queries and transactions), answered on the driver's task.

use lifeline_consensus::Transaction;
use lifeline_crypto::envelope;
use lifeline_crypto::{NodeId, PublicPrekey};
use lifeline_routing::{Address, Class, Destination, MessageId, SendError, SendRequest};
use prost::Message as _;

use super::{INBOX_KEEP, Node, node_id, status_name, ts};
use crate::control::{Command, CommandError};
use crate::mesh;
use crate::pb::control as api;
use crate::pb::mesh::{AppPayload, Sos, app_payload};

impl Node {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let chain = self.chain_status();
                let (held, bytes) = self.router.custody();
                let _ = reply.send(api::StatusReply {
                    id: self.keys.identity.id().to_string(),
                    fingerprint: self.keys.identity.id().fingerprint().to_string(),
                    listen_addrs: self.listen_addrs.iter().map(ToString::to_string).collect(),
                    peers: u32::try_from(self.peers.len()).unwrap_or(u32::MAX),
                    routes: u32::try_from(self.router.routes().count()).unwrap_or(u32::MAX),
                    custody_messages: held as u64,
                    custody_bytes: bytes as u64,
                    chain: Some(chain),
                    relay: self.config.relay,
                    uptime_secs: self.started.elapsed().as_secs(),
                    reachability: self.reachability.clone(),
                    card: lifeline_crypto::armor::encode(
                        lifeline_crypto::armor::Kind::Card,
                        self.keys.prekeys.current().to_bytes(),
                    ),
                    // The control server fills it in: the web app is its.
                    web_urls: Vec::new(),
                });
            }
            Command::Peers(reply) => {
                let mut peers: Vec<api::Peer> = self
                    .peers
                    .iter()
                    .map(|(id, p)| {
                        let pace = p.address.and_then(|a| self.router.pace(&a));
                        api::Peer {
                            id: id.to_string(),
                            addrs: p.addrs.iter().map(ToString::to_string).collect(),
                            rtt_us: p
                                .rtts
                                .last()
                                .map_or(0, |r| u64::try_from(r.as_micros()).unwrap_or(0)),
                            mesh: p.writer.is_some(),
                            misbehaviour: p
                                .address
                                .and_then(|a| self.router.misbehaviour(&a))
                                .map_or(0, |m| m.total())
                                + p.garbage,
                            bulk_pace_bytes_per_s: pace
                                .filter(|s| s.pacing)
                                .map_or(0, |s| s.rate_bytes_per_s),
                            hop_queue_ms: pace.and_then(|s| s.delay_us).map(|us| us / 1000),
                            hop_queue_us: pace.and_then(|s| s.delay_us),
                        }
                    })
                    .collect();
                peers.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(api::PeersReply { peers });
            }
            Command::Routes(reply) => {
                let mut routes = self
                    .router
                    .routes()
                    .map(|(dest, hop, metric)| api::Route {
                        destination: node_id(dest).map_or_else(String::new, |i| i.to_string()),
                        next_hop: node_id(hop).map_or_else(String::new, |i| i.to_string()),
                        metric,
                    })
                    .collect::<Vec<_>>();
                routes.sort_by(|a, b| a.destination.cmp(&b.destination));
                let _ = reply.send(api::RoutesReply { routes });
            }
            Command::Send(request, reply) => {
                let _ = reply.send(self.send(request));
            }
            Command::Sos(request, reply) => {
                let _ = reply.send(self.sos(request));
            }
            Command::SosAck(request, reply) => {
                let _ = reply.send(self.sos_ack(request));
            }
            Command::Inbox { limit, reply } => {
                let receiver = self.inbox_watch.subscribe();
                let kept = self.inbox.newest(limit).map(|entries| {
                    entries
                        .into_iter()
                        .filter_map(|(_, v)| api::InboxMessage::decode(v.as_slice()).ok())
                        .collect()
                });
                let _ = reply
                    .send(kept.map(|k| (k, receiver)).map_err(|e| {
                        CommandError::Internal(format!("cannot read the inbox: {e}"))
                    }));
            }
            Command::MessageStatus(id, reply) => {
                let result = id
                    .parse::<MessageId>()
                    .map_err(|_| {
                        CommandError::BadRequest(format!(
                            "{id:?} is not a message id (32 hex digits)"
                        ))
                    })
                    .map(|id| api::MessageStatusReply {
                        status: self
                            .router
                            .status(&id)
                            .map_or("unknown", status_name)
                            .into(),
                        receipts: self.receipts.get(&id).cloned().unwrap_or_default(),
                    });
                let _ = reply.send(result);
            }
            Command::ChainStatus(reply) => {
                let _ = reply.send(self.chain_status());
            }
            Command::Block(number, reply) => {
                let _ = reply.send(self.block(number));
            }
            Command::SubmitTransaction(bytes, reply) => {
                let _ = reply.send(self.submit(bytes));
            }
            Command::Alerts(query, reply) => {
                let _ = reply.send(self.alerts(&query));
            }
            Command::Vote(request, reply) => {
                let _ = reply.send(self.vote(&request));
            }
            Command::Transact(request, reply) => {
                let _ = reply.send(self.transact(request));
            }
            Command::TransactionStatus(hash, reply) => {
                let _ = reply.send(self.transaction_status(&hash));
            }
            Command::Identities(query, reply) => {
                let _ = reply.send(self.identities(&query));
            }
            Command::AlertDetail(identifier, reply) => {
                let _ = reply.send(self.alert_detail(&identifier));
            }
        }
    }

    pub(super) fn originate(
        &mut self,
        class: Class,
        destination: Destination,
        payload: AppPayload,
        ttl_secs: u64,
    ) -> Result<api::SendReply, CommandError> {
        let now = self.clock();
        let request = SendRequest {
            class,
            destination,
            payload: payload.encode_to_vec(),
            ttl_ms: (ttl_secs > 0).then(|| ttl_secs.saturating_mul(1000)),
        };
        let started = std::time::Instant::now();
        let id = self.router.send_unwritten(now, request).map_err(refused)?;
        self.leave_then_write()?;
        if class == Class::P0 {
            mesh::trace_message("stored", &id, started.elapsed());
        }
        self.metrics.message(class, "sent");
        Ok(api::SendReply { id: id.to_string() })
    }

    /// After [`Router::send_unwritten`] and the like: on its way first, on
    /// disk second, "sent" third. The write is often the slowest step of a
    /// send, and an SOS (or its acknowledgement) need not wait for it.
    /// Until the write succeeds nobody is told it was sent.
    fn leave_then_write(&mut self) -> Result<(), CommandError> {
        self.pump_ready();
        self.settle_write();
        self.router.write().map_err(|e| {
            CommandError::Internal(format!(
                "{e}; it may have left already, but this node will not try it again: send it \
                 again once the disk works"
            ))
        })
    }

    pub(super) fn send(
        &mut self,
        request: api::SendRequest,
    ) -> Result<api::SendReply, CommandError> {
        let to: NodeId = request.to.trim().parse().map_err(|e| {
            CommandError::BadRequest(format!("{:?} is not a lifeline id: {e}", request.to))
        })?;
        if &to == self.keys.identity.id() {
            return Err(CommandError::BadRequest(
                "that is this node's own id".into(),
            ));
        }
        if let Some(r) = self
            .chain
            .as_ref()
            .and_then(|c| c.chain.state().revocation(&to))
        {
            return Err(CommandError::BadRequest(format!(
                "{to}'s key was revoked ({:?}, by {}): whoever holds it now may not be the                  person you mean; ask them for their new id",
                r.reason, r.by
            )));
        }
        let prekey = if request.prekey.is_empty() {
            self.chain
                .as_ref()
                .and_then(|c| c.chain.state().identity(&to).map(|r| r.prekey.clone()))
                .ok_or_else(|| {
                    CommandError::NotFound(format!(
                        "{to} has no prekey on the chain; ask them for their contact card \
                         (`lifeline key card`) and pass it with --card"
                    ))
                })?
        } else {
            let prekey = PublicPrekey::from_bytes(&request.prekey).map_err(|e| {
                CommandError::BadRequest(format!("the contact card is invalid: {e}"))
            })?;
            if prekey.owner() != &to {
                return Err(CommandError::BadRequest(format!(
                    "the contact card belongs to {}, not to {to}",
                    prekey.owner()
                )));
            }
            prekey
        };
        let now = self.clock();
        let sealed = envelope::seal(
            &self.keys.identity,
            &prekey,
            &request.text,
            ts(now),
            &mut self.rng,
        )
        .map_err(|e| CommandError::BadRequest(e.to_string()))?;
        let class = match api::Priority::try_from(request.priority) {
            Ok(api::Priority::Urgent) => Class::P0,
            Ok(api::Priority::Bulk) => Class::P3,
            _ => Class::P2,
        };
        let payload = AppPayload {
            kind: Some(app_payload::Kind::Envelope(sealed.bytes)),
        };
        self.originate(
            class,
            Destination::Node(Address::from(to)),
            payload,
            request.ttl_secs,
        )
    }

    pub(super) fn sos(&mut self, request: api::SosRequest) -> Result<api::SendReply, CommandError> {
        let payload = AppPayload {
            kind: Some(app_payload::Kind::Sos(Sos {
                text: request.text,
                lat_micro: request.lat_micro,
                lon_micro: request.lon_micro,
            })),
        };
        let destination = Destination::Broadcast {
            hops: None,
            area: None,
        };
        self.originate(Class::P0, destination, payload, 0)
    }

    pub(super) fn sos_ack(
        &mut self,
        request: api::SosAckRequest,
    ) -> Result<api::SendReply, CommandError> {
        let id: MessageId = request.id.trim().parse().map_err(|_| {
            CommandError::BadRequest(format!(
                "{:?} is not a message id (32 hex digits)",
                request.id
            ))
        })?;
        let entries = self
            .inbox
            .newest(INBOX_KEEP)
            .map_err(|e| CommandError::Internal(format!("cannot read the inbox: {e}")))?;
        let origin = entries
            .iter()
            .filter_map(|(_, v)| api::InboxMessage::decode(v.as_slice()).ok())
            .find(|m| m.kind == "sos" && m.id == request.id.trim())
            .and_then(|m| m.from.parse::<NodeId>().ok())
            .ok_or_else(|| {
                CommandError::NotFound(format!(
                    "no SOS {id} in this node's inbox; `lifeline inbox` lists the ones received"
                ))
            })?;
        let now = self.clock();
        let ack = self
            .router
            .acknowledge_sos_unwritten(now, Address::from(origin), id, &request.note)
            .map_err(refused)?;
        self.leave_then_write()?;
        Ok(api::SendReply {
            id: ack.to_string(),
        })
    }

    pub(super) fn submit(
        &mut self,
        bytes: Vec<u8>,
    ) -> Result<api::SubmitTransactionReply, CommandError> {
        let tx = Transaction::from_bytes(&bytes)
            .map_err(|e| CommandError::BadRequest(format!("the transaction is invalid: {e}")))?;
        if self.chain.is_none() {
            return Err(CommandError::NoChain);
        }
        let hash = tx.hash();
        self.pool(tx);
        // Every authority pools it; the broadcast carries it there.
        let payload = AppPayload {
            kind: Some(app_payload::Kind::Transaction(bytes)),
        };
        let destination = Destination::Broadcast {
            hops: None,
            area: None,
        };
        self.originate(Class::P2, destination, payload, 3600)?;
        Ok(api::SubmitTransactionReply {
            hash: hash.to_string(),
        })
    }
}

/// A send the router refused: the disk's failure is this node's, anything
/// else (a limit, a role) the request's.
fn refused(e: SendError) -> CommandError {
    match e {
        SendError::Store(e) => CommandError::Internal(e),
        other => CommandError::BadRequest(other.to_string()),
    }
}
