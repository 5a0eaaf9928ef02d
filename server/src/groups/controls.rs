//! Facilitator controls and co-produced records, as the group task applies them.
//!
//! Every control is checked in full before anything changes; then it is appended
//! to the group's log as the facilitator's own signed envelope (so the group sees
//! exactly who did what, and can verify it), its effect is applied and saved, and
//! who must be told is deferred until the batch is durable. A decline, and the
//! clearing of the waiting room, are told to the people concerned and the
//! facilitators only (the staff channel): the group never knew they were waiting.

use peerhub_protocol::frame::{Agreement, Channel, RecordInfo, Redaction, ServerFrame};
use peerhub_protocol::limits::MAX_TEXT_CHARS;
use peerhub_protocol::payload::ControlAction;
use peerhub_protocol::{ProtocolError, PublicKey, SignedEnvelope};

use super::actor::{Deferred, GroupActor};
use crate::audit::{NewEntry, Pseudonym, RewriteError};
use crate::erase::ERASED_NAME;
use crate::error::ServerError;
use crate::outbound::Outbox;
use crate::store::records::{RecordRecord, Removal};
use crate::text::check_text;

/// Longest mute, in minutes (a day).
pub const MAX_MUTE_MINUTES: u32 = 24 * 60;
/// Longest slow-mode interval, in seconds.
pub const MAX_SLOW_MODE_SECS: u32 = 3600;
/// Most pinned messages at once.
pub const MAX_PINS: usize = 10;

fn text_field(field: &'static str, text: &str) -> Result<(), ServerError> {
    check_text(field, text, MAX_TEXT_CHARS).map(|_| ())
}

impl GroupActor {
    fn target(&self, member: &PublicKey, sanction: bool) -> Result<(), ServerError> {
        if !self.room.members.contains_key(member) {
            return Err(ServerError::NotFound("no such member in this group"));
        }
        if sanction && self.room.is_staff_member(member) {
            return Err(ServerError::Forbidden(
                "facilitators, supervisors and admins cannot be sanctioned here",
            ));
        }
        Ok(())
    }

    /// Whether `action` is `key` withdrawing their own message: a `redact` of a post
    /// they signed (PROTOCOL.md §8.7). Anything else — another's message, a seq that
    /// does not exist — is not, so a refusal says no more than "not allowed".
    fn is_own_retraction(
        &self,
        key: &PublicKey,
        action: &ControlAction,
    ) -> Result<bool, ServerError> {
        let ControlAction::Redact { seq, .. } = action else {
            return Ok(false);
        };
        let event = self
            .store
            .event(&self.room.group.id, &Channel::Main, *seq)?;
        Ok(event
            .and_then(|e| e.env)
            .is_some_and(|env| env.kind == peerhub_protocol::Kind::Post && env.key == *key))
    }

