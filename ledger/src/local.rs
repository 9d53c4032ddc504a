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

/// A committee ledger served in this process: every node's ledger and base URL.
#[derive(Debug)]
pub struct LocalCommittee {
    /// Each node's ledger, in committee order.
    pub ledgers: Vec<Arc<Ledger>>,
    /// Each node's base URL.
    pub urls: Vec<String>,
}

/// Makes a committee ledger of `nodes` nodes called `name`, with members `operators` (the
/// nodes run by them in turn), each node on its own SQLite file `dir/node-I.db` with its
/// consensus backup in `dir/consensus-I`, and serves every node on free loopback ports, in
/// tasks of this process: what `scrip demo --nodes N` and `scrip bench --nodes N` start.
pub async fn serve_committee(
    dir: &std::path::Path,
    nodes: usize,
    name: &str,
    operators: Vec<OperatorInfo>,
) -> anyhow::Result<LocalCommittee> {
    use crate::node::NodeSettings;
    use scrip_spec::committee::CommitteeMember;
    let mut keys = Vec::new();
    let mut listeners = Vec::new();
    let mut committee = Vec::new();
    for i in 0..nodes {
        let key = OperatorKey::generate();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let peers = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        committee.push(CommitteeMember {
            operator: operators
                .get(i % operators.len().max(1))
                .map(|o| o.name.clone())
                .unwrap_or_default(),
            node_key: key.id(),
            peer_address: peers.local_addr()?.to_string(),
            api_url: format!("http://{}", api.local_addr()?),
        });
        keys.push(key);
        listeners.push((api, peers));
    }
    let genesis = Genesis {
        ledger_name: name.to_owned(),
        ledger_key: scrip_spec::OperatorId([0; 32]),
        created_at: scrip_spec::now(),
        operators,
        catalog: Catalog::standard(),
        admin_quorum: None,
        min_redeem_window: scrip_spec::ledger::DEFAULT_MIN_REDEEM_WINDOW,
        committee: committee.clone(),
    };
    let mut out = LocalCommittee {
        ledgers: Vec::new(),
        urls: Vec::new(),
    };
    for (i, (key, (api, peers))) in keys.into_iter().zip(listeners).enumerate() {
        let store = connect(&format!(
            "sqlite://{}",
            dir.join(format!("node-{i}.db")).display()
        ))
        .await?;
        let node_key = Arc::new(OperatorKey::from_seed(&key.seed()));
        let ledger = Arc::new(Ledger::init(store, key, genesis.clone()).await?);
        let settings = NodeSettings {
            peer_listen: peers.local_addr()?,
            consensus_dir: dir.join(format!("consensus-{i}")),
            unit_delay: std::time::Duration::from_millis(50),
            session_rounds: 20_000,
            order_wait: std::time::Duration::from_secs(10),
            first_start: false,
            catch_up_from: Vec::new(),
        };
        let app =
            Application::node_on_listeners(ledger.clone(), node_key, api, peers, settings).await?;
        tokio::spawn(app.run_until(std::future::pending()));
        out.ledgers.push(ledger);
        out.urls.push(committee[i].api_url.clone());
    }
    Ok(out)
}
