//! Trimming a group's log behind a snapshot (docs/CLUSTER.md §8, "Retention"):
//! once retention (or an ephemeral session's end) has deleted events through a
//! write set, the records that held them must leave the log too, or JetStream
//! keeps the words and a node that rebuilds from the log brings them back.
//!
//! [`trim`] is run by the group's owner at the log's tail (record N): it finds
//! the first record that still holds a live event (the latest write of a
//! `(channel, seq)` not deleted since — [`floor`]), writes a snapshot of the
//! group's state and member records as of N ([`Trimmed`], in the group's key of
//! the snapshot bucket, fenced by epoch), and only then erases every record of
//! the group before that one (JetStream's message delete, which overwrites the
//! bytes in each replica's store: [`GroupLogs::erase_records`]). The tail record is always kept, so the log's seq
//! and its fence carry on. Records after the floor may still hold expired
//! events beside live ones: they go when nothing live is left in them.
//!
//! [`restore`] is how a node whose copy is behind the purge floor (a gap, or no
//! copy at all) rebuilds: it forgets its copy, applies the records that are left
//! up to N (the first of them no later than the floor, gap-free), puts the
//! snapshot's state and member records over them (what lived only in purged
//! records), sets its mark to N and applies the rest. A gap a snapshot does not
//! explain is refused, never skipped. Logs name groups and seqs, never content.

use std::collections::HashMap;

use peerhub_protocol::frame::Channel;
use peerhub_protocol::GroupId;
use serde::{Deserialize, Serialize};

use super::log::{GroupLogs, GroupWriter, LogRecord, RecordKind};
use super::replica::{self, GroupOp};
use super::snapshot::Snapshot;
use super::ClusterError;
use crate::store::records::{GroupStateRecord, MemberRecord};
use crate::store::Store;

/// The format version of [`Trimmed`].
const VERSION: u32 = 1;

/// What a trim's snapshot holds: the group's state and every member record as
/// of the snapshot's record, and the first group seq whose record was kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trimmed {
    /// The format's version.
    pub v: u32,
    /// Records from this group seq on were kept; those before it were purged.
    pub floor: u64,
    /// The group's state, if it had one.
    pub state: Option<GroupStateRecord>,
    /// Every member record.
    pub members: Vec<MemberRecord>,
}

impl Trimmed {
    fn decode(snapshot: &Snapshot) -> Result<Self, ClusterError> {
        let trimmed: Self = super::from_json("group trim snapshot", &snapshot.state)?;
        if trimmed.v != VERSION {
            return Err(ClusterError::Corrupt {
                what: "group trim snapshot",
                reason: format!("format version {} (this node reads {VERSION})", trimmed.v),
            });
        }
        Ok(trimmed)
    }
}

/// Each live event, `(channel, seq)`, with the index of the record holding its
/// latest write and the event's time.
type Live = HashMap<(Channel, u64), (usize, u64)>;

/// The events still live after `records` (in log order).
fn live_events(records: &[LogRecord]) -> Result<Live, ClusterError> {
    let mut live = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        if record.kind == RecordKind::Fence {
            continue;
        }
        for op in replica::decode(&record.payload)? {
            match op {
                GroupOp::Event { channel, event } => {
                    live.insert((channel, event.seq), (index, event.ts));
                }
                GroupOp::DeleteEvents { before_ms: None } => live.clear(),
                GroupOp::DeleteEvents {
                    before_ms: Some(before),
                } => live.retain(|_, (_, ts)| *ts >= before),
                GroupOp::State { .. } | GroupOp::Member { .. } | GroupOp::RemoveMember { .. } => {}
            }
        }
    }
    Ok(live)
}

/// The events still live after `records` (in log order), each `(channel, seq)`
/// once: what a rebase (`super::rebase`) appends again.
pub(crate) fn live(records: &[LogRecord]) -> Result<Vec<(Channel, u64)>, ClusterError> {
    Ok(live_events(records)?.into_keys().collect())
}

/// How many events live at the end of `records` were written before
/// `before_ms` (what a retention pass with that cutoff deletes).
pub fn expired(records: &[LogRecord], before_ms: u64) -> Result<usize, ClusterError> {
    Ok(live_events(records)?
        .values()
        .filter(|(_, ts)| *ts < before_ms)
        .count())
}

/// The index of the first record to keep: the first holding a live event, else
/// the last record (the tail is always kept). `None` for no records.
pub fn floor(records: &[LogRecord]) -> Result<Option<usize>, ClusterError> {
    if records.is_empty() {
        return Ok(None);
    }
    let first_live = live_events(records)?
        .values()
        .map(|(index, _)| *index)
        .min();
    Ok(Some(first_live.unwrap_or(records.len() - 1)))
}

