//! Retention in cluster mode (docs/CLUSTER.md §8): two or three in-process
//! peerhub nodes on a real three-server NATS cluster. A group's expired chat
//! history is deleted through its owner as a write set in its log, every node's
//! copy applies it, and the log is trimmed behind a snapshot, so the expired
//! words leave JetStream too (the test reads the stream raw). A node that comes
//! afterwards rebuilds exactly the live history and members from the snapshot
//! and what is left; seqs go on gap-free; a pass while the owner is dead loses
//! nothing live.
//!
//! Time moves by days on each node's clock (`clock.advance`): every node's
//! clock by the same amount, and each client signs at its node's time.

use std::time::Duration;

use bytes::Bytes;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::frame::Channel;
use peerhub_protocol::payload::{AuthPayload, JoinPayload};
use peerhub_protocol::{ClientFrame, ServerFrame};
use peerhub_server::clock::Clock;
use peerhub_server::cluster::lease::{LeaseConfig, Leases};
use peerhub_server::cluster::log::{GroupLogs, LogConfig};
use peerhub_server::cluster::replica::{self, GroupOp};
use peerhub_server::cluster::snapshot::{Snapshot, SnapshotConfig, Snapshots};
use peerhub_server::cluster::trim::{self, Trimmed};
use peerhub_server::cluster::ClusterError;
use peerhub_server::config::ClusterSettings;
use peerhub_server::retention::{self, RetentionSettings, DAY_MS};
use peerhub_server::store::records::{MemberRecord, StoredEvent};
use peerhub_server::store::Store;
use peerhub_tests::identity::gid;
use peerhub_tests::nats::{opened, NatsCluster};
use peerhub_tests::{Client, CrashableServer as Crashable, Identity, TestServer};

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(180);

/// How far the clocks move: past the group's two days.
const JUMP_MS: i64 = 3 * DAY_MS as i64;

/// Thirty days by default; the job's own passes only at start (the tests run
/// theirs with [`retention::run_once`]).
fn retention_settings() -> RetentionSettings {
    RetentionSettings {
        chat_history_days: Some(30),
        safeguarding_days: None,
        audit_days: None,
        interval: Duration::from_secs(3600),
    }
}

fn configure(config: &mut peerhub_server::config::Config, cluster: ClusterSettings) {
    config.cluster = Some(cluster);
    config.retention = retention_settings();
}

async fn node(cluster: &NatsCluster, name: &str) -> TestServer {
    let settings = cluster.node_settings(name);
    TestServer::start_with(move |config| configure(config, settings)).await
}

/// Starts node `name` on a runtime of its own, to be stopped dead.
fn crashable(cluster: &NatsCluster, name: &str) -> Crashable {
    let settings = cluster.node_settings(name);
    Crashable::start(move |config| configure(config, settings))
}

/// A group keeping two days of history, made through `admin_node`.
async fn create_group(admin_node: &mut TestServer, group: &str) {
    admin_node
        .create_group_with(group, |g| {
            g.waiting_room = Some(false);
            g.retention.history_days = Some(2);
        })
        .await;
}

/// A new connection logged in as `who`, signing at `server`'s time.
async fn login_at(server: &TestServer, who: &Identity) -> Client {
    let mut client = server.client().await;
    let env = who.sign(
        Kind::Auth,
        &AuthPayload {
            challenge: client.challenge.clone(),
            ts: server.clock.now_ms(),
        },
    );
    match client.request(|id| ClientFrame::Auth { id, env }).await {
        ServerFrame::AuthOk { counter, .. } => who.raise_counter(counter),
        other => panic!("login refused: {other:?}"),
    }
    client.identity = Some(who.clone());
    client
}

/// Joins `group` signing at `server`'s time; returns the reply and history.
async fn join_at(
    server: &TestServer,
    client: &mut Client,
    group: &str,
    name: &str,
) -> peerhub_tests::client::Joined {
    let me = client.identity.clone().expect("logged in");
    let env = me.sign(
        Kind::Join,
        &JoinPayload {
            group: gid(group),
            name: name.into(),
            counter: me.next_counter(),
            ts: server.clock.now_ms(),
        },
    );
    let reply = client
        .request(|id| ClientFrame::Join {
            id,
            group: gid(group),
            after: None,
            access_code: None,
            env,
        })
        .await;
    client.joined_reply(group, None, reply).await
}

