//! The real `peerhub` binary serving `[cluster]` (docs/CLUSTER.md §9–§10): two
//! node processes on a three-server NATS cluster, each on its own data folder and
//! ephemeral port, lease TTL 2 s. What start-up prints, a node that cannot reach
//! NATS, operator commands that cannot act on one node's copy, `kill -9` of the
//! process serving a group, and a paused (SIGSTOP) old owner that must not append
//! once another node took its group over.

use std::path::Path;
use std::time::{Duration, Instant};

use peerhub_protocol::payload::GroupKind;
use peerhub_protocol::{ClientFrame, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::nats::NatsCluster;
use peerhub_tests::{Client, Identity, ProcessServer};

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(150);

/// The group the tests talk in.
const GROUP: &str = "circle";

/// Starts the `peerhub` binary as cluster node `name` on `data`.
async fn node(cluster: &NatsCluster, data: &Path, name: &str) -> ProcessServer {
    node_with(cluster, data, name, &[]).await
}

/// [`node`], with more command-line arguments.
async fn node_with(cluster: &NatsCluster, data: &Path, name: &str, args: &[&str]) -> ProcessServer {
    let urls = cluster.urls().join(",");
    let env = [
        ("PEERHUB_CLUSTER_NATS_URLS", urls.as_str()),
        ("PEERHUB_CLUSTER_NODE_NAME", name),
        ("PEERHUB_CLUSTER_LEASE_TTL_MS", "2000"),
    ];
    ProcessServer::start_logging_env(data, args, "warn", &env).await
}

/// Two nodes, `a` and `b`, and an admin (who redeemed the link `a` printed) who
/// made the drop-in group [`GROUP`] without a waiting room.
async fn two_nodes(cluster: &NatsCluster, dir: &Path) -> (ProcessServer, ProcessServer) {
    let a = node(cluster, &dir.join("a"), "a").await;
    let b = node(cluster, &dir.join("b"), "b").await;
    let mut admin = a.admin().await;
    let me = admin.identity.clone().expect("admin identity");
    let env = me.create_group_with(GROUP, "Circle", GroupKind::DropIn, |g| {
        g.waiting_room = Some(false)
    });
    let reply = admin
        .request(|id| ClientFrame::CreateGroup {
            id,
            access_code: None,
            env,
        })
        .await;
    assert!(
        matches!(reply, ServerFrame::GroupCreated { .. }),
        "{reply:?}"
    );
    (a, b)
}

/// Logs `who` in on `node` and joins [`GROUP`] after `after`.
async fn joined(
    node: &ProcessServer,
    who: &Identity,
    name: &str,
    after: Option<u64>,
) -> (Client, peerhub_tests::client::Joined) {
    let mut client = Client::connect(node.addr).await;
    client.login(who).await;
    let joined = client.join(GROUP, name, after).await;
    (client, joined)
}

/// Joins [`GROUP`] on `node` as `who` after `after`, again and again while the
/// group has no live owner (a killed or paused node's lease running out); the
/// client and what the join brought.
async fn join_when_served(
    node: &ProcessServer,
    who: &Identity,
    name: &str,
    after: Option<u64>,
) -> (Client, peerhub_tests::client::Joined) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut client = Client::connect(node.addr).await;
        client.login(who).await;
        let id = client.next_id();
        let env = who.join(GROUP, name);
        client
            .send(&ClientFrame::Join {
                id: Some(id),
                group: gid(GROUP),
                after,
                access_code: None,
                env,
            })
            .await;
        let reply = client.try_reply_to(id).await;
        if let Ok(reply @ ServerFrame::Joined { .. }) = reply {
            let joined = client.joined_reply(GROUP, after, reply).await;
            return (client, joined);
        }
        assert!(
            Instant::now() < until,
            "the group is served again within 60 s: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every post in [`GROUP`] as a newcomer on `node` reads it: (seq, body), in order.
async fn history(node: &ProcessServer, name: &str) -> Vec<(u64, String)> {
    let reader = Identity::generate();
    let (_client, joined) = joined(node, &reader, name, Some(0)).await;
    joined
        .history
        .iter()
        .map(|e| (e.seq, e.verified_body()))
        .collect()
}

/// Reads `client` until the server closes it, for up to `bound` (longer than
/// one frame's wait: a member's connection on a node whose group's owner is
/// paused closes only after its leave to that owner timed out, 10 s).
async fn closed_within(client: &mut Client, bound: Duration) -> peerhub_tests::Closed {
    let until = Instant::now() + bound;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), client.recv()).await {
            Ok(Err(closed)) => return closed,
            Ok(Ok(_)) => {}
            Err(_) => assert!(Instant::now() < until, "closed within {bound:?}"),
        }
    }
}

