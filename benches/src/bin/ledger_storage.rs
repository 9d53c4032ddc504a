//! Bytes on disk per spent token, and how the spent set shrinks when a key is pruned.
//!
//! `cargo run --release -p scrip-benches --bin ledger_storage -- [TOKENS]` (default 200,000;
//! PostgreSQL too with SCRIP_TEST_PG_URL). Spends go in batches of 1,000.

use scrip_benches::{Backend, BenchLedger};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tokens: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    println!("backend   tokens  bytes_before  bytes_after  bytes_per_token  seconds  tokens_per_s");
    for backend in Backend::available() {
        let bench = BenchLedger::new(backend).await?;
        let store = bench.ledger.store().clone();
        let before = store.size_bytes().await?;
        let start = std::time::Instant::now();
        let mut left = tokens;
        while left > 0 {
            let n = left.min(1000);
            bench.ledger.submit(bench.spend_request(n)).await?;
            left -= n;
        }
        let secs = start.elapsed().as_secs_f64();
        if backend == Backend::Postgres {
            // Let PostgreSQL's statistics see the new rows before measuring relation sizes.
            let _ = store.totals().await?;
        }
        let after = store.size_bytes().await?;
        println!(
            "{:<8} {:>7}  {:>12}  {:>11}  {:>15.1}  {:>7.2}  {:>12.0}",
            backend.name(),
            tokens,
            before,
            after,
            (after - before) as f64 / tokens as f64,
            secs,
            tokens as f64 / secs
        );
    }
    Ok(())
}
