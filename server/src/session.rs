//! One task per WebSocket connection: login, then the client's commands.
//!
//! The task owns the connection and selects over four things: the shutdown token,
//! its `kicked` signal (its outbox filled up), its outbox (frames from group tasks:
//! acks, events, presence) and the socket. Replies to its own requests (errors,
//! `auth_ok`, `joined` and history) it writes directly, history in pages no larger
//! than the room left in its outbox: a client that stops reading holds at most
//! the outbox bound, and a write it does not take within the write timeout closes
//! it as a slow consumer (4001), as a full outbox does. Signatures are verified
//! here, so verification runs in parallel across connections; ordering and
//! persistence belong to the group tasks.
//!
//! It must never log message content, display names or keys: only its `ConnId`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::frame::StaffMember;
use peerhub_protocol::frame::{
    decode_client_frame, Channel, Limits, RecordInfo, Role, ServerFrame,
};
use peerhub_protocol::limits::{HISTORY_ON_JOIN, MAX_BODY_CHARS, MAX_STAFF_LISTED};
use peerhub_protocol::names::normalise_display_name;
use peerhub_protocol::payload::{
    AgreePayload, AuthPayload, ControlPayload, CreateGroupPayload, EscalationActPayload,
    FlagPayload, GrantPayload, GroupKind, InvitePayload, InviteRole, JoinPayload, PostPayload,
    RecordPayload, RedeemPayload, ReportPayload, RotaPayload, StepOutPayload,
};
use peerhub_protocol::{ClientFrame, GroupId, ProtocolError, PublicKey, SignedEnvelope};

use crate::admission::{admit, admit_in_cluster, check_fresh, CounterTicket, Signer};
use crate::cluster::directory::apply_own_account;
use crate::error::ServerError;
use crate::escalation::RouterCommand;
use crate::groups::{group_info, history_frame, Action, GroupHandle, JoinRequest};
use crate::hub::Hub;
use crate::limits::{ConnectionTicket, Place};
use crate::outbound::{self, ConnId, FrameBytes, Outbox};
use crate::text::check_text;
use crate::transport::ws::{Incoming, WriteFailed, WsConnection};

/// Failed logins before the connection is closed.
const MAX_FAILED_AUTHS: u32 = 3;
/// Errors in a row before the connection is closed.
const MAX_CONSECUTIVE_ERRORS: u32 = 20;
/// Events read from the store at a time while filling a history page (a page
/// itself is bounded in bytes by the room left in the outbox).
const HISTORY_READ: usize = 32;
/// Frames taken from the outbox per socket flush.
const WRITE_BATCH: usize = 64;

/// Close codes (RFC 6455 §7.4 and our private range).
pub mod close_code {
    /// Server shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Failed logins, or too many bad frames: do not reconnect automatically.
    pub const POLICY: u16 = 1008;
    /// A frame over the hard size cap.
    pub const TOO_BIG: u16 = 1009;
    /// The peer broke the WebSocket protocol (RFC 6455 §7.4.1).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8 (RFC 6455 §8.1).
    pub const NOT_UTF8: u16 = 1007;
    /// The client did not keep up with its outbox; resume from the last seq.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// No login in time (a stalled or sleeping client); reconnecting is fine.
    pub const LOGIN_TIMEOUT: u16 = 4002;
    /// Nothing heard (not even a pong) for the idle timeout; reconnecting is fine.
    pub const IDLE: u16 = 4003;
    /// Too many connections or logins right now; reconnect later.
    pub const TRY_LATER: u16 = 1013;
}

#[derive(Debug)]
struct User {
    key: PublicKey,
    verifying: VerifyingKey,
}

#[derive(Debug)]
enum Auth {
    Pending { challenge: String },
    LoggedIn(User),
}

