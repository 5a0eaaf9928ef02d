//! The router's deadlines across nodes (issue 18: "one router for the cluster (a
//! lease; a new leader re-arms every pending deadline from the replicated queue),
//! exactly-once routing steps, the pager/push hooks called once per step however
//! many nodes there are"), against a real three-server nats-server cluster. A
//! "node" here is a routing task with its own NATS connection; killing it is
//! aborting the task with no release, which is what the cluster sees of a kill -9
//! (no more renewals, the lease runs out by its TTL). The node-level kill of a
//! `peerhub` process comes when the router is wired (docs/CLUSTER.md §10).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerhub_protocol::escalation::{EscalationStatus, EscalationView, Severity};
use peerhub_server::clock::Clock;
use peerhub_server::cluster::dedupe::{Steps, StepsConfig};
use peerhub_server::cluster::escalations::{EscalationQueue, QueueConfig};
use peerhub_server::cluster::lease::{LeaseConfig, Leases};
use peerhub_server::cluster::routing::{RoutingConfig, RoutingNode};
use peerhub_server::cluster::Nats;
use peerhub_server::store::records::EscalationRecord;
use peerhub_tests::identity::{gid, Identity};
use peerhub_tests::nats::{opened, NatsCluster};
use tokio_util::sync::CancellationToken;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);
/// Time to acknowledge at each level, in these tests.
const LEVEL_MS: u64 = 1_000;
/// The level at which nobody more is paged (the router's "unanswered").
const LAST_LEVEL: u8 = 4;

/// One effect performed: by which node, for which escalation and step, when, and
/// the deadline the step set (when the next step falls due).
#[derive(Debug, Clone, Copy)]
struct Effect {
    node: usize,
    id: u64,
    step: u32,
    at_ms: u64,
    next_due: Option<u64>,
}

type Sink = Arc<Mutex<Vec<Effect>>>;

/// An escalation as the router stores it, at `level`.
fn record(
    id: u64,
    status: EscalationStatus,
    level: u8,
    deadline_ms: Option<u64>,
) -> EscalationRecord {
    EscalationRecord {
        view: EscalationView {
            id,
            group: gid("circle"),
            about: Identity::generate().key(),
            severity: Severity::Emergency,
            status,
            level,
            waiting_for: Vec::new(),
            deadline_ms,
            created_ms: 1_000 + id,
            handler: None,
            flags: Vec::new(),
            context: Vec::new(),
            steps: Vec::new(),
            outcome: None,
        },
        tell_subject: true,
        flaggers: Vec::new(),
        merged: 0,
        counted: 0,
        consent: None,
        name: None,
    }
}

/// The routing of these tests: one level up, the next deadline `LEVEL_MS` on,
/// none at the last level.
fn advance(record: &EscalationRecord, now: u64) -> EscalationRecord {
    let mut next = record.clone();
    next.view.level += 1;
    next.view.deadline_ms = (next.view.level < LAST_LEVEL).then_some(now + LEVEL_MS);
    next
}

/// A routing node on NATS server `first`, with leases of `ttl`.
async fn node(cluster: &NatsCluster, first: usize, ttl: Duration) -> RoutingNode {
    let nats: Nats = cluster.connect(first, &format!("router-{first}")).await;
    let lease_config = LeaseConfig {
        ttl,
        ..LeaseConfig::default()
    };
    let (queue_config, steps_config) = (QueueConfig::default(), StepsConfig::default());
    RoutingNode {
        holder: format!("node-{first}"),
        leases: opened("the lease bucket", || {
            Leases::open(&nats, &lease_config, Clock::system())
        })
        .await,
        queue: opened("the escalation bucket", || {
            EscalationQueue::open(&nats, &queue_config)
        })
        .await,
        steps: opened("the steps stream", || Steps::open(&nats, &steps_config)).await,
        clock: Clock::system(),
        config: RoutingConfig {
            rescan: Duration::from_millis(200),
            ..RoutingConfig::default()
        },
    }
}

