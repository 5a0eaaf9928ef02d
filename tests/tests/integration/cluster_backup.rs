//! Backup and restore of a cluster (docs/CLUSTER.md §8, OPERATIONS.md §12): the
//! `peerhub` binary's `backup --config` copies every peerhub stream and bucket
//! from a real three-server NATS cluster while two in-process nodes serve, and
//! `restore --config` recreates them in a new NATS cluster on fresh folders.
//! New nodes on fresh data folders then serve every acknowledged post, member,
//! account, pending escalation and the rota; a folder from before the restore
//! is refused. A restore over existing streams, a damaged file and a backup with
//! NATS unreachable are refused and change nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use peerhub_protocol::escalation::{EscalationStatus, RotaEntry};
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::{ControlAction, InviteRole};
use peerhub_protocol::ServerFrame;
use peerhub_server::cluster::log::{GroupLogs, LogConfig};
use peerhub_server::cluster::replica;
use peerhub_server::cluster::snapshot::{SnapshotConfig, Snapshots};
use peerhub_server::cluster::stores::ClusterStore;
use peerhub_tests::identity::gid;
use peerhub_tests::nats::{opened, NatsCluster};
use peerhub_tests::{Identity, TestServer};
use serde_json::Value;

use super::cluster_nodes::{escalation_where, flagged, staff_on};

/// The bound on each test, clusters' starts included.
const BOUND: Duration = Duration::from_secs(240);

/// An urgent flag's first deadline on the nodes backed up: long enough that it
/// is still pending when the backup is taken.
const URGENT_DEADLINE: Duration = Duration::from_secs(20);

/// At most this many posts around the backup (all within the history a join
/// returns).
const POSTS_AROUND_THE_BACKUP: usize = 60;

async fn node(cluster: &NatsCluster, name: &str) -> TestServer {
    let settings = cluster.node_settings(name);
    TestServer::start_with(move |config| {
        config.cluster = Some(settings);
        config.escalation.urgent_deadline = URGENT_DEADLINE;
    })
    .await
}

