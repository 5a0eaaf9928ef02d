//! Every bad input gets its error code and changes nothing.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::payload::PostPayload;
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{now_ms, Client, Identity, TestServer};

struct Setup {
    server: TestServer,
    me: Identity,
    client: Client,
    watcher: Client,
}

async fn setup() -> Setup {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    server.create_group("other").await;
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    client.join("circle", "Sender", None).await;
    let mut watcher = server.login(&Identity::generate()).await;
    watcher.join("circle", "Watcher", None).await;
    client.post("circle", "a good message").await;
    watcher.next_event("circle").await;
    // Let presence and acks settle so the watcher starts quiet.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    while let Ok(Ok(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(50), watcher.recv()).await
    {}
    Setup {
        server,
        me,
        client,
        watcher,
    }
}

fn post_frame(id: u64, group: &str, env: peerhub_protocol::SignedEnvelope) -> String {
    ClientFrame::Post {
        id: Some(id),
        group: gid(group),
        env,
    }
    .to_json()
}

#[tokio::test]
async fn each_bad_frame_gets_its_code_and_changes_nothing() {
    let Setup {
        server,
        me,
        mut client,
        mut watcher,
    } = setup().await;
    // A second connection of the same key shares the cases below, so neither
    // reaches the consecutive-error limit. Joined first: the cases are signed in
    // order, so their counters stay valid wherever replay is not the point.
    let mut second = server.login(&me).await;
    second.join("circle", "Sender", None).await;
    watcher
        .recv()
        .await
        .expect("presence of the second connection");
    let stranger = Identity::generate();
    let acked = me.post("circle", "once only");
    client.post_env("circle", acked.clone()).await;
    watcher.next_event("circle").await;
    let before = server.hub().store.digest().unwrap();

    let mut forged = me.post("circle", "forged");
    forged.sig.0[10] ^= 0x40;
    let mut tampered = me.post("circle", "original words");
    tampered.payload = tampered.payload.replace("original", "altered!");
    let same_counter = me.post_at(
        "circle",
        "different words, spent counter",
        acked.payload_as::<PostPayload>().unwrap().counter,
        now_ms(),
    );
    let long_body = "x".repeat(peerhub_protocol::limits::MAX_BODY_CHARS + 1);
    let extra_field = {
        let payload = format!(
            r#"{{"group":"circle","body":"hi","counter":{},"ts":{},"admin":true}}"#,
            me.next_counter(),
            now_ms()
        );
        peerhub_protocol::SignedEnvelope::sign(&me.signing, Kind::Post, payload)
    };
    let cases: Vec<(&str, String, Option<u64>, ErrorCode)> = vec![
        ("not JSON", "{nope".into(), None, ErrorCode::Malformed),
        (
            "not an object",
            "[1,2,3]".into(),
            None,
            ErrorCode::Malformed,
        ),
        (
            "no type",
            r#"{"id":1}"#.into(),
            Some(1),
            ErrorCode::Malformed,
        ),
        (
            "unknown type",
            r#"{"type":"teleport","id":2}"#.into(),
            Some(2),
            ErrorCode::UnknownType,
        ),
        (
            "missing envelope",
            r#"{"type":"post","id":3,"group":"circle"}"#.into(),
            Some(3),
            ErrorCode::Malformed,
        ),
        (
            "bad group id",
            r#"{"type":"leave","id":4,"group":"Not A Group"}"#.into(),
            Some(4),
            ErrorCode::Malformed,
        ),
        (
            "bad signature",
            post_frame(5, "circle", forged),
            Some(5),
            ErrorCode::BadSignature,
        ),
        (
            "altered payload",
            post_frame(6, "circle", tampered),
            Some(6),
            ErrorCode::BadSignature,
        ),
        (
            "replayed envelope",
            post_frame(7, "circle", acked.clone()),
            Some(7),
            ErrorCode::Replay,
        ),
        (
            "spent counter",
            post_frame(8, "circle", same_counter),
            Some(8),
            ErrorCode::Replay,
        ),
        (
            "payload for another group",
            post_frame(9, "circle", me.post("other", "misdirected")),
            Some(9),
            ErrorCode::WrongGroup,
        ),
        (
            "stale time",
            post_frame(
                10,
                "circle",
                me.post_at("circle", "old", me.next_counter(), now_ms() - 600_000),
            ),
            Some(10),
            ErrorCode::Stale,
        ),
        (
            "future time",
            post_frame(
                11,
                "circle",
                me.post_at("circle", "early", me.next_counter(), now_ms() + 600_000),
            ),
            Some(11),
            ErrorCode::Stale,
        ),
        (
            "wrong kind",
            post_frame(12, "circle", me.join("circle", "Sender")),
            Some(12),
            ErrorCode::WrongKind,
        ),
        (
            "someone else's envelope",
            post_frame(13, "circle", stranger.post("circle", "not mine")),
            Some(13),
            ErrorCode::WrongKey,
        ),
        (
            "not joined",
            post_frame(14, "other", me.post("other", "hello?")),
            Some(14),
            ErrorCode::NotJoined,
        ),
        (
            "empty body",
            post_frame(15, "circle", me.post("circle", "   ")),
            Some(15),
            ErrorCode::Invalid,
        ),
        (
            "body too long",
            post_frame(16, "circle", me.post("circle", &long_body)),
            Some(16),
            ErrorCode::BodyTooLong,
        ),
        (
            "unknown payload field",
            post_frame(17, "circle", extra_field),
            Some(17),
            ErrorCode::Malformed,
        ),
        (
            "oversize frame",
            format!(
                r#"{{"type":"leave","id":18,"group":"{}"}}"#,
                "a".repeat(20_000)
            ),
            None,
            ErrorCode::TooLarge,
        ),
    ];
    for (n, (what, text, id, code)) in cases.into_iter().enumerate() {
        let connection = if n < 10 { &mut client } else { &mut second };
        let message = connection.expect_error(text, id, code).await;
        assert!(!message.is_empty(), "{what}: the error says why");
        assert_eq!(
            server.hub().store.digest().unwrap(),
            before,
            "{what} changed stored state"
        );
    }
    // The watcher saw none of the refused frames, and both connections still work.
    watcher.assert_quiet(200).await;
    for connection in [&mut client, &mut second] {
        connection.post("circle", "still connected").await;
        assert_eq!(
            watcher.next_event("circle").await.verified_body(),
            "still connected"
        );
    }
}

