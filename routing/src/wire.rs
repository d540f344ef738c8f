//! The router's wire format (`proto/lifeline_routing.proto`) as typed values.
//!
//! Every decoder here bounds its input before decoding, refuses
//! non-canonical encodings (one value, one encoding) and checks every field,
//! so that nothing a neighbour sends can panic the router or make it allocate
//! more than the bytes it was handed. Signed bodies are verified against the
//! exact bytes that travelled.

use std::fmt;

use lifeline_crypto::wire::{DecodeError, decode_bounded, fixed};
use lifeline_crypto::{Identity, NodeId};
use prost::Message as _;
use thiserror::Error;

use crate::Class;
use crate::routes::{Metric, RouteMessage};

/// Types generated from `proto/lifeline_routing.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/lifeline.routing.v1.rs"));
}

/// Domain of origin signatures over message bodies.
pub const FRAME_DOMAIN: &[u8] = b"lifeline/frame/v1";
/// Domain separation for location registrations ([`Location`]).
pub const LOCATE_DOMAIN: &[u8] = b"lifeline/locate/v1";
/// Largest message payload (a sealed envelope): 256 KiB.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Largest encoded body.
pub const MAX_BODY: usize = MAX_PAYLOAD + 512;
/// Largest encoded frame. Control frames, summaries and pulls are bounded by
/// entry counts that fit in this too.
pub const MAX_FRAME: usize = MAX_BODY + 256;
/// Largest fragment payload a link may use.
pub const MAX_MTU: usize = 64 * 1024;
/// Most fragments one frame may have.
pub const MAX_FRAGMENTS: u32 = 4096;
/// Most hops any message may travel.
pub const MAX_HOPS: u32 = 255;
/// Longest lifetime of a message: 30 days.
pub const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most route updates and requests in one control frame.
pub const MAX_CONTROL_ENTRIES: usize = 4096;
/// Most entries in one summary, and ids in one pull.
pub const MAX_SUMMARY_ENTRIES: usize = 1024;
/// Longest note on a receipt or SOS acknowledgement, in bytes.
pub const MAX_NOTE: usize = 256;

/// Why a packet or frame from a neighbour was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes do not decode, or a field is out of bounds.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A P0 or P1 message, receipt or acknowledgement carries no origin signature.
    #[error("a {0} message must be signed by its origin")]
    Unsigned(&'static str),
    /// The origin is not a valid public key.
    #[error("the message's origin is not a valid node id")]
    BadOrigin,
    /// The origin signature does not verify over the body.
    #[error("the message's origin signature does not verify")]
    BadSignature,
}

fn invalid(what: &'static str, field: &'static str, reason: &'static str) -> FrameError {
    FrameError::Decode(DecodeError::InvalidField {
        what,
        field,
        reason,
    })
}

/// Where a message can be sent: the raw 32 bytes of a node's ed25519 key.
///
/// Routing compares and hashes addresses without decompressing the key; only
/// signed messages have their origin checked as a real key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 32]);

impl crate::routes::Name for Address {
    fn digest_name(&self) -> [u8; 32] {
        self.0
    }
}

impl From<NodeId> for Address {
    fn from(id: NodeId) -> Self {
        Address(*id.as_bytes())
    }
}

impl From<&NodeId> for Address {
    fn from(id: &NodeId) -> Self {
        Address(*id.as_bytes())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NodeId::from_public_key_bytes(&self.0) {
            Ok(id) => write!(f, "{id}"),
            Err(_) => {
                for b in &self.0[..8] {
                    write!(f, "{b:02x}")?;
                }
                f.write_str("…")
            }
        }
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A message's id: the first 16 bytes of the BLAKE3 hash of its body, so a
/// relay cannot change a message without changing its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// The id of an encoded body.
    pub fn of_body(body: &[u8]) -> Self {
        let hash = blake3::hash(body);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.as_bytes()[..16]);
        MessageId(id)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl std::str::FromStr for MessageId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 32 || !s.is_ascii() {
            return Err("a message id is 32 hexadecimal characters");
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| "a message id is 32 hexadecimal characters")?;
        }
        Ok(MessageId(id))
    }
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Content for its destination (a sealed envelope, an alert, a block).
    Data,
    /// A signed delivery receipt from the recipient.
    Receipt,
    /// A responder's signed acknowledgement of an SOS ("help is coming").
    SosAck,
}

impl Kind {
    fn from_wire(kind: u32) -> Option<Kind> {
        match kind {
            0 => Some(Kind::Data),
            1 => Some(Kind::Receipt),
            2 => Some(Kind::SosAck),
            _ => None,
        }
    }

    fn to_wire(self) -> u32 {
        match self {
            Kind::Data => 0,
            Kind::Receipt => 1,
            Kind::SosAck => 2,
        }
    }
}

impl Class {
    /// The class with this wire number (0 to 3).
    pub fn from_wire(class: u32) -> Option<Class> {
        Class::ALL.get(usize::try_from(class).ok()?).copied()
    }

