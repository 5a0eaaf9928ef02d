//! A group's log in a replicated JetStream stream, fenced against stale owners.
//!
//! One stream (`PEERHUB_LOG`, file storage, R3 by default) holds every group's
//! records; each group has its own subject, `peerhub.log.<group>`. Records carry
//! headers: the group sequence number ([`SEQ_HEADER`], gap-free from 1), the
//! writer's lease epoch ([`EPOCH_HEADER`]), the kind ([`KIND_HEADER`]: `event`, or
//! `fence` for the record a new owner writes first), the stream sequence it was
//! expected after ([`AFTER_HEADER`]) and a message id ([`message_id`]).
//!
//! **Fencing.** Every append is published with `Nats-Expected-Last-Subject-Sequence`
//! set to the stream sequence of the last record this writer knows on its subject;
//! the stream refuses it if anything else was appended since (serialised within
//! the stream's Raft group since nats-server 2.9.21, see scripts/nats/). A new owner
//! opens its writer by reading the tail, refusing if the tail was written under a
//! higher epoch than its own, and appending a fence record. From then on every
//! append of an older owner carries a stale expected sequence and is refused; the
//! refused writer is poisoned ([`ClusterError::Fenced`]) and never retries on a
//! fresh tail. The epoch in the message id keeps a stale owner's record for seq n
//! from being taken for a duplicate of the new owner's record for seq n.
//!
//! **Acknowledgement.** [`GroupWriter::append`] returns only after the stream's
//! PubAck (a quorum of replicas has the record on disk as far as the stream's
//! sync policy goes); when an ack is lost it retries the same record (same message
//! id, same expected sequence) until its deadline, and a record that had in fact
//! been stored is recognised as ours (duplicate ack, or our message id at the tail),
//! never stored twice.

use std::time::Duration;

use async_nats::header::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;

use super::lease::Lease;
use super::{
    check_token, is_sequence_conflict, last_message, open_stream, read_range, retry_unavailable,
    ClusterError, Nats, StreamShape, AFTER_HEADER, EPOCH_HEADER, HOLDER_HEADER, KIND_HEADER,
    SEQ_HEADER,
};

/// The group log stream's settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The stream's name.
    pub stream: String,
    /// The subject prefix; a group's subject is `<prefix>.<group>`.
    pub prefix: String,
    /// Copies of the stream (R3 by default).
    pub replicas: usize,
    /// The stream's duplicate window (retries of an append within it are
    /// recognised by message id).
    pub duplicate_window: Duration,
    /// How long one append keeps retrying a lost acknowledgement.
    pub append_deadline: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            stream: "PEERHUB_LOG".to_string(),
            prefix: "peerhub.log".to_string(),
            replicas: 3,
            duplicate_window: Duration::from_secs(120),
            append_deadline: Duration::from_secs(30),
        }
    }
}

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A group event (a post, a control), numbered by the group's sequence.
    Event,
    /// Written by a new owner before its first event; takes no group sequence.
    Fence,
}

impl RecordKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Fence => "fence",
        }
    }

    fn parse(text: &str) -> Result<Self, ClusterError> {
        match text {
            "event" => Ok(Self::Event),
            "fence" => Ok(Self::Fence),
            _ => Err(ClusterError::Corrupt {
                what: "record kind",
                reason: "unknown kind".to_string(),
            }),
        }
    }
}

/// One record as read back.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The group sequence (a fence carries the last event's).
    pub seq: u64,
    /// Its place in the stream.
    pub stream_seq: u64,
    /// The epoch it was written under.
    pub epoch: u64,
    /// Event or fence.
    pub kind: RecordKind,
    /// The holder that wrote it.
    pub holder: String,
    /// The message id it was published with ([`message_id`]).
    pub msg_id: String,
    /// The record's bytes (empty for a fence).
    pub payload: Bytes,
}

/// An acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The group sequence it got.
    pub seq: u64,
    /// Its place in the stream.
    pub stream_seq: u64,
}

