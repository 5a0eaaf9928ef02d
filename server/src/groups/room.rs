//! A group's rules, as pure functions of its records and the time: who stands where
//! (agreement, waiting room, admitted, declined, removed), whether the door is open,
//! who may post and who sees what. The group task owns one `Room` and changes it;
//! nothing here does I/O.

use std::collections::BTreeMap;

use peerhub_protocol::frame::{Agreement, Channel, GroupState, MemberInfo, MemberStatus, Role};
use peerhub_protocol::PublicKey;

use crate::error::ServerError;
use crate::store::records::{GroupRecord, GroupStateRecord, MemberRecord};

/// A member and the roles their key held when they last joined.
#[derive(Debug, Clone)]
pub struct Member {
    /// What is stored.
    pub record: MemberRecord,
    /// Roles of the key.
    pub roles: Vec<Role>,
    /// When they last posted in the main channel (slow mode; not stored).
    pub last_post_ms: Option<u64>,
}

/// One group's records in memory.
#[derive(Debug)]
pub struct Room {
    /// The group.
    pub group: GroupRecord,
    /// Its mutable state.
    pub state: GroupStateRecord,
    /// Everyone who has joined.
    pub members: BTreeMap<PublicKey, Member>,
}

/// The state a new group starts with.
pub fn initial_state(agreement: Option<String>) -> GroupStateRecord {
    GroupStateRecord {
        session: 1,
        session_open: true,
        paused: false,
        locked: false,
        slow_mode_secs: 0,
        agreement: match agreement {
            Some(text) => Agreement { version: 1, text },
            None => Agreement {
                version: 0,
                text: String::new(),
            },
        },
        pinned: Vec::new(),
        lead: None,
        co_facilitators: Vec::new(),
        heads: Vec::new(),
        opened_window_start: None,
    }
}

impl Room {
    /// Whether `key` has facilitator powers here.
    pub fn is_facilitator(&self, key: &PublicKey) -> bool {
        self.state.co_facilitators.contains(key)
            || self
                .members
                .get(key)
                .is_some_and(|m| m.roles.contains(&Role::Facilitator))
    }

    /// Whether `key` (a member) holds the supervisor role.
    pub fn is_supervisor(&self, key: &PublicKey) -> bool {
        self.members
            .get(key)
            .is_some_and(|m| m.roles.contains(&Role::Supervisor))
    }

    /// Whether a member holds any staff standing here: facilitator (by role or
    /// co-facilitator), supervisor or admin.
    pub fn is_staff_member(&self, key: &PublicKey) -> bool {
        self.is_facilitator(key)
            || self.members.get(key).is_some_and(|m| {
                m.roles
                    .iter()
                    .any(|r| matches!(r, Role::Supervisor | Role::Admin))
            })
    }

    /// Whether `key` may hold a private line with any member: a facilitator here, or
    /// a supervisor (who may talk privately with the facilitator or the person).
    pub fn may_talk_privately(&self, key: &PublicKey) -> bool {
        self.is_facilitator(key) || self.is_supervisor(key)
    }

    /// Whether a member's record holds nothing but knocks on the waiting room:
    /// never admitted, never removed, no staff standing. Such records do not count
    /// toward the room, expire, and are forgotten when a session ends.
    pub fn is_waiting_only(&self, key: &PublicKey) -> bool {
        self.members.get(key).is_some_and(|m| {
            m.record.admitted_session.is_none()
                && m.record.removed.is_none()
                && !self.is_staff_member(key)
        })
    }

    /// Whether a member is in the waiting room's count: waiting-only and not
    /// declined this session (a decline is a bar until the session ends).
    pub fn is_waiting(&self, key: &PublicKey) -> bool {
        self.is_waiting_only(key)
            && self
                .members
                .get(key)
                .is_some_and(|m| m.record.declined_session != Some(self.state.session))
    }

