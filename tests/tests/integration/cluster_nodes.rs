//! Two peerhub nodes on a three-server NATS cluster (docs/CLUSTER.md §3–5): a
//! group's task runs on one node, sessions on the other reach it through NATS,
//! members on both see one gap-free order, and when the node serving the group
//! stops, the other serves it from the log with nothing acknowledged lost and no
//! seq used twice.

use std::time::Duration;

use peerhub_protocol::payload::InviteRole;
use peerhub_protocol::ServerFrame;
use peerhub_tests::nats::NatsCluster;
use peerhub_tests::{CrashableServer as Crashable, Identity, TestServer};

use super::metrics::scrape;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

async fn node(cluster: &NatsCluster, name: &str) -> TestServer {
    let settings = cluster.node_settings(name);
    TestServer::start_with(move |config| config.cluster = Some(settings)).await
}

/// Creates `group` through node `a`'s admin (into the cluster's directory, so
/// every node finds it).
async fn create_group(_cluster: &NatsCluster, a: &mut TestServer, group: &str) {
    a.create_group_with(group, |g| g.waiting_room = Some(false))
        .await;
}

#[tokio::test]
async fn members_on_two_nodes_see_one_gap_free_order() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut on_b = b.login(&sky).await;
        let joined = on_b.join("circle", "Sky", None).await;
        assert_eq!(
            joined.members.len(),
            2,
            "both members listed through node b"
        );

        // Posts from both nodes, each waiting for its ack.
        let mut acked = Vec::new();
        for round in 0..5 {
            acked.push(on_a.post("circle", &format!("a{round}")).await);
            acked.push(on_b.post("circle", &format!("b{round}")).await);
        }
        assert_eq!(acked, (1..=10).collect::<Vec<u64>>(), "acks in order");
        // Each member sees all ten, in one order, gap-free.
        for client in [&mut on_a, &mut on_b] {
            let mut seen = Vec::new();
            while seen.len() < 10 {
                let event = client.next_event("circle").await;
                seen.push((event.seq, event.verified_body()));
            }
            let expected: Vec<(u64, String)> = (0..5)
                .flat_map(|r| [format!("a{r}"), format!("b{r}")])
                .enumerate()
                .map(|(i, body)| (i as u64 + 1, body))
                .collect();
            assert_eq!(seen, expected);
        }
    })
    .await
    .expect("bounded");
}

