//! Cheap scanners for server frames, for the measured path of the generator.
//!
//! The generator must not be the bottleneck: at G = 30 it reads hundreds of
//! thousands of frames per second on one core. So instead of building a JSON tree
//! for every frame it relies on what serde writes for `ServerFrame` (the `type`
//! tag first, then the fields in declaration order) and on the marker every
//! generated post body starts with. The set-up phase still parses frames fully.
//!
//! Inside an `event`, the signed payload is a JSON *string*, so its quotes are
//! escaped: the body marker appears as `body\":\"x0000002a`.

/// What kind of server frame a text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// `ack`: a post is durable.
    Ack,
    /// `event`: a group event.
    Event,
    /// `error`: a refusal.
    Error,
    /// `presence`: a member's standing changed.
    Presence,
    /// Anything else.
    Other,
}

const TYPE_PREFIX: &str = "{\"type\":\"";

/// The frame's type, from its leading `{"type":"..."`.
pub fn frame_type(text: &str) -> FrameType {
    let Some(rest) = text.strip_prefix(TYPE_PREFIX) else {
        return FrameType::Other;
    };
    if rest.starts_with("event\"") {
        FrameType::Event
    } else if rest.starts_with("ack\"") {
        FrameType::Ack
    } else if rest.starts_with("error\"") {
        FrameType::Error
    } else if rest.starts_with("presence\"") {
        FrameType::Presence
    } else {
        FrameType::Other
    }
}

/// The type name of a frame (for set-up replies), e.g. `joined`.
pub fn type_name(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(TYPE_PREFIX)?;
    rest.split('"').next()
}

/// The request `id` of a reply: serde writes it right after the type tag.
pub fn reply_id(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(TYPE_PREFIX)?;
    let after_type = rest.find('"')? + 1;
    let rest = rest.get(after_type..)?.strip_prefix(",\"id\":")?;
    leading_u64(rest)
}

/// The marker every generated post body starts with: `x` and eight hex digits.
pub fn body_marker(id: u32) -> String {
    format!("x{id:08x}")
}

const MARKER_NEEDLE: &str = "body\\\":\\\"x";

/// The message id in an `event` frame's post body, if it is a generated post.
pub fn event_marker(text: &str) -> Option<u32> {
    let at = text.find(MARKER_NEEDLE)? + MARKER_NEEDLE.len();
    let hex = text.get(at..at + 8)?;
    u32::from_str_radix(hex, 16).ok()
}

/// The `code` of an `error` frame.
pub fn error_code(text: &str) -> Option<&str> {
    let at = text.find("\"code\":\"")? + "\"code\":\"".len();
    let rest = text.get(at..)?;
    rest.split('"').next()
}

/// For a `presence` frame saying a member went offline: that member's key (as
/// base64url text).
pub fn presence_offline_key(text: &str) -> Option<&str> {
    if !text.contains("\"online\":false") {
        return None;
    }
    let at = text.find("\"member\":{\"key\":\"")? + "\"member\":{\"key\":\"".len();
    text.get(at..)?.split('"').next()
}

fn leading_u64(text: &str) -> Option<u64> {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    text.get(..end)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::frame::{Channel, ServerFrame};
    use peerhub_protocol::{ErrorCode, GroupId};

    use crate::identity::Identity;

    #[test]
    fn scanners_read_what_serde_writes() {
        let group = GroupId::parse("g1").unwrap();
        let mut me = Identity::from_seed([7; 32]);
        let body = format!("{} hello", body_marker(0x2a));
        let env = me.post(&group, &body, 1);
        let event = ServerFrame::Event {
            group: group.clone(),
            channel: Channel::Main,
            seq: 3,
            ts: 4,
            env: Some(env),
            note: None,
            redacted: None,
        }
        .to_json();
        assert_eq!(frame_type(&event), FrameType::Event);
        assert_eq!(event_marker(&event), Some(0x2a));

        let ack = ServerFrame::Ack {
            id: Some(99),
            group: group.clone(),
            channel: Channel::Main,
            seq: 3,
            counter: 2,
        }
        .to_json();
        assert_eq!(frame_type(&ack), FrameType::Ack);
        assert_eq!(reply_id(&ack), Some(99));

        let error = ServerFrame::error(Some(5), ErrorCode::Replay, "again").to_json();
        assert_eq!(frame_type(&error), FrameType::Error);
        assert_eq!(reply_id(&error), Some(5));
        assert_eq!(error_code(&error), Some(ErrorCode::Replay.as_str()));
        assert_eq!(type_name(&error), Some("error"));
    }
}
