//! Cluster building blocks (issue 18) against a real three-node nats-server
//! cluster with JetStream on loopback: leases, the fenced group log, exactly-once
//! routing steps, and nats-server's own serialisation of expected-sequence
//! publishes. Each test starts its own cluster and is bounded in time.

use std::sync::Arc;
use std::time::Duration;

use peerhub_server::clock::Clock;
use peerhub_server::cluster::dedupe::{StepOutcome, Steps, StepsConfig};
use peerhub_server::cluster::lease::{LeaseConfig, LeaseState, Leases};
use peerhub_server::cluster::log::{GroupLogs, LogConfig, RecordKind};
use peerhub_server::cluster::{ClusterError, Nats};
use peerhub_tests::nats::NatsCluster;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

/// A payload from text.
fn b(text: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(text.as_bytes())
}

/// Opens the log stream, waiting (up to 30 s) while JetStream elects leaders after
/// a server was killed.
async fn open_logs(nats: &Nats) -> GroupLogs {
    let config = LogConfig::default();
    peerhub_tests::nats::opened("the log stream", || GroupLogs::open(nats, &config)).await
}

/// Two would-be owners of a group, A and B, on different NATS servers: each
/// with its connection, the lease bucket (leases lasting `ttl`) and the log.
struct Owners {
    nats_a: Nats,
    nats_b: Nats,
    leases_a: Leases,
    leases_b: Leases,
    logs_a: GroupLogs,
    logs_b: GroupLogs,
}

async fn owners(cluster: &NatsCluster, ttl: Duration) -> Owners {
    let nats_a = cluster.connect(0, "owner-a").await;
    let nats_b = cluster.connect(1, "owner-b").await;
    let open_leases = |nats: &Nats| {
        let nats = nats.clone();
        async move {
            Leases::open(&nats, &lease_config(ttl), Clock::system())
                .await
                .expect("leases")
        }
    };
    Owners {
        leases_a: open_leases(&nats_a).await,
        leases_b: open_leases(&nats_b).await,
        logs_a: open_logs(&nats_a).await,
        logs_b: open_logs(&nats_b).await,
        nats_a,
        nats_b,
    }
}

fn lease_config(ttl: Duration) -> LeaseConfig {
    LeaseConfig {
        ttl,
        ..LeaseConfig::default()
    }
}