#[derive(Debug)]
enum End {
    Shutdown,
    Slow,
    Close(u16, &'static str),
    Gone,
}

/// What the transport hands a session: its id, the peer's address, and the
/// places it holds under the connection caps.
#[derive(Debug)]
pub struct Link {
    /// The connection's id.
    pub conn: ConnId,
    /// The client's address: the TCP peer's, or the one a trusted proxy named
    /// (for per-address limits; never logged).
    pub peer: IpAddr,
    /// Places held under the caps while the connection is open.
    pub ticket: ConnectionTicket,
}

struct Session {
    hub: Arc<Hub>,
    conn: ConnId,
    peer: IpAddr,
    ticket: ConnectionTicket,
    /// This key's place under the per-key connection cap, once logged in.
    key_place: Option<Place<PublicKey>>,
    /// The key the last `auth` claimed (for the failed-login limit per key).
    claimed_key: Option<PublicKey>,
    outbox: Outbox,
    auth: Auth,
    joined: HashMap<GroupId, GroupHandle>,
    /// Groups where this connection holds an escalation's private line open (a
    /// supervisor's; not joined, no presence).
    lines: HashMap<GroupId, GroupHandle>,
    failed_auths: u32,
    consecutive_errors: u32,
    /// The frame being refused is a flag (its refusal carries the helplines).
    refusing_flag: bool,
    /// Set while this connection has an unsigned request of each kind with the
    /// router (see `escalation::ReadTicket`): one list, one detail and one rota
    /// read at a time.
    router_reads: [Arc<std::sync::atomic::AtomicBool>; 3],
    /// A write failed: the connection is finished.
    dead: bool,
    /// A write was not taken in time: the connection closes as a slow consumer.
    slow: bool,
}

fn bytes(frame: &ServerFrame) -> FrameBytes {
    FrameBytes::from(frame.to_json())
}

fn random_challenge() -> String {
    let mut buf = [0u8; 32];
    // The OS random source does not fail on supported platforms; if it ever did,
    // an all-zero challenge still works but is guessable, so say so loudly.
    if getrandom::fill(&mut buf).is_err() {
        tracing::error!("OS random source failed");
    }
    peerhub_protocol::encoding::b64(&buf)
}

/// Runs a connection from `hello` to close.
pub async fn run(hub: Arc<Hub>, mut ws: WsConnection, link: Link) {
    let Link { conn, peer, ticket } = link;
    let (outbox, mut queue) = outbound::outbox(
        conn,
        hub.settings.outbox_capacity,
        hub.settings.outbox_bytes,
        hub.metrics.outbox_drops.clone(),
    );
    let challenge = random_challenge();
    let hello = bytes(&ServerFrame::Hello {
        protocol: peerhub_protocol::PROTOCOL_VERSION,
        challenge: challenge.clone(),
        server_time: hub.clock.now_ms(),
        limits: Limits::default(),
    });
    // Boxed, as are the other awaits outside the loop below: they run once, and
    // the task would otherwise keep room for the largest of them all its life.
    if Box::pin(ws.send(hello)).await.is_err() {
        return;
    }
    tracing::debug!(%conn, "connection open");
    let mut session = Session {
        hub,
        conn,
        peer,
        ticket,
        key_place: None,
        claimed_key: None,
        outbox,
        auth: Auth::Pending { challenge },
        joined: HashMap::new(),
        lines: HashMap::new(),
        failed_auths: 0,
        consecutive_errors: 0,
        refusing_flag: false,
        router_reads: Default::default(),
        dead: false,
        slow: false,
    };
    let auth_deadline = tokio::time::Instant::now() + session.hub.settings.auth_timeout;
    let shutdown = session.hub.shutdown.clone();
    let (ping_every, idle_after) = {
        let limits = session.hub.limits.settings();
        (limits.ping_interval, limits.idle_timeout)
    };
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_heard = tokio::time::Instant::now();
    let kicked = queue.kicked.clone();
    let mut touch = session.hub.cluster.as_ref().map(|node| node.in_touch());
    let end = loop {
        let logged_in = matches!(session.auth, Auth::LoggedIn(_));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break End::Shutdown,
            _ = kicked.cancelled() => break End::Slow,
            () = crate::cluster::presence::lost(&mut touch) => {
                // Its groups cannot be served here now; a connection in none
                // stays (a flag is still answered, with the helplines).
                if !session.joined.is_empty() || !session.lines.is_empty() {
                    break End::Close(close_code::TRY_LATER, crate::cluster::presence::CLOSE_REASON);
                }
            }
            _ = tokio::time::sleep_until(auth_deadline), if !logged_in => {
                break End::Close(close_code::LOGIN_TIMEOUT, "no login in time")
            }
            _ = pings.tick() => {
                if last_heard.elapsed() >= idle_after {
                    break End::Close(close_code::IDLE, "nothing heard for too long; reconnect and resume");
                }
                if ws.ping().await.is_err() {
                    break End::Gone;
                }
            }
            Some(first) = queue.recv() => {
                let mut frames = Vec::with_capacity(WRITE_BATCH);
                frames.push(first);
                while frames.len() < WRITE_BATCH {
                    match queue.try_recv() {
                        Some(frame) => frames.push(frame),
                        None => break,
                    }
                }
                // A peer that stopped reading blocks this write; its outbox filling
                // up meanwhile ends it with the slow-consumer reason, not a timeout.
                let written = tokio::select! {
                    written = ws.send_all(frames) => written,
                    _ = kicked.cancelled() => break End::Slow,
                };
                match written {
                    Ok(()) => {}
                    Err(WriteFailed::TimedOut) => break End::Slow,
                    Err(WriteFailed::Broken) => break End::Gone,
                }
            }
            incoming = ws.recv() => {
                last_heard = tokio::time::Instant::now();
                let verdict = match incoming {
                    Incoming::Alive => None,
                    // Boxed: handling a frame is the largest state this task
                    // ever holds (kilobytes), and an idle connection would
                    // otherwise keep room for it for as long as it is open.
                    Incoming::Text(text) => Box::pin(session.handle(text.as_str(), &mut ws)).await,
                    Incoming::Binary => {
                        let error = ProtocolError::Malformed("binary frames are not used; send JSON text".into());
                        Box::pin(session.refuse(&mut ws, None, false, error.into())).await
                    }
                    Incoming::TooBig => Some(End::Close(close_code::TOO_BIG, "frame too large")),
                    Incoming::ProtocolError => Some(End::Close(close_code::PROTOCOL_ERROR, "websocket protocol error")),
                    Incoming::NotUtf8 => Some(End::Close(close_code::NOT_UTF8, "text message is not UTF-8")),
                    Incoming::Closed => Some(End::Gone),
                };
                if let Some(end) = verdict {
                    break end;
                }
                if session.slow {
                    break End::Slow;
                }
                if session.dead {
                    break End::Gone;
                }
            }
        }
    };
    Box::pin(finish(session, ws, end)).await;
}

/// Takes a closing connection out of its groups and the router, and closes it as
/// `end` says.
async fn finish(mut session: Session, mut ws: WsConnection, end: End) {
    let conn = session.conn;
    tracing::debug!(%conn, reason = ?end, "connection closing");
    // A connection that is closing waits to log in no more: its place under the
    // pending-login caps comes back now, not after a peer that ignores the close
    // has run out the closing handshake's time.
    session.ticket.pending_login = None;
    // Leaving its groups and closing the socket go side by side: a group served
    // by another node answers a leave only when that node answers (a paused
    // node, up to the command's timeout), and the person should be told at once
    // to reconnect, not after it.
    let groups: Vec<_> = session
        .joined
        .drain()
        .chain(session.lines.drain())
        .map(|(_, group)| group)
        .collect();
    let hub = session.hub.clone();
    let logged_in = matches!(session.auth, Auth::LoggedIn(_));
    let leaving = async {
        for group in groups {
            group.leave(conn).await;
        }
        if logged_in {
            hub.router.unregister(conn).await;
        }
    };
    let closing = async {
        match end {
            End::Shutdown => {
                let frame = ServerFrame::Shutdown {
                    reason: "the server is stopping; reconnect and resume shortly".into(),
                };
                let _ = ws.send(bytes(&frame)).await;
                ws.close(close_code::GOING_AWAY, "server shutting down")
                    .await;
            }
            End::Slow => {
                session.hub.metrics.slow_disconnects.inc();
                ws.close(
                    close_code::SLOW_CONSUMER,
                    "slow_consumer: reconnect and resume from your last seq",
                )
                .await;
            }
            End::Close(code, reason) => ws.close(code, reason).await,
            End::Gone => {}
        }
    };
    tokio::join!(leaving, closing);
}

