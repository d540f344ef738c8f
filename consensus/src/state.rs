//! Chain state: who is registered, which roles are certified, which keys are
//! revoked, which alerts are in force, each account's nonce, equivocations on
//! record, and the signer set.
//!
//! Maps are persistent (structure-sharing), so keeping one state per
//! not-yet-final block on competing branches costs only what each block
//! changed.

use imbl::{OrdMap, OrdSet};
use lifeline_crypto::{NodeId, PublicPrekey, Timestamp};
use thiserror::Error;

use crate::alert::{Alert, AlertForm, AlertMsgType, DEFAULT_ALERT_LIFETIME, Point};
use crate::block::{BlockHash, Header};
use crate::finality::FinalityVote;
use crate::signers::SignerState;
use crate::tx::{Action, Transaction};

/// A registered identity.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityRecord {
    /// Its id.
    pub id: NodeId,
    /// Its display name (not unique).
    pub display_name: String,
    /// Its current prekey.
    pub prekey: PublicPrekey,
    /// The block that registered it.
    pub registered_in: u64,
}

/// A role an authority certified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleGrant {
    /// The role, e.g. "medic".
    pub role: String,
    /// The authority that certified it.
    pub certifier: NodeId,
    /// Until when.
    pub expires_at: Timestamp,
    /// The block that recorded it.
    pub block: u64,
}

/// A revoked key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Who revoked it: its owner or an authority.
    pub by: NodeId,
    /// Why.
    pub reason: String,
    /// The block that recorded it.
    pub block: u64,
}

/// An alert on the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRecord {
    /// The alert.
    pub alert: Alert,
    /// The authority that published it.
    pub publisher: NodeId,
    /// The block that recorded it.
    pub block: u64,
    /// The identifier of the Update or Cancel that replaced it, if any.
    pub superseded_by: Option<String>,
}

/// A broken finality-voting rule on record: the heights of the two links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteEquivocation {
    /// The signer that voted both.
    pub signer: NodeId,
    /// Source and target heights of one vote.
    pub a: (u64, u64),
    /// Source and target heights of the other.
    pub b: (u64, u64),
    /// The block that recorded the evidence.
    pub recorded_in: u64,
}

/// Equivocation on record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    /// The signer that sealed two blocks at one height.
    pub signer: NodeId,
    /// The height.
    pub number: u64,
    /// The two block hashes.
    pub hashes: (BlockHash, BlockHash),
    /// The block that recorded the evidence.
    pub recorded_in: u64,
}

/// Why a transaction does not apply to the state. The block carrying it is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TxRejected {
    /// The nonce is not the sender's next one (a duplicate or a gap).
    #[error("nonce {got} is not the sender's next nonce {expected}")]
    BadNonce {
        /// The sender's next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The sender's key is revoked.
    #[error("the sender's key is revoked")]
    RevokedSender,
    /// Only authorities may do this.
    #[error("only an authority may {0}")]
    NotAuthority(&'static str),
    /// The sender is already registered.
    #[error("the sender is already registered")]
    AlreadyRegistered,
    /// The identity is not registered.
    #[error("{0} is not registered")]
    NotRegistered(NodeId),
    /// The prekey belongs to someone else.
    #[error("the prekey belongs to another identity")]
    ForeignPrekey,
    /// The prekey is not newer than the current one.
    #[error("the prekey is not newer than the current one")]
    StalePrekey,
    /// The subject's key is revoked.
    #[error("{0} is revoked")]
    SubjectRevoked(NodeId),
    /// The role or alert would already have expired.
    #[error("it expires before the block's time")]
    AlreadyExpired,
    /// Only the key's owner or an authority may revoke it.
    #[error("only the key's owner or an authority may revoke it")]
    NotOwnerOrAuthority,
    /// The key is already revoked.
    #[error("the key is already revoked")]
    AlreadyRevoked,
    /// An alert with this identifier is already on the chain.
    #[error("an alert with identifier {0:?} is already on the chain")]
    DuplicateAlert(String),
    /// An Update or Cancel refers to an alert that is not on the chain or was replaced.
    #[error("alert {0:?} is not on the chain or was already replaced")]
    UnknownReference(String),
    /// A reference names an alert on the chain with another sender.
    #[error(
        "the reference to alert {identifier:?} names sender {named:?}, but the alert on the \
         chain with that identifier was sent by {actual:?}"
    )]
    ReferenceSender {
        /// The identifier.
        identifier: String,
        /// The sender the reference names.
        named: String,
        /// The sender of the alert on the chain.
        actual: String,
    },
    /// Ack and Error messages are not chain records.
    #[error("CAP Ack and Error messages are not published on the chain")]
    UnsupportedMsgType,
    /// The two headers are not an equivocation.
    #[error("not equivocation: {0}")]
    NotEquivocation(&'static str),
    /// This equivocation is already on record.
    #[error("this equivocation is already on record")]
    DuplicateEvidence,
    /// The block, or the window of blocks it is in, already carries as many
    /// registrations as the genesis allows. Not the transaction's fault: it
    /// waits for a later block.
    #[error(
        "the chain takes at most {per_block} registrations per block and {per_window} per \
         {window_blocks} blocks, and this block is full; it waits for a later one"
    )]
    RegistrationLimit {
        /// Per block.
        per_block: u32,
        /// Per window.
        per_window: u32,
        /// Blocks per window.
        window_blocks: u64,
    },
}

