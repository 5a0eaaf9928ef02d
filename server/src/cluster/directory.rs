//! The cluster's directory: what the sled store keeps in its trees `key_account`,
//! `key_counter`, `tokenhash_invite`, `groupid_group`, `groupid_key_member` and
//! `groupid_key_allowed`, in one replicated JetStream key-value bucket, with the
//! same methods and meaning as [`crate::store::Store`]'s of the same names.
//!
//! Keys (dot-separated, so a subject filter selects them; binary parts in
//! lowercase hex):
//! - `account.<key>` — the key's [`AccountRecord`] (roles, name, the groups it
//!   facilitates);
//! - `counter.<key>` — the last replay counter accepted from the key (a JSON
//!   number);
//! - `invite.<token hash>` — the [`InviteRecord`];
//! - `group.<group id>` — the [`GroupRecord`];
//! - `member.<group id>.<key>` — the [`MemberRecord`];
//! - `allowed.<group id>.<key>` — an empty value: the key was invited to the
//!   (virtual) group;
//! - `bootstrap.first_admin` — the hex of the token hash of the cluster's one
//!   first-admin invite (made by the first node to start while no admin exists);
//! - `secret.access_code`, `secret.hub_seed`, `secret.vapid`,
//!   `secret.escalation_reference` — the hub's secrets every node
//!   shares ([`HubSecret`], hex in a JSON string), made by the first node to
//!   start and copied into each node's store at start-up; never logged.
//!
//! Group ids are 1–32 characters of `a-z`, `0-9` and `-` ([`GroupId::parse`],
//! also on deserialising), so they are one subject token as they are: never a
//! `.`, `*`, `>` or whitespace. Each is checked again before it is used in a key.
//! `member.circle.*` never selects a member of `circle2`.
//!
//! Values are JSON, as the escalation queue stores its records. Every
//! read-modify-write (a grant, a name, a revoke, a counter, a redeem) reads the
//! key from the bucket stream's leader and writes by compare-and-set on the
//! revision it read (0: nothing ever written), reading again and re-applying the
//! change after a lost race (random back-off), so writers on different nodes
//! never lose each other's change. Where the sled store simply inserts
//! (`put_invite`, `put_group`, `put_member`, `allow_member`, `delete_member`) so
//! does this. Listings are an ordered consumer on the bucket's stream, the last
//! message of each selected subject, deleted keys skipped. A value that does not
//! decode is [`ClusterError::Corrupt`], never skipped or taken for an absent one.
//! Logs name the kind of key and its revision, never a key or a record.

use std::collections::BTreeMap;

use async_nats::jetstream;
use bytes::Bytes;
use peerhub_protocol::frame::Role;
use peerhub_protocol::{GroupId, PublicKey};
use serde::{de::DeserializeOwned, Serialize};

use super::escalations::backoff;
use super::{
    check_token, from_json, is_removed, is_sequence_conflict, last_message, open_erasable_bucket,
    publish_acked, put_expecting, retry_unavailable, revisions, to_json, ClusterError, Nats, Put,
    READ_DEADLINE,
};
use crate::error::ServerError;
use crate::store::records::{AccountRecord, GroupRecord, InviteRecord, MemberRecord};
use crate::store::{HubSecret, RedeemRefusal, Store, StoreError};

/// How many times a read-modify-write reads again after losing a race before
/// giving up with [`ClusterError::Moved`].
const RETRIES: usize = 64;

/// Where the directory is kept.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// The bucket's name.
    pub bucket: String,
    /// Copies of the bucket (R3 by default; 1 for a one-server NATS).
    pub replicas: usize,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            bucket: "peerhub_directory".to_string(),
            replicas: 3,
        }
    }
}

/// The directory bucket.
#[derive(Debug, Clone)]
pub struct Directory {
    js: jetstream::Context,
    /// The bucket's stream: reads go to its leader (a replica may lag).
    stream: jetstream::stream::Stream,
    bucket: String,
    /// This node's group logs, for the operator's requests that read a person's
    /// groups through the directory's handle (export: `crate::export`).
    logs: Option<super::log::GroupLogs>,
}

/// What a read-modify-write's change decided.
enum Step<T, R> {
    /// Write `T` (by compare-and-set), then answer `R`.
    Write(T, R),
    /// Write nothing; answer `R`.
    Keep(R),
}

/// One key of a listing: the rest of its key after the listed prefix, its value
/// and its revision.
type Listed = (String, Bytes, u64);

impl Directory {
    /// Opens the bucket, creating it (file storage, `config.replicas` copies,
    /// [`HISTORY`] values kept per key, made to allow the message delete that
    /// overwrites: an erasure's account part, [`Self::erase_account`]) if it
    /// does not exist yet.
    pub async fn open(nats: &Nats, config: &DirectoryConfig) -> Result<Self, ClusterError> {
        let stream =
            open_erasable_bucket(nats.jetstream(), &config.bucket, config.replicas, HISTORY)
                .await?;
        Ok(Self {
            js: nats.jetstream().clone(),
            stream,
            bucket: config.bucket.clone(),
            logs: None,
        })
    }

    /// The same directory, with this node's group logs at hand for operator
    /// requests ([`Self::group_logs`]).
    pub fn with_group_logs(mut self, logs: super::log::GroupLogs) -> Self {
        self.logs = Some(logs);
        self
    }

    /// This node's group logs, when the node attached them.
    pub fn group_logs(&self) -> Option<&super::log::GroupLogs> {
        self.logs.as_ref()
    }

    /// The bucket's stream (for the mirror, `super::mirror`).
    pub(crate) fn stream(&self) -> &jetstream::stream::Stream {
        &self.stream
    }

    /// The NATS client behind the bucket (for the mirror's inbox).
    pub(crate) fn stream_client(&self) -> async_nats::Client {
        self.js.client()
    }

