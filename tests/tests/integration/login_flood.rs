//! Pending-login floods (issue 13, reproduction 4): idle WebSocket upgrades that
//! never log in must not lock everyone else out — not from one address, not from
//! a rotating set inside one IPv6 /64, not behind a reverse proxy, and not by
//! writing a fresh `X-Forwarded-For` on every connection.
//!
//! Every client here is a real socket. Linux routes all of 127.0.0.0/8 to
//! loopback, so binding 127.0.0.2, 127.0.0.3 … gives each party its own address;
//! with `limit_loopback` on, those are limited like any other address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use peerhub_server::limits::LimitSettings;
use peerhub_server::transport::forwarded::{ClientAddressHeader, TrustedProxies};
use peerhub_tests::{Client, Identity, TestServer};

use super::http::get;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The per-address cap on connections not logged in yet, as shipped.
fn default_cap() -> usize {
    LimitSettings::default().max_pending_logins_per_ip
}

/// The proxy on this machine (127.0.0.1), trusted, writing `header`.
fn proxy_on_loopback(header: ClientAddressHeader) -> TrustedProxies {
    TrustedProxies {
        blocks: vec!["127.0.0.1".parse().unwrap()],
        header,
    }
}

/// What a flood got: the upgrades it holds open (idle, never logging in) and the
/// HTTP statuses of the ones refused.
struct Flood {
    held: Vec<Client>,
    refused: Vec<u16>,
}

/// Opens `count` upgrades from `from`, the i-th carrying `headers(i)`, and logs
/// none of them in.
async fn flood(
    addr: SocketAddr,
    from: IpAddr,
    count: usize,
    headers: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> Flood {
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for i in 0..count {
        let headers = headers(i);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        match Client::connect_from(addr, from, &headers).await {
            Ok(client) => held.push(client),
            Err(status) => refused.push(status),
        }
    }
    Flood { held, refused }
}

/// A genuine person arriving from `from` with `headers` logs in.
async fn genuine_login(addr: SocketAddr, from: IpAddr, headers: &[(&str, &str)]) {
    let mut client = Client::connect_from(addr, from, headers)
        .await
        .unwrap_or_else(|status| panic!("a genuine client was refused with HTTP {status}"));
    client.login(&Identity::generate()).await;
}

#[track_caller]
fn held_back_at_the_cap(flood: &Flood) {
    assert_eq!(
        flood.held.len(),
        default_cap(),
        "the flood holds no more than its address's share of pending logins"
    );
    assert!(
        flood.refused.iter().all(|s| *s == 503 || *s == 429),
        "refused as full or too fast: {:?}",
        flood.refused
    );
}

#[tokio::test]
async fn a_pending_login_flood_from_one_address_leaves_room_for_everyone_else() {
    // The hub-wide pool is scaled down (50, not 2,000) so the flood is short; the
    // attacker may connect as fast as it likes, so only the pending caps count.
    let server = TestServer::start_with(|c| {
        c.limits.limit_loopback = true;
        c.limits.max_pending_logins = 50;
        c.limits.connects_per_ip_per_minute = 100_000;
    })
    .await;
    let attack = flood(server.addr, ip("127.0.0.2"), 60, |_| Vec::new()).await;
    genuine_login(server.addr, ip("127.0.0.3"), &[]).await;
    genuine_login(server.addr, ip("127.0.0.4"), &[]).await;
    held_back_at_the_cap(&attack);
    assert!(attack.refused.iter().all(|s| *s == 503));
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_forwarded_attacker_cannot_block_a_genuine_client() {
    // Every limit as shipped (loopback exempt, pool of 2,000): only the proxy is
    // configured. The attacker makes 2,010 upgrades through it.
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = proxy_on_loopback(ClientAddressHeader::XForwardedFor)
    })
    .await;
    let pool = LimitSettings::default().max_pending_logins;
    let attack = flood(server.addr, ip("127.0.0.1"), pool + 10, |_| {
        vec![("x-forwarded-for", "203.0.113.66".to_string())]
    })
    .await;
    genuine_login(
        server.addr,
        ip("127.0.0.1"),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    held_back_at_the_cap(&attack);
}

#[tokio::test]
async fn forty_five_rotating_addresses_in_one_ipv6_64_count_as_one_client() {
    for header in [
        ClientAddressHeader::XForwardedFor,
        ClientAddressHeader::Forwarded,
    ] {
        let server = TestServer::start_with(|c| {
            c.trusted_proxies = proxy_on_loopback(header);
            c.limits.max_pending_logins = 200;
        })
        .await;
        let attack = flood(server.addr, ip("127.0.0.1"), 210, |i| {
            let attacker = format!("2001:db8:77:1:{:x}::{:x}", i % 45, i % 45 + 1);
            match header {
                ClientAddressHeader::XForwardedFor => {
                    // What the attacker wrote, then what nginx appended.
                    vec![("x-forwarded-for", format!("10.9.{}.1, {attacker}", i % 250))]
                }
                ClientAddressHeader::Forwarded => {
                    vec![("forwarded", format!("for=\"[{attacker}]:{}\"", 40_000 + i))]
                }
            }
        })
        .await;
        let genuine = match header {
            ClientAddressHeader::XForwardedFor => ("x-forwarded-for", "2001:db8:77:2::1"),
            ClientAddressHeader::Forwarded => ("forwarded", "for=\"[2001:db8:77:2::1]\""),
        };
        genuine_login(server.addr, ip("127.0.0.1"), &[genuine]).await;
        held_back_at_the_cap(&attack);
    }
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    // 127.0.0.1 is the proxy; 127.0.0.2 is not, so what it writes in
    // X-Forwarded-For is ignored: a fresh address per connection buys nothing.
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = proxy_on_loopback(ClientAddressHeader::XForwardedFor);
        c.limits.limit_loopback = true;
        c.limits.max_pending_logins = 50;
        c.limits.connects_per_ip_per_minute = 100_000;
    })
    .await;
    let attack = flood(server.addr, ip("127.0.0.2"), 60, |i| {
        vec![
            (
                "x-forwarded-for",
                format!("198.18.{}.{}", i / 250, i % 250 + 1),
            ),
            ("forwarded", format!("for=198.19.0.{}", i % 250 + 1)),
        ]
    })
    .await;
    genuine_login(server.addr, ip("127.0.0.3"), &[]).await;
    genuine_login(
        server.addr,
        ip("127.0.0.1"),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    held_back_at_the_cap(&attack);
}

