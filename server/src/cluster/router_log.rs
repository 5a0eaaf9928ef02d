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
    if record.seq != applied + 1 {
        return Err(ClusterError::Corrupt {
            what: "router log record",
            reason: format!("record {} follows {applied}: a gap", record.seq),
        });
    }
    for op in decode(&record.payload)? {
        match op {
            RouterOp::Escalation { record } => store.put_escalation(&record)?,
            RouterOp::Rota { entries } => store.put_rota(&entries)?,
            RouterOp::StepDone { id, level } => store.put_step_done(id, level)?,
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
    }))
}

impl RouterOwned {
    /// Appends the commit's writes as one record of the router's log; returns
    /// once the stream acknowledged it. Refused once the lease has run out.
    pub(crate) async fn append(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.ops);
        #[derive(Serialize)]
        struct Out<'a> {
            v: u32,
            ops: &'a [RouterOp],
        }
        let payload = super::to_json(&Out {
            v: VERSION,
            ops: &ops,
        });
        let appended =
            super::owner::append_while_held(&self.keeper, &mut self.writer, payload, "router")
                .await?;
        store.put_router_applied(appended.seq, appended.stream_seq)?;
        Ok(())
    }

    /// Hands the router on (a clean stop).
    pub(crate) async fn release(self) {
        if let Err(error) = self.keeper.release().await {
            tracing::warn!(%error, "could not release the router lease; it runs out by itself");
        }
    }
}