/// One gap-free order from 1, every acknowledged body exactly once.
fn assert_whole(history: &[(u64, String)], acked: &[(u64, String)]) {
    let seqs: Vec<u64> = history.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=history.len() as u64).collect::<Vec<_>>(),
        "one gap-free order: {history:?}"
    );
    for (seq, body) in acked {
        let found: Vec<&(u64, String)> = history.iter().filter(|(_, b)| b == body).collect();
        assert_eq!(
            found,
            [&(*seq, body.clone())],
            "acked {body} at {seq} is in the history once, at its seq"
        );
    }
}

/// What a node prints when it starts in cluster mode: its name and the NATS
/// servers it reached, and the cluster's one first-admin link on the first node
/// only — the second says one is still unused, and after it is redeemed a
/// restarted node says an admin exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_prints_its_name_nats_and_the_clusters_one_first_admin_link() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = node(&cluster, &dir.path().join("a"), "a").await;
        let mut b = node(&cluster, &dir.path().join("b"), "b").await;
        for (node, name) in [(&a, "a"), (&b, "b")] {
            let line = |prefix: &str| {
                node.stdout
                    .iter()
                    .find(|l| l.starts_with(prefix))
                    .unwrap_or_else(|| panic!("{name} printed {prefix}: {:?}", node.stdout))
                    .clone()
            };
            assert!(line("cluster node: ")
                .starts_with(&format!("cluster node: {name} (this run: {name}-")));
            let nats = line("NATS: reachable at ");
            for url in cluster.urls() {
                assert!(nats.contains(&url), "{nats}");
            }
        }
        assert!(a.links.contains_key("first admin (single use, 24 h)"));
        assert!(!b.links.contains_key("first admin (single use, 24 h)"));
        assert!(
            b.stdout
                .iter()
                .any(|l| l.starts_with("first admin: a link printed earlier")),
            "{:?}",
            b.stdout
        );
        // The link a printed works on b: the invite is the cluster's.
        let token = a
            .invite_token("first admin (single use, 24 h)")
            .expect("token");
        drop(b.redeemed(&token).await);
        b.signal("TERM");
        assert!(b.wait().await.success());
        let b = node(&cluster, &dir.path().join("b"), "b").await;
        assert!(
            b.stdout.iter().any(|l| l == "first admin: an admin exists"),
            "{:?}",
            b.stdout
        );
    })
    .await
    .expect("bounded");
}

/// A node whose NATS servers never answer keeps trying for its open grace
/// (30 s), then exits non-zero naming the servers and the check, having
/// printed nothing on stdout and served nothing. Scheduled backups, which would
/// copy one node's store, are refused with cluster mode at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_reach_nats_fails_after_its_grace_and_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let out = tokio::time::timeout(
        BOUND,
        tokio::process::Command::new(peerhub_tests::process::binary())
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .env("PEERHUB_CLUSTER_NATS_URLS", &url)
            .env("PEERHUB_CLUSTER_NODE_NAME", "lonely")
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await
    .expect("bounded")
    .expect("run peerhub");
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        waited >= Duration::from_secs(29),
        "gave up after {waited:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needed in [
        "cluster node lonely: no NATS server answered in 30 s",
        url.as_str(),
        "peerhub cluster check",
    ] {
        assert!(stderr.contains(needed), "{needed:?} in {stderr}");
    }
    assert!(!data.exists(), "no data folder made");

    // Scheduled backups would copy one node's store: refused at once, checked
    // or served.
    for check in [true, false] {
        let mut command = tokio::process::Command::new(peerhub_tests::process::binary());
        if check {
            command.arg("--check-config");
        }
        let backups = dir.path().join("backups");
        let out = command
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .env("PEERHUB_CLUSTER_NATS_URLS", &url)
            .env("PEERHUB_BACKUP_INTERVAL_SECS", "3600")
            .env("PEERHUB_BACKUP_FOLDER", &backups)
            .output()
            .await
            .expect("run peerhub");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("backup.interval_secs"), "{stderr}");
        assert!(!data.exists() && !backups.exists(), "nothing made");
    }

    // The configuration itself is valid, and shown.
    let out = tokio::process::Command::new(peerhub_tests::process::binary())
        .arg("--check-config")
        .env("PEERHUB_CLUSTER_NATS_URLS", &url)
        .output()
        .await
        .expect("run peerhub");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[cluster]"));
}

