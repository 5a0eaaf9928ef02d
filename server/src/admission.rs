//! Admission of signed commands: the checks every signed envelope passes before its
//! command runs, in the order PROTOCOL.md gives, so the first failure is the error
//! the client sees.
//!
//! Owns the per-key replay counters in memory ([`ReplayGuard`]). The durable copy is
//! written by whoever commits the command (`Store::raise_counter` before the commit
//! that acknowledges it), so a counter never becomes durable without its command.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::limits::MAX_CLOCK_SKEW_MS;
use peerhub_protocol::payload::Counted;
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use serde::de::DeserializeOwned;

use crate::error::ServerError;
use crate::store::{Store, StoreError};

/// The highest counter accepted per key, loaded from the store on first use.
#[derive(Debug)]
pub struct ReplayGuard {
    store: Store,
    // Locked only for a map lookup and update; never held across an await.
    last: Mutex<HashMap<PublicKey, u64>>,
}

impl ReplayGuard {
    /// A guard backed by `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            last: Mutex::new(HashMap::new()),
        }
    }

    fn with_map<T>(&self, f: impl FnOnce(&mut HashMap<PublicKey, u64>) -> T) -> T {
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    /// The last counter accepted from `key`.
    pub fn last(&self, key: &PublicKey) -> Result<u64, StoreError> {
        if let Some(last) = self.with_map(|m| m.get(key).copied()) {
            return Ok(last);
        }
        let stored = self.store.counter(key)?;
        Ok(self.with_map(|m| *m.entry(*key).or_insert(stored)))
    }

    /// Accepts `counter` for `key` if it is greater than every counter accepted
    /// before, and remembers it. Atomic across connections of the same key.
    pub fn reserve(&self, key: &PublicKey, counter: u64) -> Result<(), ServerError> {
        let stored = self.last(key)?;
        self.with_map(|m| {
            let last = m.entry(*key).or_insert(stored);
            if counter > *last {
                *last = counter;
                Ok(())
            } else {
                Err(ServerError::Replay {
                    counter,
                    last: *last,
                })
            }
        })
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
/// frames) and returns its payload. The counter is reserved last, so a command that
/// fails any earlier check spends no counter.
pub fn admit<P: Counted + DeserializeOwned>(
    guard: &ReplayGuard,
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
    guard.reserve(signer.key, payload.counter())?;
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
