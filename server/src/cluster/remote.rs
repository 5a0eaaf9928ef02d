//! Sessions on one node, their group's task on another (docs/CLUSTER.md §4–5).
//!
//! A session stays on the node its client reached. When the group's task runs on
//! another node, the session's commands go to it as requests on
//! `peerhub.cmd.<group>` ([`super::commands`]), and the owner answers a join with
//! its reply, a signed command with "queued" (its ack or refusal follows as a
//! frame), or the refusal the session passes on.
//!
//! Frames go the other way through a **proxy outbox**: for each remote connection
//! the owner makes an outbox like a local one, and the group's task treats it as
//! any other connection. What it queues is published on
//! `peerhub.out.<node>.c<conn>` with a number per proxy;
//! the connection's node hands each frame to the real outbox in order. Core NATS
//! may lose a message: a number that does not follow on closes the connection, as
//! a full outbox does, and the client resumes from its last seq (PROTOCOL.md).
//! When the owner closes the proxy (its task stopped, the lease lost) it sends a
//! "kick", and the connection's node also watches the group's lease: a lease that
//! moved or ran out closes the connections joined through the old owner, whose
//! clients join again on whichever node serves the group next.
//!
//! Logs name groups, connections and nodes, never a frame or a key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use peerhub_protocol::frame::Role;
use peerhub_protocol::{ErrorCode, GroupId, PublicKey, SignedEnvelope};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::commands::{self, Asked, Inbox, Replies};
use super::node::ClusterNode;
use super::{ClusterError, Nats};
use crate::admission::ReplayGuard;
use crate::error::ServerError;
use crate::groups::{Action, GroupCommand, JoinReply, Mail};
use crate::outbound::{ConnId, FrameBytes, Outbox};
use crate::store::Store;

/// The header naming the proxy that sent a frame: the owner node and the
/// proxy's connection there (frames are numbered per proxy).
const OWNER_HEADER: &str = "Peerhub-Owner";
/// The header numbering a proxy's frames (1, 2, …).
const FRAME_HEADER: &str = "Peerhub-Frame";
/// The header of a proxy's last message: close the connection.
const KICK_HEADER: &str = "Peerhub-Kick";
/// How long a node waits for a group's owner to answer a command.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a command that reached no one is sent again, while its owner holds
/// the group's lease, before the session is told that no node serves the group
/// (see [`RemoteGroup::ask`]).
const NO_OWNER_PATIENCE: Duration = Duration::from_secs(2);
/// Answers an owner remembers for commands sent again.
const REMEMBERED: usize = 1024;

/// A session's command, as it travels to the group's owner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Forwarded {
    Join {
        node: String,
        conn: u64,
        key: PublicKey,
        roles: Vec<Role>,
        name: String,
        access_code: Option<String>,
        counter: u64,
        env: SignedEnvelope,
    },
    Signed {
        node: String,
        conn: u64,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        action: Action,
    },
    Leave {
        node: String,
        conn: u64,
    },
    HubNote {
        channel: peerhub_protocol::frame::Channel,
        note: peerhub_protocol::frame::Note,
    },
    ClearWaiting {
        entry: crate::audit::NewEntry,
    },
    Erase {
        key: PublicKey,
        hub_key: PublicKey,
    },
    LineOpen {
        node: String,
        conn: u64,
        key: PublicKey,
        request_id: Option<u64>,
        escalation: u64,
        grant: crate::escalation::LineGrant,
    },
    LinePost {
        node: String,
        conn: u64,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        to: PublicKey,
        grant: crate::escalation::LineGrant,
    },
}

/// The owner's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
enum Answer {
    Joined {
        reply: Box<JoinReply>,
    },
    Queued,
    Cleared {
        count: usize,
    },
    Erased {
        erased: crate::cluster::erasure::GroupErased,
    },
    Refused {
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
        next_session_ms: Option<u64>,
    },
}