impl Session {
    /// Handles one text frame. Returns how the connection should end, if it should.
    async fn handle(&mut self, text: &str, ws: &mut WsConnection) -> Option<End> {
        let frame = match decode_client_frame(text) {
            Ok(frame) => frame,
            Err(e) => return self.refuse(ws, e.id, false, e.error.into()).await,
        };
        let id = frame.id();
        let is_auth = matches!(frame, ClientFrame::Auth { .. });
        self.refusing_flag = matches!(frame, ClientFrame::Flag { .. });
        let result = match frame {
            ClientFrame::Auth { id, env } => self.auth(id, env, ws).await,
            other if matches!(self.auth, Auth::LoggedIn(_)) => self.command(other, ws).await,
            _ => Err(ServerError::NotAuthenticated),
        };
        match result {
            Ok(()) => {
                self.consecutive_errors = 0;
                None
            }
            Err(error) => self.refuse(ws, id, is_auth, error).await,
        }
    }

    async fn reply(&mut self, ws: &mut WsConnection, frame: &ServerFrame) {
        if let Err(failed) = ws.send(bytes(frame)).await {
            self.write_failed(failed);
        }
    }

    /// Notes how a write failed: the connection is finished either way.
    fn write_failed(&mut self, failed: WriteFailed) {
        match failed {
            WriteFailed::TimedOut => self.slow = true,
            WriteFailed::Broken => self.dead = true,
        }
    }

    /// Sends an error frame and decides whether the connection has had enough.
    async fn refuse(
        &mut self,
        ws: &mut WsConnection,
        id: Option<u64>,
        during_auth: bool,
        error: ServerError,
    ) -> Option<End> {
        // A group task stops after a storage fault; a request to it then finds it
        // gone. That is the fault, not a stopping server (issue 20).
        let error = match (&error, self.hub.committer.fault()) {
            (ServerError::ShuttingDown, Some(fault)) if !self.hub.shutdown.is_cancelled() => {
                ServerError::Store(std::sync::Arc::new(crate::store::StoreError::Faulted(
                    fault,
                )))
            }
            _ => error,
        };
        if let ServerError::Store(e) = &error {
            tracing::error!(conn = %self.conn, error = %e, "store failure");
        }
        tracing::debug!(conn = %self.conn, code = %error.code(), "request refused");
        self.hub.metrics.rejected(error.code().as_str());
        let mut frame = error.frame(id);
        let flag_refused = std::mem::take(&mut self.refusing_flag)
            || matches!(
                error,
                ServerError::FlagRateLimited { .. } | ServerError::FlagNotStored { .. }
            );
        if let (true, ServerFrame::Error { helplines, .. }) = (flag_refused, &mut frame) {
            // A refused flag is answered with the signposting, always, whatever
            // the refusal: someone asking for help is never left with an error
            // alone.
            *helplines = Some(self.hub.settings.helplines.clone());
        }
        self.reply(ws, &frame).await;
        self.consecutive_errors += 1;
        let counts_as_failed_login = !matches!(
            error,
            ServerError::AlreadyAuthenticated
                | ServerError::RateLimited { .. }
                | ServerError::Store(_)
        );
        if during_auth && counts_as_failed_login {
            self.failed_auths += 1;
            if self.failed_auths >= MAX_FAILED_AUTHS {
                return Some(End::Close(close_code::POLICY, "too many failed logins"));
            }
            if self
                .hub
                .limits
                .failed_login(self.peer, self.claimed_key.as_ref())
                .is_err()
            {
                return Some(End::Close(
                    close_code::POLICY,
                    "too many failed logins; wait a minute",
                ));
            }
        }
        if matches!(error, ServerError::RateLimited { what, .. } if what.starts_with("too many connections"))
        {
            return Some(End::Close(
                close_code::TRY_LATER,
                "too many connections for this key",
            ));
        }
        (self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS)
            .then_some(End::Close(close_code::POLICY, "too many refused frames"))
    }

    async fn auth(
        &mut self,
        id: Option<u64>,
        env: SignedEnvelope,
        ws: &mut WsConnection,
    ) -> Result<(), ServerError> {
        let Auth::Pending { challenge } = &self.auth else {
            return Err(ServerError::AlreadyAuthenticated);
        };
        self.claimed_key = Some(env.key);
        env.expect_kind(Kind::Auth)?;
        let verifying = env.verify()?;
        let payload: AuthPayload = env.payload_as()?;
        if &payload.challenge != challenge {
            return Err(ServerError::AuthFailed(
                "the signed challenge is not this connection's",
            ));
        }
        check_fresh(payload.ts, self.hub.clock.now_ms())?;
        let roles = self.hub.store.roles(&env.key)?;
        let counter = self.hub.replay.last(&env.key)?;
        self.key_place = Some(self.hub.limits.key_connection(env.key)?);
        self.ticket.pending_login = None;
        self.auth = Auth::LoggedIn(User {
            key: env.key,
            verifying,
        });
        // The router tells this connection about coverage and, for supervisors,
        // every pending escalation.
        self.hub
            .router
            .send(RouterCommand::Register {
                outbox: self.outbox.clone(),
                key: env.key,
                roles: roles.clone(),
            })
            .await?;
        tracing::debug!(conn = %self.conn, "logged in");
        self.reply(
            ws,
            &ServerFrame::AuthOk {
                id,
                key: env.key,
                roles,
                counter,
            },
        )
        .await;
        Ok(())
    }

