//! Group ids: short lowercase slugs that are safe in URLs, logs and store keys.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

use crate::error::ProtocolError;

/// Longest group id.
pub const MAX_GROUP_ID_LEN: usize = 32;

/// A group id: 1–32 characters of `a-z`, `0-9` and `-`, starting with a letter or
/// digit. Never contains a NUL byte, which the store uses as a key separator.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct GroupId(String);

impl GroupId {
    /// Validates and wraps a group id.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let ok_len = !text.is_empty() && text.len() <= MAX_GROUP_ID_LEN;
        let ok_chars = text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_start = text.bytes().next().is_some_and(|b| b != b'-');
        if ok_len && ok_chars && ok_start {
            Ok(Self(text.to_string()))
        } else {
            Err(ProtocolError::invalid(
                "group",
                "a group id is 1-32 characters of a-z, 0-9 and '-', not starting with '-'",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({})", self.0)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GroupId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs_and_refuses_the_rest() {
        for good in ["demo", "a", "tuesday-drop-in", "g1", &"x".repeat(32)] {
            assert!(GroupId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "Demo", "a b", "a\0b", "é", &"x".repeat(33), "a/b"] {
            assert!(GroupId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
