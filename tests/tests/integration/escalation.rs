//! Distress escalation: no call for help is ever silently lost.
//!
//! Deadlines are configured short (hundreds of ms) so routing, re-routing and the
//! unanswered notice can be watched in real time without slowing the suite.

use std::time::Duration;

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{
    Consent, EscalationPart, EscalationStatus, EscalationSummary, EscalationView, RotaEntry,
    Severity,
};
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::{
    ControlAction, ControlPayload, EscalationActPayload, EscalationAction, FlagPayload, RotaPayload,
};
use peerhub_protocol::{ClientFrame, ErrorCode, PublicKey, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{now_ms, Client, Identity, TestServer};

const DEADLINE: Duration = Duration::from_millis(400);

fn short_deadlines(config: &mut peerhub_server::config::Config) {
    config.escalation.concern_deadline = DEADLINE;
    config.escalation.urgent_deadline = DEADLINE;
    config.escalation.emergency_deadline = DEADLINE;
}

async fn flag(
    client: &mut Client,
    about: PublicKey,
    severity: Severity,
    consent: Consent,
    tweak: impl FnOnce(&mut FlagPayload),
) -> ServerFrame {
    let me = client.identity.clone().unwrap();
    let env = me.signed(Kind::Flag, |counter, ts| {
        let mut payload = FlagPayload {
            group: gid("circle"),
            about,
            seq: None,
            severity,
            consent,
            reason: None,
            withhold_notice: None,
            note: None,
            counter,
            ts,
        };
        tweak(&mut payload);
        payload
    });
    client
        .request(|id| ClientFrame::Flag {
            id,
            group: gid("circle"),
            env,
        })
        .await
}

async fn act(client: &mut Client, escalation: u64, action: EscalationAction) -> ServerFrame {
    let me = client.identity.clone().unwrap();
    let env = me.signed(Kind::Escalation, |counter, ts| EscalationActPayload {
        escalation,
        action,
        counter,
        ts,
    });
    client
        .request(|id| ClientFrame::Escalation { id, env })
        .await
}

/// Every page of one part of an escalation, read as a supervisor (by id) or as
/// the person it is about (by reference).
async fn part(
    client: &mut Client,
    escalation: Option<u64>,
    reference: Option<String>,
    part: EscalationPart,
) -> (
    Vec<peerhub_protocol::SignedEnvelope>,
    Vec<peerhub_protocol::escalation::EscalationStep>,
    Vec<peerhub_protocol::escalation::ContextEvent>,
) {
    let (mut flags, mut steps, mut context) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let offset = (flags.len() + steps.len() + context.len()) as u32;
        let reply = client
            .request(|id| ClientFrame::EscalationDetail {
                id,
                escalation,
                reference: reference.clone(),
                part,
                offset: Some(offset),
            })
            .await;
        let ServerFrame::EscalationDetail {
            total,
            flags: f,
            steps: s,
            context: c,
            ..
        } = reply
        else {
            panic!("{reply:?}")
        };
        let got = f.len() + s.len() + c.len();
        flags.extend(f);
        steps.extend(s);
        context.extend(c);
        if got == 0 || (flags.len() + steps.len() + context.len()) as u32 >= total {
            return (flags, steps, context);
        }
    }
}

/// An escalation in full as a supervisor reads it: its summary, then its flags,
/// steps and context fetched on demand.
async fn full_view(client: &mut Client, summary: EscalationSummary) -> EscalationView {
    let id = summary.id.expect("supervisors see ids");
    let (flags, _, _) = part(client, Some(id), None, EscalationPart::Flags).await;
    let (_, steps, _) = part(client, Some(id), None, EscalationPart::Steps).await;
    let (_, _, context) = part(client, Some(id), None, EscalationPart::Context).await;
    EscalationView {
        id,
        group: summary.group,
        about: summary.about,
        severity: summary.severity,
        status: summary.status,
        level: summary.level,
        waiting_for: summary.waiting_for,
        deadline_ms: summary.deadline_ms,
        created_ms: summary.created_ms,
        handler: summary.handler,
        flags,
        context,
        steps,
        outcome: summary.outcome,
    }
}

/// The next escalation push about `id` that `want` accepts, read in full.
async fn escalation_where(
    client: &mut Client,
    id: u64,
    want: impl Fn(&EscalationSummary) -> bool,
) -> EscalationView {
    let summary = pushed(client, |e| e.id == Some(id) && want(e)).await;
    full_view(client, summary).await
}

/// The next escalation summary pushed (or listed at login) that `want` accepts.
async fn pushed(
    client: &mut Client,
    want: impl Fn(&EscalationSummary) -> bool,
) -> EscalationSummary {
    let frame = client
        .recv_matching(|f| match f {
            ServerFrame::Escalation { escalation } => want(escalation),
            ServerFrame::Escalations {
                id: None,
                escalations,
                ..
            } => escalations.iter().any(&want),
            _ => false,
        })
        .await
        .expect("escalation push");
    match frame {
        ServerFrame::Escalation { escalation } => escalation,
        ServerFrame::Escalations { escalations, .. } => {
            escalations.into_iter().find(|e| want(e)).expect("matched")
        }
        _ => unreachable!(),
    }
}

