//! The JSON results the binaries write and `peerhub-report` reads, and the cost
//! model the goals are stated in.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Same-run baselines from `peerhub-baseline`, each on one core.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaselineReport {
    /// V: `SignedEnvelope::verify_with` (signing bytes + `verify_strict`) per second
    /// with a cached `VerifyingKey`, for a real post envelope.
    pub verify_per_s: f64,
    /// The same, decoding the key each time (what caching saves).
    pub verify_uncached_per_s: f64,
    /// Ed25519 signatures made per second (the generator's pre-signing speed).
    pub sign_per_s: f64,
    /// S: `Store::put_event` of the real record per second, no explicit flush.
    pub store_insert_per_s: f64,
    /// The hub's whole write set for one post per second (raise the counter, put
    /// the event, put the group state), no explicit flush.
    pub store_post_writes_per_s: f64,
    /// F: flushes per second, each after one record was written.
    pub flush_per_s: f64,
    /// Flushes per second, each after 64 records were written.
    pub flush64_per_s: f64,
    /// How long one flush (after one record) took, over every flush of F's loop.
    #[serde(default)]
    pub flush_latency: Latency,
    /// V per second of the measuring thread's own CPU time (robust to neighbours).
    #[serde(default)]
    pub verify_per_cpu_s: f64,
    /// S per second of the measuring thread's own CPU time.
    #[serde(default)]
    pub store_insert_per_cpu_s: f64,
    /// Bytes of the stored record's value (JSON).
    pub record_bytes: usize,
    /// Bytes of the signed envelope as sent (JSON).
    pub envelope_bytes: usize,
    /// Bytes of the `post` frame a client sends.
    pub post_frame_bytes: usize,
    /// Bytes of the `event` frame the hub fans out.
    pub event_frame_bytes: usize,
    /// Post body length used.
    pub body_bytes: usize,
    /// CPUs the measurement ran on.
    pub cpus: String,
    /// Where the store was (its filesystem is the hub's).
    pub store_dir: String,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// Counts in one 100 ms slice of a run (time from the start of the warm-up).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Slice {
    /// Start of the slice, ms after the warm-up began.
    pub t_ms: u64,
    /// Acks received.
    pub accepted: u64,
    /// Event frames received by members other than the sender.
    pub delivered_others: u64,
    /// Event frames received by anyone (the sender gets its own post back too).
    pub delivered_total: u64,
    /// Acks received by senders in the group of the member that stalls (stall runs):
    /// each is a frame fanned out to that member.
    #[serde(default)]
    pub stalled_group_accepted: u64,
    /// The server's RSS at about this time, KiB (0: not sampled).
    pub server_rss_kib: u64,
}

/// Context switches of a process, summed over its threads.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CtxSwitches {
    /// A thread gave up its CPU (blocked).
    pub voluntary: u64,
    /// A thread was preempted.
    pub involuntary: u64,
}

impl LoadReport {
    /// Server CPU per accepted post over the counted span, µs (0: not counted).
    pub fn cpu_us_per_post(&self) -> f64 {
        per(self.counted_cpu_s * 1e6, self.counted_posts)
    }

    /// Server context switches (both kinds) per accepted post.
    pub fn switches_per_post(&self) -> f64 {
        let c = self.server_ctx_switches;
        per((c.voluntary + c.involuntary) as f64, self.counted_posts)
    }

    /// System calls named `name` per accepted post (0 if not counted).
    pub fn syscalls_per_post(&self, name: &str) -> f64 {
        per(
            self.server_syscalls.get(name).copied().unwrap_or(0) as f64,
            self.counted_posts,
        )
    }
}

fn per(total: f64, posts: u64) -> f64 {
    if posts == 0 {
        0.0
    } else {
        total / posts as f64
    }
}

/// The memory figure for idle, joined connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleReport {
    /// Connections opened, logged in and joined.
    pub connections: usize,
    /// Server RSS before the first connection (groups already made), KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every connection joined and idle, KiB.
    pub rss_after_kib: u64,
    /// (after − before) / connections, bytes.
    pub bytes_per_connection: f64,
    /// Server RSS with every connection logged in, before any joined, KiB (0: the
    /// phases were not measured apart).
    #[serde(default)]
    pub rss_logged_in_kib: u64,
    /// (logged in − before) / connections, bytes: the connection and the login.
    #[serde(default)]
    pub logged_in_bytes_per_connection: f64,
    /// Mean length of the `joined` replies, bytes (0: not measured).
    #[serde(default)]
    pub joined_reply_bytes: f64,
    /// Seconds to open, log in and join them all.
    pub connect_s: f64,
    /// Source addresses used.
    pub source_addresses: Vec<String>,
}

