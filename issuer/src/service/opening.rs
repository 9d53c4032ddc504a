//! Opening a card: price checks, the atomic charge, blind signatures, and the record that
//! answers a repeat of the same request id with the same signatures.

use super::{Issuer, LoadedKey, now};
use crate::store::{CommitOutcome, NewOpening};
use scrip_common::metrics::Counter;
use scrip_spec::api::issuer::{
    KeyedTokenRequest, MAX_OPEN_BATCH, OpenRequest, OpenResponse, ReplayResponse, RequestId,
};
use scrip_spec::encoding::{canonical_bytes, from_canonical_bytes};
use scrip_spec::{CardCode, TokenKeyId, TokenResponse};
use std::collections::HashMap;
use std::sync::Arc;

/// Why an opening was refused. Nothing was charged.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The body is well formed JSON but not a valid opening.
    #[error("{0}")]
    Malformed(String),
    /// More than [`MAX_OPEN_BATCH`] requests.
    #[error("an opening carries at most {MAX_OPEN_BATCH} token requests; this has {0}")]
    TooLarge(usize),
    /// The code does not parse (typo).
    #[error(transparent)]
    MalformedCode(#[from] scrip_spec::CardCodeError),
    /// Unknown, not for sale, used up or void: deliberately one answer for all.
    #[error(
        "the card is not valid at this issuer: unknown here, not on sale yet, used up or void. A card opens only at the issuer that sold it, the one printed on the card"
    )]
    InvalidCard {
        /// Whether a card has this code. Only the rate limits read it (an unknown code counts
        /// towards the unknown-code ceiling, a known one towards its card's limit); the
        /// answer is the same either way.
        found: bool,
    },
    /// The request id was used for another opening.
    #[error("this request id was already used for a different opening")]
    RequestIdReused,
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
    /// The card's credits do not cover the price.
    #[error("the card has {remaining} credits left; these tokens cost {price}")]
    InsufficientCredits {
        /// Credits left.
        remaining: u64,
        /// The price asked.
        price: u64,
    },
    /// Storage failed; nothing was charged.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for OpenError {
    fn from(e: crate::store::StoreError) -> Self {
        OpenError::Internal(e.into())
    }
}

impl Issuer {
    /// A recorded opening, for a wallet restoring from its seed.
    pub async fn replay(&self, id: &RequestId) -> Result<Option<ReplayResponse>, OpenError> {
        let Some(record) = self.store.opening(id).await? else {
            // Refreshes take their request ids from the same counters as openings.
            return Ok(self.replay_refresh(id).await?);
        };
        let requests: Vec<KeyedTokenRequest> = from_canonical_bytes(&record.requests)
            .map_err(|e| OpenError::Internal(anyhow::anyhow!("stored opening: {e}")))?;
        let responses: Vec<TokenResponse> = from_canonical_bytes(&record.responses)
            .map_err(|e| OpenError::Internal(anyhow::anyhow!("stored opening: {e}")))?;
        Ok(Some(ReplayResponse {
            request_id: *id,
            requests,
            responses,
        }))
    }

