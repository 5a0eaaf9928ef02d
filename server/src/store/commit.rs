//! Group commit: one `flush` covers every write made before it, so concurrent
//! writers share one.
//!
//! Channel: every group task and command handler sends a reply slot on `requests`
//! (bounded; a full queue makes callers wait, which slows intake rather than losing
//! anything). One dedicated thread receives: it takes all waiting requests, flushes
//! once, and answers each. sled only promises that writes survive a crash once a
//! flush has returned, so callers acknowledge to clients only after `commit`.
//!
//! **Pacing.** Flushes start at least `interval` apart (the `store.commit_interval_us`
//! setting): a commit asked for sooner after the last flush began waits for the
//! rest of the interval and shares the next flush with every commit asked for
//! meanwhile. Each flush costs about the same whatever it covers — sled hands the
//! write to its I/O thread pool, whose idle threads all wake for each job, and the
//! waiting group tasks wake after it — so at low load a flush per post cost 2.4×
//! as much CPU per post as at saturation (docs/PERFORMANCE.md, "Per-post overhead").
//! The thread sleeps rather than waits on the queue during the interval, so the
//! commits that arrive meanwhile wake nobody. A commit asked for after a quiet
//! spell is flushed at once: pacing adds at most `interval` to an ack, and only
//! under load.
//!
//! **A failed flush is final for this process.** sled 0.34 keeps the first I/O
//! error of its log writer as a sticky "global error" (`Config::set_global_error`)
//! that only a fresh open clears, and Linux may drop the dirty pages of a file
//! whose `fsync` failed, so a later `fsync` that "succeeds" proves nothing about
//! the earlier writes. So after the first failure the committer answers every
//! commit with [`StoreError::Faulted`] without flushing again: nothing is
//! acknowledged until the process has restarted and reopened the store, which
//! recovers exactly what the last successful flush made durable.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Store, StoreError, StoreFault};

type Reply = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// Hands out durable commits. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Committer {
    requests: std_mpsc::SyncSender<Reply>,
    /// The first failed flush, if any. Who: the flushing thread sets it once; the
    /// readiness check, the metrics and the error mapping read it.
    fault: Arc<Mutex<Option<StoreFault>>>,
    /// The store, for a fault it knows of before any flush failed.
    store: Store,
}

impl Committer {
    /// Starts the flushing thread for `store`. It ends when the last `Committer`
    /// clone is dropped, after answering every request it holds; join the returned
    /// handle to know the thread has let go of the store.
    pub fn start(
        store: Store,
        interval: std::time::Duration,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (requests, rx) = std_mpsc::sync_channel::<Reply>(4096);
        let fault: Arc<Mutex<Option<StoreFault>>> = Arc::new(Mutex::new(None));
        let seen = fault.clone();
        let held = store.clone();
        let thread = std::thread::Builder::new()
            .name("peerhub-commit".into())
            .spawn(move || {
                // The commit count last made durable, and when it was last
                // written to `store.mark` (at most once a second, and at the end).
                let mut durable: Option<u64> = None;
                let mut marked = std::time::Instant::now();
                // When the last flush began (see "Pacing" above).
                let mut flushed: Option<std::time::Instant> = None;
                while let Ok(first) = rx.recv() {
                    if let Some(at) = flushed {
                        let next = at + interval;
                        let now = std::time::Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                    }
                    flushed = Some(std::time::Instant::now());
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let known = *seen.lock().unwrap_or_else(|p| p.into_inner());
                    let result = match known {
                        Some(fault) => Err(Arc::new(StoreError::Faulted(fault))),
                        None => {
                            match store.count_commit().and_then(|n| store.flush().map(|()| n)) {
                                Ok(n) => {
                                    durable = Some(n);
                                    if marked.elapsed() >= std::time::Duration::from_secs(1) {
                                        marked = std::time::Instant::now();
                                        if let Err(error) = store.write_mark(n) {
                                            tracing::warn!("could not write store.mark: {error}");
                                        }
                                    }
                                    Ok(())
                                }
                                Err(error) => {
                                    let fault = StoreFault::of(&error);
                                    tracing::error!(
                                        fault = fault.as_str(),
                                        "the store could not make writes durable ({error}); \
                                     nothing more is acknowledged until peerhub restarts"
                                    );
                                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
                                    Err(Arc::new(StoreError::Faulted(fault)))
                                }
                            }
                        }
                    };
                    for reply in waiting {
                        // A caller that went away needs no answer.
                        let _ = reply.send(result.clone());
                    }
                }
                let faulted = seen.lock().unwrap_or_else(|p| p.into_inner()).is_some();
                if let (Some(n), false) = (durable, faulted) {
                    if let Err(error) = store.write_mark(n) {
                        tracing::warn!("could not write store.mark: {error}");
                    }
                }
            })?;
        Ok((
            Self {
                requests,
                fault,
                store: held,
            },
            thread,
        ))
    }

