//! `peerhub restore --config`: a cluster's backup file into a NATS cluster that
//! holds none of peerhub's streams (docs/CLUSTER.md §8). The whole file is
//! checked first ([`super::backup_file`]); each stream is then made from its
//! snapshot with its saved configuration and the configured copies, checked,
//! and waited for until every copy is current; the cluster is marked restored
//! ([`super::restored`]). A failure part-way deletes what it made.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use super::backup::{peerhub_streams, BackupError, BackupSummary, TIMEOUT};
use super::backup_file::{check_parts, number, open_lines, CheckedPart, Line};
use super::{ClusterError, Nats};
use crate::config::ClusterSettings;

/// Restores the backup `from` into the NATS cluster `settings` names: checks
/// the whole file, refuses a cluster holding any of peerhub's streams, then
/// recreates each stream from its snapshot with `settings.replicas` copies and
/// checks its last sequence and count. Marks the cluster as restored
/// ([`super::restored`]) so that a node started on a folder from before refuses
/// it. A failure part-way deletes the streams this restore made.
pub async fn restore(
    settings: &ClusterSettings,
    from: &Path,
    restored_ms: u64,
) -> Result<BackupSummary, BackupError> {
    let (summary, parts) = check_parts(from)?;
    let nats = Nats::connect_with(settings, "restore", TIMEOUT).await?;
    let present = peerhub_streams(&nats).await?;
    if !present.is_empty() {
        return Err(BackupError::NotEmpty(present));
    }
    let mut made = Vec::new();
    let restored = restore_parts(&nats, settings, from, &parts, &mut made).await;
    let marked = match restored {
        Ok(()) => super::restored::mark(&nats, restored_ms, &summary.digest)
            .await
            .map_err(BackupError::from),
        Err(error) => Err(error),
    };
    if let Err(error) = marked {
        let mut left = Vec::new();
        for stream in made {
            match nats.jetstream().delete_stream(&stream).await {
                Ok(_) => {}
                // The one whose restore failed may never have been made.
                Err(delete)
                    if matches!(
                        delete.kind(),
                        async_nats::jetstream::context::DeleteStreamErrorKind::JetStream(ref e)
                            if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
                    ) => {}
                Err(delete) => {
                    tracing::warn!(%stream, error = %delete, "a half-restored stream was left");
                    left.push(stream);
                }
            }
        }
        return Err(BackupError::PartWay {
            error: Box::new(error),
            left,
        });
    }
    Ok(summary)
}

async fn restore_parts(
    nats: &Nats,
    settings: &ClusterSettings,
    from: &Path,
    parts: &[CheckedPart],
    made: &mut Vec<String>,
) -> Result<(), BackupError> {
    let mut lines = open_lines(from)?;
    lines.expect()?;
    for part in parts {
        let stream = &part.summary.stream;
        if !matches!(lines.expect()?, Line::Part { .. }) {
            return Err(lines.bad("the file changed since it was checked"));
        }
        let mut config = part.config.clone();
        config["num_replicas"] = Value::from(settings.replicas);
        made.push(stream.clone());
        let state =
            super::stream_snapshot::restore(nats.client(), stream, &config, &part.state, || {
                match lines.expect() {
                    Ok(Line::Chunk { data }) => URL_SAFE_NO_PAD
                        .decode(&data)
                        .map(Some)
                        .map_err(|error| changed(error.to_string())),
                    Ok(Line::PartEnd { .. }) => Ok(None),
                    Ok(_) => Err(changed("a line out of place".into())),
                    Err(error) => Err(changed(error.to_string())),
                }
            })
            .await?;
        let (last_seq, messages) = (number(&state, "last_seq"), number(&state, "messages"));
        if (last_seq, messages) != (part.summary.last_seq, part.summary.messages) {
            return Err(BackupError::Cluster(ClusterError::Setup {
                what: format!("stream {stream}"),
                reason: format!(
                    "restored with last sequence {last_seq} and {messages} messages, \
                     the backup holds {} and {}",
                    part.summary.last_seq, part.summary.messages
                ),
            }));
        }
        settle(nats, stream).await?;
        tracing::info!(%stream, last_seq, "stream restored");
    }
    Ok(())
}

/// How long a restored stream's copies are given to take the restored data.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until `stream` has a leader and every copy is current: a copy still
/// taking the restored data answers reads as if the stream were empty (a node
/// listing the directory there would find no admin and make a new first-admin
/// invite), so the restore ends only once every copy holds it.
async fn settle(nats: &Nats, stream: &str) -> Result<(), BackupError> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let info = super::stream_info(nats.jetstream(), stream, "stream info").await?;
        let settled = match &info.cluster {
            Some(cluster) if cluster.leader.is_some() || !cluster.replicas.is_empty() => {
                cluster.leader.is_some()
                    && cluster.replicas.len() + 1 >= info.config.num_replicas
                    && cluster.replicas.iter().all(|r| r.current && !r.offline)
            }
            // A lone server holds its only copy.
            _ => true,
        };
        if settled {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BackupError::Cluster(ClusterError::Setup {
                what: format!("stream {stream}"),
                reason: format!(
                    "restored, but its copies were not all current after {} s \
                     (`peerhub cluster check` says which server is behind)",
                    SETTLE.as_secs()
                ),
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn changed(why: String) -> ClusterError {
    ClusterError::Corrupt {
        what: "backup file",
        reason: format!("it changed since it was checked: {why}"),
    }
}
