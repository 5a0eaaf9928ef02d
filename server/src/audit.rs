//! The tamper-evident audit chain: one linear, hash-linked log of every accountable
//! action (role grants, facilitator controls, escalation steps), each entry carrying
//! the signed commands that caused it.
//!
//! This module owns the entry layout, the hash rule, appending ([`AuditLog`]) and
//! checking ([`verify`], which `peerhub audit verify` runs). It never touches sled:
//! it hands whole entries, as bytes, to the store's `seq_audit` tree
//! ([`crate::store::audit`]). It never flushes either: see "Durability" below.
//!
//! # Why it can be trusted
//!
//! - **Signed by the actor.** Every entry carries at least one [`SignedEnvelope`],
//!   the actor's first: the exact signed command that caused the action (for a role
//!   grant, the grantee's signed `redeem`). The server cannot forge one, so it cannot
//!   invent an action and pin it on someone.
//! - **Linked by hash.** Every entry names the hash of the one before it, so
//!   changing, removing, inserting or reordering entries breaks the chain at that
//!   entry unless every later hash is rewritten too. Someone who can write the data
//!   folder *can* rewrite the tail of the chain (the hash is not keyed), and can
//!   drop trailing entries unseen: keep the last hash [`verify`] reports somewhere
//!   else (a ticket, an email to the supervisor) to anchor the chain up to there.
//!
//! # Stored layout
//!
//! Entry `seq` (from 1) is stored under its seq (see [`crate::store::audit`]) as
//!
//! ```text
//! hash (64 lowercase hex) ‖ "\n" ‖ body
//! body = {"seq":2,"ts":1714000000000,"prev":"<64 lowercase hex>","action":"role.grant",
//!         "group":null,"subject":"<base64url key>","envelopes":[{"kind":"redeem",...}]}
//! hash = SHA-256("peerhub-audit/1\n" ‖ prev as 32 raw bytes ‖ body)
//! ```
//!
//! `body` is compact JSON written once, at append; the hash covers those exact bytes
//! and [`verify`] hashes the bytes it reads back, never a re-serialisation, so there
//! is no canonical form to agree on (the same rule as for signed envelopes). Every
//! stored byte counts: the body is hashed, and the hash line must be exactly the
//! lowercase hex of the recomputed hash. `prev` is all zeros for entry 1. The body's
//! fields, in order: `seq`; `ts`, server time in ms since the Unix epoch; `prev`;
//! `action`; `group`, the group it happened in (`null` for hub-wide actions);
//! `subject`, the key it concerns (`null` if none); `envelopes`, the signed commands
//! that caused it, the actor's first, each exactly as received.
//!
//! # Actions
//!
//! `action` is a stable dotted `area.verb` string, chosen by the caller; constants for
//! the ones in use are in [`action`]. Known and planned:
//!
//! | action                | group | subject            | envelopes                       |
//! | --------------------- | ----- | ------------------ | ------------------------------- |
//! | `role.grant`          | none (the group, for a group-scoped role) | the grantee | the grantee's `redeem` |
//! | `invite.create`       | for a `member` invite | —   | the inviter's `invite`          |
//! | `role.grant_group` / `role.revoke_group` | the group | the facilitator | the admin's `grant` |
//! | `role.migrate_grants` | none  | —                  | the hub's own `admin` envelope: each facilitator key and the groups it was granted when roles became per group |
//! | `group.create`        | the group | —              | the admin's `create_group`      |
//! | `control.<name>`      | the group | the member acted on, if any | the facilitator's `control` (`<name>` is the control's wire name: `mute`, `remove`, `lock`, `redact`, ...) |
//! | `escalation.<step>`   | the group | the member concerned | the step's own signed command first (`ack`, `resolve`, ...), then the flag it concerns; a step the server takes on a deadline carries the flag alone |
//!
//! | `retention.run`       | none  | —                  | the hub's own `admin` envelope: counts deleted per kind, the cutoffs, and `audit_through_seq` |
//!
//! Only `role.grant` is written today (by [`crate::invites::redeem`]).
//!
//! # Erasure
//!
//! When a person's data is erased ([`crate::erase`]) their entries stay, but
//! pseudonymised by [`AuditLog::rewrite_for_erasure`]: a `subject` that was their
//! key becomes `"erased-<16 hex>"` (a [`Pseudonym`]), and each envelope they
//! signed, or the hub signed naming them, becomes `{"erased":"<64 hex>"}`, the
//! SHA-256 of that envelope's JSON (whoever kept the original can still show it
//! was this one). Envelopes other people signed are kept byte for byte, even when
//! they name the person: changing them would break their signatures, and they are
//! what holds those people to account. The chain is rewritten from the first
//! changed entry on (new `prev` and hashes); [`verify`] accepts an erased envelope
//! without a signature and counts it. An entry must still carry at least one
//! envelope, signed or erased. Keep the hashes the `admin.erase` entry reports
//! beside any anchor you kept of the old chain: the old anchor stops matching at
//! the first rewritten entry.
//!
//! # Retention: pruning the front
//!
//! The retention pass ([`crate::retention`]) removes entries older than the audit
//! retention from the *front* of the chain only, never from the middle or the end.
//! Before removing them it appends a `retention.run` entry (saying, among its
//! counts, the last seq it prunes) and stores an **anchor**: the seq and hash of the
//! last pruned entry ([`anchor`]). [`verify`] then starts from the anchor instead of
//! from zeros: the first stored entry after it must be entry `anchor.seq + 1` and
//! name the anchor's hash as `prev`, and everything after is checked as before, so
//! any change after the anchor is still reported at its entry. Stored entries at or
//! before the anchor (a prune cut short by a crash) are skipped; the next pass
//! removes them. Only entries that verify are ever pruned: a broken stretch stays
//! for [`verify`] to report. The anchor is no stronger than the chain (it is not
//! keyed): compare it with the `retention.run` entries, and keep the last hash
//! elsewhere as above.
//!
//! # Durability
//!
//! [`AuditLog::append`] writes the entry like any other store write: in memory until
//! a commit. The caller writes its action and its audit entry, then makes both
//! durable with its own [`Committer::commit`](crate::store::Committer::commit) before
//! acknowledging, so the group commit covers them together and the audit log adds
//! no flush of its own. Write the entry *before* the state change it records where
//! possible: sled persists writes in order, so a crash can then lose an action's
//! effect but never keep an effect without its entry.
//!
//! # Concurrency
//!
//! One [`AuditLog`] lives in the [`Hub`](crate::hub::Hub) and every task appends
//! through it, so the chain stays linear: a mutex covers "read the tail, write the
//! next entry". It is a `std` mutex and its guard ([`ChainLock`]) is not `Send`, so a
//! spawned task cannot hold it across an `.await`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use peerhub_protocol::envelope::from_json_object;
use peerhub_protocol::{GroupId, ProtocolError, PublicKey, SignedEnvelope};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::store::{Store, StoreError};

