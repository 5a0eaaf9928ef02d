//! Retention: how long each kind of data is kept, and the background job that
//! deletes what has expired and records that it did.
//!
//! # What is kept, and for how long
//!
//! | kind | setting | default | what "older than" means |
//! | ---- | ------- | ------- | ----------------------- |
//! | chat history (every channel of a group: the main conversation, the facilitators' staff channel, private check-ins) | the group's own `history_days`, else `chat_history_days` | 30 days | the time the hub ordered the message |
//! | resolved escalations | `safeguarding_days` | 2922 days (≈ 8 years) | the time it was resolved |
//! | co-produced records | `safeguarding_days` | 2922 days | the time of its newest contribution |
//! | audit entries | `audit_days` | 2922 days | the time of the action |
//!
//! **The safeguarding and audit defaults are placeholders, not advice.** How long
//! safeguarding records and their audit trail must be kept is a legal and policy
//! decision (records about children, for instance, are often kept far longer).
//! The operator must set `safeguarding_days` and `audit_days` to their
//! organisation's retention policy. `None` (in the configuration file: `0`) keeps a
//! kind for ever.
//!
//! What is never deleted by age: escalations that are still open or acknowledged
//! (someone may still be waiting for help), accounts and roles, group settings and
//! membership, invites, and audit entries anywhere but at the front of the chain.
//! Groups marked `ephemeral` are already emptied when each session ends
//! ([`crate::groups`]); while a session runs, their history follows the rule above.
//!
//! # The job
//!
//! Every `interval` (default one hour; the first pass runs at start) one pass, by
//! the hub's clock:
//!
//! 1. finds every group's events older than the group's cutoff, resolved
//!    escalations and records older than the safeguarding cutoff, and the run of
//!    audit entries at the front of the chain older than the audit cutoff;
//! 2. if it found anything, appends **one** `retention.run` audit entry, signed with
//!    the hub's own key (`admin` envelope), whose `detail` gives the counts per kind,
//!    the settings, the cutoffs, and the last audit seq pruned — never content or
//!    anyone's key;
//! 3. deletes exactly what it found (an escalation or record changed since it was
//!    found is kept), and prunes the audit chain's front behind an anchor so
//!    `peerhub audit verify` still checks what is left ([`crate::audit`],
//!    "Retention");
//! 4. commits, then logs the counts (never content or keys).
//!
//! A pass that finds nothing writes nothing. A pass that fails is logged and tried
//! again at the next interval. [`run_pass`] is the pass itself on a store and its
//! audit log (for commands on a stopped hub's folder: flush after it);
//! [`run_once`] runs it on a running hub and commits.
//!
//! Co-produced records carry no server time of their own; a record is dated by
//! the newest `ts` its contributions were signed with, which admission holds to
//! within [`peerhub_protocol::limits::MAX_CLOCK_SKEW_MS`] of the hub's clock.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::EscalationStatus;
use peerhub_protocol::payload::{AdminPayload, Retention};
use peerhub_protocol::SignedEnvelope;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::audit::{self, action, AuditLog, NewEntry};
use crate::error::ServerError;
use crate::hub::Hub;
use crate::store::records::{EscalationRecord, RecordRecord};
use crate::store::retention::Expired;
use crate::store::{Store, StoreError};

/// One day, in milliseconds.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How long each kind of data is kept. `None` (or `Some(0)`) keeps it for ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Chat history, in days, for groups that set no `history_days` of their own
    /// (a group's own setting wins, shorter or longer). Default 30.
    pub chat_history_days: Option<u32>,
    /// Resolved escalations and co-produced records, in days. Default 2922 (about
    /// 8 years): a placeholder; set your organisation's policy.
    pub safeguarding_days: Option<u32>,
    /// Audit entries, in days. Default 2922: a placeholder; set your policy.
    pub audit_days: Option<u32>,
    /// Time between passes. Default one hour.
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            chat_history_days: Some(30),
            safeguarding_days: Some(2922),
            audit_days: Some(2922),
            interval: Duration::from_secs(60 * 60),
        }
    }
}

/// The time before which data kept for `days` has expired at `now_ms`; `None`
/// when it is kept for ever (`None` or 0 days). Data expires when its time is
/// strictly before the cutoff.
pub fn cutoff(now_ms: u64, days: Option<u32>) -> Option<u64> {
    match days {
        None | Some(0) => None,
        Some(days) => Some(now_ms.saturating_sub(u64::from(days) * DAY_MS)),
    }
}

