//! Reads for the per-key data export ([`crate::export`]): whole-tree scans that
//! find what one key signed or is a member of. Read only; nothing here writes.
//!
//! These scan every group's events and members, so they cost a pass over those
//! trees: fine for an operator's occasional export, not for a request path.
//!
//! [`split_event_key`] reads the `groupid_seq_event` layout documented in
//! [`super::keys`]; it lives here rather than there only while that file is being
//! changed by other work, and belongs beside `event_key` there.

use peerhub_protocol::frame::Channel;
use peerhub_protocol::{GroupId, PublicKey};

use super::records::{MemberRecord, StoredEvent};
use super::{decode, keys, Store, StoreError};

/// One stored event and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedEvent {
    /// The group whose log holds it.
    pub group: GroupId,
    /// The channel of that log.
    pub channel: Channel,
    /// The event as stored.
    pub event: StoredEvent,
}

/// Splits a `groupid_seq_event` key into its group, channel and seq (the inverse
/// of [`keys::event_key`]); `None` if the key does not have that shape.
pub fn split_event_key(key: &[u8]) -> Option<(GroupId, Channel, u64)> {
    let nul = key.iter().position(|b| *b == 0)?;
    let group = GroupId::parse(std::str::from_utf8(&key[..nul]).ok()?).ok()?;
    let rest = &key[nul + 1..];
    let (channel, tail) = match rest.split_first()? {
        (0, tail) => (Channel::Main, tail),
        (1, tail) => (Channel::Staff, tail),
        (2, tail) if tail.len() >= 64 => {
            let a: [u8; 32] = tail[..32].try_into().ok()?;
            let b: [u8; 32] = tail[32..64].try_into().ok()?;
            (Channel::Pair([PublicKey(a), PublicKey(b)]), &tail[64..])
        }
        _ => return None,
    };
    let seq: [u8; 8] = tail.try_into().ok()?;
    Some((group, channel, u64::from_be_bytes(seq)))
}

impl Store {
    /// The member record of `key` in `group`, if it has joined there.
    pub fn member(
        &self,
        group: &GroupId,
        key: &PublicKey,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.t()
            .groupid_key_member
            .get(keys::member_key(group, key))?
            .map(|v| decode("groupid_key_member", &v))
            .transpose()
    }

    /// Every group `key` has joined, with its member record there, by group id.
    pub fn memberships_of(
        &self,
        key: &PublicKey,
    ) -> Result<Vec<(GroupId, MemberRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.t().groupid_key_member.iter() {
            let (store_key, value) = item?;
            // `group ‖ 0x00 ‖ key`: only records ending in this key are decoded.
            let Some(group_len) = store_key.len().checked_sub(33) else {
                continue;
            };
            if !store_key.ends_with(&key.0) || store_key[group_len] != 0 {
                continue;
            }
            let member: MemberRecord = decode("groupid_key_member", &value)?;
            if member.key != *key {
                continue;
            }
            let group = std::str::from_utf8(&store_key[..group_len])
                .ok()
                .and_then(|g| GroupId::parse(g).ok())
                .ok_or(StoreError::Corrupt {
                    tree: "groupid_key_member",
                    reason: "key without a group id".into(),
                })?;
            out.push((group, member));
        }
        Ok(out)
    }

