//! The redeemer: what a relay calls to turn a token into a grant, and a grant into capacity.

use crate::config::{Mode, RedeemerConfig};
use crate::grant_writer::GrantWriter;
use crate::keys::KeyCache;
use crate::spend::{
    BATCHES_IN_FLIGHT, Batcher, COMMITTEE_BATCHES_IN_FLIGHT, SpendFailure, SpendOutcome, Spender,
};
use crate::store::{ConsumeOutcome, GrantState, Granted, LiveGrant, NewGrant, RedeemerStore};
use scrip_common::clients::{LedgerClient, member_info_waiting};
use scrip_common::metrics::{Counter, Gauge, Latency, MetricsBuilder, MetricsRegistry, Outcomes};
use scrip_spec::api::ledger::SpendRefusal;
use scrip_spec::{
    CapacityKind, GrantCode, OperatorKey, Token, UnixSeconds, verify_token_with_digest,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use scrip_spec::now;

/// How often the upkeep sweeps rows past their key's `redeem_until`.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per sweep transaction.
const SWEEP_BATCH: u32 = 1000;
/// Most sweep transactions per sweep; the rest waits for the next.
const SWEEP_MAX_BATCHES: u32 = 1000;

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
    /// Revoked: the ledger refused its spend (optimistic mode; the token was spent elsewhere).
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

/// What `/metrics` shows (PROTOCOL.md section 10.3).
#[derive(Debug)]
pub struct Metrics {
    registry: MetricsRegistry,
    /// Redemptions by `granted` (a token's first grant here), `repeated` (the same grant
    /// again), `regranted` (the next grant after one expired unused), `already_spent`,
    /// `invalid` (the local checks), `unavailable` (the ledger, or something inside) or
    /// `rate_limited`.
    redemptions: Outcomes,
    consumed: Counter,
    /// Rows of tokens past their key's `redeem_until`, deleted.
    swept: Counter,
    /// Optimistic grants revoked because their spend was refused.
    revoked: Counter,
    /// Of those, grants already consumed (capacity given for a double spend).
    revoked_after_use: Counter,
    /// Ledger spend requests decided, and the nullifiers in them.
    batches: Counter,
    batched_spends: Counter,
    max_batch: Gauge,
    /// From sending a spend request to the ledger's answer, per request.
    ledger_wait: Latency,
    /// The longest of those, in seconds.
    ledger_wait_max: Gauge<f64, AtomicU64>,
    /// What a strict-mode redemption waits for its spend's answer, batching included.
    spend_wait: Latency,
    /// The grant writer's commits.
    grant_commit: Latency,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = MetricsBuilder::new("redeemer");
        let redemptions = m.outcomes(
            "redemptions",
            "Redemptions, by result",
            &[
                "granted",
                "repeated",
                "regranted",
                "already_spent",
                "invalid",
                "unavailable",
                "rate_limited",
            ],
        );
        let consumed = m.counter("grants_consumed", "Grants consumed by the relay");
        let swept = m.counter(
            "grants_swept",
            "Rows of tokens past their key's redeem_until, deleted",
        );
        let revoked = m.counter(
            "optimistic_revoked",
            "Optimistic grants revoked after a refused spend",
        );
        let revoked_after_use = m.counter(
            "optimistic_revoked_after_use",
            "Revoked grants that had already been used",
        );
        let batches = m.counter("ledger_batches", "Spend requests the ledger decided");
        let batched_spends = m.counter("ledger_batched_spends", "Nullifiers in those requests");
        let max_batch = m.gauge("ledger_batch_max", "Largest spend batch so far");
        let ledger_wait = m.latency(
            "ledger_wait_seconds",
            "Time from sending a spend request to the ledger's answer",
        );
        let ledger_wait_max = Gauge::<f64, AtomicU64>::default();
        m.register(
            "ledger_wait_seconds_max",
            "Longest wait for the ledger so far",
            ledger_wait_max.clone(),
        );
        let spend_wait = m.latency(
            "spend_wait_seconds",
            "Time a strict-mode redemption waits for its spend's answer, batching included",
        );
        let grant_commit = m.latency(
            "grant_commit_seconds",
            "Time to commit one transaction of grants",
        );
        Self {
            registry: m.build(),
            redemptions,
            consumed,
            swept,
            revoked,
            revoked_after_use,
            batches,
            batched_spends,
            max_batch,
            ledger_wait,
            ledger_wait_max,
            spend_wait,
            grant_commit,
        }
    }
}