/// The id of the open escalation about `about`, as a supervisor or admin learns it
/// (from the pushes: a flagger is told a reference, never the id).
async fn id_about(staff: &mut Client, about: PublicKey) -> u64 {
    pushed(staff, |e| {
        e.about == about && e.status == EscalationStatus::Open
    })
    .await
    .id
    .expect("staff see ids")
}

/// The open escalation about `about` as a supervisor next sees it, read in full.
async fn view_about(staff: &mut Client, about: PublicKey) -> EscalationView {
    let summary = pushed(staff, |e| {
        e.about == about && e.status == EscalationStatus::Open
    })
    .await;
    full_view(staff, summary).await
}

/// The escalations a client may list (its first page).
async fn listed(client: &mut Client) -> Vec<EscalationSummary> {
    let reply = client
        .request(|id| ClientFrame::Escalations { id, after: None })
        .await;
    let ServerFrame::Escalations { escalations, .. } = reply else {
        panic!("{reply:?}")
    };
    escalations
}

/// The next support notice of kind `notice`.
async fn notice(client: &mut Client, kind: &str) -> (String, usize) {
    let frame = client
        .recv_matching(|f| matches!(f, ServerFrame::SupportNotice { notice, .. } if notice == kind))
        .await
        .expect("support notice");
    let ServerFrame::SupportNotice {
        message, helplines, ..
    } = frame
    else {
        unreachable!()
    };
    (message, helplines.len())
}

/// A `flagged` answer: the flagger's reference and whether someone is on call.
#[track_caller]
fn flagged(frame: &ServerFrame) -> (String, bool) {
    match frame {
        ServerFrame::Flagged {
            reference,
            on_call,
            helplines,
            ..
        } => {
            assert!(
                !helplines.is_empty(),
                "every flag answer carries the helplines"
            );
            (reference.clone(), *on_call)
        }
        other => panic!("expected flagged, got {other:?}"),
    }
}

#[track_caller]
fn assert_code(frame: &ServerFrame, code: ErrorCode) {
    match frame {
        ServerFrame::Error { code: got, .. } => assert_eq!(*got, code, "{frame:?}"),
        other => panic!("expected error {code}, got {other:?}"),
    }
}

struct Desk {
    server: TestServer,
    fac: Client,
    p: Client,
    p_id: Identity,
    other: Client,
    sup1: Client,
    sup1_id: Identity,
    sup2: Client,
    sup2_id: Identity,
    admin: Client,
}

async fn set_rota(admin: &mut Client, entries: Vec<RotaEntry>) -> ServerFrame {
    let me = admin.identity.clone().unwrap();
    let env = me.signed(Kind::Rota, |counter, ts| RotaPayload {
        entries,
        counter,
        ts,
    });
    admin.request(|id| ClientFrame::SetRota { id, env }).await
}

/// A group with a facilitator, two participants, and two supervisors on the rota
/// (level 1 and level 2) when `rota` is true. Deadlines are long: a test that
/// watches re-routing uses [`desk_rerouting`].
async fn desk(rota: bool) -> Desk {
    desk_with(rota, Duration::from_secs(30)).await
}

/// As [`desk`], with [`DEADLINE`] at every level so re-routing can be watched.
async fn desk_rerouting(rota: bool) -> Desk {
    desk_with(rota, DEADLINE).await
}

async fn desk_with(rota: bool, deadline: Duration) -> Desk {
    let mut server = TestServer::start_with(|c| {
        c.escalation.concern_deadline = deadline;
        c.escalation.urgent_deadline = deadline;
        c.escalation.emergency_deadline = deadline;
    })
    .await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let mut admin = server.admin().await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let (sup1_id, sup1) = server.with_role(Role::Supervisor).await;
    let (sup2_id, sup2) = server.with_role(Role::Supervisor).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("circle", "River", None).await;
    p.post("circle", "it's been a really hard week").await;
    let mut other = server.login(&Identity::generate()).await;
    other.join("circle", "Sky", None).await;
    if rota {
        let now = now_ms();
        let window = |supervisor: PublicKey, level| RotaEntry {
            supervisor,
            start_ms: now - 3_600_000,
            end_ms: now + 3_600_000,
            level,
        };
        let reply = set_rota(
            &mut admin,
            vec![window(sup1_id.key(), 1), window(sup2_id.key(), 2)],
        )
        .await;
        assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    }
    Desk {
        server,
        fac,
        p,
        p_id,
        other,
        sup1,
        sup1_id,
        sup2,
        sup2_id,
        admin,
    }
}

