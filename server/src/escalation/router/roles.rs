//! The router's role checks: the one who acts on an escalation, reads the
//! queue, an escalation by id, the rota or an escalation's private line, the
//! admin who sets the rota, and the supervisors a rota names or an escalation
//! is handed to.
//!
//! In cluster mode this node's store follows the directory a moment behind
//! other nodes' writes (`cluster::mirror`; longer while its consumer is made
//! again under load). A supervisor who redeemed their invite on another node a
//! moment ago must not be refused for it: when the store does not show a role
//! the check wants, the directory itself is asked, for at most
//! [`ROLES_PATIENCE`] in all for one check (the router's task waits with it).
//! It is asked only about the one acting when their own connection's session
//! holds the role (from their node's store): a participant's requests never
//! make the router wait on NATS. About others (a rota's supervisors, a
//! handover's target) it is asked once the one asking was found entitled.
//! A yes from the store costs nothing more than on one node; a directory that
//! does not answer in time leaves the store's answer.

use std::collections::HashSet;
use std::time::Duration;

use peerhub_protocol::frame::Role;
use peerhub_protocol::PublicKey;

use super::{EscalationRouter, Online};
use crate::cluster::router_log::RouterOwned;
use crate::outbound::ConnId;
use crate::store::{Store, StoreError};

/// The longest one check waits for the directory.
pub const ROLES_PATIENCE: Duration = Duration::from_millis(500);

/// Whether `roles` include the supervisor role.
pub(super) fn is_supervisor(roles: &[Role]) -> bool {
    roles.contains(&Role::Supervisor)
}

/// Whether `roles` include the admin role.
pub(super) fn is_admin(roles: &[Role]) -> bool {
    roles.contains(&Role::Admin)
}

impl EscalationRouter {
    /// The roles of `key`, who asks through connection `conn` (with no
    /// connection, any of theirs online), judged for `wanted`:
    /// [`roles_wanting`], asking the directory only if their session claims
    /// such a role. Not an `async fn`: the router is not `Sync`, so the future
    /// holds only the fields it reads.
    pub(super) fn asker_roles(
        &self,
        conn: Option<ConnId>,
        key: &PublicKey,
        wanted: fn(&[Role]) -> bool,
    ) -> impl std::future::Future<Output = Result<Vec<Role>, StoreError>> + Send + '_ {
        let claimed = self.claims(conn, key, wanted);
        let (store, owned, key) = (&self.store, self.owned.as_deref(), *key);
        async move { roles_wanting(store, owned, &key, wanted, claimed).await }
    }

    /// Whether `key`'s session holds a role `wanted` accepts: the session of
    /// connection `conn`, or with no connection, any of `key`'s online.
    fn claims(&self, conn: Option<ConnId>, key: &PublicKey, wanted: fn(&[Role]) -> bool) -> bool {
        let holds = |online: &Online| online.key == *key && wanted(&online.roles);
        match conn {
            Some(conn) => self.online.get(&conn).is_some_and(holds),
            None => self.online.values().any(holds),
        }
    }
}

/// `key`'s roles: `store`'s, or when they do not satisfy `wanted` and
/// `claimed` (see the module), in cluster mode (`owned`: the router this node
/// leads), the directory's.
pub(super) async fn roles_wanting(
    store: &Store,
    owned: Option<&RouterOwned>,
    key: &PublicKey,
    wanted: fn(&[Role]) -> bool,
    claimed: bool,
) -> Result<Vec<Role>, StoreError> {
    let roles = store.roles(key)?;
    if wanted(&roles) || !claimed {
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
