//! Auditing the log: anyone holding it replays it from genesis, checks every hash, sequence
//! number and signature, re-applies the ledger's own rules, recomputes the totals every
//! checkpoint committed to, and derives the settlement between operators.

use crate::rules::LedgerState;
use crate::store::Effect;
use scrip_spec::ledger::{
    EntryBody, Hash32, IssuerTotals, KeyTotals, LogEntry, Totals, prune_commitment,
};
use scrip_spec::{Nullifier, TokenKeyId};
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

/// Spends of one issuer's tokens at one redeeming operator, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SettlementCell {
    /// Tokens per kind.
    pub tokens: BTreeMap<String, u64>,
    /// Their value in credits at the catalog prices of the time of each spend.
    pub value: u64,
}

/// What an audit found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditReport {
    /// Entries verified.
    pub entries: u64,
    /// Checkpoints verified (ledger signature and totals digest).
    pub checkpoints: u64,
    /// Hash of the last entry verified.
    pub head_hash: Option<Hash32>,
    /// Totals recomputed from the log.
    pub totals: Totals,
    /// `(issuer, redeemer) →` what the issuer owes the redeemer.
    pub settlement: BTreeMap<(String, String), SettlementCell>,
    /// Net position per operator: credits owed to it minus credits it owes.
    pub net: BTreeMap<String, i64>,
    /// Findings that are not tampering but need a look (more spent than issued, …).
    pub alarms: Vec<String>,
}

