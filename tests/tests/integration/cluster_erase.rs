//! A person's erasure in a cluster's group logs (docs/CLUSTER.md §8, "Erase"):
//! in-process peerhub nodes on a real three-server NATS cluster. The group's
//! owner writes the tombstones and the erased member record as one write set,
//! then rebases the log (every live event appended again, a snapshot, the
//! records before it erased with message deletes), so the stream holds none of
//! the person's words or name while everyone else's posts stay; a follower
//! whose copy is behind the rebase, and a node joining later, rebuild exactly
//! the owner's content; seqs go on gap-free; a post made during the erasure is
//! kept.

use std::time::Duration;

use bytes::Bytes;
use peerhub_protocol::frame::Channel;
use peerhub_protocol::{ClientFrame, PublicKey, ServerFrame};
use peerhub_server::admin::ops::AdminRequest;
use peerhub_server::admin::Reply;
use peerhub_server::cluster::replica;
use peerhub_server::cluster::snapshot::{SnapshotConfig, Snapshots};
use peerhub_server::erase::{ERASED_NAME, TOMBSTONE_REASON};
use peerhub_server::store::records::MemberRecord;
use peerhub_server::store::Store;
use peerhub_server::transport::control;
use peerhub_tests::identity::gid;
use peerhub_tests::nats::NatsCluster;
use peerhub_tests::{Client, Identity, TestServer};
use serde_json::Value;

/// Posts each of two people sends at once in a round.
const PIPELINED: usize = 4;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(240);

async fn node(cluster: &NatsCluster, name: &str) -> TestServer {
    let settings = cluster.node_settings(name);
    TestServer::start_with(move |config| config.cluster = Some(settings)).await
}

/// A node's main-channel history of `group` as its store holds it: each seq
/// with its post's body, or `None` for an erasure's tombstone (anything else
/// fails the test).
fn history(store: &Store, group: &str) -> Vec<(u64, Option<String>)> {
    store
        .events_between(&gid(group), &Channel::Main, 0, u64::MAX, 10_000)
        .expect("events")
        .into_iter()
        .map(|e| {
            let shown = match (&e.env, &e.redacted, &e.note) {
                (Some(env), None, None) => Some(
                    env.payload_as::<peerhub_protocol::payload::PostPayload>()
                        .expect("a post")
                        .body,
                ),
                (None, Some(redaction), None) if redaction.reason == TOMBSTONE_REASON => None,
                other => panic!("seq {}: neither a post nor a tombstone: {other:?}", e.seq),
            };
            (e.seq, shown)
        })
        .collect()
}

/// Every member record a node's store holds for `group`, in key order.
fn members(store: &Store, group: &str) -> Vec<MemberRecord> {
    let mut members = store.members(&gid(group)).expect("members");
    members.sort_by_key(|m| m.key.0);
    members
}