/// Each node's `/metrics` says its NATS connection is up and whether it leads
/// the escalation router: exactly one of the two does, and when it stops the
/// other takes over and says so. No flag was refused for want of a leader.
#[tokio::test]
async fn each_nodes_metrics_show_nats_and_exactly_one_router_leader() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        let leader = |s: &super::metrics::Scrape| s.get("peerhub_cluster_router_leader", &[]);
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        let (on_a, on_b) = loop {
            let (on_a, on_b) = (scrape(&a).await, scrape(&b).await);
            if leader(&on_a) + leader(&on_b) == 1.0 {
                break (on_a, on_b);
            }
            assert!(tokio::time::Instant::now() < until, "one router leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for scraped in [&on_a, &on_b] {
            assert_eq!(scraped.get("peerhub_cluster_nats_connected", &[]), 1.0);
            assert_eq!(
                scraped.get("peerhub_cluster_flags_not_passed_total", &[]),
                0.0
            );
        }
        // The leader stops; the other node leads and says so.
        let (stays, goes) = if leader(&on_a) == 1.0 { (b, a) } else { (a, b) };
        goes.shutdown().await;
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        while leader(&scrape(&stays).await) != 1.0 {
            assert!(tokio::time::Instant::now() < until, "the other node leads");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("bounded");
}

/// A node stopped while a request waits for a router leader that is gone lets
/// go of its data folder in `shutdown` itself: the store opens at once
/// afterwards. Before, the task forwarding the request held the hub, and so the
/// store's lock, for up to the forward's 20 s after the hub had stopped.
#[tokio::test]
async fn a_stopped_node_lets_go_of_its_data_folder() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        // Node a starts first and leads the router; then it dies.
        let a = crashable(&cluster, "a");
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        while scrape(&a.server)
            .await
            .get("peerhub_cluster_router_leader", &[])
            != 1.0
        {
            assert!(tokio::time::Instant::now() < until, "a leads the router");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let b = node(&cluster, "b").await;
        let sky = Identity::generate();
        let mut on_b = b.login(&sky).await;
        a.crash();
        // A request for the router now waits on b for a leader (the lease has
        // not run out), and b stops meanwhile.
        on_b.send(&peerhub_protocol::ClientFrame::Escalations {
            id: Some(7),
            after: None,
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(on_b);
        let opened = b
            .while_stopped(|dir| peerhub_server::store::Store::open(dir).map(|_| ()))
            .await;
        assert!(opened.is_ok(), "b's folder is free: {opened:?}");
    })
    .await
    .expect("bounded");
}

/// The first joins of a group arrive at once through two nodes: one node takes
/// the group, and the joins through the other wait the moment it takes to start
/// serving instead of being refused. Before, about half of them were refused with
/// "no node serves the group now" (found by the cluster benchmark).
#[tokio::test]
async fn members_joining_a_new_group_at_once_through_two_nodes_all_get_in() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        for round in 0..3 {
            let group = format!("circle{round}");
            create_group(&cluster, &mut a, &group).await;
            let mut clients = Vec::new();
            for i in 0..8 {
                let server = if i % 2 == 0 { &a } else { &b };
                clients.push(server.login(&Identity::generate()).await);
            }
            let names: Vec<String> = (0..8).map(|i| format!("M{i}")).collect();
            let joined = futures_util::future::join_all(
                clients
                    .iter_mut()
                    .zip(&names)
                    .map(|(client, name)| client.join(&group, name, None)),
            )
            .await;
            // `join` fails the test on any answer but `joined`; and every one of
            // them is a member: a ninth, through b, sees all eight.
            drop(joined);
            let mut ninth = b.login(&Identity::generate()).await;
            let seen = ninth.join(&group, "Ninth", None).await;
            assert_eq!(seen.members.len(), 9, "{:?}", seen.members);
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn when_the_serving_node_stops_the_other_serves_the_group_from_the_log() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut on_b = b.login(&sky).await;
        on_b.join("circle", "Sky", None).await;
        for round in 0..3 {
            on_a.post("circle", &format!("a{round}")).await;
            on_b.post("circle", &format!("b{round}")).await;
        }

        // Node a stops: its connections close, and so does Sky's on b, whose
        // group was served there.
        a.shutdown().await;
        let closed = on_b.expect_closed().await;
        drop(closed);

        // Sky comes back on b, which now serves the group from the log.
        let mut again = b.login(&sky).await;
        let joined = again.join("circle", "Sky", None).await;
        assert_eq!(joined.head, 6, "every acknowledged post is there");
        let bodies: Vec<String> = joined.history.iter().map(|e| e.verified_body()).collect();
        assert_eq!(bodies, ["a0", "b0", "a1", "b1", "a2", "b2"]);
        let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=6).collect::<Vec<u64>>());
        // The next post takes the next seq: none is used twice.
        assert_eq!(again.post("circle", "after").await, 7);
        let reply = again
            .recv_matching(|f| matches!(f, ServerFrame::Event { .. }))
            .await
            .expect("the post's event");
        drop(reply);
    })
    .await
    .expect("bounded");
}

/// Starts node `name` on a runtime of its own, to be stopped dead.
fn crashable(cluster: &NatsCluster, name: &str) -> Crashable {
    let settings = cluster.node_settings(name);
    Crashable::start(move |config| config.cluster = Some(settings))
}

/// The frames node `b` receives for its connections, as NATS carries them.
async fn frames_to_nodes(cluster: &NatsCluster) -> async_nats::Subscriber {
    let nats = cluster.connect(1, "test-frames").await;
    let subscriber = nats
        .client()
        .subscribe("peerhub.out.>")
        .await
        .expect("subscribe");
    nats.client().flush().await.expect("flush");
    subscriber
}

