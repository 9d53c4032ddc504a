//! What the replay found, as a report: per-key issued and spent, alarms, value per issuer, and
//! the settlement matrix between operators over a period.

use super::replay::totals;
use super::{Auditor, Day, Hour, KeySpends};
use scrip_common::display::{date_time, when};
use scrip_spec::api::ledger::KeyRecord;
use scrip_spec::ledger::{Hash32, MAX_LIVE_KEYS, Totals};
use scrip_spec::{TokenKeyId, UnixSeconds};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Spends of one issuer's tokens at one redeeming operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementCell {
    /// Tokens per kind.
    pub tokens: BTreeMap<String, u64>,
    /// Their value in credits, at the catalog price in force at each spend.
    pub value: u64,
    /// What the issuer owes the redeemer for them: the value less the settlement fee of the
    /// catalog in force at each spend.
    pub owed: u64,
}

/// A period of settlement: `[from, until)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    /// First instant included.
    pub from: UnixSeconds,
    /// First instant excluded.
    pub until: UnixSeconds,
}

impl Period {
    /// Everything.
    pub fn all() -> Self {
        Self {
            from: 0,
            until: u64::MAX,
        }
    }

    /// A calendar month `YYYY-MM` (UTC), or a range `YYYY-MM-DD..YYYY-MM-DD` (end exclusive).
    pub fn parse(text: &str) -> Option<Self> {
        if let Some((a, b)) = text.split_once("..") {
            let (from, until) = (parse_date(a)?, parse_date(b)?);
            return (from < until).then_some(Self { from, until });
        }
        let (y, m) = text.split_once('-')?;
        let (y, m): (i64, u32) = (y.parse().ok()?, m.parse().ok()?);
        if !(1..=12).contains(&m) {
            return None;
        }
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Some(Self {
            from: days_from_civil(y, m, 1)?.checked_mul(86_400)?,
            until: days_from_civil(ny, nm, 1)?.checked_mul(86_400)?,
        })
    }
}

fn parse_date(text: &str) -> Option<u64> {
    let mut parts = text.split('-');
    let (y, m, d) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    if parts.next().is_some() || !(1..=31).contains(&d) || !(1..=12).contains(&m) {
        return None;
    }
    days_from_civil(y, m, d)?.checked_mul(86_400)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<u64> {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from(era * 146_097 + doe - 719_468).ok()
}

/// How long a key's last issuance report may age before spends beyond its reported count are
/// an alarm rather than a note, in seconds: two of the issuer's default report intervals
/// (`report_secs`, 3600 s).
pub const DEFAULT_REPORT_GRACE: u64 = 7_200;

/// What a report covers and the clock it judges lateness by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOptions {
    /// The settlement period.
    pub period: Period,
    /// How long a key's last issuance report may age before its unreported spends are an
    /// alarm (see [`DEFAULT_REPORT_GRACE`]).
    pub report_grace: u64,
    /// The audit's clock: for keys that are live and issuance reports that are late.
    pub now: UnixSeconds,
}

impl ReportOptions {
    /// A report settling `period`, with the default grace, at the system clock.
    pub fn new(period: Period) -> Self {
        Self {
            period,
            report_grace: DEFAULT_REPORT_GRACE,
            now: scrip_spec::now(),
        }
    }
}

/// What an audit found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Entries verified so far.
    pub entries: u64,
    /// Checkpoints verified (ledger signature, head and totals digest).
    pub checkpoints: u64,
    /// Hash of the last entry verified.
    pub head_hash: Option<Hash32>,
    /// Totals recomputed from the log.
    pub totals: Totals,
    /// Per issuer: credits sold, and the value of the tokens issued and redeemed.
    pub issuers: Vec<IssuerValue>,
    /// Per kind: tokens issued and spent.
    pub kinds: BTreeMap<String, (u64, u64)>,
    /// The settlement period.
    pub period: Option<Period>,
    /// `(issuer, redeemer) →` spends in the period.
    pub settlement: BTreeMap<(String, String), SettlementCell>,
    /// Fee the redeemer keeps, in basis points, in the current catalog. Each spend's fee is
    /// the one of the catalog in force when it was recorded: see `catalog_versions`.
    pub fee_bps: u16,
    /// The catalog versions under which the period's spends were recorded, oldest first.
    pub catalog_versions: Vec<CatalogVersion>,
    /// Net position per operator in the period, after the fee: owed to it minus owed by it.
    pub net: BTreeMap<String, i64>,
    /// Findings that are not tampering but need a look.
    pub alarms: Vec<String>,
    /// Findings that need no action: spends of tokens issued since their key's last issuance
    /// report, which the next report will cover.
    pub notes: Vec<String>,
    /// Per key, by day: cumulative tokens issued and spent.
    pub key_series: Vec<KeySeries>,
}

