//! Each routing step of an escalation happens once (docs/CLUSTER.md §6): its
//! page, its Web Push to the phones of those it waits for, and at the last level
//! the unanswered notices, performed and then marked done — in the router's log
//! in cluster mode, in the store on one node — so that no router performs a step
//! marked done again: not a new leader after the old one was killed, not a hub
//! restarted.
//!
//! The pager and the push service are one real HTTP receiver on loopback (the
//! pager on `/page`, each phone on `/push/<name>`); the steps are counted by
//! what it received: pages by escalation and routing level, pushes by phone and
//! escalation. Every test ends with an acknowledgement, whose page the pager
//! gets after any page queued before it (one queue, in order), so a repeated
//! page would be counted.

use std::collections::BTreeMap;
use std::time::Duration;

use peerhub_protocol::escalation::Severity;
use peerhub_protocol::payload::{EscalationAction, InviteRole};
use peerhub_protocol::ServerFrame;
use peerhub_server::cluster::log::{GroupLogs, LogConfig};
use peerhub_server::cluster::router_log::{self, RouterOp};
use peerhub_server::config::Config;
use peerhub_tests::nats::NatsCluster;
use peerhub_tests::receiver::Received;
use peerhub_tests::webpush::PushSubscriber;
use peerhub_tests::{Client, CrashableServer, HttpReceiver, Identity, TestServer};

use super::alerting::{act, on_call, set_rota, subscribe};
use super::cluster_nodes::staff_on;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(180);
/// An emergency's time to acknowledge at each level: far longer than it takes
/// to see a step marked done and kill its router, so no kill lands while a
/// step's effects are in flight.
const DEADLINE: Duration = Duration::from_secs(6);

/// The hub's escalation settings in these tests: the pager and push on
/// `base`, pushes not repeated within a test.
fn alerting_to(config: &mut Config, base: &str) {
    config.escalation.emergency_deadline = DEADLINE;
    config.escalation.pager_url = Some(format!("{base}/page"));
    config.escalation.push_contact = "mailto:oncall@example.org".into();
    config.escalation.push_repeat = Duration::from_secs(3600);
}

/// A node in a runtime of its own, so that a test can stop it dead: every task
/// dropped at once, no lease released, nobody told (kill -9 short of the
/// process). Dropping it does the same.
struct Node(CrashableServer);

impl Node {
    fn start(cluster: &NatsCluster, name: &str, base: &str) -> Self {
        let settings = cluster.node_settings(name);
        let base = base.to_string();
        Self(CrashableServer::start(move |config| {
            config.cluster = Some(settings);
            alerting_to(config, &base);
        }))
    }

    fn server(&self) -> &TestServer {
        &self.0.server
    }
}

/// What the receiver was sent, in order.
#[derive(Default)]
struct Seen(Vec<Received>);

impl Seen {
    /// Takes what the receiver holds now (waiting up to `ms` for the first).
    async fn drain(&mut self, receiver: &mut HttpReceiver, ms: u64) {
        let mut wait = ms;
        while let Some(request) = receiver.try_next(wait).await {
            self.0.push(request);
            wait = 0;
        }
    }

    /// Generic pager bodies of event `event` that the pager accepted.
    fn pages(&self, event: &str) -> Vec<serde_json::Value> {
        self.0
            .iter()
            .filter(|r| r.target == "/page" && r.status < 300)
            .map(Received::json)
            .filter(|body| body["event"] == event)
            .collect()
    }

    /// Routing pages by (escalation, level).
    fn triggers(&self) -> BTreeMap<(u64, u64), usize> {
        let mut counted = BTreeMap::new();
        for body in self.pages("routed") {
            let step = (
                body["escalation"].as_u64().expect("an escalation"),
                body["level"].as_u64().expect("a level"),
            );
            *counted.entry(step).or_default() += 1;
        }
        counted
    }

    /// Pushes by (phone, escalation), each decrypted with its phone's keys.
    fn pushes(&self, phones: &[(&str, &PushSubscriber)]) -> BTreeMap<(String, u64), usize> {
        let mut counted = BTreeMap::new();
        let pushes = self.0.iter().filter(|r| r.target.starts_with("/push/"));
        for request in pushes.filter(|r| r.status < 300) {
            let name = &request.target["/push/".len()..];
            let (_, phone) = phones
                .iter()
                .find(|(n, _)| *n == name)
                .expect("a known phone");
            let plain = phone.decrypt(&request.body).expect("the push decrypts");
            let shown: serde_json::Value = serde_json::from_slice(&plain).expect("JSON");
            let id = shown["escalation"].as_u64().expect("an escalation");
            *counted.entry((name.to_string(), id)).or_default() += 1;
        }
        counted
    }