#[tokio::test]
async fn a_frame_lost_between_nodes_closes_the_connection_and_it_resumes_whole() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        use futures_util::StreamExt as _;
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut frames = frames_to_nodes(&cluster).await;
        let mut on_b = b.login(&sky).await;
        on_b.join("circle", "Sky", None).await;
        assert_eq!(on_a.post("circle", "one").await, 1);
        assert_eq!(on_b.next_event("circle").await.seq, 1);
        // What the owner sent to Sky's connection: its subject and headers.
        let sent = frames.next().await.expect("a frame to node b");
        let owner = sent
            .headers
            .as_ref()
            .and_then(|h| h.get("Peerhub-Owner"))
            .expect("owner header")
            .to_string();
        // A frame that does not follow on, as if the ones between were lost.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Peerhub-Owner", owner.as_str());
        headers.insert("Peerhub-Frame", "1000");
        let nats = cluster.connect(2, "test-loss").await;
        nats.client()
            .publish_with_headers(sent.subject.clone(), headers, "{}".into())
            .await
            .expect("publish");
        nats.client().flush().await.expect("flush");
        on_b.expect_closed().await;
        // Meanwhile the conversation goes on; Sky resumes after what they had.
        assert_eq!(on_a.post("circle", "two").await, 2);
        let mut again = b.login(&sky).await;
        let joined = again.join("circle", "Sky", Some(1)).await;
        assert_eq!(joined.head, 2);
        let bodies: Vec<String> = joined.history.iter().map(|e| e.verified_body()).collect();
        assert_eq!(bodies, ["two"]);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_node_killed_without_a_word_leaves_the_groups_its_members_were_in() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        create_group(&cluster, &mut a, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.login(&river).await;
        on_a.join("circle", "River", None).await;
        let b = crashable(&cluster, "b");
        let mut on_b = b.server.login(&sky).await;
        on_b.join("circle", "Sky", None).await;
        let online = |on: bool| {
            move |f: &ServerFrame| {
                matches!(f, ServerFrame::Presence { member, .. }
                    if member.name == "Sky" && member.online == on)
            }
        };
        on_a.recv_matching(online(true)).await.expect("Sky arrives");
        b.crash();
        drop(on_b);
        // Node a lets go of Sky's connection once b's presence runs out
        // (its lease TTL, 2 s here, and a sweep every TTL).
        on_a.recv_matching(online(false))
            .await
            .expect("Sky shown gone");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn when_the_serving_node_is_killed_the_other_serves_the_group_and_nothing_acked_is_lost() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = crashable(&cluster, "a");
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a.server, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.server.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut on_b = b.login(&sky).await;
        on_b.join("circle", "Sky", None).await;
        let mut acked = Vec::new();
        for round in 0..4 {
            acked.push(on_a.post("circle", &format!("a{round}")).await);
            acked.push(on_b.post("circle", &format!("b{round}")).await);
        }
        assert_eq!(acked, (1..=8).collect::<Vec<u64>>());
        let killed = std::time::Instant::now();
        a.crash();
        drop(on_a);
        // Sky's connection on b closes once b sees the group's lease run out.
        on_b.expect_closed().await;
        // Both come back on b, which takes the group over from the log.
        let mut sky_again = b.login(&sky).await;
        let joined = sky_again.join("circle", "Sky", None).await;
        let first_ack = sky_again.post("circle", "after").await;
        let failover = killed.elapsed();
        eprintln!("failover (kill to first ack on the other node): {failover:?}");
        assert_eq!(joined.head, 8, "every acknowledged post is there");
        let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
        assert_eq!(first_ack, 9, "no seq used twice");
        let mut river_again = b.login(&river).await;
        let joined = river_again.join("circle", "River", Some(8)).await;
        assert_eq!(joined.head, 9);
        assert_eq!(joined.history[0].verified_body(), "after");
    })
    .await
    .expect("bounded");
}

/// A new staff member of `role` (for `group`), invited by `admin` and logged in
/// on `node` (where the invite is redeemed: invites are the cluster's).
pub(super) async fn staff_on(
    node: &TestServer,
    admin: &mut peerhub_tests::Client,
    role: InviteRole,
    group: Option<&str>,
) -> (Identity, peerhub_tests::Client) {
    let token = admin.invite(role, group).await;
    let who = Identity::generate();
    let mut client = node.login(&who).await;
    let redeemed = client.redeem(&token).await;
    assert!(
        matches!(redeemed, ServerFrame::Redeemed { .. }),
        "{redeemed:?}"
    );
    drop(client);
    // Logged in again: the session now holds the new role.
    (who.clone(), node.login(&who).await)
}