    /// The bucket stream's last sequence, asked of its leader now.
    pub(crate) async fn stream_last_sequence(&self) -> Result<u64, ClusterError> {
        let name = &self.stream.cached_info().config.name;
        let info = super::stream_info(&self.js, name, "directory stream info").await?;
        Ok(info.state.last_sequence)
    }

    /// The bucket's name.
    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    // ---- accounts and roles ----

    /// The account of a key, if it holds any role.
    pub async fn account(&self, key: &PublicKey) -> Result<Option<AccountRecord>, ClusterError> {
        self.get(&account_key(key), "account").await
    }

    /// Roles a key holds (empty for a participant).
    pub async fn roles(&self, key: &PublicKey) -> Result<Vec<Role>, ClusterError> {
        Ok(self
            .account(key)
            .await?
            .map(|a| a.roles)
            .unwrap_or_default())
    }

    /// Grants `role` to `key` (idempotent); returns the account after the grant.
    pub async fn grant_role(
        &self,
        key: &PublicKey,
        role: Role,
        now_ms: u64,
    ) -> Result<AccountRecord, ClusterError> {
        Ok(self.grant_role_at(key, role, now_ms).await?.0)
    }

    /// [`Self::grant_role`], with the revision it wrote (`None`: the key held
    /// the role already), for the node that applies its own write to its store.
    pub async fn grant_role_at(
        &self,
        key: &PublicKey,
        role: Role,
        now_ms: u64,
    ) -> Result<(AccountRecord, Option<u64>), ClusterError> {
        let (account, written) = self
            .modify_at(&account_key(key), "account", |current| {
                let mut account = current.unwrap_or_else(|| AccountRecord::new(now_ms));
                if account.grant_role(role) {
                    Step::Write(account.clone(), account)
                } else {
                    Step::Keep(account)
                }
            })
            .await?;
        Ok((account, written.map(|(_, revision)| revision)))
    }

    /// Sets the staff name of a key that holds a role (the name given at redeem).
    pub async fn set_account_name(&self, key: &PublicKey, name: &str) -> Result<(), ClusterError> {
        self.set_account_name_at(key, name).await.map(|_| ())
    }

    /// [`Self::set_account_name`], with the account and revision it wrote
    /// (`None`: nothing to change).
    pub async fn set_account_name_at(
        &self,
        key: &PublicKey,
        name: &str,
    ) -> Result<Option<(AccountRecord, u64)>, ClusterError> {
        let ((), written) = self
            .modify_at(
                &account_key(key),
                "account",
                |current: Option<AccountRecord>| match current {
                    Some(mut account) if account.name.as_deref() != Some(name) => {
                        account.name = Some(name.to_string());
                        Step::Write(account, ())
                    }
                    _ => Step::Keep(()),
                },
            )
            .await?;
        Ok(written)
    }

    /// Every key holding a role, with its account, by key.
    pub async fn staff_accounts(&self) -> Result<Vec<(PublicKey, AccountRecord)>, ClusterError> {
        Ok(self
            .accounts()
            .await?
            .into_iter()
            .filter(|(_, account)| !account.roles.is_empty())
            .collect())
    }

    /// Whether `key` is a facilitator of `group` (holds a grant for it).
    pub async fn facilitates(
        &self,
        key: &PublicKey,
        group: &GroupId,
    ) -> Result<bool, ClusterError> {
        Ok(self
            .account(key)
            .await?
            .is_some_and(|a| a.roles.contains(&Role::Facilitator) && a.facilitates.contains(group)))
    }

    /// Grants `key` the facilitator role and standing in each of `groups`
    /// (idempotent); returns the account after the grant.
    pub async fn grant_facilitator(
        &self,
        key: &PublicKey,
        groups: &[GroupId],
        now_ms: u64,
    ) -> Result<AccountRecord, ClusterError> {
        Ok(self.grant_facilitator_at(key, groups, now_ms).await?.0)
    }

    /// [`Self::grant_facilitator`], with the revision it wrote (`None`: the
    /// key held every grant already).
    pub async fn grant_facilitator_at(
        &self,
        key: &PublicKey,
        groups: &[GroupId],
        now_ms: u64,
    ) -> Result<(AccountRecord, Option<u64>), ClusterError> {
        let (account, written) = self
            .modify_at(&account_key(key), "account", |current| {
                let mut account = current.unwrap_or_else(|| AccountRecord::new(now_ms));
                if account.grant_facilitator(groups) {
                    Step::Write(account.clone(), account)
                } else {
                    Step::Keep(account)
                }
            })
            .await?;
        Ok((account, written.map(|(_, revision)| revision)))
    }

    /// Takes `key`'s facilitator standing in `group` away (the role stays, for
    /// its other groups); returns whether it held one.
    pub async fn revoke_facilitator(
        &self,
        key: &PublicKey,
        group: &GroupId,
    ) -> Result<bool, ClusterError> {
        Ok(self.revoke_facilitator_at(key, group).await?.is_some())
    }

    /// [`Self::revoke_facilitator`]: the account and revision it wrote, `None`
    /// when the key held no grant for `group` (nothing written).
    pub async fn revoke_facilitator_at(
        &self,
        key: &PublicKey,
        group: &GroupId,
    ) -> Result<Option<(AccountRecord, u64)>, ClusterError> {
        let ((), written) = self
            .modify_at(
                &account_key(key),
                "account",
                |current: Option<AccountRecord>| {
                    let Some(mut account) = current else {
                        return Step::Keep(());
                    };
                    if account.revoke_facilitator(group) {
                        Step::Write(account, ())
                    } else {
                        Step::Keep(())
                    }
                },
            )
            .await?;
        Ok(written)
    }

