//! Rate limits and caps: what protects everyone from one abusive or broken client.
//!
//! Rates use `governor` (GCRA) keyed by IP address or by public key; caps are
//! counters whose tickets give their place back when dropped. A refused client is
//! always told, with a code and a time to retry: a rate-limited distress flag is
//! answered like any other request, never dropped in silence.
//!
//! Per-address limits (new connections, open connections, connections not yet
//! logged in, failed logins) count an IPv6 address by its /64 — one subscriber's
//! allocation, in which an attacker may pick any of 2^64 addresses — and an
//! IPv4-mapped IPv6 address as the IPv4 address it is ([`address_key`]).
//!
//! The address is the client's: behind a configured trusted proxy it is the one
//! the proxy names (`transport::forwarded`), so these limits work behind nginx.
//! Loopback addresses are exempt unless `limit_loopback` is set: without a
//! trusted-proxy list, every client behind a local proxy arrives from 127.0.0.1,
//! and limiting that one address would limit everyone together.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use peerhub_protocol::PublicKey;

use crate::error::ServerError;

/// Tunables, with their defaults.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// New connections per IP per minute (burst: half of it).
    pub connects_per_ip_per_minute: u32,
    /// Failed logins per IP per minute (burst 10).
    pub failed_logins_per_ip_per_minute: u32,
    /// Failed logins per key per minute (burst 5).
    pub failed_logins_per_key_per_minute: u32,
    /// Messages per key per second, sustained.
    pub messages_per_second: u32,
    /// Messages per key in a burst.
    pub message_burst: u32,
    /// Flags per key per minute, sustained (burst 10). Refused flags are answered.
    pub flags_per_minute: u32,
    /// Controls and other signed commands per key per second (burst 30).
    pub commands_per_second: u32,
    /// Flags kept in full per group per minute (burst the same). Beyond it a flag
    /// is still recorded and routed, as a counted merge (or a new escalation
    /// without context), and answered as usual.
    pub flags_per_group_per_minute: u32,
    /// Flags kept in full about one person in one group per minute (burst the
    /// same); beyond it, as for the group.
    pub flags_per_person_per_minute: u32,
    /// Unsigned requests (`escalations`, `escalation_detail`, `rota`, `records`)
    /// per key per second (burst 10).
    pub reads_per_second: u32,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections per IP.
    pub max_connections_per_ip: usize,
    /// Open connections per logged-in key.
    pub max_connections_per_key: usize,
    /// Connections that have not logged in yet.
    pub max_pending_logins: usize,
    /// Connections from one address (an IPv6 /64) that have not logged in yet.
    pub max_pending_logins_per_ip: usize,
    /// People one group's room may hold: participants admitted this session and
    /// staff (people only waiting do not count).
    pub max_members_per_group: usize,
    /// People one group's waiting room may hold (never admitted, not staff); a
    /// newcomer past it replaces the longest-gone one who is offline, or is told
    /// `waiting_room_full`.
    pub max_waiting_per_group: usize,
    /// A waiting-only record (never admitted) of someone not connected expires
    /// this long after their first join; all of them expire when a session ends.
    pub waiting_expiry: Duration,
    /// Apply per-IP limits to loopback addresses too.
    pub limit_loopback: bool,
    /// How often an idle connection is pinged.
    pub ping_interval: Duration,
    /// A connection silent (no frame, no pong) this long is closed.
    pub idle_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            connects_per_ip_per_minute: 120,
            failed_logins_per_ip_per_minute: 30,
            failed_logins_per_key_per_minute: 10,
            messages_per_second: 5,
            message_burst: 20,
            flags_per_minute: 20,
            commands_per_second: 5,
            flags_per_group_per_minute: 30,
            flags_per_person_per_minute: 10,
            reads_per_second: 2,
            max_connections: 20_000,
            max_connections_per_ip: 1_000,
            max_connections_per_key: 16,
            max_pending_logins: 2_000,
            max_pending_logins_per_ip: 20,
            max_members_per_group: 1_000,
            max_waiting_per_group: 200,
            waiting_expiry: Duration::from_secs(3_600),
            limit_loopback: false,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

fn per_minute(rate: u32, burst: u32) -> Quota {
    Quota::per_minute(nonzero(rate)).allow_burst(nonzero(burst))
}