    /// The wire number.
    pub fn to_wire(self) -> u32 {
        self as u32
    }
}

/// A circle on the map, for broadcasts that should stay in an area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    /// Centre latitude in millionths of a degree.
    pub lat_microdeg: i32,
    /// Centre longitude in millionths of a degree.
    pub lon_microdeg: i32,
    /// Radius in metres.
    pub radius_m: u32,
}

impl Area {
    /// Whether a point (in microdegrees) lies inside, on a spherical Earth.
    pub fn contains(&self, lat_microdeg: i32, lon_microdeg: i32) -> bool {
        const EARTH_RADIUS_M: f64 = 6_371_000.0;
        let rad = |micro: i32| (f64::from(micro) / 1e6).to_radians();
        let (la1, lo1) = (rad(self.lat_microdeg), rad(self.lon_microdeg));
        let (la2, lo2) = (rad(lat_microdeg), rad(lon_microdeg));
        let h = ((la2 - la1) / 2.0).sin().powi(2)
            + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
        let distance = 2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin();
        distance <= f64::from(self.radius_m)
    }
}

/// A message's immutable part, covered by its id and (if it has an origin)
/// by the origin's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    /// Its priority class.
    pub class: Class,
    /// What it is.
    pub kind: Kind,
    /// Its destination, or `None` for a broadcast.
    pub destination: Option<Address>,
    /// Its signer, if it is signed (P0, P1, receipts, acknowledgements).
    pub origin: Option<Address>,
    /// When it was created (ms).
    pub created_ms: u64,
    /// When it expires (ms); nobody forwards or holds it after that.
    pub expires_ms: u64,
    /// For broadcasts: the area to stay in.
    pub area: Option<Area>,
    /// Makes two equal sends two different messages.
    pub nonce: [u8; 8],
    /// The content.
    pub payload: Vec<u8>,
}

impl Body {
    /// The body of a personal (P2) or bulk (P3) message for one destination:
    /// no origin, since the sender is sealed inside `payload`.
    pub fn sealed(
        class: Class,
        destination: Address,
        created_ms: u64,
        expires_ms: u64,
        nonce: [u8; 8],
        payload: Vec<u8>,
    ) -> Body {
        Body {
            class,
            kind: Kind::Data,
            destination: Some(destination),
            origin: None,
            created_ms,
            expires_ms,
            area: None,
            nonce,
            payload,
        }
    }

    fn to_pb(&self) -> pb::Body {
        pb::Body {
            class: self.class.to_wire(),
            kind: self.kind.to_wire(),
            destination: self.destination.map(|a| a.0.to_vec()).unwrap_or_default(),
            origin: self.origin.map(|a| a.0.to_vec()).unwrap_or_default(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            area: self.area.map(|a| pb::Area {
                lat_microdeg: a.lat_microdeg,
                lon_microdeg: a.lon_microdeg,
                radius_m: a.radius_m,
            }),
            nonce: self.nonce.to_vec(),
            payload: self.payload.clone(),
        }
    }

    fn from_pb(b: pb::Body) -> Result<Body, FrameError> {
        const WHAT: &str = "Body";
        let class = Class::from_wire(b.class).ok_or(invalid(WHAT, "class", "not 0 to 3"))?;
        let kind = Kind::from_wire(b.kind).ok_or(invalid(WHAT, "kind", "not 0 to 2"))?;
        let address = |field: &'static str, bytes: &[u8]| -> Result<Option<Address>, FrameError> {
            if bytes.is_empty() {
                Ok(None)
            } else {
                Ok(Some(Address(fixed::<32>(WHAT, field, bytes)?)))
            }
        };
        let destination = address("destination", &b.destination)?;
        let origin = address("origin", &b.origin)?;
        if b.expires_ms <= b.created_ms {
            return Err(invalid(WHAT, "expires_ms", "not after created_ms"));
        }
        if b.expires_ms - b.created_ms > MAX_TTL_MS {
            return Err(invalid(
                WHAT,
                "expires_ms",
                "more than 30 days after creation",
            ));
        }
        if b.payload.len() > MAX_PAYLOAD {
            return Err(FrameError::Decode(DecodeError::FieldLength {
                what: WHAT,
                field: "payload",
                len: b.payload.len(),
                expected: "at most 256 KiB",
            }));
        }
        if kind != Kind::Data && destination.is_none() {
            return Err(invalid(WHAT, "destination", "receipts are unicast"));
        }
        if destination.is_some() && b.area.is_some() {
            return Err(invalid(WHAT, "area", "only broadcasts have an area"));
        }
        let nonce = fixed::<8>(WHAT, "nonce", &b.nonce)?;
        Ok(Body {
            class,
            kind,
            destination,
            origin,
            created_ms: b.created_ms,
            expires_ms: b.expires_ms,
            area: b.area.map(|a| Area {
                lat_microdeg: a.lat_microdeg,
                lon_microdeg: a.lon_microdeg,
                radius_m: a.radius_m,
            }),
            nonce,
            payload: b.payload,
        })
    }

