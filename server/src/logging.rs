//! Logging set-up: `tracing` to stderr, plain or JSON lines, filtered by
//! `RUST_LOG` (default `info`).
//!
//! What peerhub's own code logs is chosen so that no log line carries message
//! content, a display name, a key or a secret: connections appear as ids (`c17`).
//! Libraries are another matter — at `debug`/`trace`, tungstenite logs every frame
//! it sends and receives, hyper and rustls log the bytes they handle — so their
//! levels are capped here, whatever `RUST_LOG` says. Turning the server's own
//! logging up to `trace` is safe; reading frames off the wire is not something the
//! logs can be used for.

use tracing_subscriber::filter::Directive;
use tracing_subscriber::EnvFilter;

/// Crates that would log wire bytes (and so message content) below `info`.
pub const CAPPED: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tokio_rustls",
    "reqwest",
    "sled",
];

/// The filter: `RUST_LOG` (or `info`), with [`CAPPED`] crates held at `info`.
pub fn filter() -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for name in CAPPED {
        if let Ok(directive) = format!("{name}=info").parse::<Directive>() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global subscriber (once, at start).
pub fn init(json: bool) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}
