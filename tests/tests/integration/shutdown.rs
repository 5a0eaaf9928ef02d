//! Graceful shutdown: clients are told, nothing acknowledged is lost.

use peerhub_protocol::ServerFrame;
use peerhub_tests::{Client, Identity, ProcessServer, TestServer};

#[tokio::test]
async fn shutdown_tells_every_client_and_closes_with_going_away() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    client.join("circle", "Me", None).await;
    assert_eq!(client.post("circle", "before the stop").await, 1);
    let stopping = tokio::spawn(server.shutdown());
    let frame = client
        .recv_matching(|f| matches!(f, ServerFrame::Shutdown { .. }))
        .await;
    assert!(frame.is_ok(), "shutdown frame before the close: {frame:?}");
    let closed = client.expect_closed().await;
    assert_eq!(closed.code, Some(1001));
    stopping.await.unwrap();
}

#[tokio::test]
async fn sigterm_stops_the_binary_cleanly_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut process = ProcessServer::start(&data, &["--demo"]).await;
    let me = Identity::generate();
    let mut client = Client::connect(process.addr).await;
    client.login(&me).await;
    let token = process
        .invite_token("first admin (single use, 24 h)")
        .unwrap();
    client.redeem(&token).await;
    client.create_group("plain", "Plain").await;
    client.join("plain", "Visitor", None).await;
    assert_eq!(
        client.post("plain", "still here after the restart").await,
        1
    );
    process.signal("TERM");
    let closed = client.expect_closed().await;
    assert_eq!(closed.code, Some(1001));
    assert!(
        process.wait().await.success(),
        "exit status 0 after SIGTERM"
    );

    let process = ProcessServer::start(&data, &["--demo"]).await;
    let mut client = Client::connect(process.addr).await;
    client.login(&me).await;
    let joined = client.join("plain", "Visitor", Some(0)).await;
    assert_eq!(joined.history.len(), 1);
    assert_eq!(
        joined.history[0].verified_body(),
        "still here after the restart"
    );
}
