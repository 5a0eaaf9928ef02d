//! Groups: the registry of live group tasks, and group creation.
//!
//! Each live group has one task ([`actor::GroupActor`]) that owns its order (a
//! gap-free `seq` per channel), its [`room::Room`] (members, session, controls) and
//! its subscribers. Sessions talk to it through a [`GroupHandle`]. The registry
//! spawns a group's task on first use and respawns it if it stopped after a store
//! failure; on shutdown it drops its handles so each task finishes the commands it
//! holds and exits.

mod actor;
mod controls;
pub mod room;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use peerhub_protocol::frame::{Channel, GroupInfo, GroupState, MemberInfo, MemberStatus, Role};
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

pub use actor::{event_frame, history_frame};
pub(crate) use actor::{Action, GroupCommand, Mail};

use crate::audit::{action, AuditLog, NewEntry};
use crate::clock::Clock;
use crate::error::ServerError;
use crate::outbound::{ConnId, Outbox};
use crate::store::records::GroupRecord;
use crate::store::{Committer, Store, StoreError};
use room::{Member, Room};

/// How many commands may wait for a group's task before senders wait too.
const MAILBOX_CAPACITY: usize = 1024;

/// How many people a group's room and waiting room hold, and how long a knock
/// on the waiting room is kept.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// People in the room: participants admitted this session, and staff.
    pub max_members: usize,
    /// People in the waiting room (never admitted, not declined this session).
    pub max_waiting: usize,
    /// A waiting-only record of someone not connected expires this long (ms)
    /// after their first join.
    pub waiting_expiry_ms: u64,
    /// Bytes the `members` list of a `joined` frame may take, so that the frame
    /// always fits a connection's outbox (a quarter of it).
    pub joined_members_bytes: usize,
    /// Bytes of entries (as JSON) one co-produced record may hold: every write
    /// answers and pushes the whole record through the outbox (a quarter of it).
    pub record_bytes: usize,
}

impl GroupLimits {
    /// The limits a hub's settings give.
    pub fn from_settings(limits: &crate::limits::LimitSettings) -> Self {
        Self {
            max_members: limits.max_members_per_group,
            max_waiting: limits.max_waiting_per_group,
            waiting_expiry_ms: limits.waiting_expiry.as_millis() as u64,
            joined_members_bytes: 256 * 1024,
            record_bytes: 256 * 1024,
        }
    }

    /// The same, with the `joined` member list and records sized to connections
    /// holding `outbox_bytes`.
    pub fn for_outbox(mut self, outbox_bytes: usize) -> Self {
        self.joined_members_bytes = outbox_bytes / 4;
        self.record_bytes = outbox_bytes / 4;
        self
    }
}

/// What a session gets back from joining.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct JoinReply {
    /// The group.
    pub info: GroupInfo,
    /// The newest durable main-channel seq when the join was ordered.
    pub head: u64,
    /// The oldest main-channel seq still kept (`head + 1` if none).
    pub oldest: u64,
    /// Members the joiner may see, those who matter now first, bounded.
    pub members: Vec<MemberInfo>,
    /// How many members the joiner may see in all.
    pub members_total: u64,
    /// Where the joiner stands.
    pub status: MemberStatus,
    /// The group's state.
    pub state: GroupState,
    /// Whether the joiner sees the main channel (history follows).
    pub in_room: bool,
    /// Whether the joiner is a facilitator here (sees redacted text, staff channel).
    pub facilitator: bool,
    /// Other channels the joiner reads (staff, check-ins), with their heads.
    pub other_channels: Vec<(Channel, u64)>,
}

/// The tag of an access code's stored form.
const KEYED: &str = "hmac1:";

fn code_mac(secret: &[u8; 32], digest: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(digest);
    mac
}

/// The stored form of an access code: `"hmac1:" + hex(HMAC-SHA256(secret,
/// SHA256(trim(code))))`, the secret being the hub's
/// ([`Store::access_code_secret`]). Hashing the digest (not the code) lets an
/// older unkeyed hash be re-keyed without knowing the code.
pub fn access_code_hash(secret: &[u8; 32], code: &str) -> String {
    let digest = Sha256::digest(code.trim().as_bytes());
    KEYED.to_string() + &hex::encode(code_mac(secret, &digest).finalize().into_bytes())
}

/// Whether `code` opens a group whose stored form is `stored` (in constant time).
pub fn access_code_matches(secret: &[u8; 32], stored: &str, code: &str) -> bool {
    let Some(tag) = stored.strip_prefix(KEYED).and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let digest = Sha256::digest(code.trim().as_bytes());
    code_mac(secret, &digest).verify_slice(&tag).is_ok()
}

