//! Groups: the registry of live group tasks, and group creation.
//!
//! Each live group has one task ([`actor::GroupActor`]) that owns its order (the
//! gap-free `seq`), its members and its subscribers. Sessions talk to it through a
//! [`GroupHandle`]. The registry spawns a group's task on first use and respawns it
//! if it stopped after a store failure; on shutdown it drops its handles so each
//! task finishes the commands it holds and exits.

mod actor;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use peerhub_protocol::frame::{GroupInfo, MemberInfo};
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::error::ServerError;
use crate::outbound::{ConnId, Outbox};
use crate::store::records::GroupRecord;
use crate::store::{Committer, Store};

pub(crate) use actor::GroupCommand;

/// How many commands may wait for a group's task before senders wait too.
const MAILBOX_CAPACITY: usize = 1024;

/// What a session gets back from joining.
#[derive(Debug)]
pub struct JoinReply {
    /// The group.
    pub info: GroupInfo,
    /// The newest durable seq when the join was ordered.
    pub head: u64,
    /// Everyone who has joined the group, with who is online.
    pub members: Vec<MemberInfo>,
}

/// A session's line to one group's task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupHandle {
    id: GroupId,
    // Sender: sessions. Receiver: the group's task. Bounded: a flood of commands
    // makes the senders wait, which in turn stops them reading their sockets.
    tx: mpsc::Sender<GroupCommand>,
}

impl GroupHandle {
    async fn send(&self, command: GroupCommand) -> Result<(), ServerError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| ServerError::ShuttingDown)
    }

    /// Joins a connection to the group; its events then go to `outbox`.
    pub async fn join(
        &self,
        outbox: Outbox,
        key: PublicKey,
        name: String,
        counter: u64,
        env: SignedEnvelope,
    ) -> Result<JoinReply, ServerError> {
        let (reply, answer) = oneshot::channel();
        self.send(GroupCommand::Join {
            outbox,
            key,
            name,
            counter,
            env,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// Queues a post. The ack (after the commit) or an error goes to `outbox`.
    pub async fn post(
        &self,
        outbox: Outbox,
        key: PublicKey,
        counter: u64,
        request_id: Option<u64>,
        env: SignedEnvelope,
    ) -> Result<(), ServerError> {
        self.send(GroupCommand::Post {
            outbox,
            key,
            counter,
            request_id,
            env,
        })
        .await
    }

    /// Stops sending the group's events to a connection.
    pub async fn leave(&self, conn: ConnId) {
        // A group task that is gone has no subscriber to remove.
        let _ = self.send(GroupCommand::Leave { conn }).await;
    }

    /// The group's id.
    pub fn id(&self) -> &GroupId {
        &self.id
    }
}

/// The live groups.
#[derive(Debug)]
pub struct GroupRegistry {
    store: Store,
    committer: Committer,
    clock: Clock,
    tracker: TaskTracker,
    // Locked only to look up or insert a handle; never held across an await.
    live: Mutex<HashMap<GroupId, GroupHandle>>,
    closed: AtomicBool,
}

impl GroupRegistry {
    /// An empty registry; group tasks are tracked by `tracker`.
    pub fn new(store: Store, committer: Committer, clock: Clock, tracker: TaskTracker) -> Self {
        Self {
            store,
            committer,
            clock,
            tracker,
            live: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// The handle of a group's task, starting the task if needed.
    pub fn handle(&self, id: &GroupId) -> Result<GroupHandle, ServerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ServerError::ShuttingDown);
        }
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = live.get(id) {
            if !handle.tx.is_closed() {
                return Ok(handle.clone());
            }
        }
        let record = self
            .store
            .group(id)?
            .ok_or_else(|| ServerError::GroupNotFound(id.clone()))?;
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        let actor = actor::GroupActor::load(
            record,
            self.store.clone(),
            self.committer.clone(),
            self.clock.clone(),
            rx,
        )?;
        self.tracker.spawn(actor.run());
        let handle = GroupHandle { id: id.clone(), tx };
        live.insert(id.clone(), handle.clone());
        Ok(handle)
    }

    /// Creates a group record (durably). `counter` is the creator's spent counter.
    pub async fn create(
        &self,
        record: GroupRecord,
        creator: &PublicKey,
        counter: u64,
    ) -> Result<(), ServerError> {
        if !self.store.create_group(&record)? {
            return Err(ServerError::GroupExists(record.id));
        }
        self.store.raise_counter(creator, counter)?;
        self.committer.commit().await?;
        Ok(())
    }

    /// Refuses new group tasks and drops every handle, so each task ends once the
    /// sessions' handles are gone too.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The public view of a group record.
pub fn group_info(record: &GroupRecord) -> GroupInfo {
    GroupInfo {
        id: record.id.clone(),
        title: record.title.clone(),
        kind: record.kind,
    }
}