impl Answer {
    fn refused(error: &ServerError) -> Self {
        match error.frame(None) {
            peerhub_protocol::frame::ServerFrame::Error {
                code,
                message,
                retry_after_ms,
                next_session_ms,
                ..
            } => Self::Refused {
                code,
                message,
                retry_after_ms,
                next_session_ms,
            },
            _ => Self::Refused {
                code: error.code(),
                message: error.to_string(),
                retry_after_ms: None,
                next_session_ms: None,
            },
        }
    }

    /// "Queued" for a command handed to the group's task, else its refusal.
    fn of(sent: Result<(), ServerError>) -> Self {
        match sent {
            Ok(()) => Self::Queued,
            Err(error) => Self::refused(&error),
        }
    }

    /// `Ok` for "queued", else the refusal as the client should see it.
    fn queued(self) -> Result<(), ServerError> {
        match self {
            Self::Queued => Ok(()),
            other => Err(other.into_error()),
        }
    }

    fn into_error(self) -> ServerError {
        match self {
            Self::Refused {
                code,
                message,
                retry_after_ms,
                next_session_ms,
            } => ServerError::Forwarded {
                code,
                message,
                retry_after_ms,
                next_session_ms,
            },
            _ => ServerError::Internal("an unexpected answer from the group's node"),
        }
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// How a proxy outbox is made on the owner (the local outboxes' bounds).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Frames queued at most.
    pub frames: usize,
    /// Bytes queued at most.
    pub bytes: usize,
    /// Counts frames a proxy could not take.
    pub drops: prometheus::IntCounter,
}

/// This node's side of the traffic between sessions and groups on different
/// nodes: the connections here joined to groups served elsewhere, and the proxy
/// outboxes here for connections elsewhere.
#[derive(Debug, Default)]
pub struct Relay {
    /// Connections on this node, by id: their outbox, the last frame number
    /// seen from each owner, and the groups they joined elsewhere (with the
    /// owner each was joined through).
    local: Mutex<HashMap<u64, LocalConn>>,
    /// Proxies on this node for connections elsewhere, by (node, connection).
    proxies: Mutex<HashMap<(String, u64), Proxy>>,
}

#[derive(Debug)]
struct LocalConn {
    outbox: Outbox,
    last: HashMap<String, u64>,
    groups: HashMap<GroupId, String>,
    /// Registered with a router led elsewhere.
    router: bool,
}

#[derive(Debug)]
struct Proxy {
    outbox: Outbox,
    groups: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The subject a node's connection receives frames on.
fn frames_subject(node: &str, conn: u64) -> String {
    format!("peerhub.out.{node}.c{conn}")
}

impl Relay {
    fn register(&self, outbox: &Outbox, group: &GroupId, owner: &str) {
        let mut local = lock(&self.local);
        let entry = local.entry(outbox.conn.0).or_insert_with(|| LocalConn {
            outbox: outbox.clone(),
            last: HashMap::new(),
            groups: HashMap::new(),
            router: false,
        });
        entry.groups.insert(group.clone(), owner.to_string());
    }

    /// A connection here hears from the router led on another node.
    pub(crate) fn register_router(&self, outbox: &Outbox) {
        let mut local = lock(&self.local);
        let entry = local.entry(outbox.conn.0).or_insert_with(|| LocalConn {
            outbox: outbox.clone(),
            last: HashMap::new(),
            groups: HashMap::new(),
            router: false,
        });
        entry.router = true;
    }

    /// The connection closed: it hears from no router any more.
    pub(crate) fn unregister_router(&self, conn: u64) {
        let mut local = lock(&self.local);
        if let Some(entry) = local.get_mut(&conn) {
            entry.router = false;
            if entry.groups.is_empty() {
                local.remove(&conn);
            }
        }
    }

