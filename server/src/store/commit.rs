//! Group commit: one `flush` covers every write made before it, so concurrent
//! writers share one.
//!
//! Channel: every group task and command handler sends a reply slot on `requests`
//! (bounded; a full queue makes callers wait, which slows intake rather than losing
//! anything). One dedicated thread receives: it takes all waiting requests, flushes
//! once, and answers each. sled only promises that writes survive a crash once a
//! flush has returned, so callers acknowledge to clients only after `commit`.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Store, StoreError};

type Reply = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// Hands out durable commits. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Committer {
    requests: std_mpsc::SyncSender<Reply>,
}

impl Committer {
    /// Starts the flushing thread for `store`. It ends when the last `Committer`
    /// clone is dropped, after answering every request it holds; join the returned
    /// handle to know the thread has let go of the store.
    pub fn start(store: Store) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (requests, rx) = std_mpsc::sync_channel::<Reply>(4096);
        let thread = std::thread::Builder::new()
            .name("peerhub-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let result = store.flush().map_err(Arc::new);
                    for reply in waiting {
                        // A caller that went away needs no answer.
                        let _ = reply.send(result.clone());
                    }
                }
            })?;
        Ok((Self { requests }, thread))
    }

    /// Returns once every write made before this call is durable.
    pub async fn commit(&self) -> Result<(), Arc<StoreError>> {
        let (tx, rx) = oneshot::channel();
        let requests = self.requests.clone();
        // The queue is bounded; if it is full, wait off the async worker.
        match requests.try_send(tx) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Full(tx)) => {
                tokio::task::spawn_blocking(move || requests.send(tx))
                    .await
                    .map_err(|_| Arc::new(StoreError::Closed))?
                    .map_err(|_| Arc::new(StoreError::Closed))?;
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => {
                return Err(Arc::new(StoreError::Closed))
            }
        }
        rx.await.map_err(|_| Arc::new(StoreError::Closed))?
    }
}
