//! The ledger itself: judges requests, appends entries, answers queries. One writer at a
//! time (the hash chain is a sequence), any number of readers: they read a published copy of
//! the state, and what needs no lock (signatures, membership, replay, token verification) is
//! checked before the writer lock is taken.

use crate::rules::{LedgerState, Refusal, Verified};
use crate::store::{AppendOutcome, Effect, FirstSpend, Store, StoreError, signed_request_digest};
use scrip_common::metrics::Latency;
use scrip_spec::api::ledger::{
    CheckpointView, KeyRecord, LedgerInfo, Receipt, SpendRefusal, SpendResult, SpendStatus,
};
use scrip_spec::committee::{NodeAttestation, OrderedAt, ReceiptStatement};
use scrip_spec::ledger::{
    Action, Checkpoint, Cosignature, EntryBody, Genesis, Hash32, LedgerRequest, LogEntry, Pruned,
    Totals, prune_commitment,
};
use scrip_spec::{CapacityKind, Nullifier, OperatorKey, Signed, TokenKeyId, UnixSeconds};
use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
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
    /// A committee node did not see the request ordered in time: fewer than 2f+1 nodes may be
    /// reachable. The request may still be applied later.
    #[error(
        "the committee did not order the request within {waited_secs} s (are at least 2f+1 nodes up and connected?); it may still be applied: send the same request again to learn its outcome"
    )]
    NotOrdered {
        /// How long the node waited.
        waited_secs: u64,
    },
    /// This node is not in the committee of its session: it was retired, or waits to be
    /// admitted, and follows the others' log without ordering.
    #[error(
        "this node is not in the committee of its consensus session (retired, or not yet admitted); send the request to the committee's nodes, listed in GET /v1/info"
    )]
    NotInCommittee,
    /// A committee node holds as many waiting requests as it may.
    #[error("this node holds as many requests waiting to be ordered as it may; retry shortly")]
    Busy,
    /// The spent set or the totals disagree with the log: the database was changed by
    /// something other than the ledger.
    #[error(
        "the database's derived state disagrees with its log: {0}; restore the database from a backup or rebuild it from the log, and find out who changed it"
    )]
    DerivedStateMismatch(#[from] crate::audit::StoreMismatch),
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
    /// Verifying a request's tokens (before the writer lock), for requests that carry some.
    pub token_verification: Latency,
    /// A request from its arrival at the ledger to its receipt: the checks, the token
    /// verification, the writer lock and the commit.
    pub request: Latency,
}

