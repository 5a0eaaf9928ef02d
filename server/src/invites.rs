//! Invites: single-use, expiring tokens that grant a role (or membership of one
//! virtual group) to whichever key redeems them. A facilitator invite names the
//! groups it grants: facilitator standing is per group (PROTOCOL.md §13). Only the SHA-256 of an unused token
//! is stored, so the data folder alone cannot be used to redeem one. A redeemed
//! token appears in its grantee's signed `redeem` in the audit chain, where it can
//! no longer grant anything to anyone else.

use peerhub_protocol::encoding::b64;
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::InviteRole;
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use sha2::{Digest as _, Sha256};

use crate::audit::{action, NewEntry};
use crate::cluster::directory::{apply_own_account, Directory, Redemption};
use crate::cluster::ClusterError;
use crate::error::ServerError;
use crate::hub::Hub;
use crate::store::records::InviteRecord;
use crate::store::{Store, StoreError};

/// How long an invite stays valid unless said otherwise.
pub const DEFAULT_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// The longest an invite may stay valid.
pub const MAX_TTL_MS: u64 = 30 * DEFAULT_TTL_MS;

/// The stored form of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token (32 bytes, base64url).
pub fn new_token() -> String {
    let mut buf = [0u8; 32];
    if getrandom::fill(&mut buf).is_err() {
        tracing::error!("OS random source failed");
    }
    b64(&buf)
}

/// What to make an invite for.
#[derive(Debug, Clone)]
pub struct InviteSpec {
    /// What it grants.
    pub role: InviteRole,
    /// For `member` invites: the virtual group.
    pub group: Option<GroupId>,
    /// For `facilitator` invites: the groups it grants.
    pub groups: Vec<GroupId>,
    /// How long it is valid.
    pub ttl_ms: u64,
    /// Made by the server for the first admin.
    pub bootstrap: bool,
}

/// Writes a new invite (not yet durable: the caller commits) and returns its token.
pub fn create(
    store: &Store,
    spec: InviteSpec,
    created_by: Option<PublicKey>,
    now_ms: u64,
) -> Result<String, StoreError> {
    let token = new_token();
    store.put_invite(token_hash(&token), &new_record(spec, created_by, now_ms))?;
    Ok(token)
}

/// Cluster mode's [`create`]: the invite goes to the cluster's directory, where
/// any node redeems it (invites are not mirrored into the nodes' stores); its
/// token is returned once the directory has stored it.
pub async fn create_shared(
    directory: &Directory,
    spec: InviteSpec,
    created_by: Option<PublicKey>,
    now_ms: u64,
) -> Result<String, ClusterError> {
    let token = new_token();
    directory
        .put_invite(token_hash(&token), &new_record(spec, created_by, now_ms))
        .await?;
    Ok(token)
}

/// The record of a new, unused invite.
pub fn new_record(spec: InviteSpec, created_by: Option<PublicKey>, now_ms: u64) -> InviteRecord {
    InviteRecord {
        role: spec.role,
        group: spec.group.clone(),
        groups: spec.groups.clone(),
        created_ms: now_ms,
        expires_ms: now_ms.saturating_add(spec.ttl_ms),
        created_by,
        bootstrap: spec.bootstrap,
        used_by: None,
        used_ms: None,
    }
}

/// Makes an invite at a person's signed request and records it in the audit chain
/// (not yet durable: the caller commits). In cluster mode the invite is stored
/// in the directory first; an entry that then fails to be written leaves an
/// invite whose token nobody was given.
pub async fn create_audited(
    hub: &Hub,
    spec: InviteSpec,
    inviter: PublicKey,
    env: &SignedEnvelope,
    now_ms: u64,
) -> Result<String, ServerError> {
    let mut entry = NewEntry::new(now_ms, action::INVITE_CREATE, env.clone());
    if let Some(group) = spec.group.as_ref().or(spec.groups.first()) {
        entry = entry.group(group.clone());
    }
    if let Some(node) = &hub.cluster {
        let token = create_shared(&node.directory, spec, Some(inviter), now_ms).await?;
        hub.audit.lock().append(entry)?;
        return Ok(token);
    }
    let mut chain = hub.audit.lock();
    let token = create(&hub.store, spec, Some(inviter), now_ms)?;
    chain.append(entry)?;
    Ok(token)
}

/// What a redemption granted.
#[derive(Debug, Clone)]
pub struct Redeemed {
    /// What the invite granted.
    pub role: InviteRole,
    /// For `member`: the group.
    pub group: Option<GroupId>,
    /// For `facilitator`: the groups the key now facilitates.
    pub groups: Vec<GroupId>,
    /// Every account role the key now holds.
    pub roles: Vec<Role>,
}