    fn unregister(&self, conn: u64, group: &GroupId) {
        let mut local = lock(&self.local);
        if let Some(entry) = local.get_mut(&conn) {
            entry.groups.remove(group);
            if entry.groups.is_empty() && !entry.router {
                local.remove(&conn);
            }
        }
    }

    /// One frame (or kick) for a connection on this node.
    fn deliver(&self, conn: u64, owner: &str, number: Option<u64>, kick: bool, frame: Bytes) {
        let mut local = lock(&self.local);
        let Some(entry) = local.get_mut(&conn) else {
            return;
        };
        if kick {
            tracing::debug!(conn, owner, "closing a connection its group's node let go");
            entry.outbox.kicked().cancel();
            return;
        }
        let last = entry.last.entry(owner.to_string()).or_insert(0);
        let in_order = number == Some(*last + 1);
        *last = number.unwrap_or(*last);
        let frame = match FrameBytes::try_from(frame) {
            Ok(frame) if in_order => frame,
            _ => {
                // Lost on the way (or unreadable): the client resumes from its
                // last seq instead of missing something.
                tracing::warn!(
                    conn,
                    owner,
                    "a frame from another node was lost: closing the connection"
                );
                entry.outbox.kicked().cancel();
                return;
            }
        };
        entry.outbox.push(&frame);
    }

    /// Closes this node's connections joined to `group` through `owner`, when
    /// the group's lease moved away from it or ran out.
    fn owner_gone(&self, group: &GroupId, owner: &str) {
        let local = lock(&self.local);
        for entry in local.values() {
            if entry.groups.get(group).is_some_and(|o| o == owner) {
                entry.outbox.kicked().cancel();
            }
        }
    }

    fn remote_groups(&self) -> Vec<(GroupId, String)> {
        let local = lock(&self.local);
        let mut groups: Vec<(GroupId, String)> = local
            .values()
            .flat_map(|e| e.groups.iter().map(|(g, o)| (g.clone(), o.clone())))
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }
}

/// Receives the frames other nodes send to this node's connections, and
/// watches the leases of the groups they joined elsewhere, until `stop`.
pub async fn receive(node: Arc<ClusterNode>, stop: tokio_util::sync::CancellationToken) {
    let subject = format!("peerhub.out.{}.>", node.holder);
    let mut subscriber = loop {
        match node.nats.client().subscribe(subject.clone()).await {
            Ok(subscriber) => break subscriber,
            Err(error) => {
                tracing::warn!(%error, "subscribing to frames from other nodes; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    let mut watch = tokio::time::interval(node.settings.lease_ttl / 3);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            message = subscriber.next() => {
                let Some(message) = message else { return };
                let conn = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|c| c.strip_prefix('c'))
                    .and_then(|c| c.parse::<u64>().ok());
                let header = |name: &str| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_string())
                };
                let (Some(conn), Some(owner)) = (conn, header(OWNER_HEADER)) else {
                    continue;
                };
                let number = header(FRAME_HEADER).and_then(|n| n.parse().ok());
                let kick = header(KICK_HEADER).is_some();
                node.relay.deliver(conn, &owner, number, kick, message.payload);
            }
            _ = watch.tick() => {
                for (group, owner) in node.relay.remote_groups() {
                    let key = ClusterNode::group_lease(&group);
                    match node.leases.current(&key).await {
                        Ok(Some((value, _)))
                            if value.holder == owner
                                && value.deadline_ms > crate::clock::Clock::system().now_ms() => {}
                        Ok(_) => node.relay.owner_gone(&group, &owner),
                        // NATS not answering: the frames' numbers still catch a
                        // loss; look again next time.
                        Err(error) => tracing::debug!(%group, %error, "could not read a group's lease"),
                    }
                }
            }
        }
    }
}

