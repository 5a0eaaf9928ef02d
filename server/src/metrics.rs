//! Operational metrics, served as Prometheus text at `GET /metrics`.
//!
//! Counts only: nothing here names a person, a key, a group or a message. One
//! [`Metrics`] lives in the [`Hub`](crate::hub::Hub) (no globals, so tests can run
//! many hubs in one process). Counters are bumped where things happen; gauges that
//! are cheap to read (connections, live groups, store size, escalation ages) are
//! read when a scrape comes in.
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `peerhub_connections` | gauge | open WebSocket connections |
//! | `peerhub_connections_pending_login` | gauge | of those, not logged in yet |
//! | `peerhub_groups_live` | gauge | groups with a running task |
//! | `peerhub_messages_total` | counter | messages accepted (signed, stored, acknowledged); messages/s is `rate()` of it |
//! | `peerhub_frames_sent_total` | counter | frames written to clients; frames/s is `rate()` of it |
//! | `peerhub_outbox_drops_total` | counter | frames not queued because a client's outbox was full or closed |
//! | `peerhub_slow_client_disconnects_total` | counter | connections closed as slow consumers (4001) |
//! | `peerhub_rejected_total{code}` | counter | requests refused, by error code |
//! | `peerhub_rate_limited_total{limit}` | counter | rate-limit hits, by limit |
//! | `peerhub_escalations_open{severity,level}` | gauge | unresolved escalations |
//! | `peerhub_escalations_unacknowledged` | gauge | escalations nobody has acknowledged |
//! | `peerhub_escalation_oldest_unacknowledged_seconds` | gauge | age of the oldest of those (0 if none): **alert on this** |
//! | `peerhub_store_bytes` | gauge | the store's size on disk |
//! | `peerhub_oncall_unreachable` | gauge | supervisors on the rota with no push subscription, when no pager is set: **alert on this** |
//! | `peerhub_alerts_total{channel,outcome}` | counter | pushes sent out of band, by outcome (`delivered`, `gone`, `failed`) |
//! | `peerhub_store_fault{fault}` | gauge | 1 once a write or `fsync` failed (`disk_full`, `write_failed`, `compaction_failed`): nothing more is acknowledged until a restart: **alert on this** |
//! | `peerhub_store_free_bytes` | gauge | free space on the data folder's disk |
//! | `peerhub_store_low_space` | gauge | 1 while that is below `store.min_free_mb`: new groups and members are refused: **alert on this** |
//! | `peerhub_flags_unstored_total` | counter | flags the store could not keep, shown to the supervisors online from memory |
//!
//! In cluster mode (docs/CLUSTER.md) each node serves its own `/metrics`; these
//! are added, and the escalation figures above are the router's, so they are
//! non-zero only on the node leading it (take `max` across nodes):
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `peerhub_cluster_nats_connected` | gauge | 1 while this node's NATS connection is up: **alert on 0** |
//! | `peerhub_cluster_router_leader` | gauge | 1 on the node leading the escalation router (the sum across nodes is 1, 0 during a failover): **alert on a sum of 0 that lasts** |
//! | `peerhub_cluster_flags_not_passed_total` | counter | flags that reached no router leader in time, refused with the helplines: **alert on any** |
//! | `peerhub_cluster_groups_lost_total{reason}` | counter | groups this node stopped serving because it lost their lease (`lease`), or a commit failed: their log refused or did not confirm it, or the store failed (`commit`) |
//! | `peerhub_cluster_audit_unshipped` | gauge | this node's audit entries not yet shipped into the `PEERHUB_AUDIT` stream (new ones, or rewritten ones not yet replaced there): **alert on a value that stays above 0** |
//! | `peerhub_cluster_audit_shipping_stopped` | gauge | 1 when this node stopped shipping its audit chain because the stream holds entries past its chain's end (its data folder was replaced by an older copy): **alert on 1** |

use std::sync::{Mutex, OnceLock};

