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
use scrip_testkit::{TokenPool, agreed_head, key_info, path};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    let _one_at_a_time = crate::COMMITTEE_PROCESSES.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = SCRIP.committee_setup(dir.path(), 4);
    let mut nodes = setup.processes(SCRIP, dir.path());
    for node in &mut nodes {
        node.start().await;
    }
    let bases = setup.bases();
    let agreed = |which: &[usize]| {
        let which: Vec<&str> = which.iter().map(|i| bases[*i]).collect();
        async move { agreed_head(&which, Duration::from_secs(30)).await }
    };
    // Two redeemers: `relay`, and `issuer` in its redeemer role.
    let issuer = &setup.ledger.issuer;
    let relay_b = OperatorKey::read_file(&dir.path().join("issuer.key")).expect("key");
    let relay_a = OperatorKey::read_file(&dir.path().join("relay.key")).expect("key");
    let client = LedgerClient::with_timeout(bases[0], Duration::from_secs(10));
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
            LedgerClient::with_timeout(bases[1], Duration::from_secs(10)),
            Arc::new(relay_a),
            ledger_id,
            key_id,
            pool.clone(),
            stop.clone(),
            acknowledged.clone(),
        ),
        spender(
            LedgerClient::with_timeout(bases[2], Duration::from_secs(10)),
            Arc::new(relay_b),
            ledger_id,
            key_id,
            pool.clone(),
            stop.clone(),
            acknowledged.clone(),
        ),
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[3].kill();
    let before = acknowledged.lock().expect("acks").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = acknowledged.lock().expect("acks").len();
    assert!(
        during > before,
        "spends go on with one node down ({before} then {during})"
    );
    nodes[3].start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in spenders {
        s.await.expect("spender");
    }
    let (seq, _) = agreed(&[0, 1, 2, 3]).await;
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
    for base in &bases {
        let ledger = LedgerClient::with_timeout(base, Duration::from_secs(5));
        for token in acked.iter().step_by(37) {
            let status = ledger.nullifier(&token.nullifier()).await.expect("status");
            assert!(
                matches!(
                    status,
                    scrip_spec::api::ledger::NullifierStatus::Spent { .. }
                ),
                "an acknowledged spend missing at {base}"
            );
        }
    }

    // Two of four down: nothing commits anywhere, and the two left agree.
    let (mid, _) = agreed(&[0, 1, 2, 3]).await;
    nodes[2].kill();
    nodes[3].kill();
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
    assert_eq!(agreed(&[0, 1]).await.0, mid, "nothing committed");

    // One back: the committee goes on, and the waiting request lands once.
    nodes[2].start().await;
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
    assert_eq!(agreed(&[0, 1, 2]).await.0, mid + 1);

    // All four killed at once and restarted: they recover and go on.
    nodes[3].start().await;
    agreed(&[0, 1, 2, 3]).await;
    for node in &mut nodes {
        node.kill();
    }
    for node in &mut nodes {
        node.start().await;
    }
    let request_tokens = pool.take(5);
    let request = spend_by_relay(ledger_id, key_id, request_tokens.clone(), dir.path());
    // The nodes reload their backups and dial each other again: a client retries a 503,
    // as a redeemer does.
    let mut receipt = None;
    for _ in 0..60 {
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
    // Reads are each node's own: once every node holds the same head, f + 1 of them say spent
    // (before that, two nodes yet to apply it could agree on "unspent").
    let (last, _) = agreed(&[0, 1, 2, 3]).await;
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
    assert_eq!(last, mid + 2);

    // The audit of any node's database passes.
    for node in &mut nodes {
        node.kill();
    }
    let state = dir.path().join("audit.state");
    let out = SCRIP.run(&[
        "audit",
        "--database",
        &setup.nodes[1].db,
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

/// A spend by `relay`, signed with its key file.
fn spend_by_relay(
    ledger_id: Hash32,
    key: scrip_spec::TokenKeyId,
    tokens: Vec<Token>,
    dir: &Path,
) -> scrip_spec::Signed<LedgerRequest> {
    let relay = OperatorKey::read_file(&dir.join("relay.key")).expect("relay key");
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

/// A fifth node joins a committee of four processes through the CLI: `scrip ledger init` on
/// the same genesis, `peer_listen` in its config, then `scrip operator propose admit-node`,
/// `approve` and `submit`. It follows the log, then orders a request given to it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_admitted_with_the_cli_joins_a_committee_of_processes() {
    let _one_at_a_time = crate::COMMITTEE_PROCESSES.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let setup = SCRIP.committee_setup(d, 4);
    // Sessions of about five seconds, so the admission governs soon.
    setup.configure("session_rounds = 100\n");
    let mut nodes = setup.processes(SCRIP, d);
    for node in &mut nodes {
        node.start().await;
    }
    let bases = setup.bases();

    let key = SCRIP.keygen(d, "node-4");
    let db = format!("sqlite://{}", d.join("node-4.db").display());
    let out = SCRIP.ok(&[
        "ledger",
        "init",
        "--genesis",
        path(&d.join("genesis.toml")),
        "--key",
        path(&d.join("node-4.key")),
        "--database",
        &db,
    ]);
    assert!(out.contains("a node that joins later"), "{out}");
    let (api, peer) = (scrip_testkit::free_port(), scrip_testkit::free_port());
    let config = d.join("node-4.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{api}\"\ndatabase = \"{db}\"\nkey_file = \"{}\"\n\
             consensus_dir = \"consensus-4\"\norder_wait_secs = 5\nsession_rounds = 100\n\
             peer_listen = \"127.0.0.1:{peer}\"\n",
            d.join("node-4.key").display()
        ),
    )
    .expect("config");
    let base = format!("http://127.0.0.1:{api}");
    let mut joining = scrip_testkit::Process::serve(SCRIP, "ledger", &config, &base)
        .log_to(&d.join("node-4.log"));
    joining.start().await;

    let proposal = d.join("admit.json");
    let node_key = key.id().to_string();
    let peer_address = format!("127.0.0.1:{peer}");
    SCRIP.ok(&[
        "operator",
        "propose",
        "--ledger",
        bases[0],
        "--out",
        path(&proposal),
        "admit-node",
        "--operator",
        "relay",
        "--node-key",
        &node_key,
        "--peer-address",
        &peer_address,
        "--api-url",
        &base,
    ]);
    SCRIP.ok(&[
        "operator",
        "approve",
        path(&proposal),
        "--key",
        path(&d.join("admin.key")),
    ]);
    SCRIP.ok(&[
        "operator",
        "submit",
        path(&proposal),
        "--ledger",
        bases[0],
        "--key",
        path(&d.join("admin.key")),
    ]);

    // A request given to the new node alone: refused while it is outside the committee, then
    // ordered and answered with its own signature.
    let ledger_id = LedgerClient::new(bases[0])
        .info()
        .await
        .expect("info")
        .ledger_id;
    let sold = setup.ledger.issuer.sign(LedgerRequest::new(
        ledger_id,
        now(),
        Action::CardsSold {
            batch: "b1".into(),
            count: 1,
            credits: 10,
        },
    ));
    let started = std::time::Instant::now();
    let signer = loop {
        let (status, body) = scrip_testkit::Http::new(&base)
            .post("/v1/entries", &sold)
            .await;
        if status.is_success() {
            break body["attestation"]["node"].as_str().map(str::to_owned);
        }
        // A try whose answer timed out was applied: only the new node held it.
        if status.as_u16() == 409 && body["error"]["code"] == "replayed_request" {
            break Some(node_key.clone());
        }
        assert_eq!(status.as_u16(), 503, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the admitted node never ordered: {body}\n{}",
            joining.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(signer.as_deref(), Some(node_key.as_str()));
    let mut all = bases.clone();
    all.push(&base);
    agreed_head(&all, Duration::from_secs(30)).await;
}
