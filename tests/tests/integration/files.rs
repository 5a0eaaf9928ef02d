//! The data folder on disk (issue 14 item 6): everything owner-only under an
//! ordinary umask, and a folder opened to others refused (or warned about). That
//! no file holds a group's access code is in `access_codes.rs`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use peerhub_tests::ProcessServer;

/// Every path under `dir` (and `dir`), with its permission bits.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    out
}

/// Starts the real binary under umask 022 on `data`, makes an admin and a group,
/// and stops it gracefully.
async fn run_once(data: &Path, args: &[&str]) {
    let mut server = ProcessServer::start_under_umask(data, args, "022", &[]).await;
    if !args.contains(&"--tls-self-signed") {
        let mut admin = server.admin().await;
        admin.create_group("circle", "Circle").await;
    }
    server.signal("TERM");
    let status = server.wait().await;
    let logs = server.logs.lock().unwrap().join("\n");
    assert!(status.success(), "{status:?} {logs}");
}

#[tokio::test]
async fn a_fresh_start_under_umask_022_leaves_everything_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run_once(&data, &[]).await;
    // The self-signed certificate and key are made on a second start.
    run_once(&data, &["--tls-self-signed"]).await;
    let all = modes(&data);
    assert!(all.len() > 3, "the store wrote files: {all:?}");
    let open: Vec<_> = all.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "open to group or others: {open:?}");
    let key = data.join("tls").join("self-signed-key.pem");
    let key_mode = all.iter().find(|(p, _)| *p == key).expect("the key").1;
    assert_eq!(key_mode, 0o600);
    assert_eq!(all.iter().find(|(p, _)| *p == data).unwrap().1, 0o700);
}

/// The binary's exit status and stderr when it refuses to start (a binary that
/// starts instead is stopped after 10 s and the test fails).
async fn refused_start(data: &Path) -> (std::process::ExitStatus, String) {
    let child = tokio::process::Command::new(peerhub_tests::process::binary())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data")
        .arg(data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run peerhub");
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("peerhub started on a folder open to others instead of refusing")
        .expect("wait for peerhub");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_data_folder_open_to_others_is_refused_unless_the_operator_says_warn() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run_once(&data, &[]).await;

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (status, stderr) = refused_start(&data).await;
    assert!(!status.success(), "started on an open folder: {stderr}");
    assert!(stderr.contains(&data.display().to_string()), "{stderr}");
    assert!(stderr.contains("0755"), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod -R go-rwx '{}'", data.display())),
        "{stderr}"
    );

    // A single file readable by others is refused too, and named.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = data.join("db").join("db");
    assert!(db.is_file(), "sled keeps its log in data/db/db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, stderr) = refused_start(&data).await;
    assert!(!status.success(), "started with an open file: {stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");

    // With the warn setting it starts, says so, and leaves the file as it is.
    let mut server = ProcessServer::start_under_umask(
        &data,
        &[],
        "022",
        &[("PEERHUB_STORE_OPEN_TO_OTHERS", "warn")],
    )
    .await;
    // The warning is logged before `ready`; give the stderr reader time to see it.
    let mut logs = String::new();
    for _ in 0..100 {
        logs = server.logs.lock().unwrap().join("\n");
        if logs.contains("open to group or others") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(logs.contains("open to group or others"), "{logs}");
    assert!(logs.contains(&db.display().to_string()), "{logs}");
    server.signal("TERM");
    let status = server.wait().await;
    let logs = server.logs.lock().unwrap().join("\n");
    assert!(status.success(), "{status:?} {logs}");
}
