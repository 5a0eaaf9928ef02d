//! Rate limits and caps: hit each one, see its code and retry time, and see that
//! nothing else changed.

use std::time::Duration;

use futures_util::StreamExt as _;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::FlagPayload;
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_server::config::Config;
use peerhub_tests::identity::gid;
use peerhub_tests::{Client, Identity, ProcessServer, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

#[track_caller]
fn limited(frame: &ServerFrame) -> u64 {
    match frame {
        ServerFrame::Error {
            code: ErrorCode::RateLimited,
            retry_after_ms: Some(ms),
            ..
        } => *ms,
        other => panic!("expected rate_limited with a retry time, got {other:?}"),
    }
}

async fn circle(tweak: impl FnOnce(&mut Config)) -> (TestServer, Client, Identity) {
    let mut server = TestServer::start_with(tweak).await;
    server
        .create_group_with("circle", |g| g.waiting_room = Some(false))
        .await;
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    client.join("circle", "River", None).await;
    (server, client, me)
}

#[tokio::test]
async fn messages_beyond_the_burst_are_refused_with_a_retry_time_and_change_nothing() {
    let (server, mut client, me) = circle(|c| {
        c.limits.message_burst = 3;
        c.limits.messages_per_second = 1;
    })
    .await;
    // Post until refused (however slow the machine, the burst runs out long before
    // twenty posts); the refused one must change nothing.
    let mut refused = None;
    for i in 0..20 {
        let before = server.hub().store.digest().unwrap();
        let env = me.post("circle", &format!("m{i}"));
        let reply = client
            .request(|id| ClientFrame::Post {
                id,
                group: gid("circle"),
                env,
            })
            .await;
        if matches!(reply, ServerFrame::Error { .. }) {
            let wait = limited(&reply);
            assert!(wait <= 1_000, "{wait} ms");
            assert_eq!(
                server.hub().store.digest().unwrap(),
                before,
                "a refused message changes nothing"
            );
            refused = Some((i, wait));
            break;
        }
    }
    let (count, wait) = refused.expect("the burst runs out");
    assert!(count >= 3, "the burst of 3 goes through first ({count})");
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    client.post("circle", "after waiting").await;
}

#[tokio::test]
async fn a_flag_over_the_limit_is_answered_never_dropped() {
    let (_server, mut client, me) = circle(|c| c.limits.flags_per_minute = 1).await;
    let mut answers = Vec::new();
    for _ in 0..12 {
        let env = me.signed(Kind::Flag, |counter, ts| FlagPayload {
            group: gid("circle"),
            about: me.key(),
            seq: None,
            severity: Severity::Urgent,
            consent: Consent::Own,
            reason: None,
            withhold_notice: None,
            note: None,
            counter,
            ts,
        });
        answers.push(
            client
                .request(|id| ClientFrame::Flag {
                    id,
                    group: gid("circle"),
                    env,
                })
                .await,
        );
    }
    let flagged = answers
        .iter()
        .filter(|a| matches!(a, ServerFrame::Flagged { .. }))
        .count();
    assert_eq!(flagged, 10, "the burst goes through");
    for refused in &answers[10..] {
        limited(refused);
        let ServerFrame::Error { message, .. } = refused else {
            unreachable!()
        };
        assert!(
            message.contains("emergency services"),
            "a refused flag still signposts: {message}"
        );
    }
}

#[tokio::test]
async fn too_many_connections_for_one_key_are_refused() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_key = 2).await;
    let me = Identity::generate();
    let _a = server.login(&me).await;
    let _b = server.login(&me).await;
    let mut third = server.client().await;
    limited(&third.try_login(&me).await);
    let closed = third.expect_closed().await;
    assert_eq!(closed.code, Some(1013), "{closed:?}");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _again = server.login(&me).await; // a place came free
}

