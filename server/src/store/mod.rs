//! The store: every byte peerhub keeps on disk, behind one narrow interface.
//!
//! Only this module touches sled. Callers write with the methods below (each write is
//! in memory until a commit) and make writes durable with [`Committer::commit`],
//! which groups many writers' commits into one `flush`. **Nothing may be
//! acknowledged to a client before the commit covering it has returned.**
//!
//! The interface is kept small and engine-neutral (records in, records out, a
//! commit) so that another embedded engine could replace sled: sled 0.34 is beta.
//! Tree layouts are in [`keys`]; record types in [`records`].

pub mod audit;
mod commit;
pub mod keys;
pub mod records;

use std::path::Path;

use peerhub_protocol::frame::Role;
use peerhub_protocol::{GroupId, PublicKey};
use serde::{de::DeserializeOwned, Serialize};

pub use commit::Committer;
use records::{AccountRecord, GroupRecord, InviteRecord, MemberRecord, StoredEvent};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine reported an I/O or corruption error.
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    /// A stored value could not be decoded.
    #[error("stored record in {tree} is unreadable: {reason}")]
    Corrupt {
        /// The tree it was in.
        tree: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The committer thread is gone (the server is stopping).
    #[error("the store is closed")]
    Closed,
}

/// Why an invite could not be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemRefusal {
    /// No such token.
    Unknown,
    /// Already redeemed.
    Used,
    /// Past its expiry.
    Expired,
}

