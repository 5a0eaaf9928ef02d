//! The WebSocket conformance echo endpoint, `GET /conformance/echo`: served only
//! with the hidden `--conformance-echo` flag (off by default; without it the route
//! does not exist and the path falls through to the embedded files, a 404).
//!
//! The Autobahn|Testsuite fuzzing client (tests/autobahn) needs an echo server,
//! and the hub speaks its own JSON protocol. So this endpoint runs on the real
//! transport — the same listener, hyper HTTP/1.1, the same handshake checks
//! ([`super::check_upgrade`]: headers, Origin, connection admission) and
//! tokio-tungstenite with the hub's [`super::websocket_config`] — and only the
//! last step differs: every text or binary message is sent straight back instead
//! of going to a session. What the suite finds about framing, fragmentation,
//! control frames, UTF-8 and the closing handshake is therefore about the code
//! path `/ws` uses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::ws::{write_frames, FrameWriter, OPCODE_BINARY, OPCODE_TEXT, WRITE_TIMEOUT};
use crate::hub::Hub;

/// Where the endpoint is served.
pub const PATH: &str = "/conformance/echo";

/// The largest message (and frame) the echo endpoint takes: Autobahn's case 9
/// (limits and performance) sends single frames and messages of up to 16 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The longest WebSocket frame header (RFC 6455 §5.2): 2 bytes, an 8-byte
/// extended length and a 4-byte mask.
const LONGEST_FRAME_HEADER: usize = 14;

/// The hub's [`super::websocket_config`], with the size caps raised to what the
/// suite sends. The hub caps frames and messages at 64 KiB because no protocol
/// frame is bigger; an echo server has to take Autobahn's 16 MiB ones, or case 9
/// would only show that we refuse them. The write buffer cap goes up with them:
/// tungstenite refuses to queue a frame longer than that cap
/// (`WriteBufferFull`), and the echo of a 16 MiB message is one 16 MiB frame. The
/// hub never writes a frame over 64 KiB, so its 1 MiB cap never meets that case.
/// Everything else (read and write buffer sizes, masking rules, ...) is the hub's.
pub fn websocket_config() -> WebSocketConfig {
    super::websocket_config()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        .max_write_buffer_size(MAX_MESSAGE_BYTES + LONGEST_FRAME_HEADER)
}

/// Completes the handshake exactly as `/ws` does, then echoes.
pub(super) async fn upgrade(State(hub): State<Arc<Hub>>, mut request: Request) -> Response {
    let handshake = match super::check_upgrade(&hub, &mut request) {
        Ok(handshake) => handshake,
        Err(refused) => return refused,
    };
    let super::Handshake {
        accept,
        on_upgrade,
        ticket,
        ..
    } = handshake;
    let shutdown = hub.shutdown.clone();
    hub.connections.spawn(async move {
        // The connection keeps its place under the connection caps while it lives.
        let _ticket = ticket;
        match on_upgrade.await {
            Ok(upgraded) => {
                let stream = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(websocket_config()),
                )
                .await;
                run(stream, &shutdown).await;
            }
            Err(error) => tracing::debug!(%error, "echo upgrade failed"),
        }
    });
    super::switching_protocols(accept)
}

