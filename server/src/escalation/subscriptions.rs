//! Staff push subscriptions as the protocol sees them: the signed `push` command
//! (subscribe, unsubscribe) and the `alerting` status reply. Storage is in
//! `store::push`; sending in `escalation::push` and `escalation::alerts`.

use peerhub_protocol::encoding::unb64;
use peerhub_protocol::frame::{Role, ServerFrame};
use peerhub_protocol::payload::{PushAction, PushPayload};
use peerhub_protocol::{ProtocolError, PublicKey};

use super::is_staff;
use crate::error::ServerError;
use crate::hub::Hub;
use crate::store::records::PushSubscriptionRecord;

/// Longest endpoint URL taken (browsers' are a few hundred bytes).
pub const MAX_ENDPOINT_BYTES: usize = 2048;

/// An endpoint the hub will POST to: `https://`, or `http://` to a loopback
/// address (a push service on the same machine: development and tests).
fn check_endpoint(endpoint: &str) -> Result<(), ServerError> {
    let bad = |why: &'static str| ServerError::from(ProtocolError::invalid("endpoint", why));
    if endpoint.len() > MAX_ENDPOINT_BYTES {
        return Err(bad("longer than 2048 bytes"));
    }
    let uri: http::Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(bad("a push service is reached over https"))
            }
        }
        _ => Err(bad("a push service is reached over https")),
    }
}

/// Checks a subscription's keys as RFC 8291 needs them: an uncompressed P-256
/// point and a 16-byte auth secret.
fn check_keys(p256dh: Option<&str>, auth: Option<&str>) -> Result<(String, String), ServerError> {
    let p256dh = p256dh.ok_or(ProtocolError::invalid("p256dh", "needed to subscribe"))?;
    let auth = auth.ok_or(ProtocolError::invalid("auth", "needed to subscribe"))?;
    let point = unb64(p256dh).map_err(|_| ProtocolError::invalid("p256dh", "not base64url"))?;
    if point.len() != 65 || web_push_native::p256::PublicKey::from_sec1_bytes(&point).is_err() {
        return Err(ProtocolError::invalid("p256dh", "not an uncompressed P-256 point").into());
    }
    let secret = unb64(auth).map_err(|_| ProtocolError::invalid("auth", "not base64url"))?;
    if secret.len() != 16 {
        return Err(ProtocolError::invalid("auth", "not 16 bytes").into());
    }
    Ok((p256dh.to_string(), auth.to_string()))
}

/// Carries out an admitted `push` command of `key`; durable before it returns.
pub async fn push_command(
    hub: &Hub,
    key: &PublicKey,
    push: PushPayload,
) -> Result<(), ServerError> {
    if !is_staff(&hub.store.roles(key)?) {
        return Err(ServerError::Forbidden(
            "only supervisors and admins receive escalation pushes",
        ));
    }
    if hub.alerts.vapid_public_key().is_none() {
        return Err(ServerError::Forbidden("Web Push is off on this hub"));
    }
    check_endpoint(&push.endpoint)?;
    match push.action {
        PushAction::Subscribe => {
            let (p256dh, auth) = check_keys(push.p256dh.as_deref(), push.auth.as_deref())?;
            let subscription = PushSubscriptionRecord {
                endpoint: push.endpoint,
                p256dh,
                auth,
                created_ms: hub.clock.now_ms(),
            };
            // Cluster mode: in the directory first, so the router's leader,
            // wherever it runs, sends to it.
            if let Some(node) = &hub.cluster {
                node.directory
                    .put_push_subscription(key, &subscription)
                    .await?;
            }
            hub.store.put_push_subscription(key, &subscription)?;
        }
        PushAction::Unsubscribe => {
            if let Some(node) = &hub.cluster {
                node.directory
                    .remove_push_subscription(key, &push.endpoint)
                    .await?;
            }
            hub.store.remove_push_subscription(key, &push.endpoint)?;
        }
    }
    hub.store.raise_counter(key, push.counter)?;
    hub.committer.commit().await?;
    hub.alerts.subscriptions_changed();
    Ok(())
}

/// The `alerting` reply for `key`.
pub fn alerting_frame(
    hub: &Hub,
    key: &PublicKey,
    id: Option<u64>,
) -> Result<ServerFrame, ServerError> {
    let roles = hub.store.roles(key)?;
    if !is_staff(&roles) {
        return Err(ServerError::Forbidden(
            "only supervisors and admins see how on-call staff are reached",
        ));
    }
    let status = hub.alerts.status();
    let admin = roles.contains(&Role::Admin);
    let unreachable = if admin {
        status.unreachable
    } else {
        Vec::new()
    };
    let low_space_free_mb =
        (admin && hub.space.is_low()).then(|| hub.space.free_bytes() / (1024 * 1024));
    Ok(ServerFrame::Alerting {
        id,
        vapid_key: hub.alerts.vapid_public_key(),
        subscriptions: u32::try_from(hub.store.push_subscriptions(key)?.len()).unwrap_or(u32::MAX),
        pager: status.pager,
        unreachable,
        low_space_free_mb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_or_loopback_http() {
        assert!(check_endpoint("https://fcm.googleapis.com/fcm/send/abc").is_ok());
        assert!(check_endpoint("http://127.0.0.1:9/push/1").is_ok());
        assert!(check_endpoint("http://[::1]:9/push/1").is_ok());
        assert!(check_endpoint("http://push.example/1").is_err());
        assert!(check_endpoint("ftp://push.example/1").is_err());
        assert!(check_endpoint("not a url").is_err());
        assert!(check_endpoint(&format!("https://p.example/{}", "a".repeat(3000))).is_err());
    }
}
