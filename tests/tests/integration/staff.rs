//! The staff model (issue 14, item 2) and uniform refusals (item 1): facilitator
//! standing is a grant per group, supervisors reach a group only through an
//! escalation about it, and a refusal about another key never tells whether that
//! key is a member.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::frame::{Channel, MemberStatus, Role};
use peerhub_protocol::payload::{
    ControlAction, FlagPayload, GroupKind, InvitePayload, InviteRole, ReportPayload,
};
use peerhub_protocol::{ClientFrame, ErrorCode, PublicKey, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{now_ms, Client, Identity, TestServer};

use crate::alerting::{on_call, set_rota};

async fn flag_about(client: &mut Client, group: &str, about: PublicKey) -> ServerFrame {
    let me = client.identity.clone().expect("logged in");
    let env = me.signed(Kind::Flag, |counter, ts| FlagPayload {
        group: gid(group),
        about,
        seq: None,
        severity: Severity::Concern,
        consent: Consent::Own,
        reason: None,
        withhold_notice: None,
        note: None,
        counter,
        ts,
    });
    client
        .request(|id| ClientFrame::Flag {
            id,
            group: gid(group),
            env,
        })
        .await
}

async fn private_post(client: &mut Client, group: &str, to: PublicKey) -> ServerFrame {
    let me = client.identity.clone().expect("logged in");
    let env = me.private_post(group, to, "are you here?");
    client
        .request(|id| ClientFrame::Post {
            id,
            group: gid(group),
            env,
        })
        .await
}

async fn report(client: &mut Client, group: &str, seq: u64, reason: &str) -> ServerFrame {
    let me = client.identity.clone().expect("logged in");
    let env = me.signed(Kind::Report, |counter, ts| ReportPayload {
        group: gid(group),
        seq,
        reason: reason.into(),
        counter,
        ts,
    });
    client
        .request(|id| ClientFrame::Report {
            id,
            group: gid(group),
            env,
        })
        .await
}

fn error_of(frame: &ServerFrame) -> (ErrorCode, String) {
    match frame {
        ServerFrame::Error { code, message, .. } => (*code, message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn assert_code(frame: &ServerFrame, code: ErrorCode) {
    assert_eq!(error_of(frame).0, code, "{frame:?}");
}

fn assert_acked(frame: &ServerFrame) {
    assert!(matches!(frame, ServerFrame::Ack { .. }), "{frame:?}");
}

/// The reproduction of issue 14, item 2: a facilitator invited for group A
/// entered an invite-only virtual group B without invite or code, read its staff
/// channel, saw every member and removed one. Now a facilitator of A meets B's
/// rules like anyone and holds no power there, and keeps every power in A.
///
/// Failed before the fix: the first join of B answered `joined` (staff passed
/// every door) instead of `access_denied`.
#[tokio::test]
async fn a_facilitator_of_one_group_is_refused_everything_in_another() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("group-a", |g| g.waiting_room = Some(false))
        .await;
    server
        .create_group_with_code("group-b", Some("sesame"), |g| {
            g.group_kind = GroupKind::Virtual;
        })
        .await;
    let (_, mut fac_b) = server.facilitator_of(&["group-b"]).await;
    let (fac_a_id, mut fac_a) = server.facilitator_of(&["group-a"]).await;
    assert_eq!(
        fac_b.join("group-b", "Bo", None).await.status,
        MemberStatus::Admitted
    );

    // B's participant, invited and admitted; they post and report a message, so
    // B's staff channel holds a report with its reason.
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    let token = fac_b.invite(InviteRole::Member, Some("group-b")).await;
    assert!(matches!(
        p.redeem(&token).await,
        ServerFrame::Redeemed { .. }
    ));
    assert!(matches!(
        p.try_join("group-b", "River", Some("sesame")).await,
        ServerFrame::Joined { .. }
    ));
    assert_acked(
        &fac_b
            .control("group-b", ControlAction::Admit { member: p_id.key() })
            .await,
    );
    p.recv_matching(|f| matches!(f, ServerFrame::Joined { id: None, .. }))
        .await
        .unwrap();
    let seq = p.post("group-b", "I had a hard week").await;
    assert!(matches!(
        report(&mut p, "group-b", seq, "names someone at home").await,
        ServerFrame::Ok { .. }
    ));

    // 1. No invite, no code: the door of B is shut to the facilitator of A.
    assert_code(
        &fac_a.try_join("group-b", "Ash", None).await,
        ErrorCode::AccessDenied,
    );
    // Invited as a member, they still need the code, and then wait like anyone.
    let token = fac_b.invite(InviteRole::Member, Some("group-b")).await;
    assert!(matches!(
        fac_a.redeem(&token).await,
        ServerFrame::Redeemed { .. }
    ));
    assert_code(
        &fac_a.try_join("group-b", "Ash", None).await,
        ErrorCode::AccessDenied,
    );
    let joined = fac_a.try_join("group-b", "Ash", Some("sesame")).await;
    let ServerFrame::Joined {
        status, members, ..
    } = joined
    else {
        panic!("{joined:?}")
    };
    assert_eq!(status, MemberStatus::Waiting);
    // 2. Members beyond what a participant sees: only themselves.
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].key, fac_a_id.key());
    assert!(
        !members[0].roles.contains(&Role::Facilitator),
        "not shown as B's staff"
    );
    // 3. No staff channel and no history: checked below, once more has happened.
    // 4. No control: admit (themselves or anyone), mute, remove, pin, end.
    for action in [
        ControlAction::Admit {
            member: fac_a_id.key(),
        },
        ControlAction::Mute {
            member: p_id.key(),
            minutes: 5,
        },
        ControlAction::Remove {
            member: p_id.key(),
            until_session_end: false,
            reason: None,
        },
        ControlAction::Pin { seq },
        ControlAction::EndSession,
    ] {
        let name = action.name();
        let reply = fac_a.control("group-b", action).await;
        assert_eq!(
            error_of(&reply).0,
            ErrorCode::Forbidden,
            "{name}: {reply:?}"
        );
    }

    // Once admitted they are a participant there: still no staff channel.
    assert_acked(
        &fac_b
            .control(
                "group-b",
                ControlAction::Admit {
                    member: fac_a_id.key(),
                },
            )
            .await,
    );
    fac_a
        .recv_matching(|f| matches!(f, ServerFrame::Joined { id: None, .. }))
        .await
        .unwrap();
    assert!(matches!(
        report(&mut p, "group-b", seq, "a second report").await,
        ServerFrame::Ok { .. }
    ));
    // B's facilitator gets the report in the staff channel; A's facilitator
    // never does (checked after B's, so it had every chance to arrive).
    fac_b.next_event_in("group-b", Channel::Staff).await;
    let p_key = p_id.key();
    assert_code(
        &fac_a
            .control(
                "group-b",
                ControlAction::Remove {
                    member: p_key,
                    until_session_end: false,
                    reason: None,
                },
            )
            .await,
        ErrorCode::Forbidden,
    );
    while let Ok(Some(frame)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), fac_a.recv())
            .await
            .map(Result::ok)
    {
        if let ServerFrame::Event { channel, .. } = &frame {
            assert_ne!(
                *channel,
                Channel::Staff,
                "staff channel reached A's facilitator"
            );
        }
    }

    // In A, every power is theirs.
    assert_eq!(
        fac_a.join("group-a", "Ash", None).await.status,
        MemberStatus::Admitted
    );
    let q_id = Identity::generate();
    let mut q = server.login(&q_id).await;
    q.join("group-a", "Quinn", None).await;
    assert_acked(
        &fac_a
            .control(
                "group-a",
                ControlAction::Mute {
                    member: q_id.key(),
                    minutes: 5,
                },
            )
            .await,
    );
    assert_acked(&fac_a.control("group-a", ControlAction::EndSession).await);
}