/// The ledger.
pub struct Ledger {
    store: Arc<dyn Store>,
    key: OperatorKey,
    /// The writer's state: held while one entry is judged and appended.
    state: Mutex<LedgerState>,
    /// A copy of the state as of the last append, for readers and the checks made before
    /// the writer lock; replaced, never changed in place.
    view: RwLock<Arc<LedgerState>>,
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
        check_own_key(&genesis, &key)?;
        let entry = LogEntry {
            seq: 0,
            prev_hash: Hash32([0; 32]),
            recorded_at: genesis.created_at,
            body: EntryBody::Genesis(genesis.clone()),
            ordered: None,
        };
        let hash = entry.hash();
        store
            .append(&entry, &hash, &Effect::Genesis(genesis.clone()))
            .await?;
        Ok(Self::new(
            store,
            key,
            LedgerState::from_genesis(genesis, (0, hash)),
        ))
    }

    fn new(store: Arc<dyn Store>, key: OperatorKey, state: LedgerState) -> Self {
        Self {
            store,
            key,
            view: RwLock::new(Arc::new(state.clone())),
            state: Mutex::new(state),
            clock: Arc::new(scrip_spec::now),
            timings: Timings::default(),
        }
    }

    /// Opens the ledger a store holds, after checking that its spent set and totals agree
    /// with its log (see [`crate::audit::check_store`]).
    pub async fn open(store: Arc<dyn Store>, key: OperatorKey) -> Result<Self, LedgerError> {
        let snapshot = store.snapshot().await?.ok_or(LedgerError::NotInitialized)?;
        check_own_key(&snapshot.genesis, &key)?;
        let checking = Instant::now();
        crate::audit::check_store(store.as_ref(), None).await?;
        tracing::info!(
            entries = snapshot.head.0 + 1,
            took_ms = checking.elapsed().as_millis() as u64,
            "spent set, totals and members agree with the log"
        );
        Ok(Self::new(store, key, LedgerState::from_snapshot(snapshot)))
    }

    /// The state as of the last append (readers never wait for the writer).
    pub fn view(&self) -> Arc<LedgerState> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn publish(&self, state: &LedgerState) {
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(state.clone());
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

    /// The key this ledger signs with: the ledger key, or on a committee ledger this node's.
    pub fn key(&self) -> &OperatorKey {
        &self.key
    }

    /// Whether the genesis names a committee: requests are then ordered by the nodes'
    /// consensus and applied with [`Ledger::apply_ordered`], never submitted directly.
    pub fn is_committee(&self) -> bool {
        !self.view().genesis.committee.is_empty()
    }

    /// Judges and, if accepted, appends an operator's request, at the ledger's own time: the
    /// one-node ledger.
    pub async fn submit(&self, signed: Signed<LedgerRequest>) -> Result<Receipt, LedgerError> {
        self.judge_and_append(signed, None).await
    }

    /// Judges and, if accepted, appends a request the committee ordered at `at`, at the time
    /// `now` the nodes agreed: every node calls this with the same requests, in the same
    /// order, at the same times, and so holds the same log.
    pub async fn apply_ordered(
        &self,
        signed: Signed<LedgerRequest>,
        now: UnixSeconds,
        at: OrderedAt,
    ) -> Result<Receipt, LedgerError> {
        self.judge_and_append(signed, Some((now, at))).await
    }

    /// Appends a certificate the committee's ordered votes completed, at the agreed time
    /// `now` and place `at`; refused unless it holds `n - f` valid node signatures over an
    /// entry of this log.
    pub async fn append_certificate(
        &self,
        certificate: scrip_spec::committee::Certificate,
        now: UnixSeconds,
        at: OrderedAt,
    ) -> Result<(u64, Hash32), LedgerError> {
        let mut state = self.state.lock().await;
        let invalid = |reason: &str| -> LedgerError {
            Refusal::Invalid {
                reason: reason.to_owned(),
            }
            .into()
        };
        certificate
            .verify(state.committee_for(at.session))
            .map_err(invalid)?;
        let head = &certificate.head;
        let certified = self.store.entries(head.seq, 1, u64::MAX).await?;
        if head.ledger_id != state.ledger_id
            || certified.first().map(|e| (e.seq, e.hash())) != Some((head.seq, head.head_hash))
        {
            return Err(invalid(
                "the certificate does not name an entry of this log",
            ));
        }
        // Places only grow along the log: a session's units applied a second time from an
        // older place would otherwise append its certificate twice, and fork this node.
        let last = self.store.entries(state.head.0, 1, u64::MAX).await?;
        if last
            .first()
            .and_then(|e| e.ordered)
            .is_some_and(|p| p >= at)
        {
            return Err(invalid(
                "the certificate's place in the order is not after the last entry's",
            ));
        }
        let entry = LogEntry {
            seq: state.head.0 + 1,
            prev_hash: state.head.1,
            recorded_at: now,
            body: EntryBody::Certificate(certificate),
            ordered: Some(at),
        };
        let hash = entry.hash();
        self.store.append(&entry, &hash, &Effect::None).await?;
        state.apply(&Effect::None, (entry.seq, hash), &[]);
        self.publish(&state);
        Ok((entry.seq, hash))
    }

    /// `receipt`, signed by this node for the request of `digest` (committee ledgers).
    pub fn attest(&self, digest: [u8; 32], mut receipt: Receipt) -> Receipt {
        let statement = ReceiptStatement {
            ledger_id: self.view().ledger_id,
            request: Hash32(digest),
            seq: receipt.seq,
            entry_hash: receipt.entry_hash,
            spends: receipt.spends.clone(),
        };
        receipt.attestation = Some(NodeAttestation {
            node: self.key.id(),
            request: Hash32(digest),
            signature: self.key.sign_detached(&statement),
        });
        receipt
    }

    async fn judge_and_append(
        &self,
        signed: Signed<LedgerRequest>,
        ordered: Option<(UnixSeconds, OrderedAt)>,
    ) -> Result<Receipt, LedgerError> {
        let arrived = Instant::now();
        let judged = self.judge_and_append_inner(signed, ordered).await;
        self.timings.request.since(arrived);
        judged
    }

    /// [`Ledger::judge_and_append`] without its timing.
    async fn judge_and_append_inner(
        &self,
        signed: Signed<LedgerRequest>,
        ordered: Option<(UnixSeconds, OrderedAt)>,
    ) -> Result<Receipt, LedgerError> {
        let clock = || ordered.map_or_else(|| (self.clock)(), |(now, _)| now);
        let digest = signed_request_digest(&signed);
        // Before the writer lock: who signed, for which ledger, when, whether the log has it
        // already, and the tokens' signatures. A request already in the log is reported as
        // a replay whatever else it breaks now: retried after the clock-skew window it would
        // read as stale, and its sender would sign it anew and apply it twice.
        let view = self.view();
        if self.store.request_seq(&digest).await?.is_some() {
            return Err(Refusal::Replayed.into());
        }
        let operator = view.authenticate(&signed, clock())?;
        match &signed.payload.action {
            Action::Spend { groups } => LedgerState::check_spend_shape(operator, groups)?,
            Action::Refresh { inputs, outputs } => {
                LedgerState::check_refresh_shape(operator, inputs, outputs)?;
            }
            _ => {}
        }
        let mut verified = spend_keys_to_verify(&view, &signed, clock());
        let verifying = Instant::now();
        let signed = verify_tokens(view, signed, verified.clone()).await?;
        if !verified.is_empty() {
            self.timings.token_verification.since(verifying);
        }

        let waiting = Instant::now();
        let mut state = self.state.lock().await;
        self.timings.writer_wait.since(waiting);
        let now = clock();
        // A key announced since the view was taken: its tokens are verified now.
        let more: HashSet<TokenKeyId> = spend_keys_to_verify(&state, &signed, now)
            .difference(&verified)
            .copied()
            .collect();
        let signed = if more.is_empty() {
            signed
        } else {
            verified.extend(more.iter().copied());
            verify_tokens(Arc::new(state.clone()), signed, more).await?
        };
        let judgement = match state.judge_authenticated(
            &signed,
            now,
            ordered.map(|(_, at)| at.session),
            Verified::Keys(&verified),
        ) {
            // Appended by a concurrent copy of the same request since the check above.
            Err(_) if self.store.request_seq(&digest).await?.is_some() => {
                return Err(Refusal::Replayed.into());
            }
            judged => judged?,
        };
        let entry = LogEntry {
            seq: state.head.0 + 1,
            prev_hash: state.head.1,
            recorded_at: now,
            body: EntryBody::Request(signed),
            ordered: ordered.map(|(_, at)| at),
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
                    self.publish(&state);
                }
                return Err(e.into());
            }
            Ok(outcome) => outcome,
        };
        let (appended, already_spent) = match outcome {
            AppendOutcome::Appended { already_spent } => (true, already_spent),
            AppendOutcome::NothingToSpend { already_spent } => (false, already_spent),
        };
        if !appended
            && let EntryBody::Request(signed) = &entry.body
            && let Action::Refresh { inputs, .. } = &signed.payload.action
        {
            return Err(refresh_refusal(inputs, &already_spent, &state).into());
        }
        let spends = spend_results(&judgement.spends, &already_spent, &state);
        if !appended {
            return Ok(Receipt {
                seq: None,
                entry_hash: None,
                spends,
                attestation: None,
            });
        }
        let accepted = accepted_per_key(&judgement.spends, &spends);
        state.apply(&judgement.effect, (entry.seq, hash), &accepted);
        self.publish(&state);
        Ok(Receipt {
            seq: Some(entry.seq),
            entry_hash: Some(hash),
            spends,
            attestation: None,
        })
    }

    /// Signs and appends a checkpoint of the current head and totals, unless the head is
    /// already a checkpoint.
    pub async fn checkpoint(&self) -> Result<Option<LogEntry>, LedgerError> {
        if self.is_committee() {
            // No node holds a ledger key: a committee's log is vouched for by its nodes'
            // signed receipts (PROTOCOL.md section 11).
            return Ok(None);
        }
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
            ordered: None,
        };
        let hash = entry.hash();
        self.store.append(&entry, &hash, &Effect::None).await?;
        state.apply(&Effect::None, (entry.seq, hash), &[]);
        self.publish(&state);
        Ok(Some(entry))
    }

    /// Records an operator's cosignature of the latest checkpoint.
    pub async fn cosign(&self, cosignature: Signed<Cosignature>) -> Result<(), LedgerError> {
        let state = self.view();
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
        self.store.add_cosignature(latest.seq, &cosignature).await?;
        Ok(())
    }

    /// Drops the spent set of a key past its `forget_after`, and appends the signed record of
    /// what was dropped (count and commitment) so the audit still balances.
    pub async fn prune(&self, token_key_id: &TokenKeyId) -> Result<Option<LogEntry>, LedgerError> {
        if self.is_committee() {
            return Err(Refusal::Invalid {
                reason: "a committee ledger prunes by itself: every node drops a key's spent set once the agreed time passes its forget_after".into(),
            }
            .into());
        }
        let now = (self.clock)();
        self.prune_at(token_key_id, now, None, |record| {
            EntryBody::Pruned(self.key.sign(record))
        })
        .await
    }

    /// The keys of a committee ledger to prune at the agreed time `now`: past their
    /// `forget_after`, with spends not yet pruned, in key id order.
    pub fn keys_to_prune(&self, now: UnixSeconds) -> Vec<TokenKeyId> {
        let mut keys: Vec<TokenKeyId> = self
            .view()
            .keys
            .values()
            .filter(|k| now > k.info.forget_after && k.spent > k.pruned)
            .map(|k| k.info.public_key.id())
            .collect();
        keys.sort();
        keys
    }

    /// Prunes a key of a committee ledger at the agreed time `now` and place `at`, as every
    /// node does at the same place: an unsigned record.
    pub async fn prune_ordered(
        &self,
        token_key_id: &TokenKeyId,
        now: UnixSeconds,
        at: OrderedAt,
    ) -> Result<Option<LogEntry>, LedgerError> {
        self.prune_at(token_key_id, now, Some(at), EntryBody::CommitteePruned)
            .await
    }

    async fn prune_at(
        &self,
        token_key_id: &TokenKeyId,
        now: UnixSeconds,
        ordered: Option<OrderedAt>,
        body: impl Fn(Pruned) -> EntryBody + Send + Sync,
    ) -> Result<Option<LogEntry>, LedgerError> {
        let mut state = self.state.lock().await;
        let key = state
            .keys
            .get(token_key_id)
            .ok_or_else(|| Refusal::Invalid {
                reason: format!("key {token_key_id} is not announced"),
            })?;
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
                body: body(record),
                ordered,
            };
            let hash = entry.hash();
            (entry, hash)
        };
        let Some(entry) = self.store.prune(token_key_id, &build).await? else {
            return Ok(None);
        };
        let count = match &entry.body {
            EntryBody::Pruned(record) => record.payload.count,
            EntryBody::CommitteePruned(record) => record.count,
            _ => return Ok(Some(entry)),
        };
        let effect = Effect::Pruned {
            token_key_id: *token_key_id,
            count,
        };
        state.apply(&effect, (entry.seq, entry.hash()), &[]);
        self.publish(&state);
        Ok(Some(entry))
    }

    /// Public facts: ledger id, genesis, members, catalog, head.
    pub async fn info(&self) -> LedgerInfo {
        let state = self.view();
        let mut operators: Vec<_> = state.operators.values().cloned().collect();
        operators.sort_by(|a, b| a.name.cmp(&b.name));
        LedgerInfo {
            ledger_id: state.ledger_id,
            genesis: state.genesis.clone(),
            operators,
            catalog: state.catalog.clone(),
            head_seq: state.head.0,
            head_hash: state.head.1,
            governance_seq: state.governance_seq,
            admin_quorum: state.admin_quorum(),
            session: None,
            committee: state.latest_committee().to_vec(),
        }
    }

    /// The key directory, optionally filtered.
    pub async fn keys(&self, issuer: Option<&str>, kind: Option<&CapacityKind>) -> Vec<KeyRecord> {
        let state = self.view();
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
        let name = self.view().operator_name(&first.operator);
        Ok(Some((first, name)))
    }

    /// The spent nullifiers that start with `prefix`, with their operators' names, at most
    /// [`MAX_SPENT_PREFIX_ANSWER`](scrip_spec::api::ledger::MAX_SPENT_PREFIX_ANSWER); the flag
    /// says whether that is all of them.
    pub async fn spent_with_prefix(
        &self,
        prefix: &scrip_spec::api::ledger::NullifierPrefix,
    ) -> Result<(Vec<(Nullifier, FirstSpend, String)>, bool), LedgerError> {
        use scrip_spec::api::ledger::MAX_SPENT_PREFIX_ANSWER;
        let (low, high) = prefix.range();
        // One more than the answer holds tells whether it is complete.
        let limit = u32::try_from(MAX_SPENT_PREFIX_ANSWER + 1).unwrap_or(u32::MAX);
        let mut rows = self.store.spent_between(&low, &high, limit).await?;
        let complete = rows.len() <= MAX_SPENT_PREFIX_ANSWER;
        rows.truncate(MAX_SPENT_PREFIX_ANSWER);
        let view = self.view();
        Ok((
            rows.into_iter()
                .map(|(n, first)| {
                    let name = view.operator_name(&first.operator);
                    (n, first, name)
                })
                .collect(),
            complete,
        ))
    }

    /// Entries from `from`, at most `limit` and about
    /// [`scrip_spec::api::ledger::MAX_LOG_PAGE_BYTES`].
    pub async fn entries(&self, from: u64, limit: u32) -> Result<Vec<LogEntry>, LedgerError> {
        Ok(self
            .store
            .entries(from, limit, scrip_spec::api::ledger::MAX_LOG_PAGE_BYTES)
            .await?)
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

/// `key` must be the genesis's ledger key, or on a committee ledger a node key: not an
/// operator's. (A node that joins later is in no committee until the log admits it, so its
/// key is checked against the committee when it starts, [`crate::node::Node::start`].)
fn check_own_key(genesis: &Genesis, key: &OperatorKey) -> Result<(), LedgerError> {
    let reason = if genesis.committee.is_empty() {
        (genesis.ledger_key != key.id())
            .then_some("this key is not the ledger key named in the genesis (ledger_key)")
    } else {
        genesis
            .operators
            .iter()
            .any(|o| o.id == key.id())
            .then_some("this key is an operator's key; a node signs with a node key of its own")
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Refusal::Invalid {
            reason: reason.into(),
        }
        .into()),
    }
}