    /// The waiting room: everyone in its count, oldest knock first.
    pub fn waiting(&self) -> Vec<PublicKey> {
        let mut waiting: Vec<(u64, PublicKey)> = self
            .members
            .iter()
            .filter(|(key, _)| self.is_waiting(key))
            .map(|(key, m)| (m.record.first_joined_ms, *key))
            .collect();
        waiting.sort();
        waiting.into_iter().map(|(_, key)| key).collect()
    }

    /// People in the room now, as the member cap counts them: those in the room
    /// (participants admitted to the open session, and staff) who are `online`.
    /// Someone who knocked and went, or was admitted and left, holds no place;
    /// if they come back while in the room, they pass the cap.
    pub fn occupancy(&self, online: impl Fn(&PublicKey) -> bool) -> usize {
        self.members
            .keys()
            .filter(|key| online(key) && self.in_room(key))
            .count()
    }

    /// Whether `key` holds a staff role that passes the door (facilitator,
    /// supervisor or admin).
    pub fn is_staff(&self, key: &PublicKey, roles: &[Role]) -> bool {
        self.is_facilitator(key)
            || roles
                .iter()
                .any(|r| matches!(r, Role::Facilitator | Role::Supervisor | Role::Admin))
    }

    fn removal_reason(&self, member: &MemberRecord) -> Option<String> {
        let removal = member.removed.as_ref()?;
        let applies = removal.session.is_none_or(|s| s == self.state.session);
        applies.then(|| {
            let base = if removal.session.is_some() {
                "a facilitator has removed you from this session"
            } else {
                "a facilitator has removed you from this group"
            };
            match &removal.reason {
                Some(reason) => format!("{base}: {reason}"),
                None => base.to_string(),
            }
        })
    }

    /// Refuses a member who is removed or declined, saying why.
    pub fn check_not_barred(&self, key: &PublicKey) -> Result<(), ServerError> {
        let Some(member) = self.members.get(key) else {
            return Ok(());
        };
        if let Some(reason) = self.removal_reason(&member.record) {
            return Err(ServerError::Removed(reason));
        }
        if member.record.declined_session == Some(self.state.session) {
            return Err(ServerError::Removed(
                "a facilitator could not let you in this time".into(),
            ));
        }
        Ok(())
    }

    /// In the conversation: sees the main channel.
    pub fn in_room(&self, key: &PublicKey) -> bool {
        if self.check_not_barred(key).is_err() {
            return false;
        }
        let staff = self
            .members
            .get(key)
            .is_some_and(|m| self.is_staff(key, &m.roles));
        staff
            || (self.state.session_open
                && self
                    .members
                    .get(key)
                    .is_some_and(|m| m.record.admitted_session == Some(self.state.session)))
    }

    /// Has accepted the agreement in force.
    pub fn has_agreed(&self, key: &PublicKey) -> bool {
        self.members
            .get(key)
            .is_some_and(|m| m.record.agreed_version >= self.state.agreement.version)
    }

    /// Where a member stands.
    pub fn status(&self, key: &PublicKey) -> MemberStatus {
        let Some(member) = self.members.get(key) else {
            return MemberStatus::Waiting;
        };
        if self.removal_reason(&member.record).is_some() {
            MemberStatus::Removed
        } else if member.record.declined_session == Some(self.state.session) {
            MemberStatus::Declined
        } else if !self.has_agreed(key) {
            MemberStatus::NeedsAgreement
        } else if self.in_room(key) {
            MemberStatus::Admitted
        } else {
            MemberStatus::Waiting
        }
    }

    /// Admits automatically where nobody has to: groups without a waiting room,
    /// once the agreement (if any) is accepted. Returns whether it admitted.
    pub fn auto_admit(&mut self, key: &PublicKey) -> bool {
        if self.group.waiting_room || !self.has_agreed(key) || self.in_room(key) {
            return false;
        }
        if self.check_not_barred(key).is_err() {
            return false;
        }
        let session = self.state.session;
        match self.members.get_mut(key) {
            Some(member) => {
                member.record.admitted_session = Some(session);
                true
            }
            None => false,
        }
    }

