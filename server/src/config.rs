//! Configuration: command-line flags (and `PEERHUB_*` environment variables) parsed
//! by clap, then validated into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
            outbox_capacity: 4096,
            outbox_bytes: 1024 * 1024,
            auth_timeout: crate::session::DEFAULT_AUTH_TIMEOUT,
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
    /// A pager URL that is not http(s).
    #[error("--pager-url must start with http:// or https://, not {0:?}")]
    BadPagerUrl(String),
    /// The helplines file is unusable.
    #[error("--helplines {0}: {1}")]
    Helplines(PathBuf, String),
    /// A zero deadline or rate.
    #[error("{0} must be more than 0")]
    ZeroDeadline(&'static str),
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

/// peerhub: a secure WebSocket hub for moderated peer-support groups.
///
/// With no command, serves, and the options below are for serving; a command
/// takes only its own options.
#[derive(Debug, Parser)]
#[command(name = "peerhub", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serving options.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Commands other than serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tools for the tamper-evident audit chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The on-call rota of a stopped server's data folder (a running server's rota
    /// is kept by an admin over the protocol).
    #[command(subcommand)]
    Rota(RotaCommand),
}

/// `peerhub rota ...`
#[derive(Debug, clap::Subcommand)]
pub enum RotaCommand {
    /// Print the rota as JSON: `[{"supervisor": KEY, "start_ms": .., "end_ms": ..,
    /// "level": 1|2}]`.
    List {
        /// Data folder of a stopped server.
        #[arg(long, env = "PEERHUB_DATA", value_name = "DIR")]
        data: PathBuf,
    },
    /// Replace the rota with the entries in a JSON file (same shape as `list`
    /// prints). Every entry must name a key holding the supervisor role. The change
    /// is signed with the hub's key and written to the audit chain.
    Set {
        /// Data folder of a stopped server.
        #[arg(long, env = "PEERHUB_DATA", value_name = "DIR")]
        data: PathBuf,
        /// The rota file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

/// `peerhub audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every entry of the audit chain: its place, its link to the entry
    /// before, its hash, and the signature of every envelope in it.
    ///
    /// Prints `audit chain OK: N entries, last hash H` and exits 0, or
    /// `audit chain BROKEN at entry S: reason` and exits 1. Exits 2 if the folder
    /// holds no store or cannot be opened, including while a server is running on
    /// it: stop the server first. Keep the printed last hash somewhere else; a
    /// later check that reports a different hash for the same entry count means
    /// the chain was rewritten.
    Verify(AuditVerifyArgs),
}

/// Options for `peerhub audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Data folder of a stopped server (the one given to --data when serving).
    #[arg(long, env = "PEERHUB_DATA", value_name = "DIR")]
    pub data: PathBuf,
}

/// Options for serving.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on. Plain ws is allowed only on loopback.
    #[arg(long, env = "PEERHUB_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Data folder (created if missing).
    #[arg(long, env = "PEERHUB_DATA", default_value = "peerhub-data")]
    pub data: PathBuf,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "PEERHUB_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "PEERHUB_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate kept in the data folder; its
    /// fingerprint is printed at start so clients can check it.
    #[arg(long, env = "PEERHUB_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Create a demo drop-in group and print invite links for every role.
    #[arg(long, env = "PEERHUB_DEMO")]
    pub demo: bool,
    /// Base URL for printed links (default: from the listen address).
    #[arg(long, env = "PEERHUB_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "PEERHUB_LOG_JSON")]
    pub log_json: bool,
    /// Helplines to signpost (JSON array of {name, contact, hours, nation,
    /// emergency}); default: UK emergency services and national helplines.
    #[arg(long, env = "PEERHUB_HELPLINES", value_name = "FILE")]
    pub helplines: Option<PathBuf>,
    /// POST a signed notice here at every escalation routing step (http or https).
    #[arg(long, env = "PEERHUB_PAGER_URL", value_name = "URL")]
    pub pager_url: Option<String>,
    /// The most the store keeps cached in memory, in MiB.
    #[arg(
        long,
        env = "PEERHUB_STORE_CACHE_MB",
        value_name = "MIB",
        default_value_t = 512
    )]
    pub store_cache_mb: u64,
    /// Messages per key per second, sustained (rate limit).
    #[arg(
        long,
        env = "PEERHUB_MESSAGES_PER_SECOND",
        value_name = "N",
        default_value_t = 5
    )]
    pub messages_per_second: u32,
    /// Messages per key in a burst.
    #[arg(
        long,
        env = "PEERHUB_MESSAGE_BURST",
        value_name = "N",
        default_value_t = 20
    )]
    pub message_burst: u32,
    /// Distress flags per key per minute (a flag over the limit is answered, never
    /// dropped).
    #[arg(
        long,
        env = "PEERHUB_FLAGS_PER_MINUTE",
        value_name = "N",
        default_value_t = 20
    )]
    pub flags_per_minute: u32,
    /// Other signed commands (controls, joins, ...) per key per second.
    #[arg(
        long,
        env = "PEERHUB_COMMANDS_PER_SECOND",
        value_name = "N",
        default_value_t = 5
    )]
    pub commands_per_second: u32,
    /// Apply per-address limits to loopback too (off: behind a local proxy every
    /// client arrives from 127.0.0.1).
    #[arg(long, env = "PEERHUB_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,
    /// Browser origin allowed to connect besides the hub's own (repeatable).
    #[arg(
        long = "allow-origin",
        env = "PEERHUB_ALLOW_ORIGIN",
        value_name = "ORIGIN"
    )]
    pub allow_origin: Vec<String>,
    /// Time for a supervisor to acknowledge an emergency flag, per routing level.
    #[arg(
        long,
        env = "PEERHUB_DEADLINE_EMERGENCY_MS",
        value_name = "MS",
        default_value_t = 60_000
    )]
    pub deadline_emergency_ms: u64,
    /// Time to acknowledge an urgent flag, per routing level.
    #[arg(
        long,
        env = "PEERHUB_DEADLINE_URGENT_MS",
        value_name = "MS",
        default_value_t = 180_000
    )]
    pub deadline_urgent_ms: u64,
    /// Time to acknowledge a concern, per routing level.
    #[arg(
        long,
        env = "PEERHUB_DEADLINE_CONCERN_MS",
        value_name = "MS",
        default_value_t = 900_000
    )]
    pub deadline_concern_ms: u64,
}

