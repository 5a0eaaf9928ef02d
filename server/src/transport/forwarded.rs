//! Who the client is, when a trusted reverse proxy stands in front.
//!
//! Per-address limits need the address of the person, not of the proxy that
//! relays them: behind nginx every connection comes from 127.0.0.1. When the TCP
//! peer is one of the configured `trusted_proxies`, the client's address is read
//! from the header the proxy writes (`client_address_header`: `X-Forwarded-For`
//! by default, or RFC 7239 `Forwarded: for=`): the right-most address in it that
//! is not itself a trusted proxy. Anything left of that was written by the client
//! (or by proxies we do not know) and is never believed, so a client cannot pick
//! a fresh address per connection.
//!
//! Headers from a peer that is not a trusted proxy are ignored: its own address
//! is the client's. A trusted proxy's request without the header is the proxy's
//! own (a local tool, a health check). A trusted proxy's header that cannot be
//! read where it matters — its right-most part is not an address (`unknown`, an
//! obfuscated name, garbage), or a `Forwarded` header is not RFC 7239 syntax — is
//! refused ([`BadForwarded`], answered 400): falling back to the proxy's address
//! would put the client under the proxy's (loopback, often exempt) limits.
//!
//! This module decides per-address limits only. `/metrics` access is decided by
//! the TCP peer and never by these headers (see `ops`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// An address block: an address and how many leading bits of it count (an
/// [`IpNet`]; IPv4-mapped IPv6 addresses are taken as IPv4, in the block and in
/// what is looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrBlock(IpNet);

/// Why a trusted-proxy entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address or an address block (like 10.0.0.0/8 or fd00::/8)")]
pub struct BadBlock(pub String);

impl FromStr for AddrBlock {
    type Err = BadBlock;

    fn from_str(text: &str) -> Result<Self, BadBlock> {
        let bad = || BadBlock(text.to_string());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let prefix = match prefix {
            None => return Ok(Self(IpNet::from(addr))),
            // Digits only: no sign, no space (ipnet would take neither either).
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        IpNet::new(addr, prefix).map(Self).map_err(|_| bad())
    }
}

impl std::fmt::Display for AddrBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl AddrBlock {
    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// Which header a trusted proxy writes the client's address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, Caddy, HAProxy, Traefik,
    /// most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ClientAddressHeader {
    /// The header's name, as the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

impl FromStr for ClientAddressHeader {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err(()),
        }
    }
}

/// The proxies whose word on the client's address is taken, and where they write it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Their addresses.
    pub blocks: Vec<AddrBlock>,
    /// The header they write.
    pub header: ClientAddressHeader,
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }
}

/// A trusted proxy's header could not be read where it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadForwarded(pub &'static str);

/// The client's address for a request whose TCP peer is `peer`: see the module doc.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    proxies: &TrustedProxies,
) -> Result<IpAddr, BadForwarded> {
    let peer = peer.to_canonical();
    if !proxies.trusts(peer) {
        return Ok(peer);
    }
    let name = proxies.header.name();
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(peer);
    }
    let mut joined = String::new();
    for value in values {
        let value = value
            .to_str()
            .map_err(|_| BadForwarded("the proxy's client-address header is not text"))?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    match proxies.header {
        ClientAddressHeader::XForwardedFor => from_x_forwarded_for(&joined, proxies),
        ClientAddressHeader::Forwarded => from_forwarded(&joined, proxies),
    }
}

/// The right-most address of `hops` (leftmost first) that is not a trusted
/// proxy; the left-most when every hop is one. Each hop is read only when
/// reached, so what a client wrote left of that is never looked at.
fn rightmost_untrusted(
    mut hops: impl DoubleEndedIterator<Item = Result<IpAddr, BadForwarded>>,
    proxies: &TrustedProxies,
) -> Result<IpAddr, BadForwarded> {
    let mut last = None;
    while let Some(hop) = hops.next_back() {
        let ip = hop?.to_canonical();
        if !proxies.trusts(ip) {
            return Ok(ip);
        }
        last = Some(ip);
    }
    last.ok_or(BadForwarded("the proxy's client-address header is empty"))
}

/// `X-Forwarded-For: 203.0.113.7, 10.0.0.2` (entries may carry a port).
pub fn from_x_forwarded_for(value: &str, proxies: &TrustedProxies) -> Result<IpAddr, BadForwarded> {
    let hops = value.split(',').map(|hop| {
        node_address(hop.trim()).ok_or(BadForwarded(
            "the proxy's X-Forwarded-For header holds something that is not an address",
        ))
    });
    rightmost_untrusted(hops, proxies)
}

/// RFC 7239 `Forwarded: for=203.0.113.7;proto=https, for="[2001:db8::1]:4711"`.
pub fn from_forwarded(value: &str, proxies: &TrustedProxies) -> Result<IpAddr, BadForwarded> {
    let elements = parse_forwarded(value)?;
    let hops = elements.into_iter().map(|element| {
        let node = element.ok_or(BadForwarded(
            "an element of the proxy's Forwarded header has no for=",
        ))?;
        node_address(&node).ok_or(BadForwarded(
            "the proxy's Forwarded header names a client that is not an address",
        ))
    });
    rightmost_untrusted(hops, proxies)
}