/// The database and its named trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    key_account: sled::Tree,
    key_counter: sled::Tree,
    tokenhash_invite: sled::Tree,
    groupid_group: sled::Tree,
    groupid_key_member: sled::Tree,
    groupid_seq_event: sled::Tree,
    seq_audit: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain data; serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir.join("db")).open()?;
        let tree = |name: &str| db.open_tree(name);
        let store = Self {
            meta: tree("meta")?,
            key_account: tree("key_account")?,
            key_counter: tree("key_counter")?,
            tokenhash_invite: tree("tokenhash_invite")?,
            groupid_group: tree("groupid_group")?,
            groupid_key_member: tree("groupid_key_member")?,
            groupid_seq_event: tree("groupid_seq_event")?,
            seq_audit: tree("seq_audit")?,
            db,
        };
        if store.meta.get("schema")?.is_none() {
            store.meta.insert("schema", "1")?;
            store.db.flush()?;
        }
        Ok(store)
    }

    /// A SHA-256 over every tree's keys and values, in a fixed order: equal digests
    /// mean equal stored state (tests use it to prove a refusal changed nothing).
    pub fn digest(&self) -> Result<[u8; 32], StoreError> {
        use sha2::{Digest as _, Sha256};
        let mut hash = Sha256::new();
        let trees = [
            ("meta", &self.meta),
            ("key_account", &self.key_account),
            ("key_counter", &self.key_counter),
            ("tokenhash_invite", &self.tokenhash_invite),
            ("groupid_group", &self.groupid_group),
            ("groupid_key_member", &self.groupid_key_member),
            ("groupid_seq_event", &self.groupid_seq_event),
            ("seq_audit", &self.seq_audit),
        ];
        for (name, tree) in trees {
            hash.update(name.as_bytes());
            for item in tree.iter() {
                let (key, value) = item?;
                hash.update((key.len() as u64).to_be_bytes());
                hash.update(&key);
                hash.update((value.len() as u64).to_be_bytes());
                hash.update(&value);
            }
        }
        Ok(hash.finalize().into())
    }

    /// Makes every write so far durable. Prefer [`Committer::commit`], which shares
    /// one flush between concurrent writers.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    // ---- accounts and roles ----

    /// The account of a key, if it holds any role.
    pub fn account(&self, key: &PublicKey) -> Result<Option<AccountRecord>, StoreError> {
        self.key_account
            .get(key.0)?
            .map(|v| decode("key_account", &v))
            .transpose()
    }

    /// Roles a key holds (empty for a participant).
    pub fn roles(&self, key: &PublicKey) -> Result<Vec<Role>, StoreError> {
        Ok(self.account(key)?.map(|a| a.roles).unwrap_or_default())
    }

    /// Grants `role` to `key` (idempotent); returns the account after the grant.
    pub fn grant_role(
        &self,
        key: &PublicKey,
        role: Role,
        now_ms: u64,
    ) -> Result<AccountRecord, StoreError> {
        let mut account = self.account(key)?.unwrap_or(AccountRecord {
            roles: Vec::new(),
            created_ms: now_ms,
        });
        if !account.roles.contains(&role) {
            account.roles.push(role);
            account.roles.sort();
        }
        self.key_account.insert(key.0, encode(&account))?;
        Ok(account)
    }

    /// Whether any key holds the admin role.
    pub fn has_admin(&self) -> Result<bool, StoreError> {
        for item in self.key_account.iter() {
            let (_, value) = item?;
            let account: AccountRecord = decode("key_account", &value)?;
            if account.roles.contains(&Role::Admin) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    // ---- replay counters ----

    /// The last counter accepted from `key` (0 if none).
    pub fn counter(&self, key: &PublicKey) -> Result<u64, StoreError> {
        Ok(self
            .key_counter
            .get(key.0)?
            .map(|v| keys::counter_from(&v))
            .unwrap_or(0))
    }

    /// Raises the stored counter of `key` to at least `counter`. Atomic, so group
    /// tasks writing the same key's counter concurrently never lower it.
    pub fn raise_counter(&self, key: &PublicKey, counter: u64) -> Result<(), StoreError> {
        self.key_counter.fetch_and_update(key.0, |old| {
            let old = old.map(keys::counter_from).unwrap_or(0);
            Some(keys::counter_bytes(old.max(counter)).to_vec())
        })?;
        Ok(())
    }

    // ---- invites ----

    /// Stores an invite under the hash of its token.
    pub fn put_invite(
        &self,
        token_hash: [u8; 32],
        invite: &InviteRecord,
    ) -> Result<(), StoreError> {
        self.tokenhash_invite.insert(token_hash, encode(invite))?;
        Ok(())
    }

    /// Removes unredeemed bootstrap invites (a new one is made at each start).
    pub fn remove_unused_bootstrap_invites(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in self.tokenhash_invite.iter() {
            let (hash, value) = item?;
            let invite: InviteRecord = decode("tokenhash_invite", &value)?;
            if invite.bootstrap && invite.used_by.is_none() {
                self.tokenhash_invite.remove(hash)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Marks an invite used by `key`, exactly once even under concurrent attempts.
    pub fn redeem_invite(
        &self,
        token_hash: [u8; 32],
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<Result<InviteRecord, RedeemRefusal>, StoreError> {
        loop {
            let Some(current) = self.tokenhash_invite.get(token_hash)? else {
                return Ok(Err(RedeemRefusal::Unknown));
            };
            let invite: InviteRecord = decode("tokenhash_invite", &current)?;
            if invite.used_by == Some(*key) {
                // The same key asking again (its first answer was lost): same answer.
                return Ok(Ok(invite));
            }
            if invite.used_by.is_some() {
                return Ok(Err(RedeemRefusal::Used));
            }
            if now_ms > invite.expires_ms {
                return Ok(Err(RedeemRefusal::Expired));
            }
            let used = InviteRecord {
                used_by: Some(*key),
                used_ms: Some(now_ms),
                ..invite
            };
            let swapped = self.tokenhash_invite.compare_and_swap(
                token_hash,
                Some(current),
                Some(encode(&used)),
            )?;
            if swapped.is_ok() {
                return Ok(Ok(used));
            }
        }
    }

    // ---- groups ----

    /// Creates a group; `false` if the id is taken.
    pub fn create_group(&self, group: &GroupRecord) -> Result<bool, StoreError> {
        let swapped = self.groupid_group.compare_and_swap(
            group.id.as_str(),
            None as Option<&[u8]>,
            Some(encode(group)),
        )?;
        Ok(swapped.is_ok())
    }

    /// A group by id.
    pub fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.groupid_group
            .get(id.as_str())?
            .map(|v| decode("groupid_group", &v))
            .transpose()
    }

    /// Every group, by id.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        self.groupid_group
            .iter()
            .map(|item| decode("groupid_group", &item?.1))
            .collect()
    }

    // ---- members ----

    /// Stores (or replaces) a member record.
    pub fn put_member(&self, group: &GroupId, member: &MemberRecord) -> Result<(), StoreError> {
        self.groupid_key_member
            .insert(keys::member_key(group, &member.key), encode(member))?;
        Ok(())
    }

    /// Every member of a group.
    pub fn members(&self, group: &GroupId) -> Result<Vec<MemberRecord>, StoreError> {
        self.groupid_key_member
            .scan_prefix(keys::group_prefix(group))
            .map(|item| decode("groupid_key_member", &item?.1))
            .collect()
    }

    // ---- events ----

    /// Writes one event. The caller (the group's task) owns seq assignment.
    pub fn append_event(&self, group: &GroupId, event: &StoredEvent) -> Result<(), StoreError> {
        self.groupid_seq_event
            .insert(keys::event_key(group, event.seq), encode(event))?;
        Ok(())
    }

    /// The highest seq stored for a group (0 if none).
    pub fn last_seq(&self, group: &GroupId) -> Result<u64, StoreError> {
        match self
            .groupid_seq_event
            .scan_prefix(keys::group_prefix(group))
            .next_back()
        {
            None => Ok(0),
            Some(item) => {
                let (key, _) = item?;
                keys::seq_of_event_key(&key).ok_or(StoreError::Corrupt {
                    tree: "groupid_seq_event",
                    reason: "key without a seq".into(),
                })
            }
        }
    }

    /// Up to `limit` events with `after < seq <= up_to`, in order.
    pub fn events_between(
        &self,
        group: &GroupId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        let start = keys::event_key(group, after.saturating_add(1));
        let end = keys::event_key(group, up_to);
        self.groupid_seq_event
            .range(start..=end)
            .take(limit)
            .map(|item| decode("groupid_seq_event", &item?.1))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::envelope::{Kind, SignedEnvelope};

    fn env() -> SignedEnvelope {
        let signer = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        SignedEnvelope::sign(&signer, Kind::Post, "{}".into())
    }

    #[test]
    fn events_read_back_in_order_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let g = GroupId::parse("g").unwrap();
        let other = GroupId::parse("g2").unwrap();
        assert_eq!(store.last_seq(&g).unwrap(), 0);
        for seq in 1..=300 {
            let event = StoredEvent {
                seq,
                ts: seq,
                env: env(),
            };
            store.append_event(&g, &event).unwrap();
        }
        store
            .append_event(
                &other,
                &StoredEvent {
                    seq: 1,
                    ts: 1,
                    env: env(),
                },
            )
            .unwrap();
        assert_eq!(store.last_seq(&g).unwrap(), 300);
        let page = store.events_between(&g, 255, 300, 10).unwrap();
        let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (256..=265).collect::<Vec<_>>());
        assert!(store.events_between(&g, 300, 300, 10).unwrap().is_empty());
    }

    #[test]
    fn counters_only_rise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = PublicKey([1; 32]);
        store.raise_counter(&key, 10).unwrap();
        store.raise_counter(&key, 5).unwrap();
        assert_eq!(store.counter(&key).unwrap(), 10);
    }

    #[test]
    fn an_invite_is_redeemed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let invite = InviteRecord {
            role: Role::Facilitator,
            created_ms: 0,
            expires_ms: 100,
            created_by: None,
            bootstrap: false,
            used_by: None,
            used_ms: None,
        };
        store.put_invite([9; 32], &invite).unwrap();
        let a = PublicKey([1; 32]);
        assert!(store.redeem_invite([9; 32], &a, 200).unwrap() == Err(RedeemRefusal::Expired));
        assert!(store.redeem_invite([9; 32], &a, 50).unwrap().is_ok());
        assert!(
            store.redeem_invite([9; 32], &a, 60).unwrap().is_ok(),
            "same key: same answer"
        );
        let b = PublicKey([2; 32]);
        assert!(store.redeem_invite([9; 32], &b, 50).unwrap() == Err(RedeemRefusal::Used));
        assert!(store.redeem_invite([8; 32], &a, 50).unwrap() == Err(RedeemRefusal::Unknown));
    }
}
