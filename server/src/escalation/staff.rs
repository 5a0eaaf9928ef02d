//! Telling a group's facilitators, at once, that someone there asked for support:
//! a `support_asked` hub note in the group's staff channel (PROTOCOL.md §8.10), and
//! `support_resolved` when the request closes.
//!
//! The router decides *what* to tell ([`StaffNotices`], bounded per escalation);
//! the group's own task writes it, because only that task orders the group's
//! channels. Between them runs one courier task ([`deliver`]). Neither waits on
//! the other or on a group: the router's line to the courier is unbounded (a note
//! is sent only when a request opens, rises in severity or doubles its flags, and
//! flags are rate-limited), and a group whose mailbox is full keeps its notes, in
//! order, at the courier, which offers them again while other groups' notes go on.
//!
//! The flag and its note are made durable by two commits (the router's, then the
//! group's). So that a crash between them loses no note, the router tells every
//! open escalation again at start ([`StaffNotices::rearm`]), and the courier skips
//! those its group's staff channel already tells.
//!
//! What a note never carries: who raised a flag about someone else, the words of an
//! imminent-risk flag (nor any flag's `reason` or `withhold_notice`), the escalation
//! id, the context messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::frame::{Channel, Note};
use peerhub_protocol::payload::FlagPayload;
use peerhub_protocol::{GroupId, PublicKey};
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::store::records::EscalationRecord;
use crate::store::Store;

/// How soon the courier offers a busy group its waiting notes again.
const RETRY: Duration = Duration::from_millis(50);

/// One note for one group's staff channel.
#[derive(Debug)]
pub struct StaffNote {
    group: GroupId,
    note: Note,
    /// Sent again at start: skipped if the staff channel already says as much.
    again: bool,
}

/// What the facilitators of an escalation's group were last told.
#[derive(Debug, Clone, Copy)]
struct Told {
    severity: Severity,
    flags: u32,
}

/// The router's side: decides which flags are told, and sends the notes.
#[derive(Debug)]
pub struct StaffNotices {
    // Sender: the router. Receiver: the courier ([`deliver`]). Unbounded, so the
    // router never waits on it (see the module's notes for why it stays small).
    tx: mpsc::UnboundedSender<StaffNote>,
    /// Per open escalation id. An entry goes when the escalation is resolved; one
    /// the router has not seen since it started is told again at its next flag.
    told: HashMap<u64, Told>,
}

/// The courier's side of the line.
#[derive(Debug)]
pub struct StaffNoteLine {
    rx: mpsc::UnboundedReceiver<StaffNote>,
}

impl StaffNotices {
    /// A router's notices and the line the courier reads.
    pub fn new() -> (Self, StaffNoteLine) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                told: HashMap::new(),
            },
            StaffNoteLine { rx },
        )
    }

    /// At start: every open escalation is told again, unless its group's staff
    /// channel already says so (the courier checks), so a note lost to a crash
    /// between the flag's commit and the note's is written after all.
    pub(crate) fn rearm<'a>(&mut self, open: impl IntoIterator<Item = &'a EscalationRecord>) {
        for record in open {
            let view = &record.view;
            let flags = total_flags(record);
            self.told.insert(
                view.id,
                Told {
                    severity: view.severity,
                    flags,
                },
            );
            let note = Note::SupportAsked {
                member: view.about,
                severity: view.severity,
                own: record.flaggers.contains(&view.about),
                flags,
                withheld: !record.tell_subject,
                // The consent of each flag is not looked up again: no words.
                words: None,
            };
            self.queue(StaffNote {
                group: view.group.clone(),
                note,
                again: true,
            });
        }
    }

    /// A flag was written into `record` (a new escalation or a merge) by
    /// `flagger`: tells the group's facilitators when it opens the request, raises
    /// its severity, or brings its flag count to a power of two.
    pub(crate) fn flag(
        &mut self,
        record: &EscalationRecord,
        flag: &FlagPayload,
        flagger: PublicKey,
    ) {
        let view = &record.view;
        // Counted here, not from the flags the record keeps in full (those may be
        // capped); an escalation first seen since a start counts what it holds.
        let (count, tell) = match self.told.get(&view.id) {
            None => (total_flags(record), true),
            Some(told) => {
                let count = told.flags.saturating_add(1);
                (
                    count,
                    view.severity > told.severity || count.is_power_of_two(),
                )
            }
        };
        self.told.insert(
            view.id,
            Told {
                severity: view.severity,
                flags: count,
            },
        );
        if !tell {
            return;
        }
        self.send(
            view.group.clone(),
            support_asked(record, flag, flagger, count),
        );
    }

    /// The escalation `record` was resolved.
    pub(crate) fn resolved(&mut self, record: &EscalationRecord) {
        self.told.remove(&record.view.id);
        self.send(
            record.view.group.clone(),
            Note::SupportResolved {
                member: record.view.about,
            },
        );
    }

    fn send(&self, group: GroupId, note: Note) {
        self.queue(StaffNote {
            group,
            note,
            again: false,
        });
    }

    fn queue(&self, note: StaffNote) {
        if self.tx.send(note).is_err() {
            tracing::debug!("staff note not sent: the hub is stopping");
        }
    }
}

