//! `peerhub-baseline`: the same-run ceilings of the hub's parts, on whatever CPUs
//! it is given (pin it to the server's core with `taskset`).
//!
//! - V: `SignedEnvelope::verify_with` — the hub's own call: building the signing
//!   bytes and `verify_strict` — per second, with a cached `VerifyingKey`, for a
//!   real post envelope.
//! - S: `Store::put_event` of the real record (the `StoredEvent` the hub writes for
//!   that post) per second, without an explicit flush, through the server's store
//!   API on a fresh store in `--dir`.
//! - F: `Store::flush` per second, each after one record was written, and the
//!   distribution of single flush times (the group commit holds acks and fan-out
//!   until its flush returns, so a slow flush is a latency tail).
//!
//! Also, to explain gaps: verification without the cached key, signing, the hub's
//! whole write set for one post, and flushes after 64 records. Each loop runs for
//! `--seconds` (and at most 10 million iterations per slice), cut into slices of
//! which the best counts. Like the `peerhub` binary, it runs on jemalloc.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use peerhub_bench::report::{self, BaselineReport, Latency};
use peerhub_bench::{procfs, sample};
use peerhub_protocol::envelope::decode_key;
use peerhub_protocol::frame::Channel;
use peerhub_protocol::PublicKey;
use peerhub_server::store::Store;

/// The `peerhub` binary's allocator: sled's writes allocate, so S and F depend on it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The most iterations any one loop runs.
const MAX_ITERATIONS: u64 = 10_000_000;

/// peerhub-baseline: V, S and F on this machine, now.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Folder in which the scratch store is made (use the hub's filesystem).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Post body length in bytes.
    #[arg(long, default_value_t = sample::DEFAULT_BODY_BYTES)]
    body_bytes: usize,
    /// Where to write the JSON result.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Slices each measurement is cut into; the best slice counts. On a shared
/// machine a neighbour's burst lowers some slices; the best one is closest to what
/// the part can do on an undisturbed core.
const SLICES: u32 = 4;

/// Runs `step` repeatedly for `seconds`; returns calls per second in the best of
/// [`SLICES`] equal slices.
fn per_second(seconds: f64, step: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    Ok(rates(seconds, step)?.0)
}

/// Like [`per_second`], also returning the best slice's calls per second of this
/// thread's own CPU time.
fn rates(
    seconds: f64,
    mut step: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let slice = Duration::from_secs_f64(seconds) / SLICES;
    // Warm up briefly (caches, page faults, sled's first segments).
    let warm = Instant::now();
    let mut i = 0;
    while warm.elapsed() < slice / 4 && i < MAX_ITERATIONS {
        step(i)?;
        i += 1;
    }
    let (mut best, mut best_cpu): (f64, f64) = (0.0, 0.0);
    for _ in 0..SLICES {
        let start = Instant::now();
        let cpu_start = procfs::thread_cpu_ns();
        let mut n = 0;
        while n < MAX_ITERATIONS {
            step(i)?;
            i += 1;
            n += 1;
            if n % 16 == 0 && start.elapsed() >= slice {
                break;
            }
        }
        let wall = n as f64 / start.elapsed().as_secs_f64();
        best = best.max(wall);
        if let (Some(a), Some(b)) = (cpu_start, procfs::thread_cpu_ns()) {
            if b > a {
                best_cpu = best_cpu.max(n as f64 / ((b - a) as f64 / 1e9));
            }
        }
    }
    Ok((best, best_cpu))
}

/// The most single-flush times kept for the distribution.
const MAX_SAMPLES: usize = 1_000_000;