/// On a running node, the commands that would read or change one node's copy
/// alone (backup, export) are refused and write nothing; the escalation list
/// and the rota are the router's leader's (`cluster_ops.rs`); an invite goes
/// to the cluster and is redeemed on the other node. On a stopped
/// node's folder every command is refused, and erase says it is not built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_that_would_act_on_one_nodes_copy_are_refused() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut a, b) = two_nodes(&cluster, dir.path()).await;
        let data = dir.path().join("a");
        let peerhub = |args: Vec<String>| async move {
            tokio::process::Command::new(peerhub_tests::process::binary())
                .args(args)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("run peerhub")
        };
        let data_arg = data.to_string_lossy().into_owned();
        let out_file = dir.path().join("copy.bak");
        let key = Identity::generate().key().to_string();
        let refused: [(Vec<&str>, &str); 1] = [(
            vec!["backup", "--out", out_file.to_str().expect("path")],
            "peerhub backup --config FILE --out FILE",
        )];
        for (args, says) in &refused {
            let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            all.extend(["--data".to_string(), data_arg.clone()]);
            let out = peerhub(all).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(says) && stderr.contains("cluster"),
                "{args:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        assert!(!out_file.exists(), "no backup written");
        // An export reaches the cluster's logs through the running node.
        let out = peerhub(vec![
            "export".into(),
            "--key".into(),
            key.clone(),
            "--data".into(),
            data_arg.clone(),
        ])
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "export: {stderr}");
        let exported: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the export is JSON");
        assert!(exported.is_object(), "{exported}");
        // Answered by the router's leader, whichever node it is.
        for (args, says) in [
            (["escalation", "list"], "\"matching\": 0"),
            (["rota", "list"], "[]"),
        ] {
            let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            all.extend(["--data".to_string(), data_arg.clone()]);
            let out = peerhub(all).await;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains(says), "{args:?}: {stdout}");
        }

        // An invite made through node a is redeemed on node b.
        let out = peerhub(vec![
            "invite".into(),
            "--data".into(),
            data_arg.clone(),
            "--role".into(),
            "supervisor".into(),
        ])
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        drop(b.redeemed(&token).await);

        // Stopped: nothing acts on the folder alone.
        a.signal("TERM");
        assert!(a.wait().await.success());
        for args in [
            vec!["invite", "--role", "supervisor"],
            vec!["group", "list"],
            vec!["erase", "--key", key.as_str()],
            vec!["rota", "list"],
        ] {
            let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            all.extend(["--data".to_string(), data_arg.clone()]);
            let out = peerhub(all).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains("a stopped cluster node's data folder"),
                "{args:?}: {stderr}"
            );
        }
    })
    .await
    .expect("bounded");
}

