//! TLS with rustls (ring provider, TLS 1.2 and 1.3): from certificate and key PEM
//! files, or a self-signed certificate made once and kept in the data folder so its
//! fingerprint stays the same across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use tokio_rustls::TlsAcceptor;

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files given by the operator.
    Files {
        /// Certificate chain (leaf first).
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A self-signed certificate for the given host names, kept in `<data>/tls/`.
    SelfSigned {
        /// Names and addresses the certificate covers.
        hosts: Vec<String>,
    },
}

/// A ready acceptor and what to tell the operator about it.
#[derive(Clone)]
pub struct TlsSetup {
    /// The acceptor for the transport.
    pub acceptor: TlsAcceptor,
    /// SHA-256 of the leaf certificate (DER), as colon-separated hex.
    pub fingerprint: String,
    /// The PEM file of the certificate (for clients that need to trust it).
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// Which file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// The certificate could not be generated.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// SHA-256 fingerprint of a DER certificate, as `AB:CD:...`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn read_pem(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, Option<PrivateKeyDer<'static>>), TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            what: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).ok();
    Ok((certs, key))
}

/// Writes a new owner-only (0600) file: the key is a secret whatever the umask.
fn write_file(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| TlsError::Io {
        path: path.into(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::file_modes::FILE_MODE)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Builds the acceptor for `source`; self-signed material lives in `data_dir/tls`.
pub fn setup(source: &TlsSource, data_dir: &Path) -> Result<TlsSetup, TlsError> {
    let (cert_path, key_path) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::SelfSigned { hosts } => {
            let dir = data_dir.join("tls");
            let cert = dir.join("self-signed-cert.pem");
            let key = dir.join("self-signed-key.pem");
            if !cert.exists() || !key.exists() {
                crate::file_modes::create_dir(&dir).map_err(|source| TlsError::Io {
                    path: dir.clone(),
                    source,
                })?;
                let made = rcgen::generate_simple_self_signed(hosts.clone())?;
                write_file(&key, &made.signing_key.serialize_pem())?;
                write_file(&cert, &made.cert.pem())?;
            }
            (cert, key)
        }
    };
    if let TlsSource::Files { key, .. } = source {
        // The operator's own key file: say so when others can read it.
        if let Ok(meta) = std::fs::metadata(key) {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %key.display(),
                    mode = format!("{mode:04o}"),
                    "the TLS private key is readable by group or others: chmod 600 it"
                );
            }
        }
    }
    let (certs, _) = read_pem(&cert_path)?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::Pem {
            path: cert_path,
            what: "no certificate in the file".into(),
        });
    };
    let fingerprint = fingerprint(leaf);
    let Some(key) = read_pem(&key_path)?.1 else {
        return Err(TlsError::Pem {
            path: key_path,
            what: "no private key in the file".into(),
        });
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSetup {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        fingerprint,
        cert_path,
    })
}