/// Echoes every text message as text and every binary message as binary until
/// the peer closes, the connection fails, or `shutdown` is cancelled.
///
/// tungstenite answers pings and the peer's close by itself: it queues the pong
/// or the close reply, and the flush after every frame read sends it at once.
/// After the closing handshake the stream ends and the connection is dropped, so
/// the server closes the TCP connection first, as RFC 6455 §7.1.1 asks. A read
/// error ends it as it ends a `/ws` session: a message over the cap with a 1009
/// close, anything else (a protocol violation, bad UTF-8, a broken connection)
/// at once, without a close frame.
pub async fn run<S>(mut ws: WebSocketStream<S>, shutdown: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = FrameWriter::default();
    loop {
        let next = tokio::select! {
            next = ws.next() => next,
            () = shutdown.cancelled() => {
                let going_away = CloseFrame {
                    code: CloseCode::Away,
                    reason: "shutting down".into(),
                };
                let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(Some(going_away))).await;
                return;
            }
        };
        let wrote = match next {
            // Written as `/ws` writes its frames ([`FrameWriter`]), so the suite
            // checks that writer too.
            Some(Ok(Message::Text(text))) => {
                out.push(OPCODE_TEXT, text.as_bytes());
                tokio::time::timeout(WRITE_TIMEOUT, write_frames(&mut ws, &mut out)).await
            }
            Some(Ok(Message::Binary(data))) => {
                out.push(OPCODE_BINARY, &data);
                tokio::time::timeout(WRITE_TIMEOUT, write_frames(&mut ws, &mut out)).await
            }
            // A ping's pong, or the reply to the peer's close, is queued: send it.
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
            )) => tokio::time::timeout(WRITE_TIMEOUT, ws.flush()).await,
            Some(Err(WsError::Capacity(error))) => {
                // Over the cap: closed with 1009, as a `/ws` session closes.
                tracing::debug!(%error, "echo message too large");
                let too_big = CloseFrame {
                    code: CloseCode::Size,
                    reason: "message too large".into(),
                };
                let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(Some(too_big))).await;
                return;
            }
            Some(Err(error)) => {
                // Bad framing, bad UTF-8 or a broken connection: dropped without a
                // close frame, as a `/ws` session drops it.
                tracing::debug!(%error, "echo connection failed");
                return;
            }
            None => return,
        };
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return,
            Ok(Err(error)) => {
                tracing::debug!(%error, "echo write failed");
                return;
            }
            Err(_elapsed) => {
                tracing::debug!("echo write timed out");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Config};
    use crate::Server;
    use clap::{CommandFactory as _, Parser as _};
    use tokio::net::{TcpListener, TcpStream};

    /// A client over an in-memory pipe to [`run`] with the echo configuration.
    async fn pipe() -> (WebSocketStream<tokio::io::DuplexStream>, CancellationToken) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let ws =
                WebSocketStream::from_raw_socket(server, Role::Server, Some(websocket_config()))
                    .await;
            run(ws, &stop).await;
        });
        let client = WebSocketStream::from_raw_socket(
            client,
            Role::Client,
            Some(WebSocketConfig::default().max_message_size(None)),
        )
        .await;
        (client, shutdown)
    }

    #[tokio::test]
    async fn echoes_text_as_text_and_binary_as_binary_and_answers_ping_and_close() {
        let (mut ws, _shutdown) = pipe().await;
        ws.send(Message::text("héllo")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("héllo"));
        ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 255, 7])
        );
        ws.send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Pong(b"are you there".to_vec().into())
        );
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected the close reply, got {other:?}"),
        }
        assert!(ws.next().await.is_none(), "the stream ends after the close");
    }

    #[tokio::test]
    async fn echoes_messages_over_the_hubs_cap_up_to_16_mib() {
        let (mut ws, _shutdown) = pipe().await;
        let big = vec![b'x'; MAX_MESSAGE_BYTES];
        assert!(big.len() > peerhub_protocol::limits::HARD_FRAME_BYTES);
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    }

    #[tokio::test]
    async fn a_message_over_16_mib_is_closed_with_1009() {
        let (mut ws, _shutdown) = pipe().await;
        let _ = ws
            .send(Message::binary(vec![0u8; MAX_MESSAGE_BYTES + 1]))
            .await;
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
            other => panic!("expected a close with 1009, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_protocol_error_drops_the_connection_without_a_close() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut client, server) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let echo = tokio::spawn(async move {
            let ws =
                WebSocketStream::from_raw_socket(server, Role::Server, Some(websocket_config()))
                    .await;
            run(ws, &shutdown).await;
        });
        // A masked text frame with RSV1 set and no extension agreed (RFC 6455 §5.2).
        client
            .write_all(&[0xC1, 0x81, 0, 0, 0, 0, b'x'])
            .await
            .unwrap();
        echo.await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing is sent back: {rest:?}");
    }

    #[tokio::test]
    async fn says_going_away_at_shutdown() {
        let (mut ws, shutdown) = pipe().await;
        shutdown.cancel();
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close with 1001, got {other:?}"),
        }
    }

    /// The answer to a WebSocket handshake for `PATH` on a server started with
    /// `conformance_echo` as given.
    async fn handshake_status(conformance_echo: bool) -> u16 {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::new(data.path());
        config.conformance_echo = conformance_echo;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::start(listener, config).await.unwrap();
        let stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let url = format!("ws://{}{PATH}", server.local_addr());
        let status = match tokio_tungstenite::client_async(url.as_str(), stream).await {
            Ok((mut ws, response)) => {
                ws.send(Message::text("ping")).await.unwrap();
                assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
                let _ = ws.close(None).await;
                response.status().as_u16()
            }
            Err(WsError::Http(response)) => response.status().as_u16(),
            Err(other) => panic!("handshake failed: {other}"),
        };
        server.shutdown().await;
        status
    }

    #[tokio::test]
    async fn the_route_exists_only_with_the_flag() {
        assert_eq!(handshake_status(false).await, 404);
        assert_eq!(handshake_status(true).await, 101);
    }

    #[test]
    fn the_flag_is_hidden_from_help_and_off_by_default() {
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("conformance"), "{help}");
        let cli = Cli::try_parse_from(["peerhub"]).unwrap();
        assert!(!cli.serve.conformance_echo);
        let cli = Cli::try_parse_from(["peerhub", "--conformance-echo"]).unwrap();
        assert!(cli.serve.conformance_echo);
    }
}