#[tokio::test]
async fn a_flag_reaches_the_on_call_supervisor_with_verifiable_context() {
    let Desk {
        mut p,
        p_id,
        mut sup1,
        sup1_id,
        ..
    } = desk(true).await;
    let reply = flag(&mut p, p_id.key(), Severity::Emergency, Consent::Own, |f| {
        f.note = Some("I need support now".into())
    })
    .await;
    let (_, on_call) = flagged(&reply);
    assert!(on_call);
    let view = view_about(&mut sup1, p_id.key()).await;
    assert_eq!((view.level, view.status), (1, EscalationStatus::Open));
    assert_eq!(view.waiting_for, vec![sup1_id.key()]);
    assert!(view.deadline_ms.is_some());
    view.flags[0]
        .verify()
        .expect("the flag is signed by its raiser");
    let said = view
        .context
        .iter()
        .find(|c| c.env.key == p_id.key())
        .expect("context has the group's messages");
    said.env
        .verify()
        .expect("context keeps the original signatures");
}

#[tokio::test]
async fn acknowledging_stops_rerouting_and_the_flagger_hears() {
    let Desk {
        mut p,
        p_id,
        mut sup1,
        mut sup2,
        ..
    } = desk_rerouting(true).await;
    flagged(&flag(&mut p, p_id.key(), Severity::Urgent, Consent::Own, |_| {}).await);
    let id = id_about(&mut sup1, p_id.key()).await;
    assert!(matches!(
        act(&mut sup1, id, EscalationAction::Ack).await,
        ServerFrame::Ok { .. }
    ));
    notice(&mut p, "acknowledged").await;
    tokio::time::sleep(DEADLINE * 3).await;
    let summary = listed(&mut sup2)
        .await
        .into_iter()
        .find(|e| e.id == Some(id))
        .unwrap();
    let latest = full_view(&mut sup2, summary).await;
    assert_eq!(latest.status, EscalationStatus::Acknowledged);
    let after_ack: Vec<&str> = latest
        .steps
        .iter()
        .map(|s| s.step.as_str())
        .skip_while(|s| *s != "acknowledged")
        .collect();
    assert_eq!(
        after_ack,
        ["acknowledged"],
        "no re-routing after an acknowledgement"
    );
    assert!(latest.deadline_ms.is_none());
}

#[tokio::test]
async fn an_unanswered_flag_goes_to_level_2_then_everyone_then_people_are_told() {
    let Desk {
        mut fac,
        mut p,
        p_id,
        mut sup2,
        sup2_id,
        mut admin,
        ..
    } = desk_rerouting(true).await;
    flagged(
        &flag(
            &mut p,
            p_id.key(),
            Severity::Emergency,
            Consent::Own,
            |_| {},
        )
        .await,
    );
    let id = id_about(&mut admin, p_id.key()).await;
    let level2 = escalation_where(&mut sup2, id, |e| e.level == 2).await;
    assert_eq!(level2.waiting_for, vec![sup2_id.key()]);
    let everyone = escalation_where(&mut admin, id, |e| e.level == 3).await;
    assert!(
        everyone.waiting_for.len() >= 3,
        "every supervisor and admin: {:?}",
        everyone.waiting_for
    );
    let (message, helplines) = notice(&mut fac, "unanswered").await;
    assert!(message.contains("999") && helplines > 0, "{message}");
    notice(&mut p, "unanswered").await;
    let last = escalation_where(&mut admin, id, |e| e.level == 4).await;
    assert_eq!(
        last.status,
        EscalationStatus::Open,
        "still open, still visible"
    );
    let steps: Vec<&str> = last.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        ["raised", "routed", "routed", "routed", "unanswered"]
    );
}

#[tokio::test]
async fn with_nobody_on_the_rota_people_are_told_at_once() {
    let Desk {
        mut fac,
        mut p,
        p_id,
        mut sup1,
        ..
    } = desk(false).await;
    let (_, on_call) =
        flagged(&flag(&mut p, p_id.key(), Severity::Concern, Consent::Own, |_| {}).await);
    assert!(!on_call);
    let (message, _) = notice(&mut p, "unanswered").await;
    assert!(message.contains("No supervisor is on call"), "{message}");
    notice(&mut fac, "unanswered").await;
    // Still routed to everyone who could take it.
    assert_eq!(view_about(&mut sup1, p_id.key()).await.level, 3);
}

#[tokio::test]
async fn two_supervisors_acknowledging_at_once_one_wins() {
    let Desk {
        mut p,
        p_id,
        mut sup1,
        sup1_id,
        mut sup2,
        sup2_id,
        ..
    } = desk(true).await;
    flagged(&flag(&mut p, p_id.key(), Severity::Urgent, Consent::Own, |_| {}).await);
    let id = id_about(&mut sup1, p_id.key()).await;
    let (a, b) = tokio::join!(
        act(&mut sup1, id, EscalationAction::Ack),
        act(&mut sup2, id, EscalationAction::Ack)
    );
    let wins = [&a, &b]
        .iter()
        .filter(|r| matches!(r, ServerFrame::Ok { .. }))
        .count();
    assert_eq!(wins, 1, "{a:?} / {b:?}");
    let loser = if matches!(a, ServerFrame::Ok { .. }) {
        &b
    } else {
        &a
    };
    assert_code(loser, ErrorCode::Taken);
    let winner = if matches!(a, ServerFrame::Ok { .. }) {
        sup1_id.key()
    } else {
        sup2_id.key()
    };
    let seen = escalation_where(&mut sup1, id, |e| e.handler.is_some()).await;
    assert_eq!(seen.handler, Some(winner), "the others see who took it");
}

