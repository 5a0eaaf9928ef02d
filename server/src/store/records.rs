//! Values kept in the store, as JSON. Adding an optional field is a compatible
//! change; renaming or removing one needs a migration.

use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::GroupKind;
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use serde::{Deserialize, Serialize};

/// A key that holds at least one role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Roles granted, sorted, without duplicates.
    pub roles: Vec<Role>,
    /// When the first role was granted (ms since the Unix epoch).
    pub created_ms: u64,
}

/// An invite: a single-use token that grants a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    /// The role it grants.
    pub role: Role,
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
}

/// A member of a group: whoever has joined it at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Their key.
    pub key: PublicKey,
    /// Their display name from their latest signed join.
    pub name: String,
    /// That signed join.
    pub join: SignedEnvelope,
    /// When they first joined.
    pub first_joined_ms: u64,
}

/// One event of a group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Gap-free position in the group, from 1.
    pub seq: u64,
    /// Server time when it was ordered.
    pub ts: u64,
    /// The original envelope.
    pub env: SignedEnvelope,
}
