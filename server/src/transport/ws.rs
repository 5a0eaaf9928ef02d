//! A WebSocket connection as the session sees it: text frames in, batches of
//! pre-serialised frames out, and a close with a code and reason.
//!
//! Writes are bounded in time: a peer that stops reading cannot hold its session
//! task (or the shutdown) for longer than [`WRITE_TIMEOUT`].
//!
//! Data frames go out through [`FrameWriter`], not tungstenite's own write path:
//! tungstenite keeps its output buffer at the largest size it ever reached for
//! the connection's life (a 2.5 KiB `joined` reply left every idle member with
//! about 3 KiB), while [`FrameWriter`] lets its buffer go once a batch is written.
//! tungstenite still reads, answers pings and runs the closing handshake; its own
//! frames (pongs) are flushed before each batch, so frames never interleave.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
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

/// A text data frame's opcode.
pub const OPCODE_TEXT: OpCode = OpCode::Data(Data::Text);
/// A binary data frame's opcode.
pub const OPCODE_BINARY: OpCode = OpCode::Data(Data::Binary);

/// Whole, unmasked (server-to-client) data frames on their way to the socket.
///
/// A batch is encoded into one buffer and written with as few writes as the
/// socket allows; the buffer is freed when the batch is written, so an idle
/// connection holds nothing here whatever it was last sent. A write cut short (a
/// timeout, a cancelled future) keeps what is left, and the next write — or the
/// close — sends it first, so the peer never sees half a frame followed by
/// another.
#[derive(Debug, Default)]
pub struct FrameWriter {
    bytes: Vec<u8>,
    written: usize,
}

impl FrameWriter {
    /// Appends one final (FIN), unmasked frame with `opcode` and `payload`; the
    /// header is tungstenite's own encoding ([`FrameHeader::format`]).
    pub fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = FrameHeader {
            is_final: true,
            opcode,
            ..FrameHeader::default()
        };
        self.bytes
            .reserve(header.len(payload.len() as u64) + payload.len());
        // Writing into a Vec cannot fail.
        let _ = header.format(payload.len() as u64, &mut self.bytes);
        self.bytes.extend_from_slice(payload);
    }

    /// Whether bytes are waiting to be written.
    pub fn is_pending(&self) -> bool {
        self.written < self.bytes.len()
    }

    /// Writes everything pushed, flushes, and frees the buffer. Cancel-safe: what
    /// was written is remembered, and a later call writes the rest.
    pub async fn write_to<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> std::io::Result<()> {
        while self.is_pending() {
            let n = io.write(&self.bytes[self.written..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.written += n;
        }
        self.bytes = Vec::new();
        self.written = 0;
        io.flush().await
    }
}

/// Writes what `out` holds to `ws`'s socket, after whatever tungstenite itself
/// has queued (a pong, say), so frames never interleave.
pub async fn write_frames<S>(
    ws: &mut WebSocketStream<S>,
    out: &mut FrameWriter,
) -> Result<(), WsError>
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    ws.flush().await?;
    out.write_to(ws.get_mut()).await?;
    Ok(())
}

