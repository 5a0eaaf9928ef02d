//! Realistic records, shared by the baselines and the criterion benchmarks so both
//! measure the very bytes the hub handles for one post.

use peerhub_protocol::frame::{Channel, ServerFrame};
use peerhub_protocol::{ClientFrame, GroupId, SignedEnvelope};
use peerhub_server::store::records::StoredEvent;

use crate::identity::Identity;
use crate::wire::body_marker;

/// The default post body length, in bytes (a short chat message).
pub const DEFAULT_BODY_BYTES: usize = 64;

/// The group id the samples use (the generator's ids look the same).
pub fn group() -> GroupId {
    GroupId::parse("g0").unwrap_or_else(|_| unreachable!("a valid literal"))
}

/// A post body of `len` bytes that starts with the marker of message `id`.
pub fn body(id: u32, len: usize) -> String {
    let mut body = body_marker(id);
    body.push(' ');
    while body.len() < len {
        body.push_str("all good here, thanks ");
    }
    body.truncate(len.max(10));
    body.trim_end().to_string()
}

/// A signed post of `body_len` bytes by a fixed identity.
pub fn post_envelope(body_len: usize) -> (Identity, SignedEnvelope) {
    let mut me = Identity::from_seed([42; 32]);
    let env = me.post(&group(), &body(1, body_len), crate::now_ms());
    (me, env)
}

/// The `post` frame a client sends for `env`.
pub fn post_frame(id: u64, env: SignedEnvelope) -> String {
    ClientFrame::Post {
        id: Some(id),
        group: group(),
        env,
    }
    .to_json()
}

/// The record the hub stores for a post.
pub fn stored_event(seq: u64, env: SignedEnvelope) -> StoredEvent {
    StoredEvent {
        seq,
        ts: crate::now_ms(),
        env: Some(env),
        note: None,
        redacted: None,
    }
}

/// The `event` frame the hub fans out for a post.
pub fn event_frame(seq: u64, env: SignedEnvelope) -> ServerFrame {
    ServerFrame::Event {
        group: group(),
        channel: Channel::Main,
        seq,
        ts: crate::now_ms(),
        env: Some(env),
        note: None,
        redacted: None,
    }
}
