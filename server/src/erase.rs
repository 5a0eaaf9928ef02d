//! Erasing one key's personal data at the person's request (people's data rights),
//! on a **stopped** server's data folder.
//!
//! [`erase_key`] takes a [`Store`] the caller opened. It must be the only user of
//! the folder: a running hub's group tasks hold members (names, signed joins) in
//! memory and would write them back, and sled's lock already refuses a second
//! open while a server runs ([`crate::store::StoreError::is_in_use`]).
//!
//! # What is erased
//!
//! - **Messages.** Every logged event the key signed, in every group and channel
//!   (main, staff — its reports —, private pairs), and every hub note about it
//!   (a risk-phrase nudge about its message, its mute ending), keeps its seq and
//!   time, so logs stay gap-free, but loses its envelope and note. It becomes a
//!   tombstone: no envelope and a [`Redaction`] by the hub's key with the reason
//!   [`TOMBSTONE_REASON`] and `control_seq` 0. Readers, facilitators too, see "a
//!   message was erased at the person's request" and never the text: there is no
//!   text left to show (history and resume already send an event without an
//!   envelope as it is).
//! - **Names.** In every group it joined, the member record keeps its standing
//!   (a removal stays in force) but its name becomes [`ERASED_NAME`] and its signed
//!   join and signed agreement are dropped. A member without a signed join is not
//!   listed to other members.
//! - **Account.** Its roles, its replay counter, its places on virtual groups'
//!   allow-lists and the invites it redeemed (spent tokens) are removed.
//! - **Its words in records.** In co-produced records about it, each entry it
//!   wrote becomes a tombstone entry signed by the hub (kind `admin`, action
//!   `erase`, detail [`TOMBSTONE_REASON`]).
//! - **The audit chain** is pseudonymised (see [`crate::audit`], "Erasure"): its
//!   key as a subject becomes a [`Pseudonym`], its signed envelopes (and the hub's
//!   naming it) become their SHA-256 digest, and the chain is re-linked so
//!   `audit verify` still passes and counts the erased envelopes.
//!
//! # What is kept, and why
//!
//! - **Safeguarding records, only as retention allows.** Escalations about the
//!   key or raised by it (their flags, context messages and outcome) are kept as
//!   they are: they record how a risk to someone was handled, and the group's
//!   retention deletes them in time. Facilitators' entries in records about the
//!   key are kept likewise: they are the facilitator's safeguarding notes.
//! - **Other people's signed words**, even where they name the key: a
//!   facilitator's control acting on it, another member's report or flag, the
//!   facilitator's side of a private conversation. Changing them would break
//!   their signatures, and in the audit chain they are what holds those people to
//!   account for what they did. For the same reason the pair channels keep their
//!   store keys (which hold both keys) and group state keeps its heads.
//! - **Audit entries**: every entry stays (seq, time, action, group), so actions on
//!   the person remain accountable under a pseudonym.
//!
//! The erasure itself is audited: one `admin.erase` entry signed by the hub's key,
//! whose payload never names the key, only its pseudonym and the chain's old and
//! new hash at the first rewritten entry.
//!
//! A crash part-way leaves some data erased and some not; run it again (it is
//! idempotent; it appends another `admin.erase` entry).
//!
//! # When the bytes leave the folder
//!
//! sled is log-structured: what this module removes or overwrites stays in the
//! database files until rewritten. `peerhub erase` ([`crate::admin::erase`])
//! therefore compacts the store ([`crate::store::compact`]) after the erasure is
//! flushed: when the command returns, no file in the data folder holds the erased
//! data. A crash during the compaction is finished at the next open, before the
//! store serves anything. Backups taken before, and filesystem snapshots, still
//! hold it.

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::frame::{Channel, Redaction};
use peerhub_protocol::payload::AdminPayload;
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use serde::Serialize;

use crate::audit::{action, AuditLog, ErasureRewrite, NewEntry, Pseudonym, RewriteError};
use crate::store::records::{MemberRecord, StoredEvent};
use crate::store::{Store, StoreError};

/// The reason a tombstone gives.
pub const TOMBSTONE_REASON: &str = "erased at the person's request";

/// The name an erased member keeps.
pub const ERASED_NAME: &str = "(erased)";

/// Why an erasure failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EraseError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit chain does not verify, so it is not rewritten (nothing was
    /// changed).
    #[error("{0}")]
    Audit(#[from] RewriteError),
    /// The key is the hub's own.
    #[error("refused: that is the hub's own key")]
    HubKey,
}

