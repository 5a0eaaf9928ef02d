//! What is inside each kind of signed envelope.
//!
//! Every payload except `auth` carries a `counter` and `ts`:
//!
//! - `counter` — a per-key number that must be greater than the last counter the
//!   server accepted from this key, in any group. It makes every signed action
//!   single-use. A client that has lost its state learns the last accepted counter
//!   in `auth_ok`; a client with several connections can use the current time in
//!   microseconds, which keeps counters increasing without coordination.
//! - `ts` — the client's clock in milliseconds since the Unix epoch; the server refuses
//!   payloads more than [`MAX_CLOCK_SKEW_MS`](crate::limits::MAX_CLOCK_SKEW_MS) away
//!   from its own clock (a client can correct for skew with `hello.server_time`).
//!
//! Group-scoped payloads name their `group`, which must match the group the frame is
//! sent to. Unknown fields are refused: a signer must know what it signs.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::encoding::PublicKey;

/// Reads a `"do"`-tagged action strictly: it must be a JSON object, and every key
/// given must be one the action has (serde's tagged enums would otherwise accept an
/// array, and ignore stray keys on variants without fields). A signer must know
/// what it signs, so nothing is silently dropped. `null` for an optional field is
/// refused: leave the field out.
fn strict_action<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Serialize,
{
    use serde::de::Error as _;
    let given: serde_json::Map<String, serde_json::Value> =
        d.deserialize_map(crate::envelope::ObjectOnly::visitor())?;
    let keys: Vec<String> = given.keys().cloned().collect();
    let action: T =
        serde_json::from_value(serde_json::Value::Object(given)).map_err(D::Error::custom)?;
    let shown = serde_json::to_value(&action).map_err(D::Error::custom)?;
    let known = shown
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    match keys.iter().find(|k| !known.contains(k)) {
        Some(stray) => Err(D::Error::custom(format!(
            "unknown or null field `{stray}` in action"
        ))),
        None => Ok(action),
    }
}
use crate::ids::GroupId;

/// Fields every counted payload shares, for the replay and freshness checks.
pub trait Counted {
    /// The per-key counter.
    fn counter(&self) -> u64;
    /// The signer's clock, in ms since the Unix epoch.
    fn ts(&self) -> u64;
    /// The group the payload is aimed at, if it is group-scoped.
    fn group(&self) -> Option<&GroupId> {
        None
    }
}

macro_rules! counted {
    ($t:ty) => {
        impl Counted for $t {
            fn counter(&self) -> u64 {
                self.counter
            }
            fn ts(&self) -> u64 {
                self.ts
            }
        }
    };
    ($t:ty, group) => {
        impl Counted for $t {
            fn counter(&self) -> u64 {
                self.counter
            }
            fn ts(&self) -> u64 {
                self.ts
            }
            fn group(&self) -> Option<&GroupId> {
                Some(&self.group)
            }
        }
    };
}

/// `auth`: answers the connection's challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPayload {
    /// The challenge from this connection's `hello`, exactly as received.
    pub challenge: String,
    /// The client's clock.
    pub ts: u64,
}

/// `redeem`: exchange an invite token for a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemPayload {
    /// The invite token, as printed or linked.
    pub token: String,
    /// For a staff invite: the name colleagues know the redeemer by (the admin's
    /// staff list and rota show it), in its normalised display-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(RedeemPayload);

/// The two kinds of group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Open door while a session window is open; pseudonymous.
    DropIn,
    /// Scheduled sessions for invited members.
    Virtual,
}

/// A time window in which a group's door is open (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionWindow {
    /// Opens at.
    pub start_ms: u64,
    /// Closes at (after `start_ms`).
    pub end_ms: u64,
}

/// How long a group keeps its conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep nothing once a session ends (typical for drop-in groups).
    #[serde(default)]
    pub ephemeral: bool,
    /// Otherwise, delete messages older than this many days (`None`: keep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u32>,
}

