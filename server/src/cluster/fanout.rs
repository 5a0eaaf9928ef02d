//! Event fan-out between nodes (docs/CLUSTER.md §5): a group's owner publishes
//! each event on core NATS after the log acknowledged it, and every node with
//! members online in the group follows it with an [`EventFeed`], which hands its
//! events on in order, each once, with no gap.
//!
//! Core NATS may drop a message (a slow consumer, a reconnect), so the feed never
//! trusts it alone: an event ahead of the next expected seq means some were missed,
//! and the feed reads them from the group's log (where every published event
//! already is: publishing follows the append's acknowledgement) before going on; a
//! quiet spell ([`EventFeed::next`]'s `idle`) makes it look at the log's tail, so a
//! dropped *last* event is found too. Repeats are dropped by seq.
//!
//! Subject `peerhub.ev.<group>`; headers `Peerhub-Seq` (the group seq) and
//! `Peerhub-Stream` (the record's log stream sequence, so a gap is read from
//! there on, not from the log's start). Logs name groups and seqs, never payloads.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::log::{GroupLogs, LogRecord, RecordKind};
use super::{check_token, ClusterError, Nats, SEQ_HEADER};

/// The header naming a published event's log stream sequence.
pub const STREAM_HEADER: &str = "Peerhub-Stream";

/// The subject a group's events are published on.
pub fn subject(group: &str) -> Result<String, ClusterError> {
    check_token(group)?;
    Ok(format!("peerhub.ev.{group}"))
}

/// Publishes an acknowledged event (core NATS: at most once; feeds fill gaps from
/// the log).
pub async fn publish(nats: &Nats, group: &str, record: &LogRecord) -> Result<(), ClusterError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(SEQ_HEADER, record.seq.to_string().as_str());
    headers.insert(STREAM_HEADER, record.stream_seq.to_string().as_str());
    nats.client()
        .publish_with_headers(subject(group)?, headers, record.payload.clone())
        .await
        .map_err(|error| ClusterError::unavailable("event publish", error))
}

/// A node's view of one group's events, from a given seq on.
#[derive(Debug)]
pub struct EventFeed {
    group: String,
    logs: GroupLogs,
    subscriber: async_nats::Subscriber,
    /// The seq of the last event queued (or handed on, once `ready` is empty).
    queued: u64,
    /// Its log stream sequence (0: read gaps from the log's start).
    queued_stream: u64,
    /// Events in order, waiting to be handed on.
    ready: VecDeque<LogRecord>,
}

impl EventFeed {
    /// Follows `group` after seq `after` (whose stream sequence is `after_stream`,
    /// or 0 if unknown). Subscribes first, then hands on what the log holds after
    /// `after`, so nothing published in between is missed.
    pub async fn follow(
        nats: &Nats,
        logs: &GroupLogs,
        group: &str,
        after: u64,
        after_stream: u64,
    ) -> Result<Self, ClusterError> {
        let subscriber = nats
            .client()
            .subscribe(subject(group)?)
            .await
            .map_err(|error| ClusterError::unavailable("event subscribe", error))?;
        let mut feed = Self {
            group: group.to_string(),
            logs: logs.clone(),
            subscriber,
            queued: after,
            queued_stream: after_stream,
            ready: VecDeque::new(),
        };
        feed.fill_from_log().await?;
        Ok(feed)
    }

    /// The next event, in order, each once. Waits for one; after `idle` without a
    /// message it looks at the log for events whose messages were lost.
    pub async fn next(&mut self, idle: Duration) -> Result<LogRecord, ClusterError> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Ok(record);
            }
            match tokio::time::timeout(idle, self.subscriber.next()).await {
                Ok(Some(message)) => {
                    let seq = header_u64(&message, SEQ_HEADER)?;
                    let stream_seq = header_u64(&message, STREAM_HEADER)?;
                    if seq <= self.queued {
                        continue; // a repeat
                    }
                    if seq == self.queued + 1 {
                        self.queued = seq;
                        self.queued_stream = stream_seq;
                        self.ready.push_back(LogRecord {
                            seq,
                            stream_seq,
                            epoch: 0,
                            kind: RecordKind::Event,
                            holder: String::new(),
                            msg_id: String::new(),
                            payload: message.payload,
                        });
                    } else {
                        tracing::debug!(
                            group = %self.group,
                            expected = self.queued + 1,
                            got = seq,
                            "events missed on the wire; reading them from the log"
                        );
                        self.fill_from_log().await?;
                    }
                }
                Ok(None) => {
                    return Err(ClusterError::unavailable(
                        "event feed",
                        "the subscription ended",
                    ))
                }
                Err(_) => self.fill_from_log().await?,
            }
        }
    }

    /// Queues every event the log holds after the last one queued.
    async fn fill_from_log(&mut self) -> Result<(), ClusterError> {
        let records = self
            .logs
            .read_since(&self.group, self.queued_stream)
            .await?;
        for record in records {
            if record.kind != RecordKind::Event || record.seq <= self.queued {
                continue;
            }
            if record.seq != self.queued + 1 {
                return Err(ClusterError::Corrupt {
                    what: "group log",
                    reason: format!("expected seq {}, found {}", self.queued + 1, record.seq),
                });
            }
            self.queued = record.seq;
            self.queued_stream = record.stream_seq;
            self.ready.push_back(record);
        }
        Ok(())
    }
}

fn header_u64(message: &async_nats::Message, name: &'static str) -> Result<u64, ClusterError> {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .and_then(|value| value.as_str().parse::<u64>().ok())
        .ok_or(ClusterError::Corrupt {
            what: "event header",
            reason: format!("{name} missing or not a number"),
        })
}
