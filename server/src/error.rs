//! Server errors, and the one function that maps them to client error codes.

use std::sync::Arc;

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
    /// The server is stopping.
    #[error("the server is shutting down; reconnect shortly")]
    ShuttingDown,
    /// A storage failure: the action did not happen.
    #[error("the server could not store this; nothing was changed")]
    Store(#[from] Arc<StoreError>),
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        Self::Store(Arc::new(e))
    }
}

impl ServerError {
    /// The stable code the client receives.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Protocol(e) => e.code(),
            Self::NotAuthenticated => ErrorCode::NotAuthenticated,
            Self::AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
            Self::AuthFailed(_) => ErrorCode::AuthFailed,
            Self::WrongKey => ErrorCode::WrongKey,
            Self::WrongGroup { .. } => ErrorCode::WrongGroup,
            Self::Replay { .. } => ErrorCode::Replay,
            Self::Stale { .. } => ErrorCode::Stale,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::GroupNotFound(_) => ErrorCode::NotFound,
            Self::GroupExists(_) => ErrorCode::AlreadyExists,
            Self::NotJoined(_) => ErrorCode::NotJoined,
            Self::BadToken(_) => ErrorCode::BadToken,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Store(_) => ErrorCode::Internal,
        }
    }
}
