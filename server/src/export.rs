//! Everything the hub holds about one key, as one JSON document: the export a
//! person asks for under their data rights ("give me my data").
//!
//! [`export_key`] reads a [`Store`] and writes nothing. It holds the person's own
//! data and nothing about anyone else beyond what that person already saw: the
//! facilitators and supervisors who acted on their account are named by key (the
//! person worked with them), but another participant never appears — not their
//! key, their display name, their words, nor that they asked for help for the
//! person.
//!
//! # Shape (`format: "peerhub-export/1"`)
//!
//! Keys are base64url (as on the wire), times are ms since the Unix epoch, and
//! signed envelopes are exactly as stored (`kind`, `key`, `payload`, `sig`), so the
//! person can check every signature that is theirs with any Ed25519 library over
//! `peerhub/1/<kind>\n<payload>`. Every field below is always present (`null` or
//! `[]` when there is nothing), except inside `escalations.about_you`, whose
//! entries are the protocol's escalation view and, as on the wire, leave out
//! optional fields that are empty (`handler`, `outcome`, a step's `actor` ...).
//! Lists are in the order stated; the order of keys in an object carries no
//! meaning. A key the hub has never seen gets the same document with empty lists,
//! no roles and counter 0.
//!
//! ```json
//! {
//!   "format": "peerhub-export/1",
//!   "key": "<the key exported>",
//!   "exported_ms": 1714000000000,
//!   "account": {
//!     "roles": ["facilitator"],
//!     "first_granted_ms": 1713000000000,
//!     "counter": 42,
//!     "push_subscriptions": [{"endpoint": "https://push.example/...", "created_ms": 1713000000000}]
//!   },
//!   "memberships": [{
//!     "group": "circle",
//!     "title": "Tuesday circle",
//!     "display_names": ["River"],
//!     "first_joined_ms": 1713000000000,
//!     "status": {
//!       "removed": null,
//!       "muted_until_ms": null,
//!       "away": false,
//!       "admitted_session": 3,
//!       "declined_session": null,
//!       "agreed_version": 1
//!     },
//!     "join": {"kind": "join", "key": "...", "payload": "{...}", "sig": "..."},
//!     "agreement": null
//!   }],
//!   "messages": [{
//!     "group": "circle",
//!     "channel": "main",
//!     "with": null,
//!     "seq": 7,
//!     "ts": 1713000000000,
//!     "kind": "post",
//!     "envelope": {"kind": "post", "key": "...", "payload": "{...}", "sig": "..."},
//!     "redacted": {"by": "<facilitator>", "reason": "names someone", "control_seq": 9}
//!   }],
//!   "records": [{
//!     "id": 12,
//!     "group": "circle",
//!     "entries": [{"author": "<facilitator>", "envelope": {"kind": "record", ...}}]
//!   }],
//!   "escalations": {
//!     "about_you": [{"reference": "q3J…", "group": "circle", "about": "<the key>", "severity": "urgent",
//!                    "status": "resolved", "level": 1, "created_ms": 1713000000000,
//!                    "flags": [], "context": [], "steps": [{"ts": 1713000000000, "step": "raised"}],
//!                    "outcome": "talked, safe"}],
//!     "raised_by_you": [{"reference": "q3J…", "group": "circle", "status": "resolved", "about_you": true,
//!                        "flags": [{"step": "merged", "ts": 1713000000100, "envelope": {...}}]}]
//!   },
//!   "audit": [{"seq": 5, "ts": 1713000000000, "action": "control.redact", "group": "circle",
//!              "as_actor": false, "as_subject": true}]
//! }
//! ```
//!
//! - `account` — from the key's account record: the roles it holds, the groups
//!   it facilitates (`facilitates`, absent when none), when its first role was
//!   granted (`null`: never), the last replay counter accepted
//!   from it (0: none), and the Web Push subscriptions held for its browsers (staff
//!   only): each push service URL and when it was stored.
//! - `memberships` — by group id, every group the key has joined: the group's title
//!   (`null` if the group record is gone), the display names the hub holds (it keeps
//!   only the latest join's name, so this is one name), when it first joined, its
//!   standing as stored (`removed` is `{"session", "reason"}` or `null`), its latest
//!   signed `join` and its signed acceptance of the agreement, if any. After an
//!   erasure ([`crate::erase`]) the name reads `(erased)` and `join` is `null`.
//! - `messages` — every logged event the key signed, by group id, then channel
//!   (`main`, `staff`, then `pair` channels), then seq: posts, private check-in
//!   messages, reports it made (these sit in the `staff` channel), controls it used
//!   as a facilitator. `with` is the other key of a `pair` channel when the key is
//!   one of its two (the facilitator or member it talked to), else `null`. A
//!   redacted message keeps its envelope (the person's own words) with the
//!   redaction as members see it. Agreements and joins are not logged events: they
//!   are under `memberships`. Stepping out is stored only as `status.away`.
//! - `records` — co-produced records about the key, oldest first, each entry with
//!   its author's key (a facilitator, or the person).
//! - `escalations.about_you` — escalations about the key exactly as the person can
//!   list them over the protocol ([`subject_view`]): not while telling them is
//!   withheld for imminent risk and still open; without the group's messages
//!   (`context: []`), without anyone else's flags, and with the `raised`/`merged`
//!   steps of others stripped of who and how, and every step by someone else
//!   without its signed command (it names the escalation's id; a `note` keeps its
//!   `text`). In place of the id, the person's own `reference` (as the protocol
//!   gives it). Severity, status, routing, the supervisors' steps and the outcome
//!   stay.
//! - `escalations.raised_by_you` — every escalation holding a flag the key
//!   signed (found through the escalation index): the key's reference, group, status, whether it is about the key, and the key's own
//!   flags in full (with the `raised`/`merged` step's time). Not others' flags, the
//!   context, or the outcome of an escalation about someone else.
//! - `audit` — in chain order, every audit entry whose subject is the key or whose
//!   first envelope it signed (`as_subject`, `as_actor`): seq, time, action and
//!   group only, never the entry's envelopes (they can be someone else's signed
//!   words). Entries about the key from an escalation withheld from it, as above,
//!   are left out like the escalation.
//!
//! # Left out on purpose
//!
//! Other people's messages (also in pair channels and escalation context), other
//! members' names, keys and standing, who flagged the person and in what words,
//! hub notes in the staff channel (risk-phrase nudges and the like: facilitator
//! working notes the protocol never shows the person), records the key wrote as a
//! facilitator about someone else (their subject's data), invites, and the
//! group's settings beyond its title.
//!
//! # Cost
//!
//! One pass over the events, members, escalations and the audit chain: an
//! operator's occasional tool, not a request path. Logs carry counts only.