/// Percentiles of `samples` (microseconds).
fn distribution(mut samples: Vec<f64>) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Latency {
        count: samples.len() as u64,
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: samples[samples.len() - 1],
        mean_us: samples.iter().sum::<f64>() / samples.len() as f64,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (me, env) = sample::post_envelope(args.body_bytes);
    let key = decode_key(&env.key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut report = BaselineReport {
        body_bytes: args.body_bytes,
        cpus: procfs::cpus_allowed(None),
        envelope_bytes: serde_json::to_vec(&env)?.len(),
        post_frame_bytes: sample::post_frame(1, env.clone()).len(),
        event_frame_bytes: sample::event_frame(1, env.clone()).to_json().len(),
        record_bytes: serde_json::to_vec(&sample::stored_event(1, env.clone()))?.len(),
        ..Default::default()
    };

    (report.verify_per_s, report.verify_per_cpu_s) = rates(args.seconds, |_| {
        env.verify_with(std::hint::black_box(&key))
            .map_err(|e| anyhow::anyhow!("verify: {e}"))
    })?;
    eprintln!(
        "V  verify_with (cached key): {:.0}/s ({:.0} per CPU-second)",
        report.verify_per_s, report.verify_per_cpu_s
    );
    report.verify_uncached_per_s = per_second(args.seconds / 2.0, |_| {
        std::hint::black_box(&env)
            .verify()
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("verify: {e}"))
    })?;
    eprintln!(
        "   verify (decoding the key): {:.0}/s",
        report.verify_uncached_per_s
    );
    report.sign_per_s = per_second(args.seconds / 2.0, |i| {
        let mut signer = me.clone();
        let group = sample::group();
        std::hint::black_box(signer.post(&group, "x", i));
        Ok(())
    })?;
    eprintln!("   sign: {:.0}/s", report.sign_per_s);

    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let scratch = tempfile::Builder::new()
        .prefix("peerhub-baseline-")
        .tempdir_in(&parent)?;
    report.store_dir = parent.display().to_string();
    let group = sample::group();
    let store_err = |e: peerhub_server::store::StoreError| anyhow::anyhow!("store: {e}");

    // S: one event per call, as the hub writes it (encoded by the store).
    {
        let store = Store::open(&scratch.path().join("s")).map_err(store_err)?;
        let event = sample::stored_event(0, env.clone());
        (report.store_insert_per_s, report.store_insert_per_cpu_s) = rates(args.seconds, |i| {
            let mut event = event.clone();
            event.seq = i + 1;
            store
                .put_event(&group, &Channel::Main, &event)
                .map_err(store_err)
        })?;
        eprintln!(
            "S  put_event, no flush: {:.0}/s ({:.0} per CPU-second)",
            report.store_insert_per_s, report.store_insert_per_cpu_s
        );
    }

    // The hub's whole write set for one post.
    {
        let store = Store::open(&scratch.path().join("p")).map_err(store_err)?;
        let event = sample::stored_event(0, env.clone());
        let mut state = peerhub_server::groups::room::initial_state(None);
        let signer = PublicKey(env.key.0);
        report.store_post_writes_per_s = per_second(args.seconds, |i| {
            let mut event = event.clone();
            event.seq = i + 1;
            store.raise_counter(&signer, i + 1).map_err(store_err)?;
            store
                .put_event(&group, &Channel::Main, &event)
                .map_err(store_err)?;
            state.heads = vec![(Channel::Main, i + 1)];
            store.put_group_state(&group, &state).map_err(store_err)
        })?;
        eprintln!(
            "   counter + event + state, no flush: {:.0}/s",
            report.store_post_writes_per_s
        );
    }

    // F: a flush after each record, and after each 64 records.
    for (batch, slot) in [
        (1u64, &mut report.flush_per_s),
        (64, &mut report.flush64_per_s),
    ] {
        let store = Store::open(&scratch.path().join(format!("f{batch}"))).map_err(store_err)?;
        let event = sample::stored_event(0, env.clone());
        let mut times_us: Vec<f64> = Vec::new();
        *slot = per_second(args.seconds, |i| {
            for j in 0..batch {
                let mut event = event.clone();
                event.seq = i * batch + j + 1;
                store
                    .put_event(&group, &Channel::Main, &event)
                    .map_err(store_err)?;
            }
            let start = Instant::now();
            store.flush().map_err(store_err)?;
            if batch == 1 && times_us.len() < MAX_SAMPLES {
                times_us.push(start.elapsed().as_secs_f64() * 1e6);
            }
            Ok(())
        })?;
        eprintln!("F  flush after {batch} record(s): {:.0}/s", *slot);
        if batch == 1 {
            report.flush_latency = distribution(times_us);
            eprintln!(
                "   one flush: p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs ({} flushes)",
                report.flush_latency.p50_us,
                report.flush_latency.p99_us,
                report.flush_latency.p999_us,
                report.flush_latency.max_us,
                report.flush_latency.count
            );
        }
    }

    if let Some(out) = &args.out {
        report::write(out, &report).context("writing the result")?;
    }
    Ok(())
}
