//! The settings schema and its layers: built-in defaults, then the TOML file
//! (`--config FILE`), then `PEERHUB_*` environment variables, then flags — each
//! layer overriding the one before (figment does the merging and names the key and
//! the source in every error).
//!
//! Every key has an environment variable: `PEERHUB_` and the key's path in capitals
//! with `_` for `.` (`limits.messages_per_second` → `PEERHUB_LIMITS_MESSAGES_PER_SECOND`).
//! Unknown keys, in the file or as `PEERHUB_*` variables, are refused by name.
//! `peerhub.example.toml` at the top of the repository lists every key with its
//! default; [`KEYS`] is the same list for the code, and a test keeps the two equal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format as _, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Every setting, as the file spells it. Sections are tables; durations are in
/// the unit their name says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSettings {
    /// Address and port to listen on. Plain ws only on loopback.
    pub listen: SocketAddr,
    /// Data folder (created if missing).
    pub data: PathBuf,
    /// Base URL for printed links (empty: from `listen`).
    pub public_url: String,
    /// Create the demo group and print invites for every role.
    pub demo: bool,
    /// Logs as JSON lines.
    pub log_json: bool,
    /// Browser origins allowed to open a WebSocket besides the hub's own.
    pub allow_origins: Vec<String>,
    /// Reverse proxies (addresses or blocks) whose header names the client.
    pub trusted_proxies: Vec<String>,
    /// The header they write: `x-forwarded-for` or `forwarded` (RFC 7239).
    pub client_address_header: String,
    /// The async runtime: "auto", "multi_thread" or "current_thread".
    pub runtime: String,
    /// TLS.
    pub tls: TlsSection,
    /// Distress escalation.
    pub escalation: EscalationSection,
    /// Rate limits, caps and timeouts.
    pub limits: LimitsSection,
    /// The store.
    pub store: StoreSection,
    /// `/metrics`.
    pub metrics: MetricsSection,
    /// How long each kind of data is kept.
    pub retention: RetentionSection,
    /// Scheduled backups.
    pub backup: BackupSection,
    /// Several nodes on a NATS JetStream cluster (docs/CLUSTER.md).
    pub cluster: ClusterSection,
}

/// `[cluster]`: the NATS cluster (off while `nats_urls` is empty: one node on
/// sled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The NATS servers (`nats://host:port` or `tls://host:port`); any one is
    /// enough to connect, the others are tried when it goes away.
    pub nats_urls: Vec<String>,
    /// This node's name in leases and logs (empty: the machine's host name).
    pub node_name: String,
    /// A NATS credentials file (`.creds`: the user's JWT and nkey seed); empty:
    /// none.
    pub credentials_file: PathBuf,
    /// PEM certificate authority for TLS to NATS (requires TLS); empty: none.
    pub tls_ca_file: PathBuf,
    /// Copies of every stream and bucket (1 to 5; 3 survives one server lost).
    pub replicas: u32,
    /// How long a node's lease on a group or the router lasts without renewal.
    pub lease_ttl_ms: u64,
    /// The public origins of the cluster's nodes (`https://n1.example.org`), for
    /// the web client to move to when its node fails; every node accepts them as
    /// WebSocket origins. Empty: the page talks to its own node only (or a load
    /// balancer in front of them all).
    pub client_urls: Vec<String>,
}

/// `[backup]`: scheduled backups (off while `interval_secs` is 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSection {
    /// Seconds between backups; 0: none.
    pub interval_secs: u64,
    /// The folder they are written to (outside the data folder).
    pub folder: PathBuf,
    /// How many are kept; older ones are deleted.
    pub keep: u32,
}

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain (empty: none).
    pub cert: PathBuf,
    /// PEM private key (empty: none).
    pub key: PathBuf,
    /// A self-signed certificate kept in the data folder.
    pub self_signed: bool,
}

