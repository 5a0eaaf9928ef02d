//! A person's erasure across a cluster (docs/CLUSTER.md §8, "Erase"):
//! [`erase_person`] is what `peerhub erase` runs on a running cluster node,
//! through its control socket. Three parts, in order: the group part
//! ([`erase_in_groups`], below), the account part in the directory
//! (`Directory::erase_account`), and the erasure's record
//! (`erasure.<pseudonym>`), which every node's directory mirror applies to its
//! own store, this node's at once (`super::node_erasure`).
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

use super::directory::{AccountErased, ErasureRecord};
use super::log::LogRecord;
use super::node::ClusterNode;
use super::node_erasure::NodeErased;
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

/// What [`erase_person`] did, as `peerhub erase` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct PersonErased {
    /// The pseudonym that stands for the key in audit chains and in the
    /// erasure's record.
    pub pseudonym: String,
    /// Every group part: all `erased` and rebased for a complete erasure.
    pub groups: Vec<GroupOutcome>,
    /// The account part in the directory.
    pub account: AccountErased,
    /// The erasure's record's revision in the directory.
    pub record_revision: u64,
    /// This node's part.
    pub this_node: NodeErased,
    /// Whether every part is done (every group reached and rebased); if not,
    /// run it again: what is done is not done twice.
    pub complete: bool,
    /// What the other nodes do.
    pub other_nodes: &'static str,
    /// What no client can reach.
    pub raft_logs: &'static str,
}

/// Why an erasure of a key the cluster holds nothing of is refused.
pub const UNKNOWN_KEY: &str = "refused: the cluster holds nothing of this key (no account, \
replay counter, allow-list place, group record or earlier erasure): check the key; nothing \
was changed";

/// A person's erasure across the cluster, asked of this running node (see the
/// module): refused, with nothing changed, for the hub's own key and for a key
/// the cluster holds nothing of ([`UNKNOWN_KEY`]); a key erased before is
/// taken again (a group not reached then is reached now).
pub async fn erase_person(
    hub: &Hub,
    node: &Arc<ClusterNode>,
    key: &PublicKey,
) -> Result<PersonErased, ServerError> {
    let seed = hub.store.hub_signing_seed()?;
    if erase::hub_key_other_than(&seed, key).is_err() {
        return Err(ServerError::Forbidden("refused: that is the hub's own key"));
    }
    let pseudonym = crate::audit::Pseudonym::of(&seed, key).as_str().to_string();
    if !is_known(hub, node, key, &pseudonym).await? {
        return Err(ServerError::NotFound(UNKNOWN_KEY));
    }
    let groups = erase_in_groups(hub, node, key).await?;
    let account = node
        .directory
        .erase_account(key, erase::erased_member)
        .await?;
    let record = ErasureRecord {
        pseudonym: pseudonym.clone(),
        at_ms: hub.clock.now_ms(),
    };
    let (this_node, record_revision) = super::node_erasure::erase_here_and_record(
        &node.directory,
        &hub.store,
        &hub.audit,
        key,
        &record,
        hub.clock.now_ms(),
    )
    .await?;
    let complete =
        groups.iter().all(GroupOutcome::is_done) && !matches!(this_node, NodeErased::Failed { .. });
    tracing::info!(
        groups = groups.len(),
        complete,
        "a person's erasure ran across the cluster"
    );
    Ok(PersonErased {
        pseudonym,
        groups,
        account,
        record_revision,
        this_node,
        complete,
        other_nodes: "each node applies the erasure's record from the directory to its own \
store (its copies of the groups, the account's copies, co-produced records, its audit chain \
pseudonymised, then compaction): at once if it runs, otherwise when it next starts",
        raft_logs: "each NATS server's Raft log keeps the erased records' bytes until the \
server compacts it, which no client can force",
    })
}

/// Whether the cluster holds anything of `key`: an account, a replay counter,
/// anything in this node's store, an earlier erasure's record, or a group log
/// naming it.
async fn is_known(
    hub: &Hub,
    node: &Arc<ClusterNode>,
    key: &PublicKey,
    pseudonym: &str,
) -> Result<bool, ServerError> {
    let directory = &node.directory;
    if directory.account(key).await?.is_some()
        || directory.counter(key).await? > 0
        || hub.store.keys_held()?.contains(key)
        || directory
            .erasures()
            .await?
            .iter()
            .any(|(record, _)| record.pseudonym == pseudonym)
    {
        return Ok(true);
    }
    for group in hub.store.groups()? {
        let records = node
            .logs
            .read_all(group.id.as_str())
            .await
            .map_err(replication)?;
        if names(&records, key) {
            return Ok(true);
        }
    }
    Ok(false)
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