use peerhub_protocol::escalation::{EscalationStatus, Severity};
use prometheus::{
    Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::store::records::EscalationRecord;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The escalation figures the router publishes whenever its queue changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct EscalationSummary {
    /// (severity, level) → count of unresolved escalations.
    open: Vec<((Severity, u8), i64)>,
    unacknowledged: i64,
    /// When the oldest unacknowledged escalation was raised (ms since the epoch).
    oldest_unacknowledged_ms: Option<u64>,
}

/// Every metric the hub keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// 1 for the storage fault that stopped commits.
    store_fault: IntGaugeVec,
    /// Flags the store could not keep.
    flags_unstored: IntCounter,
    /// Free space on the data folder's disk.
    free_bytes: IntGauge,
    /// Below the watermark.
    low_space: IntGauge,
    /// Messages accepted.
    pub messages: IntCounter,
    /// Frames written to clients.
    pub frames_sent: IntCounter,
    /// Frames not queued because an outbox was full or gone.
    pub outbox_drops: IntCounter,
    /// Connections closed as slow consumers.
    pub slow_disconnects: IntCounter,
    rejected: IntCounterVec,
    rate_limited: IntCounterVec,
    connections: IntGauge,
    pending_logins: IntGauge,
    groups_live: IntGauge,
    escalations_open: IntGaugeVec,
    escalations_unacknowledged: IntGauge,
    oldest_unacknowledged: Gauge,
    store_bytes: IntGauge,
    escalations: Mutex<EscalationSummary>,
    /// Supervisors on the rota nobody can reach away from the console.
    pub oncall_unreachable: IntGauge,
    alerts: IntCounterVec,
    cluster: OnceLock<ClusterMetrics>,
}

/// The metrics of a node of a cluster (see the module's table).
#[derive(Debug)]
pub struct ClusterMetrics {
    nats_connected: IntGauge,
    /// 1 while this node leads the escalation router.
    pub router_leader: IntGauge,
    /// Flags that reached no router leader in time.
    pub flags_not_passed: IntCounter,
    groups_lost: IntCounterVec,
    /// Audit entries not yet shipped into the cluster's audit stream.
    pub audit_unshipped: IntGauge,
    /// 1 once shipping stopped because the stream holds more than this chain.
    pub audit_shipping_stopped: IntGauge,
}

impl ClusterMetrics {
    /// Counts a group this node stopped serving: `lease` or `append`.
    pub fn group_lost(&self, reason: &str) {
        self.groups_lost.with_label_values(&[reason]).inc();
    }
}

