//! The embedded default: one SQLite file in WAL mode, fsync on every commit.

use super::{
    AppendOutcome, Effect, FirstSpend, KeyRecord, PruneRecordFn, Snapshot, Store, StoreError,
    array32, decode_entry, decode_json, request_digest, to_i64, to_json, to_u64,
};
use async_trait::async_trait;
use scrip_spec::encoding::canonical_bytes;
use scrip_spec::ledger::{
    Cosignature, Genesis, Hash32, IssuerTotals, KeyTotals, LogEntry, OperatorInfo, Totals,
};
use scrip_spec::{Catalog, Nullifier, OperatorId, Signed, TokenKeyId, TokenKeyInfo};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};
use std::str::FromStr as _;
use std::time::Duration;

/// A pool on a SQLite file set up the way every scrip service keeps its data: WAL, writers wait
/// for each other instead of failing, foreign keys enforced. With `fsync_each_commit` a commit
/// is on disk before it is acknowledged (synchronous=FULL); without, WAL's NORMAL level, which
/// survives a killed process but may lose the last commits to a power cut.
///
/// Each connection caches up to 64 MiB of pages (SQLite's default is 2 MiB): the spent set's
/// random keys touch pages all over its B-tree, and the larger cache took a million spends in
/// batches of 10,000 from 27,000/s to 38,600/s; 256 MiB gained nothing more (BENCHMARKS.md).
pub async fn durable_pool(
    options: SqliteConnectOptions,
    fsync_each_commit: bool,
) -> Result<SqlitePool, sqlx::Error> {
    let synchronous = if fsync_each_commit {
        SqliteSynchronous::Full
    } else {
        SqliteSynchronous::Normal
    };
    let options = options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("cache_size", "-65536");
    SqlitePoolOptions::new()
        .max_connections(4)
        .after_release(|conn, _| {
            Box::pin(async move {
                // A connection still inside a transaction once the pending rollback has run is
                // one whose rollback failed: SQLite had already rolled back by itself (disk
                // full, I/O error), and sqlx would fail every later transaction on it until a
                // restart (found by `tests/storage_faults.rs`). Close it instead.
                sqlx::Connection::ping(conn).await?;
                Ok(!sqlx::Connection::is_in_transaction(conn))
            })
        })
        .connect_with(options)
        .await
}

/// A ledger store in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens an existing database read-only (an auditor's copy): no migration, no write.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?.read_only(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Opens (creating if needed) the database at `url` and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = durable_pool(
            SqliteConnectOptions::from_str(url)?.create_if_missing(true),
            true,
        )
        .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

/// Rows per multi-row insert: 3 parameters each, well under SQLite's 32,766-parameter limit.
const INSERT_CHUNK: usize = 500;

async fn first_spend(
    tx: &mut sqlx::SqliteConnection,
    nullifier: &Nullifier,
) -> Result<Option<FirstSpend>, StoreError> {
    let row = sqlx::query(
        "SELECT s.seq, e.recorded_at, e.signer FROM spent s JOIN entries e ON e.seq = s.seq \
         WHERE s.nullifier = ?",
    )
    .bind(&nullifier.0[..])
    .fetch_optional(tx)
    .await?;
    row.map(|row| {
        let signer: Vec<u8> = row.get(2);
        Ok(FirstSpend {
            seq: to_u64(row.get(0)),
            spent_at: to_u64(row.get(1)),
            operator: OperatorId(array32(&signer, "spend signer")?),
        })
    })
    .transpose()
}

async fn key_no(tx: &mut Tx<'_>, key: &TokenKeyId) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT key_no FROM token_keys WHERE key_id = ?")
        .bind(&key.0[..])
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt {
            what: format!("key {key} is not in the key table"),
        })
}

async fn insert_entry(tx: &mut Tx<'_>, entry: &LogEntry, hash: &Hash32) -> Result<(), StoreError> {
    let signer = match &entry.body {
        scrip_spec::ledger::EntryBody::Request(r) => Some(r.signer.0.to_vec()),
        _ => None,
    };
    let result = sqlx::query(
        "INSERT INTO entries (seq, hash, kind, signer, request_digest, recorded_at, body) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(to_i64(entry.seq))
    .bind(&hash.0[..])
    .bind(entry.body.kind_name())
    .bind(signer)
    .bind(request_digest(entry).map(|d| d.to_vec()))
    .bind(to_i64(entry.recorded_at))
    .bind(canonical_bytes(entry))
    .execute(&mut **tx)
    .await;
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::SeqTaken { seq: entry.seq })
        }
        other => other.map(|_| ()).map_err(StoreError::from),
    }
}

