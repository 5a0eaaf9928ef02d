//! People's data rights: `erase::erase_key` on a stopped server's folder that the
//! real server filled over the wire erases one person and leaves everyone else's
//! data as it was; the server then serves the folder again with tombstones.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::{ControlAction, FlagPayload, ReportPayload};
use peerhub_protocol::{ClientFrame, PublicKey, ServerFrame, SignedEnvelope};
use peerhub_server::audit::{self, AuditLog};
use peerhub_server::erase::{erase_key, ERASED_NAME, TOMBSTONE_REASON};
use peerhub_server::export::export_key;
use peerhub_server::store::Store;
use peerhub_tests::identity::gid;
use peerhub_tests::Identity;
use peerhub_tests::{Client, ProcessServer, TestServer};

const A_NAME: &str = "Wren Ashdown";
const B_NAME: &str = "Bramblewick";
const A_MAIN: &str = "Wren here: the week was long and heavy";
const A_PRIVATE: &str = "Wren to Jo only: I am not sleeping";
const A_FLAG_NOTE: &str = "Wren's own flag: I need someone tonight";
const B_MAIN: &str = "Bramble speaking: my own private story";
const B_REPORT: &str = "Bramble reports: that worried me";
const FAC_PRIVATE: &str = "Jo to Wren: thank you for telling me";
const RECORD_NOTE: &str = "Jo's note: talked about sleep";
const RECORD_REPLY: &str = "Wren's words: the walk helped";
const EXPORT_MS: u64 = 1_800_000_000_000;

async fn request(
    client: &mut Client,
    frame: impl FnOnce(Option<u64>, SignedEnvelope) -> ClientFrame,
    env: SignedEnvelope,
) -> ServerFrame {
    client.request(|id| frame(id, env)).await
}

async fn private(client: &mut Client, env: SignedEnvelope) {
    let reply = request(
        client,
        |id, env| ClientFrame::Post {
            id,
            group: gid("circle"),
            env,
        },
        env,
    )
    .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
}

async fn record(client: &mut Client, env: SignedEnvelope) -> u64 {
    match request(
        client,
        |id, env| ClientFrame::Record {
            id,
            group: gid("circle"),
            env,
        },
        env,
    )
    .await
    {
        ServerFrame::Records { records, .. } => records[0].id,
        other => panic!("record refused: {other:?}"),
    }
}

fn flag_env(me: &Identity, about: PublicKey, note: &str) -> SignedEnvelope {
    me.signed(Kind::Flag, |counter, ts| FlagPayload {
        group: gid("circle"),
        about,
        seq: None,
        severity: Severity::Concern,
        consent: Consent::Own,
        reason: None,
        withhold_notice: None,
        note: Some(note.into()),
        counter,
        ts,
    })
}

/// Trees holding `text`, other than the escalations kept for safeguarding.
fn found_outside_escalations(store: &Store, text: &str) -> Vec<&'static str> {
    let mut trees = store.trees_containing(text.as_bytes()).unwrap();
    trees.retain(|t| *t != "escid_escalation");
    trees
}