/// Runs `node` (numbered `n`) until `stop` or until its task is aborted.
fn spawn(
    node: RoutingNode,
    n: usize,
    sink: Sink,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        node.run(
            advance,
            |record: EscalationRecord, step: u32| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(Effect {
                        node: n,
                        id: record.view.id,
                        step,
                        at_ms: Clock::system().now_ms(),
                        next_due: record.view.deadline_ms,
                    });
                }
            },
            stop,
        )
        .await;
    })
}

/// Waits until `sink` holds `count` effects (or the test bound runs out).
async fn wait_for(sink: &Sink, count: usize) {
    while sink.lock().unwrap().len() < count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stores four open escalations at level 0 due within a second and a half, one
/// at level 2 whose page was never sent (escalation 7), one acknowledged and one
/// resolved (never routed); returns the first deadlines of the four.
async fn pending(queue: &EscalationQueue) -> Vec<(u64, u64)> {
    let now = Clock::system().now_ms();
    let mut due = Vec::new();
    for id in 1..=4u64 {
        let at = now + 1_000 + 150 * id;
        queue
            .put_record(&record(id, EscalationStatus::Open, 0, Some(at)), 0)
            .await
            .expect("stored");
        due.push((id, at));
    }
    // Left by a leader that moved it to level 2 and died before paging: the next
    // leader pages step 2 at once, though its next deadline is far off.
    queue
        .put_record(&record(7, EscalationStatus::Open, 2, Some(now + 60_000)), 0)
        .await
        .expect("stored");
    for (id, status) in [
        (5, EscalationStatus::Acknowledged),
        (6, EscalationStatus::Resolved),
    ] {
        queue
            .put_record(&record(id, status, 1, Some(now + 500)), 0)
            .await
            .expect("stored");
    }
    due
}

/// Checks every step of escalations 1–4 happened, step 2 of 7, none of 5 and 6,
/// and each no later than `late_ms` after it fell due.
fn check_every_step(effects: &[Effect], first_due: &[(u64, u64)], late_ms: u64) {
    assert!(
        effects
            .iter()
            .all(|e| (1..=4).contains(&e.id) || (e.id, e.step) == (7, 2)),
        "{effects:?}"
    );
    assert!(
        effects.iter().any(|e| e.id == 7),
        "step 2 of 7 was left undone"
    );
    for &(id, due) in first_due {
        let mut due = Some(due);
        for step in 1..=u32::from(LAST_LEVEL) {
            let first = effects
                .iter()
                .find(|e| e.id == id && e.step == step)
                .unwrap_or_else(|| {
                    panic!("escalation {id} step {step} never happened: {effects:?}")
                });
            let at = due.expect("a deadline for this step");
            assert!(
                first.at_ms <= at + late_ms,
                "escalation {id} step {step} came {} ms after its deadline",
                first.at_ms.saturating_sub(at)
            );
            due = first.next_due;
        }
    }
}

/// Three nodes on three servers all want to route: one leads, every deadline is
/// enforced, and each step's effects happen exactly once. Fails if the steps were
/// not recorded once across nodes (each node would page), or if a node routed
/// without the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_nodes_every_step_happens_once_and_on_time() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(node(&cluster, i, Duration::from_secs(4)).await);
        }
        let first_due = pending(&nodes[0].queue).await;
        let sink: Sink = Arc::default();
        let stop = CancellationToken::new();
        let tasks: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .map(|(n, node)| spawn(node, n, sink.clone(), stop.clone()))
            .collect();
        wait_for(&sink, 17).await;
        // Longer than a step: a second performer of any step would show by now.
        tokio::time::sleep(Duration::from_millis(2 * LEVEL_MS)).await;
        stop.cancel();
        for task in tasks {
            task.await.expect("node");
        }
        let effects = sink.lock().unwrap().clone();
        assert_eq!(effects.len(), 17, "exactly once per step: {effects:?}");
        check_every_step(&effects, &first_due, 2_000);
    })
    .await
    .expect("test bound");
}

