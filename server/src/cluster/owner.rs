//! Taking a group on this node (docs/CLUSTER.md §3): the group's lease, a fenced
//! writer on its log, and this node's store brought up to the log's tail before
//! the group's task reads it. [`Owned`] is what the task then holds: every
//! commit's writes are appended to the log before anyone hears of them, and the
//! task stops when the lease is lost.

use peerhub_protocol::GroupId;

use super::lease::LeaseKeeper;
use super::log::GroupWriter;
use super::node::ClusterNode;
use super::replica::{self, GroupOp};
use super::ClusterError;
use crate::store::{Store, StoreError};

/// A group served by this node.
#[derive(Debug)]
pub struct Owned {
    /// The group's lease, renewed in the background.
    pub(crate) keeper: LeaseKeeper,
    writer: GroupWriter,
    /// The writes of the batch being built, appended at its commit.
    pub(crate) ops: Vec<GroupOp>,
    /// The group counts as served here while this lives.
    _served: super::log::ServedHere,
    /// The directory, for a session's end every node's chain must hear of.
    directory: super::directory::Directory,
}

/// What trying to take a group found.
#[derive(Debug)]
pub enum Taken {
    /// This node serves it now.
    Owned(Box<Owned>),
    /// Another node does (its holder name, as in the lease).
    Held {
        /// The holder.
        holder: String,
    },
}

/// Tries to take `group` for this node: its lease, then a writer (which fences
/// every earlier owner out of the log), then this store brought up to the log's
/// tail (from the start, if an earlier failure here left the copy forgotten).
pub async fn take(
    node: &ClusterNode,
    store: &Store,
    group: &GroupId,
) -> Result<Taken, ClusterError> {
    let key = ClusterNode::group_lease(group);
    let lease = match node.leases.acquire(&key, &node.holder).await {
        Ok(lease) => lease,
        Err(ClusterError::Held { .. }) => {
            let holder = node
                .leases
                .current(&key)
                .await?
                .map(|(value, _)| value.holder)
                .unwrap_or_default();
            return Ok(Taken::Held { holder });
        }
        Err(error) => return Err(error),
    };
    let writer = node.logs.writer(group.as_str(), &lease).await?;
    let keeper = node.leases.keep(lease);
    let caught_up = match replica::catch_up(store, &node.logs, group).await {
        // A copy that does not follow on from the log (a gap): start again.
        Err(ClusterError::Corrupt { .. }) => replica::rebuild(store, &node.logs, group).await,
        other => other,
    }?;
    if caught_up != writer.last_seq() {
        return Err(ClusterError::Corrupt {
            what: "group log",
            reason: format!(
                "group {group}: this node's copy is at {caught_up}, the log at {}",
                writer.last_seq()
            ),
        });
    }
    tracing::info!(%group, epoch = writer.epoch(), seq = caught_up, "serving group on this node");
    Ok(Taken::Owned(Box::new(Owned {
        keeper,
        writer,
        ops: Vec::new(),
        _served: node.logs.served_here(group.as_str()),
        directory: node.directory.clone(),
    })))
}

/// Appends `payload` to a log under a kept lease, returning after the stream's
/// acknowledgement; refused once the lease has run out (a node that may have
/// lost the group or the router, `what`, does not write to it). The group's
/// and the router's commits both end here.
pub(crate) async fn append_while_held(
    keeper: &LeaseKeeper,
    writer: &mut GroupWriter,
    payload: bytes::Bytes,
    what: &str,
) -> Result<super::log::Appended, StoreError> {
    if !keeper.is_held() {
        return Err(StoreError::Replication(format!(
            "this node's lease on the {what} ran out"
        )));
    }
    writer
        .append(payload)
        .await
        .map_err(|error| StoreError::Replication(error.to_string()))
}

impl Owned {
    /// Tells every node that an ephemeral session of `group` ended, naming
    /// its participants by pseudonym (`super::session_end`).
    pub(crate) async fn record_session_end(
        &self,
        group: &GroupId,
        pseudonyms: Vec<String>,
        at_ms: u64,
    ) -> Result<u64, ClusterError> {
        self.directory
            .put_session_end(&super::directory::SessionEndRecord {
                group: group.clone(),
                pseudonyms,
                at_ms,
            })
            .await
    }

    /// Appends the batch's writes as one record of the group's log; returns
    /// once the stream acknowledged it. Refused when the lease has run out: a
    /// node that may have lost the group does not write to it.
    pub(crate) async fn append(
        &mut self,
        store: &Store,
        group: &GroupId,
    ) -> Result<(), StoreError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.ops);
        let appended = append_while_held(
            &self.keeper,
            &mut self.writer,
            replica::encode(&ops),
            "group",
        )
        .await?;
        store.put_replica_applied(group, appended.seq, appended.stream_seq)?;
        Ok(())
    }

    /// Appends `ops` as one record of the group's log and, after the stream's
    /// acknowledgement, applies them to this store (what a node holding a group
    /// without its task writes: retention's pass over a group nobody serves).
    pub(crate) async fn commit(
        &mut self,
        store: &Store,
        group: &GroupId,
        ops: &[GroupOp],
    ) -> Result<(), ClusterError> {
        if !self.keeper.is_held() {
            return Err(ClusterError::LeaseLost {
                key: ClusterNode::group_lease(group),
                epoch: self.writer.epoch(),
            });
        }
        replica::commit(&mut self.writer, store, group, ops).await?;
        Ok(())
    }

    /// The logs this group's writer appends to.
    pub(crate) fn logs(&self) -> &super::log::GroupLogs {
        self.writer.logs()
    }

    /// Trims the group's log behind a snapshot of this store's copy at the
    /// log's tail (`super::trim`); returns how many records went. Refused when
    /// the lease has run out.
    pub(crate) async fn trim(&self, store: &Store, group: &GroupId) -> Result<u64, ClusterError> {
        if !self.keeper.is_held() {
            return Err(ClusterError::LeaseLost {
                key: ClusterNode::group_lease(group),
                epoch: self.writer.epoch(),
            });
        }
        super::trim::trim(store, &self.writer, group).await
    }

    /// Hands the group on (a clean stop): the next node need not wait out the
    /// lease.
    pub(crate) async fn release(self) {
        if let Err(error) = self.keeper.release().await {
            tracing::warn!(%error, "could not release a group lease; it runs out by itself");
        }
    }
}
