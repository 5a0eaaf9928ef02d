//! Transport: the only module that touches sockets.
//!
//! ```text
//! TcpListener ─accept─► [TLS handshake] ─► hyper HTTP/1.1 ─► router
//!                                              ├─ GET /healthz, /readyz, /metrics → ops
//!                                              ├─ GET /ws       → upgrade → WsConnection → session::run
//!                                              ├─ GET /nodes.json → nodes (the cluster's node origins)
//!                                              ├─ POST /push/ack → push (a notification's signed ack)
//!                                              ├─ GET /conformance/echo → echo (only with --conformance-echo)
//!                                              └─ anything else → embedded client files
//! ```
//!
//! An upgrade is admitted under the connection caps by its client's address: the
//! TCP peer's, or — when the peer is a trusted proxy — the one the proxy names
//! ([`forwarded`]).
//!
//! Every accepted connection is a task on the hub's connection tracker, and every
//! one of them watches the shutdown token: HTTP connections finish their request
//! and close; WebSocket sessions say goodbye (see `session`).

pub mod control;
pub mod echo;
pub mod forwarded;
pub mod nodes;
pub mod ops;
pub mod origin;
pub mod push;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;
use tower::ServiceExt as _;

use crate::hub::Hub;
use crate::limits::Refusal;
use crate::outbound::ConnId;

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The remote address of an HTTP request's connection, canonical: an IPv4-mapped
/// IPv6 address (`::ffff:127.0.0.1`, what a dual-stack `[::]` listener reports for
/// an IPv4 peer) is its IPv4 address, so every check (loopback for `/metrics`,
/// per-address limits, trusted proxies) sees one form. Made only by [`PeerAddr::of`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    /// The canonical form of an accepted connection's peer.
    pub fn of(peer: SocketAddr) -> Self {
        Self(SocketAddr::new(peer.ip().to_canonical(), peer.port()))
    }
}

/// The kernel send buffer of every accepted socket. Left alone, Linux grows it
/// to `tcp_wmem` max (megabytes) for a peer that stops reading, on top of the
/// outbox; capped, a stalled peer fills it quickly and the outbox bound decides.
/// Linux doubles the figure set; 64 KiB kept a silent member's kernel queue near
/// 175 KiB with no fan-out cost in the perf runs (docs/PERFORMANCE.md).
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// The WebSocket settings every session uses: a small read buffer (the default
/// 128 KiB per connection would dominate memory), a write buffer so a batch of
/// frames goes out in few socket writes, and hard caps on what a peer can make
/// us hold.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(peerhub_protocol::limits::HARD_FRAME_BYTES))
        .max_frame_size(Some(peerhub_protocol::limits::HARD_FRAME_BYTES))
}

