//! Compaction: the store rewritten into a fresh database, so that the bytes of
//! deleted data leave the data folder.
//!
//! sled is log-structured: a removed or overwritten value stays in its files until
//! the segment holding it happens to be rewritten, which may be never. After an
//! erasure or the end of an ephemeral session that is not good enough, so
//! [`Store::compact`] copies every live entry into a new database and swaps the
//! folders. The old files are then deleted.
//!
//! # Steps, and what a crash at each leaves
//!
//! The store's write gate is held alone throughout (as a backup holds it): writes
//! and their acknowledgements wait, nothing is refused. Everything acknowledged
//! before is in the old database (flushed first) and is copied into the new one.
//!
//! | step | folder afterwards | a crash here, then [`recover`] at the next open |
//! | --- | --- | --- |
//! | 1. build `db.compact`, flush, close | `db`, `db.compact` | `db.compact` removed; `db` kept |
//! | 2. write the marker `db.compact.ready` (synced) | + marker | the swap is finished |
//! | 3. rename `db` → `db.old` | `db.old`, `db.compact`, marker | the swap is finished |
//! | 4. rename `db.compact` → `db` | `db.old`, `db`, marker | marker and `db.old` removed |
//! | 5. remove the marker | `db.old`, `db` | `db.old` removed |
//! | 6. reopen `db`, delete `db.old` | `db` | nothing to do |
//!
//! At every point one whole store exists that holds everything acknowledged: the old
//! one until the marker is written, the new one afterwards. The person's bytes are
//! gone from the folder when step 6 has deleted `db.old` (a crash before that: at
//! the next start, before the store opens).
//!
//! Only files in the folder are rewritten: older backups and filesystem snapshots
//! keep what they held, and a filesystem or disk may keep freed blocks until they are
//! reused (see docs/OPERATIONS.md).

use std::path::Path;
use std::sync::Arc;

use super::{Store, StoreError, Trees};

/// The folder a compaction builds into.
const BUILDING: &str = "db.compact";
/// The marker saying `BUILDING` is whole.
const READY: &str = "db.compact.ready";
/// The replaced database, until it is deleted.
const OLD: &str = "db.old";
/// The live database.
const LIVE: &str = "db";
/// The folder's lock, held by whoever has the store open.
pub const LOCK: &str = "store.lock";

/// Takes the data folder's exclusive lock (creating the folder and the empty lock
/// file, owner-only, if need be). Held for as long as the store is open, so that
/// [`recover`] never runs while another process — a running hub in the middle of a
/// compaction — owns the folder: sled's own lock is inside the database folders
/// that a compaction renames. Refused as "in use" ([`StoreError::is_in_use`]).
pub(crate) fn lock_folder(dir: &Path) -> Result<std::fs::File, StoreError> {
    use fs2::FileExt as _;
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let path = dir.join(LOCK);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|e| io("opening", &path, e))?;
    match file.try_lock_exclusive() {
        Ok(()) => Ok(file),
        Err(e) => Err(StoreError::Engine(sled::Error::Io(std::io::Error::other(
            format!("could not acquire lock on {}: {e}", path.display()),
        )))),
    }
}

/// A point in [`Store::compact`] where a test may make it stop as if the process
/// had died there (see [`Store::compact_until`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After step 1: the new database is built but not marked whole.
    Built,
    /// After step 2: marked whole.
    Marked,
    /// After step 3: the live folder is moved aside.
    MovedOld,
    /// After step 4: the new database is in place.
    Swapped,
    /// After step 5: the marker is removed, `db.old` not yet deleted.
    Unmarked,
}

impl CrashPoint {
    /// Parses a name (`built`, `marked`, `moved_old`, `swapped`, `unmarked`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "built" => Self::Built,
            "marked" => Self::Marked,
            "moved_old" => Self::MovedOld,
            "swapped" => Self::Swapped,
            "unmarked" => Self::Unmarked,
            _ => return None,
        })
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Entries copied.
    pub entries: u64,
    /// Bytes on disk before.
    pub bytes_before: u64,
    /// Bytes on disk after.
    pub bytes_after: u64,
}

fn io(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Corrupt {
        tree: "compaction",
        reason: format!("{what} {}: {error}", path.display()),
    }
}