const MALFORMED: BadForwarded = BadForwarded("the proxy's Forwarded header is malformed");

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// The `for` value of each element of a `Forwarded` header (RFC 7239 §4, with
/// RFC 7230 tokens, quoted strings and empty list elements), left to right.
pub fn parse_forwarded(value: &str) -> Result<Vec<Option<String>>, BadForwarded> {
    let mut elements = Vec::new();
    let mut chars = value.chars().peekable();
    let skip_ows = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
    };
    let mut current: Option<String> = None;
    let mut pairs_in_element = 0usize;
    let mut seen_for = false;
    loop {
        skip_ows(&mut chars);
        match chars.peek() {
            None => break,
            Some(',') => {
                chars.next();
                if pairs_in_element > 0 {
                    elements.push(current.take());
                }
                pairs_in_element = 0;
                seen_for = false;
                continue;
            }
            Some(';') => {
                chars.next();
                continue;
            }
            Some(_) => {}
        }
        // A pair: token "=" (token / quoted-string).
        let mut name = String::new();
        while let Some(c) = chars.peek().copied().filter(|c| is_tchar(*c)) {
            name.push(c);
            chars.next();
        }
        if name.is_empty() || chars.next() != Some('=') {
            return Err(MALFORMED);
        }
        let mut text = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(MALFORMED),
                    Some('"') => break,
                    Some('\\') => text.push(chars.next().ok_or(MALFORMED)?),
                    Some(c) if c == '\t' || (' '..='~').contains(&c) => text.push(c),
                    Some(_) => return Err(MALFORMED),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| is_tchar(*c)) {
                text.push(c);
                chars.next();
            }
            if text.is_empty() {
                return Err(MALFORMED);
            }
        }
        skip_ows(&mut chars);
        if !matches!(chars.peek(), None | Some(',') | Some(';')) {
            return Err(MALFORMED);
        }
        pairs_in_element += 1;
        if name.eq_ignore_ascii_case("for") {
            if seen_for {
                return Err(MALFORMED);
            }
            seen_for = true;
            current = Some(text);
        }
    }
    if pairs_in_element > 0 {
        elements.push(current);
    }
    Ok(elements)
}