    /// Checks a control against the room as it is; changes nothing.
    fn check_control(&self, key: &PublicKey, action: &ControlAction) -> Result<(), ServerError> {
        if !self.room.is_facilitator(key) && !self.is_own_retraction(key, action)? {
            return Err(ServerError::Forbidden(
                "only a facilitator of this group can do that",
            ));
        }
        let state = &self.room.state;
        match action {
            ControlAction::Admit { member } | ControlAction::Decline { member, .. } => {
                self.target(member, true)?;
                self.room.check_not_barred(member)?;
                if self.room.in_room(member) {
                    return Err(ProtocolError::invalid("member", "already in the group").into());
                }
                if matches!(action, ControlAction::Admit { .. })
                    && self.occupancy() >= self.limits.max_members
                {
                    return Err(ServerError::Full);
                }
            }
            ControlAction::ClearWaiting if self.room.waiting().is_empty() => {
                return Err(ProtocolError::invalid("do", "nobody is waiting").into())
            }
            ControlAction::Mute { member, minutes } => {
                self.target(member, true)?;
                if !(1..=MAX_MUTE_MINUTES).contains(minutes) {
                    return Err(ProtocolError::invalid("minutes", "from 1 to 1440").into());
                }
            }
            ControlAction::Unmute { member } => {
                self.target(member, true)?;
                let muted = self
                    .room
                    .members
                    .get(member)
                    .and_then(|m| m.record.muted_until_ms);
                if muted.is_none_or(|t| t <= self.clock.now_ms()) {
                    return Err(ProtocolError::invalid("member", "is not muted").into());
                }
            }
            ControlAction::Remove { member, .. } => {
                self.target(member, true)?;
                self.room.check_not_barred(member)?;
            }
            ControlAction::Lock if state.locked => {
                return Err(ProtocolError::invalid("do", "already locked").into())
            }
            ControlAction::Unlock if !state.locked => {
                return Err(ProtocolError::invalid("do", "not locked").into())
            }
            ControlAction::Pause if state.paused => {
                return Err(ProtocolError::invalid("do", "already paused").into())
            }
            ControlAction::Resume if !state.paused => {
                return Err(ProtocolError::invalid("do", "not paused").into())
            }
            ControlAction::SlowMode { seconds } if *seconds > MAX_SLOW_MODE_SECS => {
                return Err(ProtocolError::invalid("seconds", "from 0 to 3600").into())
            }
            ControlAction::Redact { seq, reason } => {
                text_field("reason", reason)?;
                let event = self
                    .store
                    .event(&self.room.group.id, &Channel::Main, *seq)?
                    .ok_or(ServerError::NotFound("no such message in this group"))?;
                let is_post = event
                    .env
                    .as_ref()
                    .is_some_and(|e| e.kind == peerhub_protocol::Kind::Post);
                if !is_post {
                    return Err(
                        ProtocolError::invalid("seq", "only messages can be redacted").into(),
                    );
                }
                if event.redacted.is_some() {
                    return Err(ProtocolError::invalid("seq", "already redacted").into());
                }
            }
            ControlAction::Pin { seq } => {
                if self
                    .store
                    .event(&self.room.group.id, &Channel::Main, *seq)?
                    .is_none()
                {
                    return Err(ServerError::NotFound("no such message in this group"));
                }
                if state.pinned.contains(seq) {
                    return Err(ProtocolError::invalid("seq", "already pinned").into());
                }
                if state.pinned.len() >= MAX_PINS {
                    return Err(ProtocolError::invalid(
                        "seq",
                        "unpin a message first (10 at most)",
                    )
                    .into());
                }
            }
            ControlAction::Unpin { seq } if !state.pinned.contains(seq) => {
                return Err(ProtocolError::invalid("seq", "not pinned").into())
            }
            ControlAction::AddCofacilitator { member } => {
                self.target(member, false)?;
                self.room.check_not_barred(member)?;
                if self.room.is_facilitator(member) {
                    return Err(
                        ProtocolError::invalid("member", "is already a facilitator here").into(),
                    );
                }
            }
            ControlAction::HandOver { member } => {
                self.target(member, false)?;
                self.room.check_not_barred(member)?;
                if state.lead == Some(*member) {
                    return Err(ProtocolError::invalid("member", "is already the lead").into());
                }
            }
            ControlAction::SetAgreement { text } => text_field("text", text)?,
            ControlAction::CheckIn { member } => {
                self.target(member, false)?;
                self.room.check_not_barred(member)?;
                if member == key {
                    return Err(ProtocolError::invalid(
                        "member",
                        "a check-in is with someone else",
                    )
                    .into());
                }
            }
            ControlAction::OpenSession if state.session_open => {
                return Err(ProtocolError::invalid("do", "a session is already open").into())
            }
            ControlAction::EndSession if !state.session_open => {
                return Err(ProtocolError::invalid("do", "no session is open").into())
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies a facilitator control.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn control(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        action: ControlAction,
        now: u64,
    ) -> Result<(), ServerError> {
        self.check_control(&key, &action)?;
        self.spend_counter(&key, counter)?;
        let mut entry = NewEntry::new(now, format!("control.{}", action.name()), env.clone())
            .group(self.room.group.id.clone());
        if let Some(member) = action.member() {
            entry = entry.subject(*member);
        }
        self.audit.append(entry)?;
        // Someone this control brings into the room gets `joined` with the history
        // before it, then the control itself live.
        let before = self.room.head(&Channel::Main);
        let channel = match &action {
            ControlAction::Decline { .. } | ControlAction::ClearWaiting => Channel::Staff,
            ControlAction::CheckIn { member } => Channel::pair(key, *member),
            _ => Channel::Main,
        };
        let event = self.append(channel, Some(env), None, now)?;
        self.ack(outbox, request_id, channel, event.seq, counter);
        let session = self.room.state.session;
        match action {
            ControlAction::Admit { member } => {
                self.with_member(&member, |m| m.admitted_session = Some(session))?;
                self.deferred.push(Deferred::Presence(member));
                self.deferred.insert(0, Deferred::Rejoin(member, before));
            }
            ControlAction::Decline { member, reason } => {
                self.with_member(&member, |m| m.declined_session = Some(session))?;
                let message = match reason {
                    Some(reason) => {
                        format!("A facilitator could not let you in this time: {reason}")
                    }
                    None => "A facilitator could not let you in this time.".to_string(),
                };
                self.deferred
                    .push(Deferred::Dismiss(member, "declined", message));
            }
            ControlAction::Mute { member, minutes } => {
                let until = now + u64::from(minutes) * 60_000;
                self.with_member(&member, |m| m.muted_until_ms = Some(until))?;
                self.deferred.push(Deferred::Presence(member));
            }
            ControlAction::Unmute { member } => {
                self.with_member(&member, |m| m.muted_until_ms = None)?;
                self.deferred.push(Deferred::Presence(member));
            }
            ControlAction::Remove {
                member,
                until_session_end,
                reason,
            } => {
                let removal = Removal {
                    session: until_session_end.then_some(session),
                    reason: reason.clone(),
                };
                self.with_member(&member, |m| m.removed = Some(removal))?;
                let mut message = if until_session_end {
                    "A facilitator has removed you from this session.".to_string()
                } else {
                    "A facilitator has removed you from this group.".to_string()
                };
                if let Some(reason) = reason {
                    let reason = reason.trim_end_matches('.');
                    message = format!("{message} Reason: {reason}.");
                }
                message.push_str(" You can still ask for help.");
                self.deferred
                    .push(Deferred::Dismiss(member, "removed", message));
            }
            ControlAction::Lock => self.set_state(|s| s.locked = true)?,
            ControlAction::Unlock => self.set_state(|s| s.locked = false)?,
            ControlAction::Pause => self.set_state(|s| s.paused = true)?,
            ControlAction::Resume => self.set_state(|s| s.paused = false)?,
            ControlAction::SlowMode { seconds } => {
                self.set_state(|s| s.slow_mode_secs = seconds)?;
                // The spacing starts now: posts from before it was on do not count.
                for member in self.room.members.values_mut() {
                    member.last_post_ms = None;
                }
            }
            ControlAction::Redact { seq, reason } => {
                let group = self.room.group.id.clone();
                if let Some(mut target) = self.store.event(&group, &Channel::Main, seq)? {
                    target.redacted = Some(Redaction {
                        by: key,
                        reason,
                        control_seq: event.seq,
                    });
                    self.write_event(Channel::Main, &target)?;
                    self.deferred.push(Deferred::Redacted(seq));
                }
            }
            ControlAction::Pin { seq } => self.set_state(|s| s.pinned.push(seq))?,
            ControlAction::Unpin { seq } => self.set_state(|s| s.pinned.retain(|p| *p != seq))?,
            ControlAction::AddCofacilitator { member } => {
                let was_in_room = self.room.in_room(&member);
                self.set_state(|s| s.co_facilitators.push(member))?;
                self.deferred.push(Deferred::Presence(member));
                if !was_in_room {
                    self.deferred.insert(0, Deferred::Rejoin(member, before));
                }
            }
            ControlAction::HandOver { member } => {
                let already = self.room.is_facilitator(&member);
                self.set_state(|s| {
                    if !already {
                        s.co_facilitators.push(member);
                    }
                    s.lead = Some(member);
                })?;
                self.deferred.push(Deferred::Presence(member));
                if !already && !self.room.in_room(&member) {
                    self.deferred.insert(0, Deferred::Rejoin(member, before));
                }
            }
            ControlAction::SetAgreement { text } => {
                self.set_state(|s| {
                    s.agreement = Agreement {
                        version: s.agreement.version + 1,
                        text,
                    }
                })?;
                let online: Vec<PublicKey> = self.subscribers.values().map(|s| s.key).collect();
                for member in online {
                    self.deferred.push(Deferred::Presence(member));
                }
            }
            ControlAction::CheckIn { .. } => {}
            ControlAction::OpenSession => self.set_state(|s| {
                s.session += 1;
                s.session_open = true;
            })?,
            ControlAction::EndSession => self.end_session(now)?,
            ControlAction::ClearWaiting => {
                self.clear_waiting_room()?;
            }
        }
        Ok(())
    }

    fn with_member(
        &mut self,
        key: &PublicKey,
        change: impl FnOnce(&mut crate::store::records::MemberRecord),
    ) -> Result<(), ServerError> {
        if let Some(member) = self.room.members.get_mut(key) {
            change(&mut member.record);
        }
        self.save_member(key)?;
        Ok(())
    }

    fn set_state(
        &mut self,
        change: impl FnOnce(&mut crate::store::records::GroupStateRecord),
    ) -> Result<(), ServerError> {
        change(&mut self.room.state);
        self.state_changed();
        self.deferred.push(Deferred::GroupUpdate);
        Ok(())
    }

    /// Ends the session: the room closes, participants are told and leave, and the
    /// group's retention decides what history is kept.
    fn end_session(&mut self, now: u64) -> Result<(), ServerError> {
        self.set_state(|s| {
            s.session_open = false;
            s.paused = false;
            s.locked = false;
            s.slow_mode_secs = 0;
            s.pinned.clear();
        })?;
        let retention = self.room.group.retention;
        if retention.ephemeral {
            self.remove_events(None)?;
            self.forget_participants(now)?;
            // Owed in the same commit: the compaction job rewrites the store so the
            // deleted bytes leave the data folder (see `compactor`).
            self.store.mark_compaction_due(now)?;
        } else if let Some(days) = retention.history_days {
            let cutoff = now.saturating_sub(u64::from(days) * 24 * 60 * 60 * 1000);
            self.remove_events(Some(cutoff))?;
        }
        let participants: Vec<PublicKey> = self
            .subscribers
            .values()
            .map(|s| s.key)
            .filter(|k| !self.room.is_staff_member(k))
            .collect();
        for member in participants {
            self.deferred.push(Deferred::Dismiss(
                member,
                "session_ended",
                "The session has ended. Thank you for being here.".into(),
            ));
        }
        // Knocks on this session's waiting room (and its declines) end with it.
        let knocks: Vec<PublicKey> = self
            .room
            .members
            .keys()
            .filter(|key| self.room.is_waiting_only(key))
            .copied()
            .collect();
        for key in knocks {
            if self.is_online(&key) {
                if let Some(info) = self.room.member_info(&key, false, now) {
                    self.deferred.push(Deferred::Forgotten(info));
                }
            }
            self.forget_member(&key)?;
        }
        Ok(())
    }

    /// An ephemeral group's session ended: who attended and as whom goes. Each
    /// participant's member record (name, signed join, signed agreement) is
    /// forgotten; one removed for good keeps only its standing, under
    /// [`ERASED_NAME`] and without the reason. The audit chain names them by
    /// pseudonym and keeps only the digest of their envelopes, of the hub's naming
    /// them, and of this group's redactions (their reasons may quote what was
    /// said) — see [`crate::audit::AuditLog::rewrite_for_session_end`]. Staff
    /// records stay. Escalations and co-produced records are safeguarding
    /// records: kept, as an erasure keeps them, until retention deletes them.
    fn forget_participants(&mut self, now: u64) -> Result<(), ServerError> {
        let participants: Vec<PublicKey> = self
            .room
            .members
            .keys()
            .filter(|key| !self.room.is_staff_member(key))
            .copied()
            .collect();
        if participants.is_empty() {
            return Ok(());
        }
        let seed = self.store.hub_signing_seed()?;
        let hub = PublicKey(
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes(),
        );
        let pseudonyms: Vec<(PublicKey, Pseudonym)> = participants
            .iter()
            .map(|key| (*key, Pseudonym::of(&seed, key)))
            .collect();
        for key in &participants {
            let for_good = self
                .room
                .members
                .get(key)
                .and_then(|m| m.record.removed.as_ref())
                .is_some_and(|r| r.session.is_none());
            if for_good {
                self.with_member(key, |m| {
                    m.name = ERASED_NAME.into();
                    m.join = None;
                    m.agreement_env = None;
                    if let Some(removal) = &mut m.removed {
                        removal.reason = None;
                    }
                })?;
                continue;
            }
            if self.is_online(key) {
                if let Some(info) = self.room.member_info(key, false, now) {
                    self.deferred.push(Deferred::Forgotten(info));
                }
            }
            self.forget_member(key)?;
        }
        if self.in_cluster() {
            self.session_ended = Some(
                pseudonyms
                    .iter()
                    .map(|(_, p)| p.as_str().to_string())
                    .collect(),
            );
        }
        match self
            .audit
            .rewrite_for_session_end(&self.room.group.id, &pseudonyms, &hub)
        {
            Ok(_) => {}
            Err(RewriteError::Store(error)) => return Err(error.into()),
            // A chain that does not verify is not rewritten (that would hide the
            // break); the session still ends. `peerhub audit verify` names it.
            Err(error) => tracing::error!(
                group = %self.room.group.id,
                "the audit chain was not pseudonymised at the session's end: {error}"
            ),
        }
        self.dirty = true;
        Ok(())
    }

    /// Writes to a co-produced record: a facilitator opens one; the member it is
    /// about (or a facilitator) adds words to it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &mut self,
        outbox: &Outbox,
        key: PublicKey,
        request_id: Option<u64>,
        counter: u64,
        env: SignedEnvelope,
        about: Option<PublicKey>,
        reply_to: Option<u64>,
        text: &str,
    ) -> Result<(), ServerError> {
        text_field("text", text)?;
        let facilitator = self.room.is_facilitator(&key);
        let record = match reply_to {
            None => {
                if !facilitator {
                    return Err(ServerError::Forbidden(
                        "a facilitator opens a record; you can add your words to one about you",
                    ));
                }
                if about.is_some_and(|a| !self.room.members.contains_key(&a)) {
                    return Err(ServerError::NotFound("no such member in this group"));
                }
                RecordRecord {
                    id: self.store.next_record_id()?,
                    group: self.room.group.id.clone(),
                    about,
                    entries: vec![env],
                }
            }
            Some(id) => {
                if about.is_some() {
                    return Err(
                        ProtocolError::invalid("about", "give either about or reply_to").into(),
                    );
                }
                // One answer for a record that is not there and one about someone
                // else: ids are counted, and a refusal must not say whose they are.
                let mut record = self
                    .store
                    .record(id)?
                    .filter(|r| r.group == self.room.group.id)
                    .filter(|r| facilitator || r.about == Some(key))
                    .ok_or(ServerError::NotFound("no such record in this group"))?;
                record.entries.push(env);
                let bytes = serde_json::to_vec(&record.entries).map_or(0, |json| json.len());
                if bytes > self.limits.record_bytes {
                    return Err(ProtocolError::invalid(
                        "reply_to",
                        "this record is full: open a new record to go on",
                    )
                    .into());
                }
                record
            }
        };
        self.store.put_record(&record)?;
        self.spend_counter(&key, counter)?;
        let info = RecordInfo {
            id: record.id,
            group: record.group.clone(),
            about: record.about,
            entries: record.entries.clone(),
        };
        self.reply(
            outbox,
            ServerFrame::Records {
                id: request_id,
                records: vec![info.clone()],
                more: false,
            },
        );
        if record.about != Some(key) {
            self.deferred.push(Deferred::Record(
                record.about,
                ServerFrame::Records {
                    id: None,
                    records: vec![info],
                    more: false,
                },
            ));
        }
        Ok(())
    }
}