#[tokio::test]
async fn a_header_the_proxy_does_not_write_cannot_pick_an_address() {
    // nginx, Caddy and Traefik write X-Forwarded-For and pass a client's own
    // Forwarded header through untouched: only the configured header is read.
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = proxy_on_loopback(ClientAddressHeader::XForwardedFor);
        c.limits.max_pending_logins = 50;
    })
    .await;
    let attack = flood(server.addr, ip("127.0.0.1"), 60, |i| {
        vec![
            ("forwarded", format!("for=198.18.0.{}", i + 1)),
            ("x-forwarded-for", "203.0.113.66".to_string()),
        ]
    })
    .await;
    genuine_login(
        server.addr,
        ip("127.0.0.1"),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    held_back_at_the_cap(&attack);
}

#[tokio::test]
async fn a_malformed_client_address_from_a_trusted_proxy_is_refused_with_400() {
    for (header, bad) in [
        (
            ClientAddressHeader::XForwardedFor,
            ("x-forwarded-for", "unknown"),
        ),
        (
            ClientAddressHeader::XForwardedFor,
            ("x-forwarded-for", "203.0.113.5, "),
        ),
        (
            ClientAddressHeader::Forwarded,
            ("forwarded", "for=\"203.0.113.5"),
        ),
        (ClientAddressHeader::Forwarded, ("forwarded", "for=_hidden")),
        (ClientAddressHeader::Forwarded, ("forwarded", "proto=https")),
    ] {
        let server =
            TestServer::start_with(|c| c.trusted_proxies = proxy_on_loopback(header)).await;
        let refused = Client::connect_from(server.addr, ip("127.0.0.1"), &[bad]).await;
        assert_eq!(refused.err(), Some(400), "{bad:?} from the proxy");
        // The same header from a peer that is not the proxy is not read at all.
        let ignored = Client::connect_from(server.addr, ip("127.0.0.2"), &[bad]).await;
        assert!(ignored.is_ok(), "{bad:?} from an untrusted peer is ignored");
        // The header the proxy does not write is not read either.
        let other = match header {
            ClientAddressHeader::XForwardedFor => ("forwarded", "for=\"203.0.113.5"),
            ClientAddressHeader::Forwarded => ("x-forwarded-for", "unknown"),
        };
        let ignored = Client::connect_from(server.addr, ip("127.0.0.1"), &[other]).await;
        assert!(ignored.is_ok(), "{other:?} is not the configured header");
    }
}