fn per_second(rate: u32, burst: u32) -> Quota {
    Quota::per_second(nonzero(rate)).allow_burst(nonzero(burst))
}

/// Checks one key against a limiter: `Ok`, or the time to wait.
fn check<K: Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), u64> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        (wait.as_millis() as u64).max(1)
    })
}

/// Counts held places per key; a [`Place`] gives its place back when dropped.
#[derive(Debug)]
struct Counts<K: Hash + Eq>(Mutex<HashMap<K, usize>>);

impl<K: Hash + Eq + Clone + Send + 'static> Counts<K> {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(HashMap::new())))
    }

    fn take(self: &Arc<Self>, key: K, cap: usize) -> Option<Place<K>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(key.clone()).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(Place {
            counts: self.clone(),
            key,
        })
    }

    fn held(&self, key: &K) -> usize {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied().unwrap_or(0)
    }

    fn give_back(&self, key: &K) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                map.remove(key);
            }
        }
    }
}

/// A held place under a cap.
#[derive(Debug)]
pub struct Place<K: Hash + Eq + Clone + Send + 'static> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone + Send + 'static> Drop for Place<K> {
    fn drop(&mut self) {
        self.counts.give_back(&self.key);
    }
}

/// The key an address is counted under by every per-address limit: IPv4 as it
/// is (IPv4-mapped IPv6 included), IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
    }
}

/// Places a connection holds while it is open.
#[derive(Debug)]
pub struct ConnectionTicket {
    _total: Place<()>,
    _ip: Option<Place<IpAddr>>,
    /// Held until the connection logs in.
    pub pending_login: Option<PendingLogin>,
}

/// A connection's places under the caps on connections not logged in yet: in
/// all, and from its address (when per-address limits apply to it).
#[derive(Debug)]
pub struct PendingLogin {
    _total: Place<()>,
    _ip: Option<Place<IpAddr>>,
}

/// Why a connection was turned away before the WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many new connections from this address: retry after (ms).
    TooFast(u64),
    /// Too many open connections (in all, from this address, or not logged in).
    Full(&'static str),
}

/// Every limiter and cap of one server.
pub struct Limits {
    settings: LimitSettings,
    connects: DefaultKeyedRateLimiter<IpAddr>,
    failed_ip: DefaultKeyedRateLimiter<IpAddr>,
    failed_key: DefaultKeyedRateLimiter<PublicKey>,
    messages: DefaultKeyedRateLimiter<PublicKey>,
    flags: DefaultKeyedRateLimiter<PublicKey>,
    commands: DefaultKeyedRateLimiter<PublicKey>,
    reads: DefaultKeyedRateLimiter<PublicKey>,
    total: Arc<Counts<()>>,
    per_ip: Arc<Counts<IpAddr>>,
    per_key: Arc<Counts<PublicKey>>,
    pending: Arc<Counts<()>>,
    pending_per_ip: Arc<Counts<IpAddr>>,
    /// Where hits are counted (`peerhub_rate_limited_total`), when running in a hub.
    hits: Option<prometheus::IntCounterVec>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Limiters and caps for `settings`.
    pub fn new(settings: LimitSettings) -> Self {
        let s = &settings;
        Self {
            connects: DefaultKeyedRateLimiter::keyed(per_minute(
                s.connects_per_ip_per_minute,
                s.connects_per_ip_per_minute / 2,
            )),
            failed_ip: DefaultKeyedRateLimiter::keyed(per_minute(
                s.failed_logins_per_ip_per_minute,
                10,
            )),
            failed_key: DefaultKeyedRateLimiter::keyed(per_minute(
                s.failed_logins_per_key_per_minute,
                5,
            )),
            messages: DefaultKeyedRateLimiter::keyed(per_second(
                s.messages_per_second,
                s.message_burst,
            )),
            flags: DefaultKeyedRateLimiter::keyed(per_minute(s.flags_per_minute, 10)),
            commands: DefaultKeyedRateLimiter::keyed(per_second(s.commands_per_second, 30)),
            reads: DefaultKeyedRateLimiter::keyed(per_second(s.reads_per_second, 10)),
            total: Counts::new(),
            per_ip: Counts::new(),
            per_key: Counts::new(),
            pending: Counts::new(),
            pending_per_ip: Counts::new(),
            settings,
            hits: None,
        }
    }

