//! Distress escalation: the types a flag, the on-call rota and the signposting
//! carry. (The frames that use them are in [`crate::frame`].)

use serde::{Deserialize, Serialize};

use crate::encoding::PublicKey;

/// How serious a flag is. Ordered: `Concern < Urgent < Emergency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a supervisor's look soon.
    Concern,
    /// Needs a supervisor within minutes.
    Urgent,
    /// Someone may be at immediate risk.
    Emergency,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Concern => "concern",
            Self::Urgent => "urgent",
            Self::Emergency => "emergency",
        }
    }
}

/// On what basis a flag was raised: recorded on every flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// Raised by the person themselves.
    Own,
    /// Raised by someone else with the person's consent.
    Given,
    /// Raised without consent because of imminent risk (a reason is required).
    ImminentRisk,
}

/// One line of the on-call rota: who covers which window at which level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotaEntry {
    /// The supervisor's key.
    pub supervisor: PublicKey,
    /// Covers from (ms since the Unix epoch).
    pub start_ms: u64,
    /// Until (exclusive).
    pub end_ms: u64,
    /// 1 (primary) or 2 (second line).
    pub level: u8,
}

/// A service people can call or text, shown with every flag answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Helpline {
    /// Its name ("Samaritans").
    pub name: String,
    /// What to dial or text ("116 123", "text SHOUT to 85258").
    pub contact: String,
    /// When it answers ("24 hours").
    pub hours: String,
    /// Where it serves: "UK", "England", "Scotland", "Wales", "Northern Ireland".
    pub nation: String,
    /// For emergencies (shown first).
    #[serde(default)]
    pub emergency: bool,
}

/// The UK signposting used when none is configured.
pub fn default_helplines() -> Vec<Helpline> {
    let line = |name: &str, contact: &str, hours: &str, nation: &str, emergency: bool| Helpline {
        name: name.into(),
        contact: contact.into(),
        hours: hours.into(),
        nation: nation.into(),
        emergency,
    };
    vec![
        line("Emergency services", "999", "24 hours", "UK", true),
        line(
            "NHS 111 (press 2 for mental health)",
            "111",
            "24 hours",
            "England",
            false,
        ),
        line("NHS 24", "111", "24 hours", "Scotland", false),
        line(
            "NHS 111 Wales (press 2 for mental health)",
            "111",
            "24 hours",
            "Wales",
            false,
        ),
        line(
            "Lifeline",
            "0808 808 8000",
            "24 hours",
            "Northern Ireland",
            false,
        ),
        line("Samaritans", "116 123", "24 hours", "UK", false),
        line(
            "Shout (text)",
            "text SHOUT to 85258",
            "24 hours",
            "UK",
            false,
        ),
        line(
            "Breathing Space",
            "0800 83 85 87",
            "evenings and weekends",
            "Scotland",
            false,
        ),
        line(
            "C.A.L.L. Mental Health Helpline",
            "0800 132 737",
            "24 hours",
            "Wales",
            false,
        ),
    ]
}

/// One message of the group as it was when a flag was raised, with its original
/// signature, so a supervisor can verify what they read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEvent {
    /// Its seq in the group's main channel.
    pub seq: u64,
    /// Server time it was ordered.
    pub ts: u64,
    /// The original envelope.
    pub env: crate::SignedEnvelope,
}

/// Where an escalation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationStatus {
    /// Waiting for a supervisor to acknowledge.
    Open,
    /// A supervisor has it.
    Acknowledged,
    /// Closed with an outcome.
    Resolved,
}

/// One step of an escalation's log: what happened, when, and who did it (with
/// their signed command) — or the hub, for routing steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    /// Server time.
    pub ts: u64,
    /// `raised`, `merged`, `routed`, `unanswered`, `acknowledged`, `note`,
    /// `handover`, `resolved`, `paged`, `page_failed`.
    pub step: String,
    /// The person who acted (`None`: the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<PublicKey>,
    /// Their signed command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<crate::SignedEnvelope>,
    /// The routing level reached (routing steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u8>,
    /// Who it was routed to (routing steps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<PublicKey>,
    /// A `note` step's words, when the signed command is left out (the person an
    /// escalation is about reads supervisors' notes without the signed commands,
    /// which name the escalation's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// An escalation whole, as the hub keeps it (and a person's data export shows it).
/// It is never sent whole on the wire: pushes and lists carry an
/// [`EscalationSummary`], and its flags, steps and context are read a page at a
/// time (`escalation_detail`), so no frame outgrows a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationView {
    /// Id, from 1.
    pub id: u64,
    /// The group it came from.
    pub group: crate::GroupId,
    /// The person it is about.
    pub about: PublicKey,
    /// The highest severity of its flags.
    pub severity: Severity,
    /// Where it stands.
    pub status: EscalationStatus,
    /// Routing level: 1 and 2 follow the rota, 3 is every supervisor and admin,
    /// 4 means nobody acknowledged in time and people were told.
    pub level: u8,
    /// Who it is waiting for now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<PublicKey>,
    /// When the current level's time to acknowledge runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// When it was raised.
    pub created_ms: u64,
    /// The supervisor who has it (after acknowledging or a hand-over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<PublicKey>,
    /// Every signed flag merged into it, the first first.
    pub flags: Vec<crate::SignedEnvelope>,
    /// The group's recent messages when it was raised.
    pub context: Vec<ContextEvent>,
    /// What has happened, in order.
    pub steps: Vec<EscalationStep>,
    /// The outcome, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// How much an escalation holds, so a console can show it without fetching it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationCounts {
    /// Flags kept in full (readable with `escalation_detail` part `flags`).
    pub flags: u32,
    /// Flags merged into it after the first (kept in full or only counted).
    pub merged: u32,
    /// Merged flags only counted: over the cap on flags kept in full, or over a
    /// per-group, per-person or per-key limit. Their signed flags are in the audit
    /// chain.
    pub counted: u32,
    /// Context messages kept (part `context`).
    pub context: u32,
    /// Steps (part `steps`).
    pub steps: u32,
}

/// An escalation as pushed and listed: bounded, without flag texts, context or
/// steps (those are read on demand with `escalation_detail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationSummary {
    /// The escalation's id: for supervisors and admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// For anyone else: an opaque reference, random to them and different for
    /// each person (never the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The group it came from.
    pub group: crate::GroupId,
    /// The person it is about.
    pub about: PublicKey,
    /// Their display name in that group when the escalation was raised, for
    /// supervisors and admins (absent for anyone else, or if the hub has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The highest severity of its flags.
    pub severity: Severity,
    /// The consent of its first flag.
    pub consent: Consent,
    /// Where it stands.
    pub status: EscalationStatus,
    /// Routing level (1 to 4).
    pub level: u8,
    /// Who it is waiting for now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<PublicKey>,
    /// When the current level's time to acknowledge runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// When it was raised.
    pub created_ms: u64,
    /// The supervisor who has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<PublicKey>,
    /// The outcome, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// What it holds.
    pub counts: EscalationCounts,
}

/// Which part of an escalation `escalation_detail` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationPart {
    /// The signed flags kept in full, the first first.
    Flags,
    /// The steps, in order.
    Steps,
    /// The group's messages when it was raised (supervisors and admins only).
    Context,
}
