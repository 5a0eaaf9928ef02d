//! A supervisor's private line (§8.5 of PROTOCOL.md): a supervisor who may act on
//! an escalation writes privately to the person it is about (or the lead
//! facilitator) without joining the group, so nobody in the room learns that a
//! supervisor came, or for whom (issue 15: "Sam is in the waiting room" told the
//! group who had asked for help).

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, EscalationStatus, RotaEntry, Severity};
use peerhub_protocol::frame::{Channel, Role};
use peerhub_protocol::payload::{
    EscalationActPayload, EscalationAction, FlagPayload, PostPayload, RotaPayload,
};
use peerhub_protocol::{ClientFrame, ErrorCode, PublicKey, ServerFrame, SignedEnvelope};
use peerhub_tests::identity::gid;
use peerhub_tests::{now_ms, Client, Identity, TestServer};

/// A group "circle" with a lead facilitator (Jo), the person who asks for help
/// (River), another participant (Sky); supervisor 1 on call at level 1 and
/// supervisor 2 at level 2.
struct Setup {
    server: TestServer,
    fac: Client,
    fac_id: Identity,
    p: Client,
    p_id: Identity,
    other: Client,
    other_id: Identity,
    sup1: Client,
    sup1_id: Identity,
    sup2: Client,
    sup2_id: Identity,
}