/// `words` as a group snapshot stores them: its state is JSON bytes, written
/// as an array of numbers.
fn as_in_snapshot(words: &str) -> String {
    words
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The files of the NATS servers holding `needle`, but for their Raft logs
/// (`/_js_/`), which keep erased bytes until each server compacts them.
fn outside_raft(cluster: &NatsCluster, needle: &str) -> Vec<String> {
    cluster
        .files_holding(needle.as_bytes())
        .into_iter()
        .filter(|f| !f.contains("/_js_/"))
        .collect()
}

/// How many records hold both Wren's and Moss's words.
fn shared(records: &[Bytes]) -> usize {
    records
        .iter()
        .filter(|r| {
            holds(std::slice::from_ref(*r), "wren-secret")
                && holds(std::slice::from_ref(*r), "moss-words")
        })
        .count()
}

fn holds(records: &[Bytes], words: &str) -> bool {
    records
        .iter()
        .any(|r| r.windows(words.len()).any(|w| w == words.as_bytes()))
}

/// Brings `server`'s copy of `group` up to the log, as a node does before it
/// reads a group it does not serve (export, retention's pass).
async fn follow(server: &TestServer, group: &str) {
    let node = server.hub().cluster.clone().expect("a cluster node");
    let lock = node.group_lock(&gid(group));
    let _held = lock.lock().await;
    replica::catch_up(&server.hub().store, &node.logs, &gid(group))
        .await
        .expect("the copy catches up");
}

/// Sends a post of each of `bodies` without waiting; returns the request ids.
async fn send_posts(client: &mut Client, group: &str, bodies: &[String]) -> Vec<u64> {
    let me = client.identity.clone().expect("logged in");
    let mut ids = Vec::new();
    for body in bodies {
        let id = client.next_id();
        let frame = ClientFrame::Post {
            id: Some(id),
            group: gid(group),
            env: me.post(group, body),
        };
        client.send(&frame).await;
        ids.push(id);
    }
    ids
}

/// The seqs acknowledged to the requests `ids`, in their order.
async fn acks(client: &mut Client, ids: Vec<u64>) -> Vec<u64> {
    let mut seqs = Vec::new();
    for id in ids {
        match client.try_reply_to(id).await.expect("connected") {
            ServerFrame::Ack { seq, .. } => seqs.push(seq),
            other => panic!("post refused: {other:?}"),
        }
    }
    seqs
}

/// The group part of `key`'s erasure asked through `server`'s control socket:
/// the reply, or the refusal.
async fn erase_through(server: &TestServer, key: &PublicKey) -> Result<Value, String> {
    let socket = server.data_dir().join(peerhub_server::admin::SOCKET);
    let request = AdminRequest::ClusterEraseGroups { key: *key };
    let reply = tokio::task::spawn_blocking(move || control::ask(&socket, &request))
        .await
        .expect("asked")
        .expect("the control socket answers");
    match reply {
        Reply::Ok(value) => Ok(value),
        Reply::Error(error) => Err(error),
    }
}

/// The one group a reply reached: its outcome and what it says.
fn only_group(reply: &Value) -> &Value {
    match reply["groups"].as_array().map(Vec::as_slice) {
        Some([group]) => group,
        _ => panic!("one group: {reply}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_leaves_tombstones_on_every_node_and_none_of_their_words_in_the_log() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        a.create_group_with("circle", |g| g.waiting_room = Some(false))
            .await;
        let (wren, moss, sky, fern) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        // Wren joins first, on a: a serves the group.
        let mut wren_a = a.login(&wren).await;
        wren_a.join("circle", "Wrenname", None).await;
        let mut moss_a = a.login(&moss).await;
        moss_a.join("circle", "Moss", None).await;
        let mut sky_b = b.login(&sky).await;
        sky_b.join("circle", "Sky", None).await;

        // Wren's and Moss's posts sent together without waiting, so that the
        // owner's task takes them in one batch (one log record) where it can;
        // Sky's through b.
        let mut expected: Vec<(u64, Option<String>)> = Vec::new();
        for round in 1..=2 {
            let wren_words: Vec<String> = (1..=PIPELINED)
                .map(|n| format!("wren-secret-{}", PIPELINED * (round - 1) + n))
                .collect();
            let moss_words: Vec<String> = (1..=PIPELINED)
                .map(|n| format!("moss-words-{}", PIPELINED * (round - 1) + n))
                .collect();
            let wren_sent = send_posts(&mut wren_a, "circle", &wren_words).await;
            let moss_sent = send_posts(&mut moss_a, "circle", &moss_words).await;
            for seq in acks(&mut wren_a, wren_sent).await {
                expected.push((seq, None));
            }
            for (seq, words) in acks(&mut moss_a, moss_sent)
                .await
                .into_iter()
                .zip(moss_words)
            {
                expected.push((seq, Some(words)));
            }
            for n in 1..=2 {
                let words = format!("sky-words-{}", 2 * (round - 1) + n);
                expected.push((sky_b.post("circle", &words).await, Some(words)));
            }
        }
        let ivy = Identity::generate();
        let mut ivy_a = a.login(&ivy).await;
        ivy_a.join("circle", "Ivyname", None).await;
        expected.push((ivy_a.post("circle", "ivy-secret").await, None));
        drop((wren_a, ivy_a));
        let log = cluster.raw_log("circle").await;
        assert!(holds(&log, "wren-secret-1") && holds(&log, "Wrenname"));
        eprintln!(
            "records holding Wren's and Moss's words together, as posted: {}",
            shared(&log)
        );

        // Someone erased before Wren: that rebase's snapshot names Wren, and its
        // one new record holds Wren's words beside everyone else's, so Wren's
        // own erasure must rebase (a trim alone would keep that record) and
        // leave no copy of the earlier snapshot behind.
        let first = erase_through(&a, &ivy.key()).await.expect("Ivy's erasure");
        assert_eq!(first["complete"], true, "{first}");
        let before = cluster.raw_log("circle").await;
        assert!(
            shared(&before) > 0,
            "Wren's words share a record with Moss's"
        );
        assert!(!holds(&before, "ivy-secret") && !holds(&before, "Ivyname"));
        let in_snapshot = cluster.files_holding(as_in_snapshot("Wrenname").as_bytes());
        assert!(
            in_snapshot.iter().any(|f| !f.contains("/_js_/")),
            "the earlier snapshot names Wren: {in_snapshot:?}"
        );

        // A bad input changes nothing: the hub's own key is refused.
        let seed = a.hub().store.hub_signing_seed().expect("seed");
        let hub_key = PublicKey(
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes(),
        );
        let refused = erase_through(&b, &hub_key).await.unwrap_err();
        assert!(refused.contains("hub's own key"), "{refused}");
        assert_eq!(cluster.raw_log("circle").await, before, "nothing changed");

        // The erasure through node b, which does not serve the group: its owner
        // (a) does it, asked over NATS, while Sky posts through b.
        let wren_key = wren.key();
        let (outcomes, during) = tokio::join!(
            erase_through(&b, &wren_key),
            sky_b.post("circle", "sky-during-the-erasure"),
        );
        expected.push((during, Some("sky-during-the-erasure".into())));
        expected.sort();
        let reply = outcomes.expect("the erasure");
        let erased = only_group(&reply);
        assert_eq!(erased["outcome"], "erased", "{reply}");
        assert_eq!(erased["events"], 2 * PIPELINED as u64, "{reply}");
        assert_eq!(erased["member"], true, "{reply}");
        assert!(erased["rebased"]["erased"].as_u64() > Some(0), "{reply}");
        assert_eq!(reply["complete"], true, "{reply}");
        assert!(
            reply["raft_logs"].is_string(),
            "the reply says what Raft keeps"
        );
        eprintln!("erasure: {reply}");

        // Both nodes: tombstones at Wren's seqs, everyone else's posts as they
        // were, the post made meanwhile kept; b's copy, behind the rebase,
        // rebuilds from the snapshot.
        assert_eq!(history(&a.hub().store, "circle"), expected, "node a");
        follow(&b, "circle").await;
        assert_eq!(history(&b.hub().store, "circle"), expected, "node b");
        let wren_record = a
            .hub()
            .store
            .member(&gid("circle"), &wren.key())
            .expect("read")
            .expect("Wren's standing is kept");
        assert_eq!(
            (wren_record.name.as_str(), &wren_record.join),
            (ERASED_NAME, &None)
        );
        assert_eq!(
            members(&b.hub().store, "circle"),
            members(&a.hub().store, "circle"),
            "node b's member records are the owner's"
        );

        // The stream, read raw: none of Wren's words or name; all the others'.
        let after = cluster.raw_log("circle").await;
        for n in 1..=2 * PIPELINED {
            assert!(!holds(&after, &format!("wren-secret-{n}")), "Wren's {n}");
            assert!(holds(&after, &format!("moss-words-{n}")), "Moss's {n}");
        }
        for n in 1..=4 {
            assert!(holds(&after, &format!("sky-words-{n}")), "Sky's {n}");
        }
        assert!(!holds(&after, "Wrenname"), "the name left the log");
        assert!(!holds(&after, "Ivyname") && !holds(&after, "ivy-secret"));
        // The group's snapshot now: the erased member record, no name.
        let nats = cluster.connect(0, "test-snapshot").await;
        let snapshots = Snapshots::open(&nats, &SnapshotConfig::default())
            .await
            .expect("snapshots");
        let (snapshot, _) = snapshots
            .latest("circle")
            .await
            .expect("read")
            .expect("the rebase's snapshot");
        for words in ["Wrenname", "Ivyname", "wren-secret", "ivy-secret"] {
            assert!(
                !holds(std::slice::from_ref(&snapshot.state), words),
                "{words} in the snapshot"
            );
        }
        assert!(holds(std::slice::from_ref(&snapshot.state), ERASED_NAME));

        // The servers' files: no stream's or bucket's hold any of it, the
        // replaced snapshots' included (erased once the new one is stored);
        // each server's Raft log keeps erased bytes until it compacts, which
        // no client can force (docs/CLUSTER.md §8).
        for words in [
            "wren-secret-1",
            "wren-secret-8",
            "Wrenname",
            "ivy-secret",
            "Ivyname",
        ] {
            for needle in [words.to_string(), as_in_snapshot(words)] {
                assert_eq!(
                    outside_raft(&cluster, &needle),
                    Vec::<String>::new(),
                    "{needle}"
                );
            }
        }

        // A node joining later holds exactly the owner's content, and Wren is
        // not listed.
        let c = node(&cluster, "c").await;
        let mut fern_c = c.login(&fern).await;
        let joined = fern_c.join("circle", "Fern", None).await;
        let seen: Vec<(u64, Option<String>)> = joined
            .history
            .iter()
            .map(|e| match &e.env {
                Some(_) => (e.seq, Some(e.verified_body())),
                None => {
                    assert_eq!(
                        e.redacted.as_ref().expect("a tombstone").reason,
                        TOMBSTONE_REASON
                    );
                    (e.seq, None)
                }
            })
            .collect();
        assert_eq!(seen, expected, "through node c");
        let listed: Vec<&str> = joined.members.iter().map(|m| m.name.as_str()).collect();
        assert!(
            !listed.iter().any(|n| *n == "Wrenname" || *n == ERASED_NAME),
            "{listed:?}"
        );
        assert_eq!(history(&c.hub().store, "circle"), expected, "node c's copy");
        assert_eq!(
            members(&c.hub().store, "circle"),
            members(&a.hub().store, "circle"),
            "node c's member records are the owner's"
        );

        // Seqs go on, gap-free.
        let seqs: Vec<u64> = expected.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let next = moss_a.post("circle", "moss-after").await;
        assert_eq!(next, seqs.len() as u64 + 1);
    })
    .await
    .expect("bounded");
}

/// Starts node `name` on a runtime of its own, to be stopped dead.
fn crashable(cluster: &NatsCluster, name: &str) -> peerhub_tests::CrashableServer {
    let settings = cluster.node_settings(name);
    peerhub_tests::CrashableServer::start(move |config| config.cluster = Some(settings))
}

/// The owner dies holding the group's lease: an erasure through another node
/// reports the group as served elsewhere (and changes nothing) until the lease
/// runs out, then takes the group for the moment it needs, erases, rebases and
/// lets go; the group is then served again with the tombstones and every other
/// post, seqs going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_takes_a_group_nobody_serves_and_the_next_owner_serves_the_tombstones() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = crashable(&cluster, "a");
        let b = node(&cluster, "b").await;
        a.server
            .create_group_with("garden", |g| g.waiting_room = Some(false))
            .await;
        let (wren, sky) = (Identity::generate(), Identity::generate());
        let mut wren_a = a.server.login(&wren).await;
        wren_a.join("garden", "Wrenname", None).await;
        let mut sky_b = b.login(&sky).await;
        sky_b.join("garden", "Sky", None).await;
        let mut expected = vec![(wren_a.post("garden", "wren-secret-1").await, None)];
        let s = sky_b.post("garden", "sky-words-1").await;
        expected.push((s, Some("sky-words-1".to_string())));
        expected.push((wren_a.post("garden", "wren-secret-2").await, None));
        drop((wren_a, sky_b));
        a.crash();

        let mut attempts = 0;
        let erased = loop {
            attempts += 1;
            let reply = erase_through(&b, &wren.key()).await.expect("b answers");
            let group = only_group(&reply).clone();
            match group["outcome"].as_str() {
                Some("erased") => break group,
                Some("served_elsewhere") => {
                    let log = cluster.raw_log("garden").await;
                    assert!(holds(&log, "wren-secret-1"), "nothing changed meanwhile");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => panic!("{reply}"),
            }
        };
        eprintln!("erasures through b until the dead owner's lease ran out: {attempts}; {erased}");
        assert_eq!(erased["events"], 2, "{erased}");
        assert_eq!(erased["member"], true, "{erased}");
        assert!(erased["rebased"]["erased"].as_u64() > Some(0), "{erased}");
        assert_eq!(history(&b.hub().store, "garden"), expected, "b's copy");
        let log = cluster.raw_log("garden").await;
        for words in ["wren-secret-1", "wren-secret-2", "Wrenname"] {
            assert!(!holds(&log, words), "{words} left the log");
        }
        assert!(holds(&log, "sky-words-1"));

        // b let the group go: the next join serves it, from the rebased log.
        let mut sky_b = b.login(&sky).await;
        let joined = sky_b.join("garden", "Sky", None).await;
        let seen: Vec<(u64, Option<String>)> = joined
            .history
            .iter()
            .map(|e| (e.seq, e.env.as_ref().map(|_| e.verified_body())))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(sky_b.post("garden", "sky-words-2").await, 4, "gap-free");
    })
    .await
    .expect("bounded");
}