/// `kill -9` of the process serving a group mid-conversation: the members'
/// clients join again on the other node and resume with `after`; every
/// acknowledged post is in the history once, no seq is used twice, and the group
/// is served again (kill to first ack printed; the test bound is the only limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_serving_process_loses_no_acknowledged_post() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut a, b) = two_nodes(&cluster, dir.path()).await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        // River joins first, on a: a serves the group. Sky is on b.
        let (mut on_a, _) = joined(&a, &river, "River", None).await;
        let (mut on_b, _) = joined(&b, &sky, "Sky", None).await;
        let mut acked = Vec::new();
        for round in 0..4 {
            let body = format!("river {round}");
            acked.push((on_a.post(GROUP, &body).await, body));
            let body = format!("sky {round}");
            acked.push((on_b.post(GROUP, &body).await, body));
        }
        // Sky has read every event so far: her resume point.
        let mut sky_seen = 0;
        while sky_seen < 8 {
            sky_seen = on_b.next_event(GROUP).await.seq;
        }
        // Mid-conversation: River's post is on its way when a dies.
        let in_flight = river.post(GROUP, "river in flight");
        on_a.send(&ClientFrame::Post {
            id: Some(900),
            group: gid(GROUP),
            env: in_flight,
        })
        .await;
        a.signal("KILL");
        let killed = Instant::now();
        assert!(!a.wait().await.success());
        if let Ok(ServerFrame::Ack { seq, .. }) = on_a.try_reply_to(900).await {
            acked.push((seq, "river in flight".into()));
        }
        // Sky's connection through b closes once b sees a's lease run out.
        drop(on_b.expect_closed().await);
        let (mut sky_again, resumed) = join_when_served(&b, &sky, "Sky", Some(sky_seen)).await;
        let first_ack = sky_again.post(GROUP, "sky after").await;
        eprintln!(
            "kill -9 to first ack on the other node: {:?}",
            killed.elapsed()
        );
        let head = resumed.head;
        assert!(
            head == 8 || head == 9,
            "head {head}: at most the in-flight post more"
        );
        let resumed_seqs: Vec<u64> = resumed.history.iter().map(|e| e.seq).collect();
        assert_eq!(resumed_seqs, (sky_seen + 1..=head).collect::<Vec<_>>());
        assert_eq!(first_ack, head + 1, "no seq used twice");
        acked.push((first_ack, "sky after".into()));
        // River comes back on b and resumes after what it saw.
        let (_river_again, resumed) = join_when_served(&b, &river, "River", Some(8)).await;
        assert_eq!(resumed.head, first_ack);
        assert_whole(&history(&b, "Reader").await, &acked);
    })
    .await
    .expect("bounded");
}