/// What a scrape reads from the rest of the hub.
#[derive(Debug, Clone, Copy)]
pub struct Readings {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Of those, not logged in.
    pub pending_logins: usize,
    /// Groups with a running task.
    pub groups_live: usize,
    /// The store's size on disk.
    pub store_bytes: u64,
    /// Server time now (ms since the epoch).
    pub now_ms: u64,
    /// The storage fault that stopped commits, if any.
    pub store_fault: Option<&'static str>,
    /// Free bytes on the data folder's disk.
    pub free_bytes: u64,
    /// Below the low-space watermark.
    pub low_space: bool,
    /// Cluster mode: whether the NATS connection is up.
    pub nats_connected: Option<bool>,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("a valid metric name");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("a valid metric name");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::Concern => "concern",
        Severity::Urgent => "urgent",
        Severity::Emergency => "emergency",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set, all zero.
    #[allow(clippy::expect_used)] // Fixed, valid names registered once: cannot fail.
    pub fn new() -> Self {
        let r = Registry::new();
        let rejected = IntCounterVec::new(
            Opts::new("peerhub_rejected_total", "Requests refused, by error code."),
            &["code"],
        )
        .expect("a valid metric");
        r.register(Box::new(rejected.clone())).expect("once");
        let rate_limited = IntCounterVec::new(
            Opts::new("peerhub_rate_limited_total", "Rate-limit hits, by limit."),
            &["limit"],
        )
        .expect("a valid metric");
        r.register(Box::new(rate_limited.clone())).expect("once");
        let escalations_open = IntGaugeVec::new(
            Opts::new(
                "peerhub_escalations_open",
                "Unresolved escalations, by severity and routing level.",
            ),
            &["severity", "level"],
        )
        .expect("a valid metric");
        r.register(Box::new(escalations_open.clone()))
            .expect("once");
        let oldest_unacknowledged = Gauge::new(
            "peerhub_escalation_oldest_unacknowledged_seconds",
            "Age of the oldest escalation nobody has acknowledged (0 if none).",
        )
        .expect("a valid metric");
        r.register(Box::new(oldest_unacknowledged.clone()))
            .expect("once");
        let alerts = IntCounterVec::new(
            Opts::new(
                "peerhub_alerts_total",
                "Out-of-band alerts sent, by channel and outcome.",
            ),
            &["channel", "outcome"],
        )
        .expect("a valid metric");
        r.register(Box::new(alerts.clone())).expect("once");
        let store_fault = IntGaugeVec::new(
            Opts::new(
                "peerhub_store_fault",
                "1 once a write or fsync failed, by fault; nothing is acknowledged until a restart.",
            ),
            &["fault"],
        )
        .expect("a valid metric");
        r.register(Box::new(store_fault.clone())).expect("once");
        Self {
            free_bytes: gauge(
                &r,
                "peerhub_store_free_bytes",
                "Free space on the data folder's disk.",
            ),
            low_space: gauge(
                &r,
                "peerhub_store_low_space",
                "1 while free space is below store.min_free_mb (new groups and members refused).",
            ),
            store_fault,
            flags_unstored: counter(
                &r,
                "peerhub_flags_unstored_total",
                "Flags the store could not keep, shown to the supervisors online from memory.",
            ),
            oncall_unreachable: gauge(
                &r,
                "peerhub_oncall_unreachable",
                "Supervisors on the rota with no push subscription and no pager.",
            ),
            alerts,
            messages: counter(&r, "peerhub_messages_total", "Messages accepted."),
            frames_sent: counter(
                &r,
                "peerhub_frames_sent_total",
                "Frames written to clients.",
            ),
            outbox_drops: counter(
                &r,
                "peerhub_outbox_drops_total",
                "Frames not queued because a client's outbox was full or closed.",
            ),
            slow_disconnects: counter(
                &r,
                "peerhub_slow_client_disconnects_total",
                "Connections closed because the client did not keep up.",
            ),
            connections: gauge(&r, "peerhub_connections", "Open WebSocket connections."),
            pending_logins: gauge(
                &r,
                "peerhub_connections_pending_login",
                "Open WebSocket connections not logged in yet.",
            ),
            groups_live: gauge(&r, "peerhub_groups_live", "Groups with a running task."),
            escalations_unacknowledged: gauge(
                &r,
                "peerhub_escalations_unacknowledged",
                "Escalations nobody has acknowledged.",
            ),
            store_bytes: gauge(&r, "peerhub_store_bytes", "The store's size on disk."),
            rejected,
            rate_limited,
            escalations_open,
            oldest_unacknowledged,
            escalations: Mutex::new(EscalationSummary::default()),
            registry: r,
            cluster: OnceLock::new(),
        }
    }

    /// Adds the cluster's metrics (once; a node of a cluster calls it at start).
    pub fn start_cluster(&self) -> &ClusterMetrics {
        self.cluster.get_or_init(|| {
            let r = &self.registry;
            let groups_lost = IntCounterVec::new(
                Opts::new(
                    "peerhub_cluster_groups_lost_total",
                    "Groups this node stopped serving, by reason (lease, commit).",
                ),
                &["reason"],
            )
            .expect("a valid metric");
            r.register(Box::new(groups_lost.clone())).expect("once");
            ClusterMetrics {
                nats_connected: gauge(
                    r,
                    "peerhub_cluster_nats_connected",
                    "1 while this node's NATS connection is up.",
                ),
                router_leader: gauge(
                    r,
                    "peerhub_cluster_router_leader",
                    "1 on the node leading the escalation router.",
                ),
                flags_not_passed: counter(
                    r,
                    "peerhub_cluster_flags_not_passed_total",
                    "Flags that reached no router leader in time, refused with the helplines.",
                ),
                groups_lost,
                audit_unshipped: gauge(
                    r,
                    "peerhub_cluster_audit_unshipped",
                    "This node's audit entries not yet shipped into the cluster's audit stream.",
                ),
                audit_shipping_stopped: gauge(
                    r,
                    "peerhub_cluster_audit_shipping_stopped",
                    "1 when this node stopped shipping its audit chain: the stream holds more.",
                ),
            }
        })
    }

    /// The cluster's metrics, on a node of a cluster.
    pub fn cluster(&self) -> Option<&ClusterMetrics> {
        self.cluster.get()
    }

    /// Counts a flag the store could not keep.
    pub fn flag_unstored(&self) {
        self.flags_unstored.inc();
    }

