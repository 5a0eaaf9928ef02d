//! Deletions for the retention pass ([`crate::retention`]) and the audit chain's
//! anchor.
//!
//! A pass first *finds* what has expired ([`Expired`], filled by the `find_*`
//! methods), so the audit entry recording the deletion can be written before
//! anything is deleted, then deletes exactly that ([`Store::delete_expired`]).
//! What "expired" means for an escalation or a record is decided by the caller
//! (a predicate); this file only reads, matches and removes.
//!
//! | tree        | key            | value                                        |
//! | ----------- | -------------- | -------------------------------------------- |
//! | `meta`      | `audit_anchor` | JSON `{"seq":N,"hash":"<64 hex>"}`: the last entry pruned from the front of the audit chain |
//!
//! Like every store write, these are in memory until a commit.

use peerhub_protocol::{GroupId, PublicKey};
use serde::{Deserialize, Serialize};

use super::audit::audit_key;
use super::records::{EscalationRecord, RecordRecord, StoredEvent};
use super::{decode, encode, keys, Store, StoreError};

const ANCHOR: &str = "audit_anchor";

/// What a retention pass found expired, to delete with [`Store::delete_expired`].
/// Holds store keys (and, for escalations and records, the bytes read) only.
#[derive(Debug, Default)]
pub struct Expired {
    events: Vec<sled::IVec>,
    escalations: Vec<(sled::IVec, sled::IVec)>,
    records: Vec<(sled::IVec, sled::IVec, Option<PublicKey>)>,
}

impl Expired {
    /// Events found (every channel).
    pub fn events(&self) -> usize {
        self.events.len()
    }

    /// Escalations found.
    pub fn escalations(&self) -> usize {
        self.escalations.len()
    }

    /// Co-produced records found.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.escalations.is_empty() && self.records.is_empty()
    }
}

/// How many of each were deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Events (every channel).
    pub events: usize,
    /// Escalations.
    pub escalations: usize,
    /// Co-produced records (with their index entries).
    pub records: usize,
}

#[derive(Serialize, Deserialize)]
struct AnchorJson {
    seq: u64,
    hash: String,
}

impl Store {
    /// Adds to `expired` every event of `group`, in every channel (main, staff and
    /// each pair's check-ins), stored with a time before `before_ms`.
    pub fn find_expired_events(
        &self,
        expired: &mut Expired,
        group: &GroupId,
        before_ms: u64,
    ) -> Result<(), StoreError> {
        for item in self
            .t()
            .groupid_seq_event
            .scan_prefix(keys::group_prefix(group))
        {
            let (key, value) = item?;
            let event: StoredEvent = decode("groupid_seq_event", &value)?;
            if event.ts < before_ms {
                expired.events.push(key);
            }
        }
        Ok(())
    }

    /// Adds to `expired` every escalation for which `is_expired` is true.
    pub fn find_expired_escalations(
        &self,
        expired: &mut Expired,
        mut is_expired: impl FnMut(&EscalationRecord) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.t().escid_escalation.iter() {
            let (key, value) = item?;
            let record: EscalationRecord = decode("escid_escalation", &value)?;
            if is_expired(&record) {
                expired.escalations.push((key, value));
            }
        }
        Ok(())
    }

    /// Adds to `expired` every co-produced record for which `is_expired` is true.
    pub fn find_expired_records(
        &self,
        expired: &mut Expired,
        mut is_expired: impl FnMut(&RecordRecord) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.t().recordid_record.iter() {
            let (key, value) = item?;
            let record: RecordRecord = decode("recordid_record", &value)?;
            if is_expired(&record) {
                expired.records.push((key, value, record.about));
            }
        }
        Ok(())
    }

    /// Deletes what `expired` holds. An escalation or record rewritten since it was
    /// found (a note added to it) is kept: it is deleted only if its bytes are still
    /// the ones that were judged.
    pub fn delete_expired(&self, expired: Expired) -> Result<Deleted, StoreError> {
        let _writing = self.writing();
        let mut deleted = Deleted::default();
        for key in expired.events {
            if self.t().groupid_seq_event.remove(key)?.is_some() {
                deleted.events += 1;
            }
        }
        for (key, value) in expired.escalations {
            let record: Option<EscalationRecord> = decode("escid_escalation", &value).ok();
            let swapped = self.t().escid_escalation.compare_and_swap(
                key,
                Some(value),
                None as Option<&[u8]>,
            )?;
            if swapped.is_ok() {
                deleted.escalations += 1;
                if let Some(record) = record {
                    self.unindex_escalation(&record)?;
                }
            }
        }
        for (key, value, about) in expired.records {
            let swapped = self.t().recordid_record.compare_and_swap(
                &key,
                Some(value),
                None as Option<&[u8]>,
            )?;
            if swapped.is_ok() {
                deleted.records += 1;
                if let (Some(about), Ok(id)) = (about, <[u8; 8]>::try_from(key.as_ref())) {
                    self.t()
                        .key_recordid
                        .remove(keys::record_index_key(&about, u64::from_be_bytes(id)))?;
                }
            }
        }
        Ok(deleted)
    }

