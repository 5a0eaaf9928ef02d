//! The pager hook: for supervisors who are not at the console, every routing step
//! is POSTed to a configured URL, signed by the hub, and retried with backoff until
//! the receiver answers 2xx (or the hub stops).
//!
//! The body says only what a pager needs — escalation id, group id, severity,
//! level, who it waits for, the deadline — never names, message content or context.
//! It is signed with the hub's own Ed25519 key over `peerhub/1/pager\n` ‖ body,
//! sent as `x-peerhub-signature` (base64url) with the key in `x-peerhub-key`, so the
//! receiver can check it came from this hub.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use peerhub_protocol::encoding::b64;
use peerhub_protocol::escalation::EscalationView;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// First retry delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The signing domain of pager bodies.
pub const PAGER_DOMAIN: &[u8] = b"peerhub/1/pager\n";

#[derive(Serialize)]
struct PageBody<'a> {
    escalation: u64,
    group: &'a str,
    severity: &'a str,
    level: u8,
    waiting_for: Vec<String>,
    deadline_ms: Option<u64>,
    created_ms: u64,
}

/// Sends pages.
pub struct Pager {
    client: reqwest::Client,
    url: Arc<str>,
    signing: Arc<SigningKey>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Pager {
    /// A pager posting to `url`, signing with the hub key made from `seed`.
    pub fn new(url: String, seed: [u8; 32], tracker: TaskTracker, stop: CancellationToken) -> Self {
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
        let client = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        Self {
            client,
            url: url.into(),
            signing: Arc::new(SigningKey::from_bytes(&seed)),
            tracker,
            stop,
        }
    }

    /// Posts a page for the escalation's current step, retrying in the background
    /// until it is accepted.
    pub fn page(&self, view: &EscalationView) {
        let body = PageBody {
            escalation: view.id,
            group: view.group.as_str(),
            severity: view.severity.as_str(),
            level: view.level,
            waiting_for: view.waiting_for.iter().map(|k| k.to_b64()).collect(),
            deadline_ms: view.deadline_ms,
            created_ms: view.created_ms,
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut signed = PAGER_DOMAIN.to_vec();
        signed.extend_from_slice(&body);
        let signature = b64(&self.signing.sign(&signed).to_bytes());
        let key = b64(self.signing.verifying_key().as_bytes());
        let (client, url, id, stop) = (
            self.client.clone(),
            self.url.clone(),
            view.id,
            self.stop.clone(),
        );
        self.tracker.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1u32.. {
                let sent = client
                    .post(url.as_ref())
                    .header("content-type", "application/json")
                    .header("x-peerhub-signature", &signature)
                    .header("x-peerhub-key", &key)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        tracing::info!(escalation = id, attempt, "pager accepted");
                        return;
                    }
                    Ok(response) => {
                        tracing::warn!(escalation = id, attempt, status = %response.status(), "pager refused; retrying");
                    }
                    Err(error) => {
                        tracing::warn!(escalation = id, attempt, %error, "pager unreachable; retrying");
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => {
                        tracing::warn!(escalation = id, "hub stopping; this page is re-sent at next start");
                        return;
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }
}
