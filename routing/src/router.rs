//! The router: one node's sans-IO state machine.
//!
//! Inputs (each takes the time, in ms on any monotonic clock):
//! [`Router::handle_link_up`], [`Router::handle_link_down`],
//! [`Router::handle_packet`], [`Router::send`] or
//! [`Router::send_unwritten`] (and receipts), and
//! [`Router::handle_timeout`]. Outputs: [`Router::poll_link`] gives the next
//! packet for a neighbour when its link can take one, [`Router::poll_event`]
//! gives deliveries and status, and [`Router::poll_timeout`] says when to call
//! `handle_timeout` next.
//!
//! Custody is durable before it is acknowledged: messages taken into custody
//! are written to the [`MessageStore`] as one batch (group commit) the next
//! time the driver polls events ([`Router::poll_event`] or
//! [`Router::flush`]), and the custody acknowledgements go out only after
//! that write succeeded. Forwarding does not wait for the write:
//! [`Router::poll_link`] hands out what is queued without writing, so a
//! driver that fills its links before it polls events sends an SOS on
//! before the disk has it (the previous hop keeps its copy until the
//! acknowledgement, which waits for the disk). A message of this node's
//! own can go the same way: [`Router::send_unwritten`], fill the links,
//! then [`Router::write`] before telling anyone it was sent.
//!
//! A driver whose disk is slow next to its links (a synced write takes
//! milliseconds on an SD card, tens of them on a busy one) can make the
//! writes itself, on another thread ([`Router::defer_writes`]): it takes
//! each batch ([`Router::take_write`]), writes it while the router goes on
//! handling packets, and reports back ([`Router::written`]). What waited on
//! the write waits for that report: the custody acknowledgements, and the
//! events that tell anyone about a message (receipts, status).
//!
//! A delivery is the exception: the caller keeps it (an inbox), so it
//! comes at once, with the seen record to keep it with
//! ([`Delivery::seen`]). The router writes that record, and then sends the
//! destination's acknowledgement, only after the event is taken; a caller
//! that cannot keep it says so ([`Router::delivery_not_kept`]) and the
//! previous hop, unacknowledged, sends it again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use lifeline_crypto::Identity;
use thiserror::Error;

use crate::Class;
use crate::limits::{RateLimiter, SeenCache};
use crate::link::Reassembler;
use crate::locate::{self, Registry};
use crate::pace::Pacer;
use crate::routes::{Metric, RouteMessage, RoutingTable};
use crate::schedule::LinkScheduler;
use crate::store::{MessageStore, SeenRecord};
use crate::wire::{Address, Area, Frame, Kind, Message, MessageId, Packet};