/// `[escalation]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationSection {
    /// Time to acknowledge an emergency, per routing level.
    pub emergency_deadline_ms: u64,
    /// Time to acknowledge an urgent flag, per routing level.
    pub urgent_deadline_ms: u64,
    /// Time to acknowledge a concern, per routing level.
    pub concern_deadline_ms: u64,
    /// Helplines file (JSON); empty: UK defaults.
    pub helplines: PathBuf,
    /// Pager hook URL (a secret: never printed); empty: none.
    pub pager_url: String,
    /// Pager format: `generic`, `pagerduty`, `opsgenie` or `ntfy`.
    pub pager_format: String,
    /// PagerDuty routing key, Opsgenie API key or ntfy token (a secret).
    pub pager_key: String,
    /// Seconds between repeats of a Web Push while its escalation waits.
    pub push_repeat_secs: u64,
    /// VAPID contact (`mailto:` or `https:`); empty: the public URL.
    pub push_contact: String,
    /// What the person a flag is about is told.
    pub support_wording: String,
    /// Phrases that nudge facilitators towards a check-in (empty: no nudges).
    pub risk_phrases: Vec<String>,
    /// Flags kept in full per escalation (the first included); later ones are
    /// counted and audited only.
    pub max_kept_flags: usize,
    /// Bytes of the group's messages copied into an escalation as its context.
    pub max_context_bytes: usize,
    /// Escalation summaries per `escalations` page, and pushed at login.
    pub page_size: usize,
    /// Bytes of items in one `escalation_detail` page at most.
    pub detail_page_bytes: usize,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Messages per key per second, sustained.
    pub messages_per_second: u32,
    /// Messages per key in a burst.
    pub message_burst: u32,
    /// Distress flags per key per minute (burst 10); refused flags are answered.
    pub flags_per_minute: u32,
    /// Other signed commands per key per second (burst 30).
    pub commands_per_second: u32,
    /// Flags kept in full per group per minute; beyond, counted (never dropped).
    pub flags_per_group_per_minute: u32,
    /// Flags kept in full about one person per minute; beyond, counted.
    pub flags_per_person_per_minute: u32,
    /// Unsigned requests per key per second (burst 10).
    pub reads_per_second: u32,
    /// New connections per address per minute.
    pub connects_per_ip_per_minute: u32,
    /// Failed logins per address per minute.
    pub failed_logins_per_ip_per_minute: u32,
    /// Failed logins per key per minute.
    pub failed_logins_per_key_per_minute: u32,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections per address.
    pub max_connections_per_ip: usize,
    /// Open connections per key.
    pub max_connections_per_key: usize,
    /// Connections not logged in yet.
    pub max_pending_logins: usize,
    /// Connections not logged in yet from one address (an IPv6 /64).
    pub max_pending_logins_per_ip: usize,
    /// Members per group.
    pub max_members_per_group: usize,
    /// People waiting per group.
    pub max_waiting_per_group: usize,
    /// Seconds before an offline waiting-only record expires.
    pub waiting_expiry_secs: u64,
    /// Apply per-address limits to loopback too.
    pub limit_loopback: bool,
    /// Seconds between pings to an idle connection.
    pub ping_interval_secs: u64,
    /// Seconds of silence before a connection is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a connection may take to log in.
    pub login_timeout_secs: u64,
    /// Bytes waiting for one slow client before it is dropped.
    pub outbox_bytes: usize,
    /// Frames waiting for one slow client before it is dropped.
    pub outbox_frames: usize,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Memory the store may use as cache, in MiB.
    pub cache_mb: u64,
    /// A data folder open to group or others at start: "refuse" or "warn".
    pub open_to_others: String,
    /// Seconds from an ephemeral session's end to the store's rewrite that takes
    /// its deleted bytes out of the data folder (ends within it share one).
    pub compact_delay_secs: u64,
    /// Free space (MiB) on the data folder's disk below which new groups and new
    /// members are refused and operators are warned; 0: no watermark.
    pub min_free_mb: u64,
    /// Least time between the starts of two group commits, µs: commits asked for
    /// meanwhile share the next flush (0: flush as soon as one is asked for).
    pub commit_interval_us: u64,
}

/// `[metrics]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve `/metrics` to any address (default: this machine only).
    pub public: bool,
    /// Bearer token `/metrics` asks for, from any address (a secret); empty: none.
    pub token: String,
}

/// `[retention]` (days; 0 keeps for ever)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Chat history, for groups that set no `history_days` of their own.
    pub chat_history_days: u32,
    /// Resolved escalations and co-produced records.
    pub safeguarding_days: u32,
    /// Audit entries.
    pub audit_days: u32,
    /// Seconds between retention passes.
    pub interval_secs: u64,
}

