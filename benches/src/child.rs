//! A server binary (`peerhub` or `peerhub-bare`) as a child process.
//!
//! Started as `[taskset -c CPUS] BIN --listen 127.0.0.1:0 [--data DIR]`, like the
//! integration tests' `ProcessServer`: it prints `... listening on URL`, the
//! first-admin link (peerhub) and `ready` on stdout. `taskset` execs the server,
//! so the child's pid is the server's and `/proc/<pid>` describes it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a sibling binary of the running executable is (`target/release/NAME`).
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A running server.
#[derive(Debug)]
pub struct ServerChild {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The first-admin invite token, if it printed one.
    pub admin_token: Option<String>,
    /// What it printed before `ready`.
    pub stdout: Vec<String>,
}

impl ServerChild {
    /// Starts `bin` with `args` (after `--listen 127.0.0.1:0`) and extra
    /// environment `env` (`KEY=VALUE`), pinned to `cpus` when given, and waits for
    /// `ready`.
    pub async fn start(
        bin: &Path,
        cpus: Option<&str>,
        args: &[String],
        env: &[String],
    ) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release`",
                bin.display()
            );
        }
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().filter_map(|kv| kv.split_once('=')))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the child has a pid")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let reading = async {
            while let Some(line) = lines.next_line().await? {
                if line == "ready" {
                    return Ok::<bool, std::io::Error>(true);
                }
                seen.push(line);
            }
            Ok(false)
        };
        match tokio::time::timeout(READY_TIMEOUT, reading).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("{} exited before ready; printed {seen:?}", bin.display()),
            Ok(Err(e)) => bail!("reading {} stdout: {e}", bin.display()),
            Err(_) => bail!("{} not ready within {READY_TIMEOUT:?}", bin.display()),
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = seen
            .iter()
            .find_map(|l| l.split_once(" listening on ").map(|(_, url)| url))
            .context("no `listening on` line")?;
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("address in {url:?}"))?;
        let admin_token = seen
            .iter()
            .filter(|l| l.starts_with("first admin"))
            .find_map(|l| l.split_once("#invite=").map(|(_, t)| t))
            .map(|t| t.split('&').next().unwrap_or(t).to_string());
        Ok(Self {
            child,
            pid,
            addr,
            admin_token,
            stdout: seen,
        })
    }

    /// Asks the server to stop (SIGTERM: stop accepting, tell clients, flush) and
    /// waits; kills it if it takes longer than [`STOP_TIMEOUT`]. Returns whether it
    /// stopped gracefully.
    pub async fn stop(mut self) -> anyhow::Result<bool> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status.success()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                self.child.kill().await?;
                Ok(false)
            }
        }
    }
}
