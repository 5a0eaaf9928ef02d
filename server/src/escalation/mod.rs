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

pub mod alerts;
pub mod pager;
pub mod push;
pub mod rota;
mod router;
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

/// Messages of the group attached to a flag as its context.
pub const CONTEXT_MESSAGES: usize = 20;

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
    /// The pager hook's format.
    pub pager_format: pager::PagerFormat,
    /// The pager's routing key, API key or token, if it needs one (a secret).
    pub pager_key: Option<String>,
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
    /// A flag.
    Raise {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: FlagPayload,
    },
    /// A supervisor's step on an escalation.
    Act {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: EscalationActPayload,
    },
    /// The queue (supervisors, admins) or the escalations about me.
    List {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
    },
    /// Replace the rota (admins).
    SetRota {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        env: SignedEnvelope,
        payload: peerhub_protocol::payload::RotaPayload,
    },
    /// Read the rota.
    GetRota {
        outbox: Outbox,
        key: PublicKey,
        request_id: Option<u64>,
    },
}

/// A session's line to the router. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    // Sender: sessions. Receiver: the router task. Bounded; a full queue makes the
    // sender wait (and so stop reading its socket) rather than drop a flag.
    tx: mpsc::Sender<RouterCommand>,
}

impl RouterHandle {
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
            step.env = None;
        }
    }
    Some(view)
}
