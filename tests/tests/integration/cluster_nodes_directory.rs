//! Cluster mode's directory writes through real hubs (docs/CLUSTER.md §4, §7 B):
//! two in-process peerhub nodes on one three-server nats-server cluster, driven
//! over real sockets. What one node decides — an invite made or redeemed, a
//! replay counter, a facilitator grant, a group, the first-admin link, an access
//! code — holds on the other; what two nodes race for is decided once; and a
//! request the directory cannot answer is refused as retryable, changing nothing.
//! Operator commands sent to a running node's control socket do the same.
//!
//! A node sees another node's write through its directory mirror, a matter of
//! milliseconds: checks of that poll, within [`SEEN`] (the mirror makes its
//! consumer again after 5 s of silence behind the bucket, so a slow one is still
//! seen well within it).

use std::time::Duration;

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::{CreateGroupPayload, GroupKind, InvitePayload, InviteRole};
use peerhub_protocol::{ClientFrame, ErrorCode, GroupId, ServerFrame};
use peerhub_server::admin::ops::AdminRequest;
use peerhub_server::transport::control;
use peerhub_tests::identity::gid;
use peerhub_tests::nats::NatsCluster;
use peerhub_tests::{Client, Identity, TestServer};

/// The bound on each test, the NATS cluster's start included.
const BOUND: Duration = Duration::from_secs(60);

/// How long a node may take to see another node's write (see the module).
const SEEN: Duration = Duration::from_secs(20);

/// A peerhub node of `cluster` named `name`.
async fn node(cluster: &NatsCluster, name: &str) -> TestServer {
    let settings = cluster.node_settings(name);
    TestServer::start_with(|config| {
        config.cluster = Some(settings);
        config.escalation.helplines = local_helplines();
    })
    .await
}

/// The helplines the nodes are configured with (not the built-in defaults, so
/// a refusal that carried those instead is caught).
fn local_helplines() -> Vec<peerhub_protocol::escalation::Helpline> {
    vec![peerhub_protocol::escalation::Helpline {
        name: "Local crisis line".into(),
        contact: "0100 000 000".into(),
        hours: "24 hours".into(),
        nation: "Test".into(),
        emergency: false,
    }]
}

/// Waits until `check` holds, within [`SEEN`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SEEN;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not seen within {SEEN:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `server`'s store gives `key` the admin role.
async fn until_admin(server: &TestServer, key: peerhub_protocol::PublicKey) {
    until("the admin's role on the other node", || {
        server
            .hub()
            .store
            .roles(&key)
            .is_ok_and(|roles| roles.contains(&Role::Admin))
    })
    .await;
}

#[track_caller]
fn assert_code(frame: &ServerFrame, code: ErrorCode) {
    match frame {
        ServerFrame::Error { code: got, .. } => assert_eq!(*got, code, "{frame:?}"),
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// An `invite` envelope for a supervisor, with the signer's next counter.
fn supervisor_invite(me: &Identity) -> peerhub_protocol::SignedEnvelope {
    me.signed(Kind::Invite, |counter, ts| InvitePayload {
        role: InviteRole::Supervisor,
        group: None,
        groups: Vec::new(),
        ttl_ms: None,
        counter,
        ts,
    })
}

/// Node A (with the admin, who redeemed A's first-admin link) and node B, and
/// the admin's clients on both.
async fn two_nodes(cluster: &NatsCluster) -> (TestServer, TestServer, Identity, Client, Client) {
    let mut a = node(cluster, "a").await;
    let b = node(cluster, "b").await;
    let admin_a = a.admin().await;
    let me = admin_a.identity.clone().expect("admin identity");
    until_admin(&b, me.key()).await;
    let admin_b = b.login(&me).await;
    (a, b, me, admin_a, admin_b)
}

/// An invite made on node A is redeemed on node B; another, redeemed on A and B
/// at once by two keys, goes to exactly one of them (the other is told it was
/// used, as a second redeem is on one node), and the winner asking again gets
/// the same answer. Fails if invites stayed in A's store (B finds no such
/// invite) or a redeem were a plain write (both keys win).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_made_on_one_node_is_redeemed_on_another_and_raced_once() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let (a, b, _me, mut admin_a, _admin_b) = two_nodes(&cluster).await;

        let token = admin_a.invite(InviteRole::Supervisor, None).await;
        let carer = Identity::generate();
        let mut on_b = b.login(&carer).await;
        match on_b.redeem(&token).await {
            ServerFrame::Redeemed { roles, .. } => assert_eq!(roles, vec![Role::Supervisor]),
            other => panic!("redeem on the other node: {other:?}"),
        }

        let token = admin_a.invite(InviteRole::Supervisor, None).await;
        let (x, y) = (Identity::generate(), Identity::generate());
        let mut x_on_a = a.login(&x).await;
        let mut y_on_b = b.login(&y).await;
        let (on_a, on_b) = tokio::join!(x_on_a.redeem(&token), y_on_b.redeem(&token));
        let won: Vec<bool> = [&on_a, &on_b]
            .iter()
            .map(|frame| match frame {
                ServerFrame::Redeemed { .. } => true,
                ServerFrame::Error {
                    code: ErrorCode::BadToken,
                    message,
                    ..
                } => {
                    assert!(message.contains("already been used"), "{message}");
                    false
                }
                other => panic!("a raced redeem: {other:?}"),
            })
            .collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{on_a:?} / {on_b:?}");
        let again = if won[0] {
            x_on_a.redeem(&token).await
        } else {
            y_on_b.redeem(&token).await
        };
        assert!(matches!(again, ServerFrame::Redeemed { .. }), "{again:?}");
    })
    .await
    .expect("within the bound");
}