    /// Whether the rules require an origin signature on this body.
    fn must_be_signed(&self) -> Option<&'static str> {
        match (self.class, self.kind) {
            (Class::P0, _) => Some("P0"),
            (Class::P1, _) => Some("P1"),
            (_, Kind::Receipt) => Some("receipt"),
            (_, Kind::SosAck) => Some("SOS acknowledgement"),
            _ => None,
        }
    }
}

/// A message as it travels: its body (with the exact encoded bytes its id and
/// signature cover) and the fields that change at each hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// Its decoded body.
    pub body: Body,
    body_bytes: Vec<u8>,
    signature: Option<[u8; 64]>,
    /// Hops it may still travel.
    pub hops_left: u32,
    /// Hops travelled so far.
    pub hops_taken: u32,
    /// A P0 unicast flooded because no route was known, or because its
    /// next hop did not acknowledge it.
    pub flood: bool,
    /// With `flood`: 0 for the flood of a message without a route; otherwise
    /// a detour flood, passed on only by nodes whose route metric to the
    /// destination is at most this.
    pub flood_bound: u32,
    /// In a scoped mesh, the landmark the message heads for while no node
    /// on its way has a route to its destination.
    pub via: Option<Address>,
}

impl Message {
    /// Encodes `body`, signing it with `signer` (whose id must be the body's
    /// origin, if it has one).
    pub fn new(body: Body, signer: Option<&Identity>, hops_left: u32) -> Message {
        let body_bytes = body.to_pb().encode_to_vec();
        let signature = signer.map(|s| s.sign(FRAME_DOMAIN, &body_bytes));
        Message {
            id: MessageId::of_body(&body_bytes),
            body,
            body_bytes,
            signature,
            hops_left: hops_left.min(MAX_HOPS),
            hops_taken: 0,
            flood: false,
            flood_bound: 0,
            via: None,
        }
    }

    /// The encoded size of the message as carried.
    pub fn encoded_len(&self) -> usize {
        self.to_pb().encoded_len()
    }

    fn to_pb(&self) -> pb::Carried {
        pb::Carried {
            body: self.body_bytes.clone(),
            signature: self.signature.map(|s| s.to_vec()).unwrap_or_default(),
            hops_left: self.hops_left,
            hops_taken: self.hops_taken,
            flood: self.flood,
            flood_bound: self.flood_bound,
            via: self.via.map(|v| v.0.to_vec()).unwrap_or_default(),
        }
    }

    /// Decodes and checks a carried message; with `verify`, also the origin
    /// signature if the body has an origin.
    fn from_pb(c: pb::Carried, verify: bool) -> Result<Message, FrameError> {
        const WHAT: &str = "Carried";
        let body_pb: pb::Body = decode_bounded("Body", &c.body, MAX_BODY)?;
        let body = Body::from_pb(body_pb)?;
        if c.hops_left > MAX_HOPS {
            return Err(invalid(WHAT, "hops_left", "more than 255"));
        }
        if c.hops_taken > 255 {
            return Err(invalid(WHAT, "hops_taken", "more than 255"));
        }
        if c.flood && (body.class != Class::P0 || body.destination.is_none()) {
            return Err(invalid(WHAT, "flood", "only P0 unicasts are flooded"));
        }
        if c.flood_bound != 0 && !c.flood {
            return Err(invalid(WHAT, "flood_bound", "set on a message not flooded"));
        }
        if !c.via.is_empty() && body.destination.is_none() {
            return Err(invalid(WHAT, "via", "set on a broadcast"));
        }
        let via = if c.via.is_empty() {
            None
        } else {
            Some(Address(fixed::<32>(WHAT, "via", &c.via)?))
        };
        let signature = if c.signature.is_empty() {
            None
        } else {
            Some(fixed::<64>(WHAT, "signature", &c.signature)?)
        };
        match (body.origin, signature) {
            (None, None) => {
                if let Some(what) = body.must_be_signed() {
                    return Err(FrameError::Unsigned(what));
                }
            }
            (Some(origin), Some(signature)) => {
                if verify {
                    verify_origin(&origin, &c.body, &signature)?;
                }
            }
            (Some(_), None) => return Err(FrameError::Unsigned("signed-origin")),
            (None, Some(_)) => return Err(invalid(WHAT, "signature", "no origin to check it")),
        }
        Ok(Message {
            id: MessageId::of_body(&c.body),
            body,
            body_bytes: c.body,
            signature,
            hops_left: c.hops_left,
            hops_taken: c.hops_taken,
            flood: c.flood,
            flood_bound: c.flood_bound,
            via,
        })
    }

    /// Checks the origin signature (nothing to check without an origin).
    /// Messages from [`Frame::decode`] are checked already; the router
    /// decodes with [`Frame::decode_deferred`] and checks here only where a
    /// check is needed (docs/routing.md, Messages).
    pub fn verify_origin(&self) -> Result<(), FrameError> {
        match (self.body.origin, self.signature) {
            (Some(origin), Some(signature)) => verify_origin(&origin, &self.body_bytes, &signature),
            _ => Ok(()),
        }
    }