/// How fast new identities may join the chain: each one is kept by every
/// node for good, in memory and in every state snapshot, and registering
/// costs nothing but a fresh key. Fixed at genesis, so the authorities
/// choose them for their network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationLimits {
    /// At most this many registrations in one block.
    pub per_block: u32,
    /// At most this many in one window of blocks.
    pub per_window: u32,
    /// Blocks per window: windows are the block numbers `k * window_blocks`
    /// to `(k + 1) * window_blocks - 1`.
    pub window_blocks: u64,
}

impl Default for RegistrationLimits {
    /// 64 per block, 4,096 per 720 blocks (an hour or more at the default
    /// 5 s period): a shelter of hundreds registers within minutes, and a
    /// flood of fresh keys adds at most about 0.8 MiB of state an hour.
    fn default() -> Self {
        Self {
            per_block: 64,
            per_window: 4096,
            window_blocks: 720,
        }
    }
}

/// Registrations counted against [`RegistrationLimits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RegistrationCount {
    /// The block being counted, and how many it carries so far.
    block: (u64, u32),
    /// The window being counted (its index), and how many it holds so far.
    window: (u64, u32),
}

/// A transaction's refusal within a block.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("transaction {index}: {reason}")]
pub struct BlockTxError {
    /// Its position in the block.
    pub index: usize,
    /// Why.
    pub reason: TxRejected,
}

/// Accumulates a block's writes into the state root.
struct Diff(blake3::Hasher);

impl Diff {
    fn new() -> Self {
        Self(blake3::Hasher::new_derive_key(
            "lifeline 2026-11 state diff v1",
        ))
    }

    /// Records one write: a kind, a key and the new value, length-prefixed.
    fn write(&mut self, kind: u8, key: &[u8], value: &[&[u8]]) {
        self.0.update(&[kind]);
        self.part(key);
        self.0
            .update(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
        for v in value {
            self.part(v);
        }
    }

    fn part(&mut self, bytes: &[u8]) {
        self.0
            .update(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_le_bytes());
        self.0.update(bytes);
    }
}

/// Normalises a display name for lookups: case-insensitive, spaces collapsed.
pub fn normalize_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The chain's state after some block.
#[derive(Clone, Debug)]
pub struct ChainState {
    signers: SignerState,
    identities: OrdMap<NodeId, IdentityRecord>,
    names: OrdMap<String, OrdSet<NodeId>>,
    roles: OrdMap<NodeId, Vec<RoleGrant>>,
    revocations: OrdMap<NodeId, Revocation>,
    alerts: OrdMap<String, AlertRecord>,
    nonces: OrdMap<NodeId, u64>,
    equivocations: OrdMap<(NodeId, u64), Equivocation>,
    /// One record per signer: one proof is enough to vote it out.
    vote_equivocations: OrdMap<NodeId, VoteEquivocation>,
    /// The chain's genesis hash: vote evidence must be from this chain.
    genesis: BlockHash,
    root: [u8; 32],
    /// The genesis's limits on registrations (none on a chain whose
    /// genesis predates them), and the count against them.
    registration_limits: Option<RegistrationLimits>,
    registrations: RegistrationCount,
}

impl ChainState {
    /// The state of a genesis block.
    pub fn genesis(signers: SignerState, genesis_hash: &BlockHash) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("lifeline 2026-11 state root v1");
        hasher.update(b"genesis");
        hasher.update(&genesis_hash.0);
        Self::empty(signers, *genesis_hash, *hasher.finalize().as_bytes())
    }