    /// An unsigned request to the router: within the key's rate, and the only one
    /// this connection has under way.
    fn router_read(
        &self,
        key: &PublicKey,
        kind: usize,
    ) -> Result<crate::escalation::ReadTicket, ServerError> {
        self.hub.limits.read(key)?;
        crate::escalation::ReadTicket::take(&self.router_reads[kind]).ok_or(
            ServerError::RateLimited {
                retry_after_ms: 100,
                what: "one request at a time: wait for the answer to the last",
            },
        )
    }

    fn user(&self) -> Result<&User, ServerError> {
        match &self.auth {
            Auth::LoggedIn(user) => Ok(user),
            Auth::Pending { .. } => Err(ServerError::NotAuthenticated),
        }
    }

    async fn admit<P>(
        &self,
        env: &SignedEnvelope,
        kind: Kind,
        group: Option<&GroupId>,
    ) -> Result<(P, CounterTicket), ServerError>
    where
        P: peerhub_protocol::payload::Counted + serde::de::DeserializeOwned,
    {
        let user = self.user()?;
        let signer = Signer {
            key: &user.key,
            verifying: &user.verifying,
        };
        let now_ms = self.hub.clock.now_ms();
        match &self.hub.cluster {
            None => admit(&self.hub.replay, &signer, env, kind, group, now_ms),
            // A key can be logged in on two nodes: its counter is checked
            // across the cluster too (admission.rs).
            Some(node) => {
                admit_in_cluster(
                    &self.hub.replay,
                    &node.directory,
                    &signer,
                    env,
                    kind,
                    group,
                    now_ms,
                )
                .await
            }
        }
    }

