//! One group's task: orders its events, persists them, acknowledges, fans out.
//!
//! Owns the group's `head` (the last durable seq), its member records and the set of
//! connections joined to it. It never touches a socket: it pushes pre-serialised
//! frames into connections' bounded outboxes, and a connection whose outbox is full
//! is kicked (it resumes from its last seq) rather than awaited.
//!
//! Commands are taken in batches: every post in a batch is written, one commit
//! makes them all durable, and only then are they acknowledged and fanned out. A
//! store failure stops the task (each waiting sender is told); the registry starts
//! a fresh task from the store on next use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use peerhub_protocol::frame::{MemberInfo, ServerFrame};
use peerhub_protocol::{ErrorCode, PublicKey, SignedEnvelope};
use tokio::sync::{mpsc, oneshot};

use super::{group_info, JoinReply};
use crate::clock::Clock;
use crate::error::ServerError;
use crate::outbound::{ConnId, FrameBytes, Outbox};
use crate::store::records::{GroupRecord, MemberRecord, StoredEvent};
use crate::store::{Committer, Store, StoreError};

/// Most commands taken from the mailbox for one commit.
const MAX_BATCH: usize = 256;

/// What sessions ask of a group's task.
#[derive(Debug)]
pub(crate) enum GroupCommand {
    Join {
        outbox: Outbox,
        key: PublicKey,
        name: String,
        counter: u64,
        env: SignedEnvelope,
        reply: oneshot::Sender<Result<JoinReply, ServerError>>,
    },
    Post {
        outbox: Outbox,
        key: PublicKey,
        counter: u64,
        request_id: Option<u64>,
        env: SignedEnvelope,
    },
    Leave {
        conn: ConnId,
    },
}

#[derive(Debug)]
struct Subscriber {
    key: PublicKey,
    outbox: Outbox,
}

/// A post written to the store and waiting for its commit.
#[derive(Debug)]
struct PendingPost {
    outbox: Outbox,
    request_id: Option<u64>,
    counter: u64,
    event: StoredEvent,
}

pub(crate) struct GroupActor {
    record: GroupRecord,
    head: u64,
    members: BTreeMap<PublicKey, MemberRecord>,
    subscribers: HashMap<ConnId, Subscriber>,
    store: Store,
    committer: Committer,
    clock: Clock,
    rx: mpsc::Receiver<GroupCommand>,
}

fn frame_bytes(frame: &ServerFrame) -> FrameBytes {
    FrameBytes::from(frame.to_json())
}

impl GroupActor {
    pub(crate) fn load(
        record: GroupRecord,
        store: Store,
        committer: Committer,
        clock: Clock,
        rx: mpsc::Receiver<GroupCommand>,
    ) -> Result<Self, StoreError> {
        let head = store.last_seq(&record.id)?;
        let members = store
            .members(&record.id)?
            .into_iter()
            .map(|m| (m.key, m))
            .collect();
        Ok(Self {
            record,
            head,
            members,
            subscribers: HashMap::new(),
            store,
            committer,
            clock,
            rx,
        })
    }

