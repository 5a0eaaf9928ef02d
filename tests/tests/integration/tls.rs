//! wss: TLS from certificate files and from a self-signed certificate.

use std::sync::Arc;

use peerhub_server::transport::tls::TlsSource;
use peerhub_tests::{Client, Identity, ProcessServer, TestServer};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};

fn trusting(cert_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn fingerprint_of(client: &Client) -> String {
    let cert = &client
        .tls()
        .expect("TLS")
        .peer_certificates()
        .expect("certificate")[0];
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test]
async fn wss_with_certificate_files_carries_a_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|c| {
        c.tls = Some(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let config = trusting(made.cert.pem().as_bytes());
    let me = Identity::generate();
    let mut client = Client::connect_tls(server.addr, config.clone(), "localhost").await;
    client.login(&me).await;
    // The admin helper speaks plain ws, which this server must not offer.
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)),
    )
    .await
    .expect("refused promptly");
    assert!(plain.is_err(), "plain ws on a TLS port must fail");
    let token = server.server().start_tokens().admin.clone().unwrap();
    client.redeem(&token).await;
    client.create_group("tls", "Over TLS").await;
    client.join("tls", "Over TLS", None).await;
    assert_eq!(client.post("tls", "encrypted in transit").await, 1);
    assert_eq!(
        client.next_event("tls").await.verified_body(),
        "encrypted in transit"
    );
    assert_eq!(
        client.tls().unwrap().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn self_signed_tls_prints_the_fingerprint_clients_see() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let process = ProcessServer::start(&data, &["--tls-self-signed", "--demo"]).await;
    let printed = process
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("TLS certificate SHA-256 fingerprint: "))
        .expect("fingerprint printed")
        .to_string();
    let pem = std::fs::read(data.join("tls/self-signed-cert.pem")).unwrap();
    let me = Identity::generate();
    let mut client = Client::connect_tls(process.addr, trusting(&pem), "localhost").await;
    assert_eq!(fingerprint_of(&client), printed);
    client.login(&me).await;
    let token = process
        .invite_token("first admin (single use, 24 h)")
        .unwrap();
    client.redeem(&token).await;
    client.create_group("tls", "Over TLS").await;
    client.join("tls", "Over TLS", None).await;
    assert_eq!(client.post("tls", "encrypted in transit").await, 1);
    let event = client.next_event("tls").await;
    assert_eq!(event.verified_body(), "encrypted in transit");
    assert!(
        process.links.values().all(|l| l.starts_with("https://")),
        "{:?}",
        process.links
    );
}

fn only(
    version: &'static rustls::SupportedProtocolVersion,
    cert_pem: &[u8],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A minimal TLS 1.1 ClientHello (no supported_versions extension), as an old
/// client would send it.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(0); // no session id
    let suites: [u16; 4] = [0xc013, 0xc014, 0x002f, 0x0035]; // ECDHE-RSA-AES, RSA-AES
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut sni = Vec::new();
    let host = b"localhost";
    sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    let mut extensions = vec![0x00, 0x00];
    extensions.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&sni);
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 0x03, 0x01]; // handshake record, TLS 1.0 record layer
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_spoken_and_tls_1_1_is_refused() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|c| {
        c.tls = Some(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let pem = made.cert.pem();
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut client =
            Client::connect_tls(server.addr, only(version, pem.as_bytes()), "localhost").await;
        assert_eq!(client.tls().unwrap().protocol_version(), Some(expected));
        client.login(&Identity::generate()).await;
    }
    // An old client offering TLS 1.1 only gets an alert, never a ServerHello.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !answer.is_empty(),
        "the server answers (with an alert) rather than hanging"
    );
    assert_eq!(
        answer[0], 21,
        "a TLS alert record, not a handshake: {answer:?}"
    );
    let description = answer[6];
    assert!(
        description == 70 || description == 40,
        "protocol_version (70) or handshake_failure (40), got {description}"
    );
}

/// Issue 14 item 10: no Strict-Transport-Security when the hub serves TLS itself.
#[tokio::test]
async fn a_hub_serving_tls_sends_strict_transport_security() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|c| {
        c.tls = Some(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let connector = tokio_rustls::TlsConnector::from(trusting(made.cert.pem().as_bytes()));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        server.addr.port()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("strict-transport-security: max-age=31536000"),
        "{text}"
    );
    // Plain http on loopback sends none (it would pin a name to TLS it lacks).
    let plain = TestServer::start().await;
    let (_, headers, _) = super::http::get(plain.addr, "/healthz", "").await;
    assert!(super::http::header(&headers, "strict-transport-security").is_none());
}

/// GETs `path` over TLS from 127.0.0.1 with the extra header lines `extra`;
/// returns the status line and headers.
async fn tls_get(port: u16, config: Arc<rustls::ClientConfig>, path: &str, extra: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let close = if extra.contains("Connection:") {
        ""
    } else {
        "Connection: close\r\n"
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}{close}\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = vec![0; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut raw))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&raw[..n]).into_owned()
}

/// Transport review: on a dual-stack `[::]` listener an IPv4 client is reported as
/// `::ffff:127.0.0.1`. That must count as this machine for `/metrics`, and the
/// hub's own page opened by its IP literal must be allowed its WebSocket (the
/// Origin rule took only `[::]` on the unspecified address).
#[tokio::test]
async fn on_the_unspecified_address_ipv4_mapped_loopback_and_ip_origins_are_the_hubs() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_on("[::]:0", |c| {
        c.tls = Some(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let port = server.addr.port();
    let config = trusting(made.cert.pem().as_bytes());
    let metrics = tls_get(port, config.clone(), "/metrics", "").await;
    assert!(
        metrics.starts_with("HTTP/1.1 200"),
        "::ffff:127.0.0.1 is loopback: {metrics}"
    );
    let upgrade = |origin: &str| {
        format!(
            "Origin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
    };
    let own = tls_get(
        port,
        config.clone(),
        "/ws",
        &upgrade(&format!("https://127.0.0.1:{port}")),
    )
    .await;
    assert!(own.starts_with("HTTP/1.1 101"), "the hub's own page: {own}");
    let foreign = tls_get(
        port,
        config,
        "/ws",
        &upgrade(&format!("https://evil.example:{port}")),
    )
    .await;
    assert!(
        foreign.starts_with("HTTP/1.1 403"),
        "a foreign page: {foreign}"
    );
}
