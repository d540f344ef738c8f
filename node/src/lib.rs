//! The lifeline daemon: drives the routing and consensus state machines
//! from a libp2p swarm and tokio, with RocksDB stores, a local control API
//! (gRPC over a Unix socket) and Prometheus metrics.
//!
//! [`run`] starts a node and runs it until its shutdown future completes.

pub mod capped;
pub mod client;
pub mod config;
pub mod control;
mod driver;
pub mod geocodes;
pub mod ip_limit;
pub mod mesh;
pub mod metrics;
pub mod muxer;
pub mod swarm;
pub mod web;

pub use config::{Config, ConfigError};
pub use driver::{INBOX_KEEP, MAX_POOL, NodeError, Options, run};

/// Generated protobuf and gRPC code.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// The mesh protocol and routed payloads.
    pub mod mesh {
        include!(concat!(env!("OUT_DIR"), "/lifeline.mesh.v1.rs"));
    }
    /// The control API.
    pub mod control {
        include!(concat!(env!("OUT_DIR"), "/lifeline.control.v1.rs"));
    }
}