    /// Opens (part of) a card: PROTOCOL.md section 9.3.
    pub async fn open_card(&self, req: OpenRequest) -> Result<OpenResponse, OpenError> {
        if req.requests.is_empty() {
            return Err(OpenError::Malformed(
                "an opening needs at least one token request".into(),
            ));
        }
        if req.requests.len() > MAX_OPEN_BATCH {
            return Err(OpenError::TooLarge(req.requests.len()));
        }
        let code = CardCode::parse(&req.card_code)?;
        let card_hash = code.storage_hash();
        // Held to the end: the balance read below and the charge after the signing are one
        // step for this card in this process.
        let _one_opening_of_this_card = self.card_locks.lock(&card_hash).await;
        let card = self.store.card(&card_hash).await?;
        let requests_bytes = canonical_bytes(&req.requests);

        // A repeat is answered from the record, whatever the card's state is now.
        if let Some(record) = self.store.opening(&req.request_id).await? {
            if card.is_none() {
                return Err(OpenError::InvalidCard { found: false });
            }
            let same = subtle::ConstantTimeEq::ct_eq(&record.card_hash[..], &card_hash[..]).into()
                && record.requests == requests_bytes;
            if !same {
                return Err(OpenError::RequestIdReused);
            }
            return self
                .answer_from_record(&req.request_id, &record.responses, &card_hash)
                .await;
        }
        let card = card.ok_or(OpenError::InvalidCard { found: false })?;
        if !matches!(
            card.state,
            scrip_spec::api::issuer::CardState::Active | scrip_spec::api::issuer::CardState::Opened
        ) {
            return Err(OpenError::InvalidCard { found: true });
        }

        // Every request is checked (key, window, key id, the blinded message's range) and the
        // whole price is known before the first private-key operation, so a refusal costs
        // only these cheap checks.
        let t = now();
        let catalog = self
            .catalog
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let (keys, price) = self
            .checked_requests(&req.requests, &catalog, t)
            .await
            .map_err(|(index, fault)| match fault {
                RequestFault::UnknownKey => OpenError::UnknownKey { index },
                RequestFault::KeyNotIssuable => OpenError::KeyNotIssuable { index },
                RequestFault::KeyMismatch => OpenError::KeyMismatch { index },
                RequestFault::BadBlindedMessage => OpenError::BadBlindedMessage { index },
            })?;
        let mut per_key: HashMap<TokenKeyId, u64> = HashMap::new();
        for r in &req.requests {
            *per_key.entry(r.token_key_id).or_default() += 1;
        }
        if price > card.remaining {
            return Err(OpenError::InsufficientCredits {
                remaining: card.remaining,
                price,
            });
        }

        let responses = sign_all(&req.requests, keys, &self.metrics.blind_signatures).await?;
        let responses_bytes = canonical_bytes(&responses);
        let per_key: Vec<(TokenKeyId, u64)> = per_key.into_iter().collect();
        let outcome = self
            .store
            .commit_opening(NewOpening {
                request_id: &req.request_id,
                card_hash: &card_hash,
                price,
                requests: &requests_bytes,
                responses: &responses_bytes,
                per_key: &per_key,
                now: t,
            })
            .await?;
        match outcome {
            CommitOutcome::Committed { remaining } => Ok(OpenResponse {
                request_id: req.request_id,
                responses,
                remaining_credits: remaining,
            }),
            CommitOutcome::InsufficientCredits { remaining } => {
                Err(OpenError::InsufficientCredits { remaining, price })
            }
            CommitOutcome::InvalidCard => Err(OpenError::InvalidCard { found: true }),
            CommitOutcome::AlreadyRecorded => {
                // A concurrent repeat won the race: answer as a repeat.
                let record = self
                    .store
                    .opening(&req.request_id)
                    .await?
                    .ok_or_else(|| OpenError::Internal(anyhow::anyhow!("opening vanished")))?;
                if record.requests != requests_bytes || record.card_hash != card_hash {
                    return Err(OpenError::RequestIdReused);
                }
                self.answer_from_record(&req.request_id, &record.responses, &card_hash)
                    .await
            }
        }
    }

    async fn answer_from_record(
        &self,
        id: &RequestId,
        responses: &[u8],
        card_hash: &[u8; 32],
    ) -> Result<OpenResponse, OpenError> {
        let responses: Vec<TokenResponse> = from_canonical_bytes(responses)
            .map_err(|e| OpenError::Internal(anyhow::anyhow!("stored opening: {e}")))?;
        let remaining = self
            .store
            .card(card_hash)
            .await?
            .map(|c| c.remaining)
            .unwrap_or(0);
        Ok(OpenResponse {
            request_id: *id,
            responses,
            remaining_credits: remaining,
        })
    }
}

/// What is wrong with a blinded request, found before any signature (openings and refreshes
/// alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFault {
    /// Its key is not one of this issuer's announced keys.
    UnknownKey,
    /// Its key cannot sign now, or its kind has no price.
    KeyNotIssuable,
    /// Its truncated key id is not its key's.
    KeyMismatch,
    /// Its blinded message is not in `2..n` for the key's modulus.
    BadBlindedMessage,
}