    /// Only signers, with a given root.
    fn empty(signers: SignerState, genesis: BlockHash, root: [u8; 32]) -> Self {
        Self {
            signers,
            identities: OrdMap::new(),
            names: OrdMap::new(),
            roles: OrdMap::new(),
            revocations: OrdMap::new(),
            alerts: OrdMap::new(),
            nonces: OrdMap::new(),
            equivocations: OrdMap::new(),
            vote_equivocations: OrdMap::new(),
            genesis,
            root,
            registration_limits: Some(RegistrationLimits::default()),
            registrations: RegistrationCount::default(),
        }
    }

    /// The same state under the genesis's registration limits (the
    /// defaults until this is called; `None`: unlimited, as chains whose
    /// genesis predates the limits).
    pub fn with_registration_limits(mut self, limits: Option<RegistrationLimits>) -> Self {
        self.registration_limits = limits;
        self
    }

    /// Whether a block at `number` on this state may carry one more
    /// registration. A pool asks this before it plans a block for one.
    pub fn registration_room(&self, number: u64) -> bool {
        self.count_registration(number).is_ok()
    }

    /// The count with one more registration in a block at `number`, or the
    /// refusal if a limit is reached.
    fn count_registration(&self, number: u64) -> Result<RegistrationCount, TxRejected> {
        let Some(limits) = self.registration_limits else {
            return Ok(self.registrations);
        };
        let window = number / limits.window_blocks.max(1);
        let mut count = self.registrations;
        if count.block.0 != number {
            count.block = (number, 0);
        }
        if count.window.0 != window {
            count.window = (window, 0);
        }
        if count.block.1 >= limits.per_block || count.window.1 >= limits.per_window {
            return Err(TxRejected::RegistrationLimit {
                per_block: limits.per_block,
                per_window: limits.per_window,
                window_blocks: limits.window_blocks,
            });
        }
        count.block.1 += 1;
        count.window.1 += 1;
        Ok(count)
    }

    /// The state root: commits to the genesis and every block's writes since.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// The signer set, recent sealers and pending votes.
    pub fn signers(&self) -> &SignerState {
        &self.signers
    }

    pub(crate) fn signers_mut(&mut self) -> &mut SignerState {
        &mut self.signers
    }

    /// Whether `id` is an authority (a current signer).
    pub fn is_authority(&self, id: &NodeId) -> bool {
        self.signers.is_signer(id)
    }

    /// A registered identity.
    pub fn identity(&self, id: &NodeId) -> Option<&IdentityRecord> {
        self.identities.get(id)
    }

