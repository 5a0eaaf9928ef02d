//! The cluster's escalation queue (issue 18: "flags durable before their ack", "a
//! new leader re-arms every pending deadline from the replicated queue") against a
//! real three-node nats-server cluster on loopback: ids unique across nodes, no
//! merge lost to a race, every unresolved escalation found by a new router after a
//! NATS server is killed, whatever a writer left half-done. Each test starts its
//! own cluster and is bounded in time.

use std::time::Duration;

use peerhub_protocol::escalation::{EscalationStatus, EscalationView, Severity};
use peerhub_server::cluster::escalations::{deadlines, EscalationQueue, QueueConfig};
use peerhub_server::cluster::{ClusterError, Nats};
use peerhub_server::store::records::EscalationRecord;
use peerhub_tests::identity::{gid, Identity};
use peerhub_tests::nats::NatsCluster;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

/// Opens the queue, waiting (up to 30 s) while JetStream elects leaders.
async fn open(nats: &Nats) -> EscalationQueue {
    let config = QueueConfig::default();
    peerhub_tests::nats::opened("the escalation bucket", || {
        EscalationQueue::open(nats, &config)
    })
    .await
}

/// An escalation as the router stores it.
fn record(id: u64, status: EscalationStatus, deadline_ms: Option<u64>) -> EscalationRecord {
    EscalationRecord {
        view: EscalationView {
            id,
            group: gid("circle"),
            about: Identity::generate().key(),
            severity: Severity::Urgent,
            status,
            level: 1,
            waiting_for: Vec::new(),
            deadline_ms,
            created_ms: 1_000 + id,
            handler: None,
            flags: Vec::new(),
            context: Vec::new(),
            steps: Vec::new(),
            outcome: (status == EscalationStatus::Resolved).then(|| "resolved".to_string()),
        },
        tell_subject: true,
        flaggers: Vec::new(),
        merged: 0,
        counted: 0,
        consent: None,
        name: None,
    }
}

/// Six takers, two per NATS server, ask for ten ids each at once: the sixty ids
/// are 1 to 60, each once. Fails if the counter were a plain put (two takers
/// reading the same last id would both get the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_ids_taken_at_once_on_every_server_are_unique_and_gap_free() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut takers = Vec::new();
        for i in 0..6 {
            let queue = open(&cluster.connect(i, &format!("router-{i}")).await).await;
            takers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..10 {
                    ids.push(queue.next_id().await.expect("an id"));
                }
                ids
            }));
        }
        let mut all = Vec::new();
        for taker in takers {
            all.extend(taker.await.expect("taker"));
        }
        all.sort_unstable();
        assert_eq!(all, (1..=60).collect::<Vec<u64>>());
    })
    .await
    .expect("bounded");
}

/// Flags about one person merged at once by four writers on different servers:
/// every merge counts (40 of 40). A write from a stale read, and a second
/// "create" of an id that exists, are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_into_one_escalation_lose_none_and_stale_writes_are_refused() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let queue = open(&cluster.connect(0, "router").await).await;
        let first = record(1, EscalationStatus::Open, Some(60_000));
        let created = queue.put_record(&first, 0).await.expect("created");
        // A second create of the same id is refused: it would drop the first.
        let again = queue
            .put_record(&record(1, EscalationStatus::Open, None), 0)
            .await;
        assert!(
            matches!(again, Err(ClusterError::Moved { .. })),
            "{again:?}"
        );
        assert_eq!(
            queue.get(1).await.unwrap().unwrap(),
            (first.clone(), created)
        );

        let mut writers = Vec::new();
        for i in 0..4 {
            let queue = open(&cluster.connect(i, &format!("merger-{i}")).await).await;
            writers.push(tokio::spawn(async move {
                for _ in 0..10 {
                    queue
                        .update(1, |current| {
                            let mut next = current.expect("stored").clone();
                            next.merged += 1;
                            Some(next)
                        })
                        .await
                        .expect("merged");
                }
            }));
        }
        for writer in writers {
            writer.await.expect("writer");
        }
        let (merged, revision) = queue.get(1).await.unwrap().expect("still there");
        assert_eq!(merged.merged, 40, "every merge counted");

        // A writer holding the first read (a router that lost its lease, say)
        // cannot write over the forty merges.
        let mut stale = first.clone();
        stale.view.status = EscalationStatus::Resolved;
        let refused = queue.put_record(&stale, created).await;
        assert!(
            matches!(refused, Err(ClusterError::Moved { .. })),
            "{refused:?}"
        );
        assert_eq!(queue.get(1).await.unwrap().unwrap(), (merged, revision));

        // A change naming another escalation is refused before anything is written.
        let wrong = queue
            .update(1, |_| Some(record(2, EscalationStatus::Open, None)))
            .await;
        assert!(
            matches!(wrong, Err(ClusterError::Corrupt { .. })),
            "{wrong:?}"
        );
        assert!(queue.get(2).await.unwrap().is_none());
        // `None` from the change writes nothing.
        assert!(queue.update(1, |_| None).await.unwrap().is_none());
        assert_eq!(queue.get(1).await.unwrap().unwrap().1, revision);
    })
    .await
    .expect("bounded");
}

