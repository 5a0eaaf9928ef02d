//! Out-of-band alerting: what reaches a supervisor who has no peerhub tab open.
//!
//! The router tells an [`Alerts`] handle three things, each as a content-free
//! [`AlertSummary`] or an id: an escalation was routed (or re-routed), acknowledged,
//! resolved. One task owns what follows:
//!
//! ```text
//! router ──routed/acked/resolved──► alerts task ──► pager worker (PagerDuty, Opsgenie, ntfy, generic)
//!                                        │
//!                                        └──► Web Push to each waiting supervisor's subscriptions,
//!                                             re-sent every `push_repeat` until acknowledged
//! ```
//!
//! It never holds up the router: the channel is bounded and written with
//! `try_send`, and a full channel is logged (the console and the escalation's own
//! deadlines still carry it). It never sees names, notes, messages or the context.
//! For a routing step ([`Alerts::step`]) it says when the page was taken and
//! every push tried, so the router can mark the step done.
//! It also keeps [`AlertStatus`]: which supervisors on the rota could not be reached
//! (no push subscription and no pager), for `/metrics` and the admin screen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use peerhub_protocol::escalation::Severity;
use peerhub_protocol::{GroupId, PublicKey};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pager::{PageEvent, Pager, PagerSettings};
use super::push::{PushOutcome, PushSender};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Events waiting for the alerts task.
const QUEUE: usize = 4096;
/// How often the reachability of the rota is re-read.
const STATUS_REFRESH: Duration = Duration::from_secs(2);

/// What an alert may say about an escalation, and whom it is for. Content-free:
/// no name, key (but the recipients'), note, message or context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSummary {
    /// The escalation's id.
    pub id: u64,
    /// Its severity.
    pub severity: Severity,
    /// Its group.
    pub group: GroupId,
    /// The group's title (its id if it has none).
    pub group_name: String,
    /// Routing level (1 primary, 2 second line, 3 everyone).
    pub level: u8,
    /// When it moves on if nobody acknowledges.
    pub deadline_ms: Option<u64>,
    /// When it was raised.
    pub created_ms: u64,
    /// The supervisors (and admins) it waits for: who gets the push. Never sent.
    pub to: Vec<PublicKey>,
}

impl AlertSummary {
    /// Whole seconds (rounded up) until its deadline at `now_ms`, if it has one.
    pub fn seconds_left(&self, now_ms: u64) -> Option<u64> {
        self.deadline_ms
            .map(|d| d.saturating_sub(now_ms).div_ceil(1000))
    }
}

/// Alerting settings.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// The pager hook, if any.
    pub pager: Option<PagerSettings>,
    /// How often a push is re-sent while its escalation waits.
    pub push_repeat: Duration,
    /// The VAPID `sub` claim: a `mailto:` or `https:` contact for push services.
    pub push_contact: String,
    /// The console's base URL, for links (`https://hub.example/`).
    pub base_url: String,
}

/// Whether on-call supervisors can be reached away from the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertStatus {
    /// A pager hook is configured.
    pub pager: bool,
    /// Supervisors on the rota with no push subscription, when there is no pager.
    pub unreachable: Vec<PublicKey>,
}

#[derive(Debug)]
enum AlertEvent {
    /// Routed, and who hears when its page and pushes were done (a routing
    /// step's; `None` for a page that is not one).
    Routed(AlertSummary, Option<oneshot::Sender<()>>),
    /// Waiting still, already paged and pushed (by a router before a restart or
    /// a failover): only its repeats are due.
    Rearm(AlertSummary),
    Acknowledged(AlertSummary),
    Resolved(AlertSummary),
    SubscriptionsChanged,
}

/// The router's (and the sessions') line to the alerts task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Alerts {
    // Sender: the router and sessions. Receiver: the alerts task. Bounded; see the
    // module doc for why a full queue drops rather than waits.
    tx: mpsc::Sender<AlertEvent>,
    store: Store,
    clock: Clock,
    pager: bool,
    push: Option<Arc<PushSender>>,
}

impl Alerts {
    /// Starts the alerts task on `tracker`; it stops when `stop` is cancelled.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        store: Store,
        clock: Clock,
        settings: AlertSettings,
        hub_seed: [u8; 32],
        tracker: &TaskTracker,
        stop: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let pager = settings
            .pager
            .clone()
            .map(|p| Pager::new(p, hub_seed, tracker, stop.clone()));
        let push = PushSender::from_store(&store, settings.push_contact.clone())?.map(Arc::new);
        let contact_ok = settings.push_contact.starts_with("mailto:")
            || settings.push_contact.starts_with("https://");
        if !contact_ok {
            // Some push services refuse a VAPID `sub` that is neither (RFC 8292 §2.1).
            tracing::warn!(
                "escalation.push_contact is not set and the public URL is not https: \
                 some push services will refuse this hub's pushes"
            );
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let has_pager = pager.is_some();
        let task = AlertTask {
            store: store.clone(),
            clock: clock.clone(),
            settings,
            pager,
            push: push.clone(),
            rx,
            stop,
            metrics,
            waiting: HashMap::new(),
            tracker: tracker.clone(),
        };
        task.refresh_status();
        tracker.spawn(task.run());
        Ok(Self {
            tx,
            store,
            clock,
            pager: has_pager,
            push,
        })
    }