/// What [`erase_key`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The pseudonym that stands for the key in the audit chain.
    pub pseudonym: Pseudonym,
    /// Logged events turned into tombstones (its own and hub notes about it).
    pub events: usize,
    /// Member records whose name and signed join were removed.
    pub memberships: usize,
    /// Record entries it wrote, turned into tombstones.
    pub record_entries: usize,
    /// Virtual-group allow-list entries removed.
    pub allowed: usize,
    /// Redeemed invites removed.
    pub invites: usize,
    /// Whether it had an account (roles).
    pub account: bool,
    /// Whether it had a replay counter.
    pub counter: bool,
    /// What the audit rewrite changed.
    pub audit: ErasureRewrite,
    /// The seq of the `admin.erase` entry.
    pub audit_seq: u64,
    /// The compaction that then removed the erased bytes from the data folder
    /// (`peerhub erase` does it; [`erase_key`] alone leaves it to the caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compacted: Option<crate::store::compact::CompactReport>,
}

/// The hub's key for `seed`, refused when it is `key` itself (the hub's own key
/// is never erased).
pub fn hub_key_other_than(seed: &[u8; 32], key: &PublicKey) -> Result<PublicKey, EraseError> {
    let hub_key = PublicKey(SigningKey::from_bytes(seed).verifying_key().to_bytes());
    if *key == hub_key {
        return Err(EraseError::HubKey);
    }
    Ok(hub_key)
}

/// The redaction an erased event carries: by the hub's key, with
/// [`TOMBSTONE_REASON`] and `control_seq` 0.
pub fn tombstone(hub_key: PublicKey) -> Redaction {
    Redaction {
        by: hub_key,
        reason: TOMBSTONE_REASON.into(),
        control_seq: 0,
    }
}

/// `event` as a tombstone: its seq and time, no envelope, no note.
pub fn tombstoned(event: &StoredEvent, tombstone: &Redaction) -> StoredEvent {
    StoredEvent {
        seq: event.seq,
        ts: event.ts,
        env: None,
        note: None,
        redacted: Some(tombstone.clone()),
    }
}

/// `member` erased: its standing kept, its name [`ERASED_NAME`], its signed join
/// and signed agreement dropped.
pub fn erased_member(mut member: MemberRecord) -> MemberRecord {
    member.name = ERASED_NAME.into();
    member.join = None;
    member.agreement_env = None;
    member
}

/// One group's part of an erasure, computed and not yet written: what a group's
/// owner writes as one write set in cluster mode (`crate::cluster::erasure`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupErasure {
    /// The key's events and hub notes about it in the group, as tombstones.
    pub events: Vec<(Channel, StoredEvent)>,
    /// Its member record, erased, if it has one in the group.
    pub member: Option<MemberRecord>,
}

impl GroupErasure {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.member.is_none()
    }
}

/// The group part of erasing `key` in `group` as `store` holds it (the same
/// rewrites [`erase_key`] writes everywhere): its events as tombstones by
/// `hub_key`, its member record erased. Nothing is written.
pub fn group_erasure(
    store: &Store,
    group: &GroupId,
    key: &PublicKey,
    hub_key: PublicKey,
) -> Result<GroupErasure, StoreError> {
    let tombstone = tombstone(hub_key);
    let events = store
        .events_of_key(key)?
        .into_iter()
        .filter(|located| located.group == *group)
        .map(|located| (located.channel, tombstoned(&located.event, &tombstone)))
        .collect();
    let member = store.member(group, key)?.map(erased_member);
    Ok(GroupErasure { events, member })
}

/// What an erasure of one store reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything the module docs list: one node's folder.
    Everything,
    /// All but the groups' events and member records: a cluster node, whose
    /// copies of the groups follow the group logs, where each group's owner
    /// erased them (`crate::cluster::node_erasure`). Writing them here would
    /// make this copy differ from the log (and, for a node applying the
    /// erasure late, erase what the person wrote after it).
    OutsideGroupLogs,
}

/// Erases `key`'s personal data from `store` (see the module docs), at server time
/// `now_ms`, and records it in `audit` (a log opened on the same store). The
/// caller flushes afterwards. The store must not be in use by a running server.
pub fn erase_key(
    store: &Store,
    audit: &AuditLog,
    key: &PublicKey,
    now_ms: u64,
) -> Result<ErasureReport, EraseError> {
    erase_key_in(store, audit, key, now_ms, Scope::Everything)
}

