//! `peerhub-bare`: a bare WebSocket broadcast server, the fan-out baseline W(G).
//!
//! It serves the same wire as peerhub, with the same transport, and nothing else:
//! no signature check, no store, no limiter, no group task. Transport, as in
//! `peerhub_server::transport`: a plain `TcpListener`, `TCP_NODELAY`, SO_SNDBUF =
//! [`peerhub_server::transport::SEND_BUFFER_BYTES`] on every accepted socket, hyper
//! HTTP/1.1 with the same builder settings and the same RFC 6455 upgrade, then
//! tokio-tungstenite with [`peerhub_server::transport::websocket_config`] (the hub's
//! own config: its read buffer, its write buffer — frames are gathered up to
//! `write_buffer_size` before a socket write — and its caps). It skips axum's
//! router, which costs once per connection, not per message. Like the `peerhub`
//! binary it runs on jemalloc, so the ratios against it compare the hub's work, not
//! two allocators.
//!
//! Per connection, as in the hub: one task, an outbox bounded in frames and in bytes
//! (4096 frames, 1 MiB: the hub's defaults) fed with `try_send`; a full outbox drops
//! the connection with close code 4001, also while a write to it is blocked (the
//! write races the `kicked` signal); writes are batched (up to 64 frames, `feed`
//! then one `flush`) and bounded in time.
//!
//! Frames: `auth` → `auth_ok` (unchecked); `join` → a minimal `{"type":"joined"}`;
//! `post` → the frame is decoded with `peerhub_protocol::frame::decode_client_frame`
//! like the hub, given the group's next seq, serialised once as the hub's `event`
//! frame, its bytes shared by every member's outbox (the sender included, as the
//! hub does), then an `ack` to the sender.
//!
//! Two options exist only for what-if runs (the baseline uses neither): `--write-buffer`
//! replaces the hub's tungstenite `write_buffer_size`, and `--sndbuf` the hub's
//! SO_SNDBUF (`--sndbuf 0` leaves the kernel's own sizing).
//!
//! Prints `peerhub-bare listening on http://ADDR/` and `ready`; stops on SIGTERM or
//! Ctrl-C.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{header, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use peerhub_protocol::frame::{decode_client_frame, Channel, Limits, ServerFrame};
use peerhub_protocol::{ClientFrame, ErrorCode, GroupId};
use peerhub_server::transport::{websocket_config, SEND_BUFFER_BYTES};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// The same allocator as the `peerhub` binary.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Frames a connection's outbox holds (the hub's default `outbox_capacity`).
const OUTBOX: usize = 4096;
/// Bytes a connection's outbox holds (the hub's default `outbox_bytes`).
const OUTBOX_BYTES: usize = 1024 * 1024;
/// Frames taken from the outbox per socket flush (the hub's `WRITE_BATCH`).
const WRITE_BATCH: usize = 64;
/// Longest a write may take before the peer is dropped (the hub's `WRITE_TIMEOUT`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// peerhub-bare: the bare broadcast baseline for peerhub's fan-out.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// What-if: tungstenite `write_buffer_size` in bytes instead of the hub's.
    #[arg(long)]
    write_buffer: Option<usize>,
    /// What-if: SO_SNDBUF for every accepted socket, in bytes, instead of the hub's
    /// `SEND_BUFFER_BYTES`; 0 leaves the kernel's own sizing (it grows the buffer up
    /// to `tcp_wmem` max).
    #[arg(long)]
    sndbuf: Option<usize>,
}

/// The transport settings of one server.
#[derive(Debug, Clone, Copy)]
struct Transport {
    write_buffer: Option<usize>,
    /// SO_SNDBUF to set; `None`: leave the kernel's.
    sndbuf: Option<usize>,
}

impl Transport {
    fn websocket_config(self) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
        let config = websocket_config();
        match self.write_buffer {
            Some(bytes) => config.write_buffer_size(bytes),
            None => config,
        }
    }
}