#[tokio::test]
async fn erasing_one_key_leaves_everyone_elses_data_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let at = data.clone();
    let mut server = TestServer::start_with(move |c| c.data_dir = at).await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let (_, _sup) = server.with_role(Role::Supervisor).await;
    let a_id = Identity::generate();
    let mut a = server.login(&a_id).await;
    a.join("circle", A_NAME, None).await;
    let b_id = Identity::generate();
    let mut b = server.login(&b_id).await;
    b.join("circle", B_NAME, None).await;
    let (a_key, b_key, fac_key) = (a_id.key(), b_id.key(), fac_id.key());

    // A and B talk in the main channel; A and the facilitator privately.
    let a_seq = a.post("circle", A_MAIN).await;
    let b_seq = b.post("circle", B_MAIN).await;
    private(&mut a, a_id.private_post("circle", fac_key, A_PRIVATE)).await;
    private(&mut fac, fac_id.private_post("circle", a_key, FAC_PRIVATE)).await;
    // A record about A, with A's reply.
    let note = fac_id.record("circle", Some(a_key), None, RECORD_NOTE);
    let record_id = record(&mut fac, note).await;
    let reply = a_id.record("circle", None, Some(record_id), RECORD_REPLY);
    record(&mut a, reply).await;
    // A flags themself; B reports A's message.
    let flagged = request(
        &mut a,
        |id, env| ClientFrame::Flag {
            id,
            group: gid("circle"),
            env,
        },
        flag_env(&a_id, a_key, A_FLAG_NOTE),
    )
    .await;
    assert!(
        matches!(flagged, ServerFrame::Flagged { .. }),
        "{flagged:?}"
    );
    let report = b_id.signed(Kind::Report, |counter, ts| ReportPayload {
        group: gid("circle"),
        seq: a_seq,
        reason: B_REPORT.into(),
        counter,
        ts,
    });
    let reported = request(
        &mut b,
        |id, env| ClientFrame::Report {
            id,
            group: gid("circle"),
            env,
        },
        report,
    )
    .await;
    assert!(matches!(reported, ServerFrame::Ok { .. }), "{reported:?}");

    let b_before = export_key(&server.hub().store, &b_key, EXPORT_MS)
        .unwrap()
        .to_string();
    let fac_before = export_key(&server.hub().store, &fac_key, EXPORT_MS)
        .unwrap()
        .to_string();
    drop((a, b, fac));
    server.shutdown().await;

    // Offline: while a server ran, the folder could not even be opened.
    let store = Store::open(&data).expect("the stopped server's folder");
    let log = AuditLog::open(store.clone()).unwrap();
    let report = erase_key(&store, &log, &a_key, EXPORT_MS).expect("erased");
    store.flush().unwrap();
    assert!(report.events >= 2, "{report:?}");
    assert_eq!(report.memberships, 1);
    assert_eq!(report.record_entries, 1);

    // A's export: no messages, no name, none of A's words.
    let a_doc = export_key(&store, &a_key, EXPORT_MS).unwrap();
    let a_text = a_doc.to_string();
    assert_eq!(a_doc["messages"], serde_json::json!([]));
    assert_eq!(
        a_doc["memberships"][0]["display_names"],
        serde_json::json!([ERASED_NAME])
    );
    assert_eq!(a_doc["memberships"][0]["join"], serde_json::Value::Null);
    assert_eq!(a_doc["audit"], serde_json::json!([]));
    for gone in [A_NAME, A_MAIN, A_PRIVATE, RECORD_REPLY] {
        assert!(!a_text.contains(gone), "A's export still holds {gone:?}");
    }

    // Everyone else's data is exactly as it was.
    let b_after = export_key(&store, &b_key, EXPORT_MS).unwrap();
    assert_eq!(b_after.to_string(), b_before, "B's export changed");
    assert_eq!(
        export_key(&store, &fac_key, EXPORT_MS).unwrap().to_string(),
        fac_before,
        "the facilitator's export changed"
    );
    for message in b_after["messages"].as_array().unwrap() {
        let env: SignedEnvelope = serde_json::from_value(message["envelope"].clone()).unwrap();
        env.verify().expect("B's signature still verifies");
    }

    // A's words and name are nowhere but in the escalation kept for safeguarding
    // (its flag and context), which retention deletes.
    for gone in [A_NAME, A_MAIN, A_PRIVATE, RECORD_REPLY, A_FLAG_NOTE] {
        assert_eq!(
            found_outside_escalations(&store, gone),
            Vec::<&str>::new(),
            "{gone:?} left"
        );
    }
    for kept in [B_MAIN, B_REPORT, FAC_PRIVATE, RECORD_NOTE] {
        assert!(
            !store.trees_containing(kept.as_bytes()).unwrap().is_empty(),
            "{kept:?} was lost"
        );
    }

    // The chain verifies, counts the erased envelopes, and names A by pseudonym.
    let verified = audit::verify(&store).expect("the rewritten chain verifies");
    assert!(verified.erased_envelopes >= 1, "{verified}");
    assert_eq!(verified.erased_envelopes, report.audit.envelopes_erased);
    let chain: Vec<_> = audit::entries(&store).map(Result::unwrap).collect();
    assert!(chain.iter().all(|e| e.subject != Some(a_key)));
    assert!(chain
        .iter()
        .all(|e| e.envelopes.iter().all(|env| env.key != a_key)));
    assert!(chain
        .iter()
        .any(|e| e.subject_pseudonym.as_ref() == Some(&report.pseudonym)));
    let last = chain.last().unwrap();
    assert_eq!(last.action, audit::action::ADMIN_ERASE);
    assert_eq!(last.subject, None);
    assert!(!last.envelopes[0].payload.contains(&a_key.to_b64()));
    drop((log, store));

    // Served again: gap-free history, A's message a tombstone, B's intact.
    let at = data.clone();
    let server = TestServer::start_with(move |c| c.data_dir = at).await;
    let mut b = server.login(&b_id).await;
    let joined = b.join("circle", B_NAME, None).await;
    let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=joined.head).collect::<Vec<_>>(), "gap-free");
    let erased = &joined.history[(a_seq - 1) as usize];
    assert_eq!(erased.env, None);
    assert_eq!(
        erased.redacted.as_ref().map(|r| r.reason.as_str()),
        Some(TOMBSTONE_REASON)
    );
    assert_eq!(joined.history[(b_seq - 1) as usize].verified_body(), B_MAIN);
    assert!(joined
        .members
        .iter()
        .all(|m| m.key != a_key && m.name != A_NAME));
    // A facilitator sees the tombstone too, never the text.
    let mut fac = server.login(&fac_id).await;
    let joined = fac.join("circle", "Jo", None).await;
    let erased = &joined.history[(a_seq - 1) as usize];
    assert_eq!((erased.env.as_ref(), erased.note.as_ref()), (None, None));
    assert!(erased.redacted.is_some());
    server.shutdown().await;
}

