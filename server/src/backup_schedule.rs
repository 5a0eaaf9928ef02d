//! Scheduled backups (`[backup]`): every `interval_secs`, the whole store copied
//! into `folder` as `peerhub-<ms since the epoch>.backup` by the same code as
//! `peerhub backup` (so the copy holds its own `admin.backup` audit entry), the
//! oldest beyond `keep` deleted.
//!
//! Crash-safe: a backup is written as `NAME.partial`, synced, then renamed to
//! `NAME` and the folder synced; a file named `*.backup` is always whole. A
//! `.partial` left by a crash is removed at the next run. Pruning counts whole
//! backups only, and runs after the new one is in place, so at least one is kept
//! whatever fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::ops::{AdminRequest, Operator};
use crate::hub::Hub;

/// `[backup]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// Time between backups; `None`: no scheduled backups.
    pub interval: Option<Duration>,
    /// Where they go.
    pub folder: PathBuf,
    /// How many are kept.
    pub keep: u32,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            interval: None,
            folder: PathBuf::new(),
            keep: 7,
        }
    }
}

const PREFIX: &str = "peerhub-";
const SUFFIX: &str = ".backup";
const PARTIAL: &str = ".partial";

/// Runs until the hub stops (nothing, if no interval is set).
pub async fn run(hub: Arc<Hub>, settings: BackupSettings) {
    let Some(interval) = settings.interval else {
        return;
    };
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if hub.committer.fault().is_some() {
            tracing::warn!("scheduled backup skipped: the store has a storage fault");
            continue;
        }
        match take(&hub, &settings).await {
            Ok((path, entries)) => tracing::info!(
                file = %path.display(),
                entries,
                "scheduled backup written"
            ),
            Err(reason) => tracing::error!("scheduled backup failed: {reason}"),
        }
    }
}

/// Takes one backup and prunes; returns its path and entry count.
async fn take(hub: &Arc<Hub>, settings: &BackupSettings) -> Result<(PathBuf, u64), String> {
    let folder = settings.folder.clone();
    let now_ms = hub.clock.now_ms();
    let name = format!("{PREFIX}{now_ms:013}{SUFFIX}");
    let (path, partial) = (folder.join(&name), folder.join(format!("{name}{PARTIAL}")));
    let worker = hub.clone();
    let (folder2, partial2) = (folder.clone(), partial.clone());
    let written = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        create_folder(&folder2)?;
        remove_partials(&folder2);
        let operator = Operator {
            store: &worker.store,
            audit: &worker.audit,
            now_ms,
            directory: None,
        };
        let output = operator
            .execute(AdminRequest::Backup {
                out: partial2.clone(),
            })
            .map_err(|e| e.to_string())?;
        Ok(output["entries"].as_u64().unwrap_or(0))
    })
    .await
    .map_err(|e| e.to_string())??;
    // The audit entry of the backup is durable before the backup is whole.
    if let Err(error) = hub.committer.commit().await {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("not made durable: {error}"));
    }
    let keep = settings.keep;
    let (partial3, path3) = (partial.clone(), path.clone());
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        std::fs::rename(&partial3, &path3).map_err(|e| format!("renaming: {e}"))?;
        sync_dir(&folder)?;
        prune(&folder, keep)
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok((path, written))
}

fn create_folder(folder: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|e| format!("creating {}: {e}", folder.display()))
}

fn sync_dir(folder: &Path) -> Result<(), String> {
    std::fs::File::open(folder)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {}: {e}", folder.display()))
}

/// Whole backups in `folder`, oldest first (the names sort by time).
pub fn backups_in(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    found.sort();
    found
}

fn remove_partials(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && name.ends_with(PARTIAL) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn prune(folder: &Path, keep: u32) -> Result<(), String> {
    let found = backups_in(folder);
    let excess = found.len().saturating_sub(keep as usize);
    for old in &found[..excess] {
        std::fs::remove_file(old).map_err(|e| format!("removing {}: {e}", old.display()))?;
    }
    if excess > 0 {
        sync_dir(folder)?;
    }
    Ok(())
}