    async fn command(
        &mut self,
        frame: ClientFrame,
        ws: &mut WsConnection,
    ) -> Result<(), ServerError> {
        let signed_command = matches!(
            frame,
            ClientFrame::Redeem { .. }
                | ClientFrame::CreateGroup { .. }
                | ClientFrame::Join { .. }
                | ClientFrame::Invite { .. }
                | ClientFrame::Agree { .. }
                | ClientFrame::Control { .. }
                | ClientFrame::Report { .. }
                | ClientFrame::StepOut { .. }
                | ClientFrame::Record { .. }
                | ClientFrame::Escalation { .. }
                | ClientFrame::SetRota { .. }
                | ClientFrame::Push { .. }
                | ClientFrame::Grant { .. }
        );
        if signed_command {
            self.hub.limits.command(&self.user()?.key)?;
        }
        match frame {
            ClientFrame::Auth { .. } => Err(ServerError::AlreadyAuthenticated),
            ClientFrame::Redeem { id, env } => self.redeem(id, env, ws).await,
            ClientFrame::CreateGroup {
                id,
                access_code,
                env,
            } => {
                // Below the low-space watermark: nothing new (issue 20).
                if self.hub.space.is_low() {
                    return Err(ServerError::LowSpace);
                }
                self.create_group(id, access_code, env, ws).await
            }
            ClientFrame::Join {
                id,
                group,
                after,
                access_code,
                env,
            } => {
                // Below the low-space watermark only people already in the group
                // come back in (issue 20).
                if self.hub.space.is_low()
                    && self
                        .hub
                        .store
                        .member_of(&group, &self.user()?.key)?
                        .is_none()
                {
                    return Err(ServerError::LowSpace);
                }
                self.join(id, group, after, access_code, env, ws).await
            }
            ClientFrame::LinePost {
                id,
                group,
                escalation,
                env,
            } => self.line_post(id, group, escalation, env).await,
            ClientFrame::Staff { id } => {
                let key = self.user()?.key;
                self.hub.limits.read(&key)?;
                if !self.hub.store.roles(&key)?.contains(&Role::Admin) {
                    return Err(ServerError::Forbidden("only admins list the staff"));
                }
                let mut staff: Vec<StaffMember> = self
                    .hub
                    .store
                    .staff_accounts()?
                    .into_iter()
                    .map(|(key, account)| {
                        let mut groups = if account.roles.contains(&Role::Facilitator) {
                            account.facilitates
                        } else {
                            Vec::new()
                        };
                        groups.sort();
                        StaffMember {
                            key,
                            roles: account.roles,
                            name: account.name,
                            groups,
                        }
                    })
                    .collect();
                staff.sort_by(|a, b| {
                    (
                        a.name.is_none(),
                        a.name.as_ref().map(|n| n.to_lowercase()),
                        a.key.0,
                    )
                        .cmp(&(
                            b.name.is_none(),
                            b.name.as_ref().map(|n| n.to_lowercase()),
                            b.key.0,
                        ))
                });
                let more = staff.len() > MAX_STAFF_LISTED;
                staff.truncate(MAX_STAFF_LISTED);
                self.reply(ws, &ServerFrame::Staff { id, staff, more })
                    .await;
                Ok(())
            }
            ClientFrame::Line { id, escalation } => {
                let key = self.user()?.key;
                self.hub.limits.read(&key)?;
                let grant = self.line_grant(key, escalation).await?;
                let group = grant.group.clone();
                let handle = self.hub.groups.handle_for(&group).await?;
                handle
                    .line_open(self.outbox.clone(), key, id, escalation, grant)
                    .await?;
                self.lines.insert(group, handle);
                Ok(())
            }
            ClientFrame::Post { id, group, env } => {
                self.hub.limits.message(&self.user()?.key)?;
                let (payload, ticket): (PostPayload, _) =
                    self.admit(&env, Kind::Post, Some(&group)).await?;
                check_text("body", &payload.body, MAX_BODY_CHARS)?;
                let action = Action::Post {
                    body: payload.body,
                    to: payload.to,
                };
                self.forward_to_group(id, &group, ticket, env, action).await
            }
            ClientFrame::Leave { id, group } => {
                let handle = self
                    .joined
                    .remove(&group)
                    .ok_or_else(|| ServerError::NotJoined(group.clone()))?;
                handle.leave(self.conn).await;
                self.reply(ws, &ServerFrame::Left { id, group }).await;
                Ok(())
            }
            ClientFrame::Invite { id, env } => self.invite(id, env, ws).await,
            ClientFrame::Grant { id, env } => self.grant(id, env, ws).await,
            ClientFrame::Agree { id, group, env } => {
                let (payload, ticket): (AgreePayload, _) =
                    self.admit(&env, Kind::Agree, Some(&group)).await?;
                let action = Action::Agree {
                    version: payload.version,
                };
                self.forward_to_group(id, &group, ticket, env, action).await
            }
            ClientFrame::Control { id, group, env } => {
                let (payload, ticket): (ControlPayload, _) =
                    self.admit(&env, Kind::Control, Some(&group)).await?;
                let action = Action::Control(payload.action);
                self.forward_to_group(id, &group, ticket, env, action).await
            }
            ClientFrame::Report { id, group, env } => {
                let (payload, ticket): (ReportPayload, _) =
                    self.admit(&env, Kind::Report, Some(&group)).await?;
                let action = Action::Report {
                    seq: payload.seq,
                    reason: payload.reason,
                };
                self.forward_to_group(id, &group, ticket, env, action).await
            }
            ClientFrame::StepOut { id, group, env } => {
                let (payload, ticket): (StepOutPayload, _) =
                    self.admit(&env, Kind::StepOut, Some(&group)).await?;
                let action = Action::StepOut { away: payload.away };
                self.forward_to_group(id, &group, ticket, env, action).await
            }
            ClientFrame::Record { id, group, env } => {
                let (payload, ticket): (RecordPayload, _) =
                    self.admit(&env, Kind::Record, Some(&group)).await?;
                let action = Action::Record {
                    about: payload.about,
                    reply_to: payload.reply_to,
                    text: payload.text,
                };
                self.forward_to_group(id, &group, ticket, env, action).await
            }
            ClientFrame::Flag { id, group, env } => {
                // The help path: no group task, so no sanction, stands in its way. A
                // flag beyond the key's rate limit is still checked and counted on
                // the escalation about the same person (the router answers it with
                // the helplines), never dropped.
                let (payload, ticket): (FlagPayload, _) =
                    self.admit(&env, Kind::Flag, Some(&group)).await?;
                let key = self.user()?.key;
                let over_key_limit = self.hub.limits.flag_wait(&key).err();
                let command = RouterCommand::Raise {
                    outbox: self.outbox.clone(),
                    key,
                    request_id: id,
                    env,
                    payload,
                    over_key_limit: over_key_limit.is_some(),
                    ticket,
                };
                self.hub.router.send(command).await?;
                // Over the key's limit, the router only counts it; the answer is
                // here, so it comes before any close for repeated refusals.
                match over_key_limit {
                    Some(retry_after_ms) => Err(ServerError::FlagRateLimited { retry_after_ms }),
                    None => Ok(()),
                }
            }
            ClientFrame::Escalation { id, env } => {
                let (payload, ticket): (EscalationActPayload, _) =
                    self.admit(&env, Kind::Escalation, None).await?;
                let key = self.user()?.key;
                let command = RouterCommand::Act {
                    outbox: self.outbox.clone(),
                    key,
                    request_id: id,
                    env,
                    payload,
                    ticket,
                };
                self.hub.router.send(command).await
            }
            ClientFrame::Escalations { id, after } => {
                let key = self.user()?.key;
                let ticket = self.router_read(&key, 0)?;
                let command = RouterCommand::List {
                    outbox: self.outbox.clone(),
                    key,
                    request_id: id,
                    after,
                    ticket,
                };
                self.hub.router.send(command).await
            }
            ClientFrame::EscalationDetail {
                id,
                escalation,
                reference,
                part,
                offset,
            } => {
                let key = self.user()?.key;
                let ticket = self.router_read(&key, 1)?;
                let command = RouterCommand::Detail {
                    outbox: self.outbox.clone(),
                    key,
                    request_id: id,
                    escalation,
                    reference,
                    part,
                    offset: offset.unwrap_or(0),
                    ticket,
                };
                self.hub.router.send(command).await
            }
            ClientFrame::SetRota { id, env } => {
                let (payload, ticket): (RotaPayload, _) =
                    self.admit(&env, Kind::Rota, None).await?;
                let key = self.user()?.key;
                let command = RouterCommand::SetRota {
                    outbox: self.outbox.clone(),
                    key,
                    request_id: id,
                    env,
                    payload,
                    ticket,
                };
                self.hub.router.send(command).await
            }
            ClientFrame::Rota { id } => {
                let key = self.user()?.key;
                let ticket = self.router_read(&key, 2)?;
                let command = RouterCommand::GetRota {
                    outbox: self.outbox.clone(),
                    key,
                    request_id: id,
                    ticket,
                };
                self.hub.router.send(command).await
            }
            ClientFrame::Push { id, env } => {
                // The ticket is held until the subscription (and its counter) is
                // written.
                let (payload, _ticket): (peerhub_protocol::payload::PushPayload, _) =
                    self.admit(&env, Kind::Push, None).await?;
                let key = self.user()?.key;
                crate::escalation::subscriptions::push_command(&self.hub, &key, payload).await?;
                self.reply(ws, &ServerFrame::Ok { id }).await;
                Ok(())
            }
            ClientFrame::Alerting { id } => {
                let key = self.user()?.key;
                let frame = crate::escalation::subscriptions::alerting_frame(&self.hub, &key, id)?;
                self.reply(ws, &frame).await;
                Ok(())
            }
            ClientFrame::Records { id, after } => {
                let key = self.user()?.key;
                self.hub.limits.read(&key)?;
                // A page that fits a quarter of what a connection may hold.
                let (page, more) = self.hub.store.records_about_page(
                    &key,
                    after.unwrap_or(0),
                    self.hub.settings.outbox_bytes / 4,
                )?;
                let records = page
                    .into_iter()
                    .map(|r| RecordInfo {
                        id: r.id,
                        group: r.group,
                        about: r.about,
                        entries: r.entries,
                    })
                    .collect();
                self.reply(ws, &ServerFrame::Records { id, records, more })
                    .await;
                Ok(())
            }
        }
    }

