//! Facilitators are told at once, in their group's staff channel, when someone in
//! their group asks for support (issue 13, reproduction 7): which member, the
//! severity, the words only where the consent allows, never who raised a flag about
//! someone else, and bounded however many flags one person sends.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::frame::{Channel, MemberStatus, Note, Role};
use peerhub_protocol::payload::{EscalationActPayload, EscalationAction, FlagPayload};
use peerhub_protocol::{ClientFrame, PublicKey, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Client, Identity, TestServer};

/// Raises a flag in `group`; returns the reply.
async fn flag_in(
    client: &mut Client,
    group: &str,
    about: PublicKey,
    severity: Severity,
    consent: Consent,
    tweak: impl FnOnce(&mut FlagPayload),
) -> ServerFrame {
    let reply = client
        .flag_with(group, about, severity, |f| {
            f.consent = consent;
            tweak(f);
        })
        .await;
    assert!(
        matches!(reply, ServerFrame::Flagged { .. }),
        "flag accepted: {reply:?}"
    );
    reply
}

/// The next hub note in `group`'s staff channel, as the frame's JSON and the note.
async fn staff_note(client: &mut Client, group: &str) -> (String, Note) {
    loop {
        let event = client.next_event_in(group, Channel::Staff).await;
        if let Some(note) = event.note {
            let json = serde_json::to_string(&note).unwrap();
            return (json, note);
        }
    }
}

#[track_caller]
fn asked(note: &Note) -> (PublicKey, Severity, bool, u32, bool, Option<String>) {
    match note {
        Note::SupportAsked {
            member,
            severity,
            own,
            flags,
            withheld,
            words,
        } => (*member, *severity, *own, *flags, *withheld, words.clone()),
        other => panic!("expected support_asked, got {other:?}"),
    }
}

/// Joins `group` as a newcomer; with a waiting room they wait there.
async fn newcomer(server: &TestServer, group: &str, name: &str) -> (Identity, Client) {
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    let joined = client.join(group, name, None).await;
    assert_eq!(joined.status, MemberStatus::Waiting, "{name} waits");
    (me, client)
}

/// Reproduction 7: three people in the waiting room ask for support (one "I'm in
/// danger now"); the group's facilitator is told of each at once, with the
/// severity and their own words; a facilitator of another group is told nothing;
/// a facilitator who joins later finds the notes in the staff history.
#[tokio::test]
async fn facilitators_are_told_of_every_flag_in_their_group_including_the_waiting_room() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(true))
        .await;
    server
        .create_group_with("elsewhere", |g| g.waiting_room = Some(true))
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let (_, mut far) = server.with_role(Role::Facilitator).await;
    far.join("elsewhere", "Kim", None).await;

    let mut waiting = Vec::new();
    for name in ["Ash", "Birch", "Cedar"] {
        waiting.push(newcomer(&server, "circle", name).await);
    }
    let words = [
        "I'm in danger now",
        "I need someone soon",
        "could someone check in",
    ];
    let severities = [Severity::Emergency, Severity::Urgent, Severity::Concern];
    for (i, (me, client)) in waiting.iter_mut().enumerate() {
        let said = words[i];
        flag_in(
            client,
            "circle",
            me.key(),
            severities[i],
            Consent::Own,
            |f| f.note = Some(said.into()),
        )
        .await;
    }
    for (i, (me, _)) in waiting.iter().enumerate() {
        let (_, note) = staff_note(&mut fac, "circle").await;
        let (member, severity, own, flags, withheld, said) = asked(&note);
        assert_eq!(member, me.key(), "who asked, in order");
        assert_eq!(severity, severities[i]);
        assert!(own && !withheld);
        assert_eq!(flags, 1);
        assert_eq!(said.as_deref(), Some(words[i]), "their own words");
    }

    // The other group's facilitator: the first staff note they ever get is about
    // their own group's flag, not any of the three above.
    let (someone, mut there) = newcomer(&server, "elsewhere", "Dune").await;
    flag_in(
        &mut there,
        "elsewhere",
        someone.key(),
        Severity::Urgent,
        Consent::Own,
        |_| {},
    )
    .await;
    let (_, note) = staff_note(&mut far, "elsewhere").await;
    assert_eq!(asked(&note).0, someone.key());
    far.assert_no_events(50).await;

    // A facilitator arriving later reads the notes in the staff history.
    let (_, mut late) = server.with_role(Role::Facilitator).await;
    late.join("circle", "Lee", None).await;
    for (me, _) in &waiting {
        let (_, note) = staff_note(&mut late, "circle").await;
        assert_eq!(asked(&note).0, me.key());
    }
}