/// An older stored form (plain hex SHA-256 of the trimmed code) in the keyed
/// form; `None` when `stored` is not one.
fn rekeyed(secret: &[u8; 32], stored: &str) -> Option<String> {
    let digest = hex::decode(stored).ok().filter(|d| d.len() == 32)?;
    Some(KEYED.to_string() + &hex::encode(code_mac(secret, &digest).finalize().into_bytes()))
}

/// Start-up migration (issue 14, item 7): re-keys unkeyed access-code hashes and
/// drops the kept `create_group` envelope of every group whose signed payload
/// carried its code (from before the code moved beside the envelope). When
/// anything changed, the store is rewritten so the old bytes leave the folder.
/// Returns how many groups changed. (The audit chain's `group.create` entries
/// are not rewritten: see OPERATIONS.md.)
pub fn migrate_access_codes(store: &Store) -> Result<usize, StoreError> {
    let mut secret = None;
    let mut changed = 0;
    for mut group in store.groups()? {
        let mut touched = false;
        if let Some(old) = group.access_code_hash.clone() {
            if !old.starts_with(KEYED) {
                let secret = match secret {
                    Some(s) => s,
                    None => *secret.insert(store.access_code_secret()?),
                };
                // Not a digest either: unusable, so the door stays shut (no
                // code matches) rather than open.
                group.access_code_hash =
                    Some(rekeyed(&secret, &old).unwrap_or_else(|| KEYED.to_string()));
                touched = true;
            }
        }
        let holds_code = group.created_env.as_ref().is_some_and(|env| {
            serde_json::from_str::<serde_json::Value>(&env.payload)
                .ok()
                .is_some_and(|p| p.get("access_code").is_some())
        });
        if holds_code {
            group.created_env = None;
            touched = true;
        }
        if touched {
            store.put_group(&group)?;
            changed += 1;
        }
    }
    if changed > 0 {
        store.flush()?;
        store.compact()?;
    }
    Ok(changed)
}

/// A session's line to one group's task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupHandle {
    // Sender: sessions. Receiver: the group's task. Bounded: a flood of commands
    // makes the senders wait, which in turn stops them reading their sockets.
    // Cluster mode, a group served by another node: `None`, and `remote` set.
    tx: Option<mpsc::Sender<Mail>>,
    remote: Option<Arc<crate::cluster::remote::RemoteGroup>>,
}

/// A join request as the session admitted it.
#[derive(Debug)]
pub struct JoinRequest {
    /// The joining key.
    pub key: PublicKey,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Its normalised display name.
    pub name: String,
    /// The access code given, if any.
    pub access_code: Option<String>,
    /// The join's counter, held until the group has handled it.
    pub ticket: crate::admission::CounterTicket,
    /// The signed join.
    pub env: SignedEnvelope,
}

impl GroupHandle {
    fn local(tx: mpsc::Sender<Mail>) -> Self {
        Self {
            tx: Some(tx),
            remote: None,
        }
    }

    fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    async fn send(&self, command: GroupCommand) -> Result<(), ServerError> {
        let Some(tx) = &self.tx else {
            return Err(ServerError::Forbidden(
                "this is not yet possible for a group served by another node of the cluster",
            ));
        };
        tx.send(Box::new(command))
            .await
            .map_err(|_| ServerError::ShuttingDown)
    }

