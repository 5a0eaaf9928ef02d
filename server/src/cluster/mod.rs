//! Cluster building blocks on NATS JetStream (issue 18; design in docs/CLUSTER.md).
//!
//! Nothing here serves yet: the `[cluster]` keys are read and checked, and
//! `peerhub cluster check` prepares a NATS cluster, but a server given them
//! refuses to start until the hub is wired onto these primitives. Each is tested
//! against real nats-server processes (`tests/tests/integration/cluster_*.rs`):
//!
//! - [`lease`] — a named lease (a group's actor, the router) in a replicated
//!   JetStream key-value bucket: acquire, renew, release, expiry by a deadline in the
//!   value, and the holder's epoch, which only ever rises.
//! - [`log`] — a group's append-only log in a replicated file stream, fenced: every
//!   append carries the subject's expected last sequence, and a new owner writes a
//!   fence record first, so an owner that lost its lease can never append again.
//!   An append returns only after the stream's acknowledgement.
//! - [`directory`] — accounts, roles, grants, replay counters, invites, groups,
//!   members and the allow-list in one replicated bucket, with the sled store's
//!   methods and meaning; every read-modify-write a compare-and-set, so an invite
//!   is redeemed once and a counter accepted once however many nodes race.
//! - [`dedupe`] — exactly-once effects (an escalation's routing step): a message id
//!   within the stream's duplicate window, and a subject per step with "expect no
//!   message yet" after it.
//! - [`escalations`] — the escalation queue in a replicated bucket, every write a
//!   compare-and-set, with an index of the unresolved ones that a new router
//!   re-arms its deadlines from.
//! - [`snapshot`] — a group's state as of one log record, fenced by epoch, and
//!   the restore a node taking a group over runs: the snapshot and the events after.
//! - [`commands`] — a command for a group owned on another node, as a request to
//!   its owner; "nobody owns it" at once; recent answers kept for a retry.
//! - [`fanout`] — a group's events to the nodes with members in it, over core NATS,
//!   in order and gap-free: what the wire lost is read from the group's log.
//! - [`audit`] — every node's audit chain copied into a replicated stream, one
//!   chain per node and data folder, checked by the same verifier as the
//!   one-node chain; [`audit_ship`] copies this node's chain there in the
//!   background, rewrites and pruning included.
//!
//! - [`mirror`] — the directory's accounts, groups and invited lists followed
//!   into each node's sled store.
//! - [`replica`] — each node's sled store as a replica of the group logs: a
//!   commit's write set as one log record, applied in order on every node.
//! - [`routing`] — the router's deadlines enforced by one node at a time (the
//!   `router` lease), re-armed from the queue by a node taking over, each
//!   routing step's effects once per step.
//! - [`check`] — `peerhub cluster check`: each NATS server fit (version,
//!   JetStream), every stream and bucket made ready with the configured copies.
//! - [`erasure`], [`node_erasure`], [`revisions`] — a person's erasure across
//!   the cluster (`peerhub erase` on a running node): group logs rebased, the
//!   directory's records erased revision by revision with the overwriting
//!   message delete, and a record each node's mirror applies to its own store.
//!
//! Logs name subjects, keys, epochs and sequence numbers; never a payload.

pub mod audit;
pub mod audit_ship;
pub mod backup;
pub mod backup_file;
pub mod check;
pub mod commands;
pub mod dedupe;
pub mod directory;
pub mod erasure;
pub mod escalations;
pub mod expiry;
pub mod fanout;
pub mod lease;
pub mod log;
pub mod mirror;
pub mod node;
pub mod node_erasure;
pub mod owner;
pub mod presence;
pub mod rebase;
pub mod remote;
pub mod replica;
pub mod restore;
pub mod restored;
pub mod revisions;
pub mod router_log;
pub mod router_node;
pub mod routing;
pub mod session_end;
pub mod snapshot;
pub mod stores;
pub mod stream_snapshot;
pub mod trim;

use std::time::Duration;

use async_nats::jetstream;