impl ServeArgs {
    /// Validates the flags.
    pub fn into_config(self) -> Result<(SocketAddr, Config), ConfigError> {
        let tls = match (self.tls_cert, self.tls_key, self.tls_self_signed) {
            (Some(_), Some(_), true) => return Err(ConfigError::TwoTlsSources),
            (Some(cert), Some(key), false) => Some(TlsSource::Files { cert, key }),
            (None, None, true) => {
                let mut hosts = vec!["localhost".to_string(), self.listen.ip().to_string()];
                hosts.dedup();
                Some(TlsSource::SelfSigned { hosts })
            }
            (None, None, false) => None,
            _ => return Err(ConfigError::HalfTlsPair),
        };
        check_listen(self.listen, tls.is_some())?;
        let mut config = Config::new(self.data);
        config.tls = tls;
        config.demo = self.demo;
        config.public_url = self.public_url;
        if let Some(url) = &self.pager_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::BadPagerUrl(url.clone()));
            }
        }
        for (name, ms) in [
            ("--deadline-emergency-ms", self.deadline_emergency_ms),
            ("--deadline-urgent-ms", self.deadline_urgent_ms),
            ("--deadline-concern-ms", self.deadline_concern_ms),
        ] {
            if ms == 0 {
                return Err(ConfigError::ZeroDeadline(name));
            }
        }
        if let Some(path) = &self.helplines {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Helplines(path.clone(), e.to_string()))?;
            let helplines: Vec<peerhub_protocol::escalation::Helpline> =
                serde_json::from_str(&text)
                    .map_err(|e| ConfigError::Helplines(path.clone(), e.to_string()))?;
            if helplines.is_empty() {
                return Err(ConfigError::Helplines(
                    path.clone(),
                    "lists no helpline".into(),
                ));
            }
            config.escalation.helplines = helplines;
        }
        for (name, n) in [
            ("--messages-per-second", self.messages_per_second),
            ("--message-burst", self.message_burst),
            ("--flags-per-minute", self.flags_per_minute),
            ("--commands-per-second", self.commands_per_second),
        ] {
            if n == 0 {
                return Err(ConfigError::ZeroDeadline(name));
            }
        }
        config.store_cache_bytes = self.store_cache_mb.max(1) * 1024 * 1024;
        config.limits.messages_per_second = self.messages_per_second;
        config.limits.message_burst = self.message_burst;
        config.limits.flags_per_minute = self.flags_per_minute;
        config.limits.commands_per_second = self.commands_per_second;
        config.limits.limit_loopback = self.limit_loopback;
        config.allowed_origins = self.allow_origin;
        config.escalation.pager_url = self.pager_url;
        config.escalation.emergency_deadline = Duration::from_millis(self.deadline_emergency_ms);
        config.escalation.urgent_deadline = Duration::from_millis(self.deadline_urgent_ms);
        config.escalation.concern_deadline = Duration::from_millis(self.deadline_concern_ms);
        Ok((self.listen, config))
    }
}
