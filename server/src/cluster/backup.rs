//! `peerhub backup` and `peerhub restore` of a cluster: every stream and bucket
//! peerhub keeps in NATS ([`ClusterStore::ALL`]) copied into one file while the
//! nodes serve, and recreated from it in a NATS cluster that holds none of them.
//!
//! Each stream is copied with JetStream's own snapshot ([`super::stream_snapshot`]),
//! which keeps its sequences, the gaps of deleted and erased messages and its
//! configuration exactly. Each stream's snapshot is of one moment, taken from
//! its leader; the streams are taken one after another, so there is no single
//! moment for the whole cluster (docs/CLUSTER.md §8 says what follows from it).
//!
//! The file's format and its checks are in [`super::backup_file`]; the
//! restore is [`super::restore`].

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::backup_file::{file_error, number, Hashed, Line, FORMAT};
use super::stores::ClusterStore;
use super::stream_snapshot::Piece;
use super::{ClusterError, Nats};
use crate::config::ClusterSettings;

/// How long each NATS request of a backup or restore may take.
pub(super) const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the stream listing is tried again while the cluster elects leaders.
const LIST_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// One stream in a backup.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartSummary {
    /// The stream (a bucket's is `KV_<bucket>`).
    pub stream: String,
    /// Its last sequence at the snapshot.
    pub last_seq: u64,
    /// Messages in it.
    pub messages: u64,
    /// The snapshot's size.
    pub bytes: u64,
    /// SHA-256 of the snapshot (hex).
    pub sha256: String,
    /// How many times it was copied before one copy saw no write (a bucket:
    /// see [`copy_part`]; 1 otherwise, and in a restore's report).
    pub copies: u32,
}

/// What a backup wrote, or a restore found in the file.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// The file.
    pub file: PathBuf,
    /// Its format.
    pub format: &'static str,
    /// When the backup began (ms since the epoch).
    pub created_ms: u64,
    /// The digest of the whole file (hex).
    pub digest: String,
    /// Each stream copied, in order.
    pub streams: Vec<PartSummary>,
    /// Streams of the list that the cluster did not hold (a node makes them
    /// when it first needs them): a restore leaves them to the nodes too.
    pub absent: Vec<String>,
}

/// Why a backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// NATS could not be reached, or refused or failed a request.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The file could not be made, written or read.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a whole, intact backup; nothing was created.
    #[error("the backup is not intact: {0}; nothing was created")]
    Bad(String),
    /// The NATS cluster already holds some of peerhub's streams.
    #[error(
        "the NATS cluster already holds {}: a restore goes only into a cluster that holds \
         none of peerhub's streams (delete them, or use fresh NATS servers); nothing was changed",
        .0.join(", ")
    )]
    NotEmpty(Vec<String>),
    /// A restore failed after it began creating streams; those it could
    /// delete again are gone.
    #[error(
        "{error}; the restore stopped part-way and deleted the streams it had made{}",
        if left.is_empty() {
            String::new()
        } else {
            format!(" except {} (delete them before trying again)", left.join(", "))
        }
    )]
    PartWay {
        /// Why it stopped.
        error: Box<BackupError>,
        /// Streams it made and could not delete.
        left: Vec<String>,
    },
    /// The NATS cluster holds no peerhub directory: nothing to back up.
    #[error(
        "the NATS cluster holds no {0}: no peerhub cluster has run on it (check \
         cluster.nats_urls); no file was written"
    )]
    NoCluster(String),
}

/// Every stream in the NATS account whose name is peerhub's, sorted.
pub(super) async fn peerhub_streams(nats: &Nats) -> Result<Vec<String>, ClusterError> {
    use futures_util::TryStreamExt as _;
    super::retry_unavailable(LIST_PATIENCE, || async {
        let mut names: Vec<String> = nats
            .jetstream()
            .stream_names()
            .try_collect()
            .await
            .map_err(|error| ClusterError::unavailable("listing streams", error))?;
        names.retain(|name| ClusterStore::looks_like_peerhub(name));
        names.sort();
        Ok(names)
    })
    .await
}

/// Backs the cluster `settings` names up into `out` (created, owner-only;
/// refused if it exists). The copy is written to `<out>.partial` and put in
/// place whole once synced, so a file named `out` is never half a backup; no
/// file is left behind when it fails.
pub async fn backup(
    settings: &ClusterSettings,
    out: &Path,
    created_ms: u64,
) -> Result<BackupSummary, BackupError> {
    let exists = |path: &Path| BackupError::File {
        path: path.to_path_buf(),
        reason: "it exists: a backup never replaces a file".to_string(),
    };
    if out.symlink_metadata().is_ok() {
        return Err(exists(out));
    }
    let nats = Nats::connect_with(settings, "backup", TIMEOUT).await?;
    let present = peerhub_streams(&nats).await?;
    let directory = ClusterStore::Directory.stream();
    if !present.contains(&directory) {
        return Err(BackupError::NoCluster(directory));
    }
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::file_modes::FILE_MODE)
            .open(&partial)
            .map_err(file_error(&partial))?
    };
    let written = match write_backup(&nats, &present, file, &partial, created_ms).await {
        // A link, not a rename: it refuses to replace a file made meanwhile.
        Ok(summary) => std::fs::hard_link(&partial, out)
            .map_err(file_error(out))
            .map(|()| BackupSummary {
                file: out.to_path_buf(),
                ..summary
            }),
        Err(error) => Err(error),
    };
    let _ = std::fs::remove_file(&partial);
    if written.is_ok() {
        if let Some(folder) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(folder).and_then(|f| f.sync_all());
        }
    }
    written
}

