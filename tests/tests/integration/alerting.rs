//! Out-of-band alerting (issue 16): pager formats and Web Push reach a supervisor
//! with no tab open, repeat until acknowledged, and say nothing about anyone.
//!
//! Every paging and push service here is a real HTTP receiver on loopback
//! ([`HttpReceiver`]); the hub talks to it over a socket as it would to the real one.

use peerhub_protocol::encoding::b64;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{RotaEntry, Severity};
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::{EscalationActPayload, EscalationAction, RotaPayload};
use peerhub_protocol::{ClientFrame, PublicKey, ServerFrame};
use peerhub_server::escalation::pager::PagerFormat;
use peerhub_tests::receiver::Received;
use peerhub_tests::{now_ms, Client, HttpReceiver, Identity, TestServer};

/// What the hub knows about the people in these tests; none of it may leave in
/// an alert.
const NAME: &str = "River";
const NOTE: &str = "I need support now";

#[allow(dead_code)] // The server and admin are kept alive (and used by other tests).
pub(crate) struct Scene {
    pub server: TestServer,
    pub p: Client,
    pub p_id: Identity,
    pub sup: Client,
    pub sup_id: Identity,
    pub admin: Client,
}

pub(crate) async fn set_rota(admin: &mut Client, entries: Vec<RotaEntry>) -> ServerFrame {
    let me = admin.identity.clone().unwrap();
    let env = me.signed(Kind::Rota, |counter, ts| RotaPayload {
        entries,
        counter,
        ts,
    });
    admin.request(|id| ClientFrame::SetRota { id, env }).await
}

pub(crate) fn on_call(supervisor: PublicKey, level: u8) -> RotaEntry {
    let now = now_ms();
    RotaEntry {
        supervisor,
        start_ms: now - 3_600_000,
        end_ms: now + 3_600_000,
        level,
    }
}

/// A group, a participant in it, a supervisor on call at level 1, and the admin;
/// `tweak` sets the server up (pager, push).
pub(crate) async fn scene(tweak: impl FnOnce(&mut peerhub_server::config::Config)) -> Scene {
    let mut server = TestServer::start_with(tweak).await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let mut admin = server.admin().await;
    let (sup_id, sup) = server.with_role(Role::Supervisor).await;
    let p_id = Identity::generate();
    let mut p = server.login(&p_id).await;
    p.join("circle", NAME, None).await;
    p.post("circle", "it's been a really hard week").await;
    let reply = set_rota(&mut admin, vec![on_call(sup_id.key(), 1)]).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    Scene {
        server,
        p,
        p_id,
        sup,
        sup_id,
        admin,
    }
}

/// Raises an emergency about the participant themselves; returns the escalation
/// id (read from the hub's store: a flagger is told only an opaque reference).
pub(crate) async fn raise(scene: &mut Scene) -> u64 {
    let about = scene.p_id.key();
    let reply = scene
        .p
        .flag_with("circle", about, Severity::Emergency, |f| {
            f.note = Some(NOTE.into())
        })
        .await;
    assert!(
        matches!(reply, ServerFrame::Flagged { .. }),
        "flag answered {reply:?}"
    );
    *scene
        .server
        .hub()
        .store
        .escalation_ids_about(&about)
        .unwrap()
        .last()
        .expect("the flag is stored before it is answered")
}

pub(crate) async fn act(
    client: &mut Client,
    escalation: u64,
    action: EscalationAction,
) -> ServerFrame {
    let me = client.identity.clone().unwrap();
    let env = me.signed(Kind::Escalation, |counter, ts| EscalationActPayload {
        escalation,
        action,
        counter,
        ts,
    });
    client
        .request(|id| ClientFrame::Escalation { id, env })
        .await
}

