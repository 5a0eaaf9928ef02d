//! One counter rule (PROTOCOL.md §4.5, §10): a refused command never spends its
//! counter, in memory or on disk, and a restart (graceful or `kill -9`) never
//! changes what is accepted.
//!
//! Issue 19's reproduction: the last accepted counter is C; a `post` with C+1000 and
//! a blank body is refused `invalid`; a valid `post` with C+500 must then be
//! accepted (it was `replay`, "not greater than the last accepted counter C+1000"),
//! and `auth_ok.counter` must say C, before and after a restart.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame, SignedEnvelope};
use peerhub_tests::identity::gid;
use peerhub_tests::{now_ms, Client, Identity, ProcessServer, TestServer};

/// A payload signed as `kind` from raw JSON text (`{c}` and `{ts}` filled in).
fn raw(me: &Identity, kind: Kind, json: &str, counter: u64) -> SignedEnvelope {
    let text = json
        .replace("{c}", &counter.to_string())
        .replace("{ts}", &now_ms().to_string());
    SignedEnvelope::sign(&me.signing, kind, text)
}

/// The frame that carries `env`, with request id `id`.
fn frame(kind: Kind, id: u64, env: SignedEnvelope) -> ClientFrame {
    let id = Some(id);
    match kind {
        Kind::Post => ClientFrame::Post {
            id,
            group: gid(&group_of(&env)),
            env,
        },
        Kind::Agree => ClientFrame::Agree {
            id,
            group: gid(&group_of(&env)),
            env,
        },
        Kind::Control => ClientFrame::Control {
            id,
            group: gid(&group_of(&env)),
            env,
        },
        Kind::Report => ClientFrame::Report {
            id,
            group: gid(&group_of(&env)),
            env,
        },
        Kind::Record => ClientFrame::Record {
            id,
            group: gid(&group_of(&env)),
            env,
        },
        Kind::Flag => ClientFrame::Flag {
            id,
            group: gid(&group_of(&env)),
            env,
        },
        Kind::Join => ClientFrame::Join {
            id,
            group: gid(&group_of(&env)),
            after: None,
            access_code: None,
            env,
        },
        Kind::Redeem => ClientFrame::Redeem { id, env },
        Kind::CreateGroup => ClientFrame::CreateGroup {
            id,
            access_code: None,
            env,
        },
        Kind::Invite => ClientFrame::Invite { id, env },
        Kind::Escalation => ClientFrame::Escalation { id, env },
        Kind::Rota => ClientFrame::SetRota { id, env },
        Kind::Push => ClientFrame::Push { id, env },
        other => panic!("no frame for {other:?} here"),
    }
}

fn group_of(env: &SignedEnvelope) -> String {
    let value: serde_json::Value = serde_json::from_str(&env.payload).expect("payload JSON");
    value["group"].as_str().expect("group").to_string()
}

/// Sends `env` and expects the refusal `code`.
async fn refused(client: &mut Client, kind: Kind, env: SignedEnvelope, code: ErrorCode) {
    let id = client.next_id();
    client.send(&frame(kind, id, env)).await;
    match client.reply_to(id).await {
        ServerFrame::Error {
            code: got, message, ..
        } => {
            assert_eq!(got, code, "{kind:?} refused for another reason: {message}")
        }
        other => panic!("{kind:?} expected {code}, got {other:?}"),
    }
}

/// A valid post at exactly `counter` must be acknowledged.
async fn accepted_post(client: &mut Client, me: &Identity, counter: u64, after: &str) {
    let env = me.post_at("circle", "still mine to use", counter, now_ms());
    match client.try_post_env("circle", env).await {
        Ok(ServerFrame::Ack { counter: c, .. }) => assert_eq!(c, counter),
        other => panic!("after a refused {after}, a lower unspent counter {counter} was not accepted: {other:?}"),
    }
}

