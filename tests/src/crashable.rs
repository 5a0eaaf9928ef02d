//! A hub in a tokio runtime of its own, so that a test can stop it dead: every
//! task and socket dropped at once (its clients', its NATS connection), no lease
//! released, nobody told — what `kill -9` leaves, short of the process. The
//! cluster tests use it to kill a node; [`crate::ProcessServer`] kills the real
//! binary.

use peerhub_server::config::Config;

use crate::TestServer;

/// A [`TestServer`] on a runtime of its own (one worker thread).
pub struct CrashableServer {
    runtime: Option<tokio::runtime::Runtime>,
    /// The hub.
    pub server: TestServer,
}

impl CrashableServer {
    /// Starts a hub configured by `configure` (the caller's thread waits while it
    /// starts; inside a multi-threaded runtime that wait is a blocking section).
    pub fn start(configure: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        let start = move || {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let server = runtime.block_on(TestServer::start_with(configure));
                Self {
                    runtime: Some(runtime),
                    server,
                }
            })
            .join()
            .expect("the hub starts")
        };
        let in_multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if in_multi_thread {
            tokio::task::block_in_place(start)
        } else {
            start()
        }
    }

    /// Stops it dead (also what dropping it does).
    pub fn crash(self) {
        drop(self);
    }
}

impl Drop for CrashableServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
