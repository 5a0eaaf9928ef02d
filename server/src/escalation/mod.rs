//! Distress escalation: flags reach the on-call supervisor, with deadlines and
//! re-routing, and are never silently lost.
//!
//! One task, the [`router::EscalationRouter`], owns every open escalation, its
//! deadline, the on-call rota, and the list of logged-in connections it may need to
//! tell (supervisors and admins, facilitators, flaggers, the people flags are
//! about). It is separate from the group tasks on purpose: no group sanction (mute,
//! pause, slow mode, waiting room, removal) is ever in a flag's way.
//!
//! ```text
//! session ──flag──► router ──write + audit + commit──► ack to the flagger
//!                     │ level 1: on-call primary (rota) ─deadline─► level 2: second line
//!                     │ ─deadline─► level 3: every supervisor and admin
//!                     │ ─deadline─► level 4: the facilitators and the flagger are told
//!                     │             plainly, with the helplines (it stays open)
//!                     └──► alerts (content-free summaries): pager formats and Web
//!                          Push, repeated until acknowledged (see `alerts`)
//! ```
//!
//! Every step is written (and flushed) before anyone hears of it, and written to the
//! audit chain with the signed command that caused it. At start the router loads
//! every unresolved escalation and re-arms its deadline, so a restart loses none.
//! A routing step's effects (page, pushes, unanswered notices) are marked done
//! once performed (`store::steps`), and a router starting performs only a step
//! not marked: at least once, and never again once marked.

pub mod alerts;
pub mod pager;
pub mod push;
pub mod rota;
mod router;
pub mod staff;
pub mod subscriptions;

use std::time::Duration;

use peerhub_protocol::escalation::{Helpline, Severity};
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::{EscalationActPayload, FlagPayload};
use peerhub_protocol::{PublicKey, SignedEnvelope};
use tokio::sync::mpsc;

pub use router::EscalationRouter;

use crate::error::ServerError;
use crate::outbound::{ConnId, Outbox};

/// Messages of the group attached to a flag as its context (at most; see
/// [`EscalationSettings::max_context_bytes`]).
pub const CONTEXT_MESSAGES: usize = 20;

/// Keys of flaggers kept per escalation to tell them how it goes; more are
/// counted, and were answered with the helplines when they flagged.
pub const MAX_FLAGGERS_TOLD: usize = 64;

/// Items in one `escalation_detail` page at most (fewer if they pass the byte cap).
pub const DETAIL_PAGE_ITEMS: usize = 50;

/// Escalation settings.
#[derive(Debug, Clone)]
pub struct EscalationSettings {
    /// Time to acknowledge, per severity.
    pub concern_deadline: Duration,
    /// Time to acknowledge an urgent flag.
    pub urgent_deadline: Duration,
    /// Time to acknowledge an emergency.
    pub emergency_deadline: Duration,
    /// Signposting sent with every flag answer and unanswered notice.
    pub helplines: Vec<Helpline>,
    /// What the person a flag is about is told.
    pub support_wording: String,
    /// Where to POST a signed notice at every routing step, if anywhere.
    pub pager_url: Option<String>,
    /// Flags kept in full per escalation, the first included; later merged flags
    /// are counted (and audited) only.
    pub max_kept_flags: usize,
    /// Bytes of context (signed envelopes) copied into an escalation at most.
    pub max_context_bytes: usize,
    /// Summaries per `escalations` page, and pushed at login.
    pub page_size: usize,
    /// Bytes of items in one `escalation_detail` page at most (one item always).
    pub detail_page_bytes: usize,
    /// The pager hook's format.
    pub pager_format: pager::PagerFormat,
    /// The pager's routing key, API key or token, if it needs one (a secret).
    pub pager_key: Option<secrecy::SecretString>,
    /// How often a Web Push is re-sent while its escalation waits.
    pub push_repeat: Duration,
    /// The VAPID contact (`mailto:` or `https:`); empty: the hub's public URL.
    pub push_contact: String,
}

