//! Groups a peer worker can run: agreement, waiting room, every facilitator
//! control (and its refusal for a participant), check-ins, reports, stepping out,
//! co-produced records, risk-phrase nudges, session end and retention.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::frame::{Channel, MemberStatus, Note, Role};
use peerhub_protocol::payload::{
    ControlAction, InvitePayload, InviteRole, RecordPayload, ReportPayload, SessionWindow,
    StepOutPayload,
};
use peerhub_protocol::{ClientFrame, ErrorCode, PublicKey, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{now_ms, Client, Identity, TestServer};

const AGREEMENT: &str = "Be kind. What is shared here stays here.";

async fn post_raw(client: &mut Client, group: &str, body: &str) -> ServerFrame {
    let env = client.identity.clone().unwrap().post(group, body);
    client
        .request(|id| ClientFrame::Post {
            id,
            group: gid(group),
            env,
        })
        .await
}

#[track_caller]
fn assert_code(frame: &ServerFrame, code: ErrorCode) {
    match frame {
        ServerFrame::Error { code: got, .. } => assert_eq!(*got, code, "{frame:?}"),
        other => panic!("expected error {code}, got {other:?}"),
    }
}

#[track_caller]
fn assert_acked(frame: &ServerFrame) -> u64 {
    match frame {
        ServerFrame::Ack { seq, .. } => *seq,
        other => panic!("expected ack, got {other:?}"),
    }
}

#[track_caller]
fn assert_ok(frame: &ServerFrame) {
    assert!(
        matches!(frame, ServerFrame::Ok { .. }),
        "expected ok, got {frame:?}"
    );
}

/// The next `presence` about `key`.
async fn presence_of(client: &mut Client, key: PublicKey) -> peerhub_protocol::frame::MemberInfo {
    let frame = client
        .recv_matching(|f| matches!(f, ServerFrame::Presence { member, .. } if member.key == key))
        .await
        .expect("presence");
    let ServerFrame::Presence { member, .. } = frame else {
        unreachable!()
    };
    member
}

/// The next `group_update` whose state `want` accepts (earlier ones are skipped).
async fn update_where(
    client: &mut Client,
    want: impl Fn(&peerhub_protocol::frame::GroupState) -> bool,
) -> peerhub_protocol::frame::GroupState {
    let frame = client
        .recv_matching(|f| matches!(f, ServerFrame::GroupUpdate { state, .. } if want(state)))
        .await
        .expect("group update");
    let ServerFrame::GroupUpdate { state, .. } = frame else {
        unreachable!()
    };
    state
}

/// A group with a facilitator and one admitted participant, no agreement, no
/// waiting room.
struct Circle {
    server: TestServer,
    fac: Client,
    p: Client,
    p_id: Identity,
}

async fn circle() -> Circle {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    let joined = p.join("circle", "River", None).await;
    assert_eq!(joined.status, MemberStatus::Admitted);
    presence_of(&mut fac, p_id.key()).await;
    Circle {
        server,
        fac,
        p,
        p_id,
    }
}

#[tokio::test]
async fn the_agreement_is_signed_before_speaking_and_again_when_it_changes() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| {
            g.agreement = Some(AGREEMENT.into());
            g.waiting_room = Some(false);
        })
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    assert_ok(&fac.agree("circle", 1).await);
    assert_acked(&post_raw(&mut fac, "circle", "welcome").await);

    let me = Identity::generate();
    let mut p = server.login(&me).await;
    let joined = p.join("circle", "River", None).await;
    assert_eq!(joined.status, MemberStatus::NeedsAgreement);
    assert_eq!(joined.state.agreement.text, AGREEMENT);
    assert!(joined.history.is_empty(), "no history before agreeing");
    assert_code(
        &post_raw(&mut p, "circle", "hi").await,
        ErrorCode::AgreementRequired,
    );
    assert_code(&p.agree("circle", 7).await, ErrorCode::Invalid);
    assert_ok(&p.agree("circle", 1).await);
    // Now in the room: joined again, with the history.
    let rejoined = p
        .recv_matching(|f| matches!(f, ServerFrame::Joined { id: None, .. }))
        .await
        .unwrap();
    let joined = p.joined_reply("circle", None, rejoined).await;
    assert_eq!(joined.status, MemberStatus::Admitted);
    assert_eq!(joined.history.len(), 1);
    assert_acked(&post_raw(&mut p, "circle", "hello").await);

    // A new version: everyone is asked again before speaking.
    let set = ControlAction::SetAgreement {
        text: format!("{AGREEMENT} No advice unless asked."),
    };
    assert_acked(&fac.control("circle", set).await);
    let state = update_where(&mut p, |s| s.agreement.version == 2).await;
    assert!(state.agreement.text.contains("No advice"));
    assert_code(
        &post_raw(&mut p, "circle", "still here").await,
        ErrorCode::AgreementRequired,
    );
    assert_ok(&p.agree("circle", 2).await);
    assert_acked(&post_raw(&mut p, "circle", "still here").await);
}