/// `create_group`: an admin creates a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupPayload {
    /// The new group's id.
    pub group: GroupId,
    /// Its title, shown to members.
    pub title: String,
    /// Drop-in or virtual.
    pub group_kind: GroupKind,
    /// The group agreement every member accepts before speaking (version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    /// Refused when present (`invalid`): the access code goes in the
    /// `create_group` frame beside the envelope, never inside the signed (and
    /// stored) payload. Kept here so such a payload gets that clear answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_code: Option<String>,
    /// When the door is open; empty: whenever a session is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<SessionWindow>,
    /// How long history is kept.
    #[serde(default)]
    pub retention: Retention,
    /// Whether a facilitator admits each participant (default: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<bool>,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(CreateGroupPayload, group);

/// `join`: enter a group under a display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinPayload {
    /// The group.
    pub group: GroupId,
    /// The display name, already in its normalised form.
    pub name: String,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(JoinPayload, group);

/// `post`: a chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostPayload {
    /// The group.
    pub group: GroupId,
    /// The message text: 1 to `max_body_chars` characters.
    pub body: String,
    /// For a private check-in: the one other person who may read it (one of the two
    /// must be a facilitator of the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PublicKey>,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(PostPayload, group);

/// Roles an invite can grant. `member` admits its holder to one virtual group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteRole {
    /// Creates groups, invites people, keeps the rota.
    Admin,
    /// A peer worker who runs sessions.
    Facilitator,
    /// Receives escalations.
    Supervisor,
    /// A member of one virtual group (needs `group`).
    Member,
}

impl InviteRole {
    /// The account role this grants (`None` for `member`).
    pub fn account_role(self) -> Option<crate::frame::Role> {
        match self {
            Self::Admin => Some(crate::frame::Role::Admin),
            Self::Facilitator => Some(crate::frame::Role::Facilitator),
            Self::Supervisor => Some(crate::frame::Role::Supervisor),
            Self::Member => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Facilitator => "facilitator",
            Self::Supervisor => "supervisor",
            Self::Member => "member",
        }
    }
}

impl From<crate::frame::Role> for InviteRole {
    fn from(role: crate::frame::Role) -> Self {
        match role {
            crate::frame::Role::Admin => Self::Admin,
            crate::frame::Role::Facilitator => Self::Facilitator,
            crate::frame::Role::Supervisor => Self::Supervisor,
        }
    }
}

/// `invite`: make a single-use invite (admins; facilitators for `member`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitePayload {
    /// The role it grants.
    pub role: InviteRole,
    /// For `member`: the virtual group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// For `facilitator`: the groups it grants (at least one, at most
    /// [`MAX_GRANT_GROUPS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupId>,
    /// Validity in ms (default 24 h, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(InvitePayload);

/// Most groups one facilitator invite may name.
pub const MAX_GRANT_GROUPS: usize = 32;

/// `grant`: an admin grants a key facilitator standing in one group, or revokes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantPayload {
    /// The key.
    pub key: PublicKey,
    /// The group.
    pub group: GroupId,
    /// `true` to revoke (absent: grant).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoke: bool,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(GrantPayload);

/// `agree`: accept a version of the group agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreePayload {
    /// The group.
    pub group: GroupId,
    /// The agreement version read and accepted.
    pub version: u32,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(AgreePayload, group);

