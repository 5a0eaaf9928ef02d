//! Challenge–response login.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::payload::AuthPayload;
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_tests::{now_ms, Identity, TestServer};

#[tokio::test]
async fn a_good_key_logs_in_and_learns_its_counter() {
    let server = TestServer::start().await;
    let me = Identity::generate();
    let mut client = server.client().await;
    match client.try_login(&me).await {
        ServerFrame::AuthOk {
            key,
            roles,
            counter,
            ..
        } => {
            assert_eq!(key, me.key());
            assert!(roles.is_empty(), "a new key holds no role");
            assert_eq!(counter, 0);
        }
        other => panic!("expected auth_ok, got {other:?}"),
    }
}

#[tokio::test]
async fn a_forged_signature_is_refused() {
    let server = TestServer::start().await;
    let me = Identity::generate();
    let mut client = server.client().await;
    let mut env = me.auth(&client.challenge);
    env.sig.0[0] ^= 1;
    let frame = ClientFrame::Auth { id: Some(1), env }.to_json();
    client
        .expect_error(frame, Some(1), ErrorCode::BadSignature)
        .await;
    // Signed by someone else but claiming my key.
    let thief = Identity::generate();
    let mut env = thief.auth(&client.challenge);
    env.key = me.key();
    let frame = ClientFrame::Auth { id: Some(2), env }.to_json();
    client
        .expect_error(frame, Some(2), ErrorCode::BadSignature)
        .await;
    // Still not logged in.
    let join = me.join("demo", "Sam");
    let frame = ClientFrame::Join {
        id: Some(3),
        group: peerhub_tests::identity::gid("demo"),
        after: None,
        access_code: None,
        env: join,
    };
    client
        .expect_error(frame.to_json(), Some(3), ErrorCode::NotAuthenticated)
        .await;
}

#[tokio::test]
async fn another_connections_challenge_is_refused() {
    let server = TestServer::start().await;
    let me = Identity::generate();
    let first = server.client().await;
    let mut second = server.client().await;
    let env = me.auth(&first.challenge);
    let frame = ClientFrame::Auth { id: Some(1), env }.to_json();
    second
        .expect_error(frame, Some(1), ErrorCode::AuthFailed)
        .await;
}

#[tokio::test]
async fn a_stale_login_and_a_wrong_kind_are_refused() {
    let server = TestServer::start().await;
    let me = Identity::generate();
    let mut client = server.client().await;
    let env = me.sign(
        Kind::Auth,
        &AuthPayload {
            challenge: client.challenge.clone(),
            ts: now_ms() - 10 * 60 * 1000,
        },
    );
    let frame = ClientFrame::Auth { id: Some(1), env }.to_json();
    client.expect_error(frame, Some(1), ErrorCode::Stale).await;
    let env = me.sign(
        Kind::Post,
        &AuthPayload {
            challenge: client.challenge.clone(),
            ts: now_ms(),
        },
    );
    let frame = ClientFrame::Auth { id: Some(2), env }.to_json();
    client
        .expect_error(frame, Some(2), ErrorCode::WrongKind)
        .await;
}

#[tokio::test]
async fn three_failed_logins_close_the_connection() {
    let server = TestServer::start().await;
    let me = Identity::generate();
    let mut client = server.client().await;
    for id in 1..=3 {
        let env = me.auth("not-the-challenge");
        client.send(&ClientFrame::Auth { id: Some(id), env }).await;
    }
    let closed = client.expect_closed().await;
    assert_eq!(closed.code, Some(1008), "{closed:?}");
}

#[tokio::test]
async fn logging_in_twice_is_refused_and_harmless() {
    let server = TestServer::start().await;
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    let env = me.auth(&client.challenge.clone());
    let frame = ClientFrame::Auth { id: Some(9), env }.to_json();
    client
        .expect_error(frame, Some(9), ErrorCode::AlreadyAuthenticated)
        .await;
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed() {
    let server =
        TestServer::start_with(|c| c.auth_timeout = std::time::Duration::from_millis(300)).await;
    let mut client = server.client().await;
    let closed = client.expect_closed().await;
    assert_eq!(
        closed.code,
        Some(4002),
        "its own code, so clients may reconnect: {closed:?}"
    );
}
