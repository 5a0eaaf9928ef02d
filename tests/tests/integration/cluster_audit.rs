//! The audit record in cluster mode (issue 18: "audit verify works in cluster
//! mode"; docs/CLUSTER.md §8, "Audit"): in-process peerhub nodes on a real
//! three-server NATS cluster. Each node keeps its own sled chain, written with
//! each action before its ack, and ships it into the `PEERHUB_AUDIT` stream in
//! the background: both nodes' chains are there and verify; a node's chain
//! outlives its data folder; a node killed mid-shipping ships each entry once;
//! a forged or removed message is reported where it is; a session end's rewrite
//! and retention's prune reach the stream, with the old copies erased; an audit
//! stream that refuses writes delays shipping, never an ack.

use std::time::Duration;

use bytes::Bytes;
use peerhub_protocol::payload::{ControlAction, InviteRole};
use peerhub_protocol::ServerFrame;
use peerhub_server::audit::{self, BreakReason};
use peerhub_server::cluster::audit::{
    AuditConfig, ChainName, ChainProblem, ClusterAudit, StoredChain,
};
use peerhub_server::retention::{self, RetentionSettings, DAY_MS};
use peerhub_tests::nats::{opened, NatsCluster};
use peerhub_tests::process::binary;
use peerhub_tests::{CrashableServer as Crashable, Identity, TestServer};

use super::cluster_nodes::{flagged, staff_on};
use super::metrics::scrape;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(240);

async fn node(cluster: &NatsCluster, name: &str) -> TestServer {
    let settings = cluster.node_settings(name);
    TestServer::start_with(move |config| config.cluster = Some(settings)).await
}

/// Node `name` on a runtime of its own, to be stopped dead; on `data` if given
/// (to start it again on the same folder), else on a folder that goes with it.
fn crashable(cluster: &NatsCluster, name: &str, data: Option<std::path::PathBuf>) -> Crashable {
    let settings = cluster.node_settings(name);
    Crashable::start(move |config| {
        config.cluster = Some(settings);
        if let Some(data) = data {
            config.data_dir = data;
        }
    })
}

/// The audit stream, as an auditor opens it.
async fn stream(cluster: &NatsCluster) -> ClusterAudit {
    let nats = cluster.connect(1, "auditor").await;
    let config = AuditConfig::default();
    opened("the audit stream", || ClusterAudit::open(&nats, &config)).await
}

/// The name of `server`'s chain in the stream.
fn chain_name(server: &TestServer) -> ChainName {
    let node = server.hub().cluster.as_ref().expect("a cluster node");
    ChainName {
        node: node.settings.node_name.clone(),
        chain: server.hub().store.audit_chain_id().expect("chain id"),
    }
}

/// `server`'s sled chain: every stored entry, in order.
fn sled_chain(server: &TestServer) -> Vec<(u64, Vec<u8>)> {
    server
        .hub()
        .store
        .audit_entries()
        .map(|e| e.expect("entry"))
        .collect()
}

/// The stream's copy of a chain: each entry's seq and bytes.
fn copy_of(chain: &StoredChain) -> Vec<(u64, Vec<u8>)> {
    chain
        .entries
        .iter()
        .map(|(seq, c)| (*seq, c.payload.to_vec()))
        .collect()
}