    /// Every account, by key (operator jobs and start-up migrations only).
    pub async fn accounts(&self) -> Result<Vec<(PublicKey, AccountRecord)>, ClusterError> {
        let mut out = Vec::new();
        for (tail, value, _) in self.list(ACCOUNT).await? {
            let key = parse_key(&tail, "account key")?;
            out.push((key, from_json("account", &value)?));
        }
        Ok(out)
    }

    /// Whether any key holds the admin role.
    pub async fn has_admin(&self) -> Result<bool, ClusterError> {
        Ok(self
            .accounts()
            .await?
            .iter()
            .any(|(_, account)| account.roles.contains(&Role::Admin)))
    }

    // ---- replay counters ----

    /// The last counter accepted from `key` (0 if none).
    pub async fn counter(&self, key: &PublicKey) -> Result<u64, ClusterError> {
        Ok(self
            .get::<u64>(&counter_key(key), "replay counter")
            .await?
            .unwrap_or(0))
    }

    /// Raises the stored counter of `key` to at least `counter`; writers on any
    /// node never lower it.
    pub async fn raise_counter(&self, key: &PublicKey, counter: u64) -> Result<(), ClusterError> {
        self.modify(
            &counter_key(key),
            "replay counter",
            |current: Option<u64>| match current {
                Some(stored) if stored >= counter => Step::Keep(()),
                _ => Step::Write(counter, ()),
            },
        )
        .await
    }

    /// Accepts `counter` from `key` if it is above the last one accepted, and
    /// stores it: `true` then; `false` (nothing written) if it is not. Of nodes
    /// presenting the same counter at once exactly one gets `true`. An
    /// [`ClusterError::Unavailable`] may or may not have stored it: the command
    /// is refused, and a retry with the same counter may then be refused as a
    /// replay (the client signs again with a new counter).
    pub async fn accept_counter(
        &self,
        key: &PublicKey,
        counter: u64,
    ) -> Result<bool, ClusterError> {
        Ok(self.accept_counter_above(key, counter).await?.is_ok())
    }

    /// [`Self::accept_counter`], saying why it refused: `Err(last)`, the counter
    /// stored, which `counter` is not above.
    pub async fn accept_counter_above(
        &self,
        key: &PublicKey,
        counter: u64,
    ) -> Result<Result<(), u64>, ClusterError> {
        self.modify(
            &counter_key(key),
            "replay counter",
            |current: Option<u64>| match current {
                Some(stored) if stored >= counter => Step::Keep(Err(stored)),
                _ => Step::Write(counter, Ok(())),
            },
        )
        .await
    }

    // ---- invites ----

    /// Stores an invite under the hash of its token.
    pub async fn put_invite(
        &self,
        token_hash: [u8; 32],
        invite: &InviteRecord,
    ) -> Result<(), ClusterError> {
        self.insert(&invite_key(&token_hash), to_json(invite), "invite write")
            .await
    }

    /// Removes unredeemed bootstrap invites (a new one is made at each start).
    /// Each removal names the revision listed, so an invite redeemed meanwhile on
    /// another node is read again and kept.
    pub async fn remove_unused_bootstrap_invites(&self) -> Result<usize, ClusterError> {
        let mut removed = 0;
        for (tail, value, revision) in self.list(INVITE).await? {
            let key = format!("{INVITE}{tail}");
            let mut current = (Some(value), revision);
            let mut attempt = 0;
            while let (Some(bytes), revision) = &current {
                let invite: InviteRecord = from_json("invite", bytes)?;
                if !(invite.bootstrap && invite.used_by.is_none()) {
                    break;
                }
                match self.remove_expecting(&key, *revision).await {
                    Ok(()) => {
                        removed += 1;
                        break;
                    }
                    Err(Put::Conflict) if attempt + 1 < RETRIES => {
                        attempt += 1;
                        backoff(attempt).await;
                        current = self.read(&key, "invite read").await?;
                    }
                    Err(Put::Conflict) => return Err(ClusterError::Moved { key }),
                    Err(Put::Failed(error)) => {
                        return Err(ClusterError::unavailable("invite removal", error))
                    }
                }
            }
        }
        tracing::debug!(removed, "unused bootstrap invites removed");
        Ok(removed)
    }

