//! Operators' commands on a hub's data folder (`peerhub backup`, `invite`, ...).
//!
//! sled locks its folder, so a command finds the server one of two ways: if the
//! folder is free it opens it itself; if a server holds it, it sends the request
//! over the folder's control socket (`admin.sock`, owner-only) and the server
//! carries it out ([`ops`] is the one implementation both use). The escalation
//! and rota commands on a running hub go to its escalation router (on a cluster
//! node, the router's leader); a running single hub's rota is kept by an admin
//! over the protocol, and `rota` there says so. A change made here is signed with the hub's own key (the operator
//! acting through the hub) and written to the audit chain like any other.

pub mod escalations;
pub mod ops;
pub mod rota;

use std::path::{Path, PathBuf};

use peerhub_protocol::escalation::RotaEntry;

use crate::audit::AuditLog;
use crate::clock::Clock;
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
    /// The request is refused.
    #[error("refused: {0}")]
    Invalid(String),
    /// The running server could not be reached or answered with an error.
    #[error("the running server: {0}")]
    Server(String),
    /// Cluster mode: the command would act on one node's copy only.
    #[error("{0}")]
    Cluster(String),
    /// Cluster mode: the escalation router's node refused or failed the
    /// command (its own words), or no such node answered.
    #[error("{0}")]
    Router(String),
}

/// The control socket's file name in the data folder.
pub const SOCKET: &str = "admin.sock";

/// The control socket's reply: one JSON line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done: what the command prints.
    Ok(serde_json::Value),
    /// Refused or failed, with why.
    Error(String),
}

/// Carries out `request` on the hub whose data folder is `dir`: itself if the
/// folder is free, through the running server's control socket if not.
pub fn run(dir: &Path, request: ops::AdminRequest) -> Result<serde_json::Value, AdminError> {
    if !Store::exists_in(dir) {
        return Err(AdminError::NoStore(dir.to_path_buf()));
    }
    match Store::open(dir) {
        Ok(store) => {
            refuse_stopped_cluster_node(&store, dir, request.name())?;
            let audit = AuditLog::open(store.clone())?;
            let operator = ops::Operator {
                store: &store,
                audit: &audit,
                now_ms: Clock::system().now_ms(),
                directory: None,
            };
            let output = operator.execute(request)?;
            store.flush()?;
            Ok(output)
        }
        Err(error) if error.is_in_use() => ask_running_server(dir, &request),
        Err(error) => Err(error.into()),
    }
}

/// Restores a backup into `dir` (which must hold no store), checks it, and
/// records the restore in its audit chain.
pub fn restore(
    dir: &Path,
    input: impl std::io::BufRead,
) -> Result<crate::store::backup::BackupSummary, AdminError> {
    let (store, summary) =
        Store::restore_open(dir, input).map_err(|e| AdminError::Invalid(e.to_string()))?;
    let audit = AuditLog::open(store.clone())?;
    let operator = ops::Operator {
        store: &store,
        audit: &audit,
        now_ms: Clock::system().now_ms(),
        directory: None,
    };
    operator.record_restore(&summary)?;
    store.flush()?;
    Ok(summary)
}

/// Why `peerhub erase` refuses a stopped cluster node's folder (docs/CLUSTER.md §8).
pub const CLUSTER_ERASE_REFUSED: &str = "this data folder is a cluster node's copy: \
erasing it would not reach the group logs and the directory in NATS JetStream nor the \
other nodes, and the next catch-up would bring the words back. Start the node and run \
`peerhub erase` again: on a running node it erases across the cluster (docs/CLUSTER.md §8, \
OPERATIONS.md); nothing was changed";

/// Why a running single hub refuses `peerhub erase` (its group tasks hold
/// members in memory and would write them back).
pub const SINGLE_HUB_ERASE_REFUSED: &str = "this hub is not a cluster node, and erasure on \
one node needs the data folder to itself (its group tasks hold members in memory): stop it \
first, then run `peerhub erase` again; nothing was changed";

