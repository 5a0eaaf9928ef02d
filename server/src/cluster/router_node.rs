//! The escalation router across nodes (docs/CLUSTER.md §6): one node leads (the
//! `router` lease, `router_log`), every node's sessions reach it.
//!
//! - [`lead`]: waits for the lease; on taking it, brings this node's store to the
//!   router log's tail, starts the router on it (which re-arms every unresolved
//!   escalation's deadline, as a restart does) and takes other nodes' router
//!   commands (`peerhub.cmd._router`) until the router stops (the lease lost, or
//!   the hub stopping); then waits for the lease again.
//! - [`dispatch`]: every session's router command on this node goes through it
//!   (the hub's `RouterHandle` sends here in cluster mode). To the local router
//!   while this node leads, else to the leader over NATS; a connection's
//!   outbox is reached from the leader through a proxy outbox (`remote`). It
//!   keeps this node's logged-in connections and registers them again with each
//!   new leader, so nobody drops out of the router's reach at a failover.
//! - A flag that cannot reach any leader is tried again until
//!   [`FLAG_PATIENCE`] has passed, then refused with the helplines and words
//!   that say it was not passed on — never dropped in silence, and never kept
//!   waiting on NATS: the help path answers within seconds even when a failover
//!   (about a lease's TTL) or a NATS outage is under way.
//!
//! Logs name connections and nodes, never a flag or a key.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use peerhub_protocol::escalation::EscalationPart;
use peerhub_protocol::frame::{Role, ServerFrame};
use peerhub_protocol::payload::{EscalationActPayload, FlagPayload, RotaPayload};
use peerhub_protocol::{ErrorCode, PublicKey, SignedEnvelope};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::commands::{self, Asked, Inbox, Replies};
use super::node::ClusterNode;
use super::remote::ProxySettings;
use super::router_log::{self, LOG};
use crate::admin::AdminError;
use crate::error::ServerError;
use crate::escalation::{OperatorAsk, ReadTicket, RouterCommand, RouterHandle};
use crate::hub::Hub;
use crate::outbound::{ConnId, Outbox};

/// How long a flag keeps trying to reach a leader before it is refused (with
/// the helplines).
pub const FLAG_PATIENCE: Duration = Duration::from_millis(1500);
/// How long one request to the leader may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an operator's command keeps trying to reach a leader before it is
/// refused: never answered from this node's copy instead.
pub const OPERATOR_PATIENCE: Duration = Duration::from_secs(10);

/// Why an operator's command that reached no leader was refused; `changes`:
/// it was a change, which an answer lost on the way may still have carried.
fn unanswered(changes: bool) -> String {
    let outcome = if changes {
        "it may not have been made: when the cluster answers again, list the queue or \
         the rota to see"
    } else {
        "nothing was read from this node's copy, which may be out of date"
    };
    format!(
        "no node leading the escalation router answered within {} s (NATS unreachable, \
         or the router moving to another node); {outcome}; run the command again",
        OPERATOR_PATIENCE.as_secs()
    )
}

/// A session's router command as it travels to the leader.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Forwarded {
    Register {
        key: PublicKey,
        roles: Vec<Role>,
    },
    Unregister,
    Roles {
        roles: Vec<Role>,
    },
    Raise {
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: FlagPayload,
        over_key_limit: bool,
        counter: u64,
    },
    Act {
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: EscalationActPayload,
        counter: u64,
    },
    List {
        key: PublicKey,
        request_id: Option<u64>,
        after: Option<String>,
    },
    Detail {
        key: PublicKey,
        request_id: Option<u64>,
        escalation: Option<u64>,
        reference: Option<String>,
        part: EscalationPart,
        offset: u32,
    },
    SetRota {
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: RotaPayload,
        counter: u64,
    },
    GetRota {
        key: PublicKey,
        request_id: Option<u64>,
    },
    LineGrant {
        key: PublicKey,
        escalation: u64,
    },
    Operator {
        ask: OperatorAsk,
    },
}

/// A forwarded command with the connection it came from.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    conn: u64,
    command: Forwarded,
}

/// What a connection's command was, for the answer when no leader took it.
struct Sent {
    outbox: Option<Outbox>,
    request_id: Option<u64>,
    is_flag: bool,
}