/// The groups the admin's `staff` list gives for `who`.
async fn staff_groups(admin: &mut Client, who: &Identity) -> Vec<String> {
    match admin.request(|id| ClientFrame::Staff { id }).await {
        ServerFrame::Staff { staff, .. } => staff
            .into_iter()
            .find(|s| s.key == who.key())
            .map(|s| s.groups.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        other => panic!("{other:?}"),
    }
}

/// Grants and revokes are an admin's signed, audited command; a revoke takes
/// effect on the facilitator's live connection (they are dismissed with
/// `grant_revoked` and join again under the usual rules); a bad grant changes
/// nothing.
#[tokio::test]
async fn an_admin_grants_and_revokes_a_group_and_a_revoke_reaches_live_connections() {
    let mut server = TestServer::start().await;
    server.create_group_with("circle", |_| {}).await; // waiting room on
    let (fac_id, mut fac) = server.facilitator_of(&[]).await;
    let mut admin = server.admin().await;
    // Not a facilitator of the circle yet: they wait like anyone.
    assert_eq!(
        fac.join("circle", "Jo", None).await.status,
        MemberStatus::Waiting
    );
    assert_eq!(
        staff_groups(&mut admin, &fac_id).await,
        Vec::<String>::new()
    );
    assert!(matches!(
        admin.grant(fac_id.key(), "circle", false).await,
        ServerFrame::Ok { .. }
    ));
    // The admin's staff list shows who runs what (the web client's staff panel).
    assert_eq!(staff_groups(&mut admin, &fac_id).await, ["circle"]);
    let left = fac
        .request(|id| ClientFrame::Leave {
            id,
            group: gid("circle"),
        })
        .await;
    assert!(matches!(left, ServerFrame::Left { .. }), "{left:?}");
    assert_eq!(
        fac.join("circle", "Jo", None).await.status,
        MemberStatus::Admitted
    );
    assert_acked(&fac.control("circle", ControlAction::Lock).await);
    // What is held about the key says so (people's data rights).
    let export =
        peerhub_server::export::export_key(&server.hub().store, &fac_id.key(), now_ms()).unwrap();
    assert_eq!(
        export["account"]["facilitates"],
        serde_json::json!(["circle"])
    );

    // Unhappy paths change nothing: an unknown group, a repeat, a non-admin.
    let before = server.hub().store.digest().unwrap();
    assert_code(
        &admin.grant(fac_id.key(), "no-such-group", false).await,
        ErrorCode::NotFound,
    );
    assert_code(
        &admin.grant(fac_id.key(), "circle", false).await,
        ErrorCode::Invalid,
    );
    assert_code(
        &fac.grant(fac_id.key(), "circle", true).await,
        ErrorCode::Forbidden,
    );
    // A facilitator invite must name existing groups, once each.
    for (groups, code) in [
        (vec![], ErrorCode::Invalid),
        (vec![gid("no-such-group")], ErrorCode::NotFound),
        (vec![gid("circle"), gid("circle")], ErrorCode::Invalid),
    ] {
        let me = admin.identity.clone().unwrap();
        let env = me.signed(Kind::Invite, |counter, ts| InvitePayload {
            role: InviteRole::Facilitator,
            group: None,
            groups: groups.clone(),
            ttl_ms: None,
            counter,
            ts,
        });
        let reply = admin.request(|id| ClientFrame::Invite { id, env }).await;
        assert_eq!(error_of(&reply).0, code, "{groups:?}: {reply:?}");
    }
    assert_eq!(
        server.hub().store.digest().unwrap(),
        before,
        "nothing changed"
    );

    // The revoke: the live connection loses the group at once.
    assert!(matches!(
        admin.grant(fac_id.key(), "circle", true).await,
        ServerFrame::Ok { .. }
    ));
    let dismissed = fac
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await
        .unwrap();
    let ServerFrame::Dismissed { reason, .. } = dismissed else {
        unreachable!()
    };
    assert_eq!(reason, "grant_revoked");
    assert_eq!(
        staff_groups(&mut admin, &fac_id).await,
        Vec::<String>::new()
    );
    assert_code(
        &fac.control("circle", ControlAction::Unlock).await,
        ErrorCode::NotJoined,
    );
    // Joining again, they are nobody's facilitator here: the lock they set holds.
    assert_code(&fac.try_join("circle", "Jo", None).await, ErrorCode::Locked);
    assert_code(
        &admin.grant(fac_id.key(), "circle", true).await,
        ErrorCode::Invalid,
    );
    // Both steps are in the audit chain, with the admin's own envelope.
    let actions: Vec<String> = peerhub_server::audit::entries(&server.hub().store)
        .map(|e| e.unwrap().action)
        .collect();
    assert!(
        actions.iter().any(|a| a == "role.grant_group"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "role.revoke_group"),
        "{actions:?}"
    );
}

/// The reproduction of issue 14, item 1 (server side): a member waiting in a
/// group could tell a member's key from a stranger's by the refusal of a `flag`
/// about it (`invalid` vs `not_found`) or of a `post` to it (`forbidden` vs
/// `not_found`). Now both are answered with the same code and words.
///
/// Failed before the fix: the flag about the member answered `invalid`, the one
/// about the stranger `not_found`.
#[tokio::test]
async fn a_waiting_member_cannot_tell_a_member_from_a_stranger_by_a_refusal() {
    let mut server = TestServer::start().await;
    server.create_group_with("circle", |_| {}).await; // waiting room on
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let m_id = Identity::generate();
    let mut m = server.login(&m_id).await;
    m.join("circle", "River", None).await;
    assert_acked(
        &fac.control("circle", ControlAction::Admit { member: m_id.key() })
            .await,
    );
    let w_id = Identity::generate();
    let mut w = server.login(&w_id).await;
    assert_eq!(
        w.join("circle", "Sam", None).await.status,
        MemberStatus::Waiting
    );
    let stranger = Identity::generate().key();

    let before = server.hub().store.digest().unwrap();
    let about_member = error_of(&flag_about(&mut w, "circle", m_id.key()).await);
    let about_stranger = error_of(&flag_about(&mut w, "circle", stranger).await);
    assert_eq!(about_member, about_stranger, "flag: same code, same words");
    let to_member = error_of(&private_post(&mut w, "circle", m_id.key()).await);
    let to_stranger = error_of(&private_post(&mut w, "circle", stranger).await);
    assert_eq!(
        to_member, to_stranger,
        "post with to: same code, same words"
    );
    assert_eq!(
        server.hub().store.digest().unwrap(),
        before,
        "nothing changed"
    );

    // The help paths stay open: a flag about oneself, a line to the facilitator.
    assert!(matches!(
        flag_about(&mut w, "circle", w_id.key()).await,
        ServerFrame::Flagged { .. }
    ));
    let fac_key = fac.identity.as_ref().unwrap().key();
    assert_acked(&private_post(&mut w, "circle", fac_key).await);
}

/// A supervisor passes a group's door only while an escalation about it is open
/// and reaches them (routed to them, or they are on call); otherwise they meet
/// the door like anyone.
///
/// Failed before the fix: the supervisor joined the invite-only group with no
/// escalation open.
#[tokio::test]
async fn a_supervisor_reaches_a_group_only_through_an_escalation_about_it() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| {
            g.group_kind = GroupKind::Virtual;
            g.waiting_room = Some(false);
        })
        .await;
    let (sup_id, mut sup) = server.with_role(Role::Supervisor).await;
    let mut admin = server.admin().await;
    assert!(matches!(
        set_rota(&mut admin, vec![on_call(sup_id.key(), 1)]).await,
        ServerFrame::Ok { .. }
    ));
    assert_code(
        &sup.try_join("circle", "Sup", None).await,
        ErrorCode::AccessDenied,
    );
    // A member raises a flag about themselves: the escalation reaches the
    // supervisor on call, who may now come in.
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    let token = fac.invite(InviteRole::Member, Some("circle")).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    assert!(matches!(
        p.redeem(&token).await,
        ServerFrame::Redeemed { .. }
    ));
    p.join("circle", "River", None).await;
    assert!(matches!(
        flag_about(&mut p, "circle", p_id.key()).await,
        ServerFrame::Flagged { .. }
    ));
    assert_eq!(
        sup.join("circle", "Sup", None).await.status,
        MemberStatus::Admitted
    );
    // Staff reach any member with a flag, but no key that never joined.
    let stranger = Identity::generate().key();
    let env = sup_id.signed(Kind::Flag, |counter, ts| FlagPayload {
        group: gid("circle"),
        about: stranger,
        seq: None,
        severity: Severity::Concern,
        consent: Consent::Given,
        reason: None,
        withhold_notice: None,
        note: None,
        counter,
        ts,
    });
    let reply = sup
        .request(|id| ClientFrame::Flag {
            id,
            group: gid("circle"),
            env,
        })
        .await;
    assert_eq!(error_of(&reply).0, ErrorCode::NotFound, "{reply:?}");
}