/// Posts `body` at `server`'s time; returns the seq.
async fn post_at(server: &TestServer, client: &mut Client, group: &str, body: &str) -> u64 {
    let me = client.identity.clone().expect("logged in");
    let env = me.post_at(group, body, me.next_counter(), server.clock.now_ms());
    client.post_env(group, env).await
}

/// Every main-channel event a node's store holds for `group`: (seq, body).
fn history(store: &Store, group: &str) -> Vec<(u64, String)> {
    store
        .events_between(&gid(group), &Channel::Main, 0, u64::MAX, 10_000)
        .expect("events")
        .into_iter()
        .map(|e: StoredEvent| {
            let body = e
                .env
                .as_ref()
                .map(|env| {
                    env.payload_as::<peerhub_protocol::payload::PostPayload>()
                        .expect("a post")
                        .body
                })
                .unwrap_or_default();
            (e.seq, body)
        })
        .collect()
}

/// Every member record a node's store holds for `group`, in key order.
fn members(store: &Store, group: &str) -> Vec<MemberRecord> {
    let mut members = store.members(&gid(group)).expect("members");
    members.sort_by_key(|m| m.key.0);
    members
}

fn holds(records: &[Bytes], words: &str) -> bool {
    records
        .iter()
        .any(|r| r.windows(words.len()).any(|w| w == words.as_bytes()))
}

