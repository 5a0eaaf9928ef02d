//! This process as a node of a cluster (docs/CLUSTER.md): its NATS connection and
//! the cluster's stores the hub uses, opened once at start-up and shared by the
//! tasks that need them (the group registry, the sessions, the mirror).
//!
//! Absent on one node: the hub's `cluster` is `None` and nothing here runs.

use std::time::Duration;

use super::directory::{Directory, DirectoryConfig};
use super::lease::{LeaseConfig, Leases};
use super::log::{GroupLogs, LogConfig};
use super::snapshot::{SnapshotConfig, Snapshots};
use super::{ClusterError, Nats};
use crate::clock::Clock;
use crate::config::ClusterSettings;

/// How long one NATS request (a JetStream call, a publish's acknowledgement) may
/// take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long start-up keeps trying to open the cluster's streams and buckets.
pub const OPEN_PATIENCE: Duration = Duration::from_secs(30);

/// The cluster as this node sees it.
#[derive(Debug)]
pub struct ClusterNode {
    /// The `[cluster]` settings.
    pub settings: ClusterSettings,
    /// This run's name in leases and logs: the node's name and a random part, so
    /// a node restarted under the same name never takes its predecessor's leases
    /// for its own.
    pub holder: String,
    /// The connection.
    pub nats: Nats,
    /// Group and router leases.
    pub leases: Leases,
    /// The group logs (trimmed behind snapshots: `super::trim`).
    pub logs: GroupLogs,
    /// Accounts, roles, invites, groups, counters.
    pub directory: Directory,
    /// Frames and connections between this node and the others.
    pub relay: super::remote::Relay,
    /// This node's presence lease (`node-<holder>`), kept while it runs: owners
    /// let go of the proxies of a node whose presence ran out.
    presence: std::sync::Mutex<Option<super::lease::LeaseKeeper>>,
    /// Whether this node is in touch with the cluster: its presence lease held
    /// ([`super::presence`]). False from the moment it ran out until it is
    /// taken again; meanwhile the node serves nobody.
    in_touch: tokio::sync::watch::Sender<bool>,
}

