//! Protobuf wire types and the bounded decoding that every decoder here uses.
//!
//! Input is hostile: its size is checked against a per-type limit before prost
//! looks at it (prost never allocates more than the input's length, so the
//! limit bounds allocation), every fixed-size field has its length checked, and
//! an encoding that does not re-encode to exactly the same bytes (unknown,
//! repeated, padded or reordered fields) is refused, so one message has one
//! encoding.

use prost::Message;
use thiserror::Error;

/// Types generated from `proto/lifeline_crypto.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/lifeline.crypto.v1.rs"));
}

/// Why bytes could not be decoded into one of this crate's wire types.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is longer than this type may ever be.
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// The type being decoded.
        what: &'static str,
        /// The input's length.
        len: usize,
        /// The limit for this type.
        max: usize,
    },
    /// The input is not valid protobuf for this type.
    #[error("{what} is not valid protobuf: {reason}")]
    Protobuf {
        /// The type being decoded.
        what: &'static str,
        /// prost's description of the problem.
        reason: String,
    },
    /// The input decodes, but is not the one canonical encoding of its value.
    #[error("{what} has unknown, repeated, padded or reordered fields")]
    NonCanonical {
        /// The type being decoded.
        what: &'static str,
    },
    /// A field has the wrong length.
    #[error("{what}.{field} is {len} bytes, expected {expected}")]
    FieldLength {
        /// The type being decoded.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The length it must have (or the bound it broke).
        expected: &'static str,
    },
    /// A field holds a value that is not allowed.
    #[error("{what}.{field} is invalid: {reason}")]
    InvalidField {
        /// The type being decoded.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Decodes `bytes` as `M` after checking them against `max` bytes, and refuses
/// non-canonical encodings.
pub fn decode_bounded<M: Message + Default>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<M, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    let message = M::decode(bytes).map_err(|e| DecodeError::Protobuf {
        what,
        reason: e.to_string(),
    })?;
    // Same length first (cheap), then the same bytes: fields out of order
    // re-encode to the same length but are another encoding of the value.
    if message.encoded_len() != bytes.len() || !encodes_to(&message, bytes) {
        return Err(DecodeError::NonCanonical { what });
    }
    Ok(message)
}

/// Whether `message` encodes to exactly `bytes` (already known to be its
/// encoded length). Small messages (every packet and route update a relay
/// decodes) are encoded on the stack rather than into a new allocation.
fn encodes_to<M: Message>(message: &M, bytes: &[u8]) -> bool {
    const ON_STACK: usize = 2048;
    if bytes.len() > ON_STACK {
        return message.encode_to_vec() == bytes;
    }
    let mut buf = [0u8; ON_STACK];
    let mut out = &mut buf[..bytes.len()];
    message.encode(&mut out).is_ok() && out.is_empty() && buf[..bytes.len()] == *bytes
}

/// Copies a field that must be exactly `N` bytes long.
pub fn fixed<const N: usize>(
    what: &'static str,
    field: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], DecodeError> {
    <[u8; N]>::try_from(bytes).map_err(|_| DecodeError::FieldLength {
        what,
        field,
        len: bytes.len(),
        expected: match N {
            16 => "16",
            24 => "24",
            32 => "32",
            64 => "64",
            _ => "a fixed length",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let err = decode_bounded::<pb::Envelope>("Envelope", &[0u8; 11], 10).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                what: "Envelope",
                len: 11,
                max: 10
            }
        );
    }

    #[test]
    fn unknown_fields_are_non_canonical() {
        let mut bytes = pb::Envelope {
            header: vec![1, 2, 3],
            ciphertext: vec![4],
        }
        .encode_to_vec();
        // Field 9, varint 1: prost skips it, so the value re-encodes shorter.
        bytes.extend_from_slice(&[0x48, 0x01]);
        let err = decode_bounded::<pb::Envelope>("Envelope", &bytes, 100).unwrap_err();
        assert_eq!(err, DecodeError::NonCanonical { what: "Envelope" });
    }

    #[test]
    fn repeated_scalar_field_is_non_canonical() {
        let one = pb::Envelope {
            header: vec![1],
            ciphertext: vec![],
        }
        .encode_to_vec();
        let twice = [one.clone(), one].concat();
        let err = decode_bounded::<pb::Envelope>("Envelope", &twice, 100).unwrap_err();
        assert_eq!(err, DecodeError::NonCanonical { what: "Envelope" });
    }

    /// Fields out of order re-encode to the same length, so only the byte
    /// comparison catches them: on the stack (small) and on the heap.
    #[test]
    fn fields_out_of_order_are_non_canonical_at_every_size() {
        for len in [1usize, 2_000, 2_047, 2_048, 5_000] {
            let header = vec![7u8; 3];
            let ciphertext = vec![9u8; len];
            let canonical = pb::Envelope {
                header: header.clone(),
                ciphertext: ciphertext.clone(),
            }
            .encode_to_vec();
            let decoded = decode_bounded::<pb::Envelope>("Envelope", &canonical, 10_000);
            assert_eq!(decoded.map(|e| e.ciphertext.len()), Ok(len));
            let swapped = [
                pb::Envelope {
                    header: vec![],
                    ciphertext,
                }
                .encode_to_vec(),
                pb::Envelope {
                    header,
                    ciphertext: vec![],
                }
                .encode_to_vec(),
            ]
            .concat();
            assert_eq!(swapped.len(), canonical.len());
            let err = decode_bounded::<pb::Envelope>("Envelope", &swapped, 10_000).unwrap_err();
            assert_eq!(err, DecodeError::NonCanonical { what: "Envelope" }, "{len}");
        }
    }

    #[test]
    fn fixed_fields_check_length() {
        assert_eq!(fixed::<4>("T", "f", &[1, 2, 3, 4]), Ok([1, 2, 3, 4]));
        assert!(matches!(
            fixed::<32>("T", "f", &[0; 31]),
            Err(DecodeError::FieldLength { len: 31, .. })
        ));
    }
}