    /// Encodes the message as kept in custody.
    pub fn encode_held(&self, accepted_ms: u64, local: bool) -> Vec<u8> {
        pb::Held {
            carried: Some(self.to_pb()),
            accepted_ms,
            local,
        }
        .encode_to_vec()
    }

    /// Decodes a message kept in custody: `(message, accepted_ms, local)`.
    pub fn decode_held(bytes: &[u8]) -> Result<(Message, u64, bool), FrameError> {
        let held: pb::Held = decode_bounded("Held", bytes, MAX_FRAME + 32)?;
        let carried = held.carried.ok_or(invalid("Held", "carried", "missing"))?;
        Ok((
            Message::from_pb(carried, true)?,
            held.accepted_ms,
            held.local,
        ))
    }
}

fn verify_origin(origin: &Address, body: &[u8], signature: &[u8; 64]) -> Result<(), FrameError> {
    let origin = NodeId::from_public_key_bytes(&origin.0).map_err(|_| FrameError::BadOrigin)?;
    origin
        .verify(FRAME_DOMAIN, body, signature)
        .map_err(|_| FrameError::BadSignature)
}

/// The content of a receipt or SOS acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The message acknowledged.
    pub message: MessageId,
    /// A short note ("help is coming").
    pub note: String,
}

impl Receipt {
    /// Encodes the receipt as a message payload.
    pub fn encode(&self) -> Vec<u8> {
        pb::Receipt {
            message: self.message.0.to_vec(),
            note: self.note.clone(),
        }
        .encode_to_vec()
    }

    /// Decodes a receipt payload.
    pub fn decode(bytes: &[u8]) -> Result<Receipt, FrameError> {
        let r: pb::Receipt = decode_bounded("Receipt", bytes, 16 + MAX_NOTE + 8)?;
        if r.note.len() > MAX_NOTE {
            return Err(invalid("Receipt", "note", "longer than 256 bytes"));
        }
        Ok(Receipt {
            message: MessageId(fixed::<16>("Receipt", "message", &r.message)?),
            note: r.note,
        })
    }
}

/// What a node answers when handed a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Stored, and forwarded on a route.
    Forwarding,
    /// Stored, and held until a route appears.
    Holding,
    /// It reached its destination.
    Delivered,
    /// Not taken (custody full of higher-priority messages): keep it.
    Refused,
}

impl AckOutcome {
    fn from_wire(v: u32) -> Option<AckOutcome> {
        match v {
            0 => Some(AckOutcome::Forwarding),
            1 => Some(AckOutcome::Holding),
            2 => Some(AckOutcome::Delivered),
            3 => Some(AckOutcome::Refused),
            _ => None,
        }
    }

    fn to_wire(self) -> u32 {
        match self {
            AckOutcome::Forwarding => 0,
            AckOutcome::Holding => 1,
            AckOutcome::Delivered => 2,
            AckOutcome::Refused => 3,
        }
    }
}

/// One line of a custody summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummaryEntry {
    /// The message held.
    pub id: MessageId,
    /// Where it is going.
    pub destination: Address,
    /// Its class.
    pub class: Class,
    /// The holder's metric to the destination
    /// ([`INFINITY`](crate::routes::INFINITY) without a route).
    pub metric: Metric,
    /// How long ago the holder last had a route to the destination
    /// (`u64::MAX`: never).
    pub last_route_age_ms: u64,
}

/// "Node `node` is near landmark `landmark`", signed by `node`: a
/// registration travelling hop by hop to `home`, the landmark that answers
/// for `node` in a scoped mesh (docs/routing.md, Scoped meshes). Relays only
/// pass it on; `home` checks the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The landmark it goes to.
    pub home: Address,
    /// The node registering, and the signer.
    pub node: Address,
    /// The landmark near `node`, whose zone includes it.
    pub landmark: Address,
    /// When `node` issued it (ms): a newer registration replaces an older.
    pub issued_ms: u64,
    signature: [u8; 64],
}

impl Location {
    /// `identity`'s registration near `landmark`, for `home`.
    pub fn new(identity: &Identity, home: Address, landmark: Address, issued_ms: u64) -> Location {
        let node = Address::from(identity.id());
        let signature = identity.sign(
            LOCATE_DOMAIN,
            &Self::signed_bytes(&home, &node, &landmark, issued_ms),
        );
        Location {
            home,
            node,
            landmark,
            issued_ms,
            signature,
        }
    }

    fn signed_bytes(home: &Address, node: &Address, landmark: &Address, issued_ms: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(3 * 32 + 8);
        bytes.extend_from_slice(&home.0);
        bytes.extend_from_slice(&node.0);
        bytes.extend_from_slice(&landmark.0);
        bytes.extend_from_slice(&issued_ms.to_be_bytes());
        bytes
    }

