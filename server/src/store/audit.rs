//! The audit chain's tree, `seq_audit`: raw entries keyed by their seq.
//!
//! | tree        | key                             | value                          |
//! | ----------- | ------------------------------- | ------------------------------ |
//! | `seq_audit` | seq (u64 big-endian), from 1    | one entry's stored bytes       |
//!
//! This file stores and returns bytes only; what the bytes mean (the entry layout and
//! the hash rule) belongs to [`crate::audit`], which is the only writer. Entries are
//! written, never rewritten: [`Store::append_audit`] refuses a seq that is taken.
//! Like every store write, an append is in memory until a commit
//! ([`super::Committer::commit`]) makes it durable.
//!
//! The key encoding lives here rather than in [`super::keys`] only while that file
//! is being changed by other work; it belongs beside the other layouts there.

use std::path::Path;

use super::{Store, StoreError};

const TREE: &str = "seq_audit";

/// Key of one entry in `seq_audit`: its seq, big-endian, so keys sort by seq.
pub fn audit_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The seq of an `audit_key`, if the key has that shape.
pub fn seq_of_audit_key(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    seq_of_audit_key(key).ok_or_else(|| StoreError::Corrupt {
        tree: TREE,
        reason: format!("a key of {} bytes is not a seq", key.len()),
    })
}

impl Store {
    /// Whether `dir` already holds a store, so that [`Store::open`] would open it
    /// rather than create an empty one (tools that must not create one check first).
    pub fn exists_in(dir: &Path) -> bool {
        // Or a compaction a crash cut short, which the next open finishes or undoes.
        dir.join("db").is_dir() || super::compact::cut_short_in(dir)
    }

    /// Writes entry `seq`. Refuses (as corruption) a seq that is already taken: the
    /// chain is append-only, and two writers on one chain would otherwise overwrite
    /// each other silently.
    pub fn append_audit(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let _writing = self.writing();
        let swapped = self.t().seq_audit.compare_and_swap(
            audit_key(seq),
            None as Option<&[u8]>,
            Some(bytes),
        )?;
        swapped.map_err(|_| StoreError::Corrupt {
            tree: TREE,
            reason: format!("entry {seq} already exists; the chain is append-only"),
        })
    }

    /// The last entry, as (seq, stored bytes), or `None` for an empty chain.
    pub fn last_audit(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        match self.t().seq_audit.last()? {
            None => Ok(None),
            Some((key, value)) => Ok(Some((seq_of(&key)?, value.to_vec()))),
        }
    }

    /// Every entry in seq order, as (seq, stored bytes). A key that is not a seq is
    /// yielded as an error in its place, never skipped.
    pub fn audit_entries(
        &self,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + Send + 'static {
        self.t().seq_audit.iter().map(|item| {
            let (key, value) = item?;
            Ok((seq_of(&key)?, value.to_vec()))
        })
    }

    /// Entries from `from` on, in seq order, as [`Store::audit_entries`] yields them.
    pub fn audit_entries_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + Send + 'static {
        self.t().seq_audit.range(audit_key(from)..).map(|item| {
            let (key, value) = item?;
            Ok((seq_of(&key)?, value.to_vec()))
        })
    }

    /// This data folder's audit chain id (made once, durable at once): 16
    /// lowercase hex digits naming the chain a cluster node ships
    /// (`crate::cluster::audit`). It stays with the folder, so a node started
    /// again on a fresh folder under the same name ships a new chain rather
    /// than overwrite its old one. Kept in `meta` `audit_chain_id`.
    pub fn audit_chain_id(&self) -> Result<String, StoreError> {
        const KEY: &str = "audit_chain_id";
        let _writing = self.writing();
        if let Some(id) = self.t().meta.get(KEY)? {
            if let Ok(id) = <[u8; 8]>::try_from(id.as_ref()) {
                return Ok(hex::encode(id));
            }
        }
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| StoreError::Corrupt {
            tree: "meta",
            reason: format!("no randomness for {KEY}: {e}"),
        })?;
        // Made once even when two ask at once (the shipper at start and an
        // operator's request): only the first id is stored, and both get it.
        let id = match self
            .t()
            .meta
            .compare_and_swap(KEY, None::<&[u8]>, Some(&id[..]))?
        {
            Ok(()) => id.to_vec(),
            Err(taken) => taken.current.map_or_else(|| id.to_vec(), |v| v.to_vec()),
        };
        self.t().db.flush()?;
        Ok(hex::encode(id))
    }

    /// Overwrites (or creates) entry `seq` with arbitrary bytes, bypassing the
    /// append-only rule. For tamper tests only; not durable until a flush.
    #[doc(hidden)]
    pub fn put_audit_raw_for_tests(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().seq_audit.insert(audit_key(seq), bytes)?;
        Ok(())
    }

    /// Deletes entry `seq`. For tamper tests only; not durable until a flush.
    #[doc(hidden)]
    pub fn remove_audit_raw_for_tests(&self, seq: u64) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().seq_audit.remove(audit_key(seq))?;
        Ok(())
    }
}