/// Moves every node's clock on by [`JUMP_MS`], then waits until `lease`
/// (a group's) has been renewed under the new time, so no node takes it for
/// run out.
async fn jump(cluster: &NatsCluster, clocks: &[&Clock], lease: &str) {
    for clock in clocks {
        clock.advance(JUMP_MS);
    }
    let nats = cluster.connect(1, "test-leases").await;
    let leases = Leases::open(
        &nats,
        &LeaseConfig {
            replicas: 3,
            ttl: Duration::from_secs(2),
            ..Default::default()
        },
        clocks[0].clone(),
    )
    .await
    .expect("leases");
    loop {
        let current = leases.current(lease).await.expect("lease read");
        if current.is_some_and(|(value, _)| value.deadline_ms > clocks[0].now_ms()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn expired_words_leave_every_node_and_the_log_and_a_new_node_rebuilds_the_live_history() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&mut a, "circle").await;
        let (river, sky, moss) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let mut on_a = a.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut on_b = b.login(&sky).await;
        on_b.join("circle", "Sky", None).await;
        assert_eq!(on_a.post("circle", "expired-words-1").await, 1);
        assert_eq!(on_b.post("circle", "expired-words-2").await, 2);
        assert_eq!(on_a.post("circle", "expired-words-3").await, 3);
        drop((on_a, on_b));

        jump(&cluster, &[&a.clock, &b.clock], "group-circle").await;
        let mut on_a = login_at(&a, &river).await;
        let joined = join_at(&a, &mut on_a, "circle", "River").await;
        assert_eq!(joined.head, 3, "nothing expired yet");
        let mut on_b = login_at(&b, &sky).await;
        join_at(&b, &mut on_b, "circle", "Sky").await;
        assert_eq!(post_at(&a, &mut on_a, "circle", "live-words-4").await, 4);
        assert_eq!(post_at(&b, &mut on_b, "circle", "live-words-5").await, 5);
        let before = cluster.raw_log("circle").await;
        assert!(
            holds(&before, "expired-words-1"),
            "the log holds them until the pass"
        );

        // The owner's pass, then the other node's.
        let settings = retention_settings();
        let report = retention::run_once(a.hub(), &settings, a.clock.now_ms())
            .await
            .expect("a's pass");
        assert_eq!(report.chat_events, 3, "the three expired posts, once");
        retention::run_once(b.hub(), &settings, b.clock.now_ms())
            .await
            .expect("b's pass");

        let live = vec![
            (4, "live-words-4".to_string()),
            (5, "live-words-5".to_string()),
        ];
        assert_eq!(history(&a.hub().store, "circle"), live, "node a");
        assert_eq!(history(&b.hub().store, "circle"), live, "node b");
        let after = cluster.raw_log("circle").await;
        for n in 1..=3 {
            assert!(
                !holds(&after, &format!("expired-words-{n}")),
                "expired post {n} left the log"
            );
        }
        assert!(holds(&after, "live-words-4") && holds(&after, "live-words-5"));
        assert!(after.len() < before.len(), "records were erased");
        // On the NATS servers' disks: the stream's own files hold none of them
        // (a purge left them there; the trim's message deletes overwrite
        // them). Each server's Raft log for the stream keeps them until it
        // compacts, which no client can force (docs/CLUSTER.md §8).
        for n in 1..=3 {
            let words = format!("expired-words-{n}");
            let holding = cluster.files_holding(words.as_bytes());
            let outside_raft: Vec<&String> =
                holding.iter().filter(|f| !f.contains("/_js_/")).collect();
            assert!(outside_raft.is_empty(), "{words} still in {outside_raft:?}");
            eprintln!("{words}: in the servers' Raft logs only: {holding:?}");
        }

        // A third node, coming afterwards, rebuilds from the snapshot and what
        // is left: exactly the live history and every member.
        let c = node(&cluster, "c").await;
        c.clock.advance(JUMP_MS);
        let mut on_c = login_at(&c, &moss).await;
        let joined = join_at(&c, &mut on_c, "circle", "Moss").await;
        assert_eq!(joined.head, 5);
        let seen: Vec<(u64, String)> = joined
            .history
            .iter()
            .map(|e| (e.seq, e.verified_body()))
            .collect();
        assert_eq!(seen, live, "the live history, through node c");
        let listed: Vec<String> = joined.members.iter().map(|m| m.name.clone()).collect();
        for name in ["River", "Sky", "Moss"] {
            assert!(listed.contains(&name.to_string()), "{name} in {listed:?}");
        }
        assert_eq!(history(&c.hub().store, "circle"), live, "node c's copy");
        assert_eq!(
            members(&c.hub().store, "circle"),
            members(&a.hub().store, "circle"),
            "node c's member records are the owner's"
        );
        // Seqs go on, gap-free, and nothing live was lost.
        assert_eq!(post_at(&c, &mut on_c, "circle", "live-words-6").await, 6);
        let mut expected = live.clone();
        expected.push((6, "live-words-6".to_string()));
        assert_eq!(history(&a.hub().store, "circle"), expected);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_pass_while_the_owner_is_dead_loses_nothing_live() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = crashable(&cluster, "a");
        let b = node(&cluster, "b").await;
        create_group(&mut a.server, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.server.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut on_b = b.login(&sky).await;
        on_b.join("circle", "Sky", None).await;
        assert_eq!(on_a.post("circle", "expired-words-1").await, 1);
        assert_eq!(on_b.post("circle", "expired-words-2").await, 2);
        drop((on_a, on_b));

        jump(&cluster, &[&a.server.clock, &b.clock], "group-circle").await;
        let mut on_a = login_at(&a.server, &river).await;
        join_at(&a.server, &mut on_a, "circle", "River").await;
        assert_eq!(
            post_at(&a.server, &mut on_a, "circle", "live-words-3").await,
            3
        );
        assert_eq!(
            post_at(&a.server, &mut on_a, "circle", "live-words-4").await,
            4
        );
        // The owner dies holding the group's lease.
        a.crash();
        drop(on_a);

        // Passes on b: while the dead owner's lease runs, the group is left
        // alone; once it has run out, b takes the group for the pass.
        let settings = retention_settings();
        let mut deleted = 0;
        let mut passes = 0;
        while deleted == 0 {
            passes += 1;
            let report = retention::run_once(b.hub(), &settings, b.clock.now_ms())
                .await
                .expect("b's pass");
            deleted = report.chat_events;
            if deleted == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        eprintln!("passes on b until the dead owner's group was expired: {passes}");
        assert_eq!(deleted, 2);
        let live = vec![
            (3, "live-words-3".to_string()),
            (4, "live-words-4".to_string()),
        ];
        assert_eq!(history(&b.hub().store, "circle"), live);
        let log = cluster.raw_log("circle").await;
        assert!(!holds(&log, "expired-words-1") && !holds(&log, "expired-words-2"));
        assert!(holds(&log, "live-words-3") && holds(&log, "live-words-4"));

        // The group is served again, on b, from what is left: nothing live lost.
        let mut sky_again = login_at(&b, &sky).await;
        let joined = join_at(&b, &mut sky_again, "circle", "Sky").await;
        assert_eq!(joined.head, 4);
        let seen: Vec<(u64, String)> = joined
            .history
            .iter()
            .map(|e| (e.seq, e.verified_body()))
            .collect();
        assert_eq!(seen, live);
        assert_eq!(
            post_at(&b, &mut sky_again, "circle", "live-words-5").await,
            5
        );
    })
    .await
    .expect("bounded");
}

/// Everything a store holds for a group that the log replicates.
fn copy_of(
    store: &Store,
    group: &peerhub_protocol::GroupId,
) -> (Vec<StoredEvent>, Vec<MemberRecord>, (u64, u64)) {
    let mut members = store.members(group).expect("members");
    members.sort_by_key(|m| m.key.0);
    (
        store
            .events_between(group, &Channel::Main, 0, u64::MAX, 10_000)
            .expect("events"),
        members,
        store.replica_applied(group).expect("mark"),
    )
}

fn event_op(seq: u64, ts: u64, who: &Identity) -> GroupOp {
    GroupOp::Event {
        channel: Channel::Main,
        event: StoredEvent {
            seq,
            ts,
            env: None,
            note: Some(peerhub_protocol::frame::Note::MuteEnded { member: who.key() }),
            redacted: None,
        },
    }
}

fn member_op(who: &Identity, name: &str) -> GroupOp {
    GroupOp::Member {
        member: MemberRecord {
            key: who.key(),
            name: name.to_string(),
            join: None,
            first_joined_ms: 1_000,
            agreed_version: 0,
            agreement_env: None,
            admitted_session: Some(1),
            declined_session: None,
            removed: None,
            muted_until_ms: None,
            away: false,
        },
    }
}

/// At the log's level: a copy behind erased records that no snapshot explains is
/// refused and left as it was (never skipped); so is one whose snapshot needs
/// records that are gone. After the owner's own trim (snapshot first, then the
/// records erased) the same empty copy, and one whose mark is below the floor,
/// rebuild to exactly the owner's, and a member who lived only in erased
/// records is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_no_snapshot_explains_is_refused_and_a_trimmed_log_rebuilds_exactly() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let nats = cluster.connect(0, "test-trim").await;
        let (lease_config, snapshot_config, log_config) = (
            LeaseConfig::default(),
            SnapshotConfig::default(),
            LogConfig::default(),
        );
        let leases = opened("leases", || {
            Leases::open(&nats, &lease_config, Clock::system())
        })
        .await;
        let snapshots = opened("snapshots", || Snapshots::open(&nats, &snapshot_config)).await;
        let logs = opened("logs", || GroupLogs::open(&nats, &log_config))
            .await
            .with_snapshots(snapshots.clone());
        let group = gid("trimmed");
        let lease = leases
            .acquire("group-trimmed", "owner")
            .await
            .expect("lease");
        let mut writer = logs.writer("trimmed", &lease).await.expect("writer");
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let owner = Store::open(dirs.0.path()).expect("owner store");
        let follower = Store::open(dirs.1.path()).expect("follower store");
        let behind_dir = tempfile::tempdir().unwrap();
        let behind = Store::open(behind_dir.path()).expect("a store that falls behind");
        let (gone, kept, middle) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        // 1: an old event and a member who later leaves the log's live part;
        // 2: another old one; 3: a live one; 4: the old ones deleted.
        let sets = vec![
            vec![event_op(1, 100, &gone), member_op(&gone, "Early")],
            vec![event_op(2, 200, &gone), member_op(&middle, "Middle")],
            vec![event_op(3, 5_000, &kept), member_op(&kept, "Later")],
            vec![GroupOp::DeleteEvents {
                before_ms: Some(1_000),
            }],
        ];
        let mut stream_seqs = Vec::new();
        for ops in &sets {
            let appended = replica::commit(&mut writer, &owner, &group, ops)
                .await
                .expect("commit");
            stream_seqs.push(appended.stream_seq);
            if stream_seqs.len() == 1 {
                // This copy follows record 1, then nothing more until the trim.
                assert_eq!(
                    replica::catch_up(&behind, &logs, &group)
                        .await
                        .expect("catch up"),
                    1
                );
            }
        }

        // Records erased with no snapshot behind them: the follower's empty
        // copy cannot follow on, and nothing is written.
        let fence = logs.read_all("trimmed").await.expect("read")[0].stream_seq;
        logs.erase_records(&[fence, stream_seqs[0]])
            .await
            .expect("erase");
        let empty = copy_of(&follower, &group);
        let refused = replica::catch_up(&follower, &logs, &group).await;
        assert!(
            matches!(refused, Err(ClusterError::Corrupt { .. })),
            "{refused:?}"
        );
        assert_eq!(copy_of(&follower, &group), empty, "nothing changed");

        // A snapshot that needs record 1, which is gone: refused too.
        let needs_gone = Trimmed {
            v: 1,
            floor: 1,
            state: None,
            members: Vec::new(),
        };
        let saved = snapshots
            .save(
                "trimmed",
                &Snapshot {
                    epoch: writer.epoch(),
                    seq: 2,
                    stream_seq: stream_seqs[1],
                    state: serde_json::to_vec(&needs_gone).unwrap().into(),
                },
            )
            .await
            .expect("snapshot saved");
        assert!(saved);
        let refused = replica::catch_up(&follower, &logs, &group).await;
        assert!(
            matches!(refused, Err(ClusterError::Corrupt { .. })),
            "{refused:?}"
        );
        assert_eq!(copy_of(&follower, &group), empty, "nothing changed");

        // The owner's trim: a snapshot at the tail, then record 2 goes (the
        // fence and record 1 were gone already); 3 and 4 stay.
        let erased = trim::trim(&owner, &writer, &group).await.expect("trim");
        assert_eq!(
            erased, 1,
            "record 2 (the fence and record 1 were gone already)"
        );
        let left = logs.read_all("trimmed").await.expect("read");
        let seqs: Vec<u64> = left.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            vec![3, 4],
            "the records holding live events and the tail"
        );
        let rebuilt = replica::catch_up(&follower, &logs, &group)
            .await
            .expect("rebuilt from the snapshot");
        assert_eq!(rebuilt, 4);
        assert_eq!(copy_of(&follower, &group), copy_of(&owner, &group));
        // A copy whose mark (1) is below the floor: rebuilt, not skipped forward
        // (a skip would miss Middle, whose only record was erased).
        assert_eq!(
            replica::catch_up(&behind, &logs, &group)
                .await
                .expect("rebuilt from the snapshot"),
            4
        );
        assert_eq!(copy_of(&behind, &group), copy_of(&owner, &group));
        assert!(copy_of(&behind, &group)
            .1
            .iter()
            .any(|m| m.name == "Middle"));
        let names: Vec<String> = copy_of(&follower, &group)
            .1
            .iter()
            .map(|m| m.name.clone())
            .collect();
        assert!(names.contains(&"Early".to_string()), "{names:?}");
        let events: Vec<u64> = copy_of(&follower, &group).0.iter().map(|e| e.seq).collect();
        assert_eq!(events, vec![3]);

        // The log goes on from there, and the rebuilt copy follows it.
        replica::commit(&mut writer, &owner, &group, &[event_op(4, 6_000, &kept)])
            .await
            .expect("commit after the trim");
        assert_eq!(
            replica::catch_up(&follower, &logs, &group)
                .await
                .expect("catch up"),
            5
        );
        assert_eq!(copy_of(&follower, &group), copy_of(&owner, &group));
    })
    .await
    .expect("bounded");
}