/// A node (`192.0.2.7`, `192.0.2.7:80`, `[2001:db8::1]`, `[2001:db8::1]:4711`,
/// or a bare `2001:db8::1`) as an address; `None` for `unknown`, obfuscated
/// names and anything else.
pub fn node_address(node: &str) -> Option<IpAddr> {
    let port_ok = |port: &str| {
        (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
            || (port.starts_with('_')
                && port.len() > 1
                && port[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    };
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip = inside.parse::<Ipv6Addr>().ok()?;
        return match after {
            "" => Some(IpAddr::V6(ip)),
            _ => after
                .strip_prefix(':')
                .filter(|p| port_ok(p))
                .map(|_| IpAddr::V6(ip)),
        };
    }
    if let Ok(ip) = node.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(ip));
    }
    if let Some((host, port)) = node.split_once(':') {
        if !port.contains(':') {
            return host
                .parse::<Ipv4Addr>()
                .ok()
                .filter(|_| port_ok(port))
                .map(IpAddr::V4);
        }
    }
    node.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(blocks: &[&str], header: ClientAddressHeader) -> TrustedProxies {
        TrustedProxies {
            blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
            header,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_contain_their_addresses_only() {
        let lo: AddrBlock = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("127.255.0.9")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")), "IPv4-mapped is IPv4");
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(!lo.contains(ip("::1")));
        let one: AddrBlock = "10.1.2.3".parse().unwrap();
        assert!(one.contains(ip("10.1.2.3")));
        assert!(!one.contains(ip("10.1.2.4")));
        let v6: AddrBlock = "fd00:1::/32".parse().unwrap();
        assert!(v6.contains(ip("fd00:1:ffff::1")));
        assert!(!v6.contains(ip("fd00:2::1")));
        let all: AddrBlock = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!("::1/128".parse::<AddrBlock>().unwrap().contains(ip("::1")));
        for bad in [
            "",
            "nginx",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "1.2.3",
        ] {
            assert!(bad.parse::<AddrBlock>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn x_forwarded_for_takes_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let p = proxies(
            &["127.0.0.1", "10.0.0.0/8"],
            ClientAddressHeader::XForwardedFor,
        );
        assert_eq!(
            from_x_forwarded_for("203.0.113.7", &p),
            Ok(ip("203.0.113.7"))
        );
        // What the client wrote itself (left) is not believed.
        assert_eq!(
            from_x_forwarded_for("1.1.1.1, 203.0.113.7", &p),
            Ok(ip("203.0.113.7"))
        );
        // Trusted hops on the right are skipped.
        assert_eq!(
            from_x_forwarded_for("1.1.1.1,203.0.113.7, 10.0.0.2,10.9.9.9", &p),
            Ok(ip("203.0.113.7"))
        );
        // Garbage the client wrote, left of the real address, is never read.
        assert_eq!(
            from_x_forwarded_for("<script>, unknown,, 203.0.113.7", &p),
            Ok(ip("203.0.113.7"))
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            from_x_forwarded_for("10.0.0.5, 127.0.0.1", &p),
            Ok(ip("10.0.0.5"))
        );
        // Ports and brackets; IPv4-mapped IPv6 is IPv4.
        assert_eq!(
            from_x_forwarded_for("203.0.113.7:5555", &p),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(
            from_x_forwarded_for("[2001:db8::1]:443", &p),
            Ok(ip("2001:db8::1"))
        );
        assert_eq!(
            from_x_forwarded_for("2001:db8::1", &p),
            Ok(ip("2001:db8::1"))
        );
        assert_eq!(
            from_x_forwarded_for("::ffff:203.0.113.7", &p),
            Ok(ip("203.0.113.7"))
        );
    }

    #[test]
    fn a_bad_x_forwarded_for_where_it_matters_is_refused() {
        let p = proxies(&["127.0.0.1"], ClientAddressHeader::XForwardedFor);
        for bad in [
            "",
            " ",
            "unknown",
            "1.1.1.1, nonsense",
            "1.1.1.1,",
            "203.0.113.7:99999999",
            "203.0.113.7:",
            "[2001:db8::1",
            "2001:db8::1]",
            "1.2.3.4.5",
            "203.0.113.7 10.0.0.1",
            "127.0.0.1, _hidden",
        ] {
            assert!(from_x_forwarded_for(bad, &p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_is_parsed_by_rfc_7239() {
        assert_eq!(
            parse_forwarded(r#"for=192.0.2.60;proto=http;by=203.0.113.43"#),
            Ok(vec![Some("192.0.2.60".into())])
        );
        assert_eq!(
            parse_forwarded(r#"For="[2001:db8:cafe::17]:4711", for=192.0.2.43 ,proto=https"#),
            Ok(vec![
                Some("[2001:db8:cafe::17]:4711".into()),
                Some("192.0.2.43".into()),
                None
            ])
        );
        assert_eq!(
            parse_forwarded(r#" , for="a\"b" ;; , "#),
            Ok(vec![Some("a\"b".into())])
        );
        for bad in [
            "for",
            "for=",
            "for=\"1.2.3.4",
            "=1.2.3.4",
            "for=1.2.3.4 by=1",
            "for=\"1.2.3.4\"x",
            "for=1.2.3.4;for=5.6.7.8",
            "for=[::1]",
            "for=\"x\u{1}\"",
        ] {
            assert_eq!(parse_forwarded(bad), Err(MALFORMED), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_takes_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let p = proxies(&["127.0.0.1", "::1"], ClientAddressHeader::Forwarded);
        assert_eq!(
            from_forwarded(
                r#"for=9.9.9.9, for="[2001:db8:cafe::17]:4711";proto=https"#,
                &p
            ),
            Ok(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            from_forwarded("for=203.0.113.7, for=127.0.0.1", &p),
            Ok(ip("203.0.113.7"))
        );
        for bad in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=1.1.1.1, by=127.0.0.1",
            "for=\"1.1.1.1",
            // A client's unbalanced quote swallows what the proxy appended.
            "for=\", for=203.0.113.7",
        ] {
            assert!(from_forwarded(bad, &p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_only_in_its_own_header() {
        let p = proxies(&["127.0.0.1"], ClientAddressHeader::XForwardedFor);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        headers.insert("forwarded", "for=198.51.100.1".parse().unwrap());
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &p),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &headers, &p),
            Ok(ip("203.0.113.7")),
            "an IPv4-mapped peer is the same peer"
        );
        assert_eq!(
            client_address(ip("127.0.0.2"), &headers, &p),
            Ok(ip("127.0.0.2")),
            "an untrusted peer's headers are ignored"
        );
        let forwarded = TrustedProxies {
            header: ClientAddressHeader::Forwarded,
            ..p.clone()
        };
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &forwarded),
            Ok(ip("198.51.100.1"))
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &HeaderMap::new(), &p),
            Ok(ip("127.0.0.1")),
            "no header: the proxy's own request"
        );
        let mut two = HeaderMap::new();
        two.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        two.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert_eq!(
            client_address(ip("127.0.0.1"), &two, &p),
            Ok(ip("203.0.113.9")),
            "header lines are one list, in order"
        );
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-for", "unknown".parse().unwrap());
        assert!(client_address(ip("127.0.0.1"), &bad, &p).is_err());
        assert_eq!(
            client_address(ip("10.0.0.1"), &bad, &p),
            Ok(ip("10.0.0.1")),
            "an untrusted peer's bad header is ignored too"
        );
        let none = TrustedProxies::default();
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &none),
            Ok(ip("127.0.0.1")),
            "no proxy configured: headers mean nothing"
        );
    }
}
