//! The `[cluster]` keys, checked: where the NATS servers are, how this node
//! proves who it is to them, and how many copies every stream keeps.

use std::path::PathBuf;
use std::time::Duration;

use super::file::ClusterSection;
use super::ConfigError;
use crate::transport::origin::Origin;

/// The most copies JetStream keeps of a stream.
const MAX_REPLICAS: u32 = 5;
/// The shortest and longest lease: below a couple of seconds a busy node loses its
/// groups between two renewals; above ten minutes a dead node's groups wait that
/// long for a new owner.
const LEASE_TTL_MS: std::ops::RangeInclusive<u64> = 2_000..=600_000;

/// Cluster mode's settings, validated (`None` in [`super::Config`]: one node on
/// sled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The NATS servers, as given (at least one).
    pub nats_urls: Vec<String>,
    /// This node's name: one NATS subject token.
    pub node_name: String,
    /// The NATS credentials file, if any.
    pub credentials_file: Option<PathBuf>,
    /// The certificate authority for TLS to NATS, if any (TLS is then required).
    pub tls_ca_file: Option<PathBuf>,
    /// Copies of every stream and bucket.
    pub replicas: usize,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// The cluster's public node origins for the web client, each written as
    /// [`Origin::serialized`] (`https://n1.example.org`), in the order given.
    pub client_urls: Vec<String>,
}

impl ClusterSection {
    /// The section checked; `None` when `nats_urls` is empty.
    pub(super) fn validate(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let refuse = |message: String| Err(ConfigError::File(message));
        let client_urls = client_origins(&self.client_urls)?;
        if self.nats_urls.is_empty() {
            if !client_urls.is_empty() {
                return refuse(
                    "cluster.client_urls lists a cluster's nodes: it needs cluster.nats_urls \
                     (one node needs no list)"
                        .into(),
                );
            }
            return Ok(None);
        }
        for url in &self.nats_urls {
            // The URL itself is not quoted: it might carry a password.
            let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
                return refuse(format!(
                    "cluster.nats_urls: entry {} is not a NATS URL (nats://host:port or \
                     tls://host:port)",
                    position(&self.nats_urls, url)
                ));
            };
            if !matches!(addr.scheme(), "nats" | "tls") {
                return refuse(format!(
                    "cluster.nats_urls: entry {} must start with nats:// or tls://",
                    position(&self.nats_urls, url)
                ));
            }
            let inner = addr.into_inner();
            if !inner.username().is_empty() || inner.password().is_some() {
                return refuse(format!(
                    "cluster.nats_urls: entry {} carries a user or password: put the \
                     node's credentials in cluster.credentials_file instead (a URL is \
                     printed and logged, a credentials file is not)",
                    position(&self.nats_urls, url)
                ));
            }
        }
        let node_name = if self.node_name.is_empty() {
            default_node_name()
        } else {
            self.node_name.clone()
        };
        if crate::cluster::check_token(&node_name).is_err() {
            return refuse(format!(
                "cluster.node_name {node_name:?} must be 1 to 128 of a-z, A-Z, 0-9, - and _"
            ));
        }
        let file = |key: &str, path: &PathBuf| -> Result<Option<PathBuf>, ConfigError> {
            if path.as_os_str().is_empty() {
                Ok(None)
            } else if path.is_file() {
                Ok(Some(path.clone()))
            } else {
                Err(ConfigError::File(format!(
                    "{key}: {}: no such file",
                    path.display()
                )))
            }
        };
        let credentials_file = file("cluster.credentials_file", &self.credentials_file)?;
        let tls_ca_file = file("cluster.tls_ca_file", &self.tls_ca_file)?;
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return refuse(format!(
                "cluster.replicas must be 1 to {MAX_REPLICAS} (3 keeps every acknowledged \
                 message through the loss of one NATS server), not {}",
                self.replicas
            ));
        }
        if !LEASE_TTL_MS.contains(&self.lease_ttl_ms) {
            return refuse(format!(
                "cluster.lease_ttl_ms must be {} to {}, not {}",
                LEASE_TTL_MS.start(),
                LEASE_TTL_MS.end(),
                self.lease_ttl_ms
            ));
        }
        Ok(Some(ClusterSettings {
            nats_urls: self.nats_urls.clone(),
            node_name,
            credentials_file,
            tls_ca_file,
            replicas: self.replicas as usize,
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            client_urls,
        }))
    }
}

/// `cluster.client_urls` checked: each an origin and nothing more (`http` or
/// `https`, a host, a port if not the default; no user, path or query), each
/// once. They go into every page's Content-Security-Policy, so nothing vaguer
/// is taken.
fn client_origins(urls: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut origins: Vec<String> = Vec::with_capacity(urls.len());
    for url in urls {
        let refuse = |why: &str| {
            Err(ConfigError::File(format!(
                "cluster.client_urls: {url:?} {why} (write each node's origin as \
                 https://host[:port])"
            )))
        };
        let Ok(uri) = url.trim().parse::<http::Uri>() else {
            return refuse("is not a URL");
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return refuse("must start with https:// or http://");
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return refuse("must not carry a user or password");
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return refuse("is not an origin: it has a path or query");
        }
        let Some(origin) = Origin::parse(url) else {
            return refuse("is not an origin");
        };
        let origin = origin.serialized();
        if origins.contains(&origin) {
            return refuse("is listed twice");
        }
        origins.push(origin);
    }
    Ok(origins)
}