#[tokio::test]
async fn failed_logins_from_one_address_are_limited_across_connections() {
    let server = TestServer::start_with(|c| {
        c.limits.limit_loopback = true;
        c.limits.failed_logins_per_ip_per_minute = 1;
    })
    .await;
    let me = Identity::generate();
    let mut closed_early = false;
    // The burst is 10 failures; each connection may fail three times.
    for _ in 0..5 {
        let mut client = server.client().await;
        for _ in 0..3 {
            client
                .send(&ClientFrame::Auth {
                    id: None,
                    env: me.auth("wrong challenge"),
                })
                .await;
        }
        let closed = client.expect_closed().await;
        assert_eq!(closed.code, Some(1008));
        if closed.reason.contains("wait a minute") {
            closed_early = true;
            break;
        }
    }
    assert!(
        closed_early,
        "the address is held back once it has failed too often"
    );
}

async fn ws_status(server: &TestServer, origin: Option<&str>) -> u16 {
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, response)) => {
            let _hello = ws.next().await;
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn connection_attempts_and_pending_logins_are_capped_per_address() {
    let fast = TestServer::start_with(|c| {
        c.limits.limit_loopback = true;
        c.limits.connects_per_ip_per_minute = 4; // burst 2
    })
    .await;
    assert_eq!(ws_status(&fast, None).await, 101);
    assert_eq!(ws_status(&fast, None).await, 101);
    assert_eq!(
        ws_status(&fast, None).await,
        429,
        "too many new connections: retry later"
    );

    let pending = TestServer::start_with(|c| c.limits.max_pending_logins = 2).await;
    let _a = pending.client().await;
    let _b = pending.client().await;
    assert_eq!(
        ws_status(&pending, None).await,
        503,
        "too many connections not logged in"
    );
}

#[tokio::test]
async fn the_websocket_checks_the_browser_origin() {
    let server =
        TestServer::start_with(|c| c.allowed_origins = vec!["https://peer.example.org".into()])
            .await;
    let own = format!("http://{}", server.addr);
    assert_eq!(
        ws_status(&server, None).await,
        101,
        "no Origin: not a browser page"
    );
    assert_eq!(
        ws_status(&server, Some(&own)).await,
        101,
        "the hub's own page"
    );
    assert_eq!(
        ws_status(&server, Some("https://peer.example.org")).await,
        101,
        "a configured origin"
    );
    assert_eq!(ws_status(&server, Some("https://evil.example")).await, 403);
}

#[tokio::test]
async fn a_full_group_admits_no_new_member_but_staff_still_come_in() {
    let mut server = TestServer::start_with(|c| c.limits.max_members_per_group = 2).await;
    server
        .create_group_with("small", |g| g.waiting_room = Some(false))
        .await;
    // The cap counts people in the room now: these two stay connected.
    let mut present = Vec::new();
    for name in ["One", "Two"] {
        let mut client = server.login(&Identity::generate()).await;
        client.join("small", name, None).await;
        present.push(client);
    }
    let before = server.hub().store.digest().unwrap();
    let me = Identity::generate();
    let mut third = server.login(&me).await;
    let env = me.join("small", "Three");
    let reply = third
        .request(|id| ClientFrame::Join {
            id,
            group: gid("small"),
            after: None,
            access_code: None,
            env,
        })
        .await;
    assert!(
        matches!(
            reply,
            ServerFrame::Error {
                code: ErrorCode::Full,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(server.hub().store.digest().unwrap(), before);
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("small", "Jo", None).await;
    // Someone who left holds no place (staff count too): once one of the two and
    // the facilitator go, the third gets in.
    drop(present.pop());
    drop(fac);
    let mut joined = None;
    for _ in 0..15 {
        let env = me.join("small", "Three");
        let reply = third
            .request(|id| ClientFrame::Join {
                id,
                group: gid("small"),
                after: None,
                access_code: None,
                env,
            })
            .await;
        if matches!(reply, ServerFrame::Joined { .. }) {
            joined = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        joined.is_some(),
        "a place freed by someone who left is taken"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_and_an_active_one_is_not() {
    let server = TestServer::start_with(|c| {
        c.limits.ping_interval = Duration::from_millis(200);
        c.limits.idle_timeout = Duration::from_millis(1_000);
    })
    .await;
    // This one never reads, so it never answers pings.
    let (mut silent, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    // This one talks.
    let mut listening = server.client().await;
    listening.login(&Identity::generate()).await;
    // The active one keeps talking while the silent one says nothing.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = listening
            .request(|id| ClientFrame::Records { id, after: None })
            .await;
        assert!(matches!(reply, ServerFrame::Records { .. }), "{reply:?}");
    }
    let mut code = None;
    while let Some(Ok(message)) = silent.next().await {
        if let Message::Close(frame) = message {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(4003), "idle timeout");
    let reply = listening
        .request(|id| ClientFrame::Records { id, after: None })
        .await;
    assert!(
        matches!(reply, ServerFrame::Records { .. }),
        "still connected: {reply:?}"
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_member_that_stops_reading_is_dropped_while_the_others_get_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let process = ProcessServer::start(&data, &["--store-cache-mb", "1"]).await;
    let mut admin = process.admin().await;
    admin.create_group("flood", "Flood").await;
    // The slow member joins, then never reads again.
    let slow_id = Identity::generate();
    let mut slow = Client::connect(process.addr).await;
    slow.login(&slow_id).await;
    slow.join("flood", "Slow", None).await;
    let talker_id = Identity::generate();
    let mut talker = Client::connect(process.addr).await;
    talker.login(&talker_id).await;
    talker.join("flood", "Talker", None).await;
    let mut reader = Client::connect(process.addr).await;
    reader.login(&Identity::generate()).await;
    reader.join("flood", "Reader", None).await;

    let pid = process.pid();
    let start = rss_kib(pid);
    let body = "x".repeat(3_900);
    const FLOOD: usize = 2_000; // about 8 MiB of frames for the silent member
    const WINDOW: usize = 64;
    let mut peak = start;
    let reading = tokio::spawn(async move {
        for _ in 0..FLOOD {
            reader.next_event("flood").await;
        }
        reader
    });
    // Pipelined, WINDOW posts in flight at a time.
    for start_at in (0..FLOOD).step_by(WINDOW) {
        let mut ids = Vec::new();
        for _ in start_at..(start_at + WINDOW).min(FLOOD) {
            let env = talker_id.post("flood", &body);
            let id = talker.next_id();
            talker
                .send(&ClientFrame::Post {
                    id: Some(id),
                    group: gid("flood"),
                    env,
                })
                .await;
            ids.push(id);
        }
        for id in ids {
            assert!(matches!(talker.reply_to(id).await, ServerFrame::Ack { .. }));
        }
        peak = peak.max(rss_kib(pid));
    }
    let _reader = reading.await.unwrap(); // the others kept receiving everything
    peak = peak.max(rss_kib(pid));
    let growth_mib = (peak.saturating_sub(start)) / 1024;
    println!("slow reader: server RSS {} MiB -> peak {} MiB (+{growth_mib} MiB) over a {FLOOD}-message flood", start / 1024, peak / 1024);
    // The figure is for the record: how much memory a silent member costs is
    // measured in the benchmarks (docs/PERFORMANCE.md), where the machine is quiet.
    let _ = growth_mib;
    // The silent member was dropped once about 1 MiB waited for it: it resumes from
    // its last seq instead of holding the hub's memory. The close frame (4001,
    // slow_consumer) reaches it only if its socket takes bytes again; a socket that
    // stays full is simply cut.
    let closed = tokio::time::timeout(Duration::from_secs(30), slow.expect_closed())
        .await
        .expect("closed");
    assert!(
        closed.code.is_none()
            || (closed.code == Some(4001) && closed.reason.contains("slow_consumer")),
        "{closed:?}"
    );
}
