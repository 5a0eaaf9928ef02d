//! The escalation router task. See the module map in `escalation/mod.rs`.

mod operator;
mod roles;

use roles::{first_not_supervisor, is_admin, is_supervisor, roles_wanting};

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use peerhub_protocol::escalation::{
    Consent, ContextEvent, EscalationCounts, EscalationPart, EscalationStatus, EscalationStep,
    EscalationSummary, EscalationView, RotaEntry, Severity,
};
use peerhub_protocol::frame::{Channel, Role, ServerFrame};
use peerhub_protocol::limits::MAX_TEXT_CHARS;
use peerhub_protocol::payload::{EscalationActPayload, EscalationAction, FlagPayload, RotaPayload};
use peerhub_protocol::{GroupId, ProtocolError, PublicKey, SignedEnvelope};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::alerts::{AlertSummary, Alerts};
use super::{
    is_staff, reference, rota, EscalationSettings, RouterCommand, RouterHandle, CONTEXT_MESSAGES,
    DETAIL_PAGE_ITEMS, MAX_FLAGGERS_TOLD,
};
use crate::audit::{AuditLog, NewEntry};
use crate::clock::Clock;
use crate::error::ServerError;
use crate::limits::FlagLimits;
use crate::metrics::Metrics;
use crate::outbound::{ConnId, FrameBytes, Outbox};
use crate::store::records::EscalationRecord;
use crate::store::{Committer, Store, StoreError};
use crate::text::check_text;

/// How often the router looks at the clock while a deadline is pending.
const TIMER_POLL: Duration = Duration::from_secs(1);
/// What merging a flag into an open escalation changed.
#[derive(Debug, Clone, Copy, Default)]
struct Merged {
    /// The view staff see changed (a flag kept in full, or a higher severity).
    push: bool,
    /// The severity rose (the deadline may be shorter).
    rose: bool,
}

/// The last routing level: nobody acknowledged; people were told.
const UNANSWERED: u8 = 4;
/// Escalations moved on by one timer tick at most (the rest on the next, at once).
const TICK_BATCH: usize = 256;
/// How often a held-back staff connection is looked at (see `catch_up`).
const CATCH_UP_POLL_MS: u64 = 200;
/// Keys of `waiting_for` in a summary at most (level 3 waits for every supervisor
/// and admin: the summary stays small however many there are).
const MAX_WAITING_SHOWN: usize = 32;

/// An open escalation's place in the queue: most severe first, then the longest
/// waiting, then by id.
type QueueKey = (Reverse<Severity>, u64, u64);

fn queue_key(view: &EscalationView) -> QueueKey {
    (Reverse(view.severity), view.created_ms, view.id)
}

fn severity_rank(severity: Severity) -> u8 {
    match severity {
        Severity::Concern => 0,
        Severity::Urgent => 1,
        Severity::Emergency => 2,
    }
}

/// A queue cursor as the wire carries it: `rank.created.id`.
fn cursor(key: &QueueKey) -> String {
    format!("{}.{}.{}", severity_rank(key.0 .0), key.1, key.2)
}

fn parse_cursor(text: &str) -> Option<QueueKey> {
    let mut parts = text.split('.');
    let severity = match parts.next()? {
        "0" => Severity::Concern,
        "1" => Severity::Urgent,
        "2" => Severity::Emergency,
        _ => return None,
    };
    let created = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((Reverse(severity), created, id))
}

/// The consent of an escalation's first flag.
fn consent_of(record: &EscalationRecord) -> Consent {
    record.consent.unwrap_or_else(|| {
        record
            .view
            .flags
            .first()
            .and_then(|env| env.payload_as::<FlagPayload>().ok())
            .map_or(Consent::Own, |flag| flag.consent)
    })
}

/// An escalation's bounded summary as `view` shows it (the whole record, or what
/// its subject may read).
fn summarise(record: &EscalationRecord, view: &EscalationView) -> EscalationSummary {
    let merged = super::merged_flags(record);
    EscalationSummary {
        id: None,
        reference: None,
        group: view.group.clone(),
        about: view.about,
        name: None,
        severity: view.severity,
        consent: consent_of(record),
        status: view.status,
        level: view.level,
        waiting_for: view
            .waiting_for
            .iter()
            .take(MAX_WAITING_SHOWN)
            .copied()
            .collect(),
        deadline_ms: view.deadline_ms,
        created_ms: view.created_ms,
        handler: view.handler,
        outcome: view.outcome.clone(),
        counts: EscalationCounts {
            flags: view.flags.len() as u32,
            merged,
            counted: record.counted,
            context: view.context.len() as u32,
            steps: view.steps.len() as u32,
        },
    }
}

/// Items `offset..` of `items`, at most [`DETAIL_PAGE_ITEMS`] and `max_bytes` of
/// JSON (one item always, so every item can be read).
fn page_of<T: Clone + serde::Serialize>(items: &[T], offset: u32, max_bytes: usize) -> Vec<T> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in items.iter().skip(offset as usize).take(DETAIL_PAGE_ITEMS) {
        let size = serde_json::to_vec(item).map_or(0, |v| v.len());
        if !out.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        out.push(item.clone());
    }
    out
}

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
    /// Every unresolved escalation, by id. Changed only through `insert_open` and
    /// `remove_open`, which keep the three indexes below in step.
    open: BTreeMap<u64, EscalationRecord>,
    /// The queue order, for pages without sorting.
    queue: BTreeSet<QueueKey>,
    /// Pending deadlines `(deadline_ms, id)` of open escalations.
    deadlines: BTreeSet<(u64, u64)>,
    /// The unresolved escalation about a person in a group.
    by_subject: HashMap<(GroupId, PublicKey), u64>,
    rota: Vec<RotaEntry>,
    covered: bool,
    alerts: Alerts,
    metrics: Arc<Metrics>,
    /// The facilitators' `support_asked` notes (`staff.rs`).
    staff: super::staff::StaffNotices,
    flag_limits: FlagLimits,
    /// The hub's secret for references (see [`super::reference`]).
    secret: [u8; 32],
    /// Staff connections whose queue was half full when a summary was due: held
    /// back rather than pushed towards the slow-consumer close, they get the
    /// queue's first page again once it has drained (`catch_up`).
    behind: RefCell<HashSet<ConnId>>,
    /// Flags held in memory because the store could not keep them.
    unstored: u64,
    /// Routing steps whose pages and pushes are under way: each answers
    /// `(id, level)` once they were done, and is then marked done.
    performing: JoinSet<Option<(u64, u8)>>,
    /// Cluster mode: the `router` lease, the router's log and the commit's writes
    /// to append to it; `None` on one node.
    owned: Option<Box<crate::cluster::router_log::RouterOwned>>,
}