/// Every lease TTL, lets go of the proxies of nodes whose presence ran out (a
/// node killed without a word): their connections leave this node's groups, so
/// nobody is shown online who is not. Runs until the hub stops.
pub async fn sweep(node: Arc<ClusterNode>, hub: Arc<crate::hub::Hub>) {
    let mut every = tokio::time::interval(node.settings.lease_ttl);
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        for from in node.relay.proxied_nodes() {
            if node.is_present(&from).await == Some(false) {
                let conns = node.relay.drop_node(&from);
                tracing::info!(node = %from, connections = conns.len(), "a node is gone: its connections leave this node's groups");
                for conn in conns {
                    hub.groups.leave_everywhere(conn).await;
                }
            }
        }
    }
}

/// A group served by another node, as a session here uses it.
#[derive(Debug)]
pub struct RemoteGroup {
    node: Arc<ClusterNode>,
    store: Store,
    group: GroupId,
    owner: String,
}

impl RemoteGroup {
    /// The group `group`, served by `owner`.
    pub fn new(node: Arc<ClusterNode>, store: Store, group: GroupId, owner: String) -> Self {
        Self {
            node,
            store,
            group,
            owner,
        }
    }

    /// Whether the owner this handle names still holds the group's lease (a node
    /// that died holds it until it runs out; NATS not answering counts as no).
    async fn owner_holds(&self) -> bool {
        let key = ClusterNode::group_lease(&self.group);
        matches!(
            self.node.leases.current(&key).await,
            Ok(Some((value, _))) if value.holder == self.owner
                && value.deadline_ms > crate::clock::Clock::system().now_ms()
        )
    }

    /// Asks the owner. "Nobody listens" means the command reached no one, so it is
    /// sent again while the owner holds the lease, for at most
    /// [`NO_OWNER_PATIENCE`]: the lease's holder
    /// listens only once it has brought its copy up to the log, and its
    /// subscription reaches the other NATS servers a moment later. Members
    /// joining a group at once through two nodes met exactly that.
    async fn ask(&self, id: &str, command: &Forwarded) -> Result<Answer, ServerError> {
        let payload = to_bytes(command);
        let until = tokio::time::Instant::now() + NO_OWNER_PATIENCE;
        let mut pause = Duration::from_millis(10);
        loop {
            let asked = commands::ask(
                &self.node.nats,
                self.group.as_str(),
                id,
                payload.clone(),
                ASK_TIMEOUT,
            )
            .await
            .map_err(|error| {
                tracing::warn!(group = %self.group, %error, "the group's node did not answer");
                replication(error)
            })?;
            match asked {
                Asked::Answered(bytes) => {
                    return serde_json::from_slice(&bytes).map_err(|_| {
                        ServerError::Internal("an unreadable answer from the group's node")
                    })
                }
                Asked::NoOwner
                    if tokio::time::Instant::now() + pause < until && self.owner_holds().await =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Asked::NoOwner => return Err(not_taken("no node serves the group now")),
            }
        }
    }

    /// Joins a connection here to the group; its frames then come to `outbox`.
    /// Before it returns, this node's copy of the group is brought up to the log
    /// (the session sends history from it).
    pub(crate) async fn join(
        &self,
        outbox: Outbox,
        request: crate::groups::JoinRequest,
    ) -> Result<JoinReply, ServerError> {
        self.node.relay.register(&outbox, &self.group, &self.owner);
        let counter = request.ticket.counter();
        let id = format!("{}-{counter}", request.key);
        let command = Forwarded::Join {
            node: self.node.holder.clone(),
            conn: outbox.conn.0,
            key: request.key,
            roles: request.roles,
            name: request.name,
            access_code: request.access_code,
            counter,
            env: request.env,
        };
        let answer = self.ask(&id, &command).await;
        match answer {
            Ok(Answer::Joined { reply }) => {
                let reply = *reply;
                let lock = self.node.group_lock(&self.group);
                let _held = lock.lock().await;
                super::replica::catch_up(&self.store, &self.node.logs, &self.group)
                    .await
                    .map_err(replication)?;
                Ok(reply)
            }
            Ok(other) => {
                self.node.relay.unregister(outbox.conn.0, &self.group);
                Err(other.into_error())
            }
            Err(error) => {
                self.node.relay.unregister(outbox.conn.0, &self.group);
                Err(error)
            }
        }
    }