/// Two (here: six, two per NATS server) would-be owners race for one lease:
/// exactly one wins, the others are told it is held; after the winner releases,
/// the next owner gets the next epoch and the old holder's renewal fails. Fails if
/// acquisition were a plain put instead of a compare-and-set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_raced_for_has_exactly_one_winner() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut contenders = Vec::new();
        for i in 0..6 {
            let nats = cluster.connect(i, &format!("contender-{i}")).await;
            let leases = Leases::open(
                &nats,
                &lease_config(Duration::from_secs(30)),
                Clock::system(),
            )
            .await
            .expect("open leases");
            contenders.push(leases);
        }
        for round in 0..5 {
            let key = format!("group-race-{round}");
            let start = Arc::new(tokio::sync::Barrier::new(contenders.len()));
            let tasks: Vec<_> = contenders
                .iter()
                .enumerate()
                .map(|(i, leases)| {
                    let (leases, start, key) = (leases.clone(), start.clone(), key.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        leases.acquire(&key, &format!("node-{i}")).await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for (i, task) in tasks.into_iter().enumerate() {
                match task.await.expect("task") {
                    Ok(lease) => winners.push((i, lease)),
                    Err(ClusterError::Held { epoch, .. }) => assert_eq!(epoch, 1, "round {round}"),
                    Err(other) => panic!("round {round}: contender {i}: {other}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let (winner, lease) = winners.pop().expect("one winner");
            assert_eq!(lease.epoch(), 1);
            let (current, _) = contenders[0]
                .current(&key)
                .await
                .expect("read")
                .expect("some");
            assert_eq!(current.holder, format!("node-{winner}"));

            // Renewal keeps it; release hands it on with the next epoch.
            let mut renewed = lease.clone();
            contenders[winner].renew(&mut renewed).await.expect("renew");
            assert!(renewed.revision() > lease.revision());
            let other = (winner + 1) % contenders.len();
            assert!(matches!(
                contenders[other].acquire(&key, "late").await,
                Err(ClusterError::Held { epoch: 1, .. })
            ));
            contenders[winner]
                .release(renewed.clone())
                .await
                .expect("release");
            let next = contenders[other]
                .acquire(&key, "next")
                .await
                .expect("take over");
            assert_eq!(next.epoch(), 2);
            // The old holder learns it lost the lease: renewing and releasing fail.
            let mut stale = renewed;
            assert!(matches!(
                contenders[winner].renew(&mut stale).await,
                Err(ClusterError::LeaseLost { epoch: 1, .. })
            ));
            assert!(matches!(
                contenders[winner].release(stale).await,
                Err(ClusterError::LeaseLost { .. })
            ));
        }
    })
    .await
    .expect("test bound");
}

/// A partitioned or paused owner whose lease expired cannot append once the new
/// owner has opened the log, not even before the new owner's first event; the new
/// owner appends and the group's seqs stay gap-free across the hand-over. Fails if
/// appends lose their expected-sequence check, the new owner's fence record, or
/// the epoch in their message ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_cannot_append_and_seqs_stay_gap_free() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let ttl = Duration::from_millis(1500);
        let Owners {
            leases_a,
            leases_b,
            logs_a,
            logs_b,
            ..
        } = owners(&cluster, ttl).await;

        let mut lease_a = leases_a.acquire("group-g1", "a").await.expect("a acquires");
        let mut writer_a_old = logs_a.writer("g1", &lease_a).await.expect("a opens");
        for i in 1..=3u64 {
            let appended = writer_a_old
                .append(b(&format!("a{i}")))
                .await
                .expect("a appends");
            assert_eq!(appended.seq, i);
        }
        // A reopens its log (its actor restarted): the first writer is stale from
        // here on but, never having been refused, still thinks it may append.
        let mut writer_a = logs_a.writer("g1", &lease_a).await.expect("a reopens");
        assert_eq!(writer_a.last_seq(), 3);
        leases_a.renew(&mut lease_a).await.expect("a renews");
        // While A's lease runs, B is refused.
        assert!(matches!(
            leases_b.acquire("group-g1", "b").await,
            Err(ClusterError::Held { epoch: 1, .. })
        ));

        // A stops renewing (a partition, a long pause); its lease expires.
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let lease_b = leases_b
            .acquire("group-g1", "b")
            .await
            .expect("b takes over");
        assert_eq!(lease_b.epoch(), 2);
        let mut writer_b = logs_b.writer("g1", &lease_b).await.expect("b opens");
        assert_eq!(writer_b.last_seq(), 3);

        // B has not appended an event yet; A, unaware, still cannot.
        let refused = writer_a.append(b("a4")).await;
        assert!(
            matches!(refused, Err(ClusterError::Fenced { epoch: 1, .. })),
            "stale append: {refused:?}"
        );
        for i in 4..=5u64 {
            let appended = writer_b
                .append(b(&format!("b{i}")))
                .await
                .expect("b appends");
            assert_eq!(appended.seq, i);
        }
        // A stays fenced, cannot renew, and cannot reopen the log on its old lease.
        assert!(matches!(
            writer_a.append(b("a5")).await,
            Err(ClusterError::Fenced { .. })
        ));
        // A stale writer's record for seq 4 is not taken for a retry of B's seq 4
        // (the epoch in the message id), so it too is refused.
        let refused = writer_a_old.append(b("a4")).await;
        assert!(
            matches!(refused, Err(ClusterError::Fenced { epoch: 1, .. })),
            "stale writer's seq 4: {refused:?}"
        );
        assert!(matches!(
            leases_a.renew(&mut lease_a).await,
            Err(ClusterError::LeaseLost { epoch: 1, .. })
        ));
        assert!(matches!(
            logs_a.writer("g1", &lease_a).await,
            Err(ClusterError::Fenced { epoch: 1, .. })
        ));
        assert_eq!(writer_b.append(b("b6")).await.expect("b appends").seq, 6);

        let events = logs_a.read_after("g1", 0).await.expect("read");
        let seen: Vec<(u64, u64, String)> = events
            .iter()
            .map(|r| {
                (
                    r.seq,
                    r.epoch,
                    String::from_utf8_lossy(&r.payload).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, 1, "a1".to_string()),
                (2, 1, "a2".to_string()),
                (3, 1, "a3".to_string()),
                (4, 2, "b4".to_string()),
                (5, 2, "b5".to_string()),
                (6, 2, "b6".to_string()),
            ]
        );
        assert_eq!(logs_b.read_after("g1", 4).await.expect("read").len(), 2);
        // Resuming from a snapshot that covers the log up to B's seq 4 reads only
        // what follows it.
        let b4 = events
            .iter()
            .find(|r| r.seq == 4)
            .expect("seq 4")
            .stream_seq;
        let since: Vec<u64> = logs_b
            .read_since("g1", b4)
            .await
            .expect("read since")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(since, vec![5, 6]);
        let last = events.last().expect("events").stream_seq;
        assert!(logs_b
            .read_since("g1", last)
            .await
            .expect("read")
            .is_empty());
        // Three fences (A's two openings, B's), no stray record.
        let all = logs_a.read_all("g1").await.expect("read all");
        assert_eq!(
            all.iter().filter(|r| r.kind == RecordKind::Fence).count(),
            3
        );
        assert_eq!(all.len(), 9);
    })
    .await
    .expect("test bound");
}

