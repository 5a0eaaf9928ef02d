//! The command line: serving flags (the top layer of the configuration) and the
//! commands other than serving.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use figment::Figment;

use super::file::{self, FileSettings};
use super::{Config, ConfigError};

const ENV_HELP: &str = "Configuration comes from, lowest first: built-in defaults, the TOML \
file given by --config (or PEERHUB_CONFIG), environment variables, then these flags. Every \
key of the file has an environment variable: PEERHUB_ and the key's path in capitals with \
_ for . (limits.messages_per_second is PEERHUB_LIMITS_MESSAGES_PER_SECOND; lists are \
comma-separated). peerhub.example.toml lists every key with its default and meaning. \
Unknown keys and variables are refused by name. --check-config prints the result.";

/// peerhub: a secure WebSocket hub for moderated peer-support groups.
///
/// With no command, serves, and the options below are for serving; a command
/// takes only its own options.
#[derive(Debug, Parser)]
#[command(name = "peerhub", version, about, long_about = None, after_help = ENV_HELP)]
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
    /// Write a consistent copy of the whole store to a file, from a running
    /// server (through the data folder's control socket) or a stopped one. Prints
    /// the entry count, the store's digest and its content digest (which leaves
    /// out the audit entries of backups, exports and listings: equal content
    /// digests mean nothing changed between two backups; docs/FORMATS.md); the
    /// copy is audited. A cluster: `--config` with a node's `[cluster]` section
    /// copies every peerhub stream and bucket from NATS while the nodes serve
    /// (docs/CLUSTER.md §8).
    Backup {
        /// One node's data folder, or a cluster's configuration.
        #[command(flatten)]
        at: FolderOrCluster,
        /// The backup file to create (refused if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a backup into a new data folder (refused if the folder holds a
    /// store), check it against the digest it recorded, and print the digest.
    /// Start the server on the folder afterwards. A cluster's backup: `--config`
    /// with a node's `[cluster]` section recreates every stream and bucket in a
    /// NATS cluster that holds none of them; start the nodes afterwards on fresh
    /// data folders.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// One node's (new) data folder, or a cluster's configuration.
        #[command(flatten)]
        at: FolderOrCluster,
    },
    /// Make a single-use invite link for a facilitator, supervisor, admin, or a
    /// member of a virtual group; printed once, never logged.
    Invite {
        /// The hub's data folder (the server may be running).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// What it grants.
        #[arg(long, value_enum)]
        role: InviteRoleArg,
        /// For a member invite: the virtual group; for a facilitator invite: the
        /// group it grants (needed).
        #[arg(long, value_name = "GROUP", allow_hyphen_values = true)]
        group: Option<String>,
        /// Hours it stays valid (1 to 720).
        #[arg(long, value_name = "HOURS", default_value_t = 24)]
        hours: u64,
        /// The hub's public URL, to print the link (default: the token alone).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
    },
    /// Grant a facilitator's key standing in one group, or revoke it (--revoke);
    /// the server may be running (a revoke takes effect on live connections).
    /// Signed with the hub's key and audited.
    Grant {
        /// The hub's data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The facilitator's public key (base64url).
        #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
        key: String,
        /// The group.
        #[arg(long, value_name = "GROUP", allow_hyphen_values = true)]
        group: String,
        /// Take the grant away instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Cluster mode on NATS JetStream (docs/CLUSTER.md).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The escalation queue, for the day something goes wrong: list it, or
    /// resolve one; the server may be running (the router does it) or stopped.
    /// Signed with the hub's key and audited.
    #[command(subcommand)]
    Escalation(EscalationCommand),
    /// Erase one person's personal data from a STOPPED server's data folder: their
    /// messages become tombstones (seqs kept), their display names and signed joins
    /// are removed, their account goes, and the audit chain keeps its entries with
    /// a pseudonym in place of the key. Safeguarding records (escalations, the
    /// facilitators' notes in records) are kept until retention deletes them.
    /// Audited (`admin.erase`). Then the store is rewritten (compacted) so the
    /// erased bytes leave the data folder. Prints what it changed as JSON.
    Erase {
        /// The hub's data folder (stop the server first).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The person's public key (base64url).
        #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
        key: String,
    },
    /// Print everything the hub holds about one key as JSON: the person's own
    /// messages (with their signatures), memberships, records, escalations as they
    /// may see them, and audit entries. The export itself is audited.
    Export {
        /// The hub's data folder (the server may be running).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The person's public key (base64url).
        #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
        key: String,
    },
}

