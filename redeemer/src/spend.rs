//! Spending tokens at the ledger: concurrent requests gathered into one signed batch (bounded
//! wait, bounded size), with retries that never lose track of a spend whose answer was lost.
//! The ledger verifies each token again and answers per nullifier.

use crate::store::RedeemerStore;
use scrip_common::clients::{ClientError, LedgerClient};
use scrip_spec::api::ledger::{LedgerErrorCode, SpendRefusal, SpendStatus};
use scrip_spec::ledger::{Action, Hash32, LedgerRequest};
use scrip_spec::{Nullifier, OperatorKey, Token, UnixSeconds};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The ledger's decision on one nullifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendOutcome {
    /// Spent by this operator now (or by an earlier attempt of this batch whose answer was
    /// lost).
    Accepted,
    /// Spent before by this operator: an earlier redemption whose answer was lost, or a
    /// concurrent presentation of the same token. The one place that tells "spent by me" from
    /// "spent by another".
    SpentByUs {
        /// When.
        first_spent_at: UnixSeconds,
    },
    /// Spent before by another operator.
    AlreadySpent {
        /// When.
        first_spent_at: UnixSeconds,
        /// By which operator.
        first_spent_by: String,
    },
    /// The ledger refused it by the key checks; `None` if the receipt left it out.
    Refused(Option<SpendRefusal>),
}

/// The ledger could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpendFailure {
    /// Unreachable or failing; nothing known to be committed.
    #[error("the ledger is unavailable")]
    Unavailable,
    /// The ledger refused the whole request (a configuration problem, such as a missing role).
    #[error("the ledger refused the spend request: {0}")]
    Refused(LedgerErrorCode),
}

/// Who spends and where.
#[derive(Debug)]
pub struct Spender {
    /// The ledger.
    pub ledger: LedgerClient,
    /// The ledger id.
    pub ledger_id: Hash32,
    /// The operator's key.
    pub operator: OperatorKey,
    /// The operator's name on the ledger.
    pub name: String,
}

const ATTEMPTS: u32 = 5;

