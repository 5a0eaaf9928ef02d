//! Operators' commands on the real binary, against a running server (through the
//! data folder's control socket) and a stopped one: backup taken while the server
//! takes writes, restored into a fresh folder and compared; invites; group list.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use peerhub_protocol::payload::InviteRole;
use peerhub_protocol::ServerFrame;
use peerhub_tests::identity::gid;
use peerhub_tests::process::binary;
use peerhub_tests::{Client, Identity, ProcessServer};

/// Runs `peerhub ARGS...` off the async runtime.
async fn peerhub(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(&args)
            .env_remove("PEERHUB_CONFIG")
            .output()
            .expect("run peerhub")
    })
    .await
    .expect("joined")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_backup_taken_under_writes_restores_to_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ProcessServer::start(&data, &[]).await;
    let mut admin = server.admin().await;
    let created = admin.create_group("circle", "Circle").await;
    assert!(
        matches!(created, ServerFrame::GroupCreated { .. }),
        "{created:?}"
    );
    let mut writer = Client::connect(server.addr).await;
    writer.login(&Identity::generate()).await;
    writer.join("circle", "River", None).await;
    // Messages keep arriving while the backup runs.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let writing = {
        let acked = acked.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                i += 1;
                let seq = writer.post("circle", &format!("message {i}")).await;
                acked.store(seq, Ordering::SeqCst);
            }
            writer
        })
    };
    while acked.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let acked_before = acked.load(Ordering::SeqCst);
    let file = dir.path().join("hub.backup");
    let out = peerhub(args(&[
        "backup",
        "--data",
        &path(&data),
        "--out",
        &path(&file),
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = report["digest"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.cancel();
    let _writer = writing.await.unwrap();
    let acked_after = acked.load(Ordering::SeqCst);
    assert!(
        acked_after > acked_before,
        "writes went on during and after the backup"
    );

    // A second backup to the same file is refused; the first is untouched.
    let again = peerhub(args(&[
        "backup",
        "--data",
        &path(&data),
        "--out",
        &path(&file),
    ]))
    .await;
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));

    // Restore into a fresh folder: the digest it recorded is the one it restores.
    let restored = dir.path().join("restored");
    let out = peerhub(args(&[
        "restore",
        "--from",
        &path(&file),
        "--data",
        &path(&restored),
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&digest), "{}", text(&out));
    // Restoring over a store is refused.
    let out = peerhub(args(&[
        "restore",
        "--from",
        &path(&file),
        "--data",
        &path(&restored),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // The restored audit chain is whole.
    let out = peerhub(args(&["audit", "verify", "--data", &path(&restored)])).await;
    assert!(out.status.success(), "{}", text(&out));

    // The copy holds the record of itself, signed by the hub.
    {
        let store = peerhub_server::store::Store::open(&restored).unwrap();
        let actions = audit_actions(&store);
        assert!(actions.contains(&"admin.backup".to_string()), "{actions:?}");
        assert_eq!(
            actions.last().map(String::as_str),
            Some("admin.restore"),
            "the restore is recorded after the restored chain"
        );
    }

    // Serve the copy: every message acknowledged before the backup is there, in
    // order, gap-free, each verifying; nothing after the copy's last seq.
    let copy = ProcessServer::start(&restored, &[]).await;
    let mut reader = Client::connect(copy.addr).await;
    reader.login(&Identity::generate()).await;
    let joined = reader.join("circle", "Sky", Some(0)).await;
    let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
    let last = *seqs.last().unwrap();
    assert!(last >= acked_before, "{last} < {acked_before}");
    assert!(last <= acked_after);
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "gap-free from 1");
    for event in &joined.history {
        if let Some(env) = &event.env {
            env.verify().expect("signed as sent");
        }
    }
    drop(server);
}

/// The `action` of every audit entry, in order (parsed by the audit module).
fn audit_actions(store: &peerhub_server::store::Store) -> Vec<String> {
    peerhub_server::audit::entries(store)
        .map(|entry| entry.expect("entry parses").action)
        .collect()
}

/// A running hub with the group `circle` and one person in it who posted `said`
/// under `name`.
async fn one_person_said(data: &Path, name: &str, said: &str) -> (ProcessServer, Identity, Client) {
    let server = ProcessServer::start(data, &[]).await;
    let mut admin = server.admin().await;
    admin.create_group("circle", "Circle").await;
    let person = Identity::generate();
    let mut client = Client::connect(server.addr).await;
    client.login(&person).await;
    client.join("circle", name, None).await;
    client.post("circle", said).await;
    (server, person, client)
}

#[tokio::test]
async fn an_export_of_a_running_hub_holds_the_persons_messages_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, river, _client) = one_person_said(&data, "River", "a message of my own").await;
    let data_arg = path(&data);
    let out = peerhub(args(&[
        "export",
        "--data",
        &data_arg,
        "--key",
        &river.key().to_string(),
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let export: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(export["key"], river.key().to_string());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a message of my own"),
        "{export}"
    );
    for bad in ["not-a-key", ""] {
        let out = peerhub(args(&["export", "--data", &data_arg, "--key", bad])).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }
    server.signal("TERM");
    server.wait().await;
    let store = peerhub_server::store::Store::open(&data).unwrap();
    let actions = audit_actions(&store);
    assert_eq!(
        actions.iter().filter(|a| *a == "admin.export").count(),
        1,
        "{actions:?}"
    );
    drop(store);
    let out = peerhub(args(&["audit", "verify", "--data", &data_arg])).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn invites_and_group_lists_work_on_a_running_and_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ProcessServer::start(&data, &[]).await;
    let mut admin = server.admin().await;
    admin.create_group("circle", "Circle").await;
    let data_arg = path(&data);

    // Running: the request goes through the control socket.
    let out = peerhub(args(&[
        "invite",
        "--data",
        &data_arg,
        "--role",
        "facilitator",
        "--group",
        "circle",
        "--public-url",
        "https://hub.example/",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The link opens the group and says it is a staff invite (the web client then
    // asks the name colleagues will know the redeemer by).
    let token = link
        .strip_prefix("https://hub.example/#invite=")
        .and_then(|rest| rest.strip_suffix("&group=circle&staff=1"))
        .unwrap_or_else(|| panic!("a link: {link}"))
        .to_string();
    let me = Identity::generate();
    let mut fac = Client::connect(server.addr).await;
    fac.login(&me).await;
    let reply = fac.redeem(&token).await;
    match &reply {
        ServerFrame::Redeemed {
            role: InviteRole::Facilitator,
            groups,
            ..
        } => assert_eq!(groups, &vec![gid("circle")], "the invite's group"),
        other => panic!("{other:?}"),
    }
    // The grant can be taken back from the command line (and given again).
    let key = me.key().to_string();
    for flags in [&["--revoke"][..], &[][..]] {
        let mut grant = vec![
            "grant", "--data", &data_arg, "--key", &key, "--group", "circle",
        ];
        grant.extend(flags);
        let out = peerhub(args(&grant)).await;
        assert!(out.status.success(), "{grant:?}: {}", text(&out));
    }
    let out = peerhub(args(&[
        "grant", "--data", &data_arg, "--key", &key, "--group", "nope",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no group nope"), "{}", text(&out));
    let out = peerhub(args(&["group", "list", "--data", &data_arg])).await;
    assert!(out.status.success(), "{}", text(&out));
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(groups[0]["id"], "circle");
    assert_eq!(groups[0]["title"], "Circle");

    // Refused requests say why and change nothing.
    for bad in [
        vec!["invite", "--data", &data_arg, "--role", "member"],
        vec!["invite", "--data", &data_arg, "--role", "facilitator"],
        vec![
            "invite", "--data", &data_arg, "--role", "member", "--group", "nope",
        ],
        vec![
            "invite", "--data", &data_arg, "--role", "admin", "--hours", "0",
        ],
        vec![
            "invite", "--data", &data_arg, "--role", "admin", "--group", "circle",
        ],
    ] {
        let out = peerhub(args(&bad)).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
        assert!(text(&out).contains("refused"), "{bad:?}: {}", text(&out));
    }

    // Stopped: the command opens the folder itself.
    server.signal("TERM");
    server.wait().await;
    let out = peerhub(args(&[
        "invite",
        "--data",
        &data_arg,
        "--role",
        "supervisor",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = peerhub(args(&["audit", "verify", "--data", &data_arg])).await;
    assert!(out.status.success(), "{}", text(&out));
    let server = ProcessServer::start(&data, &[]).await;
    let mut sup = Client::connect(server.addr).await;
    sup.login(&Identity::generate()).await;
    let reply = sup.redeem(&token).await;
    assert!(
        matches!(
            reply,
            ServerFrame::Redeemed {
                role: InviteRole::Supervisor,
                ..
            }
        ),
        "{reply:?}"
    );
    // A folder with no store is not created by a command.
    let none = dir.path().join("none");
    let out = peerhub(args(&["group", "list", "--data", &path(&none)])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(!none.exists());
}

/// `START/END` in RFC 3339 for a window from `from_now_s` lasting `len_s`.
fn window(from_now_s: i64, len_s: u64) -> String {
    let now = std::time::SystemTime::now();
    let start = if from_now_s >= 0 {
        now + std::time::Duration::from_secs(from_now_s as u64)
    } else {
        now - std::time::Duration::from_secs(from_now_s.unsigned_abs())
    };
    let end = start + std::time::Duration::from_secs(len_s);
    format!(
        "{}/{}",
        humantime::format_rfc3339_seconds(start),
        humantime::format_rfc3339_seconds(end)
    )
}

#[tokio::test]
async fn groups_are_created_and_rescheduled_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ProcessServer::start(&data, &[]).await;
    let _admin = server.admin().await;
    let data_arg = path(&data);
    let tomorrow = window(86_400, 3_600);
    let out = peerhub(args(&[
        "group",
        "create",
        "--data",
        &data_arg,
        "--id",
        "evening",
        "--title",
        "Evening drop-in",
        "--no-waiting-room",
        "--window",
        &tomorrow,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    // Refusals: the same id again, a padded title, a window that ends first.
    for bad in [
        vec![
            "group", "create", "--data", &data_arg, "--id", "evening", "--title", "Again",
        ],
        vec![
            "group", "create", "--data", &data_arg, "--id", "other", "--title", " padded ",
        ],
        vec![
            "group",
            "create",
            "--data",
            &data_arg,
            "--id",
            "other",
            "--title",
            "T",
            "--window",
            "2026-12-01T19:00:00Z/2026-12-01T18:00:00Z",
        ],
        vec!["group", "schedule", "--data", &data_arg, "--group", "nope"],
    ] {
        let out = peerhub(args(&bad)).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }
    let out = peerhub(args(&["group", "list", "--data", &data_arg])).await;
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");

    // Outside its window the door is shut.
    let mut person = Client::connect(server.addr).await;
    person.login(&Identity::generate()).await;
    let env = person.identity.clone().unwrap().join("evening", "River");
    let reply = person
        .request(|id| peerhub_protocol::ClientFrame::Join {
            id,
            group: peerhub_tests::identity::gid("evening"),
            after: None,
            access_code: None,
            env,
        })
        .await;
    assert!(
        matches!(reply, ServerFrame::Error { .. }),
        "the door is shut until tomorrow: {reply:?}"
    );
    // Rescheduled to now, on the running server: the door opens at once.
    let now = window(-600, 3_600);
    let out = peerhub(args(&[
        "group", "schedule", "--data", &data_arg, "--group", "evening", "--window", &now,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    // `join` fails the test unless the hub answers `joined`.
    person.join("evening", "River", None).await;
}

#[tokio::test]
async fn erase_needs_a_stopped_server_and_leaves_a_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, river, client) =
        one_person_said(&data, "Marigold", "words that are mine to take back").await;
    let data_arg = path(&data);
    let key = river.key().to_string();
    let out = peerhub(args(&["erase", "--data", &data_arg, "--key", &key])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("stop it first"), "{}", text(&out));
    drop(client);
    server.signal("TERM");
    server.wait().await;
    let out = peerhub(args(&["erase", "--data", &data_arg, "--key", &key])).await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["pseudonym"].as_str().unwrap().starts_with("erased-"),
        "{report}"
    );
    assert!(
        !text(&out).contains(&key),
        "the report does not name the key"
    );
    let out = peerhub(args(&["audit", "verify", "--data", &data_arg])).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = peerhub(args(&["export", "--data", &data_arg, "--key", &key])).await;
    assert!(out.status.success(), "{}", text(&out));
    let export = String::from_utf8_lossy(&out.stdout);
    assert!(!export.contains("words that are mine"), "{export}");
    assert!(!export.contains("Marigold"), "{export}");
}

#[tokio::test]
async fn the_control_socket_answers_bad_requests_and_an_idle_client_holds_no_one() {
    use std::io::{BufRead as _, BufReader, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ProcessServer::start(&data, &[]).await;
    let _admin = server.admin().await;
    let socket = data.join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600,
        "owner-only"
    );
    // A client that connects and says nothing holds no one else up.
    let _idle = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let out = peerhub(args(&["group", "list", "--data", &path(&data)])).await;
    assert!(out.status.success(), "{}", text(&out));
    // Bad lines get a clear error each.
    let ask = |line: Vec<u8>| {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
            stream.write_all(&line).unwrap();
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer).unwrap();
            answer
        })
    };
    let answer = ask(b"not a request\n".to_vec()).await.unwrap();
    assert!(
        answer.contains("\"error\"") && answer.contains("not a request"),
        "{answer}"
    );
    let answer = ask(br#"{"command":"erase_everything"}"#.iter().chain(b"\n").copied().collect())
        .await
        .unwrap();
    assert!(answer.contains("\"error\""), "{answer}");
    let mut long = vec![b'x'; 70 * 1024];
    long.push(b'\n');
    let answer = ask(long).await.unwrap();
    assert!(answer.contains("longer than 65536 bytes"), "{answer}");
}