/// On one node the request is refused, and says what to run instead; on a
/// stopped folder too. Neither changes anything.
#[tokio::test]
async fn one_node_refuses_the_cluster_erasure_and_says_what_to_run() {
    let server = TestServer::start().await;
    let key = Identity::generate().key();
    let before = server.hub().store.digest().expect("digest");
    let refused = erase_through(&server, &key).await.unwrap_err();
    assert!(
        refused.starts_with("refused") && refused.contains("peerhub erase"),
        "{refused}"
    );
    assert_eq!(server.hub().store.digest().expect("digest"), before);
    let stopped = server
        .while_stopped(|dir| {
            peerhub_server::admin::run(dir, AdminRequest::ClusterEraseGroups { key })
        })
        .await
        .unwrap_err();
    assert!(
        stopped.to_string().contains("running cluster node"),
        "{stopped}"
    );
}

/// An operator's request to `server`'s control socket: the reply, or the refusal.
async fn ask(server: &TestServer, request: AdminRequest) -> Result<Value, String> {
    let socket = server.data_dir().join(peerhub_server::admin::SOCKET);
    let reply = tokio::task::spawn_blocking(move || control::ask(&socket, &request))
        .await
        .expect("asked")
        .expect("the control socket answers");
    match reply {
        Reply::Ok(value) => Ok(value),
        Reply::Error(error) => Err(error),
    }
}

