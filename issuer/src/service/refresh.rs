//! Refreshing tokens (PROTOCOL.md section 9.8): tokens of this issuer's keys are spent on the
//! ledger and new blind signatures of no greater value are handed out, in one idempotent step.
//!
//! The order is what makes it safe: every check runs before any ledger request or signature;
//! the refresh is recorded (with its signed ledger request) before the ledger is asked; the
//! outputs are signed only once the ledger holds the spend; and a retry with the same id
//! finds the record and resumes wherever the last attempt stopped.

use super::opening::RequestFault;
use super::{Issuer, LoadedKey, now};
use crate::store::{BeginRefresh, NewRefresh};
use scrip_common::clients::ClientError;
use scrip_spec::api::issuer::{RefreshRequest, RefreshResponse, ReplayResponse, RequestId};
use scrip_spec::api::ledger::{LedgerErrorCode, NullifierStatus};
use scrip_spec::encoding::{canonical_bytes, from_canonical_bytes};
use scrip_spec::ledger::{
    Action, EntryBody, LedgerRequest, MAX_REFRESH_BATCH, RefreshOutput, SpendGroup,
};
use scrip_spec::{Nullifier, Signed, TokenChallenge, TokenResponse, verify_token};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::sync::Arc;

/// Why a refresh was refused or not completed. Unless it says otherwise, nothing was spent and
/// nothing signed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The body is well formed JSON but not a valid refresh.
    #[error("{reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// More than [`MAX_REFRESH_BATCH`] tokens or requests.
    #[error(
        "a refresh carries at most {MAX_REFRESH_BATCH} tokens and {MAX_REFRESH_BATCH} requests; this has {count}"
    )]
    TooLarge {
        /// The larger of the two counts.
        count: usize,
    },
    /// The request id was used for another refresh.
    #[error("this request id was already used for a different refresh")]
    RequestIdReused,
    /// An input is not of one of this issuer's announced keys.
    #[error("token {index} is not of one of this issuer's announced keys")]
    UnknownInputKey {
        /// The first offending token.
        index: usize,
    },
    /// An input's key is outside its redemption window.
    #[error("token {index} is of a key that cannot be redeemed now")]
    InputNotRedeemable {
        /// The first offending token.
        index: usize,
    },
    /// An input does not verify.
    #[error("token {index} does not verify: {reason}")]
    InvalidToken {
        /// The first offending token.
        index: usize,
        /// What failed.
        reason: String,
    },
    /// An input appears twice.
    #[error("token {index} appears earlier in the same refresh")]
    DuplicateToken {
        /// Its second position.
        index: usize,
    },
    /// A request names a key this issuer does not have announced.
    #[error("request {index} names a key that is not one of this issuer's announced keys")]
    UnknownKey {
        /// The first offending request.
        index: usize,
    },
    /// A request names a key outside its issuing window.
    #[error("request {index} names a key that cannot sign now")]
    KeyNotIssuable {
        /// The first offending request.
        index: usize,
    },
    /// A request's truncated key id does not match its key.
    #[error("request {index}: the truncated key id does not match token_key_id")]
    KeyMismatch {
        /// The first offending request.
        index: usize,
    },
    /// A blinded message is not in `2..n` for its key's modulus `n`.
    #[error("request {index}: the blinded message is not valid for the key")]
    BadBlindedMessage {
        /// The first offending request.
        index: usize,
    },
    /// The outputs are worth more than the inputs.
    #[error("the requested tokens are worth {value_out} credits, the tokens given {value_in}")]
    ValueExceeded {
        /// Value of the inputs.
        value_in: u64,
        /// Value of the outputs.
        value_out: u64,
    },
    /// An input was spent, or is in another refresh, already.
    #[error("token {index} was already spent{}; nothing was spent or signed", describe_first(.first_spent_at, .first_spent_by))]
    AlreadySpent {
        /// Its position among the inputs.
        index: usize,
        /// When it was first spent, if the ledger said.
        first_spent_at: Option<u64>,
        /// Who first spent it, if the ledger said.
        first_spent_by: Option<String>,
    },
    /// The ledger refused the refresh for a reason this issuer's checks did not see (a key
    /// revoked or a catalog changed a moment ago).
    #[error("the ledger refused the refresh: {reason}; nothing was spent or signed")]
    LedgerRefused {
        /// The ledger's message.
        reason: String,
    },
    /// The ledger did not answer, or storage failed: the refresh may be half done, and a
    /// retry with the same request id finishes it.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

fn describe_first(at: &Option<u64>, by: &Option<String>) -> String {
    match (at, by) {
        (Some(at), Some(by)) => format!(" at {at} by {by}"),
        _ => " or is being refreshed".into(),
    }
}

