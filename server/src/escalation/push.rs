//! Web Push to staff devices: RFC 8030 delivery, RFC 8291 message encryption
//! (`aes128gcm`) through `web-push-native`, RFC 8292 VAPID with an ES256 JWT signed
//! by `p256`'s ECDSA (both pure Rust, RustCrypto). Nothing here implements
//! cryptography: this module only lays out the JWT (base64url JSON) around the
//! signature the crate makes.
//!
//! The hub's VAPID key pair is made once and kept in the store (`meta`
//! `vapid_secret`). Subscriptions are kept per key (`store::push`). A push says only
//! what [`payload`] puts in it: the escalation id, severity, group name, time left
//! and the console link. A push service answering 404 or 410 means the
//! subscription is gone: the caller removes it.

use std::time::Duration;

use p256::ecdsa::signature::Signer as _;
use peerhub_protocol::encoding::{b64, unb64};
use peerhub_protocol::escalation::Severity;
use web_push_native::{Auth, WebPushBuilder};

use super::alerts::AlertSummary;
use crate::store::records::PushSubscriptionRecord;
use crate::store::{Store, StoreError};

/// How long a VAPID token is valid (RFC 8292 allows up to 24 h).
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What a push service said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Accepted (2xx).
    Delivered,
    /// 404 or 410: the subscription no longer exists.
    Gone,
    /// Anything else (refused, unreachable, malformed subscription); retried at the
    /// next repeat.
    Failed,
}

impl PushOutcome {
    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Gone => "gone",
            Self::Failed => "failed",
        }
    }
}

/// Sends pushes signed with the hub's VAPID key.
pub struct PushSender {
    keys: p256::ecdsa::SigningKey,
    contact: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for PushSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSender").finish_non_exhaustive()
    }
}

/// The content-free JSON a push carries (the service worker shows it).
pub fn payload(summary: &AlertSummary, link: &str, now_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "escalation": summary.id,
        "severity": summary.severity.as_str(),
        "group": summary.group_name,
        "seconds_left": summary.seconds_left(now_ms),
        "url": link,
    }))
    .unwrap_or_default()
}

impl PushSender {
    /// The sender for the hub's VAPID key pair, made and stored on first use.
    /// `None` if the stored key cannot be read as a P-256 key (logged).
    pub fn from_store(store: &Store, contact: String) -> Result<Option<Self>, StoreError> {
        let secret = store.vapid_secret(new_secret)?;
        match p256::SecretKey::from_slice(&secret) {
            Ok(secret) => Ok(Some(Self {
                keys: p256::ecdsa::SigningKey::from(secret),
                contact,
                client: super::pager::http_client(),
            })),
            Err(_) => {
                tracing::error!("the stored VAPID key is unreadable; Web Push is off");
                Ok(None)
            }
        }
    }

    /// The public key as `pushManager.subscribe` takes it: the uncompressed
    /// P-256 point, base64url.
    pub fn public_key_b64(&self) -> String {
        b64(self.keys.verifying_key().to_encoded_point(false).as_bytes())
    }

    /// The `Authorization: vapid t=…, k=…` value for a push to `endpoint`
    /// (RFC 8292 §2–3: `aud` is the endpoint's origin, with its port when it has one).
    fn vapid(&self, endpoint: &http::Uri) -> Option<String> {
        let scheme = endpoint.scheme_str()?;
        let authority = endpoint.authority()?;
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .saturating_add(TOKEN_LIFETIME)
            .as_secs();
        let header = b64(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": format!("{scheme}://{authority}"),
            "exp": exp,
            "sub": self.contact,
        });
        let claims = b64(serde_json::to_string(&claims).ok()?.as_bytes());
        let signing_input = format!("{header}.{claims}");
        // ES256 (RFC 7518 §3.4): ECDSA P-256 with SHA-256, the signature as r ‖ s.
        let signature: p256::ecdsa::Signature = self.keys.sign(signing_input.as_bytes());
        let token = format!("{signing_input}.{}", b64(&signature.to_bytes()));
        Some(format!("vapid t={token}, k={}", self.public_key_b64()))
    }

    /// Encrypts `payload` for `subscription` and posts it to its push service.
    pub async fn send(
        &self,
        subscription: &PushSubscriptionRecord,
        payload: &[u8],
        severity: Severity,
        escalation: u64,
        ttl: Duration,
    ) -> PushOutcome {
        let Some(request) = self.build(subscription, payload, severity, escalation, ttl) else {
            return PushOutcome::Failed;
        };
        let (parts, body) = request.into_parts();
        let mut builder = self.client.post(parts.uri.to_string());
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        match builder.body(body).send().await {
            Ok(response) if response.status().is_success() => PushOutcome::Delivered,
            Ok(response) if matches!(response.status().as_u16(), 404 | 410) => PushOutcome::Gone,
            Ok(response) => {
                tracing::warn!(escalation, status = %response.status(), "push service refused a push");
                PushOutcome::Failed
            }
            Err(_) => {
                tracing::warn!(escalation, "push service unreachable");
                PushOutcome::Failed
            }
        }
    }

    fn build(
        &self,
        subscription: &PushSubscriptionRecord,
        payload: &[u8],
        severity: Severity,
        escalation: u64,
        ttl: Duration,
    ) -> Option<http::Request<Vec<u8>>> {
        let endpoint: http::Uri = subscription.endpoint.parse().ok()?;
        let ua_public =
            p256::PublicKey::from_sec1_bytes(&unb64(&subscription.p256dh).ok()?).ok()?;
        let auth_bytes = unb64(&subscription.auth).ok()?;
        if auth_bytes.len() != 16 {
            return None;
        }
        let auth = Auth::clone_from_slice(&auth_bytes);
        let vapid = self.vapid(&endpoint)?;
        let mut request = WebPushBuilder::new(endpoint, ua_public, auth)
            .with_valid_duration(ttl.max(Duration::from_secs(60)))
            .build(payload.to_vec())
            .ok()?;
        let headers = request.headers_mut();
        headers.insert(http::header::AUTHORIZATION, vapid.parse().ok()?);
        let urgency = match severity {
            Severity::Emergency | Severity::Urgent => "high",
            Severity::Concern => "normal",
        };
        headers.insert("urgency", http::HeaderValue::from_static(urgency));
        // One topic per escalation: a repeat replaces an undelivered earlier push.
        headers.insert("topic", format!("esc{escalation}").parse().ok()?);
        Some(request)
    }
}

/// 32 random bytes that are a valid P-256 private key (all but about 2^-32 of
/// draws are; a few tries are plenty).
pub(crate) fn new_secret() -> Result<Vec<u8>, String> {
    let mut bytes = [0u8; 32];
    for _ in 0..16 {
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the VAPID key: {e}"))?;
        if p256::SecretKey::from_slice(&bytes).is_ok() {
            return Ok(bytes.to_vec());
        }
    }
    Err("no valid VAPID key in 16 draws".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_secret_is_a_p256_key() {
        let secret = new_secret().unwrap();
        assert_eq!(secret.len(), 32);
        assert!(p256::SecretKey::from_slice(&secret).is_ok());
        assert_ne!(secret, new_secret().unwrap());
    }
}
