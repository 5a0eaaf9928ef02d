//! Retention end to end: the real server's background job deletes exactly what
//! expired — chat history per group (every channel), resolved escalations,
//! co-produced records, the front of the audit chain — records that it did in one
//! hub-signed `retention.run` entry, and leaves the chain verifiable.
//!
//! Time moves by days on the server's clock (`server.clock.advance`). Clients sign
//! with that clock too (the hub refuses a signed time more than two minutes off
//! its own), so the helpers here sign at `server.clock.now_ms()`. The job runs
//! every 100 ms; tests wait for a pass that ran at or after a given hub time.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::frame::{Channel, Role};
use peerhub_protocol::payload::{
    AdminPayload, AuthPayload, EscalationActPayload, EscalationAction, FlagPayload, JoinPayload,
    RecordPayload,
};
use peerhub_protocol::{ClientFrame, PublicKey, ServerFrame, SignedEnvelope};
use peerhub_server::audit::{self, action, AuditEntry};
use peerhub_server::retention::{RetentionReport, RetentionSettings, RunDetail, DAY_MS};
use peerhub_server::store::Store;
use peerhub_tests::identity::gid;
use peerhub_tests::process::binary;
use peerhub_tests::{Client, Identity, TestServer};
use serde::Serialize;

const PASS_TIMEOUT: Duration = Duration::from_secs(20);

fn retention(
    chat_history_days: Option<u32>,
    safeguarding_days: Option<u32>,
    audit_days: Option<u32>,
) -> RetentionSettings {
    RetentionSettings {
        chat_history_days,
        safeguarding_days,
        audit_days,
        interval: Duration::from_millis(100),
    }
}

/// `payload` signed by `who` with a fresh counter and the server's time.
fn signed_at<T: Serialize>(
    server: &TestServer,
    who: &Identity,
    kind: Kind,
    make: impl FnOnce(u64, u64) -> T,
) -> SignedEnvelope {
    who.sign(kind, &make(who.next_counter(), server.clock.now_ms()))
}

/// A new connection logged in as `who`, signing at the server's time.
async fn login_at(server: &TestServer, who: &Identity) -> Client {
    let mut client = server.client().await;
    let env = who.sign(
        Kind::Auth,
        &AuthPayload {
            challenge: client.challenge.clone(),
            ts: server.clock.now_ms(),
        },
    );
    match client.request(|id| ClientFrame::Auth { id, env }).await {
        ServerFrame::AuthOk { counter, .. } => who.raise_counter(counter),
        other => panic!("login refused: {other:?}"),
    }
    client.identity = Some(who.clone());
    client
}

/// Posts `body` to `group`'s main channel at the server's time; returns the seq.
async fn post_at(server: &TestServer, client: &mut Client, group: &str, body: &str) -> u64 {
    let me = client.identity.clone().expect("logged in");
    let env = me.post_at(group, body, me.next_counter(), server.clock.now_ms());
    client.post_env(group, env).await
}

/// A private check-in from `client` to `to` in `group` at the server's time.
async fn check_in_at(
    server: &TestServer,
    client: &mut Client,
    group: &str,
    to: PublicKey,
    body: &str,
) -> u64 {
    let me = client.identity.clone().expect("logged in");
    let env = signed_at(server, &me, Kind::Post, |counter, ts| {
        peerhub_protocol::payload::PostPayload {
            group: gid(group),
            body: body.into(),
            to: Some(to),
            counter,
            ts,
        }
    });
    client.post_env(group, env).await
}

/// `client` asks for support for themself in `group`; returns the escalation id.
async fn flag_self(server: &TestServer, client: &mut Client, group: &str) -> u64 {
    let me = client.identity.clone().expect("logged in");
    let env = signed_at(server, &me, Kind::Flag, |counter, ts| FlagPayload {
        group: gid(group),
        about: me.key(),
        seq: None,
        severity: Severity::Concern,
        consent: Consent::Own,
        reason: None,
        withhold_notice: None,
        note: None,
        counter,
        ts,
    });
    match client
        .request(|id| ClientFrame::Flag {
            id,
            group: gid(group),
            env,
        })
        .await
    {
        // The flagger is told a reference, not the id; the test reads the id as
        // supervisors would know it, from the hub's index of escalations about
        // the person.
        ServerFrame::Flagged { .. } => *server
            .hub()
            .store
            .escalation_ids_about(&me.key())
            .unwrap()
            .last()
            .expect("stored"),
        other => panic!("flag refused: {other:?}"),
    }
}

