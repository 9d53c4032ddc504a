//! Refreshing tokens near their key's `redeem_until` into tokens of a newer key, and changing
//! tokens of one kind into another, at their issuer (PROTOCOL.md section 9.8).
//!
//! A refresh is an opening paid with tokens instead of a card: its outputs are blinded from the
//! seed's counters, it is recorded (and its inputs marked `refreshing`) before it is sent, and
//! a lost answer is resumed with the same request id, so a crash loses neither the inputs nor
//! the outputs.

use super::{Wallet, WalletError};
use crate::store::{PendingOpening, StoredToken, TokenState};
use scrip_common::clients::ClientError;
use scrip_spec::api::issuer::{IssuerErrorCode, RefreshRequest, RefreshResponse, RequestId};
use scrip_spec::ledger::MAX_REFRESH_BATCH;
use scrip_spec::{CapacityKind, Nullifier, TokenKeyInfo, now};
use std::collections::BTreeMap;

/// Tokens this close to their `redeem_until` are refreshed (`wallet refresh`, and after an
/// open or a spend).
pub const REFRESH_THRESHOLD_SECS: u64 = 5 * 86_400;

/// What a refresh or a change did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RefreshSummary {
    /// Tokens given in.
    pub refreshed: u64,
    /// New tokens stored, per kind.
    pub tokens: BTreeMap<String, u64>,
    /// Credits given up (a change whose rest no kind fits).
    pub lost_credits: u64,
    /// Tokens due that were left as they are, and why.
    pub skipped: Vec<String>,
}

