//! Shared set-up for scrip's benchmarks: fresh ledgers on SQLite or PostgreSQL, ready to take
//! spends.

use scrip_ledger::Ledger;
use scrip_spec::ledger::{Action, Genesis, Hash32, LedgerRequest, OperatorInfo, Role, SpendGroup};
use scrip_spec::now;
use scrip_spec::{
    Catalog, Nullifier, OperatorKey, Signed, TokenKeyId, TokenKeyInfo, TokenSecretKey,
};
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
    /// Keeps a SQLite file alive.
    pub _dir: Option<tempfile::TempDir>,
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema in the PostgreSQL at `SCRIP_TEST_PG_URL`.
    Postgres,
}

impl Backend {
    /// The backends available here: SQLite always, PostgreSQL when `SCRIP_TEST_PG_URL` is set.
    pub fn available() -> Vec<Backend> {
        let mut v = vec![Backend::Sqlite];
        if std::env::var("SCRIP_TEST_PG_URL").is_ok() {
            v.push(Backend::Postgres);
        }
        v
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A fresh database URL for `backend`, and the directory that holds it (SQLite).
pub async fn fresh_url(backend: Backend) -> anyhow::Result<(String, Option<tempfile::TempDir>)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
            Ok((url, Some(dir)))
        }
        Backend::Postgres => {
            let base = std::env::var("SCRIP_TEST_PG_URL")?;
            let mut suffix = [0u8; 6];
            rand::fill(&mut suffix);
            let schema = format!(
                "scrip_bench_{}",
                suffix
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            let admin = sqlx::PgPool::connect(&base).await?;
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await?;
            let sep = if base.contains('?') { '&' } else { '?' };
            Ok((
                format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                None,
            ))
        }
    }
}

impl BenchLedger {
    /// A fresh ledger on `backend`.
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        let (url, dir) = fresh_url(backend).await?;
        let (ledger_key, issuer, redeemer) = (
            OperatorKey::generate(),
            OperatorKey::generate(),
            OperatorKey::generate(),
        );
        let genesis = Genesis {
            ledger_name: "bench".into(),
            ledger_key: ledger_key.id(),
            created_at: now(),
            operators: vec![
                OperatorInfo {
                    name: "issuer".into(),
                    id: issuer.id(),
                    roles: vec![Role::Issuer],
                },
                OperatorInfo {
                    name: "relay".into(),
                    id: redeemer.id(),
                    roles: vec![Role::Redeemer],
                },
            ],
            catalog: Catalog::standard(),
        };
        let ledger_id = genesis.ledger_id();
        let store = scrip_ledger::connect(&url).await?;
        let ledger = Ledger::init(store, ledger_key, genesis).await?;
        let t = now();
        let info = TokenKeyInfo {
            public_key: TokenSecretKey::generate()?.public_key().clone(),
            issuer: "issuer".into(),
            kind: "queue".parse()?,
            valid_from: t - 10,
            issue_until: t + 86_400,
            redeem_until: t + 2 * 86_400,
            forget_after: t + 3 * 86_400,
        };
        let key = info.public_key.id();
        ledger
            .submit(issuer.sign(LedgerRequest::new(
                ledger_id,
                t,
                Action::AnnounceKey { key: info },
            )))
            .await?;
        Ok(Self {
            ledger: Arc::new(ledger),
            ledger_id,
            redeemer,
            key,
            _dir: dir,
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
