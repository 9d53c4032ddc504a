//! The ledger itself: judges requests, appends entries, answers queries. One writer at a
//! time (the hash chain is a sequence), any number of readers.

use crate::rules::{LedgerState, Refusal};
use crate::store::{AppendOutcome, Effect, FirstSpend, Store, StoreError};
use scrip_common::metrics::Latency;
use scrip_spec::api::ledger::{
    CheckpointView, KeyRecord, LedgerInfo, Receipt, SpendRefusal, SpendResult, SpendStatus,
};
use scrip_spec::ledger::{
    Checkpoint, Cosignature, EntryBody, Genesis, Hash32, LedgerRequest, LogEntry, Pruned, Totals,
    prune_commitment,
};
use scrip_spec::{CapacityKind, Nullifier, OperatorKey, Signed, TokenKeyId, UnixSeconds};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The request breaks a rule; nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed; nothing changed.
    #[error("storage failed")]
    Store(#[from] StoreError),
    /// The database holds no ledger.
    #[error("the database holds no ledger yet: run `scrip ledger init` first")]
    NotInitialized,
    /// The database already holds a ledger.
    #[error("the database already holds a ledger")]
    AlreadyInitialized,
}

/// Where the ledger reads the time: the system clock, or a test's clock.
pub type Clock = Arc<dyn Fn() -> UnixSeconds + Send + Sync>;

/// Where a submitted request spends its time, for `/metrics` (the HTTP service registers them).
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// Waiting for the writer lock.
    pub writer_wait: Latency,
    /// The store's append and commit of the entry.
    pub store_commit: Latency,
}

/// The ledger.
pub struct Ledger {
    store: Arc<dyn Store>,
    key: OperatorKey,
    state: Mutex<LedgerState>,
    clock: Clock,
    timings: Timings,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// Writes entry 0 from `genesis` into an empty store. `key` must be the genesis's ledger key.
    pub async fn init(
        store: Arc<dyn Store>,
        key: OperatorKey,
        genesis: Genesis,
    ) -> Result<Self, LedgerError> {
        if store.snapshot().await?.is_some() {
            return Err(LedgerError::AlreadyInitialized);
        }
        LedgerState::check_genesis(&genesis)?;
        if key.id() != genesis.ledger_key {
            return Err(Refusal::Invalid {
                reason: "the ledger key does not match the genesis's ledger_key".into(),
            }
            .into());
        }
        let entry = LogEntry {
            seq: 0,
            prev_hash: Hash32([0; 32]),
            recorded_at: genesis.created_at,
            body: EntryBody::Genesis(genesis.clone()),
        };
        let hash = entry.hash();
        store
            .append(&entry, &hash, &Effect::Genesis(genesis.clone()))
            .await?;
        Ok(Self {
            store,
            key,
            state: Mutex::new(LedgerState::from_genesis(genesis, (0, hash))),
            clock: Arc::new(scrip_spec::now),
            timings: Timings::default(),
        })
    }

    /// Opens the ledger a store holds.
    pub async fn open(store: Arc<dyn Store>, key: OperatorKey) -> Result<Self, LedgerError> {
        let snapshot = store.snapshot().await?.ok_or(LedgerError::NotInitialized)?;
        if snapshot.genesis.ledger_key != key.id() {
            return Err(Refusal::Invalid {
                reason: "this ledger key is not the one named in the genesis".into(),
            }
            .into());
        }
        Ok(Self {
            store,
            key,
            state: Mutex::new(LedgerState::from_snapshot(snapshot)),
            clock: Arc::new(scrip_spec::now),
            timings: Timings::default(),
        })
    }

