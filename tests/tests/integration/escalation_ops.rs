//! `peerhub escalation list|resolve` on the real binary, against a running hub
//! (through the control socket and the router task) and a stopped one: bounded
//! summaries with no words, refusals that change nothing, and an audit chain that
//! still verifies.

use std::path::Path;
use std::process::Output;

use peerhub_protocol::escalation::{EscalationStatus, Severity};
use peerhub_protocol::frame::{Channel, Note};
use peerhub_protocol::payload::InviteRole;
use peerhub_protocol::{ClientFrame, PublicKey, ServerFrame};
use peerhub_tests::process::binary;
use peerhub_tests::{Client, Identity, ProcessServer};

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
    .expect("joined")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `peerhub escalation list --data DIR EXTRA...`, parsed.
async fn list(data: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["escalation", "list", "--data", data];
    args.extend_from_slice(extra);
    let out = peerhub(&args).await;
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(listing: &serde_json::Value) -> Vec<u64> {
    listing["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

async fn flag(client: &mut Client, about: PublicKey, note: &str) {
    let reply = client
        .flag_with("circle", about, Severity::Emergency, |f| {
            f.note = Some(note.into())
        })
        .await;
    assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
}

fn audit_actions(data: &Path) -> Vec<String> {
    let store = peerhub_server::store::Store::open(data).unwrap();
    peerhub_server::audit::entries(&store)
        .map(|entry| entry.expect("entry parses").action)
        .collect()
}

#[tokio::test]
async fn escalations_are_listed_and_resolved_on_a_running_and_a_stopped_hub() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let mut server = ProcessServer::start(&data, &[]).await;
    let mut admin = server.admin().await;
    admin.create_group("circle", "Circle").await;
    let token = admin.invite(InviteRole::Facilitator, Some("circle")).await;
    let (jo, mut fac) = server.redeemed(&token).await;
    fac.join("circle", "Jo", None).await;
    let token = admin.invite(InviteRole::Supervisor, None).await;
    let (_, mut sup) = server.redeemed(&token).await;
    let river = Identity::generate();
    let mut p = Client::connect(server.addr).await;
    p.login(&river).await;
    p.join("circle", "River", None).await;
    flag(&mut p, river.key(), "secret words of mine").await;

    // Running: a bounded summary, no words, nobody but the handler.
    let listing = list(&data_arg, &[]).await;
    assert_eq!(listing["matching"], 1, "{listing}");
    let entry = &listing["escalations"][0];
    let id = entry["id"].as_u64().unwrap();
    assert_eq!(entry["group"], "circle");
    assert_eq!(entry["severity"], "emergency");
    assert_eq!(entry["status"], "open");
    assert!(
        entry["level"].is_u64() && entry["age_s"].is_u64(),
        "{entry}"
    );
    assert!(entry["handler"].is_null());
    let printed = listing.to_string();
    assert!(!printed.contains("secret"), "{printed}");
    assert!(!printed.contains(&river.key().to_string()), "{printed}");

    // Bad input is refused and changes nothing.
    for (bad, why) in [
        (
            vec![
                "escalation",
                "resolve",
                "--data",
                &data_arg,
                "999999",
                "--outcome",
                "x",
            ],
            "no escalation 999999",
        ),
        (
            vec![
                "escalation",
                "resolve",
                "--data",
                &data_arg,
                &id.to_string(),
                "--outcome",
                "",
            ],
            "outcome",
        ),
        (
            vec!["escalation", "list", "--data", &data_arg, "--limit", "0"],
            "--limit",
        ),
    ] {
        let out = peerhub(&bad).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
        assert!(text(&out).contains(why), "{bad:?}: {}", text(&out));
    }
    for bad in [
        vec![
            "escalation",
            "resolve",
            "--data",
            &data_arg,
            "seven",
            "--outcome",
            "x",
        ],
        vec![
            "escalation",
            "resolve",
            "--data",
            &data_arg,
            &id.to_string(),
        ],
        vec![
            "escalation",
            "list",
            "--data",
            &data_arg,
            "--all",
            "--state",
            "open",
        ],
        vec!["escalation", "list", "--data", &data_arg, "--state", "lost"],
    ] {
        let out = peerhub(&bad).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }
    assert_eq!(list(&data_arg, &["--state", "open"]).await["matching"], 1);

    // Resolved through the router: the supervisor's queue, the facilitators and the
    // person hear of it as they would of a supervisor's resolve.
    let id_arg = id.to_string();
    let out = peerhub(&[
        "escalation",
        "resolve",
        "--data",
        &data_arg,
        &id_arg,
        "--outcome",
        "closed by the operator",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let pushed = sup
        .recv_matching(|f| {
            matches!(f, ServerFrame::Escalation { escalation } if escalation.id == Some(id) && escalation.status == EscalationStatus::Resolved)
        })
        .await
        .expect("the supervisor sees it resolved");
    let ServerFrame::Escalation { escalation } = pushed else {
        unreachable!()
    };
    assert_eq!(
        escalation.outcome.as_deref(),
        Some("closed by the operator")
    );
    // Its steps are read on demand (the push is a bounded summary).
    let reply = sup
        .request(|rid| ClientFrame::EscalationDetail {
            id: rid,
            escalation: Some(id),
            reference: None,
            part: peerhub_protocol::escalation::EscalationPart::Steps,
            offset: Some(escalation.counts.steps.saturating_sub(1)),
        })
        .await;
    let ServerFrame::EscalationDetail { steps, .. } = reply else {
        panic!("{reply:?}")
    };
    let last = steps.last().unwrap();
    assert_eq!(last.step, "resolved");
    assert!(
        last.actor.is_none() && last.env.is_none(),
        "the hub's own step, not a person's: {last:?}"
    );
    loop {
        let event = fac.next_event_in("circle", Channel::Staff).await;
        if event.note
            == Some(Note::SupportResolved {
                member: river.key(),
            })
        {
            break;
        }
    }
    p.recv_matching(
        |f| matches!(f, ServerFrame::SupportNotice { notice, .. } if notice == "resolved"),
    )
    .await
    .expect("the person hears it was closed");
    // Again: refused, nothing changes.
    let out = peerhub(&[
        "escalation",
        "resolve",
        "--data",
        &data_arg,
        &id_arg,
        "--outcome",
        "twice",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already resolved"), "{}", text(&out));
    assert_eq!(list(&data_arg, &[]).await["matching"], 0);
    let resolved = list(&data_arg, &["--state", "resolved"]).await;
    assert_eq!(ids(&resolved), vec![id]);

    // The running router forgot it: a new flag opens a new escalation.
    flag(&mut p, river.key(), "more secret words").await;
    let open = list(&data_arg, &[]).await;
    assert_eq!(open["matching"], 1, "{open}");
    let second = ids(&open)[0];
    assert_ne!(second, id);

    // Stopped: the command opens the folder itself.
    drop((p, fac, sup, admin));
    server.signal("TERM");
    server.wait().await;
    let out = peerhub(&[
        "escalation",
        "resolve",
        "--data",
        &data_arg,
        &second.to_string(),
        "--outcome",
        "closed while the hub was down",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = peerhub(&[
        "escalation",
        "resolve",
        "--data",
        &data_arg,
        &second.to_string(),
        "--outcome",
        "again",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already resolved"), "{}", text(&out));
    let all = list(&data_arg, &["--all"]).await;
    assert_eq!(ids(&all), vec![second, id], "resolved, newest first: {all}");
    assert!(all["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["status"] == "resolved"));

    // Audited, and the chain verifies.
    let out = peerhub(&["audit", "verify", "--data", &data_arg]).await;
    assert!(out.status.success(), "{}", text(&out));
    let actions = audit_actions(&data);
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "escalation.resolve")
            .count(),
        2,
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "admin.escalation_list"),
        "{actions:?}"
    );

    // Restarted: nothing is pending, and the facilitators' staff channel says both
    // requests were closed (the second by the stopped folder's command).
    let server = ProcessServer::start(&data, &[]).await;
    assert_eq!(list(&data_arg, &[]).await["matching"], 0);
    let mut fac = Client::connect(server.addr).await;
    fac.login(&jo).await;
    fac.join("circle", "Jo", None).await;
    let mut notes = Vec::new();
    while notes.len() < 4 {
        if let Some(note) = fac.next_event_in("circle", Channel::Staff).await.note {
            notes.push(note);
        }
    }
    let asked = |n: &Note| matches!(n, Note::SupportAsked { member, .. } if *member == river.key());
    let closed = Note::SupportResolved {
        member: river.key(),
    };
    assert!(asked(&notes[0]) && asked(&notes[2]), "{notes:?}");
    assert_eq!((&notes[1], &notes[3]), (&closed, &closed));
    drop(server);
}
