//! Named helpers for peerhub's integration tests.
//!
//! - [`Identity`] — an Ed25519 key that signs payloads with ever-rising counters.
//! - [`Client`] — a real WebSocket client (plain or TLS) that speaks the protocol:
//!   `connect`, `login`, `request`, `join`, `post`, `expect_error`, `next_event` ...
//! - [`TestServer`] — the real server in this process on `127.0.0.1:0`, with its
//!   own temporary data folder; restartable on the same folder.
//! - [`ProcessServer`] — the real `peerhub` binary as a child process (for signals
//!   and `kill -9`).
//! - [`HttpReceiver`] — a loopback HTTP server standing in for a pager or a Web
//!   Push service; the test picks each answer's status.
//! - [`webpush::PushSubscriber`] — a browser's push keys: decrypts pushes and checks
//!   their VAPID header independently of the hub's crate.
//! - [`nats::NatsCluster`] — three real nats-server processes (JetStream, routes)
//!   on loopback, for the cluster tests; `kill -9` one by name.
//! - [`scan`] — byte scans of every file in a data folder.
//! - [`CrashableServer`] — a [`TestServer`] on a runtime of its own, to stop dead
//!   as `kill -9` would (the cluster tests' node kill).
//!
//! Nothing here fakes the server: every helper talks to it over sockets.

pub mod client;
pub mod crashable;
pub mod identity;
pub mod nats;
pub mod process;
pub mod receiver;
pub mod scan;
pub mod server;
pub mod webpush;

pub use client::{Client, Closed};
pub use crashable::CrashableServer;
pub use identity::Identity;
pub use process::ProcessServer;
pub use receiver::HttpReceiver;
pub use server::{StoppedServer, TestServer};

/// How long a test waits for a frame before failing.
pub const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `f` (something that opens a data folder) again, for up to 10 s, while
/// it fails because the folder's lock is held: under a busy test run the
/// store's lock can outlive its last handle for a moment (a child process
/// another test forks just then holds the lock's file until it execs, and the
/// store's own unit tests meet the same after a drop).
pub fn retry_while_locked<T, E: std::fmt::Display>(
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f() {
            Err(error)
                if {
                    let text = error.to_string();
                    text.contains("could not acquire lock") || text.contains("is in use")
                } && std::time::Instant::now() < until =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}
