//! The router: one node's sans-IO state machine.
//!
//! Inputs (each takes the time, in ms on any monotonic clock):
//! [`Router::handle_link_up`], [`Router::handle_link_down`],
//! [`Router::handle_packet`], [`Router::send`] (and receipts), and
//! [`Router::handle_timeout`]. Outputs: [`Router::poll_link`] gives the next
//! packet for a neighbour when its link can take one, [`Router::poll_event`]
//! gives deliveries and status, and [`Router::poll_timeout`] says when to call
//! `handle_timeout` next.
//!
//! Custody is durable before it is acknowledged: messages taken into custody
//! are written to the [`MessageStore`] as one batch (group commit) the next
//! time the driver polls, and the custody acknowledgements go out only after
//! that write succeeded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use lifeline_crypto::Identity;
use thiserror::Error;

use crate::Class;
use crate::limits::{RateLimiter, SeenCache};
use crate::link::Reassembler;
use crate::locate::{self, Registry};
use crate::routes::{INFINITY, Metric, RouteMessage, RoutingTable, Target};
use crate::schedule::{LinkScheduler, Pushed, QueuedFrame};
use crate::store::{MessageStore, SeenRecord, StoreBatch};
use crate::wire::{
    AckOutcome, Address, Area, Body, Found, Frame, Kind, Location, Lookup, MAX_HOPS, MAX_NOTE,
    MAX_PAYLOAD, MAX_SUMMARY_ENTRIES, MAX_TTL_MS, Message, MessageId, Packet, Receipt,
    SummaryEntry,
};

/// The router's settings. The defaults suit a phone or a Raspberry Pi.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest fragment on a link, in bytes.
    pub mtu: usize,
    /// Largest fragment of bulk (P3) frames, in bytes: an SOS waits behind
    /// at most one fragment already on the wire, so bulk fragments are
    /// kept short.
    pub bulk_mtu: usize,
    /// Bytes that may wait for one link.
    pub link_queue_bytes: usize,
    /// Most messages held in custody.
    pub custody_max_messages: usize,
    /// Most bytes held in custody.
    pub custody_max_bytes: usize,
    /// Interval of the full routing refresh.
    pub refresh_interval_ms: u64,
    /// How long triggered routing updates wait to be sent together, so that
    /// a burst of changes to one route goes out once (0: at once).
    pub control_delay_ms: u64,
    /// How long to wait for a custody acknowledgement before trying again
    /// (doubled on each retry, up to 16 times).
    pub ack_timeout_ms: u64,
    /// Default lifetime of a message.
    pub default_ttl_ms: u64,
    /// Hop limit of broadcasts sent from here.
    pub broadcast_hops: u32,
    /// Hop limit of the flood used for P0 messages without a route.
    pub flood_hops: u32,
    /// Broadcast, flood and delivered ids remembered (each until its
    /// message expires, so that replays are caught however late).
    pub seen_capacity: usize,
    /// How far in the future a message's creation time may be.
    pub max_clock_skew_ms: u64,
    /// SOS messages per origin: a burst, then one per interval.
    pub sos_burst: u32,
    /// See `sos_burst`.
    pub sos_interval_ms: u64,
    /// P0 frames per neighbour (all origins together): a burst, then one per
    /// interval. This is what stops a Sybil SOS flood from many fresh keys.
    pub neighbour_p0_burst: u32,
    /// See `neighbour_p0_burst`.
    pub neighbour_p0_interval_ms: u64,
    /// Misbehaviour count at which a neighbour is reported.
    pub misbehaviour_threshold: u64,
    /// This node's position (microdegrees), for area-limited broadcasts.
    pub position: Option<(i32, i32)>,
    /// Recent broadcasts kept to hand to neighbours that come up later.
    pub recent_broadcasts: usize,
    /// Statuses of this node's own messages that are tracked.
    pub tracked_messages: usize,
    /// How far a node's route travels, in hops of a good link (about
    /// [`locate::HOP_METRIC`] each); farther nodes are reached through
    /// landmarks (docs/routing.md, Scoped meshes). 0: everywhere, which
    /// suits meshes of up to a few thousand nodes. Every node of a mesh
    /// should use the same setting.
    pub zone_hops: u32,
    /// In a scoped mesh, one node in this many is a landmark, known
    /// everywhere (chosen by a hash of its id).
    pub landmark_one_in: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mtu: 4096,
            bulk_mtu: 384,
            link_queue_bytes: 4 << 20,
            custody_max_messages: 10_000,
            custody_max_bytes: 256 << 20,
            refresh_interval_ms: 300_000,
            control_delay_ms: 50,
            ack_timeout_ms: 10_000,
            default_ttl_ms: 7 * 24 * 3600 * 1000,
            broadcast_hops: 16,
            flood_hops: 8,
            seen_capacity: 100_000,
            max_clock_skew_ms: 600_000,
            sos_burst: 3,
            sos_interval_ms: 20_000,
            neighbour_p0_burst: 60,
            neighbour_p0_interval_ms: 250,
            misbehaviour_threshold: 100,
            position: None,
            recent_broadcasts: 64,
            tracked_messages: 10_000,
            zone_hops: 0,
            landmark_one_in: 64,
        }
    }
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// One node, hop by hop with custody.
    Node(Address),
    /// Everyone within the hop limit (and the area, if given).
    Broadcast {
        /// Hops it may travel (`None`: the configured default).
        hops: Option<u32>,
        /// Stay inside this circle.
        area: Option<Area>,
    },
}

/// A local request to send a message.
#[derive(Clone, Debug)]
pub struct SendRequest {
    /// Its class.
    pub class: Class,
    /// Where it goes.
    pub destination: Destination,
    /// The content (a sealed envelope for personal messages).
    pub payload: Vec<u8>,
    /// Its lifetime (`None`: the configured default).
    pub ttl_ms: Option<u64>,
}

/// Why a local send was refused.
#[derive(Debug, Error)]
pub enum SendError {
    /// The payload is too large.
    #[error("the message is {0} bytes; the most a message may carry is 256 KiB")]
    TooLarge(usize),
    /// The lifetime is zero or more than 30 days.
    #[error("a message's lifetime must be between 1 ms and 30 days")]
    BadTtl,
    /// The destination is this node.
    #[error("the destination is this node itself")]
    ToSelf,
    /// P1 is for authorities the chain vouches for.
    #[error("only an authority may send P1 messages, and this node is not one on the chain")]
    NotAuthority,
    /// Too many SOS messages in a short time.
    #[error("SOS limit reached (3 at once, then one every 20 s); wait and send again")]
    RateLimited,
    /// Custody is full of messages of higher priority.
    #[error("this node's message store is full of higher-priority messages; try again later")]
    CustodyFull,
    /// The message could not be stored.
    #[error("could not store the message: {0}")]
    Store(String),
}

/// Why a router could not start.
#[derive(Debug, Error)]
pub enum RouterError {
    /// The message store could not be read.
    #[error("could not read the message store: {0}")]
    Store(String),
}

/// The status of a message this node sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Held here, waiting for a route or for the next hop to take it.
    Queued,
    /// The next hop took custody and is forwarding it.
    Forwarded,
    /// A relay holds it until its destination can be reached.
    InCustody,
    /// The recipient's signed receipt arrived.
    Delivered,
    /// A responder acknowledged the SOS.
    Acknowledged,
    /// It expired before delivery.
    Expired,
    /// Custody here was full and it was evicted.
    Evicted,
}

impl Status {
    fn is_final(self) -> bool {
        matches!(
            self,
            Status::Delivered | Status::Acknowledged | Status::Expired | Status::Evicted
        )
    }
}

/// Misbehaviour counted against one neighbour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Packets or frames that did not decode or check.
    pub invalid: u64,
    /// P0 frames over the per-origin or per-neighbour limit.
    pub rate_limited: u64,
    /// Messages that arrived already expired.
    pub replays: u64,
    /// P1 messages not signed by an authority.
    pub unauthorized: u64,
}

impl Misbehaviour {
    /// All counts together.
    pub fn total(&self) -> u64 {
        self.invalid + self.rate_limited + self.replays + self.unauthorized
    }
}