/// Actions in use, as written in entries. See the module doc for the full list.
pub mod action {
    /// A role granted by redeeming an invite.
    pub const ROLE_GRANT: &str = "role.grant";
    /// An invite made.
    pub const INVITE_CREATE: &str = "invite.create";
    /// A group created.
    pub const GROUP_CREATE: &str = "group.create";
    /// A facilitator muted someone (other controls follow the `control.<name>` form).
    pub const CONTROL_MUTE: &str = "control.mute";
    /// A facilitator redacted a message (its envelope carries the reason).
    pub const CONTROL_REDACT: &str = "control.redact";
    /// A supervisor acknowledged an escalation.
    pub const ESCALATION_ACK: &str = "escalation.ack";
    /// The retention pass deleted expired data (signed by the hub's key).
    pub const RETENTION_RUN: &str = "retention.run";
    /// An operator's backup of the whole store (signed by the hub's key).
    pub const ADMIN_BACKUP: &str = "admin.backup";
    /// An operator's export of one key's data (signed by the hub's key).
    pub const ADMIN_EXPORT: &str = "admin.export";
    /// An operator replaced a group's schedule (signed by the hub's key).
    pub const GROUP_SCHEDULE: &str = "group.schedule";
    /// A data folder restored from a backup (signed by the hub's key).
    pub const ADMIN_RESTORE: &str = "admin.restore";
    /// An operator erased one key's personal data (signed by the hub's key; see
    /// [`crate::erase`]).
    pub const ADMIN_ERASE: &str = "admin.erase";
    /// An operator cleared a group's waiting room (signed by the hub's key).
    pub const GROUP_CLEAR_WAITING: &str = "group.clear_waiting";
    /// An escalation resolved (by a supervisor; or by an operator's
    /// `peerhub escalation resolve`, then the hub's own `admin` envelope first).
    pub const ESCALATION_RESOLVE: &str = "escalation.resolve";
    /// An operator listed the escalation queue (signed by the hub's key).
    pub const ADMIN_ESCALATION_LIST: &str = "admin.escalation_list";
    /// A supervisor wrote on an escalation's private line (the signed post; its
    /// envelope becomes a digest when an ephemeral session ends, as a redaction's).
    pub const ESCALATION_LINE: &str = "escalation.line";
    /// An admin granted a key facilitator standing in one group (`grant`).
    pub const ROLE_GRANT_GROUP: &str = "role.grant_group";
    /// An admin revoked a key's facilitator standing in one group (`grant`).
    pub const ROLE_REVOKE_GROUP: &str = "role.revoke_group";
    /// Hub-wide facilitator roles became per-group grants, once, at start
    /// (signed by the hub's key; the detail names each key's groups).
    pub const ROLE_MIGRATE_GRANTS: &str = "role.migrate_grants";
}

/// The domain separator hashed before every entry.
pub const HASH_DOMAIN: &[u8] = b"peerhub-audit/1\n";

/// The SHA-256 hash of an entry, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// The `prev` of entry 1.
    pub const GENESIS: Self = Self([0; 32]);

    /// Parses exactly 64 lowercase hex digits (no other spelling of the same bytes,
    /// so every stored byte is significant).
    pub fn parse_hex(text: &[u8]) -> Option<Self> {
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if text.len() != 64 || !text.iter().all(lower_hex) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }

    /// The lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The hash of an entry whose body is `body`, following the entry whose hash is
    /// `prev`.
    pub fn of_entry(prev: &EntryHash, body: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(HASH_DOMAIN);
        hash.update(prev.0);
        hash.update(body);
        Self(hash.finalize().into())
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.to_hex())
    }
}

impl Serialize for EntryHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EntryHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_hex(text.as_bytes())
            .ok_or_else(|| serde::de::Error::custom("a hash is 64 lowercase hex digits"))
    }
}

/// The hashed part of an entry, in its stored field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBody {
    seq: u64,
    ts: u64,
    prev: EntryHash,
    action: String,
    group: Option<GroupId>,
    subject: Option<EntrySubject>,
    envelopes: Vec<EntryEnvelope>,
}

/// A `subject` as stored: a key, or the pseudonym that replaced an erased key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum EntrySubject {
    Key(PublicKey),
    Erased(Pseudonym),
}

/// An envelope as stored: signed, or erased (see "Erasure" in the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum EntryEnvelope {
    Signed(SignedEnvelope),
    Erased(ErasedEnvelope),
}

/// `{"erased":"<64 lowercase hex>"}`: the SHA-256 of the erased envelope's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasedEnvelope {
    erased: EntryHash,
}

/// What stands for an erased key in the chain: `erased-` and the first 16 hex
/// digits of SHA-256(hub signing seed ‖ key). The same key always gets the same
/// pseudonym on one hub (its entries stay linkable to each other), and nobody
/// without the hub's seed can tell whose key it was.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Pseudonym(String);

impl Pseudonym {
    const PREFIX: &'static str = "erased-";

    /// The pseudonym of `key` on the hub whose signing seed is `hub_seed`.
    pub fn of(hub_seed: &[u8; 32], key: &PublicKey) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"peerhub-erase/1\n");
        hash.update(hub_seed);
        hash.update(key.0);
        let digest = hash.finalize();
        Self(format!("{}{}", Self::PREFIX, hex::encode(&digest[..8])))
    }

    /// Parses `erased-` and exactly 16 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(Self::PREFIX)?;
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        (hex.len() == 16 && hex.bytes().all(lower_hex)).then(|| Self(text.to_string()))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pseudonym {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("a pseudonym is erased-<16 lowercase hex>"))
    }
}

/// One entry as read back from the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Server time of the action (ms since the Unix epoch).
    pub ts: u64,
    /// The hash of the entry before (all zeros for entry 1).
    pub prev: EntryHash,
    /// What happened (`role.grant`, ...).
    pub action: String,
    /// The group it happened in, if any.
    pub group: Option<GroupId>,
    /// The key it concerns, if any (`None` too when that key was erased).
    pub subject: Option<PublicKey>,
    /// The pseudonym standing for the key it concerned, if that key was erased.
    pub subject_pseudonym: Option<Pseudonym>,
    /// The signed commands that caused it, the actor's first, without the erased
    /// ones.
    pub envelopes: Vec<SignedEnvelope>,
    /// The erased envelopes: their position among all the entry's envelopes
    /// (from 0) and the SHA-256 of the original envelope's JSON.
    pub erased: Vec<(usize, EntryHash)>,
    /// This entry's hash, as stored.
    pub hash: EntryHash,
}

impl AuditEntry {
    /// Splits stored bytes into the hash line and the body, and parses both. Checks
    /// the layout only: [`verify`] checks the links, the hash and the signatures.
    pub fn parse(stored: &[u8]) -> Result<(Self, &[u8]), BreakReason> {
        let malformed = |why: &str| BreakReason::Malformed(why.to_string());
        let (hash_line, body_bytes) = match stored.get(64) {
            Some(b'\n') => (&stored[..64], &stored[65..]),
            _ => return Err(malformed("it does not start with a hash line")),
        };
        let hash = EntryHash::parse_hex(hash_line)
            .ok_or_else(|| malformed("its hash line is not 64 lowercase hex digits"))?;
        let text =
            std::str::from_utf8(body_bytes).map_err(|_| malformed("its body is not UTF-8 text"))?;
        let body: EntryBody = from_json_object(text)
            .map_err(|e| BreakReason::Malformed(format!("its body does not parse: {e}")))?;
        let (subject, subject_pseudonym) = match body.subject {
            None => (None, None),
            Some(EntrySubject::Key(key)) => (Some(key), None),
            Some(EntrySubject::Erased(pseudonym)) => (None, Some(pseudonym)),
        };
        let mut envelopes = Vec::with_capacity(body.envelopes.len());
        let mut erased = Vec::new();
        for (i, env) in body.envelopes.into_iter().enumerate() {
            match env {
                EntryEnvelope::Signed(env) => envelopes.push(env),
                EntryEnvelope::Erased(e) => erased.push((i, e.erased)),
            }
        }
        let entry = Self {
            seq: body.seq,
            ts: body.ts,
            prev: body.prev,
            action: body.action,
            group: body.group,
            subject,
            subject_pseudonym,
            envelopes,
            erased,
            hash,
        };
        Ok((entry, body_bytes))
    }