async fn auth_counter(server_addr: std::net::SocketAddr, me: &Identity) -> u64 {
    let mut client = Client::connect(server_addr).await;
    match client.try_login(me).await {
        ServerFrame::AuthOk { counter, .. } => counter,
        other => panic!("login refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_command_of_any_code_spends_no_counter_and_a_restart_agrees() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    server.create_group("other").await;
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    client.join("circle", "Sender", None).await;
    let seq = client.post("circle", "something to report").await;
    let stranger = Identity::generate().key();
    let mut last = me.next_counter();
    accepted_post(&mut client, &me, last, "nothing").await;

    // Every refusal a participant can meet after the replay check (§10 step 11),
    // each through the task that runs that command: the session, the group, the
    // router, invites, subscriptions.
    let cases: Vec<(&str, Kind, String, ErrorCode)> = vec![
        (
            "blank post",
            Kind::Post,
            r#"{"group":"circle","body":"   ","counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::Invalid,
        ),
        (
            "long post",
            Kind::Post,
            format!(
                r#"{{"group":"circle","body":"{}","counter":{{c}},"ts":{{ts}}}}"#,
                "x".repeat(peerhub_protocol::limits::MAX_BODY_CHARS + 1)
            ),
            ErrorCode::BodyTooLong,
        ),
        (
            "report of no message",
            Kind::Report,
            r#"{"group":"circle","seq":999999,"reason":"why","counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::NotFound,
        ),
        (
            "control by a participant",
            Kind::Control,
            r#"{"group":"circle","action":{"do":"lock"},"counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::Forbidden,
        ),
        (
            "agree to no such version",
            Kind::Agree,
            r#"{"group":"circle","version":99,"counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::Invalid,
        ),
        (
            "post to a group not joined",
            Kind::Post,
            r#"{"group":"other","body":"hello","counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::NotJoined,
        ),
        (
            "join of no such group",
            Kind::Join,
            r#"{"group":"nowhere","name":"Sender","counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::NotFound,
        ),
        (
            "redeem of no such token",
            Kind::Redeem,
            r#"{"token":"bm90LWEtdG9rZW4","counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::BadToken,
        ),
        (
            "create_group without admin",
            Kind::CreateGroup,
            r#"{"group":"mine","title":"Mine","group_kind":"drop_in","counter":{c},"ts":{ts}}"#
                .into(),
            ErrorCode::Forbidden,
        ),
        (
            "invite without a role",
            Kind::Invite,
            r#"{"role":"admin","counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::Forbidden,
        ),
        (
            "flag about nobody",
            Kind::Flag,
            format!(
                r#"{{"group":"circle","about":"{stranger}","severity":"concern","consent":"given","counter":{{c}},"ts":{{ts}}}}"#
            ),
            ErrorCode::NotFound,
        ),
        (
            "flag of no such message",
            Kind::Flag,
            format!(
                r#"{{"group":"circle","about":"{}","seq":{},"severity":"concern","consent":"own","counter":{{c}},"ts":{{ts}}}}"#,
                me.key(),
                seq + 1000
            ),
            ErrorCode::NotFound,
        ),
        (
            "escalation step without a role",
            Kind::Escalation,
            r#"{"escalation":1,"action":{"do":"ack"},"counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::Forbidden,
        ),
        (
            "set_rota without admin",
            Kind::Rota,
            r#"{"entries":[],"counter":{c},"ts":{ts}}"#.into(),
            ErrorCode::Forbidden,
        ),
        (
            "push without a role",
            Kind::Push,
            r#"{"action":"unsubscribe","endpoint":"https://push.example/x","counter":{c},"ts":{ts}}"#
                .into(),
            ErrorCode::Forbidden,
        ),
    ];
    for (what, kind, json, code) in cases {
        let spent_if_wrong = last + 1000;
        refused(
            &mut client,
            kind,
            raw(&me, kind, &json, spent_if_wrong),
            code,
        )
        .await;
        assert_eq!(
            auth_counter(server.addr, &me).await,
            last,
            "auth_ok.counter after a refused {what}"
        );
        last += 500;
        accepted_post(&mut client, &me, last, what).await;
    }

    // An admin's refusal (`already_exists`) through the group registry.
    let mut admin = server.admin().await;
    let boss = admin.identity.clone().expect("admin identity");
    let admin_last = auth_counter(server.addr, &boss).await;
    let taken = raw(
        &boss,
        Kind::CreateGroup,
        r#"{"group":"circle","title":"Again","group_kind":"drop_in","counter":{c},"ts":{ts}}"#,
        admin_last + 1000,
    );
    refused(
        &mut admin,
        Kind::CreateGroup,
        taken,
        ErrorCode::AlreadyExists,
    )
    .await;
    let fresh = raw(
        &boss,
        Kind::CreateGroup,
        r#"{"group":"fresh","title":"Fresh","group_kind":"drop_in","counter":{c},"ts":{ts}}"#,
        admin_last + 500,
    );
    let id = admin.next_id();
    admin.send(&frame(Kind::CreateGroup, id, fresh)).await;
    assert!(
        matches!(admin.reply_to(id).await, ServerFrame::GroupCreated { .. }),
        "a lower unspent counter after already_exists"
    );
    drop(admin);

    // Refused once more, then a graceful restart: the same counter is reported and
    // the same lower counter accepted.
    refused(
        &mut client,
        Kind::Post,
        raw(
            &me,
            Kind::Post,
            r#"{"group":"circle","body":"","counter":{c},"ts":{ts}}"#,
            last + 1000,
        ),
        ErrorCode::Invalid,
    )
    .await;
    drop(client);
    let server = server.restart().await;
    assert_eq!(auth_counter(server.addr, &me).await, last);
    let mut client = server.login(&me).await;
    client.join("circle", "Sender", None).await;
    // The join took a counter (the identity's, above `last`); a post below the
    // once-refused counter but above the join's is still accepted.
    let joined_at = auth_counter(server.addr, &me).await;
    assert!(joined_at > last && joined_at < last + 1000, "{joined_at}");
    accepted_post(&mut client, &me, last + 999, "post before the restart").await;
    // And an accepted counter stays spent across it all.
    let again = me.post_at("circle", "again", last + 999, now_ms());
    match client.try_post_env("circle", again).await {
        Ok(ServerFrame::Error { code, .. }) => assert_eq!(code, ErrorCode::Replay),
        other => panic!("an accepted counter was accepted twice: {other:?}"),
    }
}

#[tokio::test]
async fn the_same_counter_on_two_connections_at_once_is_accepted_once() {
    // Not spending refused counters must not let one counter in twice: two
    // connections of one key race the same envelope, many times.
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let me = Identity::generate();
    let mut one = server.login(&me).await;
    one.join("circle", "Sender", None).await;
    let mut two = server.login(&me).await;
    two.join("circle", "Sender", None).await;
    for round in 0..50 {
        let env = me.post("circle", &format!("round {round}"));
        let (a, b) = tokio::join!(
            one.try_post_env("circle", env.clone()),
            two.try_post_env("circle", env)
        );
        let acks = [a, b]
            .into_iter()
            .filter(|r| matches!(r, Ok(ServerFrame::Ack { .. })))
            .count();
        assert_eq!(acks, 1, "round {round}: one envelope accepted {acks} times");
    }
}

#[tokio::test]
async fn a_refused_counter_stays_unspent_across_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let hub = ProcessServer::start(&data, &[]).await;
    let mut admin = hub.admin().await;
    assert!(matches!(
        admin.create_group("circle", "Circle").await,
        ServerFrame::GroupCreated { .. }
    ));
    let me = Identity::generate();
    let mut client = Client::connect(hub.addr).await;
    client.login(&me).await;
    client.join("circle", "Sender", None).await;
    client.post("circle", "accepted before the crash").await;
    let last = auth_counter(hub.addr, &me).await;
    refused(
        &mut client,
        Kind::Post,
        raw(
            &me,
            Kind::Post,
            r#"{"group":"circle","body":" ","counter":{c},"ts":{ts}}"#,
            last + 1000,
        ),
        ErrorCode::Invalid,
    )
    .await;
    assert_eq!(auth_counter(hub.addr, &me).await, last, "before the crash");
    hub.signal("KILL");
    let mut hub = hub;
    hub.wait().await;
    let hub = ProcessServer::start(&data, &[]).await;
    assert_eq!(auth_counter(hub.addr, &me).await, last, "after kill -9");
    let mut client = Client::connect(hub.addr).await;
    client.login(&me).await;
    client.join("circle", "Sender", None).await;
    accepted_post(&mut client, &me, last + 500, "post before kill -9").await;
}