    fn tell(&self, event: AlertEvent) {
        if let Err(error) = self.tx.try_send(event) {
            tracing::warn!(%error, "alerts queue full or closed; alert dropped");
        }
    }

    /// An escalation was routed (or re-routed) to `summary.to`.
    pub fn routed(&self, summary: AlertSummary) {
        self.tell(AlertEvent::Routed(summary, None));
    }

    /// A routing step: the escalation was routed to `summary.to` at level
    /// `summary.level`. `done` hears once the pager took the page and every push
    /// was tried; it is dropped unheard when they were not (the hub stopping, a
    /// full queue), so the step is performed again by the next router.
    pub fn step(&self, summary: AlertSummary, done: oneshot::Sender<()>) {
        self.tell(AlertEvent::Routed(summary, Some(done)));
    }

    /// An escalation still waits whose routing step was paged and pushed before
    /// (by this hub before a restart, or by the last leader): its pushes are
    /// repeated from now on, and nothing is sent now.
    pub fn rearm(&self, summary: AlertSummary) {
        self.tell(AlertEvent::Rearm(summary));
    }

    /// An escalation was acknowledged: its repeats stop, the pager hears. The
    /// summary comes along so the pager hears even of one routed before a restart.
    pub fn acknowledged(&self, summary: AlertSummary) {
        self.tell(AlertEvent::Acknowledged(summary));
    }

    /// An escalation was resolved.
    pub fn resolved(&self, summary: AlertSummary) {
        self.tell(AlertEvent::Resolved(summary));
    }

    /// A push subscription was added or removed.
    pub fn subscriptions_changed(&self) {
        self.tell(AlertEvent::SubscriptionsChanged);
    }

    /// Reachability of the rota, read now.
    pub fn status(&self) -> AlertStatus {
        reachability(
            &self.store,
            self.pager,
            self.push.is_some(),
            self.clock.now_ms(),
        )
    }

    /// The hub's VAPID public key (uncompressed P-256 point, base64url), for
    /// `pushManager.subscribe`.
    pub fn vapid_public_key(&self) -> Option<String> {
        self.push.as_ref().map(|p| p.public_key_b64())
    }
}

/// An unacknowledged escalation, and when its push is next repeated.
#[derive(Debug)]
struct Waiting {
    summary: AlertSummary,
    next_push_ms: u64,
}

struct AlertTask {
    store: Store,
    clock: Clock,
    settings: AlertSettings,
    pager: Option<Pager>,
    push: Option<Arc<PushSender>>,
    rx: mpsc::Receiver<AlertEvent>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    waiting: HashMap<u64, Waiting>,
    tracker: TaskTracker,
}

/// Which supervisors on the rota (now or later) nobody can reach away from the
/// console: none if a pager is set; otherwise those without a push subscription.
/// A bounded read: the rota, then one prefix scan per supervisor on it.
fn reachability(store: &Store, pager: bool, push: bool, now_ms: u64) -> AlertStatus {
    let mut unreachable = Vec::new();
    if !pager {
        for entry in store.rota().unwrap_or_default() {
            if entry.end_ms <= now_ms || unreachable.contains(&entry.supervisor) {
                continue;
            }
            let subscribed = push
                && store
                    .push_subscriptions(&entry.supervisor)
                    .is_ok_and(|s| !s.is_empty());
            if !subscribed {
                unreachable.push(entry.supervisor);
            }
        }
    }
    AlertStatus { pager, unreachable }
}

impl AlertTask {
    async fn run(mut self) {
        let mut refresh = tokio::time::interval(STATUS_REFRESH);
        loop {
            let now = self.clock.now_ms();
            let next_push = self.waiting.values().map(|w| w.next_push_ms).min();
            let wait = next_push.map(|at| Duration::from_millis(at.saturating_sub(now)));
            tokio::select! {
                _ = self.stop.cancelled() => break,
                event = self.rx.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                _ = refresh.tick() => self.refresh_status(),
                _ = tokio::time::sleep(wait.unwrap_or(STATUS_REFRESH)), if wait.is_some() => {
                    self.repeat_due();
                }
            }
        }
        tracing::debug!("alerts task stopped");
    }

    fn link(&self, id: u64) -> String {
        format!(
            "{}#escalation={id}",
            self.settings.base_url.trim_end_matches('#')
        )
    }

