//! The router's deadlines across nodes: one node at a time enforces them, holding
//! the `router` lease; a node taking over re-arms every pending deadline from the
//! replicated queue at once, so a deadline that passed during the failover fires
//! as soon as the new leader has the lease; and each routing step's effects (the
//! pager and push hooks) happen once per step however many nodes there are.
//!
//! A routing step of escalation `id` is named by the level it moves to (levels only
//! rise). Firing a due deadline is, in this order:
//!
//! 1. record the step ([`Steps::record`]: once, whoever tries);
//! 2. move the record to that level by compare-and-set, only if it is still open,
//!    due and below that level ([`EscalationQueue::update`]);
//! 3. unless the step is marked done ([`Steps::is_done`]), perform its effects,
//!    then mark it done ([`Steps::mark_done`]).
//!
//! A node taking over also looks at the current level of every open (not yet
//! acknowledged) escalation and performs the effects of any step not marked
//! done: the previous leader died between 1 and 3. Effects are therefore at
//! least once, and more than once only when a leader dies after performing them
//! and before marking them done; every page carries the step's id (`esc-<id>-step-<n>`) as the
//! pager's deduplication key, which collapses that repeat. A leader checks it
//! still holds the lease before each effect and stops when the lease is lost.
//!
//! What a step does to the record (the levels, the rota) and what its effects
//! are stay the router's: they are given as functions. The index of deadlines
//! is re-read from the queue at takeover and every `rescan` (escalations are
//! written by other nodes until the router's commands are forwarded to the
//! leader; docs/CLUSTER.md §6). Logs name escalation ids, steps and epochs only.

use std::future::Future;
use std::time::Duration;

use peerhub_protocol::escalation::EscalationStatus;
use tokio_util::sync::CancellationToken;

use super::dedupe::Steps;
use super::escalations::{deadlines, EscalationQueue};
use super::lease::{LeaseKeeper, LeaseState, Leases};
use super::ClusterError;
use crate::clock::Clock;
use crate::store::records::EscalationRecord;

/// The router's lease key.
pub const ROUTER_LEASE: &str = "router";

/// How the leader runs.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// The lease it holds.
    pub lease_key: String,
    /// How often a node without the lease tries for it (and a holder's longest
    /// sleep before it reads the queue again).
    pub rescan: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            lease_key: ROUTER_LEASE.to_string(),
            rescan: Duration::from_secs(1),
        }
    }
}

/// One node's part in routing: it leads when it holds the lease.
#[derive(Debug, Clone)]
pub struct RoutingNode {
    /// This node's name (the lease's holder).
    pub holder: String,
    /// The lease bucket.
    pub leases: Leases,
    /// The escalation queue.
    pub queue: EscalationQueue,
    /// The routing steps.
    pub steps: Steps,
    /// The clock deadlines are read against.
    pub clock: Clock,
    /// How it runs.
    pub config: RoutingConfig,
}