    /// Counts every hit, by limit, in `hits` (a counter vector labelled `limit`).
    pub fn counting_hits_in(mut self, hits: prometheus::IntCounterVec) -> Self {
        self.hits = Some(hits);
        self
    }

    /// Counts one refusal by `limit`.
    fn count_hit(&self, limit: &str) {
        if let Some(hits) = &self.hits {
            hits.with_label_values(&[limit]).inc();
        }
    }

    /// `outcome`, counted when it is a refusal.
    fn hit<T>(&self, limit: &str, outcome: Result<T, u64>) -> Result<T, u64> {
        if outcome.is_err() {
            self.count_hit(limit);
        }
        outcome
    }

    /// Open connections, and of those the ones not logged in yet.
    pub fn connection_counts(&self) -> (usize, usize) {
        (self.total.held(&()), self.pending.held(&()))
    }

    /// The settings in force.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    fn limits_ip(&self, ip: &IpAddr) -> bool {
        self.settings.limit_loopback || !ip.to_canonical().is_loopback()
    }

    /// Admits a new connection from the client address `ip`, or says why not.
    pub fn admit_connection(&self, ip: IpAddr) -> Result<ConnectionTicket, Refusal> {
        let per_ip = self.limits_ip(&ip);
        let ip = address_key(ip);
        if per_ip {
            self.hit("connections", check(&self.connects, &ip))
                .map_err(Refusal::TooFast)?;
        }
        let full = |why: &'static str| {
            self.count_hit("connection_caps");
            Refusal::Full(why)
        };
        let total = self
            .total
            .take((), self.settings.max_connections)
            .ok_or_else(|| full("the hub is full"))?;
        let ip_place = match per_ip {
            true => Some(
                self.per_ip
                    .take(ip, self.settings.max_connections_per_ip)
                    .ok_or_else(|| full("too many connections from your address"))?,
            ),
            false => None,
        };
        // One address's share first, so that it cannot take the whole pool.
        let pending_ip = match per_ip {
            true => Some(
                self.pending_per_ip
                    .take(ip, self.settings.max_pending_logins_per_ip)
                    .ok_or_else(|| {
                        self.count_hit("pending_logins_per_address");
                        Refusal::Full("too many connections from your address waiting to log in")
                    })?,
            ),
            false => None,
        };
        let pending = self
            .pending
            .take((), self.settings.max_pending_logins)
            .ok_or_else(|| full("too many connections waiting to log in"))?;
        Ok(ConnectionTicket {
            _total: total,
            _ip: ip_place,
            pending_login: Some(PendingLogin {
                _total: pending,
                _ip: pending_ip,
            }),
        })
    }

    /// Counts a failed login; `Err` once the address or key has failed too often.
    pub fn failed_login(&self, ip: IpAddr, key: Option<&PublicKey>) -> Result<(), u64> {
        if self.limits_ip(&ip) {
            let ip = address_key(ip);
            self.hit("failed_logins_per_address", check(&self.failed_ip, &ip))?;
        }
        if let Some(key) = key {
            self.hit("failed_logins_per_key", check(&self.failed_key, key))?;
        }
        Ok(())
    }

    /// Takes a place for one more connection of `key`.
    pub fn key_connection(&self, key: PublicKey) -> Result<Place<PublicKey>, ServerError> {
        let place = self
            .per_key
            .take(key, self.settings.max_connections_per_key);
        if place.is_none() {
            self.count_hit("connections_per_key");
        }
        place.ok_or(ServerError::RateLimited {
            retry_after_ms: 5_000,
            what: "too many connections for this key at once",
        })
    }

    /// A message from `key`.
    pub fn message(&self, key: &PublicKey) -> Result<(), ServerError> {
        self.hit("messages", check(&self.messages, key))
            .map_err(|retry_after_ms| ServerError::RateLimited {
                retry_after_ms,
                what: "you are sending messages too quickly",
            })
    }

    /// A distress flag from `key` over its limit: `Err(retry_after_ms)`. The flag is
    /// still checked and counted on the escalation about the same person, if one
    /// is open, and its raiser is answered with the helplines.
    pub fn flag_wait(&self, key: &PublicKey) -> Result<(), u64> {
        self.hit("flags", check(&self.flags, key))
    }

    /// An unsigned request (`escalations`, `escalation_detail`, `rota`,
    /// `records`) from `key`.
    pub fn read(&self, key: &PublicKey) -> Result<(), ServerError> {
        self.hit("reads", check(&self.reads, key))
            .map_err(|retry_after_ms| ServerError::RateLimited {
                retry_after_ms,
                what: "too many requests in a short time",
            })
    }

    /// Any other signed command from `key`.
    pub fn command(&self, key: &PublicKey) -> Result<(), ServerError> {
        self.hit("commands", check(&self.commands, key))
            .map_err(|retry_after_ms| ServerError::RateLimited {
                retry_after_ms,
                what: "too many requests in a short time",
            })
    }

    /// Forgets idle keys (call now and then so the maps stay small).
    pub fn forget_idle(&self) {
        self.connects.retain_recent();
        self.failed_ip.retain_recent();
        self.failed_key.retain_recent();
        self.messages.retain_recent();
        self.flags.retain_recent();
        self.commands.retain_recent();
        self.reads.retain_recent();
    }
}