/// `peerhub escalation resolve ID --outcome OUTCOME` on `data`'s running node,
/// which must succeed.
pub(super) async fn operator_resolves(data: &std::path::Path, id: u64, outcome: &str) {
    let out = tokio::process::Command::new(peerhub_tests::process::binary())
        .args(["escalation", "resolve", "--data"])
        .arg(data)
        .arg(id.to_string())
        .args(["--outcome", outcome])
        .output()
        .await
        .expect("run peerhub");
    assert!(out.status.success(), "{out:?}");
}

/// Someone joins `circle` on `node` as River and flags themself as urgent:
/// who, their connection, and the escalation as `sup` sees it open.
pub(super) async fn flagged(
    node: &TestServer,
    sup: &mut peerhub_tests::Client,
) -> (
    Identity,
    peerhub_tests::Client,
    peerhub_protocol::escalation::EscalationSummary,
) {
    use peerhub_protocol::escalation::{EscalationStatus, Severity};
    let who = Identity::generate();
    let mut client = node.login(&who).await;
    client.join("circle", "River", None).await;
    let reply = client
        .flag_with("circle", who.key(), Severity::Urgent, |_| {})
        .await;
    assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
    let open = escalation_where(sup, |e| {
        e.about == who.key() && e.status == EscalationStatus::Open
    })
    .await;
    (who, client, open)
}

/// The escalation summaries a staff connection is pushed or lists, until one
/// that `want` accepts.
pub(super) async fn escalation_where(
    client: &mut peerhub_tests::Client,
    want: impl Fn(&peerhub_protocol::escalation::EscalationSummary) -> bool,
) -> peerhub_protocol::escalation::EscalationSummary {
    let frame = client
        .recv_matching(|f| match f {
            ServerFrame::Escalation { escalation } => want(escalation),
            ServerFrame::Escalations { escalations, .. } => escalations.iter().any(&want),
            _ => false,
        })
        .await
        .expect("an escalation");
    match frame {
        ServerFrame::Escalation { escalation } => escalation,
        ServerFrame::Escalations { escalations, .. } => {
            escalations.into_iter().find(|e| want(e)).expect("matched")
        }
        _ => unreachable!(),
    }
}

/// The router runs on one node; a flag raised through the other reaches it and
/// the supervisor connected to the other; when the router's node is killed, the
/// other node leads, finds the open escalation in the router's log and enforces
/// its deadline (it moves on a level), and the supervisor still sees it.
#[tokio::test]
async fn a_flag_through_any_node_is_routed_and_the_next_leader_enforces_its_deadline() {
    use peerhub_protocol::escalation::{EscalationStatus, Severity};
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        // Node a starts first and leads the router.
        let deadline = Duration::from_secs(3);
        let settings_a = cluster.node_settings("a");
        let mut a = Crashable::start(move |config| {
            config.cluster = Some(settings_a);
            config.escalation.urgent_deadline = deadline;
        });
        let settings_b = cluster.node_settings("b");
        let b = TestServer::start_with(move |config| {
            config.cluster = Some(settings_b);
            config.escalation.urgent_deadline = deadline;
        })
        .await;
        create_group(&cluster, &mut a.server, "circle").await;
        let mut admin = a.server.admin().await;
        // The supervisor and the person asking for help are both on node b.
        let (_, mut sup) = staff_on(&b, &mut admin, InviteRole::Supervisor, None).await;
        let river = Identity::generate();
        let mut on_b = b.login(&river).await;
        on_b.join("circle", "River", None).await;
        let reply = on_b
            .flag_with("circle", river.key(), Severity::Urgent, |_| {})
            .await;
        assert!(
            matches!(&reply, ServerFrame::Flagged { helplines, .. } if !helplines.is_empty()),
            "the flag is taken by the router on node a: {reply:?}"
        );
        let open = escalation_where(&mut sup, |e| {
            e.about == river.key() && e.status == EscalationStatus::Open
        })
        .await;
        // One router for the cluster: the admin connected to node a sees the
        // same escalation (with a router per node it would not be there).
        let on_a = escalation_where(&mut admin, |e| e.about == river.key()).await;
        assert_eq!(on_a.id, open.id);
        // Nobody is on call (no rota): it waits for every supervisor (level 3);
        // its deadline moves it on to level 4 unless someone takes it.
        assert_eq!(open.level, 3);

        // The router's node dies before the deadline; b takes the router over
        // from its log and enforces it.
        a.crash();
        let moved =
            escalation_where(&mut sup, |e| e.about == river.key() && e.level > open.level).await;
        assert_eq!(moved.id, open.id, "the same escalation, not a new one");
        assert_eq!(moved.status, EscalationStatus::Open);
    })
    .await
    .expect("bounded");
}

