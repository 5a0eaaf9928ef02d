//! An operator's escalation list and rota commands on a running cluster node
//! (docs/OPERATIONS.md §12, docs/CLUSTER.md §6): two in-process nodes on the
//! three-server NATS cluster, the `peerhub` binary run against each node's data
//! folder. The router's leader answers, whichever node the command is run on;
//! a rota set goes into the router's log, so the router follows it and the next
//! leader finds it; with no leader reachable the command is refused and
//! nothing changes.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use peerhub_protocol::escalation::RotaEntry;
use peerhub_protocol::payload::InviteRole;
use peerhub_protocol::{PublicKey, ServerFrame};
use peerhub_tests::nats::NatsCluster;
use peerhub_tests::{Identity, TestServer};

use super::cluster_nodes::{flagged, staff_on};

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

async fn node(cluster: &NatsCluster, name: &str) -> TestServer {
    let settings = cluster.node_settings(name);
    TestServer::start_with(move |config| config.cluster = Some(settings)).await
}

/// Whether `node` holds the router's lease now.
async fn leads(node: &TestServer) -> bool {
    let cluster = node.hub().cluster.as_ref().expect("a cluster node");
    matches!(
        cluster.leases.current(peerhub_server::cluster::router_log::LEASE).await,
        Ok(Some((value, _))) if value.holder == cluster.holder
    )
}

/// Node a, leading the router, and node b, which does not.
async fn two_nodes(cluster: &NatsCluster) -> (TestServer, TestServer) {
    let a = node(cluster, "a").await;
    while !leads(&a).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = node(cluster, "b").await;
    assert!(!leads(&b).await, "node a leads the router");
    (a, b)
}

/// [`two_nodes`] with the group `circle` (no waiting room), the admin (on a),
/// and a supervisor made and connected on each node.
struct Scene {
    a: TestServer,
    b: TestServer,
    admin: peerhub_tests::Client,
    on_a: (Identity, peerhub_tests::Client),
    on_b: (Identity, peerhub_tests::Client),
}

async fn scene(cluster: &NatsCluster) -> Scene {
    let (mut a, b) = two_nodes(cluster).await;
    a.create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let mut admin = a.admin().await;
    let on_a = staff_on(&a, &mut admin, InviteRole::Supervisor, None).await;
    let on_b = staff_on(&b, &mut admin, InviteRole::Supervisor, None).await;
    Scene {
        a,
        b,
        admin,
        on_a,
        on_b,
    }
}

