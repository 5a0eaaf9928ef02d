//! Who a request is for and which pages may open a WebSocket: the Host and Origin
//! rules, decided from the configuration alone (`public_url`, the listen address,
//! `allow_origins`) and never from what the request says about itself.
//!
//! - An origin is (scheme, host, port), the port defaulted from the scheme; an
//!   `Origin` header is allowed only when it equals the hub's own origin or one in
//!   `allow_origins` (on the unspecified address, any IP literal on the listen
//!   port, with the hub's scheme). The Host header plays no part, so a
//!   DNS-rebinding page (its Origin `http://evil.example:7070`, its Host whatever it
//!   resolved to) is refused.
//! - The Host header must name the hub: `public_url`'s host and port, the listen
//!   address (and `localhost` when that is loopback; any IP literal on the listen
//!   port when it is the unspecified address), or the host of an allowed origin.
//!   Anything else is answered 421 (Misdirected Request).

use std::net::SocketAddr;

/// (scheme, host, port) of a URL or an origin, lower-cased, with the port the
/// scheme implies when none is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https` (`ws`/`wss` are read as these).
    pub scheme: String,
    /// Host name or IP literal (IPv6 in brackets), lower-case.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port][/...]`; `None` for anything else (`null`).
    pub fn parse(text: &str) -> Option<Self> {
        let uri: http::Uri = text.trim().parse().ok()?;
        let scheme = match uri.scheme_str()?.to_ascii_lowercase().as_str() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            _ => return None,
        };
        let host = uri.host()?.to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some(Self {
            scheme: scheme.into(),
            host,
            port,
        })
    }

    /// The origin as a page's `Origin` header spells it: `scheme://host`, with
    /// `:port` only when it is not the scheme's default.
    pub fn serialized(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.port_suffix())
    }

    /// The WebSocket URL scheme and authority of this origin (`ws://` for http,
    /// `wss://` for https), as a Content-Security-Policy source.
    pub fn websocket_source(&self) -> String {
        let scheme = if self.scheme == "https" { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.host, self.port_suffix())
    }

    fn port_suffix(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default {
            String::new()
        } else {
            format!(":{}", self.port)
        }
    }

    fn for_addr(scheme: &str, host: String, port: u16) -> Self {
        Self {
            scheme: scheme.into(),
            host,
            port,
        }
    }
}

/// The Host and Origin rules of one running hub.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    /// Origins allowed to open a WebSocket: the hub's own, then `allow_origins`.
    pub origins: Vec<Origin>,
    /// Listening on the unspecified address (any IP literal on `port` is the hub).
    pub any_ip_on: Option<u16>,
    /// Serving TLS itself: send Strict-Transport-Security.
    pub tls: bool,
}

impl HttpPolicy {
    /// The rules for a hub listening on `local` (TLS or not) with `public_url` and
    /// `allow_origins` as configured. Entries of `allow_origins` that are not
    /// origins are refused by the config check before this.
    pub fn new(local: SocketAddr, tls: bool, public_url: Option<&str>, allow: &[String]) -> Self {
        let scheme = if tls { "https" } else { "http" };
        let mut origins = Vec::new();
        if let Some(url) = public_url.and_then(Origin::parse) {
            origins.push(url);
        }
        let ip = match local.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        origins.push(Origin::for_addr(scheme, ip, local.port()));
        if local.ip().is_loopback() {
            origins.push(Origin::for_addr(scheme, "localhost".into(), local.port()));
        }
        origins.extend(allow.iter().filter_map(|a| Origin::parse(a)));
        Self {
            origins,
            any_ip_on: local.ip().is_unspecified().then_some(local.port()),
            tls,
        }
    }

    /// May a page of this `Origin` header value open a WebSocket? On the
    /// unspecified address, as for Host, any IP literal on the listen port with
    /// the hub's own scheme is the hub (a name is not: it could be rebound).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let Some(o) = Origin::parse(origin) else {
            return false;
        };
        if self.origins.contains(&o) {
            return true;
        }
        let scheme = if self.tls { "https" } else { "http" };
        self.any_ip_on.is_some_and(|port| {
            o.port == port
                && o.scheme == scheme
                && o.host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok()
        })
    }

    /// Does this `Host` header value name the hub? Compared as host and port; a
    /// Host with no port names the default port of the origin it is compared with
    /// (behind a TLS proxy, `Host: hub.example.org` is `https://hub.example.org`).
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(asked) = Origin::parse(&format!("http://{host}")) else {
            return false;
        };
        let explicit_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        let default_port = |o: &Origin| if o.scheme == "https" { 443 } else { 80 };
        if self.origins.iter().any(|o| {
            o.host == asked.host
                && if explicit_port {
                    o.port == asked.port
                } else {
                    o.port == default_port(o)
                }
        }) {
            return true;
        }
        self.any_ip_on.is_some_and(|port| {
            explicit_port
                && asked.port == port
                && asked
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok()
        })
    }
}