    /// Marks an invite used by `key`, exactly once however many nodes redeem it at
    /// once. The key that redeemed it asking again gets the same answer, so a
    /// redeem answered [`ClusterError::Unavailable`] (stored or not) is settled by
    /// asking again.
    pub async fn redeem_invite(
        &self,
        token_hash: [u8; 32],
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<Result<InviteRecord, RedeemRefusal>, ClusterError> {
        Ok(self
            .redeem_invite_once(token_hash, key, now_ms)
            .await?
            .map(|(invite, _)| invite))
    }

    /// [`Self::redeem_invite`], saying whether this call marked it used
    /// ([`Redemption::First`]) or found it used by `key` already
    /// ([`Redemption::Again`]: the audit entry was written the first time).
    pub async fn redeem_invite_once(
        &self,
        token_hash: [u8; 32],
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<Result<(InviteRecord, Redemption), RedeemRefusal>, ClusterError> {
        self.modify(
            &invite_key(&token_hash),
            "invite",
            |current: Option<InviteRecord>| {
                let Some(invite) = current else {
                    return Step::Keep(Err(RedeemRefusal::Unknown));
                };
                if invite.used_by == Some(*key) {
                    // The same key asking again (its first answer was lost).
                    return Step::Keep(Ok((invite, Redemption::Again)));
                }
                if invite.used_by.is_some() {
                    return Step::Keep(Err(RedeemRefusal::Used));
                }
                if now_ms > invite.expires_ms {
                    return Step::Keep(Err(RedeemRefusal::Expired));
                }
                let used = InviteRecord {
                    used_by: Some(*key),
                    used_ms: Some(now_ms),
                    ..invite
                };
                Step::Write(used.clone(), Ok((used, Redemption::First)))
            },
        )
        .await
    }

    // ---- groups ----

    /// Creates a group; `false` if the id is taken (by anyone, on any node).
    pub async fn create_group(&self, group: &GroupRecord) -> Result<bool, ClusterError> {
        Ok(self.create_group_at(group).await?.is_some())
    }

    /// [`Self::create_group`]: the revision written, `None` if the id is taken.
    pub async fn create_group_at(&self, group: &GroupRecord) -> Result<Option<u64>, ClusterError> {
        let key = group_key(&group.id)?;
        let value = to_json(group);
        // Revision 0 first: the key was never written. A key that was deleted
        // has a revision of its own (its delete marker), read on a conflict.
        let mut revision = 0;
        for attempt in 0..RETRIES {
            if attempt > 0 {
                backoff(attempt).await;
            }
            match self.put(&key, value.clone(), revision).await {
                Ok(written) => {
                    tracing::debug!(revision = written, "group created");
                    return Ok(Some(written));
                }
                Err(Put::Conflict) => match self.read(&key, "group read").await? {
                    (Some(_), _) => return Ok(None),
                    (None, deleted) => revision = deleted,
                },
                Err(Put::Failed(error)) => {
                    return Err(ClusterError::unavailable("group create", error))
                }
            }
        }
        Err(ClusterError::Moved { key })
    }

    /// Replaces an existing group's record (settings an operator changed).
    pub async fn put_group(&self, group: &GroupRecord) -> Result<(), ClusterError> {
        self.put_group_at(group).await.map(|_| ())
    }

    /// [`Self::put_group`], with the revision written.
    pub async fn put_group_at(&self, group: &GroupRecord) -> Result<u64, ClusterError> {
        let value = to_json(group);
        publish_acked(&self.js, &self.subject(&group_key(&group.id)?), || {
            jetstream::message::PublishMessage::build().payload(value.clone())
        })
        .await
        .map_err(|error| ClusterError::unavailable("group write", error))
    }

    /// A group by id.
    pub async fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>, ClusterError> {
        self.get(&group_key(id)?, "group").await
    }

    /// Every group, by id.
    pub async fn groups(&self) -> Result<Vec<GroupRecord>, ClusterError> {
        self.list(GROUP)
            .await?
            .iter()
            .map(|(_, value, _)| from_json("group", value))
            .collect()
    }

    // ---- members ----

    /// Stores (or replaces) a member record.
    pub async fn put_member(
        &self,
        group: &GroupId,
        member: &MemberRecord,
    ) -> Result<(), ClusterError> {
        self.insert(
            &member_key(MEMBER, group, &member.key)?,
            to_json(member),
            "member write",
        )
        .await
    }

    /// Stores (or refreshes) a staff key's Web Push subscription, so that
    /// whichever node leads the router can send to it (mirrored into every
    /// node's store).
    pub async fn put_push_subscription(
        &self,
        key: &PublicKey,
        subscription: &crate::store::records::PushSubscriptionRecord,
    ) -> Result<(), ClusterError> {
        self.insert(
            &push_key(key, &subscription.endpoint),
            to_json(subscription),
            "push subscription write",
        )
        .await
    }

    /// Removes a staff key's Web Push subscription.
    pub async fn remove_push_subscription(
        &self,
        key: &PublicKey,
        endpoint: &str,
    ) -> Result<(), ClusterError> {
        let subject = self.subject(&push_key(key, endpoint));
        publish_acked(&self.js, &subject, || {
            jetstream::message::PublishMessage::build()
                .payload(Bytes::new())
                .header("KV-Operation", "DEL")
        })
        .await
        .map_err(|error| ClusterError::unavailable("push subscription delete", error))?;
        self.erase_replaced(&push_key(key, endpoint)).await;
        Ok(())
    }

    /// Forgets a member record (a knock on the waiting room that expired or was
    /// cleared).
    pub async fn delete_member(
        &self,
        group: &GroupId,
        key: &PublicKey,
    ) -> Result<(), ClusterError> {
        let subject = self.subject(&member_key(MEMBER, group, key)?);
        publish_acked(&self.js, &subject, || {
            jetstream::message::PublishMessage::build()
                .payload(Bytes::new())
                .header("KV-Operation", "DEL")
        })
        .await
        .map_err(|error| ClusterError::unavailable("member delete", error))?;
        self.erase_replaced(&member_key(MEMBER, group, key)?).await;
        Ok(())
    }

    /// One member of a group (a point read).
    pub async fn member_of(
        &self,
        group: &GroupId,
        key: &PublicKey,
    ) -> Result<Option<MemberRecord>, ClusterError> {
        self.get(&member_key(MEMBER, group, key)?, "member").await
    }

    /// Every member of a group, by key.
    pub async fn members(&self, group: &GroupId) -> Result<Vec<MemberRecord>, ClusterError> {
        check_token(group.as_str())?;
        self.list(&format!("{MEMBER}{group}."))
            .await?
            .iter()
            .map(|(_, value, _)| from_json("member", value))
            .collect()
    }

    /// Marks `key` as invited to a virtual group.
    pub async fn allow_member(&self, group: &GroupId, key: &PublicKey) -> Result<(), ClusterError> {
        self.insert(
            &member_key(ALLOWED, group, key)?,
            Bytes::new(),
            "allow-list write",
        )
        .await
    }

    /// Whether `key` was invited to a virtual group.
    pub async fn is_allowed(&self, group: &GroupId, key: &PublicKey) -> Result<bool, ClusterError> {
        let (value, _) = self
            .read(&member_key(ALLOWED, group, key)?, "allow-list read")
            .await?;
        Ok(value.is_some())
    }

    // ---- start-up ----

    /// The cluster's one first-admin invite, decided at a node's start: none
    /// while an admin exists (an unused one left over is removed); none while
    /// one made earlier, by any node, is unused and unexpired (its link was
    /// printed by the node that made it); otherwise `invite` (its token's hash
    /// and record) is stored and marked as the cluster's by compare-and-set on
    /// `bootstrap.first_admin`, so of nodes starting at once one makes it. A
    /// node that loses the race removes its own invite, whose token it never
    /// shows.
    pub async fn first_admin_invite(
        &self,
        token_hash: [u8; 32],
        invite: &InviteRecord,
        now_ms: u64,
    ) -> Result<FirstAdmin, ClusterError> {
        for attempt in 0..RETRIES {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let (marked, revision) = self.read(FIRST_ADMIN, "first-admin read").await?;
            let marked: Option<String> = marked
                .map(|bytes| from_json("first-admin mark", &bytes))
                .transpose()?;
            let unused = match &marked {
                Some(hash) => {
                    let mut marked_hash = [0u8; 32];
                    hex::decode_to_slice(hash, &mut marked_hash).map_err(|error| {
                        ClusterError::Corrupt {
                            what: "first-admin mark",
                            reason: error.to_string(),
                        }
                    })?;
                    let key = invite_key(&marked_hash);
                    match self.read(&key, "invite read").await? {
                        (Some(bytes), invite_revision) => {
                            let old: InviteRecord = from_json("invite", &bytes)?;
                            (old.used_by.is_none() && now_ms <= old.expires_ms).then_some((
                                key,
                                invite_revision,
                                old.expires_ms,
                            ))
                        }
                        (None, _) => None,
                    }
                }
                None => None,
            };
            if self.has_admin().await? {
                if let Some((key, invite_revision, _)) = unused {
                    // Redeemed meanwhile: kept (the delete expects the revision read).
                    let _ = self.remove_expecting(&key, invite_revision).await;
                }
                return Ok(FirstAdmin::NotNeeded);
            }
            if let Some((_, _, expires_ms)) = unused {
                return Ok(FirstAdmin::Pending { expires_ms });
            }
            let key = invite_key(&token_hash);
            self.insert(&key, to_json(invite), "invite write").await?;
            match self
                .put(FIRST_ADMIN, to_json(&hex::encode(token_hash)), revision)
                .await
            {
                Ok(_) => return Ok(FirstAdmin::Made),
                Err(Put::Conflict) => {
                    // Another node marked its own: ours is never shown, so it goes.
                    let (_, ours) = self.read(&key, "invite read").await?;
                    let _ = self.remove_expecting(&key, ours).await;
                }
                Err(Put::Failed(error)) => {
                    return Err(ClusterError::unavailable("first-admin mark", error))
                }
            }
        }
        Err(ClusterError::Moved {
            key: FIRST_ADMIN.to_string(),
        })
    }

    // ---- the hub's secrets ----

    /// The cluster's copy of a hub secret: the one stored under
    /// `secret.<name>` if any node made it, otherwise `candidate`, stored now by
    /// compare-and-set (of nodes starting at once, one candidate wins and every
    /// node gets it). Never logged.
    pub async fn hub_secret(
        &self,
        which: HubSecret,
        candidate: &[u8; 32],
    ) -> Result<[u8; 32], ClusterError> {
        let key = format!("{SECRET}{}", secret_name(which));
        let decode = |bytes: &[u8]| -> Result<[u8; 32], ClusterError> {
            let text: String = from_json("hub secret", bytes)?;
            let mut secret = [0u8; 32];
            hex::decode_to_slice(text, &mut secret).map_err(|error| ClusterError::Corrupt {
                what: "hub secret",
                reason: error.to_string(),
            })?;
            Ok(secret)
        };
        let mut revision = 0;
        for attempt in 0..RETRIES {
            if attempt > 0 {
                backoff(attempt).await;
            }
            match self
                .put(&key, to_json(&hex::encode(candidate)), revision)
                .await
            {
                Ok(_) => return Ok(*candidate),
                Err(Put::Conflict) => match self.read(&key, "hub secret read").await? {
                    (Some(bytes), _) => return decode(&bytes),
                    (None, deleted) => revision = deleted,
                },
                Err(Put::Failed(error)) => {
                    return Err(ClusterError::unavailable("hub secret write", error))
                }
            }
        }
        Err(ClusterError::Moved { key })
    }

    // ---- erasure ----

    /// The account part of erasing `key` (docs/CLUSTER.md §8, "Erase"), as one
    /// node's erasure removes it from its store: every stored revision of its
    /// `account.`, `counter.`, `allowed.<group>.` and `push.` keys and of the
    /// invites it redeemed (`invite.<hash>` whose `used_by` is the key) is
    /// erased with the message delete that overwrites ([`revisions`]), not a
    /// key-value delete, whose marker would leave the values' bytes in the
    /// stream's files. A `member.<group>.` record the directory holds keeps its
    /// standing: its revisions are erased and `erased` of its last value
    /// written in their place. Erasing a value makes no watch event: each node
    /// learns of it from the erasure's record ([`Self::put_erasure`]). Running
    /// it again finds nothing more.
    pub async fn erase_account(
        &self,
        key: &PublicKey,
        erased: impl Fn(MemberRecord) -> MemberRecord,
    ) -> Result<AccountErased, ClusterError> {
        let hex_key = hex::encode(key.0);
        let client = self.js.client();
        let mut done = AccountErased {
            account: self
                .read(&account_key(key), "directory read")
                .await?
                .0
                .is_some(),
            counter: self
                .read(&counter_key(key), "directory read")
                .await?
                .0
                .is_some(),
            ..Default::default()
        };
        for (filter, count) in [
            (account_key(key), None),
            (counter_key(key), None),
            (format!("{ALLOWED}*.{hex_key}"), Some(&mut done.allowed)),
            (format!("{PUSH}{hex_key}.*"), Some(&mut done.push)),
        ] {
            let subject = self.subject(&filter);
            let found = revisions::sequences(&self.stream, &client, &subject).await?;
            if let Some(count) = count {
                *count = found.len();
            }
            let seqs: Vec<u64> = found.into_values().flatten().collect();
            done.revisions += revisions::erase_messages(&self.stream, &seqs).await?;
        }
        for (tail, value, _) in self.list(INVITE).await? {
            let invite: InviteRecord = from_json("invite", &value)?;
            if invite.used_by == Some(*key) {
                let subject = self.subject(&format!("{INVITE}{tail}"));
                done.revisions +=
                    revisions::erase_key(&self.stream, &client, &subject, false).await?;
                done.invites += 1;
            }
        }
        let members = self.subject(&format!("{MEMBER}*.{hex_key}"));
        for subject in revisions::sequences(&self.stream, &client, &members)
            .await?
            .into_keys()
        {
            let Some(key_name) = subject.strip_prefix(&self.subject("")) else {
                continue;
            };
            let key_name = key_name.to_string();
            let (last, _) = self.read(&key_name, "member read").await?;
            let last: Option<MemberRecord> =
                last.map(|bytes| from_json("member", &bytes)).transpose()?;
            done.revisions += revisions::erase_key(&self.stream, &client, &subject, false).await?;
            if let Some(member) = last {
                self.insert(&key_name, to_json(&erased(member)), "member write")
                    .await?;
                done.members += 1;
            }
        }
        tracing::info!(
            revisions = done.revisions,
            invites = done.invites,
            allowed = done.allowed,
            "an erasure's account part ran in the directory"
        );
        Ok(done)
    }

    /// Records an erasure for every node (`erasure.<pseudonym>`): each node's
    /// mirror applies it to its own store (`super::node_erasure`), now or when
    /// it next starts. Names the key's pseudonym only, never the key. Returns
    /// the record's revision.
    pub async fn put_erasure(&self, record: &ErasureRecord) -> Result<u64, ClusterError> {
        check_token(&record.pseudonym)?;
        let value = to_json(record);
        publish_acked(
            &self.js,
            &self.subject(&format!("{ERASURE}{}", record.pseudonym)),
            || jetstream::message::PublishMessage::build().payload(value.clone()),
        )
        .await
        .map_err(|error| ClusterError::unavailable("erasure record write", error))
    }

    /// Records an ephemeral session's end for every node
    /// (`session_end.<group>.<at_ms>-<n>`): each node's mirror pseudonymises
    /// the participants in its own audit chain (`super::session_end`). Names
    /// pseudonyms only, never a key. Returns the record's revision.
    pub async fn put_session_end(&self, record: &SessionEndRecord) -> Result<u64, ClusterError> {
        static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let group = record.group.as_str();
        check_token(group)?;
        let value = to_json(record);
        publish_acked(
            &self.js,
            &self.subject(&format!("{SESSION_END}{group}.{}-{n}", record.at_ms)),
            || jetstream::message::PublishMessage::build().payload(value.clone()),
        )
        .await
        .map_err(|error| ClusterError::unavailable("session end record write", error))
    }

    /// Every erasure's record, with its revision.
    pub async fn erasures(&self) -> Result<Vec<(ErasureRecord, u64)>, ClusterError> {
        self.list(ERASURE)
            .await?
            .into_iter()
            .map(|(_, value, revision)| Ok((from_json("erasure record", &value)?, revision)))
            .collect()
    }

    // ---- the bucket ----

    fn subject(&self, key: &str) -> String {
        format!("$KV.{}.{key}", self.bucket)
    }

    /// The value of `key` (`None`: never written, or deleted) and the revision to
    /// expect when writing it (0: never written; a deleted key's is its delete
    /// marker's), from the stream's leader.
    async fn read(
        &self,
        key: &str,
        op: &'static str,
    ) -> Result<(Option<Bytes>, u64), ClusterError> {
        Ok(
            match last_message(&self.stream, &self.subject(key), op).await? {
                None => (None, 0),
                Some(message) if is_removed(&message.headers) => (None, message.sequence),
                Some(message) => (Some(message.payload), message.sequence),
            },
        )
    }

    /// The decoded value of `key`, if any.
    async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, ClusterError> {
        self.read(key, "directory read")
            .await?
            .0
            .map(|bytes| from_json(what, &bytes))
            .transpose()
    }

    /// Reads `key`, lets `change` decide from its value, and writes what it
    /// decides by compare-and-set on the revision read; on a lost race reads
    /// again (random back-off) and asks `change` again.
    async fn modify<T, R, F>(
        &self,
        key: &str,
        what: &'static str,
        change: F,
    ) -> Result<R, ClusterError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Step<T, R>,
    {
        Ok(self.modify_at(key, what, change).await?.0)
    }

    /// [`Self::modify`], with what it wrote and the revision of the write
    /// (`None`: `change` kept the value).
    async fn modify_at<T, R, F>(
        &self,
        key: &str,
        what: &'static str,
        mut change: F,
    ) -> Result<(R, Option<(T, u64)>), ClusterError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Step<T, R>,
    {
        for attempt in 0..RETRIES {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let (bytes, revision) = self.read(key, "directory read").await?;
            let current = bytes.map(|bytes| from_json(what, &bytes)).transpose()?;
            let (next, answer) = match change(current) {
                Step::Keep(answer) => return Ok((answer, None)),
                Step::Write(next, answer) => (next, answer),
            };
            match self.put(key, to_json(&next), revision).await {
                Ok(written) => {
                    tracing::debug!(what, revision = written, "directory written");
                    self.erase_replaced(key).await;
                    return Ok((answer, Some((next, written))));
                }
                Err(Put::Conflict) => continue,
                Err(Put::Failed(error)) => {
                    return Err(ClusterError::unavailable("directory write", error))
                }
            }
        }
        Err(ClusterError::Moved {
            key: key.to_string(),
        })
    }

    /// Writes `value` under `key` if the key's last revision is `revision`.
    async fn put(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, Put> {
        put_expecting(&self.js, self.subject(key), value, revision).await
    }

    /// Writes `value` under `key` whatever is there (where sled inserts).
    async fn insert(&self, key: &str, value: Bytes, op: &'static str) -> Result<(), ClusterError> {
        publish_acked(&self.js, &self.subject(key), || {
            jetstream::message::PublishMessage::build().payload(value.clone())
        })
        .await
        .map_err(|error| ClusterError::unavailable(op, error))?;
        self.erase_replaced(key).await;
        Ok(())
    }

    /// After a write of a key that can name a person (an account with its
    /// staff name, a push subscription, an invite, a member record): the
    /// values it replaced are erased with the overwriting message delete. The
    /// bucket keeps [`HISTORY`] values per key so that the replaced one is
    /// still there to be erased; with one, the write would drop it unwritten,
    /// its bytes left in the stream's files. Replay counters, written on every
    /// command, are not (see docs/CLUSTER.md §8, "Erase"). Best effort: the
    /// write is done; a failure is logged, and the next write of the key, or
    /// an erasure, erases what is left.
    async fn erase_replaced(&self, key: &str) {
        if ![ACCOUNT, PUSH, INVITE, MEMBER]
            .iter()
            .any(|prefix| key.starts_with(prefix))
        {
            return;
        }
        let subject = self.subject(key);
        if let Err(error) =
            revisions::erase_key(&self.stream, &self.js.client(), &subject, true).await
        {
            tracing::warn!(%error, "a replaced directory value was not erased yet");
        }
    }

    /// Deletes `key` if its last revision is still `revision`.
    async fn remove_expecting(&self, key: &str, revision: u64) -> Result<(), Put> {
        let outcome = publish_acked(&self.js, &self.subject(key), || {
            jetstream::message::PublishMessage::build()
                .payload(Bytes::new())
                .header("KV-Operation", "DEL")
                .expected_last_subject_sequence(revision)
        })
        .await;
        match outcome {
            Ok(_) => {
                self.erase_replaced(key).await;
                Ok(())
            }
            Err(error) if is_sequence_conflict(&error) => Err(Put::Conflict),
            Err(error) => Err(Put::Failed(error)),
        }
    }

    /// The keys under `prefix` (one more token after it), sorted by key, with
    /// their values and revisions; deleted keys left out. Started again for up
    /// to [`READ_DEADLINE`] when it stalls or fails on the way.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, ClusterError> {
        retry_unavailable(READ_DEADLINE, || self.list_once(prefix)).await
    }

    async fn list_once(&self, prefix: &str) -> Result<Vec<Listed>, ClusterError> {
        const OP: &str = "directory listing";
        let full = self.subject(prefix);
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: format!("{full}*"),
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|error| ClusterError::unavailable(OP, error))?;
        let mut found = BTreeMap::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|error| ClusterError::unavailable(OP, error))?;
        loop {
            let (message, revision, pending) = super::next_message(&mut messages, OP).await?;
            if !message.headers.as_ref().is_some_and(is_removed) {
                let tail = message
                    .subject
                    .strip_prefix(full.as_str())
                    .ok_or_else(|| ClusterError::Corrupt {
                        what: "directory key",
                        reason: "a key outside the listed prefix".to_string(),
                    })?
                    .to_string();
                found.insert(tail, (message.payload.clone(), revision));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(found
            .into_iter()
            .map(|(tail, (value, revision))| (tail, value, revision))
            .collect())
    }
}

/// Applies this node's own directory write to its store at once, unless the
/// mirror has already applied that revision (and perhaps a later one of the same
/// key, which `write` must not overwrite). The mirror applies the revision
/// again later, which writes the same record: the store converges on the
/// bucket either way. Left open: the mirror passing `revision` and applying a
/// later write of the same key in the instant between the check and `write`.
pub fn apply_own_write(
    store: &Store,
    revision: u64,
    write: impl FnOnce() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if store.mirror_applied(super::mirror::MIRROR)? < revision {
        write()?;
    }
    Ok(())
}

/// [`apply_own_write`] of an account this node wrote to the directory.
pub fn apply_own_account(
    store: &Store,
    key: &PublicKey,
    account: &AccountRecord,
    revision: u64,
) -> Result<(), StoreError> {
    apply_own_write(store, revision, || store.put_account(key, account))
}

/// What a client is told when the directory cannot answer: NATS unreachable,
/// no quorum, or a race lost too often — the request may be sent again (signed
/// anew) in a moment. An unreadable value is an internal fault. Logged by kind,
/// never with a key (a [`ClusterError::Moved`] names one).
impl From<ClusterError> for ServerError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Unavailable { op, reason } => {
                tracing::warn!(op, %reason, "the cluster's directory did not answer");
                Self::RateLimited {
                    retry_after_ms: 1000,
                    what:
                        "the cluster's directory cannot be reached just now, so nothing was decided",
                }
            }
            ClusterError::Moved { .. } => {
                tracing::warn!("a directory write lost its race too many times");
                Self::RateLimited {
                    retry_after_ms: 1000,
                    what: "the cluster's directory is busy with the same record, so nothing was decided",
                }
            }
            ClusterError::Corrupt { what, .. } => {
                tracing::error!(what, "an unreadable directory value");
                Self::Internal("an unreadable record in the cluster's directory")
            }
            ClusterError::Store(error) => Self::from(error),
            // Connecting, setting up, leases, fences, names: none names a person.
            other => {
                tracing::error!(error = %other, "the cluster's directory failed");
                Self::Internal("the cluster's directory failed")
            }
        }
    }
}

