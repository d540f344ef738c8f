//! Protobuf wire types. Decoding goes through lifeline-crypto's bounded,
//! canonical decoder, so every lifeline decoder follows the same rules.

/// Types generated from `proto/lifeline_consensus.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/lifeline.consensus.v1.rs"));
}