    /// The key of whoever is accountable: the signer of the first envelope
    /// (`None` if that envelope was erased).
    pub fn actor(&self) -> Option<PublicKey> {
        if self.erased.first().is_some_and(|(i, _)| *i == 0) {
            return None;
        }
        self.envelopes.first().map(|env| env.key)
    }
}

/// An action to record. Made with [`NewEntry::new`], which takes the actor's signed
/// envelope, so an entry without one cannot be built. Serialisable: in cluster
/// mode an operator's entry travels to the node serving the group.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewEntry {
    ts: u64,
    action: String,
    group: Option<GroupId>,
    subject: Option<PublicKey>,
    envelopes: Vec<SignedEnvelope>,
}

impl NewEntry {
    /// `action` (see [`action`]) at server time `ts`, caused by the actor's signed
    /// command `by`.
    pub fn new(ts: u64, action: impl Into<String>, by: SignedEnvelope) -> Self {
        Self {
            ts,
            action: action.into(),
            group: None,
            subject: None,
            envelopes: vec![by],
        }
    }

    /// The group it happened in.
    pub fn group(mut self, group: GroupId) -> Self {
        self.group = Some(group);
        self
    }

    /// The key it concerns.
    pub fn subject(mut self, key: PublicKey) -> Self {
        self.subject = Some(key);
        self
    }

    /// Another signed command it rests on (after the actor's).
    pub fn envelope(mut self, env: SignedEnvelope) -> Self {
        self.envelopes.push(env);
        self
    }
}

/// The last entry written: what the next one links to.
#[derive(Debug, Clone, Copy)]
struct Tail {
    seq: u64,
    hash: EntryHash,
}

/// The chain, as every task appends to it. One per store.
#[derive(Debug)]
pub struct AuditLog {
    store: Store,
    // Who: any task recording an action. Why: "read the tail, write the next entry"
    // must be one step or two appends would link to the same entry. Held only for
    // one in-memory store write (plus what a caller of `lock` does, also in
    // memory); never across an await.
    tail: Mutex<Tail>,
    /// Woken after every append, rewrite and prune: a cluster node's shipper
    /// (`crate::cluster::audit_ship`) waits on it. Waking it never blocks.
    changed: tokio::sync::Notify,
    /// How many rewrites and prunes this log has made: a reader that saw the
    /// same number before and after reading knows the entries it had read
    /// before were not rewritten meanwhile.
    rewrites: AtomicU64,
}

impl AuditLog {
    /// `given` (a running hub's chain, which its tasks append through), or for
    /// a store no hub uses, `store`'s chain opened into `opened`.
    pub fn given_or_open<'a>(
        given: Option<&'a AuditLog>,
        store: &Store,
        opened: &'a mut Option<AuditLog>,
    ) -> Result<&'a AuditLog, StoreError> {
        match given {
            Some(audit) => Ok(audit),
            None => Ok(opened.insert(AuditLog::open(store.clone())?)),
        }
    }

    /// Loads the tail of the chain in `store`. Fails if the last entry's hash line is
    /// unreadable, since nothing could link to it (run `peerhub audit verify`).
    pub fn open(store: Store) -> Result<Self, StoreError> {
        let tail = match store.last_audit()? {
            None => {
                let anchor = anchor(&store)?;
                Tail {
                    seq: anchor.seq,
                    hash: anchor.hash,
                }
            }
            Some((seq, stored)) => {
                let hash = stored
                    .get(..64)
                    .and_then(EntryHash::parse_hex)
                    .ok_or_else(|| StoreError::Corrupt {
                        tree: "seq_audit",
                        reason: format!(
                            "the last entry ({seq}) has no readable hash; run `peerhub audit verify`"
                        ),
                    })?;
                Tail { seq, hash }
            }
        };
        Ok(Self {
            store,
            tail: Mutex::new(tail),
            changed: tokio::sync::Notify::new(),
            rewrites: AtomicU64::new(0),
        })
    }

    /// Appends one entry (not durable until the caller commits); returns its seq.
    pub fn append(&self, entry: NewEntry) -> Result<u64, StoreError> {
        self.lock().append(entry)
    }

    /// Holds the chain so that a decision and the append it leads to are one step:
    /// no other entry is appended until the returned guard is dropped. For a caller
    /// whose "should this be recorded?" depends on state another task could change
    /// at the same moment (two redeems of one invite by one key).
    pub fn lock(&self) -> ChainLock<'_> {
        ChainLock {
            store: &self.store,
            changed: &self.changed,
            // A panic while holding the lock cannot leave the tail half-updated
            // (it is updated after the write, in one assignment), so go on.
            tail: self.tail.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Waits until the chain changes (an append, a rewrite, a prune) after the
    /// last wait returned; a change made while nobody waited wakes the next wait
    /// at once. For one waiter (the shipper).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// How many rewrites (erasures, session ends) and prunes this log has made
    /// since it was opened.
    pub fn rewrites(&self) -> u64 {
        self.rewrites.load(Ordering::SeqCst)
    }

    /// Counts a rewrite or prune and wakes the waiter.
    fn rewritten(&self) {
        self.rewrites.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// The last entry's seq (0 for an empty chain) and hash.
    pub fn tail(&self) -> (u64, EntryHash) {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        (tail.seq, tail.hash)
    }
}

/// The chain, held: see [`AuditLog::lock`]. Not `Send`, so never held across an
/// await in a spawned task.
#[derive(Debug)]
pub struct ChainLock<'a> {
    store: &'a Store,
    changed: &'a tokio::sync::Notify,
    tail: MutexGuard<'a, Tail>,
}

impl ChainLock<'_> {
    /// Appends one entry (not durable until the caller commits); returns its seq.
    pub fn append(&mut self, entry: NewEntry) -> Result<u64, StoreError> {
        let seq = self.tail.seq + 1;
        let (stored, hash) =
            encode_entry(seq, &self.tail.hash, entry).map_err(|e| StoreError::Corrupt {
                tree: "seq_audit",
                reason: format!("an entry could not be encoded: {e}"),
            })?;
        self.store.append_audit(seq, &stored)?;
        *self.tail = Tail { seq, hash };
        self.changed.notify_one();
        Ok(seq)
    }
}

/// Entry number `seq`, linked to the entry before by its hash `prev`, as the chain
/// stores it (its hash line, a newline, its body), and its hash. The one encoding,
/// whichever store keeps the chain (sled here, a NATS stream in cluster mode).
pub fn encode_entry(
    seq: u64,
    prev: &EntryHash,
    entry: NewEntry,
) -> Result<(Vec<u8>, EntryHash), serde_json::Error> {
    let body = EntryBody {
        seq,
        ts: entry.ts,
        prev: *prev,
        action: entry.action,
        group: entry.group,
        subject: entry.subject.map(EntrySubject::Key),
        envelopes: entry
            .envelopes
            .into_iter()
            .map(EntryEnvelope::Signed)
            .collect(),
    };
    let body = serde_json::to_vec(&body)?;
    let hash = EntryHash::of_entry(prev, &body);
    let mut stored = Vec::with_capacity(65 + body.len());
    stored.extend_from_slice(hash.to_hex().as_bytes());
    stored.push(b'\n');
    stored.extend_from_slice(&body);
    Ok((stored, hash))
}

