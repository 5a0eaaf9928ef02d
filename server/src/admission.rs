//! Admission of signed commands: the checks every signed envelope passes before its
//! command runs, in the order PROTOCOL.md gives, so the first failure is the error
//! the client sees.
//!
//! Owns the per-key replay counters' one rule (PROTOCOL.md §4.5): the last counter
//! accepted from a key is the one in the store, and nothing else. A command's counter
//! is written (`Store::raise_counter`) by whoever commits the command, in the same
//! flush that acknowledges it; a refused command writes none. So what the running
//! hub enforces is what it stored, and a restart (graceful or `kill -9`) changes
//! nothing. While a command is under way its counter is held by a [`CounterTicket`],
//! so the same counter cannot be admitted twice at once from two connections.
//!
//! In cluster mode a key can be logged in on two nodes, and PROTOCOL.md §2's
//! "the last counter the server accepted from that key" means on any node
//! (docs/CLUSTER.md §4, "Global"): after the local check, the counter is
//! accepted in the cluster's directory by compare-and-set
//! ([`ReplayGuard::reserve_in_cluster`]). There it is spent at admission, not at
//! commit: a command refused after admission has used its counter up, and the
//! client signs its next attempt with a new one (as it does anyway). When the
//! directory cannot answer the command is refused with a retryable error —
//! except a flag: the help path never waits on NATS for longer than
//! [`FLAG_COUNTER_WAIT`], and then goes on on this node's check alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::limits::MAX_CLOCK_SKEW_MS;
use peerhub_protocol::payload::Counted;
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use serde::de::DeserializeOwned;

use crate::cluster::directory::Directory;
use crate::error::ServerError;
use crate::store::{Store, StoreError};

/// The replay check: the store's last accepted counter per key, and the counters
/// of commands under way.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    inner: Arc<GuardInner>,
}

#[derive(Debug)]
struct GuardInner {
    store: Store,
    // Counters admitted and not yet finished, per key. Locked for a store read and
    // a small vector update; never held across an await. The store is read under
    // this lock: a ticket is released (under it too) only after its command wrote
    // its counter, so an admission sees either the ticket or the written counter.
    under_way: Mutex<HashMap<PublicKey, Vec<u64>>>,
}

impl GuardInner {
    fn with_map<T>(&self, f: impl FnOnce(&mut HashMap<PublicKey, Vec<u64>>) -> T) -> T {
        let mut map = self.under_way.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }
}

