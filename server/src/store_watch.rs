//! After a storage fault (see [`crate::store::Committer`]), watches for the disk
//! to take writes again, then stops the hub so that it is restarted on the store
//! as the last successful flush left it.
//!
//! Why a restart rather than carrying on: sled 0.34 keeps its first I/O error
//! for the life of the open database, and the hub's in-memory state (group heads,
//! escalations held only in memory) may be ahead of what was made durable. A fresh
//! start rebuilds everything from what was acknowledged, which is exactly what
//! the store holds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::hub::Hub;

/// How often the disk is tried once a fault stopped the store.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The exit status after such a stop (`EX_TEMPFAIL`): not 0, so a service manager
/// with `Restart=on-failure` starts peerhub again.
pub const EXIT_AFTER_FAULT: u8 = 75;

/// Free space on the data folder's disk, measured every second, against the
/// low-space watermark (`store.min_free_mb`).
#[derive(Debug)]
pub struct Space {
    min_free: u64,
    free: AtomicU64,
    low: AtomicBool,
}

impl Space {
    /// No measurement yet; `min_free` bytes is the watermark (0: none).
    pub fn new(min_free: u64) -> Self {
        Self {
            min_free,
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
        }
    }

    /// Is free space below the watermark? New groups and members are refused.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Free bytes at the last measurement (`u64::MAX` before the first).
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// The watermark, in bytes.
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free
    }

    /// Measures `dir`'s disk; logs when it crosses the watermark either way.
    pub fn measure(&self, dir: &Path) {
        let Ok(free) = fs2::available_space(dir) else {
            return;
        };
        self.free.store(free, Ordering::Relaxed);
        let low = self.min_free > 0 && free < self.min_free;
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = self.min_free,
                    "the data folder's disk is below store.min_free_mb: new groups and \
                     new members are refused until space is freed; messages and flags go on"
                );
            } else {
                tracing::info!(free_bytes = free, "the data folder's disk has room again");
            }
        }
    }
}

/// Runs until the hub stops; see the module documentation.
pub async fn watch(hub: Arc<Hub>, data_dir: PathBuf) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = false;
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dir = data_dir.clone();
        let measured = hub.clone();
        let _ = tokio::task::spawn_blocking(move || measured.space.measure(&dir)).await;
        let Some(fault) = hub.committer.fault() else {
            continue;
        };
        if !reported {
            reported = true;
            tracing::error!(
                fault = fault.as_str(),
                "storage fault: nothing is acknowledged and /readyz answers 503; \
                 peerhub stops by itself once the data folder takes writes again"
            );
        }
        let dir = data_dir.clone();
        let writable = tokio::task::spawn_blocking(move || crate::store::probe_writable(&dir))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        if writable {
            tracing::error!(
                fault = fault.as_str(),
                "the data folder takes writes again: peerhub stops now so that it \
                 restarts on what was acknowledged (exit status {EXIT_AFTER_FAULT})"
            );
            hub.shutdown.cancel();
            return;
        }
    }
}
