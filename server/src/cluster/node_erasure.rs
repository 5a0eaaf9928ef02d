//! An erasure's part on each node (docs/CLUSTER.md §8, "Erase"): what one
//! node's `peerhub erase` does to its own store, applied by every node of the
//! cluster from the erasure's record in the directory (`erasure.<pseudonym>`,
//! [`super::directory::ErasureRecord`]).
//!
//! The record names the key's audit pseudonym, never the key: a node finds the
//! key by computing the pseudonym of every key its store holds
//! ([`crate::store::Store::keys_held`], and the keys its audit chain names).
//! Then, in order:
//!
//! 1. every group copy it holds and does not serve is brought up to its log
//!    (`super::replica::catch_up`): the group part has already written the
//!    tombstones and rebased the log, so a copy behind the rebase is rebuilt
//!    from the snapshot and the words leave its trees;
//! 2. the one-node erasure ([`crate::erase::erase_key_in`], the same code
//!    `peerhub erase` runs) but for the groups' events and member records,
//!    which the copies now hold as the logs do ([`Scope::OutsideGroupLogs`]:
//!    writing them here would make a copy differ from its log, and a node
//!    applying the erasure late would erase what the person wrote since): its
//!    co-produced records' entries, the mirror's copies of its account, replay
//!    counter, allow-list places, redeemed invites and push subscriptions (the
//!    directory's were erased by message deletes, which make no watch event),
//!    and this node's audit chain pseudonymised, with an `admin.erase` entry;
//! 3. the store flushed and compacted, so the erased bytes leave the folder.
//!
//! Applied once per record revision (a `meta` mark, `mirror_applied/erasure/<pseudonym>`):
//! the mirror applies a record when it reads it and, at its start, every
//! record not marked yet (a node down during the erasure, or stopped between
//! applying and marking); one that failed here is tried again while the node
//! runs (`super::mirror::ERASURE_RETRY`). Applying again erases nothing more. An erasure asked
//! again later (its record written again) is applied again. A node holding none
//! of the key's data marks it and changes nothing.
//!
//! Logs name pseudonyms and counts, never a key or content.

use peerhub_protocol::PublicKey;
use serde::Serialize;

use super::directory::{Directory, ErasureRecord};
use super::ClusterError;
use crate::audit::{AuditLog, Pseudonym};
use crate::erase::{self, EraseError, ErasureReport, Scope};
use crate::store::{Store, StoreError};

/// What a node's part did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NodeErased {
    /// Applied earlier (this revision or a later one).
    AlreadyApplied,
    /// No key this node holds has the pseudonym: nothing to erase here.
    NothingHeld,
    /// Erased: the one-node erasure's report.
    Erased(Box<ErasureReport>),
    /// Failed on this node (the reason names no key); the mirror applies the
    /// record again at the next start, and asking again retries it.
    Failed {
        /// Why.
        error: String,
    },
}

/// Serialises applications on this process (the mirror and an operator's
/// request may meet on the same record).
static APPLYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The mark of a record's application.
fn mark(pseudonym: &str) -> String {
    format!("erasure/{pseudonym}")
}

/// Applies the erasure `record` (at directory revision `revision`) to `store`,
/// at `now_ms` (see the module), the key found from the pseudonym. `audit`:
/// the chain every task of this node appends through; `None` only for a store
/// no hub uses, whose chain is opened here.
pub async fn apply(
    directory: &Directory,
    store: &Store,
    audit: Option<&AuditLog>,
    record: &ErasureRecord,
    revision: u64,
    now_ms: u64,
) -> Result<NodeErased, ClusterError> {
    let _one_at_a_time = APPLYING.lock().await;
    let mark = mark(&record.pseudonym);
    if store.mirror_applied(&mark)? >= revision {
        return Ok(NodeErased::AlreadyApplied);
    }
    let seed = store.hub_signing_seed()?;
    let Some(key) = find_key(store, &seed, &record.pseudonym)? else {
        store.put_mirror_applied(&mark, revision)?;
        tracing::info!(pseudonym = %record.pseudonym, "an erasure holds nothing on this node");
        return Ok(NodeErased::NothingHeld);
    };
    let report = erase_here(directory, store, audit, &key, now_ms).await?;
    store.put_mirror_applied(&mark, revision)?;
    store.flush()?;
    Ok(NodeErased::Erased(Box::new(report)))
}