impl From<crate::store::StoreError> for RefreshError {
    fn from(e: crate::store::StoreError) -> Self {
        RefreshError::Internal(e.into())
    }
}

/// SHA-256 of what a repeat must match: the tokens and the requests, in order.
fn body_hash(req: &RefreshRequest) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"scrip/v1/issuer/refresh");
    h.update(canonical_bytes(&req.tokens));
    h.update(canonical_bytes(&req.requests));
    h.finalize().into()
}

/// Whether the ledger committed a refresh, as far as this issuer can tell.
enum Committed {
    Yes,
    /// Not applied; the signed request went stale, so a fresh one may be sent.
    NotYet,
}

impl Issuer {
    /// Refreshes tokens: PROTOCOL.md section 9.8.
    pub async fn refresh(&self, req: RefreshRequest) -> Result<RefreshResponse, RefreshError> {
        if req.tokens.is_empty() || req.requests.is_empty() {
            return Err(RefreshError::Malformed {
                reason: "a refresh needs at least one token and one token request".into(),
            });
        }
        let most = req.tokens.len().max(req.requests.len());
        if most > MAX_REFRESH_BATCH {
            return Err(RefreshError::TooLarge { count: most });
        }
        // One attempt per request id at a time, so a repeat never races its original.
        let _one_attempt = self.refresh_locks.lock(&req.request_id.0).await;
        let hash = body_hash(&req);
        if let Some(record) = self.store.refresh(&req.request_id).await? {
            if record.body_hash != hash {
                return Err(RefreshError::RequestIdReused);
            }
            return self.resume_refresh(&req, record).await;
        }

        let (keys, action) = self.check_refresh(&req).await?;
        let signed = self.sign(action, now());
        let nullifiers: Vec<Nullifier> = req.tokens.iter().map(|t| t.nullifier()).collect();
        let requests_bytes = canonical_bytes(&req.requests);
        let ledger_request = serde_json::to_string(&signed)
            .map_err(|e| RefreshError::Internal(anyhow::Error::new(e)))?;
        match self
            .store
            .begin_refresh(NewRefresh {
                request_id: &req.request_id,
                body_hash: &hash,
                requests: &requests_bytes,
                ledger_request: &ledger_request,
                nullifiers: &nullifiers,
                now: now(),
            })
            .await?
        {
            BeginRefresh::Recorded => {}
            BeginRefresh::TokenTaken { index } => {
                return Err(RefreshError::AlreadySpent {
                    index,
                    first_spent_at: None,
                    first_spent_by: None,
                });
            }
            BeginRefresh::AlreadyRecorded => {
                let record = self.store.refresh(&req.request_id).await?.ok_or_else(|| {
                    RefreshError::Internal(anyhow::anyhow!("refresh record vanished"))
                })?;
                if record.body_hash != hash {
                    return Err(RefreshError::RequestIdReused);
                }
                return self.resume_refresh(&req, record).await;
            }
        }
        self.complete_refresh(&req, signed, keys).await
    }

    /// A repeat: the stored answer, or the rest of an attempt that stopped half way.
    async fn resume_refresh(
        &self,
        req: &RefreshRequest,
        record: crate::store::RefreshRecord,
    ) -> Result<RefreshResponse, RefreshError> {
        if let Some(responses) = record.responses {
            let responses: Vec<TokenResponse> = from_canonical_bytes(&responses)
                .map_err(|e| RefreshError::Internal(anyhow::anyhow!("stored refresh: {e}")))?;
            return Ok(RefreshResponse {
                request_id: req.request_id,
                responses,
            });
        }
        let signed: Signed<LedgerRequest> = serde_json::from_str(&record.ledger_request)
            .map_err(|e| RefreshError::Internal(anyhow::anyhow!("stored refresh: {e}")))?;
        let keys = self.output_keys(req).await?;
        self.complete_refresh(req, signed, keys).await
    }

