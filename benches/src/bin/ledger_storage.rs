//! How the ledger grows: bytes on disk per spent token and spend throughput as the spent set
//! grows (a row at 10^5, 10^6, 10^7 ... spent tokens), then the time to replay and verify the
//! whole log as `scrip audit` does.
//!
//! `cargo run --release -p scrip-benches --bin ledger_storage -- [TOKENS] [--batch N]
//! [--backend sqlite|postgres]` (default 200,000 tokens in batches of 1,000, on SQLite and, with
//! SCRIP_TEST_PG_URL, PostgreSQL).

use scrip_benches::{Backend, BenchLedger};
use scrip_ledger::audit::{Auditor, Period};
use std::time::Instant;

struct Args {
    tokens: u64,
    batch: u64,
    backends: Vec<Backend>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        tokens: 200_000,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    for backend in &args.backends {
        let bench = BenchLedger::new(*backend).await?;
        let store = bench.ledger.store().clone();
        let before = store.size_bytes().await?;
        println!(
            "{}: {} tokens in batches of {}",
            backend.name(),
            args.tokens,
            args.batch
        );
        println!("  spent_tokens  bytes_per_token  segment_tokens_per_s");
        let (mut spent, mut milestone) = (0u64, 100_000u64.min(args.tokens));
        let (mut segment_start, mut segment_spent) = (Instant::now(), 0u64);
        let started = Instant::now();
        while spent < args.tokens {
            let n = args.batch.min(args.tokens - spent);
            bench.ledger.submit(bench.spend_request(n as usize)).await?;
            spent += n;
            if spent >= milestone {
                if *backend == Backend::Postgres {
                    // Let PostgreSQL's statistics see the new rows before measuring sizes.
                    let _ = store.totals().await?;
                }
                let bytes = store.size_bytes().await?.saturating_sub(before);
                println!(
                    "  {:>12}  {:>15.1}  {:>20.0}",
                    spent,
                    bytes as f64 / spent as f64,
                    (spent - segment_spent) as f64 / segment_start.elapsed().as_secs_f64()
                );
                (segment_start, segment_spent) = (Instant::now(), spent);
                milestone = (milestone * 10).min(args.tokens.max(milestone + 1));
            }
        }
        let spend_secs = started.elapsed().as_secs_f64();
        println!(
            "  all: {:.1} s, {:.0} tokens/s",
            spend_secs,
            spent as f64 / spend_secs
        );

        // The audit's replay, as `scrip audit --database` does it: page through the log and
        // verify every signature, hash link and rule, keeping every nullifier seen.
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
        let report = auditor.report(Period::all());
        let audit_secs = started.elapsed().as_secs_f64();
        let audited: u64 = report.totals.keys.iter().map(|k| k.spent).sum();
        anyhow::ensure!(audited == spent, "the audit counted {audited} spends");
        println!(
            "  audit replay: {} entries, {audited} spends verified in {audit_secs:.1} s ({:.0} spends/s)",
            report.entries,
            audited as f64 / audit_secs
        );
    }
    Ok(())
}
