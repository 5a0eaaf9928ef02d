//! `peerhub rota set`'s rules, one implementation for a stopped hub's folder
//! ([`super::ops::Operator`]) and a running hub's router (which writes the
//! rota through its own commit, in cluster mode its fenced log).

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::RotaEntry;
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::RotaPayload;
use peerhub_protocol::{PublicKey, SignedEnvelope};

use super::AdminError;
use crate::audit::{AuditLog, NewEntry};
use crate::escalation::rota;
use crate::store::Store;

/// Refuses a rota that is not well formed or names a key without the
/// supervisor role.
pub fn check(store: &Store, entries: &[RotaEntry]) -> Result<(), AdminError> {
    check_form(entries)?;
    for entry in entries {
        if !store.roles(&entry.supervisor)?.contains(&Role::Supervisor) {
            return Err(not_a_supervisor(&entry.supervisor));
        }
    }
    Ok(())
}

/// Refuses a rota that is not well formed (its windows and levels).
pub fn check_form(entries: &[RotaEntry]) -> Result<(), AdminError> {
    rota::validate(entries).map_err(|why| AdminError::Invalid(why.into()))
}

/// The refusal of a rota naming `key`, who does not hold the supervisor role.
pub fn not_a_supervisor(key: &PublicKey) -> AdminError {
    AdminError::Invalid(format!("{key} does not hold the supervisor role"))
}

/// Writes the `rota.set` audit entry: the new rota as a `rota` request signed
/// with the hub's key (the operator acting through the hub). The entry comes
/// before the change, so a crash may lose the change, never keep it unrecorded.
pub fn audit_set(
    store: &Store,
    audit: &AuditLog,
    entries: &[RotaEntry],
    now_ms: u64,
) -> Result<(), AdminError> {
    let hub = SigningKey::from_bytes(&store.hub_signing_seed()?);
    let payload = RotaPayload {
        entries: entries.to_vec(),
        counter: now_ms,
        ts: now_ms,
    };
    let env = SignedEnvelope::sign_json(&hub, Kind::Rota, &payload);
    audit.append(NewEntry::new(now_ms, "rota.set", env))?;
    Ok(())
}
