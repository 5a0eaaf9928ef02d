//! People's data rights: `export::export_key` on a store the real server filled over
//! the wire holds everything about one key and nothing about anyone else.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::frame::{Channel, Role};
use peerhub_protocol::payload::{
    ControlAction, EscalationActPayload, EscalationAction, FlagPayload, ReportPayload,
    StepOutPayload,
};
use peerhub_protocol::{ClientFrame, PublicKey, ServerFrame, SignedEnvelope};
use peerhub_server::export::export_key;
use peerhub_tests::identity::gid;
use peerhub_tests::{now_ms, Client, Identity, TestServer};
use serde_json::Value;

const A_NAME: &str = "Wren Ashdown";
const B_NAME: &str = "Bramblewick";
const A_MAIN: &str = "Wren here: the week was long and heavy";
const A_REDACTED: &str = "Wren again: something that names a neighbour";
const A_PRIVATE: &str = "Wren to Jo only: I am not sleeping";
const A_REPORT: &str = "Wren reports: that felt unkind";
const A_FLAG_NOTE: &str = "Wren's own flag: I need someone tonight";
const B_MAIN: &str = "Bramble speaking: my own private story";
const B_FLAG_NOTE: &str = "Bramble's worry: Wren said goodbye oddly";
const FAC_PRIVATE: &str = "Jo to Wren: thank you for telling me";
const RECORD_NOTE: &str = "Jo's note: Wren talked about sleep";
const RECORD_REPLY: &str = "Wren's words: the walk helped";
const REDACT_REASON: &str = "names someone outside the group";
const OUTCOME: &str = "talked on the phone; safe tonight";

async fn signed_request(
    client: &mut Client,
    frame: impl FnOnce(Option<u64>, SignedEnvelope) -> ClientFrame,
    env: SignedEnvelope,
) -> ServerFrame {
    client.request(|id| frame(id, env)).await
}

fn flag_env(me: &Identity, about: PublicKey, severity: Severity, note: &str) -> SignedEnvelope {
    let consent = if about == me.key() {
        Consent::Own
    } else {
        Consent::Given
    };
    me.signed(Kind::Flag, |counter, ts| FlagPayload {
        group: gid("circle"),
        about,
        seq: None,
        severity,
        consent,
        reason: None,
        withhold_notice: None,
        note: Some(note.into()),
        counter,
        ts,
    })
}

/// Raises a flag; returns the flagger's reference to its escalation.
async fn flag(client: &mut Client, env: SignedEnvelope) -> String {
    let reply = signed_request(
        client,
        |id, env| ClientFrame::Flag {
            id,
            group: gid("circle"),
            env,
        },
        env,
    )
    .await;
    match reply {
        ServerFrame::Flagged { reference, .. } => reference,
        other => panic!("flag refused: {other:?}"),
    }
}

async fn act(client: &mut Client, escalation: u64, action: EscalationAction) {
    let me = client.identity.clone().unwrap();
    let env = me.signed(Kind::Escalation, |counter, ts| EscalationActPayload {
        escalation,
        action,
        counter,
        ts,
    });
    let reply = client
        .request(|id| ClientFrame::Escalation { id, env })
        .await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
}

async fn record(client: &mut Client, env: SignedEnvelope) -> u64 {
    let reply = signed_request(
        client,
        |id, env| ClientFrame::Record {
            id,
            group: gid("circle"),
            env,
        },
        env,
    )
    .await;
    match reply {
        ServerFrame::Records { records, .. } => records[0].id,
        other => panic!("record refused: {other:?}"),
    }
}

#[track_caller]
fn acked(frame: &ServerFrame) -> (Channel, u64) {
    match frame {
        ServerFrame::Ack { channel, seq, .. } => (*channel, *seq),
        other => panic!("expected ack, got {other:?}"),
    }
}

#[track_caller]
fn assert_ok(frame: &ServerFrame) {
    assert!(matches!(frame, ServerFrame::Ok { .. }), "{frame:?}");
}

/// The envelopes of a document's `messages`, each checked against its signature.
#[track_caller]
fn verified_messages(doc: &Value) -> Vec<(Value, SignedEnvelope)> {
    doc["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let env: SignedEnvelope =
                serde_json::from_value(m["envelope"].clone()).expect("a stored envelope");
            env.verify().expect("the person's own signature verifies");
            (m.clone(), env)
        })
        .collect()
}

