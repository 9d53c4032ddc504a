//! Replaying the log: every hash, sequence number and signature checked, the ledger's own
//! rules re-applied, every checkpoint's totals recomputed.

use super::{Auditor, Day, Tampering};
use crate::rules::LedgerState;
use crate::store::Effect;
use scrip_spec::Nullifier;
use scrip_spec::ledger::{
    EntryBody, Hash32, IssuerTotals, KeyTotals, LogEntry, Totals, prune_commitment,
};
use std::collections::BTreeMap;

impl Auditor {
    /// Where the next entry must start.
    pub fn next_seq(&self) -> u64 {
        if self.state.is_some() {
            self.entries
        } else {
            0
        }
    }

    /// Verifies and applies the next entry.
    pub fn feed(&mut self, e: &LogEntry) -> Result<(), Tampering> {
        let bad = |problem: String| Tampering {
            seq: e.seq,
            problem,
        };
        let hash = e.hash();
        let Some(state) = self.state.as_mut() else {
            let EntryBody::Genesis(genesis) = &e.body else {
                return Err(bad("the log does not start with a genesis".into()));
            };
            if e.seq != 0 || e.prev_hash != Hash32([0; 32]) {
                return Err(bad(
                    "genesis is not entry 0 with a zero previous hash".into()
                ));
            }
            LedgerState::check_genesis(genesis)
                .map_err(|r| bad(format!("invalid genesis: {r}")))?;
            self.state = Some(LedgerState::from_genesis(genesis.clone(), (0, hash)));
            self.prev = hash;
            self.entries = 1;
            return Ok(());
        };
        let expected = state.head.0 + 1;
        if e.seq != expected {
            return Err(bad(format!(
                "sequence number {} where {expected} was due",
                e.seq
            )));
        }
        if e.prev_hash != self.prev {
            return Err(bad(
                "previous-hash does not match the entry before: the chain is broken".into(),
            ));
        }
        match &e.body {
            EntryBody::Genesis(_) => return Err(bad("a second genesis".into())),
            EntryBody::Request(signed) => {
                // The ledger refuses a request it has recorded before; a log with a copy of
                // one (say a "cards sold" counted twice) was forged.
                if !self
                    .requests
                    .insert(crate::store::signed_request_digest(signed))
                {
                    return Err(bad("a signed request recorded a second time".into()));
                }
                let judgement = state.judge(signed, e.recorded_at).map_err(|r| {
                    bad(format!(
                        "the ledger accepted a request its rules refuse: {r}"
                    ))
                })?;
                let signer = state
                    .operators
                    .get(&signed.signer)
                    .map(|o| o.name.clone())
                    .unwrap_or_default();
                let mut accepted = Vec::new();
                match &judgement.effect {
                    Effect::Spend { groups } => {
                        let mut any = false;
                        for g in groups {
                            let key = state.keys.get(&g.token_key_id).map(|k| k.info.clone());
                            let mut n_accepted = 0;
                            for n in &g.nullifiers {
                                if self.spent.contains_key(n) {
                                    continue;
                                }
                                self.spent.insert(*n, g.token_key_id);
                                n_accepted += 1;
                                self.key_days
                                    .entry((g.token_key_id, Day(e.recorded_at / 86_400)))
                                    .or_default()
                                    .1 += 1;
                                if let Some(info) = &key {
                                    if !info.can_redeem_at(e.recorded_at) {
                                        self.spends_outside_window += 1;
                                    }
                                    let price = state.catalog.price(&info.kind).unwrap_or(0);
                                    let cell = self
                                        .days
                                        .entry((
                                            Day(e.recorded_at / 86_400),
                                            info.issuer.clone(),
                                            signer.clone(),
                                            info.kind.to_string(),
                                        ))
                                        .or_default();
                                    cell.0 += 1;
                                    cell.1 += price;
                                }
                            }
                            any |= n_accepted > 0;
                            accepted.push((g.token_key_id, n_accepted));
                        }
                        if !any {
                            return Err(bad("a spend entry that spends nothing new".into()));
                        }
                    }
                    Effect::TokensIssued {
                        token_key_id,
                        count,
                    } => {
                        let day = Day(e.recorded_at / 86_400);
                        self.key_days.entry((*token_key_id, day)).or_default().0 += count;
                    }
                    Effect::CardsSold {
                        issuer,
                        count,
                        credits,
                    } => {
                        let t =
                            self.issuers
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
                    return Err(bad("checkpoint not signed by the ledger key".into()));
                }
                let cp = &signed.payload;
                if cp.ledger_id != state.ledger_id
                    || cp.seq != state.head.0
                    || cp.head_hash != state.head.1
                {
                    return Err(bad("checkpoint does not describe the log before it".into()));
                }
                if cp.totals_digest != totals(state, &self.issuers).digest() {
                    return Err(bad(
                        "checkpoint totals digest does not match the recomputed totals".into(),
                    ));
                }
                self.checkpoints += 1;
                state.apply(&Effect::None, (e.seq, hash), &[]);
            }
            EntryBody::Pruned(signed) => {
                if signed.signer != state.genesis.ledger_key || signed.verify().is_err() {
                    return Err(bad("pruning record not signed by the ledger key".into()));
                }
                let p = &signed.payload;
                let mut dropped: Vec<Nullifier> = self
                    .spent
                    .iter()
                    .filter(|(_, k)| **k == p.token_key_id)
                    .map(|(n, _)| *n)
                    .collect();
                dropped.sort();
                if dropped.len() as u64 != p.count || prune_commitment(&dropped) != p.commitment {
                    return Err(bad("pruning record does not match the key's spends".into()));
                }
                let effect = Effect::Pruned {
                    token_key_id: p.token_key_id,
                    count: p.count,
                };
                state.apply(&effect, (e.seq, hash), &[]);
            }
        }
        self.prev = hash;
        self.entries += 1;
        Ok(())
    }
}

pub(super) fn totals(state: &LedgerState, issuers: &BTreeMap<String, IssuerTotals>) -> Totals {
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