    /// Whether `node` signed it (a key that is not one is refused too).
    pub fn verify(&self) -> bool {
        let Ok(node) = NodeId::from_public_key_bytes(&self.node.0) else {
            return false;
        };
        let bytes = Self::signed_bytes(&self.home, &self.node, &self.landmark, self.issued_ms);
        node.verify(LOCATE_DOMAIN, &bytes, &self.signature).is_ok()
    }
}

/// "Where is `node`?": a lookup on its way to `home`, `node`'s home
/// landmark, from a source with messages for `node` and no route to it
/// (docs/routing.md, Scoped meshes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// The landmark it goes to.
    pub home: Address,
    /// The node looked up.
    pub node: Address,
    /// The node asking.
    pub asker: Address,
    /// The landmark nearest `asker`: the answer goes by way of it.
    pub asker_landmark: Address,
}

/// A home's answer to a [`Lookup`]: the node's own registration, on its way
/// to `asker` by way of `asker_landmark`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The node that asked.
    pub asker: Address,
    /// The landmark nearest `asker`.
    pub asker_landmark: Address,
    /// The registration, signed by the node looked up.
    pub location: Location,
}

impl Location {
    fn to_pb(&self) -> pb::Locate {
        pb::Locate {
            home: self.home.0.to_vec(),
            node: self.node.0.to_vec(),
            landmark: self.landmark.0.to_vec(),
            issued_ms: self.issued_ms,
            signature: self.signature.to_vec(),
        }
    }

    fn from_pb(l: &pb::Locate) -> Result<Location, FrameError> {
        const WHAT: &str = "Locate";
        Ok(Location {
            home: Address(fixed::<32>(WHAT, "home", &l.home)?),
            node: Address(fixed::<32>(WHAT, "node", &l.node)?),
            landmark: Address(fixed::<32>(WHAT, "landmark", &l.landmark)?),
            issued_ms: l.issued_ms,
            signature: fixed::<64>(WHAT, "signature", &l.signature)?,
        })
    }
}

/// A reassembled frame between neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Routing control messages.
    Control(Vec<RouteMessage<Address>>),
    /// A message.
    Message(Box<Message>),
    /// A custody acknowledgement.
    Ack {
        /// The message.
        id: MessageId,
        /// What became of it.
        outcome: AckOutcome,
    },
    /// What the sender holds for destinations it cannot reach.
    Summary(Vec<SummaryEntry>),
    /// The messages the sender wants handed over.
    Pull(Vec<MessageId>),
    /// A location registration on its way to its home landmark.
    Locate(Box<Location>),
    /// A lookup on its way to a node's home landmark.
    Lookup(Box<Lookup>),
    /// A home's answer to a lookup, on its way to the asker.
    Found(Box<Found>),
    /// A hop delay probe or its echo (a control frame with nothing else
    /// in it; [`crate::pace`]).
    Timing {
        /// The unit of the three times.
        unit: TimeUnit,
        /// A probe: the sender's clock, to be echoed.
        probe: Option<u64>,
        /// An echo: the `probe` of a probe received.
        echo: Option<u64>,
        /// With an echo: when the probe arrived, by the echoer's clock.
        received: Option<u64>,
    },
}

/// The unit of a delay probe's times ([`Frame::Timing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds: nodes from before µs probes.
    Ms,
    /// Microseconds.
    Us,
}

impl Frame {
    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        use pb::frame::Kind as K;
        let kind = match self {
            Frame::Control(messages) => {
                let mut control = pb::Control::default();
                for m in messages {
                    match m {
                        RouteMessage::Update {
                            destination,
                            seqno,
                            metric,
                            reach,
                        } => control.updates.push(pb::RouteUpdate {
                            destination: destination.0.to_vec(),
                            seqno: *seqno,
                            metric: *metric,
                            reach: *reach,
                        }),
                        RouteMessage::SeqnoRequest {
                            destination,
                            seqno,
                            hops,
                        } => control.requests.push(pb::SeqnoRequest {
                            destination: destination.0.to_vec(),
                            seqno: *seqno,
                            hops: u32::from(*hops),
                        }),
                        RouteMessage::Digest { digest } => control.digest = digest.to_vec(),
                        RouteMessage::DumpRequest => control.dump = true,
                    }
                }
                K::Control(control)
            }
            Frame::Timing {
                unit,
                probe,
                echo,
                received,
            } => {
                let mut c = pb::Control::default();
                let fields = match unit {
                    TimeUnit::Ms => [&mut c.probe_ms, &mut c.echo_ms, &mut c.received_ms],
                    TimeUnit::Us => [&mut c.probe_us, &mut c.echo_us, &mut c.received_us],
                };
                for (field, value) in fields.into_iter().zip([probe, echo, received]) {
                    *field = *value;
                }
                K::Control(c)
            }
            Frame::Message(m) => K::Message(m.to_pb()),
            Frame::Ack { id, outcome } => K::Ack(pb::CustodyAck {
                id: id.0.to_vec(),
                outcome: outcome.to_wire(),
            }),
            Frame::Summary(entries) => K::Summary(pb::Summary {
                entries: entries
                    .iter()
                    .map(|e| pb::SummaryEntry {
                        id: e.id.0.to_vec(),
                        destination: e.destination.0.to_vec(),
                        class: e.class.to_wire(),
                        metric: e.metric,
                        last_route_age_ms: e.last_route_age_ms,
                    })
                    .collect(),
            }),
            Frame::Pull(ids) => K::Pull(pb::Pull {
                ids: ids.iter().map(|id| id.0.to_vec()).collect(),
            }),
            Frame::Locate(l) => K::Locate(l.to_pb()),
            Frame::Lookup(l) => K::Lookup(pb::Lookup {
                home: l.home.0.to_vec(),
                node: l.node.0.to_vec(),
                asker: l.asker.0.to_vec(),
                asker_landmark: l.asker_landmark.0.to_vec(),
            }),
            Frame::Found(f) => K::Found(pb::Found {
                asker: f.asker.0.to_vec(),
                asker_landmark: f.asker_landmark.0.to_vec(),
                location: Some(f.location.to_pb()),
            }),
        };
        pb::Frame { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes and checks a frame from a neighbour, the origin signature of
    /// a message included.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        Self::decode_checked(bytes, true)
    }

