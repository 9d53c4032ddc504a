//! Shared set-up for scrip's benchmarks: fresh ledgers on SQLite or PostgreSQL, ready to take
//! spends.

use scrip_ledger::Ledger;
use scrip_ledger::local::{self, member};
use scrip_spec::ledger::{Action, Hash32, LedgerRequest, Role};
use scrip_spec::now;
use scrip_spec::{OperatorKey, Signed, Token, TokenKeyId, TokenSecretKey};
pub use scrip_testkit::{Backend, TestDb};
use std::sync::Arc;

/// The issuer's name, as the bench ledgers announce it (tokens are made for its challenge).
pub const ISSUER: &str = "issuer";

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
    /// Its secret half, to make tokens with.
    pub secret: TokenSecretKey,
    /// Keeps the database alive (a SQLite file's directory).
    pub _db: TestDb,
}

impl BenchLedger {
    /// A fresh ledger on `backend` (PostgreSQL: a schema `scrip_bench_…`).
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        Self::with_secret(backend, TokenSecretKey::generate()?).await
    }

    /// A fresh ledger on `backend` whose announced key is `secret`: ledgers made with the same
    /// secret accept the same tokens, so one minted pool serves several of them.
    pub async fn with_secret(backend: Backend, secret: TokenSecretKey) -> anyhow::Result<Self> {
        let db = TestDb::new(backend, "scrip_bench").await?;
        let (issuer, redeemer) = (OperatorKey::generate(), OperatorKey::generate());
        let operators = vec![
            member(ISSUER, &issuer, &[Role::Issuer]),
            member("relay", &redeemer, &[Role::Redeemer]),
        ];
        let ledger = local::init(&db.url, OperatorKey::generate(), "bench", operators).await?;
        let ledger_id = ledger.info().await.ledger_id;
        let info = scrip_testkit::key_info(secret.public_key(), ISSUER, "queue", 24);
        let key = info.public_key.id();
        ledger
            .submit(scrip_testkit::keys::announcement(&issuer, ledger_id, info))
            .await?;
        Ok(Self {
            ledger: Arc::new(ledger),
            ledger_id,
            redeemer,
            key,
            secret,
            _db: db,
        })
    }

    /// `count` fresh valid tokens of the announced key.
    pub fn tokens(&self, count: usize) -> Vec<Token> {
        scrip_testkit::mint_tokens(&self.secret, ISSUER, count)
    }

    /// A signed spend of `tokens`.
    pub fn spend_of(&self, tokens: Vec<Token>) -> Signed<LedgerRequest> {
        self.redeemer.sign(LedgerRequest::new(
            self.ledger_id,
            now(),
            Action::spend_of(tokens),
        ))
    }

    /// A signed spend of `count` fresh valid tokens.
    pub fn spend_request(&self, count: usize) -> Signed<LedgerRequest> {
        self.spend_of(self.tokens(count))
    }

    /// Drops the ledger and, on PostgreSQL, its schema now instead of leaving it behind.
    pub async fn drop_now(self) {
        let Self {
            ledger, _db: db, ..
        } = self;
        drop(ledger);
        if let Some(schema) = db.schema {
            schema.drop_now().await;
        }
    }
}