/// Accepts connections until shutdown.
pub async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, hub: Arc<Hub>) {
    let router = router(hub.clone());
    let mut tidy = tokio::time::interval(Duration::from_secs(60));
    loop {
        let accepted = tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            _ = tidy.tick() => {
                hub.limits.forget_idle();
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let task = serve_connection(stream, peer, tls.clone(), router.clone(), hub.clone());
                hub.connections.spawn(task);
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!("accept loop stopped");
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    hub: Arc<Hub>,
) {
    let peer = PeerAddr::of(peer);
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER_BYTES);
    let io = match tls {
        None => Either::Right(stream),
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Either::Left(stream),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(peer);
            router.clone().oneshot(request.map(Body::new))
        });
    let connection = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = hub.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

fn router(hub: Arc<Hub>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/ws", get(upgrade))
        .route(nodes::PATH, get(nodes::list))
        .route(push::ACK_PATH, axum::routing::post(push::ack));
    if hub.settings.conformance_echo {
        router = router.route(echo::PATH, get(echo::upgrade));
    }
    router
        .fallback(crate::assets::serve)
        .layer(axum::middleware::from_fn_with_state(hub.clone(), guard))
        .with_state(hub)
}

/// Every request: a Host that names the hub (else 421, [`origin`]), and
/// Strict-Transport-Security on every answer when the hub serves TLS itself.
async fn guard(
    State(hub): State<Arc<Hub>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let policy = &hub.settings.http;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let mut response = match host {
        None => refuse(StatusCode::BAD_REQUEST, "a Host header is required"),
        Some(host) if !policy.host_allowed(host) => refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this hub does not answer for that host",
        ),
        Some(_) => next.run(request).await,
    };
    if policy.tls {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// A browser's page may open a WebSocket only from the hub's own origin, one in
/// `allow_origins`, or one of the cluster's nodes (`cluster.client_urls`: a page
/// served by another node moves here when its node fails) — scheme, host and
/// port, never judged by the Host header; a request with no Origin header is not
/// from a browser page.
fn origin_allowed(headers: &http::HeaderMap, hub: &Hub) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    origin.to_str().is_ok_and(|origin| {
        hub.settings.http.origin_allowed(origin) || origin::listed(client_urls(hub), origin)
    })
}

/// The cluster's node origins the web client may move between (empty on one
/// node).
pub fn client_urls(hub: &Hub) -> &[String] {
    hub.cluster
        .as_ref()
        .map_or(&[], |node| node.settings.client_urls.as_slice())
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

/// A WebSocket upgrade request that passed [`check_upgrade`]: what answering it
/// and serving the upgraded connection need.
struct Handshake {
    /// The `Sec-WebSocket-Accept` value for the 101 response.
    accept: String,
    /// Resolves to the raw connection once the 101 response is sent.
    on_upgrade: hyper::upgrade::OnUpgrade,
    /// The client's address: the TCP peer's, or the one a trusted proxy names.
    peer: std::net::IpAddr,
    /// The connection's place under the connection caps, held while it lives.
    ticket: crate::limits::ConnectionTicket,
}

/// The checks every WebSocket upgrade passes, whatever then runs on the
/// connection: the RFC 6455 §4.2 headers, shutdown, Origin, connection admission.
/// `Err` is the response that refuses it.
#[allow(clippy::result_large_err)] // The refusal is returned at once, not carried.
fn check_upgrade(hub: &Hub, request: &mut Request) -> Result<Handshake, Response> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Response::builder()
            .status(StatusCode::UPGRADE_REQUIRED)
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .body(Body::from("WebSocket version 13 is required"))
            .unwrap_or_else(|_| refuse(StatusCode::BAD_REQUEST, "bad version")));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "connection cannot be upgraded",
        ));
    };
    if hub.shutdown.is_cancelled() {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    }
    if !origin_allowed(request.headers(), hub) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "this page's origin may not connect to this hub",
        ));
    }
    let tcp_peer = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    // Behind a trusted proxy, the client is who the proxy says (`forwarded`).
    let peer =
        forwarded::client_address(tcp_peer, request.headers(), &hub.settings.trusted_proxies)
            .map_err(|bad| refuse(StatusCode::BAD_REQUEST, bad.0))?;
    let ticket = match hub.limits.admit_connection(peer) {
        Ok(ticket) => ticket,
        Err(Refusal::TooFast(retry_ms)) => {
            return Err(Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(header::RETRY_AFTER, retry_ms.div_ceil(1000).to_string())
                .body(Body::from(
                    "too many new connections from your address; retry later",
                ))
                .unwrap_or_else(|_| {
                    refuse(StatusCode::TOO_MANY_REQUESTS, "too many connections")
                }));
        }
        Err(Refusal::Full(why)) => {
            return Err(Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header(header::RETRY_AFTER, "5")
                .body(Body::from(why))
                .unwrap_or_else(|_| refuse(StatusCode::SERVICE_UNAVAILABLE, "full")));
        }
    };
    Ok(Handshake {
        accept,
        on_upgrade,
        peer,
        ticket,
    })
}

/// The 101 response that completes a checked handshake.
fn switching_protocols(accept: String) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "upgrade failed"))
}

/// Completes the WebSocket handshake (RFC 6455 §4.2) and hands the upgraded
/// connection to a session task.
async fn upgrade(State(hub): State<Arc<Hub>>, mut request: Request) -> Response {
    let Handshake {
        accept,
        on_upgrade,
        peer,
        ticket,
    } = match check_upgrade(&hub, &mut request) {
        Ok(handshake) => handshake,
        Err(refused) => return refused,
    };
    let conn = ConnId::next();
    let session_hub = hub.clone();
    hub.connections.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let stream = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(websocket_config()),
                )
                .await;
                let link = crate::session::Link { conn, peer, ticket };
                let frames_sent = session_hub.metrics.frames_sent.clone();
                let ws = ws::WsConnection::new(stream, frames_sent);
                crate::session::run(session_hub, ws, link).await;
            }
            Err(error) => tracing::debug!(%conn, %error, "upgrade failed"),
        }
    });
    switching_protocols(accept)
}