/// One key's issued and spent tokens over time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeySeries {
    /// The key.
    pub token_key_id: Option<TokenKeyId>,
    /// Its issuer.
    pub issuer: String,
    /// Its kind.
    pub kind: String,
    /// `(day start, cumulative issued, cumulative spent)`, one point per day with activity.
    pub points: Vec<(UnixSeconds, u64, u64)>,
}

/// A catalog in force during a settlement period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CatalogVersion {
    /// The entry that set it (0: the genesis).
    pub seq: u64,
    /// Its settlement fee, in basis points.
    pub fee_bps: u16,
    /// Tokens spent under it in the period.
    pub tokens: u64,
    /// Their value, at its prices.
    pub value: u64,
}

/// Value figures of one issuer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IssuerValue {
    /// The issuer.
    pub issuer: String,
    /// Credits of cards sold.
    pub credits_sold: u64,
    /// Catalog value of the tokens reported issued.
    pub value_issued: u64,
    /// Catalog value of its tokens spent anywhere.
    pub value_redeemed: u64,
}

impl Auditor {
    /// The findings so far, with the settlement of `options.period`.
    pub fn report(&self, options: &ReportOptions) -> AuditReport {
        let period = options.period;
        let Some(state) = &self.state else {
            return AuditReport::default();
        };
        let totals = totals(state, &self.issuers);
        let mut report = AuditReport {
            entries: self.entries,
            checkpoints: self.checkpoints,
            head_hash: Some(self.prev),
            fee_bps: state.catalog.settlement_fee_bps,
            period: Some(period),
            ..AuditReport::default()
        };
        let mut values: BTreeMap<String, IssuerValue> = self
            .values
            .iter()
            .map(|(issuer, (issued, redeemed))| {
                let value = IssuerValue {
                    issuer: issuer.clone(),
                    value_issued: *issued,
                    value_redeemed: *redeemed,
                    ..IssuerValue::default()
                };
                (issuer.clone(), value)
            })
            .collect();
        for k in &totals.keys {
            let per_kind = report.kinds.entry(k.kind.to_string()).or_default();
            per_kind.0 += k.issued;
            per_kind.1 += k.spent;
            if let Some(record) = state.keys.get(&k.token_key_id) {
                self.judge_issuance(record, options, &mut report);
            }
        }
        for t in &self.issuers {
            values
                .entry(t.0.clone())
                .or_insert_with(|| IssuerValue {
                    issuer: t.0.clone(),
                    ..IssuerValue::default()
                })
                .credits_sold = t.1.credits_sold;
        }
        for v in values.values() {
            if v.value_issued > v.credits_sold {
                report.alarms.push(format!(
                    "issuer {}: tokens worth {} credits issued against {} credits of cards sold",
                    v.issuer, v.value_issued, v.credits_sold
                ));
            }
        }
        if self.spends_outside_window > 0 {
            report.alarms.push(format!(
                "{} spends outside their key's redemption window",
                self.spends_outside_window
            ));
        }
        let now = options.now;
        let mut live: BTreeMap<(String, String), usize> = BTreeMap::new();
        for k in state.keys.values().filter(|k| k.is_live(now)) {
            *live
                .entry((k.info.issuer.clone(), k.info.kind.to_string()))
                .or_default() += 1;
        }
        for ((issuer, kind), n) in live {
            if n > MAX_LIVE_KEYS {
                report.alarms.push(format!(
                    "issuer {issuer} has {n} live {kind} keys, more than {MAX_LIVE_KEYS}"
                ));
            }
        }
        let mut versions: BTreeMap<u64, CatalogVersion> = BTreeMap::new();
        for ((Day(day), version, issuer, redeemer, kind), (count, value)) in &self.days {
            let at = day * 86_400;
            if at < period.from || at >= period.until {
                continue;
            }
            let cell = report
                .settlement
                .entry((issuer.clone(), redeemer.clone()))
                .or_default();
            *cell.tokens.entry(kind.clone()).or_default() += count;
            cell.value += value;
            let fee_bps = self
                .catalogs
                .get(version)
                .map_or(0, |c| c.settlement_fee_bps);
            let v = versions.entry(*version).or_insert_with(|| CatalogVersion {
                seq: *version,
                fee_bps,
                ..CatalogVersion::default()
            });
            v.tokens += count;
            v.value += value;
            // The redeemer keeps the fee in force at the spend from what the issuer pays for
            // the capacity it served: the issuer owes the value less that fee.
            cell.owed += value - value * u64::from(fee_bps) / 10_000;
        }
        report.catalog_versions = versions.into_values().collect();
        for ((issuer, redeemer), cell) in &report.settlement {
            if issuer != redeemer {
                let owed = i64::try_from(cell.owed).unwrap_or(i64::MAX);
                *report.net.entry(redeemer.clone()).or_default() += owed;
                *report.net.entry(issuer.clone()).or_default() -= owed;
            }
        }
        report.issuers = values.into_values().collect();
        let mut series: BTreeMap<TokenKeyId, KeySeries> = BTreeMap::new();
        for ((key, Hour(hour)), (issued, spent)) in &self.key_hours {
            let s = series.entry(*key).or_insert_with(|| {
                let info = state.keys.get(key).map(|k| &k.info);
                KeySeries {
                    token_key_id: Some(*key),
                    issuer: info.map(|i| i.issuer.clone()).unwrap_or_default(),
                    kind: info.map(|i| i.kind.to_string()).unwrap_or_default(),
                    points: Vec::new(),
                }
            });
            let (ci, cs) = s.points.last().map(|p| (p.1, p.2)).unwrap_or((0, 0));
            s.points.push((hour * 3_600, ci + issued, cs + spent));
        }
        report.key_series = series.into_values().collect();
        report.totals = totals;
        report
    }
}