/// `peerhub erase --data DIR --key KEY` as the command runs it
/// (`admin::erase`): what it printed, or its error.
async fn peerhub_erase(dir: &std::path::Path, key: PublicKey) -> Result<Value, String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || peerhub_server::admin::erase(&dir, &key))
        .await
        .expect("ran")
        .map_err(|error| error.to_string())
}

/// Waits (within the test's bound) until `server`'s store has applied the
/// erasure record `pseudonym` at `revision`.
async fn applied(server: &TestServer, pseudonym: &str, revision: u64) {
    let mark = format!("erasure/{pseudonym}");
    while server.hub().store.mirror_applied(&mark).expect("mark") < revision {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The directory bucket's stream.
async fn directory_stream(cluster: &NatsCluster) -> async_nats::jetstream::stream::Stream {
    let nats = cluster.connect(0, "test-directory").await;
    nats.jetstream()
        .get_stream("KV_peerhub_directory")
        .await
        .expect("the directory's stream")
}

/// How many messages the directory's stream holds on `key` (`account.<hex>`),
/// deleted markers and older values included.
async fn stored_on(stream: &mut async_nats::jetstream::stream::Stream, key: &str) -> u64 {
    let subject = format!("$KV.peerhub_directory.{key}");
    let info = stream
        .info_with_subjects(subject.clone())
        .await
        .expect("stream info");
    use futures_util::TryStreamExt as _;
    let found: Vec<(String, usize)> = info.try_collect().await.expect("subjects");
    found.iter().map(|(_, n)| *n as u64).sum()
}

/// What a node's store, and every file of its data folder, may still hold of
/// an erased key, as on one node (`erase.rs`): its member record keeps its
/// standing (and so its key) in each group, the group's state its heads, and
/// records about it the facilitators' notes; nothing else names it.
fn assert_erased_on(name: &str, store: &Store, data: &std::path::Path, key: &PublicKey) {
    for words in [
        "wren-secret-1",
        "wren-secret-2",
        "Wrenname",
        "wren-record-words",
    ] {
        assert_eq!(
            store.trees_containing(words.as_bytes()).expect("scan"),
            Vec::<&str>::new(),
            "{name}: {words} in the store"
        );
        assert_eq!(
            peerhub_tests::scan::files_holding(data, words),
            Vec::new(),
            "{name}: {words} in the data folder"
        );
    }
    for needle in [key.0.to_vec(), key.to_b64().into_bytes()] {
        let trees = store.trees_containing(&needle).expect("scan");
        assert!(
            trees.iter().all(|t| [
                "groupid_key_member",
                "groupid_state",
                "recordid_record",
                "key_recordid"
            ]
            .contains(t)),
            "{name}: the key is still in {trees:?}"
        );
    }
    assert!(store.roles(key).expect("roles").is_empty(), "{name}");
    assert_eq!(store.counter(key).expect("counter"), 0, "{name}");
    assert!(
        !store.is_allowed(&gid("grove"), key).expect("allowed"),
        "{name}"
    );
    let member = store
        .member(&gid("grove"), key)
        .expect("member")
        .expect("the standing is kept");
    assert_eq!(
        (member.name.as_str(), &member.join),
        (ERASED_NAME, &None),
        "{name}"
    );
    peerhub_server::audit::verify(store).expect("the node's chain verifies");
}

/// `peerhub erase` on a running cluster node erases the person across the
/// cluster: asked of node b, which does not serve the group, while node c —
/// which holds a copy of the group, Wren's account and allow-list place — is
/// stopped. Afterwards no NATS file but the Raft logs, and no node's store or
/// data folder (c's once it starts again), holds Wren's words or name; the
/// directory holds none of Wren's account, counter, allow-list, invite or
/// member-name records; tombstones stand at Wren's seqs and everyone else's
/// posts are unchanged; Wren's spent invite and facilitator grant are gone;
/// each node's chain verifies; a node joining later holds the same; seqs go
/// on. Bad input first: a key the cluster does not know, the hub's own key, a
/// malformed request and a stopped node's folder are refused, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peerhub_erase_on_a_running_node_erases_across_the_cluster_and_a_stopped_node_on_start() {
    use peerhub_protocol::payload::{GroupKind, InviteRole};
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    // Boxed: the test's future is too large for the test thread's stack.
    tokio::time::timeout(
        BOUND,
        Box::pin(async {
            let mut a = node(&cluster, "a").await;
            let b = node(&cluster, "b").await;
            let c = node(&cluster, "c").await;
            a.create_group_with("grove", |g| {
                g.group_kind = GroupKind::Virtual;
                g.waiting_room = Some(false);
            })
            .await;
            let invite = |server: &TestServer| {
                let request = AdminRequest::Invite {
                    role: InviteRole::Member,
                    group: Some(gid("grove")),
                    ttl_hours: None,
                };
                let server_dir = server.data_dir().to_path_buf();
                async move {
                    let socket = server_dir.join(peerhub_server::admin::SOCKET);
                    let reply =
                        tokio::task::spawn_blocking(move || control::ask(&socket, &request))
                            .await
                            .expect("asked")
                            .expect("answered");
                    match reply {
                        Reply::Ok(value) => value["token"].as_str().expect("token").to_string(),
                        Reply::Error(error) => panic!("{error}"),
                    }
                }
            };
            let (wren, moss, sky) = (
                Identity::generate(),
                Identity::generate(),
                Identity::generate(),
            );
            // Wren: invited (an allow-list place, a spent invite), granted facilitator
            // standing (an account), joins on a: a serves the group.
            let wren_token = invite(&a).await;
            let mut wren_a = a.login(&wren).await;
            assert!(matches!(
                wren_a.redeem(&wren_token).await,
                ServerFrame::Redeemed { .. }
            ));
            ask(
                &a,
                AdminRequest::FacilitatorGrant {
                    key: wren.key(),
                    group: gid("grove"),
                    revoke: false,
                },
            )
            .await
            .expect("granted");
            wren_a.join("grove", "Wrenname", None).await;
            let token = invite(&b).await;
            let mut moss_c = c.login(&moss).await;
            assert!(matches!(
                moss_c.redeem(&token).await,
                ServerFrame::Redeemed { .. }
            ));
            moss_c.join("grove", "Moss", None).await;
            let token = invite(&b).await;
            let mut sky_b = b.login(&sky).await;
            assert!(matches!(
                sky_b.redeem(&token).await,
                ServerFrame::Redeemed { .. }
            ));
            sky_b.join("grove", "Sky", None).await;
            let mut expected = vec![
                (wren_a.post("grove", "wren-secret-1").await, None),
                (
                    moss_c.post("grove", "moss-words-1").await,
                    Some("moss-words-1".to_string()),
                ),
                (wren_a.post("grove", "wren-secret-2").await, None),
                (
                    sky_b.post("grove", "sky-words-1").await,
                    Some("sky-words-1".to_string()),
                ),
            ];
            // A co-produced record about Wren on node a (records are each node's
            // own): Jo's note is kept, Wren's reply goes.
            let jo = Identity::generate();
            ask(
                &a,
                AdminRequest::FacilitatorGrant {
                    key: jo.key(),
                    group: gid("grove"),
                    revoke: false,
                },
            )
            .await
            .expect("granted");
            let mut jo_a = a.login(&jo).await;
            jo_a.join("grove", "Jo", None).await;
            let note = jo.record("grove", Some(wren.key()), None, "jo-note-kept");
            let record_id = record(&mut jo_a, note).await;
            let reply = wren.record("grove", None, Some(record_id), "wren-record-words");
            record(&mut wren_a, reply).await;
            drop((wren_a, moss_c, jo_a));
            for server in [&b, &c] {
                follow(server, "grove").await;
            }
            let wren_key = wren.key();
            for (name, server) in [("a", &a), ("b", &b), ("c", &c)] {
                // Each node's copies: the words, the name, the account's copy.
                let store = &server.hub().store;
                until_mirrored(store, &wren_key).await;
                assert!(
                    !store.trees_containing(b"wren-secret-1").unwrap().is_empty(),
                    "{name}"
                );
                assert!(
                    !store.trees_containing(b"Wrenname").unwrap().is_empty(),
                    "{name}"
                );
            }
            let wren_hex = hex::encode(wren_key.0);
            let mut directory = directory_stream(&cluster).await;
            for key in [format!("account.{wren_hex}"), format!("counter.{wren_hex}")] {
                assert!(
                    stored_on(&mut directory, &key).await > 0,
                    "precondition: {key}"
                );
            }

            // Node c stops: it is down during the erasure.
            let c = c.stop().await;
            let c_digest = || {
                peerhub_tests::retry_while_locked(|| Store::open(c.data_dir()))
                    .expect("c's store")
                    .digest()
                    .expect("digest")
            };
            let c_before = c_digest();

            // Bad input: refused, nothing changed.
            let log_before = cluster.raw_log("grove").await;
            let directory_before = directory.info().await.expect("info").state.last_sequence;
            let b_chain = b.hub().audit.tail();
            let stranger = Identity::generate().key();
            let refused = peerhub_erase(b.data_dir(), stranger).await.unwrap_err();
            assert!(refused.contains("holds nothing of this key"), "{refused}");
            let seed = a.hub().store.hub_signing_seed().expect("seed");
            let hub_key = PublicKey(
                ed25519_dalek::SigningKey::from_bytes(&seed)
                    .verifying_key()
                    .to_bytes(),
            );
            let refused = peerhub_erase(b.data_dir(), hub_key).await.unwrap_err();
            assert!(refused.contains("hub's own key"), "{refused}");
            let malformed = {
                use std::io::{BufRead as _, Write as _};
                let socket = b.data_dir().join(peerhub_server::admin::SOCKET);
                tokio::task::spawn_blocking(move || {
                    let mut stream =
                        std::os::unix::net::UnixStream::connect(socket).expect("connect");
                    stream
                        .write_all(b"{\"erase\":{\"key\":\"not-a-key\"}}\n")
                        .expect("write");
                    let mut line = String::new();
                    std::io::BufReader::new(stream)
                        .read_line(&mut line)
                        .expect("read");
                    line
                })
                .await
                .expect("asked")
            };
            assert!(malformed.contains("not a request"), "{malformed}");
            let refused = peerhub_erase(c.data_dir(), wren_key).await.unwrap_err();
            assert!(refused.contains("cluster node's copy"), "{refused}");
            assert_eq!(c_digest(), c_before, "the stopped folder is unchanged");
            assert_eq!(
                cluster.raw_log("grove").await,
                log_before,
                "the log is unchanged"
            );
            assert_eq!(
                directory.info().await.expect("info").state.last_sequence,
                directory_before,
                "the directory is unchanged"
            );
            assert_eq!(b.hub().audit.tail(), b_chain, "b's chain is unchanged");

            // The erasure, through node b's folder as `peerhub erase` runs it.
            let reply = peerhub_erase(b.data_dir(), wren_key).await.expect("erased");
            eprintln!("erasure: {reply}");
            assert_eq!(reply["complete"], true, "{reply}");
            let erased = only_group(&reply);
            assert_eq!(
                (erased["outcome"].as_str(), erased["events"].as_u64()),
                (Some("erased"), Some(2))
            );
            let account = &reply["account"];
            assert_eq!(account["account"], true, "{reply}");
            assert_eq!(account["counter"], true, "{reply}");
            assert_eq!(account["allowed"], 1, "{reply}");
            assert_eq!(account["invites"], 1, "{reply}");
            assert_eq!(reply["this_node"]["outcome"], "erased", "{reply}");
            assert!(reply["raft_logs"].is_string() && reply["other_nodes"].is_string());
            let pseudonym = reply["pseudonym"].as_str().expect("pseudonym").to_string();
            let revision = reply["record_revision"].as_u64().expect("revision");

            // The directory: none of Wren's records, not even as older revisions.
            for key in [
                format!("account.{wren_hex}"),
                format!("counter.{wren_hex}"),
                format!("allowed.grove.{wren_hex}"),
            ] {
                assert_eq!(stored_on(&mut directory, &key).await, 0, "{key}");
            }
            // The spent invite is gone: its token is unknown now.
            let mut wren_b = b.login(&wren).await;
            let again = wren_b.redeem(&wren_token).await;
            assert!(matches!(again, ServerFrame::Error { .. }), "{again:?}");
            drop(wren_b);

            // Node c starts again and applies the erasure it missed.
            let c = c.start().await;
            applied(&a, &pseudonym, revision).await;
            applied(&c, &pseudonym, revision).await;
            follow(&c, "grove").await;
            expected.sort();
            for (name, server) in [("a", &a), ("b", &b), ("c", &c)] {
                let store = &server.hub().store;
                assert_eq!(history(store, "grove"), expected, "node {name}");
                assert_erased_on(name, store, server.data_dir(), &wren_key);
            }

            // The NATS servers' files: none of the words or the name but in the
            // Raft logs.
            for words in ["wren-secret-1", "wren-secret-2", "Wrenname"] {
                for needle in [words.to_string(), as_in_snapshot(words)] {
                    assert_eq!(
                        outside_raft(&cluster, &needle),
                        Vec::<String>::new(),
                        "{needle}"
                    );
                }
            }
            assert!(
                !outside_raft(&cluster, "moss-words-1").is_empty(),
                "Moss's words kept"
            );
            let a_store = &a.hub().store;
            assert!(
                !a_store
                    .trees_containing(b"jo-note-kept")
                    .unwrap()
                    .is_empty(),
                "Jo's note kept"
            );
            // Nor Wren's directory keys, replaced values included; but for older
            // replay counters, which each command replaced and the bucket's limit
            // dropped without overwriting: the key and a number stay in the block
            // files until NATS compacts them (docs/CLUSTER.md §8, "Erase").
            for kind in ["account", "allowed.grove", "member.grove"] {
                let key = format!("{kind}.{wren_hex}");
                assert_eq!(outside_raft(&cluster, &key), Vec::<String>::new(), "{kind}");
            }
            eprintln!(
                "older replay counters of the erased key in: {:?}",
                outside_raft(&cluster, &format!("counter.{wren_hex}"))
            );

            // A node joining later holds the same, and applies the record to
            // nothing; seqs go on.
            let d = node(&cluster, "d").await;
            follow(&d, "grove").await;
            applied(&d, &pseudonym, revision).await;
            assert_eq!(history(&d.hub().store, "grove"), expected, "node d");
            assert!(d
                .hub()
                .store
                .trees_containing(b"Wrenname")
                .unwrap()
                .is_empty());
            let next = sky_b.post("grove", "sky-words-2").await;
            assert_eq!(next, expected.len() as u64 + 1, "gap-free");
            drop(c);
        }),
    )
    .await
    .expect("bounded");
}

/// Writes a co-produced record entry through `client`; returns the record's id.
async fn record(client: &mut Client, env: peerhub_protocol::SignedEnvelope) -> u64 {
    match client
        .request(|id| ClientFrame::Record {
            id,
            group: gid("grove"),
            env,
        })
        .await
    {
        ServerFrame::Records { records, .. } => records[0].id,
        other => panic!("record refused: {other:?}"),
    }
}

/// Waits until `store` holds `key`'s account (the directory mirror copied it).
async fn until_mirrored(store: &Store, key: &PublicKey) {
    while store.roles(key).expect("roles").is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A directory or snapshot bucket made denying message deletes (as the
/// client's key-value API makes them) is reported unfit by `peerhub cluster
/// check`, with the reason; the buckets peerhub makes allow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_check_reports_a_bucket_that_denies_erasure() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let nats = cluster.connect(0, "test-old-bucket").await;
        nats.jetstream()
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: "peerhub_directory".into(),
                history: 1,
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .expect("an old-style bucket");
        let report = peerhub_server::cluster::check::check(&cluster.node_settings("x")).await;
        let report = serde_json::to_value(&report).expect("json");
        assert_eq!(report["ok"], false, "{report:#}");
        let stores = report["stores"].as_array().expect("stores");
        for store in stores {
            let problem = store["problem"].as_str();
            match store["stream"].as_str() {
                Some("KV_peerhub_directory") => assert!(
                    problem.is_some_and(|p| p.contains("denies message deletes")),
                    "{store}"
                ),
                _ => assert_eq!(problem, None, "{store}"),
            }
        }
        let snapshots = nats
            .jetstream()
            .get_stream("KV_peerhub_group_state")
            .await
            .expect("made by the check");
        assert!(!snapshots.cached_info().config.deny_delete);
    })
    .await
    .expect("bounded");
}

