//! What the server prepares at start: the first-admin invite (while no admin
//! exists) and, with `--demo`, a demo group with invites for every role.
//!
//! In cluster mode ([`prepare_in_cluster`]) these live in the cluster's
//! directory, so a link any node prints works on every node, and the hub's
//! secrets are taken from the cluster before anything uses them. One
//! first-admin invite exists for the whole cluster: a node starting while an
//! unused one does (made by another node, or by this one before a restart)
//! prints none and says so; `peerhub invite --role admin` on any running node
//! makes another. Unlike one node, a start does not remove unused start-up
//! invites (another node may have just printed them); they expire.

use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::GroupKind;
use peerhub_protocol::GroupId;

use crate::cluster::directory::{apply_own_write, Directory, FirstAdmin};
use crate::cluster::ClusterError;
use crate::invites::{self, InviteSpec, DEFAULT_TTL_MS};
use crate::store::records::GroupRecord;
use crate::store::{HubSecret, Store, StoreError};

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

/// Cluster mode's [`prepare`]: first the hub's secrets every node shares (this
/// store's own are offered if the cluster has none yet), then the first-admin
/// invite and the demo group in the cluster's directory; the demo group's first
/// state in this node's store when this node created it. Durable on return.
pub async fn prepare_in_cluster(
    store: &Store,
    directory: &Directory,
    demo: bool,
    now_ms: u64,
) -> Result<StartTokens, ClusterError> {
    for which in [
        HubSecret::AccessCode,
        HubSecret::SigningSeed,
        HubSecret::Vapid,
        HubSecret::EscalationReference,
    ] {
        let candidate = match (which, store.hub_secret(which)?) {
            (_, Some(own)) => own,
            // A VAPID key must be a P-256 scalar: made (and kept) the usual way.
            (HubSecret::Vapid, None) => {
                let made = store.vapid_secret(crate::escalation::push::new_secret)?;
                <[u8; 32]>::try_from(made.as_slice()).map_err(|_| ClusterError::Corrupt {
                    what: "VAPID key",
                    reason: "not 32 bytes".into(),
                })?
            }
            (_, None) => fresh_secret()?,
        };
        let shared = directory.hub_secret(which, &candidate).await?;
        if store.hub_secret(which)? != Some(shared) {
            store.put_hub_secret(which, &shared)?;
        }
    }
    let mut tokens = StartTokens::default();
    let token = invites::new_token();
    let spec = InviteSpec {
        role: Role::Admin.into(),
        group: None,
        groups: Vec::new(),
        ttl_ms: DEFAULT_TTL_MS,
        bootstrap: true,
    };
    let record = invites::new_record(spec, None, now_ms);
    match directory
        .first_admin_invite(invites::token_hash(&token), &record, now_ms)
        .await?
    {
        FirstAdmin::Made => tokens.admin = Some(token),
        FirstAdmin::NotNeeded => {}
        FirstAdmin::Pending { expires_ms } => tracing::info!(
            expires_ms,
            "a first-admin link made earlier (by this or another node) is still unused, so none \
             is printed; `peerhub invite --role admin` on a running node makes another"
        ),
    }
    if demo {
        let record = demo_group(now_ms)?;
        if let Some(revision) = directory.create_group_at(&record).await? {
            apply_own_write(store, revision, || store.put_group(&record))?;
            let state = crate::groups::room::initial_state(Some(DEMO_AGREEMENT.into()));
            store.put_group_state(&record.id, &state)?;
        }
        for (role, slot) in [
            (Role::Facilitator, &mut tokens.demo_facilitator),
            (Role::Supervisor, &mut tokens.demo_supervisor),
        ] {
            let spec = demo_invite(role, &record.id);
            *slot = Some(invites::create_shared(directory, spec, None, now_ms).await?);
        }
    }
    store.flush()?;
    Ok(tokens)
}

/// 32 bytes from the OS for a hub secret this store does not hold yet.
fn fresh_secret() -> Result<[u8; 32], StoreError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| StoreError::Corrupt {
        tree: "meta",
        reason: format!("no randomness for a hub secret: {e}"),
    })?;
    Ok(secret)
}

/// The demo group's record.
fn demo_group(now_ms: u64) -> Result<GroupRecord, StoreError> {
    let id = GroupId::parse(DEMO_GROUP).map_err(|e| StoreError::Corrupt {
        tree: "groupid_group",
        reason: e.to_string(),
    })?;
    Ok(GroupRecord {
        id,
        title: "Demo drop-in".into(),
        kind: GroupKind::DropIn,
        created_ms: now_ms,
        created_by: None,
        created_env: None,
        access_code_hash: None,
        schedule: Vec::new(),
        retention: peerhub_protocol::payload::Retention::default(),
        waiting_room: true,
    })
}

/// A demo invite for `role`: the demo facilitator facilitates the demo group
/// (and no other).
fn demo_invite(role: Role, demo: &GroupId) -> InviteSpec {
    let groups = match role {
        Role::Facilitator => vec![demo.clone()],
        _ => Vec::new(),
    };
    InviteSpec {
        role: role.into(),
        group: None,
        groups,
        ttl_ms: DEFAULT_TTL_MS,
        bootstrap: true,
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
        let record = demo_group(now_ms)?;
        let id = record.id.clone();
        let created = store.create_group(&record)?;
        if created {
            let state = crate::groups::room::initial_state(Some(DEMO_AGREEMENT.into()));
            store.put_group_state(&id, &state)?;
        }
        for (role, slot) in [
            (Role::Facilitator, &mut tokens.demo_facilitator),
            (Role::Supervisor, &mut tokens.demo_supervisor),
        ] {
            *slot = Some(invites::create(
                store,
                demo_invite(role, &id),
                None,
                now_ms,
            )?);
        }
    }
    store.flush()?;
    Ok(tokens)
}
