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
pub use outbox::Requeued;
pub use refresh::RefreshError;
use scrip_spec::now;

use crate::config::IssuerConfig;
use crate::store::IssuerStore;
use scrip_common::clients::{LedgerClient, MembershipError, member_info, member_info_waiting};
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

/// What opening an issuer does when the ledger does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LedgerDown {
    /// Wait for it, this long at most.
    Wait(std::time::Duration),
    /// Work from the ledger info saved in the store.
    UseSaved,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Opens the store, reads the operator key, and fetches the ledger's id and catalog,
    /// waiting up to `ledger_wait_secs` for a ledger that does not answer yet (what `serve`
    /// does: a service started before its ledger, as boot order often has it).
    pub async fn open(config: IssuerConfig) -> anyhow::Result<Self> {
        let wait = std::time::Duration::from_secs(config.ledger_wait_secs);
        Self::open_when_ledger_down(config, LedgerDown::Wait(wait)).await
    }

    /// Opens the issuer for a local command: if the ledger does not answer, it works from the
    /// ledger id and catalog it last heard (kept in the store), so minting, voiding, card
    /// status and the key list need no ledger; what must reach the ledger is queued.
    pub async fn open_local(config: IssuerConfig) -> anyhow::Result<Self> {
        Self::open_when_ledger_down(config, LedgerDown::UseSaved).await
    }

    async fn open_when_ledger_down(config: IssuerConfig, down: LedgerDown) -> anyhow::Result<Self> {
        let operator = OperatorKey::read_file(&config.operator_key_file)?;
        let store = crate::store::connect(&config.database).await?;
        let ledger = LedgerClient::new(&config.ledger_url);
        let heard = match down {
            LedgerDown::Wait(wait) => {
                member_info_waiting(&ledger, &operator, &config.name, None, wait).await
            }
            LedgerDown::UseSaved => member_info(&ledger, &operator, &config.name, None).await,
        };
        let (ledger_id, catalog) = match heard {
            Ok(info) => {
                // The prices it sells by: on a committee, as f + 1 nodes state them.
                let catalog = ledger.catalog().await.map_err(|e| {
                    anyhow::Error::new(e).context("cannot read the catalog from the ledger's nodes")
                })?;
                store
                    .save_ledger_info(&info.ledger_id.0, &serde_json::to_string(&catalog)?, now())
                    .await?;
                (info.ledger_id, catalog)
            }
            Err(e @ MembershipError::Unreachable { .. }) if down == LedgerDown::UseSaved => {
                let Some((id, catalog, heard_at)) = store.ledger_info().await? else {
                    return Err(anyhow::Error::new(e).context(
                        "this issuer has never reached its ledger, so it does not know the ledger's id yet",
                    ));
                };
                tracing::warn!(
                    ledger = %ledger.url(),
                    last_heard = %scrip_common::display::date_time(heard_at),
                    "the ledger is not answering; working from what it last said (requests for it are queued)"
                );
                (Hash32(id), serde_json::from_str(&catalog)?)
            }
            Err(e) => return Err(e.into()),
        };
        let issuer = Self {
            name: config.name.clone(),
            store,
            operator,
            ledger,
            ledger_id,
            catalog: RwLock::new(catalog),
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
