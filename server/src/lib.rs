//! peerhub: a WebSocket hub for moderated peer-support groups.
//!
//! Map of the parts and how a message flows through them:
//!
//! ```text
//! client ─wss─► transport ──► session ──admission──► groups::actor ──► store
//!   (TLS, HTTP, WebSocket)  (one task per   (signature,   (one task per    (sled, behind
//!                            connection)     replay, time)  group: seq,      a narrow API;
//!                                 ▲                          commit, fan-out) group commit)
//!                                 └──────── outbound (bounded outbox per connection) ◄┘
//! ```
//!
//! - [`transport`] — the only module that touches sockets: accept loop, TLS,
//!   HTTP routes, WebSocket upgrade and the [`transport::ws::WsConnection`] wrapper.
//! - [`session`] — one task per connection: hello, login, admission of signed
//!   commands, replies, history.
//! - [`admission`] — the checks every signed command passes, and replay counters.
//! - [`groups`] — one task per live group: ordering, persistence, ack, fan-out.
//! - [`outbound`] — a connection's bounded outbox as other tasks see it.
//! - [`store`] — the only module that touches sled; [`store::Committer`] groups
//!   flushes so an ack always follows a durable write.
//! - [`audit`] — the signed, hash-linked audit chain and its check (`audit verify`).
//! - [`export`] — everything held about one key, as JSON (people's data rights).
//! - [`admin`] — commands on a stopped server's data folder (`peerhub rota ...`).
//! - [`limits`] — rate limits (governor) and caps on connections and members.
//! - [`logging`] — tracing set-up; caps the libraries that would log wire bytes.
//! - [`metrics`] — counters and gauges for `GET /metrics` (Prometheus text).
//! - [`invites`], [`bootstrap`] — roles by invite; the first-admin link and demo.
//! - [`hub`] — the shared state; [`config`] — flags and validation; [`clock`].
//! - [`escalation`] — distress flags, the on-call rota, deadlines, re-routing and
//!   the pager hook, in one router task.
//! - [`retention`] — how long each kind of data is kept; the job that deletes
//!   what expired and records it in the audit chain.
//! - [`compactor`] — the job that rewrites the store once a compaction is owed
//!   (after an ephemeral session's end), so deleted bytes leave the data folder.
//! - [`text`] — the one rule for free-text fields.
//! - [`risk_phrases`] — the facilitators' risk-phrase nudge: matching as people type.
//! - [`cluster`] — NATS JetStream building blocks for cluster mode (leases, the
//!   fenced group log, exactly-once steps); not wired into the hub yet (issue 18).
//! - [`error`] — [`error::ServerError`] and its mapping to client error codes.
//!
//! Start a server with [`Server::start`] on a listener you bound (tests bind port
//! 0), and stop it with [`Server::shutdown`] or [`Server::run_until`].

pub mod admin;
pub mod admission;
pub mod assets;
pub mod audit;
pub mod backup_schedule;
pub mod bootstrap;
pub mod clock;
pub mod cluster;
pub mod compactor;
pub mod config;
pub mod erase;
pub mod error;
pub mod escalation;
pub mod export;
pub mod file_modes;
pub mod groups;
pub mod hub;
pub mod invites;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod retention;
pub mod risk_phrases;
pub mod session;
pub mod store;
pub mod store_watch;
pub mod text;
pub mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::ReplayGuard;
use crate::bootstrap::StartTokens;
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::groups::GroupRegistry;
use crate::hub::{Hub, Settings};
use crate::store::{Committer, Store, StoreError};
use crate::transport::tls::{TlsError, TlsSetup};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data folder could not be created or opened.
    #[error("data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data folder, or something in it, is open to group or others.
    #[error(
        "data folder: {first} is readable or writable by group or others \
         ({count} such path(s) in all); refusing to start. Run: {advice} \
         (or set store.open_to_others = \"warn\" to start anyway)"
    )]
    OpenToOthers {
        /// The first such path, with its mode.
        first: file_modes::OpenPath,
        /// How many there are.
        count: usize,
        /// The `chmod` that closes them all.
        advice: String,
    },
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The store opened but does not hold what was acknowledged intact: the hub
    /// refuses to serve it (issue 20).
    #[error(
        "the store in {dir} is damaged: {what}. peerhub will not serve it, so that \
         nothing acknowledged is silently missing. Keep this folder for investigation \
         and restore the last backup into a new one: `peerhub restore --from BACKUP \
         --data NEWDIR`, then `peerhub audit verify --data NEWDIR`, then start peerhub \
         with --data NEWDIR (see OPERATIONS.md 5.1)"
    )]
    Damaged {
        /// The data folder.
        dir: std::path::PathBuf,
        /// What is wrong, in words.
        what: String,
    },
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A thread could not be started.
    #[error("starting the commit thread: {0}")]
    Thread(std::io::Error),
    /// Cluster mode: the NATS cluster could not be reached or prepared.
    #[error("cluster: {0} (`peerhub cluster check` says which server or stream is at fault)")]
    Cluster(#[from] cluster::ClusterError),
}

