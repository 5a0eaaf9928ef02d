//! The peerhub wire contract, with no I/O.
//!
//! `PROTOCOL.md` beside this crate is the specification a third party implements a
//! client from; this crate is its reference implementation and is used by the server,
//! the tests and the load generator.
//!
//! Map of the parts, in the order a frame meets them:
//!
//! - [`limits`] — sizes and windows every party enforces (frame bytes, body length,
//!   clock skew).
//! - [`frame`] — the JSON frames on the WebSocket: [`frame::ClientFrame`] (client →
//!   server, decoded with [`frame::decode_client_frame`]) and [`frame::ServerFrame`].
//! - [`envelope`] — [`envelope::SignedEnvelope`]: an exact payload string, the signer's
//!   key and an Ed25519 signature over `peerhub/1/<kind>\n<payload>`; strict
//!   verification.
//! - [`payload`] — what is inside each kind of envelope: every signed payload names its
//!   group (where it has one), a per-key counter and the client's time, so a signature
//!   cannot be replayed, redirected to another group or reused as another kind.
//! - [`encoding`] — keys, signatures and tokens as unpadded base64url.
//! - [`ids`] and [`names`] — group ids and display names, validated the same way by
//!   every party.
//! - [`escalation`] — severities, consent, the on-call rota and helplines for
//!   distress flags.
//! - [`error`] — [`error::ErrorCode`], the stable codes sent in error frames, and
//!   [`error::ProtocolError`], which maps every decoding failure to one of them.
//!
//! Non-goals: canonical JSON (we sign exact bytes instead), transport, storage.

pub mod encoding;
pub mod envelope;
pub mod error;
pub mod escalation;
pub mod frame;
pub mod ids;
pub mod limits;
pub mod names;
pub mod payload;

/// The protocol version named in every signing domain and in the `hello` frame.
pub const PROTOCOL_VERSION: u32 = 1;

pub use encoding::{PublicKey, SignatureBytes};
pub use envelope::{Kind, SignedEnvelope};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{ClientFrame, ServerFrame};
pub use ids::GroupId;