#[tokio::test]
async fn duplicate_flags_about_one_person_merge_and_every_flagger_hears_back() {
    let Desk {
        mut p,
        p_id,
        mut other,
        mut fac,
        mut sup1,
        ..
    } = desk(true).await;
    let (first, _) = flagged(
        &flag(
            &mut other,
            p_id.key(),
            Severity::Concern,
            Consent::Given,
            |_| {},
        )
        .await,
    );
    let (second, _) = flagged(
        &flag(
            &mut fac,
            p_id.key(),
            Severity::Urgent,
            Consent::Given,
            |_| {},
        )
        .await,
    );
    assert_ne!(
        first, second,
        "each flagger has their own reference: comparing them tells nothing"
    );
    flagged(&flag(&mut p, p_id.key(), Severity::Concern, Consent::Own, |_| {}).await);
    let id = id_about(&mut sup1, p_id.key()).await;
    let view = escalation_where(&mut sup1, id, |e| e.counts.flags == 3).await;
    assert_eq!(
        view.severity,
        Severity::Urgent,
        "the most serious flag counts"
    );
    assert_eq!(view.flags.len(), 3, "one escalation holds the three flags");
}

#[tokio::test]
async fn no_sanction_blocks_the_help_path() {
    let Desk {
        mut fac,
        mut p,
        p_id,
        mut other,
        ..
    } = desk(true).await;
    let member = |key| ControlAction::Mute {
        member: key,
        minutes: 30,
    };
    let fac_id = fac.identity.clone().unwrap();
    for action in [
        member(p_id.key()),
        ControlAction::Pause,
        ControlAction::SlowMode { seconds: 600 },
    ] {
        let env = fac_id.signed(Kind::Control, |counter, ts| ControlPayload {
            group: gid("circle"),
            action,
            counter,
            ts,
        });
        let reply = fac
            .request(|id| ClientFrame::Control {
                id,
                group: gid("circle"),
                env,
            })
            .await;
        assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    }
    // Muted, paused and slowed: a post is refused, a flag is not.
    assert!(matches!(
        p.request(|id| ClientFrame::Post {
            id,
            group: gid("circle"),
            env: p_id.post("circle", "hello")
        })
        .await,
        ServerFrame::Error { .. }
    ));
    flagged(&flag(&mut p, p_id.key(), Severity::Urgent, Consent::Own, |_| {}).await);
    // Removed from the group: still able to ask for help there.
    let other_key = other.identity.clone().unwrap().key();
    let remove = ControlAction::Remove {
        member: other_key,
        until_session_end: false,
        reason: None,
    };
    let env = fac_id.signed(Kind::Control, |counter, ts| ControlPayload {
        group: gid("circle"),
        action: remove,
        counter,
        ts,
    });
    fac.request(|id| ClientFrame::Control {
        id,
        group: gid("circle"),
        env,
    })
    .await;
    flagged(
        &flag(
            &mut other,
            other_key,
            Severity::Concern,
            Consent::Own,
            |_| {},
        )
        .await,
    );
}

#[tokio::test]
async fn the_person_a_flag_is_about_is_told_unless_imminent_risk_withholds_it() {
    let Desk {
        mut p,
        p_id,
        mut other,
        mut sup1,
        ..
    } = desk(true).await;
    flagged(
        &flag(
            &mut other,
            p_id.key(),
            Severity::Concern,
            Consent::Given,
            |_| {},
        )
        .await,
    );
    let id = id_about(&mut sup1, p_id.key()).await;
    let (message, helplines) = notice(&mut p, "support_asked").await;
    assert!(message.contains("support") && helplines > 0, "{message}");
    let escalations = listed(&mut p).await;
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0].id, None, "the person is not told the id");
    let reference = escalations[0].reference.clone().expect("their reference");
    assert_eq!(
        escalations[0].counts.context, 0,
        "the person reads the entries, not others' messages"
    );
    let (_, _, context) = part(&mut p, None, Some(reference), EscalationPart::Context).await;
    assert!(context.is_empty());
    // Resolve it; then a flag that withholds the notice for imminent risk.
    act(&mut sup1, id, EscalationAction::Ack).await;
    act(
        &mut sup1,
        id,
        EscalationAction::Resolve {
            outcome: "talked, safe".into(),
        },
    )
    .await;
    notice(&mut p, "resolved").await;
    let refused = flag(
        &mut other,
        p_id.key(),
        Severity::Emergency,
        Consent::ImminentRisk,
        |_| {},
    )
    .await;
    assert_code(&refused, ErrorCode::Invalid);
    let withheld = flag(
        &mut other,
        p_id.key(),
        Severity::Emergency,
        Consent::ImminentRisk,
        |f| {
            f.reason = Some("said they have the means tonight".into());
            f.withhold_notice = Some("telling them now may raise the risk".into());
        },
    )
    .await;
    flagged(&withheld);
    let told = tokio::time::timeout(
        Duration::from_millis(300),
        p.recv_matching(
            |f| matches!(f, ServerFrame::SupportNotice { notice, .. } if notice == "support_asked"),
        ),
    )
    .await;
    assert!(
        told.is_err(),
        "not told while the imminent-risk reason stands: {told:?}"
    );
    // Neither listed nor counted: the total says nothing of the withheld one.
    let reply = p
        .request(|id| ClientFrame::Escalations { id, after: None })
        .await;
    let ServerFrame::Escalations {
        escalations,
        total,
        next,
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (escalations.len(), total, next),
        (1, 1, None),
        "withheld while open: {escalations:?}"
    );
    assert_eq!(escalations[0].status, EscalationStatus::Resolved);
}

