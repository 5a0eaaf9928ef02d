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

/// One raw HTTP/1.1 request `head` (request line and headers, no blank line) over a
/// fresh socket: (status, headers lower-cased).
///
/// Reads up to the end of the response's head, not to the end of the stream: an
/// upgrade answered 101 keeps the socket open as a WebSocket until the hub's login
/// timeout closes it, which waited 30 s per accepted upgrade for nothing the test
/// looks at.
async fn raw(addr: SocketAddr, head: &str) -> (u16, Vec<(String, String)>) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 1024];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// A WebSocket upgrade with the given Host and Origin: the status it gets.
pub(crate) async fn upgrade_status(addr: SocketAddr, host: &str, origin: &str) -> u16 {
    raw(
        addr,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        ),
    )
    .await
    .0
}

/// Issue 14 item 10: the Origin check trusted the Host header, so a DNS-rebinding
/// page (Host and Origin both its own name) was upgraded; the scheme was ignored.
#[tokio::test]
async fn origin_is_compared_with_the_hubs_own_origin_never_with_host() {
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://app.example.org".into()];
    })
    .await;
    let addr = server.addr;
    let port = addr.port();
    // The hub's own page, and the configured one, may connect.
    assert_eq!(
        upgrade_status(addr, &addr.to_string(), &format!("http://{addr}")).await,
        101
    );
    assert_eq!(
        upgrade_status(addr, &addr.to_string(), &format!("http://localhost:{port}")).await,
        101
    );
    assert_eq!(
        upgrade_status(addr, &addr.to_string(), "https://app.example.org").await,
        101
    );
    // DNS rebinding: evil.example resolved to 127.0.0.1; Host and Origin agree.
    let evil = format!("evil.example:{port}");
    let status = upgrade_status(addr, &evil, &format!("http://{evil}")).await;
    assert!(
        status == 421 || status == 403,
        "rebinding pair got {status}"
    );
    // The same page with a Host that names the hub is still refused by its Origin.
    assert_eq!(
        upgrade_status(addr, &addr.to_string(), &format!("http://{evil}")).await,
        403
    );
    // Scheme and port are compared.
    assert_eq!(
        upgrade_status(addr, &addr.to_string(), &format!("https://{addr}")).await,
        403
    );
    assert_eq!(
        upgrade_status(addr, &addr.to_string(), "http://app.example.org").await,
        403
    );
    assert_eq!(
        upgrade_status(
            addr,
            &addr.to_string(),
            &format!("http://127.0.0.1:{}", port + 1)
        )
        .await,
        403
    );
}

#[tokio::test]
async fn a_host_that_does_not_name_the_hub_is_refused() {
    let server =
        TestServer::start_with(|c| c.public_url = Some("https://hub.example.org/".into())).await;
    let addr = server.addr;
    for host in [
        addr.to_string(),
        format!("localhost:{}", addr.port()),
        "hub.example.org".into(),
        "hub.example.org:443".into(),
    ] {
        let (status, _) = raw(addr, &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n")).await;
        assert_eq!(status, 200, "{host}");
    }
    for host in [
        format!("evil.example:{}", addr.port()),
        "evil.example".into(),
        format!("127.0.0.1:{}", addr.port() + 1),
        "hub.example.org:80".into(),
    ] {
        for path in ["/healthz", "/", "/metrics"] {
            let (status, _) = raw(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n")).await;
            assert_eq!(status, 421, "{host} {path}");
        }
    }
}

/// Issue 14 item 10: a request relayed by a proxy that writes only X-Real-IP was
/// served the metrics as if from this machine.
#[tokio::test]
async fn metrics_refuse_any_relayed_request_and_honour_a_bearer_token() {
    let server = TestServer::start().await;
    for claim in [
        "X-Real-IP: 203.0.113.9\r\n",
        "Via: 1.1 proxy\r\n",
        "X-Forwarded-Host: hub.example.org\r\n",
        "True-Client-IP: 203.0.113.9\r\n",
    ] {
        let (status, _, _) = get(server.addr, "/metrics", claim).await;
        assert_eq!(status, 403, "relayed: {claim}");
    }
    let token = "a-long-scrape-token-0123456789";
    let guarded = TestServer::start_with(|c| c.metrics_token = Some(token.into())).await;
    for auth in [
        "",
        "Authorization: Bearer wrong-token-000000000\r\n",
        "Authorization: Basic eDp5\r\n",
    ] {
        let (status, headers, _) = get(guarded.addr, "/metrics", auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(header(&headers, "www-authenticate"), Some("Bearer"));
    }
    // The token decides, wherever the request came from.
    let right = format!("Authorization: Bearer {token}\r\nX-Forwarded-For: 203.0.113.9\r\n");
    let (status, _, body) = get(guarded.addr, "/metrics", &right).await;
    assert_eq!(status, 200);
    assert!(body.contains("peerhub_messages_total"));
}
