//! The wallet: opening cards, keeping tokens, spending them, and never losing one.

use crate::remote::{Remote, Reply};
use crate::store::{PendingOpening, StoredToken, TokenState, WalletStore};
use scrip_ledger::LedgerClient;
use scrip_ledger::http::NullifierStatus;
use scrip_spec::export::{EXPORT_VERSION, ExportFile, ExportedToken};
use scrip_spec::issuance::{
    BalanceRequest, BalanceResponse, IssuerKeys, KeyedTokenRequest, MAX_OPEN_BATCH, OpenRequest,
    OpenResponse, ReplayRequest, ReplayResponse, RequestId,
};
use scrip_spec::ledger::MAX_LIVE_KEYS;
use scrip_spec::{
    CapacityKind, Token, TokenChallenge, TokenKeyInfo, UnixSeconds, WalletSeed, blind, finalize,
    verify_token,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Warn about tokens this close to their `redeem_until`.
pub const EXPIRY_WARNING_SECS: u64 = 3 * 86_400;

pub use scrip_ledger::service::now;

/// Why a wallet operation failed, with what to do next.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The issuer offers a key the ledger does not list identically: possibly a tagging key.
    #[error(
        "the issuer's {kind} key {key} is not on the ledger's key directory as announced; refusing it (it could identify you)"
    )]
    UntrustedKey {
        /// The kind.
        kind: String,
        /// The key id.
        key: String,
    },
    /// The ledger lists more live keys for one issuer and kind than allowed.
    #[error(
        "the ledger lists {count} live {kind} keys for {issuer}, more than {MAX_LIVE_KEYS}; refusing (possible key tagging)"
    )]
    TooManyKeys {
        /// The issuer.
        issuer: String,
        /// The kind.
        kind: String,
        /// Live keys.
        count: usize,
    },
    /// No usable key for a kind.
    #[error("{issuer} has no key for {kind} that can issue now")]
    NoKey {
        /// The issuer.
        issuer: String,
        /// The kind.
        kind: String,
    },
    /// The issuer refused.
    #[error("the issuer refused: {code}: {message}")]
    IssuerRefused {
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The redeemer refused.
    #[error("the redeemer refused: {code}: {message}")]
    RedeemerRefused {
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The token was spent before.
    #[error(
        "that token was already spent (at {first_spent_at} by {first_spent_by}); it is marked spent"
    )]
    AlreadySpent {
        /// When.
        first_spent_at: u64,
        /// By whom.
        first_spent_by: String,
    },
    /// No answer; the work is saved and is resumed by running the command again.
    #[error("no answer from {what} ({source}); nothing is lost: run the command again to resume")]
    NoAnswer {
        /// Which service.
        what: &'static str,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// No unspent token of the kind.
    #[error("no unspent {kind} token; open a card first (`scrip wallet open`)")]
    NoToken {
        /// The kind.
        kind: String,
    },
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn refused(error: &serde_json::Value) -> (String, String) {
    (
        error["code"].as_str().unwrap_or("unknown").to_owned(),
        error["message"].as_str().unwrap_or("").to_owned(),
    )
}

/// What an opening produced.
#[derive(Debug, Clone, Default)]
pub struct OpenSummary {
    /// Tokens stored, per kind.
    pub tokens: BTreeMap<String, u64>,
    /// Credits left on the card.
    pub remaining_credits: u64,
}

/// A spend's result.
#[derive(Debug, Clone)]
pub struct SpendReceipt {
    /// The grant code to hand to the relay.
    pub grant: String,
    /// Its kind.
    pub kind: String,
    /// Its expiry.
    pub expires_at: u64,
}

/// Tokens per kind and expiry.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Balance {
    /// `(kind, redeem_until) → unspent count`.
    pub unspent: BTreeMap<(String, u64), u64>,
    /// Tokens whose spend outcome is being resolved.
    pub pending: u64,
    /// Spent tokens.
    pub spent: u64,
    /// Tokens that expired unspent.
    pub expired: u64,
}

/// How long after a spend attempt with an unknown outcome the ledger's "unspent" is taken as
/// final: a request signed at the attempt can land until [`MAX_CLOCK_SKEW`] past it by the
/// ledger's clock, the redeemer's clock may itself be [`MAX_CLOCK_SKEW`] ahead, and a redeemer
/// retries for under a minute.
///
/// [`MAX_CLOCK_SKEW`]: scrip_spec::ledger::MAX_CLOCK_SKEW
pub const SETTLE_HORIZON_SECS: UnixSeconds = 2 * scrip_spec::ledger::MAX_CLOCK_SKEW + 60;

