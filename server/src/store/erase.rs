//! Store reads and writes for erasing one key's personal data ([`crate::erase`]).
//!
//! Every write here takes the write gate like the others in [`super`]. They are
//! for a stopped server's folder: a running hub's group tasks hold members in
//! memory and would write them back. Nothing here flushes; the caller does.
//!
//! [`Store::rewrite_audit_for_erasure`] is the one place the append-only
//! `seq_audit` tree is rewritten, and only [`crate::audit`] calls it, with entries
//! it has re-linked and re-hashed.

use peerhub_protocol::frame::Note;
use peerhub_protocol::PublicKey;

use super::audit::audit_key;
use super::export::{split_event_key, LocatedEvent};
use super::records::{InviteRecord, StoredEvent};
use super::{decode, encode, keys, Store, StoreError};

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl Store {
    /// Every stored event that carries `key`'s personal data: those it signed, and
    /// hub notes about it (a risk-phrase nudge about its message, its mute ending,
    /// a request for support about it).
    /// In store order. Events already erased (no envelope, no note) are not listed.
    pub fn events_of_key(&self, key: &PublicKey) -> Result<Vec<LocatedEvent>, StoreError> {
        let needle = key.to_b64();
        let mut out = Vec::new();
        for item in self.t().groupid_seq_event.iter() {
            let (store_key, value) = item?;
            if !contains(&value, needle.as_bytes()) {
                continue;
            }
            let event: StoredEvent = decode("groupid_seq_event", &value)?;
            let signed = event.env.as_ref().is_some_and(|env| env.key == *key);
            let noted = match &event.note {
                Some(Note::RiskNudge { member, .. })
                | Some(Note::MuteEnded { member })
                | Some(Note::SupportAsked { member, .. })
                | Some(Note::SupportResolved { member }) => member == key,
                None => false,
            };
            if !signed && !noted {
                continue;
            }
            let (group, channel, _) = split_event_key(&store_key).ok_or(StoreError::Corrupt {
                tree: "groupid_seq_event",
                reason: "key is not group ‖ 0 ‖ channel ‖ seq".into(),
            })?;
            out.push(LocatedEvent {
                group,
                channel,
                event,
            });
        }
        Ok(out)
    }

    /// Removes `key`'s account (its roles), its push subscriptions and its replay
    /// counter; returns whether the account and the counter were there.
    pub fn remove_account_and_counter(&self, key: &PublicKey) -> Result<(bool, bool), StoreError> {
        let removed = {
            let _writing = self.writing();
            let account = self.t().key_account.remove(key.0)?.is_some();
            let counter = self.t().key_counter.remove(key.0)?.is_some();
            (account, counter)
        };
        self.remove_push_subscriptions(key)?;
        Ok(removed)
    }

    /// Removes `key` from every virtual group's allow-list; returns how many
    /// entries went.
    pub fn remove_allowed_everywhere(&self, key: &PublicKey) -> Result<usize, StoreError> {
        let _writing = self.writing();
        let mut doomed = Vec::new();
        for item in self.t().groupid_key_allowed.iter() {
            let (store_key, _) = item?;
            // `group ‖ 0x00 ‖ key`.
            let Some(nul) = store_key.len().checked_sub(33) else {
                continue;
            };
            if store_key[nul] == 0 && store_key.ends_with(&key.0) {
                doomed.push(store_key);
            }
        }
        for store_key in &doomed {
            self.t().groupid_key_allowed.remove(store_key)?;
        }
        Ok(doomed.len())
    }

    /// Removes the invites `key` redeemed (spent tokens: a removed token is refused
    /// as unknown, as a used one was); returns how many.
    pub fn remove_invites_redeemed_by(&self, key: &PublicKey) -> Result<usize, StoreError> {
        let _writing = self.writing();
        let mut doomed = Vec::new();
        for item in self.t().tokenhash_invite.iter() {
            let (hash, value) = item?;
            let invite: InviteRecord = decode("tokenhash_invite", &value)?;
            if invite.used_by == Some(*key) {
                doomed.push(hash);
            }
        }
        for hash in &doomed {
            self.t().tokenhash_invite.remove(hash)?;
        }
        Ok(doomed.len())
    }

    /// Every key this store holds data of: accounts, replay counters, push
    /// subscriptions, records about a key, member records, allow-list places,
    /// redeemers of invites and signers of events. A cluster node finds an
    /// erased key from its pseudonym among these (`crate::cluster::node_erasure`);
    /// a full scan.
    pub fn keys_held(&self) -> Result<std::collections::BTreeSet<PublicKey>, StoreError> {
        let mut keys = std::collections::BTreeSet::new();
        let as_key = |bytes: &[u8]| <[u8; 32]>::try_from(bytes).ok().map(PublicKey);
        let t = self.t();
        for tree in [
            &t.key_account,
            &t.key_counter,
            &t.key_pushsub,
            &t.key_recordid,
        ] {
            for item in tree.iter() {
                let (store_key, _) = item?;
                keys.extend(store_key.get(..32).and_then(as_key));
            }
        }
        for tree in [&t.groupid_key_member, &t.groupid_key_allowed] {
            for item in tree.iter() {
                let (store_key, _) = item?;
                let tail = store_key.len().checked_sub(32).map(|at| &store_key[at..]);
                keys.extend(tail.and_then(as_key));
            }
        }
        for item in t.tokenhash_invite.iter() {
            let (_, value) = item?;
            let invite: InviteRecord = decode("tokenhash_invite", &value)?;
            keys.extend(invite.used_by);
        }
        for item in t.groupid_seq_event.iter() {
            let (_, value) = item?;
            let event: StoredEvent = decode("groupid_seq_event", &value)?;
            keys.extend(event.env.map(|env| env.key));
        }
        Ok(keys)
    }

    /// Replaces existing audit entries with re-linked, re-hashed ones, in one atomic
    /// batch. Only [`crate::audit::AuditLog::rewrite_for_erasure`] calls it; a seq
    /// that is not already stored is refused (this never extends the chain).
    #[doc(hidden)]
    pub fn rewrite_audit_for_erasure(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let _writing = self.writing();
        let mut batch = sled::Batch::default();
        for (seq, bytes) in entries {
            if !self.t().seq_audit.contains_key(audit_key(*seq))? {
                return Err(StoreError::Corrupt {
                    tree: "seq_audit",
                    reason: format!("entry {seq} does not exist; a rewrite never appends"),
                });
            }
            batch.insert(&audit_key(*seq), bytes.as_slice());
        }
        self.t().seq_audit.apply_batch(batch)?;
        Ok(())
    }

    /// The names of the trees where `needle` occurs in a key or a value, in the
    /// fixed tree order. For tests and checks after an erasure; a full scan.
    #[doc(hidden)]
    pub fn trees_containing(&self, needle: &[u8]) -> Result<Vec<&'static str>, StoreError> {
        let mut out = Vec::new();
        for (name, tree) in self.t().named() {
            for item in tree.iter() {
                let (key, value) = item?;
                if contains(&key, needle) || contains(&value, needle) {
                    out.push(name);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Writes one event back where it was (an erasure's tombstone).
    pub fn put_located_event(&self, located: &LocatedEvent) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().groupid_seq_event.insert(
            keys::event_key(&located.group, &located.channel, located.event.seq),
            encode(&located.event),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::envelope::{Kind, SignedEnvelope};
    use peerhub_protocol::frame::{Channel, Role};
    use peerhub_protocol::payload::InviteRole;
    use peerhub_protocol::GroupId;

    fn signed_by(seed: u8) -> SignedEnvelope {
        let signer = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        SignedEnvelope::sign(&signer, Kind::Post, "{}".into())
    }

    #[test]
    fn events_of_a_key_are_its_own_and_hub_notes_about_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (mine, theirs) = (signed_by(1), signed_by(2));
        let me = mine.key;
        let g = GroupId::parse("g").unwrap();
        let event = |seq, env: Option<&SignedEnvelope>, note| StoredEvent {
            seq,
            ts: seq,
            env: env.cloned(),
            note,
            redacted: None,
        };
        store
            .put_event(&g, &Channel::Main, &event(1, Some(&mine), None))
            .unwrap();
        store
            .put_event(&g, &Channel::Main, &event(2, Some(&theirs), None))
            .unwrap();
        let nudge = Note::RiskNudge {
            member: me,
            seq: 1,
            suggestion: "check in".into(),
        };
        store
            .put_event(&g, &Channel::Staff, &event(1, None, Some(nudge)))
            .unwrap();
        let other_note = Note::MuteEnded { member: theirs.key };
        store
            .put_event(&g, &Channel::Staff, &event(2, None, Some(other_note)))
            .unwrap();
        let found: Vec<(Channel, u64)> = store
            .events_of_key(&me)
            .unwrap()
            .iter()
            .map(|e| (e.channel, e.event.seq))
            .collect();
        assert_eq!(found, vec![(Channel::Main, 1), (Channel::Staff, 1)]);
    }

    #[test]
    fn account_counter_allow_list_and_spent_invites_go_for_that_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (me, other) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let (g, h) = (GroupId::parse("g").unwrap(), GroupId::parse("h").unwrap());
        for key in [&me, &other] {
            store.grant_role(key, Role::Facilitator, 1).unwrap();
            store.raise_counter(key, 9).unwrap();
            store.allow_member(&g, key).unwrap();
            store.allow_member(&h, key).unwrap();
        }
        let subscription = crate::store::records::PushSubscriptionRecord {
            endpoint: "https://push.example/1".into(),
            p256dh: "p".into(),
            auth: "a".into(),
            created_ms: 1,
        };
        store.put_push_subscription(&me, &subscription).unwrap();
        for (n, used_by) in [(1u8, Some(me)), (2, Some(other)), (3, None)] {
            let invite = InviteRecord {
                role: InviteRole::Member,
                group: Some(g.clone()),
                groups: Vec::new(),
                created_ms: 0,
                expires_ms: 10,
                created_by: None,
                bootstrap: false,
                used_by,
                used_ms: used_by.map(|_| 1),
            };
            store.put_invite([n; 32], &invite).unwrap();
        }
        assert_eq!(store.remove_account_and_counter(&me).unwrap(), (true, true));
        assert_eq!(
            store.remove_account_and_counter(&me).unwrap(),
            (false, false)
        );
        assert_eq!(store.remove_allowed_everywhere(&me).unwrap(), 2);
        assert_eq!(store.remove_invites_redeemed_by(&me).unwrap(), 1);
        assert!(store.roles(&me).unwrap().is_empty());
        assert_eq!(store.counter(&me).unwrap(), 0);
        assert!(!store.is_allowed(&g, &me).unwrap() && !store.is_allowed(&h, &me).unwrap());
        assert_eq!(store.roles(&other).unwrap(), vec![Role::Facilitator]);
        assert_eq!(store.counter(&other).unwrap(), 9);
        assert!(store.is_allowed(&g, &other).unwrap() && store.is_allowed(&h, &other).unwrap());
        assert_eq!(store.invite_redeemer([2; 32]).unwrap(), Some(other));
        assert!(store.trees_containing(&me.0).unwrap().is_empty());
        // (Invite 2 is stored under the token hash [2; 32], the same bytes.)
        assert_eq!(
            store.trees_containing(&other.0).unwrap(),
            vec![
                "key_account",
                "key_counter",
                "tokenhash_invite",
                "groupid_key_allowed"
            ]
        );
    }

    #[test]
    fn an_audit_rewrite_replaces_existing_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.append_audit(1, b"one").unwrap();
        store.append_audit(2, b"two").unwrap();
        store
            .rewrite_audit_for_erasure(&[(2, b"TWO".to_vec())])
            .unwrap();
        assert!(store
            .rewrite_audit_for_erasure(&[(1, b"ONE".to_vec()), (3, b"three".to_vec())])
            .is_err());
        let all: Vec<(u64, Vec<u8>)> = store.audit_entries().map(Result::unwrap).collect();
        assert_eq!(all, vec![(1, b"one".to_vec()), (2, b"TWO".to_vec())]);
    }
}