/// Makes the folder's entries (renames, new files) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

fn remove_dir(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path, e)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(|e| io("renaming", from, e))
}

/// Whether `dir` holds a store only as a compaction a crash cut short left it
/// (the live folder moved aside): [`recover`] makes it whole again.
pub(crate) fn cut_short_in(dir: &Path) -> bool {
    dir.join(OLD).is_dir() || (dir.join(READY).exists() && dir.join(BUILDING).is_dir())
}

/// Finishes or undoes a compaction a crash cut short (see the module docs). Run
/// before the store in `dir` is opened, holding the folder's lock
/// ([`lock_folder`]); does nothing if none was under way.
pub fn recover(dir: &Path) -> Result<(), StoreError> {
    let (building, ready, old, live) = (
        dir.join(BUILDING),
        dir.join(READY),
        dir.join(OLD),
        dir.join(LIVE),
    );
    if ready.exists() {
        if building.is_dir() {
            if live.is_dir() {
                remove_dir(&old)?;
                rename(&live, &old)?;
            }
            rename(&building, &live)?;
            sync_dir(dir)?;
        }
        std::fs::remove_file(&ready).map_err(|e| io("removing", &ready, e))?;
        sync_dir(dir)?;
        remove_dir(&old)?;
    } else {
        remove_dir(&building)?;
        if !live.is_dir() && old.is_dir() {
            rename(&old, &live)?;
            sync_dir(dir)?;
        } else {
            remove_dir(&old)?;
        }
    }
    Ok(())
}