use peerhub_protocol::escalation::{EscalationStatus, EscalationView};
use peerhub_protocol::frame::{Channel, Redaction, Role};
use peerhub_protocol::{GroupId, Kind, PublicKey, SignedEnvelope};
use serde::Serialize;

use crate::store::records::Removal;
use crate::store::{Store, StoreError};

/// The `format` of the document [`export_key`] builds.
pub const FORMAT: &str = "peerhub-export/1";

/// Everything held about `key` (see the module docs for the shape and what is left
/// out), as of server time `now_ms`. A key the hub has never seen gets an
/// empty-but-valid document. Reads only.
pub fn export_key(
    store: &Store,
    key: &PublicKey,
    now_ms: u64,
) -> Result<serde_json::Value, StoreError> {
    export_key_with(store, key, now_ms, None)
}

/// Cluster mode (docs/CLUSTER.md §8, "Export"): brings this node's copy of every
/// group it knows up to the group's log (under each group's lock; a copy behind
/// a trimmed log is rebuilt from its snapshot), so the memberships and messages
/// are the cluster's and not what this node last saw; returns the key's replay
/// counter as the directory holds it (counters are not mirrored to nodes).
/// Afterwards this node holds a copy of every group. Blocking callers run it on
/// a blocking thread.
pub async fn bring_up_to_the_cluster(
    store: &Store,
    directory: &crate::cluster::directory::Directory,
    key: &PublicKey,
) -> Result<u64, crate::cluster::ClusterError> {
    if let Some(logs) = directory.group_logs() {
        for group in store.groups()? {
            let lock = logs.group_lock(group.id.as_str());
            let _held = lock.lock().await;
            crate::cluster::replica::catch_up(store, logs, &group.id).await?;
        }
    }
    directory.counter(key).await
}

