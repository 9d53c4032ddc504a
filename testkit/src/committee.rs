//! A committee ledger as real processes: a genesis naming `n` nodes, `scrip ledger init` for
//! each on its own SQLite database, and their configs on free ports.

use crate::Http;
use crate::process::{LedgerSetup, Process, Scrip, free_port};
use scrip_spec::api::ledger::LedgerInfo;
use scrip_spec::ledger::Hash32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One node of a [`CommitteeSetup`].
#[derive(Debug, Clone)]
pub struct CommitteeNode {
    /// `node-I.toml`.
    pub config: PathBuf,
    /// The base URL of its API.
    pub base: String,
    /// Its database URL (`sqlite://…/node-I.db`).
    pub db: String,
}

/// A committee ledger made with `scrip ledger init` on every node.
#[derive(Debug)]
pub struct CommitteeSetup {
    /// The operators and, as the ledger services are configured with, node 0.
    pub ledger: LedgerSetup,
    /// The nodes, in the genesis's order.
    pub nodes: Vec<CommitteeNode>,
}

impl Scrip {
    /// A committee of `n` nodes among the operators `issuer` (issuer, redeemer) and `relay`
    /// (redeemer), alternately, with a third member `admin` (admin): node keys `dir/node-I.key`, databases `dir/node-I.db`,
    /// consensus backups `dir/consensus-I`, configs `dir/node-I.toml` (a 5 s order wait).
    pub fn committee_setup(self, dir: &Path, n: usize) -> CommitteeSetup {
        // A committee's genesis fixes its time, so every node's init writes the same one.
        let created_at = format!("created_at = {}\n", scrip_spec::now());
        let (issuer, relay, mut genesis) = self.operators(dir, &created_at);
        // An admin of its own, for membership changes (key `dir/admin.key`).
        let admin = self.keygen(dir, "admin");
        genesis.push_str(&format!(
            "[[operators]]\nname = \"admin\"\nid = \"{}\"\nroles = [\"admin\"]\n",
            admin.id()
        ));
        let mut ports = Vec::new();
        for i in 0..n {
            let node_key = self.keygen(dir, &format!("node-{i}"));
            let (api, peer) = (free_port(), free_port());
            genesis.push_str(&format!(
                "[[committee]]\noperator = \"{}\"\nnode_key = \"{}\"\n\
                 peer_address = \"127.0.0.1:{peer}\"\napi_url = \"http://127.0.0.1:{api}\"\n",
                ["issuer", "relay"][i % 2],
                node_key.id()
            ));
            ports.push(api);
        }
        std::fs::write(dir.join("genesis.toml"), genesis).expect("genesis");
        let nodes: Vec<CommitteeNode> = ports
            .into_iter()
            .enumerate()
            .map(|(i, api)| {
                let db = format!("sqlite://{}", dir.join(format!("node-{i}.db")).display());
                let (config, printed) = self.init_ledger(
                    dir,
                    &format!("node-{i}"),
                    &db,
                    api,
                    &format!("consensus_dir = \"consensus-{i}\"\norder_wait_secs = 5\n"),
                );
                assert!(
                    printed.contains(&format!("committee: {n} nodes")),
                    "{printed}"
                );
                CommitteeNode {
                    config,
                    base: format!("http://127.0.0.1:{api}"),
                    db,
                }
            })
            .collect();
        CommitteeSetup {
            ledger: LedgerSetup {
                issuer,
                relay,
                config: nodes[0].config.clone(),
                base: nodes[0].base.clone(),
            },
            nodes,
        }
    }
}

impl CommitteeSetup {
    /// `scrip ledger serve` for every node, not started, each logging to `dir/node-I.log`.
    pub fn processes(&self, scrip: Scrip, dir: &Path) -> Vec<Process> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                Process::serve(scrip, "ledger", &node.config, &node.base)
                    .log_to(&dir.join(format!("node-{i}.log")))
            })
            .collect()
    }

    /// Appends `lines` to every node's config (for example `session_rounds = 100`).
    pub fn configure(&self, lines: &str) {
        for node in &self.nodes {
            let mut text = std::fs::read_to_string(&node.config).expect("config");
            text.push_str(lines);
            std::fs::write(&node.config, text).expect("config");
        }
    }

    /// The nodes' base URLs.
    pub fn bases(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.base.as_str()).collect()
    }
}

/// Waits until every ledger of `bases` reports the same head, for at most `within`; returns
/// it. Panics with the heads last seen.
pub async fn agreed_head(bases: &[&str], within: Duration) -> (u64, Hash32) {
    let started = Instant::now();
    let mut heads = Vec::new();
    loop {
        heads.clear();
        for base in bases {
            let (status, info) = Http::new(base).get("/v1/info").await;
            heads.push(
                serde_json::from_value::<LedgerInfo>(info)
                    .ok()
                    .filter(|_| status.is_success())
                    .map(|info| (info.head_seq, info.head_hash)),
            );
        }
        if let Some(Some(first)) = heads.first()
            && heads.iter().all(|h| h.as_ref() == Some(first))
        {
            return *first;
        }
        assert!(
            started.elapsed() < within,
            "the nodes {bases:?} never agreed on a head: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
