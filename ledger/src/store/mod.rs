//! Storage: one trait, one SQL implementation (`sql.rs`) for every database, with per backend
//! only its connection set-up and what its SQL cannot share; one test suite run against each.
//!
//! The ledger appends an entry and applies its effects in one database transaction, so a
//! crash never leaves an effect without its entry or an entry without its effects. Each
//! nullifier is the primary key of the spent set: whichever transaction inserts it first owns
//! it, on every backend.

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use scrip_spec::ledger::{Genesis, Hash32, LogEntry, OperatorInfo, Totals};
use scrip_spec::{Catalog, Nullifier, OperatorId, Signed, TokenKeyId, TokenKeyInfo, UnixSeconds};
use std::sync::Arc;

/// A storage failure. The message is for the operator's log, never for a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error")]
    Database {
        /// What sqlx said.
        #[from]
        source: sqlx::Error,
    },
    /// Migrations failed on connect.
    #[error("database migration failed")]
    Migration {
        /// What sqlx said.
        #[from]
        source: sqlx::migrate::MigrateError,
    },
    /// Stored bytes do not decode: the database was changed by something other than the
    /// ledger.
    #[error("stored data is corrupt: {what}")]
    Corrupt {
        /// What could not be read.
        what: String,
    },
    /// Another writer appended at the same position (two ledger processes on one database).
    #[error("log position {seq} is already taken: is another ledger process writing?")]
    SeqTaken {
        /// The position.
        seq: u64,
    },
    /// The same signed request is already in the log.
    #[error("this signed request is already in the log")]
    Replayed,
    /// The URL names no supported database.
    #[error("unsupported database URL {url:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl {
        /// The URL given (without credentials).
        url: String,
    },
}

/// The nullifiers of one key's tokens that a spend inserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NullifierGroup {
    /// The key.
    pub token_key_id: TokenKeyId,
    /// Nullifiers of its verified tokens, without duplicates.
    pub nullifiers: Vec<Nullifier>,
}

/// What a governance change does.
#[derive(Debug, Clone)]
pub enum GovernanceEffect {
    /// A new member.
    AdmitOperator(OperatorInfo),
    /// A member removed.
    RemoveOperator(OperatorId),
    /// A member with new roles (the whole record).
    SetRoles(OperatorInfo),
    /// A new catalog.
    SetCatalog(Catalog),
    /// A key revoked by the admins.
    RevokeKey(TokenKeyId),
    /// The committee changed: the whole schedule after the change.
    SetCommittee(scrip_spec::committee::CommitteeSchedule),
}

/// What an entry changes besides the log itself.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Entry 0: members, catalog, ledger id.
    Genesis(Genesis),
    /// A governance change approved by a quorum of admins.
    Governance {
        /// The change.
        change: GovernanceEffect,
        /// Governance changes applied once this one is.
        governance_seq: u64,
    },
    /// A new key.
    AnnounceKey(TokenKeyInfo),
    /// A key revoked by its issuer.
    RevokeKey(TokenKeyId),
    /// A batch of cards sold.
    CardsSold {
        /// The issuer.
        issuer: String,
        /// Cards.
        count: u64,
        /// Credits.
        credits: u64,
    },
    /// Tokens issued with a key.
    TokensIssued {
        /// The key.
        token_key_id: TokenKeyId,
        /// How many.
        count: u64,
        /// End of the reported interval.
        until: UnixSeconds,
    },
    /// Nullifiers to insert; the ones already present are refused.
    Spend {
        /// Nullifiers of verified tokens of keys in their redemption window, without
        /// duplicates.
        groups: Vec<NullifierGroup>,
    },
    /// A refresh: every input nullifier inserted, or none (the append then commits nothing),
    /// and the outputs added to their keys' `issued`.
    Refresh {
        /// Nullifiers of the verified inputs, per key, without duplicates.
        inputs: Vec<NullifierGroup>,
        /// Tokens issued per key.
        outputs: Vec<(TokenKeyId, u64)>,
    },
    /// Nothing beyond the entry (a checkpoint).
    None,
    /// A key's nullifiers dropped (done by [`Store::prune`] with the entry): which key, how
    /// many, so that [`crate::rules::LedgerState::apply`] counts them like any other effect.
    Pruned {
        /// The key.
        token_key_id: TokenKeyId,
        /// Nullifiers dropped.
        count: u64,
    },
}

/// Who spent a nullifier first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstSpend {
    /// The entry that spent it.
    pub seq: u64,
    /// When.
    pub spent_at: UnixSeconds,
    /// The redeeming operator.
    pub operator: OperatorId,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Appended. For a spend, the nullifiers refused because they were spent before.
    Appended {
        /// Nullifiers already spent, with their first spend.
        already_spent: Vec<(Nullifier, FirstSpend)>,
    },
    /// A spend of which every nullifier was already spent, or a refresh of which at least one
    /// was: nothing was appended.
    NothingToSpend {
        /// Every nullifier, with its first spend.
        already_spent: Vec<(Nullifier, FirstSpend)>,
    },
}

pub use scrip_spec::api::ledger::KeyRecord;

/// The ledger's configuration as stored: fixed by genesis, then changed by entries.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Genesis.
    pub genesis: Genesis,
    /// Current members.
    pub operators: Vec<OperatorInfo>,
    /// Removed members.
    pub former: Vec<OperatorInfo>,
    /// Current catalog.
    pub catalog: Catalog,
    /// The entry that set it (0: the genesis).
    pub catalog_version: u64,
    /// Governance changes applied.
    pub governance_seq: u64,
    /// Every key ever announced.
    pub keys: Vec<KeyRecord>,
    /// The committee's changes (empty while the genesis's governs).
    pub committee: scrip_spec::committee::CommitteeSchedule,
    /// Last entry's sequence number and hash.
    pub head: (u64, Hash32),
}