/// Is this `Origin` header value one of `listed` (origins as
/// [`Origin::serialized`] writes them, e.g. `cluster.client_urls`)?
pub fn listed(listed: &[String], origin: &str) -> bool {
    Origin::parse(origin)
        .is_some_and(|o| listed.iter().any(|l| Origin::parse(l) == Some(o.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> HttpPolicy {
        HttpPolicy::new(
            "127.0.0.1:7070".parse().unwrap(),
            false,
            Some("https://hub.example.org/"),
            &["https://app.example.org".into()],
        )
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let p = local();
        assert!(p.origin_allowed("http://127.0.0.1:7070"));
        assert!(p.origin_allowed("http://localhost:7070"));
        assert!(p.origin_allowed("https://hub.example.org"));
        assert!(p.origin_allowed("https://HUB.example.org:443"));
        assert!(p.origin_allowed("https://app.example.org"));
        assert!(!p.origin_allowed("http://hub.example.org"), "scheme");
        assert!(!p.origin_allowed("https://hub.example.org:8443"), "port");
        assert!(!p.origin_allowed("https://127.0.0.1:7070"), "scheme");
        assert!(!p.origin_allowed("http://evil.example:7070"));
        assert!(!p.origin_allowed("null"));
    }

    #[test]
    fn hosts_must_name_the_hub() {
        let p = local();
        assert!(p.host_allowed("127.0.0.1:7070"));
        assert!(p.host_allowed("localhost:7070"));
        assert!(p.host_allowed("hub.example.org:443"));
        assert!(
            p.host_allowed("hub.example.org"),
            "the public URL's default port"
        );
        assert!(
            !p.host_allowed("hub.example.org:80"),
            "port 80 is not the hub's"
        );
        assert!(!p.host_allowed("evil.example:7070"));
        assert!(!p.host_allowed("127.0.0.1:7071"));
        let any = HttpPolicy::new("0.0.0.0:7070".parse().unwrap(), true, None, &[]);
        assert!(any.host_allowed("192.0.2.4:7070"));
        assert!(!any.host_allowed("evil.example:7070"));
    }

    #[test]
    fn an_origin_is_written_back_without_its_default_port() {
        let o = Origin::parse("HTTPS://N1.Example.org:443/").unwrap();
        assert_eq!(o.serialized(), "https://n1.example.org");
        assert_eq!(o.websocket_source(), "wss://n1.example.org");
        let o = Origin::parse("http://127.0.0.1:7072").unwrap();
        assert_eq!(o.serialized(), "http://127.0.0.1:7072");
        assert_eq!(o.websocket_source(), "ws://127.0.0.1:7072");
        let list = ["https://n1.example.org".to_string()];
        assert!(listed(&list, "https://n1.example.org:443"));
        assert!(!listed(&list, "http://n1.example.org"));
        assert!(!listed(&list, "null"));
    }

    /// Regression (transport review): on the unspecified address the hub's own
    /// page, opened by an IP literal, was refused its WebSocket: the Host rule took
    /// any IP literal on the listen port, the Origin rule only `0.0.0.0`.
    #[test]
    fn on_the_unspecified_address_a_page_opened_by_ip_may_open_a_websocket() {
        let any = HttpPolicy::new("0.0.0.0:7070".parse().unwrap(), true, None, &[]);
        assert!(any.origin_allowed("https://192.0.2.4:7070"));
        assert!(any.origin_allowed("https://[2001:db8::4]:7070"));
        assert!(!any.origin_allowed("http://192.0.2.4:7070"), "scheme");
        assert!(!any.origin_allowed("https://192.0.2.4:7071"), "port");
        assert!(
            !any.origin_allowed("https://evil.example:7070"),
            "a name could be rebound: only IP literals"
        );
        let v6 = HttpPolicy::new("[::]:7070".parse().unwrap(), false, None, &[]);
        assert!(v6.origin_allowed("http://10.0.0.2:7070"));
        let one = HttpPolicy::new("192.0.2.4:7070".parse().unwrap(), true, None, &[]);
        assert!(
            !one.origin_allowed("https://192.0.2.5:7070"),
            "a named address allows itself only"
        );
    }
}