/// `peerhub erase` on a stopped cluster node's folder (here: a store that
/// holds a group's log as a replica, as every node's does): the words live in
/// the group logs and on the other nodes too, so erasing one copy would only
/// seem to work. It refuses, says why, and changes nothing (the library call
/// and the binary alike). An export from that stopped copy is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_refuses_a_cluster_nodes_folder_and_changes_nothing() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let nats = cluster.connect(0, "test-erase").await;
        let (lease_config, log_config) = (LeaseConfig::default(), LogConfig::default());
        let leases = opened("leases", || {
            Leases::open(&nats, &lease_config, Clock::system())
        })
        .await;
        let logs = opened("logs", || GroupLogs::open(&nats, &log_config)).await;
        let lease = leases
            .acquire("group-circle", "owner")
            .await
            .expect("lease");
        let mut writer = logs.writer("circle", &lease).await.expect("writer");
        let dir = tempfile::tempdir().expect("dir");
        let river = Identity::generate();
        {
            let store = Store::open(dir.path()).expect("store");
            replica::commit(
                &mut writer,
                &store,
                &gid("circle"),
                &[event_op(1, 1_000, &river), member_op(&river, "River")],
            )
            .await
            .expect("commit");
            store.flush().expect("flush");
        }
        let key = river.key();
        let digest = || {
            peerhub_tests::retry_while_locked(|| Store::open(dir.path()))
                .expect("store")
                .digest()
                .expect("digest")
        };
        let before = digest();
        let refused =
            peerhub_tests::retry_while_locked(|| peerhub_server::admin::erase(dir.path(), &key))
                .expect_err("refused");
        assert!(
            refused.to_string().contains("cluster node's copy"),
            "{refused}"
        );
        assert_eq!(digest(), before, "nothing changed");
        // An export from the stopped copy could miss what the logs hold: refused
        // too (a running node exports: `an_export_on_either_node_is_the_same_document`).
        let refused = peerhub_tests::retry_while_locked(|| {
            peerhub_server::admin::run(
                dir.path(),
                peerhub_server::admin::ops::AdminRequest::Export { key },
            )
        })
        .expect_err("refused");
        assert!(
            refused.to_string().contains("ask a running node"),
            "{refused}"
        );
        assert_eq!(digest(), before, "nothing changed");
        let out = peerhub_tests::retry_while_locked(|| {
            let out = std::process::Command::new(peerhub_tests::process::binary())
                .args(["erase", "--data"])
                .arg(dir.path())
                .args(["--key", &key.to_string()])
                .output()
                .expect("run peerhub erase");
            match String::from_utf8_lossy(&out.stderr).into_owned() {
                busy if busy.contains("is in use") => Err(busy),
                _ => Ok(out),
            }
        })
        .expect("the folder is free");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cluster node's copy"), "{stderr}");
        assert!(out.stdout.is_empty());
        assert_eq!(digest(), before, "nothing changed");
    })
    .await
    .expect("bounded");
}