impl Default for EscalationSettings {
    fn default() -> Self {
        Self {
            concern_deadline: Duration::from_secs(15 * 60),
            urgent_deadline: Duration::from_secs(3 * 60),
            emergency_deadline: Duration::from_secs(60),
            helplines: peerhub_protocol::escalation::default_helplines(),
            support_wording: "Someone has asked a supervisor to offer you support. \
                 You are not in trouble; a supervisor may get in touch privately."
                .into(),
            pager_url: None,
            max_kept_flags: 20,
            max_context_bytes: 64 * 1024,
            page_size: 100,
            detail_page_bytes: 256 * 1024,
            pager_format: pager::PagerFormat::Generic,
            pager_key: None,
            push_repeat: Duration::from_secs(60),
            push_contact: String::new(),
        }
    }
}

impl EscalationSettings {
    /// The pager hook's settings, if one is configured.
    pub fn pager(&self) -> Option<pager::PagerSettings> {
        self.pager_url.as_ref().map(|url| pager::PagerSettings {
            format: self.pager_format,
            url: url.clone(),
            key: self.pager_key.clone(),
        })
    }

    /// Time to acknowledge a flag of `severity`, at each level.
    pub fn deadline(&self, severity: Severity) -> Duration {
        match severity {
            Severity::Concern => self.concern_deadline,
            Severity::Urgent => self.urgent_deadline,
            Severity::Emergency => self.emergency_deadline,
        }
    }
}

/// What sessions ask of the router. Answers go to the outbox.
#[derive(Debug)]
pub(crate) enum RouterCommand {
    /// A connection logged in.
    Register {
        outbox: Outbox,
        key: PublicKey,
        roles: Vec<Role>,
    },
    /// A connection closed.
    Unregister { conn: ConnId },
    /// Its roles changed (an invite was redeemed).
    Roles { conn: ConnId, roles: Vec<Role> },
    /// A flag. `over_key_limit`: the key has flagged too often; the flag is checked
    /// and counted on the open escalation about the same person, if there is one,
    /// and the session (not the router) answers it `rate_limited` with the
    /// helplines.
    Raise {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: FlagPayload,
        over_key_limit: bool,
        /// Held until the flag is handled (admission.rs).
        ticket: crate::admission::CounterTicket,
    },
    /// A supervisor's step on an escalation.
    Act {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: EscalationActPayload,
        /// Held until the step is handled (admission.rs).
        ticket: crate::admission::CounterTicket,
    },
    /// A page of the queue (supervisors, admins) or of the escalations about me.
    List {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        after: Option<String>,
        ticket: ReadTicket,
    },
    /// A page of one escalation's flags, steps or context.
    Detail {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        escalation: Option<u64>,
        reference: Option<String>,
        part: peerhub_protocol::escalation::EscalationPart,
        offset: u32,
        ticket: ReadTicket,
    },
    /// Replace the rota (admins).
    SetRota {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: peerhub_protocol::payload::RotaPayload,
        /// Held until the rota is handled (admission.rs).
        ticket: crate::admission::CounterTicket,
    },
    /// Read the rota.
    GetRota {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        ticket: ReadTicket,
    },
    /// May `key` use escalation `escalation`'s private line (§8.5)? Answered at
    /// once; the session then goes to the group's task.
    LineGrant {
        key: PublicKey,
        escalation: u64,
        reply: tokio::sync::oneshot::Sender<Result<LineGrant, ServerError>>,
    },
    /// An operator's command on the queue or the rota (`peerhub escalation
    /// resolve|list`, `peerhub rota list|set`, through the control socket),
    /// answered with what the command prints.
    Operator {
        ask: OperatorAsk,
        reply: tokio::sync::oneshot::Sender<Result<serde_json::Value, crate::admin::AdminError>>,
    },
    /// Cluster mode: trim the router's log behind the leader's whole state
    /// (`cluster::router_log`), after its retention pass deleted escalations.
    /// Answered `None` by a node that does not lead (and on one node); never
    /// sent to another node.
    RebaseLog {
        reply: tokio::sync::oneshot::Sender<
            Result<Option<crate::cluster::router_log::RouterRebased>, String>,
        >,
    },
}

