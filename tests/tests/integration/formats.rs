//! `docs/FORMATS.md` against the code, as `protocol/tests/spec.rs` does for frames:
//! every worked example in the document is made again here with the server's own
//! code and must match the document byte for byte, and the independent checkers in
//! `tests/independent/` (Python, standard library only, written from the document)
//! must accept the document's examples and a real run's backup and pages, and refuse
//! tampered ones.
//!
//! The document marks what is read with the info string of fenced blocks:
//! `audit-entry-1`, `audit-entry-2` (stored entries), `audit-hash-1`,
//! `audit-hash-2`, `backup-example` (a whole backup file), `pager-body`,
//! `pager-headers`, `risk-phrases`, `unicode-version`.

use std::path::{Path, PathBuf};
use std::process::Output;

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::Severity;
use peerhub_protocol::payload::InviteRole;
use peerhub_protocol::{ServerFrame, SignedEnvelope};
use peerhub_server::audit::{self, AuditLog, NewEntry};
use peerhub_server::escalation::alerts::AlertSummary;
use peerhub_server::escalation::pager::{self, PageEvent, PagerFormat, PagerSettings};
use peerhub_server::store::Store;
use peerhub_tests::identity::gid;
use peerhub_tests::process::binary;
use peerhub_tests::{Client, HttpReceiver, Identity, ProcessServer};
use sha2::{Digest as _, Sha256};

const DOC: &str = include_str!("../../../docs/FORMATS.md");

/// The text of the fenced block tagged `tag` (lines joined by `\n`, no trailing
/// newline).
fn block(tag: &str) -> String {
    let mut found = None;
    let mut open: Option<(bool, Vec<&str>)> = None;
    for line in DOC.lines() {
        match open.as_mut() {
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```") {
                    open = Some((info.split_whitespace().any(|w| w == tag), Vec::new()));
                }
            }
            Some((wanted, lines)) => {
                if line.trim_start().starts_with("```") {
                    if *wanted {
                        assert!(found.is_none(), "two blocks tagged {tag}");
                        found = Some(lines.join("\n"));
                    }
                    open = None;
                } else {
                    lines.push(line);
                }
            }
        }
    }
    found.unwrap_or_else(|| panic!("docs/FORMATS.md has no block tagged {tag}"))
}

/// Compares the document's block with what the code makes; on a difference, prints
/// what the code makes so the document can be corrected.
fn same_as_doc(tag: &str, made: &str) {
    let doc = block(tag);
    if doc != made {
        panic!("docs/FORMATS.md block {tag} differs from the code; the code makes:\n{made}\n");
    }
}

fn seed(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// The worked example's two entries (and, for the backup, the backup's own
/// entry), written by the server's own audit log into a fresh store.
fn example_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::open(store.clone()).unwrap();
    let alex = seed(1);
    let redeem = SignedEnvelope::sign(
        &alex,
        Kind::Redeem,
        r#"{"token":"aW52aXRlLWV4YW1wbGU","counter":1,"ts":1764000000000}"#.to_string(),
    );
    let key = redeem.key;
    log.append(NewEntry::new(1_764_000_000_100, audit::action::ROLE_GRANT, redeem).subject(key))
        .unwrap();
    let create = SignedEnvelope::sign(
        &alex,
        Kind::CreateGroup,
        r#"{"group":"tuesday","title":"Tuesday drop-in","group_kind":"drop_in","counter":2,"ts":1764000060000}"#
            .to_string(),
    );
    log.append(
        NewEntry::new(1_764_000_060_100, audit::action::GROUP_CREATE, create).group(gid("tuesday")),
    )
    .unwrap();
    (dir, store)
}

fn stored_entries(store: &Store) -> Vec<Vec<u8>> {
    store.audit_entries().map(|e| e.unwrap().1).collect()
}

#[test]
fn the_audit_chain_worked_example_is_what_the_server_writes_and_verifies() {
    let (_dir, store) = example_store();
    let entries = stored_entries(&store);
    assert_eq!(entries.len(), 2);
    let mut prev = [0u8; 32];
    for (i, stored) in entries.iter().enumerate() {
        let n = i + 1;
        let text = std::str::from_utf8(stored).unwrap();
        same_as_doc(&format!("audit-entry-{n}"), text);
        // The hash rule, from the document's words, over the document's bytes.
        let doc_entry = block(&format!("audit-entry-{n}"));
        let (hash_line, body) = doc_entry.split_once('\n').unwrap();
        let mut hash = Sha256::new();
        hash.update(b"peerhub-audit/1\n");
        hash.update(prev);
        hash.update(body.as_bytes());
        let hash: [u8; 32] = hash.finalize().into();
        assert_eq!(hex::encode(hash), hash_line, "entry {n}'s hash line");
        same_as_doc(&format!("audit-hash-{n}"), hash_line);
        prev = hash;
    }
    let report = audit::verify(&store).unwrap();
    assert_eq!(report.entries, 2);
    assert_eq!(report.last_hash.to_hex(), block("audit-hash-2"));
}