/// What [`AuditLog::rewrite_for_erasure`] changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureRewrite {
    /// The pseudonym that now stands for the key.
    pub pseudonym: Pseudonym,
    /// Entries whose body changed (subject or envelopes), not counting those
    /// rewritten only for their new `prev`.
    pub entries_changed: u64,
    /// Subjects replaced by the pseudonym.
    pub subjects_replaced: u64,
    /// Envelopes replaced by their digest.
    pub envelopes_erased: u64,
    /// The first rewritten entry, if any was.
    pub first_rewritten: Option<u64>,
    /// That entry's hash before the rewrite.
    pub old_hash: Option<EntryHash>,
    /// That entry's hash after it.
    pub new_hash: Option<EntryHash>,
    /// The chain's last hash before and after.
    pub old_last_hash: EntryHash,
    /// The chain's last hash after the rewrite.
    pub new_last_hash: EntryHash,
}

/// Why the chain could not be rewritten.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain does not verify as it is: rewriting its hashes would hide that.
    #[error("refusing to rewrite a chain that does not verify: {0}")]
    Broken(#[from] ChainBreak),
}

impl AuditLog {
    /// Pseudonymises `key` throughout the chain for an erasure (see "Erasure" in
    /// the module docs): subjects naming it become `pseudonym`; envelopes it signed,
    /// and envelopes `hub` signed whose payload names it, become their digest. Every
    /// entry from the first changed one on is rewritten with its new `prev` and
    /// hash (an unchanged entry keeps its bytes but for `prev`), in one atomic
    /// batch, and the tail follows. Refuses a chain that does not verify first,
    /// since recomputing hashes would hide a break. Holds the chain throughout.
    /// Not durable until the caller flushes.
    pub fn rewrite_for_erasure(
        &self,
        key: &PublicKey,
        pseudonym: &Pseudonym,
        hub: &PublicKey,
    ) -> Result<ErasureRewrite, RewriteError> {
        let needle = key.to_b64();
        self.rewrite_with(pseudonym, |body, out| {
            let mut changed = false;
            if body.subject == Some(EntrySubject::Key(*key)) {
                body.subject = Some(EntrySubject::Erased(pseudonym.clone()));
                out.subjects_replaced += 1;
                changed = true;
            }
            for env in &mut body.envelopes {
                let EntryEnvelope::Signed(signed) = env else {
                    continue;
                };
                let names_key = signed.key == *hub && signed.payload.contains(&needle);
                if signed.key == *key || names_key {
                    *env = erased_envelope(signed);
                    out.envelopes_erased += 1;
                    changed = true;
                }
            }
            changed
        })
    }

    /// Pseudonymises the participants of an ephemeral group's session that ended
    /// (see [`crate::groups`], `end_session`): as [`AuditLog::rewrite_for_erasure`]
    /// does for each of `participants` (key, pseudonym) — subjects become
    /// pseudonyms; their envelopes, and the hub's naming them, become digests — and
    /// in the entries of `group`, every redaction's envelope (`control.redact`,
    /// whose reason may quote what was said) becomes its digest too. Facilitators'
    /// other envelopes stay, as an erasure keeps them: they hold the facilitators
    /// to account. The returned `pseudonym` is the first participant's. Not
    /// durable until the caller commits.
    pub fn rewrite_for_session_end(
        &self,
        group: &GroupId,
        participants: &[(PublicKey, Pseudonym)],
        hub: &PublicKey,
    ) -> Result<ErasureRewrite, RewriteError> {
        let Some((_, first)) = participants.first() else {
            let (_, hash) = self.tail();
            return Ok(ErasureRewrite {
                pseudonym: Pseudonym::of(&[0; 32], hub),
                entries_changed: 0,
                subjects_replaced: 0,
                envelopes_erased: 0,
                first_rewritten: None,
                old_hash: None,
                new_hash: None,
                old_last_hash: hash,
                new_last_hash: hash,
            });
        };
        let needles: Vec<String> = participants.iter().map(|(k, _)| k.to_b64()).collect();
        self.rewrite_with(first, |body, out| {
            let mut changed = false;
            if let Some(EntrySubject::Key(subject)) = &body.subject {
                if let Some((_, pseudonym)) = participants.iter().find(|(k, _)| k == subject) {
                    body.subject = Some(EntrySubject::Erased(pseudonym.clone()));
                    out.subjects_replaced += 1;
                    changed = true;
                }
            }
            let in_group = body.group.as_ref() == Some(group);
            let redaction = in_group
                && (body.action == action::CONTROL_REDACT
                    || body.action == action::ESCALATION_LINE);
            for env in &mut body.envelopes {
                let EntryEnvelope::Signed(signed) = env else {
                    continue;
                };
                let signer = participants.iter().any(|(k, _)| *k == signed.key);
                let names = signed.key == *hub
                    && needles.iter().any(|n| signed.payload.contains(n.as_str()));
                if signer || names || redaction {
                    *env = erased_envelope(signed);
                    out.envelopes_erased += 1;
                    changed = true;
                }
            }
            changed
        })
    }

    /// Rewrites the chain: `change` edits one entry's body (counting in `out`) and
    /// says whether it changed it; see [`AuditLog::rewrite_for_erasure`].
    fn rewrite_with(
        &self,
        pseudonym: &Pseudonym,
        mut change: impl FnMut(&mut EntryBody, &mut ErasureRewrite) -> bool,
    ) -> Result<ErasureRewrite, RewriteError> {
        let mut chain = self.lock();
        let mut out = ErasureRewrite {
            pseudonym: pseudonym.clone(),
            entries_changed: 0,
            subjects_replaced: 0,
            envelopes_erased: 0,
            first_rewritten: None,
            old_hash: None,
            new_hash: None,
            old_last_hash: chain.tail.hash,
            new_last_hash: chain.tail.hash,
        };
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
        // A chain pruned by retention starts after its anchor, which stays valid:
        // the first kept entry's `prev` never changes here.
        let anchor = anchor(&self.store)?;
        let (mut old_prev, mut new_prev) = (anchor.hash, anchor.hash);
        let mut expected = anchor.seq + 1;
        for item in self.store.audit_entries() {
            let (seq, stored) = item.map_err(|e| ChainBreak {
                seq: expected,
                reason: BreakReason::Unreadable(e.to_string()),
            })?;
            if seq != 0 && seq <= anchor.seq {
                // Pruned, its removal cut short: not part of the chain any more.
                continue;
            }
            if seq != expected {
                let reason = if seq == 0 {
                    BreakReason::SeqZero
                } else {
                    BreakReason::Missing { next: seq }
                };
                return Err(ChainBreak { seq, reason }.into());
            }
            let (old_hash, _) = verify_entry(seq, &old_prev, &stored).map_err(broken(seq))?;
            let body_bytes = &stored[65..];
            let mut body: EntryBody =
                from_json_object(std::str::from_utf8(body_bytes).unwrap_or_default())
                    .map_err(|e| broken(seq)(BreakReason::Malformed(e.to_string())))?;
            let changed = change(&mut body, &mut out);
            if changed || !writes.is_empty() {
                let new_body = if changed {
                    body.prev = new_prev;
                    out.entries_changed += 1;
                    serde_json::to_vec(&body).map_err(|e| StoreError::Corrupt {
                        tree: "seq_audit",
                        reason: format!("an entry could not be encoded: {e}"),
                    })?
                } else {
                    // Same bytes but the link: `prev` is the third field, and the
                    // fields before it are numbers, so its text occurs first.
                    let text = std::str::from_utf8(body_bytes).unwrap_or_default();
                    let from = format!(r#""prev":"{}""#, old_prev.to_hex());
                    let to = format!(r#""prev":"{}""#, new_prev.to_hex());
                    text.replacen(&from, &to, 1).into_bytes()
                };
                let new_hash = EntryHash::of_entry(&new_prev, &new_body);
                if out.first_rewritten.is_none() {
                    out.first_rewritten = Some(seq);
                    out.old_hash = Some(old_hash);
                    out.new_hash = Some(new_hash);
                }
                let mut bytes = new_hash.to_hex().into_bytes();
                bytes.push(b'\n');
                bytes.extend_from_slice(&new_body);
                writes.push((seq, bytes));
                new_prev = new_hash;
            } else {
                new_prev = old_hash;
            }
            old_prev = old_hash;
            expected = seq + 1;
        }
        if !writes.is_empty() {
            self.store.rewrite_audit_for_erasure(&writes)?;
            chain.tail.hash = new_prev;
            out.new_last_hash = new_prev;
            drop(chain);
            self.rewritten();
        }
        Ok(out)
    }
}

/// An envelope replaced by the SHA-256 of its JSON.
fn erased_envelope(signed: &SignedEnvelope) -> EntryEnvelope {
    let json = serde_json::to_vec(signed).unwrap_or_default();
    let digest = EntryHash(Sha256::digest(&json).into());
    EntryEnvelope::Erased(ErasedEnvelope { erased: digest })
}

/// A chain that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many entries.
    pub entries: u64,
    /// The last entry's hash (all zeros for an empty chain). Keep it elsewhere to
    /// detect later rewriting or truncation.
    pub last_hash: EntryHash,
    /// How many envelopes were erased at a person's request (accepted unsigned).
    pub erased_envelopes: u64,
    /// How many entries retention pruned from the front (the anchor's seq): the
    /// chain's last seq is `pruned + entries`.
    pub pruned: u64,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entries, last hash {}", self.entries, self.last_hash)?;
        if self.pruned > 0 {
            write!(f, " ({} earlier entries pruned by retention)", self.pruned)?;
        }
        if self.erased_envelopes > 0 {
            write!(
                f,
                " ({} envelopes erased at a person's request)",
                self.erased_envelopes
            )?;
        }
        Ok(())
    }
}