/// Values the directory bucket keeps per key: the value and, for the moment
/// between writing a new one and erasing it, the one it replaces
/// (`Directory::erase_replaced`).
pub const HISTORY: i64 = 2;

/// What [`Directory::erase_account`] found and erased.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountErased {
    /// Whether the key had an account (roles, staff name).
    pub account: bool,
    /// Whether it had a replay counter.
    pub counter: bool,
    /// Its places on virtual groups' allow-lists.
    pub allowed: usize,
    /// Invites it redeemed.
    pub invites: usize,
    /// Its Web Push subscriptions.
    pub push: usize,
    /// Member records the directory held, kept with their standing, erased.
    pub members: usize,
    /// Stored revisions erased with the overwriting message delete.
    pub revisions: u64,
}

/// An erasure's record in the directory (`erasure.<pseudonym>`): each node finds
/// the key from the pseudonym by computing the pseudonym of the keys it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasureRecord {
    /// The key's audit pseudonym (`erased-` and 16 hex digits).
    pub pseudonym: String,
    /// When the erasure was asked (ms since the epoch, the asking node's clock).
    pub at_ms: u64,
}

/// An ephemeral group's session ended (`session_end.<group>.<at_ms>-<n>`): the
/// participants' audit pseudonyms, which every node's mirror pseudonymises in
/// its own audit chain (`super::session_end`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionEndRecord {
    /// The group.
    pub group: GroupId,
    /// The participants' audit pseudonyms (`erased-` and 16 hex digits).
    pub pseudonyms: Vec<String>,
    /// When the session ended (ms since the epoch, the serving node's clock).
    pub at_ms: u64,
}

