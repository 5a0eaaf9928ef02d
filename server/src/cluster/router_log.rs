//! The escalation router on one node at a time (docs/CLUSTER.md §6): the node
//! holding the `router` lease runs the same router as one node does, on its own
//! store, and appends what each of its commits wrote — escalation records and the
//! rota — as one record to the router's log (`peerhub.log._router`, fenced like a
//! group's log) before anyone hears of it. A node taking the router over first
//! brings its store to the log's tail, so the router it starts finds every
//! unresolved escalation there and re-arms its deadline, as a restarted node
//! does. A routing step's effects, once performed, are marked done in the same
//! log (`RouterOp::StepDone`), so the next leader does not perform them again.
//!
//! **Trimming the log** ([`RouterOwned::rebase`], from the leader's retention
//! pass, inside the router's task so no commit lands between): the leader
//! appends its whole state — a [`RouterOp::Rebase`] first, then the rota, every
//! escalation its store still holds (retention has deleted the expired ones) and
//! their step marks, in records of at most [`super::rebase::RECORD_BYTES`] — and
//! only once all of it is in the log erases every record before the first with
//! the message delete that overwrites. A copy whose next record was erased (a
//! node that did not lead for a while, or a new one) forgets its escalations and
//! step marks and starts again from that first record; any other gap is still
//! refused. A leader that dies part-way erased nothing: the records it appended
//! are plain writes of what the store held.
//!
//! Logs name sequence numbers and epochs, never a record.

use serde::{Deserialize, Serialize};

use super::lease::LeaseKeeper;
use super::log::{GroupLogs, GroupWriter, LogRecord, RecordKind};
use super::node::ClusterNode;
use super::ClusterError;
use crate::store::records::EscalationRecord;
use crate::store::{Store, StoreError};
use peerhub_protocol::escalation::RotaEntry;

/// The router's lease.
pub const LEASE: &str = "router";
/// The router's log, a subject token no group id can be (group ids have no `_`).
pub const LOG: &str = "_router";

/// One write of a router commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RouterOp {
    /// An escalation written (opened, merged, moved a level, acted on).
    Escalation {
        /// The record, as sled stores it.
        record: Box<EscalationRecord>,
    },
    /// The rota replaced.
    Rota {
        /// Its entries.
        entries: Vec<RotaEntry>,
    },
    /// A routing step's effects (pages, pushes, notices) were performed: the
    /// escalation's routing level `level`, and so every level below it. Written
    /// after the effects, so a leader that died before writing it leaves the
    /// step to be performed again by the next (docs/CLUSTER.md §6).
    StepDone {
        /// The escalation.
        id: u64,
        /// The routing level whose effects were performed.
        level: u8,
    },
    /// The first write of a rebase: this record and the ones after it hold the
    /// router's whole state (see the module's text). `high` is the highest
    /// escalation id ever handed out, so none is handed out again.
    Rebase {
        /// The highest escalation id ever stored.
        high: u64,
    },
}

/// What a rebase of the router's log did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterRebased {
    /// Escalations written again.
    pub escalations: usize,
    /// Records they took.
    pub records: usize,
    /// Records erased before the first of them.
    pub erased: u64,
}

#[derive(Serialize, Deserialize)]
struct WriteSet {
    v: u32,
    ops: Vec<RouterOp>,
}

const VERSION: u32 = 1;

/// The writes one record of the router's log holds (none for a fence).
pub fn ops_of(record: &LogRecord) -> Result<Vec<RouterOp>, ClusterError> {
    if record.kind == RecordKind::Fence {
        return Ok(Vec::new());
    }
    decode(&record.payload)
}

fn decode(payload: &[u8]) -> Result<Vec<RouterOp>, ClusterError> {
    let set: WriteSet = super::from_json("router write set", payload)?;
    if set.v != VERSION {
        return Err(ClusterError::Corrupt {
            what: "router write set",
            reason: format!("format version {} (this node reads {VERSION})", set.v),
        });
    }
    Ok(set.ops)
}