/// Nothing about a person in an alert: no name, no note, no key of the
/// participant or the supervisor (in any encoding the hub uses).
pub(crate) fn assert_content_free(bytes: &[u8], people: &[PublicKey]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(NAME), "a name in an alert: {text}");
    assert!(!text.contains(NOTE), "a note in an alert: {text}");
    assert!(!text.contains("hard week"), "a message in an alert: {text}");
    for key in people {
        assert!(!text.contains(&b64(&key.0)), "a key in an alert: {text}");
        assert!(
            !text.contains(&hex::encode(key.0)),
            "a key in an alert: {text}"
        );
    }
}

fn assert_request_content_free(request: &Received, people: &[PublicKey]) {
    assert_content_free(&request.body, people);
    for (_, value) in &request.headers {
        assert_content_free(value.as_bytes(), people);
    }
    assert_content_free(request.target.as_bytes(), people);
}

/// A hub paging `receiver` in `format` (with key `secret`), its scene, and the
/// escalation raised in it, taken through acknowledge and resolve.
pub(crate) async fn page_through(
    format: PagerFormat,
    receiver: &mut HttpReceiver,
    path: &str,
) -> (Vec<Received>, Scene, u64) {
    let url = format!("{}{path}", receiver.base);
    let mut scene = scene(|c| {
        c.escalation.pager_url = Some(url);
        c.escalation.pager_format = format;
        c.escalation.pager_key = Some("secret-routing-key".into());
    })
    .await;
    let id = raise(&mut scene).await;
    let mut seen = vec![receiver.next(20).await];
    let reply = act(&mut scene.sup, id, EscalationAction::Ack).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    seen.push(receiver.next(20).await);
    let reply = act(
        &mut scene.sup,
        id,
        EscalationAction::Resolve {
            outcome: "talked it through".into(),
        },
    )
    .await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    seen.push(receiver.next(20).await);
    let people = [scene.p_id.key(), scene.sup_id.key()];
    for request in &seen {
        assert_request_content_free(request, &people);
        assert!(
            !String::from_utf8_lossy(&request.body).contains("talked it through"),
            "an outcome in an alert"
        );
    }
    (seen, scene, id)
}

#[tokio::test]
async fn pagerduty_events_v2_trigger_acknowledge_and_resolve_share_one_dedup_key() {
    let mut receiver = HttpReceiver::start(|_, _| 202).await;
    let (seen, _scene, id) =
        page_through(PagerFormat::PagerDuty, &mut receiver, "/v2/enqueue").await;
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/v2/enqueue");
        assert!(request
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
    }
    let (trigger, ack, resolve) = (seen[0].json(), seen[1].json(), seen[2].json());
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(ack["event_action"], "acknowledge");
    assert_eq!(resolve["event_action"], "resolve");
    for body in [&trigger, &ack, &resolve] {
        assert_eq!(body["routing_key"], "secret-routing-key");
    }
    let dedup = trigger["dedup_key"].as_str().unwrap();
    assert!(dedup.ends_with(&format!("-{id}")), "{dedup}");
    assert!(dedup.len() <= 255);
    assert_eq!(ack["dedup_key"], dedup);
    assert_eq!(resolve["dedup_key"], dedup);
    // The fields PagerDuty requires of a trigger, with a severity it knows.
    let payload = &trigger["payload"];
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["source"], "peerhub");
    let summary = payload["summary"].as_str().unwrap();
    assert!(
        summary.contains("emergency") && summary.contains("Test group"),
        "{summary}"
    );
    assert!(summary.len() <= 1024);
    assert!(trigger["links"][0]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("#escalation={id}")));
}

#[tokio::test]
async fn opsgenie_alert_is_created_acknowledged_and_closed_by_alias() {
    let mut receiver = HttpReceiver::start(|_, _| 202).await;
    let (seen, _scene, id) = page_through(PagerFormat::Opsgenie, &mut receiver, "/v2/alerts").await;
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.header("authorization"),
            Some("GenieKey secret-routing-key")
        );
    }
    let create = seen[0].json();
    assert_eq!(seen[0].target, "/v2/alerts");
    let alias = create["alias"].as_str().unwrap();
    assert!(alias.ends_with(&format!("-{id}")) && alias.len() <= 512);
    assert_eq!(create["priority"], "P1");
    assert!(create["message"].as_str().unwrap().chars().count() <= 130);
    assert_eq!(
        seen[1].target,
        format!("/v2/alerts/{alias}/acknowledge?identifierType=alias")
    );
    assert_eq!(
        seen[2].target,
        format!("/v2/alerts/{alias}/close?identifierType=alias")
    );
    assert_eq!(seen[1].json()["source"], "peerhub");
}

