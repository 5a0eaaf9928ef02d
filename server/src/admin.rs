//! Admin commands on the data folder of a stopped server (`peerhub rota ...`).
//!
//! sled locks its folder, so these refuse clearly while a server runs on it; the
//! same changes are available over the protocol to an admin's signed requests. A
//! change made here is signed with the hub's own key (the operator acting through
//! the hub) and written to the audit chain like any other.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::RotaEntry;
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::RotaPayload;
use peerhub_protocol::SignedEnvelope;

use crate::audit::{AuditLog, NewEntry};
use crate::clock::Clock;
use crate::escalation::rota;
use crate::store::{Store, StoreError};

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No store in the folder.
    #[error("{0}: no peerhub data folder here")]
    NoStore(PathBuf),
    /// A server holds the folder.
    #[error("{0} is in use by a running server: stop it first, or make the change over the protocol as an admin")]
    InUse(PathBuf),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A file could not be read.
    #[error("{path}: {reason}")]
    File {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The new rota is refused.
    #[error("rota refused: {0}")]
    Invalid(String),
}

fn open_stopped(dir: &Path) -> Result<Store, AdminError> {
    if !Store::exists_in(dir) {
        return Err(AdminError::NoStore(dir.to_path_buf()));
    }
    Store::open(dir).map_err(|error| {
        if error.is_in_use() {
            AdminError::InUse(dir.to_path_buf())
        } else {
            AdminError::Store(error)
        }
    })
}

/// The rota in a stopped server's folder.
pub fn rota_list(dir: &Path) -> Result<Vec<RotaEntry>, AdminError> {
    Ok(open_stopped(dir)?.rota()?)
}

/// Reads a rota file: a JSON array of `{supervisor, start_ms, end_ms, level}`.
pub fn read_rota_file(path: &Path) -> Result<Vec<RotaEntry>, AdminError> {
    let text = std::fs::read_to_string(path).map_err(|e| AdminError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| AdminError::File {
        path: path.to_path_buf(),
        reason: format!("not a JSON array of rota entries: {e}"),
    })
}

/// Replaces the rota in a stopped server's folder, audited and flushed.
pub fn rota_set(dir: &Path, entries: Vec<RotaEntry>) -> Result<(), AdminError> {
    let store = open_stopped(dir)?;
    rota::validate(&entries).map_err(|why| AdminError::Invalid(why.into()))?;
    for entry in &entries {
        if !store.roles(&entry.supervisor)?.contains(&Role::Supervisor) {
            return Err(AdminError::Invalid(format!(
                "{} does not hold the supervisor role",
                entry.supervisor
            )));
        }
    }
    let now = Clock::system().now_ms();
    let hub = SigningKey::from_bytes(&store.hub_signing_seed()?);
    let payload = RotaPayload {
        entries: entries.clone(),
        counter: now,
        ts: now,
    };
    let env = SignedEnvelope::sign_json(&hub, Kind::Rota, &payload);
    AuditLog::open(store.clone())?.append(NewEntry::new(now, "rota.set", env))?;
    store.put_rota(&entries)?;
    store.flush()?;
    Ok(())
}
