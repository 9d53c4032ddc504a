//! The consortium deployment: PostgreSQL, one schema per ledger.

use super::StoreError;
use super::sql::{Backend, SqlStore};
use async_trait::async_trait;
use scrip_spec::Nullifier;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};
use std::str::FromStr as _;

/// A ledger store in PostgreSQL.
pub type PostgresStore = SqlStore<Postgres>;

impl PostgresStore {
    /// Connects without migrating (a read-only replica, as an auditor keeps one).
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        Ok(Self { pool })
    }

    /// Connects to `url` (a `search_path` in its `options` selects the schema) and runs the
    /// migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Backend for Postgres {
    async fn begin_write(pool: &PgPool) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error> {
        pool.begin().await
    }

    // One statement per group, the nullifiers as one array parameter.
    async fn insert_spent(
        conn: &mut PgConnection,
        nullifiers: &[Nullifier],
        key_no: i64,
        seq: i64,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        let all: Vec<&[u8]> = nullifiers.iter().map(|n| &n.0[..]).collect();
        sqlx::query_scalar(
            "INSERT INTO spent (nullifier, key_no, seq) \
             SELECT n, $2, $3 FROM UNNEST($1::bytea[]) AS t(n) \
             ON CONFLICT (nullifier) DO NOTHING RETURNING nullifier",
        )
        .bind(&all)
        .bind(key_no)
        .bind(seq)
        .fetch_all(conn)
        .await
    }

    // The tables of the store's schema, with their indexes and TOAST.
    async fn size_bytes(pool: &PgPool) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r'",
        )
        .fetch_one(pool)
        .await
    }

    async fn write_probe(pool: &PgPool) -> Result<(), sqlx::Error> {
        // Assigning a transaction id fails on a read-only server (a standby, a database out of
        // space set read-only) and needs the WAL to take its commit record.
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}
