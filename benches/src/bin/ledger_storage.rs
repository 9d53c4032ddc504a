//! How the ledger grows: bytes on disk per spent token, in the spent set (table `spent` with its
//! indexes, and on PostgreSQL `spent_clash`) and in the token archive (table `entries`, whose
//! entry bodies hold the spent tokens), and spend throughput as the spent set grows (a row at
//! 10^4, 10^5, ... spent tokens and at the end), then the time to replay and verify the whole
//! log, every token included, as `scrip audit` does.
//!
//! `cargo run --release -p scrip-benches --bin ledger_storage -- [TOKENS] [--batch N]
//! [--backend sqlite|postgres]` (default 20,000 tokens in batches of 1,000, on SQLite and, with
//! SCRIP_TEST_PG_URL, PostgreSQL).
//!
//! Sizes are taken from the database, less those of the fresh ledger (genesis and one key
//! announced, no spend): SQLite's `dbstat` table (the pages of each table and of its indexes,
//! overflow pages included), PostgreSQL's `pg_total_relation_size` (heap, indexes and TOAST).
//! The tokens are minted before each batch's clock starts: the throughput is the ledger's.

use scrip_benches::{Backend, BenchLedger};
use scrip_ledger::audit::{Auditor, Period, ReportOptions};
use std::time::{Duration, Instant};

struct Args {
    tokens: u64,
    batch: u64,
    backends: Vec<Backend>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        tokens: 20_000,
        batch: 1000,
        backends: Backend::available(),
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .ok_or_else(|| anyhow::anyhow!("{word} needs a value"))
        };
        match word.as_str() {
            "--batch" => args.batch = value()?.parse()?,
            "--backend" => {
                let name = value()?;
                args.backends.retain(|b| b.name() == name);
                anyhow::ensure!(
                    !args.backends.is_empty(),
                    "backend {name} is not available (postgres needs SCRIP_TEST_PG_URL)"
                );
            }
            number => args.tokens = number.parse()?,
        }
    }
    anyhow::ensure!(
        (1..=scrip_spec::ledger::MAX_SPEND_BATCH as u64).contains(&args.batch),
        "--batch must be 1 to {}",
        scrip_spec::ledger::MAX_SPEND_BATCH
    );
    Ok(args)
}

/// Bytes of one table with its indexes (and, on PostgreSQL, its TOAST), read from the database.
enum TableSizes {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl TableSizes {
    async fn connect(backend: Backend, url: &str) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(url).await?;
                sqlx::query("SELECT count(*) FROM dbstat")
                    .execute(&pool)
                    .await
                    .map_err(|e| anyhow::anyhow!("SQLite has no dbstat table here: {e}"))?;
                Self::Sqlite(pool)
            }
            Backend::Postgres => Self::Postgres(sqlx::PgPool::connect(url).await?),
        })
    }

    async fn bytes(&self, table: &str) -> anyhow::Result<u64> {
        let bytes: i64 = match self {
            // Every page of the table's B-tree, its overflow pages and its indexes' B-trees.
            Self::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(pgsize), 0) AS INTEGER) FROM dbstat \
                     WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = ?1)",
                )
                .bind(table)
                .fetch_one(pool)
                .await?
            }
            // The schema is first on the connection's search_path.
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
                    .bind(table)
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(u64::try_from(bytes)?)
    }

    /// (spent set, token archive) in bytes. PostgreSQL keeps nullifiers whose first 8 bytes
    /// clash with a spent one's in a table of their own.
    async fn measure(&self) -> anyhow::Result<(u64, u64)> {
        let mut spent = self.bytes("spent").await?;
        if matches!(self, Self::Postgres(_)) {
            spent += self.bytes("spent_clash").await?;
        }
        Ok((spent, self.bytes("entries").await?))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    for backend in &args.backends {
        let bench = BenchLedger::new(*backend).await?;
        let store = bench.ledger.store().clone();
        let sizes = TableSizes::connect(*backend, &bench._db.url).await?;
        let before = store.size_bytes().await?;
        let (spent_before, archive_before) = sizes.measure().await?;
        println!(
            "{}: {} tokens in batches of {} (baseline: spent set {} B, archive {} B, database {} B)",
            backend.name(),
            args.tokens,
            args.batch,
            spent_before,
            archive_before,
            before
        );
        println!(
            "  spent_tokens  spent_set_B_per_token  archive_B_per_token  database_B_per_token  segment_tokens_per_s"
        );
        let (mut spent, mut milestone) = (0u64, 10_000u64.min(args.tokens));
        let (mut segment_time, mut segment_spent) = (Duration::ZERO, 0u64);
        let mut spend_time = Duration::ZERO;
        while spent < args.tokens {
            let n = args.batch.min(args.tokens - spent);
            // Minting and signing are not the ledger's work: only the submission is timed.
            let request = bench.spend_request(n as usize);
            let started = Instant::now();
            bench.ledger.submit(request).await?;
            let took = started.elapsed();
            (segment_time, spend_time) = (segment_time + took, spend_time + took);
            spent += n;
            if spent >= milestone {
                if *backend == Backend::Postgres {
                    // Let PostgreSQL's statistics see the new rows before measuring sizes.
                    let _ = store.totals().await?;
                }
                let bytes = store.size_bytes().await?.saturating_sub(before);
                let (spent_set, archive) = sizes.measure().await?;
                let per_token = |b: u64| b as f64 / spent as f64;
                println!(
                    "  {:>12}  {:>21.1}  {:>19.1}  {:>20.1}  {:>20.0}",
                    spent,
                    per_token(spent_set.saturating_sub(spent_before)),
                    per_token(archive.saturating_sub(archive_before)),
                    per_token(bytes),
                    (spent - segment_spent) as f64 / segment_time.as_secs_f64()
                );
                (segment_time, segment_spent) = (Duration::ZERO, spent);
                milestone = (milestone * 10).min(args.tokens.max(milestone + 1));
            }
        }
        let spend_secs = spend_time.as_secs_f64();
        println!(
            "  all: {:.1} s in the ledger, {:.0} tokens/s",
            spend_secs,
            spent as f64 / spend_secs
        );

        // The audit's replay, as `scrip audit --database` does it: page through the log and
        // verify every signature (each token's included), hash link and rule, keeping every
        // nullifier seen.
        let started = Instant::now();
        let mut auditor = Auditor::default();
        loop {
            let page = store
                .entries(
                    auditor.next_seq(),
                    scrip_spec::api::ledger::MAX_LOG_PAGE,
                    scrip_spec::api::ledger::MAX_LOG_PAGE_BYTES,
                )
                .await?;
            if page.is_empty() {
                break;
            }
            for entry in &page {
                auditor
                    .feed(entry)
                    .map_err(|t| anyhow::anyhow!("the log does not verify: {t}"))?;
            }
        }
        let report = auditor.report(&ReportOptions::new(Period::all()));
        let audit_secs = started.elapsed().as_secs_f64();
        let audited: u64 = report.totals.keys.iter().map(|k| k.spent).sum();
        anyhow::ensure!(audited == spent, "the audit counted {audited} spends");
        println!(
            "  audit replay: {} entries, {audited} spends verified in {audit_secs:.1} s ({:.0} spends/s)",
            report.entries,
            audited as f64 / audit_secs
        );
        drop(sizes);
        bench.drop_now().await;
    }
    Ok(())
}