/// What an operator asks of the router on a running hub. In cluster mode it
/// travels to the node that leads the router, so it reads and changes the
/// router's record, never one node's copy.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum OperatorAsk {
    /// Resolve escalation `id` with `outcome`.
    Resolve {
        /// Which.
        id: u64,
        /// What was done.
        outcome: String,
    },
    /// The queue as bounded summaries (`admin::escalations::list`), audited.
    List {
        /// Which.
        filter: crate::admin::escalations::EscalationFilter,
        /// At most this many.
        limit: usize,
    },
    /// The rota the router follows.
    RotaList,
    /// Replace the rota, signed with the hub's key and audited (`rota.set`).
    RotaSet {
        /// The new entries.
        entries: Vec<peerhub_protocol::escalation::RotaEntry>,
    },
}

/// What a supervisor may do on an escalation's private line, as the router saw it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct LineGrant {
    /// The escalation's group.
    pub group: peerhub_protocol::GroupId,
    /// The person it is about.
    pub about: PublicKey,
    /// Whether they may be written to: false while a flag withheld telling them.
    pub tell_subject: bool,
}

/// A connection's one unsigned request to the router under way: taken by the
/// session before it sends `List`, `Detail` or `GetRota`, given back when the
/// router drops the command (after replying). A second request meanwhile is
/// refused, so one connection never queues more than one read on the router.
#[derive(Debug)]
pub(crate) struct ReadTicket(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ReadTicket {
    /// Takes the connection's ticket, or `None` while a request is under way.
    pub(crate) fn take(slot: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> Option<Self> {
        use std::sync::atomic::Ordering;
        slot.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Self(slot.clone()))
    }
}

impl Drop for ReadTicket {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// How many flags were merged into `record` after its first, kept in full or only
/// counted (a record from before the count was kept counts the flags it holds).
pub fn merged_flags(record: &crate::store::records::EscalationRecord) -> u32 {
    let kept = u32::try_from(record.view.flags.len().saturating_sub(1)).unwrap_or(u32::MAX);
    record.merged.max(kept)
}

/// Whether these roles see the escalation queue (supervisors and admins).
pub fn is_staff(roles: &[Role]) -> bool {
    roles
        .iter()
        .any(|r| matches!(r, Role::Supervisor | Role::Admin))
}

/// Whether supervisor `key` reaches `group` now (PROTOCOL.md §13, "Staff
/// model"): an unresolved escalation about the group is routed to them (waiting
/// for them, or theirs) or they are on call. Otherwise a supervisor meets a
/// group's door like anyone. Reads the unresolved escalations through the state
/// index (the router holds the same set in memory), once per supervisor's join.
pub fn supervisor_reaches(
    store: &crate::store::Store,
    key: &PublicKey,
    group: &peerhub_protocol::GroupId,
    now_ms: u64,
) -> Result<bool, crate::store::StoreError> {
    let on_call = store
        .rota()?
        .iter()
        .any(|e| e.supervisor == *key && e.start_ms <= now_ms && now_ms < e.end_ms);
    for record in store.unresolved_escalations()? {
        let view = &record.view;
        if &view.group == group
            && (on_call || view.handler == Some(*key) || view.waiting_for.contains(key))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The opaque reference `key` has to escalation `id`: random to anyone without the
/// hub's secret, different for each person (so two people cannot compare theirs to
/// learn that their flags met in one escalation), and stable across restarts. The
/// sequential id, shared with records, would tell a flagger the hub's volume.
pub fn reference(secret: &[u8; 32], id: u64, key: &PublicKey) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(b"peerhub escalation reference v1\0");
    hash.update(secret);
    hash.update(id.to_be_bytes());
    hash.update(key.0);
    let digest = hash.finalize();
    peerhub_protocol::encoding::b64(&digest[..16])
}

/// A session's line to the router. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    // Sender: sessions. Receiver: the router task. Bounded; a full queue makes the
    // sender wait (and so stop reading its socket) rather than drop a flag.
    tx: mpsc::Sender<RouterCommand>,
}

impl RouterHandle {
    /// A handle on the router that takes from `tx`.
    pub(crate) fn new(tx: mpsc::Sender<RouterCommand>) -> Self {
        Self { tx }
    }

    /// The sender behind this handle.
    pub(crate) fn sender(&self) -> mpsc::Sender<RouterCommand> {
        self.tx.clone()
    }

    pub(crate) async fn send(&self, command: RouterCommand) -> Result<(), ServerError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| ServerError::ShuttingDown)
    }

    /// Whether the router task is still running.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Carries out an operator's command through the router task (in cluster
    /// mode, the leader's).
    pub async fn operator(
        &self,
        ask: OperatorAsk,
    ) -> Result<serde_json::Value, crate::admin::AdminError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(RouterCommand::Operator { ask, reply })
            .await
            .map_err(|_| crate::admin::AdminError::Server("the hub is stopping".into()))?;
        answer
            .await
            .map_err(|_| crate::admin::AdminError::Server("the hub is stopping".into()))?
    }

    /// Trims the router's log if this node leads it (see
    /// [`RouterCommand::RebaseLog`]); `None` if it does not.
    pub async fn rebase_log(
        &self,
    ) -> Result<Option<crate::cluster::router_log::RouterRebased>, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(RouterCommand::RebaseLog { reply })
            .await
            .map_err(|_| "the hub is stopping".to_string())?;
        answer
            .await
            .map_err(|_| "the hub is stopping".to_string())?
    }

    /// Tells the router a connection closed (never fails).
    pub async fn unregister(&self, conn: ConnId) {
        let _ = self.tx.send(RouterCommand::Unregister { conn }).await;
    }
}

