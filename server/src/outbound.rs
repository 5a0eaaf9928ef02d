//! The outbound side of a connection as other tasks see it.
//!
//! Channel: group tasks (and anything else that pushes to a client) send
//! pre-serialised frames into the connection's bounded queue with `try_send`; the
//! connection's own task is the only receiver and writes them to the socket. A
//! frame is serialised once and its bytes shared by every recipient. A full queue
//! means the client is not keeping up: the sender trips `kicked`, and the
//! connection closes with a reason instead of letting memory grow; the client
//! resumes from its last seq.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// A connection's id: in logs instead of anything about the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// The next id in this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A serialised frame ready for the socket; cloning shares the bytes.
pub type FrameBytes = Utf8Bytes;

/// The sending half of a connection's queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Which connection.
    pub conn: ConnId,
    tx: mpsc::Sender<FrameBytes>,
    kicked: CancellationToken,
}

/// The receiving half, owned by the connection's task.
#[derive(Debug)]
pub struct OutboxReceiver {
    /// Frames to write.
    pub rx: mpsc::Receiver<FrameBytes>,
    /// Tripped when a sender found the queue full.
    pub kicked: CancellationToken,
}

/// Makes a connection's queue of `capacity` frames.
pub fn outbox(conn: ConnId, capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let kicked = CancellationToken::new();
    (
        Outbox {
            conn,
            tx,
            kicked: kicked.clone(),
        },
        OutboxReceiver { rx, kicked },
    )
}

impl Outbox {
    /// Queues a frame without waiting. Returns `false` if the connection is gone or
    /// was too slow (it is then kicked and will close with a reason).
    pub fn push(&self, frame: &FrameBytes) -> bool {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kicked.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the connection is still there and keeping up.
    pub fn is_live(&self) -> bool {
        !self.tx.is_closed() && !self.kicked.is_cancelled()
    }
}