    /// Hands an admitted action to the group's task, which answers through the
    /// outbox once it is durable.
    /// What the router lets `key` do on escalation `escalation`'s private line.
    async fn line_grant(
        &self,
        key: PublicKey,
        escalation: u64,
    ) -> Result<crate::escalation::LineGrant, ServerError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.hub
            .router
            .send(RouterCommand::LineGrant {
                key,
                escalation,
                reply,
            })
            .await?;
        answer.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// A supervisor's private post on an escalation's line (§8.5): checked like a
    /// post, allowed by the router, written by the group's task.
    async fn line_post(
        &mut self,
        id: Option<u64>,
        group: GroupId,
        escalation: u64,
        env: SignedEnvelope,
    ) -> Result<(), ServerError> {
        let key = self.user()?.key;
        self.hub.limits.message(&key)?;
        let (payload, ticket): (PostPayload, _) =
            self.admit(&env, Kind::Post, Some(&group)).await?;
        check_text("body", &payload.body, MAX_BODY_CHARS)?;
        let to = payload.to.ok_or_else(|| {
            ProtocolError::invalid("to", "a post on an escalation's line names whom it is to")
        })?;
        let grant = self.line_grant(key, escalation).await?;
        if grant.group != group {
            return Err(ServerError::WrongGroup {
                signed: group,
                frame: grant.group,
            });
        }
        let handle = self.hub.groups.handle_for(&group).await?;
        handle
            .line_post(self.outbox.clone(), key, id, ticket, env, to, grant)
            .await?;
        self.lines.insert(group, handle);
        Ok(())
    }

    async fn forward_to_group(
        &mut self,
        id: Option<u64>,
        group: &GroupId,
        ticket: CounterTicket,
        env: SignedEnvelope,
        action: Action,
    ) -> Result<(), ServerError> {
        let handle = self
            .joined
            .get(group)
            .ok_or_else(|| ServerError::NotJoined(group.clone()))?
            .clone();
        let key = self.user()?.key;
        handle
            .signed(self.outbox.clone(), key, id, ticket, env, action)
            .await
    }

    async fn redeem(
        &mut self,
        id: Option<u64>,
        env: SignedEnvelope,
        ws: &mut WsConnection,
    ) -> Result<(), ServerError> {
        // Held until this function returns: after the counter is written.
        let (payload, _ticket): (RedeemPayload, _) = self.admit(&env, Kind::Redeem, None).await?;
        let key = self.user()?.key;
        // A staff name is checked before the invite is spent: bad input changes nothing.
        if let Some(name) = &payload.name {
            let normal = normalise_display_name(name)?;
            if normal != *name {
                return Err(ProtocolError::invalid(
                    "name",
                    format!("sign the name in its normalised form: {normal:?}"),
                )
                .into());
            }
        }
        let granted =
            crate::invites::redeem(&self.hub, &key, &payload.token, payload.counter, &env).await?;
        if let (Some(name), Some(_)) = (&payload.name, granted.role.account_role()) {
            if let Some(node) = &self.hub.cluster {
                if let Some((account, revision)) =
                    node.directory.set_account_name_at(&key, name).await?
                {
                    apply_own_account(&self.hub.store, &key, &account, revision)?;
                }
            } else {
                self.hub.store.set_account_name(&key, name)?;
            }
            self.hub.committer.commit().await?;
        }
        tracing::info!(conn = %self.conn, role = granted.role.as_str(), "invite redeemed");
        self.hub
            .router
            .send(RouterCommand::Roles {
                conn: self.conn,
                roles: granted.roles.clone(),
            })
            .await?;
        for group in &granted.groups {
            self.hub.groups.regrant(group, key, true).await;
        }
        let frame = ServerFrame::Redeemed {
            id,
            role: granted.role,
            group: granted.group,
            groups: granted.groups,
            roles: granted.roles,
        };
        self.reply(ws, &frame).await;
        Ok(())
    }

    async fn create_group(
        &mut self,
        id: Option<u64>,
        access_code: Option<String>,
        env: SignedEnvelope,
        ws: &mut WsConnection,
    ) -> Result<(), ServerError> {
        // Held until this function returns: after the counter is written.
        let (payload, _ticket): (CreateGroupPayload, _) =
            self.admit(&env, Kind::CreateGroup, None).await?;
        let key = self.user()?.key;
        if !self.hub.store.roles(&key)?.contains(&Role::Admin) {
            return Err(ServerError::Forbidden("only an admin can create groups"));
        }
        let now = self.hub.clock.now_ms();
        let secret = self.hub.store.access_code_secret()?;
        let record = crate::groups::record_from_request(
            &payload,
            access_code.as_deref(),
            &secret,
            Some(key),
            env,
            now,
        )?;
        let group = group_info(&record);
        self.hub
            .groups
            .create(
                record,
                payload.agreement.clone(),
                &key,
                payload.counter,
                self.hub.cluster.as_ref().map(|node| &node.directory),
            )
            .await?;
        tracing::info!(conn = %self.conn, group = %group.id, "group created");
        self.reply(ws, &ServerFrame::GroupCreated { id, group })
            .await;
        Ok(())
    }

