//! peerhub-bench: the tools that measure peerhub against the ceilings of its parts.
//!
//! Map of the parts and how a run flows through them:
//!
//! ```text
//! scripts/perf.sh ─► peerhub-baseline ──────────────► baseline.json   (V, S, F)
//!                ├─► peerhub-load ─spawns─► peerhub | peerhub-bare
//!                │        │  (taskset)        ▲ real sockets on 127.0.0.x
//!                │        └─ identities, pre-signed posts, readers ──► load-*.json
//!                ├─► cargo bench (criterion, hot path) ─────────────► target/criterion
//!                └─► peerhub-report ── reads them all ──────────────► docs/PERFORMANCE.md
//! ```
//!
//! - [`identity`] — an Ed25519 key with a rising per-key counter that signs the
//!   envelopes a client sends (auth, redeem, create_group, join, post).
//! - [`client`] — a WebSocket client over a real socket (optionally from a chosen
//!   127.0.0.x source address) for the set-up phase: hello, login, requests.
//! - [`wire`] — cheap scanners for server frames on the measured path, so the
//!   generator spends its core on sockets rather than on JSON trees.
//! - [`child`] — starts a server binary as a child process on a fresh data folder
//!   (optionally pinned with `taskset`), reads its `ready`, stops it.
//! - [`procfs`] — RSS, CPU time and socket queues from `/proc`.
//! - [`report`] — the JSON results every binary writes and the report reads.
//! - [`sample`] — realistic records and envelopes shared by the baselines and the
//!   criterion benchmarks, so both measure the same bytes the hub handles.
//!
//! Binaries: `peerhub-load` (the generator), `peerhub-bare` (the bare broadcast
//! server), `peerhub-baseline` (V, S, F) and `peerhub-report`.
//!
//! Non-goals: talking to anything but loopback; absolute figures (every goal is a
//! ratio against a baseline measured in the same run).

pub mod child;
pub mod client;
pub mod identity;
pub mod procfs;
pub mod report;
pub mod sample;
pub mod sweep;
pub mod wire;

/// Milliseconds since the Unix epoch (for signed `ts` fields).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