/// The hub's router handle in cluster mode, and its dispatcher's receiver.
pub(crate) fn router_handle() -> (RouterHandle, mpsc::Receiver<RouterCommand>) {
    let (tx, rx) = mpsc::channel(1024);
    (RouterHandle::new(tx), rx)
}

/// The router this node leads now, if any (set by [`lead`], read by
/// [`dispatch`]).
pub(crate) type Leading = watch::Receiver<Option<mpsc::Sender<RouterCommand>>>;

/// Takes this node's sessions' router commands from `rx` to whichever node
/// leads, until the hub stops. Commands for a leader elsewhere are each sent
/// from a task of their own, so that none (a flag least of all) waits behind
/// another's request while NATS is slow.
pub(crate) async fn dispatch(
    node: Arc<ClusterNode>,
    hub: Arc<Hub>,
    mut rx: mpsc::Receiver<RouterCommand>,
    mut leading: Leading,
) {
    // Logged-in connections here: registered again with every new leader.
    let mut registered: HashMap<ConnId, (Outbox, PublicKey, Vec<Role>)> = HashMap::new();
    let mut leader = watch_leader(node.clone(), hub.shutdown.clone());
    loop {
        let command = tokio::select! {
            () = hub.shutdown.cancelled() => return,
            command = rx.recv() => match command {
                Some(command) => command,
                None => return,
            },
            changed = leading.changed() => {
                if changed.is_err() {
                    return;
                }
                let local = leading.borrow().clone();
                if let Some(local) = local {
                    // This node leads now: its connections register with it.
                    for (outbox, key, roles) in registered.values() {
                        let _ = local
                            .send(RouterCommand::Register {
                                outbox: outbox.clone(),
                                key: *key,
                                roles: roles.clone(),
                            })
                            .await;
                    }
                }
                continue;
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
                let elsewhere = leader
                    .borrow()
                    .as_ref()
                    .is_some_and(|holder| holder != &node.holder);
                if elsewhere {
                    // A new leader elsewhere has never heard of this node's
                    // connections.
                    for (conn, (outbox, key, roles)) in &registered {
                        node.relay.register_router(outbox);
                        let command = Forwarded::Register { key: *key, roles: roles.clone() };
                        let (node, conn) = (node.clone(), *conn);
                        tokio::spawn(async move {
                            let _ = forward(&node, &conn, command).await;
                        });
                    }
                }
                continue;
            }
        };
        match &command {
            RouterCommand::Register { outbox, key, roles } => {
                registered.insert(outbox.conn, (outbox.clone(), *key, roles.clone()));
                node.relay.register_router(outbox);
            }
            RouterCommand::Unregister { conn } => {
                registered.remove(conn);
                node.relay.unregister_router(conn.0);
            }
            RouterCommand::Roles { conn, roles } => {
                if let Some(entry) = registered.get_mut(conn) {
                    entry.2 = roles.clone();
                }
            }
            _ => {}
        }
        let local = leading.borrow().clone();
        if let (RouterCommand::RebaseLog { .. }, None) = (&command, &local) {
            // Only the leader trims its log; another node has nothing to do.
            if let RouterCommand::RebaseLog { reply } = command {
                let _ = reply.send(Ok(None));
            }
            continue;
        }
        match local {
            Some(local) => {
                if let RouterCommand::Raise { payload, .. } = &command {
                    if !hub.groups.is_served_here(&payload.group) {
                        follow_group(&node, &hub.store, &payload.group).await;
                    }
                }
                if let Err(mpsc::error::SendError(command)) = local.send(command).await {
                    refuse(command, ServerError::ShuttingDown, &hub.settings.helplines);
                }
            }
            None => {
                // Ends with the hub: a forward waiting on NATS (up to 20 s)
                // must not keep the hub, and so its store, after shutdown.
                let (node, hub) = (node.clone(), hub.clone());
                tokio::spawn(async move {
                    let stopping = hub.shutdown.clone();
                    tokio::select! {
                        () = send_to_leader(node, hub, command) => {}
                        () = stopping.cancelled() => {}
                    }
                });
            }
        }
    }
}