impl Store {
    /// Who redeemed the invite stored under `token_hash`, if it exists and has been
    /// redeemed. Read only.
    ///
    /// The audit chain needs it to tell a first redemption (a grant to record) from
    /// the same key asking again (already recorded), which
    /// [`Store::redeem_invite`] answers alike. It reads another tree, so it belongs
    /// beside `redeem_invite` in `store/mod.rs`; it is here only while that file is
    /// being changed by other work.
    pub fn invite_redeemer(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<peerhub_protocol::PublicKey>, StoreError> {
        let Some(bytes) = self.t().tokenhash_invite.get(token_hash)? else {
            return Ok(None);
        };
        let invite: super::records::InviteRecord = super::decode("tokenhash_invite", &bytes)?;
        Ok(invite.used_by)
    }
}

impl StoreError {
    /// Whether opening failed because another process (or another open handle)
    /// holds the store's lock: typically a server running on the same folder.
    pub fn is_in_use(&self) -> bool {
        // sled reports a failed `flock` as an `Other` I/O error with this text.
        matches!(self, StoreError::Engine(sled::Error::Io(e))
            if e.to_string().contains("could not acquire lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster's audit shipper and an operator's request may ask for the
    /// chain id at once on a fresh folder: both must get the one id the folder
    /// keeps. Failed (now and then) on the old code, which read, then wrote a
    /// new id: the later write replaced the earlier one, and a node could ship
    /// under an id its folder no longer held (seen in CI).
    #[test]
    fn a_chain_id_asked_for_at_once_is_made_once() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let start = std::sync::Barrier::new(8);
            let ids: Vec<String> = std::thread::scope(|scope| {
                let asks: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            store.audit_chain_id().unwrap()
                        })
                    })
                    .collect();
                asks.into_iter().map(|a| a.join().unwrap()).collect()
            });
            let kept = store.audit_chain_id().unwrap();
            assert!(ids.iter().all(|id| *id == kept), "{ids:?} against {kept}");
        }
    }

    #[test]
    fn audit_keys_round_trip_and_sort_by_seq() {
        for seq in [0, 1, 255, 256, 65_536, u64::MAX] {
            assert_eq!(seq_of_audit_key(&audit_key(seq)), Some(seq));
        }
        assert!(audit_key(2) < audit_key(10));
        assert!(audit_key(255) < audit_key(256));
        assert_eq!(seq_of_audit_key(b"short"), None);
        assert_eq!(seq_of_audit_key(&[0; 9]), None);
    }

    #[test]
    fn entries_read_back_in_seq_order_and_the_last_is_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_audit().unwrap(), None);
        assert_eq!(store.audit_entries().count(), 0);
        for seq in 1..=300u64 {
            store
                .append_audit(seq, format!("entry {seq}").as_bytes())
                .unwrap();
        }
        let all: Vec<(u64, Vec<u8>)> = store.audit_entries().map(Result::unwrap).collect();
        assert_eq!(all.len(), 300);
        for (i, (seq, bytes)) in all.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "numeric order, not text order");
            assert_eq!(bytes, format!("entry {seq}").as_bytes());
        }
        assert_eq!(
            store.last_audit().unwrap(),
            Some((300, b"entry 300".to_vec()))
        );
    }

    #[test]
    fn an_append_never_overwrites_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.append_audit(1, b"first").unwrap();
        let refused = store.append_audit(1, b"second").unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{refused}");
        assert_eq!(store.last_audit().unwrap(), Some((1, b"first".to_vec())));
    }

    #[test]
    fn a_second_open_of_a_folder_in_use_says_so() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!Store::exists_in(dir.path()));
        let _open = Store::open(dir.path()).unwrap();
        assert!(Store::exists_in(dir.path()));
        let refused = Store::open(dir.path()).unwrap_err();
        assert!(refused.is_in_use(), "{refused}");
    }
}