/// A supervisor's step on escalation `id`, at the server's time.
async fn act(server: &TestServer, sup: &mut Client, id: u64, action: EscalationAction) {
    let me = sup.identity.clone().expect("logged in");
    let env = signed_at(server, &me, Kind::Escalation, |counter, ts| {
        EscalationActPayload {
            escalation: id,
            action,
            counter,
            ts,
        }
    });
    let reply = sup
        .request(|rid| ClientFrame::Escalation { id: rid, env })
        .await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
}

/// A facilitator opens a record about `about` in `group`; returns its id.
async fn record_at(
    server: &TestServer,
    fac: &mut Client,
    group: &str,
    about: PublicKey,
    text: &str,
) -> u64 {
    let me = fac.identity.clone().expect("logged in");
    let env = signed_at(server, &me, Kind::Record, |counter, ts| RecordPayload {
        group: gid(group),
        about: Some(about),
        reply_to: None,
        text: text.into(),
        counter,
        ts,
    });
    match fac
        .request(|id| ClientFrame::Record {
            id,
            group: gid(group),
            env,
        })
        .await
    {
        ServerFrame::Records { records, .. } => records[0].id,
        other => panic!("record refused: {other:?}"),
    }
}

/// What a member sees of `group` on joining afresh with `after: 0`: `oldest`, and
/// every main-channel message kept, as (seq, body).
async fn history(server: &TestServer, who: &Identity, group: &str) -> (u64, Vec<(u64, String)>) {
    let mut client = login_at(server, who).await;
    let env = signed_at(server, who, Kind::Join, |counter, ts| JoinPayload {
        group: gid(group),
        name: "Reader".into(),
        counter,
        ts,
    });
    let reply = client
        .request(|id| ClientFrame::Join {
            id,
            group: gid(group),
            after: Some(0),
            access_code: None,
            env,
        })
        .await;
    let ServerFrame::Joined { head, oldest, .. } = reply else {
        panic!("join refused: {reply:?}")
    };
    let mut kept = Vec::new();
    for _ in oldest.saturating_sub(1)..head {
        let event = client.next_event(group).await;
        kept.push((event.seq, event.verified_body()));
    }
    (oldest, kept)
}