/// `peerhub ARGS --data DIR`.
async fn peerhub(args: &[&str], data: &Path) -> Output {
    tokio::process::Command::new(peerhub_tests::process::binary())
        .args(args)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run peerhub")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a successful command printed, as JSON.
fn printed(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A listing without its ages (whole seconds that may tick between two runs).
fn ageless(mut listed: serde_json::Value) -> serde_json::Value {
    for summary in listed["escalations"].as_array_mut().expect("escalations") {
        summary.as_object_mut().expect("a summary").remove("age_s");
    }
    listed
}

/// How many entries of `action` the node's audit chain holds.
fn audited(node: &TestServer, action: &str) -> usize {
    peerhub_server::audit::entries(&node.hub().store)
        .map(|entry| entry.expect("entry parses"))
        .filter(|entry| entry.action == action)
        .count()
}

fn rota_file(dir: &Path, name: &str, entries: &[RotaEntry]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(entries).expect("json")).expect("rota file");
    path
}

fn now_ms() -> u64 {
    peerhub_server::clock::Clock::system().now_ms()
}

/// `who` on call at `level` from a second ago for an hour.
fn on_call(who: &PublicKey, level: u8) -> RotaEntry {
    let now = now_ms();
    RotaEntry {
        supervisor: *who,
        start_ms: now - 1000,
        end_ms: now + 3_600_000,
        level,
    }
}

/// `peerhub rota set` on `data`'s node with `entries`, written to `dir/name`.
async fn rota_set(dir: &Path, name: &str, entries: &[RotaEntry], data: &Path) -> Output {
    let file = rota_file(dir, name, entries);
    peerhub(
        &["rota", "set", "--file", file.to_str().expect("path")],
        data,
    )
    .await
}

/// `peerhub escalation list` on the node that does not lead and on the leader
/// prints what the leader's record holds, with every filter, and each listing
/// is audited on the leader; a bad limit is refused alike through either. An
/// escalation resolved through the node that does not lead is in the router's
/// log: once the leader stops, the other node leads and lists it resolved.
#[tokio::test]
async fn the_escalation_list_through_either_node_is_the_leaders() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let (mut a, b) = two_nodes(&cluster).await;
        a.create_group_with("circle", |g| g.waiting_room = Some(false))
            .await;
        let mut admin = a.admin().await;
        let (_, mut sup) = staff_on(&a, &mut admin, InviteRole::Supervisor, None).await;
        let first = flagged(&b, &mut sup).await.2;
        let second = flagged(&b, &mut sup).await.2;
        let ids = [first.id.expect("id"), second.id.expect("id")];
        // Node b's own copy of the queue is not the router's record.
        let local = b.hub().store.escalations().expect("b's store");
        assert!(
            local.iter().all(|e| !ids.contains(&e.view.id)),
            "node b's store never held these escalations"
        );

        let (on_a, on_b) = (a.data_dir().to_path_buf(), b.data_dir().to_path_buf());
        let filters: [&[&str]; 4] = [
            &["escalation", "list"],
            &["escalation", "list", "--state", "open"],
            &["escalation", "list", "--state", "resolved"],
            &["escalation", "list", "--all", "--limit", "1"],
        ];
        for args in filters {
            let through_b = printed(&peerhub(args, &on_b).await);
            let through_a = printed(&peerhub(args, &on_a).await);
            assert_eq!(ageless(through_b.clone()), ageless(through_a), "{args:?}");
            if args.len() == 2 {
                assert_eq!(through_b["matching"], 2, "{through_b}");
                let listed: Vec<u64> = through_b["escalations"]
                    .as_array()
                    .expect("escalations")
                    .iter()
                    .map(|e| e["id"].as_u64().expect("id"))
                    .collect();
                let mut want = ids.to_vec();
                want.sort_unstable();
                assert_eq!(listed, want, "the same risk, the longest waiting first");
            }
        }
        // What the leader's store holds, listed there directly.
        let direct = peerhub_server::admin::escalations::list(
            &a.hub().store,
            Default::default(),
            200,
            now_ms(),
        )
        .expect("listed on the leader");
        let through_b = printed(&peerhub(&["escalation", "list"], &on_b).await);
        assert_eq!(ageless(through_b), ageless(direct));
        assert_eq!(
            audited(&a, "admin.escalation_list"),
            9,
            "each listing, on the leader"
        );
        assert_eq!(audited(&b, "admin.escalation_list"), 0);

        // A bad limit: the same refusal through either node, nothing audited.
        let refused_b = peerhub(&["escalation", "list", "--limit", "0"], &on_b).await;
        let refused_a = peerhub(&["escalation", "list", "--limit", "0"], &on_a).await;
        for out in [&refused_b, &refused_a] {
            assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
            assert!(
                stderr(out).contains("--limit is from 1 to"),
                "{}",
                stderr(out)
            );
            assert!(out.stdout.is_empty());
        }
        assert_eq!(stderr(&refused_b), stderr(&refused_a));
        assert_eq!(audited(&a, "admin.escalation_list"), 9);

        // Resolved through b; the leader stops; b leads and finds it resolved
        // in the router's log (it was never in b's store).
        let resolve = peerhub(
            &[
                "escalation",
                "resolve",
                &ids[0].to_string(),
                "--outcome",
                "seen to",
            ],
            &on_b,
        )
        .await;
        assert_eq!(resolve.status.code(), Some(0), "{}", stderr(&resolve));
        drop((admin, sup));
        a.shutdown().await;
        while !leads(&b).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let resolved = loop {
            // The command reaches b's router once it has caught up and started.
            let out = peerhub(&["escalation", "list", "--state", "resolved"], &on_b).await;
            if out.status.success() {
                break printed(&out);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(resolved["matching"], 1, "{resolved}");
        assert_eq!(resolved["escalations"][0]["id"], ids[0]);
        let open = printed(&peerhub(&["escalation", "list"], &on_b).await);
        assert_eq!(open["matching"], 1, "{open}");
        assert_eq!(open["escalations"][0]["id"], ids[1]);
    })
    .await
    .expect("bounded");
}

