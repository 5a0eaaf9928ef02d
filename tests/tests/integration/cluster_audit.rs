//! The audit chain in cluster mode (issue 18: "audit verify works in cluster mode")
//! against a real three-node nats-server cluster on loopback: nodes appending at
//! once keep one chain that the one-node verifier accepts, through the loss of a
//! NATS server; a forged or removed entry is found where it is. Each test starts
//! its own cluster and is bounded in time.

use std::time::Duration;

use peerhub_server::audit::{action, BreakReason, NewEntry};
use peerhub_server::cluster::audit::{AuditConfig, ClusterAudit};
use peerhub_server::cluster::Nats;
use peerhub_tests::nats::NatsCluster;
use peerhub_tests::{now_ms, Identity};

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

/// Opens the chain's stream, waiting (up to 30 s) while JetStream elects leaders.
async fn open(nats: &Nats) -> ClusterAudit {
    let config = AuditConfig::default();
    peerhub_tests::nats::opened("the audit stream", || ClusterAudit::open(nats, &config)).await
}

/// An entry signed by `who`, as the hub records a facilitator's control.
fn entry(who: &Identity, n: u32) -> NewEntry {
    NewEntry::new(
        now_ms(),
        action::CONTROL_MUTE,
        who.post("circle", &format!("#{n}")),
    )
}

/// Three nodes, one per NATS server, append fifteen entries each at once; one
/// server is then killed and they append five more each. The chain holds 60
/// entries numbered 1 to 60, each seq handed out once, and the one-node verifier
/// accepts every link, hash and signature. Fails if appends did not name the tail
/// they linked to (two entries would then claim the same seq and prev).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_appending_at_once_keep_one_chain_through_a_server_kill() {
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let mut seqs = Vec::new();
        for (round, each) in [(0, 15), (1, 5)] {
            if round == 1 {
                cluster.kill("n3").await;
            }
            let mut nodes = Vec::new();
            for i in 0..3 {
                let chain = open(&cluster.connect(i, &format!("node-{i}")).await).await;
                let who = Identity::generate();
                nodes.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for n in 0..each {
                        mine.push(chain.append(entry(&who, n)).await.expect("appended"));
                    }
                    mine
                }));
            }
            for node in nodes {
                seqs.extend(node.await.expect("node"));
            }
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=60).collect::<Vec<u64>>());
        let chain = open(&cluster.connect(1, "auditor").await).await;
        let report = chain
            .verify()
            .await
            .expect("read the chain")
            .expect("the chain verifies");
        assert_eq!(report.entries, 60);
    })
    .await
    .expect("bounded");
}

/// An entry published past the append path (a forged one whose link is wrong),
/// and an entry deleted from the stream, are each reported at their seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_removed_entry_breaks_the_chain_where_it_is() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let nats = cluster.connect(0, "node").await;
        let chain = open(&nats).await;
        // An empty chain verifies, with nothing in it.
        assert_eq!(chain.verify().await.unwrap().unwrap().entries, 0);
        let who = Identity::generate();
        for n in 0..3 {
            chain.append(entry(&who, n)).await.unwrap();
        }
        assert_eq!(chain.verify().await.unwrap().unwrap().entries, 3);

        // Entry 4, encoded as if it followed entry 2: its `prev` is wrong.
        let (forged, _) = peerhub_server::audit::encode_entry(
            4,
            &peerhub_server::audit::EntryHash::GENESIS,
            entry(&who, 9),
        )
        .unwrap();
        let js = nats.jetstream();
        js.publish("peerhub.audit.chain", forged.into())
            .await
            .unwrap()
            .await
            .unwrap();
        let broken = chain.verify().await.unwrap().expect_err("a forged link");
        assert_eq!(broken.seq, 4);
        assert!(
            matches!(broken.reason, BreakReason::WrongPrev { .. }),
            "{broken:?}"
        );
        // The next honest append links to the forged tail, and the break stays
        // reported where it is.
        chain.append(entry(&who, 10)).await.unwrap();
        assert_eq!(chain.verify().await.unwrap().unwrap_err().seq, 4);

        // Entry 2 removed from the stream: the chain breaks at 2.
        let stream = js.get_stream("PEERHUB_AUDIT").await.unwrap();
        assert!(stream.delete_message(2).await.unwrap());
        let broken = chain.verify().await.unwrap().expect_err("a removed entry");
        assert_eq!(broken.seq, 2, "{broken:?}");
    })
    .await
    .expect("bounded");
}