/// Waits until the stream holds `server`'s chain exactly: the same entries,
/// byte for byte, the same anchor, and no older copy left; returns it.
async fn shipped(audit: &ClusterAudit, server: &TestServer) -> StoredChain {
    let name = chain_name(server);
    loop {
        let sled = sled_chain(server);
        let anchor = audit::anchor(&server.hub().store).expect("anchor");
        let chain = audit.read_chain(&name).await.expect("read the stream");
        if copy_of(&chain) == sled && chain.anchor() == anchor && chain.stale.is_empty() {
            return chain;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The actions of a chain's entries, in order.
fn actions(entries: &[(u64, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(_, bytes)| audit::AuditEntry::parse(bytes).expect("an entry").0.action)
        .collect()
}

/// The files of the audit stream's own store (not the servers' Raft logs,
/// which keep a message until they compact: docs/CLUSTER.md §8) holding
/// `needle`.
fn in_audit_stream(cluster: &NatsCluster, needle: &[u8]) -> Vec<String> {
    cluster
        .files_holding(needle)
        .into_iter()
        .filter(|f| f.contains("/streams/PEERHUB_AUDIT/"))
        .collect()
}

/// Changes the audit stream's configuration (`what` names the change), asking
/// again while the request times out (a loaded machine, an election).
async fn update_stream(
    js: &async_nats::jetstream::Context,
    config: &async_nats::jetstream::stream::Config,
    what: &str,
) {
    let mut tries = 0;
    while let Err(error) = js.update_stream(config).await {
        tries += 1;
        assert!(tries < 20, "{what}: {error}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `peerhub audit verify --cluster` against `cluster` (no other
/// `PEERHUB_*`), off the runtime.
async fn verify_cli(cluster: &NatsCluster) -> std::process::Output {
    let urls = cluster.urls().join(",");
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(binary());
        for (name, _) in std::env::vars() {
            if name.starts_with("PEERHUB_") {
                command.env_remove(name);
            }
        }
        command
            .args(["audit", "verify", "--cluster"])
            .env("PEERHUB_CLUSTER_NATS_URLS", urls)
            .env("PEERHUB_CLUSTER_NODE_NAME", "auditor")
            .output()
            .expect("run peerhub")
    })
    .await
    .expect("joined")
}

/// Controls, grants and an escalation step on two nodes: both chains reach the
/// stream byte for byte and verify there. Node b is then killed and its data
/// folder goes: its chain is still in the stream and verifies; b started again
/// on a fresh folder ships a second chain beside it. With every node
/// stopped, `peerhub audit verify --cluster` checks both from NATS alone; a
/// message removed from the stream, then a forged copy of an entry, are each
/// reported at their entry (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_chains_reach_the_stream_and_outlive_a_wiped_node() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = crashable(&cluster, "b", None);
        a.create_group_with("circle", |g| g.waiting_room = Some(false))
            .await;
        let mut admin = a.admin().await;
        // The facilitator redeems on b and joins first there: b serves circle.
        let (_, mut fac) = staff_on(
            &b.server,
            &mut admin,
            InviteRole::Facilitator,
            Some("circle"),
        )
        .await;
        fac.join("circle", "Jo", None).await;
        let (_, mut sup) = staff_on(&a, &mut admin, InviteRole::Supervisor, None).await;
        // River asks for help (the router, on a, records the escalation).
        let (river, _on_a, _open) = flagged(&a, &mut sup).await;
        let reply = fac
            .control(
                "circle",
                ControlAction::Mute {
                    member: river.key(),
                    minutes: 5,
                },
            )
            .await;
        assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");

        let audit = stream(&cluster).await;
        let on_a = shipped(&audit, &a).await;
        let on_b = shipped(&audit, &b.server).await;
        let (acts_a, acts_b) = (actions(&copy_of(&on_a)), actions(&copy_of(&on_b)));
        eprintln!("a: {acts_a:?}\nb: {acts_b:?}");
        let all: Vec<&String> = acts_a.iter().chain(&acts_b).collect();
        for wanted in [
            "group.create",
            "role.grant",
            "control.mute",
            "escalation.raise",
        ] {
            assert!(all.iter().any(|a| *a == wanted), "{wanted} in {all:?}");
        }
        assert!(
            acts_b.contains(&"control.mute".to_string()),
            "b serves circle"
        );
        assert!(
            acts_b.contains(&"role.grant".to_string()),
            "Jo redeemed on b"
        );
        let verdicts = audit.verify_all().await.expect("read");
        assert_eq!(verdicts.len(), 2, "{verdicts:?}");
        for verdict in &verdicts {
            let report = verdict.verdict.as_ref().expect("each chain verifies");
            let chain = if verdict.name == chain_name(&a) {
                &on_a
            } else {
                &on_b
            };
            assert_eq!(report.entries, chain.entries.len() as u64);
        }
        let lag = scrape(&a).await.get("peerhub_cluster_audit_unshipped", &[]);
        assert_eq!(lag, 0.0);

        // b dies and its data folder goes with it.
        let (b_name, b_dir) = (chain_name(&b.server), b.server.data_dir().to_path_buf());
        let b_entries = copy_of(&on_b);
        b.crash();
        // Its folder may be going already, on the dead runtime's thread.
        let _ = std::fs::remove_dir_all(&b_dir);
        while b_dir.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let kept = audit.read_chain(&b_name).await.expect("read");
        assert_eq!(
            copy_of(&kept),
            b_entries,
            "b's chain is still in the stream"
        );
        assert_eq!(
            kept.verify().expect("verifies").entries,
            b_entries.len() as u64
        );

        // b started again under its name on a fresh folder: a new chain beside
        // the old one, which stays as it was.
        let b2 = node(&cluster, "b").await;
        let b2_name = chain_name(&b2);
        assert_eq!(b2_name.node, b_name.node);
        assert_ne!(
            b2_name.chain, b_name.chain,
            "a fresh folder, a new chain id"
        );
        let _ = staff_on(&b2, &mut admin, InviteRole::Supervisor, None).await;
        let on_b2 = shipped(&audit, &b2).await;
        assert!(actions(&copy_of(&on_b2)).contains(&"role.grant".to_string()));
        let still = audit.read_chain(&b_name).await.expect("read");
        assert_eq!(copy_of(&still), b_entries, "the old chain is untouched");
        b2.shutdown().await;

        // Every node stopped: the check needs NATS only.
        let a_name = chain_name(&a);
        a.shutdown().await;
        let out = verify_cli(&cluster).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for name in [&a_name, &b_name] {
            assert!(
                stdout.contains(&format!("audit chain {}/{} OK: ", name.node, name.chain)),
                "{stdout}"
            );
        }
        assert!(stdout.contains("3 audit chains"), "{stdout}");

        // Entry 3 of a's chain removed from the stream: broken at 3.
        let nats = cluster.connect(0, "tamperer").await;
        let js = nats.jetstream();
        let raw = js.get_stream("PEERHUB_AUDIT").await.expect("stream");
        let chain = audit.read_chain(&a_name).await.expect("read");
        assert!(raw
            .delete_message(chain.entries[&3].stream_seq)
            .await
            .expect("deleted"));
        let out = verify_cli(&cluster).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "audit chain {}/{} BROKEN at entry 3: this entry is missing",
                a_name.node, a_name.chain
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("audit chain {}/{} OK", b_name.node, b_name.chain)),
            "the other chain is still intact: {stdout}"
        );

        // A forged copy of entry 2 (one byte of its body changed, its hash
        // line kept) published on its subject: broken at 2.
        let mut forged = chain.entries[&2].payload.to_vec();
        let at = forged.len() - 3;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let subject = format!("peerhub.audit.{}.{}.e.2", a_name.node, a_name.chain);
        js.publish(subject, Bytes::from(forged))
            .await
            .expect("sent")
            .await
            .expect("stored");
        let verdicts = audit.verify_all().await.expect("read");
        let forged = verdicts
            .iter()
            .find(|v| v.name == a_name)
            .expect("a's chain");
        match &forged.verdict {
            Err(ChainProblem::Break(broken)) => {
                assert_eq!(broken.seq, 2, "{broken}");
                assert!(
                    matches!(
                        broken.reason,
                        BreakReason::WrongHash { .. }
                            | BreakReason::Malformed(_)
                            | BreakReason::BadEnvelope { .. }
                    ),
                    "{broken}"
                );
            }
            other => panic!("a forged entry is a break at 2: {other:?}"),
        }
    })
    .await
    .expect("bounded");
}