/// Escalations held only in memory (the store failed) take ids from here up,
/// far above any the store hands out.
const UNSTORED_IDS: u64 = 1 << 62;

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

/// A new escalation as `flagger`'s `flag` (signed as `env`) opens it at `now`: one
/// flag, the `raised` step, no context or name yet, not routed.
fn raised_record(
    id: u64,
    flagger: PublicKey,
    env: &SignedEnvelope,
    flag: &FlagPayload,
    now: u64,
) -> EscalationRecord {
    EscalationRecord {
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
            context: Vec::new(),
            steps: vec![EscalationStep {
                ts: now,
                step: "raised".into(),
                actor: Some(flagger),
                env: Some(env.clone()),
                level: None,
                to: Vec::new(),
                text: None,
            }],
            outcome: None,
        },
        tell_subject: flag.withhold_notice.is_none(),
        flaggers: vec![flagger],
        merged: 0,
        counted: 0,
        consent: Some(flag.consent),
        name: None,
    }
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
        staff: super::staff::StaffNotices,
        flag_limits: FlagLimits,
        alerts: Alerts,
        owned: Option<Box<crate::cluster::router_log::RouterOwned>>,
    ) -> Result<RouterHandle, StoreError> {
        let unresolved = store.unresolved_escalations()?;
        let rota = store.rota()?;
        let secret = store.escalation_reference_secret()?;
        let (tx, rx) = mpsc::channel(1024);
        let now = clock.now_ms();
        let mut router = Self {
            covered: rota::covered(&rota, now),
            store,
            committer,
            clock,
            audit,
            settings,
            rx,
            stop,
            online: HashMap::new(),
            open: BTreeMap::new(),
            queue: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            by_subject: HashMap::new(),
            rota,
            alerts,
            metrics,
            staff,
            flag_limits,
            secret,
            behind: RefCell::default(),
            unstored: 0,
            performing: JoinSet::new(),
            owned,
        };
        for record in unresolved {
            router.insert_open(record);
        }
        router.staff.rearm(router.open.values());
        if !router.open.is_empty() {
            tracing::info!(
                pending = router.open.len(),
                "escalations re-armed after start"
            );
        }
        tracker.spawn(router.run());
        Ok(RouterHandle { tx })
    }

    /// Writes an escalation (and records it for the router's cluster log).
    fn write_escalation(&mut self, record: &EscalationRecord) -> Result<(), StoreError> {
        self.store.put_escalation(record)?;
        if let Some(owned) = &mut self.owned {
            owned
                .ops
                .push(crate::cluster::router_log::RouterOp::Escalation {
                    record: Box::new(record.clone()),
                });
        }
        Ok(())
    }

    /// Replaces the rota (and records it for the router's cluster log).
    fn write_rota(&mut self, entries: &[RotaEntry]) -> Result<(), StoreError> {
        self.store.put_rota(entries)?;
        if let Some(owned) = &mut self.owned {
            owned.ops.push(crate::cluster::router_log::RouterOp::Rota {
                entries: entries.to_vec(),
            });
        }
        Ok(())
    }

    /// Makes what was written durable: flushed, and in cluster mode appended to
    /// the router's log, before anyone hears of it.
    async fn commit(&mut self) -> Result<(), Arc<StoreError>> {
        self.committer.commit().await?;
        if let Some(owned) = &mut self.owned {
            if let Err(error) = owned.append(&self.store).await {
                tracing::error!(%error, "the router's log did not take a commit: this node stops leading");
                self.stop.cancel();
                return Err(Arc::new(error));
            }
        }
        Ok(())
    }

    async fn run(mut self) {
        // Perform the routing step of each escalation still waiting whose
        // effects were not marked done before the hub stopped (or the last
        // leader died): at least once, never never. A step marked done is not
        // performed again; only its pushes' repeats go on.
        let pending: Vec<u64> = self
            .open
            .values()
            .filter(|e| e.view.status == EscalationStatus::Open)
            .map(|e| e.view.id)
            .collect();
        for id in pending {
            self.resume_step(id).await;
        }
        // Close the pager incidents of escalations resolved while the hub was stopped.
        match self.store.take_owed_pager_resolves() {
            Ok(owed) => {
                for id in owed {
                    if let Ok(Some(record)) = self.store.escalation(id) {
                        self.alerts.resolved(self.alert_summary_of(&record));
                    }
                }
            }
            Err(error) => tracing::error!(%error, "the owed pager resolves could not be read"),
        }
        self.metrics.set_escalations(self.open.values());
        // Cluster mode: resolves when this node loses the router's lease.
        let mut lease = self.owned.as_ref().map(|owned| owned.keeper.watch());
        loop {
            let wait = self.next_wake().map(|at| {
                Duration::from_millis(at.saturating_sub(self.clock.now_ms())).min(TIMER_POLL)
            });
            let changed = tokio::select! {
                _ = self.stop.cancelled() => break,
                () = lost(&mut lease) => {
                    tracing::warn!("router lease lost: this node stops leading");
                    break;
                }
                command = self.rx.recv() => match command {
                    Some(command) => {
                        // Reads change nothing: only steps recount the gauges.
                        let changes = matches!(
                            command,
                            RouterCommand::Raise { .. }
                                | RouterCommand::Act { .. }
                                | RouterCommand::Operator { .. }
                        );
                        self.handle(command).await;
                        changes
                    }
                    None => break,
                },
                Some(performed) = self.performing.join_next(), if !self.performing.is_empty() => {
                    // Every step done by now is marked with one commit.
                    let mut done: Vec<(u64, u8)> = performed.ok().flatten().into_iter().collect();
                    while let Some(more) = self.performing.try_join_next() {
                        done.extend(more.ok().flatten());
                    }
                    self.mark_steps_done(&done).await;
                    false
                }
                _ = tokio::time::sleep(wait.unwrap_or(TIMER_POLL)), if wait.is_some() => {
                    // A wake-up only to see whether a connection has drained changes
                    // nothing: the gauges are recounted only after a real step.
                    self.tick().await.unwrap_or_else(|error| {
                        tracing::error!(%error, "escalation routing step failed; retrying");
                        true
                    })
                }
            };
            if changed {
                self.metrics.set_escalations(self.open.values());
            }
            self.catch_up();
        }
        tracing::debug!("escalation router stopped");
        if let Some(owned) = self.owned.take() {
            if owned.keeper.is_held() {
                owned.release().await;
            }
        }
    }

    fn next_wake(&self) -> Option<u64> {
        let now = self.clock.now_ms();
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        // While a connection is behind, look again soon whether it has drained.
        let behind = (!self.behind.borrow().is_empty()).then_some(now + CATCH_UP_POLL_MS);
        deadline
            .into_iter()
            .chain(rota::next_change(&self.rota, now))
            .chain(behind)
            .min()
    }

    /// Sends the queue's first page to each staff connection that was held back
    /// and has drained (its client reads on by `after`).
    fn catch_up(&self) {
        if self.behind.borrow().is_empty() {
            return;
        }
        let waiting: Vec<ConnId> = self.behind.borrow().iter().copied().collect();
        for conn in waiting {
            match self.online.get(&conn) {
                None => {
                    self.behind.borrow_mut().remove(&conn);
                }
                Some(online) if !online.outbox.half_full() => {
                    self.behind.borrow_mut().remove(&conn);
                    online.outbox.push(&bytes(&self.queue_page(None, None)));
                }
                Some(_) => {}
            }
        }
    }

    // ---- the open escalations and their indexes ----

    fn insert_open(&mut self, record: EscalationRecord) {
        let view = &record.view;
        let id = view.id;
        self.remove_open(id);
        if view.status == EscalationStatus::Resolved {
            return;
        }
        self.queue.insert(queue_key(view));
        if let (EscalationStatus::Open, Some(at)) = (view.status, view.deadline_ms) {
            self.deadlines.insert((at, id));
        }
        self.by_subject.insert((view.group.clone(), view.about), id);
        self.open.insert(id, record);
    }

    fn remove_open(&mut self, id: u64) -> Option<EscalationRecord> {
        let record = self.open.remove(&id)?;
        let view = &record.view;
        self.queue.remove(&queue_key(view));
        if let Some(at) = view.deadline_ms {
            self.deadlines.remove(&(at, id));
        }
        let subject = (view.group.clone(), view.about);
        if self.by_subject.get(&subject) == Some(&id) {
            self.by_subject.remove(&subject);
        }
        Some(record)
    }

    /// The summary supervisors and admins see.
    fn staff_summary(record: &EscalationRecord) -> EscalationSummary {
        EscalationSummary {
            id: Some(record.view.id),
            name: record.name.clone(),
            ..summarise(record, &record.view)
        }
    }

    /// The summary the person it is about sees, or `None` while withheld.
    fn subject_summary(
        &self,
        record: &EscalationRecord,
        key: &PublicKey,
    ) -> Option<EscalationSummary> {
        let view = super::subject_view(record, key)?;
        Some(EscalationSummary {
            reference: Some(reference(&self.secret, record.view.id, key)),
            ..summarise(record, &view)
        })
    }

    /// An escalation by id: the open one in memory, or a point read.
    fn record(&self, id: u64) -> Result<Option<EscalationRecord>, StoreError> {
        match self.open.get(&id) {
            Some(record) => Ok(Some(record.clone())),
            None => self.store.escalation(id),
        }
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
                over_key_limit,
                ticket: _ticket,
            } => {
                let result = self
                    .raise(&outbox, key, request_id, env, payload, over_key_limit)
                    .await;
                match result {
                    // Over the key's limit the session has answered it already.
                    Err(error) if over_key_limit => {
                        tracing::debug!(code = %error.code(), "a flag over its key's limit refused");
                    }
                    Err(error) => {
                        self.metrics.rejected(error.code().as_str());
                        let mut frame = error.frame(request_id);
                        if let ServerFrame::Error { helplines, .. } = &mut frame {
                            // A refused flag gets the signposting, whatever the
                            // refusal (storage failing, no such group, …).
                            *helplines = Some(self.settings.helplines.clone());
                        }
                        outbox.push(&bytes(&frame));
                    }
                    Ok(()) => {}
                }
            }
            RouterCommand::Act {
                outbox,
                key,
                request_id,
                env,
                payload,
                ticket: _ticket,
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
                after,
                ticket,
            } => {
                let frame = match self.asker_roles(Some(outbox.conn), &key, is_staff).await {
                    Ok(roles) => self.list(&key, &roles, request_id, after.as_deref()),
                    Err(error) => Err(error.into()),
                }
                .unwrap_or_else(|error| error.frame(request_id));
                // Given back before the reply goes out, so a client that sends its
                // next request on reading the reply always finds it free.
                drop(ticket);
                outbox.push(&bytes(&frame));
            }
            RouterCommand::Detail {
                outbox,
                key,
                request_id,
                escalation,
                reference,
                part,
                offset,
                ticket,
            } => {
                let frame = match self.asker_roles(Some(outbox.conn), &key, is_staff).await {
                    Ok(roles) => self.detail(
                        &key, &roles, request_id, escalation, reference, part, offset,
                    ),
                    Err(error) => Err(error.into()),
                }
                .unwrap_or_else(|error| error.frame(request_id));
                drop(ticket);
                outbox.push(&bytes(&frame));
            }
            RouterCommand::SetRota {
                outbox,
                key,
                request_id,
                env,
                payload,
                ticket: _ticket,
            } => {
                if let Err(error) = self.set_rota(&outbox, key, request_id, env, payload).await {
                    outbox.push(&bytes(&error.frame(request_id)));
                }
            }
            RouterCommand::LineGrant {
                key,
                escalation,
                reply,
            } => {
                let grant = match self.asker_roles(None, &key, is_supervisor).await {
                    Ok(roles) => self.line_grant(&key, &roles, escalation),
                    Err(error) => Err(error.into()),
                };
                let _ = reply.send(grant);
            }
            RouterCommand::Operator { ask, reply } => self.operator(ask, reply).await,
            RouterCommand::RebaseLog { reply } => {
                let rebased = match &mut self.owned {
                    Some(owned) => owned
                        .rebase(&self.store)
                        .await
                        .map(Some)
                        .map_err(|error| error.to_string()),
                    None => Ok(None),
                };
                let _ = reply.send(rebased);
            }
            RouterCommand::GetRota {
                outbox,
                key,
                request_id,
                ticket,
            } => {
                let allowed = self
                    .asker_roles(Some(outbox.conn), &key, is_staff)
                    .await
                    .map(|r| is_staff(&r));
                drop(ticket);
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
    /// admin the first page of the queue (one bounded frame; the rest by
    /// `escalations` with `after`).
    fn greet(&self, conn: ConnId) {
        let Some(online) = self.online.get(&conn) else {
            return;
        };
        online.outbox.push(&bytes(&self.coverage_frame()));
        if is_staff(&online.roles) {
            online.outbox.push(&bytes(&self.queue_page(None, None)));
        }
    }

    fn coverage_frame(&self) -> ServerFrame {
        ServerFrame::Coverage {
            on_call: self.covered,
            helplines: self.settings.helplines.clone(),
        }
    }

    /// A page of the queue (unresolved escalations by risk: severity first, then
    /// the longest waiting) after `after`: a range of the ordered index, never a
    /// sort or a store read.
    fn queue_page(&self, request_id: Option<u64>, after: Option<QueueKey>) -> ServerFrame {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys = self.queue.range((start, Bound::Unbounded)).peekable();
        let mut escalations = Vec::new();
        let mut last = None;
        let mut bytes = 0usize;
        while let Some(key) = keys.peek() {
            let Some(record) = self.open.get(&key.2) else {
                keys.next();
                continue;
            };
            let summary = Self::staff_summary(record);
            if !self.page_has_room(escalations.len(), &mut bytes, &summary) {
                break;
            }
            escalations.push(summary);
            last = keys.next();
        }
        let more = keys.peek().is_some();
        ServerFrame::Escalations {
            id: request_id,
            escalations,
            total: self.queue.len() as u64,
            next: more.then(|| last.map(cursor)).flatten(),
        }
    }

    /// Whether a page holding `count` summaries (`bytes` of JSON so far) takes
    /// `summary` too: at most `page_size` of them and `detail_page_bytes` of JSON,
    /// one always.
    fn page_has_room(&self, count: usize, bytes: &mut usize, summary: &EscalationSummary) -> bool {
        let size = serde_json::to_vec(summary).map_or(0, |v| v.len());
        let fits = count < self.settings.page_size.max(1)
            && (count == 0 || *bytes + size <= self.settings.detail_page_bytes);
        if fits {
            *bytes += size;
        }
        fits
    }

    fn list(
        &self,
        key: &PublicKey,
        roles: &[Role],
        request_id: Option<u64>,
        after: Option<&str>,
    ) -> Result<ServerFrame, ServerError> {
        let not_a_cursor = || ProtocolError::invalid("after", "not a `next` from this list");
        if is_staff(roles) {
            let after = after
                .map(|text| parse_cursor(text).ok_or_else(not_a_cursor))
                .transpose()?;
            return Ok(self.queue_page(request_id, after));
        }
        // The person a flag is about reads what was done and recorded about them,
        // unless telling them was withheld and it is still open — but not the
        // group's messages, nor who raised a flag about them or in what words: that
        // would put the people who asked for help for them at risk. Read through
        // the index of escalations about them, newest first; never a scan.
        let offset: usize = match after {
            None => 0,
            Some(text) => text
                .strip_prefix('o')
                .and_then(|n| n.parse().ok())
                .ok_or_else(not_a_cursor)?,
        };
        // Which they may see is known without reading a record: every resolved
        // one, and the open ones (all in memory) whose telling is not withheld.
        // Only the page's records are read.
        let visible: Vec<u64> = self
            .store
            .escalation_ids_about(key)?
            .into_iter()
            .rev()
            .filter(|id| self.open.get(id).is_none_or(|open| open.tell_subject))
            .collect();
        let total = visible.len();
        let mut escalations = Vec::new();
        let mut bytes = 0usize;
        for id in visible.iter().skip(offset) {
            let Some(record) = self.record(*id)? else {
                continue;
            };
            let Some(summary) = self.subject_summary(&record, key) else {
                continue;
            };
            if !self.page_has_room(escalations.len(), &mut bytes, &summary) {
                break;
            }
            escalations.push(summary);
        }
        let end = offset + escalations.len();
        Ok(ServerFrame::Escalations {
            id: request_id,
            escalations,
            total: total as u64,
            next: (end < total).then(|| format!("o{end}")),
        })
    }

    /// A page of one escalation's flags, steps or context: by id for supervisors
    /// and admins (the whole record), by reference for the person it is about
    /// (what [`super::subject_view`] shows them).
    #[allow(clippy::too_many_arguments)] // One request's fields, as the frame has them.
    fn detail(
        &self,
        key: &PublicKey,
        roles: &[Role],
        request_id: Option<u64>,
        escalation: Option<u64>,
        reference_given: Option<String>,
        part: EscalationPart,
        offset: u32,
    ) -> Result<ServerFrame, ServerError> {
        let view = match (escalation, &reference_given) {
            (Some(id), None) => {
                if !is_staff(roles) {
                    return Err(ServerError::Forbidden(
                        "only supervisors and admins read an escalation by id",
                    ));
                }
                self.record(id)?
                    .ok_or(ServerError::NotFound("no escalation with that id"))?
                    .view
            }
            (None, Some(wanted)) => {
                let mut found = None;
                for id in self.store.escalation_ids_about(key)? {
                    if reference(&self.secret, id, key) == *wanted {
                        found = self
                            .record(id)?
                            .and_then(|record| super::subject_view(&record, key));
                        break;
                    }
                }
                found.ok_or(ServerError::NotFound("no escalation with that reference"))?
            }
            _ => {
                return Err(ProtocolError::invalid(
                    "escalation",
                    "give the escalation's id or your reference to it, not both",
                )
                .into())
            }
        };
        let max = self.settings.detail_page_bytes;
        let (total, flags, steps, context) = match part {
            EscalationPart::Flags => (
                view.flags.len(),
                page_of(&view.flags, offset, max),
                Vec::new(),
                Vec::new(),
            ),
            EscalationPart::Steps => (
                view.steps.len(),
                Vec::new(),
                page_of(&view.steps, offset, max),
                Vec::new(),
            ),
            EscalationPart::Context => (
                view.context.len(),
                Vec::new(),
                Vec::new(),
                page_of(&view.context, offset, max),
            ),
        };
        Ok(ServerFrame::EscalationDetail {
            id: request_id,
            escalation,
            reference: reference_given,
            part,
            offset,
            total: total as u32,
            flags,
            steps,
            context,
        })
    }

    // ---- raising ----

    async fn raise(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        flag: FlagPayload,
        over_key_limit: bool,
    ) -> Result<(), ServerError> {
        let now = self.clock.now_ms();
        let group = flag.group.clone();
        let Some(group_record) = self.store.group(&group)? else {
            return Err(ServerError::GroupNotFound(group));
        };
        // The sender's authority first, then the payload's own shape, and the
        // person it is about last (PROTOCOL.md §10, the refusal rule). Point
        // reads: the flagger's and the person's member records, never the whole
        // member list.
        let room = crate::groups::room_of(&self.store, group_record, &[key, flag.about])?;
        let hub_staff = is_staff(&self.store.roles(&key)?);
        if !room.members.contains_key(&key)
            && !hub_staff
            && !self.store.facilitates(&key, &group)?
        {
            return Err(ServerError::Forbidden(
                "join the group before raising a flag there",
            ));
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
        // Someone else is reached only as the flagger sees them (supervisors and
        // admins: any member). Whether they are no member or one out of sight,
        // the answer is the same, so a flag is no test of who is in a group.
        if flag.about != key {
            let reachable = if hub_staff {
                room.members.contains_key(&flag.about)
            } else {
                room.may_see_member(&key, &flag.about)
            };
            if !reachable {
                return Err(ServerError::NotHere);
            }
        }
        if let Some(seq) = flag.seq {
            // A message is named only by someone who may read the conversation.
            let readable = hub_staff || room.may_read(&key, &Channel::Main);
            if !readable || self.store.event(&group, &Channel::Main, seq)?.is_none() {
                return Err(ServerError::NotFound("no such message in this group"));
            }
        }

        let open = self.by_subject.get(&(group.clone(), flag.about)).copied();
        if over_key_limit {
            // Over the key's limit: never dropped in silence. Counted on the
            // escalation about the same person if one is open (it opens none);
            // the session answers it, with the helplines.
            if let Some(id) = open {
                let merged = self.merge(id, key, &env, &flag, now, true)?;
                self.store.raise_counter(&key, flag.counter)?;
                self.commit().await?;
                self.after_merge(id, merged, &flag, key);
            }
            tracing::info!(
                severity = flag.severity.as_str(),
                "flag over the key's limit"
            );
            return Ok(());
        }
        // Over the group's or the person's limit a flag is still recorded and
        // routed, but costs little: a counted merge, or a new escalation without
        // a copy of the group's messages.
        let within = self.flag_limits.within(&group, &flag.about);
        let (id, merged) = match self.store_flag(open, key, &env, &flag, now, within).await {
            Ok(stored) => stored,
            // The disk is full or failing: the flag cannot be kept, but the people
            // who can help now still see it (issue 20).
            Err(error) if error.is_storage_fault() => {
                return Err(self.route_unstored(open, key, &env, &flag, now));
            }
            Err(error) => return Err(error),
        };
        tracing::info!(
            severity = flag.severity.as_str(),
            within_limits = within,
            "flag raised"
        );

        // The answer is the same whether the flag opened an escalation or joined
        // one: `merged` would tell any member that someone is already flagged.
        outbox.push(&bytes(&ServerFrame::Flagged {
            id: request_id,
            reference: reference(&self.secret, id, &key),
            on_call: self.covered,
            helplines: self.settings.helplines.clone(),
        }));
        if let Some(merged) = merged {
            self.after_merge(id, merged, &flag, key);
            return Ok(());
        }
        self.broadcast(id);
        if let Some(record) = self.open.get(&id) {
            self.staff.flag(record, &flag, key);
        }
        {
            let record = &self.open[&id];
            if record.tell_subject && flag.about != key {
                let message = self.settings.support_wording.clone();
                self.notify(&[flag.about], &group, id, "support_asked", message);
            }
            if !self.covered {
                self.tell_unanswered(id, "No supervisor is on call right now.");
            }
        }
        // The routing step it opened at: paged and pushed, then marked done.
        self.perform_step(id).await;
        Ok(())
    }

    /// Records a flag (a new escalation, or a merge into `open`) and makes it
    /// durable.
    async fn store_flag(
        &mut self,
        open: Option<u64>,
        key: PublicKey,
        env: &SignedEnvelope,
        flag: &FlagPayload,
        now: u64,
        within: bool,
    ) -> Result<(u64, Option<Merged>), ServerError> {
        let (id, merged) = match open {
            Some(id) => (id, Some(self.merge(id, key, env, flag, now, !within)?)),
            None => (self.open_new(key, env, flag, now, within)?, None),
        };
        self.store.raise_counter(&key, flag.counter)?;
        self.commit().await?;
        Ok((id, merged))
    }

    /// A flag the store could not keep: shown to the supervisors connected now
    /// (and paged) from memory, and answered with the helplines. It is not
    /// durable: a restart forgets it, which its raiser is told.
    fn route_unstored(
        &mut self,
        open: Option<u64>,
        key: PublicKey,
        env: &SignedEnvelope,
        flag: &FlagPayload,
        now: u64,
    ) -> ServerError {
        // `open_new` may have got as far as holding it in memory before the
        // commit failed; otherwise it is held here without the store.
        let id = match open.or_else(|| {
            self.by_subject
                .get(&(flag.group.clone(), flag.about))
                .copied()
        }) {
            Some(id) => id,
            None => {
                let id = UNSTORED_IDS + self.unstored;
                let mut record = raised_record(id, key, env, flag, now);
                record.view.steps[0].text = Some("not stored: the hub's storage is failing".into());
                // Not told: nothing about it survives a restart.
                record.tell_subject = false;
                // Routing reads the rota and the roles, which still work.
                let _ = self.advance(&mut record, now);
                self.insert_open(record);
                id
            }
        };
        self.unstored += 1;
        self.metrics.flag_unstored();
        self.broadcast(id);
        self.page(id);
        let shown_to = self.online.values().filter(|o| is_staff(&o.roles)).count();
        tracing::error!(
            severity = flag.severity.as_str(),
            shown_to,
            "a flag could not be stored (storage fault): shown to the supervisors online \
             and kept in memory only; its raiser was given the helplines"
        );
        ServerError::FlagNotStored { shown_to }
    }

    /// The group's last messages (and the flagged one), newest kept first, within
    /// [`EscalationSettings::max_context_bytes`].
    fn context(&self, group: &GroupId, seq: Option<u64>) -> Result<Vec<ContextEvent>, StoreError> {
        let head = self
            .store
            .group_state(group)?
            .and_then(|s| s.heads.iter().find(|(c, _)| c.is_main()).map(|(_, h)| *h))
            .unwrap_or(0);
        let from = head.saturating_sub(CONTEXT_MESSAGES as u64);
        let budget = self.settings.max_context_bytes;
        let size = |event: &ContextEvent| serde_json::to_vec(event).map_or(0, |v| v.len());
        let mut used = 0usize;
        let mut context = Vec::new();
        // The flagged message first: it is why the flag was raised.
        if let Some(seq) = seq {
            if let Some(event) = self.store.event(group, &Channel::Main, seq)? {
                if let Some(env) = event.env {
                    let event = ContextEvent {
                        seq,
                        ts: event.ts,
                        env,
                    };
                    if size(&event) <= budget {
                        used += size(&event);
                        context.push(event);
                    }
                }
            }
        }
        let recent =
            self.store
                .events_between(group, &Channel::Main, from, head, CONTEXT_MESSAGES)?;
        for event in recent.into_iter().rev() {
            let Some(env) = event.env else { continue };
            if Some(event.seq) == seq {
                continue;
            }
            let event = ContextEvent {
                seq: event.seq,
                ts: event.ts,
                env,
            };
            let bytes = size(&event);
            if used + bytes > budget {
                break;
            }
            used += bytes;
            context.push(event);
        }
        context.sort_by_key(|event| event.seq);
        Ok(context)
    }

    fn open_new(
        &mut self,
        flagger: PublicKey,
        env: &SignedEnvelope,
        flag: &FlagPayload,
        now: u64,
        with_context: bool,
    ) -> Result<u64, ServerError> {
        let id = self.store.next_escalation_id()?;
        // The person's name in the group, for staff: a point read, once.
        let name = self
            .store
            .member_of(&flag.group, &flag.about)?
            .map(|member| member.name)
            .filter(|name| !name.is_empty());
        let context = match with_context {
            true => self.context(&flag.group, flag.seq)?,
            false => Vec::new(),
        };
        let mut record = raised_record(id, flagger, env, flag, now);
        record.view.context = context;
        record.name = name;
        self.audit.append(
            NewEntry::new(now, "escalation.raise", env.clone())
                .group(flag.group.clone())
                .subject(flag.about),
        )?;
        self.advance(&mut record, now)?;
        self.write_escalation(&record)?;
        self.insert_open(record);
        Ok(id)
    }

    /// Merges a flag into open escalation `id`: kept in full while fewer than
    /// [`EscalationSettings::max_kept_flags`] are (and `counted_only` is false),
    /// else counted. Either way it is audited with its signed flag, its severity
    /// counts, and its flagger hears how it goes. Returns whether supervisors
    /// should be sent the new summary (not for a counted merge that changed
    /// nothing they act on, so a flood of flags is not a flood of pushes).
    /// Who hears of a flag merged into escalation `id` (once it is durable): the
    /// consoles when the view changed, the facilitators (bounded, `staff.rs`), and
    /// the pagers and pushes when the severity rose (a new deadline and priority).
    fn after_merge(&mut self, id: u64, merged: Merged, flag: &FlagPayload, flagger: PublicKey) {
        if merged.push {
            self.broadcast(id);
        }
        if let Some(record) = self.open.get(&id) {
            self.staff.flag(record, flag, flagger);
        }
        if merged.rose {
            self.page(id);
        }
    }

    fn merge(
        &mut self,
        id: u64,
        flagger: PublicKey,
        env: &SignedEnvelope,
        flag: &FlagPayload,
        now: u64,
        counted_only: bool,
    ) -> Result<Merged, ServerError> {
        let deadline = self.settings.deadline(flag.severity).as_millis() as u64;
        let Some(mut record) = self.open.get(&id).cloned() else {
            return Ok(Merged::default());
        };
        record.merged += 1;
        let keep = !counted_only && record.view.flags.len() < self.settings.max_kept_flags;
        if keep {
            record.view.flags.push(env.clone());
            record.view.steps.push(EscalationStep {
                ts: now,
                step: "merged".into(),
                actor: Some(flagger),
                env: Some(env.clone()),
                level: None,
                to: Vec::new(),
                text: None,
            });
        } else {
            record.counted += 1;
        }
        if !record.flaggers.contains(&flagger) && record.flaggers.len() < MAX_FLAGGERS_TOLD {
            record.flaggers.push(flagger);
        }
        if flag.withhold_notice.is_some() {
            record.tell_subject = false;
        }
        let rose = flag.severity > record.view.severity;
        if rose {
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
        self.write_escalation(&record)?;
        self.insert_open(record);
        Ok(Merged {
            push: keep || rose,
            rose,
        })
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
            text: None,
        });
        Ok(())
    }

    /// Deadlines that passed move their escalations on (a bounded batch, read from
    /// the deadline index); coverage changes are told.
    /// Moves due deadlines and follows the rota; says whether anything changed.
    async fn tick(&mut self) -> Result<bool, ServerError> {
        let now = self.clock.now_ms();
        self.flag_limits.forget_idle();
        let due: Vec<u64> = self
            .deadlines
            .range(..=(now, u64::MAX))
            .take(TICK_BATCH)
            .map(|(_, id)| *id)
            .collect();
        for id in &due {
            let Some(mut record) = self.open.get(id).cloned() else {
                continue;
            };
            let first = record.view.flags[0].clone();
            self.advance(&mut record, now)?;
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
            self.write_escalation(&record)?;
            self.insert_open(record);
        }
        let moved = !due.is_empty();
        if moved {
            self.commit().await?;
            for id in due {
                self.broadcast(id);
                self.perform_step(id).await;
            }
        }
        let covered = rota::covered(&self.rota, now);
        let coverage_changed = covered != self.covered;
        if coverage_changed {
            self.covered = covered;
            self.tell_everyone_coverage();
        }
        Ok(moved || coverage_changed)
    }

    fn tell_everyone_coverage(&self) {
        let frame = bytes(&self.coverage_frame());
        for online in self.online.values() {
            online.outbox.push(&frame);
        }
    }

    /// Pushes an escalation's summary to every supervisor and admin online.
    fn broadcast(&self, id: u64) {
        let Some(record) = self.open.get(&id) else {
            return;
        };
        self.broadcast_record(record);
    }

    fn broadcast_record(&self, record: &EscalationRecord) {
        let frame = bytes(&ServerFrame::Escalation {
            escalation: Self::staff_summary(record),
        });
        for (conn, online) in self.online.iter().filter(|(_, o)| is_staff(&o.roles)) {
            if online.outbox.half_full() || self.behind.borrow().contains(conn) {
                // A later page replaces this summary; the connection is not pushed
                // towards the slow-consumer close by a flood of changes.
                self.behind.borrow_mut().insert(*conn);
            } else {
                online.outbox.push(&frame);
            }
        }
    }

    /// Sends a support notice to every online connection of `keys`, each with
    /// its own reference to the escalation (never the id).
    fn notify(&self, keys: &[PublicKey], group: &GroupId, id: u64, notice: &str, message: String) {
        for key in keys {
            let frame = bytes(&ServerFrame::SupportNotice {
                group: group.clone(),
                reference: reference(&self.secret, id, key),
                notice: notice.into(),
                message: message.clone(),
                helplines: self.settings.helplines.clone(),
            });
            for online in self.online.values().filter(|o| o.key == *key) {
                online.outbox.push(&frame);
            }
        }
    }

    /// Who hears how an escalation goes: its flaggers, the facilitators of its
    /// group, and the person it is about unless that was withheld.
    fn interested(&self, record: &EscalationRecord) -> Vec<PublicKey> {
        let mut keys = record.flaggers.clone();
        for online in self.online.values() {
            if !online.roles.contains(&Role::Facilitator) || keys.contains(&online.key) {
                continue;
            }
            // Point reads per online facilitator, not the group's member list: a
            // facilitator of this group (by grant) who has joined it.
            let member = self
                .store
                .facilitates(&online.key, &record.view.group)
                .unwrap_or(false)
                && self
                    .store
                    .member_of(&record.view.group, &online.key)
                    .ok()
                    .flatten()
                    .is_some();
            if member {
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

    /// Performs the effects of escalation `id`'s routing step (its level now) and
    /// then marks it done: below [`UNANSWERED`] the pager and the pushes, marked
    /// once the alerts task says they were done; at [`UNANSWERED`] the notices
    /// to whoever is online, marked at once. The mark is durable (and in cluster
    /// mode in the router's log) so no router performs the step again; a router
    /// that dies before the mark leaves the step to the next (at least once).
    async fn perform_step(&mut self, id: u64) {
        let Some(record) = self.open.get(&id) else {
            return;
        };
        let level = record.view.level;
        if level >= UNANSWERED {
            self.tell_unanswered(id, "No supervisor has answered yet.");
            self.mark_steps_done(&[(id, level)]).await;
            return;
        }
        let summary = self.alert_summary_of(record);
        let (done, performed) = tokio::sync::oneshot::channel();
        self.alerts.step(summary, done);
        self.performing
            .spawn(async move { performed.await.ok().map(|()| (id, level)) });
    }

    /// At start (after a restart, or on taking the router over): performs
    /// escalation `id`'s routing step unless it was marked done; if it was, only
    /// its pushes' repeats are armed again.
    async fn resume_step(&mut self, id: u64) {
        let Some(record) = self.open.get(&id) else {
            return;
        };
        let level = record.view.level;
        let done = self.store.step_done(id).unwrap_or_else(|error| {
            // Unreadable: performed again rather than never.
            tracing::error!(%error, escalation = id, "a routing step's mark could not be read");
            0
        });
        if done < level {
            tracing::info!(
                escalation = id,
                level,
                "performing a routing step not marked done"
            );
            self.perform_step(id).await;
        } else if level < UNANSWERED {
            self.alerts.rearm(self.alert_summary_of(record));
        }
    }

    /// Marks each `(id, level)` done, durably: written, then flushed and (in
    /// cluster mode) appended to the router's log as one commit. Nothing for an
    /// escalation no longer open or held only in memory.
    async fn mark_steps_done(&mut self, steps: &[(u64, u8)]) {
        let mut written = false;
        for &(id, level) in steps {
            if id >= UNSTORED_IDS || !self.open.contains_key(&id) {
                continue;
            }
            if let Err(error) = self.store.put_step_done(id, level) {
                tracing::error!(%error, escalation = id, "a routing step could not be marked done");
                continue;
            }
            if let Some(owned) = &mut self.owned {
                owned
                    .ops
                    .push(crate::cluster::router_log::RouterOp::StepDone { id, level });
            }
            written = true;
        }
        if written {
            if let Err(error) = self.commit().await {
                tracing::error!(%error, "routing steps' marks were not committed");
            }
        }
    }

    /// Tells the alerts task (pagers, Web Push) where an escalation now waits,
    /// outside a routing step (a severity that rose, a flag not stored).
    fn page(&self, id: u64) {
        if let Some(summary) = self.alert_summary(id) {
            self.alerts.routed(summary);
        }
    }

    /// What an alert may say about an escalation (content-free; see `alerts`).
    fn alert_summary(&self, id: u64) -> Option<AlertSummary> {
        Some(self.alert_summary_of(self.open.get(&id)?))
    }

    /// The same for a record that may no longer be open (just resolved).
    fn alert_summary_of(&self, record: &EscalationRecord) -> AlertSummary {
        let view = &record.view;
        let id = view.id;
        let group_name = self
            .store
            .group(&view.group)
            .ok()
            .flatten()
            .map(|g| g.title)
            .unwrap_or_else(|| view.group.as_str().to_string());
        AlertSummary {
            id,
            severity: view.severity,
            group: view.group.clone(),
            group_name,
            level: view.level,
            deadline_ms: view.deadline_ms,
            created_ms: view.created_ms,
            to: view.waiting_for.clone(),
        }
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
        let roles = self.asker_roles(Some(outbox.conn), &key, is_staff).await?;
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
                let target =
                    roles_wanting(&self.store, self.owned.as_deref(), to, is_supervisor, true)
                        .await?;
                if !is_supervisor(&target) || *to == key {
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
        let Some(mut record) = self.open.get(&act.escalation).cloned() else {
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
            text: None,
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
        written?;
        self.insert_open(record.clone());
        self.commit().await?;
        outbox.push(&bytes(&ServerFrame::Ok { id: request_id }));
        self.broadcast_record(&record);
        let record = &record;
        match status {
            EscalationStatus::Acknowledged if name == "ack" => {
                self.alerts.acknowledged(self.alert_summary_of(record));
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
                self.alerts.resolved(self.alert_summary_of(record));
                let keys = self.interested(record);
                self.notify(
                    &keys,
                    &record.view.group,
                    id,
                    "resolved",
                    "The supervisor has closed this request for support.".into(),
                );
                self.staff.resolved(record);
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether `key` may use escalation `id`'s private line: a supervisor who may
    /// act on it — its handler, or while nobody has taken it, one it waits for
    /// (every supervisor from level 3). Checks authority before the target.
    fn line_grant(
        &self,
        key: &PublicKey,
        roles: &[Role],
        id: u64,
    ) -> Result<super::LineGrant, ServerError> {
        if !is_supervisor(roles) {
            return Err(ServerError::Forbidden(
                "only supervisors write on an escalation's private line",
            ));
        }
        let Some(record) = self.open.get(&id) else {
            return Err(ServerError::NotFound("no open escalation with that id"));
        };
        let view = &record.view;
        let may_act = match view.handler {
            Some(handler) => handler == *key,
            None => view.level >= 3 || view.waiting_for.contains(key),
        };
        if !may_act {
            return Err(ServerError::Forbidden(
                "acknowledge it first, or ask its supervisor",
            ));
        }
        Ok(super::LineGrant {
            group: view.group.clone(),
            about: view.about,
            tell_subject: record.tell_subject,
        })
    }

    async fn set_rota(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: RotaPayload,
    ) -> Result<(), ServerError> {
        if !is_admin(&self.asker_roles(Some(outbox.conn), &key, is_admin).await?) {
            return Err(ServerError::Forbidden("only an admin keeps the rota"));
        }
        rota::validate(&payload.entries).map_err(|why| ProtocolError::invalid("entries", why))?;
        let keys: Vec<PublicKey> = payload.entries.iter().map(|e| e.supervisor).collect();
        if first_not_supervisor(&self.store, self.owned.as_deref(), &keys)
            .await?
            .is_some()
        {
            return Err(
                ProtocolError::invalid("entries", "every rota entry names a supervisor").into(),
            );
        }
        let now = self.clock.now_ms();
        self.audit.append(NewEntry::new(now, "rota.set", env))?;
        self.write_rota(&payload.entries)?;
        self.store.raise_counter(&key, payload.counter)?;
        self.commit().await?;
        outbox.push(&bytes(&ServerFrame::Ok { id: request_id }));
        self.follow_rota(payload.entries, now);
        Ok(())
    }

    /// Follows a rota just committed: coverage changes are told to everyone.
    fn follow_rota(&mut self, entries: Vec<RotaEntry>, now: u64) {
        self.rota = entries;
        let covered = rota::covered(&self.rota, now);
        if covered != self.covered {
            self.covered = covered;
            self.tell_everyone_coverage();
        }
    }
}

/// Resolves when a kept lease is lost; never without one (one node).
async fn lost(lease: &mut Option<tokio::sync::watch::Receiver<crate::cluster::lease::LeaseState>>) {
    match lease {
        Some(lease) => {
            let _ = lease
                .wait_for(|s| matches!(s, crate::cluster::lease::LeaseState::Lost { .. }))
                .await;
        }
        None => std::future::pending().await,
    }
}