/// Redeems `token` for `key`, durably; returns what it granted.
/// `env` is the signed `redeem` it came in: the first redemption records it in the
/// audit chain as a `role.grant`; the same key asking again records nothing more.
pub async fn redeem(
    hub: &Hub,
    key: &PublicKey,
    token: &str,
    counter: u64,
    env: &SignedEnvelope,
) -> Result<Redeemed, ServerError> {
    let now = hub.clock.now_ms();
    let hash = token_hash(token);
    if let Some(node) = &hub.cluster {
        return redeem_in_cluster(hub, &node.directory, key, hash, counter, env, now).await;
    }
    // Marked used before the grant: a crash in between loses an invite (an admin
    // can make another) rather than letting one token grant twice. The audit entry
    // is written between the two, so a grant never outlives its entry. The chain is
    // held while deciding, so of two redeems by one key at once exactly one finds
    // the invite unused and records it; the guard is dropped before any await.
    let invite = {
        let mut chain = hub.audit.lock();
        let repeat = hub.store.invite_redeemer(hash)? == Some(*key);
        let invite = hub
            .store
            .redeem_invite(hash, key, now)?
            .map_err(ServerError::BadToken)?;
        if !repeat {
            chain.append(grant_entry(now, env, key, &invite))?;
        }
        invite
    };
    match (invite.role.account_role(), &invite.group) {
        // A facilitator invite grants standing in the groups it names, and no
        // other (one from before grants were per group names none: an admin
        // grants the groups with `grant`).
        (Some(Role::Facilitator), _) => {
            hub.store.grant_facilitator(key, &invite.groups, now)?;
        }
        (Some(role), _) => {
            hub.store.grant_role(key, role, now)?;
        }
        (None, Some(group)) => hub.store.allow_member(group, key)?,
        (None, None) => {}
    }
    granted(hub, key, counter, invite).await
}

/// The audit entry of a first redemption: a `role.grant`, the redeemer's
/// signed `redeem`, about the group the invite names (its first, for a
/// facilitator's).
fn grant_entry(now: u64, env: &SignedEnvelope, key: &PublicKey, invite: &InviteRecord) -> NewEntry {
    let entry = NewEntry::new(now, action::ROLE_GRANT, env.clone()).subject(*key);
    match invite.group.as_ref().or(invite.groups.first()) {
        Some(group) => entry.group(group.clone()),
        None => entry,
    }
}

/// After the grant: the redeemer's counter, made durable; what was granted.
async fn granted(
    hub: &Hub,
    key: &PublicKey,
    counter: u64,
    invite: InviteRecord,
) -> Result<Redeemed, ServerError> {
    hub.store.raise_counter(key, counter)?;
    hub.committer.commit().await?;
    Ok(Redeemed {
        role: invite.role,
        group: invite.group,
        groups: invite.groups,
        roles: hub.store.roles(key)?,
    })
}

/// Cluster mode's [`redeem`]: the invite is marked used in the directory by
/// compare-and-set, so of nodes redeeming one token at once exactly one key wins
/// (the others get today's "already used"); then the grant, in the directory
/// and at once in this node's store. When NATS fails before the mark nothing
/// was written; after it, the same key redeeming again finds the invite its own
/// and grants again (grants are idempotent), writing no second audit entry.
async fn redeem_in_cluster(
    hub: &Hub,
    directory: &Directory,
    key: &PublicKey,
    hash: [u8; 32],
    counter: u64,
    env: &SignedEnvelope,
    now: u64,
) -> Result<Redeemed, ServerError> {
    let (invite, redemption) = directory
        .redeem_invite_once(hash, key, now)
        .await?
        .map_err(ServerError::BadToken)?;
    if redemption == Redemption::First {
        hub.audit
            .lock()
            .append(grant_entry(now, env, key, &invite))?;
    }
    let written = match (invite.role.account_role(), &invite.group) {
        (Some(Role::Facilitator), _) => Some(
            directory
                .grant_facilitator_at(key, &invite.groups, now)
                .await?,
        ),
        (Some(role), _) => Some(directory.grant_role_at(key, role, now).await?),
        (None, Some(group)) => {
            directory.allow_member(group, key).await?;
            hub.store.allow_member(group, key)?;
            None
        }
        (None, None) => None,
    };
    if let Some((account, Some(revision))) = &written {
        apply_own_account(&hub.store, key, account, *revision)?;
    }
    granted(hub, key, counter, invite).await
}

/// Checks the groups a facilitator invite (or grant) names: at least one, at most
/// [`MAX_GRANT_GROUPS`](peerhub_protocol::payload::MAX_GRANT_GROUPS), no repeats,
/// each one existing. Changes nothing.
pub fn check_grant_groups(store: &Store, groups: &[GroupId]) -> Result<(), ServerError> {
    use peerhub_protocol::payload::MAX_GRANT_GROUPS;
    use peerhub_protocol::ProtocolError;
    if groups.is_empty() {
        return Err(ProtocolError::invalid(
            "groups",
            "a facilitator invite names the group(s) it grants",
        )
        .into());
    }
    if groups.len() > MAX_GRANT_GROUPS {
        return Err(ProtocolError::invalid("groups", "at most 32 groups").into());
    }
    for (n, group) in groups.iter().enumerate() {
        if groups[..n].contains(group) {
            return Err(ProtocolError::invalid("groups", "a group is named twice").into());
        }
        if store.group(group)?.is_none() {
            return Err(ServerError::GroupNotFound(group.clone()));
        }
    }
    Ok(())
}