/// One WebSocket connection.
#[derive(Debug)]
pub struct WsConnection {
    stream: WebSocketStream<TokioIo<Upgraded>>,
    out: FrameWriter,
    /// The peer closed or the connection failed: nothing more is written.
    ended: bool,
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
            out: FrameWriter::default(),
            ended: false,
            frames_sent,
        }
    }

    /// The next frame that matters. Cancel-safe: nothing is lost if the future is
    /// dropped before it completes. Pings are answered by the WebSocket layer.
    pub async fn recv(&mut self) -> Incoming {
        // The rest of a batch whose write was cut short goes before any pong.
        if self.out.is_pending() && write_frames(&mut self.stream, &mut self.out).await.is_err() {
            self.ended = true;
            return Incoming::Closed;
        }
        loop {
            let incoming = match self.stream.next().await {
                Some(Ok(Message::Text(text))) => return Incoming::Text(text),
                Some(Ok(Message::Binary(_))) => return Incoming::Binary,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Incoming::Alive,
                Some(Ok(Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => Incoming::Closed,
                Some(Err(WsError::Capacity(_))) => Incoming::TooBig,
                // The socket still works: the session answers with the close code
                // RFC 6455 names, rather than dropping the connection unexplained.
                Some(Err(WsError::Protocol(_))) => Incoming::ProtocolError,
                Some(Err(WsError::Utf8(_))) => Incoming::NotUtf8,
                Some(Err(_)) => Incoming::Closed,
            };
            // After the peer's close (or a broken read) no data frame may follow.
            self.ended = true;
            return incoming;
        }
    }

    /// Writes frames with one flush at the end.
    pub async fn send_all<I>(&mut self, frames: I) -> Result<(), WriteFailed>
    where
        I: IntoIterator<Item = FrameBytes>,
    {
        if self.ended {
            return Err(WriteFailed::Broken);
        }
        let mut written = 0;
        for frame in frames {
            self.out.push(OPCODE_TEXT, frame.as_bytes());
            written += 1;
        }
        let write = write_frames(&mut self.stream, &mut self.out);
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
        let ping = async {
            write_frames(&mut self.stream, &mut self.out).await?;
            self.stream.send(Message::Ping(Default::default())).await
        };
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
            // The rest of a batch cut short goes first; if it cannot, a close
            // frame after half a frame would only be garbage to the peer.
            if write_frames(&mut self.stream, &mut self.out).await.is_err() {
                return;
            }
            let _ = self.stream.close(Some(frame)).await;
            // Drain until the peer answers the close or goes away.
            while let Some(Ok(_)) = self.stream.next().await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_three_length_forms() {
        let mut out = FrameWriter::default();
        out.push(OPCODE_TEXT, b"hi");
        assert_eq!(out.bytes, [0x81, 2, b'h', b'i']);
        for (len, header) in [
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xFF, 0xFF]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = FrameWriter::default();
            out.push(OPCODE_TEXT, &vec![b'x'; len]);
            assert_eq!(out.bytes[..header.len()], header[..], "{len}");
            assert_eq!(out.bytes.len(), header.len() + len);
        }
        let mut out = FrameWriter::default();
        out.push(OPCODE_BINARY, &[7]);
        assert_eq!(out.bytes, [0x82, 1, 7]);
    }

    /// A tungstenite client on one end of a pipe whose other end the writer
    /// writes to, `capacity` bytes of pipe between them.
    fn pipe(
        capacity: usize,
    ) -> (
        WebSocketStream<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (client, server) = tokio::io::duplex(capacity);
        let client = futures_util::FutureExt::now_or_never(WebSocketStream::from_raw_socket(
            client,
            Role::Client,
            None,
        ))
        .expect("no I/O");
        (client, server)
    }

    #[tokio::test]
    async fn a_written_batch_reaches_the_peer_whole_and_its_buffer_is_freed() {
        let (mut client, mut server) = pipe(64 * 1024);
        let mut out = FrameWriter::default();
        let big = "x".repeat(3000);
        out.push(OPCODE_TEXT, b"first");
        out.push(OPCODE_TEXT, big.as_bytes());
        out.write_to(&mut server).await.unwrap();
        assert_eq!(out.bytes.capacity(), 0, "nothing kept once written");
        assert!(!out.is_pending());
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text("first")
        );
        assert_eq!(client.next().await.unwrap().unwrap(), Message::text(big));
    }

    #[tokio::test]
    async fn a_write_cut_short_is_finished_before_the_next_batch() {
        // 100 bytes of pipe: a 3,000-byte frame cannot go out at once.
        let (mut client, mut server) = pipe(100);
        let mut out = FrameWriter::default();
        let big = "y".repeat(3000);
        out.push(OPCODE_TEXT, big.as_bytes());
        let cut = tokio::time::timeout(Duration::from_millis(20), out.write_to(&mut server)).await;
        assert!(cut.is_err(), "the pipe is full: the write cannot finish");
        assert!(out.is_pending());
        assert!(out.written > 0, "part of the frame went out");
        // The next batch goes after the rest of the first, while the peer reads.
        out.push(OPCODE_TEXT, b"after");
        let reader = tokio::spawn(async move {
            let first = client.next().await.unwrap().unwrap();
            let second = client.next().await.unwrap().unwrap();
            (first, second)
        });
        out.write_to(&mut server).await.unwrap();
        let (first, second) = reader.await.unwrap();
        assert_eq!(first, Message::text(big));
        assert_eq!(second, Message::text("after"));
        assert_eq!(out.bytes.capacity(), 0);
    }
}
