//! Operators' endpoints: `/healthz` (the process answers), `/readyz` (it can take
//! work: not stopping, the store commits, the escalation router runs) and
//! `/metrics` (Prometheus text; see [`crate::metrics`]).
//!
//! `/metrics` holds counts only, but how busy a support service is at 3 a.m. is
//! nobody else's business: it answers a scraper on the same machine (a loopback
//! peer that did not come through a proxy, i.e. sent no `Forwarded` or
//! `X-Forwarded-For` header) and anyone else only when the operator opens it
//! (`metrics_public`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};

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
    if !hub.router.is_running() {
        return not_ready("the escalation router is not running");
    }
    match tokio::time::timeout(READY_COMMIT_TIMEOUT, hub.committer.commit()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(_)) => not_ready("the store cannot commit"),
        Err(_) => not_ready("the store is not committing in time"),
    }
}

fn from_this_machine(request: &Request) -> bool {
    let loopback = request
        .extensions()
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback());
    let headers = request.headers();
    let proxied =
        headers.contains_key(header::FORWARDED) || headers.contains_key("x-forwarded-for");
    loopback && !proxied
}

/// `GET /metrics`: Prometheus text exposition format.
pub async fn metrics(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    if !hub.settings.metrics_public && !from_this_machine(&request) {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to this machine only (see metrics_public)",
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
    });
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}
