//! Opening cards: blinded requests derived from the seed, recorded before they are sent, so
//! a crash or a lost answer is resumed with the same request id and the card is never
//! charged twice.

use super::{OpenSummary, Wallet, WalletError};
use crate::store::PendingOpening;
use scrip_common::clients::ClientError;
use scrip_spec::api::issuer::{
    BalanceResponse, IssuerErrorCode, KeyedTokenRequest, MAX_OPEN_BATCH, OpenRequest, OpenResponse,
    ReplayResponse, RequestId,
};
use scrip_spec::{CapacityKind, TokenChallenge, TokenKeyInfo, blind, finalize, now};

/// An opening set aside by [`Wallet::set_aside_openings`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetAside {
    /// The issuer that did not answer.
    pub issuer_url: String,
    /// Tokens the opening asked for.
    pub tokens: u64,
    /// Where the wallet's next opening starts.
    pub next_counter: u64,
}

/// A card code is checked here before any request: its check symbol catches a mistyped one.
fn check_card_code(code: &str) -> Result<(), WalletError> {
    scrip_spec::CardCode::parse(code)
        .map(|_| ())
        .map_err(WalletError::BadCardCode)
}

impl Wallet {
    /// A card's balance at its issuer.
    pub async fn card_balance(
        &self,
        issuer_url: &str,
        code: &str,
    ) -> Result<BalanceResponse, WalletError> {
        check_card_code(code)?;
        self.issuer(issuer_url)
            .balance(code)
            .await
            .map_err(WalletError::from_issuer)
    }

    /// Opens (part of) a card: `plan` says how many tokens of each kind. Openings of more
    /// than 1,000 tokens go in several requests; `progress(done, total)` is called after each.
    /// Any opening left unanswered by an earlier run is finished first.
    pub async fn open_card(
        &self,
        issuer_url: &str,
        code: &str,
        plan: &[(CapacityKind, u64)],
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<OpenSummary, WalletError> {
        check_card_code(code)?;
        self.resume_openings().await?;
        let kinds: Vec<CapacityKind> = plan.iter().map(|(k, _)| k.clone()).collect();
        let keys = self.trusted_keys(issuer_url, &kinds).await?;
        let mut items: Vec<&TokenKeyInfo> = Vec::new();
        for (kind, count) in plan {
            let key = &keys[kind];
            items.extend(std::iter::repeat_n(
                key,
                usize::try_from(*count).unwrap_or(0),
            ));
        }
        for key in keys.values() {
            self.store.put_key(key).await?;
            // Refreshes of these tokens go back to where they came from.
            self.store.set_issuer_url(&key.issuer, issuer_url).await?;
        }
        let total = items.len() as u64;
        let mut summary = OpenSummary::default();
        let mut done = 0u64;
        progress(0, total);
        for chunk in items.chunks(MAX_OPEN_BATCH) {
            let first = self.store.next_counter().await?;
            let requests = self.blinded_requests(first, chunk.iter().copied())?;
            let request = OpenRequest {
                card_code: code.to_owned(),
                request_id: RequestId(self.seed.request_id(first)),
                requests,
            };
            let pending = PendingOpening {
                request_id: request.request_id.0,
                first_counter: first,
                count: chunk.len() as u64,
                issuer_url: issuer_url.to_owned(),
                request: serde_json::to_string(&request).map_err(anyhow::Error::from)?,
            };
            // Recorded before it is sent: a crash from here on is resumed with the same id.
            self.store.begin_opening(&pending).await?;
            let response = self.send_opening(&pending, &request).await?;
            for key in chunk {
                *summary.tokens.entry(key.kind.to_string()).or_default() += 1;
            }
            summary.remaining_credits = response.remaining_credits;
            done += chunk.len() as u64;
            progress(done, total);
        }
        Ok(summary)
    }

    /// The blinded requests for tokens numbered from `first`, one per key in order: what an
    /// opening or a refresh sends, derived from the seed so a retry or a restore rebuilds them.
    pub(super) fn blinded_requests<'k>(
        &self,
        first: u64,
        keys: impl IntoIterator<Item = &'k TokenKeyInfo>,
    ) -> Result<Vec<KeyedTokenRequest>, WalletError> {
        keys.into_iter()
            .enumerate()
            .map(|(j, key)| {
                let challenge =
                    TokenChallenge::for_issuer(&key.issuer).map_err(anyhow::Error::from)?;
                let (token_request, _) =
                    blind(&self.seed, first + j as u64, &key.public_key, &challenge)
                        .map_err(anyhow::Error::from)?;
                Ok(KeyedTokenRequest {
                    token_key_id: key.public_key.id(),
                    token_request,
                })
            })
            .collect()
    }

