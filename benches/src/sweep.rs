//! The open-loop rate sweep: fixed offered rates in steps past saturation, per
//! group size, and the per-post overhead table.
//!
//! `scripts/perf.sh` writes one result per step, `sweep-g<G>-<rate>.json`, then
//! asks [`saturation`] for the highest rate that passed and runs at 50 % and 80 % of
//! it (`sweep-g<G>-at50.json`, `sweep-g<G>-at80.json`). [`render`] turns them into
//! the report's section. A step passes when at least 99 % of the offered
//! deliveries arrived, the delivery p99 is at most 250 ms, and nothing failed.

use std::fmt::Write as _;
use std::path::Path;

use crate::report::{self, LoadReport};

/// Least share of offered deliveries that must arrive for a step to pass.
pub const DELIVERED_MIN: f64 = 0.99;
/// Largest delivery p99 for a step to pass, µs.
pub const P99_MAX_US: f64 = 250_000.0;

/// Deliveries a step offered per second: each post goes to the G − 1 others (at
/// G = 1, back to its sender).
fn offered_deliveries(r: &LoadReport) -> f64 {
    r.offered_per_s * (r.group_size.max(2) - 1) as f64
}

/// Share of the offered deliveries that arrived.
pub fn delivered_share(r: &LoadReport) -> f64 {
    let offered = offered_deliveries(r);
    let delivered = if r.group_size == 1 {
        r.delivered_total_per_s
    } else {
        r.delivered_others_per_s
    };
    if offered > 0.0 {
        delivered / offered
    } else {
        0.0
    }
}

/// Whether a step passed (see the module doc).
pub fn passed(r: &LoadReport) -> bool {
    delivered_share(r) >= DELIVERED_MIN
        && r.delivery.p99_us <= P99_MAX_US
        && r.errors.is_empty()
        && r.closes.is_empty()
}

/// Every step of group size `g` in `dir`, by offered rate.
pub fn steps(dir: &Path, g: usize) -> Vec<LoadReport> {
    let prefix = format!("sweep-g{g}-");
    let mut found: Vec<LoadReport> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rate = name.strip_prefix(&prefix)?.strip_suffix(".json")?;
            rate.parse::<u64>().ok()?;
            report::read::<LoadReport>(&e.path()).ok()
        })
        .collect();
    found.sort_by(|a, b| a.offered_per_s.total_cmp(&b.offered_per_s));
    found
}

/// The highest passing step's offered rate, posts/s (`None`: no step passed).
pub fn saturation(dir: &Path, g: usize) -> Option<LoadReport> {
    steps(dir, g).into_iter().rev().find(passed)
}

fn num(x: f64) -> String {
    report::thousands(x)
}