/// Sends an operator's request to a running node's control socket and returns
/// what it printed.
async fn operator(
    server: &TestServer,
    request: peerhub_server::admin::ops::AdminRequest,
) -> serde_json::Value {
    let socket = server.data_dir().join(peerhub_server::admin::SOCKET);
    let reply = tokio::task::spawn_blocking(move || {
        peerhub_server::transport::control::ask(&socket, &request)
    })
    .await
    .expect("the blocking task")
    .expect("the control socket answers");
    match reply {
        peerhub_server::admin::Reply::Ok(output) => output,
        peerhub_server::admin::Reply::Error(error) => panic!("operator request refused: {error}"),
    }
}

/// An export without what is each node's own: its time, and the lines of the
/// node's own audit chain (the cluster's chain is not wired yet).
fn comparable(mut export: serde_json::Value) -> serde_json::Value {
    let object = export.as_object_mut().expect("an object");
    object.remove("exported_ms");
    object.remove("audit");
    export
}

/// An export asked of either node is the same document: each node first
/// brings its copies of the groups up to their logs (node b had not seen
/// River's later posts, node a had never held the group served on b) and
/// takes the counter from the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_on_either_node_is_the_same_document() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&mut a, "circle").await;
        create_group(&mut a, "other").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut sky_on_b = b.login(&sky).await;
        sky_on_b.join("circle", "Sky", None).await;
        // "other" is served by b; River's words there reach b's log only.
        sky_on_b.join("other", "Sky", None).await;
        let mut river_on_a = a.login(&river).await;
        river_on_a.join("circle", "River", None).await;
        river_on_a.post("circle", "river-one").await;
        sky_on_b.post("circle", "sky-one").await;
        river_on_a.post("circle", "river-two").await;
        let mut river_on_b = b.login(&river).await;
        river_on_b.join("other", "River", None).await;
        river_on_b.post("other", "river-elsewhere").await;
        // The connections stay open until both exports are made: a leave is
        // written to the log later, and could fall between the two.

        let request = || peerhub_server::admin::ops::AdminRequest::Export { key: river.key() };
        let on_a = operator(&a, request()).await;
        let on_b = operator(&b, request()).await;
        let bodies = |export: &serde_json::Value| -> Vec<(String, String)> {
            export["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| {
                    let env: peerhub_protocol::SignedEnvelope =
                        serde_json::from_value(m["envelope"].clone()).expect("envelope");
                    let post: peerhub_protocol::payload::PostPayload =
                        env.payload_as().expect("a post");
                    (m["group"].as_str().unwrap().to_string(), post.body)
                })
                .collect()
        };
        let mut seen = bodies(&on_a);
        seen.sort();
        assert_eq!(
            seen,
            [
                ("circle".to_string(), "river-one".to_string()),
                ("circle".to_string(), "river-two".to_string()),
                ("other".to_string(), "river-elsewhere".to_string()),
            ],
            "River's own words, from both groups, and nobody else's"
        );
        let groups: Vec<&str> = on_a["memberships"]
            .as_array()
            .expect("memberships")
            .iter()
            .map(|m| m["group"].as_str().unwrap())
            .collect();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(comparable(on_a), comparable(on_b), "the same document");
        drop((river_on_a, river_on_b, sky_on_b));
    })
    .await
    .expect("bounded");
}