    /// Sends a signed action; its ack or refusal comes as a frame.
    pub(crate) async fn signed(
        &self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        action: Action,
    ) -> Result<(), ServerError> {
        let id = format!("{key}-{counter}");
        let command = Forwarded::Signed {
            node: self.node.holder.clone(),
            conn: outbox.conn.0,
            key,
            request_id,
            counter,
            env,
            action,
        };
        self.ask(&id, &command).await?.queued()
    }

    /// Opens an escalation's private line on a connection here: the history and
    /// the `line` reply come as frames.
    pub(crate) async fn line_open(
        &self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        escalation: u64,
        grant: crate::escalation::LineGrant,
    ) -> Result<(), ServerError> {
        self.node.relay.register(outbox, &self.group, &self.owner);
        let id = format!("line-{}-{}-{escalation}", self.node.holder, outbox.conn.0);
        let command = Forwarded::LineOpen {
            node: self.node.holder.clone(),
            conn: outbox.conn.0,
            key,
            request_id,
            escalation,
            grant,
        };
        match self.ask(&id, &command).await {
            Ok(Answer::Queued) => Ok(()),
            Ok(other) => {
                self.node.relay.unregister(outbox.conn.0, &self.group);
                Err(other.into_error())
            }
            Err(error) => {
                self.node.relay.unregister(outbox.conn.0, &self.group);
                Err(error)
            }
        }
    }

    /// A supervisor's post on an escalation's line; its ack comes as a frame.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn line_post(
        &self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        to: PublicKey,
        grant: crate::escalation::LineGrant,
    ) -> Result<(), ServerError> {
        self.node.relay.register(outbox, &self.group, &self.owner);
        let id = format!("{key}-{counter}");
        let command = Forwarded::LinePost {
            node: self.node.holder.clone(),
            conn: outbox.conn.0,
            key,
            request_id,
            counter,
            env,
            to,
            grant,
        };
        self.ask(&id, &command).await?.queued()
    }

    /// A hub note for the group (the router's `support_asked`), written by its
    /// task on the owner.
    pub(crate) async fn hub_note(
        &self,
        channel: peerhub_protocol::frame::Channel,
        note: peerhub_protocol::frame::Note,
    ) -> Result<(), ServerError> {
        let id = unique_id("note", &self.node.holder);
        self.ask(&id, &Forwarded::HubNote { channel, note })
            .await?
            .queued()
    }

    /// An operator clears the group's waiting room (`entry`: the audit entry,
    /// signed by the hub's key); how many left, once durable on the owner.
    pub(crate) async fn clear_waiting(
        &self,
        entry: crate::audit::NewEntry,
    ) -> Result<usize, ServerError> {
        let id = unique_id("clear", &self.node.holder);
        match self.ask(&id, &Forwarded::ClearWaiting { entry }).await? {
            Answer::Cleared { count } => Ok(count),
            other => Err(other.into_error()),
        }
    }

    /// An erasure's group part (docs/CLUSTER.md §8, "Erase"), carried out by the
    /// group's owner: the tombstones and the member rewrite, then the rebase.
    pub(crate) async fn erase(
        &self,
        key: PublicKey,
        hub_key: PublicKey,
    ) -> Result<crate::cluster::erasure::GroupErased, ServerError> {
        let id = unique_id("erase", &self.node.holder);
        match self.ask(&id, &Forwarded::Erase { key, hub_key }).await? {
            Answer::Erased { erased } => Ok(erased),
            other => Err(other.into_error()),
        }
    }

    /// The connection leaves the group.
    pub(crate) async fn leave(&self, conn: ConnId) {
        self.node.relay.unregister(conn.0, &self.group);
        let command = Forwarded::Leave {
            node: self.node.holder.clone(),
            conn: conn.0,
        };
        let id = format!("leave-{}-{}", self.node.holder, conn.0);
        if let Err(error) = self.ask(&id, &command).await {
            tracing::debug!(group = %self.group, %error, "leave not delivered; the owner's proxy stays until it is told or stops");
        }
    }
}

