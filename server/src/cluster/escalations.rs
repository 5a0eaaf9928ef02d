//! The cluster's escalation queue: every escalation in one replicated JetStream
//! key-value bucket, written only by compare-and-set, so that a flag is durable
//! on a quorum before its ack and a router taking over finds every open one.
//!
//! Keys (dot-separated, so a subject filter can select them):
//! - `esc.<id>` — the [`EscalationRecord`], as the sled store encodes it (JSON).
//!   Every write names the revision it read (0: the key must not exist yet), so
//!   two writers — a router that has not yet noticed it lost its lease and the new
//!   one, or two merges of flags about one person — never overwrite each other's
//!   change: the later one is refused ([`ClusterError::Moved`]), reads again and
//!   applies its change to what is there ([`EscalationQueue::update`]).
//! - `open.<id>` — present while the escalation is not resolved. It is written
//!   **before** a record is stored unresolved and removed only **after** the
//!   record is stored resolved, so however a writer dies between the two, every
//!   unresolved escalation has its `open` key: a new router lists `open.*`
//!   ([`EscalationQueue::unresolved`]) without reading the resolved ones, which
//!   are kept for years, and re-arms their deadlines ([`deadlines`]). A left-over
//!   `open` key of a resolved or never-stored escalation is skipped (and removed).
//! - `next_id` — the last escalation id handed out, raised by compare-and-set:
//!   ids are unique and gap-free however many nodes take them.
//!
//! Routing effects (pages, pushes) are not made exactly-once here: each routing
//! step is recorded first with [`super::dedupe::Steps`]. Logs name keys and
//! revisions, never a record's content.

use std::collections::BTreeSet;

use async_nats::jetstream;
use bytes::Bytes;
use peerhub_protocol::escalation::EscalationStatus;

use super::{
    is_removed, last_message, open_bucket, publish_acked, put_expecting, retry_unavailable,
    ClusterError, Nats, Put, READ_DEADLINE, READ_STALL,
};
use crate::store::records::EscalationRecord;

/// How many times [`EscalationQueue::update`] and [`EscalationQueue::next_id`]
/// read again after losing a race before giving up.
const RETRIES: usize = 64;

/// Where the queue is kept.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The bucket's name.
    pub bucket: String,
    /// Copies of the bucket (R3 by default; 1 for a one-server NATS).
    pub replicas: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            bucket: "peerhub_escalations".to_string(),
            replicas: 3,
        }
    }
}

/// The escalation bucket.
#[derive(Debug, Clone)]
pub struct EscalationQueue {
    js: jetstream::Context,
    /// The bucket's stream: reads go to its leader (a replica may lag).
    stream: jetstream::stream::Stream,
    bucket: String,
}

impl EscalationQueue {
    /// Opens the bucket, creating it (file storage, `config.replicas` copies, one
    /// value kept per key) if it does not exist yet.
    pub async fn open(nats: &Nats, config: &QueueConfig) -> Result<Self, ClusterError> {
        let stream = open_bucket(nats.jetstream(), &config.bucket, config.replicas).await?;
        Ok(Self {
            js: nats.jetstream().clone(),
            stream,
            bucket: config.bucket.clone(),
        })
    }

    /// A new escalation id: one more than the last handed out by anyone.
    pub async fn next_id(&self) -> Result<u64, ClusterError> {
        for attempt in 0..RETRIES {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let (last, revision) = match self.read(NEXT_ID).await? {
                Some((bytes, revision)) => (parse_id(&bytes)?, revision),
                None => (0, 0),
            };
            let id = last + 1;
            match self
                .put(NEXT_ID, Bytes::from(id.to_string()), revision)
                .await
            {
                Ok(_) => return Ok(id),
                Err(Put::Conflict) => continue,
                Err(Put::Failed(error)) => {
                    return Err(ClusterError::unavailable("escalation id", error))
                }
            }
        }
        Err(ClusterError::Moved {
            key: NEXT_ID.to_string(),
        })
    }

    /// One escalation and the revision it was read at, from the stream's leader.
    pub async fn get(&self, id: u64) -> Result<Option<(EscalationRecord, u64)>, ClusterError> {
        match self.read(&record_key(id)).await? {
            Some((bytes, revision)) => Ok(Some((decode(&bytes)?, revision))),
            None => Ok(None),
        }
    }