/// Before the router hears a flag about a group this node does not serve, this
/// node's copy of the group is brought up to the group's log (the router checks
/// membership and copies the context from it). Bounded: a flag never waits long
/// on NATS; the router then answers from the copy as it is.
async fn follow_group(
    node: &ClusterNode,
    store: &crate::store::Store,
    group: &peerhub_protocol::GroupId,
) {
    let lock = node.group_lock(group);
    let caught_up = tokio::time::timeout(Duration::from_secs(1), async {
        let _held = lock.lock().await;
        super::replica::catch_up(store, &node.logs, group).await
    })
    .await;
    match caught_up {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%group, %error, "a flag's group could not be followed"),
        Err(_) => tracing::warn!(%group, "a flag's group was not followed in time"),
    }
}

/// Who holds the router's lease, looked at every third of its TTL in a task of
/// its own (a read that waits on NATS holds up nothing else).
fn watch_leader(
    node: Arc<ClusterNode>,
    stop: CancellationToken,
) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(node.settings.lease_ttl / 3);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Ok(Some((value, _))) = node.leases.current(router_log::LEASE).await {
                tx.send_if_modified(|seen| {
                    let changed = seen.as_ref() != Some(&value.holder);
                    *seen = Some(value.holder.clone());
                    changed
                });
            }
        }
    });
    rx
}

