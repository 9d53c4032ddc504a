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
                //
                // Only a connection that still counts itself inside a transaction can be one
                // (sqlx counts a transaction's end when SQLite's thread has run it): the others,
                // after every plain query, go back without a round trip to that thread, which
                // cost 4% of the redemption path's CPU (BENCHMARKS.md).
                if !sqlx::Connection::is_in_transaction(conn) {
                    return Ok(true);
                }
                sqlx::Connection::ping(conn).await?;
                Ok(!sqlx::Connection::is_in_transaction(conn))
            })
        })
        .connect_with(options)
        .await
}

/// Bytes the write probe puts on disk: more than a page, so an allocation is needed.
const PROBE_BYTES: usize = 64 * 1024;

/// Whether the database takes writes now, for `/healthz`: a write transaction on it, then a
/// file of 64 KiB written, synced and removed in the database's directory.
///
/// The file is the part that finds a full disk: SQLite rewrites its WAL in place after a
/// checkpoint, so a small write transaction can still succeed while every write that needs a
/// new block (a growing table, the checkpoint into the main file) fails.
pub async fn write_probe(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let file: Option<String> =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    // An in-memory database has no file (and no disk to fill).
    let Some(file) = file.filter(|f| !f.is_empty()) else {
        return Ok(());
    };
    let dir = std::path::Path::new(&file)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    tokio::task::spawn_blocking(move || probe_dir(&dir))
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
        .map_err(sqlx::Error::Io)
}

/// Numbers the probes of this process, so concurrent health checks never share a file.
static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn probe_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".scrip-write-probe-{}-{n}", std::process::id()));
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&[0u8; PROBE_BYTES])?;
        f.sync_all()
    });
    let removed = match std::fs::remove_file(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        removed => removed,
    };
    written?;
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr as _;

    /// Runs the futures concurrently on the runtime and collects their outputs.
    async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let tasks: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    }

    #[tokio::test]
    async fn the_probe_writes_beside_the_database_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("probe.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .expect("url")
            .create_if_missing(true);
        let pool = durable_pool(options, false).await.expect("pool");
        write_probe(&pool)
            .await
            .expect("a writable directory passes");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("probe-"))
            .collect();
        assert!(left.is_empty(), "the probe file is removed");
        // Concurrent probes (two health checkers) each pass: they used to share one file.
        let probes = (0..20).map(|_| {
            let pool = pool.clone();
            async move { write_probe(&pool).await }
        });
        for probe in futures_join(probes).await {
            probe.expect("concurrent probes pass");
        }
        // A directory that refuses new files (as a full disk does) fails the probe.
        let probe = probe_dir(&dir.path().join("no-such-directory"));
        assert!(probe.is_err());
    }
}