    /// Every stored event whose envelope `key` signed, in store order: by group id,
    /// then channel (main, staff, pairs), then seq. Redacted events are included
    /// (their envelope is kept); hub notes are not (nobody signed them).
    pub fn events_signed_by(&self, key: &PublicKey) -> Result<Vec<LocatedEvent>, StoreError> {
        // Stored events are JSON holding the signer's key in base64url: values
        // without that text cannot be this key's and are skipped undecoded.
        let needle = key.to_b64();
        let mut out = Vec::new();
        for item in self.t().groupid_seq_event.iter() {
            let (store_key, value) = item?;
            if !contains(&value, needle.as_bytes()) {
                continue;
            }
            let event: StoredEvent = decode("groupid_seq_event", &value)?;
            if event.env.as_ref().is_none_or(|env| env.key != *key) {
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
}

/// Whether `needle` occurs in `haystack` (a plain scan: no extra dependency for
/// one prefilter).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::envelope::{Kind, SignedEnvelope};

    fn signed_by(seed: u8) -> SignedEnvelope {
        let signer = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        SignedEnvelope::sign(&signer, Kind::Post, "{}".into())
    }

    #[test]
    fn event_keys_split_back_into_group_channel_and_seq() {
        let g = GroupId::parse("circle-2").unwrap();
        let pair = Channel::pair(PublicKey([9; 32]), PublicKey([1; 32]));
        for channel in [Channel::Main, Channel::Staff, pair] {
            for seq in [0, 1, 256, u64::MAX] {
                let key = keys::event_key(&g, &channel, seq);
                assert_eq!(split_event_key(&key), Some((g.clone(), channel, seq)));
            }
        }
        assert_eq!(split_event_key(b"circle\x00\x03"), None);
        assert_eq!(split_event_key(b"circle\x00\x00short"), None);
        assert_eq!(split_event_key(b"no-separator"), None);
    }

    #[test]
    fn only_the_signers_events_are_found_in_every_channel() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (mine, theirs) = (signed_by(1), signed_by(2));
        let me = mine.key;
        let g = GroupId::parse("g").unwrap();
        let h = GroupId::parse("h").unwrap();
        let pair = Channel::pair(me, theirs.key);
        let event = |seq, env: &SignedEnvelope| StoredEvent {
            seq,
            ts: seq * 10,
            env: Some(env.clone()),
            note: None,
            redacted: None,
        };
        store
            .put_event(&g, &Channel::Main, &event(1, &mine))
            .unwrap();
        store
            .put_event(&g, &Channel::Main, &event(2, &theirs))
            .unwrap();
        store.put_event(&g, &pair, &event(1, &mine)).unwrap();
        store.put_event(&g, &pair, &event(2, &theirs)).unwrap();
        store
            .put_event(&h, &Channel::Staff, &event(1, &mine))
            .unwrap();
        // A hub note naming the key is not something it signed.
        let note = StoredEvent {
            seq: 2,
            ts: 0,
            env: None,
            note: Some(peerhub_protocol::frame::Note::MuteEnded { member: me }),
            redacted: None,
        };
        store.put_event(&h, &Channel::Main, &note).unwrap();
        let found = store.events_signed_by(&me).unwrap();
        let at: Vec<(&str, Channel, u64)> = found
            .iter()
            .map(|e| (e.group.as_str(), e.channel, e.event.seq))
            .collect();
        assert_eq!(
            at,
            vec![
                ("g", Channel::Main, 1),
                ("g", pair, 1),
                ("h", Channel::Staff, 1)
            ]
        );
        assert!(store
            .events_signed_by(&PublicKey([7; 32]))
            .unwrap()
            .is_empty());
    }
}

/// What [`Store::check_group_logs`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCheck {
    /// Events read and decoded.
    pub events: u64,
    /// Groups whose heads were compared.
    pub groups: u64,
}

impl Store {
    /// Reads every group's log: each event must decode, and each channel's log
    /// must reach the head its group's state records (the last seq acknowledged);
    /// a log that ends before it lost acknowledged messages. A channel with no
    /// events left (retention, an ephemeral session's end) is not judged.
    /// Returns what was read, or what is wrong, in words.
    pub fn check_group_logs(&self) -> Result<LogCheck, String> {
        use std::collections::HashMap;
        let mut last: HashMap<(GroupId, Channel), u64> = HashMap::new();
        let mut check = LogCheck::default();
        for item in self.t().groupid_seq_event.iter() {
            let (key, value) = item.map_err(|e| format!("the group logs cannot be read: {e}"))?;
            let (group, channel, seq) = split_event_key(&key)
                .ok_or_else(|| "a group log holds a key of the wrong shape".to_string())?;
            if let Err(e) = decode::<StoredEvent>("groupid_seq_event", &value) {
                return Err(format!("group {group}: message {seq} is unreadable ({e})"));
            }
            check.events += 1;
            let entry = last.entry((group, channel)).or_insert(0);
            *entry = (*entry).max(seq);
        }
        for item in self.t().groupid_state.iter() {
            let (key, value) = item.map_err(|e| format!("the group states cannot be read: {e}"))?;
            let state: super::records::GroupStateRecord = decode("groupid_state", &value)
                .map_err(|e| format!("a group's state is unreadable ({e})"))?;
            let group = std::str::from_utf8(&key)
                .ok()
                .and_then(|g| GroupId::parse(g).ok())
                .ok_or_else(|| "a group state has a key of the wrong shape".to_string())?;
            check.groups += 1;
            for (channel, head) in &state.heads {
                let end = last.get(&(group.clone(), *channel)).copied().unwrap_or(0);
                if end != 0 && end < *head {
                    return Err(format!(
                        "group {group}: its log ends at message {end}, but messages up to \
                         {head} were acknowledged"
                    ));
                }
            }
        }
        Ok(check)
    }
}