/// The first group seq a kept record holds: an event record's own, a fence's
/// next (a fence carries the seq of the event before it).
fn first_kept_seq(record: &LogRecord) -> u64 {
    match record.kind {
        RecordKind::Event => record.seq,
        RecordKind::Fence => record.seq + 1,
    }
}

/// The owner's trim of `group`'s log at its writer's tail (see the module's
/// text); returns how many records were erased. Nothing is erased unless a
/// snapshot of this tail is stored first; a newer owner's snapshot refuses it
/// ([`ClusterError::Fenced`]).
pub async fn trim(
    store: &Store,
    writer: &GroupWriter,
    group: &GroupId,
) -> Result<u64, ClusterError> {
    let logs = writer.logs();
    let Some(snapshots) = logs.snapshots() else {
        return Ok(0);
    };
    let records = logs.read_all(group.as_str()).await?;
    let Some(last) = records.last() else {
        return Ok(0);
    };
    if last.stream_seq != writer.last_stream_seq() {
        // Someone appended after this writer: it is no longer the owner.
        return Err(ClusterError::Fenced {
            subject: logs.subject(group.as_str())?,
            epoch: writer.epoch(),
        });
    }
    let Some(keep) = floor(&records)? else {
        return Ok(0);
    };
    if keep == 0 {
        return Ok(0);
    }
    let kept = &records[keep];
    let trimmed = Trimmed {
        v: VERSION,
        floor: first_kept_seq(kept),
        state: store.group_state(group)?,
        members: store.members(group)?,
    };
    let snapshot = Snapshot {
        epoch: writer.epoch(),
        seq: writer.last_seq(),
        stream_seq: writer.last_stream_seq(),
        state: super::to_json(&trimmed),
    };
    if !snapshots.save(group.as_str(), &snapshot).await? {
        // One covering as much is stored: only this tail's own (an earlier trim
        // whose erasure did not finish) lets it go on.
        let stored = snapshots.latest(group.as_str()).await?;
        let same = stored.as_ref().is_some_and(|(stored, _)| {
            stored.stream_seq == snapshot.stream_seq
                && Trimmed::decode(stored).is_ok_and(|t| t.floor == trimmed.floor)
        });
        if !same {
            return Ok(0);
        }
    }
    let dropped: Vec<u64> = records[..keep].iter().map(|r| r.stream_seq).collect();
    let erased = logs.erase_records(&dropped).await?;
    tracing::info!(%group, floor = trimmed.floor, at = snapshot.seq, erased, "group log trimmed behind a snapshot");
    Ok(erased)
}

/// How many times [`restore`] reads the log again when a trim moved it on
/// between its reads.
const RESTORE_READS: usize = 3;