/// The log stream.
#[derive(Debug, Clone)]
pub struct GroupLogs {
    js: jetstream::Context,
    stream: stream::Stream,
    config: LogConfig,
    /// The groups' snapshots a trimmed log is rebuilt from (`super::trim`);
    /// `None`: this log is never trimmed, and a gap in it is only ever refused.
    snapshots: Option<super::snapshot::Snapshots>,
    /// One lock per group, shared by every clone: this node's copy of a group
    /// is taken, caught up or rebuilt by one task at a time (a catch-up racing
    /// another could write a record again after a later one deleted events).
    locks: std::sync::Arc<std::sync::Mutex<GroupLocks>>,
    /// The groups this node serves now (shared by every clone): their copies
    /// are written by their tasks, so a catch-up leaves them alone.
    served: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// The per-group locks of [`GroupLogs::group_lock`].
type GroupLocks = std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>;

impl GroupLogs {
    /// Opens the stream, creating it if it does not exist (file storage,
    /// `config.replicas` copies, subjects `<prefix>.>`).
    pub async fn open(nats: &Nats, config: &LogConfig) -> Result<Self, ClusterError> {
        let js = nats.jetstream().clone();
        let stream = open_stream(
            &js,
            StreamShape {
                name: &config.stream,
                prefix: &config.prefix,
                replicas: config.replicas,
                duplicate_window: config.duplicate_window,
                max_age: Duration::ZERO,
            },
        )
        .await?;
        Ok(Self {
            js,
            stream,
            config: config.clone(),
            snapshots: None,
            locks: Default::default(),
            served: Default::default(),
        })
    }

    /// Whether this node serves `group` now (see [`ServedHere`]).
    pub fn is_served_here(&self, group: &str) -> bool {
        let served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        served.contains(group)
    }

    /// Marks `group` as served on this node until the guard is dropped.
    pub fn served_here(&self, group: &str) -> ServedHere {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        served.insert(group.to_string());
        ServedHere {
            logs: self.clone(),
            group: group.to_string(),
        }
    }

    /// The lock on this node's copy of `group` (made on first use): held while
    /// the copy is taken, caught up or rebuilt.
    pub fn group_lock(&self, group: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(group.to_string()).or_default().clone()
    }

    /// The same logs, trimmed behind snapshots kept in `snapshots` (`super::trim`).
    pub fn with_snapshots(mut self, snapshots: super::snapshot::Snapshots) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// The snapshots a trimmed group log is rebuilt from, if these logs are trimmed.
    pub fn snapshots(&self) -> Option<&super::snapshot::Snapshots> {
        self.snapshots.as_ref()
    }

    /// Erases the records at `stream_seqs` (each a record of this log that a
    /// trim may drop): JetStream's message delete, which by default overwrites
    /// the message's bytes in every replica's store (a purge would only mark
    /// them removed, and their bytes stayed in the stream's files: found by
    /// `expired_words_leave_every_node_and_the_log_and_a_new_node_rebuilds_the_live_history`).
    /// Each server's Raft log keeps the bytes until it compacts. A record
    /// already gone counts as erased. Returns how many this call erased.
    pub async fn erase_records(&self, stream_seqs: &[u64]) -> Result<u64, ClusterError> {
        /// JetStream's "no message found".
        const NO_MESSAGE: usize = 10037;
        let mut erased = 0;
        for &seq in stream_seqs {
            match self.stream.delete_message(seq).await {
                Ok(_) => erased += 1,
                Err(error) => match error.kind() {
                    jetstream::stream::DeleteMessageErrorKind::JetStream(js)
                        if js.code() == 404 || js.error_code().0 == NO_MESSAGE as u64 => {}
                    _ => return Err(ClusterError::unavailable("log erase", error)),
                },
            }
        }
        Ok(erased)
    }

    /// A group's subject.
    pub fn subject(&self, group: &str) -> Result<String, ClusterError> {
        check_token(group)?;
        Ok(format!("{}.{group}", self.config.prefix))
    }

    /// The last record on a group's subject, if any.
    pub async fn tail(&self, group: &str) -> Result<Option<LogRecord>, ClusterError> {
        let subject = self.subject(group)?;
        match last_message(&self.stream, &subject, "log tail").await? {
            Some(message) => Ok(Some(record_of(
                group,
                message.sequence,
                &message.headers,
                message.payload,
            )?)),
            None => Ok(None),
        }
    }

