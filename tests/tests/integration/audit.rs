//! The audit chain end to end: role grants made over real sockets land in the chain,
//! and the real `peerhub audit verify` binary vouches for it, finds a changed byte,
//! and refuses a folder a running server holds.

use std::path::{Path, PathBuf};

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::RedeemPayload;
use peerhub_protocol::{PublicKey, ServerFrame};
use peerhub_server::audit::{self, action, AuditEntry};
use peerhub_server::invites::{self, InviteSpec};
use peerhub_server::store::Store;
use peerhub_tests::process::binary;
use peerhub_tests::{now_ms, Client, Identity, TestServer};
use tempfile::TempDir;

/// What `peerhub audit verify` did.
#[derive(Debug)]
struct Verdict {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the real binary: `peerhub audit verify --data DIR`.
async fn run_audit_verify(data: &Path) -> Verdict {
    let out = tokio::process::Command::new(binary())
        .args(["audit", "verify", "--data"])
        .arg(data)
        .env_remove("PEERHUB_DATA")
        .output()
        .await
        .expect("run peerhub audit verify");
    Verdict {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A server whose data folder outlives it (the `TempDir` is the caller's).
async fn server_in(dir: &TempDir) -> (TestServer, PathBuf) {
    let data = dir.path().join("data");
    let server = TestServer::start_with(|config| config.data_dir = data.clone()).await;
    (server, data)
}

/// Redeems `token` as `who`, expecting the role.
async fn redeem_as(client: &mut Client, token: &str, role: Role) {
    match client.redeem(token).await {
        ServerFrame::Redeemed { role: got, .. } => assert_eq!(got, role.into()),
        other => panic!("redeem refused: {other:?}"),
    }
}

/// A fresh facilitator invite, made as `tests/integration/invites.rs` does.
fn facilitator_invite(server: &TestServer) -> String {
    let spec = InviteSpec {
        role: Role::Facilitator.into(),
        group: None,
        groups: Vec::new(),
        ttl_ms: invites::DEFAULT_TTL_MS,
        bootstrap: false,
    };
    invites::create(&server.hub().store, spec, None, now_ms()).expect("invite stored")
}

/// Every entry of the chain of a running server, parsed.
fn entries(server: &TestServer) -> Vec<AuditEntry> {
    audit::entries(&server.hub().store)
        .map(|entry| entry.expect("entry parses"))
        .collect()
}

/// Starts a server, grants admin (the start-up link) then facilitator over real
/// sockets, and returns the grantees' keys and the chain's last hash.
async fn two_grants(server: &TestServer) -> (PublicKey, PublicKey, String) {
    let admin = Identity::generate();
    let admin_token = server
        .server()
        .start_tokens()
        .admin
        .clone()
        .expect("admin token at first start");
    let mut client = server.login(&admin).await;
    redeem_as(&mut client, &admin_token, Role::Admin).await;

    let facilitator = Identity::generate();
    let token = facilitator_invite(server);
    let mut client = server.login(&facilitator).await;
    redeem_as(&mut client, &token, Role::Facilitator).await;
    // Asking again (say the first answer was lost) is answered, but is no new grant.
    redeem_as(&mut client, &token, Role::Facilitator).await;

    let last = server.hub().audit.tail().1.to_hex();
    (admin.key(), facilitator.key(), last)
}

#[tokio::test]
async fn each_role_grant_is_one_entry_signed_by_its_grantee() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _data) = server_in(&dir).await;
    let (admin, facilitator, last) = two_grants(&server).await;

    let chain = entries(&server);
    assert_eq!(
        chain.len(),
        2,
        "two grants, the repeat adds nothing: {chain:?}"
    );
    for (entry, (seq, grantee)) in chain.iter().zip([(1, admin), (2, facilitator)]) {
        assert_eq!(entry.seq, seq);
        assert_eq!(entry.action, action::ROLE_GRANT);
        assert_eq!(entry.group, None);
        assert_eq!(entry.subject, Some(grantee));
        assert_eq!(entry.actor(), Some(grantee), "the grantee is accountable");
        assert_eq!(entry.envelopes.len(), 1);
        assert_eq!(entry.envelopes[0].kind, Kind::Redeem);
        entry.envelopes[0]
            .verify()
            .expect("the grantee's signature");
    }
    assert_eq!(chain[1].prev, chain[0].hash);
    assert_eq!(chain[1].hash.to_hex(), last);
    let report = audit::verify(&server.hub().store).expect("chain verifies in process");
    assert_eq!(report.entries, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn the_binary_verifies_the_chain_a_stopped_server_left() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = server_in(&dir).await;
    let (_, _, last) = two_grants(&server).await;
    server.shutdown().await;

    let verdict = run_audit_verify(&data).await;
    assert_eq!(verdict.code, Some(0), "{verdict:?}");
    assert_eq!(
        verdict.stdout.trim(),
        format!("audit chain OK: 2 entries, last hash {last}"),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn one_changed_byte_in_a_stored_subject_is_reported_by_the_binary_at_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = server_in(&dir).await;
    let (_, facilitator, _) = two_grants(&server).await;
    server.shutdown().await;

    // Change one character of entry 2's subject to another base64url character, so
    // the entry still parses and only the hash can tell.
    {
        let store = Store::open(&data).expect("the stopped server's store opens");
        let (seq, bytes) = store
            .audit_entries()
            .map(|item| item.expect("entry reads"))
            .find(|(seq, _)| *seq == 2)
            .expect("entry 2");
        let subject = format!(r#""subject":"{}""#, facilitator.to_b64());
        let text = String::from_utf8(bytes).expect("utf-8 entry");
        let at = text.find(&subject).expect("subject in entry 2") + r#""subject":""#.len();
        let mut tampered = text.into_bytes();
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        store.put_audit_raw_for_tests(seq, &tampered).unwrap();
        store.flush().unwrap();
    }

    let verdict = run_audit_verify(&data).await;
    assert_eq!(verdict.code, Some(1), "{verdict:?}");
    assert!(
        verdict
            .stdout
            .starts_with("audit chain BROKEN at entry 2: "),
        "{verdict:?}"
    );
    assert!(
        verdict.stdout.contains("do not match its hash"),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn the_binary_refuses_a_folder_a_running_server_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = server_in(&dir).await;
    two_grants(&server).await;
    let before = server.hub().store.digest().unwrap();

    let verdict = run_audit_verify(&data).await;
    assert_eq!(verdict.code, Some(2), "{verdict:?}");
    assert!(
        verdict.stderr.contains("is in use")
            && verdict.stderr.contains("running peerhub server")
            && verdict.stderr.contains("stop the server first"),
        "{verdict:?}"
    );
    assert!(
        verdict.stdout.is_empty(),
        "no verdict is given: {verdict:?}"
    );

    // The server did not notice: same state, still serving.
    assert_eq!(server.hub().store.digest().unwrap(), before);
    let mut client = server.client().await;
    match client.try_login(&Identity::generate()).await {
        ServerFrame::AuthOk { .. } => {}
        other => panic!("still serving: {other:?}"),
    }
    server.shutdown().await;
}

/// Calls `invites::redeem` directly rather than over sockets: two connections'
/// frames almost never reach it at the same instant, and this race needs them to.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn one_key_redeeming_one_invite_many_times_at_once_records_one_grant() {
    let server = TestServer::start().await;
    let me = Identity::generate();
    let tokens: Vec<String> = (0..20).map(|_| facilitator_invite(&server)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for token in &tokens {
        for _ in 0..8 {
            let hub = server.hub().clone();
            let (key, env, token) = (me.key(), me.redeem(token), token.clone());
            let counter = env.payload_as::<RedeemPayload>().unwrap().counter;
            tasks.spawn(async move {
                invites::redeem(&hub, &key, &token, counter, &env)
                    .await
                    .map(|granted| granted.role)
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(
            done.unwrap().expect("every attempt is answered"),
            Role::Facilitator.into()
        );
    }
    let chain = entries(&server);
    assert_eq!(chain.len(), tokens.len(), "one entry per invite");
    assert!(chain.iter().all(|e| e.subject == Some(me.key())));
    assert_eq!(audit::verify(&server.hub().store).unwrap().entries, 20);
    server.shutdown().await;
}
