//! Each node's sled store as a replica of a group's cluster log (docs/CLUSTER.md
//! §7, B), against a real three-server nats-server cluster: the owner commits
//! write sets (events, state, member records) to the log and its own store; a
//! node following the log, and one catching up from nothing, hold exactly the
//! same records; a new owner brings its store to the tail before it writes, the
//! old owner is fenced and catches up too; a gap or an unreadable record changes
//! nothing.

use std::time::Duration;

use peerhub_protocol::frame::{Channel, Note};
use peerhub_protocol::GroupId;
use peerhub_server::clock::Clock;
use peerhub_server::cluster::fanout::{self, EventFeed};
use peerhub_server::cluster::lease::{LeaseConfig, Leases};
use peerhub_server::cluster::log::{GroupLogs, LogConfig, LogRecord, RecordKind};
use peerhub_server::cluster::replica::{self, GroupOp};
use peerhub_server::cluster::{ClusterError, Nats};
use peerhub_server::store::records::{MemberRecord, StoredEvent};
use peerhub_server::store::Store;
use peerhub_tests::identity::{gid, Identity};
use peerhub_tests::nats::{opened, NatsCluster};

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

/// Everything a store holds for a group that the log replicates.
#[derive(Debug, PartialEq)]
struct Held {
    main: Vec<StoredEvent>,
    staff: Vec<StoredEvent>,
    state: Option<peerhub_server::store::records::GroupStateRecord>,
    members: Vec<MemberRecord>,
    applied: u64,
}

fn held(store: &Store, group: &GroupId) -> Held {
    let mut members = store.members(group).expect("members");
    members.sort_by_key(|m| m.key.0);
    Held {
        main: store
            .events_between(group, &Channel::Main, 0, u64::MAX, 10_000)
            .expect("main"),
        staff: store
            .events_between(group, &Channel::Staff, 0, u64::MAX, 10_000)
            .expect("staff"),
        state: store.group_state(group).expect("state"),
        members,
        applied: store.replica_applied(group).expect("mark").0,
    }
}

fn note(seq: u64, who: &Identity) -> StoredEvent {
    StoredEvent {
        seq,
        ts: 1_000 + seq,
        env: None,
        note: Some(Note::MuteEnded { member: who.key() }),
        redacted: None,
    }
}

fn member(who: &Identity, name: &str) -> MemberRecord {
    MemberRecord {
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
    }
}

/// The `n`th write set of the conversation: a main-channel event each time, a
/// staff event every third, the state every fifth, a member joining every fourth
/// (the 4th, 16th and 28th are the same person) and that person leaving at the
/// thirtieth.
fn write_set(n: u64, people: &[Identity]) -> Vec<GroupOp> {
    let who = &people[(n as usize) % people.len()];
    let mut ops = vec![GroupOp::Event {
        channel: Channel::Main,
        event: note(n, who),
    }];
    if n.is_multiple_of(3) {
        ops.push(GroupOp::Event {
            channel: Channel::Staff,
            event: note(n / 3, who),
        });
    }
    if n.is_multiple_of(4) {
        ops.push(GroupOp::Member {
            member: member(who, &format!("person {n}")),
        });
    }
    if n == 30 {
        ops.push(GroupOp::RemoveMember {
            key: people[4].key(),
        });
    }
    if n.is_multiple_of(5) {
        let mut state = peerhub_server::groups::room::initial_state(None);
        state.heads = vec![(Channel::Main, n)];
        state.paused = n.is_multiple_of(10);
        ops.push(GroupOp::State { state });
    }
    ops
}

async fn open_logs(nats: &Nats) -> GroupLogs {
    let config = LogConfig::default();
    opened("the log stream", || GroupLogs::open(nats, &config)).await
}

async fn open_leases(nats: &Nats, ttl: Duration) -> Leases {
    let config = LeaseConfig {
        ttl,
        ..LeaseConfig::default()
    };
    opened("the lease bucket", || {
        Leases::open(nats, &config, Clock::system())
    })
    .await
}