    /// The first escalation paged that is not in `known`.
    fn new_escalation(&self, known: &[u64]) -> Option<u64> {
        self.pages("routed")
            .iter()
            .filter_map(|body| body["escalation"].as_u64())
            .find(|id| !known.contains(id))
    }
}

/// The routing steps marked done in the router's log: escalation → (level,
/// the holder that marked it).
async fn marks(logs: &GroupLogs) -> BTreeMap<u64, (u8, String)> {
    let mut done = BTreeMap::new();
    let Ok(records) = logs.read_all(router_log::LOG).await else {
        return done;
    };
    for record in records {
        for op in router_log::ops_of(&record).expect("a readable router log") {
            if let RouterOp::StepDone { id, level } = op {
                done.insert(id, (level, record.holder.clone()));
            }
        }
    }
    done
}

/// The node (`a` or `b`) of a lease holder's name (`<node>-<run>`).
fn node_of(holder: &str) -> String {
    holder.split('-').next().unwrap_or_default().to_string()
}

/// Waits until escalation `id`'s step `level` is marked done in the router's
/// log, taking what the receiver gets meanwhile; returns the holder that
/// marked it.
async fn marked(
    logs: &GroupLogs,
    id: u64,
    level: u8,
    receiver: &mut HttpReceiver,
    seen: &mut Seen,
) -> String {
    loop {
        seen.drain(receiver, 100).await;
        if let Some((done, holder)) = marks(logs).await.get(&id) {
            if *done >= level {
                return holder.clone();
            }
        }
    }
}