#[tokio::test]
async fn the_waiting_room_admits_or_declines_and_tells_the_person() {
    let mut server = TestServer::start().await;
    server.create_group_with("circle", |_| {}).await; // waiting room on by default
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let (a_id, b_id) = (Identity::generate(), Identity::generate());
    let mut a = server.login(&a_id).await;
    let mut b = server.login(&b_id).await;
    assert_eq!(
        a.join("circle", "Ash", None).await.status,
        MemberStatus::Waiting
    );
    assert_eq!(
        b.join("circle", "Bea", None).await.status,
        MemberStatus::Waiting
    );
    assert_eq!(
        presence_of(&mut fac, a_id.key()).await.status,
        MemberStatus::Waiting
    );
    assert_code(
        &post_raw(&mut a, "circle", "hello?").await,
        ErrorCode::Waiting,
    );

    assert_acked(
        &fac.control("circle", ControlAction::Admit { member: a_id.key() })
            .await,
    );
    let frame = a
        .recv_matching(|f| matches!(f, ServerFrame::Joined { id: None, .. }))
        .await
        .unwrap();
    let ServerFrame::Joined { status, .. } = frame else {
        unreachable!()
    };
    assert_eq!(status, MemberStatus::Admitted);
    // The admission is announced in the group, signed by the facilitator.
    let announced = a.next_event("circle").await;
    announced.envelope().verify().unwrap();
    assert_eq!(announced.envelope().kind, Kind::Control);
    assert_acked(&post_raw(&mut a, "circle", "thank you").await);

    let decline = ControlAction::Decline {
        member: b_id.key(),
        reason: Some("full tonight".into()),
    };
    assert_acked(&fac.control("circle", decline).await);
    let frame = b
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await
        .unwrap();
    let ServerFrame::Dismissed {
        reason, message, ..
    } = frame
    else {
        unreachable!()
    };
    assert_eq!(reason, "declined");
    assert!(message.contains("full tonight"), "{message}");
    // The decline went to the facilitators' channel, not the group.
    let staff = fac.next_event_in("circle", Channel::Staff).await;
    assert_eq!(staff.envelope().kind, Kind::Control);
    assert_code(&b.try_join("circle", "Bea", None).await, ErrorCode::Removed);
    a.next_event("circle").await; // a's own post
    a.assert_no_events(200).await;
}