/// A supervisor subscribes to Web Push through node b; the router leads on
/// node a, whose alerts send the push: the subscription reached it through the
/// directory, and the push is signed with the VAPID key node b gave the phone
/// (one key for the cluster).
#[tokio::test]
async fn a_push_subscription_made_through_one_node_is_sent_to_by_the_router_on_another() {
    use peerhub_protocol::escalation::Severity;
    use peerhub_tests::webpush::{check_vapid, PushSubscriber};
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut service = peerhub_tests::HttpReceiver::start(|_, _| 201).await;
        let with_push = |name: &str| {
            let settings = cluster.node_settings(name);
            move |config: &mut peerhub_server::config::Config| {
                config.cluster = Some(settings);
                config.escalation.push_contact = "mailto:oncall@example.org".into();
            }
        };
        let mut a = TestServer::start_with(with_push("a")).await;
        let b = TestServer::start_with(with_push("b")).await;
        create_group(&cluster, &mut a, "circle").await;
        let mut admin = a.admin().await;
        let (_, mut sup) = staff_on(&b, &mut admin, InviteRole::Supervisor, None).await;
        let vapid = super::alerting::vapid_key(&mut sup).await;
        assert_eq!(
            vapid,
            super::alerting::vapid_key(&mut admin).await,
            "one VAPID key for the cluster"
        );
        let subscriber = PushSubscriber::generate();
        let endpoint = format!("{}/push/sup-phone", service.base);
        let reply = super::alerting::subscribe(&mut sup, &endpoint, &subscriber).await;
        assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");

        let river = Identity::generate();
        let mut on_b = b.login(&river).await;
        on_b.join("circle", "River", None).await;
        let reply = on_b
            .flag_with("circle", river.key(), Severity::Emergency, |_| {})
            .await;
        assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
        let push = service.next(20).await;
        assert_eq!(push.target, "/push/sup-phone");
        check_vapid(push.header("authorization").expect("VAPID"), &vapid)
            .expect("signed with the key the phone was given");
        subscriber.decrypt(&push.body).expect("the push decrypts");
    })
    .await
    .expect("bounded");
}

/// A supervisor connected to node b writes on an escalation's private line to
/// a person in a group served by node a, where the router leads too: the grant
/// comes from the router's node, the post goes to the group's node, and the
/// person reads it and answers.
#[tokio::test]
async fn a_supervisor_on_another_node_writes_on_the_line_and_the_person_answers() {
    use peerhub_protocol::frame::Channel;
    use peerhub_protocol::payload::PostPayload;
    use peerhub_tests::identity::gid;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let mut admin = a.admin().await;
        let (sup_id, mut sup) = staff_on(&b, &mut admin, InviteRole::Supervisor, None).await;
        let (river, mut on_a, open) = flagged(&a, &mut sup).await;
        let id = open.id.expect("supervisors see ids");
        let pair = Channel::pair(sup_id.key(), river.key());
        let post = |who: &Identity, to, body: &str| {
            who.signed(peerhub_protocol::envelope::Kind::Post, |counter, ts| {
                PostPayload {
                    group: gid("circle"),
                    body: body.into(),
                    to: Some(to),
                    counter,
                    ts,
                }
            })
        };
        let reply = sup
            .try_line_post(
                "circle",
                id,
                post(&sup_id, river.key(), "Hi River, I'm here."),
            )
            .await
            .expect("open");
        let ServerFrame::Ack { channel, seq, .. } = reply else {
            panic!("the line post is acked: {reply:?}")
        };
        assert_eq!(channel, pair);
        let event = on_a.next_event_in("circle", pair).await;
        assert_eq!(event.seq, seq);
        assert_eq!(event.envelope().key, sup_id.key());
        // River answers on the line; it reaches the supervisor on node b.
        let seq = on_a
            .post_env("circle", post(&river, sup_id.key(), "Thank you."))
            .await;
        let own = sup.next_event_in("circle", pair).await;
        assert_eq!(
            own.envelope().key,
            sup_id.key(),
            "the line echoes the writer's post"
        );
        let answer = sup.next_event_in("circle", pair).await;
        assert_eq!((answer.seq, answer.envelope().key), (seq, river.key()));
    })
    .await
    .expect("bounded");
}

