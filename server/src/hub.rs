//! The shared state every task gets an `Arc` of. No globals: tests build as many
//! hubs as they like, each on its own data folder.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::ReplayGuard;
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::groups::GroupRegistry;
use crate::store::{Committer, Store};

/// Tunables the running server reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Frames a connection's outbox holds before the connection is dropped as slow.
    pub outbox_capacity: usize,
    /// Bytes a connection's outbox holds before the connection is dropped as slow.
    pub outbox_bytes: usize,
    /// How long a connection may stay without logging in.
    pub auth_timeout: Duration,
    /// The signposting sent with every flag answer, a refusal included.
    pub helplines: Vec<peerhub_protocol::escalation::Helpline>,
    /// Serve `/metrics` to any address, not only to this machine.
    pub metrics_public: bool,
    /// The bearer token `/metrics` asks for (a secret: never logged); `None`: none.
    pub metrics_token: Option<secrecy::SecretString>,
    /// The Host and Origin rules, and whether to send HSTS (`transport::origin`).
    pub http: crate::transport::origin::HttpPolicy,
    /// Proxies whose client-address header is believed (`transport::forwarded`).
    pub trusted_proxies: crate::transport::forwarded::TrustedProxies,
    /// Serve the echo endpoint the WebSocket conformance suite drives
    /// (`transport::echo`); off in every real deployment.
    pub conformance_echo: bool,
}

/// Everything the server's tasks share.
#[derive(Debug)]
pub struct Hub {
    /// Durable state.
    pub store: Store,
    /// Group commits over the store.
    pub committer: Committer,
    /// The tamper-evident audit chain; every task appends through this one log.
    pub audit: std::sync::Arc<AuditLog>,
    /// Wall clock.
    pub clock: Clock,
    /// Per-key replay counters.
    pub replay: ReplayGuard,
    /// The escalation router.
    pub router: crate::escalation::RouterHandle,
    /// Out-of-band alerting (pagers, Web Push) and its reachability status.
    pub alerts: crate::escalation::alerts::Alerts,
    /// Live group tasks.
    pub groups: GroupRegistry,
    /// Cancelled once, when the server starts stopping. Every task selects on it.
    pub shutdown: CancellationToken,
    /// Every connection task (HTTP and WebSocket), so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Rate limits and caps.
    pub limits: crate::limits::Limits,
    /// Tunables.
    pub settings: Settings,
    /// Counters and gauges for `GET /metrics`.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Free space on the data folder's disk, and the low-space watermark.
    pub space: crate::store_watch::Space,
    /// Cluster mode: this node's NATS connection and the cluster's stores; `None`
    /// on one node.
    pub cluster: Option<std::sync::Arc<crate::cluster::node::ClusterNode>>,
}
