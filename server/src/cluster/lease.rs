//! Leases in a replicated JetStream key-value bucket: who owns a group's actor, or
//! the router, right now.
//!
//! A lease is one key (`group-<id>`, `router`) whose value names the holder, its
//! epoch and a deadline. Every change is a compare-and-set on the key's revision
//! (the bucket's stream sequence), so of two nodes racing for a lease exactly one
//! wins, and a holder whose lease was taken over learns it at its next renewal.
//!
//! Expiry is the deadline in the value, not the bucket's max age: a key that the
//! bucket deleted on its own would take the epoch with it, and epochs must only
//! ever rise (the group log's fence compares them). A would-be owner takes an
//! expired or released lease over with the next epoch. The deadline is wall-clock
//! time of the writer; the holder itself stops acting on the lease by its own
//! monotonic clock (`Lease::valid_until`), measured from before the write was
//! sent, so it gives up no later than anyone could take over, as long as clocks
//! agree within the TTL's margin. Fencing the log does not depend on clocks at all.
//! [`Leases::keep`] renews in the background and reports the loss.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    check_token, is_removed, last_message, open_bucket, put_expecting, ClusterError, Nats, Put,
};
use crate::clock::Clock;

/// Where leases are kept and how long they last.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The bucket's name.
    pub bucket: String,
    /// Copies of the bucket (R3 by default; 1 for a one-server NATS).
    pub replicas: usize,
    /// How long a lease lasts after its last renewal.
    pub ttl: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            bucket: "peerhub_leases".to_string(),
            replicas: 3,
            ttl: Duration::from_secs(10),
        }
    }
}

/// The value stored under a lease's key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseValue {
    /// Who holds it (a node's name for this run).
    pub holder: String,
    /// Rises by one with every new holder; never falls.
    pub epoch: u64,
    /// Wall-clock ms after which anyone may take it over; 0 once released.
    pub deadline_ms: u64,
}

/// A lease this node holds.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    holder: String,
    epoch: u64,
    revision: u64,
    valid_until: Instant,
}

impl Lease {
    /// The lease's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The holder's name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The epoch: higher than every earlier holder's.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The key's revision after this holder's last write.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Until when (this node's monotonic clock) the holder may act on it without
    /// renewing: the TTL from before its last successful write was sent.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }
}

/// The lease bucket.
#[derive(Debug, Clone)]
pub struct Leases {
    js: jetstream::Context,
    /// The bucket's stream, for reads from its leader (see [`Leases::current`]).
    stream: jetstream::stream::Stream,
    bucket: String,
    ttl: Duration,
    clock: Clock,
}

impl Leases {
    /// Opens the bucket, creating it (file storage, `config.replicas` copies) if
    /// it does not exist yet.
    pub async fn open(
        nats: &Nats,
        config: &LeaseConfig,
        clock: Clock,
    ) -> Result<Self, ClusterError> {
        // The bucket's own handle is not kept: reads go to the stream's leader and
        // writes are compare-and-sets on the stream (see `current` and `put`).
        let stream = open_bucket(nats.jetstream(), &config.bucket, config.replicas).await?;
        Ok(Self {
            js: nats.jetstream().clone(),
            stream,
            bucket: config.bucket.clone(),
            ttl: config.ttl,
            clock,
        })
    }

    /// What the bucket holds for `key`, and its revision, as the bucket's stream
    /// leader has it. (The client's `entry` reads any replica, which may lag: a
    /// would-be owner would then see an old deadline. A stale read could never
    /// win a lease, since every write compares revisions, but it would give wrong
    /// answers about who holds it.)
    pub async fn current(&self, key: &str) -> Result<Option<(LeaseValue, u64)>, ClusterError> {
        check_token(key)?;
        let subject = format!("$KV.{}.{key}", self.bucket);
        match last_message(&self.stream, &subject, "lease read").await? {
            Some(message) if !is_removed(&message.headers) => {
                Ok(Some((decode(&message.payload)?, message.sequence)))
            }
            _ => Ok(None),
        }
    }