/// A paused old owner (SIGSTOP past the lease TTL, as a partition leaves it)
/// cannot append: the other node takes the group over and acknowledges posts;
/// the old one, continued, gets no ack for what was in flight, closes its
/// clients (4001) and they resume on the new owner; one gap-free order holds
/// every acknowledged post once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_owner_is_fenced_and_its_clients_resume_on_the_new_one() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = two_nodes(&cluster, dir.path()).await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let (mut on_a, _) = joined(&a, &river, "River", None).await;
        let (mut on_b, _) = joined(&b, &sky, "Sky", None).await;
        let mut acked = Vec::new();
        for round in 0..3 {
            let body = format!("river {round}");
            acked.push((on_a.post(GROUP, &body).await, body));
            let body = format!("sky {round}");
            acked.push((on_b.post(GROUP, &body).await, body));
        }
        let mut river_seen = 0;
        while river_seen < 6 {
            river_seen = on_a.next_event(GROUP).await.seq;
        }
        a.signal("STOP");
        let paused = Instant::now();
        // While a is paused River's post waits in its socket.
        on_a.send(&ClientFrame::Post {
            id: Some(901),
            group: gid(GROUP),
            env: river.post(GROUP, "river while paused"),
        })
        .await;
        // b sees a's lease run out, closes Sky's connection through a, and
        // takes the group over when she joins again.
        let closed = closed_within(&mut on_b, Duration::from_secs(40)).await;
        eprintln!(
            "SIGSTOP of the owner to the close of a member's connection on the other node: {:?} ({closed:?})",
            paused.elapsed()
        );
        let (mut sky_again, resumed) = join_when_served(&b, &sky, "Sky", Some(6)).await;
        assert_eq!(resumed.head, 6);
        for round in 0..2 {
            let body = format!("sky on the new owner {round}");
            acked.push((sky_again.post(GROUP, &body).await, body));
        }
        eprintln!("SIGSTOP to posts on the new owner: {:?}", paused.elapsed());
        a.signal("CONT");
        // The old owner appends nothing more: it closes River's connection. The
        // post it held either never gets an ack, or gets one from the new owner
        // (a session on a can reach b once a knows it lost the group): then it
        // is in b's log at that seq.
        let answer = on_a.try_reply_to(901).await;
        let closed = match answer {
            Err(closed) => closed,
            Ok(ServerFrame::Ack { seq, .. }) => {
                eprintln!("the post held while paused was acknowledged through b at {seq}");
                acked.push((seq, "river while paused".into()));
                closed_within(&mut on_a, Duration::from_secs(40)).await
            }
            Ok(other) => {
                eprintln!("the post held while paused was answered {other:?}");
                closed_within(&mut on_a, Duration::from_secs(40)).await
            }
        };
        // 4001 for the group it lost, or 1013 for its presence, lost with it
        // (`cluster::presence`): whichever its session sees first; both say
        // "reconnect and resume".
        assert!(matches!(closed.code, Some(4001 | 1013)), "{closed:?}");
        let stopped = |logs: &[String]| {
            logs.iter()
                .any(|l| l.contains("group lease lost") || l.contains("group task stopping"))
        };
        let until = Instant::now() + Duration::from_secs(10);
        while !stopped(&a.logs.lock().expect("logs")) {
            assert!(
                Instant::now() < until,
                "a says it stopped serving the group"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ... and counts it where an operator's alert sees it.
        let (status, _, metrics) = super::http::get(a.addr, "/metrics", "").await;
        assert_eq!(status, 200);
        let lost: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("peerhub_cluster_groups_lost_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(lost >= 1.0, "a counts the group it lost:\n{metrics}");
        let (mut river_again, resumed) =
            join_when_served(&b, &river, "River", Some(river_seen)).await;
        let seqs: Vec<u64> = resumed.history.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (river_seen + 1..=resumed.head).collect::<Vec<_>>(),
            "River resumes after what it saw"
        );
        let body = "river on the new owner".to_string();
        let seq = river_again.post(GROUP, &body).await;
        assert_eq!(seq, resumed.head + 1, "no seq used twice");
        acked.push((seq, body));
        let history = history(&b, "Reader").await;
        assert_whole(&history, &acked);
        // Beside the acked posts, at most the one River's connection lost the
        // answer to (taken by b, its ack not delivered before a closed it).
        let unacked: Vec<&(u64, String)> = history
            .iter()
            .filter(|(seq, _)| !acked.iter().any(|(s, _)| s == seq))
            .collect();
        assert!(
            unacked.is_empty() || (unacked.len() == 1 && unacked[0].1 == "river while paused"),
            "nothing but the acked posts: {history:?}"
        );
        let head = history.len() as u64;
        // a serves on: a new connection to it reaches the group through b.
        let moss = Identity::generate();
        let (mut on_a_again, joined_a) = join_when_served(&a, &moss, "Moss", Some(head)).await;
        assert_eq!(joined_a.head, head);
        assert_eq!(on_a_again.post(GROUP, "moss via a").await, head + 1);
    })
    .await
    .expect("bounded");
}

/// A node paused past its presence lease (SIGSTOP, as a partition from NATS
/// leaves it) is taken for gone: the group's owner lets go of its members'
/// proxies. Continued, it closes its members' connections, says so on
/// `/readyz` until it is back, takes its presence again, and a member who
/// reconnects through it is sent the group's posts for good. Fails on the old
/// code: the presence was never taken again, so the owner let go of every new
/// proxy through b at its next sweep and the member was closed (4001) again and
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_presence_sends_its_members_to_reconnect_and_serves_them_again() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = two_nodes(&cluster, dir.path()).await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let (mut on_a, _) = joined(&a, &river, "River", None).await;
        let (mut on_b, _) = joined(&b, &sky, "Sky", None).await;
        let seq = on_a.post(GROUP, "before the pause").await;
        assert_eq!(on_b.next_event(GROUP).await.seq, seq);

        b.signal("STOP");
        // Past b's presence (2 s) and a's next sweep of absent nodes (every 2 s).
        tokio::time::sleep(Duration::from_secs(6)).await;
        b.signal("CONT");
        let closed = closed_within(&mut on_b, Duration::from_secs(30)).await;
        // 1013 for b's lost presence, or 4001 if its session first saw the
        // frames it missed: both say "reconnect and resume".
        match closed.code {
            Some(1013) => assert!(
                closed.reason.contains("lost touch with the cluster"),
                "{closed:?}"
            ),
            Some(4001) => {}
            _ => panic!("closed with {closed:?}"),
        }

        // b takes its presence again and says it is ready.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _, body) = super::http::get(b.addr, "/readyz", "").await;
            if status == 200 {
                break;
            }
            assert!(
                body.contains("lost touch with the cluster") || body.contains("router"),
                "{status} {body}"
            );
            assert!(Instant::now() < until, "b is ready again within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (mut sky_again, resumed) = join_when_served(&b, &sky, "Sky", Some(seq)).await;
        assert_eq!(resumed.head, seq);
        // Two of a's sweeps later, Sky's proxy is still there: River's posts reach her.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for round in 0..3 {
            let posted = on_a.post(GROUP, &format!("after the pause {round}")).await;
            let event = tokio::time::timeout(Duration::from_secs(10), sky_again.next_event(GROUP))
                .await
                .expect("the post reaches the member who reconnected through b");
            assert_eq!(event.seq, posted);
        }
        assert_eq!(sky_again.post(GROUP, "sky is back").await, seq + 4);
    })
    .await
    .expect("bounded");
}

