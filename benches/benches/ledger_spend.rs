//! Durable spend throughput: signed spend batches of 1, 100 and 1,000 nullifiers appended to
//! the ledger (verify, judge, insert, append, commit with fsync), on SQLite and PostgreSQL.
//!
//! `cargo bench -p scrip-benches --bench ledger_spend` (PostgreSQL too with SCRIP_TEST_PG_URL).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use scrip_benches::{Backend, BenchLedger};
use std::time::{Duration, Instant};

fn ledger_spend(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("ledger_spend");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for backend in Backend::available() {
        let bench = rt.block_on(BenchLedger::new(backend)).expect("ledger");
        for batch in [1usize, 100, 1000] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(
                BenchmarkId::new(backend.name(), batch),
                &batch,
                |b, &batch| {
                    b.iter_custom(|iters| {
                        // Signing happens outside the timed part: the ledger's cost is measured.
                        let requests: Vec<_> =
                            (0..iters).map(|_| bench.spend_request(batch)).collect();
                        rt.block_on(async {
                            let start = Instant::now();
                            for r in requests {
                                let receipt = bench.ledger.submit(r).await.expect("spend");
                                assert!(receipt.seq.is_some());
                            }
                            start.elapsed()
                        })
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, ledger_spend);
criterion_main!(benches);