/// [`export_key`], with the key's replay counter given (cluster mode: the
/// directory's, see [`bring_up_to_the_cluster`]) instead of read from `store`.
pub fn export_key_with(
    store: &Store,
    key: &PublicKey,
    now_ms: u64,
    counter: Option<u64>,
) -> Result<serde_json::Value, StoreError> {
    let mut export = build(store, key, now_ms)?;
    if let Some(counter) = counter {
        export.account.counter = counter;
    }
    tracing::info!(
        memberships = export.memberships.len(),
        messages = export.messages.len(),
        records = export.records.len(),
        escalations_about = export.escalations.about_you.len(),
        escalations_raised = export.escalations.raised_by_you.len(),
        audit = export.audit.len(),
        "data export built"
    );
    serde_json::to_value(&export).map_err(|e| StoreError::Corrupt {
        tree: "export",
        reason: e.to_string(),
    })
}

pub use crate::escalation::subject_view;

#[derive(Debug, Serialize)]
struct Export {
    format: &'static str,
    key: PublicKey,
    exported_ms: u64,
    account: Account,
    memberships: Vec<Membership>,
    messages: Vec<Message>,
    records: Vec<Record>,
    escalations: Escalations,
    audit: Vec<AuditLine>,
}

#[derive(Debug, Serialize)]
struct Account {
    roles: Vec<Role>,
    /// The groups the key facilitates (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    facilitates: Vec<peerhub_protocol::GroupId>,
    first_granted_ms: Option<u64>,
    counter: u64,
    push_subscriptions: Vec<PushSubscription>,
}

#[derive(Debug, Serialize)]
struct PushSubscription {
    endpoint: String,
    created_ms: u64,
}

#[derive(Debug, Serialize)]
struct Membership {
    group: GroupId,
    title: Option<String>,
    display_names: Vec<String>,
    first_joined_ms: u64,
    status: MemberStatus,
    join: Option<SignedEnvelope>,
    agreement: Option<SignedEnvelope>,
}

#[derive(Debug, Serialize)]
struct MemberStatus {
    removed: Option<Removal>,
    muted_until_ms: Option<u64>,
    away: bool,
    admitted_session: Option<u64>,
    declined_session: Option<u64>,
    agreed_version: u32,
}

#[derive(Debug, Serialize)]
struct Message {
    group: GroupId,
    channel: &'static str,
    with: Option<PublicKey>,
    seq: u64,
    ts: u64,
    kind: Kind,
    envelope: SignedEnvelope,
    redacted: Option<Redaction>,
}

#[derive(Debug, Serialize)]
struct Record {
    id: u64,
    group: GroupId,
    entries: Vec<RecordEntry>,
}

#[derive(Debug, Serialize)]
struct RecordEntry {
    author: PublicKey,
    envelope: SignedEnvelope,
}

#[derive(Debug, Serialize)]
struct Escalations {
    /// Each as [`subject_view`] shows it, its `id` replaced by the person's
    /// `reference` (as in the protocol: a person never learns escalation ids).
    about_you: Vec<serde_json::Value>,
    raised_by_you: Vec<Raised>,
}

/// An escalation's view for its subject, with their reference instead of the id.
fn with_reference(view: &EscalationView, reference: String) -> serde_json::Value {
    let mut value = serde_json::to_value(view).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("id");
        object.insert("reference".into(), serde_json::Value::String(reference));
    }
    value
}

#[derive(Debug, Serialize)]
struct Raised {
    reference: String,
    group: GroupId,
    status: EscalationStatus,
    about_you: bool,
    flags: Vec<OwnFlag>,
}

#[derive(Debug, Serialize)]
struct OwnFlag {
    step: Option<String>,
    ts: Option<u64>,
    envelope: SignedEnvelope,
}

#[derive(Debug, Serialize)]
struct AuditLine {
    seq: u64,
    ts: u64,
    action: String,
    group: Option<GroupId>,
    as_actor: bool,
    as_subject: bool,
}