/// The audit stream takes five more messages, then is full: a node makes
/// twenty entries, its shipper publishes five and its pass fails on the sixth,
/// and the node is killed there. With the stream open again and the node
/// started on the same folder, the stream gains exactly the entries it did not
/// hold (each published once, none again) and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_shipping_ships_each_entry_once_after_restart() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let mut a = crashable(&cluster, "a", Some(data.clone()));
        let name = chain_name(&a.server);
        let audit = stream(&cluster).await;
        let start = shipped(&audit, &a.server).await.entries.len();
        let nats = cluster.connect(2, "operator").await;
        let js = nats.jetstream();
        let mut raw = js.get_stream("PEERHUB_AUDIT").await.expect("stream");
        let info = raw.info().await.expect("info").clone();
        let mut five_more = info.config.clone();
        five_more.max_messages = i64::try_from(info.state.messages + 5).expect("count");
        five_more.discard = async_nats::jetstream::stream::DiscardPolicy::New;
        update_stream(js, &five_more, "stream limited").await;

        let mut admin = a.server.admin().await;
        for _ in 0..20 {
            admin.invite(InviteRole::Supervisor, None).await;
        }
        let made = sled_chain(&a.server).len();
        // The pass that stopped at the full stream: five shipped, the rest wait.
        while scrape(&a.server)
            .await
            .get("peerhub_cluster_audit_unshipped", &[])
            != (made - start - 5) as f64
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(admin);
        a.crash();

        let before = audit.read_chain(&name).await.expect("read");
        assert_eq!(
            before.entries.len(),
            start + 5,
            "five of the twenty shipped"
        );
        let last_before = raw.get_info().await.expect("info").state.last_sequence;
        let mut open = info.config.clone();
        open.max_messages = -1;
        update_stream(js, &open, "stream open again").await;

        a = crashable(&cluster, "a", Some(data));
        assert_eq!(
            chain_name(&a.server),
            name,
            "the chain id stays with the folder"
        );
        let after = shipped(&audit, &a.server).await;
        let last_after = raw.get_info().await.expect("info").state.last_sequence;
        assert!(after.entries.len() >= made);
        assert_eq!(
            last_after - last_before,
            (after.entries.len() - before.entries.len()) as u64,
            "each entry not yet in the stream was published once, and no other"
        );
        assert!(after.stale.is_empty() && after.unreadable.is_empty());
        after.verify().expect("verifies");
        a.crash();
    })
    .await
    .expect("bounded");
}