/// The keys of a spend request whose tokens pass the key checks in `state` (none for any
/// other request).
fn spend_keys_to_verify(
    state: &LedgerState,
    signed: &Signed<LedgerRequest>,
    now: UnixSeconds,
) -> HashSet<TokenKeyId> {
    match &signed.payload.action {
        Action::Spend { groups } => state.keys_to_verify(groups, now),
        Action::Refresh { inputs, .. } => state.keys_to_verify(inputs, now),
        _ => HashSet::new(),
    }
}

/// Verifies, off the async threads, the tokens of the spend's groups of `keys`; hands the
/// request back.
async fn verify_tokens(
    state: Arc<LedgerState>,
    signed: Signed<LedgerRequest>,
    keys: HashSet<TokenKeyId>,
) -> Result<Signed<LedgerRequest>, LedgerError> {
    if keys.is_empty() {
        return Ok(signed);
    }
    let (signed, verdict) = tokio::task::spawn_blocking(move || {
        let verdict = match &signed.payload.action {
            Action::Spend { groups } => state.verify_spend(groups, &keys),
            Action::Refresh { inputs, .. } => state.verify_spend(inputs, &keys),
            _ => Ok(()),
        };
        (signed, verdict)
    })
    .await
    .map_err(|_| StoreError::Corrupt {
        what: "token verification task".into(),
    })?;
    verdict?;
    Ok(signed)
}