/// The header naming the epoch (the lease's) under which a record was written.
pub const EPOCH_HEADER: &str = "Peerhub-Epoch";
/// The header naming a record's group sequence number.
pub const SEQ_HEADER: &str = "Peerhub-Seq";
/// The header naming a record's kind (`event` or `fence`).
pub const KIND_HEADER: &str = "Peerhub-Kind";
/// The header naming the stream sequence a record was expected to follow on its
/// subject (0 for the first).
pub const AFTER_HEADER: &str = "Peerhub-After";
/// The header naming the lease holder that wrote a record.
pub const HOLDER_HEADER: &str = "Peerhub-Holder";

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No NATS server could be reached.
    #[error("connecting to NATS: {0}")]
    Connect(String),
    /// A stream or bucket could not be created or opened.
    #[error("setting up {what}: {reason}")]
    Setup {
        /// The stream or bucket.
        what: String,
        /// The client's complaint.
        reason: String,
    },
    /// NATS did not answer in time or the connection failed; the operation may or
    /// may not have taken effect (callers retry with the same message id).
    #[error("NATS {op} failed: {reason}")]
    Unavailable {
        /// What was being done.
        op: &'static str,
        /// The client's complaint.
        reason: String,
    },
    /// Someone else holds the lease and its deadline has not passed.
    #[error("lease {key} is held (epoch {epoch}) until {deadline_ms}")]
    Held {
        /// The lease's key.
        key: String,
        /// The holder's epoch.
        epoch: u64,
        /// When it expires unless renewed (ms since the epoch, the writer's clock).
        deadline_ms: u64,
    },
    /// The lease was taken over (or released) since this holder last wrote it.
    #[error("lease {key} at epoch {epoch} is lost")]
    LeaseLost {
        /// The lease's key.
        key: String,
        /// The epoch that was lost.
        epoch: u64,
    },
    /// A newer owner has written to this group's log: this writer may never append
    /// again (it must acquire the lease anew and open a new writer).
    #[error("group log {subject} is fenced: epoch {epoch} is no longer the owner")]
    Fenced {
        /// The group's subject.
        subject: String,
        /// This writer's epoch.
        epoch: u64,
    },
    /// A compare-and-set found the key changed since it was read (another writer
    /// won): nothing was written; read again and re-apply the change.
    #[error("{key} was changed by another writer since it was read")]
    Moved {
        /// The key.
        key: String,
    },
    /// A stored value or header could not be decoded.
    #[error("unreadable {what}: {reason}")]
    Corrupt {
        /// What it was.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// This node's own store failed while applying the cluster's records.
    #[error("local store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A key or subject token has characters NATS does not allow.
    #[error("invalid name {0:?} (allowed: a-z, A-Z, 0-9, - and _)")]
    InvalidName(String),
}

impl ClusterError {
    pub(crate) fn unavailable(op: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            op,
            reason: error.to_string(),
        }
    }
}

