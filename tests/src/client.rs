//! A real WebSocket client that speaks the peerhub protocol.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use peerhub_protocol::frame::{Channel, ServerFrame};
use peerhub_protocol::{ClientFrame, ErrorCode, GroupId, PublicKey, SignedEnvelope};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

use crate::identity::gid;
use crate::{Identity, FRAME_TIMEOUT};

/// Plain TCP or TLS underneath the WebSocket.
pub type Stream = Either<TlsStream<TcpStream>, TcpStream>;

/// How the server closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code, if a close frame came.
    pub code: Option<u16>,
    /// Its reason.
    pub reason: String,
}

/// One connection to the server.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<Stream>,
    /// The challenge from `hello`.
    pub challenge: String,
    /// `hello.server_time`.
    pub server_time: u64,
    /// Who logged in on this connection.
    pub identity: Option<Identity>,
    pending: VecDeque<ServerFrame>,
    next_id: u64,
}

/// The request id of a reply frame.
pub fn reply_id(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::AuthOk { id, .. }
        | ServerFrame::Redeemed { id, .. }
        | ServerFrame::GroupCreated { id, .. }
        | ServerFrame::Joined { id, .. }
        | ServerFrame::Left { id, .. }
        | ServerFrame::Ack { id, .. }
        | ServerFrame::Ok { id }
        | ServerFrame::Records { id, .. }
        | ServerFrame::Invited { id, .. }
        | ServerFrame::Flagged { id, .. }
        | ServerFrame::Escalations { id, .. }
        | ServerFrame::EscalationDetail { id, .. }
        | ServerFrame::Rota { id, .. }
        | ServerFrame::Alerting { id, .. }
        | ServerFrame::Line { id, .. }
        | ServerFrame::Staff { id, .. }
        | ServerFrame::Error { id, .. } => *id,
        _ => None,
    }
}