/// An escalation as the person it is about may read it, or `None` while telling
/// them is withheld (imminent risk) and it is still open: the one rule for the
/// protocol's escalation list (a non-supervisor's) and for a data export. It puts
/// nobody at risk who asked for help for them: no context messages, no flag
/// but their own, and nobody else's `raised`/`merged` step says who or how.
pub fn subject_view(
    record: &crate::store::records::EscalationRecord,
    key: &PublicKey,
) -> Option<peerhub_protocol::escalation::EscalationView> {
    let resolved = record.view.status == peerhub_protocol::escalation::EscalationStatus::Resolved;
    if record.view.about != *key || !(record.tell_subject || resolved) {
        return None;
    }
    let mut view = record.view.clone();
    view.context.clear();
    view.flags.retain(|flag| flag.key == *key);
    for step in &mut view.steps {
        let someone_else = step.actor.is_some_and(|a| a != *key);
        if someone_else && matches!(step.step.as_str(), "raised" | "merged") {
            step.actor = None;
        }
        // Others' signed commands name the escalation's id, which the person is
        // not told (they know it by their reference): their steps keep who, when
        // and what, not the signed command.
        if someone_else {
            if step.step == "note" {
                step.text = step
                    .env
                    .as_ref()
                    .and_then(|env| env.payload_as::<EscalationActPayload>().ok())
                    .and_then(|act| match act.action {
                        peerhub_protocol::payload::EscalationAction::Note { text } => Some(text),
                        _ => None,
                    });
            }
            step.env = None;
        }
    }
    Some(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_ticket_per_connection_given_back_on_drop() {
        let slot = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let first = ReadTicket::take(&slot).expect("free");
        assert!(ReadTicket::take(&slot).is_none(), "one at a time");
        drop(first);
        assert!(ReadTicket::take(&slot).is_some(), "given back");
    }

    #[test]
    fn references_differ_per_person_and_escalation_and_are_stable() {
        let secret = [7; 32];
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        assert_eq!(reference(&secret, 1, &a), reference(&secret, 1, &a));
        assert_ne!(reference(&secret, 1, &a), reference(&secret, 1, &b));
        assert_ne!(reference(&secret, 1, &a), reference(&secret, 2, &a));
        assert_ne!(reference(&secret, 1, &a), reference(&[8; 32], 1, &a));
        assert_eq!(reference(&secret, 1, &a).len(), 22);
    }
}
