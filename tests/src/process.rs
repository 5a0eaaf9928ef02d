//! The real `peerhub` binary as a child process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Where the `peerhub` binary is: `$TEST_PEERHUB_BIN` (not `PEERHUB_*`: the server refuses unknown variables of its own prefix), or beside the test executable's
/// folder (`target/<profile>/peerhub`). `cargo test --workspace` builds it because
/// the server crate has integration tests of its own.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TEST_PEERHUB_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(format!("peerhub{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p peerhub-server` (the README test command does)",
        path.display()
    );
    path
}

/// A running `peerhub` process.
#[derive(Debug)]
pub struct ProcessServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Lines it printed on stdout up to `ready`.
    pub stdout: Vec<String>,
    /// Links it printed, by label (`first admin (single use, 24 h)`, ...).
    pub links: HashMap<String, String>,
    /// What it wrote on stderr (its logs), when started with [`Self::start_logging`].
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The task copying stderr into `logs`, until the pipe's end of file.
    log_reader: Option<tokio::task::JoinHandle<()>>,
}

impl ProcessServer {
    /// Starts `peerhub --listen 127.0.0.1:0 --data DIR ARGS...` and waits for `ready`.
    pub async fn start(data: &Path, args: &[&str]) -> Self {
        Self::spawn(data, args, "warn", false, None, &[]).await
    }

    /// As [`Self::start`], with extra environment variables (test hooks such as
    /// `TEST_PEERHUB_COMPACT_CRASH_AT`).
    pub async fn start_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(data, args, "warn", false, None, env).await
    }

    /// As [`Self::start_logging`], the binary run by `sh -c 'umask UMASK; exec ...'`
    /// (what an operator's shell or a service manager does) and extra environment.
    pub async fn start_under_umask(
        data: &Path,
        args: &[&str],
        umask: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(data, args, "warn", true, Some(umask), env).await
    }

    /// As [`Self::start`], logging at `rust_log` into [`Self::logs`].
    pub async fn start_logging(data: &Path, args: &[&str], rust_log: &str) -> Self {
        Self::spawn(data, args, rust_log, true, None, &[]).await
    }

    /// As [`Self::start_logging`], with extra environment variables.
    pub async fn start_logging_env(
        data: &Path,
        args: &[&str],
        rust_log: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(data, args, rust_log, true, None, env).await
    }

    /// As [`Self::start_logging`], the binary run under `wrapper` (a program and
    /// its arguments, such as libfiu's `fiu-run -x`, which `exec`s the binary so
    /// [`Self::pid`] is the hub's own).
    pub async fn start_wrapped(
        data: &Path,
        args: &[&str],
        rust_log: &str,
        wrapper: &[&str],
    ) -> Self {
        Self::spawn_with(data, args, rust_log, true, None, &[], wrapper).await
    }

    async fn spawn(
        data: &Path,
        args: &[&str],
        rust_log: &str,
        capture: bool,
        umask: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn_with(data, args, rust_log, capture, umask, env, &[]).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn spawn_with(
        data: &Path,
        args: &[&str],
        rust_log: &str,
        capture: bool,
        umask: Option<&str>,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Self {
        let mut command = match (umask, wrapper) {
            (None, [program, wrapper_args @ ..]) => {
                let mut wrapped = Command::new(program);
                wrapped.args(wrapper_args).arg(binary());
                wrapped
            }
            (None, []) => Command::new(binary()),
            (Some(umask), _) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
                    .arg(binary());
                sh
            }
        };
        let mut child = command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data)
            .args(crate::server::GENEROUS_LIMIT_FLAGS)
            .args(args)
            .env("RUST_LOG", rust_log)
            // The test machine's free disk space is not what a test checks: no
            // low-space watermark unless a test sets one (`env` comes after).
            .env("PEERHUB_STORE_MIN_FREE_MB", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if capture {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("spawn peerhub");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let log_reader = child.stderr.take().map(|stderr| {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().expect("log lines").push(line);
                }
            })
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let reading = async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if line == "ready" {
                    return;
                }
                seen.push(line);
            }
            panic!("peerhub exited before ready; printed {seen:?}");
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), reading)
            .await
            .expect("peerhub ready in time");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = seen
            .iter()
            .find_map(|l| l.strip_prefix("peerhub listening on "))
            .expect("listening line");
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .expect("address in the listening line");
        let links = seen
            .iter()
            .filter_map(|l| l.split_once(": http"))
            .map(|(label, rest)| (label.to_string(), format!("http{rest}")))
            .collect();
        Self {
            child,
            addr,
            stdout: seen,
            links,
            logs,
            log_reader,
        }
    }

    /// The token in a printed link's `#invite=` part.
    pub fn invite_token(&self, label: &str) -> Option<String> {
        let link = self.links.get(label)?;
        let fragment = link.split_once('#')?.1;
        fragment
            .split('&')
            .find_map(|part| part.strip_prefix("invite="))
            .map(str::to_string)
    }

    /// A new admin, logged in, who redeemed the printed first-admin link.
    pub async fn admin(&self) -> crate::Client {
        let token = self
            .invite_token("first admin (single use, 24 h)")
            .expect("the first-admin link is printed while no admin exists");
        self.redeemed(&token).await.1
    }

    /// A new identity, logged in, that redeemed `token`.
    pub async fn redeemed(&self, token: &str) -> (crate::Identity, crate::Client) {
        let me = crate::Identity::generate();
        let mut client = crate::Client::connect(self.addr).await;
        client.login(&me).await;
        let reply = client.redeem(token).await;
        assert!(
            matches!(reply, peerhub_protocol::ServerFrame::Redeemed { .. }),
            "{reply:?}"
        );
        (me, client)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit and, when its logs are captured, for the
    /// last of them to be in [`Self::logs`]: the exit can be seen before the task
    /// reading stderr has read the lines printed just before it (a busy machine
    /// made a test miss the hub's last log line that way).
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        let status = tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits in time")
            .expect("wait");
        if let Some(reader) = self.log_reader.take() {
            // End of file once every holder of the pipe (the hub, and a wrapper
            // that exec'd it) has exited.
            tokio::time::timeout(std::time::Duration::from_secs(10), reader)
                .await
                .expect("stderr read to its end in time")
                .expect("stderr reader");
        }
        status
    }
}
