//! Key layouts of every sled tree. The only place that builds or splits store keys.
//!
//! | tree                  | key                                   | value            |
//! | --------------------- | ------------------------------------- | ---------------- |
//! | `meta`                | utf-8 name                            | utf-8 / JSON     |
//! | `key_account`         | public key (32 bytes)                 | `AccountRecord`  |
//! | `key_counter`         | public key (32 bytes)                 | u64 big-endian   |
//! | `tokenhash_invite`    | SHA-256 of the invite token (32)      | `InviteRecord`   |
//! | `groupid_group`       | group id (utf-8)                      | `GroupRecord`    |
//! | `groupid_key_member`  | group id ‖ 0x00 ‖ public key (32)     | `MemberRecord`   |
//! | `groupid_seq_event`   | group id ‖ 0x00 ‖ seq (u64 big-endian)| `StoredEvent`    |
//! | `seq_audit`           | seq (u64 big-endian), from 1          | audit entry      |
//!
//! Group ids never contain 0x00 ([`GroupId`] allows `a-z0-9-` only), so `id ‖ 0x00`
//! is an exact prefix for one group, and big-endian seqs sort numerically.

use peerhub_protocol::{GroupId, PublicKey};

/// `group ‖ 0x00`: the prefix of every per-group key.
pub fn group_prefix(group: &GroupId) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.as_str().len() + 1 + 32);
    key.extend_from_slice(group.as_str().as_bytes());
    key.push(0);
    key
}

/// Key of one event in `groupid_seq_event`.
pub fn event_key(group: &GroupId, seq: u64) -> Vec<u8> {
    let mut key = group_prefix(group);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq at the end of an `event_key`, if the key has that shape.
pub fn seq_of_event_key(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    (key.len() > 9 && key[key.len() - 9] == 0).then(|| u64::from_be_bytes(tail))
}

/// Key of one member in `groupid_key_member`.
pub fn member_key(group: &GroupId, key: &PublicKey) -> Vec<u8> {
    let mut out = group_prefix(group);
    out.extend_from_slice(&key.0);
    out
}

/// A counter value as stored.
pub fn counter_bytes(counter: u64) -> [u8; 8] {
    counter.to_be_bytes()
}

/// A stored counter value; malformed values read as 0 (never stored by us).
pub fn counter_from(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_round_trip_and_sort_by_seq() {
        let g = GroupId::parse("demo").unwrap();
        for seq in [0, 1, 255, 256, u64::MAX] {
            assert_eq!(seq_of_event_key(&event_key(&g, seq)), Some(seq));
        }
        assert!(event_key(&g, 2) < event_key(&g, 10));
        assert!(event_key(&g, 255) < event_key(&g, 256));
    }

    #[test]
    fn one_group_prefix_never_covers_another_group() {
        let a = GroupId::parse("a").unwrap();
        let ab = GroupId::parse("ab").unwrap();
        assert!(!event_key(&ab, 1).starts_with(&group_prefix(&a)));
        assert!(event_key(&a, 1).starts_with(&group_prefix(&a)));
    }

    #[test]
    fn member_keys_hold_the_whole_key() {
        let g = GroupId::parse("g").unwrap();
        let k = PublicKey([0xAB; 32]);
        let key = member_key(&g, &k);
        assert_eq!(&key[key.len() - 32..], &k.0);
        assert!(key.starts_with(&group_prefix(&g)));
    }

    #[test]
    fn counters_round_trip() {
        assert_eq!(counter_from(&counter_bytes(42)), 42);
        assert_eq!(counter_from(b"bad"), 0);
    }
}