    /// Sends the recorded ledger request until the ledger holds it, then signs the outputs and
    /// stores them with the record.
    async fn complete_refresh(
        &self,
        req: &RefreshRequest,
        mut signed: Signed<LedgerRequest>,
        keys: Vec<Arc<LoadedKey>>,
    ) -> Result<RefreshResponse, RefreshError> {
        // At most one re-signing: a fresh request is never stale on its first sending.
        for _ in 0..2 {
            match self.submit_refresh(req, &signed).await? {
                Committed::Yes => {
                    let responses = super::opening::sign_all(
                        &req.requests,
                        keys,
                        &self.metrics.blind_signatures,
                    )
                    .await
                    .map_err(|e| RefreshError::Internal(anyhow::anyhow!("{e}")))?;
                    self.store
                        .finish_refresh(&req.request_id, &canonical_bytes(&responses))
                        .await?;
                    self.metrics
                        .tokens_refreshed
                        .inc_by(req.tokens.len() as u64);
                    return Ok(RefreshResponse {
                        request_id: req.request_id,
                        responses,
                    });
                }
                Committed::NotYet => {
                    signed = self.sign(signed.payload.action.clone(), now());
                    let text = serde_json::to_string(&signed)
                        .map_err(|e| RefreshError::Internal(anyhow::Error::new(e)))?;
                    self.store.resign_refresh(&req.request_id, &text).await?;
                }
            }
        }
        Err(RefreshError::Internal(anyhow::anyhow!(
            "the ledger called a freshly signed refresh stale: check the clocks"
        )))
    }

    /// One sending of the ledger request, and what its answer means.
    async fn submit_refresh(
        &self,
        req: &RefreshRequest,
        signed: &Signed<LedgerRequest>,
    ) -> Result<Committed, RefreshError> {
        let error = match self.ledger.submit(signed).await {
            Ok(_) => return Ok(Committed::Yes),
            Err(e) => e,
        };
        match &error {
            ClientError::Refused { error: e, .. } => match e.code {
                // The ledger holds this very request: it committed before.
                LedgerErrorCode::ReplayedRequest => Ok(Committed::Yes),
                LedgerErrorCode::StaleRequest => self.committed_by_status(req, signed).await,
                LedgerErrorCode::AlreadySpent => {
                    self.store.drop_refresh(&req.request_id).await?;
                    Err(RefreshError::AlreadySpent {
                        index: e.details.index.map_or(0, |i| i as usize),
                        first_spent_at: e.details.first_spent_at,
                        first_spent_by: e.details.first_spent_by.clone(),
                    })
                }
                _ if !error.outcome_unknown() && !issuer_wide(e.code) => {
                    self.store.drop_refresh(&req.request_id).await?;
                    Err(RefreshError::LedgerRefused {
                        reason: e.message.clone(),
                    })
                }
                _ => Err(RefreshError::Internal(anyhow::Error::new(error))),
            },
            _ => Err(RefreshError::Internal(anyhow::Error::new(error))),
        }
    }

    /// After a stale answer the request's fate is in the spent set: every input unspent means
    /// it never committed (and now never will); spent by this issuer in an entry holding this
    /// very exchange means it did; spent by anyone else, the tokens are gone.
    async fn committed_by_status(
        &self,
        req: &RefreshRequest,
        signed: &Signed<LedgerRequest>,
    ) -> Result<Committed, RefreshError> {
        let ledger_error = |e| RefreshError::Internal(anyhow::Error::new(e));
        let mut ours_at = None;
        for (index, token) in req.tokens.iter().enumerate() {
            match self
                .ledger
                .nullifier(&token.nullifier())
                .await
                .map_err(ledger_error)?
            {
                NullifierStatus::Unspent => {}
                NullifierStatus::Spent {
                    spent_at,
                    spent_by,
                    seq,
                } => {
                    let ours = spent_by == self.name && self.entry_is(seq, signed).await?;
                    if !ours {
                        self.store.drop_refresh(&req.request_id).await?;
                        return Err(RefreshError::AlreadySpent {
                            index,
                            first_spent_at: Some(spent_at),
                            first_spent_by: Some(spent_by),
                        });
                    }
                    ours_at = Some(seq);
                }
            }
        }
        Ok(match ours_at {
            Some(_) => Committed::Yes,
            None => Committed::NotYet,
        })
    }

    /// Whether log entry `seq` is this issuer's refresh of the same exchange as `signed`
    /// (possibly an earlier signing of it).
    async fn entry_is(
        &self,
        seq: u64,
        signed: &Signed<LedgerRequest>,
    ) -> Result<bool, RefreshError> {
        let page = self
            .ledger
            .log(seq, 1)
            .await
            .map_err(|e| RefreshError::Internal(anyhow::Error::new(e)))?;
        Ok(page.entries.first().is_some_and(|entry| {
            entry.seq == seq
                && matches!(&entry.body, EntryBody::Request(r)
                    if r.signer == signed.signer && r.payload.action == signed.payload.action)
        }))
    }