    /// Takes the lease for `holder`: creates it (epoch 1), or takes over one that
    /// expired or was released (its epoch + 1). Refuses with
    /// [`ClusterError::Held`] while another holder's deadline has not passed, and
    /// when another node won a race for the same lease.
    pub async fn acquire(&self, key: &str, holder: &str) -> Result<Lease, ClusterError> {
        check_token(key)?;
        let sent = Instant::now();
        let now_ms = self.clock.now_ms();
        match self.current(key).await? {
            None => {
                // Revision 0: "no value under this key yet". Keys are never deleted
                // (a release keeps the epoch), so this is the whole of "create".
                let value = self.value(holder, 1, now_ms);
                match self.put(key, value, 0).await {
                    Ok(revision) => Ok(self.held(key, holder, 1, revision, sent)),
                    Err(Put::Conflict) => Err(self.held_by_other(key, 0).await),
                    Err(Put::Failed(error)) => {
                        Err(ClusterError::unavailable("lease create", error))
                    }
                }
            }
            Some((current, revision)) => {
                if current.deadline_ms > now_ms {
                    return Err(ClusterError::Held {
                        key: key.to_string(),
                        epoch: current.epoch,
                        deadline_ms: current.deadline_ms,
                    });
                }
                let epoch = current.epoch + 1;
                let value = self.value(holder, epoch, now_ms);
                match self.put(key, value, revision).await {
                    Ok(revision) => Ok(self.held(key, holder, epoch, revision, sent)),
                    Err(Put::Conflict) => Err(self.held_by_other(key, revision).await),
                    Err(Put::Failed(error)) => {
                        Err(ClusterError::unavailable("lease take-over", error))
                    }
                }
            }
        }
    }

    /// Moves the deadline a TTL on. Fails with [`ClusterError::LeaseLost`] when
    /// anyone else wrote the key since this holder did.
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), ClusterError> {
        let sent = Instant::now();
        let value = self.value(&lease.holder, lease.epoch, self.clock.now_ms());
        match self.put(&lease.key, value, lease.revision).await {
            Ok(revision) => {
                lease.revision = revision;
                lease.valid_until = sent + self.ttl;
                Ok(())
            }
            Err(Put::Conflict) => Err(ClusterError::LeaseLost {
                key: lease.key.clone(),
                epoch: lease.epoch,
            }),
            Err(Put::Failed(error)) => Err(ClusterError::unavailable("lease renewal", error)),
        }
    }

    /// Gives the lease up at once (deadline 0, epoch kept), so the next owner need
    /// not wait for the TTL. Fails with [`ClusterError::LeaseLost`] when it was
    /// already taken over.
    pub async fn release(&self, lease: Lease) -> Result<(), ClusterError> {
        let value = encode(&LeaseValue {
            holder: lease.holder.clone(),
            epoch: lease.epoch,
            deadline_ms: 0,
        });
        match self.put(&lease.key, value, lease.revision).await {
            Ok(_) => Ok(()),
            Err(Put::Conflict) => Err(ClusterError::LeaseLost {
                key: lease.key,
                epoch: lease.epoch,
            }),
            Err(Put::Failed(error)) => Err(ClusterError::unavailable("lease release", error)),
        }
    }

    /// Writes `value` under `key` if the key's last revision is `revision` (0: no
    /// value yet): the bucket's compare-and-set.
    async fn put(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, Put> {
        put_expecting(
            &self.js,
            format!("$KV.{}.{key}", self.bucket),
            value,
            revision,
        )
        .await
    }

    fn value(&self, holder: &str, epoch: u64, now_ms: u64) -> Bytes {
        encode(&LeaseValue {
            holder: holder.to_string(),
            epoch,
            deadline_ms: now_ms.saturating_add(self.ttl.as_millis() as u64),
        })
    }

    fn held(&self, key: &str, holder: &str, epoch: u64, revision: u64, sent: Instant) -> Lease {
        tracing::debug!(key, epoch, revision, "lease acquired");
        Lease {
            key: key.to_string(),
            holder: holder.to_string(),
            epoch,
            revision,
            valid_until: sent + self.ttl,
        }
    }

    /// The error for a lost race: who holds it now. The winner's write may still
    /// be in flight when the loser hears of the conflict (10164), so the read is
    /// repeated for a moment until the key shows a value newer than `seen`.
    async fn held_by_other(&self, key: &str, seen: u64) -> ClusterError {
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            match self.current(key).await {
                Ok(Some((value, revision))) if revision > seen => {
                    return ClusterError::Held {
                        key: key.to_string(),
                        epoch: value.epoch,
                        deadline_ms: value.deadline_ms,
                    }
                }
                Ok(_) if attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                }
                Ok(_) => {
                    return ClusterError::Held {
                        key: key.to_string(),
                        epoch: 0,
                        deadline_ms: 0,
                    }
                }
                Err(error) => return error,
            }
        }
    }
}

