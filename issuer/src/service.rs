//! The issuer: keys, cards, openings, and the outbox of ledger requests.

use crate::config::IssuerConfig;
use crate::store::{CommitOutcome, IssuerStore, NewOpening, OnSuccess, OutboxItem, StoredKey};
use scrip_common::clients::LedgerClient;
use scrip_spec::api::issuer::{
    BalanceResponse, IssuerKeys, KeyedTokenRequest, MAX_OPEN_BATCH, OpenRequest, OpenResponse,
    ReplayResponse, RequestId,
};
use scrip_spec::api::ledger::LedgerErrorCode;
use scrip_spec::encoding::{canonical_bytes, from_canonical_bytes};
use scrip_spec::ledger::{Action, Hash32, LedgerRequest};
use scrip_spec::{
    CardCode, Catalog, OperatorKey, Signed, TokenKeyId, TokenKeyInfo, TokenResponse,
    TokenSecretKey, UnixSeconds,
};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const DAY: u64 = 86_400;

pub use scrip_spec::now;

/// A key ready to sign.
#[derive(Debug)]
pub struct LoadedKey {
    /// Its metadata.
    pub info: TokenKeyInfo,
    /// The secret key.
    pub secret: TokenSecretKey,
}

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
    #[error("the card is invalid or used")]
    InvalidCard,
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
    /// A blinded message is out of range for its key.
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

/// The issuer.
pub struct Issuer {
    name: String,
    config: IssuerConfig,
    store: Arc<dyn IssuerStore>,
    operator: OperatorKey,
    ledger: LedgerClient,
    ledger_id: Hash32,
    catalog: RwLock<Catalog>,
    keys: RwLock<HashMap<TokenKeyId, Arc<LoadedKey>>>,
    /// When an unknown key id last caused a reload: at most one a second, so random key ids
    /// in openings cannot turn into disk reads and ledger calls.
    last_miss_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Opens the store, reads the operator key, and fetches the ledger's id and catalog.
    pub async fn open(config: IssuerConfig) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(&config.operator_key_file).with_context(|| {
            format!(
                "cannot read the operator key {}",
                config.operator_key_file.display()
            )
        })?;
        let operator = OperatorKey::from_text(&text)?;
        let store = crate::store::connect(&config.database).await?;
        let ledger = LedgerClient::new(&config.ledger_url);
        let info = ledger.info().await.with_context(|| {
            format!(
                "cannot reach the ledger at {}; start it or fix ledger_url",
                config.ledger_url
            )
        })?;
        let me = info.operators.iter().find(|o| o.id == operator.id());
        match me {
            Some(o) if o.name == config.name => {}
            Some(o) => anyhow::bail!(
                "the ledger knows this operator key as {:?}, not {:?}; fix `name` in the config",
                o.name,
                config.name
            ),
            None => anyhow::bail!(
                "operator key {} is not a member of the ledger; have it admitted first",
                operator.id()
            ),
        }
        let issuer = Self {
            name: config.name.clone(),
            store,
            operator,
            ledger,
            ledger_id: info.ledger_id,
            catalog: RwLock::new(info.catalog),
            keys: RwLock::new(HashMap::new()),
            last_miss_reload: tokio::sync::Mutex::new(None),
            config,
        };
        issuer.reload_keys().await?;
        Ok(issuer)
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn IssuerStore> {
        &self.store
    }

    fn sign(&self, action: Action, at: UnixSeconds) -> Signed<LedgerRequest> {
        self.operator
            .sign(LedgerRequest::new(self.ledger_id, at, action))
    }

