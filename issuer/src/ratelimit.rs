//! The issuer's rate limits (PROTOCOL.md section 9.6), all in one place. Three counters over
//! fixed windows, none of which an attacker can use to lock out honest users:
//!
//! - **per source**: every failed attempt of a source (a mistyped or unknown code, a refused
//!   request on an existing card). Over its limit, that source waits.
//! - **per card**: refused requests on an existing card, by its storage hash. Over its limit,
//!   that card waits, whoever asks; only cards that exist are counted, so a flood of unknown
//!   codes cannot fill this counter.
//! - **the unknown-code ceiling**: unknown-code lookups in all. Past it, a source that already
//!   caused one in this window is refused before the lookup; a source that did not, and so
//!   every holder of a valid card who has not been guessing, goes on.
//!
//! A mistyped code (its check symbol fails) costs no lookup and counts for its source only.
//! Guessing stays hopeless at any rate: a code has 130 random bits.

use crate::config::RateLimitConfig;
use crate::service::OpenError;
use axum::http::HeaderMap;
use scrip_common::ratelimit::{SourceConfig, SourceKey, WindowCounter};
use std::net::IpAddr;
use std::time::Duration;

/// What a refused request counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused before any lookup (a code whose check symbol fails, a malformed opening).
    NoLookup,
    /// A lookup that found no card.
    UnknownCode,
    /// A refusal on an existing card, by its storage hash.
    OnCard([u8; 32]),
}

impl Failure {
    /// What `error` counts as, for a request whose code hashes to `card` (`None` if it does
    /// not parse); `None` if it is not the client's failure (storage failed).
    pub fn of(error: &OpenError, card: Option<[u8; 32]>) -> Option<Self> {
        Some(match (error, card) {
            (OpenError::Internal(_), _) => return None,
            (OpenError::InvalidCard { found: false }, _) => Self::UnknownCode,
            (OpenError::MalformedCode(_) | OpenError::Malformed(_) | OpenError::TooLarge(_), _)
            | (_, None) => Self::NoLookup,
            (_, Some(hash)) => Self::OnCard(hash),
        })
    }
}

/// Which limit refused a request (for the log; the answer does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The source's failed attempts.
    Source,
    /// The card's refused requests.
    Card,
    /// The unknown-code ceiling, for a source that already caused an unknown-code lookup.
    UnknownCodes,
}

/// The counters.
#[derive(Debug)]
pub struct RateLimiter {
    sources: SourceConfig,
    failures: WindowCounter<SourceKey>,
    cards: WindowCounter<[u8; 32]>,
    unknown: WindowCounter<()>,
    /// Sources that caused an unknown-code lookup this window: its limit of 1 makes `over`
    /// mean "already caused one".
    unknown_sources: WindowCounter<SourceKey>,
}

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(config: &RateLimitConfig) -> Self {
        let window = Duration::from_secs(config.window_secs);
        let ceiling = config.unknown_code_ceiling;
        Self {
            sources: config.sources(),
            failures: WindowCounter::new(config.per_source, window),
            cards: WindowCounter::new(config.per_card, window),
            unknown: WindowCounter::new(ceiling, window),
            unknown_sources: WindowCounter::new(u32::from(ceiling > 0), window),
        }
    }

    /// Where a request from `peer` with `headers` comes from.
    pub fn source(&self, peer: IpAddr, headers: &HeaderMap) -> SourceKey {
        self.sources.source(peer, headers)
    }

    /// Before a request from `source` about the card hashing to `card`: `Some` (the limit and
    /// the seconds to wait) if it must be refused.
    pub fn check(&self, source: &SourceKey, card: Option<&[u8; 32]>) -> Option<(Limited, u64)> {
        if let Some(wait) = self.failures.over(source) {
            return Some((Limited::Source, wait));
        }
        if let Some(wait) = card.and_then(|hash| self.cards.over(hash)) {
            return Some((Limited::Card, wait));
        }
        if let Some(wait) = self.unknown.over(&())
            && self.unknown_sources.over(source).is_some()
        {
            return Some((Limited::UnknownCodes, wait));
        }
        None
    }

    /// Counts a refused request from `source`.
    pub fn failed(&self, source: &SourceKey, failure: Failure) {
        self.failures.count(source);
        match failure {
            Failure::NoLookup => {}
            Failure::UnknownCode => {
                self.unknown.count(&());
                self.unknown_sources.count(source);
            }
            Failure::OnCard(hash) => self.cards.count(&hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_source: u32, per_card: u32, ceiling: u32) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            window_secs: 3600,
            per_source,
            per_card,
            unknown_code_ceiling: ceiling,
            ..RateLimitConfig::default()
        })
    }

    fn source(last: u8) -> SourceKey {
        SourceKey::of(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_source_over_its_limit_waits_and_another_does_not() {
        let l = limiter(2, 0, 0);
        l.failed(&source(1), Failure::NoLookup);
        assert_eq!(l.check(&source(1), None), None);
        l.failed(&source(1), Failure::UnknownCode);
        let (limit, wait) = l.check(&source(1), None).expect("limited");
        assert_eq!(limit, Limited::Source);
        assert!((1..=3600).contains(&wait));
        assert_eq!(l.check(&source(2), None), None);
    }

    #[test]
    fn a_card_over_its_limit_waits_from_every_source() {
        let l = limiter(100, 2, 0);
        let card = [7; 32];
        l.failed(&source(1), Failure::OnCard(card));
        l.failed(&source(2), Failure::OnCard(card));
        assert_eq!(
            l.check(&source(3), Some(&card)).map(|(l, _)| l),
            Some(Limited::Card)
        );
        assert_eq!(l.check(&source(3), Some(&[8; 32])), None, "another card");
        assert_eq!(l.check(&source(3), None), None);
    }

    #[test]
    fn past_the_ceiling_only_sources_that_caused_unknown_lookups_wait() {
        let l = limiter(100, 100, 3);
        for s in 1..=3 {
            l.failed(&source(s), Failure::UnknownCode);
        }
        // A typo from source 9 costs no lookup: not counted towards the ceiling.
        l.failed(&source(9), Failure::NoLookup);
        for s in 1..=3 {
            assert_eq!(
                l.check(&source(s), None).map(|(l, _)| l),
                Some(Limited::UnknownCodes)
            );
        }
        assert_eq!(l.check(&source(4), None), None, "a source that did not");
        assert_eq!(
            l.check(&source(9), Some(&[1; 32])),
            None,
            "nor one with a typo"
        );
    }

    #[test]
    fn failures_are_classified() {
        let hash = Some([5; 32]);
        let invalid = |found| OpenError::InvalidCard { found };
        assert_eq!(
            Failure::of(&invalid(false), hash),
            Some(Failure::UnknownCode)
        );
        assert_eq!(
            Failure::of(&invalid(true), hash),
            Some(Failure::OnCard([5; 32]))
        );
        assert_eq!(
            Failure::of(&OpenError::RequestIdReused, hash),
            Some(Failure::OnCard([5; 32]))
        );
        assert_eq!(
            Failure::of(&OpenError::TooLarge(1001), hash),
            Some(Failure::NoLookup)
        );
        assert_eq!(
            Failure::of(&OpenError::Internal(anyhow::anyhow!("disk")), hash),
            None
        );
    }
}
