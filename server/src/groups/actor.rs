//! One group's task: orders its events, applies facilitator controls, persists,
//! acknowledges and fans out.
//!
//! Owns the group's [`Room`] (its records and rules) and the connections joined to
//! it. It never touches a socket: it pushes pre-serialised frames into connections'
//! bounded outboxes, and a connection whose outbox is full is kicked (it resumes
//! from its last seq) rather than awaited.
//!
//! Commands are taken in batches. Each command is checked first and refused with
//! no change, or applied: its writes go to the store and what it must tell people
//! is *deferred*. One commit then makes the whole batch durable, and only then are
//! the deferred replies and fan-outs sent — so nobody hears of anything that could
//! still be lost. A store failure stops the task (everyone waiting is told); the
//! registry starts a fresh one from the store on next use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use peerhub_protocol::frame::{Channel, MemberInfo, MemberStatus, Note, Role, ServerFrame};
use peerhub_protocol::limits::{HISTORY_ON_JOIN, JOINED_MEMBERS_MAX};
use peerhub_protocol::payload::ControlAction;
use peerhub_protocol::{PublicKey, SignedEnvelope};
use tokio::sync::{mpsc, oneshot};

use super::room::{Member, Room};
use super::{group_info, GroupLimits, JoinReply};
use crate::admission::CounterTicket;
use crate::audit::{AuditLog, NewEntry};
use crate::clock::Clock;
use crate::error::ServerError;
use crate::escalation::LineGrant;
use crate::outbound::{ConnId, FrameBytes, Outbox};
use crate::store::records::{MemberRecord, StoredEvent};
use crate::store::{Committer, Store, StoreError};

/// Most commands taken from the mailbox for one commit.
const MAX_BATCH: usize = 256;
/// How often a room with a pending timer looks at the clock (so a clock moved by a
/// test, or a suspended machine, is noticed soon).
const TIMER_POLL: Duration = Duration::from_secs(1);

/// A signed request other than join, already admitted by the session.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Action {
    Post {
        body: String,
        to: Option<PublicKey>,
    },
    Agree {
        version: u32,
    },
    Control(ControlAction),
    Report {
        seq: u64,
        reason: String,
    },
    StepOut {
        away: bool,
    },
    Record {
        about: Option<PublicKey>,
        reply_to: Option<u64>,
        text: String,
    },
}

/// A command as the mailbox carries it: boxed, so that the mailbox's blocks of
/// slots and the batch hold a pointer each instead of the largest variant's
/// few hundred bytes (a group task once kept 94 KiB for its batch of 256 and
/// 12 KiB per 32 mailbox slots, for the whole of its life).
pub(crate) type Mail = Box<GroupCommand>;

/// What sessions ask of a group's task.
#[derive(Debug)]
pub(crate) enum GroupCommand {
    Join {
        outbox: Outbox,
        key: PublicKey,
        roles: Vec<Role>,
        name: String,
        access_code: Option<String>,
        // Held until this command is handled: its counter is written by then if
        // it succeeded (admission.rs).
        ticket: CounterTicket,
        env: SignedEnvelope,
        reply: oneshot::Sender<Result<JoinReply, ServerError>>,
    },
    Signed {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        ticket: CounterTicket,
        env: SignedEnvelope,
        action: Action,
    },
    Leave {
        conn: ConnId,
    },
    /// The group's record changed in the store (an operator's command): read it
    /// again and tell the members.
    Reload,
    /// `key`'s facilitator grant for this group changed (already in the store).
    /// A revoke takes the standing away from their live connections now: they
    /// leave the group's conversation (`dismissed`, `grant_revoked`) and may join
    /// again under the rules anyone meets.
    Regrant {
        key: PublicKey,
        facilitator: bool,
    },
    /// An operator clears the waiting room; `entry` is the audit entry, signed by
    /// the hub's key. The reply says how many left, once that is durable.
    ClearWaiting {
        entry: NewEntry,
        reply: oneshot::Sender<Result<usize, ServerError>>,
    },
    /// A note the hub writes into one of the group's channels on another task's
    /// behalf (the escalation router's `support_asked`, §8.10).
    HubNote {
        channel: Channel,
        note: Note,
    },
    /// A supervisor's private post on an escalation's line (`grant`: what the
    /// router allowed); the connection then hears replies on that line.
    LinePost {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        // Held until this command is handled, as for `Signed`.
        ticket: CounterTicket,
        env: SignedEnvelope,
        to: PublicKey,
        grant: LineGrant,
    },
    /// Cluster mode, the owner's part of a retention pass: deletes the group's
    /// events written before `before_ms` (none if `None`) as a write set in its
    /// log, then trims the log behind a snapshot (`cluster::trim`). The reply
    /// says how many events went, once that is in the log.
    Expire {
        before_ms: Option<u64>,
        reply: oneshot::Sender<Result<usize, ServerError>>,
    },
    /// Cluster mode, the owner's part of a person's erasure: their events here
    /// become tombstones by `hub_key` and their member record loses name and
    /// signed join (`crate::erase::group_erasure`), as one write set in the log,
    /// which is then rebased (`cluster::rebase`). The reply comes once both are
    /// in the log.
    Erase {
        key: PublicKey,
        hub_key: PublicKey,
        reply: oneshot::Sender<Result<crate::cluster::erasure::GroupErased, ServerError>>,
    },
    /// A supervisor opens an escalation's line: its history and later messages
    /// on this connection, with no membership and no presence.
    LineOpen {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        escalation: u64,
        grant: LineGrant,
    },
}

#[derive(Debug)]
pub(super) struct Subscriber {
    pub(super) key: PublicKey,
    pub(super) outbox: Outbox,
}

