//! The real server, in this process, on an ephemeral loopback port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::{CreateGroupPayload, GroupKind};
use peerhub_server::clock::Clock;
use peerhub_server::config::Config;
use peerhub_server::hub::Hub;
use peerhub_server::Server;
use tempfile::TempDir;
use tokio::net::TcpListener;

use crate::{Client, Identity};

/// A server with its own temporary data folder.
#[derive(Debug)]
pub struct TestServer {
    server: Option<Server>,
    dir: Arc<TempDir>,
    config: Config,
    /// Where it listens.
    pub addr: SocketAddr,
    admin: Option<Identity>,
    admin_token: Option<String>,
    /// The server's clock: tests move it forward with `clock.advance(ms)`.
    pub clock: Clock,
}

/// Rate limits far above what any test sends (the limits tests set their own).
pub fn generous_limits(limits: &mut peerhub_server::limits::LimitSettings) {
    limits.messages_per_second = 100_000;
    limits.message_burst = 100_000;
    limits.flags_per_minute = 100_000;
    limits.commands_per_second = 100_000;
    limits.flags_per_group_per_minute = 100_000;
    limits.flags_per_person_per_minute = 100_000;
    limits.reads_per_second = 100_000;
}

/// The same, as `peerhub` flags.
pub const GENEROUS_LIMIT_FLAGS: &[&str] = &[
    "--messages-per-second",
    "100000",
    "--message-burst",
    "100000",
    "--flags-per-minute",
    "100000",
    "--commands-per-second",
    "100000",
];

