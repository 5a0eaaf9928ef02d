//! The router's role checks that decide a change: the one who acts on an
//! escalation, the supervisor it is handed to, the admin who sets the rota and
//! the supervisors it names.
//!
//! In cluster mode this node's store follows the directory a moment behind
//! other nodes' writes (`cluster::mirror`; longer when its consumer is made
//! again under load). A supervisor who redeemed their invite on another node a
//! moment ago must not be refused for it: when the store does not show the
//! role a check wants, the directory itself is asked, for at most
//! [`ROLES_PATIENCE`] in all for one check (the router's task waits with it).
//! Only a refusal asks, so a yes costs nothing more than on one node; a
//! directory that does not answer in time leaves the store's answer.

use std::collections::HashSet;
use std::time::Duration;

use peerhub_protocol::frame::Role;
use peerhub_protocol::PublicKey;

use crate::cluster::router_log::RouterOwned;
use crate::store::{Store, StoreError};

/// The longest one check waits for the directory.
pub const ROLES_PATIENCE: Duration = Duration::from_millis(500);

/// Whether `roles` include the supervisor role.
pub(super) fn is_supervisor(roles: &[Role]) -> bool {
    roles.contains(&Role::Supervisor)
}

/// `key`'s roles: `store`'s, or when they do not satisfy `wanted`, in cluster
/// mode (`owned`: the router this node leads), the directory's (see the
/// module).
pub(super) async fn roles_wanting(
    store: &Store,
    owned: Option<&RouterOwned>,
    key: &PublicKey,
    wanted: fn(&[Role]) -> bool,
) -> Result<Vec<Role>, StoreError> {
    let roles = store.roles(key)?;
    if wanted(&roles) {
        return Ok(roles);
    }
    let Some(owned) = owned else {
        return Ok(roles);
    };
    Ok(owned
        .directory_roles(key, ROLES_PATIENCE)
        .await
        .unwrap_or(roles))
}

/// The first of `keys` that does not hold the supervisor role, if any (in
/// cluster mode asking the directory about those `store` does not know as
/// supervisors, within [`ROLES_PATIENCE`] for them all).
pub(super) async fn first_not_supervisor(
    store: &Store,
    owned: Option<&RouterOwned>,
    keys: &[PublicKey],
) -> Result<Option<PublicKey>, StoreError> {
    let deadline = tokio::time::Instant::now() + ROLES_PATIENCE;
    let mut asked = HashSet::new();
    for key in keys {
        if is_supervisor(&store.roles(key)?) || asked.contains(key) {
            continue;
        }
        let Some(owned) = owned else {
            return Ok(Some(*key));
        };
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        match owned.directory_roles(key, within).await {
            Some(roles) if is_supervisor(&roles) => {
                asked.insert(*key);
            }
            _ => return Ok(Some(*key)),
        }
    }
    Ok(None)
}