/// Before serving: the audit chain verifies end to end and every group log
/// decodes and reaches its acknowledged head (see
/// [`Store::check_group_logs`]). Both read the whole store once; the time taken
/// is logged.
fn check_store_at_start(store: &Store, dir: &std::path::Path) -> Result<(), StartError> {
    let damaged = |what: String| StartError::Damaged {
        dir: dir.to_path_buf(),
        what,
    };
    let started = std::time::Instant::now();
    let chain = audit::verify(store).map_err(|broken| {
        damaged(format!(
            "the audit chain breaks at entry {}: {}",
            broken.seq, broken.reason
        ))
    })?;
    let logs = store.check_group_logs().map_err(damaged)?;
    store.check_mark().map_err(damaged)?;
    tracing::info!(
        audit = %chain,
        events = logs.events,
        groups = logs.groups,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store checked at start"
    );
    Ok(())
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    hub: Arc<Hub>,
    groups: TaskTracker,
    accept: JoinHandle<()>,
    router_stop: CancellationToken,
    commit_thread: std::thread::JoinHandle<()>,
    local_addr: SocketAddr,
    base_url: String,
    tokens: StartTokens,
    tls: Option<TlsSetup>,
    retention: retention::RetentionHandle,
    data_dir: std::path::PathBuf,
    /// Paths the operator left open (`store.open_to_others = "warn"`).
    kept_open: Vec<file_modes::OpenPath>,
}

impl Server {
    /// Opens the store, prepares start-up invites and starts accepting on
    /// `listener`. Refuses plain ws on a non-loopback address.
    pub async fn start(listener: TcpListener, config: Config) -> Result<Self, StartError> {
        Self::start_with_clock(listener, config, Clock::system()).await
    }

