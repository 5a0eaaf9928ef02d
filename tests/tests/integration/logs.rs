//! The logs hold connection ids, not people: a conversation run against the real
//! binary at the most verbose level, with JSON logs, leaves none of its message
//! texts, display names, notes, keys or invite tokens in what the server wrote.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::payload::{FlagPayload, InviteRole};
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Client, Identity, ProcessServer};

#[tokio::test]
async fn a_logged_conversation_names_nobody_and_quotes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ProcessServer::start_logging(dir.path(), &["--log-json"], "trace").await;
    let mut admin = server.admin().await;
    let created = admin.create_group("circle", "Tuesday evening circle").await;
    assert!(
        matches!(created, ServerFrame::GroupCreated { .. }),
        "{created:?}"
    );
    let fac_token = admin.invite(InviteRole::Facilitator, Some("circle")).await;
    let (fac_id, mut fac) = server.redeemed(&fac_token).await;
    fac.join("circle", "Juniper Gladly", None).await;

    let river_id = Identity::generate();
    let mut river = Client::connect(server.addr).await;
    river.login(&river_id).await;
    river.join("circle", "Marigold Quietly", None).await;
    let sky_id = Identity::generate();
    let mut sky = Client::connect(server.addr).await;
    sky.login(&sky_id).await;
    sky.join("circle", "Thistle Brightly", None).await;

    let texts = [
        "my brother's wedding was unbearable on saturday",
        "the medication makes me sleep through the afternoons",
        "I have been counting the pills in the cabinet",
    ];
    river.post("circle", texts[0]).await;
    sky.post("circle", texts[1]).await;
    river.post("circle", texts[2]).await;
    fac.post("circle", "thank you both for trusting the circle with this")
        .await;
    let note = "please can someone ring me, I am frightened tonight";
    let env = river_id.signed(Kind::Flag, |counter, ts| FlagPayload {
        group: gid("circle"),
        about: river_id.key(),
        seq: None,
        severity: Severity::Urgent,
        consent: Consent::Own,
        reason: None,
        withhold_notice: None,
        note: Some(note.into()),
        counter,
        ts,
    });
    let reply = river
        .request(|id| ClientFrame::Flag {
            id,
            group: gid("circle"),
            env,
        })
        .await;
    assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
    // A refusal that quotes what was sent back to the sender must not log it.
    let secret_frame = r#"{"type":"post","id":9,"group":"circle","env":"an unsigned confession"}"#;
    sky.expect_error(secret_frame, Some(9), ErrorCode::Malformed)
        .await;

    server.signal("TERM");
    server.wait().await;
    let logs = server.logs.lock().unwrap().clone();
    assert!(
        logs.len() > 20,
        "the server logged the conversation at trace level: {logs:?}"
    );
    for line in &logs {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    assert!(
        logs.iter().any(|l| l.contains("\"conn\":\"c")),
        "connection ids stand in for people"
    );
    let all = logs.join("\n");
    let mut secrets: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    secrets.extend(
        [
            "Marigold Quietly",
            "Thistle Brightly",
            "Juniper Gladly",
            "thank you both for trusting",
            note,
            "an unsigned confession",
            "Tuesday evening circle",
        ]
        .map(String::from),
    );
    secrets.push(fac_token.clone());
    for key in [river_id.key(), sky_id.key(), fac_id.key()] {
        secrets.push(key.to_string());
    }
    for secret in &secrets {
        // Fragments too: a log that truncates a text still quotes it.
        let fragment: String = secret.chars().take(16).collect();
        assert!(
            !all.contains(&fragment),
            "the logs contain {fragment:?} (from {secret:?}):\n{}",
            logs.iter()
                .filter(|l| l.contains(&fragment))
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