/// A message delivered to this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its id.
    pub id: MessageId,
    /// Its class.
    pub class: Class,
    /// Its signer (P0, P1), if any.
    pub origin: Option<Address>,
    /// Whether it was a broadcast.
    pub broadcast: bool,
    /// The content.
    pub payload: Vec<u8>,
    /// Hops it travelled.
    pub hops: u32,
    /// When it was created (ms, the origin's clock).
    pub created_ms: u64,
}

/// Why a message was dropped (always reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its hop limit ran out before its destination.
    HopLimit,
}

/// Something the driver should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message for this node (or a broadcast) arrived.
    Delivered(Delivery),
    /// A message this node sent changed status.
    Status {
        /// The message.
        id: MessageId,
        /// Its new status.
        status: Status,
    },
    /// A receipt or SOS acknowledgement for a message this node sent.
    Receipt {
        /// The message acknowledged.
        message: MessageId,
        /// Who signed the receipt.
        from: Address,
        /// `Receipt` or `SosAck`.
        kind: Kind,
        /// Its note.
        note: String,
    },
    /// Custody was full and a message was evicted.
    Evicted {
        /// The message.
        id: MessageId,
        /// Its class.
        class: Class,
    },
    /// A message in custody expired.
    Expired {
        /// The message.
        id: MessageId,
        /// Its class.
        class: Class,
    },
    /// A message was dropped.
    Dropped {
        /// The message.
        id: MessageId,
        /// Why.
        reason: DropReason,
    },
    /// A neighbour's misbehaviour crossed the threshold.
    Misbehaving {
        /// The neighbour.
        neighbour: Address,
        /// Its counts.
        counts: Misbehaviour,
    },
    /// A link that was idle has something to send: call `poll_link` for it.
    LinkReady(Address),
    /// The message store failed; custody acknowledgements were withheld.
    StoreFailed(String),
    /// Records in the store that could not be read at start-up (kept, not used).
    CorruptRecords(usize),
}

/// Counters for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Routing control bytes queued for links (frames, before fragmenting).
    pub control_bytes: u64,
    /// Routing control frames queued.
    pub control_frames: u64,
    /// Message frames queued for links (first sends, forwards, retries).
    pub message_transmissions: u64,
    /// Custody acknowledgements, summaries and pulls queued.
    pub custody_frames: u64,
    /// Broadcast or flood frames seen again and dropped.
    pub duplicates: u64,
    /// Messages delivered here.
    pub delivered: u64,
    /// Messages evicted from custody.
    pub evicted: u64,
    /// Messages expired in custody.
    pub expired: u64,
    /// Custody retries after a timeout or refusal.
    pub retries: u64,
    /// Frames without custody (broadcast copies, control) evicted from a
    /// full link queue by more important ones.
    pub link_dropped: u64,
    /// Location registrations addressed here and refused (bad signature,
    /// or issued too far in the future), and answers to our lookups
    /// refused for the same reasons.
    pub locations_refused: u64,
    /// Lookups this node sent for destinations of its messages (scoped
    /// meshes).
    pub lookups_sent: u64,
    /// Answers to them learned.
    pub lookups_answered: u64,
    /// Receipts for this node whose signature was forged, dropped.
    pub forged_dropped: u64,
    /// Route updates for new destinations refused because the routing
    /// table was full ([`MAX_DESTINATIONS`](crate::routes::MAX_DESTINATIONS)):
    /// a neighbour is making destinations up.
    pub routes_refused: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeldState {
    /// No route: in the `waiting` index.
    Waiting,
    /// In a link's queue.
    Queued { to: Address },
    /// Sent; waiting for the acknowledgement until `deadline`.
    InFlight { to: Address, deadline: u64 },
    /// Refused or timed out; try again at `until`.
    Backoff { until: u64 },
}

#[derive(Debug)]
struct Held {
    message: Message,
    from: Option<Address>,
    local: bool,
    accepted_ms: u64,
    size: usize,
    state: HeldState,
    retries: u32,
    flooded: bool,
    /// The next hop whose acknowledgement timed out last: the next try goes
    /// another way if there is one (a neighbour that swallows messages, or
    /// a dead path behind it, is routed around, message by message).
    avoid: Option<Address>,
}

#[derive(Debug)]
struct Tracked {
    destination: Option<Address>,
    class: Class,
    status: Status,
}

#[derive(Debug)]
struct Neighbour {
    scheduler: LinkScheduler<Address>,
    reassembler: Reassembler,
    next_frame: u64,
    /// Frames in the queue that carry messages in custody.
    custody_frames: HashMap<u64, MessageId>,
    counts: Misbehaviour,
    reported: bool,
    /// A custody acknowledgement from it timed out, and none came since: an
    /// SOS sent through it also goes out as a detour flood at once.
    silent: bool,
}

/// The latest update per destination.
type PendingUpdates = BTreeMap<Address, RouteMessage<Address>>;

/// Routing messages waiting to be sent (coalesced for `control_delay_ms`).
#[derive(Debug, Default)]
struct PendingControl {
    /// Updates for every neighbour. Most updates are, and a frame of them
    /// is encoded once for all the neighbours that have nothing else
    /// waiting: encoding and keeping a copy per neighbour was a fifth of a
    /// 2,000-node simulation's warm-up.
    all: PendingUpdates,
    /// Per neighbour: updates for it alone (newer than those in `all` for
    /// the same destination), and the other messages (seqno requests,
    /// digests, dump requests).
    one: BTreeMap<Address, (PendingUpdates, Vec<RouteMessage<Address>>)>,
}

/// Eviction order: P3 before P2 before P1 before P0, oldest first.
type EvictionKey = (u8, u64, MessageId);

/// How much longer than the way from origin to destination (through this
/// node) the ways a detour flood takes may be: four hops of a good link (a
/// link costs at least 256, see [`crate::routes::link_cost`]). Measured on
/// `simulator/scenarios/blackholes.toml` at five times its SOS rate: two
/// hops' slack delivered 92.7% of SOS, three 99.1%, four 100%, at 224, 353
/// and 454 transmissions per SOS against 2,734 for a flood.
const DETOUR_SLACK: Metric = 1024;

/// How many acknowledgement timeouts (10 s by default) an SOS's origin waits
/// for its receipt before flooding it through the whole network.
const WIDE_DETOUR_AFTER: u64 = 7;

/// SOS messages whose receipt the origin waits for at once.
const SOS_WATCH_MAX: usize = 64;
/// How often expired seen ids are dropped from the store (with a write that
/// records new ones): they are refused as expired anyway, so this only
/// bounds the store.
const SEEN_PURGE_MS: u64 = 60_000;

fn eviction_key(class: Class, accepted_ms: u64, id: MessageId) -> EvictionKey {
    (3 - class as u8, accepted_ms, id)
}

/// One node's router.
#[derive(Debug)]
pub struct Router<S> {
    identity: Identity,
    me: Address,
    config: Config,
    store: S,
    table: RoutingTable<Address>,
    neighbours: BTreeMap<Address, Neighbour>,
    held: HashMap<MessageId, Held>,
    held_bytes: usize,
    waiting: BTreeMap<Address, BTreeSet<MessageId>>,
    eviction: BTreeSet<EvictionKey>,
    expiries: BTreeSet<(u64, MessageId)>,
    timers: BTreeSet<(u64, MessageId)>,
    seen: SeenCache<MessageId>,
    delivered: SeenCache<MessageId>,
    /// Ids newly seen, for the next store write (so that a restart keeps
    /// refusing them).
    seen_unsaved: Vec<SeenRecord>,
    /// When expired seen ids were last dropped from the store.
    seen_purged_ms: u64,
    sos_limit: RateLimiter<Address>,
    neighbour_p0: RateLimiter<Address>,
    last_route: HashMap<Address, u64>,
    tracked: HashMap<MessageId, Tracked>,
    /// Tracked messages by expiry.
    tracked_order: BTreeSet<(u64, MessageId)>,
    /// SOS messages sent from here, by when to flood them network-wide if
    /// no receipt has come (at most [`SOS_WATCH_MAX`]).
    sos_watch: BTreeMap<(u64, MessageId), Message>,
    recent: VecDeque<Message>,
    authorities: HashSet<Address>,
    batch: BTreeMap<MessageId, Option<Vec<u8>>>,
    pending_acks: Vec<(Address, MessageId)>,
    events: VecDeque<Event>,
    next_refresh: u64,
    /// Routing messages waiting to be sent.
    pending_control: PendingControl,
    /// When they go.
    control_due: Option<u64>,
    /// The time of the latest input.
    now: u64,
    nonce_seed: [u8; 32],
    nonce_counter: u64,
    stats: Stats,
    /// Scoped meshes only (see [`locate`]).
    scope: Option<Scope>,
}