/// `peerhub rota set` through the node that does not lead is the router's: it
/// is audited on the leader, `rota list` through either node prints it, the
/// next escalation waits for the new primary, and after the leader stops the
/// other node leads with the same rota (from the router's log). A rota naming
/// a key that is not a supervisor is refused through either node and changes
/// nothing.
#[tokio::test]
async fn a_rota_set_through_the_node_that_does_not_lead_is_what_the_router_follows() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let Scene {
            a,
            b,
            admin,
            on_a: (one, mut sup_one),
            on_b: (two, _sup_two),
        } = scene(&cluster).await;
        let (on_a, on_b) = (a.data_dir().to_path_buf(), b.data_dir().to_path_buf());
        let rota = [on_call(&one.key(), 1)];
        let set = rota_set(dir.path(), "one.json", &rota, &on_b).await;
        assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
        assert_eq!(
            String::from_utf8_lossy(&set.stdout).trim(),
            "rota set: 1 entries"
        );
        assert_eq!(audited(&a, "rota.set"), 1, "audited on the leader");
        assert_eq!(audited(&b, "rota.set"), 0);
        for data in [&on_b, &on_a] {
            let listed = peerhub(&["rota", "list"], data).await;
            assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
            let listed: Vec<RotaEntry> = serde_json::from_slice(&listed.stdout).expect("rota");
            assert_eq!(listed, rota);
        }
        let routed = flagged(&b, &mut sup_one).await.2;
        assert_eq!(
            (routed.level, routed.waiting_for.clone()),
            (1, vec![one.key()]),
            "routed to the primary the command set"
        );

        // Refused through either node: a stranger on the rota.
        let stranger = Identity::generate();
        for data in [&on_b, &on_a] {
            let out = rota_set(dir.path(), "bad.json", &[on_call(&stranger.key(), 1)], data).await;
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            assert!(stderr(&out).contains("supervisor role"), "{}", stderr(&out));
        }
        assert_eq!(audited(&a, "rota.set"), 1, "a refusal is not a change");

        // The second supervisor takes over as primary, set through b.
        let rota = [on_call(&two.key(), 1)];
        let set = rota_set(dir.path(), "two.json", &rota, &on_b).await;
        assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
        let routed = flagged(&b, &mut sup_one).await.2;
        assert_eq!(
            (routed.level, routed.waiting_for.clone()),
            (1, vec![two.key()]),
            "the router follows the rota set through b"
        );
        assert!(
            b.hub().store.rota().expect("b's store").is_empty(),
            "node b's own copy never held it"
        );

        // The leader stops: b leads, with the rota from the router's log.
        drop((admin, sup_one));
        a.shutdown().await;
        while !leads(&b).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let listed = loop {
            let out = peerhub(&["rota", "list"], &on_b).await;
            if out.status.success() {
                break out;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let listed: Vec<RotaEntry> = serde_json::from_slice(&listed.stdout).expect("rota");
        assert_eq!(listed, rota);
        assert_eq!(
            b.hub().store.rota().expect("b's store"),
            rota,
            "caught up from the log"
        );
    })
    .await
    .expect("bounded");
}

/// A supervisor who redeemed their invite on the node that does not lead, a
/// moment ago, when the leader's copy of the directory (its mirror) does not
/// show their role yet: the leader's copy is made to lag by taking their account
/// back out of its store once the mirror brought it. They go on the rota at once,
/// through the admin's connection to the leader and through `peerhub rota set`
/// on either node; they read the rota, the queue, an escalation and its line,
/// acknowledge it and are handed one. (CI once
/// refused such a rota: "does not hold the supervisor role".) A key that holds
/// no role is still refused, and changes nothing.
#[tokio::test]
async fn a_supervisor_made_on_another_node_a_moment_ago_is_one_to_the_router_at_once() {
    use peerhub_protocol::escalation::{EscalationPart, EscalationStatus};
    use peerhub_protocol::payload::EscalationAction;
    use peerhub_protocol::ClientFrame;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let Scene {
            a,
            b,
            mut admin,
            on_a: (first, mut first_on_a),
            on_b: (late, mut late_on_b),
        } = scene(&cluster).await;
        let leader = a.hub().store.clone();
        while leader.roles(&late.key()).expect("roles").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        leader.remove_account(&late.key()).expect("lag made");
        let rota = vec![on_call(&late.key(), 1)];
        let set = super::alerting::set_rota(&mut admin, rota.clone()).await;
        assert!(matches!(set, ServerFrame::Ok { .. }), "{set:?}");
        for data in [b.data_dir(), a.data_dir()] {
            let set = rota_set(dir.path(), "late.json", &rota, data).await;
            assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
        }
        assert_eq!(audited(&a, "rota.set"), 3);

        // They read the rota through b (the leader answers).
        let read = late_on_b.request(|id| ClientFrame::Rota { id }).await;
        assert!(
            matches!(&read, ServerFrame::Rota { entries, .. } if *entries == rota),
            "{read:?}"
        );

        // Routed to them; they read it, open its line, acknowledge it through b,
        // and hand it to the first.
        let (_, _river, open) = flagged(&b, &mut late_on_b).await;
        assert_eq!(open.waiting_for, vec![late.key()]);
        let id = open.id.expect("an id");
        let queue = late_on_b
            .request(|id| ClientFrame::Escalations { id, after: None })
            .await;
        assert!(
            matches!(&queue, ServerFrame::Escalations { escalations, .. }
                if escalations.iter().any(|e| e.id == Some(id))),
            "the queue, not only their own flags: {queue:?}"
        );
        let detail = late_on_b
            .request(|rid| ClientFrame::EscalationDetail {
                id: rid,
                escalation: Some(id),
                reference: None,
                part: EscalationPart::Flags,
                offset: None,
            })
            .await;
        assert!(
            matches!(detail, ServerFrame::EscalationDetail { .. }),
            "{detail:?}"
        );
        let line = late_on_b
            .request(|rid| ClientFrame::Line {
                id: rid,
                escalation: id,
            })
            .await;
        assert!(matches!(line, ServerFrame::Line { .. }), "{line:?}");
        let acked = super::alerting::act(&mut late_on_b, id, EscalationAction::Ack).await;
        assert!(matches!(acked, ServerFrame::Ok { .. }), "{acked:?}");
        let handed = super::alerting::act(
            &mut late_on_b,
            id,
            EscalationAction::Handover { to: first.key() },
        )
        .await;
        assert!(matches!(handed, ServerFrame::Ok { .. }), "{handed:?}");
        // And back: the one the leader's copy does not know is the target now.
        let back = super::alerting::act(
            &mut first_on_a,
            id,
            EscalationAction::Handover { to: late.key() },
        )
        .await;
        assert!(matches!(back, ServerFrame::Ok { .. }), "{back:?}");
        let held = super::cluster_nodes::escalation_where(&mut late_on_b, |e| {
            e.id == Some(id) && e.handler == Some(late.key())
        })
        .await;
        assert_eq!(held.status, EscalationStatus::Acknowledged);

        // Still refused: a key with no role, through the connection and the command.
        let stranger = Identity::generate();
        let set = super::alerting::set_rota(&mut admin, vec![on_call(&stranger.key(), 1)]).await;
        assert!(
            matches!(&set, ServerFrame::Error { message, .. } if message.contains("supervisor")),
            "{set:?}"
        );
        let refused = [on_call(&stranger.key(), 2)];
        for data in [b.data_dir(), a.data_dir()] {
            let out = rota_set(dir.path(), "stranger.json", &refused, data).await;
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            assert!(stderr(&out).contains("supervisor role"), "{}", stderr(&out));
        }
        let handed = super::alerting::act(
            &mut late_on_b,
            id,
            EscalationAction::Handover { to: stranger.key() },
        )
        .await;
        assert!(matches!(handed, ServerFrame::Error { .. }), "{handed:?}");
        assert_eq!(audited(&a, "rota.set"), 3, "a refusal is not a change");
    })
    .await
    .expect("bounded");
}

