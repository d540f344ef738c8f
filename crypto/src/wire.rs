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
    if message.encoded_len() != bytes.len() || message.encode_to_vec() != bytes {
        return Err(DecodeError::NonCanonical { what });
    }
    Ok(message)
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

    #[test]
    fn fixed_fields_check_length() {
        assert_eq!(fixed::<4>("T", "f", &[1, 2, 3, 4]), Ok([1, 2, 3, 4]));
        assert!(matches!(
            fixed::<32>("T", "f", &[0; 31]),
            Err(DecodeError::FieldLength { len: 31, .. })
        ));
    }
}