/// The note for a flag: the member, the severity now, and the words only where
/// the consent allows.
fn support_asked(
    record: &EscalationRecord,
    flag: &FlagPayload,
    flagger: PublicKey,
    flags: u32,
) -> Note {
    let words = match flag.consent {
        // The person wrote them, or agreed to the request: the facilitators may read
        // them. An imminent-risk flag was raised without their agreement: no words.
        Consent::Own | Consent::Given => flag
            .note
            .as_deref()
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_string),
        Consent::ImminentRisk => None,
    };
    Note::SupportAsked {
        member: record.view.about,
        severity: record.view.severity,
        own: flagger == record.view.about,
        flags,
        withheld: !record.tell_subject,
        words,
    }
}

/// How far back in a staff channel a note sent again at start looks for itself.
const RECHECK_EVENTS: u64 = 100;

/// Whether `group`'s staff channel already tells what `note` (a `support_asked`
/// sent again at start) says: its latest support note about the member is a
/// `support_asked` at least as serious.
fn already_told(store: &Store, group: &GroupId, note: &Note) -> bool {
    let Note::SupportAsked {
        member, severity, ..
    } = note
    else {
        return false;
    };
    let Ok(head) = store.last_seq(group, &Channel::Staff) else {
        return false;
    };
    let from = head.saturating_sub(RECHECK_EVENTS);
    let recent = store
        .events_between(group, &Channel::Staff, from, head, RECHECK_EVENTS as usize)
        .unwrap_or_default();
    for event in recent.iter().rev() {
        match &event.note {
            Some(Note::SupportAsked {
                member: m,
                severity: s,
                ..
            }) if m == member => return s >= severity,
            Some(Note::SupportResolved { member: m }) if m == member => return false,
            _ => {}
        }
    }
    false
}

/// The courier: writes each note through its group's task until the router is gone.
pub async fn deliver(mut line: StaffNoteLine, hub: Arc<Hub>) {
    // Notes for groups whose mailbox was full, in order.
    let mut waiting: HashMap<GroupId, VecDeque<Note>> = HashMap::new();
    loop {
        let next = if waiting.is_empty() {
            line.rx.recv().await
        } else {
            tokio::select! {
                next = line.rx.recv() => next,
                _ = tokio::time::sleep(RETRY) => {
                    let groups: Vec<GroupId> = waiting.keys().cloned().collect();
                    for group in groups {
                        if let Some(notes) = waiting.get_mut(&group) {
                            offer_waiting(&hub, &group, notes).await;
                            if notes.is_empty() {
                                waiting.remove(&group);
                            }
                        }
                    }
                    continue;
                }
            }
        };
        let Some(StaffNote { group, note, again }) = next else {
            break;
        };
        if again && already_told(&hub.store, &group, &note) {
            continue;
        }
        let notes = waiting.entry(group.clone()).or_default();
        notes.push_back(note);
        offer_waiting(&hub, &group, notes).await;
        if notes.is_empty() {
            waiting.remove(&group);
        }
    }
}

/// Hands `group`'s task as many of its waiting `notes` as its mailbox takes (in
/// cluster mode, on whichever node serves the group).
async fn offer_waiting(hub: &Hub, group: &GroupId, notes: &mut VecDeque<Note>) {
    use crate::groups::HubNoteRefused;
    let handle = match hub.groups.handle_for(group).await {
        Ok(handle) => handle,
        Err(error) => {
            tracing::warn!(%error, "staff notes could not be written");
            notes.clear();
            return;
        }
    };
    if handle.is_remote() {
        while let Some(note) = notes.pop_front() {
            if let Err(error) = handle
                .hub_note_elsewhere(Channel::Staff, note.clone())
                .await
            {
                // Tried again after RETRY, in order.
                tracing::warn!(%error, "a staff note did not reach the group's node; trying again");
                notes.push_front(note);
                return;
            }
        }
        return;
    }
    while let Some(note) = notes.pop_front() {
        match handle.try_hub_note(Channel::Staff, note) {
            Ok(()) => {}
            Err(HubNoteRefused::Full(note)) => {
                notes.push_front(note);
                return;
            }
            Err(HubNoteRefused::Stopped) => {
                tracing::debug!("staff notes not written: the hub is stopping");
                notes.clear();
                return;
            }
        }
    }
}

