//! `scrip bench`: the load generator. It runs a consortium on loopback and drives the issuer
//! (card opening over HTTP) and the redeemer sidecar (redemptions over HTTP, with a durable
//! ledger spend behind each) at a chosen concurrency, and measures the in-process crypto rate
//! in the same run, so every figure is also a ratio.

use anyhow::Context as _;
use clap::Args;
use scrip::consortium::Consortium;
use scrip_redeemer::Mode;
use scrip_spec::api::issuer::{
    KeyedTokenRequest, MAX_OPEN_BATCH, OpenRequest, OpenResponse, RequestId,
};
use scrip_spec::{
    CapacityKind, CardCode, PendingToken, Token, TokenChallenge, TokenKeyInfo, WalletSeed,
};
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
    /// Concurrent openings in flight (each on its own card).
    #[arg(long, default_value_t = 4)]
    open_concurrency: usize,
    /// Concurrent redemption requests in flight (at most).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Repeat the issuance and redemption this many times on the same services (a soak run):
    /// each round prints its figures, memory and open file descriptors.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Offer redemptions at this many per second (open loop) instead of as fast as they are
    /// answered; latency then counts from when each request was due.
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// The ledger's database; a fresh SQLite file by default. For PostgreSQL give a URL whose
    /// search_path names an empty schema.
    #[arg(long, value_name = "URL")]
    ledger_database: Option<String>,
    /// Keep the consortium's files here.
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
    /// Run the ledger as a committee of N nodes in this process (each on its own SQLite
    /// file; `--ledger-database` is then not used); 1 is the one-node ledger.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: u16,
}

/// Passes over the samples when measuring the in-process signing rate.
const SIGN_PASSES: usize = 4;

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

fn progress(len: u64, what: &str) -> anyhow::Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(indicatif::ProgressStyle::with_template(&format!(
        "{what} [{{bar:40}}] {{pos}}/{{len}} tokens"
    ))?);
    Ok(bar)
}

