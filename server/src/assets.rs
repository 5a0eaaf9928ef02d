//! The browser client, embedded in the binary and served with strict headers.
//!
//! Content-Security-Policy allows scripts, styles and connections from this origin
//! only (no inline script), and the pages cannot be framed or leak a referrer.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, StatusCode};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../client-web/"]
#[exclude = "*.md"]
struct ClientWeb;

/// The CSP sent with every page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Serves an embedded file (`/` is `index.html`), or 404.
pub async fn serve(request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let builder = Response::builder()
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
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