/// Why an export from a stopped cluster node's folder is refused (docs/CLUSTER.md
/// §8): its copies of the groups may lag their logs, so the document could miss
/// the person's data.
pub const CLUSTER_EXPORT_REFUSED: &str = "this data folder is a stopped cluster node's \
copy and may lag the group logs in NATS JetStream: ask a running node instead \
(`peerhub export --data` on its folder, through its control socket); nothing was changed";

/// Erases one key's personal data: from a stopped server's folder (see
/// [`crate::erase`]), then compacts the store so the erased bytes leave the folder
/// ([`Store::compact`]); on a running cluster node, across the cluster, through
/// its control socket (`crate::cluster::erasure::erase_person`). A running single
/// hub holds members in memory, so it refuses; a stopped cluster node's folder is
/// only a copy, so it is refused too. What was done, as JSON.
pub fn erase(
    dir: &Path,
    key: &peerhub_protocol::PublicKey,
) -> Result<serde_json::Value, AdminError> {
    if !Store::exists_in(dir) {
        return Err(AdminError::NoStore(dir.to_path_buf()));
    }
    let store = match Store::open(dir) {
        Ok(store) => store,
        Err(error) if error.is_in_use() => {
            return ask_running_server(dir, &ops::AdminRequest::Erase { key: *key })
        }
        Err(error) => return Err(error.into()),
    };
    refuse_stopped_cluster_node(&store, dir, "erase")?;
    let audit = AuditLog::open(store.clone())?;
    let mut report = crate::erase::erase_key(&store, &audit, key, Clock::system().now_ms())
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
    store.flush()?;
    // sled keeps removed values in its files until rewritten: rewrite the store so
    // the erased bytes leave the folder before the command returns.
    report.compacted = Some(store.compact()?);
    serde_json::to_value(&report).map_err(|e| AdminError::Invalid(e.to_string()))
}

/// A stopped cluster node's folder (its store follows the cluster's directory)
/// is refused: what a command changes there would stay on this node (an invite,
/// a grant, a group no other node knows, overwritten when the mirror runs
/// again), and what it reads is one node's copy. On a running node the command
/// reaches the cluster, or says it cannot yet ([`ops::cluster_refusal_by_name`]).
fn refuse_stopped_cluster_node(store: &Store, dir: &Path, command: &str) -> Result<(), AdminError> {
    if !store.holds_cluster_copies()? {
        return Ok(());
    }
    let next = match command {
        "erase" => CLUSTER_ERASE_REFUSED.to_string(),
        "export" => CLUSTER_EXPORT_REFUSED.to_string(),
        _ => match ops::cluster_refusal_by_name(command) {
            Some(why) => why,
            None => "start the node and run the command again: it then reaches the cluster".into(),
        },
    };
    Err(AdminError::Cluster(format!(
        "{} is a stopped cluster node's data folder: `peerhub {command}` here would act on \
         this node's copy alone; {next}",
        dir.display()
    )))
}

fn ask_running_server(
    dir: &Path,
    request: &ops::AdminRequest,
) -> Result<serde_json::Value, AdminError> {
    let path = dir.join(SOCKET);
    match crate::transport::control::ask(&path, request) {
        Ok(Reply::Ok(value)) => Ok(value),
        Ok(Reply::Error(why)) => Err(AdminError::Server(why)),
        Err(e) => Err(AdminError::Server(format!(
            "{} is in use, but its control socket {} does not answer: {e}",
            dir.display(),
            path.display()
        ))),
    }
}
/// The rota: read from a stopped hub's folder, or asked of a running cluster
/// node, which asks the router's leader.
pub fn rota_list(dir: &Path) -> Result<Vec<RotaEntry>, AdminError> {
    let listed = run(dir, ops::AdminRequest::RotaList)?;
    serde_json::from_value(listed)
        .map_err(|e| AdminError::Server(format!("an unreadable rota in the answer: {e}")))
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

/// Replaces the rota, audited: in a stopped hub's folder (flushed), or on a
/// running cluster node through the router's leader (in its fenced log).
pub fn rota_set(dir: &Path, entries: Vec<RotaEntry>) -> Result<(), AdminError> {
    run(dir, ops::AdminRequest::RotaSet { entries }).map(|_| ())
}