/// One opening request per card, blinded ahead of time on all cores, with what finalizes it.
fn blind_openings(
    seed: &WalletSeed,
    key: &TokenKeyInfo,
    challenge: &TokenChallenge,
    codes: &[CardCode],
    tokens: u64,
    per_card: u64,
) -> anyhow::Result<Vec<(OpenRequest, Vec<PendingToken>)>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let card_numbers: Vec<usize> = (0..codes.len()).collect();
    let chunk = codes.len().div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = card_numbers
            .chunks(chunk)
            .map(|cards| {
                scope.spawn(move || {
                    cards
                        .iter()
                        .map(|&card| {
                            let first = card as u64 * per_card;
                            let count = per_card.min(tokens - first);
                            let (requests, pending): (Vec<_>, Vec<_>) = (first..first + count)
                                .map(|counter| {
                                    scrip_spec::blind(seed, counter, &key.public_key, challenge)
                                        .map(|(token_request, pending)| {
                                            let keyed = KeyedTokenRequest {
                                                token_key_id: key.public_key.id(),
                                                token_request,
                                            };
                                            (keyed, pending)
                                        })
                                })
                                .collect::<Result<Vec<_>, _>>()?
                                .into_iter()
                                .unzip();
                            let request = OpenRequest {
                                card_code: codes[card].to_string(),
                                request_id: RequestId(seed.request_id(first)),
                                requests,
                            };
                            anyhow::Ok((request, pending))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut openings = Vec::new();
        for worker in workers {
            openings.extend(
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("blinding thread panicked"))??,
            );
        }
        Ok(openings)
    })
}

/// Runs the load and prints the figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.keep.clone().unwrap_or_else(|| tmp.path().to_owned());
    let ledger_db = args
        .ledger_database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("ledger.db").display()));
    let nodes = usize::from(args.nodes);
    let backend = if nodes > 1 {
        format!("a committee of {nodes} nodes on SQLite")
    } else if ledger_db.starts_with("postgres") {
        "PostgreSQL".to_owned()
    } else {
        "SQLite".to_owned()
    };
    let c = if nodes > 1 {
        Consortium::start_committee(&dir, &["op-a"], Mode::Strict, nodes).await?
    } else {
        Consortium::start_with_ledger(&dir, &["op-a"], Mode::Strict, &ledger_db).await?
    };
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
    let samples: Vec<_> = (0..1000u64)
        .map(|i| scrip_spec::blind(&seed, i, &key.public_key, &challenge))
        .collect::<Result<_, _>>()?;
    let secret = Arc::new(secret);
    let per_core = samples.len() / cores;
    let started = Instant::now();
    let mut threads = Vec::new();
    for chunk in samples.chunks(per_core.max(1)) {
        let (secret, chunk) = (secret.clone(), chunk.to_vec());
        threads.push(std::thread::spawn(move || {
            // Several passes, so the bound is measured over about a second, not a blip.
            for _ in 1..SIGN_PASSES {
                for (req, _) in &chunk {
                    secret.blind_sign(req)?;
                }
            }
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
    let sign_rate = (SIGN_PASSES * samples.len()) as f64 / started.elapsed().as_secs_f64();
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

    // With --rounds, the same load again and again on the same services: a soak run, whose
    // rows show whether throughput, latency, memory or file descriptors drift.
    let mut recorded = 0u64;
    for round in 1..=args.rounds.max(1) {
        if args.rounds > 1 {
            println!("-- round {round} of {}", args.rounds);
        }
        // Issuance over HTTP. The wallet's blinding and finalization run before and after the
        // timed part, so the figure is the issuer's: HTTP, JSON, card accounting and signing.
        let open_batch = args.open_batch.clamp(1, MAX_OPEN_BATCH as u64);
        let cards = args.tokens.div_ceil(open_batch) as usize;
        let (batch, codes) = op.issuer.mint_cards(open_batch, cards).await?;
        anyhow::ensure!(
            op.issuer.activate_batch(&batch).await?,
            "the batch should be on sale"
        );
        let wallet_seed = WalletSeed::generate();
        let openings = blind_openings(
            &wallet_seed,
            &key,
            &challenge,
            &codes,
            args.tokens,
            open_batch,
        )?;
        let bar = progress(args.tokens, "opening")?;
        let client = reqwest::Client::new();
        let open_url = format!("{}/v1/cards/open", op.issuer_url);
        let queue = Arc::new(std::sync::Mutex::new(
            openings
                .iter()
                .map(|(r, _)| r.clone())
                .enumerate()
                .collect::<Vec<_>>(),
        ));
        let started = Instant::now();
        let mut openers = Vec::new();
        for _ in 0..args.open_concurrency.max(1) {
            let (queue, client, url, bar) =
                (queue.clone(), client.clone(), open_url.clone(), bar.clone());
            openers.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                loop {
                    let next = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                    let Some((i, request)) = next else { break };
                    let answer = client.post(&url).json(&request).send().await?;
                    anyhow::ensure!(
                        answer.status().is_success(),
                        "opening refused: {}",
                        answer.status()
                    );
                    let answer: OpenResponse = answer.json().await?;
                    bar.inc(answer.responses.len() as u64);
                    answers.push((i, answer));
                }
                anyhow::Ok(answers)
            }));
        }
        let mut answers = Vec::new();
        for opener in openers {
            answers.extend(opener.await??);
        }
        let issue_rate = args.tokens as f64 / started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        println!(
            "issuance over HTTP, batches of {open_batch}, {} in flight: {issue_rate:.0} tokens/s = {:.0}% of the in-process signing rate",
            args.open_concurrency,
            100.0 * issue_rate / sign_rate
        );
        answers.sort_by_key(|(i, _)| *i);
        let mut tokens = Vec::with_capacity(args.tokens as usize);
        for ((_, pending), (_, answer)) in openings.iter().zip(&answers) {
            for (pending, response) in pending.iter().zip(&answer.responses) {
                tokens.push(scrip_spec::finalize(&key.public_key, pending, response)?);
            }
        }
        anyhow::ensure!(tokens.len() as u64 == args.tokens, "every token finalizes");

        // Redemption over HTTP: each request verifies locally and spends durably at the ledger.
        let tokens = Arc::new(tokens);
        let next = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?;
        let url = format!("{}/v1/redeem", op.redeemer_url);
        let bar = progress(tokens.len() as u64, "redeeming")?;
        // With --rate, request i is due at start + i/rate and its latency counts from then, so a
        // slow answer delays nothing it should not (no coordinated omission).
        let interval = args
            .rate
            .map(|rate| Duration::from_secs_f64(1.0 / rate.max(1.0)));
        let started = Instant::now();
        let start = tokio::time::Instant::now();
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
                    let t = match interval {
                        Some(interval) => {
                            let due = start + interval * i as u32;
                            tokio::time::sleep_until(due).await;
                            due.into_std()
                        }
                        None => Instant::now(),
                    };
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
        let offered = args
            .rate
            .map(|rate| format!(", offered {rate:.0}/s"))
            .unwrap_or_default();
        println!(
            "redemption over HTTP, {} in flight{offered}: {rate:.0} tokens/s = {:.0}% of the in-process verification rate; \
         p50 {} p90 {} p99 {} max {}; {failures} failed",
            args.concurrency,
            100.0 * rate / verify_rate,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.9)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
        );
        let totals = scrip_common::clients::LedgerClient::new(&c.ledger_url)
            .totals()
            .await?;
        let spent: u64 = totals.keys.iter().map(|k| k.spent).sum();
        recorded += latencies.len() as u64;
        anyhow::ensure!(
            spent == recorded,
            "the ledger recorded {spent} spends for {recorded} grants"
        );
        println!("the ledger recorded exactly {spent} spends");
        println!(
            "{}",
            breakdown(&client, &op.redeemer_url, &c.ledger_url).await?
        );
        println!(
            "memory: peak RSS {} MiB, now {} MiB, {} open file descriptors (every service and the load generator share this process)",
            proc_status_kib("VmHWM:") / 1024,
            proc_status_kib("VmRSS:") / 1024,
            std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count()),
        );
    }
    Ok(())
}