/// Applies one record of the router's log; `false` if applied before. A gap or
/// an unreadable record is refused and changes nothing.
pub fn apply(store: &Store, record: &LogRecord) -> Result<bool, ClusterError> {
    if record.kind == RecordKind::Fence {
        return Ok(false);
    }
    let (applied, _) = store.router_applied()?;
    if record.seq <= applied {
        return Ok(false);
    }
    let ops = decode(&record.payload)?;
    if record.seq != applied + 1 {
        // Only a rebase's first record may follow a gap: everything before it
        // was erased once the whole state was in the log after it.
        if !matches!(ops.first(), Some(RouterOp::Rebase { .. })) {
            return Err(ClusterError::Corrupt {
                what: "router log record",
                reason: format!("record {} follows {applied}: a gap", record.seq),
            });
        }
        store.forget_escalations()?;
    }
    for op in ops {
        match op {
            RouterOp::Escalation { record } => store.put_escalation(&record)?,
            RouterOp::Rota { entries } => store.put_rota(&entries)?,
            RouterOp::StepDone { id, level } => store.put_step_done(id, level)?,
            RouterOp::Rebase { high } => store.raise_escalation_id_high(high)?,
        }
    }
    store.put_router_applied(record.seq, record.stream_seq)?;
    Ok(true)
}

/// Applies what the router's log holds past the store's mark; returns the record
/// the store is at.
pub async fn catch_up(store: &Store, logs: &GroupLogs) -> Result<u64, ClusterError> {
    let (mut applied, stream_seq) = store.router_applied()?;
    for record in logs.read_since(LOG, stream_seq).await? {
        if apply(store, &record)? {
            applied = record.seq;
        }
    }
    Ok(applied)
}

/// The router, led by this node.
#[derive(Debug)]
pub struct RouterOwned {
    /// The `router` lease, renewed in the background.
    pub(crate) keeper: LeaseKeeper,
    writer: GroupWriter,
    /// The writes of the commit being built.
    pub(crate) ops: Vec<RouterOp>,
    /// The directory, asked for a role this node's copy does not show yet.
    directory: super::directory::Directory,
}