/// A flag raised about someone else says neither who raised it nor, for imminent
/// risk, any of its words; with the person's consent, their words are shown.
#[tokio::test]
async fn the_notice_carries_no_words_for_imminent_risk_and_never_names_the_raiser() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let river = Identity::generate();
    let mut p = server.login(&river).await;
    p.join("circle", "River", None).await;
    let sky = Identity::generate();
    let mut other = server.login(&sky).await;
    other.join("circle", "Sky", None).await;

    flag_in(
        &mut other,
        "circle",
        river.key(),
        Severity::Urgent,
        Consent::ImminentRisk,
        |f| {
            f.reason = Some("secret-reason said they have pills".into());
            f.withhold_notice = Some("secret-withhold they would run".into());
            f.note = Some("secret-note more detail".into());
        },
    )
    .await;
    let (json, note) = staff_note(&mut fac, "circle").await;
    let (member, severity, own, _, withheld, words) = asked(&note);
    assert_eq!((member, severity), (river.key(), Severity::Urgent));
    assert!(!own, "someone else asked");
    assert!(withheld, "the facilitator knows not to tell them");
    assert_eq!(words, None, "no words from an imminent-risk flag");
    assert!(!json.contains("secret"), "{json}");
    assert!(
        !json.contains(&sky.key().to_string()),
        "the raiser is not named: {json}"
    );

    // A more serious flag with consent (merged into the same request) is told,
    // with its words; still without the raiser.
    let (_, mut fac2) = server.with_role(Role::Facilitator).await;
    fac2.join("circle", "Max", None).await;
    let fac2_key = fac2.identity.clone().unwrap().key();
    flag_in(
        &mut fac2,
        "circle",
        river.key(),
        Severity::Emergency,
        Consent::Given,
        |f| f.note = Some("River asked me to get help".into()),
    )
    .await;
    let (json, note) = staff_note(&mut fac, "circle").await;
    let (member, severity, own, flags, withheld, words) = asked(&note);
    assert_eq!(
        (member, severity, own, flags),
        (river.key(), Severity::Emergency, false, 2)
    );
    assert!(withheld, "still withheld: the earlier flag withheld it");
    assert_eq!(words.as_deref(), Some("River asked me to get help"));
    assert!(!json.contains(&fac2_key.to_string()), "{json}");
}