/// The flag limits per group and per person, kept by the escalation router (it
/// checks them only for flags that passed every other check, so nobody outside a
/// group spends its allowance).
pub struct FlagLimits {
    group: DefaultKeyedRateLimiter<peerhub_protocol::GroupId>,
    person: DefaultKeyedRateLimiter<(peerhub_protocol::GroupId, PublicKey)>,
}

impl std::fmt::Debug for FlagLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagLimits").finish_non_exhaustive()
    }
}

impl FlagLimits {
    /// The limiters for `settings`.
    pub fn new(settings: &LimitSettings) -> Self {
        let group = settings.flags_per_group_per_minute;
        let person = settings.flags_per_person_per_minute;
        Self {
            group: DefaultKeyedRateLimiter::keyed(per_minute(group, group)),
            person: DefaultKeyedRateLimiter::keyed(per_minute(person, person)),
        }
    }

    /// Whether a flag in `group` about `about` is within both limits (each check
    /// spends one from each allowance).
    pub fn within(&self, group: &peerhub_protocol::GroupId, about: &PublicKey) -> bool {
        let by_group = self.group.check_key(group).is_ok();
        let by_person = self.person.check_key(&(group.clone(), *about)).is_ok();
        by_group && by_person
    }

    /// Forgets idle keys.
    pub fn forget_idle(&self) {
        self.group.retain_recent();
        self.person.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_give_places_back_when_dropped() {
        let limits = Limits::new(LimitSettings {
            max_connections_per_key: 2,
            ..LimitSettings::default()
        });
        let key = PublicKey([1; 32]);
        let a = limits.key_connection(key).unwrap();
        let _b = limits.key_connection(key).unwrap();
        assert!(limits.key_connection(key).is_err());
        drop(a);
        assert!(limits.key_connection(key).is_ok());
    }

    #[test]
    fn messages_have_a_burst_then_a_rate() {
        let limits = Limits::new(LimitSettings {
            message_burst: 3,
            messages_per_second: 1,
            ..LimitSettings::default()
        });
        let key = PublicKey([2; 32]);
        for _ in 0..3 {
            limits.message(&key).unwrap();
        }
        match limits.message(&key) {
            Err(ServerError::RateLimited { retry_after_ms, .. }) => {
                assert!(retry_after_ms <= 1_000)
            }
            other => panic!("{other:?}"),
        }
        assert!(
            limits.message(&PublicKey([3; 32])).is_ok(),
            "keys are limited apart"
        );
    }

    #[test]
    fn loopback_is_exempt_from_per_ip_limits_unless_asked() {
        let settings = LimitSettings {
            connects_per_ip_per_minute: 2,
            max_connections_per_ip: 1,
            ..LimitSettings::default()
        };
        let open = Limits::new(settings.clone());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let tickets: Vec<_> = (0..5).map(|_| open.admit_connection(lo).unwrap()).collect();
        assert_eq!(tickets.len(), 5);
        let strict = Limits::new(LimitSettings {
            limit_loopback: true,
            ..settings.clone()
        });
        let _first = strict.admit_connection(lo).unwrap();
        assert!(
            matches!(strict.admit_connection(lo), Err(Refusal::TooFast(_))),
            "rate first"
        );
        let capped = Limits::new(LimitSettings {
            limit_loopback: true,
            connects_per_ip_per_minute: 100,
            ..settings
        });
        let _held = capped.admit_connection(lo).unwrap();
        assert!(
            matches!(capped.admit_connection(lo), Err(Refusal::Full(_))),
            "then the cap"
        );
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_ipv6_address_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2:ffff::1")),
            address_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(
            address_key(ip("::ffff:203.0.113.7")),
            address_key(ip("::ffff:203.0.113.8")),
            "mapped IPv4 addresses are not one /64"
        );
        assert_eq!(address_key(ip("203.0.113.7")), ip("203.0.113.7"));
    }

    #[test]
    fn pending_logins_are_capped_per_address_and_per_64_within_the_pool() {
        let limits = Limits::new(LimitSettings {
            max_pending_logins: 5,
            max_pending_logins_per_ip: 2,
            ..LimitSettings::default()
        });
        let a = limits.admit_connection(ip("2001:db8::1")).unwrap();
        let _b = limits.admit_connection(ip("2001:db8::ffff:2")).unwrap();
        assert_eq!(
            limits.admit_connection(ip("2001:db8::3")).err(),
            Some(Refusal::Full(
                "too many connections from your address waiting to log in"
            )),
            "a third from the same /64"
        );
        let _c = limits.admit_connection(ip("2001:db8:0:1::1")).unwrap();
        let _d = limits.admit_connection(ip("198.51.100.1")).unwrap();
        let _e = limits.admit_connection(ip("::ffff:198.51.100.1")).unwrap();
        assert!(
            limits.admit_connection(ip("198.51.100.1")).is_err(),
            "the mapped form is the same address"
        );
        assert_eq!(
            limits.admit_connection(ip("192.0.2.1")).err(),
            Some(Refusal::Full("too many connections waiting to log in")),
            "the pool is full"
        );
        // Logging in gives both places back.
        let mut a = a;
        a.pending_login = None;
        assert!(limits.admit_connection(ip("2001:db8::4")).is_ok());
        assert_eq!(limits.connection_counts(), (5, 4), "a is open, logged in");
    }

    #[test]
    fn every_per_address_limit_counts_a_64_as_one() {
        let limits = Limits::new(LimitSettings {
            connects_per_ip_per_minute: 4,      // burst 2
            failed_logins_per_ip_per_minute: 1, // burst 10
            ..LimitSettings::default()
        });
        let _one = limits.admit_connection(ip("2001:db8:5:6::1")).unwrap();
        let _two = limits.admit_connection(ip("2001:db8:5:6::2")).unwrap();
        assert!(matches!(
            limits.admit_connection(ip("2001:db8:5:6::3")),
            Err(Refusal::TooFast(_))
        ));
        assert!(limits.admit_connection(ip("2001:db8:5:7::1")).is_ok());
        for i in 0..10 {
            let rotating = ip(&format!("2001:db8:9:9::{:x}", i + 1));
            limits.failed_login(rotating, None).unwrap();
        }
        assert!(limits.failed_login(ip("2001:db8:9:9::ff"), None).is_err());
        assert!(limits.failed_login(ip("2001:db8:9:a::1"), None).is_ok());

        let capped = Limits::new(LimitSettings {
            max_connections_per_ip: 1,
            ..LimitSettings::default()
        });
        let _held = capped.admit_connection(ip("2001:db8::1")).unwrap();
        assert_eq!(
            capped.admit_connection(ip("2001:db8::2")).err(),
            Some(Refusal::Full("too many connections from your address"))
        );
    }

    #[test]
    fn mapped_loopback_is_loopback() {
        let limits = Limits::new(LimitSettings {
            max_pending_logins_per_ip: 1,
            ..LimitSettings::default()
        });
        let _a = limits.admit_connection(ip("::ffff:127.0.0.1")).unwrap();
        let _b = limits.admit_connection(ip("::ffff:127.0.0.1")).unwrap();
        let strict = Limits::new(LimitSettings {
            max_pending_logins_per_ip: 1,
            limit_loopback: true,
            ..LimitSettings::default()
        });
        let _c = strict.admit_connection(ip("127.0.0.1")).unwrap();
        assert!(strict.admit_connection(ip("::ffff:127.0.0.1")).is_err());
    }
}