/// A key logged in on both nodes: a signed request accepted on A, sent again to
/// B, is refused there as a replay; the same new request sent to both at once
/// is accepted once; a fresh counter on B is accepted. Fails if B checked the
/// counter only against its own store (the replay is accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_accepted_on_one_node_is_a_replay_on_another() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let (_a, _b, me, mut admin_a, mut admin_b) = two_nodes(&cluster).await;

        let env = supervisor_invite(&me);
        let first = admin_a
            .request(|id| ClientFrame::Invite {
                id,
                env: env.clone(),
            })
            .await;
        assert!(matches!(first, ServerFrame::Invited { .. }), "{first:?}");
        let replayed = admin_b.request(|id| ClientFrame::Invite { id, env }).await;
        assert_code(&replayed, ErrorCode::Replay);

        let env = supervisor_invite(&me);
        let (on_a, on_b) = tokio::join!(
            admin_a.request(|id| ClientFrame::Invite {
                id,
                env: env.clone()
            }),
            admin_b.request(|id| ClientFrame::Invite {
                id,
                env: env.clone()
            })
        );
        let accepted = [&on_a, &on_b]
            .iter()
            .filter(|frame| matches!(frame, ServerFrame::Invited { .. }))
            .count();
        assert_eq!(accepted, 1, "{on_a:?} / {on_b:?}");
        for frame in [&on_a, &on_b] {
            if !matches!(frame, ServerFrame::Invited { .. }) {
                assert_code(frame, ErrorCode::Replay);
            }
        }

        let fresh = admin_b
            .request(|id| ClientFrame::Invite {
                id,
                env: supervisor_invite(&me),
            })
            .await;
        assert!(matches!(fresh, ServerFrame::Invited { .. }), "{fresh:?}");
    })
    .await
    .expect("within the bound");
}

/// A facilitator grant an admin makes on A is in force on B — the facilitator,
/// logged in on B, makes a member invite to the group — and a revoke on A
/// takes it away on B. Fails if the grant stayed in A's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_grant_made_on_one_node_is_in_force_on_another() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let (_a, b, me, mut admin_a, _admin_b) = two_nodes(&cluster).await;
        let env = me.create_group("circle", "Circle", GroupKind::Virtual);
        let created = admin_a
            .request(|id| ClientFrame::CreateGroup {
                id,
                access_code: None,
                env,
            })
            .await;
        assert!(
            matches!(created, ServerFrame::GroupCreated { .. }),
            "{created:?}"
        );
        let facilitator = Identity::generate();
        let granted = admin_a.grant(facilitator.key(), "circle", false).await;
        assert!(matches!(granted, ServerFrame::Ok { .. }), "{granted:?}");
        let circle = gid("circle");
        until("the grant on node B", || {
            b.hub()
                .store
                .facilitates(&facilitator.key(), &circle)
                .unwrap_or(false)
        })
        .await;
        let mut on_b = b.login(&facilitator).await;
        on_b.invite(InviteRole::Member, Some("circle")).await;

        let revoked = admin_a.grant(facilitator.key(), "circle", true).await;
        assert!(matches!(revoked, ServerFrame::Ok { .. }), "{revoked:?}");
        until("the revoke on node B", || {
            !b.hub()
                .store
                .facilitates(&facilitator.key(), &circle)
                .unwrap_or(true)
        })
        .await;
        let env = facilitator.signed(Kind::Invite, |counter, ts| InvitePayload {
            role: InviteRole::Member,
            group: Some(circle.clone()),
            groups: Vec::new(),
            ttl_ms: None,
            counter,
            ts,
        });
        let refused = on_b.request(|id| ClientFrame::Invite { id, env }).await;
        assert_code(&refused, ErrorCode::Forbidden);
    })
    .await
    .expect("within the bound");
}

