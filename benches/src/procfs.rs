//! What `/proc` tells about a process and its sockets (Linux only).

use std::path::Path;

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Peak resident set size of `pid`, in KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// The CPUs this process may run on (`Cpus_allowed_list`, e.g. `1` or `0-1`).
pub fn cpus_allowed(pid: Option<u32>) -> String {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".into(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default()
}

/// Clock ticks per second for `/proc/*/stat` times (`getconf CLK_TCK`; 100 on
/// every Linux we run on if that cannot be asked).
pub fn clock_ticks_per_s() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// User + system CPU time of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime(14) stime(15), so index 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Time the threads of a process spent runnable but waiting for a CPU, in ns
/// (Σ over `/proc/<pid>/task/*/schedstat`, second field). On a shared machine this
/// is the time other processes took from it.
pub fn run_delay_ns(pid: Option<u32>) -> Option<u64> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".into(),
    };
    let mut total = 0;
    for entry in std::fs::read_dir(dir).ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        total += text
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Voluntary and involuntary context switches of a process, summed over its
/// threads (`/proc/<pid>/task/*/status`). Threads that ended meanwhile are not
/// counted, so take both ends of a window while the same threads live.
pub fn ctx_switches(pid: u32) -> Option<(u64, u64)> {
    let mut voluntary = 0;
    let mut involuntary = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        for line in text.lines() {
            let number = |rest: &str| rest.trim().parse::<u64>().unwrap_or(0);
            if let Some(rest) = line.strip_prefix("voluntary_ctxt_switches:") {
                voluntary += number(rest);
            } else if let Some(rest) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                involuntary += number(rest);
            }
        }
    }
    Some((voluntary, involuntary))
}

/// Time the calling thread has spent on a CPU, in ns (`/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Jiffies the whole machine spent idle (idle + iowait, all CPUs), from
/// `/proc/stat`.
pub fn machine_idle_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    Some(fields.get(3)? + fields.get(4)?)
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|f| f.parse().ok()))
        .unwrap_or(0.0)
}

/// One IPv4 TCP socket's queues as `/proc/net/tcp` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpQueues {
    /// Bytes in the send queue (written by the process, not yet acknowledged).
    pub tx: u64,
    /// Bytes in the receive queue (arrived, not yet read by the process).
    pub rx: u64,
    /// The socket state (1 established, 4 FIN_WAIT1, 8 CLOSE_WAIT, ...).
    pub state: u8,
}

/// The queues of the socket whose local port is `local` and remote port `remote`
/// (ports are enough on loopback within one run).
pub fn tcp_queues(local: u16, remote: u16) -> Option<TcpQueues> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{local:04X}");
    let remote = format!(":{remote:04X}");
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(l), Some(r), Some(st), Some(queues)) =
            (fields.get(1), fields.get(2), fields.get(3), fields.get(4))
        else {
            continue;
        };
        if l.ends_with(&local) && r.ends_with(&remote) {
            let (tx, rx) = queues.split_once(':')?;
            return Some(TcpQueues {
                tx: u64::from_str_radix(tx, 16).ok()?,
                rx: u64::from_str_radix(rx, 16).ok()?,
                state: u8::from_str_radix(st, 16).ok()?,
            });
        }
    }
    None
}

/// Bytes a folder takes: (apparent: file lengths; allocated: blocks on disk).
pub fn dir_size(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                apparent += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    Ok((apparent, allocated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(hwm_kib(pid).unwrap() >= rss_kib(pid).unwrap() / 2);
        assert!(cpu_ticks(None).is_some());
        assert!(run_delay_ns(None).is_some());
        assert!(thread_cpu_ns().is_some());
        assert!(!cpus_allowed(None).is_empty());
    }
}