    /// The first scheduled window that contains `now`, if the group has a schedule.
    fn current_window(&self, now: u64) -> Option<u64> {
        self.group
            .schedule
            .iter()
            .find(|w| w.start_ms <= now && now < w.end_ms)
            .map(|w| w.start_ms)
    }

    /// The next opening after `now`.
    pub fn next_session_ms(&self, now: u64) -> Option<u64> {
        self.group
            .schedule
            .iter()
            .map(|w| w.start_ms)
            .filter(|&start| start > now)
            .min()
    }

    /// Whether participants can come in now (ignoring the lock).
    pub fn door_open(&self, now: u64) -> bool {
        self.state.session_open
            && (self.group.schedule.is_empty() || self.current_window(now).is_some())
    }

    /// A scheduled window has started since the last session closed: open a new
    /// session. Returns whether it did.
    pub fn open_scheduled_session(&mut self, now: u64) -> bool {
        let Some(start) = self.current_window(now) else {
            return false;
        };
        if self.state.session_open || self.state.opened_window_start == Some(start) {
            return false;
        }
        self.state.session += 1;
        self.state.session_open = true;
        self.state.opened_window_start = Some(start);
        true
    }

    /// The earliest future moment the room must look at again (a mute ending, a
    /// window opening, a waiting-only record expiring `waiting_expiry_ms` after
    /// its first join).
    pub fn next_wakeup(&self, now: u64, waiting_expiry_ms: u64) -> Option<u64> {
        let mutes = self
            .members
            .values()
            .filter_map(|m| m.record.muted_until_ms)
            .filter(|&t| t > now);
        let windows = self.next_session_ms(now);
        let expiries = self
            .members
            .iter()
            .filter(|(key, _)| self.is_waiting(key))
            .map(|(_, m)| m.record.first_joined_ms.saturating_add(waiting_expiry_ms))
            .filter(|&t| t > now);
        mutes.chain(windows).chain(expiries).min()
    }

    /// Refuses a participant who may not come in now.
    pub fn check_door(&self, key: &PublicKey, roles: &[Role], now: u64) -> Result<(), ServerError> {
        if self.is_staff(key, roles) || self.in_room(key) {
            return Ok(());
        }
        if !self.door_open(now) {
            return Err(ServerError::Closed {
                next_session_ms: self.next_session_ms(now),
            });
        }
        if self.state.locked {
            return Err(ServerError::Locked);
        }
        Ok(())
    }

    /// Checks that `key` may post in the main channel now, and notes the time.
    pub fn check_post(&mut self, key: &PublicKey, now: u64) -> Result<(), ServerError> {
        self.check_not_barred(key)?;
        if !self.has_agreed(key) {
            return Err(ServerError::AgreementRequired(self.state.agreement.version));
        }
        if !self.in_room(key) {
            return Err(ServerError::Waiting);
        }
        if !self.state.session_open {
            return Err(ServerError::Closed {
                next_session_ms: self.next_session_ms(now),
            });
        }
        let facilitator = self.is_staff_member(key);
        if self.state.paused && !facilitator {
            return Err(ServerError::Paused);
        }
        let slow_ms = u64::from(self.state.slow_mode_secs) * 1000;
        let Some(member) = self.members.get_mut(key) else {
            return Err(ServerError::Waiting);
        };
        if let Some(until) = member.record.muted_until_ms.filter(|&t| t > now) {
            return Err(ServerError::Muted {
                until_ms: until,
                retry_after_ms: until - now,
            });
        }
        if !facilitator && slow_ms > 0 {
            if let Some(last) = member.last_post_ms {
                let next = last + slow_ms;
                if now < next {
                    return Err(ServerError::SlowMode {
                        retry_after_ms: next - now,
                    });
                }
            }
        }
        member.last_post_ms = Some(now);
        Ok(())
    }