/// A group created on A is known on B (B's admin names it in a facilitator
/// invite, which checks it exists); one id created on A and B at once is
/// created once, the other node answering as to a duplicate. Fails if the
/// creation were local (B does not know the group; both create it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_created_on_one_node_is_known_on_another_and_raced_once() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let (_a, b, me, mut admin_a, mut admin_b) = two_nodes(&cluster).await;
        let created = admin_a.create_group("circle", "Circle").await;
        assert!(
            matches!(created, ServerFrame::GroupCreated { .. }),
            "{created:?}"
        );
        until("the group on node B", || {
            b.hub()
                .store
                .groups()
                .is_ok_and(|groups| groups.iter().any(|g| g.id.as_str() == "circle"))
        })
        .await;
        let env = me.signed(Kind::Invite, |counter, ts| InvitePayload {
            role: InviteRole::Facilitator,
            group: None,
            groups: vec![gid("circle")],
            ttl_ms: None,
            counter,
            ts,
        });
        let invited = admin_b.request(|id| ClientFrame::Invite { id, env }).await;
        assert!(
            matches!(invited, ServerFrame::Invited { .. }),
            "{invited:?}"
        );

        // A second admin for node B: one key's requests sent to two nodes at
        // once can arrive with their counters out of order, and the lower one is
        // then a replay (the counter is global), which is not what this races.
        let token = admin_a.invite(InviteRole::Admin, None).await;
        let second = Identity::generate();
        let mut second_on_b = b.login(&second).await;
        let redeemed = second_on_b.redeem(&token).await;
        assert!(
            matches!(redeemed, ServerFrame::Redeemed { .. }),
            "{redeemed:?}"
        );
        let (on_a, on_b) = tokio::join!(
            admin_a.create_group("raced", "Raced"),
            second_on_b.create_group("raced", "Raced")
        );
        let created = [&on_a, &on_b]
            .iter()
            .filter(|frame| matches!(frame, ServerFrame::GroupCreated { .. }))
            .count();
        assert_eq!(created, 1, "{on_a:?} / {on_b:?}");
        for frame in [&on_a, &on_b] {
            if !matches!(frame, ServerFrame::GroupCreated { .. }) {
                assert_code(frame, ErrorCode::AlreadyExists);
            }
        }
    })
    .await
    .expect("within the bound");
}

/// Two nodes started at once with `--demo`: one first-admin link between them
/// (the other prints none while it is unused), and it redeems on the node that
/// did not print it; one demo group. A node started after an admin exists
/// prints none either. Fails if each node made its own link (two admin links
/// live at once) or removed the other's at start (the printed link is dead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_first_admin_link_per_cluster_and_it_works_on_every_node() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let (sa, sb) = (cluster.node_settings("a"), cluster.node_settings("b"));
        let (a, b) = tokio::join!(
            TestServer::start_with(|config| {
                config.cluster = Some(sa);
                config.demo = true;
            }),
            TestServer::start_with(|config| {
                config.cluster = Some(sb);
                config.demo = true;
            })
        );
        let links = [
            a.server().start_tokens().admin.clone(),
            b.server().start_tokens().admin.clone(),
        ];
        assert_eq!(
            links.iter().flatten().count(),
            1,
            "one first-admin link between the two nodes"
        );
        let (link, unprinted) = match &links {
            [Some(link), None] => (link.clone(), &b),
            [None, Some(link)] => (link.clone(), &a),
            _ => unreachable!(),
        };
        let states = [&a, &b]
            .iter()
            .filter(|n| {
                n.hub()
                    .store
                    .group_state(&gid("demo"))
                    .is_ok_and(|s| s.is_some())
            })
            .count();
        assert_eq!(states, 1, "the demo group was created by one node");

        let me = Identity::generate();
        let mut client = unprinted.login(&me).await;
        match client.redeem(&link).await {
            ServerFrame::Redeemed { roles, .. } => assert_eq!(roles, vec![Role::Admin]),
            other => panic!("the first-admin link on the other node: {other:?}"),
        }
        let c = node(&cluster, "c").await;
        assert!(c.server().start_tokens().admin.is_none());
    })
    .await
    .expect("within the bound");
}