impl Default for FileSettings {
    fn default() -> Self {
        let config = super::Config::new("peerhub-data");
        let limits = &config.limits;
        let escalation = &config.escalation;
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data: config.data_dir.clone(),
            public_url: String::new(),
            demo: false,
            log_json: false,
            allow_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            client_address_header: config.trusted_proxies.header.name().to_string(),
            runtime: config.runtime.name().to_string(),
            tls: TlsSection::default(),
            escalation: EscalationSection {
                emergency_deadline_ms: escalation.emergency_deadline.as_millis() as u64,
                urgent_deadline_ms: escalation.urgent_deadline.as_millis() as u64,
                concern_deadline_ms: escalation.concern_deadline.as_millis() as u64,
                helplines: PathBuf::new(),
                pager_url: String::new(),
                pager_format: "generic".into(),
                pager_key: String::new(),
                push_repeat_secs: escalation.push_repeat.as_secs(),
                push_contact: String::new(),
                support_wording: escalation.support_wording.clone(),
                risk_phrases: config.risk_phrases.clone(),
                max_kept_flags: escalation.max_kept_flags,
                max_context_bytes: escalation.max_context_bytes,
                page_size: escalation.page_size,
                detail_page_bytes: escalation.detail_page_bytes,
            },
            limits: LimitsSection {
                messages_per_second: limits.messages_per_second,
                message_burst: limits.message_burst,
                flags_per_minute: limits.flags_per_minute,
                commands_per_second: limits.commands_per_second,
                flags_per_group_per_minute: limits.flags_per_group_per_minute,
                flags_per_person_per_minute: limits.flags_per_person_per_minute,
                reads_per_second: limits.reads_per_second,
                connects_per_ip_per_minute: limits.connects_per_ip_per_minute,
                failed_logins_per_ip_per_minute: limits.failed_logins_per_ip_per_minute,
                failed_logins_per_key_per_minute: limits.failed_logins_per_key_per_minute,
                max_connections: limits.max_connections,
                max_connections_per_ip: limits.max_connections_per_ip,
                max_connections_per_key: limits.max_connections_per_key,
                max_pending_logins: limits.max_pending_logins,
                max_pending_logins_per_ip: limits.max_pending_logins_per_ip,
                max_members_per_group: limits.max_members_per_group,
                max_waiting_per_group: limits.max_waiting_per_group,
                waiting_expiry_secs: limits.waiting_expiry.as_secs(),
                limit_loopback: limits.limit_loopback,
                ping_interval_secs: limits.ping_interval.as_secs(),
                idle_timeout_secs: limits.idle_timeout.as_secs(),
                login_timeout_secs: config.auth_timeout.as_secs(),
                outbox_bytes: config.outbox_bytes,
                outbox_frames: config.outbox_capacity,
            },
            store: StoreSection {
                cache_mb: config.store_cache_bytes / (1024 * 1024),
                open_to_others: "refuse".into(),
                compact_delay_secs: config.compact_delay.as_secs(),
                min_free_mb: config.store_min_free_bytes / (1024 * 1024),
                commit_interval_us: config.commit_interval.as_micros() as u64,
            },
            metrics: MetricsSection::default(),
            retention: RetentionSection {
                chat_history_days: config.retention.chat_history_days.unwrap_or(0),
                safeguarding_days: config.retention.safeguarding_days.unwrap_or(0),
                audit_days: config.retention.audit_days.unwrap_or(0),
                interval_secs: config.retention.interval.as_secs(),
            },
            backup: BackupSection {
                interval_secs: config.backup.interval.map_or(0, |d| d.as_secs()),
                folder: config.backup.folder.clone(),
                keep: config.backup.keep,
            },
            cluster: ClusterSection {
                nats_urls: Vec::new(),
                node_name: String::new(),
                credentials_file: PathBuf::new(),
                tls_ca_file: PathBuf::new(),
                replicas: 3,
                lease_ttl_ms: 10_000,
                client_urls: Vec::new(),
            },
        }
    }
}

impl Default for ClusterSection {
    fn default() -> Self {
        FileSettings::default().cluster
    }
}

impl Default for BackupSection {
    fn default() -> Self {
        FileSettings::default().backup
    }
}

impl Default for EscalationSection {
    fn default() -> Self {
        FileSettings::default().escalation
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        FileSettings::default().limits
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        FileSettings::default().store
    }
}

impl Default for RetentionSection {
    fn default() -> Self {
        FileSettings::default().retention
    }
}

/// The longest `store.commit_interval_us` taken.
const MAX_COMMIT_INTERVAL_US: u64 = 100_000;

