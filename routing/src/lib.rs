//! lifeline's priority message router, as a sans-IO state machine.
//!
//! This crate grows with issue 4. So far: the per-link scheduler that decides
//! which fragment goes on a link next ([`schedule`]).

pub mod limits;
pub mod routes;
pub mod schedule;

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