    /// Joins a connection to the group; its events then go to `outbox`.
    pub async fn join(
        &self,
        outbox: Outbox,
        request: JoinRequest,
    ) -> Result<JoinReply, ServerError> {
        if let Some(remote) = &self.remote {
            return remote.join(outbox, request).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(GroupCommand::Join {
            outbox,
            key: request.key,
            roles: request.roles,
            name: request.name,
            access_code: request.access_code,
            ticket: request.ticket,
            env: request.env,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// Queues a signed action. Its ack or error goes to `outbox`.
    pub(crate) async fn signed(
        &self,
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        ticket: crate::admission::CounterTicket,
        env: SignedEnvelope,
        action: Action,
    ) -> Result<(), ServerError> {
        if let Some(remote) = &self.remote {
            return remote
                .signed(&outbox, key, request_id, ticket.counter(), env, action)
                .await;
        }
        self.send(GroupCommand::Signed {
            outbox,
            key,
            request_id,
            ticket,
            env,
            action,
        })
        .await
    }

    /// An operator clears the waiting room (`entry`: the audit entry, signed by
    /// the hub's key); returns how many people left it, once that is durable.
    pub async fn clear_waiting(&self, entry: NewEntry) -> Result<usize, ServerError> {
        if let Some(remote) = &self.remote {
            return remote.clear_waiting(entry).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(GroupCommand::ClearWaiting { entry, reply })
            .await?;
        answer.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// Cluster mode, a group served here: its task deletes the events written
    /// before `before_ms` through the group's log and trims the log
    /// ([`actor::GroupCommand::Expire`]); how many events went.
    pub async fn expire(&self, before_ms: Option<u64>) -> Result<usize, ServerError> {
        if self.remote.is_some() {
            return Err(ServerError::Forbidden(
                "retention expires a group on the node that serves it",
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.send(GroupCommand::Expire { before_ms, reply }).await?;
        answer.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// Cluster mode, a group served here: its task writes the group part of
    /// `key`'s erasure through the group's log and rebases the log
    /// ([`actor::GroupCommand::Erase`]).
    pub async fn erase(
        &self,
        key: PublicKey,
        hub_key: PublicKey,
    ) -> Result<crate::cluster::erasure::GroupErased, ServerError> {
        if self.remote.is_some() {
            return Err(ServerError::Forbidden(
                "an erasure reaches a group on the node that serves it",
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.send(GroupCommand::Erase {
            key,
            hub_key,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// Hands a hub note for `channel` to the group's task without waiting (it is
    /// durable with the group's next commit, then fanned out to whoever reads the
    /// channel). A full mailbox gives the note back; a stopped task drops it.
    pub fn try_hub_note(
        &self,
        channel: Channel,
        note: peerhub_protocol::frame::Note,
    ) -> Result<(), HubNoteRefused> {
        use tokio::sync::mpsc::error::TrySendError;
        let Some(tx) = &self.tx else {
            return Err(HubNoteRefused::Stopped);
        };
        match tx.try_send(Box::new(GroupCommand::HubNote { channel, note })) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(command)) => match *command {
                GroupCommand::HubNote { note, .. } => Err(HubNoteRefused::Full(note)),
                _ => Err(HubNoteRefused::Stopped),
            },
            Err(_) => Err(HubNoteRefused::Stopped),
        }
    }

    /// Whether the group's task runs on another node (cluster mode).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// A hub note for a group whose task runs on another node: sent there, and
    /// durable with that task's next commit.
    pub async fn hub_note_elsewhere(
        &self,
        channel: Channel,
        note: peerhub_protocol::frame::Note,
    ) -> Result<(), ServerError> {
        match &self.remote {
            Some(remote) => remote.hub_note(channel, note).await,
            None => Err(ServerError::Internal("the group's task runs here")),
        }
    }

    /// A supervisor's post on an escalation's private line (§8.5); its ack or
    /// error goes to `outbox`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn line_post(
        &self,
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        ticket: crate::admission::CounterTicket,
        env: SignedEnvelope,
        to: PublicKey,
        grant: crate::escalation::LineGrant,
    ) -> Result<(), ServerError> {
        if let Some(remote) = &self.remote {
            return remote
                .line_post(&outbox, key, request_id, ticket.counter(), env, to, grant)
                .await;
        }
        self.send(GroupCommand::LinePost {
            outbox,
            key,
            request_id,
            ticket,
            env,
            to,
            grant,
        })
        .await
    }

    /// Opens an escalation's private line on a connection: its history, then the
    /// `line` reply, to `outbox`.
    pub(crate) async fn line_open(
        &self,
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        escalation: u64,
        grant: crate::escalation::LineGrant,
    ) -> Result<(), ServerError> {
        if let Some(remote) = &self.remote {
            return remote
                .line_open(&outbox, key, request_id, escalation, grant)
                .await;
        }
        self.send(GroupCommand::LineOpen {
            outbox,
            key,
            request_id,
            escalation,
            grant,
        })
        .await
    }

    /// Stops sending the group's events to a connection.
    pub async fn leave(&self, conn: ConnId) {
        if let Some(remote) = &self.remote {
            return remote.leave(conn).await;
        }
        // A group task that is gone has no subscriber to remove.
        let _ = self.send(GroupCommand::Leave { conn }).await;
    }
}

/// Why a group's task did not take a hub note.
#[derive(Debug)]
pub enum HubNoteRefused {
    /// Its mailbox is full: the note, to offer again.
    Full(peerhub_protocol::frame::Note),
    /// The task has stopped (the hub is stopping).
    Stopped,
}

/// The live groups.
#[derive(Debug)]
pub struct GroupRegistry {
    store: Store,
    committer: Committer,
    clock: Clock,
    tracker: TaskTracker,
    audit: Arc<AuditLog>,
    limits: GroupLimits,
    metrics: Arc<crate::metrics::Metrics>,
    risk_phrases: Arc<crate::risk_phrases::RiskPhrases>,
    // Locked only to look up or insert a handle; never held across an await.
    live: Mutex<HashMap<GroupId, GroupHandle>>,
    closed: AtomicBool,
    cluster: Option<ClusterWiring>,
}

/// What the registry needs in cluster mode.
#[derive(Debug, Clone)]
pub struct ClusterWiring {
    /// This node.
    pub node: Arc<crate::cluster::node::ClusterNode>,
    /// The replay guard (commands from other nodes were checked there).
    pub replay: crate::admission::ReplayGuard,
    /// How proxy outboxes for other nodes' connections are bounded.
    pub proxy: crate::cluster::remote::ProxySettings,
}

impl GroupRegistry {
    /// An empty registry; group tasks are tracked by `tracker`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        committer: Committer,
        clock: Clock,
        tracker: TaskTracker,
        audit: Arc<AuditLog>,
        limits: GroupLimits,
        metrics: Arc<crate::metrics::Metrics>,
        risk_phrases: Vec<String>,
    ) -> Self {
        Self {
            store,
            committer,
            clock,
            tracker,
            audit,
            limits,
            metrics,
            risk_phrases: Arc::new(crate::risk_phrases::RiskPhrases::new(&risk_phrases)),
            live: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            cluster: None,
        }
    }

    fn load_room(&self, group: GroupRecord) -> Result<Room, ServerError> {
        load_room(&self.store, group)
    }

    /// Cluster mode: this registry's groups are served on one node at a time.
    pub fn with_cluster(mut self, wiring: ClusterWiring) -> Self {
        self.cluster = Some(wiring);
        self
    }

    /// The handle of a group's task, starting the task if needed. In cluster
    /// mode only a task already running here: use [`Self::handle_for`].
    pub fn handle(&self, id: &GroupId) -> Result<GroupHandle, ServerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ServerError::ShuttingDown);
        }
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = live.get(id) {
            if !handle.is_closed() {
                return Ok(handle.clone());
            }
        }
        if self.cluster.is_some() {
            return Err(ServerError::Forbidden(
                "this is not yet possible for a group served by another node of the cluster",
            ));
        }
        self.spawn(&mut live, id, None)
    }

    /// Starts a group's task (under `owned` in cluster mode) and keeps its handle.
    fn spawn(
        &self,
        live: &mut HashMap<GroupId, GroupHandle>,
        id: &GroupId,
        owned: Option<Box<crate::cluster::owner::Owned>>,
    ) -> Result<GroupHandle, ServerError> {
        let record = self
            .store
            .group(id)?
            .ok_or_else(|| ServerError::GroupNotFound(id.clone()))?;
        let room = self.load_room(record)?;
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        let mut actor = actor::GroupActor::new(
            room,
            self.store.clone(),
            self.committer.clone(),
            self.clock.clone(),
            self.audit.clone(),
            self.limits,
            self.metrics.clone(),
            self.risk_phrases.clone(),
            rx,
        );
        if let Some(owned) = owned {
            actor = actor.owned_by(owned);
        }
        let ended = tokio_util::sync::CancellationToken::new();
        let ended_guard = ended.clone().drop_guard();
        self.tracker.spawn(async move {
            let _ended = ended_guard;
            actor.run().await;
        });
        if let Some(wiring) = &self.cluster {
            self.tracker.spawn(crate::cluster::remote::serve(
                wiring.node.clone(),
                id.clone(),
                tx.downgrade(),
                ended,
                wiring.replay.clone(),
                wiring.proxy.clone(),
            ));
        }
        let handle = GroupHandle::local(tx);
        live.insert(id.clone(), handle.clone());
        Ok(handle)
    }

    /// The handle of a group's task wherever it runs: here (started, after
    /// taking the group's lease, if no node serves it), or on the node that
    /// serves it (cluster mode). On one node, [`Self::handle`].
    pub async fn handle_for(&self, id: &GroupId) -> Result<GroupHandle, ServerError> {
        let Some(wiring) = &self.cluster else {
            return self.handle(id);
        };
        if let Ok(handle) = self.handle(id) {
            return Ok(handle);
        }
        if !wiring.node.is_in_touch() {
            // The other nodes take this one for gone until it holds its
            // presence again (`cluster::presence`): no group is taken or
            // reached through it meanwhile.
            return Err(crate::cluster::remote::not_taken(
                "this node is getting back in touch with the cluster; try again in a moment",
            ));
        }
        let lock = wiring.node.group_lock(id);
        let _taking = lock.lock().await;
        if let Ok(handle) = self.handle(id) {
            return Ok(handle);
        }
        if self.store.group(id)?.is_none() {
            // Not mirrored here yet, or no such group.
            match wiring.node.directory.group(id).await? {
                Some(record) => self.store.put_group(&record)?,
                None => return Err(ServerError::GroupNotFound(id.clone())),
            }
        }
        match crate::cluster::owner::take(&wiring.node, &self.store, id)
            .await
            .map_err(crate::cluster::remote::replication)?
        {
            crate::cluster::owner::Taken::Owned(owned) => {
                if self.closed.load(Ordering::Acquire) {
                    owned.release().await;
                    return Err(ServerError::ShuttingDown);
                }
                let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                self.spawn(&mut live, id, Some(owned))
            }
            crate::cluster::owner::Taken::Held { holder } => Ok(GroupHandle {
                tx: None,
                remote: Some(Arc::new(crate::cluster::remote::RemoteGroup::new(
                    wiring.node.clone(),
                    self.store.clone(),
                    id.clone(),
                    holder,
                ))),
            }),
        }
    }

    /// Creates a group record and its first state (durably). `counter` is the
    /// creator's spent counter.
    ///
    /// In cluster mode (`directory`) the id is taken in the cluster's directory
    /// first, by compare-and-set: an id created at once on two nodes is created
    /// once, and the other gets [`ServerError::GroupExists`] as a duplicate does.
    pub async fn create(
        &self,
        record: GroupRecord,
        agreement: Option<String>,
        creator: &PublicKey,
        counter: u64,
        directory: Option<&crate::cluster::directory::Directory>,
    ) -> Result<(), ServerError> {
        let Some(env) = record.created_env.clone() else {
            return Err(ServerError::Forbidden(
                "a group is created by an admin's signed request",
            ));
        };
        let created = match directory {
            None => Creation::Here,
            Some(directory) => match directory.create_group_at(&record).await? {
                Some(revision) => Creation::InDirectory { revision },
                None => return Err(ServerError::GroupExists(record.id)),
            },
        };
        write_new_group(&self.store, &self.audit, record, env, agreement, created)?;
        self.store.raise_counter(creator, counter)?;
        self.committer.commit().await?;
        Ok(())
    }

    /// Tells a running group task to read its record again (after an operator
    /// changed it); a group without a task reads it when it next starts.
    pub async fn reload(&self, id: &GroupId) {
        let handle = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.get(id).cloned()
        };
        if let Some(handle) = handle {
            let _ = handle.send(actor::GroupCommand::Reload).await;
        }
    }

    /// Tells a running group task that `key`'s facilitator grant there changed
    /// (it is in the store already): a revoked facilitator loses their standing
    /// on their live connections at once. A group without a task reads the
    /// grant when it next starts.
    pub async fn regrant(&self, id: &GroupId, key: PublicKey, facilitator: bool) {
        let handle = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.get(id).cloned()
        };
        if let Some(handle) = handle {
            let _ = handle
                .send(actor::GroupCommand::Regrant { key, facilitator })
                .await;
        }
    }

    /// An operator clears a group's waiting room through its task (started if
    /// needed); returns how many people left it.
    pub async fn clear_waiting(&self, id: &GroupId, entry: NewEntry) -> Result<usize, ServerError> {
        self.handle_for(id).await?.clear_waiting(entry).await
    }

    /// Whether this node runs `id`'s task now (its store is then the group's
    /// latest copy).
    pub fn is_served_here(&self, id: &GroupId) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(id).is_some_and(|h| !h.is_closed())
    }

    /// Takes connection `conn` out of every group running here (a proxy for a
    /// connection on a node that is gone).
    pub async fn leave_everywhere(&self, conn: ConnId) {
        let handles: Vec<GroupHandle> = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.values().cloned().collect()
        };
        for handle in handles {
            handle.leave(conn).await;
        }
    }

    /// How many groups have a running task.
    pub fn live_count(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.values().filter(|h| !h.is_closed()).count()
    }

    /// Refuses new group tasks and drops every handle, so each task ends once the
    /// sessions' handles are gone too.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A group's records from the store, as its task holds them (operators use it on
/// a stopped hub's folder).
pub fn load_room(store: &Store, group: GroupRecord) -> Result<Room, ServerError> {
    let state = match store.group_state(&group.id)? {
        Some(state) => state,
        None => {
            // A group from before state records: derive the heads from its log.
            let mut state = room::initial_state(None);
            let main = store.last_seq(&group.id, &Channel::Main)?;
            if main > 0 {
                state.heads.push((Channel::Main, main));
            }
            state
        }
    };
    let mut members = BTreeMap::new();
    for record in store.members(&group.id)? {
        // A supervisor's reach into a group comes with an escalation about it and
        // is decided when they join; a loaded record holds only the standing the
        // key has here for good.
        let roles = roles_in_group(store, &record.key, &group.id)?;
        members.insert(
            record.key,
            Member {
                record,
                roles,
                last_post_ms: None,
            },
        );
    }
    Ok(Room {
        group,
        state,
        members,
    })
}

/// A group's record, state and the member records of just `keys` (point reads,
/// never the member list): enough for [`Room`]'s rules about those keys, for a
/// task other than the group's own (the escalation router deciding whether a
/// flagger may reach the person a flag is about).
pub fn room_of(store: &Store, group: GroupRecord, keys: &[PublicKey]) -> Result<Room, StoreError> {
    let state = store
        .group_state(&group.id)?
        .unwrap_or_else(|| room::initial_state(None));
    let mut members = BTreeMap::new();
    for key in keys {
        if let Some(record) = store.member_of(&group.id, key)? {
            let roles = roles_in_group(store, key, &group.id)?;
            members.insert(
                *key,
                Member {
                    record,
                    roles,
                    last_post_ms: None,
                },
            );
        }
    }
    Ok(Room {
        group,
        state,
        members,
    })
}

/// The roles `key` holds in `group` (PROTOCOL.md §13, "Staff model"): `admin`
/// hub-wide; `facilitator` only with a grant for this group. `supervisor` is left
/// out: a supervisor reaches a group only through an escalation about it, which
/// the session decides at join ([`crate::escalation::supervisor_reaches`]).
pub fn roles_in_group(
    store: &Store,
    key: &PublicKey,
    group: &GroupId,
) -> Result<Vec<Role>, StoreError> {
    let Some(account) = store.account(key)? else {
        return Ok(Vec::new());
    };
    Ok(account
        .roles
        .iter()
        .copied()
        .filter(|role| match role {
            Role::Admin => true,
            Role::Facilitator => account.facilitates.contains(group),
            Role::Supervisor => false,
        })
        .collect())
}

/// The `meta` marker of the migration to per-group facilitator grants.
pub const GRANTS_MIGRATED: &str = "migrated_facilitator_grants_v1";

/// Start-up migration (issue 14, item 2): the `facilitator` role used to open
/// every group; now it opens the groups it is granted. Each key holding it is
/// granted the groups where it already has standing — a member record (a
/// facilitator's record there was staff), a place as lead or co-facilitator, or
/// the group's creation — and no other. Runs once: the accounts and a `meta`
/// marker are written in one atomic batch, after an audit entry (signed by the
/// hub's key, `role.migrate_grants`) naming every grant, so no grant ever lacks
/// its entry. Returns how many keys were migrated (`None`: it had run before).
pub fn migrate_facilitator_grants(
    store: &Store,
    audit: &AuditLog,
    now_ms: u64,
) -> Result<Option<usize>, StoreError> {
    if store.migrated(GRANTS_MIGRATED)? {
        return Ok(None);
    }
    let facilitators: Vec<(PublicKey, crate::store::records::AccountRecord)> = store
        .accounts()?
        .into_iter()
        .filter(|(_, a)| a.roles.contains(&Role::Facilitator))
        .collect();
    let mut changed = Vec::new();
    if !facilitators.is_empty() {
        let groups = store.groups()?;
        for (key, mut account) in facilitators {
            for group in &groups {
                let state = store.group_state(&group.id)?;
                let standing = store.member_of(&group.id, &key)?.is_some()
                    || group.created_by == Some(key)
                    || state
                        .as_ref()
                        .is_some_and(|s| s.lead == Some(key) || s.co_facilitators.contains(&key));
                if standing && !account.facilitates.contains(&group.id) {
                    account.facilitates.push(group.id.clone());
                }
            }
            account.facilitates.sort();
            changed.push((key, account));
        }
    }
    if changed.is_empty() {
        // Nothing was granted (a new hub, or one without facilitators): only the
        // marker, and no entry for a change that did not happen.
        store.put_accounts_migrated(&[], GRANTS_MIGRATED)?;
        store.flush()?;
        return Ok(Some(0));
    }
    let detail: Vec<serde_json::Value> = changed
        .iter()
        .map(|(key, a)| serde_json::json!({ "key": key, "groups": a.facilitates }))
        .collect();
    let seed = store.hub_signing_seed()?;
    let payload = peerhub_protocol::payload::AdminPayload {
        action: action::ROLE_MIGRATE_GRANTS.into(),
        subject: None,
        group: None,
        detail: Some(serde_json::Value::Array(detail).to_string()),
        counter: now_ms,
        ts: now_ms,
    };
    let env = SignedEnvelope::sign_json(
        &ed25519_dalek::SigningKey::from_bytes(&seed),
        peerhub_protocol::Kind::Admin,
        &payload,
    );
    {
        let mut chain = audit.lock();
        chain.append(NewEntry::new(now_ms, action::ROLE_MIGRATE_GRANTS, env))?;
        store.put_accounts_migrated(&changed, GRANTS_MIGRATED)?;
    }
    store.flush()?;
    Ok(Some(changed.len()))
}

/// Checks a `create_group` request and makes the group's record: the one rule
/// for admins over the protocol and operators on the command line.
pub fn record_from_request(
    payload: &peerhub_protocol::payload::CreateGroupPayload,
    access_code: Option<&str>,
    secret: &[u8; 32],
    creator: Option<PublicKey>,
    env: SignedEnvelope,
    now_ms: u64,
) -> Result<GroupRecord, ServerError> {
    use peerhub_protocol::limits::{MAX_TEXT_CHARS, MAX_TITLE_CHARS};
    use peerhub_protocol::ProtocolError;
    let title = crate::text::check_text("title", &payload.title, MAX_TITLE_CHARS)?;
    if title != payload.title {
        return Err(ProtocolError::invalid("title", "leading or trailing white space").into());
    }
    if let Some(agreement) = &payload.agreement {
        crate::text::check_text("agreement", agreement, MAX_TEXT_CHARS)?;
    }
    if payload.access_code.is_some() {
        return Err(ProtocolError::invalid(
            "access_code",
            "give the code in the create_group frame beside the envelope, never inside the signed payload",
        )
        .into());
    }
    if let Some(code) = access_code {
        crate::text::check_text("access_code", code, 64)?;
    }
    check_schedule(&payload.schedule)?;
    if payload.retention.history_days == Some(0) {
        return Err(ProtocolError::invalid("retention", "history_days is at least 1").into());
    }
    Ok(GroupRecord {
        id: payload.group.clone(),
        title: payload.title.clone(),
        kind: payload.group_kind,
        created_ms: now_ms,
        created_by: creator,
        created_env: Some(env),
        access_code_hash: access_code.map(|code| access_code_hash(secret, code)),
        schedule: payload.schedule.clone(),
        retention: payload.retention,
        waiting_room: payload.waiting_room.unwrap_or(true),
    })
}

/// A schedule's rule: at most 500 windows, each ending after it starts.
pub fn check_schedule(
    schedule: &[peerhub_protocol::payload::SessionWindow],
) -> Result<(), ServerError> {
    use peerhub_protocol::ProtocolError;
    if schedule.len() > 500 {
        return Err(ProtocolError::invalid("schedule", "at most 500 windows").into());
    }
    if schedule.iter().any(|w| w.start_ms >= w.end_ms) {
        return Err(
            ProtocolError::invalid("schedule", "each window must end after it starts").into(),
        );
    }
    Ok(())
}

/// Where a new group's id was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// One node: in this store, by [`Store::create_group`].
    Here,
    /// Cluster mode: in the cluster's directory, at `revision` (the directory
    /// mirror may have put the record here already).
    InDirectory {
        /// The directory's revision of the new record.
        revision: u64,
    },
}

/// Writes a new group's record, its audit entry (`env`, the signed request) and
/// its first state. Not yet durable: the caller commits.
pub fn write_new_group(
    store: &Store,
    audit: &AuditLog,
    record: GroupRecord,
    env: SignedEnvelope,
    agreement: Option<String>,
    created: Creation,
) -> Result<(), ServerError> {
    let entry =
        NewEntry::new(record.created_ms, action::GROUP_CREATE, env).group(record.id.clone());
    {
        // Create and record under the chain's lock.
        let mut chain = audit.lock();
        match created {
            Creation::Here => {
                if !store.create_group(&record)? {
                    return Err(ServerError::GroupExists(record.id));
                }
            }
            Creation::InDirectory { revision } => {
                crate::cluster::directory::apply_own_write(store, revision, || {
                    store.put_group(&record)
                })?;
            }
        }
        chain.append(entry)?;
    }
    store.put_group_state(&record.id, &room::initial_state(agreement))?;
    Ok(())
}

/// The public view of a group record.
pub fn group_info(record: &GroupRecord) -> GroupInfo {
    GroupInfo {
        id: record.id.clone(),
        title: record.title.clone(),
        kind: record.kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::MemberRecord;
    use peerhub_protocol::payload::{GroupKind, Retention};

    fn group(id: &str, created_by: Option<PublicKey>) -> GroupRecord {
        GroupRecord {
            id: GroupId::parse(id).unwrap(),
            title: id.into(),
            kind: GroupKind::DropIn,
            created_ms: 0,
            created_by,
            created_env: None,
            access_code_hash: None,
            schedule: Vec::new(),
            retention: Retention::default(),
            waiting_room: true,
        }
    }

    fn member(key: PublicKey) -> MemberRecord {
        MemberRecord {
            key,
            name: "Jo".into(),
            join: None,
            first_joined_ms: 0,
            agreed_version: 0,
            agreement_env: None,
            admitted_session: None,
            declined_session: None,
            removed: None,
            muted_until_ms: None,
            away: false,
        }
    }

    /// A store written before grants were per group (accounts with the
    /// `facilitator` role and no `facilitates`, as `grant_role` still writes
    /// them) is migrated once at open: each facilitator gets the groups where it
    /// had standing, and no other; the change is audited; a second start changes
    /// nothing.
    #[test]
    fn an_old_format_store_gets_per_group_grants_once_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let (jo, sam, admin) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
        let (joined, led, created, other) = (
            GroupId::parse("joined").unwrap(),
            GroupId::parse("led").unwrap(),
            GroupId::parse("created").unwrap(),
            GroupId::parse("other").unwrap(),
        );
        {
            let store = Store::open(dir.path()).unwrap();
            store.grant_role(&jo, Role::Facilitator, 0).unwrap();
            store.grant_role(&sam, Role::Facilitator, 0).unwrap();
            store.grant_role(&admin, Role::Admin, 0).unwrap();
            store.grant_role(&admin, Role::Facilitator, 0).unwrap();
            for (id, by) in [
                ("joined", None),
                ("led", None),
                ("created", Some(admin)),
                ("other", None),
            ] {
                store.create_group(&group(id, by)).unwrap();
            }
            store.put_member(&joined, &member(jo)).unwrap();
            let mut state = room::initial_state(None);
            state.co_facilitators.push(sam);
            state.lead = Some(jo);
            store.put_group_state(&led, &state).unwrap();
            store.flush().unwrap();
            let raw = store.account(&jo).unwrap().unwrap();
            assert!(raw.facilitates.is_empty(), "the old form");
        }
        let store = Store::open(dir.path()).unwrap();
        let audit = AuditLog::open(store.clone()).unwrap();
        assert_eq!(
            migrate_facilitator_grants(&store, &audit, 5).unwrap(),
            Some(3)
        );
        let groups_of = |key| store.account(&key).unwrap().unwrap().facilitates;
        assert_eq!(groups_of(jo), vec![joined.clone(), led.clone()]);
        assert_eq!(groups_of(sam), vec![led.clone()]);
        assert_eq!(groups_of(admin), vec![created.clone()]);
        assert!(!store.facilitates(&jo, &other).unwrap());
        assert_eq!(
            roles_in_group(&store, &jo, &other).unwrap(),
            Vec::<Role>::new()
        );
        assert_eq!(
            roles_in_group(&store, &jo, &led).unwrap(),
            vec![Role::Facilitator]
        );
        let entries: Vec<_> = crate::audit::entries(&store)
            .map(|e| e.unwrap())
            .filter(|e| e.action == action::ROLE_MIGRATE_GRANTS)
            .collect();
        assert_eq!(entries.len(), 1);
        // Once: a second run (the next start) changes nothing.
        let before = store.digest().unwrap();
        assert_eq!(migrate_facilitator_grants(&store, &audit, 6).unwrap(), None);
        assert_eq!(store.digest().unwrap(), before);
        // And the chain still verifies.
        crate::audit::verify(&store).unwrap();
    }
}
