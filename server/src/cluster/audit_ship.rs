//! Ships this node's sled audit chain into `PEERHUB_AUDIT`
//! ([`super::audit`]), in the background: the chain is still written and made
//! durable with each action before its ack (`crate::audit`, "Durability"), and
//! nothing that acknowledges an action or passes on a call for help waits for
//! the shipper. An append only wakes it.
//!
//! One pass, 25 ms after the chain changes (so a burst goes in one pass), and at
//! start, and again after a failure:
//!
//! 1. Makes every entry written so far durable (a commit), so nothing is
//!    shipped that a crash could still take back.
//! 2. If the sled chain was pruned beyond the stream's anchor, publishes the new
//!    anchor, then erases the shipped entries at or before it.
//! 3. Finds the first entry whose copy in the stream differs from sled's (by
//!    hash): after a rewrite (an erasure, an ephemeral session's end: the log
//!    counts them, and the last shipped entry's hash changes) every entry is
//!    compared, otherwise the shipping resumes after the last entry shipped. Publishes sled's entries from there on, in order, then erases the
//!    copies they replaced (which hold the erased keys and envelopes).
//!
//! The stream is the shipper's only memory: at start, and after any failure, it
//! reads its chain back from the stream (erasing older copies a pass cut short
//! left behind), so shipping is idempotent across restarts and crashes. A
//! publish sent again after a lost acknowledgement carries the same message
//! id, so the stream keeps it once. While NATS is away the pass fails and is
//! tried again: shipping waits, nothing else does. The entries not yet shipped
//! are counted in `peerhub_cluster_audit_unshipped`.
//!
//! A stream copy that holds entries past the sled chain's end (the data folder
//! replaced by an older copy of itself, so the same chain id) is not
//! overwritten: the node logs an error, sets
//! `peerhub_cluster_audit_shipping_stopped` to 1 and ships nothing more (until
//! it is started again) while an operator decides.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::audit::{AuditConfig, ChainName, ClusterAudit, EntryCopy, StoredChain};
use super::node::ClusterNode;
use super::ClusterError;
use crate::audit::{self, EntryHash};
use crate::hub::Hub;

/// The longest wait between tries while a pass fails.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// How long a pass waits after the chain changed, so that the entries of a
/// burst go in one pass (one commit, one read of the chain) rather than one
/// pass each, competing with the actions for the disk.
const GATHER: Duration = Duration::from_millis(25);

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("local store: {0}")]
    Store(String),
    #[error(
        "the stream holds entries up to {stream} of this chain but this node's chain ends \
         at {sled}: was the data folder restored from an older backup? Shipping stops; \
         the stream's copy is kept"
    )]
    Diverged { stream: u64, sled: u64 },
}

impl From<crate::store::StoreError> for ShipError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Store(error.to_string())
    }
}

/// What the shipper knows of the stream's copy of its chain.
struct Shipped {
    chain: StoredChain,
    /// The log's rewrite count when the copy last matched sled entry by entry.
    rewrites: Option<u64>,
}