/// With every NATS server killed no node leads the router: `escalation list`,
/// `rota list` and `rota set` on the node that does not lead are refused
/// (exit 2, saying why) rather than answered from its own copy, and once NATS
/// is back the rota is the one set before.
#[tokio::test]
async fn with_nats_unreachable_operator_commands_are_refused_and_change_nothing() {
    let Some(mut cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut a, b) = two_nodes(&cluster).await;
        let mut admin = a.admin().await;
        let (sup, _client) = staff_on(&a, &mut admin, InviteRole::Supervisor, None).await;
        let on_b = b.data_dir().to_path_buf();
        let before = [on_call(&sup.key(), 1)];
        let set = rota_set(dir.path(), "before.json", &before, &on_b).await;
        assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
        let attempted = rota_file(dir.path(), "attempted.json", &[on_call(&sup.key(), 2)]);

        for name in ["n1", "n2", "n3"] {
            cluster.kill(name).await;
        }
        let attempted = attempted.to_str().expect("path").to_string();
        let runs = [
            vec!["escalation", "list"],
            vec!["rota", "list"],
            vec!["rota", "set", "--file", attempted.as_str()],
        ];
        let outs =
            futures_util::future::join_all(runs.iter().map(|args| peerhub(args, &on_b))).await;
        for (args, out) in runs.iter().zip(&outs) {
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(out));
            assert!(
                stderr(out).contains("no node leading the escalation router answered"),
                "{args:?}: {}",
                stderr(out)
            );
            assert!(out.stdout.is_empty(), "{args:?}: nothing from b's own copy");
        }
        assert!(stderr(&outs[2]).contains("may not have been made"));

        for name in ["n1", "n2", "n3"] {
            cluster.restart(name).await;
        }
        cluster.wait_ready().await;
        let listed = loop {
            let out = peerhub(&["rota", "list"], &on_b).await;
            if out.status.success() {
                break out;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let listed: Vec<RotaEntry> = serde_json::from_slice(&listed.stdout).expect("rota");
        assert_eq!(listed, before, "the refused set changed nothing");
        let sets = audited(&a, "rota.set") + audited(&b, "rota.set");
        assert_eq!(sets, 1, "only the first set is audited");
        drop(admin);
    })
    .await
    .expect("bounded");
}