#[test]
fn the_backup_worked_example_is_what_the_server_writes_and_restores() {
    let (_dir, store) = example_store();
    // The backup's own entry, as `peerhub backup` writes it: signed by the hub.
    let hub = seed(9);
    let own = SignedEnvelope::sign(
        &hub,
        Kind::Admin,
        r#"{"action":"backup","counter":1764000120000,"ts":1764000120000}"#.to_string(),
    );
    AuditLog::open(store.clone())
        .unwrap()
        .append(NewEntry::new(
            1_764_000_120_000,
            audit::action::ADMIN_BACKUP,
            own,
        ))
        .unwrap();
    let mut out = Vec::new();
    let summary = store
        .backup_leaving_out(&mut out, 1_764_000_120_000, &audit::records_only_a_read)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    same_as_doc("backup-example", text.trim_end_matches('\n'));
    assert_ne!(summary.digest, summary.content_digest);
    // Without the backup's own entry the content digest is unchanged.
    let (_dir2, before) = example_store();
    assert_eq!(
        hex::encode(before.content_digest(&audit::records_only_a_read).unwrap()),
        summary.content_digest
    );
    // And the document's file restores, its digest checked by the server.
    let target = tempfile::tempdir().unwrap();
    let doc = block("backup-example") + "\n";
    let restored = Store::restore_from(target.path(), doc.as_bytes()).unwrap();
    assert_eq!(restored.digest, summary.digest);
}

fn example_page() -> pager::PageRequest {
    let settings = PagerSettings {
        format: PagerFormat::Generic,
        url: "https://pager.example.org/peerhub".into(),
        key: None,
    };
    let summary = AlertSummary {
        id: 42,
        severity: Severity::Urgent,
        group: gid("tuesday"),
        group_name: "Tuesday drop-in".into(),
        level: 1,
        deadline_ms: Some(1_764_000_300_000),
        created_ms: 1_764_000_120_000,
        to: vec![Identity::from_seed([7; 32]).key()],
    };
    pager::request(
        &settings,
        &seed(9),
        PageEvent::Trigger,
        &summary,
        "https://hub.example.org/#escalation=42",
        1_764_000_210_000,
    )
}

#[test]
fn the_pager_worked_example_is_what_the_server_sends() {
    let page = example_page();
    same_as_doc("pager-body", std::str::from_utf8(&page.body).unwrap());
    let headers: Vec<String> = page
        .headers
        .iter()
        .filter(|(name, _)| name.starts_with("x-peerhub"))
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    same_as_doc("pager-headers", &headers.join("\n"));
}

#[test]
fn the_default_risk_phrases_and_unicode_versions_are_the_documented_ones() {
    let doc: Vec<String> = block("risk-phrases").lines().map(str::to_string).collect();
    let code: Vec<String> = peerhub_server::risk_phrases::DEFAULT_RISK_PHRASES
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(doc, code);
    let (a, b, c) = peerhub_protocol::names::NFKC_UNICODE_VERSION;
    let (d, e, f) = peerhub_protocol::names::CONFUSABLES_UNICODE_VERSION;
    same_as_doc(
        "unicode-version",
        &format!("NFKC: Unicode {a}.{b}.{c}\nconfusable skeleton: Unicode {d}.{e}.{f}"),
    );
}

// ---------------------------------------------------------------------------------
// The independent checkers

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `python3 tests/independent/check.py ARGS...` (standard library only).
async fn checker(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(repo().join("tests/independent/check.py"))
            .args(&args)
            .output()
            .expect("python3 runs (the independent checkers need it)")
    })
    .await
    .unwrap()
}