/// An ephemeral group's session ends: its owner rewrites its audit chain (the
/// participant's flag and the redaction's envelope become digests, the muted
/// member's key a pseudonym), and the shipper replaces the stream's copy from
/// the first rewritten entry: the flag's note and signature, the redaction's
/// reason and the old copies' bytes are gone from the audit stream's files, and
/// the new copy verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_rewrite_is_shipped_and_the_old_copies_are_erased() {
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
        let mut admin = a.admin().await;
        let (_, mut fac) = staff_on(&a, &mut admin, InviteRole::Facilitator, Some("dropin")).await;
        fac.join("dropin", "Jo", None).await;
        let pat = Identity::generate();
        let mut on_b = b.login(&pat).await;
        on_b.join("dropin", "Pat", None).await;
        let seq = on_b.post("dropin", "something said").await;
        // Pat asks for help: the router (on a, the first node up) records the
        // flag, Pat's signed envelope, in a's chain.
        let note = "pat-flag-note-k4v";
        let reply = on_b
            .flag_with(
                "dropin",
                pat.key(),
                peerhub_protocol::escalation::Severity::Concern,
                |p| p.note = Some(note.to_string()),
            )
            .await;
        assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
        let reason = "reason-quoting-pat-xq7";
        for action in [
            ControlAction::Mute {
                member: pat.key(),
                minutes: 5,
            },
            ControlAction::Redact {
                seq,
                reason: reason.to_string(),
            },
        ] {
            let reply = fac.control("dropin", action).await;
            assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
        }
        let audit = stream(&cluster).await;
        let before = loop {
            let before = shipped(&audit, &a).await;
            if actions(&copy_of(&before)).contains(&"escalation.raise".to_string()) {
                break before;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(!in_audit_stream(&cluster, reason.as_bytes()).is_empty());
        assert!(!in_audit_stream(&cluster, note.as_bytes()).is_empty());
        let pat_sig = before
            .entries
            .values()
            .map(|c| audit::AuditEntry::parse(&c.payload).expect("entry").0)
            .find(|e| e.action == "escalation.raise")
            .map(|e| e.envelopes[0].sig.to_b64())
            .expect("the flag's entry");
        let (mute, redact) = {
            let find = |action: &str| {
                before
                    .entries
                    .iter()
                    .find(|(_, c)| {
                        audit::AuditEntry::parse(&c.payload)
                            .expect("entry")
                            .0
                            .action
                            == action
                    })
                    .map(|(seq, c)| (*seq, c.hash().expect("hash")))
                    .expect("the entry")
            };
            (find("control.mute"), find("control.redact"))
        };

        let reply = fac.control("dropin", ControlAction::EndSession).await;
        assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
        let after = loop {
            let after = shipped(&audit, &a).await;
            if after.entries[&mute.0].hash() != Some(mute.1) {
                break after;
            }
        };
        let report = after.verify().expect("the rewritten copy verifies");
        assert!(report.erased_envelopes >= 1, "{report}");
        assert_ne!(after.entries[&redact.0].hash(), Some(redact.1));
        for (gone, what) in [
            (reason, "the redaction's reason"),
            (note, "Pat's flag"),
            (pat_sig.as_str(), "Pat's signature"),
        ] {
            assert_eq!(
                in_audit_stream(&cluster, gone.as_bytes()),
                Vec::<String>::new(),
                "{what} left the audit stream"
            );
        }
        for (_, old) in [mute, redact] {
            assert_eq!(
                in_audit_stream(&cluster, old.to_hex().as_bytes()),
                Vec::<String>::new(),
                "the old copy {old} was erased"
            );
        }
        let entry = audit::AuditEntry::parse(&after.entries[&mute.0].payload)
            .expect("entry")
            .0;
        assert_eq!(entry.subject, None, "the muted member's key is a pseudonym");
        assert!(entry.subject_pseudonym.is_some());
    })
    .await
    .expect("bounded");
}