// Markers for the byte scans. The names carry a non-ASCII letter: the scan looks for
// each text as UTF-8, as JSON with `\uXXXX` escapes, and as UTF-16LE/BE.
const W_NAME: &str = "Quillwrén";
const W_MAIN: &str = "qw-main-disclosure-5e1c he hits me when he drinks";
const W_PRIVATE: &str = "qw-private-words-8b2d I sleep in the car";
const W_RECORD: &str = "qw-record-words-c4a9 the refuge number helped";
const V_NAME: &str = "Vetchmarrow";
const V_MAIN: &str = "vm-main-kept-2f07 my own words stay";
const J_PRIVATE: &str = "jo-private-kept-91ab thank you for telling me";

/// Runs the real `peerhub` binary with `args`; returns (exit code, stdout, stderr).
fn peerhub(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(peerhub_tests::process::binary())
        .args(args)
        .output()
        .expect("run peerhub");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 14, item 4: after `peerhub erase` on a stopped hub, no file in the data
/// folder holds the person's name or words, in any encoding, while everyone
/// else's words are still there and the audit chain verifies.
#[tokio::test]
async fn after_peerhub_erase_no_file_in_the_data_folder_holds_the_persons_words() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let at = data.clone();
    let mut server = TestServer::start_with(move |c| c.data_dir = at).await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let w_id = Identity::generate();
    let mut w = server.login(&w_id).await;
    w.join("circle", W_NAME, None).await;
    let v_id = Identity::generate();
    let mut v = server.login(&v_id).await;
    v.join("circle", V_NAME, None).await;
    let (w_key, fac_key) = (w_id.key(), fac_id.key());
    w.post("circle", W_MAIN).await;
    let v_seq = v.post("circle", V_MAIN).await;
    private(&mut w, w_id.private_post("circle", fac_key, W_PRIVATE)).await;
    private(&mut fac, fac_id.private_post("circle", w_key, J_PRIVATE)).await;
    let note = fac_id.record("circle", Some(w_key), None, RECORD_NOTE);
    let record_id = record(&mut fac, note).await;
    record(
        &mut w,
        w_id.record("circle", None, Some(record_id), W_RECORD),
    )
    .await;
    drop((w, v, fac));
    server.shutdown().await;

    let data_arg = data.to_str().unwrap();
    for text in [W_NAME, W_MAIN, W_PRIVATE, W_RECORD] {
        assert!(
            !peerhub_tests::scan::files_holding(&data, text).is_empty(),
            "precondition: the folder holds {text:?} before the erasure"
        );
    }
    let (code, stdout, stderr) = peerhub(&["erase", "--data", data_arg, "--key", &w_key.to_b64()]);
    assert_eq!(code, 0, "peerhub erase: {stdout}{stderr}");

    for text in [W_NAME, W_MAIN, W_PRIVATE, W_RECORD] {
        assert_eq!(
            peerhub_tests::scan::files_holding(&data, text),
            Vec::new(),
            "{text:?} is still in the data folder after the erasure"
        );
    }
    for kept in [V_NAME, V_MAIN, J_PRIVATE, RECORD_NOTE] {
        assert!(
            !peerhub_tests::scan::files_holding(&data, kept).is_empty(),
            "{kept:?} was lost"
        );
    }
    let (code, stdout, stderr) = peerhub(&["audit", "verify", "--data", data_arg]);
    assert_eq!(code, 0, "audit verify: {stdout}{stderr}");

    // Served again: everyone else's words are there and verify.
    let at = data.clone();
    let server = TestServer::start_with(move |c| c.data_dir = at).await;
    let mut v = server.login(&v_id).await;
    let joined = v.join("circle", V_NAME, None).await;
    assert_eq!(joined.history[(v_seq - 1) as usize].verified_body(), V_MAIN);
    assert!(joined.members.iter().all(|m| m.name != W_NAME));
    server.shutdown().await;
}