    /// The last seq of a channel.
    pub fn head(&self, channel: &Channel) -> u64 {
        self.state
            .heads
            .iter()
            .find(|(c, _)| c == channel)
            .map_or(0, |(_, seq)| *seq)
    }

    /// Takes the next seq of a channel.
    pub fn next_seq(&mut self, channel: Channel) -> u64 {
        match self.state.heads.iter_mut().find(|(c, _)| *c == channel) {
            Some((_, seq)) => {
                *seq += 1;
                *seq
            }
            None => {
                self.state.heads.push((channel, 1));
                1
            }
        }
    }

    /// The group state as members see it.
    pub fn view(&self, now: u64) -> GroupState {
        GroupState {
            session: self.state.session,
            session_open: self.state.session_open,
            door_open: self.door_open(now),
            next_session_ms: self.next_session_ms(now),
            paused: self.state.paused,
            locked: self.state.locked,
            slow_mode_secs: self.state.slow_mode_secs,
            agreement: self.state.agreement.clone(),
            pinned: self.state.pinned.clone(),
            lead: self.state.lead,
            co_facilitators: self.state.co_facilitators.clone(),
        }
    }

    /// A member as others see them.
    pub fn member_info(&self, key: &PublicKey, online: bool, now: u64) -> Option<MemberInfo> {
        let member = self.members.get(key)?;
        Some(MemberInfo {
            key: *key,
            name: member.record.name.clone(),
            roles: member.roles.clone(),
            online,
            // An erased member (no signed join left) is not listed.
            join: member.record.join.clone()?,
            status: self.status(key),
            facilitator: self.is_facilitator(key),
            muted_until_ms: member.record.muted_until_ms.filter(|&t| t > now),
            away: member.record.away,
        })
    }

    /// Whether `viewer` may see `subject` in member lists and presence: people in
    /// the room see the room; facilitators also see the waiting room; everyone sees
    /// themselves.
    pub fn may_see_member(&self, viewer: &PublicKey, subject: &PublicKey) -> bool {
        viewer == subject
            || self.is_facilitator(viewer)
            || (self.in_room(viewer) && self.in_room(subject))
    }