    /// The storage fault that stopped commits, if one did.
    pub fn fault(&self) -> Option<StoreFault> {
        let failed = *self.fault.lock().unwrap_or_else(|p| p.into_inner());
        failed.or_else(|| self.store.fault())
    }

    /// A handle that reports [`Self::fault`] without keeping the committer (or the
    /// store) open.
    pub fn fault_watch(&self) -> FaultWatch {
        FaultWatch {
            fault: self.fault.clone(),
            poisoned: self.store.poisoned.clone(),
        }
    }

    /// Returns once every write made before this call is durable.
    pub async fn commit(&self) -> Result<(), Arc<StoreError>> {
        if let Some(fault) = self.fault() {
            return Err(Arc::new(StoreError::Faulted(fault)));
        }
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

/// See [`Committer::fault_watch`].
#[derive(Debug, Clone)]
pub struct FaultWatch {
    fault: Arc<Mutex<Option<StoreFault>>>,
    poisoned: Arc<std::sync::atomic::AtomicBool>,
}

impl FaultWatch {
    /// The storage fault that stopped commits, if one did.
    pub fn fault(&self) -> Option<StoreFault> {
        let failed = *self.fault.lock().unwrap_or_else(|p| p.into_inner());
        failed.or_else(|| {
            self.poisoned
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(StoreFault::CompactionFailed)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Commits asked for within the interval after a flush wait and share the next
    /// one; each still returns only after a flush that began after it was asked.
    /// (Before pacing, the first of them was flushed at once and the rest in one
    /// or more later flushes: three or more flushes in all.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_within_the_interval_share_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (committer, thread) = Committer::start(store.clone(), Duration::from_secs(2)).unwrap();
        // A first commit after a quiet spell is flushed at once.
        committer.commit().await.unwrap();
        let first = store.commits().unwrap();
        let early = tokio::spawn({
            let committer = committer.clone();
            async move { committer.commit().await }
        });
        // Long enough for an unpaced committer to have flushed `early` alone.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !early.is_finished(),
            "a commit within the interval waits for it"
        );
        let later: Vec<_> = (0..10)
            .map(|_| {
                let committer = committer.clone();
                tokio::spawn(async move { committer.commit().await })
            })
            .collect();
        early.await.unwrap().unwrap();
        for commit in later {
            commit.await.unwrap().unwrap();
        }
        assert_eq!(
            store.commits().unwrap(),
            first + 1,
            "one flush for all eleven"
        );
        drop(committer);
        thread.join().unwrap();
    }

    /// With no interval every commit is flushed as soon as the thread takes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_an_interval_sequential_commits_each_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (committer, thread) = Committer::start(store.clone(), Duration::ZERO).unwrap();
        let before = store.commits().unwrap();
        for _ in 0..5 {
            committer.commit().await.unwrap();
        }
        assert_eq!(store.commits().unwrap(), before + 5);
        drop(committer);
        thread.join().unwrap();
    }
}