    /// Every check, before any ledger request or signature: the inputs (own keys, redeemable,
    /// verified, not repeated), the outputs (own issuable keys, key ids, blinded messages),
    /// and the value. Returns the output keys and the ledger action.
    async fn check_refresh(
        &self,
        req: &RefreshRequest,
    ) -> Result<(Vec<Arc<LoadedKey>>, Action), RefreshError> {
        let t = now();
        let catalog = self
            .catalog
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let mut input_keys = Vec::with_capacity(req.tokens.len());
        let mut seen = HashSet::new();
        let mut value_in = 0u64;
        for (index, token) in req.tokens.iter().enumerate() {
            let key = self
                .key(&token.token_key_id)
                .await
                .ok_or(RefreshError::UnknownInputKey { index })?;
            if !key.info.can_redeem_at(t) {
                return Err(RefreshError::InputNotRedeemable { index });
            }
            if !seen.insert(token.nullifier()) {
                return Err(RefreshError::DuplicateToken { index });
            }
            value_in = value_in.saturating_add(
                catalog
                    .price(&key.info.kind)
                    .ok_or(RefreshError::InputNotRedeemable { index })?,
            );
            input_keys.push(key);
        }
        let (keys, value_out) = self
            .checked_requests(&req.requests, &catalog, t)
            .await
            .map_err(|(index, fault)| match fault {
                RequestFault::UnknownKey => RefreshError::UnknownKey { index },
                RequestFault::KeyNotIssuable => RefreshError::KeyNotIssuable { index },
                RequestFault::KeyMismatch => RefreshError::KeyMismatch { index },
                RequestFault::BadBlindedMessage => RefreshError::BadBlindedMessage { index },
            })?;
        let mut outputs: Vec<RefreshOutput> = Vec::new();
        for r in &req.requests {
            match outputs
                .iter_mut()
                .find(|o| o.token_key_id == r.token_key_id)
            {
                Some(o) => o.count += 1,
                None => outputs.push(RefreshOutput {
                    token_key_id: r.token_key_id,
                    count: 1,
                }),
            }
        }
        if value_out > value_in {
            return Err(RefreshError::ValueExceeded {
                value_in,
                value_out,
            });
        }
        // Last, as the costliest check: forged tokens cost a verification, never a ledger
        // request.
        let tokens = req.tokens.clone();
        let issuer = self.name.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            let challenge = TokenChallenge::for_issuer(&issuer).map_err(|e| (0, e.to_string()))?;
            tokens
                .iter()
                .zip(&input_keys)
                .enumerate()
                .try_for_each(|(index, (token, key))| {
                    verify_token(&key.info.public_key, &challenge, token)
                        .map_err(|e| (index, e.to_string()))
                })
        })
        .await
        .map_err(|e| RefreshError::Internal(e.into()))?;
        if let Err((index, reason)) = verdict {
            return Err(RefreshError::InvalidToken { index, reason });
        }
        let Action::Spend { groups } = Action::spend_of(req.tokens.iter().cloned()) else {
            return Err(RefreshError::Internal(anyhow::anyhow!(
                "spend_of did not make a spend"
            )));
        };
        let inputs: Vec<SpendGroup> = groups;
        Ok((keys, Action::Refresh { inputs, outputs }))
    }

    /// The key of every request, which must be one of this issuer's announced keys.
    async fn output_keys(&self, req: &RefreshRequest) -> Result<Vec<Arc<LoadedKey>>, RefreshError> {
        let mut keys = Vec::with_capacity(req.requests.len());
        for (index, r) in req.requests.iter().enumerate() {
            keys.push(
                self.key(&r.token_key_id)
                    .await
                    .ok_or(RefreshError::UnknownKey { index })?,
            );
        }
        Ok(keys)
    }

    /// A completed refresh as a replay answer, for a wallet restoring from its seed.
    pub(super) async fn replay_refresh(
        &self,
        id: &RequestId,
    ) -> Result<Option<ReplayResponse>, crate::store::StoreError> {
        let Some(record) = self.store.refresh(id).await? else {
            return Ok(None);
        };
        let Some(responses) = record.responses else {
            return Ok(None);
        };
        let corrupt = || crate::store::StoreError::Corrupt("stored refresh".into());
        Ok(Some(ReplayResponse {
            request_id: *id,
            requests: from_canonical_bytes(&record.requests).map_err(|_| corrupt())?,
            responses: from_canonical_bytes(&responses).map_err(|_| corrupt())?,
        }))
    }
}

/// Refusals of the issuer as a whole rather than of this refresh (as for the outbox,
/// PROTOCOL.md 9.7): the record stays, and a retry sends it again once they are fixed.
fn issuer_wide(code: LedgerErrorCode) -> bool {
    matches!(
        code,
        LedgerErrorCode::UnknownOperator
            | LedgerErrorCode::BadSignature
            | LedgerErrorCode::WrongLedger
            | LedgerErrorCode::Forbidden
            | LedgerErrorCode::RateLimited
            | LedgerErrorCode::Unknown
    )
}
