//! Configuration, in three layers and one result: a TOML file (`--config`), then
//! `PEERHUB_*` environment variables, then flags, each overriding the one before
//! ([`file`]: the schema and the merge; [`cli`]: the flags and commands), validated
//! into a [`Config`] with every refusal naming its key.

mod cli;
mod cluster;
pub mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::{
    cluster_settings, AuditCommand, AuditVerifyArgs, Cli, ClusterCommand, Command,
    EscalationCommand, EscalationStateArg, FolderOrCluster, GroupCommand, InviteRoleArg,
    RotaCommand, ServeArgs, Serving,
};

pub use cluster::ClusterSettings;

use crate::transport::tls::TlsSource;

/// Validated settings for one server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where sled keeps its files (created if missing).
    pub data_dir: PathBuf,
    /// TLS, or plain ws (loopback only).
    pub tls: Option<TlsSource>,
    /// Seed the demo group and print demo invites.
    pub demo: bool,
    /// Base URL printed in links, when the listen address is not what people use.
    pub public_url: Option<String>,
    /// Frames a connection's outbox holds before it is dropped as slow.
    pub outbox_capacity: usize,
    /// Bytes a connection's outbox holds before it is dropped as slow (1 MiB).
    pub outbox_bytes: usize,
    /// How long a connection may stay without logging in.
    pub auth_timeout: Duration,
    /// Distress escalation: deadlines, helplines, pager hook.
    pub escalation: crate::escalation::EscalationSettings,
    /// Rate limits and caps.
    pub limits: crate::limits::LimitSettings,
    /// The most the store keeps cached in memory.
    pub store_cache_bytes: u64,
    /// Browser origins allowed to open a WebSocket (besides the hub's own, which is
    /// always allowed). Clients that send no Origin (not browsers) are allowed.
    pub allowed_origins: Vec<String>,
    /// Serve `/metrics` to any address (default: to this machine only).
    pub metrics_public: bool,
    /// The bearer token `/metrics` asks for (a secret); `None`: none.
    pub metrics_token: Option<secrecy::SecretString>,
    /// A data folder open to group or others at start: refuse, or warn and start.
    pub open_to_others: crate::file_modes::OpenToOthers,
    /// From an ephemeral session's end to the store's rewrite (see `compactor`).
    pub compact_delay: std::time::Duration,
    /// Least time between the starts of two group commits (see
    /// `store::commit`): commits asked for meanwhile share the next flush.
    pub commit_interval: std::time::Duration,
    /// Reverse proxies whose header says who the client is (per-address limits
    /// then apply to the client, not to the proxy).
    pub trusted_proxies: crate::transport::forwarded::TrustedProxies,
    /// Serve the WebSocket conformance echo endpoint (tests/autobahn only; the
    /// hidden `--conformance-echo` flag, no file key).
    pub conformance_echo: bool,
    /// How long each kind of data is kept, and how often the job runs.
    pub retention: crate::retention::RetentionSettings,
    /// Phrases that nudge the facilitators towards a private check-in (§8.10).
    pub risk_phrases: Vec<String>,
    /// Scheduled backups.
    pub backup: crate::backup_schedule::BackupSettings,
    /// Free bytes on the data folder's disk below which new groups and members
    /// are refused (0: no watermark).
    pub store_min_free_bytes: u64,
    /// Which async runtime serves (the `runtime` key).
    pub runtime: RuntimeFlavor,
    /// The NATS cluster (the `[cluster]` keys); `None`: one node on sled.
    pub cluster: Option<ClusterSettings>,
}

/// Which async runtime the `peerhub` binary serves on (the `runtime` key).
///
/// On one CPU the work-stealing runtime has a single worker anyway, and the
/// current-thread runtime measured cheaper there: 9–18 % less CPU per post at
/// saturation, a third to a half fewer context switches, and in most runs a
/// sooner median delivery at a third to a half of saturation (docs/PERFORMANCE.md,
/// "Per-post overhead: changes measured"). With more CPUs only the work-stealing
/// runtime uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RuntimeFlavor {
    /// Current-thread when the process may run on one CPU only, else work-stealing.
    #[default]
    Auto,
    /// Tokio's work-stealing runtime, one worker per CPU the process may use.
    MultiThread,
    /// One thread runs every task (the blocking pool and the commit thread aside).
    CurrentThread,
}

impl RuntimeFlavor {
    /// `auto` resolved for a process that may use `cpus` CPUs.
    pub fn resolve(self, cpus: usize) -> Self {
        match self {
            Self::Auto if cpus <= 1 => Self::CurrentThread,
            Self::Auto => Self::MultiThread,
            chosen => chosen,
        }
    }

    /// As the config file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::MultiThread => "multi_thread",
            Self::CurrentThread => "current_thread",
        }
    }
}

impl std::str::FromStr for RuntimeFlavor {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "auto" => Ok(Self::Auto),
            "multi_thread" => Ok(Self::MultiThread),
            "current_thread" => Ok(Self::CurrentThread),
            _ => Err(()),
        }
    }
}

impl Config {
    /// Defaults for a data folder: plain ws, no demo.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            tls: None,
            demo: false,
            public_url: None,
            escalation: crate::escalation::EscalationSettings::default(),
            limits: crate::limits::LimitSettings::default(),
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            allowed_origins: Vec::new(),
            metrics_public: false,
            open_to_others: Default::default(),
            compact_delay: std::time::Duration::from_secs(60),
            commit_interval: crate::store::DEFAULT_COMMIT_INTERVAL,
            metrics_token: None,
            trusted_proxies: Default::default(),
            conformance_echo: false,
            outbox_capacity: 4096,
            outbox_bytes: 1024 * 1024,
            auth_timeout: crate::session::DEFAULT_AUTH_TIMEOUT,
            retention: crate::retention::RetentionSettings::default(),
            risk_phrases: crate::risk_phrases::DEFAULT_RISK_PHRASES
                .iter()
                .map(ToString::to_string)
                .collect(),
            backup: Default::default(),
            store_min_free_bytes: 256 * 1024 * 1024,
            runtime: RuntimeFlavor::Auto,
            cluster: None,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Plain ws on a non-loopback address.
    #[error(
        "refusing to serve plain ws:// on {0}: only loopback addresses may go without TLS. \
         Give --tls-cert and --tls-key, or --tls-self-signed, or listen on 127.0.0.1"
    )]
    PlainOnPublicAddress(SocketAddr),
    /// Half a certificate pair.
    #[error("--tls-cert and --tls-key go together")]
    HalfTlsPair,
    /// A pager URL that is not http(s) (the URL itself is a secret: not quoted).
    #[error("escalation.pager_url (--pager-url) must start with http:// or https://")]
    BadPagerUrl,
    /// The helplines file is unusable.
    #[error("escalation.helplines (--helplines) {0}: {1}")]
    Helplines(PathBuf, String),
    /// A zero deadline, rate or cap.
    #[error("{0} must be more than 0")]
    Zero(&'static str),
    /// The file, an environment variable or a flag is refused (the message names
    /// the key and where it came from).
    #[error("configuration: {0}")]
    File(String),
    /// Both TLS sources.
    #[error("choose either --tls-cert/--tls-key or --tls-self-signed, not both")]
    TwoTlsSources,
}

/// Refuses plain ws on any address but loopback.
pub fn check_listen(addr: SocketAddr, tls: bool) -> Result<(), ConfigError> {
    if tls || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ConfigError::PlainOnPublicAddress(addr))
    }
}
