//! The outbound side of a connection as other tasks see it.
//!
//! Channel: group tasks (and anything else that pushes to a client) send
//! pre-serialised frames into the connection's bounded queue with `try_send`; the
//! connection's own task is the only receiver and writes them to the socket. A
//! frame is serialised once and its bytes shared by every recipient. The queue is
//! bounded twice: in frames, and in the bytes waiting for this client (about 1 MiB
//! by default). Past either bound the client is not keeping up: the sender trips
//! `kicked`, and the connection closes with a reason instead of letting memory
//! grow; the client resumes from its last seq.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

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
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    drops: prometheus::IntCounter,
}

/// The receiving half, owned by the connection's task.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<FrameBytes>,
    queued: Arc<AtomicUsize>,
    /// Tripped when a sender found the queue full.
    pub kicked: CancellationToken,
}

impl OutboxReceiver {
    /// The next frame to write (cancel-safe).
    pub async fn recv(&mut self) -> Option<FrameBytes> {
        let frame = self.rx.recv().await?;
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// A frame already waiting, if any.
    pub fn try_recv(&mut self) -> Option<FrameBytes> {
        let frame = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }
}

/// Makes a connection's queue of at most `frames` frames and `max_bytes` bytes;
/// frames it cannot take are counted in `drops`.
pub fn outbox(
    conn: ConnId,
    frames: usize,
    max_bytes: usize,
    drops: prometheus::IntCounter,
) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let kicked = CancellationToken::new();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            conn,
            tx,
            kicked: kicked.clone(),
            queued: queued.clone(),
            max_bytes,
            drops,
        },
        OutboxReceiver { rx, queued, kicked },
    )
}

impl Outbox {
    /// Bytes this connection may still be sent before it counts as slow: the
    /// bound less what already waits for it. Its session fills this much (at
    /// least one frame) with history at a time, so an unread history holds no
    /// more than a full outbox.
    pub fn room(&self) -> usize {
        self.max_bytes
            .saturating_sub(self.queued.load(Ordering::Acquire))
    }

    /// Whether a sender found the queue full (the connection is closing as slow).
    pub fn kicked(&self) -> &CancellationToken {
        &self.kicked
    }

    /// Queues a frame without waiting. Returns `false` if the connection is gone or
    /// was too slow (it is then kicked and will close with a reason).
    pub fn push(&self, frame: &FrameBytes) -> bool {
        if self.kicked.is_cancelled() {
            self.drops.inc();
            return false;
        }
        let before = self.queued.fetch_add(frame.len(), Ordering::AcqRel);
        if before + frame.len() > self.max_bytes {
            self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
            self.kicked.cancel();
            self.drops.inc();
            return false;
        }
        match self.tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(error) => {
                self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
                if matches!(error, mpsc::error::TrySendError::Full(_)) {
                    self.kicked.cancel();
                }
                self.drops.inc();
                false
            }
        }
    }
}

impl Outbox {
    /// Whether more than half of this connection's queue is taken (bytes or
    /// frames). A sender of something a later frame replaces (an escalation
    /// summary) holds it back then, instead of pushing a slow reader towards the
    /// slow-consumer close.
    pub fn half_full(&self) -> bool {
        self.queued.load(Ordering::Acquire) * 2 > self.max_bytes
            || self.tx.capacity() * 2 < self.tx.max_capacity()
    }
}

#[cfg(test)]
mod half_full_tests {
    use super::*;

    #[test]
    fn half_full_by_bytes_or_by_frames() {
        let drops = prometheus::IntCounter::new("d", "d").unwrap();
        let (outbox, mut rx) = outbox(ConnId(1), 4, 100, drops.clone());
        assert!(!outbox.half_full());
        assert!(outbox.push(&FrameBytes::from("x".repeat(60))));
        assert!(outbox.half_full(), "60 of 100 bytes");
        rx.try_recv().unwrap();
        assert!(!outbox.half_full());
        for _ in 0..3 {
            assert!(outbox.push(&FrameBytes::from("y")));
        }
        assert!(outbox.half_full(), "3 of 4 frames");
    }
}