/// Replays `entries` (from genesis, in order).
pub fn audit(entries: &[LogEntry]) -> Result<AuditReport, Tampering> {
    let bad = |seq: u64, problem: String| Tampering { seq, problem };
    let Some(first) = entries.first() else {
        return Ok(AuditReport::default());
    };
    let EntryBody::Genesis(genesis) = &first.body else {
        return Err(bad(
            first.seq,
            "the log does not start with a genesis".into(),
        ));
    };
    if first.seq != 0 || first.prev_hash != Hash32([0; 32]) {
        return Err(bad(
            first.seq,
            "genesis is not entry 0 with a zero previous hash".into(),
        ));
    }
    LedgerState::check_genesis(genesis).map_err(|e| bad(0, format!("invalid genesis: {e}")))?;
    let mut state = LedgerState::from_genesis(genesis.clone(), (0, first.hash()));
    let mut spent: HashMap<Nullifier, (TokenKeyId, String)> = HashMap::new();
    let mut issuers: BTreeMap<String, IssuerTotals> = BTreeMap::new();
    let mut report = AuditReport {
        entries: 1,
        ..AuditReport::default()
    };
    let mut prev = first.hash();

    for e in &entries[1..] {
        let expected_seq = state.head.0 + 1;
        if e.seq != expected_seq {
            return Err(bad(
                e.seq,
                format!("sequence number {} where {expected_seq} was due", e.seq),
            ));
        }
        if e.prev_hash != prev {
            return Err(bad(
                e.seq,
                "previous-hash does not match the entry before: the chain is broken".into(),
            ));
        }
        let hash = e.hash();
        match &e.body {
            EntryBody::Genesis(_) => return Err(bad(e.seq, "a second genesis".into())),
            EntryBody::Request(signed) => {
                let judgement = state.judge(signed, e.recorded_at).map_err(|r| {
                    bad(
                        e.seq,
                        format!("the ledger accepted a request its rules refuse: {r}"),
                    )
                })?;
                let signer = state
                    .operators
                    .get(&signed.signer)
                    .map(|o| o.name.clone())
                    .unwrap_or_default();
                let mut accepted: Vec<(TokenKeyId, u64)> = Vec::new();
                match &judgement.effect {
                    Effect::Spend { groups } => {
                        let mut any = false;
                        for g in groups {
                            let mut n_accepted = 0;
                            let key = state.keys.get(&g.token_key_id).map(|k| k.info.clone());
                            for n in &g.nullifiers {
                                if spent.contains_key(n) {
                                    continue;
                                }
                                spent.insert(*n, (g.token_key_id, signer.clone()));
                                n_accepted += 1;
                                if let Some(info) = &key {
                                    let price = state.catalog.price(&info.kind).unwrap_or(0);
                                    let cell = report
                                        .settlement
                                        .entry((info.issuer.clone(), signer.clone()))
                                        .or_default();
                                    *cell.tokens.entry(info.kind.to_string()).or_default() += 1;
                                    cell.value += price;
                                }
                            }
                            any |= n_accepted > 0;
                            accepted.push((g.token_key_id, n_accepted));
                        }
                        if !any {
                            return Err(bad(e.seq, "a spend entry that spends nothing new".into()));
                        }
                    }
                    Effect::CardsSold {
                        issuer,
                        count,
                        credits,
                    } => {
                        let t = issuers
                            .entry(issuer.clone())
                            .or_insert_with(|| IssuerTotals {
                                issuer: issuer.clone(),
                                cards_sold: 0,
                                credits_sold: 0,
                            });
                        t.cards_sold += count;
                        t.credits_sold += credits;
                    }
                    _ => {}
                }
                state.apply(&judgement.effect, (e.seq, hash), &accepted);
            }
            EntryBody::Checkpoint(signed) => {
                if signed.signer != state.genesis.ledger_key || signed.verify().is_err() {
                    return Err(bad(e.seq, "checkpoint not signed by the ledger key".into()));
                }
                let cp = &signed.payload;
                if cp.ledger_id != state.ledger_id
                    || cp.seq != state.head.0
                    || cp.head_hash != state.head.1
                {
                    return Err(bad(
                        e.seq,
                        "checkpoint does not describe the log before it".into(),
                    ));
                }
                if cp.totals_digest != totals(&state, &issuers).digest() {
                    return Err(bad(
                        e.seq,
                        "checkpoint totals digest does not match the recomputed totals".into(),
                    ));
                }
                report.checkpoints += 1;
                state.apply(&Effect::None, (e.seq, hash), &[]);
            }
            EntryBody::Pruned(signed) => {
                if signed.signer != state.genesis.ledger_key || signed.verify().is_err() {
                    return Err(bad(
                        e.seq,
                        "pruning record not signed by the ledger key".into(),
                    ));
                }
                let p = &signed.payload;
                let mut dropped: Vec<Nullifier> = spent
                    .iter()
                    .filter(|(_, (k, _))| k == &p.token_key_id)
                    .map(|(n, _)| *n)
                    .collect();
                dropped.sort();
                if dropped.len() as u64 != p.count || prune_commitment(&dropped) != p.commitment {
                    return Err(bad(
                        e.seq,
                        "pruning record does not match the key's spends".into(),
                    ));
                }
                state.apply(&Effect::Pruned, (e.seq, hash), &[]);
                if let Some(k) = state.keys.get_mut(&p.token_key_id) {
                    k.pruned += p.count;
                }
            }
        }
        prev = hash;
        report.entries += 1;
    }
    report.head_hash = Some(prev);
    report.totals = totals(&state, &issuers);
    for k in &report.totals.keys {
        if k.spent > k.issued {
            report.alarms.push(format!(
                "key {} of {} ({}): {} spent but only {} reported issued (reports lag an interval; a lasting excess means a leaked or forged key)",
                k.token_key_id, k.issuer, k.kind, k.spent, k.issued
            ));
        }
    }
    for ((issuer, redeemer), cell) in &report.settlement {
        if issuer != redeemer {
            let v = i64::try_from(cell.value).unwrap_or(i64::MAX);
            *report.net.entry(redeemer.clone()).or_default() += v;
            *report.net.entry(issuer.clone()).or_default() -= v;
        }
    }
    Ok(report)
}

fn totals(state: &LedgerState, issuers: &BTreeMap<String, IssuerTotals>) -> Totals {
    let mut keys: Vec<KeyTotals> = state
        .keys
        .values()
        .map(|k| KeyTotals {
            token_key_id: k.info.public_key.id(),
            issuer: k.info.issuer.clone(),
            kind: k.info.kind.clone(),
            issued: k.issued,
            spent: k.spent,
            pruned: k.pruned,
        })
        .collect();
    keys.sort_by_key(|k| k.token_key_id);
    Totals {
        keys,
        issuers: issuers.values().cloned().collect(),
    }
}

/// Reads the whole log from a ledger over HTTP.
pub async fn fetch_log(client: &crate::LedgerClient) -> Result<Vec<LogEntry>, crate::ClientError> {
    let mut entries = Vec::new();
    let mut from = 0;
    loop {
        let page = client.log(from, crate::http::MAX_LOG_PAGE).await?;
        entries.extend(page.entries);
        match page.next {
            Some(n) => from = n,
            None => return Ok(entries),
        }
    }
}