impl ClusterNode {
    /// Connects and opens (creating where missing) every stream and bucket the hub
    /// uses, with `settings.replicas` copies. A cluster that is electing a leader
    /// or busy answers late: opening is tried again for up to [`OPEN_PATIENCE`].
    pub async fn open(settings: &ClusterSettings, clock: Clock) -> Result<Self, ClusterError> {
        let until = tokio::time::Instant::now() + OPEN_PATIENCE;
        loop {
            match Self::open_once(settings, clock.clone()).await {
                Err(error @ (ClusterError::Setup { .. } | ClusterError::Unavailable { .. }))
                    if tokio::time::Instant::now() < until =>
                {
                    tracing::warn!(%error, "opening the cluster's streams; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                opened => return opened,
            }
        }
    }

    async fn open_once(settings: &ClusterSettings, clock: Clock) -> Result<Self, ClusterError> {
        let nats = Nats::connect_with(settings, "hub", REQUEST_TIMEOUT).await?;
        let replicas = settings.replicas;
        let leases = Leases::open(
            &nats,
            &LeaseConfig {
                replicas,
                ttl: settings.lease_ttl,
                ..Default::default()
            },
            clock,
        )
        .await?;
        let snapshots = Snapshots::open(
            &nats,
            &SnapshotConfig {
                replicas,
                ..Default::default()
            },
        )
        .await?;
        let logs = GroupLogs::open(
            &nats,
            &LogConfig {
                replicas,
                ..Default::default()
            },
        )
        .await?
        .with_snapshots(snapshots);
        let directory = Directory::open(
            &nats,
            &DirectoryConfig {
                replicas,
                ..Default::default()
            },
        )
        .await?
        .with_group_logs(logs.clone());
        let mut run = [0u8; 4];
        getrandom::fill(&mut run).map_err(|error| ClusterError::Connect(error.to_string()))?;
        let holder = format!("{}-{}", settings.node_name, hex::encode(run));
        let presence = leases
            .acquire(&Self::presence_lease(&holder), &holder)
            .await?;
        let presence = leases.keep(presence);
        Ok(Self {
            holder,
            presence: std::sync::Mutex::new(Some(presence)),
            in_touch: tokio::sync::watch::Sender::new(true),
            settings: settings.clone(),
            nats,
            leases,
            logs,
            directory,
            relay: Default::default(),
        })
    }

    /// A node's presence lease key.
    pub fn presence_lease(holder: &str) -> String {
        format!("node-{holder}")
    }

    /// Whether node `holder` is still there: its presence lease held and not
    /// run out. `None` when NATS could not say.
    pub async fn is_present(&self, holder: &str) -> Option<bool> {
        match self.leases.current(&Self::presence_lease(holder)).await {
            Ok(Some((value, _))) => {
                Some(value.holder == holder && value.deadline_ms > Clock::system().now_ms())
            }
            Ok(None) => Some(false),
            Err(_) => None,
        }
    }

    /// Whether this node is in touch with the cluster now (see
    /// [`super::presence`]).
    pub fn is_in_touch(&self) -> bool {
        *self.in_touch.borrow()
    }

    /// Follows whether this node is in touch with the cluster: a connection
    /// ends when it turns false.
    pub fn in_touch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.in_touch.subscribe()
    }

    /// Says whether this node is in touch (`super::presence` only).
    pub(super) fn set_in_touch(&self, in_touch: bool) {
        self.in_touch.send_replace(in_touch);
    }

    /// The presence lease's state, while the node has not left.
    pub(super) fn presence_state(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<super::lease::LeaseState>> {
        self.presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(super::lease::LeaseKeeper::watch)
    }

    /// Keeps `keeper` as the presence lease taken again; `false` (and the lease
    /// released) when the node left meanwhile.
    pub(super) async fn replace_presence(&self, keeper: super::lease::LeaseKeeper) -> bool {
        let refused = {
            let mut presence = self.presence.lock().unwrap_or_else(|p| p.into_inner());
            match presence.as_mut() {
                Some(held) => {
                    *held = keeper;
                    None
                }
                None => Some(keeper),
            }
        };
        match refused {
            Some(keeper) => {
                let _ = keeper.release().await;
                false
            }
            None => true,
        }
    }

    /// Gives up this node's presence (a clean stop), so owners let go of its
    /// connections' proxies at once.
    pub async fn leave(&self) {
        let presence = self
            .presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(presence) = presence {
            let _ = presence.release().await;
        }
    }

    /// The lock for `group` on this node (made on first use): taking a group
    /// and bringing this node's copy of it up to its log happen one at a time
    /// (`GroupLogs::group_lock`, shared with the directory's export reads).
    pub fn group_lock(
        &self,
        group: &peerhub_protocol::GroupId,
    ) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.logs.group_lock(group.as_str())
    }

    /// The lease of the node running the cluster's periodic jobs on groups no
    /// node serves (retention's pass over them).
    pub const JOBS_LEASE: &'static str = "jobs";

    /// A group's lease key.
    pub fn group_lease(group: &peerhub_protocol::GroupId) -> String {
        format!("group-{group}")
    }
}

/// Follows the directory into this node's store until the hub stops
/// (`super::mirror`). A value the mirror must not skip stops the node: serving
/// on would trust whatever the unread value changed (a revoked grant, say).
pub async fn mirror(node: std::sync::Arc<ClusterNode>, hub: std::sync::Arc<crate::hub::Hub>) {
    let stop = hub.shutdown.clone();
    let parts = super::mirror::NodeParts {
        audit: &hub.audit,
        clock: &hub.clock,
    };
    if let Err(error) =
        super::mirror::run_for_hub(&node.directory, &hub.store, Some(parts), stop).await
    {
        tracing::error!(%error, "directory mirror stopped: this node stops serving");
        hub.shutdown.cancel();
    }
}
