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

use serde::{Deserialize, Serialize};

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
    /// Per-key counter.
    pub counter: u64,
    /// Client clock.
    pub ts: u64,
}
counted!(PostPayload, group);
