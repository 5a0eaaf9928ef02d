//! Values kept in the store, as JSON. Adding an optional field is a compatible
//! change; renaming or removing one needs a migration.

use peerhub_protocol::frame::{Agreement, Channel, Note, Redaction, Role};
use peerhub_protocol::payload::{GroupKind, InviteRole, Retention, SessionWindow};
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use serde::{Deserialize, Serialize};

/// A key that holds at least one role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Roles granted, sorted, without duplicates.
    pub roles: Vec<Role>,
    /// When the first role was granted (ms since the Unix epoch).
    pub created_ms: u64,
    /// The name given with the last invite redeemed with one (staff lists, rota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The groups this key is a facilitator of (a grant per group: the
    /// `facilitator` role alone opens no group). Sorted, without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facilitates: Vec<GroupId>,
}

impl AccountRecord {
    /// A new account with no role yet, first granted at `created_ms`.
    pub fn new(created_ms: u64) -> Self {
        Self {
            created_ms,
            ..Self::default()
        }
    }

    /// Adds `role` (kept sorted); whether anything changed.
    pub fn grant_role(&mut self, role: Role) -> bool {
        if self.roles.contains(&role) {
            return false;
        }
        self.roles.push(role);
        self.roles.sort();
        true
    }

    /// Adds the facilitator role and standing in each of `groups` (kept sorted);
    /// whether anything changed.
    pub fn grant_facilitator(&mut self, groups: &[GroupId]) -> bool {
        let mut changed = self.grant_role(Role::Facilitator);
        for group in groups {
            if !self.facilitates.contains(group) {
                self.facilitates.push(group.clone());
                changed = true;
            }
        }
        self.facilitates.sort();
        changed
    }

    /// Takes the standing in `group` away (the role stays, for other groups);
    /// whether it held one.
    pub fn revoke_facilitator(&mut self, group: &GroupId) -> bool {
        let before = self.facilitates.len();
        self.facilitates.retain(|g| g != group);
        self.facilitates.len() != before
    }
}

/// An invite: a single-use token that grants a role (or membership of one
/// virtual group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    /// What it grants.
    pub role: InviteRole,
    /// For `member` invites: the virtual group.
    #[serde(default)]
    pub group: Option<GroupId>,
    /// For `facilitator` invites: the groups it grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupId>,
    /// When it was made.
    pub created_ms: u64,
    /// After this it is refused.
    pub expires_ms: u64,
    /// Who made it (`None` for invites the server made at start).
    pub created_by: Option<PublicKey>,
    /// Made by the server at start for the first admin; replaced at each start.
    #[serde(default)]
    pub bootstrap: bool,
    /// Who redeemed it, once redeemed.
    pub used_by: Option<PublicKey>,
    /// When it was redeemed.
    pub used_ms: Option<u64>,
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Its id.
    pub id: GroupId,
    /// Its title.
    pub title: String,
    /// Drop-in or virtual.
    pub kind: GroupKind,
    /// When it was created.
    pub created_ms: u64,
    /// The admin who created it (`None` for the demo group).
    pub created_by: Option<PublicKey>,
    /// The signed `create_group`, when an admin created it.
    pub created_env: Option<SignedEnvelope>,
    /// SHA-256 of the access code, if joining needs one.
    #[serde(default)]
    pub access_code_hash: Option<String>,
    /// When the door is open (empty: whenever a session is open).
    #[serde(default)]
    pub schedule: Vec<SessionWindow>,
    /// How long history is kept.
    #[serde(default)]
    pub retention: Retention,
    /// Whether a facilitator admits each participant.
    #[serde(default)]
    pub waiting_room: bool,
}

/// A group's mutable state, written with the events that change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStateRecord {
    /// Session number, from 1.
    pub session: u64,
    /// A session is running.
    pub session_open: bool,
    /// Only facilitators post.
    pub paused: bool,
    /// Nobody new is admitted.
    pub locked: bool,
    /// Seconds between one member's messages (0: off).
    pub slow_mode_secs: u32,
    /// The agreement in force (version 0: none).
    pub agreement: Agreement,
    /// Pinned seqs.
    pub pinned: Vec<u64>,
    /// Lead facilitator.
    pub lead: Option<PublicKey>,
    /// Members with facilitator powers here.
    pub co_facilitators: Vec<PublicKey>,
    /// Last seq of each channel. Kept here (not derived from the log) so deleting
    /// old events never makes a seq come round again.
    pub heads: Vec<(Channel, u64)>,
    /// Start of the last schedule window that opened a session automatically.
    #[serde(default)]
    pub opened_window_start: Option<u64>,
}