/// A `/proc/self/status` figure in KiB (0 where there is no procfs).
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Where a redemption's time went, from the services' own metrics (cumulative over the
/// rounds): at the sidecar, the mean wait for a spend's answer, the mean ledger request and its
/// size, the mean grant commit; at the ledger, the mean wait for the writer and commit.
async fn breakdown(
    client: &reqwest::Client,
    redeemer_url: &str,
    ledger_url: &str,
) -> anyhow::Result<String> {
    let sidecar = Metrics::fetch(client, redeemer_url, "scrip_redeemer").await?;
    let ledger = Metrics::fetch(client, ledger_url, "scrip_ledger").await?;
    let batches = sidecar.value("ledger_batches_total");
    let grant_commits = sidecar.value("grant_commit_seconds_count");
    Ok(format!(
        "sidecar: a redemption waited {:.1} ms on average for its spend; {batches:.0} ledger requests of {:.0} tokens on average took {:.1} ms each; {grant_commits:.0} grant commits took {:.1} ms each\n\
         ledger: a request took {:.1} ms from its arrival to its receipt: its tokens' verification {:.1} ms, the wait for the writer {:.1} ms, its commit {:.1} ms",
        sidecar.mean_ms("spend_wait_seconds"),
        sidecar.value("ledger_batched_spends_total") / batches.max(1.0),
        sidecar.mean_ms("ledger_wait_seconds"),
        sidecar.mean_ms("grant_commit_seconds"),
        ledger.mean_ms("request_seconds"),
        ledger.mean_ms("token_verification_seconds"),
        ledger.mean_ms("writer_wait_seconds"),
        ledger.mean_ms("store_commit_seconds"),
    ))
}

/// One service's `/metrics` text.
struct Metrics {
    text: String,
    prefix: &'static str,
}

impl Metrics {
    async fn fetch(
        client: &reqwest::Client,
        base: &str,
        prefix: &'static str,
    ) -> anyhow::Result<Self> {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(Self { text, prefix })
    }

    /// The value of an unlabelled sample (0 if absent).
    fn value(&self, name: &str) -> f64 {
        let name = format!("{}_{name}", self.prefix);
        self.text
            .lines()
            .find_map(|line| {
                let (metric, value) = line.rsplit_once(' ')?;
                (metric == name).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// A histogram's mean in milliseconds.
    fn mean_ms(&self, histogram: &str) -> f64 {
        let count = self.value(&format!("{histogram}_count"));
        1000.0 * self.value(&format!("{histogram}_sum")) / count.max(1.0)
    }
}
