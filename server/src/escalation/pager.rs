//! The pager hook: for supervisors who are not at the console, every routing step,
//! acknowledgement and resolution is sent to a paging service, in the format the
//! configuration names, retried with backoff until the service accepts it.
//!
//! | format | trigger | acknowledge | resolve |
//! | --- | --- | --- | --- |
//! | `generic` | signed JSON, `event: "routed"` | `event: "acknowledged"` | `event: "resolved"` |
//! | `pagerduty` | Events API v2 `trigger`, dedup key per escalation | `acknowledge` | `resolve` |
//! | `opsgenie` | Alert API create, alias per escalation | `POST …/{alias}/acknowledge?identifierType=alias` | `…/close` |
//! | `ntfy` | message to the topic URL, priority by severity | low-priority follow-up | low-priority follow-up |
//!
//! Every body is content-free: severity, routing level, the group's id and name,
//! time left, a link to the console. Never a person's name or key, a note, a
//! message or the context. The generic body is signed with the hub's own Ed25519
//! key over `peerhub/1/pager\n` ‖ body, sent as `x-peerhub-signature` (base64url)
//! with the key in `x-peerhub-key`, so the receiver can check it came from this hub.
//!
//! One worker per hub sends in order (so a service never hears "resolve" before
//! "trigger"): a 2xx moves on, a 5xx, 408, 429 or a network failure is retried
//! with backoff, any other 4xx is logged and dropped (the request itself is wrong,
//! and repeating it would hold up every page behind it).

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use peerhub_protocol::encoding::b64;
use peerhub_protocol::escalation::Severity;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::alerts::AlertSummary;

/// First retry delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pages waiting for the worker. Past it a page is dropped with a warning (the
/// console and push still carry the escalation).
const QUEUE: usize = 1024;

/// The signing domain of generic pager bodies.
pub const PAGER_DOMAIN: &[u8] = b"peerhub/1/pager\n";

/// The wire format of the pager hook (`escalation.pager_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PagerFormat {
    /// peerhub's own signed JSON.
    #[default]
    Generic,
    /// PagerDuty Events API v2.
    PagerDuty,
    /// Opsgenie Alert API v2.
    Opsgenie,
    /// ntfy (a topic URL).
    Ntfy,
}

impl PagerFormat {
    /// Every format, by its configuration name.
    pub const NAMES: &'static [&'static str] = &["generic", "pagerduty", "opsgenie", "ntfy"];

    /// The format a configuration name means.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "generic" => Some(Self::Generic),
            "pagerduty" => Some(Self::PagerDuty),
            "opsgenie" => Some(Self::Opsgenie),
            "ntfy" => Some(Self::Ntfy),
            _ => None,
        }
    }
}

/// Where and how to page.
#[derive(Debug, Clone)]
pub struct PagerSettings {
    /// The format.
    pub format: PagerFormat,
    /// Where to send (PagerDuty's enqueue URL, Opsgenie's alerts URL, the ntfy
    /// topic URL, or the generic receiver).
    pub url: String,
    /// PagerDuty routing key, Opsgenie API key or ntfy access token.
    pub key: Option<secrecy::SecretString>,
}

/// What happened to an escalation, as a page says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageEvent {
    /// Routed to someone (first routing, or re-routed after a deadline).
    Trigger,
    /// A supervisor acknowledged it in peerhub.
    Acknowledge,
    /// It was resolved in peerhub.
    Resolve,
}

/// One prepared HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    /// Where to POST.
    pub url: String,
    /// Headers besides content-length.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The identity of this hub in dedup keys and aliases: the first 8 characters of
/// its public key, so two hubs paging one service do not close each other's alerts.
fn dedup_key(hub: &str, id: u64) -> String {
    format!("peerhub-{hub}-{id}")
}

/// "1 min 30 s", "45 s", or "past its deadline".
pub fn time_words(seconds: Option<u64>) -> String {
    match seconds {
        None => "no deadline".into(),
        Some(0) => "past its deadline".into(),
        Some(s) if s < 60 => format!("{s} s left"),
        Some(s) if s % 60 == 0 => format!("{} min left", s / 60),
        Some(s) => format!("{} min {} s left", s / 60, s % 60),
    }
}

/// The one-line, content-free headline every format uses.
pub fn headline(summary: &AlertSummary, now_ms: u64) -> String {
    format!(
        "peerhub: {} escalation {} in {}, {}",
        summary.severity.as_str(),
        summary.id,
        summary.group_name,
        time_words(summary.seconds_left(now_ms))
    )
}

