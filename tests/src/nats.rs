//! Real nats-server processes for the cluster tests: a three-node JetStream
//! cluster on ephemeral loopback ports, each node killable with `kill -9`.
//!
//! The binary is `$TEST_NATS_SERVER` (scripts/test.sh installs the pinned one with
//! scripts/nats/install.sh and sets it; not `PEERHUB_*`, which the server refuses).
//! When the variable is set but the file is missing or is not nats-server 2.9.21
//! or later, the tests fail. When it is unset, `target/nats/bin/nats-server` is
//! used if present; otherwise the cluster tests say they were skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The nats-server binary to use, or `None` (with a note on stderr) when none is
/// configured: `$TEST_NATS_SERVER`, else `target/nats/bin/nats-server`.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TEST_NATS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TEST_NATS_SERVER={} does not exist: run scripts/nats/install.sh",
            path.display()
        );
        check_version(&path);
        return Some(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/nats/bin/nats-server");
    if path.is_file() {
        check_version(&path);
        return Some(path);
    }
    eprintln!(
        "cluster test skipped: TEST_NATS_SERVER is unset and target/nats/bin/nats-server \
         is missing (scripts/test.sh installs it with scripts/nats/install.sh)"
    );
    None
}

/// Refuses a nats-server older than 2.9.21 (the expected-sequence race, issue
/// nats-io/nats-server#4320, see scripts/nats/requirements.txt).
fn check_version(path: &Path) {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .unwrap_or_else(|error| panic!("{} --version: {error}", path.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .trim()
        .strip_prefix("nats-server: v")
        .unwrap_or_else(|| panic!("{} is not nats-server: {text}", path.display()));
    let parts: Vec<u64> = version
        .split(['.', '-'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    assert!(
        parts.as_slice() >= [2, 9, 21].as_slice(),
        "nats-server {version} predates 2.9.21 (concurrent expected-sequence publishes \
         were not serialised): use scripts/nats/install.sh"
    );
}

/// One nats-server of the cluster.
#[derive(Debug)]
pub struct NatsNode {
    /// Its server name (`n1`, `n2`, `n3`).
    pub name: String,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    cluster_port: u16,
    child: Option<Child>,
}

impl NatsNode {
    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether its process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A three-node JetStream cluster on loopback, in its own temporary folder.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes, `n1`..`n3`.
    pub nodes: Vec<NatsNode>,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

/// Ports the kernel handed out just now (bound, then let go).
/// How long a cluster may take to elect JetStream's meta leader: on a loaded
/// two-core machine running several clusters at once, longer than on its own.
const READY_WITHIN: Duration = Duration::from_secs(60);

fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl NatsCluster {
    /// Starts three nodes with JetStream and routes between them, and waits until
    /// JetStream answers through each of them. `None` when no binary is configured.
    pub async fn start() -> Option<Self> {
        let binary = binary()?;
        // A port found free may be taken (by another test's connection) before
        // the server binds it; the server then exits at once, and the cluster
        // is started again on other ports.
        let mut attempt = 1;
        loop {
            match Self::start_on(binary.clone(), free_ports(6)).await {
                Ok(cluster) => return Some(cluster),
                Err(exited) if attempt < 3 => {
                    eprintln!("nats-server exited at start (attempt {attempt}): {exited}");
                    attempt += 1;
                }
                Err(exited) => panic!("nats-server exited at start three times: {exited}"),
            }
        }
    }

    /// [`Self::start`] on `ports` (three client ports, then three cluster
    /// ports): `Err` with its log when a server exited before JetStream was
    /// ready.
    async fn start_on(binary: PathBuf, ports: Vec<u16>) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes: Vec<NatsNode> = (0..3)
            .map(|i| NatsNode {
                name: format!("n{}", i + 1),
                port: ports[i],
                cluster_port: ports[3 + i],
                child: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port))
            .collect();
        for node in &nodes {
            let config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n  sync_interval: always\n}}\n\
                 cluster {{\n  name: peerhub-test\n  listen: 127.0.0.1:{cport}\n  routes: [{routes}]\n}}\n",
                name = node.name,
                port = node.port,
                store = dir.path().join(&node.name).display(),
                cport = node.cluster_port,
                routes = routes.join(", "),
            );
            std::fs::write(dir.path().join(format!("{}.conf", node.name)), config)
                .expect("write config");
        }
        let mut cluster = Self {
            nodes: Vec::new(),
            binary,
            dir,
        };
        for node in &mut nodes {
            node.child = Some(cluster.spawn(&node.name));
        }
        cluster.nodes = nodes;
        cluster.ready_or_exited().await?;
        Ok(cluster)
    }

    fn spawn(&self, name: &str) -> Child {
        let log =
            std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log file");
        Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join(format!("{name}.conf")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server")
    }

    /// The folder holding every server's configuration, log and JetStream
    /// store (`<dir>/<name>/`): tests scan it for bytes that must be gone.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `[cluster]` settings for a peerhub node named `node` on this cluster:
    /// three copies of every stream and a 2 s lease, so that a killed node's
    /// groups move within the tests' bounds.
    pub fn node_settings(&self, node: &str) -> peerhub_server::config::ClusterSettings {
        peerhub_server::config::ClusterSettings {
            nats_urls: self.urls(),
            node_name: node.to_string(),
            credentials_file: None,
            tls_ca_file: None,
            replicas: 3,
            lease_ttl: Duration::from_secs(2),
            client_urls: Vec::new(),
        }
    }

    /// The files under [`NatsCluster::data_dir`] holding `needle`, as paths
    /// relative to it (a server's Raft log for a stream is under `/_js_/`).
    pub fn files_holding(&self, needle: &[u8]) -> Vec<String> {
        let dir = self.dir.path();
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if std::fs::read(&path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                {
                    out.push(path.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out
    }

    /// Every record a group's log holds in the `PEERHUB_LOG` stream, read raw
    /// (payloads, in stream order); the group must have at least one.
    pub async fn raw_log(&self, group: &str) -> Vec<bytes::Bytes> {
        use futures_util::StreamExt as _;
        let nats = self.connect(0, "test-raw-log").await;
        let stream = nats
            .jetstream()
            .get_stream("PEERHUB_LOG")
            .await
            .expect("the log stream");
        let subject = format!("peerhub.log.{group}");
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: subject,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut out = Vec::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("the log answers")
                .expect("a message")
                .expect("readable");
            out.push(message.payload.clone());
            if message.info().expect("info").pending == 0 {
                return out;
            }
        }
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsNode::url).collect()
    }

    /// The URLs of the running nodes.
    pub fn running_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(NatsNode::url)
            .collect()
    }

    /// A peerhub connection to the running nodes, trying the `first`-th (modulo
    /// how many run) before the others.
    pub async fn connect(&self, first: usize, name: &str) -> peerhub_server::cluster::Nats {
        let mut urls = self.running_urls();
        let count = urls.len();
        urls.rotate_left(first % count);
        peerhub_server::cluster::Nats::connect(&urls, name, Duration::from_secs(2))
            .await
            .expect("connect to NATS")
    }

    /// `kill -9` one node by name and reaps it.
    pub async fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        child.start_kill().expect("kill -9");
        child.wait().await.expect("reap");
    }

    /// Starts a killed node again on its own data.
    pub async fn restart(&mut self, name: &str) {
        let child = self.spawn(name);
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        assert!(node.child.is_none(), "{name} is running");
        node.child = Some(child);
    }

    /// A node's log so far (for failure messages).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The name of the node (`n1`..`n3`) leading `stream` now, asked through the
    /// first running node.
    pub async fn stream_leader(&self, stream: &str) -> String {
        let nats = self.connect(0, "leader-probe").await;
        let mut handle = nats
            .jetstream()
            .get_stream(stream)
            .await
            .unwrap_or_else(|error| panic!("stream {stream}: {error}"));
        handle
            .info()
            .await
            .unwrap_or_else(|error| panic!("stream {stream} info: {error}"))
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap_or_else(|| panic!("stream {stream} has no leader"))
    }

    /// Waits (up to [`READY_WITHIN`]) until JetStream's meta group has a leader
    /// and answers through every running node.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        for url in self.running_urls() {
            loop {
                if self.answers(&url).await {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "JetStream did not become ready through {url}:\n{}",
                    self.log("n1")
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// [`Self::wait_ready`] at start: `Err` with its log as soon as a server
    /// has exited (its port was taken, say).
    async fn ready_or_exited(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        for i in 0..self.nodes.len() {
            let url = self.nodes[i].url();
            while !self.answers(&url).await {
                let exited = self.nodes.iter_mut().find_map(|node| {
                    let child = node.child.as_mut()?;
                    child.try_wait().ok().flatten().map(|_| node.name.clone())
                });
                if let Some(name) = exited {
                    return Err(format!("{name}:\n{}", self.log(&name)));
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "JetStream did not become ready through {url}:\n{}",
                    self.log("n1")
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    async fn answers(&self, url: &str) -> bool {
        let Ok(client) = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(1))
            .connect(url)
            .await
        else {
            return false;
        };
        let js = async_nats::jetstream::new(client);
        match tokio::time::timeout(Duration::from_secs(2), js.query_account()).await {
            Ok(Ok(_)) => {}
            _ => return false,
        }
        // Account info can answer before the meta group has a leader; a stream
        // listing needs the leader.
        use futures_util::StreamExt as _;
        let mut names = js.stream_names();
        matches!(
            tokio::time::timeout(Duration::from_secs(2), names.next()).await,
            Ok(None) | Ok(Some(Ok(_)))
        )
    }
}

/// Runs `open` until it succeeds, for up to 30 s: opening a stream or bucket
/// fails while JetStream elects leaders after a server was killed. Panics with
/// the last error after that; `what` names it in the messages.
pub async fn opened<T, E, F, Fut>(what: &str, mut open: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match open().await {
            Ok(opened) => return opened,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("opening {what} again: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("opening {what}: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose port is taken exits; the start says so at once (and
    /// [`NatsCluster::start`] tries other ports) instead of waiting out
    /// [`READY_WITHIN`].
    #[tokio::test]
    async fn a_server_whose_port_is_taken_is_reported_at_once() {
        let Some(binary) = binary() else {
            eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
            return;
        };
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut ports = free_ports(5);
        ports.insert(1, taken.local_addr().expect("addr").port());
        let started = tokio::time::Instant::now();
        let Err(exited) = NatsCluster::start_on(binary, ports).await else {
            panic!("started on a taken port");
        };
        assert!(exited.starts_with("n2:"), "{exited}");
        assert!(
            started.elapsed() < READY_WITHIN / 2,
            "{:?}",
            started.elapsed()
        );
        drop(taken);
        assert!(NatsCluster::start().await.is_some());
    }
}
