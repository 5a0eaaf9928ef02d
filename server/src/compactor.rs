//! The compaction job: rewrites the store so deleted bytes leave the data folder
//! (see [`crate::store::compact`]) once a compaction is owed — after an ephemeral
//! session's end — and `store.compact_delay` has passed since it was first owed.
//! Session ends close together share one rewrite, and no group's task waits for
//! one. A rewrite holds the store's write gate for the length of the copy: writes
//! everywhere (and their acks) wait, none is refused or lost.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::hub::Hub;

/// How often the job looks whether a compaction is owed (a `meta` read).
const POLL: Duration = Duration::from_secs(1);

/// How long after a failed rewrite the next is tried (a full disk is not helped
/// by rewriting the store every second).
const AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Starts the job on `tracker` until the hub starts shutting down (a rewrite under
/// way finishes first; one still owed is done after the next start).
pub fn start(hub: Arc<Hub>, delay: Duration, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut not_before_ms = 0u64;
        loop {
            tokio::select! {
                _ = hub.shutdown.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
            let due = match hub.store.compaction_due_since() {
                Ok(Some(since)) => since,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(%error, "could not read whether a compaction is owed");
                    continue;
                }
            };
            let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            let now = hub.clock.now_ms();
            if now < due.saturating_add(delay_ms).max(not_before_ms) {
                continue;
            }
            let store = hub.store.clone();
            let done = tokio::task::spawn_blocking(move || {
                let report = store.compact()?;
                store.clear_compaction_due()?;
                Ok::<_, crate::store::StoreError>(report)
            })
            .await;
            match done {
                Ok(Ok(report)) => tracing::info!(
                    entries = report.entries,
                    bytes_before = report.bytes_before,
                    bytes_after = report.bytes_after,
                    "store compacted: deleted bytes left the data folder"
                ),
                // Still owed: tried again a minute on. A half-done rewrite is
                // finished or undone at the next open.
                Ok(Err(error)) => {
                    not_before_ms = now.saturating_add(AFTER_FAILURE.as_millis() as u64);
                    tracing::error!("compaction failed; trying again in a minute: {error}");
                }
                Err(error) => {
                    not_before_ms = now.saturating_add(AFTER_FAILURE.as_millis() as u64);
                    tracing::error!("compaction failed; trying again in a minute: {error}");
                }
            }
        }
        tracing::debug!("compaction job stopped");
    });
}
