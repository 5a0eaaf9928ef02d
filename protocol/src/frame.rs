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
use crate::payload::{GroupKind, InviteRole};

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
        /// The group's access code, if it is to have one. Outside the envelope on
        /// purpose: the signed request is kept (and audited), and the code is a
        /// credential the server keeps only as a keyed hash.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_code: Option<String>,
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
        /// Resume: send every main-channel event with a seq greater than this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// The group's access code, if it has one. Outside the envelope on purpose:
        /// the signed join is relayed to other members, and the code is a
        /// credential the server checks and keeps nothing of.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_code: Option<String>,
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
    /// Make an invite.
    Invite {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Envelope of kind `invite`.
        env: SignedEnvelope,
    },
    /// Accept the group agreement.
    Agree {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Envelope of kind `agree`.
        env: SignedEnvelope,
    },
    /// A facilitator control.
    Control {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Envelope of kind `control`.
        env: SignedEnvelope,
    },
    /// Report a message to the facilitators.
    Report {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Envelope of kind `report`.
        env: SignedEnvelope,
    },
    /// Step out or back.
    StepOut {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Envelope of kind `step_out`.
        env: SignedEnvelope,
    },
    /// Write to a co-produced record.
    Record {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Envelope of kind `record`.
        env: SignedEnvelope,
    },
    /// List the records about the logged-in key, a page at a time.
    Records {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Only records with a greater id (the last id of the previous page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// Raise a distress flag.
    Flag {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// Envelope of kind `flag`.
        env: SignedEnvelope,
    },
    /// A supervisor's step on an escalation.
    Escalation {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Envelope of kind `escalation`.
        env: SignedEnvelope,
    },
    /// The escalation queue (supervisors, admins) or the escalations about me, a
    /// page at a time.
    Escalations {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The `next` of the page before (absent: the first page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// One page of an escalation's flags, steps or context.
    EscalationDetail {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The escalation's id (supervisors and admins).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalation: Option<u64>,
        /// Or the caller's reference to it (anyone else).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// Which part.
        part: crate::escalation::EscalationPart,
        /// How many items of the part to skip (absent: 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u32>,
    },
    /// Replace the on-call rota (admins).
    SetRota {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Envelope of kind `rota`.
        env: SignedEnvelope,
    },
    /// Read the on-call rota (supervisors, admins).
    Rota {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Add or remove a Web Push subscription (supervisors, admins).
    Push {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Envelope of kind `push`.
        env: SignedEnvelope,
    },
    /// How on-call staff are reached away from the console (supervisors, admins).
    Alerting {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A supervisor's private post on an escalation's line (§8.5), to a group
    /// they have not joined.
    LinePost {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// The escalation it is written under.
        escalation: u64,
        /// Envelope of kind `post`, with `to`.
        env: SignedEnvelope,
    },
    /// The staff who have redeemed invites, with their roles and names (admins).
    Staff {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Open an escalation's private line without joining its group (supervisors):
    /// its history, then its new messages on this connection.
    Line {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The escalation's id.
        escalation: u64,
    },
    /// Grant or revoke a facilitator's standing in one group (admins).
    Grant {
        /// Request id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Envelope of kind `grant`.
        env: SignedEnvelope,
    },
}

/// The frame types a client may send, in the order PROTOCOL.md lists them.
pub const CLIENT_FRAME_TYPES: &[&str] = &[
    "auth",
    "redeem",
    "create_group",
    "join",
    "post",
    "leave",
    "invite",
    "agree",
    "control",
    "report",
    "step_out",
    "record",
    "records",
    "flag",
    "escalation",
    "escalations",
    "escalation_detail",
    "set_rota",
    "rota",
    "push",
    "alerting",
    "line_post",
    "line",
    "staff",
    "grant",
];

impl ClientFrame {
    /// The request id, if the client gave one.
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Auth { id, .. }
            | Self::Redeem { id, .. }
            | Self::CreateGroup { id, .. }
            | Self::Join { id, .. }
            | Self::Post { id, .. }
            | Self::Leave { id, .. }
            | Self::Invite { id, .. }
            | Self::Agree { id, .. }
            | Self::Control { id, .. }
            | Self::Report { id, .. }
            | Self::StepOut { id, .. }
            | Self::Record { id, .. }
            | Self::Records { id, .. }
            | Self::Flag { id, .. }
            | Self::Escalation { id, .. }
            | Self::Escalations { id, .. }
            | Self::EscalationDetail { id, .. }
            | Self::SetRota { id, .. }
            | Self::Rota { id }
            | Self::Push { id, .. }
            | Self::Alerting { id }
            | Self::LinePost { id, .. }
            | Self::Line { id, .. }
            | Self::Staff { id }
            | Self::Grant { id, .. } => *id,
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

/// What is read of a frame before anything else: its `type` and `id`, each the
/// first time it is given, skipping every other field without decoding its strings
/// (keys are read as bytes). So the `id` is read, and echoed in the error, even when
/// another field is duplicated or holds a lone surrogate (PROTOCOL.md §7.23). With
/// `TYPE` false, `type` is skipped too: the second try, for the `id` alone, when
/// `type` itself cannot be read.
struct Head<const TYPE: bool> {
    kind: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
    type_twice: bool,
    id_twice: bool,
}

impl<const TYPE: bool> Head<TYPE> {
    /// The id to echo: `None` when it is not an integer, or given twice
    /// (ambiguous).
    fn echo_id(&self) -> Option<u64> {
        match self.id_twice {
            true => None,
            false => self.id.as_ref().and_then(serde_json::Value::as_u64),
        }
    }
}

/// A key read as bytes, so a lone surrogate in it is no error.
struct KeyBytes(Vec<u8>);

impl<'de> Deserialize<'de> for KeyBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = KeyBytes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyBytes, E> {
                Ok(KeyBytes(v.as_bytes().to_vec()))
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<KeyBytes, E> {
                Ok(KeyBytes(v.to_vec()))
            }
        }
        d.deserialize_bytes(KeyVisitor)
    }
}

impl<'de, const TYPE: bool> Deserialize<'de> for Head<TYPE> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadVisitor<const TYPE: bool>;
        impl<'de, const TYPE: bool> serde::de::Visitor<'de> for HeadVisitor<TYPE> {
            type Value = Head<TYPE>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Head<TYPE>, A::Error> {
                let mut head = Head {
                    kind: None,
                    id: None,
                    type_twice: false,
                    id_twice: false,
                };
                while let Some(KeyBytes(key)) = map.next_key()? {
                    match key.as_slice() {
                        b"type" if TYPE && head.kind.is_none() => {
                            head.kind = Some(map.next_value()?);
                        }
                        b"id" if head.id.is_none() => head.id = Some(map.next_value()?),
                        other => {
                            head.type_twice |= other == b"type";
                            head.id_twice |= other == b"id";
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(head)
            }
        }
        d.deserialize_map(HeadVisitor::<TYPE>)
    }
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
    let head: Head<true> = crate::envelope::from_json_object(text).map_err(|e| DecodeError {
        // The `type` could not be read (a lone surrogate in it): the `id` may be.
        id: crate::envelope::from_json_object::<Head<false>>(text)
            .ok()
            .and_then(|head| head.echo_id()),
        error: ProtocolError::Malformed(format!("not a JSON object: {e}")),
    })?;
    // An `id` given twice is ambiguous: neither is echoed.
    let id = head.echo_id();
    if head.type_twice || head.id_twice {
        return Err(DecodeError {
            id,
            error: ProtocolError::Malformed("a field is given twice".into()),
        });
    }
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

/// Someone holding a role, as the admin's staff list shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffMember {
    /// Their key.
    pub key: crate::PublicKey,
    /// Their roles.
    pub roles: Vec<Role>,
    /// The name they gave when they redeemed an invite, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The groups a facilitator holds standing in (§6.25), sorted; empty for others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<crate::GroupId>,
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
    /// Longest agreement, report reason, or record text, in characters.
    pub max_text_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: limits::MAX_FRAME_BYTES,
            max_body_chars: limits::MAX_BODY_CHARS,
            max_name_chars: limits::MAX_NAME_CHARS,
            max_title_chars: limits::MAX_TITLE_CHARS,
            max_clock_skew_ms: limits::MAX_CLOCK_SKEW_MS,
            max_text_chars: limits::MAX_TEXT_CHARS,
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

/// Where a member stands in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Must accept the current group agreement first.
    NeedsAgreement,
    /// In the waiting room until a facilitator admits them.
    Waiting,
    /// In the conversation.
    Admitted,
    /// Turned away from the waiting room for this session.
    Declined,
    /// Removed by a facilitator (for the session, or for good).
    Removed,
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
    /// Where they stand.
    pub status: MemberStatus,
    /// Facilitator in this group (by role, or added as co-facilitator).
    #[serde(default)]
    pub facilitator: bool,
    /// Muted until this time (ms), if muted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until_ms: Option<u64>,
    /// Has quietly stepped out.
    #[serde(default)]
    pub away: bool,
}

/// The group agreement in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// Version, from 1; each change adds one and everyone is asked again.
    pub version: u32,
    /// The text.
    pub text: String,
}

/// A group's current state, as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Session number, from 1.
    pub session: u64,
    /// Whether a session is running (posts possible).
    pub session_open: bool,
    /// Whether participants can come in now (session running, within its window).
    pub door_open: bool,
    /// The next scheduled opening, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_session_ms: Option<u64>,
    /// Only facilitators post.
    pub paused: bool,
    /// Nobody new is admitted.
    pub locked: bool,
    /// Seconds between one member's messages (0: off).
    pub slow_mode_secs: u32,
    /// The agreement in force.
    pub agreement: Agreement,
    /// Pinned message seqs.
    pub pinned: Vec<u64>,
    /// The lead facilitator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<PublicKey>,
    /// Members given facilitator powers in this group.
    #[serde(default)]
    pub co_facilitators: Vec<PublicKey>,
}

/// Which log of a group an event belongs to; each has its own gap-free seq.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The conversation every admitted member sees.
    #[default]
    Main,
    /// Facilitators only: reports, risk-phrase nudges, declines.
    Staff,
    /// A private check-in between two keys (sorted), one a facilitator.
    Pair([PublicKey; 2]),
}

impl Channel {
    /// Whether this is the main conversation.
    pub fn is_main(&self) -> bool {
        matches!(self, Self::Main)
    }

    /// The private channel of two keys (order does not matter).
    pub fn pair(a: PublicKey, b: PublicKey) -> Self {
        if a <= b {
            Self::Pair([a, b])
        } else {
            Self::Pair([b, a])
        }
    }
}

/// Something the hub itself says in a log (not signed by a person; clients show it
/// as from the hub).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// A message matched a risk phrase: a suggestion to check in privately.
    RiskNudge {
        /// Who wrote it.
        member: PublicKey,
        /// The message's seq in the main channel.
        seq: u64,
        /// What to consider, in words.
        suggestion: String,
    },
    /// A mute ran out by itself.
    MuteEnded {
        /// Who.
        member: PublicKey,
    },
    /// Someone asked for support for a member of this group (a flag): the
    /// facilitators are told at once (staff channel, §8.10).
    SupportAsked {
        /// Who the request for support is about.
        member: PublicKey,
        /// The request's severity now (the most serious of its flags).
        severity: crate::escalation::Severity,
        /// The person asked for themselves; `false`: someone else asked for them
        /// (who is never said).
        own: bool,
        /// Flags on this request so far (one note per severity rise, and when this
        /// count reaches 2, 4, 8, ...).
        flags: u32,
        /// The person is not told (a flag withheld it for imminent risk): do not
        /// tell them.
        withheld: bool,
        /// The flag's own words, only for a flag the person raised themselves or
        /// agreed to (never for an imminent-risk flag).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        words: Option<String>,
    },
    /// A request for support about `member` was closed by a supervisor (or an
    /// operator).
    SupportResolved {
        /// Who it was about.
        member: PublicKey,
    },
}

/// Why a message's text is hidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// The facilitator who redacted it.
    pub by: PublicKey,
    /// Why.
    pub reason: String,
    /// The seq of the `redact` control (its signed envelope is there).
    pub control_seq: u64,
}

/// A co-produced record: a facilitator's note and the member's own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    /// Record id.
    pub id: u64,
    /// The group it was written in.
    pub group: GroupId,
    /// The member it is about (`None`: the session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<PublicKey>,
    /// Every signed contribution, first the note that opened it.
    pub entries: Vec<SignedEnvelope>,
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
        /// What the invite granted (`member`: membership of `group`).
        role: InviteRole,
        /// For a `member` invite: the virtual group now open to this key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<GroupId>,
        /// For a `facilitator` invite: the groups this key now facilitates.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<GroupId>,
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
    /// Joined: when `status` is `admitted`, main-channel events with `seq` up to
    /// `head` follow as history, later ones live. Sent again (without `id`) when a
    /// waiting member is admitted.
    Joined {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupInfo,
        /// The newest main-channel seq at the moment of joining (0 if none).
        head: u64,
        /// The oldest main-channel seq still kept (`head + 1` if none is): history
        /// covers `max(after, oldest - 1) < seq <= head`. Retention removes the
        /// oldest events first.
        oldest: u64,
        /// The members this connection may see, those who matter now first (the
        /// joiner, staff, waiting, online, sanctioned, authors of the recent
        /// history), at most `limits::JOINED_MEMBERS_MAX` and within the hub's
        /// byte budget for the list.
        members: Vec<MemberInfo>,
        /// How many members this connection may see in all; more than
        /// `members.len()` when the list was cut (the others arrive as `presence`
        /// when they come online).
        #[serde(default)]
        members_total: u64,
        /// Where the joiner stands.
        status: MemberStatus,
        /// The group's state.
        state: GroupState,
    },
    /// Left a group.
    Left {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
    },
    /// A post or control is stored durably and has this seq.
    Ack {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The group.
        group: GroupId,
        /// The channel the seq belongs to (absent: `main`).
        #[serde(default, skip_serializing_if = "Channel::is_main")]
        channel: Channel,
        /// Its seq.
        seq: u64,
        /// The counter of the acknowledged envelope.
        counter: u64,
    },
    /// An event of a group's log: the original envelope, its seq and server time.
    Event {
        /// The group.
        group: GroupId,
        /// Which log (absent: `main`).
        #[serde(default, skip_serializing_if = "Channel::is_main")]
        channel: Channel,
        /// Gap-free sequence number within the channel, from 1.
        seq: u64,
        /// Server time the event was ordered (ms since the Unix epoch).
        ts: u64,
        /// The original signed envelope (absent when redacted for this reader, or
        /// for a hub note).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<SignedEnvelope>,
        /// A hub note, for events the hub itself writes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<Note>,
        /// Set when a facilitator redacted the message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redacted: Option<Redaction>,
    },
    /// A member came online, went offline, joined, or their standing changed.
    Presence {
        /// The group.
        group: GroupId,
        /// The member.
        member: MemberInfo,
    },
    /// The group's state changed (session, pause, lock, slow mode, agreement, pins,
    /// lead).
    GroupUpdate {
        /// The group.
        group: GroupId,
        /// Its state now.
        state: GroupState,
    },
    /// Left the group's conversation by the server's doing (removed, declined, or
    /// the session ended). The connection stays open.
    Dismissed {
        /// The group.
        group: GroupId,
        /// Why: `removed`, `declined`, `session_ended`.
        reason: String,
        /// Words for the person.
        message: String,
    },
    /// An invite was made.
    Invited {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The single-use token.
        token: String,
        /// The role it grants.
        role: InviteRole,
        /// For `member`: the group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<GroupId>,
        /// For `facilitator`: the groups it grants.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<GroupId>,
        /// When it stops working.
        expires_ms: u64,
    },
    /// A request without a more specific reply succeeded.
    Ok {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A flag was stored and routed. It does not say whether the flag opened an
    /// escalation or joined one.
    Flagged {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The caller's opaque reference to the escalation (as in their
        /// `support_notice`s and `escalations`), never its id.
        reference: String,
        /// Whether a supervisor is on call now.
        on_call: bool,
        /// Signposting to show with the answer.
        helplines: Vec<crate::escalation::Helpline>,
    },
    /// An escalation changed (to supervisors and admins).
    Escalation {
        /// The escalation as it is now, summarised.
        escalation: crate::escalation::EscalationSummary,
    },
    /// A page of the escalation queue, or of the escalations about the caller.
    /// Pushed without `id` at login (the queue's first page).
    Escalations {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The escalations on this page.
        escalations: Vec<crate::escalation::EscalationSummary>,
        /// How many there are in all.
        total: u64,
        /// Present when more follow: send it as `after` for the next page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// A page of one escalation's flags, steps or context.
    EscalationDetail {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The escalation's id (supervisors and admins).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalation: Option<u64>,
        /// Or the caller's reference to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// Which part.
        part: crate::escalation::EscalationPart,
        /// The position of the first item.
        offset: u32,
        /// How many items the part has in all.
        total: u32,
        /// Part `flags`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flags: Vec<SignedEnvelope>,
        /// Part `steps`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        steps: Vec<crate::escalation::EscalationStep>,
        /// Part `context`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        context: Vec<crate::escalation::ContextEvent>,
    },
    /// How a request for support is going, for the people it concerns.
    SupportNotice {
        /// The group.
        group: GroupId,
        /// The recipient's opaque reference to the escalation (never its id).
        reference: String,
        /// `support_asked`, `acknowledged`, `unanswered` or `resolved`.
        notice: String,
        /// Words for a person.
        message: String,
        /// Signposting.
        helplines: Vec<crate::escalation::Helpline>,
    },
    /// Whether a supervisor is on call now.
    Coverage {
        /// Someone is on the rota now.
        on_call: bool,
        /// Signposting, shown plainly when nobody is.
        helplines: Vec<crate::escalation::Helpline>,
    },
    /// The on-call rota.
    Rota {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Its entries.
        entries: Vec<crate::escalation::RotaEntry>,
    },
    /// Reply to `staff`: the keys holding a role, with their names.
    Staff {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Named ones first, by name; at most [`crate::limits::MAX_STAFF_LISTED`].
        staff: Vec<StaffMember>,
        /// More hold a role than are listed.
        #[serde(default)]
        more: bool,
    },
    /// Reply to `line`: an escalation's private line is open on this connection.
    Line {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The escalation's id.
        escalation: u64,
        /// Its group.
        group: GroupId,
        /// Whom the supervisor may write to there: the person it is about (unless
        /// telling them is withheld) and the group's lead facilitator, if any.
        to: Vec<crate::PublicKey>,
    },
    /// Reply to `alerting`: how on-call staff are reached away from the console.
    Alerting {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The hub's VAPID public key (uncompressed P-256 point, base64url), for
        /// `pushManager.subscribe`; absent when Web Push is off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vapid_key: Option<String>,
        /// Push subscriptions the asking key has.
        subscriptions: u32,
        /// Whether a pager hook is configured.
        pager: bool,
        /// Supervisors on the rota nobody can reach away from the console (no push
        /// subscription, no pager). Admins only; empty for a supervisor.
        unreachable: Vec<crate::PublicKey>,
        /// Below the low-space watermark (`store.min_free_mb`): the MiB still free
        /// on the data folder's disk. Admins only; absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        low_space_free_mb: Option<u64>,
    },
    /// Records about the logged-in key, or a record just written.
    Records {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The records.
        records: Vec<RecordInfo>,
        /// More records follow: ask again with `after` = the last id here.
        #[serde(default)]
        more: bool,
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
        /// When rate-limited, slowed or muted: wait this long before retrying.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// When `closed`: the next scheduled opening.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_session_ms: Option<u64>,
        /// When a `flag` was refused (`rate_limited`): the signposting to show.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        helplines: Option<Vec<crate::escalation::Helpline>>,
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
            next_session_ms: None,
            helplines: None,
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
