//! `POST /push/ack` refusals, each with its documented status (PROTOCOL.md §9.6):
//! an unknown escalation (404), a stale signature and an oversize body (400), a
//! foreign page's Origin (403), and a hub with no room for the request (429, a
//! wait; it was 503 "shutting down"). Each changes nothing.

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::payload::{EscalationActPayload, EscalationAction};
use peerhub_tests::{now_ms, Identity, TestServer};

use crate::alerting::{raise, scene};

/// POSTs `body` to `/push/ack` with `origin` (if any); the status and the JSON
/// answer.
async fn post(server: &TestServer, body: &str, origin: Option<&str>) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = server.server().local_addr();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let origin = origin
        .map(|o| format!("origin: {o}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /push/ack HTTP/1.1\r\nhost: {addr}\r\n{origin}\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = socket.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let (_, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
    (status, serde_json::from_str(body).unwrap_or_default())
}

fn ack(who: &Identity, escalation: u64, ts: u64) -> String {
    let env = who.sign(
        Kind::Escalation,
        &EscalationActPayload {
            escalation,
            action: EscalationAction::Ack,
            counter: who.next_counter(),
            ts,
        },
    );
    serde_json::to_string(&env).unwrap()
}

fn code(answer: &serde_json::Value) -> Option<&str> {
    answer["code"].as_str()
}

#[tokio::test]
async fn unknown_stale_oversize_and_foreign_acks_get_their_statuses_and_change_nothing() {
    let mut scene = scene(|_| {}).await;
    let id = raise(&mut scene).await;
    let own = format!("http://{}", scene.server.server().local_addr());
    // What the flag set going (the facilitators' note, the routing) is written
    // after it is answered: let it land before the refusals that must change nothing.
    let before = scene.server.settled_digest().await;
    let sup = scene.sup_id.clone();

    let (status, answer) = post(&scene.server, &ack(&sup, id + 1000, now_ms()), Some(&own)).await;
    assert_eq!(
        (status, code(&answer)),
        (404, Some("not_found")),
        "{answer}"
    );

    let stale = ack(&sup, id, now_ms() - 10 * 60 * 1000);
    let (status, answer) = post(&scene.server, &stale, Some(&own)).await;
    assert_eq!((status, code(&answer)), (400, Some("stale")), "{answer}");

    let oversize = format!("{{\"pad\":\"{}\"}}", "x".repeat(9 * 1024));
    let (status, answer) = post(&scene.server, &oversize, Some(&own)).await;
    assert_eq!(
        (status, code(&answer)),
        (400, Some("too_large")),
        "{answer}"
    );

    let good = ack(&sup, id, now_ms());
    let (status, answer) = post(&scene.server, &good, Some("http://evil.example:7070")).await;
    assert_eq!(
        (status, code(&answer)),
        (403, Some("forbidden")),
        "{answer}"
    );

    assert_eq!(scene.server.hub().store.digest().unwrap(), before);
    // The same ack from the hub's own page is taken.
    let (status, answer) = post(&scene.server, &good, Some(&own)).await;
    assert_eq!(
        (status, answer["type"].as_str()),
        (200, Some("ok")),
        "{answer}"
    );
}

#[tokio::test]
async fn a_hub_with_no_room_for_the_request_asks_for_a_wait_with_429() {
    let server = TestServer::start_with(|c| {
        c.limits.limit_loopback = true;
        c.limits.max_connections_per_ip = 1;
    })
    .await;
    // One connection holds this address's only place.
    let _holder = server.client().await;
    let (status, answer) = post(&server, "{}", None).await;
    assert_eq!(
        (status, code(&answer)),
        (429, Some("rate_limited")),
        "{answer}"
    );
    assert!(answer["retry_after_ms"].as_u64().is_some(), "{answer}");
}
