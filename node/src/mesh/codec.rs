//! The mesh protocol's frames and routed payloads: encoding, and decoding of
//! what a peer sends (bounded before it allocates, canonical, typed errors).
//!
//! Pure and self-contained (prost, our crypto and consensus crates, nothing
//! async), so that the fuzz harness compiles this very file
//! (`fuzz/fuzz_targets/mesh_frame.rs`) without the daemon's dependencies.

use lifeline_consensus::sync::MAX_SYNC_MESSAGE_LEN;
use lifeline_crypto::wire::decode_bounded;
use prost::Message;
use thiserror::Error;

use crate::pb::mesh::{AppPayload, MeshFrame, mesh_frame};

/// Largest frame: a full chain sync answer plus framing.
pub const MAX_FRAME: usize = MAX_SYNC_MESSAGE_LEN + 1024;

/// Largest routed payload the application layer reads: the router's own
/// payload limit, plus the payload's framing.
pub const MAX_APP_PAYLOAD: usize = lifeline_routing::wire::MAX_PAYLOAD + 64;

/// What a neighbour sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A routing packet.
    Packet(Vec<u8>),
    /// A chain sync message.
    Sync(Vec<u8>),
}

/// Why a frame or payload is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A frame announced more bytes than any frame may have.
    #[error("a mesh frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// It did not decode.
    #[error("{what} did not decode: {reason}")]
    Decode {
        /// A frame or a payload.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl Frame {
    /// The frame's bytes, without the length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            Frame::Packet(bytes) => mesh_frame::Kind::Packet(bytes.clone()),
            Frame::Sync(bytes) => mesh_frame::Kind::Sync(bytes.clone()),
        };
        MeshFrame { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let bad = |reason: String| FrameError::Decode {
            what: "a mesh frame",
            reason,
        };
        let frame: MeshFrame =
            decode_bounded("mesh frame", bytes, MAX_FRAME).map_err(|e| bad(e.to_string()))?;
        match frame.kind {
            Some(mesh_frame::Kind::Packet(p)) => Ok(Frame::Packet(p)),
            Some(mesh_frame::Kind::Sync(s)) => Ok(Frame::Sync(s)),
            None => Err(bad("it has no content".into())),
        }
    }
}

/// The length a frame's 4-byte prefix announces, if a frame may be that long.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a delivered message's payload.
pub fn decode_payload(bytes: &[u8]) -> Result<AppPayload, FrameError> {
    decode_bounded("payload", bytes, MAX_APP_PAYLOAD).map_err(|e| FrameError::Decode {
        what: "a routed payload",
        reason: e.to_string(),
    })
}
