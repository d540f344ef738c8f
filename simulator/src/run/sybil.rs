//! Sybil attackers: hostile nodes that send broadcasts each signed by a
//! fresh key, so that no per-origin limit ever bites, with an SOS payload
//! and as many hops as a message may ask for (issue 23, items 3 and 4);
//! and crowders, which send such messages to addresses no route reaches,
//! so that every node they reach holds them in custody (item 7).

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
    /// asking for `hops` hops (or, `to_nowhere`, a unicast to the address
    /// of another new key, which no route reaches): the frame to send.
    pub fn message(
        &mut self,
        class: Class,
        hops: u32,
        to_nowhere: bool,
        now_ms: u64,
    ) -> (Class, Vec<u8>) {
        let key = self.fresh_key();
        let destination = to_nowhere.then(|| Address::from(self.fresh_key().id()));
        let body = Body {
            class,
            kind: Kind::Data,
            destination,
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

    fn fresh_key(&mut self) -> Identity {
        self.keys += 1;
        let seed = blake3::hash(&self.keys.to_le_bytes());
        let Ok(key) = Identity::from_secret_bytes(seed.as_bytes()) else {
            unreachable!("any 32 bytes are an ed25519 secret key");
        };
        key
    }
}