#[tokio::test]
async fn supervisors_note_hand_over_and_resolve_and_every_step_is_signed() {
    let Desk {
        server,
        mut p,
        p_id,
        mut sup1,
        sup1_id,
        mut sup2,
        sup2_id,
        ..
    } = desk(true).await;
    flagged(&flag(&mut p, p_id.key(), Severity::Urgent, Consent::Own, |_| {}).await);
    let id = id_about(&mut sup1, p_id.key()).await;
    assert_code(
        &act(
            &mut sup2,
            id,
            EscalationAction::Resolve {
                outcome: "x".into(),
            },
        )
        .await,
        ErrorCode::Forbidden,
    );
    act(&mut sup1, id, EscalationAction::Ack).await;
    act(
        &mut sup1,
        id,
        EscalationAction::Note {
            text: "called them back".into(),
        },
    )
    .await;
    act(
        &mut sup1,
        id,
        EscalationAction::Handover { to: sup2_id.key() },
    )
    .await;
    assert!(matches!(
        act(
            &mut sup2,
            id,
            EscalationAction::Resolve {
                outcome: "safe plan agreed".into()
            }
        )
        .await,
        ServerFrame::Ok { .. }
    ));
    let done = escalation_where(&mut sup1, id, |e| e.status == EscalationStatus::Resolved).await;
    assert_eq!(done.outcome.as_deref(), Some("safe plan agreed"));
    let people: Vec<(&str, Option<PublicKey>)> = done
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.actor))
        .collect();
    assert_eq!(
        people,
        [
            ("raised", Some(p_id.key())),
            ("routed", None),
            ("acknowledged", Some(sup1_id.key())),
            ("note", Some(sup1_id.key())),
            ("handover", Some(sup1_id.key())),
            ("resolved", Some(sup2_id.key())),
        ]
    );
    for step in done.steps.iter().filter(|s| s.actor.is_some()) {
        step.env.as_ref().unwrap().verify().unwrap();
    }
    let actions: Vec<String> = peerhub_server::audit::entries(&server.hub().store)
        .map(|e| e.unwrap().action)
        .filter(|a| a.starts_with("escalation."))
        .collect();
    assert_eq!(
        actions,
        [
            "escalation.raise",
            "escalation.ack",
            "escalation.note",
            "escalation.handover",
            "escalation.resolve"
        ]
    );
    peerhub_server::audit::verify(&server.hub().store).unwrap();
}

#[tokio::test]
async fn the_queue_is_ordered_by_risk_then_waiting_time() {
    let Desk {
        mut p,
        p_id,
        mut other,
        mut fac,
        mut sup1,
        ..
    } = desk(true).await;
    let other_key = other.identity.clone().unwrap().key();
    let fac_key = fac.identity.clone().unwrap().key();
    flagged(&flag(&mut p, p_id.key(), Severity::Concern, Consent::Own, |_| {}).await);
    let concern = id_about(&mut sup1, p_id.key()).await;
    flagged(
        &flag(
            &mut other,
            other_key,
            Severity::Urgent,
            Consent::Own,
            |_| {},
        )
        .await,
    );
    let urgent = id_about(&mut sup1, other_key).await;
    flagged(&flag(&mut fac, fac_key, Severity::Emergency, Consent::Own, |_| {}).await);
    let emergency = id_about(&mut sup1, fac_key).await;
    let order: Vec<Option<u64>> = listed(&mut sup1).await.iter().map(|e| e.id).collect();
    assert_eq!(order, vec![Some(emergency), Some(urgent), Some(concern)]);
}

#[tokio::test]
async fn members_see_whether_a_supervisor_is_on_call() {
    let Desk {
        server, mut admin, ..
    } = desk(false).await;
    let mut member = server.login(&Identity::generate()).await;
    let coverage = member
        .recv_matching(|f| matches!(f, ServerFrame::Coverage { .. }))
        .await
        .unwrap();
    assert!(
        matches!(coverage, ServerFrame::Coverage { on_call: false, ref helplines } if !helplines.is_empty())
    );
    let (sup_id, _) = server.with_role(Role::Supervisor).await;
    let now = now_ms();
    let entry = RotaEntry {
        supervisor: sup_id.key(),
        start_ms: now - 1000,
        end_ms: now + 60_000,
        level: 1,
    };
    set_rota(&mut admin, vec![entry]).await;
    let coverage = member
        .recv_matching(|f| matches!(f, ServerFrame::Coverage { on_call: true, .. }))
        .await;
    assert!(coverage.is_ok());
    // Only an admin sets the rota, and only with supervisors on it.
    assert_code(
        &set_rota(&mut member, vec![entry]).await,
        ErrorCode::Forbidden,
    );
    let stranger = RotaEntry {
        supervisor: PublicKey([7; 32]),
        ..entry
    };
    assert_code(
        &set_rota(&mut admin, vec![stranger]).await,
        ErrorCode::Invalid,
    );
}