impl Auditor {
    /// Whether a key's issuance reports cover its spends: an alarm when the spends they must
    /// cover exceed them, or when an issuer that should have reported has not; a note when
    /// the excess is of spends since the last report, which the next one will cover.
    fn judge_issuance(&self, k: &KeyRecord, options: &ReportOptions, report: &mut AuditReport) {
        if k.spent <= k.issued {
            return;
        }
        let id = k.info.public_key.id();
        let about = format!("key {id} of {} ({})", k.info.issuer, k.info.kind);
        let covered = self.key_spends.get(&id).map_or(0, |s| s.covered);
        let forged = "a leaked or forged key, or an issuer under-reporting";
        let last = k.reported_until;
        if covered > k.issued {
            report.alarms.push(format!(
                "{about}: {covered} spent but {} reported issued, counting only the spends recorded by {}, which its issuance reports (until {}) cover: {forged}",
                k.issued,
                date_time(KeySpends::cut(last)),
                date_time(last)
            ));
        } else if last >= k.info.issue_until {
            report.alarms.push(format!(
                "{about}: {} spent but {} reported issued, and its issuance is reported to the end of its issuing window ({}): {forged}",
                k.spent,
                k.issued,
                date_time(k.info.issue_until)
            ));
        } else if options.now.saturating_sub(last) > options.report_grace {
            report.alarms.push(format!(
                "{about}: {} spent beyond the {} reported issued, and the issuer has not reported key {id} since {} (the grace is {} s): an issuer that stopped reporting, or {forged}",
                k.spent - k.issued,
                k.issued,
                when(last, options.now),
                options.report_grace
            ));
        } else {
            report.notes.push(format!(
                "{about}: {} spent since its last issuance report (until {}), not yet reported",
                k.spent - k.issued,
                date_time(last)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let nov = Period::parse("2026-11").expect("month");
        assert_eq!(nov.from, 1_793_491_200); // 2026-11-01T00:00:00Z
        assert_eq!(nov.until - nov.from, 30 * 86_400);
        let dec = Period::parse("2026-12").expect("december");
        assert_eq!(dec.until, Period::parse("2027-01").expect("jan").from);
        let range = Period::parse("2026-11-01..2026-11-02").expect("range");
        assert_eq!((range.from, range.until - range.from), (nov.from, 86_400));
        for bad in [
            "2026-13",
            "2026",
            "x-y",
            "2026-11-02..2026-11-01",
            "2026-11-40..2026-12-01",
        ] {
            assert!(Period::parse(bad).is_none(), "{bad}");
        }
    }
}