/// The router's note to a group's facilitators that someone asked for support
/// reaches them when the group is served by another node than the router's.
#[tokio::test]
async fn the_support_asked_note_reaches_facilitators_of_a_group_served_elsewhere() {
    use peerhub_protocol::escalation::Severity;
    use peerhub_protocol::frame::{Channel, Note};
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let mut admin = a.admin().await;
        // Jo joins first, on node b: b serves the group; a leads the router.
        let (_, mut fac) = staff_on(&b, &mut admin, InviteRole::Facilitator, Some("circle")).await;
        fac.join("circle", "Jo", None).await;
        let river = Identity::generate();
        let mut on_b = b.login(&river).await;
        on_b.join("circle", "River", None).await;
        let reply = on_b
            .flag_with("circle", river.key(), Severity::Urgent, |_| {})
            .await;
        assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
        let frame = fac
            .recv_matching(|f| {
                matches!(f, ServerFrame::Event { channel: Channel::Staff, note: Some(Note::SupportAsked { member, .. }), .. }
                    if *member == river.key())
            })
            .await
            .expect("the facilitator is told");
        drop(frame);
    })
    .await
    .expect("bounded");
}

/// Joins `group` on `server` as `who`, after `after`, trying again while the
/// group has no live owner (a killed node's lease running out).
async fn join_when_served(
    server: &TestServer,
    who: &Identity,
    name: &str,
    after: Option<u64>,
) -> (peerhub_tests::Client, peerhub_tests::client::Joined) {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut client = server.login(who).await;
        let reply = client.try_join("circle", name, None).await;
        // try_join sends no `after`; join properly once the group answers.
        if matches!(reply, ServerFrame::Joined { .. }) {
            drop(client);
            let mut client = server.login(who).await;
            let env = who.join("circle", name);
            let reply = client
                .request(|id| peerhub_protocol::ClientFrame::Join {
                    id,
                    group: peerhub_tests::identity::gid("circle"),
                    after,
                    access_code: None,
                    env,
                })
                .await;
            if matches!(reply, ServerFrame::Joined { .. }) {
                let joined = client.joined_reply("circle", after, reply).await;
                return (client, joined);
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the group is served again within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Twenty kill -9 cycles across two nodes (each killed node replaced by a
/// new one) under steady posts and flags: every acknowledged post is in the
/// group's history exactly once, in one gap-free order, and every acknowledged
/// flag is counted in the escalation about its person — lost 0.
#[tokio::test]
async fn a_crash_loop_across_nodes_loses_no_acknowledged_post_or_flag() {
    use peerhub_protocol::escalation::Severity;
    const CYCLES: usize = 20;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut nodes = [
            Some(crashable(&cluster, "a")),
            Some(crashable(&cluster, "b")),
        ];
        let mut first = nodes[0].take().expect("a");
        create_group(&cluster, &mut first.server, "circle").await;
        let admin = first.server.admin().await;
        let admin_id = admin.identity.clone().expect("admin");
        drop(admin);
        nodes[0] = Some(first);
        let river = Identity::generate();
        let mut acked: Vec<(u64, String)> = Vec::new();
        let mut flags_acked = 0u32;
        let mut flags_sent = 0u32;
        let mut failovers = Vec::new();
        for cycle in 0..CYCLES {
            let (here, there) = (cycle % 2, 1 - cycle % 2);
            let server = &nodes[here].as_ref().expect("running").server;
            let after = acked.last().map(|(seq, _)| *seq);
            let started = std::time::Instant::now();
            let (client, joined) = join_when_served(server, &river, "River", after).await;
            let mut client = client;
            // Everything acknowledged before is there, and nothing else.
            let mut seen = joined.history.iter().map(|e| e.seq);
            assert!(seen.all(|seq| Some(seq) > after), "history after {after:?}");
            let head_before = joined.head;
            for n in 0..3 {
                let body = format!("c{cycle}-{n}");
                let mut tries = 0;
                loop {
                    let env = river.post("circle", &body);
                    match client.try_post_env("circle", env).await {
                        Ok(ServerFrame::Ack { seq, .. }) => {
                            acked.push((seq, body));
                            break;
                        }
                        // Not acknowledged, so not owed: join again (the group
                        // may be moving) and send it again, as a client does.
                        other => {
                            tries += 1;
                            assert!(tries < 20, "cycle {cycle}: {other:?}");
                            eprintln!("cycle {cycle}: a post not acknowledged ({other:?}); again");
                            let after = acked.last().map(|(seq, _)| *seq);
                            client = join_when_served(server, &river, "River", after).await.0;
                        }
                    }
                }
            }
            if cycle > 0 {
                failovers.push(started.elapsed());
            }
            assert!(acked.last().expect("acked").0 > head_before);
            flags_sent += 1;
            let reply = client
                .flag_with("circle", river.key(), Severity::Concern, |_| {})
                .await;
            if matches!(reply, ServerFrame::Flagged { .. }) {
                flags_acked += 1;
            }
            drop(client);
            // kill -9 of the other node, and a new node in its place.
            nodes[there].take().expect("running").crash();
            let name = if there == 0 { "a" } else { "b" };
            nodes[there] = Some(crashable(&cluster, name));
        }
        // Everything acknowledged, once, in one gap-free order.
        let server = &nodes[0].as_ref().expect("running").server;
        let (client, joined) = join_when_served(server, &river, "River", Some(0)).await;
        let history: Vec<(u64, String)> = joined
            .history
            .iter()
            .map(|e| (e.seq, e.verified_body()))
            .collect();
        let head = joined.head;
        assert_eq!(head, acked.last().expect("acked").0);
        let seqs: Vec<u64> = history.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (head - seqs.len() as u64 + 1..=head).collect::<Vec<_>>());
        for (seq, body) in &acked {
            assert!(
                history.iter().any(|(s, b)| s == seq && b == body),
                "acknowledged post {seq} {body:?} is in the history"
            );
        }
        drop(client);
        // Every acknowledged flag is counted on the escalation about River.
        let mut admin = server.login(&admin_id).await;
        let reply = admin
            .request(|id| peerhub_protocol::ClientFrame::Escalations { id, after: None })
            .await;
        let ServerFrame::Escalations { escalations, .. } = reply else {
            panic!("{reply:?}")
        };
        let about: Vec<_> = escalations.iter().filter(|e| e.about == river.key()).collect();
        let counted: u32 = about.iter().map(|e| 1 + e.counts.merged).sum();
        assert!(
            counted >= flags_acked && counted <= flags_sent,
            "flags: {flags_acked} acknowledged, {flags_sent} sent, {counted} counted"
        );
        failovers.sort();
        eprintln!(
            "crash loop: {CYCLES} kills, {} posts and {flags_acked}/{flags_sent} flags acknowledged, \
             lost 0; join-to-ack after a kill p50 {:?}, max {:?}",
            acked.len(),
            failovers[failovers.len() / 2],
            failovers[failovers.len() - 1]
        );
        for node in nodes.into_iter().flatten() {
            node.crash();
        }
    })
    .await
    .expect("bounded");
}

/// A member on node a leaves the group served by node b and joins it again on
/// the same connection: the leave closes nothing, and the frames of the new
/// proxy (numbered from 1 again) are taken as they come, not as a loss.
#[tokio::test]
async fn leaving_and_joining_again_across_nodes_keeps_the_connection_and_its_frames() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        // River joins first on node b, which serves the group; node a leads
        // the router, so Sky's connection on a has one proxy on b: the group's.
        let mut river_on_b = b.login(&river).await;
        river_on_b.join("circle", "River", None).await;
        let mut sky_on_a = a.login(&sky).await;
        sky_on_a.join("circle", "Sky", None).await;
        assert_eq!(river_on_b.post("circle", "one").await, 1);
        assert_eq!(sky_on_a.next_event("circle").await.seq, 1);
        let left = sky_on_a
            .request(|id| peerhub_protocol::ClientFrame::Leave {
                id,
                group: peerhub_tests::identity::gid("circle"),
            })
            .await;
        assert!(matches!(left, ServerFrame::Left { .. }), "{left:?}");
        assert_eq!(river_on_b.post("circle", "two").await, 2);
        let joined = sky_on_a.join("circle", "Sky", Some(1)).await;
        assert_eq!(joined.head, 2);
        assert_eq!(river_on_b.post("circle", "three").await, 3);
        let event = sky_on_a.next_event("circle").await;
        assert_eq!((event.seq, event.verified_body()), (3, "three".to_string()));
    })
    .await
    .expect("bounded");
}