fn build(store: &Store, key: &PublicKey, now_ms: u64) -> Result<Export, StoreError> {
    let account = store.account(key)?;
    let account = Account {
        roles: account
            .as_ref()
            .map(|a| a.roles.clone())
            .unwrap_or_default(),
        facilitates: account
            .as_ref()
            .map(|a| a.facilitates.clone())
            .unwrap_or_default(),
        first_granted_ms: account.map(|a| a.created_ms),
        counter: store.counter(key)?,
        push_subscriptions: store
            .push_subscriptions(key)?
            .into_iter()
            .map(|s| PushSubscription {
                endpoint: s.endpoint,
                created_ms: s.created_ms,
            })
            .collect(),
    };

    let mut memberships = Vec::new();
    for (group, member) in store.memberships_of(key)? {
        let title = store.group(&group)?.map(|g| g.title);
        memberships.push(Membership {
            group,
            title,
            display_names: vec![member.name],
            first_joined_ms: member.first_joined_ms,
            status: MemberStatus {
                removed: member.removed,
                muted_until_ms: member.muted_until_ms,
                away: member.away,
                admitted_session: member.admitted_session,
                declined_session: member.declined_session,
                agreed_version: member.agreed_version,
            },
            join: member.join,
            agreement: member.agreement_env.map(|env| *env),
        });
    }

    let messages = store
        .events_signed_by(key)?
        .into_iter()
        .filter_map(|located| {
            let envelope = located.event.env?;
            let (channel, with) = match located.channel {
                Channel::Main => ("main", None),
                Channel::Staff => ("staff", None),
                Channel::Pair([a, b]) if a == *key => ("pair", Some(b)),
                Channel::Pair([a, b]) if b == *key => ("pair", Some(a)),
                Channel::Pair(_) => ("pair", None),
            };
            Some(Message {
                group: located.group,
                channel,
                with,
                seq: located.event.seq,
                ts: located.event.ts,
                kind: envelope.kind,
                envelope,
                redacted: located.event.redacted,
            })
        })
        .collect();

    let records = store
        .records_about(key)?
        .into_iter()
        .map(|record| Record {
            id: record.id,
            group: record.group,
            entries: record
                .entries
                .into_iter()
                .map(|envelope| RecordEntry {
                    author: envelope.key,
                    envelope,
                })
                .collect(),
        })
        .collect();

    let mut escalations = Escalations {
        about_you: Vec::new(),
        raised_by_you: Vec::new(),
    };
    // Flags of escalations about the key that it may not read yet: audit entries
    // resting on them are left out too.
    let mut withheld: Vec<SignedEnvelope> = Vec::new();
    // Through the escalation index: those about the key and those it flagged.
    let secret = store.escalation_reference_secret()?;
    let mut ids = store.escalation_ids_about(key)?;
    ids.extend(store.escalation_ids_flagged_by(key)?);
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let Some(record) = store.escalation(id)? else {
            continue;
        };
        let reference = crate::escalation::reference(&secret, id, key);
        if record.view.about == *key {
            match subject_view(&record, key) {
                Some(view) => escalations
                    .about_you
                    .push(with_reference(&view, reference.clone())),
                None => withheld.extend(record.view.flags.iter().cloned()),
            }
        }
        let flags: Vec<OwnFlag> = record
            .view
            .flags
            .iter()
            .filter(|flag| flag.key == *key)
            .map(|flag| {
                let step = record
                    .view
                    .steps
                    .iter()
                    .find(|s| s.env.as_ref() == Some(flag));
                OwnFlag {
                    step: step.map(|s| s.step.clone()),
                    ts: step.map(|s| s.ts),
                    envelope: flag.clone(),
                }
            })
            .collect();
        if !flags.is_empty() {
            escalations.raised_by_you.push(Raised {
                reference,
                group: record.view.group.clone(),
                status: record.view.status,
                about_you: record.view.about == *key,
                flags,
            });
        }
    }

    let mut audit = Vec::new();
    for entry in crate::audit::entries(store) {
        let entry = entry.map_err(|broken| StoreError::Corrupt {
            tree: "seq_audit",
            reason: broken.to_string(),
        })?;
        let as_actor = entry.actor() == Some(*key);
        let as_subject = entry.subject == Some(*key);
        if !as_actor && !as_subject {
            continue;
        }
        if !as_actor && entry.envelopes.iter().any(|env| withheld.contains(env)) {
            continue;
        }
        audit.push(AuditLine {
            seq: entry.seq,
            ts: entry.ts,
            action: entry.action,
            group: entry.group,
            as_actor,
            as_subject,
        });
    }

    Ok(Export {
        format: FORMAT,
        key: *key,
        exported_ms: now_ms,
        account,
        memberships,
        messages,
        records,
        escalations,
        audit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, NewEntry};
    use crate::store::records::{EscalationRecord, MemberRecord, RecordRecord, StoredEvent};
    use ed25519_dalek::SigningKey;
    use peerhub_protocol::escalation::{EscalationStep, Severity};

    fn signer(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn key_of(signer: &SigningKey) -> PublicKey {
        PublicKey(signer.verifying_key().to_bytes())
    }

    fn sign(signer: &SigningKey, kind: Kind, text: &str) -> SignedEnvelope {
        SignedEnvelope::sign(signer, kind, format!("{{\"text\":\"{text}\"}}"))
    }

    fn escalation(
        id: u64,
        about: PublicKey,
        flag: &SignedEnvelope,
        tell_subject: bool,
        status: EscalationStatus,
    ) -> EscalationRecord {
        EscalationRecord {
            view: EscalationView {
                id,
                group: GroupId::parse("g").unwrap(),
                about,
                severity: Severity::Urgent,
                status,
                level: 1,
                waiting_for: Vec::new(),
                deadline_ms: None,
                created_ms: 10,
                handler: None,
                flags: vec![flag.clone()],
                context: Vec::new(),
                steps: vec![EscalationStep {
                    ts: 10,
                    step: "raised".into(),
                    actor: Some(flag.key),
                    env: Some(flag.clone()),
                    level: None,
                    to: Vec::new(),
                    text: None,
                }],
                outcome: None,
            },
            tell_subject,
            flaggers: vec![flag.key],
            merged: 0,
            counted: 0,
            consent: None,
            name: None,
        }
    }

    #[test]
    fn a_key_never_seen_gets_an_empty_but_valid_document() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = PublicKey([5; 32]);
        let doc = export_key(&store, &key, 1234).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "format": "peerhub-export/1",
                "key": key.to_b64(),
                "exported_ms": 1234,
                "account": {"roles": [], "first_granted_ms": null, "counter": 0, "push_subscriptions": []},
                "memberships": [],
                "messages": [],
                "records": [],
                "escalations": {"about_you": [], "raised_by_you": []},
                "audit": [],
            })
        );
    }

    #[test]
    fn the_shape_holds_ones_own_data_and_nobody_elses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (me, other, fac) = (signer(1), signer(2), signer(3));
        let (my_key, other_key, fac_key) = (key_of(&me), key_of(&other), key_of(&fac));
        let g = GroupId::parse("g").unwrap();
        store.grant_role(&my_key, Role::Supervisor, 7).unwrap();
        store.raise_counter(&my_key, 41).unwrap();
        store
            .put_push_subscription(
                &my_key,
                &crate::store::records::PushSubscriptionRecord {
                    endpoint: "https://push.example/mine".into(),
                    p256dh: "p".into(),
                    auth: "a".into(),
                    created_ms: 8,
                },
            )
            .unwrap();
        for (s, name) in [(&me, "Wren"), (&other, "Otherperson")] {
            let member = MemberRecord {
                key: key_of(s),
                name: name.into(),
                join: Some(sign(s, Kind::Join, name)),
                first_joined_ms: 5,
                agreed_version: 0,
                agreement_env: None,
                admitted_session: Some(1),
                declined_session: None,
                removed: None,
                muted_until_ms: Some(99),
                away: false,
            };
            store.put_member(&g, &member).unwrap();
        }
        let event = |seq, env: SignedEnvelope| StoredEvent {
            seq,
            ts: seq,
            env: Some(env),
            note: None,
            redacted: None,
        };
        let mine = sign(&me, Kind::Post, "my words");
        store
            .put_event(&g, &Channel::Main, &event(1, mine.clone()))
            .unwrap();
        store
            .put_event(
                &g,
                &Channel::Main,
                &event(2, sign(&other, Kind::Post, "their words")),
            )
            .unwrap();
        let pair = Channel::pair(my_key, fac_key);
        store
            .put_event(&g, &pair, &event(1, sign(&me, Kind::Post, "to fac")))
            .unwrap();
        store
            .put_event(&g, &pair, &event(2, sign(&fac, Kind::Post, "from fac")))
            .unwrap();
        let record = RecordRecord {
            id: store.next_record_id().unwrap(),
            group: g.clone(),
            about: Some(my_key),
            entries: vec![sign(&fac, Kind::Record, "a note")],
        };
        store.put_record(&record).unwrap();
        // Told (1), withheld and open (2), withheld but resolved (3), about someone
        // else but raised by me (4).
        let told = sign(&other, Kind::Flag, "told flag");
        let hidden = sign(&other, Kind::Flag, "hidden flag");
        let done = sign(&other, Kind::Flag, "done flag");
        let mine_about_other = sign(&me, Kind::Flag, "my flag about them");
        store
            .put_escalation(&escalation(1, my_key, &told, true, EscalationStatus::Open))
            .unwrap();
        store
            .put_escalation(&escalation(
                2,
                my_key,
                &hidden,
                false,
                EscalationStatus::Open,
            ))
            .unwrap();
        store
            .put_escalation(&escalation(
                3,
                my_key,
                &done,
                false,
                EscalationStatus::Resolved,
            ))
            .unwrap();
        store
            .put_escalation(&escalation(
                4,
                other_key,
                &mine_about_other,
                true,
                EscalationStatus::Acknowledged,
            ))
            .unwrap();
        let audit = AuditLog::open(store.clone()).unwrap();
        let entry = |action: &str, env: &SignedEnvelope, subject| {
            NewEntry::new(20, action, env.clone())
                .group(g.clone())
                .subject(subject)
        };
        audit
            .append(entry("escalation.raise", &told, my_key))
            .unwrap();
        audit
            .append(entry("escalation.raise", &hidden, my_key))
            .unwrap();
        audit
            .append(entry("escalation.raise", &mine_about_other, other_key))
            .unwrap();
        audit
            .append(entry(
                "control.mute",
                &sign(&fac, Kind::Control, "m"),
                other_key,
            ))
            .unwrap();

        let doc = export_key(&store, &my_key, 100).unwrap();
        let text = doc.to_string();
        for absent in [
            "their words",
            "Otherperson",
            "told flag",
            "hidden flag",
            "done flag",
        ] {
            assert!(!text.contains(absent), "{absent} leaked");
        }
        assert!(!text.contains(&other_key.to_b64()), "the other key leaked");

        assert_eq!(doc["account"]["roles"], serde_json::json!(["supervisor"]));
        assert_eq!(doc["account"]["first_granted_ms"], 7);
        assert_eq!(doc["account"]["counter"], 41);
        assert_eq!(
            doc["account"]["push_subscriptions"],
            serde_json::json!([{"endpoint": "https://push.example/mine", "created_ms": 8}])
        );
        let membership = &doc["memberships"][0];
        assert_eq!(membership["display_names"], serde_json::json!(["Wren"]));
        assert_eq!(membership["status"]["muted_until_ms"], 99);
        assert_eq!(doc["memberships"].as_array().unwrap().len(), 1);

        let messages = doc["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0]["channel"], "main");
        assert_eq!(messages[0]["with"], serde_json::Value::Null);
        assert_eq!(messages[1]["channel"], "pair");
        assert_eq!(messages[1]["with"], fac_key.to_b64());
        let back: SignedEnvelope = serde_json::from_value(messages[0]["envelope"].clone()).unwrap();
        assert_eq!(back, mine);
        back.verify().unwrap();

        assert_eq!(doc["records"][0]["entries"][0]["author"], fac_key.to_b64());

        let secret = store.escalation_reference_secret().unwrap();
        let reference = |id| crate::escalation::reference(&secret, id, &my_key);
        let about: Vec<String> = doc["escalations"]["about_you"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert!(e.get("id").is_none(), "no escalation id for the person");
                e["reference"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            about,
            vec![reference(1), reference(3)],
            "withheld-and-open stays hidden"
        );
        let raised = &doc["escalations"]["raised_by_you"];
        assert_eq!(raised.as_array().unwrap().len(), 1);
        assert_eq!(raised[0]["reference"], reference(4));
        assert_eq!(raised[0]["about_you"], false);
        assert_eq!(raised[0]["flags"][0]["step"], "raised");
        assert!(text.contains("my flag about them"), "own flag in full");

        let audit: Vec<(u64, bool, bool)> = doc["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["seq"].as_u64().unwrap(),
                    a["as_actor"].as_bool().unwrap(),
                    a["as_subject"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            audit,
            vec![(1, false, true), (3, true, false)],
            "the withheld escalation's entry and others' entries are left out"
        );
    }
}
