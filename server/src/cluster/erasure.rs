//! A person's erasure in a cluster's group logs (docs/CLUSTER.md §8, "Erase";
//! the first part: the account's directory keys, records and each node's audit
//! chain are not reached yet, so `peerhub erase` still refuses a cluster folder).
//!
//! [`erase_in_groups`] runs the group part of [`crate::erase`] for every group
//! whose log names the key, through the group's owner, as retention does:
//!
//! - a group **served here**: its task writes the tombstones and the erased
//!   member record as one write set and rebases the log (`GroupCommand::Erase`);
//! - a group **nobody serves**: this node takes the group's lease for the moment
//!   it needs (its copy brought up to the log's tail on the way), writes the
//!   same write set, rebases ([`super::rebase`]) and lets go;
//! - a group **served on another node**: its owner does it, asked over NATS
//!   (`Forwarded::Erase`); an owner that does not answer (dead, its lease not
//!   run out yet) leaves the group reported as served elsewhere, and running the
//!   erasure again reaches it.
//!
//! Logs name groups and counts, never content or keys.

use std::sync::Arc;

use peerhub_protocol::{GroupId, PublicKey};
use serde::{Deserialize, Serialize};

use super::log::LogRecord;
use super::node::ClusterNode;
use super::owner::{self, Taken};
use super::rebase::{self, Rebased};
use super::replica::GroupOp;
use super::ClusterError;
use crate::erase::{self, EraseError, GroupErasure};
use crate::error::ServerError;
use crate::hub::Hub;

/// What one group's erasure did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupErased {
    /// The group.
    pub group: GroupId,
    /// The key's events (and hub notes about it) turned into tombstones.
    pub events: usize,
    /// Whether its member record lost name and signed join.
    pub member: bool,
    /// The log's rebase; `None` if it failed (see `rebase_error`) or the group
    /// is not in a cluster.
    pub rebased: Option<Rebased>,
    /// Why the rebase failed: the erasure is in the log, and running it again
    /// finishes the rebase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebase_error: Option<String>,
}

/// One group's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum GroupOutcome {
    /// Erased through this node.
    Erased(GroupErased),
    /// Served on another node that did not answer: not reached (run again).
    ServedElsewhere {
        /// The group.
        group: GroupId,
        /// The node serving it (its lease holder name).
        holder: String,
    },
    /// The group failed (NATS unavailable, a fenced writer, ...); the others
    /// went on. Running the erasure again retries it.
    Failed {
        /// The group.
        group: GroupId,
        /// Why.
        error: String,
    },
}

impl GroupOutcome {
    /// Whether the group's log is erased and rebased.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Erased(erased) if erased.rebased.is_some())
    }
}

/// The ops of a group's erasure as one write set.
pub fn ops_of(erasure: &GroupErasure) -> Vec<GroupOp> {
    let mut ops: Vec<GroupOp> = erasure
        .events
        .iter()
        .map(|(channel, event)| GroupOp::Event {
            channel: *channel,
            event: event.clone(),
        })
        .collect();
    if let Some(member) = &erasure.member {
        ops.push(GroupOp::Member {
            member: member.clone(),
        });
    }
    ops
}

/// Whether any record of a group's log names `key` (signed by it, about it,
/// its member record).
fn names(records: &[LogRecord], key: &PublicKey) -> bool {
    let needle = key.to_b64();
    let needle = needle.as_bytes();
    records
        .iter()
        .any(|record| record.payload.windows(needle.len()).any(|w| w == needle))
}

/// The group part of erasing `key` in every group of the cluster whose log
/// names it (see the module's text), through this hub's cluster node. The hub's
/// own key is refused with nothing changed.
pub async fn erase_in_groups(
    hub: &Hub,
    node: &Arc<ClusterNode>,
    key: &PublicKey,
) -> Result<Vec<GroupOutcome>, ServerError> {
    let seed = hub.store.hub_signing_seed()?;
    let hub_key = match erase::hub_key_other_than(&seed, key) {
        Ok(hub_key) => hub_key,
        Err(EraseError::HubKey) => {
            return Err(ServerError::Forbidden("refused: that is the hub's own key"))
        }
        Err(_) => return Err(ServerError::Internal("the hub's key could not be read")),
    };
    let mut outcomes = Vec::new();
    for group in hub.store.groups()? {
        match erase_group(hub, node, &group.id, key, hub_key).await {
            Ok(Some(outcome)) => outcomes.push(outcome),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(group = %group.id, %error, "an erasure could not reach a group");
                outcomes.push(GroupOutcome::Failed {
                    group: group.id.clone(),
                    error: error.to_string(),
                });
            }
        }
    }
    let done = outcomes.iter().filter(|o| o.is_done()).count();
    tracing::info!(groups = outcomes.len(), done, "an erasure's group part ran");
    Ok(outcomes)
}

/// One group's part (see the module's text); `None` if its log does not name
/// the key.
async fn erase_group(
    hub: &Hub,
    node: &Arc<ClusterNode>,
    id: &GroupId,
    key: &PublicKey,
    hub_key: PublicKey,
) -> Result<Option<GroupOutcome>, ServerError> {
    let lock = node.group_lock(id);
    let _taking = lock.lock().await;
    let records = node.logs.read_all(id.as_str()).await.map_err(replication)?;
    if !names(&records, key) {
        return Ok(None);
    }
    if hub.groups.is_served_here(id) {
        if let Ok(handle) = hub.groups.handle(id) {
            return Ok(Some(GroupOutcome::Erased(
                handle.erase(*key, hub_key).await?,
            )));
        }
    }
    let mut owned = match owner::take(node, &hub.store, id)
        .await
        .map_err(replication)?
    {
        Taken::Owned(owned) => owned,
        Taken::Held { holder } => {
            // Its owner does it, asked over NATS; an owner that does not answer
            // (dead, its lease not run out yet) leaves the group not reached.
            let remote = super::remote::RemoteGroup::new(
                node.clone(),
                hub.store.clone(),
                id.clone(),
                holder.clone(),
            );
            return Ok(Some(match remote.erase(*key, hub_key).await {
                Ok(erased) => GroupOutcome::Erased(erased),
                Err(error) => {
                    tracing::info!(group = %id, %error, "the group's node did not take the erasure");
                    GroupOutcome::ServedElsewhere {
                        group: id.clone(),
                        holder,
                    }
                }
            }));
        }
    };
    let outcome = async {
        let erasure = erase::group_erasure(&hub.store, id, key, hub_key)?;
        let ops = ops_of(&erasure);
        if !ops.is_empty() {
            owned
                .commit(&hub.store, id, &ops)
                .await
                .map_err(replication)?;
        }
        let rebased = rebase::rebase(&mut owned, &hub.store, id).await;
        hub.committer.commit().await?;
        Ok(GroupErased {
            group: id.clone(),
            events: erasure.events.len(),
            member: erasure.member.is_some(),
            rebased: rebased.as_ref().ok().copied(),
            rebase_error: rebased.err().map(|error| error.to_string()),
        })
    }
    .await;
    owned.release().await;
    outcome.map(|erased| Some(GroupOutcome::Erased(erased)))
}

fn replication(error: ClusterError) -> ServerError {
    super::remote::replication(error)
}