/// A owns the group and commits thirty write sets; B follows the log's fan-out
/// as they come, C starts afterwards from nothing and catches up. All three
/// stores hold the same events, state, members and mark. Fails if a follower
/// applied out of order (the state would be an older one), skipped a record, or
/// applied one twice where it rewrites (the member who left would be back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_three_nodes_hold_one_gap_free_order() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let group = gid("circle");
        let people: Vec<Identity> = (0..6).map(|_| Identity::generate()).collect();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let stores: Vec<Store> = dirs
            .iter()
            .map(|d| Store::open(d.path()).unwrap())
            .collect();
        let nats_a = cluster.connect(0, "node-a").await;
        let nats_b = cluster.connect(1, "node-b").await;
        let logs_a = open_logs(&nats_a).await;
        let logs_b = open_logs(&nats_b).await;
        let leases = open_leases(&nats_a, Duration::from_secs(10)).await;

        let mut feed = EventFeed::follow(&nats_b, &logs_b, group.as_str(), 0, 0)
            .await
            .expect("follow");
        let lease = leases.acquire("group-circle", "a").await.expect("lease");
        let mut writer = logs_a.writer(group.as_str(), &lease).await.expect("writer");
        let follower = {
            let store = stores[1].clone();
            let group = group.clone();
            tokio::spawn(async move {
                let mut applied = 0;
                while applied < 30 {
                    let record = feed.next(Duration::from_millis(300)).await.expect("next");
                    assert!(replica::apply(&store, &group, &record).expect("apply"));
                    applied = record.seq;
                }
            })
        };
        for n in 1..=30 {
            let ops = write_set(n, &people);
            let appended = replica::commit(&mut writer, &stores[0], &group, &ops)
                .await
                .expect("commit");
            assert_eq!(appended.seq, n);
            let record = LogRecord {
                seq: appended.seq,
                stream_seq: appended.stream_seq,
                epoch: writer.epoch(),
                kind: RecordKind::Event,
                holder: "a".into(),
                msg_id: String::new(),
                payload: replica::encode(&ops),
            };
            fanout::publish(&nats_a, group.as_str(), &record)
                .await
                .expect("fan out");
        }
        follower.await.expect("follower");
        let caught = replica::catch_up(&stores[2], &logs_b, &group)
            .await
            .expect("catch up");
        assert_eq!(caught, 30);

        let owner = held(&stores[0], &group);
        assert_eq!(owner.main.len(), 30);
        assert_eq!(owner.staff.len(), 10);
        assert_eq!(owner.applied, 30);
        assert!(owner
            .state
            .as_ref()
            .is_some_and(|s| s.heads == vec![(Channel::Main, 30)]));
        assert!(
            !owner.members.iter().any(|m| m.key == people[4].key()),
            "left at 12"
        );
        assert_eq!(held(&stores[1], &group), owner, "the follower");
        assert_eq!(held(&stores[2], &group), owner, "the late node");
        // Catching up again finds nothing new and changes nothing.
        assert_eq!(
            replica::catch_up(&stores[2], &logs_b, &group)
                .await
                .unwrap(),
            30
        );
        assert_eq!(held(&stores[2], &group), owner);
    })
    .await
    .expect("test bound");
}