/// The first entry at which the chain is broken, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {seq}: {reason}")]
pub struct ChainBreak {
    /// The first broken entry (for a missing entry, the seq that is missing).
    pub seq: u64,
    /// Why.
    pub reason: BreakReason,
}

/// Why an entry breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakReason {
    /// The store could not be read at this point.
    #[error("the store could not be read here: {0}")]
    Unreadable(String),
    /// An entry is stored under seq 0; seqs start at 1.
    #[error("an entry is stored under seq 0, but seqs start at 1")]
    SeqZero,
    /// This seq is absent: the next stored entry has a later one.
    #[error("this entry is missing (the next stored entry is {next})")]
    Missing {
        /// The seq stored next.
        next: u64,
    },
    /// The stored bytes are not an entry.
    #[error("the stored bytes are not an entry: {0}")]
    Malformed(String),
    /// The entry says it has another seq than the one it is stored under.
    #[error("it is stored as entry {stored_as} but says it is entry {says}")]
    WrongSeq {
        /// Where it is stored.
        stored_as: u64,
        /// What its body says.
        says: u64,
    },
    /// `prev` is not the hash of the entry before.
    #[error("its prev {found} is not the hash of the entry before it ({expected})")]
    WrongPrev {
        /// The hash it should name.
        expected: EntryHash,
        /// The hash it names.
        found: EntryHash,
    },
    /// The stored hash is not the hash of the stored contents.
    #[error("its contents do not match its hash (stored {stored}, computed {computed})")]
    WrongHash {
        /// The hash stored with it.
        stored: EntryHash,
        /// The hash of its bytes.
        computed: EntryHash,
    },
    /// No signed envelope: nobody is accountable for it.
    #[error("it carries no signed envelope, so nobody is accountable for it")]
    NoEnvelope,
    /// An envelope does not verify.
    #[error("its envelope {number} (of {of}) does not verify: {error}")]
    BadEnvelope {
        /// Which envelope, from 1.
        number: usize,
        /// How many it has.
        of: usize,
        /// The verifier's complaint.
        error: ProtocolError,
    },
}

/// Checks the whole chain in `store`, in order: seqs run 1, 2, 3 ... with none
/// missing; each entry parses; names its own seq; names the previous entry's hash as
/// `prev` (zeros for entry 1); hashes to its stored hash; and carries at least one
/// envelope, every one of which verifies strictly, except an envelope erased at a
/// person's request (`{"erased":"<hex>"}`), which has no signature left and is
/// counted instead. Stops at the first break.
///
/// A chain pruned by retention is checked from its anchor (see "Retention" above):
/// seqs run from `anchor.seq + 1`, whose `prev` is the anchor's hash.
pub fn verify(store: &Store) -> Result<VerifyReport, ChainBreak> {
    let anchor = anchor(store).map_err(|e| broken(0)(BreakReason::Unreadable(e.to_string())))?;
    verify_entries(anchor, store.audit_entries())
}

/// Checks a chain given as its stored entries in order, `(seq, stored bytes)`,
/// from `anchor` on: what [`verify`] does for the store, for any store of the chain.
pub fn verify_entries<E: fmt::Display>(
    anchor: Anchor,
    entries: impl IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
) -> Result<VerifyReport, ChainBreak> {
    let mut last_seq = anchor.seq;
    let mut last_hash = anchor.hash;
    let mut erased_envelopes = 0u64;
    for item in entries {
        let expected = last_seq + 1;
        let (seq, stored) =
            item.map_err(|e| broken(expected)(BreakReason::Unreadable(e.to_string())))?;
        if seq == 0 {
            return Err(broken(0)(BreakReason::SeqZero));
        }
        if seq <= anchor.seq {
            // Pruned; its removal was cut short. The next retention pass ends it.
            continue;
        }
        if seq != expected {
            return Err(broken(expected)(BreakReason::Missing { next: seq }));
        }
        let (hash, erased) = verify_entry(seq, &last_hash, &stored).map_err(broken(seq))?;
        last_seq = seq;
        last_hash = hash;
        erased_envelopes += erased as u64;
    }
    Ok(VerifyReport {
        entries: last_seq - anchor.seq,
        pruned: anchor.seq,
        last_hash,
        erased_envelopes,
    })
}

fn broken(seq: u64) -> impl FnOnce(BreakReason) -> ChainBreak {
    move |reason| ChainBreak { seq, reason }
}

/// Checks one stored entry against the hash of the entry before; returns its hash
/// and how many of its envelopes are erased.
fn verify_entry(
    seq: u64,
    prev: &EntryHash,
    stored: &[u8],
) -> Result<(EntryHash, usize), BreakReason> {
    let (entry, body) = AuditEntry::parse(stored)?;
    if entry.seq != seq {
        return Err(BreakReason::WrongSeq {
            stored_as: seq,
            says: entry.seq,
        });
    }
    if entry.prev != *prev {
        return Err(BreakReason::WrongPrev {
            expected: *prev,
            found: entry.prev,
        });
    }
    let computed = EntryHash::of_entry(prev, body);
    if computed != entry.hash {
        return Err(BreakReason::WrongHash {
            stored: entry.hash,
            computed,
        });
    }
    let of = entry.envelopes.len() + entry.erased.len();
    if of == 0 {
        return Err(BreakReason::NoEnvelope);
    }
    let positions = (0..of).filter(|i| !entry.erased.iter().any(|(e, _)| e == i));
    for (i, env) in positions.zip(&entry.envelopes) {
        env.verify().map_err(|error| BreakReason::BadEnvelope {
            number: i + 1,
            of,
            error,
        })?;
    }
    Ok((entry.hash, entry.erased.len()))
}