/// A group kind, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupKindArg {
    /// Open door while a session runs; pseudonymous.
    DropIn,
    /// Scheduled sessions for invited members.
    Virtual,
}

impl From<GroupKindArg> for peerhub_protocol::payload::GroupKind {
    fn from(kind: GroupKindArg) -> Self {
        match kind {
            GroupKindArg::DropIn => Self::DropIn,
            GroupKindArg::Virtual => Self::Virtual,
        }
    }
}

/// `START/END` in RFC 3339 → a session window.
fn parse_window(text: &str) -> Result<peerhub_protocol::payload::SessionWindow, String> {
    let (start, end) = text
        .split_once('/')
        .ok_or("expected START/END, e.g. 2026-12-01T18:00:00Z/2026-12-01T19:30:00Z")?;
    let ms = |t: &str| -> Result<u64, String> {
        let at = humantime::parse_rfc3339_weak(t.trim()).map_err(|e| format!("{t}: {e}"))?;
        let since = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("{t}: before 1970"))?;
        Ok(since.as_millis() as u64)
    };
    let window = peerhub_protocol::payload::SessionWindow {
        start_ms: ms(start)?,
        end_ms: ms(end)?,
    };
    if window.end_ms <= window.start_ms {
        return Err(format!("{text}: the window must end after it starts"));
    }
    Ok(window)
}

/// A role an invite grants, as the command line spells it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum InviteRoleArg {
    /// Creates groups, invites people, keeps the rota.
    Admin,
    /// A peer worker who runs sessions.
    Facilitator,
    /// Receives escalations.
    Supervisor,
    /// A member of one virtual group (needs --group).
    Member,
}

impl From<InviteRoleArg> for peerhub_protocol::payload::InviteRole {
    fn from(role: InviteRoleArg) -> Self {
        match role {
            InviteRoleArg::Admin => Self::Admin,
            InviteRoleArg::Facilitator => Self::Facilitator,
            InviteRoleArg::Supervisor => Self::Supervisor,
            InviteRoleArg::Member => Self::Member,
        }
    }
}