/// The ids of the escalations `client` may list: as listed for supervisors; for
/// anyone else, the escalation behind each of their references.
async fn escalation_ids(server: &TestServer, client: &mut Client) -> Vec<u64> {
    let reply = client
        .request(|id| ClientFrame::Escalations { id, after: None })
        .await;
    let ServerFrame::Escalations { escalations, .. } = reply else {
        panic!("{reply:?}")
    };
    let store = &server.hub().store;
    let key = client.identity.as_ref().expect("logged in").key();
    let secret = store.escalation_reference_secret().unwrap();
    let mut ids: Vec<u64> = escalations
        .into_iter()
        .map(|e| match (e.id, e.reference) {
            (Some(id), _) => id,
            (None, Some(reference)) => store
                .escalation_ids_about(&key)
                .unwrap()
                .into_iter()
                .find(|id| peerhub_server::escalation::reference(&secret, *id, &key) == reference)
                .expect("a reference to one of theirs"),
            _ => panic!("neither id nor reference"),
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// The ids of the records about `client`'s key.
async fn record_ids(client: &mut Client) -> Vec<u64> {
    let reply = client
        .request(|id| ClientFrame::Records { id, after: None })
        .await;
    let ServerFrame::Records { records, .. } = reply else {
        panic!("{reply:?}")
    };
    records.iter().map(|r| r.id).collect()
}

/// Waits for the first pass that ran at the server's time now or later.
async fn next_pass(server: &TestServer) -> RetentionReport {
    let at = server.clock.now_ms();
    tokio::time::timeout(
        PASS_TIMEOUT,
        server.server().retention().pass_at_or_after(at),
    )
    .await
    .expect("a retention pass within the timeout")
    .expect("the job is running")
}

fn chain(store: &Store) -> Vec<AuditEntry> {
    audit::entries(store)
        .map(|e| e.expect("entry parses"))
        .collect()
}

/// The `retention.run` entries after seq `after`, with their detail.
fn runs_after(store: &Store, after: u64) -> Vec<(AuditEntry, RunDetail)> {
    chain(store)
        .into_iter()
        .filter(|e| e.seq > after && e.action == action::RETENTION_RUN)
        .map(|e| {
            assert_eq!(e.envelopes[0].kind, Kind::Admin);
            let payload: AdminPayload = e.envelopes[0].payload_as().expect("admin payload");
            assert_eq!(payload.action, action::RETENTION_RUN);
            let detail = payload.detail.expect("detail");
            let detail = serde_json::from_str(&detail).expect("retention detail");
            (e, detail)
        })
        .collect()
}

fn hub_key(store: &Store) -> PublicKey {
    let seed = store.hub_signing_seed().expect("hub key");
    PublicKey(SigningKey::from_bytes(&seed).verifying_key().to_bytes())
}

fn last_seq(store: &Store) -> u64 {
    chain(store).last().map_or(0, |e| e.seq)
}

/// The one `retention.run` written since `after`: signed by the hub, about nobody,
/// naming no one; returns its counts (events, escalations, records, audit).
#[track_caller]
fn one_run_since(store: &Store, after: u64, people: &[PublicKey]) -> (u64, u64, u64, u64) {
    let runs = runs_after(store, after);
    assert_eq!(
        runs.len(),
        1,
        "one retention.run per pass that deleted: {runs:?}"
    );
    let (entry, detail) = &runs[0];
    assert_eq!(entry.actor(), Some(hub_key(store)), "signed by the hub");
    entry.envelopes[0].verify().expect("the hub's signature");
    assert_eq!((entry.subject, &entry.group), (None, &None));
    let text = serde_json::to_string(detail).unwrap() + &entry.envelopes[0].payload;
    for key in people {
        assert!(!text.contains(&key.to_b64()), "no one's key in {text}");
    }
    (
        detail.chat_events,
        detail.escalations,
        detail.records,
        detail.audit_entries,
    )
}

#[tokio::test]
async fn the_retention_job_removes_exactly_what_expired() {
    let mut server = TestServer::start_with(|c| {
        c.retention = retention(Some(7), Some(20), Some(30));
    })
    .await;
    for (group, days) in [("short", Some(2)), ("long", Some(30)), ("plain", None)] {
        server
            .create_group_with(group, |g| {
                g.waiting_room = Some(false);
                g.retention.history_days = days;
            })
            .await;
    }
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    let (sup_id, mut sup) = server.with_role(Role::Supervisor).await;
    let (p_id, q_id, r_id) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let mut p = server.login(&p_id).await;
    for group in ["short", "long", "plain"] {
        fac.join(group, "Jo", None).await;
        p.join(group, "River", None).await;
    }
    let people = [
        fac_id.key(),
        sup_id.key(),
        p_id.key(),
        q_id.key(),
        r_id.key(),
    ];
    let store = server.hub().store.clone();
    let pair = Channel::pair(p_id.key(), fac_id.key());

    // Day 0.
    let short_old = post_at(&server, &mut p, "short", "short, day 0").await;
    let check_in_old = check_in_at(&server, &mut p, "short", fac_id.key(), "day 0").await;
    let long_old = post_at(&server, &mut p, "long", "long, day 0").await;
    let plain_old = post_at(&server, &mut p, "plain", "plain, day 0").await;
    let e1 = flag_self(&server, &mut p, "plain").await;
    act(&server, &mut sup, e1, EscalationAction::Ack).await;
    act(
        &server,
        &mut sup,
        e1,
        EscalationAction::Resolve {
            outcome: "talked it through".into(),
        },
    )
    .await;
    let r1 = record_at(&server, &mut fac, "plain", p_id.key(), "day 0 note").await;

    // Day 5.
    server.clock.advance((5 * DAY_MS) as i64);
    let mut q = login_at(&server, &q_id).await;
    let mut r = login_at(&server, &r_id).await;
    for (client, who) in [(&mut q, &q_id), (&mut r, &r_id)] {
        let env = signed_at(&server, who, Kind::Join, |counter, ts| JoinPayload {
            group: gid("plain"),
            name: "Sky".into(),
            counter,
            ts,
        });
        let reply = client
            .request(|id| ClientFrame::Join {
                id,
                group: gid("plain"),
                after: None,
                access_code: None,
                env,
            })
            .await;
        assert!(matches!(reply, ServerFrame::Joined { .. }), "{reply:?}");
    }
    let short_mid = post_at(&server, &mut p, "short", "short, day 5").await;
    let long_mid = post_at(&server, &mut p, "long", "long, day 5").await;
    let plain_mid = post_at(&server, &mut p, "plain", "plain, day 5").await;
    let e2_open = flag_self(&server, &mut q, "plain").await;
    let e3_acknowledged = flag_self(&server, &mut r, "plain").await;
    act(&server, &mut sup, e3_acknowledged, EscalationAction::Ack).await;
    let e4 = flag_self(&server, &mut p, "plain").await;
    assert_ne!(e4, e1);
    act(&server, &mut sup, e4, EscalationAction::Ack).await;
    act(
        &server,
        &mut sup,
        e4,
        EscalationAction::Resolve {
            outcome: "signposted".into(),
        },
    )
    .await;
    let r2 = record_at(&server, &mut fac, "plain", p_id.key(), "day 5 note").await;

    // Checkpoint 1, day 5: only "short" (2 days) lost its day-0 messages, in every
    // channel; the default (7) and "long" (30) keep theirs.
    let pass = next_pass(&server).await;
    assert_eq!(pass.cutoffs.chat_default_ms, Some(pass.now_ms - 7 * DAY_MS));
    assert_eq!(
        history(&server, &fac_id, "short").await,
        (short_mid, vec![(short_mid, "short, day 5".into())])
    );
    assert!(store
        .event(&gid("short"), &pair, check_in_old)
        .unwrap()
        .is_none());
    assert!(store
        .event(&gid("short"), &Channel::Main, short_old)
        .unwrap()
        .is_none());
    assert_eq!(
        history(&server, &fac_id, "long").await,
        (
            long_old,
            vec![
                (long_old, "long, day 0".into()),
                (long_mid, "long, day 5".into())
            ]
        )
    );
    assert_eq!(
        history(&server, &fac_id, "plain").await.1,
        vec![
            (plain_old, "plain, day 0".into()),
            (plain_mid, "plain, day 5".into())
        ]
    );
    assert_eq!(escalation_ids(&server, &mut p).await, vec![e1, e4]);
    assert_eq!(
        escalation_ids(&server, &mut sup).await,
        vec![e2_open, e3_acknowledged]
    );
    assert_eq!(record_ids(&mut p).await, vec![r1, r2]);
    assert_eq!(one_run_since(&store, 0, &people), (2, 0, 0, 0));
    let report = audit::verify(&store).expect("the chain verifies");
    assert_eq!(report.pruned, 0);
    let mut seen = last_seq(&store);

    // Checkpoint 2, day 21: chat past 7 days ("plain") and 2 days ("short") goes;
    // "long" keeps all; the escalation resolved and the record written on day 0
    // pass the 20-day safeguarding cutoff.
    server.clock.advance((16 * DAY_MS) as i64);
    next_pass(&server).await;
    let (oldest, kept) = history(&server, &fac_id, "short").await;
    assert!(kept.is_empty() && oldest > short_mid, "{oldest} {kept:?}");
    let (oldest, kept) = history(&server, &fac_id, "plain").await;
    assert!(kept.is_empty() && oldest > plain_mid, "{oldest} {kept:?}");
    assert_eq!(history(&server, &fac_id, "long").await.1.len(), 2);
    assert_eq!(escalation_ids(&server, &mut p).await, vec![e4]);
    assert_eq!(
        escalation_ids(&server, &mut sup).await,
        vec![e2_open, e3_acknowledged]
    );
    assert_eq!(record_ids(&mut p).await, vec![r2]);
    // Chat: 3 messages, and the 6 support notes of the 4 flags in "plain"'s staff
    // channel (4 asked, 2 resolved), which age like the conversation.
    assert_eq!(one_run_since(&store, seen, &people), (9, 1, 1, 0));
    assert_eq!(audit::verify(&store).unwrap().pruned, 0);
    seen = last_seq(&store);
    let before: Vec<AuditEntry> = chain(&store);

    // Checkpoint 3, day 34: "long" loses day 0 only; day 5's resolved escalation and
    // record go; the open and the acknowledged ones, as old, stay; audit entries
    // older than 30 days go from the front of the chain.
    server.clock.advance((13 * DAY_MS) as i64);
    let pass = next_pass(&server).await;
    assert_eq!(
        history(&server, &fac_id, "long").await,
        (long_mid, vec![(long_mid, "long, day 5".into())])
    );
    assert_eq!(escalation_ids(&server, &mut p).await, Vec::<u64>::new());
    assert_eq!(
        escalation_ids(&server, &mut sup).await,
        vec![e2_open, e3_acknowledged],
        "open and acknowledged escalations are kept however old"
    );
    let kept: Vec<u64> = store
        .escalations()
        .unwrap()
        .iter()
        .map(|e| e.view.id)
        .collect();
    assert_eq!(kept, vec![e2_open, e3_acknowledged]);
    assert_eq!(record_ids(&mut p).await, Vec::<u64>::new());

    let audit_cutoff = pass.cutoffs.audit_ms.expect("an audit cutoff");
    let expired: Vec<u64> = before
        .iter()
        .take_while(|e| e.ts < audit_cutoff)
        .map(|e| e.seq)
        .collect();
    assert!(
        before
            .iter()
            .skip(expired.len())
            .all(|e| e.ts >= audit_cutoff),
        "the expired entries are exactly the front of the chain"
    );
    assert!(!expired.is_empty());
    assert!(
        before
            .iter()
            .filter(|e| expired.contains(&e.seq))
            .all(|e| e.ts < DAY_MS + before[0].ts),
        "day 0's entries"
    );
    let (events, escalations, records, audit_entries) = one_run_since(&store, seen, &people);
    assert_eq!((events, escalations, records), (1, 1, 1));
    assert_eq!(audit_entries, expired.len() as u64);
    let report = audit::verify(&store).expect("a pruned chain still verifies");
    assert_eq!(report.pruned, *expired.last().unwrap());
    assert_eq!(report.pruned + report.entries, last_seq(&store));
    assert_eq!(report.last_hash, server.hub().audit.tail().1);
    let first_kept = chain(&store)[0].seq;
    assert_eq!(first_kept, report.pruned + 1);
    // Every earlier retention.run (days 5 and 21) is still there; day 0 is gone.
    assert_eq!(runs_after(&store, 0).len(), 3);
    assert!(chain(&store).iter().all(|e| e.ts >= audit_cutoff));
}

#[tokio::test]
async fn nothing_expired_means_nothing_deleted_and_nothing_recorded() {
    let mut server = TestServer::start_with(|c| {
        c.retention = RetentionSettings {
            interval: Duration::from_millis(50),
            ..RetentionSettings::default()
        };
    })
    .await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    let (_, mut sup) = server.with_role(Role::Supervisor).await;
    fac.join("circle", "Jo", None).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("circle", "River", None).await;
    let said = post_at(&server, &mut p, "circle", "said today").await;
    let id = flag_self(&server, &mut p, "circle").await;
    act(&server, &mut sup, id, EscalationAction::Ack).await;
    act(
        &server,
        &mut sup,
        id,
        EscalationAction::Resolve {
            outcome: "ok".into(),
        },
    )
    .await;
    record_at(&server, &mut fac, "circle", p_id.key(), "a note").await;
    let store = server.hub().store.clone();
    next_pass(&server).await;
    let digest = store.digest().unwrap();
    let tail = server.hub().audit.tail();

    // A minute short of 30 days: nothing has expired yet.
    server.clock.advance((30 * DAY_MS - 60_000) as i64);
    let pass = next_pass(&server).await;
    assert!(!pass.deleted_anything(), "{pass:?}");
    assert_eq!(
        (
            pass.chat_events,
            pass.escalations,
            pass.records,
            pass.audit_entries
        ),
        (0, 0, 0, 0)
    );
    let again = next_pass(&server).await;
    assert!(!again.deleted_anything());
    assert_eq!(store.digest().unwrap(), digest, "nothing was written");
    assert_eq!(server.hub().audit.tail(), tail, "no audit entry");
    assert!(runs_after(&store, 0).is_empty());
    assert_eq!(history(&server, &p_id, "circle").await.1.len(), 1);

    // Two minutes later the message is past the 30-day default, and only the
    // conversation goes (the message and the staff notes of the same day).
    server.clock.advance(120_000);
    next_pass(&server).await;
    // The message, and the staff channel's support notes (asked, resolved).
    assert_eq!(one_run_since(&store, tail.0, &[p_id.key()]), (3, 0, 0, 0));
    let (oldest, kept) = history(&server, &p_id, "circle").await;
    assert!(kept.is_empty() && oldest > said);
    assert_eq!(record_ids(&mut p).await.len(), 1);
    assert_eq!(escalation_ids(&server, &mut p).await, vec![id]);
}

#[tokio::test]
async fn a_change_after_the_anchor_is_still_caught_by_audit_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start_with(|c| {
        c.data_dir = data.clone();
        c.retention = retention(None, None, Some(1));
    })
    .await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("circle", "River", None).await;
    let store = server.hub().store.clone();
    let day0 = last_seq(&store);
    assert!(day0 >= 2, "the admin's grant and the group's creation");

    // Two days on, day 0's entries are pruned behind the anchor and one
    // retention.run records it; a new action links on.
    server.clock.advance((2 * DAY_MS) as i64);
    next_pass(&server).await;
    let run = one_run_since(&store, day0, &[p_id.key()]);
    assert_eq!(run, (0, 0, 0, day0));
    let mut p = login_at(&server, &p_id).await;
    flag_self(&server, &mut p, "circle").await;
    let report = audit::verify(&store).expect("verifies from the anchor");
    assert_eq!((report.pruned, report.entries), (day0, 2));
    let seqs: Vec<u64> = chain(&store).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![day0 + 1, day0 + 2]);

    // One changed byte in the first entry after the anchor: caught there.
    let stored = |seq| {
        store
            .audit_entries()
            .map(Result::unwrap)
            .find(|(s, _)| *s == seq)
            .unwrap()
            .1
    };
    let good = stored(day0 + 1);
    let bad = String::from_utf8(good.clone()).unwrap().replacen(
        r#""action":"retention.run""#,
        r#""action":"retention.ran""#,
        1,
    );
    assert_eq!(bad.len(), good.len());
    store
        .put_audit_raw_for_tests(day0 + 1, bad.as_bytes())
        .unwrap();
    let broken = audit::verify(&store).expect_err("a change after the anchor");
    assert_eq!(broken.seq, day0 + 1, "{broken}");
    store.put_audit_raw_for_tests(day0 + 1, &good).unwrap();
    assert!(audit::verify(&store).is_ok());
    // The store must be let go of before the server restarts on its folder.
    drop(store);

    // The chain reopens at its tail across a restart and keeps linking; the real
    // `peerhub audit verify` vouches for the pruned chain once the server stops.
    let server = server.restart().await;
    let mut p = login_at(&server, &p_id).await;
    flag_self(&server, &mut p, "circle").await;
    let store = server.hub().store.clone();
    let report = audit::verify(&store).unwrap();
    assert_eq!((report.pruned, report.entries), (day0, 3));
    drop(store);
    server.shutdown().await;
    let out = tokio::process::Command::new(binary())
        .args(["audit", "verify", "--data"])
        .arg(&data)
        .env_remove("PEERHUB_DATA")
        .output()
        .await
        .expect("run peerhub audit verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("3 entries")
            && stdout.contains(&format!("{day0} earlier entries pruned by retention")),
        "{stdout}"
    );
}