/// A command this node could not hand to any leader: its connection hears so
/// (a flag with the hub's configured `helplines`, by the session's rule for a
/// refused flag).
fn refuse(
    command: RouterCommand,
    error: ServerError,
    helplines: &[peerhub_protocol::escalation::Helpline],
) {
    let sent = sent_of(&command);
    if let Some(outbox) = sent.outbox {
        let mut frame = error.frame(sent.request_id);
        if sent.is_flag {
            if let ServerFrame::Error {
                helplines: signposting,
                ..
            } = &mut frame
            {
                *signposting = Some(helplines.to_vec());
            }
        }
        outbox.push(&crate::outbound::FrameBytes::from(frame.to_json()));
    }
    match command {
        RouterCommand::LineGrant { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        RouterCommand::Operator { reply, .. } => {
            let _ = reply.send(Err(AdminError::Router(error.to_string())));
        }
        RouterCommand::RebaseLog { reply } => {
            let _ = reply.send(Err(error.to_string()));
        }
        _ => {}
    }
}

fn sent_of(command: &RouterCommand) -> Sent {
    match command {
        RouterCommand::Raise {
            outbox, request_id, ..
        } => Sent {
            outbox: Some(outbox.clone()),
            request_id: *request_id,
            is_flag: true,
        },
        RouterCommand::Act {
            outbox, request_id, ..
        }
        | RouterCommand::List {
            outbox, request_id, ..
        }
        | RouterCommand::Detail {
            outbox, request_id, ..
        }
        | RouterCommand::SetRota {
            outbox, request_id, ..
        }
        | RouterCommand::GetRota {
            outbox, request_id, ..
        } => Sent {
            outbox: Some(outbox.clone()),
            request_id: *request_id,
            is_flag: false,
        },
        _ => Sent {
            outbox: None,
            request_id: None,
            is_flag: false,
        },
    }
}

async fn send_to_leader(node: Arc<ClusterNode>, hub: Arc<Hub>, command: RouterCommand) {
    // A line grant is a question with an answer of its own.
    let command = match command {
        RouterCommand::LineGrant {
            key,
            escalation,
            reply,
        } => {
            let asked = forward_within(
                ASK_TIMEOUT * 2,
                &node,
                &ConnId(0),
                Forwarded::LineGrant { key, escalation },
            )
            .await;
            let _ = reply.send(asked.and_then(|answer| match answer {
                Answer::Line { grant } => Ok(grant),
                _ => Err(ServerError::Internal(
                    "an unexpected answer from the router's node",
                )),
            }));
            return;
        }
        RouterCommand::Operator { ask, reply } => {
            let changes = !matches!(ask, OperatorAsk::List { .. } | OperatorAsk::RotaList);
            let asked = forward_within(
                OPERATOR_PATIENCE,
                &node,
                &ConnId(0),
                Forwarded::Operator { ask },
            )
            .await;
            let _ = reply.send(match asked {
                Ok(Answer::Report { report }) => Ok(report),
                Ok(_) => Err(AdminError::Router(
                    "an unexpected answer from the router's node".into(),
                )),
                Err(ServerError::Forwarded { message, .. }) => Err(AdminError::Router(message)),
                Err(error) => {
                    tracing::warn!(%error, "an operator's command reached no router");
                    Err(AdminError::Router(unanswered(changes)))
                }
            });
            return;
        }
        other => other,
    };
    let (conn, forwarded) = match &command {
        RouterCommand::Register { outbox, key, roles } => (
            outbox.conn,
            Forwarded::Register {
                key: *key,
                roles: roles.clone(),
            },
        ),
        RouterCommand::Unregister { conn } => (*conn, Forwarded::Unregister),
        RouterCommand::Roles { conn, roles } => (
            *conn,
            Forwarded::Roles {
                roles: roles.clone(),
            },
        ),
        RouterCommand::Raise {
            outbox,
            key,
            request_id,
            env,
            payload,
            over_key_limit,
            ticket,
        } => (
            outbox.conn,
            Forwarded::Raise {
                key: *key,
                request_id: *request_id,
                env: env.clone(),
                payload: payload.clone(),
                over_key_limit: *over_key_limit,
                counter: ticket.counter(),
            },
        ),
        RouterCommand::Act {
            outbox,
            key,
            request_id,
            env,
            payload,
            ticket,
        } => (
            outbox.conn,
            Forwarded::Act {
                key: *key,
                request_id: *request_id,
                env: env.clone(),
                payload: payload.clone(),
                counter: ticket.counter(),
            },
        ),
        RouterCommand::List {
            outbox,
            key,
            request_id,
            after,
            ..
        } => (
            outbox.conn,
            Forwarded::List {
                key: *key,
                request_id: *request_id,
                after: after.clone(),
            },
        ),
        RouterCommand::Detail {
            outbox,
            key,
            request_id,
            escalation,
            reference,
            part,
            offset,
            ..
        } => (
            outbox.conn,
            Forwarded::Detail {
                key: *key,
                request_id: *request_id,
                escalation: *escalation,
                reference: reference.clone(),
                part: *part,
                offset: *offset,
            },
        ),
        RouterCommand::SetRota {
            outbox,
            key,
            request_id,
            env,
            payload,
            ticket,
        } => (
            outbox.conn,
            Forwarded::SetRota {
                key: *key,
                request_id: *request_id,
                env: env.clone(),
                payload: payload.clone(),
                counter: ticket.counter(),
            },
        ),
        RouterCommand::GetRota {
            outbox,
            key,
            request_id,
            ..
        } => (
            outbox.conn,
            Forwarded::GetRota {
                key: *key,
                request_id: *request_id,
            },
        ),
        RouterCommand::LineGrant { .. } | RouterCommand::Operator { .. } => {
            unreachable!("answered above")
        }
        RouterCommand::RebaseLog { .. } => {
            unreachable!("never sent on: the dispatcher answers it when this node does not lead")
        }
    };
    let patience = match &forwarded {
        Forwarded::Raise { .. } => FLAG_PATIENCE,
        _ => ASK_TIMEOUT * 2,
    };
    let is_flag = matches!(forwarded, Forwarded::Raise { .. });
    let sent = forward_within(patience, &node, &conn, forwarded).await;
    if let Err(error) = sent {
        tracing::warn!(%conn, %error, "a router command reached no leader");
        if is_flag {
            hub.metrics.cluster().inspect(|m| m.flags_not_passed.inc());
        }
        let error = match (is_flag, &error) {
            (true, ServerError::Store(_)) => ServerError::Forwarded {
                code: ErrorCode::StorageUnavailable,
                message: "your flag could not be passed to a supervisor just now, so it was \
                          not kept: please use the helplines, call the emergency services if \
                          anyone is in danger now, and send it again in a moment"
                    .into(),
                retry_after_ms: None,
                next_session_ms: None,
            },
            _ => error,
        };
        refuse(command, error, &hub.settings.helplines);
    }
}

/// [`forward`] for at most `within`; past it, not taken.
async fn forward_within(
    within: Duration,
    node: &Arc<ClusterNode>,
    conn: &ConnId,
    command: Forwarded,
) -> Result<Answer, ServerError> {
    tokio::time::timeout(within, forward(node, conn, command))
        .await
        .unwrap_or_else(|_| Err(super::remote::not_taken("the router's node did not answer")))
}

/// Sends one command to the leader, trying again while no node leads (a
/// failover) until the caller gives up.
async fn forward(
    node: &Arc<ClusterNode>,
    conn: &ConnId,
    command: Forwarded,
) -> Result<Answer, ServerError> {
    let id = super::remote::unique_id(&format!("router-{}", conn.0), &node.holder);
    let payload = Bytes::from(
        serde_json::to_vec(&Envelope {
            node: node.holder.clone(),
            conn: conn.0,
            command,
        })
        .unwrap_or_default(),
    );
    loop {
        let asked = commands::ask(&node.nats, LOG, &id, payload.clone(), ASK_TIMEOUT).await;
        let retry = match asked {
            Ok(Asked::Answered(answer)) => {
                return match serde_json::from_slice::<Answer>(&answer) {
                    Ok(Answer::Refused { code, message }) => Err(ServerError::Forwarded {
                        code,
                        message,
                        retry_after_ms: None,
                        next_session_ms: None,
                    }),
                    Ok(answer) => Ok(answer),
                    Err(_) => Err(ServerError::Internal(
                        "an unreadable answer from the router's node",
                    )),
                }
            }
            Ok(Asked::NoOwner) => "no node leads the router now",
            Err(_) => "the router's node did not answer",
        };
        tracing::debug!(%conn, retry, "a router command is sent again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The leader's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
enum Answer {
    Queued,
    Line { grant: crate::escalation::LineGrant },
    Report { report: serde_json::Value },
    Refused { code: ErrorCode, message: String },
}

/// Settings the leader's router is started with.
#[derive(Debug, Clone)]
pub struct LeadSettings {
    /// Escalation settings.
    pub escalation: crate::escalation::EscalationSettings,
    /// Limits (the router's flag limits).
    pub limits: crate::limits::LimitSettings,
    /// Tracks the router's task (the hub's group tracker).
    pub tracker: tokio_util::task::TaskTracker,
    /// Cancelled when the hub's router must stop.
    pub router_stop: CancellationToken,
    /// How proxies for other nodes' connections are bounded.
    pub proxy: ProxySettings,
    /// The replay guard (commands from other nodes were checked there).
    pub replay: crate::admission::ReplayGuard,
}

/// Leads the router whenever this node holds its lease, until the hub stops;
/// `leading` tells the dispatcher which router runs here.
pub(crate) async fn lead(
    node: Arc<ClusterNode>,
    hub: Arc<Hub>,
    settings: LeadSettings,
    leading: watch::Sender<Option<mpsc::Sender<RouterCommand>>>,
) {
    let retry = node.settings.lease_ttl / 3;
    loop {
        let owned = loop {
            if hub.shutdown.is_cancelled() || settings.router_stop.is_cancelled() {
                return;
            }
            match router_log::take(&node, &hub.store).await {
                Ok(Some(owned)) => break owned,
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "could not take the router; trying again"),
            }
            tokio::select! {
                () = hub.shutdown.cancelled() => return,
                () = settings.router_stop.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
        };
        let stop = settings.router_stop.child_token();
        let (staff, staff_line) = crate::escalation::staff::StaffNotices::new();
        settings
            .tracker
            .spawn(crate::escalation::staff::deliver(staff_line, hub.clone()));
        let started = crate::escalation::EscalationRouter::start(
            hub.store.clone(),
            hub.committer.clone(),
            hub.clock.clone(),
            hub.audit.clone(),
            settings.escalation.clone(),
            &settings.tracker,
            stop.clone(),
            hub.metrics.clone(),
            staff,
            crate::limits::FlagLimits::new(&settings.limits),
            hub.alerts.clone(),
            Some(Box::new(owned)),
        );
        let router = match started {
            Ok(router) => router,
            Err(error) => {
                tracing::error!(%error, "the router could not start on this node");
                continue;
            }
        };
        let tx = router.sender();
        let _ = leading.send(Some(tx.clone()));
        let metrics = hub.metrics.cluster();
        metrics.inspect(|m| m.router_leader.set(1));
        serve(&node, &hub, &tx, &settings.proxy, &settings.replay).await;
        let _ = leading.send(None);
        metrics.inspect(|m| m.router_leader.set(0));
        // The escalation figures are the leader's: a node that no longer leads
        // shows none rather than a stale queue.
        hub.metrics.set_escalations([]);
        stop.cancel();
        tracing::info!("no longer leading the escalation router");
    }
}

/// Takes other nodes' router commands to the router this node leads, until it
/// stops.
async fn serve(
    node: &Arc<ClusterNode>,
    hub: &Hub,
    tx: &mpsc::Sender<RouterCommand>,
    proxy: &ProxySettings,
    replay: &crate::admission::ReplayGuard,
) {
    let mut inbox = match Inbox::serve(&node.nats, LOG).await {
        Ok(inbox) => inbox,
        Err(error) => {
            tracing::error!(%error, "cannot take router commands from other nodes");
            return tx.closed().await;
        }
    };
    let mut replies = Replies::new(1024);
    // Other nodes' connections registered here, whose proxies go when this ends.
    let mut proxied: HashSet<(String, u64)> = HashSet::new();
    // Operators' commands under way, each on a task of its own (a listing or a
    // commit must not hold up a flag from another node), answered when done.
    let (done, mut operated) = mpsc::channel::<(commands::Command, Bytes)>(16);
    let mut operating: HashSet<String> = HashSet::new();
    loop {
        let command = tokio::select! {
            command = inbox.next() => command,
            Some((command, answer)) = operated.recv() => {
                operating.remove(&command.id);
                replies.remember(&command.id, answer.clone());
                let _ = inbox.answer(&command, answer).await;
                continue;
            }
            () = tx.closed() => None,
        };
        let Some(command) = command else { break };
        if let Some(answer) = replies.get(&command.id) {
            let _ = inbox.answer(&command, answer.clone()).await;
            continue;
        }
        if operating.contains(&command.id) {
            // Sent again while under way: answered once it is done.
            continue;
        }
        let answer = match serde_json::from_slice::<Envelope>(&command.payload) {
            Ok(Envelope {
                command: Forwarded::Operator { ask },
                ..
            }) => {
                operating.insert(command.id.clone());
                let (tx, done) = (tx.clone(), done.clone());
                tokio::spawn(async move {
                    let answer = match operate(&tx, ask).await {
                        Ok(report) => Answer::Report { report },
                        Err(error) => Answer::Refused {
                            code: error.code(),
                            message: error.to_string(),
                        },
                    };
                    let answer = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
                    let _ = done.send((command, answer)).await;
                });
                continue;
            }
            Ok(envelope) => {
                let from = (envelope.node.clone(), envelope.conn);
                if let Forwarded::Raise { payload, .. } = &envelope.command {
                    if !hub.groups.is_served_here(&payload.group) {
                        follow_group(node, &hub.store, &payload.group).await;
                    }
                }
                match handle(node, tx, proxy, replay, envelope).await {
                    Ok(Handled::Line(grant)) => Answer::Line { grant },
                    Ok(Handled::Report(report)) => Answer::Report { report },
                    Ok(Handled::Queued(registered)) => {
                        match registered {
                            Some(true) => {
                                proxied.insert(from);
                            }
                            Some(false) => {
                                proxied.remove(&from);
                            }
                            None => {}
                        }
                        Answer::Queued
                    }
                    Err(error) => Answer::Refused {
                        code: error.code(),
                        message: error.to_string(),
                    },
                }
            }
            Err(_) => Answer::Refused {
                code: ErrorCode::Internal,
                message: "an unreadable router command from another node".into(),
            },
        };
        let bytes = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
        replies.remember(&command.id, bytes.clone());
        let _ = inbox.answer(&command, bytes).await;
    }
    inbox.close().await;
    for (from, conn) in proxied {
        node.relay.release_proxy(&from, conn);
    }
}

/// What the router made of a forwarded command.
enum Handled {
    /// Queued; `Some(true)` when it registered a connection, `Some(false)` when
    /// it unregistered one.
    Queued(Option<bool>),
    /// A line grant, answered at once.
    Line(crate::escalation::LineGrant),
    /// An operator's command (not forwarded this way: [`serve`] runs each on
    /// a task of its own), with what it prints.
    Report(serde_json::Value),
}

/// Hands an operator's command to the router and waits for what it prints; a
/// refusal goes back in the router's own words.
async fn operate(
    tx: &mpsc::Sender<RouterCommand>,
    ask: OperatorAsk,
) -> Result<serde_json::Value, ServerError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send(RouterCommand::Operator { ask, reply })
        .await
        .map_err(|_| ServerError::ShuttingDown)?;
    let report = answer.await.map_err(|_| ServerError::ShuttingDown)?;
    report.map_err(|error| ServerError::Forwarded {
        code: ErrorCode::Invalid,
        message: error.to_string(),
        retry_after_ms: None,
        next_session_ms: None,
    })
}

/// Hands one forwarded command to the router.
async fn handle(
    node: &Arc<ClusterNode>,
    tx: &mpsc::Sender<RouterCommand>,
    proxy: &ProxySettings,
    replay: &crate::admission::ReplayGuard,
    envelope: Envelope,
) -> Result<Handled, ServerError> {
    let Envelope {
        node: from,
        conn,
        command,
    } = envelope;
    let existing = || node.relay.existing_proxy(&from, conn);
    // A command from a connection not registered here yet (its registration
    // with this new leader still on its way) gets a proxy of its own.
    let outbox = || existing().unwrap_or_else(|| node.relay.proxy(node, &from, conn, proxy));
    let read_ticket = || {
        ReadTicket::take(&Arc::new(AtomicBool::new(false)))
            .ok_or(ServerError::Internal("a fresh read ticket was taken"))
    };
    let replay = |key: &PublicKey, counter: u64| replay.forwarded(key, counter);
    let mut registered = None;
    let command = match command {
        Forwarded::Register { key, roles } => {
            registered = Some(true);
            RouterCommand::Register {
                outbox: node.relay.proxy(node, &from, conn, proxy),
                key,
                roles,
            }
        }
        Forwarded::Unregister => {
            let Some(outbox) = existing() else {
                return Ok(Handled::Queued(None));
            };
            let command = RouterCommand::Unregister { conn: outbox.conn };
            tx.send(command)
                .await
                .map_err(|_| ServerError::ShuttingDown)?;
            node.relay.release_proxy(&from, conn);
            return Ok(Handled::Queued(Some(false)));
        }
        Forwarded::Roles { roles } => {
            let Some(outbox) = existing() else {
                return Ok(Handled::Queued(None));
            };
            RouterCommand::Roles {
                conn: outbox.conn,
                roles,
            }
        }
        Forwarded::Raise {
            key,
            request_id,
            env,
            payload,
            over_key_limit,
            counter,
        } => RouterCommand::Raise {
            outbox: outbox(),
            key,
            request_id,
            env,
            payload,
            over_key_limit,
            ticket: replay(&key, counter),
        },
        Forwarded::Act {
            key,
            request_id,
            env,
            payload,
            counter,
        } => RouterCommand::Act {
            outbox: outbox(),
            key,
            request_id,
            env,
            payload,
            ticket: replay(&key, counter),
        },
        Forwarded::List {
            key,
            request_id,
            after,
        } => RouterCommand::List {
            outbox: outbox(),
            key,
            request_id,
            after,
            ticket: read_ticket()?,
        },
        Forwarded::Detail {
            key,
            request_id,
            escalation,
            reference,
            part,
            offset,
        } => RouterCommand::Detail {
            outbox: outbox(),
            key,
            request_id,
            escalation,
            reference,
            part,
            offset,
            ticket: read_ticket()?,
        },
        Forwarded::SetRota {
            key,
            request_id,
            env,
            payload,
            counter,
        } => RouterCommand::SetRota {
            outbox: outbox(),
            key,
            request_id,
            env,
            payload,
            ticket: replay(&key, counter),
        },
        Forwarded::GetRota { key, request_id } => RouterCommand::GetRota {
            outbox: outbox(),
            key,
            request_id,
            ticket: read_ticket()?,
        },
        Forwarded::LineGrant { key, escalation } => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            tx.send(RouterCommand::LineGrant {
                key,
                escalation,
                reply,
            })
            .await
            .map_err(|_| ServerError::ShuttingDown)?;
            let grant = answer.await.map_err(|_| ServerError::ShuttingDown)??;
            return Ok(Handled::Line(grant));
        }
        Forwarded::Operator { ask } => {
            return operate(tx, ask).await.map(Handled::Report);
        }
    };
    tx.send(command)
        .await
        .map_err(|_| ServerError::ShuttingDown)?;
    Ok(Handled::Queued(registered))
}
