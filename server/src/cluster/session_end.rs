//! An ephemeral session's end on every node's audit chain (docs/CLUSTER.md §8,
//! "Audit"). The node serving the group pseudonymises the participants in its
//! own chain as one node does (`groups`, `forget_participants`), but other
//! nodes' chains may name them too: the router's leader records their flags
//! (`escalation.*`). So the serving node writes the session's end to the
//! directory (`session_end.<group>.…`, [`SessionEndRecord`]: the participants'
//! pseudonyms, never their keys), and every node's mirror applies it to its own
//! chain with the same rewrite ([`crate::audit::AuditLog::rewrite_for_session_end`]),
//! when it reads the record: at once on a running node, at its next start on
//! one that was down. A node finds the keys by computing the pseudonym of the
//! keys its store and chain hold; one holding none of them changes nothing.
//! Applying a record again changes nothing more. The rewrite is shipped into
//! `PEERHUB_AUDIT` as any other (`super::audit_ship`), and the store is marked
//! for compaction so the old bytes leave the folder.
//!
//! Logs name the group and counts, never a key.

use super::directory::SessionEndRecord;
use super::node_erasure::keys_of;
use super::ClusterError;
use crate::audit::{AuditLog, RewriteError};
use crate::store::Store;

/// Applies `record` to this node's chain (`audit`: the chain the hub's tasks
/// append through; `None` for a store no hub uses, whose chain is opened here)
/// at `now_ms`; how many entries changed.
pub fn apply(
    store: &Store,
    audit: Option<&AuditLog>,
    record: &SessionEndRecord,
    now_ms: u64,
) -> Result<u64, ClusterError> {
    let seed = store.hub_signing_seed()?;
    let hub = peerhub_protocol::PublicKey(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    );
    let wanted: Vec<&str> = record.pseudonyms.iter().map(String::as_str).collect();
    let participants = keys_of(store, &seed, &wanted)?;
    if participants.is_empty() {
        return Ok(0);
    }
    let mut opened = None;
    let audit = AuditLog::given_or_open(audit, store, &mut opened)?;
    let changed = match audit.rewrite_for_session_end(&record.group, &participants, &hub) {
        Ok(rewrite) => rewrite.entries_changed,
        Err(RewriteError::Store(error)) => return Err(error.into()),
        // A chain that does not verify is not rewritten (that would hide the
        // break); `peerhub audit verify` names it.
        Err(error) => {
            tracing::error!(group = %record.group, "the audit chain was not pseudonymised for a session's end: {error}");
            return Ok(0);
        }
    };
    if changed > 0 {
        store.flush()?;
        store.mark_compaction_due(now_ms)?;
        tracing::info!(group = %record.group, entries = changed, "a session's end pseudonymised this node's audit chain");
    }
    Ok(changed)
}