#[tokio::test]
async fn ntfy_gets_a_priority_by_severity_a_link_and_the_follow_ups() {
    let mut receiver = HttpReceiver::start(|_, _| 200).await;
    let (seen, _scene, id) =
        page_through(PagerFormat::Ntfy, &mut receiver, "/peerhub-oncall").await;
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/peerhub-oncall");
        assert_eq!(
            request.header("authorization"),
            Some("Bearer secret-routing-key")
        );
    }
    assert_eq!(
        seen[0].header("priority"),
        Some("5"),
        "emergency is ntfy's max"
    );
    assert!(seen[0]
        .header("click")
        .unwrap()
        .ends_with(&format!("#escalation={id}")));
    let text = String::from_utf8_lossy(&seen[0].body);
    assert!(
        text.contains("emergency") && text.contains(&id.to_string()),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&seen[1].body).contains("acknowledged"));
    assert!(String::from_utf8_lossy(&seen[2].body).contains("resolved"));
    assert_eq!(seen[2].header("priority"), Some("2"));
}

#[tokio::test]
async fn the_generic_hook_is_signed_and_follows_acknowledge_and_resolve() {
    let mut receiver = HttpReceiver::start(|_, _| 200).await;
    let (seen, _scene, id) = page_through(PagerFormat::Generic, &mut receiver, "/page").await;
    let events: Vec<String> = seen
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["routed", "acknowledged", "resolved"]);
    for request in &seen {
        let body = request.json();
        assert_eq!(body["escalation"], id);
        assert_eq!(body["group_name"], "Test group");
        let key = ed25519_dalek::VerifyingKey::from_bytes(
            &peerhub_protocol::encoding::unb64(request.header("x-peerhub-key").unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
        )
        .unwrap();
        let sig = ed25519_dalek::Signature::from_slice(
            &peerhub_protocol::encoding::unb64(request.header("x-peerhub-signature").unwrap())
                .unwrap(),
        )
        .unwrap();
        let mut signed = b"peerhub/1/pager\n".to_vec();
        signed.extend_from_slice(&request.body);
        key.verify_strict(&signed, &sig).expect("signed by the hub");
    }
}

#[tokio::test]
async fn a_pager_answering_5xx_is_retried_and_later_events_wait_their_turn() {
    // The first two attempts fail (503, 500); the trigger is then accepted, and the
    // acknowledgement only follows it.
    let mut receiver = HttpReceiver::start(|n, _| match n {
        0 => 503,
        1 => 500,
        _ => 202,
    })
    .await;
    let url = format!("{}/v2/enqueue", receiver.base);
    let mut scene = scene(|c| {
        c.escalation.pager_url = Some(url);
        c.escalation.pager_format = PagerFormat::PagerDuty;
        c.escalation.pager_key = Some("k".into());
    })
    .await;
    let id = raise(&mut scene).await;
    let reply = act(&mut scene.sup, id, EscalationAction::Ack).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let request = receiver.next(20).await;
        seen.push((
            request.json()["event_action"].as_str().unwrap().to_string(),
            request.status,
        ));
    }
    assert_eq!(
        seen,
        [
            ("trigger".to_string(), 503),
            ("trigger".to_string(), 500),
            ("trigger".to_string(), 202),
            ("acknowledge".to_string(), 202),
        ]
    );
}