    /// Opens the log for appending under `lease`: refuses when the tail was
    /// written under a higher epoch, then appends a fence record expected at the
    /// tail, so every writer of an earlier epoch is refused from now on.
    pub async fn writer(&self, group: &str, lease: &Lease) -> Result<GroupWriter, ClusterError> {
        let subject = self.subject(group)?;
        let tail = self.tail(group).await?;
        let (last_stream_seq, last_seq) = match &tail {
            Some(record) if record.epoch > lease.epoch() => {
                return Err(ClusterError::Fenced {
                    subject,
                    epoch: lease.epoch(),
                })
            }
            Some(record) => (record.stream_seq, record.seq),
            None => (0, 0),
        };
        let mut writer = GroupWriter {
            logs: self.clone(),
            group: group.to_string(),
            subject,
            holder: lease.holder().to_string(),
            epoch: lease.epoch(),
            last_stream_seq,
            last_seq,
            fenced: false,
        };
        writer.publish(RecordKind::Fence, Bytes::new()).await?;
        tracing::debug!(
            subject = %writer.subject,
            epoch = writer.epoch,
            last_seq = writer.last_seq,
            "group log opened for appending"
        );
        Ok(writer)
    }

    /// The group's events with a sequence above `after`, in order (fences left
    /// out), up to the tail as it was when the read began. This reads the group's
    /// whole subject; resuming from a snapshot that names its stream sequence is
    /// [`GroupLogs::read_since`].
    pub async fn read_after(
        &self,
        group: &str,
        after: u64,
    ) -> Result<Vec<LogRecord>, ClusterError> {
        Ok(self
            .read_all(group)
            .await?
            .into_iter()
            .filter(|record| record.kind == RecordKind::Event && record.seq > after)
            .collect())
    }

    /// Every record on the group's subject, fences included, in stream order, up
    /// to the tail as it was when the read began.
    /// A read that fails on the way (a server went away while its consumer was
    /// being made) is started again until the append deadline.
    pub async fn read_all(&self, group: &str) -> Result<Vec<LogRecord>, ClusterError> {
        self.read_since(group, 0).await
    }

    /// Every record on the group's subject after stream sequence `after` (fences
    /// included), in order, up to the tail as it was when the read began: the
    /// consumer starts at `after + 1`, so only what follows is read.
    pub async fn read_since(
        &self,
        group: &str,
        after: u64,
    ) -> Result<Vec<LogRecord>, ClusterError> {
        retry_unavailable(self.config.append_deadline, || self.read_once(group, after)).await
    }

    async fn read_once(&self, group: &str, after: u64) -> Result<Vec<LogRecord>, ClusterError> {
        let subject = self.subject(group)?;
        let Some(tail) = self.tail(group).await? else {
            return Ok(Vec::new());
        };
        read_range(&self.stream, &subject, after, tail.stream_seq, "log read")
            .await?
            .into_iter()
            .map(|(stream_seq, headers, payload)| record_of(group, stream_seq, &headers, payload))
            .collect()
    }
}

/// While it lives, its group counts as served on this node: the group's task
/// writes this node's copy (its own writes, then their append), so a catch-up
/// must not apply the same records under it (`super::replica::catch_up`).
#[derive(Debug)]
pub struct ServedHere {
    logs: GroupLogs,
    group: String,
}

impl Drop for ServedHere {
    fn drop(&mut self) {
        let mut served = self.logs.served.lock().unwrap_or_else(|p| p.into_inner());
        served.remove(&self.group);
    }
}

/// The one writer of a group's log, for one lease epoch.
#[derive(Debug)]
pub struct GroupWriter {
    logs: GroupLogs,
    group: String,
    subject: String,
    holder: String,
    epoch: u64,
    last_stream_seq: u64,
    last_seq: u64,
    fenced: bool,
}

impl GroupWriter {
    /// The group sequence of the last acknowledged event.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// This writer's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The stream sequence of the last record this writer appended or found.
    pub fn last_stream_seq(&self) -> u64 {
        self.last_stream_seq
    }

    /// The logs it writes to.
    pub fn logs(&self) -> &GroupLogs {
        &self.logs
    }

    /// Appends one event and returns after the stream acknowledged it. After
    /// [`ClusterError::Fenced`] every later call fails the same way.
    pub async fn append(&mut self, payload: Bytes) -> Result<Appended, ClusterError> {
        self.publish(RecordKind::Event, payload).await
    }

