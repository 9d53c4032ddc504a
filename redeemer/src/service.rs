//! The redeemer: what a relay calls to turn a token into a grant, and a grant into capacity.

use crate::config::{Mode, RedeemerConfig};
use crate::grant_writer::GrantWriter;
use crate::keys::KeyCache;
use crate::spend::{Batcher, SpendFailure, SpendOutcome, Spender};
use crate::store::{ConsumeOutcome, History, NewGrant, RedeemerStore};
use scrip_common::clients::{LedgerClient, member_info};
use scrip_spec::api::ledger::SpendRefusal;
use scrip_spec::{
    CapacityKind, GrantCode, OperatorKey, Token, UnixSeconds, verify_token_with_digest,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use scrip_spec::now;

/// A grant handed to the wallet (and by it to the relay).
#[derive(Debug, Clone)]
pub struct Grant {
    /// The single-use code.
    pub code: GrantCode,
    /// What it grants.
    pub kind: CapacityKind,
    /// When it expires.
    pub expires_at: UnixSeconds,
}

/// Why a token was not redeemed. In strict mode the token stays spendable unless the answer
/// is [`RedeemError::AlreadySpent`].
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The token is not on the ledger's key directory, or its key is revoked.
    #[error("the token's key is unknown or revoked")]
    UnknownKey,
    /// Outside the key's redemption window.
    #[error("the token's key is not redeemable now (outside its redemption window)")]
    KeyNotRedeemable,
    /// The key is for another kind.
    #[error("the token buys {key_kind}, not {asked}")]
    WrongKind {
        /// The key's kind.
        key_kind: CapacityKind,
        /// The kind asked.
        asked: CapacityKind,
    },
    /// The token was made for another challenge than its key's issuer's.
    #[error("the token was not made for its issuer's challenge")]
    WrongChallenge,
    /// The signature is invalid.
    #[error("the token's signature is invalid")]
    InvalidSignature,
    /// Spent before.
    #[error("the token was already spent")]
    AlreadySpent {
        /// When.
        first_spent_at: UnixSeconds,
        /// By whom.
        first_spent_by: String,
    },
    /// The ledger cannot be reached (strict mode): nothing was spent.
    #[error("the ledger is unavailable; the token was not spent, try again later")]
    LedgerUnavailable,
    /// Something failed inside.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Why a grant was not consumed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Not a grant code.
    #[error(transparent)]
    Malformed(#[from] scrip_spec::GrantCodeError),
    /// Unknown here.
    #[error("no such grant")]
    Unknown,
    /// Revoked (double spend detected, or replaced).
    #[error("the grant was revoked")]
    Revoked,
    /// Already used.
    #[error("the grant was already used")]
    Used,
    /// Expired.
    #[error("the grant has expired")]
    Expired,
    /// For another kind.
    #[error("the grant is for {grant_kind}, not {asked}")]
    WrongKind {
        /// The grant's kind.
        grant_kind: CapacityKind,
        /// The kind asked.
        asked: CapacityKind,
    },
    /// Something failed inside.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Grants handed out.
    pub granted: AtomicU64,
    /// Tokens refused as already spent.
    pub already_spent: AtomicU64,
    /// Tokens refused by the local checks.
    pub invalid: AtomicU64,
    /// Redemptions failed because the ledger was unavailable.
    pub unavailable: AtomicU64,
    /// Optimistic grants revoked because their spend was refused.
    pub revoked: AtomicU64,
    /// Of those, grants already consumed (capacity given for a double spend).
    pub revoked_after_use: AtomicU64,
    /// Grants consumed.
    pub consumed: AtomicU64,
    /// Ledger spend requests sent.
    pub batches: AtomicU64,
    /// Nullifiers in them.
    pub batched_spends: AtomicU64,
    /// Largest batch.
    pub max_batch: AtomicU64,
    /// Total time spent waiting for the ledger's answers, in microseconds.
    pub ledger_wait_us: AtomicU64,
    /// Longest single wait, in microseconds.
    pub ledger_wait_max_us: AtomicU64,
}

impl Metrics {
    /// Records one ledger spend request of `n` nullifiers that took `took`.
    pub fn record_batch(&self, n: usize, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_spends.fetch_add(n as u64, Ordering::Relaxed);
        self.max_batch.fetch_max(n as u64, Ordering::Relaxed);
        self.ledger_wait_us.fetch_add(us, Ordering::Relaxed);
        self.ledger_wait_max_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// The redeemer.
pub struct Redeemer {
    config: RedeemerConfig,
    store: RedeemerStore,
    keys: KeyCache,
    batcher: Batcher,
    grants: GrantWriter,
    spender: Arc<Spender>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Redeemer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redeemer")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Redeemer {
    /// Opens the store, checks membership at the ledger, loads the key directory and starts
    /// the batcher (and, in optimistic mode, the flusher of pending spends).
    pub async fn start(config: RedeemerConfig) -> anyhow::Result<Arc<Self>> {
        let operator = OperatorKey::read_file(&config.operator_key_file)?;
        let store =
            RedeemerStore::connect(&config.database, config.mode == Mode::Optimistic).await?;
        // Short timeouts: a wallet waits on this call, and a hung ledger must fail fast.
        let ledger = LedgerClient::with_timeout(&config.ledger_url, Duration::from_secs(5));
        let role = Some(scrip_spec::ledger::Role::Redeemer);
        let info = member_info(&ledger, &operator, &config.name, role).await?;
        let keys = KeyCache::new(ledger.clone());
        keys.refresh().await?;
        let spender = Arc::new(Spender {
            ledger,
            ledger_id: info.ledger_id,
            operator,
            name: config.name.clone(),
        });
        let metrics = Arc::new(Metrics::default());
        let observe = {
            let m = metrics.clone();
            Arc::new(move |n: usize, took: Duration| m.record_batch(n, took))
        };
        let batcher = Batcher::start(
            spender.clone(),
            config.batch_max,
            Duration::from_millis(config.batch_wait_ms),
            observe,
        );
        let grants = GrantWriter::start(store.clone(), config.batch_max);
        let redeemer = Arc::new(Self {
            config,
            store,
            keys,
            batcher,
            grants,
            spender,
            metrics,
        });
        let background = redeemer.clone();
        tokio::spawn(async move { background.upkeep().await });
        Ok(redeemer)
    }

    /// The configuration.
    pub fn config(&self) -> &RedeemerConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &RedeemerStore {
        &self.store
    }

    async fn upkeep(self: Arc<Self>) {
        let mut refresh =
            tokio::time::interval(Duration::from_secs(self.config.key_refresh_secs.max(1)));
        let mut flush = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = refresh.tick() => {
                    if let Err(e) = self.keys.refresh().await {
                        tracing::warn!(error = %e, "key directory refresh failed");
                    }
                }
                // Also in strict mode: spends left pending by an earlier optimistic run.
                _ = flush.tick() => {
                    if let Err(e) = self.flush_pending().await {
                        tracing::warn!(error = %e, "optimistic spends not flushed; will retry");
                    }
                }
            }
        }
    }

    /// Sends the optimistic spends not yet committed; revokes the grants of refused ones.
    pub async fn flush_pending(&self) -> anyhow::Result<usize> {
        let pending = self.store.pending_spends(self.config.batch_max).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let outcomes = match self.spender.spend(&pending).await {
            Ok(o) => o,
            Err(SpendFailure::Unavailable) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        self.metrics.record_batch(pending.len(), started.elapsed());
        let mut decided = Vec::with_capacity(pending.len());
        for ((_, n), outcome) in pending.iter().zip(outcomes) {
            decided.push(*n);
            let refusal = match &outcome {
                // A flush whose answer was lost (or a crash before the pending row was
                // cleared) committed it: spent by this operator is this redeemer's own spend.
                SpendOutcome::Accepted | SpendOutcome::SpentByUs { .. } => None,
                SpendOutcome::AlreadySpent { first_spent_by, .. } => {
                    Some(format!("already spent by {first_spent_by}"))
                }
                SpendOutcome::Refused(Some(reason)) => Some(format!("refused: {reason:?}")),
                SpendOutcome::Refused(None) => Some("refused: no answer for it".to_owned()),
            };
            if let Some(refused_because) = refusal {
                let used = self.store.revoke_nullifier(n).await?;
                self.metrics.revoked.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .revoked_after_use
                    .fetch_add(used.min(1), Ordering::Relaxed);
                tracing::warn!(
                    nullifier = %n,
                    %refused_because,
                    already_used = used > 0,
                    "optimistic grant revoked: the ledger refused its spend"
                );
            }
        }
        self.store.clear_pending(&decided).await?;
        Ok(decided.len())
    }

    /// Checks a token locally and spends it; returns a grant for `kind`.
    pub async fn redeem(&self, token: &Token, kind: &CapacityKind) -> Result<Grant, RedeemError> {
        let result = self.redeem_inner(token, kind).await;
        let m = &self.metrics;
        let counter = match &result {
            Ok(_) => &m.granted,
            Err(RedeemError::AlreadySpent { .. }) => &m.already_spent,
            Err(RedeemError::LedgerUnavailable) => &m.unavailable,
            Err(RedeemError::Internal(_)) => &m.unavailable,
            Err(_) => &m.invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn redeem_inner(&self, token: &Token, kind: &CapacityKind) -> Result<Grant, RedeemError> {
        let key = match self.keys.get(&token.token_key_id).await {
            Ok(Some(k)) if !k.revoked => k,
            Ok(_) => return Err(RedeemError::UnknownKey),
            Err(_) => return Err(RedeemError::LedgerUnavailable),
        };
        let t = now();
        if !key.info.can_redeem_at(t) {
            return Err(RedeemError::KeyNotRedeemable);
        }
        if &key.info.kind != kind {
            return Err(RedeemError::WrongKind {
                key_kind: key.info.kind.clone(),
                asked: kind.clone(),
            });
        }
        if token.challenge_digest != key.challenge_digest {
            return Err(RedeemError::WrongChallenge);
        }
        // One RSA public-key operation (18 us on OpenSSL, 65 us in pure Rust): cheaper to run
        // here than to hand to the blocking pool and back (measured in BENCHMARKS.md).
        verify_token_with_digest(&key.info.public_key, &key.challenge_digest, token)
            .map_err(|_| RedeemError::InvalidSignature)?;

        let nullifier = token.nullifier();
        // Who spent it first, for the refusal if this redeemer's own history forbids a grant.
        let mut first = (t, self.config.name.clone());
        let pending = match self.config.mode {
            Mode::Strict => {
                match self.batcher.spend(token.token_key_id, nullifier).await {
                    Ok(SpendOutcome::Accepted) => {}
                    // Spent by this operator: a lost answer or a concurrent duplicate; a fresh
                    // grant replaces an unconsumed one (checked in the grant's own transaction).
                    Ok(SpendOutcome::SpentByUs { first_spent_at }) => first.0 = first_spent_at,
                    Ok(SpendOutcome::AlreadySpent {
                        first_spent_at,
                        first_spent_by,
                    }) => {
                        return Err(RedeemError::AlreadySpent {
                            first_spent_at,
                            first_spent_by,
                        });
                    }
                    Ok(SpendOutcome::Refused(reason)) => {
                        return Err(match reason {
                            Some(SpendRefusal::NotRedeemable) => RedeemError::KeyNotRedeemable,
                            _ => RedeemError::UnknownKey,
                        });
                    }
                    Err(SpendFailure::Unavailable) => return Err(RedeemError::LedgerUnavailable),
                    Err(SpendFailure::Refused(code)) => {
                        return Err(RedeemError::Internal(anyhow::anyhow!(
                            "the ledger refused this redeemer's spend requests ({code}); check its membership and role"
                        )));
                    }
                }
                None
            }
            // A first presentation queues the spend; a repeat before use only replaces the
            // grant (the spend is already queued).
            Mode::Optimistic => match self.store.history(&nullifier).await? {
                History::None => Some(token.token_key_id),
                _ => None,
            },
        };
        let code = GrantCode::generate(kind.clone());
        let expires_at = t + self.config.grant_ttl_secs;
        let grant = NewGrant {
            hash: code.storage_hash(),
            kind: kind.clone(),
            nullifier,
            expires_at,
            pending,
            now: t,
        };
        match self.grants.insert(grant).await? {
            Ok(()) => Ok(Grant {
                code,
                kind: kind.clone(),
                expires_at,
            }),
            Err(_used_or_refused) => Err(RedeemError::AlreadySpent {
                first_spent_at: first.0,
                first_spent_by: first.1,
            }),
        }
    }

    /// Consumes a grant for `kind`: the relay's one call before it creates the queue or stores
    /// the chunk.
    pub async fn consume(&self, code: &str, kind: &CapacityKind) -> Result<(), ConsumeError> {
        let code = GrantCode::parse(code)?;
        let outcome = self
            .store
            .consume(&code.storage_hash(), kind, now())
            .await?;
        match outcome {
            ConsumeOutcome::Consumed => {
                self.metrics.consumed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            ConsumeOutcome::Unknown => Err(ConsumeError::Unknown),
            ConsumeOutcome::Used => Err(ConsumeError::Used),
            ConsumeOutcome::Revoked => Err(ConsumeError::Revoked),
            ConsumeOutcome::Expired => Err(ConsumeError::Expired),
            ConsumeOutcome::WrongKind => Err(ConsumeError::WrongKind {
                grant_kind: code.kind().clone(),
                asked: kind.clone(),
            }),
        }
    }

    /// Whether the ledger answers (for `/healthz`).
    pub async fn ledger_reachable(&self) -> bool {
        self.spender.ledger.info().await.is_ok()
    }
}