/// What a facilitator does. Each is announced and audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlAction {
    /// Let someone in from the waiting room.
    Admit {
        /// Who.
        member: PublicKey,
    },
    /// Turn someone away from the waiting room (told to them and facilitators only).
    Decline {
        /// Who.
        member: PublicKey,
        /// Why, in words for them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Stop someone posting for a while (they can still ask for help).
    Mute {
        /// Who.
        member: PublicKey,
        /// For how long, 1 to 1440 minutes.
        minutes: u32,
    },
    /// End a mute early.
    Unmute {
        /// Who.
        member: PublicKey,
    },
    /// Take someone out of the group.
    Remove {
        /// Who.
        member: PublicKey,
        /// Only until this session ends (otherwise for good).
        #[serde(default)]
        until_session_end: bool,
        /// Why, in words for them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Admit nobody new.
    Lock,
    /// Admit again.
    Unlock,
    /// At most one message per `seconds` per member (0 turns it off).
    SlowMode {
        /// Seconds between one member's messages, 0 to 3600.
        seconds: u32,
    },
    /// Only facilitators post.
    Pause,
    /// Everyone posts again.
    Resume,
    /// Hide a message's text from participants, saying why.
    Redact {
        /// The message's seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// Pin a message.
    Pin {
        /// Its seq.
        seq: u64,
    },
    /// Unpin a message.
    Unpin {
        /// Its seq.
        seq: u64,
    },
    /// Give a member facilitator powers in this group.
    AddCofacilitator {
        /// Who.
        member: PublicKey,
    },
    /// Make another facilitator the lead.
    HandOver {
        /// Who.
        member: PublicKey,
    },
    /// Change the group agreement (everyone is asked again).
    SetAgreement {
        /// The new text.
        text: String,
    },
    /// Start a private check-in with one member: written to the pair channel the
    /// two share (and the audit chain), never announced to the group.
    CheckIn {
        /// Who.
        member: PublicKey,
    },
    /// Open a new session (when none is open).
    OpenSession,
    /// End the session: everyone is told and the room closes.
    EndSession,
    /// Clear the waiting room: everyone who is waiting and was never admitted
    /// leaves it (those connected are told, and may knock again). Written to the
    /// staff channel: the group never knew they were waiting.
    ClearWaiting,
}

impl ControlAction {
    /// The wire name (`"mute"`, ...), also used in audit actions.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Admit { .. } => "admit",
            Self::Decline { .. } => "decline",
            Self::Mute { .. } => "mute",
            Self::Unmute { .. } => "unmute",
            Self::Remove { .. } => "remove",
            Self::Lock => "lock",
            Self::Unlock => "unlock",
            Self::SlowMode { .. } => "slow_mode",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Redact { .. } => "redact",
            Self::Pin { .. } => "pin",
            Self::Unpin { .. } => "unpin",
            Self::AddCofacilitator { .. } => "add_cofacilitator",
            Self::HandOver { .. } => "hand_over",
            Self::SetAgreement { .. } => "set_agreement",
            Self::CheckIn { .. } => "check_in",
            Self::OpenSession => "open_session",
            Self::EndSession => "end_session",
            Self::ClearWaiting => "clear_waiting",
        }
    }

    /// The member the action is about, if any.
    pub fn member(&self) -> Option<&PublicKey> {
        match self {
            Self::Admit { member }
            | Self::Decline { member, .. }
            | Self::Mute { member, .. }
            | Self::Unmute { member }
            | Self::Remove { member, .. }
            | Self::AddCofacilitator { member }
            | Self::HandOver { member }
            | Self::CheckIn { member } => Some(member),
            _ => None,
        }
    }
}

/// `control`: a facilitator action in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPayload {
    /// The group.
    pub group: GroupId,
    /// What to do.
    #[serde(deserialize_with = "strict_action")]
    pub action: ControlAction,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(ControlPayload, group);

/// `report`: tell the facilitators a message breaks the agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportPayload {
    /// The group.
    pub group: GroupId,
    /// The message's seq.
    pub seq: u64,
    /// Why, in the reporter's words (may be empty).
    pub reason: String,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(ReportPayload, group);

/// `step_out`: a quiet "I'm stepping out" status (or back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepOutPayload {
    /// The group.
    pub group: GroupId,
    /// Stepping out (true) or back (false).
    pub away: bool,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(StepOutPayload, group);

/// `record`: a co-produced session record — a facilitator's note about the session
/// or one member, or a reply adding the member's own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordPayload {
    /// The group.
    pub group: GroupId,
    /// A new record about this member (facilitators; `None`: about the session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<PublicKey>,
    /// Or: add words to this existing record (its member or a facilitator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// The words.
    pub text: String,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(RecordPayload, group);

/// `flag`: ask for a supervisor's support for someone (oneself, another member, or
/// the author of a message). Never held back by a mute, pause, slow mode or waiting
/// room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagPayload {
    /// The group.
    pub group: GroupId,
    /// The person it is about (the signer's own key for "I need support now").
    pub about: PublicKey,
    /// The message that prompted it, if any (main-channel seq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// How serious.
    pub severity: crate::escalation::Severity,
    /// On what basis (`own` exactly when `about` is the signer).
    pub consent: crate::escalation::Consent,
    /// Required with `imminent_risk`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Only with `imminent_risk`: why the person should not be told yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withhold_notice: Option<String>,
    /// Anything the supervisor should know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(FlagPayload, group);