/// Actions that record only a read of the store: an operator's backup, export or
/// listing of the queue. A store's content digest leaves their entries out, so two
/// backups taken with nothing but reads between them have the same one
/// (`docs/FORMATS.md`).
pub const READ_ONLY_ACTIONS: [&str; 3] = [
    action::ADMIN_BACKUP,
    action::ADMIN_EXPORT,
    action::ADMIN_ESCALATION_LIST,
];

/// Whether a stored entry (tree, key, value) records only a read or the store's
/// own bookkeeping, and so is left out of the content digest: an audit entry of a
/// [`READ_ONLY_ACTIONS`] action, or the count of group commits (`meta` `commits`,
/// which every write, a backup's own entry too, moves).
pub fn records_only_a_read(tree: &str, key: &[u8], stored: &[u8]) -> bool {
    (tree == "meta" && key == b"commits")
        || (tree == "seq_audit"
            && AuditEntry::parse(stored)
                .is_ok_and(|(entry, _)| READ_ONLY_ACTIONS.contains(&entry.action.as_str())))
}

/// Every entry, parsed, in order (not verified: use [`verify`] for that). An entry
/// that does not parse is an error at its seq (at seq 0 if its key is unreadable).
pub fn entries(store: &Store) -> impl Iterator<Item = Result<AuditEntry, ChainBreak>> + '_ {
    store.audit_entries().map(|item| {
        let (seq, stored) = item.map_err(|e| ChainBreak {
            seq: 0,
            reason: BreakReason::Unreadable(e.to_string()),
        })?;
        AuditEntry::parse(&stored)
            .map(|(entry, _)| entry)
            .map_err(|reason| ChainBreak { seq, reason })
    })
}

/// Where a pruned chain starts: the seq and hash of the last entry retention removed
/// from its front ([`EntryHash::GENESIS`] at seq 0 if none was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// The last pruned entry's seq (0: nothing pruned).
    pub seq: u64,
    /// Its hash: the `prev` of the first entry kept.
    pub hash: EntryHash,
}

/// The chain's anchor in `store`.
pub fn anchor(store: &Store) -> Result<Anchor, StoreError> {
    Ok(match store.audit_anchor()? {
        Some((seq, hash)) => Anchor {
            seq,
            hash: EntryHash(hash),
        },
        None => Anchor {
            seq: 0,
            hash: EntryHash::GENESIS,
        },
    })
}

/// The run of entries at the front of the chain (after the anchor) written before
/// `before_ms`, if any: the anchor pruning them would leave, and how many they are.
/// Stops at the first entry that is newer or does not verify, so only a sound
/// stretch of the chain is ever pruned.
pub fn expired_front(store: &Store, before_ms: u64) -> Result<Option<(Anchor, u64)>, StoreError> {
    let start = anchor(store)?;
    let mut last = start;
    for item in store.audit_entries() {
        let (seq, stored) = item?;
        if seq <= start.seq {
            continue;
        }
        if seq != last.seq + 1 {
            break;
        }
        let Ok((entry, _)) = AuditEntry::parse(&stored) else {
            break;
        };
        if entry.ts >= before_ms {
            break;
        }
        let Ok((hash, _)) = verify_entry(seq, &last.hash, &stored) else {
            break;
        };
        last = Anchor { seq, hash };
    }
    Ok((last.seq > start.seq).then_some((last, last.seq - start.seq)))
}

impl AuditLog {
    /// Prunes the chain's front through `through` (from [`expired_front`]): stores
    /// the new anchor, then removes the entries (not durable until a commit).
    /// Refuses to prune the last entry: append the entry that records the pruning
    /// first, so the chain is never empty and the record precedes the removal.
    pub fn prune(&self, through: Anchor) -> Result<usize, StoreError> {
        if through.seq >= self.tail().0 {
            return Err(StoreError::Corrupt {
                tree: "seq_audit",
                reason: format!(
                    "refusing to prune through entry {}: it is the last one",
                    through.seq
                ),
            });
        }
        self.store.put_audit_anchor(through.seq, through.hash.0)?;
        let removed = self.store.remove_audit_through(through.seq);
        self.rewritten();
        removed
    }
}

/// Why a data folder could not be opened for verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FolderError {
    /// The folder holds no store.
    #[error("{} holds no peerhub store (is it the folder given to --data when serving?)", .0.display())]
    NoStore(PathBuf),
    /// A running server holds the store's lock.
    #[error(
        "{} is in use, most likely by a running peerhub server; stop the server \
         first (the store allows one process at a time)",
        .0.display()
    )]
    InUse(PathBuf),
    /// The store could not be opened.
    #[error("cannot open the store in {}: {source}", .path.display())]
    Store {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
}