    /// [`Server::start`] with a clock the caller controls (tests).
    pub async fn start_with_clock(
        listener: TcpListener,
        config: Config,
        clock: Clock,
    ) -> Result<Self, StartError> {
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        config::check_listen(local_addr, config.tls.is_some())?;
        let data_error = |source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        let open = file_modes::check_at_start(&config.data_dir).map_err(data_error)?;
        if let Some(first) = open.first() {
            match config.open_to_others {
                file_modes::OpenToOthers::Refuse => {
                    return Err(StartError::OpenToOthers {
                        first: first.clone(),
                        count: open.len(),
                        advice: file_modes::chmod_advice(&config.data_dir),
                    })
                }
                file_modes::OpenToOthers::Warn => {
                    for path in &open {
                        tracing::warn!(
                            path = %path.path.display(),
                            mode = format!("{:04o}", path.mode),
                            advice = file_modes::chmod_advice(&config.data_dir),
                            "data folder open to group or others (store.open_to_others = warn)"
                        );
                    }
                }
            }
        }
        file_modes::create_dir(&config.data_dir).map_err(data_error)?;
        let store = Store::open_with_cache(&config.data_dir, config.store_cache_bytes).map_err(
            |error| match error.is_damage() {
                // The engine's own checks (a checksum that does not match, a file
                // it cannot read): the same advice as a failed check below.
                true => StartError::Damaged {
                    dir: config.data_dir.clone(),
                    what: error.to_string(),
                },
                false => StartError::Store(error),
            },
        )?;
        check_store_at_start(&store, &config.data_dir)?;
        let tls = config
            .tls
            .as_ref()
            .map(|source| transport::tls::setup(source, &config.data_dir))
            .transpose()?;
        // The store's files and the self-signed key: owner-only whatever the umask
        // (paths the operator chose to leave open, with the warning, stay as they are).
        file_modes::make_owner_only(&config.data_dir, &open).map_err(data_error)?;
        let rekeyed = groups::migrate_access_codes(&store)?;
        if rekeyed > 0 {
            tracing::info!(groups = rekeyed, "access codes moved to their keyed form");
        }
        // Cluster mode: the NATS cluster first, so a node that cannot reach it
        // serves nothing rather than a store of its own.
        let cluster_node = match &config.cluster {
            Some(settings) => Some(Arc::new(
                cluster::node::ClusterNode::open(settings, clock.clone()).await?,
            )),
            None => None,
        };
        if let Some(node) = &cluster_node {
            // A folder kept from before the cluster was restored from a backup
            // is refused before anything reads it (docs/CLUSTER.md §8).
            cluster::restored::check_folder(&store, &node.directory).await?;
        }
        let tokens = match &cluster_node {
            // The cluster's secrets, first-admin invite and demo group.
            Some(node) => {
                bootstrap::prepare_in_cluster(&store, &node.directory, config.demo, clock.now_ms())
                    .await?
            }
            None => bootstrap::prepare(&store, config.demo, clock.now_ms())?,
        };
        let audit = Arc::new(audit::AuditLog::open(store.clone())?);
        if let Some(keys) = groups::migrate_facilitator_grants(&store, &audit, clock.now_ms())? {
            tracing::info!(keys, "facilitator roles became per-group grants");
        }
        let (committer, commit_thread) =
            Committer::start(store.clone(), config.commit_interval).map_err(StartError::Thread)?;
        let groups = TaskTracker::new();
        let metrics = Arc::new(metrics::Metrics::new());
        if cluster_node.is_some() {
            metrics.start_cluster();
        }
        // The router outlives the connections (they unregister as they close) and
        // stops with the group tasks.
        let router_stop = CancellationToken::new();
        let (staff_notices, staff_line) = escalation::staff::StaffNotices::new();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = config
            .public_url
            .clone()
            .map(|url| url.trim_end_matches('/').to_string() + "/")
            .unwrap_or_else(|| format!("{scheme}://{local_addr}/"));
        let alerts = escalation::alerts::Alerts::start(
            store.clone(),
            clock.clone(),
            escalation::alerts::AlertSettings {
                pager: config.escalation.pager(),
                push_repeat: config.escalation.push_repeat,
                push_contact: Some(config.escalation.push_contact.clone())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| base_url.clone()),
                base_url: base_url.clone(),
            },
            store.hub_signing_seed()?,
            &groups,
            router_stop.clone(),
            metrics.clone(),
        )?;
        // One node: the router runs here. Cluster mode: sessions' router commands
        // go to a dispatcher, which takes them to whichever node leads it.
        let (router, dispatched) = match &cluster_node {
            None => (
                escalation::EscalationRouter::start(
                    store.clone(),
                    committer.clone(),
                    clock.clone(),
                    audit.clone(),
                    config.escalation.clone(),
                    &groups,
                    router_stop.clone(),
                    metrics.clone(),
                    staff_notices,
                    limits::FlagLimits::new(&config.limits),
                    alerts.clone(),
                    None,
                )?,
                None,
            ),
            Some(_) => {
                let (router, dispatched) = cluster::router_node::router_handle();
                (router, Some(dispatched))
            }
        };
        let replay = ReplayGuard::new(store.clone());
        let mut registry = GroupRegistry::new(
            store.clone(),
            committer.clone(),
            clock.clone(),
            groups.clone(),
            audit.clone(),
            groups::GroupLimits::from_settings(&config.limits).for_outbox(config.outbox_bytes),
            metrics.clone(),
            config.risk_phrases.clone(),
        );
        if let Some(node) = &cluster_node {
            registry = registry.with_cluster(groups::ClusterWiring {
                node: node.clone(),
                replay: replay.clone(),
                proxy: cluster::remote::ProxySettings {
                    frames: config.outbox_capacity,
                    bytes: config.outbox_bytes,
                    drops: metrics.outbox_drops.clone(),
                },
            });
        }
        // Measured once before anyone connects (then every second by `watch`):
        // a hub started below the watermark refuses new groups and members from
        // its first request, not from its first tick.
        let space = store_watch::Space::new(config.store_min_free_bytes);
        space.measure(&config.data_dir);
        let hub = Arc::new(Hub {
            cluster: cluster_node.clone(),
            alerts,
            router,
            replay,
            groups: registry,
            store,
            committer,
            audit,
            clock,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            limits: limits::Limits::new(config.limits.clone())
                .counting_hits_in(metrics.rate_limit_hits()),
            metrics,
            space,
            settings: Settings {
                outbox_capacity: config.outbox_capacity,
                outbox_bytes: config.outbox_bytes,
                auth_timeout: config.auth_timeout,
                helplines: config.escalation.helplines.clone(),
                metrics_public: config.metrics_public,
                metrics_token: config.metrics_token.clone(),
                http: transport::origin::HttpPolicy::new(
                    local_addr,
                    tls.is_some(),
                    config.public_url.as_deref(),
                    &config.allowed_origins,
                ),
                trusted_proxies: config.trusted_proxies.clone(),
                conformance_echo: config.conformance_echo,
            },
        });
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        let control_path = config.data_dir.join(admin::SOCKET);
        match transport::control::bind(&control_path) {
            Ok(control) => {
                hub.connections.spawn(transport::control::serve(
                    control,
                    control_path,
                    hub.clone(),
                ));
            }
            // Commands on the folder then need a stopped server; serving goes on.
            Err(error) => tracing::warn!(%error, "control socket unavailable"),
        }
        // The router's notes to facilitators; ends with the router, awaited with the groups.
        groups.spawn(escalation::staff::deliver(staff_line, hub.clone()));
        // Stops when the hub starts shutting down; shutdown waits for it with the groups.
        let retention = retention::start(hub.clone(), config.retention.clone(), &groups);
        // Stops when the hub starts shutting down; shutdown waits for a rewrite under way.
        compactor::start(hub.clone(), config.compact_delay, &groups);
        // After a storage fault: stops the hub once the disk takes writes again.
        groups.spawn(store_watch::watch(hub.clone(), config.data_dir.clone()));
        if let Some(node) = &cluster_node {
            // Accounts, grants and groups other nodes write, into this node's store.
            groups.spawn(cluster::node::mirror(node.clone(), hub.clone()));
            // This node's audit chain, copied into the cluster's stream.
            groups.spawn(cluster::audit_ship::run(node.clone(), hub.clone()));
            // Frames for this node's connections from groups served elsewhere.
            groups.spawn(cluster::remote::receive(node.clone(), hub.shutdown.clone()));
            // Lets go of the connections of nodes that are gone.
            groups.spawn(cluster::remote::sweep(node.clone(), hub.clone()));
            // Out of touch with the cluster: its connections go elsewhere.
            groups.spawn(cluster::presence::keep(node.clone(), hub.clone()));
            // The router: led by one node at a time, reached from every node.
            let (leading_tx, leading_rx) = tokio::sync::watch::channel(None);
            if let Some(dispatched) = dispatched {
                groups.spawn(cluster::router_node::dispatch(
                    node.clone(),
                    hub.clone(),
                    dispatched,
                    leading_rx,
                ));
            }
            groups.spawn(cluster::router_node::lead(
                node.clone(),
                hub.clone(),
                cluster::router_node::LeadSettings {
                    escalation: config.escalation.clone(),
                    limits: config.limits.clone(),
                    tracker: groups.clone(),
                    router_stop: router_stop.clone(),
                    proxy: cluster::remote::ProxySettings {
                        frames: config.outbox_capacity,
                        bytes: config.outbox_bytes,
                        drops: hub.metrics.outbox_drops.clone(),
                    },
                    replay: hub.replay.clone(),
                },
                leading_tx,
            ));
        }
        // Scheduled backups, if `[backup]` sets an interval.
        groups.spawn(backup_schedule::run(hub.clone(), config.backup.clone()));
        let accept = tokio::spawn(transport::accept_loop(listener, acceptor, hub.clone()));
        tracing::info!(%local_addr, tls = tls.is_some(), "peerhub accepting connections");
        Ok(Self {
            hub,
            groups,
            accept,
            router_stop,
            commit_thread,
            local_addr,
            base_url,
            tokens,
            tls,
            retention,
            data_dir: config.data_dir.clone(),
            kept_open: open,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL for links (`http://127.0.0.1:7070/`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Invites made at start (secrets: print them, never log them).
    pub fn start_tokens(&self) -> &StartTokens {
        &self.tokens
    }

    /// TLS details, when serving TLS.
    pub fn tls(&self) -> Option<&TlsSetup> {
        self.tls.as_ref()
    }

    /// The links to print at start: (what, URL).
    pub fn start_links(&self) -> Vec<(&'static str, String)> {
        let base = &self.base_url;
        let mut links = Vec::new();
        if let Some(token) = &self.tokens.admin {
            links.push((
                "first admin (single use, 24 h)",
                format!("{base}#invite={token}&staff=1"),
            ));
        }
        if let Some(token) = &self.tokens.demo_facilitator {
            links.push((
                "demo facilitator",
                format!(
                    "{base}#invite={token}&group={}&staff=1",
                    bootstrap::DEMO_GROUP
                ),
            ));
        }
        if let Some(token) = &self.tokens.demo_supervisor {
            links.push(("demo supervisor", format!("{base}#invite={token}&staff=1")));
        }
        if self.tokens.demo_facilitator.is_some() {
            links.push((
                "demo participant",
                format!("{base}#group={}", bootstrap::DEMO_GROUP),
            ));
        }
        links
    }

    /// The retention job (tests wait on its passes).
    pub fn retention(&self) -> &retention::RetentionHandle {
        &self.retention
    }

    /// The shared state (tests and admin tools).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        tokio::select! {
            _ = signal => {}
            _ = self.hub.shutdown.cancelled() => {}
        }
        self.shutdown().await;
    }

    /// Stops accepting, tells every client, lets group tasks finish what they hold,
    /// flushes and closes the store, and returns when all of that is done (so the
    /// data folder can be opened again at once).
    pub async fn shutdown(self) {
        let Self {
            hub,
            groups,
            accept,
            router_stop,
            commit_thread,
            data_dir,
            kept_open,
            ..
        } = self;
        hub.shutdown.cancel();
        let _ = accept.await;
        hub.connections.close();
        hub.connections.wait().await;
        hub.groups.close();
        router_stop.cancel();
        groups.close();
        groups.wait().await;
        if let Some(node) = &hub.cluster {
            // Other nodes let go of this node's connections now, not a TTL later.
            node.leave().await;
        }
        if let Some(fault) = hub.committer.fault() {
            // After a storage fault the store is not closed: sled's flusher can
            // spin on a log it cannot write, and nothing more can be made durable
            // anyway. The files hold what the last successful flush wrote, which
            // the next open recovers; the process exits (see `store_watch`).
            tracing::error!(
                fault = fault.as_str(),
                "peerhub stopped after a storage fault; the store is left as its last \
                 successful flush wrote it"
            );
            std::mem::forget(hub);
            drop(commit_thread);
            return;
        }
        if let Err(error) = hub.store.flush() {
            tracing::error!(%error, "final flush failed");
        }
        match last_holder(hub).await {
            Ok(hub) => {
                // Dropping the hub drops the last committer, which ends its thread;
                // the thread holds the last handle on the store.
                drop(hub);
                let _ = tokio::task::spawn_blocking(move || commit_thread.join()).await;
            }
            Err(_) => tracing::warn!(
                "the store stays open: something still holds the hub {}s after shutdown",
                LAST_HOLDER_WAIT.as_secs()
            ),
        }
        // Files the store made while serving (its snapshots) are owner-only whatever
        // the umask of a process that runs the hub as a library; `main` sets 077.
        if let Err(error) = file_modes::make_owner_only(&data_dir, &kept_open) {
            tracing::warn!(%error, "could not make the data folder owner-only");
        }
        tracing::info!("peerhub stopped");
    }
}

/// How long [`Server::shutdown`] waits for the last other holder of the hub.
const LAST_HOLDER_WAIT: Duration = Duration::from_secs(5);

/// The hub, once nothing else holds it. Every task that holds it is tracked and
/// has ended when this is called, but a clone can still be on its way to being
/// dropped (a blocking thread finishing an admin request, a task's last
/// `Drop`): a restart in the same process on a busy machine once met the store
/// still locked that way. Waiting here for the last holder, bounded, releases
/// the store in `shutdown` itself, not some time after it. Gives the hub back
/// after [`LAST_HOLDER_WAIT`] otherwise (logged).
async fn last_holder(mut hub: Arc<Hub>) -> Result<Hub, Arc<Hub>> {
    let deadline = tokio::time::Instant::now() + LAST_HOLDER_WAIT;
    loop {
        match Arc::try_unwrap(hub) {
            Ok(hub) => return Ok(hub),
            Err(held) if tokio::time::Instant::now() < deadline => {
                hub = held;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(held) => return Err(held),
        }
    }
}
