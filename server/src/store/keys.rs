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
//! | `groupid_seq_event`   | group id ‖ 0x00 ‖ channel ‖ seq (u64 BE) | `StoredEvent` |
//! | `groupid_state`       | group id (utf-8)                      | `GroupStateRecord` |
//! | `groupid_key_allowed` | group id ‖ 0x00 ‖ public key (32)     | empty (virtual-group invitee) |
//! | `recordid_record`     | record id (u64 big-endian)            | `RecordRecord`   |
//! | `key_recordid`        | public key (32) ‖ record id (u64 BE)  | empty (index: records about a key) |
//! | `escid_escalation`    | escalation id (u64 big-endian)        | `EscalationRecord` |
//! | `escindex_escid`      | `s` ‖ subject key (32) ‖ id (u64 BE)  | empty (escalations about a key) |
//! |                       | `f` ‖ flagger key (32) ‖ id (u64 BE)  | empty (escalations a key flagged) |
//! |                       | `t` ‖ state (1: 0 open, 1 acknowledged, 2 resolved) ‖ id | empty |
//! |                       | `h` ‖ handler key (32) ‖ id (u64 BE)  | empty (escalations a supervisor has) |
//! | `meta` `rota`         | —                                     | JSON `[RotaEntry]` |
//! | `meta` `audit_anchor` | —                                     | JSON `{seq, hash}`: last audit entry pruned (see `store::retention`) |
//! | `seq_audit`           | seq (u64 big-endian), from 1          | audit entry      |
//! | `key_pushsub`         | public key (32) ‖ SHA-256 of the endpoint (32) | `PushSubscriptionRecord` |
//! | `meta` `vapid_secret` | —                                     | the hub's VAPID P-256 private key (32 bytes) |
//! | `meta` `escalation_id_high` | —                               | u64 BE: the highest escalation id ever stored (ids are never used again) |
//! | `meta` `audit_chain_id` | —                                   | 16 hex: this folder's audit chain in a cluster's `PEERHUB_AUDIT` |
//!
//! Group ids never contain 0x00 ([`GroupId`] allows `a-z0-9-` only), so `id ‖ 0x00`
//! is an exact prefix for one group, and big-endian seqs sort numerically.
//! A channel is one byte: 0 main, 1 staff, or 2 followed by the pair's two keys
//! (64 bytes, sorted) — fixed lengths, so a channel's prefix never covers another's.

use peerhub_protocol::frame::Channel;
use peerhub_protocol::{GroupId, PublicKey};

/// `group ‖ 0x00`: the prefix of every per-group key.
pub fn group_prefix(group: &GroupId) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.as_str().len() + 1 + 32);
    key.extend_from_slice(group.as_str().as_bytes());
    key.push(0);
    key
}

/// `group ‖ 0x00 ‖ channel`: the prefix of one channel's events.
pub fn channel_prefix(group: &GroupId, channel: &Channel) -> Vec<u8> {
    let mut key = group_prefix(group);
    match channel {
        Channel::Main => key.push(0),
        Channel::Staff => key.push(1),
        Channel::Pair([a, b]) => {
            key.push(2);
            key.extend_from_slice(&a.0);
            key.extend_from_slice(&b.0);
        }
    }
    key
}