/// An access code set on A opens the group on B (both nodes hold the cluster's
/// secret, and its signing seed); a wrong one is refused there. Fails if each
/// node kept its own secret (the right code is refused on B).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_code_set_on_one_node_opens_the_group_on_another() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let (a, b, _me, _admin_a, _admin_b) = two_nodes(&cluster).await;
        let mut a = a;
        a.create_group_with_code("door", Some("Tarn-7c3e"), |g| {
            g.waiting_room = Some(false);
        })
        .await;
        let door = GroupId::parse("door").unwrap();
        until("the group on node B", || {
            b.hub().store.group(&door).is_ok_and(|g| g.is_some())
        })
        .await;
        let secrets: [fn(&TestServer) -> [u8; 32]; 2] = [
            |n| n.hub().store.access_code_secret().unwrap(),
            |n| n.hub().store.hub_signing_seed().unwrap(),
        ];
        for secret in secrets {
            assert_eq!(secret(&a), secret(&b), "one secret across the cluster");
        }
        let guest = Identity::generate();
        let mut on_b = b.login(&guest).await;
        let wrong = on_b.try_join("door", "Sam", Some("Tarn-7c3f")).await;
        assert_code(&wrong, ErrorCode::AccessDenied);
        let right = on_b.try_join("door", "Sam", Some("Tarn-7c3e")).await;
        assert!(matches!(right, ServerFrame::Joined { .. }), "{right:?}");
    })
    .await
    .expect("within the bound");
}

/// With every NATS server down, a redeem is refused with a retryable error and
/// nothing changes: the invite is still unused once NATS is back, and the same
/// person redeems it then. A flag raised meanwhile is still answered, with the
/// helplines, without waiting on NATS. Fails if a redeem waited for ever, was
/// refused as if the invite were bad, or half-happened (spent, no grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_unreachable_a_redeem_is_refused_as_retryable_and_a_flag_still_answered() {
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let (_a, b, _me, mut admin_a, _admin_b) = two_nodes(&cluster).await;
        let created = admin_a.create_group("circle", "Circle").await;
        assert!(
            matches!(created, ServerFrame::GroupCreated { .. }),
            "{created:?}"
        );
        let token = admin_a.invite(InviteRole::Supervisor, None).await;
        let circle = gid("circle");
        until("the group on node B", || {
            b.hub().store.group(&circle).is_ok_and(|g| g.is_some())
        })
        .await;
        let (carer, member) = (Identity::generate(), Identity::generate());
        let mut carer_on_b = b.login(&carer).await;
        let mut member_on_b = b.login(&member).await;
        // Joined, then left: with NATS gone, node B loses the group's lease and
        // closes the group's connections (they resume elsewhere); a flag needs
        // only the login.
        member_on_b.join("circle", "Sam", None).await;
        let left = member_on_b
            .request(|id| peerhub_protocol::ClientFrame::Leave {
                id,
                group: gid("circle"),
            })
            .await;
        assert!(
            matches!(left, ServerFrame::Ok { .. } | ServerFrame::Left { .. }),
            "{left:?}"
        );

        for name in ["n1", "n2", "n3"] {
            cluster.kill(name).await;
        }
        let started = std::time::Instant::now();
        let refused = carer_on_b.redeem(&token).await;
        match &refused {
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(_),
                message,
                ..
            } => assert!(message.contains("cluster"), "{message}"),
            other => panic!("a redeem without NATS: {other:?}"),
        }
        assert!(
            b.hub().store.roles(&carer.key()).unwrap().is_empty(),
            "no grant without the directory"
        );
        eprintln!("redeem refused after {:?}", started.elapsed());

        let started = std::time::Instant::now();
        let flagged = member_on_b
            .flag_with(
                "circle",
                member.key(),
                peerhub_protocol::escalation::Severity::Urgent,
                |_| {},
            )
            .await;
        let not_passed = matches!(&flagged, ServerFrame::Error { message, .. }
            if message.contains("could not be passed to a supervisor"));
        let helplines = match flagged {
            ServerFrame::Flagged { helplines, .. } => Some(helplines),
            ServerFrame::Error { helplines, .. } => helplines,
            _ => None,
        };
        assert_eq!(
            helplines.as_deref(),
            Some(&local_helplines()[..]),
            "the hub's own helplines"
        );
        assert!(
            helplines.is_some_and(|h| !h.is_empty()),
            "a flag is answered with the helplines"
        );
        // The node says it has no NATS, and counts a flag it could not pass
        // to a router leader (alert on it).
        let scraped = super::metrics::scrape(&b).await;
        assert_eq!(scraped.get("peerhub_cluster_nats_connected", &[]), 0.0);
        if not_passed {
            assert!(scraped.get("peerhub_cluster_flags_not_passed_total", &[]) >= 1.0);
        }
        // The counter's wait on the directory (250 ms) and the router's
        // (1.5 s), then the answer: never the length of an outage.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the flag waited {:?} on NATS",
            started.elapsed()
        );

        for name in ["n1", "n2", "n3"] {
            cluster.restart(name).await;
        }
        cluster.wait_ready().await;
        let deadline = tokio::time::Instant::now() + SEEN;
        loop {
            match carer_on_b.redeem(&token).await {
                ServerFrame::Redeemed { roles, .. } => {
                    assert_eq!(roles, vec![Role::Supervisor]);
                    break;
                }
                ServerFrame::Error {
                    code: ErrorCode::RateLimited,
                    ..
                } if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("the redeem once NATS is back: {other:?}"),
            }
        }
    })
    .await
    .expect("within the bound");
}

