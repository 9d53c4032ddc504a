//! Auditing the log: anyone holding it replays it from genesis, checks every hash, sequence
//! number and signature, re-applies the ledger's own rules, recomputes the totals every
//! checkpoint committed to, raises alarms, and derives the settlement between operators.
//!
//! The [`Auditor`] is incremental: its state serializes, so a second run reads only the
//! entries appended since the first. [`replay`] checks and re-applies each entry;
//! [`settlement`] turns what was replayed into the report and the settlement matrix.

mod replay;
mod settlement;
mod store_check;

pub use settlement::{
    AuditReport, CatalogVersion, DEFAULT_REPORT_GRACE, IssuerValue, KeySeries, Period,
    ReportOptions, SettlementCell,
};
pub use store_check::{StoreMismatch, check_store, compare_with_store};

use crate::rules::LedgerState;
use scrip_spec::ledger::{Hash32, IssuerTotals, LogEntry, MAX_CLOCK_SKEW};
use scrip_spec::{Nullifier, TokenKeyId, UnixSeconds};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The first thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log entry {seq}: {problem}")]
pub struct Tampering {
    /// The first bad entry.
    pub seq: u64,
    /// What is wrong with it.
    pub problem: String,
}

/// One UTC day's spends of one issuer's tokens at one operator, for settlement by period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Day(u64);

/// One UTC hour, for the per-key series: a ledger one day old still draws a curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Hour(u64);

impl Hour {
    fn of(at: scrip_spec::UnixSeconds) -> Self {
        Hour(at / 3_600)
    }
}

/// One key's spends, split at its last issuance report: those its reports must cover, and the
/// later ones by the minute the ledger recorded them.
///
/// A token spent at ledger time `t` was signed before `t`, so by the issuer's clock before
/// `t + MAX_CLOCK_SKEW`: a spend recorded at or before `reported_until - MAX_CLOCK_SKEW` is of a
/// token the reports so far counted. The later spends move into `covered` as reports reach
/// them. They are held per minute, each minute by its end, so a key whose issuer stops
/// reporting (it has nothing new to report) holds at most one count per minute of its
/// redemption window; a later spend counts as covered once a report's cut reaches the end of
/// its minute, up to 59 s later than to the second, in the issuer's favour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeySpends {
    /// Tokens spent at or before the cut of the last report.
    covered: u64,
    /// Tokens spent after it, by the end of the minute they were recorded in.
    later: BTreeMap<UnixSeconds, u64>,
}

impl KeySpends {
    /// The last instant whose spends the reports up to `reported_until` must cover.
    fn cut(reported_until: UnixSeconds) -> UnixSeconds {
        reported_until.saturating_sub(MAX_CLOCK_SKEW)
    }

    /// `tokens` spent at `at`, with the key's reports reaching `reported_until`.
    fn spend(&mut self, at: UnixSeconds, tokens: u64, reported_until: UnixSeconds) {
        if at <= Self::cut(reported_until) {
            self.covered += tokens;
        } else {
            *self
                .later
                .entry(at.div_ceil(60).saturating_mul(60))
                .or_default() += tokens;
        }
    }

    /// The key's reports now reach `reported_until`.
    fn reported(&mut self, reported_until: UnixSeconds) {
        let still_later = self
            .later
            .split_off(&Self::cut(reported_until).saturating_add(1));
        self.covered += self.later.values().sum::<u64>();
        self.later = still_later;
    }
}

/// Spends of one day, catalog version, issuer, redeemer and kind.
type DayCell = (Day, u64, String, String, String);