impl RoutingNode {
    /// Takes part until `stop`: waits for the lease, and while holding it
    /// enforces every deadline. `advance` moves an open record to its next level
    /// (it must raise `view.level`, and set the next deadline or none);
    /// `effects(record, step)` performs a step's pages and pushes.
    pub async fn run<A, E, Fut>(&self, advance: A, effects: E, stop: CancellationToken)
    where
        A: Fn(&EscalationRecord, u64) -> EscalationRecord,
        E: Fn(EscalationRecord, u32) -> Fut,
        Fut: Future<Output = ()>,
    {
        while !stop.is_cancelled() {
            let lease = match self
                .leases
                .acquire(&self.config.lease_key, &self.holder)
                .await
            {
                Ok(lease) => lease,
                Err(_) => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(self.config.rescan) => continue,
                    }
                }
            };
            let epoch = lease.epoch();
            tracing::info!(epoch, "this node leads the router");
            let keeper = self.leases.keep(lease);
            // `lead` looks at the lease before every effect and at least every
            // `rescan`, and returns when it is lost. A NATS request that failed
            // (a server going away, an election) is not a reason to hand the lease
            // on: while it is held, lead again from the queue.
            loop {
                let outcome = tokio::select! {
                    () = stop.cancelled() => Ok(()),
                    outcome = self.lead(&keeper, &advance, &effects) => outcome,
                };
                match outcome {
                    Err(error @ ClusterError::Unavailable { .. }) if keeper.is_held() => {
                        tracing::warn!(epoch, %error, "router leader: leading again");
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(self.config.rescan) => {}
                        }
                    }
                    Err(error) => {
                        tracing::warn!(epoch, %error, "router leader stopped: handing the lease on");
                        break;
                    }
                    Ok(()) => break,
                }
            }
            // Releasing lets the next node lead at once instead of after the TTL.
            let _ = keeper.release().await;
        }
    }

    /// Leads while `keeper` holds the lease: finishes steps a previous leader left
    /// undone, then fires deadlines as they come.
    async fn lead<A, E, Fut>(
        &self,
        keeper: &LeaseKeeper,
        advance: &A,
        effects: &E,
    ) -> Result<(), ClusterError>
    where
        A: Fn(&EscalationRecord, u64) -> EscalationRecord,
        E: Fn(EscalationRecord, u32) -> Fut,
        Fut: Future<Output = ()>,
    {
        let open = self.queue.unresolved().await?;
        for record in &open {
            // Only an open escalation is paged: once acknowledged, it has a
            // supervisor, and a page now would only be noise.
            let step = u32::from(record.view.level);
            let waiting = record.view.status == EscalationStatus::Open;
            if waiting && step > 0 && !self.steps.is_done(record.view.id, step).await? {
                tracing::info!(
                    escalation = record.view.id,
                    step,
                    "finishing a routing step the last leader left undone"
                );
                self.perform(keeper, effects, record.clone(), step).await?;
            }
        }
        let mut index = deadlines(&open);
        let mut rescan_at = tokio::time::Instant::now() + self.config.rescan;
        loop {
            if !keeper.is_held() {
                return Err(lost(keeper));
            }
            let now = self.clock.now_ms();
            while let Some(&(at, id)) = index.first() {
                if at > now {
                    break;
                }
                index.pop_first();
                if let Some(next) = self.fire(keeper, advance, effects, id, now).await? {
                    index.insert((next, id));
                }
            }
            if tokio::time::Instant::now() >= rescan_at {
                index = deadlines(&self.queue.unresolved().await?);
                rescan_at = tokio::time::Instant::now() + self.config.rescan;
                continue;
            }
            let until_due = index
                .first()
                .map(|(at, _)| Duration::from_millis(at.saturating_sub(self.clock.now_ms())));
            let wake = until_due.map_or(rescan_at, |d| {
                (tokio::time::Instant::now() + d).min(rescan_at)
            });
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Fires escalation `id`'s deadline if it is still open and due; returns its
    /// next deadline, if it has one.
    async fn fire<A, E, Fut>(
        &self,
        keeper: &LeaseKeeper,
        advance: &A,
        effects: &E,
        id: u64,
        now: u64,
    ) -> Result<Option<u64>, ClusterError>
    where
        A: Fn(&EscalationRecord, u64) -> EscalationRecord,
        E: Fn(EscalationRecord, u32) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Some((record, _)) = self.queue.get(id).await? else {
            return Ok(None);
        };
        if !due(&record, now) {
            return Ok(open_deadline(&record));
        }
        let step = u32::from(advance(&record, now).view.level);
        if step <= u32::from(record.view.level) {
            return Err(ClusterError::Corrupt {
                what: "routing step",
                reason: format!("escalation {id}: the next level does not rise"),
            });
        }
        if !keeper.is_held() {
            return Err(lost(keeper));
        }
        self.steps
            .record(id, step, bytes::Bytes::from(step.to_string()))
            .await?;
        let written = self
            .queue
            .update(id, |current| {
                let current = current?;
                (due(current, now) && u32::from(current.view.level) < step)
                    .then(|| advance(current, now))
            })
            .await?;
        let (record, _) = match written {
            Some(written) => written,
            // Acknowledged, resolved or moved on meanwhile: as it is now.
            None => match self.queue.get(id).await? {
                Some(found) => found,
                None => return Ok(None),
            },
        };
        if u32::from(record.view.level) >= step && !self.steps.is_done(id, step).await? {
            let next = open_deadline(&record);
            self.perform(keeper, effects, record, step).await?;
            return Ok(next);
        }
        Ok(open_deadline(&record))
    }

    /// Performs a step's effects and marks it done, if the lease is still held.
    async fn perform<E, Fut>(
        &self,
        keeper: &LeaseKeeper,
        effects: &E,
        record: EscalationRecord,
        step: u32,
    ) -> Result<(), ClusterError>
    where
        E: Fn(EscalationRecord, u32) -> Fut,
        Fut: Future<Output = ()>,
    {
        if !keeper.is_held() {
            return Err(lost(keeper));
        }
        let id = record.view.id;
        effects(record, step).await;
        self.steps.mark_done(id, step).await
    }
}

/// Whether `record` is open with a deadline that has passed at `now`.
fn due(record: &EscalationRecord, now: u64) -> bool {
    record.view.status == EscalationStatus::Open
        && record.view.deadline_ms.is_some_and(|at| at <= now)
}

/// The deadline of an open record.
fn open_deadline(record: &EscalationRecord) -> Option<u64> {
    (record.view.status == EscalationStatus::Open)
        .then_some(record.view.deadline_ms)
        .flatten()
}

/// The error for acting on a lease no longer held.
fn lost(keeper: &LeaseKeeper) -> ClusterError {
    let epoch = match keeper.state() {
        LeaseState::Held { epoch, .. } | LeaseState::Lost { epoch } => epoch,
    };
    ClusterError::LeaseLost {
        key: keeper.key().to_string(),
        epoch,
    }
}