pub(crate) const ACCOUNT: &str = "account.";
/// Ephemeral sessions' ends, for every node's audit chain.
pub(crate) const SESSION_END: &str = "session_end.";
/// Erasures' records, one per erased key's pseudonym.
pub(crate) const ERASURE: &str = "erasure.";
const COUNTER: &str = "counter.";
const INVITE: &str = "invite.";
pub(crate) const GROUP: &str = "group.";
const MEMBER: &str = "member.";
pub(crate) const ALLOWED: &str = "allowed.";
/// Staff keys' Web Push subscriptions: `push.<key hex>.<SHA-256 of the endpoint, hex>`.
pub(crate) const PUSH: &str = "push.";

/// A push subscription's key (the endpoint hashed: a URL is no subject token).
fn push_key(key: &PublicKey, endpoint: &str) -> String {
    use sha2::Digest as _;
    format!(
        "{PUSH}{}.{}",
        hex::encode(key.0),
        hex::encode(sha2::Sha256::digest(endpoint.as_bytes()))
    )
}
/// The hub's secrets (not mirrored: read once at start-up).
const SECRET: &str = "secret.";

/// A hub secret's key after `secret.`.
fn secret_name(which: HubSecret) -> &'static str {
    match which {
        HubSecret::AccessCode => "access_code",
        HubSecret::SigningSeed => "hub_seed",
        HubSecret::Vapid => "vapid",
        HubSecret::EscalationReference => "escalation_reference",
    }
}