/// The escalation summaries a staff connection is pushed or lists, until one
/// that `want` accepts (for up to 60 s: a router failover takes a lease TTL and
/// a frame may come late).
async fn escalation_where(
    client: &mut Client,
    want: impl Fn(&peerhub_protocol::escalation::EscalationSummary) -> bool,
) -> peerhub_protocol::escalation::EscalationSummary {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let frame = match tokio::time::timeout(Duration::from_secs(1), client.recv()).await {
            Ok(frame) => frame.expect("the staff connection stays open"),
            Err(_) => {
                assert!(Instant::now() < until, "the escalation came within 60 s");
                continue;
            }
        };
        let found = match frame {
            ServerFrame::Escalation { escalation } => Some(escalation).filter(|e| want(e)),
            ServerFrame::Escalations { escalations, .. } => {
                escalations.into_iter().find(|e| want(e))
            }
            _ => None,
        };
        if let Some(found) = found {
            return found;
        }
    }
}

/// `kill -9` of the process leading the escalation router while an urgent flag
/// waits for a supervisor: the other node takes the router over from its log and
/// moves the same escalation on at its deadline; the supervisor connected there
/// sees it (kill to the move printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_routers_process_and_the_other_node_enforces_the_deadline() {
    use peerhub_protocol::escalation::{EscalationStatus, Severity};
    use peerhub_protocol::payload::InviteRole;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let deadline = ["--deadline-urgent-ms", "4000"];
        // a starts first and leads the router.
        let mut a = node_with(&cluster, &dir.path().join("a"), "a", &deadline).await;
        let b = node_with(&cluster, &dir.path().join("b"), "b", &deadline).await;
        let mut admin = a.admin().await;
        let me = admin.identity.clone().expect("admin identity");
        let env = me.create_group_with(GROUP, "Circle", GroupKind::DropIn, |g| {
            g.waiting_room = Some(false)
        });
        let reply = admin
            .request(|id| ClientFrame::CreateGroup {
                id,
                access_code: None,
                env,
            })
            .await;
        assert!(
            matches!(reply, ServerFrame::GroupCreated { .. }),
            "{reply:?}"
        );
        // The supervisor and the person asking for help are on b.
        let token = admin.invite(InviteRole::Supervisor, None).await;
        let (supervisor, redeemed) = b.redeemed(&token).await;
        drop(redeemed);
        let mut sup = Client::connect(b.addr).await;
        sup.login(&supervisor).await;
        let river = Identity::generate();
        let (mut on_b, _) = joined(&b, &river, "River", None).await;
        let reply = on_b
            .flag_with(GROUP, river.key(), Severity::Urgent, |_| {})
            .await;
        assert!(
            matches!(&reply, ServerFrame::Flagged { helplines, .. } if !helplines.is_empty()),
            "the flag is taken by the router on a: {reply:?}"
        );
        let open = escalation_where(&mut sup, |e| {
            e.about == river.key() && e.status == EscalationStatus::Open
        })
        .await;
        // Nobody on call: it waits for every supervisor, and moves on a level
        // at its deadline unless someone takes it.
        a.signal("KILL");
        let killed = Instant::now();
        assert!(!a.wait().await.success());
        let moved =
            escalation_where(&mut sup, |e| e.about == river.key() && e.level > open.level).await;
        eprintln!(
            "kill -9 of the router's node to the escalation moved on by the other: {:?}",
            killed.elapsed()
        );
        assert_eq!(moved.id, open.id, "the same escalation, not a new one");
        assert_eq!(moved.status, EscalationStatus::Open);
    })
    .await
    .expect("bounded");
}