/// The days a group's chat history is kept: its own setting, else the default.
pub fn chat_days(group: &Retention, default: Option<u32>) -> Option<u32> {
    group.history_days.or(default)
}

/// When an escalation was resolved; `None` while it is open or acknowledged
/// (those are never deleted by age). Its `resolved` step's time, else (a record
/// without one) its last step's, else its creation.
pub fn resolved_at(record: &EscalationRecord) -> Option<u64> {
    if record.view.status != EscalationStatus::Resolved {
        return None;
    }
    let steps = &record.view.steps;
    let resolved = steps.iter().rev().find(|s| s.step == "resolved");
    Some(
        resolved
            .or(steps.last())
            .map(|s| s.ts)
            .unwrap_or(record.view.created_ms),
    )
}

/// A record's date: the newest `ts` among its signed contributions (`None` if
/// none can be read, and then it is kept).
pub fn record_dated(record: &RecordRecord) -> Option<u64> {
    #[derive(Deserialize)]
    struct Ts {
        ts: u64,
    }
    record
        .entries
        .iter()
        .filter_map(|env| serde_json::from_str::<Ts>(&env.payload).ok())
        .map(|t| t.ts)
        .max()
}

/// The cutoffs a pass used (ms since the Unix epoch; `None`: kept for ever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cutoffs {
    /// Chat history of groups without their own setting.
    pub chat_default_ms: Option<u64>,
    /// Resolved escalations and records.
    pub safeguarding_ms: Option<u64>,
    /// Audit entries.
    pub audit_ms: Option<u64>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// The hub's time the pass ran at.
    pub now_ms: u64,
    /// The cutoffs it used.
    pub cutoffs: Cutoffs,
    /// Events deleted (every channel of every group).
    pub chat_events: u64,
    /// Resolved escalations deleted.
    pub escalations: u64,
    /// Co-produced records deleted.
    pub records: u64,
    /// Audit entries pruned from the front of the chain.
    pub audit_entries: u64,
    /// The last audit seq pruned, if any were.
    pub audit_through_seq: Option<u64>,
    /// The seq of the `retention.run` entry recording the pass, if one was written.
    pub audit_seq: Option<u64>,
}

impl RetentionReport {
    /// Whether the pass deleted anything (and so wrote a `retention.run` entry).
    pub fn deleted_anything(&self) -> bool {
        self.audit_seq.is_some()
    }
}

/// The `detail` of a `retention.run` entry: counts, settings and cutoffs only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDetail {
    /// Events found expired.
    pub chat_events: u64,
    /// Resolved escalations found expired.
    pub escalations: u64,
    /// Records found expired.
    pub records: u64,
    /// Audit entries pruned.
    pub audit_entries: u64,
    /// The last audit seq pruned (the new anchor), if any.
    pub audit_through_seq: Option<u64>,
    /// The default chat history setting, in days.
    pub chat_history_days: Option<u32>,
    /// The safeguarding setting, in days.
    pub safeguarding_days: Option<u32>,
    /// The audit setting, in days.
    pub audit_days: Option<u32>,
    /// The cutoffs.
    pub cutoffs: Cutoffs,
}

/// One pass on `store` at `now_ms`: finds what expired, records it in `audit`,
/// deletes it. Not durable until the caller commits (or flushes). Blocking: it
/// scans whole trees.
pub fn run_pass(
    store: &Store,
    audit: &AuditLog,
    settings: &RetentionSettings,
    now_ms: u64,
) -> Result<RetentionReport, StoreError> {
    run_pass_with(store, audit, settings, now_ms, None)
}