/// Every key, as `section.key` (top-level keys have no section). The example
/// file and the environment variables follow this list.
pub const KEYS: &[&str] = &[
    "listen",
    "data",
    "public_url",
    "demo",
    "log_json",
    "allow_origins",
    "trusted_proxies",
    "client_address_header",
    "runtime",
    "tls.cert",
    "tls.key",
    "tls.self_signed",
    "escalation.emergency_deadline_ms",
    "escalation.urgent_deadline_ms",
    "escalation.concern_deadline_ms",
    "escalation.helplines",
    "escalation.pager_url",
    "escalation.pager_format",
    "escalation.pager_key",
    "escalation.push_repeat_secs",
    "escalation.push_contact",
    "escalation.support_wording",
    "escalation.risk_phrases",
    "escalation.max_kept_flags",
    "escalation.max_context_bytes",
    "escalation.page_size",
    "escalation.detail_page_bytes",
    "limits.messages_per_second",
    "limits.message_burst",
    "limits.flags_per_minute",
    "limits.commands_per_second",
    "limits.flags_per_group_per_minute",
    "limits.flags_per_person_per_minute",
    "limits.reads_per_second",
    "limits.connects_per_ip_per_minute",
    "limits.failed_logins_per_ip_per_minute",
    "limits.failed_logins_per_key_per_minute",
    "limits.max_connections",
    "limits.max_connections_per_ip",
    "limits.max_connections_per_key",
    "limits.max_pending_logins",
    "limits.max_pending_logins_per_ip",
    "limits.max_members_per_group",
    "limits.max_waiting_per_group",
    "limits.waiting_expiry_secs",
    "limits.limit_loopback",
    "limits.ping_interval_secs",
    "limits.idle_timeout_secs",
    "limits.login_timeout_secs",
    "limits.outbox_bytes",
    "limits.outbox_frames",
    "store.cache_mb",
    "store.open_to_others",
    "store.compact_delay_secs",
    "store.min_free_mb",
    "store.commit_interval_us",
    "metrics.public",
    "metrics.token",
    "retention.chat_history_days",
    "retention.safeguarding_days",
    "retention.audit_days",
    "retention.interval_secs",
    "backup.interval_secs",
    "backup.folder",
    "backup.keep",
    "cluster.nats_urls",
    "cluster.node_name",
    "cluster.credentials_file",
    "cluster.tls_ca_file",
    "cluster.replicas",
    "cluster.lease_ttl_ms",
    "cluster.client_urls",
];

/// Keys whose values are secrets: never printed, never in an error message.
pub const SECRET_KEYS: &[&str] = &[
    "escalation.pager_url",
    "escalation.pager_key",
    "metrics.token",
];

/// `PEERHUB_*` variables that are not settings: the config file's own path.
const NOT_SETTINGS: &[&str] = &["PEERHUB_CONFIG"];

/// The environment variable of a key.
pub fn env_name(key: &str) -> String {
    format!("PEERHUB_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The layers, merged: defaults, then `file` (which must exist), then the
/// environment `env` (name, value), then `flags` (key, value).
pub fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    flags: Figment,
) -> Result<FileSettings, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(FileSettings::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::File(format!(
                "{}: no such file",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    for (name, value) in env {
        if !name.starts_with("PEERHUB_") || NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let Some(key) = KEYS.iter().find(|k| env_name(k) == *name) else {
            return Err(ConfigError::File(format!(
                "unknown environment variable {name}: no setting has that name \
                 (every setting's variable is PEERHUB_ and its key in capitals)"
            )));
        };
        figment = figment.merge(Named {
            name: format!("environment variable {name}"),
            key,
            value: env_value(key, value),
        });
    }
    figment
        .merge(flags)
        .extract::<FileSettings>()
        // figment's messages name the key and the layer it came from. A secret is a
        // string, and every string is of the right type, so no message quotes one.
        .map_err(|e| ConfigError::File(e.to_string().replace("key \"default.", "key \"")))
}

/// One key's value from a named source (an environment variable, a flag), so
/// that an error says where the bad value came from.
pub(super) struct Named {
    /// What to call the source in errors.
    pub name: String,
    /// The key it sets.
    pub key: &'static str,
    /// Its value.
    pub value: figment::value::Value,
}

impl figment::Provider for Named {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.name.clone())
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Serialized::default(self.key, self.value.clone()).data()
    }
}

/// An environment value as the type its key's default has: a list is
/// comma-separated, a number or a boolean is parsed (and left as text, for figment
/// to refuse with the key named, when it is not one), a string stays a string
/// whatever it looks like (`PEERHUB_DATA=2024` is a folder).
fn env_value(key: &str, value: &str) -> figment::value::Value {
    use figment::value::Value;
    let default = Figment::from(Serialized::defaults(FileSettings::default()))
        .find_value(key)
        .ok();
    let text = || Value::from(value.to_string());
    match default {
        Some(Value::Array(..)) => Value::from(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::from(s.to_string()))
                .collect::<Vec<_>>(),
        ),
        Some(Value::Bool(..)) => value.parse::<bool>().map_or_else(|_| text(), Value::from),
        Some(Value::Num(..)) => value.parse::<u64>().map_or_else(|_| text(), Value::from),
        _ => text(),
    }
}