/// kill -9 the log stream's leader while an owner appends: every append it was
/// told was acknowledged is readable afterwards from the surviving servers, in
/// order, gap-free and exactly once, and the appends go on after the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill_9_of_a_nats_server() {
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        const TOTAL: u64 = 200;
        const KILL_AFTER: u64 = 60;
        let setup = cluster.connect(0, "setup").await;
        GroupLogs::open(&setup, &LogConfig::default())
            .await
            .expect("logs");
        let leader = cluster.stream_leader("PEERHUB_LOG").await;
        let leader_index = cluster
            .nodes
            .iter()
            .position(|n| n.name == leader)
            .expect("leader is a node");
        // The owner talks to the leader first, so the kill cuts its connection too.
        let nats = cluster.connect(leader_index, "owner").await;
        let leases = Leases::open(
            &nats,
            &lease_config(Duration::from_secs(60)),
            Clock::system(),
        )
        .await
        .expect("leases");
        let lease = leases.acquire("group-crash", "owner").await.expect("lease");
        let logs_owner = GroupLogs::open(&nats, &LogConfig::default())
            .await
            .expect("logs");
        let mut writer = logs_owner.writer("crash", &lease).await.expect("writer");

        let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
        let appender = tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut before_kill = Vec::new();
            for i in 1..=TOTAL {
                let started = std::time::Instant::now();
                let appended = writer
                    .append(b(&format!("rec-{i}")))
                    .await
                    .unwrap_or_else(|error| panic!("append {i}: {error}"));
                longest = longest.max(started.elapsed());
                if i <= KILL_AFTER {
                    before_kill.push(started.elapsed());
                }
                acked_tx.send((appended.seq, i)).expect("send");
            }
            before_kill.sort();
            (longest, before_kill[before_kill.len() / 2])
        });
        let mut acked = Vec::new();
        while let Some((seq, i)) = acked_rx.recv().await {
            acked.push((seq, i));
            if i == KILL_AFTER {
                cluster.kill(&leader).await;
            }
        }
        let (longest, median) = appender.await.expect("appender");
        // Figures for docs/CLUSTER.md, not assertions.
        eprintln!("median append before the kill (R3, fsync always): {median:?}");
        eprintln!("longest append across the kill of the stream leader: {longest:?}");
        assert_eq!(acked.len() as u64, TOTAL);
        assert!(acked.iter().all(|(seq, i)| seq == i), "seqs follow appends");

        // Read back through a survivor.
        let survivor = cluster
            .nodes
            .iter()
            .position(|n| n.is_running())
            .expect("a survivor");
        let reader = cluster.connect(survivor, "reader").await;
        let logs = open_logs(&reader).await;
        let events = logs.read_after("crash", 0).await.expect("read");
        let payloads: Vec<String> = events
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        let expected: Vec<String> = (1..=TOTAL).map(|i| format!("rec-{i}")).collect();
        assert_eq!(
            payloads, expected,
            "every acknowledged append once, in order"
        );
        let seqs: Vec<u64> = events.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>(), "gap-free seqs");

        // The killed server comes back on its own data and catches up; then the new
        // leader is killed, so the records must now be served from a quorum that
        // includes the restarted server.
        cluster.restart(&leader).await;
        cluster.wait_ready().await;
        let watcher = cluster.connect(survivor, "watcher").await;
        let mut stream = watcher
            .jetstream()
            .get_stream("PEERHUB_LOG")
            .await
            .expect("stream");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let new_leader = loop {
            let info = stream.info().await.expect("info").clone();
            let cluster_info = info.cluster.expect("cluster info");
            let caught_up = cluster_info.replicas.len() == 2
                && cluster_info
                    .replicas
                    .iter()
                    .all(|peer| peer.current && !peer.offline && peer.lag.unwrap_or(0) == 0);
            if caught_up {
                break cluster_info.leader.expect("a leader");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the restarted server did not catch up: {cluster_info:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_ne!(
            new_leader, leader,
            "the killed server is not the leader again yet"
        );
        cluster.kill(&new_leader).await;
        let restarted = cluster
            .nodes
            .iter()
            .position(|n| n.name == leader)
            .expect("restarted node");
        let reader = cluster.connect(restarted, "reader-2").await;
        let logs = open_logs(&reader).await;
        let again: Vec<u64> = logs
            .read_after("crash", 0)
            .await
            .expect("read after the second kill")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(again, (1..=TOTAL).collect::<Vec<_>>());
    })
    .await
    .expect("test bound");
}