/// The leader is killed with emergencies pending: the other node takes the lease
/// once it runs out, re-arms every deadline from the queue (those that passed
/// meanwhile fire at once), and every step still happens; a step is performed
/// twice at most once, and only when the kill fell between its effects and their
/// mark (the pager's deduplication key collapses that repeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaders_deadlines_are_enforced_by_the_next() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let ttl = Duration::from_secs(2);
        let a = node(&cluster, 0, ttl).await;
        let b = node(&cluster, 1, ttl).await;
        let first_due = pending(&a.queue).await;
        let sink: Sink = Arc::default();
        let stop = CancellationToken::new();
        let leader = spawn(a, 0, sink.clone(), stop.clone());
        // A leads before B starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let follower = spawn(b, 1, sink.clone(), stop.clone());
        // Killed while it works through the first deadlines (step 1 of 1 to 4 are
        // 150 ms apart): at a moment that differs from run to run.
        wait_for(&sink, 3).await;
        leader.abort();
        let killed_at = Clock::system().now_ms();
        let _ = leader.await;
        let before = sink.lock().unwrap().len();

        wait_for(&sink, 17).await;
        tokio::time::sleep(Duration::from_millis(2 * LEVEL_MS)).await;
        stop.cancel();
        follower.await.expect("node");
        let effects = sink.lock().unwrap().clone();
        assert!(effects[..before].iter().all(|e| e.node == 0), "{effects:?}");
        assert!(effects[before..].iter().all(|e| e.node == 1), "{effects:?}");
        assert!(
            effects[before..].iter().all(|e| e.at_ms >= killed_at),
            "{effects:?}"
        );
        let mut steps: Vec<(u64, u32)> = effects.iter().map(|e| (e.id, e.step)).collect();
        steps.sort_unstable();
        let total = steps.len();
        steps.dedup();
        assert_eq!(steps.len(), 17, "{effects:?}");
        assert!(total <= 18, "more than one repeat: {effects:?}");
        // A step due while nobody led waits for the lease to run out, then fires.
        check_every_step(&effects, &first_due, ttl.as_millis() as u64 + 3_000);
    })
    .await
    .expect("test bound");
}

/// A NATS server dies under the routers while emergencies are pending: whoever
/// leads (the same node, reconnected, or another once the lease ran out during
/// the election) still enforces every deadline, and every step happens, a step
/// performed twice at most once per change of leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_killed_under_the_routers_loses_no_step() {
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let ttl = Duration::from_secs(4);
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(node(&cluster, i, ttl).await);
        }
        let first_due = pending(&nodes[0].queue).await;
        let sink: Sink = Arc::default();
        let stop = CancellationToken::new();
        let tasks: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .map(|(n, node)| spawn(node, n, sink.clone(), stop.clone()))
            .collect();
        wait_for(&sink, 3).await;
        let leader = sink.lock().unwrap()[0].node;
        // The server the leader is connected to first.
        cluster.kill(["n1", "n2", "n3"][leader]).await;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let effects = sink.lock().unwrap().clone();
            let mut steps: Vec<(u64, u32)> = effects.iter().map(|e| (e.id, e.step)).collect();
            steps.sort_unstable();
            steps.dedup();
            if steps.len() == 17 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "steps missing: {effects:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(2 * LEVEL_MS)).await;
        stop.cancel();
        for task in tasks {
            task.await.expect("node");
        }
        let effects = sink.lock().unwrap().clone();
        let changes = effects
            .windows(2)
            .filter(|pair| pair[0].node != pair[1].node)
            .count();
        assert!(
            effects.len() <= 17 + changes,
            "more repeats than changes of leader: {effects:?}"
        );
        // An election of the lease bucket's leader (4–9 s) and a lease running out
        // (4 s) may both fall between a deadline and its step.
        check_every_step(&effects, &first_due, 20_000);
    })
    .await
    .expect("test bound");
}