/// Every flag an escalation has had: the first, and each merged one (kept in
/// full or only counted).
fn total_flags(record: &EscalationRecord) -> u32 {
    super::merged_flags(record).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::envelope::Kind;
    use peerhub_protocol::escalation::{EscalationStatus, EscalationView};
    use peerhub_protocol::SignedEnvelope;

    fn key(seed: u8) -> (ed25519_dalek::SigningKey, PublicKey) {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let public = PublicKey(signing.verifying_key().to_bytes());
        (signing, public)
    }

    fn payload(about: PublicKey, severity: Severity, consent: Consent) -> FlagPayload {
        FlagPayload {
            group: GroupId::parse("circle").unwrap(),
            about,
            seq: None,
            severity,
            consent,
            reason: None,
            withhold_notice: None,
            note: Some("words".into()),
            counter: 1,
            ts: 1,
        }
    }

    fn record(about: PublicKey, severity: Severity, flags: usize) -> EscalationRecord {
        let (signing, _) = key(9);
        let env = SignedEnvelope::sign_json(
            &signing,
            Kind::Flag,
            &payload(about, severity, Consent::Own),
        );
        EscalationRecord {
            view: EscalationView {
                id: 7,
                group: GroupId::parse("circle").unwrap(),
                about,
                severity,
                status: EscalationStatus::Open,
                level: 1,
                waiting_for: Vec::new(),
                deadline_ms: None,
                created_ms: 0,
                handler: None,
                flags: vec![env; flags],
                context: Vec::new(),
                steps: Vec::new(),
                outcome: None,
            },
            tell_subject: true,
            flaggers: Vec::new(),
            merged: u32::try_from(flags.saturating_sub(1)).unwrap(),
            counted: 0,
            consent: None,
            name: None,
        }
    }

    #[tokio::test]
    async fn one_note_per_severity_rise_and_per_power_of_two_flags() {
        let (_, river) = key(1);
        let (mut notices, mut line) = StaffNotices::new();
        let flag = payload(river, Severity::Concern, Consent::Own);
        for n in 1..=9 {
            notices.flag(&record(river, Severity::Concern, n), &flag, river);
        }
        let urgent = payload(river, Severity::Urgent, Consent::Own);
        notices.flag(&record(river, Severity::Urgent, 10), &urgent, river);
        notices.resolved(&record(river, Severity::Urgent, 10));
        drop(notices);
        let mut told = Vec::new();
        while let Some(note) = line.rx.recv().await {
            told.push(match note.note {
                Note::SupportAsked {
                    severity, flags, ..
                } => format!("{}:{flags}", severity.as_str()),
                Note::SupportResolved { .. } => "resolved".into(),
                other => panic!("{other:?}"),
            });
        }
        assert_eq!(
            told,
            [
                "concern:1",
                "concern:2",
                "concern:4",
                "concern:8",
                "urgent:10",
                "resolved"
            ]
        );
    }

    #[test]
    fn words_only_with_consent_and_never_the_raiser() {
        let (_, river) = key(1);
        let (_, sky) = key(2);
        let record = record(river, Severity::Urgent, 1);
        let own = support_asked(
            &record,
            &payload(river, Severity::Urgent, Consent::Own),
            river,
            1,
        );
        let given = support_asked(
            &record,
            &payload(river, Severity::Urgent, Consent::Given),
            sky,
            1,
        );
        let mut imminent = payload(river, Severity::Urgent, Consent::ImminentRisk);
        imminent.reason = Some("why".into());
        let risk = support_asked(&record, &imminent, sky, 1);
        for (note, own_flag, has_words) in [
            (own, true, true),
            (given, false, true),
            (risk.clone(), false, false),
        ] {
            let Note::SupportAsked { own, words, .. } = &note else {
                panic!("{note:?}")
            };
            assert_eq!(*own, own_flag);
            assert_eq!(words.is_some(), has_words);
            let json = serde_json::to_string(&note).unwrap();
            assert!(!json.contains(&sky.to_string()), "{json}");
            assert!(!json.contains("why"), "{json}");
        }
    }
}
