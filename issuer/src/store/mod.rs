//! The issuer's storage: cards (hashed), openings, keys, issuance counters and the outbox of
//! ledger requests. One trait; SQLite is the implementation today.

mod sqlite;

pub use sqlite::SqliteIssuerStore;

use async_trait::async_trait;
use scrip_spec::api::issuer::{CardState, RequestId};
use scrip_spec::{TokenKeyId, TokenKeyInfo, UnixSeconds};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A storage failure; its detail is for the operator's log only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Stored data does not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The URL is not supported.
    #[error("unsupported issuer database URL: use sqlite://PATH")]
    UnsupportedUrl,
}

/// A card as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    /// Its batch.
    pub batch_id: String,
    /// Position in the batch.
    pub serial: u64,
    /// Face value.
    pub value: u64,
    /// Credits left.
    pub remaining: u64,
    /// State.
    pub state: CardState,
}

/// A batch and how many of its cards are in each state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    /// Batch id.
    pub batch_id: String,
    /// Face value of each card.
    pub value: u64,
    /// Cards in it.
    pub count: u64,
    /// `minted`, `activating` (sale recorded, ledger not yet confirmed) or `active`.
    pub state: String,
    /// Cards per state.
    pub cards: Vec<(String, u64)>,
    /// Credits left over all its cards.
    pub remaining_credits: u64,
}

/// A recorded opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningRecord {
    /// The card it charged.
    pub card_hash: [u8; 32],
    /// Canonical bytes of the requests.
    pub requests: Vec<u8>,
    /// Canonical bytes of the responses.
    pub responses: Vec<u8>,
}

/// What committing an opening did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Charged and recorded; credits left.
    Committed {
        /// Credits left.
        remaining: u64,
    },
    /// The card cannot pay: credits left.
    InsufficientCredits {
        /// Credits left.
        remaining: u64,
    },
    /// Unknown, minted, used up or void.
    InvalidCard,
    /// The request id was recorded meanwhile (a concurrent repeat).
    AlreadyRecorded,
}

/// A new opening to commit.
#[derive(Debug, Clone)]
pub struct NewOpening<'a> {
    /// Its id.
    pub request_id: &'a RequestId,
    /// The card's hash.
    pub card_hash: &'a [u8; 32],
    /// Total price.
    pub price: u64,
    /// Canonical bytes of the requests.
    pub requests: &'a [u8],
    /// Canonical bytes of the responses.
    pub responses: &'a [u8],
    /// Tokens per key, for the issuance counters.
    pub per_key: &'a [(TokenKeyId, u64)],
    /// Now.
    pub now: UnixSeconds,
}

/// A recorded refresh (PROTOCOL.md section 9.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the refresh's body (its tokens and requests), to tell a repeat from a reuse.
    pub body_hash: [u8; 32],
    /// Canonical bytes of the blinded requests.
    pub requests: Vec<u8>,
    /// The signed ledger request, JSON.
    pub ledger_request: String,
    /// Canonical bytes of the responses, once signed.
    pub responses: Option<Vec<u8>>,
}

/// A refresh to record before the ledger is asked.
#[derive(Debug, Clone)]
pub struct NewRefresh<'a> {
    /// Its id.
    pub request_id: &'a RequestId,
    /// SHA-256 of its body.
    pub body_hash: &'a [u8; 32],
    /// Canonical bytes of the blinded requests.
    pub requests: &'a [u8],
    /// The signed ledger request, JSON.
    pub ledger_request: &'a str,
    /// The inputs' nullifiers, in request order.
    pub nullifiers: &'a [scrip_spec::Nullifier],
    /// Now.
    pub now: UnixSeconds,
}

/// What recording a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginRefresh {
    /// Recorded.
    Recorded,
    /// The request id was recorded meanwhile (a concurrent repeat).
    AlreadyRecorded,
    /// Input `index` is already in another refresh of this issuer.
    TokenTaken {
        /// Its position among the inputs.
        index: usize,
    },
}

/// A key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Metadata.
    pub info: TokenKeyInfo,
    /// Where the private key is.
    pub pem_path: String,
    /// Whether the ledger accepted the announcement.
    pub announced: bool,
}

/// What to do when an outbox request is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSuccess {
    /// Mark a batch active.
    ActivateBatch {
        /// The batch.
        batch_id: String,
    },
    /// Nothing more (issuance reports: the counters were moved when the request was queued).
    Nothing,
}

/// A queued ledger request.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// Its id.
    pub id: i64,
    /// The signed request, JSON.
    pub request: String,
    /// What to do once acknowledged.
    pub on_success: OnSuccess,
}

/// A queued ledger request the ledger refused for good, kept for the operator.
#[derive(Debug, Clone)]
pub struct SetAsideItem {
    /// The item.
    pub item: OutboxItem,
    /// When it was set aside.
    pub set_aside_at: UnixSeconds,
    /// The ledger's answer.
    pub refusal: String,
}