fn encode(value: &LeaseValue) -> Bytes {
    super::to_json(value)
}

fn decode(bytes: &[u8]) -> Result<LeaseValue, ClusterError> {
    super::from_json("lease value", bytes)
}

/// Whether a kept lease is still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Held at `epoch`; act on it only before `valid_until` (this node's clock).
    Held {
        /// The epoch.
        epoch: u64,
        /// The end of the last successful renewal's TTL.
        valid_until: Instant,
    },
    /// Lost for good: taken over, or not renewed before `valid_until`. Acquire
    /// again (a new epoch) to act again.
    Lost {
        /// The epoch that was lost.
        epoch: u64,
    },
}

/// A lease renewed in the background every third of its TTL (see [`Leases::keep`]).
#[derive(Debug)]
pub struct LeaseKeeper {
    key: String,
    state: tokio::sync::watch::Receiver<LeaseState>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Option<Lease>>,
    leases: Leases,
}

impl Leases {
    /// Renews `lease` every TTL/3 until stopped. The lease counts as lost the
    /// moment a renewal is refused ([`ClusterError::LeaseLost`]) **or** its
    /// `valid_until` passes without a successful renewal (NATS unreachable, no
    /// quorum): the holder stops no later than anyone else may take over.
    pub fn keep(&self, lease: Lease) -> LeaseKeeper {
        let (tx, state) = tokio::sync::watch::channel(LeaseState::Held {
            epoch: lease.epoch,
            valid_until: lease.valid_until,
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let key = lease.key.clone();
        let task = tokio::spawn(keep_renewing(self.clone(), lease, tx, stop.clone()));
        LeaseKeeper {
            key,
            state,
            stop,
            task,
            leases: self.clone(),
        }
    }
}

async fn keep_renewing(
    leases: Leases,
    mut lease: Lease,
    tx: tokio::sync::watch::Sender<LeaseState>,
    stop: tokio_util::sync::CancellationToken,
) -> Option<Lease> {
    let every = leases.ttl / 3;
    let retry = (leases.ttl / 10).max(Duration::from_millis(50));
    let mut next = tokio::time::Instant::now() + every;
    loop {
        let valid_until = tokio::time::Instant::from_std(lease.valid_until);
        tokio::select! {
            _ = stop.cancelled() => return Some(lease),
            _ = tokio::time::sleep_until(valid_until) => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return Some(lease),
            _ = tokio::time::sleep_until(valid_until) => break,
            renewed = leases.renew(&mut lease) => match renewed {
                Ok(()) => {
                    let _ = tx.send(LeaseState::Held {
                        epoch: lease.epoch,
                        valid_until: lease.valid_until,
                    });
                    next = tokio::time::Instant::now() + every;
                }
                Err(ClusterError::LeaseLost { .. }) => break,
                Err(error) => {
                    tracing::warn!(key = %lease.key, epoch = lease.epoch, %error, "lease renewal failed; retrying");
                    next = tokio::time::Instant::now() + retry;
                }
            },
        }
    }
    tracing::warn!(key = %lease.key, epoch = lease.epoch, "lease lost");
    let _ = tx.send(LeaseState::Lost { epoch: lease.epoch });
    None
}

impl LeaseKeeper {
    /// The lease's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The state as last renewed.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// Whether the holder may act now: held, and before `valid_until`.
    pub fn is_held(&self) -> bool {
        match self.state() {
            LeaseState::Held { valid_until, .. } => Instant::now() < valid_until,
            LeaseState::Lost { .. } => false,
        }
    }

    /// The state's changes, for a task that waits on the loss without holding
    /// the keeper.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Resolves once the lease is lost (at once if it already is).
    pub async fn lost(&mut self) {
        let _ = self
            .state
            .wait_for(|state| matches!(state, LeaseState::Lost { .. }))
            .await;
    }

    /// Stops renewing and releases the lease if it is still held.
    pub async fn release(mut self) -> Result<(), ClusterError> {
        self.stop.cancel();
        match (&mut self.task).await {
            Ok(Some(lease)) => self.leases.release(lease).await,
            Ok(None) | Err(_) => Ok(()),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // Dropped without release: stop renewing; the lease runs out by its TTL.
        self.stop.cancel();
    }
}
