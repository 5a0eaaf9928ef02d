//! Erasing every stored revision of a bucket's keys (docs/CLUSTER.md §8,
//! "Erase"): each message on the keys' subjects — values, older values still
//! kept, delete markers — goes with JetStream's message delete, which overwrites
//! the message's bytes in every copy's files. A key-value delete or purge would
//! only add a marker (or drop the messages unwritten), and the old values' bytes
//! would stay in the stream's files. Only a bucket made to allow message deletes
//! takes it (`super::open_erasable_bucket`).
//!
//! Each server's Raft log keeps the bytes until the server compacts it, which no
//! client can force. Logs name counts, never a key.

use std::collections::BTreeMap;

use async_nats::jetstream;

use super::{retry_unavailable, ClusterError, READ_DEADLINE};

/// The stream sequence of every message on `filter` (a subject, wildcards
/// allowed), by subject, in order. Started again for up to [`READ_DEADLINE`]
/// when it stalls or fails on the way.
pub(crate) async fn sequences(
    stream: &jetstream::stream::Stream,
    client: &async_nats::Client,
    filter: &str,
) -> Result<BTreeMap<String, Vec<u64>>, ClusterError> {
    retry_unavailable(READ_DEADLINE, || sequences_once(stream, client, filter)).await
}

async fn sequences_once(
    stream: &jetstream::stream::Stream,
    client: &async_nats::Client,
    filter: &str,
) -> Result<BTreeMap<String, Vec<u64>>, ClusterError> {
    const OP: &str = "revision listing";
    let consumer = stream
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter.to_string(),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            replay_policy: jetstream::consumer::ReplayPolicy::Instant,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|error| ClusterError::unavailable(OP, error))?;
    let mut found: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(found);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| ClusterError::unavailable(OP, error))?;
    loop {
        let (message, seq, pending) = super::next_message(&mut messages, OP).await?;
        found
            .entry(message.subject.to_string())
            .or_default()
            .push(seq);
        if pending == 0 {
            return Ok(found);
        }
    }
}

/// Erases every message on `filter` (see the module), or every one but the
/// newest of each subject when `keep_latest`; returns how many this call
/// erased (a message already gone counts as erased, not counted).
pub(crate) async fn erase_key(
    stream: &jetstream::stream::Stream,
    client: &async_nats::Client,
    filter: &str,
    keep_latest: bool,
) -> Result<u64, ClusterError> {
    let mut doomed = Vec::new();
    for (_, mut seqs) in sequences(stream, client, filter).await? {
        if keep_latest {
            seqs.pop();
        }
        doomed.extend(seqs);
    }
    erase_messages(stream, &doomed).await
}

/// Erases the messages at `seqs` with the message delete that overwrites; a
/// message already gone counts as erased. Returns how many this call erased.
pub(crate) async fn erase_messages(
    stream: &jetstream::stream::Stream,
    seqs: &[u64],
) -> Result<u64, ClusterError> {
    /// JetStream's "no message found".
    const NO_MESSAGE: u64 = 10037;
    let mut erased = 0;
    for &seq in seqs {
        match stream.delete_message(seq).await {
            Ok(_) => erased += 1,
            Err(error) => match error.kind() {
                jetstream::stream::DeleteMessageErrorKind::JetStream(js)
                    if js.code() == 404 || js.error_code().0 == NO_MESSAGE => {}
                _ => return Err(ClusterError::unavailable("message erase", error)),
            },
        }
    }
    if erased > 0 {
        tracing::debug!(erased, "stored revisions erased");
    }
    Ok(erased)
}