/// Retention prunes a node's chain front behind an anchor: the shipper ships
/// the anchor and erases the stream's copies of the pruned entries, and the
/// stream's copy verifies from the anchor as sled's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retentions_prune_reaches_the_stream_with_its_anchor() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let mut admin = a.admin().await;
        for _ in 0..5 {
            admin.invite(InviteRole::Supervisor, None).await;
        }
        let audit = stream(&cluster).await;
        let before = shipped(&audit, &a).await;
        let first_hash = before
            .entries
            .values()
            .next()
            .expect("entries")
            .hash()
            .expect("hash");

        let settings = RetentionSettings {
            chat_history_days: Some(30),
            safeguarding_days: None,
            audit_days: Some(1),
            interval: Duration::from_secs(3600),
        };
        let report = retention::run_once(a.hub(), &settings, a.clock.now_ms() + 3 * DAY_MS)
            .await
            .expect("a pass");
        let through = report.audit_through_seq.expect("the front was pruned");
        let after = shipped(&audit, &a).await;
        assert_eq!(after.anchor().seq, through);
        assert!(after.entries.keys().all(|seq| *seq > through));
        let verified = after.verify().expect("verifies from the anchor");
        assert_eq!(verified.pruned, through);
        assert_eq!(
            verified,
            audit::verify(&a.hub().store).expect("sled's chain verifies"),
            "the stream's copy says what sled's does"
        );
        assert_eq!(
            in_audit_stream(&cluster, first_hash.to_hex().as_bytes()),
            Vec::<String>::new(),
            "the pruned entries were erased from the stream"
        );
    })
    .await
    .expect("bounded");
}