/// Builds the pruning entry (and its hash) from the dropped nullifiers.
pub type PruneRecordFn<'a> = dyn Fn(&[Nullifier]) -> (LogEntry, Hash32) + Send + Sync + 'a;

/// Everything the ledger keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends `entry` (whose hash is `hash`) and applies `effect`, in one transaction.
    async fn append(
        &self,
        entry: &LogEntry,
        hash: &Hash32,
        effect: &Effect,
    ) -> Result<AppendOutcome, StoreError>;

    /// The entry that recorded a request with this digest, if any.
    async fn request_seq(&self, digest: &[u8; 32]) -> Result<Option<u64>, StoreError>;

    /// The current configuration, or `None` before genesis.
    async fn snapshot(&self) -> Result<Option<Snapshot>, StoreError>;

    /// Up to `limit` entries from `from` on, in order, stopping before the entry that would
    /// take their canonical bytes past `max_bytes` (the first entry is always returned).
    async fn entries(
        &self,
        from: u64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// The whole spent set, `(nullifier, key, seq)` in nullifier order: what the start-up
    /// check and the audit of a database copy compare with the log.
    async fn spent_set(&self) -> Result<Vec<(Nullifier, TokenKeyId, u64)>, StoreError>;

    /// The first spend of a nullifier, if spent (and not pruned).
    async fn nullifier(&self, nullifier: &Nullifier) -> Result<Option<FirstSpend>, StoreError>;

    /// Up to `limit` spent nullifiers (not pruned) between `low` and `high` inclusive, in
    /// order, each with its first spend: what a prefix query reads.
    async fn spent_between(
        &self,
        low: &Nullifier,
        high: &Nullifier,
        limit: u32,
    ) -> Result<Vec<(Nullifier, FirstSpend)>, StoreError>;

    /// Per-key and per-issuer totals, in canonical order.
    async fn totals(&self) -> Result<Totals, StoreError>;

    /// Drops the spent set of a key and appends the pruning record that `record` builds from
    /// the dropped nullifiers (in ascending order), in one transaction. `None` if the key had
    /// nothing left to drop.
    async fn prune(
        &self,
        token_key_id: &TokenKeyId,
        record: &PruneRecordFn<'_>,
    ) -> Result<Option<LogEntry>, StoreError>;

    /// Stores an operator's cosignature of the checkpoint at `seq` (idempotent).
    async fn add_cosignature(
        &self,
        seq: u64,
        cosignature: &Signed<scrip_spec::ledger::Cosignature>,
    ) -> Result<(), StoreError>;

    /// The cosignatures of the checkpoint at `seq`.
    async fn cosignatures(
        &self,
        seq: u64,
    ) -> Result<Vec<Signed<scrip_spec::ledger::Cosignature>>, StoreError>;

    /// The latest checkpoint entry, if any.
    async fn latest_checkpoint(&self) -> Result<Option<LogEntry>, StoreError>;

    /// Bytes the database uses (for the storage figures).
    async fn size_bytes(&self) -> Result<u64, StoreError>;

    /// Whether the database takes writes now, for `/healthz`: a full disk or a read-only
    /// database fails it.
    async fn write_probe(&self) -> Result<(), StoreError>;

    /// Records, durably, that this committee node is about to take part in consensus session
    /// `session` (before it signs any unit of it).
    async fn set_consensus_session(&self, session: u64) -> Result<(), StoreError>;

    /// The last session [`Store::set_consensus_session`] recorded.
    async fn consensus_session(&self) -> Result<Option<u64>, StoreError>;
}

/// Opens the store a URL names (`sqlite://PATH` or `postgres://…`) and runs its migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl {
            url: url.split('@').next_back().unwrap_or_default().to_owned(),
        })
    }
}

/// Opens a ledger database for reading only (no migrations): an auditor's replica.
pub async fn connect_read_only(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open_read_only(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::open_read_only(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl {
            url: url.split('@').next_back().unwrap_or_default().to_owned(),
        })
    }
}

/// Decodes an entry body read back from the database.
pub(crate) fn decode_entry(bytes: &[u8], seq: u64) -> Result<LogEntry, StoreError> {
    scrip_spec::encoding::from_canonical_bytes(bytes).map_err(|_| StoreError::Corrupt {
        what: format!("log entry {seq}"),
    })
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt { what: what.into() })
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Our own plain data types always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

pub(crate) fn array32(bytes: &[u8], what: &str) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt { what: what.into() })
}

/// Numbers are `u64` in the protocol and `BIGINT` in the databases; values beyond `i64::MAX`
/// never occur (counts and Unix seconds), and are clamped rather than wrapped if they did.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The digest that makes a request unique in the log: `SHA-256(signer || signing message)`.
/// A replayed request has the same digest and is refused by the database's unique index.
pub(crate) fn request_digest(entry: &LogEntry) -> Option<[u8; 32]> {
    match &entry.body {
        scrip_spec::ledger::EntryBody::Request(r) => Some(signed_request_digest(r)),
        _ => None,
    }
}

/// [`request_digest`] of a signed request.
pub fn signed_request_digest(r: &Signed<scrip_spec::ledger::LedgerRequest>) -> [u8; 32] {
    scrip_spec::ledger::request_digest(r)
}
