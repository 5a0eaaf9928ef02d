//! Limits every party enforces. The server announces them in the `hello` frame so a
//! client can check before it signs.

/// Largest text frame the server reads and answers with an error frame when exceeded.
/// Frames between this and [`HARD_FRAME_BYTES`] are answered with `too_large`.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;

/// Above this the WebSocket layer itself closes the connection (close code 1009),
/// because reading the frame at all would cost memory we will not spend.
pub const HARD_FRAME_BYTES: usize = 64 * 1024;

/// Longest message body, in Unicode scalar values.
pub const MAX_BODY_CHARS: usize = 4000;

/// Longest display name, in Unicode scalar values after normalisation.
pub const MAX_NAME_CHARS: usize = 32;

/// Longest agreement, report reason, redaction reason or record text.
pub const MAX_TEXT_CHARS: usize = 4000;

/// Longest group title, in Unicode scalar values.
pub const MAX_TITLE_CHARS: usize = 80;

/// How far a signed payload's `ts` may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_MS: u64 = 120_000;

/// Events the server replays on `join` when the client names no `after` seq.
pub const HISTORY_ON_JOIN: u64 = 100;

/// Most members a `joined` frame lists (`members_total` says how many there are).
pub const JOINED_MEMBERS_MAX: usize = 1_000;

/// Most people a `staff` frame lists (`more` says when there are others).
pub const MAX_STAFF_LISTED: usize = 500;
