//! A one-node ledger made in place from a fresh genesis and served on loopback: what
//! `scrip demo`, the load generator, the benches and the tests start from. (A consortium
//! writes its genesis file and runs `scrip ledger init` instead.)

use crate::{Application, Ledger, LedgerError, connect};
use scrip_spec::ledger::{Genesis, OperatorInfo, Role};
use scrip_spec::{Catalog, OperatorKey};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Seconds between the checkpoints of a ledger served by [`serve`].
pub const CHECKPOINT_SECS: u64 = 3600;

/// A founding member: `name` with `key`'s id and `roles`.
pub fn member(name: &str, key: &OperatorKey, roles: &[Role]) -> OperatorInfo {
    OperatorInfo {
        name: name.to_owned(),
        id: key.id(),
        roles: roles.to_vec(),
    }
}

/// Writes the genesis of a ledger called `name` (ledger key `key`, members `operators`, the
/// standard catalog, created now) into the empty database at `url`, and opens the ledger.
pub async fn init(
    url: &str,
    key: OperatorKey,
    name: &str,
    operators: Vec<OperatorInfo>,
) -> Result<Ledger, LedgerError> {
    let genesis = Genesis {
        ledger_name: name.to_owned(),
        ledger_key: key.id(),
        created_at: scrip_spec::now(),
        operators,
        catalog: Catalog::standard(),
        admin_quorum: None,
        min_redeem_window: scrip_spec::ledger::DEFAULT_MIN_REDEEM_WINDOW,
        committee: Vec::new(),
    };
    let store = connect(url).await?;
    Ledger::init(store, key, genesis).await
}

/// Serves `ledger` on `listen` (port 0 picks a free port) until `shutdown` resolves, in a
/// task of its own; returns the base URL.
pub async fn serve(
    ledger: Arc<Ledger>,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<String> {
    let app = Application::from_ledger(ledger, listen, CHECKPOINT_SECS).await?;
    let url = format!("http://{}", app.local_addr()?);
    tokio::spawn(app.run_until(shutdown));
    Ok(url)
}
