//! Text armour for binary objects people pass around (contact cards,
//! envelopes): a type prefix and URL-safe base64, so they survive being pasted
//! into chats, emails or QR codes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What an armoured text holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A contact card: someone's signed prekey.
    Card,
    /// A sealed envelope.
    Envelope,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Card => "lifeline-card:",
            Self::Envelope => "lifeline-envelope:",
        }
    }
}

/// Why armoured text cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArmorError {
    /// It is armour of another kind.
    #[error("this is a {found:?}, not a {wanted:?}")]
    OtherKind {
        /// What it is.
        found: Kind,
        /// What was asked for.
        wanted: Kind,
    },
    /// It is not lifeline armour.
    #[error("not a lifeline {0:?} (it should start with {prefix})", prefix = .0.prefix())]
    NotArmor(Kind),
    /// Larger than any valid one.
    #[error("the {kind:?} is larger than any valid one ({chars} characters)")]
    TooLarge {
        /// What was asked for.
        kind: Kind,
        /// Its length.
        chars: usize,
    },
    /// Not valid base64.
    #[error("the {kind:?} is damaged ({reason}); copy it again in full")]
    Damaged {
        /// What was asked for.
        kind: Kind,
        /// The decoder's words.
        reason: String,
    },
}

/// Armours `bytes` as `kind`.
pub fn encode(kind: Kind, bytes: &[u8]) -> String {
    format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes))
}

/// Reads armoured text of `kind` (surrounding white space allowed), refusing
/// anything larger than `max` bytes once decoded.
pub fn decode(kind: Kind, text: &str, max: usize) -> Result<Vec<u8>, ArmorError> {
    let text = text.trim();
    let Some(body) = text.strip_prefix(kind.prefix()) else {
        let other = [Kind::Card, Kind::Envelope]
            .into_iter()
            .find(|k| text.starts_with(k.prefix()));
        return Err(match other {
            Some(found) => ArmorError::OtherKind {
                found,
                wanted: kind,
            },
            None => ArmorError::NotArmor(kind),
        });
    };
    // base64 grows data by 4/3: bound before decoding.
    if body.len() / 4 * 3 > max {
        return Err(ArmorError::TooLarge {
            kind,
            chars: body.len(),
        });
    }
    let body: String = body.split_whitespace().collect();
    URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| ArmorError::Damaged {
            kind,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_the_wrong_kind() {
        let text = encode(Kind::Card, b"\x00\x01binary\xff");
        assert_eq!(
            decode(Kind::Card, &format!("  {text}\n"), 100).unwrap(),
            b"\x00\x01binary\xff"
        );
        let err = decode(Kind::Envelope, &text, 100).unwrap_err().to_string();
        assert!(err.contains("Card"), "{err}");
        assert!(decode(Kind::Card, "hello", 100).is_err());
        assert!(decode(Kind::Card, "lifeline-card:!!!", 100).is_err());
        let big = encode(Kind::Card, &[0u8; 200]);
        assert!(decode(Kind::Card, &big, 100).is_err());
    }
}