/// [`run_pass`], but with the chat history's part already done through the
/// groups' logs (cluster mode: `chat_events` went there, see
/// [`crate::cluster::trim`]): this store's events are left alone, and the count
/// is recorded with the rest.
fn run_pass_with(
    store: &Store,
    audit: &AuditLog,
    settings: &RetentionSettings,
    now_ms: u64,
    chat_in_cluster: Option<u64>,
) -> Result<RetentionReport, StoreError> {
    let cutoffs = Cutoffs {
        chat_default_ms: cutoff(now_ms, settings.chat_history_days),
        safeguarding_ms: cutoff(now_ms, settings.safeguarding_days),
        audit_ms: cutoff(now_ms, settings.audit_days),
    };
    let mut report = RetentionReport {
        now_ms,
        cutoffs,
        ..RetentionReport::default()
    };

    // 1. Find.
    let mut expired = Expired::default();
    let groups = match chat_in_cluster {
        Some(_) => Vec::new(),
        None => store.groups()?,
    };
    for group in groups {
        let days = chat_days(&group.retention, settings.chat_history_days);
        if let Some(before) = cutoff(now_ms, days) {
            store.find_expired_events(&mut expired, &group.id, before)?;
        }
    }
    if let Some(before) = cutoffs.safeguarding_ms {
        store.find_expired_escalations(&mut expired, |e| {
            resolved_at(e).is_some_and(|at| at < before)
        })?;
        store.find_expired_records(&mut expired, |r| {
            record_dated(r).is_some_and(|at| at < before)
        })?;
    }
    let front = match cutoffs.audit_ms {
        Some(before) => audit::expired_front(store, before)?,
        None => None,
    };
    // A prune cut short (anchor written, entries not all removed): finish it.
    let anchor = audit::anchor(store)?;
    if anchor.seq > 0 {
        let leftover = store.remove_audit_through(anchor.seq)?;
        if leftover > 0 {
            tracing::info!(leftover, "retention finished an interrupted audit prune");
        }
    }
    let cluster_events = chat_in_cluster.unwrap_or(0);
    if expired.is_empty() && front.is_none() && cluster_events == 0 {
        return Ok(report);
    }

    // 2. Record, before anything is deleted.
    let detail = RunDetail {
        chat_events: expired.events() as u64 + cluster_events,
        escalations: expired.escalations() as u64,
        records: expired.records() as u64,
        audit_entries: front.map_or(0, |(_, count)| count),
        audit_through_seq: front.map(|(through, _)| through.seq),
        chat_history_days: settings.chat_history_days,
        safeguarding_days: settings.safeguarding_days,
        audit_days: settings.audit_days,
        cutoffs,
    };
    let payload = AdminPayload {
        action: action::RETENTION_RUN.into(),
        subject: None,
        group: None,
        detail: Some(serde_json::to_string(&detail).unwrap_or_default()),
        counter: now_ms,
        ts: now_ms,
    };
    let hub = SigningKey::from_bytes(&store.hub_signing_seed()?);
    let env = SignedEnvelope::sign_json(&hub, Kind::Admin, &payload);
    report.audit_seq = Some(audit.append(NewEntry::new(now_ms, action::RETENTION_RUN, env))?);

    // 3. Delete exactly that.
    let found = (expired.events(), expired.escalations(), expired.records());
    let deleted = store.delete_expired(expired)?;
    if (deleted.events, deleted.escalations, deleted.records) != found {
        tracing::info!(
            events = found.0 - deleted.events,
            escalations = found.1 - deleted.escalations,
            records = found.2 - deleted.records,
            "retention kept items changed or removed since they were found"
        );
    }
    report.chat_events = deleted.events as u64 + cluster_events;
    report.escalations = deleted.escalations as u64;
    report.records = deleted.records as u64;
    if let Some((through, count)) = front {
        audit.prune(through)?;
        report.audit_entries = count;
        report.audit_through_seq = Some(through.seq);
    }
    Ok(report)
}

/// Runs one pass on a running hub at `now_ms` (off the async workers) and commits
/// what it wrote before returning. In cluster mode the chat history expires
/// through the groups' logs first ([`crate::cluster::expiry`]).
pub async fn run_once(
    hub: &Hub,
    settings: &RetentionSettings,
    now_ms: u64,
) -> Result<RetentionReport, ServerError> {
    let chat_in_cluster = match &hub.cluster {
        Some(node) => Some(crate::cluster::expiry::pass(hub, node, settings, now_ms).await? as u64),
        None => None,
    };
    let (store, audit, settings) = (hub.store.clone(), hub.audit.clone(), settings.clone());
    let report = tokio::task::spawn_blocking(move || {
        run_pass_with(&store, &audit, &settings, now_ms, chat_in_cluster)
    })
    .await
    .map_err(|_| ServerError::ShuttingDown)??;
    if report.deleted_anything() {
        hub.committer.commit().await?;
        tracing::info!(
            chat_events = report.chat_events,
            escalations = report.escalations,
            records = report.records,
            audit_entries = report.audit_entries,
            audit_seq = report.audit_seq,
            "retention deleted expired data"
        );
    } else {
        tracing::debug!("retention: nothing expired");
    }
    // Cluster mode: the router's log still holds the escalations just deleted
    // from this store; its leader trims it behind what is left.
    if hub.cluster.is_some() && report.escalations > 0 {
        match hub.router.rebase_log().await {
            Ok(Some(rebased)) => tracing::debug!(erased = rebased.erased, "router log trimmed"),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "the router's log could not be trimmed; the next pass tries again")
            }
        }
    }
    Ok(report)
}