    /// Like [`Frame::decode`], but a message's origin signature is left
    /// for [`Message::verify_origin`]: a relay then checks it only when it
    /// acts on the origin, and not for a copy it has seen already.
    pub fn decode_deferred(bytes: &[u8]) -> Result<Frame, FrameError> {
        Self::decode_checked(bytes, false)
    }

    /// The body of a message frame, for an observer that only looks (the
    /// simulator counts frames by class): checked field by field like
    /// [`Frame::decode`], but without the message id (a hash of the body),
    /// the canonical-encoding check or the signature. `None` for other
    /// frames and for anything that does not decode. Not for a node to act
    /// on.
    pub fn peek_body(bytes: &[u8]) -> Option<Body> {
        use prost::Message as _;
        if bytes.len() > MAX_FRAME {
            return None;
        }
        let frame = pb::Frame::decode(bytes).ok()?;
        let Some(pb::frame::Kind::Message(c)) = frame.kind else {
            return None;
        };
        if c.body.len() > MAX_BODY {
            return None;
        }
        Body::from_pb(pb::Body::decode(c.body.as_slice()).ok()?).ok()
    }

    fn decode_checked(bytes: &[u8], verify: bool) -> Result<Frame, FrameError> {
        use pb::frame::Kind as K;
        let frame: pb::Frame = decode_bounded("Frame", bytes, MAX_FRAME)?;
        match frame.kind.ok_or(invalid("Frame", "kind", "missing"))? {
            K::Control(c)
                if c.probe_ms.is_some()
                    || c.echo_ms.is_some()
                    || c.received_ms.is_some()
                    || c.probe_us.is_some()
                    || c.echo_us.is_some()
                    || c.received_us.is_some() =>
            {
                // Alone, or not at all: anything else would not re-encode
                // to the bytes it came as.
                if !c.updates.is_empty() || !c.requests.is_empty() || !c.digest.is_empty() || c.dump
                {
                    return Err(invalid(
                        "Control",
                        "probe_ms",
                        "a delay probe or echo beside routing entries",
                    ));
                }
                let ms = [c.probe_ms, c.echo_ms, c.received_ms];
                let us = [c.probe_us, c.echo_us, c.received_us];
                let (unit, [probe, echo, received]) = if us.iter().all(Option::is_none) {
                    (TimeUnit::Ms, ms)
                } else if ms.iter().all(Option::is_none) {
                    (TimeUnit::Us, us)
                } else {
                    return Err(invalid("Control", "probe_us", "times in both ms and µs"));
                };
                if received.is_some() && echo.is_none() {
                    return Err(invalid("Control", "received", "without an echo"));
                }
                Ok(Frame::Timing {
                    unit,
                    probe,
                    echo,
                    received,
                })
            }
            K::Control(c) => {
                if c.updates.len() + c.requests.len() > MAX_CONTROL_ENTRIES {
                    return Err(invalid("Control", "updates", "more than 4096 entries"));
                }
                let mut messages = Vec::with_capacity(c.updates.len() + c.requests.len());
                for u in c.updates {
                    messages.push(RouteMessage::Update {
                        destination: Address(fixed::<32>(
                            "RouteUpdate",
                            "destination",
                            &u.destination,
                        )?),
                        seqno: u.seqno,
                        metric: u.metric,
                        reach: u.reach,
                    });
                }
                for r in c.requests {
                    let hops = u8::try_from(r.hops)
                        .map_err(|_| invalid("SeqnoRequest", "hops", "more than 255"))?;
                    messages.push(RouteMessage::SeqnoRequest {
                        destination: Address(fixed::<32>(
                            "SeqnoRequest",
                            "destination",
                            &r.destination,
                        )?),
                        seqno: r.seqno,
                        hops,
                    });
                }
                if !c.digest.is_empty() {
                    messages.push(RouteMessage::Digest {
                        digest: fixed::<16>("Control", "digest", &c.digest)?,
                    });
                }
                if c.dump {
                    messages.push(RouteMessage::DumpRequest);
                }
                Ok(Frame::Control(messages))
            }
            K::Message(c) => Ok(Frame::Message(Box::new(Message::from_pb(c, verify)?))),
            K::Ack(a) => Ok(Frame::Ack {
                id: MessageId(fixed::<16>("CustodyAck", "id", &a.id)?),
                outcome: AckOutcome::from_wire(a.outcome).ok_or(invalid(
                    "CustodyAck",
                    "outcome",
                    "not 0 to 3",
                ))?,
            }),
            K::Summary(s) => {
                if s.entries.len() > MAX_SUMMARY_ENTRIES {
                    return Err(invalid("Summary", "entries", "more than 1024"));
                }
                let entries = s
                    .entries
                    .into_iter()
                    .map(|e| {
                        Ok(SummaryEntry {
                            id: MessageId(fixed::<16>("SummaryEntry", "id", &e.id)?),
                            destination: Address(fixed::<32>(
                                "SummaryEntry",
                                "destination",
                                &e.destination,
                            )?),
                            class: Class::from_wire(e.class).ok_or(invalid(
                                "SummaryEntry",
                                "class",
                                "not 0 to 3",
                            ))?,
                            metric: e.metric,
                            last_route_age_ms: e.last_route_age_ms,
                        })
                    })
                    .collect::<Result<Vec<_>, FrameError>>()?;
                Ok(Frame::Summary(entries))
            }
            K::Pull(p) => {
                if p.ids.len() > MAX_SUMMARY_ENTRIES {
                    return Err(invalid("Pull", "ids", "more than 1024"));
                }
                let ids = p
                    .ids
                    .iter()
                    .map(|id| Ok(MessageId(fixed::<16>("Pull", "ids", id)?)))
                    .collect::<Result<Vec<_>, FrameError>>()?;
                Ok(Frame::Pull(ids))
            }
            K::Locate(l) => Ok(Frame::Locate(Box::new(Location::from_pb(&l)?))),
            K::Lookup(l) => {
                const WHAT: &str = "Lookup";
                Ok(Frame::Lookup(Box::new(Lookup {
                    home: Address(fixed::<32>(WHAT, "home", &l.home)?),
                    node: Address(fixed::<32>(WHAT, "node", &l.node)?),
                    asker: Address(fixed::<32>(WHAT, "asker", &l.asker)?),
                    asker_landmark: Address(fixed::<32>(
                        WHAT,
                        "asker_landmark",
                        &l.asker_landmark,
                    )?),
                })))
            }
            K::Found(f) => {
                const WHAT: &str = "Found";
                let location = f
                    .location
                    .as_ref()
                    .ok_or(invalid(WHAT, "location", "missing"))?;
                Ok(Frame::Found(Box::new(Found {
                    asker: Address(fixed::<32>(WHAT, "asker", &f.asker)?),
                    asker_landmark: Address(fixed::<32>(
                        WHAT,
                        "asker_landmark",
                        &f.asker_landmark,
                    )?),
                    location: Location::from_pb(location)?,
                })))
            }
        }
    }
}

