//! A committee of four `scrip ledger serve` processes on loopback, each on its own SQLite
//! database, under spend load from two redeemers: one node SIGKILLed and restarted while
//! spends go on, two nodes down (nothing commits, and nothing forks), all four restarted at
//! once. After each fault every node holds the same log, every acknowledged spend is on
//! every node, and the audit of a node's database passes.

use crate::SCRIP;
use scrip_common::clients::LedgerClient;
use scrip_spec::api::ledger::SpendStatus;
use scrip_spec::ledger::{Action, Hash32, LedgerRequest, SpendGroup};
use scrip_spec::{OperatorKey, Token, now};
use scrip_testkit::{Process, TokenPool, free_port, key_info, path};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Node {
    base: String,
    db: String,
    process: Process,
}

/// Keys, a genesis with a committee of `n`, `scrip ledger init` for each node, and the
/// nodes' configs; returns the nodes (not started) and the operators' keys.
fn committee(dir: &Path, n: usize) -> (Vec<Node>, OperatorKey, OperatorKey, OperatorKey) {
    let issuer = SCRIP.keygen(dir, "issuer");
    let relay_a = SCRIP.keygen(dir, "relay-a");
    let relay_b = SCRIP.keygen(dir, "relay-b");
    let mut genesis = format!(
        "ledger_name = \"committee\"\ncreated_at = {}\n\
         [[operators]]\nname = \"issuer\"\nid = \"{}\"\nroles = [\"issuer\"]\n\
         [[operators]]\nname = \"relay-a\"\nid = \"{}\"\nroles = [\"redeemer\"]\n\
         [[operators]]\nname = \"relay-b\"\nid = \"{}\"\nroles = [\"redeemer\"]\n",
        now(),
        issuer.id(),
        relay_a.id(),
        relay_b.id()
    );
    let mut ports = Vec::new();
    for i in 0..n {
        let node_key = SCRIP.keygen(dir, &format!("node-{i}"));
        let (api, peer) = (free_port(), free_port());
        genesis.push_str(&format!(
            "[[committee]]\noperator = \"{}\"\nnode_key = \"{}\"\npeer_address = \"127.0.0.1:{peer}\"\napi_url = \"http://127.0.0.1:{api}\"\n",
            ["issuer", "relay-a", "relay-b"][i % 3],
            node_key.id()
        ));
        ports.push(api);
    }
    std::fs::write(dir.join("genesis.toml"), genesis).expect("genesis");
    let mut nodes = Vec::new();
    for (i, api) in ports.into_iter().enumerate() {
        let db = format!("sqlite://{}", dir.join(format!("node-{i}.db")).display());
        let key = dir.join(format!("node-{i}.key"));
        let out = SCRIP.ok(&[
            "ledger",
            "init",
            "--genesis",
            path(&dir.join("genesis.toml")),
            "--key",
            path(&key),
            "--database",
            &db,
        ]);
        assert!(
            out.contains("committee: 4 nodes, tolerating 1 faulty"),
            "{out}"
        );
        let config = dir.join(format!("node-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{api}\"\ndatabase = \"{db}\"\nkey_file = \"{}\"\nconsensus_dir = \"consensus-{i}\"\norder_wait_secs = 5\n",
                key.display()
            ),
        )
        .expect("config");
        let base = format!("http://127.0.0.1:{api}");
        let process = Process::serve(SCRIP, "ledger", &config, &base)
            .log_to(&dir.join(format!("node-{i}.log")));
        nodes.push(Node { base, db, process });
    }
    (nodes, issuer, relay_a, relay_b)
}

async fn head(base: &str) -> Option<(u64, Hash32)> {
    let info = LedgerClient::with_timeout(base, Duration::from_secs(2))
        .info()
        .await
        .ok()?;
    Some((info.head_seq, info.head_hash))
}

