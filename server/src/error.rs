//! Server errors, and the one function that maps them to client error codes.

use std::sync::Arc;

use peerhub_protocol::frame::ServerFrame;
use peerhub_protocol::{ErrorCode, GroupId, ProtocolError};

use crate::store::{RedeemRefusal, StoreError};

/// Why the server refused or failed a request. Every variant maps to one stable
/// [`ErrorCode`] in [`ServerError::code`]; the `Display` text is what the client is
/// told, and never carries anyone's message content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The protocol layer refused the frame or envelope.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A request other than `auth` before logging in.
    #[error("log in first: send auth with the signed challenge")]
    NotAuthenticated,
    /// `auth` on a connection that is already logged in.
    #[error("this connection is already logged in")]
    AlreadyAuthenticated,
    /// The auth envelope did not answer this connection's challenge.
    #[error("login failed: {0}")]
    AuthFailed(&'static str),
    /// An envelope signed by a key other than the connection's.
    #[error("the envelope is signed by a different key than this connection's")]
    WrongKey,
    /// Payload group and frame group differ.
    #[error("the signed payload names group {signed}, but the frame is for {frame}")]
    WrongGroup {
        /// The group in the signed payload.
        signed: GroupId,
        /// The group the frame targets.
        frame: GroupId,
    },
    /// Counter not above the last accepted one.
    #[error("counter {counter} is not greater than the last accepted counter {last}")]
    Replay {
        /// The counter received.
        counter: u64,
        /// The last one accepted.
        last: u64,
    },
    /// The same counter is held by a command of this key still under way (sent
    /// twice at once, e.g. from two connections).
    #[error("counter {counter} is already in use by a command under way")]
    ReplayUnderWay {
        /// The counter received.
        counter: u64,
    },
    /// The payload's time is too far from the server's clock.
    #[error("the signed time is {skew_ms} ms away from the server clock (limit {limit_ms} ms)")]
    Stale {
        /// How far off.
        skew_ms: u64,
        /// The allowed distance.
        limit_ms: u64,
    },
    /// The caller lacks the role.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// No such group.
    #[error("no group {0}")]
    GroupNotFound(GroupId),
    /// The group id is taken.
    #[error("group {0} already exists")]
    GroupExists(GroupId),
    /// Posting to a group not joined on this connection.
    #[error("join group {0} on this connection first")]
    NotJoined(GroupId),
    /// The invite could not be redeemed.
    #[error("{}", match .0 {
        RedeemRefusal::Unknown => "this invite link is not valid",
        RedeemRefusal::Used => "this invite link has already been used",
        RedeemRefusal::Expired => "this invite link has expired",
    })]
    BadToken(RedeemRefusal),
    /// The group's door is closed.
    #[error("{}", match .next_session_ms {
        Some(_) => "this group is closed now; the next session time is given",
        None => "this group is closed now and no session is scheduled",
    })]
    Closed {
        /// The next scheduled opening.
        next_session_ms: Option<u64>,
    },
    /// Nobody new is admitted.
    #[error("the group is locked: nobody new can come in right now")]
    Locked,
    /// Wrong access code or not invited.
    #[error("{0}")]
    AccessDenied(&'static str),
    /// Accept the agreement first.
    #[error("please read and accept the group agreement (version {0}) first")]
    AgreementRequired(u32),
    /// Waiting room.
    #[error("you are in the waiting room; a facilitator will let you in")]
    Waiting,
    /// Muted until a time.
    #[error("a facilitator has muted you for now; you can still ask for help")]
    Muted {
        /// Until (ms).
        until_ms: u64,
        /// ms from now.
        retry_after_ms: u64,
    },
    /// Only facilitators post.
    #[error("the group is paused: only facilitators can post for now")]
    Paused,
    /// Slow mode.
    #[error("slow mode is on: please wait before your next message")]
    SlowMode {
        /// ms to wait.
        retry_after_ms: u64,
    },
    /// Removed or declined.
    #[error("{0}")]
    Removed(String),
    /// A rate limit or cap: retry after the time given.
    #[error("{what}; try again in {} s", retry_after_ms.div_ceil(1000))]
    RateLimited {
        /// ms to wait.
        retry_after_ms: u64,
        /// What was limited, in words.
        what: &'static str,
    },
    /// A distress flag over its key's rate limit: still counted on the escalation
    /// about the same person (the router does that), and answered with the
    /// helplines.
    #[error("many flags in a short time: yours are recorded; please wait a moment before the next, and call the emergency services if anyone is in danger now; try again in {} s", retry_after_ms.div_ceil(1000))]
    FlagRateLimited {
        /// ms to wait.
        retry_after_ms: u64,
    },
    /// The group has as many members as it may.
    #[error("this group is full")]
    Full,
    /// The waiting room is full of people still connected.
    #[error("the waiting room is full; please try again a little later, or ask for help from the helplines")]
    WaitingRoomFull,
    /// Already taken by someone else.
    #[error("already acknowledged by another supervisor")]
    Taken(peerhub_protocol::PublicKey),
    /// No such member, message or record.
    #[error("{0}")]
    NotFound(&'static str),
    /// The uniform refusal of an action about another key (PROTOCOL.md §10):
    /// the same code and words whether the key is no member of the group or one
    /// the sender may not reach, so a refusal never tells which.
    #[error("no such member here that you can reach")]
    NotHere,
    /// The server is stopping.
    #[error("the server is shutting down; reconnect shortly")]
    ShuttingDown,
    /// A fault inside the server other than storage (a task that did not answer
    /// in time, an answer that did not parse): whether the action happened is not
    /// known to the caller, who should look before trying again.
    #[error("something failed inside the server ({0}); check before trying again")]
    Internal(&'static str),
    /// The answer of the node that serves the group (cluster mode), passed on
    /// as it came.
    #[error("{message}")]
    Forwarded {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// When to try again, if it said.
        retry_after_ms: Option<u64>,
        /// When the group's next session opens, if it said.
        next_session_ms: Option<u64>,
    },
    /// A storage failure: the action did not happen.
    #[error("{}", store_message(.0))]
    Store(#[from] Arc<StoreError>),
    /// The data folder's disk is below the low-space watermark: no new groups or
    /// members.
    #[error("the server is low on storage space, so it takes no new groups or members for now; messages and flags still work; please try again later")]
    LowSpace,
    /// A distress flag the store could not keep (its disk is full or failing):
    /// answered with the helplines, and shown to the supervisors connected now.
    #[error("your flag could not be saved because the server's storage is failing; supervisors connected now have been shown it, but it will not be kept, so please use the helplines, and call the emergency services if anyone is in danger now")]
    FlagNotStored {
        /// How many supervisors were shown it.
        shown_to: usize,
    },
}

fn store_message(error: &StoreError) -> &'static str {
    if matches!(error, StoreError::Replication(_)) {
        "the server could not confirm this was saved, as the group is moving between the \
         server's nodes; please join the group again and look before sending it again"
    } else if error.is_storage_fault() {
        "the server's storage is full or failing, so it cannot save anything new right now; nothing was changed; please try again later"
    } else {
        "the server could not store this; nothing was changed"
    }
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        Self::Store(Arc::new(e))
    }
}

impl ServerError {
    /// Did the disk underneath fail (full or erroring)?
    pub fn is_storage_fault(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_storage_fault())
    }

    /// The stable code the client receives.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Protocol(e) => e.code(),
            Self::NotAuthenticated => ErrorCode::NotAuthenticated,
            Self::AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
            Self::AuthFailed(_) => ErrorCode::AuthFailed,
            Self::WrongKey => ErrorCode::WrongKey,
            Self::WrongGroup { .. } => ErrorCode::WrongGroup,
            Self::Replay { .. } | Self::ReplayUnderWay { .. } => ErrorCode::Replay,
            Self::Stale { .. } => ErrorCode::Stale,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::GroupNotFound(_) => ErrorCode::NotFound,
            Self::GroupExists(_) => ErrorCode::AlreadyExists,
            Self::NotJoined(_) => ErrorCode::NotJoined,
            Self::BadToken(_) => ErrorCode::BadToken,
            Self::Closed { .. } => ErrorCode::Closed,
            Self::Locked => ErrorCode::Locked,
            Self::AccessDenied(_) => ErrorCode::AccessDenied,
            Self::AgreementRequired(_) => ErrorCode::AgreementRequired,
            Self::Waiting => ErrorCode::Waiting,
            Self::Muted { .. } => ErrorCode::Muted,
            Self::Paused => ErrorCode::Paused,
            Self::SlowMode { .. } => ErrorCode::SlowMode,
            Self::Removed(_) => ErrorCode::Removed,
            Self::NotFound(_) | Self::NotHere => ErrorCode::NotFound,
            Self::Taken(_) => ErrorCode::Taken,
            Self::RateLimited { .. } | Self::FlagRateLimited { .. } => ErrorCode::RateLimited,
            Self::Full => ErrorCode::Full,
            Self::WaitingRoomFull => ErrorCode::WaitingRoomFull,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Forwarded { code, .. } => *code,
            Self::Store(e) if e.is_storage_fault() => ErrorCode::StorageUnavailable,
            Self::Store(_) => ErrorCode::Internal,
            Self::FlagNotStored { .. } | Self::LowSpace => ErrorCode::StorageUnavailable,
        }
    }

    /// The error frame a client receives for this error.
    pub fn frame(&self, id: Option<u64>) -> ServerFrame {
        let (retry_after_ms, next_session_ms) = match self {
            Self::Muted { retry_after_ms, .. }
            | Self::SlowMode { retry_after_ms }
            | Self::RateLimited { retry_after_ms, .. }
            | Self::FlagRateLimited { retry_after_ms } => (Some(*retry_after_ms), None),
            Self::Closed { next_session_ms } => (None, *next_session_ms),
            Self::Forwarded {
                retry_after_ms,
                next_session_ms,
                ..
            } => (*retry_after_ms, *next_session_ms),
            _ => (None, None),
        };
        ServerFrame::Error {
            id,
            code: self.code(),
            message: self.to_string(),
            retry_after_ms,
            next_session_ms,
            helplines: None,
        }
    }
}