/// The owner's side: takes `group`'s commands from other nodes and hands them to
/// its task (`tx`, held weakly so the task still ends when the hub lets go of
/// it) until the task stops.
pub(crate) async fn serve(
    node: Arc<ClusterNode>,
    group: GroupId,
    tx: mpsc::WeakSender<Mail>,
    ended: tokio_util::sync::CancellationToken,
    replay: ReplayGuard,
    proxy: ProxySettings,
) {
    let mut inbox = match Inbox::serve(&node.nats, group.as_str()).await {
        Ok(inbox) => inbox,
        Err(error) => {
            tracing::error!(%group, %error, "cannot take the group's commands from other nodes");
            return;
        }
    };
    let mut replies = Replies::new(REMEMBERED);
    loop {
        let command = tokio::select! {
            command = inbox.next() => command,
            () = ended.cancelled() => None,
        };
        let Some(command) = command else { break };
        if let Some(answer) = replies.get(&command.id) {
            let _ = inbox.answer(&command, answer.clone()).await;
            continue;
        }
        let Some(sender) = tx.upgrade() else { break };
        let answer = match serde_json::from_slice::<Forwarded>(&command.payload) {
            Ok(forwarded) => handle(&node, &group, &sender, &replay, &proxy, forwarded).await,
            Err(_) => Answer::refused(&ServerError::Internal(
                "an unreadable command from another node",
            )),
        };
        let bytes = to_bytes(&answer);
        // A signed command's answer is kept for its retry (same key and
        // counter). A leave or a line's opening is not: it carries no counter,
        // may come again for the same connection later, and is harmless twice.
        if !command.id.starts_with("leave-") && !command.id.starts_with("line-") {
            replies.remember(&command.id, bytes.clone());
        }
        if let Err(error) = inbox.answer(&command, bytes).await {
            tracing::debug!(%group, %error, "a command's answer was not sent");
        }
    }
    inbox.close().await;
    tracing::debug!(%group, "no longer taking the group's commands from other nodes");
}

/// Hands the group's task a command made with its reply channel and waits for
/// the answer (a stopped task: shutting down).
async fn answered<T>(
    tx: &mpsc::Sender<Mail>,
    command: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, ServerError>>) -> GroupCommand,
) -> Result<T, ServerError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send(Box::new(command(reply)))
        .await
        .map_err(|_| ServerError::ShuttingDown)?;
    answer.await.unwrap_or(Err(ServerError::ShuttingDown))
}