impl Spender {
    /// Spends `items` in one signed request per attempt; the outcomes come back in the order
    /// of `items`. If an attempt's answer is lost, the
    /// next attempt (newly signed) reveals what the lost one did: a nullifier "already spent"
    /// by this operator since the first attempt began was spent by it.
    pub async fn spend(&self, items: &[Token]) -> Result<Vec<SpendOutcome>, SpendFailure> {
        let action = Action::spend_of(items.iter().cloned());
        let nullifiers: Vec<Nullifier> = items.iter().map(Token::nullifier).collect();
        let started = scrip_spec::now();
        let mut maybe_sent = false;
        let mut backoff = Duration::from_millis(50);
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let request = self.operator.sign(LedgerRequest::new(
                self.ledger_id,
                scrip_spec::now(),
                action.clone(),
            ));
            match self.ledger.submit(&request).await {
                Ok(receipt) => {
                    let by_nullifier: HashMap<Nullifier, SpendStatus> = receipt
                        .spends
                        .into_iter()
                        .map(|r| (r.nullifier, r.status))
                        .collect();
                    // In the caller's order, whatever order the groups put them in.
                    let outcomes = nullifiers
                        .iter()
                        .map(|n| match by_nullifier.get(n) {
                            Some(SpendStatus::Accepted) => SpendOutcome::Accepted,
                            Some(SpendStatus::AlreadySpent {
                                first_spent_at,
                                first_spent_by,
                                ..
                            }) if first_spent_by == &self.name => {
                                if maybe_sent && *first_spent_at + 1 >= started {
                                    SpendOutcome::Accepted
                                } else {
                                    SpendOutcome::SpentByUs {
                                        first_spent_at: *first_spent_at,
                                    }
                                }
                            }
                            Some(SpendStatus::AlreadySpent {
                                first_spent_at,
                                first_spent_by,
                                ..
                            }) => SpendOutcome::AlreadySpent {
                                first_spent_at: *first_spent_at,
                                first_spent_by: first_spent_by.clone(),
                            },
                            Some(SpendStatus::Refused { reason }) => {
                                SpendOutcome::Refused(Some(*reason))
                            }
                            None => SpendOutcome::Refused(None),
                        })
                        .collect();
                    return Ok(outcomes);
                }
                Err(ClientError::Unreachable { source, .. }) => {
                    // A refused connection never reached the ledger; anything else might have.
                    if !source.is_connect() {
                        maybe_sent = true;
                    }
                    tracing::warn!(attempt, "ledger unreachable while spending");
                }
                Err(ClientError::Refused { status, error, .. }) if status >= 500 => {
                    maybe_sent = true;
                    tracing::warn!(attempt, code = %error.code, "ledger failed while spending");
                }
                // The ledger verifies every token again and refuses the whole request for one
                // that fails. This redeemer verified them all, so that is a stored token gone
                // bad or a disagreement about a key: find it by spending one at a time, so one
                // token never holds back the others (nothing was spent).
                Err(ClientError::Refused { error, .. })
                    if error.code == LedgerErrorCode::InvalidToken && items.len() > 1 =>
                {
                    tracing::warn!(
                        batch = items.len(),
                        "the ledger refused a token of the batch as invalid; spending one by one"
                    );
                    let mut outcomes = Vec::with_capacity(items.len());
                    for item in items {
                        let alone = Box::pin(self.spend(std::slice::from_ref(item))).await?;
                        outcomes.extend(alone);
                    }
                    return Ok(outcomes);
                }
                Err(ClientError::Refused { error, .. })
                    if error.code == LedgerErrorCode::InvalidToken =>
                {
                    tracing::warn!(
                        nullifier = %nullifiers[0],
                        "the ledger refused a token this redeemer had verified"
                    );
                    return Ok(vec![SpendOutcome::Refused(None)]);
                }
                Err(ClientError::Refused { error, .. }) => {
                    return Err(SpendFailure::Refused(error.code));
                }
                Err(ClientError::BadAnswer { .. }) => maybe_sent = true,
            }
        }
        Err(SpendFailure::Unavailable)
    }
}

type Reply = oneshot::Sender<Result<SpendOutcome, SpendFailure>>;

struct Job {
    token: Token,
    reply: Reply,
}

/// Gathers spends from concurrent redemptions into batches.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// Called after each batch with its size and the ledger's answer time, for `/metrics`.
pub type BatchObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// Most spend requests one redeemer has at a one-node ledger at once. A batch goes out as
/// soon as the slot is free, so a spend at low load waits for nothing; while the request is
/// out, spends join the next batch, so batches grow with the load instead of the ledger's
/// queue (each request costs the ledger a durable commit; BENCHMARKS.md, issue 17).
pub const BATCHES_IN_FLIGHT: usize = 1;

/// The same for a committee, which orders requests in rounds of a few hundred milliseconds
/// and orders several at once: one at a time would leave it idle between rounds (measured
/// at a third less redemption on four nodes, BENCHMARKS.md).
pub const COMMITTEE_BATCHES_IN_FLIGHT: usize = 16;

/// Longest a batch holds its slot: a ledger slow to answer (or retries after a lost answer)
/// delays the next batch this much at most, not until the first is decided.
pub const SLOT_HOLD: Duration = Duration::from_millis(500);