/// Opens the database at `path`, waiting a little while a closed handle's flusher
/// thread still holds its lock.
fn reopen(path: &Path, cache_bytes: u64) -> Result<Trees, StoreError> {
    let mut tries = 0;
    loop {
        match Trees::open(path, cache_bytes) {
            Err(e) if e.is_in_use() && tries < 250 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Store {
    /// Rewrites the store into a fresh database and swaps it in (see the module
    /// docs). Safe on a running hub: writers wait for its length. Returns once the
    /// old files are deleted.
    pub fn compact(&self) -> Result<CompactReport, StoreError> {
        self.compact_until(None)
    }

    /// [`Store::compact`], stopping as if the process died at `crash` (for tests;
    /// the store must then be dropped and reopened, as after a crash).
    #[doc(hidden)]
    pub fn compact_until(&self, crash: Option<CrashPoint>) -> Result<CompactReport, StoreError> {
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let crash = crash.or_else(crash_point_from_env);
        let stop = |point: CrashPoint| -> Result<(), StoreError> {
            if crash == Some(point) {
                if std::env::var_os("TEST_PEERHUB_COMPACT_CRASH_AT").is_some() {
                    // The process dies here, as under kill -9 (no destructors run).
                    std::process::abort();
                }
                return Err(StoreError::Corrupt {
                    tree: "compaction",
                    reason: format!("stopped at {point:?} (test)"),
                });
            }
            Ok(())
        };
        let old = self.t();
        let bytes_before = old.db.size_on_disk()?;
        old.db.flush()?;
        let dir = self.dir.clone();
        let (building, ready, old_dir, live) = (
            dir.join(BUILDING),
            dir.join(READY),
            dir.join(OLD),
            dir.join(LIVE),
        );
        // Leftovers of an attempt that failed while this process ran.
        remove_dir(&building)?;
        remove_dir(&old_dir)?;

        // 1. Build.
        let entries = {
            let new = Trees::open(&building, self.cache_bytes)?;
            let mut entries = 0u64;
            for ((_, from), (_, to)) in old.named().iter().zip(new.named().iter()) {
                let mut batch = sled::Batch::default();
                for item in from.iter() {
                    let (key, value) = item?;
                    batch.insert(key, value);
                    entries += 1;
                }
                to.apply_batch(batch)?;
            }
            // Ids for escalations and records come from sled's generator, which is
            // in no tree: move the new one past the old.
            let next_id = old.db.generate_id()?;
            while new.db.generate_id()? < next_id {}
            new.db.flush()?;
            entries
        };
        sync_dir(&dir)?;
        stop(CrashPoint::Built)?;

        // 2. Mark it whole.
        std::fs::File::create(&ready)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("creating", &ready, e))?;
        // From here on the marked copy is the store: the next open swaps it in
        // whatever happens now. A failure past this point is terminal for this
        // process: the store refuses to make anything durable (so nothing written
        // to the old handle is acknowledged and then lost to the swap), and the
        // hub stops (see `store_watch`) to be restarted onto the copy.
        let swapped = (|| {
            sync_dir(&dir)?;
            stop(CrashPoint::Marked)?;
            self.swap_in(&building, &ready, &old_dir, &live, &stop)
        })();
        let new = match swapped {
            Ok(new) => new,
            Err(error) => {
                self.poisoned
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::error!(
                    "compaction failed after its copy was marked whole ({error}); the store \
                     refuses writes and peerhub stops: the next start finishes the compaction"
                );
                return Err(error);
            }
        };
        let bytes_after = new.db.size_on_disk()?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        drop(old);
        remove_dir(&old_dir)?;
        sync_dir(&dir)?;
        Ok(CompactReport {
            entries,
            bytes_before,
            bytes_after,
        })
    }

    /// Steps 3 to 6 of a compaction: the marked copy becomes the live database.
    fn swap_in(
        &self,
        building: &Path,
        ready: &Path,
        old_dir: &Path,
        live: &Path,
        stop: &dyn Fn(CrashPoint) -> Result<(), StoreError>,
    ) -> Result<Trees, StoreError> {
        let dir = self.dir.clone();
        let (building, ready, old_dir, live) = (
            building.to_path_buf(),
            ready.to_path_buf(),
            old_dir.to_path_buf(),
            live.to_path_buf(),
        );
        // 3, 4. Swap the folders.
        rename(&live, &old_dir)?;
        stop(CrashPoint::MovedOld)?;
        rename(&building, &live)?;
        sync_dir(&dir)?;
        stop(CrashPoint::Swapped)?;

        // 5. The new database is the store now.
        std::fs::remove_file(&ready).map_err(|e| io("removing", &ready, e))?;
        sync_dir(&dir)?;
        stop(CrashPoint::Unmarked)?;

        // 6. Open it and let go of the old one.
        let new = match reopen(&live, self.cache_bytes) {
            Ok(new) => new,
            Err(error) => {
                // Put the old folder back under the old handle, which stayed open
                // and unchanged (nothing was written while the gate was held).
                let _ = remove_dir(&building);
                let _ = rename(&live, &building);
                let _ = rename(&old_dir, &live);
                let _ = sync_dir(&dir);
                let _ = remove_dir(&building);
                return Err(error);
            }
        };
        Ok(new)
    }

    /// The data folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A crash point named by `TEST_PEERHUB_COMPACT_CRASH_AT` (debug builds only: the
/// kill -9 tests make the real binary die part-way).
fn crash_point_from_env() -> Option<CrashPoint> {
    if cfg!(debug_assertions) {
        std::env::var("TEST_PEERHUB_COMPACT_CRASH_AT")
            .ok()
            .and_then(|name| CrashPoint::parse(&name))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::PublicKey;
    use std::path::PathBuf;

    /// Every file under `dir`, read whole.
    fn bytes_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    stack.push(entry.unwrap().path());
                }
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
        out
    }

    fn holds(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
        bytes_under(dir)
            .into_iter()
            .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
            .map(|(path, _)| path)
            .collect()
    }

    const SECRET: &[u8] = b"compact-secret-marker-7f3a";

    /// A store with a removed secret and 50 kept counters.
    fn filled(dir: &Path) -> Store {
        let store = Store::open(dir).unwrap();
        for i in 0..50u8 {
            store
                .raise_counter(&PublicKey([i; 32]), u64::from(i) + 1)
                .unwrap();
        }
        store.put_rota(&[]).unwrap();
        store.t().meta.insert("doomed", SECRET).unwrap();
        store.flush().unwrap();
        store.t().meta.remove("doomed").unwrap();
        store.flush().unwrap();
        store
    }

    #[test]
    fn a_compaction_leaves_the_live_data_and_not_the_removed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path());
        let digest = store.digest().unwrap();
        assert!(
            !holds(dir.path(), SECRET).is_empty(),
            "sled keeps removed bytes"
        );
        let id_before = store.next_record_id().unwrap();
        let report = store.compact().unwrap();
        assert!(report.entries >= 50);
        assert_eq!(store.digest().unwrap(), digest);
        assert_eq!(holds(dir.path(), SECRET), Vec::<PathBuf>::new());
        assert!(
            store.next_record_id().unwrap() > id_before,
            "ids never reused"
        );
        // Writes go on, into the new database, and survive a reopen.
        store.raise_counter(&PublicKey([99; 32]), 7).unwrap();
        store.flush().unwrap();
        let digest = store.digest().unwrap();
        drop(store);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != LOCK)
            .collect();
        assert_eq!(names, vec!["db".to_string()]);
        let reopened = reopen_store(dir.path());
        assert_eq!(reopened.digest().unwrap(), digest);
        assert_eq!(reopened.counter(&PublicKey([99; 32])).unwrap(), 7);
    }

    fn reopen_store(dir: &Path) -> Store {
        for _ in 0..250 {
            match Store::open(dir) {
                Ok(store) => return store,
                Err(e) if e.is_in_use() => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the store stays locked")
    }

    #[test]
    fn a_crash_at_any_step_leaves_one_whole_store() {
        for point in [
            CrashPoint::Built,
            CrashPoint::Marked,
            CrashPoint::MovedOld,
            CrashPoint::Swapped,
            CrashPoint::Unmarked,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = filled(dir.path());
            let digest = store.digest().unwrap();
            assert!(store.compact_until(Some(point)).is_err());
            drop(store);
            let reopened = reopen_store(dir.path());
            assert_eq!(reopened.digest().unwrap(), digest, "{point:?}");
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != LOCK)
                .collect();
            assert_eq!(names, vec!["db".to_string()], "{point:?}: no leftovers");
            let swapped = !matches!(point, CrashPoint::Built);
            assert_eq!(
                holds(dir.path(), SECRET).is_empty(),
                swapped,
                "{point:?}: the new store once marked whole, the old before"
            );
            // And it compacts again from there.
            reopened.compact().unwrap();
            assert!(holds(dir.path(), SECRET).is_empty());
        }
    }

    /// Issue 20: a compaction that failed after its marker used to leave the hub
    /// writing to (and acknowledging from) the old database, which the next open
    /// replaced by the marked copy: acknowledged writes lost. Now the failure is
    /// terminal: nothing more is made durable, and the reopened store holds
    /// everything acknowledged before.
    #[test]
    fn a_failure_after_the_marker_refuses_every_later_write() {
        for point in [
            CrashPoint::Marked,
            CrashPoint::MovedOld,
            CrashPoint::Swapped,
            CrashPoint::Unmarked,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = filled(dir.path());
            let digest = store.digest().unwrap();
            assert!(store.compact_until(Some(point)).is_err());
            // The hub carries on: a write, then the commit that would ack it.
            store.raise_counter(&PublicKey([98; 32]), 9).unwrap();
            let refused = store.flush();
            assert!(
                matches!(
                    refused,
                    Err(StoreError::Faulted(
                        super::super::StoreFault::CompactionFailed
                    ))
                ),
                "{point:?}: a write after a failed swap is never made durable: {refused:?}"
            );
            assert_eq!(
                store.fault(),
                Some(super::super::StoreFault::CompactionFailed)
            );
            drop(store);
            let reopened = reopen_store(dir.path());
            assert_eq!(reopened.digest().unwrap(), digest, "{point:?}");
            assert!(reopened.fault().is_none(), "a restart clears it");
            reopened.raise_counter(&PublicKey([98; 32]), 9).unwrap();
            reopened.flush().unwrap();
        }
    }

    #[test]
    fn a_second_opener_never_touches_a_folder_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path());
        // What a compaction under way in the owner looks like from outside.
        std::fs::create_dir(dir.path().join(BUILDING)).unwrap();
        let refused = Store::open(dir.path()).unwrap_err();
        assert!(refused.is_in_use(), "{refused}");
        assert!(dir.path().join(BUILDING).is_dir(), "left to its owner");
        drop(store);
        let reopened = reopen_store(dir.path());
        assert!(!dir.path().join(BUILDING).exists(), "the owner recovers");
        drop(reopened);
    }
}