/// A connection to a NATS cluster, with its JetStream context.
#[derive(Debug, Clone)]
pub struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Nats {
    /// Connects to any of `urls` (`nats://127.0.0.1:4222`), reconnecting to the
    /// others when one goes away. `timeout` bounds each JetStream request
    /// (including waiting for a publish's acknowledgement).
    pub async fn connect(
        urls: &[String],
        name: &str,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        Self::connect_options(urls, async_nats::ConnectOptions::new().name(name), timeout).await
    }

    /// Connects as `[cluster]` says: to any of its URLs, named after the node
    /// (and `role`: what the connection is for), with its credentials file and
    /// certificate authority when set.
    pub async fn connect_with(
        settings: &crate::config::ClusterSettings,
        role: &str,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        Self::connect_to(&settings.nats_urls, settings, role, timeout).await
    }

    /// [`Self::connect_with`], to `urls` only (one server, for a check of each).
    pub async fn connect_to(
        urls: &[String],
        settings: &crate::config::ClusterSettings,
        role: &str,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(path) = &settings.credentials_file {
            options = options.credentials_file(path).await.map_err(|error| {
                ClusterError::Connect(format!(
                    "cluster.credentials_file {}: {error}",
                    path.display()
                ))
            })?;
        }
        if let Some(path) = &settings.tls_ca_file {
            options = options
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        Self::connect_options(
            urls,
            options.name(format!("peerhub-{}-{role}", settings.node_name)),
            timeout,
        )
        .await
    }

    async fn connect_options(
        urls: &[String],
        options: async_nats::ConnectOptions,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let addrs = urls
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ClusterError::Connect(error.to_string()))?;
        let client = options
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .connect(addrs)
            .await
            .map_err(|error| ClusterError::Connect(error.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .ack_timeout(timeout)
            .build(client.clone());
        Ok(Self { client, js })
    }

    /// The plain NATS client (request/reply, fan-out subjects).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}

/// Whether a publish was refused because its expected last (subject) sequence did
/// not match: the client's `WrongLastSequence` (server code 10071), or the code a
/// clustered stream gives while an earlier publish with the same expectation is
/// still in flight (10164, "wrong last sequence", which the client files as other).
pub fn is_sequence_conflict(error: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    if error.kind() == jetstream::context::PublishErrorKind::WrongLastSequence {
        return true;
    }
    error
        .source()
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|error| {
            let code = error.error_code();
            code == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                || code.0 == WRONG_LAST_SEQUENCE_IN_FLIGHT
        })
}

/// nats-server's JSStreamWrongLastSequenceConstantErr.
const WRONG_LAST_SEQUENCE_IN_FLIGHT: u64 = 10164;

/// Checks that `name` is one NATS subject token / KV key segment.
pub(crate) fn check_token(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match ok {
        true => Ok(()),
        false => Err(ClusterError::InvalidName(name.to_string())),
    }
}

/// Why a compare-and-set publish did not write.
#[derive(Debug)]
pub(crate) enum Put {
    /// Someone wrote the subject since the expected sequence.
    Conflict,
    /// NATS failed (the write may or may not have happened).
    Failed(jetstream::context::PublishError),
}

/// Publishes `value` on `subject` if the subject's last stream sequence is
/// `expected` (0: nothing on it yet), and waits for the stream's
/// acknowledgement; returns the new message's sequence. Both of the server's
/// answers for a moved sequence count as a conflict ([`is_sequence_conflict`]).
pub(crate) async fn put_expecting(
    js: &jetstream::Context,
    subject: String,
    value: bytes::Bytes,
    expected: u64,
) -> Result<u64, Put> {
    let message = || {
        jetstream::message::PublishMessage::build()
            .payload(value.clone())
            .expected_last_subject_sequence(expected)
    };
    match publish_acked(js, &subject, message).await {
        Ok(sequence) => Ok(sequence),
        Err(error) if is_sequence_conflict(&error) => Err(Put::Conflict),
        Err(error) => Err(Put::Failed(error)),
    }
}

/// Publishes the message `message` builds on `subject` and waits for the
/// stream's acknowledgement; returns the message's sequence. A publish that found
/// no stream stored nothing, so it is sent again for a moment: the server it
/// reached may not know a stream just created, or one whose assignment is still
/// travelling ([`STREAM_NOT_FOUND_GRACE`]).
pub(crate) async fn publish_acked(
    js: &jetstream::Context,
    subject: &str,
    message: impl Fn() -> jetstream::message::PublishMessage,
) -> Result<u64, jetstream::context::PublishError> {
    publish_ack(js, subject, message)
        .await
        .map(|ack| ack.sequence)
}

/// [`publish_acked`], returning the whole acknowledgement (whether the stream
/// took it for a duplicate, too).
pub(crate) async fn publish_ack(
    js: &jetstream::Context,
    subject: &str,
    message: impl Fn() -> jetstream::message::PublishMessage,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    let deadline = tokio::time::Instant::now() + STREAM_NOT_FOUND_GRACE;
    loop {
        let outcome = match js.send_publish(subject.to_string(), message()).await {
            Ok(ack) => ack.await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(ack) => return Ok(ack),
            Err(error)
                if error.kind() == jetstream::context::PublishErrorKind::StreamNotFound
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// How long a publish that found no stream is tried again: a stream or bucket
/// just created reaches every server's view a moment later.
const STREAM_NOT_FOUND_GRACE: Duration = Duration::from_secs(5);

/// The last message on `subject`, read from the stream's leader (a replica may
/// lag); `None` if the subject has none. `op` names the read in errors.
/// `stream`'s info, asked of its leader now (`op` names the read in an error).
pub(crate) async fn stream_info(
    js: &jetstream::Context,
    stream: &str,
    op: &'static str,
) -> Result<jetstream::stream::Info, ClusterError> {
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|error| ClusterError::unavailable(op, error))?;
    Ok(handle
        .info()
        .await
        .map_err(|error| ClusterError::unavailable(op, error))?
        .clone())
}

pub(crate) async fn last_message(
    stream: &jetstream::stream::Stream,
    subject: &str,
    op: &'static str,
) -> Result<Option<jetstream::message::StreamMessage>, ClusterError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message)),
        Err(error)
            if matches!(
                error.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(ClusterError::unavailable(op, error)),
    }
}

/// The longest wait for the next message of a read before it counts as stalled.
pub(crate) const READ_STALL: Duration = Duration::from_secs(5);

/// How long a read that failed or stalled is started again.
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `attempt` again (after 200 ms) while it fails with
/// [`ClusterError::Unavailable`] — a server went away under a consumer, a leader
/// is being elected — for up to `within`; any other outcome is returned as it is.
pub(crate) async fn retry_unavailable<T, F, Fut>(
    within: Duration,
    mut attempt: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match attempt().await {
            Err(ClusterError::Unavailable { op, reason })
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(op, %reason, "started again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            outcome => return outcome,
        }
    }
}

/// The next of a consumer's `messages`, with its stream sequence and how many
/// messages are still pending after it. [`ClusterError::Unavailable`] (naming
/// `op`) when the read fails, ends or stalls for [`READ_STALL`]: the callers run
/// under [`retry_unavailable`].
pub(crate) async fn next_message<S, E>(
    messages: &mut S,
    op: &'static str,
) -> Result<(jetstream::Message, u64, u64), ClusterError>
where
    S: futures_util::Stream<Item = Result<jetstream::Message, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt as _;
    let next = tokio::time::timeout(READ_STALL, messages.next())
        .await
        .map_err(|_| ClusterError::unavailable(op, "timed out"))?;
    let Some(message) = next else {
        return Err(ClusterError::unavailable(op, "the consumer ended"));
    };
    let message = message.map_err(|error| ClusterError::unavailable(op, error))?;
    let (stream_seq, pending) = {
        let info = message
            .info()
            .map_err(|error| ClusterError::unavailable(op, error))?;
        (info.stream_sequence, info.pending)
    };
    Ok((message, stream_seq, pending))
}