impl FileSettings {
    /// Checks every value and builds the server's [`super::Config`]; every refusal
    /// names its key (and flag, where there is one).
    pub fn validate(self) -> Result<(SocketAddr, super::Config), ConfigError> {
        use std::time::Duration;
        let tls = match (
            !self.tls.cert.as_os_str().is_empty(),
            !self.tls.key.as_os_str().is_empty(),
            self.tls.self_signed,
        ) {
            (true, true, true) => return Err(ConfigError::TwoTlsSources),
            (true, true, false) => Some(super::TlsSource::Files {
                cert: self.tls.cert.clone(),
                key: self.tls.key.clone(),
            }),
            (false, false, true) => {
                let mut hosts = vec!["localhost".to_string(), self.listen.ip().to_string()];
                hosts.dedup();
                Some(super::TlsSource::SelfSigned { hosts })
            }
            (false, false, false) => None,
            _ => return Err(ConfigError::HalfTlsPair),
        };
        super::check_listen(self.listen, tls.is_some())?;
        let e = &self.escalation;
        let l = &self.limits;
        for (name, n) in [
            (
                "escalation.emergency_deadline_ms (--deadline-emergency-ms)",
                e.emergency_deadline_ms,
            ),
            (
                "escalation.urgent_deadline_ms (--deadline-urgent-ms)",
                e.urgent_deadline_ms,
            ),
            (
                "escalation.concern_deadline_ms (--deadline-concern-ms)",
                e.concern_deadline_ms,
            ),
            (
                "limits.messages_per_second (--messages-per-second)",
                u64::from(l.messages_per_second),
            ),
            (
                "limits.message_burst (--message-burst)",
                u64::from(l.message_burst),
            ),
            (
                "limits.flags_per_minute (--flags-per-minute)",
                u64::from(l.flags_per_minute),
            ),
            (
                "limits.commands_per_second (--commands-per-second)",
                u64::from(l.commands_per_second),
            ),
            ("escalation.max_kept_flags", e.max_kept_flags as u64),
            ("escalation.max_context_bytes", e.max_context_bytes as u64),
            ("escalation.page_size", e.page_size as u64),
            ("escalation.detail_page_bytes", e.detail_page_bytes as u64),
            (
                "limits.flags_per_group_per_minute",
                u64::from(l.flags_per_group_per_minute),
            ),
            (
                "limits.flags_per_person_per_minute",
                u64::from(l.flags_per_person_per_minute),
            ),
            ("limits.reads_per_second", u64::from(l.reads_per_second)),
            (
                "limits.connects_per_ip_per_minute",
                u64::from(l.connects_per_ip_per_minute),
            ),
            (
                "limits.failed_logins_per_ip_per_minute",
                u64::from(l.failed_logins_per_ip_per_minute),
            ),
            (
                "limits.failed_logins_per_key_per_minute",
                u64::from(l.failed_logins_per_key_per_minute),
            ),
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.max_connections_per_ip",
                l.max_connections_per_ip as u64,
            ),
            (
                "limits.max_connections_per_key",
                l.max_connections_per_key as u64,
            ),
            ("limits.max_pending_logins", l.max_pending_logins as u64),
            (
                "limits.max_pending_logins_per_ip",
                l.max_pending_logins_per_ip as u64,
            ),
            (
                "limits.max_members_per_group",
                l.max_members_per_group as u64,
            ),
            (
                "limits.max_waiting_per_group",
                l.max_waiting_per_group as u64,
            ),
            ("limits.waiting_expiry_secs", l.waiting_expiry_secs),
            ("limits.ping_interval_secs", l.ping_interval_secs),
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            ("limits.login_timeout_secs", l.login_timeout_secs),
            ("limits.outbox_bytes", l.outbox_bytes as u64),
            ("limits.outbox_frames", l.outbox_frames as u64),
            ("store.cache_mb (--store-cache-mb)", self.store.cache_mb),
            ("retention.interval_secs", self.retention.interval_secs),
            ("escalation.push_repeat_secs", e.push_repeat_secs),
        ] {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if l.idle_timeout_secs <= l.ping_interval_secs {
            return Err(ConfigError::File(
                "limits.idle_timeout_secs must be longer than limits.ping_interval_secs \
                 (a quiet but healthy client answers the pings)"
                    .into(),
            ));
        }
        let pager_ok = e.pager_url.is_empty()
            || e.pager_url.starts_with("http://")
            || e.pager_url.starts_with("https://");
        if !pager_ok {
            return Err(ConfigError::BadPagerUrl);
        }
        let Some(pager_format) = crate::escalation::pager::PagerFormat::parse(&e.pager_format)
        else {
            return Err(ConfigError::File(format!(
                "escalation.pager_format must be one of {}",
                crate::escalation::pager::PagerFormat::NAMES.join(", ")
            )));
        };
        let contact_ok = e.push_contact.is_empty()
            || e.push_contact.starts_with("mailto:")
            || e.push_contact.starts_with("https://");
        if !contact_ok {
            return Err(ConfigError::File(
                "escalation.push_contact must be a mailto: or https: URL (RFC 8292)".into(),
            ));
        }
        if e.support_wording.trim().is_empty() {
            return Err(ConfigError::File(
                "escalation.support_wording must say something".into(),
            ));
        }
        let mut config = super::Config::new(self.data.clone());
        config.tls = tls;
        config.demo = self.demo;
        config.public_url = Some(self.public_url.clone()).filter(|u| !u.is_empty());
        if !e.helplines.as_os_str().is_empty() {
            config.escalation.helplines = read_helplines(&e.helplines)?;
        }
        config.escalation.pager_url = Some(e.pager_url.clone()).filter(|u| !u.is_empty());
        config.escalation.support_wording = e.support_wording.clone();
        if let Some(p) = e
            .risk_phrases
            .iter()
            .find(|p| crate::risk_phrases::normalise(p).is_empty())
        {
            return Err(ConfigError::File(format!(
                "escalation.risk_phrases: {p:?} has no letters or digits to match"
            )));
        }
        config.risk_phrases = e.risk_phrases.clone();
        config.escalation.pager_format = pager_format;
        config.escalation.pager_key =
            (!e.pager_key.is_empty()).then(|| secrecy::SecretString::from(e.pager_key.clone()));
        config.escalation.push_repeat = Duration::from_secs(e.push_repeat_secs);
        config.escalation.push_contact = e.push_contact.clone();
        config.escalation.emergency_deadline = Duration::from_millis(e.emergency_deadline_ms);
        config.escalation.urgent_deadline = Duration::from_millis(e.urgent_deadline_ms);
        config.escalation.concern_deadline = Duration::from_millis(e.concern_deadline_ms);
        config.escalation.max_kept_flags = e.max_kept_flags;
        config.escalation.max_context_bytes = e.max_context_bytes;
        config.escalation.page_size = e.page_size;
        config.escalation.detail_page_bytes = e.detail_page_bytes;
        let limits = &mut config.limits;
        limits.messages_per_second = l.messages_per_second;
        limits.message_burst = l.message_burst;
        limits.flags_per_minute = l.flags_per_minute;
        limits.commands_per_second = l.commands_per_second;
        limits.flags_per_group_per_minute = l.flags_per_group_per_minute;
        limits.flags_per_person_per_minute = l.flags_per_person_per_minute;
        limits.reads_per_second = l.reads_per_second;
        limits.connects_per_ip_per_minute = l.connects_per_ip_per_minute;
        limits.failed_logins_per_ip_per_minute = l.failed_logins_per_ip_per_minute;
        limits.failed_logins_per_key_per_minute = l.failed_logins_per_key_per_minute;
        limits.max_connections = l.max_connections;
        limits.max_connections_per_ip = l.max_connections_per_ip;
        limits.max_connections_per_key = l.max_connections_per_key;
        limits.max_pending_logins = l.max_pending_logins;
        limits.max_pending_logins_per_ip = l.max_pending_logins_per_ip;
        limits.max_members_per_group = l.max_members_per_group;
        limits.max_waiting_per_group = l.max_waiting_per_group;
        limits.waiting_expiry = Duration::from_secs(l.waiting_expiry_secs);
        limits.limit_loopback = l.limit_loopback;
        limits.ping_interval = Duration::from_secs(l.ping_interval_secs);
        limits.idle_timeout = Duration::from_secs(l.idle_timeout_secs);
        config.auth_timeout = Duration::from_secs(l.login_timeout_secs);
        config.outbox_bytes = l.outbox_bytes;
        config.outbox_capacity = l.outbox_frames;
        config.store_cache_bytes = self.store.cache_mb.saturating_mul(1024 * 1024);
        config.compact_delay = Duration::from_secs(self.store.compact_delay_secs);
        config.store_min_free_bytes = self.store.min_free_mb.saturating_mul(1024 * 1024);
        // Every ack may wait this long: past a tenth of a second it is a mistake.
        if self.store.commit_interval_us > MAX_COMMIT_INTERVAL_US {
            return Err(ConfigError::File(format!(
                "store.commit_interval_us must be at most {MAX_COMMIT_INTERVAL_US} \
                 (0.1 s): every acknowledgement may wait for it, not {}",
                self.store.commit_interval_us
            )));
        }
        config.commit_interval = Duration::from_micros(self.store.commit_interval_us);
        config.open_to_others = self.store.open_to_others.parse().map_err(|()| {
            ConfigError::File(format!(
                "store.open_to_others must be \"refuse\" or \"warn\", not {:?}",
                self.store.open_to_others
            ))
        })?;
        config.allowed_origins = self.allow_origins.clone();
        config.metrics_public = self.metrics.public;
        let token = &self.metrics.token;
        if !token.is_empty() && token.len() < 16 {
            return Err(ConfigError::File(
                "metrics.token must be at least 16 characters (it is a password)".into(),
            ));
        }
        config.metrics_token =
            (!token.is_empty()).then(|| secrecy::SecretString::from(token.clone()));
        for origin in &self.allow_origins {
            if crate::transport::origin::Origin::parse(origin).is_none() {
                return Err(ConfigError::File(format!(
                    "allow_origins: {origin:?} is not an origin (scheme://host[:port])"
                )));
            }
        }
        if !self.public_url.is_empty()
            && crate::transport::origin::Origin::parse(&self.public_url).is_none()
        {
            return Err(ConfigError::File(format!(
                "public_url: {:?} is not a URL (http(s)://host[:port]/)",
                self.public_url
            )));
        }
        config.trusted_proxies.header = self.client_address_header.parse().map_err(|()| {
            ConfigError::File(format!(
                "client_address_header must be \"x-forwarded-for\" or \"forwarded\", not {:?}",
                self.client_address_header
            ))
        })?;
        config.runtime = self.runtime.parse().map_err(|()| {
            ConfigError::File(format!(
                "runtime must be \"auto\", \"multi_thread\" or \"current_thread\", not {:?}",
                self.runtime
            ))
        })?;
        config.trusted_proxies.blocks = self
            .trusted_proxies
            .iter()
            .map(|entry| entry.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| ConfigError::File(format!("trusted_proxies (--trusted-proxy): {e}")))?;
        let days = |d: u32| Some(d).filter(|d| *d > 0);
        config.retention.chat_history_days = days(self.retention.chat_history_days);
        config.retention.safeguarding_days = days(self.retention.safeguarding_days);
        config.retention.audit_days = days(self.retention.audit_days);
        config.retention.interval = Duration::from_secs(self.retention.interval_secs);
        if self.backup.interval_secs > 0 {
            if self.backup.folder.as_os_str().is_empty() {
                return Err(ConfigError::File(
                    "backup.folder must name a folder when backup.interval_secs is set".into(),
                ));
            }
            if self.backup.keep == 0 {
                return Err(ConfigError::Zero("backup.keep"));
            }
            if self.backup.folder.starts_with(&config.data_dir) {
                return Err(ConfigError::File(
                    "backup.folder must be outside the data folder (a backup is what you \
                     restore when the data folder is lost)"
                        .into(),
                ));
            }
        }
        config.backup = crate::backup_schedule::BackupSettings {
            interval: Some(Duration::from_secs(self.backup.interval_secs)).filter(|d| !d.is_zero()),
            folder: self.backup.folder.clone(),
            keep: self.backup.keep,
        };
        config.cluster = self.cluster.validate()?;
        Ok((self.listen, config))
    }

