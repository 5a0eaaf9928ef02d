//! `peerhub escalation list|resolve`: the operator's hands on the escalation queue
//! for the day something goes wrong (a supervisor who left, a test flag nobody can
//! close, a queue that must be seen from the machine).
//!
//! One implementation for both ways a command reaches a hub: a stopped hub's folder
//! ([`super::ops::Operator`]), and a running hub's router task, which resolves
//! through [`resolve`] too so its own state (deadlines, pages, who is told) stays
//! right. A listing is bounded summaries only — never a flag's words, its raiser,
//! the person it is about, or the context messages. Every use is signed with the
//! hub's key and written to the audit chain.

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{EscalationStatus, EscalationStep};
use peerhub_protocol::frame::{Channel, Note};
use peerhub_protocol::payload::AdminPayload;
use peerhub_protocol::SignedEnvelope;
use serde::{Deserialize, Serialize};

use super::AdminError;
use crate::audit::{action, AuditLog, NewEntry};
use crate::store::records::{EscalationRecord, StoredEvent};
use crate::store::Store;

/// Summaries a listing shows unless told otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 200;
/// The most a listing shows.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// Which escalations a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationFilter {
    /// Open or acknowledged: everything not yet resolved.
    #[default]
    Unresolved,
    /// Waiting to be acknowledged.
    Open,
    /// Acknowledged, not yet resolved.
    Acknowledged,
    /// Resolved.
    Resolved,
    /// Every one the store still keeps.
    All,
}

impl EscalationFilter {
    fn admits(self, status: EscalationStatus) -> bool {
        match self {
            Self::Unresolved => status != EscalationStatus::Resolved,
            Self::Open => status == EscalationStatus::Open,
            Self::Acknowledged => status == EscalationStatus::Acknowledged,
            Self::Resolved => status == EscalationStatus::Resolved,
            Self::All => true,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unresolved => "unresolved",
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
            Self::All => "all",
        }
    }
}

/// One escalation as an operator lists it: no words, no people but its handler.
pub fn summary(record: &EscalationRecord, now_ms: u64) -> serde_json::Value {
    let view = &record.view;
    serde_json::json!({
        "id": view.id,
        "group": view.group,
        "severity": view.severity,
        "status": view.status,
        "level": view.level,
        "age_s": now_ms.saturating_sub(view.created_ms) / 1000,
        "created_ms": view.created_ms,
        "handler": view.handler,
    })
}

/// Escalations matching `filter`, the unresolved by risk (most serious, then the
/// longest waiting) and then the resolved, newest first; at most `limit`.
pub fn list(
    store: &Store,
    filter: EscalationFilter,
    limit: usize,
    now_ms: u64,
) -> Result<serde_json::Value, AdminError> {
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(AdminError::Invalid(format!(
            "--limit is from 1 to {MAX_LIST_LIMIT}"
        )));
    }
    let mut matching: Vec<EscalationRecord> = store
        .escalations()?
        .into_iter()
        .filter(|e| filter.admits(e.view.status))
        .collect();
    matching.sort_by(|a, b| {
        let resolved = |e: &EscalationRecord| e.view.status == EscalationStatus::Resolved;
        resolved(a).cmp(&resolved(b)).then_with(|| {
            if resolved(a) {
                b.view.id.cmp(&a.view.id)
            } else {
                b.view
                    .severity
                    .cmp(&a.view.severity)
                    .then(a.view.created_ms.cmp(&b.view.created_ms))
                    .then(a.view.id.cmp(&b.view.id))
            }
        })
    });
    let total = matching.len();
    let shown: Vec<serde_json::Value> = matching
        .iter()
        .take(limit)
        .map(|e| summary(e, now_ms))
        .collect();
    Ok(serde_json::json!({
        "filter": filter.as_str(),
        "matching": total,
        "shown": shown.len(),
        "escalations": shown,
    }))
}

/// An outcome is one text field like a supervisor's.
fn check_outcome(outcome: &str) -> Result<(), AdminError> {
    crate::text::check_text("outcome", outcome, peerhub_protocol::limits::MAX_TEXT_CHARS)
        .map(|_| ())
        .map_err(|e| AdminError::Invalid(format!("--outcome: {e}")))
}