/// The audit stream refuses every write for a while (it is full): actions are
/// acknowledged all the same, since nothing that acks waits for the shipper,
/// and the lag metric counts what waits; once the stream takes writes again,
/// the chain is shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refusing_writes_delays_shipping_not_acks() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let mut admin = a.admin().await;
        admin.invite(InviteRole::Supervisor, None).await;
        let audit = stream(&cluster).await;
        let before = shipped(&audit, &a).await;

        let nats = cluster.connect(0, "operator").await;
        let js = nats.jetstream();
        let mut raw = js.get_stream("PEERHUB_AUDIT").await.expect("stream");
        let info = raw.info().await.expect("info").clone();
        let mut full = info.config.clone();
        full.max_messages = i64::try_from(info.state.messages).expect("count");
        full.discard = async_nats::jetstream::stream::DiscardPolicy::New;
        update_stream(js, &full, "stream made full").await;

        // Acked while nothing can be shipped.
        for _ in 0..3 {
            admin.invite(InviteRole::Supervisor, None).await;
        }
        let waiting = loop {
            let lag = scrape(&a).await.get("peerhub_cluster_audit_unshipped", &[]);
            if lag >= 3.0 {
                break lag;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        eprintln!("{waiting} entries wait to be shipped");
        let held = audit.read_chain(&chain_name(&a)).await.expect("read");
        assert_eq!(
            copy_of(&held),
            copy_of(&before),
            "nothing was shipped meanwhile"
        );

        let mut open = info.config.clone();
        open.max_messages = -1;
        update_stream(js, &open, "stream open again").await;
        let after = shipped(&audit, &a).await;
        assert_eq!(after.entries.len(), before.entries.len() + 3);
        after.verify().expect("verifies");
        loop {
            if scrape(&a).await.get("peerhub_cluster_audit_unshipped", &[]) == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("bounded");
}

/// `peerhub audit verify --cluster` without NATS named, or with none answering,
/// says why and exits 2; with neither `--data` nor `--cluster` it is refused.
#[tokio::test]
async fn audit_verify_cluster_without_nats_says_why_and_exits_2() {
    let run = |args: &'static [&'static str], env: Vec<(&'static str, String)>| {
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(binary());
            for (name, _) in std::env::vars() {
                if name.starts_with("PEERHUB_") {
                    command.env_remove(name);
                }
            }
            command.args(args).envs(env).output().expect("run peerhub")
        })
    };
    let none = run(&["audit", "verify", "--cluster"], vec![])
        .await
        .expect("ran");
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cluster.nats_urls"), "{stderr}");
    let unreachable = run(
        &["audit", "verify", "--cluster"],
        vec![
            (
                "PEERHUB_CLUSTER_NATS_URLS",
                "nats://127.0.0.1:1".to_string(),
            ),
            ("PEERHUB_CLUSTER_NODE_NAME", "auditor".to_string()),
        ],
    )
    .await
    .expect("ran");
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("connecting to NATS"), "{stderr}");
    assert!(unreachable.stdout.is_empty());
    let neither = run(&["audit", "verify"], vec![]).await.expect("ran");
    let stderr = String::from_utf8_lossy(&neither.stderr);
    assert_eq!(neither.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--data"), "{stderr}");
}

/// Copies the folder `from` to `to` (which must not exist), recursively.
fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_folder(&entry.path(), &target);
        } else if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A node's data folder replaced by an older copy of itself (same chain id,
/// fewer entries than the stream holds): its shipper refuses to overwrite the
/// stream's record, says so on `/metrics`, and the stream's copy stays as it
/// was and still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_of_a_folder_does_not_overwrite_the_streams_record() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("dir");
        let older = dir.path().join("older");
        let audit = stream(&cluster).await;
        let mut a = node(&cluster, "a").await;
        let name = chain_name(&a);
        let mut admin = a.admin().await;
        admin.invite(InviteRole::Supervisor, None).await;
        shipped(&audit, &a).await;
        drop(admin);
        let mut a = a.restart_with(|data| copy_folder(data, &older)).await;
        let mut admin = a.admin().await;
        for _ in 0..3 {
            admin.invite(InviteRole::Supervisor, None).await;
        }
        let record = shipped(&audit, &a).await;
        drop(admin);
        let a = a
            .restart_with(|data| {
                std::fs::remove_dir_all(data).expect("rm");
                std::fs::rename(&older, data).expect("mv");
            })
            .await;
        assert_eq!(chain_name(&a), name, "the same chain id");
        assert!(sled_chain(&a).len() < record.entries.len());
        while scrape(&a)
            .await
            .get("peerhub_cluster_audit_shipping_stopped", &[])
            != 1.0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now = audit.read_chain(&name).await.expect("read");
        assert_eq!(copy_of(&now), copy_of(&record), "the stream's record stays");
        now.verify().expect("and verifies");
        a.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// A person's erasure rewrites a node's chain (what `peerhub erase` does on one