    /// The settings as TOML, with every secret that is set shown as `(hidden)`.
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        if !shown.escalation.pager_url.is_empty() {
            shown.escalation.pager_url = "(hidden)".into();
        }
        if !shown.escalation.pager_key.is_empty() {
            shown.escalation.pager_key = "(hidden)".into();
        }
        if !shown.metrics.token.is_empty() {
            shown.metrics.token = "(hidden)".into();
        }
        toml::to_string(&shown).unwrap_or_default()
    }
}

fn read_helplines(path: &Path) -> Result<Vec<peerhub_protocol::escalation::Helpline>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Helplines(path.to_path_buf(), e.to_string()))?;
    let helplines: Vec<peerhub_protocol::escalation::Helpline> = serde_json::from_str(&text)
        .map_err(|e| ConfigError::Helplines(path.to_path_buf(), e.to_string()))?;
    if helplines.is_empty() {
        return Err(ConfigError::Helplines(
            path.to_path_buf(),
            "lists no helpline".into(),
        ));
    }
    Ok(helplines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_the_schema_and_the_schema_has_no_other() {
        let value = figment::value::Value::serialize(FileSettings::default()).unwrap();
        let dict = value.into_dict().unwrap();
        let mut found = Vec::new();
        for (name, value) in dict {
            match value.into_dict() {
                Some(section) if name != "allow_origins" => {
                    for key in section.keys() {
                        found.push(format!("{name}.{key}"));
                    }
                }
                _ => found.push(name),
            }
        }
        found.sort();
        let mut keys: Vec<String> = KEYS.iter().map(ToString::to_string).collect();
        keys.sort();
        assert_eq!(found, keys);
    }

    #[test]
    fn the_example_file_lists_every_key_with_its_default() {
        let text = include_str!("../../../peerhub.example.toml");
        let parse = |text: &str| {
            Figment::from(Toml::string(text))
                .extract::<FileSettings>()
                .unwrap()
        };
        // With its commented defaults switched on, the example is the defaults; as
        // shipped (everything commented) it is an empty, valid file.
        assert_eq!(parse(&uncomment(text)), FileSettings::default());
        assert_eq!(parse(text), FileSettings::default());
        for key in KEYS {
            let name = key.rsplit('.').next().unwrap_or(key);
            assert!(
                text.lines().any(|l| l.starts_with(&format!("# {name} = "))),
                "{key} is not in the example file"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_a_debug_print_of_the_settings() {
        let mut file = FileSettings::default();
        file.escalation.pager_url = "https://events.example/v2/enqueue".into();
        file.escalation.pager_format = "pagerduty".into();
        file.escalation.pager_key = "routing-key-do-not-print".into();
        file.metrics.token = "metrics-token-do-not-print".into();
        let (_, config) = file.validate().unwrap();
        let printed = format!("{config:?} {:?}", config.escalation.pager());
        assert!(!printed.contains("do-not-print"), "{printed}");
        let key = config.escalation.pager_key.as_ref().unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(key),
            "routing-key-do-not-print"
        );
    }

    /// The example's `# key = value` lines, switched on.
    fn uncomment(text: &str) -> String {
        text.lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") || rest.starts_with('[') => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn file_values_reach_the_server_config_and_zero_days_keep_for_ever() {
        let mut settings = FileSettings::default();
        settings.retention.chat_history_days = 0;
        settings.retention.audit_days = 400;
        settings.limits.max_members_per_group = 12;
        settings.limits.login_timeout_secs = 7;
        settings.metrics.public = true;
        let (_, config) = settings.validate().unwrap();
        assert_eq!(config.retention.chat_history_days, None);
        assert_eq!(config.retention.audit_days, Some(400));
        assert_eq!(config.retention.safeguarding_days, Some(2922));
        assert_eq!(config.limits.max_members_per_group, 12);
        assert_eq!(config.auth_timeout, std::time::Duration::from_secs(7));
        assert!(config.metrics_public);
    }

    #[test]
    fn a_commit_interval_over_a_tenth_of_a_second_is_refused_by_key() {
        let mut settings = FileSettings::default();
        settings.store.commit_interval_us = 100_000;
        assert_eq!(
            settings.clone().validate().unwrap().1.commit_interval,
            std::time::Duration::from_millis(100)
        );
        settings.store.commit_interval_us = 100_001;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("store.commit_interval_us"), "{error}");
    }

    #[test]
    fn trusted_proxies_reach_the_config_and_bad_ones_are_refused_by_key() {
        let mut settings = FileSettings {
            trusted_proxies: vec!["127.0.0.1".into(), "10.0.0.0/8".into(), "fd00::/8".into()],
            client_address_header: "Forwarded".into(),
            ..FileSettings::default()
        };
        settings.limits.max_pending_logins_per_ip = 3;
        let (_, config) = settings.clone().validate().unwrap();
        let proxies = &config.trusted_proxies;
        assert_eq!(proxies.blocks.len(), 3);
        assert!(proxies.trusts("10.200.0.1".parse().unwrap()));
        assert!(proxies.trusts("fd12::1".parse().unwrap()));
        assert!(!proxies.trusts("127.0.0.2".parse().unwrap()));
        assert_eq!(
            proxies.header,
            crate::transport::forwarded::ClientAddressHeader::Forwarded
        );
        assert_eq!(config.limits.max_pending_logins_per_ip, 3);
        assert!(FileSettings::default()
            .validate()
            .unwrap()
            .1
            .trusted_proxies
            .blocks
            .is_empty());

        let mut bad = settings.clone();
        bad.trusted_proxies = vec!["nginx.local".into()];
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("trusted_proxies"), "{error}");
        let mut bad = settings.clone();
        bad.client_address_header = "x-real-ip".into();
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("client_address_header"), "{error}");
        let mut bad = settings.clone();
        bad.runtime = "tokio".into();
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("runtime"), "{error}");
        let mut zero = settings;
        zero.limits.max_pending_logins_per_ip = 0;
        assert!(zero.validate().is_err());
    }

    #[test]
    fn trusted_proxies_come_from_the_environment_as_a_list() {
        let env = [
            (
                "PEERHUB_TRUSTED_PROXIES".to_string(),
                "127.0.0.1, 10.0.0.0/8".to_string(),
            ),
            (
                "PEERHUB_CLIENT_ADDRESS_HEADER".to_string(),
                "forwarded".to_string(),
            ),
            (
                "PEERHUB_LIMITS_MAX_PENDING_LOGINS_PER_IP".to_string(),
                "7".to_string(),
            ),
        ];
        let settings = load(None, &env, Figment::new()).unwrap();
        assert_eq!(settings.trusted_proxies, ["127.0.0.1", "10.0.0.0/8"]);
        assert_eq!(settings.client_address_header, "forwarded");
        assert_eq!(settings.limits.max_pending_logins_per_ip, 7);
    }

    #[test]
    fn env_names_follow_the_keys() {
        assert_eq!(
            env_name("limits.messages_per_second"),
            "PEERHUB_LIMITS_MESSAGES_PER_SECOND"
        );
        assert_eq!(env_name("listen"), "PEERHUB_LISTEN");
    }
}
