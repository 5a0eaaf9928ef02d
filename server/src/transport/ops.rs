//! Operators' endpoints: `/healthz` (the process answers), `/readyz` (it can take
//! work: not stopping, in touch with the cluster when it is one, the store
//! commits, the escalation router runs) and
//! `/metrics` (Prometheus text; see [`crate::metrics`]).
//!
//! `/metrics` holds counts only, but how busy a support service is at 3 a.m. is
//! nobody else's business. With `metrics.token` set it answers whoever presents
//! `Authorization: Bearer <token>` (compared in constant time, never logged) and
//! nobody else, whatever their address or headers. Without a token it answers a
//! scraper on the same machine: a loopback TCP peer whose request carries no
//! header any proxy writes (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `Via`, ...);
//! such a header can only take access away, never give it. A proxy on this machine
//! that writes none of them cannot be told apart from a scraper: that is what the
//! token is for. `metrics.public` opens it to every address.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use secrecy::ExposeSecret as _;

use super::PeerAddr;
use crate::hub::Hub;
use crate::metrics::{Readings, CONTENT_TYPE};

/// How long `/readyz` waits for a durable commit.
const READY_COMMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when the hub can take work, 503 with the reason when not.
pub async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    let not_ready = |why: &'static str| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    if hub.shutdown.is_cancelled() {
        return not_ready("stopping");
    }
    if hub.cluster.as_ref().is_some_and(|node| !node.is_in_touch()) {
        return not_ready("this node lost touch with the cluster (its presence lease ran out); it serves nobody until it takes it again");
    }
    if !hub.router.is_running() {
        return not_ready("the escalation router is not running");
    }
    if let Some(fault) = hub.committer.fault() {
        return not_ready(match fault {
            crate::store::StoreFault::DiskFull => {
                "the store stopped writing: the disk is full (ENOSPC); nothing is acknowledged; free space, then restart peerhub"
            }
            crate::store::StoreFault::WriteFailed => {
                "the store stopped writing: a write or fsync failed (EIO); nothing is acknowledged; check the disk, then restart peerhub"
            }
            crate::store::StoreFault::CompactionFailed => {
                "the store stopped writing: a compaction failed after marking its copy whole; nothing is acknowledged; restart peerhub, which finishes it"
            }
        });
    }
    match tokio::time::timeout(READY_COMMIT_TIMEOUT, hub.committer.commit()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(_)) => not_ready("the store cannot commit"),
        Err(_) => not_ready("the store is not committing in time"),
    }
}

/// Headers that some proxy writes: any of them means the request was relayed.
const PROXY_HEADERS: &[&str] = &[
    "forwarded",
    "via",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
];

fn from_this_machine(request: &Request) -> bool {
    let loopback = request
        .extensions()
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback());
    let proxied = request.headers().keys().any(|name| {
        let name = name.as_str();
        name.starts_with("x-forwarded-") || PROXY_HEADERS.contains(&name)
    });
    loopback && !proxied
}

/// Does the request carry `Authorization: Bearer <token>`? Both sides are hashed
/// first, so the comparison takes the same time wherever they differ.
fn bearer_matches(request: &Request, token: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    use subtle::ConstantTimeEq as _;
    let (a, b) = (Sha256::digest(given.trim()), Sha256::digest(token));
    a.ct_eq(&b).into()
}

/// `GET /metrics`: Prometheus text exposition format.
pub async fn metrics(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    if let Some(token) = &hub.settings.metrics_token {
        if !bearer_matches(&request, token.expose_secret()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "metrics need the bearer token (metrics.token)",
            )
                .into_response();
        }
    } else if !hub.settings.metrics_public && !from_this_machine(&request) {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to this machine only (see metrics.token, metrics.public)",
        )
            .into_response();
    }
    let (connections, pending_logins) = hub.limits.connection_counts();
    let store = hub.store.clone();
    let store_bytes = tokio::task::spawn_blocking(move || store.size_on_disk())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let text = hub.metrics.render(Readings {
        connections,
        pending_logins,
        groups_live: hub.groups.live_count(),
        store_bytes,
        now_ms: hub.clock.now_ms(),
        store_fault: hub.committer.fault().map(|f| f.as_str()),
        free_bytes: hub.space.free_bytes(),
        low_space: hub.space.is_low(),
        nats_connected: hub.cluster.as_ref().map(|node| {
            node.nats.client().connection_state() == async_nats::connection::State::Connected
        }),
    });
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}
