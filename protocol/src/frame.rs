//! Frames: the JSON text messages on the WebSocket.
//!
//! Every frame is an object with a `type`. Client requests may carry a numeric `id`,
//! echoed in the reply or error so the client can match them. The server's frames
//! are either replies (they carry the request's `id`) or pushes (`event`,
//! `presence`, `shutdown`).

use serde::{Deserialize, Serialize};

use crate::encoding::PublicKey;
use crate::envelope::SignedEnvelope;
use crate::error::{ErrorCode, ProtocolError};
use crate::ids::GroupId;
use crate::limits;
use crate::payload::GroupKind;

/// Client → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Log in by signing the connection's challenge.
    Auth {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Envelope of kind `auth`.
        env: SignedEnvelope,
    },
    /// Redeem an invite token for a role.
    Redeem {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Envelope of kind `redeem`.
        env: SignedEnvelope,
    },
    /// Create a group (admins only).
    CreateGroup {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Envelope of kind `create_group`.
        env: SignedEnvelope,
    },
    /// Join a group and receive its history from `after` (or the recent history).
    Join {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Resume: send every event with a seq greater than this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// Envelope of kind `join`.
        env: SignedEnvelope,
    },
    /// Post a message to a joined group.
    Post {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Envelope of kind `post`.
        env: SignedEnvelope,
    },
    /// Stop receiving a group's events on this connection.
    Leave {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
    },
}

/// The frame types a client may send, in the order PROTOCOL.md lists them.
pub const CLIENT_FRAME_TYPES: &[&str] =
    &["auth", "redeem", "create_group", "join", "post", "leave"];

impl ClientFrame {
    /// The request id, if the client gave one.
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Auth { id, .. }
            | Self::Redeem { id, .. }
            | Self::CreateGroup { id, .. }
            | Self::Join { id, .. }
            | Self::Post { id, .. }
            | Self::Leave { id, .. } => *id,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A frame the protocol layer refused, with the request id if one could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request id, when the frame was JSON with a numeric `id`.
    pub id: Option<u64>,
    /// Why the frame was refused.
    pub error: ProtocolError,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type", default)]
    kind: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

/// Decodes a client frame, telling an unknown `type` apart from a malformed frame
/// and keeping the request id for the error reply whenever it can be read.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, DecodeError> {
    if text.len() > limits::MAX_FRAME_BYTES {
        return Err(DecodeError {
            id: None,
            error: ProtocolError::TooLarge {
                size: text.len(),
                limit: limits::MAX_FRAME_BYTES,
            },
        });
    }
    let head: Head = crate::envelope::from_json_object(text).map_err(|e| DecodeError {
        id: None,
        error: ProtocolError::Malformed(format!("not a JSON object: {e}")),
    })?;
    let id = head.id.as_ref().and_then(serde_json::Value::as_u64);
    let Some(kind) = head.kind.as_ref().and_then(serde_json::Value::as_str) else {
        return Err(DecodeError {
            id,
            error: ProtocolError::Malformed("\"type\" must be a string".into()),
        });
    };
    if !CLIENT_FRAME_TYPES.contains(&kind) {
        return Err(DecodeError {
            id,
            error: ProtocolError::UnknownType(kind.chars().take(40).collect()),
        });
    }
    serde_json::from_str(text).map_err(|e| DecodeError {
        id,
        error: ProtocolError::Malformed(e.to_string()),
    })
}

/// A role granted to a key by an invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Creates groups, invites people, keeps the rota.
    Admin,
    /// A peer worker who runs sessions.
    Facilitator,
    /// Receives escalations.
    Supervisor,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Facilitator => "facilitator",
            Self::Supervisor => "supervisor",
        }
    }
}

/// The limits a server announces in `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame answered with an error rather than a close.
    pub max_frame_bytes: usize,
    /// Longest message body, in characters.
    pub max_body_chars: usize,
    /// Longest display name, in characters.
    pub max_name_chars: usize,
    /// Longest group title, in characters.
    pub max_title_chars: usize,
    /// Largest allowed distance between a payload's `ts` and the server clock.
    pub max_clock_skew_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: limits::MAX_FRAME_BYTES,
            max_body_chars: limits::MAX_BODY_CHARS,
            max_name_chars: limits::MAX_NAME_CHARS,
            max_title_chars: limits::MAX_TITLE_CHARS,
            max_clock_skew_ms: limits::MAX_CLOCK_SKEW_MS,
        }
    }
}

