//! Each node's sled store as a replica of the groups' cluster logs
//! (docs/CLUSTER.md §7, B): a group's owner appends the write set of each commit
//! — the events, state and member records it wrote, as the sled trees encode
//! them — as one record to the group's log, and every node applies the records to
//! its own store in log order, so the hub keeps reading sled synchronously while
//! NATS holds what is authoritative.
//!
//! [`apply`] takes one record: a record at or below the store's mark for the group
//! was applied before and is skipped (applying is idempotent anyway: each op
//! writes a whole record under its key), a record past the next one is a gap and
//! is refused with nothing changed, and after the ops the mark moves to the
//! record. [`catch_up`] applies what the log holds past the mark, as a node does
//! before it serves a group it has not followed (or takes it over). Logs name
//! groups and seqs, never a record's content.

use bytes::Bytes;
use peerhub_protocol::frame::Channel;
use peerhub_protocol::{GroupId, PublicKey};
use serde::{Deserialize, Serialize};

use super::log::{Appended, GroupLogs, GroupWriter, LogRecord, RecordKind};
use super::ClusterError;
use crate::store::records::{GroupStateRecord, MemberRecord, StoredEvent};
use crate::store::Store;

/// One write of a group's commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GroupOp {
    /// An event written (or rewritten: a redaction) in a channel.
    Event {
        /// Its channel.
        channel: Channel,
        /// The event, as sled stores it.
        event: StoredEvent,
    },
    /// The group's state record.
    State {
        /// The state, as sled stores it.
        state: GroupStateRecord,
    },
    /// A member record written.
    Member {
        /// The record.
        member: MemberRecord,
    },
    /// A member record removed.
    RemoveMember {
        /// Whose.
        key: PublicKey,
    },
    /// The group's events removed (a session's end under its retention): all of
    /// them, or those written before `before_ms`.
    DeleteEvents {
        /// The cut-off (ms since the epoch); `None`: every event.
        before_ms: Option<u64>,
    },
}

/// A write set as its log record's payload.
#[derive(Serialize, Deserialize)]
struct WriteSet {
    /// The format's version.
    v: u32,
    ops: Vec<GroupOp>,
}

/// The format version [`encode`] writes.
const VERSION: u32 = 1;

/// A commit's write set as a log record's payload.
pub fn encode(ops: &[GroupOp]) -> Bytes {
    #[derive(Serialize)]
    struct Out<'a> {
        v: u32,
        ops: &'a [GroupOp],
    }
    super::to_json(&Out { v: VERSION, ops })
}

/// A log record's write set; [`ClusterError::Corrupt`] if it is not one this
/// version reads.
pub fn decode(payload: &[u8]) -> Result<Vec<GroupOp>, ClusterError> {
    let set: WriteSet = super::from_json("group write set", payload)?;
    if set.v != VERSION {
        return Err(ClusterError::Corrupt {
            what: "group write set",
            reason: format!("format version {} (this node reads {VERSION})", set.v),
        });
    }
    Ok(set.ops)
}

/// Applies one record of `group`'s log to `store`; `false` if it was applied
/// before. A gap (a record past the next one) or an unreadable record is refused
/// and changes nothing.
pub fn apply(store: &Store, group: &GroupId, record: &LogRecord) -> Result<bool, ClusterError> {
    if record.kind == RecordKind::Fence {
        return Ok(false);
    }
    apply_at(store, group, record.seq, record.stream_seq, || {
        decode(&record.payload)
    })
}

/// Applies the write set `ops` gives as log record `seq` (stream sequence
/// `stream_seq`) of `group`: skipped at or below the store's mark, refused past
/// the next one, then the ops and the mark. `ops` is only called when it applies.
fn apply_at(
    store: &Store,
    group: &GroupId,
    seq: u64,
    stream_seq: u64,
    ops: impl FnOnce() -> Result<Vec<GroupOp>, ClusterError>,
) -> Result<bool, ClusterError> {
    let (applied, _) = store.replica_applied(group)?;
    if seq <= applied {
        return Ok(false);
    }
    if seq != applied + 1 {
        return Err(ClusterError::Corrupt {
            what: "group log record",
            reason: format!("group {group}: record {seq} follows {applied}: a gap"),
        });
    }
    for op in ops()? {
        apply_op(store, group, op)?;
    }
    store.put_replica_applied(group, seq, stream_seq)?;
    Ok(true)
}

/// Writes one op of a write set to `store` (no mark: the caller moves it).
pub(crate) fn apply_op(store: &Store, group: &GroupId, op: GroupOp) -> Result<(), ClusterError> {
    match op {
        GroupOp::Event { channel, event } => store.put_event(group, &channel, &event)?,
        GroupOp::State { state } => store.put_group_state(group, &state)?,
        GroupOp::Member { member } => store.put_member(group, &member)?,
        GroupOp::RemoveMember { key } => store.delete_member(group, &key)?,
        GroupOp::DeleteEvents { before_ms } => {
            store.delete_events(group, before_ms)?;
        }
    }
    Ok(())
}

/// The owner's commit: appends `ops` as one record of `group`'s log, returning
/// only after the stream acknowledged it, then applies them to its own store.
/// When the append fails nothing is applied and nothing may be acknowledged: a
/// fenced writer has lost the group, and a record whose acknowledgement never came
/// is found by [`catch_up`] if it was stored after all.
pub async fn commit(
    writer: &mut GroupWriter,
    store: &Store,
    group: &GroupId,
    ops: &[GroupOp],
) -> Result<Appended, ClusterError> {
    let appended = writer.append(encode(ops)).await?;
    apply_at(store, group, appended.seq, appended.stream_seq, || {
        Ok(ops.to_vec())
    })?;
    Ok(appended)
}

/// Rebuilds this store's copy of `group` from the log alone: forgets every
/// replicated record of the group, then catches up from the log's start (or,
/// for a log trimmed behind a snapshot, from the snapshot and the records left:
/// `super::trim::restore`). What a node runs when an append of its own was
/// refused or never acknowledged (its sled may hold writes the log does not)
/// before it serves the group again.
pub async fn rebuild(
    store: &Store,
    logs: &GroupLogs,
    group: &GroupId,
) -> Result<u64, ClusterError> {
    super::trim::restore(store, logs, group).await
}

/// Applies everything `group`'s log holds past the store's mark; returns the
/// group seq the store is at afterwards. When the log was trimmed past the mark
/// (its next record purged), the copy is rebuilt from the group's snapshot
/// instead (`super::trim::restore`); a gap no snapshot explains is refused.
pub async fn catch_up(
    store: &Store,
    logs: &GroupLogs,
    group: &GroupId,
) -> Result<u64, ClusterError> {
    let (applied, stream_seq) = store.replica_applied(group)?;
    if logs.is_served_here(group.as_str()) {
        // This node's task writes the copy, and it is at the log's tail.
        return Ok(applied);
    }
    let records = logs.read_since(group.as_str(), stream_seq).await?;
    let next = records.iter().find(|r| r.kind == RecordKind::Event);
    if logs.snapshots().is_some() && next.is_some_and(|r| r.seq > applied + 1) {
        return super::trim::restore(store, logs, group).await;
    }
    catch_up_from(store, group, &records)
}

/// Applies `records` (read past the store's mark) in order; returns the group
/// seq the store is at afterwards.
pub(crate) fn catch_up_from(
    store: &Store,
    group: &GroupId,
    records: &[LogRecord],
) -> Result<u64, ClusterError> {
    let (mut applied, _) = store.replica_applied(group)?;
    for record in records {
        if apply(store, group, record)? {
            applied = record.seq;
        }
    }
    Ok(applied)
}