    /// Stores `record` if its key is still at `revision` (0: not stored yet);
    /// returns the new revision. [`ClusterError::Moved`] if someone wrote it since,
    /// and then nothing was changed. Keeps its `open` key as the module says.
    pub async fn put_record(
        &self,
        record: &EscalationRecord,
        revision: u64,
    ) -> Result<u64, ClusterError> {
        let id = record.view.id;
        let resolved = record.view.status == EscalationStatus::Resolved;
        if !resolved {
            // Before the record: an unresolved record never lacks its `open` key.
            self.mark_open(id).await?;
        }
        let key = record_key(id);
        let written = match self.put(&key, encode(record), revision).await {
            Ok(written) => written,
            Err(Put::Conflict) => return Err(ClusterError::Moved { key }),
            Err(Put::Failed(error)) => {
                return Err(ClusterError::unavailable("escalation write", error))
            }
        };
        tracing::debug!(key, revision = written, "escalation stored");
        if resolved {
            // After the record: a crash here leaves a stale `open` key, which
            // `unresolved` skips and removes.
            self.unmark_open(id).await?;
        }
        Ok(written)
    }

    /// Reads escalation `id`, lets `change` make the new record from it (`None`:
    /// write nothing) and stores it by compare-and-set, reading again and calling
    /// `change` again whenever someone else wrote in between. Returns what was
    /// stored and its revision, or `None` if `change` wrote nothing.
    pub async fn update<F>(
        &self,
        id: u64,
        mut change: F,
    ) -> Result<Option<(EscalationRecord, u64)>, ClusterError>
    where
        F: FnMut(Option<&EscalationRecord>) -> Option<EscalationRecord>,
    {
        for attempt in 0..RETRIES {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let current = self.get(id).await?;
            let revision = current.as_ref().map_or(0, |(_, revision)| *revision);
            let Some(next) = change(current.as_ref().map(|(record, _)| record)) else {
                return Ok(None);
            };
            if next.view.id != id {
                return Err(ClusterError::Corrupt {
                    what: "escalation change",
                    reason: format!("asked for escalation {id}, given {}", next.view.id),
                });
            }
            match self.put_record(&next, revision).await {
                Ok(written) => return Ok(Some((next, written))),
                Err(ClusterError::Moved { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(ClusterError::Moved {
            key: record_key(id),
        })
    }

    /// Every escalation not resolved, oldest first, found through the `open` keys
    /// (resolved ones are never read). Left-over `open` keys of resolved or
    /// never-stored escalations are removed on the way.
    pub async fn unresolved(&self) -> Result<Vec<EscalationRecord>, ClusterError> {
        let mut out = Vec::new();
        for id in self.open_ids().await? {
            match self.get(id).await? {
                Some((record, _)) if record.view.status != EscalationStatus::Resolved => {
                    out.push(record)
                }
                // Resolved (the writer died before removing the key), or its
                // first write never happened: nothing to route.
                Some(_) | None => self.unmark_open(id).await?,
            }
        }
        Ok(out)
    }

    /// The ids with an `open` key, in order: an ordered consumer on the bucket's
    /// stream, the last message of each `open.*` subject, headers only. A listing
    /// that stalls or fails on the way (a server went away under its consumer) is
    /// started again for up to [`READ_DEADLINE`].
    async fn open_ids(&self) -> Result<Vec<u64>, ClusterError> {
        retry_unavailable(READ_DEADLINE, || self.open_ids_once()).await
    }

    async fn open_ids_once(&self) -> Result<Vec<u64>, ClusterError> {
        use futures_util::StreamExt as _;
        let prefix = format!("$KV.{}.open.", self.bucket);
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.js_client().new_inbox(),
                filter_subject: format!("{prefix}*"),
                headers_only: true,
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|error| ClusterError::unavailable("listing open escalations", error))?;
        let mut ids = BTreeSet::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|error| ClusterError::unavailable("listing open escalations", error))?;
        loop {
            let next = tokio::time::timeout(READ_STALL, messages.next())
                .await
                .map_err(|_| ClusterError::unavailable("listing open escalations", "timed out"))?;
            let Some(message) = next else {
                return Err(ClusterError::unavailable(
                    "listing open escalations",
                    "the consumer ended",
                ));
            };
            let message = message
                .map_err(|error| ClusterError::unavailable("listing open escalations", error))?;
            let info = message
                .info()
                .map_err(|error| ClusterError::unavailable("listing open escalations", error))?;
            let pending = info.pending;
            if !message.headers.as_ref().is_some_and(is_removed) {
                let id = message
                    .subject
                    .strip_prefix(prefix.as_str())
                    .and_then(|tail| tail.parse::<u64>().ok())
                    .ok_or_else(|| ClusterError::Corrupt {
                        what: "open escalation key",
                        reason: message.subject.to_string(),
                    })?;
                ids.insert(id);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(ids.into_iter().collect())
    }

    fn js_client(&self) -> async_nats::Client {
        self.js.client()
    }

    async fn mark_open(&self, id: u64) -> Result<(), ClusterError> {
        let subject = format!("$KV.{}.{}", self.bucket, open_key(id));
        publish_acked(&self.js, &subject, || {
            jetstream::message::PublishMessage::build().payload(Bytes::new())
        })
        .await
        .map_err(|error| ClusterError::unavailable("marking an escalation open", error))?;
        Ok(())
    }

    async fn unmark_open(&self, id: u64) -> Result<(), ClusterError> {
        let subject = format!("$KV.{}.{}", self.bucket, open_key(id));
        publish_acked(&self.js, &subject, || {
            jetstream::message::PublishMessage::build()
                .payload(Bytes::new())
                .header("KV-Operation", "DEL")
        })
        .await
        .map_err(|error| ClusterError::unavailable("clearing an open escalation", error))?;
        Ok(())
    }

    /// The last value of `key` and its revision, from the stream's leader; `None`
    /// if it was never written or is deleted.
    async fn read(&self, key: &str) -> Result<Option<(Bytes, u64)>, ClusterError> {
        let subject = format!("$KV.{}.{key}", self.bucket);
        Ok(last_message(&self.stream, &subject, "escalation read")
            .await?
            .filter(|message| !is_removed(&message.headers))
            .map(|message| (message.payload, message.sequence)))
    }

    /// Writes `value` under `key` if the key's last revision is `revision` (0: no
    /// value yet).
    async fn put(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, Put> {
        put_expecting(
            &self.js,
            format!("$KV.{}.{key}", self.bucket),
            value,
            revision,
        )
        .await
    }
}

/// The deadline index a router keeps (`(deadline_ms, id)`, earliest first), for
/// the unresolved escalations given: what a new router re-arms on takeover and
/// then acts on at once for every deadline already past.
pub fn deadlines(records: &[EscalationRecord]) -> BTreeSet<(u64, u64)> {
    records
        .iter()
        .filter(|record| record.view.status != EscalationStatus::Resolved)
        .filter_map(|record| record.view.deadline_ms.map(|at| (at, record.view.id)))
        .collect()
}

const NEXT_ID: &str = "next_id";

/// Waits before reading again after a lost race: a random time up to a bound that
/// doubles with each attempt (1 ms to 64 ms). Racing writers otherwise re-read at
/// once, often before the winner's write is visible at the leader, and collide
/// again; the randomness spreads them out.
pub(crate) async fn backoff(attempt: usize) {
    let bound_us = 1_000u64 << attempt.min(6);
    let mut bytes = [0u8; 8];
    let random = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => bound_us / 2,
    };
    tokio::time::sleep(std::time::Duration::from_micros(random % bound_us + 1)).await;
}

fn record_key(id: u64) -> String {
    format!("esc.{id}")
}

fn open_key(id: u64) -> String {
    format!("open.{id}")
}

fn encode(record: &EscalationRecord) -> Bytes {
    super::to_json(record)
}

fn decode(bytes: &[u8]) -> Result<EscalationRecord, ClusterError> {
    super::from_json("escalation record", bytes)
}

fn parse_id(bytes: &[u8]) -> Result<u64, ClusterError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| ClusterError::Corrupt {
            what: "next escalation id",
            reason: format!("{} bytes that are not a number", bytes.len()),
        })
}
