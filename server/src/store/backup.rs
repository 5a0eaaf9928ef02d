//! Backup and restore: the whole store as one file, taken while the server runs.
//!
//! # Consistency
//!
//! A backup holds the store's write gate alone while it reads, so it sees every
//! write made before it and none after: the state a crash at that moment would
//! have left on disk, which recovery handles (the kill -9 tests prove it). Writers
//! wait for the length of the copy; acknowledgements wait with them, nothing is
//! refused or lost.
//!
//! # File format (`peerhub-backup/1`)
//!
//! JSON lines. First a header, then one line per stored entry in the fixed tree
//! order of [`Store::digest`], then a trailer with the entry count and the
//! store's digest at the moment of the copy:
//!
//! ```text
//! {"format":"peerhub-backup/1","created_ms":1714000000000}
//! {"t":"meta","k":"<base64url key>","v":"<base64url value>"}
//! ...
//! {"end":true,"entries":1234,"digest":"<64 hex>"}
//! ```
//!
//! The trailer also carries `content_digest`: the same digest, leaving out the
//! audit entries that record only a read of the store (the backup's own entry,
//! exports, operators' listings), chosen by the caller's `leave_out`. Two backups
//! with the same content digest hold the same state: nothing changed between them
//! but reads. `docs/FORMATS.md` publishes both rules with a worked example.
//!
//! Restoring refuses a folder that already holds a store, checks every line and
//! the trailer, and accepts the result only if the restored store's digest is the
//! one recorded; otherwise the half-restored folder is removed.

use std::io::{BufRead, Write};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{Store, StoreDigest, StoreError};

/// The format name in the header.
pub const FORMAT: &str = "peerhub-backup/1";

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    created_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Line {
    t: String,
    k: String,
    v: String,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    end: bool,
    entries: u64,
    digest: String,
    // Absent in backups made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_digest: Option<String>,
}

/// Which stored entries a content digest leaves out: given a tree's name, an
/// entry's key and its value, `true` to leave it out.
pub type LeaveOut<'a> = &'a dyn Fn(&str, &[u8], &[u8]) -> bool;

/// What a backup or a restore copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// Entries copied.
    pub entries: u64,
    /// The store's digest at the copy (hex).
    pub digest: String,
    /// The digest leaving out the entries the backup's caller chose (hex; see the
    /// module docs). Empty for a restore of a backup that had none.
    #[serde(default)]
    pub content_digest: String,
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target already holds a store.
    #[error("{0} already holds a peerhub store: restore into an empty folder")]
    NotEmpty(std::path::PathBuf),
    /// The backup file is not a whole, intact backup.
    #[error("the backup is not intact: {0}")]
    Bad(String),
    /// Reading the file failed.
    #[error("reading the backup: {0}")]
    Io(#[from] std::io::Error),
    /// The new store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(error: std::io::Error) -> StoreError {
    StoreError::Corrupt {
        tree: "backup",
        reason: format!("writing the backup: {error}"),
    }
}

impl Store {
    /// Writes a consistent copy of the whole store to `out` (see the module docs).
    pub fn backup_to(
        &self,
        out: &mut impl Write,
        created_ms: u64,
    ) -> Result<BackupSummary, StoreError> {
        self.backup_leaving_out(out, created_ms, &|_, _, _| false)
    }