/// Waits until the nodes `which` report one head; returns it.
async fn agreed(nodes: &[Node], which: &[usize]) -> (u64, Hash32) {
    let mut heads = Vec::new();
    for _ in 0..300 {
        heads.clear();
        for i in which {
            heads.push(head(&nodes[*i].base).await);
        }
        if heads.iter().all(Option::is_some) && heads.windows(2).all(|w| w[0] == w[1]) {
            return heads[0].expect("a head");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the nodes never agreed on a head: {heads:?}");
}

/// Spends batches of 10 from `pool` through `client` until `stop`; returns the tokens whose
/// spend f + 1 nodes acknowledged.
fn spender(
    client: LedgerClient,
    relay: Arc<OperatorKey>,
    ledger_id: Hash32,
    key: scrip_spec::TokenKeyId,
    pool: Arc<TokenPool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Token>>>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut failures = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let tokens = pool.take(10);
            let request = relay.sign(LedgerRequest::new(
                ledger_id,
                now(),
                Action::Spend {
                    groups: vec![SpendGroup {
                        token_key_id: key,
                        tokens: tokens.clone(),
                    }],
                },
            ));
            match client.submit(&request).await {
                Ok(receipt) => {
                    assert!(
                        receipt
                            .spends
                            .iter()
                            .all(|s| s.status == SpendStatus::Accepted)
                    );
                    acknowledged.lock().expect("acks").extend(tokens);
                }
                Err(_) => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        failures
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_committee_of_four_survives_kills_and_restarts_with_one_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, issuer, relay_a, relay_b) = committee(dir.path(), 4);
    for node in &mut nodes {
        node.process.start().await;
    }
    let client = LedgerClient::with_timeout(&nodes[0].base, Duration::from_secs(10));
    let ledger_id = client.info().await.expect("info").ledger_id;
    let secret = scrip_spec::TokenSecretKey::generate().expect("keygen");
    let key = key_info(secret.public_key(), "issuer", "queue", 1);
    let key_id = key.public_key.id();
    let receipt = client
        .submit(&issuer.sign(LedgerRequest::new(
            ledger_id,
            now(),
            Action::AnnounceKey { key },
        )))
        .await
        .expect("announce through the committee");
    assert!(receipt.attestation.is_some());
    let pool = Arc::new(TokenPool::new(secret, "issuer"));
    pool.fill(3000);

    // Load from two redeemers, through two different nodes; node 3 is killed and restarted.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let spenders = [
        spender(
            LedgerClient::with_timeout(&nodes[1].base, Duration::from_secs(10)),
            Arc::new(relay_a),
            ledger_id,
            key_id,
            pool.clone(),
            stop.clone(),
            acknowledged.clone(),
        ),
        spender(
            LedgerClient::with_timeout(&nodes[2].base, Duration::from_secs(10)),
            Arc::new(relay_b),
            ledger_id,
            key_id,
            pool.clone(),
            stop.clone(),
            acknowledged.clone(),
        ),
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[3].process.kill();
    let before = acknowledged.lock().expect("acks").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = acknowledged.lock().expect("acks").len();
    assert!(
        during > before,
        "spends go on with one node down ({before} then {during})"
    );
    nodes[3].process.start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in spenders {
        s.await.expect("spender");
    }
    let (seq, _) = agreed(&nodes, &[0, 1, 2, 3]).await;
    let acked = acknowledged.lock().expect("acks").clone();
    assert!(
        acked.len() >= 100,
        "only {} spends acknowledged",
        acked.len()
    );
    assert!(
        seq > acked.len() as u64 / 10,
        "every acknowledged batch is in the log"
    );
    for node in &nodes {
        let ledger = LedgerClient::with_timeout(&node.base, Duration::from_secs(5));
        for token in acked.iter().step_by(37) {
            let status = ledger.nullifier(&token.nullifier()).await.expect("status");
            assert!(
                matches!(
                    status,
                    scrip_spec::api::ledger::NullifierStatus::Spent { .. }
                ),
                "an acknowledged spend missing at {}",
                node.base
            );
        }
    }

    // Two of four down: nothing commits anywhere, and the two left agree.
    let (mid, _) = agreed(&nodes, &[0, 1, 2, 3]).await;
    nodes[2].process.kill();
    nodes[3].process.kill();
    let second_key = key_info(
        scrip_spec::TokenSecretKey::generate()
            .expect("keygen")
            .public_key(),
        "issuer",
        "chunk-64k",
        1,
    );
    let announce = issuer.sign(LedgerRequest::new(
        ledger_id,
        now(),
        Action::AnnounceKey { key: second_key },
    ));
    let refused = client.submit(&announce).await.expect_err("no quorum");
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert_eq!(agreed(&nodes, &[0, 1]).await.0, mid, "nothing committed");

    // One back: the committee goes on, and the waiting request lands once.
    nodes[2].process.start().await;
    let mut landed = false;
    for _ in 0..30 {
        match client.submit(&announce).await {
            Ok(_) => {
                landed = true;
                break;
            }
            Err(e) if e.status() == Some(409) => {
                landed = true;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    assert!(landed, "the committee never went on");
    assert_eq!(agreed(&nodes, &[0, 1, 2]).await.0, mid + 1);

    // All four killed at once and restarted: they recover and go on.
    nodes[3].process.start().await;
    agreed(&nodes, &[0, 1, 2, 3]).await;
    for node in &mut nodes {
        node.process.kill();
    }
    for node in &mut nodes {
        node.process.start().await;
    }
    let request_tokens = pool.take(5);
    let request = spend_by_relay_a(ledger_id, key_id, request_tokens.clone(), dir.path());
    // The nodes reload their backups and dial each other again: a client retries a 503,
    // as a redeemer does.
    let mut receipt = None;
    for _ in 0..30 {
        match client.submit(&request).await {
            Ok(r) => {
                receipt = Some(r);
                break;
            }
            Err(e) if e.status() == Some(503) => tokio::time::sleep(Duration::from_secs(1)).await,
            // An earlier try was applied after its answer timed out.
            Err(e) if e.status() == Some(409) => break,
            Err(e) => panic!("refused after a full restart: {e}"),
        }
    }
    if let Some(receipt) = receipt {
        assert!(
            receipt
                .spends
                .iter()
                .all(|s| s.status == SpendStatus::Accepted)
        );
    }
    for token in &request_tokens {
        let status = client.nullifier(&token.nullifier()).await.expect("status");
        assert!(
            matches!(
                status,
                scrip_spec::api::ledger::NullifierStatus::Spent { .. }
            ),
            "the spend after the full restart is on the ledger"
        );
    }
    let (last, _) = agreed(&nodes, &[0, 1, 2, 3]).await;
    assert_eq!(last, mid + 2);

    // The audit of any node's database passes.
    for node in &mut nodes {
        node.process.kill();
    }
    let state = dir.path().join("audit.state");
    let out = SCRIP.run(&[
        "audit",
        "--database",
        &nodes[1].db,
        "--state",
        path(&state),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A spend by relay-a, signed with its key file.
fn spend_by_relay_a(
    ledger_id: Hash32,
    key: scrip_spec::TokenKeyId,
    tokens: Vec<Token>,
    dir: &Path,
) -> scrip_spec::Signed<LedgerRequest> {
    let relay = OperatorKey::read_file(&dir.join("relay-a.key")).expect("relay key");
    relay.sign(LedgerRequest::new(
        ledger_id,
        now(),
        Action::Spend {
            groups: vec![SpendGroup {
                token_key_id: key,
                tokens,
            }],
        },
    ))
}
