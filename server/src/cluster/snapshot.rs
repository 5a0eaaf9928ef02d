//! Group snapshots: the state a group's actor builds from its log (controls,
//! members' roles, the last seq per channel), as of one log record, so that a
//! node taking a group over reads the snapshot and only the records after it
//! instead of the whole log (docs/CLUSTER.md §3).
//!
//! One key per group in a replicated key-value bucket (`peerhub_group_state`). A
//! snapshot names the owner's epoch and the log record it covers (group seq and
//! stream sequence). It is written by compare-and-set on the revision read and
//! refused ([`ClusterError::Fenced`]) when the bucket holds one of a newer epoch,
//! so an owner that lost its lease can never replace its successor's. A snapshot
//! that covers no more than the stored one is not written. An owner snapshots only
//! state built from records it appended (every one before the log's fence), so
//! even a stale owner's snapshot, taken before the successor wrote one, is the true
//! state of a prefix of the log.
//!
//! [`restore`] is what a new owner runs after opening its writer: the snapshot and
//! every event after it, checked gap-free. Logs name groups, epochs and sequence
//! numbers, never state.

use async_nats::jetstream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::log::{GroupLogs, LogRecord, RecordKind};
use super::{
    check_token, is_removed, last_message, open_erasable_bucket, put_expecting, revisions,
    ClusterError, Nats, Put,
};

/// Values kept per key: the snapshot and, for the moment between storing a new
/// one and erasing it, the one it replaces. With one, storing the new value
/// would drop the old one unwritten, its bytes left in the stream's files.
pub const HISTORY: i64 = 2;

/// How many times a save reads again after losing a race.
const RETRIES: usize = 64;

/// Where snapshots are kept.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// The bucket's name.
    pub bucket: String,
    /// Copies of the bucket (R3 by default; 1 for a one-server NATS).
    pub replicas: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            bucket: "peerhub_group_state".to_string(),
            replicas: 3,
        }
    }
}

/// A group's state as of one log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The epoch of the owner that wrote it.
    pub epoch: u64,
    /// The last group seq it covers (0: none).
    pub seq: u64,
    /// The log stream sequence of that record: the log is read after it.
    pub stream_seq: u64,
    /// The state, as the actor encodes it.
    pub state: Bytes,
}

/// The snapshot bucket.
#[derive(Debug, Clone)]
pub struct Snapshots {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    bucket: String,
}

impl Snapshots {
    /// Opens the bucket, creating it if needed: file storage, made to allow the
    /// message delete that overwrites, two values kept per key so that a new
    /// snapshot is stored before the one it replaces is erased ([`Self::save`]).
    pub async fn open(nats: &Nats, config: &SnapshotConfig) -> Result<Self, ClusterError> {
        let stream =
            open_erasable_bucket(nats.jetstream(), &config.bucket, config.replicas, HISTORY)
                .await?;
        Ok(Self {
            js: nats.jetstream().clone(),
            stream,
            bucket: config.bucket.clone(),
        })
    }

    /// The group's latest snapshot and its revision, from the stream's leader.
    pub async fn latest(&self, group: &str) -> Result<Option<(Snapshot, u64)>, ClusterError> {
        check_token(group)?;
        let subject = format!("$KV.{}.{group}", self.bucket);
        let Some(message) = last_message(&self.stream, &subject, "snapshot read").await? else {
            return Ok(None);
        };
        if is_removed(&message.headers) {
            return Ok(None);
        }
        let snapshot = super::from_json("group snapshot", &message.payload)?;
        Ok(Some((snapshot, message.sequence)))
    }

    /// Stores `snapshot` for `group` unless the bucket holds one of a newer epoch
    /// ([`ClusterError::Fenced`]: nothing written) or one covering as much or more
    /// (`Ok(false)`: nothing written). `Ok(true)` once it is stored and the one it
    /// replaced is erased. A snapshot names people (member records) and holds
    /// what an erasure or a trim removed from the log, so the replaced one is
    /// erased with the message delete that overwrites, after the new one is
    /// stored; one left by a save that stopped between the two is erased before
    /// the next is stored (the bucket's limit would drop it unwritten).
    pub async fn save(&self, group: &str, snapshot: &Snapshot) -> Result<bool, ClusterError> {
        check_token(group)?;
        let value = super::to_json(snapshot);
        for attempt in 0..RETRIES {
            if attempt > 0 {
                super::escalations::backoff(attempt).await;
            }
            self.erase_replaced(group).await?;
            let (revision, stored) = match self.latest(group).await? {
                Some((stored, revision)) => (revision, Some(stored)),
                None => (0, None),
            };
            if let Some(stored) = &stored {
                if stored.epoch > snapshot.epoch {
                    return Err(ClusterError::Fenced {
                        subject: format!("{}.{group}", self.bucket),
                        epoch: snapshot.epoch,
                    });
                }
                if stored.stream_seq >= snapshot.stream_seq {
                    return Ok(false);
                }
            }
            let subject = format!("$KV.{}.{group}", self.bucket);
            match put_expecting(&self.js, subject, value.clone(), revision).await {
                Ok(_) => {
                    tracing::debug!(
                        group,
                        epoch = snapshot.epoch,
                        seq = snapshot.seq,
                        "group snapshot saved"
                    );
                    self.erase_replaced(group).await?;
                    return Ok(true);
                }
                Err(Put::Conflict) => continue,
                Err(Put::Failed(error)) => {
                    return Err(ClusterError::unavailable("snapshot write", error))
                }
            }
        }
        Err(ClusterError::Moved {
            key: format!("{}.{group}", self.bucket),
        })
    }
}

impl Snapshots {
    /// Erases every stored snapshot of `group` but the newest (see [`Self::save`]).
    pub async fn erase_replaced(&self, group: &str) -> Result<u64, ClusterError> {
        check_token(group)?;
        let subject = format!("$KV.{}.{group}", self.bucket);
        revisions::erase_key(&self.stream, &self.js.client(), &subject, true).await
    }
}

/// What a new owner starts from.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The latest snapshot, if the group has one.
    pub snapshot: Option<Snapshot>,
    /// Every event after it (fences left out), in order, gap-free.
    pub after: Vec<LogRecord>,
}

impl Restored {
    /// The last group seq: the next event is this plus one.
    pub fn last_seq(&self) -> u64 {
        self.after
            .last()
            .map(|record| record.seq)
            .or(self.snapshot.as_ref().map(|snapshot| snapshot.seq))
            .unwrap_or(0)
    }
}

/// The group's latest snapshot and the events after it, as a node taking the
/// group over rebuilds its state from. [`ClusterError::Corrupt`] if the events do
/// not follow the snapshot without a gap.
pub async fn restore(
    snapshots: &Snapshots,
    logs: &GroupLogs,
    group: &str,
) -> Result<Restored, ClusterError> {
    let snapshot = snapshots.latest(group).await?.map(|(snapshot, _)| snapshot);
    let (from_seq, from_stream) = snapshot
        .as_ref()
        .map_or((0, 0), |snapshot| (snapshot.seq, snapshot.stream_seq));
    let after: Vec<LogRecord> = logs
        .read_since(group, from_stream)
        .await?
        .into_iter()
        .filter(|record| record.kind == RecordKind::Event)
        .collect();
    for (i, record) in after.iter().enumerate() {
        let expected = from_seq + 1 + i as u64;
        if record.seq != expected {
            return Err(ClusterError::Corrupt {
                what: "group log after its snapshot",
                reason: format!("expected seq {expected}, found {}", record.seq),
            });
        }
    }
    Ok(Restored { snapshot, after })
}
