//! Replaying the log: every hash, sequence number and signature checked, the ledger's own
//! rules re-applied, every checkpoint's totals recomputed.

use super::{Auditor, Day, Hour, KeySpends, Tampering};
use crate::rules::{LedgerState, Verified};
use crate::store::{Effect, GovernanceEffect};
use scrip_spec::ledger::{
    Action, EntryBody, Hash32, IssuerTotals, KeyTotals, LogEntry, Totals, prune_commitment,
};
use scrip_spec::{CapacityKind, Catalog, Nullifier, TokenKeyId, UnixSeconds};
use std::collections::BTreeMap;

impl Auditor {
    /// The hash of the last entry fed (none before the genesis).
    pub fn head_hash(&self) -> Option<Hash32> {
        self.state.as_ref().map(|_| self.prev)
    }

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
            self.record_catalog(0, &genesis.catalog);
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
        if let Some(at) = e.ordered {
            if self.last_session.is_some_and(|s| s < at.session) || self.last_session.is_none() {
                self.session_ends.insert(state.head.0, state.head.1);
                // Certificates name the end of the session before theirs; older ends are
                // never certified later.
                while self.session_ends.len() > 64 {
                    self.session_ends.pop_first();
                }
            }
            self.last_session = Some(at.session);
        }
        match &e.body {
            EntryBody::Genesis(_) => return Err(bad("a second genesis".into())),
            EntryBody::Certificate(certificate) => {
                // Signed by the committee of the session that ordered it.
                let session = e.ordered.map_or(0, |at| at.session);
                if let Err(why) = certificate.verify(state.committee_for(session)) {
                    return Err(bad(why.into()));
                }
                let head = &certificate.head;
                let certified = self.session_ends.get(&head.seq) == Some(&head.head_hash)
                    || (head.seq, head.head_hash) == state.head;
                if head.ledger_id != state.ledger_id || !certified {
                    return Err(bad(
                        "a certificate of a head that is not the end of a session of this log"
                            .into(),
                    ));
                }
                self.checkpoints += 1;
                state.apply(&Effect::None, (e.seq, hash), &[]);
            }
            EntryBody::Request(signed) => {
                // The ledger refuses a request it has recorded before; a log with a copy of
                // one (say a "cards sold" counted twice) was forged.
                if !self
                    .requests
                    .insert(crate::store::signed_request_digest(signed))
                {
                    return Err(bad("a signed request recorded a second time".into()));
                }
                let refused = |r: crate::rules::Refusal| {
                    bad(format!(
                        "the ledger accepted a request its rules refuse: {r}"
                    ))
                };
                let verified_keys = match &signed.payload.action {
                    Action::Spend { groups } | Action::Refresh { inputs: groups, .. }
                        if self.verify_tokens =>
                    {
                        let keys = state.keys_to_verify(groups, e.recorded_at);
                        state.verify_spend(groups, &keys).map_err(refused)?;
                        Some(keys)
                    }
                    _ => None,
                };
                let verified = verified_keys.as_ref().map_or(Verified::All, Verified::Keys);
                let judgement = state
                    .judge(
                        signed,
                        e.recorded_at,
                        e.ordered.map(|at| at.session),
                        verified,
                    )
                    .map_err(refused)?;
                let signer = state.operator_name(&signed.signer);
                let mut accepted = Vec::new();
                match &judgement.effect {
                    Effect::Spend { groups } => {
                        let day = Day(e.recorded_at / 86_400);
                        let mut any = false;
                        for g in groups {
                            let key = state.keys.get(&g.token_key_id).map(|k| k.info.clone());
                            let mut n_accepted = 0;
                            for n in &g.nullifiers {
                                if self.spent.contains_key(n) {
                                    continue;
                                }
                                self.spent.insert(*n, (g.token_key_id, e.seq));
                                n_accepted += 1;
                                self.key_hours
                                    .entry((g.token_key_id, Hour::of(e.recorded_at)))
                                    .or_default()
                                    .1 += 1;
                                if let Some(info) = &key {
                                    if !info.can_redeem_at(e.recorded_at) {
                                        self.spends_outside_window += 1;
                                    }
                                    let price = last_price(&self.last_prices, &info.kind);
                                    self.values.entry(info.issuer.clone()).or_default().1 += price;
                                    let cell = self
                                        .days
                                        .entry((
                                            day,
                                            state.catalog_version,
                                            info.issuer.clone(),
                                            signer.clone(),
                                            info.kind.to_string(),
                                        ))
                                        .or_default();
                                    cell.0 += 1;
                                    cell.1 += price;
                                }
                            }
                            if n_accepted > 0 {
                                record_spend(
                                    &mut self.key_spends,
                                    state,
                                    g.token_key_id,
                                    e.recorded_at,
                                    n_accepted,
                                );
                            }
                            any |= n_accepted > 0;
                            accepted.push((g.token_key_id, n_accepted));
                        }
                        if !any {
                            return Err(bad("a spend entry that spends nothing new".into()));
                        }
                    }
                    // A swap: its inputs join the spent set and its outputs count as issued for
                    // their keys, but neither is valued: the outputs were paid for by the
                    // inputs, not by a card sale, and no one owes anyone for the inputs, so
                    // settlement and "value issued <= credits sold" never see them.
                    Effect::Refresh { inputs, outputs } => {
                        for g in inputs {
                            for n in &g.nullifiers {
                                if self.spent.insert(*n, (g.token_key_id, e.seq)).is_some() {
                                    return Err(bad(
                                        "a refresh entry with an input spent before".into()
                                    ));
                                }
                            }
                            let n = g.nullifiers.len() as u64;
                            self.key_hours
                                .entry((g.token_key_id, Hour::of(e.recorded_at)))
                                .or_default()
                                .1 += n;
                            record_spend(
                                &mut self.key_spends,
                                state,
                                g.token_key_id,
                                e.recorded_at,
                                n,
                            );
                        }
                        for (key, count) in outputs {
                            self.key_hours
                                .entry((*key, Hour::of(e.recorded_at)))
                                .or_default()
                                .0 += count;
                        }
                    }
                    Effect::TokensIssued {
                        token_key_id,
                        count,
                        ..
                    } => {
                        self.key_hours
                            .entry((*token_key_id, Hour::of(e.recorded_at)))
                            .or_default()
                            .0 += count;
                        if let Some(k) = state.keys.get(token_key_id) {
                            let price = last_price(&self.last_prices, &k.info.kind);
                            self.values.entry(k.info.issuer.clone()).or_default().0 +=
                                count.saturating_mul(price);
                        }
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
                if let Effect::TokensIssued {
                    token_key_id,
                    until,
                    ..
                } = &judgement.effect
                    && let Some(spends) = self.key_spends.get_mut(token_key_id)
                {
                    spends.reported(*until);
                }
                if let Effect::Governance {
                    change: GovernanceEffect::SetCatalog(catalog),
                    ..
                } = &judgement.effect
                {
                    self.record_catalog(e.seq, catalog);
                }
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
                replay_pruning(&mut self.spent, state, &signed.payload, (e.seq, hash))
                    .map_err(bad)?;
            }
            EntryBody::CommitteePruned(p) => {
                // Written by every node alike once the agreed time passed the key's
                // forget_after: only a committee ledger has one.
                let past = state
                    .keys
                    .get(&p.token_key_id)
                    .is_some_and(|k| e.recorded_at > k.info.forget_after);
                if state.genesis.committee.is_empty() || e.ordered.is_none() || !past {
                    return Err(bad(
                        "an unsigned pruning record outside a committee's order, or of a key not past its forget_after"
                            .into(),
                    ));
                }
                replay_pruning(&mut self.spent, state, p, (e.seq, hash)).map_err(bad)?;
            }
        }
        self.prev = hash;
        self.entries += 1;
        Ok(())
    }
}

impl Auditor {
    fn record_catalog(&mut self, seq: u64, catalog: &Catalog) {
        for entry in &catalog.entries {
            self.last_prices.insert(entry.kind.to_string(), entry.price);
        }
        self.catalogs.insert(seq, catalog.clone());
    }