#[tokio::test]
async fn an_idle_upgrade_is_closed_by_the_login_timeout_and_gives_its_place_back() {
    let server = TestServer::start_with(|c| {
        c.limits.limit_loopback = true;
        c.limits.connects_per_ip_per_minute = 100_000;
        c.auth_timeout = Duration::from_millis(500);
    })
    .await;
    let from = ip("127.0.0.2");
    let mut attack = flood(server.addr, from, default_cap() + 1, |_| Vec::new()).await;
    held_back_at_the_cap(&attack);
    for idle in &mut attack.held {
        let closed = idle.expect_closed().await;
        assert_eq!(closed.code, Some(4002), "login timeout: {closed:?}");
    }
    // The places came back: the same address may try again.
    let mut again = None;
    for _ in 0..50 {
        match Client::connect_from(server.addr, from, &[]).await {
            Ok(client) => {
                again = Some(client);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    again
        .expect("a place came free")
        .login(&Identity::generate())
        .await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_failed_logins_are_limited_per_client_not_per_proxy() {
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = proxy_on_loopback(ClientAddressHeader::XForwardedFor);
        c.limits.failed_logins_per_ip_per_minute = 1; // burst 10
    })
    .await;
    let mut held_back = false;
    // A guesser behind the proxy rotates its address within its /64 and its key on
    // every connection (so the per-key limit never trips); each connection may
    // fail three times, and the third closes it before the address is counted.
    for i in 0..10 {
        let me = Identity::generate();
        let forwarded = format!("2001:db8:66:1::{:x}", i + 1);
        let mut guesser = Client::connect_from(
            server.addr,
            ip("127.0.0.1"),
            &[("x-forwarded-for", &forwarded)],
        )
        .await
        .expect("upgrade");
        for _ in 0..3 {
            guesser
                .send(&peerhub_protocol::ClientFrame::Auth {
                    id: None,
                    env: me.auth("wrong challenge"),
                })
                .await;
        }
        let closed = guesser.expect_closed().await;
        if closed.reason.contains("wait a minute") {
            held_back = true;
            break;
        }
    }
    assert!(
        held_back,
        "the client behind the proxy is held back, though the proxy is loopback"
    );
    // Someone else behind the same proxy is not.
    genuine_login(
        server.addr,
        ip("127.0.0.1"),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
}

#[tokio::test]
async fn metrics_access_is_decided_by_the_tcp_peer_never_by_a_proxy_header() {
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = proxy_on_loopback(ClientAddressHeader::XForwardedFor)
    })
    .await;
    let (status, _, _) = get(server.addr, "/metrics", "").await;
    assert_eq!(status, 200, "a scraper on this machine");
    for claim in [
        "X-Forwarded-For: 127.0.0.1\r\n",
        "Forwarded: for=127.0.0.1\r\n",
    ] {
        let (status, _, _) = get(server.addr, "/metrics", claim).await;
        assert_eq!(
            status, 403,
            "relayed by the (trusted) proxy, even claiming loopback: {claim}"
        );
    }
}