/// An ephemeral group's session ends: its owner deletes every event and the
/// participants' member records as a write set, and trims the log at once, so
/// by the facilitator's ack neither the words nor the participant's name are in
/// the stream, and a node joining afterwards finds no history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_sessions_end_leaves_none_of_its_words_in_the_log() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        a.create_group_with("dropin", |g| {
            g.waiting_room = Some(false);
            g.retention.ephemeral = true;
        })
        .await;
        // A facilitator of the group, through an invite in the cluster's directory.
        let mut admin = a.admin().await;
        let token = admin
            .invite(
                peerhub_protocol::payload::InviteRole::Facilitator,
                Some("dropin"),
            )
            .await;
        let jo = Identity::generate();
        let mut redeeming = a.login(&jo).await;
        let redeemed = redeeming.redeem(&token).await;
        assert!(
            matches!(redeemed, ServerFrame::Redeemed { .. }),
            "{redeemed:?}"
        );
        drop(redeeming);
        let mut fac = a.login(&jo).await;
        fac.join("dropin", "Jo", None).await;
        let pat = Identity::generate();
        let mut on_b = b.login(&pat).await;
        on_b.join("dropin", "Ephemeral-Pat", None).await;
        assert_eq!(on_b.post("dropin", "ephemeral-words").await, 1);
        let before = cluster.raw_log("dropin").await;
        assert!(holds(&before, "ephemeral-words") && holds(&before, "Ephemeral-Pat"));

        let reply = fac
            .control(
                "dropin",
                peerhub_protocol::payload::ControlAction::EndSession,
            )
            .await;
        assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
        let after = cluster.raw_log("dropin").await;
        assert!(!holds(&after, "ephemeral-words"), "the words left the log");
        assert!(!holds(&after, "Ephemeral-Pat"), "the name left the log");
        assert!(after.len() < before.len());

        // A copy made afterwards from what is left: no history, no Pat (the
        // group is closed now, so this reads the log as a node joining would).
        let nats = cluster.connect(2, "test-rebuild").await;
        let (snapshot_config, log_config) = (SnapshotConfig::default(), LogConfig::default());
        let snapshots = opened("snapshots", || Snapshots::open(&nats, &snapshot_config)).await;
        let logs = opened("logs", || GroupLogs::open(&nats, &log_config))
            .await
            .with_snapshots(snapshots);
        let dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(dir.path()).expect("store");
        replica::catch_up(&fresh, &logs, &gid("dropin"))
            .await
            .expect("rebuilt");
        assert!(history(&fresh, "dropin").is_empty());
        let names: Vec<String> = members(&fresh, "dropin")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(!names.contains(&"Ephemeral-Pat".to_string()), "{names:?}");
    })
    .await
    .expect("bounded");
}

