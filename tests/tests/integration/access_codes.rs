//! Issue 14, item 7: a group's access code is kept only as a keyed hash, never
//! inside a stored envelope. A byte scan of every file in the data folder after
//! a graceful stop finds no copy of the code (nor its unkeyed SHA-256), joining
//! with it works before and after a restart, and a `create_group` whose signed
//! payload carries the code is refused and changes nothing.

use peerhub_protocol::payload::GroupKind;
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Identity, TestServer};
use sha2::{Digest, Sha256};

const CODE: &str = "Quillfeather-7c3e-Tarn";
const WRONG: &str = "Quillfeather-7c3e-Tarm";

async fn create_coded(server: &mut TestServer, group: &str, code: &str) -> ServerFrame {
    let mut admin = server.admin().await;
    let me = admin.identity.clone().expect("admin identity");
    let env = me.create_group_with(group, "Coded group", GroupKind::DropIn, |g| {
        g.waiting_room = Some(false);
    });
    let access_code = Some(code.to_string());
    admin
        .request(|id| ClientFrame::CreateGroup {
            id,
            access_code,
            env,
        })
        .await
}

#[track_caller]
fn assert_code(frame: &ServerFrame, code: ErrorCode) {
    match frame {
        ServerFrame::Error { code: got, .. } => assert_eq!(*got, code, "{frame:?}"),
        other => panic!("expected error {code}, got {other:?}"),
    }
}

#[track_caller]
fn assert_joined(frame: &ServerFrame) {
    assert!(matches!(frame, ServerFrame::Joined { .. }), "{frame:?}");
}

/// What must not be in the folder: the code and its unkeyed hash (which a
/// dictionary of likely codes would reverse).
fn copies(data: &std::path::Path) -> Vec<(String, Vec<std::path::PathBuf>)> {
    let unkeyed = hex::encode(Sha256::digest(CODE.as_bytes()));
    [CODE.to_string(), unkeyed]
        .into_iter()
        .map(|text| {
            let files = peerhub_tests::scan::files_holding(data, &text)
                .into_iter()
                .map(|(path, _)| path)
                .collect();
            (text, files)
        })
        .filter(|(_, files): &(String, Vec<_>)| !files.is_empty())
        .collect()
}

#[tokio::test]
async fn an_access_code_leaves_no_copy_in_the_data_folder_and_still_opens_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let at = data.clone();
    let mut server = TestServer::start_with(move |c| c.data_dir = at).await;
    let reply = create_coded(&mut server, "coded", CODE).await;
    assert!(
        matches!(reply, ServerFrame::GroupCreated { .. }),
        "{reply:?}"
    );
    let mut p = server.login(&Identity::generate()).await;
    assert_code(
        &p.try_join("coded", "Sam", None).await,
        ErrorCode::AccessDenied,
    );
    assert_code(
        &p.try_join("coded", "Sam", Some(WRONG)).await,
        ErrorCode::AccessDenied,
    );
    // Compared with white space trimmed, as before.
    assert_joined(&p.try_join("coded", "Sam", Some(&format!(" {CODE} "))).await);
    p.post("coded", "hello from Sam").await;
    drop(p);
    server.shutdown().await;
    assert_eq!(copies(&data), Vec::new(), "the code is in the data folder");

    // After a restart the same code opens the door and a wrong one does not.
    let at = data.clone();
    let server = TestServer::start_with(move |c| c.data_dir = at).await;
    let mut q = server.login(&Identity::generate()).await;
    assert_code(
        &q.try_join("coded", "Robin", Some(WRONG)).await,
        ErrorCode::AccessDenied,
    );
    assert_joined(&q.try_join("coded", "Robin", Some(CODE)).await);
    drop(q);
    server.shutdown().await;
    assert_eq!(copies(&data), Vec::new(), "the code is in the data folder");
}

