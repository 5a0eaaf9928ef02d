//! A group conversation: join, presence, post, ack, fan-out, order.

use std::collections::HashSet;

use peerhub_protocol::ServerFrame;
use peerhub_tests::{Identity, TestServer};

#[tokio::test]
async fn a_post_is_acknowledged_and_reaches_every_member_verifiably() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let people: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let mut clients = Vec::new();
    for (i, person) in people.iter().enumerate() {
        let mut client = server.login(person).await;
        let joined = client.join("circle", &format!("Person {i}"), None).await;
        assert_eq!(joined.head, 0);
        assert_eq!(joined.members.len(), i + 1, "members so far");
        clients.push(client);
    }
    let seq = clients[0].post("circle", "hello, everyone").await;
    assert_eq!(seq, 1);
    for client in &mut clients {
        let event = client.next_event("circle").await;
        assert_eq!(event.seq, 1);
        assert_eq!(event.envelope().key, people[0].key());
        assert_eq!(event.verified_body(), "hello, everyone");
    }
}

#[tokio::test]
async fn members_see_each_other_arrive_and_leave() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut first = server.login(&a).await;
    first.join("circle", "River", None).await;
    let mut second = server.login(&b).await;
    let joined = second.join("circle", "Sky", None).await;
    let river = joined
        .members
        .iter()
        .find(|m| m.key == a.key())
        .expect("River listed");
    assert!(river.online);
    assert_eq!(river.name, "River");
    river
        .join
        .verify()
        .expect("the listed name is signed by its owner");

    let frame = first
        .recv_matching(|f| matches!(f, ServerFrame::Presence { .. }))
        .await
        .unwrap();
    let ServerFrame::Presence { member, .. } = frame else {
        unreachable!()
    };
    assert_eq!(
        (member.key, member.name.as_str(), member.online),
        (b.key(), "Sky", true)
    );

    drop(second);
    let frame = first
        .recv_matching(|f| matches!(f, ServerFrame::Presence { .. }))
        .await
        .unwrap();
    let ServerFrame::Presence { member, .. } = frame else {
        unreachable!()
    };
    assert_eq!((member.key, member.online), (b.key(), false));
}

#[tokio::test]
async fn concurrent_senders_get_one_gap_free_order_seen_identically_by_all() {
    const SENDERS: usize = 4;
    const EACH: usize = 40;
    let mut server = TestServer::start().await;
    server.create_group("busy").await;
    let mut watcher = server.login(&Identity::generate()).await;
    watcher.join("busy", "Watcher", None).await;
    // Everyone joins before anyone sends, so every event arrives live.
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let mut client = server.login(&Identity::generate()).await;
        client.join("busy", &format!("Sender {s}"), None).await;
        senders.push(client);
    }
    let mut tasks = Vec::new();
    for (s, mut client) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for m in 0..EACH {
                seqs.push(client.post("busy", &format!("{s}:{m}")).await);
            }
            let mut seen = Vec::new();
            for _ in 0..SENDERS * EACH {
                let event = client.next_event("busy").await;
                seen.push((event.seq, event.verified_body()));
            }
            (seqs, seen)
        }));
    }
    let mut acked = HashSet::new();
    let mut views = Vec::new();
    for task in tasks {
        let (seqs, seen) = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's acks rise"
        );
        for seq in seqs {
            assert!(acked.insert(seq), "seq {seq} acknowledged twice");
        }
        views.push(seen);
    }
    let total = (SENDERS * EACH) as u64;
    assert_eq!(
        acked,
        (1..=total).collect::<HashSet<_>>(),
        "gap-free seqs 1..={total}"
    );
    let mut watched = Vec::new();
    for _ in 0..total {
        let event = watcher.next_event("busy").await;
        watched.push((event.seq, event.verified_body()));
    }
    assert_eq!(
        watched.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "delivered in seq order"
    );
    for view in views {
        assert_eq!(view, watched, "every member sees the same order");
    }
    // Each sender's own messages keep their sending order within the group order.
    for s in 0..SENDERS {
        let mine: Vec<usize> = watched
            .iter()
            .filter_map(|(_, body)| {
                body.strip_prefix(&format!("{s}:"))
                    .map(|m| m.parse().unwrap())
            })
            .collect();
        assert_eq!(mine, (0..EACH).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_member_that_left_hears_nothing_more() {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let mut stays = server.login(&Identity::generate()).await;
    stays.join("circle", "Stays", None).await;
    let mut leaves = server.login(&Identity::generate()).await;
    leaves.join("circle", "Leaves", None).await;
    let reply = leaves
        .request(|id| peerhub_protocol::ClientFrame::Leave {
            id,
            group: peerhub_tests::identity::gid("circle"),
        })
        .await;
    assert!(matches!(reply, ServerFrame::Left { .. }), "{reply:?}");
    stays.post("circle", "after you left").await;
    leaves.assert_no_events(300).await;
}