    /// The replayed ledger state, once the genesis was read.
    pub fn state(&self) -> Option<&LedgerState> {
        self.state.as_ref()
    }

    /// The live spent set replayed from the log: nullifier → (key, entry).
    pub fn spent(&self) -> &std::collections::HashMap<Nullifier, (scrip_spec::TokenKeyId, u64)> {
        &self.spent
    }

    /// Card sales per issuer replayed from the log.
    pub fn issuer_totals(&self) -> &BTreeMap<String, IssuerTotals> {
        &self.issuers
    }
}

/// `tokens` of `key` spent in an entry recorded at `at`, split at the key's last issuance
/// report as it stands in `state`.
fn record_spend(
    spends: &mut BTreeMap<TokenKeyId, KeySpends>,
    state: &LedgerState,
    key: TokenKeyId,
    at: UnixSeconds,
    tokens: u64,
) {
    let reported_until = state.keys.get(&key).map_or(0, |k| k.reported_until);
    spends
        .entry(key)
        .or_default()
        .spend(at, tokens, reported_until);
}

/// A kind's price in the catalog in force, or the last price it had if that catalog no longer
/// sells it: a spend is worth what its token was bought for. Every catalog's prices are
/// recorded as it is set, so the last price is the current one whenever there is one.
fn last_price(last_prices: &BTreeMap<String, u64>, kind: &CapacityKind) -> u64 {
    last_prices.get(kind.as_str()).copied().unwrap_or(0)
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

/// Checks a pruning record against the spends replayed so far (its count and its commitment
/// of exactly the key's live nullifiers), then forgets them, as the ledger did.
fn replay_pruning(
    spent: &mut std::collections::HashMap<Nullifier, (scrip_spec::TokenKeyId, u64)>,
    state: &mut crate::rules::LedgerState,
    p: &scrip_spec::ledger::Pruned,
    head: (u64, Hash32),
) -> Result<(), String> {
    if p.ledger_id != state.ledger_id {
        return Err("pruning record of another ledger".into());
    }
    let mut dropped: Vec<Nullifier> = spent
        .iter()
        .filter(|(_, (k, _))| *k == p.token_key_id)
        .map(|(n, _)| *n)
        .collect();
    dropped.sort();
    if dropped.len() as u64 != p.count || prune_commitment(&dropped) != p.commitment {
        return Err("pruning record does not match the key's spends".into());
    }
    // Forgotten as the ledger forgets them: the key is past its redemption window, so none of
    // its tokens can be spent again.
    for n in &dropped {
        spent.remove(n);
    }
    let effect = Effect::Pruned {
        token_key_id: p.token_key_id,
        count: p.count,
    };
    state.apply(&effect, head, &[]);
    Ok(())
}
