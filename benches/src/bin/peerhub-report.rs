//! `peerhub-report`: turns one run's results into docs/PERFORMANCE.md.
//!
//! Reads the run folder `scripts/perf.sh` fills (`baseline.json`, `bare-g*.json`,
//! `hub-*.json`, `profile-*.data`, `meta.txt`) and criterion's estimates, works out
//! the cost model and every goal's ratio, and writes the page. A result that is
//! missing shows as "not run" rather than stopping the report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Parser;
use peerhub_bench::report::{self, model_posts_per_s, BaselineReport, Latency, LoadReport};

/// peerhub-report: writes docs/PERFORMANCE.md from a perf run.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The run folder.
    #[arg(long)]
    run: PathBuf,
    /// Criterion's output folder.
    #[arg(long, default_value = "target/criterion")]
    criterion: PathBuf,
    /// The page to write.
    #[arg(long, default_value = "docs/PERFORMANCE.md")]
    out: PathBuf,
    /// Instead of the page: print the offered rate (posts/s) of the open-loop
    /// sweep's highest passing step for this group size (0 if none passed).
    #[arg(long)]
    saturation: Option<usize>,
    /// Instead of the page: print a table of per-post counts (CPU, context
    /// switches, system calls) of every result in the run folder.
    #[arg(long)]
    per_post: bool,
}

/// The group sizes of the fan-out comparison.
const FANOUT_G: [usize; 3] = [5, 10, 30];

struct Run {
    dir: PathBuf,
    meta: BTreeMap<String, String>,
    base: Option<BaselineReport>,
}

impl Run {
    /// Every repeat of a run: `NAME.json`, `NAME.r2.json`, ...
    fn repeats(&self, name: &str) -> Vec<LoadReport> {
        let mut found: Vec<LoadReport> = report::read(&self.dir.join(format!("{name}.json")))
            .into_iter()
            .collect();
        for r in 2..=9 {
            if let Ok(result) = report::read(&self.dir.join(format!("{name}.r{r}.json"))) {
                found.push(result);
            }
        }
        found
    }

    /// The least disturbed repeat of a run: the one with the most accepted posts/s.
    fn load(&self, name: &str) -> Option<LoadReport> {
        self.repeats(name)
            .into_iter()
            .max_by(|a, b| a.accepted_per_s.total_cmp(&b.accepted_per_s))
    }

    fn meta(&self, key: &str) -> &str {
        self.meta.get(key).map(String::as_str).unwrap_or("?")
    }
}

struct Goal {
    number: &'static str,
    what: String,
    measured: String,
    /// The same ratio per CPU-second (server CPU time, the baselines' own thread
    /// time), or what else says how far the figure can be trusted.
    robust: String,
    target: String,
    met: Option<bool>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(g) = args.saturation {
        let rate = peerhub_bench::sweep::saturation(&args.run, g).map_or(0.0, |r| r.offered_per_s);
        println!("{rate:.0}");
        return Ok(());
    }
    if args.per_post {
        print!("{}", peerhub_bench::sweep::per_post_table(&args.run));
        return Ok(());
    }
    let meta = std::fs::read_to_string(args.run.join("meta.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let run = Run {
        base: report::read(&args.run.join("baseline.json")).ok(),
        dir: args.run.clone(),
        meta,
    };
    let mut page = render(&run, &args.criterion);
    // Sections written by hand (measurements of server changes) survive a
    // regeneration of the page.
    if let Ok(old) = std::fs::read_to_string(&args.out) {
        for heading in KEPT_SECTIONS {
            if let Some(section) = hand_section(&old, heading) {
                page.push('\n');
                page.push_str(section.trim_end());
                page.push('\n');
            }
        }
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, page)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// Sections of the page written by hand, kept when the page is regenerated.
const KEPT_SECTIONS: &[&str] = &["## Per-post overhead: changes measured"];

/// The section of `page` that starts at the line `heading`, up to the next
/// heading of the same level (or the end).
fn hand_section<'a>(page: &'a str, heading: &str) -> Option<&'a str> {
    let start = page.find(&format!("\n{heading}\n")).map(|i| i + 1)?;
    let rest = &page[start + heading.len()..];
    let end = rest
        .find("\n## ")
        .map_or(page.len(), |i| start + heading.len() + i + 1);
    Some(&page[start..end])
}

fn rate(x: f64) -> String {
    peerhub_bench::report::thousands(x)
}

fn time_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 10.0 {
        format!("{us:.0} µs")
    } else if us >= 1.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.0} ns", us * 1000.0)
    }
}

fn bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn yes_no(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => "not run",
    }
}

fn lat(l: &Latency) -> String {
    if l.count == 0 {
        return "–".into();
    }
    format!(
        "{} / {} / {}",
        time_us(l.p50_us),
        time_us(l.p99_us),
        time_us(l.p999_us)
    )
}