    async fn join(
        &mut self,
        id: Option<u64>,
        group: GroupId,
        after: Option<u64>,
        access_code: Option<String>,
        env: SignedEnvelope,
        ws: &mut WsConnection,
    ) -> Result<(), ServerError> {
        // The group's task holds the ticket until it has handled the join.
        let (payload, ticket): (JoinPayload, _) =
            self.admit(&env, Kind::Join, Some(&group)).await?;
        let normal = normalise_display_name(&payload.name)?;
        if normal != payload.name {
            return Err(ProtocolError::invalid(
                "name",
                format!("sign the name in its normalised form: {normal:?}"),
            )
            .into());
        }
        let key = self.user()?.key;
        let handle = self.hub.groups.handle_for(&group).await?;
        // The roles that count in this group (PROTOCOL.md §13, "Staff model"):
        // admin; facilitator by grant for it; supervisor only while an escalation
        // about it reaches them.
        let mut roles = crate::groups::roles_in_group(&self.hub.store, &key, &group)?;
        if self.hub.store.roles(&key)?.contains(&Role::Supervisor)
            && crate::escalation::supervisor_reaches(
                &self.hub.store,
                &key,
                &group,
                self.hub.clock.now_ms(),
            )?
        {
            roles.push(Role::Supervisor);
            roles.sort();
        }
        let request = JoinRequest {
            key,
            roles,
            name: payload.name,
            access_code,
            ticket,
            env,
        };
        let reply = handle.join(self.outbox.clone(), request).await?;
        self.joined.insert(group.clone(), handle);
        let head = reply.head;
        self.reply(
            ws,
            &ServerFrame::Joined {
                id,
                group: reply.info,
                head,
                oldest: reply.oldest,
                members: reply.members,
                members_total: reply.members_total,
                status: reply.status,
                state: reply.state,
            },
        )
        .await;
        // History up to the heads, read from the store at this connection's own
        // pace; later events are already waiting in the outbox.
        if reply.in_room {
            let from = after
                .unwrap_or_else(|| head.saturating_sub(HISTORY_ON_JOIN))
                .max(reply.oldest.saturating_sub(1));
            self.send_history(ws, &group, Channel::Main, from, head, reply.facilitator)
                .await?;
        }
        for (channel, channel_head) in reply.other_channels {
            let from = channel_head.saturating_sub(HISTORY_ON_JOIN);
            self.send_history(ws, &group, channel, from, channel_head, reply.facilitator)
                .await?;
        }
        tracing::debug!(conn = %self.conn, %group, "joined");
        Ok(())
    }