async fn peerhub(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(&args)
            .env_remove("PEERHUB_CONFIG")
            .output()
            .expect("run peerhub")
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[tokio::test]
async fn the_independent_checker_recomputes_every_worked_example_from_the_document() {
    let out = checker(vec!["formats".into(), s(&repo().join("docs/FORMATS.md"))]).await;
    assert!(out.status.success(), "{}", text(&out));
}

async fn backup(data: &Path, file: &Path) -> serde_json::Value {
    let out = peerhub(&["backup", "--data", &s(data), "--out", &s(file)]).await;
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_real_runs_chain_and_backups_check_out_independently_and_tampering_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hub = ProcessServer::start(&data, &[]).await;
    let mut admin = hub.admin().await;
    assert!(matches!(
        admin.create_group("circle", "Circle").await,
        ServerFrame::GroupCreated { .. }
    ));
    let token = admin.invite(InviteRole::Facilitator, Some("circle")).await;
    let (_fac, _fac_client) = hub.redeemed(&token).await;
    let me = Identity::generate();
    let mut client = Client::connect(hub.addr).await;
    client.login(&me).await;
    client.join("circle", "River", None).await;
    client.post("circle", "hello").await;

    // Two backups with nothing but the backups between: different digests (each
    // holds its own entry), the same content digest.
    let one = dir.path().join("one.backup");
    let two = dir.path().join("two.backup");
    let first = backup(&data, &one).await;
    let second = backup(&data, &two).await;
    assert_ne!(first["digest"], second["digest"]);
    assert_eq!(first["content_digest"], second["content_digest"]);
    // A post between: the content digest moves.
    client.post("circle", "something changed").await;
    let three = dir.path().join("three.backup");
    let third = backup(&data, &three).await;
    assert_ne!(third["content_digest"], second["content_digest"]);

    // The independent checker agrees with the trailer's digests and with the
    // server's own chain verification.
    for (file, report) in [(&one, &first), (&three, &third)] {
        let out = checker(vec!["backup".into(), s(file)]).await;
        assert!(out.status.success(), "{}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(report["digest"].as_str().unwrap())
                && said.contains(report["content_digest"].as_str().unwrap()),
            "{said} / {report}"
        );
        let out = checker(vec!["chain".into(), s(file)]).await;
        assert!(out.status.success(), "{}", text(&out));
    }
    let chain = checker(vec!["chain".into(), s(&three)]).await;
    let chain = String::from_utf8_lossy(&chain.stdout).into_owned();
    drop(client);
    drop(admin);
    hub.signal("TERM");
    let mut hub = hub;
    hub.wait().await;
    let verified = peerhub(&["audit", "verify", "--data", &s(&data)]).await;
    assert!(verified.status.success(), "{}", text(&verified));
    let last_hash = text(&verified)
        .split("last hash ")
        .nth(1)
        .map(|h| h.trim().to_string())
        .expect("the last hash is printed");
    assert!(
        chain.contains(&last_hash),
        "independent: {chain} / peerhub: {last_hash}"
    );

    // Tampering: one changed byte in an audit entry breaks the chain (and the
    // backup's digest); the checker says so and fails.
    let file = std::fs::read_to_string(&three).unwrap();
    let tampered_file = dir.path().join("tampered.backup");
    let mut lines: Vec<String> = file.lines().map(str::to_string).collect();
    let at = lines
        .iter()
        .position(|l| l.contains(r#""t":"seq_audit""#))
        .expect("an audit line");
    let mut line: serde_json::Value = serde_json::from_str(&lines[at]).unwrap();
    let mut value = peerhub_protocol::encoding::unb64(line["v"].as_str().unwrap()).unwrap();
    let body_at = value.len() - 3;
    value[body_at] ^= 0x01;
    line["v"] = peerhub_protocol::encoding::b64(&value).into();
    lines[at] = line.to_string();
    std::fs::write(&tampered_file, lines.join("\n") + "\n").unwrap();
    let out = checker(vec!["chain".into(), s(&tampered_file)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("BROKEN"), "{}", text(&out));
    let out = checker(vec!["backup".into(), s(&tampered_file)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test]
async fn real_pages_verify_independently_and_carry_no_names_keys_or_content() {
    let mut receiver = HttpReceiver::start(|_, _| 200).await;
    let (seen, _scene, _id) =
        crate::alerting::page_through(PagerFormat::Generic, &mut receiver, "/page").await;
    let dir = tempfile::tempdir().unwrap();
    for (n, request) in seen.iter().enumerate() {
        let body = dir.path().join(format!("page{n}.json"));
        std::fs::write(&body, &request.body).unwrap();
        let key = request.header("x-peerhub-key").unwrap().to_string();
        let sig = request.header("x-peerhub-signature").unwrap().to_string();
        let out = checker(vec!["pager".into(), s(&body), key.clone(), sig.clone()]).await;
        assert!(out.status.success(), "{}", text(&out));
        // A changed body, or another key's signature, is refused.
        let mut changed = request.body.clone();
        let last = changed.len() - 2;
        changed[last] ^= 0x01;
        std::fs::write(&body, &changed).unwrap();
        let out = checker(vec!["pager".into(), s(&body), key, sig]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    }
}