/// `peerhub group ...`
/// Where `backup` and `restore` work: one node's data folder, or a cluster
/// (exactly one of the two).
#[derive(Debug, Args)]
pub struct FolderOrCluster {
    /// The data folder (one node): the hub's for a backup, a new one for a
    /// restore.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub data: Option<PathBuf>,
    /// A cluster node's configuration file (its `[cluster]` section; the
    /// `PEERHUB_*` variables apply over it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group, as an admin would over the protocol; the server may be
    /// running. The request is signed with the hub's key and audited.
    Create {
        /// The hub's data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Its id: a-z, 0-9 and -.
        #[arg(long, value_name = "ID", allow_hyphen_values = true)]
        id: String,
        /// Its title, shown to members.
        #[arg(long, allow_hyphen_values = true)]
        title: String,
        /// Drop-in (open door while a session runs, pseudonymous) or virtual
        /// (invited members).
        #[arg(long, value_enum, default_value_t = GroupKindArg::DropIn)]
        kind: GroupKindArg,
        /// A file holding the group agreement people accept before speaking.
        #[arg(long, value_name = "FILE")]
        agreement: Option<PathBuf>,
        /// A code people need to join (drop-in groups).
        #[arg(long, value_name = "CODE")]
        access_code: Option<String>,
        /// Let people in without a facilitator admitting each one.
        #[arg(long)]
        no_waiting_room: bool,
        /// Keep the conversation this many days (default: the hub's retention).
        #[arg(long, value_name = "DAYS", conflicts_with = "ephemeral")]
        history_days: Option<u32>,
        /// Keep nothing once a session ends.
        #[arg(long)]
        ephemeral: bool,
        /// A session window, START/END in RFC 3339 (2026-12-01T18:00:00Z/2026-12-01T19:30:00Z);
        /// repeatable.
        #[arg(long = "window", value_name = "START/END", value_parser = parse_window)]
        windows: Vec<peerhub_protocol::payload::SessionWindow>,
    },
    /// Replace a group's session windows; the server may be running (members are
    /// told at once). Audited.
    Schedule {
        /// The hub's data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Which group.
        #[arg(long, value_name = "ID", allow_hyphen_values = true)]
        group: String,
        /// A window, START/END in RFC 3339; repeatable. None: clear the schedule.
        #[arg(long = "window", value_name = "START/END", value_parser = parse_window)]
        windows: Vec<peerhub_protocol::payload::SessionWindow>,
    },
    /// Clear a group's waiting room: everyone who only ever waited (never
    /// admitted, not declined this session) is forgotten, and those connected are
    /// told and may knock again. The server may be running. Audited
    /// (`group.clear_waiting`). Prints how many left.
    ClearWaiting {
        /// The hub's data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Which group.
        #[arg(value_name = "GROUP", allow_hyphen_values = true)]
        group: String,
    },
    /// Print every group as JSON (id, title, kind, schedule, retention, whether a
    /// session is open); the server may be running.
    List {
        /// The hub's data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

/// Which escalations `peerhub escalation list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EscalationStateArg {
    /// Open or acknowledged (the default).
    Unresolved,
    /// Waiting to be acknowledged.
    Open,
    /// Acknowledged, not yet resolved.
    Acknowledged,
    /// Resolved.
    Resolved,
    /// Every one still kept.
    All,
}

impl From<EscalationStateArg> for crate::admin::escalations::EscalationFilter {
    fn from(state: EscalationStateArg) -> Self {
        match state {
            EscalationStateArg::Unresolved => Self::Unresolved,
            EscalationStateArg::Open => Self::Open,
            EscalationStateArg::Acknowledged => Self::Acknowledged,
            EscalationStateArg::Resolved => Self::Resolved,
            EscalationStateArg::All => Self::All,
        }
    }
}

/// `peerhub escalation ...`
#[derive(Debug, Subcommand)]
pub enum EscalationCommand {
    /// Print escalations as JSON summaries: id, group, severity, status, level,
    /// age_s, created_ms, handler. Never a flag's words, who raised it, who it is
    /// about, or the context. Unresolved ones by risk, then resolved ones newest
    /// first. Audited (`admin.escalation_list`).
    List {
        /// The hub's data folder (the server may be running).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Every escalation still kept, resolved ones too (same as --state all).
        #[arg(long, conflicts_with = "state")]
        all: bool,
        /// Which: unresolved (default), open, acknowledged, resolved, all.
        #[arg(long, value_enum)]
        state: Option<EscalationStateArg>,
        /// Show at most this many (1 to 10000).
        #[arg(long, value_name = "N", default_value_t = 200)]
        limit: usize,
    },
    /// Resolve escalation ID with an outcome, as its supervisor would: the people
    /// a supervisor's resolve tells are told (on a running hub), and it is audited
    /// (`escalation.resolve`, signed with the hub's key). An unknown or already
    /// resolved ID is refused and nothing changes.
    Resolve {
        /// The hub's data folder (the server may be running).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The escalation's id (from `peerhub escalation list`).
        #[arg(value_name = "ID")]
        id: u64,
        /// What was done, in words (required).
        #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
        outcome: String,
    },
}

/// `peerhub rota ...`
#[derive(Debug, clap::Subcommand)]
pub enum RotaCommand {
    /// Print the rota as JSON: `[{"supervisor": KEY, "start_ms": .., "end_ms": ..,
    /// "level": 1|2}]`.
    List {
        /// Data folder of a stopped server, or of a running cluster node (its
        /// router's leader answers; a running one-node hub's rota is kept in the
        /// client).
        #[arg(long, env = "PEERHUB_DATA", value_name = "DIR")]
        data: PathBuf,
    },
    /// Replace the rota with the entries in a JSON file (same shape as `list`
    /// prints). Every entry must name a key holding the supervisor role. The change
    /// is signed with the hub's key and written to the audit chain.
    Set {
        /// Data folder of a stopped server, or of a running cluster node (its
        /// router's leader answers; a running one-node hub's rota is kept in the
        /// client).
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
    ///
    /// With `--cluster`, checks instead every node's chain as shipped into the
    /// cluster's `PEERHUB_AUDIT` stream (NATS alone: the nodes may be running or
    /// not), one line per chain; exits 0 if every chain is intact, 1 if any is
    /// broken, 2 if NATS or the stream cannot be reached.
    Verify(AuditVerifyArgs),
}

/// `peerhub cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Check the NATS cluster the `[cluster]` keys name, and make it ready: each
    /// server reachable with this node's credentials, nats-server 2.9.21 or later,
    /// JetStream on; every stream and bucket peerhub keeps created with
    /// `cluster.replicas` copies, and reported with its leader and how many copies
    /// are current. Prints the report as JSON; exit 0 all fit, 1 not, 2 the
    /// configuration is refused.
    Check {
        /// The TOML configuration file (the `PEERHUB_*` variables apply over it).
        #[arg(long, env = "PEERHUB_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

impl ClusterCommand {
    /// The `[cluster]` settings from the file and the process's environment.
    pub fn settings(&self) -> Result<super::ClusterSettings, ConfigError> {
        let Self::Check { config } = self;
        cluster_settings(config.as_deref())
    }
}

/// The `[cluster]` settings from the configuration file `config` and the
/// process's environment; refused when they name no NATS server.
pub fn cluster_settings(
    config: Option<&std::path::Path>,
) -> Result<super::ClusterSettings, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (_, config) = file::load(config, &env, Figment::new())?.validate()?;
    config.cluster.ok_or_else(|| {
        ConfigError::File(
            "cluster.nats_urls is empty: name the NATS servers in [cluster] (or \
             PEERHUB_CLUSTER_NATS_URLS)"
                .into(),
        )
    })
}

/// Options for `peerhub audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Data folder of a stopped server (the one given to --data when serving).
    #[arg(
        long,
        env = "PEERHUB_DATA",
        value_name = "DIR",
        required_unless_present = "cluster"
    )]
    pub data: Option<PathBuf>,
    /// Check every chain in the cluster's audit stream instead, reached with the
    /// `[cluster]` keys of --config (no data folder is read).
    #[arg(long)]
    pub cluster: bool,
    /// With --cluster: the TOML configuration file (the `PEERHUB_*` variables
    /// apply over it).
    #[arg(long, env = "PEERHUB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl AuditVerifyArgs {
    /// The `[cluster]` settings for `--cluster`, from the file and the
    /// process's environment.
    pub fn cluster_settings(&self) -> Result<super::ClusterSettings, ConfigError> {
        ClusterCommand::Check {
            config: self.config.clone(),
        }
        .settings()
    }
}