/// An escalation's routing step recorded by six racers on three servers happens
/// once; a repeat within the duplicate window is recognised by its message id,
/// and after the window by the step's subject. A bare message-id publish after the
/// window is stored again: the subject check is what makes it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_step_happens_once_within_and_after_the_duplicate_window() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let window = Duration::from_secs(1);
        let config = StepsConfig {
            duplicate_window: window,
            ..StepsConfig::default()
        };
        let mut racers = Vec::new();
        for i in 0..6 {
            let nats = cluster.connect(i, &format!("router-{i}")).await;
            racers.push(Steps::open(&nats, &config).await.expect("steps"));
        }
        let start = Arc::new(tokio::sync::Barrier::new(racers.len()));
        let tasks: Vec<_> = racers
            .iter()
            .map(|steps| {
                let (steps, start) = (steps.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    steps.record(7, 1, b("page rota entry 1")).await
                })
            })
            .collect();
        let mut firsts = Vec::new();
        let mut repeats = Vec::new();
        for task in tasks {
            match task.await.expect("task").expect("record") {
                StepOutcome::First { stream_seq } => firsts.push(stream_seq),
                StepOutcome::Repeat { stream_seq, .. } => repeats.push(stream_seq),
            }
        }
        assert_eq!(firsts.len(), 1, "exactly one racer performs the step");
        let first = firsts[0];
        assert!(
            repeats.iter().all(|seq| *seq == first),
            "{repeats:?} vs {first}"
        );

        assert_eq!(
            racers[0].record(7, 1, b("again")).await.expect("record"),
            StepOutcome::Repeat {
                stream_seq: first,
                within_window: true
            }
        );
        assert!(matches!(
            racers[1]
                .record(7, 2, b("page rota entry 2"))
                .await
                .expect("record"),
            StepOutcome::First { .. }
        ));
        assert!(matches!(
            racers[2].record(8, 1, b("page")).await.expect("record"),
            StepOutcome::First { .. }
        ));

        tokio::time::sleep(window + Duration::from_millis(1500)).await;
        assert_eq!(
            racers[3]
                .record(7, 1, b("late retry"))
                .await
                .expect("record"),
            StepOutcome::Repeat {
                stream_seq: first,
                within_window: false
            },
            "after the window the step's subject still refuses a repeat"
        );
        // Why the subject check: the message id alone is forgotten after the window.
        let js = cluster.connect(0, "bare").await;
        let ack = js
            .jetstream()
            .send_publish(
                racers[0].subject(8, 1),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload(b("page"))
                    .message_id(peerhub_server::cluster::dedupe::step_message_id(8, 1)),
            )
            .await
            .expect("publish")
            .await
            .expect("ack");
        assert!(
            !ack.duplicate,
            "a bare message id is not remembered after the window"
        );
    })
    .await
    .expect("test bound");
}

