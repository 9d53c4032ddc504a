//! The durable SQLite pool every local scrip store (ledger, issuer, redeemer, wallet) opens.

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
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