/// How the job is doing (tests and, later, metrics).
#[derive(Debug, Clone, Default)]
pub struct JobStatus {
    /// Passes finished, failed or not.
    pub passes: u64,
    /// Passes that failed.
    pub failures: u64,
    /// The last pass that succeeded.
    pub last: Option<RetentionReport>,
}

/// A view of the running job.
#[derive(Debug, Clone)]
pub struct RetentionHandle {
    status: watch::Receiver<JobStatus>,
}

impl RetentionHandle {
    /// The job's status now.
    pub fn status(&self) -> JobStatus {
        self.status.borrow().clone()
    }

    /// Waits for a successful pass that ran at hub time `now_ms` or later and
    /// returns its report; `None` if the job stopped first.
    pub async fn pass_at_or_after(&self, now_ms: u64) -> Option<RetentionReport> {
        let mut status = self.status.clone();
        let seen = status
            .wait_for(|s| s.last.as_ref().is_some_and(|r| r.now_ms >= now_ms))
            .await
            .ok()?;
        seen.last.clone()
    }
}

/// Starts the job on `tracker`: a pass now, then one every `settings.interval`,
/// until the hub starts shutting down (a pass under way finishes first).
pub fn start(hub: Arc<Hub>, settings: RetentionSettings, tracker: &TaskTracker) -> RetentionHandle {
    let (tx, rx) = watch::channel(JobStatus::default());
    tracker.spawn(async move {
        let mut ticker = tokio::time::interval(settings.interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = hub.shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = hub.clock.now_ms();
            let outcome = run_once(&hub, &settings, now).await;
            tx.send_modify(|status| {
                status.passes += 1;
                match outcome {
                    Ok(report) => status.last = Some(report),
                    Err(error) => {
                        status.failures += 1;
                        tracing::error!(%error, "retention pass failed; trying again at the next interval");
                    }
                }
            });
        }
        tracing::debug!("retention job stopped");
    });
    RetentionHandle { status: rx }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::escalation::{EscalationStep, EscalationView, Severity};
    use peerhub_protocol::{GroupId, PublicKey};

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_cutoff_is_now_less_whole_days_and_none_or_zero_keeps_for_ever() {
        assert_eq!(cutoff(NOW, Some(1)), Some(NOW - 86_400_000));
        assert_eq!(cutoff(NOW, Some(30)), Some(NOW - 30 * 86_400_000));
        assert_eq!(
            cutoff(NOW, Some(2922)),
            Some(NOW - 2922 * 86_400_000),
            "no overflow for years"
        );
        assert_eq!(cutoff(NOW, None), None);
        assert_eq!(
            cutoff(NOW, Some(0)),
            None,
            "0 keeps for ever, as in the file"
        );
        assert_eq!(
            cutoff(5, Some(1)),
            Some(0),
            "before the epoch: nothing expires"
        );
        assert_eq!(cutoff(NOW, Some(u32::MAX)), Some(0));
    }

    #[test]
    fn a_groups_own_history_days_win_over_the_default() {
        let own = |days| Retention {
            ephemeral: false,
            history_days: days,
        };
        assert_eq!(chat_days(&own(Some(2)), Some(30)), Some(2));
        assert_eq!(chat_days(&own(Some(90)), Some(30)), Some(90), "longer too");
        assert_eq!(chat_days(&own(None), Some(30)), Some(30));
        assert_eq!(chat_days(&own(None), None), None);
    }

    #[test]
    fn the_defaults_are_thirty_days_eight_years_and_an_hour() {
        let d = RetentionSettings::default();
        assert_eq!(d.chat_history_days, Some(30));
        assert_eq!(d.safeguarding_days, Some(2922));
        assert_eq!(d.audit_days, Some(2922));
        assert_eq!(d.interval, Duration::from_secs(3600));
    }

    fn step(ts: u64, name: &str) -> EscalationStep {
        EscalationStep {
            ts,
            step: name.into(),
            actor: None,
            env: None,
            level: None,
            to: Vec::new(),
            text: None,
        }
    }

    fn escalation(status: EscalationStatus, steps: Vec<EscalationStep>) -> EscalationRecord {
        EscalationRecord {
            view: EscalationView {
                id: 1,
                group: GroupId::parse("g").unwrap(),
                about: PublicKey([1; 32]),
                severity: Severity::Concern,
                status,
                level: 0,
                waiting_for: Vec::new(),
                deadline_ms: None,
                created_ms: 10,
                handler: None,
                flags: Vec::new(),
                context: Vec::new(),
                steps,
                outcome: None,
            },
            tell_subject: true,
            flaggers: Vec::new(),
            merged: 0,
            counted: 0,
            consent: None,
            name: None,
        }
    }

    #[test]
    fn an_escalation_is_dated_by_its_resolution_and_never_while_unresolved() {
        let steps = vec![step(10, "raised"), step(20, "resolved"), step(30, "note")];
        assert_eq!(
            resolved_at(&escalation(EscalationStatus::Resolved, steps.clone())),
            Some(20)
        );
        assert_eq!(
            resolved_at(&escalation(EscalationStatus::Resolved, vec![step(15, "x")])),
            Some(15)
        );
        assert_eq!(
            resolved_at(&escalation(EscalationStatus::Resolved, Vec::new())),
            Some(10)
        );
        for open in [EscalationStatus::Open, EscalationStatus::Acknowledged] {
            assert_eq!(resolved_at(&escalation(open, steps.clone())), None);
        }
    }

    #[test]
    fn a_record_is_dated_by_its_newest_contribution() {
        let signer = SigningKey::from_bytes(&[4; 32]);
        let sign = |ts: u64| {
            SignedEnvelope::sign(
                &signer,
                Kind::Record,
                format!(r#"{{"group":"g","text":"t","counter":1,"ts":{ts}}}"#),
            )
        };
        let record = |entries| RecordRecord {
            id: 1,
            group: GroupId::parse("g").unwrap(),
            about: None,
            entries,
        };
        assert_eq!(
            record_dated(&record(vec![sign(5), sign(9), sign(7)])),
            Some(9)
        );
        assert_eq!(record_dated(&record(Vec::new())), None);
    }

    // ---- pruning the audit chain's front ----

    fn grant(n: u8) -> SignedEnvelope {
        SignedEnvelope::sign(
            &SigningKey::from_bytes(&[n; 32]),
            Kind::Redeem,
            format!(r#"{{"token":"t{n}","counter":{n},"ts":1000}}"#),
        )
    }

    /// A store whose chain holds one entry at each of `times`.
    fn chain(times: &[u64]) -> (tempfile::TempDir, Store, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::open(store.clone()).unwrap();
        for (i, ts) in times.iter().enumerate() {
            log.append(NewEntry::new(*ts, action::ROLE_GRANT, grant(i as u8 + 1)))
                .unwrap();
        }
        (dir, store, log)
    }

    fn stored(store: &Store, seq: u64) -> Vec<u8> {
        store
            .audit_entries()
            .map(Result::unwrap)
            .find(|(s, _)| *s == seq)
            .unwrap()
            .1
    }

    fn settings(audit_days: Option<u32>) -> RetentionSettings {
        RetentionSettings {
            chat_history_days: None,
            safeguarding_days: None,
            audit_days,
            interval: Duration::from_millis(10),
        }
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_anchor_and_says_how_many_went() {
        let day = DAY_MS;
        let (_dir, store, log) = chain(&[NOW - 9 * day, NOW - 8 * day, NOW - 2 * day]);
        let before = audit::verify(&store).unwrap();
        assert_eq!((before.entries, before.pruned), (3, 0));
        let report = run_pass(&store, &log, &settings(Some(5)), NOW).unwrap();
        assert_eq!(report.audit_entries, 2);
        assert_eq!(report.audit_through_seq, Some(2));
        assert_eq!(report.audit_seq, Some(4), "the record of the pass follows");
        let after = audit::verify(&store).unwrap();
        assert_eq!((after.entries, after.pruned), (2, 2));
        assert_eq!(after.last_hash, log.tail().1);
        assert!(
            after.to_string().contains("2 earlier entries pruned"),
            "{after}"
        );
        let seqs: Vec<u64> = audit::entries(&store).map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, vec![3, 4]);
        let run = audit::entries(&store).last().unwrap().unwrap();
        assert_eq!(run.action, action::RETENTION_RUN);
        let hub = SigningKey::from_bytes(&store.hub_signing_seed().unwrap());
        assert_eq!(run.actor(), Some(PublicKey(hub.verifying_key().to_bytes())));
        // Nothing more has expired: a second pass writes nothing.
        let again = run_pass(&store, &log, &settings(Some(5)), NOW).unwrap();
        assert!(!again.deleted_anything());
        assert_eq!(log.tail().0, 4);
    }

    #[test]
    fn a_change_after_the_anchor_is_still_reported_at_its_entry() {
        let (_dir, store, log) = chain(&[1, 2, NOW]);
        run_pass(&store, &log, &settings(Some(1)), NOW).unwrap();
        assert_eq!(audit::anchor(&store).unwrap().seq, 2);
        // One changed byte in the first entry kept: it no longer hashes right.
        let good = stored(&store, 3);
        let text = String::from_utf8(good.clone()).unwrap();
        let bad = text.replacen(
            &format!(r#""ts":{NOW}"#),
            &format!(r#""ts":{}"#, NOW + 1),
            1,
        );
        store.put_audit_raw_for_tests(3, bad.as_bytes()).unwrap();
        let broken = audit::verify(&store).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(matches!(
            broken.reason,
            audit::BreakReason::WrongHash { .. }
        ));
        // An entry removed just after the anchor is missing, not pruned.
        store.put_audit_raw_for_tests(3, &good).unwrap();
        store.remove_audit_raw_for_tests(3).unwrap();
        let broken = audit::verify(&store).unwrap_err();
        assert_eq!(
            (broken.seq, broken.reason),
            (3, audit::BreakReason::Missing { next: 4 })
        );
        // A forged anchor hash no longer links to the first entry kept.
        store.put_audit_raw_for_tests(3, &good).unwrap();
        assert!(audit::verify(&store).is_ok());
        store.put_audit_anchor(2, [7; 32]).unwrap();
        let broken = audit::verify(&store).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(matches!(
            broken.reason,
            audit::BreakReason::WrongPrev { .. }
        ));
    }

    #[test]
    fn a_prune_cut_short_still_verifies_and_the_next_pass_ends_it() {
        let (_dir, store, log) = chain(&[1, 2, 3, NOW]);
        let (through, count) = audit::expired_front(&store, 10).unwrap().unwrap();
        assert_eq!((through.seq, count), (3, 3));
        // The anchor is written, the entries not yet removed (a crash in between).
        log.append(NewEntry::new(NOW, action::RETENTION_RUN, grant(9)))
            .unwrap();
        store.put_audit_anchor(through.seq, through.hash.0).unwrap();
        let report = audit::verify(&store).unwrap();
        assert_eq!((report.entries, report.pruned), (2, 3));
        let pass = run_pass(&store, &log, &settings(None), NOW).unwrap();
        assert!(!pass.deleted_anything());
        let seqs: Vec<u64> = audit::entries(&store).map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, vec![4, 5], "the leftovers are gone");
        assert_eq!(audit::verify(&store).unwrap().pruned, 3);
    }

    #[test]
    fn a_broken_stretch_is_never_pruned_and_the_tail_never_is() {
        let (_dir, store, log) = chain(&[1, 2, 3, NOW]);
        let text = String::from_utf8(stored(&store, 2)).unwrap();
        store
            .put_audit_raw_for_tests(2, text.replacen(r#""ts":2"#, r#""ts":1"#, 1).as_bytes())
            .unwrap();
        let (through, count) = audit::expired_front(&store, 10).unwrap().unwrap();
        assert_eq!(
            (through.seq, count),
            (1, 1),
            "stops before the broken entry"
        );
        let tail = audit::expired_front(&store, NOW + 1).unwrap().unwrap().0;
        assert!(log.prune(audit::Anchor { seq: 4, ..tail }).is_err());
    }

    #[test]
    fn a_log_over_a_fully_pruned_chain_links_to_the_anchor() {
        let (dir, store, log) = chain(&[1, 2]);
        let (through, _) = audit::expired_front(&store, 10).unwrap().unwrap();
        // What only a crash could leave: the anchor and no entry after it.
        store.put_audit_anchor(through.seq, through.hash.0).unwrap();
        store.remove_audit_through(through.seq).unwrap();
        drop(log);
        let log = AuditLog::open(store.clone()).unwrap();
        assert_eq!(log.tail(), (2, through.hash));
        assert_eq!(
            log.append(NewEntry::new(NOW, action::ROLE_GRANT, grant(3)))
                .unwrap(),
            3
        );
        assert_eq!(audit::verify(&store).unwrap().pruned, 2);
        drop(dir);
    }

    #[test]
    fn one_pass_deletes_exactly_what_expired_and_records_it_once() {
        use crate::store::records::{GroupRecord, StoredEvent};
        use peerhub_protocol::frame::Channel;
        use peerhub_protocol::payload::GroupKind;

        let (_dir, store, log) = chain(&[NOW]);
        let day = DAY_MS;
        let group = |id: &str, history_days| GroupRecord {
            id: GroupId::parse(id).unwrap(),
            title: id.into(),
            kind: GroupKind::DropIn,
            created_ms: 0,
            created_by: None,
            created_env: None,
            access_code_hash: None,
            schedule: Vec::new(),
            retention: Retention {
                ephemeral: false,
                history_days,
            },
            waiting_room: false,
        };
        let event = |seq, ts| StoredEvent {
            seq,
            ts,
            env: Some(grant(1)),
            note: None,
            redacted: None,
        };
        let pair = Channel::pair(PublicKey([1; 32]), PublicKey([2; 32]));
        for (id, own) in [("short", Some(2)), ("plain", None)] {
            store.create_group(&group(id, own)).unwrap();
            let g = GroupId::parse(id).unwrap();
            for channel in [Channel::Main, Channel::Staff, pair] {
                store
                    .put_event(&g, &channel, &event(1, NOW - 5 * day))
                    .unwrap();
                store.put_event(&g, &channel, &event(2, NOW - day)).unwrap();
            }
        }
        let mut resolved = escalation(
            EscalationStatus::Resolved,
            vec![
                step(NOW - 30 * day, "raised"),
                step(NOW - 20 * day, "resolved"),
            ],
        );
        let mut open = escalation(EscalationStatus::Open, vec![step(0, "raised")]);
        open.view.id = 2;
        store.put_escalation(&open).unwrap();
        store.put_escalation(&resolved).unwrap();
        resolved.view.id = 3;
        resolved.view.steps[1].ts = NOW - day;
        store.put_escalation(&resolved).unwrap();
        let settings = RetentionSettings {
            chat_history_days: Some(7),
            safeguarding_days: Some(10),
            audit_days: Some(10),
            interval: Duration::from_secs(1),
        };
        let report = run_pass(&store, &log, &settings, NOW).unwrap();
        // "short" keeps 2 days: its three channels' seq 1 go; "plain" keeps 7.
        assert_eq!(report.chat_events, 3);
        assert_eq!(report.escalations, 1);
        assert_eq!((report.records, report.audit_entries), (0, 0));
        let short = GroupId::parse("short").unwrap();
        for channel in [Channel::Main, Channel::Staff, pair] {
            assert!(store.event(&short, &channel, 1).unwrap().is_none());
            assert!(store.event(&short, &channel, 2).unwrap().is_some());
        }
        let left: Vec<u64> = store
            .escalations()
            .unwrap()
            .iter()
            .map(|e| e.view.id)
            .collect();
        assert_eq!(left, vec![2, 3], "the open one stays, however old");
        let run = audit::entries(&store).last().unwrap().unwrap();
        assert_eq!(run.action, action::RETENTION_RUN);
        assert_eq!(run.envelopes[0].kind, Kind::Admin);
        let payload: AdminPayload = run.envelopes[0].payload_as().unwrap();
        let detail: RunDetail = serde_json::from_str(payload.detail.as_deref().unwrap()).unwrap();
        assert_eq!(
            (detail.chat_events, detail.escalations, detail.records),
            (3, 1, 0)
        );
        assert_eq!(detail.cutoffs.chat_default_ms, Some(NOW - 7 * day));
        assert_eq!(payload.action, "retention.run");
        assert_eq!((payload.subject, payload.group), (None, None));
        assert!(audit::verify(&store).is_ok());
    }
}