    /// Registered identities whose display name matches `name` (ignoring case and spacing).
    pub fn identities_named(&self, name: &str) -> Vec<&IdentityRecord> {
        self.names
            .get(&normalize_name(name))
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.identities.get(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every registered identity, in id order.
    pub fn identities(&self) -> impl Iterator<Item = &IdentityRecord> {
        self.identities.values()
    }

    /// How many identities are registered.
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    /// The roles `id` holds at `now` (unexpired).
    pub fn roles_of(&self, id: &NodeId, now: Timestamp) -> Vec<&RoleGrant> {
        self.roles
            .get(id)
            .map(|grants| grants.iter().filter(|g| g.expires_at > now).collect())
            .unwrap_or_default()
    }

    /// The revocation of `id`, if it is revoked.
    pub fn revocation(&self, id: &NodeId) -> Option<&Revocation> {
        self.revocations.get(id)
    }

    /// How many keys are revoked.
    pub fn revocation_count(&self) -> usize {
        self.revocations.len()
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &NodeId) -> bool {
        self.revocations.contains_key(id)
    }

    /// Alerts in force at `now`, optionally only those that may cover
    /// `near` (see [`Alert::covers`]); most severe first. `lifetime` is how
    /// long one without `<expires>` stays in force (the genesis's
    /// `ChainConfig::alert_lifetime`).
    pub fn alerts_in_force(
        &self,
        now: Timestamp,
        near: Option<Point>,
        lifetime: std::time::Duration,
    ) -> Vec<&AlertRecord> {
        let mut alerts: Vec<&AlertRecord> = self
            .alerts
            .values()
            .filter(|r| r.superseded_by.is_none() && r.alert.msg_type != AlertMsgType::Cancel)
            .filter(|r| r.alert.in_force(now, lifetime))
            .filter(|r| near.is_none_or(|p| r.alert.covers(p)))
            .collect();
        alerts.sort_by_key(|r| {
            (
                r.alert.severity() as i32,
                std::cmp::Reverse(r.alert.sent.at),
            )
        });
        alerts
    }

    /// An alert by identifier (in force or not).
    pub fn alert(&self, identifier: &str) -> Option<&AlertRecord> {
        self.alerts.get(identifier)
    }

    /// The first form's rules (the blocks carrying it were checked by
    /// them): it is not yet expired, and each alert it refers to is on the
    /// chain and not yet replaced. Returns the alerts it replaces.
    fn first_form_replaces(
        &self,
        alert: &Alert,
        timestamp: Timestamp,
    ) -> Result<Vec<String>, TxRejected> {
        if alert.ends(DEFAULT_ALERT_LIFETIME) <= timestamp {
            return Err(TxRejected::AlreadyExpired);
        }
        for reference in &alert.references {
            match self.alerts.get(&reference.identifier) {
                Some(r) if r.superseded_by.is_none() => {}
                _ => return Err(TxRejected::UnknownReference(reference.identifier.clone())),
            }
        }
        Ok(alert
            .references
            .iter()
            .map(|r| r.identifier.clone())
            .collect())
    }

    /// CAP's rules. A new Alert whose every info has expired says nothing;
    /// an Update or Cancel still replaces what it names even when it has
    /// no `<expires>` or one at its `<sent>` ("threat over"). It may name
    /// alerts this chain never carried (issued before it, or elsewhere) and
    /// alerts already replaced (CAP Updates name the whole history). An
    /// alert it names that is on the chain must have the sender it names.
    /// Returns the alerts it replaces that are on the chain and not yet
    /// replaced.
    fn cap_replaces(&self, alert: &Alert, timestamp: Timestamp) -> Result<Vec<String>, TxRejected> {
        let ends = alert.infos.iter().map(|i| i.expires.map(|e| e.at));
        let all_expired =
            !alert.infos.is_empty() && ends.clone().all(|e| e.is_some_and(|e| e <= timestamp));
        if alert.msg_type == AlertMsgType::Alert && all_expired {
            return Err(TxRejected::AlreadyExpired);
        }
        let mut replaced = Vec::new();
        for reference in &alert.references {
            let Some(record) = self.alerts.get(&reference.identifier) else {
                continue;
            };
            if !reference.sender.is_empty() && reference.sender != record.alert.sender {
                return Err(TxRejected::ReferenceSender {
                    identifier: reference.identifier.clone(),
                    named: reference.sender.clone(),
                    actual: record.alert.sender.clone(),
                });
            }
            let replaces = matches!(alert.msg_type, AlertMsgType::Update | AlertMsgType::Cancel);
            if replaces && record.superseded_by.is_none() {
                replaced.push(reference.identifier.clone());
            }
        }
        Ok(replaced)
    }

    /// The next nonce `id` must use.
    pub fn next_nonce(&self, id: &NodeId) -> u64 {
        self.nonces.get(id).copied().unwrap_or(0)
    }

    /// Equivocations on record.
    pub fn equivocations(&self) -> impl Iterator<Item = &Equivocation> {
        self.equivocations.values()
    }

    /// Broken finality-voting rules on record (one per signer).
    pub fn vote_equivocations(&self) -> impl Iterator<Item = &VoteEquivocation> {
        self.vote_equivocations.values()
    }

    /// Applies a block's transactions (after its header's signer rules were
    /// applied to [`Self::signers`]) and moves the state root on. On error the
    /// state is left partly changed: apply to a clone.
    pub fn apply_block(
        &mut self,
        header: &Header,
        txs: &[Transaction],
    ) -> Result<(), BlockTxError> {
        let mut diff = Diff::new();
        diff.write(0, &header.number.to_le_bytes(), &[header.signer.as_bytes()]);
        let signers: Vec<&[u8]> = self
            .signers
            .signers()
            .iter()
            .map(|s| s.as_bytes().as_slice())
            .collect();
        diff.write(1, b"signers", &signers);
        for (index, tx) in txs.iter().enumerate() {
            self.apply_tx(header.number, header.timestamp, tx, &mut diff)
                .map_err(|reason| BlockTxError { index, reason })?;
        }
        let mut hasher = blake3::Hasher::new_derive_key("lifeline 2026-11 state root v1");
        hasher.update(&self.root);
        hasher.update(diff.0.finalize().as_bytes());
        self.root = *hasher.finalize().as_bytes();
        Ok(())
    }

    /// Applies `tx` as a block at `number` and `timestamp` would, without
    /// moving the state root: for choosing what a block carries, on a clone.
    /// On error the state is unchanged.
    pub fn preview(
        &mut self,
        tx: &Transaction,
        number: u64,
        timestamp: Timestamp,
    ) -> Result<(), TxRejected> {
        let mut trial = self.clone();
        trial.apply_tx(number, timestamp, tx, &mut Diff::new())?;
        *self = trial;
        Ok(())
    }

    /// Why `tx` would not apply in a block at `number` and `timestamp`,
    /// taking its nonce as the sender's next one (earlier ones may still be
    /// waiting in a pool).
    pub fn check(
        &self,
        tx: &Transaction,
        number: u64,
        timestamp: Timestamp,
    ) -> Result<(), TxRejected> {
        let mut trial = self.clone();
        trial.nonces.insert(tx.sender, tx.nonce);
        // A full block or window only makes a registration wait.
        trial.registrations = RegistrationCount::default();
        trial.apply_tx(number, timestamp, tx, &mut Diff::new())
    }

    fn apply_tx(
        &mut self,
        number: u64,
        timestamp: Timestamp,
        tx: &Transaction,
        diff: &mut Diff,
    ) -> Result<(), TxRejected> {
        let sender = tx.sender;
        let expected = self.next_nonce(&sender);
        if tx.nonce != expected {
            return Err(TxRejected::BadNonce {
                expected,
                got: tx.nonce,
            });
        }
        if self.is_revoked(&sender) {
            return Err(TxRejected::RevokedSender);
        }
        match &tx.action {
            Action::RegisterIdentity {
                display_name,
                prekey,
            } => {
                if self.identities.contains_key(&sender) {
                    return Err(TxRejected::AlreadyRegistered);
                }
                if prekey.owner() != &sender {
                    return Err(TxRejected::ForeignPrekey);
                }
                self.registrations = self.count_registration(number)?;
                let record = IdentityRecord {
                    id: sender,
                    display_name: display_name.clone(),
                    prekey: prekey.clone(),
                    registered_in: number,
                };
                diff.write(
                    2,
                    sender.as_bytes(),
                    &[display_name.as_bytes(), prekey.to_bytes()],
                );
                self.identities.insert(sender, record);
                self.names
                    .entry(normalize_name(display_name))
                    .or_default()
                    .insert(sender);
            }
            Action::RotatePrekey { prekey } => {
                let current = self
                    .identities
                    .get(&sender)
                    .ok_or(TxRejected::NotRegistered(sender))?;
                if prekey.owner() != &sender {
                    return Err(TxRejected::ForeignPrekey);
                }
                if prekey.created_at() <= current.prekey.created_at() {
                    return Err(TxRejected::StalePrekey);
                }
                let mut record = current.clone();
                record.prekey = prekey.clone();
                diff.write(3, sender.as_bytes(), &[prekey.to_bytes()]);
                self.identities.insert(sender, record);
            }
            Action::CertifyRole {
                subject,
                role,
                expires_at,
            } => {
                if !self.is_authority(&sender) {
                    return Err(TxRejected::NotAuthority("certify roles"));
                }
                if !self.identities.contains_key(subject) {
                    return Err(TxRejected::NotRegistered(*subject));
                }
                if self.is_revoked(subject) {
                    return Err(TxRejected::SubjectRevoked(*subject));
                }
                if *expires_at <= timestamp {
                    return Err(TxRejected::AlreadyExpired);
                }
                diff.write(
                    4,
                    subject.as_bytes(),
                    &[
                        role.as_bytes(),
                        sender.as_bytes(),
                        &expires_at.as_unix_millis().to_le_bytes(),
                    ],
                );
                let grant = RoleGrant {
                    role: role.clone(),
                    certifier: sender,
                    expires_at: *expires_at,
                    block: number,
                };
                let mut grants = self.roles.get(subject).cloned().unwrap_or_default();
                // A new certification of the same role replaces the old one.
                grants.retain(|g| g.role != *role);
                grants.push(grant);
                self.roles.insert(*subject, grants);
            }
            Action::RevokeIdentity { subject, reason } => {
                if *subject != sender && !self.is_authority(&sender) {
                    return Err(TxRejected::NotOwnerOrAuthority);
                }
                if self.is_revoked(subject) {
                    return Err(TxRejected::AlreadyRevoked);
                }
                diff.write(
                    5,
                    subject.as_bytes(),
                    &[sender.as_bytes(), reason.as_bytes()],
                );
                self.revocations.insert(
                    *subject,
                    Revocation {
                        by: sender,
                        reason: reason.clone(),
                        block: number,
                    },
                );
            }
            Action::PublishAlert(alert) => {
                if !self.is_authority(&sender) {
                    return Err(TxRejected::NotAuthority("publish alerts"));
                }
                if matches!(alert.msg_type, AlertMsgType::Ack | AlertMsgType::Error) {
                    return Err(TxRejected::UnsupportedMsgType);
                }
                if self.alerts.contains_key(&alert.identifier) {
                    return Err(TxRejected::DuplicateAlert(alert.identifier.clone()));
                }
                let replaced = match alert.form {
                    AlertForm::First => self.first_form_replaces(alert, timestamp)?,
                    AlertForm::Cap => self.cap_replaces(alert, timestamp)?,
                };
                for reference in replaced {
                    if let Some(old) = self.alerts.get(&reference) {
                        let mut old = old.clone();
                        old.superseded_by = Some(alert.identifier.clone());
                        self.alerts.insert(reference, old);
                    }
                }
                // The two forms commit under different kinds, so that no
                // encoding of one can stand for the other.
                let kind = match alert.form {
                    AlertForm::First => 6,
                    AlertForm::Cap => 10,
                };
                diff.write(
                    kind,
                    alert.identifier.as_bytes(),
                    &[sender.as_bytes(), &alert.state_bytes()],
                );
                self.alerts.insert(
                    alert.identifier.clone(),
                    AlertRecord {
                        alert: (**alert).clone(),
                        publisher: sender,
                        block: number,
                        superseded_by: None,
                    },
                );
            }
            Action::RecordEquivocation { a, b } => {
                let (ha, hb) = (a.header(), b.header());
                if ha.signer != hb.signer {
                    return Err(TxRejected::NotEquivocation(
                        "the headers have different signers",
                    ));
                }
                if ha.number != hb.number {
                    return Err(TxRejected::NotEquivocation(
                        "the headers are at different heights",
                    ));
                }
                if a.hash() == b.hash() {
                    return Err(TxRejected::NotEquivocation(
                        "the headers are the same block",
                    ));
                }
                let key = (ha.signer, ha.number);
                if self.equivocations.contains_key(&key) {
                    return Err(TxRejected::DuplicateEvidence);
                }
                let (x, y) = if a.hash() < b.hash() {
                    (a.hash(), b.hash())
                } else {
                    (b.hash(), a.hash())
                };
                diff.write(
                    7,
                    ha.signer.as_bytes(),
                    &[&ha.number.to_le_bytes(), &x.0, &y.0],
                );
                self.equivocations.insert(
                    key,
                    Equivocation {
                        signer: ha.signer,
                        number: ha.number,
                        hashes: (x, y),
                        recorded_in: number,
                    },
                );
            }
            Action::RecordVoteEquivocation { a, b } => {
                let not = |why| Err(TxRejected::NotEquivocation(why));
                if a.signer != b.signer {
                    return not("the votes have different signers");
                }
                if a.genesis != self.genesis || b.genesis != self.genesis {
                    return not("a vote is for another chain");
                }
                if a.same_link(b) {
                    return not("the votes are for the same link");
                }
                if !a.conflicts_with(b) {
                    return not("the votes keep the voting rule");
                }
                if a.verify().is_err() || b.verify().is_err() {
                    return not("a vote's signature does not verify");
                }
                if self.vote_equivocations.contains_key(&a.signer) {
                    return Err(TxRejected::DuplicateEvidence);
                }
                // In a fixed order, whichever way round it was sent.
                let (x, y) = if a.id() < b.id() { (a, b) } else { (b, a) };
                let heights = |v: &FinalityVote| (v.source.number, v.target.number);
                diff.write(
                    9,
                    a.signer.as_bytes(),
                    &[
                        &x.source.number.to_le_bytes(),
                        &x.target.number.to_le_bytes(),
                        &y.source.number.to_le_bytes(),
                        &y.target.number.to_le_bytes(),
                    ],
                );
                self.vote_equivocations.insert(
                    a.signer,
                    VoteEquivocation {
                        signer: a.signer,
                        a: heights(x),
                        b: heights(y),
                        recorded_in: number,
                    },
                );
            }
        }
        diff.write(8, sender.as_bytes(), &[&(expected + 1).to_le_bytes()]);
        self.nonces.insert(sender, expected + 1);
        Ok(())
    }
}

/// Why a stored state snapshot could not be read.
#[derive(Debug, Error, PartialEq)]
pub enum StateSnapshotError {
    /// Not a well-formed snapshot.
    #[error("malformed state snapshot: {0}")]
    Malformed(#[from] lifeline_crypto::wire::DecodeError),
    /// Well-formed but inconsistent.
    #[error("invalid state snapshot: {0}")]
    Invalid(String),
}

/// Where a snapshot sits in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPoint {
    /// Height.
    pub number: u64,
    /// Block hash.
    pub hash: BlockHash,
    /// Block time.
    pub timestamp: Timestamp,
    /// Total weight of the chain up to it.
    pub total_weight: u64,
}

impl ChainState {
    /// Encodes the whole state as a snapshot taken at `at`.
    pub fn to_snapshot(&self, at: &SnapshotPoint) -> Vec<u8> {
        use crate::wire::pb;
        let signers =
            prost::Message::decode(self.signers.to_snapshot(at.number, &at.hash).as_slice()).ok();
        let snapshot = pb::StateSnapshot {
            number: at.number,
            hash: at.hash.0.to_vec(),
            timestamp_ms: at.timestamp.as_unix_millis(),
            total_weight: at.total_weight,
            root: self.root.to_vec(),
            signers,
            identities: self
                .identities
                .values()
                .map(|r| pb::IdentityEntry {
                    id: r.id.as_bytes().to_vec(),
                    display_name: r.display_name.clone(),
                    prekey: r.prekey.to_bytes().to_vec(),
                    registered_in: r.registered_in,
                })
                .collect(),
            roles: self
                .roles
                .iter()
                .flat_map(|(subject, grants)| {
                    grants.iter().map(move |g| pb::RoleEntry {
                        subject: subject.as_bytes().to_vec(),
                        role: g.role.clone(),
                        certifier: g.certifier.as_bytes().to_vec(),
                        expires_at_ms: g.expires_at.as_unix_millis(),
                        block: g.block,
                    })
                })
                .collect(),
            revocations: self
                .revocations
                .iter()
                .map(|(subject, r)| pb::RevocationEntry {
                    subject: subject.as_bytes().to_vec(),
                    by: r.by.as_bytes().to_vec(),
                    reason: r.reason.clone(),
                    block: r.block,
                })
                .collect(),
            alerts: self
                .alerts
                .values()
                .map(|r| {
                    let first = r.alert.to_first_form();
                    pb::AlertEntry {
                        cap_alert: first.is_none().then(|| r.alert.to_cap_pb()),
                        alert: first,
                        publisher: r.publisher.as_bytes().to_vec(),
                        block: r.block,
                        superseded_by: r.superseded_by.clone().unwrap_or_default(),
                    }
                })
                .collect(),
            nonces: self
                .nonces
                .iter()
                .map(|(account, next)| pb::NonceEntry {
                    account: account.as_bytes().to_vec(),
                    next: *next,
                })
                .collect(),
            equivocations: self
                .equivocations
                .values()
                .map(|e| pb::EquivocationEntry {
                    signer: e.signer.as_bytes().to_vec(),
                    number: e.number,
                    hash_a: e.hashes.0.0.to_vec(),
                    hash_b: e.hashes.1.0.to_vec(),
                    recorded_in: e.recorded_in,
                })
                .collect(),
            vote_equivocations: self
                .vote_equivocations
                .values()
                .map(|e| pb::VoteEquivocationEntry {
                    signer: e.signer.as_bytes().to_vec(),
                    source_a: e.a.0,
                    target_a: e.a.1,
                    source_b: e.b.0,
                    target_b: e.b.1,
                    recorded_in: e.recorded_in,
                })
                .collect(),
            registration_window: self.registrations.window.0,
            registrations_in_window: self.registrations.window.1,
        };
        prost::Message::encode_to_vec(&snapshot)
    }

    /// Decodes a snapshot made by [`Self::to_snapshot`], of the chain with
    /// genesis hash `genesis`.
    pub fn from_snapshot(
        bytes: &[u8],
        genesis: &BlockHash,
    ) -> Result<(Self, SnapshotPoint), StateSnapshotError> {
        use crate::wire::pb;
        use lifeline_crypto::wire::{decode_bounded, fixed};
        const WHAT: &str = "StateSnapshot";
        // No cap of its own: a snapshot comes from this node's own disk,
        // written by `to_snapshot`, and how large a valid one grows is
        // bounded by the chain's rules (the registration limits), not by a
        // size here. Any cap would be a size at which a valid database
        // stopped opening (it was 512 MiB).
        let raw: pb::StateSnapshot = decode_bounded(WHAT, bytes, bytes.len())?;
        let invalid = |what: &str| StateSnapshotError::Invalid(what.to_string());
        let id = |field: &'static str, b: &[u8]| -> Result<NodeId, StateSnapshotError> {
            NodeId::from_public_key_bytes(&fixed(WHAT, field, b)?)
                .map_err(|e| StateSnapshotError::Invalid(format!("{field}: {e}")))
        };
        let signer_bytes =
            prost::Message::encode_to_vec(&raw.signers.ok_or_else(|| invalid("no signers"))?);
        let (signers, _, _) = SignerState::from_snapshot(&signer_bytes)
            .map_err(|e| StateSnapshotError::Invalid(e.to_string()))?;
        let mut state = Self::empty(signers, *genesis, fixed(WHAT, "root", &raw.root)?);
        state.registrations.window = (raw.registration_window, raw.registrations_in_window);
        for e in raw.identities {
            let record = IdentityRecord {
                id: id("identities.id", &e.id)?,
                prekey: PublicPrekey::from_bytes(&e.prekey)
                    .map_err(|e| StateSnapshotError::Invalid(e.to_string()))?,
                display_name: e.display_name,
                registered_in: e.registered_in,
            };
            state
                .names
                .entry(normalize_name(&record.display_name))
                .or_default()
                .insert(record.id);
            state.identities.insert(record.id, record);
        }
        for e in raw.roles {
            let subject = id("roles.subject", &e.subject)?;
            let grant = RoleGrant {
                role: e.role,
                certifier: id("roles.certifier", &e.certifier)?,
                expires_at: Timestamp::from_unix_millis(e.expires_at_ms),
                block: e.block,
            };
            let mut grants = state.roles.get(&subject).cloned().unwrap_or_default();
            grants.push(grant);
            state.roles.insert(subject, grants);
        }
        for e in raw.revocations {
            state.revocations.insert(
                id("revocations.subject", &e.subject)?,
                Revocation {
                    by: id("revocations.by", &e.by)?,
                    reason: e.reason,
                    block: e.block,
                },
            );
        }
        for e in raw.alerts {
            let alert = match (e.alert, e.cap_alert) {
                (Some(first), None) => Alert::from_pb(first),
                (None, Some(cap)) => Alert::from_cap_pb(cap),
                _ => return Err(invalid("an alert entry holds one alert")),
            }
            .map_err(|e| StateSnapshotError::Invalid(e.to_string()))?;
            state.alerts.insert(
                alert.identifier.clone(),
                AlertRecord {
                    alert,
                    publisher: id("alerts.publisher", &e.publisher)?,
                    block: e.block,
                    superseded_by: (!e.superseded_by.is_empty()).then_some(e.superseded_by),
                },
            );
        }
        for e in raw.nonces {
            state
                .nonces
                .insert(id("nonces.account", &e.account)?, e.next);
        }
        for e in raw.equivocations {
            let signer = id("equivocations.signer", &e.signer)?;
            state.equivocations.insert(
                (signer, e.number),
                Equivocation {
                    signer,
                    number: e.number,
                    hashes: (
                        BlockHash(fixed(WHAT, "hash_a", &e.hash_a)?),
                        BlockHash(fixed(WHAT, "hash_b", &e.hash_b)?),
                    ),
                    recorded_in: e.recorded_in,
                },
            );
        }
        for e in raw.vote_equivocations {
            let signer = id("vote_equivocations.signer", &e.signer)?;
            state.vote_equivocations.insert(
                signer,
                VoteEquivocation {
                    signer,
                    a: (e.source_a, e.target_a),
                    b: (e.source_b, e.target_b),
                    recorded_in: e.recorded_in,
                },
            );
        }
        let point = SnapshotPoint {
            number: raw.number,
            hash: BlockHash(fixed(WHAT, "hash", &raw.hash)?),
            timestamp: Timestamp::from_unix_millis(raw.timestamp_ms),
            total_weight: raw.total_weight,
        };
        Ok((state, point))
    }
}