#[tokio::test]
async fn a_pager_refusing_a_page_with_4xx_is_not_retried_for_ever() {
    let mut receiver = HttpReceiver::start(|n, _| if n == 0 { 400 } else { 202 }).await;
    let url = format!("{}/v2/enqueue", receiver.base);
    let mut scene = scene(|c| {
        c.escalation.pager_url = Some(url);
        c.escalation.pager_format = PagerFormat::PagerDuty;
        c.escalation.pager_key = Some("k".into());
    })
    .await;
    let id = raise(&mut scene).await;
    assert_eq!(receiver.next(20).await.status, 400);
    let reply = act(&mut scene.sup, id, EscalationAction::Ack).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let next = receiver.next(20).await;
    assert_eq!(
        next.json()["event_action"],
        "acknowledge",
        "the bad trigger was dropped, not repeated"
    );
}

// ---- Web Push ----

use peerhub_protocol::payload::{PushAction, PushPayload};
use peerhub_tests::webpush::{check_vapid, PushSubscriber};

const REPEAT: std::time::Duration = std::time::Duration::from_millis(300);
const CONTACT: &str = "mailto:oncall@example.org";

fn with_push(c: &mut peerhub_server::config::Config) {
    c.escalation.push_repeat = REPEAT;
    c.escalation.push_contact = CONTACT.into();
}

pub(crate) async fn alerting(client: &mut Client) -> ServerFrame {
    client.request(|id| ClientFrame::Alerting { id }).await
}

pub(crate) async fn vapid_key(client: &mut Client) -> String {
    match alerting(client).await {
        ServerFrame::Alerting {
            vapid_key: Some(key),
            ..
        } => key,
        other => panic!("alerting answered {other:?}"),
    }
}

pub(crate) async fn subscriptions(client: &mut Client) -> u32 {
    match alerting(client).await {
        ServerFrame::Alerting { subscriptions, .. } => subscriptions,
        other => panic!("alerting answered {other:?}"),
    }
}

pub(crate) fn push_env(
    who: &Identity,
    action: PushAction,
    endpoint: &str,
    subscriber: &PushSubscriber,
) -> peerhub_protocol::SignedEnvelope {
    who.signed(Kind::Push, |counter, ts| PushPayload {
        action,
        endpoint: endpoint.into(),
        p256dh: (action == PushAction::Subscribe).then(|| subscriber.p256dh()),
        auth: (action == PushAction::Subscribe).then(|| subscriber.auth_b64()),
        counter,
        ts,
    })
}

pub(crate) async fn subscribe(
    client: &mut Client,
    endpoint: &str,
    subscriber: &PushSubscriber,
) -> ServerFrame {
    let me = client.identity.clone().unwrap();
    let env = push_env(&me, PushAction::Subscribe, endpoint, subscriber);
    client.request(|id| ClientFrame::Push { id, env }).await
}