    /// Counts a refused request.
    pub fn rejected(&self, code: &str) {
        self.rejected.with_label_values(&[code]).inc();
    }

    /// Counts an out-of-band alert.
    pub fn alert_sent(&self, channel: &str, outcome: &str) {
        self.alerts.with_label_values(&[channel, outcome]).inc();
    }

    /// The rate-limit hit counter, labelled `limit`, for [`crate::limits::Limits`].
    pub fn rate_limit_hits(&self) -> IntCounterVec {
        self.rate_limited.clone()
    }

    /// The router's view of its unresolved escalations, after every change.
    pub fn set_escalations<'a>(&self, open: impl IntoIterator<Item = &'a EscalationRecord>) {
        let mut summary = EscalationSummary::default();
        for record in open {
            let view = &record.view;
            if view.status == EscalationStatus::Resolved {
                continue;
            }
            let bucket = (view.severity, view.level);
            match summary.open.iter_mut().find(|(k, _)| *k == bucket) {
                Some((_, n)) => *n += 1,
                None => summary.open.push((bucket, 1)),
            }
            if view.status == EscalationStatus::Open {
                summary.unacknowledged += 1;
                summary.oldest_unacknowledged_ms = Some(
                    summary
                        .oldest_unacknowledged_ms
                        .map_or(view.created_ms, |t| t.min(view.created_ms)),
                );
            }
        }
        *self.escalations.lock().unwrap_or_else(|p| p.into_inner()) = summary;
    }

    /// The Prometheus text for a scrape, with the gauges read now.
    pub fn render(&self, readings: Readings) -> String {
        let gauge_value = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.connections
            .set(gauge_value(readings.connections as u64));
        self.pending_logins
            .set(gauge_value(readings.pending_logins as u64));
        self.groups_live
            .set(gauge_value(readings.groups_live as u64));
        self.store_bytes.set(gauge_value(readings.store_bytes));
        self.free_bytes.set(gauge_value(readings.free_bytes));
        self.low_space.set(i64::from(readings.low_space));
        if let (Some(cluster), Some(up)) = (self.cluster(), readings.nats_connected) {
            cluster.nats_connected.set(i64::from(up));
        }
        for fault in ["disk_full", "write_failed", "compaction_failed"] {
            self.store_fault
                .with_label_values(&[fault])
                .set(i64::from(readings.store_fault == Some(fault)));
        }
        let summary = self
            .escalations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.escalations_open.reset();
        // Every severity at the levels people ask about, so an alert rule sees 0
        // rather than no series at all.
        for severity in [Severity::Concern, Severity::Urgent, Severity::Emergency] {
            for level in 1..=4u8 {
                let n = summary
                    .open
                    .iter()
                    .find(|(k, _)| *k == (severity, level))
                    .map_or(0, |(_, n)| *n);
                self.escalations_open
                    .with_label_values(&[severity_label(severity), &level.to_string()])
                    .set(n);
            }
        }
        self.escalations_unacknowledged.set(summary.unacknowledged);
        let age_ms = summary
            .oldest_unacknowledged_ms
            .map_or(0, |t| readings.now_ms.saturating_sub(t));
        self.oldest_unacknowledged.set(age_ms as f64 / 1000.0);
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_zero_escalations() {
        let metrics = Metrics::new();
        metrics.messages.inc();
        metrics.rejected("bad_signature");
        metrics
            .rate_limit_hits()
            .with_label_values(&["messages"])
            .inc();
        let text = metrics.render(Readings {
            connections: 3,
            pending_logins: 1,
            groups_live: 2,
            store_bytes: 4096,
            now_ms: 10_000,
            store_fault: None,
            free_bytes: 0,
            low_space: false,
            nats_connected: None,
        });
        for line in [
            "peerhub_messages_total 1",
            "peerhub_connections 3",
            "peerhub_connections_pending_login 1",
            "peerhub_groups_live 2",
            "peerhub_store_bytes 4096",
            "peerhub_rejected_total{code=\"bad_signature\"} 1",
            "peerhub_rate_limited_total{limit=\"messages\"} 1",
            "peerhub_escalations_open{level=\"1\",severity=\"emergency\"} 0",
            "peerhub_escalations_unacknowledged 0",
            "peerhub_escalation_oldest_unacknowledged_seconds 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
