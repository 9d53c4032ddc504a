//! Durable spend throughput with token verification (issue 14): signed spends of 1,000 and
//! 10,000 valid tokens submitted to the ledger (authenticate, verify every token on all cores,
//! judge, insert the nullifiers, append the entry that holds the tokens, commit with fsync), on
//! SQLite and PostgreSQL. Before each, in the same run and on the same cores, the ledger's own
//! check of as many tokens in process (`LedgerState::verify_spend`, the bound), so the ratio can
//! be read off; a summary of both rates and their ratio is printed at the end.
//!
//! `SCRIP_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p scrip-benches --bench ledger_spend` (SQLite only without the variable).
//!
//! Tokens take about 0.4 ms of CPU each to mint, so a pool is minted once, before any clock
//! starts, and shared by the backends (their ledgers announce the same key, and each spends the
//! pool from its start). When criterion asks for more iterations than the pool holds, more are
//! minted, also outside the timed part.

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use scrip_benches::{Backend, BenchLedger, ISSUER};
use scrip_spec::api::ledger::SpendStatus;
use scrip_spec::ledger::{Action, SpendGroup};
use scrip_spec::{Token, TokenSecretKey};
use std::time::{Duration, Instant};

/// Tokens per spend request.
const BATCHES: [usize; 2] = [1_000, 10_000];
/// Tokens minted before the first benchmark: about what one backend spends with the settings
/// below on this machine (criterion's warm-up and 10 samples of each batch size).
const INITIAL_POOL: usize = 160_000;
/// Tokens minted at least when the pool runs short.
const MINT_MORE: usize = 20_000;

/// Valid tokens of one key, handed out in order; a fresh ledger starts again from the first.
struct TokenPool {
    secret: TokenSecretKey,
    tokens: Vec<Token>,
    next: usize,
}

impl TokenPool {
    fn new(secret: TokenSecretKey, count: usize) -> Self {
        let started = Instant::now();
        let tokens = scrip_testkit::mint_tokens(&secret, ISSUER, count);
        eprintln!(
            "minted a pool of {count} tokens in {:.1} s (untimed)",
            started.elapsed().as_secs_f64()
        );
        Self {
            secret,
            tokens,
            next: 0,
        }
    }

    /// The next `count` tokens this ledger has not spent, minting more if the pool is short.
    fn take(&mut self, count: usize) -> Vec<Token> {
        let end = self.next + count;
        if end > self.tokens.len() {
            let more = (end - self.tokens.len()).max(MINT_MORE);
            let started = Instant::now();
            self.tokens
                .extend(scrip_testkit::mint_tokens(&self.secret, ISSUER, more));
            eprintln!(
                "minted {more} more tokens in {:.1} s (untimed; pool now {})",
                started.elapsed().as_secs_f64(),
                self.tokens.len()
            );
        }
        let taken = self.tokens[self.next..end].to_vec();
        self.next = end;
        taken
    }

    /// Starts again from the first token, for a ledger that has spent none.
    fn rewind(&mut self) {
        self.next = 0;
    }
}

/// Tokens and timed seconds per benchmark, over every timed iteration (warm-up included).
#[derive(Default)]
struct Summary(Vec<(String, usize, u64, Duration)>);

impl Summary {
    fn add(&mut self, what: String, batch: usize, tokens: u64, took: Duration) {
        match self
            .0
            .iter_mut()
            .find(|(w, b, ..)| *w == what && *b == batch)
        {
            Some((.., t, d)) => (*t, *d) = (*t + tokens, *d + took),
            None => self.0.push((what, batch, tokens, took)),
        }
    }

    fn rate(&self, what: &str, batch: usize) -> Option<f64> {
        self.0
            .iter()
            .find(|(w, b, ..)| w == what && *b == batch)
            .map(|(.., t, d)| *t as f64 / d.as_secs_f64())
    }

    fn print(&self, backends: &[Backend]) {
        println!("\nsummary: tokens/s over every timed iteration (warm-up included)");
        println!("  backend     batch   durable spend   in-process verify   ratio");
        for backend in backends {
            for batch in BATCHES {
                let spend = self.rate(&format!("{}/spend", backend.name()), batch);
                let verify = self.rate(&format!("{}/verify", backend.name()), batch);
                if let (Some(spend), Some(verify)) = (spend, verify) {
                    println!(
                        "  {:<10} {:>6}   {:>13.0}   {:>17.0}   {:>4.1}%",
                        backend.name(),
                        batch,
                        spend,
                        verify,
                        100.0 * spend / verify
                    );
                }
            }
        }
    }
}

fn ledger_spend(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backends = Backend::available();
    let mut pool = TokenPool::new(TokenSecretKey::generate().expect("key"), INITIAL_POOL);
    let mut summary = Summary::default();
    let mut group = c.benchmark_group("ledger_spend");
    // Every iteration is a whole batch (10 to 500 ms): few, flat samples keep the number of
    // tokens to mint, and the run, short.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for backend in &backends {
        let bench = rt
            .block_on(BenchLedger::with_secret(*backend, pool.secret.clone()))
            .expect("ledger");
        pool.rewind();
        let state = bench.ledger.view();
        for batch in BATCHES {
            group.throughput(Throughput::Elements(batch as u64));

            // The bound: the ledger's own token check, in process, on as many tokens.
            let Action::Spend { groups } = Action::spend_of(pool.tokens[..batch].to_vec()) else {
                unreachable!("spend_of makes a spend");
            };
            let keys = state.keys_to_verify(&groups, scrip_spec::now());
            assert_eq!(keys.len(), 1, "the pool's key is announced and live");
            let verify_id = format!("{}/verify", backend.name());
            group.bench_with_input(
                BenchmarkId::new(&verify_id, batch),
                &groups,
                |b, groups: &Vec<SpendGroup>| {
                    b.iter_custom(|iters| {
                        let start = Instant::now();
                        for _ in 0..iters {
                            state.verify_spend(groups, &keys).expect("valid tokens");
                        }
                        let took = start.elapsed();
                        summary.add(verify_id.clone(), batch, iters * batch as u64, took);
                        took
                    });
                },
            );

            let spend_id = format!("{}/spend", backend.name());
            group.bench_with_input(BenchmarkId::new(&spend_id, batch), &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    // Minting and signing happen outside the timed part: the ledger's
                    // cost is measured.
                    let requests: Vec<_> = (0..iters)
                        .map(|_| bench.spend_of(pool.take(batch)))
                        .collect();
                    let (took, accepted) = rt.block_on(async {
                        let mut accepted = 0u64;
                        let start = Instant::now();
                        for r in requests {
                            let receipt = bench.ledger.submit(r).await.expect("spend");
                            assert!(receipt.seq.is_some());
                            accepted += receipt
                                .spends
                                .iter()
                                .filter(|s| s.status == SpendStatus::Accepted)
                                .count() as u64;
                        }
                        (start.elapsed(), accepted)
                    });
                    assert_eq!(accepted, iters * batch as u64, "every token accepted");
                    summary.add(spend_id.clone(), batch, accepted, took);
                    took
                });
            });
        }
        drop(state);
        rt.block_on(bench.drop_now());
    }
    group.finish();
    summary.print(&backends);
}

criterion_group!(benches, ledger_spend);
criterion_main!(benches);