/// A member record for the directory tests.
fn member_named(key: PublicKey, name: &str) -> MemberRecord {
    MemberRecord {
        key,
        name: name.into(),
        join: None,
        first_joined_ms: 1,
        agreed_version: 0,
        agreement_env: None,
        admitted_session: None,
        declined_session: None,
        removed: None,
        muted_until_ms: None,
        away: false,
    }
}

/// The account part of an erasure in the directory alone: every stored
/// revision of the key's account (its staff name included, in the value a
/// later grant replaced), counter, allow-list place, redeemed invite and push
/// subscription is erased — none left in any NATS file but the Raft logs — and
/// a member record keeps its standing without the name; another key's records
/// stay. A key with nothing there changes nothing; running it again finds
/// nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_part_erases_every_revision_of_the_keys_records_in_the_directory() {
    use peerhub_protocol::frame::Role;
    use peerhub_protocol::payload::InviteRole;
    use peerhub_server::cluster::directory::{Directory, DirectoryConfig};
    use peerhub_server::store::records::{InviteRecord, PushSubscriptionRecord};
    use peerhub_server::store::RedeemRefusal;
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(
        BOUND,
        Box::pin(async {
            let nats = cluster.connect(0, "test-directory-erasure").await;
            let directory = Directory::open(&nats, &DirectoryConfig::default())
                .await
                .expect("directory");
            let grove = gid("grove");
            let (wren, other) = (Identity::generate().key(), Identity::generate().key());
            for (key, who, token) in [(wren, "wren", [1u8; 32]), (other, "other", [2u8; 32])] {
                directory
                    .grant_role(&key, Role::Supervisor, 1)
                    .await
                    .unwrap();
                directory
                    .set_account_name(&key, &format!("{who}-staffname"))
                    .await
                    .unwrap();
                directory
                    .grant_facilitator(&key, std::slice::from_ref(&grove), 2)
                    .await
                    .unwrap();
                for counter in [5, 6, 7] {
                    directory.raise_counter(&key, counter).await.unwrap();
                }
                directory.allow_member(&grove, &key).await.unwrap();
                let invite = InviteRecord {
                    role: InviteRole::Member,
                    group: Some(grove.clone()),
                    groups: Vec::new(),
                    created_ms: 0,
                    expires_ms: u64::MAX,
                    created_by: None,
                    bootstrap: false,
                    used_by: None,
                    used_ms: None,
                };
                directory.put_invite(token, &invite).await.unwrap();
                assert!(directory
                    .redeem_invite(token, &key, 3)
                    .await
                    .unwrap()
                    .is_ok());
                let subscription = PushSubscriptionRecord {
                    endpoint: format!("https://push.example/{who}-phone-endpoint"),
                    p256dh: "p".into(),
                    auth: "a".into(),
                    created_ms: 1,
                };
                directory
                    .put_push_subscription(&key, &subscription)
                    .await
                    .unwrap();
                directory
                    .put_member(&grove, &member_named(key, &format!("{who}-membername")))
                    .await
                    .unwrap();
            }
            let mut stream = directory_stream(&cluster).await;
            let last = |stream: &mut async_nats::jetstream::stream::Stream| {
                let mut stream = stream.clone();
                async move { stream.info().await.expect("info").state.last_sequence }
            };

            // A key with nothing there: nothing found, nothing written.
            let before = last(&mut stream).await;
            let nothing = directory
                .erase_account(
                    &Identity::generate().key(),
                    peerhub_server::erase::erased_member,
                )
                .await
                .expect("ran");
            assert_eq!(nothing, Default::default());
            assert_eq!(last(&mut stream).await, before, "nothing written");

            let done = directory
                .erase_account(&wren, peerhub_server::erase::erased_member)
                .await
                .expect("erased");
            eprintln!("account part: {done:?}");
            assert!(done.account && done.counter, "{done:?}");
            assert_eq!(
                (done.allowed, done.invites, done.push, done.members),
                (1, 1, 1, 1),
                "{done:?}"
            );
            assert_eq!(directory.account(&wren).await.unwrap(), None);
            assert_eq!(directory.counter(&wren).await.unwrap(), 0);
            assert!(!directory.is_allowed(&grove, &wren).await.unwrap());
            assert!(matches!(
                directory.redeem_invite([1; 32], &wren, 4).await.unwrap(),
                Err(RedeemRefusal::Unknown)
            ));
            let member = directory
                .member_of(&grove, &wren)
                .await
                .unwrap()
                .expect("kept");
            assert_eq!(member.name, ERASED_NAME);
            let wren_hex = hex::encode(wren.0);
            for key in [
                format!("account.{wren_hex}"),
                format!("counter.{wren_hex}"),
                format!("allowed.grove.{wren_hex}"),
                format!("invite.{}", hex::encode([1u8; 32])),
            ] {
                assert_eq!(stored_on(&mut stream, &key).await, 0, "{key}");
            }
            for words in ["wren-staffname", "wren-phone-endpoint", "wren-membername"] {
                assert_eq!(
                    outside_raft(&cluster, words),
                    Vec::<String>::new(),
                    "{words}"
                );
            }

            // The other key's records are as they were.
            let account = directory.account(&other).await.unwrap().expect("kept");
            assert_eq!(account.name.as_deref(), Some("other-staffname"));
            assert_eq!(directory.counter(&other).await.unwrap(), 7);
            assert!(directory.is_allowed(&grove, &other).await.unwrap());
            let member = directory
                .member_of(&grove, &other)
                .await
                .unwrap()
                .expect("kept");
            assert_eq!(member.name, "other-membername");
            assert!(!outside_raft(&cluster, "other-phone-endpoint").is_empty());

            // Again: nothing more (the member record is written erased again).
            let again = directory
                .erase_account(&wren, peerhub_server::erase::erased_member)
                .await
                .expect("again");
            assert!(!again.account && !again.counter, "{again:?}");
            assert_eq!((again.allowed, again.invites, again.push), (0, 0, 0));
        }),
    )
    .await
    .expect("bounded");
}