#[tokio::test]
async fn an_offline_supervisor_gets_every_pending_escalation_on_connecting() {
    let Desk {
        server,
        mut p,
        p_id,
        ..
    } = desk(true).await;
    flagged(&flag(&mut p, p_id.key(), Severity::Concern, Consent::Own, |_| {}).await);
    let (_, mut late) = server.with_role(Role::Supervisor).await;
    // Roles granted after login: the pending queue arrives with the grant.
    view_about(&mut late, p_id.key()).await;
}

#[tokio::test]
async fn a_pending_escalation_survives_kill_9_and_its_deadline_is_still_enforced() {
    use peerhub_protocol::payload::InviteRole;
    use peerhub_tests::ProcessServer;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--deadline-urgent-ms", "1500"];
    let mut process = ProcessServer::start(&data, &args).await;
    // Everything set up over the wire, as an organisation would.
    let mut admin = process.admin().await;
    admin.create_group("circle", "Circle").await;
    let token = admin.invite(InviteRole::Supervisor, None).await;
    let (sup_id, sup) = process.redeemed(&token).await;
    let now = now_ms();
    let entry = RotaEntry {
        supervisor: sup_id.key(),
        start_ms: now - 1000,
        end_ms: now + 600_000,
        level: 1,
    };
    assert!(matches!(
        set_rota(&mut admin, vec![entry]).await,
        ServerFrame::Ok { .. }
    ));
    drop(sup);
    let p_id = Identity::generate();
    let mut p = Client::connect(process.addr).await;
    p.login(&p_id).await;
    p.join("circle", "River", None).await;
    flagged(&flag(&mut p, p_id.key(), Severity::Urgent, Consent::Own, |_| {}).await);
    let id = id_about(&mut admin, p_id.key()).await;

    process.signal("KILL");
    process.wait().await;
    let process = ProcessServer::start(&data, &args).await;
    // The supervisor was offline through the crash: the escalation is waiting.
    let mut sup = Client::connect(process.addr).await;
    sup.login(&sup_id).await;
    let pending = escalation_where(&mut sup, id, |_| true).await;
    assert_eq!(pending.status, EscalationStatus::Open);
    // Its deadline was re-armed: unacknowledged, it moves on to everyone.
    let moved = escalation_where(&mut sup, id, |e| e.level == 3).await;
    assert!(moved.waiting_for.contains(&sup_id.key()));
}

/// A one-route HTTP server on loopback that refuses the first `refuse` requests
/// with 500 and accepts the rest; it hands every request to the test.
async fn pager_receiver(
    refuse: usize,
) -> (
    String,
    tokio::sync::mpsc::Receiver<(Vec<(String, String)>, Vec<u8>, u16)>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/page", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (headers, body) = loop {
                let read = socket.read(&mut buf).await.unwrap_or(0);
                if read == 0 {
                    break (Vec::new(), Vec::new());
                }
                raw.extend_from_slice(&buf[..read]);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_string();
                let headers: Vec<(String, String)> = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    break (headers, raw[end + 4..end + 4 + length].to_vec());
                }
            };
            let status = if n < refuse { 500 } else { 200 };
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = tx.send((headers, body, status)).await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn the_pager_hook_is_posted_signed_and_retried_until_accepted() {
    let (url, mut pages) = pager_receiver(2).await;
    let mut server = TestServer::start_with(|c| {
        short_deadlines(c);
        c.escalation.pager_url = Some(url.clone());
    })
    .await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("circle", "River", None).await;
    flagged(
        &flag(
            &mut p,
            p_id.key(),
            Severity::Emergency,
            Consent::Own,
            |_| {},
        )
        .await,
    );
    let id = *server
        .hub()
        .store
        .escalation_ids_about(&p_id.key())
        .unwrap()
        .last()
        .expect("stored");
    let mut statuses = Vec::new();
    let (headers, body) = loop {
        let (headers, body, status) = tokio::time::timeout(Duration::from_secs(20), pages.recv())
            .await
            .expect("the pager is called")
            .unwrap();
        statuses.push(status);
        if status == 200 {
            break (headers, body);
        }
    };
    assert_eq!(statuses, vec![500, 500, 200], "retried until accepted");
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["escalation"], id);
    assert_eq!(page["severity"], "emergency");
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("River"), "no names in a page");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let key = ed25519_dalek::VerifyingKey::from_bytes(
        &peerhub_protocol::encoding::unb64(&header("x-peerhub-key"))
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap();
    let sig = ed25519_dalek::Signature::from_slice(
        &peerhub_protocol::encoding::unb64(&header("x-peerhub-signature")).unwrap(),
    )
    .unwrap();
    let mut signed = b"peerhub/1/pager\n".to_vec();
    signed.extend_from_slice(&body);
    key.verify_strict(&signed, &sig).expect("signed by the hub");
}

