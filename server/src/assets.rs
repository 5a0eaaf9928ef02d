//! The browser client, embedded in the binary and served with strict headers.
//!
//! Content-Security-Policy allows scripts, styles and connections from this origin
//! only (no inline script) — and, in a cluster with `cluster.client_urls`,
//! WebSockets to those nodes too — and the pages cannot be framed or leak a
//! referrer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use rust_embed::RustEmbed;

use crate::hub::Hub;
use crate::transport::origin::Origin;

#[derive(RustEmbed)]
#[folder = "../client-web/"]
#[exclude = "*.md"]
struct ClientWeb;

/// The CSP sent with every page on one node (and on a cluster with no list).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The CSP for a hub whose web client may move to `nodes` (origins as
/// `cluster.client_urls` holds them): `connect-src` allows each one's `ws://` or
/// `wss://` URL besides 'self', and nothing else changes.
pub fn content_security_policy(nodes: &[String]) -> String {
    let sources: Vec<String> = nodes
        .iter()
        .filter_map(|n| Origin::parse(n))
        .map(|o| o.websocket_source())
        .collect();
    if sources.is_empty() {
        return CONTENT_SECURITY_POLICY.to_string();
    }
    CONTENT_SECURITY_POLICY.replace(
        "connect-src 'self';",
        &format!("connect-src 'self' {};", sources.join(" ")),
    )
}

/// Serves an embedded file (`/` is `index.html`), or 404.
pub async fn serve(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let csp = content_security_policy(crate::transport::client_urls(&hub));
    let csp = HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    let builder = Response::builder()
        .header(header::CONTENT_SECURITY_POLICY, csp)
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY");
    let response = match ClientWeb::get(path) {
        Some(file) => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, file.metadata.mimetype())
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from(file.data.into_owned())),
        None => builder
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("not found")),
    };
    response.unwrap_or_else(|_| Response::new(Body::from("internal error")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_src_lists_exactly_the_nodes_websocket_urls() {
        assert_eq!(content_security_policy(&[]), CONTENT_SECURITY_POLICY);
        let csp = content_security_policy(&[
            "https://n1.example.org".into(),
            "http://127.0.0.1:7072".into(),
        ]);
        assert!(
            csp.contains("connect-src 'self' wss://n1.example.org ws://127.0.0.1:7072;"),
            "{csp}"
        );
        assert_eq!(
            csp.replace(" wss://n1.example.org ws://127.0.0.1:7072", ""),
            CONTENT_SECURITY_POLICY
        );
    }
}
