//! Owner-only files: the data folder holds everything (messages, names, the hub's
//! signing seed, the TLS private key), so nobody but the hub's own user may read or
//! write any of it.
//!
//! - `main` sets the process umask to 077 before anything else ([`restrict_umask`]),
//!   so whatever the hub or a library (sled, the backup writer) creates is 0600/0700.
//! - The server also sets the modes explicitly where it creates things (the data
//!   folder, the store's files, the self-signed key and certificate), so a hub
//!   started as a library (tests) or under a wider umask is owner-only too.
//! - At start, a data folder that already holds something and is open to group or
//!   others (the folder, or anything in it) is refused
//!   with the `chmod` to run, or only warned about when the operator chose
//!   `store.open_to_others = "warn"` ([`OpenToOthers`]).
//!
//! It never touches a path outside the data folder, and never follows a symbolic
//! link.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of every folder the hub creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the hub creates.
pub const FILE_MODE: u32 = 0o600;

/// What to do when the data folder, or something in it, is open to group or others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OpenToOthers {
    /// Refuse to start, naming the path and the `chmod` to run (the default).
    #[default]
    Refuse,
    /// Start, and log a warning naming each such path (left as it is).
    Warn,
}

impl std::str::FromStr for OpenToOthers {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "refuse" => Ok(Self::Refuse),
            "warn" => Ok(Self::Warn),
            _ => Err(()),
        }
    }
}

/// A path in the data folder that group or others may read, write or enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPath {
    /// The path.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl std::fmt::Display for OpenPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (mode {:04o})", self.path.display(), self.mode)
    }
}

/// Sets the process umask to 077: every file and folder created from now on is
/// owner-only. Called once, first thing in `main`.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and missing parents) as 0700.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// What a start finds open in the data folder. A folder that is missing or empty
/// holds nothing yet: it is made 0700 and nothing is reported (a fresh
/// `mktemp -d` or an operator's `mkdir` is a new folder, not a leak).
pub fn check_at_start(dir: &Path) -> std::io::Result<Vec<OpenPath>> {
    let mut entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    if entries.next().is_some() {
        return open_to_others(dir);
    }
    if !std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(Vec::new())
}

/// Every path at or under `dir` with a group or other permission bit, in a stable
/// order. Symbolic links are not followed; sockets are skipped (the control socket
/// is made anew, 0600, at every start). A missing `dir` has none.
pub fn open_to_others(dir: &Path) -> std::io::Result<Vec<OpenPath>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let kind = meta.file_type();
        if kind.is_symlink() || std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            found.push(OpenPath {
                path: path.clone(),
                mode,
            });
        }
        if kind.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Makes every folder at or under `dir` 0700 and every file 0600, except the
/// paths in `keep` (the ones an operator chose to leave open, with the warning).
pub fn make_owner_only(dir: &Path, keep: &[OpenPath]) -> std::io::Result<()> {
    for open in open_to_others(dir)? {
        if keep.iter().any(|k| k.path == open.path) {
            continue;
        }
        let mode = if open.path.is_dir() {
            DIR_MODE
        } else {
            FILE_MODE
        };
        std::fs::set_permissions(&open.path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The refusal's advice: the one command that closes the whole folder.
pub fn chmod_advice(data_dir: &Path) -> String {
    format!("chmod -R go-rwx '{}'", data_dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_paths_are_found_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        create_dir(&data).unwrap();
        std::fs::write(data.join("db"), b"x").unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(data.join("db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_at_start(&empty).unwrap().is_empty());
        assert!(open_to_others(&empty).unwrap().is_empty(), "made 0700");
        let open = check_at_start(&data).unwrap();
        assert_eq!(open.len(), 2, "{open:?}");
        make_owner_only(&data, &[]).unwrap();
        assert!(open_to_others(&data).unwrap().is_empty());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("db")), 0o600);
    }
}