/// One message of a [`read_range`]: its stream sequence, headers and payload.
pub(crate) type RangeMessage = (u64, async_nats::HeaderMap, bytes::Bytes);

/// Every message on `subject` after stream sequence `after` up to and including
/// `until` (the subject's tail when the caller looked), in order: an ordered
/// consumer. [`ClusterError::Unavailable`] (naming `op`) if it fails or stalls
/// for [`READ_STALL`]; run it under [`retry_unavailable`].
pub(crate) async fn read_range(
    stream: &jetstream::stream::Stream,
    subject: &str,
    after: u64,
    until: u64,
    op: &'static str,
) -> Result<Vec<RangeMessage>, ClusterError> {
    if until <= after {
        return Ok(Vec::new());
    }
    let deliver_policy = match after {
        0 => jetstream::consumer::DeliverPolicy::All,
        _ => jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        },
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|error| ClusterError::unavailable(op, error))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| ClusterError::unavailable(op, error))?;
    let mut out = Vec::new();
    loop {
        let (message, stream_seq, _) = next_message(&mut messages, op).await?;
        out.push((
            stream_seq,
            message.headers.clone().unwrap_or_default(),
            message.payload.clone(),
        ));
        if stream_seq >= until {
            return Ok(out);
        }
    }
}

/// Whether a key-value message is a delete or purge marker.
pub(crate) fn is_removed(headers: &async_nats::HeaderMap) -> bool {
    headers
        .get("KV-Operation")
        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
}

/// Opens the key-value bucket `bucket` (file storage, one value per key,
/// `replicas` copies), creating it if it does not exist, and returns its stream:
/// peerhub reads a bucket from its stream's leader ([`last_message`]) and writes
/// it by compare-and-set ([`put_expecting`]), not through the client's bucket
/// handle, whose reads may come from a lagging replica.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<jetstream::stream::Stream, ClusterError> {
    open_bucket_made(js, bucket, replicas, None).await
}

/// Opens the key-value bucket `bucket` as [`open_bucket`] does, but one made
/// (when missing) to allow the message delete that overwrites a stored value
/// ([`revisions::erase_key`]): a bucket the client makes denies message deletes,
/// so a value it replaces or deletes stays in the stream's files, and JetStream
/// cannot lift that on an existing stream. Made with the key-value conventions
/// (stream `KV_<bucket>`, subjects `$KV.<bucket>.>`, rollups allowed, `history`
/// values per key, discard new, direct gets, file storage, `replicas` copies)
/// and `deny_delete: false`; the client's key-value API binds to it as to any
/// bucket. A bucket made earlier is opened as it is: `peerhub cluster check`
/// reports one that denies deletes ([`denies_erasure`]).
pub(crate) async fn open_erasable_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    history: i64,
) -> Result<jetstream::stream::Stream, ClusterError> {
    open_bucket_made(js, bucket, replicas, Some(history)).await
}