async fn handle(
    node: &Arc<ClusterNode>,
    group: &GroupId,
    tx: &mpsc::Sender<Mail>,
    replay: &ReplayGuard,
    settings: &ProxySettings,
    forwarded: Forwarded,
) -> Answer {
    let send = |command: GroupCommand| async move {
        tx.send(Box::new(command))
            .await
            .map_err(|_| ServerError::ShuttingDown)
    };
    match forwarded {
        Forwarded::Join {
            node: from,
            conn,
            key,
            roles,
            name,
            access_code,
            counter,
            env,
        } => {
            let outbox = node.relay.proxy(node, &from, conn, settings);
            let ticket = replay.forwarded(&key, counter);
            let joined = answered(tx, |reply| GroupCommand::Join {
                outbox,
                key,
                roles,
                name,
                access_code,
                ticket,
                env,
                reply,
            })
            .await;
            match joined {
                Ok(reply) => Answer::Joined {
                    reply: Box::new(reply),
                },
                Err(error) => {
                    node.relay.proxy_done(&from, conn);
                    Answer::refused(&error)
                }
            }
        }
        Forwarded::Signed {
            node: from,
            conn,
            key,
            request_id,
            counter,
            env,
            action,
        } => {
            let Some(outbox) = node.relay.proxy_of(&from, conn) else {
                return Answer::refused(&ServerError::NotJoined(group.clone()));
            };
            Answer::of(
                send(GroupCommand::Signed {
                    outbox,
                    key,
                    request_id,
                    ticket: replay.forwarded(&key, counter),
                    env,
                    action,
                })
                .await,
            )
        }
        Forwarded::ClearWaiting { entry } => {
            match answered(tx, |reply| GroupCommand::ClearWaiting { entry, reply }).await {
                Ok(count) => Answer::Cleared { count },
                Err(error) => Answer::refused(&error),
            }
        }
        Forwarded::Erase { key, hub_key } => {
            let erased = answered(tx, |reply| GroupCommand::Erase {
                key,
                hub_key,
                reply,
            })
            .await;
            match erased {
                Ok(erased) => Answer::Erased { erased },
                Err(error) => Answer::refused(&error),
            }
        }
        Forwarded::HubNote { channel, note } => {
            Answer::of(send(GroupCommand::HubNote { channel, note }).await)
        }
        Forwarded::LineOpen {
            node: from,
            conn,
            key,
            request_id,
            escalation,
            grant,
        } => {
            let outbox = node.relay.line_proxy(node, &from, conn, settings);
            Answer::of(
                send(GroupCommand::LineOpen {
                    outbox,
                    key,
                    request_id,
                    escalation,
                    grant,
                })
                .await,
            )
        }
        Forwarded::LinePost {
            node: from,
            conn,
            key,
            request_id,
            counter,
            env,
            to,
            grant,
        } => {
            let outbox = node.relay.line_proxy(node, &from, conn, settings);
            Answer::of(
                send(GroupCommand::LinePost {
                    outbox,
                    key,
                    request_id,
                    ticket: replay.forwarded(&key, counter),
                    env,
                    to,
                    grant,
                })
                .await,
            )
        }
        Forwarded::Leave { node: from, conn } => {
            if let Some(outbox) = node.relay.proxy_of(&from, conn) {
                let _ = send(GroupCommand::Leave { conn: outbox.conn }).await;
                node.relay.proxy_done(&from, conn);
            }
            Answer::Queued
        }
    }
}

impl Relay {
    /// The proxy outbox for connection `conn` of node `from`, made on its first
    /// join here (its frames are published as they are queued).
    pub(crate) fn proxy(
        &self,
        node: &Arc<ClusterNode>,
        from: &str,
        conn: u64,
        settings: &ProxySettings,
    ) -> Outbox {
        let mut proxies = lock(&self.proxies);
        let key = (from.to_string(), conn);
        if let Some(proxy) = proxies.get_mut(&key) {
            if !proxy.outbox.kicked().is_cancelled() {
                proxy.groups += 1;
                return proxy.outbox.clone();
            }
        }
        let (outbox, receiver) = crate::outbound::outbox(
            ConnId::next(),
            settings.frames,
            settings.bytes,
            settings.drops.clone(),
        );
        // Numbered per proxy: a proxy made again for the same connection
        // (it left every group here, then joined one) starts from 1 again.
        tokio::spawn(publish_frames(
            node.nats.clone(),
            format!("{}/{}", node.holder, outbox.conn.0),
            frames_subject(from, conn),
            receiver,
        ));
        proxies.insert(
            key,
            Proxy {
                outbox: outbox.clone(),
                groups: 1,
            },
        );
        outbox
    }

