//! The control socket: a Unix socket in the data folder (`admin.sock`, owner-only)
//! through which `peerhub` commands reach the server that holds the folder.
//!
//! Whoever can open it can already read the data folder, so the file's owner-only
//! mode is the whole of its access control. One JSON request line in, one JSON
//! reply line out ([`crate::admin::ops::AdminRequest`], [`crate::admin::Reply`]);
//! requests run one at a time.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;

use crate::admin::ops::{AdminRequest, Operator};
use crate::admin::Reply;
use crate::escalation::OperatorAsk;
use crate::hub::Hub;

/// Longest request line accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long a client may take to send its request line (a stuck or idle client
/// must not hold anything).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the command waits for the server's answer (a backup of a large store
/// takes a while).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Binds the socket at `path` (replacing a stale one: the store's lock proves no
/// other server uses this folder), owner-only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until shutdown, then removes the socket file.
pub async fn serve(listener: UnixListener, path: PathBuf, hub: Arc<Hub>) {
    loop {
        let accepted = tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        // Each client on its own task: one that sends nothing holds no one else.
        hub.connections.spawn(answer(stream, hub.clone()));
    }
    let _ = std::fs::remove_file(&path);
}

/// Reads one request line (within [`REQUEST_TIMEOUT`] and [`MAX_REQUEST_BYTES`]),
/// carries it out and writes the reply.
async fn answer(stream: tokio::net::UnixStream, hub: Arc<Hub>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
    let read = tokio::select! {
        _ = hub.shutdown.cancelled() => return,
        read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)) => read,
    };
    let reply = match read {
        Err(_) => Reply::Error("no request line in time".into()),
        Ok(Err(e)) => Reply::Error(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => {
            Reply::Error(format!("request longer than {MAX_REQUEST_BYTES} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_str::<AdminRequest>(&line) {
            Ok(request) => execute(&hub, request).await,
            Err(e) => Reply::Error(format!("not a request: {e}")),
        },
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

async fn execute(hub: &Arc<Hub>, request: AdminRequest) -> Reply {
    let name = request.name();
    if let AdminRequest::GroupClearWaiting { group } = request {
        // The group's task holds its members: it clears them itself.
        return clear_waiting(hub, group).await;
    }
    if let AdminRequest::Erase { key } = request {
        // `peerhub erase` on a running node: a cluster node reaches the
        // cluster; a single hub needs its folder to itself.
        return erase_person(hub, key).await;
    }
    if let AdminRequest::ClusterEraseGroups { key } = request {
        // Each group's owner writes it: nothing runs on the blocking thread.
        return erase_groups(hub, key).await;
    }
    if let Some(ask) = router_ask(hub, &request) {
        // The router owns the open escalations and the rota (in cluster mode
        // the router's leader, wherever it runs): it reads, writes, commits
        // and tells.
        return match ask {
            Ok(ask) => match hub.router.operator(ask).await {
                Ok(output) => {
                    tracing::info!(command = %name, "operator request carried out");
                    Reply::Ok(output)
                }
                Err(e) => Reply::Error(e.to_string()),
            },
            Err(why) => Reply::Error(why),
        };
    }
    let reload = match &request {
        AdminRequest::GroupSchedule { group, .. } => Some(group.clone()),
        _ => None,
    };
    let regrant = match &request {
        AdminRequest::FacilitatorGrant { key, group, revoke } => {
            Some((group.clone(), *key, !*revoke))
        }
        _ => None,
    };
    let worker = hub.clone();
    let done = tokio::task::spawn_blocking(move || {
        let operator = Operator {
            store: &worker.store,
            audit: &worker.audit,
            now_ms: worker.clock.now_ms(),
            directory: worker.cluster.as_ref().map(|node| &node.directory),
        };
        operator.execute(request)
    })
    .await;
    let output = match done {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Reply::Error(e.to_string()),
        Err(_) => return Reply::Error("the request failed inside the server".into()),
    };
    if let Err(e) = hub.committer.commit().await {
        return Reply::Error(format!("not made durable: {e}"));
    }
    if let Some(group) = reload {
        hub.groups.reload(&group).await;
    }
    if let Some((group, key, facilitator)) = regrant {
        hub.groups.regrant(&group, key, facilitator).await;
    }
    tracing::info!(command = %name, "operator request carried out");
    Reply::Ok(output)
}

/// The requests the escalation router answers on this running hub: a resolve
/// always; the queue's listing and the rota on a cluster node, where this
/// node's store is not the router's record (one hub lists its own store, which
/// is). A running single hub's rota is kept by an admin over the protocol:
/// refused here, as before.
fn router_ask(hub: &Hub, request: &AdminRequest) -> Option<Result<OperatorAsk, String>> {
    let cluster = hub.cluster.is_some();
    match request {
        AdminRequest::EscalationResolve { id, outcome } => Some(Ok(OperatorAsk::Resolve {
            id: *id,
            outcome: outcome.clone(),
        })),
        AdminRequest::EscalationList { filter, limit } if cluster => Some(Ok(OperatorAsk::List {
            filter: *filter,
            limit: limit.unwrap_or(crate::admin::escalations::DEFAULT_LIST_LIMIT),
        })),
        AdminRequest::RotaList if cluster => Some(Ok(OperatorAsk::RotaList)),
        AdminRequest::RotaSet { entries } if cluster => Some(Ok(OperatorAsk::RotaSet {
            entries: entries.clone(),
        })),
        AdminRequest::RotaList | AdminRequest::RotaSet { .. } => Some(Err(
            "the data folder is in use by a running hub, whose rota an admin keeps over the \
             protocol (the admin screen): do it there, or stop the hub first"
                .into(),
        )),
        _ => None,
    }
}

/// Clears a group's waiting room on the running hub, through the group's task
/// (which writes the audit entry and answers once it is durable).
async fn clear_waiting(hub: &Arc<Hub>, group: peerhub_protocol::GroupId) -> Reply {
    match hub.store.group(&group) {
        Ok(Some(_)) => {}
        Ok(None) => return Reply::Error(format!("refused: no group {group}")),
        Err(e) => return Reply::Error(e.to_string()),
    }
    let operator = Operator {
        store: &hub.store,
        audit: &hub.audit,
        now_ms: hub.clock.now_ms(),
        // Only the entry is made here (on a runtime thread: no directory waits).
        directory: None,
    };
    let entry = match operator.clear_waiting_entry(&group) {
        Ok(entry) => entry,
        Err(e) => return Reply::Error(e.to_string()),
    };
    match hub.groups.clear_waiting(&group, entry).await {
        Ok(cleared) => {
            tracing::info!(
                command = "group clear-waiting",
                "operator request carried out"
            );
            Reply::Ok(serde_json::json!({ "group": group, "cleared": cleared }))
        }
        Err(e) => Reply::Error(e.to_string()),
    }
}

/// The group part of a person's erasure on a running cluster node
/// (`crate::cluster::erasure`); the reply lists each group reached and says
/// what the erasure does not reach yet.
async fn erase_groups(hub: &Arc<Hub>, key: peerhub_protocol::PublicKey) -> Reply {
    let Some(node) = &hub.cluster else {
        return Reply::Error(
            "refused: this server is not a cluster node; on one node, stop it and run `peerhub erase`"
                .into(),
        );
    };
    match crate::cluster::erasure::erase_in_groups(hub, node, &key).await {
        Ok(groups) => {
            let complete = groups.iter().all(|g| g.is_done());
            tracing::info!(
                command = "cluster erase-groups",
                complete,
                "operator request carried out"
            );
            Reply::Ok(serde_json::json!({
                "groups": groups,
                "complete": complete,
                "not_reached": "the account's directory keys and each node's own store (co-produced records, copies, audit chain): `peerhub erase` on a running node does the whole erasure",
                "raft_logs": "each NATS server's Raft log keeps the erased records' bytes until the server compacts it",
            }))
        }
        Err(e) => Reply::Error(e.to_string()),
    }
}

/// `peerhub erase` on a running hub: across the cluster on a cluster node
/// (`crate::cluster::erasure::erase_person`); refused on a single hub, whose
/// erasure needs the folder to itself.
async fn erase_person(hub: &Arc<Hub>, key: peerhub_protocol::PublicKey) -> Reply {
    let Some(node) = &hub.cluster else {
        return Reply::Error(format!(
            "refused: {}",
            crate::admin::SINGLE_HUB_ERASE_REFUSED
        ));
    };
    match crate::cluster::erasure::erase_person(hub, node, &key).await {
        Ok(done) => {
            tracing::info!(
                command = "erase",
                complete = done.complete,
                "operator request carried out"
            );
            Reply::Ok(serde_json::to_value(&done).unwrap_or_default())
        }
        Err(e) => Reply::Error(e.to_string()),
    }
}

/// Sends `request` to the server listening at `path` and waits for its reply.
pub fn ask(path: &Path, request: &AdminRequest) -> std::io::Result<Reply> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut line = serde_json::to_string(request).unwrap_or_default();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