impl Metrics {
    /// Records one ledger spend request of `n` nullifiers that took `took`.
    pub fn record_batch(&self, n: usize, took: Duration) {
        self.batches.inc();
        self.batched_spends.inc_by(n as u64);
        self.max_batch
            .inner()
            .fetch_max(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.ledger_wait.observe(took);
        // Non-negative floats order as their bits do, so the maximum can be taken on the bits.
        self.ledger_wait_max
            .inner()
            .fetch_max(took.as_secs_f64().to_bits(), Ordering::Relaxed);
    }

    /// Counts a redemption refused by the per-source limit.
    pub fn rate_limited(&self) {
        self.redemptions.inc("rate_limited");
    }

    /// The registry `/metrics` renders.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
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
    /// One optimistic flush at a time: the background flusher and a flush on shutdown (or a
    /// test's) would otherwise both take the same pending spends and revoke a refused grant,
    /// and count it, twice.
    flushing: tokio::sync::Mutex<()>,
    /// What `/metrics` shows.
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
        let wait = Duration::from_secs(config.ledger_wait_secs);
        let info = member_info_waiting(&ledger, &operator, &config.name, role, wait).await?;
        let keys = KeyCache::new(ledger.clone());
        keys.refresh().await?;
        if store.has_unknown_windows().await? {
            // Rows from before the key's redeem_until was kept: none of their tokens can be
            // redeemed after the latest redeem_until of the directory, so they are swept then.
            let bound = keys.latest_redeem_until().unwrap_or_else(now);
            let rows = store.bound_unknown_windows(bound).await?;
            tracing::info!(
                rows,
                redeem_until = bound,
                "grants migrated from before are kept until every key they may be of has expired"
            );
        }
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
            store.clone(),
            config.batch_max,
            Duration::from_millis(config.batch_wait_ms),
            if info.committee.is_empty() {
                BATCHES_IN_FLIGHT
            } else {
                COMMITTEE_BATCHES_IN_FLIGHT
            },
            observe,
        );
        let grants = GrantWriter::start(
            store.clone(),
            config.batch_max,
            metrics.grant_commit.clone(),
        );
        let redeemer = Arc::new(Self {
            config,
            store,
            keys,
            batcher,
            grants,
            spender,
            flushing: tokio::sync::Mutex::new(()),
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
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "sweeping grants failed; will retry");
                    }
                }
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

    /// Deletes the rows of tokens whose key's `redeem_until` passed (with a margin of
    /// `MAX_CLOCK_SKEW`, so a clock stepped back cannot make such a token redeemable again
    /// once its row is gone), in batches of short transactions; returns how many.
    pub async fn sweep(&self) -> anyhow::Result<u64> {
        self.sweep_at(now()).await
    }

    /// [`Self::sweep`] as at `now`.
    pub async fn sweep_at(&self, now: UnixSeconds) -> anyhow::Result<u64> {
        let before = now.saturating_sub(scrip_spec::ledger::MAX_CLOCK_SKEW);
        let mut total = 0;
        for _ in 0..SWEEP_MAX_BATCHES {
            let n = self.store.sweep(before, SWEEP_BATCH).await?;
            total += n;
            self.metrics.swept.inc_by(n);
            if n < u64::from(SWEEP_BATCH) {
                break;
            }
            // Let the grant writer in between batches.
            tokio::task::yield_now().await;
        }
        Ok(total)
    }

    /// Sends the optimistic spends not yet committed; revokes the grants of refused ones.
    pub async fn flush_pending(&self) -> anyhow::Result<usize> {
        let _one_at_a_time = self.flushing.lock().await;
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
        for (token, outcome) in pending.iter().zip(outcomes) {
            let n = &token.nullifier();
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
                self.metrics.revoked.inc();
                self.metrics.revoked_after_use.inc_by(used.min(1));
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

    /// The RFC 9577 challenges an origin sends for a token of `kind`: one per key that can be
    /// spent now, each for the key's issuer with empty redemption context and origin info
    /// (the challenge scrip tokens are made for, so they can be fetched ahead of use), valid
    /// while the key is, for a day at most.
    pub async fn challenges(
        &self,
        kind: &CapacityKind,
    ) -> Vec<scrip_spec::api::private_token::PrivateTokenChallenge> {
        let t = now();
        self.keys
            .redeemable(kind, t)
            .await
            .into_iter()
            .filter_map(|k| {
                let challenge = scrip_spec::TokenChallenge::for_issuer(&k.info.issuer).ok()?;
                Some(scrip_spec::api::private_token::PrivateTokenChallenge {
                    challenge,
                    token_key: k.info.public_key.clone(),
                    max_age: Some(k.info.redeem_until.saturating_sub(t).min(86_400)),
                })
            })
            .collect()
    }

    /// Checks a token locally and spends it; returns a grant for `kind`. A token this
    /// redeemer spent before gets its grant again while unused, the next one after it expired
    /// unused, and [`RedeemError::AlreadySpent`] once one was used, without the ledger.
    pub async fn redeem(&self, token: &Token, kind: &CapacityKind) -> Result<Grant, RedeemError> {
        let result = self.redeem_inner(token, kind).await;
        self.metrics.redemptions.inc(match &result {
            Ok(live) => match live.granted {
                Granted::First => "granted",
                Granted::Same => "repeated",
                Granted::Next => "regranted",
            },
            Err(RedeemError::AlreadySpent { .. }) => "already_spent",
            Err(RedeemError::LedgerUnavailable) => "unavailable",
            Err(RedeemError::Internal(_)) => "unavailable",
            Err(_) => "invalid",
        });
        result.map(|live| Grant {
            code: live.code,
            kind: kind.clone(),
            expires_at: live.expires_at,
        })
    }

    async fn redeem_inner(
        &self,
        token: &Token,
        kind: &CapacityKind,
    ) -> Result<LiveGrant, RedeemError> {
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
        // Who spent it first, for the refusal if this redeemer's own record forbids a grant.
        let mut first = (t, self.config.name.clone());
        let mut grant = NewGrant {
            nullifier,
            kind: kind.clone(),
            expires_at: t + self.config.grant_ttl_secs,
            redeem_until: key.info.redeem_until,
            pending: None,
            now: t,
        };
        // A token this redeemer already spent never goes to the ledger again (in either mode):
        // its row decides. An unused grant is given again as it is, without a write. In strict
        // mode the batcher looks the rows up for a whole batch at once (one query instead of
        // one per redemption, BENCHMARKS.md) and answers such a token as spent by this
        // operator; the grant writer then applies its row.
        let record = match self.config.mode {
            Mode::Strict => None,
            Mode::Optimistic => self.store.record(&nullifier).await?,
        };
        match record {
            Some(record) if record.state != GrantState::Issued => {
                return Err(RedeemError::AlreadySpent {
                    first_spent_at: first.0,
                    first_spent_by: first.1,
                });
            }
            Some(record) => {
                if let Some(same) = self.store.live(&record, t) {
                    return Ok(same);
                }
                // Expired unused: the writer gives the next generation (or finds it consumed
                // meanwhile).
            }
            None => match self.config.mode {
                Mode::Strict => {
                    let waiting = std::time::Instant::now();
                    let spent = self.batcher.spend(token.clone()).await;
                    self.metrics.spend_wait.since(waiting);
                    match spent {
                        Ok(SpendOutcome::Accepted) => {}
                        // Spent by this operator: a lost answer, a grant never stored, or a
                        // concurrent presentation; the writer gives the one live grant.
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
                        Err(SpendFailure::Unavailable) => {
                            return Err(RedeemError::LedgerUnavailable);
                        }
                        Err(SpendFailure::Refused(code)) => {
                            return Err(RedeemError::Internal(anyhow::anyhow!(
                                "the ledger refused this redeemer's spend requests ({code}); check its membership and role"
                            )));
                        }
                    }
                }
                // The first presentation queues the spend, in the grant's transaction.
                Mode::Optimistic => grant.pending = Some(token.clone()),
            },
        }
        match self.grants.insert(grant).await? {
            Ok(live) => Ok(live),
            Err(_consumed_or_refused) => Err(RedeemError::AlreadySpent {
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
                self.metrics.consumed.inc();
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