/// node, and each node's part of a cluster erasure will do, through the hub's
/// log): their subject becomes a pseudonym and their signed envelope a digest.
/// The shipper replaces the stream's copy: neither their key nor their
/// envelope's signature is left in the audit stream's files, and it verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasures_rewrite_is_shipped_and_the_persons_key_leaves_the_audit_stream() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let mut admin = a.admin().await;
        // Pat redeems a staff invite: `role.grant`, about Pat, signed by Pat.
        let (pat, _on_a) = staff_on(&a, &mut admin, InviteRole::Supervisor, None).await;
        admin.invite(InviteRole::Supervisor, None).await;
        let audit = stream(&cluster).await;
        let before = shipped(&audit, &a).await;
        let key = pat.key().to_b64();
        let sig = before
            .entries
            .values()
            .map(|c| audit::AuditEntry::parse(&c.payload).expect("entry").0)
            .find(|e| e.action == "role.grant" && e.subject == Some(pat.key()))
            .map(|e| e.envelopes[0].sig.to_b64())
            .expect("Pat's grant");
        assert!(!in_audit_stream(&cluster, key.as_bytes()).is_empty());

        let hub = a.hub();
        let seed = hub.store.hub_signing_seed().expect("seed");
        let hub_key = peerhub_protocol::PublicKey(
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes(),
        );
        let out = hub
            .audit
            .rewrite_for_erasure(
                &pat.key(),
                &audit::Pseudonym::of(&seed, &pat.key()),
                &hub_key,
            )
            .expect("rewritten");
        assert!(
            out.envelopes_erased >= 1 && out.subjects_replaced >= 1,
            "{out:?}"
        );
        hub.committer.commit().await.expect("durable");
        let after = loop {
            let after = shipped(&audit, &a).await;
            if after.entries.values().last().and_then(|c| c.hash()) == Some(out.new_last_hash) {
                break after;
            }
        };
        let report = after.verify().expect("the rewritten copy verifies");
        assert!(report.erased_envelopes >= 1, "{report}");
        for (gone, what) in [
            (key.as_str(), "Pat's key"),
            (sig.as_str(), "Pat's signature"),
        ] {
            assert_eq!(
                in_audit_stream(&cluster, gone.as_bytes()),
                Vec::<String>::new(),
                "{what} left the audit stream"
            );
        }
    })
    .await
    .expect("bounded");
}

/// An ephemeral session's end reaches every node's chain, not only the serving
/// node's: the group is served on b, the router leads on a, so Pat's flag is in
/// a's chain. When the facilitator ends the session on b, a pseudonymises Pat
/// there too (the session's end comes through the directory, naming Pat by
/// pseudonym only): no entry of a's chain names Pat's key or carries Pat's
/// envelope, the note leaves the audit stream's files, and a's chain verifies.
/// Fails on the old code: a's chain kept Pat's flag as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_end_pseudonymises_the_participants_in_every_nodes_chain() {
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
        let mut admin = a.admin().await;
        // The facilitator joins through b first: b serves the group.
        let (_, mut fac) = staff_on(&b, &mut admin, InviteRole::Facilitator, Some("dropin")).await;
        fac.join("dropin", "Jo", None).await;
        let pat = Identity::generate();
        let mut on_b = b.login(&pat).await;
        on_b.join("dropin", "Pat", None).await;
        let note = "pat-note-on-the-routers-node-w2m";
        let reply = on_b
            .flag_with(
                "dropin",
                pat.key(),
                peerhub_protocol::escalation::Severity::Concern,
                |p| p.note = Some(note.to_string()),
            )
            .await;
        assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
        let audit = stream(&cluster).await;
        let names_pat = |server: &TestServer| {
            audit::entries(&server.hub().store)
                .flatten()
                .filter(|e| e.subject == Some(pat.key()) || e.actor() == Some(pat.key()))
                .count()
        };
        // The router's entry is in a's chain (a leads: the first node up).
        loop {
            let chain = shipped(&audit, &a).await;
            if actions(&copy_of(&chain)).contains(&"escalation.raise".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(names_pat(&a) >= 1, "a's chain names Pat before the end");
        assert!(!in_audit_stream(&cluster, note.as_bytes()).is_empty());

        let reply = fac.control("dropin", ControlAction::EndSession).await;
        assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        while names_pat(&a) > 0 {
            assert!(
                tokio::time::Instant::now() < until,
                "a's chain still names Pat 30 s after the session's end"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(names_pat(&b), 0, "b's own chain, as on one node");
        let chain = shipped(&audit, &a).await;
        chain.verify().expect("a's rewritten chain verifies");
        while !in_audit_stream(&cluster, note.as_bytes()).is_empty() {
            assert!(
                tokio::time::Instant::now() < until + Duration::from_secs(30),
                "the note left the audit stream's files"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("bounded");
}