/// Runs the future `body` makes on a thread and runtime with large stacks: these tests' futures
/// (two clusters, nodes started, stopped and restarted) are deep enough to
/// overflow a test thread's default stack in a debug build.
fn on_a_big_stack<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(8 << 20)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(body())
        })
        .expect("test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A configuration file naming `urls` in `[cluster]` (what an operator gives
/// `peerhub backup --config`).
fn config_file(dir: &Path, name: &str, urls: &[String]) -> PathBuf {
    let path = dir.join(name);
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    std::fs::write(
        &path,
        format!(
            "[cluster]\nnats_urls = [{}]\nnode_name = \"operator\"\n",
            urls.join(", ")
        ),
    )
    .expect("write config");
    path
}

/// `peerhub ARGS...`, with no `PEERHUB_*` variable of the test's own.
async fn peerhub(args: Vec<String>) -> Output {
    let mut command = tokio::process::Command::new(peerhub_tests::process::binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("PEERHUB_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run peerhub")
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    list.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `peerhub backup --config CONFIG --out OUT`.
async fn cluster_backup(config: &Path, out: &Path) -> Output {
    peerhub(args(&[&"backup", &"--config", &config, &"--out", &out])).await
}

/// `peerhub restore --config CONFIG --from FROM`.
async fn cluster_restore(config: &Path, from: &Path) -> Output {
    peerhub(args(&[&"restore", &"--config", &config, &"--from", &from])).await
}

/// Asserts that `out` was refused (exit 2) saying each of `says`.
fn assert_refused(out: &Output, says: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    for said in says {
        assert!(stderr(out).contains(said), "{said}: {}", stderr(out));
    }
}

/// What a successful command printed, as JSON.
fn printed(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Every stream of the cluster whose name is peerhub's, with its last sequence
/// and message count.
async fn peerhub_streams(cluster: &NatsCluster) -> BTreeMap<String, (u64, u64)> {
    use futures_util::StreamExt as _;
    let nats = cluster.connect(0, "test-streams").await;
    let js = nats.jetstream();
    let mut names = Vec::new();
    let mut listing = js.stream_names();
    while let Some(name) = listing.next().await {
        let name = name.expect("stream name");
        if ClusterStore::looks_like_peerhub(&name) {
            names.push(name);
        }
    }
    let mut found = BTreeMap::new();
    for name in names {
        let mut stream = js.get_stream(&name).await.expect("stream");
        let info = stream.info().await.expect("stream info");
        found.insert(name, (info.state.last_sequence, info.state.messages));
    }
    found
}

/// Every key of the cluster's directory bucket but the replay counters (which
/// every post moves), as the bucket's subject index lists them.
async fn directory_keys(cluster: &NatsCluster) -> Vec<String> {
    use futures_util::TryStreamExt as _;
    let nats = cluster.connect(0, "test-directory-keys").await;
    let stream = nats
        .jetstream()
        .get_stream(ClusterStore::Directory.stream())
        .await
        .expect("the directory");
    let mut keys: Vec<String> = stream
        .info_with_subjects("$KV.peerhub_directory.>")
        .await
        .expect("subjects")
        .map_ok(|(subject, _)| subject)
        .try_collect()
        .await
        .expect("subjects listed");
    keys.retain(|k| !k.contains(".counter."));
    keys.sort();
    keys
}

/// Whether any of `records` holds `words`.
fn holds(records: &[bytes::Bytes], words: &str) -> bool {
    records
        .iter()
        .any(|r| r.windows(words.len()).any(|w| w == words.as_bytes()))
}

/// Copies a stopped node's data folder, as an operator keeping it would.
fn copy_folder(from: &Path, to: &Path) {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .expect("make folder");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_folder(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn folder_digest(dir: &Path) -> [u8; 32] {
    let store = peerhub_server::store::Store::open(dir).expect("open the kept folder");
    store.digest().expect("digest")
}

/// The main-channel history `who` gets joining `group` on `node`: seq → body
/// (empty for an event without a post's body).
async fn history(node: &TestServer, who: &Identity, group: &str) -> (u64, BTreeMap<u64, String>) {
    let mut client = node.login(who).await;
    let joined = client.join(group, "Again", None).await;
    let events = joined
        .history
        .iter()
        .map(|e| {
            let body = match &e.env {
                Some(_) if e.redacted.is_none() => e.verified_body(),
                _ => String::new(),
            };
            (e.seq, body)
        })
        .collect();
    (joined.head, events)
}

/// Accounts, a group with members on two nodes, posts (some while the backup
/// runs), an ephemeral group whose log was trimmed, a pending urgent escalation
/// and a rota; `peerhub backup --config`;
/// the nodes stop; a new NATS cluster; `peerhub restore --config`. A node on a
/// folder kept from before is refused and the folder is left as it was; two
/// new nodes on fresh folders serve the history up to every post acknowledged
/// before the backup began, gap-free, the next post the next seq; the admin is
/// still admin and no first-admin link is made; the rota is the one set; the
/// escalation is still routed and moves on at its deadline.
#[test]
fn a_restored_cluster_serves_what_was_acknowledged_before_the_backup() {
    on_a_big_stack(|| async {
        let Some(old) = NatsCluster::start().await else {
            eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
            return;
        };
        // Boxed: a large future, kept on the heap.
        tokio::time::timeout(
            BOUND,
            Box::pin(async {
                let dir = tempfile::tempdir().expect("temp dir");
                let mut a = node(&old, "a").await;
                let b = node(&old, "b").await;
                a.create_group_with("circle", |g| g.waiting_room = Some(false))
                    .await;
                let mut admin = a.admin().await;
                let admin_key = admin.identity.clone().expect("the admin");
                let (sup, mut sup_client) =
                    staff_on(&b, &mut admin, InviteRole::Supervisor, None).await;

                // The rota, set through a running node's control socket.
                let now = peerhub_server::clock::Clock::system().now_ms();
                let rota = vec![RotaEntry {
                    supervisor: sup.key(),
                    start_ms: now - 1000,
                    end_ms: now + 3_600_000,
                    level: 1,
                }];
                let rota_path = dir.path().join("rota.json");
                std::fs::write(&rota_path, serde_json::to_string(&rota).expect("json"))
                    .expect("rota");
                let set = peerhub(args(&[
                    &"rota",
                    &"set",
                    &"--file",
                    &rota_path,
                    &"--data",
                    &a.data_dir(),
                ]))
                .await;
                assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));

                // Members on both nodes, posts from both.
                let (river, sky) = (Identity::generate(), Identity::generate());
                let mut on_a = a.login(&river).await;
                on_a.join("circle", "River", None).await;
                let mut on_b = b.login(&sky).await;
                on_b.join("circle", "Sky", None).await;
                let mut acked: BTreeMap<u64, String> = BTreeMap::new();
                for round in 0..4 {
                    for (client, who) in [(&mut on_a, "a"), (&mut on_b, "b")] {
                        let body = format!("{who}{round}");
                        let seq = client.post("circle", &body).await;
                        acked.insert(seq, body);
                    }
                }
                // An ephemeral drop-in whose session ended: its log was trimmed behind
                // a snapshot (its records erased), which the restore must keep as is.
                a.create_group_with("dropin", |g| {
                    g.waiting_room = Some(false);
                    g.retention.ephemeral = true;
                })
                .await;
                let (_, mut fac) =
                    staff_on(&a, &mut admin, InviteRole::Facilitator, Some("dropin")).await;
                fac.join("dropin", "Jo", None).await;
                let mut pat = b.login(&Identity::generate()).await;
                pat.join("dropin", "Ephemeral-Pat", None).await;
                pat.post("dropin", "ephemeral-words").await;
                let ended = fac.control("dropin", ControlAction::EndSession).await;
                assert!(matches!(ended, ServerFrame::Ack { .. }), "{ended:?}");
                let trimmed = old.raw_log("dropin").await;
                assert!(
                    !holds(&trimmed, "ephemeral-words"),
                    "trimmed before the backup"
                );
                drop((fac, pat));

                // A pending urgent escalation, waiting for the supervisor on the rota.
                let (_, _flagger, open) = flagged(&b, &mut sup_client).await;
                let deadline = tokio::time::Instant::now() + URGENT_DEADLINE;
                assert_eq!((open.level, open.waiting_for.clone()), (1, vec![sup.key()]));

                // The drift check: the streams the nodes made are all in the list.
                let made = peerhub_streams(&old).await;
                let listed: Vec<String> = ClusterStore::ALL.iter().map(|s| s.stream()).collect();
                for stream in made.keys() {
                    assert!(
                        listed.contains(stream),
                        "{stream} is not in ClusterStore::ALL"
                    );
                }

                // The backup, while node a's member goes on posting: the posts run
                // on their own task from before the backup begins until it ends.
                let config_old = config_file(dir.path(), "old.toml", &old.urls());
                let file = dir.path().join("cluster.backup");
                let stop = tokio_util::sync::CancellationToken::new();
                let posting = tokio::spawn({
                    let stop = stop.clone();
                    async move {
                        let mut acks = Vec::new();
                        for n in 0..POSTS_AROUND_THE_BACKUP {
                            if stop.is_cancelled() {
                                break;
                            }
                            let body = format!("around{n}");
                            let seq = on_a.post("circle", &body).await;
                            acks.push((seq, body, std::time::Instant::now()));
                        }
                        (on_a, acks)
                    }
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                let began = std::time::Instant::now();
                let out = cluster_backup(&config_old, &file).await;
                let ended = std::time::Instant::now();
                stop.cancel();
                let (on_a, acks) = posting.await.expect("the posting task");
                let mut before_backup = *acked.keys().last().expect("posts");
                let mut during = 0;
                for (seq, body, at) in acks {
                    if at < began {
                        before_backup = before_backup.max(seq);
                    } else if at <= ended {
                        during += 1;
                    }
                    acked.insert(seq, body);
                }
                let summary = printed(&out);
                eprintln!(
                    "backup: {:?}, {} bytes, {during} posts acknowledged while it ran",
                    ended - began,
                    std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0)
                );
                assert_eq!(summary["format"], "peerhub-cluster-backup/1");
                assert!(
                    !dir.path().join("cluster.backup.partial").exists(),
                    "the partial file is gone once the backup is in place"
                );
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    let mode = std::fs::metadata(&file)
                        .expect("the file")
                        .permissions()
                        .mode();
                    assert_eq!(mode & 0o777, 0o600, "owner-only");
                }
                let parts = summary["streams"].as_array().expect("streams");
                let copied: Vec<&str> = parts.iter().filter_map(|p| p["stream"].as_str()).collect();
                for stream in made.keys() {
                    assert!(
                        copied.contains(&stream.as_str()),
                        "{stream} copied: {summary:#}"
                    );
                }
                for part in parts {
                    assert_eq!(part["sha256"].as_str().expect("sha256").len(), 64);
                }
                let copies: Vec<String> = parts
                    .iter()
                    .map(|p| format!("{} x{}", p["stream"], p["copies"]))
                    .collect();
                eprintln!("copies: {}", copies.join(", "));

                let keys_at_backup = directory_keys(&old).await;

                // Everything stops; node a's folder is kept.
                drop((on_a, on_b, admin, sup_client, _flagger));
                let kept = dir.path().join("kept-a");
                a.while_stopped(|data| copy_folder(data, &kept)).await;
                b.shutdown().await;
                drop(old);

                // A new NATS cluster, on fresh folders; the restore.
                let Some(new) = NatsCluster::start().await else {
                    panic!("the second cluster starts");
                };
                assert!(peerhub_streams(&new).await.is_empty());
                let config_new = config_file(dir.path(), "new.toml", &new.urls());
                let restored = printed(&cluster_restore(&config_new, &file).await);
                assert_eq!(restored["digest"], summary["digest"]);
                let now_there = peerhub_streams(&new).await;
                let mut keys_restored = directory_keys(&new).await;
                keys_restored.retain(|k| !k.ends_with(".bootstrap.restored"));
                assert_eq!(keys_restored, keys_at_backup, "every directory key is back");
                let directory = ClusterStore::Directory.stream();
                for part in parts {
                    let stream = part["stream"].as_str().expect("stream");
                    let (last, messages) = now_there[stream];
                    let marker = u64::from(stream == directory);
                    assert_eq!(
                        last,
                        part["last_seq"].as_u64().expect("last_seq") + marker,
                        "{stream}: sequences kept (the directory also holds the restore's mark)"
                    );
                    let recorded = part["messages"].as_u64().expect("messages") + marker;
                    assert_eq!(messages, recorded, "{stream}: every message");
                }

                // Sequences are kept, not renumbered: the leases' overwritten values
                // left gaps (history 1), and the restored bucket has the same gaps.
                let (last, messages) = now_there[&ClusterStore::Leases.stream()];
                assert!(
                    messages < last,
                    "the gaps are kept: {messages} messages up to sequence {last}"
                );

                // The trimmed drop-in as it was: the erased records stay erased, and a
                // copy made from the restored log and snapshot rebuilds it.
                let restored_log = new.raw_log("dropin").await;
                assert_eq!(
                    restored_log, trimmed,
                    "the same records, nothing brought back"
                );
                let (log_last, log_messages) = now_there[&ClusterStore::Log.stream()];
                assert!(
                    log_messages < log_last,
                    "the log's erased records stay gaps"
                );
                {
                    let nats = new.connect(1, "test-rebuild").await;
                    let (snapshot_config, log_config) =
                        (SnapshotConfig::default(), LogConfig::default());
                    let snapshots =
                        opened("snapshots", || Snapshots::open(&nats, &snapshot_config)).await;
                    let logs = opened("logs", || GroupLogs::open(&nats, &log_config))
                        .await
                        .with_snapshots(snapshots);
                    let copy = tempfile::tempdir().expect("temp dir");
                    let fresh = peerhub_server::store::Store::open(copy.path()).expect("store");
                    replica::catch_up(&fresh, &logs, &gid("dropin"))
                        .await
                        .expect("a new copy rebuilds from the restored snapshot and log");
                }

                // A node on the folder kept from before is refused, and the folder is
                // left as it was.
                let digest = folder_digest(&kept);
                let mut config = peerhub_server::config::Config::new(kept.clone());
                config.cluster = Some(new.node_settings("a"));
                config.store_min_free_bytes = 0;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let refused = peerhub_server::Server::start(listener, config).await;
                let error = match refused {
                    Ok(_) => panic!("a folder from before the restore was served"),
                    Err(error) => error.to_string(),
                };
                assert!(
                    error.contains("before it was restored") && error.contains("fresh"),
                    "{error}"
                );
                assert_eq!(
                    folder_digest(&kept),
                    digest,
                    "the refused folder is unchanged"
                );

                // Two new nodes on fresh folders.
                let a2 = node(&new, "a").await;
                let b2 = node(&new, "b").await;
                for n in [&a2, &b2] {
                    assert!(
                        n.server().start_tokens().admin.is_none(),
                        "the cluster's admin was restored: no new first-admin link"
                    );
                }
                let (head, seen) = history(&a2, &river, "circle").await;
                assert!(head >= before_backup, "head {head} < {before_backup}");
                assert_eq!(
                    seen.keys().copied().collect::<Vec<_>>(),
                    (1..=head).collect::<Vec<_>>(),
                    "gap-free"
                );
                for (seq, body) in &acked {
                    if *seq <= before_backup {
                        assert_eq!(seen.get(seq), Some(body), "acknowledged before the backup");
                    } else if let Some(there) = seen.get(seq) {
                        assert_eq!(there, body, "a later post, if there, is itself");
                    }
                }
                let (head_b, seen_b) = history(&b2, &sky, "circle").await;
                assert_eq!((head_b, &seen_b), (head, &seen), "the same through node b");
                let mut sky_again = b2.login(&sky).await;
                sky_again.join("circle", "Sky", Some(head)).await;
                assert_eq!(
                    sky_again.post("circle", "after").await,
                    head + 1,
                    "the next seq"
                );

                // Still admin, with no new first-admin link. (A new node's own
                // copy of the directory follows the bucket a moment after it
                // starts: the login waits for the admin's account to be there.)
                while !a2
                    .hub()
                    .store
                    .account(&admin_key.key())
                    .expect("a2's store")
                    .is_some_and(|account| account.roles.contains(&Role::Admin))
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let mut admin = a2.login(&admin_key).await;
                let token = admin.invite(InviteRole::Supervisor, None).await;
                assert!(!token.is_empty(), "the restored admin makes an invite");

                // The rota as set.
                let listed = peerhub(args(&[&"rota", &"list", &"--data", &b2.data_dir()])).await;
                assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
                let listed: Vec<RotaEntry> = serde_json::from_slice(&listed.stdout).expect("rota");
                assert_eq!(listed, rota);

                // The escalation is still routed: the supervisor, logged in again, sees
                // it open, and its deadline moves it on.
                let mut sup_again = b2.login(&sup).await;
                let still = escalation_where(&mut sup_again, |e| {
                    e.id == open.id && e.status == EscalationStatus::Open
                })
                .await;
                assert_eq!(still.about, open.about);
                // A frame is awaited for a few seconds only: the deadline is passed
                // first (it counts from the flag, before the backup).
                tokio::time::sleep_until(deadline).await;
                let moved =
                    escalation_where(&mut sup_again, |e| e.id == open.id && e.level > 1).await;
                assert_eq!(moved.status, EscalationStatus::Open);

                // A node restarted on its folder made after the restore serves again
                // (it carries this restore's mark).
                drop((sup_again, admin, sky_again));
                let a2 = a2.restart().await;
                let (head_again, seen_again) = history(&a2, &river, "circle").await;
                assert_eq!(head_again, head + 1);
                assert_eq!(
                    seen_again.get(&(head + 1)).map(String::as_str),
                    Some("after")
                );
            }),
        )
        .await
        .expect("bounded");
    });
}

/// A restore into a cluster that holds peerhub's streams is refused, naming
/// them, and changes none of them; a damaged or cut-short file is refused
/// before anything is created; a backup of a NATS cluster where no peerhub
/// cluster ran is refused and leaves no file.
#[test]
fn a_restore_over_streams_or_from_a_damaged_file_is_refused_and_changes_nothing() {
    on_a_big_stack(|| async {
        let Some(old) = NatsCluster::start().await else {
            eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
            return;
        };
        // Boxed: a large future, kept on the heap.
        tokio::time::timeout(
            BOUND,
            Box::pin(async {
                let dir = tempfile::tempdir().expect("temp dir");
                let mut a = node(&old, "a").await;
                a.create_group_with("circle", |g| g.waiting_room = Some(false))
                    .await;
                let who = Identity::generate();
                let mut client = a.login(&who).await;
                client.join("circle", "River", None).await;
                for i in 0..3 {
                    client.post("circle", &format!("p{i}")).await;
                }
                let config_old = config_file(dir.path(), "old.toml", &old.urls());
                let file = dir.path().join("cluster.backup");
                printed(&cluster_backup(&config_old, &file).await);

                // A second backup to the same file is refused; the first is kept.
                let first = std::fs::read(&file).expect("the backup");
                let again = cluster_backup(&config_old, &file).await;
                assert_refused(&again, &[]);
                assert_eq!(std::fs::read(&file).expect("the backup"), first);

                // Over the running cluster's own streams: refused, naming them.
                drop(client);
                a.shutdown().await;
                let before = peerhub_streams(&old).await;
                let over = cluster_restore(&config_old, &file).await;
                let mut says: Vec<&str> = before.keys().map(String::as_str).collect();
                says.push("nothing was changed");
                assert_refused(&over, &says);
                assert_eq!(
                    peerhub_streams(&old).await,
                    before,
                    "every stream as it was"
                );

                // Damaged files, into an empty cluster: refused, nothing created.
                let Some(new) = NatsCluster::start().await else {
                    panic!("the second cluster starts");
                };
                let config_new = config_file(dir.path(), "new.toml", &new.urls());
                let text = String::from_utf8(first.clone()).expect("UTF-8 lines");
                let lines: Vec<&str> = text.lines().collect();
                let chunk = lines
                    .iter()
                    .position(|l| l.contains("\"line\":\"chunk\""))
                    .expect("a chunk line");
                let mut changed = lines.clone();
                let flipped = {
                    let line = lines[chunk];
                    let at = line.find("\"data\":\"").expect("data") + 8;
                    let mut bytes = line.as_bytes().to_vec();
                    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                    String::from_utf8(bytes).expect("ASCII")
                };
                changed[chunk] = &flipped;
                let whole =
                    |lines: &[&str]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
                let damaged = [
                    ("cut short", text[..text.len() / 2].to_string()),
                    ("the end line missing", whole(&lines[..lines.len() - 1])),
                    ("a chunk changed", whole(&changed)),
                    (
                        "a line dropped",
                        whole(&[&lines[..chunk], &lines[chunk + 1..]].concat()),
                    ),
                    (
                        "a line after the end",
                        whole(&[&lines[..], &["{}"]].concat()),
                    ),
                    ("not a backup", "hello\n".to_string()),
                    ("empty", String::new()),
                ];
                for (what, bytes) in damaged {
                    let path = dir.path().join("damaged.backup");
                    std::fs::write(&path, bytes).expect("write");
                    let out = cluster_restore(&config_new, &path).await;
                    eprintln!("damaged: {what}");
                    assert_refused(&out, &["not intact", "nothing was created"]);
                    assert!(
                        peerhub_streams(&new).await.is_empty(),
                        "{what}: nothing created"
                    );
                }

                // An intact file whose last stream the server refuses (its subjects
                // overlap the group logs'; the file's digest made anew over the
                // change): the restore fails part-way and deletes what it made.
                let last_part = lines
                    .iter()
                    .rposition(|l| l.contains("\"line\":\"part\""))
                    .expect("a part");
                let mut part: Value = serde_json::from_str(lines[last_part]).expect("a part line");
                assert_ne!(part["stream"], "PEERHUB_LOG");
                part["config"]["subjects"] = serde_json::json!(["peerhub.log.>"]);
                let part = serde_json::to_string(&part).expect("json");
                let mut refused = lines.clone();
                refused[last_part] = &part;
                let body = whole(&refused[..refused.len() - 1]);
                let digest = {
                    use sha2::Digest as _;
                    hex::encode(sha2::Sha256::digest(body.as_bytes()))
                };
                let parts = lines
                    .iter()
                    .filter(|l| l.contains("\"line\":\"part\""))
                    .count();
                let end =
                    format!("{{\"line\":\"end\",\"parts\":{parts},\"digest\":\"{digest}\"}}\n");
                let path = dir.path().join("refused.backup");
                std::fs::write(&path, body + &end).expect("write");
                let out = cluster_restore(&config_new, &path).await;
                assert_refused(&out, &["deleted the streams it had made"]);
                assert!(!stderr(&out).contains("except"), "{}", stderr(&out));
                assert!(
                    peerhub_streams(&new).await.is_empty(),
                    "the streams restored before the refusal are deleted: {}",
                    stderr(&out)
                );
                eprintln!("refused part-way: {}", stderr(&out).trim());

                // A backup of NATS servers where no peerhub cluster ran: refused.
                let empty = dir.path().join("empty.backup");
                let out = cluster_backup(&config_new, &empty).await;
                assert_refused(&out, &["no peerhub cluster"]);
                assert!(!empty.exists(), "no file left behind");
                assert!(peerhub_streams(&new).await.is_empty(), "nothing created");
            }),
        )
        .await
        .expect("bounded");
    });
}

/// With no NATS server answering, a backup fails saying so and leaves no file;
/// a restore does too, after checking the file, and `backup --data` with
/// `--config` is refused as a usage error.
#[tokio::test]
async fn a_backup_with_nats_unreachable_fails_clearly_and_leaves_no_file() {
    // Boxed: a large future, kept on the heap.
    tokio::time::timeout(
        BOUND,
        Box::pin(async {
            let dir = tempfile::tempdir().expect("temp dir");
            // Ports the kernel just handed out and nobody listens on.
            let urls: Vec<String> = (0..3)
                .map(|_| {
                    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                    format!("nats://{}", listener.local_addr().expect("addr"))
                })
                .collect();
            let config = config_file(dir.path(), "nowhere.toml", &urls);
            let out_file = dir.path().join("cluster.backup");
            let out = cluster_backup(&config, &out_file).await;
            assert_refused(&out, &["connecting to NATS"]);
            assert!(out.stdout.is_empty());
            assert!(!out_file.exists(), "no file left behind");

            let both = peerhub(args(&[
                &"backup",
                &"--config",
                &config,
                &"--data",
                &dir.path(),
                &"--out",
                &out_file,
            ]))
            .await;
            assert_refused(&both, &["cannot be used with"]);
            assert!(!out_file.exists());
        }),
    )
    .await
    .expect("bounded");
}