    /// Sends an opening and stores its tokens; a definitive refusal forgets it (its counters
    /// are reused), no answer keeps it for the next run.
    async fn send_opening(
        &self,
        pending: &PendingOpening,
        request: &OpenRequest,
    ) -> Result<OpenResponse, WalletError> {
        match self.issuer(&pending.issuer_url).open(request).await {
            Ok(response) => {
                self.store_opening(pending, request, &response.responses)
                    .await?;
                Ok(response)
            }
            Err(
                e @ ClientError::Refused {
                    status: 400 | 403 | 413 | 422,
                    ..
                },
            ) => {
                self.store.abandon_opening(pending).await?;
                Err(WalletError::from_issuer(e))
            }
            Err(ClientError::Refused { status: 409, .. }) => {
                // The id is recorded with other content: recover what the issuer holds.
                let replay = self
                    .replay(&pending.issuer_url, &request.request_id)
                    .await?;
                if let Some(r) = &replay {
                    // The recorded opening may cover more counters than this one would have,
                    // and keys this wallet has not stored: take both from the record.
                    let directory = self.directory(None).await?;
                    for req in &r.requests {
                        let listed = directory
                            .iter()
                            .find(|k| k.info.public_key.id() == req.token_key_id);
                        if let Some(k) = listed {
                            self.store.put_key(&k.info).await?;
                        }
                    }
                    let end = pending.first_counter + r.requests.len() as u64;
                    if self.store.next_counter().await? < end {
                        self.store
                            .set_meta("next_counter", &end.to_string())
                            .await?;
                    }
                }
                match replay {
                    Some(r) => {
                        let request = OpenRequest {
                            requests: r.requests.clone(),
                            ..request.clone()
                        };
                        self.store_opening(pending, &request, &r.responses).await?;
                        Err(WalletError::IssuerRefused {
                            code: IssuerErrorCode::RequestIdReused,
                            message: "an earlier opening with this id was recovered; run the command again for this card".into(),
                        })
                    }
                    None => Err(WalletError::IssuerRefused {
                        code: IssuerErrorCode::RequestIdReused,
                        message: "the issuer reports a conflict it cannot show".into(),
                    }),
                }
            }
            Err(ClientError::Refused { error, .. }) => Err(WalletError::IssuerRefused {
                code: error.code,
                message: format!(
                    "{}; the opening is saved, run the command again to resume",
                    error.message
                ),
            }),
            Err(e) => Err(WalletError::from_issuer(e)),
        }
    }

    async fn store_opening(
        &self,
        pending: &PendingOpening,
        request: &OpenRequest,
        responses: &[scrip_spec::TokenResponse],
    ) -> Result<(), WalletError> {
        let tokens = self
            .finalize_responses(pending.first_counter, &request.requests, responses)
            .await?;
        self.store
            .finish_opening(&pending.request_id, &tokens, now())
            .await?;
        Ok(())
    }