/// Sends an operator's request to a running node's control socket (as
/// `peerhub` does for a folder a server holds) and returns what it printed.
async fn operator(server: &TestServer, request: AdminRequest) -> serde_json::Value {
    let socket = server.data_dir().join(peerhub_server::admin::SOCKET);
    let reply = tokio::task::spawn_blocking(move || control::ask(&socket, &request))
        .await
        .expect("the blocking task")
        .expect("the control socket answers");
    match reply {
        peerhub_server::admin::Reply::Ok(output) => output,
        peerhub_server::admin::Reply::Error(error) => panic!("operator request refused: {error}"),
    }
}

/// Operator commands on a running node write the directory too: a group an
/// operator creates on A is known on B, a facilitator grant made on A is in
/// force on B, and an invite made on A redeems on B. Fails if the operator's
/// requests wrote only A's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_on_a_running_node_reach_every_node() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        let request = CreateGroupPayload {
            group: gid("circle"),
            title: "Circle".into(),
            group_kind: GroupKind::Virtual,
            agreement: None,
            access_code: None,
            schedule: Vec::new(),
            retention: Default::default(),
            waiting_room: None,
            counter: 0,
            ts: 0,
        };
        operator(
            &a,
            AdminRequest::GroupCreate {
                request: Box::new(request),
            },
        )
        .await;
        let circle = gid("circle");
        until("the operator's group on node B", || {
            b.hub().store.group(&circle).is_ok_and(|g| g.is_some())
        })
        .await;

        let facilitator = Identity::generate();
        operator(
            &a,
            AdminRequest::FacilitatorGrant {
                key: facilitator.key(),
                group: circle.clone(),
                revoke: false,
            },
        )
        .await;
        until("the operator's grant on node B", || {
            b.hub()
                .store
                .facilitates(&facilitator.key(), &circle)
                .unwrap_or(false)
        })
        .await;
        let mut on_b = b.login(&facilitator).await;
        on_b.invite(InviteRole::Member, Some("circle")).await;

        let made = operator(
            &a,
            AdminRequest::Invite {
                role: InviteRole::Supervisor,
                group: None,
                ttl_hours: None,
            },
        )
        .await;
        let token = made["token"].as_str().expect("a token").to_string();
        let carer = Identity::generate();
        let mut carer_on_b = b.login(&carer).await;
        let redeemed = carer_on_b.redeem(&token).await;
        assert!(
            matches!(redeemed, ServerFrame::Redeemed { .. }),
            "{redeemed:?}"
        );
    })
    .await
    .expect("within the bound");
}
