//! The control API's chain requests: transactions this node signs, votes,
//! the identity registry and alerts.

use std::time::Duration;

use lifeline_consensus::alert::{Alert, Coverage, Point};
use lifeline_consensus::cap;
use lifeline_consensus::state::{AlertRecord, TxRejected};
use lifeline_consensus::tx::{MAX_TX_LEN, TxHash, TxHashParseError};
use lifeline_consensus::wire::pb as chain_pb;
use lifeline_consensus::{Action, SealedBlock, Transaction, Vote};
use lifeline_crypto::NodeId;
use lifeline_crypto::wire::decode_bounded;

use super::{ChainDriver, Node, ts};
use crate::control::{AlertQuery, CommandError};
use crate::pb::control as api;

/// Own transactions remembered as pending (for nonces and status).
const MAX_OWN_PENDING: usize = 256;
/// How long an own transaction counts as pending before its nonce is freed.
const OWN_PENDING_MS: u64 = 10 * 60 * 1000;
/// Canonical blocks searched, newest first, for a transaction's status.
const STATUS_SEARCH_BLOCKS: u64 = 1024;
/// Most identities one answer lists.
const MAX_IDENTITIES: usize = 500;

/// A transaction this node signed that no block has carried yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct OwnTx {
    hash: TxHash,
    nonce: u64,
    at_ms: u64,
}

fn parse_id(field: &str, text: &str) -> Result<NodeId, CommandError> {
    text.trim().parse().map_err(|_| {
        CommandError::BadRequest(format!(
            "{field} {text:?} is not a lifeline id (ids start with 12D3KooW; find one with \
             `lifeline identity show NAME`)"
        ))
    })
}

fn chain_mut(chain: &mut Option<ChainDriver>) -> Result<&mut ChainDriver, CommandError> {
    chain.as_mut().ok_or(CommandError::NoChain)
}

