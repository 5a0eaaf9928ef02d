//! Cluster mode's directory mirror (docs/CLUSTER.md §7, B): each node follows the
//! directory bucket and applies what other nodes write to its own sled store, so
//! sessions and actors keep reading accounts, roles, grants, groups and the
//! virtual groups' invited lists synchronously from sled.
//!
//! What is mirrored: `account.*` (roles, grants, staff names), `group.*` (group
//! settings), `allowed.*` (who was invited to a virtual group) and `push.*`
//! (staff's Web Push subscriptions, which the router's leader sends to). What is not,
//! and why: `counter.*` (a replay counter is checked in the bucket itself, by
//! compare-and-set, on every command: a copy would only ever be stale), `invite.*`
//! (an invite is redeemed in the bucket, by compare-and-set) and `member.*` (member
//! records travel with their group's log, `super::replica`).
//!
//! `erasure.*` (an erasure's record, naming the key's pseudonym) is applied to
//! this node's store as one node's erasure does (`super::node_erasure`): the
//! erasure removed the key's account, counter, allow-list places and push
//! subscriptions from the bucket with message deletes, which make no watch
//! event, so the record is what tells each node. Every record not applied here
//! yet is applied when the mirror starts (a node down during the erasure).
//! `session_end.*` (an ephemeral session's end, naming its participants'
//! pseudonyms) pseudonymises them in this node's audit chain when read
//! (`super::session_end`).
//!
//! The mirror is an ordered consumer on the bucket's stream from the store's mark
//! (the stream sequence last applied, a `meta` entry) onwards; the bucket keeps
//! at most two values per key (the latest, and for a moment the one it
//! replaced), so every key changed since the mark is delivered in order and
//! ends at its latest value. Each value is applied, then the mark moves; applying twice writes the
//! same record again. A consumer that fails (a server went away), or that stays
//! quiet while the bucket holds more than the mark (its server died under it), is
//! made again from the mark. An unreadable value, or the removal of a group (groups are never
//! removed), stops the mirror with an error instead of being skipped: a skipped
//! revocation would leave a node trusting a key it should not. Logs name keys'
//! kinds and sequences, never a record.

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::directory::{
    parse_key, Directory, ErasureRecord, SessionEndRecord, ACCOUNT, ALLOWED, ERASURE, GROUP, PUSH,
    SESSION_END,
};
use super::{from_json, is_removed, ClusterError, READ_STALL};
use crate::store::records::{AccountRecord, GroupRecord};
use crate::store::Store;
use peerhub_protocol::GroupId;

/// The mark's name in the store.
pub const MIRROR: &str = "directory";

/// How long the mirror waits before making its consumer again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// What a running hub gives the mirror to apply erasures' records with
/// ([`super::node_erasure`]): the chain its tasks append through, and its clock.
#[derive(Debug, Clone, Copy)]
pub struct NodeParts<'a> {
    /// The hub's audit chain.
    pub audit: &'a crate::audit::AuditLog,
    /// The hub's clock.
    pub clock: &'a crate::clock::Clock,
}

/// Mirrors `directory` into `store` until `stop`; returns an error only for a value
/// it must not skip (see the module). For a store no hub uses: an erasure's
/// record is applied through the store's own audit chain, opened for it
/// ([`run_for_hub`] is a running hub's).
pub async fn run(
    directory: &Directory,
    store: &Store,
    stop: CancellationToken,
) -> Result<(), ClusterError> {
    run_for_hub(directory, store, None, stop).await
}