    /// Writes a channel's events after `from` up to `head`, a page at a time. A
    /// page holds at most the room left in the outbox (and at least one event), so
    /// history never holds more memory than the outbox would; a page the client
    /// does not take within the write timeout, or live events overflowing its
    /// outbox meanwhile, end the connection as a slow consumer.
    async fn send_history(
        &mut self,
        ws: &mut WsConnection,
        group: &GroupId,
        channel: Channel,
        mut from: u64,
        head: u64,
        facilitator: bool,
    ) -> Result<(), ServerError> {
        let kicked = self.outbox.kicked().clone();
        while from < head && !self.dead && !self.slow {
            let room = self.outbox.room();
            let mut frames: Vec<FrameBytes> = Vec::new();
            let mut page_bytes = 0;
            'page: while from < head {
                let events =
                    self.hub
                        .store
                        .events_between(group, &channel, from, head, HISTORY_READ)?;
                if events.is_empty() {
                    // Nothing kept up to the head (deleted meanwhile): done.
                    from = head;
                    break;
                }
                for event in events {
                    let seq = event.seq;
                    let frame = bytes(&history_frame(group, channel, event, facilitator));
                    if !frames.is_empty() && page_bytes + frame.len() > room {
                        break 'page;
                    }
                    page_bytes += frame.len();
                    frames.push(frame);
                    from = seq;
                }
            }
            if frames.is_empty() {
                break;
            }
            let written = tokio::select! {
                written = ws.send_all(frames) => written,
                _ = kicked.cancelled() => Err(WriteFailed::TimedOut),
            };
            if let Err(failed) = written {
                self.write_failed(failed);
            }
        }
        Ok(())
    }

    /// An admin grants a key facilitator standing in one group, or revokes it:
    /// audited (`role.grant_group` / `role.revoke_group`, the admin's envelope),
    /// durable, then told to the group's task so a revoke takes effect on the
    /// facilitator's live connections at once.
    async fn grant(
        &mut self,
        id: Option<u64>,
        env: SignedEnvelope,
        ws: &mut WsConnection,
    ) -> Result<(), ServerError> {
        use crate::audit::{action, NewEntry};
        // Held until this function returns: after the counter is written.
        let (payload, _ticket): (GrantPayload, _) = self.admit(&env, Kind::Grant, None).await?;
        let key = self.user()?.key;
        if !self.hub.store.roles(&key)?.contains(&Role::Admin) {
            return Err(ServerError::Forbidden(
                "only an admin grants or revokes a facilitator's groups",
            ));
        }
        let group = payload.group.clone();
        if self.hub.store.group(&group)?.is_none() {
            return Err(ServerError::GroupNotFound(group));
        }
        let now = self.hub.clock.now_ms();
        let name = if payload.revoke {
            action::ROLE_REVOKE_GROUP
        } else {
            action::ROLE_GRANT_GROUP
        };
        let entry = NewEntry::new(now, name, env.clone())
            .group(group.clone())
            .subject(payload.key);
        if let Some(node) = &self.hub.cluster {
            // The directory decides, by compare-and-set, so two admins on two
            // nodes cannot both revoke (or both grant) one standing; then this
            // node's store at once, then the entry.
            let directory = &node.directory;
            if payload.revoke {
                let Some((account, revision)) = directory
                    .revoke_facilitator_at(&payload.key, &group)
                    .await?
                else {
                    return Err(ProtocolError::invalid(
                        "key",
                        "holds no facilitator grant for this group",
                    )
                    .into());
                };
                apply_own_account(&self.hub.store, &payload.key, &account, revision)?;
            } else {
                let (account, revision) = directory
                    .grant_facilitator_at(&payload.key, std::slice::from_ref(&group), now)
                    .await?;
                let Some(revision) = revision else {
                    return Err(ProtocolError::invalid(
                        "key",
                        "is already a facilitator of this group",
                    )
                    .into());
                };
                apply_own_account(&self.hub.store, &payload.key, &account, revision)?;
            }
            self.hub.audit.lock().append(entry)?;
        } else {
            // Decide, change and record under the chain's lock: the grant and its
            // entry are written together, or neither.
            let mut chain = self.hub.audit.lock();
            let holds = self.hub.store.facilitates(&payload.key, &group)?;
            if payload.revoke {
                if !holds {
                    return Err(ProtocolError::invalid(
                        "key",
                        "holds no facilitator grant for this group",
                    )
                    .into());
                }
                self.hub.store.revoke_facilitator(&payload.key, &group)?;
            } else {
                if holds {
                    return Err(ProtocolError::invalid(
                        "key",
                        "is already a facilitator of this group",
                    )
                    .into());
                }
                self.hub.store.grant_facilitator(
                    &payload.key,
                    std::slice::from_ref(&group),
                    now,
                )?;
            }
            chain.append(entry)?;
        }
        self.hub.store.raise_counter(&key, payload.counter)?;
        self.hub.committer.commit().await?;
        self.hub
            .groups
            .regrant(&group, payload.key, !payload.revoke)
            .await;
        tracing::info!(conn = %self.conn, revoke = payload.revoke, "facilitator grant changed");
        self.reply(ws, &ServerFrame::Ok { id }).await;
        Ok(())
    }

    /// Makes an invite: admins any kind; facilitators invites to a virtual group.
    async fn invite(
        &mut self,
        id: Option<u64>,
        env: SignedEnvelope,
        ws: &mut WsConnection,
    ) -> Result<(), ServerError> {
        // Held until this function returns: after the counter is written.
        let (payload, _ticket): (InvitePayload, _) = self.admit(&env, Kind::Invite, None).await?;
        let key = self.user()?.key;
        let roles = self.hub.store.roles(&key)?;
        // Authority first: a facilitator makes member invites to the groups they
        // facilitate only (whether another group exists is not their business).
        let allowed = roles.contains(&Role::Admin)
            || match (&payload.role, &payload.group) {
                (InviteRole::Member, Some(group)) => self.hub.store.facilitates(&key, group)?,
                // Malformed for anyone: refused as `invalid` below.
                (InviteRole::Member, None) => roles.contains(&Role::Facilitator),
                _ => false,
            };
        if !allowed {
            return Err(ServerError::Forbidden(
                "only an admin makes invites (facilitators: invites to a virtual group they facilitate)",
            ));
        }
        let ttl_ms = payload.ttl_ms.unwrap_or(crate::invites::DEFAULT_TTL_MS);
        if ttl_ms == 0 || ttl_ms > crate::invites::MAX_TTL_MS {
            return Err(ProtocolError::invalid("ttl_ms", "from 1 ms to 30 days").into());
        }
        // A facilitator invite names its groups, in `groups` (or one in `group`).
        let mut groups = Vec::new();
        if payload.role == InviteRole::Facilitator {
            groups.extend(payload.group.clone());
            groups.extend(payload.groups.iter().cloned());
            crate::invites::check_grant_groups(&self.hub.store, &groups)?;
        } else if !payload.groups.is_empty() {
            return Err(
                ProtocolError::invalid("groups", "only facilitator invites name groups").into(),
            );
        }
        match (payload.role, &payload.group) {
            (InviteRole::Facilitator, _) => {}
            (InviteRole::Member, Some(group)) => {
                let record = self
                    .hub
                    .store
                    .group(group)?
                    .ok_or_else(|| ServerError::GroupNotFound(group.clone()))?;
                if record.kind != GroupKind::Virtual {
                    return Err(ProtocolError::invalid(
                        "group",
                        "member invites are for virtual groups; drop-in groups are open",
                    )
                    .into());
                }
            }
            (InviteRole::Member, None) => {
                return Err(
                    ProtocolError::invalid("group", "a member invite names its group").into(),
                )
            }
            (_, Some(_)) => {
                return Err(ProtocolError::invalid(
                    "group",
                    "only member and facilitator invites name a group",
                )
                .into())
            }
            (_, None) => {}
        }
        let now = self.hub.clock.now_ms();
        // A member invite keeps its group; a facilitator's are in `groups`.
        let group = match payload.role {
            InviteRole::Facilitator => None,
            _ => payload.group.clone(),
        };
        let spec = crate::invites::InviteSpec {
            role: payload.role,
            group: group.clone(),
            groups: groups.clone(),
            ttl_ms,
            bootstrap: false,
        };
        let token = crate::invites::create_audited(&self.hub, spec, key, &env, now).await?;
        self.hub.store.raise_counter(&key, payload.counter)?;
        self.hub.committer.commit().await?;
        tracing::info!(conn = %self.conn, role = payload.role.as_str(), "invite made");
        let frame = ServerFrame::Invited {
            id,
            token,
            role: payload.role,
            group,
            groups,
            expires_ms: now + ttl_ms,
        };
        self.reply(ws, &frame).await;
        Ok(())
    }
}

/// How long a connection may stay without logging in.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(30);