#[tokio::test]
async fn bad_joins_leaves_and_names_change_nothing() {
    let Setup {
        server,
        me,
        mut client,
        mut watcher,
    } = setup().await;
    let stranger = Identity::generate();
    let before = server.hub().store.digest().unwrap();
    let long_body = "x".repeat(peerhub_protocol::limits::MAX_BODY_CHARS + 1);
    let cases: Vec<(String, Option<u64>, ErrorCode)> = vec![
        (
            post_frame(
                1,
                "circle",
                me.post_at("circle", "old", me.next_counter(), now_ms() - 600_000),
            ),
            Some(1),
            ErrorCode::Stale,
        ),
        (
            post_frame(2, "circle", me.join("circle", "Sender")),
            Some(2),
            ErrorCode::WrongKind,
        ),
        (
            post_frame(3, "circle", stranger.post("circle", "not mine")),
            Some(3),
            ErrorCode::WrongKey,
        ),
        (
            post_frame(4, "other", me.post("other", "hello?")),
            Some(4),
            ErrorCode::NotJoined,
        ),
        (
            post_frame(5, "circle", me.post("circle", "   ")),
            Some(5),
            ErrorCode::Invalid,
        ),
        (
            post_frame(6, "circle", me.post("circle", &long_body)),
            Some(6),
            ErrorCode::BodyTooLong,
        ),
        (
            format!(
                r#"{{"type":"leave","id":7,"group":"{}"}}"#,
                "a".repeat(20_000)
            ),
            None,
            ErrorCode::TooLarge,
        ),
        (
            r#"{"type":"leave","id":8,"group":"other"}"#.into(),
            Some(8),
            ErrorCode::NotJoined,
        ),
        (
            ClientFrame::Join {
                id: Some(9),
                group: gid("circle"),
                after: None,
                access_code: None,
                env: me.join("circle", "Facilitator Sam"),
            }
            .to_json(),
            Some(9),
            ErrorCode::Invalid,
        ),
        (
            ClientFrame::Join {
                id: Some(10),
                group: gid("circle"),
                after: None,
                access_code: None,
                env: me.join("circle", " padded "),
            }
            .to_json(),
            Some(10),
            ErrorCode::Invalid,
        ),
    ];
    for (text, id, code) in cases {
        client.expect_error(text, id, code).await;
        assert_eq!(
            server.hub().store.digest().unwrap(),
            before,
            "{code} changed stored state"
        );
    }
    watcher.assert_quiet(200).await;
}