/// A node's part in a scoped mesh.
#[derive(Debug)]
struct Scope {
    landmark: bool,
    zone: Metric,
    /// As a landmark: where the nodes it is home for are.
    registry: Registry,
    /// The (home, landmark) this node last registered with, and when.
    registered: Option<(Address, Address, u64)>,
    /// When to check the nearest landmark and home again.
    next_check: u64,
    /// This node's home among the landmarks it knew when it last picked.
    home: Option<(locate::LandmarkSet, Option<Address>)>,
    /// As a source: what it looked up, and where those nodes are.
    lookups: locate::Lookups,
}

impl<S: MessageStore> Router<S> {
    /// Starts a router for `identity`, taking back what `store` holds.
    /// `seed` makes message nonces (randomness comes from the caller).
    pub fn new(
        identity: Identity,
        config: Config,
        mut store: S,
        seed: [u8; 32],
        now: u64,
    ) -> Result<Self, RouterError> {
        let records = store
            .load()
            .map_err(|e| RouterError::Store(e.to_string()))?;
        let me = Address::from(identity.id());
        let mut router = Self {
            table: RoutingTable::new(me),
            me,
            identity,
            store,
            neighbours: BTreeMap::new(),
            held: HashMap::new(),
            held_bytes: 0,
            waiting: BTreeMap::new(),
            eviction: BTreeSet::new(),
            expiries: BTreeSet::new(),
            timers: BTreeSet::new(),
            seen: SeenCache::new(config.seen_capacity),
            delivered: SeenCache::new(config.seen_capacity),
            seen_unsaved: Vec::new(),
            seen_purged_ms: now,
            sos_limit: RateLimiter::new(config.sos_burst, config.sos_interval_ms, 10_000),
            neighbour_p0: RateLimiter::new(
                config.neighbour_p0_burst,
                config.neighbour_p0_interval_ms,
                4_096,
            ),
            last_route: HashMap::new(),
            tracked: HashMap::new(),
            tracked_order: BTreeSet::new(),
            sos_watch: BTreeMap::new(),
            recent: VecDeque::new(),
            authorities: HashSet::new(),
            batch: BTreeMap::new(),
            pending_acks: Vec::new(),
            events: VecDeque::new(),
            next_refresh: now.saturating_add(config.refresh_interval_ms),
            now,
            pending_control: PendingControl::default(),
            control_due: None,
            nonce_seed: seed,
            nonce_counter: 0,
            stats: Stats::default(),
            scope: (config.zone_hops > 0).then(|| Scope {
                landmark: locate::is_landmark(&me, config.landmark_one_in),
                zone: config.zone_hops.saturating_mul(locate::HOP_METRIC),
                registry: Registry::default(),
                registered: None,
                next_check: now,
                home: None,
                lookups: locate::Lookups::default(),
            }),
            config,
        };
        if let Some(scope) = &router.scope {
            router.table.set_scoped(true);
            if !scope.landmark {
                router.table.set_reach(scope.zone);
            }
        }
        router.next_refresh = now.saturating_add(router.refresh_delay());
        let mut corrupt = 0;
        for (id, bytes) in records {
            match Message::decode_held(&bytes) {
                Ok((message, accepted_ms, local)) if message.id == id => {
                    if local {
                        router.track(&message, Status::Queued, accepted_ms);
                    }
                    router.insert_held(message, None, local, accepted_ms);
                }
                _ => corrupt += 1,
            }
        }
        if corrupt > 0 {
            router.events.push_back(Event::CorruptRecords(corrupt));
        }
        let seen = router
            .store
            .load_seen()
            .map_err(|e| RouterError::Store(e.to_string()))?;
        for r in seen {
            router
                .seen_cache(r.delivered)
                .insert(r.id, r.created_ms, r.expires_ms, now);
        }
        let mut restored: Vec<MessageId> = router.held.keys().copied().collect();
        restored.sort_unstable();
        for id in restored {
            router.try_forward(now, id);
        }
        Ok(router)
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.me
    }

