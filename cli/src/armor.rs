//! Text armour for binary objects people pass around (contact cards,
//! envelopes): a type prefix and URL-safe base64, so they survive being pasted
//! into chats, emails or QR codes.

use anyhow::{Result, bail};
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

/// Armours `bytes` as `kind`.
pub fn encode(kind: Kind, bytes: &[u8]) -> String {
    format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes))
}

/// Reads armoured text of `kind` (surrounding white space allowed), refusing
/// anything larger than `max` bytes once decoded.
pub fn decode(kind: Kind, text: &str, max: usize) -> Result<Vec<u8>> {
    let text = text.trim();
    let Some(body) = text.strip_prefix(kind.prefix()) else {
        let other = [Kind::Card, Kind::Envelope]
            .into_iter()
            .find(|k| text.starts_with(k.prefix()));
        match other {
            Some(other) => bail!("this is a {other:?}, not a {kind:?}"),
            None => bail!(
                "not a lifeline {kind:?} (it should start with {})",
                kind.prefix()
            ),
        }
    };
    // base64 grows data by 4/3: bound before decoding.
    if body.len() / 4 * 3 > max {
        bail!(
            "the {kind:?} is larger than any valid one ({} characters)",
            body.len()
        );
    }
    let body: String = body.split_whitespace().collect();
    URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| anyhow::anyhow!("the {kind:?} is damaged ({e}); copy it again in full"))
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