/// [`erase_key`], reaching `scope`.
pub fn erase_key_in(
    store: &Store,
    audit: &AuditLog,
    key: &PublicKey,
    now_ms: u64,
    scope: Scope,
) -> Result<ErasureReport, EraseError> {
    let seed = store.hub_signing_seed()?;
    let hub = SigningKey::from_bytes(&seed);
    let hub_key = hub_key_other_than(&seed, key)?;
    let pseudonym = Pseudonym::of(&seed, key);

    // The chain first (it refuses a broken chain before anything changes), then
    // its entry, then the data: a crash then never leaves erased data unrecorded.
    let rewrite = audit.rewrite_for_erasure(key, &pseudonym, &hub_key)?;
    let detail = serde_json::json!({
        "pseudonym": pseudonym,
        "first_rewritten": rewrite.first_rewritten,
        "old_hash": rewrite.old_hash,
        "new_hash": rewrite.new_hash,
        "old_last_hash": rewrite.old_last_hash,
        "envelopes_erased": rewrite.envelopes_erased,
    });
    let payload = AdminPayload {
        action: "erase".into(),
        subject: None,
        group: None,
        detail: Some(detail.to_string()),
        counter: now_ms,
        ts: now_ms,
    };
    let env = SignedEnvelope::sign_json(&hub, Kind::Admin, &payload);
    let audit_seq = audit.append(NewEntry::new(now_ms, action::ADMIN_ERASE, env))?;

    let tombstone = tombstone(hub_key);
    let (mut events, mut memberships) = (0, 0);
    if scope == Scope::Everything {
        for mut located in store.events_of_key(key)? {
            located.event = tombstoned(&located.event, &tombstone);
            store.put_located_event(&located)?;
            events += 1;
        }
        for (group, member) in store.memberships_of(key)? {
            store.put_member(&group, &erased_member(member))?;
            memberships += 1;
        }
    }

    let mut record_entries = 0;
    for mut record in store.records_about(key)? {
        let mut changed = false;
        for entry in &mut record.entries {
            if entry.key == *key {
                let payload = AdminPayload {
                    action: "erase".into(),
                    subject: None,
                    group: Some(record.group.clone()),
                    detail: Some(TOMBSTONE_REASON.into()),
                    counter: now_ms,
                    ts: now_ms,
                };
                *entry = SignedEnvelope::sign_json(&hub, Kind::Admin, &payload);
                record_entries += 1;
                changed = true;
            }
        }
        if changed {
            store.put_record(&record)?;
        }
    }

    let allowed = store.remove_allowed_everywhere(key)?;
    let invites = store.remove_invites_redeemed_by(key)?;
    let (account, counter) = store.remove_account_and_counter(key)?;
    let report = ErasureReport {
        pseudonym,
        events,
        memberships,
        record_entries,
        allowed,
        invites,
        account,
        counter,
        audit: rewrite,
        audit_seq,
        compacted: None,
    };
    tracing::info!(
        events,
        memberships,
        record_entries,
        audit_envelopes = report.audit.envelopes_erased,
        "erased one key's data"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit;
    use peerhub_protocol::frame::Role;

    use crate::store::records::RecordRecord;

    fn signer(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn key(n: u8) -> PublicKey {
        PublicKey(signer(n).verifying_key().to_bytes())
    }

    fn post(n: u8, text: &str) -> SignedEnvelope {
        SignedEnvelope::sign(&signer(n), Kind::Post, format!(r#"{{"body":"{text}"}}"#))
    }

    fn member(n: u8, name: &str) -> MemberRecord {
        MemberRecord {
            key: key(n),
            name: name.into(),
            join: Some(SignedEnvelope::sign(
                &signer(n),
                Kind::Join,
                format!(r#"{{"name":"{name}"}}"#),
            )),
            first_joined_ms: 1,
            agreed_version: 0,
            agreement_env: None,
            admitted_session: None,
            declined_session: None,
            removed: None,
            muted_until_ms: None,
            away: false,
        }
    }

    /// A store with A (1) and B (2) posting in group g, A's name, a record about
    /// A with A's reply, A's account and a chain naming A and B.
    fn filled() -> (tempfile::TempDir, Store, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::open(store.clone()).unwrap();
        let g = GroupId::parse("g").unwrap();
        for (seq, (n, text)) in [(1, "a-secret-one"), (2, "b-words"), (1, "a-secret-two")]
            .into_iter()
            .enumerate()
        {
            let event = StoredEvent {
                seq: seq as u64 + 1,
                ts: 100 + seq as u64,
                env: Some(post(n, text)),
                note: None,
                redacted: None,
            };
            store.put_event(&g, &Channel::Main, &event).unwrap();
        }
        store.put_member(&g, &member(1, "Wrenname")).unwrap();
        store.put_member(&g, &member(2, "Bramname")).unwrap();
        store.grant_role(&key(1), Role::Facilitator, 1).unwrap();
        store.raise_counter(&key(1), 5).unwrap();
        let record = RecordRecord {
            id: 1,
            group: g.clone(),
            about: Some(key(1)),
            entries: vec![post(3, "fac-note"), post(1, "a-record-words")],
        };
        store.put_record(&record).unwrap();
        for (n, subject) in [(1, 1), (2, 2), (3, 1), (2, 1)] {
            let entry = NewEntry::new(10, action::CONTROL_MUTE, post(n, "audit"))
                .subject(key(subject))
                .group(g.clone());
            log.append(entry).unwrap();
        }
        (dir, store, log)
    }

    #[test]
    fn one_keys_data_goes_and_everyone_elses_stays() {
        let (_dir, store, log) = filled();
        let g = GroupId::parse("g").unwrap();
        let b_before = crate::export::export_key(&store, &key(2), 1).unwrap();
        let report = erase_key(&store, &log, &key(1), 1_000).unwrap();
        assert_eq!(report.events, 2);
        assert_eq!(report.memberships, 1);
        assert_eq!(report.record_entries, 1);
        assert!(report.account && report.counter);
        assert_eq!(report.audit.subjects_replaced, 3);
        assert_eq!(report.audit.envelopes_erased, 1);
        assert_eq!(report.audit.first_rewritten, Some(1));

        // Messages: tombstones at the same seqs; B's untouched.
        let events = store.events_between(&g, &Channel::Main, 0, 3, 10).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        for e in [&events[0], &events[2]] {
            assert_eq!((&e.env, &e.note), (&None, &None));
            assert_eq!(e.redacted.as_ref().unwrap().reason, TOMBSTONE_REASON);
        }
        assert_eq!(events[1].env, Some(post(2, "b-words")));

        // Name and join gone, standing kept; the record keeps the facilitator's note.
        let a = store.member(&g, &key(1)).unwrap().unwrap();
        assert_eq!((a.name.as_str(), &a.join), (ERASED_NAME, &None));
        assert_eq!(
            store.member(&g, &key(2)).unwrap(),
            Some(member(2, "Bramname"))
        );
        let record = store.record(1).unwrap().unwrap();
        assert_eq!(record.entries[0], post(3, "fac-note"));
        assert_eq!(record.entries[1].kind, Kind::Admin);
        record.entries[1].verify().unwrap();
        assert!(store.roles(&key(1)).unwrap().is_empty());

        for secret in ["a-secret-one", "a-secret-two", "a-record-words", "Wrenname"] {
            assert!(
                store
                    .trees_containing(secret.as_bytes())
                    .unwrap()
                    .is_empty(),
                "{secret} left"
            );
        }
        // The chain: still verifies, counts the erased envelope, names A nowhere.
        let verified = audit::verify(&store).unwrap();
        assert_eq!(verified.entries, 5);
        assert_eq!(verified.erased_envelopes, 1);
        assert_eq!(log.tail(), (5, verified.last_hash));
        let chain: Vec<_> = audit::entries(&store).map(Result::unwrap).collect();
        assert_eq!(chain[0].actor(), None, "A's own envelope is erased");
        assert_eq!(chain[0].subject_pseudonym.as_ref(), Some(&report.pseudonym));
        assert_eq!(chain[1].subject, Some(key(2)));
        assert_eq!(
            chain[2].actor(),
            Some(key(3)),
            "the facilitator stays accountable"
        );
        assert_eq!(chain[4].action, action::ADMIN_ERASE);
        assert_eq!(chain[4].subject, None);
        let a_b64 = key(1).to_b64();
        assert!(!store
            .trees_containing(a_b64.as_bytes())
            .unwrap()
            .contains(&"seq_audit"));

        // B's export is byte for byte what it was.
        let b_after = crate::export::export_key(&store, &key(2), 1).unwrap();
        assert_eq!(b_before.to_string(), b_after.to_string());

        // Again: nothing more to erase, the chain still verifies.
        let again = erase_key(&store, &log, &key(1), 2_000).unwrap();
        assert_eq!((again.events, again.audit.entries_changed), (0, 0));
        assert_eq!(audit::verify(&store).unwrap().entries, 6);
    }

    #[test]
    fn outside_the_group_logs_events_and_names_stay_for_the_logs_to_bring() {
        let (_dir, store, log) = filled();
        let g = GroupId::parse("g").unwrap();
        let events_before = store.events_between(&g, &Channel::Main, 0, 3, 10).unwrap();
        let report = erase_key_in(&store, &log, &key(1), 1_000, Scope::OutsideGroupLogs).unwrap();
        assert_eq!((report.events, report.memberships), (0, 0));
        assert_eq!(report.record_entries, 1);
        assert!(report.account && report.counter);
        assert_eq!(report.audit.subjects_replaced, 3);
        assert_eq!(
            store.events_between(&g, &Channel::Main, 0, 3, 10).unwrap(),
            events_before,
            "the events are the group log's to change"
        );
        assert_eq!(
            store.member(&g, &key(1)).unwrap(),
            Some(member(1, "Wrenname"))
        );
        assert!(store.roles(&key(1)).unwrap().is_empty());
        assert!(store
            .trees_containing(b"a-record-words")
            .unwrap()
            .is_empty());
        audit::verify(&store).unwrap();
    }

    #[test]
    fn a_groups_part_is_that_groups_only_and_writes_nothing() {
        let (_dir, store, _log) = filled();
        let (g, h) = (GroupId::parse("g").unwrap(), GroupId::parse("h").unwrap());
        let elsewhere = StoredEvent {
            seq: 1,
            ts: 100,
            env: Some(post(1, "a-in-h")),
            note: None,
            redacted: None,
        };
        store.put_event(&h, &Channel::Main, &elsewhere).unwrap();
        let seed = store.hub_signing_seed().unwrap();
        let hub_key = hub_key_other_than(&seed, &key(1)).unwrap();
        let before = store.digest().unwrap();

        let part = group_erasure(&store, &g, &key(1), hub_key).unwrap();
        assert_eq!(store.digest().unwrap(), before, "nothing written");
        let seqs: Vec<u64> = part.events.iter().map(|(_, e)| e.seq).collect();
        assert_eq!(seqs, [1, 3], "A's two posts in g, none in h");
        for (channel, event) in &part.events {
            assert_eq!(*channel, Channel::Main);
            assert_eq!((&event.env, &event.note), (&None, &None));
            assert_eq!(event.redacted, Some(tombstone(hub_key)));
        }
        let member = part.member.expect("A's record in g");
        assert_eq!((member.name.as_str(), &member.join), (ERASED_NAME, &None));
        assert_eq!(member.first_joined_ms, 1, "its standing is kept");

        // B's part in g: its one post; a stranger's: nothing.
        assert_eq!(
            group_erasure(&store, &g, &key(2), hub_key)
                .unwrap()
                .events
                .len(),
            1
        );
        assert!(group_erasure(&store, &g, &key(9), hub_key)
            .unwrap()
            .is_empty());
        assert!(matches!(
            hub_key_other_than(&seed, &hub_key),
            Err(EraseError::HubKey)
        ));
    }

    #[test]
    fn the_pseudonym_is_stable_per_hub_and_differs_between_hubs() {
        let a = Pseudonym::of(&[1; 32], &key(1));
        assert_eq!(a, Pseudonym::of(&[1; 32], &key(1)));
        assert_ne!(a, Pseudonym::of(&[2; 32], &key(1)));
        assert_ne!(a, Pseudonym::of(&[1; 32], &key(2)));
        assert!(a.as_str().starts_with("erased-") && a.as_str().len() == 23);
        assert_eq!(Pseudonym::parse(a.as_str()), Some(a));
        assert_eq!(Pseudonym::parse("erased-XYZ"), None);
    }

    #[test]
    fn a_broken_chain_is_not_rewritten_and_nothing_changes() {
        let (_dir, store, log) = filled();
        store.put_audit_raw_for_tests(2, b"not an entry").unwrap();
        store.hub_signing_seed().unwrap();
        let before = store.digest().unwrap();
        let refused = erase_key(&store, &log, &key(1), 1_000).unwrap_err();
        assert!(matches!(refused, EraseError::Audit(_)), "{refused}");
        assert_eq!(store.digest().unwrap(), before, "nothing changed");
    }

    #[test]
    fn the_hubs_own_key_is_refused() {
        let (_dir, store, log) = filled();
        let seed = store.hub_signing_seed().unwrap();
        let hub = PublicKey(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
        assert!(matches!(
            erase_key(&store, &log, &hub, 1),
            Err(EraseError::HubKey)
        ));
    }
}