/// An operator resolves an escalation with `peerhub escalation resolve` on a
/// node that does not lead the router: the command reaches the leader, and the
/// supervisor on the other node sees it resolved.
#[tokio::test]
async fn an_operator_resolves_an_escalation_through_a_node_that_does_not_lead() {
    use peerhub_protocol::escalation::EscalationStatus;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let mut admin = a.admin().await;
        let (_, mut sup) = staff_on(&a, &mut admin, InviteRole::Supervisor, None).await;
        let (_, _on_b, open) = flagged(&b, &mut sup).await;
        let id = open.id.expect("staff see ids");
        operator_resolves(b.data_dir(), id, "closed by the operator").await;
        let resolved = escalation_where(&mut sup, |e| {
            e.id == Some(id) && e.status == EscalationStatus::Resolved
        })
        .await;
        assert_eq!(resolved.outcome.as_deref(), Some("closed by the operator"));
    })
    .await
    .expect("bounded");
}

/// An operator clears a waiting room with `peerhub group clear-waiting` on a
/// node that does not serve the group: the group's node clears it, and the
/// person waiting there is told.
#[tokio::test]
async fn an_operator_clears_a_waiting_room_through_a_node_that_does_not_serve_it() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        a.create_group_with("drop-in", |g| g.waiting_room = Some(true))
            .await;
        let sam = Identity::generate();
        let mut on_a = a.login(&sam).await;
        let reply = on_a.try_join("drop-in", "Sam", None).await;
        assert!(matches!(reply, ServerFrame::Joined { .. }), "{reply:?}");
        let data = b.data_dir().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(peerhub_tests::process::binary())
                .args(["group", "clear-waiting", "--data"])
                .arg(&data)
                .arg("drop-in")
                .output()
                .expect("run peerhub")
        })
        .await
        .expect("joined");
        assert!(out.status.success(), "{out:?}");
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(printed["cleared"], 1, "{printed}");
        let told = on_a
            .recv_matching(|f| {
                matches!(f, ServerFrame::Dismissed { reason, .. } if reason == "waiting_cleared")
            })
            .await;
        assert!(told.is_ok(), "Sam is told");
    })
    .await
    .expect("bounded");
}