/// The stream an erasable bucket is made with ([`open_erasable_bucket`]).
pub(crate) fn erasable_bucket_config(
    bucket: &str,
    replicas: usize,
    history: i64,
) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history,
        storage: file_storage(),
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: false,
        deny_purge: false,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Why a bucket that must allow erasure is not fit, if it is not: one made
/// denying message deletes keeps every replaced value's bytes.
pub(crate) fn denies_erasure(config: &jetstream::stream::Config) -> Option<String> {
    config.deny_delete.then(|| {
        "denies message deletes, so a replaced or erased value stays in its files \
         (made by an older peerhub or by hand): remove it and let peerhub make it again"
            .to_string()
    })
}

async fn open_bucket_made(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    erasable: Option<i64>,
) -> Result<jetstream::stream::Stream, ClusterError> {
    check_token(bucket)?;
    let setup = |error: &dyn std::fmt::Display| ClusterError::Setup {
        what: format!("bucket {bucket}"),
        reason: error.to_string(),
    };
    // Nodes starting at once race to create the bucket, and a server may not
    // know a stream another server just created: both pass within moments, so
    // the whole opening is tried again for a while before it counts as failed.
    let until = tokio::time::Instant::now() + STREAM_NOT_FOUND_GRACE;
    let mut create_error = None;
    loop {
        let opened = async {
            if js.get_key_value(bucket).await.is_err() {
                let made = match erasable {
                    None => js
                        .create_key_value(jetstream::kv::Config {
                            bucket: bucket.to_string(),
                            history: 1,
                            storage: file_storage(),
                            num_replicas: replicas,
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                        .map_err(|error| error.to_string()),
                    Some(history) => js
                        .create_stream(erasable_bucket_config(bucket, replicas, history))
                        .await
                        .map(drop)
                        .map_err(|error| error.to_string()),
                };
                // Perhaps made meanwhile by another node: opened below.
                made?;
            }
            Ok(())
        };
        if let Err(error) = opened.await {
            create_error = Some(error);
        }
        match js.get_stream(format!("KV_{bucket}")).await {
            Ok(stream) => return Ok(stream),
            Err(error) if tokio::time::Instant::now() < until => {
                tracing::debug!(bucket, %error, "opening a bucket; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Why it could not be made says more than that it is not there.
            Err(error) => return Err(setup(&create_error.unwrap_or(error.to_string()))),
        }
    }
}

/// A stored value as JSON. Our values are plain data: serialising them cannot
/// fail (an empty value would then be refused as corrupt when read).
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A stored JSON value; [`ClusterError::Corrupt`] naming `what` if it does not
/// parse.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ClusterError> {
    serde_json::from_slice(bytes).map_err(|error| ClusterError::Corrupt {
        what,
        reason: error.to_string(),
    })
}

/// The stream storage every peerhub stream and bucket uses.
pub(crate) fn file_storage() -> jetstream::stream::StorageType {
    jetstream::stream::StorageType::File
}

/// What a peerhub stream is: its name, its subjects (`<prefix>.>`), copies, the
/// window in which a repeated message id is taken for a duplicate, and how long
/// records are kept (zero: for ever).
pub(crate) struct StreamShape<'a> {
    pub name: &'a str,
    pub prefix: &'a str,
    pub replicas: usize,
    pub duplicate_window: Duration,
    pub max_age: Duration,
}

/// Opens the file-storage stream `shape` describes, creating it if it does not
/// exist.
pub(crate) async fn open_stream(
    js: &jetstream::Context,
    shape: StreamShape<'_>,
) -> Result<jetstream::stream::Stream, ClusterError> {
    check_token(shape.name)?;
    js.get_or_create_stream(jetstream::stream::Config {
        name: shape.name.to_string(),
        subjects: vec![format!("{}.>", shape.prefix)],
        storage: file_storage(),
        num_replicas: shape.replicas,
        duplicate_window: shape.duplicate_window,
        max_age: shape.max_age,
        ..Default::default()
    })
    .await
    .map_err(|error| ClusterError::Setup {
        what: format!("stream {}", shape.name),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        assert!(check_token("group-1").is_ok());
        assert!(check_token("router").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "é"] {
            assert!(
                matches!(check_token(bad), Err(ClusterError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }
}
