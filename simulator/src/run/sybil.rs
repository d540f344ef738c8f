//! Sybil attackers: hostile nodes that send broadcasts each signed by a
//! fresh key, so that no per-origin limit ever bites, with an SOS payload
//! and as many hops as a message may ask for (issue 23, items 3 and 4).

use std::collections::HashSet;

use lifeline_crypto::Identity;
use lifeline_routing::wire::{Body, Frame, Kind, Message};
use lifeline_routing::{Address, Class, MessageId};

/// What the Sybil attackers sent, and what reached honest nodes.
#[derive(Debug, Default)]
pub(super) struct Sybils {
    /// The attacking nodes.
    pub nodes: Vec<usize>,
    /// Ids of what they sent.
    pub ids: HashSet<MessageId>,
    /// Broadcasts sent.
    pub sent: u64,
    /// Deliveries of those at honest nodes.
    pub delivered_to_honest: u64,
    /// Keys made so far (each broadcast has its own).
    keys: u64,
}

impl Sybils {
    /// No broadcasts yet from these attacking nodes.
    pub fn new(nodes: Vec<usize>) -> Self {
        Self {
            nodes,
            ..Self::default()
        }
    }

    /// A broadcast of `class` with an SOS payload, signed by a new key,
    /// asking for `hops` hops: the frame to send, and its id.
    pub fn broadcast(&mut self, class: Class, hops: u32, now_ms: u64) -> (Class, Vec<u8>) {
        self.keys += 1;
        let seed = blake3::hash(&self.keys.to_le_bytes());
        let Ok(key) = Identity::from_secret_bytes(seed.as_bytes()) else {
            unreachable!("any 32 bytes are an ed25519 secret key");
        };
        let body = Body {
            class,
            kind: Kind::Data,
            destination: None,
            origin: Some(Address::from(key.id())),
            created_ms: now_ms,
            expires_ms: now_ms + 3_600_000,
            area: None,
            nonce: self.keys.to_le_bytes(),
            payload: b"SOS SOS SOS (sybil)".to_vec(),
        };
        let message = Message::new(body, Some(&key), hops);
        self.ids.insert(message.id);
        self.sent += 1;
        (class, Frame::Message(Box::new(message)).encode())
    }
}