/// The property the fence rests on, checked on the pinned nats-server: of several
/// publishes racing with the same `Nats-Expected-Last-Subject-Sequence` on an R3
/// stream, through all three servers, exactly one is stored (nats-io/nats-server
/// issue 4320: not so in 2.9.15-2.9.20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_expected_sequence_publishes_are_serialised() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let config = LogConfig {
            stream: "RACE".to_string(),
            prefix: "race".to_string(),
            ..LogConfig::default()
        };
        let mut publishers = Vec::new();
        for i in 0..6 {
            let nats = cluster.connect(i, &format!("publisher-{i}")).await;
            GroupLogs::open(&nats, &config).await.expect("stream");
            publishers.push(nats);
        }
        let stream = publishers[0]
            .jetstream()
            .get_stream("RACE")
            .await
            .expect("stream");
        let mut last = 0u64;
        for round in 0..20u64 {
            let start = Arc::new(tokio::sync::Barrier::new(publishers.len()));
            let tasks: Vec<_> = publishers
                .iter()
                .map(|nats| {
                    let (js, start) = (nats.jetstream().clone(), start.clone());
                    tokio::spawn(async move {
                        let message = async_nats::jetstream::message::PublishMessage::build()
                            .payload(b("x"))
                            .expected_last_subject_sequence(last);
                        start.wait().await;
                        match js.send_publish("race.g", message).await {
                            Ok(ack) => ack.await.map(|ack| ack.sequence).ok(),
                            Err(_) => None,
                        }
                    })
                })
                .collect();
            let mut acked = Vec::new();
            for task in tasks {
                if let Some(seq) = task.await.expect("task") {
                    acked.push(seq);
                }
            }
            // What the stream holds, not only what was acknowledged (an ack lost to
            // a timeout under load would hide a second stored record).
            let stored = stream.get_info().await.expect("info").state.messages;
            assert_eq!(stored, round + 1, "round {round}: acked {acked:?}");
            last = stream
                .get_last_raw_message_by_subject("race.g")
                .await
                .expect("tail")
                .sequence;
            assert!(
                acked.len() <= 1 && acked.iter().all(|seq| *seq == last),
                "round {round}: acked {acked:?}, tail {last}"
            );
        }
    })
    .await
    .expect("test bound");
}

/// A kept lease outlives its TTL while NATS has a quorum (a contender is refused
/// throughout) and, released, passes on at once. Without a quorum no renewal can
/// succeed and no refusal can arrive: the holder gives the lease up when its last
/// renewal's TTL ends, before the lease can be taken over. Fails if the keeper
/// gave up only on an explicit refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lease_is_given_up_when_it_cannot_be_renewed() {
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let ttl = Duration::from_millis(1500);
        let nats_a = cluster.connect(0, "holder").await;
        let nats_b = cluster.connect(1, "contender").await;
        let leases_a = Leases::open(&nats_a, &lease_config(ttl), Clock::system())
            .await
            .expect("leases");
        let leases_b = Leases::open(&nats_b, &lease_config(ttl), Clock::system())
            .await
            .expect("leases");
        let mut keeper = leases_a.keep(leases_a.acquire("router", "a").await.expect("acquire"));

        // Three TTLs long, the contender is refused and the holder may act.
        let started = std::time::Instant::now();
        while started.elapsed() < ttl * 3 {
            assert!(matches!(
                leases_b.acquire("router", "b").await,
                Err(ClusterError::Held { epoch: 1, .. })
            ));
            assert!(keeper.is_held());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // Released, a kept lease passes on at once with the next epoch.
        let jobs = leases_a.keep(leases_a.acquire("jobs", "a").await.expect("acquire"));
        jobs.release().await.expect("release");
        assert_eq!(
            leases_b
                .acquire("jobs", "b")
                .await
                .expect("take over")
                .epoch(),
            2
        );

        // No quorum: two of the three servers die.
        cluster.kill("n2").await;
        cluster.kill("n3").await;
        tokio::time::timeout(Duration::from_secs(20), keeper.lost())
            .await
            .expect("the holder gives the lease up without a quorum");
        let lost_at = peerhub_tests::now_ms();
        assert!(!keeper.is_held());
        assert_eq!(keeper.state(), LeaseState::Lost { epoch: 1 });

        // Quorum back: the contender takes it over, and only after the holder stopped.
        cluster.restart("n2").await;
        cluster.restart("n3").await;
        cluster.wait_ready().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let taken = loop {
            match leases_b.acquire("router", "b").await {
                Ok(lease) => break lease,
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no take-over: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let taken_at = peerhub_tests::now_ms();
        assert_eq!(taken.epoch(), 2);
        assert!(lost_at <= taken_at, "the old holder stopped first");
        drop(keeper);
    })
    .await
    .expect("test bound");
}