async fn setup_with(tweak: impl FnOnce(&mut peerhub_server::config::Config)) -> Setup {
    let mut server = TestServer::start_with(tweak).await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    server.create_group("elsewhere").await;
    let mut admin = server.admin().await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let (sup1_id, sup1) = server.with_role(Role::Supervisor).await;
    let (sup2_id, sup2) = server.with_role(Role::Supervisor).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("circle", "River", None).await;
    let other_id = Identity::generate();
    let mut other = server.login(&other_id).await;
    other.join("circle", "Sky", None).await;
    let now = now_ms();
    let window = |supervisor: PublicKey, level| RotaEntry {
        supervisor,
        start_ms: now - 3_600_000,
        end_ms: now + 3_600_000,
        level,
    };
    let entries = vec![window(sup1_id.key(), 1), window(sup2_id.key(), 2)];
    let me = admin.identity.clone().unwrap();
    let env = me.signed(Kind::Rota, |counter, ts| RotaPayload {
        entries,
        counter,
        ts,
    });
    let reply = admin.request(|id| ClientFrame::SetRota { id, env }).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    Setup {
        server,
        fac,
        fac_id,
        p,
        p_id,
        other,
        other_id,
        sup1,
        sup1_id,
        sup2,
        sup2_id,
    }
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// `client` asks for support for itself, or for `about` with `consent`.
async fn flag(client: &mut Client, about: PublicKey, consent: Consent, withhold: bool) {
    let me = client.identity.clone().unwrap();
    let env = me.signed(Kind::Flag, |counter, ts| FlagPayload {
        group: gid("circle"),
        about,
        seq: None,
        severity: Severity::Urgent,
        consent,
        reason: (consent == Consent::ImminentRisk).then(|| "said they have a plan".into()),
        withhold_notice: withhold.then(|| "they said they would run".into()),
        note: None,
        counter,
        ts,
    });
    let reply = client
        .request(|id| ClientFrame::Flag {
            id,
            group: gid("circle"),
            env,
        })
        .await;
    assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
}

/// The id and the display name of the open escalation about `about`, as
/// supervisor `staff` is next told of it.
async fn escalation_about(staff: &mut Client, about: PublicKey) -> (u64, Option<String>) {
    let want = |e: &peerhub_protocol::escalation::EscalationSummary| {
        e.about == about && e.status != EscalationStatus::Resolved
    };
    let frame = staff
        .recv_matching(|f| match f {
            ServerFrame::Escalation { escalation } => want(escalation),
            ServerFrame::Escalations {
                id: None,
                escalations,
                ..
            } => escalations.iter().any(want),
            _ => false,
        })
        .await
        .expect("escalation push");
    let summary = match frame {
        ServerFrame::Escalation { escalation } => escalation,
        ServerFrame::Escalations { escalations, .. } => {
            escalations.into_iter().find(|e| want(e)).expect("matched")
        }
        _ => unreachable!(),
    };
    (summary.id.expect("staff see ids"), summary.name)
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

/// A `post` envelope from `who` to `to` in `group`.
fn private(who: &Identity, group: &str, to: Option<PublicKey>, body: &str) -> SignedEnvelope {
    who.signed(Kind::Post, |counter, ts| PostPayload {
        group: gid(group),
        body: body.into(),
        to,
        counter,
        ts,
    })
}

/// A post on escalation `escalation`'s line: the reply (ack or error).
async fn line_post(
    sup: &mut Client,
    group: &str,
    escalation: u64,
    to: Option<PublicKey>,
    body: &str,
) -> ServerFrame {
    let me = sup.identity.clone().unwrap();
    let env = private(&me, group, to, body);
    sup.try_line_post(group, escalation, env)
        .await
        .expect("connection open")
}

#[track_caller]
fn assert_code(frame: &ServerFrame, code: ErrorCode) {
    match frame {
        ServerFrame::Error { code: got, .. } => assert_eq!(*got, code, "{frame:?}"),
        other => panic!("expected error {code}, got {other:?}"),
    }
}

#[track_caller]
fn acked_on(frame: &ServerFrame, channel: Channel) -> u64 {
    match frame {
        ServerFrame::Ack {
            channel: got, seq, ..
        } => {
            assert_eq!(*got, channel, "{frame:?}");
            *seq
        }
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// Every frame `client` receives before the ack of a main-channel post it sends
/// now: what reached it before that post was ordered (no timing involved).
async fn frames_before_own_post(client: &mut Client, body: &str) -> Vec<ServerFrame> {
    let me = client.identity.clone().unwrap();
    let env = private(&me, "circle", None, body);
    let id = client.next_id();
    client
        .send(&ClientFrame::Post {
            id: Some(id),
            group: gid("circle"),
            env,
        })
        .await;
    let mut seen = Vec::new();
    loop {
        let frame = client.recv().await.expect("open");
        if matches!(frame, ServerFrame::Ack { id: Some(got), .. } if got == id) {
            return seen;
        }
        seen.push(frame);
    }
}

/// Whether `frame` is something about `key` reaching a member: presence, or an
/// event signed by them.
fn mentions(frame: &ServerFrame, key: PublicKey) -> bool {
    match frame {
        ServerFrame::Presence { member, .. } => member.key == key,
        ServerFrame::Event { env: Some(env), .. } => env.key == key,
        ServerFrame::Event { channel, .. } => matches!(channel, Channel::Pair(_)),
        _ => false,
    }
}

#[tokio::test]
async fn a_supervisor_writes_to_the_person_without_entering_the_room() {
    let mut s = setup().await;
    let p_key = s.p_id.key();
    let sup_key = s.sup1_id.key();
    flag(&mut s.p, p_key, Consent::Own, false).await;
    let (id, name) = escalation_about(&mut s.sup1, p_key).await;
    assert_eq!(
        name.as_deref(),
        Some("River"),
        "staff see the person's name in the group"
    );

    // Issue 15: writing privately used to mean joining the group (and being
    // announced there). Now the supervisor writes on the escalation's line.
    let pair = Channel::pair(sup_key, p_key);
    let reply = line_post(
        &mut s.sup1,
        "circle",
        id,
        Some(p_key),
        "Hi River, I'm here.",
    )
    .await;
    let seq = acked_on(&reply, pair);

    let event = s.p.next_event_in("circle", pair).await;
    assert_eq!(event.seq, seq);
    assert_eq!(event.envelope().key, sup_key);
    assert!(
        event.verified_body().contains("I'm here"),
        "the person reads the supervisor's signed words"
    );

    // Nobody else in the group heard anything about the supervisor: no presence,
    // no event — checked against what each received before their own next post.
    for (who, client) in [("participant", &mut s.other), ("facilitator", &mut s.fac)] {
        let seen = frames_before_own_post(client, "still here").await;
        assert!(
            !seen.iter().any(|f| mentions(f, sup_key)),
            "{who} learnt of the supervisor: {seen:?}"
        );
    }
    // Someone joining now does not see the supervisor listed.
    let mut late = s.server.login(&Identity::generate()).await;
    let joined = late.join("circle", "Ash", None).await;
    assert!(
        !joined.members.iter().any(|m| m.key == sup_key),
        "the supervisor is not a member"
    );

    // The person replies on the line; it reaches the supervisor, nobody else.
    let back = private(&s.p_id, "circle", Some(sup_key), "Thank you. It's hard.");
    let seq = s.p.post_env("circle", back).await;
    let own = s.sup1.next_event_in("circle", pair).await;
    assert_eq!(
        own.envelope().key,
        sup_key,
        "the line echoes the writer's own post"
    );
    let reply = s.sup1.next_event_in("circle", pair).await;
    assert_eq!(reply.seq, seq);
    assert_eq!(reply.envelope().key, p_key);
    let seen = frames_before_own_post(&mut s.other, "and again").await;
    assert!(
        !seen
            .iter()
            .any(|f| mentions(f, sup_key) || mentions(f, p_key)),
        "{seen:?}"
    );

    // Someone else cannot start a private line with the supervisor.
    let sneaky = private(
        &s.other_id,
        "circle",
        Some(sup_key),
        "who are you here for?",
    );
    let reply = s.other.try_post_env("circle", sneaky).await.unwrap();
    assert_code(&reply, ErrorCode::NotFound);
}

#[tokio::test]
async fn the_line_refuses_clearly_and_changes_nothing() {
    let mut s = setup_with(|c| {
        c.limits.message_burst = 12;
        c.limits.messages_per_second = 1;
    })
    .await;
    let p_key = s.p_id.key();
    flag(&mut s.p, p_key, Consent::Own, false).await;
    let (id, _) = escalation_about(&mut s.sup1, p_key).await;
    let _ = escalation_about(&mut s.sup2, p_key).await;

    // Not a supervisor: a participant, and the facilitator.
    let reply = line_post(&mut s.other, "circle", id, Some(p_key), "hello").await;
    assert_code(&reply, ErrorCode::Forbidden);
    let reply = line_post(&mut s.fac, "circle", id, Some(p_key), "hello").await;
    assert_code(&reply, ErrorCode::Forbidden);
    // A supervisor it is not waiting for (level 2 while it waits at level 1).
    let reply = line_post(&mut s.sup2, "circle", id, Some(p_key), "hello").await;
    assert_code(&reply, ErrorCode::Forbidden);
    // No such escalation.
    let reply = line_post(&mut s.sup1, "circle", id + 100, Some(p_key), "hello").await;
    assert_code(&reply, ErrorCode::NotFound);
    // Another group than the escalation's.
    let reply = line_post(&mut s.sup1, "elsewhere", id, Some(p_key), "hello").await;
    assert_code(&reply, ErrorCode::WrongGroup);
    // To somebody it is not about.
    let reply = line_post(&mut s.sup1, "circle", id, Some(s.other_id.key()), "hello").await;
    assert_code(&reply, ErrorCode::Forbidden);
    // To nobody, to themselves, blank, too long.
    let reply = line_post(&mut s.sup1, "circle", id, None, "hello").await;
    assert_code(&reply, ErrorCode::Invalid);
    let reply = line_post(&mut s.sup1, "circle", id, Some(s.sup1_id.key()), "hi").await;
    assert_code(&reply, ErrorCode::Invalid);
    let reply = line_post(&mut s.sup1, "circle", id, Some(p_key), "   ").await;
    assert_code(&reply, ErrorCode::Invalid);
    let long = "x".repeat(4001);
    let reply = line_post(&mut s.sup1, "circle", id, Some(p_key), &long).await;
    assert_code(&reply, ErrorCode::BodyTooLong);

    // Once supervisor 1 has taken it, supervisor 2 may not write; 1 may.
    let reply = act(&mut s.sup1, id, EscalationAction::Ack).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let reply = line_post(&mut s.sup2, "circle", id, Some(p_key), "hello").await;
    assert_code(&reply, ErrorCode::Forbidden);

    // Over the message limit: refused, never half-written.
    let pair = Channel::pair(s.sup1_id.key(), p_key);
    let mut sent = Vec::new();
    let mut limited = None;
    for n in 0..20 {
        let reply = line_post(&mut s.sup1, "circle", id, Some(p_key), &format!("m{n}")).await;
        match reply {
            ServerFrame::Ack { seq, .. } => sent.push(seq),
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms,
                ..
            } => {
                limited = retry_after_ms;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let wait = limited.expect("the message limit applies to the line, with a wait");

    // The person received exactly what was acknowledged, nothing refused.
    for seq in &sent {
        let event = s.p.next_event_in("circle", pair).await;
        assert_eq!(event.seq, *seq);
    }
    assert_eq!(sent.first(), Some(&1), "no refused post took a seq");

    // Resolved: the line is closed to new posts (waiting out the limit first).
    tokio::time::sleep(std::time::Duration::from_millis(wait + 50)).await;
    let reply = act(
        &mut s.sup1,
        id,
        EscalationAction::Resolve {
            outcome: "talked it through".into(),
        },
    )
    .await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let reply = line_post(&mut s.sup1, "circle", id, Some(p_key), "one more").await;
    assert_code(&reply, ErrorCode::NotFound);
    // The person may still answer what was written; the refused post took no seq.
    let back = private(&s.p_id, "circle", Some(s.sup1_id.key()), "thanks");
    let seq = s.p.post_env("circle", back).await;
    assert_eq!(seq, sent.len() as u64 + 1);
}

#[tokio::test]
async fn when_telling_the_person_is_withheld_the_supervisor_writes_to_the_facilitator() {
    let mut s = setup().await;
    let p_key = s.p_id.key();
    flag(&mut s.other, p_key, Consent::ImminentRisk, true).await;
    let (id, _) = escalation_about(&mut s.sup1, p_key).await;
    let reply = line_post(&mut s.sup1, "circle", id, Some(p_key), "hello").await;
    assert_code(&reply, ErrorCode::Forbidden);

    let reply = s
        .sup1
        .request(|rid| ClientFrame::Line {
            id: rid,
            escalation: id,
        })
        .await;
    let ServerFrame::Line { to, group, .. } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(group, gid("circle"));
    assert_eq!(to, vec![s.fac_id.key()], "only the lead facilitator");

    let fac_key = s.fac_id.key();
    let pair = Channel::pair(s.sup1_id.key(), fac_key);
    let reply = line_post(&mut s.sup1, "circle", id, Some(fac_key), "Is River safe?").await;
    acked_on(&reply, pair);
    let event = s.fac.next_event_in("circle", pair).await;
    assert!(event.verified_body().contains("River"));
    let seen = frames_before_own_post(&mut s.p, "hello all").await;
    assert!(
        !seen.iter().any(|f| mentions(f, s.sup1_id.key())),
        "the person is told nothing while it is withheld: {seen:?}"
    );
}

#[tokio::test]
async fn the_line_survives_a_restart_on_both_sides() {
    let mut s = setup().await;
    let p_key = s.p_id.key();
    let sup_key = s.sup1_id.key();
    flag(&mut s.p, p_key, Consent::Own, false).await;
    let (id, _) = escalation_about(&mut s.sup1, p_key).await;
    let pair = Channel::pair(sup_key, p_key);
    let reply = line_post(&mut s.sup1, "circle", id, Some(p_key), "Are you OK?").await;
    let first = acked_on(&reply, pair);
    let back = private(&s.p_id, "circle", Some(sup_key), "Not really.");
    let second = s.p.post_env("circle", back).await;
    drop((s.p, s.sup1, s.other, s.fac, s.sup2));

    let server = s.server.restart().await;
    // The person finds the supervisor's words in their history on return.
    let mut p = server.login(&s.p_id).await;
    p.join("circle", "River", None).await;
    let event = p.next_event_in("circle", pair).await;
    assert_eq!(event.seq, first);
    assert_eq!(event.envelope().key, sup_key);

    // The supervisor reopens the line without joining: its history, then new
    // replies live.
    let mut sup = server.login(&s.sup1_id).await;
    let reply = sup
        .request(|rid| ClientFrame::Line {
            id: rid,
            escalation: id,
        })
        .await;
    let ServerFrame::Line { to, .. } = reply else {
        panic!("{reply:?}")
    };
    assert!(
        to.contains(&p_key) && to.contains(&s.fac_id.key()),
        "{to:?}"
    );
    let a = sup.next_event_in("circle", pair).await;
    let b = sup.next_event_in("circle", pair).await;
    assert_eq!((a.seq, b.seq), (first, second));
    let back = private(&s.p_id, "circle", Some(sup_key), "Still there?");
    let third = p.post_env("circle", back).await;
    let live = sup.next_event_in("circle", pair).await;
    assert_eq!(live.seq, third);

    // Others may not open it.
    let mut sup2 = server.login(&s.sup2_id).await;
    let reply = sup2
        .request(|rid| ClientFrame::Line {
            id: rid,
            escalation: id,
        })
        .await;
    assert_code(&reply, ErrorCode::Forbidden);
    let mut someone = server.login(&Identity::generate()).await;
    let reply = someone
        .request(|rid| ClientFrame::Line {
            id: rid,
            escalation: id,
        })
        .await;
    assert_code(&reply, ErrorCode::Forbidden);
}

/// A `redeem` of `token` giving `name` (signed exactly as given).
async fn redeem_named(client: &mut Client, token: &str, name: &str) -> ServerFrame {
    let me = client.identity.clone().unwrap();
    let env = me.signed(Kind::Redeem, |counter, ts| {
        peerhub_protocol::payload::RedeemPayload {
            token: token.into(),
            name: Some(name.into()),
            counter,
            ts,
        }
    });
    client.request(|id| ClientFrame::Redeem { id, env }).await
}

/// Issue 15: the admin pasted a 43-character key into the rota. Now staff give a
/// name when they redeem, and the admin lists the staff by those names.
#[tokio::test]
async fn an_admin_lists_the_staff_by_the_names_they_gave() {
    use peerhub_protocol::payload::InviteRole;
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let mut admin = server.admin().await;

    let token = admin.invite(InviteRole::Supervisor, None).await;
    let sam_id = Identity::generate();
    let mut sam = server.login(&sam_id).await;
    // A name not in its normalised form, or one that looks like a role, is refused
    // before the invite is spent.
    let reply = redeem_named(&mut sam, &token, "  Sam ").await;
    assert_code(&reply, ErrorCode::Invalid);
    let reply = redeem_named(&mut sam, &token, "Supervisor").await;
    assert_code(&reply, ErrorCode::Invalid);
    let reply = redeem_named(&mut sam, &token, "Sam").await;
    assert!(matches!(reply, ServerFrame::Redeemed { .. }), "{reply:?}");

    let token = admin.invite(InviteRole::Facilitator, Some("circle")).await;
    let jo_id = Identity::generate();
    let mut jo = server.login(&jo_id).await;
    let reply = redeem_named(&mut jo, &token, "Jo").await;
    assert!(matches!(reply, ServerFrame::Redeemed { .. }), "{reply:?}");

    // Only admins list the staff.
    for client in [&mut sam, &mut jo] {
        let reply = client.request(|id| ClientFrame::Staff { id }).await;
        assert_code(&reply, ErrorCode::Forbidden);
    }
    let mut someone = server.login(&Identity::generate()).await;
    let reply = someone.request(|id| ClientFrame::Staff { id }).await;
    assert_code(&reply, ErrorCode::Forbidden);

    let reply = admin.request(|id| ClientFrame::Staff { id }).await;
    let ServerFrame::Staff { staff, more, .. } = reply else {
        panic!("{reply:?}")
    };
    assert!(!more);
    let names: Vec<Option<&str>> = staff.iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(
        names,
        vec![Some("Jo"), Some("Sam"), None],
        "named first, by name"
    );
    assert_eq!(staff[0].key, jo_id.key());
    assert_eq!(staff[0].roles, vec![Role::Facilitator]);
    assert_eq!(staff[1].key, sam_id.key());
    assert_eq!(staff[1].roles, vec![Role::Supervisor]);
    assert_eq!(staff[2].key, admin.identity.clone().unwrap().key());

    // Kept across a restart.
    let admin_id = admin.identity.clone().unwrap();
    drop((admin, sam, jo, someone));
    let server = server.restart().await;
    let mut admin = server.login(&admin_id).await;
    let reply = admin.request(|id| ClientFrame::Staff { id }).await;
    let ServerFrame::Staff { staff: again, .. } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(again, staff);
}
