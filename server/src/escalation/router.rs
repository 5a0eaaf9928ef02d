//! The escalation router task. See the module map in `escalation/mod.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use peerhub_protocol::escalation::{
    Consent, ContextEvent, EscalationStatus, EscalationStep, EscalationView, RotaEntry,
};
use peerhub_protocol::frame::{Channel, Role, ServerFrame};
use peerhub_protocol::limits::MAX_TEXT_CHARS;
use peerhub_protocol::payload::{EscalationActPayload, EscalationAction, FlagPayload, RotaPayload};
use peerhub_protocol::{GroupId, ProtocolError, PublicKey, SignedEnvelope};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::alerts::{AlertSummary, Alerts};
use super::{rota, EscalationSettings, RouterCommand, RouterHandle, CONTEXT_MESSAGES};
use crate::audit::{AuditLog, NewEntry};
use crate::clock::Clock;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::outbound::{ConnId, FrameBytes, Outbox};
use crate::store::records::EscalationRecord;
use crate::store::{Committer, Store, StoreError};
use crate::text::check_text;

/// How often the router looks at the clock while a deadline is pending.
const TIMER_POLL: Duration = Duration::from_secs(1);
/// The last routing level: nobody acknowledged; people were told.
const UNANSWERED: u8 = 4;

#[derive(Debug)]
struct Online {
    key: PublicKey,
    roles: Vec<Role>,
    outbox: Outbox,
}

/// Owns every unresolved escalation and routes it.
pub struct EscalationRouter {
    store: Store,
    committer: Committer,
    clock: Clock,
    audit: Arc<AuditLog>,
    settings: EscalationSettings,
    rx: mpsc::Receiver<RouterCommand>,
    stop: CancellationToken,
    online: HashMap<ConnId, Online>,
    open: BTreeMap<u64, EscalationRecord>,
    rota: Vec<RotaEntry>,
    covered: bool,
    alerts: Alerts,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for EscalationRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscalationRouter")
            .field("open", &self.open.len())
            .field("online", &self.online.len())
            .finish_non_exhaustive()
    }
}

fn bytes(frame: &ServerFrame) -> FrameBytes {
    FrameBytes::from(frame.to_json())
}

fn text(field: &'static str, value: &str) -> Result<(), ServerError> {
    check_text(field, value, MAX_TEXT_CHARS).map(|_| ())
}

fn is_staff(roles: &[Role]) -> bool {
    roles
        .iter()
        .any(|r| matches!(r, Role::Supervisor | Role::Admin))
}