/// [`run`], applying erasures' records through a running hub's chain and clock
/// (`hub`): first every record not applied on this node yet, then each as it
/// comes. An erasure that fails on this node (NATS away while its copies catch
/// up, say) does not stop the mirror: it is logged and tried again while the
/// mirror is quiet, at most once per [`ERASURE_RETRY`], and at the next start.
pub async fn run_for_hub(
    directory: &Directory,
    store: &Store,
    hub: Option<NodeParts<'_>>,
    stop: CancellationToken,
) -> Result<(), ClusterError> {
    let mut owed = Owed::default();
    while !stop.is_cancelled() {
        owed.try_now(directory, store, hub).await;
        match follow(directory, store, hub, &mut owed, &stop).await {
            Ok(()) => return Ok(()),
            Err(error @ (ClusterError::Corrupt { .. } | ClusterError::Store(_))) => {
                return Err(error)
            }
            Err(error) => {
                tracing::warn!(%error, "directory mirror: following again");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
    Ok(())
}

/// How often erasures that failed on this node are tried again while it runs.
pub const ERASURE_RETRY: Duration = Duration::from_secs(60);

/// Whether erasures' records are owed to this node's store (not all read yet,
/// or one failed), and when they were last tried.
#[derive(Debug)]
struct Owed {
    owed: bool,
    tried: Option<tokio::time::Instant>,
}

impl Default for Owed {
    fn default() -> Self {
        Self {
            owed: true,
            tried: None,
        }
    }
}

impl Owed {
    /// Applies every record not applied here yet, if any is owed and the last
    /// try is [`ERASURE_RETRY`] ago (or there was none).
    async fn try_now(&mut self, directory: &Directory, store: &Store, hub: Option<NodeParts<'_>>) {
        let due = self
            .tried
            .is_none_or(|tried| tried.elapsed() >= ERASURE_RETRY);
        if !self.owed || !due {
            return;
        }
        self.tried = Some(tokio::time::Instant::now());
        let audit = hub.map(|h| h.audit);
        self.owed = match super::node_erasure::apply_all(directory, store, audit, now(hub)).await {
            Ok(failed) => failed > 0,
            Err(error) => {
                tracing::warn!(%error, "directory mirror: erasures not read yet");
                true
            }
        };
    }
}

fn now(hub: Option<NodeParts<'_>>) -> u64 {
    hub.map_or_else(
        || crate::clock::Clock::system().now_ms(),
        |h| h.clock.now_ms(),
    )
}

/// One consumer's life: from the mark, until `stop` or a failure.
async fn follow(
    directory: &Directory,
    store: &Store,
    hub: Option<NodeParts<'_>>,
    owed: &mut Owed,
    stop: &CancellationToken,
) -> Result<(), ClusterError> {
    let mark = store.mirror_applied(MIRROR)?;
    let deliver_policy = if mark == 0 {
        jetstream::consumer::DeliverPolicy::All
    } else {
        jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: mark + 1,
        }
    };
    let client = directory.stream_client();
    let consumer = directory
        .stream()
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy,
            replay_policy: jetstream::consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|error| ClusterError::unavailable("directory mirror", error))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| ClusterError::unavailable("directory mirror", error))?;
    let prefix = format!("$KV.{}.", directory.bucket());
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = tokio::time::timeout(READ_STALL, messages.next()) => next,
        };
        // Quiet for a while: fine if there is nothing new; but a consumer whose
        // server died can go quiet for good, so if the bucket holds more than the
        // mark, follow again from the mark.
        let Ok(next) = next else {
            owed.try_now(directory, store, hub).await;
            let mark = store.mirror_applied(MIRROR)?;
            let last = directory.stream_last_sequence().await?;
            if last > mark {
                return Err(ClusterError::unavailable(
                    "directory mirror",
                    "the consumer stalled behind the bucket",
                ));
            }
            continue;
        };
        let message = next
            .ok_or_else(|| ClusterError::unavailable("directory mirror", "the consumer ended"))?
            .map_err(|error| ClusterError::unavailable("directory mirror", error))?;
        let seq = message
            .info()
            .map_err(|error| ClusterError::unavailable("directory mirror", error))?
            .stream_sequence;
        let key = message.subject.strip_prefix(prefix.as_str()).unwrap_or("");
        let removed = message.headers.as_ref().is_some_and(is_removed);
        if key.starts_with(ERASURE) && !removed {
            if !erasure(directory, store, hub, &message.payload, seq).await {
                owed.owed = true;
            }
        } else if key.starts_with(SESSION_END) {
            if !removed {
                let record: SessionEndRecord = from_json("session end record", &message.payload)?;
                super::session_end::apply(store, hub.map(|h| h.audit), &record, now(hub))?;
            }
        } else {
            apply(store, key, removed, &message.payload)?;
        }
        store.put_mirror_applied(MIRROR, seq)?;
    }
}

