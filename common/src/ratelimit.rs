//! Rate limits that cannot lock out honest users: who a request comes from (the peer, or the
//! client a trusted proxy names), and counters per key (a source, a card) over fixed windows
//! whose memory is bounded however many keys an attacker brings.

use axum::http::HeaderMap;
use serde::Deserialize;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to tell where a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Peers (a reverse proxy, a Tor front, the relay) whose `header` names the client. A
    /// request from any other peer is counted under the peer's own address, whatever it sends.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    /// The header such a proxy sets: `X-Forwarded-For` by default (the rightmost address that
    /// is not itself a trusted proxy is the client).
    #[serde(default = "default_header")]
    pub header: String,
}

fn default_header() -> String {
    "x-forwarded-for".to_owned()
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: default_header(),
        }
    }
}

impl SourceConfig {
    /// The source of a request from `peer` with `headers`, as the key its limits count under.
    ///
    /// Only a trusted peer's header is read, and in it only the addresses appended by trusted
    /// proxies: a client can put anything at the left of `X-Forwarded-For`, so the first
    /// address from the right that no trusted proxy added is the client. A header that does
    /// not parse counts the request under the proxy itself.
    pub fn source(&self, peer: IpAddr, headers: &HeaderMap) -> SourceKey {
        let peer = canonical(peer);
        if !self.trusted_proxies.iter().any(|p| canonical(*p) == peer) {
            return SourceKey::of(peer);
        }
        let mut client = peer;
        let lines: Vec<_> = headers.get_all(self.header.as_str()).iter().collect();
        // The last line is the nearest hop, as the last address of a line is.
        for value in lines.into_iter().rev() {
            let Ok(text) = value.to_str() else {
                return SourceKey::of(peer);
            };
            for hop in text.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(addr) => client = canonical(addr),
                    Err(_) => return SourceKey::of(peer),
                }
                if !self.trusted_proxies.iter().any(|p| canonical(*p) == client) {
                    return SourceKey::of(client);
                }
            }
        }
        SourceKey::of(client)
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// What a source's limits count under: an IPv4 address, or the /64 an IPv6 address is in
/// (one subscriber usually holds a whole /64, and would otherwise have 2^64 sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// One IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl SourceKey {
    /// The key of `addr`.
    pub fn of(addr: IpAddr) -> Self {
        match canonical(addr) {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Self::V6(prefix)
            }
        }
    }
}

/// Most keys one [`WindowCounter`] tracks in a window; beyond, new keys are not counted.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// Counts events per key over fixed windows and says when a key is over its limit.
///
/// Every counter starts again with each window, so the map cannot grow forever; within a
/// window at most [`MAX_TRACKED_KEYS`] keys are tracked, and keys beyond are neither counted nor
/// limited until the window ends. A shared count for them would let an attacker with enough
/// addresses (a few IPv6 /48s are enough) lock out every source not seen before; letting them
/// through only lets such an attacker past the per-source limit, which the limits on what it
/// can do per card and per ceiling still bound.
#[derive(Debug)]
pub struct WindowCounter<K> {
    limit: u32,
    window: Duration,
    max_keys: usize,
    state: Mutex<Window<K>>,
}

#[derive(Debug)]
struct Window<K> {
    started: Instant,
    counts: HashMap<K, u32>,
}

impl<K: Hash + Eq + Clone> WindowCounter<K> {
    /// A counter allowing `limit` events per key per `window` (`limit` 0: no limit).
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_max_keys(limit, window, MAX_TRACKED_KEYS)
    }

    /// [`Self::new`] tracking at most `max_keys` keys per window.
    pub fn with_max_keys(limit: u32, window: Duration, max_keys: usize) -> Self {
        Self {
            limit,
            window: window.max(Duration::from_secs(1)),
            max_keys: max_keys.max(1),
            state: Mutex::new(Window {
                started: Instant::now(),
                counts: HashMap::new(),
            }),
        }
    }

    fn with_window<T>(&self, f: impl FnOnce(&mut Window<K>, u64) -> T) -> T {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if w.started.elapsed() >= self.window {
            w.started = Instant::now();
            w.counts.clear();
        }
        let left = self.window.saturating_sub(w.started.elapsed());
        // Round up: "retry in 0 s" would invite an immediate retry that is refused again.
        let wait = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        f(&mut w, wait.max(1))
    }

    /// `Some(seconds to wait)` if `key` has reached its limit in this window.
    pub fn over(&self, key: &K) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        self.with_window(|w, wait| {
            let count = w.counts.get(key).copied().unwrap_or(0);
            (count >= self.limit).then_some(wait)
        })
    }

    /// Counts one event for `key`.
    pub fn count(&self, key: &K) {
        if self.limit == 0 {
            return;
        }
        let max_keys = self.max_keys;
        self.with_window(|w, _| w.bump(key, max_keys));
    }

    /// Counts one event for `key` and says whether it went over the limit:
    /// `Some(seconds to wait)` if this event is one too many (it is counted either way).
    pub fn hit(&self, key: &K) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let max_keys = self.max_keys;
        self.with_window(|w, wait| (w.bump(key, max_keys) > self.limit).then_some(wait))
    }

    /// How many keys are tracked in this window (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.with_window(|w, _| w.counts.len())
    }
}