/// The key naming the cluster's first-admin invite (the hex of its token's hash).
const FIRST_ADMIN: &str = "bootstrap.first_admin";

/// What [`Directory::first_admin_invite`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstAdmin {
    /// An admin exists: no first-admin invite.
    NotNeeded,
    /// One made earlier is unused until `expires_ms`; this node shows none.
    Pending {
        /// When it expires (ms since the epoch).
        expires_ms: u64,
    },
    /// This node's invite is the cluster's: show its link.
    Made,
}

/// Whether a redeem marked the invite used or found it used by the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// This call marked it used.
    First,
    /// The same key had redeemed it (an earlier answer was lost).
    Again,
}

fn account_key(key: &PublicKey) -> String {
    format!("{ACCOUNT}{}", hex::encode(key.0))
}

fn counter_key(key: &PublicKey) -> String {
    format!("{COUNTER}{}", hex::encode(key.0))
}

fn invite_key(token_hash: &[u8; 32]) -> String {
    format!("{INVITE}{}", hex::encode(token_hash))
}

/// `group.<id>`; the id checked to be one subject token.
fn group_key(id: &GroupId) -> Result<String, ClusterError> {
    check_token(id.as_str())?;
    Ok(format!("{GROUP}{id}"))
}

/// `<kind><group id>.<key hex>` (`member.` or `allowed.`).
fn member_key(kind: &str, group: &GroupId, key: &PublicKey) -> Result<String, ClusterError> {
    check_token(group.as_str())?;
    Ok(format!("{kind}{group}.{}", hex::encode(key.0)))
}

/// A public key from the hex of a key's last token.
pub(crate) fn parse_key(hex_text: &str, what: &'static str) -> Result<PublicKey, ClusterError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut bytes).map_err(|error| ClusterError::Corrupt {
        what,
        reason: error.to_string(),
    })?;
    Ok(PublicKey(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tokens_with_hex_parts() {
        let key = PublicKey([0xAB; 32]);
        let group = GroupId::parse("circle-2").unwrap();
        assert_eq!(account_key(&key), format!("account.{}", "ab".repeat(32)));
        assert_eq!(
            member_key(MEMBER, &group, &key).unwrap(),
            format!("member.circle-2.{}", "ab".repeat(32))
        );
        assert_eq!(group_key(&group).unwrap(), "group.circle-2");
        assert_eq!(parse_key(&"ab".repeat(32), "k").unwrap(), key);
        assert!(matches!(
            parse_key("zz", "k"),
            Err(ClusterError::Corrupt { .. })
        ));
    }
}