#[tokio::test]
async fn a_supervisor_joins_the_group_and_talks_privately_with_the_person() {
    let Desk {
        mut p,
        p_id,
        mut fac,
        mut sup1,
        sup1_id,
        ..
    } = desk(true).await;
    flagged(&flag(&mut p, p_id.key(), Severity::Urgent, Consent::Own, |_| {}).await);
    let id = id_about(&mut sup1, p_id.key()).await;
    act(&mut sup1, id, EscalationAction::Ack).await;
    // Joining is announced to the room: the supervisor appears with their role.
    let joined = sup1.join("circle", "Sam", None).await;
    assert_eq!(
        joined.status,
        peerhub_protocol::frame::MemberStatus::Admitted,
        "supervisors pass the door"
    );
    let seen = fac
        .recv_matching(
            |f| matches!(f, ServerFrame::Presence { member, .. } if member.key == sup1_id.key()),
        )
        .await
        .unwrap();
    let ServerFrame::Presence { member, .. } = seen else {
        unreachable!()
    };
    assert!(member.roles.contains(&Role::Supervisor));
    let hello = sup1_id.private_post(
        "circle",
        p_id.key(),
        "Hi River, I'm Sam, a supervisor. How are you now?",
    );
    let ack = sup1
        .request(|rid| ClientFrame::Post {
            id: rid,
            group: gid("circle"),
            env: hello,
        })
        .await;
    let ServerFrame::Ack { channel, .. } = ack else {
        panic!("{ack:?}")
    };
    let got = p.next_event_in("circle", channel).await;
    assert!(got.verified_body().contains("supervisor"));
    // And with the facilitator.
    let fac_key = fac.identity.clone().unwrap().key();
    let note = sup1_id.private_post(
        "circle",
        fac_key,
        "I have this one; I'll check in after the session.",
    );
    assert!(matches!(
        sup1.request(|rid| ClientFrame::Post {
            id: rid,
            group: gid("circle"),
            env: note
        })
        .await,
        ServerFrame::Ack { .. }
    ));
}

#[tokio::test]
async fn the_rota_is_kept_from_the_command_line_and_helplines_are_configuration() {
    use peerhub_protocol::payload::InviteRole;
    use peerhub_tests::ProcessServer;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut process = ProcessServer::start(&data, &[]).await;
    let mut admin = process.admin().await;
    let admin_id = admin.identity.clone().unwrap();
    let token = admin.invite(InviteRole::Supervisor, None).await;
    let (sup_id, _sup) = process.redeemed(&token).await;
    // While the server runs, the command refuses the folder.
    let peerhub = peerhub_tests::process::binary();
    let run = |args: &[&str]| {
        std::process::Command::new(&peerhub)
            .args(args)
            .output()
            .unwrap()
    };
    let data_arg = data.to_str().unwrap();
    let busy = run(&["rota", "list", "--data", data_arg]);
    assert_eq!(busy.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use"));
    process.signal("TERM");
    process.wait().await;

    let now = now_ms();
    let rota = dir.path().join("rota.json");
    let entry = RotaEntry {
        supervisor: sup_id.key(),
        start_ms: now - 1000,
        end_ms: now + 3_600_000,
        level: 1,
    };
    std::fs::write(&rota, serde_json::to_string(&vec![entry]).unwrap()).unwrap();
    let set = run(&[
        "rota",
        "set",
        "--data",
        data_arg,
        "--file",
        rota.to_str().unwrap(),
    ]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let listed = run(&["rota", "list", "--data", data_arg]);
    let listed: Vec<RotaEntry> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed, vec![entry]);
    // Only supervisors go on the rota.
    let stranger = RotaEntry {
        supervisor: admin_id.key(),
        ..entry
    };
    std::fs::write(&rota, serde_json::to_string(&vec![stranger]).unwrap()).unwrap();
    let refused = run(&[
        "rota",
        "set",
        "--data",
        data_arg,
        "--file",
        rota.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("supervisor role"));
    let verified = run(&["audit", "verify", "--data", data_arg]);
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("audit chain OK"),
        "the CLI change is audited"
    );

    // Restarted with its own helplines: a member sees someone on call, and them.
    let helplines = dir.path().join("helplines.json");
    std::fs::write(
        &helplines,
        r#"[{"name":"Emergency services","contact":"999","hours":"24 hours","nation":"UK","emergency":true},
            {"name":"Our crisis line","contact":"0800 000 000","hours":"18:00-02:00","nation":"Wales"}]"#,
    )
    .unwrap();
    let process = ProcessServer::start(&data, &["--helplines", helplines.to_str().unwrap()]).await;
    let mut member = Client::connect(process.addr).await;
    member.login(&Identity::generate()).await;
    let coverage = member
        .recv_matching(|f| matches!(f, ServerFrame::Coverage { .. }))
        .await
        .unwrap();
    let ServerFrame::Coverage { on_call, helplines } = coverage else {
        unreachable!()
    };
    assert!(on_call);
    assert_eq!(
        helplines
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>(),
        ["Emergency services", "Our crisis line"]
    );
}

