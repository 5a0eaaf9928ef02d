//! What the server prepares at start: the first-admin invite (while no admin
//! exists) and, with `--demo`, a demo group with invites for every role.

use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::GroupKind;
use peerhub_protocol::GroupId;

use crate::invites::{self, InviteSpec, DEFAULT_TTL_MS};
use crate::store::records::GroupRecord;
use crate::store::{Store, StoreError};

/// The demo group's id.
pub const DEMO_GROUP: &str = "demo";

/// The demo group's agreement.
pub const DEMO_AGREEMENT: &str = "This is a demo peer-support group.\n\
    - Use any name you like; nobody needs your real name.\n\
    - What people share here stays here.\n\
    - Speak from your own experience; listen without judging.\n\
    - You can leave at any time, and you can ask for help privately.\n\
    - Facilitators will step in to keep the space safe, and will say when they do.\n\
    This is not an emergency service: if you are in danger now, call 999.";

/// Tokens made at start, for the operator's eyes only (printed, never logged).
#[derive(Clone, Default)]
pub struct StartTokens {
    /// First-admin invite, while no admin exists.
    pub admin: Option<String>,
    /// Demo facilitator invite.
    pub demo_facilitator: Option<String>,
    /// Demo supervisor invite.
    pub demo_supervisor: Option<String>,
}

impl std::fmt::Debug for StartTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are shown as set or not, never printed by Debug.
        f.debug_struct("StartTokens")
            .field("admin", &self.admin.as_ref().map(|_| "set"))
            .field(
                "demo_facilitator",
                &self.demo_facilitator.as_ref().map(|_| "set"),
            )
            .field(
                "demo_supervisor",
                &self.demo_supervisor.as_ref().map(|_| "set"),
            )
            .finish()
    }
}

/// Prepares start-up invites and the demo group, durably.
pub fn prepare(store: &Store, demo: bool, now_ms: u64) -> Result<StartTokens, StoreError> {
    let mut tokens = StartTokens::default();
    store.remove_unused_bootstrap_invites()?;
    if !store.has_admin()? {
        let spec = InviteSpec {
            role: Role::Admin.into(),
            group: None,
            groups: Vec::new(),
            ttl_ms: DEFAULT_TTL_MS,
            bootstrap: true,
        };
        tokens.admin = Some(invites::create(store, spec, None, now_ms)?);
    }
    if demo {
        let id = GroupId::parse(DEMO_GROUP).map_err(|e| StoreError::Corrupt {
            tree: "groupid_group",
            reason: e.to_string(),
        })?;
        let created = store.create_group(&GroupRecord {
            id: id.clone(),
            title: "Demo drop-in".into(),
            kind: GroupKind::DropIn,
            created_ms: now_ms,
            created_by: None,
            created_env: None,
            access_code_hash: None,
            schedule: Vec::new(),
            retention: peerhub_protocol::payload::Retention::default(),
            waiting_room: true,
        })?;
        if created {
            let state = crate::groups::room::initial_state(Some(DEMO_AGREEMENT.into()));
            store.put_group_state(&id, &state)?;
        }
        for (role, slot) in [
            (Role::Facilitator, &mut tokens.demo_facilitator),
            (Role::Supervisor, &mut tokens.demo_supervisor),
        ] {
            // The demo facilitator facilitates the demo group (and no other).
            let groups = match role {
                Role::Facilitator => vec![id.clone()],
                _ => Vec::new(),
            };
            let spec = InviteSpec {
                role: role.into(),
                group: None,
                groups,
                ttl_ms: DEFAULT_TTL_MS,
                bootstrap: true,
            };
            *slot = Some(invites::create(store, spec, None, now_ms)?);
        }
    }
    store.flush()?;
    Ok(tokens)
}