impl EscalationRouter {
    /// Loads every unresolved escalation and the rota, and starts the task on
    /// `tracker`. It stops when `stop` is cancelled.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        store: Store,
        committer: Committer,
        clock: Clock,
        audit: Arc<AuditLog>,
        settings: EscalationSettings,
        tracker: &TaskTracker,
        stop: CancellationToken,
        metrics: Arc<Metrics>,
        alerts: Alerts,
    ) -> Result<RouterHandle, StoreError> {
        let open = store
            .escalations()?
            .into_iter()
            .filter(|e| e.view.status != EscalationStatus::Resolved)
            .map(|e| (e.view.id, e))
            .collect::<BTreeMap<_, _>>();
        let rota = store.rota()?;
        let (tx, rx) = mpsc::channel(1024);
        let now = clock.now_ms();
        let router = Self {
            covered: rota::covered(&rota, now),
            store,
            committer,
            clock,
            audit,
            settings,
            rx,
            stop,
            online: HashMap::new(),
            open,
            rota,
            alerts,
            metrics,
        };
        if !router.open.is_empty() {
            tracing::info!(
                pending = router.open.len(),
                "escalations re-armed after start"
            );
        }
        tracker.spawn(router.run());
        Ok(RouterHandle { tx })
    }

    async fn run(mut self) {
        // Re-page what was pending when the hub stopped (at least once, never never).
        let pending: Vec<u64> = self
            .open
            .values()
            .filter(|e| e.view.status == EscalationStatus::Open)
            .map(|e| e.view.id)
            .collect();
        for id in pending {
            self.page(id);
        }
        self.metrics.set_escalations(self.open.values());
        loop {
            let wait = self.next_wake().map(|at| {
                Duration::from_millis(at.saturating_sub(self.clock.now_ms())).min(TIMER_POLL)
            });
            tokio::select! {
                _ = self.stop.cancelled() => break,
                command = self.rx.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                _ = tokio::time::sleep(wait.unwrap_or(TIMER_POLL)), if wait.is_some() => {
                    if let Err(error) = self.tick().await {
                        tracing::error!(%error, "escalation routing step failed; retrying");
                    }
                }
            }
            self.metrics.set_escalations(self.open.values());
        }
        tracing::debug!("escalation router stopped");
    }

    fn next_wake(&self) -> Option<u64> {
        let now = self.clock.now_ms();
        let deadlines = self.open.values().filter_map(|e| e.view.deadline_ms);
        deadlines.chain(rota::next_change(&self.rota, now)).min()
    }

    async fn handle(&mut self, command: RouterCommand) {
        match command {
            RouterCommand::Register { outbox, key, roles } => {
                let conn = outbox.conn;
                self.online.insert(conn, Online { key, roles, outbox });
                self.greet(conn);
            }
            RouterCommand::Unregister { conn } => {
                self.online.remove(&conn);
            }
            RouterCommand::Roles { conn, roles } => {
                if let Some(online) = self.online.get_mut(&conn) {
                    online.roles = roles;
                }
                self.greet(conn);
            }
            RouterCommand::Raise {
                outbox,
                key,
                request_id,
                env,
                payload,
            } => {
                if let Err(error) = self.raise(&outbox, key, request_id, env, payload).await {
                    self.metrics.rejected(error.code().as_str());
                    outbox.push(&bytes(&error.frame(request_id)));
                }
            }
            RouterCommand::Act {
                outbox,
                key,
                request_id,
                env,
                payload,
            } => {
                if let Err(error) = self.act(&outbox, key, request_id, env, payload).await {
                    self.metrics.rejected(error.code().as_str());
                    outbox.push(&bytes(&error.frame(request_id)));
                }
            }
            RouterCommand::List {
                outbox,
                key,
                request_id,
            } => {
                let result = self.list(&key);
                match result {
                    Ok(escalations) => {
                        outbox.push(&bytes(&ServerFrame::Escalations {
                            id: request_id,
                            escalations,
                        }));
                    }
                    Err(error) => {
                        outbox.push(&bytes(&error.frame(request_id)));
                    }
                }
            }
            RouterCommand::SetRota {
                outbox,
                key,
                request_id,
                env,
                payload,
            } => {
                if let Err(error) = self.set_rota(&outbox, key, request_id, env, payload).await {
                    outbox.push(&bytes(&error.frame(request_id)));
                }
            }
            RouterCommand::GetRota {
                outbox,
                key,
                request_id,
            } => {
                let allowed = self.store.roles(&key).map(|r| is_staff(&r));
                match allowed {
                    Ok(true) => {
                        let frame = ServerFrame::Rota {
                            id: request_id,
                            entries: self.rota.clone(),
                        };
                        outbox.push(&bytes(&frame));
                    }
                    Ok(false) => {
                        let error =
                            ServerError::Forbidden("only supervisors and admins see the rota");
                        outbox.push(&bytes(&error.frame(request_id)));
                    }
                    Err(error) => {
                        outbox.push(&bytes(&ServerError::from(error).frame(request_id)));
                    }
                }
            }
        }
    }

    /// A connection that just logged in learns the coverage, and a supervisor or
    /// admin gets every pending escalation.
    fn greet(&self, conn: ConnId) {
        let Some(online) = self.online.get(&conn) else {
            return;
        };
        online.outbox.push(&bytes(&self.coverage_frame()));
        if is_staff(&online.roles) {
            for record in self.queue() {
                online.outbox.push(&bytes(&ServerFrame::Escalation {
                    escalation: record.view.clone(),
                }));
            }
        }
    }

    fn coverage_frame(&self) -> ServerFrame {
        ServerFrame::Coverage {
            on_call: self.covered,
            helplines: self.settings.helplines.clone(),
        }
    }

    /// Unresolved escalations by risk: severity first, then the longest waiting.
    fn queue(&self) -> Vec<&EscalationRecord> {
        let mut queue: Vec<&EscalationRecord> = self.open.values().collect();
        queue.sort_by(|a, b| {
            b.view
                .severity
                .cmp(&a.view.severity)
                .then(a.view.created_ms.cmp(&b.view.created_ms))
                .then(a.view.id.cmp(&b.view.id))
        });
        queue
    }

    fn list(&self, key: &PublicKey) -> Result<Vec<EscalationView>, ServerError> {
        if is_staff(&self.store.roles(key)?) {
            return Ok(self.queue().into_iter().map(|e| e.view.clone()).collect());
        }
        // The person a flag is about reads what was done and recorded about them,
        // unless telling them was withheld and it is still open — but not the
        // group's messages, nor who raised a flag about them or in what words: that
        // would put the people who asked for help for them at risk.
        let mine = self
            .store
            .escalations()?
            .iter()
            .filter_map(|record| super::subject_view(record, key))
            .collect();
        Ok(mine)
    }

    // ---- raising ----

    async fn raise(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        flag: FlagPayload,
    ) -> Result<(), ServerError> {
        let now = self.clock.now_ms();
        let group = flag.group.clone();
        if self.store.group(&group)?.is_none() {
            return Err(ServerError::GroupNotFound(group));
        }
        let members = self.store.members(&group)?;
        let roles = self.store.roles(&key)?;
        let is_member = |k: &PublicKey| members.iter().any(|m| &m.key == k);
        if !is_member(&key) && roles.is_empty() {
            return Err(ServerError::Forbidden(
                "join the group before raising a flag there",
            ));
        }
        if flag.about != key && !is_member(&flag.about) {
            return Err(ServerError::NotFound("no such member in this group"));
        }
        match (flag.about == key, flag.consent) {
            (true, Consent::Own) | (false, Consent::Given) | (false, Consent::ImminentRisk) => {}
            (true, _) => {
                return Err(ProtocolError::invalid("consent", "a flag about yourself has consent \"own\"").into())
            }
            (false, Consent::Own) => {
                return Err(ProtocolError::invalid(
                    "consent",
                    "a flag about someone else is raised with their consent, or without it for imminent risk",
                )
                .into())
            }
        }
        if flag.consent == Consent::ImminentRisk {
            match &flag.reason {
                Some(reason) => text("reason", reason)?,
                None => {
                    return Err(
                        ProtocolError::invalid("reason", "say why the risk is imminent").into(),
                    )
                }
            }
        }
        if let Some(withhold) = &flag.withhold_notice {
            if flag.consent != Consent::ImminentRisk {
                return Err(ProtocolError::invalid(
                    "withhold_notice",
                    "the person is told unless there is imminent risk",
                )
                .into());
            }
            text("withhold_notice", withhold)?;
        }
        if let Some(note) = &flag.note {
            text("note", note)?;
        }
        if let Some(seq) = flag.seq {
            if self.store.event(&group, &Channel::Main, seq)?.is_none() {
                return Err(ServerError::NotFound("no such message in this group"));
            }
        }

        let open = self
            .open
            .values()
            .find(|e| e.view.group == group && e.view.about == flag.about)
            .map(|e| e.view.id);
        let (id, merged) = match open {
            Some(id) => {
                self.merge(id, key, &env, &flag, now)?;
                (id, true)
            }
            None => (self.open_new(key, &env, &flag, now)?, false),
        };
        self.store.raise_counter(&key, flag.counter)?;
        self.committer.commit().await?;
        tracing::info!(
            escalation = id,
            severity = flag.severity.as_str(),
            merged,
            "flag raised"
        );

        outbox.push(&bytes(&ServerFrame::Flagged {
            id: request_id,
            escalation: id,
            merged,
            on_call: self.covered,
            helplines: self.settings.helplines.clone(),
        }));
        self.broadcast(id);
        if !merged {
            let record = &self.open[&id];
            if record.tell_subject && flag.about != key {
                let message = self.settings.support_wording.clone();
                self.notify(&[flag.about], &group, id, "support_asked", message);
            }
            if !self.covered {
                self.tell_unanswered(id, "No supervisor is on call right now.");
            }
            self.page(id);
        }
        Ok(())
    }

    fn context(&self, group: &GroupId, seq: Option<u64>) -> Result<Vec<ContextEvent>, StoreError> {
        let head = self
            .store
            .group_state(group)?
            .and_then(|s| s.heads.iter().find(|(c, _)| c.is_main()).map(|(_, h)| *h))
            .unwrap_or(0);
        let from = head.saturating_sub(CONTEXT_MESSAGES as u64);
        let mut context: Vec<ContextEvent> = self
            .store
            .events_between(group, &Channel::Main, from, head, CONTEXT_MESSAGES)?
            .into_iter()
            .filter_map(|e| {
                e.env.map(|env| ContextEvent {
                    seq: e.seq,
                    ts: e.ts,
                    env,
                })
            })
            .collect();
        if let Some(seq) = seq.filter(|s| *s <= from) {
            if let Some(event) = self.store.event(group, &Channel::Main, seq)? {
                if let Some(env) = event.env {
                    context.insert(
                        0,
                        ContextEvent {
                            seq,
                            ts: event.ts,
                            env,
                        },
                    );
                }
            }
        }
        Ok(context)
    }

    fn open_new(
        &mut self,
        flagger: PublicKey,
        env: &SignedEnvelope,
        flag: &FlagPayload,
        now: u64,
    ) -> Result<u64, ServerError> {
        let id = self.store.next_escalation_id()?;
        let context = self.context(&flag.group, flag.seq)?;
        let mut record = EscalationRecord {
            view: EscalationView {
                id,
                group: flag.group.clone(),
                about: flag.about,
                severity: flag.severity,
                status: EscalationStatus::Open,
                level: 0,
                waiting_for: Vec::new(),
                deadline_ms: None,
                created_ms: now,
                handler: None,
                flags: vec![env.clone()],
                context,
                steps: vec![EscalationStep {
                    ts: now,
                    step: "raised".into(),
                    actor: Some(flagger),
                    env: Some(env.clone()),
                    level: None,
                    to: Vec::new(),
                }],
                outcome: None,
            },
            tell_subject: flag.withhold_notice.is_none(),
            flaggers: vec![flagger],
        };
        self.audit.append(
            NewEntry::new(now, "escalation.raise", env.clone())
                .group(flag.group.clone())
                .subject(flag.about),
        )?;
        self.advance(&mut record, now)?;
        self.store.put_escalation(&record)?;
        self.open.insert(id, record);
        Ok(id)
    }

    fn merge(
        &mut self,
        id: u64,
        flagger: PublicKey,
        env: &SignedEnvelope,
        flag: &FlagPayload,
        now: u64,
    ) -> Result<(), ServerError> {
        let deadline = self.settings.deadline(flag.severity).as_millis() as u64;
        let Some(record) = self.open.get_mut(&id) else {
            return Ok(());
        };
        record.view.flags.push(env.clone());
        record.view.steps.push(EscalationStep {
            ts: now,
            step: "merged".into(),
            actor: Some(flagger),
            env: Some(env.clone()),
            level: None,
            to: Vec::new(),
        });
        if !record.flaggers.contains(&flagger) {
            record.flaggers.push(flagger);
        }
        if flag.withhold_notice.is_some() {
            record.tell_subject = false;
        }
        if flag.severity > record.view.severity {
            record.view.severity = flag.severity;
            // A more serious flag shortens the wait, never lengthens it.
            if let Some(current) = record.view.deadline_ms {
                record.view.deadline_ms = Some(current.min(now + deadline));
            }
        }
        self.audit.append(
            NewEntry::new(now, "escalation.merge", env.clone())
                .group(flag.group.clone())
                .subject(flag.about),
        )?;
        self.store.put_escalation(record)?;
        Ok(())
    }

    // ---- routing ----

    /// Moves an open escalation to its next routing level and sets its deadline.
    fn advance(&self, record: &mut EscalationRecord, now: u64) -> Result<(), ServerError> {
        let deadline = self.settings.deadline(record.view.severity).as_millis() as u64;
        let mut level = record.view.level;
        let mut targets = Vec::new();
        while targets.is_empty() && level < UNANSWERED {
            level += 1;
            targets = match level {
                1 | 2 => rota::on_call(&self.rota, level, now),
                3 => self
                    .store
                    .keys_with_roles(&[Role::Supervisor, Role::Admin])?,
                _ => Vec::new(),
            };
            if level == 3 {
                // Everyone, even if nobody holds the role yet: it is still shown to
                // whoever connects, and the unanswered notice follows.
                break;
            }
        }
        record.view.level = level;
        record.view.waiting_for = targets.clone();
        record.view.deadline_ms = (level < UNANSWERED).then_some(now + deadline);
        let step = if level == UNANSWERED {
            "unanswered"
        } else {
            "routed"
        };
        record.view.steps.push(EscalationStep {
            ts: now,
            step: step.into(),
            actor: None,
            env: None,
            level: Some(level),
            to: targets,
        });
        Ok(())
    }

    /// Deadlines that passed move their escalations on; coverage changes are told.
    async fn tick(&mut self) -> Result<(), ServerError> {
        let now = self.clock.now_ms();
        let due: Vec<u64> = self
            .open
            .values()
            .filter(|e| {
                e.view.status == EscalationStatus::Open
                    && e.view.deadline_ms.is_some_and(|d| d <= now)
            })
            .map(|e| e.view.id)
            .collect();
        for id in &due {
            let Some(mut record) = self.open.remove(id) else {
                continue;
            };
            let first = record.view.flags[0].clone();
            let result = self.advance(&mut record, now).and_then(|()| {
                let action = if record.view.level == UNANSWERED {
                    "escalation.unanswered"
                } else {
                    "escalation.reroute"
                };
                self.audit.append(
                    NewEntry::new(now, action, first)
                        .group(record.view.group.clone())
                        .subject(record.view.about),
                )?;
                self.store.put_escalation(&record)?;
                Ok(())
            });
            self.open.insert(*id, record);
            result?;
        }
        if !due.is_empty() {
            self.committer.commit().await?;
            for id in due {
                self.broadcast(id);
                if self.open[&id].view.level == UNANSWERED {
                    self.tell_unanswered(id, "No supervisor has answered yet.");
                } else {
                    self.page(id);
                }
            }
        }
        let covered = rota::covered(&self.rota, now);
        if covered != self.covered {
            self.covered = covered;
            self.tell_everyone_coverage();
        }
        Ok(())
    }

    fn tell_everyone_coverage(&self) {
        let frame = bytes(&self.coverage_frame());
        for online in self.online.values() {
            online.outbox.push(&frame);
        }
    }

    /// Pushes an escalation's view to every supervisor and admin online.
    fn broadcast(&self, id: u64) {
        let Some(record) = self.open.get(&id) else {
            return;
        };
        let frame = bytes(&ServerFrame::Escalation {
            escalation: record.view.clone(),
        });
        for online in self.online.values().filter(|o| is_staff(&o.roles)) {
            online.outbox.push(&frame);
        }
    }

    /// Sends a support notice to every online connection of `keys`.
    fn notify(&self, keys: &[PublicKey], group: &GroupId, id: u64, notice: &str, message: String) {
        let frame = bytes(&ServerFrame::SupportNotice {
            group: group.clone(),
            escalation: id,
            notice: notice.into(),
            message,
            helplines: self.settings.helplines.clone(),
        });
        for online in self.online.values().filter(|o| keys.contains(&o.key)) {
            online.outbox.push(&frame);
        }
    }

    /// Who hears how an escalation goes: its flaggers, the facilitators of its
    /// group, and the person it is about unless that was withheld.
    fn interested(&self, record: &EscalationRecord) -> Vec<PublicKey> {
        let members = self.store.members(&record.view.group).unwrap_or_default();
        let mut keys = record.flaggers.clone();
        for online in self.online.values() {
            let facilitator = online.roles.contains(&Role::Facilitator)
                && members.iter().any(|m| m.key == online.key);
            if facilitator && !keys.contains(&online.key) {
                keys.push(online.key);
            }
        }
        if record.tell_subject && !keys.contains(&record.view.about) {
            keys.push(record.view.about);
        }
        keys
    }

    /// Tells the facilitators, the flaggers (and the person, if told) plainly that
    /// nobody has acknowledged yet, with the helplines.
    fn tell_unanswered(&self, id: u64, why: &str) {
        let Some(record) = self.open.get(&id) else {
            return;
        };
        let emergency = self
            .settings
            .helplines
            .iter()
            .find(|h| h.emergency)
            .map(|h| format!("call {} ({})", h.contact, h.name))
            .unwrap_or_else(|| "call the emergency services".into());
        let message = format!(
            "{why} The request for support is still open and will be answered as soon as \
             someone can. If anyone is in danger now, {emergency}, or use the helplines below."
        );
        let keys = self.interested(record);
        self.notify(&keys, &record.view.group, id, "unanswered", message);
    }

    /// Tells the alerts task (pagers, Web Push) where an escalation now waits.
    fn page(&self, id: u64) {
        if let Some(summary) = self.alert_summary(id) {
            self.alerts.routed(summary);
        }
    }

    /// What an alert may say about an escalation (content-free; see `alerts`).
    fn alert_summary(&self, id: u64) -> Option<AlertSummary> {
        let view = &self.open.get(&id)?.view;
        let group_name = self
            .store
            .group(&view.group)
            .ok()
            .flatten()
            .map(|g| g.title)
            .unwrap_or_else(|| view.group.as_str().to_string());
        Some(AlertSummary {
            id,
            severity: view.severity,
            group: view.group.clone(),
            group_name,
            level: view.level,
            deadline_ms: view.deadline_ms,
            created_ms: view.created_ms,
            to: view.waiting_for.clone(),
        })
    }

    // ---- supervisors ----

    async fn act(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        act: EscalationActPayload,
    ) -> Result<(), ServerError> {
        let roles = self.store.roles(&key)?;
        if !is_staff(&roles) {
            return Err(ServerError::Forbidden(
                "only supervisors and admins act on escalations",
            ));
        }
        let now = self.clock.now_ms();
        let Some(record) = self.open.get(&act.escalation) else {
            return Err(ServerError::NotFound("no open escalation with that id"));
        };
        let admin = roles.contains(&Role::Admin);
        let handler = record.view.handler;
        match &act.action {
            EscalationAction::Ack => {
                if let Some(taken) = handler {
                    return Err(ServerError::Taken(taken));
                }
            }
            EscalationAction::Note { text: note } => text("text", note)?,
            EscalationAction::Handover { to } => {
                if handler != Some(key) && !admin {
                    return Err(ServerError::Forbidden(
                        "acknowledge it first, or ask its supervisor",
                    ));
                }
                if !self.store.roles(to)?.contains(&Role::Supervisor) || *to == key {
                    return Err(
                        ProtocolError::invalid("to", "hand over to another supervisor").into(),
                    );
                }
            }
            EscalationAction::Resolve { outcome } => {
                text("outcome", outcome)?;
                if handler != Some(key) && !admin {
                    return Err(ServerError::Forbidden(
                        "only its supervisor (or an admin) resolves it",
                    ));
                }
            }
        }
        let name = act.action.name();
        let Some(mut record) = self.open.remove(&act.escalation) else {
            return Err(ServerError::NotFound("no open escalation with that id"));
        };
        let mut step = EscalationStep {
            ts: now,
            step: match &act.action {
                EscalationAction::Ack => "acknowledged",
                EscalationAction::Note { .. } => "note",
                EscalationAction::Handover { .. } => "handover",
                EscalationAction::Resolve { .. } => "resolved",
            }
            .into(),
            actor: Some(key),
            env: Some(env.clone()),
            level: None,
            to: Vec::new(),
        };
        match act.action {
            EscalationAction::Ack => {
                record.view.status = EscalationStatus::Acknowledged;
                record.view.handler = Some(key);
                record.view.deadline_ms = None;
                record.view.waiting_for.clear();
            }
            EscalationAction::Note { .. } => {}
            EscalationAction::Handover { to } => {
                record.view.handler = Some(to);
                step.to = vec![to];
            }
            EscalationAction::Resolve { outcome } => {
                record.view.status = EscalationStatus::Resolved;
                record.view.deadline_ms = None;
                record.view.waiting_for.clear();
                record.view.outcome = Some(outcome);
            }
        }
        record.view.steps.push(step);
        let written = self
            .audit
            .append(
                NewEntry::new(now, format!("escalation.{name}"), env)
                    .envelope(record.view.flags[0].clone())
                    .group(record.view.group.clone())
                    .subject(record.view.about),
            )
            .map_err(ServerError::from)
            .and_then(|_| {
                self.store
                    .put_escalation(&record)
                    .map_err(ServerError::from)
            })
            .and_then(|()| {
                self.store
                    .raise_counter(&key, act.counter)
                    .map_err(ServerError::from)
            });
        let id = record.view.id;
        let status = record.view.status;
        self.open.insert(id, record);
        written?;
        self.committer.commit().await?;
        outbox.push(&bytes(&ServerFrame::Ok { id: request_id }));
        self.broadcast(id);
        let record = &self.open[&id];
        match status {
            EscalationStatus::Acknowledged if name == "ack" => {
                if let Some(summary) = self.alert_summary(id) {
                    self.alerts.acknowledged(summary);
                }
                let keys = self.interested(record);
                self.notify(
                    &keys,
                    &record.view.group,
                    id,
                    "acknowledged",
                    "A supervisor has seen the request for support and is on it.".into(),
                );
            }
            EscalationStatus::Resolved => {
                if let Some(summary) = self.alert_summary(id) {
                    self.alerts.resolved(summary);
                }
                let keys = self.interested(record);
                self.notify(
                    &keys,
                    &record.view.group,
                    id,
                    "resolved",
                    "The supervisor has closed this request for support.".into(),
                );
                self.open.remove(&id);
            }
            _ => {}
        }
        Ok(())
    }

    async fn set_rota(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: RotaPayload,
    ) -> Result<(), ServerError> {
        if !self.store.roles(&key)?.contains(&Role::Admin) {
            return Err(ServerError::Forbidden("only an admin keeps the rota"));
        }
        rota::validate(&payload.entries).map_err(|why| ProtocolError::invalid("entries", why))?;
        for entry in &payload.entries {
            if !self
                .store
                .roles(&entry.supervisor)?
                .contains(&Role::Supervisor)
            {
                return Err(ProtocolError::invalid(
                    "entries",
                    "every rota entry names a supervisor",
                )
                .into());
            }
        }
        let now = self.clock.now_ms();
        self.audit.append(NewEntry::new(now, "rota.set", env))?;
        self.store.put_rota(&payload.entries)?;
        self.store.raise_counter(&key, payload.counter)?;
        self.committer.commit().await?;
        self.rota = payload.entries;
        outbox.push(&bytes(&ServerFrame::Ok { id: request_id }));
        let covered = rota::covered(&self.rota, now);
        if covered != self.covered {
            self.covered = covered;
            self.tell_everyone_coverage();
        }
        Ok(())
    }
}
