//! A WebSocket connection as the session sees it: text frames in, batches of
//! pre-serialised frames out, and a close with a code and reason.
//!
//! Writes are bounded in time: a peer that stops reading cannot hold its session
//! task (or the shutdown) for longer than [`WRITE_TIMEOUT`].

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::outbound::FrameBytes;

/// Longest a write (batch plus flush) may take before the peer is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the peer sent.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame.
    Text(FrameBytes),
    /// A binary frame (not part of the protocol).
    Binary,
    /// A ping or pong: the peer is alive.
    Alive,
    /// A frame over the hard size cap; the connection cannot continue.
    TooBig,
    /// The peer broke the WebSocket protocol (RFC 6455 §7.4.1: 1002), e.g. an
    /// unmasked or fragmented control frame, reserved bits, an unknown opcode.
    ProtocolError,
    /// A text message that is not UTF-8 (RFC 6455 §8.1: 1007).
    NotUtf8,
    /// The peer closed, or the connection broke.
    Closed,
}

/// Why a write failed; the connection is finished either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailed {
    /// The peer took nothing for [`WRITE_TIMEOUT`]: it stopped reading (a slow
    /// consumer, told so with close 4001).
    TimedOut,
    /// The connection broke.
    Broken,
}

/// One WebSocket connection.
#[derive(Debug)]
pub struct WsConnection {
    stream: WebSocketStream<TokioIo<Upgraded>>,
    frames_sent: prometheus::IntCounter,
}

impl WsConnection {
    /// Wraps an upgraded stream; every frame written is counted in `frames_sent`.
    pub fn new(
        stream: WebSocketStream<TokioIo<Upgraded>>,
        frames_sent: prometheus::IntCounter,
    ) -> Self {
        Self {
            stream,
            frames_sent,
        }
    }

    /// The next frame that matters. Cancel-safe: nothing is lost if the future is
    /// dropped before it completes. Pings are answered by the WebSocket layer.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(text))) => return Incoming::Text(text),
                Some(Ok(Message::Binary(_))) => return Incoming::Binary,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Incoming::Alive,
                Some(Ok(Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => return Incoming::Closed,
                Some(Err(WsError::Capacity(_))) => return Incoming::TooBig,
                // The socket still works: the session answers with the close code
                // RFC 6455 names, rather than dropping the connection unexplained.
                Some(Err(WsError::Protocol(_))) => return Incoming::ProtocolError,
                Some(Err(WsError::Utf8(_))) => return Incoming::NotUtf8,
                Some(Err(_)) => return Incoming::Closed,
            }
        }
    }

    /// Writes frames with one flush at the end.
    pub async fn send_all<I>(&mut self, frames: I) -> Result<(), WriteFailed>
    where
        I: IntoIterator<Item = FrameBytes>,
    {
        let mut written = 0;
        let write = async {
            for frame in frames {
                self.stream.feed(Message::Text(frame)).await?;
                written += 1;
            }
            self.stream.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {
                self.frames_sent.inc_by(written);
                Ok(())
            }
            Ok(Err(_)) => Err(WriteFailed::Broken),
            Err(_) => Err(WriteFailed::TimedOut),
        }
    }

    /// Sends a ping (the peer's pong shows it is still there).
    pub async fn ping(&mut self) -> Result<(), WriteFailed> {
        let ping = async { self.stream.send(Message::Ping(Default::default())).await };
        match tokio::time::timeout(WRITE_TIMEOUT, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteFailed::Broken),
            Err(_) => Err(WriteFailed::TimedOut),
        }
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: FrameBytes) -> Result<(), WriteFailed> {
        self.send_all(std::iter::once(frame)).await
    }

    /// Sends a close frame with `code` and `reason` and waits briefly for the peer.
    pub async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        let closing = async {
            let _ = self.stream.close(Some(frame)).await;
            // Drain until the peer answers the close or goes away.
            while let Some(Ok(_)) = self.stream.next().await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}