#[tokio::test]
async fn binary_frames_are_refused_with_malformed() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    let _hello = ws.next().await.unwrap().unwrap();
    ws.send(Message::Binary(vec![0xde, 0xad].into()))
        .await
        .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    let frame: peerhub_protocol::ServerFrame =
        serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert!(
        matches!(
            frame,
            peerhub_protocol::ServerFrame::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ),
        "{frame:?}"
    );
}

#[tokio::test]
async fn a_frame_over_the_hard_cap_closes_with_1009() {
    let Setup {
        server, mut client, ..
    } = setup().await;
    let before = server.hub().store.digest().unwrap();
    client
        .send_text("x".repeat(peerhub_protocol::limits::HARD_FRAME_BYTES + 1))
        .await;
    let closed = client.expect_closed().await;
    assert_eq!(closed.code, Some(1009), "{closed:?}");
    assert_eq!(server.hub().store.digest().unwrap(), before);
}

#[tokio::test]
async fn endless_bad_frames_close_the_connection() {
    let Setup { mut client, .. } = setup().await;
    for _ in 0..25 {
        client.send_text("{nope").await;
    }
    let closed = client.expect_closed().await;
    assert_eq!(closed.code, Some(1008), "{closed:?}");
}

#[tokio::test]
async fn thousands_of_replays_are_all_refused_and_change_nothing() {
    let Setup {
        server,
        me,
        mut client,
        mut watcher,
    } = setup().await;
    let mut accepted = Vec::new();
    for i in 0..20 {
        let env = me.post("circle", &format!("original {i}"));
        client.post_env("circle", env.clone()).await;
        watcher.next_event("circle").await;
        accepted.push(env);
    }
    let before = server.hub().store.digest().unwrap();
    // 2,000 replays: every accepted envelope again, a hundred times each, ten at a
    // time, over two connections of the same key.
    let mut second = server.login(&me).await;
    second.join("circle", "Sender", None).await;
    let mut refused = 0;
    for round in 0..200u64 {
        let connection = if round % 2 == 0 {
            &mut client
        } else {
            &mut second
        };
        let half = &accepted[(round as usize % 2) * 10..][..10];
        for (n, env) in half.iter().enumerate() {
            let id = 10_000 + round * 100 + n as u64;
            connection
                .send_text(post_frame(id, "circle", env.clone()))
                .await;
        }
        for n in 0..half.len() {
            let id = 10_000 + round * 100 + n as u64;
            match connection.reply_to(id).await {
                ServerFrame::Error {
                    code: ErrorCode::Replay,
                    ..
                } => refused += 1,
                other => panic!("a replay was not refused: {other:?}"),
            }
        }
        // Keep both connections under the consecutive-error limit.
        connection.post("circle", "between replays").await;
        watcher.next_event("circle").await;
    }
    assert_eq!(refused, 2_000);
    let mut after = server.hub().store.digest().unwrap();
    assert_ne!(
        after, before,
        "only the fresh posts between rounds changed the store"
    );
    let _ = &mut after;
    // Nothing was stored twice: the watcher saw each original once and no replay.
    watcher.assert_no_events(200).await;
}