    /// Replaces the clock (tests move time forward instead of sleeping).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The ledger's current time.
    pub fn now(&self) -> UnixSeconds {
        (self.clock)()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Where submitted requests spend their time.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Judges and, if accepted, appends an operator's request.
    pub async fn submit(&self, signed: Signed<LedgerRequest>) -> Result<Receipt, LedgerError> {
        let waiting = Instant::now();
        let mut state = self.state.lock().await;
        self.timings.writer_wait.since(waiting);
        let now = (self.clock)();
        // Replay is detected by the store's unique index on the request digest when appending.
        // A request the rules refuse is looked up, so that one already in the log is reported
        // as a replay whatever else it breaks now: retried after the clock-skew window it would
        // read as stale, and its sender would sign it anew and apply it twice.
        let judgement = match state.judge(&signed, now) {
            Err(_)
                if self
                    .store
                    .request_seq(&crate::store::signed_request_digest(&signed))
                    .await?
                    .is_some() =>
            {
                return Err(Refusal::Replayed.into());
            }
            judged => judged?,
        };
        let entry = LogEntry {
            seq: state.head.0 + 1,
            prev_hash: state.head.1,
            recorded_at: now,
            body: EntryBody::Request(signed.clone()),
        };
        let hash = entry.hash();
        let committing = Instant::now();
        let appended = self.store.append(&entry, &hash, &judgement.effect).await;
        self.timings.store_commit.since(committing);
        let outcome = match appended {
            Err(StoreError::Replayed) => return Err(Refusal::Replayed.into()),
            Err(e) => {
                // The commit's outcome may be unknown (a lost connection): reload the state
                // from the database so the next append starts from the true head.
                if let Ok(Some(snapshot)) = self.store.snapshot().await {
                    *state = LedgerState::from_snapshot(snapshot);
                }
                return Err(e.into());
            }
            Ok(outcome) => outcome,
        };
        let (appended, already_spent) = match outcome {
            AppendOutcome::Appended { already_spent } => (true, already_spent),
            AppendOutcome::NothingToSpend { already_spent } => (false, already_spent),
        };
        let spends = spend_results(&signed.payload, &judgement.refused, &already_spent, &state);
        if appended {
            let accepted = accepted_per_key(&signed.payload, &spends);
            state.apply(&judgement.effect, (entry.seq, hash), &accepted);
            Ok(Receipt {
                seq: Some(entry.seq),
                entry_hash: Some(hash),
                spends,
            })
        } else {
            Ok(Receipt {
                seq: None,
                entry_hash: None,
                spends,
            })
        }
    }

    /// Signs and appends a checkpoint of the current head and totals, unless the head is
    /// already a checkpoint.
    pub async fn checkpoint(&self) -> Result<Option<LogEntry>, LedgerError> {
        let mut state = self.state.lock().await;
        if let Some(latest) = self.store.latest_checkpoint().await?
            && latest.seq == state.head.0
        {
            return Ok(None);
        }
        let totals = self.store.totals().await?;
        let checkpoint = Checkpoint {
            ledger_id: state.ledger_id,
            seq: state.head.0,
            head_hash: state.head.1,
            totals_digest: totals.digest(),
            created_at: (self.clock)(),
        };
        let entry = LogEntry {
            seq: state.head.0 + 1,
            prev_hash: state.head.1,
            recorded_at: checkpoint.created_at,
            body: EntryBody::Checkpoint(self.key.sign(checkpoint)),
        };
        let hash = entry.hash();
        self.store.append(&entry, &hash, &Effect::None).await?;
        state.apply(&Effect::None, (entry.seq, hash), &[]);
        Ok(Some(entry))
    }

    /// Records an operator's cosignature of the latest checkpoint.
    pub async fn cosign(&self, cosignature: Signed<Cosignature>) -> Result<(), LedgerError> {
        let state = self.state.lock().await;
        if !state.operators.contains_key(&cosignature.signer) {
            return Err(Refusal::UnknownOperator {
                operator: cosignature.signer,
            }
            .into());
        }
        cosignature.verify().map_err(|_| Refusal::BadSignature)?;
        let latest = self
            .store
            .latest_checkpoint()
            .await?
            .ok_or_else(|| Refusal::Invalid {
                reason: "there is no checkpoint to cosign yet".into(),
            })?;
        let EntryBody::Checkpoint(signed) = &latest.body else {
            return Err(StoreError::Corrupt {
                what: "latest checkpoint entry".into(),
            }
            .into());
        };
        if signed.payload != cosignature.payload.checkpoint {
            return Err(Refusal::Invalid {
                reason: "the cosignature is not for the latest checkpoint".into(),
            }
            .into());
        }
        drop(state);
        self.store.add_cosignature(latest.seq, &cosignature).await?;
        Ok(())
    }

    /// Drops the spent set of a key past its `forget_after`, and appends the signed record of
    /// what was dropped (count and commitment) so the audit still balances.
    pub async fn prune(&self, token_key_id: &TokenKeyId) -> Result<Option<LogEntry>, LedgerError> {
        let mut state = self.state.lock().await;
        let key = state
            .keys
            .get(token_key_id)
            .ok_or_else(|| Refusal::Invalid {
                reason: format!("key {token_key_id} is not announced"),
            })?;
        let now = (self.clock)();
        if now <= key.info.forget_after {
            return Err(Refusal::Invalid {
                reason: format!(
                    "key {token_key_id} may be pruned only after its forget_after ({})",
                    key.info.forget_after
                ),
            }
            .into());
        }
        let (ledger_id, head) = (state.ledger_id, state.head);
        let build = |dropped: &[Nullifier]| {
            let record = Pruned {
                ledger_id,
                token_key_id: *token_key_id,
                count: dropped.len() as u64,
                commitment: prune_commitment(dropped),
            };
            let entry = LogEntry {
                seq: head.0 + 1,
                prev_hash: head.1,
                recorded_at: now,
                body: EntryBody::Pruned(self.key.sign(record)),
            };
            let hash = entry.hash();
            (entry, hash)
        };
        let Some(entry) = self.store.prune(token_key_id, &build).await? else {
            return Ok(None);
        };
        let EntryBody::Pruned(record) = &entry.body else {
            return Ok(Some(entry));
        };
        let effect = Effect::Pruned {
            token_key_id: *token_key_id,
            count: record.payload.count,
        };
        state.apply(&effect, (entry.seq, entry.hash()), &[]);
        Ok(Some(entry))
    }

    /// Public facts: ledger id, genesis, members, catalog, head.
    pub async fn info(&self) -> LedgerInfo {
        let state = self.state.lock().await;
        let mut operators: Vec<_> = state.operators.values().cloned().collect();
        operators.sort_by(|a, b| a.name.cmp(&b.name));
        LedgerInfo {
            ledger_id: state.ledger_id,
            genesis: state.genesis.clone(),
            operators,
            catalog: state.catalog.clone(),
            head_seq: state.head.0,
            head_hash: state.head.1,
        }
    }

    /// The key directory, optionally filtered.
    pub async fn keys(&self, issuer: Option<&str>, kind: Option<&CapacityKind>) -> Vec<KeyRecord> {
        let state = self.state.lock().await;
        let mut keys: Vec<KeyRecord> = state
            .keys
            .values()
            .filter(|k| issuer.is_none_or(|i| k.info.issuer == i))
            .filter(|k| kind.is_none_or(|c| &k.info.kind == c))
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.announced_seq);
        keys
    }