/// Crash loop over processes: `CYCLES` times, the process serving the group is
/// killed (`kill -9`) with a post in flight and started again on its data, the
/// two nodes in turn; members join again with `after` and post on. Every
/// acknowledged post is in the history exactly once, in one gap-free order;
/// besides them the history holds at most posts that were in flight at a kill
/// (their ack lost with the process). Kill to first ack on the other node:
/// p50 and max printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_over_processes_loses_no_acknowledged_post() {
    const CYCLES: usize = 20;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = two_nodes(&cluster, dir.path()).await;
        let mut nodes = [Some(a), Some(b)];
        let names = ["a", "b"];
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut acked: Vec<(u64, String)> = Vec::new();
        let mut in_flight = Vec::new();
        let mut failovers = Vec::new();
        let mut seen = 0;
        for cycle in 0..CYCLES {
            // River joins on the node to be killed (after cycle 0 it serves the
            // group: Sky's join on it took the group over last cycle), Sky on
            // the other.
            let (kill, other) = (cycle % 2, (cycle + 1) % 2);
            let victim = nodes[kill].as_ref().expect("running");
            let survivor = nodes[other].as_ref().expect("running");
            let (mut on_victim, _) = join_when_served(victim, &river, "River", Some(seen)).await;
            let (mut on_survivor, _) = join_when_served(survivor, &sky, "Sky", Some(seen)).await;
            for (client, who) in [(&mut on_victim, "river"), (&mut on_survivor, "sky")] {
                let body = format!("{who} {cycle}");
                let seq = client.post(GROUP, &body).await;
                acked.push((seq, body));
            }
            let body = format!("river in flight {cycle}");
            on_victim
                .send(&ClientFrame::Post {
                    id: Some(900),
                    group: gid(GROUP),
                    env: river.post(GROUP, &body),
                })
                .await;
            let mut victim = nodes[kill].take().expect("running");
            victim.signal("KILL");
            let killed = Instant::now();
            assert!(!victim.wait().await.success());
            if let Ok(ServerFrame::Ack { seq, .. }) = on_victim.try_reply_to(900).await {
                acked.push((seq, body.clone()));
            }
            in_flight.push(body);
            drop((on_victim, on_survivor));
            seen = acked.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
            // Sky joins again on the survivor, which takes the group over.
            let survivor = nodes[other].as_ref().expect("running");
            let (mut sky_again, joined) = join_when_served(survivor, &sky, "Sky", Some(seen)).await;
            let body = format!("sky after kill {cycle}");
            let seq = sky_again.post(GROUP, &body).await;
            failovers.push(killed.elapsed());
            assert_eq!(seq, joined.head + 1, "cycle {cycle}: no seq used twice");
            acked.push((seq, body));
            seen = seq;
            drop(sky_again);
            // The killed node comes back on its own data.
            nodes[kill] = Some(node(&cluster, &dir.path().join(names[kill]), names[kill]).await);
        }
        let reader = nodes[0].as_ref().expect("running");
        let history = history(reader, "Reader").await;
        assert_whole(&history, &acked);
        for (seq, body) in &history {
            let is_acked = acked.iter().any(|(s, _)| s == seq);
            assert!(
                is_acked || in_flight.contains(body),
                "{body} at {seq} was neither acknowledged nor in flight at a kill"
            );
        }
        failovers.sort();
        eprintln!(
            "crash loop over processes: {CYCLES} kill -9 cycles, {} posts acknowledged, lost 0, \
             {} in-flight posts kept unacknowledged; kill to first ack p50 {:?}, max {:?}",
            acked.len(),
            history.len() - acked.len(),
            failovers[failovers.len() / 2],
            failovers[failovers.len() - 1]
        );
    })
    .await
    .expect("bounded");
}