/// What happened around a member that stopped reading.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StallReport {
    /// Seconds into the window at which the member stopped reading.
    pub stall_at_s: f64,
    /// How long it stopped (at most).
    pub stall_for_s: f64,
    /// Seconds from the stall until its group mates saw it go offline (the server
    /// dropped it); `None` if they never did within the stall.
    pub dropped_after_s: Option<f64>,
    /// Seconds from the stall until the server's end of its socket left
    /// ESTABLISHED (the server closed it), as `/proc/net/tcp` showed it.
    #[serde(default)]
    pub socket_closed_after_s: Option<f64>,
    /// The close code it read when it resumed, if any (`4001`: slow consumer).
    pub close_code: Option<u16>,
    /// Bytes it read after resuming (what the kernel buffered for it, plus
    /// anything written after).
    pub drained_bytes: u64,
    /// Largest server-side socket send queue seen for it, bytes (kernel memory).
    pub max_server_send_queue: u64,
    /// Largest client-side socket receive queue seen for it, bytes (kernel memory).
    pub max_client_recv_queue: u64,
    /// Server RSS growth during the stall over the median before it, KiB.
    pub server_rss_growth_kib: i64,
    /// Posts in the stalled member's group from the stall until it was dropped (or
    /// the stall ended): each one a frame fanned out to it.
    pub frames_queued_bound: u64,
    /// Mean event frame size in its group, bytes.
    pub frame_bytes: f64,
    /// The hub's per-connection outbox bound in bytes (its default config).
    pub outbox_bytes: u64,
    /// The hub's tungstenite `write_buffer_size`, bytes.
    #[serde(default)]
    pub write_buffer_bytes: u64,
    /// The SO_SNDBUF the hub sets on accepted sockets, bytes (Linux doubles it).
    #[serde(default)]
    pub send_buffer_bytes: u64,
    /// The others' delivered frames/s before the stall.
    pub others_before_per_s: f64,
    /// The others' delivered frames/s during the stall.
    pub others_during_per_s: f64,
}

/// Disk use after a long run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiskReport {
    /// Events read back from the store.
    pub events: u64,
    /// Σ (key + value) bytes of the stored events, as the store encodes them.
    pub logical_bytes: u64,
    /// Σ bytes of the signed envelopes in them (the content that must be kept).
    pub envelope_bytes: u64,
    /// Σ file lengths in the data folder after a graceful stop.
    pub disk_apparent_bytes: u64,
    /// Σ blocks allocated in the data folder after a graceful stop.
    pub disk_allocated_bytes: u64,
}

/// One run of `peerhub-load`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    /// A short name for the run (`hub-g10`, ...).
    pub label: String,
    /// `hub` or `bare`.
    pub target: String,
    /// CPUs the server was allowed.
    pub server_cpus: String,
    /// Arguments given to the server besides `--listen` and `--data`.
    pub server_args: Vec<String>,
    /// CPUs the generator was allowed.
    pub generator_cpus: String,
    /// Members per group.
    pub group_size: usize,
    /// Groups.
    pub groups: usize,
    /// Connections (members).
    pub connections: usize,
    /// Members that post.
    pub senders: usize,
    /// `ack` (as fast as acknowledged), `rate` (fixed rate) or `idle`.
    pub mode: String,
    /// Unacknowledged posts each sender may have (ack mode).
    pub window: usize,
    /// Offered posts/s (rate mode).
    pub offered_per_s: f64,
    /// Post body length.
    pub body_bytes: usize,
    /// Posts pre-signed before the window.
    pub pool: usize,
    /// Seconds spent pre-signing.
    pub presign_s: f64,
    /// Warm-up seconds (not counted).
    pub warmup_s: f64,
    /// Measured seconds (shorter than asked if a pool ran out).
    pub duration_s: f64,
    /// Posts sent in the window.
    pub sent: u64,
    /// Acks received in the window.
    pub accepted: u64,
    /// Acks per second in the window.
    pub accepted_per_s: f64,
    /// Event frames to members other than the sender, per second.
    pub delivered_others_per_s: f64,
    /// Event frames to anyone, per second.
    pub delivered_total_per_s: f64,
    /// Coefficient of variation of accepted/s across 1 s slices of the window.
    pub accepted_cv: f64,
    /// Send → last other member received (send → own echo when G = 1).
    pub delivery: Latency,
    /// Send → ack.
    pub ack: Latency,
    /// How late the generator sent against its schedule (rate mode).
    pub send_lag: Latency,
    /// Error frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Connections the server closed, by close code (`reset`: no close frame).
    pub closes: BTreeMap<String, u64>,
    /// Server RSS right after start, KiB.
    pub server_rss_start_kib: u64,
    /// Server RSS with every member joined, before traffic, KiB.
    pub server_rss_connected_kib: u64,
    /// Server RSS at the end of the window, KiB.
    pub server_rss_end_kib: u64,
    /// Server peak RSS, KiB.
    pub server_hwm_kib: u64,
    /// CPU the server used during the window, in cores (1.0 = one core busy).
    pub server_cpu_cores: f64,
    /// CPU the generator used during the window, in cores.
    pub generator_cpu_cores: f64,
    /// Seconds per second the server's threads waited for a CPU while runnable
    /// during the window (time other processes took from it).
    pub server_cpu_wait: f64,
    /// The same for the generator.
    pub generator_cpu_wait: f64,
    /// The machine's 1-minute load average when the window began.
    pub load_average: f64,
    /// CPUs the whole machine left idle during the window (0 to 2 here): near 0
    /// means every core was busy, with this run or with others' work.
    #[serde(default)]
    pub machine_idle_cores: f64,
    /// The idle-connection memory figure (idle mode).
    pub idle: Option<IdleReport>,
    /// The slow-member experiment.
    pub stall: Option<StallReport>,
    /// Disk use (with `--disk`).
    pub disk: Option<DiskReport>,
    /// 100 ms slices from the start of the warm-up.
    pub timeline: Vec<Slice>,
    /// The server's context switches over the measured window, summed over its
    /// threads (`/proc/<pid>/task/*/status`): voluntary (a thread blocked: waits
    /// on a futex, epoll, the disk) and involuntary (preempted).
    #[serde(default)]
    pub server_ctx_switches: CtxSwitches,
    /// The server's system calls over the measured window by name (`perf stat`
    /// tracepoints, `--syscalls`); `total` is every system call. Empty if not
    /// counted.
    #[serde(default)]
    pub server_syscalls: BTreeMap<String, u64>,
    /// Acks received over the exact span the CPU, switches and system calls were
    /// counted (the per-post figures divide by this).
    #[serde(default)]
    pub counted_posts: u64,
    /// The server's CPU seconds over that span.
    #[serde(default)]
    pub counted_cpu_s: f64,
    /// Anything the reader of the figures should know.
    pub notes: Vec<String>,
}