/// Key of one event in `groupid_seq_event`.
pub fn event_key(group: &GroupId, channel: &Channel, seq: u64) -> Vec<u8> {
    let mut key = channel_prefix(group, channel);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Key in `key_recordid`.
pub fn record_index_key(about: &PublicKey, id: u64) -> Vec<u8> {
    let mut key = about.0.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The record id at the end of a `key_recordid` key.
pub fn record_id_of_index_key(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(32..40)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Index prefix of the escalations about a key.
pub const ESC_BY_SUBJECT: u8 = b's';
/// Index prefix of the escalations a key flagged.
pub const ESC_BY_FLAGGER: u8 = b'f';
/// Index prefix of the escalations in a state.
pub const ESC_BY_STATE: u8 = b't';
/// Index prefix of the escalations a supervisor has.
pub const ESC_BY_HANDLER: u8 = b'h';

/// `tag ‖ key`: the prefix of one key's escalations in `escindex_escid`.
pub fn escalation_key_prefix(tag: u8, key: &PublicKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(41);
    out.push(tag);
    out.extend_from_slice(&key.0);
    out
}

/// `t ‖ state`: the prefix of the escalations in one state.
pub fn escalation_state_prefix(state: u8) -> Vec<u8> {
    vec![ESC_BY_STATE, state]
}

/// Every `escindex_escid` key of one escalation.
pub fn escalation_index_keys(
    id: u64,
    about: &PublicKey,
    flaggers: &[PublicKey],
    state: u8,
    handler: Option<&PublicKey>,
) -> Vec<Vec<u8>> {
    let with_id = |mut key: Vec<u8>| {
        key.extend_from_slice(&id.to_be_bytes());
        key
    };
    let mut keys = vec![
        with_id(escalation_key_prefix(ESC_BY_SUBJECT, about)),
        with_id(escalation_state_prefix(state)),
    ];
    for flagger in flaggers {
        keys.push(with_id(escalation_key_prefix(ESC_BY_FLAGGER, flagger)));
    }
    if let Some(handler) = handler {
        keys.push(with_id(escalation_key_prefix(ESC_BY_HANDLER, handler)));
    }
    keys
}

/// The escalation id at the end of an `escindex_escid` key.
pub fn escalation_id_of_index_key(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// The seq at the end of an `event_key`.
pub fn seq_of_event_key(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
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

/// Key in `key_pushsub`: the staff key, then SHA-256 of the endpoint (fixed length,
/// so one key's prefix never covers another's).
pub fn push_subscription_key(key: &PublicKey, endpoint: &str) -> Vec<u8> {
    use sha2::Digest as _;
    let mut out = key.0.to_vec();
    out.extend_from_slice(&sha2::Sha256::digest(endpoint.as_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_round_trip_and_sort_by_seq() {
        let g = GroupId::parse("demo").unwrap();
        let pair = Channel::pair(PublicKey([9; 32]), PublicKey([1; 32]));
        for channel in [Channel::Main, Channel::Staff, pair] {
            for seq in [0, 1, 255, 256, u64::MAX] {
                let key = event_key(&g, &channel, seq);
                assert_eq!(seq_of_event_key(&key), Some(seq));
                assert!(key.starts_with(&channel_prefix(&g, &channel)));
            }
            assert!(event_key(&g, &channel, 2) < event_key(&g, &channel, 10));
            assert!(event_key(&g, &channel, 255) < event_key(&g, &channel, 256));
        }
    }

    #[test]
    fn one_prefix_never_covers_another_group_or_channel() {
        let a = GroupId::parse("a").unwrap();
        let ab = GroupId::parse("ab").unwrap();
        assert!(!event_key(&ab, &Channel::Main, 1).starts_with(&group_prefix(&a)));
        assert!(event_key(&a, &Channel::Main, 1).starts_with(&group_prefix(&a)));
        let pair = Channel::pair(PublicKey([0; 32]), PublicKey([0; 32]));
        for (x, y) in [
            (Channel::Main, Channel::Staff),
            (Channel::Main, pair),
            (Channel::Staff, pair),
        ] {
            assert!(!event_key(&a, &x, 7).starts_with(&channel_prefix(&a, &y)));
            assert!(!event_key(&a, &y, 7).starts_with(&channel_prefix(&a, &x)));
        }
    }

    #[test]
    fn record_index_keys_round_trip() {
        let key = record_index_key(&PublicKey([4; 32]), 77);
        assert_eq!(record_id_of_index_key(&key), Some(77));
        assert!(key.starts_with(&[4; 32]));
    }

    #[test]
    fn escalation_index_keys_round_trip_and_never_cover_another_key() {
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let keys = escalation_index_keys(300, &a, &[b], 1, Some(&b));
        assert_eq!(keys.len(), 4);
        for key in &keys {
            assert_eq!(escalation_id_of_index_key(key), Some(300));
        }
        assert!(keys[0].starts_with(&escalation_key_prefix(ESC_BY_SUBJECT, &a)));
        assert!(!keys[0].starts_with(&escalation_key_prefix(ESC_BY_SUBJECT, &b)));
        assert!(keys[1].starts_with(&escalation_state_prefix(1)));
        assert!(keys[2].starts_with(&escalation_key_prefix(ESC_BY_FLAGGER, &b)));
        assert!(keys[3].starts_with(&escalation_key_prefix(ESC_BY_HANDLER, &b)));
        let later = escalation_index_keys(301, &a, &[], 1, None);
        assert!(keys[0] < later[0], "ids sort numerically under a key");
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