impl TestServer {
    /// Starts with default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with settings changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = Config::new(dir.path().join("data"));
        // Tests send fast; the limits tests set their own.
        generous_limits(&mut config.limits);
        // The test machine's free disk space is not what a test checks (the
        // low-space test sets its own watermark).
        config.store_min_free_bytes = 0;
        // An ephemeral session's rewrite at the job's next look (about a second).
        config.compact_delay = std::time::Duration::ZERO;
        tweak(&mut config);
        Self::start_in(dir, config, None, Clock::system()).await
    }

    /// Starts listening on `bind` (e.g. `[::]:0`, the unspecified address, which
    /// needs TLS in `tweak`) instead of `127.0.0.1:0`. Not restartable.
    pub async fn start_on(bind: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = Config::new(dir.path().join("data"));
        generous_limits(&mut config.limits);
        config.store_min_free_bytes = 0;
        tweak(&mut config);
        peerhub_server::file_modes::restrict_umask();
        let listener = TcpListener::bind(bind).await.expect("bind");
        let clock = Clock::system();
        let server = Server::start_with_clock(listener, config.clone(), clock.clone())
            .await
            .expect("server starts");
        Self {
            addr: server.local_addr(),
            admin_token: server.start_tokens().admin.clone(),
            server: Some(server),
            dir,
            config,
            admin: None,
            clock,
        }
    }

    async fn start_in(
        dir: Arc<TempDir>,
        config: Config,
        admin: Option<Identity>,
        clock: Clock,
    ) -> Self {
        // As `main` does: what this process creates (the hub's store, and the store
        // a test opens itself to erase or inspect) is owner-only, so a restart does
        // not find its own files open to others and refuse (file_modes).
        peerhub_server::file_modes::restrict_umask();
        // A restart in this process can find the stopped hub's store still locked
        // for a moment: a task of the old hub that has not ended yet still holds
        // it (its shutdown then leaves the store to the last holder). Seen only on
        // a busy machine (six test threads and another build on two cores); a
        // process restart cannot meet it. Up to 10 s for the lock, then the error.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let server = loop {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            match Server::start_with_clock(listener, config.clone(), clock.clone()).await {
                Ok(server) => break server,
                Err(error)
                    if format!("{error:?}").contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    eprintln!("the stopped hub still holds the store; starting again: {error:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => panic!("server starts: {error:?}"),
            }
        };
        Self {
            addr: server.local_addr(),
            admin_token: server.start_tokens().admin.clone(),
            server: Some(server),
            dir,
            config,
            admin,
            clock,
        }
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// Its shared state (to inspect the store).
    pub fn hub(&self) -> &Arc<Hub> {
        self.server().hub()
    }

    /// The store's digest once the hub has stopped writing: the same on two reads
    /// 300 ms apart (up to 15 s). Work a command sets going is written after it
    /// is answered (the facilitators' note about a flag, the router's steps, a
    /// supervisor's delivery), so a digest taken at once can race it; a test that
    /// asserts that refusals "change nothing" compares against this.
    pub async fn settled_digest(&self) -> [u8; 32] {
        let mut last = self.hub().store.digest().expect("digest");
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let now = self.hub().store.digest().expect("digest");
            if now == last {
                return now;
            }
            last = now;
        }
        panic!("the store never stopped changing for 300 ms");
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// A connected, not logged-in client.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client logged in as `identity`.
    pub async fn login(&self, identity: &Identity) -> Client {
        let mut client = self.client().await;
        client.login(identity).await;
        client
    }

    /// A client logged in as the admin (the first call redeems the start-up token).
    pub async fn admin(&mut self) -> Client {
        if let Some(admin) = &self.admin {
            return self.login(admin).await;
        }
        let admin = Identity::generate();
        let mut client = self.login(&admin).await;
        let token = self
            .admin_token
            .take()
            .expect("no admin yet, so a start-up token");
        let reply = client.redeem(&token).await;
        assert!(
            matches!(reply, peerhub_protocol::ServerFrame::Redeemed { .. }),
            "admin invite redeemed: {reply:?}"
        );
        self.admin = Some(admin);
        client
    }

    /// Creates a drop-in group as the admin.
    pub async fn create_group(&mut self, group: &str) {
        let mut admin = self.admin().await;
        let reply = admin.create_group(group, "Test group").await;
        assert!(
            matches!(reply, peerhub_protocol::ServerFrame::GroupCreated { .. }),
            "group created: {reply:?}"
        );
    }

    /// Creates a group as the admin with the settings `tweak` chooses.
    pub async fn create_group_with(
        &mut self,
        group: &str,
        tweak: impl FnOnce(&mut CreateGroupPayload),
    ) {
        self.create_group_with_code(group, None, tweak).await;
    }

    /// [`Self::create_group_with`], with an access code (sent in the frame,
    /// beside the signed request).
    pub async fn create_group_with_code(
        &mut self,
        group: &str,
        access_code: Option<&str>,
        tweak: impl FnOnce(&mut CreateGroupPayload),
    ) {
        let mut admin = self.admin().await;
        let me = admin.identity.clone().expect("admin identity");
        let env = me.create_group_with(group, "Test group", GroupKind::DropIn, tweak);
        let access_code = access_code.map(str::to_string);
        let reply = admin
            .request(|id| peerhub_protocol::ClientFrame::CreateGroup {
                id,
                access_code,
                env,
            })
            .await;
        assert!(
            matches!(reply, peerhub_protocol::ServerFrame::GroupCreated { .. }),
            "group created: {reply:?}"
        );
    }

    /// A new identity holding `role`, granted through a real invite redeemed over
    /// a socket; returns it and its logged-in client. A facilitator is granted
    /// every group that exists now (facilitator standing is per group): use
    /// [`Self::facilitator_of`] to name fewer.
    pub async fn with_role(&self, role: Role) -> (Identity, Client) {
        let groups = match role {
            Role::Facilitator => self
                .hub()
                .store
                .groups()
                .expect("groups")
                .into_iter()
                .map(|g| g.id)
                .collect(),
            _ => Vec::new(),
        };
        self.redeem_new(role, groups).await
    }

    /// A new facilitator of just `groups`, through a real invite that names them.
    pub async fn facilitator_of(&self, groups: &[&str]) -> (Identity, Client) {
        let groups = groups
            .iter()
            .map(|g| peerhub_protocol::GroupId::parse(g).expect("group id"))
            .collect();
        self.redeem_new(Role::Facilitator, groups).await
    }

    async fn redeem_new(
        &self,
        role: Role,
        groups: Vec<peerhub_protocol::GroupId>,
    ) -> (Identity, Client) {
        let spec = peerhub_server::invites::InviteSpec {
            role: role.into(),
            group: None,
            groups,
            ttl_ms: 60_000,
            bootstrap: false,
        };
        let token =
            peerhub_server::invites::create(&self.hub().store, spec, None, self.clock.now_ms())
                .expect("invite");
        let me = Identity::generate();
        let mut client = self.login(&me).await;
        let reply = client.redeem(&token).await;
        assert!(
            matches!(reply, peerhub_protocol::ServerFrame::Redeemed { .. }),
            "{reply:?}"
        );
        (me, client)
    }

    /// Gracefully stops the server and starts a new one on the same data folder.
    pub async fn restart(mut self) -> Self {
        let server = self.server.take().expect("running");
        server.shutdown().await;
        Self::start_in(
            self.dir.clone(),
            self.config.clone(),
            self.admin.clone(),
            self.clock.clone(),
        )
        .await
    }

    /// Gracefully stops the server and runs `f` on its data folder while it is
    /// stopped (an operator's command on a stopped hub); the folder goes after.
    pub async fn while_stopped<T>(mut self, f: impl FnOnce(&Path) -> T) -> T {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        f(&self.config.data_dir)
    }

    /// Gracefully stops the server, lets `meanwhile` change the stopped data folder
    /// (to leave what a crash would have left), and starts a new one on it.
    pub async fn restart_with(mut self, meanwhile: impl FnOnce(&Path)) -> Self {
        let server = self.server.take().expect("running");
        server.shutdown().await;
        meanwhile(&self.config.data_dir);
        Self::start_in(
            self.dir.clone(),
            self.config.clone(),
            self.admin.clone(),
            self.clock.clone(),
        )
        .await
    }

    /// Gracefully stops the server and keeps its data folder, to be started
    /// again with [`StoppedServer::start`] (a node down while the others act).
    pub async fn stop(mut self) -> StoppedServer {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        StoppedServer(self)
    }

    /// Gracefully stops the server.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// A [`TestServer`] stopped with [`TestServer::stop`]: its data folder kept.
#[derive(Debug)]
pub struct StoppedServer(TestServer);

impl StoppedServer {
    /// The stopped server's data folder.
    pub fn data_dir(&self) -> &Path {
        &self.0.config.data_dir
    }

    /// Starts a new server on the same data folder and settings.
    pub async fn start(self) -> TestServer {
        let stopped = self.0;
        TestServer::start_in(
            stopped.dir.clone(),
            stopped.config.clone(),
            stopped.admin.clone(),
            stopped.clock.clone(),
        )
        .await
    }
}
