//! Two peerhub nodes on a three-server NATS cluster (docs/CLUSTER.md §3–5): a
//! group's task runs on one node, sessions on the other reach it through NATS,
//! members on both see one gap-free order, and when the node serving the group
//! stops, the other serves it from the log with nothing acknowledged lost and no
//! seq used twice.

use std::time::Duration;

use peerhub_protocol::ServerFrame;
use peerhub_server::cluster::directory::{Directory, DirectoryConfig};
use peerhub_server::config::ClusterSettings;
use peerhub_tests::identity::gid;
use peerhub_tests::nats::{opened, NatsCluster};
use peerhub_tests::{Identity, TestServer};

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

fn settings(cluster: &NatsCluster, node: &str) -> ClusterSettings {
    ClusterSettings {
        nats_urls: cluster.urls(),
        node_name: node.to_string(),
        credentials_file: None,
        tls_ca_file: None,
        replicas: 3,
        lease_ttl: Duration::from_secs(2),
    }
}

async fn node(cluster: &NatsCluster, name: &str) -> TestServer {
    let settings = settings(cluster, name);
    TestServer::start_with(move |config| config.cluster = Some(settings)).await
}

/// Creates `group` through node `a`'s admin and makes sure the cluster's
/// directory has it.
async fn create_group(cluster: &NatsCluster, a: &mut TestServer, group: &str) {
    a.create_group(group).await;
    let record = a
        .server()
        .hub()
        .store
        .group(&gid(group))
        .expect("read")
        .expect("created");
    let nats = cluster.connect(0, "test").await;
    let config = DirectoryConfig::default();
    let directory = opened("directory", || Directory::open(&nats, &config)).await;
    directory.put_group(&record).await.expect("directory");
}

#[tokio::test]
async fn members_on_two_nodes_see_one_gap_free_order() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut on_b = b.login(&sky).await;
        let joined = on_b.join("circle", "Sky", None).await;
        assert_eq!(
            joined.members.len(),
            2,
            "both members listed through node b"
        );

        // Posts from both nodes, each waiting for its ack.
        let mut acked = Vec::new();
        for round in 0..5 {
            acked.push(on_a.post("circle", &format!("a{round}")).await);
            acked.push(on_b.post("circle", &format!("b{round}")).await);
        }
        assert_eq!(acked, (1..=10).collect::<Vec<u64>>(), "acks in order");
        // Each member sees all ten, in one order, gap-free.
        for client in [&mut on_a, &mut on_b] {
            let mut seen = Vec::new();
            while seen.len() < 10 {
                let event = client.next_event("circle").await;
                seen.push((event.seq, event.verified_body()));
            }
            let expected: Vec<(u64, String)> = (0..5)
                .flat_map(|r| [format!("a{r}"), format!("b{r}")])
                .enumerate()
                .map(|(i, body)| (i as u64 + 1, body))
                .collect();
            assert_eq!(seen, expected);
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn when_the_serving_node_stops_the_other_serves_the_group_from_the_log() {
    let Some(cluster) = NatsCluster::start().await else {
        eprintln!("skipped: no nats-server (TEST_NATS_SERVER)");
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut a = node(&cluster, "a").await;
        let b = node(&cluster, "b").await;
        create_group(&cluster, &mut a, "circle").await;
        let (river, sky) = (Identity::generate(), Identity::generate());
        let mut on_a = a.login(&river).await;
        on_a.join("circle", "River", None).await;
        let mut on_b = b.login(&sky).await;
        on_b.join("circle", "Sky", None).await;
        for round in 0..3 {
            on_a.post("circle", &format!("a{round}")).await;
            on_b.post("circle", &format!("b{round}")).await;
        }

        // Node a stops: its connections close, and so does Sky's on b, whose
        // group was served there.
        a.shutdown().await;
        let closed = on_b.expect_closed().await;
        drop(closed);

        // Sky comes back on b, which now serves the group from the log.
        let mut again = b.login(&sky).await;
        let joined = again.join("circle", "Sky", None).await;
        assert_eq!(joined.head, 6, "every acknowledged post is there");
        let bodies: Vec<String> = joined.history.iter().map(|e| e.verified_body()).collect();
        assert_eq!(bodies, ["a0", "b0", "a1", "b1", "a2", "b2"]);
        let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=6).collect::<Vec<u64>>());
        // The next post takes the next seq: none is used twice.
        assert_eq!(again.post("circle", "after").await, 7);
        let reply = again
            .recv_matching(|f| matches!(f, ServerFrame::Event { .. }))
            .await
            .expect("the post's event");
        drop(reply);
    })
    .await
    .expect("bounded");
}
