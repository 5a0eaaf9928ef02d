//! Crash safety: acknowledged means durable, through repeated `kill -9`.
//!
//! The real `peerhub` binary is killed with SIGKILL at least 20 times while signed
//! messages and distress flags flow at a steady rate, and restarted on the same data
//! folder each time. Afterwards every acknowledged message must be there, in order,
//! with gap-free seqs, every acknowledged flag must be in an escalation, and every
//! escalation still waiting must have its deadline re-armed.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, EscalationStatus, Severity};
use peerhub_protocol::payload::{FlagPayload, InviteRole, PostPayload};
use peerhub_protocol::{ClientFrame, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Client, Identity, ProcessServer};

const CYCLES: usize = 20;
const SENDERS: usize = 2;

/// Flags first, then posts (and every fifth round a flag) at a steady pace until the
/// connection dies; counts every acknowledgement in `acks`. Returns acknowledged
/// posts (counter → seq) and acknowledged flags (the sender's references).
async fn send_until_killed(
    mut client: Client,
    me: Identity,
    acks: Arc<AtomicUsize>,
) -> (BTreeMap<u64, u64>, Vec<String>) {
    let mut posts = BTreeMap::new();
    let mut flags = Vec::new();
    for round in 0u64.. {
        let frame = if round % 5 == 0 {
            let env = me.signed(Kind::Flag, |counter, ts| FlagPayload {
                group: gid("crash"),
                about: me.key(),
                seq: None,
                severity: Severity::Concern,
                consent: Consent::Own,
                reason: None,
                withhold_notice: None,
                note: None,
                counter,
                ts,
            });
            ClientFrame::Flag {
                id: None,
                group: gid("crash"),
                env,
            }
        } else {
            let env = me.post("crash", &format!("steady {round}"));
            ClientFrame::Post {
                id: None,
                group: gid("crash"),
                env,
            }
        };
        let counter = match &frame {
            ClientFrame::Post { env, .. } => env.payload_as::<PostPayload>().unwrap().counter,
            _ => 0,
        };
        let id = client.next_id();
        let frame = match frame {
            ClientFrame::Post { group, env, .. } => ClientFrame::Post {
                id: Some(id),
                group,
                env,
            },
            ClientFrame::Flag { group, env, .. } => ClientFrame::Flag {
                id: Some(id),
                group,
                env,
            },
            other => other,
        };
        let sent = tokio::time::timeout(Duration::from_secs(5), async {
            client.send(&frame).await;
            client.try_reply_to(id).await
        })
        .await;
        match sent {
            Ok(Ok(ServerFrame::Ack {
                seq, counter: c, ..
            })) => {
                assert_eq!(c, counter);
                posts.insert(counter, seq);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(ServerFrame::Flagged { reference, .. })) => {
                flags.push(reference);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(other)) => panic!("unexpected reply {other:?}"),
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (posts, flags)
}

async fn connect_member(addr: std::net::SocketAddr, me: &Identity) -> Client {
    let mut client = Client::connect(addr).await;
    client.login(me).await;
    client.join("crash", "Steady", Some(u64::MAX)).await;
    client
}

#[tokio::test]
async fn twenty_kill_9_cycles_lose_no_acknowledged_message_or_flag() {
    kill_9_cycles(&[], |_| {}).await;
}

/// The same on the current-thread runtime (`runtime = "current_thread"`, what
/// `auto` takes on one CPU): one thread runs every session and group task, and
/// acknowledged still means durable.
#[tokio::test]
async fn twenty_kill_9_cycles_on_the_current_thread_runtime_lose_nothing() {
    kill_9_cycles(&[("PEERHUB_RUNTIME", "current_thread")], |pid| {
        let names = thread_names(pid);
        assert!(
            !names.iter().any(|n| n.starts_with("tokio-")),
            "no work-stealing workers: {names:?}"
        );
    })
    .await;
}

/// `runtime = "auto"` (the default) takes the current-thread runtime when the
/// hub may run on one CPU only, and `multi_thread` keeps the work-stealing one
/// there; a name outside the three is refused by key.
#[tokio::test]
async fn the_runtime_key_chooses_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let pinned =
        ProcessServer::start_wrapped(&dir.path().join("a"), &[], "warn", &["taskset", "-c", "0"])
            .await;
    let names = thread_names(pinned.pid());
    assert!(
        !names.iter().any(|n| n.starts_with("tokio-")),
        "auto on one CPU: current-thread runtime, {names:?}"
    );
    let chosen = ProcessServer::start_env(
        &dir.path().join("b"),
        &[],
        &[("PEERHUB_RUNTIME", "multi_thread")],
    )
    .await;
    let names = thread_names(chosen.pid());
    assert!(
        names.iter().any(|n| n.starts_with("tokio-")),
        "multi_thread: work-stealing workers, {names:?}"
    );
    let refused = std::process::Command::new(peerhub_tests::process::binary())
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("c"))
        .env("PEERHUB_RUNTIME", "tokio")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("runtime must be"), "{said}");
}