const P_NAME: &str = "Marrowlärk";
const P_MAIN: &str = "ml-main-words-3d8e I left the house last night";
const P_PRIVATE: &str = "ml-private-words-a61f please do not tell anyone";
const R_REASON: &str = "rr-redact-reason-77c2 quoted the address";
const Q_NAME: &str = "Thistledown";
const Q_MAIN: &str = "td-kept-words-0b5a in the other group";

/// Waits (up to 30 s) until no file under `data` holds any of `texts`; returns
/// what still held them if that never happened.
async fn until_gone(data: &std::path::Path, texts: &[&str]) -> Vec<(String, Vec<String>)> {
    let left = || {
        texts
            .iter()
            .map(|t| {
                let files = peerhub_tests::scan::files_holding(data, t);
                (
                    t.to_string(),
                    files
                        .iter()
                        .map(|(p, n)| format!("{} ×{n}", p.display()))
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, files)| !files.is_empty())
            .collect::<Vec<_>>()
    };
    for _ in 0..300 {
        if left().is_empty() {
            return Vec::new();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    left()
}

/// Issue 14, item 5: when an ephemeral group's session ends, who attended and as
/// whom goes — the export no longer lists the name, the store holds neither the
/// name nor the redaction's reason, and no file in the data folder holds the
/// words — while the hub runs and after it stops; another group's data stays and
/// the audit chain verifies.
#[tokio::test]
async fn an_ephemeral_sessions_end_leaves_none_of_its_words_or_names_in_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let at = data.clone();
    let mut server = TestServer::start_with(move |c| c.data_dir = at).await;
    server
        .create_group_with("dropin", |g| {
            g.waiting_room = Some(false);
            g.retention.ephemeral = true;
        })
        .await;
    server
        .create_group_with("steady", |g| g.waiting_room = Some(false))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("dropin", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("dropin", P_NAME, None).await;
    let q_id = Identity::generate();
    let mut q = server.login(&q_id).await;
    q.join("steady", Q_NAME, None).await;
    let q_seq = q.post("steady", Q_MAIN).await;
    let (p_key, fac_key) = (p_id.key(), fac_id.key());
    let said = p.post("dropin", P_MAIN).await;
    let reply = request(
        &mut p,
        |id, env| ClientFrame::Post {
            id,
            group: gid("dropin"),
            env,
        },
        p_id.private_post("dropin", fac_key, P_PRIVATE),
    )
    .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    let redact = ControlAction::Redact {
        seq: said,
        reason: R_REASON.into(),
    };
    let reply = fac.control("dropin", redact).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    server.hub().store.flush().unwrap();
    for text in [P_NAME, P_MAIN, P_PRIVATE, R_REASON] {
        assert!(
            !peerhub_tests::scan::files_holding(&data, text).is_empty(),
            "precondition: the folder holds {text:?} during the session"
        );
    }

    let reply = fac.control("dropin", ControlAction::EndSession).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");

    // The hub still runs: the export and the live store hold no name, no reason.
    let store = server.hub().store.clone();
    let export = export_key(&store, &p_key, EXPORT_MS).unwrap().to_string();
    assert!(
        !export.contains(P_NAME),
        "the export lists the name: {export}"
    );
    for text in [P_NAME, P_MAIN, P_PRIVATE, R_REASON] {
        assert_eq!(
            store.trees_containing(text.as_bytes()).unwrap(),
            Vec::<&str>::new(),
            "the live store holds {text:?}"
        );
    }
    // ... and, once the rewrite after the session's end is done, no file does.
    assert_eq!(
        until_gone(&data, &[P_NAME, P_MAIN, P_PRIVATE, R_REASON]).await,
        Vec::<(String, Vec<String>)>::new(),
        "left in the data folder while the hub runs"
    );
    assert!(!peerhub_tests::scan::files_holding(&data, Q_MAIN).is_empty());
    audit::verify(&store).expect("the chain verifies");
    let chain: Vec<_> = audit::entries(&store).map(Result::unwrap).collect();
    assert!(chain.iter().all(|e| e.subject != Some(p_key)));
    assert!(chain.iter().any(|e| e.actor() == Some(fac_key)));

    // Nothing acknowledged is lost, and the hub takes new work after the rewrite.
    let more = q.post("steady", "td-after-the-rewrite").await;
    assert!(more > q_seq);
    let reply = fac.control("dropin", ControlAction::OpenSession).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    drop((p, q, fac, store));
    server.shutdown().await;

    // Stopped: still nothing, others' words kept, the chain verifies.
    for text in [P_NAME, P_MAIN, P_PRIVATE, R_REASON] {
        assert_eq!(
            peerhub_tests::scan::files_holding(&data, text),
            Vec::new(),
            "{text:?} is in the data folder after the hub stopped"
        );
    }
    assert!(!peerhub_tests::scan::files_holding(&data, "td-after-the-rewrite").is_empty());
    let (code, stdout, stderr) = peerhub(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "audit verify: {stdout}{stderr}");
    let at = data.clone();
    let server = TestServer::start_with(move |c| c.data_dir = at).await;
    let mut q = server.login(&q_id).await;
    let joined = q.join("steady", Q_NAME, None).await;
    assert_eq!(joined.history[(q_seq - 1) as usize].verified_body(), Q_MAIN);
    server.shutdown().await;
}

/// Copies the folder `from` to `to`, recursively (the control socket is skipped).
fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_folder(&entry.path(), &to.join(entry.file_name()));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The compaction after `peerhub erase` is crash-safe: the real binary dies
/// (abort, no destructors, as under kill -9) at each step of it; the next open
/// finds one whole store holding everything acknowledged — the erasure too, which
/// was flushed before — and leaves no half-made folder; erasing again then
/// removes the bytes.
#[tokio::test]
async fn a_crash_at_any_step_of_the_rewrite_leaves_a_whole_store() {
    let dir = tempfile::tempdir().unwrap();
    let filled = dir.path().join("filled");
    let at = filled.clone();
    let mut server = TestServer::start_with(move |c| c.data_dir = at).await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let w_id = Identity::generate();
    let mut w = server.login(&w_id).await;
    w.join("circle", W_NAME, None).await;
    let v_id = Identity::generate();
    let mut v = server.login(&v_id).await;
    v.join("circle", V_NAME, None).await;
    let w_seq = w.post("circle", W_MAIN).await;
    let v_seq = v.post("circle", V_MAIN).await;
    drop((w, v));
    server.shutdown().await;

    for point in ["built", "marked", "moved_old", "swapped", "unmarked"] {
        let data = dir.path().join(point);
        copy_folder(&filled, &data);
        let data_arg = data.to_str().unwrap();
        let out = std::process::Command::new(peerhub_tests::process::binary())
            .args(["erase", "--data", data_arg, "--key", &w_id.key().to_b64()])
            .env("TEST_PEERHUB_COMPACT_CRASH_AT", point)
            .output()
            .expect("run peerhub erase");
        assert!(
            !out.status.success(),
            "{point}: the process should have died part-way: {out:?}"
        );

        // The next open recovers: the chain verifies, one store, no leftovers.
        let (code, stdout, stderr) = peerhub(&["audit", "verify", "--data", data_arg]);
        assert_eq!(code, 0, "{point}: audit verify: {stdout}{stderr}");
        let mut names: Vec<String> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "admin.sock" && n != "store.lock" && n != "store.mark")
            .collect();
        names.sort();
        assert_eq!(names, vec!["db".to_string()], "{point}: leftovers");

        // Everything acknowledged is there: V's words verify, W's are erased.
        let at = data.clone();
        let server = TestServer::start_with(move |c| c.data_dir = at).await;
        let mut v = server.login(&v_id).await;
        let joined = v.join("circle", V_NAME, None).await;
        assert_eq!(
            joined.history[(v_seq - 1) as usize].verified_body(),
            V_MAIN,
            "{point}"
        );
        let erased = &joined.history[(w_seq - 1) as usize];
        assert_eq!(erased.env, None, "{point}: the erasure was kept");
        assert!(joined.members.iter().all(|m| m.name != W_NAME), "{point}");
        drop(v);
        server.shutdown().await;

        // Erasing again finishes the job.
        let (code, stdout, stderr) =
            peerhub(&["erase", "--data", data_arg, "--key", &w_id.key().to_b64()]);
        assert_eq!(code, 0, "{point}: {stdout}{stderr}");
        for text in [W_NAME, W_MAIN] {
            assert_eq!(
                peerhub_tests::scan::files_holding(&data, text),
                Vec::new(),
                "{point}: {text:?} left"
            );
        }
    }
}

/// The rewrite after an ephemeral session's end on a running hub is crash-safe
/// and loses nothing acknowledged: the real binary dies (abort, as under kill -9)
/// in the middle of it — the live folder moved aside, the new one not yet in
/// place — while another group's member keeps posting. The next start finishes
/// the swap; every post that was acknowledged is there and verifies, the session's
/// words and names are in no file, and the chain verifies.
#[tokio::test]
async fn a_running_hub_killed_during_the_rewrite_after_a_session_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_string();
    let server = ProcessServer::start_env(
        &data,
        &[],
        &[
            ("TEST_PEERHUB_COMPACT_CRASH_AT", "moved_old"),
            ("PEERHUB_STORE_COMPACT_DELAY_SECS", "0"),
        ],
    )
    .await;
    let _admin = server.admin().await;
    for (id, extra) in [("dropin", Some("--ephemeral")), ("steady", None)] {
        let mut args = vec![
            "group",
            "create",
            "--data",
            &data_arg,
            "--id",
            id,
            "--title",
            "T",
            "--no-waiting-room",
        ];
        args.extend(extra);
        let (code, stdout, stderr) = peerhub(&args);
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    let (code, token, stderr) = peerhub(&[
        "invite",
        "--data",
        &data_arg,
        "--role",
        "facilitator",
        "--group",
        "dropin",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (_, mut fac) = server.redeemed(token.trim()).await;
    fac.join("dropin", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = Client::connect(server.addr).await;
    p.login(&p_id).await;
    p.join("dropin", P_NAME, None).await;
    p.post("dropin", P_MAIN).await;
    let q_id = Identity::generate();
    let mut q = Client::connect(server.addr).await;
    q.login(&q_id).await;
    q.join("steady", Q_NAME, None).await;

    // Q posts until the hub dies, noting every acknowledged seq.
    let poster = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..10_000u32 {
            let body = format!("td-post-{n}");
            let env = q.identity.clone().unwrap().post("steady", &body);
            match q.try_post_env("steady", env).await {
                Ok(ServerFrame::Ack { seq, .. }) => acked.push((seq, body)),
                _ => break,
            }
        }
        acked
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let reply = fac.control("dropin", ControlAction::EndSession).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    let mut server = server;
    let status = server.wait().await;
    assert!(!status.success(), "the hub died in the rewrite: {status:?}");
    let acked = poster.await.unwrap();
    assert!(!acked.is_empty(), "Q's posts were acknowledged before");

    let server = ProcessServer::start(&data, &[]).await;
    let mut q = Client::connect(server.addr).await;
    q.login(&q_id).await;
    let joined = q.join("steady", Q_NAME, Some(0)).await;
    for (seq, body) in &acked {
        let event = joined
            .history
            .iter()
            .find(|e| e.seq == *seq)
            .unwrap_or_else(|| panic!("acknowledged seq {seq} lost"));
        assert_eq!(&event.verified_body(), body);
    }
    drop(q);
    server.signal("TERM");
    let mut server = server;
    server.wait().await;
    for text in [P_NAME, P_MAIN] {
        assert_eq!(
            peerhub_tests::scan::files_holding(&data, text),
            Vec::new(),
            "{text:?} is in the data folder"
        );
    }
    let (code, stdout, stderr) = peerhub(&["audit", "verify", "--data", &data_arg]);
    assert_eq!(code, 0, "audit verify: {stdout}{stderr}");
}

/// The rewrite after an ephemeral session's end waits `store.compact_delay_secs`
/// (session ends within it share one), is not done by the group's task, and is
/// still owed after a restart.
#[tokio::test]
async fn the_rewrite_after_an_ephemeral_session_waits_its_delay_and_survives_a_restart() {
    const WORDS: &str = "Tamsin's words for this evening only";
    let mut server =
        TestServer::start_with(|c| c.compact_delay = std::time::Duration::from_secs(3_600)).await;
    server
        .create_group_with("dropin", |g| {
            g.waiting_room = Some(false);
            g.retention.ephemeral = true;
        })
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("dropin", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("dropin", "Tamsin", None).await;
    p.post("dropin", WORDS).await;
    let reply = fac.control("dropin", ControlAction::EndSession).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    let data = server.data_dir().to_path_buf();
    let owed = server.hub().store.compaction_due_since().unwrap();
    assert!(owed.is_some(), "the end owes a rewrite");
    // Not before its time: the group goes on at once, the bytes are still there.
    let reply = fac.control("dropin", ControlAction::OpenSession).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    server.hub().store.flush().unwrap();
    assert!(!peerhub_tests::scan::files_holding(&data, WORDS).is_empty());
    // Owed across a restart, and done once the delay has passed.
    drop((p, fac));
    let server = server.restart().await;
    assert_eq!(server.hub().store.compaction_due_since().unwrap(), owed);
    server.hub().clock.advance(3_600 * 1_000);
    assert_eq!(until_gone(&data, &[WORDS]).await, Vec::new());
    assert_eq!(server.hub().store.compaction_due_since().unwrap(), None);
}