/// Applies an erasure's record (revision `seq`) to this node's store; `false`
/// if it failed (logged, and tried again: [`run_for_hub`]).
async fn erasure(
    directory: &Directory,
    store: &Store,
    hub: Option<NodeParts<'_>>,
    value: &[u8],
    seq: u64,
) -> bool {
    let applied = async {
        let record: ErasureRecord = from_json("erasure record", value)?;
        super::node_erasure::apply(
            directory,
            store,
            hub.map(|h| h.audit),
            &record,
            seq,
            now(hub),
        )
        .await
    };
    match applied.await {
        Ok(_) => true,
        Err(error) => {
            tracing::error!(%error, "an erasure could not be applied on this node; tried again");
            false
        }
    }
}

/// Applies one key's latest value (or its removal) to `store`.
fn apply(store: &Store, key: &str, removed: bool, value: &[u8]) -> Result<(), ClusterError> {
    if let Some(hex_key) = key.strip_prefix(ACCOUNT) {
        let who = parse_key(hex_key, "directory account key")?;
        if removed {
            store.remove_account(&who)?;
        } else {
            let account: AccountRecord = from_json("directory account", value)?;
            store.put_account(&who, &account)?;
        }
    } else if let Some(id) = key.strip_prefix(GROUP) {
        if removed {
            return Err(ClusterError::Corrupt {
                what: "directory group",
                reason: format!("group {id} was removed, and groups never are"),
            });
        }
        let group: GroupRecord = from_json("directory group", value)?;
        if group.id.as_str() != id {
            return Err(ClusterError::Corrupt {
                what: "directory group",
                reason: format!("the record under {id} is another group's"),
            });
        }
        store.put_group(&group)?;
    } else if let Some(rest) = key.strip_prefix(ALLOWED) {
        let (group, hex_key) = rest.split_once('.').ok_or_else(|| ClusterError::Corrupt {
            what: "directory invited-list key",
            reason: "no key after the group".into(),
        })?;
        let group = GroupId::parse(group).map_err(|error| ClusterError::Corrupt {
            what: "directory invited-list key",
            reason: error.to_string(),
        })?;
        let who = parse_key(hex_key, "directory invited-list key")?;
        if removed {
            store.disallow_member(&group, &who)?;
        } else {
            store.allow_member(&group, &who)?;
        }
    } else if let Some(rest) = key.strip_prefix(PUSH) {
        let (hex_key, endpoint_hash) =
            rest.split_once('.').ok_or_else(|| ClusterError::Corrupt {
                what: "directory push subscription key",
                reason: "no endpoint after the key".into(),
            })?;
        let who = parse_key(hex_key, "directory push subscription key")?;
        if removed {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(endpoint_hash, &mut hash).map_err(|error| {
                ClusterError::Corrupt {
                    what: "directory push subscription key",
                    reason: error.to_string(),
                }
            })?;
            store.remove_push_subscription_hashed(&who, &hash)?;
        } else {
            let subscription: crate::store::records::PushSubscriptionRecord =
                from_json("directory push subscription", value)?;
            store.put_push_subscription(&who, &subscription)?;
        }
    }
    // counter.*, invite.*, member.*: not mirrored (see the module); erasure.*:
    // applied by `erasure`.
    Ok(())
}
