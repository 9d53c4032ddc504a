//! Shared set-up for scrip's benchmarks: fresh ledgers on SQLite or PostgreSQL, ready to take
//! spends.

use scrip_ledger::Ledger;
use scrip_ledger::local::{self, member};
use scrip_spec::ledger::{Action, Hash32, LedgerRequest, Role, SpendGroup};
use scrip_spec::now;
use scrip_spec::{Nullifier, OperatorKey, Signed, TokenKeyId, TokenSecretKey};
pub use scrip_testkit::{Backend, TestDb};
use std::sync::Arc;

/// A ledger with one issuer, one redeemer and one announced key.
pub struct BenchLedger {
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// Its id.
    pub ledger_id: Hash32,
    /// The redeemer's key.
    pub redeemer: OperatorKey,
    /// The announced key's id.
    pub key: TokenKeyId,
    /// Keeps the database alive (a SQLite file's directory).
    pub _db: TestDb,
}

impl BenchLedger {
    /// A fresh ledger on `backend` (PostgreSQL: a schema `scrip_bench_…`).
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        let db = TestDb::new(backend, "scrip_bench").await?;
        let (issuer, redeemer) = (OperatorKey::generate(), OperatorKey::generate());
        let operators = vec![
            member("issuer", &issuer, &[Role::Issuer]),
            member("relay", &redeemer, &[Role::Redeemer]),
        ];
        let ledger = local::init(&db.url, OperatorKey::generate(), "bench", operators).await?;
        let ledger_id = ledger.info().await.ledger_id;
        let info = scrip_testkit::key_info(
            TokenSecretKey::generate()?.public_key(),
            "issuer",
            "queue",
            24,
        );
        let key = info.public_key.id();
        ledger
            .submit(scrip_testkit::keys::announcement(&issuer, ledger_id, info))
            .await?;
        Ok(Self {
            ledger: Arc::new(ledger),
            ledger_id,
            redeemer,
            key,
            _db: db,
        })
    }

    /// A signed spend of `count` fresh random nullifiers.
    pub fn spend_request(&self, count: usize) -> Signed<LedgerRequest> {
        let nullifiers = (0..count)
            .map(|_| {
                let mut b = [0u8; 32];
                rand::fill(&mut b);
                Nullifier(b)
            })
            .collect();
        self.redeemer.sign(LedgerRequest::new(
            self.ledger_id,
            now(),
            Action::Spend {
                groups: vec![SpendGroup {
                    token_key_id: self.key,
                    nullifiers,
                }],
            },
        ))
    }
}
