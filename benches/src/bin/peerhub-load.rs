//! `peerhub-load`: the load generator.
//!
//! One run: start the server (`peerhub`, or `peerhub-bare` for the baseline) as a
//! child process on a fresh data folder, optionally pinned with `taskset`; as the
//! first admin, create the groups (drop-in, no waiting room); open the members'
//! connections over real loopback sockets (optionally from several 127.0.0.x
//! source addresses), log each in with its own key and join it to its group;
//! pre-sign every post before the measured window; then send — as fast as acked
//! (`--mode ack`, at most `--window` unacknowledged posts per sender) or at a fixed
//! total rate (`--mode rate`) — and read everything the server sends back.
//!
//! Measured: acks/s (accepted: verified and durable), event frames/s delivered to
//! the other members, send → last member received and send → ack latencies
//! (HdrHistogram), errors by code, closes by code, the server's RSS and both
//! processes' CPU. `--mode idle` measures memory per idle connection, logged in
//! and then joined; `--stall-at` makes one member stop reading; `--disk` measures the data folder
//! after a graceful stop against the logical bytes stored.
//!
//! Tasks (one thread: pin the generator with `taskset`): per member a reader; per
//! sender a writer. A sender's writer and reader share a semaphore holding its ack
//! window: the writer takes a permit per post, the reader gives it back on the ack
//! (or error). Every loop is bounded by the pool and by time; the whole run by
//! `--max-runtime`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use peerhub_bench::child::{sibling_binary, ServerChild};
use peerhub_bench::client::{client_config, SetupClient, Ws};
use peerhub_bench::identity::Identity;
use peerhub_bench::report::{DiskReport, IdleReport, Latency, LoadReport, Slice, StallReport};
use peerhub_bench::wire::{self, FrameType};
use peerhub_bench::{now_ms, procfs, report, sample};
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::frame::Channel;
use peerhub_protocol::{ClientFrame, GroupId, SignedEnvelope};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

/// Length of one timeline slice.
const SLICE: Duration = Duration::from_millis(100);
/// How long after the window the generator waits for posts still in flight.
const DRAIN: Duration = Duration::from_secs(3);
/// The per-key limits the hub runs with unless `--default-limits`.
const RAISED_LIMIT: &str = "1000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// The real `peerhub` binary.
    Hub,
    /// `peerhub-bare`, the bare broadcast baseline.
    Bare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// As fast as acknowledged: each sender keeps `--window` posts in flight.
    Ack,
    /// A fixed total rate, spread evenly over the senders.
    Rate,
    /// Connect, log in, join, and measure memory; no posts.
    Idle,
}

