//! Every stream and bucket peerhub keeps in NATS, in one list: `peerhub cluster
//! check` opens and reports each, `peerhub backup` copies each and `peerhub
//! restore` recreates each. A store added to the hub is added here, or the
//! check, the backup and the backup test (which compares this list with the
//! streams running nodes made) all miss it.

use super::{ClusterError, Nats};
use crate::clock::Clock;
use crate::config::ClusterSettings;

/// One of peerhub's streams or buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterStore {
    /// `peerhub_leases`: which node runs each group, and the router.
    Leases,
    /// `PEERHUB_LOG`: every group's log, and the router's.
    Log,
    /// `peerhub_directory`: accounts, roles, invites, groups, members, counters.
    Directory,
    /// `peerhub_group_state`: group snapshots.
    Snapshots,
    /// `peerhub_escalations`: the escalation queue.
    Escalations,
    /// `PEERHUB_STEPS`: escalation routing steps.
    Steps,
    /// `PEERHUB_AUDIT`: the cluster's audit chain.
    Audit,
}

impl ClusterStore {
    /// Every one, in the order the check reports them and a backup holds them.
    pub const ALL: [Self; 7] = [
        Self::Leases,
        Self::Log,
        Self::Directory,
        Self::Snapshots,
        Self::Escalations,
        Self::Steps,
        Self::Audit,
    ];

    /// Its JetStream stream's name (a bucket's is `KV_<bucket>`), as the code
    /// that opens it names it by default.
    pub fn stream(self) -> String {
        let bucket = |name: String| format!("KV_{name}");
        match self {
            Self::Leases => bucket(super::lease::LeaseConfig::default().bucket),
            Self::Log => super::log::LogConfig::default().stream,
            Self::Directory => bucket(super::directory::DirectoryConfig::default().bucket),
            Self::Snapshots => bucket(super::snapshot::SnapshotConfig::default().bucket),
            Self::Escalations => bucket(super::escalations::QueueConfig::default().bucket),
            Self::Steps => super::dedupe::StepsConfig::default().stream,
            Self::Audit => super::audit::AuditConfig::default().stream,
        }
    }

    /// Whether values replaced or erased in it must be overwritten (an
    /// erasure, a replaced snapshot): such a bucket is unfit if it denies
    /// message deletes (`cluster check`).
    pub fn must_erase(self) -> bool {
        matches!(self, Self::Directory | Self::Snapshots)
    }

    /// What peerhub keeps in it, in words.
    pub fn holds(self) -> &'static str {
        match self {
            Self::Leases => "leases: which node runs each group, and the router",
            Self::Log => "group logs: every message and event",
            Self::Directory => {
                "the directory: accounts, roles, invites, groups, members, replay counters"
            }
            Self::Snapshots => "group snapshots",
            Self::Escalations => "the escalation queue",
            Self::Steps => "escalation routing steps",
            Self::Audit => "the audit record: every node's chain",
        }
    }

    /// Opens it, creating it with `settings.replicas` copies if it is missing.
    pub async fn open(self, nats: &Nats, settings: &ClusterSettings) -> Result<(), ClusterError> {
        let replicas = settings.replicas;
        match self {
            Self::Leases => {
                let config = super::lease::LeaseConfig {
                    replicas,
                    ttl: settings.lease_ttl,
                    ..Default::default()
                };
                super::lease::Leases::open(nats, &config, Clock::system())
                    .await
                    .map(drop)
            }
            Self::Log => {
                let config = super::log::LogConfig {
                    replicas,
                    ..Default::default()
                };
                super::log::GroupLogs::open(nats, &config).await.map(drop)
            }
            Self::Directory => {
                let config = super::directory::DirectoryConfig {
                    replicas,
                    ..Default::default()
                };
                super::directory::Directory::open(nats, &config)
                    .await
                    .map(drop)
            }
            Self::Snapshots => {
                let config = super::snapshot::SnapshotConfig {
                    replicas,
                    ..Default::default()
                };
                super::snapshot::Snapshots::open(nats, &config)
                    .await
                    .map(drop)
            }
            Self::Escalations => {
                let config = super::escalations::QueueConfig {
                    replicas,
                    ..Default::default()
                };
                super::escalations::EscalationQueue::open(nats, &config)
                    .await
                    .map(drop)
            }
            Self::Steps => {
                let config = super::dedupe::StepsConfig {
                    replicas,
                    ..Default::default()
                };
                super::dedupe::Steps::open(nats, &config).await.map(drop)
            }
            Self::Audit => {
                let config = super::audit::AuditConfig {
                    replicas,
                    ..Default::default()
                };
                super::audit::ClusterAudit::open(nats, &config)
                    .await
                    .map(drop)
            }
        }
    }

    /// Whether a stream's name is one peerhub would use (`PEERHUB_*`,
    /// `KV_peerhub_*`), listed here or not.
    pub fn looks_like_peerhub(stream: &str) -> bool {
        stream.starts_with("PEERHUB_") || stream.starts_with("KV_peerhub_")
    }
}
