//! The consortium deployment: PostgreSQL, one schema per ledger.

use super::StoreError;
use super::sql::{Backend, SqlStore};
use async_trait::async_trait;
use scrip_spec::Nullifier;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};
use std::collections::HashSet;
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

    // The spent set is keyed by the nullifier's first 8 bytes (`head`, migration 0003), and
    // the rare nullifier whose head is taken lives in `spent_clash`. Within `spent` the head
    // is unique, so head order is nullifier order and the index serves the range and the limit.
    const SPENT_IN_RANGE: &'static str = "(SELECT nullifier, key_no, seq FROM spent \
         WHERE head >= nullifier_head($1) AND head <= nullifier_head($2) \
         AND nullifier >= $1 AND nullifier <= $2 ORDER BY head LIMIT $3) \
         UNION ALL (SELECT nullifier, key_no, seq FROM spent_clash \
         WHERE nullifier >= $1 AND nullifier <= $2 ORDER BY nullifier LIMIT $3)";

    const SPENT_TABLES: &'static [&'static str] = &["spent", "spent_clash"];

    // One statement per group, the nullifiers as one array parameter; a second only when some
    // were not inserted, to tell a spent nullifier from one whose head is taken. The first
    // skips what `spent_clash` holds: once the nullifier that took a head is pruned with its
    // key, the head is free, but a clash spent under another key is still spent.
    async fn insert_spent(
        conn: &mut PgConnection,
        nullifiers: &[Nullifier],
        key_no: i64,
        seq: i64,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        let all: Vec<&[u8]> = nullifiers.iter().map(|n| &n.0[..]).collect();
        let mut inserted = insert_returning(
            conn,
            "INSERT INTO spent (head, nullifier, key_no, seq) \
             SELECT nullifier_head(n), n, $2, $3 FROM UNNEST($1::bytea[]) AS t(n) \
             WHERE NOT EXISTS (SELECT 1 FROM spent_clash c WHERE c.nullifier = t.n) \
             ON CONFLICT (head) DO NOTHING RETURNING nullifier",
            &all,
            key_no,
            seq,
        )
        .await?;
        if inserted.len() < all.len() {
            let taken: HashSet<&[u8]> = inserted.iter().map(Vec::as_slice).collect();
            let rest: Vec<&[u8]> = all.into_iter().filter(|n| !taken.contains(n)).collect();
            let clashes = insert_returning(
                conn,
                "INSERT INTO spent_clash (nullifier, key_no, seq) \
                 SELECT n, $2, $3 FROM UNNEST($1::bytea[]) AS t(n) \
                 WHERE NOT EXISTS (SELECT 1 FROM spent s \
                                   WHERE s.head = nullifier_head(t.n) AND s.nullifier = t.n) \
                 ON CONFLICT (nullifier) DO NOTHING RETURNING nullifier",
                &rest,
                key_no,
                seq,
            )
            .await?;
            inserted.extend(clashes);
        }
        Ok(inserted)
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

/// Runs one of the spent set's inserts (`$1` the nullifiers, `$2` the key, `$3` the entry) and
/// returns the nullifiers it inserted.
async fn insert_returning(
    conn: &mut PgConnection,
    sql: &str,
    nullifiers: &[&[u8]],
    key_no: i64,
    seq: i64,
) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(sql)
        .bind(nullifiers)
        .bind(key_no)
        .bind(seq)
        .fetch_all(conn)
        .await
}