/// Retention reaches the router's log: once the leader's pass deleted a
/// resolved escalation past the safeguarding days, the leader appends its whole
/// state and erases every record before it, so the escalation's flag note is
/// gone from the log read raw and from every NATS file but the Raft logs and the
/// audit chain's (kept for the audit days, as on one node); an open escalation
/// stays. The leader is then killed: the other node, which never
/// led and so holds nothing of the router's log, starts again from the rebase,
/// holds the open escalation and not the deleted one, and hands out no id twice.
/// Fails on the old code: the log kept every router commit for good.
#[tokio::test]
async fn a_resolved_escalation_past_retention_leaves_the_routers_log_and_the_next_leader_starts_from_the_rest(
) {
    use peerhub_protocol::escalation::Severity;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = crashable(&cluster, "a");
        let b = node(&cluster, "b").await;
        create_group(&mut a.server, "circle").await;
        let flag = |note: &'static str| {
            move |p: &mut peerhub_protocol::payload::FlagPayload| p.note = Some(note.into())
        };
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.server.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut on_b = b.login(&sky).await;
        on_b.join("circle", "Sky", None).await;
        let flagged = on_a
            .flag_with(
                "circle",
                river.key(),
                Severity::Urgent,
                flag("cornflower-resolved"),
            )
            .await;
        assert!(
            matches!(flagged, ServerFrame::Flagged { .. }),
            "{flagged:?}"
        );
        let flagged = on_b
            .flag_with("circle", sky.key(), Severity::Urgent, flag("bluebell-open"))
            .await;
        assert!(
            matches!(flagged, ServerFrame::Flagged { .. }),
            "{flagged:?}"
        );
        let store = a.server.hub().store.clone();
        let (resolved, open) = loop {
            let all = store.escalations().expect("escalations");
            if all.len() == 2 {
                let about = |key| all.iter().find(|e| e.view.about == key).expect("one each");
                break (about(river.key()).view.id, about(sky.key()).view.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        super::cluster_nodes::operator_resolves(a.server.data_dir(), resolved, "talked it through")
            .await;
        assert!(holds(
            &cluster.raw_log("_router").await,
            "cornflower-resolved"
        ));

        jump(&cluster, &[&a.server.clock, &b.clock], "router").await;
        let settings = RetentionSettings {
            safeguarding_days: Some(1),
            ..retention_settings()
        };
        // The follower's pass first: it does not lead, so the log stays.
        retention::run_once(b.hub(), &settings, b.clock.now_ms())
            .await
            .expect("b's pass");
        assert!(holds(
            &cluster.raw_log("_router").await,
            "cornflower-resolved"
        ));
        let report = retention::run_once(a.server.hub(), &settings, a.server.clock.now_ms())
            .await
            .expect("a's pass");
        assert_eq!(report.escalations, 1, "{report:?}");
        let log = cluster.raw_log("_router").await;
        assert!(!holds(&log, "cornflower-resolved"), "gone from the log");
        assert!(holds(&log, "bluebell-open"), "the open one is kept");
        // The audit chain keeps the flag's signed envelope for the audit days,
        // as on one node (`retention.audit_days`); nothing else may.
        let holding = cluster.files_holding(b"cornflower-resolved");
        let elsewhere: Vec<&String> = holding
            .iter()
            .filter(|f| !f.contains("/_js_/") && !f.contains("/PEERHUB_AUDIT/"))
            .collect();
        assert!(elsewhere.is_empty(), "still in {elsewhere:?}");

        a.crash();
        let b_store = b.hub().store.clone();
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        while b_store.escalation(open).expect("read").is_none() {
            assert!(
                tokio::time::Instant::now() < until,
                "b takes the router over and holds the open escalation"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(b_store.escalation(resolved).expect("read").is_none());
        assert!(b_store.escalation_id_high().expect("high") >= resolved.max(open));
        assert!(b_store.next_escalation_id().expect("next id") > resolved.max(open));
    })
    .await
    .expect("bounded");
}