/// One fragment of a frame on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The frame's number on this link.
    pub frame: u64,
    /// Which fragment, from 0.
    pub index: u32,
    /// How many fragments the frame has.
    pub count: u32,
    /// The frame's class.
    pub class: Class,
    /// The fragment's bytes.
    pub data: Vec<u8>,
}

impl Packet {
    /// Encodes the packet.
    pub fn encode(&self) -> Vec<u8> {
        pb::Packet {
            frame: self.frame,
            index: self.index,
            count: self.count,
            class: self.class.to_wire(),
            data: self.data.clone(),
        }
        .encode_to_vec()
    }

    /// Decodes and checks a packet.
    pub fn decode(bytes: &[u8]) -> Result<Packet, FrameError> {
        const WHAT: &str = "Packet";
        let p: pb::Packet = decode_bounded(WHAT, bytes, MAX_MTU + 32)?;
        if p.count == 0 || p.count > MAX_FRAGMENTS {
            return Err(invalid(WHAT, "count", "not 1 to 4096"));
        }
        if p.index >= p.count {
            return Err(invalid(WHAT, "index", "not below count"));
        }
        if p.data.is_empty() {
            return Err(invalid(WHAT, "data", "empty"));
        }
        Ok(Packet {
            frame: p.frame,
            index: p.index,
            count: p.count,
            class: Class::from_wire(p.class).ok_or(invalid(WHAT, "class", "not 0 to 3"))?,
            data: p.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reordered_fields_are_another_encoding_and_are_refused() {
        // Found by the routing_frame fuzz target: a valid packet with its
        // fields in reverse order has the same length but other bytes.
        let reordered = [0x2a, 0x01, 0x17, 0x10, 0x10, 0x18, 0x5b, 0x08, 0x08];
        assert!(matches!(
            Packet::decode(&reordered),
            Err(FrameError::Decode(DecodeError::NonCanonical { .. }))
        ));
        let canonical = [0x08, 0x08, 0x10, 0x10, 0x18, 0x5b, 0x2a, 0x01, 0x17];
        let packet = Packet::decode(&canonical).unwrap();
        assert_eq!((packet.frame, packet.index, packet.count), (8, 16, 91));
        assert_eq!(packet.encode(), canonical);
    }

    #[test]
    fn delay_probes_round_trip_and_look_empty_to_older_nodes() {
        for frame in [
            Frame::Timing {
                unit: TimeUnit::Ms,
                probe: Some(1_765_000_000_123),
                echo: None,
                received: None,
            },
            Frame::Timing {
                unit: TimeUnit::Ms,
                probe: None,
                echo: Some(0),
                received: Some(1_765_000_000_125),
            },
            Frame::Timing {
                unit: TimeUnit::Us,
                probe: Some(1_765_000_000_123_456),
                echo: None,
                received: None,
            },
            Frame::Timing {
                unit: TimeUnit::Us,
                probe: None,
                echo: Some(1_765_000_000_123_456),
                received: Some(1_765_000_000_124_001),
            },
        ] {
            let bytes = frame.encode();
            assert_eq!(Frame::decode(&bytes).unwrap(), frame);
            // An older node's schema has no such fields: it sees an empty
            // Control, which it accepts and does nothing with.
            let old = pb::Frame {
                kind: Some(pb::frame::Kind::Control(pb::Control::default())),
            };
            let seen = pb::Frame::decode(bytes.as_slice()).unwrap();
            let Some(pb::frame::Kind::Control(c)) = seen.kind else {
                panic!("not a Control");
            };
            assert!(c.updates.is_empty() && c.requests.is_empty());
            assert_eq!(
                Frame::decode(&old.encode_to_vec()).unwrap(),
                Frame::Control(vec![])
            );
        }
        // A probe beside route entries, or a receive time without an echo,
        // is refused: it would not re-encode to the same bytes (found by
        // the routing_frame fuzz target: `0a 02 38 01`).
        let mixed = pb::Frame {
            kind: Some(pb::frame::Kind::Control(pb::Control {
                dump: true,
                probe_ms: Some(5),
                ..pb::Control::default()
            })),
        };
        assert!(Frame::decode(&mixed.encode_to_vec()).is_err());
        assert!(Frame::decode(&[0x0a, 0x02, 0x38, 0x01]).is_err());
        // Times in two units at once would not re-encode either.
        let units = pb::Frame {
            kind: Some(pb::frame::Kind::Control(pb::Control {
                probe_ms: Some(5),
                echo_us: Some(5_000),
                ..pb::Control::default()
            })),
        };
        assert!(Frame::decode(&units.encode_to_vec()).is_err());
    }

    #[test]
    fn a_message_id_is_bound_to_its_body() {
        let body = Body {
            class: Class::P2,
            kind: Kind::Data,
            destination: Some(Address([7; 32])),
            origin: None,
            created_ms: 1,
            expires_ms: 2,
            area: None,
            nonce: [0; 8],
            payload: b"x".to_vec(),
        };
        let a = Message::new(body.clone(), None, 8);
        let b = Message::new(
            Body {
                payload: b"y".to_vec(),
                ..body
            },
            None,
            8,
        );
        assert_ne!(a.id, b.id);
        let Frame::Message(decoded) =
            Frame::decode(&Frame::Message(Box::new(a.clone())).encode()).unwrap()
        else {
            panic!("not a message");
        };
        assert_eq!(*decoded, a);
    }

    #[test]
    fn a_flood_bound_travels_with_a_flood_and_is_refused_without_one() {
        let sender = Identity::from_secret_bytes(&[3; 32]).unwrap();
        let body = Body {
            class: Class::P0,
            kind: Kind::Data,
            destination: Some(Address([7; 32])),
            origin: Some(Address::from(sender.id())),
            created_ms: 1,
            expires_ms: 2,
            area: None,
            nonce: [0; 8],
            payload: b"SOS".to_vec(),
        };
        let mut m = Message::new(body, Some(&sender), 8);
        m.flood = true;
        m.flood_bound = 4_242;
        let Frame::Message(decoded) =
            Frame::decode(&Frame::Message(Box::new(m.clone())).encode()).unwrap()
        else {
            panic!("not a message");
        };
        assert_eq!(decoded.flood_bound, 4_242);
        m.flood = false;
        let refused = Frame::decode(&Frame::Message(Box::new(m)).encode());
        assert!(
            matches!(&refused, Err(FrameError::Decode(DecodeError::InvalidField { field, .. })) if *field == "flood_bound"),
            "{refused:?}"
        );
    }
}