impl Batcher {
    /// Starts the batching task: a batch gathers for `wait` after its first spend (0: only
    /// what is already queued), then goes out once fewer than `in_flight` are at the ledger
    /// (each for at most [`SLOT_HOLD`]), taking in what arrives until then, up to `max`.
    /// Tokens `store` holds a row for (spent here before) are answered as spent by this
    /// operator without the ledger.
    pub fn start(
        spender: Arc<Spender>,
        store: RedeemerStore,
        max: usize,
        wait: Duration,
        in_flight: usize,
        observe: BatchObserver,
    ) -> Self {
        let max = max.max(1);
        let (tx, mut rx) = mpsc::channel::<Job>(max * 4);
        let slots = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                let deadline = tokio::time::Instant::now() + wait;
                while jobs.len() < max {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(job)) => jobs.push(job),
                        _ => break,
                    }
                }
                let acquire = Arc::clone(&slots).acquire_owned();
                tokio::pin!(acquire);
                let slot = loop {
                    tokio::select! {
                        biased;
                        slot = &mut acquire => break slot,
                        Some(job) = rx.recv(), if jobs.len() < max => jobs.push(job),
                    }
                };
                // The semaphore is never closed.
                let Ok(slot) = slot else { break };
                let (spender, store, observe) = (spender.clone(), store.clone(), observe.clone());
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let settling = settle(&spender, &store, jobs);
                    tokio::pin!(settling);
                    let sent = tokio::select! {
                        sent = &mut settling => sent,
                        () = tokio::time::sleep(SLOT_HOLD) => {
                            drop(slot);
                            settling.await
                        }
                    };
                    if sent > 0 {
                        observe(sent, started.elapsed());
                    }
                });
            }
        });
        Self { tx }
    }

    /// Spends one token, batched with whatever else is being spent.
    pub async fn spend(&self, token: Token) -> Result<SpendOutcome, SpendFailure> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { token, reply })
            .await
            .map_err(|_| SpendFailure::Unavailable)?;
        rx.await.unwrap_or(Err(SpendFailure::Unavailable))
    }
}

/// Decides one batch; returns how many presentations went to the ledger.
async fn settle(spender: &Spender, store: &RedeemerStore, jobs: Vec<Job>) -> usize {
    // The same nullifier twice in one batch is sent once; the later ones learn it was spent
    // (by this operator) once the first is decided.
    let mut waiters: HashMap<Nullifier, Vec<Reply>> = HashMap::new();
    let mut items = Vec::new();
    let mut nullifiers = Vec::new();
    let mut presented = 0;
    for job in jobs {
        let nullifier = job.token.nullifier();
        let entry = waiters.entry(nullifier).or_default();
        if entry.is_empty() {
            items.push(job.token);
            nullifiers.push(nullifier);
        }
        entry.push(job.reply);
    }
    // A token this redeemer holds a row for was spent here: its row decides (in the grant
    // writer's transaction), and the ledger is not asked again. One query for the batch, not
    // one per redemption. If the lookup fails the ledger is asked, which answers the same.
    match store.with_rows(&nullifiers).await {
        Ok(known) if !known.is_empty() => {
            for (n, first_spent_at) in &known {
                for reply in waiters.remove(n).unwrap_or_default() {
                    let _ = reply.send(Ok(SpendOutcome::SpentByUs {
                        first_spent_at: *first_spent_at,
                    }));
                }
            }
            let keep: Vec<bool> = nullifiers.iter().map(|n| !known.contains_key(n)).collect();
            let mut keep_items = keep.iter();
            items.retain(|_| keep_items.next().copied().unwrap_or(true));
            nullifiers.retain(|n| !known.contains_key(n));
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "looking up this redeemer's grants failed; asking the ledger")
        }
    }
    if items.is_empty() {
        return 0;
    }
    for n in &nullifiers {
        presented += waiters.get(n).map_or(0, Vec::len);
    }
    let result = spender.spend(&items).await;
    for (i, n) in nullifiers.iter().enumerate() {
        let Some(replies) = waiters.remove(n) else {
            continue;
        };
        for (j, reply) in replies.into_iter().enumerate() {
            let answer = match &result {
                Err(e) => Err(e.clone()),
                Ok(outcomes) if j == 0 => Ok(outcomes[i].clone()),
                Ok(outcomes) if outcomes[i] == SpendOutcome::Accepted => {
                    Ok(SpendOutcome::SpentByUs {
                        first_spent_at: scrip_spec::now(),
                    })
                }
                Ok(outcomes) => Ok(outcomes[i].clone()),
            };
            let _ = reply.send(answer);
        }
    }
    presented
}