/// peerhub-load: drives peerhub (or the bare baseline) over real loopback sockets.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Which server to start.
    #[arg(long, value_enum, default_value = "hub")]
    target: Target,
    /// The server binary (default: `peerhub` or `peerhub-bare` beside this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Pin the server to these CPUs with taskset (e.g. `0` or `0,1`).
    #[arg(long)]
    server_cpus: Option<String>,
    /// Extra arguments for the server (repeat the flag for each).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Extra environment for the server, `KEY=VALUE` (repeat the flag for each).
    #[arg(long)]
    server_env: Vec<String>,
    /// Keep the hub's default per-key rate limits (5 posts/s per key, 5 commands/s)
    /// instead of raising them out of the way. Raised, the limiter still runs on
    /// every post, so its cost is in the figures; it just never refuses.
    #[arg(long)]
    default_limits: bool,
    /// Folder in which the fresh data folder is made (default: the temp folder).
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// Cluster mode: the NATS servers the hub's nodes use (comma-separated
    /// `nats://` URLs of a fresh cluster: one first-admin link is printed per
    /// cluster, and the groups `g0`, `g1`, ... must not exist yet).
    #[arg(long)]
    nats_urls: Option<String>,
    /// Cluster mode: how many peerhub nodes to start, each its own process and
    /// data folder. Members of every group are spread over them in turn, so each
    /// group has members on every node.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Cluster mode: pin node `i` to the `i`-th of these CPU lists
    /// (`;`-separated, e.g. `0;1`); nodes past the list take `--server-cpus`.
    #[arg(long, value_delimiter = ';')]
    node_cpus: Vec<String>,
    /// Cluster mode: copies of each stream and bucket (`cluster.replicas`).
    #[arg(long, default_value_t = 3)]
    nats_replicas: usize,
    /// Members per group.
    #[arg(long, default_value_t = 1)]
    group_size: usize,
    /// Number of groups.
    #[arg(long, default_value_t = 64)]
    groups: usize,
    /// Members of each group that post (default: all of them).
    #[arg(long)]
    senders_per_group: Option<usize>,
    /// How posts are paced.
    #[arg(long, value_enum, default_value = "ack")]
    mode: Mode,
    /// Unacknowledged posts per sender (ack mode).
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Total posts per second (rate mode).
    #[arg(long)]
    rate: Option<f64>,
    /// Rate mode: take the rate from earlier runs' `accepted_per_s` (the largest,
    /// when several are given; missing files are skipped)...
    #[arg(long)]
    rate_from: Vec<PathBuf>,
    /// ... times this fraction.
    #[arg(long, default_value_t = 0.5)]
    rate_fraction: f64,
    /// Seconds of traffic before the window (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds in the measured window.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Posts to pre-sign in ack mode, over all senders (the window ends early if
    /// they run out; the report says so).
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Post body length in bytes.
    #[arg(long, default_value_t = sample::DEFAULT_BODY_BYTES)]
    body_bytes: usize,
    /// WebSocket read buffer per client connection, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    read_buffer: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Source addresses for the members' connections, used in turn (each gives
    /// about 28,000 ephemeral ports). Loopback only.
    #[arg(long, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,
    /// Idle mode: seconds to let the server settle before reading its RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Idle mode, for diagnosis: log the connections in but do not join them.
    #[arg(long)]
    no_join: bool,
    /// One member of the first group (not a sender) stops reading this many
    /// seconds into the window...
    #[arg(long)]
    stall_at: Option<f64>,
    /// ... for at most this many seconds.
    #[arg(long, default_value_t = 12.0)]
    stall_for: f64,
    /// After the run, stop the server and measure its data folder against the
    /// logical bytes of the stored events.
    #[arg(long)]
    disk: bool,
    /// Record a CPU profile of the server (`perf record -g`) over the window into
    /// this file.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Count the server's system calls by name over the window (`perf stat` on
    /// syscall tracepoints; needs tracefs access). Context switches are always
    /// counted (from `/proc`).
    #[arg(long)]
    syscalls: bool,
    /// Hard limit on the whole run, seconds.
    #[arg(long, default_value_t = 300)]
    max_runtime: u64,
    /// A name for the run.
    #[arg(long, default_value = "run")]
    label: String,
    /// Where to write the JSON result.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("peerhub-load: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(args.max_runtime);
    let result = runtime.block_on(async {
        match tokio::time::timeout(limit, run(args)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("the run took longer than --max-runtime")),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peerhub-load: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A member's connection after set-up.
struct Member {
    group: usize,
    identity: Identity,
    client: SetupClient,
}

/// One pre-signed post.
struct Post {
    id: u32,
    frame: Utf8Bytes,
}

/// What every task shares about one post.
struct Slot {
    /// When it was sent, ns since `Shared::base` (0: not yet).
    t0: AtomicU64,
    /// The member that sent it.
    sender: u32,
    /// Receipts still awaited before it counts as delivered.
    remaining: AtomicU32,
}

struct Counters {
    delivery: Histogram<u64>,
    ack: Histogram<u64>,
    lag: Histogram<u64>,
    slices: Vec<Slice>,
    errors: BTreeMap<String, u64>,
    closes: BTreeMap<String, u64>,
    sent: u64,
    sent_total: u64,
    acked_total: u64,
    exhausted_at: Option<Duration>,
    offline_seen: Option<Duration>,
    /// Acks received in the stalled member's group: each a frame fanned out to it.
    stalled_group_acks: u64,
    /// `stalled_group_acks` when the member stopped reading...
    acks_at_stall: Option<u64>,
    /// ... and when its group mates saw it go offline.
    acks_at_offline: Option<u64>,
    stalled_drained: u64,
    stalled_close: Option<u16>,
    event_bytes: u64,
    event_frames: u64,
}

/// The run's shared state; one thread, so the lock is never contended.
struct Shared {
    base: Instant,
    window_start: Instant,
    window_end: Instant,
    group_size: usize,
    slots: Vec<Slot>,
    stalled: Option<usize>,
    stalled_key: String,
    counters: Mutex<Counters>,
}

impl Shared {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn in_window(&self, t0_ns: u64) -> bool {
        t0_ns >= self.ns(self.window_start) && t0_ns < self.ns(self.window_end)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut counters)
    }

    fn slice_index(&self, at: Instant) -> usize {
        (at.saturating_duration_since(self.base).as_millis() / SLICE.as_millis()) as usize
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 120_000_000, 3).context("histogram bounds")
}

fn summary(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        count: h.len(),
        p50_us: h.value_at_quantile(0.50) as f64,
        p90_us: h.value_at_quantile(0.90) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        max_us: h.max() as f64,
        mean_us: h.mean(),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.group_size == 0 || args.groups == 0 {
        bail!("--group-size and --groups must be at least 1");
    }
    if args.source_ips.iter().any(|ip| !ip.is_loopback()) {
        bail!("--source-ips must be loopback addresses (127.0.0.0/8)");
    }
    let connections = args.group_size * args.groups;
    let bin = args.server_bin.clone().unwrap_or_else(|| {
        sibling_binary(match args.target {
            Target::Hub => "peerhub",
            Target::Bare => "peerhub-bare",
        })
    });
    let parent = args.data_parent.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let data = tempfile::Builder::new()
        .prefix("peerhub-load-")
        .tempdir_in(&parent)?;
    let mut server_args = args.server_arg.clone();
    if args.target == Target::Hub {
        server_args.push("--data".into());
        server_args.push(data.path().display().to_string());
        if !args.default_limits {
            for flag in [
                "--messages-per-second",
                "--message-burst",
                "--commands-per-second",
            ] {
                server_args.push(flag.into());
                server_args.push(RAISED_LIMIT.into());
            }
        }
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.nodes > 1 && args.nats_urls.is_none() {
        bail!("--nodes above 1 needs --nats-urls: several nodes are a cluster");
    }
    if args.target == Target::Bare && args.nats_urls.is_some() {
        bail!("--nats-urls runs the hub as a cluster; the bare server has none");
    }
    // Node 0 first: in a fresh cluster it is the one that prints the first-admin
    // link. The others start after it, on their own data folders.
    let mut servers = Vec::with_capacity(args.nodes);
    let mut folders = vec![data];
    for node in 0..args.nodes {
        if node > 0 {
            folders.push(
                tempfile::Builder::new()
                    .prefix("peerhub-load-")
                    .tempdir_in(&parent)?,
            );
        }
        let mut node_args = server_args.clone();
        if args.target == Target::Hub {
            // `--data` is the first pair pushed above; each node has its own.
            if let Some(at) = node_args.iter().position(|a| a == "--data") {
                node_args[at + 1] = folders[node].path().display().to_string();
            }
        }
        let mut env = args.server_env.clone();
        if let Some(urls) = &args.nats_urls {
            env.push(format!("PEERHUB_CLUSTER_NATS_URLS={urls}"));
            env.push(format!("PEERHUB_CLUSTER_NODE_NAME=load-{node}"));
            env.push(format!("PEERHUB_CLUSTER_REPLICAS={}", args.nats_replicas));
        }
        let cpus = args
            .node_cpus
            .get(node)
            .map(String::as_str)
            .or(args.server_cpus.as_deref());
        servers.push(ServerChild::start(&bin, cpus, &node_args, &env).await?);
    }
    let data = folders.remove(0);
    let server = servers.remove(0);
    let pid = server.pid;
    let mut report = LoadReport {
        label: args.label.clone(),
        target: format!("{:?}", args.target).to_lowercase(),
        server_cpus: procfs::cpus_allowed(Some(pid)),
        generator_cpus: procfs::cpus_allowed(None),
        group_size: args.group_size,
        groups: args.groups,
        connections,
        mode: format!("{:?}", args.mode).to_lowercase(),
        window: args.window,
        body_bytes: args.body_bytes,
        warmup_s: args.warmup,
        server_args: server_args
            .iter()
            .filter(|a| !a.contains("peerhub-load-"))
            .cloned()
            .chain(args.server_env.iter().map(|e| format!("env {e}")))
            .collect(),
        ..Default::default()
    };
    eprintln!(
        "[{}] {} pid {pid} on {} (cpus {}), generator cpus {}",
        args.label,
        bin.display(),
        server.addr,
        report.server_cpus,
        report.generator_cpus
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    report.server_rss_start_kib = procfs::rss_kib(pid).unwrap_or(0);

    let group_ids: Vec<GroupId> = (0..args.groups)
        .map(|i| GroupId::parse(&format!("g{i}")))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("group id: {e}"))?;
    if args.target == Target::Hub {
        create_groups(&server, &group_ids).await?;
    }
    let rss_before = procfs::rss_kib(pid).unwrap_or(0);

    // Idle mode measures the memory of a logged-in connection and of joining apart:
    // every member logs in, the server settles, then every member joins.
    let phased = args.mode == Mode::Idle && !args.no_join;
    let started = Instant::now();
    let addrs: Vec<_> = std::iter::once(server.addr)
        .chain(servers.iter().map(|s| s.addr))
        .collect();
    let others_cpu0: Vec<_> = servers
        .iter()
        .map(|s| procfs::cpu_ticks(Some(s.pid)))
        .collect();
    let mut members = connect_members(
        &args,
        &addrs,
        &group_ids,
        !args.no_join && !phased,
        &mut report.notes,
    )
    .await?;
    let mut connect_s = started.elapsed().as_secs_f64();
    let mut rss_logged_in = None;
    let mut joined_reply_bytes = 0.0;
    if phased {
        tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        rss_logged_in = procfs::rss_kib(pid);
        let started = Instant::now();
        joined_reply_bytes = join_members(&args, &mut members, &group_ids).await?;
        connect_s += started.elapsed().as_secs_f64();
    }
    eprintln!(
        "[{}] {} members joined in {connect_s:.1} s",
        args.label,
        members.len()
    );

    let result = if args.mode == Mode::Idle {
        idle(
            &args,
            pid,
            members,
            (rss_before, rss_logged_in),
            (connect_s, joined_reply_bytes),
            &mut report,
        )
        .await
    } else {
        traffic(&args, pid, members, &group_ids, &mut report).await
    };
    report.server_hwm_kib = procfs::hwm_kib(pid).unwrap_or(0);
    if args.nats_urls.is_some() {
        report.notes.push(format!(
            "cluster: {} peerhub node(s) on NATS ({} copies of each stream); members \
             spread over the nodes in turn; the server figures above are node 0's",
            args.nodes, args.nats_replicas
        ));
    }
    for (i, (other, cpu0)) in servers.iter().zip(&others_cpu0).enumerate() {
        let cpu_s = match (cpu0, procfs::cpu_ticks(Some(other.pid))) {
            (Some(a), Some(b)) => b.saturating_sub(*a) as f64 / procfs::clock_ticks_per_s(),
            _ => f64::NAN,
        };
        report.notes.push(format!(
            "node {}: {cpu_s:.1} CPU s from set-up to the end, RSS {} KiB at the end",
            i + 1,
            procfs::rss_kib(other.pid).unwrap_or(0)
        ));
    }
    let mut graceful = server.stop().await?;
    for other in servers {
        graceful &= other.stop().await?;
    }
    if !graceful {
        report
            .notes
            .push("a server did not stop gracefully within 30 s".into());
    }
    result?;
    if args.disk && args.target == Target::Hub {
        report.disk = Some(disk_use(data.path(), &group_ids)?);
    }
    print_summary(&report);
    if let Some(out) = &args.out {
        report::write(out, &report)?;
    }
    Ok(())
}

/// Redeems the first-admin invite and creates every group (drop-in, no waiting
/// room), pipelining the requests on one connection.
async fn create_groups(server: &ServerChild, groups: &[GroupId]) -> anyhow::Result<()> {
    let token = server.admin_token.clone().context(
        "the server printed no first-admin link (a cluster prints one once: run the \
             load on a fresh NATS cluster)",
    )?;
    let mut admin = Identity::generate()?;
    let mut client = SetupClient::connect(server.addr, None, client_config(64 * 1024)).await?;
    client.login(&mut admin).await?;
    let env = admin.redeem(&token);
    client
        .request("redeemed", |id| ClientFrame::Redeem { id, env })
        .await?;
    for chunk in groups.chunks(256) {
        let mut ids = Vec::with_capacity(chunk.len());
        for group in chunk {
            let id = client.next_id();
            let env = admin.create_group(group);
            client
                .send(&ClientFrame::CreateGroup {
                    id: Some(id),
                    access_code: None,
                    env,
                })
                .await?;
            ids.push(id);
        }
        for id in ids {
            let reply = client.reply_to(id).await?;
            if wire::type_name(&reply) != Some("group_created") {
                bail!("creating a group: {reply}");
            }
        }
    }
    let _ = client.ws.close(None).await;
    Ok(())
}

/// Opens, logs in and (if `join`) joins every member: member `i` is in group `i / G`,
/// connected to node `i % addrs.len()`.
async fn connect_members(
    args: &Args,
    addrs: &[std::net::SocketAddr],
    groups: &[GroupId],
    join: bool,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Member>> {
    let connections = args.group_size * args.groups;
    let sources = args.source_ips.clone();
    let read_buffer = args.read_buffer;
    let group_size = args.group_size;
    let opened = futures_util::stream::iter(0..connections)
        .map(|i| {
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            let group = groups[i / group_size].clone();
            let addr = addrs[i % addrs.len()];
            async move {
                // A connection whose handshake the server dropped is tried again
                // (at most three times, each with a fresh key); the retries are
                // reported.
                let mut last_error = None;
                for attempt in 0..CONNECT_ATTEMPTS {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                    match open_member(addr, source, read_buffer, &group, i, join).await {
                        Ok((identity, client)) => return Ok((i, identity, client, attempt)),
                        Err(error) => last_error = Some(error),
                    }
                }
                Err(last_error.unwrap_or_else(|| anyhow::anyhow!("connection {i} failed")))
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1));
    tokio::pin!(opened);
    let mut members: Vec<Option<Member>> = (0..connections).map(|_| None).collect();
    let mut retries = 0;
    while let Some(result) = opened.next().await {
        let (i, identity, client, attempts) = result?;
        retries += attempts;
        members[i] = Some(Member {
            group: i / group_size,
            identity,
            client,
        });
    }
    if retries > 0 {
        notes.push(format!(
            "{retries} connection attempt(s) failed during set-up and were tried again"
        ));
    }
    members
        .into_iter()
        .map(|m| m.context("every member connected"))
        .collect()
}

/// How many times a member's connection is tried during set-up.
const CONNECT_ATTEMPTS: u32 = 3;

/// Connects, logs in and (if `join`) joins member `i` to `group`.
async fn open_member(
    addr: std::net::SocketAddr,
    source: Option<IpAddr>,
    read_buffer: usize,
    group: &GroupId,
    i: usize,
    join: bool,
) -> anyhow::Result<(Identity, SetupClient)> {
    let mut identity = Identity::generate()?;
    let mut client = SetupClient::connect(addr, source, client_config(read_buffer))
        .await
        .with_context(|| format!("connection {i}"))?;
    client.login(&mut identity).await?;
    if join {
        join_group(&mut identity, &mut client, group, i).await?;
    }
    Ok((identity, client))
}

/// Member `i`'s display name: `Load <i>`, unless the hub refuses that (a number
/// like 112 or 999 is a helpline's, and a name may not be one), then `Load n<i>`.
fn member_name(i: usize) -> String {
    let plain = format!("Load {i}");
    if peerhub_protocol::names::normalise_display_name(&plain).is_ok() {
        plain
    } else {
        format!("Load n{i}")
    }
}

/// Joins member `i`, logged in on `client`, to `group`; returns the `joined`
/// reply's length in bytes.
async fn join_group(
    identity: &mut Identity,
    client: &mut SetupClient,
    group: &GroupId,
    i: usize,
) -> anyhow::Result<usize> {
    let env = identity.join(group, &member_name(i));
    let reply = client
        .request_json(
            "joined",
            |id| serde_json::json!({ "type": "join", "id": id, "group": group, "env": env }),
        )
        .await
        .with_context(|| format!("joining connection {i}"))?;
    Ok(reply.len())
}

/// Joins every logged-in member to its group; returns the mean length of the
/// `joined` replies, bytes.
async fn join_members(
    args: &Args,
    members: &mut [Member],
    groups: &[GroupId],
) -> anyhow::Result<f64> {
    let count = members.len().max(1);
    let joins = futures_util::stream::iter(members.iter_mut().enumerate())
        .map(|(i, member)| {
            let group = groups[member.group].clone();
            async move { join_group(&mut member.identity, &mut member.client, &group, i).await }
        })
        .buffer_unordered(args.connect_concurrency.max(1));
    tokio::pin!(joins);
    let mut total = 0;
    while let Some(result) = joins.next().await {
        total += result?;
    }
    Ok(total as f64 / count as f64)
}

/// Memory per idle, joined connection (and per logged-in one, when `rss_logged_in`
/// was measured between the phases).
async fn idle(
    args: &Args,
    pid: u32,
    members: Vec<Member>,
    (rss_before, rss_logged_in): (u64, Option<u64>),
    (connect_s, joined_reply_bytes): (f64, f64),
    report: &mut LoadReport,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut readers = Vec::with_capacity(members.len());
    let connections = members.len();
    for member in members {
        let stop = stop.clone();
        let mut ws = member.client.ws;
        readers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    next = ws.next() => match next {
                        Some(Ok(_)) => continue,
                        _ => break,
                    },
                }
            }
            ws
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_after = procfs::rss_kib(pid).unwrap_or(0);
    report.server_rss_connected_kib = rss_after;
    report.server_rss_end_kib = rss_after;
    report.idle = Some(IdleReport {
        connections,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        bytes_per_connection: (rss_after as f64 - rss_before as f64) * 1024.0
            / connections.max(1) as f64,
        rss_logged_in_kib: rss_logged_in.unwrap_or(0),
        joined_reply_bytes,
        logged_in_bytes_per_connection: rss_logged_in
            .map(|l| (l as f64 - rss_before as f64) * 1024.0 / connections.max(1) as f64)
            .unwrap_or(0.0),
        connect_s,
        source_addresses: if args.source_ips.is_empty() {
            vec!["127.0.0.1".into()]
        } else {
            args.source_ips.iter().map(ToString::to_string).collect()
        },
    });
    stop.cancel();
    for reader in readers {
        if let Ok(mut ws) = reader.await {
            let _ = tokio::time::timeout(Duration::from_millis(50), ws.close(None)).await;
        }
    }
    Ok(())
}

/// The offset added to signed times so that a long run's posts stay within the
/// server's clock-skew window from the moment they are signed to the moment they
/// are sent.
fn ts_offset_ms(planned_s: f64) -> u64 {
    let limit = peerhub_protocol::limits::MAX_CLOCK_SKEW_MS as f64 * 0.8;
    ((planned_s * 1000.0 / 2.0).min(limit)).max(0.0) as u64
}

/// Pre-signs the pool of each sender, on as many threads as the generator may use
/// (one when pinned to one core). Against the bare server (which checks no
/// signature) only the first post of each sender is signed and its signature
/// reused: same bytes on the wire, a fraction of the set-up time.
fn presign(
    args: &Args,
    members: &[Member],
    groups: &[GroupId],
    senders: &[usize],
    per_sender: usize,
    planned_s: f64,
) -> Vec<Vec<Post>> {
    let offset = ts_offset_ms(planned_s);
    let jobs: Vec<(usize, Identity, GroupId)> = senders
        .iter()
        .enumerate()
        .map(|(s, &m)| {
            let member = &members[m];
            (s, member.identity.clone(), groups[member.group].clone())
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = jobs.len().div_ceil(threads).max(1);
    let (target, body_bytes) = (args.target, args.body_bytes);
    let mut pools: Vec<(usize, Vec<Post>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(s, identity, group)| {
                            let mut identity = identity.clone();
                            let pool = sign_pool(
                                target,
                                &mut identity,
                                group,
                                *s,
                                per_sender,
                                body_bytes,
                                offset,
                            );
                            (*s, pool)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    pools.sort_by_key(|(s, _)| *s);
    pools.into_iter().map(|(_, pool)| pool).collect()
}

fn sign_pool(
    target: Target,
    identity: &mut Identity,
    group: &GroupId,
    s: usize,
    per_sender: usize,
    body_bytes: usize,
    offset: u64,
) -> Vec<Post> {
    let mut pool = Vec::with_capacity(per_sender);
    let mut reused_sig = None;
    for k in 0..per_sender {
        let id = (s * per_sender + k) as u32;
        let body = sample::body(id, body_bytes);
        let ts = now_ms() + offset;
        let env = match (target, &reused_sig) {
            (Target::Bare, Some(sig)) => SignedEnvelope {
                kind: Kind::Post,
                key: identity.key(),
                payload: identity.post_payload(group, &body, ts),
                sig: *sig,
            },
            _ => {
                let env = identity.post(group, &body, ts);
                reused_sig = Some(env.sig);
                env
            }
        };
        let frame = ClientFrame::Post {
            id: Some(u64::from(id) + 1),
            group: group.clone(),
            env,
        }
        .to_json();
        pool.push(Post {
            id,
            frame: Utf8Bytes::from(frame),
        });
    }
    pool
}

#[allow(clippy::too_many_lines)]
async fn traffic(
    args: &Args,
    pid: u32,
    members: Vec<Member>,
    groups: &[GroupId],
    report: &mut LoadReport,
) -> anyhow::Result<()> {
    let g = args.group_size;
    let stalled = args.stall_at.map(|_| 0usize);
    if stalled.is_some() && g < 3 {
        bail!("--stall-at needs groups of at least 3");
    }
    let per_group = args.senders_per_group.unwrap_or(g).min(g);
    let senders: Vec<usize> = (0..members.len())
        .filter(|&i| i % g < per_group && Some(i) != stalled)
        .collect();
    if senders.is_empty() {
        bail!("no member posts");
    }
    let stall_extra = args.stall_at.map(|_| args.stall_for).unwrap_or(0.0);
    let run_s = args.warmup + args.duration;
    let best_earlier = args
        .rate_from
        .iter()
        .filter_map(|path| report::read::<LoadReport>(path).ok())
        .map(|r| r.accepted_per_s)
        .fold(0.0, f64::max);
    let offered = match (args.mode, args.rate) {
        (Mode::Rate, Some(rate)) => rate,
        (Mode::Rate, None) if !args.rate_from.is_empty() => best_earlier * args.rate_fraction,
        (Mode::Rate, None) => bail!("rate mode needs --rate or --rate-from"),
        _ => 0.0,
    };
    if args.mode == Mode::Rate && offered <= 0.0 {
        bail!("the offered rate is not positive");
    }
    let per_sender = match args.mode {
        Mode::Rate => (offered * run_s / senders.len() as f64).ceil() as usize + 1,
        _ => args.messages.div_ceil(senders.len()).max(args.window + 1),
    };
    let total = per_sender * senders.len();
    if total >= u32::MAX as usize {
        bail!("too many posts for one run");
    }
    report.senders = senders.len();
    report.offered_per_s = offered;
    report.pool = total;
    report.duration_s = args.duration;

    let presign_started = Instant::now();
    let planned = run_s + stall_extra + total as f64 / 40_000.0;
    let pools = presign(args, &members, groups, &senders, per_sender, planned);
    report.presign_s = presign_started.elapsed().as_secs_f64();
    eprintln!(
        "[{}] pre-signed {total} posts in {:.1} s",
        args.label, report.presign_s
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    report.server_rss_connected_kib = procfs::rss_kib(pid).unwrap_or(0);

    let mut slots = Vec::with_capacity(total);
    for &m in &senders {
        let receivers = if g == 1 {
            1
        } else {
            let stalled_here = stalled.is_some_and(|s| s / g == m / g);
            (g - 1 - usize::from(stalled_here)) as u32
        };
        for _ in 0..per_sender {
            slots.push(Slot {
                t0: AtomicU64::new(0),
                sender: m as u32,
                remaining: AtomicU32::new(receivers),
            });
        }
    }
    let base = Instant::now() + Duration::from_millis(50);
    let window_start = base + Duration::from_secs_f64(args.warmup);
    let window_end = window_start + Duration::from_secs_f64(args.duration);
    let stall_until = args
        .stall_at
        .map(|at| window_start + Duration::from_secs_f64(at + args.stall_for));
    let hard_end = (window_end + DRAIN)
        .max(stall_until.map_or(window_end, |until| until + Duration::from_secs(1)));
    let slice_count = ((hard_end - base).as_millis() / SLICE.as_millis()) as usize + 2;
    let shared = Arc::new(Shared {
        base,
        window_start,
        window_end,
        group_size: g,
        slots,
        stalled,
        stalled_key: stalled
            .map(|s| members[s].identity.key().to_b64())
            .unwrap_or_default(),
        counters: Mutex::new(Counters {
            delivery: histogram()?,
            ack: histogram()?,
            lag: histogram()?,
            slices: (0..slice_count)
                .map(|i| Slice {
                    t_ms: i as u64 * SLICE.as_millis() as u64,
                    ..Default::default()
                })
                .collect(),
            errors: BTreeMap::new(),
            closes: BTreeMap::new(),
            sent: 0,
            sent_total: 0,
            acked_total: 0,
            exhausted_at: None,
            offline_seen: None,
            stalled_group_acks: 0,
            acks_at_stall: None,
            acks_at_offline: None,
            stalled_drained: 0,
            stalled_close: None,
            event_bytes: 0,
            event_frames: 0,
        }),
    });

    // Readers for everyone, writers for the senders.
    let stop_readers = CancellationToken::new();
    let mut pools: Vec<Option<Vec<Post>>> = pools.into_iter().map(Some).collect();
    let mut sender_of: Vec<Option<usize>> = vec![None; members.len()];
    for (s, &m) in senders.iter().enumerate() {
        sender_of[m] = Some(s);
    }
    let stall_ports = stalled.map(|s| members[s].client.local_port);
    let mut readers = Vec::with_capacity(members.len());
    let mut writers = Vec::with_capacity(senders.len());
    for (i, member) in members.into_iter().enumerate() {
        let (sink, stream) = member.client.ws.split();
        let permits = Arc::new(Semaphore::new(args.window.max(1)));
        let stall = (Some(i) == stalled).then(|| {
            let at = window_start + Duration::from_secs_f64(args.stall_at.unwrap_or(0.0));
            (at, at + Duration::from_secs_f64(args.stall_for))
        });
        readers.push(tokio::spawn(reader(
            stream,
            i,
            shared.clone(),
            sender_of[i].map(|_| permits.clone()),
            stall,
            hard_end,
            stop_readers.clone(),
        )));
        match sender_of[i].and_then(|s| pools[s].take()) {
            Some(pool) => {
                let shared = shared.clone();
                writers.push(match args.mode {
                    Mode::Rate => {
                        let interval = senders.len() as f64 / offered;
                        let phase =
                            interval * sender_of[i].unwrap_or(0) as f64 / senders.len() as f64;
                        tokio::spawn(writer_rate(sink, pool, shared, interval, phase))
                    }
                    _ => tokio::spawn(writer_ack(sink, pool, shared, permits)),
                });
            }
            None => drop(sink),
        }
    }

    let monitor = tokio::spawn(monitor(
        pid,
        shared.clone(),
        hard_end,
        stall_ports,
        stop_readers.clone(),
    ));
    let clk = procfs::clock_ticks_per_s();
    // The window ends at its time, or earlier when every writer is done.
    let writers_done = futures_util::future::join_all(writers);
    tokio::pin!(writers_done);
    let mut finished = false;
    tokio::select! {
        _ = tokio::time::sleep_until(window_start.into()) => {}
        _ = &mut writers_done => finished = true,
    }
    let measured_from = Instant::now();
    let profiler = match &args.profile {
        Some(path) => match tokio::process::Command::new("perf")
            .args(["record", "-F", "499", "-g", "-q", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(path)
            .arg("--")
            .arg("sleep")
            .arg(format!("{:.1}", args.duration))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => Some(child),
            Err(error) => {
                report
                    .notes
                    .push(format!("perf record could not start: {error}"));
                None
            }
        },
        None => None,
    };
    let syscall_counter = if args.syscalls {
        match syscall_count_start(pid, args.duration) {
            Ok(counting) => Some(counting),
            Err(error) => {
                report
                    .notes
                    .push(format!("system calls were not counted: {error}"));
                None
            }
        }
    } else {
        None
    };
    let switches0 = procfs::ctx_switches(pid);
    let acked0 = shared.with(|c| c.acked_total);
    let cpu0 = (procfs::cpu_ticks(Some(pid)), procfs::cpu_ticks(None));
    let wait0 = (procfs::run_delay_ns(Some(pid)), procfs::run_delay_ns(None));
    let idle0 = procfs::machine_idle_ticks();
    report.load_average = procfs::load_average();
    if !finished {
        tokio::select! {
            _ = tokio::time::sleep_until(window_end.into()) => {}
            _ = &mut writers_done => finished = true,
        }
    }
    let cpu1 = (procfs::cpu_ticks(Some(pid)), procfs::cpu_ticks(None));
    let acked1 = shared.with(|c| c.acked_total);
    let switches1 = procfs::ctx_switches(pid);
    report.counted_posts = acked1.saturating_sub(acked0);
    if let (Some(a), Some(b)) = (cpu0.0, cpu1.0) {
        report.counted_cpu_s = b.saturating_sub(a) as f64 / clk;
    }
    if let (Some(a), Some(b)) = (switches0, switches1) {
        report.server_ctx_switches = report::CtxSwitches {
            voluntary: b.0.saturating_sub(a.0),
            involuntary: b.1.saturating_sub(a.1),
        };
    }
    let wait1 = (procfs::run_delay_ns(Some(pid)), procfs::run_delay_ns(None));
    let idle1 = procfs::machine_idle_ticks();
    let measured_s = measured_from.elapsed().as_secs_f64().max(0.1);
    if let (Some(a), Some(b)) = (idle0, idle1) {
        report.machine_idle_cores = b.saturating_sub(a) as f64 / clk / measured_s;
    }
    report.server_rss_end_kib = procfs::rss_kib(pid).unwrap_or(0);
    if let (Some(a), Some(b)) = (cpu0.0, cpu1.0) {
        report.server_cpu_cores = b.saturating_sub(a) as f64 / clk / measured_s;
    }
    if let (Some(a), Some(b)) = (cpu0.1, cpu1.1) {
        report.generator_cpu_cores = b.saturating_sub(a) as f64 / clk / measured_s;
    }
    if let (Some(a), Some(b)) = (wait0.0, wait1.0) {
        report.server_cpu_wait = b.saturating_sub(a) as f64 / 1e9 / measured_s;
    }
    if let (Some(a), Some(b)) = (wait0.1, wait1.1) {
        report.generator_cpu_wait = b.saturating_sub(a) as f64 / 1e9 / measured_s;
    }
    if !finished {
        writers_done.await;
    }
    if let Some((mut counter, path)) = syscall_counter {
        let _ = tokio::time::timeout(Duration::from_secs(30), counter.wait()).await;
        match std::fs::read_to_string(&path) {
            Ok(text) => report.server_syscalls = parse_perf_stat(&text),
            Err(error) => report
                .notes
                .push(format!("system calls were not counted: {error}")),
        }
        let _ = std::fs::remove_file(&path);
    }
    if let Some(mut profiler) = profiler {
        let _ = tokio::time::timeout(Duration::from_secs(30), profiler.wait()).await;
    }
    // Wait (bounded) for what is still in flight, then stop the readers. A stall
    // run waits for the stalled member to resume and drain.
    if args.stall_at.is_some() {
        tokio::time::sleep_until(hard_end.into()).await;
    } else {
        let drain_until = Instant::now() + DRAIN;
        while Instant::now() < drain_until {
            let (sent, acked) = shared.with(|c| (c.sent_total, c.acked_total));
            if acked >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop_readers.cancel();
    let mut streams = Vec::new();
    for reader in readers {
        if let Ok(stream) = reader.await {
            streams.push(stream);
        }
    }
    let stall_probe = monitor.await.unwrap_or_default();
    drop(streams);

    // Figures.
    let guard = shared.counters.lock().unwrap_or_else(|p| p.into_inner());
    let counters = &*guard;
    let warm_ms = (args.warmup * 1000.0).round() as u64;
    let mut end_ms = warm_ms + (args.duration * 1000.0).round() as u64;
    if let Some(at) = counters.exhausted_at {
        let at_ms = at.as_millis() as u64 / 100 * 100;
        if at_ms < end_ms && !args.disk {
            report.notes.push(format!(
                "a sender's pre-signed pool ran out {:.1} s into the window: figures cover that part only",
                (at_ms.saturating_sub(warm_ms)) as f64 / 1000.0
            ));
        }
        if at_ms < end_ms {
            end_ms = at_ms.max(warm_ms + 100);
        }
    }
    let window_slices: Vec<&Slice> = counters
        .slices
        .iter()
        .filter(|s| s.t_ms >= warm_ms && s.t_ms < end_ms)
        .collect();
    let secs = (end_ms - warm_ms) as f64 / 1000.0;
    report.duration_s = secs;
    report.sent = counters.sent;
    report.accepted = window_slices.iter().map(|s| s.accepted).sum();
    report.accepted_per_s = report.accepted as f64 / secs;
    report.delivered_others_per_s = window_slices
        .iter()
        .map(|s| s.delivered_others)
        .sum::<u64>() as f64
        / secs;
    report.delivered_total_per_s =
        window_slices.iter().map(|s| s.delivered_total).sum::<u64>() as f64 / secs;
    report.accepted_cv = coefficient_of_variation(&window_slices);
    report.delivery = summary(&counters.delivery);
    report.ack = summary(&counters.ack);
    report.send_lag = summary(&counters.lag);
    report.errors = counters.errors.clone();
    report.closes = counters.closes.clone();
    report.timeline = counters.slices.clone();
    if report.generator_cpu_cores > 0.9 {
        report.notes.push(format!(
            "the generator used {:.2} cores: it may be what limits this run",
            report.generator_cpu_cores
        ));
    }
    if let Some(stall_at) = args.stall_at {
        report.stall = Some(stall_report(args, stall_at, counters, stall_probe, warm_ms));
    }
    Ok(())
}

/// System calls counted with `--syscalls`: perf's tracepoint, and the name the
/// report gives it. `total` is every system call.
const SYSCALL_EVENTS: &[(&str, &str)] = &[
    ("raw_syscalls:sys_enter", "total"),
    ("syscalls:sys_enter_futex", "futex"),
    ("syscalls:sys_enter_epoll_wait", "epoll_wait"),
    ("syscalls:sys_enter_epoll_pwait", "epoll_pwait"),
    ("syscalls:sys_enter_read", "read"),
    ("syscalls:sys_enter_recvfrom", "recvfrom"),
    ("syscalls:sys_enter_write", "write"),
    ("syscalls:sys_enter_writev", "writev"),
    ("syscalls:sys_enter_sendto", "sendto"),
    ("syscalls:sys_enter_sendmsg", "sendmsg"),
    ("syscalls:sys_enter_pwrite64", "pwrite64"),
    ("syscalls:sys_enter_pread64", "pread64"),
    ("syscalls:sys_enter_fsync", "fsync"),
    ("syscalls:sys_enter_fdatasync", "fdatasync"),
    ("syscalls:sys_enter_sync_file_range", "sync_file_range"),
    ("syscalls:sys_enter_sched_yield", "sched_yield"),
    ("syscalls:sys_enter_madvise", "madvise"),
];

/// Starts `perf stat` counting the server's system calls for `seconds`; returns
/// it and the file it writes (CSV).
fn syscall_count_start(pid: u32, seconds: f64) -> anyhow::Result<(tokio::process::Child, PathBuf)> {
    let path = std::env::temp_dir().join(format!("peerhub-load-syscalls-{pid}.csv"));
    let mut command = tokio::process::Command::new("perf");
    command
        .args(["stat", "-x", ",", "--no-big-num", "-o"])
        .arg(&path);
    for (event, _) in SYSCALL_EVENTS {
        command.args(["-e", event]);
    }
    let child = command
        .arg("-p")
        .arg(pid.to_string())
        .arg("--")
        .arg("sleep")
        .arg(format!("{seconds:.1}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("perf stat")?;
    Ok((child, path))
}

/// Reads `perf stat -x,` output: `count,unit,event,...` per line.
fn parse_perf_stat(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(count), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        if let Some((_, name)) = SYSCALL_EVENTS.iter().find(|(e, _)| e == event) {
            counts.insert((*name).to_string(), count);
        }
    }
    counts
}

fn coefficient_of_variation(slices: &[&Slice]) -> f64 {
    let per_second: Vec<f64> = slices
        .chunks(10)
        .filter(|c| c.len() == 10)
        .map(|c| c.iter().map(|s| s.accepted).sum::<u64>() as f64)
        .collect();
    if per_second.len() < 2 {
        return 0.0;
    }
    let mean = per_second.iter().sum::<f64>() / per_second.len() as f64;
    if mean <= 0.0 {
        return 0.0;
    }
    let var =
        per_second.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (per_second.len() - 1) as f64;
    var.sqrt() / mean
}

/// What the monitor saw of the stalled member's socket and the server's memory.
#[derive(Debug, Default, Clone)]
struct StallProbe {
    max_server_send_queue: u64,
    max_client_recv_queue: u64,
    /// When the server's end of the stalled connection first left ESTABLISHED (it
    /// closed its socket), after `Shared::base`.
    server_closed_at: Option<Duration>,
}

/// Samples the server's RSS into the timeline every slice and, in a stall run, the
/// stalled connection's socket queues.
async fn monitor(
    pid: u32,
    shared: Arc<Shared>,
    hard_end: Instant,
    stall_port: Option<u16>,
    stop: CancellationToken,
) -> StallProbe {
    let mut probe = StallProbe::default();
    let mut tick = tokio::time::interval_at(shared.base.into(), SLICE);
    while Instant::now() < hard_end {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let rss = procfs::rss_kib(pid).unwrap_or(0);
        let index = shared.slice_index(Instant::now());
        shared.with(|c| {
            if let Some(slice) = c.slices.get_mut(index) {
                slice.server_rss_kib = rss;
            }
        });
        if let Some(port) = stall_port {
            // The client's socket: local = its port. The server's: remote = its port.
            if let Ok(text) = std::fs::read_to_string("/proc/net/tcp") {
                let needle = format!(":{port:04X}");
                let mut server_established = false;
                for line in text.lines().skip(1) {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let (Some(l), Some(r), Some(st), Some(q)) =
                        (f.get(1), f.get(2), f.get(3), f.get(4))
                    else {
                        continue;
                    };
                    let Some((tx, rx)) = q.split_once(':') else {
                        continue;
                    };
                    let tx = u64::from_str_radix(tx, 16).unwrap_or(0);
                    let rx = u64::from_str_radix(rx, 16).unwrap_or(0);
                    if l.ends_with(&needle) {
                        probe.max_client_recv_queue = probe.max_client_recv_queue.max(rx);
                    } else if r.ends_with(&needle) {
                        probe.max_server_send_queue = probe.max_server_send_queue.max(tx);
                        // State 01 is ESTABLISHED.
                        server_established |= *st == "01";
                    }
                }
                if !server_established && probe.server_closed_at.is_none() {
                    probe.server_closed_at =
                        Some(Instant::now().saturating_duration_since(shared.base));
                }
            }
        }
    }
    probe
}

fn stall_report(
    args: &Args,
    stall_at: f64,
    counters: &Counters,
    probe: StallProbe,
    warm_ms: u64,
) -> StallReport {
    let at_ms = warm_ms + (stall_at * 1000.0) as u64;
    let rate = |from: u64, to: u64| {
        let frames: u64 = counters
            .slices
            .iter()
            .filter(|s| s.t_ms >= from && s.t_ms < to)
            .map(|s| s.delivered_others)
            .sum();
        frames as f64 * 1000.0 / (to.saturating_sub(from)).max(1) as f64
    };
    let end_ms = warm_ms + (args.duration * 1000.0) as u64;
    let dropped_after = counters
        .offline_seen
        .map(|t| t.as_secs_f64() - at_ms as f64 / 1000.0);
    // Until the drop (or the end of the stall), what its group was sent: counted
    // exactly between the two moments when both were seen, else from the slices.
    let held_until = dropped_after
        .map(|d| at_ms + (d * 1000.0) as u64)
        .unwrap_or(at_ms + (args.stall_for * 1000.0) as u64);
    let frames_queued_bound: u64 = match (counters.acks_at_stall, counters.acks_at_offline) {
        (Some(from), Some(to)) => to.saturating_sub(from),
        _ => counters
            .slices
            .iter()
            .filter(|s| s.t_ms >= at_ms && s.t_ms < held_until)
            .map(|s| s.stalled_group_accepted)
            .sum(),
    };
    let before: Vec<u64> = counters
        .slices
        .iter()
        .filter(|s| s.t_ms >= warm_ms && s.t_ms < at_ms && s.server_rss_kib > 0)
        .map(|s| s.server_rss_kib)
        .collect();
    let median_before = median(before);
    let during_max = counters
        .slices
        .iter()
        .filter(|s| s.t_ms >= at_ms && s.t_ms < held_until)
        .map(|s| s.server_rss_kib)
        .max()
        .unwrap_or(0);
    StallReport {
        stall_at_s: stall_at,
        stall_for_s: args.stall_for,
        dropped_after_s: dropped_after,
        socket_closed_after_s: probe
            .server_closed_at
            .map(|t| t.as_secs_f64() - at_ms as f64 / 1000.0),
        close_code: counters.stalled_close,
        drained_bytes: counters.stalled_drained,
        max_server_send_queue: probe.max_server_send_queue,
        max_client_recv_queue: probe.max_client_recv_queue,
        server_rss_growth_kib: during_max as i64 - median_before as i64,
        frames_queued_bound,
        frame_bytes: counters.event_bytes as f64 / counters.event_frames.max(1) as f64,
        outbox_bytes: peerhub_server::config::Config::new(".").outbox_bytes as u64,
        write_buffer_bytes: peerhub_server::transport::websocket_config().write_buffer_size as u64,
        send_buffer_bytes: peerhub_server::transport::SEND_BUFFER_BYTES as u64,
        // The two seconds before the stall (not the ramp-up at the start).
        others_before_per_s: rate(at_ms.saturating_sub(2000).max(warm_ms), at_ms),
        others_during_per_s: rate(at_ms, held_until.min(end_ms.max(at_ms + 100))),
    }
}

fn median(mut values: Vec<u64>) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    values[values.len() / 2]
}

/// Sends a sender's pool as fast as its ack window allows, until the window ends.
async fn writer_ack(
    mut sink: SplitSink<Ws, Message>,
    pool: Vec<Post>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
) -> SplitSink<Ws, Message> {
    tokio::time::sleep_until(shared.base.into()).await;
    let stop_at = shared.window_end;
    let mut posts = pool.into_iter().peekable();
    'run: while Instant::now() < stop_at {
        let Ok(Ok(permit)) = tokio::time::timeout_at(stop_at.into(), permits.acquire()).await
        else {
            break;
        };
        permit.forget();
        let mut batch = 1;
        while posts.len() > batch {
            match permits.try_acquire() {
                Ok(p) => {
                    p.forget();
                    batch += 1;
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let now_ns = shared.ns(now);
        let mut in_window = 0;
        for _ in 0..batch {
            let Some(post) = posts.next() else {
                break;
            };
            if let Some(slot) = shared.slots.get(post.id as usize) {
                slot.t0.store(now_ns, Ordering::Relaxed);
            }
            if shared.in_window(now_ns) {
                in_window += 1;
            }
            if sink.feed(Message::Text(post.frame)).await.is_err() {
                break 'run;
            }
        }
        shared.with(|c| {
            c.sent += in_window;
            c.sent_total += batch as u64;
        });
        let flushed = tokio::time::timeout_at((stop_at + DRAIN).into(), sink.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            break;
        }
        if posts.peek().is_none() {
            let at = Instant::now().saturating_duration_since(shared.base);
            shared.with(|c| {
                c.exhausted_at = Some(c.exhausted_at.map_or(at, |e| e.min(at)));
            });
            break;
        }
    }
    sink
}

/// Sends a sender's pool on a fixed schedule (`interval` seconds apart, starting
/// `phase` seconds in), until the window ends.
async fn writer_rate(
    mut sink: SplitSink<Ws, Message>,
    pool: Vec<Post>,
    shared: Arc<Shared>,
    interval: f64,
    phase: f64,
) -> SplitSink<Ws, Message> {
    let stop_at = shared.window_end;
    let mut pending = 0usize;
    for (k, post) in pool.into_iter().enumerate() {
        let due = shared.base + Duration::from_secs_f64(phase + interval * k as f64);
        if due >= stop_at {
            break;
        }
        if due > Instant::now() {
            if pending > 0 {
                if sink.flush().await.is_err() {
                    break;
                }
                pending = 0;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        let now = Instant::now();
        let now_ns = shared.ns(now);
        if let Some(slot) = shared.slots.get(post.id as usize) {
            slot.t0.store(now_ns, Ordering::Relaxed);
        }
        let lag_us = now.saturating_duration_since(due).as_micros() as u64;
        let in_window = shared.in_window(now_ns);
        shared.with(|c| {
            if in_window {
                c.sent += 1;
                let _ = c.lag.record(lag_us.max(1));
            }
            c.sent_total += 1;
        });
        if sink.feed(Message::Text(post.frame)).await.is_err() {
            break;
        }
        pending += 1;
    }
    if pending > 0 {
        let _ = tokio::time::timeout(DRAIN, sink.flush()).await;
    }
    sink
}

/// Reads one member's connection until the end of the run.
async fn reader(
    mut stream: SplitStream<Ws>,
    me: usize,
    shared: Arc<Shared>,
    permits: Option<Arc<Semaphore>>,
    stall: Option<(Instant, Instant)>,
    hard_end: Instant,
    stop: CancellationToken,
) -> SplitStream<Ws> {
    let is_stalled = Some(me) == shared.stalled;
    let in_stalled_group = shared
        .stalled
        .is_some_and(|s| s / shared.group_size == me / shared.group_size);
    let mut stall = stall;
    let mut resumed = false;
    loop {
        if let Some((from, until)) = stall {
            if Instant::now() >= from {
                // Stop reading: the server sees a member that does not keep up.
                shared.with(|c| {
                    c.acks_at_stall.get_or_insert(c.stalled_group_acks);
                });
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
                stall = None;
                resumed = true;
            }
        }
        let wake = stall.map(|(from, _)| from).unwrap_or(hard_end);
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(wake.into()) => {
                if stall.is_some() { continue; }
                break;
            }
            next = stream.next() => next,
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                shared.with(|c| {
                    let key = code.map_or_else(|| "none".to_string(), |c| c.to_string());
                    *c.closes.entry(key).or_default() += 1;
                    if is_stalled {
                        c.stalled_close = code;
                    }
                });
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                shared.with(|c| *c.closes.entry("reset".into()).or_default() += 1);
                break;
            }
        };
        if is_stalled {
            if resumed {
                shared.with(|c| c.stalled_drained += text.len() as u64);
            }
            continue;
        }
        let now = Instant::now();
        let now_ns = shared.ns(now);
        let slice = shared.slice_index(now);
        match wire::frame_type(text.as_str()) {
            FrameType::Event => {
                let Some(slot) =
                    wire::event_marker(text.as_str()).and_then(|id| shared.slots.get(id as usize))
                else {
                    continue;
                };
                let own = slot.sender as usize == me;
                let counts = own == (shared.group_size == 1);
                let t0 = slot.t0.load(Ordering::Relaxed);
                let done = counts && slot.remaining.fetch_sub(1, Ordering::Relaxed) == 1;
                shared.with(|c| {
                    if let Some(s) = c.slices.get_mut(slice) {
                        s.delivered_total += 1;
                        if !own {
                            s.delivered_others += 1;
                        }
                    }
                    c.event_bytes += text.len() as u64;
                    c.event_frames += 1;
                    if done && t0 > 0 && shared.in_window(t0) {
                        let _ = c.delivery.record(((now_ns - t0.min(now_ns)) / 1000).max(1));
                    }
                });
            }
            FrameType::Ack => {
                let Some(id) = wire::reply_id(text.as_str()) else {
                    continue;
                };
                if let Some(permits) = &permits {
                    permits.add_permits(1);
                }
                let t0 = id
                    .checked_sub(1)
                    .and_then(|i| shared.slots.get(i as usize))
                    .map(|s| s.t0.load(Ordering::Relaxed))
                    .unwrap_or(0);
                shared.with(|c| {
                    c.acked_total += 1;
                    if let Some(s) = c.slices.get_mut(slice) {
                        s.accepted += 1;
                        if in_stalled_group {
                            s.stalled_group_accepted += 1;
                        }
                    }
                    if in_stalled_group {
                        c.stalled_group_acks += 1;
                    }
                    if t0 > 0 && shared.in_window(t0) {
                        let _ = c.ack.record(((now_ns - t0.min(now_ns)) / 1000).max(1));
                    }
                });
            }
            FrameType::Error => {
                let code = wire::error_code(text.as_str()).unwrap_or("?").to_string();
                let is_post = wire::reply_id(text.as_str())
                    .is_some_and(|id| id >= 1 && id <= shared.slots.len() as u64);
                if is_post {
                    if let Some(permits) = &permits {
                        permits.add_permits(1);
                    }
                }
                shared.with(|c| {
                    *c.errors.entry(code).or_default() += 1;
                    if is_post {
                        c.acked_total += 1;
                    }
                });
            }
            FrameType::Presence => {
                if in_stalled_group
                    && wire::presence_offline_key(text.as_str())
                        .is_some_and(|k| k == shared.stalled_key)
                {
                    let at = now.saturating_duration_since(shared.base);
                    shared.with(|c| {
                        c.offline_seen.get_or_insert(at);
                        c.acks_at_offline.get_or_insert(c.stalled_group_acks);
                    });
                }
            }
            FrameType::Other => {}
        }
    }
    stream
}

/// The data folder after a graceful stop, against the logical bytes of the events
/// read back through the server's store API.
fn disk_use(dir: &std::path::Path, groups: &[GroupId]) -> anyhow::Result<DiskReport> {
    use peerhub_server::store::{keys, Store};
    let (apparent, allocated) = procfs::dir_size(dir)?;
    let store = Store::open(dir).map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
    let mut report = DiskReport {
        disk_apparent_bytes: apparent,
        disk_allocated_bytes: allocated,
        ..Default::default()
    };
    for group in groups {
        let mut after = 0;
        // Bounded: at most 100,000 pages of 4096 per group.
        for _ in 0..100_000 {
            let page = store
                .events_between(group, &Channel::Main, after, u64::MAX, 4096)
                .map_err(|e| anyhow::anyhow!("reading events: {e}"))?;
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            for event in &page {
                report.events += 1;
                report.logical_bytes += (keys::event_key(group, &Channel::Main, event.seq).len()
                    + serde_json::to_vec(event).map(|v| v.len()).unwrap_or(0))
                    as u64;
                if let Some(env) = &event.env {
                    report.envelope_bytes +=
                        serde_json::to_vec(env).map(|v| v.len()).unwrap_or(0) as u64;
                }
            }
            after = last;
        }
    }
    Ok(report)
}

fn print_summary(report: &LoadReport) {
    eprintln!(
        "[{}] {} G={} conns={} senders={}: accepted {:.0}/s, delivered(others) {:.0}/s, \
         delivery p50/p99/p99.9 {:.0}/{:.0}/{:.0} µs, ack p50/p99 {:.0}/{:.0} µs, \
         server cpu {:.2} (waited {:.2}), generator cpu {:.2} (waited {:.2}), load {:.1}, idle {:.2}, \
         rss {} KiB, errors {:?}, closes {:?}",
        report.label,
        report.target,
        report.group_size,
        report.connections,
        report.senders,
        report.accepted_per_s,
        report.delivered_others_per_s,
        report.delivery.p50_us,
        report.delivery.p99_us,
        report.delivery.p999_us,
        report.ack.p50_us,
        report.ack.p99_us,
        report.server_cpu_cores,
        report.server_cpu_wait,
        report.generator_cpu_cores,
        report.generator_cpu_wait,
        report.load_average,
        report.machine_idle_cores,
        report.server_rss_end_kib,
        report.errors,
        report.closes,
    );
    if report.counted_posts > 0 {
        let c = report.server_ctx_switches;
        let mut line = format!(
            "[{}] per post: server cpu {:.1} µs, context switches {:.3} ({} voluntary, {} involuntary over {} posts)",
            report.label,
            report.cpu_us_per_post(),
            report.switches_per_post(),
            c.voluntary,
            c.involuntary,
            report.counted_posts
        );
        for (name, count) in &report.server_syscalls {
            line.push_str(&format!(
                ", {name} {:.3}",
                *count as f64 / report.counted_posts as f64
            ));
        }
        eprintln!("{line}");
    }
    if let Some(idle) = &report.idle {
        eprintln!(
            "[{}] idle: {} connections, {:.0} bytes each ({:.0} logged in, before joining)",
            report.label,
            idle.connections,
            idle.bytes_per_connection,
            idle.logged_in_bytes_per_connection
        );
    }
    if let Some(stall) = &report.stall {
        eprintln!("[{}] stall: {stall:?}", report.label);
    }
    if let Some(disk) = &report.disk {
        eprintln!("[{}] disk: {disk:?}", report.label);
    }
    for note in &report.notes {
        eprintln!("[{}] note: {note}", report.label);
    }
}
