//! Retention's chat-history part in cluster mode (docs/CLUSTER.md §8,
//! "Retention"): a group's events expire through its owner, as a write set in
//! its log that every copy applies, and the log is then trimmed behind a
//! snapshot ([`super::trim`]) so JetStream no longer holds them either.
//!
//! Every node runs [`pass`] (the retention job's interval) over the groups its
//! store knows:
//!
//! - a group **served here**: its task deletes and trims (`GroupCommand::Expire`);
//! - a group **nobody serves**: the node holding the `jobs` lease reads its log,
//!   and if anything there expired or can be trimmed, takes the group's lease
//!   for the moment it needs (a join meanwhile on another node is refused as
//!   retryable), writes the deletion, trims, and lets go;
//! - a group **served elsewhere**: its owner's own pass does it; this node only
//!   brings its copy up to the log, which applies the deletions written so far
//!   (a node's copy of a group it does not serve lags by at most one interval).
//!
//! Logs name groups and counts, never content or keys.

use std::sync::Arc;

use peerhub_protocol::GroupId;

use super::node::ClusterNode;
use super::owner::{self, Taken};
use super::replica::{self, GroupOp};
use super::{trim, ClusterError};
use crate::error::ServerError;
use crate::hub::Hub;
use crate::retention::{chat_days, cutoff, RetentionSettings};

/// One pass over every group this node's store knows, at `now_ms`; returns how
/// many events were deleted through this node. A group that fails is logged and
/// left to the next pass; the others go on.
pub async fn pass(
    hub: &Hub,
    node: &Arc<ClusterNode>,
    settings: &RetentionSettings,
    now_ms: u64,
) -> Result<usize, ServerError> {
    let jobs = match node
        .leases
        .acquire(ClusterNode::JOBS_LEASE, &node.holder)
        .await
    {
        Ok(lease) => Some(node.leases.keep(lease)),
        Err(ClusterError::Held { .. }) => None,
        Err(error) => {
            tracing::warn!(%error, "retention could not ask for the jobs lease; groups nobody serves wait for the next pass");
            None
        }
    };
    let mut deleted = 0;
    let mut failed = 0usize;
    for group in hub.store.groups()? {
        let before = cutoff(
            now_ms,
            chat_days(&group.retention, settings.chat_history_days),
        );
        let jobs_held = jobs.as_ref().is_some_and(|keeper| keeper.is_held());
        match expire_group(hub, node, &group.id, before, jobs_held).await {
            Ok(n) => deleted += n,
            Err(error) => {
                failed += 1;
                tracing::warn!(group = %group.id, %error, "retention could not expire a group; the next pass tries again");
            }
        }
    }
    if let Some(keeper) = jobs {
        let _ = keeper.release().await;
    }
    if failed > 0 {
        tracing::warn!(failed, "retention left groups for the next pass");
    }
    Ok(deleted)
}

/// One group's part of a pass (see the module's text).
async fn expire_group(
    hub: &Hub,
    node: &Arc<ClusterNode>,
    id: &GroupId,
    before: Option<u64>,
    jobs: bool,
) -> Result<usize, ServerError> {
    let lock = node.group_lock(id);
    let _taking = lock.lock().await;
    if hub.groups.is_served_here(id) {
        if let Ok(handle) = hub.groups.handle(id) {
            return handle.expire(before).await;
        }
    }
    if !jobs {
        follow(hub, node, id).await?;
        return Ok(0);
    }
    let records = node.logs.read_all(id.as_str()).await.map_err(replication)?;
    let expired = match before {
        Some(before) => trim::expired(&records, before).map_err(replication)?,
        None => 0,
    };
    let trimmable = trim::floor(&records)
        .map_err(replication)?
        .is_some_and(|first_kept| first_kept > 0);
    if expired == 0 && !trimmable {
        follow(hub, node, id).await?;
        return Ok(0);
    }
    let mut owned = match owner::take(node, &hub.store, id)
        .await
        .map_err(replication)?
    {
        Taken::Owned(owned) => owned,
        Taken::Held { .. } => {
            // Served elsewhere now: its owner's pass expires it.
            follow(hub, node, id).await?;
            return Ok(0);
        }
    };
    let outcome = async {
        if expired > 0 {
            owned
                .commit(
                    &hub.store,
                    id,
                    &[GroupOp::DeleteEvents { before_ms: before }],
                )
                .await
                .map_err(replication)?;
            hub.committer.commit().await?;
        }
        owned.trim(&hub.store, id).await.map_err(replication)?;
        Ok(expired)
    }
    .await;
    owned.release().await;
    outcome
}

/// Brings this node's copy of a group it does not serve up to the log (only if
/// it has one: a node keeps the groups its members used).
async fn follow(hub: &Hub, node: &ClusterNode, id: &GroupId) -> Result<(), ServerError> {
    if hub.store.replica_applied(id)?.0 == 0 {
        return Ok(());
    }
    replica::catch_up(&hub.store, &node.logs, id)
        .await
        .map_err(replication)?;
    hub.committer.commit().await?;
    Ok(())
}

fn replication(error: ClusterError) -> ServerError {
    super::remote::replication(error)
}