/// A group taken over from a snapshot (docs/CLUSTER.md §3): owner A appends ten
/// events, snapshots, appends five more and stops renewing; B takes the lease,
/// opens its writer and restores — the snapshot and exactly the five events after
/// it, so its state equals A's — and goes on from seq 16. A's late snapshot is
/// refused (a newer epoch wrote one), a snapshot covering no more than the stored
/// one is not written, and a fresh reader restores B's snapshot with nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_restores_from_the_snapshot_and_the_events_after_it() {
    use peerhub_server::cluster::snapshot::{restore, Snapshot, SnapshotConfig, Snapshots};
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let ttl = Duration::from_millis(1500);
        let Owners {
            nats_a,
            nats_b,
            leases_a,
            leases_b,
            logs_a,
            logs_b,
        } = owners(&cluster, ttl).await;
        let snaps_a = Snapshots::open(&nats_a, &SnapshotConfig::default())
            .await
            .expect("snapshots");
        let snaps_b = Snapshots::open(&nats_b, &SnapshotConfig::default())
            .await
            .expect("snapshots");
        // The "state" here is the sum of the events' numbers.
        let sum = |records: &[peerhub_server::cluster::log::LogRecord], from: u64| {
            records.iter().fold(from, |acc, r| {
                acc + std::str::from_utf8(&r.payload)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
        };

        // Nothing yet: an empty restore.
        let empty = restore(&snaps_a, &logs_a, "g7").await.expect("restore");
        assert!(empty.snapshot.is_none() && empty.after.is_empty());
        assert_eq!(empty.last_seq(), 0);

        let lease_a = leases_a.acquire("group-g7", "a").await.expect("a acquires");
        let mut writer_a = logs_a.writer("g7", &lease_a).await.expect("a opens");
        let mut state_a = 0u64;
        let mut at_ten = None;
        for i in 1..=15u64 {
            let appended = writer_a.append(b(&i.to_string())).await.expect("a appends");
            state_a += i;
            if i == 10 {
                at_ten = Some(Snapshot {
                    epoch: lease_a.epoch(),
                    seq: appended.seq,
                    stream_seq: appended.stream_seq,
                    state: b(&state_a.to_string()),
                });
                assert!(snaps_a.save("g7", at_ten.as_ref().unwrap()).await.unwrap());
            }
        }
        let at_ten = at_ten.unwrap();
        // The same snapshot again covers nothing more: not written.
        assert!(!snaps_a.save("g7", &at_ten).await.unwrap());

        // A stops renewing; B takes over and restores.
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let lease_b = leases_b
            .acquire("group-g7", "b")
            .await
            .expect("b takes over");
        let mut writer_b = logs_b.writer("g7", &lease_b).await.expect("b opens");
        let restored = restore(&snaps_b, &logs_b, "g7").await.expect("restore");
        assert_eq!(restored.snapshot.as_ref(), Some(&at_ten));
        assert_eq!(
            restored.after.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (11..=15).collect::<Vec<u64>>(),
            "exactly the events after the snapshot"
        );
        let from: u64 = std::str::from_utf8(&at_ten.state).unwrap().parse().unwrap();
        let mut state_b = sum(&restored.after, from);
        assert_eq!(state_b, state_a, "B's state is A's");
        assert_eq!(restored.last_seq(), writer_b.last_seq());
        let mut last = None;
        for i in 16..=20u64 {
            let appended = writer_b.append(b(&i.to_string())).await.expect("b appends");
            assert_eq!(appended.seq, i);
            state_b += i;
            last = Some(appended);
        }
        let last = last.unwrap();
        let at_twenty = Snapshot {
            epoch: lease_b.epoch(),
            seq: last.seq,
            stream_seq: last.stream_seq,
            state: b(&state_b.to_string()),
        };
        assert!(snaps_b.save("g7", &at_twenty).await.unwrap());

        // A, stale, snapshots what it had: refused, and B's snapshot stays.
        let late = Snapshot {
            epoch: lease_a.epoch(),
            seq: 15,
            stream_seq: at_ten.stream_seq + 5,
            state: b(&state_a.to_string()),
        };
        let refused = snaps_a.save("g7", &late).await;
        assert!(
            matches!(refused, Err(ClusterError::Fenced { epoch: 1, .. })),
            "{refused:?}"
        );
        let fresh = restore(&snaps_a, &logs_a, "g7").await.expect("restore");
        assert_eq!(fresh.snapshot.as_ref(), Some(&at_twenty));
        assert!(fresh.after.is_empty());
        assert_eq!(fresh.last_seq(), 20);

        // Bad names are refused before anything is read or written.
        assert!(matches!(
            snaps_a.save("g.7", &at_twenty).await,
            Err(ClusterError::InvalidName(_))
        ));
    })
    .await
    .expect("bounded");
}