/// Options for serving. Each flag overrides the file key named in its help; a
/// flag left out leaves the file's (or the environment's) value alone.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The TOML configuration file (see peerhub.example.toml).
    #[arg(long, env = "PEERHUB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the configuration that would be used (secrets hidden) and exit: 0 if
    /// it is valid, 2 if not.
    #[arg(long)]
    pub check_config: bool,
    /// Address and port to listen on; plain ws only on loopback [key: listen;
    /// default 127.0.0.1:7070].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Data folder, created if missing [key: data; default peerhub-data].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// TLS certificate chain, PEM [key: tls.cert].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, PEM [key: tls.key].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate kept in the data folder; its
    /// fingerprint is printed at start [key: tls.self_signed].
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Create a demo drop-in group and print invite links for every role [key:
    /// demo].
    #[arg(long)]
    pub demo: bool,
    /// Base URL for printed links [key: public_url; default from --listen].
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Log as JSON lines [key: log_json].
    #[arg(long)]
    pub log_json: bool,
    /// Helplines to signpost: a JSON array of {name, contact, hours, nation,
    /// emergency} [key: escalation.helplines; default UK services].
    #[arg(long, value_name = "FILE")]
    pub helplines: Option<PathBuf>,
    /// POST a signed, content-free notice here at every escalation routing step
    /// (a secret: never printed) [key: escalation.pager_url].
    #[arg(long, value_name = "URL")]
    pub pager_url: Option<String>,
    /// Memory the store may use as cache, MiB [key: store.cache_mb; default 512].
    #[arg(long, value_name = "MIB")]
    pub store_cache_mb: Option<u64>,
    /// Messages per key per second [key: limits.messages_per_second; default 5].
    #[arg(long, value_name = "N")]
    pub messages_per_second: Option<u32>,
    /// Messages per key in a burst [key: limits.message_burst; default 20].
    #[arg(long, value_name = "N")]
    pub message_burst: Option<u32>,
    /// Distress flags per key per minute; a flag over the limit is answered, never
    /// dropped [key: limits.flags_per_minute; default 20].
    #[arg(long, value_name = "N")]
    pub flags_per_minute: Option<u32>,
    /// Other signed commands per key per second [key: limits.commands_per_second;
    /// default 5].
    #[arg(long, value_name = "N")]
    pub commands_per_second: Option<u32>,
    /// Apply per-address limits to loopback too (off: behind a local proxy every
    /// client arrives from 127.0.0.1; list the proxy with --trusted-proxy instead)
    /// [key: limits.limit_loopback].
    #[arg(long)]
    pub limit_loopback: bool,
    /// A browser origin allowed to connect besides the hub's own; repeatable
    /// [key: allow_origins].
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// A reverse proxy (address or block) whose client-address header is believed;
    /// repeatable [key: trusted_proxies].
    #[arg(long = "trusted-proxy", value_name = "ADDRESS[/BITS]")]
    pub trusted_proxy: Vec<String>,
    /// Time to acknowledge an emergency, per routing level [key:
    /// escalation.emergency_deadline_ms; default 60000].
    #[arg(long, value_name = "MS")]
    pub deadline_emergency_ms: Option<u64>,
    /// Time to acknowledge an urgent flag [key: escalation.urgent_deadline_ms;
    /// default 180000].
    #[arg(long, value_name = "MS")]
    pub deadline_urgent_ms: Option<u64>,
    /// Time to acknowledge a concern [key: escalation.concern_deadline_ms; default
    /// 900000].
    #[arg(long, value_name = "MS")]
    pub deadline_concern_ms: Option<u64>,
    /// Serve /metrics to any address, not only to this machine [key:
    /// metrics.public].
    #[arg(long)]
    pub metrics_public: bool,
    /// Serve an echo endpoint for the WebSocket conformance suite (tests/autobahn).
    /// Hidden, and a flag only (no file key or variable): never for a deployment.
    #[arg(long, hide = true)]
    pub conformance_echo: bool,
}