    /// The first spend of a nullifier, with the operator's name.
    pub async fn nullifier(
        &self,
        nullifier: &Nullifier,
    ) -> Result<Option<(FirstSpend, String)>, LedgerError> {
        let Some(first) = self.store.nullifier(nullifier).await? else {
            return Ok(None);
        };
        let state = self.state.lock().await;
        let name = operator_name(&state, &first);
        Ok(Some((first, name)))
    }

    /// Entries from `from`, at most `limit`.
    pub async fn entries(&self, from: u64, limit: u32) -> Result<Vec<LogEntry>, LedgerError> {
        Ok(self.store.entries(from, limit).await?)
    }

    /// Current totals.
    pub async fn totals(&self) -> Result<Totals, LedgerError> {
        Ok(self.store.totals().await?)
    }

    /// The latest checkpoint and its cosignatures.
    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointView>, LedgerError> {
        let Some(entry) = self.store.latest_checkpoint().await? else {
            return Ok(None);
        };
        let cosignatures = self.store.cosignatures(entry.seq).await?;
        Ok(Some(CheckpointView {
            entry,
            cosignatures,
        }))
    }
}

fn operator_name(state: &LedgerState, first: &FirstSpend) -> String {
    state
        .operators
        .get(&first.operator)
        .map(|o| o.name.clone())
        .unwrap_or_else(|| first.operator.to_string())
}

fn spend_results(
    request: &LedgerRequest,
    refused: &[Option<SpendRefusal>],
    already_spent: &[(Nullifier, FirstSpend)],
    state: &LedgerState,
) -> Vec<SpendResult> {
    let scrip_spec::ledger::Action::Spend { groups } = &request.action else {
        return Vec::new();
    };
    let spent: std::collections::HashMap<_, _> =
        already_spent.iter().map(|(n, f)| (*n, f)).collect();
    let mut seen = std::collections::HashSet::new();
    groups
        .iter()
        .flat_map(|g| g.nullifiers.iter())
        .enumerate()
        .map(|(i, n)| {
            let status = if let Some(Some(reason)) = refused.get(i) {
                SpendStatus::Refused { reason: *reason }
            } else if let Some(first) = spent.get(n) {
                SpendStatus::AlreadySpent {
                    first_spent_at: first.spent_at,
                    first_spent_by: operator_name(state, first),
                    seq: first.seq,
                }
            } else if !seen.insert(*n) {
                // Repeated within this request: its first valid occurrence was accepted.
                SpendStatus::Refused {
                    reason: SpendRefusal::DuplicateInRequest,
                }
            } else {
                SpendStatus::Accepted
            };
            SpendResult {
                nullifier: *n,
                status,
            }
        })
        .collect()
}

fn accepted_per_key(request: &LedgerRequest, spends: &[SpendResult]) -> Vec<(TokenKeyId, u64)> {
    let scrip_spec::ledger::Action::Spend { groups } = &request.action else {
        return Vec::new();
    };
    let mut results = spends.iter();
    groups
        .iter()
        .map(|g| {
            let n = results
                .by_ref()
                .take(g.nullifiers.len())
                .filter(|r| r.status == SpendStatus::Accepted)
                .count() as u64;
            (g.token_key_id, n)
        })
        .collect()
}