/// One connection's outbox as others see it.
#[derive(Debug, Clone)]
struct Outbox {
    conn: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    kicked: CancellationToken,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    fn push(&self, frame: &Utf8Bytes) {
        if self.kicked.is_cancelled() {
            return;
        }
        let before = self.queued.fetch_add(frame.len(), Ordering::AcqRel);
        if before + frame.len() > OUTBOX_BYTES {
            self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
            self.kicked.cancel();
            return;
        }
        if let Err(error) = self.tx.try_send(frame.clone()) {
            self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
            if matches!(error, mpsc::error::TrySendError::Full(_)) {
                self.kicked.cancel();
            }
        }
    }
}

#[derive(Debug, Default)]
struct Group {
    seq: u64,
    members: Vec<Outbox>,
}

/// Every group, by id. Locked for a lookup; a group's own lock is held while it
/// numbers and fans out one post (no await inside).
#[derive(Debug, Default)]
struct Groups {
    live: Mutex<HashMap<GroupId, Arc<Mutex<Group>>>>,
}

impl Groups {
    fn get(&self, id: &GroupId) -> Arc<Mutex<Group>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.entry(id.clone()).or_default().clone()
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("peerhub-bare: loopback addresses only");
        return std::process::ExitCode::from(2);
    }
    // The same runtime as the `peerhub` binary: one worker per allowed CPU.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("peerhub-bare: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let transport = Transport {
        write_buffer: args.write_buffer,
        sndbuf: match args.sndbuf {
            None => Some(SEND_BUFFER_BYTES),
            Some(0) => None,
            Some(bytes) => Some(bytes),
        },
    };
    match runtime.block_on(serve(args.listen, transport)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peerhub-bare: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr, transport: Transport) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!(
        "peerhub-bare listening on http://{}/",
        listener.local_addr()?
    );
    println!("ready");
    let groups = Arc::new(Groups::default());
    let stop = CancellationToken::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let accepted = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                if let Some(bytes) = transport.sndbuf {
                    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
                }
                tokio::spawn(serve_connection(
                    stream,
                    groups.clone(),
                    stop.clone(),
                    transport,
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    stop.cancel();
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    groups: Arc<Groups>,
    stop: CancellationToken,
    transport: Transport,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let groups = groups.clone();
        let stop = stop.clone();
        async move { Ok::<_, std::convert::Infallible>(upgrade(request, groups, stop, transport)) }
    });
    let connection = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let _ = connection.await;
}

fn plain(status: StatusCode, text: &'static str) -> Response<String> {
    let mut response = Response::new(text.to_string());
    *response.status_mut() = status;
    response
}

/// The RFC 6455 handshake, as `peerhub_server::transport` does it.
fn upgrade(
    mut request: Request<Incoming>,
    groups: Arc<Groups>,
    stop: CancellationToken,
    transport: Transport,
) -> Response<String> {
    if request.uri().path() != "/ws" {
        return plain(StatusCode::NOT_FOUND, "only /ws here");
    }
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return plain(StatusCode::BAD_REQUEST, "connection cannot be upgraded");
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(transport.websocket_config()),
            )
            .await;
            session(ws, groups, stop).await;
        }
    });
    let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    if let Ok(value) = http::HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

type ServerWs = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn text(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_json())
}

