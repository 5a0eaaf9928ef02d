//! History on join is bounded like live events: a client that asks for a long
//! history and stops reading holds at most its outbox, is closed as a slow
//! consumer, and resumes from its last seq; a reading client gets all of it.

use std::time::Duration;

use peerhub_protocol::frame::Channel;
use peerhub_protocol::payload::GroupKind;
use peerhub_protocol::{ClientFrame, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Client, Identity, ProcessServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The outbox bound the server runs with here.
const OUTBOX_BYTES: u64 = 128 * 1024;
/// Posts in the history: about 4 MiB of frames, 32 times the outbox.
const POSTS: u64 = 1_000;
/// Clients that ask for all of it and never read.
const SILENT: usize = 30;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One counter from `GET /metrics`.
async fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Logs in and sends `join` with `after`; returns the client once `joined` came
/// (the history follows, unread).
async fn join_after(addr: std::net::SocketAddr, me: &Identity, after: u64) -> (Client, u64) {
    let mut client = Client::connect(addr).await;
    client.login(me).await;
    let env = me.join("long", "Reader");
    let reply = client
        .request(|id| ClientFrame::Join {
            id,
            group: gid("long"),
            after: Some(after),
            access_code: None,
            env,
        })
        .await;
    let ServerFrame::Joined { head, .. } = reply else {
        panic!("join refused: {reply:?}");
    };
    (client, head)
}

/// Reads main-channel events until `head` or the close; checks they follow on
/// from `after` without a gap and returns the last seq.
async fn read_in_order(client: &mut Client, after: u64, head: u64) -> u64 {
    let mut last = after;
    while last < head {
        match client.recv().await {
            Ok(ServerFrame::Event {
                channel: Channel::Main,
                seq,
                ..
            }) => {
                assert_eq!(seq, last + 1, "history without a gap");
                last = seq;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    last
}

/// Reproduction 5 of issue 13: a client that joined with `after: 0` and stopped
/// reading held ~4 MB of history pages outside its outbox and was never closed as
/// a slow consumer.
#[tokio::test]
async fn an_unread_history_holds_at_most_the_outbox_and_is_closed_as_slow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("peerhub.toml");
    std::fs::write(
        &config,
        format!("[limits]\noutbox_bytes = {OUTBOX_BYTES}\nmax_connections_per_key = 64\n"),
    )
    .unwrap();
    let process = ProcessServer::start(&data, &["--config", config.to_str().unwrap()]).await;
    let addr = process.addr;
    let mut admin = process.admin().await;
    let me = admin.identity.clone().unwrap();
    let env = me.create_group_with("long", "Long history", GroupKind::DropIn, |g| {
        g.waiting_room = Some(false)
    });
    let reply = admin
        .request(|id| ClientFrame::CreateGroup {
            id,
            access_code: None,
            env,
        })
        .await;
    assert!(
        matches!(reply, ServerFrame::GroupCreated { .. }),
        "{reply:?}"
    );
    admin.join("long", "Sam", None).await;
    let body = "x".repeat(3_900);
    for start in (0..POSTS).step_by(16) {
        let mut ids = Vec::new();
        for _ in start..(start + 16).min(POSTS) {
            let env = me.post("long", &body);
            let id = admin.next_id();
            admin
                .send(&ClientFrame::Post {
                    id: Some(id),
                    group: gid("long"),
                    env,
                })
                .await;
            ids.push(id);
        }
        for id in ids {
            let reply = admin.reply_to(id).await;
            assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
        }
    }

    let pid = process.pid();
    let slow_before = metric(addr, "peerhub_slow_client_disconnects_total").await;
    let start = rss_kib(pid);
    let reader = Identity::generate();
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(join_after(addr, &reader, 0).await);
    }
    let head = silent[0].1;
    assert_eq!(head, POSTS);
    // The server must close every silent client by itself, within a bounded time.
    let mut peak = rss_kib(pid);
    let waited = tokio::time::Instant::now();
    let mut closed = 0;
    while waited.elapsed() < Duration::from_secs(45) {
        peak = peak.max(rss_kib(pid));
        closed = metric(addr, "peerhub_slow_client_disconnects_total").await - slow_before;
        if closed >= SILENT as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = waited.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let per_conn = peak.saturating_sub(start) / SILENT as u64;
    println!(
        "unread history: server RSS {start} KiB -> peak {peak} KiB (+{per_conn} KiB per connection) \
         -> {after} KiB after the closes; outbox bound {} KiB; {closed} closed as slow in {took:?}",
        OUTBOX_BYTES / 1024
    );
    assert_eq!(
        closed, SILENT as u64,
        "every client that stopped reading its history is closed as a slow consumer"
    );
    assert!(
        per_conn * 1024 <= 3 * OUTBOX_BYTES,
        "an unread history holds about the outbox bound, not a page of history: \
         {per_conn} KiB per connection"
    );

    // A closed client resumes from its last seq and gets the rest without a gap.
    let (mut first, _) = silent.remove(0);
    let last = read_in_order(&mut first, 0, head).await;
    assert!(last < head, "it was cut off before the end ({last})");
    let (mut resumed, _) = join_after(addr, &reader, last).await;
    assert_eq!(read_in_order(&mut resumed, last, head).await, head);
    drop(silent);

    // A client that reads gets the whole history, in order, without a gap.
    let (mut reading, _) = join_after(addr, &Identity::generate(), 0).await;
    assert_eq!(read_in_order(&mut reading, 0, head).await, head);
}