/// Something to tell people once the batch is durable.
#[derive(Debug)]
pub(super) enum Deferred {
    /// A reply to one request.
    Reply(Outbox, ServerFrame),
    /// The answer to a join.
    JoinReply(oneshot::Sender<Result<JoinReply, ServerError>>, JoinReply),
    /// A new event, to everyone who reads its channel.
    Event(Channel, StoredEvent),
    /// A redacted event, re-sent so readers replace it.
    Redacted(u64),
    /// A member's standing changed.
    Presence(PublicKey),
    /// A member joined on this connection: tell everyone else (the joiner learns
    /// its standing from `joined`).
    Arrived(PublicKey, ConnId),
    /// The group's state changed.
    GroupUpdate,
    /// A member just came into the room: send `joined` and the history up to the
    /// main-channel head as it was when this was deferred (later events reach
    /// them live).
    Rejoin(PublicKey, u64),
    /// Take a member's connections out of the room, telling them why.
    Dismiss(PublicKey, &'static str, String),
    /// A co-produced record changed: tell the member it is about.
    Record(Option<PublicKey>, ServerFrame),
    /// An operator's clearing of the waiting room is durable: how many left.
    Cleared(oneshot::Sender<Result<usize, ServerError>>, usize),
    /// Expired events are deleted in the log (and the log trimmed): how many.
    Expired(oneshot::Sender<Result<usize, ServerError>>, usize),
    /// A person's erasure is in the log and the log rebased: what it did.
    Erased(
        oneshot::Sender<Result<crate::cluster::erasure::GroupErased, ServerError>>,
        crate::cluster::erasure::GroupErased,
    ),
    /// A knock was forgotten while its person was here: facilitators see them
    /// leave (their last standing, offline), as no record is left to read it from.
    Forgotten(peerhub_protocol::frame::MemberInfo),
    /// A supervisor opened an escalation's line: the history of their pair
    /// channels here, then the `line` reply.
    LineOpened(Outbox, PublicKey, ServerFrame),
}

pub(crate) struct GroupActor {
    pub(super) room: Room,
    pub(super) subscribers: HashMap<ConnId, Subscriber>,
    /// Supervisors' connections on an escalation's private line: not members, never
    /// in presence or the room; they read only the pair channels with their key.
    lines: HashMap<ConnId, Subscriber>,
    pub(super) store: Store,
    committer: Committer,
    pub(super) clock: Clock,
    pub(super) audit: Arc<AuditLog>,
    pub(super) limits: GroupLimits,
    metrics: Arc<crate::metrics::Metrics>,
    risk_phrases: Arc<crate::risk_phrases::RiskPhrases>,
    rx: mpsc::Receiver<Mail>,
    /// Deferred effects of the batch being built.
    pub(super) deferred: Vec<Deferred>,
    /// The batch wrote something.
    pub(super) dirty: bool,
    /// The batch changed the group's state (heads, session, settings).
    state_changed: bool,
    /// Cluster mode: trim the group's log after the batch's append.
    trim: bool,
    /// Cluster mode: rebase the group's log after the batch's append (an
    /// erasure; it trims too).
    rebase: bool,
    /// Cluster mode: an ephemeral session ended in the batch; its participants'
    /// pseudonyms go to every node's audit chain after the append
    /// (`cluster::session_end`).
    pub(super) session_ended: Option<Vec<String>>,
    /// Cluster mode: this node's lease on the group, its log writer and the
    /// batch's writes to append; `None` on one node.
    // Boxed: a one-node hub's groups do not carry its size.
    owned: Option<Box<crate::cluster::owner::Owned>>,
}

fn frame_bytes(frame: &ServerFrame) -> FrameBytes {
    FrameBytes::from(frame.to_json())
}

impl GroupActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        room: Room,
        store: Store,
        committer: Committer,
        clock: Clock,
        audit: Arc<AuditLog>,
        limits: GroupLimits,
        metrics: Arc<crate::metrics::Metrics>,
        risk_phrases: Arc<crate::risk_phrases::RiskPhrases>,
        rx: mpsc::Receiver<Mail>,
    ) -> Self {
        Self {
            room,
            subscribers: HashMap::new(),
            lines: HashMap::new(),
            store,
            committer,
            clock,
            audit,
            limits,
            metrics,
            risk_phrases,
            rx,
            deferred: Vec::new(),
            dirty: false,
            state_changed: false,
            trim: false,
            rebase: false,
            session_ended: None,
            owned: None,
        }
    }

    /// Cluster mode: the group is served under `owned`; every commit is appended
    /// to its log before anyone hears of it.
    pub(crate) fn owned_by(mut self, owned: Box<crate::cluster::owner::Owned>) -> Self {
        self.owned = Some(owned);
        self
    }

    /// Whether this group is served in cluster mode (it holds the lease).
    pub(super) fn in_cluster(&self) -> bool {
        self.owned.is_some()
    }

    /// Records a write for the group's cluster log (nothing on one node).
    fn record_op(&mut self, op: impl FnOnce() -> crate::cluster::replica::GroupOp) {
        if let Some(owned) = &mut self.owned {
            owned.ops.push(op());
        }
    }

    /// Writes an event (new, or rewritten by a redaction).
    pub(super) fn write_event(
        &mut self,
        channel: Channel,
        event: &StoredEvent,
    ) -> Result<(), StoreError> {
        self.store.put_event(&self.room.group.id, &channel, event)?;
        self.record_op(|| crate::cluster::replica::GroupOp::Event {
            channel,
            event: event.clone(),
        });
        Ok(())
    }

    /// Writes a member's record.
    pub(super) fn write_member(&mut self, record: &MemberRecord) -> Result<(), StoreError> {
        self.store.put_member(&self.room.group.id, record)?;
        self.record_op(|| crate::cluster::replica::GroupOp::Member {
            member: record.clone(),
        });
        Ok(())
    }

    /// Removes a member's record.
    fn remove_member(&mut self, key: &PublicKey) -> Result<(), StoreError> {
        self.store.delete_member(&self.room.group.id, key)?;
        self.record_op(|| crate::cluster::replica::GroupOp::RemoveMember { key: *key });
        Ok(())
    }

    /// Removes the group's events (all, or those before `before_ms`).
    pub(super) fn remove_events(&mut self, before_ms: Option<u64>) -> Result<usize, StoreError> {
        let removed = self.store.delete_events(&self.room.group.id, before_ms)?;
        self.record_op(|| crate::cluster::replica::GroupOp::DeleteEvents { before_ms });
        // Cluster mode: the deleted events' records leave the log after the commit.
        self.trim = self.owned.is_some();
        Ok(removed)
    }

    pub(crate) async fn run(mut self) {
        // Grows with the batches the group actually gets (most are small).
        let mut batch = Vec::new();
        // Cluster mode: resolves when this node loses the group's lease.
        let mut lease = self.owned.as_ref().map(|owned| owned.keeper.watch());
        let lost = async {
            match &mut lease {
                Some(lease) => {
                    let _ = lease
                        .wait_for(|s| matches!(s, crate::cluster::lease::LeaseState::Lost { .. }))
                        .await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lost);
        loop {
            let wakeup = self
                .room
                .next_wakeup(self.clock.now_ms(), self.limits.waiting_expiry_ms);
            let wait = wakeup.map(|at| {
                Duration::from_millis(at.saturating_sub(self.clock.now_ms())).min(TIMER_POLL)
            });
            let received = tokio::select! {
                n = self.rx.recv_many(&mut batch, MAX_BATCH) => n,
                _ = async {
                    match wait {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                } => usize::MAX,
                () = &mut lost => {
                    tracing::warn!(group = %self.room.group.id, "group lease lost: this node stops serving the group");
                    self.stop_owning("lease");
                    return;
                }
            };
            if received == 0 {
                break;
            }
            let result = self.handle_batch(&mut batch).await;
            if let Err(error) = result {
                tracing::error!(group = %self.room.group.id, %error, "group task stopping after a store failure");
                self.stop_owning("commit");
                self.fail_waiting(std::mem::take(&mut batch));
                return;
            }
        }
        tracing::debug!(group = %self.room.group.id, "group task finished");
        if let Some(owned) = self.owned.take() {
            owned.release().await;
        }
    }

    /// Cluster mode, the group lost (its lease, or a commit its log did not
    /// take): this node's copy may hold writes the log does not, so it is
    /// forgotten (the next owner here rebuilds it from the log), and every
    /// connection in the group is closed so that its client joins again, on
    /// whichever node serves the group next. `reason` is counted
    /// (`peerhub_cluster_groups_lost_total`): `lease`, or `commit` (the log refused or did not confirm a commit, or the store failed).
    fn stop_owning(&mut self, reason: &str) {
        let Some(owned) = self.owned.take() else {
            return;
        };
        if let Some(cluster) = self.metrics.cluster() {
            cluster.group_lost(reason);
        }
        if let Err(error) = self.store.forget_replica(&self.room.group.id) {
            tracing::error!(group = %self.room.group.id, %error, "could not forget this node's copy of the group");
        }
        for subscriber in self.subscribers.values().chain(self.lines.values()) {
            subscriber.outbox.kicked().cancel();
        }
        drop(owned);
    }

    async fn handle_batch(&mut self, batch: &mut Vec<Mail>) -> Result<(), Arc<StoreError>> {
        let now = self.clock.now_ms();
        if let Err(error) = self.tick(now) {
            return Err(self.store_failed(error));
        }
        let mut commands = std::mem::take(batch).into_iter();
        while let Some(command) = commands.next() {
            let outcome = match *command {
                GroupCommand::Join {
                    outbox,
                    key,
                    roles,
                    name,
                    access_code,
                    ticket,
                    env,
                    reply,
                } => match self.join(
                    outbox,
                    key,
                    roles,
                    name,
                    access_code,
                    ticket.counter(),
                    env,
                    now,
                ) {
                    Ok(answer) => {
                        self.deferred.push(Deferred::JoinReply(reply, answer));
                        Ok(())
                    }
                    Err(ServerError::Store(e)) => {
                        let _ = reply.send(Err(ServerError::Store(e.clone())));
                        Err(e)
                    }
                    Err(refusal) => {
                        let _ = reply.send(Err(refusal));
                        Ok(())
                    }
                },
                GroupCommand::Signed {
                    outbox,
                    key,
                    request_id,
                    ticket,
                    env,
                    action,
                } => {
                    let result =
                        self.signed(&outbox, key, request_id, ticket.counter(), env, action, now);
                    self.answer_refusal(&outbox, request_id, result)
                }
                GroupCommand::Leave { conn } => {
                    self.leave(conn);
                    Ok(())
                }
                GroupCommand::LinePost {
                    outbox,
                    key,
                    request_id,
                    ticket,
                    env,
                    to,
                    grant,
                } => {
                    let counter = ticket.counter();
                    let result =
                        self.line_post(&outbox, key, request_id, counter, env, to, &grant, now);
                    self.answer_refusal(&outbox, request_id, result)
                }
                GroupCommand::LineOpen {
                    outbox,
                    key,
                    request_id,
                    escalation,
                    grant,
                } => {
                    let reply = ServerFrame::Line {
                        id: request_id,
                        escalation,
                        group: self.room.group.id.clone(),
                        to: self.line_peers(&key, &grant),
                    };
                    self.lines.insert(
                        outbox.conn,
                        Subscriber {
                            key,
                            outbox: outbox.clone(),
                        },
                    );
                    self.deferred.push(Deferred::LineOpened(outbox, key, reply));
                    Ok(())
                }
                GroupCommand::HubNote { channel, note } => self
                    .append_note(channel, note, now)
                    .map(|_| ())
                    .map_err(Arc::new),
                GroupCommand::Regrant { key, facilitator } => {
                    self.regrant(key, facilitator);
                    Ok(())
                }
                GroupCommand::Expire { before_ms, reply } => match self.expire(before_ms) {
                    Ok(removed) => {
                        self.deferred.push(Deferred::Expired(reply, removed));
                        Ok(())
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        let _ = reply.send(Err(ServerError::Store(e.clone())));
                        Err(e)
                    }
                },
                GroupCommand::Erase {
                    key,
                    hub_key,
                    reply,
                } => match self.erase(&key, hub_key) {
                    Ok(erased) => {
                        self.deferred.push(Deferred::Erased(reply, erased));
                        Ok(())
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        let _ = reply.send(Err(ServerError::Store(e.clone())));
                        Err(e)
                    }
                },
                GroupCommand::Reload => match self.store.group(&self.room.group.id) {
                    Ok(Some(record)) => {
                        self.room.group = record;
                        self.deferred.push(Deferred::GroupUpdate);
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(Arc::new(e)),
                },
                GroupCommand::ClearWaiting { entry, reply } => {
                    let cleared = self
                        .audit
                        .append(entry)
                        .map_err(ServerError::from)
                        .and_then(|_| self.clear_waiting_room());
                    match cleared {
                        Ok(n) => {
                            self.dirty = true;
                            self.deferred.push(Deferred::Cleared(reply, n));
                            Ok(())
                        }
                        Err(ServerError::Store(e)) => {
                            let _ = reply.send(Err(ServerError::Store(e.clone())));
                            Err(e)
                        }
                        Err(refusal) => {
                            let _ = reply.send(Err(refusal));
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = outcome {
                batch.extend(commands);
                return Err(self.store_failed_arc(error));
            }
        }
        self.commit_and_deliver().await
    }

    /// Deletes the events written before `before_ms` (recorded for the log when
    /// any went) and asks for the log's trim after the commit (cluster mode).
    fn expire(&mut self, before_ms: Option<u64>) -> Result<usize, StoreError> {
        let removed = match before_ms {
            Some(before) => self
                .store
                .delete_events(&self.room.group.id, Some(before))?,
            None => 0,
        };
        if removed > 0 {
            self.dirty = true;
            self.record_op(|| crate::cluster::replica::GroupOp::DeleteEvents { before_ms });
        }
        self.trim = self.owned.is_some();
        Ok(removed)
    }

    /// Writes the group part of `key`'s erasure (see [`GroupCommand::Erase`]):
    /// its events as tombstones (readers get them again in place), its member
    /// record erased in the room and the store; asks for the log's rebase after
    /// the commit, even when nothing was left to erase here (a rebase that did
    /// not finish is finished so).
    fn erase(
        &mut self,
        key: &PublicKey,
        hub_key: PublicKey,
    ) -> Result<crate::cluster::erasure::GroupErased, StoreError> {
        let erasure = crate::erase::group_erasure(&self.store, &self.room.group.id, key, hub_key)?;
        for (channel, event) in &erasure.events {
            self.write_event(*channel, event)?;
            if *channel == Channel::Main {
                self.deferred.push(Deferred::Redacted(event.seq));
            }
        }
        if let Some(record) = &erasure.member {
            if let Some(member) = self.room.members.get_mut(key) {
                member.record = record.clone();
            }
            self.write_member(record)?;
        }
        self.dirty |= !erasure.is_empty();
        self.rebase = self.owned.is_some();
        Ok(crate::cluster::erasure::GroupErased {
            group: self.room.group.id.clone(),
            events: erasure.events.len(),
            member: erasure.member.is_some(),
            rebased: None,
            rebase_error: None,
        })
    }

    /// Applies a changed facilitator grant (see [`GroupCommand::Regrant`]).
    fn regrant(&mut self, key: PublicKey, facilitator: bool) {
        if let Some(member) = self.room.members.get_mut(&key) {
            member.roles.retain(|r| *r != Role::Facilitator);
            if facilitator {
                member.roles.push(Role::Facilitator);
                member.roles.sort();
            }
        }
        if facilitator {
            self.deferred.push(Deferred::Presence(key));
            return;
        }
        // A co-facilitator's or lead's place was given under the grant: it goes
        // with it.
        let state = &mut self.room.state;
        let held = state.co_facilitators.contains(&key) || state.lead == Some(key);
        if held {
            state.co_facilitators.retain(|k| *k != key);
            if state.lead == Some(key) {
                state.lead = None;
            }
            self.state_changed();
            self.deferred.push(Deferred::GroupUpdate);
        }
        if self.is_online(&key) {
            self.deferred.push(Deferred::Dismiss(
                key,
                "grant_revoked",
                "An admin has ended your facilitator role in this group. You can join \
                 again under the group's usual rules."
                    .into(),
            ));
        }
    }

    /// Time-driven changes: mutes that ran out, a scheduled window that opened.
    fn tick(&mut self, now: u64) -> Result<(), StoreError> {
        let expired: Vec<PublicKey> = self
            .room
            .members
            .values()
            .filter(|m| m.record.muted_until_ms.is_some_and(|t| t <= now))
            .map(|m| m.record.key)
            .collect();
        for key in expired {
            if let Some(member) = self.room.members.get_mut(&key) {
                member.record.muted_until_ms = None;
                let record = member.record.clone();
                self.write_member(&record)?;
            }
            self.append_note(Channel::Main, Note::MuteEnded { member: key }, now)?;
            self.deferred.push(Deferred::Presence(key));
        }
        if self.room.open_scheduled_session(now) {
            self.state_changed();
            self.deferred.push(Deferred::GroupUpdate);
        }
        // Knocks on the waiting room by people who are gone expire.
        let expiry = self.limits.waiting_expiry_ms;
        let expired: Vec<PublicKey> = self
            .room
            .waiting()
            .into_iter()
            .filter(|key| !self.is_online(key))
            .filter(|key| {
                self.room
                    .members
                    .get(key)
                    .is_some_and(|m| m.record.first_joined_ms.saturating_add(expiry) <= now)
            })
            .collect();
        for key in expired {
            self.forget_member(&key)?;
        }
        Ok(())
    }

    /// Forgets a waiting-only member: their record leaves the room and the store.
    pub(super) fn forget_member(&mut self, key: &PublicKey) -> Result<(), StoreError> {
        if self.room.members.remove(key).is_some() {
            self.remove_member(key)?;
            self.dirty = true;
        }
        Ok(())
    }

    /// Everyone in the waiting room leaves it: their records are forgotten, and
    /// their connections are told and taken out of the group (they may knock
    /// again). Returns how many left.
    pub(super) fn clear_waiting_room(&mut self) -> Result<usize, ServerError> {
        let waiting = self.room.waiting();
        let now = self.clock.now_ms();
        for key in &waiting {
            if self.is_online(key) {
                if let Some(info) = self.room.member_info(key, false, now) {
                    self.deferred.push(Deferred::Forgotten(info));
                }
                self.deferred.push(Deferred::Dismiss(
                    *key,
                    "waiting_cleared",
                    "A facilitator has cleared the waiting room. You can join again, \
                     and you can still ask for help."
                        .into(),
                ));
            }
            self.forget_member(key)?;
        }
        Ok(waiting.len())
    }

    /// Makes way in the waiting room for a newcomer: past the cap, the longest-gone
    /// person who is not connected is forgotten; if everyone waiting is here, the
    /// newcomer is refused. Changes nothing when it refuses.
    fn make_way_in_waiting_room(&mut self) -> Result<(), ServerError> {
        let waiting = self.room.waiting();
        if waiting.len() < self.limits.max_waiting {
            return Ok(());
        }
        let excess = waiting.len() + 1 - self.limits.max_waiting;
        let gone: Vec<PublicKey> = waiting
            .into_iter()
            .filter(|key| !self.is_online(key))
            .take(excess)
            .collect();
        if gone.len() < excess {
            return Err(ServerError::WaitingRoomFull);
        }
        for key in gone {
            self.forget_member(&key)?;
        }
        Ok(())
    }

    fn store_failed(&mut self, error: StoreError) -> Arc<StoreError> {
        self.store_failed_arc(Arc::new(error))
    }

    fn store_failed_arc(&mut self, error: Arc<StoreError>) -> Arc<StoreError> {
        self.fail_deferred(&error);
        error
    }

    /// Makes the batch durable, then tells people.
    async fn commit_and_deliver(&mut self) -> Result<(), Arc<StoreError>> {
        if std::mem::take(&mut self.state_changed) {
            if let Err(error) = self
                .store
                .put_group_state(&self.room.group.id, &self.room.state)
            {
                let error = Arc::new(error);
                self.fail_deferred(&error);
                return Err(error);
            }
            let state = &self.room.state;
            if let Some(owned) = &mut self.owned {
                owned.ops.push(crate::cluster::replica::GroupOp::State {
                    state: state.clone(),
                });
            }
        }
        if self.dirty {
            if let Err(error) = self.committer.commit().await {
                self.fail_deferred(&error);
                return Err(error);
            }
            self.dirty = false;
        }
        if let Some(owned) = &mut self.owned {
            if let Err(error) = owned.append(&self.store, &self.room.group.id).await {
                let error = Arc::new(error);
                self.fail_deferred(&error);
                return Err(error);
            }
            if std::mem::take(&mut self.rebase) {
                // It trims too. Not a failure of the group: the erasure is in the
                // log; whoever asked hears that the rebase failed and runs it again.
                self.trim = false;
                let group = self.room.group.id.clone();
                let outcome = crate::cluster::rebase::rebase(owned, &self.store, &group).await;
                if let Err(error) = &outcome {
                    tracing::warn!(%group, %error, "could not rebase the group's log after an erasure");
                }
                for effect in &mut self.deferred {
                    if let Deferred::Erased(_, erased) = effect {
                        erased.rebased = outcome.as_ref().ok().copied();
                        erased.rebase_error = outcome.as_ref().err().map(ToString::to_string);
                    }
                }
            }
            if std::mem::take(&mut self.trim) {
                // Not a failure of the group: the next pass trims again.
                if let Err(error) = owned.trim(&self.store, &self.room.group.id).await {
                    tracing::warn!(group = %self.room.group.id, %error, "could not trim the group's log; the next retention pass tries again");
                }
            }
            if let Some(pseudonyms) = self.session_ended.take() {
                // The session has ended here; the other nodes' chains hear of
                // it through the directory, before the facilitator's ack.
                if let Err(error) = owned
                    .record_session_end(&self.room.group.id, pseudonyms, self.clock.now_ms())
                    .await
                {
                    tracing::error!(group = %self.room.group.id, %error, "a session's end did not reach the other nodes' audit chains");
                }
            }
        }
        for effect in std::mem::take(&mut self.deferred) {
            self.deliver(effect);
        }
        Ok(())
    }

    /// Answers a signed command's refusal on `outbox` (counted in the metrics); a
    /// store failure is answered too and stops the batch.
    fn answer_refusal(
        &self,
        outbox: &Outbox,
        request_id: Option<u64>,
        result: Result<(), ServerError>,
    ) -> Result<(), Arc<StoreError>> {
        match result {
            Ok(()) => Ok(()),
            Err(ServerError::Store(e)) => {
                outbox.push(&frame_bytes(
                    &ServerError::Store(e.clone()).frame(request_id),
                ));
                Err(e)
            }
            Err(refusal) => {
                self.metrics.rejected(refusal.code().as_str());
                outbox.push(&frame_bytes(&refusal.frame(request_id)));
                Ok(())
            }
        }
    }

    /// Everyone waiting for an answer hears that nothing happened.
    fn fail_deferred(&mut self, cause: &Arc<StoreError>) {
        for effect in std::mem::take(&mut self.deferred) {
            // The cause decides the code: a full or failing disk is
            // `storage_unavailable`, anything else `internal`.
            let error = ServerError::Store(cause.clone());
            match effect {
                Deferred::Reply(outbox, frame) | Deferred::LineOpened(outbox, _, frame) => {
                    outbox.push(&frame_bytes(&error.frame(reply_id(&frame))));
                }
                Deferred::JoinReply(reply, _) => {
                    let _ = reply.send(Err(error));
                }
                Deferred::Cleared(reply, _) | Deferred::Expired(reply, _) => {
                    let _ = reply.send(Err(error));
                }
                Deferred::Erased(reply, _) => {
                    let _ = reply.send(Err(error));
                }
                _ => {}
            }
        }
    }

    // ---- writing ----

    /// Appends an event to a channel (written, not yet durable) and defers its
    /// fan-out; returns it.
    pub(super) fn append(
        &mut self,
        channel: Channel,
        env: Option<SignedEnvelope>,
        note: Option<Note>,
        now: u64,
    ) -> Result<StoredEvent, StoreError> {
        let seq = self.room.next_seq(channel);
        let event = StoredEvent {
            seq,
            ts: now,
            env,
            note,
            redacted: None,
        };
        self.write_event(channel, &event)?;
        self.state_changed();
        self.deferred.push(Deferred::Event(channel, event.clone()));
        Ok(event)
    }

    fn append_note(
        &mut self,
        channel: Channel,
        note: Note,
        now: u64,
    ) -> Result<StoredEvent, StoreError> {
        self.append(channel, None, Some(note), now)
    }

    /// Notes that the group's state changed; it is written once, just before the
    /// batch's commit, however many posts and controls changed it.
    pub(super) fn state_changed(&mut self) {
        self.state_changed = true;
        self.dirty = true;
    }

    pub(super) fn save_member(&mut self, key: &PublicKey) -> Result<(), StoreError> {
        if let Some(record) = self.room.members.get(key).map(|m| m.record.clone()) {
            self.write_member(&record)?;
            self.dirty = true;
        }
        Ok(())
    }

    pub(super) fn spend_counter(
        &mut self,
        key: &PublicKey,
        counter: u64,
    ) -> Result<(), StoreError> {
        self.store.raise_counter(key, counter)?;
        self.dirty = true;
        Ok(())
    }

    pub(super) fn reply(&mut self, outbox: &Outbox, frame: ServerFrame) {
        self.deferred.push(Deferred::Reply(outbox.clone(), frame));
    }

    pub(super) fn ack(
        &mut self,
        outbox: &Outbox,
        request_id: Option<u64>,
        channel: Channel,
        seq: u64,
        counter: u64,
    ) {
        let frame = ServerFrame::Ack {
            id: request_id,
            group: self.room.group.id.clone(),
            channel,
            seq,
            counter,
        };
        self.reply(outbox, frame);
    }

    // ---- join and leave ----

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        outbox: Outbox,
        key: PublicKey,
        roles: Vec<Role>,
        name: String,
        access_code: Option<String>,
        counter: u64,
        env: SignedEnvelope,
        now: u64,
    ) -> Result<JoinReply, ServerError> {
        let staff = self.room.is_staff(&key, &roles);
        let known = self.room.members.contains_key(&key);
        if self.room.group.kind == peerhub_protocol::payload::GroupKind::Virtual
            && !staff
            && !known
            && !self.store.is_allowed(&self.room.group.id, &key)?
        {
            return Err(ServerError::AccessDenied(
                "this group is for invited members; ask its facilitator for an invite",
            ));
        }
        self.room.check_not_barred(&key)?;
        if let Some(hash) = &self.room.group.access_code_hash {
            if !staff && !self.room.in_room(&key) {
                let secret = self.store.access_code_secret()?;
                let right = access_code
                    .as_deref()
                    .is_some_and(|code| super::access_code_matches(&secret, hash, code));
                if !right {
                    return Err(ServerError::AccessDenied("the access code is not right"));
                }
            }
        }
        self.room.check_door(&key, &roles, now)?;
        // The cap counts people in the room, not everyone who ever knocked; the
        // waiting room has its own cap, and people long gone from it make way.
        if !staff && !self.room.in_room(&key) {
            if self.occupancy() >= self.limits.max_members {
                return Err(ServerError::Full);
            }
            if !known {
                self.make_way_in_waiting_room()?;
            }
        }

        let previous = self.room.members.remove(&key);
        let record = match previous.as_ref() {
            Some(old) => MemberRecord {
                name,
                join: Some(env),
                ..old.record.clone()
            },
            None => MemberRecord {
                key,
                name,
                join: Some(env),
                first_joined_ms: now,
                agreed_version: 0,
                agreement_env: None,
                admitted_session: None,
                declined_session: None,
                removed: None,
                muted_until_ms: None,
                away: false,
            },
        };
        self.room.members.insert(
            key,
            Member {
                record,
                roles,
                last_post_ms: previous.and_then(|m| m.last_post_ms),
            },
        );
        if self.room.is_facilitator(&key) && self.room.state.lead.is_none() {
            self.room.state.lead = Some(key);
            self.state_changed();
            self.deferred.push(Deferred::GroupUpdate);
        }
        self.room.auto_admit(&key);
        self.save_member(&key)?;
        self.spend_counter(&key, counter)?;
        let conn = outbox.conn;
        self.subscribers.insert(conn, Subscriber { key, outbox });
        self.deferred.push(Deferred::Arrived(key, conn));
        self.join_reply(&key, self.room.head(&Channel::Main), now)
    }

    fn join_reply(&self, key: &PublicKey, head: u64, now: u64) -> Result<JoinReply, ServerError> {
        let (members, members_total) = self.listed_members(key, head, now)?;
        let readable = self
            .room
            .state
            .heads
            .iter()
            .filter(|(channel, _)| !channel.is_main() && self.room.may_read(key, channel))
            .copied()
            .collect();
        let oldest = self
            .store
            .first_seq(&self.room.group.id, &Channel::Main)?
            .unwrap_or(head + 1)
            .min(head + 1);
        Ok(JoinReply {
            info: group_info(&self.room.group),
            head,
            oldest,
            members,
            members_total,
            status: self.room.status(key),
            state: self.room.view(now),
            in_room: self.room.in_room(key),
            facilitator: self.room.is_facilitator(key),
            other_channels: readable,
        })
    }

    /// The members `viewer` may see, as `joined` lists them: those who matter now
    /// first, at most `JOINED_MEMBERS_MAX` and `limits.joined_members_bytes` of
    /// JSON, so the frame always fits an outbox however many records the group
    /// holds; and how many `viewer` may see in all.
    fn listed_members(
        &self,
        viewer: &PublicKey,
        head: u64,
        now: u64,
    ) -> Result<(Vec<MemberInfo>, u64), ServerError> {
        // Whoever wrote the history a first join shows, so it shows their names.
        let mut authors = std::collections::HashSet::new();
        if self.room.may_read(viewer, &Channel::Main) {
            let recent = self.store.events_between(
                &self.room.group.id,
                &Channel::Main,
                head.saturating_sub(HISTORY_ON_JOIN),
                head,
                HISTORY_ON_JOIN as usize,
            )?;
            authors.extend(
                recent
                    .iter()
                    .filter(|event| event.redacted.is_none())
                    .filter_map(|event| event.env.as_ref().map(|env| env.key)),
            );
        }
        let online: std::collections::HashSet<PublicKey> =
            self.subscribers.values().map(|s| s.key).collect();
        let session = self.room.state.session;
        let mut ranked: Vec<(u8, std::cmp::Reverse<u64>, &PublicKey)> = self
            .room
            .members
            .iter()
            // An erased member (no signed join left) is not listed.
            .filter(|(other, member)| {
                member.record.join.is_some() && self.room.may_see_member(viewer, other)
            })
            .map(|(other, member)| {
                let record = &member.record;
                let status = self.room.status(other);
                let rank = if other == viewer {
                    0
                } else if self.room.is_staff(other, &member.roles) {
                    1
                } else if !self.room.in_room(other)
                    && matches!(status, MemberStatus::Waiting | MemberStatus::NeedsAgreement)
                {
                    2
                } else if online.contains(other) {
                    3
                } else if status == MemberStatus::Removed
                    || record.muted_until_ms.is_some_and(|t| t > now)
                {
                    4
                } else if authors.contains(other) {
                    5
                } else if record.admitted_session == Some(session) {
                    6
                } else {
                    7
                };
                (rank, std::cmp::Reverse(record.first_joined_ms), other)
            })
            .collect();
        let total = ranked.len() as u64;
        ranked.sort_unstable();
        let mut listed = Vec::new();
        let mut bytes = 0;
        for (rank, _, other) in ranked {
            if listed.len() >= JOINED_MEMBERS_MAX {
                break;
            }
            let Some(info) = self.room.member_info(other, online.contains(other), now) else {
                continue;
            };
            let size = serde_json::to_vec(&info).map_or(0, |json| json.len()) + 1;
            if rank > 0 && bytes + size > self.limits.joined_members_bytes {
                break;
            }
            bytes += size;
            listed.push(info);
        }
        Ok((listed, total))
    }

    fn leave(&mut self, conn: ConnId) {
        self.lines.remove(&conn);
        let Some(left) = self.subscribers.remove(&conn) else {
            return;
        };
        if !self.is_online(&left.key) {
            self.deliver(Deferred::Presence(left.key));
        }
    }

    pub(super) fn is_online(&self, key: &PublicKey) -> bool {
        self.subscribers.values().any(|s| &s.key == key)
    }

    /// People in the room and connected: what the member cap counts.
    pub(super) fn occupancy(&self) -> usize {
        let online: std::collections::HashSet<PublicKey> =
            self.subscribers.values().map(|s| s.key).collect();
        self.room.occupancy(|key| online.contains(key))
    }

    // ---- signed actions ----

    #[allow(clippy::too_many_arguments)]
    fn signed(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        action: Action,
        now: u64,
    ) -> Result<(), ServerError> {
        if !self.subscribers.contains_key(&outbox.conn) {
            self.room.check_not_barred(&key)?;
            return Err(ServerError::NotJoined(self.room.group.id.clone()));
        }
        match action {
            Action::Post { body, to: None } => {
                self.room.check_post(&key, now)?;
                self.spend_counter(&key, counter)?;
                let event = self.append(Channel::Main, Some(env), None, now)?;
                self.ack(outbox, request_id, Channel::Main, event.seq, counter);
                self.metrics.messages.inc();
                if !self.room.is_facilitator(&key) {
                    self.risk_nudge(&key, &body, event.seq, now)?;
                }
                Ok(())
            }
            Action::Post {
                to: Some(other), ..
            } => self.private_post(outbox, key, other, request_id, counter, env, now),
            Action::Agree { version } => self.agree(outbox, key, request_id, counter, env, version),
            Action::Control(action) => {
                self.control(outbox, key, request_id, counter, env, action, now)
            }
            Action::Report { seq, reason } => {
                let len = reason.chars().count();
                if len > peerhub_protocol::limits::MAX_TEXT_CHARS {
                    return Err(peerhub_protocol::ProtocolError::TooLong {
                        field: "reason",
                        len,
                        limit: peerhub_protocol::limits::MAX_TEXT_CHARS,
                    }
                    .into());
                }
                if !self.room.in_room(&key) {
                    return Err(ServerError::Waiting);
                }
                if self
                    .store
                    .event(&self.room.group.id, &Channel::Main, seq)?
                    .is_none()
                {
                    return Err(ServerError::NotFound("no such message in this group"));
                }
                self.spend_counter(&key, counter)?;
                self.append(Channel::Staff, Some(env), None, now)?;
                self.reply(outbox, ServerFrame::Ok { id: request_id });
                Ok(())
            }
            Action::StepOut { away } => {
                self.room.check_not_barred(&key)?;
                if let Some(member) = self.room.members.get_mut(&key) {
                    member.record.away = away;
                }
                self.save_member(&key)?;
                self.spend_counter(&key, counter)?;
                self.deferred.push(Deferred::Presence(key));
                self.reply(outbox, ServerFrame::Ok { id: request_id });
                Ok(())
            }
            Action::Record {
                about,
                reply_to,
                text,
            } => self.record(
                outbox, key, request_id, counter, env, about, reply_to, &text,
            ),
        }
    }

    /// A private check-in message: between a facilitator and one member.
    #[allow(clippy::too_many_arguments)]
    fn private_post(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        other: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        now: u64,
    ) -> Result<(), ServerError> {
        self.room.check_not_barred(&key)?;
        if other == key {
            return Err(peerhub_protocol::ProtocolError::invalid(
                "to",
                "a check-in is with someone else",
            )
            .into());
        }
        // A supervisor who wrote on an escalation's line is not a member: the
        // person (or facilitator) replies on the pair channel the supervisor opened.
        let on_line = !self.room.members.contains_key(&other)
            && self.room.head(&Channel::pair(key, other)) > 0;
        // Otherwise the sender's authority first, then the target (PROTOCOL.md §10,
        // the refusal rule): someone who may not talk privately is answered alike
        // whether `other` is a member or not, so a `post` with `to` is no test of
        // membership. Staff here may see every member: they learn nothing new.
        if !on_line {
            if !self.room.may_talk_privately(&key) && !self.room.may_talk_privately(&other) {
                return Err(ServerError::NotHere);
            }
            if !self.room.members.contains_key(&other) {
                return Err(ServerError::NotFound("no such member in this group"));
            }
        }
        // A private line to a facilitator is a help path: mute, pause and slow mode
        // do not apply to it.
        self.spend_counter(&key, counter)?;
        let channel = Channel::pair(key, other);
        let event = self.append(channel, Some(env), None, now)?;
        self.ack(outbox, request_id, channel, event.seq, counter);
        self.metrics.messages.inc();
        Ok(())
    }

    /// Whom a supervisor may write to on an escalation's line here: the person
    /// it is about (unless telling them is withheld) and the lead facilitator.
    fn line_peers(&self, key: &PublicKey, grant: &LineGrant) -> Vec<PublicKey> {
        let known = |k: &PublicKey| {
            k != key
                && self
                    .room
                    .members
                    .get(k)
                    .is_some_and(|m| m.record.join.is_some())
        };
        let mut peers = Vec::new();
        if grant.tell_subject && known(&grant.about) {
            peers.push(grant.about);
        }
        if let Some(lead) = self
            .room
            .state
            .lead
            .filter(|l| known(l) && !peers.contains(l))
        {
            peers.push(lead);
        }
        peers
    }

    /// A supervisor's private post on an escalation's line (§8.5): to the person
    /// it is about or the lead facilitator, written to their pair channel and
    /// audited, without the supervisor joining the group.
    #[allow(clippy::too_many_arguments)]
    fn line_post(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        to: PublicKey,
        grant: &LineGrant,
        now: u64,
    ) -> Result<(), ServerError> {
        if to == key {
            return Err(peerhub_protocol::ProtocolError::invalid(
                "to",
                "a private line is with someone else",
            )
            .into());
        }
        if to == grant.about && !grant.tell_subject {
            return Err(ServerError::Forbidden(
                "telling this person was withheld for imminent risk: write to the facilitator",
            ));
        }
        if to != grant.about && self.room.state.lead != Some(to) {
            return Err(ServerError::Forbidden(
                "an escalation's line is with the person it is about or the lead facilitator",
            ));
        }
        if self
            .room
            .members
            .get(&to)
            .is_none_or(|m| m.record.join.is_none())
        {
            return Err(ServerError::NotFound("no such member in this group"));
        }
        self.spend_counter(&key, counter)?;
        self.audit.append(
            NewEntry::new(now, crate::audit::action::ESCALATION_LINE, env.clone())
                .group(self.room.group.id.clone())
                .subject(to),
        )?;
        self.dirty = true;
        let channel = Channel::pair(key, to);
        let event = self.append(channel, Some(env), None, now)?;
        self.ack(outbox, request_id, channel, event.seq, counter);
        self.lines.insert(
            outbox.conn,
            Subscriber {
                key,
                outbox: outbox.clone(),
            },
        );
        self.metrics.messages.inc();
        Ok(())
    }

    fn agree(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        version: u32,
    ) -> Result<(), ServerError> {
        let current = self.room.state.agreement.version;
        if current == 0 {
            return Err(peerhub_protocol::ProtocolError::invalid(
                "version",
                "this group has no agreement",
            )
            .into());
        }
        if version != current {
            return Err(peerhub_protocol::ProtocolError::invalid(
                "version",
                format!("the agreement in force is version {current}"),
            )
            .into());
        }
        self.room.check_not_barred(&key)?;
        let was_in_room = self.room.in_room(&key);
        if let Some(member) = self.room.members.get_mut(&key) {
            member.record.agreed_version = version;
            member.record.agreement_env = Some(Box::new(env));
        }
        if was_in_room || self.occupancy() < self.limits.max_members {
            self.room.auto_admit(&key);
        }
        self.save_member(&key)?;
        self.spend_counter(&key, counter)?;
        self.deferred.push(Deferred::Presence(key));
        if !was_in_room && self.room.in_room(&key) {
            let head = self.room.head(&Channel::Main);
            self.deferred.push(Deferred::Rejoin(key, head));
        }
        self.reply(outbox, ServerFrame::Ok { id: request_id });
        Ok(())
    }

    /// Alerts the facilitators privately when a message matches a risk phrase. It
    /// never hides or sanctions anything.
    fn risk_nudge(
        &mut self,
        key: &PublicKey,
        body: &str,
        seq: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        if self.risk_phrases.matches(body) {
            let note = Note::RiskNudge {
                member: *key,
                seq,
                suggestion: "This message may show someone at risk. Consider a private check-in."
                    .into(),
            };
            self.append_note(Channel::Staff, note, now)?;
        }
        Ok(())
    }

    // ---- delivery ----

    fn deliver(&mut self, effect: Deferred) {
        let now = self.clock.now_ms();
        match effect {
            Deferred::Reply(outbox, frame) => {
                outbox.push(&frame_bytes(&frame));
            }
            Deferred::JoinReply(reply, answer) => {
                let _ = reply.send(Ok(answer));
            }
            Deferred::Event(channel, event) => self.fan_out(channel, &event),
            Deferred::Redacted(seq) => {
                if let Ok(Some(event)) = self.store.event(&self.room.group.id, &Channel::Main, seq)
                {
                    self.fan_out(Channel::Main, &event);
                }
            }
            Deferred::Presence(key) => self.presence(&key, None, now),
            Deferred::Arrived(key, conn) => self.presence(&key, Some(conn), now),
            Deferred::GroupUpdate => {
                let frame = frame_bytes(&ServerFrame::GroupUpdate {
                    group: self.room.group.id.clone(),
                    state: self.room.view(now),
                });
                for subscriber in self.subscribers.values() {
                    subscriber.outbox.push(&frame);
                }
            }
            Deferred::Rejoin(key, head) => self.rejoin(&key, head, now),
            Deferred::Dismiss(key, reason, message) => {
                let frame = frame_bytes(&ServerFrame::Dismissed {
                    group: self.room.group.id.clone(),
                    reason: reason.to_string(),
                    message,
                });
                self.subscribers.retain(|_, subscriber| {
                    if subscriber.key == key {
                        subscriber.outbox.push(&frame);
                        false
                    } else {
                        true
                    }
                });
                self.deliver(Deferred::Presence(key));
            }
            Deferred::Record(about, frame) => {
                let bytes = frame_bytes(&frame);
                for subscriber in self.subscribers.values() {
                    if Some(subscriber.key) == about {
                        subscriber.outbox.push(&bytes);
                    }
                }
            }
            Deferred::Cleared(reply, n) | Deferred::Expired(reply, n) => {
                let _ = reply.send(Ok(n));
            }
            Deferred::Erased(reply, erased) => {
                let _ = reply.send(Ok(erased));
            }
            Deferred::Forgotten(info) => {
                let frame = frame_bytes(&ServerFrame::Presence {
                    group: self.room.group.id.clone(),
                    member: info,
                });
                for subscriber in self.subscribers.values() {
                    if self.room.is_facilitator(&subscriber.key) {
                        subscriber.outbox.push(&frame);
                    }
                }
            }
            Deferred::LineOpened(outbox, key, reply) => self.line_history(&outbox, &key, &reply),
        }
    }

    /// Tells everyone who may see `key` where they stand now.
    fn presence(&self, key: &PublicKey, except: Option<ConnId>, now: u64) {
        let Some(info) = self.room.member_info(key, self.is_online(key), now) else {
            return;
        };
        let frame = frame_bytes(&ServerFrame::Presence {
            group: self.room.group.id.clone(),
            member: info,
        });
        for (conn, subscriber) in &self.subscribers {
            if Some(*conn) != except && self.room.may_see_member(&subscriber.key, key) {
                subscriber.outbox.push(&frame);
            }
        }
    }

    /// The recent history of every pair channel here with `key` (a supervisor on
    /// an escalation's line), newest kept within half the outbox's room, then
    /// `reply`.
    fn line_history(&self, outbox: &Outbox, key: &PublicKey, reply: &ServerFrame) {
        let mut frames = Vec::new();
        for (channel, head) in &self.room.state.heads {
            let Channel::Pair([a, b]) = channel else {
                continue;
            };
            if a != key && b != key {
                continue;
            }
            let events = self
                .store
                .events_between(
                    &self.room.group.id,
                    channel,
                    head.saturating_sub(HISTORY_ON_JOIN),
                    *head,
                    HISTORY_ON_JOIN as usize,
                )
                .unwrap_or_default();
            frames.extend(events.into_iter().map(|event| {
                (
                    event.ts,
                    frame_bytes(&history_frame(&self.room.group.id, *channel, event, false)),
                )
            }));
        }
        frames.sort_by_key(|(ts, _)| *ts);
        let budget = outbox.room() / 2;
        let mut used = 0;
        let fits = frames
            .iter()
            .rev()
            .take_while(|(_, frame)| {
                used += frame.len();
                used <= budget
            })
            .count();
        for (_, frame) in &frames[frames.len() - fits..] {
            outbox.push(frame);
        }
        outbox.push(&frame_bytes(reply));
    }

    /// Sends an event to everyone who reads its channel; a redacted message goes
    /// without its text to everyone but facilitators.
    fn fan_out(&self, channel: Channel, event: &StoredEvent) {
        let full = frame_bytes(&event_frame(&self.room.group.id, channel, event.clone()));
        let hidden = event.redacted.as_ref().map(|_| {
            let mut stripped = event.clone();
            stripped.env = None;
            frame_bytes(&event_frame(&self.room.group.id, channel, stripped))
        });
        for subscriber in self.subscribers.values() {
            if !self.room.may_read(&subscriber.key, &channel) {
                continue;
            }
            match &hidden {
                Some(hidden) if !self.room.is_facilitator(&subscriber.key) => {
                    subscriber.outbox.push(hidden)
                }
                _ => subscriber.outbox.push(&full),
            };
        }
        if let Channel::Pair([a, b]) = channel {
            for line in self.lines.values() {
                if line.key == a || line.key == b {
                    line.outbox.push(&full);
                }
            }
        }
    }

    /// A member just came into the room: their connections get `joined` and the
    /// recent history, as if they had joined now.
    fn rejoin(&self, key: &PublicKey, head: u64, now: u64) {
        let answer = match self.join_reply(key, head, now) {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(group = %self.room.group.id, %error, "could not re-send joined");
                return;
            }
        };
        let joined = frame_bytes(&ServerFrame::Joined {
            id: None,
            group: answer.info,
            head,
            oldest: answer.oldest,
            members: answer.members,
            members_total: answer.members_total,
            status: answer.status,
            state: answer.state,
        });
        let history = self
            .store
            .events_between(
                &self.room.group.id,
                &Channel::Main,
                head.saturating_sub(HISTORY_ON_JOIN)
                    .max(answer.oldest.saturating_sub(1)),
                head,
                HISTORY_ON_JOIN as usize,
            )
            .unwrap_or_default();
        let facilitator = self.room.is_facilitator(key);
        let frames: Vec<FrameBytes> = history
            .into_iter()
            .map(|event| {
                frame_bytes(&history_frame(
                    &self.room.group.id,
                    Channel::Main,
                    event,
                    facilitator,
                ))
            })
            .collect();
        for subscriber in self.subscribers.values() {
            if &subscriber.key == key {
                subscriber.outbox.push(&joined);
                // Only the most recent messages that fit half the room left in the
                // outbox: a long conversation must not get the person just let in
                // closed as a slow consumer before they read a word. They are the
                // newest, gap-free up to the head; older ones come with a resume.
                let budget = subscriber.outbox.room() / 2;
                let mut used = 0;
                let fits = frames
                    .iter()
                    .rev()
                    .take_while(|frame| {
                        used += frame.len();
                        used <= budget
                    })
                    .count();
                for frame in &frames[frames.len() - fits..] {
                    subscriber.outbox.push(frame);
                }
            }
        }
    }

    /// Tells everyone still waiting in the mailbox that nothing happened.
    fn fail_waiting(mut self, batch: Vec<Mail>) {
        self.rx.close();
        let rest = std::iter::from_fn(|| self.rx.try_recv().ok());
        let error = || ServerError::Store(Arc::new(StoreError::Closed));
        for command in batch.into_iter().chain(rest) {
            match *command {
                GroupCommand::Signed {
                    outbox, request_id, ..
                } => {
                    outbox.push(&frame_bytes(&error().frame(request_id)));
                }
                GroupCommand::Join { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                GroupCommand::ClearWaiting { reply, .. } | GroupCommand::Expire { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                GroupCommand::Erase { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                GroupCommand::LinePost {
                    outbox, request_id, ..
                }
                | GroupCommand::LineOpen {
                    outbox, request_id, ..
                } => {
                    outbox.push(&frame_bytes(&error().frame(request_id)));
                }
                GroupCommand::Leave { .. }
                | GroupCommand::Reload
                | GroupCommand::Regrant { .. }
                | GroupCommand::HubNote { .. } => {}
            }
        }
    }
}

/// An `event` frame for a stored event.
pub fn event_frame(
    group: &peerhub_protocol::GroupId,
    channel: Channel,
    event: StoredEvent,
) -> ServerFrame {
    ServerFrame::Event {
        group: group.clone(),
        channel,
        seq: event.seq,
        ts: event.ts,
        env: event.env,
        note: event.note,
        redacted: event.redacted,
    }
}

/// An `event` frame for history, with a redacted message's text kept only for
/// facilitators.
pub fn history_frame(
    group: &peerhub_protocol::GroupId,
    channel: Channel,
    mut event: StoredEvent,
    facilitator: bool,
) -> ServerFrame {
    if event.redacted.is_some() && !facilitator {
        event.env = None;
    }
    event_frame(group, channel, event)
}

fn reply_id(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::Ack { id, .. }
        | ServerFrame::Ok { id }
        | ServerFrame::Records { id, .. }
        | ServerFrame::Line { id, .. }
        | ServerFrame::Error { id, .. } => *id,
        _ => None,
    }
}