    /// [`Store::backup_to`], with a content digest that leaves out what `leave_out`
    /// picks (see the module docs).
    pub fn backup_leaving_out(
        &self,
        out: &mut impl Write,
        created_ms: u64,
        leave_out: LeaveOut<'_>,
    ) -> Result<BackupSummary, StoreError> {
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let header = Header {
            format: FORMAT.into(),
            created_ms,
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&header).unwrap_or_default()
        )
        .map_err(io)?;
        let mut digest = StoreDigest::new();
        let mut content = StoreDigest::new();
        let mut entries = 0u64;
        for (name, tree) in self.t().named() {
            digest.tree(name);
            content.tree(name);
            for item in tree.iter() {
                let (key, value) = item?;
                digest.entry(&key, &value);
                if !leave_out(name, &key, &value) {
                    content.entry(&key, &value);
                }
                let line = Line {
                    t: name.into(),
                    k: URL_SAFE_NO_PAD.encode(&key),
                    v: URL_SAFE_NO_PAD.encode(&value),
                };
                writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default())
                    .map_err(io)?;
                entries += 1;
            }
        }
        let summary = BackupSummary {
            entries,
            digest: hex::encode(digest.finish()),
            content_digest: hex::encode(content.finish()),
        };
        let trailer = Trailer {
            end: true,
            entries,
            digest: summary.digest.clone(),
            content_digest: Some(summary.content_digest.clone()),
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&trailer).unwrap_or_default()
        )
        .map_err(io)?;
        out.flush().map_err(io)?;
        Ok(summary)
    }

    /// Restores a backup into `dir`, which must not hold a store; on any failure
    /// the half-made store is removed again.
    pub fn restore_from(dir: &Path, input: impl BufRead) -> Result<BackupSummary, RestoreError> {
        Self::restore_open(dir, input).map(|(_, summary)| summary)
    }

    /// [`Store::restore_from`], keeping the restored store open.
    pub fn restore_open(
        dir: &Path,
        input: impl BufRead,
    ) -> Result<(Store, BackupSummary), RestoreError> {
        if Store::exists_in(dir) {
            return Err(RestoreError::NotEmpty(dir.to_path_buf()));
        }
        let result = Self::restore_inner(dir, input);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(dir.join("db"));
        }
        result
    }

    fn restore_inner(
        dir: &Path,
        input: impl BufRead,
    ) -> Result<(Store, BackupSummary), RestoreError> {
        let bad = |why: String| RestoreError::Bad(why);
        let mut lines = input.lines();
        let header: Header = match lines.next() {
            Some(line) => serde_json::from_str(&line?)
                .map_err(|e| bad(format!("line 1 is not a backup header: {e}")))?,
            None => return Err(bad("the file is empty".into())),
        };
        if header.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {FORMAT:?}",
                header.format
            )));
        }
        let store = Store::open(dir)?;
        let live = store.t();
        let trees = live.named();
        let mut entries = 0u64;
        let mut max_id = 0u64;
        let mut trailer = None;
        for (number, line) in lines.enumerate() {
            let line = line?;
            let number = number + 2;
            if trailer.is_some() {
                return Err(bad(format!("line {number} follows the trailer")));
            }
            if line.starts_with("{\"end\"") {
                let t: Trailer = serde_json::from_str(&line)
                    .map_err(|e| bad(format!("line {number}: bad trailer: {e}")))?;
                trailer = Some(t);
                continue;
            }
            let entry: Line =
                serde_json::from_str(&line).map_err(|e| bad(format!("line {number}: {e}")))?;
            let tree = trees
                .iter()
                .find(|(name, _)| *name == entry.t)
                .map(|(_, tree)| *tree)
                .ok_or_else(|| bad(format!("line {number}: unknown tree {:?}", entry.t)))?;
            let key = URL_SAFE_NO_PAD
                .decode(&entry.k)
                .map_err(|e| bad(format!("line {number}: key: {e}")))?;
            let value = URL_SAFE_NO_PAD
                .decode(&entry.v)
                .map_err(|e| bad(format!("line {number}: value: {e}")))?;
            if entry.t == "escid_escalation" || entry.t == "recordid_record" {
                if let Ok(id) = <[u8; 8]>::try_from(key.as_slice()) {
                    max_id = max_id.max(u64::from_be_bytes(id));
                }
            }
            tree.insert(key, value).map_err(StoreError::from)?;
            entries += 1;
        }
        let trailer =
            trailer.ok_or_else(|| bad("the trailer is missing: the file is cut short".into()))?;
        if trailer.entries != entries {
            return Err(bad(format!(
                "{entries} entries read, the trailer says {}",
                trailer.entries
            )));
        }
        let digest = hex::encode(store.digest()?);
        if digest != trailer.digest {
            return Err(bad(format!(
                "the restored store's digest {digest} is not the recorded {}",
                trailer.digest
            )));
        }
        // Ids for escalations and records come from sled's id generator, which is
        // not in any tree: move it past every id restored.
        while store.t().db.generate_id().map_err(StoreError::from)? < max_id {}
        // A backup from before the escalation index has none: build it now.
        store.index_escalations_if_missing()?;
        store.flush()?;
        let content_digest = trailer.content_digest.unwrap_or_default();
        Ok((
            store,
            BackupSummary {
                entries,
                digest,
                content_digest,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..50u64 {
            store
                .raise_counter(&peerhub_protocol::PublicKey([i as u8; 32]), i + 1)
                .unwrap();
        }
        store.hub_signing_seed().unwrap();
        (dir, store)
    }

    #[test]
    fn a_backup_restores_to_the_same_digest() {
        let (_dir, store) = filled();
        let mut file = Vec::new();
        let summary = store.backup_to(&mut file, 7).unwrap();
        assert_eq!(summary.digest, hex::encode(store.digest().unwrap()));
        let target = tempfile::tempdir().unwrap();
        let restored = Store::restore_from(target.path(), file.as_slice()).unwrap();
        assert_eq!(restored, summary);
        // sled's flusher thread may hold the folder a moment after the restore's
        // last handle is dropped.
        let reopened = (0..100)
            .find_map(|_| match Store::open(target.path()) {
                Ok(store) => Some(store),
                Err(e) if e.is_in_use() => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                }
                Err(e) => panic!("{e}"),
            })
            .expect("the restored store opens");
        assert_eq!(hex::encode(reopened.digest().unwrap()), summary.digest);
    }

    #[test]
    fn a_damaged_backup_is_refused_and_leaves_no_store() {
        let (_dir, store) = filled();
        let mut file = Vec::new();
        store.backup_to(&mut file, 7).unwrap();
        let text = String::from_utf8(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cut = lines[..lines.len() - 1].join("\n");
        let mut changed = lines.clone();
        let edited = lines[3].replace("\"v\":\"", "\"v\":\"AA");
        changed[3] = &edited;
        let changed = changed.join("\n");
        let dropped = [&lines[..3], &lines[4..]].concat().join("\n");
        for (what, bytes) in [
            ("cut short", cut),
            ("a value changed", changed),
            ("a line dropped", dropped),
            ("not a backup", "hello".to_string()),
        ] {
            let target = tempfile::tempdir().unwrap();
            let refused = Store::restore_from(target.path(), bytes.as_bytes());
            assert!(
                matches!(refused, Err(RestoreError::Bad(_))),
                "{what}: {refused:?}"
            );
            assert!(
                !Store::exists_in(target.path()),
                "{what}: nothing left behind"
            );
        }
    }

    #[test]
    fn restoring_over_a_store_is_refused() {
        let (dir, store) = filled();
        let mut file = Vec::new();
        store.backup_to(&mut file, 7).unwrap();
        let before = store.digest().unwrap();
        let refused = Store::restore_from(dir.path(), file.as_slice());
        assert!(matches!(refused, Err(RestoreError::NotEmpty(_))));
        assert_eq!(store.digest().unwrap(), before);
    }
}