async fn write_backup(
    nats: &Nats,
    present: &[String],
    file: std::fs::File,
    out: &Path,
    created_ms: u64,
) -> Result<BackupSummary, BackupError> {
    let io = file_error(out);
    let mut writer = Hashed {
        out: std::io::BufWriter::new(file),
        hash: Sha256::new(),
    };
    writer
        .line(&Line::Header {
            format: FORMAT.to_string(),
            created_ms,
        })
        .map_err(&io)?;
    let mut streams = Vec::new();
    let mut absent = Vec::new();
    // The group snapshots and the group logs first, as a pair taken again if a
    // trim erased log records between the two (see `ORDER`).
    let start = writer.position().map_err(&io)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = erased_in_log(nats, present).await?;
        let mut log_state = None;
        for store in [ClusterStore::Snapshots, ClusterStore::Log] {
            let stream = store.stream();
            if present.contains(&stream) {
                let (part, state) = copy_part(nats, &mut writer, stream, &io).await?;
                if store == ClusterStore::Log {
                    log_state = Some(state);
                }
                streams.push(part);
            }
        }
        if before == log_state.as_ref().map(erased) {
            break;
        }
        if attempt == PAIR_ATTEMPTS {
            return Err(BackupError::Cluster(ClusterError::unavailable(
                "backup",
                format!(
                    "the group logs were trimmed while their snapshots were copied, \
                     {PAIR_ATTEMPTS} times: run the backup again"
                ),
            )));
        }
        tracing::info!(
            attempt,
            "group logs trimmed during the copy: copying them again"
        );
        writer.rewind(&start).map_err(&io)?;
        streams.clear();
    }
    for store in ORDER {
        let stream = store.stream();
        if !present.contains(&stream) {
            absent.push(stream);
        } else if !matches!(store, ClusterStore::Snapshots | ClusterStore::Log) {
            streams.push(copy_part(nats, &mut writer, stream, &io).await?.0);
        }
    }
    let digest = hex::encode(writer.hash.clone().finalize());
    writer
        .line(&Line::End {
            parts: streams.len() as u64,
            digest: digest.clone(),
        })
        .map_err(&io)?;
    writer
        .out
        .into_inner()
        .map_err(|error| io(error.into_error()))?
        .sync_all()
        .map_err(&io)?;
    Ok(BackupSummary {
        file: out.to_path_buf(),
        format: FORMAT,
        created_ms,
        digest,
        streams,
        absent,
    })
}

/// The order streams are copied in (and stand in the file). Each stream's copy
/// is one moment of it, the moments one after another, so the order is chosen
/// for what a later copy may hold that an earlier one does not:
///
/// - group snapshots before group logs: a trim stores its snapshot, then
///   erases the log records before its floor. Logs copied first could be
///   restored beside a snapshot covering records they never held. Copied
///   second, a log may miss records a trim erased after the snapshots were
///   copied; that is seen (the log's erased records changed between the two
///   copies) and the pair is copied again.
/// - leases after the group logs: a lease's epoch only rises, and a log's
///   fence records name epochs; restored leases are then never behind the
///   epochs the restored logs hold.
pub const ORDER: [ClusterStore; 7] = [
    ClusterStore::Snapshots,
    ClusterStore::Log,
    ClusterStore::Leases,
    ClusterStore::Directory,
    ClusterStore::Escalations,
    ClusterStore::Steps,
    ClusterStore::Audit,
];

/// How many times the snapshots and logs are copied as a pair before the
/// backup gives up (each retry follows a trim during the copy).
const PAIR_ATTEMPTS: u32 = 5;

/// Which records a stream has lost (its first sequence, and how many of the
/// sequences since are gone), from its state: appends do not change it,
/// erasures and deletions do.
fn erased(state: &Value) -> (u64, u64) {
    let (first, last) = (number(state, "first_seq"), number(state, "last_seq"));
    let held = number(state, "messages");
    (first, (last + 1).saturating_sub(first).saturating_sub(held))
}

/// [`erased`] of the group logs now, from the stream's leader (`None` when the
/// cluster holds no group logs).
async fn erased_in_log(nats: &Nats, present: &[String]) -> Result<Option<(u64, u64)>, BackupError> {
    let stream = ClusterStore::Log.stream();
    if !present.contains(&stream) {
        return Ok(None);
    }
    Ok(Some(erased(&stream_state(nats, &stream).await?)))
}