/// Tries to take the router for this node: `None` while another node leads.
pub async fn take(node: &ClusterNode, store: &Store) -> Result<Option<RouterOwned>, ClusterError> {
    let lease = match node.leases.acquire(LEASE, &node.holder).await {
        Ok(lease) => lease,
        Err(ClusterError::Held { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let writer = node.logs.writer(LOG, &lease).await?;
    let keeper = node.leases.keep(lease);
    let at = catch_up(store, &node.logs).await?;
    if at != writer.last_seq() {
        return Err(ClusterError::Corrupt {
            what: "router log",
            reason: format!(
                "this node's copy is at {at}, the log at {}",
                writer.last_seq()
            ),
        });
    }
    tracing::info!(
        epoch = writer.epoch(),
        seq = at,
        "leading the escalation router"
    );
    Ok(Some(RouterOwned {
        keeper,
        writer,
        ops: Vec::new(),
        directory: node.directory.clone(),
    }))
}

/// The records a rebase erases (those before `floor`, the stream sequence of
/// its first record), newest first. A leader that dies part way through then
/// leaves the oldest records and the rebase, never a gap before a record that is
/// not the rebase: a copy starting from nothing (a new node) applies what is
/// left of the old records and then the rebase, which [`apply`] takes after a
/// gap. Erased oldest first, such a copy met a gap into an old record, was
/// refused, and that node could never lead the router.
fn erase_order(log: impl Iterator<Item = u64>, floor: u64) -> Vec<u64> {
    let mut before: Vec<u64> = log.filter(|&seq| seq < floor).collect();
    before.sort_unstable_by(|a, b| b.cmp(a));
    before
}

impl RouterOwned {
    /// `key`'s roles as the directory holds them now, waiting at most `within`;
    /// `None` when it does not answer in time. This node's store follows the
    /// directory a moment behind other nodes' writes (the mirror); this is for
    /// a refusal that a role granted elsewhere a moment ago would turn into a
    /// yes (`escalation/router/roles.rs`).
    pub(crate) async fn directory_roles(
        &self,
        key: &peerhub_protocol::PublicKey,
        within: std::time::Duration,
    ) -> Option<Vec<peerhub_protocol::frame::Role>> {
        match tokio::time::timeout(within, self.directory.roles(key)).await {
            Ok(Ok(roles)) => Some(roles),
            Ok(Err(error)) => {
                tracing::warn!(%error, "the directory did not answer a role check");
                None
            }
            Err(_) => {
                tracing::warn!("the directory did not answer a role check in time");
                None
            }
        }
    }

    /// Appends the commit's writes as one record of the router's log; returns
    /// once the stream acknowledged it. Refused once the lease has run out.
    pub(crate) async fn append(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.ops);
        self.append_ops(store, &ops).await.map(|_| ())
    }

    /// Appends `ops` as one record; its place in the log.
    async fn append_ops(
        &mut self,
        store: &Store,
        ops: &[RouterOp],
    ) -> Result<super::log::Appended, StoreError> {
        #[derive(Serialize)]
        struct Out<'a> {
            v: u32,
            ops: &'a [RouterOp],
        }
        let payload = super::to_json(&Out { v: VERSION, ops });
        let appended =
            super::owner::append_while_held(&self.keeper, &mut self.writer, payload, "router")
                .await?;
        store.put_router_applied(appended.seq, appended.stream_seq)?;
        Ok(appended)
    }

    /// Trims the router's log behind its whole state (see the module's text).
    /// `store` is the leader's, at the log's tail, with nothing pending. A
    /// rebase cut short is harmless and finished by the next one.
    pub(crate) async fn rebase(&mut self, store: &Store) -> Result<RouterRebased, StoreError> {
        debug_assert!(self.ops.is_empty(), "a rebase runs between commits");
        let escalations = store.escalations()?;
        let mut ops = Vec::with_capacity(escalations.len() + 2);
        ops.push(RouterOp::Rebase {
            high: store.escalation_id_high()?,
        });
        ops.push(RouterOp::Rota {
            entries: store.rota()?,
        });
        for record in &escalations {
            let id = record.view.id;
            ops.push(RouterOp::Escalation {
                record: Box::new(record.clone()),
            });
            let level = store.step_done(id)?;
            if level > 0 {
                ops.push(RouterOp::StepDone { id, level });
            }
        }
        let sets = super::rebase::chunks(ops);
        let mut floor = None;
        for set in &sets {
            let appended = self.append_ops(store, set).await?;
            floor.get_or_insert(appended.stream_seq);
        }
        let floor = floor.unwrap_or(u64::MAX);
        let replication = |error: ClusterError| StoreError::Replication(error.to_string());
        let logs = self.writer.logs().clone();
        let log = logs.read_all(LOG).await.map_err(replication)?;
        let before = erase_order(log.iter().map(|record| record.stream_seq), floor);
        if !self.keeper.is_held() {
            return Err(StoreError::Replication(
                "this node's lease on the router ran out".into(),
            ));
        }
        let erased = logs.erase_records(&before).await.map_err(replication)?;
        let rebased = RouterRebased {
            escalations: escalations.len(),
            records: sets.len(),
            erased,
        };
        tracing::info!(
            escalations = rebased.escalations,
            records = rebased.records,
            erased,
            "router log rebased"
        );
        Ok(rebased)
    }

    /// Hands the router on (a clean stop).
    pub(crate) async fn release(self) {
        if let Err(error) = self.keeper.release().await {
            tracing::warn!(%error, "could not release the router lease; it runs out by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::log::RecordKind;

    fn record(seq: u64, ops: &[RouterOp]) -> LogRecord {
        LogRecord {
            seq,
            stream_seq: seq * 10,
            epoch: 1,
            kind: RecordKind::Event,
            holder: "n1-0".into(),
            msg_id: format!("_router-{seq}"),
            payload: super::super::to_json(&serde_json::json!({ "v": VERSION, "ops": ops })),
        }
    }

    /// A rota of `n` entries.
    fn rota(n: usize) -> RouterOp {
        RouterOp::Rota {
            entries: vec![
                RotaEntry {
                    supervisor: peerhub_protocol::PublicKey([1; 32]),
                    start_ms: 0,
                    end_ms: 1,
                    level: 1,
                };
                n
            ],
        }
    }

    #[test]
    fn only_a_rebase_may_follow_a_gap_and_then_the_copy_starts_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(apply(
            &store,
            &record(1, &[rota(1), RouterOp::StepDone { id: 4, level: 2 }])
        )
        .unwrap());
        // A gap into anything but a rebase is refused and changes nothing.
        let refused = apply(&store, &record(3, &[rota(2)]));
        assert!(
            matches!(refused, Err(ClusterError::Corrupt { .. })),
            "{refused:?}"
        );
        assert_eq!(store.router_applied().unwrap().0, 1);
        assert_eq!(store.rota().unwrap().len(), 1);
        assert_eq!(store.step_done(4).unwrap(), 2);
        // Into a rebase: the copy forgets what the erased records said and
        // starts from it; the highest id only rises.
        assert!(apply(&store, &record(5, &[RouterOp::Rebase { high: 9 }, rota(3)])).unwrap());
        assert_eq!(store.router_applied().unwrap().0, 5);
        assert_eq!(store.rota().unwrap().len(), 3);
        assert_eq!(
            store.step_done(4).unwrap(),
            0,
            "marks of the erased records forgotten"
        );
        assert_eq!(store.escalation_id_high().unwrap(), 9);
        assert!(store.next_escalation_id().unwrap() > 9);
        // Applied in order (no gap), a rebase forgets nothing.
        store.put_step_done(4, 1).unwrap();
        assert!(apply(&store, &record(6, &[RouterOp::Rebase { high: 2 }])).unwrap());
        assert_eq!(store.step_done(4).unwrap(), 1);
        assert_eq!(store.escalation_id_high().unwrap(), 9);
    }

    /// A rebase erasing the records before it, cut off after any number of
    /// erasures: a copy at any mark, a new node's among them, catches up from
    /// what is left and ends at the rebase's state.
    #[test]
    fn a_rebase_cut_off_part_way_through_its_erasures_leaves_a_log_every_copy_can_follow() {
        let mut log: Vec<LogRecord> = (1..=6)
            .map(|seq| {
                record(
                    seq,
                    &[rota(seq as usize), RouterOp::StepDone { id: seq, level: 1 }],
                )
            })
            .collect();
        log.push(record(7, &[RouterOp::Rebase { high: 3 }, rota(9)]));
        log.push(record(8, &[RouterOp::StepDone { id: 3, level: 2 }]));
        let floor = log[6].stream_seq;
        let order = erase_order(log.iter().map(|r| r.stream_seq), floor);
        assert_eq!(order.len(), 6, "every record before the rebase");
        for cut in 0..=order.len() {
            let left: Vec<&LogRecord> = log
                .iter()
                .filter(|r| !order[..cut].contains(&r.stream_seq))
                .collect();
            for mark in 0..=6u64 {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path()).unwrap();
                // The copy applied records 1..=mark before the rebase began.
                for earlier in &log[..mark as usize] {
                    assert!(apply(&store, earlier).unwrap());
                }
                for next in left.iter().filter(|r| r.seq > mark) {
                    apply(&store, next).unwrap_or_else(|error| {
                        panic!("cut after {cut} erasures, a copy at {mark}: {error}")
                    });
                }
                assert_eq!(store.router_applied().unwrap().0, 8);
                assert_eq!(store.rota().unwrap().len(), 9);
                assert_eq!(store.step_done(3).unwrap(), 2);
                assert_eq!(store.escalation_id_high().unwrap(), 3);
            }
        }
    }
}
