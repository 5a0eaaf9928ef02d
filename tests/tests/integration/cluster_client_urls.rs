//! `cluster.client_urls` (docs/CLUSTER.md §9): the cluster's public node origins
//! for the web client. A bad entry stops the binary before anything starts, by
//! name; every node serves the list at `/nodes.json`, puts exactly those origins'
//! WebSocket URLs beside 'self' in the pages' `connect-src`, and accepts a
//! WebSocket from a page of a listed node while still refusing any other origin.
//! One node, with no list, is as before.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use peerhub_tests::nats::NatsCluster;
use peerhub_tests::process::binary;
use peerhub_tests::{ProcessServer, TestServer};

use super::http::upgrade_status;

/// The bound on each test, the NATS cluster's start included.
const BOUND: Duration = Duration::from_secs(120);

/// The list the cluster tests give every node: a public name and a loopback one.
const LISTED: &str = "https://n1.example.org/, http://127.0.0.1:7999";

/// The pages' policy on one node, as before the list existed.
const ONE_NODE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// A WebSocket upgrade to `addr` from a page of `origin`: the status it gets.
async fn upgrade_from(addr: SocketAddr, origin: &str) -> u16 {
    upgrade_status(addr, &addr.to_string(), origin).await
}

/// A page's head and body: (status, headers lower-cased, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    super::http::get(addr, path, "").await
}

/// A header's value, or "" when it is missing.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    super::http::header(headers, name).unwrap_or("")
}

/// The binary run to its end with only `env` as its `PEERHUB_*` settings.
async fn refused_start(data: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("PEERHUB_") {
            command.env_remove(name);
        }
    }
    let out = command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data")
        .arg(data)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("the binary exits at once")
        .expect("run peerhub");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_url_that_is_not_an_origin_is_refused_by_name_and_nothing_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    // Nobody listens there: nothing may get as far as trying.
    let nats = "nats://127.0.0.1:9";
    for (list, why) in [
        ("n1.example.org", "must start with https:// or http://"),
        (
            "wss://n1.example.org",
            "must start with https:// or http://",
        ),
        ("https://n1.example.org/peerhub", "has a path or query"),
        (
            "https://ops:pw@n1.example.org",
            "must not carry a user or password",
        ),
        (
            "https://n1.example.org,https://N1.example.org:443",
            "listed twice",
        ),
    ] {
        let env = [
            ("PEERHUB_CLUSTER_NATS_URLS", nats),
            ("PEERHUB_CLUSTER_CLIENT_URLS", list),
        ];
        let (code, said) = refused_start(&data, &env).await;
        assert_eq!(code, Some(2), "{list}: {said}");
        assert!(said.contains("cluster.client_urls"), "{list}: {said}");
        assert!(said.contains(why), "{list}: {said}");
        assert!(!said.contains("ready"), "{list}: {said}");
        assert!(!data.exists(), "{list}: no data folder is made");
    }
    let (code, said) = refused_start(
        &data,
        &[("PEERHUB_CLUSTER_CLIENT_URLS", "https://n1.example.org")],
    )
    .await;
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("needs cluster.nats_urls"), "{said}");
    assert!(!data.exists(), "no data folder is made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_accept_each_others_pages_and_the_csp_allows_exactly_the_listed_nodes() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let urls = cluster.urls().join(",");
        let node = |name: &'static str| {
            let env = [
                ("PEERHUB_CLUSTER_NATS_URLS", urls.clone()),
                ("PEERHUB_CLUSTER_NODE_NAME", name.to_string()),
                ("PEERHUB_CLUSTER_LEASE_TTL_MS", "2000".to_string()),
                ("PEERHUB_CLUSTER_CLIENT_URLS", LISTED.to_string()),
            ];
            let data = dir.path().join(name);
            async move {
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                ProcessServer::start_env(&data, &[], &env).await
            }
        };
        let a = node("a").await;
        let b = node("b").await;

        for server in [&a, &b] {
            let (status, headers, body) = get(server.addr, "/").await;
            assert_eq!(status, 200);
            assert!(body.contains("<html"));
            assert_eq!(
                header(&headers, "content-security-policy"),
                ONE_NODE_CSP.replace(
                    "connect-src 'self';",
                    "connect-src 'self' wss://n1.example.org ws://127.0.0.1:7999;"
                ),
                "exactly the listed nodes' WebSocket URLs beside 'self'"
            );
            let (status, headers, body) = get(server.addr, "/nodes.json").await;
            assert_eq!(status, 200);
            assert_eq!(header(&headers, "content-type"), "application/json");
            let nodes: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(
                nodes,
                serde_json::json!({"nodes": ["https://n1.example.org", "http://127.0.0.1:7999"]}),
                "as configured, in order, written as origins"
            );
        }

        // A page served by a listed node may open a WebSocket here; any other
        // origin, or a listed one under another scheme or port, still may not.
        for origin in [
            "https://n1.example.org",
            "https://n1.example.org:443",
            "http://127.0.0.1:7999",
        ] {
            assert_eq!(upgrade_from(b.addr, origin).await, 101, "{origin}");
        }
        let own = format!("http://{}", b.addr);
        assert_eq!(upgrade_from(b.addr, &own).await, 101, "its own page");
        let other = format!("http://{}", a.addr);
        assert_eq!(
            upgrade_from(b.addr, &other).await,
            403,
            "a node not in the list is not let in by being a node"
        );
        for origin in [
            "https://n9.example.org",
            "http://n1.example.org",
            "https://n1.example.org:8443",
            "http://127.0.0.1:7998",
            "null",
        ] {
            assert_eq!(upgrade_from(b.addr, origin).await, 403, "{origin}");
        }
    })
    .await
    .expect("within the bound");
}

#[tokio::test]
async fn one_node_has_no_list_and_keeps_its_policy() {
    let server = TestServer::start().await;
    let (status, headers, _) = get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-security-policy"), ONE_NODE_CSP);
    let (status, _, body) = get(server.addr, "/nodes.json").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON"),
        serde_json::json!({"nodes": []})
    );
    assert_eq!(
        upgrade_from(server.addr, "https://n1.example.org").await,
        403
    );
}