impl Wallet {
    /// Refreshes every unspent token whose `redeem_until` is within `within_secs`, at its
    /// issuer (`issuer_url`, or where the wallet opened that issuer's cards; with
    /// `issuer_url`, only that issuer's tokens), into tokens of the issuer's current keys of
    /// the same kinds. A token whose kind has no newer key yet is left as it is.
    pub async fn refresh(
        &self,
        issuer_url: Option<&str>,
        within_secs: u64,
    ) -> Result<RefreshSummary, WalletError> {
        let t = now();
        let mut summary = RefreshSummary::default();
        let due = self
            .store
            .unspent_until(t, t.saturating_add(within_secs))
            .await?;
        if due.is_empty() {
            return Ok(summary);
        }
        self.resume_openings().await?;
        let mut by_issuer: BTreeMap<String, Vec<StoredToken>> = BTreeMap::new();
        for token in due {
            by_issuer
                .entry(token.issuer.clone())
                .or_default()
                .push(token);
        }
        let chosen = match issuer_url {
            Some(url) => Some((self.issuer_name(url).await?, url.to_owned())),
            None => None,
        };
        for (issuer, tokens) in by_issuer {
            let url = match &chosen {
                Some((name, url)) if *name == issuer => url.clone(),
                Some(_) => continue,
                None => match self.store.issuer_url(&issuer).await? {
                    Some(url) => url,
                    None => {
                        summary.skipped.push(format!(
                            "{} token(s) of {issuer}: its URL is unknown; pass --issuer URL",
                            tokens.len()
                        ));
                        continue;
                    }
                },
            };
            let mut kinds: Vec<CapacityKind> = Vec::new();
            for token in &tokens {
                let kind: CapacityKind = token.kind.parse().map_err(anyhow::Error::from)?;
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            let keys = self.trusted_keys(&url, &kinds).await?;
            let mut inputs = Vec::new();
            let mut outputs = Vec::new();
            for token in tokens {
                let kind: CapacityKind = token.kind.parse().map_err(anyhow::Error::from)?;
                match keys.get(&kind) {
                    // Only into a key that lasts longer: the same key again gains nothing.
                    Some(key) if key.redeem_until > token.redeem_until => {
                        outputs.push(key.clone());
                        inputs.push(token);
                    }
                    _ => summary.skipped.push(format!(
                        "a {kind} token of {issuer}: no key of the kind lasts longer yet"
                    )),
                }
            }
            for (ins, outs) in inputs
                .chunks(MAX_REFRESH_BATCH)
                .zip(outputs.chunks(MAX_REFRESH_BATCH))
            {
                self.run_refresh(&url, ins, outs).await?;
                summary.refreshed += ins.len() as u64;
                for key in outs {
                    *summary.tokens.entry(key.kind.to_string()).or_default() += 1;
                }
            }
        }
        Ok(summary)
    }

    /// [`Self::refresh`] of the tokens within [`REFRESH_THRESHOLD_SECS`] of expiry, at the
    /// issuers they came from: what the wallet runs after an open or a spend. Costs nothing
    /// (no network) when no token is due.
    pub async fn refresh_due(&self) -> Result<RefreshSummary, WalletError> {
        self.refresh(None, REFRESH_THRESHOLD_SECS).await
    }

    /// Changes unspent `from` tokens into `count` `to` tokens (or as many as they pay for) at
    /// one issuer: `issuer_url`, or the issuer holding most of them. The inputs are the fewest
    /// that pay; whatever value is left comes back as the dearest kinds that fit, and what no
    /// kind fits is lost, which is refused unless `accept_loss`.
    pub async fn change(
        &self,
        issuer_url: Option<&str>,
        from: &CapacityKind,
        to: &CapacityKind,
        count: Option<u64>,
        accept_loss: bool,
    ) -> Result<RefreshSummary, WalletError> {
        self.resume_openings().await?;
        let catalog = self
            .ledger
            .catalog()
            .await
            .map_err(|e| anyhow::anyhow!(e).context("cannot read the ledger's catalog"))?;
        let price = |kind: &CapacityKind| {
            catalog
                .price(kind)
                .filter(|p| *p > 0)
                .ok_or_else(|| anyhow::anyhow!("{kind} is not sold in the ledger's catalog"))
        };
        let (p_from, p_to) = (price(from)?, price(to)?);
        let t = now();
        let held: Vec<StoredToken> = self
            .store
            .tokens(TokenState::Unspent)
            .await?
            .into_iter()
            .filter(|s| s.kind == from.as_str() && s.redeem_until >= t)
            .collect();
        let (issuer, url) = match issuer_url {
            Some(url) => (self.issuer_name(url).await?, url.to_owned()),
            None => {
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for s in &held {
                    *counts.entry(s.issuer.as_str()).or_default() += 1;
                }
                let Some(issuer) = counts
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map(|(i, _)| (*i).to_owned())
                else {
                    return Err(self.no_token(from).await?);
                };
                let url = self.store.issuer_url(&issuer).await?.ok_or_else(|| {
                    anyhow::anyhow!("the URL of {issuer} is unknown; pass --issuer URL")
                })?;
                (issuer, url)
            }
        };
        // Closest to expiry first (as `tokens` orders them).
        let mut held: Vec<StoredToken> = held.into_iter().filter(|s| s.issuer == issuer).collect();
        let have = held.len() as u64;
        let count = count.unwrap_or(have.saturating_mul(p_from) / p_to);
        let need = count.saturating_mul(p_to).div_ceil(p_from);
        if count == 0 || need > have {
            return Err(WalletError::NotEnough {
                kind: from.to_string(),
                need: need.max(p_to.div_ceil(p_from)),
                have,
                target: to.to_string(),
            });
        }
        // The rest, in the dearest kinds that fit (`from` among them).
        let mut rest = need * p_from - count * p_to;
        let mut by_price: Vec<(CapacityKind, u64)> = catalog
            .entries
            .iter()
            .filter(|e| e.price > 0)
            .map(|e| (e.kind.clone(), e.price))
            .collect();
        by_price.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut plan: Vec<(CapacityKind, u64)> = vec![(to.clone(), count)];
        for (kind, p) in &by_price {
            if *p <= rest {
                plan.push((kind.clone(), rest / p));
                rest %= p;
            }
        }
        if rest > 0 && !accept_loss {
            return Err(WalletError::ChangeLoses { credits: rest });
        }
        let kinds: Vec<CapacityKind> = plan.iter().map(|(k, _)| k.clone()).collect();
        let keys = self.trusted_keys(&url, &kinds).await?;
        let mut outputs: Vec<TokenKeyInfo> = Vec::new();
        for (kind, n) in &plan {
            let key = keys.get(kind).ok_or_else(|| WalletError::NoKey {
                issuer: issuer.clone(),
                kind: kind.to_string(),
            })?;
            outputs.extend(std::iter::repeat_n(
                key.clone(),
                usize::try_from(*n).unwrap_or(0),
            ));
        }
        held.truncate(usize::try_from(need).unwrap_or(usize::MAX));
        if held.len() > MAX_REFRESH_BATCH || outputs.len() > MAX_REFRESH_BATCH {
            return Err(anyhow::anyhow!(
                "a change takes at most {MAX_REFRESH_BATCH} tokens in and out at once; ask for fewer with --count"
            )
            .into());
        }
        self.run_refresh(&url, &held, &outputs).await?;
        let mut summary = RefreshSummary {
            refreshed: held.len() as u64,
            lost_credits: rest,
            ..RefreshSummary::default()
        };
        for key in &outputs {
            *summary.tokens.entry(key.kind.to_string()).or_default() += 1;
        }
        Ok(summary)
    }

    /// Finishes refreshes an earlier run sent without storing the answer.
    pub async fn resume_refreshes(&self) -> Result<usize, WalletError> {
        let mut resumed = 0;
        for pending in self.store.pending_refreshes().await? {
            let request: RefreshRequest =
                serde_json::from_str(&pending.request).map_err(anyhow::Error::from)?;
            match self.send_refresh(&pending, &request).await {
                Ok(_) => resumed += 1,
                Err(WalletError::IssuerRefused { .. } | WalletError::AlreadySpent { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(stuck) = self.store.pending_refreshes().await?.first() {
            return Err(WalletError::RefreshPending {
                issuer_url: stuck.issuer_url.clone(),
            });
        }
        Ok(resumed)
    }

    /// The name of the issuer at `url`.
    async fn issuer_name(&self, url: &str) -> Result<String, WalletError> {
        Ok(self
            .issuer(url)
            .keys()
            .await
            .map_err(WalletError::from_issuer)?
            .issuer)
    }

    /// One refresh of `inputs` into one token of each of `outputs`: derived, recorded, sent.
    async fn run_refresh(
        &self,
        issuer_url: &str,
        inputs: &[StoredToken],
        outputs: &[TokenKeyInfo],
    ) -> Result<(), WalletError> {
        for key in outputs {
            self.store.put_key(key).await?;
        }
        let first = self.store.next_counter().await?;
        let requests = self.blinded_requests(first, outputs)?;
        let request = RefreshRequest {
            request_id: RequestId(self.seed.request_id(first)),
            tokens: inputs.iter().map(|s| s.token.clone()).collect(),
            requests,
        };
        let pending = PendingOpening {
            request_id: request.request_id.0,
            first_counter: first,
            count: outputs.len() as u64,
            issuer_url: issuer_url.to_owned(),
            request: serde_json::to_string(&request).map_err(anyhow::Error::from)?,
        };
        let nullifiers: Vec<Nullifier> = request.tokens.iter().map(|t| t.nullifier()).collect();
        // Recorded, inputs set aside, before it is sent: a crash from here on is resumed with
        // the same id, and no input is spent elsewhere meanwhile.
        self.store.begin_refresh(&pending, &nullifiers).await?;
        self.send_refresh(&pending, &request).await.map(|_| ())
    }

    /// Sends a refresh and stores its tokens; a definitive refusal gives the inputs back (or
    /// marks spent the one the issuer says was), no answer keeps it all for the next run.
    async fn send_refresh(
        &self,
        pending: &PendingOpening,
        request: &RefreshRequest,
    ) -> Result<RefreshResponse, WalletError> {
        let inputs: Vec<Nullifier> = request.tokens.iter().map(|t| t.nullifier()).collect();
        match self.issuer(&pending.issuer_url).refresh(request).await {
            Ok(response) => {
                let tokens = self
                    .finalize_responses(
                        pending.first_counter,
                        &request.requests,
                        &response.responses,
                    )
                    .await?;
                self.store
                    .finish_refresh(&pending.request_id, &tokens, &inputs, now())
                    .await?;
                Ok(response)
            }
            Err(ClientError::Refused {
                status: 409, error, ..
            }) if error.code == IssuerErrorCode::AlreadySpent => {
                let index = error
                    .details
                    .index
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|i| *i < inputs.len())
                    .unwrap_or(0);
                let spent = [inputs[index]];
                let rest: Vec<Nullifier> = inputs
                    .iter()
                    .copied()
                    .filter(|n| *n != inputs[index])
                    .collect();
                self.store
                    .abandon_refresh(pending, &rest, false, now())
                    .await?;
                self.store
                    .abandon_refresh(pending, &spent, true, now())
                    .await?;
                Err(WalletError::AlreadySpent {
                    first_spent_at: error.details.first_spent_at.unwrap_or(0),
                    first_spent_by: error
                        .details
                        .first_spent_by
                        .unwrap_or_else(|| "another refresh at the issuer".into()),
                })
            }
            Err(ClientError::Refused { status: 409, .. }) => {
                // The id is recorded with other content (another copy of this seed): take
                // what the issuer holds if it is this refresh, else give the inputs back and
                // start after it.
                let replay = self
                    .replay(&pending.issuer_url, &request.request_id)
                    .await?;
                match replay {
                    Some(r) if r.requests == request.requests => {
                        let tokens = self
                            .finalize_responses(pending.first_counter, &r.requests, &r.responses)
                            .await?;
                        self.store
                            .finish_refresh(&pending.request_id, &tokens, &inputs, now())
                            .await?;
                        Ok(RefreshResponse {
                            request_id: request.request_id,
                            responses: r.responses,
                        })
                    }
                    other => {
                        self.store
                            .abandon_refresh(pending, &inputs, false, now())
                            .await?;
                        let end = pending.first_counter
                            + other.map_or(pending.count, |r| r.requests.len() as u64);
                        if self.store.next_counter().await? < end {
                            self.store
                                .set_meta("next_counter", &end.to_string())
                                .await?;
                        }
                        Err(WalletError::IssuerRefused {
                            code: IssuerErrorCode::RequestIdReused,
                            message: "this request id holds another refresh or opening; run the command again".into(),
                        })
                    }
                }
            }
            Err(
                e @ ClientError::Refused {
                    status: 400 | 403 | 413 | 422,
                    ..
                },
            ) => {
                self.store
                    .abandon_refresh(pending, &inputs, false, now())
                    .await?;
                Err(WalletError::from_issuer(e))
            }
            Err(ClientError::Refused { error, .. }) => Err(WalletError::IssuerRefused {
                code: error.code,
                message: format!(
                    "{}; the refresh is saved, run the command again to resume",
                    error.message
                ),
            }),
            Err(e) => Err(WalletError::from_issuer(e)),
        }
    }
}