async fn insert_operator(tx: &mut Tx<'_>, op: &OperatorInfo, seq: u64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO operators (id, name, info, admitted_seq) VALUES (?, ?, ?, ?)")
        .bind(&op.id.0[..])
        .bind(&op.name)
        .bind(to_json(op))
        .bind(to_i64(seq))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn set_meta(tx: &mut Tx<'_>, name: &str, value: String) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta (name, value) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// Write transactions start with BEGIN IMMEDIATE: they take the write lock up front, so two
// writers queue on busy_timeout instead of failing when a reader upgrades to a writer.
#[async_trait]
impl Store for SqliteStore {
    async fn append(
        &self,
        entry: &LogEntry,
        hash: &Hash32,
        effect: &Effect,
    ) -> Result<AppendOutcome, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(digest) = request_digest(entry) {
            let seen: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM entries WHERE request_digest = ?")
                    .bind(&digest[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            if seen.is_some() {
                return Err(StoreError::Replayed);
            }
        }
        let mut already_spent = Vec::new();
        match effect {
            Effect::Spend { groups } => {
                let mut accepted = 0u64;
                for group in groups {
                    let key_no = key_no(&mut tx, &group.token_key_id).await?;
                    let mut in_group = 0i64;
                    // Multi-row inserts: one statement per chunk instead of one per nullifier.
                    // RETURNING lists only the rows this transaction inserted.
                    for chunk in group.nullifiers.chunks(INSERT_CHUNK) {
                        let sql = format!(
                            "INSERT INTO spent (nullifier, key_no, seq) VALUES {} \
                             ON CONFLICT (nullifier) DO NOTHING RETURNING nullifier",
                            vec!["(?, ?, ?)"; chunk.len()].join(", ")
                        );
                        let mut query = sqlx::query_scalar::<_, Vec<u8>>(&sql);
                        for n in chunk {
                            query = query.bind(&n.0[..]).bind(key_no).bind(to_i64(entry.seq));
                        }
                        let inserted: Vec<Vec<u8>> = query.fetch_all(&mut *tx).await?;
                        in_group += i64::try_from(inserted.len()).unwrap_or(i64::MAX);
                        if inserted.len() < chunk.len() {
                            let inserted: std::collections::HashSet<Vec<u8>> =
                                inserted.into_iter().collect();
                            for n in chunk {
                                if !inserted.contains(&n.0[..])
                                    && let Some(first) = first_spend(&mut tx, n).await?
                                {
                                    already_spent.push((*n, first));
                                }
                            }
                        }
                    }
                    sqlx::query("UPDATE token_keys SET spent = spent + ? WHERE key_no = ?")
                        .bind(in_group)
                        .bind(key_no)
                        .execute(&mut *tx)
                        .await?;
                    accepted += to_u64(in_group);
                }
                if accepted == 0 {
                    tx.rollback().await?;
                    return Ok(AppendOutcome::NothingToSpend { already_spent });
                }
            }
            Effect::Genesis(genesis) => {
                for op in &genesis.operators {
                    insert_operator(&mut tx, op, entry.seq).await?;
                }
                set_meta(&mut tx, "genesis", to_json(genesis)).await?;
                set_meta(&mut tx, "catalog", to_json(&genesis.catalog)).await?;
            }
            Effect::AdmitOperator(op) => insert_operator(&mut tx, op, entry.seq).await?,
            Effect::SetCatalog(catalog) => set_meta(&mut tx, "catalog", to_json(catalog)).await?,
            Effect::AnnounceKey(info) => {
                sqlx::query(
                    "INSERT INTO token_keys (key_id, issuer, kind, info, announced_seq) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&info.public_key.id().0[..])
                .bind(&info.issuer)
                .bind(info.kind.as_str())
                .bind(to_json(info))
                .bind(to_i64(entry.seq))
                .execute(&mut *tx)
                .await?;
            }
            Effect::RevokeKey(key) => {
                sqlx::query("UPDATE token_keys SET revoked_seq = ? WHERE key_id = ?")
                    .bind(to_i64(entry.seq))
                    .bind(&key.0[..])
                    .execute(&mut *tx)
                    .await?;
            }
            Effect::CardsSold {
                issuer,
                count,
                credits,
            } => {
                sqlx::query(
                    "INSERT INTO issuer_totals (issuer, cards_sold, credits_sold) VALUES (?, ?, ?) \
                     ON CONFLICT (issuer) DO UPDATE SET cards_sold = cards_sold + excluded.cards_sold, \
                     credits_sold = credits_sold + excluded.credits_sold",
                )
                .bind(issuer)
                .bind(to_i64(*count))
                .bind(to_i64(*credits))
                .execute(&mut *tx)
                .await?;
            }
            Effect::TokensIssued {
                token_key_id,
                count,
            } => {
                sqlx::query("UPDATE token_keys SET issued = issued + ? WHERE key_id = ?")
                    .bind(to_i64(*count))
                    .bind(&token_key_id.0[..])
                    .execute(&mut *tx)
                    .await?;
            }
            Effect::None | Effect::Pruned => {}
        }
        insert_entry(&mut tx, entry, hash).await?;
        tx.commit().await?;
        Ok(AppendOutcome::Appended { already_spent })
    }

    async fn request_seq(&self, digest: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM entries WHERE request_digest = ?")
                .bind(&digest[..])
                .fetch_optional(&self.pool)
                .await?;
        Ok(seq.map(to_u64))
    }

    async fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let Some(genesis): Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'genesis'")
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let genesis: Genesis = decode_json(&genesis, "genesis")?;
        let catalog: String = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'catalog'")
            .fetch_one(&self.pool)
            .await?;
        let catalog: Catalog = decode_json(&catalog, "catalog")?;
        let operators = sqlx::query_scalar::<_, String>(
            "SELECT info FROM operators ORDER BY admitted_seq, name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|s| decode_json(s, "operator"))
        .collect::<Result<Vec<OperatorInfo>, _>>()?;
        let keys = sqlx::query(
            "SELECT info, announced_seq, revoked_seq IS NOT NULL, issued, spent, pruned \
             FROM token_keys ORDER BY key_no",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(KeyRecord {
                info: decode_json::<TokenKeyInfo>(row.get(0), "token key")?,
                announced_seq: to_u64(row.get(1)),
                revoked: row.get(2),
                issued: to_u64(row.get(3)),
                spent: to_u64(row.get(4)),
                pruned: to_u64(row.get(5)),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let head = sqlx::query("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
            .fetch_one(&self.pool)
            .await?;
        let hash: Vec<u8> = head.get(1);
        Ok(Some(Snapshot {
            genesis,
            operators,
            catalog,
            keys,
            head: (to_u64(head.get(0)), Hash32(array32(&hash, "head hash")?)),
        }))
    }

    async fn entries(&self, from: u64, limit: u32) -> Result<Vec<LogEntry>, StoreError> {
        sqlx::query("SELECT seq, body FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?")
            .bind(to_i64(from))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| decode_entry(row.get(1), to_u64(row.get(0))))
            .collect()
    }

    async fn nullifier(&self, nullifier: &Nullifier) -> Result<Option<FirstSpend>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        first_spend(&mut conn, nullifier).await
    }

    async fn totals(&self) -> Result<Totals, StoreError> {
        let keys = sqlx::query(
            "SELECT key_id, issuer, kind, issued, spent, pruned FROM token_keys ORDER BY key_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let id: Vec<u8> = row.get(0);
            let kind: String = row.get(2);
            Ok(KeyTotals {
                token_key_id: TokenKeyId(array32(&id, "key id")?),
                issuer: row.get(1),
                kind: kind.parse().map_err(|_| StoreError::Corrupt {
                    what: "key kind".into(),
                })?,
                issued: to_u64(row.get(3)),
                spent: to_u64(row.get(4)),
                pruned: to_u64(row.get(5)),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let issuers = sqlx::query(
            "SELECT issuer, cards_sold, credits_sold FROM issuer_totals ORDER BY issuer",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| IssuerTotals {
            issuer: row.get(0),
            cards_sold: to_u64(row.get(1)),
            credits_sold: to_u64(row.get(2)),
        })
        .collect();
        Ok(Totals { keys, issuers })
    }

    async fn prune(
        &self,
        token_key_id: &TokenKeyId,
        record: &PruneRecordFn<'_>,
    ) -> Result<Option<LogEntry>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let key_no = key_no(&mut tx, token_key_id).await?;
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT nullifier FROM spent WHERE key_no = ? ORDER BY nullifier")
                .bind(key_no)
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let nullifiers = rows
            .iter()
            .map(|b| array32(b, "nullifier").map(Nullifier))
            .collect::<Result<Vec<_>, _>>()?;
        let (entry, hash) = record(&nullifiers);
        sqlx::query("DELETE FROM spent WHERE key_no = ?")
            .bind(key_no)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE token_keys SET pruned = pruned + ? WHERE key_no = ?")
            .bind(i64::try_from(nullifiers.len()).unwrap_or(i64::MAX))
            .bind(key_no)
            .execute(&mut *tx)
            .await?;
        insert_entry(&mut tx, &entry, &hash).await?;
        tx.commit().await?;
        Ok(Some(entry))
    }

    async fn add_cosignature(
        &self,
        seq: u64,
        cosignature: &Signed<Cosignature>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cosignatures (checkpoint_seq, operator, body) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(to_i64(seq))
        .bind(&cosignature.signer.0[..])
        .bind(to_json(cosignature))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn cosignatures(&self, seq: u64) -> Result<Vec<Signed<Cosignature>>, StoreError> {
        sqlx::query_scalar::<_, String>(
            "SELECT body FROM cosignatures WHERE checkpoint_seq = ? ORDER BY operator",
        )
        .bind(to_i64(seq))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|s| decode_json(s, "cosignature"))
        .collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<LogEntry>, StoreError> {
        sqlx::query(
            "SELECT seq, body FROM entries WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|row| decode_entry(row.get(1), to_u64(row.get(0))))
        .transpose()
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&self.pool)
            .await?;
        let size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(pages * size))
    }
}