/// Event fan-out (docs/CLUSTER.md §5): the owner publishes events on core NATS,
/// but the wire loses three in the middle and the last one, and repeats one. A
/// follower on another server still gets events 1 to 20 in order, each once,
/// reading what was lost from the group's log; one that starts after event 15
/// gets only what follows, and a new event as it is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_every_event_in_order_though_the_wire_lost_some() {
    use peerhub_server::cluster::fanout::{publish, EventFeed};
    use peerhub_server::cluster::log::{LogRecord, RecordKind};
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let nats_a = cluster.connect(0, "owner").await;
        let nats_b = cluster.connect(1, "follower").await;
        let leases = Leases::open(
            &nats_a,
            &lease_config(Duration::from_secs(30)),
            Clock::system(),
        )
        .await
        .expect("leases");
        let logs_a = open_logs(&nats_a).await;
        let logs_b = open_logs(&nats_b).await;
        let lease = leases.acquire("group-g9", "owner").await.expect("lease");
        let mut writer = logs_a.writer("g9", &lease).await.expect("writer");
        let mut feed = EventFeed::follow(&nats_b, &logs_b, "g9", 0, 0)
            .await
            .expect("follow");
        let record = |seq: u64, stream_seq: u64, payload: bytes::Bytes| LogRecord {
            seq,
            stream_seq,
            epoch: lease.epoch(),
            kind: RecordKind::Event,
            holder: "owner".into(),
            msg_id: String::new(),
            payload,
        };
        let mut streams = Vec::new();
        for i in 1..=20u64 {
            let payload = b(&format!("event {i}"));
            let appended = writer.append(payload.clone()).await.expect("append");
            streams.push(appended.stream_seq);
            let event = record(appended.seq, appended.stream_seq, payload);
            if ![5, 6, 7, 20].contains(&i) {
                publish(&nats_a, "g9", &event).await.expect("publish");
            }
            if i == 10 {
                publish(&nats_a, "g9", &event).await.expect("publish again");
            }
        }
        let mut got = Vec::new();
        for _ in 1..=20 {
            let event = feed.next(Duration::from_millis(300)).await.expect("next");
            got.push((
                event.seq,
                String::from_utf8(event.payload.to_vec()).unwrap(),
            ));
        }
        let want: Vec<_> = (1..=20u64).map(|i| (i, format!("event {i}"))).collect();
        assert_eq!(got, want, "in order, each once");

        // A late follower starts after event 15.
        let mut late = EventFeed::follow(&nats_b, &logs_b, "g9", 15, streams[14])
            .await
            .expect("follow late");
        let mut got = Vec::new();
        for _ in 16..=20 {
            got.push(late.next(Duration::from_millis(300)).await.unwrap().seq);
        }
        assert_eq!(got, vec![16, 17, 18, 19, 20]);
        let payload = b("event 21");
        let appended = writer.append(payload.clone()).await.expect("append 21");
        publish(
            &nats_a,
            "g9",
            &record(appended.seq, appended.stream_seq, payload),
        )
        .await
        .unwrap();
        assert_eq!(late.next(Duration::from_millis(300)).await.unwrap().seq, 21);
        assert_eq!(feed.next(Duration::from_millis(300)).await.unwrap().seq, 21);
    })
    .await
    .expect("bounded");
}