/// One person's flood of flags writes a handful of notes, each with its count:
/// one per severity rise, and at 2, 4, 8, ... flags.
#[tokio::test]
async fn a_flood_of_flags_is_told_bounded_with_counts() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let river = Identity::generate();
    let mut p = server.login(&river).await;
    p.join("circle", "River", None).await;
    for _ in 0..9 {
        flag_in(
            &mut p,
            "circle",
            river.key(),
            Severity::Concern,
            Consent::Own,
            |f| f.note = Some("again".into()),
        )
        .await;
    }
    flag_in(
        &mut p,
        "circle",
        river.key(),
        Severity::Urgent,
        Consent::Own,
        |_| {},
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (_, note) = staff_note(&mut fac, "circle").await;
        let (member, severity, _, flags, ..) = asked(&note);
        assert_eq!(member, river.key());
        seen.push((severity, flags));
    }
    assert_eq!(
        seen,
        vec![
            (Severity::Concern, 1),
            (Severity::Concern, 2),
            (Severity::Concern, 4),
            (Severity::Concern, 8),
            (Severity::Urgent, 10),
        ]
    );
    // Resolving it tells them too; nothing else was written in between.
    let (_, mut sup) = server.with_role(Role::Supervisor).await;
    // At login a supervisor is sent the queue's first page of summaries.
    let id = sup
        .recv_matching(|f| {
            matches!(f, ServerFrame::Escalations { id: None, escalations, .. } if !escalations.is_empty())
        })
        .await
        .map(|f| match f {
            ServerFrame::Escalations { escalations, .. } => escalations[0].id,
            _ => unreachable!(),
        })
        .unwrap()
        .expect("staff see ids");
    for action in [
        EscalationAction::Ack,
        EscalationAction::Resolve {
            outcome: "talked it through".into(),
        },
    ] {
        let me = sup.identity.clone().unwrap();
        let env = me.signed(Kind::Escalation, |counter, ts| EscalationActPayload {
            escalation: id,
            action,
            counter,
            ts,
        });
        let reply = sup
            .request(|rid| ClientFrame::Escalation { id: rid, env })
            .await;
        assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    }
    let (_, note) = staff_note(&mut fac, "circle").await;
    assert_eq!(
        note,
        Note::SupportResolved {
            member: river.key()
        }
    );
}

/// The group in `server` with a facilitator `Jo` and a member `River` (no waiting
/// room); River flags themselves at `severity`, and Jo is told.
async fn river_flags(
    server: &mut TestServer,
    severity: Severity,
) -> (Identity, Client, Identity, Client) {
    let (jo, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let river = Identity::generate();
    let mut p = server.login(&river).await;
    p.join("circle", "River", None).await;
    flag_in(
        &mut p,
        "circle",
        river.key(),
        severity,
        Consent::Own,
        |_| {},
    )
    .await;
    let (_, note) = staff_note(&mut fac, "circle").await;
    assert_eq!(asked(&note).1, severity);
    (jo, fac, river, p)
}

/// The flag and its note are made durable by two commits. A crash between them
/// (left here by removing the group's events from the stopped folder) loses no
/// note: the next start tells the open request again.
#[tokio::test]
async fn a_note_lost_between_the_two_commits_is_written_at_the_next_start() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (jo, fac, river, p) = river_flags(&mut server, Severity::Urgent).await;
    drop((fac, p));
    let server = server
        .restart_with(|data| {
            let store = peerhub_server::store::Store::open(data).unwrap();
            store.delete_events(&gid("circle"), None).unwrap();
            store.flush().unwrap();
        })
        .await;
    let mut fac = server.login(&jo).await;
    fac.join("circle", "Jo", None).await;
    let (_, note) = staff_note(&mut fac, "circle").await;
    let (member, severity, own, ..) = asked(&note);
    assert_eq!(
        (member, severity, own),
        (river.key(), Severity::Urgent, true)
    );
}

/// A graceful restart writes no second note for a request already told.
#[tokio::test]
async fn a_restart_does_not_tell_the_same_request_twice() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (jo, fac, river, p) = river_flags(&mut server, Severity::Urgent).await;
    drop((fac, p));
    let server = server.restart().await;
    let mut fac = server.login(&jo).await;
    fac.join("circle", "Jo", None).await;
    let mut p = server.login(&river).await;
    p.join("circle", "River", None).await;
    flag_in(
        &mut p,
        "circle",
        river.key(),
        Severity::Emergency,
        Consent::Own,
        |_| {},
    )
    .await;
    // The staff channel, from its start: the first note, then the emergency.
    let mut told = Vec::new();
    while told.last().map(|(s, _)| *s) != Some(Severity::Emergency) {
        let (_, note) = staff_note(&mut fac, "circle").await;
        let (_, severity, _, flags, ..) = asked(&note);
        told.push((severity, flags));
    }
    assert_eq!(told, vec![(Severity::Urgent, 1), (Severity::Emergency, 2)]);
}