/// The audit's running state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Auditor {
    state: Option<LedgerState>,
    prev: Hash32,
    entries: u64,
    checkpoints: u64,
    /// Live spent set: nullifier → (key, entry); a key's nullifiers leave it when pruned.
    spent: HashMap<Nullifier, (TokenKeyId, u64)>,
    issuers: BTreeMap<String, IssuerTotals>,
    /// `(count, value at the price in force when spent)` per cell.
    days: BTreeMap<DayCell, (u64, u64)>,
    /// Tokens issued and spent per key and hour.
    key_hours: BTreeMap<(TokenKeyId, Hour), (u64, u64)>,
    /// Per key: its spends before and since its last issuance report.
    key_spends: BTreeMap<TokenKeyId, KeySpends>,
    requests: std::collections::HashSet<[u8; 32]>,
    spends_outside_window: u64,
    /// Every catalog the log set, by the entry that set it (0: the genesis).
    catalogs: BTreeMap<u64, scrip_spec::Catalog>,
    /// The last price each kind had, so that spends of a kind since removed keep a value.
    last_prices: BTreeMap<String, u64>,
    /// Per issuer: value of its tokens reported issued and spent, each at the price in force
    /// when it was recorded.
    values: BTreeMap<String, (u64, u64)>,
    /// On a committee ledger: the last entry before each change of consensus session (the
    /// heads the nodes certify), the most recent few, and the session of the last entry.
    #[serde(default)]
    session_ends: BTreeMap<u64, Hash32>,
    #[serde(default)]
    last_session: Option<u64>,
    /// Whether spent tokens' signatures are verified: always, except when a ledger re-reads
    /// its own log at start-up (it verified them when it wrote them).
    #[serde(skip, default = "verify_by_default")]
    verify_tokens: bool,
}

fn verify_by_default() -> bool {
    true
}

impl Default for Auditor {
    fn default() -> Self {
        Self {
            state: None,
            prev: Hash32([0; 32]),
            entries: 0,
            checkpoints: 0,
            session_ends: BTreeMap::new(),
            last_session: None,
            spent: HashMap::new(),
            issuers: BTreeMap::new(),
            days: BTreeMap::new(),
            key_hours: BTreeMap::new(),
            key_spends: BTreeMap::new(),
            requests: std::collections::HashSet::new(),
            spends_outside_window: 0,
            catalogs: BTreeMap::new(),
            last_prices: BTreeMap::new(),
            values: BTreeMap::new(),
            verify_tokens: true,
        }
    }
}

impl Auditor {
    /// An auditor that takes spent tokens' signatures as verified: for a ledger checking the
    /// derived state of its own database against its log, every other check included.
    pub fn trusting_tokens() -> Self {
        Self {
            verify_tokens: false,
            ..Self::default()
        }
    }
}

/// Replays `entries` from genesis and reports over all time, at the system clock.
pub fn audit(entries: &[LogEntry]) -> Result<AuditReport, Tampering> {
    audit_with(entries, &ReportOptions::new(Period::all()))
}

/// Replays `entries` from genesis and reports as `options` say.
pub fn audit_with(entries: &[LogEntry], options: &ReportOptions) -> Result<AuditReport, Tampering> {
    let mut auditor = Auditor::default();
    for e in entries {
        auditor.feed(e)?;
    }
    Ok(auditor.report(options))
}

/// Reads the whole log from a ledger over HTTP.
pub async fn fetch_log(
    client: &scrip_common::clients::LedgerClient,
) -> Result<Vec<LogEntry>, scrip_common::clients::LedgerClientError> {
    let mut entries = Vec::new();
    let mut from = 0;
    loop {
        let page = client
            .log(from, scrip_spec::api::ledger::MAX_LOG_PAGE)
            .await?;
        if page.entries.is_empty() && page.next.is_some() {
            return Ok(entries);
        }
        entries.extend(page.entries);
        match page.next {
            Some(n) => from = n,
            None => return Ok(entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_are_covered_once_a_report_reaches_the_end_of_their_minute() {
        let until = 60 * 30_000_000;
        let mut spends = KeySpends::default();
        spends.spend(until - MAX_CLOCK_SKEW, 2, until);
        spends.spend(until - MAX_CLOCK_SKEW + 1, 3, until);
        spends.spend(until + 30, 4, until);
        assert_eq!((spends.covered, spends.later.len()), (2, 2), "at the cut");
        spends.reported(until + MAX_CLOCK_SKEW + 59);
        assert_eq!(spends.covered, 5, "the minute ending at `until` is reached");
        spends.reported(until + MAX_CLOCK_SKEW + 60);
        assert_eq!((spends.covered, spends.later.len()), (9, 0));
    }
}