fn ms(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Server CPU per accepted post over the window, µs.
fn cpu_per_post(r: &LoadReport) -> f64 {
    let counted = r.cpu_us_per_post();
    if counted > 0.0 {
        counted
    } else if r.accepted_per_s > 0.0 {
        r.server_cpu_cores * 1e6 / r.accepted_per_s
    } else {
        0.0
    }
}

/// The report's section: a summary per G, then every step.
pub fn render(dir: &Path, sizes: &[usize]) -> Option<String> {
    let mut md = String::new();
    let mut any = false;
    let mut summary = String::new();
    let mut detail = String::new();
    let _ = writeln!(
        summary,
        "| G | conns | saturation: posts/s | deliveries/s | per server CPU-second | CPU per post at saturation | p99 at 50 % / 80 % of saturation | CPU per post at 50 % ÷ at saturation |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for &g in sizes {
        let steps = steps(dir, g);
        if steps.is_empty() {
            continue;
        }
        any = true;
        let at50 = report::read::<LoadReport>(&dir.join(format!("sweep-g{g}-at50.json"))).ok();
        let at80 = report::read::<LoadReport>(&dir.join(format!("sweep-g{g}-at80.json"))).ok();
        let sat = steps.iter().rev().find(|r| passed(r));
        let p99 = |r: &Option<LoadReport>| {
            r.as_ref().map_or("not run".to_string(), |r| {
                let flag = if passed(r) { "" } else { " (failed)" };
                format!("{}{flag}", ms(r.delivery.p99_us))
            })
        };
        match sat {
            Some(s) => {
                let flat = at50
                    .as_ref()
                    .map(|h| cpu_per_post(h) / cpu_per_post(s).max(f64::MIN_POSITIVE))
                    .map_or("not run".into(), |x| format!("{x:.2}×"));
                let _ = writeln!(
                    summary,
                    "| {g} | {} | {} | {} | {} | {:.0} µs | {} / {} | {flat} |",
                    s.connections,
                    num(s.offered_per_s),
                    num(s.delivered_others_per_s),
                    num(s.delivered_per_cpu_s()),
                    cpu_per_post(s),
                    p99(&at50),
                    p99(&at80),
                );
            }
            None => {
                let _ = writeln!(
                    summary,
                    "| {g} | {} | no step passed | | | | | |",
                    steps[0].connections
                );
            }
        }
        let _ = writeln!(
            detail,
            "\n**G = {g}** ({} connections, {} senders):\n\n\
             | offered posts/s | accepted posts/s | delivered | delivery p50 / p99 | ack p99 | server CPU (waited) | CPU per post | context switches per post | deliveries per CPU-second | errors, closes | passed |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            steps[0].connections, steps[0].senders
        );
        let extra = [("50 % of saturation", &at50), ("80 % of saturation", &at80)];
        let rows = steps.iter().map(|r| (String::new(), r)).chain(
            extra
                .iter()
                .filter_map(|(what, r)| r.as_ref().map(|r| (format!(" ({what})"), r))),
        );
        for (what, r) in rows {
            let mut faults = String::new();
            for (code, n) in r.errors.iter().chain(r.closes.iter()) {
                let _ = write!(faults, "{code}: {n} ");
            }
            let _ = writeln!(
                detail,
                "| {}{what} | {} | {:.1} % | {} / {} | {} | {:.2} ({:.2}) | {:.0} µs | {:.2} | {} | {} | {} |",
                num(r.offered_per_s),
                num(r.accepted_per_s),
                delivered_share(r) * 100.0,
                ms(r.delivery.p50_us),
                ms(r.delivery.p99_us),
                ms(r.ack.p99_us),
                r.server_cpu_cores,
                r.server_cpu_wait,
                cpu_per_post(r),
                r.switches_per_post(),
                num(r.delivered_per_cpu_s()),
                if faults.is_empty() { "–".into() } else { faults.trim().to_string() },
                if passed(r) { "yes" } else { "**no**" },
            );
        }
    }
    if !any {
        return None;
    }
    let _ = writeln!(
        md,
        "Open loop: every sender posts at a fixed pace whatever the server answers, \
         so a server that falls behind builds a queue instead of slowing the senders. \
         Each step is a fresh server and a fresh set of connections. A step passes \
         when ≥ {:.0} % of the offered deliveries arrived, delivery p99 ≤ {:.0} ms, and \
         there were no errors or closes; saturation is the highest passing step. The \
         50 % and 80 % runs are made after the sweep, at those fractions of it. \"Per \
         server CPU-second\" divides by the server's CPU time, which neighbours on a \
         shared machine disturb less than they do wall-clock rates.\n",
        DELIVERED_MIN * 100.0,
        P99_MAX_US / 1000.0
    );
    md.push_str(&summary);
    md.push_str(&detail);
    Some(md)
}

/// A table of per-post counts, one row per result in `dir` (the
/// `scripts/per-post.sh` runs), in name order.
pub fn per_post_table(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut md = String::from(
        "| run | G | mode | accepted posts/s | server CPU | CPU µs per post | context switches per post (vol + invol) | syscalls per post | futex | epoll | socket writes | socket reads | disk (pwrite, fsync, sync_file_range) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for path in names {
        let Ok(r) = report::read::<LoadReport>(&path) else {
            continue;
        };
        if r.counted_posts == 0 {
            continue;
        }
        let p = |names: &[&str]| names.iter().map(|n| r.syscalls_per_post(n)).sum::<f64>();
        let c = r.server_ctx_switches;
        let posts = r.counted_posts as f64;
        let mode = if r.mode == "rate" {
            format!("rate {}/s", num(r.offered_per_s))
        } else {
            format!("{} (window {})", r.mode, r.window)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {mode} | {} | {:.2} | {:.1} | {:.2} ({:.2} + {:.2}) | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} |",
            r.label,
            r.group_size,
            num(r.accepted_per_s),
            r.server_cpu_cores,
            r.cpu_us_per_post(),
            r.switches_per_post(),
            c.voluntary as f64 / posts,
            c.involuntary as f64 / posts,
            p(&["total"]),
            p(&["futex"]),
            p(&["epoll_wait", "epoll_pwait"]),
            p(&["write", "writev", "sendto", "sendmsg"]),
            p(&["read", "recvfrom"]),
            p(&["pwrite64", "fsync", "fdatasync", "sync_file_range"]),
        );
    }
    md
}