/// Builds the request for one event. Pure: the tests check every format against it
/// and against a receiver.
pub fn request(
    settings: &PagerSettings,
    hub: &SigningKey,
    event: PageEvent,
    summary: &AlertSummary,
    link: &str,
    now_ms: u64,
) -> PageRequest {
    let hub_id: String = b64(hub.verifying_key().as_bytes())
        .chars()
        .take(8)
        .collect();
    let dedup = dedup_key(&hub_id, summary.id);
    let key = settings
        .key
        .as_ref()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).to_string())
        .unwrap_or_default();
    let left = summary.seconds_left(now_ms);
    let json_headers = vec![("content-type", "application/json".to_string())];
    match settings.format {
        PagerFormat::Generic => {
            let body = json!({
                "event": match event {
                    PageEvent::Trigger => "routed",
                    PageEvent::Acknowledge => "acknowledged",
                    PageEvent::Resolve => "resolved",
                },
                "escalation": summary.id,
                "group": summary.group.as_str(),
                "group_name": summary.group_name,
                "severity": summary.severity.as_str(),
                "level": summary.level,
                "deadline_ms": summary.deadline_ms,
                "seconds_left": left,
                "created_ms": summary.created_ms,
                "link": link,
            });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let mut signed = PAGER_DOMAIN.to_vec();
            signed.extend_from_slice(&body);
            let mut headers = json_headers;
            headers.push(("x-peerhub-signature", b64(&hub.sign(&signed).to_bytes())));
            headers.push(("x-peerhub-key", b64(hub.verifying_key().as_bytes())));
            PageRequest {
                url: settings.url.clone(),
                headers,
                body,
            }
        }
        PagerFormat::PagerDuty => {
            let body = match event {
                PageEvent::Trigger => json!({
                    "routing_key": key,
                    "event_action": "trigger",
                    "dedup_key": dedup,
                    "payload": {
                        "summary": headline(summary, now_ms),
                        "source": "peerhub",
                        "severity": match summary.severity {
                            Severity::Emergency => "critical",
                            Severity::Urgent => "error",
                            Severity::Concern => "warning",
                        },
                        "component": summary.group.as_str(),
                        "group": summary.group_name,
                        "class": "escalation",
                        "custom_details": {
                            "escalation": summary.id,
                            "level": summary.level,
                            "deadline_ms": summary.deadline_ms,
                            "seconds_left": left,
                        },
                    },
                    "client": "peerhub",
                    "client_url": link,
                    "links": [{ "href": link, "text": "Open in peerhub" }],
                }),
                PageEvent::Acknowledge | PageEvent::Resolve => json!({
                    "routing_key": key,
                    "event_action": if event == PageEvent::Resolve { "resolve" } else { "acknowledge" },
                    "dedup_key": dedup,
                }),
            };
            PageRequest {
                url: settings.url.clone(),
                headers: json_headers,
                body: serde_json::to_vec(&body).unwrap_or_default(),
            }
        }
        PagerFormat::Opsgenie => {
            let mut headers = json_headers;
            headers.push(("authorization", format!("GenieKey {key}")));
            let base = settings.url.trim_end_matches('/');
            let (url, body) = match event {
                PageEvent::Trigger => {
                    let message: String = headline(summary, now_ms).chars().take(130).collect();
                    (
                        base.to_string(),
                        json!({
                            "message": message,
                            "alias": dedup,
                            "description": format!("Open {link} to acknowledge."),
                            "priority": match summary.severity {
                                Severity::Emergency => "P1",
                                Severity::Urgent => "P2",
                                Severity::Concern => "P3",
                            },
                            "source": "peerhub",
                            "entity": summary.group.as_str(),
                            "tags": ["peerhub", summary.severity.as_str()],
                            "details": {
                                "escalation": summary.id.to_string(),
                                "group": summary.group_name,
                                "level": summary.level.to_string(),
                                "link": link,
                            },
                        }),
                    )
                }
                PageEvent::Acknowledge | PageEvent::Resolve => {
                    let action = if event == PageEvent::Resolve {
                        "close"
                    } else {
                        "acknowledge"
                    };
                    (
                        format!("{base}/{dedup}/{action}?identifierType=alias"),
                        json!({ "source": "peerhub", "user": "peerhub",
                                "note": format!("{action} in peerhub") }),
                    )
                }
            };
            PageRequest {
                url,
                headers,
                body: serde_json::to_vec(&body).unwrap_or_default(),
            }
        }
        PagerFormat::Ntfy => {
            let (title, priority, tags, text) = match event {
                PageEvent::Trigger => (
                    format!("peerhub {} escalation", summary.severity.as_str()),
                    match summary.severity {
                        Severity::Emergency => "5",
                        Severity::Urgent => "4",
                        Severity::Concern => "3",
                    },
                    "rotating_light,peerhub",
                    headline(summary, now_ms),
                ),
                PageEvent::Acknowledge => (
                    "peerhub escalation acknowledged".to_string(),
                    "2",
                    "white_check_mark,peerhub",
                    format!("peerhub: escalation {} acknowledged", summary.id),
                ),
                PageEvent::Resolve => (
                    "peerhub escalation resolved".to_string(),
                    "2",
                    "white_check_mark,peerhub",
                    format!("peerhub: escalation {} resolved", summary.id),
                ),
            };
            let mut headers = vec![
                ("content-type", "text/plain; charset=utf-8".to_string()),
                ("title", title),
                ("priority", priority.to_string()),
                ("tags", tags.to_string()),
                ("click", link.to_string()),
            ];
            if !key.is_empty() {
                headers.push(("authorization", format!("Bearer {key}")));
            }
            PageRequest {
                url: settings.url.clone(),
                headers,
                body: text.into_bytes(),
            }
        }
    }
}