/// Posts through two nodes while the NATS server leading the group logs'
/// stream is killed: a post may go unacknowledged during the election (it is
/// sent again after joining again, as a client does), but every acknowledged
/// post is in the history, once, in one gap-free order.
#[tokio::test]
async fn a_nats_server_killed_under_traffic_loses_no_acknowledged_post() {
    let Some(mut cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let (mut on_a, _) = join_when_served(&a, &river, "River", None).await;
        let (mut on_b, _) = join_when_served(&b, &sky, "Sky", None).await;
        let mut acked: Vec<(u64, String)> = Vec::new();
        let leader = cluster.stream_leader("PEERHUB_LOG").await;
        for n in 0..30 {
            if n == 10 {
                cluster.kill(&leader).await;
            }
            let (server, who, name, client) = if n % 2 == 0 {
                (&a, &river, "River", &mut on_a)
            } else {
                (&b, &sky, "Sky", &mut on_b)
            };
            let body = format!("p{n}");
            let mut tries = 0;
            loop {
                match client
                    .try_post_env("circle", who.post("circle", &body))
                    .await
                {
                    Ok(ServerFrame::Ack { seq, .. }) => {
                        acked.push((seq, body));
                        break;
                    }
                    other => {
                        tries += 1;
                        assert!(tries < 20, "post {n}: {other:?}");
                        let after = acked.last().map(|(seq, _)| *seq);
                        *client = join_when_served(server, who, name, after).await.0;
                    }
                }
            }
        }
        let (_, joined) = join_when_served(&b, &sky, "Sky", Some(0)).await;
        let history: Vec<(u64, String)> = joined
            .history
            .iter()
            .map(|e| (e.seq, e.verified_body()))
            .collect();
        let seqs: Vec<u64> = history.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=joined.head).collect::<Vec<_>>(),
            "one gap-free order"
        );
        for (seq, body) in &acked {
            assert!(
                history.iter().any(|(s, b)| s == seq && b == body),
                "acknowledged post {seq} {body:?} is in the history"
            );
        }
    })
    .await
    .expect("bounded");
}