/// What `lifeline alerts` lists: the first info block (the issuer's
/// first language), the most severe severity, and where `near` stands.
fn alert_summary(
    r: &AlertRecord,
    near: Option<(Point, Coverage)>,
    language: &str,
    lifetime: Duration,
    geocodes: &crate::geocodes::GeocodeShapes,
) -> api::Alert {
    let a = &r.alert;
    let info = a.info_in(language);
    let text = |f: fn(&lifeline_consensus::alert::Info) -> &String| {
        info.map(|i| f(i).clone()).unwrap_or_default()
    };
    let areas: Vec<&str> = info
        .map(|i| i.areas.iter().map(|a| a.description.as_str()).collect())
        .unwrap_or_default();
    api::Alert {
        identifier: a.identifier.clone(),
        sender: a.sender.clone(),
        headline: info.map(|i| i.public_text().to_owned()).unwrap_or_default(),
        severity: cap::severity_name(a.severity()).to_owned(),
        expires_ms: a.ends(lifetime).as_unix_millis(),
        event: text(|i| &i.event),
        area: areas.join("; "),
        publisher: r.publisher.to_string(),
        sent_ms: a.sent.at.as_unix_millis(),
        instruction: text(|i| &i.instruction),
        status: format!("{:?}", a.status),
        area_by_code_only: near
            .is_some_and(|(_, c)| matches!(c, Coverage::CodeOnly | Coverage::Everywhere)),
        response_types: info
            .map(|i| {
                i.response_types
                    .iter()
                    .map(|&t| cap::response_type_name(t).to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        until_replaced: a.infos.is_empty() || a.infos.iter().any(|i| i.expires.is_none()),
        language: info.map(|i| i.language.clone()).unwrap_or_default(),
        languages: a.infos.iter().map(|i| i.language.clone()).collect(),
        shapes: info.map(|i| alert_shapes(i, geocodes)).unwrap_or_default(),
    }
}

/// The polygons and circles of `info`'s areas, and the shapes this node
/// has for the region codes they name.
fn alert_shapes(
    info: &lifeline_consensus::alert::Info,
    geocodes: &crate::geocodes::GeocodeShapes,
) -> Vec<api::AlertShape> {
    let at = |p: &Point| api::LatLon {
        lat: p.lat,
        lon: p.lon,
    };
    let mut shapes = Vec::new();
    for area in &info.areas {
        for ring in &area.polygons {
            shapes.push(api::AlertShape {
                area: area.description.clone(),
                ring: ring.iter().map(at).collect(),
                ..Default::default()
            });
        }
        for c in &area.circles {
            shapes.push(api::AlertShape {
                area: area.description.clone(),
                center: Some(at(&c.center)),
                radius_km: c.radius_km,
                ..Default::default()
            });
        }
        for code in &area.geocodes {
            for ring in geocodes.outlines(code).into_iter().flatten() {
                shapes.push(api::AlertShape {
                    area: area.description.clone(),
                    ring: ring.iter().map(at).collect(),
                    geocode: format!("{} {}", code.name, code.value),
                    ..Default::default()
                });
            }
        }
    }
    shapes
}

impl Node {
    /// Signs `request`'s action with this node's key, checks the chain would
    /// take it, and submits it.
    pub(super) fn transact(
        &mut self,
        request: api::TransactRequest,
    ) -> Result<api::TransactReply, CommandError> {
        use api::transact_request::Action as A;
        let now = self.clock();
        let me = *self.keys.identity.id();
        let action = match request.action {
            None => {
                return Err(CommandError::BadRequest(
                    "the request names no action".into(),
                ));
            }
            Some(A::Register(r)) => Action::RegisterIdentity {
                display_name: r.name.trim().to_owned(),
                prekey: self.keys.prekeys.current().clone(),
            },
            Some(A::Certify(r)) => Action::CertifyRole {
                subject: parse_id("the subject", &r.subject)?,
                role: r.role.trim().to_owned(),
                expires_at: ts(r.expires_ms),
            },
            Some(A::Revoke(r)) => Action::RevokeIdentity {
                subject: parse_id("the subject", &r.subject)?,
                reason: r.reason.trim().to_owned(),
            },
            Some(A::Alert(bytes)) => {
                let pb: chain_pb::Alert =
                    decode_bounded("alert", &bytes, MAX_TX_LEN).map_err(|e| {
                        CommandError::BadRequest(format!("the alert is unreadable: {e}"))
                    })?;
                let alert = Alert::from_pb(pb)
                    .map_err(|e| CommandError::BadRequest(format!("the alert is invalid: {e}")))?;
                Action::PublishAlert(Box::new(alert))
            }
            Some(A::CapAlert(bytes)) => {
                let pb: chain_pb::CapAlert = decode_bounded("CAP alert", &bytes, MAX_TX_LEN)
                    .map_err(|e| {
                        CommandError::BadRequest(format!("the alert is unreadable: {e}"))
                    })?;
                let alert = Alert::from_cap_pb(pb)
                    .map_err(|e| CommandError::BadRequest(format!("the alert is invalid: {e}")))?;
                Action::PublishAlert(Box::new(alert))
            }
        };
        let c = chain_mut(&mut self.chain)?;
        let state = c.chain.state();
        let next = state.next_nonce(&me);
        // Forget what has landed, and what waited so long it was surely lost.
        c.own_pending
            .retain(|t| t.nonce >= next && now.saturating_sub(t.at_ms) < OWN_PENDING_MS);
        let nonce = c
            .own_pending
            .iter()
            .map(|t| t.nonce + 1)
            .max()
            .unwrap_or(0)
            .max(next);
        let tx = Transaction::sign(&self.keys.identity, nonce, action);
        if tx.to_bytes().len() > MAX_TX_LEN {
            return Err(CommandError::BadRequest(format!(
                "the transaction is {} bytes, over the chain's limit of {MAX_TX_LEN}; shorten its texts",
                tx.to_bytes().len()
            )));
        }
        let head = c.chain.head();
        state
            .check(
                &tx,
                head.number + 1,
                ts(now.max(head.timestamp.as_unix_millis())),
            )
            .map_err(|e| {
                let hint = match e {
                    TxRejected::NotAuthority(_) => format!(
                        " (this node, {me}, is not one: run the command on an authority's node)"
                    ),
                    _ => String::new(),
                };
                CommandError::BadRequest(format!("the chain would refuse it: {e}{hint}"))
            })?;
        if c.own_pending.len() >= MAX_OWN_PENDING {
            return Err(CommandError::BadRequest(format!(
                "{MAX_OWN_PENDING} transactions from this node are still waiting for a block; \
                 wait for them (`lifeline chain status`)"
            )));
        }
        c.own_pending.push_back(OwnTx {
            hash: tx.hash(),
            nonce,
            at_ms: now,
        });
        let hash = self.submit(tx.to_bytes().to_vec())?.hash;
        Ok(api::TransactReply { hash, nonce })
    }

    /// Where a transaction is: in a recent canonical block, pending here, or unknown.
    pub(super) fn transaction_status(
        &self,
        hash: &str,
    ) -> Result<api::TransactionStatusReply, CommandError> {
        let hash: TxHash = hash
            .parse()
            .map_err(|e: TxHashParseError| CommandError::BadRequest(e.to_string()))?;
        let c = self.chain.as_ref().ok_or(CommandError::NoChain)?;
        let head = c.chain.head().number;
        let finalized = c.chain.finalized().number;
        let oldest = head.saturating_sub(STATUS_SEARCH_BLOCKS).max(1);
        for number in (oldest..=head).rev() {
            let Ok(Some(bytes)) = c.chain.canonical_block(number) else {
                continue;
            };
            let Ok(block) = SealedBlock::from_bytes(&bytes) else {
                continue;
            };
            if block.transactions().iter().any(|t| t.hash() == hash) {
                let status = if number <= finalized {
                    "final"
                } else {
                    "included"
                };
                return Ok(api::TransactionStatusReply {
                    status: status.into(),
                    block: number,
                });
            }
        }
        let pending = c.own_pending.iter().any(|t| t.hash == hash) || c.pool.contains(&hash);
        Ok(api::TransactionStatusReply {
            status: if pending { "pending" } else { "unknown" }.into(),
            block: 0,
        })
    }

    /// An authority's vote, carried in its next block.
    pub(super) fn vote(
        &mut self,
        request: &api::VoteRequest,
    ) -> Result<api::VoteReply, CommandError> {
        let target = parse_id("the authority voted on", &request.target)?;
        let me = *self.keys.identity.id();
        let c = chain_mut(&mut self.chain)?;
        let signers = c.chain.signer_state();
        if !signers.is_signer(&me) {
            return Err(CommandError::BadRequest(
                "this node is not an authority: only authorities vote".into(),
            ));
        }
        match (request.authorize, signers.is_signer(&target)) {
            (true, true) => {
                return Err(CommandError::BadRequest(format!(
                    "{target} is already an authority"
                )));
            }
            (false, false) => {
                return Err(CommandError::BadRequest(format!(
                    "{target} is not an authority, so there is nothing to drop"
                )));
            }
            _ => {}
        }
        c.vote = Some(Vote {
            target,
            authorize: request.authorize,
        });
        self.plan_seal();
        Ok(api::VoteReply {})
    }

    /// Identities by id, by display name, or all.
    pub(super) fn identities(&self, query: &str) -> Result<api::IdentitiesReply, CommandError> {
        let c = self.chain.as_ref().ok_or(CommandError::NoChain)?;
        let state = c.chain.state();
        let now = ts(self.now);
        let query = query.trim();
        let records: Vec<_> = if query.is_empty() {
            state.identities().collect()
        } else if let Ok(id) = query.parse::<NodeId>() {
            state.identity(&id).into_iter().collect()
        } else {
            state.identities_named(query)
        };
        let truncated = records.len() > MAX_IDENTITIES;
        let identities = records
            .into_iter()
            .take(MAX_IDENTITIES)
            .map(|r| {
                let revocation = state.revocation(&r.id);
                api::Identity {
                    id: r.id.to_string(),
                    name: r.display_name.clone(),
                    registered_in: r.registered_in,
                    roles: state
                        .roles_of(&r.id, now)
                        .into_iter()
                        .map(|g| api::Role {
                            role: g.role.clone(),
                            certifier: g.certifier.to_string(),
                            expires_ms: g.expires_at.as_unix_millis(),
                        })
                        .collect(),
                    authority: state.is_authority(&r.id),
                    revoked: revocation.is_some(),
                    revoked_reason: revocation.map(|v| v.reason.clone()).unwrap_or_default(),
                    revoked_by: revocation.map(|v| v.by.to_string()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(api::IdentitiesReply {
            identities,
            truncated,
        })
    }

    /// Alerts in force now, optionally only those covering a point.
    pub(super) fn alerts(&mut self, query: &AlertQuery) -> Vec<api::Alert> {
        let now = ts(self.clock());
        let near = query.near.map(|(lat, lon)| Point { lat, lon });
        self.chain
            .as_ref()
            .map(|c| {
                let lifetime = c.chain.config().alert_lifetime();
                let coverage = |r: &AlertRecord, p: Point| {
                    r.alert
                        .coverage_with(p, &|code| c.geocodes.contains(code, p))
                };
                c.chain
                    .state()
                    .alerts_in_force(now, None, lifetime)
                    .into_iter()
                    .filter_map(|r| {
                        let at = near.map(|p| (p, coverage(r, p)));
                        (at.map(|(_, cov)| cov) != Some(Coverage::Outside))
                            .then(|| alert_summary(r, at, &query.language, lifetime, &c.geocodes))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One alert in full, in force or not.
    pub(super) fn alert_detail(
        &self,
        identifier: &str,
    ) -> Result<api::AlertDetailReply, CommandError> {
        let c = self.chain.as_ref().ok_or(CommandError::NoChain)?;
        let Some(r) = c.chain.state().alert(identifier.trim()) else {
            return Ok(api::AlertDetailReply::default());
        };
        Ok(api::AlertDetailReply {
            found: true,
            alert: r
                .alert
                .to_first_form()
                .map(|a| prost::Message::encode_to_vec(&a))
                .unwrap_or_default(),
            cap_alert: prost::Message::encode_to_vec(&r.alert.to_cap_pb()),
            publisher: r.publisher.to_string(),
            block: r.block,
            superseded_by: r.superseded_by.clone().unwrap_or_default(),
        })
    }
}