/// Waits until a router other than `killed` has taken the router's log over
/// (its fence is the log's last record); returns its node.
async fn taken_over(logs: &GroupLogs, killed: &str) -> String {
    loop {
        if let Ok(records) = logs.read_all(router_log::LOG).await {
            if let Some(last) = records.last().filter(|r| r.holder != killed) {
                return node_of(&last.holder);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until an escalation not in `known` is paged; returns its id.
async fn paged(known: &[u64], receiver: &mut HttpReceiver, seen: &mut Seen) -> u64 {
    loop {
        seen.drain(receiver, 100).await;
        if let Some(id) = seen.new_escalation(known) {
            return id;
        }
    }
}

/// Sets the rota through `admin` (retried while the router's node has not yet
/// seen the supervisors' roles through the directory).
async fn rota(admin: &mut Client, first: &Identity, second: &Identity) {
    for _ in 0..50 {
        let entries = vec![on_call(first.key(), 1), on_call(second.key(), 2)];
        if matches!(set_rota(admin, entries).await, ServerFrame::Ok { .. }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the rota was never taken");
}

/// Acknowledges `ids` as `who` through `node` and waits for each one's
/// acknowledgement at the pager.
async fn acknowledge(
    node: &TestServer,
    who: &Identity,
    ids: &[u64],
    receiver: &mut HttpReceiver,
    seen: &mut Seen,
) {
    let mut sup = node.login(who).await;
    for id in ids {
        let reply = act(&mut sup, *id, EscalationAction::Ack).await;
        assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    }
    loop {
        seen.drain(receiver, 100).await;
        let acked: Vec<u64> = seen
            .pages("acknowledged")
            .iter()
            .filter_map(|body| body["escalation"].as_u64())
            .collect();
        if ids.iter().all(|id| acked.contains(id)) {
            return;
        }
    }
}

/// Two nodes, a and b (a leads), a group, an admin, two supervisors on the rota
/// (levels 1 and 2) with a phone each, and the person who will ask for help.
struct Scene {
    nodes: [Option<Node>; 2],
    sup1: Identity,
    phone1: PushSubscriber,
    phone2: PushSubscriber,
    logs: GroupLogs,
    /// The last person who flagged.
    person: Option<Identity>,
}

async fn scene(cluster: &NatsCluster, receiver: &HttpReceiver) -> Scene {
    let mut a = Node::start(cluster, "a", &receiver.base);
    let b = Node::start(cluster, "b", &receiver.base);
    let on_a = &mut a.0.server;
    for group in ["circle", "circle2"] {
        on_a.create_group_with(group, |g| g.waiting_room = Some(false))
            .await;
    }
    let mut admin = on_a.admin().await;
    let (sup1, mut on1) = staff_on(b.server(), &mut admin, InviteRole::Supervisor, None).await;
    let (sup2, mut on2) = staff_on(b.server(), &mut admin, InviteRole::Supervisor, None).await;
    let phone1 = PushSubscriber::generate();
    let phone2 = PushSubscriber::generate();
    for (client, phone, name) in [(&mut on1, &phone1, "sup1"), (&mut on2, &phone2, "sup2")] {
        let endpoint = format!("{}/push/{name}", receiver.base);
        let reply = subscribe(client, &endpoint, phone).await;
        assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    }
    rota(&mut admin, &sup1, &sup2).await;
    let nats = cluster.connect(2, "test-router-log").await;
    let config = LogConfig::default();
    let logs =
        peerhub_tests::nats::opened("the log stream", || GroupLogs::open(&nats, &config)).await;
    Scene {
        nodes: [Some(a), Some(b)],
        sup1,
        phone1,
        phone2,
        logs,
        person: None,
    }
}

impl Scene {
    fn node(&self, name: &str) -> &TestServer {
        let index = usize::from(name == "b");
        self.nodes[index].as_ref().expect("running").server()
    }

    /// Kills node `name` dead and starts it again (a new run, empty folder).
    fn kill_and_restart(&mut self, name: &str, cluster: &NatsCluster, base: &str) {
        let index = usize::from(name == "b");
        drop(self.nodes[index].take());
        self.nodes[index] = Some(Node::start(cluster, name, base));
    }

    fn phones(&self) -> [(&str, &PushSubscriber); 2] {
        [("sup1", &self.phone1), ("sup2", &self.phone2)]
    }

    /// A person joins `group` (served by nobody yet, or by a node alive) and
    /// flags an emergency about themselves through `node`.
    async fn flag_through(&mut self, node: &str, group: &str) {
        let person = Identity::generate();
        self.person = Some(person.clone());
        let mut client = self.node(node).login(&person).await;
        client.join(group, "River", None).await;
        let reply = client
            .flag_with(group, person.key(), Severity::Emergency, |_| {})
            .await;
        assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
    }
}

/// The router's node is killed with an emergency pending, after its first
/// step paged: the other node takes the router over, does not page that step
/// again, and moves the escalation on at each deadline — every step's page and
/// pushes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_routers_next_leader_pages_each_step_once() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut receiver = HttpReceiver::start(|_, _| 201).await;
        let mut seen = Seen::default();
        let mut scene = scene(&cluster, &receiver).await;
        scene.flag_through("b", "circle").await;
        let id = paged(&[], &mut receiver, &mut seen).await;
        let by = marked(&scene.logs, id, 1, &mut receiver, &mut seen).await;
        assert_eq!(
            node_of(&by),
            "a",
            "node a leads and performed the first step"
        );
        assert_eq!(seen.triggers(), BTreeMap::from([((id, 1), 1)]));

        // The leader dies with the escalation pending, no effect in flight.
        drop(scene.nodes[0].take());
        for level in 2..=4 {
            let by = marked(&scene.logs, id, level, &mut receiver, &mut seen).await;
            assert_eq!(
                node_of(&by),
                "b",
                "the next leader enforces the deadline of step {level}"
            );
        }
        acknowledge(
            scene.node("b"),
            &scene.sup1,
            &[id],
            &mut receiver,
            &mut seen,
        )
        .await;

        assert_eq!(
            seen.triggers(),
            BTreeMap::from([((id, 1), 1), ((id, 2), 1), ((id, 3), 1)]),
            "each routing level paged once (level 4 tells, it does not page)"
        );
        assert_eq!(
            seen.pushes(&scene.phones()),
            BTreeMap::from([(("sup1".into(), id), 2), (("sup2".into(), id), 2)]),
            "level 1 to the first phone, 2 to the second, 3 to both"
        );
    })
    .await
    .expect("bounded");
}

/// The router's node is killed five times across the steps of two
/// escalations, each time just after a step was marked done: each step is
/// still paged and pushed exactly once, by whichever node leads then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_killed_five_times_across_steps_page_each_step_once() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut receiver = HttpReceiver::start(|_, _| 201).await;
        let base = receiver.base.clone();
        let mut seen = Seen::default();
        let mut scene = scene(&cluster, &receiver).await;
        let mut leaders = Vec::new();

        scene.flag_through("b", "circle").await;
        let first = paged(&[], &mut receiver, &mut seen).await;
        let mut killed = String::new();
        for level in 1..=4 {
            killed = marked(&scene.logs, first, level, &mut receiver, &mut seen).await;
            scene.kill_and_restart(&node_of(&killed), &cluster, &base);
            leaders.push(node_of(&killed));
        }
        // A second escalation, raised through the router's node once one leads.
        let leader = taken_over(&scene.logs, &killed).await;
        scene.flag_through(&leader, "circle2").await;
        let second = paged(&[first], &mut receiver, &mut seen).await;
        killed = marked(&scene.logs, second, 1, &mut receiver, &mut seen).await;
        scene.kill_and_restart(&node_of(&killed), &cluster, &base);
        leaders.push(node_of(&killed));
        eprintln!("steps marked by {leaders:?}, each killed just after its mark");

        // Acknowledging both through the node that leads now reaches the pager
        // after any page queued at its takeover.
        let leader = taken_over(&scene.logs, &killed).await;
        acknowledge(
            scene.node(&leader),
            &scene.sup1,
            &[first, second],
            &mut receiver,
            &mut seen,
        )
        .await;

        assert_eq!(
            seen.triggers(),
            BTreeMap::from([
                ((first, 1), 1),
                ((first, 2), 1),
                ((first, 3), 1),
                ((second, 1), 1)
            ]),
        );
        assert_eq!(
            seen.pushes(&scene.phones()),
            BTreeMap::from([
                (("sup1".into(), first), 2),
                (("sup2".into(), first), 2),
                (("sup1".into(), second), 1)
            ]),
        );
    })
    .await
    .expect("bounded");
}

