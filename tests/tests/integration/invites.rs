//! Roles by invite, and who may create groups.

use peerhub_protocol::frame::Role;
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_server::invites::{self, InviteSpec};
use peerhub_tests::identity::gid;
use peerhub_tests::{now_ms, Identity, TestServer};

#[tokio::test]
async fn the_first_admin_link_works_once() {
    let mut server = TestServer::start().await;
    let token = server
        .server()
        .start_tokens()
        .admin
        .clone()
        .expect("admin token at first start");
    let mut admin = server.admin().await; // redeems it
    let reply = admin.create_group("first", "First group").await;
    assert!(
        matches!(reply, ServerFrame::GroupCreated { .. }),
        "{reply:?}"
    );

    let mut other = server.login(&Identity::generate()).await;
    let before = server.hub().store.digest().unwrap();
    match other.redeem(&token).await {
        ServerFrame::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::BadToken);
            assert!(message.contains("already been used"), "{message}");
        }
        other => panic!("a used invite must be refused: {other:?}"),
    }
    assert_eq!(
        server.hub().store.digest().unwrap(),
        before,
        "refusal changed nothing"
    );
}

#[tokio::test]
async fn unknown_and_expired_invites_are_refused() {
    let server = TestServer::start().await;
    let store = &server.hub().store;
    let spec = InviteSpec {
        role: Role::Facilitator.into(),
        group: None,
        groups: Vec::new(),
        ttl_ms: 1_000,
        bootstrap: false,
    };
    let expired = invites::create(store, spec.clone(), None, now_ms() - 60_000).unwrap();
    let fresh = invites::create(store, spec, None, now_ms()).unwrap();
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    for (token, words) in [("nope", "not valid"), (expired.as_str(), "expired")] {
        match client.redeem(token).await {
            ServerFrame::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::BadToken);
                assert!(message.contains(words), "{message}");
            }
            other => panic!("expected bad_token, got {other:?}"),
        }
    }
    match client.redeem(&fresh).await {
        ServerFrame::Redeemed { role, roles, .. } => {
            assert_eq!(role, Role::Facilitator.into());
            assert_eq!(roles, vec![Role::Facilitator]);
        }
        other => panic!("a fresh invite works: {other:?}"),
    }
    // Asking again with the same key (say its answer was lost) gets the same answer.
    match client.redeem(&fresh).await {
        ServerFrame::Redeemed { role, .. } => assert_eq!(role, Role::Facilitator.into()),
        other => panic!("a repeat by the same key is answered again: {other:?}"),
    }
    // The role is the key's, on every later connection.
    let mut again = server.client().await;
    match again.try_login(&me).await {
        ServerFrame::AuthOk { roles, .. } => assert_eq!(roles, vec![Role::Facilitator]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn only_an_admin_creates_groups_and_ids_are_unique() {
    let mut server = TestServer::start().await;
    server.create_group("taken").await;
    let mut participant = server.login(&Identity::generate()).await;
    let before = server.hub().store.digest().unwrap();
    match participant.create_group("mine", "Mine").await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Forbidden),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hub().store.digest().unwrap(), before);
    let mut admin = server.admin().await;
    match admin.create_group("taken", "Again").await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::AlreadyExists),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hub().store.digest().unwrap(), before);
    let join = participant.identity.clone().unwrap().join("nowhere", "Sam");
    let frame = ClientFrame::Join {
        id: Some(5),
        group: gid("nowhere"),
        after: None,
        access_code: None,
        env: join,
    };
    participant
        .expect_error(frame.to_json(), Some(5), ErrorCode::NotFound)
        .await;
    assert_eq!(server.hub().store.digest().unwrap(), before);
}