#[tokio::test]
async fn a_create_group_whose_signed_payload_carries_the_code_is_refused() {
    let mut server = TestServer::start().await;
    let mut admin = server.admin().await;
    let me = admin.identity.clone().expect("admin identity");
    let env = me.create_group_with("inside", "Code inside", GroupKind::DropIn, |g| {
        g.access_code = Some(CODE.into());
        g.waiting_room = Some(false);
    });
    let reply = admin
        .request(|id| ClientFrame::CreateGroup {
            id,
            access_code: None,
            env,
        })
        .await;
    assert_code(&reply, ErrorCode::Invalid);
    // Nothing changed: no group of that id.
    let mut p = server.login(&Identity::generate()).await;
    assert_code(
        &p.try_join("inside", "Sam", Some(CODE)).await,
        ErrorCode::NotFound,
    );
    // The same id is still free for a well-formed request.
    drop(admin);
    let reply = create_coded(&mut server, "inside", CODE).await;
    assert!(
        matches!(reply, ServerFrame::GroupCreated { .. }),
        "{reply:?}"
    );
    assert_joined(&p.try_join("inside", "Sam", Some(CODE)).await);
    server.shutdown().await;
}

/// Runs the real `peerhub` binary with `args`; returns (exit code, output).
fn peerhub(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(peerhub_tests::process::binary())
        .args(args)
        .output()
        .expect("run peerhub");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The operator's `peerhub group create --access-code` on a stopped hub keeps no
/// copy of the code either, and the code opens the door once the hub serves.
#[tokio::test]
async fn the_operator_command_keeps_no_copy_of_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let at = data.clone();
    let server = TestServer::start_with(move |c| c.data_dir = at).await;
    server.shutdown().await;
    let data_arg = data.to_str().unwrap();
    let (code, out) = peerhub(&[
        "group",
        "create",
        "--data",
        data_arg,
        "--id",
        "opcoded",
        "--title",
        "Operator group",
        "--no-waiting-room",
        "--access-code",
        CODE,
    ]);
    assert_eq!(code, 0, "peerhub group create: {out}");
    assert_eq!(copies(&data), Vec::new(), "the code is in the data folder");
    let at = data.clone();
    let server = TestServer::start_with(move |c| c.data_dir = at).await;
    let mut p = server.login(&Identity::generate()).await;
    assert_code(
        &p.try_join("opcoded", "Sam", Some(WRONG)).await,
        ErrorCode::AccessDenied,
    );
    assert_joined(&p.try_join("opcoded", "Sam", Some(CODE)).await);
    drop(p);
    server.shutdown().await;
    assert_eq!(copies(&data), Vec::new(), "the code is in the data folder");
}

/// A folder from before the fix (an unkeyed hash, and the code inside the kept
/// signed request) is migrated at start: the old code still opens the door, a
/// wrong one does not, and the folder no longer holds the code or its hash.
#[tokio::test]
async fn a_folder_from_before_is_migrated_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let at = data.clone();
    let mut server = TestServer::start_with(move |c| c.data_dir = at).await;
    server
        .create_group_with("old", |g| g.waiting_room = Some(false))
        .await;
    let admin = server.admin().await.identity.clone().expect("admin");
    server.shutdown().await;
    {
        // What the old code wrote.
        let store = peerhub_server::store::Store::open(&data).expect("stopped folder");
        let mut group = store.group(&gid("old")).unwrap().expect("the group");
        group.access_code_hash = Some(hex::encode(Sha256::digest(CODE.as_bytes())));
        group.created_env =
            Some(
                admin.create_group_with("old", "Test group", GroupKind::DropIn, |g| {
                    g.access_code = Some(CODE.into());
                    g.waiting_room = Some(false);
                }),
            );
        store.put_group(&group).unwrap();
        store.flush().unwrap();
    }
    assert_eq!(
        copies(&data).len(),
        2,
        "precondition: the old folder holds the code and its unkeyed hash"
    );
    for _ in 0..2 {
        let at = data.clone();
        let server = TestServer::start_with(move |c| c.data_dir = at).await;
        let mut p = server.login(&Identity::generate()).await;
        assert_code(
            &p.try_join("old", "Sam", Some(WRONG)).await,
            ErrorCode::AccessDenied,
        );
        assert_joined(&p.try_join("old", "Sam", Some(CODE)).await);
        drop(p);
        server.shutdown().await;
        assert_eq!(copies(&data), Vec::new(), "the code is in the data folder");
    }
    let (code, out) = peerhub(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "audit verify: {out}");
}