/// A wallet.
pub struct Wallet {
    store: WalletStore,
    seed: WalletSeed,
    ledger: LedgerClient,
    remote: Remote,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet").finish_non_exhaustive()
    }
}

impl Wallet {
    /// Creates a wallet file (owner-only) with a new seed, or with `seed` for a restore.
    pub async fn create(
        path: &Path,
        ledger_url: &str,
        seed: Option<WalletSeed>,
    ) -> anyhow::Result<Self> {
        let store = WalletStore::open(path, true).await?;
        let seed = seed.unwrap_or_else(WalletSeed::generate);
        store.set_meta("seed", &seed.backup_code()).await?;
        store.set_meta("ledger_url", ledger_url).await?;
        Ok(Self {
            store,
            seed,
            ledger: LedgerClient::new(ledger_url),
            remote: Remote::default(),
        })
    }

    /// Opens an existing wallet file.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let store = WalletStore::open(path, false).await?;
        let seed = store
            .meta("seed")
            .await?
            .ok_or_else(|| anyhow::anyhow!("the wallet has no seed"))?;
        let seed = WalletSeed::from_backup_code(&seed)?;
        let ledger_url = store
            .meta("ledger_url")
            .await?
            .ok_or_else(|| anyhow::anyhow!("the wallet names no ledger"))?;
        Ok(Self {
            store,
            seed,
            ledger: LedgerClient::new(&ledger_url),
            remote: Remote::default(),
        })
    }

    /// The seed's backup code.
    pub fn backup_code(&self) -> zeroize::Zeroizing<String> {
        self.seed.backup_code()
    }

    /// The store (for inspection).
    pub fn store(&self) -> &WalletStore {
        &self.store
    }

    /// A card's balance at its issuer.
    pub async fn card_balance(
        &self,
        issuer_url: &str,
        code: &str,
    ) -> Result<BalanceResponse, WalletError> {
        let url = format!("{}/v1/cards/balance", issuer_url.trim_end_matches('/'));
        match self
            .remote
            .post(
                &url,
                &BalanceRequest {
                    card_code: code.to_owned(),
                },
            )
            .await
        {
            Reply::Ok(b) => Ok(b),
            Reply::Refused { error, .. } => {
                let (code, message) = refused(&error);
                Err(WalletError::IssuerRefused { code, message })
            }
            Reply::NoAnswer(source) => Err(WalletError::NoAnswer {
                what: "the issuer",
                source,
            }),
        }
    }

    /// The issuer's keys for each kind asked, each checked against the ledger's directory:
    /// the same key with the same metadata, not revoked, and no more than the allowed number
    /// of live keys for that issuer and kind (a key per user would exceed it).
    pub async fn trusted_keys(
        &self,
        issuer_url: &str,
        kinds: &[CapacityKind],
    ) -> Result<BTreeMap<CapacityKind, TokenKeyInfo>, WalletError> {
        let url = format!("{}/v1/keys", issuer_url.trim_end_matches('/'));
        let offered: IssuerKeys = match self.remote.get(&url).await {
            Reply::Ok(k) => k,
            Reply::Refused { error, .. } => {
                let (code, message) = refused(&error);
                return Err(WalletError::IssuerRefused { code, message });
            }
            Reply::NoAnswer(source) => {
                return Err(WalletError::NoAnswer {
                    what: "the issuer",
                    source,
                });
            }
        };
        let directory = self
            .ledger
            .keys(Some(&offered.issuer), None)
            .await
            .map_err(|e| anyhow::anyhow!(e).context("cannot read the ledger's key directory"))?;
        let t = now();
        let mut chosen = BTreeMap::new();
        for kind in kinds {
            let live = directory
                .iter()
                .filter(|r| &r.info.kind == kind && !r.revoked && t <= r.info.redeem_until)
                .count();
            if live > MAX_LIVE_KEYS {
                return Err(WalletError::TooManyKeys {
                    issuer: offered.issuer.clone(),
                    kind: kind.to_string(),
                    count: live,
                });
            }
            let mut best: Option<&TokenKeyInfo> = None;
            for k in offered
                .keys
                .iter()
                .filter(|k| &k.kind == kind && k.can_issue_at(t))
            {
                let listed = directory.iter().any(|r| &r.info == k && !r.revoked);
                if !listed || k.issuer != offered.issuer {
                    return Err(WalletError::UntrustedKey {
                        kind: kind.to_string(),
                        key: k.public_key.id().to_string(),
                    });
                }
                if best.is_none_or(|b| b.valid_from < k.valid_from) {
                    best = Some(k);
                }
            }
            let best = best.ok_or_else(|| WalletError::NoKey {
                issuer: offered.issuer.clone(),
                kind: kind.to_string(),
            })?;
            chosen.insert(kind.clone(), best.clone());
        }
        Ok(chosen)
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
        }
        let total = items.len() as u64;
        let mut summary = OpenSummary::default();
        let mut done = 0u64;
        progress(0, total);
        for chunk in items.chunks(MAX_OPEN_BATCH) {
            let first = self.store.next_counter().await?;
            let mut requests = Vec::with_capacity(chunk.len());
            for (j, key) in chunk.iter().enumerate() {
                let challenge =
                    TokenChallenge::for_issuer(&key.issuer).map_err(anyhow::Error::from)?;
                let (token_request, _) =
                    blind(&self.seed, first + j as u64, &key.public_key, &challenge)
                        .map_err(anyhow::Error::from)?;
                requests.push(KeyedTokenRequest {
                    token_key_id: key.public_key.id(),
                    token_request,
                });
            }
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

    /// Sends an opening and stores its tokens; a definitive refusal forgets it (its counters
    /// are reused), no answer keeps it for the next run.
    async fn send_opening(
        &self,
        pending: &PendingOpening,
        request: &OpenRequest,
    ) -> Result<OpenResponse, WalletError> {
        let url = format!("{}/v1/cards/open", pending.issuer_url.trim_end_matches('/'));
        match self.remote.post::<_, OpenResponse>(&url, request).await {
            Reply::Ok(response) => {
                self.store_opening(pending, request, &response.responses)
                    .await?;
                Ok(response)
            }
            Reply::Refused {
                status: 400 | 403 | 413 | 422,
                error,
            } => {
                self.store.abandon_opening(pending).await?;
                let (code, message) = refused(&error);
                Err(WalletError::IssuerRefused { code, message })
            }
            Reply::Refused { status: 409, .. } => {
                // The id is recorded with other content: recover what the issuer holds.
                let replay = self
                    .replay(&pending.issuer_url, &request.request_id)
                    .await?;
                if let Some(r) = &replay {
                    // The recorded opening may cover more counters than this one would have,
                    // and keys this wallet has not stored: take both from the record.
                    let directory = self.ledger.keys(None, None).await.map_err(|e| {
                        anyhow::anyhow!(e).context("cannot read the ledger's key directory")
                    })?;
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
                            code: "request_id_reused".into(),
                            message: "an earlier opening with this id was recovered; run the command again for this card".into(),
                        })
                    }
                    None => Err(WalletError::IssuerRefused {
                        code: "request_id_reused".into(),
                        message: "the issuer reports a conflict it cannot show".into(),
                    }),
                }
            }
            Reply::Refused { error, .. } => {
                let (code, message) = refused(&error);
                Err(WalletError::IssuerRefused {
                    code,
                    message: format!(
                        "{message}; the opening is saved, run the command again to resume"
                    ),
                })
            }
            Reply::NoAnswer(source) => Err(WalletError::NoAnswer {
                what: "the issuer",
                source,
            }),
        }
    }

    async fn store_opening(
        &self,
        pending: &PendingOpening,
        request: &OpenRequest,
        responses: &[scrip_spec::TokenResponse],
    ) -> Result<(), WalletError> {
        if responses.len() != request.requests.len() {
            return Err(anyhow::anyhow!(
                "the issuer answered {} of {} requests",
                responses.len(),
                request.requests.len()
            )
            .into());
        }
        let mut tokens = Vec::with_capacity(responses.len());
        // An opening uses few keys: read each from the store once.
        let mut keys: std::collections::HashMap<scrip_spec::TokenKeyId, TokenKeyInfo> =
            std::collections::HashMap::new();
        for (j, (req, resp)) in request.requests.iter().zip(responses).enumerate() {
            let info = match keys.entry(req.token_key_id) {
                std::collections::hash_map::Entry::Occupied(known) => known.get().clone(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let info = self.store.key(&req.token_key_id).await?.ok_or_else(|| {
                        anyhow::anyhow!("key {} of an opening is unknown", req.token_key_id)
                    })?;
                    slot.insert(info).clone()
                }
            };
            let challenge =
                TokenChallenge::for_issuer(&info.issuer).map_err(anyhow::Error::from)?;
            let counter = pending.first_counter + j as u64;
            let (rebuilt, state) = blind(&self.seed, counter, &info.public_key, &challenge)
                .map_err(anyhow::Error::from)?;
            if rebuilt != req.token_request {
                return Err(anyhow::anyhow!(
                    "opening request {j} does not match this wallet's seed"
                )
                .into());
            }
            let token = finalize(&info.public_key, &state, resp)
                .map_err(|e| anyhow::anyhow!(e).context("the issuer's signature is invalid"))?;
            tokens.push((token, info, counter));
        }
        self.store
            .finish_opening(&pending.request_id, &tokens, now())
            .await?;
        Ok(())
    }

    /// Finishes openings an earlier run sent without storing the answer.
    pub async fn resume_openings(&self) -> Result<usize, WalletError> {
        let mut resumed = 0;
        for pending in self.store.pending_openings().await? {
            let request: OpenRequest =
                serde_json::from_str(&pending.request).map_err(anyhow::Error::from)?;
            match self.send_opening(&pending, &request).await {
                Ok(_) => resumed += 1,
                Err(WalletError::IssuerRefused { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // An opening still unanswered holds its counters: a new one must not start after it,
        // or a later refusal of the old one would leave a gap that stops a restore (5.4).
        if let Some(stuck) = self.store.pending_openings().await?.first() {
            return Err(WalletError::IssuerRefused {
                code: "opening_pending".into(),
                message: format!(
                    "an earlier opening at {} is not answered yet; run the command again later",
                    stuck.issuer_url
                ),
            });
        }
        Ok(resumed)
    }

    async fn replay(
        &self,
        issuer_url: &str,
        id: &RequestId,
    ) -> Result<Option<ReplayResponse>, WalletError> {
        let url = format!("{}/v1/requests/replay", issuer_url.trim_end_matches('/'));
        match self
            .remote
            .post(&url, &ReplayRequest { request_id: *id })
            .await
        {
            Reply::Ok(r) => Ok(Some(r)),
            Reply::Refused { status: 404, .. } => Ok(None),
            Reply::Refused { error, .. } => {
                let (code, message) = refused(&error);
                Err(WalletError::IssuerRefused { code, message })
            }
            Reply::NoAnswer(source) => Err(WalletError::NoAnswer {
                what: "the issuer",
                source,
            }),
        }
    }

    /// Spends the token of `kind` closest to expiry at a redeemer; returns the grant.
    pub async fn spend(
        &self,
        kind: &CapacityKind,
        redeemer_url: &str,
    ) -> Result<SpendReceipt, WalletError> {
        self.resolve_pending().await?;
        // An interrupted spend at this redeemer is finished first: presenting the same token
        // there again is always safe (if its spend committed, the redeemer grants again), and
        // it settles the token instead of leaving it pending.
        let token = match self.store.pending_at(kind.as_str(), redeemer_url).await? {
            Some(pending) => pending,
            None => self
                .store
                .take_for_spend(kind.as_str(), redeemer_url, now())
                .await?
                .ok_or_else(|| WalletError::NoToken {
                    kind: kind.to_string(),
                })?,
        };
        self.redeem_pending(&token, kind, redeemer_url).await
    }

    /// Presents a pending token; settles its state from the answer, or from the ledger when
    /// there is none.
    async fn redeem_pending(
        &self,
        stored: &StoredToken,
        kind: &CapacityKind,
        redeemer_url: &str,
    ) -> Result<SpendReceipt, WalletError> {
        #[derive(serde::Deserialize)]
        struct Redeemed {
            grant: String,
            kind: String,
            expires_at: u64,
        }
        let nullifier = stored.token.nullifier();
        let url = format!("{}/v1/redeem", redeemer_url.trim_end_matches('/'));
        let body = serde_json::json!({
            "token": scrip_spec::encoding::b64_encode(stored.token.to_bytes()),
            "kind": kind,
        });
        let t = now();
        match self.remote.post::<_, Redeemed>(&url, &body).await {
            Reply::Ok(r) => {
                self.store
                    .set_state(
                        &nullifier,
                        TokenState::Spent,
                        Some((&r.grant, r.expires_at)),
                        None,
                        t,
                    )
                    .await?;
                Ok(SpendReceipt {
                    grant: r.grant,
                    kind: r.kind,
                    expires_at: r.expires_at,
                })
            }
            Reply::Refused { status, error } if status >= 500 => {
                // The redeemer could not finish; the spend may have committed all the same:
                // the ledger knows.
                let (code, message) = refused(&error);
                self.settle_at_ledger(&nullifier, t).await?;
                Err(WalletError::RedeemerRefused { code, message })
            }
            Reply::Refused { error, .. } => {
                let (code, message) = refused(&error);
                let state = match code.as_str() {
                    "already_spent" => TokenState::Spent,
                    "key_not_redeemable" => TokenState::Expired,
                    "invalid_signature" | "wrong_challenge" | "malformed_token" => {
                        TokenState::Invalid
                    }
                    // Not spent: the redeemer does not know the key (yet), or another refusal
                    // made before any spend.
                    _ => TokenState::Unspent,
                };
                self.store
                    .set_state(&nullifier, state, None, Some(&code), t)
                    .await?;
                if state == TokenState::Spent {
                    return Err(WalletError::AlreadySpent {
                        first_spent_at: error["first_spent_at"].as_u64().unwrap_or(0),
                        first_spent_by: error["first_spent_by"].as_str().unwrap_or("?").to_owned(),
                    });
                }
                Err(WalletError::RedeemerRefused { code, message })
            }
            Reply::NoAnswer(source) => {
                // The spend may or may not have happened: the ledger knows, in time.
                self.settle_at_ledger(&nullifier, t).await?;
                Err(WalletError::NoAnswer {
                    what: "the redeemer",
                    source,
                })
            }
        }
    }

    /// Settles one pending token whose spend was attempted at `attempted_at` from the
    /// ledger's record. Spent is final. Unspent is final only after [`SETTLE_HORIZON_SECS`]:
    /// until then a spend request for it may still be on its way to the ledger (the redeemer
    /// died, or its answer was lost), so the token stays pending. It stays pending too if the
    /// ledger does not answer.
    async fn settle_at_ledger(
        &self,
        nullifier: &scrip_spec::Nullifier,
        attempted_at: UnixSeconds,
    ) -> anyhow::Result<bool> {
        let t = now();
        let (state, note) = match self.ledger.nullifier(nullifier).await {
            Ok(NullifierStatus::Unspent) if t >= attempted_at + SETTLE_HORIZON_SECS => {
                (TokenState::Unspent, "not spent at the ledger")
            }
            // Spent with its grant lost: presenting it again at the same redeemer gets a
            // fresh grant (PROTOCOL.md section 10.1).
            Ok(NullifierStatus::Spent { .. }) => (TokenState::Spent, "answer lost"),
            Ok(NullifierStatus::Unspent) | Err(_) => return Ok(false),
        };
        self.store
            .set_state(nullifier, state, None, Some(note), t)
            .await?;
        Ok(true)
    }

    /// Settles tokens whose spend outcome is unknown by asking the ledger; how many settled
    /// (see [`Self::settle_at_ledger`] for why some stay pending).
    pub async fn resolve_pending(&self) -> Result<usize, WalletError> {
        let mut settled = 0;
        for stored in self.store.tokens(TokenState::Pending).await? {
            if self
                .settle_at_ledger(&stored.token.nullifier(), stored.updated_at)
                .await?
            {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Tokens per kind and expiry; marks tokens past their window expired first.
    pub async fn balance(&self) -> anyhow::Result<Balance> {
        self.store.expire(now()).await?;
        let mut b = Balance::default();
        for t in self.store.tokens(TokenState::Unspent).await? {
            *b.unspent.entry((t.kind, t.redeem_until)).or_default() += 1;
        }
        b.pending = self.store.tokens(TokenState::Pending).await?.len() as u64;
        b.spent = self.store.tokens(TokenState::Spent).await?.len() as u64;
        b.expired = self.store.tokens(TokenState::Expired).await?.len() as u64;
        Ok(b)
    }

    /// The unspent tokens with their keys, in the export format.
    pub async fn export(&self) -> anyhow::Result<ExportFile> {
        let mut tokens = Vec::new();
        for t in self.store.tokens(TokenState::Unspent).await? {
            let key = self
                .store
                .key(&t.token.token_key_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("a token's key is missing"))?;
            tokens.push(ExportedToken {
                token: t.token,
                key,
            });
        }
        Ok(ExportFile {
            version: EXPORT_VERSION,
            tokens,
        })
    }

    /// Imports tokens: each key must be on the ledger's directory as given, each signature
    /// valid, each nullifier unspent. Returns how many were new.
    pub async fn import(&self, file: &ExportFile) -> Result<usize, WalletError> {
        if file.version != EXPORT_VERSION {
            return Err(anyhow::anyhow!(
                "export format version {} is not supported (expected {EXPORT_VERSION})",
                file.version
            )
            .into());
        }
        let directory =
            self.ledger.keys(None, None).await.map_err(|e| {
                anyhow::anyhow!(e).context("cannot read the ledger's key directory")
            })?;
        let mut accepted = Vec::new();
        for e in &file.tokens {
            if !directory.iter().any(|r| r.info == e.key && !r.revoked) {
                return Err(WalletError::UntrustedKey {
                    kind: e.key.kind.to_string(),
                    key: e.key.public_key.id().to_string(),
                });
            }
            let challenge =
                TokenChallenge::for_issuer(&e.key.issuer).map_err(anyhow::Error::from)?;
            verify_token(&e.key.public_key, &challenge, &e.token)
                .map_err(|err| anyhow::anyhow!(err).context("an imported token is invalid"))?;
            if let Ok(NullifierStatus::Spent { .. }) =
                self.ledger.nullifier(&e.token.nullifier()).await
            {
                continue;
            }
            accepted.push((e.token.clone(), e.key.clone(), None));
        }
        Ok(self.store.add_tokens(&accepted, now()).await?)
    }

    /// Rebuilds the tokens of every opening this seed made at `issuers`, walking request ids
    /// from counter 0 (PROTOCOL.md section 5.5). Returns how many tokens were recovered.
    pub async fn restore(&self, issuers: &[String]) -> Result<usize, WalletError> {
        let directory =
            self.ledger.keys(None, None).await.map_err(|e| {
                anyhow::anyhow!(e).context("cannot read the ledger's key directory")
            })?;
        let mut counter = 0u64;
        let mut recovered = 0;
        'walk: loop {
            let id = RequestId(self.seed.request_id(counter));
            for issuer in issuers {
                let Some(replay) = self.replay(issuer, &id).await? else {
                    continue;
                };
                let mut tokens = Vec::new();
                for (j, (req, resp)) in replay.requests.iter().zip(&replay.responses).enumerate() {
                    let Some(record) = directory
                        .iter()
                        .find(|r| r.info.public_key.id() == req.token_key_id)
                    else {
                        continue;
                    };
                    let challenge = TokenChallenge::for_issuer(&record.info.issuer)
                        .map_err(anyhow::Error::from)?;
                    let (rebuilt, state) = blind(
                        &self.seed,
                        counter + j as u64,
                        &record.info.public_key,
                        &challenge,
                    )
                    .map_err(anyhow::Error::from)?;
                    if rebuilt != req.token_request {
                        continue;
                    }
                    if let Ok(token) = finalize(&record.info.public_key, &state, resp) {
                        tokens.push((token, record.info.clone(), Some(counter + j as u64)));
                    }
                }
                recovered += self.store.add_tokens(&tokens, now()).await?;
                for (token, _, _) in &tokens {
                    if let Ok(NullifierStatus::Spent { .. }) =
                        self.ledger.nullifier(&token.nullifier()).await
                    {
                        self.store
                            .set_state(
                                &token.nullifier(),
                                TokenState::Spent,
                                None,
                                Some("restored: spent"),
                                now(),
                            )
                            .await?;
                    }
                }
                counter += replay.requests.len().max(1) as u64;
                // Never lower the counter: openings beyond a gap at an issuer not listed here
                // must not be overwritten by new ones.
                if self.store.next_counter().await? < counter {
                    self.store
                        .set_meta("next_counter", &counter.to_string())
                        .await?;
                }
                continue 'walk;
            }
            break;
        }
        Ok(recovered)
    }

    /// The stored token behind a nullifier (tests, inspection).
    pub async fn token(
        &self,
        nullifier: &scrip_spec::Nullifier,
    ) -> anyhow::Result<Option<StoredToken>> {
        self.store.token(nullifier).await
    }

    /// Every token in a state.
    pub async fn tokens(&self, state: TokenState) -> anyhow::Result<Vec<StoredToken>> {
        self.store.tokens(state).await
    }

    /// An unspent token of `kind`, as stored (for inspection, and the demo's double spend).
    pub async fn unspent_token(&self, kind: &str) -> anyhow::Result<Option<Token>> {
        Ok(self
            .store
            .tokens(TokenState::Unspent)
            .await?
            .into_iter()
            .find(|t| t.kind == kind)
            .map(|t| t.token))
    }
}