#[tokio::test]
async fn the_person_a_flag_is_about_does_not_learn_who_raised_it() {
    let Desk {
        mut p,
        p_id,
        mut other,
        ..
    } = desk(true).await;
    let other_key = other.identity.clone().unwrap().key();
    flagged(
        &flag(
            &mut other,
            p_id.key(),
            Severity::Concern,
            Consent::Given,
            |f| f.note = Some("River said they have not slept for days".into()),
        )
        .await,
    );
    notice(&mut p, "support_asked").await;
    let escalations = listed(&mut p).await;
    let mine = escalations.first().expect("listed for the person");
    assert_eq!(mine.counts.flags, 0, "not the flag raised by someone else");
    let reference = mine.reference.clone().unwrap();
    let (flags, _, _) = part(&mut p, None, Some(reference.clone()), EscalationPart::Flags).await;
    assert!(flags.is_empty(), "not the flag raised by someone else");
    let (_, steps, _) = part(&mut p, None, Some(reference), EscalationPart::Steps).await;
    let raised = steps.iter().find(|s| s.step == "raised").unwrap();
    assert!(raised.actor.is_none() && raised.env.is_none());
    let text = serde_json::to_string(&(mine, &steps)).unwrap();
    assert!(
        !text.contains(&other_key.to_b64()) && !text.contains("not slept"),
        "{text}"
    );
}

#[tokio::test]
async fn a_supervisor_in_the_group_is_not_paused_sanctioned_or_sent_away() {
    let Desk {
        mut fac,
        mut p,
        mut sup1,
        sup1_id,
        ..
    } = desk(true).await;
    // A supervisor reaches a group through an escalation about it (PROTOCOL.md
    // §13, "Staff model"): one is open, and they are on call.
    let p_key = p.identity.clone().unwrap().key();
    let flagged = flag(&mut p, p_key, Severity::Urgent, Consent::Own, |_| {}).await;
    assert!(
        matches!(flagged, ServerFrame::Flagged { .. }),
        "{flagged:?}"
    );
    sup1.join("circle", "Sam", None).await;
    let fac_id = fac.identity.clone().unwrap();
    let control = |action| {
        let env = fac_id.signed(Kind::Control, |counter, ts| ControlPayload {
            group: gid("circle"),
            action,
            counter,
            ts,
        });
        move |id| ClientFrame::Control {
            id,
            group: gid("circle"),
            env,
        }
    };
    assert!(matches!(
        fac.request(control(ControlAction::Pause)).await,
        ServerFrame::Ack { .. }
    ));
    // Paused: the participant is held, the supervisor is not.
    let env = p.identity.clone().unwrap().post("circle", "hi");
    let refused = p
        .request(|id| ClientFrame::Post {
            id,
            group: gid("circle"),
            env,
        })
        .await;
    assert_code(&refused, ErrorCode::Paused);
    sup1.post("circle", "I'm here to help if anyone needs it")
        .await;
    // A supervisor cannot be muted, and is not sent away when the session ends.
    let mute = control(ControlAction::Mute {
        member: sup1_id.key(),
        minutes: 5,
    });
    assert_code(&fac.request(mute).await, ErrorCode::Forbidden);
    assert!(matches!(
        fac.request(control(ControlAction::EndSession)).await,
        ServerFrame::Ack { .. }
    ));
    let dismissed = p
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await;
    assert!(
        dismissed.is_ok(),
        "the participant is told the session ended"
    );
    let stays = tokio::time::timeout(
        Duration::from_millis(300),
        sup1.recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. })),
    )
    .await;
    assert!(stays.is_err(), "the supervisor stays: {stays:?}");
}

/// A flag refused for any reason — here a replayed counter, a group that does not
/// exist, a payload for another group — is answered with the helplines, so a
/// person asking for help never gets an error alone.
#[tokio::test]
async fn a_flag_refused_for_any_reason_carries_the_helplines() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    client.join("circle", "River", None).await;
    let env = me.flag_with("circle", me.key(), Severity::Urgent, |_| {});
    let first = client
        .request(|id| ClientFrame::Flag {
            id,
            group: gid("circle"),
            env: env.clone(),
        })
        .await;
    flagged(&first);
    let refusals = [
        // The same signed flag again: a replay.
        (gid("circle"), env, ErrorCode::Replay),
        // A group that does not exist.
        (
            gid("nowhere"),
            me.flag_with("nowhere", me.key(), Severity::Urgent, |_| {}),
            ErrorCode::NotFound,
        ),
        // Signed for one group, sent for another.
        (
            gid("nowhere"),
            me.flag_with("circle", me.key(), Severity::Urgent, |_| {}),
            ErrorCode::WrongGroup,
        ),
    ];
    for (group, env, code) in refusals {
        let reply = client
            .request(|id| ClientFrame::Flag { id, group, env })
            .await;
        assert_code(&reply, code);
        let ServerFrame::Error { helplines, .. } = &reply else {
            unreachable!()
        };
        assert!(
            helplines.as_ref().is_some_and(|h| !h.is_empty()),
            "a refused flag carries the helplines: {reply:?}"
        );
    }
}