/// A commits ten write sets and stops renewing; B, whose store has only the first
/// five, takes the lease, catches up to ten before it writes, and commits 11 to
/// 15. A's next commit is refused (fenced) and applies nothing to A's store; A
/// catches up as a follower. Both stores then hold 1 to 15, each seq once. A
/// write A made to its own sled that never reached the log is removed by a
/// rebuild from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_catches_up_before_writing_and_the_old_one_is_fenced() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let ttl = Duration::from_millis(1500);
        let group = gid("circle");
        let people: Vec<Identity> = (0..6).map(|_| Identity::generate()).collect();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store_a, store_b) = (
            Store::open(dir_a.path()).unwrap(),
            Store::open(dir_b.path()).unwrap(),
        );
        let nats_a = cluster.connect(0, "node-a").await;
        let nats_b = cluster.connect(1, "node-b").await;
        let (logs_a, logs_b) = (open_logs(&nats_a).await, open_logs(&nats_b).await);
        let (leases_a, leases_b) = (
            open_leases(&nats_a, ttl).await,
            open_leases(&nats_b, ttl).await,
        );

        let lease_a = leases_a.acquire("group-circle", "a").await.expect("a");
        let mut writer_a = logs_a
            .writer(group.as_str(), &lease_a)
            .await
            .expect("writer a");
        for n in 1..=10 {
            replica::commit(&mut writer_a, &store_a, &group, &write_set(n, &people))
                .await
                .expect("a commits");
            if n == 5 {
                assert_eq!(
                    replica::catch_up(&store_b, &logs_b, &group).await.unwrap(),
                    5
                );
            }
        }

        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let lease_b = leases_b
            .acquire("group-circle", "b")
            .await
            .expect("b takes over");
        let mut writer_b = logs_b
            .writer(group.as_str(), &lease_b)
            .await
            .expect("writer b");
        assert_eq!(
            replica::catch_up(&store_b, &logs_b, &group).await.unwrap(),
            10
        );
        assert_eq!(writer_b.last_seq(), 10);
        for n in 11..=15 {
            let appended = replica::commit(&mut writer_b, &store_b, &group, &write_set(n, &people))
                .await
                .expect("b commits");
            assert_eq!(appended.seq, n, "no seq reused or skipped");
        }

        let before = held(&store_a, &group);
        let stale = replica::commit(&mut writer_a, &store_a, &group, &write_set(11, &people)).await;
        assert!(
            matches!(stale, Err(ClusterError::Fenced { .. })),
            "{stale:?}"
        );
        assert_eq!(
            held(&store_a, &group),
            before,
            "a refused commit applies nothing"
        );
        assert_eq!(
            replica::catch_up(&store_a, &logs_a, &group).await.unwrap(),
            15
        );

        let a = held(&store_a, &group);
        assert_eq!(a, held(&store_b, &group));
        let seqs: Vec<u64> = a.main.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=15).collect::<Vec<_>>());

        // The actor writes its sled before the append: a node whose append is then
        // refused holds a write the log does not. Catching up cannot see it (its
        // mark is already at the tail); rebuilding from the log removes it.
        let stray = Identity::generate();
        store_a
            .put_event(&group, &Channel::Main, &note(16, &stray))
            .unwrap();
        store_a
            .put_member(&group, &member(&stray, "stray"))
            .unwrap();
        replica::catch_up(&store_a, &logs_a, &group).await.unwrap();
        assert_ne!(held(&store_a, &group), held(&store_b, &group));
        assert_eq!(
            replica::rebuild(&store_a, &logs_a, &group).await.unwrap(),
            15
        );
        assert_eq!(held(&store_a, &group), held(&store_b, &group));
    })
    .await
    .expect("test bound");
}

/// Applying by hand: a record past the next one (a gap), an unreadable one and
/// one of a newer format are refused and change nothing; a repeat and a fence
/// are skipped. Needs no NATS.
#[test]
fn a_gap_or_an_unreadable_record_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let group = gid("circle");
    let people: Vec<Identity> = (0..6).map(|_| Identity::generate()).collect();
    let record = |seq: u64, payload: bytes::Bytes| LogRecord {
        seq,
        stream_seq: seq,
        epoch: 1,
        kind: RecordKind::Event,
        holder: "a".into(),
        msg_id: String::new(),
        payload,
    };
    assert!(replica::apply(
        &store,
        &group,
        &record(1, replica::encode(&write_set(1, &people)))
    )
    .unwrap());
    let after_one = held(&store, &group);

    let gap = replica::apply(
        &store,
        &group,
        &record(3, replica::encode(&write_set(3, &people))),
    );
    assert!(matches!(gap, Err(ClusterError::Corrupt { .. })), "{gap:?}");
    for payload in [
        bytes::Bytes::from_static(b"not json"),
        bytes::Bytes::from_static(br#"{"v":2,"ops":[]}"#),
        bytes::Bytes::from_static(br#"{"v":1,"ops":[{"op":"drop_table"}]}"#),
    ] {
        let refused = replica::apply(&store, &group, &record(2, payload));
        assert!(
            matches!(refused, Err(ClusterError::Corrupt { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(held(&store, &group), after_one, "nothing changed");

    assert!(!replica::apply(
        &store,
        &group,
        &record(1, replica::encode(&write_set(2, &people)))
    )
    .unwrap());
    let mut fence = record(2, bytes::Bytes::new());
    fence.kind = RecordKind::Fence;
    assert!(!replica::apply(&store, &group, &fence).unwrap());
    assert_eq!(
        held(&store, &group),
        after_one,
        "a repeat and a fence change nothing"
    );
    assert!(replica::apply(
        &store,
        &group,
        &record(2, replica::encode(&write_set(2, &people)))
    )
    .unwrap());
    assert_eq!(store.replica_applied(&group).unwrap(), (2, 2));
}