    /// The nodes that have connections proxied here.
    fn proxied_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = lock(&self.proxies).keys().map(|(n, _)| n.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Lets go of every proxy of node `from`; returns their connections here.
    fn drop_node(&self, from: &str) -> Vec<ConnId> {
        let mut proxies = lock(&self.proxies);
        let gone: Vec<(String, u64)> = proxies.keys().filter(|(n, _)| n == from).cloned().collect();
        gone.into_iter()
            .filter_map(|key| proxies.remove(&key))
            .map(|proxy| {
                proxy.outbox.kicked().cancel();
                proxy.outbox.conn
            })
            .collect()
    }

    /// The proxy a supervisor's line uses: the connection's own, or a new one.
    fn line_proxy(
        &self,
        node: &Arc<ClusterNode>,
        from: &str,
        conn: u64,
        settings: &ProxySettings,
    ) -> Outbox {
        match self.proxy_of(from, conn) {
            Some(outbox) => outbox,
            None => self.proxy(node, from, conn, settings),
        }
    }

    /// The proxy for connection `conn` of node `from`, if it has one here.
    pub(crate) fn existing_proxy(&self, from: &str, conn: u64) -> Option<Outbox> {
        self.proxy_of(from, conn)
    }

    /// One user of the proxy fewer (the router's registration of it ended).
    pub(crate) fn release_proxy(&self, from: &str, conn: u64) {
        self.proxy_done(from, conn);
    }

    fn proxy_of(&self, from: &str, conn: u64) -> Option<Outbox> {
        lock(&self.proxies)
            .get(&(from.to_string(), conn))
            .map(|p| p.outbox.clone())
    }

    /// One group fewer uses the proxy; the last lets it go (its publisher ends
    /// when the group tasks' copies are gone too).
    fn proxy_done(&self, from: &str, conn: u64) {
        let mut proxies = lock(&self.proxies);
        let key = (from.to_string(), conn);
        if let Some(proxy) = proxies.get_mut(&key) {
            proxy.groups = proxy.groups.saturating_sub(1);
            if proxy.groups == 0 {
                proxies.remove(&key);
            }
        }
    }
}

/// Publishes what a proxy outbox queues, numbered, until every sender is gone
/// (the connection left every group here: nothing to say); a kicked proxy
/// sends the kick and stops.
async fn publish_frames(
    nats: Nats,
    owner: String,
    subject: String,
    mut receiver: crate::outbound::OutboxReceiver,
) {
    let mut number: u64 = 0;
    let kicked = receiver.kicked.clone();
    loop {
        let frame = tokio::select! {
            biased;
            frame = receiver.recv() => match frame {
                Some(frame) => Some(frame),
                // Let go of normally: the connection stays open.
                None if !kicked.is_cancelled() => return,
                None => None,
            },
            () = kicked.cancelled() => None,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(OWNER_HEADER, owner.as_str());
        let payload = match frame {
            Some(frame) => {
                number += 1;
                headers.insert(FRAME_HEADER, number.to_string().as_str());
                Bytes::from(frame)
            }
            None => {
                headers.insert(KICK_HEADER, "1");
                Bytes::new()
            }
        };
        let last = payload.is_empty();
        if let Err(error) = nats
            .client()
            .publish_with_headers(subject.clone(), headers, payload)
            .await
        {
            tracing::debug!(%error, "a frame for another node was not sent");
        }
        if last {
            return;
        }
    }
}

/// A failure of the cluster under a group (its log, its lease): the client may
/// join again and look, then send again.
pub(crate) fn replication(error: ClusterError) -> ServerError {
    not_taken(error.to_string())
}

/// A command the cluster did not take, for `reason` (no owner or leader, no
/// answer in time): `storage_unavailable`, nothing was acknowledged.
pub(crate) fn not_taken(reason: impl Into<String>) -> ServerError {
    ServerError::Store(Arc::new(crate::store::StoreError::Replication(
        reason.into(),
    )))
}

/// A command id used once: `<what>-<node>-<n>` (for requests that carry no
/// signed counter of their own).
pub(crate) fn unique_id(what: &str, holder: &str) -> String {
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{what}-{holder}-{n}")
}