/// Checks one push as the push service and the browser would: RFC 8030 headers,
/// the VAPID JWT (signature with the hub's key, aud, exp, sub), and the decrypted
/// payload, which must be content-free. Returns the payload.
fn open_push(
    push: &Received,
    subscriber: &PushSubscriber,
    vapid: &str,
    origin: &str,
    people: &[PublicKey],
) -> serde_json::Value {
    assert_eq!(push.method, "POST");
    assert_eq!(push.header("content-encoding"), Some("aes128gcm"));
    assert!(push.header("ttl").unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(
        push.header("urgency"),
        Some("high"),
        "an emergency is urgent"
    );
    let claims = check_vapid(push.header("authorization").unwrap(), vapid).unwrap();
    assert_eq!(claims.aud, origin, "aud is the push service's origin");
    assert_eq!(claims.sub, CONTACT);
    let now = now_ms() / 1000;
    assert!(
        claims.exp > now && claims.exp <= now + 24 * 3600,
        "exp within 24 h"
    );
    let plain = subscriber.decrypt(&push.body).expect("the push decrypts");
    assert_content_free(&plain, people);
    serde_json::from_slice(&plain).unwrap()
}

#[tokio::test]
async fn a_push_reaches_the_supervisor_encrypted_signed_and_content_free_and_repeats_until_acknowledged(
) {
    let mut service = HttpReceiver::start(|_, _| 201).await;
    let mut scene = scene(with_push).await;
    let vapid = vapid_key(&mut scene.sup).await;
    let subscriber = PushSubscriber::generate();
    let endpoint = format!("{}/push/sup-phone", service.base);
    let reply = subscribe(&mut scene.sup, &endpoint, &subscriber).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    assert_eq!(subscriptions(&mut scene.sup).await, 1);

    let id = raise(&mut scene).await;
    let people = [scene.p_id.key(), scene.sup_id.key()];
    let first = service.next(20).await;
    assert_eq!(first.target, "/push/sup-phone");
    let shown = open_push(&first, &subscriber, &vapid, &service.base, &people);
    assert_eq!(shown["escalation"], id);
    assert_eq!(shown["severity"], "emergency");
    assert_eq!(shown["group"], "Test group");
    assert!(shown["seconds_left"].as_u64().is_some());
    assert!(shown["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("#escalation={id}")));
    // Unacknowledged, it comes again.
    let again = service.next(20).await;
    assert_eq!(
        open_push(&again, &subscriber, &vapid, &service.base, &people)["escalation"],
        id
    );

    let reply = act(&mut scene.sup, id, EscalationAction::Ack).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    // A repeat may have been on its way as the ack landed; after that, silence for
    // many repeat intervals.
    let _ = service.try_next(REPEAT.as_millis() as u64).await;
    assert!(
        service
            .try_next(6 * REPEAT.as_millis() as u64)
            .await
            .is_none(),
        "no push after the acknowledgement"
    );
}

#[tokio::test]
async fn a_subscription_the_push_service_says_is_gone_is_removed() {
    for gone in [404u16, 410] {
        let mut service = HttpReceiver::start(move |_, _| gone).await;
        let mut scene = scene(with_push).await;
        let subscriber = PushSubscriber::generate();
        let endpoint = format!("{}/push/old-phone", service.base);
        let reply = subscribe(&mut scene.sup, &endpoint, &subscriber).await;
        assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
        assert_eq!(subscriptions(&mut scene.sup).await, 1);
        raise(&mut scene).await;
        assert_eq!(service.next(20).await.status, gone);
        let mut left = 1;
        for _ in 0..100 {
            left = subscriptions(&mut scene.sup).await;
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(left, 0, "{gone}: the subscription is removed");
        let (_, _, metrics) = super::http::get(scene.server.addr, "/metrics", "").await;
        assert!(
            metrics
                .lines()
                .any(|l| l == "peerhub_alerts_total{channel=\"push\",outcome=\"gone\"} 1"),
            "{metrics}"
        );
        // And no more pushes go to it.
        assert!(service
            .try_next(4 * REPEAT.as_millis() as u64)
            .await
            .is_none());
    }
}

#[tokio::test]
async fn only_staff_subscribe_with_keys_that_work_and_a_replayed_subscribe_is_refused() {
    let service = HttpReceiver::start(|_, _| 201).await;
    let mut scene = scene(with_push).await;
    let subscriber = PushSubscriber::generate();
    let endpoint = format!("{}/push/x", service.base);
    let before = scene.server.hub().store.digest().unwrap();

    // A participant: not allowed (and told nothing else).
    let reply = subscribe(&mut scene.p, &endpoint, &subscriber).await;
    assert!(
        matches!(&reply, ServerFrame::Error { code, .. } if *code == peerhub_protocol::ErrorCode::Forbidden),
        "{reply:?}"
    );
    let reply = alerting(&mut scene.p).await;
    assert!(matches!(reply, ServerFrame::Error { .. }), "{reply:?}");

    // Bad subscriptions.
    let me = scene.sup.identity.clone().unwrap();
    let bad = |tweak: fn(&mut PushPayload)| {
        me.signed(Kind::Push, |counter, ts| {
            let mut payload = PushPayload {
                action: PushAction::Subscribe,
                endpoint: endpoint.clone(),
                p256dh: Some(subscriber.p256dh()),
                auth: Some(subscriber.auth_b64()),
                counter,
                ts,
            };
            tweak(&mut payload);
            payload
        })
    };
    for (env, field) in [
        (
            bad(|p| p.endpoint = "http://push.example/x".into()),
            "endpoint",
        ),
        (bad(|p| p.p256dh = Some(b64(&[4; 65]))), "p256dh"),
        (bad(|p| p.p256dh = None), "p256dh"),
        (bad(|p| p.auth = Some(b64(&[1; 8]))), "auth"),
    ] {
        let reply = scene.sup.request(|id| ClientFrame::Push { id, env }).await;
        match &reply {
            ServerFrame::Error { code, message, .. } => {
                assert_eq!(*code, peerhub_protocol::ErrorCode::Invalid, "{reply:?}");
                assert!(message.contains(field), "{field}: {message}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(
        scene.server.hub().store.digest().unwrap(),
        before,
        "refusals change nothing"
    );

    // A good one, then the same envelope again: a replay.
    let env = push_env(&me, PushAction::Subscribe, &endpoint, &subscriber);
    let reply = scene
        .sup
        .request(|id| ClientFrame::Push {
            id,
            env: env.clone(),
        })
        .await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let reply = scene.sup.request(|id| ClientFrame::Push { id, env }).await;
    assert!(
        matches!(&reply, ServerFrame::Error { code, .. } if *code == peerhub_protocol::ErrorCode::Replay),
        "{reply:?}"
    );
    // Unsubscribing removes it.
    let env = push_env(&me, PushAction::Unsubscribe, &endpoint, &subscriber);
    let reply = scene.sup.request(|id| ClientFrame::Push { id, env }).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    assert_eq!(subscriptions(&mut scene.sup).await, 0);
}

// ---- Acknowledging from the notification ----

/// POSTs `body` to the hub's `/push/ack` as a service worker would; returns the
/// status and the JSON answer.
pub(crate) async fn post_ack(server: &TestServer, body: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = server.server().local_addr();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /push/ack HTTP/1.1\r\nhost: {addr}\r\norigin: http://{addr}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or_default())
}

fn ack_env(who: &Identity, escalation: u64, action: EscalationAction) -> String {
    serde_json::to_string(
        &who.signed(Kind::Escalation, |counter, ts| EscalationActPayload {
            escalation,
            action,
            counter,
            ts,
        }),
    )
    .unwrap()
}

#[tokio::test]
async fn a_signed_ack_from_the_notification_is_taken_once_and_stops_the_repeats() {
    let mut service = HttpReceiver::start(|_, _| 201).await;
    let mut scene = scene(with_push).await;
    let subscriber = PushSubscriber::generate();
    let endpoint = format!("{}/push/sw", service.base);
    let reply = subscribe(&mut scene.sup, &endpoint, &subscriber).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let id = raise(&mut scene).await;
    service.next(20).await;

    let body = ack_env(&scene.sup_id, id, EscalationAction::Ack);
    let (status, answer) = post_ack(&scene.server, &body).await;
    assert_eq!(
        (status, answer["type"].as_str()),
        (200, Some("ok")),
        "{answer}"
    );
    // The console sees it acknowledged by this supervisor.
    let seen = scene
        .sup
        .recv_matching(|f| {
            matches!(f, ServerFrame::Escalation { escalation }
                if escalation.id == Some(id)
                && escalation.status == peerhub_protocol::escalation::EscalationStatus::Acknowledged)
        })
        .await
        .unwrap();
    let ServerFrame::Escalation { escalation } = seen else {
        unreachable!()
    };
    assert_eq!(escalation.handler, Some(scene.sup_id.key()));

    // The same request again is a replay, and changes nothing.
    let before = scene.server.settled_digest().await;
    let (status, answer) = post_ack(&scene.server, &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("replay")),
        "{answer}"
    );
    assert_eq!(scene.server.hub().store.digest().unwrap(), before);

    // Pushes stop.
    let _ = service.try_next(REPEAT.as_millis() as u64).await;
    assert!(service
        .try_next(6 * REPEAT.as_millis() as u64)
        .await
        .is_none());
}

#[tokio::test]
async fn a_notification_ack_with_a_bad_signature_or_from_a_non_supervisor_is_refused() {
    let mut scene = scene(with_push).await;
    let id = raise(&mut scene).await;
    let before = scene.server.settled_digest().await;

    // A flipped signature bit.
    let mut env: serde_json::Value =
        serde_json::from_str(&ack_env(&scene.sup_id, id, EscalationAction::Ack)).unwrap();
    let sig = env["sig"].as_str().unwrap().to_string();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    env["sig"] = serde_json::Value::from(format!("{flipped}{}", &sig[1..]));
    let (status, answer) = post_ack(&scene.server, &env.to_string()).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("bad_signature")),
        "{answer}"
    );

    // The participant signs an ack of the escalation about themselves.
    let body = ack_env(&scene.p_id, id, EscalationAction::Ack);
    let (status, answer) = post_ack(&scene.server, &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );

    // A stranger's key the hub has never seen.
    let body = ack_env(&Identity::generate(), id, EscalationAction::Ack);
    let (status, answer) = post_ack(&scene.server, &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );

    // Only an ack is taken here, and only an escalation envelope.
    let body = ack_env(
        &scene.sup_id,
        id,
        EscalationAction::Resolve {
            outcome: "x".into(),
        },
    );
    let (status, answer) = post_ack(&scene.server, &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid")),
        "{answer}"
    );
    let post = serde_json::to_string(&scene.sup_id.post("circle", "hi")).unwrap();
    let (status, answer) = post_ack(&scene.server, &post).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("wrong_kind")),
        "{answer}"
    );
    let (status, answer) = post_ack(&scene.server, "not json").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("malformed")),
        "{answer}"
    );

    assert_eq!(
        scene.server.hub().store.digest().unwrap(),
        before,
        "refusals change nothing"
    );
    // Still open for the supervisor to take.
    let reply = act(&mut scene.sup, id, EscalationAction::Ack).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
}