/// Ships this node's chain until the hub stops.
pub async fn run(node: Arc<ClusterNode>, hub: Arc<Hub>) {
    let name = match hub.store.audit_chain_id() {
        Ok(chain) => ChainName {
            node: node.settings.node_name.clone(),
            chain,
        },
        Err(error) => {
            tracing::error!(%error, "no audit chain id: the audit chain is not shipped");
            return;
        }
    };
    let lag = hub
        .metrics
        .cluster()
        .map(|metrics| metrics.audit_unshipped.clone());
    let stopped = hub
        .metrics
        .cluster()
        .map(|metrics| metrics.audit_shipping_stopped.clone());
    let config = AuditConfig {
        replicas: node.settings.replicas,
        ..Default::default()
    };
    let stop = hub.shutdown.clone();
    let mut stream: Option<ClusterAudit> = None;
    let mut shipped: Option<Shipped> = None;
    let mut failures = 0u32;
    loop {
        let outcome = async {
            let audit = match &stream {
                Some(audit) => audit.clone(),
                None => {
                    let audit = ClusterAudit::open(&node.nats, &config).await?;
                    stream = Some(audit.clone());
                    audit
                }
            };
            pass(&audit, &hub, &name, &mut shipped, lag.as_ref()).await
        };
        let wait = match tokio::select! {
            outcome = outcome => outcome,
            () = stop.cancelled() => return,
        } {
            Ok(()) => {
                failures = 0;
                None
            }
            Err(error) => {
                failures += 1;
                // Read the stream's copy again (a failed publish may or may
                // not have been stored), and open the stream again.
                shipped = None;
                stream = None;
                if matches!(error, ShipError::Diverged { .. }) {
                    tracing::error!(node = %name.node, chain = %name.chain, %error, "audit shipping stopped");
                    if let Some(stopped) = &stopped {
                        stopped.set(1);
                    }
                    stop.cancelled().await;
                    return;
                }
                tracing::warn!(chain = %name.chain, %error, "audit shipping failed; trying again");
                Some(MAX_RETRY.min(Duration::from_millis(250) * 2u32.pow(failures.min(6))))
            }
        };
        tokio::select! {
            () = async {
                hub.audit.changed().await;
                tokio::time::sleep(GATHER).await;
            }, if wait.is_none() => {}
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One pass (see the module docs).
async fn pass(
    audit: &ClusterAudit,
    hub: &Hub,
    name: &ChainName,
    shipped: &mut Option<Shipped>,
    lag: Option<&prometheus::IntGauge>,
) -> Result<(), ShipError> {
    if shipped.is_none() {
        let mut chain = audit.read_chain(name).await?;
        if !chain.stale.is_empty() {
            audit.erase(&chain.stale).await?;
            chain.stale.clear();
        }
        // Only the hashes are compared: the bytes are not kept in memory.
        chain.entries = std::mem::take(&mut chain.entries)
            .into_iter()
            .map(|(seq, copy)| (seq, copy.without_payload()))
            .collect();
        *shipped = Some(Shipped {
            chain,
            rewrites: None,
        });
    }
    let Some(state) = shipped.as_mut() else {
        return Ok(());
    };
    // Read before the entries: a rewrite after this read is counted again.
    let rewrites = hub.audit.rewrites();
    let store = &hub.store;
    let anchor = audit::anchor(store)?;
    let (tail, _) = hub.audit.tail();
    // Everything up to that tail and anchor made durable before it is shipped.
    hub.committer
        .commit()
        .await
        .map_err(|error| ShipError::Store(error.to_string()))?;

    // Pruned in sled beyond the stream's anchor: the anchor, then the erasure.
    if anchor.seq > state.chain.anchor().seq {
        let stream_seq = audit.put_anchor(name, anchor).await?;
        let mut old: Vec<u64> = state.chain.anchor.map(|(s, _)| s).into_iter().collect();
        let kept = state.chain.entries.split_off(&(anchor.seq + 1));
        old.extend(state.chain.entries.values().map(|c| c.stream_seq));
        state.chain.entries = kept;
        state.chain.anchor = Some((stream_seq, anchor));
        audit.erase(&old).await?;
    }

    // Where sled and the stream part.
    let shipped_last = state.chain.entries.keys().next_back().copied();
    // A rewrite from any shipped entry on changes the last shipped entry's hash
    // too (every later entry is linked anew): checked besides the count, which
    // only rewrites through this hub's log move.
    let last_unchanged = match shipped_last {
        None => true,
        Some(last) => {
            let ours = match store.audit_entries_from(last).next() {
                Some(item) => {
                    let (seq, stored) = item?;
                    (seq == last)
                        .then(|| stored.get(..64).and_then(EntryHash::parse_hex))
                        .flatten()
                }
                None => None,
            };
            ours.is_some() && ours == state.chain.entries.get(&last).and_then(|c| c.hash())
        }
    };
    let from = if state.rewrites == Some(rewrites) && last_unchanged {
        shipped_last.map_or(anchor.seq + 1, |s| s + 1)
    } else {
        let mut first_diff = None;
        for item in store.audit_entries_from(anchor.seq + 1) {
            let (seq, stored) = item?;
            let theirs = state.chain.entries.get(&seq).and_then(|c| c.hash());
            let ours = stored.get(..64).and_then(EntryHash::parse_hex);
            if ours.is_none() || theirs != ours {
                first_diff = Some(seq);
                break;
            }
        }
        match first_diff {
            Some(seq) => seq,
            None => tail + 1,
        }
    }
    .max(anchor.seq + 1);
    if let Some(last) = shipped_last {
        if last > tail {
            return Err(ShipError::Diverged {
                stream: last,
                sled: tail,
            });
        }
    }
    if let Some(lag) = lag {
        lag.set(i64::try_from((tail + 1).saturating_sub(from)).unwrap_or(i64::MAX));
    }

    // Ship from there on, then erase what was replaced.
    let mut replaced = Vec::new();
    for item in store.audit_entries_from(from) {
        let (seq, stored) = item?;
        if seq > tail {
            // Appended since the commit above: the next pass ships it.
            break;
        }
        let hash = stored
            .get(..64)
            .and_then(EntryHash::parse_hex)
            .unwrap_or_default();
        let payload = Bytes::from(stored);
        let stream_seq = audit.put_entry(name, seq, &hash, payload.clone()).await?;
        let copy = EntryCopy::new(stream_seq, payload).without_payload();
        if let Some(old) = state.chain.entries.insert(seq, copy) {
            if old.stream_seq != stream_seq {
                replaced.push(old.stream_seq);
            }
        }
        if let Some(lag) = lag {
            lag.set(i64::try_from(tail.saturating_sub(seq)).unwrap_or(i64::MAX));
        }
    }
    audit.erase(&replaced).await?;
    if from <= tail {
        tracing::debug!(from, tail, "audit chain shipped");
    }
    state.rewrites = Some(rewrites);
    if let Some(lag) = lag {
        lag.set(0);
    }
    Ok(())
}