/// What serving needs, validated.
#[derive(Debug)]
pub struct Serving {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The server's configuration.
    pub config: Config,
    /// Log as JSON lines.
    pub log_json: bool,
    /// The merged settings (for `--check-config`; print with [`FileSettings::redacted`]).
    pub settings: FileSettings,
}

impl ServeArgs {
    /// The flags given, as a layer over the file and the environment.
    fn layer(&self) -> Figment {
        let mut layer = Figment::new();
        let mut set = |key: &'static str, value: figment::value::Value| {
            let name = format!("the command line (the flag for {key})");
            layer = std::mem::take(&mut layer).merge(file::Named { name, key, value });
        };
        use figment::value::Value;
        let path = |p: &PathBuf| Value::from(p.to_string_lossy().into_owned());
        if let Some(v) = self.listen {
            set("listen", Value::from(v.to_string()));
        }
        if let Some(v) = &self.data {
            set("data", path(v));
        }
        if let Some(v) = &self.tls_cert {
            set("tls.cert", path(v));
        }
        if let Some(v) = &self.tls_key {
            set("tls.key", path(v));
        }
        for (given, key) in [
            (self.tls_self_signed, "tls.self_signed"),
            (self.demo, "demo"),
            (self.log_json, "log_json"),
            (self.limit_loopback, "limits.limit_loopback"),
            (self.metrics_public, "metrics.public"),
        ] {
            if given {
                set(key, Value::from(true));
            }
        }
        if let Some(v) = &self.public_url {
            set("public_url", Value::from(v.clone()));
        }
        if let Some(v) = &self.helplines {
            set("escalation.helplines", path(v));
        }
        if let Some(v) = &self.pager_url {
            set("escalation.pager_url", Value::from(v.clone()));
        }
        if !self.allow_origin.is_empty() {
            let list: Vec<Value> = self
                .allow_origin
                .iter()
                .map(|o| Value::from(o.clone()))
                .collect();
            set("allow_origins", Value::from(list));
        }
        if !self.trusted_proxy.is_empty() {
            let list: Vec<Value> = self
                .trusted_proxy
                .iter()
                .map(|o| Value::from(o.clone()))
                .collect();
            set("trusted_proxies", Value::from(list));
        }
        for (value, key) in [
            (self.store_cache_mb, "store.cache_mb"),
            (
                self.messages_per_second.map(u64::from),
                "limits.messages_per_second",
            ),
            (self.message_burst.map(u64::from), "limits.message_burst"),
            (
                self.flags_per_minute.map(u64::from),
                "limits.flags_per_minute",
            ),
            (
                self.commands_per_second.map(u64::from),
                "limits.commands_per_second",
            ),
            (
                self.deadline_emergency_ms,
                "escalation.emergency_deadline_ms",
            ),
            (self.deadline_urgent_ms, "escalation.urgent_deadline_ms"),
            (self.deadline_concern_ms, "escalation.concern_deadline_ms"),
        ] {
            if let Some(n) = value {
                set(key, Value::from(n));
            }
        }
        layer
    }

    /// Merges the file, the process's environment and these flags, and validates
    /// the result.
    pub fn into_serving(self) -> Result<Serving, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        self.into_serving_with_env(&env)
    }

    /// [`Self::into_serving`] with a given environment (tests).
    pub fn into_serving_with_env(self, env: &[(String, String)]) -> Result<Serving, ConfigError> {
        let settings = file::load(self.config.as_deref(), env, self.layer())?;
        let (listen, mut config) = settings.clone().validate()?;
        config.conformance_echo = self.conformance_echo;
        Ok(Serving {
            listen,
            config,
            log_json: settings.log_json,
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base64url key starts with `-` one time in 64; a group id, a title or an
    /// outcome may too. Each must be taken as the value it is, not as a flag (CI
    /// failed on `erase --key -P…` with "unexpected argument '-P' found").
    #[test]
    fn values_that_start_with_a_hyphen_are_values() {
        let key = "-PabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP";
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("peerhub").chain(args.iter().copied()))
                .unwrap_or_else(|error| panic!("{args:?}: {error}"))
                .command
        };
        match parse(&["erase", "--data", "d", "--key", key]) {
            Some(Command::Erase { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{other:?}"),
        }
        match parse(&["export", "--data", "d", "--key", key]) {
            Some(Command::Export { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{other:?}"),
        }
        match parse(&["grant", "--data", "d", "--key", key, "--group", "-g"]) {
            Some(Command::Grant { key: k, group, .. }) => {
                assert_eq!((k.as_str(), group.as_str()), (key, "-g"))
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "group",
            "create",
            "--data",
            "d",
            "--id",
            "-g",
            "--title",
            "- evenings",
        ]) {
            Some(Command::Group(GroupCommand::Create { id, title, .. })) => {
                assert_eq!((id.as_str(), title.as_str()), ("-g", "- evenings"))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["group", "clear-waiting", "--data", "d", "-g"]) {
            Some(Command::Group(GroupCommand::ClearWaiting { group, .. })) => {
                assert_eq!(group, "-g")
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "escalation",
            "resolve",
            "--data",
            "d",
            "3",
            "--outcome",
            "-- called back",
        ]) {
            Some(Command::Escalation(EscalationCommand::Resolve { outcome, .. })) => {
                assert_eq!(outcome, "-- called back")
            }
            other => panic!("{other:?}"),
        }
    }
}
