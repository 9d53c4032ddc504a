//! `scrip bench`: the load generator. It runs a consortium on loopback and drives the issuer
//! (card opening over HTTP) and the redeemer sidecar (redemptions over HTTP, with a durable
//! ledger spend behind each) at a chosen concurrency, and measures the in-process crypto rate
//! in the same run, so every figure is also a ratio.

use anyhow::Context as _;
use clap::Args;
use scrip::consortium::Consortium;
use scrip_client::Wallet;
use scrip_redeemer::Mode;
use scrip_spec::{CapacityKind, Token, TokenChallenge, WalletSeed};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tokens to issue and then redeem.
    #[arg(long, default_value_t = 4000)]
    tokens: u64,
    /// Tokens per opening request (the issuer accepts up to 1,000).
    #[arg(long, default_value_t = 100)]
    open_batch: u64,
    /// Concurrent redemption requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The ledger's database; a fresh SQLite file by default. For PostgreSQL give a URL whose
    /// search_path names an empty schema.
    #[arg(long, value_name = "URL")]
    ledger_database: Option<String>,
    /// Keep the consortium's files here.
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the load and prints the figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.keep.clone().unwrap_or_else(|| tmp.path().to_owned());
    let ledger_db = args
        .ledger_database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("ledger.db").display()));
    let backend = if ledger_db.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let c = Consortium::start_with_ledger(&dir, &["op-a"], Mode::Strict, &ledger_db).await?;
    let op = &c.operators[0];
    let keys = op.issuer.rotate_keys().await?;
    let kind = CapacityKind::new("chunk-64k")?;
    let key = keys
        .iter()
        .find(|k| k.kind == kind)
        .context("a chunk-64k key")?
        .clone();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    println!(
        "machine: {cores} cores; ledger on {backend}; {} tokens",
        args.tokens
    );

    // In-process bounds, measured now: blind signing and verification on all cores.
    let challenge = TokenChallenge::for_issuer(&key.issuer)?;
    let secret = scrip_spec::TokenSecretKey::from_pem(&std::fs::read_to_string(
        std::fs::read_dir(dir.join("op-a-keys"))?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("chunk-64k"))
            .context("the chunk-64k key file")?
            .path(),
    )?)?;
    let seed = WalletSeed::generate();
    let samples: Vec<_> = (0..200u64)
        .map(|i| scrip_spec::blind(&seed, i, &key.public_key, &challenge))
        .collect::<Result<_, _>>()?;
    let secret = Arc::new(secret);
    let per_core = samples.len() / cores;
    let started = Instant::now();
    let mut threads = Vec::new();
    for chunk in samples.chunks(per_core.max(1)) {
        let (secret, chunk) = (secret.clone(), chunk.to_vec());
        threads.push(std::thread::spawn(move || {
            chunk
                .iter()
                .map(|(req, _)| secret.blind_sign(req))
                .collect::<Result<Vec<_>, _>>()
        }));
    }
    let mut responses = Vec::new();
    for t in threads {
        responses.extend(
            t.join()
                .map_err(|_| anyhow::anyhow!("signing thread panicked"))??,
        );
    }
    let sign_rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    let tokens: Vec<Token> = samples
        .iter()
        .zip(&responses)
        .map(|((_, p), r)| scrip_spec::finalize(&key.public_key, p, r))
        .collect::<Result<_, _>>()?;
    let digest = challenge.digest();
    let started = Instant::now();
    let rounds = 10;
    let mut threads = Vec::new();
    for _ in 0..cores {
        let (tokens, pk) = (tokens.clone(), key.public_key.clone());
        threads.push(std::thread::spawn(move || {
            for _ in 0..rounds {
                for t in &tokens {
                    let _ = scrip_spec::verify_token_with_digest(&pk, &digest, t);
                }
            }
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("verify thread panicked"))?;
    }
    let verify_rate = (cores * rounds * tokens.len()) as f64 / started.elapsed().as_secs_f64();
    println!(
        "in-process: blind signing {sign_rate:.0}/s, verification {verify_rate:.0}/s (all cores)"
    );

    // Issuance over HTTP: openings of `open_batch` tokens, one after another.
    let (batch, codes) = op.issuer.mint_cards(args.tokens, 1).await?;
    anyhow::ensure!(
        op.issuer.activate_batch(&batch).await?,
        "the batch should be on sale"
    );
    let wallet = Wallet::create(&dir.join("bench-wallet.db"), &c.ledger_url, None).await?;
    let code = codes[0].to_string();
    let bar = indicatif::ProgressBar::new(args.tokens);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "opening [{bar:40}] {pos}/{len} tokens",
    )?);
    let started = Instant::now();
    let mut left = args.tokens;
    while left > 0 {
        let n = left.min(args.open_batch.clamp(1, 1000));
        wallet
            .open_card(&op.issuer_url, &code, &[(kind.clone(), n)], &|_, _| {})
            .await?;
        left -= n;
        bar.inc(n);
    }
    bar.finish_and_clear();
    let issue_rate = args.tokens as f64 / started.elapsed().as_secs_f64();
    println!(
        "issuance over HTTP, batches of {}: {issue_rate:.0} tokens/s = {:.0}% of the in-process signing rate",
        args.open_batch,
        100.0 * issue_rate / sign_rate
    );

    // Redemption over HTTP: each request verifies locally and spends durably at the ledger.
    let tokens: Vec<Token> = wallet
        .export()
        .await?
        .tokens
        .into_iter()
        .map(|t| t.token)
        .collect();
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let url = format!("{}/v1/redeem", op.redeemer_url);
    let bar = indicatif::ProgressBar::new(tokens.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "redeeming [{bar:40}] {pos}/{len} tokens",
    )?);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (tokens, next, client, url, bar) = (
            tokens.clone(),
            next.clone(),
            client.clone(),
            url.clone(),
            bar.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(i) else { break };
                let body = serde_json::json!({
                    "token": scrip_spec::encoding::b64_encode(token.to_bytes()),
                    "kind": "chunk-64k",
                });
                let t = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => latencies.push(t.elapsed()),
                    _ => failures += 1,
                }
                bar.inc(1);
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for w in workers {
        let (l, f) = w.await?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    latencies.sort();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "redemption over HTTP, {} in flight: {rate:.0} tokens/s = {:.0}% of the in-process verification rate; \
         p50 {} p90 {} p99 {} max {}; {failures} failed",
        args.concurrency,
        100.0 * rate / verify_rate,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    let totals = scrip_ledger::LedgerClient::new(&c.ledger_url)
        .totals()
        .await?;
    let spent: u64 = totals.keys.iter().map(|k| k.spent).sum();
    anyhow::ensure!(
        spent == latencies.len() as u64,
        "the ledger recorded {spent} spends for {} grants",
        latencies.len()
    );
    println!("the ledger recorded exactly {spent} spends");
    Ok(())
}