#[allow(clippy::too_many_lines)]
fn render(run: &Run, criterion: &Path) -> String {
    let mut md = String::new();
    let base = run.base.clone();
    let v = base.as_ref().map(|b| b.verify_per_s).unwrap_or(0.0);
    let s = base.as_ref().map(|b| b.store_insert_per_s).unwrap_or(0.0);
    let f = base.as_ref().map(|b| b.flush_per_s).unwrap_or(0.0);
    let v_cpu = base.as_ref().map(|b| b.verify_per_cpu_s).unwrap_or(0.0);
    let s_cpu = base
        .as_ref()
        .map(|b| b.store_insert_per_cpu_s)
        .unwrap_or(0.0);
    let bare: BTreeMap<usize, LoadReport> = [1, 5, 10, 30]
        .into_iter()
        .filter_map(|g| run.load(&format!("bare-g{g}")).map(|r| (g, r)))
        .collect();
    let hub: BTreeMap<usize, LoadReport> = [1, 5, 10, 30]
        .into_iter()
        .filter_map(|g| run.load(&format!("hub-g{g}")).map(|r| (g, r)))
        .collect();
    let two_cores = run.load("hub-g1-2cores");
    let lat50 = run.load("hub-g10-rate50");
    let lat80 = run.load("hub-g10-rate80");
    let idle_hub = run.load("hub-idle");
    let idle_bare = run.load("bare-idle");
    let stall = run.load("hub-stall");
    let disk = run.load("hub-disk");

    let _ = writeln!(md, "# peerhub performance\n");
    let _ = writeln!(
        md,
        "Written by `scripts/perf.sh` from one run ({} → {}, {} s in all, {} s of it \
         building). **Every goal is a ratio against a baseline measured in the same run**, \
         because this machine is shared: other people's builds, tests and browsers ran \
         beside it, so absolute figures move from run to run (see [Noise](#noise)). \
         Regenerate with `scripts/perf.sh`; how to read and reproduce each figure is at \
         the end.\n",
        run.meta("started"),
        run.meta("finished"),
        run.meta("total_s"),
        run.meta("build_s"),
    );

    // ---- machine ----
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n| --- | --- |");
    for (label, key) in [
        ("CPU", "cpu"),
        ("cores", "cores"),
        ("memory", "memory"),
        ("kernel", "kernel"),
        ("filesystem of the data folders", "filesystem"),
        ("rustc", "rustc"),
        ("commit", "commit"),
        ("build", "build"),
        ("allocator", "allocator"),
        ("open files limit", "nofile"),
        ("load average at start / end", "load"),
    ] {
        let _ = writeln!(md, "| {label} | {} |", run.meta(key));
    }
    let _ = writeln!(
        md,
        "| pinning | server on CPU {}, generator on CPU {} (`taskset`), unless a run says otherwise |\n",
        run.meta("server_cpu"),
        run.meta("generator_cpu")
    );

    // ---- goals ----
    let mut goals: Vec<Goal> = Vec::new();
    // Goals (by `what`) missed on the per-CPU-second figures.
    let mut cpu_missed: Vec<String> = Vec::new();
    let g1 = hub.get(&1);
    if g1.is_some_and(|h| v_cpu > 0.0 && h.accepted_per_cpu_s() / v_cpu < 0.70) {
        cpu_missed.push("Ingest, G = 1: accepted (verified, durable) posts/s ÷ V".into());
    }
    goals.push(Goal {
        number: "1",
        what: "Ingest, G = 1: accepted (verified, durable) posts/s ÷ V".into(),
        measured: match g1 {
            Some(h) if v > 0.0 => format!(
                "{} / {} = **{:.0} %**",
                rate(h.accepted_per_s),
                rate(v),
                100.0 * h.accepted_per_s / v
            ),
            _ => "not run".into(),
        },
        robust: match (g1, v_cpu > 0.0) {
            (Some(h), true) => format!(
                "{} / {} = {:.0} %",
                rate(h.accepted_per_cpu_s()),
                rate(v_cpu),
                100.0 * h.accepted_per_cpu_s() / v_cpu
            ),
            _ => "–".into(),
        },
        target: "≥ 70 %".into(),
        met: g1.filter(|_| v > 0.0).map(|h| h.accepted_per_s / v >= 0.70),
    });
    for g in FANOUT_G {
        let (h, w) = (hub.get(&g), bare.get(&g));
        let bound =
            w.map(|w| model_posts_per_s(v, s, w.delivered_others_per_s, g) * (g as f64 - 1.0));
        let bound_cpu = w.filter(|_| v_cpu > 0.0 && s_cpu > 0.0).map(|w| {
            model_posts_per_s(v_cpu, s_cpu, w.delivered_per_cpu_s(), g) * (g as f64 - 1.0)
        });
        let what = format!("Fan-out, G = {g}: delivered frames/s ÷ B(G)·(G−1)");
        if let (Some(h), Some(b)) = (h, bound_cpu) {
            if b > 0.0 && h.delivered_per_cpu_s() / b < 0.75 {
                cpu_missed.push(what.clone());
            }
        }
        goals.push(Goal {
            number: "2",
            what,
            measured: match (h, bound) {
                (Some(h), Some(b)) if b > 0.0 => format!(
                    "{} / {} = **{:.0} %**",
                    rate(h.delivered_others_per_s),
                    rate(b),
                    100.0 * h.delivered_others_per_s / b
                ),
                _ => "not run".into(),
            },
            robust: match (h, bound_cpu, bound) {
                (Some(h), Some(b), Some(wall)) if b > 0.0 && wall > 0.0 => {
                    let cpu_ratio = h.delivered_per_cpu_s() / b;
                    let wall_ratio = h.delivered_others_per_s / wall;
                    let mut text = format!(
                        "{} / {} = {:.0} %",
                        rate(h.delivered_per_cpu_s()),
                        rate(b),
                        100.0 * cpu_ratio
                    );
                    if (cpu_ratio >= 0.75) != (wall_ratio >= 0.75) {
                        let _ = write!(
                            text,
                            " — **{}** per CPU-second: the verdicts disagree (for a CPU, the \
                             bare server waited {:.2} s/s and used {:.2} cores; the hub \
                             waited {:.2} s/s and used {:.2})",
                            if cpu_ratio >= 0.75 { "met" } else { "missed" },
                            w.map(|w| w.server_cpu_wait).unwrap_or(0.0),
                            w.map(|w| w.server_cpu_cores).unwrap_or(0.0),
                            h.server_cpu_wait,
                            h.server_cpu_cores,
                        );
                    }
                    text
                }
                _ => "–".into(),
            },
            target: "≥ 75 %".into(),
            met: match (h, bound) {
                (Some(h), Some(b)) if b > 0.0 => Some(h.delivered_others_per_s / b >= 0.75),
                _ => None,
            },
        });
    }
    goals.push(Goal {
        number: "3",
        what: "Both cores: ingest (G = 1) with the server on CPUs 0–1 ÷ on one core".into(),
        measured: match (&two_cores, g1) {
            (Some(t), Some(o)) if o.accepted_per_s > 0.0 => format!(
                "{} / {} = **{:.2}×**",
                rate(t.accepted_per_s),
                rate(o.accepted_per_s),
                t.accepted_per_s / o.accepted_per_s
            ),
            _ => "not run".into(),
        },
        robust: two_cores
            .as_ref()
            .map(|t| {
                format!(
                    "the server used {:.2} cores; the machine left {:.2} idle",
                    t.server_cpu_cores, t.machine_idle_cores
                )
            })
            .unwrap_or_else(|| "–".into()),
        target: "≥ 1.3×".into(),
        met: match (&two_cores, g1) {
            (Some(t), Some(o)) if o.accepted_per_s > 0.0 => {
                Some(t.accepted_per_s / o.accepted_per_s >= 1.3)
            }
            _ => None,
        },
    });
    let ack_limit_us = if f > 0.0 { 5000.0 + 2e6 / f } else { 5000.0 };
    let conditions = |r: &Option<LoadReport>| {
        r.as_ref()
            .map(|r| {
                format!(
                    "server CPU {:.2} (waited {:.2}); machine idle {:.2} cores",
                    r.server_cpu_cores, r.server_cpu_wait, r.machine_idle_cores
                )
            })
            .unwrap_or_default()
    };
    goals.push(Goal {
        number: "4a",
        what: "Latency, G = 10 at 50 % of the hub's max: delivery p50 / p99".into(),
        measured: lat50
            .as_ref()
            .map(|l| {
                format!(
                    "{} / {} (offered {}/s, accepted {}/s)",
                    time_us(l.delivery.p50_us),
                    time_us(l.delivery.p99_us),
                    rate(l.offered_per_s),
                    rate(l.accepted_per_s)
                )
            })
            .unwrap_or_else(|| "not run".into()),
        robust: conditions(&lat50),
        target: "p50 ≤ 2 ms, p99 ≤ 10 ms".into(),
        met: lat50.as_ref().map(|l| {
            l.delivery.count > 0 && l.delivery.p50_us <= 2000.0 && l.delivery.p99_us <= 10_000.0
        }),
    });
    goals.push(Goal {
        number: "4b",
        what: "Latency, G = 10 at 80 % of the hub's max: delivery p99".into(),
        measured: lat80
            .as_ref()
            .map(|l| {
                format!(
                    "{} (offered {}/s, accepted {}/s)",
                    time_us(l.delivery.p99_us),
                    rate(l.offered_per_s),
                    rate(l.accepted_per_s)
                )
            })
            .unwrap_or_else(|| "not run".into()),
        robust: conditions(&lat80),
        target: "p99 ≤ 50 ms".into(),
        met: lat80
            .as_ref()
            .map(|l| l.delivery.count > 0 && l.delivery.p99_us <= 50_000.0),
    });
    goals.push(Goal {
        number: "4c",
        what: "Durable acks (group commit) at 50 %: ack p99".into(),
        measured: lat50
            .as_ref()
            .map(|l| time_us(l.ack.p99_us))
            .unwrap_or_else(|| "not run".into()),
        robust: format!("F = {}/s in this run", rate(f)),
        target: format!("≤ 5 ms + 2/F = {}", time_us(ack_limit_us)),
        met: lat50
            .as_ref()
            .map(|l| l.ack.count > 0 && l.ack.p99_us <= ack_limit_us),
    });
    let idle_ratio = match (&idle_hub, &idle_bare) {
        (Some(h), Some(b)) => match (&h.idle, &b.idle) {
            (Some(h), Some(b)) if b.bytes_per_connection > 0.0 => Some((
                h.bytes_per_connection,
                b.bytes_per_connection,
                h.connections,
            )),
            _ => None,
        },
        _ => None,
    };
    goals.push(Goal {
        number: "5",
        what: "Memory: RSS growth per idle joined connection, hub ÷ bare".into(),
        measured: idle_ratio
            .map(|(h, b, n)| {
                format!(
                    "{} / {} = **{:.2}×** at {} connections",
                    bytes(h),
                    bytes(b),
                    h / b,
                    rate(n as f64)
                )
            })
            .unwrap_or_else(|| "not run".into()),
        robust: String::new(),
        target: "≤ 1.5×".into(),
        met: idle_ratio.map(|(h, b, _)| h / b <= 1.5),
    });
    let stall_report = stall.as_ref().and_then(|r| r.stall.clone());
    goals.push(Goal {
        number: "6a",
        what: "Slow member: bytes held for it before it is dropped (outbox + server socket)".into(),
        measured: stall_report
            .as_ref()
            .map(|st| {
                format!(
                    "{} ({} user space: outbox, batch being written, WebSocket buffer; + {} \
                     kernel send queue); dropped after {}",
                    bytes(st.held_bytes()),
                    bytes(st.held_user_bytes()),
                    bytes(st.max_server_send_queue as f64),
                    st.dropped_after_s
                        .map(|d| format!("{d:.1} s"))
                        .unwrap_or_else(|| format!("more than {:.0} s", st.stall_for_s)),
                )
            })
            .unwrap_or_else(|| "not run".into()),
        robust: String::new(),
        target: "about 1 MiB (≤ 1.25 MiB)".into(),
        met: stall_report
            .as_ref()
            .map(|st| st.dropped_after_s.is_some() && st.held_bytes() <= 1.25 * 1024.0 * 1024.0),
    });
    goals.push(Goal {
        number: "6b",
        what: "Slow member: the others' delivered frames/s while it stalls".into(),
        measured: stall_report
            .as_ref()
            .map(|st| {
                format!(
                    "{} → {} /s: **{:.1} %** lost",
                    rate(st.others_before_per_s),
                    rate(st.others_during_per_s),
                    100.0 * st.others_loss()
                )
            })
            .unwrap_or_else(|| "not run".into()),
        robust: String::new(),
        target: "≤ 10 % lost".into(),
        met: stall_report.as_ref().map(|st| st.others_loss() <= 0.10),
    });
    let disk_report = disk.as_ref().and_then(|d| d.disk.clone());
    goals.push(Goal {
        number: "7",
        what: "Disk after the messages: allocated bytes ÷ logical bytes".into(),
        measured: disk_report
            .as_ref()
            .map(|d| {
                format!(
                    "{} / {} = **{:.2}×** after {} messages",
                    bytes(d.disk_allocated_bytes as f64),
                    bytes(d.logical_bytes as f64),
                    d.disk_allocated_bytes as f64 / d.logical_bytes.max(1) as f64,
                    rate(d.events as f64)
                )
            })
            .unwrap_or_else(|| "not run".into()),
        robust: String::new(),
        target: "≤ 3× after 1,000,000".into(),
        met: disk_report.as_ref().map(|d| {
            d.events >= 1_000_000 && (d.disk_allocated_bytes as f64) <= 3.0 * d.logical_bytes as f64
        }),
    });

    let met = goals.iter().filter(|g| g.met == Some(true)).count();
    let missed = goals.iter().filter(|g| g.met == Some(false)).count();
    let _ = writeln!(md, "## Goals\n");
    let _ = writeln!(
        md,
        "{met} met, {missed} missed, {} not run. The cost model: B(G) = 1 / (1/V + 1/S + \
         (G−1)/W(G)) posts/s, with V, S and W(G) from the [baselines](#baselines).\n",
        goals.len() - met - missed
    );
    let _ = writeln!(
        md,
        "The verdict uses the wall-clock figures, as the goals are stated. The column \
         after it gives the same ratio per CPU-second — the server's CPU time for the \
         hub and the bare server, the measuring thread's own for V and S — which other \
         processes taking the server's core disturb much less: where the two agree, the \
         verdict does not depend on the noise.\n"
    );
    let _ = writeln!(
        md,
        "| # | goal | measured | target | | per CPU-second, or how far to trust it |\n| --- | --- | --- | --- | --- | --- |"
    );
    for goal in &goals {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            goal.number,
            goal.what,
            goal.measured,
            goal.target,
            yes_no(goal.met),
            goal.robust
        );
    }
    md.push('\n');

    // ---- missed goals (on the wall-clock or the per-CPU-second figures) ----
    let missed_goals: Vec<&Goal> = goals
        .iter()
        .filter(|g| g.met == Some(false) || cpu_missed.contains(&g.what))
        .collect();
    if !missed_goals.is_empty() {
        let _ = writeln!(
            md,
            "### What the missed goals cost, from this run's profiles\n\nEvery goal missed \
             on the wall-clock figures or on the per-CPU-second ones.\n"
        );
        let profile_g1 = profile_categories(&run.dir.join("profile-g1.data"));
        let profile_g10 = profile_categories(&run.dir.join("profile-g10.data"));
        let per_post = |name: &str| {
            run.load(name)
                .filter(|r| r.accepted_per_s > 0.0)
                .map(|r| r.server_cpu_cores * 1e6 / r.accepted_per_s)
        };
        let top = |cats: &Option<Vec<(String, f64)>>, us: Option<f64>, skip: &str| -> String {
            match (cats, us) {
                (Some(cats), Some(us)) => cats
                    .iter()
                    .filter(|(name, _)| !name.starts_with(skip))
                    .take(4)
                    .map(|(name, pct)| format!("{name} {}", time_us(us * pct / 100.0)))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "no profile".into(),
            }
        };
        let numbers: Vec<&str> = missed_goals.iter().map(|g| g.number).collect();
        if numbers.contains(&"1") {
            let us = per_post("profile-g1");
            let _ = writeln!(
                md,
                "- **1 (ingest).** In `profile-g1` the hub spends {} of CPU per post; \
                 verification is {} of it (1/V). To reach 70 % of V the rest must shrink \
                 to {} per post. Beyond verification the largest parts are: {}.",
                us.map(time_us).unwrap_or_else(|| "?".into()),
                time_us(if v > 0.0 { 1e6 / v } else { 0.0 }),
                time_us(if v > 0.0 {
                    1e6 / v * (1.0 / 0.7 - 1.0)
                } else {
                    0.0
                }),
                top(&profile_g1, us, "Ed25519"),
            );
        }
        if numbers.contains(&"2") {
            for g in FANOUT_G {
                let missed_here = missed_goals
                    .iter()
                    .any(|m| m.number == "2" && m.what.contains(&format!("G = {g}:")));
                let (true, Some(h), Some(w)) = (missed_here, hub.get(&g), bare.get(&g)) else {
                    continue;
                };
                if h.accepted_per_s <= 0.0 || v_cpu <= 0.0 || s_cpu <= 0.0 {
                    continue;
                }
                let w_cpu = w.delivered_per_cpu_s();
                let hub_us = h.server_cpu_cores * 1e6 / h.accepted_per_s;
                let model_us = 1e6 / v_cpu
                    + 1e6 / s_cpu
                    + if w_cpu > 0.0 {
                        (g as f64 - 1.0) * 1e6 / w_cpu
                    } else {
                        0.0
                    };
                let _ = writeln!(
                    md,
                    "- **2 (fan-out), G = {g}.** `{}` spent {} of server CPU per post; the \
                     cost model's parts per CPU-second add up to {} (1/V {} + 1/S {} + \
                     (G−1)/W(G) {}), so the hub's own overhead is {} per post ({:.0} % of \
                     the model's cost). At 75 % of the bound it could spend at most {} per \
                     post.",
                    h.label,
                    time_us(hub_us),
                    time_us(model_us),
                    time_us(1e6 / v_cpu),
                    time_us(1e6 / s_cpu),
                    time_us(model_us - 1e6 / v_cpu - 1e6 / s_cpu),
                    time_us(hub_us - model_us),
                    100.0 * (hub_us - model_us) / model_us,
                    time_us(model_us / 0.75),
                );
            }
            let us = per_post("profile-g10");
            let _ = writeln!(
                md,
                "  In `profile-g10` the hub spends {} of CPU per post at G = 10; the \
                 largest parts beyond verification: {}.",
                us.map(time_us).unwrap_or_else(|| "?".into()),
                top(&profile_g10, us, "Ed25519"),
            );
        }
        if numbers.contains(&"3") {
            let _ = writeln!(
                md,
                "- **3 (both cores).** The two-core figure is bounded by the CPU the machine \
                 had left: see the goal's last column."
            );
        }
        if numbers.iter().any(|n| n.starts_with('4')) {
            let max_run = hub.get(&10);
            for (pct, r) in [(50, &lat50), (80, &lat80)] {
                let Some(r) = r else { continue };
                let mut gaps = rate_gaps(r);
                if let Some(m) = max_run.filter(|m| m.accepted_per_s > 0.0) {
                    if r.accepted_per_s > 0.0 {
                        let here = r.server_cpu_cores * 1e6 / r.accepted_per_s;
                        let at_max = m.server_cpu_cores * 1e6 / m.accepted_per_s;
                        let _ = write!(
                            gaps,
                            " The server spent {} of CPU per post at this rate, against {} at \
                             its maximum (`{}`: {}/s, {:.2} cores): {:.2}× as much per post.",
                            time_us(here),
                            time_us(at_max),
                            m.label,
                            rate(m.accepted_per_s),
                            m.server_cpu_cores,
                            here / at_max,
                        );
                    }
                }
                let _ = writeln!(
                    md,
                    "- **4 (latency) at {pct} %.** Offered {}/s, accepted {}/s; delivery p50 \
                     {}, p90 {}, p99 {}, max {}; ack p99 {}. The server used {:.2} cores \
                     (its threads waited {:.2} s/s for a CPU) and the machine left {:.2} \
                     cores idle. {}",
                    rate(r.offered_per_s),
                    rate(r.accepted_per_s),
                    time_us(r.delivery.p50_us),
                    time_us(r.delivery.p90_us),
                    time_us(r.delivery.p99_us),
                    time_us(r.delivery.max_us),
                    time_us(r.ack.p99_us),
                    r.server_cpu_cores,
                    r.server_cpu_wait,
                    r.machine_idle_cores,
                    gaps,
                );
            }
            if let Some(b) = base.as_ref().filter(|b| b.flush_latency.count > 0) {
                let fl = &b.flush_latency;
                let worst = lat50
                    .as_ref()
                    .map(|r| r.delivery.p99_us)
                    .unwrap_or(0.0)
                    .max(lat80.as_ref().map(|r| r.delivery.p99_us).unwrap_or(0.0));
                let _ = writeln!(
                    md,
                    "  One sled flush (`Store::flush` after one record, in `peerhub-baseline`, \
                     {} flushes): p50 {}, p99 {}, p99.9 {}, max {}. The group commit holds a \
                     batch's acks and its fan-out until its flush returns, so the slowest \
                     flushes reach every post of their batch; the slowest flush seen is {:.0} \
                     % of the worse delivery p99 above.",
                    rate(fl.count as f64),
                    time_us(fl.p50_us),
                    time_us(fl.p99_us),
                    time_us(fl.p999_us),
                    time_us(fl.max_us),
                    if worst > 0.0 {
                        100.0 * fl.max_us / worst
                    } else {
                        0.0
                    },
                );
            }
        }
        if numbers.contains(&"5") {
            if let (Some(h), Some(b)) = (
                idle_hub.as_ref().and_then(|r| r.idle.clone()),
                idle_bare.as_ref().and_then(|r| r.idle.clone()),
            ) {
                let phases = h.rss_logged_in_kib > 0 && b.rss_logged_in_kib > 0;
                let text = if phases {
                    let (hl, bl) = (
                        h.logged_in_bytes_per_connection,
                        b.logged_in_bytes_per_connection,
                    );
                    let (hj, bj) = (h.bytes_per_connection - hl, b.bytes_per_connection - bl);
                    format!(
                        "Measured in two phases: logged in, before joining, the hub grew {} \
                         per connection and the bare server {} ({}); joining then added {} \
                         in the hub and {} in the bare server ({}). Of the {} per connection \
                         the hub holds beyond the bare server, {:.0} % comes with the \
                         connection and login and {:.0} % with the join. The `joined` reply \
                         averaged {} from the hub and {} from the bare server. At ≤ 1.5× \
                         the hub may grow {} per connection.",
                        bytes(hl),
                        bytes(bl),
                        ratio_text(hl, bl),
                        bytes(hj),
                        bytes(bj),
                        ratio_text(hj, bj),
                        bytes(h.bytes_per_connection - b.bytes_per_connection),
                        100.0 * (hl - bl) / (h.bytes_per_connection - b.bytes_per_connection),
                        100.0 * (hj - bj) / (h.bytes_per_connection - b.bytes_per_connection),
                        bytes(h.joined_reply_bytes),
                        bytes(b.joined_reply_bytes),
                        bytes(1.5 * b.bytes_per_connection),
                    )
                } else {
                    format!(
                        "The hub holds {} per idle joined connection more than the bare \
                         server (the phases were not measured apart in this run).",
                        bytes(h.bytes_per_connection - b.bytes_per_connection)
                    )
                };
                let _ = writeln!(md, "- **5 (memory).** {text}");
            }
        }
        if numbers.contains(&"6a") {
            if let Some(st) = &stall_report {
                let _ = writeln!(md, "- **6 (slow member).** {}", stall_breakdown(st));
                if let Some(w) = run
                    .load("whatif-bare-stall-sndbuf64k")
                    .and_then(|r| r.stall)
                {
                    let room = 1.25 * 1024.0 * 1024.0 - st.held_user_bytes();
                    let _ = writeln!(
                        md,
                        "  With this user-space figure the kernel's part must stay under {} \
                         to meet the goal; with SO_SNDBUF at 64 KiB the bare server's kernel \
                         send queue for a stalled member peaked at {} (see the [what-if \
                         runs](#what-if-runs)).",
                        bytes(room.max(0.0)),
                        bytes(w.max_server_send_queue as f64),
                    );
                }
            }
        }
        if numbers.contains(&"6b") {
            if let (Some(r), Some(st)) = (&stall, &stall_report) {
                let control = run.load("whatif-bare-stall-control").and_then(|c| {
                    c.stall
                        .map(|st| (c.server_cpu_cores, c.server_cpu_wait, st))
                });
                let _ = writeln!(
                    md,
                    "- **6b (the others during a stall).** `{}` lost {:.1} % of the others' \
                     delivered frames/s; over its window the server used {:.2} cores (its \
                     threads waited {:.2} s/s for a CPU), the generator {:.2} (waited {:.2}), \
                     the machine left {:.2} cores idle and accepted posts/s varied by {:.0} % \
                     (CV) from second to second.{}",
                    r.label,
                    100.0 * st.others_loss(),
                    r.server_cpu_cores,
                    r.server_cpu_wait,
                    r.generator_cpu_cores,
                    r.generator_cpu_wait,
                    r.machine_idle_cores,
                    100.0 * r.accepted_cv,
                    control
                        .map(|(cpu, wait, c)| format!(
                            " The bare server in the same slow-member run (`whatif-bare-stall-control`, \
                             {cpu:.2} cores, waited {wait:.2} s/s) {} {:.1} %.",
                            if c.others_loss() < 0.0 { "gained" } else { "lost" },
                            100.0 * c.others_loss().abs()
                        ))
                        .unwrap_or_default(),
                );
            }
        }
        if numbers.contains(&"7") {
            let _ = writeln!(md, "- **7 (disk).** See [Disk](#disk).");
        }
        md.push('\n');
    }

    // ---- baselines ----
    let _ = writeln!(md, "## Baselines\n");
    match &base {
        Some(b) => {
            let _ = writeln!(
                md,
                "Measured by `peerhub-baseline` on CPU {} with the server's own crates and \
                 build, on a real post ({} B body, {} B envelope, {} B stored record, {} B \
                 `post` frame, {} B `event` frame).\n",
                b.cpus,
                b.body_bytes,
                b.envelope_bytes,
                b.record_bytes,
                b.post_frame_bytes,
                b.event_frame_bytes
            );
            let _ = writeln!(
                md,
                "| | figure | per op | what |\n| --- | --- | --- | --- |"
            );
            let row = |md: &mut String, name: &str, x: f64, what: &str| {
                let _ = writeln!(
                    md,
                    "| {name} | {}/s | {} | {what} |",
                    rate(x),
                    time_us(if x > 0.0 { 1e6 / x } else { 0.0 })
                );
            };
            row(&mut md, "**V**", b.verify_per_s, "`SignedEnvelope::verify_with`: signing bytes + `verify_strict`, cached `VerifyingKey`");
            row(
                &mut md,
                "",
                b.verify_per_cpu_s,
                "V per CPU-second of the measuring thread",
            );
            row(
                &mut md,
                "",
                b.verify_uncached_per_s,
                "the same, decoding the key each time",
            );
            row(
                &mut md,
                "",
                b.sign_per_s,
                "signing (the generator pre-signs)",
            );
            row(
                &mut md,
                "**S**",
                b.store_insert_per_s,
                "`Store::put_event` of the real record, no flush",
            );
            row(
                &mut md,
                "",
                b.store_insert_per_cpu_s,
                "S per CPU-second of the measuring thread",
            );
            row(
                &mut md,
                "",
                b.store_post_writes_per_s,
                "the hub's write set for one post (counter + event + group state), no flush",
            );
            row(
                &mut md,
                "**F**",
                b.flush_per_s,
                "`Store::flush` after one record",
            );
            row(
                &mut md,
                "",
                b.flush64_per_s,
                "`Store::flush` after 64 records",
            );
            md.push('\n');
        }
        None => md.push_str("Baselines not run.\n\n"),
    }
    let _ = writeln!(
        md,
        "**W(G)**: `peerhub-bare` — the hub's transport (plain `TcpListener`, TCP_NODELAY, \
         SO_SNDBUF = `peerhub_server::transport::SEND_BUFFER_BYTES`, hyper HTTP/1.1 upgrade \
         as `peerhub_server::transport` does it, tokio-tungstenite with \
         `peerhub_server::transport::websocket_config()`, write buffer included), the same \
         outbox bounds and write batching, the hub's `event` frame serialised once and \
         shared, the hub's allocator (jemalloc) — and no verification, no store, no \
         limiter, no group task — driven by the same generator.\n"
    );
    let _ = writeln!(
        md,
        "| G | conns | W(G): delivered frames/s | per server CPU-second | posts/s | delivery p50 / p99 / p99.9 | server CPU | generator CPU | B(G) posts/s | B(G)·(G−1) frames/s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (g, r) in &bare {
        let b = model_posts_per_s(v, s, r.delivered_others_per_s, *g);
        let _ = writeln!(
            md,
            "| {g} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} |",
            r.connections,
            rate(r.delivered_others_per_s),
            rate(r.delivered_per_cpu_s()),
            rate(r.accepted_per_s),
            lat(&r.delivery),
            r.server_cpu_cores,
            r.generator_cpu_cores,
            rate(b),
            rate(b * (*g as f64 - 1.0)),
        );
    }
    md.push('\n');

    // ---- hub figures ----
    let _ = writeln!(md, "## The hub's figures\n");
    let _ = writeln!(
        md,
        "`peerhub` (release build) started by `peerhub-load` on a fresh data folder, its \
         per-key rate limits raised out of the way (`--messages-per-second`, \
         `--message-burst`, `--commands-per-second` 1000000: the limiter still runs on \
         every post). \"delivered\" counts `event` frames received by members other than \
         the sender; delivery latency is send → the last other member received it (G = 1: \
         send → the sender's own copy); ack latency is send → durable ack.\n"
    );
    let _ = writeln!(
        md,
        "| run | G | conns | mode | accepted posts/s | delivered frames/s | delivery p50 / p99 / p99.9 | ack p50 / p99 | server CPU (waited) | generator CPU | errors | closes |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut all: Vec<LoadReport> = hub.values().cloned().collect();
    all.extend(two_cores.clone());
    all.extend(lat50.clone());
    all.extend(lat80.clone());
    all.extend(stall.clone());
    all.extend(disk.clone());
    for r in &all {
        let mode = match r.mode.as_str() {
            "rate" => format!(
                "rate {}/s (sent late by p99 {})",
                rate(r.offered_per_s),
                time_us(r.send_lag.p99_us)
            ),
            "ack" => format!("ack, window {}", r.window),
            m => m.to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {:.2} ({:.2}) | {:.2} | {} | {} |",
            r.label,
            r.group_size,
            r.connections,
            mode,
            rate(r.accepted_per_s),
            rate(r.delivered_others_per_s),
            lat(&r.delivery),
            time_us(r.ack.p50_us),
            time_us(r.ack.p99_us),
            r.server_cpu_cores,
            r.server_cpu_wait,
            r.generator_cpu_cores,
            map_text(&r.errors),
            map_text(&r.closes),
        );
    }
    md.push('\n');
    for r in &all {
        for note in &r.notes {
            let _ = writeln!(md, "- `{}`: {note}", r.label);
        }
    }
    md.push('\n');

    // memory
    let _ = writeln!(md, "### Memory per idle connection\n");
    for r in [&idle_hub, &idle_bare].into_iter().flatten() {
        if let Some(i) = &r.idle {
            let _ = writeln!(
                md,
                "- `{}`: {} connections in groups of {} (from {}), logged in and joined in {:.1} s; RSS {}{} → {}: **{} per connection**{}.",
                r.label,
                rate(i.connections as f64),
                r.group_size,
                i.source_addresses.join(", "),
                i.connect_s,
                bytes(i.rss_before_kib as f64 * 1024.0),
                if i.rss_logged_in_kib > 0 {
                    format!(
                        " → {} logged in",
                        bytes(i.rss_logged_in_kib as f64 * 1024.0)
                    )
                } else {
                    String::new()
                },
                bytes(i.rss_after_kib as f64 * 1024.0),
                bytes(i.bytes_per_connection),
                if i.rss_logged_in_kib > 0 {
                    format!(
                        " ({} logged in, {} more joined)",
                        bytes(i.logged_in_bytes_per_connection),
                        bytes(i.bytes_per_connection - i.logged_in_bytes_per_connection)
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    md.push('\n');

    // stall
    if let (Some(r), Some(st)) = (&stall, &stall_report) {
        let _ = writeln!(md, "### A member that stops reading\n");
        let _ = writeln!(
            md,
            "`{}`: {} groups of {}, as fast as acked; one member of the first group (not a \
             sender) stops reading {:.0} s into the window for up to {:.0} s. {} Frames \
             fanned out to it from the stall until its group saw it offline (its group's \
             acks in between): {} × {} = {}. It read {} when it resumed (what the kernel had \
             buffered: the server's send queue peaked at {}, its own receive queue at {}). \
             The difference, {}, is what the server held in user space when it dropped the \
             member (its outbox bound is {}). Close code it read: {}. The server's RSS grew \
             {} over the stall (the store's cache grows with every write, so this is an \
             upper bound).\n",
            r.label,
            r.groups,
            r.group_size,
            st.stall_at_s,
            st.stall_for_s,
            drop_timing(st),
            rate(st.frames_queued_bound as f64),
            bytes(st.frame_bytes),
            bytes(st.frames_queued_bound as f64 * st.frame_bytes),
            bytes(st.drained_bytes as f64),
            bytes(st.max_server_send_queue as f64),
            bytes(st.max_client_recv_queue as f64),
            bytes(st.held_user_bytes()),
            bytes(st.outbox_bytes as f64),
            st.close_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none (its stream ended without a close frame)".into()),
            bytes(st.server_rss_growth_kib as f64 * 1024.0),
        );
    }

    // disk
    if let Some(d) = &disk_report {
        let _ = writeln!(md, "### Disk\n");
        let _ = writeln!(
            md,
            "After {} messages and a graceful stop: the data folder holds {} ({} allocated); \
             the events read back through the store API are {} logical bytes (keys + JSON \
             values as the store encodes them), of which {} are the signed envelopes \
             themselves. Allocated ÷ logical = {:.2}×; ÷ envelopes = {:.2}×.\n",
            rate(d.events as f64),
            bytes(d.disk_apparent_bytes as f64),
            bytes(d.disk_allocated_bytes as f64),
            bytes(d.logical_bytes as f64),
            bytes(d.envelope_bytes as f64),
            d.disk_allocated_bytes as f64 / d.logical_bytes.max(1) as f64,
            d.disk_allocated_bytes as f64 / d.envelope_bytes.max(1) as f64,
        );
    }

    // ---- what-if ----
    let whatif = [
        run.load("whatif-bare-stall-control"),
        run.load("whatif-bare-stall-sndbuf64k"),
        run.load("whatif-bare-g10-control"),
        run.load("whatif-bare-g10-sndbuf64k"),
    ];
    if whatif.iter().any(Option::is_some) {
        let _ = writeln!(md, "## What-if runs\n");
        let _ = writeln!(
            md,
            "Evidence for the next server change. Each changes only an option of the bare \
             server, which otherwise has the hub's transport, right after a control run \
             with the hub's settings; no goal uses them.\n"
        );
        let [stall_control, stall_64k, g10_control, g10_64k] = whatif;
        if let (Some(c), Some(w)) = (
            stall_control.as_ref().and_then(|r| r.stall.clone()),
            stall_64k.as_ref().and_then(|r| r.stall.clone()),
        ) {
            let closed = |st: &report::StallReport| {
                st.socket_closed_after_s
                    .map(|c| format!("{c:.1} s"))
                    .unwrap_or_else(|| "not within the stall".into())
            };
            let _ = writeln!(
                md,
                "- **Socket send buffer halved, a member that stops reading.** SO_SNDBUF \
                 64 KiB instead of {}: the server's kernel send queue for the stalled member \
                 peaked at {} against {} ({}); the server closed its socket {} after the \
                 stall began, against {}.",
                bytes(c.send_buffer_bytes as f64),
                bytes(w.max_server_send_queue as f64),
                bytes(c.max_server_send_queue as f64),
                signed_bytes(w.max_server_send_queue as f64 - c.max_server_send_queue as f64),
                closed(&w),
                closed(&c),
            );
        }
        if let (Some(c), Some(w)) = (&g10_control, &g10_64k) {
            let _ = writeln!(
                md,
                "- **Socket send buffer halved, fan-out.** The bare server at G = 10 with \
                 SO_SNDBUF 64 KiB: {} delivered frames/s against {} (**{}**; per server \
                 CPU-second {} against {}, **{}**), delivery p50 {} against {}, p99 {} \
                 against {}. Single runs of {:.0} s: the [noise](#noise) table shows how far \
                 repeats of one configuration differ.",
                rate(w.delivered_others_per_s),
                rate(c.delivered_others_per_s),
                ratio_text(w.delivered_others_per_s, c.delivered_others_per_s),
                rate(w.delivered_per_cpu_s()),
                rate(c.delivered_per_cpu_s()),
                ratio_text(w.delivered_per_cpu_s(), c.delivered_per_cpu_s()),
                time_us(w.delivery.p50_us),
                time_us(c.delivery.p50_us),
                time_us(w.delivery.p99_us),
                time_us(c.delivery.p99_us),
                w.duration_s,
            );
        }
        md.push('\n');
    }

    // ---- open-loop sweep ----
    if let Some(section) = peerhub_bench::sweep::render(&run.dir, &FANOUT_G) {
        let _ = writeln!(md, "## Open-loop rate sweep\n");
        md.push_str(&section);
        md.push('\n');
    }

    // ---- profiles ----
    let _ = writeln!(md, "## Where the hub's CPU goes\n");
    let _ = writeln!(
        md,
        "`perf record -g` of the server over the window of separate runs (`profile-*`, \
         same shape as the measured ones), grouped by what the code is for. Percent of the \
         server's samples; \"per post\" spreads the server's CPU time over the posts it \
         accepted in that run.\n"
    );
    for (name, label) in [("profile-g1", "G = 1"), ("profile-g10", "G = 10")] {
        let data = run.dir.join(format!("{name}.data"));
        let result = run.load(name);
        match profile_categories(&data) {
            Some(cats) => {
                let per_post_us = result
                    .as_ref()
                    .filter(|r| r.accepted_per_s > 0.0)
                    .map(|r| r.server_cpu_cores * 1e6 / r.accepted_per_s);
                let _ = writeln!(
                    md,
                    "**{label}** ({}; {} posts/s, server CPU {:.2}):\n",
                    name,
                    result
                        .as_ref()
                        .map(|r| rate(r.accepted_per_s))
                        .unwrap_or_default(),
                    result.as_ref().map(|r| r.server_cpu_cores).unwrap_or(0.0),
                );
                let _ = writeln!(md, "| part | share | per post |\n| --- | --- | --- |");
                for (cat, pct) in cats {
                    let _ = writeln!(
                        md,
                        "| {cat} | {pct:.1} % | {} |",
                        per_post_us
                            .map(|us| time_us(us * pct / 100.0))
                            .unwrap_or_else(|| "–".into())
                    );
                }
                md.push('\n');
            }
            None => {
                let _ = writeln!(md, "{label}: no profile in this run.\n");
            }
        }
    }

    // ---- criterion ----
    let _ = writeln!(md, "## Micro-benchmarks (criterion)\n");
    let benches = criterion_estimates(criterion);
    if benches.is_empty() {
        md.push_str("Not run.\n\n");
    } else {
        let _ = writeln!(
            md,
            "`cargo bench -p peerhub-bench --bench hot_path`, on CPU {} (short warm-up and \
             measurement times in this run). Time per iteration (mean), and per element \
             where the bench handles several.\n",
            run.meta("server_cpu")
        );
        let _ = writeln!(md, "| bench | time | per element |\n| --- | --- | --- |");
        for (name, ns, elements) in benches {
            let per = if elements > 1 {
                time_us(ns / elements as f64 / 1000.0)
            } else {
                "".into()
            };
            let _ = writeln!(md, "| `{name}` | {} | {per} |", time_us(ns / 1000.0));
        }
        md.push('\n');
    }

    // ---- noise ----
    let _ = writeln!(md, "## Noise\n");
    let _ = writeln!(
        md,
        "The machine has 2 cores and was shared with other work during the run. Each \
         throughput pair (bare, hub) ran {} time(s), interleaved, and the goals use the \
         best repeat of each (\"kept\"): the least disturbed. For every run: the 1-minute \
         load average when its window began, how many cores the whole machine left idle \
         during the window, the CPU each process used and how long its threads waited for \
         a CPU while runnable (seconds per second: time taken by other processes or by \
         its own other threads), and the coefficient of variation of accepted posts/s \
         across 1 s slices.\n",
        run.meta("repeat")
    );
    let _ = writeln!(
        md,
        "| run | accepted posts/s | delivered frames/s | load | machine idle (cores) | server CPU (waited) | generator CPU (waited) | CV |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut names: Vec<String> = Vec::new();
    for g in [1, 5, 10, 30] {
        names.push(format!("bare-g{g}"));
        names.push(format!("hub-g{g}"));
    }
    for name in [
        "hub-g1-2cores",
        "hub-g10-rate50",
        "hub-g10-rate80",
        "hub-stall",
        "profile-g1",
        "profile-g10",
        "hub-disk",
        "whatif-bare-stall-control",
        "whatif-bare-stall-sndbuf64k",
        "whatif-bare-g10-control",
        "whatif-bare-g10-sndbuf64k",
    ] {
        names.push(name.to_string());
    }
    for name in &names {
        let repeats = run.repeats(name);
        let best = repeats
            .iter()
            .map(|r| r.accepted_per_s)
            .fold(f64::MIN, f64::max);
        for r in &repeats {
            let mark = if repeats.len() > 1 && r.accepted_per_s == best {
                " (kept)"
            } else {
                ""
            };
            let _ = writeln!(
                md,
                "| {}{mark} | {} | {} | {:.1} | {:.2} | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.0} % |",
                r.label,
                rate(r.accepted_per_s),
                rate(r.delivered_others_per_s),
                r.load_average,
                r.machine_idle_cores,
                r.server_cpu_cores,
                r.server_cpu_wait,
                r.generator_cpu_cores,
                r.generator_cpu_wait,
                100.0 * r.accepted_cv
            );
        }
    }
    md.push('\n');

    // ---- reproduce ----
    let _ = writeln!(md, "## How to reproduce\n");
    let _ = writeln!(
        md,
        "```sh\nscripts/perf.sh            # builds --release, runs everything, writes this page\n\
         PERF_QUICK=1 scripts/perf.sh   # shorter windows and fewer messages, for trying it out\n```\n\n\
         Results (JSON per run, perf profiles, logs) stay in `{}`. Each figure comes from \
         one binary of the `peerhub-bench` crate (`benches/`):\n\n\
         - `peerhub-baseline` — V, S, F (`taskset -c 0 target/release/peerhub-baseline --dir DIR --out baseline.json`).\n\
         - `peerhub-load --target bare|hub` — starts `peerhub-bare` or `target/release/peerhub` \
         (`--listen 127.0.0.1:0 --data <fresh folder>`, pinned with `--server-cpus`), creates \
         the groups as the first admin (drop-in, no waiting room), opens the members' \
         connections, pre-signs every post, then sends `--mode ack` (at most `--window` \
         unacknowledged posts per sender) or `--mode rate`, and writes a JSON result. \
         `--mode idle` measures memory, `--stall-at` the slow member, `--disk` the data \
         folder, `--profile` records `perf`, `--syscalls` counts the server's system \
         calls. `peerhub-load --help` lists every option.\n\
         - `scripts/per-post.sh` — the server's CPU, context switches and system calls \
         per post, closed loop and at a fixed offered rate (`peerhub-report --per-post`), \
         for comparing server changes on a busy machine.\n\
         - `cargo bench -p peerhub-bench --bench hot_path` — the criterion benches.\n\
         - `peerhub-report --run DIR` — this page (it keeps the hand-written section \
         \"Per-post overhead: changes measured\"); `--saturation G` gives the sweep's \
         saturation for perf.sh.\n\n\
         The exact command of every run is in `{}/commands.txt`.\n",
        run.dir.display(),
        run.dir.display()
    );
    md
}

/// `a` against `b` as "N.NN×", or "–".
fn ratio_text(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

/// How evenly a fixed-rate run was acknowledged: the 100 ms slices of its window
/// that acknowledged less than half the offered rate.
fn rate_gaps(r: &LoadReport) -> String {
    let from = (r.warmup_s * 1000.0).round() as u64;
    let to = from + (r.duration_s * 1000.0).round() as u64;
    let expected = r.offered_per_s / 10.0;
    let window: Vec<&report::Slice> = r
        .timeline
        .iter()
        .filter(|s| s.t_ms >= from && s.t_ms < to)
        .collect();
    if window.is_empty() || expected <= 0.0 {
        return String::new();
    }
    let (mut slow, mut run, mut longest) = (0, 0, 0);
    for slice in &window {
        if (slice.accepted as f64) < 0.5 * expected {
            slow += 1;
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    if slow == 0 {
        format!(
            "Every one of the window's {} 100 ms slices acknowledged at least half the \
             offered rate.",
            window.len()
        )
    } else {
        format!(
            "{slow} of the window's {} 100 ms slices acknowledged less than half the offered \
             rate (the longest run of them: {} ms).",
            window.len(),
            longest * 100
        )
    }
}

/// Where the bytes held for a stalled member were, from the stall run's figures.
fn stall_breakdown(st: &report::StallReport) -> String {
    let kernel = st.max_server_send_queue as f64;
    let sndbuf = if st.send_buffer_bytes > 0 {
        format!(
            " (SO_SNDBUF is set to {}, which Linux doubles: the peak is {:.2}× the value set)",
            bytes(st.send_buffer_bytes as f64),
            kernel / st.send_buffer_bytes as f64
        )
    } else {
        String::new()
    };
    let beyond = st.held_beyond_outbox();
    let user = if beyond > 0.0 {
        format!(
            "the outbox (bound {}) and, {} beyond it, the batch being written and the \
             WebSocket write buffer (`write_buffer_size` {})",
            bytes(st.outbox_bytes as f64),
            bytes(beyond),
            bytes(st.write_buffer_bytes as f64)
        )
    } else {
        format!(
            "{} under the outbox bound of {}, so nothing measurable beyond the outbox (the \
             batch being written, the WebSocket write buffer of up to {})",
            bytes(-beyond),
            bytes(st.outbox_bytes as f64),
            bytes(st.write_buffer_bytes as f64)
        )
    };
    let over = st.held_bytes() - 1.25 * 1024.0 * 1024.0;
    format!(
        "Held for the silent member: {} in user space — {} — plus a kernel send queue \
         that peaked at {}{}: {} in all, {} {} the goal's 1.25 MiB. {} Close code it read \
         on resuming: {}.",
        bytes(st.held_user_bytes()),
        user,
        bytes(kernel),
        sndbuf,
        bytes(st.held_bytes()),
        bytes(over.abs()),
        if over > 0.0 { "over" } else { "under" },
        drop_timing(st),
        st.close_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none (its stream ended without a close frame)".into()),
    )
}

/// When the stalled member was dropped, as its group and its socket showed it.
fn drop_timing(st: &report::StallReport) -> String {
    let offline = st
        .dropped_after_s
        .map(|d| format!("Its group mates saw it go offline {d:.1} s after it stopped reading"))
        .unwrap_or_else(|| {
            format!(
                "Its group mates did not see it go offline within the {:.0} s stall",
                st.stall_for_s
            )
        });
    let closed = match (st.socket_closed_after_s, st.dropped_after_s) {
        (Some(c), Some(d)) => format!(
            "the server closed its socket {c:.1} s after it stopped ({:.1} s after the group \
             saw it offline)",
            c - d
        ),
        (Some(c), None) => format!("the server closed its socket {c:.1} s after it stopped"),
        (None, _) => "the server's end of its socket stayed open".into(),
    };
    format!("{offline}; {closed}.")
}

/// Bytes with a sign: "+12.0 KiB", "−3.0 KiB".
fn signed_bytes(b: f64) -> String {
    if b < 0.0 {
        format!("−{}", bytes(-b))
    } else {
        format!("+{}", bytes(b))
    }
}

fn map_text(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "–".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Criterion's mean estimate per bench: (group/name, ns, elements per iteration).
fn criterion_estimates(dir: &Path) -> Vec<(String, f64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut depth_guard = 0;
    while let Some(path) = stack.pop() {
        depth_guard += 1;
        if depth_guard > 10_000 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    if let Some(found) = read_estimate(&p) {
                        out.push(found);
                    }
                } else if p.file_name().is_some_and(|n| n != "base" && n != "report") {
                    stack.push(p);
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn read_estimate(new_dir: &Path) -> Option<(String, f64, u64)> {
    let estimates: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(new_dir.join("estimates.json")).ok()?)
            .ok()?;
    let bench: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(new_dir.join("benchmark.json")).ok()?)
            .ok()?;
    let ns = estimates["mean"]["point_estimate"].as_f64()?;
    let name = bench["full_id"].as_str()?.to_string();
    let elements = bench["throughput"]["Elements"].as_u64().unwrap_or(1);
    Some((name, ns, elements))
}

/// What share of a profile's samples each part of the hub takes.
fn profile_categories(data: &Path) -> Option<Vec<(String, f64)>> {
    if !data.exists() {
        return None;
    }
    let flat = perf_report(data, false)?;
    let children = perf_report(data, true).unwrap_or_default();
    let user_parts: [(&str, &[&str]); 9] = [
        (
            "Ed25519 verification (curve25519, SHA-512)",
            &["curve25519", "sha2::sha512", "ed25519", "sha512"],
        ),
        (
            "store (sled)",
            &["sled::", "crc32fast", "crossbeam_epoch", "crossbeam_utils"],
        ),
        (
            "memory allocator (jemalloc, malloc/free)",
            &[
                "_rjem_",
                "jemalloc",
                "__rust_alloc",
                "__rust_dealloc",
                "__rust_realloc",
                "__rdl_",
                "malloc",
                "free",
                "_int_",
                "unlink_chunk",
                "realloc",
                "calloc",
                "tcache",
            ],
        ),
        (
            "JSON and base64 (serde_json, base64)",
            &["serde_json", "serde::", "base64::"],
        ),
        (
            "WebSocket and HTTP (tungstenite, hyper)",
            &["tungstenite", "hyper", "httparse"],
        ),
        ("async runtime (tokio)", &["tokio::", "tokio_util"]),
        (
            "copies and compares (memcpy, memcmp)",
            &["memmove", "memcpy", "memcmp", "memset", "memchr"],
        ),
        ("rate limiter (governor)", &["governor"]),
        ("the hub's own code", &["peerhub_"]),
    ];
    let mut shares: BTreeMap<String, f64> = BTreeMap::new();
    let mut kernel = 0.0;
    let mut other = 0.0;
    for (pct, symbol) in &flat {
        if symbol.starts_with("[k]") {
            kernel += pct;
            continue;
        }
        match user_parts
            .iter()
            .find(|(_, needles)| needles.iter().any(|n| symbol.contains(n)))
        {
            Some((name, _)) => *shares.entry((*name).to_string()).or_default() += pct,
            None => other += pct,
        }
    }
    // The kernel's share, split by the system calls it ran under.
    let syscalls: [(&str, &[&str]); 5] = [
        (
            "kernel: socket writes",
            &[
                "__x64_sys_sendto",
                "__x64_sys_write",
                "__x64_sys_writev",
                "__x64_sys_sendmsg",
            ],
        ),
        (
            "kernel: socket reads",
            &[
                "__x64_sys_recvfrom",
                "__x64_sys_read",
                "__x64_sys_readv",
                "__x64_sys_recvmsg",
            ],
        ),
        (
            "kernel: thread wake-ups and waits (futex)",
            &["__x64_sys_futex"],
        ),
        (
            "kernel: disk (pwrite, fsync, sync_file_range)",
            &[
                "__x64_sys_pwrite64",
                "__x64_sys_fsync",
                "__x64_sys_fdatasync",
                "__x64_sys_sync_file_range",
            ],
        ),
        (
            "kernel: epoll",
            &["__x64_sys_epoll_wait", "__x64_sys_epoll_ctl"],
        ),
    ];
    let mut kernel_named = 0.0;
    for (name, needles) in syscalls {
        let pct: f64 = children
            .iter()
            .filter(|(_, sym)| needles.iter().any(|n| sym.ends_with(n)))
            .map(|(p, _)| *p)
            .sum();
        if pct > 0.0 {
            // Children percentages include user time below the call only in rare
            // cases; cap at what the kernel took in all.
            let pct = pct.min(kernel - kernel_named);
            kernel_named += pct;
            shares.insert(name.to_string(), pct);
        }
    }
    if kernel - kernel_named > 0.05 {
        shares.insert(
            "kernel: other (scheduling, interrupts, page faults)".into(),
            kernel - kernel_named,
        );
    }
    shares.insert("other".into(), other);
    let mut out: Vec<(String, f64)> = shares.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(out)
}

/// `perf report` as (percent, symbol) lines: self time, or with `children`.
fn perf_report(data: &Path, children: bool) -> Option<Vec<(f64, String)>> {
    let output = std::process::Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(data)
        .arg(if children {
            "--children"
        } else {
            "--no-children"
        })
        .args([
            "--sort",
            "symbol",
            "--stdio",
            "-g",
            "none",
            "--percent-limit",
            "0.01",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        let Ok(pct) = first.trim_end_matches('%').parse::<f64>() else {
            continue;
        };
        // With --children the second column is the self percentage.
        if children {
            fields.next();
        }
        let rest: Vec<&str> = fields.collect();
        let symbol = rest.join(" ");
        let symbol = symbol
            .trim_end_matches(" - -")
            .trim_end_matches('-')
            .trim()
            .to_string();
        out.push((pct, symbol));
    }
    Some(out)
}
