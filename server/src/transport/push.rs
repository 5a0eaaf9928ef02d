//! `POST /push/ack`: acknowledging an escalation from a notification.
//!
//! A staff console's service worker has no WebSocket and no login, but it can use
//! the non-extractable signing key kept in IndexedDB. It POSTs the envelope of a
//! signed `escalation` `ack` (PROTOCOL.md §6.15, §9.6) and this endpoint puts it
//! through exactly the checks a connection would (kind, key, strict signature,
//! payload, time, replay counter, the per-key command limit), then hands it to the
//! escalation router as any `escalation` frame. The request is rate-limited per
//! address before anything is verified, as every unsigned request is.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use peerhub_protocol::envelope::{decode_key, Kind};
use peerhub_protocol::payload::{EscalationActPayload, EscalationAction};
use peerhub_protocol::{ErrorCode, ProtocolError, ServerFrame, SignedEnvelope};

use super::PeerAddr;
use crate::admission::{admit, CounterTicket, Signer};
use crate::error::ServerError;
use crate::escalation::RouterCommand;
use crate::hub::Hub;
use crate::limits::Refusal;
use crate::outbound::{outbox, ConnId};

/// The path.
pub const ACK_PATH: &str = "/push/ack";
/// Largest body taken: one envelope.
const MAX_BODY: usize = 8 * 1024;
/// How long the router may take to answer.
const ROUTER_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait suggested when the hub has no room for another request.
const FULL_RETRY_MS: u64 = 1_000;

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden
        | ErrorCode::BadSignature
        | ErrorCode::BadKey
        | ErrorCode::WrongKind
        | ErrorCode::WrongKey => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Replay | ErrorCode::Taken => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn answer(frame: &ServerFrame) -> Response {
    let status = match frame {
        ServerFrame::Ok { .. } => StatusCode::OK,
        ServerFrame::Error { code, .. } => status_of(*code),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        frame.to_json(),
    )
        .into_response()
}

fn refuse(hub: &Hub, error: &ServerError) -> Response {
    hub.metrics.rejected(error.code().as_str());
    answer(&error.frame(None))
}

/// `POST /push/ack`.
pub async fn ack(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    // The per-address connection limit doubles as this endpoint's request limit;
    // the ticket is held only while the request is served.
    let _ticket = match hub.limits.admit_connection(peer) {
        Ok(ticket) => ticket,
        Err(Refusal::TooFast(retry_after_ms)) => {
            return refuse(
                &hub,
                &ServerError::RateLimited {
                    retry_after_ms,
                    what: "too many requests from your address",
                },
            )
        }
        // No room for another request now: a wait, like a rate limit, not a
        // hub going away.
        Err(Refusal::Full(what)) => {
            return refuse(
                &hub,
                &ServerError::RateLimited {
                    retry_after_ms: FULL_RETRY_MS,
                    what,
                },
            )
        }
    };
    if hub.shutdown.is_cancelled() {
        return refuse(&hub, &ServerError::ShuttingDown);
    }
    if !super::origin_allowed(request.headers(), &hub) {
        return refuse(
            &hub,
            &ServerError::Forbidden("this page's origin may not act here"),
        );
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return refuse(
                &hub,
                &ProtocolError::TooLarge {
                    size: MAX_BODY + 1,
                    limit: MAX_BODY,
                }
                .into(),
            )
        }
    };
    match admit_ack(&hub, &body) {
        Ok((env, payload, ticket)) => forward(&hub, env, payload, ticket).await,
        Err(error) => refuse(&hub, &error),
    }
}

/// The connection's checks, with the envelope's own key as the signer.
fn admit_ack(
    hub: &Hub,
    body: &[u8],
) -> Result<(SignedEnvelope, EscalationActPayload, CounterTicket), ServerError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ProtocolError::Malformed("the body is not UTF-8".into()))?;
    let env: SignedEnvelope = peerhub_protocol::envelope::from_json_object(text)
        .map_err(|e| ProtocolError::Malformed(format!("not an envelope: {e}")))?;
    env.expect_kind(Kind::Escalation)?;
    let verifying = decode_key(&env.key)?;
    let key = env.key;
    // Verified before the per-key limit, so a stranger cannot spend someone
    // else's allowance.
    env.verify_with(&verifying)?;
    hub.limits.command(&key)?;
    let signer = Signer {
        key: &key,
        verifying: &verifying,
    };
    let (payload, ticket): (EscalationActPayload, _) = admit(
        &hub.replay,
        &signer,
        &env,
        Kind::Escalation,
        None,
        hub.clock.now_ms(),
    )?;
    if payload.action != EscalationAction::Ack {
        return Err(ProtocolError::invalid("action", "only ack is taken here").into());
    }
    Ok((env, payload, ticket))
}

async fn forward(
    hub: &Hub,
    env: SignedEnvelope,
    payload: EscalationActPayload,
    ticket: CounterTicket,
) -> Response {
    // A private outbox for the router's one answer.
    let (tx, mut rx) = outbox(
        ConnId::next(),
        4,
        64 * 1024,
        hub.metrics.outbox_drops.clone(),
    );
    let command = RouterCommand::Act {
        outbox: tx,
        key: env.key,
        request_id: None,
        env,
        payload,
        ticket,
    };
    if let Err(error) = hub.router.send(command).await {
        return refuse(hub, &error);
    }
    match tokio::time::timeout(ROUTER_TIMEOUT, rx.recv()).await {
        Ok(Some(bytes)) => match serde_json::from_str::<ServerFrame>(bytes.as_str()) {
            Ok(frame) => answer(&frame),
            // Our own frame that does not parse, or a router that does not answer
            // in time: a fault inside the hub (500), not a shutdown.
            Err(_) => refuse(hub, &ServerError::Internal("the router's answer")),
        },
        // The router dropped the answer: it is stopping.
        Ok(None) => refuse(hub, &ServerError::ShuttingDown),
        Err(_) => refuse(
            hub,
            &ServerError::Internal("the router did not answer in time"),
        ),
    }
}
