//! `/metrics` (Prometheus text, parsed with a parser crate) and `/readyz`: every
//! promised series is there, the counters move with real traffic, and the figures
//! name nobody.

use std::collections::HashMap;

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::payload::FlagPayload;
use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Identity, TestServer};

use super::http::{get, header};

/// One scrape: series name with its labels (sorted, `k=v,...`) → value.
pub(super) struct Scrape {
    values: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    pub(super) fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = series_key(name, labels.iter().map(|(k, v)| (*k, *v)));
        *self
            .values
            .get(&key)
            .unwrap_or_else(|| panic!("no series {key} in\n{}", self.text))
    }
}

fn series_key<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut labels: Vec<String> = labels.map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

pub(super) async fn scrape(server: &TestServer) -> Scrape {
    let (status, headers, body) = get(server.addr, "/metrics", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        header(&headers, "content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{headers:?}"
    );
    parse(body)
}

/// A `/metrics` body's series. (Matching its text instead is a trap: a series'
/// `# HELP` line may read like a sample, "peerhub_store_low_space 1 while…".)
pub(super) fn parse(body: String) -> Scrape {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let mut values = HashMap::new();
    for sample in parsed.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("unexpected sample type {other:?}"),
        };
        let key = series_key(
            &sample.metric,
            sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        values.insert(key, value);
    }
    Scrape { values, text: body }
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let mut server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 1;
        c.limits.message_burst = 4;
    })
    .await;
    server.create_group("circle").await;
    let before = scrape(&server).await;
    for name in [
        "peerhub_connections",
        "peerhub_connections_pending_login",
        "peerhub_groups_live",
        "peerhub_messages_total",
        "peerhub_frames_sent_total",
        "peerhub_outbox_drops_total",
        "peerhub_slow_client_disconnects_total",
        "peerhub_escalations_unacknowledged",
        "peerhub_escalation_oldest_unacknowledged_seconds",
        "peerhub_store_bytes",
    ] {
        before.get(name, &[]);
    }
    assert_eq!(before.get("peerhub_messages_total", &[]), 0.0);
    assert_eq!(before.get("peerhub_escalations_unacknowledged", &[]), 0.0);
    assert_eq!(
        before.get(
            "peerhub_escalations_open",
            &[("severity", "emergency"), ("level", "1")]
        ),
        0.0
    );
    assert!(before.get("peerhub_store_bytes", &[]) > 0.0);

    // Two people talk: three messages each, seen by the other.
    let river_id = Identity::generate();
    let mut river = server.login(&river_id).await;
    river.join("circle", "River", None).await;
    let mut sky = server.login(&Identity::generate()).await;
    sky.join("circle", "Sky", None).await;
    for i in 0..3 {
        river.post("circle", &format!("hello {i}")).await;
        sky.post("circle", &format!("hi {i}")).await;
    }
    // A frame that is not JSON, and a burst past the message limit.
    river
        .expect_error("not json at all", None, ErrorCode::Malformed)
        .await;
    let mut limited = 0;
    for i in 0..6 {
        let env = river_id.post("circle", &format!("more {i}"));
        match river.try_post_env("circle", env).await {
            Ok(ServerFrame::Ack { .. }) => {}
            Ok(ServerFrame::Error {
                code: ErrorCode::RateLimited,
                ..
            }) => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(limited > 0, "the burst of 4 a second was exceeded");
    // A distress flag nobody has acknowledged yet.
    let env = river_id.signed(Kind::Flag, |counter, ts| FlagPayload {
        group: gid("circle"),
        about: river_id.key(),
        seq: None,
        severity: Severity::Urgent,
        consent: Consent::Own,
        reason: None,
        withhold_notice: None,
        note: None,
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
    server.clock.advance(7_000);

    let after = scrape(&server).await;
    let accepted = 6.0 + (6 - limited) as f64;
    assert_eq!(after.get("peerhub_messages_total", &[]), accepted);
    assert!(
        after.get("peerhub_frames_sent_total", &[])
            >= before.get("peerhub_frames_sent_total", &[]) + 2.0 * accepted,
        "every message reached both members"
    );
    assert_eq!(
        after.get("peerhub_rejected_total", &[("code", "malformed")]),
        1.0
    );
    assert_eq!(
        after.get("peerhub_rejected_total", &[("code", "rate_limited")]),
        limited as f64
    );
    assert_eq!(
        after.get("peerhub_rate_limited_total", &[("limit", "messages")]),
        limited as f64
    );
    assert_eq!(after.get("peerhub_connections", &[]), 2.0);
    assert_eq!(after.get("peerhub_connections_pending_login", &[]), 0.0);
    assert_eq!(after.get("peerhub_groups_live", &[]), 1.0);
    assert_eq!(after.get("peerhub_escalations_unacknowledged", &[]), 1.0);
    // Nobody is on the rota, so it went straight past the rota's levels.
    let urgent: f64 = ["1", "2", "3", "4"]
        .iter()
        .map(|level| {
            after.get(
                "peerhub_escalations_open",
                &[("severity", "urgent"), ("level", level)],
            )
        })
        .sum();
    assert_eq!(urgent, 1.0);
    assert_eq!(
        after.get(
            "peerhub_escalations_open",
            &[("severity", "urgent"), ("level", "1")]
        ),
        0.0
    );
    let age = after.get("peerhub_escalation_oldest_unacknowledged_seconds", &[]);
    assert!(
        age >= 7.0,
        "the oldest unacknowledged escalation is {age} s old"
    );
    // Counts only: no key, name, group or message in the text.
    for secret in [
        "River",
        "Sky",
        "hello",
        "circle",
        &river_id.key().to_string(),
    ] {
        assert!(!after.text.contains(secret), "{secret} appears in /metrics");
    }
}

#[tokio::test]
async fn metrics_are_for_this_machine_unless_opened() {
    let server = TestServer::start().await;
    let (status, _, _) = get(server.addr, "/metrics", "X-Forwarded-For: 203.0.113.9\r\n").await;
    assert_eq!(
        status, 403,
        "a request relayed by a proxy is not from this machine"
    );
    let (status, _, _) = get(server.addr, "/metrics", "Forwarded: for=203.0.113.9\r\n").await;
    assert_eq!(status, 403);
    let open = TestServer::start_with(|c| c.metrics_public = true).await;
    let (status, _, body) = get(open.addr, "/metrics", "X-Forwarded-For: 203.0.113.9\r\n").await;
    assert_eq!(status, 200);
    assert!(body.contains("peerhub_messages_total"));
}

#[tokio::test]
async fn readyz_says_ready_while_serving() {
    let server = TestServer::start().await;
    let (status, _, body) = get(server.addr, "/readyz", "").await;
    assert_eq!((status, body.as_str()), (200, "ready"));
}
