//! The edges of the wire a second implementation meets (issue 19, item 5): the
//! request `id` echoed wherever it can be read, an unknown envelope kind, binary
//! messages, and WebSocket protocol errors answered with the close code RFC 6455
//! names (PROTOCOL.md §3, §7.23, §10).

use std::net::SocketAddr;
use std::time::Duration;

use peerhub_protocol::{ClientFrame, ErrorCode, ServerFrame};
use peerhub_tests::identity::gid;
use peerhub_tests::{Client, Identity, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn joined() -> (TestServer, Identity, Client) {
    let mut server = TestServer::start().await;
    server.create_group("circle").await;
    let me = Identity::generate();
    let mut client = server.login(&me).await;
    client.join("circle", "Sender", None).await;
    (server, me, client)
}

fn post_json(me: &Identity, id: u64) -> serde_json::Value {
    let frame = ClientFrame::Post {
        id: Some(id),
        group: gid("circle"),
        env: me.post("circle", "hello"),
    };
    serde_json::from_str(&frame.to_json()).unwrap()
}

#[tokio::test]
async fn the_id_is_echoed_when_another_field_is_duplicated_or_holds_a_lone_surrogate() {
    let (server, me, mut client) = joined().await;
    let before = server.hub().store.digest().unwrap();
    // A duplicated field (`group`), the rest a good post.
    let good = post_json(&me, 7).to_string();
    let twice = good.replacen(
        r#""group":"circle""#,
        r#""group":"circle","group":"circle""#,
        1,
    );
    assert_ne!(twice, good);
    client
        .expect_error(twice, Some(7), ErrorCode::Malformed)
        .await;
    // A lone surrogate in the payload string.
    let mut frame = post_json(&me, 8);
    frame["env"]["payload"] = "PLACEHOLDER".into();
    let lone = frame.to_string().replace("PLACEHOLDER", r"\ud800");
    client
        .expect_error(lone, Some(8), ErrorCode::Malformed)
        .await;
    // A lone surrogate in a field the frame does not define.
    let stray = r#"{"type":"leave","id":9,"group":"circle","x":"\udfff"}"#;
    client
        .expect_error(stray, Some(9), ErrorCode::Malformed)
        .await;
    // A lone surrogate in `type`, or in a key: the id is still read.
    let bad_type = r#"{"type":"\ud800","id":13}"#;
    client
        .expect_error(bad_type, Some(13), ErrorCode::Malformed)
        .await;
    let bad_key = r#"{"type":"leave","\udc00":1,"id":14,"group":"circle"}"#;
    client
        .expect_error(bad_key, Some(14), ErrorCode::Malformed)
        .await;
    // `type` twice: malformed, with the id. `id` twice: ambiguous, no id.
    let type_twice = r#"{"type":"leave","type":"leave","id":10,"group":"circle"}"#;
    client
        .expect_error(type_twice, Some(10), ErrorCode::Malformed)
        .await;
    let id_twice = r#"{"type":"leave","id":11,"id":12,"group":"circle"}"#;
    client
        .expect_error(id_twice, None, ErrorCode::Malformed)
        .await;
    assert_eq!(
        server.hub().store.digest().unwrap(),
        before,
        "nothing changed"
    );
    client.post("circle", "still here").await;
}

#[tokio::test]
async fn an_unknown_envelope_kind_is_malformed_and_a_known_other_kind_is_wrong_kind() {
    let (server, me, mut client) = joined().await;
    let before = server.hub().store.digest().unwrap();
    let mut frame = post_json(&me, 3);
    frame["env"]["kind"] = "teleport".into();
    client
        .expect_error(frame.to_string(), Some(3), ErrorCode::Malformed)
        .await;
    let mut frame = post_json(&me, 4);
    frame["env"]["kind"] = "report".into();
    client
        .expect_error(frame.to_string(), Some(4), ErrorCode::WrongKind)
        .await;
    assert_eq!(server.hub().store.digest().unwrap(), before);
}

#[tokio::test]
async fn a_binary_message_is_malformed_without_id_and_the_connection_stays() {
    let (_server, _me, mut client) = joined().await;
    client
        .send_binary(br#"{"type":"leave","id":5,"group":"circle"}"#.to_vec())
        .await;
    match client
        .recv_matching(|f| matches!(f, ServerFrame::Error { .. }))
        .await
    {
        Ok(ServerFrame::Error { id, code, .. }) => {
            assert_eq!(code, ErrorCode::Malformed);
            assert_eq!(id, None);
        }
        other => panic!("{other:?}"),
    }
    client.post("circle", "the connection stays").await;
}

/// A WebSocket opened by hand over TCP, so that frames RFC 6455 forbids can be sent;
/// the `hello` is read.
async fn raw_socket(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let (opcode, _) = read_frame(&mut tcp).await.expect("hello");
    assert_eq!(opcode, 0x1, "hello is text");
    tcp
}

/// One server frame (never masked): its opcode and payload; `None` when the
/// connection ended.
async fn read_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let first = tcp.read_u8().await.ok()?;
    let second = tcp.read_u8().await.ok()?;
    let len = match second & 0x7f {
        126 => u64::from(tcp.read_u16().await.ok()?),
        127 => tcp.read_u64().await.ok()?,
        n => u64::from(n),
    };
    let mut payload = vec![0; usize::try_from(len).unwrap()];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((first & 0x0f, payload))
}

/// The close code the server sends after `bytes`, or `None` if it only dropped
/// the connection.
async fn close_code_after(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut tcp = raw_socket(addr).await;
    tcp.write_all(bytes).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((opcode, payload)) = read_frame(&mut tcp).await {
            if opcode == 0x8 {
                return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
        None
    })
    .await
    .expect("the server answers in time")
}

/// A client frame, masked with a zero key unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let len = u8::try_from(payload.len()).unwrap();
    assert!(len < 126);
    let mut out = vec![first, if masked { 0x80 | len } else { len }];
    if masked {
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn websocket_protocol_errors_get_the_close_code_rfc_6455_names() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let text = br#"{"type":"rota"}"#;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked client frame", frame(0x81, text, false), 1002),
        ("reserved bits set", frame(0x81 | 0x40, text, true), 1002),
        ("unknown opcode", frame(0x83, text, true), 1002),
        ("fragmented ping", frame(0x09, b"hi", true), 1002),
        (
            "continuation without a start",
            frame(0x80, text, true),
            1002,
        ),
        (
            "text that is not UTF-8",
            frame(0x81, b"{\"type\":\"\xff\"}", true),
            1007,
        ),
    ];
    for (what, bytes, code) in cases {
        assert_eq!(
            close_code_after(addr, &bytes).await,
            Some(code),
            "{what}: the close code"
        );
    }
}