/// The node asked for an erasure: its own part first (it knows the key), then
/// the record every other node applies, marked applied here so that this
/// node's mirror, reading the record, does not run it again. A part that fails
/// here is reported ([`NodeErased::Failed`]) and the record is still written:
/// the mirror applies it at this node's next start. Returns this node's part
/// and the record's revision.
pub async fn erase_here_and_record(
    directory: &Directory,
    store: &Store,
    audit: &AuditLog,
    key: &PublicKey,
    record: &ErasureRecord,
    now_ms: u64,
) -> Result<(NodeErased, u64), ClusterError> {
    let _one_at_a_time = APPLYING.lock().await;
    let seed = store.hub_signing_seed()?;
    if Pseudonym::of(&seed, key).as_str() != record.pseudonym {
        return Err(ClusterError::Corrupt {
            what: "erasure record",
            reason: "the pseudonym is not the key's".into(),
        });
    }
    let here = erase_here(directory, store, Some(audit), key, now_ms).await;
    let revision = directory.put_erasure(record).await?;
    let here = match here {
        Ok(report) => {
            store.put_mirror_applied(&mark(&record.pseudonym), revision)?;
            store.flush()?;
            NodeErased::Erased(Box::new(report))
        }
        Err(error) => {
            tracing::error!(%error, "an erasure's part on this node failed; applied at the next start");
            NodeErased::Failed {
                error: error.to_string(),
            }
        }
    };
    Ok((here, revision))
}

/// This node's part for `key` (steps 1 to 3 of the module's text).
async fn erase_here(
    directory: &Directory,
    store: &Store,
    audit: Option<&AuditLog>,
    key: &PublicKey,
    now_ms: u64,
) -> Result<ErasureReport, ClusterError> {
    // 1. Copies of groups served elsewhere brought up to their rebased logs.
    if let Some(logs) = directory.group_logs() {
        for group in store.groups()? {
            let lock = logs.group_lock(group.id.as_str());
            let _held = lock.lock().await;
            super::replica::catch_up(store, logs, &group.id).await?;
        }
    }

    // 2. The one-node erasure, through this node's chain.
    let mut opened = None;
    let audit = AuditLog::given_or_open(audit, store, &mut opened)?;
    let mut report = match erase::erase_key_in(store, audit, key, now_ms, Scope::OutsideGroupLogs) {
        Ok(report) => report,
        Err(EraseError::Store(error)) => return Err(error.into()),
        Err(error) => {
            return Err(ClusterError::Corrupt {
                what: "this node's erasure",
                reason: error.to_string(),
            })
        }
    };

    // 3. Durable, then the erased bytes out of the folder.
    store.flush()?;
    let compacting = store.clone();
    let compacted = tokio::task::spawn_blocking(move || compacting.compact())
        .await
        .map_err(|_| {
            ClusterError::Store(StoreError::Faulted(
                crate::store::StoreFault::CompactionFailed,
            ))
        })??;
    report.compacted = Some(compacted);
    tracing::info!(
        pseudonym = %report.pseudonym,
        events = report.events,
        memberships = report.memberships,
        "an erasure's part on this node ran"
    );
    Ok(report)
}

/// Applies every erasure record in the directory not applied here yet (a node
/// started after an erasure it missed, or one that failed here); one that
/// fails is logged and the others go on. Returns how many failed.
pub async fn apply_all(
    directory: &Directory,
    store: &Store,
    audit: Option<&AuditLog>,
    now_ms: u64,
) -> Result<usize, ClusterError> {
    let mut failed = 0;
    for (record, revision) in directory.erasures().await? {
        if let Err(error) = apply(directory, store, audit, &record, revision, now_ms).await {
            tracing::error!(pseudonym = %record.pseudonym, %error, "an erasure could not be applied on this node");
            failed += 1;
        }
    }
    Ok(failed)
}

/// The key among those `store` holds (and its audit chain names) whose
/// pseudonym is `pseudonym`.
fn find_key(
    store: &Store,
    seed: &[u8; 32],
    pseudonym: &str,
) -> Result<Option<PublicKey>, ClusterError> {
    Ok(keys_of(store, seed, &[pseudonym])?
        .into_iter()
        .next()
        .map(|(key, _)| key))
}

/// The keys this node's store or audit chain holds whose pseudonym is one of
/// `pseudonyms`, each with it.
pub(crate) fn keys_of(
    store: &Store,
    seed: &[u8; 32],
    pseudonyms: &[&str],
) -> Result<Vec<(PublicKey, Pseudonym)>, ClusterError> {
    let mut keys = store.keys_held()?;
    for entry in crate::audit::entries(store).flatten() {
        keys.extend(entry.subject);
        keys.extend(entry.actor());
    }
    Ok(keys
        .into_iter()
        .map(|key| (key, Pseudonym::of(seed, &key)))
        .filter(|(_, pseudonym)| pseudonyms.contains(&pseudonym.as_str()))
        .collect())
}