/// Rebuilds this store's copy of `group` from its snapshot and the records
/// left after a trim (see the module's text); returns the group seq the copy is
/// at. [`ClusterError::Corrupt`] (nothing changed) if the log does not start at
/// 1 and no snapshot explains it, or records the snapshot needs are gone.
pub async fn restore(
    store: &Store,
    logs: &GroupLogs,
    group: &GroupId,
) -> Result<u64, ClusterError> {
    let gap = |reason: String| ClusterError::Corrupt {
        what: "group log",
        reason: format!("group {group}: {reason}"),
    };
    for _ in 0..RESTORE_READS {
        // The records first, then the snapshot: a trim stores its snapshot before
        // it erases, so a snapshot read later covers whatever these lack.
        let records = logs.read_all(group.as_str()).await?;
        let snapshot = match logs.snapshots() {
            Some(snapshots) => snapshots.latest(group.as_str()).await?,
            None => None,
        };
        let Some((snapshot, _)) = snapshot else {
            let first = records.iter().find(|r| r.kind == RecordKind::Event);
            if first.is_some_and(|r| r.seq != 1) {
                return Err(gap(
                    "the log does not start at 1 and no snapshot says why".into()
                ));
            }
            store.forget_replica(group)?;
            return replica::catch_up_from(store, group, &records);
        };
        let last_read = records.last().map_or(0, |r| r.stream_seq);
        if snapshot.stream_seq > last_read {
            // Trimmed after the read: read again.
            continue;
        }
        let trimmed = Trimmed::decode(&snapshot)?;
        let (before, after): (Vec<&LogRecord>, Vec<&LogRecord>) = records
            .iter()
            .filter(|r| r.kind == RecordKind::Event)
            .partition(|r| r.stream_seq <= snapshot.stream_seq);
        if let Some(first) = before.first() {
            if first.seq > trimmed.floor {
                return Err(gap(format!(
                    "records from {} are gone; the snapshot needs them from {}",
                    trimmed.floor, first.seq
                )));
            }
        } else if trimmed.floor <= snapshot.seq {
            return Err(gap(format!(
                "records {}–{} are gone; the snapshot needs them",
                trimmed.floor, snapshot.seq
            )));
        }
        let mut sets = Vec::with_capacity(before.len());
        for (i, record) in before.iter().enumerate() {
            if i > 0 && record.seq != before[i - 1].seq + 1 {
                return Err(gap(format!(
                    "record {} follows {}: a gap",
                    record.seq,
                    before[i - 1].seq
                )));
            }
            sets.push(replica::decode(&record.payload)?);
        }
        for (i, record) in after.iter().enumerate() {
            let expected = snapshot.seq + 1 + i as u64;
            if record.seq != expected {
                return Err(gap(format!(
                    "record {} where {expected} follows the snapshot: a gap",
                    record.seq
                )));
            }
        }
        if before.last().is_some_and(|r| r.seq != snapshot.seq) {
            return Err(gap(format!(
                "the snapshot is at {} but the records before it end elsewhere",
                snapshot.seq
            )));
        }
        store.forget_replica(group)?;
        for ops in sets {
            for op in ops {
                replica::apply_op(store, group, op)?;
            }
        }
        for member in store.members(group)? {
            store.delete_member(group, &member.key)?;
        }
        for member in &trimmed.members {
            store.put_member(group, member)?;
        }
        if let Some(state) = &trimmed.state {
            store.put_group_state(group, state)?;
        }
        store.put_replica_applied(group, snapshot.seq, snapshot.stream_seq)?;
        let mut applied = snapshot.seq;
        for record in after {
            if replica::apply(store, group, record)? {
                applied = record.seq;
            }
        }
        tracing::info!(%group, at = snapshot.seq, seq = applied, "this node's copy of the group rebuilt from its snapshot");
        return Ok(applied);
    }
    Err(ClusterError::unavailable(
        "group restore",
        "the log was trimmed again under each read",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::StoredEvent;
    use bytes::Bytes;

    fn event(seq: u64, ts: u64) -> GroupOp {
        GroupOp::Event {
            channel: Channel::Main,
            event: StoredEvent {
                seq,
                ts,
                env: None,
                note: None,
                redacted: None,
            },
        }
    }

    fn record(seq: u64, ops: &[GroupOp]) -> LogRecord {
        LogRecord {
            seq,
            stream_seq: seq * 10,
            epoch: 1,
            kind: RecordKind::Event,
            holder: "a".into(),
            msg_id: format!("g-e1-s{seq}"),
            payload: replica::encode(ops),
        }
    }

    fn fence(seq: u64) -> LogRecord {
        LogRecord {
            kind: RecordKind::Fence,
            payload: Bytes::new(),
            stream_seq: seq * 10 + 5,
            ..record(seq, &[])
        }
    }

    #[test]
    fn the_floor_is_the_first_record_holding_a_live_event() {
        let records = vec![
            fence(0),
            record(1, &[event(1, 100)]),
            record(2, &[event(2, 200), event(3, 300)]),
            record(3, &[event(4, 400)]),
            record(
                4,
                &[GroupOp::DeleteEvents {
                    before_ms: Some(250),
                }],
            ),
        ];
        // Events 1 and 2 expired; record 2 still holds live event 3.
        assert_eq!(floor(&records).unwrap(), Some(2));
        assert_eq!(
            expired(&records, 350).unwrap(),
            1,
            "only event 3 is left to expire"
        );
        assert_eq!(expired(&records[..4], 250).unwrap(), 2);
    }

    #[test]
    fn a_rewritten_event_lives_in_its_latest_record_and_the_tail_is_always_kept() {
        let records = vec![
            record(1, &[event(1, 100)]),
            record(2, &[event(2, 200)]),
            // A redaction rewrites event 1: its old record holds nothing live.
            record(3, &[event(1, 100)]),
        ];
        assert_eq!(floor(&records).unwrap(), Some(1));
        let all_gone = vec![
            record(1, &[event(1, 100)]),
            record(2, &[GroupOp::DeleteEvents { before_ms: None }]),
            fence(2),
        ];
        assert_eq!(floor(&all_gone).unwrap(), Some(2), "the tail, a fence");
        assert_eq!(first_kept_seq(&all_gone[2]), 3);
        assert_eq!(floor(&[]).unwrap(), None);
    }

    #[test]
    fn an_unreadable_record_stops_the_trim() {
        let mut bad = record(1, &[]);
        bad.payload = Bytes::from_static(b"{not json");
        assert!(matches!(floor(&[bad]), Err(ClusterError::Corrupt { .. })));
    }
}