/// What a supervisor does with an escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum EscalationAction {
    /// Take it (the first to acknowledge has it; the others see who).
    Ack,
    /// Add a note to its log.
    Note {
        /// The note.
        text: String,
    },
    /// Pass it to another supervisor.
    Handover {
        /// The supervisor taking it.
        to: PublicKey,
    },
    /// Close it with an outcome.
    Resolve {
        /// What happened.
        outcome: String,
    },
}

impl EscalationAction {
    /// The wire name (`"ack"`, ...), also used in audit actions.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Note { .. } => "note",
            Self::Handover { .. } => "handover",
            Self::Resolve { .. } => "resolve",
        }
    }
}

/// `escalation`: a supervisor's step on one escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationActPayload {
    /// The escalation's id.
    pub escalation: u64,
    /// What to do.
    #[serde(deserialize_with = "strict_action")]
    pub action: EscalationAction,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(EscalationActPayload);

/// `rota`: replace the on-call rota (admins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotaPayload {
    /// Every entry of the new rota.
    pub entries: Vec<crate::escalation::RotaEntry>,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(RotaPayload);

/// What a `push` envelope does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushAction {
    /// Store the subscription (or refresh it).
    Subscribe,
    /// Remove it.
    Unsubscribe,
}

/// `push`: add or remove a Web Push subscription of the signer's browser
/// (supervisors, admins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushPayload {
    /// Subscribe or unsubscribe.
    pub action: PushAction,
    /// The push service URL from `PushSubscription.endpoint`.
    pub endpoint: String,
    /// The subscription's P-256 key (`getKey("p256dh")`, base64url); subscribe only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p256dh: Option<String>,
    /// The subscription's auth secret (`getKey("auth")`, base64url); subscribe only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(PushPayload);

/// `admin`: an operator's command carried out by the hub, signed with the hub's own
/// key and kept in the audit chain (never sent by a client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminPayload {
    /// What was done: `backup`, `export`, `erase`, `group.schedule`.
    pub action: String,
    /// The key it concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<PublicKey>,
    /// The group it concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// What was set, as JSON text (for `group.schedule`: the new windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Per-key counter (the hub's: its clock).
    pub counter: u64,
    /// Hub clock.
    pub ts: u64,
}
counted!(AdminPayload);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::from_json_object;

    fn control(action: &str) -> Result<ControlAction, serde_json::Error> {
        let text = format!(r#"{{"group":"g","action":{action},"counter":1,"ts":1}}"#);
        from_json_object::<ControlPayload>(&text).map(|p| p.action)
    }

    #[test]
    fn actions_are_objects_with_only_their_own_fields() {
        assert_eq!(control(r#"{"do":"lock"}"#).unwrap(), ControlAction::Lock);
        assert!(
            control(r#"{"do":"lock","why":"x"}"#).is_err(),
            "stray field on a bare action"
        );
        assert!(control(r#"["lock"]"#).is_err(), "array form");
        assert!(control(r#"{"do":"teleport"}"#).is_err());
        let key = PublicKey([5; 32]).to_b64();
        let mute = format!(r#"{{"do":"mute","member":"{key}","minutes":3}}"#);
        assert!(matches!(
            control(&mute).unwrap(),
            ControlAction::Mute { minutes: 3, .. }
        ));
        let stray = format!(r#"{{"do":"mute","member":"{key}","minutes":3,"why":1}}"#);
        assert!(control(&stray).is_err());
        let remove = format!(r#"{{"do":"remove","member":"{key}"}}"#);
        assert!(control(&remove).is_ok(), "optional fields may be left out");
        let null = format!(r#"{{"do":"remove","member":"{key}","reason":null}}"#);
        assert!(
            control(&null).is_err(),
            "null is refused: leave the field out"
        );
        let act = r#"{"escalation":1,"action":{"do":"ack","x":1},"counter":1,"ts":1}"#;
        assert!(from_json_object::<EscalationActPayload>(act).is_err());
    }
}
