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
