//! `peerhub cluster check` and the `[cluster]` keys, from outside: the real
//! binary against a real three-server nats-server cluster on loopback. The check
//! makes every stream and bucket with the configured copies and reports each; a
//! dead server, a stream made with other copies, and a refused configuration are
//! each reported with a clear reason and the right exit code. (Serving with
//! `[cluster]`: `cluster_process.rs`.)

use std::process::Output;
use std::time::Duration;

use peerhub_tests::nats::NatsCluster;
use peerhub_tests::process::binary;
use serde_json::Value;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

/// The streams peerhub keeps (buckets as their streams).
const STREAMS: [&str; 7] = [
    "KV_peerhub_leases",
    "PEERHUB_LOG",
    "KV_peerhub_directory",
    "KV_peerhub_group_state",
    "KV_peerhub_escalations",
    "PEERHUB_STEPS",
    "PEERHUB_AUDIT",
];

/// Runs `peerhub ARGS...` with `env` (and no other `PEERHUB_*`), off the runtime.
async fn peerhub(args: &[&str], env: &[(&str, String)]) -> Output {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(binary());
        for (name, _) in std::env::vars() {
            if name.starts_with("PEERHUB_") {
                command.env_remove(name);
            }
        }
        command.args(&args).envs(env).output().expect("run peerhub")
    })
    .await
    .expect("joined")
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|error| {
        panic!(
            "not a JSON report ({error}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh cluster checks fit: three servers with their versions, seven stores each
/// led and with three current copies; a second check finds them as they are.
/// Then a check asking for one copy reports every stream made with three (and
/// changes none), and with a server killed the check names it and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_makes_every_store_and_names_what_is_wrong() {
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let urls = cluster.urls().join(",");
        let env = vec![
            ("PEERHUB_CLUSTER_NATS_URLS", urls.clone()),
            ("PEERHUB_CLUSTER_NODE_NAME", "node-a".to_string()),
        ];
        for round in 0..2 {
            // A replica just made may take a moment to be current on a loaded
            // machine: the check says so (exit 1), and an operator runs it again.
            let mut tries = 0;
            let (out, found) = loop {
                tries += 1;
                let out = peerhub(&["cluster", "check"], &env).await;
                let found = report(&out);
                if out.status.code() == Some(0) || tries == 10 {
                    break (out, found);
                }
                eprintln!("check again: {found}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            assert_eq!(out.status.code(), Some(0), "round {round}: {found:#}");
            assert_eq!(found["ok"], true);
            assert_eq!(found["node_name"], "node-a");
            let servers = found["servers"].as_array().expect("servers");
            assert_eq!(servers.len(), 3);
            for server in servers {
                assert!(server["problem"].is_null(), "{server}");
                let version = server["version"].as_str().expect("version");
                assert!(peerhub_server::cluster::check::version_ok(version));
            }
            let stores = found["stores"].as_array().expect("stores");
            let names: Vec<&str> = stores.iter().filter_map(|s| s["stream"].as_str()).collect();
            assert_eq!(names, STREAMS);
            for store in stores {
                assert!(store["problem"].is_null(), "{store}");
                assert_eq!(store["replicas"], 3, "{store}");
                assert_eq!(store["current"], 3, "{store}");
                assert!(store["leader"].is_string(), "{store}");
            }
        }

        let mut one = env.clone();
        one.push(("PEERHUB_CLUSTER_REPLICAS", "1".to_string()));
        let out = peerhub(&["cluster", "check"], &one).await;
        let found = report(&out);
        assert_eq!(out.status.code(), Some(1), "{found:#}");
        assert_eq!(found["ok"], false);
        let stores = found["stores"].as_array().expect("stores");
        assert_eq!(stores.len(), STREAMS.len(), "{found:#}");
        for store in stores {
            let problem = store["problem"].as_str().expect("a problem");
            assert!(problem.contains("made with 3 copies"), "{problem}");
            assert_eq!(store["replicas"], 3, "left as it was: {store}");
        }

        cluster.kill("n2").await;
        let out = peerhub(&["cluster", "check"], &env).await;
        let found = report(&out);
        assert_eq!(out.status.code(), Some(1), "{found:#}");
        let servers = found["servers"].as_array().expect("servers");
        assert!(servers[1]["problem"].is_string(), "{}", servers[1]);
        // The others answer; while the meta group elects a new leader (when n2
        // led it) their JetStream may not, and the check says so.
        for other in [&servers[0], &servers[2]] {
            assert!(other["version"].is_string(), "{other}");
            let problem = other["problem"].as_str().unwrap_or("JetStream");
            assert!(problem.contains("JetStream"), "{other}");
        }
        assert!(stderr(&out).contains("not fit"), "{}", stderr(&out));
    })
    .await
    .expect("test bound");
}

/// A configuration the check cannot use is refused (exit 2) before anything is
/// touched, and a password in a URL is never echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cluster_configuration_says_which_key_and_touches_nothing() {
    let out = peerhub(&["cluster", "check"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cluster.nats_urls is empty"),
        "{}",
        stderr(&out)
    );

    let secret = "nats://alice:hunter2-do-not-print@127.0.0.1:4222".to_string();
    let out = peerhub(
        &["cluster", "check"],
        &[("PEERHUB_CLUSTER_NATS_URLS", secret)],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let said = stderr(&out) + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("cluster.credentials_file"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");

    for (key, value, named) in [
        ("PEERHUB_CLUSTER_REPLICAS", "7", "cluster.replicas"),
        (
            "PEERHUB_CLUSTER_LEASE_TTL_MS",
            "100",
            "cluster.lease_ttl_ms",
        ),
        ("PEERHUB_CLUSTER_NODE_NAME", "a.b", "cluster.node_name"),
        (
            "PEERHUB_CLUSTER_CREDENTIALS_FILE",
            "/nonexistent.creds",
            "cluster.credentials_file",
        ),
    ] {
        let env = [
            (
                "PEERHUB_CLUSTER_NATS_URLS",
                "nats://127.0.0.1:4222".to_string(),
            ),
            (key, value.to_string()),
        ];
        let out = peerhub(&["cluster", "check"], &env).await;
        assert_eq!(out.status.code(), Some(2), "{key}");
        assert!(stderr(&out).contains(named), "{key}: {}", stderr(&out));
    }
}

/// A NATS server nobody listens on is reported, with no store touched and exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_with_no_server_reachable_reports_each_and_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let env = [(
        "PEERHUB_CLUSTER_NATS_URLS",
        format!("nats://127.0.0.1:{port}"),
    )];
    let out = tokio::time::timeout(BOUND, peerhub(&["cluster", "check"], &env))
        .await
        .expect("bounded");
    let found = report(&out);
    assert_eq!(out.status.code(), Some(1), "{found:#}");
    assert!(found["servers"][0]["problem"].is_string(), "{found:#}");
    assert_eq!(found["stores"].as_array().map(Vec::len), Some(0));
}