fn body(env: &SignedEnvelope) -> String {
    let payload: Value = serde_json::from_str(&env.payload).unwrap();
    payload["body"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_persons_export_holds_their_data_and_nothing_about_anyone_else() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("circle", "Jo", None).await;
    let (_, mut sup) = server.with_role(Role::Supervisor).await;
    let a_id = Identity::generate();
    let mut a = server.login(&a_id).await;
    a.join("circle", A_NAME, None).await;
    let b_id = Identity::generate();
    let mut b = server.login(&b_id).await;
    b.join("circle", B_NAME, None).await;
    let (a_key, b_key, fac_key) = (a_id.key(), b_id.key(), fac_id.key());

    // What A signs that lands in a log, to find again in the export.
    let mut a_logged: Vec<SignedEnvelope> = Vec::new();
    let main = a_id.post("circle", A_MAIN);
    a.post_env("circle", main.clone()).await;
    a_logged.push(main);
    let b_seq = b.post("circle", B_MAIN).await;
    let doomed = a_id.post("circle", A_REDACTED);
    let doomed_seq = a.post_env("circle", doomed.clone()).await;
    a_logged.push(doomed);
    // Privately to the facilitator, and the facilitator's answer.
    let private = a_id.private_post("circle", fac_key, A_PRIVATE);
    let (pair, _) = acked(
        &signed_request(
            &mut a,
            |id, env| ClientFrame::Post {
                id,
                group: gid("circle"),
                env,
            },
            private.clone(),
        )
        .await,
    );
    assert_eq!(pair, Channel::pair(a_key, fac_key));
    a_logged.push(private);
    let answer = fac_id.private_post("circle", a_key, FAC_PRIVATE);
    acked(
        &signed_request(
            &mut fac,
            |id, env| ClientFrame::Post {
                id,
                group: gid("circle"),
                env,
            },
            answer,
        )
        .await,
    );
    // A reports B's message (it goes to the staff channel).
    let report = a_id.signed(Kind::Report, |counter, ts| ReportPayload {
        group: gid("circle"),
        seq: b_seq,
        reason: A_REPORT.into(),
        counter,
        ts,
    });
    assert_ok(
        &signed_request(
            &mut a,
            |id, env| ClientFrame::Report {
                id,
                group: gid("circle"),
                env,
            },
            report.clone(),
        )
        .await,
    );
    a_logged.push(report);
    // The facilitator redacts one of A's messages.
    acked(
        &fac.control(
            "circle",
            ControlAction::Redact {
                seq: doomed_seq,
                reason: REDACT_REASON.into(),
            },
        )
        .await,
    );
    // A record about A, and A's own words in it.
    let note = fac_id.record("circle", Some(a_key), None, RECORD_NOTE);
    let record_id = record(&mut fac, note).await;
    let reply = a_id.record("circle", None, Some(record_id), RECORD_REPLY);
    record(&mut a, reply).await;
    // B flags A (urgent); A flags themself (merged into the same escalation); a
    // supervisor takes it and closes it.
    let b_reference = flag(
        &mut b,
        flag_env(&b_id, a_key, Severity::Urgent, B_FLAG_NOTE),
    )
    .await;
    let own_flag = flag_env(&a_id, a_key, Severity::Concern, A_FLAG_NOTE);
    let a_reference = flag(&mut a, own_flag.clone()).await;
    assert_ne!(
        a_reference, b_reference,
        "each person has their own reference"
    );
    // The supervisor knows it by id, from the pushed summary.
    let pushed = sup
        .recv_matching(|f| {
            matches!(f, ServerFrame::Escalation { escalation } if escalation.about == a_key
                && escalation.counts.flags == 2)
        })
        .await
        .expect("pushed to the supervisor: merged");
    let ServerFrame::Escalation { escalation } = pushed else {
        unreachable!()
    };
    let escalation = escalation.id.expect("supervisors see ids");
    act(&mut sup, escalation, EscalationAction::Ack).await;
    act(
        &mut sup,
        escalation,
        EscalationAction::Resolve {
            outcome: OUTCOME.into(),
        },
    )
    .await;
    // A steps out, and the facilitator mutes A for a while.
    let step_out = a_id.signed(Kind::StepOut, |counter, ts| StepOutPayload {
        group: gid("circle"),
        away: true,
        counter,
        ts,
    });
    assert_ok(
        &signed_request(
            &mut a,
            |id, env| ClientFrame::StepOut {
                id,
                group: gid("circle"),
                env,
            },
            step_out,
        )
        .await,
    );
    acked(
        &fac.control(
            "circle",
            ControlAction::Mute {
                member: a_key,
                minutes: 10,
            },
        )
        .await,
    );

    let store = &server.hub().store;
    let now = now_ms();
    let doc = export_key(store, &a_key, now).expect("export of A");
    let text = doc.to_string();
    assert_eq!(doc["format"], "peerhub-export/1");
    assert_eq!(doc["key"], a_key.to_b64());
    assert_eq!(doc["exported_ms"], now);

    // Nothing of B: not their words, key, name or flag.
    for leaked in [B_MAIN, B_NAME, B_FLAG_NOTE, FAC_PRIVATE] {
        assert!(!text.contains(leaked), "A's export holds {leaked:?}");
    }
    assert!(!text.contains(&b_key.to_b64()), "A's export names B's key");

    // The account: no roles, the counter the hub holds.
    assert_eq!(doc["account"]["roles"], serde_json::json!([]));
    assert_eq!(doc["account"]["first_granted_ms"], Value::Null);
    assert_eq!(doc["account"]["counter"], store.counter(&a_key).unwrap());
    assert!(doc["account"]["counter"].as_u64().unwrap() > 0);

    // Memberships: the one group, under A's name, stepped out and muted.
    let memberships = doc["memberships"].as_array().unwrap();
    assert_eq!(memberships.len(), 1);
    let circle = &memberships[0];
    assert_eq!(circle["group"], "circle");
    assert_eq!(circle["title"], "Test group");
    assert_eq!(circle["display_names"], serde_json::json!([A_NAME]));
    assert_eq!(circle["status"]["away"], true);
    assert!(circle["status"]["muted_until_ms"].as_u64().unwrap() > now);
    assert_eq!(circle["status"]["removed"], Value::Null);
    let join: SignedEnvelope = serde_json::from_value(circle["join"].clone()).unwrap();
    join.verify().unwrap();
    assert_eq!((join.key, join.kind), (a_key, Kind::Join));

    // Messages: exactly what A signed into the logs, every signature A's and good.
    let messages = verified_messages(&doc);
    let got: Vec<&SignedEnvelope> = messages.iter().map(|(_, env)| env).collect();
    assert_eq!(got.len(), a_logged.len(), "{got:?}");
    for env in &a_logged {
        assert!(got.contains(&env), "missing {:?}", env.kind);
    }
    assert!(got.iter().all(|env| env.key == a_key));
    for (meta, env) in &messages {
        let want_channel = match env.kind {
            Kind::Report => "staff",
            _ if body(env) == A_PRIVATE => "pair",
            _ => "main",
        };
        assert_eq!(meta["channel"], want_channel, "{meta}");
        assert_eq!(meta["group"], "circle");
        assert!(meta["seq"].as_u64().unwrap() >= 1 && meta["ts"].as_u64().unwrap() > 0);
        if want_channel == "pair" {
            assert_eq!(
                meta["with"],
                fac_key.to_b64(),
                "the facilitator A talked to"
            );
        } else {
            assert_eq!(meta["with"], Value::Null);
        }
        if body(env) == A_REDACTED {
            assert_eq!(meta["redacted"]["reason"], REDACT_REASON);
            assert_eq!(meta["seq"], doomed_seq);
        } else {
            assert_eq!(meta["redacted"], Value::Null);
        }
    }
    assert!(
        text.contains(A_REDACTED),
        "a redacted message is still A's words"
    );

    // The record about A, both entries, authors named.
    let records = doc["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["id"], record_id);
    let authors: Vec<&Value> = records[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["author"])
        .collect();
    assert_eq!(authors, vec![&fac_key.to_b64(), &a_key.to_b64()]);
    assert!(text.contains(RECORD_NOTE) && text.contains(RECORD_REPLY));

    // The escalation about A: status, severity, outcome; A's flag only; B's
    // raising step says neither who nor how.
    let about = doc["escalations"]["about_you"].as_array().unwrap();
    assert_eq!(about.len(), 1);
    let seen = &about[0];
    assert!(seen.get("id").is_none(), "no escalation id for the person");
    assert_eq!(seen["reference"], a_reference);
    assert_eq!(seen["about"], a_key.to_b64());
    assert_eq!(seen["status"], "resolved");
    assert_eq!(seen["severity"], "urgent");
    assert_eq!(seen["outcome"], OUTCOME);
    assert_eq!(seen["context"], serde_json::json!([]));
    let flags: Vec<SignedEnvelope> = serde_json::from_value(seen["flags"].clone()).unwrap();
    assert_eq!(flags, vec![own_flag.clone()]);
    let raised = seen["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "raised")
        .expect("a raised step");
    assert!(raised.get("actor").is_none() && raised.get("env").is_none());
    let steps: Vec<&str> = seen["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    for step in ["raised", "merged", "acknowledged", "resolved"] {
        assert!(steps.contains(&step), "{steps:?}");
    }
    // A's own flag, in full.
    let mine = doc["escalations"]["raised_by_you"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["reference"], a_reference);
    assert_eq!(mine[0]["about_you"], true);
    assert_eq!(mine[0]["flags"][0]["step"], "merged");
    let own: SignedEnvelope =
        serde_json::from_value(mine[0]["flags"][0]["envelope"].clone()).unwrap();
    own.verify().unwrap();
    assert_eq!(own, own_flag);
    assert!(text.contains(A_FLAG_NOTE));

    // Audit: what was done about A and what A did.
    let audit: Vec<(String, bool, bool)> = doc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["seq"].as_u64().unwrap() >= 1 && e["ts"].as_u64().unwrap() > 0);
            assert_eq!(e["group"], "circle");
            (
                e["action"].as_str().unwrap().to_string(),
                e["as_actor"].as_bool().unwrap(),
                e["as_subject"].as_bool().unwrap(),
            )
        })
        .collect();
    let has = |action: &str, actor: bool| {
        audit
            .iter()
            .any(|(a, by, about)| a == action && *by == actor && *about)
    };
    assert!(has("escalation.raise", false), "{audit:?}");
    assert!(has("escalation.merge", true), "{audit:?}");
    assert!(has("escalation.ack", false), "{audit:?}");
    assert!(has("escalation.resolve", false), "{audit:?}");
    assert!(has("control.mute", false), "{audit:?}");

    // B's export: B's own things, none of A's words.
    let doc_b = export_key(store, &b_key, now_ms()).expect("export of B");
    let text_b = doc_b.to_string();
    for leaked in [
        A_MAIN,
        A_REDACTED,
        A_PRIVATE,
        A_REPORT,
        A_FLAG_NOTE,
        A_NAME,
        RECORD_NOTE,
        RECORD_REPLY,
        OUTCOME,
    ] {
        assert!(!text_b.contains(leaked), "B's export holds {leaked:?}");
    }
    let b_messages = verified_messages(&doc_b);
    assert_eq!(b_messages.len(), 1);
    assert_eq!(body(&b_messages[0].1), B_MAIN);
    assert_eq!(
        doc_b["memberships"][0]["display_names"],
        serde_json::json!([B_NAME])
    );
    assert_eq!(doc_b["escalations"]["about_you"], serde_json::json!([]));
    let b_raised = &doc_b["escalations"]["raised_by_you"];
    assert_eq!(b_raised.as_array().unwrap().len(), 1);
    assert_eq!(b_raised[0]["about_you"], false);
    assert_eq!(b_raised[0]["reference"], b_reference);
    assert_eq!(b_raised[0]["flags"][0]["step"], "raised");
    assert!(text_b.contains(B_FLAG_NOTE), "B's own flag, in full");
    assert_eq!(doc_b["records"], serde_json::json!([]));

    // A key the hub never saw: an empty, valid document.
    let stranger = Identity::generate().key();
    let empty = export_key(store, &stranger, 7).expect("export of a stranger");
    assert_eq!(empty["format"], "peerhub-export/1");
    assert_eq!(empty["key"], stranger.to_b64());
    for list in ["memberships", "messages", "records", "audit"] {
        assert_eq!(empty[list], serde_json::json!([]), "{list}");
    }
    assert_eq!(
        empty["escalations"],
        serde_json::json!({"about_you": [], "raised_by_you": []})
    );
    assert_eq!(empty["account"]["counter"], 0);
}