impl<K: Hash + Eq + Clone> Window<K> {
    /// Adds one to `key`'s count and returns the new count (0 for a key beyond the bound,
    /// which is not counted).
    fn bump(&mut self, key: &K, max_keys: usize) -> u32 {
        if let Some(count) = self.counts.get_mut(key) {
            *count = count.saturating_add(1);
            return *count;
        }
        if self.counts.len() < max_keys {
            self.counts.insert(key.clone(), 1);
            return 1;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let config = SourceConfig {
            trusted_proxies: vec![ip("10.0.0.1"), ip("10.0.0.2")],
            ..SourceConfig::default()
        };
        let forged = headers(&["203.0.113.9"]);
        assert_eq!(
            config.source(ip("198.51.100.7"), &forged),
            SourceKey::of(ip("198.51.100.7")),
            "an untrusted peer's header is ignored"
        );
        // The client forged a left part; the trusted proxies appended the real client.
        let chain = headers(&["1.2.3.4, 198.51.100.7, 10.0.0.2"]);
        assert_eq!(
            config.source(ip("10.0.0.1"), &chain),
            SourceKey::of(ip("198.51.100.7"))
        );
        // Several header lines are one list; the last line is the nearest hop.
        let split = headers(&["1.2.3.4", "198.51.100.8"]);
        assert_eq!(
            config.source(ip("10.0.0.1"), &split),
            SourceKey::of(ip("198.51.100.8"))
        );
        assert_eq!(
            config.source(ip("10.0.0.1"), &headers(&["not an address"])),
            SourceKey::of(ip("10.0.0.1")),
            "garbage counts under the proxy"
        );
        assert_eq!(
            config.source(ip("10.0.0.1"), &HeaderMap::new()),
            SourceKey::of(ip("10.0.0.1")),
            "no header: the proxy itself"
        );
        assert_eq!(
            config.source(ip("::ffff:10.0.0.1"), &headers(&["198.51.100.9"])),
            SourceKey::of(ip("198.51.100.9")),
            "an IPv4-mapped peer is its IPv4 address"
        );
    }

    #[test]
    fn an_ipv6_subscriber_is_one_source() {
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn a_key_over_its_limit_does_not_limit_another() {
        let counter = WindowCounter::new(2, Duration::from_secs(3600));
        assert_eq!(counter.over(&"a"), None);
        assert_eq!(counter.hit(&"a"), None);
        assert_eq!(counter.hit(&"a"), None);
        let wait = counter.hit(&"a").expect("the third is over");
        assert!((1..=3600).contains(&wait), "{wait}");
        assert!(counter.over(&"a").is_some());
        assert_eq!(counter.over(&"b"), None, "b is not limited by a");
        counter.count(&"b");
        assert_eq!(counter.over(&"b"), None);
    }

    #[test]
    fn a_flood_of_keys_beyond_the_bound_locks_out_no_newcomer() {
        let counter = WindowCounter::with_max_keys(3, Duration::from_secs(3600), 2);
        for _ in 0..3 {
            counter.count(&1);
        }
        counter.count(&2);
        for k in 3..100 {
            for _ in 0..5 {
                counter.count(&k);
            }
        }
        assert_eq!(counter.tracked(), 2, "memory stays bounded");
        assert!(counter.over(&1).is_some(), "a tracked key keeps its count");
        assert_eq!(counter.over(&2), None);
        assert_eq!(
            counter.over(&1000),
            None,
            "a source never seen before is not refused because of the flood"
        );
        assert_eq!(counter.hit(&1001), None);
    }

    #[test]
    fn no_limit_counts_nothing() {
        let counter = WindowCounter::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            assert_eq!(counter.hit(&"a"), None);
        }
        assert_eq!(counter.tracked(), 0);
    }
}