/// The issuer's store.
#[async_trait]
pub trait IssuerStore: Send + Sync + 'static {
    /// Creates a batch of minted cards from their code hashes.
    async fn create_batch(
        &self,
        batch_id: &str,
        value: u64,
        hashes: &[[u8; 32]],
        now: UnixSeconds,
    ) -> Result<(), StoreError>;

    /// Batches with their per-state counts, oldest first.
    async fn batches(&self) -> Result<Vec<BatchSummary>, StoreError>;

    /// Moves a batch from `from` to `to` (and its cards along, for activation); `false` if the
    /// batch was not in `from`. With `queue`, the outbox item is added in the same transaction.
    async fn set_batch_state(
        &self,
        batch_id: &str,
        from: &str,
        to: &str,
        queue: Option<(&str, &OnSuccess)>,
        now: UnixSeconds,
    ) -> Result<bool, StoreError>;

    /// A card by its code hash.
    async fn card(&self, hash: &[u8; 32]) -> Result<Option<CardRecord>, StoreError>;

    /// Voids a card; `false` if unknown or already void.
    async fn void_card(&self, hash: &[u8; 32]) -> Result<bool, StoreError>;

    /// Voids every card of a batch not yet used or void; how many.
    async fn void_batch(&self, batch_id: &str) -> Result<u64, StoreError>;

    /// A recorded opening.
    async fn opening(&self, id: &RequestId) -> Result<Option<OpeningRecord>, StoreError>;

    /// Charges the card and records the opening, in one transaction.
    async fn commit_opening(&self, opening: NewOpening<'_>) -> Result<CommitOutcome, StoreError>;

    /// A recorded refresh.
    async fn refresh(&self, id: &RequestId) -> Result<Option<RefreshRecord>, StoreError>;

    /// Records a refresh and its inputs' nullifiers, in one transaction, unless the id or an
    /// input is taken.
    async fn begin_refresh(&self, refresh: NewRefresh<'_>) -> Result<BeginRefresh, StoreError>;

    /// Replaces a pending refresh's signed ledger request (re-signed after it went stale).
    async fn resign_refresh(&self, id: &RequestId, ledger_request: &str) -> Result<(), StoreError>;

    /// Stores a refresh's signed responses: it is complete.
    async fn finish_refresh(&self, id: &RequestId, responses: &[u8]) -> Result<(), StoreError>;

    /// Forgets a pending refresh the ledger refused for good, with its inputs' nullifiers.
    async fn drop_refresh(&self, id: &RequestId) -> Result<(), StoreError>;

    /// Records a new key (not yet announced).
    async fn insert_key(&self, key: &StoredKey, now: UnixSeconds) -> Result<(), StoreError>;

    /// Marks a key announced.
    async fn mark_announced(&self, id: &TokenKeyId) -> Result<(), StoreError>;

    /// Every key.
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Moves the pending issuance counts into outbox items built by `sign` (key, count, and
    /// the start of the key's interval: the end of its previous report, or its `valid_from`),
    /// in one transaction, so a count is reported exactly once and the intervals tile time.
    async fn queue_issuance_reports(
        &self,
        sign: &(dyn Fn(TokenKeyId, u64, UnixSeconds) -> String + Send + Sync),
        now: UnixSeconds,
    ) -> Result<usize, StoreError>;

    /// Pending issuance counts.
    async fn pending_issuance(&self) -> Result<Vec<(TokenKeyId, u64)>, StoreError>;

    /// The outbox items still to send, oldest first.
    async fn outbox(&self) -> Result<Vec<OutboxItem>, StoreError>;

    /// One item still to send, as stored now; `None` once it is sent or set aside.
    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>, StoreError>;

    /// Replaces an item's request (re-signed after it went stale) if it is still `expected`:
    /// `false` if another process changed, sent or set it aside first. Two processes sharing
    /// the store so never both land a re-signed copy.
    async fn update_outbox(
        &self,
        id: i64,
        expected: &str,
        request: &str,
    ) -> Result<bool, StoreError>;

    /// Sets an item aside with the ledger's `refusal` if its request is still `expected`;
    /// `false` if another process changed, sent or set it aside first.
    async fn set_aside_outbox(
        &self,
        id: i64,
        expected: &str,
        refusal: &str,
        now: UnixSeconds,
    ) -> Result<bool, StoreError>;

    /// The items set aside, oldest first.
    async fn outbox_set_aside(&self) -> Result<Vec<SetAsideItem>, StoreError>;

    /// How many items are set aside (for the gauge, without loading them).
    async fn count_outbox_set_aside(&self) -> Result<u64, StoreError>;

    /// Puts a set-aside item back in line, to be sent by the next flush (after the operator
    /// has dealt with why the ledger refused it); false if no item `id` is set aside.
    async fn requeue_outbox(&self, id: i64) -> Result<bool, StoreError>;

    /// Whether the store takes writes now (for `/healthz`): it fails on a full disk.
    async fn write_probe(&self) -> Result<(), StoreError>;

    /// Removes an acknowledged item and applies its follow-up, in one transaction.
    async fn complete_outbox(&self, item: &OutboxItem) -> Result<(), StoreError>;

    /// Keeps what the ledger last said: its id and catalog (JSON), heard at `now`.
    async fn save_ledger_info(
        &self,
        ledger_id: &[u8; 32],
        catalog: &str,
        now: UnixSeconds,
    ) -> Result<(), StoreError>;

    /// What [`IssuerStore::save_ledger_info`] kept last: the ledger's id, its catalog (JSON)
    /// and when it was heard; `None` if the ledger never answered this store.
    async fn ledger_info(&self) -> Result<Option<([u8; 32], String, UnixSeconds)>, StoreError>;
}

/// Opens the store a URL names.
pub async fn connect(url: &str) -> Result<Arc<dyn IssuerStore>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteIssuerStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
