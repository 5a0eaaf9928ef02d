//! History, resume after reconnect, and durability across restarts and crashes.

use std::collections::HashMap;

use peerhub_protocol::payload::PostPayload;
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Client, Identity, ProcessServer, TestServer};

#[tokio::test]
async fn a_reconnecting_member_receives_exactly_what_it_missed() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut talker = server.login(&a).await;
    talker.join("circle", "Talker", None).await;
    let mut listener = server.login(&b).await;
    listener.join("circle", "Listener", None).await;
    for i in 1..=2 {
        talker.post("circle", &format!("before {i}")).await;
    }
    let mut last_seen = 0;
    for _ in 0..2 {
        last_seen = listener.next_event("circle").await.seq;
    }
    drop(listener); // connection lost
    for i in 3..=5 {
        talker.post("circle", &format!("missed {i}")).await;
    }
    let mut back = server.login(&b).await;
    let joined = back.join("circle", "Listener", Some(last_seen)).await;
    assert_eq!(joined.head, 5);
    let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5], "exactly the missed events");
    let bodies: Vec<String> = joined.history.iter().map(|e| e.verified_body()).collect();
    assert_eq!(bodies, vec!["missed 3", "missed 4", "missed 5"]);
    talker.post("circle", "live again").await;
    let live = back.next_event("circle").await;
    assert_eq!((live.seq, live.verified_body().as_str()), (6, "live again"));
    back.assert_no_events(200).await;
}

#[tokio::test]
async fn a_join_without_a_resume_point_gets_the_recent_history() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let mut talker = server.login(&Identity::generate()).await;
    talker.join("circle", "Talker", None).await;
    for i in 1..=120 {
        talker.post("circle", &format!("m{i}")).await;
    }
    let mut newcomer = server.login(&Identity::generate()).await;
    let joined = newcomer.join("circle", "New", None).await;
    let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (21..=120).collect::<Vec<_>>());
    // A long resume is paged by the server but arrives whole and in order.
    let mut resumer = server.login(&Identity::generate()).await;
    let joined = resumer.join("circle", "Resumer", Some(0)).await;
    assert_eq!(joined.history.len(), 120);
    assert!(joined.history.iter().zip(1..).all(|(e, s)| e.seq == s));
}

#[tokio::test]
async fn a_restart_on_the_same_data_keeps_every_acknowledged_message() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    client.join("circle", "Keeper", None).await;
    let mut sent = Vec::new();
    for i in 1..=10 {
        let env = me.post("circle", &format!("kept {i}"));
        let seq = client.post_env("circle", env.clone()).await;
        sent.push((seq, env));
    }
    drop(client);

    let server = server.restart().await;
    let mut client = server.login(&me).await;
    let joined = client.join("circle", "Keeper", Some(0)).await;
    assert_eq!(joined.head, 10);
    for ((seq, env), event) in sent.iter().zip(&joined.history) {
        assert_eq!(
            (event.seq, &event.env),
            (*seq, &Some(env.clone())),
            "same seq, same signed bytes"
        );
        event.envelope().verify().unwrap();
    }
    // The order continues where it stopped, and spent counters stay spent.
    assert_eq!(client.post("circle", "after restart").await, 11);
    let replayed = ClientFrame::Post {
        id: Some(99),
        group: gid("circle"),
        env: sent[9].1.clone(),
    };
    client
        .expect_error(replayed.to_json(), Some(99), ErrorCode::Replay)
        .await;
}

/// Sends posts one after another until the connection dies; returns what was
/// acknowledged: counter → seq.
async fn post_until_closed(
    mut client: Client,
    who: Identity,
    group: &'static str,
) -> HashMap<u64, u64> {
    let mut acked = HashMap::new();
    for i in 0.. {
        let env = who.post(group, &format!("crash test {i}"));
        let counter = env.payload_as::<PostPayload>().unwrap().counter;
        match client.try_post_env(group, env).await {
            Ok(ServerFrame::Ack {
                seq, counter: c, ..
            }) => {
                assert_eq!(c, counter);
                acked.insert(counter, seq);
            }
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(_) => break,
        }
    }
    acked
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut process = ProcessServer::start(&data, &[]).await;
    let admin = Identity::generate();
    let mut admin_client = Client::connect(process.addr).await;
    admin_client.login(&admin).await;
    let token = process
        .invite_token("first admin (single use, 24 h)")
        .expect("admin link printed");
    assert!(matches!(
        admin_client.redeem(&token).await,
        ServerFrame::Redeemed { .. }
    ));
    assert!(matches!(
        admin_client.create_group("crash", "Crash").await,
        ServerFrame::GroupCreated { .. }
    ));

    let senders: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let mut tasks = Vec::new();
    for (i, who) in senders.iter().enumerate() {
        let mut client = Client::connect(process.addr).await;
        client.login(who).await;
        client.join("crash", &format!("Sender {i}"), None).await;
        tasks.push(tokio::spawn(post_until_closed(
            client,
            who.clone(),
            "crash",
        )));
    }
    // Kill mid-traffic: once the senders are well under way, however slow the
    // machine is (the senders' acks are counted in the store's event log).
    let started = tokio::time::Instant::now();
    let mut watcher = Client::connect(process.addr).await;
    watcher.login(&Identity::generate()).await;
    let joined = watcher.join("crash", "Watcher", Some(u64::MAX)).await;
    let mut seen = joined.head;
    while seen < 30 && started.elapsed() < std::time::Duration::from_secs(30) {
        seen = watcher.next_event("crash").await.seq;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    process.signal("KILL");
    process.wait().await;
    let mut acked = Vec::new();
    for task in tasks {
        acked.push(task.await.unwrap());
    }
    let total: usize = acked.iter().map(HashMap::len).sum();
    assert!(
        total > 10,
        "the test needs traffic before the kill (got {total})"
    );

    let process = ProcessServer::start(&data, &[]).await;
    let mut reader = Client::connect(process.addr).await;
    reader.login(&Identity::generate()).await;
    let joined = reader.join("crash", "Reader", Some(0)).await;
    let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=joined.head).collect::<Vec<_>>(),
        "gap-free after the crash"
    );
    let mut lost = 0;
    for (who, acks) in senders.iter().zip(&acked) {
        for (counter, seq) in acks {
            let found = joined
                .history
                .iter()
                .find(|e| e.seq == *seq)
                .expect("acked seq exists");
            let payload: PostPayload = found.envelope().payload_as().unwrap();
            if found.envelope().key != who.key() || payload.counter != *counter {
                lost += 1;
            }
            found.envelope().verify().unwrap();
        }
    }
    println!(
        "kill -9: acknowledged {total}, recovered {}, lost {lost}",
        joined.head
    );
    assert_eq!(lost, 0);
}