/// Why escalation `id` cannot be resolved when no open one has it.
pub fn not_open(store: &Store, id: u64) -> AdminError {
    match store.escalation(id) {
        Ok(Some(record)) if record.view.status == EscalationStatus::Resolved => {
            AdminError::Invalid(format!(
                "escalation {id} is already resolved; nothing was changed"
            ))
        }
        Ok(Some(_)) => AdminError::Invalid(format!(
            "escalation {id} is not open on this hub; nothing was changed"
        )),
        Ok(None) => AdminError::Invalid(format!("no escalation {id}; nothing was changed")),
        Err(error) => error.into(),
    }
}

/// Resolves `record` (not yet resolved) with `outcome` as the operator: an
/// `escalation.resolve` audit entry carrying the hub's signed `admin` request and
/// the first flag, then the record, resolved, with a `resolved` step of the hub's
/// (no actor). Not yet durable: the caller commits or flushes. Returns its summary.
pub fn resolve(
    store: &Store,
    audit: &AuditLog,
    record: &mut EscalationRecord,
    outcome: String,
    now_ms: u64,
) -> Result<serde_json::Value, AdminError> {
    check_outcome(&outcome)?;
    if record.view.status == EscalationStatus::Resolved {
        return Err(not_open(store, record.view.id));
    }
    let hub = SigningKey::from_bytes(&store.hub_signing_seed()?);
    let payload = AdminPayload {
        action: action::ESCALATION_RESOLVE.into(),
        subject: Some(record.view.about),
        group: Some(record.view.group.clone()),
        detail: Some(
            serde_json::json!({ "escalation": record.view.id, "outcome": outcome }).to_string(),
        ),
        counter: now_ms,
        ts: now_ms,
    };
    let env = SignedEnvelope::sign_json(&hub, Kind::Admin, &payload);
    let mut entry = NewEntry::new(now_ms, action::ESCALATION_RESOLVE, env.clone())
        .group(record.view.group.clone())
        .subject(record.view.about);
    if let Some(first) = record.view.flags.first() {
        entry = entry.envelope(first.clone());
    }
    // The entry first: a crash may then lose the change, never keep it unrecorded.
    audit.append(entry)?;
    let view = &mut record.view;
    view.status = EscalationStatus::Resolved;
    view.deadline_ms = None;
    view.waiting_for.clear();
    view.outcome = Some(outcome);
    // A step of the hub's own, like a deadline's (no person signed it): the hub's
    // signed request is in the audit entry.
    view.steps.push(EscalationStep {
        ts: now_ms,
        step: "resolved".into(),
        actor: None,
        env: None,
        level: None,
        to: Vec::new(),
        text: None,
    });
    store.put_escalation(record)?;
    Ok(summary(record, now_ms))
}

/// On a STOPPED hub (no group task orders the group's channels): writes the
/// `support_resolved` note about `record`'s person into its group's staff
/// channel, at the channel's next seq, so the facilitators' console stops showing
/// the request. Not yet durable: the caller flushes.
pub fn note_resolved_in_stopped_folder(
    store: &Store,
    record: &EscalationRecord,
    now_ms: u64,
) -> Result<(), AdminError> {
    let group = &record.view.group;
    let Some(mut state) = store.group_state(group)? else {
        return Ok(());
    };
    let seq = match state.heads.iter_mut().find(|(c, _)| *c == Channel::Staff) {
        Some((_, head)) => {
            *head += 1;
            *head
        }
        None => {
            state.heads.push((Channel::Staff, 1));
            1
        }
    };
    let event = StoredEvent {
        seq,
        ts: now_ms,
        env: None,
        note: Some(Note::SupportResolved {
            member: record.view.about,
        }),
        redacted: None,
    };
    store.put_event(group, &Channel::Staff, &event)?;
    store.put_group_state(group, &state)?;
    Ok(())
}

/// Records that an operator listed the queue (who looked, and at what).
pub fn audit_list(
    store: &Store,
    audit: &AuditLog,
    filter: EscalationFilter,
    now_ms: u64,
) -> Result<(), AdminError> {
    let hub = SigningKey::from_bytes(&store.hub_signing_seed()?);
    let payload = AdminPayload {
        action: action::ADMIN_ESCALATION_LIST.into(),
        subject: None,
        group: None,
        detail: Some(serde_json::json!({ "filter": filter.as_str() }).to_string()),
        counter: now_ms,
        ts: now_ms,
    };
    let env = SignedEnvelope::sign_json(&hub, Kind::Admin, &payload);
    audit.append(NewEntry::new(now_ms, action::ADMIN_ESCALATION_LIST, env))?;
    Ok(())
}