/// Commands from other nodes (docs/CLUSTER.md §4). Before anyone serves a group,
/// a command hears at once that nobody owns it (not after its timeout). The owner
/// then takes sixty commands from two nodes one at a time, and every asker gets
/// its own answer. A command sent again after its sender timed out is answered
/// from the owner's memory with its first answer, and applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_owner_from_other_nodes_and_a_retry_is_applied_once() {
    use peerhub_server::cluster::commands::{ask, Asked, Inbox, Replies};
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let owner = cluster.connect(0, "owner").await;
        let askers = [
            cluster.connect(1, "node-b").await,
            cluster.connect(2, "node-c").await,
        ];
        let started = std::time::Instant::now();
        let none = ask(&askers[0], "g5", "k-1", b("hello"), Duration::from_secs(5)).await;
        assert_eq!(none.unwrap(), Asked::NoOwner);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no owner is said at once"
        );

        // The owner: applies each command once (a count per id), answers with the
        // order it was applied in; a slow command ("slow-…") takes 600 ms.
        let mut inbox = Inbox::serve(&owner, "g5").await.expect("serve");
        let owner_task = tokio::spawn(async move {
            let mut replies = Replies::new(1000);
            let mut applied: Vec<String> = Vec::new();
            while let Some(command) = inbox.next().await {
                if command.id.starts_with("warm-") {
                    inbox.answer(&command, b("warm")).await.expect("answer");
                    continue;
                }
                let answer = match replies.get(&command.id) {
                    Some(first) => first.clone(),
                    None => {
                        if command.id.starts_with("slow-") {
                            tokio::time::sleep(Duration::from_millis(600)).await;
                        }
                        applied.push(command.id.clone());
                        let answer = b(&format!(
                            "{} #{}",
                            String::from_utf8_lossy(&command.payload),
                            applied.len()
                        ));
                        replies.remember(&command.id, answer.clone());
                        answer
                    }
                };
                inbox.answer(&command, answer).await.expect("answer");
                if command.id == "stop" {
                    inbox.close().await;
                    return applied;
                }
            }
            applied
        });

        // The owner's interest reaches the other servers in a moment: until then
        // a node attached to another server still hears "no owner" (and, in the
        // hub, would find the lease held and ask again, as here).
        for (n, nats) in askers.iter().enumerate() {
            let id = format!("warm-{n}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match ask(nats, "g5", &id, b("warm"), Duration::from_secs(5)).await {
                    Ok(Asked::Answered(_)) => break,
                    Ok(Asked::NoOwner) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("{id}: {other:?}"),
                }
            }
        }
        let mut tasks = Vec::new();
        for (n, nats) in askers.iter().enumerate() {
            let nats = nats.clone();
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..30 {
                    let id = format!("k{n}-{i}");
                    match ask(&nats, "g5", &id, b(&id), Duration::from_secs(10)).await {
                        Ok(Asked::Answered(answer)) => {
                            answers.push(String::from_utf8(answer.to_vec()).unwrap())
                        }
                        other => panic!("{id}: {other:?}"),
                    }
                }
                answers
            }));
        }
        let mut numbers = Vec::new();
        for (n, task) in tasks.into_iter().enumerate() {
            for (i, answer) in task.await.unwrap().into_iter().enumerate() {
                let (id, number) = answer.split_once(" #").expect("an answer");
                assert_eq!(id, format!("k{n}-{i}"), "each asker gets its own answer");
                numbers.push(number.parse::<u64>().unwrap());
            }
        }
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=60).collect::<Vec<u64>>());

        // A slow command: its sender gives up, then sends it again.
        let first = ask(
            &askers[0],
            "g5",
            "slow-1",
            b("slow"),
            Duration::from_millis(200),
        )
        .await;
        assert!(
            matches!(first, Err(ClusterError::Unavailable { .. })),
            "{first:?}"
        );
        let again = ask(
            &askers[1],
            "g5",
            "slow-1",
            b("slow"),
            Duration::from_secs(10),
        )
        .await
        .expect("answered");
        assert_eq!(again, Asked::Answered(b("slow #61")));
        let stop = ask(&askers[1], "g5", "stop", b("stop"), Duration::from_secs(10))
            .await
            .expect("answered");
        assert_eq!(stop, Asked::Answered(b("stop #62")));
        let applied = owner_task.await.unwrap();
        assert_eq!(
            applied.iter().filter(|id| id.as_str() == "slow-1").count(),
            1,
            "the retried command was applied once"
        );
        // The owner stopped serving: nobody owns the group again (once the other
        // servers have heard; meanwhile a request finds nobody to answer it).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match ask(
                &askers[0],
                "g5",
                "k-2",
                b("again"),
                Duration::from_millis(500),
            )
            .await
            {
                Ok(Asked::NoOwner) => break,
                Err(ClusterError::Unavailable { .. }) if tokio::time::Instant::now() < deadline => {
                }
                other => panic!("after the owner stopped: {other:?}"),
            }
        }
    })
    .await
    .expect("bounded");
}