    /// The authorities whose P1 messages are accepted (from the chain).
    pub fn set_authorities(&mut self, authorities: impl IntoIterator<Item = Address>) {
        self.authorities = authorities.into_iter().collect();
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            routes_refused: self.table.refused,
            ..self.stats
        }
    }

    /// Messages and bytes in custody.
    pub fn custody(&self) -> (usize, usize) {
        (self.held.len(), self.held_bytes)
    }

    /// Whether `id` is in custody here.
    pub fn holds(&self, id: &MessageId) -> bool {
        self.held.contains_key(id)
    }

    /// The status of a message this node sent (while it is tracked).
    pub fn status(&self, id: &MessageId) -> Option<Status> {
        self.tracked.get(id).map(|t| t.status)
    }

    /// Misbehaviour counted against `neighbour`.
    pub fn misbehaviour(&self, neighbour: &Address) -> Option<Misbehaviour> {
        self.neighbours.get(neighbour).map(|n| n.counts)
    }

    /// Current neighbours.
    pub fn neighbours(&self) -> impl Iterator<Item = &Address> {
        self.neighbours.keys()
    }

    /// Routes: destination, next hop, metric.
    pub fn routes(&self) -> impl Iterator<Item = (&Address, &Address, Metric)> {
        self.table.routes()
    }

    /// Scoped meshes: the landmark `node` last registered with here, if
    /// this node is a landmark and is `node`'s home.
    pub fn registered(&self, node: &Address) -> Option<Address> {
        self.scope.as_ref()?.registry.landmark(node)
    }

    /// The next hop towards `destination`.
    pub fn next_hop(&self, destination: &Address) -> Option<Address> {
        self.table.next_hop(destination).copied()
    }

    /// Bytes waiting for `neighbour`'s link.
    pub fn queued_bytes(&self, neighbour: &Address) -> usize {
        self.neighbours
            .get(neighbour)
            .map_or(0, |n| n.scheduler.queued_bytes())
    }

    /// Gives the store back (for a restart).
    pub fn into_store(mut self) -> S {
        self.flush();
        self.store
    }

    // ----- inputs -----

    /// A link to `neighbour` came up, or its cost changed
    /// (see [`link_cost`](crate::routes::link_cost)).
    pub fn handle_link_up(&mut self, now: u64, neighbour: Address, cost: Metric) {
        self.now = self.now.max(now);
        self.table.set_time(self.now);
        if neighbour == self.me {
            return;
        }
        let fresh = !self.neighbours.contains_key(&neighbour);
        if fresh {
            self.neighbours.insert(
                neighbour,
                Neighbour {
                    scheduler: LinkScheduler::new(self.config.mtu, self.config.link_queue_bytes)
                        .with_bulk_mtu(self.config.bulk_mtu),
                    reassembler: Reassembler::new(64, 4 * crate::wire::MAX_FRAME),
                    next_frame: 0,
                    custody_frames: HashMap::new(),
                    counts: Misbehaviour::default(),
                    reported: false,
                    silent: false,
                },
            );
        }
        self.table.handle_link(neighbour, cost);
        self.drain_control();
        if fresh {
            self.send_summary(now, neighbour);
            let recent: Vec<Message> = self
                .recent
                .iter()
                .filter(|m| m.body.expires_ms > now && m.hops_left > 0)
                .cloned()
                .collect();
            for m in recent {
                self.enqueue_message(now, neighbour, &m, None, false);
            }
            // SOS messages that had nobody to flood to: now they have.
            let mut unflooded: Vec<MessageId> = self
                .held
                .iter()
                .filter(|(_, h)| {
                    h.state == HeldState::Waiting
                        && !h.flooded
                        && h.message.body.class == Class::P0
                        && h.message.body.kind == Kind::Data
                })
                .map(|(id, _)| *id)
                .collect();
            // Sorted: the order must not depend on hashing (simulations replay).
            unflooded.sort_unstable();
            for id in unflooded {
                self.try_forward(now, id);
            }
        }
        self.after_route_change(now);
    }

    /// The link to `neighbour` went down.
    pub fn handle_link_down(&mut self, now: u64, neighbour: &Address) {
        self.now = self.now.max(now);
        self.table.set_time(self.now);
        if self.neighbours.remove(neighbour).is_none() {
            return;
        }
        self.pending_control.one.remove(neighbour);
        self.table.handle_link_down(neighbour);
        self.drain_control();
        let stranded: Vec<MessageId> = self
            .held
            .iter()
            .filter(|(_, h)| {
                matches!(h.state, HeldState::Queued { to } | HeldState::InFlight { to, .. } if to == *neighbour)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stranded {
            self.set_state(id, HeldState::Waiting);
        }
        self.after_route_change(now);
    }

    /// A packet arrived from `from`.
    pub fn handle_packet(&mut self, now: u64, from: &Address, bytes: &[u8]) {
        self.now = self.now.max(now);
        self.table.set_time(self.now);
        let Some(neighbour) = self.neighbours.get_mut(from) else {
            return; // Not a neighbour (any more).
        };
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(_) => return self.misbehaved(from, |c| c.invalid += 1),
        };
        let frame_bytes = match neighbour.reassembler.push(packet) {
            Ok(Some((_, bytes))) => bytes,
            Ok(None) => return,
            Err(_) => return self.misbehaved(from, |c| c.invalid += 1),
        };
        let frame = match Frame::decode_deferred(&frame_bytes) {
            Ok(f) => f,
            Err(_) => return self.misbehaved(from, |c| c.invalid += 1),
        };
        let from = *from;
        match frame {
            Frame::Control(messages) => {
                for m in messages {
                    self.table.handle_message(from, m);
                }
                self.drain_control();
                self.after_route_change(now);
            }
            Frame::Message(m) => self.handle_message(now, from, *m),
            Frame::Ack { id, outcome } => self.handle_ack(now, from, id, outcome),
            Frame::Summary(entries) => self.handle_summary(now, from, entries),
            Frame::Pull(ids) => self.handle_pull(now, from, ids),
            Frame::Locate(location) => self.handle_locate(now, from, *location),
            Frame::Lookup(lookup) => self.handle_lookup(from, *lookup),
            Frame::Found(found) => self.handle_found(now, from, *found),
        }
    }

    /// Sends a message from this node.
    pub fn send(&mut self, now: u64, request: SendRequest) -> Result<MessageId, SendError> {
        if request.class == Class::P1 && !self.authorities.contains(&self.me) {
            return Err(SendError::NotAuthority);
        }
        if request.class == Class::P0 && !self.sos_limit.allow(&self.me, now) {
            return Err(SendError::RateLimited);
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
    /// application learns the sender when it opens the envelope).
    pub fn send_receipt(
        &mut self,
        now: u64,
        to: Address,
        message: MessageId,
    ) -> Result<MessageId, SendError> {
        let payload = Receipt {
            message,
            note: String::new(),
        }
        .encode();
        self.originate(
            now,
            Class::P2,
            Kind::Receipt,
            Destination::Node(to),
            payload,
            None,
        )
    }

    /// Acknowledges an SOS from `origin` as a responder ("help is coming").
    pub fn acknowledge_sos(
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
        let payload = Receipt { message: sos, note }.encode();
        self.originate(
            now,
            Class::P0,
            Kind::SosAck,
            Destination::Node(origin),
            payload,
            None,
        )
    }

    /// Time passed: refreshes routes, retries, expires.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = self.now.max(now);
        self.table.set_time(self.now);
        if self.control_due.is_some_and(|t| t <= now) {
            self.send_control();
        }
        if self.table.poll_retry().is_some_and(|t| t <= now) {
            self.table.handle_retry(now);
            self.drain_control();
        }
        if now >= self.next_refresh {
            self.table.handle_refresh();
            self.drain_control();
            self.next_refresh = now.saturating_add(self.refresh_delay());
        }
        if self.scope.as_ref().is_some_and(|s| s.next_check <= now) {
            self.check_location(now);
        }
        let unanswered = match &mut self.scope {
            Some(scope) => scope.lookups.expire(now),
            None => Vec::new(),
        };
        for node in unanswered {
            self.forward_waiting(now, &node);
        }
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(h) = self.held.get(&id)
                && h.message.body.expires_ms == at
            {
                let class = h.message.body.class;
                self.remove_held(id);
                self.stats.expired += 1;
                self.events.push_back(Event::Expired { id, class });
                self.set_status(id, Status::Expired);
            }
        }
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let due = self.held.get(&id).and_then(|h| match h.state {
                HeldState::InFlight { deadline, to } if deadline == at => Some(Some(to)),
                HeldState::Backoff { until } if until == at => Some(None),
                _ => None,
            });
            if let Some(timed_out) = due {
                self.stats.retries += 1;
                if let Some(h) = self.held.get_mut(&id) {
                    h.retries = h.retries.saturating_add(1);
                    if timed_out.is_some() {
                        h.avoid = timed_out;
                    }
                }
                if let Some(n) = timed_out.and_then(|to| self.neighbours.get_mut(&to)) {
                    n.silent = true;
                }
                self.set_state(id, HeldState::Waiting);
                self.try_forward(now, id);
            }
        }
        while let Some(entry) = self.sos_watch.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let message = entry.remove();
            self.sos_unanswered(now, message);
        }
        // Statuses of our own messages that expired after leaving custody.
        while let Some(&(expires, id)) = self.tracked_order.first() {
            if expires > now {
                break;
            }
            self.tracked_order.pop_first();
            self.set_status(id, Status::Expired);
            self.tracked.remove(&id);
        }
    }

    /// When `handle_timeout` wants to be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        [
            Some(self.next_refresh),
            self.control_due,
            self.table.poll_retry(),
            self.expiries.first().map(|(t, _)| *t),
            self.timers.first().map(|(t, _)| *t),
            self.tracked_order.first().map(|(t, _)| *t),
            self.sos_watch.first_key_value().map(|((t, _), _)| *t),
            self.scope.as_ref().map(|s| s.next_check),
            self.scope.as_ref().and_then(|s| s.lookups.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- outputs -----

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.flush();
        self.events.pop_front()
    }

    /// The next packet for `neighbour`, when its link can take one.
    pub fn poll_link(&mut self, now: u64, neighbour: &Address) -> Option<Vec<u8>> {
        self.now = self.now.max(now);
        self.table.set_time(self.now);
        self.flush();
        let n = self.neighbours.get_mut(neighbour)?;
        let fragment = n.scheduler.poll_fragment()?;
        let last = fragment.index + 1 == fragment.count;
        if last && let Some(id) = n.custody_frames.remove(&fragment.frame) {
            let to = *neighbour;
            if let Some(h) = self.held.get(&id)
                && h.state == (HeldState::Queued { to })
            {
                let backoff = 1u64 << h.retries.min(4);
                let deadline =
                    now.saturating_add(self.config.ack_timeout_ms.saturating_mul(backoff));
                self.set_state(id, HeldState::InFlight { to, deadline });
            }
        }
        Some(
            Packet {
                frame: fragment.frame,
                index: fragment.index,
                count: fragment.count,
                class: fragment.class,
                data: fragment.bytes,
            }
            .encode(),
        )
    }

    /// Neighbours whose links have something waiting.
    pub fn ready_links(&self) -> impl Iterator<Item = &Address> {
        self.neighbours
            .iter()
            .filter(|(_, n)| !n.scheduler.is_empty())
            .map(|(a, _)| a)
    }

    /// Writes what custody changed to the store, then releases the custody
    /// acknowledgements waiting on it. `poll_event` and `poll_link` call this
    /// first, so everything handled between two polls shares one write.
    pub fn flush(&mut self) {
        // A failure is reported as `Event::StoreFailed`.
        let _ = self.commit();
    }

    /// Writes the batch; on success releases the acknowledgements waiting on
    /// it, on failure forgets what it could not write.
    fn commit(&mut self) -> Result<(), String> {
        if self.batch.is_empty() && self.seen_unsaved.is_empty() {
            self.release_acks();
            return Ok(());
        }
        let mut batch = StoreBatch {
            seen: std::mem::take(&mut self.seen_unsaved),
            ..StoreBatch::default()
        };
        if !batch.seen.is_empty() && self.now >= self.seen_purged_ms.saturating_add(SEEN_PURGE_MS) {
            batch.forget_seen_before_ms = Some(self.now);
            self.seen_purged_ms = self.now;
        }
        for (id, change) in std::mem::take(&mut self.batch) {
            match change {
                Some(bytes) => batch.puts.push((id, bytes)),
                None => batch.deletes.push(id),
            }
        }
        match self.store.write(&batch) {
            Ok(()) => {
                self.release_acks();
                Ok(())
            }
            Err(e) => {
                // Not durable: take nothing into custody that was not written.
                // The previous hops still hold those messages and will retry.
                let e = e.to_string();
                self.events.push_back(Event::StoreFailed(e.clone()));
                for (_, id) in std::mem::take(&mut self.pending_acks) {
                    if self.held.get(&id).is_some_and(|h| !h.local) {
                        self.remove_held(id);
                    }
                }
                self.batch.clear();
                // Seen ids not written only weaken replay protection after
                // a restart; they stay refused while this process runs.
                Err(e)
            }
        }
    }

    // ----- internals -----

    fn release_acks(&mut self) {
        for (to, id) in std::mem::take(&mut self.pending_acks) {
            let outcome = match self.held.get(&id).map(|h| h.state) {
                Some(HeldState::Waiting | HeldState::Backoff { .. }) => AckOutcome::Holding,
                Some(_) | None => AckOutcome::Forwarding,
            };
            self.send_frame(to, Class::P0, &Frame::Ack { id, outcome });
            self.stats.custody_frames += 1;
        }
    }

    fn originate(
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
        let signed = matches!(class, Class::P0 | Class::P1) || kind != Kind::Data;
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
        // Durable before we say so.
        if let Err(e) = self.commit() {
            self.remove_held(id);
            self.batch.clear();
            self.tracked.remove(&id);
            return Err(SendError::Store(e));
        }
        if class == Class::P0 {
            self.watch_sos(now, message);
        }
        Ok(id)
    }

    /// The refresh interval, jittered down by up to a quarter so that
    /// neighbours do not refresh in lockstep.
    fn refresh_delay(&mut self) -> u64 {
        let interval = self.config.refresh_interval_ms.max(1);
        let jitter = u64::from_le_bytes(self.next_nonce()) % (interval / 4).max(1);
        interval - jitter
    }

    fn next_nonce(&mut self) -> [u8; 8] {
        self.nonce_counter += 1;
        let mut hasher = blake3::Hasher::new_keyed(&self.nonce_seed);
        hasher.update(&self.nonce_counter.to_le_bytes());
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        nonce
    }

    fn track(&mut self, message: &Message, status: Status, now: u64) {
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
        self.events.push_back(Event::Status { id, status });
    }

    fn set_status(&mut self, id: MessageId, status: Status) {
        if let Some(t) = self.tracked.get_mut(&id)
            && t.status != status
            && !t.status.is_final()
        {
            t.status = status;
            self.events.push_back(Event::Status { id, status });
        }
    }

    fn misbehaved(&mut self, from: &Address, count: impl FnOnce(&mut Misbehaviour)) {
        let threshold = self.config.misbehaviour_threshold;
        if let Some(n) = self.neighbours.get_mut(from) {
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

    fn remember_broadcast(&mut self, message: &Message) {
        if self.config.recent_broadcasts == 0 {
            return;
        }
        while self.recent.len() >= self.config.recent_broadcasts {
            self.recent.pop_front();
        }
        self.recent.push_back(message.clone());
    }

    /// Checks the P0 limits (per origin for SOS data, per neighbour for all).
    fn p0_allowed(&mut self, now: u64, from: Address, m: &Message) -> bool {
        if m.body.class != Class::P0 {
            return true;
        }
        let origin_ok = match (m.body.kind, m.body.origin) {
            (Kind::Data, Some(origin)) => self.sos_limit.allow(&origin, now),
            _ => true,
        };
        if !origin_ok || !self.neighbour_p0.allow(&from, now) {
            self.misbehaved(&from, |c| c.rate_limited += 1);
            return false;
        }
        true
    }

    fn handle_message(&mut self, now: u64, from: Address, m: Message) {
        if m.body.expires_ms <= now {
            return self.misbehaved(&from, |c| c.replays += 1);
        }
        if m.body.created_ms > now.saturating_add(self.config.max_clock_skew_ms) {
            return self.misbehaved(&from, |c| c.invalid += 1);
        }
        if m.body.class == Class::P1
            && m.body.kind == Kind::Data
            && !m.body.origin.is_some_and(|o| self.authorities.contains(&o))
        {
            return self.misbehaved(&from, |c| c.unauthorized += 1);
        }
        let Some(destination) = m.body.destination else {
            return self.handle_broadcast(now, from, m);
        };
        // Relays act on the origin of P0 (rate limits) and P1 (authority)
        // messages, so they check its signature; a receipt of class P2 or
        // P3 is checked by its destination only (docs/routing.md, Messages).
        let relay_checks = matches!(m.body.class, Class::P0 | Class::P1);
        if (relay_checks || destination == self.me) && m.verify_origin().is_err() {
            if relay_checks {
                return self.misbehaved(&from, |c| c.invalid += 1);
            }
            // A forged receipt for us: an honest relay may have carried
            // it, so it is not held against the neighbour; acknowledged so
            // that nobody retries it, and dropped.
            self.stats.forged_dropped += 1;
            self.ack_delivered(from, m.id);
            return;
        }
        if m.flood {
            if !self.first_detour(&m, now) {
                self.stats.duplicates += 1;
                return;
            }
            if !self.p0_allowed(now, from, &m) {
                return;
            }
            if destination == self.me {
                return self.deliver_here(now, m);
            }
            if m.flood_bound != 0 {
                // A detour flood goes on through the nodes between its
                // starter and the destination, without custody: the starter
                // still holds the message.
                let inside = self.detour_metric(&m).is_some_and(|d| d <= m.flood_bound);
                if inside {
                    self.detour_flood(now, &m, Some(from));
                }
                return;
            }
            if self.table.next_hop(&destination).is_some() {
                let mut m = m;
                m.flood = false;
                // From here it is a unicast again: the flood's short hop
                // limit would strand it on a long path.
                m.hops_left = crate::wire::MAX_HOPS.saturating_sub(m.hops_taken);
                // A flooded copy carries no custody to acknowledge.
                self.accept_custody(now, m, Some(from), false, false);
            } else if m.hops_left > 0 {
                self.flood(now, &m, Some(from));
            }
            return;
        }
        if destination == self.me {
            self.ack_delivered(from, m.id);
            self.stats.custody_frames += 1;
            return self.deliver_here(now, m);
        }
        if let Some(h) = self.held.get(&m.id) {
            let returned = matches!(h.state, HeldState::Queued { to } | HeldState::InFlight { to, .. } if to == from);
            // A retry after a lost acknowledgement: we have it.
            self.pending_acks.push((from, m.id));
            if returned {
                // It came back from the neighbour we handed it to (routes
                // disagreed on the way, as they may for a moment while a
                // scoped mesh re-heads a message). Our acknowledgement
                // makes that neighbour forget it, so its acknowledgement of
                // our hand-over must not make us forget it too: we keep it,
                // and send it on around that neighbour. If the only way
                // is through it, we wait an acknowledgement timeout first,
                // so that its stale acknowledgement finds the message
                // not handed to it.
                let destination = m.body.destination.unwrap_or(from);
                let (target, _) = self.heading(&m, destination);
                let only_through_it = self.table.next_hop(&target) == Some(&from)
                    && self.table.alternative_hop(&target, &from).is_none();
                // The copy that came back is the message's journey so far
                // (the landmark it now heads for, its hops): keep that one.
                let id = m.id;
                let size = m.encoded_len();
                if let Some(h) = self.held.get_mut(&id) {
                    h.avoid = Some(from);
                    self.held_bytes = self.held_bytes - h.size + size;
                    h.size = size;
                    h.message = m;
                    let record = h.message.encode_held(h.accepted_ms, h.local);
                    self.batch.insert(id, Some(record));
                }
                if only_through_it {
                    let until = now.saturating_add(self.config.ack_timeout_ms);
                    self.set_state(id, HeldState::Backoff { until });
                } else {
                    self.set_state(id, HeldState::Waiting);
                    self.try_forward(now, id);
                }
            }
            return;
        }
        if !self.p0_allowed(now, from, &m) {
            return self.refuse(from, m.id);
        }
        if m.hops_left == 0 {
            self.events.push_back(Event::Dropped {
                id: m.id,
                reason: DropReason::HopLimit,
            });
            return self.refuse(from, m.id);
        }
        let id = m.id;
        if !self.accept_custody(now, m, Some(from), false, true) {
            self.refuse(from, id);
        }
    }

    /// Tells `to` that message `id` reached its destination here.
    fn ack_delivered(&mut self, to: Address, id: MessageId) {
        let ack = Frame::Ack {
            id,
            outcome: AckOutcome::Delivered,
        };
        self.send_frame(to, Class::P0, &ack);
    }

    /// Keeps a copy of a P0 message (an SOS, or a receipt or
    /// acknowledgement of one) sent from here, to check on it later (see
    /// [`Router::sos_unanswered`]); the oldest copy goes when there are too
    /// many.
    fn watch_sos(&mut self, now: u64, message: Message) {
        let wait = self.config.ack_timeout_ms.saturating_mul(WIDE_DETOUR_AFTER);
        self.sos_watch
            .insert((now.saturating_add(wait), message.id), message);
        while self.sos_watch.len() > SOS_WATCH_MAX {
            self.sos_watch.pop_first();
        }
    }

    /// An SOS sent from here got no receipt in time, or a receipt sent
    /// from here is still held here: whatever held it up (neighbours that
    /// swallow messages all around the way, or a receipt lost the same
    /// way), it goes out once more as a detour flood through the whole
    /// network, which any path of honest nodes carries.
    fn sos_unanswered(&mut self, now: u64, mut m: Message) {
        let stuck = match m.body.kind {
            Kind::Data => !self
                .tracked
                .get(&m.id)
                .is_some_and(|t| matches!(t.status, Status::Delivered | Status::Acknowledged)),
            Kind::Receipt | Kind::SosAck => self.held.contains_key(&m.id),
        };
        // Without a route, no flood would find the destination either:
        // custody and summaries carry it when a path comes back.
        let reachable = m
            .body
            .destination
            .is_some_and(|d| self.table.metric(&d).is_some());
        if !stuck || !reachable || m.body.expires_ms <= now {
            return;
        }
        m.flood = true;
        m.flood_bound = INFINITY;
        if self.first_detour(&m, now) {
            self.detour_flood(now, &m, None);
        }
    }

    /// How far off the way from `m`'s origin to its destination this node
    /// is: its metric to the origin plus its metric to the destination (the
    /// way's own length on it). A detour flood spreads through the nodes
    /// where this is at most its bound: an ellipse around the way, whose
    /// width the slack sets, rather than the whole network.
    fn detour_metric(&self, m: &Message) -> Option<Metric> {
        let to_destination = self.table.metric(&m.body.destination?)?;
        let to_origin = match m.body.origin {
            Some(origin) => self.table.metric(&origin)?,
            None => 0,
        };
        Some(to_origin.saturating_add(to_destination))
    }

    /// Records flooded message `m` as seen; `true` the first time. The
    /// network-wide detour flood of a message is recorded apart (under an id
    /// derived from the message's), so that it passes nodes the narrow one
    /// reached: each node passes on a message's floods at most twice.
    fn first_detour(&mut self, m: &Message, now: u64) -> bool {
        if m.flood_bound != INFINITY {
            return self.first_sight(false, m, now);
        }
        let mut key = Vec::with_capacity(24);
        key.extend_from_slice(b"wide/");
        key.extend_from_slice(&m.id.0);
        let wide = MessageId::of_body(&key);
        self.first_sight_of(false, wide, m, now)
    }

    /// Records message `m` as delivered here or as a broadcast or flood
    /// handled; `true` the first time (see [`SeenCache::insert`]: ids live
    /// as long as their message). New ids go to the store with the next
    /// write.
    /// The ids of messages delivered here (`true`), or of broadcasts and
    /// floods handled here (`false`).
    fn seen_cache(&mut self, delivered: bool) -> &mut SeenCache<MessageId> {
        if delivered {
            &mut self.delivered
        } else {
            &mut self.seen
        }
    }

    fn first_sight(&mut self, delivered: bool, m: &Message, now: u64) -> bool {
        self.first_sight_of(delivered, m.id, m, now)
    }

    fn first_sight_of(&mut self, delivered: bool, id: MessageId, m: &Message, now: u64) -> bool {
        let (created_ms, expires_ms) = (m.body.created_ms, m.body.expires_ms);
        let new = self
            .seen_cache(delivered)
            .insert(id, created_ms, expires_ms, now);
        if new && expires_ms > now {
            self.seen_unsaved.push(SeenRecord {
                expires_ms,
                id,
                delivered,
                created_ms,
            });
        }
        new
    }

    fn refuse(&mut self, to: Address, id: MessageId) {
        self.send_frame(
            to,
            Class::P0,
            &Frame::Ack {
                id,
                outcome: AckOutcome::Refused,
            },
        );
        self.stats.custody_frames += 1;
    }

    fn handle_broadcast(&mut self, now: u64, from: Address, m: Message) {
        // A copy seen already is dropped before its signature is checked
        // (each node hears a broadcast from most of its neighbours); a new
        // one is checked before it is recorded as seen, so a forged copy
        // cannot shut out the real one.
        if self.seen.contains(&m.id, m.body.created_ms) {
            self.stats.duplicates += 1;
            return;
        }
        if m.verify_origin().is_err() {
            return self.misbehaved(&from, |c| c.invalid += 1);
        }
        if !self.first_sight(false, &m, now) {
            self.stats.duplicates += 1;
            return;
        }
        if !self.p0_allowed(now, from, &m) {
            return;
        }
        let inside = match (m.body.area, self.config.position) {
            (Some(area), Some((lat, lon))) => area.contains(lat, lon),
            _ => true,
        };
        self.remember_broadcast(&m);
        if m.hops_left > 0 && inside {
            let neighbours: Vec<Address> = self
                .neighbours
                .keys()
                .filter(|n| **n != from)
                .copied()
                .collect();
            for n in neighbours {
                self.enqueue_message(now, n, &m, Some(from), false);
            }
        }
        if inside {
            self.deliver_here(now, m);
        }
    }

    fn flood(&mut self, now: u64, m: &Message, except: Option<Address>) {
        let neighbours: Vec<Address> = self
            .neighbours
            .keys()
            .filter(|n| Some(**n) != except)
            .copied()
            .collect();
        for n in neighbours {
            self.enqueue_message(now, n, m, except, false);
        }
    }

    /// Passes a detour flood on to the neighbours inside its ellipse, by
    /// what they advertised (see [`Router::detour_metric`]).
    fn detour_flood(&mut self, now: u64, m: &Message, except: Option<Address>) {
        let (Some(destination), bound) = (m.body.destination, m.flood_bound) else {
            return;
        };
        let inside: Vec<Address> = self
            .neighbours
            .keys()
            .filter(|n| Some(**n) != except)
            .filter(|n| {
                let to_origin = match &m.body.origin {
                    Some(origin) => self.table.advertised(n, origin),
                    None => Some(0),
                };
                let to_destination = self.table.advertised(n, &destination);
                to_origin
                    .zip(to_destination)
                    .is_some_and(|(o, d)| o.saturating_add(d) <= bound)
            })
            .copied()
            .collect();
        for n in inside {
            self.enqueue_message(now, n, m, except, false);
        }
    }

    fn deliver_here(&mut self, now: u64, m: Message) {
        if !self.first_sight(true, &m, now) {
            self.stats.duplicates += 1;
            return;
        }
        match m.body.kind {
            Kind::Data => {
                self.stats.delivered += 1;
                let unicast = m.body.destination.is_some();
                let receipt_to = m.body.origin.filter(|_| unicast);
                let id = m.id;
                let class = m.body.class;
                self.events.push_back(Event::Delivered(Delivery {
                    id,
                    class,
                    origin: m.body.origin,
                    broadcast: !unicast,
                    payload: m.body.payload,
                    hops: m.hops_taken,
                    created_ms: m.body.created_ms,
                }));
                // Signed unicasts (P0, P1) get a receipt at once; for sealed
                // messages the application sends it once it knows the sender.
                if let Some(origin) = receipt_to {
                    let payload = Receipt {
                        message: id,
                        note: String::new(),
                    }
                    .encode();
                    let class = if class == Class::P0 {
                        Class::P0
                    } else {
                        Class::P2
                    };
                    // A full custody store only loses the receipt, which the
                    // origin's status shows; nothing else to do here.
                    let _ = self.originate(
                        now,
                        class,
                        Kind::Receipt,
                        Destination::Node(origin),
                        payload,
                        None,
                    );
                }
            }
            Kind::Receipt | Kind::SosAck => {
                let (Ok(receipt), Some(from)) = (Receipt::decode(&m.body.payload), m.body.origin)
                else {
                    return;
                };
                let Some(t) = self.tracked.get(&receipt.message) else {
                    return;
                };
                let status = if m.body.kind == Kind::Receipt {
                    // Only the destination can say it received the message.
                    if t.destination.is_some_and(|d| d != from) {
                        return;
                    }
                    Status::Delivered
                } else {
                    if t.class != Class::P0 {
                        return;
                    }
                    Status::Acknowledged
                };
                self.events.push_back(Event::Receipt {
                    message: receipt.message,
                    from,
                    kind: m.body.kind,
                    note: receipt.note,
                });
                if let Some(t) = self.tracked.get_mut(&receipt.message)
                    && t.status == Status::Delivered
                    && status == Status::Acknowledged
                {
                    t.status = Status::Acknowledged;
                    self.events.push_back(Event::Status {
                        id: receipt.message,
                        status,
                    });
                    return;
                }
                self.set_status(receipt.message, status);
            }
        }
    }

    fn handle_ack(&mut self, now: u64, from: Address, id: MessageId, outcome: AckOutcome) {
        if let Some(n) = self.neighbours.get_mut(&from) {
            n.silent = false;
        }
        let Some(h) = self.held.get(&id) else {
            return;
        };
        let addressed = matches!(h.state, HeldState::Queued { to } | HeldState::InFlight { to, .. } if to == from);
        if !addressed {
            return;
        }
        let retries = h.retries;
        if outcome == AckOutcome::Refused {
            let backoff = 1u64 << retries.min(4);
            let until = now.saturating_add(self.config.ack_timeout_ms.saturating_mul(backoff));
            self.set_state(id, HeldState::Backoff { until });
            return;
        }
        let local = self.held.get(&id).is_some_and(|h| h.local);
        self.remove_held(id);
        if local {
            let status = match outcome {
                AckOutcome::Holding => Status::InCustody,
                _ => Status::Forwarded,
            };
            self.set_status(id, status);
        }
    }

    fn handle_summary(&mut self, now: u64, from: Address, entries: Vec<SummaryEntry>) {
        let mut wanted = Vec::new();
        for e in entries {
            if self.held.contains_key(&e.id) {
                continue;
            }
            let closer = if e.destination == self.me {
                true
            } else {
                match self.table.metric(&e.destination) {
                    Some(mine) => {
                        mine < e.metric && self.table.next_hop(&e.destination) != Some(&from)
                    }
                    None => {
                        let mine = self.last_route_age(now, &e.destination);
                        mine < e.last_route_age_ms
                    }
                }
            };
            if closer {
                wanted.push(e.id);
            }
        }
        if !wanted.is_empty() {
            self.send_frame(from, Class::P0, &Frame::Pull(wanted));
            self.stats.custody_frames += 1;
        }
    }

    fn handle_pull(&mut self, now: u64, from: Address, ids: Vec<MessageId>) {
        for id in ids {
            let Some(h) = self.held.get(&id) else {
                continue;
            };
            if !matches!(h.state, HeldState::Waiting | HeldState::Backoff { .. }) {
                continue;
            }
            let message = h.message.clone();
            let upstream = h.from;
            self.remove_from_waiting(id);
            self.enqueue_message(now, from, &message, upstream, true);
        }
    }

    fn last_route_age(&self, now: u64, destination: &Address) -> u64 {
        if self.table.next_hop(destination).is_some() {
            return 0;
        }
        self.last_route
            .get(destination)
            .map_or(u64::MAX, |at| now.saturating_sub(*at))
    }

    fn send_summary(&mut self, now: u64, to: Address) {
        let mut waiting: Vec<&Held> = self
            .held
            .values()
            .filter(|h| matches!(h.state, HeldState::Waiting | HeldState::Backoff { .. }))
            .collect();
        if waiting.is_empty() {
            return;
        }
        waiting.sort_by_key(|h| (h.message.body.class, h.accepted_ms, h.message.id));
        let entries: Vec<SummaryEntry> = waiting
            .iter()
            .take(MAX_SUMMARY_ENTRIES)
            .filter_map(|h| {
                let destination = h.message.body.destination?;
                Some(SummaryEntry {
                    id: h.message.id,
                    destination,
                    class: h.message.body.class,
                    metric: self.table.metric(&destination).unwrap_or(INFINITY),
                    last_route_age_ms: self.last_route_age(now, &destination),
                })
            })
            .collect();
        self.send_frame(to, Class::P0, &Frame::Summary(entries));
        self.stats.custody_frames += 1;
    }

    /// Takes `m` into custody (durable at the next flush). `ack_from`: the
    /// neighbour to acknowledge once it is durable. Returns false if custody
    /// is full of more important messages.
    fn accept_custody(
        &mut self,
        now: u64,
        m: Message,
        from: Option<Address>,
        local: bool,
        ack: bool,
    ) -> bool {
        let size = m.encoded_len();
        let class = m.body.class;
        while self.held.len() + 1 > self.config.custody_max_messages
            || self.held_bytes + size > self.config.custody_max_bytes
        {
            let Some(&(rank, _, victim)) = self.eviction.first() else {
                break;
            };
            if 3 - rank < class as u8 {
                break; // Everything held matters more than this message.
            }
            let victim_class = self
                .held
                .get(&victim)
                .map_or(class, |h| h.message.body.class);
            self.remove_held(victim);
            self.stats.evicted += 1;
            self.events.push_back(Event::Evicted {
                id: victim,
                class: victim_class,
            });
            self.set_status(victim, Status::Evicted);
        }
        if self.held.len() + 1 > self.config.custody_max_messages
            || self.held_bytes + size > self.config.custody_max_bytes
        {
            return false;
        }
        let id = m.id;
        self.batch.insert(id, Some(m.encode_held(now, local)));
        self.insert_held(m, from, local, now);
        if let Some(from) = from.filter(|_| ack) {
            // Acknowledged once the next flush made it durable.
            self.pending_acks.push((from, id));
        }
        self.try_forward(now, id);
        true
    }

    fn insert_held(
        &mut self,
        message: Message,
        from: Option<Address>,
        local: bool,
        accepted_ms: u64,
    ) {
        let id = message.id;
        let size = message.encoded_len();
        self.eviction
            .insert(eviction_key(message.body.class, accepted_ms, id));
        self.expiries.insert((message.body.expires_ms, id));
        self.held_bytes += size;
        self.held.insert(
            id,
            Held {
                message,
                from,
                local,
                accepted_ms,
                size,
                state: HeldState::Waiting,
                retries: 0,
                flooded: false,
                avoid: None,
            },
        );
    }

    fn remove_held(&mut self, id: MessageId) {
        self.remove_from_waiting(id);
        if let Some(h) = self.held.remove(&id) {
            self.held_bytes -= h.size;
            self.eviction
                .remove(&eviction_key(h.message.body.class, h.accepted_ms, id));
            self.expiries.remove(&(h.message.body.expires_ms, id));
            self.batch.insert(id, None);
        }
    }

    fn remove_from_waiting(&mut self, id: MessageId) {
        let Some(h) = self.held.get(&id) else {
            return;
        };
        if let Some(d) = h.message.body.destination
            && let Some(set) = self.waiting.get_mut(&d)
        {
            set.remove(&id);
            if set.is_empty() {
                self.waiting.remove(&d);
                self.table.set_wanted(&d, false);
            }
        }
    }

    fn set_state(&mut self, id: MessageId, state: HeldState) {
        self.remove_from_waiting(id);
        let Some(h) = self.held.get_mut(&id) else {
            return;
        };
        h.state = state;
        match state {
            HeldState::Waiting => {
                if let Some(d) = h.message.body.destination {
                    let set = self.waiting.entry(d).or_default();
                    let first = set.is_empty();
                    set.insert(id);
                    if first {
                        // Starving for it? Ask now, not at the next refresh.
                        self.table.set_wanted(&d, true);
                        self.drain_control();
                    }
                }
            }
            HeldState::InFlight { deadline: at, .. } | HeldState::Backoff { until: at } => {
                self.timers.insert((at, id));
            }
            HeldState::Queued { .. } => {}
        }
    }

    /// Forwards a waiting message if there is a route; otherwise it waits
    /// (and a P0 message is flooded once from here).
    fn try_forward(&mut self, now: u64, id: MessageId) {
        let Some(h) = self.held.get(&id) else {
            return;
        };
        if !matches!(h.state, HeldState::Waiting) {
            return;
        }
        let Some(destination) = h.message.body.destination else {
            return;
        };
        if h.local && h.message.via.is_none() {
            self.look_up(now, destination);
        }
        let Some(h) = self.held.get(&id) else {
            return;
        };
        let avoid = h.avoid;
        let (target, via) = self.heading(&h.message, destination);
        let hop = self.table.next_hop(&target).copied().map(|hop| {
            if Some(hop) == avoid {
                self.table
                    .alternative_hop(&target, &hop)
                    .copied()
                    .unwrap_or(hop)
            } else {
                hop
            }
        });
        match hop {
            Some(hop) => {
                let mut message = h.message.clone();
                // A home re-heads a message for the landmark its
                // destination is near: a new leg, with a fresh hop budget.
                // In a mesh hundreds of hops across, the way to the home
                // may have used most of it (at 50,000 simulated nodes, one
                // SOS in ten stopped at the hop limit). Each message has
                // one home, and every leg follows loop-free routes.
                if via.is_some() && via != message.via && self.registered(&destination) == via {
                    message.hops_left = MAX_HOPS;
                }
                message.via = via;
                let upstream = h.from;
                // A P0 message (an SOS, or its receipt) whose next hop did
                // not acknowledge it, or has not acknowledged anything
                // since an earlier timeout, also goes out once as a detour
                // flood through the nodes near its way: around neighbours
                // that swallow messages. The destination drops duplicates.
                let silent = self.neighbours.get(&hop).is_some_and(|n| n.silent);
                let bound =
                    (message.body.class == Class::P0 && (avoid.is_some() || silent) && !h.flooded)
                        .then(|| self.detour_metric(&message))
                        .flatten()
                        .map(|d| d.saturating_add(DETOUR_SLACK).min(INFINITY - 1));
                self.enqueue_message(now, hop, &message, upstream, true);
                if let Some(bound) = bound {
                    let mut copy = message;
                    copy.flood = true;
                    copy.flood_bound = bound;
                    self.first_detour(&copy, now);
                    self.detour_flood(now, &copy, Some(hop));
                    if let Some(h) = self.held.get_mut(&id) {
                        h.flooded = true;
                    }
                }
            }
            None => {
                let flood = h.message.body.class == Class::P0
                    && h.message.body.kind == Kind::Data
                    && !h.flooded
                    && !self.neighbours.is_empty();
                let from = h.from;
                let copy = flood.then(|| h.message.clone());
                self.set_state(id, HeldState::Waiting);
                if let Some(mut copy) = copy {
                    copy.flood = true;
                    copy.hops_left = copy.hops_left.min(self.config.flood_hops);
                    self.first_sight(false, &copy, now);
                    self.flood(now, &copy, from);
                    if let Some(h) = self.held.get_mut(&id) {
                        h.flooded = true;
                    }
                }
            }
        }
    }

    /// Queues a message for `to`, one hop further. With `custody`, the
    /// message's state follows the frame (acknowledgement expected).
    fn enqueue_message(
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

    fn send_frame(&mut self, to: Address, class: Class, frame: &Frame) -> Option<u64> {
        self.send_frame_from(to, class, None, frame)
    }

    /// Queues a frame for a neighbour's link; returns its frame number.
    fn send_frame_from(
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
    fn queue_bytes(
        &mut self,
        to: Address,
        class: Class,
        upstream: Option<Address>,
        bytes: Vec<u8>,
    ) -> Option<u64> {
        let now = self.now;
        let n = self.neighbours.get_mut(&to)?;
        let was_idle = n.scheduler.is_empty();
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
    fn drain_control(&mut self) {
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
    fn send_control(&mut self) {
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

    /// Where a unicast for `destination` heads from here, and the landmark
    /// it carries as `via` (docs/routing.md, Scoped meshes): the
    /// destination itself if this node has a route to it (or the mesh is
    /// not scoped); otherwise the landmark it already heads for; otherwise
    /// the landmark the destination registered with here, or that this
    /// node learned from a lookup; otherwise nowhere yet while a lookup for
    /// it is under way (an SOS does not wait); otherwise its home, unless
    /// this node is where it was heading (it waits here).
    fn heading(&self, m: &Message, destination: Address) -> (Address, Option<Address>) {
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
    fn home_of(&self, node: &Address) -> Option<Address> {
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
    fn check_location(&mut self, now: u64) {
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
    fn handle_locate(&mut self, now: u64, from: Address, location: Location) {
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
        if !scope.registry.insert(&location) {
            return;
        }
        // Messages that waited here for it go on.
        self.forward_waiting(now, &location.node);
    }

    /// A source in a scoped mesh with a message for `destination` and no
    /// route to it asks the destination's home where it is, once (see
    /// [`locate::Lookups`]). The answer comes back by way of the landmark
    /// this node registered with (or this node, if it is a landmark).
    fn look_up(&mut self, now: u64, destination: Address) {
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
    fn handle_lookup(&mut self, from: Address, lookup: Lookup) {
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
    fn pass_found(&mut self, from: Option<Address>, found: Found) {
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
    fn handle_found(&mut self, now: u64, from: Address, found: Found) {
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
    fn send_locate(&mut self, to: Address, location: Location) -> bool {
        self.send_scoped(to, Frame::Locate(Box::new(location)))
    }

    /// Passes a registration or lookup on towards `to`, never back to the
    /// neighbour it came `from`.
    fn pass_on(&mut self, to: &Address, from: Address, frame: Frame) {
        if let Some(hop) = self.table.next_hop(to).copied().filter(|h| *h != from) {
            self.send_scoped(hop, frame);
        }
    }

    /// Queues a scoped mesh's frame (registration, lookup, answer) for a
    /// neighbour (class P2, counted as control traffic). Returns whether it
    /// was queued.
    fn send_scoped(&mut self, to: Address, frame: Frame) -> bool {
        let bytes = frame.encode();
        let len = bytes.len() as u64;
        let queued = self.queue_bytes(to, Class::P2, None, bytes).is_some();
        if queued {
            self.stats.control_frames += 1;
            self.stats.control_bytes += len;
        }
        queued
    }

    /// After routes may have changed: note lost routes and forward what waits.
    fn after_route_change(&mut self, now: u64) {
        for lost in self.table.take_lost() {
            self.last_route.insert(lost, now);
        }
        if self.last_route.len() > 65_536 {
            // Bounded: forget the oldest half.
            let mut times: Vec<u64> = self.last_route.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() / 2];
            self.last_route.retain(|_, t| *t > cut);
        }
        // Messages for one destination all head the same way (see
        // `heading`), so the first one tells for all.
        let reachable: Vec<Address> = self
            .waiting
            .iter()
            .filter(|(d, ids)| {
                self.table.next_hop(d).is_some()
                    || ids
                        .first()
                        .and_then(|id| self.held.get(id))
                        .is_some_and(|h| {
                            let (target, _) = self.heading(&h.message, **d);
                            self.table.next_hop(&target).is_some()
                        })
            })
            .map(|(d, _)| *d)
            .collect();
        for d in reachable {
            self.forward_waiting(now, &d);
        }
    }

    /// Tries again to forward the messages waiting for `destination`.
    fn forward_waiting(&mut self, now: u64, destination: &Address) {
        let ids: Vec<MessageId> = self
            .waiting
            .get(destination)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.try_forward(now, id);
        }
    }
}
