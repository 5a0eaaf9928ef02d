//! `peerhub cluster check`: whether the NATS cluster that `[cluster]` names is fit
//! for peerhub, and every stream and bucket peerhub keeps there made ready.
//!
//! Each server is asked on its own connection: reachable with this node's
//! credentials, nats-server 2.9.21 or later (the release that serialises
//! concurrent expected-sequence publishes, on which fencing a stale group owner
//! rests: nats-io/nats-server#4320), and JetStream enabled. Then every stream and
//! bucket is opened (created if missing) with `cluster.replicas` copies, and each
//! is reported with its leader and how many of its copies are current. A stream
//! made earlier with another number of copies is reported, not changed: changing
//! it is the operator's decision.
//!
//! The report names servers, streams and counts; never a credential.

use std::time::Duration;

use async_nats::jetstream;
use serde::Serialize;

use super::stores::ClusterStore;
use super::{ClusterError, Nats};
use crate::config::ClusterSettings;

/// The oldest nats-server peerhub runs on.
pub const MIN_NATS_VERSION: [u64; 3] = [2, 9, 21];

/// How long each request of the check may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the check found.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Every server and every store is fit.
    pub ok: bool,
    /// The node name `[cluster]` gives (or the host name).
    pub node_name: String,
    /// The copies asked for.
    pub replicas: usize,
    /// One per `cluster.nats_urls` entry, in order.
    pub servers: Vec<ServerCheck>,
    /// One per stream or bucket (empty when no server could be reached).
    pub stores: Vec<StoreCheck>,
}

/// One NATS server, asked on its own.
#[derive(Debug, Serialize)]
pub struct ServerCheck {
    /// Its URL, as configured (never holds a password: the config refuses one).
    pub url: String,
    /// The server's name, as it reports it.
    pub server_name: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Its cluster's name (`None`: a lone server).
    pub cluster: Option<String>,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
}

/// One stream or bucket.
#[derive(Debug, Serialize)]
pub struct StoreCheck {
    /// The JetStream stream (a bucket's is `KV_<bucket>`).
    pub stream: String,
    /// What peerhub keeps in it.
    pub holds: &'static str,
    /// Its copies, as it was created.
    pub replicas: usize,
    /// The server leading it.
    pub leader: Option<String>,
    /// Copies up to date (the leader's included).
    pub current: usize,
    /// Messages in it.
    pub messages: u64,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
    /// No leader yet, or a copy on a server that is up is not current yet.
    #[serde(skip)]
    catching_up: bool,
}

/// Whether `version` (as a server reports it: `2.15.1`, `2.11.0-RC.2`) is at least
/// [`MIN_NATS_VERSION`]. A pre-release of the minimum counts as before it.
pub fn version_ok(version: &str) -> bool {
    let (release, pre) = match version.split_once('-') {
        Some((release, pre)) => (release, !pre.is_empty()),
        None => (version, false),
    };
    let parts: Option<Vec<u64>> = release.split('.').map(|p| p.parse().ok()).collect();
    let Some(parts) = parts.filter(|p| p.len() == 3) else {
        return false;
    };
    let parts = [parts[0], parts[1], parts[2]];
    parts > MIN_NATS_VERSION || (parts == MIN_NATS_VERSION && !pre)
}

/// Runs the check.
pub async fn check(settings: &ClusterSettings) -> CheckReport {
    let mut servers = Vec::new();
    // Each server on its own connection, side by side (each may wait out an
    // election).
    servers.extend(
        futures_util::future::join_all(
            settings
                .nats_urls
                .iter()
                .map(|url| check_server(settings, url)),
        )
        .await,
    );
    let mut stores = Vec::new();
    if servers.iter().any(|s| s.problem.is_none()) {
        match Nats::connect_with(settings, "check", TIMEOUT).await {
            Ok(nats) => stores = check_stores(&nats, settings).await,
            Err(error) => stores.push(StoreCheck::failed("(all)", "everything", &error)),
        }
    }
    let ok = !stores.is_empty()
        && servers.iter().all(|s| s.problem.is_none())
        && stores.iter().all(|s| s.problem.is_none());
    CheckReport {
        ok,
        node_name: settings.node_name.clone(),
        replicas: settings.replicas,
        servers,
        stores,
    }
}

async fn check_server(settings: &ClusterSettings, url: &str) -> ServerCheck {
    let mut found = ServerCheck {
        url: url.to_string(),
        server_name: None,
        version: None,
        cluster: None,
        problem: None,
    };
    let nats = match Nats::connect_to(&[url.to_string()], settings, "check", TIMEOUT).await {
        Ok(nats) => nats,
        Err(error) => {
            found.problem = Some(error.to_string());
            return found;
        }
    };
    let info = nats.client().server_info();
    found.server_name = Some(info.server_name.clone());
    found.version = Some(info.version.clone());
    found.cluster = info.cluster.clone();
    found.problem = if !version_ok(&info.version) {
        Some(format!(
            "nats-server {} predates {}: concurrent expected-sequence publishes are not \
             serialised there, so a stale group owner could append (nats-io/nats-server#4320)",
            info.version,
            MIN_NATS_VERSION.map(|n| n.to_string()).join(".")
        ))
    } else if !info.jetstream {
        Some("JetStream is not enabled on this server".to_string())
    } else {
        match nats.jetstream().query_account().await {
            Ok(_) => None,
            Err(error) => Some(format!(
                "JetStream does not answer for this account: {error}"
            )),
        }
    };
    found
}

