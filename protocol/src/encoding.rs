//! Byte strings on the wire: Ed25519 public keys (32 bytes), signatures (64 bytes),
//! challenges and tokens, all as unpadded base64url (RFC 4648 §5).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use crate::error::ProtocolError;

/// Encodes bytes as unpadded base64url.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url; padding, `+` and `/` are refused.
pub fn unb64(text: &str) -> Result<Vec<u8>, ProtocolError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| ProtocolError::Malformed("not unpadded base64url".into()))
}

fn fixed<const N: usize>(text: &str, what: &str) -> Result<[u8; N], ProtocolError> {
    let bytes = unb64(text)?;
    bytes
        .try_into()
        .map_err(|_| ProtocolError::Malformed(format!("{what} must be {N} bytes")))
}

/// An Ed25519 public key: the account id of whoever holds its private half.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses the base64url form.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        fixed::<32>(text, "a public key").map(Self)
    }
    /// The base64url form used on the wire.
    pub fn to_b64(&self) -> String {
        b64(&self.0)
    }
    /// A short, non-identifying label for humans comparing keys (first 8 base64url
    /// characters). Never use it as an id.
    pub fn short(&self) -> String {
        self.to_b64()[..8].to_string()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_b64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_b64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_b64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The 64 bytes of an Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; 64]);

impl SignatureBytes {
    /// Parses the base64url form.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        fixed::<64>(text, "a signature").map(Self)
    }
    /// The base64url form used on the wire.
    pub fn to_b64(&self) -> String {
        b64(&self.0)
    }
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureBytes({})", self.to_b64())
    }
}

impl Serialize for SignatureBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_b64())
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_refuse_wrong_lengths() {
        let key = PublicKey([7; 32]);
        assert_eq!(PublicKey::parse(&key.to_b64()).unwrap(), key);
        assert!(PublicKey::parse(&b64(&[1; 31])).is_err());
        assert!(PublicKey::parse("AAAA=").is_err(), "padding is refused");
        assert!(
            PublicKey::parse("++++").is_err(),
            "standard alphabet is refused"
        );
    }
}
