//! The waiting room: it never closes a group to newcomers. The member cap counts
//! people in the room (admitted this session, and staff), not every key that ever
//! knocked; waiting-only records expire and can be cleared; the waiting room has
//! its own cap; and a person waiting keeps the help path (flag, private line).

use std::time::Duration;

use peerhub_protocol::envelope::Kind;
use peerhub_protocol::escalation::{Consent, Severity};
use peerhub_protocol::frame::{MemberStatus, Role};
use peerhub_protocol::payload::{ControlAction, FlagPayload};
use peerhub_protocol::{ClientFrame, ErrorCode, PublicKey, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Client, Identity, TestServer};

/// `n` throw-away keys each knock once (connect, log in, join, go), `workers` at
/// a time.
async fn throw_away_joins(server: &TestServer, group: &'static str, n: usize, workers: usize) {
    let addr = server.addr;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        tasks.push(tokio::spawn(async move {
            for _ in (worker..n).step_by(workers) {
                let me = Identity::generate();
                let mut client = Client::connect(addr).await;
                client.login(&me).await;
                let env = me.join(group, "Passing");
                let reply = client
                    .request(|id| ClientFrame::Join {
                        id,
                        group: gid(group),
                        after: None,
                        access_code: None,
                        env,
                    })
                    .await;
                // Let into the waiting room, or told it is full: nothing else.
                assert!(
                    matches!(
                        reply,
                        ServerFrame::Joined { .. }
                            | ServerFrame::Error {
                                code: peerhub_protocol::ErrorCode::WaitingRoomFull,
                                ..
                            }
                    ),
                    "{reply:?}"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// A new person knocks, the facilitator admits them, and they are in the room.
async fn newcomer_is_admitted(server: &TestServer, fac: &mut Client, group: &str) {
    let me = Identity::generate();
    let mut newcomer = server.login(&me).await;
    let joined = newcomer.join(group, "Newcomer", None).await;
    assert_eq!(joined.status, MemberStatus::Waiting);
    let reply = fac
        .control(group, ControlAction::Admit { member: me.key() })
        .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    let frame = newcomer
        .recv_matching(|f| matches!(f, ServerFrame::Joined { id: None, .. }))
        .await
        .unwrap();
    let ServerFrame::Joined { status, .. } = frame else {
        unreachable!()
    };
    assert_eq!(status, MemberStatus::Admitted);
    newcomer.post(group, "hello, first time here").await;
}

/// Reproduction 3 of issue 13: 999 throw-away joins closed a drop-in group to
/// every newcomer (`full`), also after a restart.
#[tokio::test]
async fn a_thousand_throw_away_joins_do_not_close_the_group_to_newcomers() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("drop-in", |g| g.waiting_room = Some(true))
        .await;
    let (fac_id, fac) = server.with_role(Role::Facilitator).await;
    drop(fac);

    throw_away_joins(&server, "drop-in", 1_000, 8).await;
    // The knocks were taken, and what the group keeps of them is bounded by the
    // waiting room's cap (and the facilitator's record).
    let kept = records(&server, "drop-in").len();
    let cap = peerhub_server::limits::LimitSettings::default().max_waiting_per_group;
    assert!(kept > 1 && kept <= cap + 1, "{kept} records kept");
    // The facilitator comes to run the session (a client that was not reading
    // during the flood would be dropped as slow, which is right but not tested here).
    let mut fac = server.login(&fac_id).await;
    fac.join("drop-in", "Jo", None).await;
    newcomer_is_admitted(&server, &mut fac, "drop-in").await;

    drop(fac);
    let server = server.restart().await;
    let mut fac = server.login(&fac_id).await;
    fac.join("drop-in", "Jo", None).await;
    newcomer_is_admitted(&server, &mut fac, "drop-in").await;
}

/// The actions in a store's audit chain, in order.
fn audited(store: &peerhub_server::store::Store) -> Vec<String> {
    peerhub_server::audit::entries(store)
        .map(|e| e.unwrap().action)
        .collect()
}

/// Every member record the store holds for `group`.
fn records(server: &TestServer, group: &str) -> Vec<PublicKey> {
    server
        .hub()
        .store
        .members(&gid(group))
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

/// Logs in a fresh key and knocks on `group`'s waiting room; returns both.
async fn knock(server: &TestServer, group: &str, name: &str) -> (Identity, Client) {
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    assert_eq!(
        client.join(group, name, None).await.status,
        MemberStatus::Waiting
    );
    (me, client)
}

/// Waits (up to 10 s) until `check` holds on the group's records.
async fn until_records(server: &TestServer, group: &str, check: impl Fn(&[PublicKey]) -> bool) {
    for _ in 0..100 {
        if check(&records(server, group)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("records never matched: {:?}", records(server, group));
}

#[tokio::test]
async fn a_knock_by_someone_gone_expires_after_the_configured_time_and_at_session_end() {
    let mut server =
        TestServer::start_with(|c| c.limits.waiting_expiry = Duration::from_secs(600)).await;
    server
        .create_group_with("drop-in", |g| g.waiting_room = Some(true))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("drop-in", "Jo", None).await;
    let (gone_id, gone) = knock(&server, "drop-in", "Gone").await;
    drop(gone);
    let (here_id, mut here) = knock(&server, "drop-in", "Here").await;
    let (admitted_id, mut admitted) = knock(&server, "drop-in", "Admitted").await;
    let reply = fac
        .control(
            "drop-in",
            ControlAction::Admit {
                member: admitted_id.key(),
            },
        )
        .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");

    // Not yet: nothing expires before its time.
    server.clock.advance(590_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(records(&server, "drop-in").contains(&gone_id.key()));
    // Past it, the knock of the one who went is forgotten; the one still waiting
    // (connected), the admitted member and the facilitator are kept.
    server.clock.advance(20_000);
    until_records(&server, "drop-in", |r| !r.contains(&gone_id.key())).await;
    let kept = records(&server, "drop-in");
    for key in [here_id.key(), admitted_id.key(), fac_id.key()] {
        assert!(kept.contains(&key));
    }
    // Back to the clients' own time, so their signed requests are fresh again.
    server.clock.advance(-610_000);
    // The one still waiting can still speak to the facilitator privately.
    let env = here_id.private_post("drop-in", fac_id.key(), "are you there?");
    let reply = here
        .request(|id| ClientFrame::Post {
            id,
            group: gid("drop-in"),
            env,
        })
        .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");

    // When the session ends, every knock ends with it, connected or not; the
    // admitted member's record stays.
    let reply = fac.control("drop-in", ControlAction::EndSession).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    let kept = records(&server, "drop-in");
    assert!(!kept.contains(&here_id.key()), "{kept:?}");
    assert!(kept.contains(&admitted_id.key()) && kept.contains(&fac_id.key()));
    let dismissed = here
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await
        .unwrap();
    assert!(
        matches!(dismissed, ServerFrame::Dismissed { ref reason, .. } if reason == "session_ended")
    );
    let _ = admitted
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await;
}

#[tokio::test]
async fn the_waiting_room_has_a_cap_and_whoever_waits_keeps_the_help_path() {
    let mut server = TestServer::start_with(|c| c.limits.max_waiting_per_group = 2).await;
    server
        .create_group_with("drop-in", |g| g.waiting_room = Some(true))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("drop-in", "Jo", None).await;
    let (gone_id, gone) = knock(&server, "drop-in", "Gone").await;
    drop(gone);
    let (one_id, mut one) = knock(&server, "drop-in", "One").await;
    // Full of one connected and one gone: the gone one makes way for a newcomer.
    let gone_key = gone_id.key();
    fac.recv_matching(|f| {
        matches!(f, ServerFrame::Presence { member, .. } if member.key == gone_key && !member.online)
    })
    .await
    .expect("the facilitator sees them go");
    let (two_id, mut two) = knock(&server, "drop-in", "Two").await;
    let kept = records(&server, "drop-in");
    assert!(!kept.contains(&gone_id.key()) && kept.contains(&one_id.key()));
    // Full of people still here: a clear refusal, and nothing changes.
    let before = server.hub().store.digest().unwrap();
    let me = Identity::generate();
    let mut third = server.login(&me).await;
    let env = me.join("drop-in", "Three");
    let reply = third
        .request(|id| ClientFrame::Join {
            id,
            group: gid("drop-in"),
            after: None,
            access_code: None,
            env,
        })
        .await;
    assert!(
        matches!(
            reply,
            ServerFrame::Error {
                code: ErrorCode::WaitingRoomFull,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(server.hub().store.digest().unwrap(), before);

    // Waiting, not admitted: a flag still goes through, and so does a private
    // message to the facilitator.
    let env = one_id.signed(Kind::Flag, |counter, ts| FlagPayload {
        group: gid("drop-in"),
        about: one_id.key(),
        seq: None,
        severity: Severity::Urgent,
        consent: Consent::Own,
        reason: None,
        withhold_notice: None,
        note: None,
        counter,
        ts,
    });
    let reply = one
        .request(|id| ClientFrame::Flag {
            id,
            group: gid("drop-in"),
            env,
        })
        .await;
    assert!(matches!(reply, ServerFrame::Flagged { .. }), "{reply:?}");
    let env = two_id.private_post("drop-in", fac_id.key(), "I need to talk to someone");
    let reply = two
        .request(|id| ClientFrame::Post {
            id,
            group: gid("drop-in"),
            env,
        })
        .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
}

#[tokio::test]
async fn a_facilitator_clears_the_waiting_room_and_a_participant_cannot() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("drop-in", |g| g.waiting_room = Some(true))
        .await;
    let (fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("drop-in", "Jo", None).await;
    let (member_id, mut member) = knock(&server, "drop-in", "Member").await;
    let reply = fac
        .control(
            "drop-in",
            ControlAction::Admit {
                member: member_id.key(),
            },
        )
        .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    let _ = member
        .recv_matching(|f| matches!(f, ServerFrame::Joined { id: None, .. }))
        .await
        .unwrap();
    let (gone_id, gone) = knock(&server, "drop-in", "Gone").await;
    drop(gone);
    let (here_id, mut here) = knock(&server, "drop-in", "Here").await;

    // A participant in the room may not clear it: refused, nothing changes.
    let before = server.hub().store.digest().unwrap();
    let reply = member.control("drop-in", ControlAction::ClearWaiting).await;
    assert!(
        matches!(
            reply,
            ServerFrame::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{reply:?}"
    );
    // Nor may someone waiting.
    let reply = here.control("drop-in", ControlAction::ClearWaiting).await;
    assert!(
        matches!(
            reply,
            ServerFrame::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(server.hub().store.digest().unwrap(), before);

    // The facilitator clears it: written to the staff channel, audited, and the
    // one still connected is told and may knock again.
    let reply = fac.control("drop-in", ControlAction::ClearWaiting).await;
    let ServerFrame::Ack { channel, .. } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(channel, peerhub_protocol::frame::Channel::Staff);
    let kept = records(&server, "drop-in");
    assert!(!kept.contains(&gone_id.key()) && !kept.contains(&here_id.key()));
    assert!(kept.contains(&member_id.key()) && kept.contains(&fac_id.key()));
    let frame = here
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await
        .unwrap();
    assert!(
        matches!(frame, ServerFrame::Dismissed { ref reason, .. } if reason == "waiting_cleared"),
        "{frame:?}"
    );
    // The facilitator sees them leave the waiting room.
    let here_key = here_id.key();
    fac.recv_matching(|f| {
        matches!(f, ServerFrame::Presence { member, .. } if member.key == here_key && !member.online)
    })
    .await
    .unwrap();
    assert!(audited(&server.hub().store)
        .iter()
        .any(|a| a == "control.clear_waiting"));
    // Knocking again works; clearing an empty waiting room changes nothing.
    assert_eq!(
        here.join("drop-in", "Here", None).await.status,
        MemberStatus::Waiting
    );
    let reply = fac.control("drop-in", ControlAction::ClearWaiting).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    let reply = fac.control("drop-in", ControlAction::ClearWaiting).await;
    assert!(
        matches!(
            reply,
            ServerFrame::Error {
                code: ErrorCode::Invalid,
                ..
            }
        ),
        "{reply:?}"
    );
}

/// `peerhub group clear-waiting GROUP --data DIR`, as an operator runs it.
fn clear_waiting_command(data: &std::path::Path, group: &str) -> std::process::Output {
    std::process::Command::new(peerhub_tests::process::binary())
        .args(["group", "clear-waiting", "--data"])
        .arg(data)
        .arg(group)
        .output()
        .expect("run peerhub")
}

#[tokio::test]
async fn an_operator_clears_a_waiting_room_on_a_running_and_a_stopped_hub() {
    let mut server = TestServer::start().await;
    server
        .create_group_with("drop-in", |g| g.waiting_room = Some(true))
        .await;
    let (_, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("drop-in", "Jo", None).await;
    let (here_id, mut here) = knock(&server, "drop-in", "Here").await;
    let (gone_id, gone) = knock(&server, "drop-in", "Gone").await;
    drop(gone);

    // A running hub: through its control socket and the group's task.
    let data = server.data_dir().to_path_buf();
    let output = tokio::task::spawn_blocking({
        let data = data.clone();
        move || clear_waiting_command(&data, "drop-in")
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["cleared"], 2, "{printed}");
    let kept = records(&server, "drop-in");
    assert!(!kept.contains(&here_id.key()) && !kept.contains(&gone_id.key()));
    let frame = here
        .recv_matching(|f| matches!(f, ServerFrame::Dismissed { .. }))
        .await
        .unwrap();
    assert!(
        matches!(frame, ServerFrame::Dismissed { ref reason, .. } if reason == "waiting_cleared"),
        "{frame:?}"
    );
    // A group that does not exist: refused, nothing audited.
    let entries = audited(&server.hub().store).len();
    let output = tokio::task::spawn_blocking({
        let data = data.clone();
        move || clear_waiting_command(&data, "no-such-group")
    })
    .await
    .unwrap();
    assert!(!output.status.success(), "{output:?}");
    assert_eq!(audited(&server.hub().store).len(), entries);

    // A stopped hub: the command opens the folder itself.
    let (again_id, again) = knock(&server, "drop-in", "Again").await;
    drop(again);
    drop(here);
    drop(fac);
    server
        .while_stopped(|data| {
            let output = clear_waiting_command(data, "drop-in");
            assert!(output.status.success(), "{output:?}");
            let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(printed["cleared"], 1, "{printed}");
            let store = peerhub_server::store::Store::open(data).unwrap();
            let kept: Vec<PublicKey> = store
                .members(&gid("drop-in"))
                .unwrap()
                .into_iter()
                .map(|m| m.key)
                .collect();
            assert!(!kept.contains(&again_id.key()), "{kept:?}");
            let cleared = audited(&store)
                .iter()
                .filter(|a| *a == "group.clear_waiting")
                .count();
            assert_eq!(cleared, 2, "each clearing is audited");
        })
        .await;
}

/// Found while fixing issue 13: on admission the group task pushed up to 100 history
/// frames into the newcomer's outbox at once, so after a long conversation the
/// person just let in was closed as a slow consumer (4001) before reading a word.
/// The recent history sent on admission now fits the room left in their outbox.
#[tokio::test]
async fn admission_after_a_long_conversation_does_not_close_the_newcomer() {
    let mut server = TestServer::start_with(|c| c.outbox_bytes = 96 * 1024).await;
    server
        .create_group_with("long", |g| g.waiting_room = Some(true))
        .await;
    let (_fac_id, mut fac) = server.with_role(Role::Facilitator).await;
    fac.join("long", "Jo", None).await;
    let (_talker_id, mut talker) = knock(&server, "long", "Talker").await;
    let reply = fac
        .control(
            "long",
            ControlAction::Admit {
                member: _talker_id.key(),
            },
        )
        .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    // 60 messages of 3,000 characters: about 190 KiB of history, twice the outbox.
    let long = "a".repeat(3_000);
    let mut head = 0;
    for _ in 0..60 {
        head = talker.post("long", &long).await;
    }

    let (me, mut newcomer) = knock(&server, "long", "Newcomer").await;
    let reply = fac
        .control("long", ControlAction::Admit { member: me.key() })
        .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    newcomer
        .recv_matching(|f| matches!(f, ServerFrame::Joined { id: None, .. }))
        .await
        .expect("the newcomer hears they are in");
    // The most recent messages arrive, gap-free up to the head, and the newcomer
    // stays connected and can speak.
    let mut seqs = Vec::new();
    loop {
        let event = newcomer.next_event("long").await;
        seqs.push(event.seq);
        if event.seq >= head {
            break;
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    newcomer.post("long", "hello, I made it in").await;
}

/// Found while fixing issue 13: in a group without a waiting room every join is an
/// admission whose record stays, and `joined` listed every record. After a few
/// hundred throw-away keys had joined and agreed once, the `joined` a newcomer gets
/// on agreeing (pushed through their outbox) was larger than the outbox: every
/// genuine newcomer was closed 4001 the moment they agreed, and the facilitator got
/// a `joined` listing every throw-away key. `joined` now lists the people who
/// matter now (self, staff, waiting, online, sanctioned, authors of the recent
/// history) within a byte budget, and says how many there are in all.
#[tokio::test]
async fn throw_away_joins_do_not_make_joined_too_big_for_a_connection() {
    let mut server = TestServer::start_with(|c| c.outbox_bytes = 64 * 1024).await;
    server
        .create_group_with("open", |g| {
            g.waiting_room = Some(false);
            g.agreement = Some("Be kind.".into());
        })
        .await;
    let (fac_id, fac) = server.with_role(Role::Facilitator).await;
    drop(fac);
    let talker_id = Identity::generate();
    let mut talker = server.login(&talker_id).await;
    talker.join("open", "Talker", None).await;
    assert!(matches!(
        talker.agree("open", 1).await,
        ServerFrame::Ok { .. }
    ));
    let said = talker.post("open", "something worth reading later").await;
    drop(talker);

    // Each record in `joined` carries its signed join (about 200 bytes): 600 of
    // them are nearly twice the 64 KiB outbox.
    let addr = server.addr;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        tasks.push(tokio::spawn(async move {
            for _ in (worker..600).step_by(8) {
                let me = Identity::generate();
                let mut client = Client::connect(addr).await;
                client.login(&me).await;
                client.join("open", "Passing", None).await;
                let reply = client.agree("open", 1).await;
                assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    // A genuine newcomer agrees and is let in, with the names of who wrote the
    // history they are shown.
    let me = Identity::generate();
    let mut newcomer = server.login(&me).await;
    let joined = newcomer.join("open", "Newcomer", None).await;
    assert_eq!(joined.status, MemberStatus::NeedsAgreement);
    assert!(matches!(
        newcomer.agree("open", 1).await,
        ServerFrame::Ok { .. }
    ));
    let rejoined = newcomer
        .recv_matching(|f| matches!(f, ServerFrame::Joined { id: None, .. }))
        .await
        .expect("the newcomer is let in, not closed as a slow consumer");
    let ServerFrame::Joined {
        members,
        members_total,
        ..
    } = &rejoined
    else {
        unreachable!()
    };
    assert!(members.len() < 600, "{} listed", members.len());
    assert!(*members_total > members.len() as u64, "{members_total}");
    let joined = newcomer.joined_reply("open", None, rejoined).await;
    assert_eq!(joined.status, MemberStatus::Admitted);
    let post = joined
        .history
        .iter()
        .find(|e| e.seq == said)
        .expect("the talker's message is in the history");
    let author = post.envelope().key;
    let listed = joined
        .members
        .iter()
        .find(|m| m.key == author)
        .expect("the author of a history message is listed");
    assert_eq!(listed.name, "Talker");
    assert!(joined.members.iter().any(|m| m.key == me.key()));
    newcomer.post("open", "hello, I made it in").await;

    // The facilitator gets a bounded list that names the newcomer (online) and
    // can act.
    let mut fac = server.login(&fac_id).await;
    let env = fac_id.join("open", "Jo");
    let reply = fac
        .request(|id| ClientFrame::Join {
            id,
            group: gid("open"),
            after: None,
            access_code: None,
            env,
        })
        .await;
    let ServerFrame::Joined {
        members,
        members_total,
        ..
    } = &reply
    else {
        panic!("the facilitator is not let in: {reply:?}");
    };
    assert!(members.len() < 600, "{} listed", members.len());
    assert!(*members_total > members.len() as u64, "{members_total}");
    assert!(members.iter().any(|m| m.key == fac_id.key()));
    assert!(members.iter().any(|m| m.key == me.key() && m.online));
    fac.joined_reply("open", None, reply).await;
    let reply = fac
        .control(
            "open",
            ControlAction::Mute {
                member: me.key(),
                minutes: 5,
            },
        )
        .await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
}