/// Opens every stream and bucket peerhub keeps ([`ClusterStore::ALL`]), then
/// reports each.
async fn check_stores(nats: &Nats, settings: &ClusterSettings) -> Vec<StoreCheck> {
    let replicas = settings.replicas;
    let mut opened: Vec<(String, &'static str, bool, Result<(), ClusterError>)> = Vec::new();
    for store in ClusterStore::ALL {
        opened.push((
            store.stream(),
            store.holds(),
            store.must_erase(),
            store.open(nats, settings).await,
        ));
    }
    // Looked at side by side: after a server's death each stream it led waits
    // for its own election, and these overlap.
    let looks = opened
        .into_iter()
        .map(|(stream, holds, must_erase, outcome)| async move {
            match outcome {
                Err(error) => StoreCheck::failed(&stream, holds, &error),
                Ok(()) => settled(nats.jetstream(), &stream, holds, replicas, must_erase).await,
            }
        });
    futures_util::future::join_all(looks).await
}

/// How long a stream's copies are given to catch up (one just made, or one whose
/// server was restarted) before the check reports them behind.
const SETTLE: Duration = Duration::from_secs(5);

/// [`describe`], looked at again for up to [`SETTLE`] while it has no leader yet
/// or a copy on a server that is up is not current yet (a copy on a server that
/// is down is reported at once).
async fn settled(
    js: &jetstream::Context,
    stream: &str,
    holds: &'static str,
    replicas: usize,
    must_erase: bool,
) -> StoreCheck {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let found = describe(js, stream, holds, replicas, must_erase).await;
        if !found.catching_up || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One stream's state, fresh from its leader; `must_erase`: a bucket whose
/// replaced or erased values must be overwritten, which is unfit if it denies
/// message deletes ([`super::denies_erasure`]).
async fn describe(
    js: &jetstream::Context,
    stream: &str,
    holds: &'static str,
    replicas: usize,
    must_erase: bool,
) -> StoreCheck {
    let info = match js.get_stream(stream).await {
        Ok(mut handle) => handle.info().await.cloned(),
        Err(error) => {
            return StoreCheck::failed(
                stream,
                holds,
                &ClusterError::unavailable("stream info", error),
            )
        }
    };
    let info = match info {
        Ok(info) => info,
        Err(error) => {
            return StoreCheck::failed(
                stream,
                holds,
                &ClusterError::unavailable("stream info", error),
            )
        }
    };
    // A lone server (no cluster) leads every stream itself.
    let (leader, current, catching_up) = match info.cluster.as_ref() {
        Some(c) if c.leader.is_some() || !c.replicas.is_empty() => (
            c.leader.clone(),
            usize::from(c.leader.is_some())
                + c.replicas
                    .iter()
                    .filter(|p| p.current && !p.offline)
                    .count(),
            c.leader.is_none() || c.replicas.iter().any(|p| !p.current && !p.offline),
        ),
        _ => (Some("(this server alone)".to_string()), 1, false),
    };
    let made_with = info.config.num_replicas;
    let denies = must_erase
        .then(|| super::denies_erasure(&info.config))
        .flatten();
    let problem = if let Some(why) = denies {
        Some(why)
    } else if made_with != replicas {
        Some(format!(
            "made with {made_with} copies, cluster.replicas says {replicas}: change one \
             (nats stream edit {stream} --replicas {replicas}) or the other"
        ))
    } else if leader.is_none() {
        Some("no leader: fewer than a majority of its servers are up".to_string())
    } else if current < made_with {
        Some(format!("{current} of {made_with} copies are current"))
    } else {
        None
    };
    StoreCheck {
        stream: stream.to_string(),
        holds,
        replicas: made_with,
        leader,
        current,
        messages: info.state.messages,
        problem,
        catching_up,
    }
}

impl StoreCheck {
    fn failed(stream: &str, holds: &'static str, error: &ClusterError) -> Self {
        Self {
            stream: stream.to_string(),
            holds,
            replicas: 0,
            leader: None,
            current: 0,
            messages: 0,
            problem: Some(error.to_string()),
            catching_up: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::version_ok;

    #[test]
    fn versions_before_the_fence_fix_are_refused() {
        for bad in [
            "2.9.20",
            "2.9.10",
            "2.9.21-RC.1",
            "1.99.99",
            "2.9",
            "x.y.z",
            "",
        ] {
            assert!(!version_ok(bad), "{bad}");
        }
        for good in [
            "2.9.21",
            "2.9.22",
            "2.10.0",
            "2.15.1",
            "2.16.0-beta.1",
            "3.0.0",
        ] {
            assert!(version_ok(good), "{good}");
        }
    }
}