/// "entry 2 of 3", counting from 1.
fn position(urls: &[String], url: &str) -> String {
    let at = urls.iter().position(|u| u == url).unwrap_or(0) + 1;
    format!("{at} of {}", urls.len())
}

/// The machine's host name as one subject token (characters NATS would refuse
/// become `-`), or `peerhub` when it cannot be read.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "peerhub".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(urls: &[&str]) -> ClusterSection {
        ClusterSection {
            nats_urls: urls.iter().map(ToString::to_string).collect(),
            ..ClusterSection::default()
        }
    }

    fn refusal(section: ClusterSection) -> String {
        match section.validate() {
            Err(ConfigError::File(message)) => message,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn no_urls_is_one_node_on_sled() {
        assert_eq!(section(&[]).validate().expect("valid"), None);
    }

    #[test]
    fn urls_and_defaults_are_taken() {
        let settings = section(&["nats://127.0.0.1:4222", "tls://nats.example:4223"])
            .validate()
            .expect("valid")
            .expect("cluster");
        assert_eq!(settings.replicas, 3);
        assert_eq!(settings.lease_ttl, Duration::from_secs(10));
        assert!(crate::cluster::check_token(&settings.node_name).is_ok());
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        let message = refusal(section(&["nats://127.0.0.1:4222", "http://h:80"]));
        assert!(message.contains("entry 2 of 2"), "{message}");
        let message = refusal(section(&["nats://alice:s3cret@127.0.0.1:4222"]));
        assert!(message.contains("credentials_file"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let message = refusal(section(&["nats://t0ken@127.0.0.1:4222"]));
        assert!(!message.contains("t0ken"), "{message}");
        assert!(refusal(section(&["not a url"])).contains("not a NATS URL"));
    }

    #[test]
    fn client_urls_must_be_origins_and_need_a_cluster() {
        let mut s = section(&["nats://127.0.0.1:4222"]);
        s.client_urls = vec![
            "https://N1.example.org/".into(),
            "http://127.0.0.1:7072".into(),
            "https://n3.example.org:8443".into(),
        ];
        assert_eq!(
            s.clone()
                .validate()
                .expect("valid")
                .expect("cluster")
                .client_urls,
            [
                "https://n1.example.org",
                "http://127.0.0.1:7072",
                "https://n3.example.org:8443"
            ]
        );
        for (bad, why) in [
            ("n1.example.org", "https://"),
            ("not a url", "not a URL"),
            ("ftp://n1.example.org", "https://"),
            ("wss://n1.example.org", "https://"),
            ("https://n1.example.org/peerhub", "path or query"),
            ("https://n1.example.org/?x=1", "path or query"),
            ("https://alice@n1.example.org", "user or password"),
            ("https://", "not a URL"),
        ] {
            s.client_urls = vec![bad.into()];
            let message = refusal(s.clone());
            assert!(message.contains("cluster.client_urls"), "{bad}: {message}");
            assert!(message.contains(why), "{bad}: {message}");
        }
        s.client_urls = vec![
            "https://n1.example.org".into(),
            "https://n1.example.org:443".into(),
        ];
        assert!(refusal(s.clone()).contains("listed twice"));
        let mut one = section(&[]);
        one.client_urls = vec!["https://n1.example.org".into()];
        assert!(refusal(one).contains("needs cluster.nats_urls"));
    }

    #[test]
    fn replicas_lease_name_and_files_are_checked() {
        let mut s = section(&["nats://127.0.0.1:4222"]);
        s.replicas = 0;
        assert!(refusal(s.clone()).contains("cluster.replicas"));
        s.replicas = 6;
        assert!(refusal(s.clone()).contains("cluster.replicas"));
        s.replicas = 1;
        s.lease_ttl_ms = 500;
        assert!(refusal(s.clone()).contains("cluster.lease_ttl_ms"));
        s.lease_ttl_ms = 10_000;
        s.node_name = "node one".into();
        assert!(refusal(s.clone()).contains("cluster.node_name"));
        s.node_name = "node-1".into();
        s.credentials_file = "/nonexistent/peerhub.creds".into();
        assert!(refusal(s.clone()).contains("cluster.credentials_file"));
        s.credentials_file = PathBuf::new();
        s.tls_ca_file = "/nonexistent/ca.pem".into();
        assert!(refusal(s.clone()).contains("cluster.tls_ca_file"));
        s.tls_ca_file = PathBuf::new();
        assert_eq!(
            s.validate().expect("valid").expect("cluster").node_name,
            "node-1"
        );
    }
}
