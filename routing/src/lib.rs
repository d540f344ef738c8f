//! lifeline's priority message router, as a sans-IO state machine.
//!
//! - [`router`]: the [`Router`], one node's state machine, which the daemon
//!   and the simulator both drive;
//! - [`routes`]: loop-free distance-vector routing (Babel-style);
//! - [`schedule`]: the per-link scheduler (strict priority, fragments, fair
//!   queueing by upstream);
//! - [`limits`]: duplicate suppression and rate limits;
//! - [`link`]: reassembly of fragments;
//! - [`locate`]: zones, landmarks and location registrations of scoped
//!   meshes;
//! - [`store`]: the [`MessageStore`] trait for custody, and its in-memory
//!   implementation;
//! - [`wire`]: frames and their protobuf encoding.
//!
//! See `docs/routing.md` for the protocol as a whole.

pub mod limits;
pub mod link;
pub mod locate;
pub mod pace;
pub mod router;
pub mod routes;
pub mod schedule;
pub mod store;
pub mod wire;

pub use router::{
    Config, Delivery, Destination, DropReason, Event, Misbehaviour, Router, RouterError, SendError,
    SendRequest, Stats, Status,
};
pub use store::{MemoryMessageStore, MessageStore, SeenRecord, StoreBatch};
pub use wire::{Address, Area, Kind, MessageId};

/// Priority classes, highest first. The class travels in the cleartext frame
/// header so that relays which cannot read a message can still schedule it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// SOS and life safety.
    P0 = 0,
    /// Official alerts and authority coordination (chain blocks and votes too).
    P1 = 1,
    /// Personal messages.
    P2 = 2,
    /// Bulk and telemetry.
    P3 = 3,
}

impl Class {
    /// All classes, highest priority first.
    pub const ALL: [Class; 4] = [Class::P0, Class::P1, Class::P2, Class::P3];

    fn index(self) -> usize {
        self as usize
    }
}