    /// Rebuilds each request from the seed (request `j` is counter `first_counter + j`),
    /// checks it is the one sent, and finalizes its response into a verified token.
    pub(super) async fn finalize_responses(
        &self,
        first_counter: u64,
        requests: &[KeyedTokenRequest],
        responses: &[scrip_spec::TokenResponse],
    ) -> Result<Vec<(scrip_spec::Token, TokenKeyInfo, u64)>, WalletError> {
        if responses.len() != requests.len() {
            return Err(anyhow::anyhow!(
                "the issuer answered {} of {} requests",
                responses.len(),
                requests.len()
            )
            .into());
        }
        let mut tokens = Vec::with_capacity(responses.len());
        // A request uses few keys: read each from the store once.
        let mut keys: std::collections::HashMap<scrip_spec::TokenKeyId, TokenKeyInfo> =
            std::collections::HashMap::new();
        for (j, (req, resp)) in requests.iter().zip(responses).enumerate() {
            let info = match keys.entry(req.token_key_id) {
                std::collections::hash_map::Entry::Occupied(known) => known.get().clone(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let info = self.store.key(&req.token_key_id).await?.ok_or_else(|| {
                        anyhow::anyhow!("key {} of a request is unknown", req.token_key_id)
                    })?;
                    slot.insert(info).clone()
                }
            };
            let challenge =
                TokenChallenge::for_issuer(&info.issuer).map_err(anyhow::Error::from)?;
            let counter = first_counter + j as u64;
            let (rebuilt, state) = blind(&self.seed, counter, &info.public_key, &challenge)
                .map_err(anyhow::Error::from)?;
            if rebuilt != req.token_request {
                return Err(
                    anyhow::anyhow!("request {j} does not match this wallet's seed").into(),
                );
            }
            let token = finalize(&info.public_key, &state, resp)
                .map_err(|e| anyhow::anyhow!(e).context("the issuer's signature is invalid"))?;
            tokens.push((token, info, counter));
        }
        Ok(tokens)
    }

    /// Finishes openings an earlier run sent without storing the answer; then tries those
    /// set aside once each, without letting them hold anything back.
    pub async fn resume_openings(&self) -> Result<usize, WalletError> {
        let mut resumed = 0;
        for pending in self.store.pending_openings(false).await? {
            let request: OpenRequest =
                serde_json::from_str(&pending.request).map_err(anyhow::Error::from)?;
            match self.send_opening(&pending, &request).await {
                Ok(_) => resumed += 1,
                // Still unanswered: it stays pending and holds back new openings (below).
                Err(WalletError::IssuerRefused { .. } | WalletError::NoAnswer { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // Refreshes take counters too: an unanswered one holds them like an opening.
        self.resume_refreshes().await?;
        // An opening still unanswered holds its counters: a new one must not start after it,
        // or a later refusal of the old one would leave a gap that stops a restore (5.4).
        if let Some(stuck) = self.store.pending_openings(false).await?.first() {
            return Err(WalletError::OpeningPending {
                issuer_url: stuck.issuer_url.clone(),
            });
        }
        for aside in self.store.pending_openings(true).await? {
            let request: OpenRequest =
                serde_json::from_str(&aside.request).map_err(anyhow::Error::from)?;
            // Best effort: an issuer still silent keeps it aside, as before.
            if self.send_opening(&aside, &request).await.is_ok() {
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Sets every unanswered opening aside (`wallet open --abandon`), so new openings no
    /// longer wait for it. Nothing is given up for good: each is kept with its request id and
    /// tried again whenever the wallet opens a card, so an issuer that answers later (or a
    /// restore) still delivers its tokens. What it may cost: if the issuer recorded it, the
    /// card was charged for those tokens and they stay out of reach until the issuer answers.
    pub async fn set_aside_openings(&self) -> Result<Vec<SetAside>, WalletError> {
        let mut out = Vec::new();
        for pending in self.store.pending_openings(false).await? {
            let next_counter = self.store.set_aside_opening(&pending, now()).await?;
            out.push(SetAside {
                issuer_url: pending.issuer_url.clone(),
                tokens: pending.count,
                next_counter,
            });
        }
        Ok(out)
    }

    pub(super) async fn replay(
        &self,
        issuer_url: &str,
        id: &RequestId,
    ) -> Result<Option<ReplayResponse>, WalletError> {
        match self.issuer(issuer_url).replay(id).await {
            Ok(r) => Ok(Some(r)),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(WalletError::from_issuer(e)),
        }
    }
}