mod admission;
mod custody;
mod lookup;
mod messages;
mod pacing;
mod queues;
mod sends;
mod writes;

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
    /// Hop limit of broadcasts sent from here, and the most hops a
    /// broadcast travels on from here, whatever its sender asked for.
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
    /// SOS from origins the chain vouches for (registered identities and
    /// authorities) count against a second budget of the same size, which
    /// a flood from fresh keys cannot use up: see [`Router::set_registered`].
    pub neighbour_p0_burst: u32,
    /// See `neighbour_p0_burst`.
    pub neighbour_p0_interval_ms: u64,
    /// Broadcasts of classes P1 to P3 per origin (all neighbours together):
    /// a burst, then one per interval.
    pub broadcast_burst: u32,
    /// See `broadcast_burst`.
    pub broadcast_interval_ms: u64,
    /// Broadcasts of classes P1 to P3 per neighbour (all origins together):
    /// a burst (room for the recent broadcasts handed to a new neighbour),
    /// then one per interval.
    pub neighbour_broadcast_burst: u32,
    /// See `neighbour_broadcast_burst`.
    pub neighbour_broadcast_interval_ms: u64,
    /// Misbehaviour count at which a neighbour is reported.
    pub misbehaviour_threshold: u64,
    /// Counts against a neighbour halve after this long, so that old
    /// mistakes do not add up to a ban.
    pub misbehaviour_half_life_ms: u64,
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
    /// Bulk pacing ([`crate::pace`]): the queueing delay aimed at per hop,
    /// in µs (0: bulk unpaced, as before). Below a millisecond it needs
    /// the finer clock of [`Router::set_clock_us`].
    pub pace_target_us: u64,
    /// Bulk pacing: time between hop delay probes while bulk flows, in ms.
    pub pace_probe_ms: u64,
    /// Whether the router sends a signed unicast's receipt as it delivers
    /// the message (true), or the caller does once it has kept it, with
    /// [`Router::send_delivery_receipt`] (false: a daemon that writes its
    /// inbox on another thread, so that nobody hears "delivered" before
    /// the message is on disk).
    pub receipt_on_delivery: bool,
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
            broadcast_burst: 20,
            broadcast_interval_ms: 3_000,
            neighbour_broadcast_burst: 256,
            neighbour_broadcast_interval_ms: 50,
            misbehaviour_threshold: 100,
            misbehaviour_half_life_ms: 600_000,
            position: None,
            recent_broadcasts: 64,
            tracked_messages: 10_000,
            zone_hops: 0,
            landmark_one_in: 64,
            pace_target_us: 2_000,
            pace_probe_ms: 50,
            receipt_on_delivery: true,
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
    #[error(
        "SOS limit reached ({burst} at once, then one every {} s); wait and send again",
        interval_ms / 1000
    )]
    RateLimited {
        /// The burst the limit allows.
        burst: u32,
        /// Then one per this many ms.
        interval_ms: u64,
    },
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
    /// Messages the neighbour originated itself over a rate limit. (What it
    /// only relays is dropped over a limit but never counted against it.)
    pub rate_limited: u64,
    /// Messages the neighbour originated itself that arrived expired.
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
    /// When it arrived here (ms, the caller's clock).
    pub received_ms: u64,
    /// The record that says it was delivered here, if it is still worth
    /// keeping (not expired). The router writes it only after the event
    /// is taken, in its next write, and acknowledges the delivery to the
    /// previous hop after that write. A caller that keeps the delivery
    /// (an inbox) should write this record with it, atomically: after a
    /// crash before the router's write, the previous hop sends the message
    /// again, and the router, loading the record, knows it for a duplicate.
    pub seen: Option<SeenRecord>,
}

impl Delivery {
    /// Who gets a receipt for it: the signer of a unicast (a signed
    /// broadcast gets none). See [`crate::Config::receipt_on_delivery`].
    pub fn receipt_to(&self) -> Option<Address> {
        self.origin.filter(|_| !self.broadcast)
    }
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
        /// The hops the receipt took to come back: how far the message's
        /// recipient, or the responder, is.
        hops: u32,
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
    /// A write to the store succeeded again after [`Event::StoreFailed`].
    StoreRecovered,
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
    /// Ids the seen cache may have forgotten for room, looked up in the
    /// store (a flood of new ids makes these common; each is one read).
    pub seen_lookups: u64,
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
    /// Messages dropped over a rate limit (per origin or per neighbour).
    pub rate_limited: u64,
    /// Messages that arrived expired, dropped.
    pub expired_arrivals: u64,
    /// Unsigned broadcasts that had travelled more than one hop, dropped.
    pub unsigned_dropped: u64,
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
    /// Neighbours that pulled a copy without taking custody (bounded by
    /// [`MAX_PULLED_COPIES`]).
    copied_to: Vec<Address>,
    /// Its share of custody, as counted when it was taken in.
    share: ShareKey,
}

/// Copies of one held message that pulls may take without custody.
const MAX_PULLED_COPIES: usize = 4;

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
    /// When `counts` last halved (or began).
    counted_ms: u64,
    reported: bool,
    /// A custody acknowledgement from it timed out, and none came since: an
    /// SOS sent through it also goes out as a detour flood at once.
    silent: bool,
    /// The pace of bulk on the link.
    pacer: Pacer,
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
/// node) the ways a detour flood takes may be, in hops like the one the
/// message was to take (at least 256 each, a lossless link's least cost, see
/// [`crate::routes::link_cost`]). Measured on
/// `simulator/scenarios/blackholes.toml` at five times its SOS rate: two
/// hops' slack delivered 92.7% of SOS, three 99.1%, four 100%, at 224, 353
/// and 454 transmissions per SOS against 2,734 for a flood. (Until link costs
/// weighed long round trips, in December 2026, the slack was a fixed 1,024.)
const DETOUR_SLACK_HOPS: Metric = 4;

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

