//! A cluster restored from a backup, and the data folders from before it.
//!
//! A node's folder holds copies of the cluster's streams with marks naming
//! their sequences (the directory mirror's, each group replica's, the router
//! log's). After a restore the streams hold what the backup held, and a folder
//! kept from before may be ahead of them: its marks would skip records written
//! after the restore, and it would serve posts the logs do not hold. So a
//! restore marks the cluster (`bootstrap.restored` in the directory bucket: when,
//! and the backup's digest), and a node starting checks its folder against the
//! mark: a folder that holds cluster copies and does not carry this restore's
//! mark is refused, naming the way out (a fresh data folder); a folder without
//! copies takes the mark. Nothing in the folder is changed by a refusal.

use serde::{Deserialize, Serialize};

use super::directory::{Directory, DirectoryConfig};
use super::{ClusterError, Nats};
use crate::store::Store;

/// The directory key a restore writes.
const KEY: &str = "bootstrap.restored";

/// The folder's mark (in the store's `meta`, beside the mirror's).
const FOLDER_MARK: &str = "cluster_restored_ms";

/// What a restore records.
#[derive(Debug, Serialize, Deserialize)]
struct Restored {
    /// When it was restored (ms since the epoch): the mark folders carry.
    restored_ms: u64,
    /// The digest of the backup file it came from.
    backup_digest: String,
}

fn subject(bucket: &str) -> String {
    format!("$KV.{bucket}.{KEY}")
}

/// Records in the restored directory bucket that the cluster was restored at
/// `restored_ms` (at least 1) from the backup whose digest is `digest`.
pub(crate) async fn mark(nats: &Nats, restored_ms: u64, digest: &str) -> Result<(), ClusterError> {
    let value = super::to_json(&Restored {
        restored_ms: restored_ms.max(1),
        backup_digest: digest.to_string(),
    });
    let subject = subject(&DirectoryConfig::default().bucket);
    super::publish_acked(nats.jetstream(), &subject, || {
        async_nats::jetstream::message::PublishMessage::build().payload(value.clone())
    })
    .await
    .map(drop)
    .map_err(|error| ClusterError::unavailable("marking the restore", error))
}

/// Why a folder from before a restore is refused.
pub const OLD_FOLDER_REFUSED: &str = "this data folder holds a copy of the cluster from \
before it was restored from a backup: its marks may be ahead of the restored streams, and \
serving it would mix the two. Start this node on a fresh (empty) data folder: it rebuilds \
its copy from the cluster (docs/CLUSTER.md §8, OPERATIONS.md §12); nothing was changed";

/// Checks this node's folder against the cluster's restore mark (module docs):
/// refused with [`OLD_FOLDER_REFUSED`] when it holds copies from before, marked
/// when it holds none.
pub async fn check_folder(store: &Store, directory: &Directory) -> Result<(), ClusterError> {
    let stream = directory.stream();
    let subject = subject(directory.bucket());
    let found = super::retry_unavailable(super::READ_DEADLINE, || {
        super::last_message(stream, &subject, "reading the restore mark")
    })
    .await?;
    let cluster = match found {
        Some(message) if !super::is_removed(&message.headers) => {
            super::from_json::<Restored>("restore mark", &message.payload)?.restored_ms
        }
        _ => 0,
    };
    let folder = store.mirror_applied(FOLDER_MARK)?;
    if folder == cluster {
        return Ok(());
    }
    if folder != 0 || store.holds_cluster_copies()? {
        return Err(ClusterError::Setup {
            what: "the data folder".to_string(),
            reason: OLD_FOLDER_REFUSED.to_string(),
        });
    }
    store.put_mirror_applied(FOLDER_MARK, cluster)?;
    store.flush()?;
    Ok(())
}