#[tokio::test]
async fn a_malleated_signature_is_not_a_new_message() {
    // Adding the group order L to S gives a second encoding of "the same" signature
    // that lax verifiers accept. Strict verification refuses it, so a stored message
    // can never come back as a "new" one by changing its signature bytes.
    let Setup {
        server,
        me,
        mut client,
        ..
    } = setup().await;
    let env = me.post("circle", "said once");
    client.post_env("circle", env.clone()).await;
    let before = server.hub().store.digest().unwrap();
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut malleated = env.clone();
    let mut carry = 0u16;
    for (byte, l) in malleated.sig.0[32..].iter_mut().zip(L) {
        let sum = *byte as u16 + l as u16 + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    assert_ne!(malleated.sig, env.sig);
    client
        .expect_error(
            post_frame(77, "circle", malleated),
            Some(77),
            ErrorCode::BadSignature,
        )
        .await;
    assert_eq!(server.hub().store.digest().unwrap(), before);
}

#[tokio::test]
async fn bad_group_and_escalation_frames_get_their_codes_and_change_nothing() {
    use peerhub_protocol::escalation::{Consent, RotaEntry, Severity};
    use peerhub_protocol::payload::{
        AgreePayload, ControlAction, ControlPayload, EscalationActPayload, EscalationAction,
        FlagPayload, InvitePayload, InviteRole, RecordPayload, ReportPayload, RotaPayload,
        StepOutPayload,
    };
    let Setup {
        server,
        me,
        mut client,
        mut watcher,
    } = setup().await;
    // The second connection joins before the cases are signed, so their counters
    // stay above everything already spent.
    let mut second = server.login(&me).await;
    second.join("circle", "Sender", None).await;
    watcher
        .recv()
        .await
        .expect("presence of the second connection");
    let other = Identity::generate().key();
    let flag = |about, consent, reason: Option<&str>, withhold: Option<&str>| {
        me.signed(Kind::Flag, |counter, ts| FlagPayload {
            group: gid("circle"),
            about,
            seq: None,
            severity: Severity::Urgent,
            consent,
            reason: reason.map(str::to_string),
            withhold_notice: withhold.map(str::to_string),
            note: None,
            counter,
            ts,
        })
    };
    let control = |action| {
        let env = me.signed(Kind::Control, |counter, ts| ControlPayload {
            group: gid("circle"),
            action,
            counter,
            ts,
        });
        ClientFrame::Control {
            id: Some(1),
            group: gid("circle"),
            env,
        }
        .to_json()
    };
    let raw_control = |action: &str| {
        let payload = format!(
            r#"{{"group":"circle","action":{action},"counter":{},"ts":{}}}"#,
            me.next_counter(),
            now_ms()
        );
        let env = peerhub_protocol::SignedEnvelope::sign(&me.signing, Kind::Control, payload);
        ClientFrame::Control {
            id: Some(1),
            group: gid("circle"),
            env,
        }
        .to_json()
    };
    let cases: Vec<(&str, String, ErrorCode)> = vec![
        ("control by a participant", control(ControlAction::Lock), ErrorCode::Forbidden),
        ("unknown control", raw_control(r#"{"do":"teleport"}"#), ErrorCode::Malformed),
        ("control with a stray field", raw_control(r#"{"do":"lock","why":"x"}"#), ErrorCode::Malformed),
        ("control with a bad key", raw_control(r#"{"do":"mute","member":"AAAA","minutes":1}"#), ErrorCode::Malformed),
        ("control as an array", raw_control(r#"["lock"]"#), ErrorCode::Malformed),
        (
            "agree without an agreement",
            ClientFrame::Agree {
                id: Some(1),
                group: gid("circle"),
                env: me.signed(Kind::Agree, |counter, ts| AgreePayload { group: gid("circle"), version: 1, counter, ts }),
            }
            .to_json(),
            ErrorCode::Invalid,
        ),
        (
            "report of a missing message",
            ClientFrame::Report {
                id: Some(1),
                group: gid("circle"),
                env: me.signed(Kind::Report, |counter, ts| ReportPayload {
                    group: gid("circle"),
                    seq: 999,
                    reason: String::new(),
                    counter,
                    ts,
                }),
            }
            .to_json(),
            ErrorCode::NotFound,
        ),
        (
            "step out with a wrong kind",
            ClientFrame::StepOut {
                id: Some(1),
                group: gid("circle"),
                env: me.signed(Kind::Report, |counter, ts| StepOutPayload { group: gid("circle"), away: true, counter, ts }),
            }
            .to_json(),
            ErrorCode::WrongKind,
        ),
        (
            "record opened by a participant",
            ClientFrame::Record {
                id: Some(1),
                group: gid("circle"),
                env: me.signed(Kind::Record, |counter, ts| RecordPayload {
                    group: gid("circle"),
                    about: None,
                    reply_to: None,
                    text: "mine".into(),
                    counter,
                    ts,
                }),
            }
            .to_json(),
            ErrorCode::Forbidden,
        ),
        (
            "empty record text",
            ClientFrame::Record {
                id: Some(1),
                group: gid("circle"),
                env: me.signed(Kind::Record, |counter, ts| RecordPayload {
                    group: gid("circle"),
                    about: None,
                    reply_to: Some(5),
                    text: "  ".into(),
                    counter,
                    ts,
                }),
            }
            .to_json(),
            ErrorCode::Invalid,
        ),
        (
            "invite by a participant",
            ClientFrame::Invite {
                id: Some(1),
                env: me.signed(Kind::Invite, |counter, ts| InvitePayload {
                    role: InviteRole::Admin,
                    group: None,
                    groups: Vec::new(),
                    ttl_ms: None,
                    counter,
                    ts,
                }),
            }
            .to_json(),
            ErrorCode::Forbidden,
        ),
        ("flag about a stranger", ClientFrame::Flag { id: Some(1), group: gid("circle"), env: flag(other, Consent::Given, None, None) }.to_json(), ErrorCode::NotFound),
        ("own flag with someone's consent", ClientFrame::Flag { id: Some(1), group: gid("circle"), env: flag(me.key(), Consent::Given, None, None) }.to_json(), ErrorCode::Invalid),
        ("withheld notice without imminent risk", ClientFrame::Flag { id: Some(1), group: gid("circle"), env: flag(me.key(), Consent::Own, None, Some("x")) }.to_json(), ErrorCode::Invalid),
        (
            "flag for another group",
            ClientFrame::Flag { id: Some(1), group: gid("other"), env: flag(me.key(), Consent::Own, None, None) }.to_json(),
            ErrorCode::WrongGroup,
        ),
        (
            "escalation step by a participant",
            ClientFrame::Escalation {
                id: Some(1),
                env: me.signed(Kind::Escalation, |counter, ts| EscalationActPayload {
                    escalation: 1,
                    action: EscalationAction::Ack,
                    counter,
                    ts,
                }),
            }
            .to_json(),
            ErrorCode::Forbidden,
        ),
        (
            "rota by a participant",
            ClientFrame::SetRota {
                id: Some(1),
                env: me.signed(Kind::Rota, |counter, ts| RotaPayload {
                    entries: vec![RotaEntry { supervisor: other, start_ms: 0, end_ms: 1, level: 1 }],
                    counter,
                    ts,
                }),
            }
            .to_json(),
            ErrorCode::Forbidden,
        ),
        ("rota read by a participant", r#"{"type":"rota","id":1}"#.into(), ErrorCode::Forbidden),
        ("join with an unknown field", r#"{"type":"join","id":1,"group":"circle","env":{},"x":1}"#.into(), ErrorCode::Malformed),
        ("post with a numeric group", r#"{"type":"post","id":1,"group":5,"env":{}}"#.into(), ErrorCode::Malformed),
        ("envelope with an unknown kind", r#"{"type":"post","id":1,"group":"circle","env":{"kind":"shout","key":"AAAA","payload":"{}","sig":"AAAA"}}"#.into(), ErrorCode::Malformed),
        ("id that is not a number", r#"{"type":"teleport","id":"one"}"#.into(), ErrorCode::UnknownType),
    ];
    let before = server.hub().store.digest().unwrap();
    for (n, (what, text, code)) in cases.into_iter().enumerate() {
        let connection = if n < 11 { &mut client } else { &mut second };
        let id = if what == "id that is not a number" {
            None
        } else {
            Some(1)
        };
        let message = connection.expect_error(text, id, code).await;
        assert!(!message.is_empty(), "{what}: the error says why");
        assert_eq!(
            server.hub().store.digest().unwrap(),
            before,
            "{what} changed stored state"
        );
    }
    watcher.assert_no_events(200).await;
}