    /// Whether `viewer` receives a channel's events.
    pub fn may_read(&self, viewer: &PublicKey, channel: &Channel) -> bool {
        match channel {
            Channel::Main => self.in_room(viewer),
            Channel::Staff => self.is_facilitator(viewer),
            Channel::Pair([a, b]) => viewer == a || viewer == b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::envelope::Kind;
    use peerhub_protocol::payload::{GroupKind, Retention, SessionWindow};
    use peerhub_protocol::{GroupId, SignedEnvelope};

    fn room(waiting_room: bool, agreement: Option<&str>, schedule: Vec<SessionWindow>) -> Room {
        Room {
            group: GroupRecord {
                id: GroupId::parse("g").unwrap(),
                title: "G".into(),
                kind: GroupKind::DropIn,
                created_ms: 0,
                created_by: None,
                created_env: None,
                access_code_hash: None,
                schedule,
                retention: Retention::default(),
                waiting_room,
            },
            state: initial_state(agreement.map(str::to_string)),
            members: BTreeMap::new(),
        }
    }

    fn add(room: &mut Room, byte: u8, roles: Vec<Role>) -> PublicKey {
        let signer = ed25519_dalek::SigningKey::from_bytes(&[byte; 32]);
        let key = PublicKey(signer.verifying_key().to_bytes());
        let join = SignedEnvelope::sign(&signer, Kind::Join, "{}".into());
        let record = MemberRecord {
            key,
            name: format!("m{byte}"),
            join: Some(join),
            first_joined_ms: 0,
            agreed_version: 0,
            agreement_env: None,
            admitted_session: None,
            declined_session: None,
            removed: None,
            muted_until_ms: None,
            away: false,
        };
        room.members.insert(
            key,
            Member {
                record,
                roles,
                last_post_ms: None,
            },
        );
        key
    }

    #[test]
    fn a_participant_goes_agreement_then_waiting_then_admitted() {
        let mut r = room(true, Some("Be kind."), vec![]);
        let p = add(&mut r, 1, vec![]);
        assert_eq!(r.status(&p), MemberStatus::NeedsAgreement);
        r.members.get_mut(&p).unwrap().record.agreed_version = 1;
        assert!(!r.auto_admit(&p), "a waiting room admits by hand");
        assert_eq!(r.status(&p), MemberStatus::Waiting);
        assert!(matches!(r.check_post(&p, 0), Err(ServerError::Waiting)));
        r.members.get_mut(&p).unwrap().record.admitted_session = Some(1);
        assert_eq!(r.status(&p), MemberStatus::Admitted);
        assert!(r.check_post(&p, 0).is_ok());
        // When the session ends, participants are out of the room until admitted
        // to a new one.
        r.state.session_open = false;
        assert!(!r.in_room(&p));
        r.state.session_open = true;
        // A new agreement asks again, but does not throw them out of the room.
        r.state.agreement = Agreement {
            version: 2,
            text: "Be kinder.".into(),
        };
        assert_eq!(r.status(&p), MemberStatus::NeedsAgreement);
        assert!(r.in_room(&p));
        assert!(matches!(
            r.check_post(&p, 0),
            Err(ServerError::AgreementRequired(2))
        ));
    }

    #[test]
    fn without_a_waiting_room_agreeing_admits() {
        let mut r = room(false, None, vec![]);
        let p = add(&mut r, 1, vec![]);
        assert!(r.auto_admit(&p));
        assert_eq!(r.status(&p), MemberStatus::Admitted);
    }

    #[test]
    fn mute_pause_and_slow_mode_bind_participants_not_facilitators() {
        let mut r = room(false, None, vec![]);
        let p = add(&mut r, 1, vec![]);
        let f = add(&mut r, 2, vec![Role::Facilitator]);
        r.auto_admit(&p);
        r.state.paused = true;
        assert!(matches!(r.check_post(&p, 0), Err(ServerError::Paused)));
        assert!(r.check_post(&f, 0).is_ok());
        r.state.paused = false;
        r.state.slow_mode_secs = 10;
        assert!(r.check_post(&p, 1_000).is_ok());
        match r.check_post(&p, 4_000) {
            Err(ServerError::SlowMode { retry_after_ms }) => assert_eq!(retry_after_ms, 7_000),
            other => panic!("{other:?}"),
        }
        assert!(r.check_post(&p, 11_000).is_ok());
        r.members.get_mut(&p).unwrap().record.muted_until_ms = Some(50_000);
        assert!(matches!(
            r.check_post(&p, 30_000),
            Err(ServerError::Muted { .. })
        ));
        assert!(r.check_post(&p, 50_000).is_ok(), "a mute ends by itself");
    }

    #[test]
    fn the_door_follows_the_schedule_and_the_lock() {
        let window = SessionWindow {
            start_ms: 1_000,
            end_ms: 2_000,
        };
        let later = SessionWindow {
            start_ms: 5_000,
            end_ms: 6_000,
        };
        let mut r = room(false, None, vec![window, later]);
        let p = add(&mut r, 1, vec![]);
        let f = add(&mut r, 2, vec![Role::Facilitator]);
        match r.check_door(&p, &[], 500) {
            Err(ServerError::Closed { next_session_ms }) => {
                assert_eq!(next_session_ms, Some(1_000))
            }
            other => panic!("{other:?}"),
        }
        assert!(r.check_door(&p, &[], 1_500).is_ok());
        assert!(
            r.check_door(&f, &[Role::Facilitator], 3_000).is_ok(),
            "staff pass"
        );
        r.state.locked = true;
        assert!(matches!(
            r.check_door(&p, &[], 1_500),
            Err(ServerError::Locked)
        ));
        // Ending a session closes it until the next window opens a new one.
        r.state.session_open = false;
        assert!(!r.open_scheduled_session(3_000));
        assert!(r.open_scheduled_session(5_100));
        assert_eq!(r.state.session, 2);
        assert!(!r.open_scheduled_session(5_200), "once per window");
    }

    #[test]
    fn removal_for_the_session_ends_with_it() {
        let mut r = room(false, None, vec![]);
        let p = add(&mut r, 1, vec![]);
        r.auto_admit(&p);
        r.members.get_mut(&p).unwrap().record.removed = Some(crate::store::records::Removal {
            session: Some(1),
            reason: None,
        });
        assert_eq!(r.status(&p), MemberStatus::Removed);
        r.state.session = 2;
        assert_ne!(r.status(&p), MemberStatus::Removed);
    }

    #[test]
    fn knocks_count_toward_the_waiting_room_and_only_people_present_fill_the_room() {
        let mut r = room(true, None, vec![]);
        let waiting = add(&mut r, 1, vec![]);
        let admitted = add(&mut r, 2, vec![]);
        let declined = add(&mut r, 3, vec![]);
        let removed = add(&mut r, 4, vec![]);
        let staff = add(&mut r, 5, vec![Role::Facilitator]);
        r.members
            .get_mut(&admitted)
            .unwrap()
            .record
            .admitted_session = Some(1);
        r.members
            .get_mut(&declined)
            .unwrap()
            .record
            .declined_session = Some(1);
        r.members.get_mut(&removed).unwrap().record.removed =
            Some(crate::store::records::Removal {
                session: None,
                reason: None,
            });
        assert!(r.is_waiting_only(&waiting) && r.is_waiting_only(&declined));
        assert!(!r.is_waiting_only(&admitted) && !r.is_waiting_only(&removed));
        assert!(!r.is_waiting_only(&staff));
        assert_eq!(
            r.waiting(),
            vec![waiting],
            "a decline is a bar, not a knock"
        );
        // The room counts those in it who are here: the admitted member and staff.
        assert_eq!(r.occupancy(|_| true), 2);
        assert_eq!(r.occupancy(|k| *k == staff), 1);
        assert_eq!(r.occupancy(|k| *k == waiting), 0);
        // A knock expires from its first join; nothing else does.
        r.members.get_mut(&waiting).unwrap().record.first_joined_ms = 1_000;
        assert_eq!(r.next_wakeup(0, 60_000), Some(61_000));
        assert_eq!(r.next_wakeup(61_000, 60_000), None);
        // In the next session the decline lapses and that knock counts again.
        r.state.session = 2;
        assert_eq!(r.waiting().len(), 2);
    }

    #[test]
    fn channels_are_read_by_their_audience_only() {
        let mut r = room(false, None, vec![]);
        let p = add(&mut r, 1, vec![]);
        let q = add(&mut r, 3, vec![]);
        let f = add(&mut r, 2, vec![Role::Facilitator]);
        r.auto_admit(&p);
        r.auto_admit(&q);
        let pair = Channel::pair(p, f);
        assert!(r.may_read(&p, &pair) && r.may_read(&f, &pair) && !r.may_read(&q, &pair));
        assert!(r.may_read(&f, &Channel::Staff) && !r.may_read(&p, &Channel::Staff));
        assert!(r.may_read(&q, &Channel::Main));
        assert_eq!(r.next_seq(Channel::Main), 1);
        assert_eq!(r.next_seq(pair), 1);
        assert_eq!(r.next_seq(Channel::Main), 2);
        assert_eq!(r.head(&Channel::Main), 2);
    }
}
