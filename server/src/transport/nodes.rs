//! `GET /nodes.json`: the cluster's public node origins (`cluster.client_urls`),
//! for the web client to move to another node when its own fails.
//!
//! `{"nodes": ["https://n1.example.org", ...]}` in the configured order; an empty
//! list on one node or when none is configured (the page then talks to its own
//! node only, as it always did). The same origins are the only ones besides
//! 'self' in the pages' `connect-src` (`assets`), and every node accepts them as
//! WebSocket origins (`super::origin_allowed`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;

use crate::hub::Hub;

/// Where the list is served.
pub const PATH: &str = "/nodes.json";

/// The list, as JSON, never cached (a node added to the configuration shows at
/// the next page load).
pub async fn list(State(hub): State<Arc<Hub>>) -> Response {
    let body = serde_json::json!({ "nodes": super::client_urls(&hub) }).to_string();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