/// Sends pages, in order, from one background worker.
#[derive(Debug)]
pub struct Pager {
    settings: PagerSettings,
    signing: Arc<SigningKey>,
    // Sender: the alerts task. Receiver: the pager worker. Bounded (see QUEUE).
    tx: mpsc::Sender<Queued>,
}

/// A page waiting for the worker: the escalation, the request, and who hears
/// when the service has taken it (a routing step's done mark waits for that).
type Queued = (u64, PageRequest, Option<oneshot::Sender<()>>);

/// An HTTP client for outgoing hooks: rustls with the webpki roots, a timeout per
/// attempt.
pub fn http_client() -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let builder = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT);
    let builder = match tls {
        Ok(tls) => builder.tls_backend_preconfigured(tls),
        Err(_) => builder,
    };
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

impl Pager {
    /// A pager for `settings`, signing generic bodies with the hub key made from
    /// `seed`; its worker runs on `tracker` until `stop`.
    pub fn new(
        settings: PagerSettings,
        seed: [u8; 32],
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tracker.spawn(worker(http_client(), rx, stop));
        Self {
            settings,
            signing: Arc::new(SigningKey::from_bytes(&seed)),
            tx,
        }
    }

    /// Queues the page for `event`.
    pub fn send(&self, event: PageEvent, summary: &AlertSummary, link: &str, now_ms: u64) {
        self.send_then(event, summary, link, now_ms, None);
    }

    /// Queues the page for `event`; `taken` hears once the service accepted it
    /// (or refused it for good: repeating would not help). Dropped unheard when
    /// the page is not sent (the queue full, the hub stopping).
    pub fn send_then(
        &self,
        event: PageEvent,
        summary: &AlertSummary,
        link: &str,
        now_ms: u64,
        taken: Option<oneshot::Sender<()>>,
    ) {
        let prepared = request(&self.settings, &self.signing, event, summary, link, now_ms);
        if self.tx.try_send((summary.id, prepared, taken)).is_err() {
            tracing::warn!(escalation = summary.id, "pager queue full; page dropped");
        }
    }
}

async fn worker(client: reqwest::Client, mut rx: mpsc::Receiver<Queued>, stop: CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = rx.recv() => next,
        };
        let Some((id, page, taken)) = next else {
            return;
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1u32.. {
            let mut builder = client.post(&page.url);
            for (name, value) in &page.headers {
                builder = builder.header(*name, value);
            }
            match builder.body(page.body.clone()).send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(escalation = id, attempt, "pager accepted");
                    if let Some(taken) = taken {
                        let _ = taken.send(());
                    }
                    break;
                }
                Ok(response) => {
                    let status = response.status();
                    let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
                    if !retry {
                        tracing::error!(escalation = id, %status, "pager refused the page; not retried (check escalation.pager_format and pager_key)");
                        if let Some(taken) = taken {
                            let _ = taken.send(());
                        }
                        break;
                    }
                    tracing::warn!(escalation = id, attempt, %status, "pager refused; retrying");
                }
                Err(error) => {
                    // reqwest's message can name the URL, a secret: say only what kind.
                    let kind = if error.is_timeout() {
                        "timeout"
                    } else if error.is_connect() {
                        "connect"
                    } else {
                        "request"
                    };
                    tracing::warn!(
                        escalation = id,
                        attempt,
                        kind,
                        "pager unreachable; retrying"
                    );
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    tracing::warn!(
                        escalation = id,
                        "hub stopping before the pager took this page; a page for an \
                         escalation still unacknowledged is sent again at the next start"
                    );
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
