//! The audit chain in cluster mode: one replicated file stream, `PEERHUB_AUDIT`,
//! one message per entry on the subject `peerhub.audit.chain`, each the entry's
//! bytes exactly as the sled chain stores them ([`crate::audit::encode_entry`]).
//!
//! Every node appends; the chain stays one line because every append names the
//! stream sequence of the tail it linked to (the expected last subject sequence).
//! A node that lost the race reads the new tail and encodes its entry again, with
//! the next seq and the new tail's hash as `prev`. An acknowledgement lost on the
//! way is settled by reading the tail: if it holds this entry's bytes, it was
//! stored. [`ClusterAudit::verify`] reads the stream from its first message and
//! checks it with the checker the sled chain uses ([`crate::audit::verify_entries`]).
//!
//! Logs name sequence numbers, never an entry's content.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;

use super::{
    last_message, open_stream, put_expecting, read_range, retry_unavailable, ClusterError, Nats,
    Put, StreamShape, READ_DEADLINE,
};
use crate::audit::{self, Anchor, AuditEntry, ChainBreak, EntryHash, NewEntry, VerifyReport};

/// How many times an append reads the tail again after losing a race.
const RETRIES: usize = 64;

/// Where the chain is kept.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The stream's name.
    pub stream: String,
    /// The subject prefix (the chain is `<prefix>.chain`).
    pub prefix: String,
    /// Copies of the stream (R3 by default; 1 for a one-server NATS).
    pub replicas: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            stream: "PEERHUB_AUDIT".to_string(),
            prefix: "peerhub.audit".to_string(),
            replicas: 3,
        }
    }
}

/// The chain's last entry: its seq and hash, and where the stream holds it.
#[derive(Debug, Clone)]
struct Tail {
    seq: u64,
    hash: EntryHash,
    stream_seq: u64,
    stored: Bytes,
}

/// The audit chain's stream.
#[derive(Debug, Clone)]
pub struct ClusterAudit {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    subject: String,
}

impl ClusterAudit {
    /// Opens the stream, creating it (file storage, kept for ever) if needed.
    pub async fn open(nats: &Nats, config: &AuditConfig) -> Result<Self, ClusterError> {
        let stream = open_stream(
            nats.jetstream(),
            StreamShape {
                name: &config.stream,
                prefix: &config.prefix,
                replicas: config.replicas,
                duplicate_window: Duration::from_secs(120),
                max_age: Duration::ZERO,
            },
        )
        .await?;
        Ok(Self {
            js: nats.jetstream().clone(),
            stream,
            subject: format!("{}.chain", config.prefix),
        })
    }

    /// Appends `entry` after whatever entry is last when it is written; returns its
    /// seq. Returns only after the stream acknowledged it.
    pub async fn append(&self, entry: NewEntry) -> Result<u64, ClusterError> {
        for attempt in 0..RETRIES {
            if attempt > 0 {
                super::escalations::backoff(attempt).await;
            }
            let tail = self.tail().await?;
            let (seq, prev, after) = match &tail {
                Some(tail) => (tail.seq + 1, tail.hash, tail.stream_seq),
                None => (1, EntryHash::GENESIS, 0),
            };
            let (stored, _) = audit::encode_entry(seq, &prev, entry.clone()).map_err(|error| {
                ClusterError::Corrupt {
                    what: "audit entry",
                    reason: error.to_string(),
                }
            })?;
            let stored = Bytes::from(stored);
            match put_expecting(&self.js, self.subject.clone(), stored.clone(), after).await {
                Ok(_) => {
                    tracing::debug!(seq, "audit entry appended");
                    return Ok(seq);
                }
                Err(Put::Conflict) => continue,
                Err(Put::Failed(error)) => {
                    // Stored or not? The tail says: our bytes there mean stored.
                    tracing::debug!(seq, %error, "audit append unanswered; reading the tail");
                    if let Ok(Some(now)) = self.tail().await {
                        if now.stored == stored {
                            return Ok(seq);
                        }
                    }
                    if attempt + 1 == RETRIES {
                        return Err(ClusterError::unavailable("audit append", error));
                    }
                }
            }
        }
        Err(ClusterError::Moved {
            key: self.subject.clone(),
        })
    }

    /// Reads the whole chain and checks it: every link, hash and signature, as
    /// `peerhub audit verify` does for a one-node store. The outer error is NATS
    /// failing; the inner one a broken chain.
    pub async fn verify(&self) -> Result<Result<VerifyReport, ChainBreak>, ClusterError> {
        let entries = self.read_all().await?;
        let anchor = Anchor {
            seq: 0,
            hash: EntryHash::GENESIS,
        };
        Ok(audit::verify_entries(
            anchor,
            entries
                .into_iter()
                .enumerate()
                .map(|(i, stored)| Ok::<_, String>((i as u64 + 1, stored))),
        ))
    }

    /// Every entry's stored bytes, in order, up to the tail as it was when the
    /// read began. A read that stalls or fails on the way (a server went away
    /// under its consumer) is started again for up to [`READ_DEADLINE`].
    async fn read_all(&self) -> Result<Vec<Vec<u8>>, ClusterError> {
        retry_unavailable(READ_DEADLINE, || async {
            let Some(tail) = self.tail().await? else {
                return Ok(Vec::new());
            };
            let read = read_range(
                &self.stream,
                &self.subject,
                0,
                tail.stream_seq,
                "audit read",
            );
            Ok(read
                .await?
                .into_iter()
                .map(|(_, _, payload)| payload.to_vec())
                .collect())
        })
        .await
    }

    /// The last entry, from the stream's leader; `None` for an empty chain.
    async fn tail(&self) -> Result<Option<Tail>, ClusterError> {
        let Some(message) = last_message(&self.stream, &self.subject, "audit tail").await? else {
            return Ok(None);
        };
        let (entry, _) =
            AuditEntry::parse(&message.payload).map_err(|reason| ClusterError::Corrupt {
                what: "the audit chain's last entry",
                reason: reason.to_string(),
            })?;
        Ok(Some(Tail {
            seq: entry.seq,
            hash: entry.hash,
            stream_seq: message.sequence,
            stored: message.payload,
        }))
    }
}