// ---- Coverage that cannot reach anyone is visible ----

async fn unreachable_gauge(server: &TestServer) -> f64 {
    let (status, _, body) = super::http::get(server.addr, "/metrics", "").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("peerhub_oncall_unreachable "))
        .unwrap_or_else(|| panic!("no peerhub_oncall_unreachable in\n{body}"))
        .parse()
        .unwrap()
}

async fn admin_sees_unreachable(admin: &mut Client) -> Vec<PublicKey> {
    match alerting(admin).await {
        ServerFrame::Alerting { unreachable, .. } => unreachable,
        other => panic!("alerting answered {other:?}"),
    }
}

/// Polls until `check` holds (the status is recomputed on every subscription
/// change and every 2 s), failing after 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("never became true");
}

#[tokio::test]
async fn a_supervisor_on_the_rota_with_no_push_and_no_pager_shows_on_metrics_and_the_admin_screen()
{
    let service = HttpReceiver::start(|_, _| 201).await;
    let mut scene = scene(with_push).await;
    let sup = scene.sup_id.key();
    eventually(|| async { unreachable_gauge(&scene.server).await == 1.0 }).await;
    assert_eq!(admin_sees_unreachable(&mut scene.admin).await, vec![sup]);
    // A supervisor asking sees their own count, not the list.
    match alerting(&mut scene.sup).await {
        ServerFrame::Alerting {
            unreachable,
            subscriptions,
            pager,
            ..
        } => {
            assert!(unreachable.is_empty());
            assert_eq!((subscriptions, pager), (0, false));
        }
        other => panic!("{other:?}"),
    }
    // A second supervisor joins the rota, also unreachable; a third's window has
    // already ended, so they do not count.
    let (sup2_id, _sup2) = scene.server.with_role(Role::Supervisor).await;
    let (sup3_id, _sup3) = scene.server.with_role(Role::Supervisor).await;
    let mut past = on_call(sup3_id.key(), 2);
    past.end_ms = now_ms() - 60_000;
    past.start_ms = past.end_ms - 3_600_000;
    let reply = set_rota(
        &mut scene.admin,
        vec![on_call(sup, 1), on_call(sup2_id.key(), 2), past],
    )
    .await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    eventually(|| async { unreachable_gauge(&scene.server).await == 2.0 }).await;

    // The first subscribes: only the second is left.
    let endpoint = format!("{}/push/p", service.base);
    let reply = subscribe(&mut scene.sup, &endpoint, &PushSubscriber::generate()).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    eventually(|| async { unreachable_gauge(&scene.server).await == 1.0 }).await;
    assert_eq!(
        admin_sees_unreachable(&mut scene.admin).await,
        vec![sup2_id.key()]
    );
}