/// A removal by a facilitator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Only for this session (`None`: for good).
    pub session: Option<u64>,
    /// Why, as told to them.
    pub reason: Option<String>,
}

/// A member of a group: whoever has joined it at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Their key.
    pub key: PublicKey,
    /// Their display name from their latest signed join.
    pub name: String,
    /// That signed join (`None` once the member's data was erased: see
    /// [`crate::erase`]).
    #[serde(default)]
    pub join: Option<SignedEnvelope>,
    /// When they first joined.
    pub first_joined_ms: u64,
    /// The agreement version they accepted (0: none).
    #[serde(default)]
    pub agreed_version: u32,
    /// Their signed acceptance of it. Boxed (the same bytes on disk): most
    /// members have none, and the group task keeps every member's record in
    /// memory, where 120 bytes less per member brings a group of up to eleven
    /// into one 4 KiB node instead of 6 KiB.
    #[serde(default)]
    pub agreement_env: Option<Box<SignedEnvelope>>,
    /// The session they were admitted to.
    #[serde(default)]
    pub admitted_session: Option<u64>,
    /// The session they were declined for.
    #[serde(default)]
    pub declined_session: Option<u64>,
    /// Set when a facilitator removed them.
    #[serde(default)]
    pub removed: Option<Removal>,
    /// Muted until (ms).
    #[serde(default)]
    pub muted_until_ms: Option<u64>,
    /// Quietly stepped out.
    #[serde(default)]
    pub away: bool,
}

/// One event of a group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Gap-free position in its channel, from 1.
    pub seq: u64,
    /// Server time when it was ordered.
    pub ts: u64,
    /// The original envelope (`None` for a hub note).
    pub env: Option<SignedEnvelope>,
    /// A hub note.
    #[serde(default)]
    pub note: Option<Note>,
    /// Set when a facilitator redacted it.
    #[serde(default)]
    pub redacted: Option<Redaction>,
}

/// An escalation and what the hub needs beside what supervisors see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationRecord {
    /// As supervisors see it.
    pub view: peerhub_protocol::escalation::EscalationView,
    /// Whether the person it is about is told (false when a flag withheld it for
    /// imminent risk).
    pub tell_subject: bool,
    /// The keys that raised its flags (to tell them how it goes), at most
    /// `escalation::MAX_FLAGGERS_TOLD`.
    pub flaggers: Vec<PublicKey>,
    /// Flags merged into it after the first, kept in full or only counted.
    #[serde(default)]
    pub merged: u32,
    /// Merged flags only counted (over the cap on flags kept, or over a limit).
    #[serde(default)]
    pub counted: u32,
    /// The consent of its first flag (`None` in records from before it was kept:
    /// read from the first flag).
    #[serde(default)]
    pub consent: Option<peerhub_protocol::escalation::Consent>,
    /// The display name of the person it is about in its group when it was raised
    /// (shown to supervisors and admins only; `None` if the hub had none).
    #[serde(default)]
    pub name: Option<String>,
}

/// A co-produced record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRecord {
    /// Id, from 1.
    pub id: u64,
    /// The group it was written in.
    pub group: GroupId,
    /// The member it is about.
    pub about: Option<PublicKey>,
    /// Signed contributions, the opening note first.
    pub entries: Vec<SignedEnvelope>,
}

/// A Web Push subscription of a supervisor's or admin's browser (`key_pushsub`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscriptionRecord {
    /// The push service URL to POST to (a capability: never logged).
    pub endpoint: String,
    /// The browser's P-256 public key (uncompressed point, base64url).
    pub p256dh: String,
    /// The browser's 16-byte auth secret (base64url).
    pub auth: String,
    /// When it was stored.
    pub created_ms: u64,
}
