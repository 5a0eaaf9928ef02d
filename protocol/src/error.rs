//! Error codes: the stable strings sent in `error` frames, and the decoding errors
//! that map onto them.
//!
//! A code, once published, keeps its meaning. New codes may be added; clients must
//! show an unknown code as a generic failure rather than break.

use serde::{Deserialize, Serialize};

/// Stable error codes. The wire form is the snake_case name (`"bad_signature"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid JSON, or a field is missing, mistyped or unknown.
    Malformed,
    /// The frame's `type` is not one this server knows.
    UnknownType,
    /// The frame is larger than `max_frame_bytes`.
    TooLarge,
    /// A message body or other text field is longer than its limit.
    BodyTooLong,
    /// The frame needs a logged-in connection and this one has not logged in.
    NotAuthenticated,
    /// The login envelope did not answer this connection's challenge.
    AuthFailed,
    /// The connection is already logged in.
    AlreadyAuthenticated,
    /// The public key is not a valid Ed25519 point, or is a weak (small-order) key.
    BadKey,
    /// The signature does not verify (strictly) over the signing bytes.
    BadSignature,
    /// The envelope's kind does not match the frame it came in.
    WrongKind,
    /// The envelope is signed by a key other than the connection's own.
    WrongKey,
    /// The signed payload names a different group than the frame targets.
    WrongGroup,
    /// The signed payload's counter is not greater than the last one accepted from
    /// this key: a replay or a reordered resend.
    Replay,
    /// The signed payload's `ts` is too far from the server's clock.
    Stale,
    /// A field's value is not allowed (an empty body, a display name that is refused
    /// or not in its normalised form, ...). A malformed group id, key or signature
    /// is `malformed` instead, because it fails decoding.
    Invalid,
    /// The caller's roles do not allow this action.
    Forbidden,
    /// The group (or other named thing) does not exist.
    NotFound,
    /// The group already exists.
    AlreadyExists,
    /// The action needs the connection to have joined the group first.
    NotJoined,
    /// The invite token is unknown, already used or expired.
    BadToken,
    /// The group's door is closed: no session is open for participants now (the
    /// error gives `next_session_ms` when one is scheduled).
    Closed,
    /// The group is locked: nobody new is admitted.
    Locked,
    /// Wrong or missing access code, or not invited to this virtual group.
    AccessDenied,
    /// Accept the current group agreement (`agree`) first.
    AgreementRequired,
    /// Waiting to be admitted by a facilitator.
    Waiting,
    /// Muted by a facilitator until the time given (help can still be asked for).
    Muted,
    /// The group is paused: only facilitators post.
    Paused,
    /// Slow mode: wait `retry_after_ms` before the next message.
    SlowMode,
    /// Removed from (or declined by) this group.
    Removed,
    /// The group has as many members as it may.
    Full,
    /// The group's waiting room holds as many people as it may, all still here.
    WaitingRoomFull,
    /// Someone else already took it (an escalation another supervisor acknowledged).
    Taken,
    /// Too many requests; retry after the time given.
    RateLimited,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// Something failed inside the server; the action did not happen.
    Internal,
    /// The server's disk is full or failing: it stores nothing new, so the action
    /// did not happen (a flag is still answered with the helplines and shown to
    /// supervisors online). Reading works; retry after the operator has fixed it.
    StorageUnavailable,
}

impl ErrorCode {
    /// The wire string of this code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownType => "unknown_type",
            Self::TooLarge => "too_large",
            Self::BodyTooLong => "body_too_long",
            Self::NotAuthenticated => "not_authenticated",
            Self::AuthFailed => "auth_failed",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::BadKey => "bad_key",
            Self::BadSignature => "bad_signature",
            Self::WrongKind => "wrong_kind",
            Self::WrongKey => "wrong_key",
            Self::WrongGroup => "wrong_group",
            Self::Replay => "replay",
            Self::Stale => "stale",
            Self::Invalid => "invalid",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::NotJoined => "not_joined",
            Self::BadToken => "bad_token",
            Self::Closed => "closed",
            Self::Locked => "locked",
            Self::AccessDenied => "access_denied",
            Self::AgreementRequired => "agreement_required",
            Self::Waiting => "waiting",
            Self::Muted => "muted",
            Self::Paused => "paused",
            Self::SlowMode => "slow_mode",
            Self::Removed => "removed",
            Self::Taken => "taken",
            Self::Full => "full",
            Self::WaitingRoomFull => "waiting_room_full",
            Self::RateLimited => "rate_limited",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
            Self::StorageUnavailable => "storage_unavailable",
        }
    }

    /// Every code, for documentation checks and exhaustive tests.
    pub const ALL: &'static [ErrorCode] = &[
        Self::Malformed,
        Self::UnknownType,
        Self::TooLarge,
        Self::BodyTooLong,
        Self::NotAuthenticated,
        Self::AuthFailed,
        Self::AlreadyAuthenticated,
        Self::BadKey,
        Self::BadSignature,
        Self::WrongKind,
        Self::WrongKey,
        Self::WrongGroup,
        Self::Replay,
        Self::Stale,
        Self::Invalid,
        Self::Forbidden,
        Self::NotFound,
        Self::AlreadyExists,
        Self::NotJoined,
        Self::BadToken,
        Self::Closed,
        Self::Locked,
        Self::AccessDenied,
        Self::AgreementRequired,
        Self::Waiting,
        Self::Muted,
        Self::Paused,
        Self::SlowMode,
        Self::Removed,
        Self::Taken,
        Self::Full,
        Self::WaitingRoomFull,
        Self::RateLimited,
        Self::ShuttingDown,
        Self::Internal,
        Self::StorageUnavailable,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame or envelope was refused by the protocol layer. Each variant maps to
/// one [`ErrorCode`] through [`ProtocolError::code`]; the message is safe to show to
/// the sender and never contains another person's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Not JSON, or not the shape the frame type needs.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A `type` the protocol does not define.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// More bytes than the frame limit.
    #[error("frame of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A text field over its length limit.
    #[error("{field} is {len} characters, over the limit of {limit}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in Unicode scalar values.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a usable Ed25519 public key.
    #[error("public key is not a valid, non-weak Ed25519 key")]
    BadKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The envelope kind does not fit the frame.
    #[error("envelope kind {found:?} where {expected:?} was expected")]
    WrongKind {
        /// Kind the frame needs.
        expected: &'static str,
        /// Kind the envelope names.
        found: String,
    },
    /// A field's value is not allowed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why, in words for the sender.
        reason: String,
    },
}

impl ProtocolError {
    /// The stable code sent to the client for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) => ErrorCode::Malformed,
            Self::UnknownType(_) => ErrorCode::UnknownType,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::TooLong { .. } => ErrorCode::BodyTooLong,
            Self::BadKey => ErrorCode::BadKey,
            Self::BadSignature => ErrorCode::BadSignature,
            Self::WrongKind { .. } => ErrorCode::WrongKind,
            Self::Invalid { .. } => ErrorCode::Invalid,
        }
    }

    /// Shorthand for [`ProtocolError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_match_serde_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(seen.insert(code.as_str()), "duplicate {code}");
        }
    }
}