/// What a member of a group sees of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The id.
    pub id: GroupId,
    /// The title.
    pub title: String,
    /// Drop-in or virtual.
    pub kind: GroupKind,
}

/// A member as the group sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Their key.
    pub key: PublicKey,
    /// Their display name (as in their signed `join`).
    pub name: String,
    /// Roles the key holds.
    pub roles: Vec<Role>,
    /// Whether they have a connection joined to the group now.
    pub online: bool,
    /// Their signed `join`, so the name can be verified.
    pub join: SignedEnvelope,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame on every connection.
    Hello {
        /// Protocol version.
        protocol: u32,
        /// Random bytes to sign in `auth`.
        challenge: String,
        /// The server's clock (ms since the Unix epoch).
        server_time: u64,
        /// Limits this server enforces.
        limits: Limits,
    },
    /// Login accepted.
    AuthOk {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The key now logged in.
        key: PublicKey,
        /// Roles it holds.
        roles: Vec<Role>,
        /// The last counter accepted from this key (0 if none).
        counter: u64,
    },
    /// An invite was redeemed.
    Redeemed {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The role granted.
        role: Role,
        /// All roles the key now holds.
        roles: Vec<Role>,
    },
    /// A group was created.
    GroupCreated {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The new group.
        group: GroupInfo,
    },
    /// Joined: events with `seq` up to `head` follow as history, later ones live.
    Joined {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupInfo,
        /// The newest seq at the moment of joining (0 for an empty group).
        head: u64,
        /// The members.
        members: Vec<MemberInfo>,
    },
    /// Left a group.
    Left {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
    },
    /// A post is stored durably and has this seq.
    Ack {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Its seq.
        seq: u64,
        /// The counter of the acknowledged envelope.
        counter: u64,
    },
    /// An event of a group's log: the original envelope, its seq and server time.
    Event {
        /// The group.
        group: GroupId,
        /// Gap-free sequence number within the group, from 1.
        seq: u64,
        /// Server time the event was ordered (ms since the Unix epoch).
        ts: u64,
        /// The original signed envelope.
        env: SignedEnvelope,
    },
    /// A member came online, went offline, or first joined.
    Presence {
        /// The group.
        group: GroupId,
        /// The member.
        member: MemberInfo,
    },
    /// A request failed; nothing changed.
    Error {
        /// Echoed request id, if the request had one that could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable code.
        code: ErrorCode,
        /// Words for a person.
        message: String,
        /// When rate-limited: wait this long before retrying.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The server is stopping; the connection will close. Reconnect and resume.
    Shutdown {
        /// Why.
        reason: String,
    },
}

impl ServerFrame {
    /// An error frame for a refused request.
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            id,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_type_and_malformed_are_told_apart() {
        let err = decode_client_frame(r#"{"type":"teleport","id":4}"#).unwrap_err();
        assert_eq!(err.error.code(), ErrorCode::UnknownType);
        assert_eq!(err.id, Some(4));
        let err = decode_client_frame(r#"{"type":"leave","id":5}"#).unwrap_err();
        assert_eq!(err.error.code(), ErrorCode::Malformed);
        assert_eq!(err.id, Some(5));
        let err = decode_client_frame(r#"{"type":5,"id":3}"#).unwrap_err();
        assert_eq!((err.error.code(), err.id), (ErrorCode::Malformed, Some(3)));
        let err = decode_client_frame(r#"["leave",1,"g"]"#).unwrap_err();
        assert_eq!(
            err.error.code(),
            ErrorCode::Malformed,
            "arrays are not frames"
        );
        let err = decode_client_frame("{nope").unwrap_err();
        assert_eq!(err.error.code(), ErrorCode::Malformed);
        let err = decode_client_frame(r#"{"type":"leave","group":"g","extra":1}"#).unwrap_err();
        assert_eq!(
            err.error.code(),
            ErrorCode::Malformed,
            "unknown fields refused"
        );
    }

    #[test]
    fn oversize_frames_are_refused_before_parsing() {
        let big = format!(r#"{{"type":"leave","group":"{}"}}"#, "a".repeat(20_000));
        let err = decode_client_frame(&big).unwrap_err();
        assert_eq!(err.error.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn leave_round_trips() {
        let frame = ClientFrame::Leave {
            id: Some(1),
            group: GroupId::parse("demo").unwrap(),
        };
        assert_eq!(decode_client_frame(&frame.to_json()).unwrap(), frame);
    }
}
