//! Rebasing a group's log (docs/CLUSTER.md §8, "Erase"): after an erasure's
//! write set, a record earlier in the log may still hold the erased words beside
//! other people's live events, so trimming up to the first live event is not
//! enough. The owner appends the current version of every live event again after
//! the tail (in as many records as their size needs, each well under NATS's
//! largest payload), then trims ([`super::trim::trim`]): every live event's
//! latest write is now in the new records, so the snapshot's floor is the first
//! of them and every record before it is erased with the message delete that
//! overwrites. Followers apply the new records as any others (each rewrites an
//! event with the same content), and a copy whose next record was erased is
//! rebuilt from the snapshot ([`super::trim::restore`]).
//!
//! Logs name groups and counts, never content or keys.

use peerhub_protocol::GroupId;
use serde::{Deserialize, Serialize};

use super::owner::Owned;
use super::replica::GroupOp;
use super::{trim, ClusterError};
use crate::store::Store;

/// The most bytes of encoded events one rebase record carries: NATS refuses a
/// payload over its `max_payload` (1 MiB by default).
pub const RECORD_BYTES: usize = 256 * 1024;

/// What a rebase did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebased {
    /// Live events appended again.
    pub events: usize,
    /// Records they took.
    pub records: usize,
    /// Records erased behind the new floor.
    pub erased: u64,
}

/// Splits `ops` into write sets of at most [`RECORD_BYTES`] encoded bytes each
/// (an op larger than that alone makes a set of its own), in order.
pub(crate) fn chunks<T: Serialize>(ops: Vec<T>) -> Vec<Vec<T>> {
    let mut sets = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for op in ops {
        let len = serde_json::to_vec(&op).map_or(RECORD_BYTES, |bytes| bytes.len());
        if !current.is_empty() && size + len > RECORD_BYTES {
            sets.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(op);
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}

/// The owner's rebase of `group`'s log (see the module's text), from this
/// store's copy, which is at the log's tail. Refused when the lease has run
/// out or a newer owner wrote ([`ClusterError::Fenced`]); a rebase that stopped
/// part-way is finished by running it again.
pub async fn rebase(
    owned: &mut Owned,
    store: &Store,
    group: &GroupId,
) -> Result<Rebased, ClusterError> {
    let records = owned.logs().read_all(group.as_str()).await?;
    let mut live = trim::live(&records)?;
    live.sort();
    let mut ops = Vec::with_capacity(live.len());
    for (channel, seq) in live {
        if let Some(event) = store.event(group, &channel, seq)? {
            ops.push(GroupOp::Event { channel, event });
        }
    }
    let events = ops.len();
    let sets = chunks(ops);
    let records = sets.len();
    for set in sets {
        owned.commit(store, group, &set).await?;
    }
    let erased = owned.trim(store, group).await?;
    tracing::info!(%group, events, records, erased, "group log rebased");
    Ok(Rebased {
        events,
        records,
        erased,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::StoredEvent;
    use peerhub_protocol::frame::Channel;

    fn event(seq: u64, body: usize) -> GroupOp {
        GroupOp::Event {
            channel: Channel::Main,
            event: StoredEvent {
                seq,
                ts: seq,
                env: None,
                note: Some(peerhub_protocol::frame::Note::SupportResolved {
                    member: peerhub_protocol::PublicKey([0; 32]),
                }),
                redacted: Some(peerhub_protocol::frame::Redaction {
                    by: peerhub_protocol::PublicKey([1; 32]),
                    reason: "x".repeat(body),
                    control_seq: 0,
                }),
            },
        }
    }

    #[test]
    fn large_sets_are_split_under_the_record_size_and_nothing_is_lost() {
        let ops: Vec<GroupOp> = (1..=40).map(|seq| event(seq, 20_000)).collect();
        let sets = chunks(ops.clone());
        assert!(sets.len() > 1, "split");
        for set in &sets {
            assert!(crate::cluster::replica::encode(set).len() < RECORD_BYTES + 1024);
        }
        assert_eq!(sets.concat(), ops, "every op once, in order");
        assert_eq!(chunks(Vec::<GroupOp>::new()), Vec::<Vec<GroupOp>>::new());
        let one_big = chunks(vec![event(1, RECORD_BYTES)]);
        assert_eq!(one_big.len(), 1);
    }
}
