//! A WebSocket client over a real loopback socket, for the set-up phase: connect
//! (optionally from a chosen 127.0.0.x source address), read `hello`, log in, and
//! send requests waiting for their replies. Once set up, the generator takes the
//! stream apart into a writer and a reader.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use peerhub_protocol::{ClientFrame, ServerFrame};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::identity::Identity;
use crate::wire;

/// The WebSocket stream of one client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// How long the set-up phase waits for any one reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The client side's WebSocket settings: `read_buffer` bytes of read buffer (the
/// library default of 128 KiB per connection would dominate the generator's memory
/// at 10,000 connections).
pub fn client_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
}

/// One connection during set-up.
#[derive(Debug)]
pub struct SetupClient {
    /// The WebSocket.
    pub ws: Ws,
    /// The challenge from `hello`.
    pub challenge: String,
    /// Local port (to find the socket in `/proc/net/tcp`).
    pub local_port: u16,
    next_id: u64,
}

impl SetupClient {
    /// Connects to `addr` (from `source` when given), upgrades to WebSocket at
    /// `/ws` and reads `hello`.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        config: WebSocketConfig,
    ) -> anyhow::Result<Self> {
        let stream = match source {
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .with_context(|| format!("binding source address {ip}"))?;
                socket.connect(addr).await?
            }
            None => TcpStream::connect(addr).await?,
        };
        stream.set_nodelay(true)?;
        let local_port = stream.local_addr()?.port();
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            format!("ws://{addr}/ws"),
            stream,
            Some(config),
        )
        .await
        .context("WebSocket handshake")?;
        let mut client = Self {
            ws,
            challenge: String::new(),
            local_port,
            next_id: 1_000_000_000,
        };
        let hello = client.next_text().await?;
        match serde_json::from_str::<ServerFrame>(&hello) {
            Ok(ServerFrame::Hello { challenge, .. }) => client.challenge = challenge,
            _ => bail!("expected hello, got {hello}"),
        }
        Ok(client)
    }

    async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            let next = tokio::time::timeout(REPLY_TIMEOUT, self.ws.next())
                .await
                .context("timed out waiting for a frame")?;
            match next {
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(Message::Close(frame))) => bail!("server closed: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("connection failed: {e}"),
                None => bail!("connection closed"),
            }
        }
    }

    /// A fresh request id (set-up ids are far above the generator's post ids).
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a frame without waiting.
    pub async fn send(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        self.ws.send(Message::Text(frame.to_json().into())).await?;
        Ok(())
    }

    /// Waits for the reply to request `id` (other frames are dropped: during set-up
    /// only presence and history can come unasked). An `error` reply is an error.
    pub async fn reply_to(&mut self, id: u64) -> anyhow::Result<String> {
        loop {
            let text = self.next_text().await?;
            if wire::reply_id(&text) == Some(id) {
                if wire::frame_type(&text) == wire::FrameType::Error {
                    bail!("request refused: {text}");
                }
                return Ok(text);
            }
        }
    }

    /// Sends a frame written as JSON without waiting.
    pub async fn send_json(&mut self, frame: &serde_json::Value) -> anyhow::Result<()> {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await?;
        Ok(())
    }

    /// Sends the JSON frame `make(id)` and waits for a reply of type `want`.
    pub async fn request_json(
        &mut self,
        want: &str,
        make: impl FnOnce(u64) -> serde_json::Value,
    ) -> anyhow::Result<String> {
        let id = self.next_id();
        self.send_json(&make(id)).await?;
        let reply = self.reply_to(id).await?;
        match wire::type_name(&reply) {
            Some(t) if t == want => Ok(reply),
            _ => bail!("expected {want}, got {reply}"),
        }
    }

    /// Sends the frame `make(id)` and waits for a reply of type `want`.
    pub async fn request(
        &mut self,
        want: &str,
        make: impl FnOnce(Option<u64>) -> ClientFrame,
    ) -> anyhow::Result<String> {
        let id = self.next_id();
        self.send(&make(Some(id))).await?;
        let reply = self.reply_to(id).await?;
        match wire::type_name(&reply) {
            Some(t) if t == want => Ok(reply),
            _ => bail!("expected {want}, got {reply}"),
        }
    }

    /// Logs in as `me` and raises its counter above the server's record.
    pub async fn login(&mut self, me: &mut Identity) -> anyhow::Result<()> {
        let env = me.auth(&self.challenge);
        let reply = self
            .request("auth_ok", |id| ClientFrame::Auth { id, env })
            .await?;
        if let Ok(ServerFrame::AuthOk { counter, .. }) = serde_json::from_str(&reply) {
            me.raise_counter(counter);
        }
        Ok(())
    }
}
