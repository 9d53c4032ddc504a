//! The embedded default: one SQLite file in WAL mode, fsync on every commit.

use super::StoreError;
use super::sql::{Backend, SqlStore};
use async_trait::async_trait;
use scrip_common::pool::durable_pool;
use scrip_spec::Nullifier;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use std::str::FromStr as _;

/// A ledger store in a SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

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

/// Rows per multi-row insert: 3 parameters each, well under SQLite's 32,766-parameter limit.
const INSERT_CHUNK: usize = 500;

#[async_trait]
impl Backend for Sqlite {
    // BEGIN IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
    // instead of failing when a reader upgrades to a writer.
    async fn begin_write(
        pool: &SqlitePool,
    ) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    const SPENT_IN_RANGE: &'static str = "SELECT nullifier, key_no, seq FROM spent \
         WHERE nullifier >= $1 AND nullifier <= $2 ORDER BY nullifier LIMIT $3";

    const SPENT_TABLES: &'static [&'static str] = &["spent"];

    // Multi-row inserts: one statement per chunk instead of one per nullifier (SQLite has no
    // array parameter). RETURNING lists only the rows this statement inserted.
    async fn insert_spent(
        conn: &mut SqliteConnection,
        nullifiers: &[Nullifier],
        key_no: i64,
        seq: i64,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        let mut inserted = Vec::new();
        for chunk in nullifiers.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO spent (nullifier, key_no, seq) VALUES {} \
                 ON CONFLICT (nullifier) DO NOTHING RETURNING nullifier",
                vec!["(?, ?, ?)"; chunk.len()].join(", ")
            );
            let mut query = sqlx::query_scalar::<_, Vec<u8>>(&sql);
            for n in chunk {
                query = query.bind(&n.0[..]).bind(key_no).bind(seq);
            }
            inserted.extend(query.fetch_all(&mut *conn).await?);
        }
        Ok(inserted)
    }

    async fn size_bytes(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(pool)
        .await
    }

    async fn write_probe(pool: &SqlitePool) -> Result<(), sqlx::Error> {
        scrip_common::pool::write_probe(pool).await
    }
}