impl ReplayGuard {
    /// A guard backed by `store`.
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(GuardInner {
                store,
                under_way: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The last counter accepted from `key` (0 for a new key).
    pub fn last(&self, key: &PublicKey) -> Result<u64, StoreError> {
        self.inner.store.counter(key)
    }

    /// Admits `counter` for `key` if it is greater than the last accepted and no
    /// command under way holds it. The counter is spent only if the command
    /// succeeds (its committer writes it); the ticket, dropped when the command is
    /// done either way, frees it.
    pub fn reserve(&self, key: &PublicKey, counter: u64) -> Result<CounterTicket, ServerError> {
        self.inner.with_map(|map| {
            let last = self.inner.store.counter(key)?;
            if counter <= last {
                return Err(ServerError::Replay { counter, last });
            }
            let held = map.entry(*key).or_default();
            if held.contains(&counter) {
                return Err(ServerError::ReplayUnderWay { counter });
            }
            held.push(counter);
            Ok(())
        })?;
        Ok(CounterTicket {
            guard: Arc::clone(&self.inner),
            key: *key,
            counter,
        })
    }
}

impl ReplayGuard {
    /// A ticket for a command another node admitted (cluster mode: the counter
    /// was checked against every node's, in the cluster's directory, before the
    /// command was sent here); held while this node's group task handles it.
    pub fn forwarded(&self, key: &PublicKey, counter: u64) -> CounterTicket {
        self.inner
            .with_map(|map| map.entry(*key).or_default().push(counter));
        CounterTicket {
            guard: Arc::clone(&self.inner),
            key: *key,
            counter,
        }
    }
}

/// The longest a flag waits for the cluster's directory to accept its counter;
/// past it (or when NATS fails) the flag is admitted on this node's check alone
/// and goes on to the router, which answers it with the helplines as always.
pub const FLAG_COUNTER_WAIT: Duration = Duration::from_millis(250);

impl ReplayGuard {
    /// Cluster mode's [`ReplayGuard::reserve`]: the local check and ticket
    /// first (a replay to this node costs no NATS request), then the counter
    /// accepted in `directory`, where a counter presented on two nodes at once
    /// is accepted once. `help` (a flag): never refused because NATS is slow or
    /// unreachable (see the module).
    pub async fn reserve_in_cluster(
        &self,
        directory: &Directory,
        key: &PublicKey,
        counter: u64,
        help: bool,
    ) -> Result<CounterTicket, ServerError> {
        let ticket = self.reserve(key, counter)?;
        let accept = directory.accept_counter_above(key, counter);
        let outcome = if help {
            match tokio::time::timeout(FLAG_COUNTER_WAIT, accept).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::warn!(
                        "a flag admitted on this node's counter alone: the cluster was slow"
                    );
                    return Ok(ticket);
                }
            }
        } else {
            accept.await
        };
        match outcome {
            Ok(Ok(())) => Ok(ticket),
            Ok(Err(last)) => Err(ServerError::Replay { counter, last }),
            Err(error) if help => {
                tracing::warn!(%error, "a flag admitted on this node's counter alone: the cluster did not answer");
                Ok(ticket)
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// A counter held by a command under way. Travels with the command to the task that
/// commits it and is dropped there after the commit's counter write (or the
/// refusal): only then may the same counter be admitted again, and by then the
/// store says whether it was spent.
#[derive(Debug)]
#[must_use = "dropping the ticket frees its counter: keep it until the command is done"]
pub struct CounterTicket {
    guard: Arc<GuardInner>,
    key: PublicKey,
    counter: u64,
}

impl CounterTicket {
    /// The counter held.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

impl Drop for CounterTicket {
    fn drop(&mut self) {
        self.guard.with_map(|map| {
            if let Some(held) = map.get_mut(&self.key) {
                held.retain(|c| *c != self.counter);
                if held.is_empty() {
                    map.remove(&self.key);
                }
            }
        });
    }
}

/// What the session knows when it admits a command.
#[derive(Debug)]
pub struct Signer<'a> {
    /// The logged-in key.
    pub key: &'a PublicKey,
    /// Its decoded form, cached at login.
    pub verifying: &'a VerifyingKey,
}

/// Checks `env` as a command of `kind` aimed at `frame_group` (for group-scoped
/// frames) and returns its payload, with the ticket that holds its counter until the
/// command is done. The counter is checked last, and spent only by the command's
/// commit: a refused command, at any step, spends none.
pub fn admit<P: Counted + DeserializeOwned>(
    guard: &ReplayGuard,
    signer: &Signer<'_>,
    env: &SignedEnvelope,
    kind: Kind,
    frame_group: Option<&GroupId>,
    now_ms: u64,
) -> Result<(P, CounterTicket), ServerError> {
    let payload: P = check(signer, env, kind, frame_group, now_ms)?;
    let ticket = guard.reserve(signer.key, payload.counter())?;
    Ok((payload, ticket))
}

/// Cluster mode's [`admit`]: the same checks in the same order, the counter last,
/// accepted in the cluster's `directory` too
/// ([`ReplayGuard::reserve_in_cluster`]; a flag never waits long for it).
pub async fn admit_in_cluster<P: Counted + DeserializeOwned>(
    guard: &ReplayGuard,
    directory: &Directory,
    signer: &Signer<'_>,
    env: &SignedEnvelope,
    kind: Kind,
    frame_group: Option<&GroupId>,
    now_ms: u64,
) -> Result<(P, CounterTicket), ServerError> {
    let payload: P = check(signer, env, kind, frame_group, now_ms)?;
    let ticket = guard
        .reserve_in_cluster(directory, signer.key, payload.counter(), kind == Kind::Flag)
        .await?;
    Ok((payload, ticket))
}

/// Every check but the counter's, in PROTOCOL.md's order; the payload.
fn check<P: Counted + DeserializeOwned>(
    signer: &Signer<'_>,
    env: &SignedEnvelope,
    kind: Kind,
    frame_group: Option<&GroupId>,
    now_ms: u64,
) -> Result<P, ServerError> {
    env.expect_kind(kind)?;
    if &env.key != signer.key {
        return Err(ServerError::WrongKey);
    }
    env.verify_with(signer.verifying)?;
    let payload: P = env.payload_as()?;
    if let (Some(frame), Some(signed)) = (frame_group, payload.group()) {
        if frame != signed {
            return Err(ServerError::WrongGroup {
                signed: signed.clone(),
                frame: frame.clone(),
            });
        }
    }
    check_fresh(payload.ts(), now_ms)?;
    Ok(payload)
}

/// Refuses a signed time further than the allowed skew from `now_ms`.
pub fn check_fresh(ts: u64, now_ms: u64) -> Result<(), ServerError> {
    let skew_ms = ts.abs_diff(now_ms);
    if skew_ms > MAX_CLOCK_SKEW_MS {
        return Err(ServerError::Stale {
            skew_ms,
            limit_ms: MAX_CLOCK_SKEW_MS,
        });
    }
    Ok(())
}