    pub(crate) async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while self.rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            if let Err(error) = self.handle_batch(&mut batch).await {
                tracing::error!(group = %self.record.id, %error, "group task stopping after a store failure");
                self.fail_waiting(std::mem::take(&mut batch));
                return;
            }
        }
        tracing::debug!(group = %self.record.id, "group task finished");
    }

    async fn handle_batch(&mut self, batch: &mut Vec<GroupCommand>) -> Result<(), Arc<StoreError>> {
        let mut pending: Vec<PendingPost> = Vec::new();
        let mut commands = std::mem::take(batch).into_iter();
        while let Some(command) = commands.next() {
            match command {
                GroupCommand::Post {
                    outbox,
                    key,
                    counter,
                    request_id,
                    env,
                } => {
                    if !self.subscribers.contains_key(&outbox.conn) {
                        let error = ServerError::NotJoined(self.record.id.clone());
                        outbox.push(&error_frame(request_id, &error));
                        continue;
                    }
                    let event = StoredEvent {
                        seq: self.head + 1 + pending.len() as u64,
                        ts: self.clock.now_ms(),
                        env,
                    };
                    let written = self
                        .store
                        .append_event(&self.record.id, &event)
                        .and_then(|()| self.store.raise_counter(&key, counter));
                    if let Err(error) = written {
                        let error = Arc::new(error);
                        outbox.push(&error_frame(request_id, &ServerError::Store(error.clone())));
                        self.fail_pending(pending);
                        batch.extend(commands);
                        return Err(error);
                    }
                    pending.push(PendingPost {
                        outbox,
                        request_id,
                        counter,
                        event,
                    });
                }
                GroupCommand::Join {
                    outbox,
                    key,
                    name,
                    counter,
                    env,
                    reply,
                } => {
                    if let Err(error) = self.commit_posts(&mut pending).await {
                        let _ = reply.send(Err(ServerError::Store(error.clone())));
                        batch.extend(commands);
                        return Err(error);
                    }
                    let result = self.join(outbox, key, name, counter, env).await;
                    let failed = result.as_ref().err().and_then(|e| match e {
                        ServerError::Store(e) => Some(e.clone()),
                        _ => None,
                    });
                    let _ = reply.send(result);
                    if let Some(error) = failed {
                        batch.extend(commands);
                        return Err(error);
                    }
                }
                GroupCommand::Leave { conn } => self.leave(conn),
            }
        }
        self.commit_posts(&mut pending).await
    }

    /// Makes the pending posts durable, then acknowledges and fans them out.
    async fn commit_posts(
        &mut self,
        pending: &mut Vec<PendingPost>,
    ) -> Result<(), Arc<StoreError>> {
        if pending.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.committer.commit().await {
            self.fail_pending(std::mem::take(pending));
            return Err(error);
        }
        for post in pending.drain(..) {
            self.head = post.event.seq;
            let ack = ServerFrame::Ack {
                id: post.request_id,
                group: self.record.id.clone(),
                seq: post.event.seq,
                counter: post.counter,
            };
            post.outbox.push(&frame_bytes(&ack));
            let event = frame_bytes(&ServerFrame::Event {
                group: self.record.id.clone(),
                seq: post.event.seq,
                ts: post.event.ts,
                env: post.event.env,
            });
            for subscriber in self.subscribers.values() {
                subscriber.outbox.push(&event);
            }
        }
        Ok(())
    }

    async fn join(
        &mut self,
        outbox: Outbox,
        key: PublicKey,
        name: String,
        counter: u64,
        env: SignedEnvelope,
    ) -> Result<JoinReply, ServerError> {
        let now = self.clock.now_ms();
        let record = MemberRecord {
            key,
            name,
            join: env,
            first_joined_ms: self.members.get(&key).map_or(now, |m| m.first_joined_ms),
        };
        self.store.put_member(&self.record.id, &record)?;
        self.store.raise_counter(&key, counter)?;
        self.committer.commit().await?;
        let conn = outbox.conn;
        self.members.insert(key, record);
        self.subscribers.insert(conn, Subscriber { key, outbox });
        let me = self.member_info(&key)?;
        self.announce_presence(me, Some(conn));
        let members = self
            .members
            .keys()
            .map(|k| self.member_info(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JoinReply {
            info: group_info(&self.record),
            head: self.head,
            members,
        })
    }

    fn leave(&mut self, conn: ConnId) {
        let Some(left) = self.subscribers.remove(&conn) else {
            return;
        };
        if self.is_online(&left.key) {
            return;
        }
        match self.member_info(&left.key) {
            Ok(info) => self.announce_presence(info, None),
            Err(error) => tracing::warn!(group = %self.record.id, %error, "presence not announced"),
        }
    }

    fn is_online(&self, key: &PublicKey) -> bool {
        self.subscribers.values().any(|s| &s.key == key)
    }

    fn member_info(&self, key: &PublicKey) -> Result<MemberInfo, ServerError> {
        let record = self
            .members
            .get(key)
            .ok_or_else(|| ServerError::NotJoined(self.record.id.clone()))?;
        Ok(MemberInfo {
            key: *key,
            name: record.name.clone(),
            roles: self.store.roles(key)?,
            online: self.is_online(key),
            join: record.join.clone(),
        })
    }

    fn announce_presence(&self, member: MemberInfo, except: Option<ConnId>) {
        let frame = frame_bytes(&ServerFrame::Presence {
            group: self.record.id.clone(),
            member,
        });
        for (conn, subscriber) in &self.subscribers {
            if Some(*conn) != except {
                subscriber.outbox.push(&frame);
            }
        }
    }

    fn fail_pending(&self, pending: Vec<PendingPost>) {
        for post in pending {
            let error = ServerError::Store(Arc::new(StoreError::Closed));
            post.outbox.push(&error_frame(post.request_id, &error));
        }
    }

    /// Tells everyone still waiting in the mailbox that nothing happened.
    fn fail_waiting(mut self, batch: Vec<GroupCommand>) {
        self.rx.close();
        let rest = std::iter::from_fn(|| self.rx.try_recv().ok());
        for command in batch.into_iter().chain(rest) {
            match command {
                GroupCommand::Post {
                    outbox, request_id, ..
                } => {
                    let error = ServerError::Store(Arc::new(StoreError::Closed));
                    outbox.push(&error_frame(request_id, &error));
                }
                GroupCommand::Join { reply, .. } => {
                    let _ = reply.send(Err(ServerError::Store(Arc::new(StoreError::Closed))));
                }
                GroupCommand::Leave { .. } => {}
            }
        }
    }
}

fn error_frame(id: Option<u64>, error: &ServerError) -> FrameBytes {
    debug_assert!(error.code() != ErrorCode::Malformed);
    frame_bytes(&ServerFrame::error(id, error.code(), error.to_string()))
}