impl Client {
    /// Connects over plain ws and reads `hello`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        Self::handshake(format!("ws://{addr}/ws"), Either::Right(tcp)).await
    }

    /// Connects over plain ws from the local address `from` (any of 127.0.0.0/8
    /// on Linux, so tests can be several clients), with extra request `headers`
    /// (a proxy's `X-Forwarded-For`, say); reads `hello`. `Err` is the HTTP status
    /// of a refused upgrade.
    pub async fn connect_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
        headers: &[(&str, &str)],
    ) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind");
        let tcp = socket.connect(addr).await.expect("tcp connect");
        let mut request = format!("ws://{addr}/ws")
            .into_client_request()
            .expect("request");
        for (name, value) in headers {
            request.headers_mut().append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                value.parse().expect("header value"),
            );
        }
        match tokio_tungstenite::client_async(request, Either::Right(tcp)).await {
            Ok((ws, _)) => Ok(Self::greeted(ws).await),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("websocket handshake: {other}"),
        }
    }

    /// Connects over wss, trusting what `config` trusts, and reads `hello`.
    pub async fn connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("name");
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        Self::handshake(
            format!("wss://{server_name}:{}/ws", addr.port()),
            Either::Left(tls),
        )
        .await
    }

    async fn handshake(url: String, stream: Stream) -> Self {
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("websocket handshake");
        Self::greeted(ws).await
    }

    /// A client on an open WebSocket, once it has read `hello`.
    async fn greeted(ws: WebSocketStream<Stream>) -> Self {
        let mut client = Self {
            ws,
            challenge: String::new(),
            server_time: 0,
            identity: None,
            pending: VecDeque::new(),
            next_id: 0,
        };
        match client.recv().await.expect("hello") {
            ServerFrame::Hello {
                challenge,
                server_time,
                protocol,
                ..
            } => {
                assert_eq!(protocol, peerhub_protocol::PROTOCOL_VERSION);
                client.challenge = challenge;
                client.server_time = server_time;
            }
            other => panic!("expected hello, got {other:?}"),
        }
        client
    }

    /// The TLS connection underneath, if any.
    pub fn tls(&self) -> Option<&rustls::ClientConnection> {
        match self.ws.get_ref() {
            Either::Left(tls) => Some(tls.get_ref().1),
            Either::Right(_) => None,
        }
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    /// Sends a binary message (not part of the protocol).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_text(frame.to_json()).await;
    }

    /// Reads the next frame from the socket (not the buffer).
    async fn read(&mut self) -> Result<ServerFrame, Closed> {
        loop {
            let next = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                        panic!("server sent an undecodable frame {text}: {e}")
                    }));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    return Err(Closed {
                        code: None,
                        reason: String::new(),
                    })
                }
            }
        }
    }

    /// The next frame: buffered ones first.
    pub async fn recv(&mut self) -> Result<ServerFrame, Closed> {
        match self.pending.pop_front() {
            Some(frame) => Ok(frame),
            None => self.read().await,
        }
    }

    /// The first frame (buffered or new) that `want` accepts; others stay buffered
    /// in order.
    pub async fn recv_matching(
        &mut self,
        mut want: impl FnMut(&ServerFrame) -> bool,
    ) -> Result<ServerFrame, Closed> {
        if let Some(at) = self.pending.iter().position(&mut want) {
            return Ok(self.pending.remove(at).expect("present"));
        }
        loop {
            let frame = self.read().await?;
            if want(&frame) {
                return Ok(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// The reply to request `id`, or how the connection closed first.
    pub async fn try_reply_to(&mut self, id: u64) -> Result<ServerFrame, Closed> {
        self.recv_matching(|f| reply_id(f) == Some(id)).await
    }

    /// Posts a given envelope; the ack's seq, an error frame, or how the
    /// connection closed first.
    pub async fn try_post_env(
        &mut self,
        group: &str,
        env: SignedEnvelope,
    ) -> Result<ServerFrame, Closed> {
        let id = self.next_id();
        let frame = ClientFrame::Post {
            id: Some(id),
            group: gid(group),
            env,
        };
        if self
            .ws
            .send(Message::Text(frame.to_json().into()))
            .await
            .is_err()
        {
            return Err(Closed {
                code: None,
                reason: "send failed".into(),
            });
        }
        self.try_reply_to(id).await
    }

    /// The reply to request `id`.
    pub async fn reply_to(&mut self, id: u64) -> ServerFrame {
        self.recv_matching(|f| reply_id(f) == Some(id))
            .await
            .unwrap_or_else(|closed| panic!("closed while waiting for reply {id}: {closed:?}"))
    }

    /// Sends text and returns the error it got, checking its code and request id.
    pub async fn expect_error(
        &mut self,
        text: impl Into<String>,
        id: Option<u64>,
        code: ErrorCode,
    ) -> String {
        self.send_text(text).await;
        let frame = self
            .recv_matching(|f| matches!(f, ServerFrame::Error { .. } | ServerFrame::Ack { .. }))
            .await
            .expect("error frame");
        match frame {
            ServerFrame::Error {
                id: got_id,
                code: got,
                message,
                ..
            } => {
                assert_eq!(got, code, "wrong code; message: {message}");
                assert_eq!(got_id, id, "error for the wrong request");
                message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Logs in, or returns the error frame.
    pub async fn try_login(&mut self, identity: &Identity) -> ServerFrame {
        let id = self.next_id();
        let env = identity.auth(&self.challenge);
        self.send(&ClientFrame::Auth { id: Some(id), env }).await;
        self.reply_to(id).await
    }

    /// Logs in (panics on refusal); raises the identity's counter above the
    /// server's record.
    pub async fn login(&mut self, identity: &Identity) {
        match self.try_login(identity).await {
            ServerFrame::AuthOk { key, counter, .. } => {
                assert_eq!(key, identity.key());
                identity.raise_counter(counter);
                self.identity = Some(identity.clone());
            }
            other => panic!("login refused: {other:?}"),
        }
    }

    fn me(&self) -> Identity {
        self.identity.clone().expect("log in first")
    }

    /// Sends a signed request built by `frame(id)` and returns the reply.
    pub async fn request(&mut self, frame: impl FnOnce(Option<u64>) -> ClientFrame) -> ServerFrame {
        let id = self.next_id();
        self.send(&frame(Some(id))).await;
        self.reply_to(id).await
    }

    /// Raises a flag (see [`Identity::flag_with`]) and returns the reply.
    pub async fn flag_with(
        &mut self,
        group: &str,
        about: PublicKey,
        severity: peerhub_protocol::escalation::Severity,
        tweak: impl FnOnce(&mut peerhub_protocol::payload::FlagPayload),
    ) -> ServerFrame {
        let env = self.me().flag_with(group, about, severity, tweak);
        let group = gid(group);
        self.request(|id| ClientFrame::Flag { id, group, env })
            .await
    }

    /// Sends a signed `join` with an optional access code and returns the reply
    /// (`joined`, `waiting` or an error), whatever it is.
    pub async fn try_join(&mut self, group: &str, name: &str, code: Option<&str>) -> ServerFrame {
        let env = self
            .me()
            .signed(peerhub_protocol::envelope::Kind::Join, |counter, ts| {
                peerhub_protocol::payload::JoinPayload {
                    group: gid(group),
                    name: name.into(),
                    counter,
                    ts,
                }
            });
        let access_code = code.map(str::to_string);
        let group = gid(group);
        self.request(|id| ClientFrame::Join {
            id,
            group,
            after: None,
            access_code,
            env,
        })
        .await
    }

    /// Sends a signed facilitator `control` for `group` and returns the reply.
    pub async fn control(
        &mut self,
        group: &str,
        action: peerhub_protocol::payload::ControlAction,
    ) -> ServerFrame {
        let env = self
            .me()
            .signed(peerhub_protocol::envelope::Kind::Control, |counter, ts| {
                peerhub_protocol::payload::ControlPayload {
                    group: gid(group),
                    action,
                    counter,
                    ts,
                }
            });
        let group = gid(group);
        self.request(|id| ClientFrame::Control { id, group, env })
            .await
    }

    /// Accepts version `version` of `group`'s agreement and returns the reply.
    pub async fn agree(&mut self, group: &str, version: u32) -> ServerFrame {
        let env = self
            .me()
            .signed(peerhub_protocol::envelope::Kind::Agree, |counter, ts| {
                peerhub_protocol::payload::AgreePayload {
                    group: gid(group),
                    version,
                    counter,
                    ts,
                }
            });
        let group = gid(group);
        self.request(|id| ClientFrame::Agree { id, group, env })
            .await
    }

    /// Redeems an invite token.
    pub async fn redeem(&mut self, token: &str) -> ServerFrame {
        let env = self.me().redeem(token);
        self.request(|id| ClientFrame::Redeem { id, env }).await
    }

    /// Makes an invite over the wire and returns its token (panics if refused).
    pub async fn invite(
        &mut self,
        role: peerhub_protocol::payload::InviteRole,
        group: Option<&str>,
    ) -> String {
        let env = self
            .me()
            .signed(peerhub_protocol::envelope::Kind::Invite, |counter, ts| {
                peerhub_protocol::payload::InvitePayload {
                    role,
                    group: group.map(gid),
                    groups: Vec::new(),
                    ttl_ms: None,
                    counter,
                    ts,
                }
            });
        match self.request(|id| ClientFrame::Invite { id, env }).await {
            ServerFrame::Invited { token, .. } => token,
            other => panic!("invite refused: {other:?}"),
        }
    }

    /// Grants (or with `revoke`, takes back) `key`'s facilitator standing in
    /// `group` (needs admin); returns the reply.
    pub async fn grant(
        &mut self,
        key: peerhub_protocol::PublicKey,
        group: &str,
        revoke: bool,
    ) -> ServerFrame {
        let env = self
            .me()
            .signed(peerhub_protocol::envelope::Kind::Grant, |counter, ts| {
                peerhub_protocol::payload::GrantPayload {
                    key,
                    group: gid(group),
                    revoke,
                    counter,
                    ts,
                }
            });
        self.request(|id| ClientFrame::Grant { id, env }).await
    }

    /// Creates a group (needs admin).
    pub async fn create_group(&mut self, group: &str, title: &str) -> ServerFrame {
        let env =
            self.me()
                .create_group(group, title, peerhub_protocol::payload::GroupKind::DropIn);
        self.request(|id| ClientFrame::CreateGroup {
            id,
            access_code: None,
            env,
        })
        .await
    }

    /// Joins a group; returns `joined` and the history events (seq ≤ head) that
    /// follow it.
    pub async fn join(&mut self, group: &str, name: &str, after: Option<u64>) -> Joined {
        let env = self.me().join(group, name);
        let reply = self
            .request(|id| ClientFrame::Join {
                id,
                group: gid(group),
                after,
                access_code: None,
                env,
            })
            .await;
        self.joined_reply(group, after, reply).await
    }

    /// Reads the history after a `joined` reply (only a member in the room gets
    /// one) and returns both.
    pub async fn joined_reply(
        &mut self,
        group: &str,
        after: Option<u64>,
        reply: ServerFrame,
    ) -> Joined {
        let ServerFrame::Joined {
            head,
            oldest,
            members,
            status,
            state,
            ..
        } = reply
        else {
            panic!("join refused: {reply:?}");
        };
        let mut history = Vec::new();
        if status == peerhub_protocol::frame::MemberStatus::Admitted {
            let from = after
                .unwrap_or_else(|| head.saturating_sub(peerhub_protocol::limits::HISTORY_ON_JOIN))
                .max(oldest.saturating_sub(1));
            for _ in from..head {
                history.push(self.next_event(group).await);
            }
        }
        Joined {
            head,
            members,
            history,
            status,
            state,
        }
    }

    /// Posts and waits for the ack; returns the seq.
    pub async fn post(&mut self, group: &str, body: &str) -> u64 {
        let env = self.me().post(group, body);
        self.post_env(group, env).await
    }

    /// Posts a given envelope and waits for the ack; returns the seq.
    pub async fn post_env(&mut self, group: &str, env: SignedEnvelope) -> u64 {
        match self
            .request(|id| ClientFrame::Post {
                id,
                group: gid(group),
                env,
            })
            .await
        {
            ServerFrame::Ack { seq, .. } => seq,
            other => panic!("post refused: {other:?}"),
        }
    }

    /// A supervisor's private post on escalation `escalation`'s line, without
    /// joining: the ack, an error frame, or how the connection closed first.
    pub async fn try_line_post(
        &mut self,
        group: &str,
        escalation: u64,
        env: SignedEnvelope,
    ) -> Result<ServerFrame, Closed> {
        let id = self.next_id();
        let frame = ClientFrame::LinePost {
            id: Some(id),
            group: gid(group),
            escalation,
            env,
        };
        self.send(&frame).await;
        self.try_reply_to(id).await
    }

    /// The next main-channel event of `group` (other frames stay buffered).
    pub async fn next_event(&mut self, group: &str) -> Event {
        self.next_event_in(group, Channel::Main).await
    }

    /// The next event of `group` in `channel` (other frames stay buffered).
    pub async fn next_event_in(&mut self, group: &str, channel: Channel) -> Event {
        let group = gid(group);
        let frame = self
            .recv_matching(|f| {
                matches!(f, ServerFrame::Event { group: g, channel: c, .. } if *g == group && *c == channel)
            })
            .await
            .unwrap_or_else(|closed| panic!("closed while waiting for an event: {closed:?}"));
        let ServerFrame::Event {
            group,
            channel,
            seq,
            ts,
            env,
            note,
            redacted,
        } = frame
        else {
            unreachable!()
        };
        Event {
            group,
            channel,
            seq,
            ts,
            env,
            note,
            redacted,
        }
    }

    /// Reads until the server closes the connection; returns how.
    pub async fn expect_closed(&mut self) -> Closed {
        loop {
            match self.read().await {
                Ok(_) => continue,
                Err(closed) => return closed,
            }
        }
    }

    /// Asserts that no `event` frame is waiting or arrives within `ms`
    /// milliseconds (presence and state updates may come and go).
    pub async fn assert_no_events(&mut self, ms: u64) {
        let waiting: Vec<_> = self.pending.drain(..).collect();
        assert!(
            !waiting
                .iter()
                .any(|f| matches!(f, ServerFrame::Event { .. })),
            "unexpected events: {waiting:?}"
        );
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
        while let Ok(next) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let Some(Ok(Message::Text(text))) = next {
                let frame: ServerFrame = serde_json::from_str(text.as_str()).expect("frame");
                assert!(
                    !matches!(frame, ServerFrame::Event { .. }),
                    "unexpected event: {frame:?}"
                );
            } else {
                break;
            }
        }
    }

    /// Asserts that no frame arrives within `ms` milliseconds.
    pub async fn assert_quiet(&mut self, ms: u64) {
        assert!(
            self.pending.is_empty(),
            "frames already waiting: {:?}",
            self.pending
        );
        let next = tokio::time::timeout(std::time::Duration::from_millis(ms), self.ws.next()).await;
        if let Ok(Some(Ok(Message::Text(text)))) = next {
            panic!("expected no frame, got {text}");
        }
    }
}

/// A `joined` reply and its history.
#[derive(Debug)]
pub struct Joined {
    /// The head seq at join.
    pub head: u64,
    /// Members listed.
    pub members: Vec<peerhub_protocol::frame::MemberInfo>,
    /// History events (seq ≤ head), in order.
    pub history: Vec<Event>,
    /// Where the joiner stands.
    pub status: peerhub_protocol::frame::MemberStatus,
    /// The group's state.
    pub state: peerhub_protocol::frame::GroupState,
}

/// An `event` frame.
#[derive(Debug, Clone)]
pub struct Event {
    /// Group.
    pub group: GroupId,
    /// Channel.
    pub channel: Channel,
    /// Seq.
    pub seq: u64,
    /// Server time.
    pub ts: u64,
    /// The original envelope, unless redacted for this reader or a hub note.
    pub env: Option<SignedEnvelope>,
    /// A hub note.
    pub note: Option<peerhub_protocol::frame::Note>,
    /// Redaction, if any.
    pub redacted: Option<peerhub_protocol::frame::Redaction>,
}

impl Event {
    /// The envelope (panics for a hub note or a message redacted for this reader).
    pub fn envelope(&self) -> &SignedEnvelope {
        self.env.as_ref().expect("an event with an envelope")
    }

    /// The post body, after checking the signature as a recipient would.
    pub fn verified_body(&self) -> String {
        let env = self.envelope();
        env.verify().expect("recipient verifies the signature");
        let payload: peerhub_protocol::payload::PostPayload =
            env.payload_as().expect("post payload");
        assert_eq!(
            payload.group, self.group,
            "payload names the group it came in"
        );
        payload.body
    }
}