async fn write_all(ws: &mut ServerWs, frames: Vec<Utf8Bytes>) -> bool {
    let write = async {
        for frame in frames {
            ws.feed(Message::Text(frame)).await?;
        }
        ws.flush().await
    };
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// Why a write did not complete.
enum Blocked {
    /// The outbox filled up meanwhile.
    Kicked,
    /// It failed or timed out.
    Failed,
}

/// [`write_all`] raced against `kicked`, as the hub's session does: a peer that
/// stopped reading blocks the write, and its outbox filling up meanwhile ends it.
async fn write_or_kicked(
    ws: &mut ServerWs,
    frames: Vec<Utf8Bytes>,
    kicked: &CancellationToken,
) -> Result<(), Blocked> {
    tokio::select! {
        written = write_all(ws, frames) => if written { Ok(()) } else { Err(Blocked::Failed) },
        _ = kicked.cancelled() => Err(Blocked::Kicked),
    }
}

async fn session(mut ws: ServerWs, groups: Arc<Groups>, stop: CancellationToken) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let conn = NEXT.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(OUTBOX);
    let kicked = CancellationToken::new();
    let queued = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox {
        conn,
        tx,
        kicked: kicked.clone(),
        queued: queued.clone(),
    };
    let hello = ServerFrame::Hello {
        protocol: peerhub_protocol::PROTOCOL_VERSION,
        challenge: format!("bare-{conn}"),
        server_time: peerhub_bench::now_ms(),
        limits: Limits::default(),
    };
    if !write_all(&mut ws, vec![text(&hello)]).await {
        return;
    }
    let mut joined: Vec<Arc<Mutex<Group>>> = Vec::new();
    let close: Option<(u16, &str)> = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break Some((1001, "server shutting down")),
            _ = kicked.cancelled() => break Some((4001, "slow_consumer")),
            Some(first) = rx.recv() => {
                let mut frames = Vec::with_capacity(WRITE_BATCH);
                let mut bytes = first.len();
                frames.push(first);
                while frames.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(frame) => {
                            bytes += frame.len();
                            frames.push(frame);
                        }
                        Err(_) => break,
                    }
                }
                queued.fetch_sub(bytes, Ordering::AcqRel);
                match write_or_kicked(&mut ws, frames, &kicked).await {
                    Ok(()) => {}
                    Err(Blocked::Kicked) => break Some((4001, "slow_consumer")),
                    Err(Blocked::Failed) => break None,
                }
            }
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => continue,
                };
                if let Some(reply) = handle(text.as_str(), &outbox, &groups, &mut joined) {
                    if !write_all(&mut ws, vec![reply]).await {
                        break None;
                    }
                }
            }
        }
    };
    for group in joined {
        let mut group = group.lock().unwrap_or_else(|p| p.into_inner());
        group.members.retain(|m| m.conn != conn);
    }
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
    }
}

/// Handles one client frame; returns a direct reply, if any.
fn handle(
    text: &str,
    me: &Outbox,
    groups: &Groups,
    joined: &mut Vec<Arc<Mutex<Group>>>,
) -> Option<Utf8Bytes> {
    let frame = match decode_client_frame(text) {
        Ok(frame) => frame,
        Err(e) => {
            return Some(self::text(&ServerFrame::error(
                e.id,
                e.error.code(),
                "bad frame",
            )))
        }
    };
    match frame {
        ClientFrame::Auth { id, env } => Some(self::text(&ServerFrame::AuthOk {
            id,
            key: env.key,
            roles: Vec::new(),
            counter: 0,
        })),
        ClientFrame::Join { id, group, .. } => {
            let handle = groups.get(&group);
            handle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .members
                .push(me.clone());
            joined.push(handle);
            let id = id.map(|id| format!(",\"id\":{id}")).unwrap_or_default();
            Some(Utf8Bytes::from(format!("{{\"type\":\"joined\"{id}}}")))
        }
        ClientFrame::Post { id, group, env } => {
            let handle = groups.get(&group);
            let mut state = handle.lock().unwrap_or_else(|p| p.into_inner());
            state.seq += 1;
            let seq = state.seq;
            let counter = 0;
            let event = self::text(&ServerFrame::Event {
                group: group.clone(),
                channel: Channel::Main,
                seq,
                ts: peerhub_bench::now_ms(),
                env: Some(env),
                note: None,
                redacted: None,
            });
            for member in &state.members {
                member.push(&event);
            }
            drop(state);
            me.push(&self::text(&ServerFrame::Ack {
                id,
                group,
                channel: Channel::Main,
                seq,
                counter,
            }));
            None
        }
        other => Some(self::text(&ServerFrame::error(
            other.id(),
            ErrorCode::UnknownType,
            "the bare server knows auth, join and post",
        ))),
    }
}