    /// Reloads the announced keys from the store and the catalog from the ledger (if it
    /// answers).
    pub async fn reload_keys(&self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let mut loaded = HashMap::new();
        for k in self.store.keys().await? {
            if !k.announced {
                continue;
            }
            let pem = std::fs::read_to_string(&k.pem_path)
                .with_context(|| format!("cannot read token key {}", k.pem_path))?;
            let secret = TokenSecretKey::from_pem(&pem)?;
            loaded.insert(
                k.info.public_key.id(),
                Arc::new(LoadedKey {
                    info: k.info,
                    secret,
                }),
            );
        }
        if let Ok(mut keys) = self.keys.write() {
            *keys = loaded;
        }
        if let Ok(info) = self.ledger.info().await
            && let Ok(mut c) = self.catalog.write()
        {
            *c = info.catalog;
        }
        Ok(())
    }

    /// Generates the next key of every catalog kind, writes it (mode 0600), records it, and
    /// announces it and any key left unannounced before. Returns the keys announced now.
    pub async fn rotate_keys(&self) -> anyhow::Result<Vec<TokenKeyInfo>> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&self.config.keys_dir)
            .with_context(|| format!("cannot create {}", self.config.keys_dir.display()))?;
        let catalog = self
            .catalog
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let t = now();
        for entry in &catalog.entries {
            let secret = TokenSecretKey::generate()?;
            let issue_until = t + self.config.issue_days * DAY;
            let redeem_until = issue_until + self.config.redeem_days * DAY;
            let info = TokenKeyInfo {
                public_key: secret.public_key().clone(),
                issuer: self.name.clone(),
                kind: entry.kind.clone(),
                valid_from: t,
                issue_until,
                redeem_until,
                forget_after: redeem_until + self.config.forget_days * DAY,
            };
            let path =
                self.config
                    .keys_dir
                    .join(format!("{}-{}.pem", entry.kind, info.public_key.id()));
            scrip_spec::secret_file::write_private(&path, secret.to_pem()?.as_bytes(), false)?;
            self.store
                .insert_key(
                    &StoredKey {
                        info,
                        pem_path: path.display().to_string(),
                        announced: false,
                    },
                    t,
                )
                .await?;
        }
        let mut announced = Vec::new();
        for k in self.store.keys().await? {
            if k.announced || k.info.redeem_until < t {
                continue;
            }
            let id = k.info.public_key.id();
            let request = self.sign(
                Action::AnnounceKey {
                    key: k.info.clone(),
                },
                now(),
            );
            match self.ledger.submit(&request).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(LedgerErrorCode::ReplayedRequest) => {}
                Err(e) => {
                    // An earlier run's announcement may have landed without this store
                    // hearing of it: the ledger's directory says.
                    let listed = self
                        .ledger
                        .keys(Some(&self.name), Some(&k.info.kind))
                        .await
                        .map(|dir| dir.iter().any(|r| r.info == k.info))
                        .unwrap_or(false);
                    if !listed {
                        return Err(anyhow::Error::new(e).context(format!(
                            "the ledger did not accept key {id} ({})",
                            k.info.kind
                        )));
                    }
                }
            }
            self.store.mark_announced(&id).await?;
            announced.push(k.info);
        }
        self.reload_keys().await?;
        Ok(announced)
    }

    /// The keys wallets may ask for: announced, and able to issue now or later.
    pub fn public_keys(&self) -> IssuerKeys {
        let t = now();
        let mut keys: Vec<TokenKeyInfo> = self
            .keys
            .read()
            .map(|k| {
                k.values()
                    .filter(|k| k.info.issue_until >= t)
                    .map(|k| k.info.clone())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_by(|a, b| (a.kind.as_str(), a.valid_from).cmp(&(b.kind.as_str(), b.valid_from)));
        IssuerKeys {
            issuer: self.name.clone(),
            keys,
        }
    }

    /// Mints a batch of `count` cards of `value` credits; returns the batch id and the codes
    /// (shown once, for the printer; only their hashes are kept).
    pub async fn mint_cards(
        &self,
        value: u64,
        count: usize,
    ) -> anyhow::Result<(String, Vec<CardCode>)> {
        anyhow::ensure!(
            value > 0 && count > 0,
            "a batch has at least one card of at least one credit"
        );
        anyhow::ensure!(count <= 1_000_000, "mint at most 1,000,000 cards per batch");
        let codes: Vec<CardCode> = (0..count).map(|_| CardCode::generate()).collect();
        let hashes: Vec<[u8; 32]> = codes.iter().map(CardCode::storage_hash).collect();
        let mut suffix = [0u8; 4];
        rand::fill(&mut suffix);
        let batch_id = format!(
            "b{}-{}",
            now(),
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        self.store
            .create_batch(&batch_id, value, &hashes, now())
            .await?;
        Ok((batch_id, codes))
    }

    /// Activates a minted batch for sale: queues the "cards sold" entry (count and credits)
    /// and sends it; the cards become openable once the ledger has it.
    pub async fn activate_batch(&self, batch_id: &str) -> anyhow::Result<bool> {
        let batch = self
            .store
            .batches()
            .await?
            .into_iter()
            .find(|b| b.batch_id == batch_id)
            .ok_or_else(|| {
                anyhow::anyhow!("no batch {batch_id}; `scrip issuer cards status` lists them")
            })?;
        let request = self.sign(
            Action::CardsSold {
                batch: batch_id.to_owned(),
                count: batch.count,
                credits: batch.count.saturating_mul(batch.value),
            },
            now(),
        );
        let queued = self
            .store
            .set_batch_state(
                batch_id,
                "minted",
                "activating",
                Some((
                    &serde_json::to_string(&request)?,
                    &OnSuccess::ActivateBatch {
                        batch_id: batch_id.to_owned(),
                    },
                )),
                now(),
            )
            .await?;
        if !queued && batch.state != "activating" {
            anyhow::bail!("batch {batch_id} is already {}", batch.state);
        }
        self.flush_outbox().await?;
        Ok(self
            .store
            .batches()
            .await?
            .iter()
            .any(|b| b.batch_id == batch_id && b.state == "active"))
    }

    /// Sends every queued ledger request. A request the ledger already has counts as sent; one
    /// refused as stale is signed again with a fresh timestamp (the ledger checks replay
    /// first, so "stale" proves it was never applied). Returns how many were sent.
    pub async fn flush_outbox(&self) -> anyhow::Result<usize> {
        let mut sent = 0;
        for item in self.store.outbox().await? {
            if self.send_outbox_item(&item).await? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    async fn send_outbox_item(&self, item: &OutboxItem) -> anyhow::Result<bool> {
        let mut request: Signed<LedgerRequest> = serde_json::from_str(&item.request)?;
        for _ in 0..2 {
            match self.ledger.submit(&request).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(LedgerErrorCode::ReplayedRequest) => {}
                Err(e) if e.code() == Some(LedgerErrorCode::StaleRequest) => {
                    request = self.sign(request.payload.action.clone(), now());
                    self.store
                        .update_outbox(item.id, &serde_json::to_string(&request)?)
                        .await?;
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context("the ledger did not take a queued request; it stays queued"));
                }
            }
            self.store.complete_outbox(item).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Moves the issuance counted since the last report into signed "tokens issued" entries
    /// (one per key, an aggregate over the interval) and sends them.
    pub async fn report_issuance(&self) -> anyhow::Result<usize> {
        let t = now();
        let sign = |key: TokenKeyId, count: u64, since: UnixSeconds| {
            let request = self.sign(
                Action::TokensIssued {
                    token_key_id: key,
                    count,
                    from: since.min(t),
                    until: t,
                },
                t,
            );
            serde_json::to_string(&request).unwrap_or_default()
        };
        let queued = self.store.queue_issuance_reports(&sign, t).await?;
        self.flush_outbox().await?;
        Ok(queued)
    }

    /// A card's balance.
    pub async fn balance(&self, code: &str) -> Result<BalanceResponse, OpenError> {
        let code = CardCode::parse(code)?;
        let card = self
            .store
            .card(&code.storage_hash())
            .await?
            .filter(|c| c.state != scrip_spec::api::issuer::CardState::Minted)
            .ok_or(OpenError::InvalidCard)?;
        Ok(BalanceResponse {
            state: card.state,
            value: card.value,
            remaining_credits: card.remaining,
        })
    }

    /// A recorded opening, for a wallet restoring from its seed.
    pub async fn replay(&self, id: &RequestId) -> Result<Option<ReplayResponse>, OpenError> {
        let Some(record) = self.store.opening(id).await? else {
            return Ok(None);
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
        let card = self.store.card(&card_hash).await?;
        let requests_bytes = canonical_bytes(&req.requests);

        // A repeat is answered from the record, whatever the card's state is now.
        if let Some(record) = self.store.opening(&req.request_id).await? {
            if card.is_none() {
                return Err(OpenError::InvalidCard);
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
        let card = card.ok_or(OpenError::InvalidCard)?;
        if !matches!(
            card.state,
            scrip_spec::api::issuer::CardState::Active | scrip_spec::api::issuer::CardState::Opened
        ) {
            return Err(OpenError::InvalidCard);
        }

        // Keys and price.
        let t = now();
        let catalog = self
            .catalog
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let mut keys = Vec::with_capacity(req.requests.len());
        let mut price = 0u64;
        let mut per_key: HashMap<TokenKeyId, u64> = HashMap::new();
        for (index, r) in req.requests.iter().enumerate() {
            let key = self
                .key(&r.token_key_id)
                .await
                .ok_or(OpenError::UnknownKey { index })?;
            if !key.info.can_issue_at(t) {
                return Err(OpenError::KeyNotIssuable { index });
            }
            if r.token_request.truncated_token_key_id != r.token_key_id.truncated() {
                return Err(OpenError::KeyMismatch { index });
            }
            price = price.saturating_add(
                catalog
                    .price(&key.info.kind)
                    .ok_or(OpenError::KeyNotIssuable { index })?,
            );
            *per_key.entry(r.token_key_id).or_default() += 1;
            keys.push(key);
        }
        if price > card.remaining {
            return Err(OpenError::InsufficientCredits {
                remaining: card.remaining,
                price,
            });
        }

        let responses = sign_all(&req.requests, keys).await?;
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
            CommitOutcome::InvalidCard => Err(OpenError::InvalidCard),
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

    /// A signing key by id; reloads once from the store if it is not known (a key rotated by
    /// another process).
    async fn key(&self, id: &TokenKeyId) -> Option<Arc<LoadedKey>> {
        let lookup = |this: &Self| this.keys.read().ok().and_then(|k| k.get(id).cloned());
        if let Some(k) = lookup(self) {
            return Some(k);
        }
        let mut last = self.last_miss_reload.lock().await;
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return lookup(self);
        }
        *last = Some(std::time::Instant::now());
        if self.reload_keys().await.is_err() {
            return None;
        }
        lookup(self)
    }
}

/// Blind-signs every request on the blocking pool, in as many chunks as there are cores, so
/// the async workers never stall.
async fn sign_all(
    requests: &[KeyedTokenRequest],
    keys: Vec<Arc<LoadedKey>>,
) -> Result<Vec<TokenResponse>, OpenError> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let chunk = requests.len().div_ceil(cores).max(1);
    let mut tasks = Vec::new();
    for (c, (reqs, keys)) in requests.chunks(chunk).zip(keys.chunks(chunk)).enumerate() {
        let reqs: Vec<_> = reqs.iter().map(|r| r.token_request.clone()).collect();
        let keys = keys.to_vec();
        tasks.push(tokio::task::spawn_blocking(move || {
            reqs.iter()
                .zip(keys)
                .enumerate()
                .map(|(i, (r, k))| {
                    k.secret
                        .blind_sign(r)
                        .map_err(|_| OpenError::BadBlindedMessage {
                            index: c * chunk + i,
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        }));
    }
    let mut out = Vec::with_capacity(requests.len());
    for t in tasks {
        out.extend(t.await.map_err(|e| OpenError::Internal(e.into()))??);
    }
    Ok(out)
}