/// Why a refresh appended nothing: the first input (in request order) spent before.
fn refresh_refusal(
    inputs: &[scrip_spec::ledger::SpendGroup],
    already_spent: &[(Nullifier, FirstSpend)],
    state: &LedgerState,
) -> Refusal {
    let spent: std::collections::HashMap<_, _> =
        already_spent.iter().map(|(n, f)| (*n, f)).collect();
    let first = inputs
        .iter()
        .flat_map(|g| g.nullifiers())
        .enumerate()
        .find_map(|(index, n)| spent.get(&n).map(|f| (index, *f)));
    match first {
        Some((index, f)) => Refusal::AlreadySpent {
            index,
            first_spent_at: f.spent_at,
            first_spent_by: state.operator_name(&f.operator),
            seq: f.seq,
        },
        // Not spent, yet not inserted: only a pruned nullifier could do that, and a pruned
        // key is past its redemption window, which the rules refused before.
        None => Refusal::Invalid {
            reason: "an input of the refresh could not be spent; nothing was spent".into(),
        },
    }
}

fn spend_results(
    spends: &[(TokenKeyId, Nullifier, Option<SpendRefusal>)],
    already_spent: &[(Nullifier, FirstSpend)],
    state: &LedgerState,
) -> Vec<SpendResult> {
    let spent: std::collections::HashMap<_, _> =
        already_spent.iter().map(|(n, f)| (*n, f)).collect();
    let mut seen = HashSet::new();
    spends
        .iter()
        .map(|(_, n, refused)| {
            let status = if let Some(reason) = refused {
                SpendStatus::Refused { reason: *reason }
            } else if let Some(first) = spent.get(n) {
                SpendStatus::AlreadySpent {
                    first_spent_at: first.spent_at,
                    first_spent_by: state.operator_name(&first.operator),
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

fn accepted_per_key(
    spends: &[(TokenKeyId, Nullifier, Option<SpendRefusal>)],
    results: &[SpendResult],
) -> Vec<(TokenKeyId, u64)> {
    let mut per_key: Vec<(TokenKeyId, u64)> = Vec::new();
    for ((key, _, _), result) in spends.iter().zip(results) {
        if result.status != SpendStatus::Accepted {
            continue;
        }
        match per_key.iter_mut().find(|(k, _)| k == key) {
            Some((_, n)) => *n += 1,
            None => per_key.push((*key, 1)),
        }
    }
    per_key
}