/// The died-between window, held open on purpose: the pager refuses the
/// first step's page (503, retried), so node a has pushed but cannot mark the
/// step done when it is killed. Node b takes over, finds the step not marked
/// and performs it: the page the pager now accepts once, and the push a second
/// time (at least once, never never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_its_leader_died_before_marking_is_performed_by_the_next() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let refusing = Arc::new(AtomicBool::new(true));
        let pager_down = refusing.clone();
        let mut receiver = HttpReceiver::start(move |_, request| {
            if request.target == "/page" && pager_down.load(Ordering::SeqCst) {
                503
            } else {
                201
            }
        })
        .await;
        let mut seen = Seen::default();
        let mut scene = scene(&cluster, &receiver).await;
        scene.flag_through("b", "circle").await;
        // Node a has tried the page (refused) and sent the push.
        let id = loop {
            seen.drain(&mut receiver, 100).await;
            let tried = seen
                .0
                .iter()
                .any(|r| r.target == "/page" && r.status == 503);
            let pushed = seen.0.iter().any(|r| r.target == "/push/sup1");
            if tried && pushed {
                break scene
                    .node("a")
                    .hub()
                    .store
                    .escalation_ids_about(&scene.person.clone().expect("flagged").key())
                    .expect("readable")[0];
            }
        };
        assert!(marks(&scene.logs).await.is_empty(), "nothing marked yet");

        drop(scene.nodes[0].take());
        refusing.store(false, Ordering::SeqCst);
        let by = marked(&scene.logs, id, 1, &mut receiver, &mut seen).await;
        assert_eq!(node_of(&by), "b", "the next leader performed the step");
        acknowledge(
            scene.node("b"),
            &scene.sup1,
            &[id],
            &mut receiver,
            &mut seen,
        )
        .await;

        assert_eq!(
            seen.triggers(),
            BTreeMap::from([((id, 1), 1)]),
            "accepted once"
        );
        assert_eq!(
            seen.pushes(&scene.phones()),
            BTreeMap::from([(("sup1".into(), id), 2)]),
            "pushed by a, and again by b: the step was not marked"
        );
    })
    .await
    .expect("bounded");
}

/// One node: a restart with an escalation pending whose step was paged and
/// pushed (and marked done) pages and pushes nothing again; the
/// acknowledgement after the restart is the pager's next request. (The hub
/// used to page every pending escalation again at each start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_page_a_step_marked_done_again() {
    let mut receiver = HttpReceiver::start(|_, _| 201).await;
    let base = receiver.base.clone();
    let mut seen = Seen::default();
    let mut scene = super::alerting::scene(|c| alerting_to(c, &base)).await;
    let phone = PushSubscriber::generate();
    let endpoint = format!("{base}/push/sup1");
    let reply = subscribe(&mut scene.sup, &endpoint, &phone).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let id = super::alerting::raise(&mut scene).await;
    while scene.server.hub().store.step_done(id).expect("readable") < 1 {
        seen.drain(&mut receiver, 100).await;
    }
    seen.drain(&mut receiver, 0).await;
    let before = seen.0.len();

    let server = scene.server.restart().await;
    acknowledge(&server, &scene.sup_id, &[id], &mut receiver, &mut seen).await;
    assert_eq!(seen.triggers(), BTreeMap::from([((id, 1), 1)]));
    assert_eq!(
        seen.pushes(&[("sup1", &phone)]),
        BTreeMap::from([(("sup1".into(), id), 1)])
    );
    let after_restart: Vec<&str> = seen.0[before..].iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        after_restart,
        ["/page"],
        "only the acknowledgement after the restart"
    );
}