/// A router writes open, acknowledged and resolved escalations, and dies in each
/// of the two windows a write has (an `open` mark with no record yet; a record
/// resolved whose mark was not yet removed). A NATS server is killed. A new
/// router on another server finds exactly the unresolved ones, oldest first, with
/// their deadlines to re-arm — resolved ones are not among them — and clears the
/// left-over marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_router_finds_every_unresolved_escalation_after_a_server_is_killed() {
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let nats = cluster.connect(0, "old-router").await;
        let queue = open(&nats).await;
        // An empty queue has nothing open.
        assert!(queue.unresolved().await.unwrap().is_empty());
        let stored = [
            record(1, EscalationStatus::Open, Some(50_000)),
            record(2, EscalationStatus::Acknowledged, None),
            record(3, EscalationStatus::Resolved, None),
            record(4, EscalationStatus::Open, Some(20_000)),
            record(5, EscalationStatus::Open, Some(90_000)),
        ];
        for r in &stored {
            queue.put_record(r, 0).await.expect("stored");
        }
        // Escalation 1 resolved later through an update: its mark goes.
        queue
            .update(1, |current| {
                let mut next = current.expect("stored").clone();
                next.view.status = EscalationStatus::Resolved;
                next.view.deadline_ms = None;
                Some(next)
            })
            .await
            .unwrap()
            .expect("written");
        // Window 1: the mark of escalation 6 was written, the record never was.
        let js = nats.jetstream();
        js.publish("$KV.peerhub_escalations.open.6", bytes::Bytes::new())
            .await
            .unwrap()
            .await
            .unwrap();
        // Window 2: escalation 5 was stored resolved and the writer died before
        // removing its mark (the record written straight to its key).
        let mut resolved = stored[4].clone();
        resolved.view.status = EscalationStatus::Resolved;
        js.publish(
            "$KV.peerhub_escalations.esc.5",
            serde_json::to_vec(&resolved).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        drop(queue);
        drop(nats);

        cluster.kill("n1").await;
        let queue = open(&cluster.connect(1, "new-router").await).await;
        let open_now = loop {
            match queue.unresolved().await {
                Ok(found) => break found,
                Err(error) => {
                    eprintln!("reading the queue again: {error}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let ids: Vec<u64> = open_now.iter().map(|r| r.view.id).collect();
        assert_eq!(ids, vec![2, 4], "exactly the unresolved ones, oldest first");
        assert_eq!(open_now[0], stored[1]);
        assert_eq!(open_now[1], stored[3]);
        assert_eq!(
            deadlines(&open_now).into_iter().collect::<Vec<_>>(),
            vec![(20_000, 4)],
            "the deadline to re-arm"
        );
        // The left-over marks were cleared: a second reading finds the same, and
        // the new router can write on the surviving quorum.
        assert_eq!(queue.unresolved().await.unwrap().len(), 2);
        queue.next_id().await.expect("an id after the kill");
        queue
            .put_record(&record(7, EscalationStatus::Open, Some(5_000)), 0)
            .await
            .expect("a write after the kill");
        let ids: Vec<u64> = queue
            .unresolved()
            .await
            .unwrap()
            .iter()
            .map(|r| r.view.id)
            .collect();
        assert_eq!(ids, vec![2, 4, 7]);
    })
    .await
    .expect("bounded");
}

/// A value that is not an escalation record is reported as corrupt, not taken
/// for an empty or resolved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_is_reported_not_skipped() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let nats = cluster.connect(2, "router").await;
        let queue = open(&nats).await;
        queue
            .put_record(&record(1, EscalationStatus::Open, Some(1)), 0)
            .await
            .unwrap();
        nats.jetstream()
            .publish("$KV.peerhub_escalations.esc.1", "not json".into())
            .await
            .unwrap()
            .await
            .unwrap();
        let read = queue.get(1).await;
        assert!(
            matches!(read, Err(ClusterError::Corrupt { .. })),
            "{read:?}"
        );
        let listed = queue.unresolved().await;
        assert!(
            matches!(listed, Err(ClusterError::Corrupt { .. })),
            "{listed:?}"
        );
    })
    .await
    .expect("bounded");
}