    async fn publish(
        &mut self,
        kind: RecordKind,
        payload: Bytes,
    ) -> Result<Appended, ClusterError> {
        if self.fenced {
            return Err(self.fenced_error());
        }
        let seq = match kind {
            RecordKind::Event => self.last_seq + 1,
            RecordKind::Fence => self.last_seq,
        };
        let after = self.last_stream_seq;
        let msg_id = message_id(&self.group, self.epoch, kind, seq, after);
        let deadline = tokio::time::Instant::now() + self.logs.config.append_deadline;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut headers = HeaderMap::new();
            headers.insert(SEQ_HEADER, seq.to_string().as_str());
            headers.insert(EPOCH_HEADER, self.epoch.to_string().as_str());
            headers.insert(KIND_HEADER, kind.as_str());
            headers.insert(HOLDER_HEADER, self.holder.as_str());
            headers.insert(AFTER_HEADER, after.to_string().as_str());
            let message = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers)
                .message_id(&msg_id)
                .expected_last_subject_sequence(self.last_stream_seq);
            let outcome = match self
                .logs
                .js
                .send_publish(self.subject.clone(), message)
                .await
            {
                Ok(ack) => ack.await,
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(ack) => return Ok(self.stored(seq, kind, ack.sequence)),
                Err(error) => error,
            };
            if is_sequence_conflict(&error) {
                // Either an earlier attempt of ours was stored and its ack lost (our
                // message id is at the tail), or someone else appended. (A retry
                // that meets our own attempt still in flight is answered 10158,
                // "duplicate message id in process", before any sequence check,
                // and is simply retried below.)
                match self.logs.tail(&self.group).await {
                    Ok(Some(tail)) if tail.msg_id == msg_id => {
                        return Ok(self.stored(seq, kind, tail.stream_seq))
                    }
                    Ok(_) => {
                        self.fenced = true;
                        tracing::warn!(
                            subject = %self.subject,
                            epoch = self.epoch,
                            "group log append refused: a newer owner has written"
                        );
                        return Err(self.fenced_error());
                    }
                    Err(tail_error) if tokio::time::Instant::now() >= deadline => {
                        return Err(tail_error)
                    }
                    Err(_) => {}
                }
            } else if tokio::time::Instant::now() >= deadline {
                // Timed out, connection lost, no stream leader yet, ...: the record
                // may or may not be stored; the caller must not acknowledge it.
                return Err(ClusterError::unavailable("log append", error));
            }
            tracing::debug!(subject = %self.subject, attempt, kind = ?error.kind(), "group log append retried");
            tokio::time::sleep(Duration::from_millis(100.min(20 * u64::from(attempt)))).await;
        }
    }

    fn stored(&mut self, seq: u64, kind: RecordKind, stream_seq: u64) -> Appended {
        self.last_stream_seq = stream_seq;
        if kind == RecordKind::Event {
            self.last_seq = seq;
        }
        Appended { seq, stream_seq }
    }

    fn fenced_error(&self) -> ClusterError {
        ClusterError::Fenced {
            subject: self.subject.clone(),
            epoch: self.epoch,
        }
    }
}

/// The message id of a record: the group, the writer's epoch, and the event's
/// sequence, or for a fence the stream sequence it was written after (so a second
/// opening under the same lease writes a fence of its own instead of being
/// answered with the first one's). The epoch keeps a stale owner's record for
/// seq n from passing for a duplicate of the new owner's.
pub fn message_id(group: &str, epoch: u64, kind: RecordKind, seq: u64, after: u64) -> String {
    match kind {
        RecordKind::Event => format!("{group}-e{epoch}-s{seq}"),
        RecordKind::Fence => format!("{group}-e{epoch}-fence-after-{after}"),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ClusterError> {
    headers
        .get(name)
        .map(|value| value.as_str())
        .ok_or(ClusterError::Corrupt {
            what: "log record",
            reason: format!("no {name} header"),
        })
}

fn number(headers: &HeaderMap, name: &str) -> Result<u64, ClusterError> {
    header(headers, name)?
        .parse()
        .map_err(|_| ClusterError::Corrupt {
            what: "log record",
            reason: format!("{name} is not a number"),
        })
}

fn record_of(
    group: &str,
    stream_seq: u64,
    headers: &HeaderMap,
    payload: Bytes,
) -> Result<LogRecord, ClusterError> {
    let seq = number(headers, SEQ_HEADER)?;
    let epoch = number(headers, EPOCH_HEADER)?;
    let kind = RecordKind::parse(header(headers, KIND_HEADER)?)?;
    let after = number(headers, AFTER_HEADER)?;
    Ok(LogRecord {
        seq,
        stream_seq,
        epoch,
        kind,
        holder: header(headers, HOLDER_HEADER)?.to_string(),
        msg_id: message_id(group, epoch, kind, seq, after),
        payload,
    })
}
