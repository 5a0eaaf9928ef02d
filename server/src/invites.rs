//! Invites: single-use, expiring tokens that grant a role to whichever key redeems
//! them. Only the SHA-256 of a token is stored, so the data folder alone cannot be
//! used to redeem one.

use peerhub_protocol::encoding::b64;
use peerhub_protocol::frame::Role;
use peerhub_protocol::{PublicKey, SignedEnvelope};
use sha2::{Digest as _, Sha256};

use crate::audit::{action, NewEntry};
use crate::error::ServerError;
use crate::hub::Hub;
use crate::store::records::InviteRecord;
use crate::store::{Store, StoreError};

/// How long an invite stays valid unless said otherwise.
pub const DEFAULT_TTL_MS: u64 = 24 * 60 * 60 * 1000;

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
#[derive(Debug, Clone, Copy)]
pub struct InviteSpec {
    /// The role it grants.
    pub role: Role,
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
    let record = InviteRecord {
        role: spec.role,
        created_ms: now_ms,
        expires_ms: now_ms.saturating_add(spec.ttl_ms),
        created_by,
        bootstrap: spec.bootstrap,
        used_by: None,
        used_ms: None,
    };
    store.put_invite(token_hash(&token), &record)?;
    Ok(token)
}

/// Redeems `token` for `key`, durably; returns the role granted and all roles held.
/// `env` is the signed `redeem` it came in: the first redemption records it in the
/// audit chain as a `role.grant`; the same key asking again records nothing more.
pub async fn redeem(
    hub: &Hub,
    key: &PublicKey,
    token: &str,
    counter: u64,
    env: &SignedEnvelope,
) -> Result<(Role, Vec<Role>), ServerError> {
    let now = hub.clock.now_ms();
    let hash = token_hash(token);
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
            chain.append(NewEntry::new(now, action::ROLE_GRANT, env.clone()).subject(*key))?;
        }
        invite
    };
    let account = hub.store.grant_role(key, invite.role, now)?;
    hub.store.raise_counter(key, counter)?;
    hub.committer.commit().await?;
    Ok((invite.role, account.roles))
}