    fn handle(&mut self, event: AlertEvent) {
        let now = self.clock.now_ms();
        match event {
            AlertEvent::Routed(summary, done) => {
                let (taken, paged) = match (&self.pager, done.is_some()) {
                    (Some(_), true) => {
                        let (taken, paged) = oneshot::channel();
                        (Some(taken), Some(paged))
                    }
                    _ => (None, None),
                };
                if let Some(pager) = &self.pager {
                    let link = self.link(summary.id);
                    pager.send_then(PageEvent::Trigger, &summary, &link, now, taken);
                }
                let pushes = self.push_now(&summary);
                if let Some(done) = done {
                    self.tracker.spawn(async move {
                        let mut performed = match paged {
                            Some(paged) => paged.await.is_ok(),
                            None => true,
                        };
                        for push in pushes {
                            performed &= push.await.unwrap_or(false);
                        }
                        if performed {
                            let _ = done.send(());
                        }
                    });
                }
                self.rearm(summary, now);
            }
            AlertEvent::Rearm(summary) => self.rearm(summary, now),
            AlertEvent::Acknowledged(summary) => {
                if let Some(pager) = &self.pager {
                    pager.send(
                        PageEvent::Acknowledge,
                        &summary,
                        &self.link(summary.id),
                        now,
                    );
                }
                self.waiting.remove(&summary.id);
            }
            AlertEvent::Resolved(summary) => {
                self.waiting.remove(&summary.id);
                if let Some(pager) = &self.pager {
                    pager.send(PageEvent::Resolve, &summary, &self.link(summary.id), now);
                }
            }
            AlertEvent::SubscriptionsChanged => self.refresh_status(),
        }
    }

    /// Keeps `summary` waiting: its push is repeated every `push_repeat` from `now`.
    fn rearm(&mut self, summary: AlertSummary, now: u64) {
        let next_push_ms = now + self.settings.push_repeat.as_millis() as u64;
        self.waiting.insert(
            summary.id,
            Waiting {
                summary,
                next_push_ms,
            },
        );
    }

    /// Re-sends the push of every unacknowledged escalation whose repeat is due.
    fn repeat_due(&mut self) {
        let now = self.clock.now_ms();
        let every = self.settings.push_repeat.as_millis() as u64;
        let due: Vec<AlertSummary> = self
            .waiting
            .values_mut()
            .filter(|w| w.next_push_ms <= now)
            .map(|w| {
                w.next_push_ms = now + every;
                w.summary.clone()
            })
            .collect();
        for summary in due {
            // Repeats are not a step's: nobody waits for them.
            drop(self.push_now(&summary));
        }
    }

    /// Sends the escalation's push to every subscription of everyone it waits for,
    /// each in its own task; a subscription the push service says is gone (404,
    /// 410) is removed. Each task answers whether it was tried (`false`: the hub
    /// stopped first).
    fn push_now(&self, summary: &AlertSummary) -> Vec<JoinHandle<bool>> {
        let mut tasks = Vec::new();
        let Some(push) = &self.push else {
            return tasks;
        };
        let now = self.clock.now_ms();
        let payload = super::push::payload(summary, &self.link(summary.id), now);
        for key in &summary.to {
            let subscriptions = match self.store.push_subscriptions(key) {
                Ok(subscriptions) => subscriptions,
                Err(error) => {
                    tracing::error!(%error, "reading push subscriptions failed");
                    continue;
                }
            };
            for subscription in subscriptions {
                let (push, store, payload, key) =
                    (push.clone(), self.store.clone(), payload.clone(), *key);
                let (id, severity, metrics) = (summary.id, summary.severity, self.metrics.clone());
                let repeat = self.settings.push_repeat;
                let stop = self.stop.clone();
                tasks.push(self.tracker.spawn(async move {
                    // A push in flight does not hold up the hub's shutdown.
                    let outcome = tokio::select! {
                        _ = stop.cancelled() => return false,
                        outcome = push.send(&subscription, &payload, severity, id, repeat) => outcome,
                    };
                    metrics.alert_sent("push", outcome.as_str());
                    if outcome == PushOutcome::Gone {
                        tracing::info!(escalation = id, "push subscription gone; removed");
                        if let Err(error) =
                            store.remove_push_subscription(&key, &subscription.endpoint)
                        {
                            tracing::error!(%error, "removing a push subscription failed");
                        }
                    }
                    true
                }));
            }
        }
        tasks
    }

    /// Recomputes the unreachable gauge on `/metrics`.
    fn refresh_status(&self) {
        let status = reachability(
            &self.store,
            self.pager.is_some(),
            self.push.is_some(),
            self.clock.now_ms(),
        );
        self.metrics
            .oncall_unreachable
            .set(i64::try_from(status.unreachable.len()).unwrap_or(i64::MAX));
    }
}