    /// The audit chain's anchor: (seq, hash) of the last entry pruned from its
    /// front, or `None` if nothing was ever pruned.
    pub fn audit_anchor(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let Some(bytes) = self.t().meta.get(ANCHOR)? else {
            return Ok(None);
        };
        let anchor: AnchorJson = decode("meta", &bytes)?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&anchor.hash, &mut hash).map_err(|e| StoreError::Corrupt {
            tree: "meta",
            reason: format!("audit_anchor hash: {e}"),
        })?;
        Ok(Some((anchor.seq, hash)))
    }

    /// Records entry `seq`, whose hash is `hash`, as the last one pruned. Written
    /// before the entries are removed ([`Store::remove_audit_through`]), so a crash
    /// in between leaves entries the chain's check skips, never a gap.
    pub fn put_audit_anchor(&self, seq: u64, hash: [u8; 32]) -> Result<(), StoreError> {
        let _writing = self.writing();
        let anchor = AnchorJson {
            seq,
            hash: hex::encode(hash),
        };
        self.t().meta.insert(ANCHOR, encode(&anchor))?;
        Ok(())
    }

    /// Removes every audit entry with a seq up to `seq`; returns how many.
    pub fn remove_audit_through(&self, seq: u64) -> Result<usize, StoreError> {
        let _writing = self.writing();
        let mut removed = 0;
        for item in self.t().seq_audit.range(..=audit_key(seq)) {
            let (key, _) = item?;
            if self.t().seq_audit.remove(key)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::envelope::{Kind, SignedEnvelope};
    use peerhub_protocol::frame::Channel;

    fn env() -> SignedEnvelope {
        let signer = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        SignedEnvelope::sign(&signer, Kind::Post, "{}".into())
    }

    fn event(seq: u64, ts: u64) -> StoredEvent {
        StoredEvent {
            seq,
            ts,
            env: Some(env()),
            note: None,
            redacted: None,
        }
    }

    #[test]
    fn expired_events_of_every_channel_go_and_other_groups_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (g, other) = (GroupId::parse("g").unwrap(), GroupId::parse("g2").unwrap());
        let pair = Channel::pair(PublicKey([1; 32]), PublicKey([2; 32]));
        for channel in [Channel::Main, Channel::Staff, pair] {
            for seq in 1..=4 {
                store
                    .put_event(&g, &channel, &event(seq, seq * 10))
                    .unwrap();
            }
        }
        store
            .put_event(&other, &Channel::Main, &event(1, 1))
            .unwrap();
        let mut expired = Expired::default();
        // Before 30: seqs 1 and 2 (ts 10, 20) of each of the three channels.
        store.find_expired_events(&mut expired, &g, 30).unwrap();
        assert_eq!(expired.events(), 6);
        assert_eq!(store.delete_expired(expired).unwrap().events, 6);
        for channel in [Channel::Main, Channel::Staff, pair] {
            let left: Vec<u64> = store
                .events_between(&g, &channel, 0, 10, 10)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            assert_eq!(left, vec![3, 4], "{channel:?}");
        }
        assert!(store.event(&other, &Channel::Main, 1).unwrap().is_some());
    }

    #[test]
    fn a_record_goes_with_its_index_and_a_rewritten_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let g = GroupId::parse("g").unwrap();
        let about = PublicKey([7; 32]);
        let mut ids = Vec::new();
        for _ in 0..2 {
            let record = RecordRecord {
                id: store.next_record_id().unwrap(),
                group: g.clone(),
                about: Some(about),
                entries: vec![env()],
            };
            store.put_record(&record).unwrap();
            ids.push(record.id);
        }
        let mut expired = Expired::default();
        store.find_expired_records(&mut expired, |_| true).unwrap();
        assert_eq!(expired.records(), 2);
        // The second is written to after it was judged: it stays.
        let mut second = store.record(ids[1]).unwrap().unwrap();
        second.entries.push(env());
        store.put_record(&second).unwrap();
        assert_eq!(store.delete_expired(expired).unwrap().records, 1);
        assert!(store.record(ids[0]).unwrap().is_none());
        let left: Vec<u64> = store
            .records_about(&about)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, vec![ids[1]], "the first record's index entry is gone");
    }

    #[test]
    fn the_anchor_round_trips_and_entries_go_through_a_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.audit_anchor().unwrap(), None);
        store.put_audit_anchor(3, [0xAB; 32]).unwrap();
        assert_eq!(store.audit_anchor().unwrap(), Some((3, [0xAB; 32])));
        for seq in 1..=300 {
            store.append_audit(seq, b"x").unwrap();
        }
        assert_eq!(store.remove_audit_through(256).unwrap(), 256);
        let first = store.audit_entries().next().unwrap().unwrap().0;
        assert_eq!(first, 257);
        assert_eq!(store.remove_audit_through(256).unwrap(), 0);
    }
}
