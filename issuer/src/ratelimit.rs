//! Limits on failed card attempts, per source address and in total, over fixed windows, so
//! guessing codes stays hopeless at any scale (a code has 130 random bits besides).

use crate::config::RateLimitConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure counters.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    state: Mutex<Windows>,
}

#[derive(Debug)]
struct Windows {
    started: Instant,
    global: u32,
    per_source: HashMap<IpAddr, u32>,
}

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            state: Mutex::new(Windows {
                started: Instant::now(),
                global: 0,
                per_source: HashMap::new(),
            }),
        }
    }

    fn with_windows<T>(&self, f: impl FnOnce(&mut Windows, Duration) -> T) -> T {
        let window = Duration::from_secs(self.config.window_secs.max(1));
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if w.started.elapsed() >= window {
            // A new window: every counter starts again (and the map cannot grow forever).
            w.started = Instant::now();
            w.global = 0;
            w.per_source.clear();
        }
        let left = window.saturating_sub(w.started.elapsed());
        f(&mut w, left)
    }

    /// `Some(seconds to wait)` if `source` or the issuer as a whole is over its limit.
    pub fn check(&self, source: IpAddr) -> Option<u64> {
        self.with_windows(|w, left| {
            let over = w.global >= self.config.global
                || w.per_source.get(&source).copied().unwrap_or(0) >= self.config.per_source;
            over.then(|| left.as_secs().max(1))
        })
    }

    /// Counts a failed attempt from `source`.
    pub fn failed(&self, source: IpAddr) {
        self.with_windows(|w, _| {
            w.global = w.global.saturating_add(1);
            *w.per_source.entry(source).or_default() += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_then_global() {
        let limiter = RateLimiter::new(RateLimitConfig {
            window_secs: 3600,
            per_source: 2,
            global: 3,
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(limiter.check(a), None);
        limiter.failed(a);
        limiter.failed(a);
        assert!(limiter.check(a).is_some(), "a is over its own limit");
        assert_eq!(limiter.check(b), None, "b is not");
        limiter.failed(b);
        assert!(limiter.check(b).is_some(), "the global limit is reached");
        assert!(limiter.check(a).expect("limited") <= 3600);
    }
}