impl StallReport {
    /// Bytes the server held for the member in user space when it was dropped —
    /// its outbox, the batch being written and the WebSocket write buffer: what was
    /// fanned out to it (until the drop) and never reached its socket (the member
    /// drained everything that did).
    pub fn held_user_bytes(&self) -> f64 {
        let produced = self.frames_queued_bound as f64 * self.frame_bytes;
        (produced - self.drained_bytes as f64).max(0.0)
    }

    /// User-space bytes beyond the outbox bound: the batch being written and the
    /// WebSocket write buffer (and the measurement's own error).
    pub fn held_beyond_outbox(&self) -> f64 {
        self.held_user_bytes() - self.outbox_bytes as f64
    }

    /// User-space bytes plus the most the server's kernel send queue held for it.
    pub fn held_bytes(&self) -> f64 {
        self.held_user_bytes() + self.max_server_send_queue as f64
    }

    /// The others' throughput lost while the member was stalled (0.05 = 5 %).
    pub fn others_loss(&self) -> f64 {
        if self.others_before_per_s <= 0.0 {
            return 0.0;
        }
        1.0 - self.others_during_per_s / self.others_before_per_s
    }
}

/// `x` rounded to a whole number with thousands separated by commas ("12,460").
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Reads a JSON result.
pub fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))
}

/// Writes a JSON result.
pub fn write<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

impl LoadReport {
    /// Accepted posts per second of server CPU time (robust to neighbours taking
    /// the server's core, if the server was CPU-bound).
    pub fn accepted_per_cpu_s(&self) -> f64 {
        if self.server_cpu_cores > 0.0 {
            self.accepted_per_s / self.server_cpu_cores
        } else {
            0.0
        }
    }

    /// Delivered frames (to others) per second of server CPU time.
    pub fn delivered_per_cpu_s(&self) -> f64 {
        if self.server_cpu_cores > 0.0 {
            self.delivered_others_per_s / self.server_cpu_cores
        } else {
            0.0
        }
    }
}

/// The cost-model bound on posts/s for group size `g`:
/// B(G) = 1 / (1/V + 1/S + (G−1)/W(G)), with `w` the bare server's delivered
/// frames/s at that G (ignored when G = 1).
pub fn model_posts_per_s(v: f64, s: f64, w: f64, g: usize) -> f64 {
    let fan = if g > 1 { (g as f64 - 1.0) / w } else { 0.0 };
    1.0 / (1.0 / v + 1.0 / s + fan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_adds_the_costs() {
        // 10 µs + 10 µs + 4 × 5 µs = 40 µs per post.
        let b = model_posts_per_s(100_000.0, 100_000.0, 200_000.0, 5);
        assert!((b - 25_000.0).abs() < 1e-6);
        let b1 = model_posts_per_s(100_000.0, 100_000.0, 0.0, 1);
        assert!((b1 - 50_000.0).abs() < 1e-6);
    }

    #[test]
    fn held_bytes_are_not_capped_at_the_outbox() {
        // 4,000 frames of 400 B fanned out, 300,000 B drained: 1,300,000 B held in
        // user space, 251,424 B beyond a 1 MiB outbox, plus the kernel's queue.
        let st = StallReport {
            frames_queued_bound: 4_000,
            frame_bytes: 400.0,
            drained_bytes: 300_000,
            outbox_bytes: 1_048_576,
            max_server_send_queue: 200_000,
            ..Default::default()
        };
        assert!((st.held_user_bytes() - 1_300_000.0).abs() < 1e-6);
        assert!((st.held_beyond_outbox() - 251_424.0).abs() < 1e-6);
        assert!((st.held_bytes() - 1_500_000.0).abs() < 1e-6);
        let drained_more = StallReport {
            drained_bytes: 2_000_000,
            ..st
        };
        assert_eq!(drained_more.held_user_bytes(), 0.0);
    }
}