/// Opens the store in data folder `dir` (never creating one) and verifies its chain.
/// The outer error says the folder could not be opened; the inner result is the
/// verdict.
pub fn verify_data_dir(dir: &Path) -> Result<Result<VerifyReport, ChainBreak>, FolderError> {
    if !Store::exists_in(dir) {
        return Err(FolderError::NoStore(dir.to_path_buf()));
    }
    let store = Store::open(dir).map_err(|source| {
        if source.is_in_use() {
            FolderError::InUse(dir.to_path_buf())
        } else {
            FolderError::Store {
                path: dir.to_path_buf(),
                source,
            }
        }
    })?;
    Ok(verify(&store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use peerhub_protocol::envelope::Kind;

    fn signer(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn redeem_env(n: u8) -> SignedEnvelope {
        SignedEnvelope::sign(
            &signer(n),
            Kind::Redeem,
            format!(r#"{{"token":"t{n}","counter":{n},"ts":1000}}"#),
        )
    }

    /// A store holding a good chain of `n` role grants.
    fn chain(n: u8) -> (tempfile::TempDir, Store, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::open(store.clone()).unwrap();
        for i in 1..=n {
            let env = redeem_env(i);
            let entry = NewEntry::new(1_000 + u64::from(i), action::ROLE_GRANT, env.clone())
                .subject(env.key);
            assert_eq!(log.append(entry).unwrap(), u64::from(i));
        }
        (dir, store, log)
    }

    fn stored(store: &Store, seq: u64) -> Vec<u8> {
        store
            .audit_entries()
            .map(Result::unwrap)
            .find(|(s, _)| *s == seq)
            .unwrap()
            .1
    }

    /// Replaces the first `from` in entry `seq`'s stored bytes with `to`.
    fn edit(store: &Store, seq: u64, from: &str, to: &str) {
        let text = String::from_utf8(stored(store, seq)).unwrap();
        assert!(text.contains(from), "{from} in {text}");
        let edited = text.replacen(from, to, 1);
        assert_eq!(edited.len(), text.len(), "tests change bytes, not lengths");
        store
            .put_audit_raw_for_tests(seq, edited.as_bytes())
            .unwrap();
    }

    /// Rewrites entry `seq`'s body with `change`, then recomputes its hash and every
    /// later entry's prev and hash: what someone who can write the folder could do.
    fn rewrite_from(store: &Store, seq: u64, change: impl FnOnce(&mut EntryBody)) {
        let mut prev = if seq == 1 {
            EntryHash::GENESIS
        } else {
            AuditEntry::parse(&stored(store, seq - 1)).unwrap().0.hash
        };
        let all: Vec<(u64, Vec<u8>)> = store.audit_entries().map(Result::unwrap).collect();
        let mut change = Some(change);
        for (s, bytes) in all.into_iter().filter(|(s, _)| *s >= seq) {
            let mut body: EntryBody = serde_json::from_slice(&bytes[65..]).unwrap();
            if let Some(change) = change.take() {
                change(&mut body);
            }
            body.prev = prev;
            let body = serde_json::to_vec(&body).unwrap();
            let hash = EntryHash::of_entry(&prev, &body);
            let mut out = hash.to_hex().into_bytes();
            out.push(b'\n');
            out.extend_from_slice(&body);
            store.put_audit_raw_for_tests(s, &out).unwrap();
            prev = hash;
        }
    }

    fn broken_at(store: &Store) -> (u64, BreakReason) {
        let err = verify(store).expect_err("the chain must be reported broken");
        (err.seq, err.reason)
    }

    #[test]
    fn a_good_chain_verifies_and_reports_its_count_and_last_hash() {
        let (_dir, store, log) = chain(3);
        let report = verify(&store).unwrap();
        assert_eq!(report.entries, 3);
        assert_eq!(report.last_hash, log.tail().1);
        assert_eq!(log.tail().0, 3);
        let read: Vec<AuditEntry> = entries(&store).map(Result::unwrap).collect();
        assert_eq!(read[0].prev, EntryHash::GENESIS);
        assert_eq!(read[1].prev, read[0].hash);
        assert_eq!(read[2].hash, report.last_hash);
        assert_eq!(read[1].action, "role.grant");
        assert_eq!(read[1].subject, Some(redeem_env(2).key));
        assert_eq!(read[1].actor(), Some(redeem_env(2).key));
        assert_eq!(read[1].envelopes, vec![redeem_env(2)]);
    }

    /// What a cluster node's shipper waits on: an append wakes it (even one made
    /// while nobody waited), and only a rewrite or a prune moves the count.
    #[tokio::test]
    async fn appends_wake_the_waiter_and_rewrites_and_prunes_are_counted() {
        let (_dir, store, log) = chain(3);
        log.changed().await;
        assert_eq!(log.rewrites(), 0);
        let hub = PublicKey(signer(9).verifying_key().to_bytes());
        let key = redeem_env(2).key;
        let out = log
            .rewrite_for_erasure(&key, &Pseudonym::of(&[1; 32], &key), &hub)
            .unwrap();
        assert_eq!(out.first_rewritten, Some(2));
        assert_eq!(log.rewrites(), 1);
        log.changed().await;
        // Nothing to change: not counted.
        let other = redeem_env(7).key;
        log.rewrite_for_erasure(&other, &Pseudonym::of(&[1; 32], &other), &hub)
            .unwrap();
        assert_eq!(log.rewrites(), 1);
        let (through, _) = expired_front(&store, 1_002).unwrap().unwrap();
        log.prune(through).unwrap();
        assert_eq!(log.rewrites(), 2);
        assert_eq!(
            store
                .audit_entries_from(2)
                .map(|e| e.unwrap().0)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn an_empty_chain_verifies_with_a_zero_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let report = verify(&store).unwrap();
        assert_eq!(report.entries, 0);
        assert_eq!(report.last_hash, EntryHash::GENESIS);
        assert_eq!(
            report.to_string(),
            format!("0 entries, last hash {}", "0".repeat(64))
        );
    }

    #[test]
    fn the_stored_layout_is_hash_line_then_body_and_the_hash_covers_the_body_bytes() {
        let (_dir, store, _log) = chain(2);
        let first = AuditEntry::parse(&stored(&store, 1)).unwrap().0.hash;
        let bytes = stored(&store, 2);
        let text = std::str::from_utf8(&bytes).unwrap();
        let (hash_line, body) = text.split_once('\n').unwrap();
        assert!(body.starts_with(&format!(
            r#"{{"seq":2,"ts":1002,"prev":"{first}","action":"role.grant","group":null,"subject":""#
        )), "{body}");
        let mut hash = Sha256::new();
        hash.update(b"peerhub-audit/1\n");
        hash.update(first.0);
        hash.update(body.as_bytes());
        assert_eq!(hash_line, hex::encode(hash.finalize()));
    }

    #[test]
    fn the_log_reopens_at_its_tail_and_keeps_linking() {
        let (_dir, store, log) = chain(2);
        let tail = log.tail();
        drop(log);
        let log = AuditLog::open(store.clone()).unwrap();
        assert_eq!(log.tail(), tail);
        let env = redeem_env(9);
        assert_eq!(log.append(NewEntry::new(5, "role.grant", env)).unwrap(), 3);
        assert_eq!(verify(&store).unwrap().entries, 3);
    }

    #[test]
    fn concurrent_appends_keep_one_linear_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::open(store.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 1..=8u8 {
                let log = &log;
                s.spawn(move || {
                    for _ in 0..25 {
                        log.append(NewEntry::new(1, action::CONTROL_MUTE, redeem_env(t)))
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(verify(&store).unwrap().entries, 200);
    }

    #[test]
    fn one_changed_byte_of_a_body_is_reported_at_that_entry() {
        let (_dir, store, _log) = chain(3);
        edit(&store, 2, r#""ts":1002"#, r#""ts":1003"#);
        let (seq, reason) = broken_at(&store);
        assert_eq!(seq, 2);
        assert!(matches!(reason, BreakReason::WrongHash { .. }), "{reason}");
    }

    #[test]
    fn one_changed_byte_of_a_subject_is_reported_at_that_entry() {
        let (_dir, store, _log) = chain(3);
        let subject = redeem_env(2).key.to_b64();
        let mut other = subject.clone().into_bytes();
        other[5] = if other[5] == b'A' { b'B' } else { b'A' };
        edit(&store, 2, &subject, std::str::from_utf8(&other).unwrap());
        assert_eq!(broken_at(&store).0, 2);
    }

    #[test]
    fn one_changed_byte_of_a_prev_is_reported_at_that_entry() {
        let (_dir, store, _log) = chain(3);
        let prev = AuditEntry::parse(&stored(&store, 2))
            .unwrap()
            .0
            .prev
            .to_hex();
        let mut other = prev.clone().into_bytes();
        other[10] = if other[10] == b'0' { b'1' } else { b'0' };
        edit(&store, 2, &prev, std::str::from_utf8(&other).unwrap());
        let (seq, reason) = broken_at(&store);
        assert_eq!(seq, 2);
        assert!(matches!(reason, BreakReason::WrongPrev { .. }), "{reason}");
    }

    #[test]
    fn one_changed_byte_of_a_stored_hash_is_reported_at_that_entry() {
        let (_dir, store, _log) = chain(3);
        let mut bytes = stored(&store, 2);
        bytes[0] = if bytes[0] == b'a' { b'b' } else { b'a' };
        store.put_audit_raw_for_tests(2, &bytes).unwrap();
        let (seq, reason) = broken_at(&store);
        assert_eq!(seq, 2);
        assert!(matches!(reason, BreakReason::WrongHash { .. }), "{reason}");
    }

    #[test]
    fn an_uppercase_spelling_of_a_stored_hash_counts_as_a_change() {
        let (_dir, store, _log) = chain(3);
        let mut bytes = stored(&store, 2);
        bytes[..64].make_ascii_uppercase();
        assert_ne!(bytes, stored(&store, 2), "the hash has hex letters");
        store.put_audit_raw_for_tests(2, &bytes).unwrap();
        let (seq, reason) = broken_at(&store);
        assert_eq!(seq, 2);
        assert!(matches!(reason, BreakReason::Malformed(_)), "{reason}");
    }

    #[test]
    fn one_changed_byte_of_an_envelope_payload_is_reported_at_that_entry() {
        let (_dir, store, _log) = chain(3);
        // The payload sits in the body as an escaped JSON string.
        edit(&store, 2, r#"\"token\":\"t2\""#, r#"\"token\":\"t7\""#);
        let (seq, reason) = broken_at(&store);
        assert_eq!(seq, 2);
        assert!(matches!(reason, BreakReason::WrongHash { .. }), "{reason}");
    }

    #[test]
    fn an_envelope_changed_under_a_rewritten_chain_is_caught_by_its_signature() {
        let (_dir, store, _log) = chain(3);
        rewrite_from(&store, 2, |body| {
            let EntryEnvelope::Signed(env) = &mut body.envelopes[0] else {
                unreachable!("a signed envelope")
            };
            env.payload = env.payload.replace("t2", "t7");
        });
        let (seq, reason) = broken_at(&store);
        assert_eq!(seq, 2);
        assert!(
            matches!(
                reason,
                BreakReason::BadEnvelope {
                    number: 1,
                    of: 1,
                    ..
                }
            ),
            "{reason}"
        );
    }

    #[test]
    fn one_changed_byte_of_a_signature_is_reported_at_that_entry() {
        let (_dir, store, _log) = chain(3);
        let sig = redeem_env(2).sig.to_b64();
        let mut other = sig.clone().into_bytes();
        other[3] = if other[3] == b'A' { b'B' } else { b'A' };
        edit(&store, 2, &sig, std::str::from_utf8(&other).unwrap());
        assert_eq!(broken_at(&store).0, 2);
        let (_dir, store, _log) = chain(3);
        rewrite_from(&store, 2, |body| {
            if let EntryEnvelope::Signed(env) = &mut body.envelopes[0] {
                env.sig.0[3] ^= 1;
            }
        });
        let (seq, reason) = broken_at(&store);
        assert_eq!(seq, 2);
        assert!(
            matches!(reason, BreakReason::BadEnvelope { .. }),
            "{reason}"
        );
    }

    #[test]
    fn an_entry_without_an_envelope_is_refused_even_with_good_hashes() {
        let (_dir, store, _log) = chain(3);
        rewrite_from(&store, 2, |body| body.envelopes.clear());
        assert_eq!(broken_at(&store), (2, BreakReason::NoEnvelope));
    }

    #[test]
    fn a_deleted_entry_is_reported_at_its_seq() {
        let (_dir, store, _log) = chain(3);
        store.remove_audit_raw_for_tests(2).unwrap();
        assert_eq!(broken_at(&store), (2, BreakReason::Missing { next: 3 }));
        let (_dir, store, _log) = chain(3);
        store.remove_audit_raw_for_tests(1).unwrap();
        assert_eq!(broken_at(&store), (1, BreakReason::Missing { next: 2 }));
    }

    #[test]
    fn swapped_entries_are_reported_at_the_first_of_them() {
        let (_dir, store, _log) = chain(4);
        let (two, three) = (stored(&store, 2), stored(&store, 3));
        store.put_audit_raw_for_tests(2, &three).unwrap();
        store.put_audit_raw_for_tests(3, &two).unwrap();
        assert_eq!(
            broken_at(&store),
            (
                2,
                BreakReason::WrongSeq {
                    stored_as: 2,
                    says: 3
                }
            )
        );
    }

    #[test]
    fn an_entry_stored_under_seq_zero_is_reported() {
        let (_dir, store, _log) = chain(2);
        store
            .put_audit_raw_for_tests(0, &stored(&store, 1))
            .unwrap();
        assert_eq!(broken_at(&store), (0, BreakReason::SeqZero));
    }

    #[test]
    fn unparseable_bytes_are_reported_at_their_entry() {
        let (_dir, store, _log) = chain(3);
        store.put_audit_raw_for_tests(3, b"not an entry").unwrap();
        let (seq, reason) = broken_at(&store);
        assert_eq!(seq, 3);
        assert!(matches!(reason, BreakReason::Malformed(_)), "{reason}");
    }

    #[test]
    fn the_break_is_described_in_words() {
        let err = ChainBreak {
            seq: 2,
            reason: BreakReason::Missing { next: 3 },
        };
        assert_eq!(
            err.to_string(),
            "audit chain broken at entry 2: this entry is missing (the next stored entry is 3)"
        );
    }

    #[test]
    fn verifying_a_folder_without_a_store_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing-here");
        assert!(matches!(
            verify_data_dir(&missing),
            Err(FolderError::NoStore(_))
        ));
        assert!(!missing.exists());
    }

    #[test]
    fn verifying_a_folder_in_use_is_refused_as_in_use() {
        let (dir, _store, _log) = chain(1);
        let err = verify_data_dir(dir.path()).unwrap_err();
        assert!(matches!(err, FolderError::InUse(_)), "{err}");
        assert!(err.to_string().contains("running peerhub server"), "{err}");
    }

    #[test]
    fn a_session_end_pseudonymises_its_participants_and_hides_its_redactions_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::open(store.clone()).unwrap();
        let (p, fac, other, hub) = (signer(1), signer(2), signer(3), signer(9));
        let key = |s: &SigningKey| PublicKey(s.verifying_key().to_bytes());
        let (g, h) = (
            GroupId::parse("dropin").unwrap(),
            GroupId::parse("steady").unwrap(),
        );
        let env = |s: &SigningKey, payload: String| SignedEnvelope::sign(s, Kind::Control, payload);
        let p_b64 = key(&p).to_b64();
        let appended = [
            // 1: the participant's own envelope (a flag, say).
            NewEntry::new(1, "escalation.raise", env(&p, "{}".into())).group(g.clone()),
            // 2: the facilitator mutes them: kept signed, subject pseudonymised.
            NewEntry::new(
                2,
                action::CONTROL_MUTE,
                env(&fac, format!(r#"{{"m":"{p_b64}"}}"#)),
            )
            .group(g.clone())
            .subject(key(&p)),
            // 3: a redaction in the group: its reason goes.
            NewEntry::new(
                3,
                action::CONTROL_REDACT,
                env(&fac, r#"{"reason":"quoted"}"#.into()),
            )
            .group(g.clone()),
            // 4: a redaction in another group, and 5: someone else: untouched.
            NewEntry::new(
                4,
                action::CONTROL_REDACT,
                env(&fac, r#"{"reason":"other"}"#.into()),
            )
            .group(h.clone()),
            NewEntry::new(5, action::CONTROL_MUTE, env(&fac, "{}".into()))
                .group(g.clone())
                .subject(key(&other)),
        ];
        for entry in appended {
            log.append(entry).unwrap();
        }
        let pseudonym = Pseudonym::of(&[7; 32], &key(&p));
        let out = log
            .rewrite_for_session_end(&g, &[(key(&p), pseudonym.clone())], &key(&hub))
            .unwrap();
        assert_eq!((out.subjects_replaced, out.envelopes_erased), (1, 2));
        let report = verify(&store).unwrap();
        assert_eq!((report.entries, report.erased_envelopes), (5, 2));
        assert_eq!(log.tail(), (5, report.last_hash));
        let chain: Vec<_> = entries(&store).map(Result::unwrap).collect();
        assert_eq!(chain[0].actor(), None);
        assert_eq!(
            chain[1].actor(),
            Some(key(&fac)),
            "the facilitator stays accountable"
        );
        assert_eq!(chain[1].subject_pseudonym.as_ref(), Some(&pseudonym));
        assert_eq!(chain[2].actor(), None, "the redaction's reason is gone");
        assert_eq!(chain[3].actor(), Some(key(&fac)));
        assert!(chain[3].envelopes[0].payload.contains("other"));
        assert_eq!(chain[4].subject, Some(key(&other)));
        assert!(store.trees_containing(b"quoted").unwrap().is_empty());
        // Nobody to forget: nothing changes.
        let before = store.digest().unwrap();
        let none = log.rewrite_for_session_end(&g, &[], &key(&hub)).unwrap();
        assert_eq!(none.entries_changed, 0);
        assert_eq!(store.digest().unwrap(), before);
    }
}