/// A class rank (as in [`EvictionKey`]), whether the chain vouches for the
/// origin (`false` sorts first: keys nobody knows give way before
/// registered identities and authorities), and who handed messages over.
type ShareKey = (u8, bool, Option<Address>);

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
    /// What each neighbour handed over (`None`: sent from here), per class
    /// rank and vouched origin or not, oldest first: custody is shared out
    /// among them when full.
    shares: BTreeMap<ShareKey, BTreeSet<(u64, MessageId)>>,
    expiries: BTreeSet<(u64, MessageId)>,
    timers: BTreeSet<(u64, MessageId)>,
    seen: SeenCache<MessageId>,
    delivered: SeenCache<MessageId>,
    /// Ids newly seen, for the next store write (so that a restart keeps
    /// refusing them).
    seen_unsaved: Vec<SeenRecord>,
    /// The last store write failed.
    store_failing: bool,
    /// When expired seen ids were last dropped from the store.
    seen_purged_ms: u64,
    sos_limit: RateLimiter<Address>,
    neighbour_p0: RateLimiter<Address>,
    /// Each neighbour's P0 budget for origins the chain vouches for.
    neighbour_p0_vouched: RateLimiter<Address>,
    broadcast_origin: RateLimiter<Address>,
    neighbour_broadcast: RateLimiter<Address>,
    last_route: HashMap<Address, u64>,
    tracked: HashMap<MessageId, Tracked>,
    /// Tracked messages by expiry.
    tracked_order: BTreeSet<(u64, MessageId)>,
    /// SOS messages sent from here, by when to flood them network-wide if
    /// no receipt has come (at most [`SOS_WATCH_MAX`]).
    sos_watch: BTreeMap<(u64, MessageId), Message>,
    recent: VecDeque<Message>,
    authorities: HashSet<Address>,
    /// Identities registered on the chain (not revoked): their SOS do not
    /// share a neighbour's P0 budget with keys nobody knows.
    registered: HashSet<Address>,
    batch: BTreeMap<MessageId, Option<Vec<u8>>>,
    pending_acks: Vec<writes::PendingAck>,
    /// Acknowledgements of deliveries still in `events`: they wait for the
    /// caller to take the delivery, and then for the next write (see
    /// [`Router::poll_event`]).
    delivery_acks: Vec<writes::PendingAck>,
    /// This node's own messages sent ([`Router::send_unwritten`]) but not
    /// yet written: forgotten if the write fails.
    unwritten: Vec<MessageId>,
    /// Writes handed to the caller ([`Router::defer_writes`]), if so.
    deferred: Option<writes::Deferred>,
    events: VecDeque<Event>,
    next_refresh: u64,
    /// Routing messages waiting to be sent.
    pending_control: PendingControl,
    /// When they go.
    control_due: Option<u64>,
    /// The time of the latest input.
    now: u64,
    /// The caller's finer clock, µs ([`Router::set_clock_us`]); 0: none.
    clock_us: u64,
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
            shares: BTreeMap::new(),
            expiries: BTreeSet::new(),
            timers: BTreeSet::new(),
            seen: SeenCache::new(config.seen_capacity),
            delivered: SeenCache::new(config.seen_capacity),
            seen_unsaved: Vec::new(),
            store_failing: false,
            seen_purged_ms: now,
            sos_limit: RateLimiter::new(config.sos_burst, config.sos_interval_ms, 10_000),
            neighbour_p0: RateLimiter::new(
                config.neighbour_p0_burst,
                config.neighbour_p0_interval_ms,
                4_096,
            ),
            neighbour_p0_vouched: RateLimiter::new(
                config.neighbour_p0_burst,
                config.neighbour_p0_interval_ms,
                4_096,
            ),
            broadcast_origin: RateLimiter::new(
                config.broadcast_burst,
                config.broadcast_interval_ms,
                10_000,
            ),
            neighbour_broadcast: RateLimiter::new(
                config.neighbour_broadcast_burst,
                config.neighbour_broadcast_interval_ms,
                4_096,
            ),
            last_route: HashMap::new(),
            tracked: HashMap::new(),
            tracked_order: BTreeSet::new(),
            sos_watch: BTreeMap::new(),
            recent: VecDeque::new(),
            authorities: HashSet::new(),
            registered: HashSet::new(),
            batch: BTreeMap::new(),
            pending_acks: Vec::new(),
            delivery_acks: Vec::new(),
            unwritten: Vec::new(),
            deferred: None,
            events: VecDeque::new(),
            next_refresh: now.saturating_add(config.refresh_interval_ms),
            now,
            clock_us: 0,
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
        // Oldest first, each as seen when it was created: if there are more
        // than the cache holds, the horizon rises only to the newest one
        // left out, not to now, and what it leaves out stays in the store.
        let mut seen: Vec<SeenRecord> = seen.into_iter().filter(|r| r.expires_ms > now).collect();
        seen.sort_unstable_by_key(|r| (r.created_ms, r.id));
        for r in seen {
            let at = r.created_ms.min(now);
            // A delivered record stands for the broadcast or flood that
            // brought it as well (RocksDB keeps one record per id).
            router.seen.record(r.id, r.expires_ms, at);
            if r.delivered {
                router.delivered.record(r.id, r.expires_ms, at);
            }
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

    /// The store, for a caller that writes the batches it takes
    /// ([`Router::take_write`]) through the router's own handle (the
    /// simulator; the daemon opens a second handle on its database).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back (for a restart).
    pub fn into_store(mut self) -> S {
        self.flush();
        self.store
    }

    // ----- inputs -----

    /// The time in µs, on the same epoch as the ms times of every other
    /// call, for bulk pacing: a hop's queue on a fast link lasts well
    /// under a millisecond. A caller with such a clock gives it before
    /// each call; without it the pacer counts in whole milliseconds.
    pub fn set_clock_us(&mut self, now_us: u64) {
        self.clock_us = self.clock_us.max(now_us);
    }

    /// The pacer's time: the caller's µs clock, unless it lags the latest
    /// ms time given (or was never given).
    fn pace_now(&self) -> u64 {
        self.clock_us.max(self.now.saturating_mul(1000))
    }

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
                    counted_ms: now,
                    reported: false,
                    silent: false,
                    pacer: Pacer::new(self.pace_config(), self.pace_now()),
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
            Err(_) => return self.misbehaved(now, from, |c| c.invalid += 1),
        };
        let frame_bytes = match neighbour.reassembler.push(packet) {
            Ok(Some((_, bytes))) => bytes,
            Ok(None) => return,
            Err(_) => return self.misbehaved(now, from, |c| c.invalid += 1),
        };
        let frame = match Frame::decode_deferred(&frame_bytes) {
            Ok(f) => f,
            Err(_) => return self.misbehaved(now, from, |c| c.invalid += 1),
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
            Frame::Timing {
                unit,
                probe,
                echo,
                received,
            } => self.handle_timing(from, unit, probe, echo.map(|e| (e, received))),
        }
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
        self.pace_timeout(self.pace_now());
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
            self.pace_poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- outputs -----

    /// The next event. It writes custody first ([`Router::flush`]), unless
    /// the caller makes the writes ([`Router::defer_writes`]).
    ///
    /// An [`Event::Delivered`] does not wait for a write: the caller keeps
    /// it first (with [`Delivery::seen`]). Its seen record goes into the
    /// write after it is taken here, and its acknowledgement, which makes
    /// the previous hop forget the message, goes out after that write. So
    /// keep each delivery before the next write (the next `poll_event`, or
    /// [`Router::take_write`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.deferred.is_none() {
            self.flush();
        }
        let event = self.events.pop_front();
        if let Some(Event::Delivered(delivery)) = &event {
            self.delivery_taken(delivery.id, delivery.seen);
        }
        event
    }

    /// The next packet for `neighbour`, when its link can take one. It does
    /// not write custody (see the module's doc): custody acknowledgements
    /// are queued by [`Router::flush`] or [`Router::poll_event`], so call one
    /// of them after filling the links, then fill them again.
    pub fn poll_link(&mut self, now: u64, neighbour: &Address) -> Option<Vec<u8>> {
        self.now = self.now.max(now);
        self.table.set_time(self.now);
        let pace_now = self.pace_now();
        let n = self.neighbours.get_mut(neighbour)?;
        let bulk = n.scheduler.bulk_waiting() && n.pacer.allow_bulk(pace_now);
        let fragment = n.scheduler.poll_fragment_paced(bulk)?;
        if fragment.class == Class::P3 {
            n.pacer.sent_bulk(pace_now, fragment.bytes.len());
        }
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

    // ----- internals -----

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

    fn set_status(&mut self, id: MessageId, status: Status) {
        if let Some(t) = self.tracked.get_mut(&id)
            && t.status != status
            && !t.status.is_final()
        {
            t.status = status;
            self.emit_after_write(Event::Status { id, status });
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
}