impl Issuer {
    /// The key of every request and their total price at `catalog`, once each request is
    /// checked: its key is one of this issuer's and can sign at `t`, its truncated key id
    /// matches, and its blinded message is one the key accepts. The one place these rules
    /// live; the first failure gives its position.
    pub(super) async fn checked_requests(
        &self,
        requests: &[KeyedTokenRequest],
        catalog: &scrip_spec::Catalog,
        t: scrip_spec::UnixSeconds,
    ) -> Result<(Vec<Arc<LoadedKey>>, u64), (usize, RequestFault)> {
        let mut keys = Vec::with_capacity(requests.len());
        let mut price = 0u64;
        for (index, r) in requests.iter().enumerate() {
            let fault = |f| (index, f);
            let key = self
                .key(&r.token_key_id)
                .await
                .ok_or(fault(RequestFault::UnknownKey))?;
            if !key.info.can_issue_at(t) {
                return Err(fault(RequestFault::KeyNotIssuable));
            }
            if r.token_request.truncated_token_key_id != r.token_key_id.truncated() {
                return Err(fault(RequestFault::KeyMismatch));
            }
            if !key
                .info
                .public_key
                .accepts_blinded_message(&r.token_request.blinded_msg)
            {
                return Err(fault(RequestFault::BadBlindedMessage));
            }
            let unit = catalog
                .price(&key.info.kind)
                .ok_or(fault(RequestFault::KeyNotIssuable))?;
            price = price.saturating_add(unit);
            keys.push(key);
        }
        Ok((keys, price))
    }
}

/// Blind-signs every request on the blocking pool, in as many chunks as there are cores, so
/// the async workers never stall. Every request was checked before: a failure here is the RSA
/// backend's (its result did not verify), so nothing is charged and the wallet may retry.
pub(super) async fn sign_all(
    requests: &[KeyedTokenRequest],
    keys: Vec<Arc<LoadedKey>>,
    signatures: &Counter,
) -> Result<Vec<TokenResponse>, OpenError> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let chunk = requests.len().div_ceil(cores).max(1);
    let mut tasks = Vec::new();
    for (reqs, keys) in requests.chunks(chunk).zip(keys.chunks(chunk)) {
        let reqs: Vec<_> = reqs.iter().map(|r| r.token_request.clone()).collect();
        let keys = keys.to_vec();
        let signatures = signatures.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            reqs.iter()
                .zip(keys)
                .map(|(r, k)| {
                    let response = k.secret.blind_sign(r).map_err(|e| {
                        OpenError::Internal(anyhow::Error::new(e).context("blind signing failed"))
                    })?;
                    signatures.inc();
                    Ok(response)
                })
                .collect::<Result<Vec<_>, OpenError>>()
        }));
    }
    let mut out = Vec::with_capacity(requests.len());
    for t in tasks {
        out.extend(t.await.map_err(|e| OpenError::Internal(e.into()))??);
    }
    Ok(out)
}

/// Stripes of [`CardLocks`].
const CARD_LOCK_STRIPES: usize = 64;

/// Openings of one card, one at a time in this process. The price is checked against the
/// balance before the signing and charged after it, so concurrent openings of one card would
/// all pass the check and all be signed, and all but one be refused after the work: free RSA
/// work, one card's value per concurrent request. Striped by the card hash (a hash, so evenly
/// spread), so memory stays fixed and unrelated cards rarely wait for each other. Issuers that
/// share one database in several processes are not covered; run one issuer per database.
#[derive(Debug)]
pub(crate) struct CardLocks([tokio::sync::Mutex<()>; CARD_LOCK_STRIPES]);

impl Default for CardLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl CardLocks {
    /// Waits for the card's stripe.
    pub(crate) async fn lock(&self, card_hash: &[u8; 32]) -> tokio::sync::MutexGuard<'_, ()> {
        self.0[usize::from(card_hash[0]) % CARD_LOCK_STRIPES]
            .lock()
            .await
    }
}