/// The names of a process's threads (`/proc/PID/task/*/comm`).
pub(crate) fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// Kills the hub 20 times while posts and flags flow; `check` looks at each
/// fresh process (by pid) before its traffic starts.
async fn kill_9_cycles(env: &[(&str, &str)], check: impl Fn(u32)) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Long deadlines: escalations must still be waiting (and re-armed) at the end.
    let args = ["--deadline-concern-ms", "3600000"];
    let mut process = ProcessServer::start_env(&data, &args, env).await;
    check(process.pid());
    let mut admin = process.admin().await;
    admin.create_group("crash", "Crash").await;
    let token = admin.invite(InviteRole::Supervisor, None).await;
    let (supervisor, sup) = process.redeemed(&token).await;
    drop((admin, sup));

    let senders: Vec<Identity> = (0..SENDERS).map(|_| Identity::generate()).collect();
    let mut acked_posts: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(); SENDERS];
    let mut acked_flags: HashSet<String> = HashSet::new();
    let mut flag_acks = 0;
    for cycle in 0..CYCLES {
        let mut tasks = Vec::new();
        let acks = Arc::new(AtomicUsize::new(0));
        for me in &senders {
            let client = connect_member(process.addr, me).await;
            tasks.push(tokio::spawn(send_until_killed(
                client,
                me.clone(),
                acks.clone(),
            )));
        }
        // Every sender has had its first request (a flag) acknowledged before the
        // clock for the kill starts, however slow the machine is.
        let started = tokio::time::Instant::now();
        while acks.load(Ordering::SeqCst) < SENDERS && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Vary the moment of the kill so it lands at different points of a commit.
        tokio::time::sleep(Duration::from_millis(150 + (cycle as u64 * 37) % 200)).await;
        process.signal("KILL");
        process.wait().await;
        for (i, task) in tasks.into_iter().enumerate() {
            let (posts, flags) = task.await.unwrap();
            acked_posts[i].extend(posts);
            flag_acks += flags.len();
            acked_flags.extend(flags);
        }
        process = ProcessServer::start_env(&data, &args, env).await;
        check(process.pid());
    }

    // Everything acknowledged is there, in order, gap-free.
    let mut reader = Client::connect(process.addr).await;
    reader.login(&Identity::generate()).await;
    let joined = reader.join("crash", "Reader", Some(0)).await;
    let seqs: Vec<u64> = joined.history.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=joined.head).collect::<Vec<_>>(),
        "gap-free after {CYCLES} crashes"
    );
    let acknowledged: usize = acked_posts.iter().map(BTreeMap::len).sum();
    let mut lost = 0;
    for (me, posts) in senders.iter().zip(&acked_posts) {
        let mut previous = 0;
        for (counter, seq) in posts {
            let kept = joined.history.iter().find(|e| e.seq == *seq).map(|e| {
                let env = e.envelope();
                env.verify().unwrap();
                env.key == me.key() && env.payload_as::<PostPayload>().unwrap().counter == *counter
            });
            if kept != Some(true) {
                lost += 1;
            }
            assert!(*seq > previous, "one sender's messages keep their order");
            previous = *seq;
        }
    }
    // Every acknowledged flag is in an escalation, still waiting, deadline re-armed.
    let mut sup = Client::connect(process.addr).await;
    sup.login(&supervisor).await;
    let listed = sup
        .request(|id| ClientFrame::Escalations { id, after: None })
        .await;
    let ServerFrame::Escalations { escalations, .. } = listed else {
        panic!("{listed:?}")
    };
    // Each sender flagged themselves: their own list, by their references.
    let mut open: HashSet<String> = HashSet::new();
    for me in &senders {
        let mut client = Client::connect(process.addr).await;
        client.login(me).await;
        let listed = client
            .request(|id| ClientFrame::Escalations { id, after: None })
            .await;
        let ServerFrame::Escalations { escalations, .. } = listed else {
            panic!("{listed:?}")
        };
        open.extend(escalations.into_iter().filter_map(|e| e.reference));
    }
    let lost_flags = acked_flags.iter().filter(|r| !open.contains(*r)).count();
    for escalation in &escalations {
        assert_eq!(escalation.status, EscalationStatus::Open);
        assert!(
            escalation.deadline_ms.is_some(),
            "deadline re-armed after restart"
        );
    }
    println!(
        "crash loop: {CYCLES} kill -9 cycles; messages acknowledged {acknowledged}, recovered {}, lost {lost}; \
         flags acknowledged {flag_acks} (merged into {} escalations), escalations lost {lost_flags}",
        acknowledged - lost,
        acked_flags.len()
    );
    assert!(
        flag_acks >= CYCLES * SENDERS,
        "every cycle starts with a flag per sender ({flag_acks} acked)"
    );
    assert!(
        acknowledged > CYCLES * SENDERS,
        "the loop needs traffic ({acknowledged} acked)"
    );
    assert_eq!((lost, lost_flags), (0, 0));
}