/// A stream's first and last sequence and message count now, from its leader,
/// as the keys of a snapshot's state.
async fn stream_state(nats: &Nats, stream: &str) -> Result<Value, ClusterError> {
    let info = super::stream_info(nats.jetstream(), stream, "stream info")
        .await?
        .state;
    Ok(serde_json::json!({
        "first_seq": info.first_sequence,
        "last_seq": info.last_sequence,
        "messages": info.messages,
    }))
}

/// How many times a bucket is copied before the backup gives up on finding
/// it unchanged for the length of one copy.
const QUIET_ATTEMPTS: u32 = 20;

/// Copies one stream into the file as a part ([`copy_once`]). A bucket (one
/// value per key) is copied again until nothing was written to it during the
/// copy: the server's snapshot reads the stream's files one after another, and
/// a key written meanwhile could come back with neither its old value (removed
/// when the new one was stored) nor its new one (past the snapshot's state).
/// A stream that is only appended to (the logs, steps, audit) is copied once.
async fn copy_part(
    nats: &Nats,
    writer: &mut Hashed<std::io::BufWriter<std::fs::File>>,
    stream: String,
    io: &impl Fn(std::io::Error) -> BackupError,
) -> Result<(PartSummary, Value), BackupError> {
    if !stream.starts_with("KV_") {
        return copy_once(nats, writer, stream, io).await;
    }
    let start = writer.position().map_err(io)?;
    for attempt in 1..=QUIET_ATTEMPTS {
        let (part, state) = copy_once(nats, writer, stream.clone(), io).await?;
        let now = stream_state(nats, &stream).await?;
        let unchanged = ["first_seq", "last_seq", "messages"]
            .iter()
            .all(|key| number(&now, key) == number(&state, key));
        if unchanged {
            return Ok((
                PartSummary {
                    copies: attempt,
                    ..part
                },
                state,
            ));
        }
        tracing::debug!(%stream, attempt, "written during its copy: copying it again");
        writer.rewind(&start).map_err(io)?;
        tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(attempt))).await;
    }
    Err(BackupError::Cluster(ClusterError::unavailable(
        "backup",
        format!(
            "{stream} was written during each of {QUIET_ATTEMPTS} copies: run the backup at \
             a quieter moment"
        ),
    )))
}

/// Copies one stream's snapshot into the file as a part; its summary and the
/// state the server gave.
async fn copy_once<W: Write>(
    nats: &Nats,
    writer: &mut Hashed<W>,
    stream: String,
    io: &impl Fn(std::io::Error) -> BackupError,
) -> Result<(PartSummary, Value), BackupError> {
    let mut part = PartSummary {
        stream: stream.clone(),
        last_seq: 0,
        messages: 0,
        bytes: 0,
        sha256: String::new(),
        copies: 1,
    };
    let mut hash = Sha256::new();
    let mut chunks = 0u64;
    let taken = super::stream_snapshot::snapshot(nats.client(), &stream, |piece| {
        let line = match piece {
            Piece::Start(taken) => {
                part.last_seq = number(&taken.state, "last_seq");
                part.messages = number(&taken.state, "messages");
                Line::Part {
                    stream: stream.clone(),
                    config: taken.config.clone(),
                    state: taken.state.clone(),
                }
            }
            Piece::Chunk(chunk) => {
                hash.update(chunk);
                part.bytes += chunk.len() as u64;
                chunks += 1;
                Line::Chunk {
                    data: URL_SAFE_NO_PAD.encode(chunk),
                }
            }
        };
        writer.line(&line).map_err(|error| ClusterError::Corrupt {
            what: "backup file",
            reason: format!("writing it: {error}"),
        })
    })
    .await?;
    part.sha256 = hex::encode(hash.finalize());
    writer
        .line(&Line::PartEnd {
            stream,
            last_seq: part.last_seq,
            messages: part.messages,
            bytes: part.bytes,
            chunks,
            sha256: part.sha256.clone(),
        })
        .map_err(io)?;
    tracing::info!(
        stream = %part.stream,
        last_seq = part.last_seq,
        bytes = part.bytes,
        "stream copied"
    );
    Ok((part, taken.state))
}

#[cfg(test)]
mod tests {
    use super::erased;

    #[test]
    fn erased_records_are_told_apart_from_appends() {
        let state = |first: u64, last: u64, messages: u64| serde_json::json!({"first_seq": first, "last_seq": last, "messages": messages});
        // Appends move the last sequence and the count together.
        assert_eq!(erased(&state(1, 10, 10)), erased(&state(1, 12, 12)));
        // An erased record inside, or at the head.
        assert_ne!(erased(&state(1, 10, 10)), erased(&state(1, 10, 9)));
        assert_ne!(erased(&state(1, 10, 10)), erased(&state(2, 10, 9)));
        // An empty stream.
        assert_eq!(erased(&state(0, 0, 0)), (0, 1));
    }
}
