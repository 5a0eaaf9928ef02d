//! Plain HTTP on the same port: health, the client's pages and their headers.

use std::net::SocketAddr;

use peerhub_tests::TestServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One HTTP/1.1 GET over a fresh socket: (status, headers lower-cased, body).
pub(crate) async fn get(
    addr: SocketAddr,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn healthz_answers_ok_once_the_server_accepts() {
    let server = TestServer::start().await;
    let (status, _, body) = get(server.addr, "/healthz", "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn the_client_is_served_with_strict_headers() {
    let server = TestServer::start().await;
    let (status, headers, body) = get(server.addr, "/", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "index.html served at /");
    let csp = header(&headers, "content-security-policy").expect("CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&headers, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    let (status, _, _) = get(server.addr, "/no/such/file.js", "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_path_is_refused() {
    let server = TestServer::start().await;
    let (status, _, _) = get(server.addr, "/ws", "").await;
    assert_eq!(status, 400);
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n";
    let (status, headers, _) = get(server.addr, "/ws", upgrade).await;
    assert_eq!(status, 426);
    assert_eq!(header(&headers, "sec-websocket-version"), Some("13"));
}