#[tokio::test]
async fn a_participant_cannot_use_any_control_and_nothing_changes() {
    let Circle {
        server,
        mut p,
        p_id,
        ..
    } = circle().await;
    let before = server.hub().store.digest().unwrap();
    let other = p_id.key();
    for action in [
        ControlAction::Admit { member: other },
        ControlAction::Mute {
            member: other,
            minutes: 5,
        },
        ControlAction::Remove {
            member: other,
            until_session_end: false,
            reason: None,
        },
        ControlAction::Lock,
        ControlAction::SlowMode { seconds: 10 },
        ControlAction::Pause,
        ControlAction::Redact {
            seq: 1,
            reason: "x".into(),
        },
        ControlAction::Pin { seq: 1 },
        ControlAction::AddCofacilitator { member: other },
        ControlAction::SetAgreement {
            text: "mine".into(),
        },
        ControlAction::EndSession,
    ] {
        let name = action.name();
        let reply = p.control("circle", action).await;
        match reply {
            ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Forbidden, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(
            server.hub().store.digest().unwrap(),
            before,
            "{name} changed state"
        );
    }
}

#[tokio::test]
async fn a_mute_blocks_posting_keeps_the_help_path_and_ends_by_itself() {
    let Circle {
        server,
        mut fac,
        mut p,
        p_id,
    } = circle().await;
    let fac_key = fac.identity.clone().unwrap().key();
    assert_acked(
        &fac.control(
            "circle",
            ControlAction::Mute {
                member: p_id.key(),
                minutes: 1,
            },
        )
        .await,
    );
    let me = presence_of(&mut p, p_id.key()).await;
    assert!(
        me.muted_until_ms.is_some(),
        "the person sees they are muted"
    );
    match post_raw(&mut p, "circle", "let me speak").await {
        ServerFrame::Error {
            code: ErrorCode::Muted,
            retry_after_ms,
            ..
        } => {
            assert!(retry_after_ms.unwrap() <= 60_000)
        }
        other => panic!("{other:?}"),
    }
    // Still able to reach a facilitator privately.
    let help = p_id.private_post("circle", fac_key, "I'm struggling");
    assert_acked(
        &p.request(|id| ClientFrame::Post {
            id,
            group: gid("circle"),
            env: help,
        })
        .await,
    );
    // The mute ends by itself and the person is told.
    server.clock.advance(61_000);
    let me = presence_of(&mut p, p_id.key()).await;
    assert_eq!(me.muted_until_ms, None);
    let note = p
        .recv_matching(|f| {
            matches!(
                f,
                ServerFrame::Event {
                    note: Some(Note::MuteEnded { .. }),
                    ..
                }
            )
        })
        .await;
    assert!(note.is_ok());
    assert_acked(&post_raw(&mut p, "circle", "thanks").await);
    server.clock.advance(-61_000);
}

#[tokio::test]
async fn slow_mode_spaces_out_each_members_messages() {
    let Circle {
        server,
        mut fac,
        mut p,
        ..
    } = circle().await;
    assert_acked(
        &fac.control("circle", ControlAction::SlowMode { seconds: 30 })
            .await,
    );
    update_where(&mut p, |s| s.slow_mode_secs == 30).await;
    assert_acked(&post_raw(&mut p, "circle", "one").await);
    match post_raw(&mut p, "circle", "two").await {
        ServerFrame::Error {
            code: ErrorCode::SlowMode,
            retry_after_ms: Some(ms),
            ..
        } => assert!(ms <= 30_000),
        other => panic!("{other:?}"),
    }
    assert_acked(&post_raw(&mut fac, "circle", "facilitators are not slowed").await);
    server.clock.advance(31_000);
    assert_acked(&post_raw(&mut p, "circle", "two").await);
    server.clock.advance(-31_000);
}

#[tokio::test]
async fn pause_lets_only_facilitators_post() {
    let Circle { mut fac, mut p, .. } = circle().await;
    assert_acked(&fac.control("circle", ControlAction::Pause).await);
    update_where(&mut p, |s| s.paused).await;
    assert_code(
        &post_raw(&mut p, "circle", "hello").await,
        ErrorCode::Paused,
    );
    assert_acked(&post_raw(&mut fac, "circle", "a short pause").await);
    assert_acked(&fac.control("circle", ControlAction::Resume).await);
    assert_acked(&post_raw(&mut p, "circle", "hello").await);
}

#[tokio::test]
async fn a_locked_group_admits_nobody_new() {
    let Circle {
        server, mut fac, ..
    } = circle().await;
    assert_acked(&fac.control("circle", ControlAction::Lock).await);
    let mut late = server.login(&Identity::generate()).await;
    assert_code(
        &late.try_join("circle", "Late", None).await,
        ErrorCode::Locked,
    );
    assert_acked(&fac.control("circle", ControlAction::Unlock).await);
    assert!(matches!(
        late.try_join("circle", "Late", None).await,
        ServerFrame::Joined { .. }
    ));
}

#[tokio::test]
async fn redaction_hides_the_text_from_participants_and_says_why() {
    let Circle {
        server,
        mut fac,
        mut p,
        p_id,
    } = circle().await;
    let mut other = server.login(&Identity::generate()).await;
    other.join("circle", "Other", None).await;
    let seq = assert_acked(&post_raw(&mut p, "circle", "something hurtful").await);
    let redact = ControlAction::Redact {
        seq,
        reason: "breaks the agreement".into(),
    };
    let control_seq = assert_acked(&fac.control("circle", redact).await);
    // A participant gets the control, then the message again without its text.
    let original = other.next_event("circle").await;
    assert_eq!(original.seq, seq);
    assert_eq!(other.next_event("circle").await.seq, control_seq);
    let replaced = other.next_event("circle").await;
    assert_eq!(replaced.seq, seq);
    assert!(
        replaced.env.is_none(),
        "participants no longer get the text"
    );
    let why = replaced.redacted.unwrap();
    assert_eq!(
        (why.reason.as_str(), why.control_seq),
        ("breaks the agreement", control_seq)
    );
    // The facilitator keeps the text, marked redacted.
    let seen = loop {
        let event = fac.next_event("circle").await;
        if event.seq == seq && event.redacted.is_some() {
            break event;
        }
    };
    assert_eq!(seen.verified_body(), "something hurtful");
    // History says the same to each.
    let mut later = server.login(&p_id).await;
    let joined = later.join("circle", "River", None).await;
    let old = joined.history.iter().find(|e| e.seq == seq).unwrap();
    assert!(old.env.is_none() && old.redacted.is_some());
}

#[tokio::test]
async fn a_participant_withdraws_their_own_message_and_facilitators_keep_its_text() {
    // A signed retraction is a `redact` control by the message's own writer. Before,
    // only facilitators could send one, so a person could not take back their words.
    let Circle {
        server,
        mut fac,
        mut p,
        p_id,
    } = circle().await;
    let other_id = Identity::generate();
    let mut other = server.login(&other_id).await;
    other.join("circle", "Other", None).await;
    let seq = assert_acked(&post_raw(&mut p, "circle", "I said too much just now").await);
    let other_seq = assert_acked(&post_raw(&mut other, "circle", "not yours").await);
    let withdraw = ControlAction::Redact {
        seq,
        reason: "Withdrawn by its writer.".into(),
    };
    let control_seq = assert_acked(&p.control("circle", withdraw).await);
    // The group sees it withdrawn, by its writer, without its text.
    let replaced = loop {
        let event = other.next_event("circle").await;
        if event.seq == seq && event.redacted.is_some() {
            break event;
        }
    };
    assert!(replaced.env.is_none(), "the group no longer gets the text");
    let why = replaced.redacted.unwrap();
    assert_eq!((why.by, why.control_seq), (p_id.key(), control_seq));
    // The facilitators keep the text, for safeguarding.
    let seen = loop {
        let event = fac.next_event("circle").await;
        if event.seq == seq && event.redacted.is_some() {
            break event;
        }
    };
    assert_eq!(seen.verified_body(), "I said too much just now");
    // Someone else's message, one already withdrawn, or one that does not exist:
    // refused alike, as not allowed, and nothing changes.
    for seq in [other_seq, seq, 9_999] {
        let reply = p
            .control(
                "circle",
                ControlAction::Redact {
                    seq,
                    reason: "mine?".into(),
                },
            )
            .await;
        match reply {
            ServerFrame::Error { code, .. } if seq == other_seq || seq == 9_999 => {
                assert_eq!(code, ErrorCode::Forbidden, "seq {seq}")
            }
            ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Invalid, "seq {seq}"),
            other => panic!("seq {seq}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn pins_and_lead_changes_reach_everyone() {
    let Circle {
        mut fac,
        mut p,
        p_id,
        ..
    } = circle().await;
    let seq = assert_acked(&post_raw(&mut fac, "circle", "Tonight's theme: rest").await);
    assert_acked(&fac.control("circle", ControlAction::Pin { seq }).await);
    update_where(&mut p, |s| s.pinned == vec![seq]).await;
    assert_acked(
        &fac.control(
            "circle",
            ControlAction::AddCofacilitator { member: p_id.key() },
        )
        .await,
    );
    update_where(&mut p, |s| s.co_facilitators.contains(&p_id.key())).await;
    // The new co-facilitator can now use controls.
    assert_acked(&p.control("circle", ControlAction::Unpin { seq }).await);
    assert_acked(
        &p.control("circle", ControlAction::HandOver { member: p_id.key() })
            .await,
    );
}

#[tokio::test]
async fn a_private_check_in_is_seen_by_nobody_else() {
    let Circle {
        server,
        mut fac,
        mut p,
        p_id,
    } = circle().await;
    let mut other = server.login(&Identity::generate()).await;
    other.join("circle", "Other", None).await;
    let fac_id = fac.identity.clone().unwrap();
    // The check-in opens with a signed control that only the two of them see.
    let opened = fac
        .control("circle", ControlAction::CheckIn { member: p_id.key() })
        .await;
    let ServerFrame::Ack {
        channel, seq: 1, ..
    } = opened
    else {
        panic!("{opened:?}")
    };
    assert_eq!(channel, Channel::pair(fac_id.key(), p_id.key()));
    let start = p.next_event_in("circle", channel).await;
    assert_eq!(start.envelope().kind, Kind::Control);
    start.envelope().verify().unwrap();
    let hello = fac_id.private_post("circle", p_id.key(), "How are you doing?");
    let ack = fac
        .request(|id| ClientFrame::Post {
            id,
            group: gid("circle"),
            env: hello,
        })
        .await;
    let ServerFrame::Ack { channel, seq, .. } = ack else {
        panic!("{ack:?}")
    };
    assert_eq!(channel, Channel::pair(fac_id.key(), p_id.key()));
    assert_eq!(seq, 2);
    let got = p.next_event_in("circle", channel).await;
    assert_eq!(got.verified_body(), "How are you doing?");
    // Two participants cannot open a private channel between themselves; the
    // refusal is the one a key that never joined gets (PROTOCOL.md §10).
    let sideline = p_id.private_post("circle", other.identity.clone().unwrap().key(), "psst");
    let refused = p
        .request(|id| ClientFrame::Post {
            id,
            group: gid("circle"),
            env: sideline,
        })
        .await;
    assert_code(&refused, ErrorCode::NotFound);
    other.assert_no_events(300).await;
}

#[tokio::test]
async fn removal_takes_someone_out_until_the_session_ends() {
    let Circle {
        server,
        mut fac,
        mut p,
        p_id,
    } = circle().await;
    let remove = ControlAction::Remove {
        member: p_id.key(),
        until_session_end: true,
        reason: Some("a break".into()),
    };
    assert_acked(&fac.control("circle", remove).await);
    let frame = p
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await
        .unwrap();
    let ServerFrame::Dismissed {
        reason, message, ..
    } = frame
    else {
        unreachable!()
    };
    assert_eq!(reason, "removed");
    assert!(
        message.contains("a break") && message.contains("ask for help"),
        "{message}"
    );
    assert_code(
        &post_raw(&mut p, "circle", "wait").await,
        ErrorCode::Removed,
    );
    let mut again = server.login(&p_id).await;
    assert_code(
        &again.try_join("circle", "River", None).await,
        ErrorCode::Removed,
    );
    // A new session lets them back.
    assert_acked(&fac.control("circle", ControlAction::EndSession).await);
    assert_acked(&fac.control("circle", ControlAction::OpenSession).await);
    assert!(matches!(
        again.try_join("circle", "River", None).await,
        ServerFrame::Joined { .. }
    ));
}

#[tokio::test]
async fn ending_the_session_tells_everyone_and_an_ephemeral_group_keeps_nothing() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("dropin", |g| {
            g.waiting_room = Some(false);
            g.retention.ephemeral = true;
        })
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("dropin", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("dropin", "River", None).await;
    let last = assert_acked(&post_raw(&mut p, "dropin", "said tonight").await);
    assert_acked(&fac.control("dropin", ControlAction::EndSession).await);
    let frame = p
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await
        .unwrap();
    assert!(
        matches!(frame, ServerFrame::Dismissed { ref reason, .. } if reason == "session_ended")
    );
    update_where(&mut fac, |s| !s.session_open).await;
    let mut again = server.login(&p_id).await;
    assert_code(
        &again.try_join("dropin", "River", None).await,
        ErrorCode::Closed,
    );
    // Next session: nothing of the last one is kept, and seqs carry on.
    assert_acked(&fac.control("dropin", ControlAction::OpenSession).await);
    let joined = again.join("dropin", "River", Some(0)).await;
    assert!(
        joined.history.iter().all(|e| e.seq > last + 1),
        "ephemeral: nothing of the last session is kept, not even its ending"
    );
    assert_eq!(joined.history.len(), 1, "only this session's opening");
    assert!(assert_acked(&post_raw(&mut again, "dropin", "new night").await) > last);
}

#[tokio::test]
async fn reports_go_to_the_facilitators_only() {
    let Circle {
        server,
        mut fac,
        mut p,
        ..
    } = circle().await;
    let reporter_id = Identity::generate();
    let mut reporter = server.login(&reporter_id).await;
    reporter.join("circle", "Quiet", None).await;
    let seq = assert_acked(&post_raw(&mut p, "circle", "rude words").await);
    let env = reporter_id.signed(Kind::Report, |counter, ts| ReportPayload {
        group: gid("circle"),
        seq,
        reason: "that was unkind".into(),
        counter,
        ts,
    });
    assert_ok(
        &reporter
            .request(|id| ClientFrame::Report {
                id,
                group: gid("circle"),
                env,
            })
            .await,
    );
    let report = fac.next_event_in("circle", Channel::Staff).await;
    assert_eq!(report.envelope().key, reporter_id.key());
    report.envelope().verify().unwrap();
    p.next_event("circle").await; // its own post
    p.assert_no_events(300).await;
}

#[tokio::test]
async fn stepping_out_is_a_quiet_status() {
    let Circle {
        mut fac,
        mut p,
        p_id,
        ..
    } = circle().await;
    let env = p_id.signed(Kind::StepOut, |counter, ts| StepOutPayload {
        group: gid("circle"),
        away: true,
        counter,
        ts,
    });
    assert_ok(
        &p.request(|id| ClientFrame::StepOut {
            id,
            group: gid("circle"),
            env,
        })
        .await,
    );
    assert!(presence_of(&mut fac, p_id.key()).await.away);
}

#[tokio::test]
async fn a_co_produced_record_is_signed_by_both_and_listed_for_its_member() {
    let Circle {
        mut fac,
        mut p,
        p_id,
        ..
    } = circle().await;
    let fac_id = fac.identity.clone().unwrap();
    let note = fac_id.signed(Kind::Record, |counter, ts| RecordPayload {
        group: gid("circle"),
        about: Some(p_id.key()),
        reply_to: None,
        text: "River talked about sleep; agreed to try the evening walk.".into(),
        counter,
        ts,
    });
    let reply = fac
        .request(|id| ClientFrame::Record {
            id,
            group: gid("circle"),
            env: note,
        })
        .await;
    let ServerFrame::Records { records, .. } = reply else {
        panic!("{reply:?}")
    };
    let record_id = records[0].id;
    // The member is told, and adds their own words.
    let pushed = p
        .recv_matching(|f| matches!(f, ServerFrame::Records { id: None, .. }))
        .await
        .unwrap();
    assert!(
        matches!(pushed, ServerFrame::Records { ref records, .. } if records[0].id == record_id)
    );
    let mine = p_id.signed(Kind::Record, |counter, ts| RecordPayload {
        group: gid("circle"),
        about: None,
        reply_to: Some(record_id),
        text: "I'd add: the walk helped last week too.".into(),
        counter,
        ts,
    });
    let reply = p
        .request(|id| ClientFrame::Record {
            id,
            group: gid("circle"),
            env: mine,
        })
        .await;
    assert!(matches!(reply, ServerFrame::Records { .. }), "{reply:?}");
    // Listing: every record about me, each entry verifiable.
    let listed = p
        .request(|id| ClientFrame::Records { id, after: None })
        .await;
    let ServerFrame::Records { records, .. } = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(records.len(), 1);
    let keys: Vec<PublicKey> = records[0]
        .entries
        .iter()
        .map(|e| {
            e.verify().unwrap();
            e.key
        })
        .collect();
    assert_eq!(keys, vec![fac_id.key(), p_id.key()]);
    // A participant cannot open a record.
    let own = p_id.signed(Kind::Record, |counter, ts| RecordPayload {
        group: gid("circle"),
        about: Some(p_id.key()),
        reply_to: None,
        text: "x".into(),
        counter,
        ts,
    });
    assert_code(
        &p.request(|id| ClientFrame::Record {
            id,
            group: gid("circle"),
            env: own,
        })
        .await,
        ErrorCode::Forbidden,
    );
}

#[tokio::test]
async fn a_risk_phrase_nudges_the_facilitators_and_hides_nothing() {
    let Circle {
        server,
        mut fac,
        mut p,
        p_id,
    } = circle().await;
    let mut other = server.login(&Identity::generate()).await;
    other.join("circle", "Other", None).await;
    let seq = assert_acked(&post_raw(&mut p, "circle", "Some days I want to die, honestly").await);
    let nudge = fac.next_event_in("circle", Channel::Staff).await;
    match nudge.note {
        Some(Note::RiskNudge {
            member, seq: about, ..
        }) => assert_eq!((member, about), (p_id.key(), seq)),
        other => panic!("{other:?}"),
    }
    // Delivered to the group as written.
    assert_eq!(
        other.next_event("circle").await.verified_body(),
        "Some days I want to die, honestly"
    );
    assert_acked(&post_raw(&mut p, "circle", "I'm still allowed to speak").await);
}

/// The next risk nudge in the facilitators' channel: which message it is about.
async fn next_nudge(fac: &mut peerhub_tests::Client) -> u64 {
    match fac.next_event_in("circle", Channel::Staff).await.note {
        Some(Note::RiskNudge { seq, .. }) => seq,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_risk_nudge_catches_how_people_type_on_phones() {
    // Before risk_phrases.rs, a lower-case substring search: the curly apostrophe
    // phones type, a missing apostrophe and stretched letters all went unnoticed.
    let Circle { mut fac, mut p, .. } = circle().await;
    for text in [
        "I can\u{2019}t go on",
        "i cant go on",
        "I CAN'T GO ONNN",
        "been self-harming again",
        "feeling suicidal tonight",
    ] {
        let seq = assert_acked(&post_raw(&mut p, "circle", text).await);
        assert_eq!(next_nudge(&mut fac).await, seq, "{text:?} nudges");
    }
    // Ordinary words that share letters pass without a note: the next nudge is
    // about the message after them.
    assert_acked(&post_raw(&mut p, "circle", "can't go online at work").await);
    assert_acked(&post_raw(&mut p, "circle", "my new suit is too big").await);
    let seq = assert_acked(&post_raw(&mut p, "circle", "I want to end it all").await);
    assert_eq!(next_nudge(&mut fac).await, seq);
}

#[tokio::test]
async fn the_risk_phrases_are_a_setting() {
    let mut server = TestServer::start_with(|c| c.risk_phrases = vec!["so lonely".into()]).await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("circle", "River", None).await;
    presence_of(&mut fac, p_id.key()).await;
    // The configured list replaces the defaults.
    assert_acked(&post_raw(&mut p, "circle", "I want to die").await);
    let seq = assert_acked(&post_raw(&mut p, "circle", "I feel sooo lonely").await);
    assert_eq!(next_nudge(&mut fac).await, seq);
}

#[tokio::test]
async fn access_codes_virtual_groups_and_schedules_guard_the_door() {
    // (The access code travels outside the signed join, so it is never relayed.)
    let mut server = TestServer::start().await;
    server
        .create_group_with_code("coded", Some("tulip"), |g| {
            g.waiting_room = Some(false);
        })
        .await;
    server
        .create_group_with("invited", |g| {
            g.group_kind = peerhub_protocol::payload::GroupKind::Virtual;
        })
        .await;
    let soon = now_ms() + 3_600_000;
    server
        .create_group_with("later", |g| {
            g.schedule = vec![SessionWindow {
                start_ms: soon,
                end_ms: soon + 3_600_000,
            }];
        })
        .await;
    let mut p = server.login(&Identity::generate()).await;
    assert_code(
        &p.try_join("coded", "Sam", None).await,
        ErrorCode::AccessDenied,
    );
    assert_code(
        &p.try_join("coded", "Sam", Some("rose")).await,
        ErrorCode::AccessDenied,
    );
    assert!(matches!(
        p.try_join("coded", "Sam", Some("tulip")).await,
        ServerFrame::Joined { .. }
    ));
    assert_code(
        &p.try_join("invited", "Sam", None).await,
        ErrorCode::AccessDenied,
    );
    match p.try_join("later", "Sam", None).await {
        ServerFrame::Error {
            code: ErrorCode::Closed,
            next_session_ms,
            message,
            ..
        } => {
            assert_eq!(next_session_ms, Some(soon), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn names_that_imitate_a_role_are_refused_over_the_wire() {
    let Circle { server, .. } = circle().await;
    let mut p = server.login(&Identity::generate()).await;
    for name in [
        "Facilitator",
        "Ѕupervisor Kim",
        "Adm1n",
        "Mod erator",
        // issue 14 item 8: staff-like names that passed
        "Crisis Team",
        "Safeguarding Lead",
        "Facilitation Team",
        "On-call Supervision",
        "NHS 111 Nurse",
        "Mod",
        "M0d",
    ] {
        assert_code(&p.try_join("circle", name, None).await, ErrorCode::Invalid);
    }
    // An ordinary name near a title still joins.
    let ordinary = p.try_join("circle", "Modesty", None).await;
    assert!(
        matches!(ordinary, ServerFrame::Joined { .. }),
        "{ordinary:?}"
    );
}

#[tokio::test]
async fn a_waiting_person_can_still_reach_a_facilitator_privately() {
    let mut server = TestServer::start().await;
    server.create_group_with("circle", |_| {}).await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let me = Identity::generate();
    let mut p = server.login(&me).await;
    assert_eq!(
        p.join("circle", "Ash", None).await.status,
        MemberStatus::Waiting
    );
    let help = me.private_post("circle", fac_id.key(), "I need to talk to someone");
    assert_acked(
        &p.request(|id| ClientFrame::Post {
            id,
            group: gid("circle"),
            env: help,
        })
        .await,
    );
    let got = fac
        .next_event_in("circle", Channel::pair(fac_id.key(), me.key()))
        .await;
    assert_eq!(got.verified_body(), "I need to talk to someone");
}

#[tokio::test]
async fn every_control_is_in_the_audit_chain_signed_by_its_facilitator() {
    let Circle {
        server,
        mut fac,
        p_id,
        ..
    } = circle().await;
    let fac_key = fac.identity.clone().unwrap().key();
    for action in [
        ControlAction::Mute {
            member: p_id.key(),
            minutes: 5,
        },
        ControlAction::Lock,
        ControlAction::CheckIn { member: p_id.key() },
    ] {
        assert_acked(&fac.control("circle", action).await);
    }
    // A refused control leaves no trace.
    assert_code(
        &fac.control("circle", ControlAction::Lock).await,
        ErrorCode::Invalid,
    );
    let store = &server.hub().store;
    peerhub_server::audit::verify(store).expect("the chain verifies");
    let controls: Vec<_> = peerhub_server::audit::entries(store)
        .map(|e| e.unwrap())
        .filter(|e| e.action.starts_with("control."))
        .collect();
    let actions: Vec<&str> = controls.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["control.mute", "control.lock", "control.check_in"]
    );
    for entry in &controls {
        assert_eq!(
            entry.actor(),
            Some(fac_key),
            "signed by the facilitator who acted"
        );
        assert_eq!(entry.group.as_ref().map(|g| g.as_str()), Some("circle"));
    }
    assert_eq!(controls[0].subject, Some(p_id.key()));
    let all: Vec<_> = peerhub_server::audit::entries(store)
        .map(|e| e.unwrap().action)
        .collect();
    assert!(all.contains(&"group.create".to_string()) && all.contains(&"role.grant".to_string()));
}

#[tokio::test]
async fn a_virtual_group_admits_only_people_invited_to_it() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("closed-circle", |g| {
            g.group_kind = peerhub_protocol::payload::GroupKind::Virtual;
            g.waiting_room = Some(false);
        })
        .await;
    server.create_group_with("open-door", |_| {}).await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    let invite = |role: InviteRole, group: Option<&str>| {
        let env = fac_id.signed(Kind::Invite, |counter, ts| InvitePayload {
            role,
            group: group.map(gid),
            groups: Vec::new(),
            ttl_ms: None,
            counter,
            ts,
        });
        move |id| ClientFrame::Invite { id, env }
    };
    let reply = fac
        .request(invite(InviteRole::Member, Some("closed-circle")))
        .await;
    let ServerFrame::Invited { token, group, .. } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(group.as_ref().map(|g| g.as_str()), Some("closed-circle"));
    // A facilitator may not make staff invites, nor member invites to a drop-in group.
    assert_code(
        &fac.request(invite(InviteRole::Facilitator, None)).await,
        ErrorCode::Forbidden,
    );
    assert_code(
        &fac.request(invite(InviteRole::Member, Some("open-door")))
            .await,
        ErrorCode::Invalid,
    );
    assert_code(
        &fac.request(invite(InviteRole::Member, None)).await,
        ErrorCode::Invalid,
    );

    let (guest, stranger) = (Identity::generate(), Identity::generate());
    let mut guest_client = server.login(&guest).await;
    let mut stranger_client = server.login(&stranger).await;
    assert_code(
        &guest_client.try_join("closed-circle", "Guest", None).await,
        ErrorCode::AccessDenied,
    );
    match guest_client.redeem(&token).await {
        ServerFrame::Redeemed {
            role, group, roles, ..
        } => {
            assert_eq!(role, InviteRole::Member);
            assert_eq!(group.unwrap().as_str(), "closed-circle");
            assert!(roles.is_empty(), "membership is not a staff role");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        guest_client.try_join("closed-circle", "Guest", None).await,
        ServerFrame::Joined { .. }
    ));
    assert_code(
        &stranger_client
            .try_join("closed-circle", "Stranger", None)
            .await,
        ErrorCode::AccessDenied,
    );
    // A participant cannot make invites at all.
    let env = stranger.signed(Kind::Invite, |counter, ts| InvitePayload {
        role: InviteRole::Member,
        group: Some(gid("closed-circle")),
        groups: Vec::new(),
        ttl_ms: None,
        counter,
        ts,
    });
    assert_code(
        &stranger_client
            .request(|id| ClientFrame::Invite { id, env })
            .await,
        ErrorCode::Forbidden,
    );
}

/// Found while fixing issue 13: a co-produced record had no limit on its entries,
/// and every write answers (and pushes to the member it is about) the whole record
/// through the outbox. A record grown past the outbox closed its writer with 4001
/// on every further write, and the member it is about on every push. A record now
/// holds at most a quarter of `limits.outbox_bytes` of entries; the entry that
/// would pass it is refused `invalid` and changes nothing.
#[tokio::test]
async fn a_record_cannot_grow_past_what_a_connection_may_hold() {
    let mut server = TestServer::start_with(|c| c.outbox_bytes = 64 * 1024).await;
    server
        .create_group_with("notes", |g| g.waiting_room = Some(false))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("notes", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    assert_eq!(
        p.join("notes", "River", None).await.status,
        MemberStatus::Admitted
    );
    let text = "a".repeat(3_900);
    let write = |reply_to: Option<u64>| {
        fac_id.signed(Kind::Record, |counter, ts| RecordPayload {
            group: gid("notes"),
            about: reply_to.is_none().then(|| p_id.key()),
            reply_to,
            text: text.clone(),
            counter,
            ts,
        })
    };
    let env = write(None);
    let reply = fac
        .request(|id| ClientFrame::Record {
            id,
            group: gid("notes"),
            env,
        })
        .await;
    let ServerFrame::Records { records, .. } = reply else {
        panic!("{reply:?}")
    };
    let record_id = records[0].id;
    p.recv_matching(|f| matches!(f, ServerFrame::Records { id: None, .. }))
        .await
        .expect("the member is told");

    // 30 more entries of 3,900 characters would be about twice the outbox.
    let mut kept = 1;
    let mut refused = None;
    for _ in 0..30 {
        let env = write(Some(record_id));
        let reply = fac
            .request(|id| ClientFrame::Record {
                id,
                group: gid("notes"),
                env,
            })
            .await;
        match reply {
            ServerFrame::Records { records, .. } => {
                kept += 1;
                assert_eq!(records[0].entries.len(), kept);
                p.recv_matching(|f| matches!(f, ServerFrame::Records { id: None, .. }))
                    .await
                    .expect("the member is told");
            }
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    let refused = refused.expect("a record has a limit");
    assert!(
        matches!(&refused, ServerFrame::Error { code: ErrorCode::Invalid, message, .. }
            if message.contains("full")),
        "{refused:?}"
    );
    // Nothing changed; both stay connected and can go on.
    let listed = p
        .request(|id| ClientFrame::Records { id, after: None })
        .await;
    let ServerFrame::Records { records, .. } = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(records[0].entries.len(), kept);
    for entry in &records[0].entries {
        entry.verify().unwrap();
    }
    p.post("notes", "still here").await;
    fac.post("notes", "me too").await;
}

/// Found while fixing issue 13: `records` answered every record about the key in
/// one frame, however many there were. It now answers a page that fits a quarter
/// of the outbox, says `more`, and the next page starts `after` the last id.
#[tokio::test]
async fn records_are_listed_a_page_at_a_time() {
    let mut server = TestServer::start_with(|c| c.outbox_bytes = 64 * 1024).await;
    server
        .create_group_with("notes", |g| g.waiting_room = Some(false))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("notes", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("notes", "River", None).await;
    // Ten records of about 4 KB each: two and a half times a 16 KiB page.
    let mut opened = Vec::new();
    for _ in 0..10 {
        let env = fac_id.signed(Kind::Record, |counter, ts| RecordPayload {
            group: gid("notes"),
            about: Some(p_id.key()),
            reply_to: None,
            text: "b".repeat(3_900),
            counter,
            ts,
        });
        let reply = fac
            .request(|id| ClientFrame::Record {
                id,
                group: gid("notes"),
                env,
            })
            .await;
        let ServerFrame::Records { records, more, .. } = reply else {
            panic!("{reply:?}")
        };
        assert!(!more);
        opened.push(records[0].id);
        p.recv_matching(|f| matches!(f, ServerFrame::Records { id: None, .. }))
            .await
            .expect("the member is told");
    }

    let mut listed = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let reply = p.request(|id| ClientFrame::Records { id, after }).await;
        let ServerFrame::Records { records, more, .. } = reply else {
            panic!("{reply:?}")
        };
        pages += 1;
        assert!(
            !records.is_empty() && records.len() < 10,
            "{}",
            records.len()
        );
        listed.extend(records.iter().map(|r| r.id));
        if !more {
            break;
        }
        after = listed.last().copied();
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(listed, opened);
    // Past the last one: an empty page, no more.
    let reply = p
        .request(|id| ClientFrame::Records {
            id,
            after: opened.last().copied(),
        })
        .await;
    assert!(
        matches!(&reply, ServerFrame::Records { records, more: false, .. } if records.is_empty()),
        "{reply:?}"
    );
}