#[tokio::test]
async fn with_a_pager_nobody_on_the_rota_is_unreachable() {
    let receiver = HttpReceiver::start(|_, _| 202).await;
    let url = format!("{}/v2/enqueue", receiver.base);
    let mut scene = scene(|c| {
        c.escalation.pager_url = Some(url);
        c.escalation.pager_format = PagerFormat::PagerDuty;
    })
    .await;
    assert_eq!(unreachable_gauge(&scene.server).await, 0.0);
    match alerting(&mut scene.admin).await {
        ServerFrame::Alerting {
            unreachable, pager, ..
        } => assert!(pager && unreachable.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_escalation_acknowledged_before_a_restart_is_still_resolved_at_the_pager() {
    // Regression: the alerts task forgot what it paged at a restart, and a
    // resolution afterwards never reached PagerDuty (whose acknowledged incidents
    // re-trigger after their ack timeout).
    let (mut receiver, mut scene) = pagerduty_scene().await;
    let id = raise(&mut scene).await;
    let trigger = receiver.next(20).await.json();
    let reply = act(&mut scene.sup, id, EscalationAction::Ack).await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    assert_eq!(
        receiver.next(20).await.json()["event_action"],
        "acknowledge"
    );

    let server = scene.server.restart().await;
    let mut sup = server.login(&scene.sup_id).await;
    let reply = act(
        &mut sup,
        id,
        EscalationAction::Resolve {
            outcome: "ok".into(),
        },
    )
    .await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let resolve = receiver.next(20).await.json();
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(
        resolve["dedup_key"], trigger["dedup_key"],
        "the same incident"
    );
}

/// An operator resolving on a stopped hub's folder cannot reach the pager; the
/// next start closes the incident, once.
#[tokio::test]
async fn an_escalation_resolved_on_a_stopped_hub_closes_its_pager_incident_at_the_next_start() {
    let (mut receiver, mut scene) = pagerduty_scene().await;
    let id = raise(&mut scene).await;
    let trigger = receiver.next(20).await.json();
    assert_eq!(trigger["event_action"], "trigger", "{trigger}");
    let server = scene.server.restart_with(|data| {
        let out = std::process::Command::new(peerhub_tests::process::binary())
            .args(["escalation", "resolve", "--data"])
            .arg(data)
            .arg(id.to_string())
            .args(["--outcome", "closed by the operator"])
            .output()
            .expect("run peerhub");
        assert!(out.status.success(), "{out:?}");
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            printed["pager"].as_str().unwrap().contains("next starts"),
            "the operator is told when the pager hears: {printed}"
        );
    });
    let server = server.await;
    let page = receiver.next(20).await.json();
    assert_eq!(page["event_action"], "resolve", "{page}");
    assert_eq!(page["dedup_key"], trigger["dedup_key"]);
    // Owed once: a further start sends nothing more.
    let _server = server.restart().await;
    assert!(receiver.try_next(1_500).await.is_none());
}

/// A scene whose pager is a PagerDuty receiver that accepts every page.
async fn pagerduty_scene() -> (HttpReceiver, Scene) {
    let receiver = HttpReceiver::start(|_, _| 202).await;
    let url = format!("{}/v2/enqueue", receiver.base);
    let scene = scene(|c| {
        c.escalation.pager_url = Some(url);
        c.escalation.pager_format = PagerFormat::PagerDuty;
        c.escalation.pager_key = Some("k".into());
    })
    .await;
    (receiver, scene)
}
