//! Cluster mode's directory mirror (docs/CLUSTER.md §7, B) against a real
//! three-server nats-server cluster: what one node writes to the directory —
//! roles, grants and their revocation, groups, the invited lists — reaches another
//! node's sled store; a mirror stopped and started again resumes from its mark; a
//! NATS server killed meanwhile loses nothing; replay counters and invites stay in
//! the bucket; an unreadable value stops the mirror instead of being skipped.

use std::time::Duration;

use peerhub_protocol::frame::Role;
use peerhub_protocol::payload::{GroupKind, Retention};
use peerhub_server::cluster::directory::{Directory, DirectoryConfig};
use peerhub_server::cluster::mirror::{self, MIRROR};
use peerhub_server::cluster::{ClusterError, Nats};
use peerhub_server::store::records::GroupRecord;
use peerhub_server::store::Store;
use peerhub_tests::identity::{gid, Identity};
use peerhub_tests::nats::{opened, NatsCluster};
use tokio_util::sync::CancellationToken;

/// The bound on each test, cluster start included.
const BOUND: Duration = Duration::from_secs(120);

async fn open(nats: &Nats) -> Directory {
    let config = DirectoryConfig::default();
    opened("the directory bucket", || Directory::open(nats, &config)).await
}

fn group(id: &str) -> GroupRecord {
    GroupRecord {
        id: gid(id),
        title: format!("Group {id}"),
        kind: GroupKind::Virtual,
        created_ms: 1_000,
        created_by: None,
        created_env: None,
        access_code_hash: None,
        schedule: Vec::new(),
        retention: Retention::default(),
        waiting_room: false,
    }
}

/// Waits (within the test's bound) until `check` holds of `store`.
async fn until(store: &Store, what: &str, check: impl Fn(&Store) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check(store) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mirror never showed {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A mirror started after writes, while writes go on, after a stop and restart,
/// and across the kill of the bucket stream's leader, shows every change
/// another node made to accounts, grants, groups and invited lists, and its mark
/// moves on; it never copies counters. Fails if the mirror missed what was
/// written while it was stopped (a revocation among it), or stopped following
/// when the leader died (it did, before the mirror looked again at a consumer that
/// had gone quiet while the bucket moved on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_store_follows_the_directory_and_resumes_from_its_mark() {
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let writer = open(&cluster.connect(0, "node-a").await).await;
        let follower = open(&cluster.connect(1, "node-b").await).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (admin, facilitator, invited) = (
            Identity::generate().key(),
            Identity::generate().key(),
            Identity::generate().key(),
        );

        writer.grant_role(&admin, Role::Admin, 1).await.unwrap();
        assert!(writer.create_group(&group("circle")).await.unwrap());
        writer
            .grant_facilitator(&facilitator, &[gid("circle")], 1)
            .await
            .unwrap();
        writer.allow_member(&gid("circle"), &invited).await.unwrap();
        assert!(writer.accept_counter(&admin, 7).await.unwrap());

        let stop = CancellationToken::new();
        let run = {
            let (follower, store, stop) = (follower.clone(), store.clone(), stop.clone());
            tokio::spawn(async move { mirror::run(&follower, &store, stop).await })
        };
        until(&store, "the first writes", |s| {
            s.roles(&admin).unwrap() == vec![Role::Admin]
                && s.facilitates(&facilitator, &gid("circle")).unwrap()
                && s.group(&gid("circle")).unwrap() == Some(group("circle"))
                && s.is_allowed(&gid("circle"), &invited).unwrap()
        })
        .await;
        assert_eq!(
            store.counter(&admin).unwrap(),
            0,
            "counters stay in the bucket"
        );

        writer.set_account_name(&facilitator, "Sam").await.unwrap();
        until(&store, "a name given later", |s| {
            s.account(&facilitator).unwrap().and_then(|a| a.name) == Some("Sam".into())
        })
        .await;

        stop.cancel();
        run.await.unwrap().expect("stopped cleanly");
        let mark = store.mirror_applied(MIRROR).unwrap();
        assert!(mark > 0);

        // While nobody mirrors: a revocation and a new group.
        assert!(writer
            .revoke_facilitator(&facilitator, &gid("circle"))
            .await
            .unwrap());
        assert!(writer.create_group(&group("circle2")).await.unwrap());

        let stop = CancellationToken::new();
        let run = {
            let (follower, store, stop) = (follower.clone(), store.clone(), stop.clone());
            tokio::spawn(async move { mirror::run(&follower, &store, stop).await })
        };
        until(&store, "the revocation made while stopped", |s| {
            !s.facilitates(&facilitator, &gid("circle")).unwrap()
                && s.group(&gid("circle2")).unwrap().is_some()
        })
        .await;
        assert!(store.mirror_applied(MIRROR).unwrap() > mark);

        // The bucket stream's leader dies (with it, often, the mirror's consumer,
        // which then goes quiet rather than failing); writes go on.
        let leader = cluster.stream_leader("KV_peerhub_directory").await;
        cluster.kill(&leader).await;
        let others: Vec<_> = (0..5).map(|_| Identity::generate().key()).collect();
        for key in &others {
            peerhub_tests::nats::opened("a grant while a server is down", || {
                writer.grant_role(key, Role::Supervisor, 2)
            })
            .await;
        }
        until(&store, "the grants made after the kill", |s| {
            others
                .iter()
                .all(|k| s.roles(k).unwrap() == vec![Role::Supervisor])
        })
        .await;
        stop.cancel();
        run.await.unwrap().expect("stopped cleanly");
    })
    .await
    .expect("test bound");
}

/// An unreadable account value stops the mirror with `Corrupt`; the store keeps
/// what it had and the mark stays before the bad value, so a mirror started again
/// (after an operator repaired it) does not skip it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_value_stops_the_mirror_and_is_not_skipped() {
    let Some(cluster) = NatsCluster::start().await else {
        return;
    };
    tokio::time::timeout(BOUND, async {
        let nats = cluster.connect(0, "node").await;
        let directory = open(&nats).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Identity::generate().key();
        directory.grant_role(&key, Role::Admin, 1).await.unwrap();
        let stop = CancellationToken::new();
        let run = {
            let (directory, store, stop) = (directory.clone(), store.clone(), stop.clone());
            tokio::spawn(async move { mirror::run(&directory, &store, stop).await })
        };
        until(&store, "the grant", |s| {
            s.roles(&key).unwrap() == vec![Role::Admin]
        })
        .await;
        let mark = store.mirror_applied(MIRROR).unwrap();

        nats.jetstream()
            .publish(
                format!("$KV.peerhub_directory.account.{}", hex::encode(key.0)),
                "not json".into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the mirror stops")
            .unwrap();
        assert!(
            matches!(stopped, Err(ClusterError::Corrupt { .. })),
            "{stopped:?}"
        );
        assert_eq!(
            store.roles(&key).unwrap(),
            vec![Role::Admin],
            "kept as it was"
        );
        assert_eq!(
            store.mirror_applied(MIRROR).unwrap(),
            mark,
            "not past the bad value"
        );
        let again = mirror::run(&directory, &store, CancellationToken::new()).await;
        assert!(
            matches!(again, Err(ClusterError::Corrupt { .. })),
            "{again:?}"
        );
    })
    .await
    .expect("test bound");
}
