//! [`HttpReceiver`]: a tiny HTTP/1.1 server on loopback standing in for a paging
//! service or a Web Push service. It answers each request with the status a test
//! chooses and hands the request (method, target, headers, body) to the test.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// One request as the receiver read it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST`, `PUT` ...
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    /// A header's value, if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A loopback HTTP receiver.
#[derive(Debug)]
pub struct HttpReceiver {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    rx: mpsc::Receiver<Received>,
}

type Answer = Arc<dyn Fn(usize, &Received) -> u16 + Send + Sync>;

impl HttpReceiver {
    /// Starts a receiver answering request number `n` (from 0) with `answer(n, request)`.
    pub async fn start(answer: impl Fn(usize, &Received) -> u16 + Send + Sync + 'static) -> Self {
        let answer: Answer = Arc::new(answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("a bound address"));
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let Some(mut request) = read_request(&mut socket).await else {
                    continue;
                };
                request.status = answer(n, &request);
                let reply = format!(
                    "HTTP/1.1 {} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    request.status
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
                if tx.send(request).await.is_err() {
                    return;
                }
            }
        });
        Self { base, rx }
    }

    /// The next request, or a panic after `secs` seconds.
    pub async fn next(&mut self, secs: u64) -> Received {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.rx.recv())
            .await
            .expect("a request reaches the receiver in time")
            .expect("receiver running")
    }

    /// The next request within `ms`, if any.
    pub async fn try_next(&mut self, ms: u64) -> Option<Received> {
        tokio::time::timeout(std::time::Duration::from_millis(ms), self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let read = socket.read(&mut buf).await.ok()?;
        if read == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..read]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut lines = head.lines();
        let first = lines.next()?.to_string();
        let mut parts = first.split_whitespace();
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if raw.len() >= end + 4 + length {
            return Some(Received {
                method,
                target,
                headers,
                body: raw[end + 4..end + 4 + length].to_vec(),
                status: 0,
            });
        }
    }
}
