//! The issuer: one file per part. [`keys`] (token keys: loading, rotation, announcement),
//! [`cards`] (minting, activation, balance), [`opening`] (opening cards into blind
//! signatures, idempotently), [`outbox`] (ledger requests queued and sent).

mod cards;
mod keys;
mod opening;
mod outbox;
mod refresh;

pub use keys::LoadedKey;
pub use opening::OpenError;
pub use refresh::RefreshError;
use scrip_spec::now;

use crate::config::IssuerConfig;
use crate::store::IssuerStore;
use scrip_common::clients::{LedgerClient, member_info};
use scrip_common::keyring::KeyRing;
use scrip_common::metrics::{Counter, Gauge};
use scrip_spec::ledger::{Action, Hash32, LedgerRequest};
use scrip_spec::{Catalog, OperatorKey, Signed, UnixSeconds};
use std::sync::{Arc, RwLock};

/// The issuer.
pub struct Issuer {
    name: String,
    config: IssuerConfig,
    store: Arc<dyn IssuerStore>,
    operator: OperatorKey,
    ledger: LedgerClient,
    ledger_id: Hash32,
    catalog: RwLock<Catalog>,
    /// Announced keys; an unknown id in an opening reloads them at most once a second, so
    /// random key ids cannot turn into disk reads and ledger calls.
    keys: KeyRing<LoadedKey>,
    /// Openings of one card run one at a time (see [`opening::CardLocks`]).
    card_locks: opening::CardLocks,
    /// Attempts of one refresh request id run one at a time (striped like `card_locks`).
    refresh_locks: opening::CardLocks,
    metrics: ServiceMetrics,
}

/// What the service counts itself; the HTTP layer shows it on `/metrics` (PROTOCOL.md 9.5).
#[derive(Debug, Clone, Default)]
pub struct ServiceMetrics {
    /// Private-key operations: one per blind signature made (a repeat answered from the
    /// record makes none).
    pub blind_signatures: Counter,
    /// Outbox items the ledger refused for good, set aside in the store for the operator.
    pub outbox_set_aside: Gauge,
    /// Tokens taken in by completed refreshes (repeats answered from the record not counted).
    pub tokens_refreshed: Counter,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Opens the store, reads the operator key, and fetches the ledger's id and catalog.
    pub async fn open(config: IssuerConfig) -> anyhow::Result<Self> {
        let operator = OperatorKey::read_file(&config.operator_key_file)?;
        let store = crate::store::connect(&config.database).await?;
        let ledger = LedgerClient::new(&config.ledger_url);
        let info = member_info(&ledger, &operator, &config.name, None).await?;
        let issuer = Self {
            name: config.name.clone(),
            store,
            operator,
            ledger,
            ledger_id: info.ledger_id,
            catalog: RwLock::new(info.catalog),
            keys: KeyRing::new(),
            card_locks: opening::CardLocks::default(),
            refresh_locks: opening::CardLocks::default(),
            metrics: ServiceMetrics::default(),
            config,
        };
        issuer.reload_keys().await?;
        Ok(issuer)
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn IssuerStore> {
        &self.store
    }

    /// What the service counts itself.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.metrics
    }

    fn sign(&self, action: Action, at: UnixSeconds) -> Signed<LedgerRequest> {
        self.operator
            .sign(LedgerRequest::new(self.ledger_id, at, action))
    }
}
